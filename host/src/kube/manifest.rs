//! The capture manifest: what a Kubernetes backup captured, and what it did not and
//! why. It is stored in the snapshot (`_capture.json`) and printed by
//! `backup kube --json`; `docs/kube.md` documents every field.

use serde::{Deserialize, Serialize};

/// The cluster a backup came from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Cluster {
    /// The UID of the `kube-system` namespace: the cluster's identity.
    pub uid: String,
    /// The API server's URL.
    pub server: String,
    /// Its version (`gitVersion`).
    pub version: String,
    /// The kubeconfig context, or `in-cluster`.
    pub context: String,
}

/// One list of one resource: all its pages at one resourceVersion.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ListRecord {
    /// The namespace listed, for lists made per namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub resource_version: String,
    pub pages: u32,
    pub objects: u64,
    /// How many times the list started over because its continue token expired
    /// (410 Gone): the objects are those of the last, complete, list.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
}

fn yes() -> bool {
    true
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A resource that was captured.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Captured {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    pub resource: String,
    pub kind: String,
    pub namespaced: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub short_names: Vec<String>,
    /// The version clients get by default (others are there with `--all-versions`).
    #[serde(default = "yes")]
    pub preferred: bool,
    /// Objects stored.
    pub objects: u64,
    pub bytes: u64,
    pub lists: Vec<ListRecord>,
    /// Objects left out by `ballast.io/exclude=true`.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub excluded_by_label: u64,
    /// Cluster-scoped objects left out because nothing captured needs them
    /// (`--cluster-resources auto` in a namespace backup).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub not_needed: u64,
    /// Objects the server sent that could not be stored (each is in `warnings`).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub unstored: u64,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// A resource or group that was not captured (or not whole), and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Missed {
    /// `GROUP/VERSION` for a group version, `RESOURCE.GROUP` for a resource.
    pub what: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The HTTP status, when the server gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    pub reason: String,
}

/// A resource left out on purpose, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Left {
    pub what: String,
    pub reason: String,
}

/// The selection a backup was made with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SelectionRecord {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// `auto`, `yes` or `no`.
    pub cluster_resources: String,
    pub all_versions: bool,
}

/// An object left out by its label, by name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExcludedObject {
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// `ballast.kube.capture/v1`.
    pub format: String,
    /// Nothing was missed: every resource selected was listed whole.
    pub complete: bool,
    pub cluster: Cluster,
    pub selection: SelectionRecord,
    pub started: String,
    pub finished: String,
    pub resources: Vec<Captured>,
    /// Group versions whose discovery failed (a broken aggregated APIService).
    pub skipped_groups: Vec<Missed>,
    /// Resources the credentials may not list (403).
    pub forbidden: Vec<Missed>,
    /// Resources whose listing failed for another reason.
    pub failed: Vec<Missed>,
    /// Resources left out by the selection.
    pub excluded: Vec<Left>,
    /// Resources served twice (events in `core` and `events.k8s.io`) and captured
    /// once, and resources that cannot be listed (no `list` or `get` verb).
    pub not_captured: Vec<Left>,
    /// Objects left out by `ballast.io/exclude=true` (the first 1,000).
    pub excluded_objects: Vec<ExcludedObject>,
    /// Anything else worth knowing (an object that could not be stored).
    pub warnings: Vec<String>,
    /// Objects the server sent that could not be stored (each is in `warnings`).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub unstored: u64,
}

pub const FORMAT: &str = "ballast.kube.capture/v1";

/// Objects listed by name in `excluded_objects` at most.
pub const MAX_EXCLUDED_LISTED: usize = 1000;

impl Manifest {
    /// What was missed, one line each, for a human.
    pub fn missed(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.skipped_groups {
            out.push(format!("group {} skipped: {}", m.what, m.reason));
        }
        for m in &self.forbidden {
            out.push(format!("{} forbidden: {}", m.what, m.reason));
        }
        for m in &self.failed {
            out.push(format!("{} failed: {}", m.what, m.reason));
        }
        if self.unstored > 0 {
            out.push(format!(
                "{} objects could not be stored (the warnings say which)",
                self.unstored
            ));
        }
        out
    }

    pub fn objects(&self) -> u64 {
        self.resources.iter().map(|r| r.objects).sum()
    }

    /// The captured resource stored under `group`/`resource`, if any.
    pub fn resource(&self, group: &str, resource: &str) -> Option<&Captured> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.resource == resource)
    }
}
