//! Removing state that can no longer be used, in bounded batches, so the tables stay small
//! at any size and no statement holds the database for long.

use crate::{Db, StorageError};

/// How long after its last change a validation session is kept. A validated session can be
/// used for 24 hours (`VALIDATED_SESSION_LIFETIME_MS`); keeping spent and decoy sessions as
/// long means a client's retry within the day still gets the same `sid`.
const VALIDATION_GRACE_MS: i64 = 24 * 3_600_000;
/// How long an expired access token is kept, so its owner still gets `soft_logout`.
const EXPIRED_TOKEN_GRACE_MS: i64 = 7 * 24 * 3_600_000;
/// How long a spent refresh token is kept.
const SPENT_REFRESH_GRACE_MS: i64 = 24 * 3_600_000;
/// How long a signed-out device is remembered (its ID is not reused meanwhile in front of
/// a homeserver; see `Db::device_ended_after`).
const ENDED_DEVICE_GRACE_MS: i64 = 3_600_000;
/// How long an OAuth 2.0 authorization request is kept after it expired, so that a code
/// presented again within that time still ends the session it bought.
const GRANT_GRACE_MS: i64 = 24 * 3_600_000;
/// How long a registered OAuth 2.0 client without a session or a request is kept.
const IDLE_CLIENT_GRACE_MS: i64 = 24 * 3_600_000;
/// Batches per kind per run, so one run is bounded too.
const MAX_BATCHES: u32 = 50;

/// Rows removed by one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Validation sessions.
    pub validation_sessions: u64,
    /// UIA sessions (with their stages).
    pub uia_sessions: u64,
    /// Expired access tokens.
    pub access_tokens: u64,
    /// Spent refresh tokens.
    pub refresh_tokens: u64,
    /// Delivered or given-up outbox rows.
    pub outbox: u64,
    /// Some kind had more to remove than one run removes: run again at once.
    pub more: bool,
}

impl Db {
    /// Deletes rows of `table` matching `condition` (`$1`: the cutoff, `$3`: now), `batch` at
    /// a time, at most `MAX_BATCHES` times.
    async fn purge(
        &self,
        table: &str,
        key: &str,
        condition: &str,
        cutoff: i64,
        now: i64,
        batch: i64,
    ) -> Result<u64, StorageError> {
        let mut total = 0;
        for _ in 0..MAX_BATCHES {
            // One batch per writer turn, so requests get in between batches.
            let _turn = self.write_turn().await;
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {condition} LIMIT $2)"
            )))
            .bind(cutoff)
            .bind(batch)
            .bind(now)
            .execute(&self.pool)
            .await?;
            total += done.rows_affected();
            if done.rows_affected() < u64::try_from(batch).unwrap_or(u64::MAX) {
                break;
            }
        }
        Ok(total)
    }

    /// Removes what has expired at `now`, `batch` rows per statement: validation sessions
    /// whose token expired and that were not touched for a day, expired UIA sessions and
    /// their stages, access tokens expired for a week, refresh tokens spent a day ago, and
    /// outbox rows delivered or given up more than `keep_sent_ms` ago, OAuth 2.0 requests a
    /// day past their expiry (unapproved ones at expiry), expired browser sessions, and
    /// clients without a session or request for a day.
    pub async fn housekeeping(
        &self,
        now: i64,
        batch: i64,
        keep_sent_ms: i64,
    ) -> Result<Purged, StorageError> {
        let validation_sessions = self
            .purge(
                "validation_sessions",
                "sid",
                "updated_at <= $1 AND token_expires_at <= $3",
                now - VALIDATION_GRACE_MS,
                now,
                batch,
            )
            .await?;
        let uia_sessions = self
            .purge(
                "uia_sessions",
                "session_id",
                "expires_at <= $1",
                now,
                now,
                batch,
            )
            .await?;
        self.purge(
            "uia_stages",
            "session_id",
            "session_id NOT IN (SELECT session_id FROM uia_sessions) AND completed_at <= $1",
            now,
            now,
            batch,
        )
        .await?;
        let access_tokens = self
            .purge(
                "access_tokens",
                "token_hash",
                "expires_at IS NOT NULL AND expires_at <= $1",
                now - EXPIRED_TOKEN_GRACE_MS,
                now,
                batch,
            )
            .await?;
        let refresh_tokens = self
            .purge(
                "refresh_tokens",
                "token_hash",
                "used_at IS NOT NULL AND used_at <= $1",
                now - SPENT_REFRESH_GRACE_MS,
                now,
                batch,
            )
            .await?;
        let outbox = self
            .purge("outbox", "id", "(sent_at IS NOT NULL AND sent_at <= $1) OR (failed_at IS NOT NULL AND failed_at <= $1)", now - keep_sent_ms, now, batch)
            .await?;
        self.purge(
            "ended_devices",
            "device_key",
            "ended_at <= $1",
            now - ENDED_DEVICE_GRACE_MS,
            now,
            batch,
        )
        .await?;
        // Requests nobody approved go when they expire; approved ones a day later, so a
        // code replayed meanwhile still ends its session.
        self.purge(
            "oauth_grants",
            "grant_id",
            "expires_at <= $1 OR (expires_at <= $3 AND user_id IS NULL)",
            now - GRANT_GRACE_MS,
            now,
            batch,
        )
        .await?;
        self.purge(
            "oidc_tokens",
            "token_hash",
            "expires_at <= $1",
            now,
            now,
            batch,
        )
        .await?;
        self.purge(
            "page_codes",
            "token_hash",
            "expires_at <= $1",
            now,
            now,
            batch,
        )
        .await?;
        self.purge(
            "login_tokens",
            "token_hash",
            "expires_at <= $1",
            now,
            now,
            batch,
        )
        .await?;
        self.purge(
            "browser_sessions",
            "session_hash",
            "expires_at <= $1",
            now,
            now,
            batch,
        )
        .await?;
        // The spec: a client with a live session is never removed.
        self.purge(
            "oauth_clients",
            "client_id",
            "created_at <= $1
             AND client_id NOT IN (SELECT oauth_client_id FROM devices WHERE oauth_client_id IS NOT NULL)
             AND client_id NOT IN (SELECT client_id FROM oauth_grants)",
            now - IDLE_CLIENT_GRACE_MS,
            now,
            batch,
        )
        .await?;
        let full = u64::from(MAX_BATCHES) * u64::try_from(batch).unwrap_or(0);
        let more = [
            validation_sessions,
            uia_sessions,
            access_tokens,
            refresh_tokens,
            outbox,
        ]
        .iter()
        .any(|&n| full > 0 && n >= full);
        Ok(Purged {
            validation_sessions,
            uia_sessions,
            access_tokens,
            refresh_tokens,
            outbox,
            more,
        })
    }
}
