//! Reading a Synapse database (SQLite or PostgreSQL) for `vouch import synapse`: users,
//! profiles, `user_threepids`, devices and their access tokens, page by page.

use sqlx::{AnyPool, Row};
use vouch_core::secrets::token_hash;
use vouch_core::threepid::ThirdPartyId;

use crate::StorageError;
use crate::accounts::{ImportedDevice, ImportedToken, ImportedUser};

/// An open Synapse database.
pub struct SynapseSource {
    pool: AnyPool,
}

impl SynapseSource {
    /// Opens `from`: a path to Synapse's SQLite file (read-only) or a `postgres://` URL.
    pub async fn open(from: &str) -> Result<Self, StorageError> {
        sqlx::any::install_default_drivers();
        let url = if from.starts_with("postgres://")
            || from.starts_with("postgresql://")
            || from.starts_with("sqlite:")
        {
            from.to_owned()
        } else {
            if !std::path::Path::new(from).exists() {
                return Err(StorageError::Setup(format!("{from} does not exist")));
            }
            format!("sqlite://{from}?mode=ro")
        };
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await?;
        Ok(Self { pool })
    }

    /// The server names in the users' IDs, and how many users there are.
    pub async fn server_names(&self) -> Result<(Vec<String>, i64), StorageError> {
        let rows = sqlx::query("SELECT name FROM users")
            .fetch_all(&self.pool)
            .await?;
        let mut names: Vec<String> = Vec::new();
        for r in &rows {
            let name: String = r.try_get("name")?;
            let server = name
                .split_once(':')
                .map(|(_, s)| s.to_owned())
                .unwrap_or_default();
            if !names.contains(&server) {
                names.push(server);
            }
        }
        Ok((names, i64::try_from(rows.len()).unwrap_or(i64::MAX)))
    }

    /// The user's visible devices (Synapse keeps cross-signing keys as hidden ones) and the
    /// access tokens issued to them, hashed as Vouch keeps them. Tokens that act for another
    /// user (admin puppeting) stay behind.
    async fn devices(&self, user_id: &str) -> Result<Vec<ImportedDevice>, StorageError> {
        let rows = sqlx::query(
            "SELECT device_id, display_name, ip, CAST(last_seen AS BIGINT) AS last_seen
             FROM devices WHERE user_id = $1 AND hidden IS NOT TRUE ORDER BY device_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        let mut devices = Vec::with_capacity(rows.len());
        for r in &rows {
            devices.push(ImportedDevice {
                device_id: r.try_get("device_id")?,
                display_name: r.try_get("display_name")?,
                last_seen_ip: r.try_get("ip")?,
                last_seen_ts: r.try_get("last_seen")?,
                tokens: Vec::new(),
            });
        }
        let tokens = sqlx::query(
            "SELECT t.device_id, t.token, CAST(t.valid_until_ms AS BIGINT) AS valid_until_ms,
                    CASE WHEN r.next_token_id IS NULL THEN r.token END AS refresh
             FROM access_tokens t LEFT JOIN refresh_tokens r ON r.id = t.refresh_token_id
             WHERE t.user_id = $1 AND t.device_id IS NOT NULL AND t.puppets_user_id IS NULL",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        for t in &tokens {
            let device_id: String = t.try_get("device_id")?;
            let Some(device) = devices.iter_mut().find(|d| d.device_id == device_id) else {
                continue;
            };
            let token: String = t.try_get("token")?;
            let refresh: Option<String> = t.try_get("refresh")?;
            device.tokens.push(ImportedToken {
                access_token_hash: token_hash(&token),
                expires_at: t.try_get("valid_until_ms")?,
                refresh_token_hash: refresh.as_deref().map(token_hash),
            });
        }
        Ok(devices)
    }

    /// Up to `limit` users whose ID sorts after `after`, with profiles and addresses.
    /// Addresses are canonicalised as Vouch stores them; ones that do not parse are left out.
    pub async fn users_after(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ImportedUser>, StorageError> {
        let rows = sqlx::query(
            "SELECT u.name, u.password_hash, CAST(u.creation_ts AS BIGINT) AS creation_ts,
                    CAST(COALESCE(u.admin, 0) AS BIGINT) AS admin, CAST(COALESCE(u.is_guest, 0) AS BIGINT) AS is_guest,
                    CAST(COALESCE(u.deactivated, 0) AS BIGINT) AS deactivated, p.displayname, p.avatar_url
             FROM users u LEFT JOIN profiles p ON p.full_user_id = u.name
             WHERE u.name > $1 ORDER BY u.name LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut users = Vec::with_capacity(rows.len());
        for r in &rows {
            let user_id: String = r.try_get("name")?;
            let created_at = r
                .try_get::<Option<i64>, _>("creation_ts")?
                .unwrap_or(0)
                .saturating_mul(1000);
            let deactivated = r.try_get::<i64, _>("deactivated")? != 0;
            let threepid_rows = sqlx::query(
                "SELECT medium, address, CAST(validated_at AS BIGINT) AS validated_at, CAST(added_at AS BIGINT) AS added_at
                 FROM user_threepids WHERE user_id = $1 ORDER BY added_at",
            )
            .bind(&user_id)
            .fetch_all(&self.pool)
            .await?;
            let mut threepids = Vec::new();
            for t in &threepid_rows {
                let medium: String = t.try_get("medium")?;
                let address: String = t.try_get("address")?;
                if let Ok(id) = ThirdPartyId::parse(&medium, &address) {
                    threepids.push((
                        id.medium().as_str().to_owned(),
                        id.address().to_owned(),
                        t.try_get("validated_at")?,
                        t.try_get("added_at")?,
                    ));
                }
            }
            let devices = if deactivated {
                Vec::new()
            } else {
                self.devices(&user_id).await?
            };
            users.push(ImportedUser {
                devices,
                localpart: user_id
                    .trim_start_matches('@')
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                password_hash: if deactivated {
                    None
                } else {
                    r.try_get("password_hash")?
                },
                created_at,
                is_admin: r.try_get::<i64, _>("admin")? != 0,
                is_guest: r.try_get::<i64, _>("is_guest")? != 0,
                deactivated_at: deactivated.then_some(created_at),
                displayname: r.try_get("displayname")?,
                avatar_url: r.try_get("avatar_url")?,
                // A deactivated account's addresses were removed by Synapse too.
                threepids: if deactivated { Vec::new() } else { threepids },
                user_id,
            });
        }
        Ok(users)
    }
}
