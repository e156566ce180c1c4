//! The harness against the real Postfix + Dovecot stack. Needs root (CI is
//! root); without the stack every test here fails with the start script's
//! message, none is skipped.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerd_testkit::{Error, MailStack, SmtpSecurity, StoredMail};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(15);
const ALICE: &str = "alice@isp-a.test";
const HITOSHI: &str = "hitoshi@isp-b.test";
const MALLORY: &str = "mallory@isp-b.test";

fn mail(from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@peerd.test>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads one line and checks its start.
async fn expect_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>, prefix: &str) -> String {
    let mut line = String::new();
    tokio::time::timeout(WAIT, r.read_line(&mut line))
        .await
        .expect("timed out reading a line")
        .expect("reading a line");
    assert!(
        line.starts_with(prefix),
        "expected {prefix:?}, got {line:?}"
    );
    line
}

async fn tls<S: AsyncRead + AsyncWrite + Unpin>(
    config: Arc<rustls::ClientConfig>,
    name: &str,
    io: S,
) -> std::io::Result<tokio_rustls::client::TlsStream<S>> {
    let name = ServerName::try_from(name.to_owned()).expect("valid TLS name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, io)
        .await
}

#[tokio::test]
async fn submission_with_starttls_and_auth_delivers_to_the_other_domain() {
    let stack = MailStack::start().await;
    let first = mail(ALICE, HITOSHI, "via-starttls", "hello over STARTTLS");
    stack
        .send_via_submission(ALICE, ALICE, &[HITOSHI], &first, SmtpSecurity::StartTls)
        .await
        .expect("submission with STARTTLS + AUTH");
    let second = mail(ALICE, HITOSHI, "via-tls", "hello over implicit TLS");
    stack
        .send_via_submission(ALICE, ALICE, &[HITOSHI], &second, SmtpSecurity::Tls)
        .await
        .expect("submission over implicit TLS + AUTH");
    stack
        .wait_for_count(HITOSHI, "INBOX", 2, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.log_tail()));

    let stored = stack.fetch_all(HITOSHI, "INBOX").await.expect("fetch_all");
    assert_eq!(stored.len(), 2);
    // two queue entries: Postfix may deliver them in either order
    for body in ["hello over STARTTLS", "hello over implicit TLS"] {
        assert!(
            stored.iter().any(|m| contains(&m.raw, body.as_bytes())),
            "{body:?} was not delivered"
        );
    }
    for m in &stored {
        assert!(contains(&m.raw, b"Delivered-To: hitoshi@isp-b.test"));
        assert!(m.flags.is_empty(), "nothing marks the mail: {:?}", m.flags);
    }
    assert!(stored[0].uid < stored[1].uid);
    // alice's own mailbox is untouched, and hitoshi@isp-a.test is another person
    assert_eq!(stack.message_count(ALICE, "INBOX").await.expect("count"), 0);
    assert_eq!(
        stack
            .message_count("hitoshi@isp-a.test", "INBOX")
            .await
            .expect("count"),
        0
    );
}

#[tokio::test]
async fn submission_refuses_relaying_without_auth_and_unknown_recipients() {
    let stack = MailStack::start().await;
    // MX port: no AUTH, only the stack's own users
    stack
        .send_raw_via_mx(
            "someone@foreign.test",
            &[MALLORY],
            &mail("someone@foreign.test", MALLORY, "foreign", "hi"),
        )
        .await
        .expect("the MX port takes mail for a local user");
    let unknown = stack
        .send_raw_via_mx(
            "someone@foreign.test",
            &["nobody@isp-b.test"],
            b"Subject: x\r\n\r\nx\r\n",
        )
        .await
        .expect_err("unknown user");
    assert!(unknown.to_string().contains("550"), "{unknown}");
    let relay = stack
        .send_raw_via_mx(
            "someone@foreign.test",
            &["x@elsewhere.test"],
            b"Subject: x\r\n\r\nx\r\n",
        )
        .await
        .expect_err("relaying");
    assert!(relay.to_string().contains("Relay access denied"), "{relay}");
    // a wrong password is refused with a 535
    let wrong = stack
        .send_via_submission(
            "alice@isp-a.test-nope",
            ALICE,
            &[HITOSHI],
            b"x\r\n",
            SmtpSecurity::StartTls,
        )
        .await
        .expect_err("bad login");
    assert!(wrong.to_string().contains("535"), "{wrong}");
    stack
        .wait_for_count(MALLORY, "INBOX", 1, WAIT)
        .await
        .expect("foreign mail arrives");
    assert_eq!(
        stack.message_count(MALLORY, "INBOX").await.expect("count"),
        1
    );
    stack.expunge_all(MALLORY, "INBOX").await.expect("expunge");
    assert_eq!(
        stack.message_count(MALLORY, "INBOX").await.expect("count"),
        0
    );
}

#[tokio::test]
async fn append_and_fetch_round_trip_bytes_and_flags_exactly() {
    let stack = MailStack::start().await;
    let mut big =
        b"From: a@b.test\r\nSubject: big\r\nContent-Type: application/octet-stream\r\n\r\n"
            .to_vec();
    for i in 0..20_000u32 {
        big.extend_from_slice(format!("line {i:05} {}\r\n", "x".repeat(40)).as_bytes());
    }
    let multipart = b"From: a@b.test\r\nSubject: multi\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe, \xe6\x97\xa5\xe6\x9c\xac\r\n.leading dot\r\n--b1--\r\n"
        .to_vec();
    let cases: Vec<(Vec<u8>, Vec<&str>)> = vec![
        (mail(ALICE, HITOSHI, "plain", "no flags"), vec![]),
        (mail(ALICE, HITOSHI, "seen", "seen"), vec!["\\Seen"]),
        (multipart, vec!["\\Flagged", "$Label1"]),
        (big, vec!["\\Answered", "\\Draft", "\\Seen"]),
        (b"Subject: no final newline".to_vec(), vec![]),
    ];
    for (raw, flags) in &cases {
        stack
            .append(HITOSHI, "INBOX", raw, flags)
            .await
            .expect("append");
    }
    stack
        .create_folder(HITOSHI, "Archive")
        .await
        .expect("create");
    stack
        .append(HITOSHI, "Archive", &cases[0].0, &["\\Seen"])
        .await
        .expect("append to Archive");
    // Junk exists from the start
    assert!(
        stack
            .fetch_all(HITOSHI, "Junk")
            .await
            .expect("Junk")
            .is_empty()
    );

    let check = |stored: &[StoredMail]| {
        assert_eq!(stored.len(), cases.len());
        for (m, (raw, flags)) in stored.iter().zip(&cases) {
            assert!(m.raw == *raw, "bytes differ for UID {}", m.uid);
            let mut got = m.flags.clone();
            got.sort();
            let mut want: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
            want.sort();
            assert_eq!(got, want, "flags of UID {}", m.uid);
        }
    };
    let first = stack.fetch_all(HITOSHI, "INBOX").await.expect("fetch_all");
    check(&first);
    // fetching sets nothing: a second look sees the same
    let second = stack
        .fetch_all(HITOSHI, "INBOX")
        .await
        .expect("fetch_all again");
    assert_eq!(first, second);
    let archive = stack.fetch_all(HITOSHI, "Archive").await.expect("Archive");
    assert_eq!(archive.len(), 1);
    assert_eq!(archive[0].flags, ["\\Seen"]);
    assert_eq!(
        stack.message_count(HITOSHI, "INBOX").await.expect("count"),
        5
    );

    // wait_for_count reports the count it saw when it gives up
    let e = stack
        .wait_for_count(HITOSHI, "INBOX", 6, Duration::from_millis(100))
        .await
        .expect_err("there are 5");
    assert!(
        matches!(&e, Error::Timeout { what, .. } if what.contains("holds 5")),
        "{e}"
    );
}

#[tokio::test]
async fn two_stacks_run_side_by_side_and_trust_only_their_own_ca() {
    let (a, b) = tokio::join!(MailStack::start(), MailStack::start());
    assert_ne!(a.ports(), b.ports());
    assert_ne!(a.state_dir(), b.state_dir());
    for (stack, subject) in [(&a, "on-a"), (&b, "on-b")] {
        stack
            .send_via_submission(
                ALICE,
                ALICE,
                &[HITOSHI],
                &mail(ALICE, HITOSHI, subject, subject),
                SmtpSecurity::StartTls,
            )
            .await
            .expect("send");
    }
    for (stack, subject) in [(&a, "on-a"), (&b, "on-b")] {
        stack
            .wait_for_count(HITOSHI, "INBOX", 1, WAIT)
            .await
            .expect("one each");
        let stored = stack.fetch_all(HITOSHI, "INBOX").await.expect("fetch");
        assert!(contains(
            &stored[0].raw,
            format!("Subject: {subject}").as_bytes()
        ));
    }
    // a's CA does not vouch for b's servers
    let tcp = TcpStream::connect((b.addr(), b.ports().imaps))
        .await
        .expect("connect");
    let err = tls(a.rustls_client_config(), "localhost", tcp)
        .await
        .expect_err("b's certificate is not trusted by a's config");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn rustls_accepts_every_tls_endpoint_and_name() {
    let stack = MailStack::start().await;
    let config = stack.rustls_client_config();
    let addr = stack.addr();
    let p = stack.ports();
    // implicit TLS, under every name in the certificate
    for name in ["localhost", "127.0.0.1", "isp-a.test", "mail.isp-b.test"] {
        let tcp = TcpStream::connect((addr, p.imaps)).await.expect("connect");
        let mut r = BufReader::new(tls(config.clone(), name, tcp).await.expect(name));
        expect_line(&mut r, "* OK").await;
    }
    for (port, greeting) in [(p.pop3s, "+OK"), (p.smtps, "220")] {
        let tcp = TcpStream::connect((addr, port)).await.expect("connect");
        let mut r = BufReader::new(tls(config.clone(), "localhost", tcp).await.expect("tls"));
        expect_line(&mut r, greeting).await;
    }
    // a name that is not in the certificate is refused
    let tcp = TcpStream::connect((addr, p.imaps)).await.expect("connect");
    let err = tls(config.clone(), "mail.example.org", tcp)
        .await
        .expect_err("wrong name");
    assert!(err.to_string().contains("certificate"), "{err}");

    // IMAP STARTTLS, then IDLE is offered
    let mut r = BufReader::new(TcpStream::connect((addr, p.imap)).await.expect("connect"));
    expect_line(&mut r, "* OK").await;
    r.get_mut()
        .write_all(b"a STARTTLS\r\n")
        .await
        .expect("write");
    expect_line(&mut r, "a OK").await;
    let mut r = BufReader::new(
        tls(config.clone(), "localhost", r.into_inner())
            .await
            .expect("tls"),
    );
    let login = format!("b LOGIN {HITOSHI} {}\r\n", stack.password(HITOSHI));
    r.get_mut()
        .write_all(login.as_bytes())
        .await
        .expect("write");
    let ok = expect_line(&mut r, "b OK").await;
    assert!(ok.contains("IDLE"), "{ok}");

    // POP3 STLS, then USER/PASS, UIDL and TOP
    let mut r = BufReader::new(TcpStream::connect((addr, p.pop3)).await.expect("connect"));
    expect_line(&mut r, "+OK").await;
    r.get_mut().write_all(b"STLS\r\n").await.expect("write");
    expect_line(&mut r, "+OK").await;
    let mut r = BufReader::new(tls(config, "localhost", r.into_inner()).await.expect("tls"));
    r.get_mut().write_all(b"CAPA\r\n").await.expect("write");
    let mut capa = String::new();
    loop {
        let line = expect_line(&mut r, "").await;
        if line == ".\r\n" {
            break;
        }
        capa.push_str(&line);
    }
    for cap in ["UIDL", "TOP", "USER", "SASL PLAIN LOGIN"] {
        assert!(capa.contains(cap), "{cap} missing from {capa}");
    }
    r.get_mut()
        .write_all(format!("USER {HITOSHI}\r\nPASS {}\r\n", stack.password(HITOSHI)).as_bytes())
        .await
        .expect("write");
    expect_line(&mut r, "+OK").await;
    expect_line(&mut r, "+OK").await;
}

#[tokio::test]
async fn imap_idle_is_woken_by_a_delivery() {
    let stack = MailStack::start().await;
    let mut session = stack.imap_login(HITOSHI).await.expect("login");
    session.select("INBOX").await.expect("select");
    let mut idle = session.idle();
    idle.init().await.expect("IDLE");
    let (wait, _stop) = idle.wait_with_timeout(WAIT);
    let sent = async {
        // give the server a moment to arm its watch before the mail lands
        tokio::time::sleep(Duration::from_millis(100)).await;
        stack
            .send_raw_via_mx(
                "someone@foreign.test",
                &[HITOSHI],
                &mail("someone@foreign.test", HITOSHI, "idle", "wake up"),
            )
            .await
            .expect("send");
        Instant::now()
    };
    let (woken, accepted) = tokio::join!(wait, sent);
    let latency = accepted.elapsed();
    match woken.expect("IDLE wait") {
        async_imap::extensions::idle::IdleResponse::NewData(_) => {},
        other => panic!(
            "IDLE was not woken by the delivery: {other:?}\n{}",
            stack.log_tail()
        ),
    }
    eprintln!("SMTP 250 -> IMAP IDLE push: {latency:?}");
    assert!(
        latency < Duration::from_secs(5),
        "IDLE push took {latency:?}"
    );
}

#[tokio::test]
async fn postfix_stops_and_starts_again_on_the_same_ports() {
    let stack = MailStack::start().await;
    let ports = stack.ports();
    stack.stop_postfix().await.expect("stop postfix");
    let err = stack
        .send_via_submission(
            ALICE,
            ALICE,
            &[HITOSHI],
            &mail(ALICE, HITOSHI, "down", "x"),
            SmtpSecurity::StartTls,
        )
        .await
        .expect_err("SMTP is down");
    assert!(err.to_string().contains("Connection refused"), "{err}");
    // IMAP is still up
    assert!(
        stack
            .fetch_all(HITOSHI, "INBOX")
            .await
            .expect("IMAP still up")
            .is_empty()
    );
    stack.start_postfix().await.expect("start postfix");
    assert_eq!(stack.ports(), ports);
    stack
        .send_via_submission(
            ALICE,
            ALICE,
            &[HITOSHI],
            &mail(ALICE, HITOSHI, "up", "x"),
            SmtpSecurity::StartTls,
        )
        .await
        .expect("SMTP is back");
    stack
        .wait_for_count(HITOSHI, "INBOX", 1, WAIT)
        .await
        .expect("delivered");

    // the same for Dovecot: Postfix queues while it is away, then delivers
    stack.stop_dovecot().await.expect("stop dovecot");
    stack
        .send_raw_via_mx(
            "someone@foreign.test",
            &[HITOSHI],
            &mail("someone@foreign.test", HITOSHI, "queued", "x"),
        )
        .await
        .expect("Postfix accepts while Dovecot is down");
    assert!(stack.imap_login(HITOSHI).await.is_err(), "IMAP is down");
    stack.start_dovecot().await.expect("start dovecot");
    stack
        .wait_for_count(HITOSHI, "INBOX", 2, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.log_tail()));
}

/// Pids of processes whose working directory is inside `dir` (the stack's
/// daemons all run there) and that are not zombies.
fn live_processes_in(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let entry = entry.expect("/proc entry");
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'));
        if cwd.starts_with(dir) && !zombie {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test]
async fn drop_stops_every_daemon_and_removes_the_state_dir() {
    let stack = MailStack::start().await;
    let dir = stack.state_dir().to_owned();
    let ports = stack.ports();
    let pids = live_processes_in(&dir);
    assert!(
        pids.len() >= 6,
        "postfix and dovecot run in {}: {pids:?}",
        dir.display()
    );
    let started = Instant::now();
    drop(stack);
    eprintln!("stop + purge took {:?}", started.elapsed());
    assert!(!dir.exists(), "{} is removed", dir.display());
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let gone = stat.is_empty()
            || stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'));
        assert!(gone, "pid {pid} still runs: {stat}");
    }
    for port in [
        ports.smtp,
        ports.smtps,
        ports.mx,
        ports.pop3,
        ports.pop3s,
        ports.imap,
        ports.imaps,
    ] {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "port {port} still answers"
        );
    }
}
