//! Point in time: which full snapshot and which delta segments lead to a revision or
//! a time, the changes between them, and what changed between two revisions.

use std::collections::BTreeMap;

use serde::Serialize;

use super::bbolt::BoltError;
use super::connect::EtcdError;
use super::delta::{Full, Record, Records, SegmentInfo};
use super::mvcc::{Change, KeyValue};
use crate::repo::snapshot::{self, Snapshot, SnapshotId};
use crate::repo::stream::StreamReader;
use crate::repo::Repository;

/// A point to restore to.
#[derive(Debug, Clone, Copy)]
pub enum Point {
    Revision(i64),
    Time(jiff::Timestamp),
}

/// A delta segment and its record.
#[derive(Debug, Clone)]
pub struct Segment {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    pub info: SegmentInfo,
}

/// Everything the repository holds of one cluster's history.
pub struct Timeline {
    pub cluster_id: String,
    /// Full snapshots, oldest revision first.
    pub fulls: Vec<Full>,
    /// Delta segments, by start revision.
    pub segments: Vec<Segment>,
}

/// Segments to read one after the other, and the revision up to which their first
/// changes are already covered (segments of two captures can overlap).
pub struct Run<'a> {
    pub segments: Vec<&'a Segment>,
    pub skip_through: i64,
}

/// Where a point-in-time restore starts and what it replays.
pub struct Route<'a> {
    pub base: &'a Full,
    pub runs: Vec<Run<'a>>,
    pub revision: i64,
}

fn time_of_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

impl Timeline {
    /// The history of `cluster` (default: the cluster of the newest full snapshot).
    pub fn load(repo: &Repository, cluster: Option<&str>) -> Result<Timeline, EtcdError> {
        let all = snapshot::list(repo)?;
        let mut fulls: Vec<Full> = all.iter().filter_map(|(id, s)| Full::of(id, s)).collect();
        let cluster_id = match cluster {
            Some(c) => c.to_string(),
            None => fulls
                .iter()
                .max_by_key(|f| f.snapshot.time)
                .map(|f| f.cluster_id.clone())
                .unwrap_or_default(),
        };
        fulls.retain(|f| f.cluster_id == cluster_id);
        fulls.sort_by_key(|f| (f.revision, f.snapshot.time));
        let mut segments: Vec<Segment> = all
            .into_iter()
            .filter_map(|(id, s)| {
                let info = SegmentInfo::of(&s)?;
                (info.cluster_id == cluster_id).then_some(Segment {
                    id,
                    snapshot: s,
                    info,
                })
            })
            .collect();
        segments.sort_by_key(|s| (s.info.start_revision, s.info.end_revision));
        Ok(Timeline {
            cluster_id,
            fulls,
            segments,
        })
    }

    /// Until when the capture is known to have watched: the last record of the newest
    /// segment, or the newest full snapshot.
    pub fn covered_until_ms(&self) -> Option<i64> {
        let segments = self.segments.iter().map(|s| s.info.end_unix_ms).max();
        let fulls = self
            .fulls
            .iter()
            .map(|f| f.snapshot.time.as_millisecond())
            .max();
        segments.max(fulls)
    }

    /// The newest revision the repository holds: where a capture resumes.
    pub fn captured_through(&self) -> Option<i64> {
        let full = self.fulls.iter().map(|f| f.revision).max();
        let delta = self.segments.iter().map(|s| s.info.end_revision).max();
        full.max(delta)
    }

    /// The newest full snapshot.
    pub fn newest_full(&self) -> Option<&Full> {
        self.fulls
            .iter()
            .max_by_key(|f| (f.revision, f.snapshot.time))
    }

    /// Segments that carry the history on from `after` without a gap, as few runs as
    /// overlaps allow; returns the runs and the revision they reach.
    pub fn chain(&self, after: i64, through: i64) -> (Vec<Run<'_>>, i64) {
        let mut reached = after;
        let mut runs: Vec<Run> = vec![];
        let mut last_end: Option<i64> = None;
        while reached < through {
            // Of the segments that continue from here, the one that reaches furthest.
            let Some(next) = self
                .segments
                .iter()
                .filter(|s| s.info.start_revision <= reached + 1 && s.info.end_revision > reached)
                .max_by_key(|s| s.info.end_revision)
            else {
                break;
            };
            match runs.last_mut() {
                Some(run) if last_end == Some(next.info.start_revision - 1) => {
                    run.segments.push(next)
                }
                _ => runs.push(Run {
                    segments: vec![next],
                    skip_through: reached,
                }),
            }
            last_end = Some(next.info.end_revision);
            reached = next.info.end_revision;
        }
        (runs, reached)
    }

    /// What the repository can restore, for error messages.
    pub fn describe(&self) -> String {
        if self.fulls.is_empty() {
            return "the repository holds no etcd snapshot of this cluster".into();
        }
        let first = &self.fulls[0];
        let newest = self.newest_full().expect("not empty");
        let (_, reached) = self.chain(newest.revision, i64::MAX);
        let end = self
            .segments
            .iter()
            .filter(|s| s.info.end_revision == reached)
            .map(|s| s.info.end_unix_ms)
            .max()
            .map(time_of_ms)
            .unwrap_or_else(|| newest.snapshot.time.to_string());
        format!(
            "the repository covers cluster {} from revision {} ({}) to revision {} ({})",
            self.cluster_id, first.revision, first.snapshot.time, reached, end
        )
    }

    /// The full snapshot and the segments that lead to `point`, newest base first
    /// (the caller moves to the next one when a base holds revisions past the point,
    /// written while it streamed).
    pub fn routes(&self, repo: &Repository, point: Point) -> Result<Vec<Route<'_>>, EtcdError> {
        let not_covered = |what: String| EtcdError::Restore(format!("{what}; {}", self.describe()));
        let bases: Vec<&Full> = self
            .fulls
            .iter()
            .rev()
            .filter(|f| match point {
                Point::Revision(r) => f.revision <= r,
                Point::Time(t) => f.snapshot.time <= t,
            })
            .collect();
        if bases.is_empty() {
            return Err(not_covered(match point {
                Point::Revision(r) => format!("revision {r} is before the first snapshot"),
                Point::Time(t) => format!("{t} is before the first snapshot"),
            }));
        }
        let mut routes = vec![];
        for base in bases {
            let revision = match point {
                Point::Revision(r) => r,
                Point::Time(t) => match self.revision_at(repo, base, t)? {
                    Some(r) => r,
                    None => continue,
                },
            };
            let (runs, reached) = self.chain(base.revision, revision);
            if reached < revision {
                if routes.is_empty() {
                    return Err(not_covered(match point {
                        Point::Revision(r) => {
                            format!("revision {r} is after the last captured change")
                        }
                        Point::Time(t) => format!("{t} is after the last captured change"),
                    }));
                }
                break;
            }
            routes.push(Route {
                base,
                runs,
                revision,
            });
        }
        if routes.is_empty() {
            return Err(not_covered(format!(
                "{} is after the last captured change",
                match point {
                    Point::Revision(r) => format!("revision {r}"),
                    Point::Time(t) => t.to_string(),
                }
            )));
        }
        Ok(routes)
    }

    /// The revision the cluster was at, at time `t`, going on from `base`: the last
    /// change that had arrived by then. `None` when the captured changes end before
    /// `t`; an error when `t` falls in a gap, where the capture was not watching.
    fn revision_at(
        &self,
        repo: &Repository,
        base: &Full,
        t: jiff::Timestamp,
    ) -> Result<Option<i64>, EtcdError> {
        let ms = t.as_millisecond();
        let (runs, reached) = self.chain(base.revision, i64::MAX);
        let segments: Vec<&Segment> = runs.iter().flat_map(|r| r.segments.clone()).collect();
        // A capture that stopped cleanly stored its last marks in a segment without
        // changes: it watched, and nothing changed, until then.
        let quiet_until = self
            .segments
            .iter()
            .filter(|s| s.info.changes == 0 && s.info.start_revision == reached + 1)
            .map(|s| s.info.end_unix_ms)
            .max();
        let Some(last) = segments.last() else {
            // Only the snapshot itself: its own moment is the one point it covers.
            let covered = base.snapshot.time == t
                || quiet_until
                    .is_some_and(|q| ms >= base.snapshot.time.as_millisecond() && ms <= q);
            return Ok(covered.then_some(base.revision));
        };
        if ms > last.info.end_unix_ms {
            return Ok(quiet_until
                .is_some_and(|q| ms <= q)
                .then_some(last.info.end_revision));
        }
        let Some(at) = segments.iter().rposition(|s| s.info.start_unix_ms <= ms) else {
            return Ok(Some(base.revision));
        };
        let holding = segments[at];
        if ms >= holding.info.end_unix_ms {
            // Between two segments: covered, unless the next starts in a gap that
            // was already open at `t`.
            if let Some(since) = segments
                .get(at + 1)
                .and_then(|next| next.info.gap_since_ms)
                .filter(|&since| since <= ms)
            {
                return Err(not_watching(t, since, None));
            }
            return Ok(Some(holding.info.end_revision));
        }
        let reader = StreamReader::open(repo, &holding.snapshot, None)?;
        let mut revision = holding.info.start_revision - 1;
        let mut gap = holding.info.gap_since_ms.filter(|&since| since <= ms);
        for record in Records::new(reader) {
            match record.map_err(|e| EtcdError::Restore(e.0))? {
                Record::Mark {
                    revision: r,
                    unix_ms,
                } if unix_ms <= ms => {
                    revision = r;
                    gap = None;
                }
                Record::Mark { unix_ms, .. } => {
                    if let Some(since) = gap {
                        return Err(not_watching(t, since, Some(unix_ms)));
                    }
                    break;
                }
                Record::Gap { since_ms, .. } if since_ms <= ms => gap = Some(since_ms),
                Record::Gap { .. } => break,
                Record::Change(_) => {}
            }
        }
        if let Some(since) = gap {
            return Err(not_watching(t, since, None));
        }
        Ok(Some(revision.max(base.revision)))
    }
}

/// `t` lies in a gap of the capture: from `since` until it caught up at `until`.
fn not_watching(t: jiff::Timestamp, since: i64, until: Option<i64>) -> EtcdError {
    let until = until
        .map(|u| format!("until {}", time_of_ms(u)))
        .unwrap_or_else(|| "until it caught up again".into());
    EtcdError::Restore(format!(
        "{t} falls where the capture was not watching: from {} {until} (a broken connection \
         or a restart); the changes etcd replayed then have no times of their own. Choose a \
         time outside that gap, or a revision (--to-revision)",
        time_of_ms(since)
    ))
}

/// The stretches of time (milliseconds, merged) a point-in-time restore of `cluster`
/// can reach with `snapshots`: from each full snapshot to the last of the delta
/// segments that depend on it.
pub fn coverage(snapshots: &[(SnapshotId, Snapshot)], cluster: &str) -> Vec<(i64, i64)> {
    let mut ends: BTreeMap<SnapshotId, (i64, i64)> = BTreeMap::new();
    for (id, s) in snapshots {
        if let Some(f) = Full::of(id, s).filter(|f| f.cluster_id == cluster) {
            let t = f.snapshot.time.as_millisecond();
            ends.insert(f.id, (t, t));
        }
    }
    for (_, s) in snapshots {
        if let Some(info) = SegmentInfo::of(s).filter(|i| i.cluster_id == cluster) {
            if let Some(e) = info
                .depends_on
                .parse::<SnapshotId>()
                .ok()
                .and_then(|id| ends.get_mut(&id))
            {
                e.1 = e.1.max(info.end_unix_ms);
            }
        }
    }
    let mut spans: Vec<(i64, i64)> = ends.into_values().collect();
    spans.sort();
    let mut merged: Vec<(i64, i64)> = vec![];
    for (a, b) in spans {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

/// What `after` no longer covers of `before`, between its own first and last point:
/// holes a forget makes inside the range it keeps (the old end going is expected).
pub fn holes(before: &[(i64, i64)], after: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let (Some(first), Some(last)) = (after.first(), after.last()) else {
        return vec![];
    };
    let (lo, hi) = (first.0, last.1);
    let mut out = vec![];
    for &(a, b) in before {
        let (mut a, b) = (a.max(lo), b.min(hi));
        if a >= b {
            continue;
        }
        for &(x, y) in after {
            if y <= a || x >= b {
                continue;
            }
            if x > a {
                out.push((a, x));
            }
            a = a.max(y);
        }
        if a < b {
            out.push((a, b));
        }
    }
    out
}

/// The changes of `runs` up to `through`, in order, each run's overlap skipped.
pub fn changes<'a>(
    repo: &'a Repository,
    runs: &'a [Run<'a>],
    through: i64,
) -> impl Iterator<Item = Result<Change, BoltError>> + 'a {
    runs.iter().flat_map(move |run| {
        let snaps: Vec<&Snapshot> = run.segments.iter().map(|s| &s.snapshot).collect();
        let records: Box<dyn Iterator<Item = Result<Record, BoltError>>> =
            match StreamReader::open_chain(repo, &snaps, None) {
                Ok(r) => Box::new(Records::new(r)),
                Err(e) => Box::new(std::iter::once(Err(BoltError(e.to_string())))),
            };
        let skip = run.skip_through;
        records.filter_map(move |r| match r {
            Err(e) => Some(Err(e)),
            Ok(Record::Mark { .. } | Record::Gap { .. }) => None,
            Ok(Record::Change(c)) => match c.key_value() {
                Err(e) => Some(Err(e)),
                Ok(kv) if kv.mod_revision > skip && kv.mod_revision <= through => Some(Ok(c)),
                Ok(_) => None,
            },
        })
    })
}

/// How one key changed between two revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyChange {
    Created,
    Updated,
    Deleted,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyDiff {
    pub key: String,
    pub change: KeyChange,
    /// The revision of the last change to the key in the range.
    pub revision: i64,
    /// The value size before and after (absent where the key did not exist).
    pub size_before: Option<usize>,
    pub size_after: Option<usize>,
}

/// What changed between `from` and `to` under `prefix`, from the captured changes.
pub fn diff(
    repo: &Repository,
    timeline: &Timeline,
    from: i64,
    to: i64,
    prefix: &[u8],
) -> Result<Vec<KeyDiff>, EtcdError> {
    if to < from {
        return Err(EtcdError::Restore(format!(
            "--to {to} is before --from {from}"
        )));
    }
    let (runs, reached) = timeline.chain(from, to);
    if reached < to {
        return Err(EtcdError::Restore(format!(
            "the captured changes do not cover revisions {} to {to}; {}",
            from + 1,
            timeline.describe()
        )));
    }
    // For each key: (existed before, size before), (exists after, size after, revision).
    let mut keys: BTreeMap<Vec<u8>, ((bool, Option<usize>), (bool, Option<usize>, i64))> =
        BTreeMap::new();
    for change in changes(repo, &runs, to) {
        let change = change.map_err(|e| EtcdError::Restore(e.0))?;
        let kv: KeyValue = change.key_value().map_err(|e| EtcdError::Restore(e.0))?;
        if !kv.key.starts_with(prefix) {
            continue;
        }
        let after = if change.delete {
            (false, None, kv.mod_revision)
        } else {
            (true, Some(kv.value.len()), kv.mod_revision)
        };
        keys.entry(kv.key.clone())
            .and_modify(|e| e.1 = after)
            .or_insert_with(|| {
                let existed = change.delete || kv.version > 1;
                let size = change.previous().map(|p| p.value.len());
                ((existed, size), after)
            });
    }
    Ok(keys
        .into_iter()
        .filter_map(
            |(key, ((before, size_before), (after, size_after, revision)))| {
                let change = match (before, after) {
                    (false, true) => KeyChange::Created,
                    (true, true) => KeyChange::Updated,
                    (true, false) => KeyChange::Deleted,
                    (false, false) => return None,
                };
                Some(KeyDiff {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    change,
                    revision,
                    size_before: if before { size_before } else { None },
                    size_after,
                })
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_what_is_lost_inside_the_kept_range() {
        // Hourly fulls with their segments cover 0..300; keeping only the one at 200
        // (and the newest) leaves 200..300 and drops 0..200 before it: no hole.
        let before = vec![(0, 300)];
        assert!(holes(&before, &[(200, 300)]).is_empty());
        // Keeping the fulls at 0 and 200 without the segments of 100: 100..200 lost.
        assert_eq!(holes(&before, &[(0, 100), (200, 300)]), vec![(100, 200)]);
        assert_eq!(
            holes(&[(0, 50), (60, 300)], &[(0, 10), (200, 300)]),
            vec![(10, 50), (60, 200)]
        );
        assert!(holes(&before, &[]).is_empty());
    }
}
