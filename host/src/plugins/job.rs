//! One job: a fresh store for the plugin, each hook call under its timeout, and the
//! rule of `post-backup`: it runs after every `pre-backup` that did not fail cleanly.
//!
//! - `pre-backup` succeeded: `post-backup` runs after `backup`, whatever `backup` did.
//! - `pre-backup` trapped, timed out, or was stopped by a signal: it may have done its
//!   work (frozen a file system) before it ended, so `post-backup` runs too.
//! - `pre-backup` returned an error: the plugin said it failed, and undoes its own
//!   partial work; `post-backup` does not run.
//!
//! A trap or a timeout poisons the store (wasmtime refuses to enter it again). The
//! job then drops it, which closes every session and kills every program it
//! opened, and runs `post-backup` in a fresh store of the same component with the
//! parameter `ballast.recovery` set to `1`. A `post-backup` that fails is tried once
//! more, in a fresh store, with `ballast.recovery=1`.
//!
//! SIGTERM or SIGINT during the sequence (a Job's deadline, an eviction, Ctrl-C) stops
//! the hook that runs and runs `post-backup` within [`SIGNAL_GRACE`]; a second signal
//! ends it at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::Resource;
use wasmtime::Store;

use super::budget::Budget;
use super::host::streams::{Sink, Source};
use super::policy::{Grants, Limits};
use super::runtime::{capability_name, Info, Loaded, Runtime};
use super::state::JobState;
use super::stderr::Stderr;
use super::v0_1::{self, ballast::plugin::types};
use super::workspace::Workspace;
use super::PluginError;

/// What a job is given by its caller.
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    /// `--param name=value`, plus the `ballast.*` parameters the host sets.
    pub params: BTreeMap<String, String>,
    /// Print the plugin's log lines to stderr as they come.
    pub echo: bool,
}

/// What one job shares between its stores and with its caller.
pub struct JobContext {
    pub(super) grants: Grants,
    params: BTreeMap<String, String>,
    recovery: AtomicBool,
    pub journal: Journal,
    /// What the host holds for the plugin at once (rows, bodies, program output).
    pub(super) budget: Arc<Budget>,
    workspace: Workspace,
}

impl JobContext {
    fn new(grants: Grants, opts: &JobOptions, plugin: &str) -> Result<JobContext, PluginError> {
        let workspace = Workspace::new(grants.limits.scratch)
            .map_err(|e| PluginError::Load(format!("making the plugin's directories: {e}")))?;
        let journal = Journal::new(plugin, opts.echo);
        if let Some(why) = &workspace.no_scratch {
            tracing::debug!("{why}");
        }
        Ok(JobContext {
            budget: Budget::new(grants.limits.buffers),
            grants,
            params: opts.params.clone(),
            recovery: AtomicBool::new(false),
            journal,
            workspace,
        })
    }

    /// The plugin's only directory (`/scratch` inside it), if it has one.
    pub(super) fn guest_dir(&self) -> Option<PathBuf> {
        self.workspace.guest()
    }

    /// The host's files for this job (the programs' directories); never preopened.
    pub(super) fn host_dir(&self) -> PathBuf {
        self.workspace.host()
    }

    pub(super) fn param(&self, name: &str) -> Option<String> {
        if name == "ballast.recovery" {
            return Some(
                if self.recovery.load(Ordering::Relaxed) {
                    "1"
                } else {
                    "0"
                }
                .into(),
            );
        }
        self.params.get(name).cloned()
    }
}

/// What the plugin said during a job: log lines, notes, and what it was
/// denied.
pub struct Journal {
    plugin: String,
    echo: bool,
    inner: Mutex<JournalInner>,
}

#[derive(Default)]
struct JournalInner {
    lines: Vec<(tracing::Level, String)>,
    bytes: usize,
    notes: BTreeMap<String, String>,
    denials: Vec<String>,
}

/// Log kept per job; past it one line says so and the rest is dropped.
const MAX_LOG: usize = 1 << 20;
/// Notes a job may leave in its snapshot record, and denials kept for its report.
const MAX_NOTES: usize = 32;
const MAX_DENIALS: usize = 100;

impl Journal {
    fn new(plugin: &str, echo: bool) -> Journal {
        Journal {
            plugin: plugin.to_string(),
            echo,
            inner: Mutex::default(),
        }
    }

    pub(super) fn log(&self, level: tracing::Level, message: String) {
        let mut j = self.inner.lock().unwrap();
        if j.bytes > MAX_LOG {
            return;
        }
        j.bytes += message.len();
        let message = if j.bytes > MAX_LOG {
            "(log limit of 1 MiB reached; further lines dropped)".to_string()
        } else {
            message
        };
        if self.echo {
            eprintln!(
                "  {} {}: {message}",
                self.plugin,
                level.as_str().to_lowercase()
            );
        }
        j.lines.push((level, message));
    }

    /// Keeps a note, up to `MAX_NOTES` of them; returns false past that.
    pub(super) fn note(&self, name: String, value: String) -> bool {
        let mut j = self.inner.lock().unwrap();
        if j.notes.len() >= MAX_NOTES && !j.notes.contains_key(&name) {
            return false;
        }
        j.notes.insert(name, value);
        true
    }

    pub(super) fn denied(&self, what: &str) {
        let mut j = self.inner.lock().unwrap();
        if j.denials.len() >= MAX_DENIALS {
            return;
        }
        let what = super::host::truncate(what.to_string(), 512);
        if self.echo {
            eprintln!("  {} denied: {what}", self.plugin);
        }
        j.denials.push(what);
    }

    pub fn lines(&self) -> Vec<(String, String)> {
        let j = self.inner.lock().unwrap();
        j.lines
            .iter()
            .map(|(l, m)| (l.as_str().to_lowercase(), m.clone()))
            .collect()
    }

    pub fn notes(&self) -> BTreeMap<String, String> {
        self.inner.lock().unwrap().notes.clone()
    }

    pub fn denials(&self) -> Vec<String> {
        self.inner.lock().unwrap().denials.clone()
    }
}

/// The outcome of one hook call.
pub type HookResult = Result<(), PluginError>;

/// How a hook went, for reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Ran {
    Ok,
    Failed(String),
    /// Not run, and why.
    Skipped(String),
}

impl From<&HookResult> for Ran {
    fn from(r: &HookResult) -> Ran {
        match r {
            Ok(()) => Ran::Ok,
            Err(e) => Ran::Failed(e.to_string()),
        }
    }
}

/// What happened in a backup sequence; `post_backup` is None when `pre-backup`
/// failed cleanly (nothing to undo).
pub struct Sequence {
    pub pre_backup: HookResult,
    pub backup: Option<HookResult>,
    pub post_backup: Option<HookResult>,
    /// The signal that stopped the sequence, if one did.
    pub interrupted: Option<i32>,
}

/// How long `post-backup` may run after a signal stopped the sequence (a pod gets 30
/// seconds between SIGTERM and SIGKILL by default).
pub const SIGNAL_GRACE: Duration = Duration::from_secs(15);

/// SIGTERM and SIGINT, watched while a sequence runs.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn listen() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// The next signal's number.
    async fn recv(&mut self) -> i32 {
        let term = async {
            match &mut self.term {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let int = async {
            match &mut self.int {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term => libc::SIGTERM,
            _ = int => libc::SIGINT,
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    if sig == libc::SIGTERM {
        "SIGTERM"
    } else {
        "SIGINT"
    }
}

impl Sequence {
    /// Each hook that ran, with its error.
    pub fn hooks(&self) -> Vec<(&'static str, Ran)> {
        let mut out: Vec<(&'static str, Ran)> = [
            ("pre-backup", Some(&self.pre_backup)),
            ("backup", self.backup.as_ref()),
            ("post-backup", self.post_backup.as_ref()),
        ]
        .into_iter()
        .filter_map(|(h, r)| r.map(|r| (h, Ran::from(r))))
        .collect();
        if self.post_backup.is_none() {
            out.push((
                "post-backup",
                Ran::Skipped("pre-backup failed cleanly, so it has nothing to undo".into()),
            ));
        }
        out
    }

    /// The first failure, if any.
    pub fn error(&self) -> Option<&PluginError> {
        [
            Some(&self.pre_backup),
            self.backup.as_ref(),
            self.post_backup.as_ref(),
        ]
        .into_iter()
        .flatten()
        .find_map(|r| r.as_ref().err())
    }
}

pub struct Job<'a> {
    plugin: &'a Loaded,
    ctx: Arc<JobContext>,
    live: Option<Live>,
    /// Whether the current store went through a trap or a timeout.
    poisoned: bool,
}

/// A store and the instance in it.
struct Live {
    store: Store<JobState>,
    instance: v0_1::Plugin,
    stderr: Stderr,
}

impl<'a> Job<'a> {
    pub fn new(
        plugin: &'a Loaded,
        grants: Grants,
        opts: &JobOptions,
    ) -> Result<Job<'a>, PluginError> {
        Ok(Job {
            plugin,
            ctx: Arc::new(JobContext::new(grants, opts, &plugin.info.name)?),
            live: None,
            poisoned: false,
        })
    }

    pub fn journal(&self) -> &Journal {
        &self.ctx.journal
    }

    fn limits(&self) -> &Limits {
        &self.ctx.grants.limits
    }

    /// A fresh store and instance (after a trap: the old one is dropped first, which
    /// closes its sessions and kills its programs).
    async fn live(&mut self) -> Result<&mut Live, PluginError> {
        if self.poisoned {
            self.live = None;
            self.poisoned = false;
            self.ctx.recovery.store(true, Ordering::Relaxed);
        }
        if self.live.is_none() {
            let stderr = Stderr::default();
            let state = JobState::new(self.ctx.clone(), stderr.clone())
                .map_err(|e| PluginError::Load(format!("setting up the plugin: {e:#}")))?;
            let mut store = Store::new(&self.plugin.engine, state);
            store.limiter(|s| &mut s.memory);
            store.set_epoch_deadline(1);
            store.epoch_deadline_async_yield_and_update(1);
            let limit = Duration::from_secs(5);
            let instance =
                tokio::time::timeout(limit, self.plugin.pre.instantiate_async(&mut store))
                    .await
                    .map_err(|_| {
                        self.hook_error("instantiation", "did not finish within 5s".into())
                    })?
                    .map_err(|e| self.hook_error("instantiation", format!("failed: {e:#}")))?;
            self.live = Some(Live {
                store,
                instance,
                stderr,
            });
        }
        Ok(self.live.as_mut().unwrap())
    }

    fn hook_error(&self, hook: &str, what: String) -> PluginError {
        PluginError::Hook(format!("plugin {}: {hook} {what}", self.plugin.info.name))
    }

    /// Turns the outcome of a call into the job's terms; a trap or a timeout
    /// poisons the store.
    fn settle(
        &mut self,
        hook: &str,
        outcome: Result<wasmtime::Result<Result<(), types::Error>>, tokio::time::error::Elapsed>,
    ) -> HookResult {
        let limit = self.limits().timeout(hook);
        match outcome {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(self.hook_error(
                hook,
                match e {
                    types::Error::Denied(m) => format!("was denied: {m}"),
                    types::Error::Failed(m) => format!("failed: {m}"),
                    types::Error::Invalid(m) => format!("was given invalid input: {m}"),
                },
            )),
            Ok(Err(trap)) => {
                self.poisoned = true;
                let live = self.live.as_ref().expect("a call had a store");
                let why = if live.store.data().memory.hit {
                    format!(
                        "reached its memory limit of {} (limits.memory in the policy) and was stopped",
                        bytesize::ByteSize(live.store.data().memory.cap)
                    )
                } else {
                    let trap = match trap.downcast_ref::<wasmtime::Trap>() {
                        Some(t) => t.to_string(),
                        None => trap.root_cause().to_string(),
                    };
                    match panic_message(&live.stderr.contents()) {
                        Some(p) => format!("crashed ({trap}): {p}"),
                        None => format!("crashed ({trap})"),
                    }
                };
                Err(self.hook_error(hook, why))
            }
            Err(_) => {
                self.poisoned = true;
                Err(self.hook_error(
                    hook,
                    format!(
                        "did not finish within {} (limits.timeouts.{hook} in the policy) and was stopped",
                        humantime::format_duration(limit)
                    ),
                ))
            }
        }
    }

    pub async fn pre_backup(&mut self, target: &str) -> HookResult {
        let limit = self.limits().timeout("pre-backup");
        let live = self.live().await?;
        let hooks = live.instance.ballast_plugin_hooks();
        let outcome =
            tokio::time::timeout(limit, hooks.call_pre_backup(&mut live.store, target)).await;
        self.settle("pre-backup", outcome)
    }

    pub async fn post_backup(&mut self, target: &str) -> HookResult {
        let limit = self.limits().timeout("post-backup");
        let live = self.live().await?;
        let hooks = live.instance.ballast_plugin_hooks();
        let outcome =
            tokio::time::timeout(limit, hooks.call_post_backup(&mut live.store, target)).await;
        self.settle("post-backup", outcome)
    }

    /// Runs `backup` with `sink` as its output. The sink is closed when the call
    /// ends, however it ends, so the writer on the other side sees the end.
    pub async fn backup(&mut self, target: &str, sink: Sink) -> HookResult {
        let limit = self.limits().timeout("backup");
        let live = self.live().await?;
        let out: Resource<Sink> = live
            .store
            .data_mut()
            .table
            .push(sink)
            .map_err(|e| PluginError::Hook(e.to_string()))?;
        let hooks = live.instance.ballast_plugin_hooks();
        let borrowed = Resource::new_borrow(out.rep());
        let outcome =
            tokio::time::timeout(limit, hooks.call_backup(&mut live.store, target, borrowed)).await;
        let _ = live.store.data_mut().table.delete(out);
        self.settle("backup", outcome)
    }

    /// Runs `restore` on `target` with `source` as its input, or `verify` without a
    /// target.
    pub async fn replay(&mut self, target: Option<&str>, source: Source) -> HookResult {
        let hook = if target.is_some() {
            "restore"
        } else {
            "verify"
        };
        let limit = self.limits().timeout(hook);
        let live = self.live().await?;
        let input: Resource<Source> = live
            .store
            .data_mut()
            .table
            .push(source)
            .map_err(|e| PluginError::Hook(e.to_string()))?;
        let hooks = live.instance.ballast_plugin_hooks();
        let borrowed = Resource::new_borrow(input.rep());
        let outcome = match target {
            Some(t) => {
                tokio::time::timeout(limit, hooks.call_restore(&mut live.store, t, borrowed)).await
            }
            None => tokio::time::timeout(limit, hooks.call_verify(&mut live.store, borrowed)).await,
        };
        let _ = live.store.data_mut().table.delete(input);
        self.settle(hook, outcome)
    }

    /// pre-backup, then backup into `sink` (if given), then post-backup: after every
    /// pre-backup that did not fail cleanly, whatever backup did (see the module).
    pub async fn around(&mut self, target: &str, sink: Option<Sink>) -> Sequence {
        let mut signals = Signals::listen();
        let stopped = |hook: &str, sig: i32| {
            PluginError::Hook(format!("{hook} was stopped by {}", signal_name(sig)))
        };
        let mut interrupted = None;
        let pre_backup = tokio::select! {
            r = self.pre_backup(target) => r,
            sig = signals.recv() => {
                interrupted = Some(sig);
                Err(stopped("pre-backup", sig))
            }
        };
        if interrupted.is_some() {
            self.poisoned = true;
        }
        // A clean failure: the plugin undid what it did; whatever it opened goes with
        // its store. Any other failure may have left an effect behind.
        let clean = pre_backup.is_err() && !self.poisoned;
        if clean {
            self.live = None;
            return Sequence {
                pre_backup,
                backup: None,
                post_backup: None,
                interrupted,
            };
        }
        let backup = match (sink, &pre_backup, interrupted) {
            (Some(sink), Ok(()), None) => Some(tokio::select! {
                r = self.backup(target, sink) => r,
                sig = signals.recv() => {
                    interrupted = Some(sig);
                    Err(stopped("backup", sig))
                }
            }),
            _ => None,
        };
        if interrupted.is_some() {
            self.poisoned = true;
        }
        let post_backup = match interrupted {
            None => tokio::select! {
                r = self.post_backup_retried(target) => r,
                sig = signals.recv() => {
                    interrupted = Some(sig);
                    // A signal during post-backup: it gets the grace period to end.
                    self.finish_post_backup(target, &mut signals).await
                }
            },
            Some(_) => self.finish_post_backup(target, &mut signals).await,
        };
        Sequence {
            pre_backup,
            backup,
            post_backup: Some(post_backup),
            interrupted,
        }
    }

    /// post-backup after a signal: within the grace period, and not past a second
    /// signal.
    async fn finish_post_backup(&mut self, target: &str, signals: &mut Signals) -> HookResult {
        self.journal().log(
            tracing::Level::WARN,
            format!(
                "stopping: post-backup gets {} to undo what pre-backup did",
                humantime::format_duration(SIGNAL_GRACE)
            ),
        );
        tokio::select! {
            r = tokio::time::timeout(SIGNAL_GRACE, self.post_backup_retried(target)) => {
                r.unwrap_or_else(|_| Err(self.hook_error(
                    "post-backup",
                    format!("did not finish within the {} a stopping job grants it", humantime::format_duration(SIGNAL_GRACE)),
                )))
            }
            sig = signals.recv() => Err(PluginError::Hook(format!(
                "post-backup was cut short by a second {}", signal_name(sig)
            ))),
        }
    }

    /// post-backup, and once more in a fresh instance if it fails.
    pub async fn post_backup_retried(&mut self, target: &str) -> HookResult {
        let first = self.post_backup(target).await;
        let Err(e) = first else {
            return Ok(());
        };
        self.journal().log(
            tracing::Level::WARN,
            format!("post-backup failed ({e}); trying once more in a fresh instance"),
        );
        self.poisoned = true;
        self.post_backup(target)
            .await
            .map_err(|again| PluginError::Hook(format!("{e}; tried again: {again}")))
    }

    /// Drops the store: the next call runs in a fresh instance (what a trap leads
    /// to, and what the instantiation benchmark measures).
    pub fn restart(&mut self) {
        self.live = None;
    }

    /// Ends the job: drops the store, closing whatever it still holds.
    pub fn finish(mut self) -> Arc<JobContext> {
        self.live = None;
        self.ctx.clone()
    }
}

/// The message of a Rust panic in what the guest wrote to stderr.
fn panic_message(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let mut lines = text.lines().skip_while(|l| !l.contains("panicked at"));
    lines.next()?;
    let message: Vec<&str> = lines.take_while(|l| !l.starts_with("note: ")).collect();
    Some(message.join(" ").trim().to_string()).filter(|m| !m.is_empty())
}

/// Calls `info` in a store of its own, with nothing granted.
pub(super) fn info(rt: &Runtime, plugin: &Loaded) -> Result<Info, PluginError> {
    let grants = Grants::none();
    rt.tokio.block_on(async {
        let mut job = Job::new(plugin, grants, &JobOptions::default())?;
        let limit = job.limits().timeout("info");
        let live = job.live().await?;
        let hooks = live.instance.ballast_plugin_hooks();
        match tokio::time::timeout(limit, hooks.call_info(&mut live.store)).await {
            Ok(Ok(i)) => Ok(Info {
                name: i.name,
                version: i.version,
                summary: i.summary,
                needs: i
                    .needs
                    .into_iter()
                    .map(|c| capability_name(c).to_string())
                    .collect(),
            }),
            Ok(Err(e)) => Err(PluginError::Load(format!(
                "{}: info crashed: {e}",
                plugin.path.display()
            ))),
            Err(_) => Err(PluginError::Load(format!(
                "{}: info did not answer within {}",
                plugin.path.display(),
                humantime::format_duration(limit)
            ))),
        }
    })
}
