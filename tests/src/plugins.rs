//! Plugins for the tests: the guest plugins built from this checkout, a policy file
//! per test, and throwaway databases on the machine's MariaDB and PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::Env;

/// The checkout's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the guest plugins (once per test process; cargo's lock serialises
/// processes) and returns the directory of the components.
pub fn built() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let script = root().join("guest-plugins/build");
            let out = Command::new("bash")
                .arg(&script)
                .output()
                .expect("running guest-plugins/build");
            assert!(
                out.status.success(),
                "guest-plugins/build failed (is the wasm32-wasip2 target installed? .ci/install adds it):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            root().join("guest-plugins/target/wasm32-wasip2/release")
        })
        .clone()
}

/// The component of a guest crate (`mysql`, `hostile`...).
pub fn component(name: &str) -> String {
    built()
        .join(format!("ballast_plugin_{}.wasm", name.replace('-', "_")))
        .display()
        .to_string()
}

/// The sha256 of a built component, as the policy pins it.
pub fn digest(name: &str) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(component(name)).expect("the component is built");
    hex::encode(sha2::Sha256::digest(&bytes))
}

/// The components a test policy can pin by name: `sha256: mysql` in a policy
/// written by a test stands for the digest of the mysql component built here.
const PINNABLE: &[&str] = &[
    "mysql",
    "postgresql",
    "hostile",
    "quiesce-exec",
    "quiesce-http",
    "noop",
];

/// The program grants the shipped mysql plugin needs (what the guide shows).
pub const MYSQL_PROGRAMS: &str = r#"{ mysqldump: { path: /usr/bin/mysqldump, args: ["--single-transaction", "--quick", "--routines", "--triggers", "--events", "--hex-blob", "--default-character-set=utf8mb4", "*"] }, mysql: { path: /usr/bin/mysql, args: ["ballast_test_*"] } }"#;

/// The program grants the shipped postgresql plugin needs.
pub const POSTGRES_PROGRAMS: &str = r#"{ pg_dump: { path: /usr/bin/pg_dump, args: ["--format=custom", "--compress=0"] }, pg_restore: { path: /usr/bin/pg_restore, args: [["--list"], ["--exit-on-error", "--dbname=*", "**"]] } }"#;

/// An environment for plugin tests: a repository, a private compile cache, the
/// checkout's catalog, and a policy written by the test (`sha256: NAME` pins the
/// component NAME built here).
pub fn env(policy: &str) -> Env {
    let mut env = Env::init_local();
    let policy_path = env.path("plugins.yaml");
    built();
    let mut policy = policy.to_string();
    for name in PINNABLE {
        for end in [",", " }", "\n"] {
            policy = policy.replace(
                &format!("sha256: {name}{end}"),
                &format!("sha256: \"{}\"{end}", digest(name)),
            );
        }
    }
    std::fs::write(&policy_path, policy).unwrap();
    let cache = env.path("cache");
    env.vars.extend([
        (
            "BALLAST_PLUGIN_POLICY".into(),
            policy_path.display().to_string(),
        ),
        ("BALLAST_CACHE_DIR".into(), cache.display().to_string()),
        (
            "BALLAST_CATALOG".into(),
            root()
                .join("guest-plugins/catalog.toml")
                .display()
                .to_string(),
        ),
    ]);
    built();
    env
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A database on the local MariaDB (root, no password), dropped at the end.
pub struct Mysql {
    pub name: String,
}

impl Mysql {
    pub fn create() -> Mysql {
        let name = unique("ballast_test");
        let m = Mysql { name };
        m.sql_root(&format!("CREATE DATABASE `{}`", m.name));
        m
    }

    fn sql_root(&self, sql: &str) -> String {
        use std::io::Write;
        // Through stdin: statements can be longer than an argument list.
        let mut child = Command::new("mysql")
            .args([
                "-h",
                "127.0.0.1",
                "-P",
                "3306",
                "-u",
                "root",
                "--default-character-set=utf8mb4",
                "--batch",
                "--skip-column-names",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running mysql");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let head: String = sql.chars().take(300).collect();
        assert!(
            out.status.success(),
            "mysql: {head}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs SQL in this database and returns its output (tab-separated, no header).
    pub fn sql(&self, sql: &str) -> String {
        self.sql_root(&format!("USE `{}`; {sql}", self.name))
    }

    /// Like `sql`, but returns the error instead of panicking.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mysql")
            .args([
                "-h",
                "127.0.0.1",
                "-u",
                "root",
                "--default-character-set=utf8mb4",
                "--batch",
                "--skip-column-names",
                &self.name,
                "-e",
                sql,
            ])
            .output()
            .expect("running mysql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The policy target for this database.
    pub fn target(&self, name: &str) -> String {
        format!(
            "  - {{ name: {name}, kind: mysql, address: \"127.0.0.1:3306\", user: root, database: {} }}\n",
            self.name
        )
    }
}

impl Drop for Mysql {
    fn drop(&mut self) {
        let _ = Command::new("mysql")
            .args([
                "-h",
                "127.0.0.1",
                "-u",
                "root",
                "-e",
                &format!("DROP DATABASE IF EXISTS `{}`", self.name),
            ])
            .output();
    }
}

/// A database on the local PostgreSQL (user postgres, trust), dropped at the end.
pub struct Postgres {
    pub name: String,
}

impl Postgres {
    pub fn create() -> Postgres {
        let name = unique("ballast_test");
        let p = Postgres { name };
        p.psql("postgres", &format!("CREATE DATABASE {}", p.name));
        p
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                db,
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql -c {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs SQL in this database and returns its output (unaligned, no header).
    pub fn sql(&self, sql: &str) -> String {
        self.psql(&self.name, sql)
    }

    pub fn target(&self, name: &str) -> String {
        format!(
            "  - {{ name: {name}, kind: postgresql, address: \"127.0.0.1:5432\", user: postgres, database: {} }}\n",
            self.name
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-X",
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}
