//! Application plugins: WebAssembly components that quiesce, dump, restore and
//! verify applications, run by wasmtime with only what the operator's policy grants.
//!
//! - [`runtime`]: the engine (one per process), the compile cache, loading a
//!   component and checking its WIT version;
//! - [`policy`]: targets, grants and limits, default deny;
//! - [`job`]: one job's store, the hook sequence and the post-backup guarantee;
//! - [`host`]: what the host gives plugins (job, streams, sql, exec, http);
//! - [`catalog`]: the in-repo marketplace (`guest-plugins/catalog.toml`);
//! - [`app`]: `backup app`, `restore app` and `verify app` with the repository;
//! - [`scaffold`]: `plugin new`.
//!
//! The WIT lives in `wit/`; [`v0_1`] holds the bindings of `ballast:plugin@0.1.0`.

pub mod app;
pub mod budget;
pub mod catalog;
pub mod host;
pub mod job;
pub mod policy;
pub mod runtime;
pub mod scaffold;
mod state;
mod stderr;
pub mod v0_1;
mod workspace;

pub use job::{Job, JobOptions, Journal};
pub use runtime::{Loaded, Runtime};

/// Why a plugin could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin policy: {0}")]
    Policy(String),
    #[error("{0}")]
    Load(String),
    #[error("catalog: {0}")]
    Catalog(String),
    /// A hook returned an error, trapped, or ran out of time.
    #[error("{0}")]
    Hook(String),
    #[error(transparent)]
    Repo(#[from] crate::repo::RepoError),
}
