//! The resource types the test API server serves: a table of built-in types, and the
//! types that CustomResourceDefinitions add once they are Established.

use serde_json::{json, Value};

/// One resource as discovery lists it, served in one or more versions.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    /// `""` for the core (legacy) group.
    pub group: String,
    /// Served versions, the preferred one first.
    pub versions: Vec<String>,
    /// The plural name, as in URLs.
    pub resource: String,
    pub kind: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    pub short_names: Vec<String>,
    /// Whether it has a status subresource (status is kept apart from the rest).
    pub status: bool,
    /// Other subresources discovery lists (`scale`, `log`, ...): never served.
    pub subresources: Vec<String>,
    /// Where objects are kept: two types with the same storage are one set of
    /// objects served twice (core `events` and `events.k8s.io` `events`).
    pub storage: String,
    /// Defined by a CRD (its list items keep `apiVersion` and `kind`).
    pub custom: bool,
}

impl ResourceType {
    pub fn group_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// `resource.group`, or `resource` for the core group.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    pub fn singular(&self) -> String {
        self.kind.to_lowercase()
    }
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `(group, versions, resource, kind, namespaced, status, other subresources, short names)`.
type Row = (
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static str,
    bool,
    bool,
    &'static [&'static str],
    &'static [&'static str],
);

#[rustfmt::skip]
const BUILT_IN: &[Row] = &[
    ("", &["v1"], "namespaces", "Namespace", false, true, &["finalize"], &["ns"]),
    ("", &["v1"], "configmaps", "ConfigMap", true, false, &[], &["cm"]),
    ("", &["v1"], "secrets", "Secret", true, false, &[], &[]),
    ("", &["v1"], "serviceaccounts", "ServiceAccount", true, false, &["token"], &["sa"]),
    ("", &["v1"], "services", "Service", true, true, &["proxy"], &["svc"]),
    ("", &["v1"], "endpoints", "Endpoints", true, false, &[], &["ep"]),
    ("", &["v1"], "pods", "Pod", true, true, &["log", "exec", "binding", "eviction"], &["po"]),
    ("", &["v1"], "persistentvolumes", "PersistentVolume", false, true, &[], &["pv"]),
    ("", &["v1"], "persistentvolumeclaims", "PersistentVolumeClaim", true, true, &[], &["pvc"]),
    ("", &["v1"], "nodes", "Node", false, true, &["proxy"], &["no"]),
    ("", &["v1"], "events", "Event", true, false, &[], &["ev"]),
    ("", &["v1"], "limitranges", "LimitRange", true, false, &[], &["limits"]),
    ("", &["v1"], "resourcequotas", "ResourceQuota", true, true, &[], &["quota"]),
    ("", &["v1"], "replicationcontrollers", "ReplicationController", true, true, &["scale"], &["rc"]),
    ("", &["v1"], "podtemplates", "PodTemplate", true, false, &[], &[]),
    ("apps", &["v1"], "deployments", "Deployment", true, true, &["scale"], &["deploy"]),
    ("apps", &["v1"], "replicasets", "ReplicaSet", true, true, &["scale"], &["rs"]),
    ("apps", &["v1"], "statefulsets", "StatefulSet", true, true, &["scale"], &["sts"]),
    ("apps", &["v1"], "daemonsets", "DaemonSet", true, true, &[], &["ds"]),
    ("apps", &["v1"], "controllerrevisions", "ControllerRevision", true, false, &[], &[]),
    ("batch", &["v1"], "jobs", "Job", true, true, &[], &[]),
    ("batch", &["v1"], "cronjobs", "CronJob", true, true, &[], &["cj"]),
    ("autoscaling", &["v2", "v1"], "horizontalpodautoscalers", "HorizontalPodAutoscaler", true, true, &[], &["hpa"]),
    ("policy", &["v1"], "poddisruptionbudgets", "PodDisruptionBudget", true, true, &[], &["pdb"]),
    ("networking.k8s.io", &["v1"], "ingresses", "Ingress", true, true, &[], &["ing"]),
    ("networking.k8s.io", &["v1"], "ingressclasses", "IngressClass", false, false, &[], &[]),
    ("networking.k8s.io", &["v1"], "networkpolicies", "NetworkPolicy", true, false, &[], &["netpol"]),
    ("discovery.k8s.io", &["v1"], "endpointslices", "EndpointSlice", true, false, &[], &[]),
    ("events.k8s.io", &["v1"], "events", "Event", true, false, &[], &["ev"]),
    ("rbac.authorization.k8s.io", &["v1"], "roles", "Role", true, false, &[], &[]),
    ("rbac.authorization.k8s.io", &["v1"], "rolebindings", "RoleBinding", true, false, &[], &[]),
    ("rbac.authorization.k8s.io", &["v1"], "clusterroles", "ClusterRole", false, false, &[], &[]),
    ("rbac.authorization.k8s.io", &["v1"], "clusterrolebindings", "ClusterRoleBinding", false, false, &[], &[]),
    ("storage.k8s.io", &["v1"], "storageclasses", "StorageClass", false, false, &[], &["sc"]),
    ("storage.k8s.io", &["v1"], "csidrivers", "CSIDriver", false, false, &[], &[]),
    ("scheduling.k8s.io", &["v1"], "priorityclasses", "PriorityClass", false, false, &[], &["pc"]),
    ("coordination.k8s.io", &["v1"], "leases", "Lease", true, false, &[], &[]),
    ("apiextensions.k8s.io", &["v1"], "customresourcedefinitions", "CustomResourceDefinition", false, true, &[], &["crd", "crds"]),
    ("apiregistration.k8s.io", &["v1"], "apiservices", "APIService", false, true, &[], &[]),
    ("admissionregistration.k8s.io", &["v1"], "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", false, false, &[], &[]),
    ("admissionregistration.k8s.io", &["v1"], "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", false, false, &[], &[]),
];

/// Types that can be created but never listed or got (discovery shows them; a
/// client that lists every resource must skip them by their verbs).
const CREATE_ONLY: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "bindings", "Binding", true),
    (
        "authentication.k8s.io",
        "v1",
        "tokenreviews",
        "TokenReview",
        false,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
    ),
];

/// The built-in types.
pub fn built_in() -> Vec<ResourceType> {
    let mut out: Vec<ResourceType> = BUILT_IN
        .iter()
        .map(
            |&(group, versions, resource, kind, namespaced, status, subs, short)| ResourceType {
                group: group.into(),
                versions: versions.iter().map(|v| v.to_string()).collect(),
                resource: resource.into(),
                kind: kind.into(),
                namespaced,
                verbs: ALL_VERBS.iter().map(|v| v.to_string()).collect(),
                short_names: short.iter().map(|s| s.to_string()).collect(),
                status,
                subresources: subs.iter().map(|s| s.to_string()).collect(),
                // Events are one set of objects served by two groups.
                storage: if resource == "events" {
                    "events".into()
                } else {
                    format!("{resource}.{group}")
                },
                custom: false,
            },
        )
        .collect();
    for &(group, version, resource, kind, namespaced) in CREATE_ONLY {
        out.push(ResourceType {
            group: group.into(),
            versions: vec![version.into()],
            resource: resource.into(),
            kind: kind.into(),
            namespaced,
            verbs: vec!["create".into()],
            short_names: vec![],
            status: false,
            subresources: vec![],
            storage: format!("{resource}.{group}"),
            custom: false,
        });
    }
    out
}

/// Kubernetes' version priority: GA before beta before alpha, higher numbers first;
/// versions that fit no pattern last, alphabetically.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn rank(v: &str) -> (u8, u64, u64, String) {
        let parse = |rest: &str| -> Option<(u8, u64, u64)> {
            let (major, tail) = match rest.find(|c: char| !c.is_ascii_digit()) {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let major: u64 = major.parse().ok()?;
            if tail.is_empty() {
                return Some((0, major, 0));
            }
            for (level, word) in [(1u8, "beta"), (2u8, "alpha")] {
                if let Some(n) = tail.strip_prefix(word) {
                    return Some((level, major, n.parse().ok()?));
                }
            }
            None
        };
        match v.strip_prefix('v').and_then(parse) {
            // Higher numbers first: invert them.
            Some((level, major, minor)) => {
                (level, u64::MAX - major, u64::MAX - minor, String::new())
            }
            None => (3, 0, 0, v.to_string()),
        }
    }
    rank(a).cmp(&rank(b))
}

/// Why a CRD cannot be served, or the type it defines.
pub fn from_crd(crd: &Value) -> Result<ResourceType, String> {
    let spec = &crd["spec"];
    let field = |path: &str, v: &Value| -> Result<String, String> {
        v.as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("spec.{path}: Required value"))
    };
    let group = field("group", &spec["group"])?;
    if !group.contains('.') {
        return Err(format!(
            "spec.group: Invalid value: {group:?}: should be a domain with at least one dot"
        ));
    }
    let names = &spec["names"];
    let plural = field("names.plural", &names["plural"])?;
    let kind = field("names.kind", &names["kind"])?;
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => return Err("spec.scope: Unsupported value: must be Namespaced or Cluster".into()),
    };
    let versions = spec["versions"]
        .as_array()
        .filter(|v| !v.is_empty())
        .ok_or("spec.versions: Required value")?;
    let mut served: Vec<String> = Vec::new();
    let mut storage = 0;
    let mut status = false;
    for v in versions {
        let n = field("versions[].name", &v["name"])?;
        if v["storage"].as_bool() == Some(true) {
            storage += 1;
        }
        if v["served"].as_bool() == Some(true) {
            served.push(n);
        }
        if v["subresources"]["status"].is_object() {
            status = true;
        }
    }
    if storage != 1 {
        return Err(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
                .into(),
        );
    }
    served.sort_by(|a, b| version_order(a, b));
    let short_names = names["shortNames"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(ResourceType {
        storage: format!("{plural}.{group}"),
        group,
        versions: served,
        resource: plural,
        kind,
        namespaced,
        verbs: ALL_VERBS.iter().map(|v| v.to_string()).collect(),
        short_names,
        status,
        subresources: vec![],
        custom: true,
    })
}

/// The APIResource entries of one group version, subresources included.
pub fn api_resources(types: &[&ResourceType], version: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for t in types {
        if !t.versions.iter().any(|v| v == version) {
            continue;
        }
        out.push(json!({
            "name": t.resource,
            "singularName": t.singular(),
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": t.verbs,
            "shortNames": t.short_names,
            "storageVersionHash": format!("{:x}", fnv(&t.storage)),
        }));
        let subs = t
            .status
            .then(|| "status".to_string())
            .into_iter()
            .chain(t.subresources.iter().cloned());
        for sub in subs {
            out.push(json!({
                "name": format!("{}/{sub}", t.resource),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    out
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_as_kubernetes_sorts_them() {
        let mut v = vec![
            "v1alpha1", "v1", "v2beta1", "foo", "v2", "v1beta2", "v10", "v1beta1",
        ];
        v.sort_by(|a, b| version_order(a, b));
        assert_eq!(
            v,
            ["v10", "v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "foo"]
        );
    }

    #[test]
    fn a_crd_defines_its_type_or_says_why_not() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "widgets", "kind": "Widget"},
                     "versions": [{"name": "v1beta1", "served": true, "storage": false},
                                  {"name": "v1", "served": true, "storage": true,
                                   "subresources": {"status": {}}}]}
        });
        let t = from_crd(&crd).unwrap();
        assert_eq!(t.versions, ["v1", "v1beta1"]);
        assert!(t.status && t.namespaced);
        let mut bad = crd.clone();
        bad["metadata"]["name"] = json!("gadgets.example.com");
        assert!(from_crd(&bad).unwrap_err().contains("metadata.name"));
    }
}
