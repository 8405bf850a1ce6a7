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
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        saver.save(
            BlobKind::Tree,
            postcard::to_stdvec(&self).expect("serialising a tree"),
        )
    }

    pub fn load(repo: &Repository, locations: &Locations, id: &BlobId) -> Result<Tree> {
        let bytes = repo.read_blob(locations, id)?;
        postcard::from_bytes(&bytes).map_err(|e| RepoError::Damaged {
            what: format!("tree {}", id.short()),
            detail: e.to_string(),
        })
    }
}

/// Calls `visit(path, node)` for every node below `root`, depth first, parents before
/// children; `path` is relative, `/`-separated.
pub fn walk(
    repo: &Repository,
    locations: &Locations,
    root: &BlobId,
    visit: &mut dyn FnMut(&str, &Node) -> Result<()>,
) -> Result<()> {
    fn go(
        repo: &Repository,
        locations: &Locations,
        prefix: &str,
        id: &BlobId,
        visit: &mut dyn FnMut(&str, &Node) -> Result<()>,
    ) -> Result<()> {
        let tree = Tree::load(repo, locations, id)?;
        for node in &tree.nodes {
            let path = if prefix.is_empty() {
                node.name_lossy()
            } else {
                format!("{prefix}/{}", node.name_lossy())
            };
            visit(&path, node)?;
            if let Some(sub) = &node.subtree {
                go(repo, locations, &path, sub, visit)?;
            }
        }
        Ok(())
    }
    go(repo, locations, "", root, visit)
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
