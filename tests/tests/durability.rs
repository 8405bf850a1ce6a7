//! What a repository on a local disk or an NFS mount promises across a power loss,
//! and repositories written by earlier versions.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use ballast_tests::{ballast_bin, random_bytes, Env};

/// Every object ballast puts in place on a local path is flushed to disk before it is
/// renamed (or linked) there, and its directory is flushed after: read from the
/// system calls themselves (strace), not from timing.
#[test]
fn every_object_is_on_disk_before_anything_depends_on_it() {
    let env = Env::init_local();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a"), random_bytes(2 << 20, 1)).unwrap();
    std::fs::write(src.join("d/b"), b"small").unwrap();
    let log = env.path("strace.log");
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-y",
        "-qq",
        "-e",
        "trace=fsync,fdatasync,rename,renameat,renameat2,link,linkat",
        "-o",
    ])
    .arg(&log)
    .arg(ballast_bin())
    .args(["--repo", &env.repo, "backup", "path"])
    .arg(&src);
    for (k, v) in &env.vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("strace runs (apt-get install strace)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let repo = env.repo_path().canonicalize().unwrap();
    let repo = repo.to_str().unwrap();

    let mut synced: HashSet<String> = HashSet::new();
    let mut placed = 0;
    let mut pending_dirs: Vec<String> = Vec::new();
    for line in text.lines() {
        // `1234 fsync(5</repo/data/ab/abcd#1>) = 0`
        if let Some(path) =
            between(line, "fsync(", ">)").or_else(|| between(line, "fdatasync(", ">)"))
        {
            let path = path
                .split_once('<')
                .map(|(_, p)| p)
                .unwrap_or(path)
                .to_string();
            pending_dirs.retain(|d| *d != path);
            synced.insert(path);
            continue;
        }
        if !(line.contains("rename") || line.contains("link")) || !line.ends_with("= 0") {
            continue;
        }
        let quoted: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        let [from, to] = quoted[..] else {
            continue;
        };
        if !to.starts_with(repo) {
            continue;
        }
        placed += 1;
        assert!(
            synced.contains(from),
            "{to} was put in place from {from}, which was never flushed:\n{line}"
        );
        pending_dirs.push(Path::new(to).parent().unwrap().display().to_string());
    }
    assert!(
        placed >= 4,
        "packs, index, snapshot record: {placed}\n{text}"
    );
    assert!(
        pending_dirs.is_empty(),
        "directories not flushed after an object was put in them: {pending_dirs:?}"
    );
}

fn between<'a>(line: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let s = line.find(start)? + start.len();
    let e = line[s..].find(end)? + s;
    Some(&line[s..e])
}

/// A repository written before seals carried what they seal (format version 1,
/// made by ballast at 57cb7a8) still opens, restores byte for byte, takes new backups
/// and stays version 1.
#[test]
fn a_version_1_repository_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/repository-v1.tar.gz");
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let mut env = Env::with_repo(dir, String::new());
    env.repo = env.path("repo").display().to_string();
    env.vars[0].1 = "v1 fixture password".into();

    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    let target = env.path("restored");
    env.run(&[
        "restore",
        "latest",
        "--target",
        &target.display().to_string(),
    ])
    .ok();
    let data = target.clone();
    assert_eq!(std::fs::read(data.join("a.txt")).unwrap(), b"hello v1\n");
    assert_eq!(std::fs::read(data.join("sub/c.txt")).unwrap(), b"nested\n");
    let b: Vec<u8> = (0..80).flat_map(|_| 0u8..=255).collect();
    assert_eq!(std::fs::read(data.join("b.bin")).unwrap(), b);

    let src = env.path("new");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("n"), random_bytes(300_000, 2)).unwrap();
    env.backup(&src, &[]);
    env.run(&["repo", "check", "--read-data"]).ok();
    env.run(&["forget", "--keep-last", "1", "--prune"]).ok();
    env.run(&["repo", "check", "--read-data"]).ok();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.repo_path().join("config")).unwrap()).unwrap();
    assert_eq!(config["version"], 1);
}
