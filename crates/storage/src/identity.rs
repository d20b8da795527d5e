//! The signing key, identity-server bindings, and delegated validation sessions.

use sqlx::Row;
use vouch_core::validation::Purpose;

use crate::{Db, StorageError, is_unique_violation};

/// A bound address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The account.
    pub user_id: String,
    /// `email` or `msisdn`.
    pub medium: String,
    /// Canonical address.
    pub address: String,
    /// The identity server (`host[:port]` as the client named it).
    pub id_server: String,
}

impl Db {
    /// The signing key: (key ID, seed). `make` is called to create one when there is none;
    /// if two instances race, both end up with the one that was stored first.
    pub async fn signing_key(
        &self,
        make: impl FnOnce() -> (String, String),
        now: i64,
    ) -> Result<(String, String), StorageError> {
        let _turn = self.write_turn().await;
        let existing = sqlx::query(
            "SELECT key_id, seed FROM server_signing_keys ORDER BY created_at, key_id LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = existing {
            return Ok((row.try_get("key_id")?, row.try_get("seed")?));
        }
        let (key_id, seed) = make();
        let inserted = sqlx::query(
            "INSERT INTO server_signing_keys (key_id, seed, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&key_id)
        .bind(&seed)
        .bind(now)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(e.into()),
        }
        let row = sqlx::query(
            "SELECT key_id, seed FROM server_signing_keys ORDER BY created_at, key_id LIMIT 1",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("key_id")?, row.try_get("seed")?))
    }

    /// Records a binding (idempotent).
    pub async fn add_binding(&self, b: &Binding, now: i64) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO threepid_bindings (user_id, medium, address, id_server, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (medium, address, id_server) DO UPDATE SET user_id = excluded.user_id",
        )
        .bind(&b.user_id)
        .bind(&b.medium)
        .bind(&b.address)
        .bind(&b.id_server)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The user's bindings, optionally of one address.
    pub async fn bindings(
        &self,
        user_id: &str,
        address: Option<(&str, &str)>,
    ) -> Result<Vec<Binding>, StorageError> {
        let rows = sqlx::query(
            "SELECT user_id, medium, address, id_server FROM threepid_bindings
             WHERE user_id = $1 AND ($2 IS NULL OR (medium = $2 AND address = $3)) ORDER BY id_server",
        )
        .bind(user_id)
        .bind(address.map(|(m, _)| m))
        .bind(address.map(|(_, a)| a))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            out.push(Binding {
                user_id: r.try_get("user_id")?,
                medium: r.try_get("medium")?,
                address: r.try_get("address")?,
                id_server: r.try_get("id_server")?,
            });
        }
        Ok(out)
    }

    /// Forgets a binding after a successful unbind.
    pub async fn remove_binding(&self, b: &Binding) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "DELETE FROM threepid_bindings WHERE medium = $1 AND address = $2 AND id_server = $3",
        )
        .bind(&b.medium)
        .bind(&b.address)
        .bind(&b.id_server)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a session that an identity server runs (requestToken was delegated). The
    /// address is filled in when the server reports it validated.
    #[expect(clippy::too_many_arguments, reason = "one row's columns")]
    pub async fn create_delegated_validation(
        &self,
        sid: &str,
        medium: &str,
        address: &str,
        client_secret: &str,
        purpose: Purpose,
        delegated_to: &str,
        now: i64,
    ) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO validation_sessions (sid, medium, address, client_secret, purpose, token_expires_at,
                 send_attempt, created_at, updated_at, delegated_to)
             VALUES ($1, $2, $3, $4, $5, $6, 0, $6, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(sid)
        .bind(medium)
        .bind(address)
        .bind(client_secret)
        .bind(purpose.as_str())
        .bind(now)
        .bind(delegated_to)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Where a delegated session lives, if `sid` is one.
    pub async fn delegated_to(&self, sid: &str) -> Result<Option<String>, StorageError> {
        let row = sqlx::query("SELECT delegated_to FROM validation_sessions WHERE sid = $1")
            .bind(sid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<Option<String>, _>("delegated_to")?,
            None => None,
        })
    }

    /// Marks a delegated session validated, with the address the identity server reports.
    pub async fn mark_delegated_validated(
        &self,
        sid: &str,
        address: &str,
        validated_at: i64,
        now: i64,
    ) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "UPDATE validation_sessions SET address = $1, validated_at = COALESCE(validated_at, $2), updated_at = $3
             WHERE sid = $4 AND delegated_to IS NOT NULL",
        )
        .bind(address)
        .bind(validated_at)
        .bind(now)
        .bind(sid)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
