//! `GET /_synapse/admin/v2/users`, `GET|PUT /_synapse/admin/v2/users/{user_id}`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use ruma::api::error::ErrorKind;
use serde::Deserialize;
use serde_json::{Value, json};
use vouch_core::localpart::Localpart;
use vouch_core::threepid::ThirdPartyId;
use vouch_storage::{User, UserFilter};

use crate::accounts::Logout;
use crate::accounts::NewUser;
use crate::admin::{Admin, bool_field, local_user_id, text_field};
use crate::error::{ApiError, ApiResult};
use crate::ruma_axum::JsonBody;
use crate::state::{AppState, Services};

/// The user object of Synapse's admin API.
pub async fn user_json(state: &Services, user: &User) -> ApiResult<Value> {
    let threepids: Vec<Value> = state
        .db
        .threepids(&user.user_id)
        .await?
        .into_iter()
        .map(|t| json!({ "medium": t.medium, "address": t.address, "added_at": t.added_at, "validated_at": t.validated_at }))
        .collect();
    let mut v = list_json(user);
    v["threepids"] = json!(threepids);
    v["external_ids"] = json!([]);
    v["appservice_id"] = Value::Null;
    v["consent_server_notice_sent"] = Value::Null;
    v["consent_version"] = Value::Null;
    v["consent_ts"] = Value::Null;
    Ok(v)
}

/// The shorter object of the list endpoint.
fn list_json(user: &User) -> Value {
    json!({
        "name": user.user_id,
        "displayname": user.displayname,
        "avatar_url": user.avatar_url,
        "is_guest": user.is_guest,
        "admin": user.is_admin,
        "deactivated": user.deactivated_at.is_some(),
        "erased": false,
        "shadow_banned": false,
        "locked": false,
        "suspended": false,
        "user_type": Value::Null,
        // Synapse gives seconds here.
        "creation_ts": user.created_at / 1000,
    })
}

/// Query of the list endpoint.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    guests: Option<String>,
    #[serde(default)]
    deactivated: Option<String>,
}

fn flag(raw: Option<&str>, default: bool) -> ApiResult<bool> {
    match raw {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(ApiError::invalid_param(format!(
            "expected true or false, got {other}"
        ))),
    }
}

fn number(raw: Option<&str>, default: i64, what: &str) -> ApiResult<i64> {
    match raw {
        None => Ok(default),
        Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::invalid_param(format!("{what} must be a non-negative integer"))
        }),
    }
}

/// # `GET /_synapse/admin/v2/users`
pub async fn list_users_route(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let from = number(q.from.as_deref(), 0, "from")?;
    let limit = number(q.limit.as_deref(), 100, "limit")?.min(1000);
    let filter = UserFilter {
        name: q.name.or(q.user_id),
        deactivated: flag(q.deactivated.as_deref(), false)?,
        guests: flag(q.guests.as_deref(), true)?,
    };
    let (users, total) = state.db.list_users(&filter, from, limit).await?;
    let mut body =
        json!({ "users": users.iter().map(list_json).collect::<Vec<_>>(), "total": total });
    if from + i64::try_from(users.len()).unwrap_or(0) < total {
        body["next_token"] = json!((from + limit).to_string());
    }
    Ok(Json(body))
}

/// # `GET /_synapse/admin/v2/users/{user_id}`
pub async fn get_user_route(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user_id = local_user_id(&state, &user_id)?;
    let user = state
        .db
        .user(&user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("User not found"))?;
    Ok(Json(user_json(&state, &user).await?))
}

/// Canonicalises the `threepids` of a PUT body.
fn parse_threepids(raw: &Value) -> ApiResult<Vec<(String, String)>> {
    let Value::Array(items) = raw else {
        return Err(ApiError::bad_json("threepids must be a list"));
    };
    items
        .iter()
        .map(|t| {
            let medium = t
                .get("medium")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::missing_param("threepids[].medium"))?;
            let address = t
                .get("address")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::missing_param("threepids[].address"))?;
            let id = ThirdPartyId::parse(medium, address)
                .map_err(|e| ApiError::invalid_param(e.to_string()))?;
            Ok((id.medium().as_str().to_owned(), id.address().to_owned()))
        })
        .collect()
}

/// # `PUT /_synapse/admin/v2/users/{user_id}`
///
/// Creates the account (201) or changes it (200): `password` (with `logout_devices`,
/// default true), `displayname`, `avatar_url`, `threepids` (the unique-address rule holds),
/// `admin`, `deactivated`.
pub async fn put_user_route(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(user_id): Path<String>,
    JsonBody { body, .. }: JsonBody,
) -> ApiResult<Response> {
    let user_id = local_user_id(&state, &user_id)?;
    let localpart = vouch_core::localpart::localpart_of(&user_id, state.server_name())
        .unwrap_or_default()
        .to_owned();
    let text = |key: &str| text_field(&body, key);
    let boolean = |key: &str| bool_field(&body, key);
    let password = text("password")?;
    let displayname = text("displayname")?;
    let avatar_url = text("avatar_url")?;
    let admin_flag = boolean("admin")?;
    let deactivated = boolean("deactivated")?;
    let logout_devices = boolean("logout_devices")?.unwrap_or(true);
    let threepids = body.get("threepids").map(parse_threepids).transpose()?;
    // As Synapse: a server must not lose its last way in by an admin's slip.
    if user_id == admin.user_id {
        if admin_flag == Some(false) {
            return Err(ApiError::new(
                ErrorKind::Unknown,
                "You may not demote yourself",
            ));
        }
        if deactivated == Some(true) {
            return Err(ApiError::new(
                ErrorKind::Unknown,
                "You may not deactivate yourself",
            ));
        }
    }
    let accounts = state.accounts();
    if let Some(p) = &password {
        accounts.check_password(p)?;
    }
    let now = state.now();

    let existing = state.db.user(&user_id).await?;
    let created = existing.is_none();
    if created {
        let parsed = Localpart::parse(&localpart, state.server_name())
            .map_err(|e| ApiError::new(ErrorKind::InvalidUsername, e.to_string()))?;
        if parsed.as_str() != localpart {
            return Err(ApiError::new(
                ErrorKind::InvalidUsername,
                "User IDs must be lower-case",
            ));
        }
        accounts
            .create_user(NewUser {
                localpart: Some(parsed),
                password: password.clone(),
                admin: admin_flag.unwrap_or(false),
                displayname: displayname.clone(),
                threepids: threepids
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(m, a)| (m, a, now))
                    .collect(),
                ..NewUser::default()
            })
            .await?;
        if let Some(url) = &avatar_url {
            accounts.set_avatar_url(&user_id, Some(url)).await?;
        }
        tracing::info!(
            admin = admin.user_id,
            target = user_id,
            "admin: created user"
        );
    } else {
        // Addresses first: the one change that can be refused must not follow the others.
        if let Some(list) = &threepids {
            accounts.replace_threepids(&user_id, list).await?;
        }
        if let Some(p) = password {
            accounts
                .set_password(&user_id, p, Logout::from_flag(logout_devices, None))
                .await?;
        }
        if body.contains_key("displayname") {
            accounts
                .set_displayname(&user_id, displayname.as_deref().filter(|d| !d.is_empty()))
                .await?;
        }
        if body.contains_key("avatar_url") {
            accounts
                .set_avatar_url(&user_id, avatar_url.as_deref().filter(|d| !d.is_empty()))
                .await?;
        }
        if let Some(a) = admin_flag {
            accounts.set_admin(&user_id, a).await?;
        }
        match deactivated {
            Some(true)
                if existing
                    .as_ref()
                    .is_some_and(|u| u.deactivated_at.is_none()) =>
            {
                accounts.deactivate(&user_id, false).await?
            }
            Some(false) => accounts.reactivate(&user_id).await?,
            _ => {}
        }
        tracing::info!(admin = admin.user_id, target = user_id, fields = ?body.keys().collect::<Vec<_>>(), "admin: modified user");
    }
    let user = state
        .db
        .user(&user_id)
        .await?
        .ok_or_else(|| ApiError::internal("user vanished"))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(user_json(&state, &user).await?)).into_response())
}
