//! Resource modifiers (`--modifiers FILE`): JSON patches (RFC 6902) and merge
//! patches (RFC 7386) applied to the objects that a rule selects by resource,
//! namespace and name globs and by labels, after the mappings. The format is in
//! `docs/kube.md`:
//!
//! ```yaml
//! rules:
//!   - match: {resources: [deployments.apps], namespaces: ["shop*"], names: ["*"], labels: {app: web}}
//!     jsonPatch: [{op: replace, path: /spec/replicas, value: 1}]
//!     mergePatch: {metadata: {annotations: {restored: "true"}}}
//! ```

use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use serde_json::Value;

use super::super::layout::ObjectRef;
use super::super::KubeError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    rules: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleFile {
    #[serde(rename = "match", default)]
    matches: MatchFile,
    #[serde(default)]
    json_patch: Option<json_patch::Patch>,
    #[serde(default)]
    merge_patch: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchFile {
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Rule {
    resources: Option<GlobSet>,
    namespaces: Option<GlobSet>,
    names: Option<GlobSet>,
    labels: Vec<(String, String)>,
    json_patch: Option<json_patch::Patch>,
    merge_patch: Option<Value>,
}

/// The rules of a modifiers file (none by default).
#[derive(Debug, Clone, Default)]
pub struct Modifiers {
    rules: Vec<Rule>,
}

fn globs(patterns: &[String], what: &str) -> Result<Option<GlobSet>, String> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g: Glob = GlobBuilder::new(p)
            .case_insensitive(what == "resources")
            .build()
            .map_err(|e| format!("{what}: {p:?} is not a valid glob: {e}"))?;
        b.add(g);
    }
    b.build().map(Some).map_err(|e| format!("{what}: {e}"))
}

impl Modifiers {
    pub fn load(path: &Path) -> Result<Modifiers, KubeError> {
        let bad = |why: String| {
            KubeError::Invalid(format!("the resource modifiers {}: {why}", path.display()))
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let file: File = serde_yaml_ng::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let mut rules = Vec::new();
        for (i, r) in file.rules.into_iter().enumerate() {
            let at = |why: String| bad(format!("rule {}: {why}", i + 1));
            if r.json_patch.is_none() && r.merge_patch.is_none() {
                return Err(at("it has neither jsonPatch nor mergePatch".into()));
            }
            if r.merge_patch.as_ref().is_some_and(|m| !m.is_object()) {
                return Err(at("mergePatch must be an object".into()));
            }
            rules.push(Rule {
                resources: globs(&r.matches.resources, "resources").map_err(at)?,
                namespaces: globs(&r.matches.namespaces, "namespaces").map_err(at)?,
                names: globs(&r.matches.names, "names").map_err(at)?,
                labels: r.matches.labels.into_iter().collect(),
                json_patch: r.json_patch,
                merge_patch: r.merge_patch,
            });
        }
        Ok(Modifiers { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Applies every rule that selects the object (stored at `at`, selected by its
    /// backed-up namespace); `Err` names the rule that could not apply.
    pub fn apply(&self, at: &ObjectRef, obj: &mut Value) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            if !r.selects(at, obj) {
                continue;
            }
            if let Some(p) = &r.json_patch {
                json_patch::patch(obj, p)
                    .map_err(|e| format!("resource modifier rule {}: {e}", i + 1))?;
            }
            if let Some(m) = &r.merge_patch {
                json_patch::merge(obj, m);
            }
        }
        Ok(())
    }
}

impl Rule {
    fn selects(&self, at: &ObjectRef, obj: &Value) -> bool {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let group = if at.group.is_empty() {
            "core"
        } else {
            at.group.as_str()
        };
        let names = [
            at.resource.clone(),
            format!("{}.{group}", at.resource),
            kind.to_string(),
            format!("{kind}.{group}"),
        ];
        let hit = |g: &Option<GlobSet>, values: &[&str]| {
            g.as_ref()
                .is_none_or(|g| values.iter().any(|v| g.is_match(v)))
        };
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        hit(&self.resources, &name_refs)
            && hit(&self.namespaces, &[at.namespace.as_deref().unwrap_or("")])
            && (self.namespaces.is_none() || at.namespace.is_some())
            && hit(&self.names, &[at.name.as_str()])
            && self
                .labels
                .iter()
                .all(|(k, v)| obj["metadata"]["labels"][k].as_str() == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(text: &str) -> Result<Modifiers, KubeError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.yaml");
        std::fs::write(&p, text).unwrap();
        Modifiers::load(&p)
    }

    fn at(resource: &str, ns: &str, name: &str) -> ObjectRef {
        ObjectRef {
            group: "apps".into(),
            version: "v1".into(),
            resource: resource.into(),
            namespace: Some(ns.into()),
            name: name.into(),
        }
    }

    #[test]
    fn rules_patch_the_objects_they_select() {
        let m = load(
            "rules:\n  - match: {resources: [Deployment.apps], namespaces: ['shop*'], labels: {app: web}}\n    jsonPatch: [{op: replace, path: /spec/replicas, value: 1}]\n    mergePatch: {metadata: {annotations: {restored: 'true'}}}\n",
        )
        .unwrap();
        let d = || json!({"kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"replicas": 5}});
        let mut a = d();
        m.apply(&at("deployments", "shop-eu", "web"), &mut a)
            .unwrap();
        assert_eq!(a["spec"]["replicas"], 1);
        assert_eq!(a["metadata"]["annotations"]["restored"], "true");
        let mut b = d();
        m.apply(&at("deployments", "other", "web"), &mut b).unwrap();
        assert_eq!(b, d());
        let mut c = d();
        c["metadata"]["labels"]["app"] = json!("db");
        let before = c.clone();
        m.apply(&at("deployments", "shop", "web"), &mut c).unwrap();
        assert_eq!(c, before);
    }

    #[test]
    fn a_patch_that_cannot_apply_is_an_error_and_bad_files_are_refused() {
        let m = load("rules:\n  - jsonPatch: [{op: remove, path: /spec/missing}]\n").unwrap();
        let mut d = json!({"kind": "Deployment", "spec": {}});
        assert!(m
            .apply(&at("deployments", "shop", "web"), &mut d)
            .unwrap_err()
            .contains("rule 1"));
        assert!(load("rules:\n  - match: {names: [a]}\n").is_err());
        assert!(load("rules:\n  - mergePatch: {}\n    extra: 1\n").is_err());
        assert!(load("rules:\n  - match: {names: ['[']}\n    mergePatch: {}\n").is_err());
    }
}
