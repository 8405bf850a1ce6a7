//! What a clean export drops, and why: the objects a cluster makes by itself, and
//! the fields of the others that the server owns or allocated. What is left is
//! what a person or a GitOps tool would have written, and what a fresh cluster
//! accepts. `docs/kube.md` lists the same rules.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::layout::ObjectRef;

/// Facts about the whole snapshot that some rules need.
#[derive(Debug, Default)]
pub struct Context {
    /// `(namespace, name)` of Services with a selector: their Endpoints and
    /// EndpointSlices are the controllers'.
    pub selector_services: HashSet<(String, String)>,
}

impl Context {
    /// Notes a stored object (Services are the ones that matter).
    pub fn note(&mut self, at: &ObjectRef, obj: &Value) {
        let selects = obj["spec"]["selector"]
            .as_object()
            .is_some_and(|m| !m.is_empty());
        if at.group.is_empty() && at.resource == "services" && selects {
            self.selector_services
                .insert((at.namespace.clone().unwrap_or_default(), at.name.clone()));
        }
    }
}

/// The outcome for one object.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Keep(Value),
    /// Left out, and why.
    Drop(String),
}

/// Annotations that controllers and the API server write.
const OWNED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
    "control-plane.alpha.kubernetes.io/leader",
    "endpoints.kubernetes.io/last-change-trigger-time",
];

/// Annotation prefixes that belong to a controller (every `pv.kubernetes.io/`
/// annotation is the PersistentVolume controller's).
const OWNED_ANNOTATION_PREFIXES: &[&str] = &["pv.kubernetes.io/"];

/// Metadata the server owns.
const OWNED_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Finalizers that controllers add to every object of a kind.
const OWNED_FINALIZERS: &[&str] = &[
    "kubernetes.io/pvc-protection",
    "kubernetes.io/pv-protection",
];

const BUILT_IN_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Whether the object is left out, and why.
fn dropped(at: &ObjectRef, obj: &Value, ctx: &Context) -> Option<String> {
    if let Some((kind, name)) = controller_of(obj) {
        return Some(format!("created by its controller, {kind} {name}"));
    }
    made_by_cluster(at, obj, ctx).map(str::to_string)
}

/// The kind and name of the object's controller, if an ownerReference says it has
/// one.
pub fn controller_of(obj: &Value) -> Option<(&str, &str)> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["controller"] == Value::Bool(true))
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or("?"),
                o["name"].as_str().unwrap_or("?"),
            )
        })
}

/// Why the cluster makes or keeps this object by itself, if it does: an object
/// that neither an export nor a restore writes.
pub fn made_by_cluster(at: &ObjectRef, obj: &Value, ctx: &Context) -> Option<&'static str> {
    let meta = &obj["metadata"];
    let ns = at.namespace.clone().unwrap_or_default();
    let labels = &meta["labels"];
    let reason = match (at.group.as_str(), at.resource.as_str()) {
        ("" | "events.k8s.io", "events") => "an event: a record of the past, not state",
        ("", "nodes") => "a node registers itself",
        ("", "componentstatuses") => "a view of the control plane's health",
        ("coordination.k8s.io", "leases") => "a lease: heartbeats and leader elections",
        ("", "secrets") if obj["type"] == "kubernetes.io/service-account-token" => {
            "a service-account token, issued by the control plane"
        }
        ("", "configmaps") if at.name == "kube-root-ca.crt" => {
            "published in every namespace by kube-controller-manager"
        }
        ("", "namespaces") if BUILT_IN_NAMESPACES.contains(&at.name.as_str()) => {
            "exists in every cluster"
        }
        ("", "services" | "endpoints") if ns == "default" && at.name == "kubernetes" => {
            "the API server's own"
        }
        ("discovery.k8s.io", "endpointslices") if ns == "default" && at.name == "kubernetes" => {
            "the API server's own"
        }
        ("", "endpoints")
            if ctx
                .selector_services
                .contains(&(ns.clone(), at.name.clone())) =>
        {
            "kept by the endpoints controller for its Service"
        }
        ("discovery.k8s.io", "endpointslices")
            if labels["endpointslice.kubernetes.io/managed-by"]
                == "endpointslice-controller.k8s.io"
                || labels["kubernetes.io/service-name"]
                    .as_str()
                    .is_some_and(|s| {
                        ctx.selector_services.contains(&(ns.clone(), s.to_string()))
                    }) =>
        {
            "kept by the EndpointSlice controller for its Service"
        }
        ("", "serviceaccounts") if at.name == "default" && plain_default_account(obj) => {
            "made in every namespace by the ServiceAccount controller"
        }
        ("scheduling.k8s.io", "priorityclasses") if at.name.starts_with("system-") => {
            "built into every cluster"
        }
        ("rbac.authorization.k8s.io", _)
            if labels["kubernetes.io/bootstrapping"] == "rbac-defaults" =>
        {
            "a default role, reconciled by the API server at start"
        }
        ("apiregistration.k8s.io", "apiservices")
            if labels["kube-aggregator.kubernetes.io/automanaged"].is_string() =>
        {
            "registered by the API server for a built-in group"
        }
        _ => return None,
    };
    Some(reason)
}

/// The `default` ServiceAccount as its controller makes it: nothing a person set.
fn plain_default_account(obj: &Value) -> bool {
    let m = &obj["metadata"];
    let empty = |v: &Value| {
        v.is_null()
            || v.as_object().is_some_and(Map::is_empty)
            || v.as_array().is_some_and(Vec::is_empty)
    };
    let annotations_are_owned = m["annotations"]
        .as_object()
        .is_none_or(|a| a.keys().all(|k| OWNED_ANNOTATIONS.contains(&k.as_str())));
    empty(&m["labels"])
        && annotations_are_owned
        && empty(&obj["imagePullSecrets"])
        && empty(&obj["secrets"])
        && obj["automountServiceAccountToken"].is_null()
}

/// The object with what the server owns or allocated removed, or why it is left
/// out altogether.
pub fn clean(at: &ObjectRef, obj: &Value, ctx: &Context) -> Verdict {
    match dropped(at, obj, ctx) {
        Some(why) => Verdict::Drop(why),
        None => Verdict::Keep(strip(at, obj)),
    }
}

/// The object with what the server owns or allocated removed (whether or not a
/// clean export would keep it: `kube diff --object` compares any object so).
pub fn strip(at: &ObjectRef, obj: &Value) -> Value {
    strip_as(at, obj, &Strip::EXPORT)
}

/// What [`strip_as`] keeps that an export drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strip {
    /// `metadata.managedFields`: a restore keeps them, so that the managers that
    /// owned fields (a GitOps controller) still own them.
    pub managed_fields: bool,
    /// `metadata.ownerReferences`: a restore keeps them, and points them at the new
    /// owners.
    pub owner_references: bool,
    pub node_ports: NodePorts,
}

/// Which node ports of a Service are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePorts {
    /// Those `kubectl apply` recorded that someone asked for.
    Asked,
    All,
    None,
}

impl Strip {
    pub const EXPORT: Strip = Strip {
        managed_fields: false,
        owner_references: false,
        node_ports: NodePorts::Asked,
    };
}

/// The object with what the server owns or allocated removed, keeping what `keep`
/// says.
pub fn strip_as(at: &ObjectRef, obj: &Value, keep: &Strip) -> Value {
    let mut o = obj.clone();
    let applied: Value = o["metadata"]["annotations"]
        ["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let root = o.as_object_mut().expect("objects are JSON objects");
    root.remove("status");
    if let Some(meta) = root.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in OWNED_METADATA {
            if !(keep.managed_fields && *k == "managedFields") {
                meta.remove(*k);
            }
        }
        // An owner's UID belongs to this cluster: elsewhere the garbage collector
        // would delete an object whose owner it cannot find (a restore points them
        // at the new owners).
        if !keep.owner_references {
            meta.remove("ownerReferences");
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.retain(|k, _| {
                !OWNED_ANNOTATIONS.contains(&k.as_str())
                    && !OWNED_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p))
            });
        }
        if let Some(f) = meta.get_mut("finalizers").and_then(Value::as_array_mut) {
            f.retain(|x| !x.as_str().is_some_and(|s| OWNED_FINALIZERS.contains(&s)));
        }
        prune_empty(meta, &["annotations", "labels", "finalizers"]);
    }
    match (at.group.as_str(), at.resource.as_str()) {
        ("", "namespaces") => {
            if let Some(spec) = root.get_mut("spec").and_then(Value::as_object_mut) {
                if spec.get("finalizers") == Some(&serde_json::json!(["kubernetes"])) {
                    spec.remove("finalizers");
                }
            }
            prune_empty(root, &["spec"]);
        }
        ("", "services") => clean_service(root, &applied, keep.node_ports),
        ("", "pods") => {
            if let Some(spec) = root.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("nodeName");
            }
        }
        ("", "persistentvolumes") => {
            if let Some(claim) = root
                .get_mut("spec")
                .and_then(|s| s.get_mut("claimRef"))
                .and_then(Value::as_object_mut)
            {
                claim.remove("uid");
                claim.remove("resourceVersion");
            }
        }
        ("batch", "jobs") => clean_job(root),
        _ => {}
    }
    o
}

fn prune_empty(m: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        let empty = match m.get(*k) {
            Some(Value::Object(x)) => x.is_empty(),
            Some(Value::Array(x)) => x.is_empty(),
            Some(Value::Null) => true,
            _ => false,
        };
        if empty {
            m.remove(*k);
        }
    }
}

/// A Service's cluster IPs are allocated (unless headless); its node ports too,
/// unless `kubectl apply` recorded that someone asked for them.
fn clean_service(root: &mut Map<String, Value>, applied: &Value, node_ports: NodePorts) {
    let Some(spec) = root.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    if node_ports == NodePorts::All {
        return;
    }
    let asked = |v: &Value| node_ports == NodePorts::Asked && v.is_number();
    if !asked(&applied["spec"]["healthCheckNodePort"]) {
        spec.remove("healthCheckNodePort");
    }
    let asked: Vec<Value> = applied["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").cloned())
        .filter(|n| asked(n))
        .collect();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            if p.get("nodePort").is_some_and(|n| !asked.contains(n)) {
                p.remove("nodePort");
            }
        }
    }
}

/// A Job's selector and the labels that go with it are generated (unless it asks
/// for a manual selector); a fresh cluster refuses a generated selector given back.
fn clean_job(root: &mut Map<String, Value>) {
    let Some(spec) = root.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("manualSelector") == Some(&Value::Bool(true)) {
        return;
    }
    spec.remove("selector");
    const GENERATED: &[&str] = &[
        "controller-uid",
        "batch.kubernetes.io/controller-uid",
        "job-name",
        "batch.kubernetes.io/job-name",
    ];
    if let Some(labels) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("metadata"))
        .and_then(|m| m.get_mut("labels"))
        .and_then(Value::as_object_mut)
    {
        for k in GENERATED {
            labels.remove(*k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(group: &str, resource: &str, ns: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef::test(group, resource, ns, name)
    }

    #[test]
    fn server_fields_go_and_what_a_person_wrote_stays() {
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "9",
                         "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{}],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"spec\":{\"ports\":[{\"port\":80,\"nodePort\":30080}]}}", "team": "a"}},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.12", "clusterIPs": ["10.96.0.12"],
                     "ports": [{"port": 80, "nodePort": 30080}, {"port": 443, "nodePort": 31443}]},
            "status": {"loadBalancer": {}}});
        let Verdict::Keep(c) = clean(
            &at("", "services", Some("shop"), "web"),
            &svc,
            &Context::default(),
        ) else {
            panic!("kept")
        };
        assert_eq!(
            c,
            json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "annotations": {"team": "a"}},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}, {"port": 443}]}})
        );
        let headless = json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        let Verdict::Keep(c) = clean(
            &at("", "services", Some("shop"), "db"),
            &headless,
            &Context::default(),
        ) else {
            panic!("kept")
        };
        assert_eq!(c["spec"]["clusterIP"], "None");
        let pv = json!({"metadata": {"name": "pv1", "annotations": {
            "pv.kubernetes.io/migrated-to": "ebs.csi.aws.com", "pv.kubernetes.io/provisioned-by": "x",
            "owner": "team-a"}}});
        let stripped = strip(&at("", "persistentvolumes", None, "pv1"), &pv);
        assert_eq!(
            stripped["metadata"]["annotations"],
            json!({"owner": "team-a"})
        );
    }

    #[test]
    fn objects_the_cluster_makes_are_left_out() {
        let ctx = {
            let mut c = Context::default();
            c.note(
                &at("", "services", Some("shop"), "web"),
                &json!({"spec": {"selector": {"app": "web"}}}),
            );
            c
        };
        let cases = [
            (
                at("apps", "replicasets", Some("shop"), "web-1"),
                json!({"metadata": {"ownerReferences": [{"kind": "Deployment", "name": "web", "controller": true}]}}),
                true,
            ),
            (
                at("", "secrets", Some("shop"), "t"),
                json!({"type": "kubernetes.io/service-account-token"}),
                true,
            ),
            (
                at("", "secrets", Some("shop"), "s"),
                json!({"type": "Opaque"}),
                false,
            ),
            (
                at("", "configmaps", Some("shop"), "kube-root-ca.crt"),
                json!({}),
                true,
            ),
            (at("", "endpoints", Some("shop"), "web"), json!({}), true),
            (
                at("", "endpoints", Some("shop"), "external"),
                json!({}),
                false,
            ),
            (
                at(
                    "discovery.k8s.io",
                    "endpointslices",
                    Some("shop"),
                    "web-abc",
                ),
                json!({"metadata": {"labels": {"kubernetes.io/service-name": "web"}}}),
                true,
            ),
            (
                at("", "serviceaccounts", Some("shop"), "default"),
                json!({"metadata": {"name": "default"}}),
                true,
            ),
            (
                at("", "serviceaccounts", Some("shop"), "default"),
                json!({"metadata": {"name": "default"}, "imagePullSecrets": [{"name": "reg"}]}),
                false,
            ),
            (at("", "namespaces", None, "kube-system"), json!({}), true),
            (at("", "namespaces", None, "shop"), json!({}), false),
            (at("", "events", Some("shop"), "e"), json!({}), true),
        ];
        for (a, obj, gone) in cases {
            let v = clean(&a, &obj, &ctx);
            assert_eq!(matches!(v, Verdict::Drop(_)), gone, "{} {obj}", a.path());
        }
    }

    #[test]
    fn generated_job_selectors_and_namespace_finalizers_go() {
        let job = json!({"metadata": {"name": "j"}, "spec": {"selector": {"matchLabels": {"controller-uid": "x"}},
            "template": {"metadata": {"labels": {"controller-uid": "x", "job-name": "j", "app": "a"}}}}});
        let Verdict::Keep(c) = clean(
            &at("batch", "jobs", Some("n"), "j"),
            &job,
            &Context::default(),
        ) else {
            panic!()
        };
        assert!(c["spec"]["selector"].is_null());
        assert_eq!(
            c["spec"]["template"]["metadata"]["labels"],
            json!({"app": "a"})
        );
        let ns = json!({"metadata": {"name": "shop"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        let Verdict::Keep(c) = clean(
            &at("", "namespaces", None, "shop"),
            &ns,
            &Context::default(),
        ) else {
            panic!()
        };
        assert_eq!(c, json!({"metadata": {"name": "shop"}}));
    }
}
