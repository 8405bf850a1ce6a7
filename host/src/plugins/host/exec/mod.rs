//! Allow-listed programs. The host runs the path the policy names, never a shell,
//! with arguments the policy allows by position ([`Grants::program`]), an empty
//! environment but for `PATH`, `LANG`, `HOME` and `TMPDIR` (the program's own empty
//! directory), and, for a database client, its target's connection
//! ([`credentials`]). Each program is confined ([`sandbox`]): another user, its own
//! network or none ([`network`]), Landlock, and its process group, killed with the job.
//!
//! [`Grants::program`]: crate::plugins::policy::Grants::program

mod credentials;
mod network;
mod sandbox;

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use wasmtime::component::Resource;

use super::streams::Chunks;
use super::HostError;
use crate::plugins::state::JobState;
use crate::plugins::v0_1::ballast::plugin::exec;

pub use sandbox::Report;

/// Programs one store may run at once.
const MAX_PROCESSES: usize = 4;
/// stdout is read in chunks of this size; the chunks waiting for the plugin count
/// against the job's buffer budget.
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
    /// Forwards its target's connections while it runs.
    _forwarder: Option<network::Forwarder>,
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
        let target = match &target {
            Some(t) => Some(grants.target(t).map_err(HostError::Denied)?),
            None => None,
        };
        let granted = grants
            .program(&program, &args, target)
            .map_err(HostError::Denied)?;
        if self.processes >= MAX_PROCESSES {
            return Err(HostError::Denied(format!(
                "exec: at most {MAX_PROCESSES} programs may run at once"
            )));
        }
        let failed = |what: &str, e: String| {
            HostError::Failed(format!(
                "starting {program} ({}): {what}: {e}",
                granted.path.display()
            ))
        };
        // Its network: its own namespace where ballast may make one.
        let isolated = if network::available() {
            let address = target.map(|t| t.address.as_str());
            Some(
                network::isolate(address)
                    .map_err(|e| failed("its network namespace", e.to_string()))?,
            )
        } else {
            None
        };
        let (netns, forwarded, forwarder): (Option<std::os::fd::OwnedFd>, _, _) = match isolated {
            Some(i) => (Some(i.ns), i.port, i.forwarder),
            None => (None, None, None),
        };
        self.programs_started += 1;
        let ids = sandbox::ids_for(granted).map_err(|e| failed("run-as", e))?;
        let dir = sandbox::program_dir(&self.host_dir(), self.programs_started, ids)
            .map_err(|e| failed("its directory", e.to_string()))?;
        // Without a namespace, Landlock keeps TCP to the target's port (where it can).
        let tcp_port = match (&netns, target) {
            (None, Some(t)) => Some(
                crate::plugins::host::sql::split_address(&t.address, t.kind.default_port())
                    .map_err(|e| failed("its target", e))?
                    .1,
            ),
            _ => None,
        };
        let mut report = Report::default();
        // A client reads its target's CA certificates.
        let also_read: Vec<std::path::PathBuf> = target
            .and_then(|t| t.tls.as_ref())
            .and_then(|tls| tls.ca.clone())
            .into_iter()
            .collect();
        let mut confinement = sandbox::Confinement::prepare(
            granted,
            &dir,
            ids,
            netns,
            tcp_port,
            &also_read,
            &mut report,
        )
        .map_err(|e| failed("its confinement", e))?;
        let connection = match target {
            Some(t) => Some(
                credentials::connection(t, &granted.path, &dir, confinement.ids(), forwarded)
                    .map_err(|e| failed("its connection", e))?,
            ),
            None => None,
        };
        let mut cmd = tokio::process::Command::new(&granted.path);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", &dir)
            .env("TMPDIR", &dir)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut _credential = None;
        if let Some(c) = connection {
            cmd.args(&c.args).envs(c.env);
            if let Some(fd) = c.fd {
                use std::os::fd::AsRawFd;
                confinement.pass(fd.as_raw_fd());
                _credential = Some(fd);
            }
        }
        cmd.args(&args);
        // SAFETY: `apply` makes system calls only (see sandbox.rs).
        unsafe {
            cmd.pre_exec(move || confinement.apply());
        }
        tracing::debug!(program = %program, ?report, "starting a program");
        let mut child = cmd.spawn().map_err(|e| failed("spawn", e.to_string()))?;
        // The program has its own descriptor now; ballast's copy goes.
        drop(_credential);
        let pgid = child.id();
        let stdin = child.stdin.take();
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel(STDOUT_CHUNKS);
        let budget = self.ctx.budget.clone();
        tokio::spawn(async move {
            loop {
                let mut buf = vec![0u8; CHUNK];
                match out.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        // Waits while the job's buffers are full: the program blocks
                        // on its output instead of ballast holding more of it.
                        let Some(held) = budget.hold(n as u64).await else {
                            break;
                        };
                        if tx.send(Ok((buf, Some(held)))).await.is_err() {
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
            _forwarder: forwarder,
        })?;
        self.processes += 1;
        Ok(handle)
    }
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
        // What it started dies with it. The group cannot have been taken by another
        // since: a process group's number stays reserved while any member lives, and
        // members cannot leave it (the seccomp filter refuses setsid and setpgid).
        if let Some(pgid) = p.pgid {
            // SAFETY: killpg has no memory-safety preconditions.
            unsafe {
                libc::killpg(pgid as libc::pid_t, libc::SIGKILL);
            }
        }
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
