//! Database sessions: the host connects to a target of the policy with its secrets,
//! the plugin gets a handle. A session closes when the plugin drops it or its store
//! ends, which releases whatever it holds (`FLUSH TABLES WITH READ LOCK`, a
//! `pg_backup_start`).

mod mysql;
mod postgres;
mod tls;

use std::collections::VecDeque;

use wasmtime::component::Resource;

use super::HostError;
use crate::plugins::budget::Held;
use crate::plugins::policy::{Target, TargetKind};
use crate::plugins::state::JobState;
use crate::plugins::v0_1::ballast::plugin::sql::{self, Value};

/// Sessions one store may hold at once.
const MAX_SESSIONS: usize = 8;
/// What a query may return: hooks ask small questions (use LIMIT for more). The
/// drivers stop reading at these (or at what is left of the job's buffer budget,
/// if less), so a huge result never sits in memory.
const MAX_ROWS: usize = 100_000;
const MAX_BYTES: usize = 64 << 20;

fn too_many(cap: usize) -> HostError {
    HostError::Failed(format!(
        "the query returned more than {MAX_ROWS} rows or {cap} bytes (what the job's buffers \
         have room for; limits.buffers in the policy); page through it with LIMIT"
    ))
}

/// The size a value takes in memory, roughly.
fn size_of(v: &Value) -> usize {
    match v {
        Value::Text(t) => t.len() + 8,
        Value::Bytes(b) => b.len() + 8,
        _ => 16,
    }
}
/// The most rows one `rows.next` returns.
const MAX_BATCH: usize = 1000;

pub enum Session {
    Mysql(mysql_async::Conn),
    Postgres(tokio_postgres::Client),
}

/// A query's result, read in batches; it holds its size from the job's buffer budget
/// until the plugin has taken its rows.
pub struct Rows {
    columns: Vec<String>,
    rows: VecDeque<Vec<Value>>,
    held: Held,
}

impl Session {
    async fn connect(target: &Target) -> Result<Session, HostError> {
        let password = match &target.password {
            Some(s) => Some(s.read().map_err(|e| {
                HostError::Failed(format!("the password of target {}: {e}", target.name))
            })?),
            None => None,
        };
        let fail = |e: String| {
            HostError::Failed(format!(
                "connecting to target {} ({}): {e}",
                target.name, target.address
            ))
        };
        match target.kind {
            TargetKind::Mysql => mysql::connect(target, password).await.map(Session::Mysql),
            TargetKind::Postgresql => postgres::connect(target, password)
                .await
                .map(Session::Postgres),
        }
        .map_err(fail)
    }
}

/// What to check when a connection fails at TLS, or fails because TLS was not used.
fn tls_hint(target: &Target, error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    let tls_words = [
        "tls",
        "ssl",
        "certificate",
        "handshake",
        "unknownissuer",
        "x509",
    ];
    match (&target.tls, tls_words.iter().any(|w| e.contains(w))) {
        (Some(_), true) => " (check the target's tls settings in the policy: tls.ca must hold the CA that signed the server's certificate, and verify-full needs the certificate to name the address)",
        (None, true) => " (the server may require TLS: set tls: { mode: verify-full, ca: ... } on the target)",
        _ => "",
    }
}

/// `host:port`, the port defaulting to `default`.
pub fn split_address(address: &str, default: u16) -> Result<(String, u16), String> {
    match address.rsplit_once(':') {
        Some((h, p)) => p
            .parse()
            .map(|p| (h.trim_matches(['[', ']']).to_string(), p))
            .map_err(|_| format!("the address {address} has no valid port")),
        None => Ok((address.to_string(), default)),
    }
}

impl sql::Host for JobState {
    async fn open(&mut self, target: String) -> Result<Resource<Session>, HostError> {
        let target = self
            .ctx
            .grants
            .target(&target)
            .map_err(HostError::Denied)?
            .clone();
        if self.sessions >= MAX_SESSIONS {
            return Err(HostError::Denied(format!(
                "sql: at most {MAX_SESSIONS} sessions may be open at once"
            )));
        }
        let session = Session::connect(&target).await?;
        let handle = self.table.push(session)?;
        self.sessions += 1;
        Ok(handle)
    }
}

impl sql::HostSession for JobState {
    async fn execute(
        &mut self,
        session: Resource<Session>,
        statement: String,
        params: Vec<Value>,
    ) -> Result<u64, HostError> {
        match self.table.get_mut(&session)? {
            Session::Mysql(c) => mysql::execute(c, &statement, params).await,
            Session::Postgres(c) => postgres::execute(c, &statement, params).await,
        }
        .map_err(HostError::Failed)
    }

    async fn query(
        &mut self,
        session: Resource<Session>,
        statement: String,
        params: Vec<Value>,
    ) -> Result<Resource<Rows>, HostError> {
        let cap = MAX_BYTES.min(self.ctx.budget.available() as usize);
        let (columns, rows) = match self.table.get_mut(&session)? {
            Session::Mysql(c) => mysql::query(c, &statement, params, cap).await,
            Session::Postgres(c) => postgres::query(c, &statement, params, cap).await,
        }?;
        let bytes: usize = rows.iter().flatten().map(size_of).sum();
        let held = self
            .ctx
            .budget
            .try_hold(bytes as u64)
            .map_err(HostError::Failed)?;
        Ok(self.table.push(Rows {
            columns,
            rows: rows.into(),
            held,
        })?)
    }

    async fn drop(&mut self, session: Resource<Session>) -> wasmtime::Result<()> {
        let s = self.table.delete(session)?;
        self.sessions -= 1;
        s.close().await;
        Ok(())
    }
}

impl Session {
    /// Closes the connection politely (the server releases its locks either way).
    async fn close(self) {
        if let Session::Mysql(c) = self {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), c.disconnect()).await;
        }
    }
}

impl sql::HostRows for JobState {
    async fn columns(&mut self, rows: Resource<Rows>) -> wasmtime::Result<Vec<String>> {
        Ok(self.table.get(&rows)?.columns.clone())
    }

    async fn next(&mut self, rows: Resource<Rows>, max: u32) -> Result<Vec<Vec<Value>>, HostError> {
        let r = self.table.get_mut(&rows)?;
        let n = (max as usize).clamp(1, MAX_BATCH).min(r.rows.len());
        let batch: Vec<Vec<Value>> = r.rows.drain(..n).collect();
        r.held
            .release(batch.iter().flatten().map(size_of).sum::<usize>() as u64);
        Ok(batch)
    }

    async fn drop(&mut self, rows: Resource<Rows>) -> wasmtime::Result<()> {
        self.table.delete(rows)?;
        Ok(())
    }
}
