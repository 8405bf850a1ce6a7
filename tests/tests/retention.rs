//! `forget` policies and `repo prune`: what is removed, what is kept, and that the
//! repository stays whole.

use ballast_tests::{random_bytes, Env};

#[test]
fn forget_applies_the_policy_per_group() {
    let env = Env::init_local();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for (i, tag) in ["blue", "blue", "green", "green", "green"]
        .iter()
        .enumerate()
    {
        std::fs::write(src.join("f"), format!("version {i}")).unwrap();
        env.backup(&src, &["--tag", tag]);
    }
    let dry = env.json(&["forget", "--keep-last", "1", "--dry-run"]);
    let removed = dry["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == false)
        .count();
    assert_eq!(removed, 3);
    assert_eq!(env.snapshot_ids().len(), 5, "a dry run removes nothing");

    env.run(&["forget", "--keep-last", "1"]).ok();
    let snaps = env.json(&["snapshots"]);
    let mut tags: Vec<String> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot"]["tags"][0].as_str().unwrap().into())
        .collect();
    tags.sort();
    assert_eq!(tags, vec!["blue", "green"]);
    let out = env.run(&["forget"]).expect_code(1);
    assert!(
        out.stderr.contains("no --keep-* rule given"),
        "{}",
        out.stderr
    );
    let out = env
        .run(&["forget", "--keep-last", "1", "--group-by", "colour"])
        .expect_code(1);
    assert!(
        out.stderr.contains("unknown --group-by field `colour`"),
        "{}",
        out.stderr
    );
}

#[test]
fn prune_frees_forgotten_data_after_the_grace_period() {
    let env = Env::init_local();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("keep.bin"), random_bytes(6 << 20, 1)).unwrap();
    std::fs::write(src.join("old.bin"), random_bytes(40 << 20, 2)).unwrap();
    env.backup(&src, &[]);
    std::fs::remove_file(src.join("old.bin")).unwrap();
    std::fs::write(src.join("new.bin"), random_bytes(3 << 20, 3)).unwrap();
    let kept = env.backup(&src, &[]);
    let before = env.json(&["repo", "stats"]);

    env.run(&["forget", "--keep-last", "1"]).ok();
    let first = env.json(&["repo", "prune"]);
    assert!(first["packs_marked"].as_u64().unwrap() >= 1, "{first}");
    assert_eq!(
        first["packs_deleted"], 0,
        "nothing is deleted before the grace period: {first}"
    );
    let waiting = env.json(&["repo", "prune"]);
    assert_eq!(waiting["packs_deleted"], 0);
    assert!(waiting["packs_waiting"].as_u64().unwrap() >= 1, "{waiting}");

    let second = env.json(&["repo", "prune", "--grace", "0s"]);
    assert!(second["packs_deleted"].as_u64().unwrap() >= 1, "{second}");
    let after = env.json(&["repo", "stats"]);
    assert!(
        after["pack_bytes"].as_u64().unwrap() + (30 << 20) < before["pack_bytes"].as_u64().unwrap(),
        "before {before}\nafter {after}"
    );
    env.run(&["repo", "check", "--read-data"]).ok();
    let target = env.path("restored");
    env.run(&["restore", &kept, "--target", target.to_str().unwrap()])
        .ok();
    assert_eq!(
        std::fs::read(target.join("keep.bin")).unwrap(),
        random_bytes(6 << 20, 1)
    );
    assert_eq!(
        std::fs::read(target.join("new.bin")).unwrap(),
        random_bytes(3 << 20, 3)
    );
    assert!(!target.join("old.bin").exists());
}

#[test]
fn dry_run_prune_changes_nothing() {
    let env = Env::init_local();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), random_bytes(1 << 20, 1)).unwrap();
    env.backup(&src, &[]);
    std::fs::write(src.join("a"), random_bytes(1 << 20, 2)).unwrap();
    env.backup(&src, &[]);
    env.run(&["forget", "--keep-last", "1"]).ok();
    let objects_before = (
        env.objects("data"),
        env.objects("index"),
        env.objects("prune"),
    );
    let r = env.json(&["repo", "prune", "--dry-run"]);
    assert_eq!(r["dry_run"], true);
    assert!(r["packs_marked"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(
        (
            env.objects("data"),
            env.objects("index"),
            env.objects("prune")
        ),
        objects_before
    );
}

#[test]
fn prune_merges_many_small_packs() {
    let env = Env::init_local();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..10u64 {
        std::fs::write(
            src.join(format!("f{i}.bin")),
            random_bytes(200 << 10, 100 + i),
        )
        .unwrap();
        env.backup(&src, &[]);
    }
    let before = env.objects("data").len();
    let first = env.json(&["repo", "prune"]);
    assert!(first["packs_repacked"].as_u64().unwrap() >= 10, "{first}");
    let second = env.json(&["repo", "prune", "--grace", "0s"]);
    assert!(second["packs_deleted"].as_u64().unwrap() >= 10, "{second}");
    let after = env.objects("data").len();
    assert!(after * 4 < before, "{before} packs before, {after} after");
    env.run(&["repo", "check", "--read-data"]).ok();
    let target = env.path("restored");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    for i in 0..10u64 {
        assert_eq!(
            std::fs::read(target.join(format!("f{i}.bin"))).unwrap(),
            random_bytes(200 << 10, 100 + i)
        );
    }
}
