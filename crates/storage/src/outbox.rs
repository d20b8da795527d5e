//! The outbox: mails (and later SMS) accepted for sending. A row is written in the same
//! transaction as the state it belongs to, and leaves only when it was delivered or gave up,
//! so a crash or a dead SMTP server loses nothing.

use sqlx::Row;

use crate::lite::{self, Param, bind_sqlx};
use crate::{Backend, Db, StorageError};

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Row ID.
    pub id: String,
    /// `email` or `sms`.
    pub channel: &'static str,
    /// For SMS, the destination's country (ISO 3166-1 alpha-2).
    pub country: Option<String>,
    /// The address it goes to (canonical).
    pub recipient: String,
    /// The validation session it belongs to.
    pub sid: Option<String>,
    /// SMTP envelope sender.
    pub envelope_from: String,
    /// The whole RFC 5322 message, already formatted.
    pub message: String,
    /// Held: not sent until released.
    pub held: bool,
    /// A stand-in: counted by the send limits like a real message but never sent, and
    /// stored without a body. What a decoy session (`inhibit_3pid_errors`) queues where a
    /// real session would queue its mail or SMS, so that 429s cannot tell them apart.
    pub stand_in: bool,
}

/// How long the outbox worker's claim on a message lasts: no other worker takes it
/// meanwhile, and a worker that dies leaves it to be retried after this.
pub const DELIVERY_LEASE_MS: i64 = 120_000;

/// A claimed outbox row.
fn queued_message(r: &sqlx::any::AnyRow) -> Result<QueuedMessage, sqlx::Error> {
    Ok(QueuedMessage {
        id: r.try_get("id")?,
        recipient: r.try_get("recipient")?,
        channel: r.try_get("channel")?,
        sid: r.try_get("sid")?,
        envelope_from: r.try_get("envelope_from")?,
        message: r.try_get("message")?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
    })
}

/// A message claimed for sending.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// Row ID.
    pub id: String,
    /// Recipient.
    pub recipient: String,
    /// `email` or `sms`.
    pub channel: String,
    /// The validation session it belongs to.
    pub sid: Option<String>,
    /// Envelope sender (mail) or sender override (SMS; empty: the gateway's default).
    pub envelope_from: String,
    /// The formatted message (mail) or the text (SMS).
    pub message: String,
    /// Attempts so far (before this one).
    pub attempts: i64,
    /// When it was queued.
    pub created_at: i64,
}

pub(crate) async fn insert_message(
    tx: &mut sqlx::AnyConnection,
    mail: &NewMessage,
    now: i64,
) -> Result<(), sqlx::Error> {
    bind_sqlx(
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO outbox {OUTBOX_ROW} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))),
        &message_params(mail, now),
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The columns of a new outbox row, in the order of [`message_params`].
pub(crate) const OUTBOX_ROW: &str = "(id, channel, recipient, sid, envelope_from, message, created_at, next_attempt_at, country, sent_at)";

/// An outbox row's ten values, $1..$10 in the order of [`OUTBOX_ROW`].
pub(crate) fn message_params(mail: &NewMessage, now: i64) -> [Param<'_>; 10] {
    [
        Param::text(&mail.id),
        Param::text(mail.channel),
        Param::text(&mail.recipient),
        Param::Text(mail.sid.as_deref()),
        Param::text(&mail.envelope_from),
        Param::text(if mail.stand_in { "" } else { &mail.message }),
        Param::int(now),
        Param::Int((!mail.held && !mail.stand_in).then_some(now)),
        Param::Text(mail.country.as_deref()),
        Param::Int(mail.stand_in.then_some(now)),
    ]
}

impl Db {
    /// Queues a mail on its own (notices, test mails).
    pub async fn enqueue_message(&self, mail: &NewMessage, now: i64) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        insert_message(&mut tx, mail, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Releases held mail of a validation session; returns how many were released.
    pub async fn release_held_messages(&self, sid: &str, now: i64) -> Result<u64, StorageError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1
             WHERE sid = $2 AND next_attempt_at IS NULL AND sent_at IS NULL AND failed_at IS NULL",
        )
        .bind(now)
        .bind(sid)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Claims up to `limit` due mails for `lease_ms`: no other worker (on this instance or
    /// another) takes them until the lease runs out. A worker that dies mid-send leaves its
    /// claims to be retried after the lease. Homeserver calls go one at a time per user,
    /// oldest first: a call waits while an older one for the same user is undelivered.
    pub async fn claim_due_messages(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<QueuedMessage>, StorageError> {
        if let Some(group) = &self.group {
            // SQLite: the claim shares the commit of the writes queued with it.
            return group
                .write_direct(move |conn| Ok(claim_due_direct(conn, now, lease_ms, limit)?))
                .await;
        }
        // PostgreSQL: one statement, committed on its own (its row locks skip what another
        // worker is claiming).
        let mut conn = self.pool.acquire().await?;
        Ok(claim_due(&mut conn, self.backend, now, lease_ms, limit).await?)
    }

    /// Claims every message of `channel` to `recipient` still waiting (due or not), oldest
    /// first, for `lease_ms`: what must reach the recipient before something newer does.
    /// `None` while the outbox worker claimed one of them less than `in_flight_ms` ago (it
    /// is being delivered right now); a claim older than that is taken to be a worker that
    /// died with it (the calls are idempotent, so one sent twice does no harm).
    pub async fn claim_waiting_for(
        &self,
        channel: &str,
        recipient: &str,
        now: i64,
        lease_ms: i64,
        in_flight_ms: i64,
    ) -> Result<Option<Vec<QueuedMessage>>, StorageError> {
        let mut tx = self.begin_write().await?;
        let busy = sqlx::query(
            "SELECT id FROM outbox WHERE channel = $1 AND recipient = $2 AND sent_at IS NULL
               AND failed_at IS NULL AND locked_until IS NOT NULL AND locked_until > $3",
        )
        .bind(channel)
        .bind(recipient)
        .bind(now + DELIVERY_LEASE_MS - in_flight_ms)
        .fetch_optional(&mut *tx)
        .await?;
        if busy.is_some() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "UPDATE outbox SET locked_until = $1
             WHERE channel = $2 AND recipient = $3 AND sent_at IS NULL AND failed_at IS NULL
               AND next_attempt_at IS NOT NULL
             RETURNING id, channel, sid, recipient, envelope_from, message, attempts, created_at",
        )
        .bind(now.saturating_add(lease_ms))
        .bind(channel)
        .bind(recipient)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut out = rows
            .iter()
            .map(queued_message)
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|m| (m.created_at, m.id.clone()));
        Ok(Some(out))
    }

    /// Whether anything of `channel` to `recipient` waits (a read, no write lock).
    pub async fn has_waiting_for(
        &self,
        channel: &str,
        recipient: &str,
    ) -> Result<bool, StorageError> {
        Ok(sqlx::query(
            "SELECT id FROM outbox WHERE channel = $1 AND recipient = $2 AND sent_at IS NULL
               AND failed_at IS NULL AND next_attempt_at IS NOT NULL LIMIT 1",
        )
        .bind(channel)
        .bind(recipient)
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    /// Gives claimed messages back without counting an attempt.
    pub async fn release_messages(&self, ids: &[String]) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        for id in ids {
            sqlx::query("UPDATE outbox SET locked_until = NULL WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Records a delivery.
    pub async fn mark_message_sent(&self, id: &str, now: i64) -> Result<(), StorageError> {
        if let Some(group) = &self.group {
            // SQLite: recorded in the commit of the writes queued with it.
            let id = id.to_owned();
            return group
                .write_direct(move |conn| {
                    lite::execute(conn, MARK_SENT, &[Param::int(now), Param::text(&id)])?;
                    Ok(())
                })
                .await;
        }
        // PostgreSQL: written with the marks that arrive meanwhile, or alone if that fails.
        if let Some(marks) = &self.marks
            && marks.record(id, now).await
        {
            return Ok(());
        }
        let _turn = self.write_turn().await;
        let mut conn = self.pool.acquire().await?;
        mark_sent(&mut conn, id, now).await?;
        Ok(())
    }

    /// Records a failed attempt: retry at `next_attempt_at`, or give up when it is `None`.
    pub async fn mark_message_failed(
        &self,
        id: &str,
        error: &str,
        next_attempt_at: Option<i64>,
        now: i64,
    ) -> Result<(), StorageError> {
        if let Some(group) = &self.group {
            let (id, error) = (id.to_owned(), error.to_owned());
            return group
                .write_direct(move |conn| {
                    let params = [
                        Param::text(&error),
                        Param::Int(next_attempt_at),
                        Param::int(now),
                        Param::text(&id),
                    ];
                    lite::execute(conn, MARK_FAILED, &params)?;
                    Ok(())
                })
                .await;
        }
        let _turn = self.write_turn().await;
        let mut conn = self.pool.acquire().await?;
        mark_failed(&mut conn, id, error, next_attempt_at, now).await?;
        Ok(())
    }

    /// How many mails wait to be sent (due or held), for logs and tests.
    pub async fn pending_message_count(&self) -> Result<i64, StorageError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }
}

/// Waiting messages of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// `email` or `sms`.
    pub channel: String,
    /// How many wait (due or held).
    pub count: i64,
    /// When the oldest was queued (ms).
    pub oldest: Option<i64>,
}

impl Db {
    /// Waiting messages by channel, for metrics.
    pub async fn pending_by_channel(&self) -> Result<Vec<Pending>, StorageError> {
        let rows = sqlx::query(
            "SELECT channel, COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox
             WHERE sent_at IS NULL AND failed_at IS NULL GROUP BY channel",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            out.push(Pending {
                channel: r.try_get("channel")?,
                count: r.try_get("n")?,
                oldest: r.try_get("oldest")?,
            });
        }
        Ok(out)
    }
}

/// The statement that claims due messages: `$1` the lease's end, `$2` now, at most `limit`
/// of them; `skip_locked` is PostgreSQL's row-lock clause. The limit is written into the
/// text (an integer of the server's, not a client's): SQLite re-prepares a statement whose
/// `LIMIT` is a parameter each time it is bound, and the claim runs for every batch.
fn claim_sql(skip_locked: &str, limit: i64) -> String {
    format!(
        "UPDATE outbox SET locked_until = $1
         WHERE id IN (
             SELECT id FROM outbox
             WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at IS NOT NULL
               AND next_attempt_at <= $2 AND (locked_until IS NULL OR locked_until <= $2)
               AND NOT (channel = 'homeserver' AND EXISTS (
                   SELECT 1 FROM outbox earlier
                   WHERE earlier.channel = 'homeserver' AND earlier.recipient = outbox.recipient
                     AND earlier.sent_at IS NULL AND earlier.failed_at IS NULL
                     AND (earlier.created_at < outbox.created_at
                          OR (earlier.created_at = outbox.created_at AND earlier.id < outbox.id))))
             ORDER BY next_attempt_at LIMIT {limit} {skip_locked})
         RETURNING id, channel, sid, recipient, envelope_from, message, attempts, created_at"
    )
}

/// Claims up to `limit` due messages for `lease_ms` (see [`Db::claim_due_messages`]).
async fn claim_due(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<QueuedMessage>, sqlx::Error> {
    let skip_locked = match backend {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        // SQLite serialises writers; BEGIN IMMEDIATE already excludes other claimers.
        Backend::Sqlite => "",
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(claim_sql(skip_locked, limit)))
        .bind(now.saturating_add(lease_ms))
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(queued_message).collect()
}

/// [`claim_due`] on the SQLite group writer's own connection, whose `BEGIN IMMEDIATE`
/// excludes other claimers.
fn claim_due_direct(
    conn: &rusqlite::Connection,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> rusqlite::Result<Vec<QueuedMessage>> {
    lite::rows(
        conn,
        &claim_sql("", limit),
        &[Param::int(now.saturating_add(lease_ms)), Param::int(now)],
        |r| {
            Ok(QueuedMessage {
                id: r.get("id")?,
                recipient: r.get("recipient")?,
                channel: r.get("channel")?,
                sid: r.get("sid")?,
                envelope_from: r.get("envelope_from")?,
                message: r.get("message")?,
                attempts: r.get("attempts")?,
                created_at: r.get("created_at")?,
            })
        },
    )
}

/// Records the delivery of `$2` at `$1`. The body goes: a sent mail's link or an SMS's
/// code must not outlive its delivery in the database (the row stays for the send limits
/// and statistics).
const MARK_SENT: &str = "UPDATE outbox SET sent_at = $1, attempts = attempts + 1, locked_until = NULL, last_error = NULL, message = '' WHERE id = $2";

/// Records the delivery of `id`.
async fn mark_sent(conn: &mut sqlx::AnyConnection, id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(MARK_SENT)
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records a failed attempt of `$4` at `$3` with the error `$1`: retried at `$2`, or given
/// up (and its body dropped) when `$2` is `NULL`.
const MARK_FAILED: &str =
    "UPDATE outbox SET attempts = attempts + 1, locked_until = NULL, last_error = $1,
         next_attempt_at = COALESCE($2, next_attempt_at),
         failed_at = CASE WHEN $2 IS NULL THEN $3 ELSE NULL END,
         message = CASE WHEN $2 IS NULL THEN '' ELSE message END
     WHERE id = $4";

/// Records a failed attempt of `id` (see [`Db::mark_message_failed`]).
async fn mark_failed(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    error: &str,
    next_attempt_at: Option<i64>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(MARK_FAILED)
        .bind(error)
        .bind(next_attempt_at)
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
