//! The checks a restore makes before it writes anything, against the target
//! cluster: kinds it does not serve in the backed-up version, namespaces that are
//! missing or terminating, storage classes the volumes ask for, and webhook
//! backends that neither the backup nor the target holds. A version the target
//! cannot serve blocks a real restore (never a half-restored namespace because of
//! version skew); the rest is reported and the restore goes on.

use std::collections::BTreeSet;

use super::super::KubeError;
use super::report::Problem;
use super::scope::Facts;
use super::target::Target;

/// What the pre-flight found, and what the restore must do about it.
#[derive(Default)]
pub struct Findings {
    pub problems: Vec<Problem>,
    /// Namespaces the objects need that neither the target nor the backup has:
    /// the restore makes them.
    pub namespaces_to_make: BTreeSet<String>,
    /// Namespaces in the target that are being deleted: the restore waits for
    /// them to go before it makes them again.
    pub terminating: BTreeSet<String>,
    /// `(group, version, resource)` the target does not serve yet and that a CRD
    /// of the restore brings: their objects wait for it.
    pub deferred_resources: BTreeSet<(String, String, String)>,
    /// Namespaces the restore makes or waits for (a dry run cannot send into them).
    pub namespaces_not_there: BTreeSet<String>,
}

pub async fn check(target: &Target, facts: &Facts) -> Result<Findings, KubeError> {
    let mut f = Findings::default();
    for ((group, version, resource), kind) in &facts.resources {
        let served = target.versions(group, resource);
        if served.iter().any(|v| v == version) {
            continue;
        }
        // `resource.group` as the selection flags take it, and with the version.
        let name = if group.is_empty() {
            resource.clone()
        } else {
            format!("{resource}.{group}")
        };
        let qualified = format!("{name}/{version}");
        // A CRD of the restore brings the resource only where the target has none
        // of it yet: one that is there already is an existing object, not replaced.
        if let Some(crd) = facts
            .crd_for(group, resource, version)
            .filter(|_| served.is_empty())
        {
            f.deferred_resources
                .insert((group.clone(), version.clone(), resource.clone()));
            f.problems.push(Problem {
                what: qualified,
                problem: format!(
                    "not served by the target yet: the CustomResourceDefinition {} in this restore brings it, and its objects wait until it is Established",
                    crd.name
                ),
                blocking: false,
            });
            continue;
        }
        let problem = if served.is_empty() {
            format!(
                "the target cluster does not serve {kind} ({name}) at all: install what provides it (its CRD or API service) first, or leave it out with --exclude-resources {name}"
            )
        } else {
            format!(
                "the target cluster serves {kind} only in {} and the backup holds {version}; ballast does not convert between versions: upgrade the provider in the target, or leave it out with --exclude-resources {name}",
                served.join(", "),
            )
        };
        f.problems.push(Problem {
            what: qualified,
            problem,
            blocking: true,
        });
    }

    for ns in &facts.namespaces_needed {
        let live = target
            .get(
                &format!("/api/v1/namespaces/{ns}"),
                &format!("the namespace {ns}"),
            )
            .await?;
        match live {
            Some(n) if n["metadata"]["deletionTimestamp"].is_string() => {
                f.terminating.insert(ns.clone());
                f.namespaces_not_there.insert(ns.clone());
                f.problems.push(Problem {
                    what: format!("namespace {ns}"),
                    problem: "is terminating in the target: the restore waits for it to go (up to --wait-timeout) and makes it again".into(),
                    blocking: false,
                });
                if !facts.namespaces_sent.contains(ns) {
                    f.namespaces_to_make.insert(ns.clone());
                }
            }
            Some(_) => {}
            None => {
                f.namespaces_not_there.insert(ns.clone());
                if !facts.namespaces_sent.contains(ns) {
                    f.namespaces_to_make.insert(ns.clone());
                    f.problems.push(Problem {
                        what: format!("namespace {ns}"),
                        problem: "is neither in the target nor in the backup: the restore makes it"
                            .into(),
                        blocking: false,
                    });
                }
            }
        }
    }

    for (class, user) in &facts.classes_needed {
        if facts.classes_sent.contains(class) {
            continue;
        }
        let live = target
            .get(
                &format!("/apis/storage.k8s.io/v1/storageclasses/{class}"),
                &format!("the StorageClass {class}"),
            )
            .await?;
        if live.is_none() {
            f.problems.push(Problem {
                what: format!("storageclass {class}"),
                problem: format!(
                    "is neither in the target nor in the backup ({user} asks for it): its claims stay Pending; map it with --storage-class-map {class}=CLASS"
                ),
                blocking: false,
            });
        }
    }

    let mut backends: BTreeSet<&(String, String)> = BTreeSet::new();
    for services in facts.backends.values() {
        backends.extend(services);
    }
    for (ns, name) in backends {
        if facts.services_sent.contains(&(ns.clone(), name.clone())) {
            continue;
        }
        let live = target
            .get(
                &format!("/api/v1/namespaces/{ns}/services/{name}"),
                &format!("the Service {ns}/{name}"),
            )
            .await?;
        if live.is_none() {
            f.problems.push(Problem {
                what: format!("service {ns}/{name}"),
                problem: "is the backend of a webhook or API service in the backup, but neither the backup nor the target holds it: what it serves is held back (deferred) unless it answers within --wait-timeout".into(),
                blocking: false,
            });
        }
    }
    Ok(f)
}
