//! What a restore changes in a backed-up object before it sends it (the list is in
//! `docs/kube.md`): the fields the server owns go (managedFields stay), Pods,
//! ReplicaSets and Jobs that a controller recreates are left out, allocated
//! addresses are cleared, the mappings and resource modifiers apply, and two labels
//! name the backup and the restore. ownerReferences are pointed at the new owners
//! later, once those exist (`apply.rs`).

use serde_json::{json, Value};

use super::super::clean::{self, Context, NodePorts, Strip};
use super::super::layout::ObjectRef;
use super::mapping::Mappings;
use super::modifiers::Modifiers;

/// The labels every restored object carries.
pub const BACKUP_LABEL: &str = "ballast.io/backup";
pub const RESTORE_LABEL: &str = "ballast.io/restore";

#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub mappings: Mappings,
    pub modifiers: Modifiers,
    /// Keep every node port of a Service (by default they are allocated anew).
    pub preserve_node_ports: bool,
    /// Restore Pods, ReplicaSets and Jobs that a controller owns.
    pub include_owned: bool,
    /// The values of [`BACKUP_LABEL`] and [`RESTORE_LABEL`].
    pub backup_id: String,
    pub restore_id: String,
}

/// An object ready to send, but for its ownerReferences.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The namespace it goes to (mapped).
    pub namespace: Option<String>,
    pub name: String,
    pub body: Value,
    pub notes: Vec<String>,
}

/// What becomes of one object.
#[derive(Debug)]
pub enum Plan {
    Send(Prepared),
    LeftOut(String),
    /// A resource modifier could not apply: the object is not sent.
    Invalid(String),
}

/// Kinds whose controller-owned objects the controller makes again.
fn recreated_by_controller(at: &ObjectRef) -> bool {
    matches!(
        (at.group.as_str(), at.resource.as_str()),
        ("", "pods") | ("apps", "replicasets") | ("batch", "jobs")
    )
}

pub fn prepare(at: &ObjectRef, obj: &Value, ctx: &Context, rules: &Rules) -> Plan {
    if let Some(why) = clean::made_by_cluster(at, obj, ctx) {
        return Plan::LeftOut(why.to_string());
    }
    if !rules.include_owned && recreated_by_controller(at) {
        if let Some((kind, name)) = clean::controller_of(obj) {
            return Plan::LeftOut(format!(
                "its controller, {kind} {name}, makes it again (--include-owned restores it)"
            ));
        }
    }
    let keep = Strip {
        managed_fields: true,
        owner_references: true,
        node_ports: if rules.preserve_node_ports {
            NodePorts::All
        } else {
            NodePorts::None
        },
    };
    let mut body = clean::strip_as(at, obj, &keep);
    drop_status_managers(&mut body);
    let notes = rules.mappings.apply(at, &mut body);
    if let Err(why) = rules.modifiers.apply(at, &mut body) {
        return Plan::Invalid(why);
    }
    let meta = &mut body["metadata"];
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    meta["labels"][BACKUP_LABEL] = json!(rules.backup_id);
    meta["labels"][RESTORE_LABEL] = json!(rules.restore_id);
    let namespace = super::super::object::namespace(&body).map(str::to_string);
    let name = super::super::object::name(&body)
        .unwrap_or(&at.name)
        .to_string();
    Plan::Send(Prepared {
        namespace: at.namespace.as_ref().and(namespace),
        name,
        body,
        notes,
    })
}

/// The status is not restored, so neither are the managers of its fields (the
/// entries for the status subresource): its writer owns them again at its next
/// write.
fn drop_status_managers(body: &mut Value) {
    let meta = &mut body["metadata"];
    if let Some(entries) = meta["managedFields"].as_array_mut() {
        entries.retain(|e| e["subresource"].as_str() != Some("status"));
        if entries.is_empty() {
            if let Some(m) = meta.as_object_mut() {
                m.remove("managedFields");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(group: &str, resource: &str, ns: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef::test(group, resource, ns, name)
    }

    fn rules() -> Rules {
        Rules {
            backup_id: "0123abcd".into(),
            restore_id: "r1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn server_fields_go_managed_fields_and_owners_stay() {
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                "generation": 2, "creationTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{"manager": "argocd", "operation": "Apply"},
                    {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"}],
                "ownerReferences": [{"apiVersion": "x.io/v1", "kind": "App", "name": "a", "uid": "u0"}]},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"],
                     "ports": [{"port": 80, "nodePort": 30080}]},
            "status": {"loadBalancer": {}}});
        let Plan::Send(p) = prepare(
            &at("", "services", Some("shop"), "web"),
            &svc,
            &Context::default(),
            &rules(),
        ) else {
            panic!("sent")
        };
        let m = &p.body["metadata"];
        for gone in ["uid", "resourceVersion", "generation", "creationTimestamp"] {
            assert!(m.get(gone).is_none(), "{gone}");
        }
        assert_eq!(m["managedFields"][0]["manager"], "argocd");
        // The status is not restored, nor is its manager.
        assert_eq!(m["managedFields"].as_array().unwrap().len(), 1);
        assert_eq!(m["ownerReferences"][0]["uid"], "u0");
        assert_eq!(m["labels"][BACKUP_LABEL], "0123abcd");
        assert_eq!(m["labels"][RESTORE_LABEL], "r1");
        assert!(p.body.get("status").is_none());
        assert!(p.body["spec"].get("clusterIP").is_none());
        assert!(p.body["spec"]["ports"][0].get("nodePort").is_none());
        let kept = Rules {
            preserve_node_ports: true,
            ..rules()
        };
        let Plan::Send(p) = prepare(
            &at("", "services", Some("shop"), "web"),
            &svc,
            &Context::default(),
            &kept,
        ) else {
            panic!("sent")
        };
        assert_eq!(p.body["spec"]["ports"][0]["nodePort"], 30080);
    }

    #[test]
    fn what_a_controller_makes_again_is_left_out_unless_asked_for() {
        let owned = json!({"metadata": {"name": "web-1", "namespace": "shop",
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web", "controller": true, "uid": "u"}]},
            "spec": {"nodeName": "node-1", "containers": []}});
        let pod = at("", "pods", Some("shop"), "web-1");
        assert!(matches!(
            prepare(&pod, &owned, &Context::default(), &rules()),
            Plan::LeftOut(_)
        ));
        let all = Rules {
            include_owned: true,
            ..rules()
        };
        let Plan::Send(p) = prepare(&pod, &owned, &Context::default(), &all) else {
            panic!("sent")
        };
        assert!(p.body["spec"].get("nodeName").is_none());
        // Other owned kinds (a cert-manager CertificateRequest) are restored, with
        // their owners.
        let cr = at(
            "cert-manager.io",
            "certificaterequests",
            Some("shop"),
            "c-1",
        );
        assert!(matches!(
            prepare(&cr, &owned, &Context::default(), &rules()),
            Plan::Send(_)
        ));
        let token = json!({"metadata": {"name": "t", "namespace": "shop"}, "type": "kubernetes.io/service-account-token"});
        assert!(matches!(
            prepare(
                &at("", "secrets", Some("shop"), "t"),
                &token,
                &Context::default(),
                &rules()
            ),
            Plan::LeftOut(_)
        ));
    }
}
