//! The plugin runtime's own costs, on the `noop` plugin (build the guest plugins
//! first: guest-plugins/build). Run in release:
//!
//!     cargo run --release -p ballast-tests --bin plugin-bench -- [LOADS] [INSTANCES]
//!
//! - load: a component from the compile cache, as `backup app` does it: read and hash
//!   the file, map the compiled code, check the WIT version, link, call `info`;
//! - instance: a fresh store and instance from the pre-instantiated component, and
//!   one no-op hook call (`pre-backup`);
//! - job: the same plus a job's set-up (its private scratch directory).
//!
//! Prints the distribution of each in microseconds, as JSON.

use std::time::Instant;

use ballast::plugins::policy::Policy;
use ballast::plugins::{Job, JobOptions, Runtime};

fn main() {
    let mut args = std::env::args().skip(1);
    let loads: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(200);
    let instances: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(2000);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let noop = root.join("guest-plugins/target/wasm32-wasip2/release/ballast_plugin_noop.wasm");
    assert!(
        noop.exists(),
        "{} missing: run guest-plugins/build",
        noop.display()
    );
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new(Some(cache.path().to_path_buf())).unwrap();
    let policy = Policy::default();

    let (first, _) = rt.load(&noop, &policy).unwrap();
    assert!(!first.cached);
    let mut load = vec![];
    for _ in 0..loads {
        let t = Instant::now();
        let (l, _) = rt.load(&noop, &policy).unwrap();
        load.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(l.cached);
    }

    let (plugin, grants) = rt.load(&noop, &policy).unwrap();
    let opts = JobOptions::default();
    let (instance, job) = rt.tokio.block_on(async {
        let mut job = Job::new(&plugin, grants.clone(), &opts).unwrap();
        job.pre_backup("x").await.unwrap();
        let mut instance = vec![];
        for _ in 0..instances {
            let t = Instant::now();
            job.restart();
            job.pre_backup("x").await.unwrap();
            instance.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let mut whole = vec![];
        for _ in 0..instances / 4 {
            let t = Instant::now();
            let mut j = Job::new(&plugin, grants.clone(), &opts).unwrap();
            j.pre_backup("x").await.unwrap();
            drop(j);
            whole.push(t.elapsed().as_secs_f64() * 1e6);
        }
        (instance, whole)
    });
    let report = serde_json::json!({
        "component_bytes": std::fs::metadata(&noop).unwrap().len(),
        "load_from_cache_us": summary(load),
        "fresh_instance_and_noop_call_us": summary(instance),
        "job_with_scratch_dir_us": summary(job),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

fn summary(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| (v[((v.len() - 1) as f64 * p).round() as usize] * 10.0).round() / 10.0;
    serde_json::json!({"n": v.len(), "min": q(0.0), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": q(1.0)})
}
