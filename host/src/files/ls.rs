//! Listing the content of a snapshot.

use serde::Serialize;

use crate::repo::blob::BlobKind;
use crate::repo::index::Locations;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{self, Node, NodeKind, Tree};
use crate::repo::{RepoError, Repository, Result};

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

pub fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::CharDevice => "chardev",
        NodeKind::BlockDevice => "blockdev",
        NodeKind::Socket => "socket",
    }
}

/// `drwxr-xr-x` style mode string.
pub fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::Socket => 's',
        NodeKind::File => '-',
    };
    let mut s = String::from(t);
    // setuid, setgid and sticky show in the execute column, as in `ls -l`.
    for (shift, special, letter) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (n.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, n.mode & special != 0) {
            (true, true) => letter,
            (false, true) => letter.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn entry(path: &str, n: &Node) -> Entry {
    let mtime = jiff::Timestamp::from_nanosecond(n.mtime_ns as i128)
        .map(|t| t.to_string())
        .unwrap_or_default();
    Entry {
        path: path.to_string(),
        kind: kind_name(n.kind),
        mode: mode_string(n),
        uid: n.uid,
        gid: n.gid,
        size: n.size,
        mtime,
        target: n
            .target
            .as_ref()
            .map(|t| String::from_utf8_lossy(t).into_owned()),
    }
}

/// Every entry of a snapshot below `under` (a `/`-separated path, empty for all).
pub fn list(repo: &Repository, snapshot: &Snapshot, under: &str) -> Result<Vec<Entry>> {
    let trees = Locations::load(repo, |k, _| k == BlobKind::Tree)?;
    let under = under.trim_matches('/');
    let mut root = snapshot.root;
    let mut prefix = String::new();
    let mut out = Vec::new();
    if !under.is_empty() {
        for part in under.split('/') {
            let t = Tree::load(repo, &trees, &root)?;
            let node = t
                .find(part.as_bytes())
                .ok_or_else(|| RepoError::Invalid(format!("`{under}` is not in the snapshot")))?;
            prefix = if prefix.is_empty() {
                part.to_string()
            } else {
                format!("{prefix}/{part}")
            };
            match node.subtree {
                Some(sub) => root = sub,
                None => return Ok(vec![entry(&prefix, node)]),
            }
        }
    }
    tree::walk(repo, &trees, &root, &mut |path, node| {
        let path = String::from_utf8_lossy(path);
        let full = if prefix.is_empty() {
            path.into_owned()
        } else {
            format!("{prefix}/{path}")
        };
        out.push(entry(&full, node));
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_show_special_bits() {
        let mut n = Node::new(b"x".to_vec(), NodeKind::File);
        n.mode = 0o100755;
        assert_eq!(mode_string(&n), "-rwxr-xr-x");
        n.mode = 0o104755;
        assert_eq!(mode_string(&n), "-rwsr-xr-x");
        n.kind = NodeKind::Dir;
        n.mode = 0o41777;
        assert_eq!(mode_string(&n), "drwxrwxrwt");
        n.mode = 0o42644;
        assert_eq!(mode_string(&n), "drw-r-Sr--");
    }
}
