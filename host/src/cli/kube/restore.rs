//! `ballast restore kube SNAPSHOT [KIND/NAME]`: objects of a Kubernetes snapshot
//! into the current or another cluster, in an order derived from the objects,
//! after a pre-flight; `--dry-run` sends everything with `dryRun=All`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::super::context::GlobalArgs;
use super::super::exit;
use super::super::output;
use super::{object_filter, ConnectArgs, SelectionArgs};
use crate::kube::labels::LabelSelector;
use crate::kube::restore::apply::{Existing, ExistingPolicy};
use crate::kube::restore::mapping::{parse_pairs, Mappings};
use crate::kube::restore::modifiers::Modifiers;
use crate::kube::restore::prepare::Rules;
use crate::kube::restore::report::{Ending, Outcome, Report};
use crate::kube::restore::run::{self, Progress, RestoreOptions};
use crate::kube::restore::scope::Scope;
use crate::kube::stored::StoredSnapshot;

#[derive(Args)]
pub struct RestoreKubeArgs {
    /// Snapshot id (or unique prefix, or `latest` for the newest Kubernetes backup)
    snapshot: String,
    /// Only this object: KIND/NAME (`deployment/web`, `cm/settings`), with -n for
    /// its namespace
    object: Option<String>,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    selection: SelectionArgs,
    /// What to do with an object that exists in the target: skip, update (a
    /// refused change fails) or recreate (delete, then create); RESOURCE=POLICY for
    /// one resource (`--existing configmaps=update`); repeatable
    #[arg(long, value_name = "POLICY", default_value = "skip")]
    existing: Vec<String>,
    /// Restore the objects of namespace FROM into TO (also the references that name
    /// it); FROM=TO, comma-separated or repeated
    #[arg(long, value_name = "FROM=TO")]
    namespace_map: Vec<String>,
    /// Volumes that asked for storage class FROM ask for TO; FROM=TO, repeatable
    #[arg(long, value_name = "FROM=TO")]
    storage_class_map: Vec<String>,
    /// A resource modifiers file: JSON patches and merge patches for the objects its
    /// rules select (see docs/kube.md)
    #[arg(long, value_name = "FILE")]
    modifiers: Option<PathBuf>,
    /// Keep the node ports of NodePort and LoadBalancer Services (by default the
    /// target allocates new ones)
    #[arg(long)]
    preserve_node_ports: bool,
    /// Restore Pods, ReplicaSets and Jobs that a controller owns (by default the
    /// controller makes them again)
    #[arg(long)]
    include_owned: bool,
    /// Objects of one level sent at once
    #[arg(long, default_value_t = 16)]
    parallel: usize,
    /// The longest any one wait lasts (a CRD to be Established, a namespace to
    /// finish terminating, a webhook's backend to answer); a wait that runs out is
    /// reported and the restore goes on
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    wait_timeout: Duration,
    /// Send every object with dryRun=All: the pre-flight and what the server would
    /// refuse, with the fields that would change in existing objects; nothing is
    /// written
    #[arg(long)]
    dry_run: bool,
}

/// `--existing` arguments: one policy for all, and RESOURCE=POLICY for some.
fn existing_policy(s: &StoredSnapshot, args: &[String]) -> Result<ExistingPolicy> {
    use clap::ValueEnum;
    let parse = |p: &str| {
        Existing::from_str(p, true).map_err(|_| {
            super::super::Usage(format!(
                "--existing {p:?} is not a policy: give skip, update or recreate"
            ))
        })
    };
    let mut policy = ExistingPolicy::default();
    let mut defaults = 0;
    for a in args.iter().flat_map(|a| a.split(',')).map(str::trim) {
        match a.split_once('=') {
            None => {
                defaults += 1;
                policy.default = parse(a)?;
            }
            Some((resource, p)) => {
                let p = parse(p.trim())?;
                for c in s.resolve(resource.trim())? {
                    policy
                        .by_resource
                        .insert((c.group.clone(), c.resource.clone()), p);
                }
            }
        }
    }
    // clap gives the default only when no --existing is given.
    if defaults > 1 {
        return Err(super::super::Usage(
            "--existing gives more than one policy for all resources: give one, and RESOURCE=POLICY for others".into(),
        )
        .into());
    }
    Ok(policy)
}

/// `latest` is refused when the repository holds Kubernetes backups of more than
/// one cluster: the newest could be another cluster's.
fn one_cluster(repo: &crate::repo::Repository) -> Result<()> {
    // A cluster is its kube-system UID (the first source path); it is shown by
    // its API server.
    let mut clusters: std::collections::BTreeMap<String, String> = Default::default();
    for (_, s) in crate::repo::snapshot::list(repo)?
        .into_iter()
        .filter(|(_, s)| s.source.kind == crate::kube::capture::SOURCE_KIND)
    {
        let id = s.source.paths.first().cloned().unwrap_or_default();
        let server = s
            .source
            .meta
            .get("cluster")
            .and_then(|c| c["server"].as_str())
            .unwrap_or(&id)
            .to_string();
        clusters.insert(id, server);
    }
    let clusters: Vec<String> = clusters
        .into_iter()
        .map(|(id, server)| format!("{server} (uid {id})"))
        .collect();
    if clusters.len() > 1 {
        return Err(super::super::Usage(format!(
            "the repository holds Kubernetes backups of {} clusters ({}): `latest` could be any of them; give a snapshot id (`ballast snapshots --kind kube` shows each one's cluster)",
            clusters.len(),
            clusters.join(", ")
        ))
        .into());
    }
    Ok(())
}

pub fn run(g: &GlobalArgs, a: RestoreKubeArgs) -> Result<i32> {
    let labels = match &a.selection.selector {
        Some(sel) => Some(
            LabelSelector::parse(sel)
                .map_err(|e| super::super::Usage(format!("--selector {e}")))?,
        ),
        None => None,
    };
    if a.selection.all_versions {
        return Err(super::super::Usage(
            "restore kube restores each object once, in the version the backup preferred: leave out --all-versions".into(),
        )
        .into());
    }
    let repo = g.open()?;
    if a.snapshot == "latest" {
        one_cluster(&repo)?;
    }
    let stored = StoredSnapshot::open(&repo, &a.snapshot)?;
    let scope = match &a.object {
        Some(o) => {
            let ns = match a.selection.include_namespaces.as_slice() {
                [] => None,
                [one] if !one.contains(['*', '?', '[', ',']) => Some(one.clone()),
                _ => {
                    return Err(super::super::Usage(
                        "with KIND/NAME, -n names the object's one namespace".into(),
                    )
                    .into())
                }
            };
            Scope {
                selection: None,
                object: Some(object_filter(&stored, o, ns)?),
                labels,
            }
        }
        None => Scope {
            selection: Some(a.selection.selection().compile()?),
            object: None,
            labels,
        },
    };
    let rules = Rules {
        mappings: Mappings {
            namespaces: parse_pairs(&a.namespace_map, "--namespace-map")?,
            storage_classes: parse_pairs(&a.storage_class_map, "--storage-class-map")?,
        },
        modifiers: match &a.modifiers {
            Some(p) => Modifiers::load(p)?,
            None => Modifiers::default(),
        },
        preserve_node_ports: a.preserve_node_ports,
        include_owned: a.include_owned,
        ..Default::default()
    };
    let opts = RestoreOptions {
        connect: a.connect.options(),
        scope,
        rules,
        existing: existing_policy(&stored, &a.existing)?,
        parallel: a.parallel,
        wait_timeout: a.wait_timeout,
        dry_run: a.dry_run,
    };
    let progress = Progress::default();
    let report = std::thread::scope(|s| {
        let bar = output::bar(g.progress(), None, "{spinner} {msg}");
        let work = s.spawn(|| run::restore(&stored, opts, &progress));
        while !work.is_finished() {
            bar.set_message(format!(
                "{}/{} objects; {}",
                progress.done.load(Ordering::Relaxed),
                progress.total.load(Ordering::Relaxed),
                progress.doing.lock().unwrap()
            ));
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
        work.join().expect("the restore thread")
    })?;
    if g.json {
        output::json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(match report.ending() {
        Ending::Complete => exit::OK,
        Ending::WithSkips => exit::PARTIAL,
        Ending::Failed => exit::FAILURE,
    })
}

fn print_report(r: &Report) {
    let verb = if r.dry_run {
        "dry run of restore"
    } else {
        "restore"
    };
    println!(
        "{verb} {} of snapshot {} (from {}) into {} (context {})",
        r.restore_id,
        &r.snapshot[..r.snapshot.len().min(8)],
        r.source_cluster,
        r.target_server,
        r.target_context
    );
    if !r.preflight.is_empty() {
        println!("pre-flight:");
        for p in run::sorted(&r.preflight) {
            let mark = if p.blocking { "BLOCKS" } else { "note" };
            println!("  {mark}: {}: {}", p.what, p.problem);
        }
    }
    for w in r.waits.iter().filter(|w| !w.done) {
        println!("wait ran out: {} ({:.0}s)", w.what, w.seconds);
    }
    // Every object that was not simply created, with why.
    let shown = [
        Outcome::Failed,
        Outcome::NotAttempted,
        Outcome::Deferred,
        Outcome::Skipped,
        Outcome::Updated,
        Outcome::Recreated,
    ];
    let mut t = output::table(&["outcome", "kind", "namespace", "name", "why"]);
    let mut rows = 0;
    for o in r.objects.iter().filter(|o| shown.contains(&o.outcome)) {
        rows += 1;
        t.add_row(vec![
            o.outcome.name().to_string(),
            o.kind.clone(),
            o.namespace.clone().unwrap_or_default(),
            o.name.clone(),
            o.reason.clone().unwrap_or_default(),
        ]);
    }
    if rows > 0 {
        println!("{t}");
    }
    for o in r.objects.iter().filter(|o| !o.changes.is_empty()) {
        println!(
            "{} {}{} would change:",
            o.kind,
            o.namespace
                .as_deref()
                .map(|n| format!("{n}/"))
                .unwrap_or_default(),
            o.name
        );
        for c in &o.changes {
            let show = |v: &Option<serde_json::Value>| {
                v.as_ref()
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "(none)".into())
            };
            println!("  {}: {} -> {}", c.path, show(&c.before), show(&c.after));
        }
    }
    let counts: Vec<String> = r.counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "{}; {} requests in {:.1}s",
        if counts.is_empty() {
            "no objects".to_string()
        } else {
            counts.join(", ")
        },
        r.requests,
        r.seconds
    );
    if let Some(s) = &r.stopped {
        println!("stopped: {s}");
    }
}
