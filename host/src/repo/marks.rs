//! Prune marks: `prune/<id>` lists packs due for deletion and when they were marked.
//! Backups read them to leave marked packs out of deduplication, restores to prefer
//! an unmarked copy of a blob, prune to delete what is due.
//!
//! A mark that cannot be authenticated or decoded counts as no mark: its packs are
//! not deleted on its account (a later prune marks them again if they are still
//! unreferenced), and prune removes it.

use std::collections::HashSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::crypto::Sealed;
use super::pack::PackId;
use super::{RepoError, Repository, Result};

pub const PREFIX: &str = "prune/";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mark {
    /// When the mark was written: its packs may go once the grace period has passed.
    pub time: jiff::Timestamp,
    pub packs: Vec<PackId>,
}

/// The marks in the repository: the readable ones, and the keys of damaged ones.
pub struct Marks {
    pub marks: Vec<(String, Mark)>,
    pub damaged: Vec<String>,
}

impl Marks {
    pub fn packs(&self) -> HashSet<PackId> {
        self.marks
            .iter()
            .flat_map(|(_, m)| m.packs.iter().copied())
            .collect()
    }
}

/// Reads every mark. Store errors fail; a mark that does not open is reported.
pub fn read(repo: &Repository) -> Result<Marks> {
    let keys: Vec<String> = repo
        .store()
        .list(PREFIX)?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut out = Marks {
        marks: vec![],
        damaged: vec![],
    };
    for (key, r) in keys.iter().zip(repo.store().get_many(&keys, 8)) {
        let bytes = match r {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let decoded = repo
            .keys()
            .open(Sealed::Mark, &bytes)
            .map_err(|_| "it fails authentication".to_string())
            .and_then(|plain| serde_json::from_slice::<Mark>(&plain).map_err(|e| e.to_string()));
        match decoded {
            Ok(mark) => out.marks.push((key.clone(), mark)),
            Err(why) => {
                tracing::warn!("ignoring prune mark {key}: {why}");
                out.damaged.push(key.clone());
            }
        }
    }
    Ok(out)
}

/// Packs currently marked for deletion.
pub fn marked_packs(repo: &Repository) -> Result<HashSet<PackId>> {
    Ok(read(repo)?.packs())
}

/// Writes a mark dated now.
pub fn write(repo: &Repository, packs: Vec<PackId>) -> Result<String> {
    let mark = Mark {
        time: jiff::Timestamp::now(),
        packs,
    };
    let sealed = repo.keys().seal(
        Sealed::Mark,
        &serde_json::to_vec(&mark).expect("serialising a mark"),
    );
    let key = format!("{PREFIX}{}", hex::encode(blake3::hash(&sealed).as_bytes()));
    repo.store()
        .put(&key, Bytes::from(sealed))
        .map_err(RepoError::from)?;
    Ok(key)
}
