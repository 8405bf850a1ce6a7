//! The object store: every version of every object, under one revision counter, as
//! etcd keeps them for the real API server. A list can be served at any revision
//! since the last compaction; watches replay the changes since a revision.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

/// The key of an object within its storage: `namespace/name`, or `name` for a
/// cluster-scoped object. Ordered as bytes, as etcd orders `/registry/...` keys.
pub type Key = String;

pub fn key(namespace: Option<&str>, name: &str) -> Key {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// One change, as a watch reports it.
#[derive(Debug, Clone)]
pub struct Event {
    pub revision: u64,
    pub storage: String,
    pub kind: EventKind,
    pub object: Arc<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// The versions of one object, oldest first; `None` is a deletion.
type Versions = Vec<(u64, Option<Arc<Value>>)>;

pub struct Store {
    revision: u64,
    compacted: u64,
    objects: HashMap<String, BTreeMap<Key, Versions>>,
    log: VecDeque<Event>,
    events: broadcast::Sender<Event>,
}

/// Why a read at a revision cannot be served.
#[derive(Debug, PartialEq)]
pub enum ReadError {
    /// The revision was compacted away (410 Gone).
    Compacted { requested: u64, compacted: u64 },
    /// The revision is in the future.
    TooNew { requested: u64, current: u64 },
}

impl Default for Store {
    fn default() -> Store {
        Store {
            revision: 1,
            compacted: 0,
            objects: HashMap::new(),
            log: VecDeque::new(),
            events: broadcast::channel(16_384).0,
        }
    }
}

impl Store {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The object's newest version.
    pub fn get(&self, storage: &str, key: &str) -> Option<Arc<Value>> {
        self.objects
            .get(storage)?
            .get(key)?
            .last()
            .and_then(|(_, o)| o.clone())
    }

    /// Writes a new version (or a deletion) and returns the revision it got. The
    /// object's `metadata.resourceVersion` is set to that revision.
    pub fn put(
        &mut self,
        storage: &str,
        key: &str,
        object: Option<Value>,
    ) -> (u64, Option<Arc<Value>>) {
        self.revision += 1;
        let revision = self.revision;
        let versions = self
            .objects
            .entry(storage.to_string())
            .or_default()
            .entry(key.to_string())
            .or_default();
        let existed = versions.last().is_some_and(|(_, o)| o.is_some());
        let (kind, stored) = match object {
            Some(mut o) => {
                o["metadata"]["resourceVersion"] = Value::String(revision.to_string());
                let kind = if existed {
                    EventKind::Modified
                } else {
                    EventKind::Added
                };
                (kind, Some(Arc::new(o)))
            }
            None => (EventKind::Deleted, None),
        };
        let object = match (&stored, versions.last()) {
            (Some(o), _) => o.clone(),
            (None, Some((_, Some(old)))) => {
                let mut gone = (**old).clone();
                gone["metadata"]["resourceVersion"] = Value::String(revision.to_string());
                Arc::new(gone)
            }
            (None, _) => {
                versions.push((revision, None));
                return (revision, None);
            }
        };
        versions.push((revision, stored.clone()));
        let event = Event {
            revision,
            storage: storage.to_string(),
            kind,
            object,
        };
        self.log.push_back(event.clone());
        let _ = self.events.send(event);
        (revision, stored)
    }

    /// Checks that `revision` can be read.
    pub fn readable(&self, revision: u64) -> Result<(), ReadError> {
        if revision < self.compacted {
            Err(ReadError::Compacted {
                requested: revision,
                compacted: self.compacted,
            })
        } else if revision > self.revision {
            Err(ReadError::TooNew {
                requested: revision,
                current: self.revision,
            })
        } else {
            Ok(())
        }
    }

    /// Up to `limit` objects (all if 0) as of `revision`, in key order after
    /// `after` (exclusive), that `keep` accepts; and whether more remain.
    pub fn list(
        &self,
        storage: &str,
        revision: u64,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&Value) -> bool,
    ) -> Result<(Vec<(Key, Arc<Value>)>, bool), ReadError> {
        self.readable(revision)?;
        let Some(objects) = self.objects.get(storage) else {
            return Ok((vec![], false));
        };
        let start = match after {
            Some(a) => std::ops::Bound::Excluded(a.to_string()),
            None => match prefix {
                Some(p) => std::ops::Bound::Included(p.to_string()),
                None => std::ops::Bound::Unbounded,
            },
        };
        let mut out = Vec::new();
        for (k, versions) in objects.range((start, std::ops::Bound::Unbounded)) {
            if let Some(p) = prefix {
                if !k.starts_with(p) {
                    break;
                }
            }
            let at = versions.iter().rev().find(|(r, _)| *r <= revision);
            let Some((_, Some(o))) = at else { continue };
            if !keep(o) {
                continue;
            }
            if limit > 0 && out.len() == limit {
                return Ok((out, true));
            }
            out.push((k.clone(), o.clone()));
        }
        Ok((out, false))
    }

    /// The changes after `revision` to one storage, for a watch to replay.
    pub fn changes_since(&self, storage: &str, revision: u64) -> Result<Vec<Event>, ReadError> {
        self.readable(revision)?;
        Ok(self
            .log
            .iter()
            .filter(|e| e.revision > revision && e.storage == storage)
            .cloned()
            .collect())
    }

    /// Forgets every version older than `revision` (but the newest of each object
    /// at or before it), as etcd's compaction does.
    pub fn compact(&mut self, revision: u64) {
        let revision = revision.min(self.revision);
        self.compacted = self.compacted.max(revision);
        for objects in self.objects.values_mut() {
            objects.retain(|_, versions| {
                let keep_from = versions
                    .iter()
                    .rposition(|(r, _)| *r <= revision)
                    .unwrap_or(0);
                versions.drain(..keep_from);
                !(versions.len() == 1 && versions[0].1.is_none())
            });
        }
        while self.log.front().is_some_and(|e| e.revision <= revision) {
            self.log.pop_front();
        }
    }

    /// Removes every object of a storage (a CRD was deleted), one deletion each.
    pub fn drop_storage(&mut self, storage: &str) {
        let keys: Vec<Key> = self
            .objects
            .get(storage)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        for k in keys {
            if self.get(storage, &k).is_some() {
                self.put(storage, &k, None);
            }
        }
    }

    /// Number of live objects, for the control API.
    pub fn count(&self) -> usize {
        self.objects
            .values()
            .flat_map(|o| o.values())
            .filter(|v| v.last().is_some_and(|(_, o)| o.is_some()))
            .count()
    }

    /// The keys of live objects of one storage.
    pub fn keys(&self, storage: &str) -> Vec<Key> {
        self.objects
            .get(storage)
            .map(|o| {
                o.iter()
                    .filter(|(_, v)| v.last().is_some_and(|(_, o)| o.is_some()))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_at_an_older_revision_until_it_is_compacted() {
        let mut s = Store::default();
        let (r1, _) = s.put(
            "cm",
            "ns/a",
            Some(json!({"metadata": {"name": "a"}, "v": 1})),
        );
        s.put("cm", "ns/b", Some(json!({"metadata": {"name": "b"}})));
        s.put(
            "cm",
            "ns/a",
            Some(json!({"metadata": {"name": "a"}, "v": 2})),
        );
        s.put("cm", "ns/b", None);
        let all = |_: &Value| true;
        let (now, _) = s.list("cm", s.revision(), None, None, 0, &all).unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].1["v"], 2);
        let (then, _) = s.list("cm", r1 + 1, None, None, 0, &all).unwrap();
        assert_eq!(then.len(), 2);
        assert_eq!(then[0].1["v"], 1);
        let (page, more) = s.list("cm", r1 + 1, None, None, 1, &all).unwrap();
        assert!(more && page.len() == 1);
        let (rest, more) = s
            .list("cm", r1 + 1, None, Some(&page[0].0), 1, &all)
            .unwrap();
        assert!(!more && rest[0].0 == "ns/b");
        s.compact(s.revision());
        assert!(matches!(
            s.list("cm", r1 + 1, None, None, 0, &all),
            Err(ReadError::Compacted { .. })
        ));
        assert_eq!(s.count(), 1);
    }
}
