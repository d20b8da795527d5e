//! Accounts: creation in one transaction, lookups, passwords, profile, deactivation.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::lite::{self, Param, bind_sqlx};
use crate::{Db, StorageError, flag, is_unique_violation};

/// A login's first statement: holds the account's row while its password hash is still
/// `$2` and it is active (a write that changes no value).
const LOGIN_HOLD: &str = "UPDATE users SET password_hash = password_hash
     WHERE user_id = $1 AND password_hash = $2 AND deactivated_at IS NULL";

/// How many devices the account `$1` has besides `$2`.
const OTHER_DEVICES: &str =
    "SELECT COUNT(*) AS n FROM devices WHERE user_id = $1 AND device_id <> $2";

/// The statements that write a login's device and tokens, with their values.
fn login_statements<'a>(
    user_id: &'a str,
    login: &'a NewLogin,
    now: i64,
) -> Vec<(&'static str, Vec<Param<'a>>)> {
    let mut out = vec![(
        "INSERT INTO devices (user_id, device_id, display_name, last_seen_ip, last_seen_ts, created_at, oauth_client_id, oauth_scope)
         VALUES ($1, $2, $3, $4, $5, $5, $6, $7)
         ON CONFLICT (user_id, device_id)
         DO UPDATE SET last_seen_ip = excluded.last_seen_ip, last_seen_ts = excluded.last_seen_ts,
             oauth_client_id = COALESCE(excluded.oauth_client_id, devices.oauth_client_id),
             oauth_scope = CASE WHEN excluded.oauth_client_id IS NULL THEN devices.oauth_scope ELSE excluded.oauth_scope END,
             display_name = CASE WHEN excluded.oauth_client_id IS NULL THEN devices.display_name ELSE excluded.display_name END",
        vec![
            Param::text(user_id),
            Param::text(&login.device_id),
            Param::Text(login.display_name.as_deref()),
            Param::Text(login.ip.as_deref()),
            Param::int(now),
            Param::Text(login.oauth_client_id.as_deref()),
            Param::Text(login.oauth_scope.as_deref()),
        ],
    )];
    if login.oauth_client_id.is_some() {
        // The spec: a client that names a device takes it over; what it had goes.
        for sql in [
            "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2",
        ] {
            out.push((
                sql,
                vec![Param::text(user_id), Param::text(&login.device_id)],
            ));
        }
    }
    out.push((
        "INSERT INTO access_tokens (token_hash, user_id, device_id, created_at, expires_at, refresh_token_hash)
         VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            Param::text(&login.access_token_hash),
            Param::text(user_id),
            Param::text(&login.device_id),
            Param::int(now),
            Param::Int(login.access_expires_at),
            Param::Text(login.refresh_token_hash.as_deref()),
        ],
    ));
    if let Some(refresh) = &login.refresh_token_hash {
        out.push((
            "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_at)
             VALUES ($1, $2, $3, $4)",
            vec![
                Param::text(refresh),
                Param::text(user_id),
                Param::text(&login.device_id),
                Param::int(now),
            ],
        ));
    }
    out
}

/// A stored account.
#[derive(Debug, Clone)]
pub struct User {
    /// `@localpart:server_name`.
    pub user_id: String,
    /// The localpart.
    pub localpart: String,
    /// Password hash (PHC or bcrypt), none for accounts that cannot log in by password.
    pub password_hash: Option<String>,
    /// Display name.
    pub displayname: Option<String>,
    /// Avatar `mxc://` URL.
    pub avatar_url: Option<String>,
    /// Guest account.
    pub is_guest: bool,
    /// Server admin.
    pub is_admin: bool,
    /// Creation time (ms).
    pub created_at: i64,
    /// Deactivation time (ms), if deactivated.
    pub deactivated_at: Option<i64>,
    /// The language chosen for its pages and mails, if any.
    pub language: Option<String>,
}

impl User {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            user_id: row.try_get("user_id")?,
            localpart: row.try_get("localpart")?,
            password_hash: row.try_get("password_hash")?,
            displayname: row.try_get("displayname")?,
            avatar_url: row.try_get("avatar_url")?,
            is_guest: flag(row, "is_guest")?,
            is_admin: flag(row, "is_admin")?,
            created_at: row.try_get("created_at")?,
            deactivated_at: row.try_get("deactivated_at")?,
            language: row.try_get("language")?,
        })
    }
}

const USER_COLUMNS: &str = "user_id, localpart, password_hash, displayname, avatar_url, is_guest, \
                            is_admin, created_at, deactivated_at, language";

/// A device and its tokens, made at login or registration.
#[derive(Debug, Clone)]
pub struct NewLogin {
    /// The device ID (kept if the device exists).
    pub device_id: String,
    /// Display name for a new device.
    pub display_name: Option<String>,
    /// Hash of the new access token.
    pub access_token_hash: String,
    /// When the access token expires (only with refresh tokens).
    pub access_expires_at: Option<i64>,
    /// Hash of the new refresh token, if the client asked for one.
    pub refresh_token_hash: Option<String>,
    /// The client's address.
    pub ip: Option<String>,
    /// The OAuth client the session is granted to (`None`: `/login` or `/register`). An
    /// OAuth session owns its device: tokens the device had before are revoked, and the
    /// device takes the client's name.
    pub oauth_client_id: Option<String>,
    /// The scope granted to the OAuth session.
    pub oauth_scope: Option<String>,
}

/// Everything a registration writes; it is written whole or not at all.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// `@localpart:server_name`.
    pub user_id: String,
    /// The localpart.
    pub localpart: String,
    /// Password hash.
    pub password_hash: Option<String>,
    /// Guest account.
    pub is_guest: bool,
    /// Server admin.
    pub is_admin: bool,
    /// Initial display name.
    pub displayname: Option<String>,
    /// The language of the pages it signed up on.
    pub language: Option<String>,
    /// The login to make, unless `inhibit_login`.
    pub login: Option<NewLogin>,
    /// Verified addresses to attach: (medium, canonical address, validated_at).
    pub threepids: Vec<(String, String, i64)>,
    /// A registration token to spend.
    pub registration_token: Option<String>,
    /// The UIA session that authorised this, spent with it.
    pub uia_session: Option<String>,
    /// Validation sessions whose addresses are attached, spent with it.
    pub validations: Vec<String>,
}

/// Why an account was not created. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum CreateAccountError {
    /// The user ID is taken.
    #[error("user ID already taken")]
    UserInUse,
    /// The registration token has no uses left or expired meanwhile.
    #[error("registration token used up or expired")]
    TokenUsedUp,
    /// A 3PID is already attached to another account.
    #[error("third-party identifier already in use")]
    ThreepidInUse,
    /// The UIA session was spent by a concurrent request.
    #[error("authentication session already used")]
    SessionSpent,
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for CreateAccountError {
    fn from(e: sqlx::Error) -> Self {
        CreateAccountError::Storage(e.into())
    }
}

impl Db {
    /// Creates an account with its first device, tokens and 3PIDs, spending the registration
    /// token and the UIA session, in one transaction. Concurrent registrations of one name:
    /// exactly one succeeds, the others get [`CreateAccountError::UserInUse`].
    pub async fn create_account(
        &self,
        new: &NewAccount,
        now: i64,
    ) -> Result<(), CreateAccountError> {
        if let Some(group) = &self.group {
            // SQLite: committed with the writes that arrive meanwhile (`group.rs`), inside
            // a savepoint of its own, so that a refused registration undoes only its own
            // statements.
            let new = new.clone();
            return group
                .write(move |conn| {
                    let new = new.clone();
                    Box::pin(async move {
                        let mut own = sqlx::Connection::begin(&mut *conn).await?;
                        match Self::create_account_in(&mut own, &new, now).await {
                            Ok(()) => {
                                own.commit().await?;
                                Ok(Ok(()))
                            }
                            // A database error fails the batch (its jobs are then run
                            // one by one); a refusal is this registration's answer.
                            Err(CreateAccountError::Storage(StorageError::Database(e))) => Err(e),
                            Err(refusal) => {
                                own.rollback().await?;
                                Ok(Err(refusal))
                            }
                        }
                    })
                })
                .await?;
        }
        let mut tx = self.begin_write().await?;
        Self::create_account_in(&mut tx, new, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Self::create_account`]'s statements, in `tx`; on an error the caller rolls back.
    async fn create_account_in(
        tx: &mut sqlx::AnyConnection,
        new: &NewAccount,
        now: i64,
    ) -> Result<(), CreateAccountError> {
        let inserted = sqlx::query(
            "INSERT INTO users (user_id, localpart, password_hash, displayname, is_guest, is_admin, created_at, language)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&new.user_id)
        .bind(&new.localpart)
        .bind(&new.password_hash)
        .bind(&new.displayname)
        .bind(i64::from(new.is_guest))
        .bind(i64::from(new.is_admin))
        .bind(now)
        .bind(&new.language)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(CreateAccountError::UserInUse),
            other => other?,
        };
        if let Some(session) = &new.uia_session {
            let spent = sqlx::query("DELETE FROM uia_sessions WHERE session_id = $1")
                .bind(session)
                .execute(&mut *tx)
                .await?;
            if spent.rows_affected() != 1 {
                return Err(CreateAccountError::SessionSpent);
            }
            sqlx::query("DELETE FROM uia_stages WHERE session_id = $1")
                .bind(session)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(token) = &new.registration_token {
            let used = sqlx::query(
                "UPDATE registration_tokens SET completed = completed + 1
                 WHERE token = $1 AND (uses_allowed IS NULL OR completed < uses_allowed)
                   AND (expiry_time IS NULL OR expiry_time > $2)",
            )
            .bind(token)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if used.rows_affected() != 1 {
                return Err(CreateAccountError::TokenUsedUp);
            }
        }
        for sid in &new.validations {
            let spent = sqlx::query(
                "UPDATE validation_sessions SET consumed_at = $1, updated_at = $1
                 WHERE sid = $2 AND consumed_at IS NULL AND validated_at IS NOT NULL",
            )
            .bind(now)
            .bind(sid)
            .execute(&mut *tx)
            .await?;
            if spent.rows_affected() != 1 {
                return Err(CreateAccountError::SessionSpent);
            }
        }
        for (medium, address, validated_at) in &new.threepids {
            let added = sqlx::query(
                "INSERT INTO user_threepids (medium, address, user_id, validated_at, added_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(medium)
            .bind(address)
            .bind(&new.user_id)
            .bind(validated_at)
            .bind(now)
            .execute(&mut *tx)
            .await;
            match added {
                Err(e) if is_unique_violation(&e) => return Err(CreateAccountError::ThreepidInUse),
                other => other?,
            };
        }
        if let Some(login) = &new.login {
            Self::insert_login(tx, &new.user_id, login, now).await?;
        }
        Ok(())
    }

    /// Adds a device (or reuses the existing one) and its tokens for a login, if the
    /// account is active and its password hash is still `password_hash` (the one just
    /// checked). The check is the transaction's first statement and a write, so it holds
    /// the account's row until the token is in: a concurrent deactivation or password
    /// change either comes first (and this returns `false`) or after (and revokes the
    /// token with the others).
    ///
    /// A login that would make the account's devices more than `max_devices` is refused
    /// (counted under the same row lock, so concurrent logins cannot pass it together).
    pub async fn create_login(
        &self,
        user_id: &str,
        password_hash: &str,
        login: &NewLogin,
        max_devices: i64,
        now: i64,
    ) -> Result<LoginWritten, StorageError> {
        // SQLite: committed with the writes that arrive meanwhile (`group.rs`); a batch's
        // logins for one account count each other's devices.
        if let Some(group) = &self.group {
            let (user_id, password_hash, login) =
                (user_id.to_owned(), password_hash.to_owned(), login.clone());
            return group
                .write_direct(move |conn| {
                    Ok(Self::create_login_direct(
                        conn,
                        &user_id,
                        &password_hash,
                        &login,
                        max_devices,
                        now,
                    )?)
                })
                .await;
        }
        let mut tx = self.begin_write().await?;
        let written =
            Self::create_login_in(&mut tx, user_id, password_hash, login, max_devices, now).await?;
        if written == LoginWritten::Done {
            tx.commit().await?;
        }
        Ok(written)
    }

    /// [`Self::create_login`]'s statements, in `tx`: nothing is written unless the answer
    /// is [`LoginWritten::Done`] (the first statement changes no value).
    async fn create_login_in(
        tx: &mut sqlx::AnyConnection,
        user_id: &str,
        password_hash: &str,
        login: &NewLogin,
        max_devices: i64,
        now: i64,
    ) -> Result<LoginWritten, sqlx::Error> {
        let still = bind_sqlx(
            sqlx::query(LOGIN_HOLD),
            &[Param::text(user_id), Param::text(password_hash)],
        )
        .execute(&mut *tx)
        .await?;
        if still.rows_affected() != 1 {
            return Ok(LoginWritten::Stale);
        }
        let others: i64 = bind_sqlx(
            sqlx::query(OTHER_DEVICES),
            &[Param::text(user_id), Param::text(&login.device_id)],
        )
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if others >= max_devices {
            return Ok(LoginWritten::TooManyDevices);
        }
        Self::insert_login(tx, user_id, login, now).await?;
        Ok(LoginWritten::Done)
    }

    /// [`Self::create_login_in`] on the SQLite group writer's own connection.
    fn create_login_direct(
        conn: &rusqlite::Connection,
        user_id: &str,
        password_hash: &str,
        login: &NewLogin,
        max_devices: i64,
        now: i64,
    ) -> rusqlite::Result<LoginWritten> {
        let held = lite::execute(
            conn,
            LOGIN_HOLD,
            &[Param::text(user_id), Param::text(password_hash)],
        )?;
        if held != 1 {
            return Ok(LoginWritten::Stale);
        }
        let others = lite::first(
            conn,
            OTHER_DEVICES,
            &[Param::text(user_id), Param::text(&login.device_id)],
            |row| row.get::<_, i64>("n"),
        )?
        .unwrap_or(0);
        if others >= max_devices {
            return Ok(LoginWritten::TooManyDevices);
        }
        Self::insert_login_direct(conn, user_id, login, now)?;
        Ok(LoginWritten::Done)
    }

    pub(crate) async fn insert_login(
        tx: &mut sqlx::AnyConnection,
        user_id: &str,
        login: &NewLogin,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        for (sql, params) in login_statements(user_id, login, now) {
            bind_sqlx(sqlx::query(sql), &params)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    /// [`Self::insert_login`] on the SQLite group writer's own connection.
    pub(crate) fn insert_login_direct(
        conn: &rusqlite::Connection,
        user_id: &str,
        login: &NewLogin,
        now: i64,
    ) -> rusqlite::Result<()> {
        for (sql, params) in login_statements(user_id, login, now) {
            lite::execute(conn, sql, &params)?;
        }
        Ok(())
    }

    /// The account with this user ID.
    pub async fn user(&self, user_id: &str) -> Result<Option<User>, StorageError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE user_id = $1"
        )))
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(User::from_row).transpose()?)
    }

    /// Sets (or with `None` clears) the language of the account's pages and mails.
    pub async fn set_language(
        &self,
        user_id: &str,
        language: Option<&str>,
    ) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE users SET language = $1 WHERE user_id = $2")
            .bind(language)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether an account (active or deactivated) holds this localpart.
    pub async fn localpart_taken(&self, localpart: &str) -> Result<bool, StorageError> {
        let row = sqlx::query("SELECT 1 AS one FROM users WHERE localpart = $1")
            .bind(localpart)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Stores a new password hash. With `logout_devices`, every device but `keep_device` is
    /// removed with all its tokens, in the same transaction.
    pub async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        logout_devices: bool,
        keep_device: Option<&str>,
        ending: Option<&crate::devices::Ending>,
    ) -> Result<Vec<String>, StorageError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE user_id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let ended = if logout_devices {
            crate::devices::end_devices(
                &mut tx,
                user_id,
                crate::devices::Which::AllBut(keep_device),
                ending,
            )
            .await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        Ok(ended)
    }

    /// Replaces a password hash only if it is still `old_hash` (rehash after login, which
    /// must not undo a concurrent password change).
    pub async fn upgrade_password_hash(
        &self,
        user_id: &str,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StorageError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1 WHERE user_id = $2 AND password_hash = $3",
        )
        .bind(new_hash)
        .bind(user_id)
        .bind(old_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deactivates an account: no devices, no tokens, no 3PIDs; with `erase`, no profile
    /// either. The password hash stays (the account never logs in again) so that a login
    /// with the right password, and only that, is told the account is deactivated. The
    /// user ID stays taken forever.
    pub async fn deactivate(
        &self,
        user_id: &str,
        erase: bool,
        now: i64,
        ending: Option<&crate::devices::Ending>,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        let sql = if erase {
            "UPDATE users SET deactivated_at = $1, displayname = NULL, avatar_url = NULL
             WHERE user_id = $2"
        } else {
            "UPDATE users SET deactivated_at = $1 WHERE user_id = $2"
        };
        sqlx::query(sql)
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        crate::devices::end_devices(
            &mut tx,
            user_id,
            crate::devices::Which::AllBut(None),
            ending,
        )
        .await?;
        sqlx::query("DELETE FROM user_threepids WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets (or with `None` clears) the display name.
    pub async fn set_displayname(
        &self,
        user_id: &str,
        name: Option<&str>,
    ) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE users SET displayname = $1 WHERE user_id = $2")
            .bind(name)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets (or with `None` clears) the avatar URL.
    pub async fn set_avatar_url(
        &self,
        user_id: &str,
        url: Option<&str>,
    ) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE users SET avatar_url = $1 WHERE user_id = $2")
            .bind(url)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Filters for listing accounts (the admin API).
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Substring of the user ID or display name.
    pub name: Option<String>,
    /// Include deactivated accounts.
    pub deactivated: bool,
    /// Include guests.
    pub guests: bool,
}

impl Db {
    /// A page of accounts ordered by user ID, and the total matching the filter.
    pub async fn list_users(
        &self,
        filter: &UserFilter,
        from: i64,
        limit: i64,
    ) -> Result<(Vec<User>, i64), StorageError> {
        // The search text is matched literally: `%`, `_` and the escape character itself
        // are escaped, so they are not wildcards.
        let pattern = filter.name.as_ref().map(|n| {
            let escaped = n
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let conditions =
            "($1 IS NULL OR LOWER(user_id) LIKE $1 ESCAPE '\\' OR LOWER(COALESCE(displayname, '')) LIKE $1 ESCAPE '\\')
             AND ($2 = 1 OR deactivated_at IS NULL) AND ($3 = 1 OR is_guest = 0)";
        let total: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM users WHERE {conditions}"
        )))
        .bind(&pattern)
        .bind(i64::from(filter.deactivated))
        .bind(i64::from(filter.guests))
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE {conditions} ORDER BY user_id LIMIT $4 OFFSET $5"
        )))
        .bind(&pattern)
        .bind(i64::from(filter.deactivated))
        .bind(i64::from(filter.guests))
        .bind(limit)
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        Ok((
            rows.iter().map(User::from_row).collect::<Result<_, _>>()?,
            total,
        ))
    }

    /// Grants or revokes server-admin rights.
    pub async fn set_admin(&self, user_id: &str, admin: bool) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE users SET is_admin = $1 WHERE user_id = $2")
            .bind(i64::from(admin))
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Reactivates a deactivated account (an admin action; it has no password until one is set).
    pub async fn reactivate(&self, user_id: &str) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE users SET deactivated_at = NULL WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces the account's addresses with `threepids` (medium, canonical address) in one
    /// transaction; an address held by another account fails it with `Ok(false)`.
    pub async fn replace_threepids(
        &self,
        user_id: &str,
        threepids: &[(String, String)],
        now: i64,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin_write().await?;
        // Addresses the account keeps keep their rows (and their validated_at / added_at);
        // only the ones that go are deleted and the new ones inserted.
        let current = sqlx::query("SELECT medium, address FROM user_threepids WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("medium")?,
                    r.try_get::<String, _>("address")?,
                ))
            })
            .collect::<Result<Vec<(String, String)>, sqlx::Error>>()?;
        for (medium, address) in current.iter().filter(|t| !threepids.contains(t)) {
            sqlx::query(
                "DELETE FROM user_threepids WHERE user_id = $1 AND medium = $2 AND address = $3",
            )
            .bind(user_id)
            .bind(medium)
            .bind(address)
            .execute(&mut *tx)
            .await?;
        }
        for (medium, address) in threepids.iter().filter(|t| !current.contains(t)) {
            let added = sqlx::query(
                "INSERT INTO user_threepids (medium, address, user_id, validated_at, added_at) VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(medium)
            .bind(address)
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await;
            match added {
                Err(e) if is_unique_violation(&e) => return Ok(false),
                other => other?,
            };
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// An account brought over from another server (`vouch import synapse`).
#[derive(Debug, Clone)]
pub struct ImportedUser {
    /// Full user ID.
    pub user_id: String,
    /// Localpart.
    pub localpart: String,
    /// The other server's password hash (bcrypt from Synapse; it keeps working).
    pub password_hash: Option<String>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Server admin.
    pub is_admin: bool,
    /// Guest.
    pub is_guest: bool,
    /// Deactivation time (ms), if deactivated.
    pub deactivated_at: Option<i64>,
    /// Display name.
    pub displayname: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// (medium, canonical address, validated_at, added_at).
    pub threepids: Vec<(String, String, i64, i64)>,
    /// The devices, with the sessions that keep working after the move.
    pub devices: Vec<ImportedDevice>,
}

/// A device brought over from another server.
#[derive(Debug, Clone, Default)]
pub struct ImportedDevice {
    /// The device ID.
    pub device_id: String,
    /// Its display name.
    pub display_name: Option<String>,
    /// Where it was last seen.
    pub last_seen_ip: Option<String>,
    /// When it was last seen (ms).
    pub last_seen_ts: Option<i64>,
    /// Its access tokens, hashed here like Vouch's own.
    pub tokens: Vec<ImportedToken>,
}

/// An access token brought over from another server (only its hash is kept).
#[derive(Debug, Clone, Default)]
pub struct ImportedToken {
    /// SHA-256 of the access token.
    pub access_token_hash: String,
    /// When it stops working (ms), for refreshable tokens.
    pub expires_at: Option<i64>,
    /// SHA-256 of the unused refresh token issued with it, if any.
    pub refresh_token_hash: Option<String>,
}

/// What writing a login did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginWritten {
    /// The device and its tokens are in.
    Done,
    /// The password checked is no longer the account's, or the account was deactivated
    /// meanwhile: nothing was written.
    Stale,
    /// The account has its most devices already: nothing was written.
    TooManyDevices,
}

/// What importing one account did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportOutcome {
    /// The account was new and written.
    pub created: bool,
    /// Addresses written.
    pub threepids_added: u64,
    /// Addresses skipped because another account holds them.
    pub threepids_conflicting: u64,
    /// Devices written (with their tokens).
    pub devices_added: u64,
}

impl Db {
    /// Writes an imported account and its addresses, in one transaction, unless the user ID
    /// exists: an existing account is left exactly as it is, addresses included (attaching
    /// another server's addresses to an account the import did not create would let whoever
    /// controls them reset its password). Running it twice changes nothing the second time.
    pub async fn import_user(&self, u: &ImportedUser) -> Result<ImportOutcome, StorageError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO users (user_id, localpart, password_hash, displayname, avatar_url, is_guest, is_admin, created_at, deactivated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(&u.user_id)
        .bind(&u.localpart)
        .bind(&u.password_hash)
        .bind(&u.displayname)
        .bind(&u.avatar_url)
        .bind(i64::from(u.is_guest))
        .bind(i64::from(u.is_admin))
        .bind(u.created_at)
        .bind(u.deactivated_at)
        .execute(&mut *tx)
        .await?;
        let mut outcome = ImportOutcome {
            created: done.rows_affected() == 1,
            ..ImportOutcome::default()
        };
        if !outcome.created {
            return Ok(outcome);
        }
        for (medium, address, validated_at, added_at) in &u.threepids {
            let owner: Option<String> = sqlx::query(
                "SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2",
            )
            .bind(medium)
            .bind(address)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("user_id"))
            .transpose()?;
            match owner {
                Some(o) if o == u.user_id => {}
                Some(_) => outcome.threepids_conflicting += 1,
                None => {
                    sqlx::query(
                        "INSERT INTO user_threepids (medium, address, user_id, validated_at, added_at) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(medium)
                    .bind(address)
                    .bind(&u.user_id)
                    .bind(validated_at)
                    .bind(added_at)
                    .execute(&mut *tx)
                    .await?;
                    outcome.threepids_added += 1;
                }
            }
        }
        for device in &u.devices {
            sqlx::query(
                "INSERT INTO devices (user_id, device_id, display_name, last_seen_ip, last_seen_ts, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, device_id) DO NOTHING",
            )
            .bind(&u.user_id)
            .bind(&device.device_id)
            .bind(&device.display_name)
            .bind(&device.last_seen_ip)
            .bind(device.last_seen_ts)
            .bind(u.created_at)
            .execute(&mut *tx)
            .await?;
            for token in &device.tokens {
                sqlx::query(
                    "INSERT INTO access_tokens (token_hash, user_id, device_id, created_at, expires_at, refresh_token_hash)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (token_hash) DO NOTHING",
                )
                .bind(&token.access_token_hash)
                .bind(&u.user_id)
                .bind(&device.device_id)
                .bind(u.created_at)
                .bind(token.expires_at)
                .bind(&token.refresh_token_hash)
                .execute(&mut *tx)
                .await?;
                if let Some(refresh) = &token.refresh_token_hash {
                    sqlx::query(
                        "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_at)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash) DO NOTHING",
                    )
                    .bind(refresh)
                    .bind(&u.user_id)
                    .bind(&device.device_id)
                    .bind(u.created_at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            outcome.devices_added += 1;
        }
        tx.commit().await?;
        Ok(outcome)
    }
}
