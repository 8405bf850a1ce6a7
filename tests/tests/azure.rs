//! The repository on a real Azure Blob endpoint (Azurite on loopback).

use ballast_tests::azurite::Azurite;
use ballast_tests::{trees, Env};

fn az_env(a: &Azurite, url: &str) -> Env {
    let mut env = Env::with_repo(tempfile::tempdir().unwrap(), url.into());
    env.vars.extend(a.vars());
    env
}

#[test]
fn backup_check_and_restore_on_azure_blob() {
    let a = Azurite::start();
    a.create_container("backups");
    let env = az_env(&a, "az://backups/cluster-a");
    env.run(&["repo", "init"]).ok();
    let src = env.path("src");
    trees::sample(&src);
    env.backup(&src, &[]);
    let second = env.json(&["backup", "path", src.to_str().unwrap()]);
    assert_eq!(second["snapshot"]["summary"]["bytes_read"], 0);
    let check = env.json(&["repo", "check", "--read-data"]);
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
    let target = env.path("restored");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    trees::assert_same(&src, &target);
}

#[test]
fn missing_container_is_named() {
    let a = Azurite::start();
    let env = az_env(&a, "az://no-such-container/x");
    let out = env.run(&["repo", "init"]).expect_code(1);
    assert!(
        out.stderr
            .contains("az://no-such-container/x: the bucket does not exist"),
        "{}",
        out.stderr
    );
}
