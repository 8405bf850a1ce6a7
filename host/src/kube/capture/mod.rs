//! A Kubernetes backup: discovery, then every selected resource listed page by page
//! into the repository (the lister on an async runtime, the writer on this thread),
//! then the capture manifest and the snapshot record, written last.

mod list;
mod needs;
mod write;

use std::sync::Arc;

use serde_json::json;

pub use write::Progress;

use super::client::{Cluster, ConnectOptions};
use super::discovery::{self, ApiResource};
use super::manifest::{self, Left, Manifest};
use super::select::{ClusterScope, Selection};
use super::KubeError;
use crate::repo::saver::{load_known, Saver};
use crate::repo::snapshot::{Labels, Snapshot, SnapshotId, Source};
use crate::repo::tree::Tree;
use crate::repo::Repository;
use list::{Job, Lister};
use write::{Filter, Writer};

#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub selection: Selection,
    /// Objects per page.
    pub page_size: u32,
    /// Resources listed at once.
    pub concurrency: usize,
    /// Fail (record nothing) when anything selected could not be captured.
    pub strict: bool,
    pub labels: Labels,
    /// The largest object accepted, in bytes.
    pub max_object: usize,
}

impl Default for CaptureOptions {
    fn default() -> CaptureOptions {
        CaptureOptions {
            selection: Selection::default(),
            page_size: 500,
            concurrency: 4,
            strict: false,
            labels: Labels::default(),
            max_object: 64 << 20,
        }
    }
}

pub struct CaptureOutcome {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    pub manifest: Manifest,
}

/// The snapshot source kind of Kubernetes backups.
pub const SOURCE_KIND: &str = "kube";

/// Backs up the objects of a cluster.
pub fn backup(
    repo: &Repository,
    connect: &ConnectOptions,
    opts: &CaptureOptions,
    progress: &Progress,
) -> Result<CaptureOutcome, KubeError> {
    let started = jiff::Timestamp::now();
    let clock = std::time::Instant::now();
    let selection = opts.selection.compile()?;
    if opts.page_size == 0 {
        return Err(KubeError::Invalid(
            "--page-size 0 would list whole resources at once: give a page size (500 is kubectl's)"
                .into(),
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ballast-kube")
        .enable_all()
        .build()
        .map_err(|e| {
            KubeError::Invalid(format!("cannot start the Kubernetes client's runtime: {e}"))
        })?;
    let cluster = Arc::new(runtime.block_on(Cluster::connect(connect))?);
    let info = runtime.block_on(cluster_info(&cluster))?;
    let found = runtime.block_on(discovery::discover(&cluster, selection.record.all_versions))?;

    // Which resources, listed how, filtered how.
    let mut excluded: Vec<Left> = Vec::new();
    let mut resources: Vec<ApiResource> = Vec::new();
    let mut filters = Vec::new();
    let mut phases: Vec<u8> = Vec::new();
    for r in found.resources {
        if let Err(why) = selection.resource(&r) {
            excluded.push(Left {
                what: r.qualified(),
                reason: why,
            });
            continue;
        }
        let is_namespace = r.group.is_empty() && r.resource == "namespaces";
        let (filter, phase) = if r.namespaced || is_namespace {
            (Filter::Namespaces, 0)
        } else {
            match selection.scope {
                ClusterScope::All => (Filter::All, 0),
                ClusterScope::Needed => (Filter::Needed, 1 + needs::cluster_phase(&r)),
                ClusterScope::None => {
                    excluded.push(Left {
                        what: r.qualified(),
                        reason: "cluster-scoped, and --cluster-resources is no".into(),
                    });
                    continue;
                }
            }
        };
        resources.push(r);
        filters.push(filter);
        phases.push(phase);
    }
    // With named namespaces, each is listed on its own, and each Namespace object
    // is got by name.
    let namespaces_of = |r: &ApiResource| -> Vec<Option<String>> {
        let is_namespace = r.group.is_empty() && r.resource == "namespaces";
        match (&selection.literal_namespaces, r.namespaced || is_namespace) {
            (Some(list), true) => list.iter().cloned().map(Some).collect(),
            _ => vec![None],
        }
    };
    let mut jobs: Vec<Vec<Job>> = vec![vec![], vec![], vec![]];
    for (i, r) in resources.iter().enumerate() {
        let is_namespace = r.group.is_empty() && r.resource == "namespaces";
        jobs[phases[i] as usize].push(Job {
            res: i,
            namespaces: namespaces_of(r),
            selector: filters[i] != Filter::Needed && !is_namespace,
            by_name: is_namespace && selection.literal_namespaces.is_some(),
        });
    }
    progress
        .resources_total
        .store(resources.len() as u64, std::sync::atomic::Ordering::Relaxed);

    let known = load_known(repo)?;
    let saver = Saver::start(repo, known.blobs, known.adopted);
    let shared = Arc::new(resources);
    let lister = Lister {
        cluster: cluster.clone(),
        resources: shared.clone(),
        page_size: opts.page_size,
        label_selector: selection.label_selector.clone(),
        max_object: opts.max_object,
        budget: Arc::new(tokio::sync::Semaphore::new(list::IN_FLIGHT)),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let concurrency = opts.concurrency;
    let listing = runtime.spawn(async move {
        // Phases in order: namespaced objects first, so that the cluster-scoped ones a
        // namespace backup needs are known when those are listed.
        for phase in jobs {
            lister.run(phase, concurrency, &tx).await;
        }
    });
    let written = Writer::new(&saver, &shared, filters, &selection, progress).run(rx);
    if written.is_err() {
        // Nothing will take what it lists: stop it now rather than after its waits.
        listing.abort();
    }
    // The lister ends once the writer stops taking messages.
    let listed = runtime.block_on(listing);
    let mut written = written?;
    if let Err(e) = listed {
        return Err(KubeError::Invalid(format!(
            "the listing stopped before it was done ({e}); nothing was recorded"
        )));
    }
    // Every resource must have been seen to its end: a lister that stopped early
    // must not pass for a complete backup.
    let unfinished: Vec<String> = written
        .unfinished
        .iter()
        .map(|&i| shared[i].qualified())
        .collect();
    if !unfinished.is_empty() {
        return Err(KubeError::Invalid(format!(
            "the listing of {} resources never ended (first: {}); nothing was recorded",
            unfinished.len(),
            unfinished[0]
        )));
    }

    let mut manifest = Manifest {
        format: manifest::FORMAT.into(),
        complete: false,
        cluster: info,
        selection: selection.record.clone(),
        started: started.to_string(),
        finished: jiff::Timestamp::now().to_string(),
        resources: std::mem::take(&mut written.captured),
        skipped_groups: found.skipped_groups,
        forbidden: std::mem::take(&mut written.forbidden),
        failed: std::mem::take(&mut written.failed),
        excluded,
        not_captured: found.not_captured,
        excluded_objects: std::mem::take(&mut written.excluded_objects),
        warnings: std::mem::take(&mut written.warnings),
        unstored: written.unstored,
    };
    manifest.resources.sort_by(|a, b| {
        (&a.group, &a.resource, &a.version).cmp(&(&b.group, &b.resource, &b.version))
    });
    manifest.complete = manifest.skipped_groups.is_empty()
        && manifest.forbidden.is_empty()
        && manifest.failed.is_empty()
        && manifest.unstored == 0;
    if opts.strict && !manifest.complete {
        return Err(KubeError::Incomplete(manifest.missed().join("; ")));
    }

    let mut root = write::upper_levels(written.dirs, &saver)?;
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    root.push(write::file_node(
        super::layout::MANIFEST_FILE,
        &manifest_json,
        &saver,
    )?);
    let dirs = root.len() as u64;
    let root_id = Tree { nodes: root }.save(&saver)?;
    let stats = saver.finish()?;

    let mut snapshot = Snapshot::new(source(&manifest), root_id);
    snapshot.label(&opts.labels);
    let s = &mut snapshot.summary;
    s.files = manifest.objects();
    s.dirs = dirs;
    s.total_bytes = manifest.resources.iter().map(|r| r.bytes).sum();
    s.bytes_read = s.total_bytes;
    s.blobs_new = stats.blobs_new;
    s.bytes_new = stats.bytes_new;
    s.bytes_stored = stats.bytes_stored;
    s.packs_uploaded = stats.packs_uploaded;
    s.seconds = clock.elapsed().as_secs_f64();
    for m in manifest.missed() {
        snapshot.warnings.push(crate::repo::snapshot::Warning {
            path: String::new(),
            message: m,
        });
    }
    let id = snapshot.save(repo)?;
    Ok(CaptureOutcome {
        id,
        snapshot,
        manifest,
    })
}

/// The record's source: the cluster, and what of it was selected (so that
/// retention keeps a namespace's backups apart from the whole cluster's).
fn source(m: &Manifest) -> Source {
    let cluster = if m.cluster.uid.is_empty() {
        m.cluster.server.clone()
    } else {
        m.cluster.uid.clone()
    };
    let sel = &m.selection;
    let mut scope = Vec::new();
    if !sel.include_namespaces.is_empty() {
        scope.push(format!("namespaces={}", sel.include_namespaces.join("+")));
    }
    if !sel.exclude_namespaces.is_empty() {
        scope.push(format!(
            "not-namespaces={}",
            sel.exclude_namespaces.join("+")
        ));
    }
    if !sel.include_resources.is_empty() {
        scope.push(format!("resources={}", sel.include_resources.join("+")));
    }
    if !sel.exclude_resources.is_empty() {
        scope.push(format!("not-resources={}", sel.exclude_resources.join("+")));
    }
    if let Some(l) = &sel.label_selector {
        scope.push(format!("selector={l}"));
    }
    let resources: serde_json::Map<String, serde_json::Value> = m
        .resources
        .iter()
        .map(|r| {
            let key = if r.group.is_empty() {
                format!("{}/{}", r.version, r.resource)
            } else {
                format!("{}/{}/{}", r.group, r.version, r.resource)
            };
            let rvs: Vec<&str> = r
                .lists
                .iter()
                .map(|l| l.resource_version.as_str())
                .collect();
            (
                key,
                json!({"resourceVersion": rvs.join(","), "count": r.objects}),
            )
        })
        .collect();
    let mut meta = std::collections::BTreeMap::new();
    meta.insert(
        "cluster".into(),
        serde_json::to_value(&m.cluster).expect("JSON"),
    );
    meta.insert("complete".into(), json!(m.complete));
    meta.insert("selection".into(), serde_json::to_value(sel).expect("JSON"));
    meta.insert("resources".into(), serde_json::Value::Object(resources));
    Source {
        kind: SOURCE_KIND.into(),
        paths: vec![
            cluster,
            if scope.is_empty() {
                "all".into()
            } else {
                scope.join(" ")
            },
        ],
        meta,
    }
}

/// The cluster's identity: its version and the UID of `kube-system`.
async fn cluster_info(cluster: &Cluster) -> Result<manifest::Cluster, KubeError> {
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(rename = "gitVersion", default)]
        git_version: String,
    }
    let v: Version = cluster
        .get_json("/version", "the API server's version")
        .await?;
    let uid = match cluster
        .get_json::<serde_json::Value>(
            "/api/v1/namespaces/kube-system",
            "the kube-system namespace",
        )
        .await
    {
        Ok(ns) => ns["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        Err(KubeError::Api {
            code: 403 | 404, ..
        }) => String::new(),
        Err(e) => return Err(e),
    };
    Ok(manifest::Cluster {
        uid,
        server: cluster.server.clone(),
        version: v.git_version,
        context: cluster.context.clone(),
    })
}
