//! The command line's own promises: secrets stay out of `--help`, `--json` failures
//! are JSON, and a missing repository is a usage error.

use std::process::Command;

use ballast_tests::{ballast_bin, Env};

fn ballast(args: &[&str]) -> Command {
    let mut c = Command::new(ballast_bin());
    c.args(args)
        .env_remove("BALLAST_REPO")
        .env_remove("BALLAST_PASSWORD");
    c
}

#[test]
fn help_never_shows_the_values_of_secret_variables() {
    let out = ballast(&["etcd", "snapshot", "--help"])
        .env("ETCDCTL_USER", "root:user-secret-4711")
        .env("ETCDCTL_PASSWORD", "password-secret-4711")
        .env("BALLAST_REPO", "s3://key:repo-secret-4711@bucket/prefix")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    // The variables are named, so the test looks at the right place.
    assert!(
        help.contains("ETCDCTL_USER")
            && help.contains("ETCDCTL_PASSWORD")
            && help.contains("BALLAST_REPO"),
        "{help}"
    );
    assert!(!help.contains("secret-4711"), "{help}");
}

#[test]
fn no_repository_given_is_a_usage_error() {
    let out = ballast(&["snapshots"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no repository given") && stderr.contains("BALLAST_REPO"),
        "{stderr}"
    );
}

/// With `--json`, a failure prints an error object on stdout (and the message on
/// stderr): for errors found while running and for errors in the arguments.
#[test]
fn json_failures_are_json_objects() {
    let error = |out: &std::process::Output| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
        v["error"].clone()
    };
    let out = ballast(&["snapshots", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = error(&out);
    assert_eq!(e["kind"], "usage");
    assert_eq!(e["exit_code"], 2);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("no repository given"),
        "{e}"
    );

    let env = Env::local();
    let out = env.cmd(&["snapshots", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(10));
    let e = error(&out);
    assert_eq!(e["kind"], "no_repository");
    assert!(
        e["message"].as_str().unwrap().contains("ballast repo init"),
        "{e}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: "));

    let out = ballast(&["snapshots", "--json", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = error(&out);
    assert_eq!(e["kind"], "usage");
    assert!(
        e["message"].as_str().unwrap().contains("--no-such-flag"),
        "{e}"
    );
}

#[test]
fn a_location_with_credentials_is_refused_without_repeating_them() {
    let out = ballast(&[
        "--repo",
        "s3://AKIAEXAMPLE:repo-secret-4711@bucket/p",
        "snapshots",
        "--json",
    ])
    .env("BALLAST_PASSWORD", "x")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("carries credentials"), "{all}");
    assert!(
        !all.contains("repo-secret-4711") && !all.contains("AKIAEXAMPLE"),
        "{all}"
    );
}
