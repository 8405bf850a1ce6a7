//! `ballast verify backups`: freshness against each schedule's interval (or
//! `--max-age`), the newest etcd snapshot checked byte for byte, the newest
//! Kubernetes capture's manifest, a sampled read; severities and exit codes.
//! (Application dumps are checked through their plugin in
//! `plugins_databases.rs`, where a MariaDB is at hand.)

use ballast_tests::etcd::Etcd;
use ballast_tests::kube::KubeEnv;
use serde_json::Value;

fn finding<'a>(v: &'a Value, check: &str) -> Vec<&'a Value> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check)
        .collect()
}

#[test]
fn every_kind_of_backup_is_checked_and_the_worst_finding_sets_the_exit_code() {
    let k = KubeEnv::new();
    k.backup_ok(&[]);
    let etcd = Etcd::start();
    etcd.load("/registry/configmaps/default/", 100, 100);
    let env = &k.env;
    env.json(&["etcd", "snapshot", "--endpoints", &etcd.endpoint]);
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a"), "hello").unwrap();
    env.backup(&data, &["--tag", "schedule=files"]);

    let v = env.json(&["verify", "backups"]);
    assert_eq!(v["worst"], "ok", "{v:#}");
    let e = finding(&v, "etcd");
    assert_eq!(e.len(), 1);
    assert!(
        e[0]["detail"]
            .as_str()
            .unwrap()
            .contains("SHA-256 verified"),
        "{}",
        e[0]
    );
    let kube = finding(&v, "kube");
    assert_eq!(kube.len(), 1);
    assert!(
        kube[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("capture complete"),
        "{}",
        kube[0]
    );
    // One freshness finding per source: the path, the etcd cluster, the cluster's objects.
    assert_eq!(finding(&v, "freshness").len(), 3, "{v:#}");
    assert_eq!(finding(&v, "repository")[0]["severity"], "ok");
    let human = env.run(&["verify", "backups"]).ok();
    assert!(
        human.stdout.contains("SHA-256 verified"),
        "{}",
        human.stdout
    );

    // Every source older than allowed: critical, exit 12.
    let out = env
        .run(&["verify", "backups", "--max-age", "0s", "--json"])
        .expect_code(12);
    let v = out.json();
    assert_eq!(v["worst"], "critical");
    assert!(finding(&v, "freshness")
        .iter()
        .all(|f| f["severity"] == "critical"));

    // With the server's configuration: each schedule against its interval; one with
    // no backup at all is critical and says so.
    let config = env.path("server.yaml");
    std::fs::write(
        &config,
        format!(
            "repositories:\n  main: {{location: {}, password_file: /dev/null}}\n  \
             elsewhere: {{location: /srv/elsewhere, password_file: /nonexistent}}\nschedules:\n  \
             files: {{job: path, cron: \"@daily\", repository: main, args: [{d}]}}\n  \
             other: {{job: path, cron: \"@hourly\", repository: main, args: [{d}]}}\n  \
             remote: {{job: path, cron: \"@hourly\", repository: elsewhere, args: [{d}]}}\n",
            env.repo,
            d = data.display()
        ),
    )
    .unwrap();
    let out = env
        .run(&[
            "verify",
            "backups",
            "--config",
            config.to_str().unwrap(),
            "--json",
        ])
        .expect_code(12);
    let v = out.json();
    let fresh = finding(&v, "freshness");
    let of = |name: &str| *fresh.iter().find(|f| f["subject"] == name).unwrap();
    assert_eq!(of("files")["severity"], "ok", "{v:#}");
    assert!(
        of("files")["detail"]
            .as_str()
            .unwrap()
            .contains("expected every 1day"),
        "{}",
        of("files")
    );
    assert_eq!(of("other")["severity"], "critical");
    // Another repository's schedule is not held against this one, and its secret
    // file need not be here.
    assert!(fresh.iter().all(|f| f["subject"] != "remote"), "{v:#}");
    assert!(of("other")["detail"]
        .as_str()
        .unwrap()
        .contains("no backup of this schedule"));

    // A flipped byte in every pack: the sampled read (all of it here) and the etcd
    // check find it.
    for pack in env.objects("data") {
        let mut bytes = std::fs::read(&pack).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(&pack, &bytes).unwrap();
    }
    let out = env
        .run(&["verify", "backups", "--read-data-subset", "100%", "--json"])
        .expect_code(12);
    let v = out.json();
    assert_eq!(
        finding(&v, "repository")[0]["severity"],
        "critical",
        "{v:#}"
    );
    assert_eq!(finding(&v, "etcd")[0]["severity"], "critical", "{v:#}");
}
