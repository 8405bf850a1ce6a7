//! Discovery, run for every backup (a list cached from yesterday misses the CRD
//! installed an hour ago): every group and resource that can be listed and got, in
//! its preferred version, or in every served version. A group version whose
//! discovery fails is recorded with the server's reason, not fatal.

use futures::stream::{self, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroupList, APIResourceList, APIVersions};

use super::client::Cluster;
use super::manifest::{Left, Missed};
use super::KubeError;

/// One resource in one version.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResource {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    pub resource: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// The version clients get by default (with `--all-versions`, the others are
    /// captured too).
    pub preferred: bool,
    /// Names of the resources served as copies of this one's objects
    /// (`events.events.k8s.io` for core `events`): a selection that names them
    /// means this one.
    pub aliases: Vec<String>,
}

impl ApiResource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
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

    /// The URL path of its objects: in `namespace`, or in all namespaces (or the
    /// cluster scope) when `None`.
    pub fn path(&self, namespace: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) => format!("{base}/namespaces/{ns}/{}", self.resource),
            None => format!("{base}/{}", self.resource),
        }
    }
}

/// What discovery found.
#[derive(Debug, Default)]
pub struct Discovered {
    pub resources: Vec<ApiResource>,
    /// Group versions whose discovery failed.
    pub skipped_groups: Vec<Missed>,
    /// Resources served twice, or that cannot be listed.
    pub not_captured: Vec<Left>,
}

/// Resources that one group serves as a copy of another's objects: captured once,
/// from the group named second.
const ALIASES: &[(&str, &str, &str)] = &[
    ("events.k8s.io", "events", ""),
    ("extensions", "deployments", "apps"),
    ("extensions", "daemonsets", "apps"),
    ("extensions", "replicasets", "apps"),
    ("extensions", "ingresses", "networking.k8s.io"),
    ("extensions", "networkpolicies", "networking.k8s.io"),
];

/// Group versions asked for at once.
const DISCOVERY_CONCURRENCY: usize = 8;

pub async fn discover(cluster: &Cluster, all_versions: bool) -> Result<Discovered, KubeError> {
    let core: APIVersions = cluster
        .get_json("/api", "discovery of the core group")
        .await?;
    let groups: APIGroupList = cluster
        .get_json("/apis", "discovery of the API groups")
        .await?;
    // (group, version) in the order a resource takes its version from: each group's
    // preferred version first.
    let mut wanted: Vec<(String, String)> = core
        .versions
        .iter()
        .map(|v| (String::new(), v.clone()))
        .collect();
    for g in &groups.groups {
        let preferred = g.preferred_version.as_ref().map(|p| p.version.clone());
        let mut versions: Vec<String> = g.versions.iter().map(|v| v.version.clone()).collect();
        if let Some(p) = &preferred {
            versions.retain(|v| v != p);
            versions.insert(0, p.clone());
        }
        for v in versions {
            wanted.push((g.name.clone(), v));
        }
    }
    let lists: Vec<((String, String), Result<APIResourceList, KubeError>)> = stream::iter(wanted)
        .map(|(g, v)| async move {
            let path = if g.is_empty() {
                format!("/api/{v}")
            } else {
                format!("/apis/{g}/{v}")
            };
            let what = format!("discovery of {}", group_version(&g, &v));
            let r = cluster.get_json::<APIResourceList>(&path, &what).await;
            ((g, v), r)
        })
        .buffered(DISCOVERY_CONCURRENCY)
        .collect()
        .await;
    let mut out = Discovered::default();
    for ((g, v), r) in lists {
        if let Some(why) = bad_group(&g).or_else(|| bad_version(&v)) {
            out.skipped_groups.push(Missed {
                what: group_version(&g, &v),
                namespace: None,
                code: None,
                reason: format!("the server gave a name that cannot be a Kubernetes name: {why}"),
            });
            continue;
        }
        let list = match r {
            Ok(l) => l,
            Err(e) if g.is_empty() => return Err(e),
            Err(e) => {
                let (code, reason) = match &e {
                    KubeError::Api {
                        code,
                        reason,
                        message,
                        ..
                    } => (Some(*code), format!("{reason}: {message}")),
                    other => (None, other.to_string()),
                };
                out.skipped_groups.push(Missed {
                    what: group_version(&g, &v),
                    namespace: None,
                    code,
                    reason,
                });
                continue;
            }
        };
        for r in list.resources {
            if r.name.contains('/') {
                continue; // a subresource
            }
            if let Some(why) = bad_resource(&r.name).or_else(|| bad_kind(&r.kind)) {
                out.skipped_groups.push(Missed {
                    what: format!("{}/{}", group_version(&g, &v), r.name),
                    namespace: None,
                    code: None,
                    reason: format!(
                        "the server gave a name that cannot be a Kubernetes name: {why}"
                    ),
                });
                continue;
            }
            let qualified = if g.is_empty() {
                r.name.clone()
            } else {
                format!("{}.{g}", r.name)
            };
            let can = |verb: &str| r.verbs.iter().any(|x| x == verb);
            if !(can("list") && can("get")) {
                if !out.not_captured.iter().any(|l| l.what == qualified) {
                    out.not_captured.push(Left {
                        what: qualified,
                        reason: format!("it cannot be listed (verbs: {})", r.verbs.join(", ")),
                    });
                }
                continue;
            }
            let seen = out
                .resources
                .iter()
                .any(|x| x.group == g && x.resource == r.name);
            if seen && !all_versions {
                continue;
            }
            out.resources.push(ApiResource {
                group: g.clone(),
                version: v.clone(),
                resource: r.name,
                kind: r.kind,
                namespaced: r.namespaced,
                short_names: r.short_names.unwrap_or_default(),
                preferred: !seen,
                aliases: vec![],
            });
        }
    }
    // A resource served as a copy of another's objects is captured once.
    let present = |group: &str, resource: &str, rs: &[ApiResource]| {
        rs.iter()
            .any(|x| x.group == group && x.resource == resource)
    };
    let snapshot = out.resources.clone();
    out.resources.retain(|x| {
        !ALIASES.iter().any(|(g, r, canonical)| {
            x.group == *g && x.resource == *r && present(canonical, r, &snapshot)
        })
    });
    for x in out.resources.iter_mut() {
        for (g, r, canonical) in ALIASES {
            if x.group == *canonical && x.resource == *r {
                if let Some(alias) = snapshot.iter().find(|a| a.group == *g && a.resource == *r) {
                    x.aliases.push(format!("{r}.{g}"));
                    x.aliases.push(format!("{}.{g}", alias.kind));
                }
            }
        }
    }
    for (g, r, canonical) in ALIASES {
        if present(g, r, &snapshot) && present(canonical, r, &snapshot) {
            let target = if canonical.is_empty() {
                r.to_string()
            } else {
                format!("{r}.{canonical}")
            };
            out.not_captured.push(Left {
                what: format!("{r}.{g}"),
                reason: format!("the same objects as {target}, which is captured"),
            });
        }
    }
    Ok(out)
}

/// Names from discovery become directory names in the snapshot and file names in an
/// export: each must be what Kubernetes allows, and nothing that collides with
/// ballast's own names (`core`, `_cluster`, `_capture.json`).
fn bad_group(g: &str) -> Option<String> {
    if g.is_empty() {
        return None;
    }
    let ok = g.len() <= 253
        && g.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && g != super::layout::CORE_GROUP;
    (!ok).then(|| format!("group {g:?}"))
}

fn bad_version(v: &str) -> Option<String> {
    // A DNS-1035 label, as CRD versions are (`v1`, `v1beta1`, `v2-alpha`).
    let ok = v.len() <= 63
        && v.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.ends_with('-');
    (!ok).then(|| format!("version {v:?}"))
}

fn bad_resource(r: &str) -> Option<String> {
    let ok = !r.is_empty()
        && r.len() <= 63
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !r.starts_with('-');
    (!ok).then(|| format!("resource {r:?}"))
}

fn bad_kind(k: &str) -> Option<String> {
    let ok = k.len() <= 63
        && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars().all(|c| c.is_ascii_alphanumeric());
    (!ok).then(|| format!("kind {k:?}"))
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}
