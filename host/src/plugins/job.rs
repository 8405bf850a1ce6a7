//! One job: a fresh store for the plugin, each hook call under its timeout, and the
//! rule that once `pre-backup` has succeeded, `post-backup` runs whatever happens.
//!
//! A trap or a timeout poisons the store (wasmtime refuses to enter it again). The
//! job then drops it, which closes every session and kills every program it
//! opened, and runs `post-backup` in a fresh store of the same component with the
//! parameter `ballast.recovery` set to `1`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::Resource;
use wasmtime::Store;

use super::host::streams::{Sink, Source};
use super::policy::{Grants, Limits};
use super::runtime::{capability_name, Info, Loaded, Runtime};
use super::state::JobState;
use super::stderr::Stderr;
use super::v0_1::{self, ballast::plugin::types};
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
    scratch: tempfile::TempDir,
}

impl JobContext {
    fn new(grants: Grants, opts: &JobOptions, plugin: &str) -> Result<JobContext, PluginError> {
        let scratch = tempfile::Builder::new()
            .prefix("ballast-plugin-")
            .tempdir()
            .map_err(|e| {
                PluginError::Load(format!("making the plugin's scratch directory: {e}"))
            })?;
        for d in ["guest", "host"] {
            std::fs::create_dir(scratch.path().join(d)).map_err(|e| {
                PluginError::Load(format!("making the plugin's scratch directory: {e}"))
            })?;
        }
        Ok(JobContext {
            grants,
            params: opts.params.clone(),
            recovery: AtomicBool::new(false),
            journal: Journal::new(plugin, opts.echo),
            scratch,
        })
    }

    /// The plugin's only directory (`/scratch` inside it).
    pub(super) fn guest_dir(&self) -> PathBuf {
        self.scratch.path().join("guest")
    }

    /// The host's files for this job (credentials for programs); never preopened.
    pub(super) fn host_dir(&self) -> PathBuf {
        self.scratch.path().join("host")
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

/// What happened in a backup sequence; `post_backup` is None when `pre-backup`
/// failed (nothing to undo).
pub struct Sequence {
    pub pre_backup: HookResult,
    pub backup: Option<HookResult>,
    pub post_backup: Option<HookResult>,
}

impl Sequence {
    /// Each hook that ran, with its error.
    pub fn hooks(&self) -> Vec<(&'static str, Result<(), String>)> {
        [
            ("pre-backup", Some(&self.pre_backup)),
            ("backup", self.backup.as_ref()),
            ("post-backup", self.post_backup.as_ref()),
        ]
        .into_iter()
        .filter_map(|(h, r)| r.map(|r| (h, r.as_ref().map(|_| ()).map_err(|e| e.to_string()))))
        .collect()
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

    /// pre-backup, then backup into `sink` (if given), then post-backup if
    /// pre-backup succeeded, whatever backup did.
    pub async fn around(&mut self, target: &str, sink: Option<Sink>) -> Sequence {
        let pre_backup = self.pre_backup(target).await;
        if pre_backup.is_err() {
            // Whatever pre-backup opened goes with its store.
            self.live = None;
            return Sequence {
                pre_backup,
                backup: None,
                post_backup: None,
            };
        }
        let backup = match sink {
            Some(sink) => Some(self.backup(target, sink).await),
            None => None,
        };
        let post_backup = Some(self.post_backup(target).await);
        Sequence {
            pre_backup,
            backup,
            post_backup,
        }
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
    let grants = super::policy::Policy::default().grants("")?;
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
