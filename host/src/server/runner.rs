//! Runs one job: the `ballast` binary as a child process, with the repository in
//! its environment, its output read back (`--json`), and a stop that is a SIGTERM
//! first (a plugin's post-backup hook still runs; a capture writes its last
//! segment), then a SIGKILL once the grace has passed.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::watch;

use super::config::Repository;

/// What a finished child said.
#[derive(Debug, Default)]
pub struct Finished {
    /// None: ended by a signal.
    pub exit_code: Option<i32>,
    /// Its `--json` output, if it printed one.
    pub output: Option<Value>,
    /// The end of its standard error (at most 4 KiB): the error a failure shows.
    pub stderr_tail: String,
    /// Why it was stopped, if it was.
    pub stopped: Option<Stop>,
}

/// Why a run was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Timeout,
    Shutdown,
}

impl Stop {
    pub fn message(self) -> &'static str {
        match self {
            Stop::Timeout => "stopped: it ran longer than the schedule's timeout",
            Stop::Shutdown => "stopped: the server is shutting down",
        }
    }
}

impl Finished {
    /// The error a failed run reports: its last error line, else its exit.
    pub fn error(&self) -> String {
        if let Some(why) = self.stopped {
            return why.message().to_string();
        }
        let line = self
            .stderr_tail
            .lines()
            .rev()
            .find(|l| l.starts_with("error:"))
            .or_else(|| {
                self.stderr_tail
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
            });
        match (line, self.exit_code) {
            (Some(l), _) => l.trim().to_string(),
            (None, Some(c)) => format!("exited with code {c}"),
            (None, None) => "ended by a signal".to_string(),
        }
    }

    pub fn snapshot_id(&self) -> Option<String> {
        self.output.as_ref()?["snapshot_id"]
            .as_str()
            .map(str::to_string)
    }

    /// Bytes read and added, from a backup's summary.
    pub fn bytes(&self) -> (u64, u64) {
        let Some(o) = &self.output else {
            return (0, 0);
        };
        let m = &o["snapshot"]["summary"];
        (
            m["bytes_read"].as_u64().unwrap_or(0),
            m["bytes_stored"].as_u64().unwrap_or(0),
        )
    }
}

/// What is called with each line a job prints.
pub type OnLine = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// How the child is reached and stopped.
#[derive(Clone)]
pub struct Runner {
    /// The `ballast` binary (this one).
    pub program: std::path::PathBuf,
    pub grace: Duration,
}

/// Signals the child's process group (the child leads it).
fn signal(pid: Option<u32>, sig: libc::c_int) {
    if let Some(pid) = pid {
        // SAFETY: kill(2) on our own child's process group; no memory is touched.
        unsafe {
            libc::kill(-(pid as libc::pid_t), sig);
        }
    }
}

const TAIL: usize = 4096;

impl Runner {
    /// Runs `ballast ARGV` against a repository until it ends, `timeout` passes, or
    /// `stop` turns true.
    pub async fn run(
        &self,
        repo: &Repository,
        argv: &[String],
        timeout: Option<Duration>,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<Finished> {
        self.run_streaming(repo, argv, timeout, stop, None).await
    }

    /// As [`Runner::run`], with each line of the job's output handed to `on_line`
    /// as it comes (a capture's `--json` events); the output kept is its last line.
    pub async fn run_streaming(
        &self,
        repo: &Repository,
        argv: &[String],
        timeout: Option<Duration>,
        mut stop: watch::Receiver<bool>,
        on_line: Option<OnLine>,
    ) -> std::io::Result<Finished> {
        let mut cmd = Command::new(&self.program);
        for o in &repo.options {
            cmd.arg("-o").arg(o);
        }
        cmd.args(argv)
            .env("BALLAST_REPO", &repo.location)
            // The repository's own secret, not one the server's environment holds.
            .env_remove("BALLAST_PASSWORD")
            .env_remove("BALLAST_PASSWORD_FILE")
            .env_remove("BALLAST_KEY_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a stop reaches the programs it started too
            // (those of a plugin run in groups of their own, and the job stops them).
            .process_group(0)
            .kill_on_drop(true);
        if let Some(p) = &repo.password_file {
            cmd.env("BALLAST_PASSWORD_FILE", p);
        }
        if let Some(k) = &repo.key_file {
            cmd.env("BALLAST_KEY_FILE", k);
        }
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let out = tokio::spawn(async move {
            let mut buf = Vec::new();
            match on_line {
                None => {
                    let _ = stdout.read_to_end(&mut buf).await;
                }
                Some(f) => {
                    // Bytes up to each newline, whatever they hold: a line that is not
                    // UTF-8 must not stop the reading (the job would block on a full
                    // pipe).
                    let mut reader = tokio::io::BufReader::new(stdout);
                    let mut line = Vec::new();
                    loop {
                        line.clear();
                        match reader.read_until(b'\n', &mut line).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {
                                f(String::from_utf8_lossy(&line).trim_end());
                                buf.clone_from(&line);
                            }
                        }
                    }
                }
            }
            buf
        });
        let err = tokio::spawn(async move {
            let mut tail = Vec::new();
            let mut chunk = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > 2 * TAIL {
                    tail.drain(..tail.len() - TAIL);
                }
            }
            tail
        });
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let stopping = async {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        let mut stopped = None;
        let status = tokio::select! {
            s = child.wait() => s?,
            _ = deadline => {
                stopped = Some(Stop::Timeout);
                self.terminate(&mut child, pid).await?
            }
            _ = stopping => {
                stopped = Some(Stop::Shutdown);
                self.terminate(&mut child, pid).await?
            }
        };
        // A program the job left behind may hold the pipes open: its output is not
        // waited for long.
        let drained = Duration::from_secs(10);
        let out = tokio::time::timeout(drained, out)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let tail = tokio::time::timeout(drained, err)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let tail = &tail[tail.len().saturating_sub(TAIL)..];
        Ok(Finished {
            exit_code: status.code(),
            output: serde_json::from_slice(&out).ok(),
            stderr_tail: String::from_utf8_lossy(tail).into_owned(),
            stopped,
        })
    }

    /// SIGTERM, then SIGKILL after the grace.
    async fn terminate(
        &self,
        child: &mut tokio::process::Child,
        pid: Option<u32>,
    ) -> std::io::Result<std::process::ExitStatus> {
        signal(pid, libc::SIGTERM);
        match tokio::time::timeout(self.grace, child.wait()).await {
            Ok(s) => s,
            Err(_) => {
                signal(pid, libc::SIGKILL);
                child.start_kill()?;
                child.wait().await
            }
        }
    }
}
