//! Allow-listed programs. The host runs the path the policy names, never a shell,
//! with an empty environment but for `PATH`, `LANG`, `HOME` and `TMPDIR` (the job's
//! private host directory) and, for a target, its credentials: MySQL tools get a
//! `--defaults-extra-file` written 0600, PostgreSQL tools `PG*` variables and a
//! password file. The plugin never sees either, and may not redirect them
//! ([`overrides`]).

mod overrides;

use std::collections::VecDeque;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use wasmtime::component::Resource;

use super::streams::Chunks;
use super::HostError;
use crate::plugins::policy::{Target, TargetKind};
use crate::plugins::state::JobState;
use crate::plugins::v0_1::ballast::plugin::exec;

/// Programs one store may run at once.
const MAX_PROCESSES: usize = 4;
/// stdout is read in chunks of this size; up to `STDOUT_CHUNKS` wait for the plugin.
const CHUNK: usize = 64 << 10;
const STDOUT_CHUNKS: usize = 256;
/// The end of stderr kept for the exit record.
const STDERR_TAIL: usize = 8 << 10;

pub struct Process {
    program: String,
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: Chunks,
    stderr: Arc<Mutex<VecDeque<u8>>>,
    stderr_done: Option<tokio::task::JoinHandle<()>>,
    /// Its process group (it leads one), so whatever it started goes with it.
    pgid: Option<u32>,
    waited: bool,
}

impl Drop for Process {
    fn drop(&mut self) {
        // kill_on_drop reaches the program only; its children (a shell it started,
        // parallel workers) share its process group.
        if let (Some(pgid), false) = (self.pgid, self.waited) {
            // SAFETY: killpg has no memory-safety preconditions; the group is ours.
            unsafe {
                libc::killpg(pgid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

impl exec::Host for JobState {
    async fn spawn(
        &mut self,
        program: String,
        args: Vec<String>,
        target: Option<String>,
    ) -> Result<Resource<Process>, HostError> {
        let grants = self.ctx.grants.clone();
        let granted = grants.program(&program, &args).map_err(HostError::Denied)?;
        let target = match &target {
            Some(t) => Some(grants.target(t).map_err(HostError::Denied)?),
            None => None,
        };
        if let Some(t) = target {
            if let Some(arg) = overrides::find(t.kind, &args) {
                return Err(HostError::Denied(format!(
                    "exec: argument {arg:?} of {program} would override the connection of target {} \
                     (ballast sets its address and credentials)",
                    t.name
                )));
            }
        }
        if self.processes >= MAX_PROCESSES {
            return Err(HostError::Denied(format!(
                "exec: at most {MAX_PROCESSES} programs may run at once"
            )));
        }
        let home = self.host_dir();
        let mut cmd = tokio::process::Command::new(&granted.path);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", &home)
            .env("TMPDIR", &home)
            .current_dir(&home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if let Some(t) = target {
            credentials(&mut cmd, t, &home, &granted.path).map_err(HostError::Failed)?;
        }
        cmd.args(&args);
        let mut child = cmd.spawn().map_err(|e| {
            HostError::Failed(format!(
                "starting {program} ({}): {e}",
                granted.path.display()
            ))
        })?;
        let pgid = child.id();
        let stdin = child.stdin.take();
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel(STDOUT_CHUNKS);
        tokio::spawn(async move {
            loop {
                let mut buf = vec![0u8; CHUNK];
                match out.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(buf)).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string())).await;
                        break;
                    }
                }
            }
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_done = {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut t = tail.lock().unwrap();
                    t.extend(&buf[..n]);
                    let excess = t.len().saturating_sub(STDERR_TAIL);
                    t.drain(..excess);
                }
            })
        };
        let handle = self.table.push(Process {
            program,
            child,
            stdin,
            stdout: Chunks::new(rx),
            stderr: tail,
            stderr_done: Some(stderr_done),
            pgid,
            waited: false,
        })?;
        self.processes += 1;
        Ok(handle)
    }
}

/// Whether `path` is the interactive MySQL/MariaDB client.
fn is_mysql_client(path: &Path) -> bool {
    matches!(
        path.file_name().and_then(|n| n.to_str()),
        Some("mysql" | "mariadb")
    )
}

/// Puts a target's credentials where its client programs look for them.
fn credentials(
    cmd: &mut tokio::process::Command,
    t: &Target,
    home: &Path,
    program: &Path,
) -> Result<(), String> {
    let password = match &t.password {
        Some(s) => Some(
            s.read()
                .map_err(|e| format!("the password of target {}: {e}", t.name))?,
        ),
        None => None,
    };
    let file = |name: &str, body: String| -> Result<std::path::PathBuf, String> {
        let path = home.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        f.write_all(body.as_bytes()).map_err(|e| e.to_string())?;
        Ok(path)
    };
    match t.kind {
        TargetKind::Mysql => {
            let (host, port) = super::sql::split_address(&t.address, 3306)?;
            let mut body = format!("[client]\nhost={host}\nport={port}\nprotocol=tcp\n");
            if let Some(u) = &t.user {
                body += &format!("user={u}\n");
            }
            if let Some(p) = &password {
                body += &format!(
                    "password=\"{}\"\n",
                    p.replace('\\', "\\\\").replace('"', "\\\"")
                );
            }
            let path = file(&format!("{}.cnf", t.name), body)?;
            // It must be the first argument.
            cmd.arg(format!("--defaults-extra-file={}", path.display()));
            // The client obeys commands in its input (`\\!` runs a shell, `tee` writes
            // files); in binary mode it does not.
            if is_mysql_client(program) {
                cmd.arg("--binary-mode");
            }
        }
        TargetKind::Postgresql => {
            let (host, port) = super::sql::split_address(&t.address, 5432)?;
            cmd.env("PGHOST", &host).env("PGPORT", port.to_string());
            if let Some(u) = &t.user {
                cmd.env("PGUSER", u);
            }
            if let Some(d) = &t.database {
                cmd.env("PGDATABASE", d);
            }
            if let Some(p) = &password {
                let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
                let path = file(
                    &format!("{}.pgpass", t.name),
                    format!("*:*:*:*:{}\n", esc(p)),
                )?;
                cmd.env("PGPASSFILE", path);
            }
        }
    }
    Ok(())
}

impl exec::HostProcess for JobState {
    async fn read(&mut self, process: Resource<Process>, max: u32) -> Result<Vec<u8>, HostError> {
        let p = self.table.get_mut(&process)?;
        let program = &p.program;
        p.stdout
            .read(max)
            .await
            .map_err(|e| HostError::Failed(format!("reading from {program}: {e}")))
    }

    async fn write(&mut self, process: Resource<Process>, bytes: Vec<u8>) -> Result<(), HostError> {
        let p = self.table.get_mut(&process)?;
        let program = p.program.clone();
        let Some(stdin) = p.stdin.as_mut() else {
            return Err(HostError::Invalid(format!(
                "the input of {program} is closed"
            )));
        };
        stdin.write_all(&bytes).await.map_err(|e| {
            HostError::Failed(if e.kind() == std::io::ErrorKind::BrokenPipe {
                format!("{program} stopped reading its input")
            } else {
                format!("writing to {program}: {e}")
            })
        })
    }

    async fn close(&mut self, process: Resource<Process>) -> wasmtime::Result<()> {
        self.table.get_mut(&process)?.stdin = None;
        Ok(())
    }

    async fn wait(&mut self, process: Resource<Process>) -> Result<exec::Exit, HostError> {
        let p = self.table.get_mut(&process)?;
        p.stdin = None;
        let status = p
            .child
            .wait()
            .await
            .map_err(|e| HostError::Failed(format!("waiting for {}: {e}", p.program)))?;
        p.waited = true;
        if let Some(done) = p.stderr_done.take() {
            let _ = done.await;
        }
        let tail: Vec<u8> = p.stderr.lock().unwrap().iter().copied().collect();
        Ok(exec::Exit {
            code: status.code(),
            stderr_tail: String::from_utf8_lossy(&tail).into_owned(),
        })
    }

    async fn drop(&mut self, process: Resource<Process>) -> wasmtime::Result<()> {
        // kill_on_drop ends a program the plugin did not wait for.
        self.table.delete(process)?;
        self.processes -= 1;
        Ok(())
    }
}
