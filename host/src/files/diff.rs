//! Comparing two snapshots. Subtrees with the same id are identical and skipped, so
//! a diff costs what changed, not what exists.

use serde::Serialize;

use crate::repo::blob::{BlobId, BlobKind};
use crate::repo::index::Locations;
use crate::repo::tree::{Node, NodeKind, Tree};
use crate::repo::{Repository, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Modified,
}

impl Change {
    pub fn sign(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffEntry {
    pub change: Change,
    pub path: String,
    /// What changed for a modified entry: `content`, `metadata`, `type`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub what: Vec<&'static str>,
}

pub fn diff(repo: &Repository, a: &BlobId, b: &BlobId) -> Result<Vec<DiffEntry>> {
    let trees = Locations::load(repo, |k, _| k == BlobKind::Tree)?;
    let mut out = Vec::new();
    compare(repo, &trees, Some(a), Some(b), "", &mut out)?;
    Ok(out)
}

fn load(repo: &Repository, trees: &Locations, id: Option<&BlobId>) -> Result<Tree> {
    id.map(|id| Tree::load(repo, trees, id))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn compare(
    repo: &Repository,
    trees: &Locations,
    a: Option<&BlobId>,
    b: Option<&BlobId>,
    prefix: &str,
    out: &mut Vec<DiffEntry>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let (ta, tb) = (load(repo, trees, a)?, load(repo, trees, b)?);
    let (mut i, mut j) = (0, 0);
    let path_of = |n: &Node| {
        if prefix.is_empty() {
            n.name_lossy()
        } else {
            format!("{prefix}/{}", n.name_lossy())
        }
    };
    while i < ta.nodes.len() || j < tb.nodes.len() {
        let order = match (ta.nodes.get(i), tb.nodes.get(j)) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                let n = &ta.nodes[i];
                out.push(DiffEntry {
                    change: Change::Removed,
                    path: path_of(n),
                    what: vec![],
                });
                compare(repo, trees, n.subtree.as_ref(), None, &path_of(n), out)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let n = &tb.nodes[j];
                out.push(DiffEntry {
                    change: Change::Added,
                    path: path_of(n),
                    what: vec![],
                });
                compare(repo, trees, None, n.subtree.as_ref(), &path_of(n), out)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (&ta.nodes[i], &tb.nodes[j]);
                let mut what = vec![];
                if x.kind != y.kind {
                    what.push("type");
                } else if x.content != y.content || x.target != y.target {
                    what.push("content");
                }
                if x.kind != NodeKind::Dir
                    && (x.mode != y.mode
                        || x.uid != y.uid
                        || x.gid != y.gid
                        || x.mtime_ns != y.mtime_ns)
                {
                    what.push("metadata");
                }
                if !what.is_empty() {
                    out.push(DiffEntry {
                        change: Change::Modified,
                        path: path_of(x),
                        what,
                    });
                }
                compare(
                    repo,
                    trees,
                    x.subtree.as_ref(),
                    y.subtree.as_ref(),
                    &path_of(x),
                    out,
                )?;
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}
