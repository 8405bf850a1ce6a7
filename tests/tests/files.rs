//! File and volume backup: what a restore gives back, the parent-snapshot shortcut,
//! excludes and includes, listing and diffing, and files that cannot be read.

use std::os::unix::fs::MetadataExt;

use ballast_tests::{trees, Env};

#[test]
fn restore_gives_back_contents_and_metadata() {
    let env = Env::init_local();
    let src = env.path("src");
    trees::sample(&src);
    let id = env.backup(&src, &["--tag", "volume"]);
    let target = env.path("restored");
    let out = env
        .run(&[
            "restore",
            &id[..10],
            "--target",
            target.to_str().unwrap(),
            "--json",
        ])
        .ok()
        .json();
    assert!(out["summary"]["errors"].as_array().unwrap().is_empty());
    trees::assert_same(&src, &target);
    // The sparse file stays sparse: 64 MiB long, a few blocks allocated.
    let m = std::fs::metadata(target.join("data/sparse.img")).unwrap();
    assert_eq!(m.len(), 64 * 1024 * 1024);
    assert!(
        m.blocks() * 512 < 4 * 1024 * 1024,
        "sparse file restored dense: {} blocks",
        m.blocks()
    );
    env.run(&["repo", "check", "--read-data"]).ok();
}

#[test]
fn unchanged_files_are_not_read_again_unless_forced() {
    let env = Env::init_local();
    let src = env.path("src");
    trees::sample(&src);
    let first = env.json(&["backup", "path", src.to_str().unwrap()]);
    let total = first["snapshot"]["summary"]["total_bytes"]
        .as_u64()
        .unwrap();
    assert_eq!(
        first["snapshot"]["summary"]["bytes_read"].as_u64().unwrap(),
        total
    );

    let second = env.json(&["backup", "path", src.to_str().unwrap()]);
    let s = &second["snapshot"]["summary"];
    assert_eq!(s["bytes_read"], 0, "{s}");
    assert_eq!(s["files_unmodified"], s["files"], "{s}");
    assert_eq!(s["blobs_new"], 0, "{s}");
    assert_eq!(second["snapshot"]["parent"], first["snapshot_id"]);

    let forced = env.json(&["backup", "path", src.to_str().unwrap(), "--force-reread"]);
    let s = &forced["snapshot"]["summary"];
    assert_eq!(s["bytes_read"].as_u64().unwrap(), total, "{s}");
    assert_eq!(
        s["blobs_new"], 0,
        "re-reading unchanged data must add nothing: {s}"
    );

    // A changed file is read; the rest is not.
    std::fs::write(src.join("etc/app.yaml"), b"replicas: 5\n").unwrap();
    let third = env.json(&["backup", "path", src.to_str().unwrap()]);
    let s = &third["snapshot"]["summary"];
    assert_eq!(s["files_changed"], 1, "{s}");
    assert_eq!(s["bytes_read"], 12, "{s}");
}

#[test]
fn excludes_and_includes() {
    let env = Env::init_local();
    let src = env.path("src");
    trees::sample(&src);
    let deep = format!("{}/deep/**", src.display());
    let id = env.backup(&src, &["--exclude", "*.log", "--exclude", &deep]);
    let listed: Vec<String> = env
        .json(&["ls", &id])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert!(listed.contains(&"etc/app.yaml".to_string()), "{listed:?}");
    assert!(listed.iter().all(|p| !p.ends_with(".log")), "{listed:?}");
    assert!(listed.contains(&"deep".to_string()), "{listed:?}");
    assert!(listed.iter().all(|p| !p.starts_with("deep/")), "{listed:?}");

    let target = env.path("partial");
    env.run(&[
        "restore",
        &id,
        "--target",
        target.to_str().unwrap(),
        "--include",
        "etc",
    ])
    .ok();
    assert!(target.join("etc/app.yaml").exists());
    assert!(!target.join("data").exists());
    let out = env
        .run(&[
            "restore",
            &id,
            "--target",
            target.to_str().unwrap(),
            "--include",
            "nope/*",
        ])
        .expect_code(1);
    assert!(
        out.stderr.contains("no path in the snapshot matches"),
        "{}",
        out.stderr
    );
}

#[test]
fn ls_and_diff() {
    let env = Env::init_local();
    let src = env.path("src");
    trees::sample(&src);
    let a = env.backup(&src, &[]);
    let sub = env.json(&["ls", &a, "deep/a"]);
    let paths: Vec<&str> = sub
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec![
            "deep/a/b",
            "deep/a/b/c",
            "deep/a/b/c/d",
            "deep/a/b/c/d/file.txt"
        ]
    );
    let human = env.run(&["ls", &a, "config-link"]).ok().stdout;
    assert!(
        human.starts_with("lrwxrwxrwx") && human.contains("-> etc/app.yaml"),
        "{human}"
    );

    std::fs::write(src.join("new.txt"), b"new").unwrap();
    std::fs::remove_file(src.join("run.sh")).unwrap();
    std::fs::write(src.join("deep/a/b/c/d/file.txt"), b"changed").unwrap();
    let b = env.backup(&src, &[]);
    let d = env.json(&["diff", &a, &b]);
    let changes: Vec<(String, String)> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().to_string(),
                c["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        changes.contains(&("added".into(), "new.txt".into())),
        "{changes:?}"
    );
    assert!(
        changes.contains(&("removed".into(), "run.sh".into())),
        "{changes:?}"
    );
    assert!(
        changes.contains(&("modified".into(), "deep/a/b/c/d/file.txt".into())),
        "{changes:?}"
    );
    assert_eq!(changes.len(), 3, "{changes:?}");
    let out = env.run(&["diff", &a, "ffffffff"]).expect_code(1);
    assert!(
        out.stderr.contains("no snapshot matches `ffffffff`"),
        "{}",
        out.stderr
    );
}

#[test]
fn unreadable_files_are_reported_not_fatal() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::local();
    let root = unsafe { libc::geteuid() } == 0;
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("readable.txt"), b"fine").unwrap();
    std::fs::write(src.join("secret.key"), b"cannot read me").unwrap();
    std::fs::set_permissions(
        src.join("secret.key"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads everything, so as root the backup runs as `nobody`.
    let run = |args: &[&str]| {
        let mut c = env.cmd(args);
        if root {
            for p in [env.dir.path(), &src] {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
            }
            let prog = c.get_program().to_owned();
            let mut wrapped = std::process::Command::new("setpriv");
            wrapped
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(prog)
                .args(c.get_args());
            for (k, v) in c.get_envs() {
                match v {
                    Some(v) => wrapped.env(k, v),
                    None => wrapped.env_remove(k),
                };
            }
            c = wrapped;
        }
        let o = c.output().unwrap();
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, _, err) = run(&["repo", "init"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["backup", "path", src.to_str().unwrap(), "--json"]);
    assert_eq!(
        code, 3,
        "exit 3 = saved with unreadable files\n{out}\n{err}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let warnings = v["snapshot"]["warnings"].as_array().unwrap();
    let text = serde_json::to_string(warnings).unwrap();
    assert!(
        text.contains("secret.key") && text.contains("ermission denied"),
        "{text}"
    );
    assert!(
        text.contains("sub") && text.contains("cannot list"),
        "{text}"
    );
    let (code, out, _) = run(&["ls", "latest", "--json"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("readable.txt") && !out.contains("secret.key"),
        "{out}"
    );
    let (code, _, err) = run(&["repo", "check"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_file_changing_while_read_is_reported() {
    let env = Env::init_local();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let growing = src.join("growing.log");
    std::fs::write(&growing, ballast_tests::random_bytes(64 << 20, 5)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, growing) = (stop.clone(), growing.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            // Bounded: 2 MiB/s for at most a minute, whatever happens to the backup.
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(growing)
                .unwrap();
            let started = std::time::Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed().as_secs() < 60
            {
                f.write_all(&[b'x'; 4096]).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let v = env.json(&["backup", "path", src.to_str().unwrap()]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let text = v["snapshot"]["warnings"].to_string();
    assert!(
        text.contains("growing.log") && text.contains("changed while it was being read"),
        "{text}"
    );
    env.run(&["repo", "check", "--read-data"]).ok();
}
