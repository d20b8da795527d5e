//! `vouch`: the homeserver binary. The command line is defined in `cli.rs`; each command
//! group lives in `commands/`.

/// mimalloc instead of the system allocator: password hashes take tens of MiB each, and
/// glibc's allocator kept such freed buffers in per-thread arenas (peak RSS grew past
/// 900 MiB under 300 concurrent hashes, two at a time); mimalloc gives them back. Built
/// without transparent huge pages (`no_thp`): asked for them, the kernel backed mimalloc's
/// heap in whole 2 MiB pages however little of each was used, and peak RSS under the
/// benchmark's scenarios was 65 MiB instead of 42 (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod commands;

use clap::Parser as _;

use cli::{Cli, Command, ConfigCommand, EmailCommand, ImportCommand, SmsCommand};
use commands::load_config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line for operators; no backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(arg) => commands::serve::serve(&arg).await,
        Command::Config {
            command: ConfigCommand::Check(arg),
        } => {
            let config = load_config(&arg)?;
            print!("{}", config.to_masked_toml());
            eprintln!("configuration OK");
            Ok(())
        }
        Command::Admin { config, command } => commands::admin::admin(&config, command).await,
        Command::Import {
            config,
            command: ImportCommand::Synapse { from },
        } => commands::import::import_synapse(&config, &from).await,
        Command::Sms {
            config,
            command: SmsCommand::Test { number },
        } => commands::sms::sms_test(&config, &number).await,
        Command::Email {
            config,
            command: EmailCommand::Test { address },
        } => commands::email::email_test(&config, &address).await,
    }
}
