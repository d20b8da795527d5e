//! Send limits held where the message is queued: counting the outbox and inserting the new
//! row happen in one transaction that is serialised per recipient (per destination country
//! for SMS), so a thousand concurrent requestTokens queue no more than the limit allows, on
//! one instance or several.
//!
//! SQLite has one writer at a time (`BEGIN IMMEDIATE`), which already serialises the count
//! and the insert. PostgreSQL runs writers side by side, so the transaction first takes a
//! transaction-scoped advisory lock on the limit's key. One key per transaction (the
//! recipient for mail; the country for SMS, which covers the number and its sessions too),
//! so two transactions never wait on each other in a cycle.

use sqlx::{AnyConnection, Row};

use crate::Backend;
use crate::outbox::NewMessage;

/// At most `max` messages queued after `since` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    /// Messages allowed in the window.
    pub max: i64,
    /// Start of the window (ms); rows created after it count.
    pub since: i64,
}

/// The limits a message must fit before it is queued. `None` fields are not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendLimits {
    /// Messages to the same recipient.
    pub per_recipient: Option<SendWindow>,
    /// Messages for the same validation session.
    pub per_session: Option<SendWindow>,
    /// SMS to the same country.
    pub per_country: Option<SendWindow>,
}

impl SendLimits {
    fn any(&self) -> bool {
        self.per_recipient.is_some() || self.per_session.is_some() || self.per_country.is_some()
    }
}

/// Which limit refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// Per recipient.
    Recipient,
    /// Per validation session.
    Session,
    /// Per destination country.
    Country,
}

/// A refusal: which limit, and when the oldest message it counted was queued (for the
/// client's retry time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The limit reached.
    pub hit: LimitHit,
    /// `created_at` of the oldest counted message.
    pub oldest: Option<i64>,
}

/// Takes the lock that serialises `message`'s limits (PostgreSQL) and counts them. `Some`
/// when a limit is reached; the caller then writes nothing.
pub(crate) async fn check(
    tx: &mut AnyConnection,
    backend: Backend,
    message: &NewMessage,
    limits: &SendLimits,
) -> Result<Option<Limited>, sqlx::Error> {
    if !limits.any() {
        return Ok(None);
    }
    lock(tx, backend, message, limits).await?;
    if let Some(w) = limits.per_recipient {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox
             WHERE recipient = $1 AND created_at > $2",
        )
        .bind(&message.recipient)
        .bind(w.since)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(hit) = over(&row, w, LimitHit::Recipient)? {
            return Ok(Some(hit));
        }
    }
    if let (Some(w), Some(sid)) = (limits.per_session, &message.sid) {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox
             WHERE sid = $1 AND created_at > $2",
        )
        .bind(sid)
        .bind(w.since)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(hit) = over(&row, w, LimitHit::Session)? {
            return Ok(Some(hit));
        }
    }
    if let (Some(w), Some(country)) = (limits.per_country, &message.country) {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox
             WHERE channel = $1 AND country = $2 AND created_at > $3",
        )
        .bind(message.channel)
        .bind(country)
        .bind(w.since)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(hit) = over(&row, w, LimitHit::Country)? {
            return Ok(Some(hit));
        }
    }
    Ok(None)
}

/// On PostgreSQL, takes the transaction-scoped lock that serialises `message`'s limits
/// (held until commit or rollback; taking it again in the transaction is free). SQLite's
/// one writer already serialises them.
pub(crate) async fn lock(
    tx: &mut AnyConnection,
    backend: Backend,
    message: &NewMessage,
    limits: &SendLimits,
) -> Result<(), sqlx::Error> {
    if backend != Backend::Postgres || !limits.any() {
        return Ok(());
    }
    let key = match &message.country {
        Some(country) if message.channel == "sms" => format!("send:sms:{country}"),
        _ => format!("send:{}:{}", message.channel, message.recipient),
    };
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(key)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Queues `message` only if it fits `limits`, counting and inserting in one statement
/// (the lock of [`lock`] taken before, on PostgreSQL). `false`: a limit was reached and
/// nothing was written; [`check`] then tells which.
pub(crate) async fn insert_within(
    tx: &mut AnyConnection,
    message: &NewMessage,
    limits: &SendLimits,
    now: i64,
) -> Result<bool, sqlx::Error> {
    // $1..$10 are the row (`outbox::insert_message`'s order); each limit adds its window.
    let mut conditions = Vec::new();
    let mut windows = Vec::new();
    if let Some(w) = limits.per_recipient {
        conditions.push("recipient = $3");
        windows.push(w);
    }
    if let (Some(w), Some(_)) = (limits.per_session, &message.sid) {
        conditions.push("sid = $4");
        windows.push(w);
    }
    if let (Some(w), Some(_)) = (limits.per_country, &message.country) {
        conditions.push("channel = $2 AND country = $9");
        windows.push(w);
    }
    let mut sql = format!(
        "INSERT INTO outbox {} SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10",
        crate::outbox::OUTBOX_ROW
    );
    for (i, condition) in conditions.iter().enumerate() {
        let (since, max) = (11 + 2 * i, 12 + 2 * i);
        sql.push_str(if i == 0 { " WHERE " } else { " AND " });
        sql.push_str(&format!(
            "(SELECT COUNT(*) FROM outbox WHERE {condition} AND created_at > ${since}) < ${max}"
        ));
    }
    let mut query =
        crate::outbox::bind_message(sqlx::query(sqlx::AssertSqlSafe(sql)), message, now);
    for w in &windows {
        query = query.bind(w.since).bind(w.max);
    }
    Ok(query.execute(&mut *tx).await?.rows_affected() == 1)
}

fn over(
    row: &sqlx::any::AnyRow,
    w: SendWindow,
    hit: LimitHit,
) -> Result<Option<Limited>, sqlx::Error> {
    let n: i64 = row.try_get("n")?;
    if n < w.max {
        return Ok(None);
    }
    Ok(Some(Limited {
        hit,
        oldest: row.try_get("oldest")?,
    }))
}
