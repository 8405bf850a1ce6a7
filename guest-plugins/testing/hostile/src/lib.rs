//! A plugin that misbehaves on purpose, for the host's fault tests. The parameter
//! `attack` picks what it does; it never ships in the catalog.
//!
//! | attack | hook | what it does |
//! |---|---|---|
//! | `spin` | pre-backup | loops forever |
//! | `spin-backup` | backup | logs `backup started`, then loops forever, after a successful pre-backup |
//! | `memory` | pre-backup | allocates until something stops it |
//! | `file` | pre-backup | reads `/etc/passwd` (or the parameter `path`) |
//! | `socket` | pre-backup | connects to the parameter `address` over TCP |
//! | `env` | pre-backup | reads its environment |
//! | `program` | pre-backup | runs `sh -c id` |
//! | `url` | pre-backup | requests the parameter `url` |
//! | `sql` | pre-backup | opens a session on the target |
//! | `host-header` | pre-backup | requests the parameter `url` with `Host: billing.internal` |
//! | `big-query` | pre-backup | asks the target for 200,000 rows |
//! | `redirect` | pre-backup | runs `mysqldump --host=127.0.0.2` with the target's credentials |
//! | `trap-mid-dump` | pre-backup, backup | read-locks the target's tables (MySQL), then writes half a dump and panics |
//! | `exec` | pre-backup | runs the parameter `program` with `args` (split at spaces), with the target if `with-target=yes`, and fails with its exit code and output |
//! | `scratch` | pre-backup | writes to `/scratch` until something stops it, and says how much it wrote |
//! | `buffers` | pre-backup | keeps query results open until something stops it |
//! | `trap-after-effect` | pre-backup | logs `quiesced`, then panics: an effect was made and not undone |
//! | `sleep` | pre-backup | sleeps `seconds` (default 30) after logging `sleeping` |
//! | `fail-cleanly` | pre-backup | returns an error (a clean failure) |
//! | `post-fails-once` | post-backup | fails unless it runs in recovery (`ballast.recovery=1`) |
//!
//! Whatever the attack, `post-backup` logs `post-backup ran` so tests can see it ran;
//! after `trap-mid-dump` it also writes to the target, which a leftover lock would block.

use std::cell::RefCell;

use ballast_plugin_sdk::sql::{self, Session};
use ballast_plugin_sdk::{self as sdk, exec, http, Error, Info, Plugin, Sink};

struct Hostile;

thread_local! {
    static LOCK: RefCell<Option<Session>> = const { RefCell::new(None) };
}

fn attack() -> String {
    sdk::param("attack").unwrap_or_default()
}

impl Plugin for Hostile {
    fn info() -> Info {
        sdk::info(
            "hostile",
            env!("CARGO_PKG_VERSION"),
            "misbehaves on purpose (tests)",
            &[],
        )
    }

    fn pre_backup(target: &str) -> Result<(), Error> {
        match attack().as_str() {
            "spin" => spin(),
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    sdk::job::progress(hoard.len() as u64, None);
                }
            }
            "file" => {
                let path = sdk::param("path").unwrap_or_else(|| "/etc/passwd".into());
                match std::fs::read_to_string(&path) {
                    Ok(text) => Err(sdk::failed(format!("LEAKED {path}: {text}"))),
                    Err(e) => Err(sdk::failed(format!("reading {path}: {e}"))),
                }
            }
            "socket" => {
                let address = sdk::param("address").unwrap_or_else(|| "127.0.0.1:3306".into());
                match std::net::TcpStream::connect(&address) {
                    Ok(_) => Err(sdk::failed(format!("LEAKED a connection to {address}"))),
                    Err(e) => Err(sdk::failed(format!("connecting to {address}: {e}"))),
                }
            }
            "env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                Err(sdk::failed(format!(
                    "environment: {} variables {vars:?}",
                    vars.len()
                )))
            }
            "program" => exec::spawn("sh", &["-c".into(), "id".into()], None).map(|_| ()),
            "url" => {
                let url = sdk::param("url").unwrap_or_else(|| "http://127.0.0.1:9/".into());
                http::request("GET", &url, &[], &[]).map(|_| ())
            }
            "sql" => sql::open(target).map(|_| ()),
            "host-header" => {
                let url = sdk::param("url").unwrap_or_else(|| "http://127.0.0.1:9/".into());
                let headers = [("Host".to_string(), "billing.internal".to_string())];
                http::request("GET", &url, &headers, &[]).map(|_| ())
            }
            "big-query" => {
                let session = sql::open(target)?;
                sdk::query(&session, "SELECT seq FROM seq_1_to_200000", &[]).map(|_| ())
            }
            "redirect" => {
                let args = ["--host=127.0.0.2".to_string(), "shop".to_string()];
                exec::spawn("mysqldump", &args, Some(target)).map(|_| ())
            }
            "trap-mid-dump" => {
                let session = sql::open(target)?;
                session.execute("FLUSH TABLES WITH READ LOCK", &[])?;
                sdk::log("tables read-locked");
                LOCK.with(|l| *l.borrow_mut() = Some(session));
                Ok(())
            }
            "exec" => run_program(target),
            "fail-cleanly" => Err(sdk::failed("pre-backup gives up cleanly")),
            "scratch" => fill_scratch(),
            "buffers" => {
                let session = sql::open(target)?;
                let mut kept = Vec::new();
                loop {
                    // 100,000 rows of about 1 KiB: some 100 MiB per result, kept open.
                    match session.query("SELECT seq, REPEAT('x', 1000) FROM seq_1_to_100000", &[]) {
                        Ok(rows) => kept.push(rows),
                        Err(e) => {
                            return Err(sdk::failed(format!(
                                "after {} results held: {}",
                                kept.len(),
                                message(&e)
                            )))
                        }
                    }
                }
            }
            "trap-after-effect" => {
                sdk::log("quiesced");
                panic!("the plugin crashed after quiescing");
            }
            "sleep" => {
                sdk::log("sleeping");
                let s: u64 = sdk::param("seconds")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(30);
                std::thread::sleep(std::time::Duration::from_secs(s));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn backup(_target: &str, out: &Sink) -> Result<(), Error> {
        match attack().as_str() {
            "spin-backup" => {
                sdk::log("backup started");
                spin()
            }
            "trap-mid-dump" => {
                out.write(b"-- half a dump\nINSERT INTO t VALUES (1);\n")?;
                panic!("the plugin crashed in the middle of its dump");
            }
            _ => out.write(b"hostile\n"),
        }
    }

    fn post_backup(target: &str) -> Result<(), Error> {
        let recovery = sdk::param("ballast.recovery").unwrap_or_else(|| "0".into());
        sdk::log(format!("post-backup ran (recovery: {recovery})"));
        if attack() == "post-fails-once" && recovery == "0" {
            return Err(sdk::failed("post-backup fails the first time"));
        }
        if attack() == "trap-mid-dump" {
            // The crashed instance's session must be gone, and its lock with it: a
            // write has to go through well within the lock wait.
            let session = sql::open(target)?;
            session.execute("SET SESSION lock_wait_timeout = 5", &[])?;
            session.execute("CREATE TABLE IF NOT EXISTS hostile_probe (n INT)", &[])?;
            session.execute("INSERT INTO hostile_probe VALUES (1)", &[])?;
            sdk::log("the database takes writes");
        }
        Ok(())
    }
}

fn message(e: &Error) -> String {
    match e {
        Error::Denied(m) => format!("denied: {m}"),
        Error::Failed(m) => format!("failed: {m}"),
        Error::Invalid(m) => format!("invalid: {m}"),
    }
}

/// Runs a program and reports what it did, however it ended.
fn run_program(target: &str) -> Result<(), Error> {
    let program = sdk::param("program").unwrap_or_else(|| "sh".into());
    let args: Vec<String> = sdk::param("args")
        .map(|a| {
            a.split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let target = sdk::flag("with-target").then_some(target);
    let process = exec::spawn(&program, &args, target)?;
    process.close();
    let mut out = Vec::new();
    let read = std::io::Read::read_to_end(&mut sdk::process_reader(&process), &mut out);
    let exit = process.wait()?;
    Err(sdk::failed(format!(
        "RAN {program}: exit {:?} read {:?} stdout [{}] stderr [{}]",
        exit.code,
        read.map_err(|e| e.to_string()),
        String::from_utf8_lossy(&out).trim(),
        exit.stderr_tail.trim()
    )))
}

/// Writes 1 MiB blocks to /scratch until a write fails.
fn fill_scratch() -> Result<(), Error> {
    use std::io::Write;
    let block = vec![7u8; 1 << 20];
    let mut written: u64 = 0;
    let mut n = 0;
    loop {
        let path = format!("/scratch/fill-{n}");
        let mut f = match std::fs::File::create(&path) {
            Ok(f) => f,
            Err(e) => {
                return Err(sdk::failed(format!(
                    "SCRATCH {written} bytes, then {path}: {e}"
                )))
            }
        };
        for _ in 0..64 {
            if let Err(e) = f.write_all(&block) {
                return Err(sdk::failed(format!("SCRATCH {written} bytes, then: {e}")));
            }
            written += block.len() as u64;
            if written >= 4 << 30 {
                return Err(sdk::failed(format!(
                    "SCRATCH {written} bytes, never stopped"
                )));
            }
        }
        n += 1;
    }
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

sdk::plugin!(Hostile);
