//! The `vouch` binary's commands, run as a user would.

use std::process::Command;

fn vouch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vouch"));
    c.env_remove("RUST_LOG");
    c
}

#[test]
fn config_check_prints_effective_config_and_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vouch.toml");
    std::fs::write(
        &file,
        "server_name = \"cli.test\"\n[password]\npepper = \"sekrit\"\n",
    )
    .unwrap();
    let out = vouch()
        .args(["config", "check", "--config"])
        .arg(&file)
        .env("VOUCH_REGISTRATION__ENABLED", "false")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("server_name = \"cli.test\""), "{stdout}");
    assert!(
        stdout.contains("enabled = false"),
        "environment override shown: {stdout}"
    );
    assert!(
        !stdout.contains("sekrit") && stdout.contains("********"),
        "{stdout}"
    );
}

#[test]
fn config_check_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[registration]\nrequire_3pid = [\"fax\"]\n[password]\nbcrypt_cost = 2\n",
    )
    .unwrap();
    let out = vouch()
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fax") && stderr.contains("bcrypt_cost"),
        "{stderr}"
    );

    let missing = vouch()
        .args(["config", "check", "--config", "/nonexistent/vouch.toml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}

#[test]
fn registration_tokens_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());
    let run = |args: &[&str]| {
        vouch()
            .args(args)
            .env("VOUCH_DATABASE__URL", &db)
            .output()
            .unwrap()
    };
    let made = run(&[
        "admin",
        "registration-token",
        "create",
        "--uses",
        "3",
        "--expires-in",
        "7d",
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let token = String::from_utf8_lossy(&made.stdout).trim().to_owned();
    assert_eq!(token.len(), 16);
    let list = run(&["admin", "registration-token", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains(&token) && listed.contains('3'), "{listed}");
    let dup = run(&["admin", "registration-token", "create", "--token", &token]);
    assert!(!dup.status.success());
    let bad = run(&[
        "admin",
        "registration-token",
        "create",
        "--token",
        "has space",
    ]);
    assert!(!bad.status.success());
    assert!(
        run(&["admin", "registration-token", "delete", &token])
            .status
            .success()
    );
    assert!(
        !run(&["admin", "registration-token", "delete", &token])
            .status
            .success()
    );
}
