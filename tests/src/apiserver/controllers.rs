//! What a cluster does beside serving requests, simulated where a restore depends
//! on it. Each is named for what it stands for:
//!
//! - **CRD establishment** (kube-apiserver's `apiextensions` controllers): with
//!   [`Faults::crd_establish_ms`](super::Faults), a new CRD is stored with
//!   `Established` `False` and its resource is neither served nor in discovery
//!   until the delay has passed; then the condition turns `True`.
//! - **Namespace termination** (the namespace controller): with
//!   [`Faults::namespace_termination_ms`](super::Faults), a deleted namespace
//!   stays, with a `deletionTimestamp` and phase `Terminating`, refusing new
//!   content (403), until the delay has passed; then it goes with its contents.
//! - **Garbage collection** (kube-controller-manager's garbage collector, in the
//!   background propagation that is the default): when an object is deleted, the
//!   objects all of whose ownerReferences name UIDs that no longer exist are
//!   deleted too, and so on down.
//! - **ResourceQuota admission**: a create in a namespace whose ResourceQuota sets
//!   `count/RESOURCE[.GROUP]` (or the legacy `configmaps`, `secrets`, `pods`,
//!   `services`, `persistentvolumeclaims`) at or below the number of objects there
//!   is refused with 403 and the real server's message; dry runs too.
//!
//! Time is checked at each request ([`Inner::tick`]), not by a timer: a client
//! that polls sees the change as it would on a real server.
//! Differences: quotas count objects only (no `requests.cpu` and the like), and
//! the garbage collector has no foreground deletion or orphaning.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::api::{ApiError, Inner};
use super::objects;
use super::resources::ResourceType;

pub const CRDS: &str = "customresourcedefinitions.apiextensions.k8s.io";
pub const NAMESPACES: &str = "namespaces.";

/// Changes that come due later.
#[derive(Default)]
pub struct Pending {
    /// CRDs to establish: when, the CRD's name, and the type it serves.
    crds: Vec<(Instant, String, ResourceType)>,
    /// Namespaces to remove: when, and the name.
    namespaces: Vec<(Instant, String)>,
}

impl Pending {
    /// Whether the resource of a pending CRD is `group`/`resource`.
    pub fn crd_pending(&self, group: &str, resource: &str) -> bool {
        self.crds
            .iter()
            .any(|(_, _, t)| t.group == group && t.resource == resource)
    }
}

impl Inner {
    /// Carries out what has come due.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let (due, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending.crds)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.pending.crds = wait;
        for (_, name, t) in due {
            if let Some(crd) = self.store.get(CRDS, &name) {
                let mut crd = (*crd).clone();
                objects::establish_crd(&mut crd);
                self.store.put(CRDS, &name, Some(crd));
                self.types.push(t);
            }
        }
        let (due, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending.namespaces)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.pending.namespaces = wait;
        for (_, name) in due {
            self.remove_namespace(&name);
        }
    }

    /// A CRD that becomes Established after `delay`: stored with the condition
    /// False now.
    pub fn establish_later(&mut self, obj: &mut Value, t: ResourceType, delay: Duration) {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        obj["status"] = json!({
            "acceptedNames": obj["spec"]["names"],
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"},
                {"type": "Established", "status": "False", "reason": "Installing", "message": "the initial names have been accepted"},
            ],
        });
        self.pending.crds.push((Instant::now() + delay, name, t));
    }

    /// Marks a namespace Terminating; it goes after `delay`.
    pub fn terminate_later(&mut self, name: &str, delay: Duration) {
        if let Some(ns) = self.store.get(NAMESPACES, name) {
            let mut ns = (*ns).clone();
            if ns["metadata"]["deletionTimestamp"].is_string() {
                return;
            }
            ns["metadata"]["deletionTimestamp"] = json!(objects::now());
            ns["status"]["phase"] = json!("Terminating");
            self.store.put(NAMESPACES, name, Some(ns));
            self.pending
                .namespaces
                .push((Instant::now() + delay, name.to_string()));
        }
    }

    /// Removes a namespace and everything in it.
    pub fn remove_namespace(&mut self, name: &str) {
        let prefix = format!("{name}/");
        let storages: Vec<String> = self
            .types
            .iter()
            .filter(|t| t.namespaced)
            .map(|t| t.storage.clone())
            .collect();
        for s in storages {
            for k in self
                .store
                .keys(&s)
                .into_iter()
                .filter(|k| k.starts_with(&prefix))
            {
                self.alloc.release(&format!("{s}/{k}"));
                self.store.put(&s, &k, None);
            }
        }
        self.store.put(NAMESPACES, name, None);
    }

    /// Deletes what no longer has an owner, after the object with `uid` went.
    pub fn collect_garbage(&mut self, uid: &str) {
        let storages: Vec<String> = self.types.iter().map(|t| t.storage.clone()).collect();
        let mut gone = vec![uid.to_string()];
        while let Some(owner) = gone.pop() {
            let mut live: HashSet<String> = HashSet::new();
            let mut owned = Vec::new();
            for s in &storages {
                for k in self.store.keys(s) {
                    let Some(o) = self.store.get(s, &k) else {
                        continue;
                    };
                    if let Some(u) = o["metadata"]["uid"].as_str() {
                        live.insert(u.to_string());
                    }
                    let owners: Vec<String> = o["metadata"]["ownerReferences"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r["uid"].as_str().map(str::to_string))
                        .collect();
                    if owners.contains(&owner) {
                        owned.push((s.clone(), k.clone(), owners, o));
                    }
                }
            }
            for (s, k, owners, o) in owned {
                if owners.iter().all(|u| !live.contains(u)) {
                    self.alloc.release(&format!("{s}/{k}"));
                    self.store.put(&s, &k, None);
                    if let Some(u) = o["metadata"]["uid"].as_str() {
                        gone.push(u.to_string());
                    }
                }
            }
        }
    }

    /// Refuses a create that a ResourceQuota of the namespace does not allow.
    pub fn check_quota(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let prefix = format!("{namespace}/");
        let quotas: Vec<String> = self
            .store
            .keys("resourcequotas.")
            .into_iter()
            .filter(|k| k.starts_with(&prefix))
            .collect();
        if quotas.is_empty() {
            return Ok(());
        }
        let mut names = vec![format!("count/{}", rt.qualified())];
        if rt.group.is_empty() {
            names.push(rt.resource.clone());
        }
        for q in quotas {
            let Some(quota) = self.store.get("resourcequotas.", &q) else {
                continue;
            };
            for key in &names {
                let Some(hard) = quota["spec"]["hard"][key]
                    .as_str()
                    .and_then(|h| h.parse::<usize>().ok())
                    .or_else(|| quota["spec"]["hard"][key].as_u64().map(|h| h as usize))
                else {
                    continue;
                };
                let used = self
                    .store
                    .keys(&rt.storage)
                    .into_iter()
                    .filter(|k| k.starts_with(&prefix))
                    .count();
                if used + 1 > hard {
                    let qname = quota["metadata"]["name"].as_str().unwrap_or_default();
                    return Err(ApiError::forbidden(format!(
                        "{} \"{name}\" is forbidden: exceeded quota: {qname}, requested: {key}=1, used: {key}={used}, limited: {key}={hard}",
                        rt.qualified()
                    )));
                }
            }
        }
        Ok(())
    }
}
