//! `vouch admin …`: accounts, passwords, addresses and registration tokens, against the
//! configured database.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use vouch_api::accounts::Logout;
use vouch_config::Config;
use vouch_core::secrets::random_string;
use vouch_core::threepid::ThirdPartyId;
use vouch_core::{Clock, OsSecretSource, SystemClock};
use vouch_storage::Db;

use crate::cli::{AdminCommand, ConfigArg, TokenCommand};
use crate::commands::{load_config, open_database};

/// The services, for commands that hash passwords or render users without serving.
pub(crate) async fn offline_services(
    config: &Config,
    db: Db,
) -> anyhow::Result<Arc<vouch_api::Services>> {
    let key = vouch_api::signing_key::SigningKey::load(&db, &OsSecretSource, SystemClock.now_ms())
        .await
        .map_err(|e| anyhow::anyhow!("signing key: {e}"))?;
    let services = vouch_api::Services::new(
        config.clone(),
        db,
        Arc::new(SystemClock),
        Arc::new(OsSecretSource),
        key,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Arc::new(services))
}

/// `alice` or `@alice:server` as a full user ID.
pub(crate) fn full_user_id(config: &Config, user: &str) -> String {
    if user.starts_with('@') {
        user.to_owned()
    } else {
        format!("@{}:{}", user.to_lowercase(), config.server_name)
    }
}

pub(crate) async fn existing_user(db: &Db, config: &Config, user: &str) -> anyhow::Result<String> {
    let user_id = full_user_id(config, user);
    db.user(&user_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no account {user_id}"))?;
    Ok(user_id)
}

/// An address in its canonical form.
pub(crate) fn canonical(medium: &str, address: &str) -> anyhow::Result<String> {
    Ok(vouch_core::threepid::ThirdPartyId::parse(medium, address)?
        .address()
        .to_owned())
}

/// The password from the flag, the file, or standard input (one line); never echoed or logged.
pub(crate) fn read_password(
    password: Option<String>,
    file: Option<PathBuf>,
) -> anyhow::Result<String> {
    if let Some(p) = password {
        return Ok(p);
    }
    if let Some(f) = file {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        return Ok(text.trim_end_matches(['\r', '\n']).to_owned());
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let p = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(
        !p.is_empty(),
        "no password given (use --password, --password-file or standard input)"
    );
    Ok(p)
}

pub(crate) async fn admin(arg: &ConfigArg, command: AdminCommand) -> anyhow::Result<()> {
    let config = load_config(arg)?;
    let db = open_database(&config, 2).await?;
    let now = SystemClock.now_ms();
    match command {
        AdminCommand::CreateUser {
            user,
            password,
            password_file,
            admin,
            email,
        } => {
            let services = offline_services(&config, db.clone()).await?;
            let user_id = full_user_id(&config, &user);
            let localpart = vouch_core::localpart::localpart_of(&user_id, &config.server_name)
                .unwrap_or_default()
                .to_owned();
            let parsed = vouch_core::localpart::Localpart::parse(&localpart, &config.server_name)?;
            anyhow::ensure!(parsed.as_str() == localpart, "user IDs must be lower-case");
            let password = read_password(password, password_file)?;
            let threepids = email
                .iter()
                .map(|e| canonical("email", e).map(|a| ("email".to_owned(), a, now)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            services
                .accounts()
                .create_user(vouch_api::accounts::NewUser {
                    localpart: Some(parsed),
                    password: Some(password),
                    admin,
                    threepids,
                    ..vouch_api::accounts::NewUser::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("cannot create {user_id}: {e}"))?;
            println!(
                "created {user_id}{}",
                if admin { " (server admin)" } else { "" }
            );
        }
        AdminCommand::SetPassword {
            user,
            password,
            password_file,
            keep_devices,
        } => {
            let services = offline_services(&config, db.clone()).await?;
            let user_id = existing_user(&db, &config, &user).await?;
            let password = read_password(password, password_file)?;
            let logout = if keep_devices {
                Logout::Nobody
            } else {
                Logout::Everyone
            };
            services
                .accounts()
                .set_password(&user_id, password, logout)
                .await?;
            println!(
                "password of {user_id} changed{}",
                if keep_devices {
                    ""
                } else {
                    "; all devices logged out"
                }
            );
        }
        AdminCommand::AddThreepid {
            user,
            medium,
            address,
        } => {
            let services = offline_services(&config, db.clone()).await?;
            let user_id = existing_user(&db, &config, &user).await?;
            let threepid = ThirdPartyId::parse(&medium, &address)?;
            let address = threepid.address();
            if let Some(owner) = db.threepid_owner(&medium, address).await? {
                anyhow::bail!("{address} already belongs to {owner}");
            }
            services
                .accounts()
                .add_threepid(&user_id, &threepid)
                .await?;
            println!("added {medium} {address} to {user_id}");
        }
        AdminCommand::RemoveThreepid {
            user,
            medium,
            address,
        } => {
            let services = offline_services(&config, db.clone()).await?;
            let user_id = existing_user(&db, &config, &user).await?;
            let address = canonical(&medium, &address)?;
            anyhow::ensure!(
                services
                    .accounts()
                    .remove_threepid(&user_id, medium.parse()?, &address)
                    .await?,
                "{user_id} has no {medium} {address}"
            );
            println!("removed {medium} {address} from {user_id}");
        }
        AdminCommand::ShowUser { who } => {
            let services = offline_services(&config, db.clone()).await?;
            let user_id = if who.starts_with('@') || !(who.contains('@') || who.starts_with('+')) {
                full_user_id(&config, &who)
            } else {
                let medium = if who.contains('@') { "email" } else { "msisdn" };
                db.threepid_owner(medium, &canonical(medium, &who)?)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no account has {who}"))?
            };
            let user = db
                .user(&user_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no account {user_id}"))?;
            let json = vouch_api::admin::users::user_json(&services, &user)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        AdminCommand::RegistrationToken(TokenCommand::Create {
            token,
            uses,
            expires_in,
        }) => {
            let token = token.unwrap_or_else(|| {
                random_string(
                    &OsSecretSource,
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                    16,
                )
            });
            if token.is_empty()
                || token.len() > 64
                || !token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
            {
                anyhow::bail!("a registration token is 1 to 64 characters of [A-Za-z0-9._~-]");
            }
            let expiry = expires_in.map(|d| now.saturating_add(vouch_core::clock::duration_ms(d)));
            if !db
                .create_registration_token(&token, uses.map(i64::from), expiry, now)
                .await?
            {
                anyhow::bail!("a token '{token}' exists already");
            }
            println!("{token}");
        }
        AdminCommand::RegistrationToken(TokenCommand::List) => {
            println!("{:<24} {:>8} {:>10}  expires", "token", "used", "allowed");
            for t in db.registration_tokens().await? {
                println!(
                    "{:<24} {:>8} {:>10}  {}",
                    t.token,
                    t.completed,
                    t.uses_allowed.map_or("unlimited".into(), |n| n.to_string()),
                    t.expiry_time
                        .map_or("never".into(), |ms| format!("{ms} (ms since epoch)")),
                );
            }
        }
        AdminCommand::RegistrationToken(TokenCommand::Delete { token }) => {
            if !db.delete_registration_token(&token).await? {
                anyhow::bail!("no token '{token}'");
            }
            println!("deleted {token}");
        }
    }
    db.close().await;
    Ok(())
}
