//! The restore order, derived from the objects: a phase by what an object is (CRDs,
//! namespaces, cluster-wide prerequisites, configuration, storage, Services,
//! workloads and the rest, then admission webhooks and APIServices), and within and
//! across phases owners before their dependents (by the ownerReferences' UIDs).
//! Objects of one level do not depend on each other and go in parallel.

use std::collections::HashMap;

use super::super::layout::ObjectRef;

/// What the order needs to know of one object.
#[derive(Debug, Clone)]
pub struct Node {
    pub at: ObjectRef,
    /// Its UID in the backed-up cluster.
    pub uid: Option<String>,
    /// The UIDs its ownerReferences name.
    pub owners: Vec<String>,
}

/// The phases, in order; a level is a phase and a depth of ownership within it.
pub const PHASES: &[&str] = &[
    "custom resource definitions",
    "namespaces",
    "cluster-wide prerequisites",
    "accounts, roles and configuration",
    "storage",
    "services",
    "workloads and the rest",
    "admission webhooks and API services",
];

pub const CRDS: usize = 0;
pub const NAMESPACES: usize = 1;
pub const WEBHOOKS: usize = 7;

/// The phase of an object by its resource.
pub fn phase(at: &ObjectRef) -> usize {
    match (at.group.as_str(), at.resource.as_str()) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => CRDS,
        ("", "namespaces") => NAMESPACES,
        (
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations"
            | "mutatingwebhookconfigurations"
            | "validatingadmissionpolicies"
            | "validatingadmissionpolicybindings",
        )
        | ("apiregistration.k8s.io", "apiservices") => WEBHOOKS,
        ("", "persistentvolumes" | "persistentvolumeclaims") => 4,
        ("", "serviceaccounts" | "configmaps" | "secrets" | "limitranges" | "resourcequotas")
        | ("rbac.authorization.k8s.io", "roles" | "rolebindings") => 3,
        ("", "services" | "endpoints") | ("discovery.k8s.io", "endpointslices") => 5,
        _ if at.namespace.is_none() => 2,
        _ => 6,
    }
}

/// A level: its phase and its depth of ownership in that phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Level {
    pub phase: usize,
    pub depth: usize,
}

impl Level {
    pub fn describe(&self) -> String {
        if self.depth == 0 {
            PHASES[self.phase].to_string()
        } else {
            format!("{} (owned, depth {})", PHASES[self.phase], self.depth)
        }
    }
}

/// The level of every node, and the levels in order with the nodes in each.
pub fn levels(nodes: &[Node]) -> Vec<(Level, Vec<usize>)> {
    let by_uid: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.uid.as_deref().map(|u| (u, i)))
        .collect();
    let mut memo: Vec<Option<Level>> = vec![None; nodes.len()];
    for i in 0..nodes.len() {
        level_of(i, nodes, &by_uid, &mut memo, &mut Vec::new());
    }
    let mut out: Vec<(Level, Vec<usize>)> = Vec::new();
    let mut order: Vec<(Level, usize)> = memo
        .into_iter()
        .enumerate()
        .map(|(i, l)| (l.expect("every level is computed"), i))
        .collect();
    order.sort();
    for (l, i) in order {
        match out.last_mut() {
            Some((last, v)) if *last == l => v.push(i),
            _ => out.push((l, vec![i])),
        }
    }
    out
}

fn level_of(
    i: usize,
    nodes: &[Node],
    by_uid: &HashMap<&str, usize>,
    memo: &mut Vec<Option<Level>>,
    path: &mut Vec<usize>,
) -> Level {
    if let Some(l) = memo[i] {
        return l;
    }
    let own = Level {
        phase: phase(&nodes[i].at),
        depth: 0,
    };
    // An ownership cycle (which the garbage collector would not leave standing)
    // is broken where it closes. CRDs come first whatever owns them (an operator's
    // object may own the CRDs it installs): their objects wait for them.
    if path.contains(&i) {
        return own;
    }
    if own.phase == CRDS {
        memo[i] = Some(own);
        return own;
    }
    path.push(i);
    let mut l = own;
    for uid in &nodes[i].owners {
        let Some(&o) = by_uid.get(uid.as_str()) else {
            continue;
        };
        if o == i || path.contains(&o) {
            continue;
        }
        let ol = level_of(o, nodes, by_uid, memo, path);
        // Webhooks stay last whatever owns them; anything else follows its owner.
        let after = if own.phase == WEBHOOKS {
            Level {
                phase: WEBHOOKS,
                depth: if ol.phase == WEBHOOKS {
                    ol.depth + 1
                } else {
                    0
                },
            }
        } else {
            Level {
                phase: ol.phase.max(own.phase),
                depth: if ol.phase >= own.phase {
                    ol.depth + 1
                } else {
                    0
                },
            }
        };
        l = l.max(after);
    }
    path.pop();
    memo[i] = Some(l);
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(group: &str, resource: &str, ns: Option<&str>, name: &str, owners: &[&str]) -> Node {
        Node {
            at: ObjectRef {
                group: group.into(),
                version: "v1".into(),
                resource: resource.into(),
                namespace: ns.map(str::to_string),
                name: name.into(),
            },
            uid: Some(format!("uid-{name}")),
            owners: owners.iter().map(|o| format!("uid-{o}")).collect(),
        }
    }

    fn position(levels: &[(Level, Vec<usize>)], i: usize) -> usize {
        levels.iter().position(|(_, v)| v.contains(&i)).unwrap()
    }

    #[test]
    fn owners_come_before_dependents_and_webhooks_last() {
        let nodes = vec![
            node(
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                None,
                "hook",
                &[],
            ),
            node("", "configmaps", Some("shop"), "owned-cm", &["app"]),
            node("example.com", "apps", Some("shop"), "app", &[]),
            node("apps", "deployments", Some("shop"), "web", &[]),
            node("", "namespaces", None, "shop", &[]),
            node(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                None,
                "apps.example.com",
                &[],
            ),
            node("", "services", Some("shop"), "hook-svc", &[]),
            node("storage.k8s.io", "storageclasses", None, "fast", &[]),
            node("", "persistentvolumeclaims", Some("shop"), "data", &[]),
            node("example.com", "parts", Some("shop"), "part", &["owned-cm"]),
            node("", "configmaps", Some("shop"), "loop-a", &["loop-b"]),
            node("", "configmaps", Some("shop"), "loop-b", &["loop-a"]),
            node(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                None,
                "owned.example.com",
                &["fast"],
            ),
        ];
        let l = levels(&nodes);
        let p = |i| position(&l, i);
        assert_eq!(p(5), 0, "CRDs first");
        assert_eq!(p(12), 0, "CRDs first, whatever owns them");
        assert!(p(4) < p(7) && p(7) < p(8) && p(8) < p(6) && p(6) < p(3));
        assert!(
            p(2) < p(1),
            "a ConfigMap owned by a custom resource follows it"
        );
        assert!(p(1) < p(9));
        assert_eq!(p(0), l.len() - 1, "webhooks last");
        // A cycle still gives both a level.
        assert!(p(10) < l.len() && p(11) < l.len());
        let all: usize = l.iter().map(|(_, v)| v.len()).sum();
        assert_eq!(all, nodes.len());
    }
}
