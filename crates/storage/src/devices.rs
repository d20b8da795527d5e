//! Devices, access tokens and refresh tokens.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::accounts::NewLogin;
use crate::lite::{self, Param, bind_sqlx};
use crate::{Db, StorageError, flag};

/// A device as `GET /devices` shows it.
#[derive(Debug, Clone)]
pub struct Device {
    /// The device ID.
    pub device_id: String,
    /// Its display name.
    pub display_name: Option<String>,
    /// Last address it was seen from.
    pub last_seen_ip: Option<String>,
    /// Last time it was seen (ms).
    pub last_seen_ts: Option<i64>,
}

impl Device {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            device_id: row.try_get("device_id")?,
            display_name: row.try_get("display_name")?,
            last_seen_ip: row.try_get("last_seen_ip")?,
            last_seen_ts: row.try_get("last_seen_ts")?,
        })
    }
}

/// Who an access token belongs to.
#[derive(Debug, Clone)]
pub struct AccessTokenInfo {
    /// The user.
    pub user_id: String,
    /// The device.
    pub device_id: String,
    /// When it expires (ms), for refreshable tokens.
    pub expires_at: Option<i64>,
    /// The user is a guest.
    pub is_guest: bool,
    /// The user is a server admin.
    pub is_admin: bool,
    /// The scope granted, for an OAuth 2.0 session (`None`: `/login` or `/register`).
    pub oauth_scope: Option<String>,
}

/// Synapse's admin API scope.
const ADMIN_SCOPE: &str = "urn:synapse:admin:*";

impl AccessTokenInfo {
    /// Whether the token may act as a server admin: the user is one, and an OAuth 2.0
    /// session was granted the admin scope (a `/login` session of an admin always may).
    pub fn admin(&self) -> bool {
        self.is_admin
            && self
                .oauth_scope
                .as_deref()
                .is_none_or(|s| s.split(' ').any(|t| t == ADMIN_SCOPE))
    }
}

/// What else happens, in the same transaction, to each device that is deleted: it is
/// remembered as ended at `now` (`Db::device_ended_after`), and the message `notice`
/// makes for it, if any, is queued in the outbox. A device deleted and its notice are one
/// write: neither is ever without the other, and exactly the devices deleted get one.
#[derive(Clone)]
pub struct Ending {
    /// When.
    pub now: i64,
    /// The outbox message for an ended device (its ID given), if one is wanted.
    pub notice: DeviceNotice,
}

/// What an ended device's notice is made by.
pub type DeviceNotice = std::sync::Arc<dyn Fn(&str) -> Option<crate::NewMessage> + Send + Sync>;

/// Which of a user's devices end.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Which<'a> {
    /// These.
    These(&'a [String]),
    /// All but this one (or all).
    AllBut(Option<&'a str>),
}

/// Deletes the devices `which` names (their tokens go with them: the foreign keys
/// cascade) and does what `ending` says for each; returns the IDs deleted.
pub(crate) async fn end_devices(
    tx: &mut sqlx::AnyConnection,
    user_id: &str,
    which: Which<'_>,
    ending: Option<&Ending>,
) -> Result<Vec<String>, sqlx::Error> {
    let mut ended: Vec<String> = Vec::new();
    match which {
        Which::These(ids) => {
            for device_id in ids {
                let row = sqlx::query(
                    "DELETE FROM devices WHERE user_id = $1 AND device_id = $2 RETURNING device_id",
                )
                .bind(user_id)
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(r) = row {
                    ended.push(r.try_get("device_id")?);
                }
            }
        }
        Which::AllBut(keep) => {
            let rows = sqlx::query(
                "DELETE FROM devices WHERE user_id = $1 AND device_id <> $2 RETURNING device_id",
            )
            .bind(user_id)
            .bind(keep.unwrap_or(""))
            .fetch_all(&mut *tx)
            .await?;
            for r in &rows {
                ended.push(r.try_get("device_id")?);
            }
        }
    }
    if let Some(ending) = ending {
        for device_id in &ended {
            sqlx::query(
                "INSERT INTO ended_devices (device_key, ended_at) VALUES ($1, $2)
                 ON CONFLICT (device_key) DO UPDATE SET ended_at = excluded.ended_at",
            )
            .bind(format!("{user_id} {device_id}"))
            .bind(ending.now)
            .execute(&mut *tx)
            .await?;
            if let Some(message) = (ending.notice)(device_id) {
                crate::outbox::insert_message(tx, &message, ending.now).await?;
            }
        }
    }
    Ok(ended)
}

/// What claiming a user at the homeserver found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeserverClaim {
    /// Vouch had never asked for it.
    Fresh,
    /// Vouch had asked for it for a registration that ended without an account: it is
    /// this registration's now.
    TakenOver,
    /// Another registration of Vouch's is asking for it right now.
    UnderWay,
}

/// How long after a refresh token was spent it may be presented again for a pair whose
/// answer was lost (with `retry`, the OAuth 2.0 grant).
pub const REFRESH_RETRY_MS: i64 = 60_000;

/// What presenting a refresh token did.
#[derive(Debug, Clone)]
pub enum Refreshed {
    /// A new pair was issued on the session's device.
    Done(RefreshedSession),
    /// The token was spent before: it was copied, and its device has been logged out.
    Reused(RefreshedSession),
    /// No such token.
    Unknown,
}

/// The outcome of spending a refresh token.
#[derive(Debug, Clone)]
pub struct RefreshedSession {
    /// The user.
    pub user_id: String,
    /// The device the new tokens belong to.
    pub device_id: String,
}

/// What the group-committed fast path of a refresh found.
enum Fresh {
    /// Rotated.
    Done(RefreshedSession),
    /// Spent already: the slower path decides (a retry, or a replay that ends the device).
    Spent,
    /// No such token.
    Unknown,
}

/// Spends the refresh token `$2` at `$1` for the successor `$3`, if unspent: its owner.
const REFRESH_SPEND: &str = "UPDATE refresh_tokens SET used_at = $1, successor_hash = $3
     WHERE token_hash = $2 AND used_at IS NULL
     RETURNING user_id, device_id";

/// Whether the refresh token `$1` exists.
const REFRESH_KNOWN: &str = "SELECT 1 AS one FROM refresh_tokens WHERE token_hash = $1";

/// Ends the access tokens issued with the refresh token `$1`.
const REFRESH_ACCESS_GONE: &str = "DELETE FROM access_tokens WHERE refresh_token_hash = $1";

/// [`REFRESH_SPEND`]'s values.
fn spend_params<'a>(old_refresh_hash: &'a str, next: &'a NewLogin, now: i64) -> [Param<'a>; 3] {
    [
        Param::int(now),
        Param::text(old_refresh_hash),
        Param::Text(next.refresh_token_hash.as_deref()),
    ]
}

/// The refreshed pair `next` on the session's device (never taking the device over: the
/// spent token must stay, to be recognised if presented again).
fn next_on(session: &RefreshedSession, next: &NewLogin) -> NewLogin {
    NewLogin {
        device_id: session.device_id.clone(),
        oauth_client_id: None,
        oauth_scope: None,
        ..next.clone()
    }
}

impl Db {
    /// Resolves an access token hash to its user and device. Tokens of deactivated accounts
    /// do not exist (deactivation deletes them).
    pub async fn access_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<AccessTokenInfo>, StorageError> {
        let row = sqlx::query(
            "SELECT t.user_id, t.device_id, t.expires_at, u.is_guest, u.is_admin, d.oauth_scope
             FROM access_tokens t JOIN users u ON u.user_id = t.user_id
             JOIN devices d ON d.user_id = t.user_id AND d.device_id = t.device_id
             WHERE t.token_hash = $1 AND u.deactivated_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(AccessTokenInfo {
            user_id: row.try_get("user_id")?,
            device_id: row.try_get("device_id")?,
            expires_at: row.try_get("expires_at")?,
            is_guest: flag(&row, "is_guest")?,
            is_admin: flag(&row, "is_admin")?,
            oauth_scope: row.try_get("oauth_scope")?,
        }))
    }

    /// Spends a refresh token and issues the next pair on the same device. The old refresh
    /// token and the access tokens issued with it stop working. A spent token presented
    /// again was copied, so the device's session ends (its device and every token go), for
    /// the thief and the owner alike; with `retry`, unless it was spent less than
    /// [`REFRESH_RETRY_MS`] ago and the pair it bought has not been refreshed itself: then
    /// the answer was lost on its way, and that pair is replaced by `next` (the OAuth 2.0
    /// rule: "the client is able to retry the refresh request in the case that the response
    /// to the request is lost"). The replaced pair's refresh token counts as spent, so if
    /// the retry was a thief's, the owner's next refresh ends the session.
    pub async fn refresh(
        &self,
        old_refresh_hash: &str,
        next: &NewLogin,
        now: i64,
        ending: Option<&Ending>,
        retry: bool,
    ) -> Result<Refreshed, StorageError> {
        // On SQLite the common case (a fresh token) is committed with the refreshes that
        // arrive meanwhile; anything else takes the path below, in its own transaction.
        if let Some(group) = &self.group {
            let (old, pair) = (old_refresh_hash.to_owned(), next.clone());
            let fresh = group
                .write_direct(move |conn| Ok(Self::refresh_fresh_direct(conn, &old, &pair, now)?))
                .await?;
            match fresh {
                Fresh::Done(session) => return Ok(Refreshed::Done(session)),
                // Unknown tokens never take the writer's turn a second time.
                Fresh::Unknown => return Ok(Refreshed::Unknown),
                Fresh::Spent => {}
            }
        }
        let mut tx = self.begin_write().await?;
        if self.backend == crate::Backend::Postgres {
            // Requests presenting one token queue here, not in a lock cycle further on.
            sqlx::query("SELECT 1 FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE")
                .bind(old_refresh_hash)
                .fetch_optional(&mut *tx)
                .await?;
        }
        let next_hash = next.refresh_token_hash.as_deref();
        match Self::refresh_fresh(&mut tx, old_refresh_hash, next, now).await? {
            Fresh::Done(session) => {
                tx.commit().await?;
                return Ok(Refreshed::Done(session));
            }
            Fresh::Unknown => return Ok(Refreshed::Unknown),
            Fresh::Spent => {}
        }
        let spent = sqlx::query(
            "SELECT user_id, device_id, successor_hash, used_at FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(old_refresh_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(r) = spent else {
            return Ok(Refreshed::Unknown);
        };
        let user_id: String = r.try_get("user_id")?;
        let device_id: String = r.try_get("device_id")?;
        let successor: Option<String> = r.try_get("successor_hash")?;
        let spent_at: Option<i64> = r.try_get("used_at")?;
        let recent = spent_at.is_some_and(|at| at > now - REFRESH_RETRY_MS);
        if let (true, true, Some(successor)) = (retry, recent, successor) {
            // The successor is spent here (a row lock: a request refreshing with it
            // at the same moment waits, then finds it spent), then replaced, only
            // if it was still unspent and still this token's.
            let taken = sqlx::query(
                "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
            )
            .bind(now)
            .bind(&successor)
            .execute(&mut *tx)
            .await?;
            let replaced = if taken.rows_affected() == 1 {
                sqlx::query(
                    "UPDATE refresh_tokens SET successor_hash = $1
                     WHERE token_hash = $2 AND successor_hash = $3",
                )
                .bind(next_hash)
                .bind(old_refresh_hash)
                .bind(&successor)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1
            } else {
                false
            };
            if replaced {
                sqlx::query("DELETE FROM access_tokens WHERE refresh_token_hash = $1")
                    .bind(&successor)
                    .execute(&mut *tx)
                    .await?;
                let session = RefreshedSession { user_id, device_id };
                Self::insert_next(&mut tx, &session, next, now).await?;
                tx.commit().await?;
                return Ok(Refreshed::Done(session));
            }
        }
        end_devices(
            &mut tx,
            &user_id,
            Which::These(std::slice::from_ref(&device_id)),
            ending,
        )
        .await?;
        tx.commit().await?;
        tracing::warn!(
            user_id,
            device_id,
            "a spent refresh token was presented again; the device was logged out"
        );
        Ok(Refreshed::Reused(RefreshedSession { user_id, device_id }))
    }

    /// Spends `old_refresh_hash` if it is unspent and writes the next pair; a spent token is
    /// left to the caller's slower path, which decides what that means.
    async fn refresh_fresh(
        conn: &mut sqlx::AnyConnection,
        old_refresh_hash: &str,
        next: &NewLogin,
        now: i64,
    ) -> Result<Fresh, sqlx::Error> {
        let row = bind_sqlx(
            sqlx::query(REFRESH_SPEND),
            &spend_params(old_refresh_hash, next, now),
        )
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else {
            let known = sqlx::query(REFRESH_KNOWN)
                .bind(old_refresh_hash)
                .fetch_optional(&mut *conn)
                .await?;
            return Ok(if known.is_some() {
                Fresh::Spent
            } else {
                Fresh::Unknown
            });
        };
        let session = RefreshedSession {
            user_id: row.try_get("user_id")?,
            device_id: row.try_get("device_id")?,
        };
        sqlx::query(REFRESH_ACCESS_GONE)
            .bind(old_refresh_hash)
            .execute(&mut *conn)
            .await?;
        Self::insert_next(conn, &session, next, now).await?;
        Ok(Fresh::Done(session))
    }

    /// [`Self::refresh_fresh`] on the SQLite group writer's own connection.
    fn refresh_fresh_direct(
        conn: &rusqlite::Connection,
        old_refresh_hash: &str,
        next: &NewLogin,
        now: i64,
    ) -> rusqlite::Result<Fresh> {
        let spent = lite::first(
            conn,
            REFRESH_SPEND,
            &spend_params(old_refresh_hash, next, now),
            |row| {
                Ok(RefreshedSession {
                    user_id: row.get("user_id")?,
                    device_id: row.get("device_id")?,
                })
            },
        )?;
        let old = [Param::text(old_refresh_hash)];
        let Some(session) = spent else {
            let known = lite::first(conn, REFRESH_KNOWN, &old, |_| Ok(()))?;
            return Ok(if known.is_some() {
                Fresh::Spent
            } else {
                Fresh::Unknown
            });
        };
        lite::execute(conn, REFRESH_ACCESS_GONE, &old)?;
        Self::insert_login_direct(conn, &session.user_id, &next_on(&session, next), now)?;
        Ok(Fresh::Done(session))
    }

    /// Writes a refreshed pair on the session's device (never taking the device over: the
    /// spent token must stay, to be recognised if presented again).
    async fn insert_next(
        tx: &mut sqlx::AnyConnection,
        session: &RefreshedSession,
        next: &NewLogin,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        Self::insert_login(tx, &session.user_id, &next_on(session, next), now).await
    }

    /// The user's devices, oldest first.
    pub async fn devices(&self, user_id: &str) -> Result<Vec<Device>, StorageError> {
        let rows = sqlx::query(
            "SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM devices
             WHERE user_id = $1 ORDER BY created_at, device_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(Device::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// One device of the user.
    pub async fn device(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Option<Device>, StorageError> {
        let row = sqlx::query(
            "SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM devices
             WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(Device::from_row).transpose()?)
    }

    /// Renames a device; `false` if the user has no such device.
    pub async fn rename_device(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<bool, StorageError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3",
        )
        .bind(display_name)
        .bind(user_id)
        .bind(device_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes devices and every token issued to them.
    pub async fn delete_devices(
        &self,
        user_id: &str,
        device_ids: &[String],
        ending: Option<&Ending>,
    ) -> Result<Vec<String>, StorageError> {
        if let Some(group) = &self.group {
            // SQLite: committed with the writes that arrive meanwhile (`group.rs`).
            let (user_id, device_ids, ending) =
                (user_id.to_owned(), device_ids.to_vec(), ending.cloned());
            return group
                .write(move |conn| {
                    let (user_id, device_ids, ending) =
                        (user_id.clone(), device_ids.clone(), ending.clone());
                    Box::pin(async move {
                        end_devices(conn, &user_id, Which::These(&device_ids), ending.as_ref())
                            .await
                    })
                })
                .await;
        }
        let mut tx = self.begin_write().await?;
        let ended = end_devices(&mut tx, user_id, Which::These(device_ids), ending).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Deletes every device and token of the user (`/logout/all`).
    pub async fn delete_all_devices(
        &self,
        user_id: &str,
        ending: Option<&Ending>,
    ) -> Result<Vec<String>, StorageError> {
        if let Some(group) = &self.group {
            let (user_id, ending) = (user_id.to_owned(), ending.cloned());
            return group
                .write(move |conn| {
                    let (user_id, ending) = (user_id.clone(), ending.clone());
                    Box::pin(async move {
                        end_devices(conn, &user_id, Which::AllBut(None), ending.as_ref()).await
                    })
                })
                .await;
        }
        let mut tx = self.begin_write().await?;
        let ended = end_devices(&mut tx, user_id, Which::AllBut(None), ending).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Records that `device_ids` of `user_id` were signed out at `now`.
    pub async fn note_ended_devices(
        &self,
        user_id: &str,
        device_ids: &[String],
        now: i64,
    ) -> Result<(), StorageError> {
        if device_ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for device_id in device_ids {
            sqlx::query(
                "INSERT INTO ended_devices (device_key, ended_at) VALUES ($1, $2)
                 ON CONFLICT (device_key) DO UPDATE SET ended_at = excluded.ended_at",
            )
            .bind(format!("{user_id} {device_id}"))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// When device `device_id` of `user_id` was signed out, if that was after `since`.
    pub async fn device_ended_after(
        &self,
        user_id: &str,
        device_id: &str,
        since: i64,
    ) -> Result<Option<i64>, StorageError> {
        let row = sqlx::query(
            "SELECT ended_at FROM ended_devices WHERE device_key = $1 AND ended_at > $2",
        )
        .bind(format!("{user_id} {device_id}"))
        .bind(since)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("ended_at")).transpose()?)
    }

    /// Claims user `localpart` at the homeserver for a registration about to ask for it
    /// (before it asks, so that an answer lost to a timeout or a dropped request still
    /// leaves the name Vouch's). One conditional statement each way, so of two
    /// registrations racing for one name, one gets the claim and the other
    /// [`HomeserverClaim::UnderWay`]: a claim is taken over only once it is settled or older
    /// than `settled_after_ms`.
    pub async fn claim_homeserver_user(
        &self,
        localpart: &str,
        now: i64,
        settled_after_ms: i64,
    ) -> Result<HomeserverClaim, StorageError> {
        let _turn = self.write_turn().await;
        let fresh = sqlx::query(
            "INSERT INTO homeserver_users (localpart, created_at) VALUES ($1, $2)
             ON CONFLICT (localpart) DO NOTHING",
        )
        .bind(localpart)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if fresh.rows_affected() == 1 {
            return Ok(HomeserverClaim::Fresh);
        }
        let taken = sqlx::query(
            "UPDATE homeserver_users SET created_at = $1 WHERE localpart = $2 AND created_at <= $3",
        )
        .bind(now)
        .bind(localpart)
        .bind(now - settled_after_ms)
        .execute(&self.pool)
        .await?;
        Ok(if taken.rows_affected() == 1 {
            HomeserverClaim::TakenOver
        } else {
            HomeserverClaim::UnderWay
        })
    }

    /// Marks Vouch's claim on `localpart` as settled: the registration that made it failed
    /// here, so the next one may take the user at once.
    pub async fn settle_homeserver_user(&self, localpart: &str) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        // The earliest time there is: older than any window.
        sqlx::query("UPDATE homeserver_users SET created_at = $1 WHERE localpart = $2")
            .bind(i64::MIN)
            .bind(localpart)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets a claim that turned out not to be Vouch's (the homeserver refused, or had
    /// the user from elsewhere).
    pub async fn forget_homeserver_user(&self, localpart: &str) -> Result<(), StorageError> {
        let _turn = self.write_turn().await;
        sqlx::query("DELETE FROM homeserver_users WHERE localpart = $1")
            .bind(localpart)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether the homeserver created user `localpart` at Vouch's request.
    pub async fn is_homeserver_user(&self, localpart: &str) -> Result<bool, StorageError> {
        Ok(
            sqlx::query("SELECT created_at FROM homeserver_users WHERE localpart = $1")
                .bind(localpart)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }
}
