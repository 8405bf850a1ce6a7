//! The README's first command, `ballast demo`, keeps working: it starts a local etcd,
//! snapshots it, backs up sample data twice, verifies and restores.

use ballast_tests::Env;

#[test]
fn the_demo_runs_end_to_end() {
    let env = Env::local();
    let dir = env.path("demo");
    let out = env
        .run(&["demo", "--dir", dir.to_str().unwrap(), "--size-mib", "8"])
        .ok();
    assert!(
        out.stdout.contains("sha256 verified"),
        "the etcd part ran:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("identical to the source: yes"),
        "{}",
        out.stdout
    );
    assert!(dir.join("etcd-snapshot.db").exists());
    assert!(
        out.stdout.contains("2000 keys") && dir.join("etcd-restored/member/snap/db").exists(),
        "the snapshot was restored into a data directory:\n{}",
        out.stdout
    );
}
