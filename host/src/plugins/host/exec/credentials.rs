//! How a database client learns its target: address, account, password and TLS.
//!
//! The password never touches a path anyone can open. It is written to a file in the
//! program's own directory, which is unlinked at once; the open descriptor is all that
//! is left, and the program inherits it and reads it as `/dev/fd/N`: MySQL tools as
//! their `--defaults-extra-file`, PostgreSQL tools as their `PGPASSFILE`. The file
//! belongs to the user the program runs as and is readable by it only. The plugin
//! sees none of it.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::sandbox::Ids;
use crate::plugins::host::sql::split_address;
use crate::plugins::policy::{Target, TargetKind, TlsMode};

/// What to add to a client's command: leading arguments, environment, and the
/// descriptor it must inherit.
pub struct Connection {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub fd: Option<OwnedFd>,
}

/// An unlinked file in `dir` holding `body`, owned by `ids`, open for reading.
fn unlinked(dir: &Path, body: &str, ids: Option<Ids>) -> std::io::Result<OwnedFd> {
    let path = dir.join(format!(
        ".credentials-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)?;
    let removed = std::fs::remove_file(&path);
    if let Some(ids) = ids {
        std::os::unix::fs::fchown(&f, Some(ids.uid), Some(ids.gid))?;
    }
    removed?;
    f.write_all(body.as_bytes())?;
    Ok(OwnedFd::from(f))
}

/// The connection of a client of `t` running in `dir`. `forwarded` is the loopback
/// port that leads to the target when the program has a network of its own.
pub fn connection(
    t: &Target,
    program: &Path,
    dir: &Path,
    ids: Option<Ids>,
    forwarded: Option<u16>,
) -> Result<Connection, String> {
    let password = match &t.password {
        Some(s) => Some(
            s.read()
                .map_err(|e| format!("the password of target {}: {e}", t.name))?,
        ),
        None => None,
    };
    let default_port = match t.kind {
        TargetKind::Mysql => 3306,
        TargetKind::Postgresql => 5432,
    };
    let (host, port) = split_address(&t.address, default_port)?;
    // In its own network the program reaches the target through the forwarder.
    let (connect_host, connect_port) = match forwarded {
        Some(p) => ("127.0.0.1".to_string(), p),
        None => (host.clone(), port),
    };
    let tls = t.tls.as_ref().filter(|tls| tls.mode != TlsMode::Disable);
    let io = |e: std::io::Error| format!("preparing the credentials of target {}: {e}", t.name);
    let mut c = Connection {
        args: vec![],
        env: vec![],
        fd: None,
    };
    match t.kind {
        TargetKind::Mysql => {
            let mut body =
                format!("[client]\nhost={connect_host}\nport={connect_port}\nprotocol=tcp\n");
            if let Some(u) = &t.user {
                body += &format!("user={}\n", quote(u));
            }
            if let Some(p) = &password {
                body += &format!("password={}\n", quote(p));
            }
            if let Some(tls) = tls {
                if tls.mode == TlsMode::Require {
                    // MariaDB's clients take `ssl` as a wish: with a server that offers
                    // no TLS they log in in plaintext. Only verification is enforced.
                    return Err(format!(
                        "target {}: tls mode require cannot be enforced on MySQL/MariaDB client \
                         programs (MariaDB's clients fall back to plaintext when the server offers \
                         no TLS): use mode verify-ca or verify-full, with tls.ca for a private CA",
                        t.name
                    ));
                }
                body += "ssl\n";
                if let Some(ca) = &tls.ca {
                    body += &format!("ssl-ca={}\n", quote(&ca.display().to_string()));
                }
                // MariaDB's clients verify with ssl-verify-server-cert, MySQL's with
                // ssl-mode; `loose-` lets each ignore the other's.
                let mode = match tls.mode {
                    TlsMode::Require | TlsMode::Disable => {
                        unreachable!("refused or filtered above")
                    }
                    TlsMode::VerifyCa => "VERIFY_CA",
                    TlsMode::VerifyFull => "VERIFY_IDENTITY",
                };
                body += &format!("loose-ssl-mode={mode}\n");
                if matches!(tls.mode, TlsMode::VerifyCa | TlsMode::VerifyFull) {
                    body += "loose-ssl-verify-server-cert\n";
                }
            }
            let fd = unlinked(dir, &body, ids).map_err(io)?;
            // It must be the first argument.
            c.args
                .push(format!("--defaults-extra-file=/dev/fd/{}", fd.as_raw_fd()));
            // The client obeys commands in its input (`\!` runs a shell, `tee` writes
            // files); in binary mode it does not.
            if crate::plugins::policy::is_mysql_shell(program) {
                c.args.push("--binary-mode".into());
            }
            c.fd = Some(fd);
        }
        TargetKind::Postgresql => {
            // libpq connects to PGHOSTADDR and checks the certificate against PGHOST.
            c.env.push(("PGHOST".into(), host.clone()));
            c.env
                .push(("PGHOSTADDR".into(), resolve(&connect_host, connect_port)?));
            c.env.push(("PGPORT".into(), connect_port.to_string()));
            if let Some(u) = &t.user {
                c.env.push(("PGUSER".into(), u.clone()));
            }
            if let Some(d) = &t.database {
                c.env.push(("PGDATABASE".into(), d.clone()));
            }
            let mode = match tls.map(|t| t.mode) {
                None | Some(TlsMode::Disable) => "disable",
                Some(TlsMode::Require) => "require",
                Some(TlsMode::VerifyCa) => "verify-ca",
                Some(TlsMode::VerifyFull) => "verify-full",
            };
            c.env.push(("PGSSLMODE".into(), mode.into()));
            if let Some(ca) = tls.and_then(|t| t.ca.as_ref()) {
                c.env
                    .push(("PGSSLROOTCERT".into(), ca.display().to_string()));
            }
            if let Some(p) = &password {
                let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
                let user = t.user.as_deref().map(esc).unwrap_or_else(|| "*".into());
                let body = format!("*:*:*:{user}:{}\n", esc(p));
                let fd = unlinked(dir, &body, ids).map_err(io)?;
                c.env
                    .push(("PGPASSFILE".into(), format!("/dev/fd/{}", fd.as_raw_fd())));
                c.fd = Some(fd);
            }
        }
    }
    Ok(c)
}

/// A MySQL option-file value, quoted.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The address to give libpq as PGHOSTADDR (a numeric address: no lookup inside the
/// program's network).
fn resolve(host: &str, port: u16) -> Result<String, String> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .map(|a| a.ip().to_string())
        .ok_or_else(|| format!("{host} has no address"))
}
