//! A repository someone else could write to: names that are not file names, key
//! records that ask for absurd key derivations, objects that are not what their
//! place says, oversized objects, damaged records and prunes that race. Each must
//! end in a clear error or a safe outcome, never a panic, a hang, data written
//! outside a restore's target, or data deleted.

use std::path::Path;

use ballast::repo::blob::BlobKind;
use ballast::repo::keys::Secret;
use ballast::repo::saver::{load_known, Saver};
use ballast::repo::snapshot::{Snapshot, Source};
use ballast::repo::tree::{Node, NodeKind, Tree};
use ballast::repo::Repository;
use ballast::store::{Location, Store};
use ballast_tests::{random_bytes, Env, PASSWORD};

fn open(env: &Env) -> Repository {
    let store = Store::connect(&Location::parse(&env.repo).unwrap(), &Default::default()).unwrap();
    let secret = Secret::Password(zeroize::Zeroizing::new(PASSWORD.to_string()));
    Repository::open(store, &secret).unwrap()
}

/// Records a snapshot whose root tree holds one file named `name`, as a hostile
/// writer with the key could (the library's own `Tree::save` refuses such names).
fn snapshot_with_name(repo: &Repository, name: &[u8]) -> String {
    let known = load_known(repo).unwrap();
    let saver = Saver::start(repo, known.blobs, known.adopted);
    let content = saver.save(BlobKind::Data, b"payload".to_vec()).unwrap();
    let mut node = Node::new(name.to_vec(), NodeKind::File);
    node.mode = 0o100644;
    node.size = 7;
    node.content = vec![content];
    let tree = postcard::to_stdvec(&Tree { nodes: vec![node] }).unwrap();
    let root = saver.save(BlobKind::Tree, tree).unwrap();
    saver.finish().unwrap();
    let snap = Snapshot::new(
        Source {
            kind: "path".into(),
            paths: vec!["/hostile".into()],
            meta: Default::default(),
        },
        root,
    );
    snap.save(repo).unwrap().to_string()
}

#[test]
fn names_that_are_not_one_path_component_never_leave_the_restore_target() {
    let env = Env::init_local();
    let repo = open(&env);
    let outside = env.path("escaped");
    for name in [
        &b"../escaped"[..],
        b"/tmp/ballast-absolute-escape",
        b"..",
        b"a/../../escaped",
    ] {
        let id = snapshot_with_name(&repo, name);
        let target = env.path("target");
        let out = env
            .run(&["restore", &id, "--target", &target.display().to_string()])
            .expect_code(1);
        assert!(
            out.stderr.contains("is not a file name"),
            "{name:?}: {}",
            out.stderr
        );
        assert!(!outside.exists(), "{name:?} wrote outside the target");
        assert!(!Path::new("/tmp/ballast-absolute-escape").exists());
        // `ls` and `repo check` name the damage instead of panicking.
        let out = env.run(&["ls", &id]).expect_code(1);
        assert!(out.stderr.contains("is not a file name"), "{}", out.stderr);
    }
    let out = env.run(&["repo", "check"]).expect_code(12);
    assert!(out.stdout.contains("is not a file name"), "{}", out.stdout);
}

#[test]
fn a_key_record_asking_for_an_absurd_key_derivation_is_refused_not_tried() {
    let env = Env::init_local();
    let keys = env.objects("keys");
    assert_eq!(keys.len(), 1);
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&keys[0]).unwrap()).unwrap();
    // 4 TiB of memory and 4 billion passes: tried, it would hang or abort.
    record["kdf"]["memory_kib"] = serde_json::json!(u32::MAX);
    record["kdf"]["iterations"] = serde_json::json!(u32::MAX);
    std::fs::write(&keys[0], serde_json::to_vec(&record).unwrap()).unwrap();
    let out = env.run(&["snapshots"]).expect_code(1);
    assert!(
        out.stderr.contains("could not be tried") && out.stderr.contains("outside"),
        "{}",
        out.stderr
    );
    // Junk under keys/ next to a good record does not lock anyone out.
    let env = Env::init_local();
    std::fs::write(env.repo_path().join("keys/junk"), b"{ not json").unwrap();
    env.run(&["snapshots"]).ok();
}

#[test]
fn objects_in_the_wrong_place_or_of_the_wrong_size_fail_cleanly() {
    let env = Env::init_local();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), random_bytes(100_000, 3)).unwrap();
    let id = env.backup(&src, &[]);
    let repo = env.repo_path();

    // A short object under snapshots/ (not an id) is passed over, not a panic.
    std::fs::write(repo.join("snapshots/abcd"), b"x").unwrap();
    env.run(&["snapshots"]).ok();
    env.run(&["ls", "abcd"]).expect_code(1);
    env.run(&["ls", &id[..8]]).ok();

    // An index file copied under snapshots/ with a matching name: the seal says it
    // is an index, so it fails authentication as a record (format 2).
    let index = env.objects("index").remove(0);
    let bytes = std::fs::read(&index).unwrap();
    let name = blake3::hash(&bytes).to_hex().to_string();
    std::fs::write(repo.join("snapshots").join(&name), &bytes).unwrap();
    let out = env.run(&["repo", "check"]).expect_code(12);
    assert!(
        out.stdout.contains("fails authentication"),
        "{}",
        out.stdout
    );
    std::fs::remove_file(repo.join("snapshots").join(&name)).unwrap();

    // A pack whose footer claims a 4 GiB trailer: refused from its size, not read.
    let pack = env.objects("data").remove(0);
    let mut bytes = std::fs::read(&pack).unwrap();
    let n = bytes.len();
    bytes[n - 12..n - 8].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&pack, &bytes).unwrap();
    env.run(&["repo", "repair-index"]).expect_code(1);
    let out = env.run(&["repo", "check", "--read-data"]).expect_code(12);
    assert!(out.stdout.contains("trailer"), "{}", out.stdout);

    // An object under data/ far larger than any pack is not read into memory.
    let big = repo.join("data/ff").join("f".repeat(64));
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(200 << 20).unwrap();
    let out = env.run(&["repo", "check", "--read-data"]).expect_code(12);
    assert!(
        out.stdout.contains("more than any pack ballast writes"),
        "{}",
        out.stdout
    );
}

/// One flipped byte in a snapshot record: prune must not delete the data only that
/// record references. It refuses, naming the record, until told to give it up.
#[test]
fn prune_refuses_while_a_record_cannot_be_read() {
    let env = Env::init_local();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), random_bytes(3 << 20, 4)).unwrap();
    let first = env.backup(&src, &[]);
    std::fs::write(src.join("a"), random_bytes(3 << 20, 5)).unwrap();
    env.backup(&src, &[]);
    let record = env.repo_path().join("snapshots").join(&first);
    let mut bytes = std::fs::read(&record).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&record, &bytes).unwrap();
    let packs_before = env.objects("data").len();

    for _ in 0..2 {
        let out = env.run(&["repo", "prune", "--grace", "0s"]).expect_code(1);
        assert!(
            out.stderr.contains("prune refuses to run") && out.stderr.contains(&first),
            "{}",
            out.stderr
        );
    }
    assert_eq!(env.objects("data").len(), packs_before, "nothing deleted");

    let r = env.json(&[
        "repo",
        "prune",
        "--grace",
        "0s",
        "--forget-unreadable",
        &first[..8],
    ]);
    assert_eq!(r["records_forgotten"][0], first.as_str());
    assert!(!record.exists());
}

/// An unindexed pack whose trailer cannot be read is kept by prune: nothing shows it
/// holds no referenced blob.
#[test]
fn prune_keeps_an_unindexed_pack_it_cannot_read() {
    let env = Env::init_local();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), random_bytes(1 << 20, 6)).unwrap();
    env.backup(&src, &[]);
    // What an interrupted backup leaves: a pack no index lists, here damaged.
    let stray = env.repo_path().join("data/aa").join("a".repeat(64));
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, random_bytes(10_000, 7)).unwrap();
    env.json(&["repo", "prune", "--grace", "0s"]);
    let r = env.json(&["repo", "prune", "--grace", "0s"]);
    assert_eq!(
        r["packs_kept_unreadable"].as_array().unwrap().len(),
        1,
        "{r}"
    );
    assert!(stray.exists());
}

/// Two prunes at once: the second is refused with exit code 13 while the first
/// holds the lease, and runs once it is released.
#[test]
fn prunes_are_exclusive() {
    let env = Env::init_local();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"x").unwrap();
    env.backup(&src, &[]);
    let repo = open(&env);
    let lease = ballast::repo::lease::Lease::acquire(&repo, "prune").unwrap();
    for args in [
        &["repo", "prune"][..],
        &["forget", "--keep-last", "1"],
        &["repo", "repair-index"],
    ] {
        let out = env.run(args).expect_code(13);
        assert!(
            out.stderr.contains("is locked") && out.stderr.contains("prune by"),
            "{}",
            out.stderr
        );
    }
    // A backup takes no lock.
    env.backup(&src, &[]);
    lease.release().unwrap();
    env.run(&["repo", "prune"]).ok();

    // A lease whose holder is gone is ended by unlock.
    let lease = ballast::repo::lease::Lease::acquire(&repo, "prune").unwrap();
    std::mem::forget(lease);
    env.run(&["repo", "prune"]).expect_code(13);
    let out = env.run(&["repo", "unlock"]).ok();
    assert!(
        out.stdout.contains("ended the lease of prune"),
        "{}",
        out.stdout
    );
    env.run(&["repo", "prune"]).ok();
}
