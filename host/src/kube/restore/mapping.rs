//! `--namespace-map a=b` and `--storage-class-map x=y`: an object moved to another
//! namespace, with the references that name a namespace rewritten, and the
//! storage classes its volumes ask for renamed. A namespace named in free text (a
//! URL, an environment variable) cannot be rewritten safely: it is listed.

use std::collections::BTreeMap;

use serde_json::Value;

use super::super::layout::ObjectRef;
use super::super::KubeError;

#[derive(Debug, Clone, Default)]
pub struct Mappings {
    pub namespaces: BTreeMap<String, String>,
    pub storage_classes: BTreeMap<String, String>,
}

/// Parses `from=to` arguments (comma-separated or repeated).
pub fn parse_pairs(args: &[String], flag: &str) -> Result<BTreeMap<String, String>, KubeError> {
    let mut out = BTreeMap::new();
    for a in args.iter().flat_map(|a| a.split(',')).map(str::trim) {
        if a.is_empty() {
            continue;
        }
        let Some((from, to)) = a.split_once('=') else {
            return Err(KubeError::Invalid(format!(
                "{flag} {a:?} is not FROM=TO (for example {flag} shop=shop-restored)"
            )));
        };
        let (from, to) = (from.trim(), to.trim());
        if from.is_empty() || to.is_empty() {
            return Err(KubeError::Invalid(format!(
                "{flag} {a:?} needs a name on both sides of `=`"
            )));
        }
        if let Some(old) = out.insert(from.to_string(), to.to_string()) {
            if old != to {
                return Err(KubeError::Invalid(format!(
                    "{flag} maps {from:?} twice, to {old:?} and to {to:?}: give one"
                )));
            }
        }
    }
    Ok(out)
}

impl Mappings {
    /// The namespace an object of `namespace` goes to.
    pub fn namespace<'a>(&'a self, namespace: &'a str) -> &'a str {
        self.namespaces
            .get(namespace)
            .map(String::as_str)
            .unwrap_or(namespace)
    }

    fn map_ns(&self, v: Option<&mut Value>) {
        let Some(v) = v else { return };
        if let Some(s) = v.as_str() {
            if let Some(to) = self.namespaces.get(s) {
                *v = Value::String(to.clone());
            }
        }
    }

    fn map_class(&self, v: Option<&mut Value>) {
        let Some(v) = v else { return };
        if let Some(s) = v.as_str() {
            if let Some(to) = self.storage_classes.get(s) {
                *v = Value::String(to.clone());
            }
        }
    }

    /// Rewrites `obj` (stored at `at`) in place; returns notes on what it could not.
    pub fn apply(&self, at: &ObjectRef, obj: &mut Value) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.namespaces.is_empty() {
            self.namespaces_of(at, obj);
            free_text(&self.namespaces, obj, &mut String::new(), &mut notes);
        }
        if !self.storage_classes.is_empty() {
            self.classes_of(at, obj);
        }
        notes
    }

    fn namespaces_of(&self, at: &ObjectRef, obj: &mut Value) {
        self.map_ns(field(obj, &["metadata", "namespace"]));
        match (at.group.as_str(), at.resource.as_str()) {
            ("", "namespaces") => {
                self.map_ns(field(obj, &["metadata", "name"]));
                // The server sets it to the namespace's (new) name.
                if let Some(l) = obj["metadata"]["labels"].as_object_mut() {
                    l.remove("kubernetes.io/metadata.name");
                }
            }
            ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
                for s in each(obj, "subjects") {
                    self.map_ns(field(s, &["namespace"]));
                }
            }
            ("", "persistentvolumes") => {
                self.map_ns(field(obj, &["spec", "claimRef", "namespace"]))
            }
            ("snapshot.storage.k8s.io", "volumesnapshotcontents") => {
                self.map_ns(field(obj, &["spec", "volumeSnapshotRef", "namespace"]))
            }
            (
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations" | "mutatingwebhookconfigurations",
            ) => {
                for w in each(obj, "webhooks") {
                    self.map_ns(field(w, &["clientConfig", "service", "namespace"]));
                }
            }
            ("apiregistration.k8s.io", "apiservices") => {
                self.map_ns(field(obj, &["spec", "service", "namespace"]))
            }
            _ => {}
        }
    }

    fn classes_of(&self, at: &ObjectRef, obj: &mut Value) {
        match (at.group.as_str(), at.resource.as_str()) {
            ("", "persistentvolumeclaims" | "persistentvolumes") => {
                self.map_class(field(obj, &["spec", "storageClassName"]));
                self.map_class(field(
                    obj,
                    &[
                        "metadata",
                        "annotations",
                        "volume.beta.kubernetes.io/storage-class",
                    ],
                ));
            }
            ("apps", "statefulsets") => {
                for t in field(obj, &["spec"])
                    .into_iter()
                    .flat_map(|s| each(s, "volumeClaimTemplates"))
                {
                    self.map_class(field(t, &["spec", "storageClassName"]));
                }
            }
            _ => {}
        }
    }
}

fn each<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// The value at `path`, if it is there (indexing with `v["a"]["b"]` would add it).
fn field<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| v.get_mut(*k))
}

/// Notes every string that still names a mapped namespace after the structured
/// references were rewritten: `db.shop.svc`, `shop/app`, or a field whose name says
/// it is a namespace.
fn free_text(
    map: &BTreeMap<String, String>,
    v: &Value,
    path: &mut String,
    notes: &mut Vec<String>,
) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if path.is_empty() && k == "metadata" {
                    // Names, labels and annotations: checked below, except the
                    // namespace itself (already mapped) and managedFields.
                    if let Some(meta) = x.as_object() {
                        for (mk, mx) in meta {
                            if matches!(mk.as_str(), "annotations" | "labels") {
                                let len = path.len();
                                path.push_str("metadata.");
                                path.push_str(mk);
                                free_text(map, mx, path, notes);
                                path.truncate(len);
                            }
                        }
                    }
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                if let Some(s) = x.as_str() {
                    if k.to_ascii_lowercase().contains("namespace") && map.contains_key(s) {
                        notes.push(format!(
                            "{path} names the namespace {s:?}, which --namespace-map moves: not rewritten"
                        ));
                    }
                }
                free_text(map, x, path, notes);
                path.truncate(len);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                free_text(map, x, path, notes);
                path.truncate(len);
            }
        }
        Value::String(s) => {
            for from in map.keys() {
                if s.contains(&format!(".{from}.svc")) || s.starts_with(&format!("{from}/")) {
                    notes.push(format!(
                        "{path} names the namespace {from:?} in text, which --namespace-map does not rewrite"
                    ));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(group: &str, resource: &str, ns: Option<&str>) -> ObjectRef {
        ObjectRef {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            namespace: ns.map(str::to_string),
            name: "x".into(),
        }
    }

    fn maps() -> Mappings {
        Mappings {
            namespaces: parse_pairs(&["shop=shop2".into()], "--namespace-map").unwrap(),
            storage_classes: parse_pairs(&["fast=ssd".into()], "--storage-class-map").unwrap(),
        }
    }

    #[test]
    fn references_that_name_a_namespace_follow_it() {
        let m = maps();
        let mut rb = json!({"metadata": {"name": "rb", "namespace": "shop"},
            "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"},
                         {"kind": "ServiceAccount", "name": "b", "namespace": "other"}]});
        assert!(m
            .apply(
                &at("rbac.authorization.k8s.io", "rolebindings", Some("shop")),
                &mut rb
            )
            .is_empty());
        assert_eq!(rb["metadata"]["namespace"], "shop2");
        assert_eq!(rb["subjects"][0]["namespace"], "shop2");
        assert_eq!(rb["subjects"][1]["namespace"], "other");
        let mut pv = json!({"metadata": {"name": "pv"}, "spec": {"storageClassName": "fast",
            "claimRef": {"name": "data", "namespace": "shop"}}});
        m.apply(&at("", "persistentvolumes", None), &mut pv);
        assert_eq!(pv["spec"]["claimRef"]["namespace"], "shop2");
        assert_eq!(pv["spec"]["storageClassName"], "ssd");
        assert!(pv["metadata"].get("namespace").is_none());
        let mut ns = json!({"metadata": {"name": "shop", "labels": {"kubernetes.io/metadata.name": "shop", "team": "a"}}});
        m.apply(&at("", "namespaces", None), &mut ns);
        assert_eq!(
            ns,
            json!({"metadata": {"name": "shop2", "labels": {"team": "a"}}})
        );
    }

    #[test]
    fn a_namespace_in_free_text_is_listed_not_rewritten() {
        let mut d = json!({"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"template": {"spec": {"containers": [{"env": [
                {"name": "DB", "value": "postgres://db.shop.svc:5432/app"},
                {"name": "OTHER", "value": "db.other.svc"}]}]}}}});
        let notes = maps().apply(&at("apps", "deployments", Some("shop")), &mut d);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("spec.template.spec.containers[0].env[0].value"));
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
            "postgres://db.shop.svc:5432/app"
        );
    }

    #[test]
    fn bad_pairs_are_refused() {
        assert!(parse_pairs(&["shop".into()], "--namespace-map").is_err());
        assert!(parse_pairs(&["=b".into()], "--namespace-map").is_err());
        assert!(parse_pairs(&["a=b,a=c".into()], "--namespace-map").is_err());
        assert_eq!(parse_pairs(&["a=b,c=d".into()], "--x").unwrap().len(), 2);
    }
}
