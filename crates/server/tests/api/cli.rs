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

#[test]
fn email_test_writes_a_mail_with_the_file_transport_and_reports_smtp_failures() {
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let out = vouch()
        .args(["email", "test", "Someone@Example.org"])
        .env("VOUCH_EMAIL__TRANSPORT", "file")
        .env("VOUCH_EMAIL__FILE__DIR", &mail_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("someone@example.org"));
    let files: Vec<_> = std::fs::read_dir(&mail_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let eml = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "eml"))
        .expect("an .eml file");
    let text = std::fs::read_to_string(eml).unwrap();
    assert!(
        text.contains("To: someone@example.org") && text.contains("Auto-Submitted: auto-generated"),
        "{text}"
    );

    // An SMTP server that is not there: a clear failure, not a hang.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = vouch()
        .args(["email", "test", "someone@example.org"])
        .env("VOUCH_EMAIL__TRANSPORT", "smtp")
        .env("VOUCH_EMAIL__SMTP__HOST", "127.0.0.1")
        .env("VOUCH_EMAIL__SMTP__PORT", port.to_string())
        .env("VOUCH_EMAIL__SMTP__TLS", "none")
        .env("VOUCH_EMAIL__SMTP__TIMEOUT", "5s")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sending failed") && stderr.contains(&format!("127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn serve_logs_a_clear_line_when_smtp_is_unreachable() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = vouch()
        .args(["serve"])
        .current_dir(dir.path())
        .env("VOUCH_HTTP__LISTEN", "127.0.0.1:0")
        .env("VOUCH_EMAIL__TRANSPORT", "smtp")
        .env("VOUCH_EMAIL__SMTP__HOST", "127.0.0.1")
        .env("VOUCH_EMAIL__SMTP__PORT", port.to_string())
        .env("VOUCH_EMAIL__SMTP__TLS", "none")
        .env("VOUCH_LOGGING__FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line.contains("SMTP server unreachable") {
                    break Some(line);
                }
                seen.push(line);
            }
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let line = found.unwrap_or_else(|| panic!("no SMTP warning in: {seen:#?}"));
    let json: serde_json::Value =
        serde_json::from_str(&line).expect("[logging] format = \"json\" gives JSON lines");
    assert_eq!(json["level"], "WARN");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
}

#[test]
fn sms_test_sends_through_the_gateway_and_checks_the_number() {
    let out = vouch()
        .args(["sms", "test", "+44 7400 123456"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("+447400123456 via log"));
    let bad = vouch().args(["sms", "test", "12"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("international form"));
    // A webhook that is not there: a clear failure.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = vouch()
        .args(["sms", "test", "+447400123456"])
        .env("VOUCH_SMS__TRANSPORT", "webhook")
        .env(
            "VOUCH_SMS__WEBHOOK__URL",
            format!("http://127.0.0.1:{port}/send"),
        )
        .output()
        .unwrap();
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("sending failed"));
}

/// Human-format logs written to a pipe (a file, journald) carry no colour codes.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = vouch()
        .args(["serve"])
        .current_dir(dir.path())
        .env("VOUCH_HTTP__LISTEN", "127.0.0.1:0")
        .env("VOUCH_LOGGING__FORMAT", "human")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(10)) {
        lines.push(line);
        if lines.len() >= 3 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(!lines.is_empty(), "serve logged nothing");
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "colour code in {line:?}");
    }
}

#[test]
fn config_check_holds_the_homeserver_secret_to_32_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hs.toml");
    std::fs::write(
        &file,
        "[homeserver]\nurl = \"http://127.0.0.1:8448\"\nsecret = \"too-short\"\n",
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
        stderr.contains("at least 32") && stderr.contains("matrix_authentication_service.secret"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("too-short"),
        "the secret is never printed: {stderr}"
    );

    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{}\n", "s".repeat(40))).unwrap();
    std::fs::write(
        &file,
        format!(
            "[homeserver]\nurl = \"http://127.0.0.1:8448\"\nsecret_file = \"{}\"\n",
            secret_file.display()
        ),
    )
    .unwrap();
    let out = vouch()
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(&file, "[homeserver]\nurl = \"ftp://x\"\n").unwrap();
    let out = vouch()
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("[homeserver] url") && stderr.contains("secret"),
        "{stderr}"
    );
}
