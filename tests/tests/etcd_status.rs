//! `ballast etcd status` reads bbolt natively and must print what etcd's own tools
//! print for the same file, for etcd 3.4 and 3.5.

use ballast_tests::etcd::{Etcd, Version};
use ballast_tests::Env;

fn status(env: &Env, file: &std::path::Path) -> serde_json::Value {
    env.json(&["etcd", "status", file.to_str().unwrap()])
}

fn same_four(ours: &serde_json::Value, reference: &serde_json::Value) {
    for k in ["hash", "revision", "totalKey", "totalSize"] {
        assert_eq!(
            ours[k], reference[k],
            "{k}: ours {ours}, etcdctl {reference}"
        );
    }
}

#[test]
fn status_matches_etcd_3_4() {
    status_matches_the_reference(Version::V3_4);
}

#[test]
fn status_matches_etcd_3_5() {
    status_matches_the_reference(Version::V3_5);
}

fn status_matches_the_reference(version: Version) {
    let etcd = Etcd::start_version(version);
    // Enough data for branch pages and overflow pages (values over a page).
    etcd.load("/registry/configmaps/default/", 3000, 600);
    etcd.load("/registry/secrets/kube-system/", 40, 9000);
    let out = etcd.etcdctl(&["del", "--prefix", "/registry/configmaps/default/0001"]);
    assert!(out.status.success());
    let snap = etcd.save_snapshot("snap.db");
    let env = Env::local();
    let ours = status(&env, &snap);
    same_four(&ours, &etcd.reference_status(&snap));
    assert_eq!(ours["sha256Verified"], true);
    assert!(ours["totalSize"].as_u64().unwrap() > 2 << 20, "{ours}");

    // After a compaction and more writes the database has free pages and a new meta.
    let rev = ours["revision"].as_i64().unwrap();
    assert!(etcd
        .etcdctl(&["compact", &rev.to_string()])
        .status
        .success());
    etcd.load("/registry/pods/default/", 500, 300);
    let snap2 = etcd.save_snapshot("snap2.db");
    same_four(&status(&env, &snap2), &etcd.reference_status(&snap2));

    // The table names the four numbers and says the trailer was verified.
    let human = env
        .run(&["etcd", "status", snap2.to_str().unwrap()])
        .ok()
        .stdout;
    assert!(
        human.contains("HASH") && human.contains("sha256 trailer verified"),
        "{human}"
    );
}

#[test]
fn a_damaged_or_truncated_snapshot_is_refused_with_the_reason() {
    let etcd = Etcd::start();
    etcd.load("/registry/configmaps/default/", 500, 400);
    let snap = etcd.save_snapshot("snap.db");
    let env = Env::local();
    let bytes = std::fs::read(&snap).unwrap();

    let flipped = etcd.dir.path().join("flipped.db");
    let mut b = bytes.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    std::fs::write(&flipped, &b).unwrap();
    let out = env
        .run(&["etcd", "status", flipped.to_str().unwrap()])
        .expect_code(1);
    assert!(
        out.stderr.contains("flipped.db") && out.stderr.contains("SHA-256"),
        "{}",
        out.stderr
    );

    let truncated = etcd.dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2 + 100]).unwrap();
    let out = env
        .run(&["etcd", "status", truncated.to_str().unwrap()])
        .expect_code(1);
    assert!(
        out.stderr.contains("truncated.db") && out.stderr.contains("truncated"),
        "{}",
        out.stderr
    );

    let not_db = etcd.dir.path().join("notes.txt");
    std::fs::write(&not_db, "hello".repeat(2000)).unwrap();
    let out = env
        .run(&["etcd", "status", not_db.to_str().unwrap()])
        .expect_code(1);
    assert!(
        out.stderr.contains("not a usable etcd snapshot"),
        "{}",
        out.stderr
    );
}
