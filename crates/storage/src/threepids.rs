//! Third-party identifiers (email addresses, phone numbers) attached to accounts.

use sqlx::Row;

use crate::{Db, StorageError};

/// A 3PID on an account, as `GET /account/3pid` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threepid {
    /// `email` or `msisdn`.
    pub medium: String,
    /// Canonical address.
    pub address: String,
    /// When it was validated (ms).
    pub validated_at: i64,
    /// When it was added to the account (ms).
    pub added_at: i64,
}

impl Db {
    /// The user's 3PIDs, oldest first.
    pub async fn threepids(&self, user_id: &str) -> Result<Vec<Threepid>, StorageError> {
        let rows = sqlx::query(
            "SELECT medium, address, validated_at, added_at FROM user_threepids
             WHERE user_id = $1 ORDER BY added_at, medium, address",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(Threepid {
                medium: r.try_get("medium")?,
                address: r.try_get("address")?,
                validated_at: r.try_get("validated_at")?,
                added_at: r.try_get("added_at")?,
            });
        }
        Ok(out)
    }

    /// The owner of a canonical address.
    pub async fn threepid_owner(
        &self,
        medium: &str,
        address: &str,
    ) -> Result<Option<String>, StorageError> {
        let row =
            sqlx::query("SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2")
                .bind(medium)
                .bind(address)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.try_get("user_id")).transpose()?)
    }
}

/// Why an address was not added.
#[derive(Debug, thiserror::Error)]
pub enum AddThreepidError {
    /// Another account (or this one) holds it.
    #[error("address already in use")]
    InUse,
    /// The validation session was spent meanwhile.
    #[error("validation session already used")]
    SessionSpent,
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for AddThreepidError {
    fn from(e: sqlx::Error) -> Self {
        AddThreepidError::Storage(e.into())
    }
}

impl Db {
    /// Adds a validated address to an account and spends the validation session, in one
    /// transaction.
    pub async fn add_threepid(
        &self,
        user_id: &str,
        medium: &str,
        address: &str,
        validated_at: i64,
        sid: &str,
        now: i64,
    ) -> Result<(), AddThreepidError> {
        let mut tx = self.begin_write().await?;
        let spent = sqlx::query(
            "UPDATE validation_sessions SET consumed_at = $1, updated_at = $1
             WHERE sid = $2 AND consumed_at IS NULL AND validated_at IS NOT NULL",
        )
        .bind(now)
        .bind(sid)
        .execute(&mut *tx)
        .await?;
        if spent.rows_affected() != 1 {
            return Err(AddThreepidError::SessionSpent);
        }
        let added = sqlx::query(
            "INSERT INTO user_threepids (medium, address, user_id, validated_at, added_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(medium)
        .bind(address)
        .bind(user_id)
        .bind(validated_at)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match added {
            Err(e) if crate::is_unique_violation(&e) => return Err(AddThreepidError::InUse),
            other => other?,
        };
        tx.commit().await?;
        Ok(())
    }

    /// Removes an address from an account; `false` if the account did not have it.
    pub async fn delete_threepid(
        &self,
        user_id: &str,
        medium: &str,
        address: &str,
    ) -> Result<bool, StorageError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "DELETE FROM user_threepids WHERE user_id = $1 AND medium = $2 AND address = $3",
        )
        .bind(user_id)
        .bind(medium)
        .bind(address)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
