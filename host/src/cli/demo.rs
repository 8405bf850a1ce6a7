//! `ballast demo`: a guided run on embedded defaults. It makes a local repository under
//! `--dir`, starts a local etcd (if `etcd` is on PATH) and takes a snapshot of it,
//! then backs up a sample directory, changes it, backs it up again, shows the
//! difference, verifies every byte, restores, and compares the restored tree.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use zeroize::Zeroizing;

use super::context::GlobalArgs;
use super::exit;
use super::output::bytes;
use crate::etcd::local::LocalEtcd;
use crate::files::backup::{self, BackupOptions};
use crate::files::{diff, restore};
use crate::repo::check::{self, CheckOptions};
use crate::repo::keys::Secret;
use crate::repo::Repository;
use crate::store::{Location, Store, StoreOptions};

#[derive(Args)]
pub struct DemoArgs {
    /// Working directory for the demo (repository, sample data, restore)
    #[arg(long, default_value = "ballast-demo")]
    dir: PathBuf,
    /// Size of the sample data set in MiB
    #[arg(long, default_value_t = 64)]
    size_mib: u64,
}

pub fn run(_g: &GlobalArgs, a: DemoArgs) -> Result<i32> {
    let dir = std::path::absolute(&a.dir)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir.join("repo")).ok();
        std::fs::remove_dir_all(dir.join("restored")).ok();
    }
    let data = dir.join("data");
    let repo_dir = dir.join("repo");
    std::fs::create_dir_all(&repo_dir)?;
    println!(
        "1. sample data: {} of manifests, logs and binary files in {}",
        bytes(a.size_mib << 20),
        data.display()
    );
    make_sample(&data, a.size_mib << 20)?;

    let password = std::env::var("BALLAST_PASSWORD").unwrap_or_else(|_| "ballast-demo".into());
    let secret = Secret::Password(Zeroizing::new(password));
    let store = Store::connect(&Location::Local(repo_dir.clone()), &StoreOptions::default())?;
    let repo = Repository::init(store, &secret, "demo")?;
    println!(
        "2. repository {} created at {} (password from BALLAST_PASSWORD, else `ballast-demo`)",
        repo.config().id,
        repo_dir.display()
    );

    demo_etcd(&repo, &dir)?;

    let opts = BackupOptions {
        paths: vec![data.clone()],
        tags: vec!["demo".into()],
        ..Default::default()
    };
    let first = backup::backup(&repo, &opts, &Default::default())?;
    let m = &first.snapshot.summary;
    println!(
        "4. first backup {}: {} files, {} read, {} stored after dedup+compression, {:.2}s",
        first.id.short(),
        m.files,
        bytes(m.bytes_read),
        bytes(m.bytes_stored),
        m.seconds
    );

    std::fs::write(
        data.join("manifests/added.yaml"),
        "apiVersion: v1\nkind: ConfigMap\n",
    )?;
    std::fs::remove_file(data.join("logs/app-0.log")).ok();
    let second = backup::backup(&repo, &opts, &Default::default())?;
    let m = &second.snapshot.summary;
    println!(
        "5. second backup {}: {} unmodified files skipped, {} read, {} new data stored, {:.2}s",
        second.id.short(),
        m.files_unmodified,
        bytes(m.bytes_read),
        bytes(m.bytes_stored),
        m.seconds
    );
    let changes = diff::diff(&repo, &first.snapshot.root, &second.snapshot.root)?;
    println!("6. diff:");
    for c in &changes {
        println!("     {} {}", c.change.sign(), c.path);
    }

    let report = check::check(
        &repo,
        &CheckOptions {
            read_data: true,
            subset: None,
        },
        &Default::default(),
    )?;
    if !report.ok() {
        bail!("check found problems: {:?}", report.problems);
    }
    println!(
        "7. check --read-data: {} packs, {} verified, no problems",
        report.packs,
        bytes(report.bytes_read)
    );

    let target = dir.join("restored");
    let r = restore::restore(
        &repo,
        &second.snapshot,
        &restore::RestoreOptions {
            target: target.clone(),
            ..Default::default()
        },
        &Default::default(),
    )?;
    let same = same_tree(&data, &target)?;
    println!(
        "8. restored {} files ({}) into {} in {:.2}s; identical to the source: {}",
        r.files,
        bytes(r.bytes),
        target.display(),
        r.seconds,
        if same { "yes" } else { "NO" }
    );
    if !same {
        bail!("the restored tree differs from the source");
    }
    println!(
        "\nTry: BALLAST_REPO={} BALLAST_PASSWORD=... ballast snapshots",
        repo_dir.display()
    );
    Ok(exit::OK)
}

/// Starts a local etcd, fills it with Kubernetes-like objects, snapshots it into the
/// repository, exports the snapshot and checks it with the native status reader.
fn demo_etcd(repo: &Repository, dir: &Path) -> Result<()> {
    let etcd_dir = dir.join("etcd");
    std::fs::remove_dir_all(&etcd_dir).ok();
    let Some(etcd) = LocalEtcd::start(&etcd_dir)? else {
        println!("   (no `etcd` on PATH: skipping the etcd part; apt-get install etcd-server)");
        return Ok(());
    };
    let opts = etcd.options();
    repo.store().block_on(async {
        let mut c = opts.connect(&etcd.endpoint).await?;
        for i in 0..2000 {
            let key = format!("/registry/configmaps/team-{}/app-{i}", i % 7);
            let value = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"app-{i}"}},"data":{{"replicas":"{}"}}}}"#, i % 5);
            c.put(key, value, None).await.map_err(|e| crate::etcd::connect::EtcdError::Request {
                endpoint: etcd.endpoint.clone(),
                detail: e.to_string(),
            })?;
        }
        Ok::<_, crate::etcd::connect::EtcdError>(())
    })?;
    let taken = crate::etcd::snapshot::take(
        repo,
        &opts,
        &crate::repo::snapshot::Labels::tags(vec!["demo".into()]),
        &mut |_| {},
    )?;
    let exported = dir.join("etcd-snapshot.db");
    std::fs::remove_file(&exported).ok();
    crate::etcd::snapshot::export(repo, &taken.snapshot, &exported)?;
    let status = crate::etcd::status::of_file(&exported)?;
    println!(
        "3. etcd {} started at {}: 2000 objects written, snapshot {} streamed in ({} database, revision {}, sha256 verified)",
        taken.source.version,
        etcd.endpoint,
        taken.id.short(),
        bytes(status.total_size),
        status.revision
    );
    println!(
        "   exported to {}: hash {:08x}, {} keys (check it: etcdctl snapshot status {})",
        exported.display(),
        status.hash,
        status.total_keys,
        exported.display()
    );
    demo_restore(dir, &exported)
}

/// Restores the exported snapshot into a data directory an etcd member starts from,
/// with etcd's own tool for the data-directory step (skipped when there is none).
fn demo_restore(dir: &Path, exported: &Path) -> Result<()> {
    use crate::etcd::restore::{self, Database, Member, Plan, Tool};
    let Ok(tool) = Tool::find(None) else {
        println!(
            "   (no etcdutl or etcdctl on PATH: skipping the restore; apt-get install etcd-client)"
        );
        return Ok(());
    };
    let data_dir = dir.join("etcd-restored");
    // The demo's own scratch directory from an earlier run.
    std::fs::remove_dir_all(&data_dir).ok();
    let peer = "http://127.0.0.1:2380";
    let plan = Plan {
        members: vec![Member {
            name: "demo".into(),
            data_dir: data_dir.clone(),
            peer_urls: peer.into(),
        }],
        initial_cluster: format!("demo={peer}"),
        initial_cluster_token: "ballast-demo".into(),
        bump_revision: None,
        move_existing: false,
        tool,
    };
    let restored = restore::restore(&Database::file(exported)?, &plan, 0)?;
    println!(
        "   restored into {}: revision {}, {} keys (start it: etcd --name demo --data-dir {} \\
     --initial-cluster demo={peer} --initial-advertise-peer-urls {peer})",
        data_dir.display(),
        restored.revision,
        restored.keys,
        data_dir.display()
    );
    Ok(())
}

/// Writes a mixed sample: compressible manifests and logs, random binaries, and the
/// same file twice (deduplicated).
fn make_sample(root: &Path, size: u64) -> Result<()> {
    std::fs::remove_dir_all(root).ok();
    for d in ["manifests", "logs", "blobs"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut written = 0u64;
    for i in 0..200 {
        let m = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-{i}\n  namespace: team-{}\nspec:\n  replicas: {}\n  template:\n    spec:\n      containers:\n      - name: app\n        image: registry.local/app:{}\n",
            i % 7,
            next() % 5 + 1,
            next() % 1000
        );
        std::fs::write(root.join(format!("manifests/app-{i}.yaml")), &m)?;
        written += m.len() as u64;
    }
    let log_size = size * 4 / 10;
    for f in 0..4 {
        let mut s = String::with_capacity((log_size / 4) as usize);
        while (s.len() as u64) < log_size / 4 {
            s.push_str(&format!("2026-11-24T03:{:02}:{:02}Z level=info msg=\"request served\" status=200 latency_ms={} id={:x}\n", next() % 60, next() % 60, next() % 900, next()));
        }
        written += s.len() as u64;
        std::fs::write(root.join(format!("logs/app-{f}.log")), s)?;
    }
    let mut i = 0;
    while written < size {
        let n = (size - written).min(8 << 20) as usize;
        let mut buf: Vec<u8> = (0..n.div_ceil(8))
            .flat_map(|_| next().to_le_bytes())
            .collect();
        buf.truncate(n);
        std::fs::write(root.join(format!("blobs/blob-{i}.bin")), &buf)?;
        written += buf.len() as u64;
        i += 1;
    }
    std::fs::copy(
        root.join("blobs/blob-0.bin"),
        root.join("blobs/copy-of-blob-0.bin"),
    )
    .context("copying a sample file")?;
    Ok(())
}

/// Compares file names and contents of two trees.
fn same_tree(a: &Path, b: &Path) -> Result<bool> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut ea: Vec<_> = std::fs::read_dir(a.join(&rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        let mut eb: Vec<_> = std::fs::read_dir(b.join(&rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        ea.sort();
        eb.sort();
        if ea != eb {
            return Ok(false);
        }
        for name in ea {
            let p = rel.join(&name);
            if a.join(&p).is_dir() {
                stack.push(p);
            } else if std::fs::read(a.join(&p))? != std::fs::read(b.join(&p))? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
