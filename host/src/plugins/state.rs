//! The data of one store: WASI (nothing inherited), the resource table, the memory
//! limiter and what the job shares with its caller.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

use super::job::JobContext;
use super::stderr::Stderr;

/// Host resources a store may hold at once (sessions, processes, rows, streams).
const MAX_RESOURCES: usize = 1000;

pub struct JobState {
    wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) memory: MemoryLimiter,
    pub(super) ctx: Arc<JobContext>,
    /// Bytes written to sinks so far.
    pub(super) output: u64,
    /// Open database sessions and programs.
    pub(super) sessions: usize,
    pub(super) processes: usize,
    /// Programs started so far (each gets a directory of its own).
    pub(super) programs_started: usize,
    pub(super) http: Option<reqwest::Client>,
}

impl JobState {
    pub fn new(ctx: Arc<JobContext>, stderr: Stderr) -> wasmtime::Result<JobState> {
        let mut wasi = WasiCtx::builder();
        // No environment, no arguments, no stdin or stdout, no network: a plugin
        // reaches the outside only through ballast's own imports. One directory is
        // its own. stderr is kept (bounded) to explain a crash.
        wasi.stderr(stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(dir) = ctx.guest_dir() {
            wasi.preopened_dir(dir, "/scratch", FsPerms::ReadWrite)?;
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Ok(JobState {
            wasi: wasi.build(),
            table,
            memory: MemoryLimiter::new(ctx.grants.limits.memory),
            ctx,
            output: 0,
            sessions: 0,
            processes: 0,
            programs_started: 0,
            http: None,
        })
    }

    /// The directory for the host's own files of this job (credentials for
    /// programs), never visible to the plugin.
    pub(super) fn host_dir(&self) -> PathBuf {
        self.ctx.host_dir()
    }
}

impl WasiView for JobState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps the plugin's linear memory and remembers whether the cap was hit, so a trap
/// that follows can be explained.
pub struct MemoryLimiter {
    pub cap: u64,
    pub hit: bool,
    /// All linear memories together.
    total: u64,
}

impl MemoryLimiter {
    fn new(cap: u64) -> Self {
        MemoryLimiter {
            cap,
            hit: false,
            total: 0,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.total - current as u64 + desired as u64;
        let ok = total <= self.cap;
        self.hit |= !ok;
        if ok {
            self.total = total;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }

    fn instances(&self) -> usize {
        32
    }

    fn tables(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        4
    }
}
