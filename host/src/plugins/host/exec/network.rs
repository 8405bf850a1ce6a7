//! A program's network: none, or its target only.
//!
//! Where ballast may create network namespaces (it runs as root, or with
//! CAP_SYS_ADMIN), every program gets a namespace of its own. Without a target it is
//! empty: no interface is up, nothing can be reached. With a target, only loopback
//! is up, and on it one port that ballast forwards to the target's address: the
//! program reaches its database and nothing else. TLS passes through untouched.
//!
//! The namespace is made by a short-lived thread (`unshare` changes the calling
//! thread's namespace only), which also binds the forwarding listener inside it;
//! the program joins the namespace through its file descriptor before it starts.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::net::{TcpListener, TcpStream};

/// A namespace ready for a program to join, and the forwarder into it.
pub struct Isolated {
    /// `/proc/thread-self/ns/net` of the namespace.
    pub ns: OwnedFd,
    /// The loopback port forwarded to the target, when there is a target.
    pub port: Option<u16>,
    /// Forwards connections while the program runs; dropped with it.
    pub forwarder: Option<Forwarder>,
}

/// Aborts the forwarding task when dropped.
pub struct Forwarder(tokio::task::JoinHandle<()>);

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether this process may create network namespaces (a probe, made once).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::thread::spawn(|| {
            // SAFETY: unshare changes this thread's namespace; the thread ends here.
            unsafe { libc::unshare(libc::CLONE_NEWNET) == 0 }
        })
        .join()
        .unwrap_or(false)
    })
}

/// A new namespace; with `target` (`host:port`), loopback up and a forwarder to it.
pub fn isolate(target: Option<&str>) -> io::Result<Isolated> {
    let with_listener = target.is_some();
    let (ns, listener) = std::thread::spawn(move || -> io::Result<_> {
        // SAFETY: unshare changes the namespace of this thread only, which ends here.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let listener = if with_listener {
            loopback_up()?;
            Some(std::net::TcpListener::bind("127.0.0.1:0")?)
        } else {
            None
        };
        let ns = std::fs::File::open("/proc/thread-self/ns/net")?;
        Ok((OwnedFd::from(ns), listener))
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))??;
    let (port, forwarder) = match (listener, target) {
        (Some(l), Some(t)) => {
            let port = l.local_addr()?.port();
            l.set_nonblocking(true)?;
            let l = TcpListener::from_std(l)?;
            let target = t.to_string();
            (
                Some(port),
                Some(Forwarder(tokio::spawn(
                    async move { forward(l, target).await },
                ))),
            )
        }
        _ => (None, None),
    };
    Ok(Isolated {
        ns,
        port,
        forwarder,
    })
}

/// Brings up `lo` in the calling thread's namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a datagram socket for the ioctls, closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a socket we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the flags of the named interface.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Accepts inside the namespace, connects to the target from ballast's own network.
async fn forward(listener: TcpListener, target: String) {
    loop {
        let Ok((mut inside, _)) = listener.accept().await else {
            return;
        };
        let target = target.clone();
        tokio::spawn(async move {
            match TcpStream::connect(&target).await {
                Ok(mut outside) => {
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                }
                Err(e) => tracing::debug!("forwarding to {target}: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// Whether `bash` inside the namespace can open a TCP connection to `port`.
    fn connects(ns: &OwnedFd, port: u16) -> bool {
        let fd = ns.as_raw_fd();
        let mut cmd = std::process::Command::new("/bin/bash");
        cmd.arg("-c").arg(format!(":</dev/tcp/127.0.0.1/{port}"));
        // SAFETY: setns is a plain system call.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.status().map(|s| s.success()).unwrap_or(false)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_namespace_reaches_its_target_and_nothing_else() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: network namespaces cannot be made here");
            return;
        }
        assert!(available(), "root, yet no network namespace can be made");
        let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (t, o) = (
            target.local_addr().unwrap(),
            other.local_addr().unwrap().port(),
        );
        let with = isolate(Some(&t.to_string())).unwrap();
        let port = with.port.unwrap();
        let ns = with.ns.try_clone().unwrap();
        let (reached, escaped) =
            tokio::task::spawn_blocking(move || (connects(&ns, port), connects(&ns, o)))
                .await
                .unwrap();
        assert!(reached, "the forwarded port did not reach the target");
        assert!(!escaped, "another port on ballast's loopback was reachable");
        target.set_nonblocking(true).unwrap();
        other.set_nonblocking(true).unwrap();
        assert!(target.accept().is_ok(), "the target saw no connection");
        assert!(other.accept().is_err());
        // Without a target: nothing at all, not even loopback.
        let none = isolate(None).unwrap();
        assert!(none.port.is_none());
        let ns = none.ns.try_clone().unwrap();
        let escaped = tokio::task::spawn_blocking(move || connects(&ns, o))
            .await
            .unwrap();
        assert!(!escaped);
    }
}
