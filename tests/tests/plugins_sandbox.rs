//! The programs a plugin may run, attacked from inside the plugin (the `hostile`
//! plugin's `exec` attack runs whatever program and arguments a test names). What
//! the policy grants is all a program gets: arguments by position, a database client
//! only with its target, no file options, no credentials on disk, another user, no
//! network but the target, no files but its own directory. And the other ways out:
//! a plugin that calls itself by another's name, or by a name that is a path.

use ballast_tests::plugins::{component, digest, env as plugin_env, Mysql, Postgres};
use ballast_tests::{Env, Out};

/// Runs `program` with `args` (split at spaces) through the hostile plugin.
fn exec(env: &Env, program: &str, args: &str, with_target: bool) -> Out {
    let c = component("hostile");
    let p = format!("program={program}");
    let a = format!("args={args}");
    let t = format!("with-target={}", if with_target { "yes" } else { "no" });
    env.run(&[
        "hook",
        "run",
        &c,
        "--target",
        "db",
        "--phase",
        "pre-backup",
        "-p",
        "attack=exec",
        "-p",
        &p,
        "-p",
        &a,
        "-p",
        &t,
    ])
}

/// A target for policies whose programs need none (the hostile plugin is always
/// granted one named db).
const NO_DB: &str = "  - { name: db, kind: mysql, address: \"127.0.0.1:1\" }\n";

fn policy(targets: &str, programs: &str) -> String {
    format!(
        "targets:\n{targets}plugins:\n  - name: hostile\n    sha256: hostile\n    targets: [db]\n    programs: {programs}\n"
    )
}

#[test]
fn a_database_client_runs_only_with_its_target_and_no_option_escapes_it() {
    let db = Mysql::create();
    let env = plugin_env(&policy(
        &db.target("db"),
        r#"{ mysql: { path: /usr/bin/mysql, args: ["**"] }, mysqldump: { path: /usr/bin/mysqldump, args: ["**"] } }"#,
    ));
    // Without a target, the client would run with ballast's identity: refused.
    let out = exec(&env, "mysql", "--defaults-extra-file=db.cnf", false).expect_code(1);
    assert!(
        out.stdout
            .contains("MySQL client: it runs only with a target"),
        "{out:?}"
    );
    let out = exec(&env, "mysql", "-e select", false).expect_code(1);
    assert!(out.stdout.contains("runs only with a target"), "{out:?}");
    // With one, nothing may point it elsewhere, print its credentials, or read and
    // write files, whatever the grant's shapes allow.
    for args in [
        "--print-defaults",
        "--defaults-extra-file=db.cnf",
        "--defaults-file=/etc/mysql/my.cnf",
        "--local-infile=1 -e select",
        "--result-file=/tmp/ballast-escape",
        "--tab=/tmp",
        "--tee=/tmp/ballast-escape",
        "--pager=sh",
        "--host=127.0.0.2",
        "-h127.0.0.2",
        "/etc/passwd",
        // Clusters hide an option behind another: `-A -h 127.0.0.2`, `-B -r /tmp/x`.
        "-Ah127.0.0.2",
        "-Br/tmp/ballast-escape",
    ] {
        let out = exec(&env, "mysql", args, true).expect_code(1);
        assert!(
            out.stdout.contains("is refused: a MySQL client may not"),
            "{args}: {out:?}"
        );
        assert!(!out.stdout.contains("RAN"), "{args}: {out:?}");
    }
    let out = exec(
        &env,
        "mysqldump",
        "--result-file=/tmp/ballast-escape x",
        true,
    )
    .expect_code(1);
    assert!(out.stdout.contains("is refused"), "{out:?}");
    assert!(!std::path::Path::new("/tmp/ballast-escape").exists());
    // What is allowed works, with the target's credentials and through its network.
    let out = exec(&env, "mysqldump", &format!("--no-data {}", db.name), true).expect_code(1);
    assert!(
        out.stdout.contains("RAN mysqldump: exit Some(0)"),
        "{out:?}"
    );
    assert!(out.stdout.contains("Dump completed"), "{out:?}");
}

#[test]
fn postgresql_clients_cannot_write_or_read_files() {
    let db = Postgres::create();
    let env = plugin_env(&policy(
        &db.target("db"),
        r#"{ pg_restore: { path: /usr/bin/pg_restore, args: ["**"] }, pg_dump: { path: /usr/bin/pg_dump, args: ["**"] } }"#,
    ));
    for (program, args) in [
        ("pg_restore", "-f /tmp/ballast-escape"),
        ("pg_restore", "--file=/tmp/ballast-escape"),
        ("pg_restore", "--list /etc/shadow"),
        ("pg_restore", "-L /etc/shadow"),
        ("pg_dump", "-f /tmp/ballast-escape"),
        ("pg_dump", "--dbname=host=127.0.0.2"),
        ("pg_dump", "host=127.0.0.2"),
    ] {
        let out = exec(&env, program, args, true).expect_code(1);
        assert!(
            out.stdout
                .contains("is refused: a PostgreSQL client may not"),
            "{program} {args}: {out:?}"
        );
    }
    let out = exec(&env, "pg_dump", "--schema-only", false).expect_code(1);
    assert!(
        out.stdout
            .contains("PostgreSQL client: it runs only with a target"),
        "{out:?}"
    );
    // psql cannot be granted at all.
    let env = plugin_env(&policy(&db.target("db"), "{ psql: /usr/bin/psql }"));
    let out = exec(&env, "psql", "", true).expect_code(1);
    assert!(out.stderr.contains("psql runs shell commands"), "{out:?}");
}

/// The example that was tried as a new user would: a grant of
/// `of=/srv/restore/*.rdb` let `of=/srv/restore/../escaped.rdb` write outside.
#[test]
fn a_path_pattern_never_crosses_a_slash_or_goes_up() {
    let dir = tempfile::tempdir().unwrap();
    let area = dir.path().join("restore");
    std::fs::create_dir_all(&area).unwrap();
    // The program runs as another user: let it write in the area.
    std::fs::set_permissions(&area, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let a = area.display();
    let env = plugin_env(&policy(
        NO_DB,
        &format!(
            r#"{{ dd: {{ path: /usr/bin/dd, args: ["if=/dev/zero", "of={a}/*.rdb", "count=1"], write: [{a}] }} }}"#
        ),
    ));
    for bad in [
        format!("if=/dev/zero of={a}/../escaped.rdb count=1"),
        format!("if=/dev/zero of={a}/sub/x.rdb count=1"),
        format!("if=/dev/zero of={a}/x.rdb count=1 seek=9"),
        "if=/dev/zero of=/tmp/x.rdb count=1".to_string(),
    ] {
        let out = exec(&env, "dd", &bad, false).expect_code(1);
        assert!(
            out.stdout.contains("has a `..` component")
                || out.stdout.contains("fit none of the shapes"),
            "{bad}: {out:?}"
        );
        assert!(!out.stdout.contains("RAN"), "{bad}: {out:?}");
    }
    assert!(!dir.path().join("escaped.rdb").exists());
    let out = exec(
        &env,
        "dd",
        &format!("if=/dev/zero of={a}/ok.rdb count=1"),
        false,
    )
    .expect_code(1);
    assert!(out.stdout.contains("RAN dd: exit Some(0)"), "{out:?}");
    assert_eq!(std::fs::metadata(area.join("ok.rdb")).unwrap().len(), 512);
}

/// What a program sees when it runs: its own user, an empty directory of its own, no
/// network, no files of ballast's.
/// A program that is no database client never runs with a target: it would get the
/// target's credentials (a `cat` of the descriptor they come in).
#[test]
fn a_program_that_is_no_client_gets_no_credentials() {
    let db = Postgres::create();
    let target = db
        .target("db")
        .replace("user: postgres", "user: postgres, password: { env: PGPW }");
    let mut env = plugin_env(&policy(
        &target,
        r#"{ cat: { path: /bin/cat, args: ["/dev/fd/*"] } }"#,
    ));
    env.vars.push(("PGPW".into(), "pg-secret-4711".into()));
    for fd in 3..20 {
        let out = exec(&env, "cat", &format!("/dev/fd/{fd}"), true).expect_code(1);
        assert!(out.stdout.contains("is not a database client"), "{out:?}");
        assert!(!out.stdout.contains("pg-secret-4711"), "{out:?}");
    }
}

/// Sockets in the file system (a local database's, a daemon's) and the abstract
/// namespace are out of reach, and whatever a program starts dies with it, even if
/// it tries to leave its process group.
#[test]
fn a_program_reaches_no_unix_socket_and_leaves_nothing_running() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: the confinement under test needs root here");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ballast-sock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let path = dir.join("s");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let env = plugin_env(&policy(
        NO_DB,
        &format!(
            r#"{{ python3: {{ path: /usr/bin/python3, args: ["-c", "**"], read: [{}] }}, bash: {{ path: /bin/bash, args: ["-c", "**"] }} }}"#,
            dir.display()
        ),
    ));
    let code = format!(
        "import\tsocket;s=socket.socket(socket.AF_UNIX);s.connect('{}');s.send(b'x');print('CONNECTED')",
        path.display()
    );
    // The exec helper splits at spaces: python takes a tab between words too.
    let out = exec(&env, "python3", &format!("-c {code}"), false).expect_code(1);
    assert!(!out.stdout.contains("CONNECTED"), "{out:?}");
    assert!(out.stdout.contains("Permission denied"), "{out:?}");
    assert!(
        listener.accept().is_err(),
        "the program reached a Unix socket"
    );
    let abstract_code = "import\tsocket;s=socket.socket(socket.AF_UNIX);s.connect(b'\\0ballast');print('CONNECTED')";
    let out = exec(&env, "python3", &format!("-c {abstract_code}"), false).expect_code(1);
    assert!(out.stdout.contains("Permission denied"), "{out:?}");

    // A child in the background, and one that tries to leave the process group.
    let mark = 4_000_000 + std::process::id() % 1_000_000;
    let out = exec(
        &env,
        "bash",
        &format!(
            "-c sleep${{IFS}}{mark}&>/dev/null&setsid${{IFS}}sleep${{IFS}}{}&>/dev/null&echo${{IFS}}started",
            mark + 1
        ),
        false,
    )
    .expect_code(1);
    assert!(out.stdout.contains("started"), "{out:?}");
    let running: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&mark.to_string()) || c.contains(&(mark + 1).to_string()))
        .collect();
    assert!(
        running.is_empty(),
        "still running after the program ended: {running:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_program_runs_as_nobody_in_an_empty_directory_without_network() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: user switching and network namespaces are not available here");
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let secret = std::env::temp_dir().join(format!("ballast-secret-{}", std::process::id()));
    std::fs::write(&secret, "do not read me").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let env = plugin_env(&policy(
        NO_DB,
        r#"{ id: { path: /usr/bin/id, args: ["-u"] }, ls: { path: /bin/ls, args: ["-a"] }, bash: { path: /bin/bash, args: ["-c", "**"] }, cat: { path: /bin/cat, args: ["/tmp/*"] } }"#,
    ));
    let out = exec(&env, "id", "-u", false).expect_code(1);
    assert!(out.stdout.contains("stdout [65534]"), "{out:?}");
    let out = exec(&env, "ls", "-a", false).expect_code(1);
    assert!(out.stdout.contains("stdout [.\n..]"), "{out:?}");
    // No network: a connection to a live listener on ballast's loopback fails.
    let out = exec(
        &env,
        "bash",
        &format!("-c :</dev/tcp/127.0.0.1/{port}"),
        false,
    )
    .expect_code(1);
    assert!(out.stdout.contains("RAN bash: exit Some(1)"), "{out:?}");
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the program reached ballast's network"
    );
    // Landlock: a world-readable file outside the system's paths is out of reach.
    let out = exec(&env, "cat", &secret.display().to_string(), false).expect_code(1);
    assert!(!out.stdout.contains("do not read me"), "{out:?}");
    assert!(out.stdout.contains("Permission denied"), "{out:?}");
    let _ = std::fs::remove_file(&secret);
}

/// With a target, the program's network reaches its target, and its credentials exist
/// only as an open descriptor: no file in its directory, no password in its
/// environment.
#[test]
fn a_client_reaches_its_target_only_and_its_credentials_are_no_file() {
    let db = Postgres::create();
    let target = db
        .target("db")
        .replace("user: postgres", "user: postgres, password: { env: PGPW }");
    let mut env = plugin_env(&policy(
        &target,
        r#"{ ls: { path: /bin/ls, args: ["-a"], client: postgresql }, env: { path: /usr/bin/env, client: postgresql }, pg_dump: { path: /usr/bin/pg_dump, args: ["--schema-only"] } }"#,
    ));
    env.vars.push(("PGPW".into(), "pg-secret-4711".into()));
    let out = exec(&env, "ls", "-a", true).expect_code(1);
    assert!(out.stdout.contains("stdout [.\n..]"), "{out:?}");
    let out = exec(&env, "env", "", true).expect_code(1);
    assert!(out.stdout.contains("PGPASSFILE=/dev/fd/"), "{out:?}");
    assert!(out.stdout.contains("PGHOSTADDR=127.0.0.1"), "{out:?}");
    assert!(!out.stdout.contains("pg-secret-4711"), "{out:?}");
    // The target is reachable (pg_dump connects)...
    let out = exec(&env, "pg_dump", "--schema-only", true).expect_code(1);
    assert!(out.stdout.contains("RAN pg_dump: exit Some(0)"), "{out:?}");
    assert!(out.stdout.contains("PostgreSQL database dump"), "{out:?}");
    // (That nothing else is reachable from a target's namespace is a unit test of
    // host/src/plugins/host/exec/network.rs: no client program can be told another
    // address to try.)
}

/// Grants go to the builds the policy names, not to whatever calls itself by name.
#[test]
fn a_component_cannot_take_another_plugins_grants_by_its_name() {
    let db = Mysql::create();
    // The policy grants `hostile` its target, pinned to the mysql component's digest:
    // the hostile component calls itself hostile, but is another build.
    let env = plugin_env(&format!(
        "targets:\n{}plugins:\n  - {{ name: hostile, sha256: \"{}\", targets: [db] }}\n",
        db.target("db"),
        digest("mysql")
    ));
    let c = component("hostile");
    let out = env
        .run(&["hook", "run", &c, "--target", "db", "-p", "attack=sql"])
        .expect_code(1);
    assert!(
        out.stderr.contains("says it is plugin hostile")
            && out.stderr.contains("grants hostile only to"),
        "{out:?}"
    );
    // And grants of targets or programs without a digest are refused outright.
    let env = plugin_env(&format!(
        "targets:\n{}plugins:\n  - {{ name: hostile, targets: [db] }}\n",
        db.target("db")
    ));
    let out = env
        .run(&["hook", "run", &c, "--target", "db", "-p", "attack=sql"])
        .expect_code(1);
    assert!(out.stderr.contains("must name the builds"), "{out:?}");
}

/// A plugin's name becomes a file name (its dump is `NAME.dump`): a name that is a
/// path is refused when the component is loaded, before any hook runs.
#[test]
fn a_plugin_whose_name_is_a_path_is_refused_at_load() {
    let env = plugin_env("");
    let c = component("bad-name");
    let out = env
        .run(&["backup", "app", "--plugin", &c, "--target", "x"])
        .expect_code(1);
    assert!(
        out.stderr
            .contains("calls itself \"../escape\", which cannot be a plugin's name"),
        "{out:?}"
    );
    assert!(env.snapshot_ids().is_empty());
}
