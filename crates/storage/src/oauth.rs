//! OAuth 2.0 rows: registered clients, authorization requests ("grants") with their codes,
//! and the browser sessions of the sign-in pages. What the rows mean is `vouch-core`'s
//! (`oauth`); here they are stored as JSON where the domain owns the shape.

use sqlx::Row;

use crate::{Db, StorageError};

/// A client to register.
#[derive(Debug, Clone)]
pub struct NewClient {
    /// A fresh ID, used unless the same metadata is registered already.
    pub client_id: String,
    /// The metadata, as JSON.
    pub metadata: String,
    /// A hash of the metadata, to find an identical registration.
    pub metadata_hash: String,
}

/// An authorization request while the user signs in and consents.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Its handle in the pages' URLs.
    pub grant_id: String,
    /// The client.
    pub client_id: String,
    /// The request, as JSON.
    pub request: String,
    /// When the request was made (ms).
    pub created_at: i64,
    /// Until when the user may finish (ms).
    pub expires_at: i64,
    /// An account waiting for its addresses to be verified (sign-up), as JSON.
    pub signup: Option<String>,
    /// A device authorization request's user code (as stored: `BCDFGHJK`).
    pub user_code: Option<String>,
}

/// A code exchanged (or not) at the token endpoint.
#[derive(Debug, Clone)]
pub enum Exchange {
    /// First use: the grant it was issued for, with who approved it.
    Fresh(ApprovedGrant),
    /// Used before: the session it bought should end (RFC 6749 §4.1.2).
    Reused(ApprovedGrant),
    /// Unknown, expired or denied.
    Unknown,
}

/// An approved grant.
#[derive(Debug, Clone)]
pub struct ApprovedGrant {
    /// The grant.
    pub grant: Grant,
    /// Who approved it.
    pub user_id: String,
    /// The password hash the approving browser session was opened with.
    pub password_hash: String,
}

/// Whose a refresh token is.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    /// The user.
    pub user_id: String,
    /// The device.
    pub device_id: String,
    /// The OAuth client of the device's session (none: `/login` or `/register`).
    pub oauth_client_id: Option<String>,
}

/// A code under way on the pages: a password reset (no account: the page does not say
/// whether one has the address) or an address being added on the account page (`user_id`:
/// the account it is for).
#[derive(Debug, Clone)]
pub struct PageCode {
    /// The validation session the code goes to; none when no account has the address.
    pub sid: Option<String>,
    /// Its client secret (the server's own; never shown).
    pub client_secret: String,
    /// The address, as shown on the page.
    pub address: String,
    /// The account an address is being added to (none for a reset).
    pub user_id: Option<String>,
}

/// What a device's poll found.
#[derive(Debug, Clone)]
pub enum DevicePoll {
    /// Approved, and now spent: open the session.
    Approved(ApprovedGrant),
    /// The user has not answered yet.
    Pending,
    /// Polled sooner than the interval allows.
    SlowDown,
    /// The user declined.
    Denied,
    /// The request's time is over.
    Expired,
    /// Exchanged before.
    Spent,
    /// No such device code.
    Unknown,
}

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    /// Whose.
    pub user_id: String,
    /// The password hash it was opened with (still the account's).
    pub password_hash: String,
    /// When the user signed in (ms).
    pub created_at: i64,
}

fn grant_from(row: &sqlx::any::AnyRow) -> Result<Grant, sqlx::Error> {
    Ok(Grant {
        grant_id: row.try_get("grant_id")?,
        client_id: row.try_get("client_id")?,
        request: row.try_get("request")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        signup: row.try_get("signup")?,
        user_code: row.try_get("user_code")?,
    })
}

impl Db {
    /// Registers a client and returns its ID: `client.client_id`, or the ID of a client
    /// registered earlier with the same metadata (so that a flood of identical
    /// registrations is one row).
    pub async fn register_client(
        &self,
        client: &NewClient,
        now: i64,
    ) -> Result<String, StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO oauth_clients (client_id, metadata, metadata_hash, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (metadata_hash) DO NOTHING",
        )
        .bind(&client.client_id)
        .bind(&client.metadata)
        .bind(&client.metadata_hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let id: String =
            sqlx::query("SELECT client_id FROM oauth_clients WHERE metadata_hash = $1")
                .bind(&client.metadata_hash)
                .fetch_one(&self.pool)
                .await?
                .try_get("client_id")?;
        Ok(id)
    }

    /// A client's metadata (JSON).
    pub async fn client(&self, client_id: &str) -> Result<Option<String>, StorageError> {
        let row = sqlx::query("SELECT metadata FROM oauth_clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("metadata")).transpose()?)
    }

    /// Stores an authorization request; a device authorization request with the hash of
    /// its device code (and its user code on `grant`).
    pub async fn create_grant(
        &self,
        grant: &Grant,
        device_code_hash: Option<&str>,
        now: i64,
    ) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO oauth_grants (grant_id, client_id, request, created_at, expires_at, device_code_hash, user_code)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&grant.grant_id)
        .bind(&grant.client_id)
        .bind(&grant.request)
        .bind(now)
        .bind(grant.expires_at)
        .bind(device_code_hash)
        .bind(&grant.user_code)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The open device authorization request a user code names.
    pub async fn grant_by_user_code(
        &self,
        user_code: &str,
        now: i64,
    ) -> Result<Option<Grant>, StorageError> {
        let row = sqlx::query(
            "SELECT grant_id, client_id, request, created_at, expires_at, signup, user_code FROM oauth_grants
             WHERE user_code = $1 AND expires_at > $2 AND user_id IS NULL AND denied_at IS NULL",
        )
        .bind(user_code)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(grant_from).transpose()?)
    }

    /// A poll of the token endpoint by `client_id`'s device (RFC 8628 §3.4): the grant it
    /// approved is spent by one conditional statement (of many polls at once, one gets it);
    /// a poll within `interval_ms` of the last is told to slow down. Another client's
    /// device code is unknown.
    pub async fn poll_device(
        &self,
        device_code_hash: &str,
        client_id: &str,
        now: i64,
        interval_ms: i64,
    ) -> Result<DevicePoll, StorageError> {
        let _turn = self.write_turn().await;
        let won = sqlx::query(
            "UPDATE oauth_grants SET exchanged_at = $1
             WHERE device_code_hash = $2 AND client_id = $3
             AND user_id IS NOT NULL AND exchanged_at IS NULL AND denied_at IS NULL AND expires_at > $1
             RETURNING grant_id, client_id, request, created_at, expires_at, signup, user_code, user_id, password_hash",
        )
        .bind(now)
        .bind(device_code_hash)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = won {
            return Ok(DevicePoll::Approved(ApprovedGrant {
                grant: grant_from(&row)?,
                user_id: row.try_get("user_id")?,
                password_hash: row.try_get("password_hash")?,
            }));
        }
        let row = sqlx::query(
            "SELECT exchanged_at, denied_at, expires_at FROM oauth_grants
             WHERE device_code_hash = $1 AND client_id = $2",
        )
        .bind(device_code_hash)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(DevicePoll::Unknown);
        };
        let exchanged: Option<i64> = row.try_get("exchanged_at")?;
        let denied: Option<i64> = row.try_get("denied_at")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        if exchanged.is_some() {
            return Ok(DevicePoll::Spent);
        }
        if denied.is_some() {
            return Ok(DevicePoll::Denied);
        }
        if expires_at <= now {
            return Ok(DevicePoll::Expired);
        }
        let polled = sqlx::query(
            "UPDATE oauth_grants SET polled_at = $1
             WHERE device_code_hash = $2 AND (polled_at IS NULL OR polled_at <= $3)",
        )
        .bind(now)
        .bind(device_code_hash)
        .bind(now - interval_ms)
        .execute(&self.pool)
        .await?;
        Ok(if polled.rows_affected() == 1 {
            DevicePoll::Pending
        } else {
            DevicePoll::SlowDown
        })
    }

    /// An authorization request the user can still approve or deny.
    pub async fn open_grant(
        &self,
        grant_id: &str,
        now: i64,
    ) -> Result<Option<Grant>, StorageError> {
        let row = sqlx::query(
            "SELECT grant_id, client_id, request, created_at, expires_at, signup, user_code FROM oauth_grants
             WHERE grant_id = $1 AND expires_at > $2 AND user_id IS NULL AND denied_at IS NULL",
        )
        .bind(grant_id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(grant_from).transpose()?)
    }

    /// Approves an open request for `user_id` with a code (its hash) valid until
    /// `code_expires_at` (none for a device authorization request, whose device polls).
    /// One conditional statement: of two approvals racing, one wins; `false` for the
    /// other, or if the request expired or was answered.
    pub async fn approve_grant(
        &self,
        grant_id: &str,
        session: &BrowserSession,
        code_hash: Option<&str>,
        code_expires_at: i64,
        now: i64,
    ) -> Result<bool, StorageError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE oauth_grants SET user_id = $1, password_hash = $2, code_hash = $3, code_expires_at = $4
             WHERE grant_id = $5 AND expires_at > $6 AND user_id IS NULL AND denied_at IS NULL",
        )
        .bind(&session.user_id)
        .bind(&session.password_hash)
        .bind(code_hash)
        .bind(code_expires_at)
        .bind(grant_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Puts a sign-up waiting for its addresses on an open request, or clears it, if the
    /// request holds `expected` (none, or the sign-up being replaced): one conditional
    /// statement, so of two browsers racing, one's sign-up is there. `false` otherwise.
    pub async fn set_signup(
        &self,
        grant_id: &str,
        signup: Option<&str>,
        expected: Option<&str>,
        now: i64,
    ) -> Result<bool, StorageError> {
        let _turn = self.write_turn().await;
        let done = match expected {
            None => {
                sqlx::query(
                    "UPDATE oauth_grants SET signup = $1
                     WHERE grant_id = $2 AND expires_at > $3 AND user_id IS NULL AND denied_at IS NULL
                     AND signup IS NULL",
                )
                .bind(signup)
                .bind(grant_id)
                .bind(now)
                .execute(&self.pool)
                .await?
            }
            Some(old) => {
                sqlx::query(
                    "UPDATE oauth_grants SET signup = $1
                     WHERE grant_id = $2 AND expires_at > $3 AND user_id IS NULL AND denied_at IS NULL
                     AND signup = $4",
                )
                .bind(signup)
                .bind(grant_id)
                .bind(now)
                .bind(old)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    /// Denies an open request; `false` if it was not open.
    pub async fn deny_grant(&self, grant_id: &str, now: i64) -> Result<bool, StorageError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE oauth_grants SET denied_at = $1
             WHERE grant_id = $2 AND expires_at > $1 AND user_id IS NULL AND denied_at IS NULL",
        )
        .bind(now)
        .bind(grant_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Spends a code: one conditional statement, so of a thousand requests with one code,
    /// one gets `Fresh`.
    pub async fn exchange_code(&self, code_hash: &str, now: i64) -> Result<Exchange, StorageError> {
        let approved = |row: &sqlx::any::AnyRow| -> Result<ApprovedGrant, sqlx::Error> {
            Ok(ApprovedGrant {
                grant: grant_from(row)?,
                user_id: row.try_get("user_id")?,
                password_hash: row.try_get("password_hash")?,
            })
        };
        let _turn = self.write_turn().await;
        let row = sqlx::query(
            "UPDATE oauth_grants SET exchanged_at = $1
             WHERE code_hash = $2 AND exchanged_at IS NULL AND denied_at IS NULL AND code_expires_at > $1
             RETURNING grant_id, client_id, request, created_at, expires_at, signup, user_code, user_id, password_hash",
        )
        .bind(now)
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(Exchange::Fresh(approved(&row)?));
        }
        // Spent already: the replay is recorded (see `code_replayed`).
        let row = sqlx::query(
            "UPDATE oauth_grants SET replayed_at = $1
             WHERE code_hash = $2 AND exchanged_at IS NOT NULL
             RETURNING grant_id, client_id, request, created_at, expires_at, signup, user_code, user_id, password_hash",
        )
        .bind(now)
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => Exchange::Reused(approved(&row)?),
            None => Exchange::Unknown,
        })
    }

    /// Whether the code of `grant_id` was presented again after it was spent. The exchange
    /// that spent it asks after writing its session: a replay either finds that session
    /// (and ends it) or was recorded before this read (and the exchange ends it).
    pub async fn code_replayed(&self, grant_id: &str) -> Result<bool, StorageError> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM oauth_grants WHERE grant_id = $1 AND replayed_at IS NOT NULL",
        )
        .bind(grant_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// The approved grant a code (its hash) was issued for, whether or not it is spent or
    /// expired, to check the exchange's parameters before spending it.
    pub async fn find_code(&self, code_hash: &str) -> Result<Option<ApprovedGrant>, StorageError> {
        let row = sqlx::query(
            "SELECT grant_id, client_id, request, created_at, expires_at, signup, user_code, user_id, password_hash
             FROM oauth_grants WHERE code_hash = $1",
        )
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|row| -> Result<_, sqlx::Error> {
                Ok(ApprovedGrant {
                    grant: grant_from(&row)?,
                    user_id: row.try_get("user_id")?,
                    password_hash: row.try_get("password_hash")?,
                })
            })
            .transpose()?)
    }

    /// Opens a browser session (the cookie's hash) until `expires_at`.
    pub async fn create_browser_session(
        &self,
        session_hash: &str,
        session: &BrowserSession,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO browser_sessions (session_hash, user_id, password_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(session_hash)
        .bind(&session.user_id)
        .bind(&session.password_hash)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The browser session behind a cookie's hash: unexpired, of an active account whose
    /// password is still the one it was opened with.
    pub async fn browser_session(
        &self,
        session_hash: &str,
        now: i64,
    ) -> Result<Option<BrowserSession>, StorageError> {
        let row = sqlx::query(
            "SELECT b.user_id, b.password_hash, b.created_at FROM browser_sessions b
             JOIN users u ON u.user_id = b.user_id
             WHERE b.session_hash = $1 AND b.expires_at > $2
             AND u.deactivated_at IS NULL AND u.password_hash = b.password_hash",
        )
        .bind(session_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| -> Result<_, sqlx::Error> {
                Ok(BrowserSession {
                    user_id: r.try_get("user_id")?,
                    password_hash: r.try_get("password_hash")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .transpose()?)
    }

    /// Withdraws every approval of `user_id` not yet exchanged for tokens (logged out
    /// everywhere: a code or a device still waiting must not open a session after it).
    pub async fn withdraw_approvals_of(&self, user_id: &str, now: i64) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "UPDATE oauth_grants SET denied_at = $1
             WHERE user_id = $2 AND exchanged_at IS NULL AND denied_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores a code under way on the pages (the browser cookie's hash, the validation
    /// session or none, its client secret, the address as shown, the account) until
    /// `expires_at`.
    pub async fn create_page_code(
        &self,
        token_hash: &str,
        code: &PageCode,
        expires_at: i64,
    ) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO page_codes (token_hash, sid, client_secret, address, user_id, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(&code.sid)
        .bind(&code.client_secret)
        .bind(&code.address)
        .bind(&code.user_id)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The code under way a browser cookie's hash names, if it has not expired.
    pub async fn page_code(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<PageCode>, StorageError> {
        let row = sqlx::query(
            "SELECT sid, client_secret, address, user_id FROM page_codes WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| -> Result<_, sqlx::Error> {
                Ok(PageCode {
                    sid: r.try_get("sid")?,
                    client_secret: r.try_get("client_secret")?,
                    address: r.try_get("address")?,
                    user_id: r.try_get("user_id")?,
                })
            })
            .transpose()?)
    }

    /// Stores a login token (its hash) for the user of `session`, until `expires_at`.
    pub async fn create_login_token(
        &self,
        token_hash: &str,
        session: &BrowserSession,
        expires_at: i64,
    ) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO login_tokens (token_hash, user_id, password_hash, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(&session.user_id)
        .bind(&session.password_hash)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Spends a login token: one conditional statement, so of many logins with one token,
    /// one gets the user (and the password hash it was issued under).
    pub async fn spend_login_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<(String, String)>, StorageError> {
        let _turn = self.write_turn().await;
        let row = sqlx::query(
            "UPDATE login_tokens SET used_at = $1
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1
             RETURNING user_id, password_hash",
        )
        .bind(now)
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| -> Result<_, sqlx::Error> {
                Ok((r.try_get("user_id")?, r.try_get("password_hash")?))
            })
            .transpose()?)
    }

    /// Ends every browser session of `user_id` (logged out everywhere).
    pub async fn end_browser_sessions_of(&self, user_id: &str) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query("DELETE FROM browser_sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a browser session.
    pub async fn end_browser_session(&self, session_hash: &str) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query("DELETE FROM browser_sessions WHERE session_hash = $1")
            .bind(session_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The OAuth client a device's session was granted to (`None` for `/login` sessions or
    /// no such device).
    pub async fn device_client(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Option<String>, StorageError> {
        let row = sqlx::query(
            "SELECT oauth_client_id FROM devices WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| r.try_get("oauth_client_id"))
            .transpose()?
            .flatten())
    }

    /// Whose device a refresh token (its hash) is, spent or not, and the OAuth client its
    /// session was granted to (none for `/login` sessions): one read on the refresh paths.
    pub async fn refresh_token_owner(
        &self,
        token_hash: &str,
    ) -> Result<Option<TokenOwner>, StorageError> {
        let row = sqlx::query(
            "SELECT r.user_id, r.device_id, d.oauth_client_id FROM refresh_tokens r
             JOIN devices d ON d.user_id = r.user_id AND d.device_id = r.device_id
             WHERE r.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| -> Result<_, sqlx::Error> {
                Ok(TokenOwner {
                    user_id: r.try_get("user_id")?,
                    device_id: r.try_get("device_id")?,
                    oauth_client_id: r.try_get("oauth_client_id")?,
                })
            })
            .transpose()?)
    }
}
