//! Arguments that would point a database client somewhere else than its target.
//!
//! With a target, ballast gives a program the target's address and credentials. A
//! plugin must not redirect them: `--host=elsewhere` (or `--hos=`, `--loose-host=`:
//! the clients accept unambiguous prefixes and these spellings) would send the
//! target's credentials to a server of the plugin's choosing, and `--print-defaults`
//! would print the password. Arguments that write files where ballast can
//! (`--result-file`, `--tab`, `--tee`, `-f`) are refused too, and so is undoing the
//! client's binary mode. Such arguments are refused, whatever the policy's globs.

use crate::plugins::policy::TargetKind;

/// Long options of the MySQL/MariaDB clients that choose the server, the account or
/// where credentials come from.
const MYSQL: &[&str] = &[
    "host",
    "port",
    "user",
    "password",
    "socket",
    "protocol",
    "pipe",
    "shared-memory-base-name",
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
    "result-file",
    "tab",
    "tee",
    "binary-mode",
    "init-command",
];
/// Their short forms.
const MYSQL_SHORT: &[char] = &['h', 'P', 'u', 'p', 'S', 'W', 'r', 'T'];

/// The same for the PostgreSQL clients (`dbname` is refused only when it is a
/// connection string rather than a name).
const POSTGRES: &[&str] = &[
    "host",
    "port",
    "username",
    "password",
    "no-password",
    "file",
];
const POSTGRES_SHORT: &[char] = &['h', 'p', 'U', 'W', 'w', 'f'];

/// The first argument that would override the target's connection, if any.
pub fn find(kind: TargetKind, args: &[String]) -> Option<&str> {
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
        } else if kind == TargetKind::Postgresql && is_conninfo(arg) {
            // A positional database name that is really a connection string.
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
        find(kind, &args).map(str::to_string)
    }

    #[test]
    fn mysql_connection_overrides_are_found_in_every_spelling() {
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
            "--enable-cleartext-plugin",
            "--ssl-mode=DISABLED",
            "--socket=/run/x.sock",
            "--result-file=/etc/cron.d/x",
            "-r/tmp/x",
            "--tab=/tmp",
            "--skip-binary-mode",
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
    fn postgresql_connection_strings_are_found() {
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
}
