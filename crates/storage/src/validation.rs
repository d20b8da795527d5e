//! 3PID validation sessions and the mails that go with them.

use sqlx::Row;
use sqlx::any::AnyRow;
use vouch_core::validation::{Purpose, ValidationSession};

use crate::lite::{self, Param, bind_sqlx};
use crate::outbox::{NewMessage, insert_message};
use crate::send_limits::{self, LimitHit, Limited, SendLimits};
use crate::{Db, StorageError, parse_col, pg_routines};

/// A stored session with the fields the rules do not need to see.
#[derive(Debug, Clone)]
pub struct StoredValidation {
    /// The session.
    pub session: ValidationSession,
    /// The client's secret (compared in constant time by the caller).
    pub client_secret: String,
    /// Hash of the current token.
    pub token_hash: Option<String>,
    /// Where to send the user after validating.
    pub next_link: Option<String>,
    /// The UIA session that claimed it.
    pub claimed_by: Option<String>,
}

const COLUMNS: &str = "sid, medium, address, client_secret, purpose, token_hash, token_expires_at, send_attempt, \
                       next_link, validated_at, failed_attempts, burned_at, claimed_by, consumed_at";

fn from_row(row: &AnyRow) -> Result<StoredValidation, sqlx::Error> {
    Ok(StoredValidation {
        session: ValidationSession {
            sid: row.try_get("sid")?,
            medium: row.try_get("medium")?,
            address: row.try_get("address")?,
            purpose: parse_col::<Purpose>(row, "purpose")?,
            send_attempt: row.try_get("send_attempt")?,
            token_expires_at: row.try_get("token_expires_at")?,
            validated_at: row.try_get("validated_at")?,
            failed_attempts: row.try_get("failed_attempts")?,
            burned: row.try_get::<Option<i64>, _>("burned_at")?.is_some(),
            consumed: row.try_get::<Option<i64>, _>("consumed_at")?.is_some(),
        },
        client_secret: row.try_get("client_secret")?,
        token_hash: row.try_get("token_hash")?,
        next_link: row.try_get("next_link")?,
        claimed_by: row.try_get("claimed_by")?,
    })
}

/// A session to create.
#[derive(Debug, Clone)]
pub struct NewValidation {
    /// New session ID.
    pub sid: String,
    /// `email` or `msisdn`.
    pub medium: String,
    /// Canonical address.
    pub address: String,
    /// The client's secret.
    pub client_secret: String,
    /// What it is for.
    pub purpose: Purpose,
    /// Hash of the token sent; `None` for a decoy (`inhibit_3pid_errors`), which otherwise
    /// lives like a real session (expiry, attempt cap, send limits) but never validates.
    pub token_hash: Option<String>,
    /// When the token stops working.
    pub token_expires_at: i64,
    /// The client's `send_attempt`.
    pub send_attempt: i64,
    /// Validated `next_link`.
    pub next_link: Option<String>,
}

/// What queuing a session's message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Written, with its message.
    Done,
    /// A concurrent request got there first (the same session exists, or the resend was
    /// already made); nothing was written.
    Raced,
    /// A send limit was reached; nothing was written.
    Limited(Limited),
}

/// What presenting a wrong token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrongToken {
    /// One attempt was spent; `burned` when it was the last.
    Counted {
        /// The session is burned now.
        burned: bool,
    },
    /// No attempt was left (or the session was validated, spent or burned meanwhile).
    Refused,
}

/// The outcome of claiming a session for an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Claimed by this UIA session (now or before).
    Claimed,
    /// Another UIA session holds it.
    Taken,
}

/// The account holding an address, as a requestToken needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressOwner {
    /// Its user ID.
    pub user_id: String,
    /// The language it chose for its mail, if it chose one.
    pub language: Option<String>,
}

/// What a requestToken reads before it writes: who holds the address, and the session
/// this client already has for it.
#[derive(Debug, Clone)]
pub struct TokenRequestReads {
    /// The account holding the address.
    pub owner: Option<AddressOwner>,
    /// The session for (medium, address, client secret, purpose).
    pub existing: Option<StoredValidation>,
}

/// [`Db::token_request_reads`]'s statement: both lookups in one round trip (each is a
/// unique-index probe; the constant row keeps the answer when neither finds anything).
static TOKEN_REQUEST_READS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let columns: Vec<String> = COLUMNS
        .split(", ")
        .map(|c| format!("v.{}", c.trim()))
        .collect();
    format!(
        "SELECT o.user_id AS owner_id, o.language AS owner_language, {}
         FROM (SELECT 1 AS one) AS k
         LEFT JOIN (SELECT t.user_id, u.language FROM user_threepids t
                    LEFT JOIN users u ON u.user_id = t.user_id
                    WHERE t.medium = $1 AND t.address = $2) AS o ON 1 = 1
         LEFT JOIN validation_sessions v
           ON v.medium = $1 AND v.address = $2 AND v.client_secret = $3 AND v.purpose = $4",
        columns.join(", ")
    )
});

/// A new validation session's row, unless a concurrent twin made it: $1..$10 as
/// [`bind_session`] binds them.
const SESSION_INSERT: &str =
    "INSERT INTO validation_sessions (sid, medium, address, client_secret, purpose, token_hash,
         token_expires_at, send_attempt, next_link, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
     ON CONFLICT DO NOTHING";

/// [`SESSION_INSERT`]'s values.
fn session_params(new: &NewValidation, now: i64) -> [Param<'_>; 10] {
    [
        Param::text(&new.sid),
        Param::text(&new.medium),
        Param::text(&new.address),
        Param::text(&new.client_secret),
        Param::text(new.purpose.as_str()),
        Param::Text(new.token_hash.as_deref()),
        Param::int(new.token_expires_at),
        Param::int(new.send_attempt),
        Param::Text(new.next_link.as_deref()),
        Param::int(now),
    ]
}

impl Db {
    /// Who holds (medium, address) and this client's session for it, in one statement.
    pub async fn token_request_reads(
        &self,
        medium: &str,
        address: &str,
        client_secret: &str,
        purpose: Purpose,
    ) -> Result<TokenRequestReads, StorageError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(TOKEN_REQUEST_READS.as_str()))
            .bind(medium)
            .bind(address)
            .bind(client_secret)
            .bind(purpose.as_str())
            .fetch_one(&self.pool)
            .await?;
        let owner = row
            .try_get::<Option<String>, _>("owner_id")?
            .map(|user_id| -> Result<AddressOwner, sqlx::Error> {
                Ok(AddressOwner {
                    user_id,
                    language: row.try_get("owner_language")?,
                })
            })
            .transpose()?;
        let existing = match row.try_get::<Option<String>, _>("sid")? {
            Some(_) => Some(from_row(&row)?),
            None => None,
        };
        Ok(TokenRequestReads { owner, existing })
    }

    /// The session for (medium, address, client_secret, purpose), if any.
    pub async fn find_validation(
        &self,
        medium: &str,
        address: &str,
        client_secret: &str,
        purpose: Purpose,
    ) -> Result<Option<StoredValidation>, StorageError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM validation_sessions
             WHERE medium = $1 AND address = $2 AND client_secret = $3 AND purpose = $4"
        )))
        .bind(medium)
        .bind(address)
        .bind(client_secret)
        .bind(purpose.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// The session with this `sid`.
    pub async fn validation(&self, sid: &str) -> Result<Option<StoredValidation>, StorageError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM validation_sessions WHERE sid = $1"
        )))
        .bind(sid)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Creates a session and queues its message in one transaction, if the message fits
    /// `limits` (counted and inserted under one lock, see `send_limits`).
    pub async fn create_validation(
        &self,
        new: &NewValidation,
        message: &NewMessage,
        limits: &SendLimits,
        now: i64,
    ) -> Result<Queued, StorageError> {
        // SQLite: committed with the requests that arrive meanwhile (`group.rs`); each
        // request's limit checks see the writes before it in the same transaction.
        if let Some(group) = &self.group {
            let (new, message, limits) = (new.clone(), message.clone(), *limits);
            return group
                .write_direct(move |conn| {
                    Self::create_validation_direct(conn, &new, &message, &limits, now)
                })
                .await;
        }
        self.create_validation_pg(new, message, limits, now).await
    }

    /// [`Self::create_validation`] on PostgreSQL in one round trip: one call of the
    /// `vouch_create_validation_v1` routine (`pg_routines.rs`), committed on its own. It takes
    /// the limits' advisory lock in a statement of its own, so its counts see what the
    /// lock's previous holders committed, and writes nothing unless the answer is
    /// [`Queued::Done`].
    async fn create_validation_pg(
        &self,
        new: &NewValidation,
        message: &NewMessage,
        limits: &SendLimits,
        now: i64,
    ) -> Result<Queued, StorageError> {
        let mut params = session_params(new, now).to_vec();
        params.extend(crate::outbox::message_params(message, now));
        params.push(Param::Int(send_limits::lock_key(message, limits)));
        params.extend(send_limits::routine_windows(message, limits));
        let row = bind_sqlx(sqlx::query(pg_routines::CALL_CREATE_VALIDATION), &params)
            .fetch_one(&self.pool)
            .await?;
        let outcome: String = row.try_get("outcome")?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        let hit = match outcome.as_str() {
            "queued" => return Ok(Queued::Done),
            "raced" => return Ok(Queued::Raced),
            "recipient" => LimitHit::Recipient,
            "session" => LimitHit::Session,
            "country" => LimitHit::Country,
            other => {
                return Err(StorageError::Database(sqlx::Error::Protocol(format!(
                    "vouch_create_validation_v1 answered {other:?}"
                ))));
            }
        };
        Ok(Queued::Limited(Limited { hit, oldest }))
    }

    /// [`Self::create_validation`]'s statements on SQLite, in the group's transaction on its
    /// own connection (whose one writer serialises the limits): nothing is written unless
    /// the answer is [`Queued::Done`].
    fn create_validation_direct(
        conn: &rusqlite::Connection,
        new: &NewValidation,
        message: &NewMessage,
        limits: &SendLimits,
        now: i64,
    ) -> Result<Queued, StorageError> {
        // Two statements when the message fits: the session (unless a concurrent twin
        // made it) and the message, counted against the limits as it is inserted.
        if lite::execute(conn, SESSION_INSERT, &session_params(new, now))? != 1 {
            return Ok(Queued::Raced);
        }
        if send_limits::insert_within_direct(conn, message, limits, now)? {
            return Ok(Queued::Done);
        }
        // A limit was reached: the session goes too, and the counts say which limit.
        lite::execute(
            conn,
            "DELETE FROM validation_sessions WHERE sid = $1",
            &[Param::text(&new.sid)],
        )?;
        let limited = send_limits::check_direct(conn, message, limits)?.ok_or_else(|| {
            StorageError::Database(sqlx::Error::Protocol(
                "a send limit refused, then passed".into(),
            ))
        })?;
        Ok(Queued::Limited(limited))
    }

    /// Puts a fresh token on a session for a higher `send_attempt` and queues its message, in
    /// one transaction, if the message fits `limits`. A decoy gets `token_hash` `None` again.
    #[allow(clippy::too_many_arguments)]
    pub async fn resend_validation(
        &self,
        sid: &str,
        send_attempt: i64,
        token_hash: Option<&str>,
        token_expires_at: i64,
        message: &NewMessage,
        limits: &SendLimits,
        now: i64,
    ) -> Result<Queued, StorageError> {
        let mut tx = self.begin_write().await?;
        if let Some(limited) = send_limits::check(&mut tx, self.backend, message, limits).await? {
            return Ok(Queued::Limited(limited));
        }
        let done = sqlx::query(
            "UPDATE validation_sessions SET send_attempt = $1, token_hash = $2, token_expires_at = $3, updated_at = $4
             WHERE sid = $5 AND send_attempt < $1 AND validated_at IS NULL AND burned_at IS NULL AND consumed_at IS NULL",
        )
        .bind(send_attempt)
        .bind(token_hash)
        .bind(token_expires_at)
        .bind(now)
        .bind(sid)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(Queued::Raced);
        }
        insert_message(&mut tx, message, now).await?;
        tx.commit().await?;
        Ok(Queued::Done)
    }

    /// Marks a session validated if `token_hash` is still its token, it is unexpired,
    /// unspent, unburned and its wrong attempts are below `max_attempts`, all in the one
    /// statement that writes. `true` when this call validated it.
    pub async fn mark_validated(
        &self,
        sid: &str,
        token_hash: &str,
        max_attempts: i64,
        now: i64,
    ) -> Result<bool, StorageError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE validation_sessions SET validated_at = $1, updated_at = $1
             WHERE sid = $2 AND token_hash = $3 AND validated_at IS NULL AND burned_at IS NULL
               AND consumed_at IS NULL AND token_expires_at > $1 AND failed_attempts < $4",
        )
        .bind(now)
        .bind(sid)
        .bind(token_hash)
        .bind(max_attempts)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Spends one wrong attempt, in one conditional statement: only while attempts are left
    /// (fewer than `max_attempts`) on a session that is not validated, spent or burned. The
    /// last attempt burns it. However many guesses arrive together, at most `max_attempts`
    /// are counted and every later one is refused.
    pub async fn spend_wrong_attempt(
        &self,
        sid: &str,
        max_attempts: i64,
        now: i64,
    ) -> Result<WrongToken, StorageError> {
        let _turn = self.write_turn().await;
        let row = sqlx::query(
            "UPDATE validation_sessions SET failed_attempts = failed_attempts + 1, updated_at = $1,
                 burned_at = CASE WHEN failed_attempts + 1 >= $2 THEN $1 ELSE NULL END
             WHERE sid = $3 AND validated_at IS NULL AND burned_at IS NULL AND consumed_at IS NULL
               AND failed_attempts < $2
             RETURNING failed_attempts",
        )
        .bind(now)
        .bind(max_attempts)
        .bind(sid)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => WrongToken::Counted {
                burned: r.try_get::<i64, _>("failed_attempts")? >= max_attempts,
            },
            None => WrongToken::Refused,
        })
    }

    /// Binds a validated session to the UIA session that uses it; a second UIA session
    /// cannot use it.
    pub async fn claim_validation(
        &self,
        sid: &str,
        uia_session: &str,
    ) -> Result<Claim, StorageError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE validation_sessions SET claimed_by = $1
             WHERE sid = $2 AND consumed_at IS NULL AND (claimed_by IS NULL OR claimed_by = $1)",
        )
        .bind(uia_session)
        .bind(sid)
        .execute(&self.pool)
        .await?;
        Ok(if done.rows_affected() == 1 {
            Claim::Claimed
        } else {
            Claim::Taken
        })
    }

    /// Spends a validated session; `true` for exactly one caller.
    pub async fn consume_validation(&self, sid: &str, now: i64) -> Result<bool, StorageError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE validation_sessions SET consumed_at = $1, updated_at = $1
             WHERE sid = $2 AND consumed_at IS NULL AND validated_at IS NOT NULL",
        )
        .bind(now)
        .bind(sid)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
