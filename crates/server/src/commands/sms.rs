//! `vouch sms test`.

use crate::cli::ConfigArg;
use crate::commands::load_config;

pub(crate) async fn sms_test(arg: &ConfigArg, number: &str) -> anyhow::Result<()> {
    let config = load_config(arg)?;
    let msisdn = vouch_core::threepid::Msisdn::parse_international(number).map_err(|e| {
        anyhow::anyhow!("{number}: {e} (use the international form, e.g. +447400123456)")
    })?;
    let gateway =
        vouch_sms::Gateway::from_config(&config.sms).map_err(|e| anyhow::anyhow!("{e}"))?;
    let from = config
        .sms
        .sender_per_country
        .get(msisdn.country())
        .map(String::as_str);
    let body = format!(
        "This is a test message from {}. SMS delivery works.",
        config.email.app_name
    );
    gateway
        .send(&msisdn.e164(), from, &body, None)
        .await
        .map_err(|e| anyhow::anyhow!("sending failed: {e}"))?;
    println!(
        "test SMS sent to {} via {}",
        msisdn.e164(),
        gateway.describe()
    );
    Ok(())
}
