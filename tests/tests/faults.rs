//! Damage and interruptions: each leaves the repository consistent and says what is
//! wrong, naming the pack and the snapshots affected.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ballast_tests::{random_bytes, trees, Env};

fn largest(files: Vec<PathBuf>) -> PathBuf {
    files
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a pack")
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_flipped_byte_in_a_pack_is_found_and_named() {
    let env = Env::init_local();
    let src = env.path("src");
    trees::sample(&src);
    let id = env.backup(&src, &[]);
    let pack = largest(env.objects("data"));
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&pack, &bytes).unwrap();

    let out = env.run(&["repo", "check", "--read-data"]).expect_code(12);
    assert!(
        out.stdout.contains(&name(&pack)),
        "the pack is named:\n{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("affects snapshots {}", &id[..8])),
        "the snapshot is named:\n{}",
        out.stdout
    );
    let json = env
        .run(&["repo", "check", "--read-data", "--json"])
        .expect_code(12)
        .json();
    assert_eq!(json["problems"][0]["snapshots"][0], id[..8]);

    // A restore still restores every file it can, and names the ones it cannot.
    let target = env.path("restored");
    let out = env
        .run(&["restore", &id, "--target", target.to_str().unwrap()])
        .expect_code(1);
    assert!(
        out.stdout.contains("incomplete") && out.stdout.contains("fails authentication"),
        "{}",
        out.stdout
    );
    assert_eq!(
        std::fs::read(target.join("etc/app.yaml")).unwrap(),
        std::fs::read(src.join("etc/app.yaml")).unwrap()
    );
}

#[test]
fn a_truncated_pack_fails_the_structure_check() {
    let env = Env::init_local();
    let src = env.path("src");
    trees::sample(&src);
    let id = env.backup(&src, &[]);
    let pack = largest(env.objects("data"));
    let len = std::fs::metadata(&pack).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len - 1000)
        .unwrap();
    let out = env.run(&["repo", "check"]).expect_code(12);
    assert!(
        out.stdout.contains(&name(&pack)) && out.stdout.contains("truncated"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(&id[..8]), "{}", out.stdout);
    let out = env.run(&["repo", "check", "--read-data"]).expect_code(12);
    assert!(out.stdout.contains(&name(&pack)), "{}", out.stdout);
}

#[test]
fn a_missing_index_delta_is_detected_and_repaired() {
    let env = Env::init_local();
    let src = env.path("src");
    trees::sample(&src);
    env.backup(&src, &[]);
    std::fs::write(src.join("more.bin"), random_bytes(2_000_000, 9)).unwrap();
    let second = env.backup(&src, &[]);
    let index = env.objects("index");
    assert_eq!(index.len(), 2, "one delta per backup");
    std::fs::remove_file(&index[0]).unwrap();

    let out = env.run(&["repo", "check"]).expect_code(12);
    assert!(out.stdout.contains("repair-index"), "{}", out.stdout);
    env.run(&["repo", "repair-index"]).ok();
    env.run(&["repo", "check", "--read-data"]).ok();
    let target = env.path("restored");
    env.run(&["restore", &second, "--target", target.to_str().unwrap()])
        .ok();
    trees::assert_same(&src, &target);
}

fn wait_for_pack(env: &Env, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while env.objects("data").is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before its first pack was seen"
        );
        assert!(Instant::now() < deadline, "no pack appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn big_source(env: &Env, mib: usize) -> PathBuf {
    let src = env.path("big");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..(mib / 32) {
        std::fs::write(
            src.join(format!("part-{i:03}.bin")),
            random_bytes(32 << 20, i as u64 + 100),
        )
        .unwrap();
    }
    src
}

#[test]
fn a_backup_killed_halfway_leaves_no_snapshot_and_its_data_is_reused() {
    let env = Env::init_local();
    let src = big_source(&env, 384);
    let mut child = env
        .cmd(&["backup", "path", src.to_str().unwrap()])
        .spawn()
        .unwrap();
    wait_for_pack(&env, &mut child);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    assert!(
        env.snapshot_ids().is_empty(),
        "an interrupted backup must not look complete"
    );
    let uploaded = env.objects("data").len();
    assert!(uploaded >= 1);
    let check = env.run(&["repo", "check"]).ok();
    assert!(check.stdout.contains("not indexed yet"), "{}", check.stdout);

    let v = env.json(&["backup", "path", src.to_str().unwrap()]);
    let s = &v["snapshot"]["summary"];
    let total = s["total_bytes"].as_u64().unwrap();
    let new = s["bytes_new"].as_u64().unwrap();
    assert!(
        new + (uploaded as u64 - 1) * (30 << 20) <= total,
        "packs of the killed backup are reused: {s}"
    );
    let check = env.run(&["repo", "check", "--read-data"]).ok();
    assert!(
        !check.stdout.contains("not indexed yet"),
        "{}",
        check.stdout
    );
    let target = env.path("restored");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    trees::assert_same(&src, &target);
}

#[test]
fn two_backups_at_once_both_succeed() {
    let env = Env::init_local();
    let (a, b) = (env.path("a"), env.path("b"));
    let shared = random_bytes(8 << 20, 42);
    for (dir, seed) in [(&a, 1u64), (&b, 2)] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("own.bin"), random_bytes(48 << 20, seed)).unwrap();
        std::fs::write(dir.join("shared.bin"), &shared).unwrap();
    }
    let mut ca = env
        .cmd(&["backup", "path", a.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut cb = env
        .cmd(&["backup", "path", b.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(ca.wait().unwrap().success());
    assert!(cb.wait().unwrap().success());
    assert_eq!(env.snapshot_ids().len(), 2);
    env.run(&["repo", "check", "--read-data"]).ok();
    for (dir, i) in [(&a, 0), (&b, 1)] {
        let target = env.path(&format!("restored-{i}"));
        let snaps = env.json(&["snapshots"]);
        let id = snaps
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["snapshot"]["source"]["paths"][0] == dir.to_str().unwrap())
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        env.run(&["restore", &id, "--target", target.to_str().unwrap()])
            .ok();
        trees::assert_same(dir, &target);
    }
}

#[test]
fn prune_during_a_backup_does_not_harm_it() {
    let env = Env::init_local();
    let src = big_source(&env, 256);
    let mut child = env
        .cmd(&["backup", "path", src.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_pack(&env, &mut child);
    // Hold the backup where it is (packs uploaded, nothing indexed), so that the prune
    // certainly runs before the backup writes its index.
    let pid = child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let pruned = env.json(&["repo", "prune"]);
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(
        pruned["packs_marked"], 0,
        "the running backup's packs are younger than the grace period: left alone: {pruned}"
    );
    assert!(
        pruned["packs_young_unindexed"].as_u64().unwrap() >= 1,
        "{pruned}"
    );
    assert_eq!(pruned["packs_deleted"], 0);
    assert!(child.wait().unwrap().success());
    env.run(&["repo", "check", "--read-data"]).ok();
    let target = env.path("restored");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    trees::assert_same(&src, &target);
}

/// A backup that outlives prune's grace period: a prune marks its unindexed packs
/// and a later one deletes them. The backup must not record a snapshot that points
/// at them; the next backup stores the data anew.
#[test]
fn a_backup_whose_own_packs_were_pruned_while_it_ran_is_not_recorded() {
    let env = Env::init_local();
    let src = big_source(&env, 256);
    let mut child = env
        .cmd(&["backup", "path", src.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_pack(&env, &mut child);
    let pid = child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // With no grace, the held backup's packs are old enough: marked, then deleted.
    let marked = env.json(&["repo", "prune", "--grace", "0s"]);
    assert!(marked["packs_marked"].as_u64().unwrap() >= 1, "{marked}");
    let deleted = env.json(&["repo", "prune", "--grace", "0s"]);
    assert!(deleted["packs_deleted"].as_u64().unwrap() >= 1, "{deleted}");
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the backup must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("it was not recorded"), "{stderr}");
    assert!(env.snapshot_ids().is_empty());
    env.run(&["repo", "check"]).ok();
    env.backup(&src, &[]);
    let target = env.path("restored");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    trees::assert_same(&src, &target);
}

#[test]
fn a_damaged_snapshot_record_is_reported_and_does_not_block_the_others() {
    let env = Env::init_local();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"one").unwrap();
    let first = env.backup(&src, &[]);
    std::fs::write(src.join("a"), b"two").unwrap();
    let second = env.backup(&src, &[]);
    let record = env.repo_path().join("snapshots").join(&first);
    let mut bytes = std::fs::read(&record).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&record, bytes).unwrap();

    let ids = env.snapshot_ids();
    assert_eq!(
        ids,
        vec![second.clone()],
        "the readable snapshot is still listed"
    );
    let out = env.run(&["repo", "check"]).expect_code(12);
    assert!(
        out.stdout
            .contains(&format!("snapshot record snapshots/{first}")),
        "{}",
        out.stdout
    );
    std::fs::write(src.join("a"), b"three").unwrap();
    env.backup(&src, &[]);
}

#[test]
fn a_missing_pack_leaves_other_files_restored_and_names_the_rest() {
    let env = Env::init_local();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("small.txt"), b"small").unwrap();
    env.backup(&src, &[]);
    let first_packs = env.objects("data");
    // small.txt stays in the first backup's pack; big.bin goes into new packs.
    std::fs::write(src.join("big.bin"), random_bytes(40 << 20, 77)).unwrap();
    let id = env.backup(&src, &[]);
    let pack = largest(
        env.objects("data")
            .into_iter()
            .filter(|p| !first_packs.contains(p))
            .collect(),
    );
    std::fs::remove_file(&pack).unwrap();
    let target = env.path("restored");
    let out = env
        .run(&["restore", &id, "--target", target.to_str().unwrap()])
        .expect_code(1);
    assert!(
        out.stdout.contains("big.bin") && out.stdout.contains("incomplete"),
        "{}",
        out.stdout
    );
    assert_eq!(std::fs::read(target.join("small.txt")).unwrap(), b"small");
    let check = env.run(&["repo", "check"]).expect_code(12);
    assert!(
        check.stdout.contains(&name(&pack)) && check.stdout.contains("missing"),
        "{}",
        check.stdout
    );
}

#[test]
fn a_sampled_read_finds_a_flipped_byte_in_the_part_that_holds_it() {
    let env = Env::init_local();
    let src = env.path("src");
    trees::sample(&src);
    env.backup(&src, &[]);
    let packs = env.objects("data").len();
    let pack = largest(env.objects("data"));
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&pack, &bytes).unwrap();

    // Parts 1/3 to 3/3 read every pack exactly once between them, and the one that
    // holds the damaged pack says so.
    let mut read = 0;
    let mut found = 0;
    for n in 1..=3 {
        let part = format!("{n}/3");
        let out = env.run(&["repo", "check", "--read-data-subset", &part, "--json"]);
        let v = out.json();
        read += v["packs_read"].as_u64().unwrap();
        match out.code {
            0 => assert!(v["problems"].as_array().unwrap().is_empty()),
            12 => {
                found += 1;
                assert!(out.stdout.contains(&name(&pack)), "{}", out.stdout);
            }
            c => panic!("exit {c}: {}", out.stderr),
        }
    }
    assert_eq!(read as usize, packs);
    assert_eq!(found, 1);
    let all = env
        .run(&["repo", "check", "--read-data-subset", "100%", "--json"])
        .expect_code(12);
    assert_eq!(all.json()["packs_read"].as_u64().unwrap() as usize, packs);
    // A share of a handful of packs is still one pack (the damaged one, or not).
    let some = env.run(&["repo", "check", "--read-data-subset", "1%", "--json"]);
    assert!([0, 12].contains(&some.code), "{}", some.stderr);
    assert_eq!(some.json()["packs_read"], 1);
    let out = env
        .run(&["repo", "check", "--read-data-subset", "0%"])
        .expect_code(2);
    assert!(out.stderr.contains("more than 0%"), "{}", out.stderr);
}
