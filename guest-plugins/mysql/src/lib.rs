//! MySQL and MariaDB: a consistent logical dump with `mysqldump`, restore with
//! `mysql`, a check of the dump's framing, and a global read lock around volume
//! snapshots.
//!
//! Parameters: `database` (default: the target's database).

use std::cell::RefCell;
use std::io::BufRead;

use ballast_plugin_sdk::sql::{self, Session, Value};
use ballast_plugin_sdk::{self as sdk, exec, Capability, Error, Info, Plugin, Sink, Source};

struct Mysql;

thread_local! {
    /// The session holding `FLUSH TABLES WITH READ LOCK` from pre-backup to
    /// post-backup. Should the instance die in between, the host closes the session
    /// and MySQL releases the lock.
    static LOCK: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// What `mysqldump` is asked for: one consistent InnoDB snapshot without locking
/// tables, with stored code, and binary data in hex so the dump stays text.
const DUMP_ARGS: &[&str] = &[
    "--single-transaction",
    "--quick",
    "--routines",
    "--triggers",
    "--events",
    "--hex-blob",
    "--default-character-set=utf8mb4",
];

impl Plugin for Mysql {
    fn info() -> Info {
        sdk::info(
            "mysql",
            env!("CARGO_PKG_VERSION"),
            "MySQL/MariaDB: mysqldump --single-transaction, restore, verify, read lock for volume snapshots",
            &[Capability::Sql, Capability::Exec],
        )
    }

    fn pre_backup(target: &str) -> Result<(), Error> {
        if sdk::operation() == "backup-app" {
            sdk::log("the dump is consistent on its own (--single-transaction): no lock taken");
            return Ok(());
        }
        let session = sql::open(target)?;
        session.execute("FLUSH TABLES WITH READ LOCK", &[])?;
        sdk::log(format!("{target}: tables flushed and read-locked"));
        LOCK.with(|l| *l.borrow_mut() = Some(session));
        Ok(())
    }

    fn backup(target: &str, out: &Sink) -> Result<(), Error> {
        let database = database(target)?;
        let mut args: Vec<String> = DUMP_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(database.clone());
        sdk::log(format!("dumping database {database}"));
        let process = exec::spawn("mysqldump", &args, Some(target))?;
        process.close();
        let bytes = sdk::copy_out(&process, out)?;
        sdk::finish("mysqldump", process)?;
        sdk::log(format!("dump of {database}: {bytes} bytes"));
        Ok(())
    }

    fn post_backup(target: &str) -> Result<(), Error> {
        if let Some(session) = LOCK.with(|l| l.borrow_mut().take()) {
            session.execute("UNLOCK TABLES", &[])?;
            sdk::log(format!("{target}: tables unlocked"));
        }
        Ok(())
    }

    fn restore(target: &str, input: &Source) -> Result<(), Error> {
        let database = database(target)?;
        sdk::log(format!("loading the dump into database {database}"));
        let process = exec::spawn("mysql", &[database], Some(target))?;
        sdk::copy_in(input, &process)?;
        sdk::finish("mysql", process)
    }

    fn verify(input: &Source) -> Result<(), Error> {
        let summary = check_dump(std::io::BufReader::new(sdk::source_reader(input)))?;
        sdk::log(format!(
            "dump is complete: {} tables, {} INSERT statements",
            summary.tables, summary.inserts
        ));
        Ok(())
    }
}

/// The database to work on: the `database` parameter, else the target's own.
fn database(target: &str) -> Result<String, Error> {
    if let Some(db) = sdk::param("database") {
        return Ok(db);
    }
    let session = sql::open(target)?;
    match sdk::query(&session, "SELECT DATABASE()", &[])?
        .first()
        .and_then(|r| r.first())
    {
        Some(Value::Text(db)) => Ok(db.clone()),
        _ => Err(sdk::invalid(format!(
            "target {target} names no database: set one in the policy or pass --param database=NAME"
        ))),
    }
}

struct Summary {
    tables: u64,
    inserts: u64,
}

/// A dump is whole when it begins with mysqldump's header and ends with its
/// "Dump completed" line (written only after the last table).
fn check_dump(reader: impl BufRead) -> Result<Summary, Error> {
    let mut summary = Summary {
        tables: 0,
        inserts: 0,
    };
    let mut header = false;
    let mut lines = 0u64;
    let mut last_comment = String::new();
    for line in reader.split(b'\n') {
        let line = line.map_err(|e| sdk::failed(format!("reading the dump: {e}")))?;
        lines += 1;
        // Recent MariaDB puts a sandbox-mode comment before the header.
        header |= line.starts_with(b"-- MySQL dump") || line.starts_with(b"-- MariaDB dump");
        if lines == 3 && !header {
            return Err(sdk::failed(
                "not a mysqldump file: the header line is missing",
            ));
        }
        if line.starts_with(b"CREATE TABLE") {
            summary.tables += 1;
        } else if line.starts_with(b"INSERT INTO") {
            summary.inserts += 1;
        }
        if line.starts_with(b"-- ") {
            last_comment = String::from_utf8_lossy(&line).into_owned();
        }
    }
    if !header {
        return Err(sdk::failed(
            "not a mysqldump file: the header line is missing",
        ));
    }
    if !last_comment.starts_with("-- Dump completed") {
        return Err(sdk::failed(
            "the dump is cut short: mysqldump's \"Dump completed\" line is missing",
        ));
    }
    Ok(summary)
}

sdk::plugin!(Mysql);
