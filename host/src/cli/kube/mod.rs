//! `ballast backup kube` and `ballast kube ls|get|diff|export`: Kubernetes objects
//! into the repository, and read back without restoring anything; `restore kube`
//! is in `restore.rs`.

pub mod restore;

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::context::{GlobalArgs, LabelArgs};
use super::exit;
use super::output::{self, bytes};
use crate::kube::capture::{self, CaptureOptions, Progress};
use crate::kube::client::{Cluster, ConnectOptions};
use crate::kube::diff::{self, Change};
use crate::kube::export;
use crate::kube::select::{ClusterResources, Selection};
use crate::kube::stored::{Filter, StoredSnapshot};

/// How to reach the cluster, as kubectl does.
#[derive(Args, Clone)]
pub struct ConnectArgs {
    /// The kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then the pod's
    /// service account)
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context)
    #[arg(long)]
    context: Option<String>,
    /// Requests per second to the API server, on average (0: no limit)
    #[arg(long, default_value_t = 50.0)]
    qps: f64,
    /// Requests that may go at once above --qps
    #[arg(long, default_value_t = 100)]
    burst: u32,
}

impl ConnectArgs {
    fn options(&self) -> ConnectOptions {
        ConnectOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            qps: self.qps,
            burst: self.burst,
        }
    }
}

/// Which objects a backup takes.
#[derive(Args, Clone)]
pub struct SelectionArgs {
    /// Namespaces to back up (globs, comma-separated or repeated; default: the whole
    /// cluster)
    #[arg(
        short = 'n',
        long = "include-namespaces",
        alias = "namespace",
        value_name = "GLOB"
    )]
    include_namespaces: Vec<String>,
    /// Namespaces to leave out (globs)
    #[arg(long, value_name = "GLOB")]
    exclude_namespaces: Vec<String>,
    /// Resources to back up: a resource, kind or short name, with `.GROUP` if need be
    /// (`configmaps`, `Deployment.apps`, `*.example.com`; globs)
    #[arg(long, value_name = "GLOB")]
    include_resources: Vec<String>,
    /// Resources to leave out (as --include-resources)
    #[arg(long, value_name = "GLOB")]
    exclude_resources: Vec<String>,
    /// Only objects with these labels (a label selector, as kubectl's -l)
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Cluster-scoped objects: auto (all for a whole-cluster backup; for a namespace
    /// backup those its objects need), yes, no
    #[arg(long, value_enum, default_value_t = ClusterResources::Auto)]
    cluster_resources: ClusterResources,
    /// Keep every served version of each resource, not only the preferred one
    #[arg(long)]
    all_versions: bool,
}

impl SelectionArgs {
    fn selection(&self) -> Selection {
        Selection {
            include_namespaces: self.include_namespaces.clone(),
            exclude_namespaces: self.exclude_namespaces.clone(),
            include_resources: self.include_resources.clone(),
            exclude_resources: self.exclude_resources.clone(),
            label_selector: self.selector.clone(),
            cluster_resources: self.cluster_resources,
            all_versions: self.all_versions,
        }
    }
}

#[derive(Args)]
pub struct BackupKubeArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    selection: SelectionArgs,
    /// Objects per list request
    #[arg(long, default_value_t = 500)]
    page_size: u32,
    /// Resources listed at once
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Fail, and record nothing, if anything selected could not be captured
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    labels: LabelArgs,
}

#[derive(Subcommand)]
pub enum KubeCommand {
    /// List the objects of a Kubernetes snapshot
    Ls(LsArgs),
    /// Print one object of a Kubernetes snapshot
    Get(GetArgs),
    /// Compare two Kubernetes snapshots, or a snapshot and the live cluster
    Diff(DiffArgs),
    /// Write clean manifests (that a fresh cluster accepts) into a directory
    Export(ExportArgs),
}

#[derive(Args)]
pub struct LsArgs {
    /// Snapshot id (or unique prefix, or `latest`)
    snapshot: String,
    /// Only this namespace
    #[arg(short, long)]
    namespace: Option<String>,
    /// Only this resource (kind, resource or short name, optionally .GROUP)
    #[arg(long)]
    kind: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

#[derive(Args)]
pub struct GetArgs {
    /// Snapshot id (or unique prefix, or `latest`)
    snapshot: String,
    /// KIND/NAME (`deployment/web`, `cm/settings`, `Widget.example.com/w1`)
    object: String,
    /// The object's namespace (default: `default`, for a namespaced kind)
    #[arg(short, long)]
    namespace: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    output: Format,
    /// Print the object clean, as export writes it
    #[arg(long)]
    clean: bool,
}

#[derive(Args)]
pub struct DiffArgs {
    /// The older snapshot
    a: String,
    /// The newer snapshot (or --live)
    #[arg(required_unless_present = "live")]
    b: Option<String>,
    /// Compare with the live cluster instead of a second snapshot
    #[arg(long, conflicts_with = "b")]
    live: bool,
    /// Only this object (KIND/NAME): print the fields that changed
    #[arg(long)]
    object: Option<String>,
    /// Only this namespace
    #[arg(short, long)]
    namespace: Option<String>,
    /// Compare objects exactly as stored (resourceVersion, status and managed
    /// fields included), not in their clean form
    #[arg(long)]
    exact: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Snapshot id (or unique prefix, or `latest`)
    snapshot: String,
    /// The directory to write into (new or empty)
    #[arg(long)]
    to: PathBuf,
    /// Only this namespace
    #[arg(short, long)]
    namespace: Option<String>,
    /// Only these resources (kind, resource or short name, optionally .GROUP; repeatable)
    #[arg(long)]
    kind: Vec<String>,
}

pub fn backup(g: &GlobalArgs, a: BackupKubeArgs) -> Result<i32> {
    let repo = g.open()?;
    let opts = CaptureOptions {
        selection: a.selection.selection(),
        page_size: a.page_size,
        concurrency: a.concurrency,
        strict: a.strict,
        labels: a.labels.labels(),
        ..Default::default()
    };
    let progress = Progress::default();
    let connect = a.connect.options();
    let outcome = std::thread::scope(|s| {
        let bar = output::bar(g.progress(), None, "{spinner} {msg}");
        let work = s.spawn(|| capture::backup(&repo, &connect, &opts, &progress));
        while !work.is_finished() {
            bar.set_message(format!(
                "{}/{} resources, {} objects, {}",
                progress.resources_done.load(Ordering::Relaxed),
                progress.resources_total.load(Ordering::Relaxed),
                progress.objects.load(Ordering::Relaxed),
                bytes(progress.bytes.load(Ordering::Relaxed)),
            ));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bar.finish_and_clear();
        work.join().expect("the backup thread")
    })?;
    let m = &outcome.manifest;
    let s = &outcome.snapshot.summary;
    if g.json {
        output::json(&json!({
            "snapshot_id": outcome.id.to_string(),
            "snapshot": outcome.snapshot,
            "manifest": m,
        }))?;
    } else {
        println!("snapshot {} saved", outcome.id.short());
        println!(
            "  {} objects of {} resources from {} ({})",
            m.objects(),
            m.resources.iter().filter(|r| r.objects > 0).count(),
            m.cluster.server,
            m.cluster.version
        );
        println!(
            "  {} of objects; added {} ({} stored) in {} packs; took {:.1}s",
            bytes(s.total_bytes),
            bytes(s.bytes_new),
            bytes(s.bytes_stored),
            s.packs_uploaded,
            s.seconds
        );
        if !m.complete {
            println!("  incomplete:");
            for line in m.missed() {
                println!("    {line}");
            }
        }
    }
    Ok(if m.complete { exit::OK } else { exit::PARTIAL })
}

pub fn run(g: &GlobalArgs, c: KubeCommand) -> Result<i32> {
    match c {
        KubeCommand::Ls(a) => ls(g, a),
        KubeCommand::Get(a) => get(g, a),
        KubeCommand::Diff(a) => diff_cmd(g, a),
        KubeCommand::Export(a) => export_cmd(g, a),
    }
}

/// The filter for a `--kind`-like list of names.
fn resources_of(s: &StoredSnapshot, kinds: &[String]) -> Result<Option<Vec<(String, String)>>> {
    if kinds.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for k in kinds {
        for c in s.resolve(k)? {
            out.push((c.group.clone(), c.resource.clone()));
        }
    }
    Ok(Some(out))
}

fn ls(g: &GlobalArgs, a: LsArgs) -> Result<i32> {
    let repo = g.open()?;
    let s = StoredSnapshot::open(&repo, &a.snapshot)?;
    let filter = Filter {
        namespace: a.namespace.clone(),
        resources: resources_of(&s, a.kind.as_slice())?,
        ..Default::default()
    };
    let entries = s.entries(&filter)?;
    if !g.json {
        let c = &s.manifest.cluster;
        println!(
            "snapshot {} of the cluster at {} (context {}, kube-system uid {}, {})",
            s.id.short(),
            c.server,
            c.context,
            c.uid,
            c.version
        );
    }
    let kind_of = |group: &str, resource: &str| {
        s.manifest
            .resource(group, resource)
            .map(|c| c.kind.clone())
            .unwrap_or_else(|| resource.to_string())
    };
    if g.json {
        let rows: Vec<_> = entries
            .iter()
            .map(|e| {
                json!({
                    "group": e.at.group, "version": e.at.version, "resource": e.at.resource,
                    "kind": kind_of(&e.at.group, &e.at.resource),
                    "namespace": e.at.namespace, "name": e.at.name, "size": e.node.size,
                })
            })
            .collect();
        output::json(&rows)?;
        return Ok(exit::OK);
    }
    let mut t = output::table(&["namespace", "kind", "name", "size"]);
    for e in &entries {
        let kind = kind_of(&e.at.group, &e.at.resource);
        let kind = if e.at.group.is_empty() {
            kind
        } else {
            format!("{kind}.{}", e.at.group)
        };
        t.add_row(vec![
            e.at.namespace.clone().unwrap_or_default(),
            kind,
            e.at.name.clone(),
            bytes(e.node.size),
        ]);
    }
    println!("{t}");
    Ok(exit::OK)
}

/// `KIND/NAME` resolved against a snapshot: the filter that finds it.
fn object_filter(s: &StoredSnapshot, object: &str, namespace: Option<String>) -> Result<Filter> {
    let Some((kind, name)) = object.split_once('/') else {
        return Err(super::Usage(format!(
            "{object:?} is not KIND/NAME (for example deployment/web)"
        ))
        .into());
    };
    let c = s.resolve_one(kind)?;
    let namespace = match (c.namespaced, namespace) {
        (true, ns) => Some(ns.unwrap_or_else(|| "default".into())),
        (false, Some(ns)) => {
            return Err(super::Usage(format!(
                "{} is cluster-scoped: leave out --namespace {ns}",
                c.kind
            ))
            .into())
        }
        (false, None) => None,
    };
    Ok(Filter {
        namespace,
        resources: Some(vec![(c.group.clone(), c.resource.clone())]),
        name: Some(name.to_string()),
        all_versions: false,
    })
}

fn get(g: &GlobalArgs, a: GetArgs) -> Result<i32> {
    let repo = g.open()?;
    let s = StoredSnapshot::open(&repo, &a.snapshot)?;
    let filter = object_filter(&s, &a.object, a.namespace.clone())?;
    let entries = s.entries(&filter)?;
    let Some(e) = entries.first() else {
        let ns = filter
            .namespace
            .as_deref()
            .map(|n| format!(" in namespace {n}"))
            .unwrap_or_default();
        anyhow::bail!("snapshot {} holds no {}{ns}", s.id.short(), a.object);
    };
    let mut obj = s.read(e)?;
    if a.clean {
        let ctx = export::context(&s, e.at.namespace.as_deref())?;
        match crate::kube::clean::clean(&e.at, &obj, &ctx) {
            crate::kube::clean::Verdict::Keep(c) => obj = c,
            crate::kube::clean::Verdict::Drop(why) => {
                eprintln!("note: export leaves this object out: {why}");
            }
        }
    }
    match (a.output, g.json) {
        (_, true) | (Format::Json, _) => output::json(&obj)?,
        (Format::Yaml, false) => print!("{}", export::to_yaml(&obj)),
    }
    Ok(exit::OK)
}

fn diff_cmd(g: &GlobalArgs, a: DiffArgs) -> Result<i32> {
    let repo = g.open()?;
    let before = StoredSnapshot::open(&repo, &a.a)?;
    let filter = match &a.object {
        Some(o) => object_filter(&before, o, a.namespace.clone())?,
        None => Filter {
            namespace: a.namespace.clone(),
            ..Default::default()
        },
    };
    // One object's fields are compared whether or not an export would keep it.
    let form = match (a.exact, a.object.is_some()) {
        (true, _) => diff::Form::Exact,
        (false, true) => diff::Form::Stripped,
        (false, false) => diff::Form::Clean,
    };
    let left = diff::snapshot_objects(&before, &filter, form)?;
    let after = match (&a.b, a.live) {
        (Some(b), false) => Some(StoredSnapshot::open(&repo, b)?),
        _ => None,
    };
    let right = match &after {
        Some(b) => diff::snapshot_objects(b, &filter, form)?,
        None => {
            let taken = diff::Taken::of(&before)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let cluster = Cluster::connect(&a.connect.options()).await?;
                diff::live_objects(&cluster, &before, &taken, &filter, form, 500).await
            })?
        }
    };
    if a.object.is_some() {
        let (l, r) = (left.values().next(), right.values().next());
        let fields = match (l, r) {
            (Some(l), Some(r)) => diff::fields(l, r),
            (None, Some(r)) => diff::fields(&serde_json::Value::Null, r),
            (Some(l), None) => diff::fields(l, &serde_json::Value::Null),
            (None, None) => anyhow::bail!("{} is in neither", a.object.clone().unwrap_or_default()),
        };
        if g.json {
            output::json(&fields)?;
        } else {
            for f in &fields {
                let show = |v: &Option<serde_json::Value>| {
                    v.as_ref()
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| "(none)".into())
                };
                println!(
                    "{}: {} -> {}",
                    if f.path.is_empty() {
                        "(object)"
                    } else {
                        &f.path
                    },
                    show(&f.before),
                    show(&f.after)
                );
            }
        }
        return Ok(exit::OK);
    }
    // What one side holds and the other could not have: not a difference.
    let a_covers = diff::Coverage::of(
        "A",
        &before.manifest,
        after
            .as_ref()
            .map_or(&before.manifest.selection, |b| &b.manifest.selection),
    )?;
    let b_covers = match &after {
        Some(b) => Some(diff::Coverage::of(
            "B",
            &b.manifest,
            &before.manifest.selection,
        )?),
        None => None,
    };
    let cmp = diff::differences(&left, &right, Some(&a_covers), b_covers.as_ref());
    if g.json {
        output::json(&cmp)?;
    } else {
        for d in &cmp.differences {
            let mark = match d.change {
                Change::Added => '+',
                Change::Removed => '-',
                Change::Changed => 'M',
            };
            println!("{mark} {}", d.key.display());
        }
        let count = |c: Change| cmp.differences.iter().filter(|d| d.change == c).count();
        println!(
            "{} added, {} removed, {} changed",
            count(Change::Added),
            count(Change::Removed),
            count(Change::Changed)
        );
        for n in &cmp.not_compared {
            let ns = n
                .namespace
                .as_deref()
                .map(|ns| format!(" in {ns}"))
                .unwrap_or_default();
            println!(
                "not compared: {} {}{ns} held by one side only: {}",
                n.objects, n.resource, n.reason
            );
        }
    }
    Ok(exit::OK)
}

fn export_cmd(g: &GlobalArgs, a: ExportArgs) -> Result<i32> {
    let repo = g.open()?;
    let s = StoredSnapshot::open(&repo, &a.snapshot)?;
    let filter = Filter {
        namespace: a.namespace.clone(),
        resources: resources_of(&s, &a.kind)?,
        ..Default::default()
    };
    let summary = export::export(&s, &filter, &a.to)?;
    if g.json {
        output::json(&summary)?;
    } else {
        println!(
            "{} objects written to {} ({}); {} left out",
            summary.written,
            a.to.display(),
            bytes(summary.bytes),
            summary.dropped.values().sum::<u64>()
        );
        for (why, n) in &summary.dropped {
            println!("  {n} left out: {why}");
        }
        for e in &summary.errors {
            println!("  {e}");
        }
    }
    Ok(if summary.errors.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}
