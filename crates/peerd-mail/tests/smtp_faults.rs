//! Sending against SMTP servers that misbehave on purpose, in process:
//! faults the real Postfix cannot be made to produce. Every case must end
//! in a clear error, within the step timeout, with bounded memory, and
//! never with the password on the wire in clear.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use peerd_config::{Login, Secret, Security, SmtpConfig};
use peerd_core::MailAddress;
use peerd_mail::smtp::{MAX_REPLY_BYTES, SendError, Submission};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

const LIMIT: Duration = Duration::from_secs(2);

/// What the fake server does after accepting.
type Script = fn(TcpStream, Arc<Mutex<Vec<String>>>) -> futures::future::BoxFuture<'static, ()>;

async fn server(script: Script) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(script(conn, Arc::clone(&log)));
        }
    });
    (port, seen)
}

fn config(port: u16, security: Security) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security,
        login: Some(Login {
            username: "alice@isp-a.test".into(),
            password: Secret::Inline(Zeroizing::new("hunter2-secret".into())),
        }),
        ca_file: None,
    }
}

async fn send(port: u16, security: Security) -> Result<(), SendError> {
    let mut s = Submission::new(
        &config(port, security),
        Some(Zeroizing::new("hunter2-secret".into())),
        LIMIT,
    )
    .unwrap();
    let from: MailAddress = "alice@isp-a.test".parse().unwrap();
    let to: MailAddress = "hitoshi@isp-b.test".parse().unwrap();
    s.send(&from, &to, b"Subject: x\r\n\r\nhello\r\n").await
}

/// Reads client lines, logging each, answering with `answer(line)`.
async fn dialogue(
    conn: TcpStream,
    log: Arc<Mutex<Vec<String>>>,
    greeting: &str,
    answer: fn(&str) -> Option<&'static str>,
) {
    let (r, mut w) = conn.into_split();
    let mut r = BufReader::new(r);
    if w.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    let mut in_data = false;
    let mut line = String::new();
    while r.read_line(&mut line).await.unwrap_or(0) > 0 {
        log.lock().await.push(line.trim_end().to_owned());
        let reply = if in_data {
            if line == ".\r\n" {
                in_data = false;
                Some("250 2.0.0 queued\r\n")
            } else {
                None
            }
        } else if line.to_ascii_uppercase().starts_with("DATA") {
            in_data = true;
            Some("354 go ahead\r\n")
        } else {
            answer(&line)
        };
        line.clear();
        if let Some(reply) = reply
            && w.write_all(reply.as_bytes()).await.is_err()
        {
            return;
        }
    }
}

#[tokio::test]
async fn starttls_is_mandatory_and_no_credentials_leave_in_clear() {
    let (port, seen) = server(|conn, log| {
        Box::pin(dialogue(conn, log, "220 fake ESMTP\r\n", |line| {
            let l = line.to_ascii_uppercase();
            Some(if l.starts_with("EHLO") {
                // offers AUTH, but no STARTTLS
                "250-fake\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
            } else if l.starts_with("QUIT") {
                "221 bye\r\n"
            } else {
                "250 ok\r\n"
            })
        }))
    })
    .await;
    let err = send(port, Security::StartTls).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.message().contains("does not offer STARTTLS"), "{err}");
    let seen = seen.lock().await.join("\n");
    assert!(seen.starts_with("EHLO"), "{seen}");
    assert!(
        !seen.contains("AUTH") && !seen.contains("MAIL"),
        "sent in clear: {seen}"
    );
    assert!(!seen.contains("hunter2"));
}

#[tokio::test]
async fn a_stalled_greeting_times_out() {
    let (port, _) = server(|conn, _| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(conn);
        })
    })
    .await;
    let start = Instant::now();
    let err = send(port, Security::None).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.message().contains("no answer within"), "{err}");
    assert!(start.elapsed() < LIMIT * 3, "{:?}", start.elapsed());
}

#[tokio::test]
async fn a_stall_in_the_middle_of_a_reply_times_out() {
    let (port, _) = server(|mut conn, _| {
        Box::pin(async move {
            let _ = conn.write_all(b"220 fake\r\n").await;
            let mut buf = [0u8; 512];
            let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await;
            // half a multi-line EHLO reply, then silence
            let _ = conn.write_all(b"250-fake\r\n250-AUTH PL").await;
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
    })
    .await;
    let start = Instant::now();
    let err = send(port, Security::None).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(start.elapsed() < LIMIT * 3, "{:?}", start.elapsed());
}

#[tokio::test]
async fn an_endless_line_is_cut_off_with_bounded_reading() {
    static WRITTEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (port, _) = server(|mut conn, _| {
        Box::pin(async move {
            // a greeting that never ends: "220 xxxxxxxx..." up to 2 GB
            let chunk = vec![b'x'; 64 * 1024];
            let _ = conn.write_all(b"220 ").await;
            for _ in 0..(2u64 << 30) / chunk.len() as u64 {
                if conn.write_all(&chunk).await.is_err() {
                    return;
                }
                WRITTEN.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        })
    })
    .await;
    let err = send(port, Security::None).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    // The client stopped reading near the cap: what the server managed to
    // write is the cap plus socket buffers, not gigabytes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = WRITTEN.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        written < MAX_REPLY_BYTES + (16 << 20),
        "server wrote {written} bytes"
    );
}

#[tokio::test]
async fn a_connection_dropped_mid_reply_is_transient() {
    let (port, _) = server(|mut conn, _| {
        Box::pin(async move {
            let _ = conn.write_all(b"220 fake\r\n").await;
            let mut buf = [0u8; 512];
            let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await;
            let _ = conn.write_all(b"250-fake\r\n").await;
            // and gone
        })
    })
    .await;
    let err = send(port, Security::None).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn garbage_instead_of_smtp_is_an_error() {
    let (port, _) = server(|mut conn, _| {
        Box::pin(async move {
            let _ = conn.write_all(b"\x00\xff\xfe HELLO? not smtp\r\n").await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
    })
    .await;
    assert!(send(port, Security::None).await.is_err());
}

#[tokio::test]
async fn refused_recipients_are_permanent_and_4xx_transient() {
    let (port, _) = server(|conn, log| {
        Box::pin(dialogue(conn, log, "220 fake\r\n", |line| {
            let l = line.to_ascii_uppercase();
            Some(if l.starts_with("EHLO") {
                "250-fake\r\n250 AUTH PLAIN\r\n"
            } else if l.starts_with("AUTH") {
                "235 ok\r\n"
            } else if l.starts_with("RCPT") {
                "550 5.1.1 no such user\r\n"
            } else {
                "250 ok\r\n"
            })
        }))
    })
    .await;
    let err = send(port, Security::None).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.message().contains("550"), "{err}");

    let (port, _) = server(|conn, log| {
        Box::pin(dialogue(conn, log, "220 fake\r\n", |line| {
            let l = line.to_ascii_uppercase();
            Some(if l.starts_with("EHLO") {
                "250-fake\r\n250 AUTH PLAIN\r\n"
            } else if l.starts_with("AUTH") {
                "235 ok\r\n"
            } else if l.starts_with("MAIL") {
                "451 4.3.0 try again later\r\n"
            } else {
                "250 ok\r\n"
            })
        }))
    })
    .await;
    let err = send(port, Security::None).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn refused_authentication_is_permanent_and_does_not_echo_the_password() {
    let (port, _) = server(|conn, log| {
        Box::pin(dialogue(conn, log, "220 fake\r\n", |line| {
            let l = line.to_ascii_uppercase();
            Some(if l.starts_with("EHLO") {
                "250-fake\r\n250 AUTH PLAIN\r\n"
            } else if l.starts_with("AUTH") {
                "535 5.7.8 authentication failed\r\n"
            } else {
                "250 ok\r\n"
            })
        }))
    })
    .await;
    let err = send(port, Security::None).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(!format!("{err} {err:?}").contains("hunter2"));
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let err = send(port, Security::None).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}
