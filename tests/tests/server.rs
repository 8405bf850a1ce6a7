//! `ballast server`: the configuration check, schedules that run real jobs into a
//! real repository, overlaps and timeouts, missed runs caught up once after a
//! restart, metrics that exist from the start and hold across a restart, SIGTERM,
//! and the shipped alert rules and dashboard (promtool, and every metric they name
//! in a real scrape).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ballast_tests::{ballast_bin, free_port, Env, PASSWORD};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A GET over HTTP/1.0: the status and the body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The value of one series in a scrape (`name{labels}` exactly as exposed).
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A series with its labels in the exposition's order.
fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", l.join(","))
}

struct Server {
    child: Child,
    port: u16,
    state: PathBuf,
}

impl Server {
    fn start(env: &Env, config: &str, state: &Path, port: u16) -> Server {
        let file = env.path(&format!("server-{port}.yaml"));
        std::fs::write(&file, config).unwrap();
        let child = Command::new(ballast_bin())
            .args(["server", "--config"])
            .arg(&file)
            .env_remove("BALLAST_REPO")
            .env_remove("BALLAST_PASSWORD")
            .env("RUST_LOG", "ballast=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(env.path(&format!("server-{port}.log"))).unwrap())
            .spawn()
            .unwrap();
        let s = Server {
            child,
            port,
            state: state.to_path_buf(),
        };
        s.wait_for("the server to listen", |_| true);
        s
    }

    fn scrape(&self) -> Option<String> {
        match get(self.port, "/metrics")? {
            (200, body) => Some(body),
            _ => None,
        }
    }

    /// Scrapes until `done` holds (at most two minutes: a wait, not a timing).
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(s) = self.scrape() {
                if done(&s) {
                    return s;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "waited two minutes for {what}; last scrape:\n{}",
                self.scrape().unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state.join("runs.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// SIGTERM, and the exit code.
    fn stop(&mut self) -> i32 {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the server did not stop within a minute of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn setup() -> (Env, PathBuf, PathBuf) {
    let env = Env::init_local();
    let password = env.path("password");
    std::fs::write(&password, PASSWORD).unwrap();
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "hello").unwrap();
    (env, password, data)
}

fn header(env: &Env, password: &Path, state: &Path, port: u16) -> String {
    format!(
        "state_dir: {}\nlisten: 127.0.0.1:{port}\nshutdown_grace: 10s\nprobe_interval: 2s\n\
         repositories:\n  main:\n    location: {}\n    password_file: {}\n",
        state.display(),
        env.repo,
        password.display()
    )
}

fn tagged(env: &Env, schedule: &str) -> Vec<Value> {
    env.json(&["snapshots", "--tag", &format!("schedule={schedule}")])
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn check_config_accepts_the_shipped_file_and_names_every_mistake() {
    let env = Env::local();
    // The shipped file, with its secret's path (a Secret's mount) pointing here.
    let secret = env.path("password");
    std::fs::write(&secret, PASSWORD).unwrap();
    let shipped = env.path("shipped.yaml");
    std::fs::write(
        &shipped,
        std::fs::read_to_string(root().join("host/deploy/kubernetes/server.yaml"))
            .unwrap()
            .replace("/etc/ballast/secret/password", secret.to_str().unwrap()),
    )
    .unwrap();
    let out = env
        .run(&[
            "server",
            "--check-config",
            "--json",
            "--config",
            shipped.to_str().unwrap(),
        ])
        .ok();
    let v = out.json();
    assert_eq!(v["valid"], true);
    let names: Vec<&str> = v["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "check",
            "cluster-objects",
            "etcd",
            "etcd-capture",
            "etcd-drill",
            "prune",
            "shop-db"
        ]
    );
    let etcd = &v["schedules"][2];
    assert!(etcd["next_run"].is_string(), "{etcd}");
    assert_eq!(etcd["expected_interval_seconds"], 6 * 3600);
    assert!(etcd["command"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "schedule=etcd"));

    let bad = env.path("bad.yaml");
    std::fs::write(
        &bad,
        "repositories:\n  main: {location: /srv, password_file: /dev/null}\n\
         schedules:\n  a: {job: path, cron: \"@daily\", repository: main, args: [/data, --no-such-flag]}\n  \
         b: {job: path, cron: \"0 25 * * *\", repository: main, args: [/data]}\n  \
         c: {job: tape, cron: \"@daily\", repository: main}\n  \
         d: {job: path, cron: \"@daily\", repository: main, args: [/data], notify: [pager]}\n",
    )
    .unwrap();
    let out = env
        .run(&[
            "server",
            "--check-config",
            "--config",
            bad.to_str().unwrap(),
        ])
        .expect_code(2);
    assert!(out.stderr.contains("4 mistake(s)"), "{}", out.stderr);
    assert!(
        out.stderr.contains("notify names `pager`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("schedule `a`: args: unexpected argument '--no-such-flag'"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("schedule `b`: cron `0 25 * * *`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("no job `tape`"), "{}", out.stderr);
}

/// A TCP port that accepts and never answers: an etcd snapshot against it waits
/// until it is stopped.
fn blackhole() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

#[test]
fn schedules_run_skip_overlaps_stop_on_timeout_and_keep_their_retention() {
    let (env, password, data) = setup();
    let state = env.path("state");
    let port = free_port();
    let (_hole, hole) = blackhole();
    let config = format!(
        "{}schedules:\n  files:\n    job: path\n    cron: \"*/2 * * * * *\"\n    repository: main\n    \
         args: [{}]\n    retention: {{keep_last: 2}}\n  \
         slow:\n    job: etcd-snapshot\n    cron: \"* * * * * *\"\n    repository: main\n    \
         args: [--endpoints, \"127.0.0.1:{hole}\"]\n    timeout: 3s\n",
        header(&env, &password, &state, port),
        data.display()
    );
    let mut server = Server::start(&env, &config, &state, port);
    let files = |o: &str| {
        series(
            "ballast_schedule_runs_total",
            &[("schedule", "files"), ("kind", "path"), ("outcome", o)],
        )
    };
    let slow = |o: &str| {
        series(
            "ballast_schedule_runs_total",
            &[
                ("schedule", "slow"),
                ("kind", "etcd-snapshot"),
                ("outcome", o),
            ],
        )
    };
    let overlap = series(
        "ballast_schedule_skipped_runs_total",
        &[
            ("schedule", "slow"),
            ("kind", "etcd-snapshot"),
            ("reason", "overlap"),
        ],
    );
    // Every series exists from the start.
    let first = server.scrape().unwrap();
    for s in [files("failed"), files("partial"), slow("succeeded")] {
        assert!(value(&first, &s).is_some(), "{s} missing from\n{first}");
    }
    let expected = series(
        "ballast_schedule_expected_interval_seconds",
        &[("schedule", "files"), ("kind", "path")],
    );
    assert_eq!(value(&first, &expected), Some(2.0));

    let done = server.wait_for("four backups, a timed-out run and an overlap", |s| {
        value(s, &files("succeeded")).unwrap_or(0.0) >= 4.0
            && value(s, &slow("failed")).unwrap_or(0.0) >= 1.0
            && value(s, &overlap).unwrap_or(0.0) >= 1.0
    });
    assert_eq!(value(&done, &files("failed")), Some(0.0), "{done}");
    let last_success = series(
        "ballast_schedule_last_success_timestamp_seconds",
        &[("schedule", "files"), ("kind", "path")],
    );
    assert!(value(&done, &last_success).unwrap() > 1.7e9);
    let (code, api) = get(port, "/api/schedules").unwrap();
    assert_eq!(code, 200);
    let api: Value = serde_json::from_str(&api).unwrap();
    assert!(api["schedules"][0]["next_run"].is_string(), "{api}");
    assert_eq!(server.stop(), 0);

    let records = server.records();
    assert!(records.iter().any(|r| r["schedule"] == "slow"
        && r["outcome"] == "failed"
        && r["reason"].as_str().unwrap().contains("timeout")));
    assert!(records.iter().any(|r| r["schedule"] == "slow"
        && r["outcome"] == "skipped"
        && r["reason"].as_str().unwrap().contains("still running")));
    let backed_up: Vec<&Value> = records
        .iter()
        .filter(|r| r["schedule"] == "files" && r["job"] == "path" && r["outcome"] == "succeeded")
        .collect();
    assert!(backed_up.len() >= 4);
    assert!(backed_up.iter().all(|r| r["snapshot_id"].is_string()));
    // Retention kept two after each success (a third when the stop came between
    // a backup and its forget).
    let kept = tagged(&env, "files");
    assert!((2..=3).contains(&kept.len()), "{kept:?}");
    assert!(records
        .iter()
        .any(|r| r["job"] == "forget" && r["outcome"] == "succeeded"));
}

#[test]
fn a_restart_records_missed_runs_catches_up_once_and_keeps_the_newest_success() {
    let (env, password, data) = setup();
    let state = env.path("state");
    std::fs::create_dir_all(&state).unwrap();
    // The server was last running five hours ago, on the hour.
    let now = jiff::Timestamp::now();
    let hour = now.as_second() - now.as_second().rem_euclid(3600);
    let handled = jiff::Timestamp::from_second(hour - 5 * 3600).unwrap();
    let success = jiff::Timestamp::from_second(hour - 5 * 3600 - 60).unwrap();
    std::fs::write(
        state.join("state.json"),
        serde_json::json!({"schedules": {"hourly": {
            "handled_until": handled, "last_success": success, "counts": {"succeeded": 7}}}})
        .to_string(),
    )
    .unwrap();
    // A backup made by hand with another schedule's tag: the repository says when
    // that schedule last succeeded, though the state file never saw it.
    env.run(&[
        "backup",
        "path",
        data.to_str().unwrap(),
        "--tag",
        "schedule=yearly",
    ])
    .ok();
    let by_hand = tagged(&env, "yearly")[0]["snapshot"]["time"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    let port = free_port();
    let config = format!(
        "{}schedules:\n  hourly:\n    job: path\n    cron: \"0 * * * *\"\n    repository: main\n    args: [{d}]\n  \
         yearly:\n    job: path\n    cron: \"0 0 1 1 *\"\n    repository: main\n    args: [{d}]\n",
        header(&env, &password, &state, port),
        d = data.display()
    );
    let mut server = Server::start(&env, &config, &state, port);
    let hourly = |name: &str| series(name, &[("schedule", "hourly"), ("kind", "path")]);
    let runs = series(
        "ballast_schedule_runs_total",
        &[
            ("schedule", "hourly"),
            ("kind", "path"),
            ("outcome", "succeeded"),
        ],
    );
    // The remembered success and count hold from the first scrape on.
    let first = server.scrape().unwrap();
    assert!(value(&first, &runs).unwrap() >= 7.0, "{first}");
    assert!(
        value(
            &first,
            &hourly("ballast_schedule_last_success_timestamp_seconds")
        )
        .unwrap()
            >= success.as_second() as f64
    );
    let done = server.wait_for("the catch-up run and the repository probe", |s| {
        value(s, &runs) == Some(8.0)
            && value(
                s,
                &series(
                    "ballast_schedule_last_success_timestamp_seconds",
                    &[("schedule", "yearly"), ("kind", "path")],
                ),
            )
            .unwrap_or(0.0)
                > 0.0
    });
    let records = server.records();
    let missed: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"] == "missed")
        .collect();
    assert_eq!(missed.len(), 1, "{records:?}");
    // Every hour in (handled, the time the server looked] but the newest was missed.
    let looked = missed[0]["started"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    let due = (looked.as_second() - handled.as_second()) / 3600;
    assert_eq!(missed[0]["count"], due - 1);
    assert_eq!(
        value(&done, &hourly("ballast_schedule_missed_runs_total")),
        Some((due - 1) as f64)
    );
    // One catch-up run, not one per missed hour.
    let caught_up = records
        .iter()
        .filter(|r| r["schedule"] == "hourly" && r["outcome"] == "succeeded")
        .count();
    assert_eq!(caught_up, 1);
    let yearly = value(
        &done,
        &series(
            "ballast_schedule_last_success_timestamp_seconds",
            &[("schedule", "yearly"), ("kind", "path")],
        ),
    )
    .unwrap();
    assert_eq!(yearly as i64, by_hand.as_second());
    assert_eq!(server.stop(), 0);

    // Started again at once: nothing more is due, nothing is missed again, no run
    // starts (its attempt time stays that of the catch-up run).
    let attempt = value(
        &done,
        &hourly("ballast_schedule_last_attempt_timestamp_seconds"),
    )
    .unwrap();
    let records_before = server.records().len();
    let mut server = Server::start(&env, &config, &state, port);
    let again = server.wait_for("a probe of the repository", |s| {
        value(
            s,
            "ballast_repository_last_probe_timestamp_seconds{repository=\"main\"}",
        )
        .unwrap_or(0.0)
            > 0.0
    });
    assert_eq!(value(&again, &runs), Some(8.0));
    assert_eq!(
        value(&again, &hourly("ballast_schedule_running")),
        Some(0.0)
    );
    assert_eq!(
        value(
            &again,
            &hourly("ballast_schedule_last_attempt_timestamp_seconds")
        ),
        Some(attempt)
    );
    assert_eq!(
        value(&again, &hourly("ballast_schedule_missed_runs_total")),
        Some((due - 1) as f64)
    );
    assert_eq!(server.stop(), 0);
    assert_eq!(server.records().len(), records_before);
}

/// The metric names an expression reads (every name is ballast's own: the
/// identifiers that start with `ballast_`, outside label matchers).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut cur = String::new();
    let mut in_braces = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '{' {
            in_braces = true;
        }
        if in_braces {
            if c == '}' {
                in_braces = false;
            }
            if !cur.is_empty() {
                names.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            cur.push(c);
        } else if !cur.is_empty() {
            names.push(std::mem::take(&mut cur));
        }
    }
    names
        .into_iter()
        .filter(|n| n.starts_with("ballast_"))
        .collect()
}

#[test]
fn alert_rules_pass_promtool_and_every_metric_they_read_is_served() {
    let deploy = root().join("host/deploy");
    for args in [
        vec!["check", "rules", "ballast.rules.yaml"],
        vec!["test", "rules", "ballast.rules.test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(deploy.join("prometheus"))
            .output()
            .expect("promtool (Debian's prometheus package; .ci/install installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The PrometheusRule holds the same groups as the rules file.
    let rules: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(deploy.join("prometheus/ballast.rules.yaml")).unwrap(),
    )
    .unwrap();
    let cr: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(deploy.join("kubernetes/prometheusrule.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(cr["spec"]["groups"], rules["groups"]);

    // Every metric a rule or a dashboard panel reads is in a real scrape.
    let mut exprs: Vec<String> = rules["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy.join("grafana/ballast-dashboard.json")).unwrap(),
    )
    .unwrap();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    let (env, password, data) = setup();
    let state = env.path("state");
    let port = free_port();
    let config = format!(
        "{}schedules:\n  files:\n    job: path\n    cron: \"@daily\"\n    repository: main\n    args: [{}]\n  \
         capture:\n    job: etcd-capture\n    repository: main\n    args: [--endpoints, \"127.0.0.1:1\"]\n\
         notifications:\n  hook:\n    webhook: {{url: \"http://127.0.0.1:1/\"}}\n",
        header(&env, &password, &state, port),
        data.display()
    );
    let mut server = Server::start(&env, &config, &state, port);
    let scrape = server.wait_for("the repository probe", |s| {
        value(s, "ballast_repository_up{repository=\"main\"}") == Some(1.0)
    });
    let served: std::collections::HashSet<String> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let mut read = 0;
    for e in &exprs {
        for name in metric_names(e) {
            read += 1;
            assert!(
                served.contains(&name),
                "`{name}` (in `{e}`) is not served:\n{scrape}"
            );
        }
    }
    assert!(
        read >= 15,
        "only {read} metric names found in the rules and dashboard"
    );
    assert_eq!(server.stop(), 0);
}

/// A loopback HTTP receiver: every request's path and JSON body; `/flaky` answers
/// 500 to its first request.
struct Receiver {
    port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            let mut flaky_seen = false;
            for stream in l.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                let (head, body) = loop {
                    let n = s.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        break (String::new(), Vec::new());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        let mut body = buf[i + 4..].to_vec();
                        while body.len() < len {
                            let n = s.read(&mut chunk).unwrap_or(0);
                            if n == 0 {
                                break;
                            }
                            body.extend_from_slice(&chunk[..n]);
                        }
                        break (head, body);
                    }
                };
                let path = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let status = if path == "/flaky" && !flaky_seen {
                    flaky_seen = true;
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                if status.starts_with("200") {
                    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    g.lock().unwrap().push((path, v));
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver { port, got }
    }

    fn bodies(&self, path: &str) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[test]
fn notifications_reach_every_sink_are_retried_and_never_hold_up_a_backup() {
    let (env, password, data) = setup();
    let state = env.path("state");
    let port = free_port();
    let rx = Receiver::start();
    let slack_url = env.path("slack-url");
    std::fs::write(&slack_url, format!("http://127.0.0.1:{}/slack", rx.port)).unwrap();
    let key = env.path("pd-key");
    std::fs::write(&key, "R0UTING-KEY-SECRET").unwrap();
    let (_hole, hole) = blackhole();
    let config = format!(
        "{}notifications:\n  chat:\n    slack: {{webhook_url_file: {}}}\n  \
         pager:\n    pagerduty: {{routing_key_file: {}, url: \"http://127.0.0.1:{p}/pd\"}}\n  \
         hook:\n    webhook: {{url: \"http://127.0.0.1:{p}/flaky\"}}\n    on: [failed, succeeded]\n  \
         dead:\n    webhook: {{url: \"http://127.0.0.1:1/\"}}\n    on: [succeeded]\n\
         schedules:\n  files:\n    job: path\n    cron: \"*/2 * * * * *\"\n    repository: main\n    \
         args: [{}]\n    notify: [hook, dead]\n  \
         broken:\n    job: etcd-snapshot\n    cron: \"*/3 * * * * *\"\n    repository: main\n    \
         args: [--endpoints, \"127.0.0.1:{hole}\"]\n    timeout: 1s\n    notify: [chat, pager, hook]\n",
        header(&env, &password, &state, port),
        slack_url.display(),
        key.display(),
        data.display(),
        p = rx.port,
    );
    let mut server = Server::start(&env, &config, &state, port);
    let dead = "ballast_notification_failures_total{sink=\"dead\"}";
    assert_eq!(value(&server.scrape().unwrap(), dead), Some(0.0));
    let files_ok = series(
        "ballast_schedule_runs_total",
        &[
            ("schedule", "files"),
            ("kind", "path"),
            ("outcome", "succeeded"),
        ],
    );
    // The dead sink retries for 15 s per message; backups go on meanwhile.
    let done = server.wait_for("every sink told, and the dead one given up on", |s| {
        value(s, dead).unwrap_or(0.0) >= 1.0
            && !rx.bodies("/slack").is_empty()
            && !rx.bodies("/pd").is_empty()
            && rx
                .bodies("/flaky")
                .iter()
                .any(|b| b["phase"] == "succeeded")
            && rx.bodies("/flaky").iter().any(|b| b["phase"] == "failed")
    });
    assert!(
        value(&done, &files_ok).unwrap() >= 5.0,
        "backups waited for a sink:\n{done}"
    );
    assert!(value(&done, "ballast_notifications_sent_total{sink=\"hook\"}").unwrap() >= 2.0);
    assert_eq!(server.stop(), 0);

    let slack = &rx.bodies("/slack")[0];
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .contains("schedule broken (etcd-snapshot) failed"),
        "{slack}"
    );
    let pd = &rx.bodies("/pd")[0];
    assert_eq!(pd["event_action"], "trigger");
    assert_eq!(pd["routing_key"], "R0UTING-KEY-SECRET");
    assert_eq!(pd["payload"]["component"], "broken");
    // The webhook's body: the documented fields.
    let failed = rx
        .bodies("/flaky")
        .into_iter()
        .find(|b| b["phase"] == "failed")
        .unwrap();
    for field in [
        "version", "server", "schedule", "job", "run_id", "phase", "error", "started", "next_run",
    ] {
        assert!(!failed[field].is_null(), "{field} missing from {failed}");
    }
    assert_eq!(failed["version"], 1);
    assert!(
        failed["error"].as_str().unwrap().contains("timeout"),
        "{failed}"
    );
    // Secrets stay out of the log.
    let log = std::fs::read_to_string(env.path(&format!("server-{port}.log"))).unwrap();
    assert!(log.contains("notification sink dead"), "{log}");
    assert!(
        !log.contains("R0UTING-KEY-SECRET") && !log.contains("/slack"),
        "{log}"
    );
}

#[test]
fn a_run_the_server_died_in_is_recorded_as_interrupted_and_sigterm_stops_a_run() {
    let (env, password, _data) = setup();
    let state = env.path("state");
    let port = free_port();
    let (_hole, hole) = blackhole();
    let config = format!(
        "{}schedules:\n  slow:\n    job: etcd-snapshot\n    cron: \"*/2 * * * * *\"\n    repository: main\n    \
         args: [--endpoints, \"127.0.0.1:{hole}\"]\n",
        header(&env, &password, &state, port),
    );
    let running = series(
        "ballast_schedule_running",
        &[("schedule", "slow"), ("kind", "etcd-snapshot")],
    );
    let failed = series(
        "ballast_schedule_runs_total",
        &[
            ("schedule", "slow"),
            ("kind", "etcd-snapshot"),
            ("outcome", "failed"),
        ],
    );
    let mut server = Server::start(&env, &config, &state, port);
    server.wait_for("a run", |s| value(s, &running) == Some(1.0));
    // The server dies with the run in progress (its job is left to the blackhole,
    // which lets it go when this test ends).
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert!(server.records().is_empty());

    let mut server = Server::start(&env, &config, &state, port);
    let first = server.scrape().unwrap();
    assert_eq!(value(&first, &failed), Some(1.0), "{first}");
    let interrupted: Vec<Value> = server
        .records()
        .into_iter()
        .filter(|r| r["outcome"] == "failed")
        .collect();
    assert_eq!(interrupted.len(), 1);
    assert!(interrupted[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("interrupted"));
    assert!(interrupted[0]["scheduled_for"].is_string());

    // SIGTERM with a run in progress: the run is stopped and says why.
    server.wait_for("a run", |s| value(s, &running) == Some(1.0));
    assert_eq!(server.stop(), 0);
    let stopped = server
        .records()
        .into_iter()
        .filter(|r| r["outcome"] == "failed")
        .last()
        .unwrap();
    assert_eq!(
        stopped["reason"], "stopped: the server is shutting down",
        "{stopped}"
    );
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("state.json")).unwrap()).unwrap();
    assert!(st["schedules"]["slow"]["running"].is_null(), "{st}");
}

/// A Pushgateway on loopback (Debian's prometheus-pushgateway), stopped on drop.
struct Pushgateway(Child, u16);

impl Pushgateway {
    fn start() -> Pushgateway {
        let port = free_port();
        let child = Command::new("prometheus-pushgateway")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-pushgateway (Debian's package; .ci/install installs it)");
        let start = Instant::now();
        while get(port, "/metrics").is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the Pushgateway did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Pushgateway(child, port)
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_one_shot_run_pushes_its_metrics_and_exits_with_the_job_s_code() {
    let (env, password, data) = setup();
    let state = env.path("state");
    let pg = Pushgateway::start();
    let config = format!(
        "{}schedules:\n  files:\n    job: path\n    cron: \"@daily\"\n    repository: main\n    args: [{}]\n  \
         broken:\n    job: etcd-snapshot\n    cron: \"@daily\"\n    repository: main\n    args: [--endpoints, \"127.0.0.1:1\"]\n",
        header(&env, &password, &state, free_port()),
        data.display()
    );
    let file = env.path("server.yaml");
    std::fs::write(&file, config).unwrap();
    let textfile = env.path("ballast.prom");
    let push = format!("http://127.0.0.1:{}", pg.1);
    let once = |schedule: &str| {
        env.run(&[
            "server",
            "--config",
            file.to_str().unwrap(),
            "--once",
            schedule,
            "--pushgateway",
            &push,
            "--textfile",
            textfile.to_str().unwrap(),
        ])
    };
    once("files").ok();
    assert_eq!(tagged(&env, "files").len(), 1);
    let (_, pushed) = get(pg.1, "/metrics").unwrap();
    assert!(
        pushed.contains(
            "ballast_schedule_runs_total{instance=\"\",job=\"ballast\",kind=\"path\",outcome=\"succeeded\",schedule=\"files\"} 1"
        ),
        "{pushed}"
    );
    // The textfile is the classic text format: promtool reads it without a complaint.
    let check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&textfile).unwrap())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let text = std::fs::read_to_string(&textfile).unwrap();
    assert!(!text.contains("# EOF"));
    assert!(
        text.contains("# TYPE ballast_schedule_runs_total counter"),
        "{text}"
    );

    // A failed job: its exit code, its count, and its own group in the Pushgateway.
    let out = once("broken").expect_code(1);
    assert!(out.stderr.contains("broken"), "{}", out.stderr);
    let text = std::fs::read_to_string(&textfile).unwrap();
    assert!(
        text.contains("ballast_schedule_runs_total{schedule=\"broken\",kind=\"etcd-snapshot\",outcome=\"failed\"} 1"),
        "{text}"
    );
    let (_, pushed) = get(pg.1, "/metrics").unwrap();
    assert!(
        pushed.contains(
            "ballast_schedule_runs_total{instance=\"\",job=\"ballast\",kind=\"etcd-snapshot\",outcome=\"failed\",schedule=\"broken\"} 1"
        ),
        "{pushed}"
    );
    // The files group is still there: each schedule pushes its own.
    assert!(pushed.contains("schedule=\"files\""), "{pushed}");
    // A Pushgateway that is down: said, but the job's outcome stands.
    let out = env
        .run(&[
            "server",
            "--config",
            file.to_str().unwrap(),
            "--once",
            "files",
            "--pushgateway",
            "http://127.0.0.1:1",
        ])
        .ok();
    assert!(
        out.stderr.contains("warning: cannot push the metrics"),
        "{}",
        out.stderr
    );
    let out = once("nightly").expect_code(1);
    assert!(
        out.stderr.contains("no schedule `nightly`") && out.stderr.contains("broken, files"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_kept_running_capture_reports_its_revision_and_lag_and_stops_cleanly() {
    let etcd = ballast_tests::etcd::Etcd::start();
    etcd.load("/registry/configmaps/default/", 50, 100);
    let (env, password, _data) = setup();
    let state = env.path("state");
    let port = free_port();
    let config = format!(
        "{}schedules:\n  capture:\n    job: etcd-capture\n    repository: main\n    rpo: 2m\n    \
         args: [--endpoints, \"{}\", --segment-interval, 1s]\n",
        header(&env, &password, &state, port),
        etcd.endpoint
    );
    let mut server = Server::start(&env, &config, &state, port);
    let labels = [("schedule", "capture"), ("kind", "etcd-capture")];
    let first = server.scrape().unwrap();
    assert_eq!(
        value(&first, &series("ballast_capture_rpo_seconds", &labels)),
        Some(120.0)
    );
    etcd.put("/registry/namespaces/late", "{}");
    let revision = etcd.revision();
    let done = server.wait_for("the capture to store the newest revision", |s| {
        value(s, &series("ballast_capture_revision", &labels)).unwrap_or(0.0) >= revision as f64
    });
    assert_eq!(
        value(&done, &series("ballast_capture_up", &labels)),
        Some(1.0)
    );
    assert!(
        value(
            &done,
            &series("ballast_capture_last_segment_timestamp_seconds", &labels)
        )
        .unwrap()
            > 1.7e9
    );
    let lag = value(&done, &series("ballast_capture_lag_seconds", &labels)).unwrap();
    assert!((0.0..120.0).contains(&lag), "lag {lag}");
    assert_eq!(
        value(&done, &series("ballast_capture_restarts_total", &labels)),
        Some(0.0)
    );
    // SIGTERM: the capture writes its last segment and ends cleanly.
    assert_eq!(server.stop(), 0);
    let records = server.records();
    let last = records.last().expect("the capture's run record");
    assert_eq!(last["outcome"], "succeeded", "{last}");
    assert!(env
        .json(&["snapshots", "--tag", "schedule=capture"])
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["snapshot"]["source"]["kind"] == "etcd-delta"));
}

#[test]
fn a_kube_drill_sends_the_backup_with_dry_run_and_writes_nothing() {
    let k = ballast_tests::kube::KubeEnv::new();
    k.server.namespace("shop");
    k.server.create(
        "/api/v1/namespaces/shop/configmaps",
        ballast_tests::kube::configmap("settings", "debug=false"),
    );
    k.backup_ok(&[]);
    let scratch = ballast_tests::apiserver::TestApiServer::start();
    // The scratch cluster has the namespace: its objects are tried, not deferred.
    scratch.namespace("shop");
    let scratch_kc = scratch.kubeconfig(k.env.dir.path(), "scratch", None);
    let env = &k.env;
    let password = env.path("password");
    std::fs::write(&password, PASSWORD).unwrap();
    let state = env.path("state");
    let config = format!(
        "{}schedules:\n  drill:\n    job: kube-drill\n    cron: \"@daily\"\n    repository: main\n    \
         args: [latest, --kubeconfig, {}]\n  \
         same-cluster:\n    job: kube-drill\n    cron: \"@daily\"\n    repository: main\n    \
         args: [latest, --kubeconfig, {}]\n",
        header(env, &password, &state, free_port()),
        scratch_kc.display(),
        k.kubeconfig.display()
    );
    let file = env.path("server.yaml");
    std::fs::write(&file, config).unwrap();
    let once = |s: &str| env.run(&["server", "--config", file.to_str().unwrap(), "--once", s]);
    once("drill").ok();
    // Nothing was written to the scratch cluster.
    let (code, cm) = scratch.call("GET", "/api/v1/namespaces/shop/configmaps/settings", None);
    assert_eq!(code, 404, "a dry run wrote {cm}");
    // Into the cluster it came from, every object exists: skipped, so partial.
    once("same-cluster").expect_code(3);
    let records: Vec<Value> = std::fs::read_to_string(state.join("runs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records[0]["job"], "kube-drill");
    assert_eq!(records[0]["outcome"], "succeeded");
    assert_eq!(records[1]["outcome"], "partial");
}
