//! `ballast restore kube`: the pieces put together. The snapshot is read once for
//! the order and the pre-flight, the pre-flight runs against the target before
//! anything is written, then level by level (CRDs and their waits, namespaces,
//! prerequisites, ..., webhooks once their backends answer) the objects of a level
//! are read again and sent in parallel. Every object gets an outcome.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

use super::super::client::{Cluster, ConnectOptions};
use super::super::stored::{Entry, StoredSnapshot};
use super::super::KubeError;
use super::apply::{ExistingPolicy, Outgoing, Sender};
use super::order::{self, Level, CRDS, NAMESPACES, WEBHOOKS};
use super::preflight::{self, Findings};
use super::prepare::{prepare, Plan, Rules, BACKUP_LABEL, RESTORE_LABEL};
use super::report::{ObjectOutcome, Outcome, Problem, Report, Wait};
use super::scope::{self, Facts, Fate, Item, Scope};
use super::target::{Target, Waited};

pub struct RestoreOptions {
    pub connect: ConnectOptions,
    pub scope: Scope,
    pub rules: Rules,
    pub existing: ExistingPolicy,
    /// Objects of one level sent at once.
    pub parallel: usize,
    /// The longest any one wait lasts.
    pub wait_timeout: Duration,
    pub dry_run: bool,
}

/// What a running restore has done, for a progress bar.
#[derive(Default)]
pub struct Progress {
    pub total: AtomicU64,
    pub done: AtomicU64,
    /// What it is doing now (a level, a wait).
    pub doing: Mutex<String>,
}

impl Progress {
    fn doing(&self, what: impl Into<String>) {
        *self.doing.lock().unwrap() = what.into();
    }
}

/// A restore's id: the value of the `ballast.io/restore` label (a valid label
/// value: date, time and a random suffix).
pub fn new_restore_id() -> String {
    let now = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S");
    format!("{now}-{:04x}", rand::random::<u16>())
}

/// Runs a restore (or a dry run) of `stored` and reports every object's outcome.
pub fn restore(
    stored: &StoredSnapshot,
    mut opts: RestoreOptions,
    progress: &Progress,
) -> Result<Report, KubeError> {
    let clock = Instant::now();
    if opts.parallel == 0 {
        return Err(KubeError::Invalid(
            "--parallel 0 would send nothing: give at least 1".into(),
        ));
    }
    opts.rules.backup_id = stored.id.short();
    if opts.rules.restore_id.is_empty() {
        opts.rules.restore_id = new_restore_id();
    }
    progress.doing("reading the snapshot");
    let (items, facts) = scope::gather(stored, &opts.scope, &opts.rules)?;
    if items.is_empty() {
        return Err(KubeError::Invalid(format!(
            "snapshot {} holds no object that this restore selects: `ballast kube ls {}` lists what it holds",
            stored.id.short(),
            stored.id.short()
        )));
    }
    progress.total.store(items.len() as u64, Ordering::Relaxed);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ballast-restore")
        .enable_all()
        .build()
        .map_err(|e| {
            KubeError::Invalid(format!("cannot start the Kubernetes client's runtime: {e}"))
        })?;
    // The repository's reads block on a runtime of their own, which must not run
    // inside this one: bodies are read on a thread of their own, and awaited.
    let (to_reader, requests) = std::sync::mpsc::channel::<ReadRequest>();
    std::thread::scope(|s| {
        s.spawn(move || {
            for (entry, reply) in requests {
                let _ = reply.send(stored.read(&entry));
            }
        });
        runtime.block_on(restore_in(
            stored, &opts, &items, &facts, progress, clock, to_reader,
        ))
    })
}

/// A body to read, and where the answer goes.
type ReadRequest = (
    Entry,
    tokio::sync::oneshot::Sender<Result<Value, KubeError>>,
);

async fn restore_in(
    stored: &StoredSnapshot,
    opts: &RestoreOptions,
    items: &[Item],
    facts: &Facts,
    progress: &Progress,
    clock: Instant,
    reader: std::sync::mpsc::Sender<ReadRequest>,
) -> Result<Report, KubeError> {
    {
        let cluster = Cluster::connect(&opts.connect).await?;
        progress.doing("pre-flight");
        let target = Target::connect(cluster).await?;
        let findings = preflight::check(&target, &facts).await?;
        let mut report = Report {
            snapshot: stored.id.to_string(),
            source_cluster: stored.manifest.cluster.server.clone(),
            target_server: target.cluster.server.clone(),
            target_context: target.cluster.context.clone(),
            restore_id: opts.rules.restore_id.clone(),
            dry_run: opts.dry_run,
            preflight: findings.problems.clone(),
            ..Default::default()
        };
        if !opts.dry_run && findings.problems.iter().any(|p| p.blocking) {
            report.stopped = Some(
                "the pre-flight found what the target cannot take (see preflight): nothing was written"
                    .into(),
            );
        } else {
            let run = Run {
                reader,
                opts,
                items,
                facts,
                findings: &findings,
                sender: Sender {
                    target: &target,
                    dry_run: opts.dry_run,
                    existing: &opts.existing,
                    wait_timeout: opts.wait_timeout,
                    backup_id: opts.rules.backup_id.clone(),
                    restore_id: opts.rules.restore_id.clone(),
                    uids: Mutex::new(HashMap::new()),
                    stopped: AtomicBool::new(false),
                    stop_reason: Mutex::new(None),
                },
                progress,
                backends: Mutex::new(BTreeMap::new()),
            };
            run.levels(&mut report).await;
            report.stopped = run.sender.stop_reason.lock().unwrap().take();
        }
        report.requests = target.cluster.stats.requests.load(Ordering::Relaxed);
        report.seconds = clock.elapsed().as_secs_f64();
        Ok(report)
    }
}

struct Run<'a> {
    reader: std::sync::mpsc::Sender<ReadRequest>,
    opts: &'a RestoreOptions,
    items: &'a [Item],
    facts: &'a Facts,
    findings: &'a Findings,
    sender: Sender<'a>,
    progress: &'a Progress,
    /// Webhook backends waited for: whether each answered.
    backends: Mutex<BTreeMap<(String, String), bool>>,
}

impl Run<'_> {
    async fn levels(&self, report: &mut Report) {
        let nodes: Vec<order::Node> = self.items.iter().map(|i| i.node.clone()).collect();
        let levels = order::levels(&nodes);
        let mut crds_waited = false;
        let mut namespaces_made = false;
        let mut unready: BTreeSet<(String, String)> = BTreeSet::new();
        for (n, (level, members)) in levels.iter().enumerate() {
            if level.phase > CRDS && !crds_waited {
                crds_waited = true;
                unready = self.wait_crds(report).await;
            }
            if level.phase >= NAMESPACES && !namespaces_made {
                namespaces_made = true;
                self.make_namespaces(report, n).await;
            }
            if self.sender.is_stopped() {
                self.not_attempted(report, members, n);
                continue;
            }
            self.progress.doing(format!(
                "level {} of {}: {}",
                n + 1,
                levels.len(),
                level.describe()
            ));
            let outcomes = self.level(*level, members, n, &unready).await;
            for o in outcomes {
                report.push(o);
            }
        }
        if !namespaces_made {
            self.make_namespaces(report, levels.len()).await;
        }
        report.waits.sort_by(|a, b| a.what.cmp(&b.what));
    }

    fn not_attempted(&self, report: &mut Report, members: &[usize], level: usize) {
        for &i in members {
            let item = &self.items[i];
            report.push(self.outcome(
                item,
                level,
                Outcome::NotAttempted,
                "the restore stopped before this object".into(),
            ));
            self.progress.done.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn outcome(
        &self,
        item: &Item,
        level: usize,
        outcome: Outcome,
        reason: String,
    ) -> ObjectOutcome {
        ObjectOutcome {
            resource: item.entry.at.qualified_resource(),
            kind: item.kind.clone(),
            namespace: item.namespace.clone(),
            name: item.name.clone(),
            outcome,
            reason: Some(reason),
            notes: Vec::new(),
            changes: Vec::new(),
            level,
            ms: 0.0,
        }
    }

    /// Sends the objects of one level, `--parallel` at a time.
    async fn level(
        &self,
        level: Level,
        members: &[usize],
        n: usize,
        unready: &BTreeSet<(String, String)>,
    ) -> Vec<ObjectOutcome> {
        stream::iter(members.iter().copied())
            .map(|i| async move {
                let o = self.one(level, i, n, unready).await;
                self.progress.done.fetch_add(1, Ordering::Relaxed);
                o
            })
            .buffer_unordered(self.opts.parallel)
            .collect()
            .await
    }

    async fn one(
        &self,
        level: Level,
        i: usize,
        n: usize,
        unready: &BTreeSet<(String, String)>,
    ) -> ObjectOutcome {
        let item = &self.items[i];
        let at = &item.entry.at;
        match &item.fate {
            Fate::LeftOut(why) => return self.outcome(item, n, Outcome::LeftOut, why.clone()),
            Fate::Invalid(why) => return self.outcome(item, n, Outcome::Failed, why.clone()),
            Fate::Send => {}
        }
        let key = (at.group.clone(), at.version.clone(), at.resource.clone());
        if self.opts.dry_run {
            if let Some(ns) = item
                .namespace
                .as_ref()
                .filter(|ns| self.findings.namespaces_not_there.contains(*ns))
            {
                return self.outcome(
                    item,
                    n,
                    Outcome::Deferred,
                    format!("its namespace {ns} is not in the target yet (the restore makes it first): checked only once it exists"),
                );
            }
            if self.findings.deferred_resources.contains(&key) {
                return self.outcome(
                    item,
                    n,
                    Outcome::Deferred,
                    "its CustomResourceDefinition is in this restore and not served yet: checked only once it is Established".into(),
                );
            }
        } else if unready.contains(&(at.group.clone(), at.resource.clone())) {
            return self.outcome(
                item,
                n,
                Outcome::Deferred,
                "its CustomResourceDefinition was not Established within --wait-timeout: run the restore again once it is".into(),
            );
        }
        if level.phase == WEBHOOKS {
            if let Some(why) = self.backends_down(i).await {
                return self.outcome(item, n, Outcome::Deferred, why);
            }
        }
        // The body, read again: a level at a time is all that is held.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let _ = self.reader.send((item.entry.clone(), reply));
        let obj = match answer.await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return self.outcome(item, n, Outcome::Failed, e.to_string()),
            Err(_) => {
                return self.outcome(
                    item,
                    n,
                    Outcome::Failed,
                    "the snapshot's reader stopped".into(),
                )
            }
        };
        let prepared = match prepare(at, &obj, &self.facts.context, &self.opts.rules) {
            Plan::Send(p) => p,
            Plan::LeftOut(why) => return self.outcome(item, n, Outcome::LeftOut, why),
            Plan::Invalid(why) => return self.outcome(item, n, Outcome::Failed, why),
        };
        self.sender
            .send(Outgoing {
                at,
                kind: &item.kind,
                uid: item.node.uid.as_deref(),
                prepared,
                level: n,
            })
            .await
    }

    /// Waits for the backends of webhook configuration or APIService `i`; says why
    /// it is held back if one does not answer in time. A dry run does not wait.
    async fn backends_down(&self, i: usize) -> Option<String> {
        let services = self.facts.backends.get(&i)?;
        if self.opts.dry_run {
            return None;
        }
        for (ns, name) in services {
            if self.sender.is_stopped() {
                return Some("the restore stopped before its backend was checked".into());
            }
            let known = self
                .backends
                .lock()
                .unwrap()
                .get(&(ns.clone(), name.clone()))
                .copied();
            let up = match known {
                Some(up) => up,
                None => {
                    let up = matches!(
                        self.sender
                            .target
                            .backend_ready(ns, name, self.opts.wait_timeout)
                            .await,
                        Waited::Done
                    );
                    self.backends
                        .lock()
                        .unwrap()
                        .insert((ns.clone(), name.clone()), up);
                    up
                }
            };
            if !up {
                return Some(format!(
                    "its backend, the Service {ns}/{name}, had no ready endpoint within --wait-timeout: not registered, so that it cannot refuse other writes; apply it once the backend runs"
                ));
            }
        }
        None
    }

    /// Waits until the CRDs the restore sent are Established and served; returns
    /// the `(group, resource)`s that did not come in time.
    async fn wait_crds(&self, report: &mut Report) -> BTreeSet<(String, String)> {
        let mut unready = BTreeSet::new();
        if self.opts.dry_run {
            return unready;
        }
        for crd in &self.facts.crds {
            if self.sender.is_stopped() {
                break;
            }
            let needed: Vec<String> = self
                .facts
                .resources
                .keys()
                .filter(|(g, _, r)| *g == crd.group && *r == crd.resource)
                .map(|(_, v, _)| v.clone())
                .collect();
            if needed.is_empty() {
                continue;
            }
            self.progress.doing(format!(
                "waiting for the CRD {} to be Established",
                crd.name
            ));
            let start = Instant::now();
            let waited = self
                .sender
                .target
                .crd_ready(
                    &crd.name,
                    &crd.group,
                    &crd.resource,
                    &needed,
                    self.opts.wait_timeout,
                )
                .await;
            let done = matches!(waited, Waited::Done);
            report.waits.push(Wait {
                what: format!(
                    "the CustomResourceDefinition {} to be Established",
                    crd.name
                ),
                seconds: start.elapsed().as_secs_f64(),
                done,
            });
            if !done {
                unready.insert((crd.group.clone(), crd.resource.clone()));
            }
        }
        unready
    }

    /// Waits for terminating namespaces to go, and makes the namespaces that the
    /// objects need and the backup does not hold.
    async fn make_namespaces(&self, report: &mut Report, level: usize) {
        if self.opts.dry_run {
            for ns in &self.findings.namespaces_to_make {
                report.push(made_namespace(
                    ns,
                    level,
                    Outcome::Created,
                    "not in the backup: would be made for the objects restored into it",
                ));
            }
            return;
        }
        for ns in &self.findings.terminating {
            if self.sender.is_stopped() {
                break;
            }
            self.progress.doing(format!(
                "waiting for the namespace {ns} to finish terminating"
            ));
            let start = Instant::now();
            let waited = self
                .sender
                .target
                .namespace_gone(ns, self.opts.wait_timeout)
                .await;
            report.waits.push(Wait {
                what: format!("the namespace {ns} to finish terminating"),
                seconds: start.elapsed().as_secs_f64(),
                done: matches!(waited, Waited::Done),
            });
        }
        for ns in &self.findings.namespaces_to_make {
            if self.sender.is_stopped() {
                break;
            }
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
                "labels": {BACKUP_LABEL: self.opts.rules.backup_id, RESTORE_LABEL: self.opts.rules.restore_id}}});
            let sent = self
                .sender
                .target
                .cluster
                .send_json(
                    http::Method::POST,
                    "/api/v1/namespaces",
                    Some(("application/json", &body)),
                    &format!("making the namespace {ns}"),
                )
                .await;
            let (outcome, reason) = match sent {
                Ok(_) => (
                    Outcome::Created,
                    "not in the backup: made for the objects restored into it".to_string(),
                ),
                Err(KubeError::Api { code: 409, .. }) => (
                    Outcome::Unchanged,
                    "exists (made since the pre-flight)".to_string(),
                ),
                Err(e) => (Outcome::Failed, e.to_string()),
            };
            report.push(made_namespace(ns, level, outcome, &reason));
        }
    }
}

fn made_namespace(ns: &str, level: usize, outcome: Outcome, reason: &str) -> ObjectOutcome {
    ObjectOutcome {
        resource: "namespaces".into(),
        kind: "Namespace".into(),
        namespace: None,
        name: ns.to_string(),
        outcome,
        reason: Some(reason.to_string()),
        notes: Vec::new(),
        changes: Vec::new(),
        level,
        ms: 0.0,
    }
}

/// Problems as table rows, blocking first.
pub fn sorted(problems: &[Problem]) -> Vec<&Problem> {
    let mut v: Vec<&Problem> = problems.iter().collect();
    v.sort_by_key(|p| (!p.blocking, p.what.clone()));
    v
}
