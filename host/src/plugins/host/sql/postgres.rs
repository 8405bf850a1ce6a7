//! PostgreSQL sessions (tokio-postgres). Parameters are converted to the types the
//! server expects; results come back by column type, and types without a plain
//! equivalent must be cast to text in the query.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use futures::TryStreamExt;

use super::{size_of, split_address, too_many, HostError, MAX_ROWS};
use crate::plugins::policy::Target;
use crate::plugins::v0_1::ballast::plugin::sql::Value;

pub async fn connect(
    target: &Target,
    password: Option<String>,
) -> Result<tokio_postgres::Client, String> {
    let (host, port) = split_address(&target.address, 5432)?;
    let mut config = tokio_postgres::Config::new();
    config
        .host(&host)
        .port(port)
        .application_name("ballast plugin")
        .connect_timeout(std::time::Duration::from_secs(10));
    if let Some(u) = &target.user {
        config.user(u);
    }
    if let Some(p) = &password {
        config.password(p);
    }
    if let Some(d) = &target.database {
        config.dbname(d);
    }
    let hint = |e: tokio_postgres::Error| {
        let e = describe(e);
        format!("{e}{}", super::tls_hint(target, &e))
    };
    // The connection lives until the client is dropped; then the server ends the
    // session and with it anything the session held.
    match super::tls::of(target) {
        None => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(hint)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(client)
        }
        Some(tls) => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let tls =
                tokio_postgres_rustls::MakeRustlsConnect::new(super::tls::client_config(tls)?);
            let (client, connection) = config.connect(tls).await.map_err(hint)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(client)
        }
    }
}

fn describe(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// The parameters in the types the statement wants.
fn params(
    types: &[Type],
    values: Vec<Value>,
) -> Result<Vec<Box<dyn ToSql + Sync + Send>>, HostError> {
    if types.len() != values.len() {
        return Err(HostError::Invalid(format!(
            "the statement takes {} parameters, {} given",
            types.len(),
            values.len()
        )));
    }
    let mut out: Vec<Box<dyn ToSql + Sync + Send>> = vec![];
    for (i, (t, v)) in types.iter().zip(values).enumerate() {
        let bad = || {
            HostError::Invalid(format!(
                "parameter ${} is {t}; the value does not fit",
                i + 1
            ))
        };
        out.push(match (v, t) {
            (Value::Null, _) => Box::new(Option::<String>::None),
            (Value::Int(n), &Type::INT2) => Box::new(i16::try_from(n).map_err(|_| bad())?),
            (Value::Int(n), &Type::INT4) => Box::new(i32::try_from(n).map_err(|_| bad())?),
            (Value::Int(n), &Type::INT8) => Box::new(n),
            (Value::Int(n), &Type::BOOL) => Box::new(n != 0),
            (Value::Float(f), &Type::FLOAT4) => Box::new(f as f32),
            (Value::Float(f), &Type::FLOAT8) => Box::new(f),
            (Value::Text(s), _) => Box::new(s),
            (Value::Bytes(b), &Type::BYTEA) => Box::new(b),
            _ => return Err(bad()),
        });
    }
    Ok(out)
}

pub async fn execute(
    client: &mut tokio_postgres::Client,
    statement: &str,
    values: Vec<Value>,
) -> Result<u64, String> {
    if values.is_empty() {
        // Simple protocol: allows any statement (CHECKPOINT, several at once). Rows
        // a statement returns are passed over, not kept.
        let stream = client.simple_query_raw(statement).await.map_err(describe)?;
        futures::pin_mut!(stream);
        let mut affected = 0;
        while let Some(m) = stream.try_next().await.map_err(describe)? {
            if let tokio_postgres::SimpleQueryMessage::CommandComplete(n) = m {
                affected += n;
            }
        }
        return Ok(affected);
    }
    let stmt = client.prepare(statement).await.map_err(describe)?;
    let p = params(stmt.params(), values).map_err(|e| format!("{e:?}"))?;
    let refs: Vec<&(dyn ToSql + Sync)> = p
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect();
    client.execute(&stmt, &refs).await.map_err(describe)
}

pub async fn query(
    client: &mut tokio_postgres::Client,
    statement: &str,
    values: Vec<Value>,
    cap: usize,
) -> Result<(Vec<String>, Vec<Vec<Value>>), HostError> {
    let fail = |e| HostError::Failed(describe(e));
    let stmt = client.prepare(statement).await.map_err(fail)?;
    let p = params(stmt.params(), values)?;
    let refs: Vec<&(dyn ToSql + Sync)> = p
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let stream = client.query_raw(&stmt, refs).await.map_err(fail)?;
    futures::pin_mut!(stream);
    let columns = stmt
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let (mut rows, mut bytes) = (vec![], 0usize);
    while let Some(r) = stream.try_next().await.map_err(fail)? {
        let values = row(&r)?;
        bytes += values.iter().map(size_of).sum::<usize>();
        rows.push(values);
        if rows.len() > MAX_ROWS || bytes > cap {
            // Dropping the stream leaves the rest unread; the session stays usable.
            return Err(too_many(cap));
        }
    }
    Ok((columns, rows))
}

fn row(row: &Row) -> Result<Vec<Value>, HostError> {
    let mut out = vec![];
    for (i, c) in row.columns().iter().enumerate() {
        let e = |e: tokio_postgres::Error| HostError::Failed(e.to_string());
        let v = match *c.type_() {
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)
                .map_err(e)?
                .map(|b| Value::Int(b as i64)),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map_err(e)?
                .map(|n| Value::Int(n.into())),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map_err(e)?
                .map(|n| Value::Int(n.into())),
            Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(e)?.map(Value::Int),
            Type::OID => row
                .try_get::<_, Option<u32>>(i)
                .map_err(e)?
                .map(|n| Value::Int(n.into())),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(i)
                .map_err(e)?
                .map(|f| Value::Float(f.into())),
            Type::FLOAT8 => row
                .try_get::<_, Option<f64>>(i)
                .map_err(e)?
                .map(Value::Float),
            Type::BYTEA => row
                .try_get::<_, Option<Vec<u8>>>(i)
                .map_err(e)?
                .map(Value::Bytes),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => row
                .try_get::<_, Option<String>>(i)
                .map_err(e)?
                .map(Value::Text),
            ref t => {
                return Err(HostError::Invalid(format!(
                    "column {} is of type {t}: cast it to text in the query",
                    c.name()
                )))
            }
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(out)
}
