//! Two Kubernetes snapshots compared, or a snapshot and the live cluster: objects
//! added, removed and changed, and for one object the fields that changed. Objects
//! are compared in their clean form (`clean.rs`) unless asked to compare exactly:
//! a resourceVersion, managed fields or a status that moved are not a change of
//! what was deployed.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::clean::{self, Context, Verdict};
use super::client::Cluster;
use super::layout::ObjectRef;
use super::manifest::{Manifest, SelectionRecord, MAX_EXCLUDED_LISTED};
use super::object;
use super::select::{ClusterResources, ClusterScope, Compiled, Selection};
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

    /// `resource.group` (`resource` for the core group).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// `resource.group/name` with its namespace, for a human.
    pub fn display(&self) -> String {
        let r = self.qualified();
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// The form objects are compared in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// As stored.
    Exact,
    /// As a clean export writes them, leaving out the objects it leaves out.
    Clean,
    /// With the server's fields stripped, keeping every object (one object's
    /// fields, compared whether or not an export would keep it).
    Stripped,
}

/// The objects of a snapshot, in `form`.
pub fn snapshot_objects(
    s: &StoredSnapshot,
    filter: &Filter,
    form: Form,
) -> Result<Objects, KubeError> {
    let entries = s.entries(filter)?;
    let mut raw = Vec::with_capacity(entries.len());
    for e in &entries {
        raw.push((e.at.clone(), s.read(e)?));
    }
    Ok(compared(raw, form))
}

fn compared(raw: Vec<(ObjectRef, Value)>, form: Form) -> Objects {
    match form {
        Form::Exact => raw.into_iter().map(|(at, v)| (Key::of(&at), v)).collect(),
        Form::Stripped => raw
            .into_iter()
            .map(|(at, v)| (Key::of(&at), clean::strip(&at, &v)))
            .collect(),
        Form::Clean => {
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
    }
}

/// How a snapshot's selection took objects, to take live objects the same way.
pub struct Taken {
    selection: Compiled,
    /// In a namespace backup, the cluster-scoped objects it holds, by resource.
    needed: Option<BTreeMap<(String, String), BTreeSet<String>>>,
}

impl Taken {
    /// Reads what it needs of `s` (before any runtime starts: reading a snapshot
    /// blocks).
    pub fn of(s: &StoredSnapshot) -> Result<Taken, KubeError> {
        let selection = compile(&s.manifest.selection)?;
        let needed = match selection.scope {
            ClusterScope::Needed => {
                let mut m: BTreeMap<_, BTreeSet<String>> = BTreeMap::new();
                for e in s.entries(&Filter::default())? {
                    if e.at.namespace.is_none() {
                        m.entry((e.at.group.clone(), e.at.resource.clone()))
                            .or_default()
                            .insert(e.at.name.clone());
                    }
                }
                Some(m)
            }
            _ => None,
        };
        Ok(Taken { selection, needed })
    }
}

/// The live objects of the resources a snapshot holds, listed now and taken as
/// the snapshot's selection took them: its namespaces, its label selector, not
/// the objects labelled `ballast.io/exclude=true`, and in a namespace backup only
/// the cluster-scoped objects it holds (the ones its namespaces needed).
pub async fn live_objects(
    cluster: &Cluster,
    s: &StoredSnapshot,
    taken: &Taken,
    filter: &Filter,
    form: Form,
    page_size: u32,
) -> Result<Objects, KubeError> {
    let Taken { selection, needed } = taken;
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
            aliases: vec![],
        };
        if filter.namespace.is_some() && !r.namespaced {
            continue;
        }
        let is_namespace = r.group.is_empty() && r.resource == "namespaces";
        let held = needed
            .as_ref()
            .filter(|_| !r.namespaced && !is_namespace)
            .map(|m| m.get(&(r.group.clone(), r.resource.clone())));
        // The capture applied the selector to what it listed by namespace, and to
        // every cluster-scoped list of a whole-cluster backup.
        let selector = selection
            .label_selector
            .as_ref()
            .filter(|_| !is_namespace && held.is_none());
        let base = r.path(filter.namespace.as_deref());
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("{base}?limit={page_size}");
            if let Some(sel) = selector {
                path.push_str("&labelSelector=");
                path.push_str(&encode(sel));
            }
            if let Some(t) = &token {
                path.push_str("&continue=");
                path.push_str(&encode(t));
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
                let taken = match (&at.namespace, held) {
                    (Some(ns), _) => selection.namespace(ns),
                    (None, _) if is_namespace => selection.namespace(&at.name),
                    (None, Some(names)) => names.is_some_and(|n| n.contains(&at.name)),
                    (None, None) => true,
                };
                if taken && !object::excluded(&obj) {
                    raw.push((at, obj));
                }
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
    Ok(compared(raw, form))
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The selection a snapshot was made with, compiled again.
fn compile(r: &SelectionRecord) -> Result<Compiled, KubeError> {
    Selection {
        include_namespaces: r.include_namespaces.clone(),
        exclude_namespaces: r.exclude_namespaces.clone(),
        include_resources: r.include_resources.clone(),
        exclude_resources: r.exclude_resources.clone(),
        label_selector: r.label_selector.clone(),
        cluster_resources: match r.cluster_resources.as_str() {
            "yes" => ClusterResources::Yes,
            "no" => ClusterResources::No,
            _ => ClusterResources::Auto,
        },
        all_versions: r.all_versions,
    }
    .compile()
}

/// What one side of a comparison could not say: an object that only the other
/// side holds is a difference only if this side would have held it.
pub struct Coverage<'a> {
    /// `A`, `B`.
    name: &'static str,
    manifest: &'a Manifest,
    selection: Compiled,
    /// Whether the other side was made with another selection.
    differs: bool,
    /// Whether the other side had another label selector.
    selector_differs: bool,
    /// The objects this side left out by label: `(resource, namespace, name)`.
    by_label: BTreeSet<(String, Option<String>, String)>,
}

impl<'a> Coverage<'a> {
    /// What snapshot `name`'s manifest covers, against the other side's selection.
    pub fn of(
        name: &'static str,
        manifest: &'a Manifest,
        other: &SelectionRecord,
    ) -> Result<Coverage<'a>, KubeError> {
        Ok(Coverage {
            name,
            manifest,
            selection: compile(&manifest.selection)?,
            differs: manifest.selection != *other,
            selector_differs: manifest.selection.label_selector != other.label_selector,
            by_label: manifest
                .excluded_objects
                .iter()
                .map(|x| (x.resource.clone(), x.namespace.clone(), x.name.clone()))
                .collect(),
        })
    }

    /// Why this side cannot say whether it would hold `key`, if it cannot.
    fn gap(&self, key: &Key) -> Option<String> {
        let m = self.manifest;
        let n = self.name;
        let q = key.qualified();
        let listed = m
            .forbidden
            .iter()
            .chain(&m.failed)
            .find(|x| x.what == q && (x.namespace.is_none() || x.namespace == key.namespace));
        if let Some(x) = listed {
            return Some(format!("{n} could not list it: {}", x.reason));
        }
        if let Some(l) = m.excluded.iter().find(|l| l.what == q) {
            return Some(format!("{n} left it out: {}", l.reason));
        }
        let captured = m.resource(&key.group, &key.resource);
        let skipped = m.skipped_groups.iter().any(|x| {
            let parts: Vec<&str> = x.what.split('/').collect();
            match parts[..] {
                // One resource of a group version.
                [g, _, r] => g == key.group && r == key.resource,
                // A whole group version, unless the resource came from another.
                [g, _] => g == key.group && captured.is_none(),
                [_] => key.group.is_empty() && captured.is_none(),
                _ => false,
            }
        });
        if skipped {
            return Some(format!("{n} could not discover its group version"));
        }
        if let Some(c) = captured {
            if c.unstored > 0 {
                return Some(format!("{n} could not store {} of its objects", c.unstored));
            }
            let labelled = (q.clone(), key.namespace.clone(), key.name.clone());
            if self.by_label.contains(&labelled) {
                return Some(format!("{n} left it out by its ballast.io/exclude label"));
            }
            if c.excluded_by_label > 0 && m.excluded_objects.len() >= MAX_EXCLUDED_LISTED {
                return Some(format!(
                    "{n} left objects out by label and names only the first {MAX_EXCLUDED_LISTED}"
                ));
            }
        }
        let sel = &self.selection;
        let is_namespace = key.group.is_empty() && key.resource == "namespaces";
        let cluster_object = key.namespace.is_none() && !is_namespace;
        // Which cluster objects a namespace backup holds follows from what its
        // namespaces held: with any selection, one side may need what the other
        // did not.
        if cluster_object && sel.scope == ClusterScope::Needed {
            return Some(format!(
                "{n} holds only the cluster-scoped objects its namespaces need"
            ));
        }
        if self.differs {
            let outside = match &key.namespace {
                Some(ns) => !sel.namespace(ns),
                None if is_namespace => !sel.namespace(&key.name),
                None => sel.scope == ClusterScope::None,
            };
            if outside {
                return Some(if cluster_object {
                    format!("{n} holds no cluster-scoped objects")
                } else {
                    format!("outside {n}'s namespaces")
                });
            }
            if self.selector_differs && !is_namespace {
                return Some(format!("{n} was made with another label selector"));
            }
        }
        None
    }
}

/// Objects only one side holds that the other side cannot speak for, counted by
/// resource, namespace and reason.
#[derive(Debug, PartialEq, Serialize)]
pub struct NotCompared {
    pub resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub reason: String,
    pub objects: u64,
}

#[derive(Debug, Serialize)]
pub struct Comparison {
    pub differences: Vec<Difference>,
    pub not_compared: Vec<NotCompared>,
}

/// What differs between `a` (before) and `b` (after). An object only one side
/// holds is added or removed when the other side covers it (`None`: the live
/// cluster, which covers all it was asked for), else it is counted as not
/// compared.
pub fn differences(
    a: &Objects,
    b: &Objects,
    a_covers: Option<&Coverage>,
    b_covers: Option<&Coverage>,
) -> Comparison {
    let mut out = Vec::new();
    let mut gaps: BTreeMap<(String, Option<String>, String), u64> = BTreeMap::new();
    let mut one_sided =
        |k: &Key, other: Option<&Coverage>, change: Change| match other.and_then(|c| c.gap(k)) {
            Some(why) => {
                *gaps
                    .entry((k.qualified(), k.namespace.clone(), why))
                    .or_default() += 1
            }
            None => out.push(Difference {
                key: k.clone(),
                change,
            }),
        };
    for (k, va) in a {
        match b.get(k) {
            None => one_sided(k, b_covers, Change::Removed),
            Some(vb) if vb != va => one_sided(k, None, Change::Changed),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        one_sided(k, a_covers, Change::Added);
    }
    out.sort_by(|x, y| x.key.cmp(&y.key));
    Comparison {
        differences: out,
        not_compared: gaps
            .into_iter()
            .map(|((resource, namespace, reason), objects)| NotCompared {
                resource,
                namespace,
                reason,
                objects,
            })
            .collect(),
    }
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
    fn an_object_the_other_side_could_not_list_is_not_compared() {
        let key = |r: &str, n: &str| Key {
            group: String::new(),
            resource: r.into(),
            namespace: Some("shop".into()),
            name: n.into(),
        };
        let a: Objects = [
            (key("secrets", "db"), json!({})),
            (key("configmaps", "gone"), json!({})),
        ]
        .into();
        let mut m = Manifest::default();
        m.failed.push(super::super::manifest::Missed {
            what: "secrets".into(),
            namespace: Some("shop".into()),
            code: Some(500),
            reason: "boom".into(),
        });
        let b_covers = Coverage::of("B", &m, &m.selection.clone()).unwrap();
        let cmp = differences(&a, &Objects::new(), None, Some(&b_covers));
        assert_eq!(cmp.differences.len(), 1);
        assert_eq!(cmp.differences[0].key.name, "gone");
        assert_eq!(cmp.differences[0].change, Change::Removed);
        assert_eq!(
            cmp.not_compared,
            vec![NotCompared {
                resource: "secrets".into(),
                namespace: Some("shop".into()),
                reason: "B could not list it: boom".into(),
                objects: 1
            }]
        );
        // An object B left out by its label is not removed either.
        let mut labelled = Manifest::default();
        labelled.resources.push(super::super::manifest::Captured {
            resource: "configmaps".into(),
            excluded_by_label: 1,
            ..Default::default()
        });
        labelled
            .excluded_objects
            .push(super::super::manifest::ExcludedObject {
                resource: "configmaps".into(),
                namespace: Some("shop".into()),
                name: "gone".into(),
            });
        let covers = Coverage::of("B", &labelled, &labelled.selection.clone()).unwrap();
        let only_gone: Objects = [(key("configmaps", "gone"), json!({}))].into();
        let cmp = differences(&only_gone, &Objects::new(), None, Some(&covers));
        assert!(cmp.differences.is_empty(), "{:?}", cmp.differences);
        assert_eq!(
            cmp.not_compared[0].reason,
            "B left it out by its ballast.io/exclude label"
        );
        // Without the failure, both are removed.
        let whole = Manifest::default();
        let covers = Coverage::of("B", &whole, &whole.selection.clone()).unwrap();
        let cmp = differences(&a, &Objects::new(), None, Some(&covers));
        assert_eq!(cmp.differences.len(), 2);
        assert!(cmp.not_compared.is_empty());
    }

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
