//! The client against an in-process server that misbehaves on purpose:
//! stalls, drops, garbage, huge lines, missing STLS, refusals. Every case
//! must end in a clear error, quickly, with bounded memory and no panic.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Fake, options, pki, unused_tls};
use peerd_pop3::{Error, Pop3Client, Security};
use tokio::io::AsyncWriteExt;

const CAPS: &str = "USER\r\nUIDL\r\nTOP\r\n";

async fn plain_client(fake: &Fake, timeout: Duration) -> peerd_pop3::Result<Pop3Client> {
    let mut opts = options(fake.port, Security::Plain, unused_tls());
    opts.timeout = timeout;
    Pop3Client::connect(opts).await
}

async fn logged_in(fake: &Fake, timeout: Duration) -> Pop3Client {
    let mut pop = plain_client(fake, timeout).await.unwrap();
    pop.login("alice", "secret-alice").await.unwrap();
    pop
}

fn assert_within(start: Instant, timeout: Duration) {
    let elapsed = start.elapsed();
    assert!(elapsed >= timeout, "gave up early: {elapsed:?}");
    assert!(
        elapsed < timeout + Duration::from_millis(1500),
        "took {elapsed:?} for a {timeout:?} timeout"
    );
}

// --- stalls -------------------------------------------------------------

#[tokio::test]
async fn stall_in_greeting_times_out() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.send("+OK half a gree").await;
        conn.stall().await;
    })
    .await;
    let timeout = Duration::from_millis(400);
    let start = Instant::now();
    let err = plain_client(&fake, timeout).await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { what: "greeting", after } if after == timeout),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_within(start, timeout);
}

#[tokio::test]
async fn stall_mid_capa_listing_times_out() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.send("+OK ready\r\n").await;
        conn.answer("+OK\r\nUSER\r\nUI").await;
        conn.stall().await;
    })
    .await;
    let timeout = Duration::from_millis(400);
    let start = Instant::now();
    let err = plain_client(&fake, timeout).await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { what: "CAPA", .. }),
        "{err:?}"
    );
    assert_within(start, timeout);
}

#[tokio::test]
async fn stall_mid_retr_body_times_out_and_breaks_the_session() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.greet_and_login(CAPS).await;
        conn.answer("+OK 1 100\r\n").await;
        conn.answer("+OK 100 octets\r\nSubject: hi\r\n\r\nthe body is cut he")
            .await;
        conn.stall().await;
    })
    .await;
    let timeout = Duration::from_millis(400);
    let mut pop = logged_in(&fake, timeout).await;
    let start = Instant::now();
    let err = pop.retr(1, 1000).await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { what: "RETR", .. }),
        "{err:?}"
    );
    assert_within(start, timeout);
    // The stream is mid-reply: no further command is attempted.
    assert!(matches!(pop.noop().await, Err(Error::SessionBroken)));
    assert!(matches!(pop.quit().await, Err(Error::SessionBroken)));
    assert_eq!(fake.received().last().map(String::as_str), Some("RETR 1"));
}

#[tokio::test]
async fn a_dropped_command_future_breaks_the_session() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.greet_and_login(CAPS).await;
        conn.line().await; // UIDL: never answered
        conn.stall().await;
    })
    .await;
    let mut pop = logged_in(&fake, Duration::from_secs(5)).await;
    let cancelled = tokio::time::timeout(Duration::from_millis(100), pop.uidl()).await;
    assert!(cancelled.is_err());
    assert!(matches!(pop.stat().await, Err(Error::SessionBroken)));
}

// --- drops --------------------------------------------------------------

#[tokio::test]
async fn drop_mid_multi_line_reply_is_connection_closed() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.greet_and_login(CAPS).await;
        conn.answer("+OK\r\n1 abc\r\n2 de").await;
        // The script ends: the connection closes mid-listing.
    })
    .await;
    let mut pop = logged_in(&fake, Duration::from_secs(5)).await;
    let start = Instant::now();
    let err = pop.uidl().await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed), "{err:?}");
    assert!(err.is_transient());
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(matches!(pop.noop().await, Err(Error::SessionBroken)));
}

#[tokio::test]
async fn drop_mid_retr_over_tls_is_connection_closed() {
    let pki = pki();
    let fake = Fake::start_tls(pki.server.clone(), |mut conn| async move {
        conn.greet_and_login(CAPS).await;
        conn.answer("+OK 1 500\r\n").await;
        conn.answer("+OK\r\nFrom: a@b\r\n\r\nhalf a bo").await;
        // Dropped without close_notify.
    })
    .await;
    let mut pop = Pop3Client::connect(options(fake.port, Security::Tls, pki.client))
        .await
        .unwrap();
    assert!(pop.is_tls());
    pop.login("alice", "secret-alice").await.unwrap();
    let start = Instant::now();
    let err = pop.retr(1, 1000).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn drop_before_greeting_is_connection_closed() {
    let fake = Fake::start(None, |_conn| async move {}).await;
    let err = plain_client(&fake, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed), "{err:?}");
}

// --- garbage ------------------------------------------------------------

#[tokio::test]
async fn garbage_greeting_is_a_protocol_error() {
    for garbage in [
        &b"HTTP/1.1 400 Bad Request\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n",
        b"* OK IMAP4rev1 ready\r\n",
        b"+okay\r\n",
    ] {
        let fake = Fake::start(None, move |mut conn| async move {
            conn.send(garbage).await;
            conn.stall().await;
        })
        .await;
        let err = plain_client(&fake, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{garbage:?}: {err:?}");
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn garbage_in_listings_is_a_protocol_error() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.greet_and_login(CAPS).await;
        conn.answer("+OK\r\n1 120\r\ntwo 99\r\n.\r\n").await;
        conn.stall().await;
    })
    .await;
    let mut pop = logged_in(&fake, Duration::from_secs(5)).await;
    let err = pop.list().await.unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("two 99")),
        "{err:?}"
    );

    for (bad, why) in [
        ("1 has space\r\n", "extra field"),
        ("1 caf\u{e9}\r\n", "non-ASCII"),
        ("1 a\x7f\r\n", "DEL"),
        (
            "1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            "71 chars",
        ),
        ("1 same\r\n2 same\r\n", "duplicate"),
    ] {
        let fake = Fake::start(None, move |mut conn| async move {
            conn.greet_and_login(CAPS).await;
            conn.answer(format!("+OK\r\n{bad}.\r\n")).await;
            conn.stall().await;
        })
        .await;
        let mut pop = logged_in(&fake, Duration::from_secs(5)).await;
        let err = pop.uidl().await.unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{why}: {err:?}");
    }
}

#[tokio::test]
async fn unexpected_sasl_continuation_is_a_protocol_error() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.send("+OK ready\r\n").await;
        conn.answer("+OK\r\nSASL PLAIN\r\n.\r\n").await;
        conn.answer("+ \r\n").await;
        conn.stall().await;
    })
    .await;
    let mut pop = plain_client(&fake, Duration::from_secs(5)).await.unwrap();
    let err = pop.login("alice", "secret-alice").await.unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    assert!(matches!(pop.noop().await, Err(Error::SessionBroken)));
}

// --- huge lines and endless replies ---------------------------------------

const TWO_GIB: u64 = 2 << 30;

/// Writes a 2 GiB line lazily, 64 KiB at a time, until the client goes
/// away; returns how many bytes the kernel accepted.
async fn stream_huge_line(conn: &mut common::Conn, written: &AtomicU64) {
    let chunk = vec![b'A'; 64 * 1024];
    while written.load(Ordering::Relaxed) < TWO_GIB {
        match conn.raw().write(&chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                written.fetch_add(n as u64, Ordering::Relaxed);
            },
        }
    }
}

#[tokio::test]
async fn two_gib_greeting_line_fails_fast_with_bounded_reading() {
    let written = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&written);
    let fake = Fake::start(None, move |mut conn| async move {
        conn.send("+OK ").await;
        stream_huge_line(&mut conn, &counter).await;
    })
    .await;
    let mut opts = options(fake.port, Security::Plain, unused_tls());
    opts.max_line = 4096;
    let start = Instant::now();
    let err = Pop3Client::connect(opts).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, Error::LineTooLong { max: 4096 }), "{err:?}");
    fake.finish().await;
    let sent = written.load(Ordering::Relaxed);
    eprintln!("2 GiB greeting: error after {elapsed:?}; server got {sent} bytes into the socket");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    // What the kernel buffers on loopback, not 2 GiB.
    assert!(sent < 64 << 20, "server wrote {sent} bytes");
}

#[tokio::test]
async fn two_gib_line_in_a_message_stops_after_max_line_bytes() {
    let written = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&written);
    let fake = Fake::start(None, move |mut conn| async move {
        conn.greet_and_login(CAPS).await;
        conn.answer("+OK 1 100\r\n").await;
        conn.answer("+OK\r\nSubject: x\r\n\r\n").await;
        stream_huge_line(&mut conn, &counter).await;
    })
    .await;
    let mut opts = options(fake.port, Security::Plain, unused_tls());
    opts.max_line = 8192;
    let mut pop = Pop3Client::connect(opts).await.unwrap();
    pop.login("alice", "secret-alice").await.unwrap();
    let before = pop.bytes_received();
    let start = Instant::now();
    let err = pop.retr(1, u64::MAX).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, Error::LineTooLong { max: 8192 }), "{err:?}");
    let read = pop.bytes_received() - before;
    let replies = "+OK 1 100\r\n+OK\r\nSubject: x\r\n\r\n".len() as u64;
    eprintln!("2 GiB body line: error after {elapsed:?}, {read} bytes read by the client");
    assert!(read <= replies + 8192 + 2, "client read {read} bytes");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    drop(pop);
    fake.finish().await;
    assert!(written.load(Ordering::Relaxed) < 64 << 20);
}

#[tokio::test]
async fn endless_listing_is_capped() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.greet_and_login(CAPS).await;
        conn.answer("+OK\r\n").await;
        for i in 1..u32::MAX {
            if conn
                .raw()
                .write_all(format!("{i} uid{i}\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    })
    .await;
    let mut opts = options(fake.port, Security::Plain, unused_tls());
    opts.max_entries = 1000;
    let mut pop = Pop3Client::connect(opts).await.unwrap();
    pop.login("alice", "secret-alice").await.unwrap();
    let err = pop.uidl().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyEntries {
                command: "UIDL",
                max: 1000
            }
        ),
        "{err:?}"
    );
}

// --- size caps ----------------------------------------------------------

#[tokio::test]
async fn retr_refuses_before_downloading_when_list_says_too_large() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.greet_and_login(CAPS).await;
        conn.answer("+OK 1 5000000\r\n").await;
        conn.answer("+OK\r\n").await; // NOOP
        conn.answer("+OK bye\r\n").await; // QUIT
    })
    .await;
    let mut pop = logged_in(&fake, Duration::from_secs(5)).await;
    let err = pop.retr(1, 1_000_000).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::MessageTooLarge {
                msg: 1,
                max: 1_000_000
            }
        ),
        "{err:?}"
    );
    // Nothing was downloaded and the session is fine.
    pop.noop().await.unwrap();
    pop.quit().await.unwrap();
    let received = fake.finish().await;
    assert_eq!(received[3..], ["LIST 1", "NOOP", "QUIT"]);
}

#[tokio::test]
async fn retr_cap_is_enforced_while_reading_when_the_server_lies() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.greet_and_login(CAPS).await;
        conn.answer("+OK 1 10\r\n").await;
        let mut reply = String::from("+OK\r\n");
        for _ in 0..2000 {
            reply.push_str("0123456789012345678901234567890123456789\r\n");
        }
        reply.push_str(".\r\n");
        conn.answer(reply).await;
        conn.stall().await;
    })
    .await;
    let mut pop = logged_in(&fake, Duration::from_secs(5)).await;
    let before = pop.bytes_received();
    let err = pop.retr(1, 1000).await.unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { msg: 1, max: 1000 }),
        "{err:?}"
    );
    assert!(pop.bytes_received() - before < 70_000);
    assert!(matches!(pop.noop().await, Err(Error::SessionBroken)));
}

#[tokio::test]
async fn top_headers_are_capped() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.greet_and_login(CAPS).await;
        conn.answer("+OK\r\nSubject: 0123456789\r\nX-Pad: 0123456789\r\n\r\n.\r\n")
            .await;
        conn.answer("+OK\r\nSubject: 0123456789\r\nX-Pad: 0123456789\r\n\r\n.\r\n")
            .await;
        conn.stall().await;
    })
    .await;
    let mut pop = logged_in(&fake, Duration::from_secs(5)).await;
    let headers = pop.top_headers(1, 1000).await.unwrap();
    assert_eq!(headers, b"Subject: 0123456789\r\nX-Pad: 0123456789\r\n\r\n");
    let err = pop.top_headers(1, 30).await.unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { .. }), "{err:?}");
    let received = fake.received();
    assert_eq!(received[3..], ["TOP 1 0", "TOP 1 0"]);
}

// --- STLS ---------------------------------------------------------------

#[tokio::test]
async fn stls_not_offered_fails_without_sending_credentials() {
    for capa in [
        "+OK\r\nUSER\r\nSASL PLAIN\r\nUIDL\r\n.\r\n",
        "-ERR unknown command\r\n",
    ] {
        let pki = pki();
        let fake = Fake::start(Some(pki.server.clone()), move |mut conn| async move {
            conn.send("+OK ready\r\n").await;
            conn.answer(capa).await;
            // Read whatever else the client sends, until it hangs up.
            while conn.answer("+OK\r\n").await.is_some() {}
        })
        .await;
        let err = Pop3Client::connect(options(fake.port, Security::StartTls, pki.client))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::StlsNotOffered), "{err:?}");
        assert!(!err.is_transient());
        let received = fake.finish().await;
        assert_eq!(received, ["CAPA"], "the client sent more than CAPA");
    }
}

#[tokio::test]
async fn stls_upgrade_then_auth_plain_over_tls() {
    let pki = pki();
    let fake = Fake::start(Some(pki.server.clone()), |mut conn| async move {
        conn.send("+OK ready\r\n").await;
        conn.answer("+OK\r\nSTLS\r\nUSER\r\n.\r\n").await;
        conn.answer("+OK Begin TLS\r\n").await;
        conn.start_tls().await;
        conn.answer("+OK\r\nUSER\r\nSASL PLAIN LOGIN\r\nUIDL\r\n.\r\n")
            .await;
        conn.answer("+OK Logged in.\r\n").await;
        conn.answer("+OK 2 300\r\n").await;
        conn.answer("+OK bye\r\n").await;
    })
    .await;
    let mut pop = Pop3Client::connect(options(fake.port, Security::StartTls, pki.client))
        .await
        .unwrap();
    assert!(pop.is_tls());
    let caps = pop.capabilities().unwrap();
    assert!(caps.has_sasl("plain"));
    assert!(
        !caps.has("STLS"),
        "capabilities from before TLS must be dropped"
    );
    pop.login("alice@isp-a.test", "secret-alice").await.unwrap();
    let stat = pop.stat().await.unwrap();
    assert_eq!((stat.count, stat.size), (2, 300));
    pop.quit().await.unwrap();
    let received = fake.finish().await;
    assert_eq!(received[..3], ["CAPA", "STLS", "CAPA"]);
    let blob = received[3].strip_prefix("AUTH PLAIN ").unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .unwrap();
    assert_eq!(decoded, b"\0alice@isp-a.test\0secret-alice");
    assert_eq!(received[4..], ["STAT", "QUIT"]);
}

#[tokio::test]
async fn data_injected_after_stls_reply_is_refused() {
    let pki = pki();
    let fake = Fake::start(Some(pki.server.clone()), |mut conn| async move {
        conn.send("+OK ready\r\n").await;
        conn.answer("+OK\r\nSTLS\r\n.\r\n").await;
        conn.answer("+OK Begin TLS\r\n+OK\r\nSASL PLAIN\r\n.\r\n")
            .await;
        conn.stall().await;
    })
    .await;
    let err = Pop3Client::connect(options(fake.port, Security::StartTls, pki.client))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn untrusted_certificate_is_a_tls_error() {
    let server = pki();
    let other = pki();
    let fake = Fake::start_tls(server.server.clone(), |mut conn| async move {
        conn.send("+OK ready\r\n").await;
    })
    .await;
    let err = Pop3Client::connect(options(fake.port, Security::Tls, other.client))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn stall_in_tls_handshake_times_out() {
    let pki = pki();
    let fake = Fake::start(None, |conn| async move {
        conn.stall().await;
    })
    .await;
    let mut opts = options(fake.port, Security::Tls, pki.client);
    opts.timeout = Duration::from_millis(300);
    let start = Instant::now();
    let err = Pop3Client::connect(opts).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                what: "TLS handshake",
                ..
            }
        ),
        "{err:?}"
    );
    assert_within(start, Duration::from_millis(300));
}

// --- login --------------------------------------------------------------

#[tokio::test]
async fn err_on_pass_is_auth_failed_and_never_shows_the_password() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.send("+OK ready\r\n").await;
        conn.answer("+OK\r\nUSER\r\n.\r\n").await;
        conn.answer("+OK\r\n").await;
        conn.answer("-ERR [AUTH] wrong password hunter2 for alice\r\n")
            .await;
        conn.answer("+OK bye\r\n").await;
    })
    .await;
    let mut pop = plain_client(&fake, Duration::from_secs(5)).await.unwrap();
    let err = pop.login("alice", "hunter2").await.unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
    assert!(!err.is_transient());
    let shown = format!("{err} {err:?} {pop:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    // -ERR leaves the session usable.
    pop.quit().await.unwrap();
    let received = fake.finish().await;
    assert_eq!(received, ["CAPA", "USER alice", "PASS hunter2", "QUIT"]);
}

#[tokio::test]
async fn err_on_auth_plain_is_auth_failed_and_the_blob_is_redacted() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.send("+OK ready\r\n").await;
        conn.answer("+OK\r\nSASL PLAIN\r\n.\r\n").await;
        let line = conn.line().await.unwrap();
        let echo = format!("-ERR [AUTH] rejected {line}\r\n");
        conn.send(echo).await;
        conn.stall().await;
    })
    .await;
    let mut pop = plain_client(&fake, Duration::from_secs(5)).await.unwrap();
    let err = pop.login("alice", "secret-alice").await.unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
    let blob = base64::engine::general_purpose::STANDARD.encode(b"\0alice\0secret-alice");
    assert!(!err.to_string().contains(&blob), "{err}");
}

#[tokio::test]
async fn mailbox_in_use_is_a_temporary_failure() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.send("+OK ready\r\n").await;
        conn.answer("+OK\r\nUSER\r\n.\r\n").await;
        conn.answer("+OK\r\n").await;
        conn.answer("-ERR [IN-USE] Mailbox is locked by another session\r\n")
            .await;
        conn.stall().await;
    })
    .await;
    let mut pop = plain_client(&fake, Duration::from_secs(5)).await.unwrap();
    let err = pop.login("alice", "secret-alice").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::TemporaryFailure {
                command: "PASS",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn long_credentials_use_auth_plain_without_initial_response() {
    let user = "u".repeat(150);
    let password = "p".repeat(150);
    let fake = Fake::start(None, |mut conn| async move {
        conn.send("+OK ready\r\n").await;
        conn.answer("+OK\r\nSASL PLAIN\r\n.\r\n").await;
        conn.answer("+ \r\n").await;
        conn.answer("+OK welcome\r\n").await;
        conn.stall().await;
    })
    .await;
    let mut pop = plain_client(&fake, Duration::from_secs(5)).await.unwrap();
    pop.login(&user, &password).await.unwrap();
    let received = fake.received();
    assert_eq!(received[1], "AUTH PLAIN");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&received[2])
        .unwrap();
    assert_eq!(decoded, format!("\0{user}\0{password}").into_bytes());
}

#[tokio::test]
async fn user_pass_when_the_server_has_no_capa() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.send("+OK ready\r\n").await;
        conn.answer("-ERR unknown command\r\n").await;
        conn.answer("+OK\r\n").await;
        conn.answer("+OK\r\n").await;
        conn.stall().await;
    })
    .await;
    let mut pop = plain_client(&fake, Duration::from_secs(5)).await.unwrap();
    assert!(pop.capabilities().is_none());
    pop.login("alice", "secret-alice").await.unwrap();
    assert_eq!(fake.received(), ["CAPA", "USER alice", "PASS secret-alice"]);
}

#[tokio::test]
async fn no_login_method_offered() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.send("+OK ready\r\n").await;
        conn.answer("+OK\r\nTOP\r\nUIDL\r\nSASL\r\n.\r\n").await;
        conn.stall().await;
    })
    .await;
    let mut pop = plain_client(&fake, Duration::from_secs(5)).await.unwrap();
    let err = pop.login("alice", "secret-alice").await.unwrap_err();
    assert!(matches!(err, Error::NoLoginMethod), "{err:?}");
    assert_eq!(fake.received(), ["CAPA"]);
}

#[tokio::test]
async fn credentials_with_line_breaks_are_refused_before_sending() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.send("+OK ready\r\n").await;
        conn.answer("+OK\r\nUSER\r\n.\r\n").await;
        conn.stall().await;
    })
    .await;
    let mut pop = plain_client(&fake, Duration::from_secs(5)).await.unwrap();
    for (user, password) in [
        ("alice\r\nDELE 1", "x"),
        ("alice", "pw\r\nDELE 1"),
        ("a", "p\0w"),
    ] {
        let err = pop.login(user, password).await.unwrap_err();
        assert!(matches!(err, Error::InvalidCredentials(_)), "{err:?}");
        assert!(!format!("{err}").contains("DELE"));
    }
    assert_eq!(fake.received(), ["CAPA"]);
}

// --- replies ------------------------------------------------------------

#[tokio::test]
async fn server_text_in_errors_is_escaped_and_truncated() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.greet_and_login(CAPS).await;
        let long = "x".repeat(5000);
        conn.answer(format!("-ERR \x1b[2J\x07no such message {long}\r\n"))
            .await;
        conn.stall().await;
    })
    .await;
    let mut pop = logged_in(&fake, Duration::from_secs(5)).await;
    let err = pop.dele(9).await.unwrap_err();
    let Error::Server { command, message } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*command, "DELE");
    assert!(
        message.starts_with("\\u{1b}[2J\\u{7}no such message"),
        "{message}"
    );
    assert!(!message.chars().any(char::is_control));
    assert!(message.chars().count() <= 161);
    assert!(message.ends_with('…'));
}

#[tokio::test]
async fn bodies_are_unstuffed_exactly() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.greet_and_login(CAPS).await;
        // An empty message.
        conn.answer("+OK 1 0\r\n").await;
        conn.answer("+OK 0 octets\r\n.\r\n").await;
        // Lines that are or start with dots, and one that did not end in
        // CRLF (the server added it).
        conn.answer("+OK 2 30\r\n").await;
        conn.answer("+OK\r\n..\r\n...leading\r\n.. \r\nlast\r\n.\r\n")
            .await;
        conn.stall().await;
    })
    .await;
    let mut pop = logged_in(&fake, Duration::from_secs(5)).await;
    assert_eq!(pop.retr(1, 100).await.unwrap(), b"");
    assert_eq!(
        pop.retr(2, 100).await.unwrap(),
        b".\r\n..leading\r\n. \r\nlast\r\n"
    );
}

#[tokio::test]
async fn bare_lf_line_endings_are_tolerated() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.send("+OK ready\n").await;
        conn.answer("+OK\nUSER\nUIDL\n.\n").await;
        conn.answer("+OK\n").await;
        conn.answer("+OK\n").await;
        conn.answer("+OK\n1 abc\n2 def\n.\n").await;
        conn.answer("+OK 1 9\n").await;
        conn.answer("+OK\nSubject: x\n\nbody\n.\n").await;
        conn.stall().await;
    })
    .await;
    let mut pop = logged_in(&fake, Duration::from_secs(5)).await;
    assert_eq!(
        pop.uidl().await.unwrap(),
        [(1, "abc".to_owned()), (2, "def".to_owned())]
    );
    assert_eq!(
        pop.retr(1, 100).await.unwrap(),
        b"Subject: x\r\n\r\nbody\r\n"
    );
}

#[tokio::test]
async fn greeting_err_is_a_temporary_failure() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.send("-ERR too many connections\r\n").await;
    })
    .await;
    let err = plain_client(&fake, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TemporaryFailure {
                command: "greeting",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn quit_reports_whether_the_server_confirmed() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.greet_and_login(CAPS).await;
        conn.answer("+OK marked\r\n").await;
        conn.answer("-ERR [SYS/PERM] some deleted messages not removed\r\n")
            .await;
    })
    .await;
    let mut pop = logged_in(&fake, Duration::from_secs(5)).await;
    pop.dele(1).await.unwrap();
    let err = pop.quit().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Server {
                command: "QUIT",
                ..
            }
        ),
        "{err:?}"
    );

    // A server that hangs up instead of answering QUIT.
    let fake = Fake::start(None, |mut conn| async move {
        conn.greet_and_login(CAPS).await;
        conn.answer("+OK marked\r\n").await;
        conn.line().await;
    })
    .await;
    let mut pop = logged_in(&fake, Duration::from_secs(5)).await;
    pop.dele(1).await.unwrap();
    assert!(matches!(pop.quit().await, Err(Error::ConnectionClosed)));
}

#[tokio::test]
async fn retr_allows_the_crlf_a_server_adds_beyond_list_size() {
    let fake = Fake::start(None, |mut conn| async move {
        conn.greet_and_login(CAPS).await;
        // Stored as "123456789" (9 bytes); sent with the CRLF the server adds.
        conn.answer("+OK 1 9\r\n").await;
        conn.answer("+OK\r\n123456789\r\n.\r\n").await;
        conn.answer("+OK 1 9\r\n").await;
        conn.stall().await;
    })
    .await;
    let mut pop = logged_in(&fake, Duration::from_secs(5)).await;
    assert_eq!(pop.retr(1, 9).await.unwrap(), b"123456789\r\n");
    let err = pop.retr(1, 8).await.unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { msg: 1, max: 8 }),
        "{err:?}"
    );
}

/// The courier runs sessions in spawned tasks: every future must be Send.
#[allow(dead_code)]
fn futures_are_send(mut pop: Pop3Client, options: peerd_pop3::ConnectOptions) {
    fn send<T: Send>(_: T) {}
    send(Pop3Client::connect(options));
    send(pop.capa());
    send(pop.login("user", "password"));
    send(pop.stat());
    send(pop.list());
    send(pop.list_one(1));
    send(pop.uidl());
    send(pop.top_headers(1, 1));
    send(pop.retr(1, 1));
    send(pop.dele(1));
    send(pop.rset());
    send(pop.noop());
    send(pop.quit());
}
