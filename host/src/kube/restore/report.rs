//! What a restore did: one outcome per object, the problems the pre-flight found,
//! and the waits that ran out. `docs/kube.md` documents the JSON.

use std::collections::BTreeMap;

use serde::Serialize;

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Created,
    /// The object existed and `--existing update` replaced it with the backed-up one.
    Updated,
    /// The object existed and `--existing recreate` deleted and created it.
    Recreated,
    /// The object exists already as an earlier restore of this backup made it.
    Unchanged,
    /// The object exists and `--existing skip` left it as it is.
    Skipped,
    /// Not restored, by a rule (the cluster makes it, its controller recreates it).
    LeftOut,
    /// Waits for something the restore creates first (a CRD, a namespace), or for
    /// something that did not come in time (a webhook's backend).
    Deferred,
    Failed,
    /// The restore stopped before this object (the API server went away).
    NotAttempted,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Recreated => "recreated",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::LeftOut => "left_out",
            Outcome::Deferred => "deferred",
            Outcome::Failed => "failed",
            Outcome::NotAttempted => "not_attempted",
        }
    }
}

/// One object's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectOutcome {
    /// `resource.group`, or `resource` for the core group.
    pub resource: String,
    pub kind: String,
    /// In the target cluster (after `--namespace-map`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub outcome: Outcome,
    /// Why, for anything but created: the rule, the conflict, the server's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What else is worth knowing: an ownerReference dropped, a namespace named in
    /// free text that `--namespace-map` could not rewrite.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// For an existing object in a dry run: the fields the restore would change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<super::super::diff::FieldChange>,
    /// The restore order's level (0 first).
    pub level: usize,
    /// Milliseconds from the first request for this object to its outcome.
    pub ms: f64,
}

/// A problem found before anything was written.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// What it is about (`widgets.example.com/v2`, `storageclass fast`, ...).
    pub what: String,
    pub problem: String,
    /// Whether the restore refuses to start because of it.
    pub blocking: bool,
}

/// A wait that ran out.
#[derive(Debug, Clone, Serialize)]
pub struct Wait {
    pub what: String,
    pub seconds: f64,
    pub done: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub snapshot: String,
    /// The cluster the backup came from.
    pub source_cluster: String,
    /// The cluster restored into.
    pub target_server: String,
    pub target_context: String,
    /// The value of the `ballast.io/restore` label on every restored object.
    pub restore_id: String,
    pub dry_run: bool,
    /// Problems found before anything was written.
    pub preflight: Vec<Problem>,
    pub waits: Vec<Wait>,
    /// Objects by outcome.
    pub counts: BTreeMap<String, u64>,
    pub objects: Vec<ObjectOutcome>,
    /// The restore stopped early, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    pub requests: u64,
    pub seconds: f64,
}

/// How a restore ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every object was restored (or left out by a rule, or already there).
    Complete,
    /// Nothing failed, but some objects were skipped or deferred, or a wait ran out.
    WithSkips,
    Failed,
}

impl Report {
    pub fn push(&mut self, o: ObjectOutcome) {
        *self.counts.entry(o.outcome.name().to_string()).or_default() += 1;
        self.objects.push(o);
    }

    pub fn count(&self, o: Outcome) -> u64 {
        self.counts.get(o.name()).copied().unwrap_or(0)
    }

    pub fn ending(&self) -> Ending {
        let failed = self.count(Outcome::Failed) + self.count(Outcome::NotAttempted) > 0
            || self.stopped.is_some()
            || self.preflight.iter().any(|p| p.blocking);
        let skipped = self.count(Outcome::Skipped) + self.count(Outcome::Deferred) > 0
            || self.waits.iter().any(|w| !w.done);
        if failed {
            Ending::Failed
        } else if skipped {
            Ending::WithSkips
        } else {
            Ending::Complete
        }
    }
}
