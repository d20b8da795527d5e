//! OpenID Connect: the signing keys, and the access tokens of sign-ins that opened no
//! Matrix session (they only work at userinfo).

use sqlx::Row;

use crate::{Db, StorageError};

/// A signing key.
#[derive(Debug, Clone)]
pub struct OidcKey {
    /// Its key ID (`kid`).
    pub kid: String,
    /// The Ed25519 seed, base64.
    pub private_key: String,
    /// When it was made (ms).
    pub created_at: i64,
}

/// What an OpenID Connect access token grants.
#[derive(Debug, Clone)]
pub struct OidcToken {
    /// Whose it is.
    pub user_id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The scope granted.
    pub scope: String,
}

impl Db {
    /// The signing keys made at `since` or later, newest first.
    pub async fn oidc_keys(&self, since: i64) -> Result<Vec<OidcKey>, StorageError> {
        let rows = sqlx::query(
            "SELECT kid, private_key, created_at FROM oidc_keys WHERE created_at >= $1
             ORDER BY created_at DESC, kid",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for r in &rows {
            keys.push(OidcKey {
                kid: r.try_get("kid")?,
                private_key: r.try_get("private_key")?,
                created_at: r.try_get("created_at")?,
            });
        }
        Ok(keys)
    }

    /// Stores an access token (its hash) of a sign-in without a Matrix session, only while
    /// the account is active and its password is still `checked_hash` (the one the
    /// approving browser signed in with), in one conditional statement: whether it was.
    pub async fn create_oidc_token(
        &self,
        token_hash: &str,
        token: &OidcToken,
        checked_hash: &str,
        expires_at: i64,
    ) -> Result<bool, StorageError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "INSERT INTO oidc_tokens (token_hash, user_id, client_id, scope, expires_at)
             SELECT $1, user_id, $2, $3, $4 FROM users
             WHERE user_id = $5 AND password_hash = $6 AND deactivated_at IS NULL",
        )
        .bind(token_hash)
        .bind(&token.client_id)
        .bind(&token.scope)
        .bind(expires_at)
        .bind(&token.user_id)
        .bind(checked_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores `key` unless a key was made at `since` or later, serialised (SQLite's write
    /// lock; a transaction-scoped advisory lock on PostgreSQL) so that many first requests,
    /// on any number of instances, make one: whether it was stored.
    pub async fn add_oidc_key_unless_since(
        &self,
        key: &OidcKey,
        since: i64,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin_write().await?;
        if self.backend == crate::Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind("oidc_keys")
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query(
            "INSERT INTO oidc_keys (kid, private_key, created_at)
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM oidc_keys WHERE created_at >= $4)",
        )
        .bind(&key.kid)
        .bind(&key.private_key)
        .bind(key.created_at)
        .bind(since)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The grant of an access token (by its hash) that has not expired, of an account that
    /// is not deactivated.
    pub async fn oidc_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<OidcToken>, StorageError> {
        let row = sqlx::query(
            "SELECT t.user_id, t.client_id, t.scope FROM oidc_tokens t
             JOIN users u ON u.user_id = t.user_id
             WHERE t.token_hash = $1 AND t.expires_at > $2 AND u.deactivated_at IS NULL",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| -> Result<_, sqlx::Error> {
                Ok(OidcToken {
                    user_id: r.try_get("user_id")?,
                    client_id: r.try_get("client_id")?,
                    scope: r.try_get("scope")?,
                })
            })
            .transpose()?)
    }

    /// Revokes an access token (by its hash): whether there was one.
    pub async fn revoke_oidc_token(&self, token_hash: &str) -> Result<bool, StorageError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("DELETE FROM oidc_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Ends every such token of `user_id` (logging out everywhere).
    pub async fn end_oidc_tokens(&self, user_id: &str) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query("DELETE FROM oidc_tokens WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
