//! A Kubernetes snapshot read back: its manifest, its objects found by namespace,
//! resource and name without restoring anything, and resource names resolved as
//! kubectl resolves them (`cm`, `configmap`, `ConfigMap`, `deployments.apps`).

use serde_json::Value;

use super::capture::SOURCE_KIND;
use super::layout::{self, ObjectRef, CLUSTER_SCOPE, MANIFEST_FILE};
use super::manifest::{Captured, Manifest};
use super::KubeError;
use crate::repo::index::Locations;
use crate::repo::snapshot::{self, Snapshot, SnapshotId};
use crate::repo::tree::{Node, Tree};
use crate::repo::{RepoError, Repository};

pub struct StoredSnapshot {
    repo: Repository,
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    pub manifest: Manifest,
    locations: Locations,
    root: Tree,
}

/// Which objects to visit.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this namespace (cluster-scoped objects are left out then).
    pub namespace: Option<String>,
    /// Only these `(group, resource)`s; all when `None`.
    pub resources: Option<Vec<(String, String)>>,
    pub name: Option<String>,
    /// Every stored version, not only the preferred one.
    pub all_versions: bool,
}

/// One stored object: where it is, and its file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub at: ObjectRef,
    pub node: Node,
}

impl StoredSnapshot {
    /// Opens `spec` (an id prefix, or `latest` for the newest Kubernetes backup).
    pub fn open(repo: &Repository, spec: &str) -> Result<StoredSnapshot, KubeError> {
        let (id, snapshot) = snapshot::find_of_kind(repo, spec, SOURCE_KIND)?;
        if snapshot.source.kind != SOURCE_KIND {
            return Err(KubeError::Invalid(format!(
                "snapshot {} is a `{}` backup, not a Kubernetes one: give a snapshot that `ballast backup kube` made",
                id.short(),
                snapshot.source.kind
            )));
        }
        let locations = Locations::load(repo, |_, _| true)?;
        let root = Tree::load(repo, &locations, &snapshot.root)?;
        let node = root
            .find(MANIFEST_FILE.as_bytes())
            .ok_or_else(|| RepoError::Damaged {
                what: format!("snapshot {}", id.short()),
                detail: format!("it has no {MANIFEST_FILE}"),
            })?;
        let bytes = read_node(repo, &locations, node)?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| RepoError::Damaged {
                what: format!("the capture manifest of snapshot {}", id.short()),
                detail: e.to_string(),
            })?;
        Ok(StoredSnapshot {
            repo: repo.clone(),
            id,
            snapshot,
            manifest,
            locations,
            root,
        })
    }

    /// The objects `filter` selects, in path order.
    pub fn entries(&self, filter: &Filter) -> Result<Vec<Entry>, KubeError> {
        let mut out = Vec::new();
        let load = |node: &Node| -> Result<Tree, KubeError> {
            let id = node.subtree.as_ref().ok_or_else(|| RepoError::Damaged {
                what: format!("snapshot {}", self.id.short()),
                detail: format!("{} is not a directory", node.name_lossy()),
            })?;
            Ok(Tree::load(&self.repo, &self.locations, id)?)
        };
        for g in self.root.nodes.iter().filter(|n| n.subtree.is_some()) {
            let group = layout::group_of_dir(&g.name_lossy()).to_string();
            for v in load(g)?.nodes {
                let version = v.name_lossy();
                for r in load(&v)?.nodes {
                    let resource = r.name_lossy();
                    let captured = self.manifest.resources.iter().find(|c| {
                        c.group == group && c.resource == resource && c.version == version
                    });
                    if !filter.all_versions && captured.is_some_and(|c| !c.preferred) {
                        continue;
                    }
                    if let Some(want) = &filter.resources {
                        if !want.iter().any(|(wg, wr)| *wg == group && *wr == resource) {
                            continue;
                        }
                    }
                    for ns in load(&r)?.nodes {
                        let ns_name = ns.name_lossy();
                        let namespace = (ns_name != CLUSTER_SCOPE).then(|| ns_name.clone());
                        if filter.namespace.is_some() && filter.namespace != namespace {
                            continue;
                        }
                        for f in load(&ns)?.nodes {
                            let Some(at) = ObjectRef::from_path(&format!(
                                "{}/{version}/{resource}/{ns_name}/{}",
                                g.name_lossy(),
                                f.name_lossy()
                            )) else {
                                continue;
                            };
                            if filter.name.as_ref().is_some_and(|n| *n != at.name) {
                                continue;
                            }
                            out.push(Entry { at, node: f });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The object of an entry, as stored.
    pub fn read(&self, e: &Entry) -> Result<Value, KubeError> {
        let bytes = read_node(&self.repo, &self.locations, &e.node)?;
        serde_json::from_slice(&bytes).map_err(|err| {
            KubeError::Repo(RepoError::Damaged {
                what: format!("object {} of snapshot {}", e.at.path(), self.id.short()),
                detail: err.to_string(),
            })
        })
    }

    /// The object's stored bytes (its canonical JSON).
    pub fn read_bytes(&self, e: &Entry) -> Result<Vec<u8>, KubeError> {
        Ok(read_node(&self.repo, &self.locations, &e.node)?)
    }

    /// The captured resources a kubectl-style name stands for: the plural, the
    /// singular, the kind or a short name, optionally with `.GROUP` (`.core` for
    /// the core group), case-insensitive. Several groups may match.
    pub fn resolve(&self, name: &str) -> Result<Vec<&Captured>, KubeError> {
        let name = name.to_ascii_lowercase();
        let names = |c: &Captured| {
            let mut n = vec![c.resource.clone(), c.kind.to_ascii_lowercase()];
            n.extend(c.short_names.iter().map(|s| s.to_ascii_lowercase()));
            n
        };
        let mut out: Vec<&Captured> = Vec::new();
        for c in self.manifest.resources.iter().filter(|c| c.preferred) {
            let group = if c.group.is_empty() {
                "core"
            } else {
                c.group.as_str()
            };
            let hit = names(c)
                .iter()
                .any(|n| *n == name || format!("{n}.{group}") == name);
            if hit {
                out.push(c);
            }
        }
        if out.is_empty() {
            return Err(KubeError::Invalid(format!(
                "snapshot {} holds no resource named {name:?}: `ballast kube ls {}` lists what it holds",
                self.id.short(),
                self.id.short()
            )));
        }
        Ok(out)
    }

    /// Like [`resolve`](Self::resolve), but exactly one resource.
    pub fn resolve_one(&self, name: &str) -> Result<&Captured, KubeError> {
        let all = self.resolve(name)?;
        if all.len() > 1 {
            let options: Vec<String> = all
                .iter()
                .map(|c| {
                    format!(
                        "{}.{}",
                        c.kind,
                        if c.group.is_empty() { "core" } else { &c.group }
                    )
                })
                .collect();
            return Err(KubeError::Invalid(format!(
                "{name:?} names {} resources in snapshot {}: say which, as one of {}",
                all.len(),
                self.id.short(),
                options.join(", ")
            )));
        }
        Ok(all[0])
    }
}

fn read_node(repo: &Repository, locations: &Locations, node: &Node) -> Result<Vec<u8>, RepoError> {
    // The size comes from the repository: a hint, never an allocation on trust.
    let mut out = Vec::with_capacity(node.size.min(1 << 20) as usize);
    for id in &node.content {
        out.extend(repo.read_blob(locations, id)?);
    }
    Ok(out)
}
