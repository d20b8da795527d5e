//! The group writer's own SQLite connection, driven directly on the writer's thread.
//!
//! Through sqlx every statement is a hand-off to the connection's worker thread and back;
//! the group writer (`group.rs`) runs its hottest jobs on a connection of its own instead,
//! opened here with rusqlite on the same file, so a batch's statements run where the batch
//! runs. The SQL texts are the ones the sqlx paths send (`$1`-style parameters, which
//! SQLite takes as names), and a statement's values are listed once as [`Param`]s that
//! either driver binds: [`bind_sqlx`] for sqlx, [`execute`] and [`rows`] here.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, Row, Statement, ToSql};

use crate::SQLITE_CACHE_KIB;

/// One bound value: an integer or a text, either possibly `NULL`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
}

impl<'a> Param<'a> {
    pub(crate) fn int(v: i64) -> Self {
        Param::Int(Some(v))
    }

    pub(crate) fn text(v: &'a str) -> Self {
        Param::Text(Some(v))
    }
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Int(Some(v)) => ValueRef::Integer(v),
            Param::Text(Some(v)) => ValueRef::Text(v.as_bytes()),
            Param::Int(None) | Param::Text(None) => ValueRef::Null,
        }))
    }
}

/// Binds `params` to a sqlx query, in order (`$1` is the first).
pub(crate) fn bind_sqlx<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    params: &[Param<'q>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for p in params {
        query = match *p {
            Param::Int(v) => query.bind(v),
            Param::Text(v) => query.bind(v),
        };
    }
    query
}

/// Opens the writer's connection on the database file at `path` (which the pool created
/// and migrated), with the pool's settings.
pub(crate) fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -{SQLITE_CACHE_KIB}"
    ))?;
    // Every statement the writer sends, kept prepared.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Binds `params` to `stmt` by their `$N` names.
fn bind(stmt: &mut Statement<'_>, params: &[Param<'_>]) -> rusqlite::Result<()> {
    for index in 1..=stmt.parameter_count() {
        let n = stmt
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
            .ok_or_else(|| {
                rusqlite::Error::InvalidParameterName(
                    stmt.parameter_name(index).unwrap_or("?").to_owned(),
                )
            })?;
        let value = params
            .get(n)
            .ok_or(rusqlite::Error::InvalidParameterCount(n + 1, params.len()))?;
        stmt.raw_bind_parameter(index, value)?;
    }
    Ok(())
}

/// Runs a statement that returns no rows; the rows it changed.
pub(crate) fn execute(conn: &Connection, sql: &str, params: &[Param<'_>]) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, params)?;
    Ok(stmt.raw_execute()? as u64)
}

/// Runs a statement and reads every row it returns with `read`.
pub(crate) fn rows<T>(
    conn: &Connection,
    sql: &str,
    params: &[Param<'_>],
    mut read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, params)?;
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(read(row)?);
    }
    Ok(out)
}

/// The first row a statement returns, read with `read` (the statement still runs to its
/// end, so an `UPDATE … RETURNING` changes every row it matches).
pub(crate) fn first<T>(
    conn: &Connection,
    sql: &str,
    params: &[Param<'_>],
    read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    Ok(rows(conn, sql, params, read)?.into_iter().next())
}
