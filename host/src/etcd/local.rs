//! A throwaway single-member etcd on loopback, for `ballast demo`: started from the
//! `etcd` on PATH in a directory of the caller's, stopped on drop.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::connect::EtcdOptions;

pub struct LocalEtcd {
    pub endpoint: String,
    child: Child,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Two different free loopback ports, for a member's client and peer URLs.
pub(super) fn two_ports() -> std::io::Result<(u16, u16)> {
    let client = free_port()?;
    loop {
        let peer = free_port()?;
        if peer != client {
            return Ok((client, peer));
        }
    }
}

impl LocalEtcd {
    /// Starts etcd with its data under `dir`; `Ok(None)` if there is no `etcd` on PATH.
    pub fn start(dir: &Path) -> std::io::Result<Option<LocalEtcd>> {
        let (client, peer) = two_ports()?;
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let spawned = Command::new("etcd")
            .args(["--name", "demo", "--data-dir"])
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args([
                "--initial-cluster",
                &format!("demo=http://127.0.0.1:{peer}"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let etcd = LocalEtcd {
            endpoint: format!("127.0.0.1:{client}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "etcd did not start; see {}",
                    dir.join("etcd.log").display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Some(etcd))
    }

    pub fn options(&self) -> EtcdOptions {
        EtcdOptions {
            endpoints: vec![self.endpoint.clone()],
            ..Default::default()
        }
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
