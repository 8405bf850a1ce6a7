//! What the server remembers across restarts, in its state directory:
//! `state.json` (per schedule: how far its runs were handled, its newest attempt
//! and success, its counts), replaced atomically after every change, and
//! `runs.jsonl`, one record per run, skip or miss, appended.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// How a run ended, or why there was none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    /// The backup was saved, but incomplete (exit 3: unreadable files, objects
    /// not captured).
    Partial,
    Failed,
    /// Not run: the reason says why (another run of the schedule still running,
    /// the server stopping).
    Skipped,
    /// Due while the server was down; `count` runs were missed, and one was run
    /// to catch up.
    Missed,
}

impl Outcome {
    pub fn parse(name: &str) -> Option<Outcome> {
        [
            Outcome::Succeeded,
            Outcome::Partial,
            Outcome::Failed,
            Outcome::Skipped,
            Outcome::Missed,
        ]
        .into_iter()
        .find(|o| o.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Missed => "missed",
        }
    }
}

/// One line of `runs.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub schedule: String,
    pub job: String,
    pub outcome: Outcome,
    /// The cron time it ran for (none for a kept-running capture).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<Timestamp>,
    pub started: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// For a missed record: how many runs were missed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// One schedule's remembered state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScheduleState {
    /// When the server first took the schedule on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// Every cron time up to this one was run, skipped or recorded missed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handled_until: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunRecord>,
    /// The run in progress, written before it starts: found at a start, it was
    /// interrupted (a crash, a kill) and is recorded as failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<RunRecord>,
    /// Counts by "outcome" or "skipped:REASON", carried over restarts so that
    /// counters never go back.
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub schedules: BTreeMap<String, ScheduleState>,
}

/// A file only the server's user reads (run records hold jobs' error messages).
fn private(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .mode(0o600)
        .open(path)
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn open(dir: &Path) -> std::io::Result<StateDir> {
        std::fs::create_dir_all(dir)?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn runs_path(&self) -> PathBuf {
        self.dir.join("runs.jsonl")
    }

    /// The remembered state; empty on a first start. A file that does not parse is
    /// an error, not a fresh start: it would forget which runs were missed.
    pub fn load(&self) -> Result<State, String> {
        match std::fs::read(self.state_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} does not parse ({e}): move it away to start with no state (missed runs are then not caught up)",
                    self.state_path().display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(format!("cannot read {}: {e}", self.state_path().display())),
        }
    }

    /// Replaces the state file: written beside it, synced, renamed over it, and the
    /// directory synced, so that a crash leaves the old state or the new.
    pub fn save(&self, state: &State) -> std::io::Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        let mut f = private(&tmp, false)?;
        f.write_all(&serde_json::to_vec_pretty(state).expect("state serializes"))?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.state_path())?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Appends one run record.
    pub fn record(&self, r: &RunRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(r).expect("a record serializes");
        line.push(b'\n');
        let mut f = private(&self.runs_path(), true)?;
        f.write_all(&line)?;
        f.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_reopen_and_a_damaged_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = StateDir::open(dir.path()).unwrap();
        assert!(d.load().unwrap().schedules.is_empty());
        let mut s = State::default();
        let e = s.schedules.entry("etcd".into()).or_default();
        e.handled_until = Some("2026-12-07T05:00:00Z".parse().unwrap());
        e.counts.insert("succeeded".into(), 3);
        d.save(&s).unwrap();
        let again = StateDir::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(again.schedules["etcd"].counts["succeeded"], 3);
        assert_eq!(
            again.schedules["etcd"].handled_until,
            Some("2026-12-07T05:00:00Z".parse().unwrap())
        );
        std::fs::write(dir.path().join("state.json"), b"{\"schedules\": [").unwrap();
        assert!(d.load().unwrap_err().contains("move it away"));
    }
}
