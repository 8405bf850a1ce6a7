//! Two Kubernetes snapshots compared, or a snapshot and the live cluster: objects
//! added, removed and changed, and for one object the fields that changed. Objects
//! are compared in their clean form (`clean.rs`) unless asked to compare exactly:
//! a resourceVersion, managed fields or a status that moved are not a change of
//! what was deployed.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::clean::{self, Context, Verdict};
use super::client::Cluster;
use super::layout::ObjectRef;
use super::object;
use super::stored::{Filter, StoredSnapshot};
use super::KubeError;

/// An object's identity across snapshots: the version it was read in does not count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Key {
    pub group: String,
    pub resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl Key {
    fn of(at: &ObjectRef) -> Key {
        Key {
            group: at.group.clone(),
            resource: at.resource.clone(),
            namespace: at.namespace.clone(),
            name: at.name.clone(),
        }
    }

    /// `resource.group/name` with its namespace, for a human.
    pub fn display(&self) -> String {
        let r = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        match &self.namespace {
            Some(ns) => format!("{ns}/{r}/{}", self.name),
            None => format!("{r}/{}", self.name),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

#[derive(Debug, Serialize)]
pub struct Difference {
    #[serde(flatten)]
    pub key: Key,
    pub change: Change,
}

/// One field that differs.
#[derive(Debug, PartialEq, Serialize)]
pub struct FieldChange {
    /// `spec.template.spec.containers[0].image`.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// Objects in the form they are compared in.
pub type Objects = BTreeMap<Key, Value>;

/// The objects of a snapshot, clean unless `exact`.
pub fn snapshot_objects(
    s: &StoredSnapshot,
    filter: &Filter,
    exact: bool,
) -> Result<Objects, KubeError> {
    let entries = s.entries(filter)?;
    let mut raw = Vec::with_capacity(entries.len());
    for e in &entries {
        raw.push((e.at.clone(), s.read(e)?));
    }
    Ok(compared(raw, exact))
}

fn compared(raw: Vec<(ObjectRef, Value)>, exact: bool) -> Objects {
    if exact {
        return raw.into_iter().map(|(at, v)| (Key::of(&at), v)).collect();
    }
    let mut ctx = Context::default();
    for (at, v) in &raw {
        ctx.note(at, v);
    }
    raw.into_iter()
        .filter_map(|(at, v)| match clean::clean(&at, &v, &ctx) {
            Verdict::Keep(c) => Some((Key::of(&at), c)),
            Verdict::Drop(_) => None,
        })
        .collect()
}

/// The live objects of the resources a snapshot holds, listed now.
pub async fn live_objects(
    cluster: &Cluster,
    s: &StoredSnapshot,
    filter: &Filter,
    exact: bool,
    page_size: u32,
) -> Result<Objects, KubeError> {
    let mut raw = Vec::new();
    for c in s.manifest.resources.iter().filter(|c| c.preferred) {
        if let Some(want) = &filter.resources {
            if !want.iter().any(|(g, r)| *g == c.group && *r == c.resource) {
                continue;
            }
        }
        let r = super::discovery::ApiResource {
            group: c.group.clone(),
            version: c.version.clone(),
            resource: c.resource.clone(),
            kind: c.kind.clone(),
            namespaced: c.namespaced,
            short_names: vec![],
            preferred: true,
        };
        if filter.namespace.is_some() && !r.namespaced {
            continue;
        }
        let base = r.path(filter.namespace.as_deref());
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("{base}?limit={page_size}");
            if let Some(t) = &token {
                path.push_str("&continue=");
                path.push_str(
                    &url::form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>(),
                );
            }
            let page: Value = cluster
                .get_json(&path, &format!("listing {}", r.qualified()))
                .await?;
            for item in page["items"].as_array().into_iter().flatten() {
                let bytes = serde_json::to_vec(item).expect("JSON");
                let obj = object::from_item(&bytes, &r.api_version(), &r.kind).map_err(|why| {
                    KubeError::Decode {
                        what: format!("listing {}", r.qualified()),
                        detail: why,
                    }
                })?;
                let at = ObjectRef {
                    group: r.group.clone(),
                    version: r.version.clone(),
                    resource: r.resource.clone(),
                    namespace: object::namespace(&obj).map(str::to_string),
                    name: object::name(&obj).unwrap_or_default().to_string(),
                };
                if filter.name.as_ref().is_some_and(|n| *n != at.name) {
                    continue;
                }
                raw.push((at, obj));
            }
            match page["metadata"]["continue"]
                .as_str()
                .filter(|c| !c.is_empty())
            {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
    }
    Ok(compared(raw, exact))
}

/// What differs between `a` (before) and `b` (after).
pub fn differences(a: &Objects, b: &Objects) -> Vec<Difference> {
    let mut out = Vec::new();
    for (k, va) in a {
        match b.get(k) {
            None => out.push(Difference {
                key: k.clone(),
                change: Change::Removed,
            }),
            Some(vb) if vb != va => out.push(Difference {
                key: k.clone(),
                change: Change::Changed,
            }),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(Difference {
            key: k.clone(),
            change: Change::Added,
        });
    }
    out.sort_by(|x, y| x.key.cmp(&y.key));
    out
}

/// The fields that differ between two versions of one object.
pub fn fields(a: &Value, b: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(&mut String::new(), Some(a), Some(b), &mut out);
    out
}

fn walk(path: &mut String, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<FieldChange>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                walk(path, x.get(k), y.get(k), out);
                path.truncate(len);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(path, x.get(i), y.get(i), out);
                path.truncate(len);
            }
        }
        (x, y) if x != y => out.push(FieldChange {
            path: path.clone(),
            before: x.cloned(),
            after: y.cloned(),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_that_changed_are_named_by_path() {
        let a = json!({"spec": {"replicas": 2, "ports": [{"port": 80}], "gone": true}});
        let b = json!({"spec": {"replicas": 3, "ports": [{"port": 80}, {"port": 443}]}});
        let f = fields(&a, &b);
        assert_eq!(
            f,
            vec![
                FieldChange {
                    path: "spec.gone".into(),
                    before: Some(json!(true)),
                    after: None
                },
                FieldChange {
                    path: "spec.ports[1]".into(),
                    before: None,
                    after: Some(json!({"port": 443}))
                },
                FieldChange {
                    path: "spec.replicas".into(),
                    before: Some(json!(2)),
                    after: Some(json!(3))
                },
            ]
        );
        assert!(fields(&a, &a).is_empty());
    }
}
