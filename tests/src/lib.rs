//! Support for the integration tests: running the `ballast` binary against a
//! repository in a temporary directory, real object stores on loopback (Garage for
//! S3, Azurite for Azure Blob), and comparing directory trees.

pub mod apiserver;
pub mod azurite;
pub mod etcd;
pub mod garage;
pub mod kube;
pub mod kubelet;
pub mod plugins;
pub mod trees;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// The `ballast` binary of this build (`cargo build -p ballast` first; the README's
/// test command does).
pub fn ballast_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> -> target/<profile>/ballast
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("ballast");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p ballast` before the tests",
        bin.display()
    );
    bin
}

/// A loopback port nothing listens on now (a server started next takes it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a loopback port")
        .local_addr()
        .expect("its address")
        .port()
}

/// What a command printed, and how it exited.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    fn from(o: Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics with the output unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Out {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn ok(self) -> Out {
        self.expect_code(0)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
}

/// A scratch directory with a repository location and the environment to reach it.
pub struct Env {
    pub dir: TempDir,
    pub repo: String,
    pub vars: Vec<(String, String)>,
}

pub const PASSWORD: &str = "correct horse battery staple";

impl Env {
    /// A local repository location (not yet initialised) under a fresh temp dir.
    pub fn local() -> Env {
        let dir = tempfile::tempdir().expect("a temp dir");
        let repo = dir.path().join("repo").display().to_string();
        Env::with_repo(dir, repo)
    }

    pub fn with_repo(dir: TempDir, repo: String) -> Env {
        let vars = vec![
            ("BALLAST_PASSWORD".into(), PASSWORD.into()),
            ("RUST_LOG".into(), "ballast=warn".into()),
        ];
        Env { dir, repo, vars }
    }

    /// A local repository, initialised.
    pub fn init_local() -> Env {
        let env = Env::local();
        env.run(&["repo", "init"]).ok();
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn repo_path(&self) -> PathBuf {
        PathBuf::from(&self.repo)
    }

    /// A command with the repository and password set.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(ballast_bin());
        c.arg("--repo").arg(&self.repo).args(args);
        c.env_remove("BALLAST_REPO")
            .env_remove("BALLAST_PASSWORD_FILE")
            .env_remove("BALLAST_KEY_FILE");
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        Out::from(self.cmd(args).output().expect("running ballast"))
    }

    /// Runs with `--json` and expects success.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        self.run(&a).ok().json()
    }

    /// Backs up `dir` and returns the snapshot id.
    pub fn backup(&self, dir: &Path, extra: &[&str]) -> String {
        let d = dir.display().to_string();
        let mut args = vec!["backup", "path", d.as_str()];
        args.extend_from_slice(extra);
        let v = self.json(&args);
        v["snapshot_id"].as_str().expect("snapshot_id").to_string()
    }

    pub fn snapshot_ids(&self) -> Vec<String> {
        self.json(&["snapshots"])
            .as_array()
            .expect("a list")
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Files under a repository folder (`data`, `index`, `snapshots`, ...), without
    /// the staging files (`name#n`) of uploads still in progress.
    pub fn objects(&self, folder: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.repo_path().join(folder)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else if !e.file_name().to_string_lossy().contains('#') {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        out
    }
}

/// Deterministic pseudo-random bytes (xorshift), for incompressible test data.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}
