//! Writes to local and network-mounted repositories, made durable. `object_store`'s
//! local backend writes a staging file and renames it into place, but never calls
//! `fsync`: after a power loss a snapshot record could exist while the packs it names
//! were never written. Here every write is flushed before the step that depends on it:
//! the staging file's data before it is renamed (or linked) into place, the directory
//! after the new name is in it, and new directories before their parents list them.
//! Reads and listings stay with `object_store`.
//!
//! Create-if-absent is a hard link from the staging file to the final name, which the
//! kernel (and an NFS server) refuses when the name exists.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::Created;

/// The file of `key` under `root`. Keys are ballast's own (`data/ab/abcd...`), so only
/// plain names are accepted: nothing that could leave the root.
pub fn path_of(root: &Path, key: &str) -> std::io::Result<PathBuf> {
    let plain = !key.is_empty()
        && key.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    if !plain {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            format!("`{key}` is not a repository object name"),
        ));
    }
    Ok(root.join(key))
}

/// Flushes a directory's entries (a rename or link into it, a new subdirectory).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents, each flushed into its parent.
fn create_dirs(root: &Path, dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(root);
    if parent != dir && parent.starts_with(root) {
        create_dirs(root, parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `data` as `key`: replacing what is there, or (`create`) only if nothing is.
pub fn put(root: &Path, key: &str, data: &[u8], create: bool) -> std::io::Result<Created> {
    let path = path_of(root, key)?;
    let dir = path.parent().expect("a key has a parent under the root");
    create_dirs(root, dir)?;
    // Staging names end in `#n` like object_store's, so listings skip them and prune
    // removes the ones a killed process left.
    let (mut file, staging) = (1u32..)
        .find_map(|n| {
            let staging = PathBuf::from(format!("{}#{n}", path.display()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&staging)
            {
                Ok(f) => Some(Ok((f, staging))),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => None,
                Err(e) => Some(Err(e)),
            }
        })
        .expect("an unused staging name")?;
    let written = file.write_all(data).and_then(|_| file.sync_all());
    drop(file);
    let placed = written.and_then(|_| {
        if create {
            match fs::hard_link(&staging, &path) {
                Ok(()) => Ok(Created::Yes),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(Created::AlreadyExisted),
                Err(e) => Err(e),
            }
        } else {
            fs::rename(&staging, &path).map(|_| Created::Yes)
        }
    });
    let _ = fs::remove_file(&staging);
    let created = placed?;
    sync_dir(dir)?;
    Ok(created)
}

/// Deletes `key`; deleting what is gone is not an error.
pub fn delete(root: &Path, key: &str) -> std::io::Result<()> {
    let path = path_of(root, key)?;
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(path.parent().expect("a key has a parent")),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_if_absent_holds_and_overwrite_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(
            put(root, "snapshots/ab", b"one", true).unwrap(),
            Created::Yes
        );
        assert_eq!(
            put(root, "snapshots/ab", b"two", true).unwrap(),
            Created::AlreadyExisted
        );
        assert_eq!(fs::read(root.join("snapshots/ab")).unwrap(), b"one");
        put(root, "snapshots/ab", b"three", false).unwrap();
        assert_eq!(fs::read(root.join("snapshots/ab")).unwrap(), b"three");
        // No staging file is left behind.
        let names: Vec<_> = fs::read_dir(root.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["ab"]);
        delete(root, "snapshots/ab").unwrap();
        delete(root, "snapshots/ab").unwrap();
        assert!(!root.join("snapshots/ab").exists());
    }

    #[test]
    fn names_that_leave_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "",
            "a/b#1",
            "x y",
        ] {
            assert!(put(dir.path(), bad, b"", false).is_err(), "{bad}");
        }
    }
}
