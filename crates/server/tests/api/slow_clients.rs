//! Slow and greedy clients (issue 11): half-sent headers, idle keep-alive connections and
//! half-sent bodies are cut off after their timeouts, and connections past
//! `[http] max_connections` are closed at once. The listener does not depend on the
//! database, so these run on SQLite only.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, spawn_with};

/// Reads until the server closes the connection (at most `within`); returns what it sent
/// and how long it took, or panics when the connection is still open.
async fn until_closed(conn: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, conn.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the server kept the connection open for {within:?}"
    );
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

/// Opens `n` connections that hold half a request each, then one more with a whole
/// request; returns the holders, what the extra one was answered and how soon it closed.
async fn one_past(base: &str, n: usize) -> (Vec<TcpStream>, String, Duration) {
    let addr = base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..n {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /").await.unwrap();
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(&addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (answer, took) = until_closed(&mut extra, Duration::from_secs(2)).await;
    (held, answer, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_cut_off() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.http.header_read_timeout = Duration::from_secs(1);
        c.http.body_read_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();

    // Headers that never end.
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (_, took) = until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );

    // An idle kept-alive connection after a request.
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A body that never arrives in full.
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(
        b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":",
    )
    .await
    .unwrap();
    let (answer, _) = until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("M_UNKNOWN"), "{answer}");

    // A body trickled a byte at a time: the deadline is for the whole body.
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(
        b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0_u8; 1024];
    while started.elapsed() < Duration::from_secs(5) {
        if conn.write_all(b" ").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(300), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_connection() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.http.max_connections_per_ip = 2;
        c.http.trusted_proxies = Vec::new();
    })
    .await;
    let (held, answer, _) = one_past(&app.base, 2).await;
    assert!(answer.is_empty(), "a third connection was served: {answer}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.get("/_matrix/client/versions", None).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.http.max_connections = 3;
        c.http.header_read_timeout = Duration::from_secs(30);
    })
    .await;
    let (held, answer, took) = one_past(&app.base, 3).await;
    assert!(
        answer.is_empty(),
        "a fourth connection was served: {answer}"
    );
    assert!(took < Duration::from_secs(1));
    // Once the holders leave, clients are served again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.get("/_matrix/client/versions", None).await.ok();
}

/// A client that pipelines requests and never reads the answers: once the server's writes
/// stall for `response_write_timeout`, the connection is closed, instead of being held
/// for good with no read deadline ever firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.http.response_write_timeout = Duration::from_secs(1);
    })
    .await;
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let conn = socket.connect(addr).await.unwrap();
    let (mut read, mut write) = conn.into_split();
    let n = 40_000;
    let requests = b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n".repeat(n);
    let writer = tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(10), write.write_all(&requests)).await;
        write
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut got = Vec::new();
    let read_all = tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut got)).await;
    assert!(read_all.is_ok(), "the connection was still open");
    let answers = String::from_utf8_lossy(&got)
        .matches("HTTP/1.1 200")
        .count();
    assert!(
        answers < n,
        "all {n} answers were written: the stall was waited out"
    );
    drop(writer.await);
}

/// Request bodies held in memory are bounded over all connections: past
/// `max_buffered_bytes`, a request waits for room and then gets 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_bodies_are_bounded() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.http.max_request_bytes = 1024 * 1024;
        c.http.max_buffered_bytes = 2 * 1024 * 1024;
        c.http.body_read_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let head = b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{";
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(head).await.unwrap();
        holders.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut third = TcpStream::connect(&addr).await.unwrap();
    third.write_all(head).await.unwrap();
    let (answer, _) = until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("M_LIMIT_EXCEEDED"), "{answer}");
    drop(holders);
}

/// A body announced larger than `[http] max_request_bytes` is refused with 413 at once,
/// without waiting the body-read timeout for bytes that would be refused anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_announced_too_large_is_refused_at_once() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.http.body_read_timeout = Duration::from_secs(30);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(
        b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{\"type\":",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("M_TOO_LARGE") {
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk)).await;
        match read {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            other => panic!(
                "no 413 within 5 s ({other:?}); got: {}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    let answer = String::from_utf8_lossy(&got);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
}
