//! Client-server API handlers, one file per ruma endpoint module.

pub mod add_3pid;
pub mod add_3pid_deprecated;
pub mod bind_3pid;
pub mod change_password;
pub mod check_registration_token_validity;
pub mod deactivate;
pub mod delete_3pid;
pub mod delete_device;
pub mod delete_devices;
pub mod discover_homeserver;
pub mod get_3pids;
pub mod get_avatar_url;
pub mod get_capabilities;
pub mod get_device;
pub mod get_devices;
pub mod get_display_name;
pub mod get_login_types;
pub mod get_profile;
pub mod get_supported_versions;
pub mod get_uiaa_fallback_page;
pub mod get_username_availability;
pub mod login;
pub mod logout;
pub mod logout_all;
pub mod refresh_token;
pub mod register;
pub mod request_3pid_management_token_via_email;
pub mod request_3pid_management_token_via_msisdn;
pub mod request_password_change_token_via_email;
pub mod request_password_change_token_via_msisdn;
pub mod request_registration_token_via_email;
pub mod request_registration_token_via_msisdn;
pub mod set_avatar_url;
pub mod set_display_name;
pub mod submit_token;
pub mod unbind_3pid;
pub mod update_device;
pub mod whoami;

use ruma::{OwnedUserId, UserId};

use crate::error::ApiError;

/// Parses a user ID built by Vouch itself (always valid) into ruma's type.
pub(crate) fn own_user_id(user_id: &str) -> Result<OwnedUserId, ApiError> {
    UserId::parse(user_id)
        .map_err(|e| ApiError::internal(format!("stored user ID {user_id} is invalid: {e}")))
}
