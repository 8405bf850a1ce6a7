//! Errors of the repository: each says what failed, on what, and what to do.

use crate::store::StoreError;

use super::blob::BlobError;
use super::pack::PackError;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{location} is not a ballast repository (it has no `config` object): create one with `ballast repo init`, or check --repo / BALLAST_REPO")]
    NotARepository { location: String },

    #[error("{location} already holds a ballast repository; use it, or choose another location")]
    AlreadyInitialized { location: String },

    #[error("{location} is not empty and is not a ballast repository; initialise into an empty directory or bucket prefix")]
    NotEmpty { location: String },

    #[error("none of the {tried} keys of the repository at {location} opens with the given {what}; check BALLAST_PASSWORD / BALLAST_PASSWORD_FILE / --key-file")]
    WrongSecret {
        location: String,
        tried: usize,
        what: &'static str,
    },

    #[error("{0}")]
    Store(#[from] StoreError),

    #[error("{0}")]
    Blob(#[from] BlobError),

    #[error("{0}")]
    Pack(#[from] PackError),

    #[error("{what} is damaged: {detail}; run `ballast repo check` to see what is affected")]
    Damaged { what: String, detail: String },

    #[error(
        "blob {blob} is not in the index (index delta missing?); run `ballast repo repair-index`"
    )]
    BlobNotIndexed { blob: String },

    #[error("no snapshot matches `{0}`; list them with `ballast snapshots`")]
    NoSuchSnapshot(String),

    #[error("`{prefix}` matches several snapshots ({candidates}); give more digits")]
    AmbiguousSnapshot { prefix: String, candidates: String },

    #[error("{0}")]
    Invalid(String),

    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },

    #[error("{location} is locked: {operation} by {holder} holds the lease since {since} (until {expires} unless renewed); wait for it to finish. If that process is gone, its lease expires by itself, or end it now with `ballast repo unlock`")]
    Locked {
        location: String,
        operation: String,
        holder: String,
        since: String,
        expires: String,
        key: String,
    },

    #[error("the lease of this operation was lost: {0}; stopped before changing anything more (run it again)")]
    LeaseLost(String),

    #[error("interrupted")]
    Interrupted,
}

pub type Result<T, E = RepoError> = std::result::Result<T, E>;

impl RepoError {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> RepoError {
        RepoError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
