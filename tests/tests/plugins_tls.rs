//! Database targets over TLS, for the host's sessions and the targets' client
//! programs, against this machine's MariaDB and PostgreSQL configured by
//! `.ci/databases` (a test CA in /etc/ballast-test/tls; a user `ballast_tls` that
//! the servers let in over TLS only, so a plaintext connection cannot pass unseen).

use ballast_tests::plugins::{env, Mysql, Postgres, MYSQL_PROGRAMS, POSTGRES_PROGRAMS};

const CA: &str = "/etc/ballast-test/tls/ca.pem";

fn mysql_target(name: &str, db: &Mysql, tls: &str) -> String {
    format!(
        "  - {{ name: {name}, kind: mysql, address: \"127.0.0.1:3306\", user: ballast_tls, database: {}{tls} }}\n",
        db.name
    )
}

fn pg_target(name: &str, db: &Postgres, tls: &str) -> String {
    format!(
        "  - {{ name: {name}, kind: postgresql, address: \"127.0.0.1:5432\", user: ballast_tls, database: {}{tls} }}\n",
        db.name
    )
}

#[test]
fn mysql_sessions_and_clients_speak_tls() {
    let (src, dst) = (Mysql::create(), Mysql::create());
    src.sql("CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'over tls'), (2, 'still')");
    let tls = format!(", tls: {{ mode: verify-full, ca: {CA} }}");
    let env = env(&format!(
        "targets:\n{}{}plugins:\n  - {{ name: mysql, sha256: mysql, targets: [src, dst], programs: {MYSQL_PROGRAMS} }}\n",
        mysql_target("src", &src, &tls),
        mysql_target("dst", &dst, &tls)
    ));
    // The quiesce hook opens a session; the dump runs mysqldump; the restore runs
    // mysql. ballast_tls gets in over TLS only.
    let out = env.run(&["hook", "run", "mysql", "--target", "src"]).ok();
    assert!(
        out.stderr.contains("tables flushed and read-locked"),
        "{out:?}"
    );
    let v = env.json(&["backup", "app", "--plugin", "mysql", "--target", "src"]);
    let id = v["snapshot_id"].as_str().unwrap().to_string();
    env.run(&["restore", "app", &id, "--target", "dst"]).ok();
    assert_eq!(
        dst.sql("SELECT GROUP_CONCAT(v ORDER BY id) FROM t").trim(),
        "over tls,still"
    );
}

#[test]
fn postgresql_sessions_and_clients_speak_tls() {
    let (src, dst) = (Postgres::create(), Postgres::create());
    src.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'over tls')");
    let tls = format!(", tls: {{ mode: verify-full, ca: {CA} }}");
    let env = env(&format!(
        "targets:\n{}{}plugins:\n  - {{ name: postgresql, sha256: postgresql, targets: [src, dst], programs: {POSTGRES_PROGRAMS} }}\n",
        pg_target("src", &src, &tls),
        pg_target("dst", &dst, &tls)
    ));
    let out = env
        .run(&["hook", "run", "postgresql", "--target", "src"])
        .ok();
    assert!(out.stdout.contains("post-backup: ok"), "{out:?}");
    let v = env.json(&["backup", "app", "--plugin", "postgresql", "--target", "src"]);
    let id = v["snapshot_id"].as_str().unwrap().to_string();
    env.run(&["verify", "app", &id]).ok();
    env.run(&["restore", "app", &id, "--target", "dst"]).ok();
    assert_eq!(dst.sql("SELECT v FROM t").trim(), "over tls");
}

/// Without TLS the servers turn ballast_tls away, and the error says to set `tls`;
/// with the wrong CA, the certificate is refused and the error says what to check;
/// `require` encrypts without checking.
#[test]
fn tls_mistakes_are_named() {
    let (my, pg) = (Mysql::create(), Postgres::create());
    let wrong_ca =
        std::env::temp_dir().join(format!("ballast-wrong-ca-{}.pem", std::process::id()));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=wrong",
        ])
        .arg("-keyout")
        .arg(wrong_ca.with_extension("key"))
        .arg("-out")
        .arg(&wrong_ca)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let wrong = format!(", tls: {{ mode: verify-full, ca: {} }}", wrong_ca.display());
    let targets = [
        mysql_target("plain", &my, ""),
        mysql_target("wrong", &my, &wrong),
        mysql_target("req", &my, ", tls: { mode: require }"),
        pg_target("pplain", &pg, ""),
        pg_target("pwrong", &pg, &wrong),
        pg_target("preq", &pg, ", tls: { mode: require }"),
    ]
    .concat();
    let env = env(&format!(
        "targets:\n{targets}plugins:\n  - {{ name: mysql, sha256: mysql, targets: [plain, wrong, req], programs: {MYSQL_PROGRAMS} }}\n  - {{ name: postgresql, sha256: postgresql, targets: [pplain, pwrong, preq], programs: {POSTGRES_PROGRAMS} }}\n"
    ));
    let hook = |plugin: &str, target: &str| {
        env.run(&[
            "hook",
            "run",
            plugin,
            "--target",
            target,
            "--phase",
            "pre-backup",
        ])
    };
    let out = hook("mysql", "plain").expect_code(1);
    assert!(out.stdout.contains("set tls:"), "{out:?}");
    let out = hook("mysql", "wrong").expect_code(1);
    assert!(out.stdout.contains("tls.ca must hold the CA"), "{out:?}");
    hook("mysql", "req").ok();
    let out = hook("postgresql", "pplain").expect_code(1);
    assert!(out.stdout.contains("no encryption"), "{out:?}");
    let out = hook("postgresql", "pwrong").expect_code(1);
    assert!(out.stdout.contains("tls.ca must hold the CA"), "{out:?}");
    hook("postgresql", "preq").ok();
    let _ = std::fs::remove_file(&wrong_ca);
    let _ = std::fs::remove_file(wrong_ca.with_extension("key"));
}
