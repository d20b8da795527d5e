//! Who a password proves someone is: the login's rules (per-identifier and per-account
//! budgets, one hash for unknown users too, deactivation told only to the right password,
//! hashes upgraded on the way), for `/login` and every page that asks for a password.

use ruma::api::error::ErrorKind;
use vouch_core::localpart::localpart_of;
use vouch_core::threepid::{Msisdn, ThirdPartyId};

use super::Accounts;
use crate::error::{ApiError, ApiResult};

/// Said for every wrong-credential case, so that answers do not tell which part was wrong.
pub const BAD_CREDENTIALS: &str = "Invalid username or password";

/// Who a login names, before the password is checked.
#[derive(Debug, Clone)]
pub enum LoginId {
    /// A localpart or user ID.
    User(String),
    /// `m.id.phone`: (country, number as typed).
    Phone(String, String),
    /// A 3PID: (medium, address as sent).
    Threepid(&'static str, String),
}

/// An account a password was checked against.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The user ID.
    pub user_id: String,
    /// The password hash that matched (a token is issued only while it is still the
    /// account's).
    pub hash: String,
}

impl Accounts<'_> {
    /// Checks `password` for the account `named` names. Every failure is 403 with the same
    /// words, except a spent budget (429) and a deactivated account (told only to the
    /// right password).
    pub async fn check_login(&self, named: LoginId, password: &str) -> ApiResult<Checked> {
        let s = self.s;
        // The per-account limits are keyed on what the login names: the user ID, or the
        // canonical third-party identifier whether or not anyone owns it. Draining the bucket
        // of an address then says nothing about the account behind it.
        let (key, user_id) = match named {
            LoginId::User(name) => {
                let user_id = localpart_of(&name, s.server_name())
                    .map(|local| format!("@{}:{}", local.to_lowercase(), s.server_name()));
                let key = user_id
                    .clone()
                    .unwrap_or_else(|| format!("user:{}", name.to_lowercase()));
                (key, user_id)
            }
            LoginId::Threepid(medium, address) => {
                // Addresses are stored canonical; an unknown or malformed one is a 403 like a
                // bad password (the spec: an unknown 3PID is 403).
                match ThirdPartyId::parse(medium, &address) {
                    Ok(id) => (
                        format!("{}:{}", id.medium(), id.address()),
                        s.db.threepid_owner(id.medium().as_str(), id.address())
                            .await?,
                    ),
                    Err(_) => (format!("{medium}:{}", address.to_lowercase()), None),
                }
            }
            LoginId::Phone(country, number) => match Msisdn::parse(&country, &number) {
                Ok(m) => (
                    format!("msisdn:{}", m.as_str()),
                    s.db.threepid_owner("msisdn", m.as_str()).await?,
                ),
                Err(_) => (format!("msisdn:{country}:{number}"), None),
            },
        };
        s.limits.login_per_account.check(&key)?;
        s.limits.failed_login_per_account.check(&key)?;
        // No password longer than the policy allows was ever set: refuse it before it waits
        // for a hashing slot (whoever is named, so the answer says nothing about the account).
        if s.policy.too_long(password) {
            return Err(ApiError::forbidden(BAD_CREDENTIALS));
        }
        let user = match &user_id {
            Some(id) => s.db.user(id).await?,
            None => None,
        };
        // The account's own budget, whichever identifier names it: guesses through its user
        // ID and each of its addresses share it. Spent silently: when it is used up the
        // attempt fails like a wrong password (after a hash, for the same timing), so no
        // identifier's answers tell which account another identifier belongs to.
        let account_spent = user_id.as_ref().is_some_and(|id| {
            s.limits
                .failed_login_per_account
                .check(&format!("account:{id}"))
                .is_err()
        });
        let stored = user
            .as_ref()
            .filter(|_| !account_spent)
            .and_then(|u| u.password_hash.clone());
        // An unknown user, a user on another server or an unknown 3PID costs one hash too, like
        // a real check, and gets the same answer as a wrong password.
        if !s
            .verify_password(password.to_owned(), stored.clone())
            .await?
        {
            return Err(ApiError::forbidden(BAD_CREDENTIALS));
        }
        let (Some(user_id), Some(user), Some(mut hash)) = (user_id, user, stored) else {
            return Err(ApiError::forbidden(BAD_CREDENTIALS));
        };
        // Only someone who knows the password learns that the account is deactivated.
        if user.deactivated_at.is_some() {
            return Err(ApiError::new(
                ErrorKind::UserDeactivated,
                "This account has been deactivated",
            ));
        }
        if s.hasher.needs_rehash(&hash) {
            // A stronger hash for next time; a failure here must not fail the login.
            match s.hash_password(password.to_owned()).await {
                Ok(new) => match s.db.upgrade_password_hash(&user_id, &hash, &new).await {
                    Ok(true) => hash = new,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(user_id, error = %e, "could not store the upgraded password hash");
                    }
                },
                Err(e) => tracing::warn!(user_id, error = ?e, "could not rehash the password"),
            }
        }
        Ok(Checked { user_id, hash })
    }
}
