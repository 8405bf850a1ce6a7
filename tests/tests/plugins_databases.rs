//! The MySQL and PostgreSQL plugins against the machine's MariaDB and PostgreSQL:
//! dump into the repository, verify, restore into another database, compare; and
//! the quiesce hooks.

use ballast_tests::plugins::{env, Mysql, Postgres};

fn mysql_policy(src: &Mysql, dst: &Mysql) -> String {
    format!(
        r#"targets:
{}{}plugins:
  - name: mysql
    sha256: mysql
    targets: [src, dst]
    programs: {}
"#,
        src.target("src"),
        dst.target("dst"),
        ballast_tests::plugins::MYSQL_PROGRAMS
    )
}

#[test]
fn mysql_dump_verify_restore_round_trip() {
    let (src, dst) = (Mysql::create(), Mysql::create());
    src.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(64), total DECIMAL(10,2), photo BLOB, at DATETIME);
         CREATE TABLE notes (id INT AUTO_INCREMENT PRIMARY KEY, body TEXT) DEFAULT CHARSET=utf8mb4;
         INSERT INTO notes (body) VALUES ('grüße, 日本語, emoji 🚀'), (NULL), ('tab\there');
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
         CREATE PROCEDURE count_orders() SELECT COUNT(*) FROM orders;",
    );
    // 2,000 rows, binary data included.
    let mut values = vec![];
    for i in 0..2000 {
        values.push(format!(
            "({i}, 'customer {i}', {}.{:02}, UNHEX('{:08x}00ff'), '2026-01-01 00:00:00' + INTERVAL {i} MINUTE)",
            i * 7 % 500,
            i % 100,
            i * 2654435761u64 as usize % 0xffffffff
        ));
    }
    src.sql(&format!("INSERT INTO orders VALUES {}", values.join(",")));
    let env = env(&mysql_policy(&src, &dst));

    let v = env.json(&[
        "backup", "app", "--plugin", "mysql", "--target", "src", "--tag", "nightly",
    ]);
    let id = v["snapshot_id"].as_str().unwrap().to_string();
    let meta = &v["snapshot"]["source"]["meta"];
    assert_eq!(meta["plugin"], "mysql");
    assert_eq!(meta["target"], "src");
    assert_eq!(meta["wit"], "0.1.0");
    assert_eq!(meta["plugin_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(v["snapshot"]["source"]["kind"], "app");

    let out = env.run(&["verify", "app", &id]).ok();
    assert!(out.stderr.contains("dump is complete: 2 tables"), "{out:?}");
    // `verify backups` has the newest dump of each target checked by its plugin.
    let v = env.json(&["verify", "backups"]);
    let app = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "app")
        .unwrap_or_else(|| panic!("no app finding in {v}"));
    assert_eq!(app["subject"], "src", "{app}");
    assert_eq!(app["severity"], "ok", "{app}");
    assert_eq!(app["snapshot"], id.as_str(), "{app}");

    let out = env.run(&["restore", "app", &id, "--target", "dst"]).ok();
    assert!(out.stdout.contains("restore: ok"), "{out:?}");
    let checksum = |db: &Mysql| {
        db.sql("CHECKSUM TABLE orders, notes")
            .lines()
            .map(|l| l.split('\t').nth(1).unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let (a, b) = (checksum(&src), checksum(&dst));
    assert_eq!(a, b, "CHECKSUM TABLE differs after the round trip");
    assert_ne!(a[0], "0");
    assert_eq!(
        dst.sql("SELECT COUNT(*) FROM big_orders").trim(),
        src.sql("SELECT COUNT(*) FROM big_orders").trim()
    );
    assert!(dst
        .sql("SHOW PROCEDURE STATUS WHERE Db = DATABASE()")
        .contains("count_orders"));

    // The stored dump is an ordinary stream: the repository checks it byte for byte.
    env.run(&["repo", "check", "--read-data"]).ok();
}

#[test]
fn a_cut_short_mysql_dump_fails_verify() {
    let db = Mysql::create();
    let env = env(&format!(
        "targets:\n{}plugins:\n  - {{ name: mysql, sha256: mysql, targets: [db], programs: {} }}\n",
        db.target("db"),
        ballast_tests::plugins::MYSQL_PROGRAMS
    ));
    // A "dump" that stops before mysqldump's last line, stored through the noop plugin.
    let noop = ballast_tests::plugins::component("noop");
    let payload =
        "payload=-- MariaDB dump 10.19\nCREATE TABLE t (n INT);\nINSERT INTO t VALUES (1);\n";
    let v = env.json(&[
        "backup", "app", "--plugin", &noop, "--target", "x", "-p", payload,
    ]);
    let id = v["snapshot_id"].as_str().unwrap().to_string();
    let mysql = ballast_tests::plugins::component("mysql");
    let out = env
        .run(&["verify", "app", &id, "--plugin", &mysql])
        .expect_code(1);
    assert!(out.stdout.contains("the dump is cut short"), "{out:?}");
}

#[test]
fn mysql_quiesce_holds_a_read_lock_until_post_backup() {
    let db = Mysql::create();
    db.sql("CREATE TABLE t (n INT)");
    let env = env(&format!(
        "targets:\n{}plugins:\n  - {{ name: mysql, sha256: mysql, targets: [db], programs: {} }}\n",
        db.target("db"),
        ballast_tests::plugins::MYSQL_PROGRAMS
    ));
    let out = env.run(&["hook", "run", "mysql", "--target", "db"]).ok();
    assert!(
        out.stderr.contains("db: tables flushed and read-locked"),
        "{out:?}"
    );
    assert!(out.stderr.contains("db: tables unlocked"), "{out:?}");
    assert!(
        out.stdout.contains("pre-backup: ok") && out.stdout.contains("post-backup: ok"),
        "{out:?}"
    );
    // After the job the lock is gone.
    db.sql("INSERT INTO t VALUES (1)");
}

fn pg_policy(src: &Postgres, dst: &Postgres) -> String {
    format!(
        r#"targets:
{}{}plugins:
  - name: postgresql
    sha256: postgresql
    targets: [src, dst]
    programs: {}
"#,
        src.target("src"),
        dst.target("dst"),
        ballast_tests::plugins::POSTGRES_PROGRAMS
    )
}

#[test]
fn postgresql_dump_verify_restore_round_trip() {
    let (src, dst) = (Postgres::create(), Postgres::create());
    src.sql(
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), data bytea, tags text[]);
         INSERT INTO items SELECT g, 'item ' || g, g * 1.5, decode(md5(g::text), 'hex'), ARRAY['a', 'b' || g]
           FROM generate_series(1, 3000) g;
         CREATE TABLE empty_one (x int);
         CREATE INDEX items_name ON items (name);
         CREATE VIEW cheap AS SELECT * FROM items WHERE price < 100;",
    );
    let env = env(&pg_policy(&src, &dst));
    let v = env.json(&["backup", "app", "--plugin", "postgresql", "--target", "src"]);
    let id = v["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(v["snapshot"]["source"]["meta"]["plugin"], "postgresql");
    let out = env.run(&["verify", "app", &id]).ok();
    assert!(out.stderr.contains("archive readable:"), "{out:?}");
    let out = env.run(&["restore", "app", &id, "--target", "dst"]).ok();
    assert!(out.stdout.contains("restore: ok"), "{out:?}");
    let checksum = |db: &Postgres, table: &str| {
        db.sql(&format!("SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM {table} t"))
    };
    for table in ["items", "empty_one", "cheap"] {
        assert_eq!(checksum(&src, table), checksum(&dst, table), "{table}");
    }
    assert!(checksum(&src, "items").starts_with("3000:"));
}

#[test]
fn postgresql_quiesce_records_the_backup_label() {
    let db = Postgres::create();
    let env = env(&format!(
        "targets:\n{}plugins:\n  - {{ name: postgresql, sha256: postgresql, targets: [db], programs: {} }}\n",
        db.target("db"),
        ballast_tests::plugins::POSTGRES_PROGRAMS
    ));
    let v = env.json(&["hook", "run", "postgresql", "--target", "db"]);
    assert_eq!(v["hooks"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        v["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["ok"] == true),
        "{v}"
    );
    let label = v["notes"]["backup_label"].as_str().unwrap();
    assert!(
        label.contains("START WAL LOCATION") && label.contains("LABEL: ballast"),
        "{label}"
    );
    // No backup is left running on the server.
    let running = db.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name = 'ballast plugin'");
    assert_eq!(running.trim(), "0");
}

#[test]
fn a_restore_error_is_reported_and_names_the_program() {
    let (src, dst) = (Postgres::create(), Postgres::create());
    src.sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1);");
    dst.sql("CREATE TABLE t (id int);");
    let env = env(&pg_policy(&src, &dst));
    let id = env.json(&["backup", "app", "--plugin", "postgresql", "--target", "src"])
        ["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The table exists already in dst: pg_restore --exit-on-error stops.
    let out = env
        .run(&["restore", "app", &id, "--target", "dst"])
        .expect_code(1);
    assert!(
        out.stdout.contains("pg_restore exited with status 1"),
        "{out:?}"
    );
    assert!(out.stdout.contains("already exists"), "{out:?}");
    // With clean it replaces it.
    let out = env
        .run(&["restore", "app", &id, "--target", "dst", "-p", "clean=yes"])
        .ok();
    assert!(out.stdout.contains("restore: ok"), "{out:?}");
    assert_eq!(dst.sql("SELECT count(*) FROM t").trim(), "1");
}
