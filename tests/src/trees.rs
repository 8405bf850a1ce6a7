//! Building sample trees and comparing a restored tree with its source.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// What is compared for each path: type, mode bits, size, content hash, mtime, link
/// target, and (for hard links) which other path shares the inode.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub size: u64,
    pub hash: Option<String>,
    pub mtime: (i64, i64),
    pub target: Option<Vec<u8>>,
    pub uid: u32,
    pub gid: u32,
    pub link_group: Option<Vec<u8>>,
}

/// Everything below `root`, keyed by relative path as raw bytes: names that are not
/// UTF-8 are compared byte for byte (a lossy string would make two of them one).
pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else {
                "other"
            };
            let hash = ft.is_file().then(|| {
                blake3::hash(&std::fs::read(&p).unwrap())
                    .to_hex()
                    .to_string()
            });
            let link_group = (ft.is_file() && m.nlink() > 1)
                .then(|| inodes.entry(m.ino()).or_insert(rel.clone()).clone());
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: m.permissions().mode() & 0o7777,
                    size: if ft.is_file() { m.len() } else { 0 },
                    hash,
                    // Directory mtimes are compared too: restore sets them last.
                    mtime: (m.mtime(), m.mtime_nsec()),
                    // Compared as bytes: a target need not be UTF-8.
                    target: ft.is_symlink().then(|| {
                        std::os::unix::ffi::OsStringExt::into_vec(
                            std::fs::read_link(&p).unwrap().into_os_string(),
                        )
                    }),
                    uid: m.uid(),
                    gid: m.gid(),
                    link_group,
                },
            );
        }
    }
    out
}

/// Panics with the first differences if two trees differ.
pub fn assert_same(a: &Path, b: &Path) {
    let (x, y) = (snapshot(a), snapshot(b));
    let mut diffs = Vec::new();
    let show = |k: &[u8]| format!("{:?}", String::from_utf8_lossy(k));
    for (k, v) in &x {
        match y.get(k) {
            None => diffs.push(format!("missing in restore: {}", show(k))),
            Some(w) if w != v => diffs.push(format!("{}: source {v:?}\n  restored {w:?}", show(k))),
            _ => {}
        }
    }
    for k in y.keys().filter(|k| !x.contains_key(*k)) {
        diffs.push(format!("extra in restore: {}", show(k)));
    }
    assert!(
        diffs.is_empty(),
        "trees differ:\n{}",
        diffs
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A tree with the things a volume holds: nested dirs, empty files and dirs, odd
/// modes, a symlink, a hard link, a sparse file, compressible and random content, a
/// non-UTF-8 name.
pub fn sample(root: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let w = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    w("etc/app.yaml", b"replicas: 3\nimage: app:1.2.3\n");
    w("data/random.bin", &crate::random_bytes(3_000_000, 1));
    w(
        "data/text.log",
        "level=info msg=served\n".repeat(100_000).as_bytes(),
    );
    w("data/empty", b"");
    w("deep/a/b/c/d/file.txt", b"deep");
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::set_permissions(
        root.join("etc/app.yaml"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("etc/app.yaml", root.join("config-link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling-link")).unwrap();
    std::fs::hard_link(
        root.join("data/text.log"),
        root.join("data/text-hardlink.log"),
    )
    .unwrap();
    let sparse = std::fs::File::create(root.join("data/sparse.img")).unwrap();
    sparse.set_len(64 * 1024 * 1024).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"header", 0).unwrap();
    sparse.write_all_at(b"middle", 32 * 1024 * 1024).unwrap();
    // Two names that differ only in bytes that are not UTF-8: a lossy conversion
    // anywhere on the way makes them one file.
    let odd = std::ffi::OsStr::from_bytes(b"name-\xff-not-utf8");
    std::fs::write(root.join(odd), b"odd name").unwrap();
    let odder = std::ffi::OsStr::from_bytes(b"name-\xfe-not-utf8");
    std::fs::write(root.join(odder), b"another odd name").unwrap();
    std::fs::create_dir_all(root.join(std::ffi::OsStr::from_bytes(b"dir-\xc3"))).unwrap();
    std::fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"dir-\xc3/in-\x80")),
        b"inside",
    )
    .unwrap();
    // Foreign ownership (only root can give it away): restore must set it back.
    if unsafe { libc::geteuid() } == 0 {
        let c = std::ffi::CString::new(root.join("etc/app.yaml").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::lchown(c.as_ptr(), 1234, 5678) }, 0);
        let c = std::ffi::CString::new(root.join("dangling-link").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::lchown(c.as_ptr(), 4321, 8765) }, 0);
    }
    // Fixed mtimes (with nanoseconds) so that restore must set them exactly.
    let t = filetime::FileTime::from_unix_time(1_700_000_000, 123_456_789);
    filetime::set_file_mtime(root.join("etc/app.yaml"), t).unwrap();
    filetime::set_symlink_file_times(root.join("config-link"), t, t).unwrap();
}
