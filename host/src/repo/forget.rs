//! Retention: which snapshots a `--keep-*` policy keeps. Snapshots are grouped (by
//! host, tags and source by default) and the policy applies to each group separately.
//! The rules follow restic's, which platform teams already know: each rule keeps the
//! newest snapshot of each of its last N periods, and a snapshot kept by any rule is
//! kept.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use serde::Serialize;

use super::snapshot::{Snapshot, SnapshotId};

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    /// Keep everything this much younger than the newest snapshot of the group.
    pub within: Option<std::time::Duration>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
            && self.hourly.is_none()
            && self.daily.is_none()
            && self.weekly.is_none()
            && self.monthly.is_none()
            && self.yearly.is_none()
            && self.within.is_none()
    }
}

/// What snapshots are grouped by.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupBy {
    pub host: bool,
    pub tags: bool,
    pub source: bool,
    /// `auto`: the host counts for path backups only. An etcd snapshot's source names
    /// its cluster and an application backup's its target, whichever machine (or a
    /// CronJob's pod, with a new name every run) took it.
    pub auto: bool,
}

impl GroupBy {
    pub fn parse(s: &str) -> Result<GroupBy, String> {
        let mut g = GroupBy::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "auto" => {
                    g = GroupBy {
                        host: true,
                        tags: true,
                        source: true,
                        auto: true,
                    }
                }
                "host" => g.host = true,
                "tags" => g.tags = true,
                "source" | "paths" => g.source = true,
                other => {
                    return Err(format!(
                        "unknown --group-by field `{other}`: use auto, or host, tags, source"
                    ))
                }
            }
        }
        Ok(g)
    }

    pub fn key(&self, s: &Snapshot) -> String {
        let mut parts = vec![];
        if self.host && !(self.auto && s.source.kind != "path") {
            parts.push(format!("host={}", s.host));
        }
        if self.tags {
            let mut t = s.tags.clone();
            t.sort();
            parts.push(format!("tags={}", t.join(",")));
        }
        if self.source {
            parts.push(format!("{}={}", s.source.kind, s.source.paths.join(",")));
        }
        parts.join(" ")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub id: String,
    pub time: jiff::Timestamp,
    pub group: String,
    pub keep: bool,
    pub reasons: Vec<String>,
}

/// The snapshot a record depends on (`source.meta.depends_on`): an etcd delta
/// segment is of no use without the full snapshot its chain starts from.
pub fn depends_on(s: &Snapshot) -> Option<SnapshotId> {
    s.source.meta.get("depends_on")?.as_str()?.parse().ok()
}

/// Applies the policy to the records that stand alone, then settles the ones that
/// depend on another: such a record is kept while what it depends on is kept (or
/// was not up for decision, being filtered out), and goes once that is gone.
/// `exists` tells whether a snapshot is in the repository at all.
pub fn decide_all(
    policy: &Policy,
    group_by: GroupBy,
    snapshots: &[(SnapshotId, Snapshot)],
    exists: impl Fn(&SnapshotId) -> bool,
    tz: &TimeZone,
) -> Vec<Decision> {
    let (dependents, standalone): (Vec<_>, Vec<_>) = snapshots
        .iter()
        .cloned()
        .partition(|(_, s)| depends_on(s).is_some());
    let mut out = decide(policy, group_by, &standalone, tz);
    let decided: std::collections::HashMap<String, bool> =
        out.iter().map(|d| (d.id.clone(), d.keep)).collect();
    for (id, s) in &dependents {
        let base = depends_on(s).expect("partitioned on it");
        let short = &base.to_string()[..8];
        let (keep, reason) = match decided.get(&base.to_string()) {
            Some(true) => (true, format!("depends-on {short}")),
            Some(false) => (false, format!("{short} removed")),
            None if exists(&base) => (true, format!("depends-on {short}")),
            None => (false, format!("{short} gone")),
        };
        out.push(Decision {
            id: id.to_string(),
            time: s.time,
            group: group_by.key(s),
            keep,
            reasons: if keep { vec![reason] } else { vec![] },
        });
    }
    out
}

/// Applies the policy to every group; decisions come newest first within each group.
pub fn decide(
    policy: &Policy,
    group_by: GroupBy,
    snapshots: &[(SnapshotId, Snapshot)],
    tz: &TimeZone,
) -> Vec<Decision> {
    let mut groups: BTreeMap<String, Vec<&(SnapshotId, Snapshot)>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(group_by.key(&s.1)).or_default().push(s);
    }
    let mut out = Vec::new();
    for (group, mut snaps) in groups {
        snaps.sort_by(|a, b| b.1.time.cmp(&a.1.time));
        out.extend(decide_group(policy, &group, &snaps, tz));
    }
    out
}

fn decide_group(
    policy: &Policy,
    group: &str,
    snaps: &[&(SnapshotId, Snapshot)],
    tz: &TimeZone,
) -> Vec<Decision> {
    type Bucket = fn(&jiff::Zoned) -> String;
    let rules: [(&str, Option<u32>, Bucket); 5] = [
        ("hourly", policy.hourly, |z| {
            z.strftime("%Y-%m-%d %H").to_string()
        }),
        ("daily", policy.daily, |z| {
            z.strftime("%Y-%m-%d").to_string()
        }),
        ("weekly", policy.weekly, |z| {
            z.strftime("%G-W%V").to_string()
        }),
        ("monthly", policy.monthly, |z| {
            z.strftime("%Y-%m").to_string()
        }),
        ("yearly", policy.yearly, |z| z.strftime("%Y").to_string()),
    ];
    let mut left: Vec<Option<u32>> = rules.iter().map(|r| r.1).collect();
    let mut last_bucket: Vec<Option<String>> = vec![None; rules.len()];
    let newest = snaps.first().map(|s| s.1.time);
    let mut out = Vec::new();
    for (i, (id, s)) in snaps.iter().map(|x| (&x.0, &x.1)).enumerate() {
        let mut reasons = vec![];
        if policy.last.is_some_and(|n| (i as u32) < n) {
            reasons.push("last".to_string());
        }
        if let (Some(within), Some(newest)) = (policy.within, newest) {
            if newest.duration_since(s.time).unsigned_abs() <= within {
                reasons.push("within".to_string());
            }
        }
        let z = s.time.to_zoned(tz.clone());
        for (r, rule) in rules.iter().enumerate() {
            let Some(n) = left[r] else { continue };
            if n == 0 {
                continue;
            }
            let b = (rule.2)(&z);
            if last_bucket[r].as_deref() != Some(b.as_str()) {
                last_bucket[r] = Some(b);
                left[r] = Some(n - 1);
                reasons.push(rule.0.to_string());
            }
        }
        out.push(Decision {
            id: id.to_string(),
            time: s.time,
            group: group.to_string(),
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::blob::BlobId;
    use crate::repo::snapshot::Source;

    fn snap(n: u8, time: &str, host: &str) -> (SnapshotId, Snapshot) {
        let mut s = Snapshot::new(
            Source {
                kind: "path".into(),
                paths: vec!["/d".into()],
                meta: Default::default(),
            },
            BlobId([0; 32]),
        );
        s.time = time.parse().unwrap();
        s.host = host.into();
        (SnapshotId([n; 32]), s)
    }

    fn kept(d: &[Decision]) -> Vec<String> {
        d.iter()
            .filter(|d| d.keep)
            .map(|d| d.id[..2].to_string())
            .collect()
    }

    #[test]
    fn daily_keeps_newest_of_each_day() {
        let snaps = vec![
            snap(1, "2026-01-01T08:00:00Z", "a"),
            snap(2, "2026-01-01T20:00:00Z", "a"),
            snap(3, "2026-01-02T08:00:00Z", "a"),
            snap(4, "2026-01-03T08:00:00Z", "a"),
        ];
        let p = Policy {
            daily: Some(2),
            ..Default::default()
        };
        let d = decide(&p, GroupBy::parse("host").unwrap(), &snaps, &TimeZone::UTC);
        assert_eq!(kept(&d), vec!["04", "03"]);
        let p = Policy {
            daily: Some(3),
            ..Default::default()
        };
        let d = decide(&p, GroupBy::parse("host").unwrap(), &snaps, &TimeZone::UTC);
        assert_eq!(kept(&d), vec!["04", "03", "02"]);
    }

    #[test]
    fn last_within_and_groups() {
        let snaps = vec![
            snap(1, "2026-01-01T00:00:00Z", "a"),
            snap(2, "2026-01-05T00:00:00Z", "a"),
            snap(3, "2026-01-06T00:00:00Z", "a"),
            snap(4, "2026-01-01T00:00:00Z", "b"),
        ];
        let p = Policy {
            last: Some(1),
            within: Some(std::time::Duration::from_secs(2 * 86400)),
            ..Default::default()
        };
        let d = decide(&p, GroupBy::parse("host").unwrap(), &snaps, &TimeZone::UTC);
        assert_eq!(kept(&d), vec!["03", "02", "04"]);
        let r = &d.iter().find(|d| d.id.starts_with("03")).unwrap().reasons;
        assert_eq!(r, &vec!["last".to_string(), "within".to_string()]);
        assert!(GroupBy::parse("host,colour").is_err());
    }

    #[test]
    fn auto_grouping_ignores_the_host_of_cluster_and_target_backups() {
        let mut snaps = vec![
            snap(1, "2026-01-01T00:00:00Z", "cronjob-pod-abc"),
            snap(2, "2026-01-02T00:00:00Z", "cronjob-pod-def"),
        ];
        for (_, s) in &mut snaps {
            s.source.kind = "etcd".into();
            s.source.paths = vec!["etcd cluster 1".into()];
        }
        let p = Policy {
            last: Some(1),
            ..Default::default()
        };
        let auto = GroupBy::parse("auto").unwrap();
        assert_eq!(kept(&decide(&p, auto, &snaps, &TimeZone::UTC)), vec!["02"]);
        // By host, each pod is a group of its own and nothing is ever forgotten.
        let by_host = GroupBy::parse("host,tags,source").unwrap();
        assert_eq!(kept(&decide(&p, by_host, &snaps, &TimeZone::UTC)).len(), 2);
        // Path backups still group by host.
        let paths = vec![
            snap(3, "2026-01-01T00:00:00Z", "a"),
            snap(4, "2026-01-02T00:00:00Z", "b"),
        ];
        assert_eq!(kept(&decide(&p, auto, &paths, &TimeZone::UTC)).len(), 2);
    }

    #[test]
    fn weekly_monthly_yearly() {
        let snaps = vec![
            snap(1, "2025-06-01T00:00:00Z", "a"),
            snap(2, "2026-01-05T00:00:00Z", "a"),
            snap(3, "2026-01-06T00:00:00Z", "a"),
            snap(4, "2026-02-20T00:00:00Z", "a"),
        ];
        let g = GroupBy::parse("host").unwrap();
        let d = decide(
            &Policy {
                weekly: Some(2),
                ..Default::default()
            },
            g,
            &snaps,
            &TimeZone::UTC,
        );
        assert_eq!(kept(&d), vec!["04", "03"]);
        let d = decide(
            &Policy {
                monthly: Some(5),
                ..Default::default()
            },
            g,
            &snaps,
            &TimeZone::UTC,
        );
        assert_eq!(kept(&d), vec!["04", "03", "01"]);
        let d = decide(
            &Policy {
                yearly: Some(5),
                ..Default::default()
            },
            g,
            &snaps,
            &TimeZone::UTC,
        );
        assert_eq!(kept(&d), vec!["04", "01"]);
    }

    #[test]
    fn dependents_follow_what_they_depend_on() {
        let mut snaps = vec![
            snap(1, "2026-01-01T00:00:00Z", "h"),
            snap(2, "2026-01-02T00:00:00Z", "h"),
        ];
        for (n, base) in [(3u8, 1u8), (4, 2), (5, 9), (6, 8)] {
            let (id, mut s) = snap(n, "2026-01-02T01:00:00Z", "h");
            s.source.kind = "etcd-delta".into();
            s.source.meta.insert(
                "depends_on".into(),
                serde_json::json!(SnapshotId([base; 32]).to_string()),
            );
            snaps.push((id, s));
        }
        let policy = Policy {
            last: Some(1),
            ..Default::default()
        };
        // 9 exists but was filtered out; 8 is gone.
        let exists = |id: &SnapshotId| id.0[0] != 8;
        let d = decide_all(
            &policy,
            GroupBy::parse("host").unwrap(),
            &snaps,
            exists,
            &TimeZone::UTC,
        );
        let mut k = kept(&d);
        k.sort();
        assert_eq!(k, vec!["02", "04", "05"]);
    }
}
