//! A fake SMTP server at the process edge: it speaks SMTP over TCP to Vouch's real lettre
//! transport and keeps what it receives. It can be switched "down" (every connection gets
//! `421` and is closed) to test the outbox's retries.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// A received mail.
#[derive(Debug, Clone)]
pub struct Received {
    /// `RCPT TO` addresses.
    pub to: Vec<String>,
    /// The message as sent (dot-unstuffed).
    pub raw: String,
}

impl Received {
    /// The parsed message.
    pub fn parsed(&self) -> mailparse::ParsedMail<'_> {
        mailparse::parse_mail(self.raw.as_bytes()).expect("a MIME message")
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        let parsed = self.parsed();
        parsed
            .headers
            .iter()
            .find(|h| h.get_key().eq_ignore_ascii_case(name))
            .map(|h| h.get_value())
    }

    /// The decoded text/plain part.
    pub fn text(&self) -> String {
        let parsed = self.parsed();
        let part = parsed
            .subparts
            .iter()
            .find(|p| p.ctype.mimetype == "text/plain")
            .expect("a text/plain part");
        part.get_body().expect("decodable body")
    }

    /// The decoded text/html part.
    pub fn html(&self) -> String {
        let parsed = self.parsed();
        let part = parsed
            .subparts
            .iter()
            .find(|p| p.ctype.mimetype == "text/html")
            .expect("a text/html part");
        part.get_body().expect("decodable body")
    }

    /// The confirmation link in the text part.
    pub fn link(&self) -> String {
        self.text()
            .split_whitespace()
            .find(|w| w.contains("/_vouch/email/validate?"))
            .unwrap_or_else(|| panic!("no link in: {}", self.text()))
            .to_owned()
    }
}

/// The fake server.
#[derive(Clone)]
pub struct SmtpSink {
    /// Its port on 127.0.0.1.
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    up: Arc<AtomicBool>,
    arrived: Arc<Notify>,
    /// Connections accepted in all, open now, and open at most at once.
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    most_open: Arc<AtomicUsize>,
    /// Milliseconds the next mail's final reply is held back (once).
    stall_next_ms: Arc<AtomicU64>,
    /// Mails are refused at the final dot with a 451.
    refuse_mail: Arc<AtomicBool>,
}

impl SmtpSink {
    /// Starts listening on an ephemeral port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind SMTP sink");
        let sink = SmtpSink {
            port: listener.local_addr().unwrap().port(),
            received: Arc::default(),
            up: Arc::new(AtomicBool::new(true)),
            arrived: Arc::new(Notify::new()),
            accepted: Arc::default(),
            open: Arc::default(),
            most_open: Arc::default(),
            stall_next_ms: Arc::default(),
            refuse_mail: Arc::default(),
        };
        let s = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                s.accepted.fetch_add(1, Ordering::SeqCst);
                let now_open = s.open.fetch_add(1, Ordering::SeqCst) + 1;
                s.most_open.fetch_max(now_open, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = s.session(stream).await;
                    s.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        sink
    }

    /// Makes the server refuse (`false`) or accept (`true`) new connections.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    /// Holds back the reply to the next mail's final dot for `ms` (the mail is kept).
    pub fn stall_next_mail(&self, ms: u64) {
        self.stall_next_ms.store(ms, Ordering::SeqCst);
    }

    /// Refuses (`true`) every mail at its final dot with `451`, or accepts them again.
    pub fn refuse_mail(&self, refuse: bool) {
        self.refuse_mail.store(refuse, Ordering::SeqCst);
    }

    /// Connections accepted so far, and the most that were open at once.
    pub fn connections(&self) -> (usize, usize) {
        (
            self.accepted.load(Ordering::SeqCst),
            self.most_open.load(Ordering::SeqCst),
        )
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` mails have arrived (at most 15 s) and returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                !left.is_zero(),
                "expected {n} mails, got {}: {got:?}",
                got.len()
            );
            let _ = tokio::time::timeout(
                left.min(Duration::from_millis(200)),
                self.arrived.notified(),
            )
            .await;
        }
    }

    /// Waits a little and checks that exactly `n` mails arrived in all.
    pub async fn assert_total(&self, n: usize) {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(self.received().len(), n, "{:?}", self.received());
    }

    async fn session(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        if !self.up.load(Ordering::SeqCst) {
            write
                .write_all(b"421 4.3.0 fake server is down\r\n")
                .await?;
            return Ok(());
        }
        write.write_all(b"220 fake.smtp ESMTP ready\r\n").await?;
        let mut to = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            if !self.up.load(Ordering::SeqCst) {
                write
                    .write_all(b"421 4.3.0 fake server is down\r\n")
                    .await?;
                return Ok(());
            }
            let command = line.trim_end().to_ascii_uppercase();
            let reply: &[u8] = if command.starts_with("EHLO") {
                b"250-fake.smtp\r\n250 8BITMIME\r\n"
            } else if command.starts_with("HELO")
                || command.starts_with("MAIL FROM")
                || command.starts_with("RSET")
                || command.starts_with("NOOP")
            {
                if command.starts_with("RSET") {
                    to.clear();
                }
                b"250 OK\r\n"
            } else if command.starts_with("RCPT TO") {
                let addr = line.trim_end()[8..]
                    .trim()
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                to.push(addr);
                b"250 OK\r\n"
            } else if command.starts_with("DATA") {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut raw = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    raw.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                if self.refuse_mail.load(Ordering::SeqCst) {
                    to.clear();
                    write.write_all(b"451 4.3.0 try again later\r\n").await?;
                    continue;
                }
                let stall = self.stall_next_ms.swap(0, Ordering::SeqCst);
                if stall > 0 {
                    tokio::time::sleep(Duration::from_millis(stall)).await;
                }
                self.received.lock().unwrap().push(Received {
                    to: std::mem::take(&mut to),
                    raw,
                });
                self.arrived.notify_waiters();
                b"250 OK queued\r\n"
            } else if command.starts_with("QUIT") {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else {
                b"502 not implemented\r\n"
            };
            write.write_all(reply).await?;
        }
    }
}
