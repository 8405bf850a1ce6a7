//! The cluster-scoped objects a namespace backup needs (`--cluster-resources auto`):
//! noted from the namespaced objects as they are stored, asked of each
//! cluster-scoped object afterwards.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::kube::discovery::ApiResource;

#[derive(Debug, Default)]
pub struct Needs {
    persistent_volumes: BTreeSet<String>,
    storage_classes: BTreeSet<String>,
    priority_classes: BTreeSet<String>,
    ingress_classes: BTreeSet<String>,
    /// `plural.group` of custom objects captured.
    crds: BTreeSet<String>,
    /// `(namespace, name)` of ServiceAccounts captured.
    service_accounts: BTreeSet<(String, String)>,
    cluster_roles: BTreeSet<String>,
}

impl Needs {
    /// Notes what `obj` (of `r`, just stored) refers to.
    pub fn note(&mut self, r: &ApiResource, obj: &Value) {
        // Any group may be a CRD's (`snapshot.storage.k8s.io`, `gateway.networking.k8s.io`
        // are): the name is noted, and only a CRD of that name is taken.
        if !r.group.is_empty() {
            self.crds.insert(r.qualified());
        }
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        match (r.group.as_str(), r.resource.as_str()) {
            ("", "persistentvolumeclaims") => {
                if let Some(v) = obj["spec"]["volumeName"].as_str() {
                    self.persistent_volumes.insert(v.into());
                }
            }
            ("", "serviceaccounts") => {
                self.service_accounts.insert((ns.into(), name.into()));
            }
            ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
                if obj["roleRef"]["kind"] == "ClusterRole" {
                    if let Some(role) = obj["roleRef"]["name"].as_str() {
                        self.cluster_roles.insert(role.into());
                    }
                }
            }
            _ => {}
        }
        if let Some(class) = obj["metadata"]["annotations"]["kubernetes.io/ingress.class"].as_str()
        {
            self.ingress_classes.insert(class.into());
        }
        self.walk(obj);
    }

    /// The class names anywhere in the object (pod templates of workloads, claim
    /// templates of StatefulSets, custom objects that embed them).
    fn walk(&mut self, v: &Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if let Value::String(s) = x {
                        match k.as_str() {
                            "storageClassName" => {
                                self.storage_classes.insert(s.clone());
                            }
                            "priorityClassName" => {
                                self.priority_classes.insert(s.clone());
                            }
                            "ingressClassName" => {
                                self.ingress_classes.insert(s.clone());
                            }
                            _ => {}
                        }
                    } else {
                        self.walk(x);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| self.walk(x)),
            _ => {}
        }
    }

    /// Whether the cluster-scoped `obj` (of `r`) is needed.
    pub fn wants(&self, r: &ApiResource, obj: &Value) -> bool {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        match (r.group.as_str(), r.resource.as_str()) {
            ("", "persistentvolumes") => self.persistent_volumes.contains(name),
            ("storage.k8s.io", "storageclasses") => self.storage_classes.contains(name),
            ("scheduling.k8s.io", "priorityclasses") => self.priority_classes.contains(name),
            ("networking.k8s.io", "ingressclasses") => self.ingress_classes.contains(name),
            ("apiextensions.k8s.io", "customresourcedefinitions") => self.crds.contains(name),
            ("rbac.authorization.k8s.io", "clusterroles") => self.cluster_roles.contains(name),
            ("rbac.authorization.k8s.io", "clusterrolebindings") => {
                obj["subjects"].as_array().into_iter().flatten().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && self.service_accounts.contains(&(
                            s["namespace"].as_str().unwrap_or_default().into(),
                            s["name"].as_str().unwrap_or_default().into(),
                        ))
                })
            }
            _ => false,
        }
    }
}

/// The order cluster-scoped resources are listed in, in a namespace backup: those
/// that add needs (PersistentVolumes name StorageClasses, ClusterRoleBindings name
/// ClusterRoles) before the rest.
pub fn cluster_phase(r: &ApiResource) -> u8 {
    match (r.group.as_str(), r.resource.as_str()) {
        ("", "persistentvolumes") | ("rbac.authorization.k8s.io", "clusterrolebindings") => 0,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(group: &str, resource: &str) -> ApiResource {
        ApiResource {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            kind: String::new(),
            namespaced: true,
            short_names: vec![],
            preferred: true,
            aliases: vec![],
        }
    }

    #[test]
    fn namespaced_objects_name_the_cluster_objects_they_need() {
        let mut n = Needs::default();
        n.note(
            &r("", "persistentvolumeclaims"),
            &json!({"metadata": {"name": "data", "namespace": "shop"},
            "spec": {"volumeName": "pv-1", "storageClassName": "fast"}}),
        );
        n.note(
            &r("apps", "deployments"),
            &json!({"metadata": {"name": "web"},
            "spec": {"template": {"spec": {"priorityClassName": "high", "containers": []}}}}),
        );
        n.note(
            &r("", "serviceaccounts"),
            &json!({"metadata": {"name": "app", "namespace": "shop"}}),
        );
        n.note(
            &r("example.com", "widgets"),
            &json!({"metadata": {"name": "w"}}),
        );
        n.note(
            &r("rbac.authorization.k8s.io", "rolebindings"),
            &json!({"metadata": {"name": "rb"},
            "roleRef": {"kind": "ClusterRole", "name": "view"}}),
        );
        let named = |name: &str| json!({"metadata": {"name": name}});
        assert!(n.wants(&r("", "persistentvolumes"), &named("pv-1")));
        assert!(!n.wants(&r("", "persistentvolumes"), &named("pv-2")));
        assert!(n.wants(&r("storage.k8s.io", "storageclasses"), &named("fast")));
        assert!(n.wants(&r("scheduling.k8s.io", "priorityclasses"), &named("high")));
        assert!(n.wants(
            &r("apiextensions.k8s.io", "customresourcedefinitions"),
            &named("widgets.example.com")
        ));
        assert!(n.wants(
            &r("rbac.authorization.k8s.io", "clusterroles"),
            &named("view")
        ));
        let crb = |ns: &str| json!({"metadata": {"name": "b"}, "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": ns}]});
        assert!(n.wants(
            &r("rbac.authorization.k8s.io", "clusterrolebindings"),
            &crb("shop")
        ));
        assert!(!n.wants(
            &r("rbac.authorization.k8s.io", "clusterrolebindings"),
            &crb("other")
        ));
        assert!(!n.wants(&r("", "nodes"), &named("node-1")));
    }
}
