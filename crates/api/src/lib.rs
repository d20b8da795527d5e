//! Vouch's HTTP API: the Matrix client-server endpoints on axum, with ruma's wire types.
//!
//! Handlers live in `client/`, one file per ruma endpoint module. They parse (via
//! [`ruma_axum::Ruma`]), check policy, call storage and the domain, and map the result;
//! every error becomes Matrix JSON in exactly one place ([`error`]).

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod client;
pub mod client_ip;
pub mod email_validate;
pub mod error;
pub mod every_answer;
pub mod get_server_keys;
pub mod health;
pub mod homeserver;
pub mod identity;
pub mod language;
pub mod oauth;
pub mod pages;
pub mod public_net;
pub mod rate_limit;
pub mod router;
pub mod ruma_axum;
pub mod signing_key;
pub mod state;
pub mod threepid;
pub mod uia;

pub use router::router;
pub use state::{AppState, Services};
