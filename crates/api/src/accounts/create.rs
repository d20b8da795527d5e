//! How an account comes to be, whichever door it comes through: registration, guests, the
//! admin API, the command line, an import from Synapse.

use vouch_core::localpart::Localpart;
use vouch_homeserver::Call;
use vouch_storage::{
    CreateAccountError, HomeserverClaim, ImportOutcome, ImportedUser, NewAccount, NewLogin,
};

use super::{AccountError, Accounts};

/// How long after Vouch asked the homeserver for a user a registration of the same name
/// counts as an earlier, finished one (whose leftovers may be cleared) rather than one
/// still under way.
const SETTLED_AFTER_MS: i64 = 60_000;

/// An account to create.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    /// Its localpart (parsed: lower-case, the grammar, the length limit).
    pub localpart: Option<Localpart>,
    /// The password in clear, held to the policy and hashed here; none for guests and
    /// accounts that only log in by other means.
    pub password: Option<String>,
    /// Server admin.
    pub admin: bool,
    /// Guest.
    pub guest: bool,
    /// Display name; the localpart when `None` (except for guests, who get none).
    pub displayname: Option<String>,
    /// Verified addresses: (medium, canonical address, validated_at).
    pub threepids: Vec<(String, String, i64)>,
    /// A hash of the password made earlier, used when `password` is `None` (the sign-up
    /// page hashes the password, policy-checked, before the addresses are verified).
    pub password_hash: Option<String>,
    /// The first device and its tokens.
    pub login: Option<NewLogin>,
    /// The registration token spent on it.
    pub registration_token: Option<String>,
    /// The UIA session spent on it.
    pub uia_session: Option<String>,
    /// The validation sessions spent on it.
    pub validations: Vec<String>,
    /// The language of its pages and mails (the sign-up page's).
    pub language: Option<String>,
}

impl Accounts<'_> {
    /// Creates an account and everything that comes with it in one transaction, after the
    /// password policy; a missing localpart gets a fresh numeric one. Returns the user ID.
    pub async fn create_user(&self, new: NewUser) -> Result<String, AccountError> {
        if let Some(password) = &new.password {
            self.s
                .policy
                .check(password)
                .map_err(|weak| AccountError::WeakPassword(weak.to_string()))?;
        }
        let localpart = match new.localpart {
            Some(l) => l,
            None => crate::client::register::generated_localpart(self.s).await?,
        };
        let password_hash = match new.password {
            Some(p) => Some(self.s.hash_password(p).await?),
            None => new.password_hash,
        };
        let user_id = localpart.user_id(self.s.server_name());
        let displayname = match (new.displayname, new.guest) {
            (Some(d), _) => Some(d),
            (None, false) => Some(localpart.as_str().to_owned()),
            (None, true) => None,
        };
        // The homeserver has the user and its first device before the account exists here:
        // a homeserver that does not answer leaves nothing half-made (a user it was told of
        // stays unused until someone registers that name again).
        if self.s.homeserver.is_some() && !new.guest {
            let lp = localpart.as_str();
            let claim = self
                .s
                .db
                .claim_homeserver_user(lp, self.s.now(), SETTLED_AFTER_MS)
                .await?;
            // Another registration of the name is asking right now: one of the two wins.
            if claim == HomeserverClaim::UnderWay {
                return Err(AccountError::UserInUse);
            }
            let provisioned = self
                .tell_now(Call::ProvisionUser {
                    localpart: lp.to_owned(),
                    displayname: displayname.clone(),
                    emails: new
                        .threepids
                        .iter()
                        .filter(|(medium, _, _)| medium == "email")
                        .map(|(_, address, _)| address.clone())
                        .collect(),
                })
                .await;
            match provisioned {
                Ok(answer) if answer.created => {}
                // Made there by an earlier registration of Vouch's that ended without an
                // account (failed here, or its answer was lost): this one's now, without
                // what the earlier attempt left on it.
                Ok(_) if claim == HomeserverClaim::TakenOver => {
                    let cleared = self
                        .tell_now(Call::SyncDevices {
                            localpart: lp.to_owned(),
                            devices: Vec::new(),
                        })
                        .await;
                    if let Err(e) = cleared {
                        self.s.db.settle_homeserver_user(lp).await?;
                        return Err(e);
                    }
                }
                // A user the homeserver had from elsewhere (an application service's, made
                // between the availability check and now) is not Vouch's to hand out.
                Ok(_) => {
                    self.s.db.forget_homeserver_user(lp).await?;
                    return Err(AccountError::UserInUse);
                }
                Err(e @ AccountError::HomeserverRefused { .. }) => {
                    if claim == HomeserverClaim::Fresh {
                        self.s.db.forget_homeserver_user(lp).await?;
                    } else {
                        self.s.db.settle_homeserver_user(lp).await?;
                    }
                    return Err(e);
                }
                // Unanswered: the homeserver may still make the user; the claim stays, and
                // this attempt is over.
                Err(e) => {
                    self.s.db.settle_homeserver_user(lp).await?;
                    return Err(e);
                }
            }
            if let Some(login) = &new.login {
                let upserted = self
                    .tell_now(Call::UpsertDevice {
                        localpart: localpart.as_str().to_owned(),
                        device_id: login.device_id.clone(),
                        display_name: login.display_name.clone(),
                    })
                    .await;
                if let Err(e) = upserted {
                    self.s.db.settle_homeserver_user(lp).await?;
                    return Err(e);
                }
            }
        }
        let account = NewAccount {
            user_id: user_id.clone(),
            localpart: localpart.as_str().to_owned(),
            password_hash,
            is_guest: new.guest,
            is_admin: new.admin,
            displayname,
            login: new.login,
            threepids: new.threepids,
            registration_token: new.registration_token,
            uia_session: new.uia_session,
            validations: new.validations,
            language: new.language,
        };
        let created = self
            .s
            .db
            .create_account(&account, self.s.now())
            .await
            .map_err(|e| match e {
                CreateAccountError::UserInUse => AccountError::UserInUse,
                CreateAccountError::ThreepidInUse => AccountError::ThreepidInUse,
                CreateAccountError::TokenUsedUp => AccountError::TokenUsedUp,
                CreateAccountError::SessionSpent => AccountError::SessionSpent,
                CreateAccountError::Storage(e) => AccountError::Other(e.into()),
            });
        if let Err(e) = created {
            // The homeserver's user is left for the next registration of the name, which
            // clears what this one left on it. (A name taken here meanwhile stays taken:
            // registration checks Vouch's accounts first.)
            if self.s.homeserver.is_some() && !new.guest {
                self.s.db.settle_homeserver_user(localpart.as_str()).await?;
            }
            return Err(e);
        }
        tracing::info!(
            user_id,
            guest = new.guest,
            admin = new.admin,
            "account created"
        );
        Ok(user_id)
    }

    /// Writes an account brought over from another server, after checking what it must be
    /// here: a user ID of this server in the historical grammar, a password hash Vouch can
    /// verify within the configured cost ceilings, and a profile of sane size. An existing
    /// account is left exactly as it is (see `Db::import_user`).
    pub async fn import_user(&self, user: &ImportedUser) -> Result<ImportOutcome, AccountError> {
        let refuse = |why: &str| Err(AccountError::Refused(why.to_owned()));
        let expected = format!("@{}:{}", user.localpart, self.s.server_name());
        if user.user_id != expected
            || !vouch_core::localpart::is_historical_localpart(
                &user.localpart,
                self.s.server_name(),
            )
        {
            return refuse("the user ID is not one this server can hold");
        }
        if let Some(hash) = &user.password_hash
            && let Err(e) = self.s.hasher.check_stored(hash)
        {
            return refuse(&format!("password hash: {e}"));
        }
        if user
            .displayname
            .as_ref()
            .is_some_and(|d| d.chars().count() > 256)
        {
            return refuse("the display name is longer than 256 characters");
        }
        if user.avatar_url.as_ref().is_some_and(|a| a.len() > 1000) {
            return refuse("the avatar URL is longer than 1000 bytes");
        }
        self.s
            .db
            .import_user(user)
            .await
            .map_err(|e| AccountError::Other(e.into()))
    }
}
