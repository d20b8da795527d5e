//! Integration tests: the real server on an ephemeral port, spoken to over HTTP. One test
//! binary (one link step); one module per area.

mod helpers;
mod race;
mod smtp;

mod bad_input;
mod browser;
mod cli;
mod conformance;
mod devices;
mod discovery;
mod email;
mod identity;
mod instances;
mod limits;
mod login;
mod oauth;
mod openid;
mod operate;
mod outage;
mod password;
mod profile;
mod races;
mod register;
mod security;
mod slow_clients;
mod sms;
mod synapse;
mod uia;
