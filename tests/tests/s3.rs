//! The repository on a real S3-compatible server (Garage on loopback).

use ballast_tests::garage::Garage;
use ballast_tests::{random_bytes, trees, Env};

fn s3_env(g: &Garage, prefix: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env::with_repo(dir, format!("s3://{}/{prefix}", g.bucket));
    env.vars.extend(g.vars());
    env
}

#[test]
fn backup_check_and_restore_on_s3() {
    let g = Garage::start();
    let env = s3_env(&g, "team-a/repo");
    env.run(&["repo", "init"]).ok();
    let src = env.path("src");
    trees::sample(&src);
    let first = env.json(&["backup", "path", src.to_str().unwrap()]);
    assert!(first["requests"]["put"].as_u64().unwrap() >= 3, "{first}");
    let second = env.json(&["backup", "path", src.to_str().unwrap()]);
    assert_eq!(second["snapshot"]["summary"]["bytes_read"], 0);
    let check = env.json(&["repo", "check", "--read-data"]);
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
    assert_eq!(check["snapshots"], 2);
    let target = env.path("restored");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    trees::assert_same(&src, &target);
    // A second repository under another prefix of the same bucket is independent.
    let other = s3_env(&g, "team-b/repo");
    other.run(&["snapshots"]).expect_code(10);
}

#[test]
fn missing_bucket_is_named() {
    let g = Garage::start();
    let mut env = s3_env(&g, "x");
    env.repo = "s3://no-such-bucket/x".into();
    let out = env.run(&["repo", "init"]).expect_code(1);
    assert!(
        out.stderr
            .contains("s3://no-such-bucket/x: the bucket does not exist"),
        "{}",
        out.stderr
    );
}

#[test]
fn wrong_credentials_are_named_and_not_echoed() {
    let g = Garage::start();
    let env = s3_env(&g, "repo");
    env.run(&["repo", "init"]).ok();
    let mut bad = s3_env(&g, "repo");
    bad.vars.retain(|(k, _)| k != "AWS_SECRET_ACCESS_KEY");
    bad.vars.push((
        "AWS_SECRET_ACCESS_KEY".into(),
        "0000wrong-secret-value0000".into(),
    ));
    let out = bad.run(&["snapshots"]).expect_code(1);
    assert!(out.stderr.contains("access denied"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("0000wrong-secret-value0000") && !out.stderr.contains(&g.secret),
        "{}",
        out.stderr
    );
    let mut unknown = s3_env(&g, "repo");
    unknown.vars.retain(|(k, _)| k != "AWS_ACCESS_KEY_ID");
    unknown.vars.push((
        "AWS_ACCESS_KEY_ID".into(),
        "GK000000000000000000000000".into(),
    ));
    let out = unknown.run(&["snapshots"]).expect_code(1);
    assert!(out.stderr.contains("access denied"), "{}", out.stderr);
}

#[test]
fn new_data_goes_up_in_few_large_puts() {
    let g = Garage::start();
    let env = s3_env(&g, "puts");
    env.run(&["repo", "init"]).ok();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        std::fs::write(src.join(format!("{i}.bin")), random_bytes(32 << 20, i)).unwrap();
    }
    let v = env.json(&["backup", "path", src.to_str().unwrap()]);
    let puts = v["requests"]["put"].as_u64().unwrap();
    // 256 MiB of new data: 8 data packs, one tree pack, one index delta, one snapshot.
    assert!(puts <= 12, "{puts} PUTs for 256 MiB: {v}");
    assert!(
        v["snapshot"]["summary"]["packs_uploaded"].as_u64().unwrap() <= 10,
        "{v}"
    );
}

/// The lease that keeps prunes apart works on a store that ignores `If-None-Match`
/// (Garage 2.5 overwrites on a second conditional PUT): it needs only that the store
/// lists what was just written.
#[test]
fn prunes_are_exclusive_on_s3() {
    let g = Garage::start();
    let env = s3_env(&g, "lease/repo");
    env.run(&["repo", "init"]).ok();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), random_bytes(100_000, 9)).unwrap();
    env.backup(&src, &[]);
    for (k, v) in g.vars() {
        std::env::set_var(k, v);
    }
    let location = ballast::store::Location::parse(&env.repo).unwrap();
    let store = ballast::store::Store::connect(&location, &Default::default()).unwrap();
    let secret = ballast::repo::keys::Secret::Password(zeroize::Zeroizing::new(
        ballast_tests::PASSWORD.to_string(),
    ));
    let repo = ballast::repo::Repository::open(store, &secret).unwrap();
    let lease = ballast::repo::lease::Lease::acquire(&repo, "prune").unwrap();
    let out = env.run(&["repo", "prune"]).expect_code(13);
    assert!(out.stderr.contains("prune by"), "{}", out.stderr);
    env.run(&["forget", "--keep-last", "1"]).expect_code(13);
    env.backup(&src, &[]);
    lease.release().unwrap();
    env.run(&["repo", "prune"]).ok();
    env.run(&["forget", "--keep-last", "1", "--prune"]).ok();
    let check = env.json(&["repo", "check", "--read-data"]);
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
}
