//! Reading file metadata into tree nodes, and applying it on restore.

use std::ffi::CString;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::repo::tree::{Node, NodeKind};

pub fn node_from(name: &[u8], m: &Metadata) -> Node {
    use std::os::unix::fs::FileTypeExt;
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    };
    let mut n = Node::new(name.to_vec(), kind);
    n.mode = m.mode();
    n.uid = m.uid();
    n.gid = m.gid();
    n.mtime_ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
    n.size = if kind == NodeKind::File { m.len() } else { 0 };
    n.inode = m.ino();
    n.device = m.dev();
    n.links = m.nlink();
    n.rdev = m.rdev();
    n
}

/// Whether a file looks unchanged since the parent snapshot (same size, mtime, inode),
/// so that its content can be taken over without reading it.
pub fn unchanged(parent: &Node, now: &Node) -> bool {
    parent.kind == NodeKind::File
        && now.kind == NodeKind::File
        && parent.size == now.size
        && parent.mtime_ns == now.mtime_ns
        && parent.inode == now.inode
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains a NUL byte"))
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Applies ownership (when running as root), permissions and mtime. Symlinks get
/// ownership and times only.
pub fn apply(path: &Path, node: &Node) -> std::io::Result<()> {
    if running_as_root() {
        let c = cpath(path)?;
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::lchown(c.as_ptr(), node.uid, node.gid) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let mtime = filetime::FileTime::from_unix_time(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    if node.kind == NodeKind::Symlink {
        return filetime::set_symlink_file_times(path, mtime, mtime);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode & 0o7777))?;
    filetime::set_file_times(path, mtime, mtime)
}

/// Creates a FIFO or device node.
pub fn make_special(path: &Path, node: &Node) -> std::io::Result<()> {
    let c = cpath(path)?;
    let rc = match node.kind {
        // SAFETY: c is a valid NUL-terminated path.
        NodeKind::Fifo => unsafe { libc::mkfifo(c.as_ptr(), node.mode & 0o7777) },
        NodeKind::CharDevice | NodeKind::BlockDevice => unsafe {
            libc::mknod(
                c.as_ptr(),
                node.mode as libc::mode_t,
                node.rdev as libc::dev_t,
            )
        },
        _ => return Ok(()),
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
