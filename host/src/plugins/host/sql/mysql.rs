//! MySQL and MariaDB sessions (mysql_async). Statements without parameters use the
//! text protocol (some, like `FLUSH TABLES WITH READ LOCK`, cannot be prepared);
//! with parameters they are prepared.

use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use mysql_async::{Column, OptsBuilder, Params, Row, SslOpts};

use super::{size_of, split_address, too_many, HostError, MAX_ROWS};
use crate::plugins::policy::{Target, TlsMode};
use crate::plugins::v0_1::ballast::plugin::sql::Value;

pub async fn connect(
    target: &Target,
    password: Option<String>,
) -> Result<mysql_async::Conn, String> {
    let (host, port) = split_address(&target.address, 3306)?;
    let mut opts = OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(target.user.clone())
        .pass(password)
        .db_name(target.database.clone())
        .prefer_socket(false);
    if let Some(tls) = super::tls::of(target) {
        let mut ssl = SslOpts::default();
        match tls.mode {
            TlsMode::Require | TlsMode::Disable => {
                ssl = ssl
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true)
            }
            TlsMode::VerifyCa => ssl = ssl.with_danger_skip_domain_validation(true),
            TlsMode::VerifyFull => {}
        }
        if let Some(ca) = &tls.ca {
            ssl = ssl
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true);
        }
        opts = opts.ssl_opts(ssl);
    }
    mysql_async::Conn::new(opts)
        .await
        .map_err(|e| format!("{e}{}", super::tls_hint(target, &e.to_string())))
}

fn params(values: Vec<Value>) -> Params {
    if values.is_empty() {
        return Params::Empty;
    }
    Params::Positional(
        values
            .into_iter()
            .map(|v| match v {
                Value::Null => mysql_async::Value::NULL,
                Value::Int(i) => mysql_async::Value::Int(i),
                Value::Float(f) => mysql_async::Value::Double(f),
                Value::Text(t) => mysql_async::Value::Bytes(t.into_bytes()),
                Value::Bytes(b) => mysql_async::Value::Bytes(b),
            })
            .collect(),
    )
}

pub async fn execute(
    conn: &mut mysql_async::Conn,
    statement: &str,
    values: Vec<Value>,
) -> Result<u64, String> {
    let e = |e: mysql_async::Error| e.to_string();
    if values.is_empty() {
        let r = conn.query_iter(statement).await.map_err(e)?;
        let n = r.affected_rows();
        r.drop_result().await.map_err(e)?;
        Ok(n)
    } else {
        let r = conn.exec_iter(statement, params(values)).await.map_err(e)?;
        let n = r.affected_rows();
        r.drop_result().await.map_err(e)?;
        Ok(n)
    }
}

pub async fn query(
    conn: &mut mysql_async::Conn,
    statement: &str,
    values: Vec<Value>,
    cap: usize,
) -> Result<(Vec<String>, Vec<Vec<Value>>), HostError> {
    let e = |e: mysql_async::Error| HostError::Failed(e.to_string());
    if values.is_empty() {
        let mut result = conn.query_iter(statement).await.map_err(e)?;
        collect(&mut result, cap).await
    } else {
        let mut result = conn.exec_iter(statement, params(values)).await.map_err(e)?;
        collect(&mut result, cap).await
    }
}

/// Reads a result's rows up to the caps; past them the rest is drained unread.
async fn collect<P: mysql_async::prelude::Protocol>(
    result: &mut mysql_async::QueryResult<'_, 'static, P>,
    cap: usize,
) -> Result<(Vec<String>, Vec<Vec<Value>>), HostError> {
    let e = |e: mysql_async::Error| HostError::Failed(e.to_string());
    let columns = result
        .columns_ref()
        .iter()
        .map(|c| c.name_str().into_owned())
        .collect();
    let (mut rows, mut bytes) = (vec![], 0usize);
    while let Some(row) = result.next().await.map_err(e)? {
        let row: Row = row;
        let cols = row.columns();
        let values: Vec<Value> = row
            .unwrap()
            .into_iter()
            .zip(cols.iter())
            .map(|(v, c)| value(v, c))
            .collect();
        bytes += values.iter().map(size_of).sum::<usize>();
        rows.push(values);
        if rows.len() > MAX_ROWS || bytes > cap {
            while result.next().await.map_err(e)?.is_some() {}
            return Err(too_many(cap));
        }
    }
    Ok((columns, rows))
}

/// A MySQL value as a WIT value: integers and floats by column type, binary
/// strings as bytes, everything else (decimals, dates, text) as text.
fn value(v: mysql_async::Value, column: &Column) -> Value {
    use mysql_async::Value as M;
    let binary = column.character_set() == 63;
    match v {
        M::NULL => Value::Null,
        M::Int(i) => Value::Int(i),
        M::UInt(u) => i64::try_from(u)
            .map(Value::Int)
            .unwrap_or(Value::Text(u.to_string())),
        M::Float(f) => Value::Float(f as f64),
        M::Double(f) => Value::Float(f),
        M::Bytes(b) => match column.column_type() {
            ColumnType::MYSQL_TYPE_TINY
            | ColumnType::MYSQL_TYPE_SHORT
            | ColumnType::MYSQL_TYPE_INT24
            | ColumnType::MYSQL_TYPE_LONG
            | ColumnType::MYSQL_TYPE_LONGLONG
            | ColumnType::MYSQL_TYPE_YEAR => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Value::Int)
                .unwrap_or_else(|| Value::Text(String::from_utf8_lossy(&b).into_owned())),
            ColumnType::MYSQL_TYPE_FLOAT | ColumnType::MYSQL_TYPE_DOUBLE => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Value::Float)
                .unwrap_or_else(|| Value::Text(String::from_utf8_lossy(&b).into_owned())),
            ColumnType::MYSQL_TYPE_BLOB
            | ColumnType::MYSQL_TYPE_TINY_BLOB
            | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
            | ColumnType::MYSQL_TYPE_LONG_BLOB
            | ColumnType::MYSQL_TYPE_STRING
            | ColumnType::MYSQL_TYPE_VAR_STRING
            | ColumnType::MYSQL_TYPE_VARCHAR
            | ColumnType::MYSQL_TYPE_BIT
            | ColumnType::MYSQL_TYPE_GEOMETRY
                if binary =>
            {
                Value::Bytes(b)
            }
            _ => match String::from_utf8(b) {
                Ok(s) => Value::Text(s),
                Err(e) => Value::Bytes(e.into_bytes()),
            },
        },
        other => Value::Text(other.as_sql(true).trim_matches('\'').to_string()),
    }
}
