//! The plugin runtime from the command line: the catalog and its digests, the
//! compile cache, the policy's refusals, and `plugin new`.

use std::process::Command;

use ballast_tests::plugins::{built, component, env, root};

#[test]
fn catalog_digests_match_the_build() {
    built();
    let catalog = std::fs::read_to_string(root().join("guest-plugins/catalog.toml")).unwrap();
    let mut checked = 0;
    let mut entry = None;
    for line in catalog.lines() {
        if let Some(v) = line.strip_prefix("component = ") {
            entry = Some(v.trim_matches('"').to_string());
        }
        if let Some(v) = line.strip_prefix("sha256 = ") {
            let file = root()
                .join("guest-plugins")
                .join(entry.take().expect("component before sha256"));
            let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let actual = ballast::plugins::catalog::sha256_file(&file).unwrap();
            assert!(!bytes.is_empty());
            assert_eq!(
                v.trim_matches('"'),
                actual,
                "{}: the catalog's digest is stale; update it from `guest-plugins/build --digests`",
                file.display()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 4, "mysql, postgresql, quiesce-http, quiesce-exec");
    let env = env("plugins: []\n");
    let v = env.json(&["plugin", "verify"]);
    assert_eq!(v.as_array().unwrap().len(), 4, "{v}");
    assert!(v.as_array().unwrap().iter().all(|p| p["ok"] == true), "{v}");
    let list = env.json(&["plugin", "list"]);
    assert!(
        list.as_array().unwrap().iter().all(|p| p["state"] == "ok"),
        "{list}"
    );
}

#[test]
fn a_digest_mismatch_is_refused() {
    let env = env("plugins: []\n");
    let text = std::fs::read_to_string(root().join("guest-plugins/catalog.toml")).unwrap();
    // The same catalog in another place, pointing at the real components, with the
    // mysql digest changed.
    let dir = root().join("guest-plugins").display().to_string();
    let mut tampered = String::new();
    let mut in_mysql = false;
    for line in text.lines() {
        if line.starts_with("name = ") {
            in_mysql = line == "name = \"mysql\"";
        }
        if let Some(p) = line.strip_prefix("component = \"") {
            tampered += &format!("component = \"{dir}/{p}\n");
        } else if in_mysql && line.starts_with("sha256 = ") {
            tampered += &format!("sha256 = \"{}\"\n", "0".repeat(64));
        } else {
            tampered += line;
            tampered.push('\n');
        }
    }
    let catalog = env.path("catalog.toml");
    std::fs::write(&catalog, tampered).unwrap();
    let c = catalog.display().to_string();
    let out = env
        .run(&["plugin", "info", "mysql", "--catalog", &c])
        .expect_code(1);
    assert!(out.stderr.contains("refusing to run it"), "{out:?}");
    let out = env
        .run(&[
            "backup",
            "app",
            "--plugin",
            "mysql",
            "--target",
            "x",
            "--catalog",
            &c,
        ])
        .expect_code(1);
    assert!(out.stderr.contains("refusing to run it"), "{out:?}");
    let out = env
        .run(&["plugin", "verify", "--catalog", &c])
        .expect_code(1);
    assert!(out.stdout.contains("mysql: FAILED"), "{out:?}");
    assert!(out.stdout.contains("postgresql: ok"), "{out:?}");
}

#[test]
fn compiled_components_come_from_the_cache_the_second_time() {
    let env = env("plugins: []\n");
    let noop = component("noop");
    let first = env.json(&["plugin", "info", &noop]);
    assert_eq!(first["from_cache"], false, "{first}");
    assert_eq!(first["info"]["name"], "noop");
    assert_eq!(first["wit"], "0.1.0");
    let second = env.json(&["plugin", "info", &noop]);
    assert_eq!(second["from_cache"], true, "{second}");
    // A damaged cache entry is compiled again, not trusted.
    let entries: Vec<_> = walk(&env.path("cache"));
    assert_eq!(entries.len(), 1, "{entries:?}");
    std::fs::write(&entries[0], b"garbage").unwrap();
    let third = env.json(&["plugin", "info", &noop]);
    assert_eq!(third["from_cache"], false, "{third}");
    assert_eq!(env.json(&["plugin", "info", &noop])["from_cache"], true);
}

#[test]
fn a_cache_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let env = env("plugins: []\n");
    let noop = component("noop");
    env.json(&["plugin", "info", &noop]);
    let entry = walk(&env.path("cache")).pop().unwrap();
    let dir = entry.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.run(&["plugin", "info", &noop]).expect_code(1);
    assert!(out.stderr.contains("is writable by others"), "{out:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn a_plugin_needing_more_than_granted_is_refused_at_load() {
    let env = env("plugins: []\n");
    let out = env
        .run(&["hook", "run", "mysql", "--target", "db"])
        .expect_code(1);
    assert!(
        out.stderr.contains("plugin mysql needs sql, which")
            && out.stderr.contains("does not grant it"),
        "{out:?}"
    );
    // A policy with mistakes is named, not half-applied.
    let bad = env.path("bad.yaml");
    std::fs::write(&bad, "plugins: [{ name: mysql, targets: [ghost] }]\n").unwrap();
    let out = env
        .run(&[
            "hook",
            "run",
            "mysql",
            "--target",
            "db",
            "--policy",
            &bad.display().to_string(),
        ])
        .expect_code(1);
    assert!(
        out.stderr.contains("target ghost, which is not defined"),
        "{out:?}"
    );
}

#[test]
fn an_unreachable_database_is_a_clear_failure() {
    let env = env(r#"targets:
  - { name: down, kind: mysql, address: "127.0.0.1:1", user: root, database: nothing }
plugins:
  - name: mysql
    sha256: mysql
    targets: [down]
    programs: { mysqldump: /usr/bin/mysqldump }
"#);
    let out = env
        .run(&["backup", "app", "--plugin", "mysql", "--target", "down"])
        .expect_code(1);
    assert!(
        out.stdout
            .contains("connecting to target down (127.0.0.1:1)"),
        "{out:?}"
    );
    assert!(env.snapshot_ids().is_empty());
}

#[test]
fn a_new_plugin_builds_passes_its_test_and_runs() {
    let env = env("plugins: []\n");
    let dir = env.path("work");
    std::fs::create_dir(&dir).unwrap();
    let sdk = root().join("guest-plugins/sdk");
    env.run(&[
        "plugin",
        "new",
        "hello-app",
        "--dir",
        &dir.display().to_string(),
        "--sdk",
        &sdk.display().to_string(),
    ])
    .ok();
    let krate = dir.join("hello-app");
    let target_dir = env.path("target");
    let cargo = |args: &[&str]| {
        let out = Command::new("cargo")
            .args(args)
            .current_dir(&krate)
            .env("CARGO_TARGET_DIR", &target_dir)
            .output()
            .expect("cargo");
        assert!(
            out.status.success(),
            "cargo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cargo(&["test", "--quiet"]);
    cargo(&["build", "--release", "--quiet", "--target", "wasm32-wasip2"]);
    let wasm = target_dir
        .join("wasm32-wasip2/release/hello_app.wasm")
        .display()
        .to_string();
    let info = env.json(&["plugin", "info", &wasm]);
    assert_eq!(info["info"]["name"], "hello-app");
    let v = env.json(&["backup", "app", "--plugin", &wasm, "--target", "db"]);
    let id = v["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(v["snapshot"]["source"]["meta"]["plugin"], "hello-app");
    let out = env.run(&["verify", "app", &id, "--plugin", &wasm]).ok();
    assert!(out.stdout.contains("verify: ok"), "{out:?}");
    // The name is checked before anything is written.
    let out = env
        .run(&[
            "plugin",
            "new",
            "Bad_Name",
            "--dir",
            &dir.display().to_string(),
        ])
        .expect_code(1);
    assert!(out.stderr.contains("is not a plugin name"), "{out:?}");
}

#[test]
fn a_wrong_password_is_an_error_that_never_shows_the_password() {
    let db = ballast_tests::plugins::Mysql::create();
    let secret = "s3cret-that-must-not-leak";
    let mut env = env(&format!(
        r#"targets:
  - {{ name: db, kind: mysql, address: "127.0.0.1:3306", user: root, database: {}, password: {{ env: TEST_DB_PASSWORD }} }}
plugins:
  - name: mysql
    sha256: mysql
    targets: [db]
    programs: {}
"#,
        db.name,
        ballast_tests::plugins::MYSQL_PROGRAMS
    ));
    env.vars.push(("TEST_DB_PASSWORD".into(), secret.into()));
    for args in [
        vec!["backup", "app", "--plugin", "mysql", "--target", "db"],
        vec!["hook", "run", "mysql", "--target", "db", "-v", "-v"],
    ] {
        let out = env.run(&args).expect_code(1);
        assert!(out.stdout.contains("Access denied"), "{out:?}");
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "{out:?}"
        );
    }
    // The variable missing is named, not guessed around.
    env.vars.retain(|(k, _)| k != "TEST_DB_PASSWORD");
    let out = env
        .run(&["backup", "app", "--plugin", "mysql", "--target", "db"])
        .expect_code(1);
    assert!(
        out.stdout
            .contains("the environment variable TEST_DB_PASSWORD is not set"),
        "{out:?}"
    );
}

/// An installed binary (`PREFIX/bin/ballast`, outside any checkout, run from another
/// directory) finds the catalog `guest-plugins/build --install PREFIX` put in
/// `PREFIX/share/ballast`, and every listed component passes its digest check there.
/// Without one, the error names every place it looked.
#[test]
fn an_installed_binary_finds_its_catalog() {
    built();
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("usr-local");
    let out = Command::new("bash")
        .arg(root().join("guest-plugins/build"))
        .args(["--install", prefix.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let install = |prefix: &std::path::Path| {
        std::fs::create_dir_all(prefix.join("bin")).unwrap();
        let bin = prefix.join("bin/ballast");
        std::fs::copy(ballast_tests::ballast_bin(), &bin).unwrap();
        bin
    };
    let list = |bin: &std::path::Path| {
        Command::new(bin)
            .args(["plugin", "list", "--json"])
            .current_dir(tmp.path())
            .env_remove("BALLAST_CATALOG")
            .output()
            .unwrap()
    };
    let out = list(&install(&prefix));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert!(rows.len() >= 4, "{v}");
    for r in rows {
        assert_eq!(r["state"], "ok", "{r}");
        assert!(r["component"]
            .as_str()
            .unwrap()
            .starts_with(prefix.join("share/ballast/plugins").to_str().unwrap()));
    }

    let bare = tmp.path().join("opt");
    let out = list(&install(&bare));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no plugin catalog found")
            && stderr.contains(bare.join("share/ballast/catalog.toml").to_str().unwrap())
            && stderr.contains("--catalog"),
        "{stderr}"
    );
}
