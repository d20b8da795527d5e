//! Registration tokens (`m.login.registration_token`), with uses and expiry like Synapse's.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Db, StorageError, is_unique_violation};

/// A registration token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationToken {
    /// The token text.
    pub token: String,
    /// How many registrations it allows; `None`: unlimited.
    pub uses_allowed: Option<i64>,
    /// Registrations completed with it.
    pub completed: i64,
    /// When it stops working (ms); `None`: never.
    pub expiry_time: Option<i64>,
}

impl RegistrationToken {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            token: row.try_get("token")?,
            uses_allowed: row.try_get("uses_allowed")?,
            completed: row.try_get("completed")?,
            expiry_time: row.try_get("expiry_time")?,
        })
    }

    /// Whether it can still authorise a registration at `now`.
    pub fn is_valid(&self, now: i64) -> bool {
        self.uses_allowed.is_none_or(|max| self.completed < max)
            && self.expiry_time.is_none_or(|t| t > now)
    }
}

impl Db {
    /// Creates a token; `false` if one with this text exists.
    pub async fn create_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<i64>,
        expiry_time: Option<i64>,
        now: i64,
    ) -> Result<bool, StorageError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "INSERT INTO registration_tokens (token, uses_allowed, expiry_time, created_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token)
        .bind(uses_allowed)
        .bind(expiry_time)
        .bind(now)
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// One token.
    pub async fn registration_token(
        &self,
        token: &str,
    ) -> Result<Option<RegistrationToken>, StorageError> {
        let row = sqlx::query(
            "SELECT token, uses_allowed, completed, expiry_time FROM registration_tokens WHERE token = $1",
        )
        .bind(token)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(RegistrationToken::from_row).transpose()?)
    }

    /// Every token, oldest first.
    pub async fn registration_tokens(&self) -> Result<Vec<RegistrationToken>, StorageError> {
        let rows = sqlx::query(
            "SELECT token, uses_allowed, completed, expiry_time FROM registration_tokens
             ORDER BY created_at, token",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(RegistrationToken::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Changes a token's uses and expiry (`None`: leave as is; `Some(None)`: unlimited /
    /// never). `false` if there is no such token.
    pub async fn update_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<Option<i64>>,
        expiry_time: Option<Option<i64>>,
    ) -> Result<bool, StorageError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE registration_tokens SET
                 uses_allowed = CASE WHEN $1 = 1 THEN $2 ELSE uses_allowed END,
                 expiry_time = CASE WHEN $3 = 1 THEN $4 ELSE expiry_time END
             WHERE token = $5",
        )
        .bind(i64::from(uses_allowed.is_some()))
        .bind(uses_allowed.flatten())
        .bind(i64::from(expiry_time.is_some()))
        .bind(expiry_time.flatten())
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a token; `false` if there was none.
    pub async fn delete_registration_token(&self, token: &str) -> Result<bool, StorageError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("DELETE FROM registration_tokens WHERE token = $1")
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
