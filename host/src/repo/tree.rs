//! Trees: one blob per directory, listing its entries sorted by name. Every kind of
//! backup stores a tree: a file-system backup mirrors the directories, a stream backup
//! (etcd snapshot, dump, export) is a tree with one file node.

use serde::{Deserialize, Serialize};

use super::blob::{BlobId, BlobKind};
use super::index::Locations;
use super::saver::Saver;
use super::{RepoError, Repository, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// One directory entry with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The name as raw bytes (file names need not be UTF-8).
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits and file type bits as `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    pub size: u64,
    pub inode: u64,
    pub device: u64,
    pub links: u64,
    /// Device number for character and block devices.
    pub rdev: u64,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
    /// Data blobs of a file, in order.
    pub content: Vec<BlobId>,
    /// Tree blob of a directory.
    pub subtree: Option<BlobId>,
}

impl Node {
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Node {
        Node {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            size: 0,
            inode: 0,
            device: 0,
            links: 1,
            rdev: 0,
            target: None,
            content: vec![],
            subtree: None,
        }
    }

    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Why a stored name cannot be a file name: `None` when it is one path component
/// (not empty, no `/`, no NUL, not `.` or `..`). Names come from the repository, which
/// someone else may have written: restore joins them onto a target directory, so a
/// name that is not a single component could write outside it.
pub fn bad_name(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name == b"." || name == b".." {
        Some("it is `.` or `..`")
    } else if name.contains(&b'/') {
        Some("it contains `/`")
    } else if name.contains(&0) {
        Some("it contains a NUL byte")
    } else {
        None
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// Stores the tree (sorted) and returns its id.
    pub fn save(mut self, saver: &Saver) -> Result<BlobId> {
        if let Some((node, why)) = self
            .nodes
            .iter()
            .find_map(|n| bad_name(&n.name).map(|why| (n, why)))
        {
            return Err(RepoError::Invalid(format!(
                "{:?} cannot be stored as a file name: {why}",
                node.name_lossy()
            )));
        }
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        // A tree with a name twice would not read back (`decode` refuses it).
        if let Some(w) = self.nodes.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(RepoError::Invalid(format!(
                "{:?} is in one directory twice",
                w[0].name_lossy()
            )));
        }
        saver.save(
            BlobKind::Tree,
            postcard::to_stdvec(&self).expect("serialising a tree"),
        )
    }

    /// Loads and checks a tree: every name one path component, names sorted and
    /// unique (lookups rely on the order).
    pub fn load(repo: &Repository, locations: &Locations, id: &BlobId) -> Result<Tree> {
        let bytes = repo.read_blob(locations, id)?;
        Tree::decode(&bytes).map_err(|detail| RepoError::Damaged {
            what: format!("tree {}", id.short()),
            detail,
        })
    }

    /// Decodes and checks a tree's plaintext.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Tree, String> {
        let tree: Tree = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
        for (i, node) in tree.nodes.iter().enumerate() {
            if let Some(why) = bad_name(&node.name) {
                return Err(format!(
                    "entry {:?} is not a file name ({why})",
                    node.name_lossy()
                ));
            }
            if i > 0 && tree.nodes[i - 1].name >= node.name {
                return Err(format!(
                    "entries out of order or repeated at {:?}",
                    node.name_lossy()
                ));
            }
        }
        Ok(tree)
    }
}

/// Calls `visit(path, node)` for every node below `root`, depth first, parents before
/// children; `path` is relative, `/`-separated, as raw bytes (names need not be
/// UTF-8: see [`path_of`] to use one as a file system path).
pub fn walk(
    repo: &Repository,
    locations: &Locations,
    root: &BlobId,
    visit: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
) -> Result<()> {
    fn go(
        repo: &Repository,
        locations: &Locations,
        prefix: &mut Vec<u8>,
        id: &BlobId,
        visit: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
    ) -> Result<()> {
        let tree = Tree::load(repo, locations, id)?;
        for node in &tree.nodes {
            let len = prefix.len();
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(&node.name);
            visit(prefix, node)?;
            if let Some(sub) = &node.subtree {
                go(repo, locations, prefix, sub, visit)?;
            }
            prefix.truncate(len);
        }
        Ok(())
    }
    go(repo, locations, &mut Vec::new(), root, visit)
}

/// A walked path (raw bytes) as a relative file system path, byte for byte.
pub fn path_of(path: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(path))
}

/// Loads the locations a snapshot needs: first every tree blob, then, after walking
/// the trees, the data blobs they reference. Memory follows the snapshot, not the
/// repository.
pub fn locations_for(repo: &Repository, roots: &[BlobId]) -> Result<Locations> {
    let trees = Locations::load(repo, |kind, _| kind == BlobKind::Tree)?;
    let mut needed = std::collections::HashSet::new();
    for root in roots {
        walk(repo, &trees, root, &mut |_, node| {
            needed.extend(node.content.iter().copied());
            Ok(())
        })?;
    }
    Locations::load(repo, |kind, id| {
        kind == BlobKind::Tree || needed.contains(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(names: &[&[u8]]) -> Vec<u8> {
        let tree = Tree {
            nodes: names
                .iter()
                .map(|n| Node::new(n.to_vec(), NodeKind::File))
                .collect(),
        };
        postcard::to_stdvec(&tree).unwrap()
    }

    #[test]
    fn names_that_are_not_one_component_are_refused() {
        assert!(Tree::decode(&encoded(&[b"a", b"b\xff", b"c"])).is_ok());
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc", b"../x", b"nul\0"] {
            let e = Tree::decode(&encoded(&[bad])).unwrap_err();
            assert!(e.contains("not a file name"), "{bad:?}: {e}");
        }
        let e = Tree::decode(&encoded(&[b"b", b"a"])).unwrap_err();
        assert!(e.contains("out of order"), "{e}");
        let e = Tree::decode(&encoded(&[b"a", b"a"])).unwrap_err();
        assert!(e.contains("repeated"), "{e}");
    }
}
