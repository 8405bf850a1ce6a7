//! PostgreSQL: `pg_dump` custom format (uncompressed: the repository compresses and
//! deduplicates), `pg_restore`, `pg_restore --list` as the
//! check, and `pg_backup_start`/`pg_backup_stop` around volume snapshots.
//!
//! Parameters: `clean` (restore drops objects first), `no-owner` (restore skips
//! ownership), `jobs` is not offered: a dump read from a stream restores serially.

use std::cell::RefCell;

use ballast_plugin_sdk::sql::{self, Session, Value};
use ballast_plugin_sdk::{self as sdk, exec, Capability, Error, Info, Plugin, Sink, Source};

struct Postgresql;

thread_local! {
    /// The session in which the backup was started; PostgreSQL aborts the backup if
    /// it ends early (a trap, a timeout), so nothing is left behind.
    static BACKUP: RefCell<Option<Session>> = const { RefCell::new(None) };
}

impl Plugin for Postgresql {
    fn info() -> Info {
        sdk::info(
            "postgresql",
            env!("CARGO_PKG_VERSION"),
            "PostgreSQL: pg_dump -Fc, pg_restore, verify with pg_restore --list, pg_backup_start/stop for volume snapshots",
            &[Capability::Sql, Capability::Exec],
        )
    }

    fn pre_backup(target: &str) -> Result<(), Error> {
        if sdk::operation() == "backup-app" {
            sdk::log("pg_dump takes its own snapshot: nothing to quiesce");
            return Ok(());
        }
        let session = sql::open(target)?;
        session.execute("CHECKPOINT", &[])?;
        let start = if server_version(&session)? >= 150000 {
            "SELECT pg_backup_start('ballast', true)::text"
        } else {
            "SELECT pg_start_backup('ballast', true, false)::text"
        };
        let lsn = text(&sdk::query(&session, start, &[])?);
        sdk::log(format!(
            "{target}: checkpoint done, backup started at {lsn}"
        ));
        BACKUP.with(|b| *b.borrow_mut() = Some(session));
        Ok(())
    }

    fn backup(target: &str, out: &Sink) -> Result<(), Error> {
        // Uncompressed: ballast compresses (zstd, faster than pg_dump's zlib) and
        // deduplicates, which a compressed archive would defeat from one day to the next.
        let args = ["--format=custom".to_string(), "--compress=0".to_string()];
        let process = exec::spawn("pg_dump", &args, Some(target))?;
        process.close();
        let bytes = sdk::copy_out(&process, out)?;
        sdk::finish("pg_dump", process)?;
        sdk::log(format!("pg_dump wrote {bytes} bytes"));
        Ok(())
    }

    fn post_backup(target: &str) -> Result<(), Error> {
        let Some(session) = BACKUP.with(|b| b.borrow_mut().take()) else {
            return Ok(());
        };
        let stop = if server_version(&session)? >= 150000 {
            "SELECT labelfile, coalesce(spcmapfile, '') FROM pg_backup_stop(true)"
        } else {
            "SELECT labelfile, coalesce(spcmapfile, '') FROM pg_stop_backup(false, true)"
        };
        let rows = sdk::query(&session, stop, &[])?;
        if let Some([Value::Text(label), Value::Text(map)]) = rows.first().map(|r| r.as_slice()) {
            // A volume snapshot restores only with these files beside the data.
            sdk::job::note("backup_label", label);
            if !map.is_empty() {
                sdk::job::note("tablespace_map", map);
            }
        }
        sdk::log(format!("{target}: backup stopped"));
        Ok(())
    }

    fn restore(target: &str, input: &Source) -> Result<(), Error> {
        let session = sql::open(target)?;
        let database = text(&sdk::query(
            &session,
            "SELECT current_database()::text",
            &[],
        )?);
        drop(session);
        let mut args = vec![
            "--exit-on-error".to_string(),
            format!("--dbname={database}"),
        ];
        if sdk::flag("clean") {
            args.extend(["--clean".into(), "--if-exists".into()]);
        }
        if sdk::flag("no-owner") {
            args.push("--no-owner".into());
        }
        sdk::log(format!("restoring into database {database}"));
        let process = exec::spawn("pg_restore", &args, Some(target))?;
        sdk::copy_in(input, &process)?;
        sdk::finish("pg_restore", process)
    }

    fn verify(input: &Source) -> Result<(), Error> {
        // pg_restore is a PostgreSQL client: ballast runs it only with a target. It
        // does not connect with --list; the host names the target the dump came from
        // (or `verify app --target`).
        let target = sdk::param("ballast.target")
            .ok_or_else(|| sdk::invalid("no target to run pg_restore --list with"))?;
        let process = exec::spawn("pg_restore", &["--list".to_string()], Some(&target))?;
        // pg_restore --list stops reading after the table of contents; its exit
        // status, not the rest of the stream, says whether the archive is sound.
        let fed = sdk::copy_in(input, &process);
        process.close();
        let mut listing = Vec::new();
        std::io::Read::read_to_end(&mut sdk::process_reader(&process), &mut listing)
            .map_err(|e| sdk::failed(format!("reading pg_restore --list: {e}")))?;
        sdk::finish("pg_restore --list", process)?;
        match fed {
            Err(Error::Failed(m)) if m.ends_with("stopped reading its input") => {
                sdk::log("pg_restore read the archive's table of contents")
            }
            other => {
                other?;
            }
        }
        let entries = String::from_utf8_lossy(&listing)
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .count();
        sdk::log(format!(
            "archive readable: {entries} entries in its table of contents"
        ));
        Ok(())
    }
}

fn server_version(session: &Session) -> Result<i64, Error> {
    let v = text(&sdk::query(
        session,
        "SELECT current_setting('server_version_num')",
        &[],
    )?);
    v.parse()
        .map_err(|_| sdk::failed(format!("unexpected server_version_num {v:?}")))
}

/// The first column of the first row, as text.
fn text(rows: &[Vec<Value>]) -> String {
    match rows.first().and_then(|r| r.first()) {
        Some(Value::Text(t)) => t.clone(),
        Some(Value::Int(i)) => i.to_string(),
        _ => String::new(),
    }
}

sdk::plugin!(Postgresql);
