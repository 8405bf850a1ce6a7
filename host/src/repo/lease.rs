//! The lease that makes destructive operations exclusive. Backups take no lock; the
//! operations that delete or rewrite what others read (prune, forget, repair-index)
//! hold a lease, so that two of them never run at once (two prunes at once can write
//! an index listing packs the other deleted).
//!
//! A lease is an object `lease/<nonce>`, sealed, naming its holder and when it
//! expires. Taking it is *claim, then verify*: a process that sees no live lease
//! writes its own, lists the leases again, and holds the lease only if no other live
//! one is there; otherwise it removes its own and gives way. Of two processes that try
//! at once, at most one holds it (when both see each other, both give way and the
//! command says so). This needs the store to list what was just written, which every
//! store ballast supports gives and which is checked before the first write of each
//! process ([`Store::verify_consistency`]); it does not need conditional writes, which
//! some S3-compatible servers (Garage among them) silently ignore.
//!
//! The holder renews its lease every [`RENEW`] by rewriting its own object, and checks
//! before every destructive step that its lease is good for at least [`MARGIN`] more
//! by its own clock and that its object is still there. Another process treats a lease
//! as stale only after its expiry by *its* clock, so the two agree as long as their
//! clocks differ by less than `MARGIN`. A holder that cannot renew (the store is
//! unreachable, the process was stopped) stops before its lease runs out;
//! `ballast repo unlock` ends a lease by force by removing it, which its holder notices
//! at its next renewal (up to [`RENEW`] later; a renewal that raced the removal and
//! wrote the lease back finds the new holder's and gives way). There is no fencing: a
//! holder paused between its last check and a deletion, past its lease, performs that
//! one deletion when it wakes; the margin makes that need a pause of a minute or more
//! at exactly that point.
//!
//! [`Store::verify_consistency`]: crate::store::Store::verify_consistency

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::crypto::{random_bytes, Sealed};
use super::{RepoError, Repository, Result};

pub const PREFIX: &str = "lease/";

/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(180);
/// How often the holder renews it.
pub const RENEW: Duration = Duration::from_secs(30);
/// How long before its expiry a holder stops trusting its lease: the clock skew
/// tolerated between the holder and a process that finds the lease stale.
pub const MARGIN: Duration = Duration::from_secs(60);

/// Who holds a lease.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub host: String,
    pub user: String,
    pub pid: u32,
}

/// The content of `lease/<nonce>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub holder: Holder,
    /// What it is held for (`prune`, `forget`, ...).
    pub operation: String,
    pub acquired: jiff::Timestamp,
    pub expires: jiff::Timestamp,
}

fn after(t: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MAX)
}

fn write(repo: &Repository, key: &str, record: &Record) -> Result<()> {
    let json = serde_json::to_vec(record).expect("a lease record serializes");
    let sealed = Bytes::from(repo.keys().seal(Sealed::Lease, &json));
    Ok(repo.store().put(key, sealed)?)
}

/// Every lease object, read. One that cannot be read stops everything but unlock.
fn read_all(repo: &Repository) -> Result<Vec<(String, Record)>> {
    let keys: Vec<String> = repo
        .store()
        .list(PREFIX)?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut out = Vec::new();
    for (key, r) in keys.iter().zip(repo.store().get_many(&keys, 4)) {
        let bytes = match r {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue, // released meanwhile
            Err(e) => return Err(e.into()),
        };
        let damaged = |detail: String| {
            RepoError::Damaged {
            what: format!("lease {key}"),
            detail: format!(
                "{detail}; if no prune, forget or repair-index is running, end it with `ballast repo unlock`"
            ),
        }
        };
        let plain = repo
            .keys()
            .open(Sealed::Lease, &bytes)
            .map_err(|_| damaged("it fails authentication".into()))?;
        let record = serde_json::from_slice(&plain).map_err(|e| damaged(e.to_string()))?;
        out.push((key.clone(), record));
    }
    Ok(out)
}

/// Writes our lease, then looks again: `None` if no other live lease is there (ours
/// holds; expired ones are removed), else the other one, after removing ours.
fn claim(repo: &Repository, key: &str, record: &Record) -> Result<Option<(String, Record)>> {
    write(repo, key, record)?;
    let now = jiff::Timestamp::now();
    let all = read_all(repo)?;
    if let Some(other) = all.iter().find(|(k, r)| k != key && r.expires > now) {
        repo.store().delete(key)?;
        return Ok(Some(other.clone()));
    }
    for (k, r) in all.iter().filter(|(k, _)| k != key) {
        tracing::warn!(
            "removing the lease of {} ({}@{}, pid {}), which expired at {}",
            r.operation,
            r.holder.user,
            r.holder.host,
            r.holder.pid,
            r.expires
        );
        let _ = repo.store().delete(k);
    }
    Ok(None)
}

/// What a running holder and its renewing thread share.
struct Shared {
    /// Until when the lease is ours, by the last renewal that was stored.
    expires: jiff::Timestamp,
    /// Why the lease is no longer ours, once it is not.
    lost: Option<String>,
}

/// A held lease; dropping it releases it.
pub struct Lease {
    repo: Repository,
    key: String,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    stop: Arc<AtomicBool>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

/// A lease someone holds.
#[derive(Debug, Clone)]
pub struct Held {
    pub key: String,
    pub record: Record,
}

/// How many times to claim when another process claims at the same moment.
const ATTEMPTS: u32 = 4;

impl Lease {
    /// Takes the lease for `operation`, or fails with [`RepoError::Locked`] naming
    /// its holder. A lease that expired (its holder died or lost the store) is taken
    /// over and removed.
    pub fn acquire(repo: &Repository, operation: &str) -> Result<Lease> {
        repo.store().verify_consistency()?;
        let holder = Holder {
            host: crate::sysinfo::hostname(),
            user: crate::sysinfo::username(),
            pid: std::process::id(),
        };
        let key = format!("{PREFIX}{}", hex::encode(random_bytes::<16>()));
        let mut contender = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                // Two claimed at once and both gave way: try again at different times.
                let jitter = u64::from(random_bytes::<1>()[0]) * 2;
                std::thread::sleep(Duration::from_millis(50 + jitter));
            }
            let now = jiff::Timestamp::now();
            let all = read_all(repo)?;
            if let Some((k, r)) = all.iter().find(|(_, r)| r.expires > now) {
                return Err(locked(repo, k, r));
            }
            let record = Record {
                holder: holder.clone(),
                operation: operation.to_string(),
                acquired: now,
                expires: after(now, TTL),
            };
            match claim(repo, &key, &record)? {
                None => return Ok(Lease::start(repo, key, record)),
                Some(other) => contender = Some(other),
            }
        }
        let (k, r) = contender.expect("a contender made us give way");
        Err(locked(repo, &k, &r))
    }

    fn start(repo: &Repository, key: String, record: Record) -> Lease {
        let shared = Arc::new((
            Mutex::new(Shared {
                expires: record.expires,
                lost: None,
            }),
            Condvar::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (repo, key, shared, stop) =
                (repo.clone(), key.clone(), shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("ballast-lease".into())
                .spawn(move || renew_loop(&repo, &key, record, &shared, &stop))
                .expect("spawning the lease thread")
        };
        Lease {
            repo: repo.clone(),
            key,
            shared,
            stop,
            renewer: Some(renewer),
        }
    }

    /// Whether the lease is still ours for long enough to do one more destructive
    /// step; call it before each.
    pub fn check(&self) -> Result<()> {
        let s = self.shared.0.lock().unwrap();
        if let Some(why) = &s.lost {
            return Err(RepoError::LeaseLost(why.clone()));
        }
        if after(jiff::Timestamp::now(), MARGIN) >= s.expires {
            return Err(RepoError::LeaseLost(format!(
                "it could not be renewed and runs out at {} (is the repository reachable?)",
                s.expires
            )));
        }
        Ok(())
    }

    /// The lease's object name (for tests and messages).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Ends the lease so the next operation can start at once.
    pub fn release(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        let Some(renewer) = self.renewer.take() else {
            return Ok(());
        };
        self.stop.store(true, Ordering::SeqCst);
        self.shared.1.notify_all();
        let _ = renewer.join();
        Ok(self.repo.store().delete(&self.key)?)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!(
                "could not release the lease (it expires by itself within {}): {e}",
                humantime::format_duration(TTL)
            );
        }
    }
}

fn renew_loop(
    repo: &Repository,
    key: &str,
    mut record: Record,
    shared: &(Mutex<Shared>, Condvar),
    stop: &AtomicBool,
) {
    let (lock, wake) = shared;
    loop {
        {
            let guard = lock.lock().unwrap();
            let (guard, _) = wake
                .wait_timeout_while(guard, RENEW, |_| !stop.load(Ordering::SeqCst))
                .unwrap();
            if stop.load(Ordering::SeqCst) || guard.lost.is_some() {
                return;
            }
        }
        match repo.store().head(key) {
            Ok(Some(_)) => {}
            Ok(None) => {
                lock.lock().unwrap().lost = Some(
                    "its object was removed (by `ballast repo unlock`, or by a process that found it expired)"
                        .into(),
                );
                return;
            }
            Err(e) => {
                tracing::warn!("renewing the lease: {e}");
                continue;
            }
        }
        record.expires = after(jiff::Timestamp::now(), TTL);
        if let Err(e) = write(repo, key, &record) {
            tracing::warn!("renewing the lease: {e}");
            continue;
        }
        // Between the look and the write, `repo unlock` or a process that found the
        // lease expired may have removed it and another may have taken it: the write
        // then brought back a lease that is no longer ours.
        match still_sole(repo, key) {
            Ok(None) => lock.lock().unwrap().expires = record.expires,
            Ok(Some(lost)) => {
                lock.lock().unwrap().lost = Some(lost);
                return;
            }
            Err(e) => tracing::warn!("renewing the lease: {e}"),
        }
    }
}

/// After a renewal: `None` if no other live lease is there; otherwise why ours is
/// lost, after removing the object the renewal wrote back.
fn still_sole(repo: &Repository, key: &str) -> Result<Option<String>> {
    let now = jiff::Timestamp::now();
    let all = read_all(repo)?;
    let Some((_, other)) = all.iter().find(|(k, r)| k != key && r.expires > now) else {
        return Ok(None);
    };
    repo.store().delete(key)?;
    Ok(Some(format!(
        "it was removed and {}@{} (pid {}) took the lease for {}",
        other.holder.user, other.holder.host, other.holder.pid, other.operation
    )))
}

fn locked(repo: &Repository, key: &str, r: &Record) -> RepoError {
    RepoError::Locked {
        location: repo.store().location().to_string(),
        operation: r.operation.clone(),
        holder: format!("{}@{} (pid {})", r.holder.user, r.holder.host, r.holder.pid),
        since: r.acquired.to_string(),
        expires: r.expires.to_string(),
        key: key.to_string(),
    }
}

/// The live leases (for `repo unlock` and status).
pub fn current(repo: &Repository) -> Result<Vec<Held>> {
    let now = jiff::Timestamp::now();
    Ok(read_all(repo)?
        .into_iter()
        .filter(|(_, r)| r.expires > now)
        .map(|(key, record)| Held { key, record })
        .collect())
}

/// Ends every lease by removing it, damaged ones included; a holder still running
/// notices at its next renewal and stops before its next destructive step. Returns the
/// live leases that were ended.
pub fn unlock(repo: &Repository) -> Result<Vec<Held>> {
    let live = current(repo).unwrap_or_default();
    for o in repo.store().list(PREFIX)? {
        repo.store().delete(&o.key)?;
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(repo: &Repository) -> Vec<String> {
        repo.store()
            .list(PREFIX)
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    #[test]
    fn one_holder_at_a_time_and_a_released_lease_is_free_again() {
        let repo = Repository::in_memory_for_tests();
        let first = Lease::acquire(&repo, "prune").unwrap();
        first.check().unwrap();
        let e = Lease::acquire(&repo, "prune").err().expect("held");
        assert!(
            matches!(e, RepoError::Locked { ref operation, .. } if operation == "prune"),
            "{e}"
        );
        // The refused claim left nothing behind.
        assert_eq!(keys(&repo), vec![first.key().to_string()]);
        first.release().unwrap();
        assert!(keys(&repo).is_empty());
        let second = Lease::acquire(&repo, "forget").unwrap();
        assert_eq!(current(&repo).unwrap()[0].record.operation, "forget");
        drop(second);
        assert!(keys(&repo).is_empty());
    }

    #[test]
    fn a_claim_that_meets_another_gives_way() {
        let repo = Repository::in_memory_for_tests();
        let now = jiff::Timestamp::now();
        let record = |host: &str| Record {
            holder: Holder {
                host: host.into(),
                user: "ops".into(),
                pid: 1,
            },
            operation: "prune".into(),
            acquired: now,
            expires: after(now, TTL),
        };
        // Another process's claim landed between our look and our write: after
        // writing ours we see a live lease that is not ours, and give way.
        write(&repo, "lease/other", &record("elsewhere")).unwrap();
        let (key, other) = claim(&repo, "lease/ours", &record("here"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (key.as_str(), other.holder.host.as_str()),
            ("lease/other", "elsewhere")
        );
        assert_eq!(keys(&repo), vec!["lease/other".to_string()]);
        // Through acquire: refused, naming the holder, leaving nothing behind.
        let e = Lease::acquire(&repo, "prune").err().expect("held");
        assert!(e.to_string().contains("ops@elsewhere"), "{e}");
        assert_eq!(keys(&repo), vec!["lease/other".to_string()]);
        // An expired one is removed by the claim that holds.
        repo.store().delete("lease/other").unwrap();
        let mut old = record("gone");
        old.expires = now - jiff::SignedDuration::from_hours(1);
        write(&repo, "lease/old", &old).unwrap();
        assert!(claim(&repo, "lease/ours", &record("here"))
            .unwrap()
            .is_none());
        assert_eq!(keys(&repo), vec!["lease/ours".to_string()]);
    }

    #[test]
    fn an_expired_lease_is_taken_over_and_its_holder_stops() {
        let repo = Repository::in_memory_for_tests();
        let stale = Lease::acquire(&repo, "prune").unwrap();
        // The holder's renewals stopped an hour ago (a process frozen, a lost store).
        let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
        let mut record = read_all(&repo).unwrap().remove(0).1;
        record.expires = old;
        write(&repo, stale.key(), &record).unwrap();
        stale.shared.0.lock().unwrap().expires = old;
        let e = stale.check().unwrap_err();
        assert!(e.to_string().contains("could not be renewed"), "{e}");

        let taker = Lease::acquire(&repo, "prune").unwrap();
        assert_eq!(
            keys(&repo),
            vec![taker.key().to_string()],
            "the stale one is removed"
        );
        std::mem::forget(stale);
    }

    #[test]
    fn unlock_ends_a_lease_and_its_holder_finds_out() {
        let repo = Repository::in_memory_for_tests();
        let held = Lease::acquire(&repo, "repair-index").unwrap();
        let ended = unlock(&repo).unwrap();
        assert_eq!(ended[0].record.operation, "repair-index");
        assert!(current(&repo).unwrap().is_empty());
        assert_eq!(repo.store().head(held.key()).unwrap(), None);
        // What the renewing thread concludes from the missing object.
        held.shared.0.lock().unwrap().lost = Some("removed".into());
        assert!(matches!(held.check(), Err(RepoError::LeaseLost(_))));
        Lease::acquire(&repo, "prune").unwrap();
    }

    #[test]
    fn a_renewal_that_brings_back_a_lease_taken_by_another_gives_way() {
        let repo = Repository::in_memory_for_tests();
        let held = Lease::acquire(&repo, "prune").unwrap();
        // Unlocked, and taken by another, between the renewal's look and its write
        // (which brought ours back).
        let mut theirs = read_all(&repo).unwrap().remove(0).1;
        theirs.holder.pid += 1;
        write(&repo, "lease/theirs", &theirs).unwrap();
        let lost = still_sole(&repo, held.key()).unwrap().expect("lost");
        assert!(lost.contains("took the lease for prune"), "{lost}");
        assert_eq!(keys(&repo), vec!["lease/theirs".to_string()]);
        assert_eq!(still_sole(&repo, "lease/theirs").unwrap(), None);
        std::mem::forget(held);
    }

    #[test]
    fn a_damaged_lease_blocks_until_unlocked() {
        let repo = Repository::in_memory_for_tests();
        repo.store()
            .put("lease/junk", Bytes::from_static(b"not a lease"))
            .unwrap();
        let e = Lease::acquire(&repo, "prune").err().unwrap();
        assert!(e.to_string().contains("ballast repo unlock"), "{e}");
        unlock(&repo).unwrap();
        Lease::acquire(&repo, "prune").unwrap();
    }
}
