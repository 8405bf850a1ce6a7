//! Database client programs: which programs are MySQL or PostgreSQL clients, and the
//! arguments none of them may be given, whatever the policy allows.
//!
//! A client runs only with a target of its kind: ballast gives it the target's address
//! and credentials, and nothing else to connect to. A plugin must not redirect it:
//! `--host=elsewhere` (or `--hos=`, `--loose-host=`: the MySQL clients accept
//! unambiguous prefixes and these spellings) would send the credentials to a server of
//! the plugin's choosing, and `--print-defaults` would print the password. Options that
//! make a client read or write files (`--local-infile`, `--result-file`, `--tab`,
//! `--tee`, `--pager`, `-f`, `-L`...) are refused too, and so is undoing the MySQL
//! client's binary mode (which keeps it from running `\!` shell commands). A positional
//! argument of a client is a database or table name, never a path: one with a `/` is
//! refused.

use std::path::Path;

use super::TargetKind;

/// The MySQL/MariaDB programs (the names Debian, RHEL and upstream install).
const MYSQL_CLIENTS: &[&str] = &[
    "mysql",
    "mariadb",
    "mysqldump",
    "mariadb-dump",
    "mysqlpump",
    "mysqladmin",
    "mariadb-admin",
    "mysqlimport",
    "mariadb-import",
    "mysqlshow",
    "mariadb-show",
    "mysqlcheck",
    "mariadb-check",
    "mysqlbinlog",
    "mariadb-binlog",
    "mysqlslap",
    "mariadb-slap",
    "mysql_upgrade",
    "mariadb-upgrade",
    "mariadb-backup",
    "mariabackup",
    "xtrabackup",
];

/// The PostgreSQL programs that connect to a server.
const POSTGRES_CLIENTS: &[&str] = &[
    "psql",
    "pg_dump",
    "pg_dumpall",
    "pg_restore",
    "pg_basebackup",
    "pg_receivewal",
    "pg_recvlogical",
    "pg_isready",
    "pg_amcheck",
    "createdb",
    "dropdb",
    "createuser",
    "dropuser",
    "vacuumdb",
    "reindexdb",
    "clusterdb",
    "pgbench",
];

/// Programs that cannot be granted at all: they run shell commands from their input,
/// and no switch turns that off.
pub const SHELLS: &[&str] = &["psql"];

/// The database kind a program is a client of, from its name (or, for a link such as
/// Debian's `mysqldump -> mariadb-dump`, the name of what it points to).
pub fn kind_of(path: &Path) -> Option<TargetKind> {
    let by_name = |p: &Path| {
        let name = p.file_name()?.to_str()?;
        if MYSQL_CLIENTS.contains(&name) {
            Some(TargetKind::Mysql)
        } else if POSTGRES_CLIENTS.contains(&name) {
            Some(TargetKind::Postgresql)
        } else {
            None
        }
    };
    by_name(path).or_else(|| by_name(&std::fs::canonicalize(path).ok()?))
}

/// Whether a program is the interactive MySQL/MariaDB client.
pub fn is_mysql_shell(path: &Path) -> bool {
    let named = |p: &Path| {
        matches!(
            p.file_name().and_then(|n| n.to_str()),
            Some("mysql" | "mariadb")
        )
    };
    named(path) || std::fs::canonicalize(path).is_ok_and(|p| named(&p))
}

/// Long options of the MySQL/MariaDB clients that choose the server, the account or
/// where credentials come from, or that read or write files.
const MYSQL: &[&str] = &[
    // the server and the account
    "host",
    "port",
    "user",
    "password",
    "socket",
    "protocol",
    "pipe",
    "shared-memory-base-name",
    "bind-address",
    // where credentials and settings come from
    "defaults-file",
    "defaults-extra-file",
    "defaults-group-suffix",
    "no-defaults",
    "print-defaults",
    "login-path",
    "enable-cleartext-plugin",
    "plugin-dir",
    "default-auth",
    "ssl",
    "tls",
    "server-public-key-path",
    "get-server-public-key",
    "character-sets-dir",
    // files read or written on the client
    "local-infile",
    "load-data-local-dir",
    "result-file",
    "tab",
    "tee",
    "pager",
    "log-error",
    "debug",
    "debug-info",
    "debug-check",
    "init-command",
    "binary-mode",
    "dump-history",
];
/// Their short forms: -h -P -u -p -S -W (pipe), -r (result file), -T (tab, or debug
/// info), -# (debug).
const MYSQL_SHORT: &[char] = &['h', 'P', 'u', 'p', 'S', 'W', 'r', 'T', '#'];

/// The same for the PostgreSQL clients (`dbname` is refused only when it is a
/// connection string rather than a name).
const POSTGRES: &[&str] = &[
    "host",
    "port",
    "username",
    "password",
    "no-password",
    "file",
    "use-list",
    "filter",
    "output",
    "log-file",
    "pgdata",
    "target",
];
/// -h -p -U -W -w, -f (file), -L (list or log file), -o (output), -D (data directory).
const POSTGRES_SHORT: &[char] = &['h', 'p', 'U', 'W', 'w', 'f', 'L', 'o', 'D'];

/// The first argument a client of `kind` must not be given, if any.
pub fn refused(kind: TargetKind, args: &[String]) -> Option<&str> {
    let (long, short): (&[&str], &[char]) = match kind {
        TargetKind::Mysql => (MYSQL, MYSQL_SHORT),
        TargetKind::Postgresql => (POSTGRES, POSTGRES_SHORT),
    };
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        if let Some(rest) = arg.strip_prefix("--") {
            let (name, value) = match rest.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (rest, None),
            };
            let full = name.replace('_', "-");
            let mut name = full.as_str();
            for prefix in ["loose-", "maximum-", "enable-", "disable-", "skip-"] {
                name = name.strip_prefix(prefix).unwrap_or(name);
            }
            // Any unambiguous prefix selects the option.
            let hit = |n: &str| {
                !n.is_empty() && long.iter().any(|o| o.starts_with(n) || n.starts_with(o))
            };
            if hit(name) || hit(&full) {
                return Some(arg);
            }
            if kind == TargetKind::Postgresql && !name.is_empty() && "dbname".starts_with(name) {
                let value = value.or_else(|| iter.peek().map(|v| v.as_str()));
                if value.is_some_and(is_conninfo) {
                    return Some(arg);
                }
            }
        } else if let Some(rest) = arg.strip_prefix('-') {
            let Some(flag) = rest.chars().next() else {
                continue;
            };
            if short.contains(&flag) {
                return Some(arg);
            }
            // Both clients' option parsers read `-Ahevil` as `-A -h evil`: a cluster
            // can hide a refused option behind an allowed one, so short options must
            // stand alone (a value goes in the next argument, or use the long form).
            if rest.chars().count() > 1 && !(kind == TargetKind::Postgresql && flag == 'd') {
                return Some(arg);
            }
            if kind == TargetKind::Postgresql && flag == 'd' {
                let value = if rest.len() > 1 {
                    Some(&rest[1..])
                } else {
                    iter.peek().map(|v| v.as_str())
                };
                if value.is_some_and(is_conninfo) {
                    return Some(arg);
                }
            }
        } else if arg.contains('/') || (kind == TargetKind::Postgresql && is_conninfo(arg)) {
            // A positional argument is a database or table name: not a path (pg_restore
            // would read it as its input file), not a connection string.
            return Some(arg);
        }
    }
    None
}

fn is_conninfo(s: &str) -> bool {
    s.contains('=') || s.contains("://")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(kind: TargetKind, args: &[&str]) -> Option<String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        refused(kind, &args).map(str::to_string)
    }

    #[test]
    fn mysql_connection_and_file_options_are_found_in_every_spelling() {
        use TargetKind::Mysql;
        for bad in [
            "--host=evil",
            "--hos=evil",
            "--loose-host=evil",
            "-hevil",
            "-h",
            "-P3307",
            "--user=admin",
            "-proot",
            "--print-defaults",
            "--defaults_file=/tmp/x",
            "--defaults-extra-file=shop-db.cnf",
            "--enable-cleartext-plugin",
            "--ssl-mode=DISABLED",
            "--socket=/run/x.sock",
            "--result-file=/etc/cron.d/x",
            "-r/tmp/x",
            "--tab=/tmp",
            "--skip-binary-mode",
            "--local-infile=1",
            "--local-infile",
            "--loose-local-infile=1",
            "--load-data-local-dir=/",
            "--pager=sh",
            "--tee=/tmp/x",
            "--log-error=/tmp/x",
            "--debug=d:o,/tmp/x",
            "-#d:o,/tmp/x",
            "--character-sets-dir=/tmp",
            "/etc/passwd",
            // Clusters: `-A -h evil`, `-A -r /x`, `-B -u root`.
            "-Ahevil",
            "-Ar/x",
            "-Buroot",
        ] {
            assert_eq!(
                found(Mysql, &["--single-transaction", bad, "shop"]).as_deref(),
                Some(bad),
                "{bad}"
            );
        }
        assert_eq!(
            found(
                Mysql,
                &[
                    "--single-transaction",
                    "--quick",
                    "--routines",
                    "--hex-blob",
                    "-e",
                    "shop"
                ]
            ),
            None
        );
    }

    #[test]
    fn postgresql_connection_strings_and_files_are_found() {
        use TargetKind::Postgresql;
        for bad in [
            &["--host=evil"][..],
            &["-h", "evil"],
            &["--dbname=host=evil dbname=x"],
            &["--dbname", "postgresql://evil/x"],
            &["-dhost=evil"],
            &["-d", "host=evil"],
            &["host=evil dbname=x"],
            &["--username=postgres"],
            &["-U", "postgres"],
            &["--port=1"],
            &["--file=/etc/x"],
            &["-f", "/etc/x"],
            &["-L", "/etc/list"],
            &["--use-list=/etc/list"],
            &["--list", "/etc/shadow"],
            &["--filter=/etc/x"],
            // Clusters: `-c -f /x`, `-c -U postgres`, `-x -h evil`.
            &["-cf/x"],
            &["-cUpostgres"],
            &["-xhevil"],
        ] {
            assert!(found(Postgresql, bad).is_some(), "{bad:?}");
        }
        for good in [
            &["--format=custom", "--compress=0"][..],
            &["--exit-on-error", "--dbname=shop", "--clean", "--if-exists"],
            &["-d", "shop", "--list"],
            &["--no-owner"],
        ] {
            assert_eq!(found(Postgresql, good), None, "{good:?}");
        }
    }

    #[test]
    fn clients_are_known_by_their_names() {
        assert_eq!(
            kind_of(Path::new("/usr/bin/mysqldump")),
            Some(TargetKind::Mysql)
        );
        assert_eq!(
            kind_of(Path::new("/opt/x/mariadb-dump")),
            Some(TargetKind::Mysql)
        );
        assert_eq!(
            kind_of(Path::new("/usr/lib/postgresql/15/bin/pg_restore")),
            Some(TargetKind::Postgresql)
        );
        assert_eq!(kind_of(Path::new("/usr/bin/touch")), None);
    }
}
