//! A clean export: one YAML file per object under `NAMESPACE/GROUP.KIND/NAME.yaml`
//! (`_cluster/` for cluster-scoped objects, `core` for the core group), keys in a
//! stable order, with what the cluster made or owns left out (`clean.rs`). The same
//! objects give the same bytes, so an export can be diffed and committed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::clean::{self, Context, Verdict};
use super::layout::{self, CLUSTER_SCOPE};
use super::stored::{Filter, StoredSnapshot};
use super::KubeError;

#[derive(Debug, Default, Serialize)]
pub struct ExportSummary {
    pub written: u64,
    pub bytes: u64,
    /// Objects left out, counted by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Objects that could not be written, and why.
    pub errors: Vec<String>,
}

/// The file an object goes to, relative to the export directory.
pub fn file_for(group: &str, kind: &str, namespace: Option<&str>, name: &str) -> PathBuf {
    Path::new(namespace.unwrap_or(CLUSTER_SCOPE))
        .join(format!("{}.{kind}", layout::group_dir(group)))
        .join(format!("{name}.yaml"))
}

/// An object as export writes it.
pub fn to_yaml(v: &Value) -> String {
    serde_yaml_ng::to_string(v).expect("a JSON value always serializes as YAML")
}

/// Writes the clean objects of `filter` into `to`, which must be empty or new.
pub fn export(
    stored: &StoredSnapshot,
    filter: &Filter,
    to: &Path,
) -> Result<ExportSummary, KubeError> {
    if to.exists() {
        let mut entries = std::fs::read_dir(to)
            .map_err(|e| KubeError::Invalid(format!("cannot read {}: {e}", to.display())))?;
        if entries.next().is_some() {
            return Err(KubeError::Invalid(format!(
                "{} is not empty: export into a new or empty directory, so that no file of an older export stays behind",
                to.display()
            )));
        }
    }
    let entries = stored.entries(filter)?;
    // Services first: whether a Service selects decides who owns its Endpoints.
    let mut ctx = Context::default();
    for e in entries
        .iter()
        .filter(|e| e.at.group.is_empty() && e.at.resource == "services")
    {
        ctx.note(&e.at, &stored.read(e)?);
    }
    let mut summary = ExportSummary::default();
    for e in &entries {
        let obj = stored.read(e)?;
        match clean::clean(&e.at, &obj, &ctx) {
            Verdict::Drop(why) => *summary.dropped.entry(why).or_default() += 1,
            Verdict::Keep(clean) => {
                let kind = clean["kind"].as_str().unwrap_or("Unknown").to_string();
                let rel = file_for(&e.at.group, &kind, e.at.namespace.as_deref(), &e.at.name);
                if rel.file_name().is_some_and(|n| n.len() > 255) {
                    summary.errors.push(format!(
                        "{}: the name is too long for a file name",
                        e.at.path()
                    ));
                    continue;
                }
                let path = to.join(&rel);
                let text = to_yaml(&clean);
                let parent = path.parent().expect("a file in a directory");
                std::fs::create_dir_all(parent)
                    .and_then(|_| std::fs::write(&path, &text))
                    .map_err(|err| {
                        KubeError::Invalid(format!("cannot write {}: {err}", path.display()))
                    })?;
                summary.written += 1;
                summary.bytes += text.len() as u64;
            }
        }
    }
    Ok(summary)
}
