//! `ballast verify backups`: the reference guide's backup-verification.sh done
//! properly, for everything a repository holds. Each check is a finding with a
//! severity:
//!
//! - freshness: each schedule's newest backup against its expected interval (from
//!   the server's configuration), or each source's against `--max-age`;
//! - etcd: the newest full snapshot of each cluster written out, its SHA-256 and
//!   bbolt pages checked, its revision compared with the record;
//! - Kubernetes: the newest backup of each cluster, its capture manifest complete;
//! - applications: the newest dump of each target checked by its plugin
//!   (`ballast verify app`, run as a child process so the plugin sandbox is the
//!   one the CLI sets up);
//! - a sampled read of the repository (`repo check --read-data-subset`).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::repo::check::{self, CheckOptions, Subset};
use crate::repo::snapshot::{self, Snapshot, SnapshotId};
use crate::repo::Repository;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Ok,
    Warning,
    Critical,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// freshness, etcd, kube, app, repository.
    pub check: &'static str,
    /// What it is about: a schedule, a cluster (etcd's cluster id, Kubernetes'
    /// `kube-system` UID), a target, the repository.
    pub subject: String,
    pub severity: Severity,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// How old a schedule's (or a source's) newest backup may be.
pub struct Freshness {
    /// Schedule name -> expected interval (a backup older than 1.5 times it is
    /// critical, older than once it a warning).
    pub schedules: Vec<(String, Duration)>,
    /// Without schedules: the oldest a source's newest backup may be.
    pub max_age: Duration,
}

pub struct Options {
    pub freshness: Freshness,
    pub subset: Subset,
    /// Runs `ballast verify app ID` and says whether it passed, and why not.
    pub verify_app: Box<dyn Fn(&SnapshotId) -> Result<(), String>>,
}

fn age(now: Timestamp, t: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(t)).unwrap_or_default()
}

fn shown(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// The newest snapshot of each group.
fn newest_by<'a>(
    snaps: &'a [(SnapshotId, Snapshot)],
    kind: &str,
    key: impl Fn(&Snapshot) -> String,
) -> BTreeMap<String, &'a (SnapshotId, Snapshot)> {
    let mut out: BTreeMap<String, &(SnapshotId, Snapshot)> = BTreeMap::new();
    for e in snaps.iter().filter(|(_, s)| s.source.kind == kind) {
        let k = key(&e.1);
        if out.get(&k).is_none_or(|o| o.1.time < e.1.time) {
            out.insert(k, e);
        }
    }
    out
}

fn meta(s: &Snapshot, key: &str) -> String {
    s.source
        .meta
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_string()
}

pub fn verify(repo: &Repository, opts: &Options) -> crate::repo::Result<Vec<Finding>> {
    let now = Timestamp::now();
    let snaps = snapshot::list(repo)?;
    let mut out = Vec::new();
    freshness(&snaps, &opts.freshness, now, &mut out);
    for (cluster, (id, s)) in newest_by(&snaps, crate::etcd::delta::FULL, |s| meta(s, "cluster_id"))
    {
        out.push(etcd(repo, id, s, &cluster));
    }
    let kube_cluster = |s: &Snapshot| {
        s.source
            .meta
            .get("cluster")
            .and_then(|c| c["uid"].as_str().or(c["server"].as_str()))
            .unwrap_or("unknown")
            .to_string()
    };
    for (cluster, (id, s)) in newest_by(&snaps, crate::kube::capture::SOURCE_KIND, kube_cluster) {
        out.push(kube(repo, id, s, &cluster));
    }
    for (target, (id, _)) in newest_by(&snaps, crate::plugins::app::KIND, |s| meta(s, "target")) {
        out.push(match (opts.verify_app)(id) {
            Ok(()) => finding(
                "app",
                &target,
                Severity::Ok,
                "its plugin verified the newest dump".into(),
                Some(id),
            ),
            Err(why) => finding(
                "app",
                &target,
                Severity::Critical,
                format!("its plugin refused the newest dump: {why}"),
                Some(id),
            ),
        });
    }
    let report = check::check(
        repo,
        &CheckOptions {
            read_data: false,
            subset: Some(opts.subset),
        },
        &check::Progress::default(),
    )?;
    out.push(if report.ok() {
        finding(
            "repository",
            "structure and sampled data",
            Severity::Ok,
            format!(
                "{} snapshots, {} packs; {} packs read and verified",
                report.snapshots, report.packs, report.packs_read
            ),
            None,
        )
    } else {
        let first = &report.problems[0];
        finding(
            "repository",
            "structure and sampled data",
            Severity::Critical,
            format!(
                "{} problem(s); first: {}: {} (run `ballast repo check --read-data`)",
                report.problems.len(),
                first.what,
                first.detail
            ),
            None,
        )
    });
    Ok(out)
}

fn finding(
    check: &'static str,
    subject: &str,
    severity: Severity,
    detail: String,
    id: Option<&SnapshotId>,
) -> Finding {
    Finding {
        check,
        subject: subject.to_string(),
        severity,
        detail,
        snapshot: id.map(|i| i.to_string()),
    }
}

fn freshness(
    snaps: &[(SnapshotId, Snapshot)],
    f: &Freshness,
    now: Timestamp,
    out: &mut Vec<Finding>,
) {
    if !f.schedules.is_empty() {
        for (name, interval) in &f.schedules {
            let tag = crate::server::jobs::schedule_tag(name);
            let newest = snaps
                .iter()
                .filter(|(_, s)| s.tags.contains(&tag))
                .max_by_key(|(_, s)| s.time);
            out.push(match newest {
                None => finding(
                    "freshness",
                    name,
                    Severity::Critical,
                    format!("no backup of this schedule (tag {tag}) in the repository"),
                    None,
                ),
                Some((id, s)) => {
                    let a = age(now, s.time);
                    let severity = if a.as_secs_f64() > 1.5 * interval.as_secs_f64() {
                        Severity::Critical
                    } else if a > *interval {
                        Severity::Warning
                    } else {
                        Severity::Ok
                    };
                    finding(
                        "freshness",
                        name,
                        severity,
                        format!(
                            "newest backup {} old; expected every {}",
                            shown(a),
                            shown(*interval)
                        ),
                        Some(id),
                    )
                }
            });
        }
        return;
    }
    // Without schedules: each source (kind, host, paths) and its newest backup.
    let groups = newest_by_all(snaps);
    for (source, (id, s)) in groups {
        let a = age(now, s.time);
        let severity = if a > f.max_age {
            Severity::Critical
        } else {
            Severity::Ok
        };
        out.push(finding(
            "freshness",
            &source,
            severity,
            format!(
                "newest backup {} old; at most {} allowed (--max-age)",
                shown(a),
                shown(f.max_age)
            ),
            Some(id),
        ));
    }
}

fn newest_by_all(snaps: &[(SnapshotId, Snapshot)]) -> BTreeMap<String, &(SnapshotId, Snapshot)> {
    let mut out: BTreeMap<String, &(SnapshotId, Snapshot)> = BTreeMap::new();
    // Delta segments belong to their capture, which `etcd` freshness covers.
    for e in snaps
        .iter()
        .filter(|(_, s)| s.source.kind != crate::etcd::delta::DELTA)
    {
        let s = &e.1;
        let k = format!(
            "{} {} on {}",
            s.source.kind,
            s.source.paths.join(","),
            s.host
        );
        if out.get(&k).is_none_or(|o| o.1.time < s.time) {
            out.insert(k, e);
        }
    }
    out
}

fn etcd(repo: &Repository, id: &SnapshotId, s: &Snapshot, cluster: &str) -> Finding {
    let subject = format!("etcd cluster {cluster}");
    let checked = (|| -> Result<String, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let file = dir.path().join("etcd.db");
        crate::etcd::snapshot::export(repo, s, &file).map_err(|e| e.to_string())?;
        let st = crate::etcd::status::of_file(&file).map_err(|e| e.to_string())?;
        if !st.sha256_verified {
            return Err("it carries no SHA-256 trailer to check".into());
        }
        if let Some(r) = s.source.meta.get("revision").and_then(|v| v.as_i64()) {
            if r != st.revision {
                return Err(format!(
                    "the record names revision {r}, the database holds {}",
                    st.revision
                ));
            }
        }
        Ok(format!(
            "SHA-256 verified; hash {}, revision {}, {} keys, {} bytes",
            st.hash, st.revision, st.total_keys, st.total_size
        ))
    })();
    match checked {
        Ok(d) => finding("etcd", &subject, Severity::Ok, d, Some(id)),
        Err(e) => finding("etcd", &subject, Severity::Critical, e, Some(id)),
    }
}

fn kube(repo: &Repository, id: &SnapshotId, _s: &Snapshot, cluster: &str) -> Finding {
    let subject = format!("Kubernetes cluster {cluster}");
    match crate::kube::stored::StoredSnapshot::open(repo, &id.to_string()) {
        Err(e) => finding(
            "kube",
            &subject,
            Severity::Critical,
            e.to_string(),
            Some(id),
        ),
        Ok(st) if st.manifest.complete => finding(
            "kube",
            &subject,
            Severity::Ok,
            format!(
                "capture complete: {} resources",
                st.manifest.resources.len()
            ),
            Some(id),
        ),
        Ok(st) => {
            let m = &st.manifest;
            finding(
                "kube",
                &subject,
                Severity::Warning,
                format!(
                    "capture incomplete: {} resources forbidden, {} failed, {} groups skipped (see `ballast kube ls {}`)",
                    m.forbidden.len(),
                    m.failed.len(),
                    m.skipped_groups.len(),
                    id.short()
                ),
                Some(id),
            )
        }
    }
}
