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
