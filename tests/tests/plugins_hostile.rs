//! Hostile plugins: each misbehaviour is stopped, named, and leaves nothing behind
//! (no snapshot record, no lock on the database).

use ballast_tests::plugins::{component, env, Mysql};
use ballast_tests::Env;

fn hostile_env(db: Option<&Mysql>) -> Env {
    let targets = db.map(|d| d.target("db")).unwrap_or_default();
    env(&format!(
        r#"targets:
{targets}plugins:
  - name: hostile
    sha256: hostile
    targets: [{}]
    limits: {{ memory: 32MiB, timeouts: {{ pre-backup: 2s, backup: 2s }} }}
"#,
        if db.is_some() { "db" } else { "" }
    ))
}

fn hook(env: &Env, attack: &str, extra: &[&str]) -> ballast_tests::Out {
    let c = component("hostile");
    let p = format!("attack={attack}");
    let mut args = vec![
        "hook",
        "run",
        c.as_str(),
        "--target",
        "db",
        "--phase",
        "pre-backup",
        "-p",
        p.as_str(),
    ];
    args.extend_from_slice(extra);
    env.run(&args)
}

#[test]
fn an_endless_loop_is_stopped_at_its_deadline_and_post_backup_still_runs() {
    let env = hostile_env(None);
    let out = hook(&env, "spin", &[]).expect_code(1);
    assert!(
        out.stdout.contains(
            "pre-backup did not finish within 2s (limits.timeouts.pre-backup in the policy)"
        ),
        "{out:?}"
    );
    // In backup: the dump fails, nothing is recorded, post-backup runs in a fresh
    // instance.
    let c = component("hostile");
    let out = env
        .run(&[
            "backup",
            "app",
            "--plugin",
            &c,
            "--target",
            "db",
            "-p",
            "attack=spin-backup",
        ])
        .expect_code(1);
    assert!(
        out.stdout
            .contains("backup: FAILED: plugin hostile: backup did not finish within 2s"),
        "{out:?}"
    );
    assert!(out.stdout.contains("post-backup: ok"), "{out:?}");
    assert!(
        out.stderr.contains("post-backup ran (recovery: 1)"),
        "{out:?}"
    );
    assert!(out.stderr.contains("no snapshot was recorded"), "{out:?}");
    assert!(env.snapshot_ids().is_empty());
}

#[test]
fn a_memory_bomb_stops_at_its_cap() {
    let env = hostile_env(None);
    let out = hook(&env, "memory", &[]).expect_code(1);
    assert!(
        out.stdout
            .contains("reached its memory limit of 32.0 MiB (limits.memory in the policy)"),
        "{out:?}"
    );
}

#[test]
fn host_files_sockets_and_environment_are_out_of_reach() {
    let env = hostile_env(None);
    let out = hook(&env, "file", &[]).expect_code(1);
    assert!(out.stdout.contains("reading /etc/passwd:"), "{out:?}");
    assert!(
        !out.stdout.contains("LEAKED") && !out.stdout.contains("root:x:"),
        "{out:?}"
    );
    // The repository's own files are as far away as /etc.
    let repo_config = env.repo_path().join("config");
    let path = format!("path={}", repo_config.display());
    let out = hook(&env, "file", &["-p", &path]).expect_code(1);
    assert!(!out.stdout.contains("LEAKED"), "{out:?}");

    // A listener that would accept the connection if the sandbox let it through.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("address={}", listener.local_addr().unwrap());
    let out = hook(&env, "socket", &["-p", &address]).expect_code(1);
    assert!(out.stdout.contains("connecting to 127.0.0.1:"), "{out:?}");
    assert!(!out.stdout.contains("LEAKED"), "{out:?}");

    let out = hook(&env, "env", &[]).expect_code(1);
    assert!(out.stdout.contains("environment: 0 variables"), "{out:?}");
}

#[test]
fn programs_urls_and_targets_not_granted_are_denied_by_name() {
    let env = hostile_env(None);
    let out = hook(&env, "program", &[]).expect_code(1);
    assert!(
        out.stdout.contains("pre-backup was denied: exec: program sh is not granted to plugin hostile (granted: none)"),
        "{out:?}"
    );
    let out = hook(&env, "url", &["-p", "url=http://127.0.0.1:9/x"]).expect_code(1);
    assert!(
        out.stdout
            .contains("http: URL http://127.0.0.1:9/x is not granted to plugin hostile"),
        "{out:?}"
    );
    let out = hook(&env, "sql", &["--json"]).expect_code(1);
    let v = out.json();
    let denied = v["denied"].as_array().unwrap();
    assert_eq!(denied.len(), 1, "{v}");
    assert!(
        denied[0]
            .as_str()
            .unwrap()
            .starts_with("target db is not granted to plugin hostile"),
        "{v}"
    );
}

#[test]
fn a_crash_mid_dump_records_nothing_and_leaves_the_database_unlocked() {
    let db = Mysql::create();
    let env = hostile_env(Some(&db));
    let c = component("hostile");
    let out = env
        .run(&[
            "backup",
            "app",
            "--plugin",
            &c,
            "--target",
            "db",
            "-p",
            "attack=trap-mid-dump",
        ])
        .expect_code(1);
    assert!(out.stderr.contains("tables read-locked"), "{out:?}");
    assert!(
        out.stdout
            .contains("backup: FAILED: plugin hostile: backup crashed"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("the plugin crashed in the middle of its dump"),
        "{out:?}"
    );
    // post-backup ran in a fresh instance, after the crashed one's session (and its
    // FLUSH TABLES WITH READ LOCK) was closed: its write went through.
    assert!(
        out.stderr.contains("post-backup ran (recovery: 1)"),
        "{out:?}"
    );
    assert!(out.stderr.contains("the database takes writes"), "{out:?}");
    assert!(out.stdout.contains("post-backup: ok"), "{out:?}");
    assert_eq!(db.sql("SELECT COUNT(*) FROM hostile_probe").trim(), "1");
    // A query too big to hold is cut off, not buffered.
    let out = hook(&env, "big-query", &[]).expect_code(1);
    assert!(
        out.stdout
            .contains("the query returned more than 100000 rows"),
        "{out:?}"
    );
    assert!(
        env.snapshot_ids().is_empty(),
        "a failed dump must not look like a backup"
    );
    // The half-written dump left packs, but the repository is consistent.
    env.run(&["repo", "check"]).ok();
}

#[test]
fn components_built_for_another_api_or_none_are_refused() {
    let env = hostile_env(None);
    let out = env
        .run(&["plugin", "info", &component("wrong-version")])
        .expect_code(1);
    assert!(
        out.stderr
            .contains("is built for ballast:plugin@0.2.0; this ballast serves 0.1.0"),
        "{out:?}"
    );
    let cmd = ballast_tests::plugins::built().join("not-a-plugin.wasm");
    let out = env
        .run(&["plugin", "info", &cmd.display().to_string()])
        .expect_code(1);
    assert!(
        out.stderr
            .contains("is not a ballast plugin: it exports no ballast:plugin/hooks"),
        "{out:?}"
    );
    let junk = env.path("junk.wasm");
    std::fs::write(&junk, b"\0asm not really").unwrap();
    let out = env
        .run(&["plugin", "info", &junk.display().to_string()])
        .expect_code(1);
    assert!(
        out.stderr.contains("is not a WebAssembly component"),
        "{out:?}"
    );
}

#[test]
fn a_plugin_cannot_point_a_granted_program_at_another_server() {
    let env = env(r#"targets:
  - { name: db, kind: mysql, address: "127.0.0.1:3306", user: root, password: { env: NOT_NEEDED } }
plugins:
  - name: hostile
    sha256: hostile
    targets: [db]
    programs: { mysqldump: { path: /usr/bin/mysqldump, args: ["**"] } }
"#);
    let out = hook(&env, "redirect", &[]).expect_code(1);
    assert!(
        out.stdout.contains(
            "argument \"--host=127.0.0.2\" of mysqldump is refused: a MySQL client may not be pointed at another server"
        ),
        "{out:?}"
    );
}

#[test]
fn a_granted_url_cannot_be_sent_to_another_virtual_host() {
    let env = env("plugins:\n  - { name: hostile, urls: [\"http://127.0.0.1:9/\"] }\n");
    let out = hook(&env, "host-header", &["-p", "url=http://127.0.0.1:9/x"]).expect_code(1);
    assert!(
        out.stdout
            .contains("http: the header Host is set by ballast, not by plugins"),
        "{out:?}"
    );
}

/// When post-backup runs: after a pre-backup that succeeded, trapped or timed out
/// (it may have frozen something before it ended), not after one that failed
/// cleanly; a failed post-backup is tried once more in a fresh instance.
#[test]
fn post_backup_runs_after_every_pre_backup_that_did_not_fail_cleanly() {
    let env = hostile_env(None);
    let c = component("hostile");
    let run = |attack: &str| {
        env.run(&[
            "hook",
            "run",
            &c,
            "--target",
            "db",
            "-p",
            &format!("attack={attack}"),
        ])
    };
    // Trapped after its effect: post-backup runs, in recovery.
    let out = run("trap-after-effect").expect_code(1);
    assert!(out.stderr.contains("quiesced"), "{out:?}");
    assert!(
        out.stdout
            .contains("pre-backup: FAILED: plugin hostile: pre-backup crashed"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("post-backup ran (recovery: 1)"),
        "{out:?}"
    );
    assert!(out.stdout.contains("post-backup: ok"), "{out:?}");
    // Timed out: the same.
    let out = run("spin").expect_code(1);
    assert!(
        out.stdout.contains("pre-backup did not finish within 2s"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("post-backup ran (recovery: 1)"),
        "{out:?}"
    );
    // Failed cleanly: post-backup does not run, and the report says so (it used to
    // say "ok").
    let out = run("fail-cleanly").expect_code(1);
    assert!(
        out.stdout.contains("pre-backup gives up cleanly"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("post-backup: not run: pre-backup failed cleanly"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("post-backup ran"), "{out:?}");
    // A post-backup that fails is tried once more, in a fresh instance.
    let out = run("post-fails-once").ok();
    assert!(
        out.stderr.contains("post-backup ran (recovery: 0)"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("trying once more in a fresh instance"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("post-backup ran (recovery: 1)"),
        "{out:?}"
    );
    assert!(out.stdout.contains("post-backup: ok"), "{out:?}");
}

/// SIGTERM (a Job's deadline, an eviction) while the dump runs: the dump stops,
/// post-backup still runs, nothing is recorded, and the exit code says which signal.
#[test]
fn a_signal_stops_the_dump_but_not_post_backup() {
    use std::io::{BufRead, BufReader, Read};
    let env = hostile_env(None);
    let c = component("hostile");
    let mut child = env
        .cmd(&[
            "backup",
            "app",
            "--plugin",
            &c,
            "--target",
            "db",
            "-p",
            "attack=spin-backup",
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the state the test needs (the dump is running), not for a time.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    for line in stderr.by_ref().lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("backup started") {
            break;
        }
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!("{seen}{rest}");
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGTERM),
        "{stdout}\n{all}"
    );
    assert!(
        stdout.contains("backup: FAILED: backup was stopped by SIGTERM"),
        "{stdout}"
    );
    assert!(all.contains("post-backup ran (recovery: 1)"), "{all}");
    assert!(stdout.contains("post-backup: ok"), "{stdout}");
    assert!(all.contains("no snapshot was recorded"), "{all}");
    assert!(env.snapshot_ids().is_empty());
}

/// The plugin's scratch directory has a quota, and what the host holds for it
/// (query rows, program output, response bodies) has one budget.
#[test]
fn scratch_and_host_buffers_have_limits() {
    let db = Mysql::create();
    let env = env(&format!(
        r#"targets:
{}plugins:
  - name: hostile
    sha256: hostile
    targets: [db]
    limits: {{ scratch: 8MiB, buffers: 16MiB }}
"#,
        db.target("db")
    ));
    if unsafe { libc::geteuid() } == 0 {
        let out = hook(&env, "scratch", &[]).expect_code(1);
        let written: u64 = out
            .stdout
            .split("SCRATCH ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{out:?}"));
        // The tmpfs refuses the write that would pass the quota (WASI reports the
        // host's "no space left" as an I/O error).
        assert!(written <= 8 << 20, "wrote {written} bytes: {out:?}");
        assert!(out.stdout.contains("bytes, then:"), "{out:?}");
    }
    let out = hook(&env, "buffers", &[]).expect_code(1);
    assert!(out.stdout.contains("after 0 results held"), "{out:?}");
    assert!(
        out.stdout.contains("limits.buffers in the policy"),
        "{out:?}"
    );
}
