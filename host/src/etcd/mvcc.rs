//! etcd's multi-version store as it lies in the bbolt file: the `key` bucket maps a
//! revision (`main` and `sub` as big-endian u64s around a `_`, plus a `t` for a
//! deletion) to a marshalled `mvccpb.KeyValue`; the `meta` bucket holds the
//! compaction marks. Knowing this much lets ballast write a database at a chosen
//! revision (a snapshot plus the changes captured after it, exactly as etcd would
//! have stored them) and bump the revision of a restored cluster, as
//! `etcdutl snapshot restore --bump-revision --mark-compacted` does.

use std::io::{Seek, Write};

use prost::Message;
use serde::{Deserialize, Serialize};

use super::bbolt::{Bolt, BoltError, Writer};

pub const KEY_BUCKET: &[u8] = b"key";
pub const META_BUCKET: &[u8] = b"meta";
/// Leases: the ID (big-endian i64) to a marshalled `leasepb.Lease`.
pub const LEASE_BUCKET: &[u8] = b"lease";

/// etcd's `leasepb.Lease`, as the `lease` bucket stores it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Lease {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}
/// The revision a compaction was asked for; etcd finishes it when it starts.
pub const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";

/// etcd's `mvccpb.KeyValue`, as the `key` bucket stores it and a watch reports it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub version: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

impl From<&etcd_client::KeyValue> for KeyValue {
    fn from(kv: &etcd_client::KeyValue) -> KeyValue {
        KeyValue {
            key: kv.key().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            value: kv.value().to_vec(),
            lease: kv.lease(),
        }
    }
}

/// The `key` bucket's key for a revision.
pub fn revision_key(main: i64, sub: i64, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(&main.to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&sub.to_be_bytes());
    if tombstone {
        k.push(b't');
    }
    k
}

/// The main revision of a `key` bucket key.
pub fn main_revision(key: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(key.get(..8)?.try_into().ok()?))
}

/// One change to a key, as a watch reports it: the key-value after the change (for a
/// deletion, the key and the deletion's revision) and, when etcd still had it, the
/// key-value before.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Change {
    pub delete: bool,
    /// A marshalled `mvccpb.KeyValue`.
    pub kv: Vec<u8>,
    pub prev: Option<Vec<u8>>,
}

impl Change {
    pub fn new(delete: bool, kv: &KeyValue, prev: Option<&KeyValue>) -> Change {
        Change {
            delete,
            kv: kv.encode_to_vec(),
            prev: prev.map(|p| p.encode_to_vec()),
        }
    }

    pub fn key_value(&self) -> Result<KeyValue, BoltError> {
        KeyValue::decode(self.kv.as_slice())
            .map_err(|e| BoltError(format!("a captured change does not decode: {e}")))
    }

    pub fn previous(&self) -> Option<KeyValue> {
        self.prev.as_deref().and_then(|p| KeyValue::decode(p).ok())
    }

    /// The entry etcd keeps in its `key` bucket for this change, `sub` being the
    /// change's place within its revision.
    pub fn stored(&self, sub: i64) -> Result<(Vec<u8>, Vec<u8>), BoltError> {
        let kv = self.key_value()?;
        Ok(if self.delete {
            let tomb = KeyValue {
                key: kv.key,
                ..Default::default()
            };
            (
                revision_key(kv.mod_revision, sub, true),
                tomb.encode_to_vec(),
            )
        } else {
            (revision_key(kv.mod_revision, sub, false), self.kv.clone())
        })
    }
}

/// What to change while copying a database.
pub struct Edits<'a> {
    /// Changes after the database's revision, in revision order.
    pub changes: &'a mut dyn Iterator<Item = Result<Change, BoltError>>,
    /// Add this much to the latest revision, and schedule a compaction at the result,
    /// so that watchers of the old revisions are told to re-list.
    pub bump_revision: Option<i64>,
    /// Replayed keys can be bound to leases granted after the snapshot, which the
    /// snapshot's `lease` bucket does not know (leases are not keys: a watch does not
    /// see them). etcd would keep such keys for ever (Events, the API servers'
    /// `/registry/masterleases/`); each such lease is re-created with this TTL in
    /// seconds, so its keys go when it runs out, as they would have.
    pub orphan_lease_ttl: i64,
}

/// What a rewritten database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub revision: i64,
    pub changes_applied: u64,
    /// Leases re-created for replayed keys (see [`Edits::orphan_lease_ttl`]).
    pub leases_recreated: u64,
}

/// Copies `src` into a fresh bbolt file, applying `edits` to the `key` and `meta`
/// buckets; every other bucket is copied as it is.
pub fn rewrite<W: Write + Seek>(
    src: &Bolt,
    out: W,
    edits: Edits,
) -> Result<(W, Rewritten), BoltError> {
    let io = |e: std::io::Error| BoltError(format!("writing the database: {e}"));
    let mut w = Writer::create(out).map_err(io)?;
    let mut revision = 0i64;
    let mut applied = 0u64;
    let mut buckets = src.buckets()?;
    // The `lease` bucket is written after `key`, with the leases replayed keys need.
    if !buckets.contains(&LEASE_BUCKET) {
        let at = buckets.partition_point(|b| *b < LEASE_BUCKET);
        buckets.insert(at, LEASE_BUCKET);
    }
    let mut leases_needed: std::collections::BTreeSet<i64> = Default::default();
    let mut recreated = 0u64;
    // The `key` bucket comes before `meta`, so the compaction mark can name the
    // final revision.
    for name in &buckets {
        let mut b = w.bucket(name).map_err(io)?;
        let mut failed = None;
        let mut put = |k: &[u8], v: &[u8]| {
            if failed.is_none() {
                failed = b.put(k, v).err();
            }
        };
        if *name == KEY_BUCKET {
            src.for_each(name, &mut |k, v| {
                revision = main_revision(k).unwrap_or(revision);
                put(k, v);
            })?;
            let base = revision;
            let (mut last_main, mut sub) = (base, 0i64);
            for change in &mut *edits.changes {
                let change = change?;
                let rev = change.key_value()?.mod_revision;
                if rev <= base {
                    // Captured while the snapshot was taken: already in it.
                    continue;
                }
                if rev < last_main {
                    return Err(BoltError(format!(
                        "captured changes out of order: revision {rev} after {last_main}"
                    )));
                }
                sub = if rev == last_main { sub + 1 } else { 0 };
                last_main = rev;
                if !change.delete {
                    let lease = change.key_value()?.lease;
                    if lease != 0 {
                        leases_needed.insert(lease);
                    }
                }
                let (k, v) = change.stored(sub)?;
                put(&k, &v);
                applied += 1;
            }
            revision = last_main;
            if let Some(n) = edits.bump_revision {
                revision += n;
                put(&revision_key(revision, 0, false), &[]);
            }
        } else if *name == META_BUCKET && edits.bump_revision.is_some() {
            let mark = revision_key(revision, 0, false);
            let mut marked = false;
            src.for_each(name, &mut |k, v| {
                if !marked && k >= SCHEDULED_COMPACT {
                    put(SCHEDULED_COMPACT, &mark);
                    marked = true;
                    if k == SCHEDULED_COMPACT {
                        return;
                    }
                }
                put(k, v);
            })?;
            if !marked {
                put(SCHEDULED_COMPACT, &mark);
            }
        } else if *name == LEASE_BUCKET {
            // The snapshot's leases, and a new one for each lease replayed keys name
            // that it does not know, in key order.
            let mut known = std::collections::BTreeMap::new();
            if src.buckets()?.contains(&LEASE_BUCKET) {
                src.for_each(name, &mut |k, v| {
                    known.insert(k.to_vec(), v.to_vec());
                })?;
            }
            for id in &leases_needed {
                let k = id.to_be_bytes().to_vec();
                if !known.contains_key(&k) {
                    let lease = Lease {
                        id: *id,
                        ttl: edits.orphan_lease_ttl,
                        remaining_ttl: 0,
                    };
                    known.insert(k, lease.encode_to_vec());
                    recreated += 1;
                }
            }
            for (k, v) in &known {
                put(k, v);
            }
        } else {
            src.for_each(name, &mut |k, v| put(k, v))?;
        }
        if let Some(e) = failed {
            return Err(io(e));
        }
        b.finish().map_err(io)?;
    }
    if !buckets.contains(&KEY_BUCKET) {
        return Err(BoltError(
            "the database has no `key` bucket: it is not etcd's".into(),
        ));
    }
    let out = w.finish().map_err(io)?;
    Ok((
        out,
        Rewritten {
            revision,
            changes_applied: applied,
            leases_recreated: recreated,
        },
    ))
}

/// The latest revision in a database: that of the last entry of its `key` bucket.
pub fn latest_revision(src: &Bolt) -> Result<i64, BoltError> {
    let mut revision = 0;
    src.for_each(KEY_BUCKET, &mut |k, _| {
        revision = main_revision(k).unwrap_or(revision)
    })?;
    Ok(revision)
}

/// The user key in a `key` bucket value: field 1 of the `KeyValue`, which etcd
/// writes first, read without decoding (and copying) the value after it.
fn user_key(v: &[u8]) -> Option<&[u8]> {
    if v.first() != Some(&0x0a) {
        return None;
    }
    let (mut len, mut shift, mut i) = (0usize, 0u32, 1usize);
    loop {
        let b = *v.get(i)?;
        len |= ((b & 0x7f) as usize) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 56 {
            return None;
        }
    }
    v.get(i..i.checked_add(len)?)
}

/// The latest revision of a database and the number of keys that exist at it (what
/// `etcdctl get "" --prefix --count-only` says once it runs), in one pass.
pub fn summarize(src: &Bolt) -> Result<(i64, u64), BoltError> {
    let mut alive: hashbrown::HashMap<Vec<u8>, bool> = hashbrown::HashMap::new();
    let mut revision = 0;
    let mut bad = None;
    src.for_each(KEY_BUCKET, &mut |k, v| {
        revision = main_revision(k).unwrap_or(revision);
        let live = k.len() != 18;
        let decoded;
        let key = match user_key(v) {
            Some(key) => key,
            None if v.is_empty() => return, // a revision bump's marker
            None => match KeyValue::decode(v) {
                Ok(kv) => {
                    decoded = kv.key;
                    &decoded
                }
                Err(e) => {
                    bad = Some(e);
                    return;
                }
            },
        };
        if key.is_empty() {
            return;
        }
        match alive.get_mut(key) {
            Some(state) => *state = live,
            None => {
                alive.insert(key.to_vec(), live);
            }
        }
    })?;
    if let Some(e) = bad {
        return Err(BoltError(format!(
            "a value in the `key` bucket does not decode: {e}"
        )));
    }
    Ok((revision, alive.values().filter(|a| **a).count() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, rev: i64, version: i64, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            create_revision: rev - version + 1,
            mod_revision: rev,
            version,
            value: value.into(),
            lease: 0,
        }
    }

    fn db(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut w = Writer::create(std::io::Cursor::new(vec![])).unwrap();
        let mut b = w.bucket(KEY_BUCKET).unwrap();
        for (k, v) in entries {
            b.put(k, v).unwrap();
        }
        b.finish().unwrap();
        let mut m = w.bucket(META_BUCKET).unwrap();
        m.put(b"consistent_index", &7u64.to_be_bytes()).unwrap();
        m.finish().unwrap();
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn changes_land_where_etcd_puts_them() {
        let base = db(&[
            (
                revision_key(2, 0, false),
                kv("a", 2, 1, "1").encode_to_vec(),
            ),
            (
                revision_key(3, 0, false),
                kv("b", 3, 1, "1").encode_to_vec(),
            ),
        ]);
        let src = Bolt::open(&base).unwrap();
        // One transaction at revision 4 (two puts), a deletion at 5.
        let changes = vec![
            Change::new(false, &kv("a", 4, 2, "2"), None),
            Change::new(false, &kv("c", 4, 1, "1"), None),
            Change::new(
                true,
                &KeyValue {
                    key: "b".into(),
                    mod_revision: 5,
                    ..Default::default()
                },
                None,
            ),
        ];
        let mut it = changes.into_iter().map(Ok);
        let (out, done) = rewrite(
            &src,
            std::io::Cursor::new(vec![]),
            Edits {
                changes: &mut it,
                bump_revision: None,
                orphan_lease_ttl: 60,
            },
        )
        .unwrap();
        assert_eq!(
            done,
            Rewritten {
                revision: 5,
                changes_applied: 3,
                leases_recreated: 0,
            }
        );
        let file = out.into_inner();
        let bolt = Bolt::open(&file).unwrap();
        let mut keys = vec![];
        bolt.for_each(KEY_BUCKET, &mut |k, _| keys.push(k.to_vec()))
            .unwrap();
        assert_eq!(
            keys,
            vec![
                revision_key(2, 0, false),
                revision_key(3, 0, false),
                revision_key(4, 0, false),
                revision_key(4, 1, false),
                revision_key(5, 0, true),
            ]
        );
        assert_eq!(summarize(&bolt).unwrap(), (5, 2));
    }

    #[test]
    fn bumping_adds_a_revision_and_schedules_a_compaction() {
        let base = db(&[(
            revision_key(9, 0, false),
            kv("a", 9, 1, "1").encode_to_vec(),
        )]);
        let src = Bolt::open(&base).unwrap();
        let (out, done) = rewrite(
            &src,
            std::io::Cursor::new(vec![]),
            Edits {
                changes: &mut std::iter::empty(),
                bump_revision: Some(1000),
                orphan_lease_ttl: 60,
            },
        )
        .unwrap();
        assert_eq!(done.revision, 1009);
        let file = out.into_inner();
        let bolt = Bolt::open(&file).unwrap();
        let mut meta = vec![];
        bolt.for_each(META_BUCKET, &mut |k, v| meta.push((k.to_vec(), v.to_vec())))
            .unwrap();
        assert_eq!(meta[0].0, b"consistent_index");
        assert_eq!(
            meta[1],
            (SCHEDULED_COMPACT.to_vec(), revision_key(1009, 0, false))
        );
        assert_eq!(summarize(&bolt).unwrap(), (1009, 1));
    }

    #[test]
    fn changes_already_in_the_database_are_skipped_and_disorder_refused() {
        let base = db(&[(
            revision_key(9, 0, false),
            kv("a", 9, 1, "1").encode_to_vec(),
        )]);
        let src = Bolt::open(&base).unwrap();
        let mut it = vec![
            Ok(Change::new(false, &kv("a", 9, 1, "1"), None)),
            Ok(Change::new(false, &kv("a", 10, 2, "2"), None)),
        ]
        .into_iter();
        let (_, done) = rewrite(
            &src,
            std::io::Cursor::new(vec![]),
            Edits {
                changes: &mut it,
                bump_revision: None,
                orphan_lease_ttl: 60,
            },
        )
        .unwrap();
        assert_eq!(
            done,
            Rewritten {
                revision: 10,
                changes_applied: 1,
                leases_recreated: 0,
            }
        );
        let mut it = vec![
            Ok(Change::new(false, &kv("a", 11, 2, "x"), None)),
            Ok(Change::new(false, &kv("b", 10, 1, "y"), None)),
        ]
        .into_iter();
        let e = rewrite(
            &src,
            std::io::Cursor::new(vec![]),
            Edits {
                changes: &mut it,
                bump_revision: None,
                orphan_lease_ttl: 60,
            },
        )
        .unwrap_err();
        assert!(e.0.contains("out of order"), "{e}");
    }
}
