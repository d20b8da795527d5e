//! UIA sessions and their completed stages.

use sqlx::Row;
use vouch_core::uia::{Operation, UiaSession};

use crate::{Db, StorageError, parse_col};

/// A stored session plus what each completed stage proved.
#[derive(Debug, Clone)]
pub struct StoredUiaSession {
    /// The session as the engine sees it.
    pub session: UiaSession,
    /// `(stage, result JSON)` in completion order.
    pub results: Vec<(String, serde_json::Value)>,
}

impl Db {
    /// Stores a new UIA session.
    pub async fn create_uia_session(
        &self,
        session_id: &str,
        operation: Operation,
        user_id: Option<&str>,
        binding: Option<&str>,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO uia_sessions (session_id, operation, user_id, created_at, expires_at, binding)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(session_id)
        .bind(operation.as_str())
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .bind(binding)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Loads a session with its completed stages.
    pub async fn uia_session(
        &self,
        session_id: &str,
    ) -> Result<Option<StoredUiaSession>, StorageError> {
        let Some(row) = sqlx::query(
            "SELECT session_id, operation, user_id, expires_at, binding FROM uia_sessions WHERE session_id = $1",
        )
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let stages = sqlx::query(
            "SELECT stage, result FROM uia_stages WHERE session_id = $1 ORDER BY completed_at, stage",
        )
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        let mut results = Vec::with_capacity(stages.len());
        for s in &stages {
            let stage: String = s.try_get("stage")?;
            let raw: String = s.try_get("result")?;
            // A stored result that does not parse is damage, not an empty result: say so.
            let result = serde_json::from_str(&raw).map_err(|e| {
                sqlx::Error::Decode(format!("UIA stage {stage} of {session_id}: {e}").into())
            })?;
            results.push((stage, result));
        }
        Ok(Some(StoredUiaSession {
            session: UiaSession {
                id: row.try_get("session_id")?,
                operation: parse_col(&row, "operation")?,
                user_id: row.try_get("user_id")?,
                expires_at: row.try_get("expires_at")?,
                completed: results.iter().map(|(s, _)| s.clone()).collect(),
                binding: row.try_get("binding")?,
            },
            results,
        }))
    }

    /// Records a completed stage. Completing it again keeps the first result.
    pub async fn complete_uia_stage(
        &self,
        session_id: &str,
        stage: &str,
        result: &serde_json::Value,
        now: i64,
    ) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO uia_stages (session_id, stage, result, completed_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (session_id, stage) DO NOTHING",
        )
        .bind(session_id)
        .bind(stage)
        .bind(result.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Spends one guess of a session (a password or registration-token stage is about to
    /// be checked), in one conditional statement: `false` when the session has had
    /// `max_guesses` already (or is gone), and then nothing is checked.
    pub async fn spend_uia_guess(
        &self,
        session_id: &str,
        max_guesses: i64,
    ) -> Result<bool, StorageError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE uia_sessions SET guesses = guesses + 1 WHERE session_id = $1 AND guesses < $2",
        )
        .bind(session_id)
        .bind(max_guesses)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Spends a session: `true` for exactly one caller, `false` if it was already spent.
    pub async fn claim_uia_session(&self, session_id: &str) -> Result<bool, StorageError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM uia_sessions WHERE session_id = $1")
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM uia_stages WHERE session_id = $1")
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}
