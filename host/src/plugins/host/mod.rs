//! What the host gives plugins: the imports of `ballast:plugin`. Each works only
//! where the policy grants it; a refusal is `error.denied` naming what was asked.
//!
//! - [`job`] (here): parameters, logs, progress, notes;
//! - [`streams`]: the dump going into or coming out of the repository;
//! - [`sql`]: database sessions, connected by the host with the target's secrets;
//! - [`exec`]: allow-listed programs, credentials in their environment;
//! - [`http`]: requests to allow-listed URLs.

pub mod exec;
pub mod http;
pub mod sql;
pub mod streams;

use super::state::JobState;
use super::v0_1::ballast::plugin::{job, types};

/// A host function's failure: an error the plugin sees, or a trap.
#[derive(Debug)]
pub enum HostError {
    Denied(String),
    Failed(String),
    Invalid(String),
    /// Ends the plugin's run (a host bug, a broken invariant).
    Trap(wasmtime::Error),
}

impl From<wasmtime::component::ResourceTableError> for HostError {
    fn from(e: wasmtime::component::ResourceTableError) -> Self {
        match e {
            wasmtime::component::ResourceTableError::Full => {
                HostError::Denied("too many open sessions, processes or streams".into())
            }
            e => HostError::Trap(e.into()),
        }
    }
}

impl types::Host for JobState {
    fn convert_error(&mut self, e: HostError) -> wasmtime::Result<types::Error> {
        Ok(match e {
            HostError::Denied(m) => {
                self.ctx.journal.denied(&m);
                types::Error::Denied(m)
            }
            HostError::Failed(m) => types::Error::Failed(m),
            HostError::Invalid(m) => types::Error::Invalid(m),
            HostError::Trap(e) => return Err(e),
        })
    }
}

/// The longest log line and note kept.
const MAX_LINE: usize = 4096;
const MAX_NOTE: usize = 64 << 10;

impl job::Host for JobState {
    async fn log(&mut self, level: job::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            job::Level::Debug => tracing::Level::DEBUG,
            job::Level::Info => tracing::Level::INFO,
            job::Level::Warn => tracing::Level::WARN,
            job::Level::Error => tracing::Level::ERROR,
        };
        self.ctx.journal.log(level, truncate(message, MAX_LINE));
        Ok(())
    }

    async fn progress(&mut self, done: u64, total: Option<u64>) -> wasmtime::Result<()> {
        // Seen with -vv; the repository's own counters are what reports show.
        tracing::debug!(done, total, "plugin progress");
        Ok(())
    }

    async fn param(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.ctx.param(&name))
    }

    async fn note(&mut self, name: String, value: String) -> wasmtime::Result<()> {
        if value.len() > MAX_NOTE {
            self.ctx.journal.log(
                tracing::Level::WARN,
                format!(
                    "note {name} dropped: {} bytes, the limit is 64 KiB",
                    value.len()
                ),
            );
        } else if !self.ctx.journal.note(truncate(name, 256), value) {
            self.ctx.journal.log(
                tracing::Level::WARN,
                "note dropped: a job keeps at most 32 notes".into(),
            );
        }
        Ok(())
    }
}

pub(super) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
