//! `ballast etcd snapshot` streams from a real etcd (3.4 and 3.5) into the
//! repository; `ballast etcd export` gives back bytes that etcd's tools accept.

use ballast_tests::etcd::{Etcd, Version};
use ballast_tests::Env;

#[test]
fn snapshot_and_export_with_etcd_3_4() {
    snapshot_export_and_reference_agree(Version::V3_4);
}

#[test]
fn snapshot_and_export_with_etcd_3_5() {
    snapshot_export_and_reference_agree(Version::V3_5);
}

fn snapshot_export_and_reference_agree(version: Version) {
    let etcd = Etcd::start_version(version);
    etcd.load("/registry/configmaps/default/", 2000, 500);
    let env = Env::init_local();
    let v = env.json(&[
        "etcd",
        "snapshot",
        "--endpoints",
        &etcd.endpoint,
        "--tag",
        "nightly",
    ]);
    let snap = &v["snapshot"];
    assert_eq!(snap["source"]["kind"], "etcd");
    assert_eq!(snap["tags"][0], "nightly");
    let meta = &snap["source"]["meta"];
    for k in [
        "cluster_id",
        "member_id",
        "etcd_version",
        "revision",
        "raft_index",
        "db_size",
        "sha256",
    ] {
        assert!(!meta[k].is_null(), "{k} missing from {meta}");
    }
    assert_eq!(meta["endpoint"], etcd.endpoint.as_str());
    assert!(v["members"][0]["status"]["version"]
        .as_str()
        .unwrap()
        .starts_with("3."));

    // The exported file is what etcd sent: etcdctl reads and restores it.
    let out = etcd.dir.path().join("exported.db");
    env.run(&["etcd", "export", "latest", out.to_str().unwrap()])
        .ok();
    let reference = etcd.reference_status(&out);
    assert_eq!(
        reference["revision"], meta["revision"],
        "{reference} vs {meta}"
    );
    let ours = env.json(&["etcd", "status", out.to_str().unwrap()]);
    assert_eq!(ours["hash"], reference["hash"]);
    // The same four numbers straight from the repository snapshot.
    let from_repo = env.json(&["etcd", "status", "latest"]);
    for k in ["hash", "revision", "totalKey", "totalSize"] {
        assert_eq!(from_repo[k], ours[k], "{k}: {from_repo} vs {ours}");
    }
    assert_eq!(ours["sha256Verified"], true);
    assert_eq!(ours["totalSize"], meta["db_size"]);
    let restored = etcd.dir.path().join("restored");
    etcd.reference_restore(&out, &restored);
    assert!(restored.join("member/snap/db").exists());

    // Exporting over an existing file is refused; a path snapshot is not an etcd one.
    let again = env
        .run(&["etcd", "export", "latest", out.to_str().unwrap()])
        .expect_code(1);
    assert!(again.stderr.contains("must not exist"), "{}", again.stderr);
    env.run(&["repo", "check", "--read-data"]).ok();
}

/// The revision a snapshot records is the one its database holds, read from the
/// stored database, not the member's status taken before the stream: etcd goes on
/// writing meanwhile.
#[test]
fn the_recorded_revision_is_the_databases_while_etcd_takes_writes() {
    let etcd = Etcd::start();
    etcd.load("/registry/configmaps/default/", 500, 200);
    let env = Env::init_local();
    let writer = etcd.busy_writer("/registry/events/busy-");
    let v = env.json(&["etcd", "snapshot", "--endpoints", &etcd.endpoint]);
    drop(writer);
    let meta = &v["snapshot"]["source"]["meta"];
    let out = etcd.dir.path().join("busy.db");
    env.run(&["etcd", "export", "latest", out.to_str().unwrap()])
        .ok();
    let reference = etcd.reference_status(&out);
    assert_eq!(
        reference["revision"], meta["revision"],
        "{reference} vs {meta}"
    );
    // The member's status, taken before the stream (and what used to be recorded),
    // is at most that: behind it in most runs, with the writer going.
    assert!(
        meta["member_revision"].as_i64().unwrap() <= meta["revision"].as_i64().unwrap(),
        "{meta}"
    );
}

#[test]
fn a_second_snapshot_after_few_changes_adds_little() {
    let etcd = Etcd::start();
    etcd.load("/registry/configmaps/default/", 3000, 800);
    let env = Env::init_local();
    let first = env.json(&["etcd", "snapshot", "--endpoints", &etcd.endpoint]);
    etcd.load("/registry/configmaps/default/", 30, 800); // rewrite 1% of the keys
    let second = env.json(&["etcd", "snapshot", "--endpoints", &etcd.endpoint]);
    let (a, b) = (
        &first["snapshot"]["summary"],
        &second["snapshot"]["summary"],
    );
    let added = b["bytes_new"].as_u64().unwrap();
    assert!(
        added * 4 < a["bytes_new"].as_u64().unwrap(),
        "first {a}\nsecond {b}"
    );
}

#[test]
fn unreachable_etcd_is_named_and_nothing_is_recorded() {
    let env = Env::init_local();
    let out = env
        .run(&[
            "etcd",
            "snapshot",
            "--endpoints",
            "127.0.0.1:1",
            "--dial-timeout",
            "1s",
        ])
        .expect_code(1);
    assert!(
        out.stderr.contains("cannot reach etcd at 127.0.0.1:1"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("ETCDCTL_ENDPOINTS"), "{}", out.stderr);
    assert!(env.snapshot_ids().is_empty());
}

#[test]
fn tls_with_client_certificates() {
    use ballast_tests::etcd::Certs;
    let certs = Certs::generate();
    let etcd = Etcd::start_tls(&certs);
    assert!(etcd
        .etcdctl(&["put", "/registry/secrets/default/s1", "v"])
        .status
        .success());
    let env = Env::init_local();
    let ca = certs.path("ca.crt");
    let (cert, key) = (certs.path("client.crt"), certs.path("client.key"));
    let v = env.json(&[
        "etcd",
        "snapshot",
        "--endpoints",
        &etcd.endpoint,
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
    ]);
    assert_eq!(v["snapshot"]["source"]["kind"], "etcd");

    // The same through etcdctl's environment variables.
    let mut c = env.cmd(&["etcd", "snapshot"]);
    c.env("ETCDCTL_ENDPOINTS", &etcd.endpoint)
        .env("ETCDCTL_CACERT", &ca)
        .env("ETCDCTL_CERT", &cert)
        .env("ETCDCTL_KEY", &key);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A CA that did not sign the server's certificate, or no client certificate: refused.
    let wrong_ca = certs.path("other-ca.crt");
    let out = env
        .run(&[
            "etcd",
            "snapshot",
            "--endpoints",
            &etcd.endpoint,
            "--cacert",
            &wrong_ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ])
        .expect_code(1);
    assert!(
        out.stderr.contains(&etcd.endpoint) && out.stderr.contains("check --cacert"),
        "{}",
        out.stderr
    );
    let out = env
        .run(&[
            "etcd",
            "snapshot",
            "--endpoints",
            &etcd.endpoint,
            "--cacert",
            &ca,
        ])
        .expect_code(1);
    assert!(out.stderr.contains(&etcd.endpoint), "{}", out.stderr);
    let out = env
        .run(&[
            "etcd",
            "snapshot",
            "--endpoints",
            &etcd.endpoint,
            "--cacert",
            &ca,
            "--cert",
            &cert,
        ])
        .expect_code(1);
    assert!(
        out.stderr.contains("--cert and --key go together"),
        "{}",
        out.stderr
    );
    assert_eq!(env.snapshot_ids().len(), 2);
}

#[test]
fn a_stream_cut_halfway_records_nothing() {
    let mut etcd = Etcd::start();
    etcd.load_random("/registry/secrets/big/", 1200, 200_000); // about 240 MB of data
    let env = Env::init_local();
    let mut child = env
        .cmd(&["etcd", "snapshot", "--endpoints", &etcd.endpoint])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the snapshot flows into the repository, hold ballast (SIGSTOP) so that
    // the stream cannot end first, kill etcd, and let ballast go on.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while env.objects("data").is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the snapshot finished before its first pack was seen"
        );
        assert!(std::time::Instant::now() < deadline, "no pack appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid = child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    etcd.kill();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("broke after") && stderr.contains("no snapshot was recorded"),
        "{stderr}"
    );
    assert!(
        env.snapshot_ids().is_empty(),
        "a broken stream must not look complete"
    );
    env.run(&["repo", "check"]).ok();
}
