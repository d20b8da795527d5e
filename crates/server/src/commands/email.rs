//! `vouch email test`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vouch_core::{Clock, OsSecretSource, SystemClock};

use crate::cli::ConfigArg;
use crate::commands::load_config;

pub(crate) async fn email_test(arg: &ConfigArg, address: &str) -> anyhow::Result<()> {
    let config = load_config(arg)?;
    let email = vouch_core::threepid::Email::parse(address)
        .map_err(|e| anyhow::anyhow!("{address}: {e}"))?;
    let e = &config.email;
    let dir = Some(Path::new(&e.template_dir)).filter(|p| !p.as_os_str().is_empty());
    let templates = vouch_mail::Templates::new(dir)?;
    let composer = vouch_mail::Composer::new(
        Arc::new(templates),
        &e.from,
        e.subjects.clone(),
        e.app_name.clone(),
        config.server_name.clone(),
    )?;
    let transport = vouch_mail::Transport::from_config(e).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ctx = composer.context(email.as_str(), String::new(), Duration::ZERO);
    let mail = composer.compose("test", &ctx, SystemClock.now_ms(), &OsSecretSource)?;
    transport
        .send(&mail.envelope_from, &mail.recipient, &mail.message)
        .await
        .map_err(|e| anyhow::anyhow!("sending failed: {e}"))?;
    println!("test mail sent to {} via {}", email, transport.describe());
    Ok(())
}
