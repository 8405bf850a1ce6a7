//! The repository side of a capture: each object as it arrives is given its type,
//! checked against the selection, serialized deterministically and stored; the
//! trees of namespaces and resources are written as they fill. Lists come in key
//! order (`namespace/name`), so a namespace's directory is written as soon as the
//! list moves past it: memory holds the entries of one namespace of one resource
//! per list in flight, not the whole backup. A server that breaks the order gets
//! its list started over, and that resource is then held in memory until done.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::list::Msg;
use super::needs::Needs;
use crate::kube::discovery::ApiResource;
use crate::kube::layout::{self, CLUSTER_SCOPE, SUFFIX};
use crate::kube::manifest::{Captured, ExcludedObject, Missed, MAX_EXCLUDED_LISTED};
use crate::kube::object;
use crate::kube::select::Compiled;
use crate::repo::blob::{BlobId, BlobKind};
use crate::repo::saver::Saver;
use crate::repo::tree::{self, Node, NodeKind, Tree};
use crate::repo::Result;

/// Objects are stored in pieces of at most this size (an object larger than that
/// is rare; pieces keep one blob of a large ConfigMap from growing without bound).
const PIECE: usize = 1 << 20;

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub resources_total: AtomicU64,
    pub resources_done: AtomicU64,
    pub objects: AtomicU64,
    pub bytes: AtomicU64,
}

/// How a resource's objects are filtered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Filter {
    /// Namespaced objects by the namespace selection; Namespace objects by name.
    Namespaces,
    /// Cluster-scoped objects: all.
    All,
    /// Cluster-scoped objects: those the namespaced objects need.
    Needed,
}

/// One resource's objects while its lists run.
#[derive(Default)]
struct Collector {
    /// The namespace of the list in progress (`None`: all namespaces).
    list_namespace: Option<String>,
    /// Namespace directories written, by name.
    done: BTreeMap<String, Node>,
    /// Entries of directories not written yet.
    open: BTreeMap<String, Vec<Node>>,
    /// The directory that took the last object (`ns/` order).
    last: Option<String>,
    /// Keep every directory open until the resource is done.
    hold: bool,
    /// The page in progress broke the key order.
    out_of_order: bool,
    captured: Captured,
    /// Objects and bytes of the list in progress (forgotten on a restart).
    list_objects: u64,
    list_bytes: u64,
    list_excluded: u64,
    list_not_needed: u64,
    /// Objects of the list in progress that could not be stored, and why.
    list_unstored: u64,
    list_warnings: Vec<String>,
}

/// What the writer made.
pub struct Written {
    /// `(group, version, resource)` and the resource's directory.
    pub dirs: Vec<(String, String, String, Node)>,
    pub captured: Vec<Captured>,
    pub forbidden: Vec<Missed>,
    pub failed: Vec<Missed>,
    pub excluded_objects: Vec<ExcludedObject>,
    pub warnings: Vec<String>,
    /// Objects that could not be stored (the backup is incomplete).
    pub unstored: u64,
    /// Resources whose end (`ResourceDone`) never came.
    pub unfinished: Vec<usize>,
}

pub struct Writer<'a> {
    pub saver: &'a Saver,
    pub resources: &'a [ApiResource],
    pub filters: Vec<Filter>,
    pub selection: &'a Compiled,
    pub progress: &'a Progress,
    needs: Needs,
    collectors: Vec<Collector>,
    /// Which resources have had their `ResourceDone`.
    finished: Vec<bool>,
    out: Written,
}

impl<'a> Writer<'a> {
    pub fn new(
        saver: &'a Saver,
        resources: &'a [ApiResource],
        filters: Vec<Filter>,
        selection: &'a Compiled,
        progress: &'a Progress,
    ) -> Writer<'a> {
        let collectors = resources
            .iter()
            .map(|r| Collector {
                captured: Captured {
                    group: r.group.clone(),
                    version: r.version.clone(),
                    resource: r.resource.clone(),
                    kind: r.kind.clone(),
                    namespaced: r.namespaced,
                    short_names: r.short_names.clone(),
                    preferred: r.preferred,
                    ..Default::default()
                },
                ..Default::default()
            })
            .collect();
        Writer {
            saver,
            resources,
            filters,
            selection,
            progress,
            needs: Needs::default(),
            finished: vec![false; resources.len()],
            collectors,
            out: Written {
                dirs: vec![],
                captured: vec![],
                forbidden: vec![],
                failed: vec![],
                excluded_objects: vec![],
                warnings: vec![],
                unstored: 0,
                unfinished: vec![],
            },
        }
    }

    /// Takes messages until the lister is done. Runs on a thread of its own, outside
    /// any async runtime (the repository's store blocks).
    pub fn run(mut self, mut rx: mpsc::Receiver<Msg>) -> Result<Written> {
        while let Some(msg) = rx.blocking_recv() {
            self.saver.check()?;
            match msg {
                Msg::ListStart { res, namespace } => {
                    let c = &mut self.collectors[res];
                    c.list_namespace = namespace;
                    c.last = None;
                    c.out_of_order = false;
                    c.list_objects = 0;
                    c.list_bytes = 0;
                    c.list_excluded = 0;
                    c.list_not_needed = 0;
                    c.list_unstored = 0;
                    c.list_warnings.clear();
                }
                // The budget share goes once the object is stored.
                Msg::Item { res, bytes, held } => {
                    self.item(res, &bytes)?;
                    drop(held);
                }
                Msg::PageEnd { res, reply } => {
                    let c = &mut self.collectors[res];
                    // Once held in memory, the order no longer matters.
                    let ordered = c.hold || !c.out_of_order;
                    if c.out_of_order {
                        c.hold = true;
                    }
                    let _ = reply.send(ordered);
                }
                Msg::ListRestart { res, reason } => {
                    let c = &mut self.collectors[res];
                    match &c.list_namespace {
                        Some(ns) => {
                            c.done.remove(ns);
                            c.open.remove(ns);
                        }
                        None => {
                            c.done.clear();
                            c.open.clear();
                        }
                    }
                    c.last = None;
                    c.out_of_order = false;
                    let what = self.resources[res].qualified();
                    // The objects the abandoned list left out by label are named
                    // again by the next one.
                    let ns = c.list_namespace.clone();
                    self.out
                        .excluded_objects
                        .retain(|x| x.resource != what || (ns.is_some() && x.namespace != ns));
                    self.progress
                        .objects
                        .fetch_sub(c.list_objects, Ordering::Relaxed);
                    self.out
                        .warnings
                        .push(format!("{what}: listed again: {reason}"));
                }
                Msg::ListDone { res, mut record } => {
                    let c = &mut self.collectors[res];
                    record.objects = c.list_objects;
                    c.captured.objects += c.list_objects;
                    c.captured.bytes += c.list_bytes;
                    c.captured.excluded_by_label += c.list_excluded;
                    c.captured.not_needed += c.list_not_needed;
                    c.captured.lists.push(record);
                    c.captured.unstored += c.list_unstored;
                    self.out.unstored += c.list_unstored;
                    self.out.warnings.append(&mut c.list_warnings);
                }
                Msg::Failed {
                    res,
                    missed,
                    forbidden,
                } => {
                    let c = &mut self.collectors[res];
                    // What the failed list stored stays, and is counted: a
                    // consistent part of the resource.
                    c.captured.objects += c.list_objects;
                    c.captured.bytes += c.list_bytes;
                    c.captured.unstored += c.list_unstored;
                    self.out.unstored += c.list_unstored;
                    self.out.warnings.append(&mut c.list_warnings);
                    if forbidden {
                        self.out.forbidden.push(missed);
                    } else {
                        self.out.failed.push(missed);
                    }
                }
                Msg::ResourceDone { res } => {
                    self.finished[res] = true;
                    self.finish_resource(res)?;
                    self.progress.resources_done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.saver.check()?;
        self.out.unfinished = (0..self.finished.len())
            .filter(|&i| !self.finished[i])
            .collect();
        Ok(self.out)
    }

    fn item(&mut self, res: usize, bytes: &[u8]) -> Result<()> {
        let r = &self.resources[res];
        let obj = match object::from_item(bytes, &r.api_version(), &r.kind) {
            Ok(o) => o,
            Err(why) => {
                self.unstored(res, format!("{}: an object that is {why}", r.qualified()));
                return Ok(());
            }
        };
        let name = object::name(&obj).unwrap_or_default().to_string();
        let namespace = object::namespace(&obj).map(str::to_string);
        let is_namespace = r.group.is_empty() && r.resource == "namespaces";
        let taken = match self.filters[res] {
            Filter::Namespaces if is_namespace => self.selection.namespace(&name),
            Filter::Namespaces => namespace
                .as_deref()
                .is_none_or(|ns| self.selection.namespace(ns)),
            Filter::All => true,
            Filter::Needed => {
                if !self.needs.wants(r, &obj) {
                    self.collectors[res].list_not_needed += 1;
                    false
                } else {
                    true
                }
            }
        };
        if !taken {
            return Ok(());
        }
        if object::excluded(&obj) {
            self.collectors[res].list_excluded += 1;
            if self.out.excluded_objects.len() < MAX_EXCLUDED_LISTED {
                self.out.excluded_objects.push(ExcludedObject {
                    resource: r.qualified(),
                    namespace: namespace.clone(),
                    name,
                });
            }
            return Ok(());
        }
        let file = format!("{name}{SUFFIX}");
        let dir = if r.namespaced {
            match &namespace {
                Some(ns) if tree::bad_name(ns.as_bytes()).is_none() && !ns.starts_with('_') => {
                    ns.clone()
                }
                _ => {
                    self.unstored(
                        res,
                        format!(
                            "{}/{name}: a namespaced object with no usable namespace",
                            r.qualified()
                        ),
                    );
                    return Ok(());
                }
            }
        } else {
            CLUSTER_SCOPE.to_string()
        };
        if name.is_empty() || tree::bad_name(file.as_bytes()).is_some() {
            self.unstored(
                res,
                format!(
                    "{}: an object named {name:?} cannot be stored",
                    r.qualified()
                ),
            );
            return Ok(());
        }
        self.needs.note(r, &obj);
        let canonical = object::canonical(&obj);
        let mut content: Vec<BlobId> = Vec::with_capacity(1);
        for piece in canonical.chunks(PIECE) {
            content.push(self.saver.save_slice(BlobKind::Data, piece)?);
        }
        if canonical.is_empty() {
            content.push(self.saver.save_slice(BlobKind::Data, &[])?);
        }
        let mut node = Node::new(file.into_bytes(), NodeKind::File);
        node.mode = 0o100644;
        node.size = canonical.len() as u64;
        node.mtime_ns = object::created_ns(&obj);
        node.content = content;
        self.progress.objects.fetch_add(1, Ordering::Relaxed);
        self.progress.bytes.fetch_add(node.size, Ordering::Relaxed);
        let c = &mut self.collectors[res];
        c.list_objects += 1;
        c.list_bytes += node.size;
        // Lists come in `namespace/name` order: a new directory means the last one
        // is complete, unless the server broke the order.
        if c.last.as_deref() != Some(dir.as_str()) {
            let key = |d: &str| format!("{d}/");
            let behind =
                c.last.as_deref().is_some_and(|l| key(&dir) < key(l)) || c.done.contains_key(&dir);
            if behind {
                c.out_of_order = true;
            }
            if let Some(prev) = c.last.take() {
                if !c.hold && !c.out_of_order {
                    if let Some(nodes) = c.open.remove(&prev) {
                        let n = dir_node(&prev, nodes, self.saver, &mut self.out.warnings)?;
                        self.collectors[res].done.insert(prev, n);
                    }
                }
            }
            self.collectors[res].last = Some(dir.clone());
        }
        self.collectors[res].open.entry(dir).or_default().push(node);
        Ok(())
    }

    /// An object of `res` that could not be stored: counted once its list ends
    /// (a list that starts over counts again).
    fn unstored(&mut self, res: usize, why: String) {
        tracing::warn!("{why}");
        let c = &mut self.collectors[res];
        c.list_unstored += 1;
        c.list_warnings.push(why);
    }

    fn finish_resource(&mut self, res: usize) -> Result<()> {
        let c = std::mem::take(&mut self.collectors[res]);
        let mut dirs = c.done;
        for (name, nodes) in c.open {
            let n = dir_node(&name, nodes, self.saver, &mut self.out.warnings)?;
            dirs.insert(name, n);
        }
        let r = &self.resources[res];
        if !dirs.is_empty() {
            let node = dir_node(
                &r.resource,
                dirs.into_values().collect(),
                self.saver,
                &mut self.out.warnings,
            )?;
            self.out
                .dirs
                .push((r.group.clone(), r.version.clone(), r.resource.clone(), node));
        }
        self.out.captured.push(c.captured);
        Ok(())
    }
}

/// Writes a directory of `nodes` and returns its entry named `name`. Two entries of
/// one name (a server that listed an object twice) keep the last.
pub fn dir_node(
    name: &str,
    mut nodes: Vec<Node>,
    saver: &Saver,
    warnings: &mut Vec<String>,
) -> Result<Node> {
    nodes.reverse();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let before = nodes.len();
    nodes.dedup_by(|later, kept| later.name == kept.name);
    if nodes.len() != before {
        warnings.push(format!(
            "{name}: {} objects were listed twice; kept once",
            before - nodes.len()
        ));
    }
    let id = Tree { nodes }.save(saver)?;
    let mut dir = Node::new(name.as_bytes().to_vec(), NodeKind::Dir);
    dir.mode = 0o040755;
    dir.subtree = Some(id);
    Ok(dir)
}

/// Builds the upper levels (`GROUP/VERSION/RESOURCE`) from the resource directories.
pub fn upper_levels(dirs: Vec<(String, String, String, Node)>, saver: &Saver) -> Result<Vec<Node>> {
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<Node>>> = BTreeMap::new();
    for (g, v, _, node) in dirs {
        groups
            .entry(layout::group_dir(&g).to_string())
            .or_default()
            .entry(v)
            .or_default()
            .push(node);
    }
    let mut warnings = Vec::new();
    let mut out = Vec::new();
    for (g, versions) in groups {
        let mut vnodes = Vec::new();
        for (v, rnodes) in versions {
            vnodes.push(dir_node(&v, rnodes, saver, &mut warnings)?);
        }
        out.push(dir_node(&g, vnodes, saver, &mut warnings)?);
    }
    Ok(out)
}

/// A file node for small content (the manifest).
pub fn file_node(name: &str, bytes: &[u8], saver: &Saver) -> Result<Node> {
    let mut node = Node::new(name.as_bytes().to_vec(), NodeKind::File);
    node.mode = 0o100644;
    node.size = bytes.len() as u64;
    node.mtime_ns = jiff::Timestamp::now().as_nanosecond() as i64;
    node.content = vec![saver.save_slice(BlobKind::Data, bytes)?];
    Ok(node)
}
