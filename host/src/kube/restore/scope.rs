//! Which stored objects a restore takes, and what the pre-flight and the order need
//! to know of them. Every object is read once here and let go: what is kept is its
//! place, its UID and owners, and a few facts (the CRDs, namespaces, storage classes
//! and webhook backends it brings or needs), so memory follows the number of
//! objects, not their size. The bodies are read again when their level is sent.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::super::clean::Context;
use super::super::discovery::ApiResource;
use super::super::labels::LabelSelector;
use super::super::layout::ObjectRef;
use super::super::select::Compiled;
use super::super::stored::{Entry, Filter, StoredSnapshot};
use super::super::KubeError;
use super::order::Node;
use super::prepare::{prepare, Plan, Rules};

/// Which objects of the snapshot a restore takes.
#[derive(Default)]
pub struct Scope {
    /// Namespaces and resources (`--include-namespaces` and the rest); `None` takes
    /// everything.
    pub selection: Option<Compiled>,
    /// One object (`KIND/NAME -n NS`), already resolved to a filter.
    pub object: Option<Filter>,
    /// `--selector`: only objects with these labels (Namespaces come along for the
    /// objects taken, CRDs for their custom objects).
    pub labels: Option<LabelSelector>,
}

/// What becomes of one stored object.
#[derive(Debug, Clone)]
pub enum Fate {
    Send,
    LeftOut(String),
    Invalid(String),
}

/// One stored object the restore takes.
pub struct Item {
    pub entry: Entry,
    pub kind: String,
    /// Where it goes (after `--namespace-map` and the modifiers).
    pub namespace: Option<String>,
    pub name: String,
    pub node: Node,
    pub fate: Fate,
}

/// A CRD the restore sends: the resource it defines and the versions it serves.
#[derive(Debug, Clone)]
pub struct CrdFacts {
    pub name: String,
    pub group: String,
    pub resource: String,
    pub versions: Vec<String>,
}

/// What the pre-flight and the waits need to know, gathered in one pass.
#[derive(Default)]
pub struct Facts {
    /// What some rules need of the whole snapshot (Services that select pods).
    pub context: Context,
    pub crds: Vec<CrdFacts>,
    /// Namespaces the restore sends a Namespace object for (target names).
    pub namespaces_sent: BTreeSet<String>,
    /// Namespaces the objects go to (target names).
    pub namespaces_needed: BTreeSet<String>,
    /// Storage classes the objects ask for, with one object that does.
    pub classes_needed: BTreeMap<String, String>,
    pub classes_sent: BTreeSet<String>,
    /// Services the restore sends, `(namespace, name)` in the target.
    pub services_sent: BTreeSet<(String, String)>,
    /// For each webhook configuration or APIService (by item index): the Services
    /// its backends are.
    pub backends: BTreeMap<usize, Vec<(String, String)>>,
    /// `(group, version, resource)` of what is sent, with its kind.
    pub resources: BTreeMap<(String, String, String), String>,
}

impl Facts {
    /// The CRD in the restore that serves `group`/`resource` in `version`.
    pub fn crd_for(&self, group: &str, resource: &str, version: &str) -> Option<&CrdFacts> {
        self.crds.iter().find(|c| {
            c.group == group && c.resource == resource && c.versions.iter().any(|v| v == version)
        })
    }
}

/// Reads the snapshot once: the items the restore takes, and their facts.
pub fn gather(
    stored: &StoredSnapshot,
    scope: &Scope,
    rules: &Rules,
) -> Result<(Vec<Item>, Facts), KubeError> {
    let filter = scope.object.clone().unwrap_or_default();
    // The Services that select pods: their Endpoints are left out.
    let ctx = super::super::export::context(stored, None)?;
    let mut items = Vec::new();
    let mut facts = Facts::default();
    let entries = stored.entries(&filter)?;
    // Namespaces whose objects are taken: their Namespace objects come along.
    let mut wanted_namespaces = BTreeSet::new();
    let mut chosen: Vec<Entry> = Vec::new();
    let mut cluster_scoped: Vec<Entry> = Vec::new();
    for e in entries {
        if let Some(sel) = &scope.selection {
            if sel.resource(&resource_of(stored, &e.at)).is_err() {
                continue;
            }
            match &e.at.namespace {
                Some(ns) if !sel.namespace(ns) => continue,
                Some(_) => {}
                None => {
                    cluster_scoped.push(e);
                    continue;
                }
            }
        }
        if let Some(ns) = &e.at.namespace {
            wanted_namespaces.insert(ns.clone());
        }
        chosen.push(e);
    }
    if let Some(sel) = &scope.selection {
        // A namespace restore takes the Namespace objects of its namespaces and the
        // CRDs of the custom objects it restores; a whole restore takes every
        // cluster-scoped object.
        let whole = !sel.namespace_backup();
        let crd_groups: BTreeSet<(String, String)> = chosen
            .iter()
            .map(|e| (e.at.group.clone(), e.at.resource.clone()))
            .collect();
        for e in cluster_scoped {
            let is_ns = e.at.group.is_empty() && e.at.resource == "namespaces";
            let take = match (is_ns, whole) {
                (true, _) => {
                    sel.namespace(&e.at.name) && (whole || wanted_namespaces.contains(&e.at.name))
                }
                (false, true) => sel.scope != super::super::select::ClusterScope::None,
                (false, false) => {
                    e.at.group == "apiextensions.k8s.io"
                        && e.at.resource == "customresourcedefinitions"
                        && crd_groups
                            .iter()
                            .any(|(g, r)| e.at.name == format!("{r}.{g}"))
                }
            };
            if take {
                chosen.push(e);
            }
        }
    }
    // Namespaces last: with a label selector, a namespace comes along only when
    // some of its objects do.
    // CRDs too: they come along for the custom objects taken, or by their labels.
    let later = |e: &Entry| {
        (e.at.group.is_empty() && e.at.resource == "namespaces")
            || (e.at.group == "apiextensions.k8s.io"
                && e.at.resource == "customresourcedefinitions")
    };
    let (namespaces, others): (Vec<Entry>, Vec<Entry>) = chosen.into_iter().partition(later);
    let mut taken_namespaces = BTreeSet::new();
    let mut taken_crds = BTreeSet::new();
    for e in others {
        let obj = stored.read(&e)?;
        if let Some(sel) = &scope.labels {
            if !sel.matches(&obj["metadata"]["labels"]) {
                continue;
            }
        }
        if let Some(ns) = &e.at.namespace {
            taken_namespaces.insert(ns.clone());
        }
        taken_crds.insert(format!("{}.{}", e.at.resource, e.at.group));
        let item = item_of(e, &obj, &ctx, rules, items.len(), &mut facts);
        items.push(item);
    }
    for e in namespaces {
        let needed = if e.at.resource == "namespaces" {
            taken_namespaces.contains(&e.at.name)
        } else {
            taken_crds.contains(&e.at.name)
        };
        let obj = stored.read(&e)?;
        if let Some(sel) = &scope.labels {
            if !needed && !sel.matches(&obj["metadata"]["labels"]) {
                continue;
            }
        }
        let item = item_of(e, &obj, &ctx, rules, items.len(), &mut facts);
        items.push(item);
    }
    facts.context = ctx;
    Ok((items, facts))
}

/// The stored resource as discovery would name it, for the selection's globs.
fn resource_of(stored: &StoredSnapshot, at: &ObjectRef) -> ApiResource {
    let c = stored.manifest.resource(&at.group, &at.resource);
    ApiResource {
        group: at.group.clone(),
        version: at.version.clone(),
        resource: at.resource.clone(),
        kind: c.map(|c| c.kind.clone()).unwrap_or_default(),
        namespaced: at.namespace.is_some(),
        short_names: c.map(|c| c.short_names.clone()).unwrap_or_default(),
        preferred: true,
        aliases: Vec::new(),
    }
}

fn item_of(
    entry: Entry,
    obj: &Value,
    ctx: &Context,
    rules: &Rules,
    index: usize,
    facts: &mut Facts,
) -> Item {
    let at = &entry.at;
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let node = Node {
        at: at.clone(),
        uid: obj["metadata"]["uid"].as_str().map(str::to_string),
        owners: obj["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["uid"].as_str().map(str::to_string))
            .collect(),
    };
    let (fate, namespace, name) = match prepare(at, obj, ctx, rules) {
        Plan::Send(p) => {
            note_facts(
                at,
                &kind,
                p.namespace.as_deref(),
                &p.name,
                &p.body,
                index,
                facts,
            );
            (Fate::Send, p.namespace, p.name)
        }
        Plan::LeftOut(why) => (Fate::LeftOut(why), mapped(at, rules), at.name.clone()),
        Plan::Invalid(why) => (Fate::Invalid(why), mapped(at, rules), at.name.clone()),
    };
    Item {
        entry,
        kind,
        namespace,
        name,
        node,
        fate,
    }
}

/// The namespace an object that is not sent would have gone to.
fn mapped(at: &ObjectRef, rules: &Rules) -> Option<String> {
    at.namespace
        .as_deref()
        .map(|n| rules.mappings.namespace(n).to_string())
}

fn note_facts(
    at: &ObjectRef,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    body: &Value,
    index: usize,
    facts: &mut Facts,
) {
    facts.resources.insert(
        (at.group.clone(), at.version.clone(), at.resource.clone()),
        kind.to_string(),
    );
    if let Some(ns) = namespace {
        facts.namespaces_needed.insert(ns.to_string());
    }
    let class = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    match (at.group.as_str(), at.resource.as_str()) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let spec = &body["spec"];
            facts.crds.push(CrdFacts {
                name: name.to_string(),
                group: spec["group"].as_str().unwrap_or_default().to_string(),
                resource: spec["names"]["plural"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                versions: spec["versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|v| v["served"] != Value::Bool(false))
                    .filter_map(|v| v["name"].as_str().map(str::to_string))
                    .collect(),
            });
        }
        ("", "namespaces") => {
            facts.namespaces_sent.insert(name.to_string());
        }
        ("", "services") => {
            facts
                .services_sent
                .insert((namespace.unwrap_or_default().to_string(), name.to_string()));
        }
        ("storage.k8s.io", "storageclasses") => {
            facts.classes_sent.insert(name.to_string());
        }
        ("", "persistentvolumeclaims" | "persistentvolumes") => {
            if let Some(c) = class(&body["spec"]["storageClassName"]) {
                facts
                    .classes_needed
                    .entry(c)
                    .or_insert_with(|| format!("{kind} {}", shown(namespace, name)));
            }
        }
        ("apps", "statefulsets") => {
            for t in body["spec"]["volumeClaimTemplates"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(c) = class(&t["spec"]["storageClassName"]) {
                    facts
                        .classes_needed
                        .entry(c)
                        .or_insert_with(|| format!("{kind} {}", shown(namespace, name)));
                }
            }
        }
        (
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations" | "mutatingwebhookconfigurations",
        ) => {
            let services: Vec<(String, String)> = body["webhooks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| service_ref(&w["clientConfig"]["service"]))
                .collect();
            if !services.is_empty() {
                facts.backends.insert(index, services);
            }
        }
        ("apiregistration.k8s.io", "apiservices") => {
            if let Some(s) = service_ref(&body["spec"]["service"]) {
                facts.backends.insert(index, vec![s]);
            }
        }
        _ => {}
    }
}

fn service_ref(v: &Value) -> Option<(String, String)> {
    Some((
        v["namespace"].as_str()?.to_string(),
        v["name"].as_str()?.to_string(),
    ))
}

/// `namespace/name`, or `name` for a cluster-scoped object.
pub fn shown(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}
