//! `vouch import synapse`.

use anyhow::Context as _;

use crate::cli::ConfigArg;
use crate::commands::{load_config, open_database};

pub(crate) async fn import_synapse(arg: &ConfigArg, from: &str) -> anyhow::Result<()> {
    let config = load_config(arg)?;
    let source = vouch_storage::SynapseSource::open(from)
        .await
        .with_context(|| {
            format!(
                "cannot open the Synapse database {}",
                vouch_server::redact(from)
            )
        })?;
    let (names, total) = source.server_names().await?;
    if let Some(other) = names.iter().find(|n| **n != config.server_name) {
        anyhow::bail!(
            "the Synapse database holds users of '{other}', but this server is '{}': refusing to mix two servers' names (set server_name = \"{other}\")",
            config.server_name
        );
    }
    let db = open_database(&config, 4).await?;
    eprintln!(
        "importing {total} users from Synapse into {}",
        vouch_server::redact(&config.database.url)
    );
    let services = crate::commands::admin::offline_services(&config, db.clone()).await?;
    let (mut seen, mut created, mut existing, mut threepids, mut conflicts) = (0_i64, 0, 0, 0, 0);
    let mut devices = 0_u64;
    let mut refused = 0_u64;
    let mut after = String::new();
    loop {
        let page = source.users_after(&after, 500).await?;
        let Some(last) = page.last() else { break };
        after = last.user_id.clone();
        for user in &page {
            let outcome = match services.accounts().import_user(user).await {
                Ok(outcome) => outcome,
                Err(vouch_api::accounts::AccountError::Refused(why)) => {
                    refused += 1;
                    eprintln!("  {}: refused: {why}", user.user_id.escape_debug());
                    continue;
                }
                Err(e) => return Err(anyhow::anyhow!("{e}")),
            };
            if outcome.created {
                created += 1
            } else {
                existing += 1
            }
            threepids += outcome.threepids_added;
            devices += outcome.devices_added;
            conflicts += outcome.threepids_conflicting;
            if outcome.threepids_conflicting > 0 {
                eprintln!(
                    "  {}: an address of theirs belongs to another account here; left out",
                    user.user_id.escape_debug()
                );
            }
        }
        seen += i64::try_from(page.len()).unwrap_or(0);
        eprintln!("  {seen}/{total} users");
    }
    println!(
        "imported {created} users ({existing} already here, left as they are), {threepids} addresses ({conflicts} conflicting, left out), {refused} refused, {devices} devices with their sessions"
    );
    db.close().await;
    if refused > 0 {
        anyhow::bail!(
            "{refused} users were refused (see above); the others are in, and a second run skips them"
        );
    }
    Ok(())
}
