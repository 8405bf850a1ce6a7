//! The quiesce plugins: an application's own HTTP endpoints, and an allowed command.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use ballast_tests::plugins::env;

/// A loopback HTTP server that answers `status` to every request and records the
/// request lines.
fn server(status: u16) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(vec![]));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            // Skip the headers (the requests carry no body).
            let mut h = String::new();
            while reader.read_line(&mut h).unwrap() > 2 {
                h.clear();
            }
            log.lock().unwrap().push(line.trim().to_string());
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
        }
    });
    (base, seen)
}

#[test]
fn quiesce_http_calls_the_allowed_urls_in_order() {
    let (base, seen) = server(200);
    let env = env(&format!(
        "plugins:\n  - {{ name: quiesce-http, urls: [\"{base}/admin/\"] }}\n"
    ));
    let q = format!("quiesce-url={base}/admin/quiesce");
    let u = format!("unquiesce-url={base}/admin/resume");
    let out = env
        .run(&[
            "hook",
            "run",
            "quiesce-http",
            "--target",
            "orders",
            "-p",
            &q,
            "-p",
            &u,
        ])
        .ok();
    assert!(
        out.stdout.contains("pre-backup: ok") && out.stdout.contains("post-backup: ok"),
        "{out:?}"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            "POST /admin/quiesce HTTP/1.1",
            "POST /admin/resume HTTP/1.1"
        ]
    );
    // A URL outside the prefix is denied before any request is made.
    let outside = format!("quiesce-url={base}/other");
    let out = env
        .run(&[
            "hook",
            "run",
            "quiesce-http",
            "--target",
            "orders",
            "--phase",
            "pre-backup",
            "-p",
            &outside,
        ])
        .expect_code(1);
    assert!(
        out.stdout.contains("is not granted to plugin quiesce-http"),
        "{out:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn quiesce_http_fails_on_an_error_answer() {
    let (base, _) = server(503);
    let env = env(&format!(
        "plugins:\n  - {{ name: quiesce-http, urls: [\"{base}/\"] }}\n"
    ));
    let q = format!("quiesce-url={base}/quiesce");
    let out = env
        .run(&[
            "hook",
            "run",
            "quiesce-http",
            "--target",
            "app",
            "--phase",
            "pre-backup",
            "-p",
            &q,
        ])
        .expect_code(1);
    assert!(out.stdout.contains("answered 503"), "{out:?}");
}

#[test]
fn quiesce_exec_runs_the_allowed_commands_only() {
    let env = env("plugins:\n  - { name: quiesce-exec, sha256: quiesce-exec, programs: { touch: { path: /usr/bin/touch, args: [\"/tmp/ballast-quiesce-*\"], write: [/tmp] } } }\n");
    let marker = format!("/tmp/ballast-quiesce-{}", std::process::id());
    let _ = std::fs::remove_file(&marker);
    let pre = format!("pre=touch {marker}");
    env.run(&[
        "hook",
        "run",
        "quiesce-exec",
        "--target",
        "node-1",
        "--phase",
        "pre-backup",
        "-p",
        &pre,
    ])
    .ok();
    assert!(std::path::Path::new(&marker).exists());
    std::fs::remove_file(&marker).unwrap();
    // An argument outside the globs, or another program, is denied.
    let out = env
        .run(&[
            "hook",
            "run",
            "quiesce-exec",
            "--target",
            "node-1",
            "--phase",
            "pre-backup",
            "-p",
            "pre=touch /etc/owned",
        ])
        .expect_code(1);
    assert!(
        out.stdout
            .contains("arguments [\"/etc/owned\"] fit none of the shapes granted"),
        "{out:?}"
    );
    let out = env
        .run(&[
            "hook",
            "run",
            "quiesce-exec",
            "--target",
            "node-1",
            "--phase",
            "pre-backup",
            "-p",
            "pre=rm -rf /",
        ])
        .expect_code(1);
    assert!(
        out.stdout.contains("exec: program rm is not granted"),
        "{out:?}"
    );
}
