//! IMAP servers that misbehave on purpose, in process: a stall, an endless
//! line, a dropped connection, no STARTTLS. Each ends in a clear error
//! within the step timeout and with bounded reading; the password never
//! leaves in clear.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use peerd_config::{IncomingConfig, IncomingProtocol, Login, Processed, Secret, Security};
use peerd_mail::imap::ImapMailbox;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use zeroize::Zeroizing;

const LIMIT: Duration = Duration::from_secs(2);

fn config(port: u16, security: Security) -> IncomingConfig {
    IncomingConfig {
        protocol: IncomingProtocol::Imap,
        host: "127.0.0.1".into(),
        port,
        security,
        login: Some(Login {
            username: "hitoshi@isp-b.test".into(),
            password: Secret::Inline(Zeroizing::new("hunter2-secret".into())),
        }),
        ca_file: None,
        poll_interval: Duration::from_secs(60),
        folders: vec!["INBOX".into()],
        max_message_size: 256 * 1024,
        processed: Processed::Delete,
    }
}

async fn serve(script: fn(TcpStream) -> futures::future::BoxFuture<'static, ()>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(script(conn));
        }
    });
    port
}

async fn connect(
    port: u16,
    security: Security,
) -> Result<ImapMailbox, peerd_mail::imap::ImapError> {
    connect_within(port, security, LIMIT).await
}

async fn connect_within(
    port: u16,
    security: Security,
    limit: Duration,
) -> Result<ImapMailbox, peerd_mail::imap::ImapError> {
    let tls = peerd_mail::tls::client_config(None).unwrap();
    ImapMailbox::connect(
        &config(port, security),
        "hitoshi@isp-b.test",
        &Zeroizing::new("hunter2-secret".into()),
        Arc::clone(&tls),
        limit,
    )
    .await
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let port = serve(|conn| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(conn);
        })
    })
    .await;
    let start = Instant::now();
    let err = connect(port, Security::None).await.unwrap_err();
    assert!(err.transient, "{err}");
    assert!(err.message.contains("no answer within"), "{err}");
    assert!(start.elapsed() < LIMIT * 3);
}

#[tokio::test]
async fn a_stall_at_login_times_out() {
    let port = serve(|conn| {
        Box::pin(async move {
            let (r, mut w) = conn.into_split();
            let _ = w.write_all(b"* OK IMAP4rev1 ready\r\n").await;
            let mut r = BufReader::new(r);
            let mut line = String::new();
            let _ = r.read_line(&mut line).await;
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
    })
    .await;
    let start = Instant::now();
    let err = connect(port, Security::None).await.unwrap_err();
    assert!(err.transient, "{err}");
    assert!(start.elapsed() < LIMIT * 3, "{:?}", start.elapsed());
}

static WRITTEN: AtomicU64 = AtomicU64::new(0);

#[tokio::test]
async fn an_endless_greeting_is_cut_off_with_bounded_reading() {
    let port = serve(|mut conn| {
        Box::pin(async move {
            let chunk = vec![b'x'; 256 * 1024];
            let _ = conn.write_all(b"* OK ").await;
            // up to 2 GB, never a line end
            for _ in 0..8192 {
                if conn.write_all(&chunk).await.is_err() {
                    return;
                }
                WRITTEN.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        })
    })
    .await;
    // With the real step timeout, so that the line cap, not the clock, is
    // what ends it (without the cap, async-imap re-parses its growing
    // buffer for the whole 30 s).
    let start = Instant::now();
    let err = connect_within(port, Security::None, peerd_mail::courier::STEP_TIMEOUT)
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(err.transient, "{err}");
    assert!(err.message.contains("line longer than"), "{err}");
    assert!(took < Duration::from_secs(5), "cut off only after {took:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = WRITTEN.load(Ordering::Relaxed);
    // the line cap (256 KiB + 64 KiB) plus socket buffers
    assert!(written < 16 << 20, "server wrote {written} bytes");
}

#[tokio::test]
async fn a_connection_dropped_after_the_greeting_is_an_error() {
    let port = serve(|mut conn| {
        Box::pin(async move {
            let _ = conn.write_all(b"* OK ready\r\n").await;
        })
    })
    .await;
    assert!(connect(port, Security::None).await.is_err());
}

#[tokio::test]
async fn no_starttls_means_no_login() {
    static SAW_LOGIN: AtomicU64 = AtomicU64::new(0);
    let port = serve(|conn| {
        Box::pin(async move {
            let (r, mut w) = conn.into_split();
            let _ = w.write_all(b"* OK IMAP4rev1 ready\r\n").await;
            let mut r = BufReader::new(r);
            let mut line = String::new();
            while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                let tag = line.split(' ').next().unwrap_or("*").to_owned();
                if line.to_ascii_uppercase().contains("LOGIN") || line.contains("hunter2") {
                    SAW_LOGIN.fetch_add(1, Ordering::Relaxed);
                }
                let reply = format!("{tag} BAD unknown command\r\n");
                if w.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                line.clear();
            }
        })
    })
    .await;
    let err = connect(port, Security::StartTls).await.unwrap_err();
    assert!(!err.transient, "{err}");
    assert!(err.message.contains("STARTTLS"), "{err}");
    assert_eq!(
        SAW_LOGIN.load(Ordering::Relaxed),
        0,
        "credentials were sent in clear"
    );
}
