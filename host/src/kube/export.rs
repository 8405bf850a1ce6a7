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
    super::yaml::to_string(v)
}

/// Why a name from the snapshot cannot be part of an export path, if it cannot.
/// Names come from the server and the repository: a kind of `../../etc` must not
/// write outside the export directory.
fn bad_component(what: &str, name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= 253;
    (!ok).then(|| format!("its {what} {name:?} cannot be part of a file name"))
}

/// A kind as Kubernetes allows it: a letter, then letters and digits.
fn valid_kind(kind: &str) -> bool {
    kind.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && kind.chars().all(|c| c.is_ascii_alphanumeric())
}

/// What the clean rules need to know of the snapshot: its Services (whether a
/// Service selects decides who owns its Endpoints), in `namespace` or all of them,
/// whatever resources an export or a `get --clean` asked for.
pub fn context(stored: &StoredSnapshot, namespace: Option<&str>) -> Result<Context, KubeError> {
    let services = Filter {
        namespace: namespace.map(str::to_string),
        resources: Some(vec![(String::new(), "services".into())]),
        ..Default::default()
    };
    let mut ctx = Context::default();
    for e in stored.entries(&services)? {
        ctx.note(&e.at, &stored.read(&e)?);
    }
    Ok(ctx)
}

/// The file an object goes to under the export directory, or why it cannot have
/// one: every part must be a plain file name, so that no name the server or the
/// repository gave can write outside the directory.
fn export_path(
    group: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<PathBuf, String> {
    if !valid_kind(kind) {
        return Err(format!("its kind {kind:?} is not a Kubernetes kind"));
    }
    let bad = bad_component("group", group)
        .filter(|_| !group.is_empty())
        .or_else(|| namespace.and_then(|n| bad_component("namespace", n)))
        .or_else(|| bad_component("name", name));
    if let Some(why) = bad {
        return Err(why);
    }
    let rel = file_for(group, kind, namespace, name);
    if !rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!("{} is not a plain relative path", rel.display()));
    }
    if rel.file_name().is_some_and(|n| n.len() > 255) {
        return Err("the name is too long for a file name".into());
    }
    Ok(rel)
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
    let ctx = context(stored, filter.namespace.as_deref())?;
    let mut summary = ExportSummary::default();
    for e in &entries {
        let obj = stored.read(e)?;
        match clean::clean(&e.at, &obj, &ctx) {
            Verdict::Drop(why) => *summary.dropped.entry(why).or_default() += 1,
            Verdict::Keep(clean) => {
                // The kind discovery gave (the object's own `kind` is the server's
                // word, and unchecked).
                let kind = stored
                    .manifest
                    .resource(&e.at.group, &e.at.resource)
                    .map(|c| c.kind.clone())
                    .unwrap_or_default();
                let rel =
                    match export_path(&e.at.group, &kind, e.at.namespace.as_deref(), &e.at.name) {
                        Ok(rel) => rel,
                        Err(why) => {
                            summary
                                .errors
                                .push(format!("{}: not written: {why}", e.at.path()));
                            continue;
                        }
                    };
                let path = to.join(&rel);
                let text = to_yaml(&clean);
                let parent = path.parent().expect("a file in a directory");
                std::fs::create_dir_all(parent).map_err(|err| {
                    KubeError::Invalid(format!("cannot create {}: {err}", parent.display()))
                })?;
                // Never over another object's file (two names that differ only in
                // case, on a file system that does not tell them apart).
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
                match written {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                        summary.errors.push(format!(
                            "{}: not written: {} is another object's file (names that differ only in case?)",
                            e.at.path(),
                            rel.display()
                        ));
                        continue;
                    }
                    Err(err) => {
                        return Err(KubeError::Invalid(format!(
                            "cannot write {}: {err}",
                            path.display()
                        )))
                    }
                }
                summary.written += 1;
                summary.bytes += text.len() as u64;
            }
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_name_from_a_snapshot_leads_outside_the_export() {
        for (group, kind, ns, name) in [
            ("apps", "../Escape", Some("shop"), "web"),
            ("apps", "Deployment", Some(".."), "web"),
            ("apps", "Deployment", Some("shop"), ".."),
            ("apps", "Deployment", Some("shop"), "a/../../b"),
            ("..", "Deployment", Some("shop"), "web"),
            ("a/b", "Deployment", None, "web"),
            ("", "ConfigMap", Some("shop"), "nul\0"),
            ("", "ConfigMap", Some("shop"), ""),
            ("", "", Some("shop"), "web"),
        ] {
            assert!(
                export_path(group, kind, ns, name).is_err(),
                "{group} {kind} {ns:?} {name:?}"
            );
        }
        assert_eq!(
            export_path("apps", "Deployment", Some("shop"), "web").unwrap(),
            PathBuf::from("shop/apps.Deployment/web.yaml")
        );
        assert_eq!(
            export_path("", "Namespace", None, "shop").unwrap(),
            PathBuf::from("_cluster/core.Namespace/shop.yaml")
        );
        assert!(export_path("", "ConfigMap", Some("shop"), &"x".repeat(300)).is_err());
    }
}
