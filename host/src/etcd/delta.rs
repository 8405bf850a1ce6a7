//! Delta segments: the changes a watch captured, stored as streams in the repository
//! next to the full snapshots they follow. A segment's record (kind `etcd-delta`)
//! names its revision range, its time range, its cluster and the full snapshot the
//! capture started from; its content is a run of length-prefixed records, so the
//! contents of consecutive segments read back to back form one record stream.

use std::io::Read;

use serde::{Deserialize, Serialize};

use super::bbolt::BoltError;
use super::mvcc::Change;
use crate::repo::snapshot::{Snapshot, SnapshotId};

/// The kind of a full snapshot's record.
pub const FULL: &str = "etcd";
/// The kind of a delta segment's record.
pub const DELTA: &str = "etcd-delta";

/// One entry of a segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Record {
    Change(Change),
    /// Every change up to `revision` had arrived by `unix_ms`, and the capture was
    /// watching then: one per watch response, and one per progress notification (a
    /// heartbeat, every few seconds even when nothing changes). What `--to-time`
    /// resolves against.
    Mark {
        revision: i64,
        unix_ms: i64,
    },
    /// The capture was not watching from `since_ms` (its last mark, before a broken
    /// connection or a restart) until the next mark: the changes after `revision` up
    /// to that mark's happened at times it cannot know. A point in time inside is
    /// refused.
    Gap {
        since_ms: i64,
        revision: i64,
    },
}

/// The longest record a segment may hold: a change carries a key, its value and its
/// previous value, each bounded by etcd's request limit (1.5 MiB by default, rarely
/// raised past 10 MiB). A longer length prefix means a damaged or crafted segment.
pub const MAX_RECORD: usize = 256 * 1024 * 1024;

/// Appends a record: a little-endian u32 length, then the record in postcard.
pub fn encode(record: &Record, out: &mut Vec<u8>) {
    let body = postcard::to_allocvec(record).expect("records always serialize");
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
}

/// The records of a stream of segments, in order.
pub struct Records<R: Read> {
    input: R,
    buf: Vec<u8>,
}

impl<R: Read> Records<R> {
    pub fn new(input: R) -> Records<R> {
        Records { input, buf: vec![] }
    }
}

impl<R: Read> Iterator for Records<R> {
    type Item = Result<Record, BoltError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => return Some(Err(BoltError(format!("reading captured changes: {e}")))),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_RECORD {
            return Some(Err(BoltError(format!(
                "a captured change claims {len} bytes, more than any change etcd accepts"
            ))));
        }
        // Read what is there, not what the length claims: memory follows the data.
        self.buf.clear();
        match (&mut self.input)
            .take(len as u64)
            .read_to_end(&mut self.buf)
        {
            Ok(n) if n == len => {}
            Ok(n) => {
                return Some(Err(BoltError(format!(
                    "reading captured changes: a record is cut short ({n} of {len} bytes)"
                ))))
            }
            Err(e) => return Some(Err(BoltError(format!("reading captured changes: {e}")))),
        }
        Some(
            postcard::from_bytes(&self.buf)
                .map_err(|e| BoltError(format!("a captured change does not decode: {e}"))),
        )
    }
}

/// What a segment's record says about it (kept in the record's `source.meta`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentInfo {
    pub cluster_id: String,
    /// The first revision the segment covers (the previous segment's end + 1).
    pub start_revision: i64,
    /// The last revision it holds a change of.
    pub end_revision: i64,
    pub start_unix_ms: i64,
    pub end_unix_ms: i64,
    pub changes: u64,
    /// The full snapshot the capture that wrote it started from (retention keeps
    /// the segment while it keeps that snapshot).
    pub depends_on: String,
    /// When the segment starts inside a gap (see [`Record::Gap`]): since when the
    /// capture was not watching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_since_ms: Option<i64>,
}

impl SegmentInfo {
    pub fn of(snapshot: &Snapshot) -> Option<SegmentInfo> {
        if snapshot.source.kind != DELTA {
            return None;
        }
        let meta = serde_json::Value::Object(snapshot.source.meta.clone().into_iter().collect());
        serde_json::from_value(meta).ok()
    }

    pub fn store_in(&self, snapshot: &mut Snapshot) {
        if let serde_json::Value::Object(map) =
            serde_json::to_value(self).expect("plain fields serialize")
        {
            snapshot.source.meta.extend(map);
        }
    }
}

/// A full snapshot's place in time.
#[derive(Debug, Clone)]
pub struct Full {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    pub cluster_id: String,
    /// The revision etcd reported just before the snapshot (the database may hold a
    /// few more, written while it streamed).
    pub revision: i64,
}

impl Full {
    pub fn of(id: &SnapshotId, snapshot: &Snapshot) -> Option<Full> {
        if snapshot.source.kind != FULL {
            return None;
        }
        let meta = &snapshot.source.meta;
        Some(Full {
            id: *id,
            snapshot: snapshot.clone(),
            cluster_id: meta.get("cluster_id")?.as_str()?.to_string(),
            revision: meta.get("revision")?.as_i64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_prefix_past_the_limit_or_the_data_is_refused() {
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"tiny");
        let err = Records::new(&huge[..]).next().unwrap().unwrap_err();
        assert!(err.0.contains("claims 4294967295 bytes"), "{err}");
        // Within the limit but longer than what follows: cut short, and the buffer
        // holds only what was there.
        let mut short = (200u32 << 20).to_le_bytes().to_vec();
        short.extend_from_slice(b"tiny");
        let mut records = Records::new(&short[..]);
        let err = records.next().unwrap().unwrap_err();
        assert!(err.0.contains("cut short (4 of 209715200 bytes)"), "{err}");
        assert!(records.buf.capacity() < 1 << 20);
    }

    #[test]
    fn records_read_back_across_segment_boundaries() {
        let kv = super::super::mvcc::KeyValue {
            key: b"/a".to_vec(),
            mod_revision: 5,
            ..Default::default()
        };
        let records = vec![
            Record::Change(Change::new(false, &kv, None)),
            Record::Mark {
                revision: 5,
                unix_ms: 1_700_000_000_000,
            },
            Record::Change(Change::new(true, &kv, Some(&kv))),
        ];
        let (mut first, mut second) = (vec![], vec![]);
        encode(&records[0], &mut first);
        encode(&records[1], &mut first);
        encode(&records[2], &mut second);
        let joined: Vec<u8> = [first, second].concat();
        let back: Vec<Record> = Records::new(joined.as_slice())
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(back, records);
        // A record cut short is an error, not a silent end.
        let cut = &joined[..joined.len() - 3];
        let last = Records::new(cut).last().unwrap();
        assert!(last.unwrap_err().0.contains("cut short"));
    }
}
