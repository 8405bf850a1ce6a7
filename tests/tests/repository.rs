//! Creating and opening repositories: passwords, key files, key management, and the
//! errors for a wrong password or a location that is not a repository.

use ballast_tests::{Env, PASSWORD};

#[test]
fn wrong_password_is_refused_without_echoing_it() {
    let mut env = Env::init_local();
    env.run(&["snapshots"]).ok();
    env.vars.retain(|(k, _)| k != "BALLAST_PASSWORD");
    env.vars
        .push(("BALLAST_PASSWORD".into(), "not-the-password-4711".into()));
    let out = env.run(&["snapshots"]).expect_code(11);
    assert!(out.stderr.contains("none of the 1 keys"), "{}", out.stderr);
    assert!(out.stderr.contains("BALLAST_PASSWORD"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("not-the-password-4711")
            && !out.stdout.contains("not-the-password-4711")
    );
}

#[test]
fn missing_password_says_how_to_give_one() {
    let mut env = Env::init_local();
    env.vars.retain(|(k, _)| k != "BALLAST_PASSWORD");
    let out = env.run(&["snapshots"]).expect_code(1);
    assert!(
        out.stderr.contains("no password: set BALLAST_PASSWORD"),
        "{}",
        out.stderr
    );
}

#[test]
fn location_that_is_not_a_repository() {
    let env = Env::local();
    // Does not exist at all.
    let out = env.run(&["snapshots"]).expect_code(10);
    assert!(
        out.stderr.contains("no such directory") && out.stderr.contains("ballast repo init"),
        "{}",
        out.stderr
    );
    // Exists, but holds something else.
    std::fs::create_dir_all(env.repo_path()).unwrap();
    std::fs::write(env.repo_path().join("unrelated.txt"), b"x").unwrap();
    let out = env.run(&["snapshots"]).expect_code(10);
    assert!(
        out.stderr.contains("is not a ballast repository"),
        "{}",
        out.stderr
    );
    let out = env.run(&["repo", "init"]).expect_code(1);
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);
    assert!(
        env.repo_path().join("unrelated.txt").exists(),
        "init must not touch what is there"
    );
}

#[test]
fn init_twice_is_refused() {
    let env = Env::init_local();
    let out = env.run(&["repo", "init"]).expect_code(1);
    assert!(
        out.stderr.contains("already holds a ballast repository"),
        "{}",
        out.stderr
    );
    env.run(&["snapshots"]).ok();
}

#[test]
fn keys_can_be_added_removed_and_changed_without_rewriting_data() {
    let mut env = Env::init_local();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"payload").unwrap();
    env.backup(&src, &[]);
    let packs_before = env.objects("data");

    // A second password.
    let mut add = env.cmd(&["key", "add", "--label", "ci", "--json"]);
    add.env("BALLAST_NEW_PASSWORD", "second password");
    let out = add.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = env.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert_eq!(
        keys.as_array()
            .unwrap()
            .iter()
            .filter(|k| k["current"] == true)
            .count(),
        1
    );
    assert!(!serde_json::to_string(&keys)
        .unwrap()
        .contains("second password"));

    // Open with it; the key in use cannot remove itself.
    let set_pw = |env: &mut Env, pw: &str| {
        env.vars.retain(|(k, _)| k != "BALLAST_PASSWORD");
        env.vars.push(("BALLAST_PASSWORD".into(), pw.into()));
    };
    set_pw(&mut env, "second password");
    let keys = env.json(&["key", "list"]);
    let current = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.run(&["key", "remove", &current]).expect_code(1);
    assert!(
        out.stderr.contains("is the one this command opened"),
        "{}",
        out.stderr
    );
    env.run(&["key", "remove", &other[..8]]).ok();
    set_pw(&mut env, PASSWORD);
    env.run(&["snapshots"]).expect_code(11);

    // Change the password of the remaining key.
    set_pw(&mut env, "second password");
    let mut passwd = env.cmd(&["key", "passwd"]);
    passwd.env("BALLAST_NEW_PASSWORD", "third password");
    assert!(passwd.output().unwrap().status.success());
    env.run(&["snapshots"]).expect_code(11);
    set_pw(&mut env, "third password");
    let target = env.path("restored");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read(target.join("f")).unwrap(), b"payload");
    assert_eq!(
        env.objects("data"),
        packs_before,
        "key changes must not rewrite data"
    );

    // A key file.
    let key_file = env.path("ballast.key");
    env.run(&["key", "add", "--new-key-file", key_file.to_str().unwrap()])
        .ok();
    env.vars.retain(|(k, _)| k != "BALLAST_PASSWORD");
    let out = env
        .run(&[
            "--key-file",
            key_file.to_str().unwrap(),
            "snapshots",
            "--json",
        ])
        .ok();
    assert_eq!(out.json().as_array().unwrap().len(), 1);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn repository_initialised_with_a_key_file() {
    let mut env = Env::local();
    env.vars.retain(|(k, _)| k != "BALLAST_PASSWORD");
    let key_file = env.path("k");
    env.run(&["repo", "init", "--new-key-file", key_file.to_str().unwrap()])
        .ok();
    env.run(&["--key-file", key_file.to_str().unwrap(), "snapshots"])
        .ok();
    std::fs::write(&key_file, "ballast-key-v1:00").unwrap();
    let out = env
        .run(&["--key-file", key_file.to_str().unwrap(), "snapshots"])
        .expect_code(1);
    assert!(
        out.stderr.contains("damaged ballast key file"),
        "{}",
        out.stderr
    );
}
