//! A real Garage S3 server on loopback, one per test: generated config, a layout with
//! one node, an access key and a bucket. Stopped (and its data removed) on drop.

use crate::free_port;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct Garage {
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
    pub bucket: String,
    child: Child,
    config: PathBuf,
    _dir: TempDir,
}

/// The `garage` binary: on PATH, or where `cargo install` puts it.
pub fn garage_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("garage"))
        .find(|p| p.exists());
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let bin = on_path.unwrap_or_else(|| cargo_home.join("bin/garage"));
    assert!(
        bin.exists(),
        "garage not found: install it with `cargo install garage --locked` (.ci/run does)"
    );
    bin
}

impl Garage {
    pub fn start() -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let (s3, rpc) = (free_port(), free_port());
        let secret_hex: String = crate::random_bytes(32, std::process::id() as u64 ^ s3 as u64)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret_hex}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
"#,
                d = dir.path().display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting garage");
        let mut g = Garage {
            endpoint: format!("http://127.0.0.1:{s3}"),
            key_id: String::new(),
            secret: String::new(),
            bucket: "ballast-test".into(),
            child,
            config,
            _dir: dir,
        };
        // Wait for the node to answer, then give it a role.
        let deadline = Instant::now() + Duration::from_secs(60);
        let node = loop {
            let out = g.garage(&["status"]);
            if let Some(id) = out
                .lines()
                .skip_while(|l| !l.contains("HEALTHY NODES"))
                .nth(2)
                .and_then(|l| l.split_whitespace().next())
            {
                break id.to_string();
            }
            assert!(Instant::now() < deadline, "garage did not come up:\n{out}");
            std::thread::sleep(Duration::from_millis(200));
        };
        g.garage(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        g.garage(&["layout", "apply", "--version", "1"]);
        let key = g.garage(&["key", "create", "ballast-test-key"]);
        let field = |name: &str| {
            key.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().last())
                .unwrap_or_else(|| panic!("no `{name}` in:\n{key}"))
                .to_string()
        };
        g.key_id = field("Key ID:");
        g.secret = field("Secret key:");
        g.garage(&["bucket", "create", &g.bucket.clone()]);
        g.garage(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &g.bucket.clone(),
            "--key",
            "ballast-test-key",
        ]);
        g
    }

    /// Runs a garage admin command and returns its stdout.
    pub fn garage(&self, args: &[&str]) -> String {
        let out = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("running garage");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// The environment variables an S3 client needs to reach this server.
    pub fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
            ("AWS_ENDPOINT".into(), self.endpoint.clone()),
            ("AWS_REGION".into(), "garage".into()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ]
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
