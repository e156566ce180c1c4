//! The client against the real Dovecot of the project's mail stack
//! (`peerd_testkit::MailStack`): STLS and POP3S logins, LIST, UIDL, TOP,
//! RETR with byte-exact bodies (dot-stuffed lines included), DELE + QUIT,
//! and what happens without QUIT. Needs root, as CI has; fails loudly
//! without the stack, never passes silently.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use peerd_pop3::{ConnectOptions, Error, Pop3Client, Security};
use peerd_testkit::MailStack;

const USER: &str = "hitoshi@isp-b.test";

fn options(stack: &MailStack, mode: Security) -> ConnectOptions {
    let port = match mode {
        Security::Tls => stack.ports().pop3s,
        Security::StartTls | Security::Plain => stack.ports().pop3,
    };
    let mut options = ConnectOptions::new(
        stack.addr().to_string(),
        port,
        mode,
        stack.rustls_client_config(),
    );
    options.server_name = "localhost".to_owned();
    options.timeout = Duration::from_secs(10);
    options
}

async fn login(stack: &MailStack, mode: Security) -> Pop3Client {
    let mut pop = Pop3Client::connect(options(stack, mode)).await.unwrap();
    assert!(pop.is_tls());
    pop.login(USER, &stack.password(USER)).await.unwrap();
    pop
}

/// The test messages, as appended (CRLF line endings), and what RETR must
/// return for each.
fn messages() -> Vec<(Vec<u8>, Vec<u8>)> {
    let plain =
        b"From: alice@isp-a.test\r\nTo: hitoshi@isp-b.test\r\nSubject: plain\r\n\r\nHello.\r\n"
            .to_vec();
    let dots = b"From: alice@isp-a.test\r\nTo: hitoshi@isp-b.test\r\nSubject: dots\r\n\r\n.\r\n..\r\n.leading dot\r\n...three\r\n. \r\nend\r\n".to_vec();
    let no_final_crlf =
        b"From: alice@isp-a.test\r\nTo: hitoshi@isp-b.test\r\nSubject: no final CRLF\r\n\r\nlast line".to_vec();
    let mut long =
        b"From: alice@isp-a.test\r\nTo: hitoshi@isp-b.test\r\nSubject: long line\r\n\r\n".to_vec();
    long.extend(std::iter::repeat_n(b'x', 20_000));
    long.extend_from_slice(b"\r\n.\r\n");
    let mut with_crlf = no_final_crlf.clone();
    with_crlf.extend_from_slice(b"\r\n");
    vec![
        (plain.clone(), plain),
        (dots.clone(), dots),
        (no_final_crlf, with_crlf),
        (long.clone(), long),
    ]
}

fn header_section(raw: &[u8]) -> &[u8] {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &raw[..end + 4]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_session_over_stls_and_pop3s_against_dovecot() {
    let stack = MailStack::start().await;
    let messages = messages();
    for (raw, _) in &messages {
        stack.append(USER, "INBOX", raw, &[]).await.unwrap();
    }

    // STLS: capabilities are read again over TLS, AUTH PLAIN is used.
    let mut pop = login(&stack, Security::StartTls).await;
    let caps = pop.capabilities().unwrap();
    assert!(caps.has("UIDL") && caps.has("TOP"), "{caps:?}");
    assert!(caps.has_sasl("PLAIN"), "{caps:?}");
    assert!(!caps.has("STLS"), "STLS listed again after TLS: {caps:?}");

    let stat = pop.stat().await.unwrap();
    assert_eq!(stat.count, 4);
    let list = pop.list().await.unwrap();
    let numbers: Vec<u32> = list.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    // Dovecot sizes a message as stored: without the CRLF it adds on RETR
    // when the message did not end with one.
    for ((msg, size), (raw, _)) in list.iter().zip(&messages) {
        assert_eq!(*size, raw.len() as u64, "LIST size of message {msg}");
    }
    assert_eq!(stat.size, list.iter().map(|(_, s)| s).sum::<u64>());
    let uidl = pop.uidl().await.unwrap();
    assert_eq!(uidl.len(), 4);

    for (msg, (raw, expected)) in (1u32..).zip(&messages) {
        let headers = pop.top_headers(msg, 64 * 1024).await.unwrap();
        assert_eq!(headers, header_section(raw), "TOP {msg} 0");
        let body = pop.retr(msg, 64 * 1024).await.unwrap();
        assert_eq!(body, *expected, "RETR {msg}");
        // A cap of exactly LIST's size is enough.
        let exact = pop.retr(msg, raw.len() as u64).await.unwrap();
        assert_eq!(exact, *expected, "RETR {msg} with the cap at its size");
    }

    // A cap below LIST's size: refused without downloading; session fine.
    let err = pop.retr(4, 1000).await.unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { msg: 4, .. }),
        "{err:?}"
    );
    // A cap below the header size while reading TOP.
    let err = pop.top_headers(1, 10).await.unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { msg: 1, .. }),
        "{err:?}"
    );
    drop(pop);

    // POP3S: delete message 2, QUIT commits.
    let mut pop = login(&stack, Security::Tls).await;
    assert_eq!(pop.uidl().await.unwrap(), uidl, "UIDs are stable");
    pop.dele(2).await.unwrap();
    let err = pop.retr(2, 64 * 1024).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Server {
                command: "LIST",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(pop.stat().await.unwrap().count, 3);
    pop.quit().await.unwrap();

    assert_eq!(stack.message_count(USER, "INBOX").await.unwrap(), 3);
    let mut pop = login(&stack, Security::Tls).await;
    let after: Vec<String> = pop
        .uidl()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, uid)| uid)
        .collect();
    let expected: Vec<String> = uidl
        .iter()
        .filter(|(n, _)| *n != 2)
        .map(|(_, uid)| uid.clone())
        .collect();
    assert_eq!(after, expected);
    pop.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_need_quit_and_bad_passwords_fail_against_dovecot() {
    let stack = MailStack::start().await;
    let (raw, _) = &messages()[0];
    stack.append(USER, "INBOX", raw, &[]).await.unwrap();
    stack.append(USER, "INBOX", raw, &[]).await.unwrap();

    // DELE, then the connection drops without QUIT: nothing is deleted.
    let mut pop = login(&stack, Security::StartTls).await;
    pop.dele(1).await.unwrap();
    pop.dele(2).await.unwrap();
    drop(pop);
    // RSET unmarks.
    let mut pop = login(&stack, Security::Tls).await;
    assert_eq!(pop.stat().await.unwrap().count, 2);
    pop.dele(1).await.unwrap();
    pop.rset().await.unwrap();
    pop.noop().await.unwrap();
    pop.quit().await.unwrap();
    assert_eq!(stack.message_count(USER, "INBOX").await.unwrap(), 2);

    // A wrong password: AuthFailed, not transient, password not shown.
    let mut pop = Pop3Client::connect(options(&stack, Security::StartTls))
        .await
        .unwrap();
    let err = pop.login(USER, "not-the-password").await.unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(!format!("{err} {err:?}").contains("not-the-password"));
}
