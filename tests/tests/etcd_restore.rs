//! `ballast etcd restore` makes data directories that real etcd 3.4 and 3.5 members
//! start from, with the same keys and values: one member, a bumped revision, a new
//! three-member cluster; and it never deletes a data directory in its way.

use ballast_tests::etcd::{initial_cluster, Etcd, Member, Version};
use ballast_tests::Env;

#[test]
fn restore_one_member_with_etcd_3_4() {
    restore_one_member(Version::V3_4);
}

#[test]
fn restore_one_member_with_etcd_3_5() {
    restore_one_member(Version::V3_5);
}

fn restore_one_member(version: Version) {
    let etcd = Etcd::start_version(version);
    etcd.load("/registry/configmaps/default/", 800, 300);
    etcd.put("/registry/namespaces/prod", "{\"kind\":\"Namespace\"}");
    let env = Env::init_local();
    env.json(&["etcd", "snapshot", "--endpoints", &etcd.endpoint]);
    let source_revision = etcd.revision();

    let member = Member::new("restored");
    let cluster = initial_cluster(std::slice::from_ref(&member));
    let data_dir = env.path("member-data");
    let tool = version.restore_tool();
    let out = env.json(&[
        "etcd",
        "restore",
        "latest",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--name",
        "restored",
        "--initial-cluster",
        &cluster,
        "--initial-cluster-token",
        "restored-1",
        "--etcdutl",
        &tool,
    ]);
    assert_eq!(out["restored"]["keys"], 801, "{out}");
    assert_eq!(out["restored"]["revision"], source_revision);
    // No temporary database is left next to the data directory.
    let leftovers: Vec<_> = std::fs::read_dir(env.path("."))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".ballast-restore-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let restored = Etcd::start_restored(version, &data_dir, &member, &cluster);
    restored.wait_healthy();
    assert_eq!(restored.key_count(), 801);
    assert_eq!(
        restored.get("/registry/namespaces/prod").as_deref(),
        Some("{\"kind\":\"Namespace\"}")
    );
    assert_eq!(restored.revision(), source_revision);
    drop(restored);

    // With the revision bumped and compacted, the history before it is gone for
    // watchers, and the keys are all there.
    let bumped = env.path("bumped-data");
    let member = Member::new("bumped");
    let cluster = initial_cluster(std::slice::from_ref(&member));
    let out = env.json(&[
        "etcd",
        "restore",
        "latest",
        "--data-dir",
        bumped.to_str().unwrap(),
        "--name",
        "bumped",
        "--initial-cluster",
        &cluster,
        "--bump-revision",
        "1000000",
        "--mark-compacted",
        "--etcdutl",
        &tool,
    ]);
    assert_eq!(out["restored"]["revision"], source_revision + 1_000_000);
    let restored = Etcd::start_restored(version, &bumped, &member, &cluster);
    restored.wait_healthy();
    assert_eq!(restored.key_count(), 801);
    assert!(restored.revision() >= source_revision + 1_000_000);
    let old = restored.etcdctl(&[
        "get",
        "/registry/namespaces/prod",
        &format!("--rev={source_revision}"),
    ]);
    assert!(
        !old.status.success() && String::from_utf8_lossy(&old.stderr).contains("compacted"),
        "reading an old revision should say it was compacted: {}",
        String::from_utf8_lossy(&old.stderr)
    );
    // Writes carry on above the bumped revision.
    restored.put("/registry/after", "1");
    assert!(restored.revision() > source_revision + 1_000_000);
}

#[test]
fn restore_a_new_three_member_cluster() {
    let etcd = Etcd::start();
    etcd.load("/registry/pods/default/", 500, 400);
    let env = Env::init_local();
    env.json(&["etcd", "snapshot", "--endpoints", &etcd.endpoint]);
    let members: Vec<Member> = ["a", "b", "c"].iter().map(|n| Member::new(n)).collect();
    let cluster = initial_cluster(&members);
    let base = env.path("cluster");
    let out = env.json(&[
        "etcd",
        "restore",
        "latest",
        "--data-dir",
        base.to_str().unwrap(),
        "--initial-cluster",
        &cluster,
        "--initial-cluster-token",
        "new-cluster",
        "--all-members",
    ]);
    assert_eq!(out["restored"]["members"].as_array().unwrap().len(), 3);
    let running: Vec<Etcd> = members
        .iter()
        .map(|m| Etcd::start_restored(Version::V3_4, &base.join(&m.name), m, &cluster))
        .collect();
    for m in &running {
        m.wait_healthy();
    }
    let list = running[0].etcdctl(&["member", "list", "-w", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["members"].as_array().unwrap().len(), 3, "{list}");
    for m in &running {
        assert_eq!(m.key_count(), 500);
    }
    // The cluster takes writes, and every member sees them.
    running[1].put("/registry/new", "v");
    assert_eq!(running[2].get("/registry/new").as_deref(), Some("v"));
}

#[test]
fn an_existing_data_directory_is_refused_or_moved_aside_never_deleted() {
    let etcd = Etcd::start();
    etcd.load("/k/", 50, 100);
    let env = Env::init_local();
    env.json(&["etcd", "snapshot", "--endpoints", &etcd.endpoint]);
    let data_dir = env.path("etcd-data");
    std::fs::create_dir_all(data_dir.join("member")).unwrap();
    std::fs::write(data_dir.join("member/precious"), "the old cluster").unwrap();
    let args = [
        "etcd",
        "restore",
        "latest",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    let out = env.run(&args).expect_code(1);
    assert!(
        out.stderr.contains("already exists") && out.stderr.contains("--move-existing"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(data_dir.join("member/precious")).unwrap(),
        "the old cluster"
    );

    let mut moved = args.to_vec();
    moved.push("--move-existing");
    let out = env.json(&moved);
    let aside = out["restored"]["members"][0]["moved_aside"]
        .as_str()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(aside).join("member/precious")).unwrap(),
        "the old cluster"
    );
    assert!(data_dir.join("member/snap/db").exists());
}

#[test]
fn a_damaged_or_truncated_snapshot_file_is_not_restored() {
    let etcd = Etcd::start();
    etcd.load("/k/", 300, 400);
    let file = etcd.save_snapshot("snap.db");
    let bytes = std::fs::read(&file).unwrap();
    let env = Env::local();
    let flipped = env.path("flipped.db");
    let mut b = bytes.clone();
    let mid = b.len() / 3;
    b[mid] ^= 0x01;
    std::fs::write(&flipped, &b).unwrap();
    let truncated = env.path("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for (file, why) in [(&flipped, "SHA-256"), (&truncated, "truncated")] {
        let dir = env.path(&format!(
            "{}-data",
            file.file_name().unwrap().to_string_lossy()
        ));
        let out = env
            .run(&[
                "etcd",
                "restore",
                file.to_str().unwrap(),
                "--data-dir",
                dir.to_str().unwrap(),
            ])
            .expect_code(1);
        assert!(out.stderr.contains(why), "{}", out.stderr);
        assert!(!dir.exists(), "nothing is created from a damaged snapshot");
    }
    // The intact file restores.
    let dir = env.path("good-data");
    env.run(&[
        "etcd",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
    ])
    .ok();
    assert!(dir.join("member/snap/db").exists());
}
