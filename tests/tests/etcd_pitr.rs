//! Continuous change capture (`ballast etcd watch`) against a real etcd, and what it
//! is for: restoring the keyspace exactly as it was at a revision or a time, and
//! showing what changed between two revisions. The capture survives an etcd restart
//! and takes a new full snapshot when the revision it needs was compacted away.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ballast_tests::etcd::{initial_cluster, Etcd, Member, Version};
use ballast_tests::Env;

/// A `ballast etcd watch` running in the background; its output lines arrive on a
/// channel.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// The threads that read its stdout and stderr.
    readers: Vec<std::thread::JoinHandle<()>>,
    seen: Vec<String>,
}

impl Watcher {
    fn start(env: &Env, etcd: &Etcd) -> Watcher {
        Watcher::start_with(env, etcd, &[])
    }

    fn start_with(env: &Env, etcd: &Etcd, extra: &[&str]) -> Watcher {
        let mut args = vec![
            "etcd",
            "watch",
            "--endpoints",
            &etcd.endpoint,
            "--segment-interval",
            "1s",
        ];
        args.extend_from_slice(extra);
        let mut child = env
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let readers = [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ]
        .map(|out| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            })
        });
        let mut w = Watcher {
            child,
            lines: rx,
            readers: readers.into(),
            seen: vec![],
        };
        w.wait_for("watching");
        w
    }

    /// Waits (up to 60 s) for an output line containing `text`.
    fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no `{text}` from the watcher; it said: {:#?}", self.seen),
            }
        }
    }

    /// Waits until a segment ending at or after `revision` is stored.
    fn wait_stored(&mut self, revision: i64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stored = self
                .seen
                .iter()
                .filter_map(|l| {
                    let range = l.strip_prefix("segment ")?.split(": revisions ").nth(1)?;
                    range
                        .split(',')
                        .next()?
                        .split('-')
                        .nth(1)?
                        .parse::<i64>()
                        .ok()
                })
                .max()
                .unwrap_or(0);
            if stored >= revision {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!(
                    "revision {revision} was not stored; the watcher said: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits (up to 60 s) until `n` output lines contain `text`.
    fn wait_for_count(&mut self, text: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.seen.iter().filter(|l| l.contains(text)).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!(
                    "not {n} lines with `{text}`; the watcher said: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// SIGTERM, then the exit status and everything it said.
    fn stop(mut self) -> Vec<String> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        // Its output ends with it: the readers finish once they have sent every line.
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        self.seen.extend(self.lines.try_iter());
        assert!(
            status.success(),
            "watch exited with {status}: {:#?}",
            self.seen
        );
        self.seen
    }
}

/// Restores `args` into a fresh data directory and starts a member on it.
fn restore_and_start(env: &Env, dir: &str, args: &[&str]) -> (Etcd, serde_json::Value) {
    let member = Member::new("pitr");
    let cluster = initial_cluster(std::slice::from_ref(&member));
    let data = env.path(dir);
    let mut full = vec!["etcd", "restore"];
    full.extend_from_slice(args);
    full.extend_from_slice(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--name",
        "pitr",
        "--initial-cluster",
        &cluster,
    ]);
    let out = env.json(&full);
    let etcd = Etcd::start_restored(Version::V3_4, &data, &member, &cluster);
    etcd.wait_healthy();
    (etcd, out)
}

#[test]
fn restore_to_a_revision_or_a_time_and_diff_between_revisions() {
    let etcd = Etcd::start();
    etcd.load("/registry/a/", 100, 200);
    let env = Env::init_local();
    env.json(&["etcd", "snapshot", "--endpoints", &etcd.endpoint]);
    let first = etcd.revision();
    let mut watcher = Watcher::start(&env, &etcd);

    // Point A.
    etcd.put("/registry/b/x1", "a1");
    etcd.put("/registry/a/000001", "changed");
    assert!(etcd
        .etcdctl(&["del", "/registry/a/000002"])
        .status
        .success());
    let rev_a = etcd.revision();
    watcher.wait_stored(rev_a);
    // A time after A's changes were stamped and before B's: B starts only once the
    // clock has moved past it.
    let time_a = jiff::Timestamp::now();
    while jiff::Timestamp::now() <= time_a + Duration::from_millis(2) {
        std::thread::yield_now();
    }
    let time_a = time_a.to_string();

    // Point B: a transaction (several changes in one revision) among the rest.
    etcd.put("/registry/b/x2", "b");
    assert!(etcd.etcdctl(&["del", "/registry/b/x1"]).status.success());
    etcd.txn_puts(&[("/t/1", "one"), ("/t/2", "two")]);
    let rev_b = etcd.revision();
    watcher.wait_stored(rev_b);
    let said = watcher.stop();
    assert!(said.iter().any(|l| l.starts_with("stopped:")), "{said:#?}");

    let check_a = |m: &Etcd| {
        assert_eq!(m.get("/registry/b/x1").as_deref(), Some("a1"));
        assert_eq!(m.get("/registry/a/000001").as_deref(), Some("changed"));
        assert_eq!(m.get("/registry/a/000002"), None);
        assert_eq!(m.get("/t/1"), None);
        assert_eq!(m.key_count(), 100);
    };
    let rev = rev_a.to_string();
    let (m, out) = restore_and_start(&env, "at-a", &["--to-revision", &rev]);
    assert_eq!(out["restored"]["revision"], rev_a);
    assert_eq!(out["restored"]["changes_applied"], 3);
    check_a(&m);
    assert_eq!(m.revision(), rev_a);
    drop(m);

    let (m, _) = restore_and_start(&env, "at-time-a", &["--to-time", &time_a]);
    check_a(&m);
    drop(m);

    let rev = rev_b.to_string();
    let (m, out) = restore_and_start(&env, "at-b", &["--to-revision", &rev]);
    assert_eq!(out["restored"]["revision"], rev_b);
    assert_eq!(m.get("/registry/b/x1"), None);
    assert_eq!(m.get("/registry/b/x2").as_deref(), Some("b"));
    assert_eq!(m.get("/t/1").as_deref(), Some("one"));
    assert_eq!(m.get("/t/2").as_deref(), Some("two"));
    assert_eq!(m.key_count(), 102);
    // The restored member takes writes.
    m.put("/after", "1");
    drop(m);

    let d = env.json(&[
        "etcd",
        "diff",
        "--from",
        &rev_a.to_string(),
        "--to",
        &rev_b.to_string(),
    ]);
    assert_eq!(
        (
            d["created"].as_u64(),
            d["updated"].as_u64(),
            d["deleted"].as_u64()
        ),
        (Some(3), Some(0), Some(1)),
        "{d}"
    );
    let d = env.json(&[
        "etcd",
        "diff",
        "--from",
        &first.to_string(),
        "--to",
        &rev_a.to_string(),
        "--prefix",
        "/registry/a/",
    ]);
    assert_eq!(
        (
            d["created"].as_u64(),
            d["updated"].as_u64(),
            d["deleted"].as_u64()
        ),
        (Some(0), Some(1), Some(1)),
        "{d}"
    );

    // Points outside what the repository holds are refused, naming what it covers.
    let data = env.path("nowhere");
    for point in [(first - 1).to_string(), (rev_b + 50).to_string()] {
        let out = env
            .run(&[
                "etcd",
                "restore",
                "--to-revision",
                &point,
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .expect_code(1);
        assert!(
            out.stderr.contains("covers cluster")
                && (out.stderr.contains("before the first")
                    || out.stderr.contains("after the last")),
            "{}",
            out.stderr
        );
    }
    let out = env
        .run(&[
            "etcd",
            "diff",
            "--from",
            &rev_b.to_string(),
            "--to",
            &(rev_b + 50).to_string(),
        ])
        .expect_code(1);
    assert!(out.stderr.contains("do not cover"), "{}", out.stderr);
    assert!(!data.exists());
    env.run(&["repo", "check", "--read-data"]).ok();
}

#[test]
fn the_capture_resumes_after_etcd_restarts() {
    let mut etcd = Etcd::start();
    let env = Env::init_local();
    let mut watcher = Watcher::start(&env, &etcd);
    watcher.wait_for("full snapshot");
    for i in 0..10 {
        etcd.put(&format!("/k/{i}"), "before");
    }
    etcd.restart();
    for i in 10..20 {
        etcd.put(&format!("/k/{i}"), "after");
    }
    let last = etcd.revision();
    watcher.wait_stored(last);
    let said = watcher.stop();
    assert!(said.iter().any(|l| l.contains("reconnecting")), "{said:#?}");
    let (m, _) = restore_and_start(&env, "restored", &["--to-revision", &last.to_string()]);
    assert_eq!(m.key_count(), 20);
    assert_eq!(m.get("/k/19").as_deref(), Some("after"));
}

#[test]
fn a_compacted_revision_makes_the_capture_take_a_new_full_snapshot() {
    let etcd = Etcd::start();
    etcd.load("/c/", 20, 50);
    let env = Env::init_local();
    let first = env
        .run(&[
            "etcd",
            "watch",
            "--endpoints",
            &etcd.endpoint,
            "--until-revision",
            &etcd.revision().to_string(),
        ])
        .ok();
    assert!(
        first.stdout.contains("no full snapshot"),
        "{}",
        first.stdout
    );
    // While nothing watches, history moves on and is compacted.
    etcd.load("/d/", 30, 50);
    let compacted = etcd.revision();
    assert!(etcd
        .etcdctl(&["compact", &compacted.to_string()])
        .status
        .success());
    etcd.put("/e/1", "x");
    let last = etcd.revision();
    let out = env
        .run(&[
            "etcd",
            "watch",
            "--endpoints",
            &etcd.endpoint,
            "--until-revision",
            &last.to_string(),
        ])
        .ok();
    assert!(
        out.stdout.contains("compacted") && out.stdout.contains("full snapshot"),
        "{}",
        out.stdout
    );
    let (m, _) = restore_and_start(&env, "restored", &["--to-revision", &last.to_string()]);
    assert_eq!(m.key_count(), 51);
}

#[test]
fn forget_keeps_delta_segments_while_their_full_snapshot_is_kept() {
    let etcd = Etcd::start();
    let env = Env::init_local();
    let watch_until = |rev: i64| {
        env.run(&[
            "etcd",
            "watch",
            "--endpoints",
            &etcd.endpoint,
            "--until-revision",
            &rev.to_string(),
        ])
        .ok()
    };
    etcd.put("/a", "1");
    let r1 = etcd.revision();
    watch_until(r1); // the first full snapshot
    etcd.put("/b", "1");
    etcd.put("/c", "1");
    watch_until(etcd.revision()); // a segment on the first snapshot
    env.json(&["etcd", "snapshot", "--endpoints", &etcd.endpoint]);
    etcd.put("/d", "1");
    let r3 = etcd.revision();
    watch_until(r3); // a segment on the second snapshot

    let v = env.json(&["forget", "--keep-last", "1"]);
    let decisions = v["decisions"].as_array().unwrap();
    // Each capture run also stores a last segment of marks (until when it watched).
    let full = |d: &&serde_json::Value| !d["group"].as_str().unwrap_or("").contains("etcd-delta");
    let (fulls, deltas): (Vec<_>, Vec<_>) = decisions.iter().partition(full);
    assert_eq!(fulls.len(), 2, "{v}");
    assert_eq!(fulls.iter().filter(|d| d["keep"] == true).count(), 1, "{v}");
    let newest = fulls.iter().find(|d| d["keep"] == true).unwrap()["id"]
        .as_str()
        .unwrap()[..8]
        .to_string();
    for d in &deltas {
        let depends_on_newest = d["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains(&newest));
        assert_eq!(
            d["keep"] == true,
            depends_on_newest,
            "a segment goes with its snapshot: {v}"
        );
    }
    assert!(
        deltas.iter().any(|d| d["keep"] == false),
        "the old snapshot's segments go with it: {v}"
    );
    let (m, _) = restore_and_start(&env, "restored", &["--to-revision", &r3.to_string()]);
    assert_eq!(m.key_count(), 4);
    let out = env
        .run(&[
            "etcd",
            "restore",
            "--to-revision",
            &r1.to_string(),
            "--data-dir",
            env.path("old").to_str().unwrap(),
        ])
        .expect_code(1);
    assert!(
        out.stderr.contains("before the first snapshot"),
        "{}",
        out.stderr
    );
}

#[test]
fn scheduled_full_snapshots_leave_no_gap_in_the_chain() {
    let etcd = Etcd::start();
    let env = Env::init_local();
    let mut watcher = Watcher::start_with(&env, &etcd, &["--full-every", "2s"]);
    let mut revisions = vec![];
    for round in 0..4 {
        for i in 0..5 {
            etcd.put(&format!("/r{round}/{i}"), "v");
        }
        revisions.push(etcd.revision());
        // A scheduled full snapshot between each round and the next.
        watcher.wait_for_count("scheduled", round + 1);
    }
    watcher.wait_stored(*revisions.last().unwrap());
    let said = watcher.stop();
    assert!(
        said.iter().filter(|l| l.contains("scheduled")).count() >= 4,
        "{said:#?}"
    );
    // Every point restores, whichever full snapshot it starts from.
    for (n, rev) in revisions.iter().enumerate() {
        let (m, _) = restore_and_start(
            &env,
            &format!("at-{n}"),
            &["--to-revision", &rev.to_string()],
        );
        assert_eq!(m.key_count(), 5 * (n as u64 + 1), "at revision {rev}");
    }
}

/// A member that stops answering without closing its connection (frozen, or behind
/// a network that drops packets): the capture notices within three heartbeats and
/// reconnects, instead of waiting forever while the recovery point grows.
#[test]
fn a_silent_watch_is_noticed_and_the_capture_reconnects() {
    let etcd = Etcd::start();
    let env = Env::init_local();
    let mut watcher = Watcher::start(&env, &etcd);
    watcher.wait_for("full snapshot");
    etcd.put("/before/1", "x");
    watcher.wait_stored(etcd.revision());
    etcd.freeze();
    let said = watcher.wait_for("reconnecting");
    etcd.thaw();
    assert!(
        said.contains("no change and no progress notification"),
        "{said}"
    );
    etcd.put("/after/1", "x");
    let last = etcd.revision();
    watcher.wait_stored(last);
    watcher.stop();
    let (m, _) = restore_and_start(&env, "restored", &["--to-revision", &last.to_string()]);
    assert_eq!(m.get("/after/1").as_deref(), Some("x"));
}

/// The endpoints come to serve another cluster (rebuilt, or restored with a new
/// token): the capture stops rather than record the other cluster's changes as the
/// first's.
#[test]
fn a_capture_stops_when_its_endpoints_serve_another_cluster() {
    let mut etcd = Etcd::start();
    let env = Env::init_local();
    let mut watcher = Watcher::start(&env, &etcd);
    watcher.wait_for("full snapshot");
    etcd.put("/before/1", "x");
    watcher.wait_stored(etcd.revision());
    etcd.replace_with_new_cluster();
    etcd.put("/other/1", "y");
    let said = watcher.wait_for("not cluster");
    assert!(said.contains("now serves etcd cluster"), "{said}");
    let status = watcher.child.wait().unwrap();
    assert!(!status.success());
}

/// A member that loses its leader still answers, with old data: the capture leaves
/// it for one that has a leader (here: none, so it keeps trying and says why).
#[test]
fn a_member_without_a_leader_is_left() {
    let mut cluster = Etcd::start_cluster(3);
    let env = Env::init_local();
    let first = cluster.remove(0);
    let mut watcher = Watcher::start(&env, &first);
    watcher.wait_for("full snapshot");
    for mut other in cluster {
        other.kill();
    }
    let said = watcher.wait_for("reconnecting");
    assert!(
        said.contains("has no leader") || said.contains("no leader"),
        "{said}"
    );
    watcher.stop();
}

/// Changes made while no capture watched are replayed when it comes back, at a time
/// that is not theirs: a point in time inside that gap is refused (it used to give
/// the revision before the gap, silently missing the changes made in it), and points
/// outside it work.
#[test]
fn a_point_in_time_where_the_capture_was_not_watching_is_refused() {
    let etcd = Etcd::start();
    let env = Env::init_local();
    let mut watcher = Watcher::start(&env, &etcd);
    watcher.wait_for("full snapshot");
    etcd.put("/a/1", "watched");
    let watched = etcd.revision();
    watcher.wait_stored(watched);
    let before_gap = jiff::Timestamp::now();
    watcher.stop();
    etcd.put("/a/2", "unwatched");
    let in_gap = jiff::Timestamp::now();
    etcd.put("/a/3", "unwatched");
    let mut watcher = Watcher::start(&env, &etcd);
    etcd.put("/a/4", "watched again");
    let last = etcd.revision();
    watcher.wait_stored(last);
    let after = jiff::Timestamp::now();
    watcher.stop();

    let data = env.path("gap");
    let out = env
        .run(&[
            "etcd",
            "restore",
            "--to-time",
            &in_gap.to_string(),
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .expect_code(1);
    assert!(
        out.stderr
            .contains("falls where the capture was not watching"),
        "{}",
        out.stderr
    );
    assert!(!data.exists());
    let (m, _) = restore_and_start(&env, "before", &["--to-time", &before_gap.to_string()]);
    assert_eq!(m.get("/a/1").as_deref(), Some("watched"));
    assert_eq!(m.get("/a/2"), None);
    drop(m);
    let (m, _) = restore_and_start(&env, "after", &["--to-time", &after.to_string()]);
    assert_eq!(m.get("/a/3").as_deref(), Some("unwatched"));
    assert_eq!(m.get("/a/4").as_deref(), Some("watched again"));
}

/// A key bound to a lease granted after the full snapshot: the lease is not a key,
/// so the capture never saw it. Restored, the key must still expire (Events, the API
/// servers' masterleases): its lease is re-created with --orphan-lease-ttl, and the
/// key goes when it runs out. (It used to stay for ever.)
#[test]
fn keys_of_leases_granted_after_the_snapshot_still_expire() {
    let etcd = Etcd::start();
    let env = Env::init_local();
    let mut watcher = Watcher::start(&env, &etcd);
    watcher.wait_for("full snapshot");
    let granted = etcd.etcdctl(&["lease", "grant", "600"]);
    let id = String::from_utf8_lossy(&granted.stdout)
        .split_whitespace()
        .nth(1)
        .expect("lease <id> granted with TTL(600s)")
        .to_string();
    assert!(etcd
        .etcdctl(&[
            "put",
            "/registry/masterleases/10.0.0.9",
            "x",
            "--lease",
            &id
        ])
        .status
        .success());
    etcd.put("/registry/pods/p", "stays");
    let last = etcd.revision();
    watcher.wait_stored(last);
    watcher.stop();
    let (m, out) = restore_and_start(
        &env,
        "leased",
        &[
            "--to-revision",
            &last.to_string(),
            "--orphan-lease-ttl",
            "2s",
        ],
    );
    assert!(
        out["from"]
            .as_str()
            .unwrap()
            .contains("1 leases granted after the snapshot re-created"),
        "{out}"
    );
    let leases = m.etcdctl(&["lease", "list"]);
    assert!(
        String::from_utf8_lossy(&leases.stdout).contains(&id),
        "{leases:?}"
    );
    // Wait for the state, not for a time: the key goes once its lease expires.
    let deadline = Instant::now() + Duration::from_secs(60);
    while m.get("/registry/masterleases/10.0.0.9").is_some() {
        assert!(Instant::now() < deadline, "the leased key never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(m.get("/registry/pods/p").as_deref(), Some("stays"));
}

/// Retention of what CronJobs take: each run is a new pod with a new host name. By
/// default (`--group-by auto`) an etcd snapshot is grouped by its cluster, not by
/// host, so --keep-last 1 keeps one (it used to keep every pod's). And forgetting a
/// full snapshot takes its delta segments along: a forget that would open a hole in
/// the point-in-time coverage says so.
#[test]
fn retention_groups_cronjob_runs_and_warns_when_coverage_shrinks() {
    let etcd = Etcd::start();
    let env = Env::init_local();
    for pod in ["etcd-backup-28912340-abcde", "etcd-backup-28912341-fghij"] {
        env.json(&[
            "etcd",
            "snapshot",
            "--endpoints",
            &etcd.endpoint,
            "--host",
            pod,
        ]);
    }
    let v = env.json(&["forget", "--keep-last", "1", "--dry-run"]);
    let kept: Vec<_> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == true)
        .collect();
    assert_eq!(kept.len(), 1, "{v}");
    let hosts: Vec<String> = env
        .json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot"]["host"].as_str().unwrap().to_string())
        .collect();
    assert!(
        hosts.contains(&"etcd-backup-28912341-fghij".to_string()),
        "{hosts:?}"
    );

    // Three chains: A, B, C, each a full snapshot and the segments captured after it.
    let chain = |tag: &str, key: &str| {
        env.json(&[
            "etcd",
            "snapshot",
            "--endpoints",
            &etcd.endpoint,
            "--tag",
            tag,
        ]);
        etcd.put(key, "v");
        env.run(&[
            "etcd",
            "watch",
            "--endpoints",
            &etcd.endpoint,
            "--tag",
            tag,
            "--until-revision",
            &etcd.revision().to_string(),
        ])
        .ok();
    };
    chain("keep", "/chain/a");
    chain("drop", "/chain/b");
    chain("keep", "/chain/c");
    let v = env.json(&["forget", "--tag", "drop", "--keep-last", "0", "--dry-run"]);
    let warnings = v["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{v}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("point-in-time restore loses 1 stretch"),
        "{v}"
    );
    // Forgetting only what lies before everything kept opens no hole.
    let env = Env::init_local();
    for key in ["/old/1", "/new/1"] {
        env.json(&["etcd", "snapshot", "--endpoints", &etcd.endpoint]);
        etcd.put(key, "v");
        env.run(&[
            "etcd",
            "watch",
            "--endpoints",
            &etcd.endpoint,
            "--until-revision",
            &etcd.revision().to_string(),
        ])
        .ok();
    }
    let v = env.json(&["forget", "--keep-last", "1", "--dry-run"]);
    assert!(v["warnings"].as_array().unwrap().is_empty(), "{v}");
    assert!(
        v["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["keep"] == false),
        "{v}"
    );
}
