//! The test API server as a process, for benchmarks and for trying ballast by hand:
//!
//! ```text
//! test-apiserver [--listen 127.0.0.1:0] [--threads 2] [--kubeconfig FILE] [--seed JSON]
//! ```
//!
//! Prints its URL on the first line of stdout and serves until killed. `--seed`
//! loads a dataset (`{"configmaps": 43000, ...}`, see `apiserver::Dataset`) before it
//! starts listening; `POST /_test/seed` and `/_test/mutate?fraction=F` do the same
//! later. Never for anything but tests: see `tests/src/apiserver/mod.rs`.

use std::sync::Arc;

use ballast_tests::apiserver::{Dataset, State, TestApiServer};

fn main() {
    let mut listen = "127.0.0.1:0".to_string();
    let mut threads = 2;
    let mut kubeconfig = None;
    let mut seed: Option<Dataset> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value(),
            "--threads" => threads = value().parse().expect("--threads N"),
            "--kubeconfig" => kubeconfig = Some(std::path::PathBuf::from(value())),
            "--seed" => {
                seed = Some(serde_json::from_str(&value()).expect("--seed takes a JSON dataset"))
            }
            other => panic!("unknown argument {other}: see the file's doc comment"),
        }
    }
    let state = Arc::new(State::new());
    let server = TestApiServer::serve(state, &listen, threads);
    if let Some(d) = seed {
        let n = server.seed(&d);
        eprintln!("seeded {n} objects");
    }
    if let Some(path) = kubeconfig {
        let dir = path.parent().expect("a directory").to_path_buf();
        let written = server.kubeconfig(&dir, "test-apiserver", None);
        std::fs::rename(written, &path).expect("writing the kubeconfig");
    }
    println!("{}", server.url());
    loop {
        std::thread::park();
    }
}
