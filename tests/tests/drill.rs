//! `ballast drill etcd`: the newest etcd snapshot restored into scratch space and
//! served by a real etcd (3.4 and 3.5) on loopback, its revision and keys compared
//! with the record and the database; a damaged backup fails the drill; nothing is
//! left behind.

use ballast_tests::etcd::{Etcd, Version};
use ballast_tests::Env;

fn drill_passes_and_leaves_nothing(version: Version) {
    let etcd = Etcd::start_version(version);
    etcd.load("/registry/configmaps/default/", 300, 200);
    etcd.put("/registry/namespaces/shop", "{}");
    let keys = etcd.key_count();
    let revision = etcd.revision();
    let env = Env::init_local();
    env.json(&["etcd", "snapshot", "--endpoints", &etcd.endpoint]);
    // Later writes are not in the snapshot: the drill serves what was backed up.
    etcd.put("/registry/namespaces/later", "{}");

    let scratch = env.path("scratch");
    let etcd_bin = version.program("etcd");
    let tool = version.restore_tool();
    let args = [
        "drill",
        "etcd",
        "--etcd",
        etcd_bin.to_str().unwrap(),
        "--etcdutl",
        &tool,
        "--scratch",
        scratch.to_str().unwrap(),
    ];
    let v = env.json(&args);
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["served_keys"], keys, "{v}");
    assert_eq!(v["restored_keys"], keys, "{v}");
    assert_eq!(v["served_revision"], revision, "{v}");
    assert_eq!(v["recorded_revision"], revision, "{v}");
    assert!(v["etcd_version"].as_str().unwrap().starts_with("3."), "{v}");
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "scratch left behind"
    );
    let human = env.run(&args).ok();
    assert!(human.stdout.contains("passed"), "{}", human.stdout);

    // A flipped byte in the stored database: the drill fails and says why.
    let pack = env
        .objects("data")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&pack, &bytes).unwrap();
    let out = env.run(&args);
    assert_ne!(out.code, 0, "a damaged backup passed the drill");
    assert!(
        out.stderr.contains("drill of etcd snapshot"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "scratch left behind"
    );
}

#[test]
fn a_drill_of_an_etcd_3_4_snapshot() {
    drill_passes_and_leaves_nothing(Version::V3_4);
}

#[test]
fn a_drill_of_an_etcd_3_5_snapshot() {
    drill_passes_and_leaves_nothing(Version::V3_5);
}

#[test]
fn a_drill_stopped_by_sigterm_kills_its_member_and_removes_its_copy() {
    use std::os::unix::fs::PermissionsExt;
    let etcd = Etcd::start();
    etcd.load("/registry/secrets/default/", 20, 100);
    let env = Env::init_local();
    env.json(&["etcd", "snapshot", "--endpoints", &etcd.endpoint]);
    // An "etcd" that never answers: the drill waits for it until stopped.
    let fake = env.path("etcd-that-hangs");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 300\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let scratch = env.path("scratch");
    let mut child = env
        .cmd(&[
            "drill",
            "etcd",
            "--etcd",
            fake.to_str().unwrap(),
            "--etcdutl",
            &Version::V3_4.restore_tool(),
            "--scratch",
            scratch.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    // Wait until the database copy and the member's directory are there.
    let start = std::time::Instant::now();
    let member = loop {
        let found = std::fs::read_dir(&scratch)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("member"))
            .find(|p| p.exists());
        if let Some(m) = found {
            break m;
        }
        assert!(
            start.elapsed().as_secs() < 60,
            "the drill never laid out its member"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(!member.exists(), "the restored member is left behind");
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "scratch left behind"
    );
}
