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
use crate::lite::{self, Param, bind_sqlx};
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

/// The statements that count what `message`'s limits count, in the order they are
/// checked: the limit, its SQL, its values and its window.
fn counts<'a>(
    message: &'a NewMessage,
    limits: &SendLimits,
) -> Vec<(LimitHit, &'static str, Vec<Param<'a>>, SendWindow)> {
    let mut out = Vec::new();
    if let Some(w) = limits.per_recipient {
        out.push((
            LimitHit::Recipient,
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox
             WHERE recipient = $1 AND created_at > $2",
            vec![Param::text(&message.recipient), Param::int(w.since)],
            w,
        ));
    }
    if let (Some(w), Some(sid)) = (limits.per_session, &message.sid) {
        out.push((
            LimitHit::Session,
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox
             WHERE sid = $1 AND created_at > $2",
            vec![Param::text(sid), Param::int(w.since)],
            w,
        ));
    }
    if let (Some(w), Some(country)) = (limits.per_country, &message.country) {
        out.push((
            LimitHit::Country,
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox
             WHERE channel = $1 AND country = $2 AND created_at > $3",
            vec![
                Param::text(message.channel),
                Param::text(country),
                Param::int(w.since),
            ],
            w,
        ));
    }
    out
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
    for (hit, sql, params, w) in counts(message, limits) {
        let row = bind_sqlx(sqlx::query(sql), &params)
            .fetch_one(&mut *tx)
            .await?;
        if let Some(limited) = over(row.try_get("n")?, row.try_get("oldest")?, w, hit) {
            return Ok(Some(limited));
        }
    }
    Ok(None)
}

/// [`check`] on the SQLite group writer's own connection, whose one writer serialises the
/// limits.
pub(crate) fn check_direct(
    conn: &rusqlite::Connection,
    message: &NewMessage,
    limits: &SendLimits,
) -> rusqlite::Result<Option<Limited>> {
    for (hit, sql, params, w) in counts(message, limits) {
        let counted = lite::first(conn, sql, &params, |row| {
            Ok((
                row.get::<_, i64>("n")?,
                row.get::<_, Option<i64>>("oldest")?,
            ))
        })?;
        if let Some((n, oldest)) = counted
            && let Some(limited) = over(n, oldest, w, hit)
        {
            return Ok(Some(limited));
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
    if backend != Backend::Postgres {
        return Ok(());
    }
    let Some(key) = lock_key(message, limits) else {
        return Ok(());
    };
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The PostgreSQL advisory-lock key that serialises `message`'s limits, `None` when no
/// limit applies: one key per transaction (the recipient for mail; the country for SMS,
/// which covers the number and its sessions too), so two transactions never wait on each
/// other in a cycle. The first eight bytes of the SHA-256 of the key's name: the same on
/// every instance.
pub(crate) fn lock_key(message: &NewMessage, limits: &SendLimits) -> Option<i64> {
    use sha2::{Digest, Sha256};
    if !limits.any() {
        return None;
    }
    let name = match &message.country {
        Some(country) if message.channel == "sms" => format!("send:sms:{country}"),
        _ => format!("send:{}:{}", message.channel, message.recipient),
    };
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Some(i64::from_be_bytes(first))
}

/// Queues `message` only if it fits `limits`, counting and inserting in one statement, on
/// the SQLite group writer's own connection. `false`: a limit was reached and nothing was
/// written; [`check_direct`] then tells which.
pub(crate) fn insert_within_direct(
    conn: &rusqlite::Connection,
    message: &NewMessage,
    limits: &SendLimits,
    now: i64,
) -> rusqlite::Result<bool> {
    let (select, windows) = select_within(message, limits);
    let sql = format!("INSERT INTO outbox {} {select}", crate::outbox::OUTBOX_ROW);
    let mut params = crate::outbox::message_params(message, now).to_vec();
    params.extend(window_params(&windows));
    Ok(lite::execute(conn, &sql, &params)? == 1)
}

/// The windows of the limits that apply to `message`, recipient, session and country: a
/// session's only when the message belongs to one, a country's only when it has one.
fn applicable(message: &NewMessage, limits: &SendLimits) -> [Option<SendWindow>; 3] {
    [
        limits.per_recipient,
        limits.per_session.filter(|_| message.sid.is_some()),
        limits.per_country.filter(|_| message.country.is_some()),
    ]
}

/// The `SELECT` that gives `message`'s outbox row only if it fits `limits`: the row's ten
/// values are `$1`…`$10` (`outbox::message_params`' order), each limit's window the two
/// parameters after them ([`window_params`]).
pub(crate) fn select_within(
    message: &NewMessage,
    limits: &SendLimits,
) -> (String, Vec<SendWindow>) {
    let p = |i: usize| format!("${}", 1 + i);
    // Recipient, session and country, over the row's values $3, $4, and $2 with $9.
    let conditions_by_limit = [
        "recipient = $3",
        "sid = $4",
        "channel = $2 AND country = $9",
    ];
    let (conditions, windows): (Vec<&str>, Vec<SendWindow>) = conditions_by_limit
        .into_iter()
        .zip(applicable(message, limits))
        .filter_map(|(condition, w)| Some((condition, w?)))
        .unzip();
    let values: Vec<String> = (0..10).map(p).collect();
    let mut sql = format!("SELECT {}", values.join(", "));
    let clauses: Vec<String> = conditions
        .iter()
        .enumerate()
        .map(|(i, condition)| {
            format!(
                "(SELECT COUNT(*) FROM outbox WHERE {condition} AND created_at > {}) < {}",
                p(10 + 2 * i),
                p(11 + 2 * i)
            )
        })
        .collect();
    if !clauses.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&clauses.join(" AND "));
    }
    (sql, windows)
}

/// The windows of `message`'s limits as the PostgreSQL routine takes them
/// (`pg_routines.rs`): since and max for the recipient, the session and the country, both
/// `NULL` where that limit does not apply.
pub(crate) fn routine_windows(message: &NewMessage, limits: &SendLimits) -> [Param<'static>; 6] {
    let [r, s, c] = applicable(message, limits);
    [
        Param::Int(r.map(|w| w.since)),
        Param::Int(r.map(|w| w.max)),
        Param::Int(s.map(|w| w.since)),
        Param::Int(s.map(|w| w.max)),
        Param::Int(c.map(|w| w.since)),
        Param::Int(c.map(|w| w.max)),
    ]
}

/// The values of [`select_within`]'s windows, in its order.
pub(crate) fn window_params(windows: &[SendWindow]) -> Vec<Param<'static>> {
    windows
        .iter()
        .flat_map(|w| [Param::int(w.since), Param::int(w.max)])
        .collect()
}

fn over(n: i64, oldest: Option<i64>, w: SendWindow, hit: LimitHit) -> Option<Limited> {
    (n >= w.max).then_some(Limited { hit, oldest })
}
