//! Two (or three) connectors with their own identities in network
//! namespaces of their own, joined by a veth pair: the real kernel, real
//! UDP, real QUIC and TLS. Root only (CI is root); see `support`.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use peerd_connect::{
    ConnectEvent, DisconnectReason, FailReason, OpenError, PeerState, RefusedReason, Tuning,
};
use peerd_core::{Identity, PeerName};
use sha2::Digest;
use support::{
    Host, PORT, Setup, TIMEOUT, bytes, cand, echo_round, echo_service, hash_service, key_of, pair,
    service, test,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A: u8 = 0x0a;
const B: u8 = 0x0b;

fn name(s: &str) -> PeerName {
    s.parse().expect("name")
}

/// A and B know each other; B offers `echo` (and A too, for streams the
/// other way).
async fn two_hosts(tuning: Tuning) -> (Host, Host, Arc<std::sync::atomic::AtomicUsize>) {
    let (na, nb) = pair().await;
    let (echo_b, count_b) = echo_service(&nb).await;
    let (echo_a, _) = echo_service(&na).await;
    let mut sa = Setup::new(&[("b", key_of(B))]).service("echo", echo_a, &["b"]);
    sa.tuning = tuning.clone();
    let mut sb = Setup::new(&[("a", key_of(A))]).service("echo", echo_b, &["a"]);
    sb.tuning = tuning;
    let a = Host::start("a", &na, A, sa).await;
    let b = Host::start("b", &nb, B, sb).await;
    (a, b, count_b)
}

fn quick() -> Tuning {
    Tuning {
        connect_timeout: Duration::from_secs(5),
        ..Tuning::default()
    }
}

#[test]
fn parallel_streams_carry_bytes_both_ways_and_the_hello_acknowledges() {
    test(|| async {
        let (a, mut b, count_b) = two_hosts(quick()).await;
        a.handle
            .connect(&name("b"), vec![cand(&format!("10.9.0.2:{PORT}"))], 1234)
            .await
            .unwrap();
        let addr = a.handle.wait_connected(&name("b"), TIMEOUT).await.unwrap();
        assert_eq!(addr.to_string(), format!("10.9.0.2:{PORT}"));
        let connected = b
            .event("connected", |e| match e {
                ConnectEvent::Connected { peer, .. } => Some(peer.clone()),
                _ => None,
            })
            .await;
        assert_eq!(connected, name("a"));
        // B learns that A accepted its announcement 1234, through the hello.
        let acked = b
            .event("acknowledged", |e| match e {
                ConnectEvent::Acknowledged { peer, sequence } => Some((peer.clone(), *sequence)),
                _ => None,
            })
            .await;
        assert_eq!(acked, (name("a"), 1234));
        assert!(matches!(
            b.handle.state(&name("a")),
            PeerState::Connected { .. }
        ));

        // Eight streams at once from A to B's echo service, each with its
        // own bytes.
        let mut jobs = Vec::new();
        for i in 0..8u64 {
            let h = a.handle.clone();
            jobs.push(tokio::spawn(async move {
                let mut s = h.open(&name("b"), Some(service("echo"))).await.unwrap();
                let data = bytes(256 * 1024 + usize::try_from(i).unwrap(), i);
                let back = echo_round(&mut s, &data).await;
                assert!(back == data, "stream {i}: echo differs");
            }));
        }
        for j in jobs {
            j.await.unwrap();
        }
        assert_eq!(count_b.load(Ordering::SeqCst), 8);

        // And the other way: B opens streams to A's echo, and a plain
        // stream that A's program takes.
        let mut s = b
            .handle
            .open(&name("a"), Some(service("echo")))
            .await
            .unwrap();
        let data = bytes(100_000, 99);
        assert!(echo_round(&mut s, &data).await == data);
        let mut incoming = a.handle.incoming_streams().await.unwrap();
        let mut plain = b.handle.open(&name("a"), None).await.unwrap();
        plain.write_all(b"hello from b").await.unwrap();
        plain.shutdown().await.unwrap();
        let mut got = tokio::time::timeout(TIMEOUT, incoming.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.peer(), &name("b"));
        assert_eq!(got.service(), None);
        let mut text = String::new();
        got.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "hello from b");
        got.write_all(b"and back").await.unwrap();
        got.shutdown().await.unwrap();
        let mut reply = String::new();
        plain.read_to_string(&mut reply).await.unwrap();
        assert_eq!(reply, "and back");

        // A later announcement at the same address is acknowledged on the
        // running session, which stays.
        a.handle
            .connect(&name("b"), vec![cand(&format!("10.9.0.2:{PORT}"))], 1300)
            .await
            .unwrap();
        let acked = b
            .event("acknowledged", |e| match e {
                ConnectEvent::Acknowledged { sequence, .. } => Some(*sequence),
                _ => None,
            })
            .await;
        assert_eq!(acked, 1300);
        assert_eq!(a.handle.connection_count().await.unwrap(), 1);

        // Disconnect: both sides see it.
        assert!(a.handle.disconnect(&name("b")).await.unwrap());
        let reason = b
            .event("disconnected", |e| match e {
                ConnectEvent::Disconnected { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .await;
        assert_eq!(reason, DisconnectReason::ClosedByPeer);
        assert_eq!(a.handle.state(&name("b")), PeerState::Idle);
        assert_eq!(b.handle.state(&name("a")), PeerState::Idle);
        a.stop().await;
        b.stop().await;
    });
}

#[test]
fn a_large_transfer_arrives_with_the_same_sha256() {
    test(|| async {
        let (na, nb) = pair().await;
        let hash = hash_service(&nb).await;
        let a = Host::start("a", &na, A, Setup::new(&[("b", key_of(B))])).await;
        let b = Host::start(
            "b",
            &nb,
            B,
            Setup::new(&[("a", key_of(A))]).service("hash", hash, &["a"]),
        )
        .await;
        a.handle
            .connect(&name("b"), vec![cand(&format!("[fd09::2]:{PORT}"))], 1)
            .await
            .unwrap();
        a.handle.wait_connected(&name("b"), TIMEOUT).await.unwrap();
        let heavy = std::env::var("PEERD_HEAVY").is_ok_and(|v| v == "1");
        let total: usize = if heavy { 1 << 30 } else { 64 << 20 };
        let chunk = bytes(1 << 20, 7);
        let mut want = sha2::Sha256::new();
        let mut s = a
            .handle
            .open(&name("b"), Some(service("hash")))
            .await
            .unwrap();
        let started = Instant::now();
        let mut sent = 0usize;
        let mut i = 0u8;
        while sent < total {
            // Vary each MiB so reordering or repetition would show.
            let mut piece = chunk.clone();
            piece[0] = i;
            i = i.wrapping_add(1);
            want.update(&piece);
            s.write_all(&piece).await.unwrap();
            sent += piece.len();
        }
        s.shutdown().await.unwrap();
        let mut digest = Vec::new();
        s.read_to_end(&mut digest).await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(digest, want.finalize().to_vec(), "SHA-256 differs");
        #[allow(clippy::cast_precision_loss)]
        let mbps = total as f64 / secs / 1e6;
        eprintln!(
            "transferred {} MiB through one stream in {secs:.2}s: {mbps:.0} MB/s (debug build, veth)",
            total >> 20
        );
        a.stop().await;
        b.stop().await;
    });
}

#[test]
fn unknown_client_keys_and_unexpected_server_keys_are_refused_in_the_handshake() {
    test(|| async {
        let (na, nb) = pair().await;
        let (echo_b, count_b) = echo_service(&nb).await;
        let mut b = Host::start(
            "b",
            &nb,
            B,
            Setup::new(&[("a", key_of(A))]).service("echo", echo_b, &["a", "stranger"]),
        )
        .await;

        // 1. A raw QUIC client with a key B does not know. Its own TLS
        // handshake completes (TLS 1.3 clients finish first), and it
        // opens a stream and writes an open request for `echo` at once,
        // without waiting for anything: none of it may reach the service.
        const STRANGER: u8 = 0x5e;
        let b_key = b.key;
        let outcome = na
            .run(move || async move {
                let stranger = Identity::from_seed(&[STRANGER; 32]);
                let tls = peerd_connect::tls::TlsFactory::new(
                    &stranger,
                    Duration::from_secs(1),
                    Duration::from_secs(5),
                )
                .unwrap();
                let (config, _) = tls.client(b_key).unwrap();
                let endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().unwrap()).unwrap();
                let conn = endpoint
                    .connect_with(
                        config,
                        format!("10.9.0.2:{PORT}").parse().unwrap(),
                        "10.9.0.2",
                    )
                    .unwrap()
                    .await;
                let Ok(conn) = conn else {
                    return format!("handshake failed: {:?}", conn.err());
                };
                let mut result = String::from("client handshake completed; ");
                if let Ok((mut send, mut recv)) = conn.open_bi().await {
                    let open = peerd_connect::wire::Frame::Open(
                        peerd_connect::wire::OpenRequest::Service("echo".parse().unwrap()),
                    );
                    let _ = send.write_all(&open.encode()).await;
                    let _ = send.write_all(b"application bytes").await;
                    let mut buf = [0u8; 16];
                    result += &format!("read: {:?}; ", recv.read(&mut buf).await);
                }
                result += &format!("closed: {}", conn.closed().await);
                result
            })
            .await;
        assert!(
            outcome.contains("closed") && outcome.contains("ApplicationVerificationFailure"),
            "{outcome}"
        );
        // The close reason the stranger got says nothing about why.
        assert!(
            !outcome.contains("address book") && !outcome.contains("unknown"),
            "{outcome}"
        );
        let (presented, reason) = b
            .event("refused", |e| match e {
                ConnectEvent::Refused {
                    presented, reason, ..
                } => Some((*presented, reason.clone())),
                _ => None,
            })
            .await;
        assert_eq!(presented, Some(key_of(STRANGER).fingerprint()));
        assert_eq!(reason, RefusedReason::UnknownKey);

        // 2. A connector with that stranger's key, which knows B: its dial
        // fails with the reason, during the hello.
        let mut s = Setup::new(&[("b", key_of(B))]);
        s.port = PORT + 1;
        let stranger = Host::start("stranger", &na, STRANGER, s).await;
        stranger
            .handle
            .connect(&name("b"), vec![cand(&format!("10.9.0.2:{PORT}"))], 1)
            .await
            .unwrap();
        let err = stranger
            .handle
            .wait_connected(&name("b"), TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                peerd_connect::ConnectError::Failed {
                    reason: FailReason::RefusedByPeer,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            stranger
                .handle
                .open(&name("b"), Some(service("echo")))
                .await,
            Err(OpenError::NotConnected(_))
        ));

        // 3. A server answering with an unexpected key: the stranger dials
        // "a" at B's address (pinning a's key), B answers with its own.
        let mut s2 = Setup::new(&[("b", key_of(B)), ("a", key_of(A))]);
        s2.port = PORT + 2;
        stranger.stop().await;
        let mut c = Host::start("c", &na, STRANGER, s2).await;
        c.handle
            .connect(&name("a"), vec![cand(&format!("10.9.0.2:{PORT}"))], 1)
            .await
            .unwrap();
        let err = c
            .handle
            .wait_connected(&name("a"), TIMEOUT)
            .await
            .unwrap_err();
        match err {
            peerd_connect::ConnectError::Failed {
                reason: FailReason::WrongKey { presented, .. },
                ..
            } => assert_eq!(presented, Some(b.key.fingerprint())),
            other => panic!("expected a wrong-key failure, got {other}"),
        }
        let presented = c
            .event("refused", |e| match e {
                ConnectEvent::Refused { presented, .. } => Some(*presented),
                _ => None,
            })
            .await;
        assert_eq!(presented, Some(b.key.fingerprint()));

        // No application byte crossed: the service never saw a connection,
        // and B never had a session.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(count_b.load(Ordering::SeqCst), 0);
        while let Ok(e) = b.events.try_recv() {
            assert!(
                !matches!(e, ConnectEvent::Connected { .. }),
                "B connected: {e:?}"
            );
        }
        assert_eq!(b.handle.state(&name("a")), PeerState::Idle);
        b.stop().await;
        c.stop().await;
    });
}

#[test]
fn a_peer_allowed_one_service_cannot_open_another_and_sees_why() {
    test(|| async {
        let (na, nb) = pair().await;
        let (echo, count) = echo_service(&nb).await;
        let a = Host::start("a", &na, A, Setup::new(&[("b", key_of(B))])).await;
        // "echo" is open to a, "private" only to somebody else, "dead"
        // points at a port nobody listens on.
        let b = Host::start(
            "b",
            &nb,
            B,
            Setup::new(&[("a", key_of(A)), ("c", key_of(0x0c))])
                .service("echo", echo, &["a"])
                .service("private", echo, &["c"])
                .service("dead", "127.0.0.1:1".parse().unwrap(), &["a"]),
        )
        .await;
        a.handle
            .connect(&name("b"), vec![cand(&format!("10.9.0.2:{PORT}"))], 1)
            .await
            .unwrap();
        a.handle.wait_connected(&name("b"), TIMEOUT).await.unwrap();

        let mut ok = a
            .handle
            .open(&name("b"), Some(service("echo")))
            .await
            .unwrap();
        assert!(echo_round(&mut ok, b"allowed").await == b"allowed");

        let err = a
            .handle
            .open(&name("b"), Some(service("private")))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, OpenError::Refused { code, .. } if *code == peerd_connect::wire::RefuseCode::NOT_ALLOWED),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "the peer refused the stream: not allowed: a may not open private"
        );
        let err = a
            .handle
            .open(&name("b"), Some(service("nosuch")))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the peer refused the stream: unknown service: no service nosuch on this host"
        );
        let err = a
            .handle
            .open(&name("b"), Some(service("dead")))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the peer refused the stream: target unreachable: service dead is not answering"
        );
        // Nobody on B takes plain streams.
        let err = a.handle.open(&name("b"), None).await.unwrap_err();
        assert!(err.to_string().contains("no listener"), "{err}");
        // Only the allowed stream reached a service, and the session is
        // still fine after the refusals.
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let mut again = a
            .handle
            .open(&name("b"), Some(service("echo")))
            .await
            .unwrap();
        assert!(echo_round(&mut again, b"still here").await == b"still here");
        a.stop().await;
        b.stop().await;
    });
}

#[test]
fn a_removed_key_does_not_come_back_in() {
    test(|| async {
        let (a, mut b, count) = two_hosts(quick()).await;
        let there = vec![cand(&format!("10.9.0.2:{PORT}"))];
        a.handle
            .connect(&name("b"), there.clone(), 1)
            .await
            .unwrap();
        a.handle.wait_connected(&name("b"), TIMEOUT).await.unwrap();
        let mut s = a
            .handle
            .open(&name("b"), Some(service("echo")))
            .await
            .unwrap();
        assert!(echo_round(&mut s, b"first").await == b"first");
        drop(s);
        a.handle.disconnect(&name("b")).await.unwrap();

        // B removes A from its address book. A reconnects to the same
        // place with everything it had before: no resumption, no ticket,
        // no way in.
        let (echo, _) = (count.clone(), ());
        let _ = echo;
        b.handle
            .set_address_book(peerd_connect::AddressBook::new(
                [(name("other"), Some(key_of(0x0c)))],
                vec![],
            ))
            .await
            .unwrap();
        a.handle
            .connect(&name("b"), there.clone(), 2)
            .await
            .unwrap();
        let err = a
            .handle
            .wait_connected(&name("b"), TIMEOUT)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("refused our key"), "{err}");
        let (presented, reason) = b
            .event("refused", |e| match e {
                ConnectEvent::Refused {
                    presented, reason, ..
                } => Some((*presented, reason.clone())),
                _ => None,
            })
            .await;
        assert_eq!(presented, Some(a.key.fingerprint()));
        assert_eq!(reason, RefusedReason::UnknownKey);
        assert_eq!(count.load(Ordering::SeqCst), 1, "only the first stream");

        // Removing a key closes a running session too.
        b.handle
            .set_address_book(peerd_connect::AddressBook::new(
                [(name("a"), Some(a.key))],
                vec![],
            ))
            .await
            .unwrap();
        a.handle.connect(&name("b"), there, 3).await.unwrap();
        a.handle.wait_connected(&name("b"), TIMEOUT).await.unwrap();
        b.handle
            .set_address_book(peerd_connect::AddressBook::default())
            .await
            .unwrap();
        let mut watch = a.handle.watch();
        let state = tokio::time::timeout(
            TIMEOUT,
            watch.wait_for(|m| !matches!(m.get(&name("b")), Some(PeerState::Connected { .. }))),
        )
        .await
        .unwrap()
        .unwrap()
        .get(&name("b"))
        .cloned();
        assert_eq!(state, Some(PeerState::Idle), "key removed is a clean end");
        a.stop().await;
        b.stop().await;
    });
}

#[test]
fn plain_peers_have_no_key_and_giving_up_or_timing_out_has_a_reason() {
    test(|| async {
        let (na, _nb) = pair().await;
        let mut setup = Setup::new(&[("b", key_of(B))]);
        setup.peers.push((name("phone"), None));
        setup.tuning.connect_timeout = Duration::from_millis(800);
        let a = Host::start("a", &na, A, setup).await;
        let err = a
            .handle
            .connect(&name("phone"), vec![cand("10.9.0.2:1")], 1)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "phone: no key for this peer");
        let err = a
            .handle
            .open(&name("phone"), Some(service("ssh")))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "phone: no key for this peer");
        let err = a
            .handle
            .connect(&name("nobody"), vec![cand("10.9.0.2:1")], 1)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "unknown peer nobody");

        // Nothing listens on B (no connector there): no answer in time.
        a.handle
            .connect(&name("b"), vec![cand(&format!("10.9.0.2:{PORT}"))], 1)
            .await
            .unwrap();
        let err = a
            .handle
            .wait_connected(&name("b"), TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                peerd_connect::ConnectError::Failed {
                    reason: FailReason::Timeout { tried: 1, .. },
                    ..
                }
            ),
            "{err}"
        );
        // The user gives up while connecting.
        a.handle
            .connect(&name("b"), vec![cand(&format!("10.9.0.2:{PORT}"))], 2)
            .await
            .unwrap();
        assert!(matches!(
            a.handle.state(&name("b")),
            PeerState::Connecting { .. }
        ));
        assert!(a.handle.disconnect(&name("b")).await.unwrap());
        match a.handle.state(&name("b")) {
            PeerState::Failed { reason, .. } => {
                assert_eq!(reason, FailReason::Cancelled);
                assert_eq!(reason.to_string(), "given up on request while connecting");
            },
            other => panic!("expected failed, got {other:?}"),
        }
        assert!(!a.handle.disconnect(&name("b")).await.unwrap());
        a.stop().await;
    });
}

#[test]
fn an_authenticated_peer_sending_garbage_is_refused_or_closed() {
    use peerd_connect::wire::{Frame, Hello, RefuseCode};
    test(|| async {
        let (na, nb) = pair().await;
        let (echo, count) = echo_service(&nb).await;
        let mut b = Host::start(
            "b",
            &nb,
            B,
            Setup::new(&[("a", key_of(A))]).service("echo", echo, &["a"]),
        )
        .await;
        let b_key = b.key;
        // A raw client holding A's key (so it passes the handshake) that
        // speaks the framed protocol badly, three ways.
        let outcomes = na
            .run(move || async move {
                let me = Identity::from_seed(&[A; 32]);
                let tls = peerd_connect::tls::TlsFactory::new(
                    &me,
                    Duration::from_secs(1),
                    Duration::from_secs(5),
                )
                .unwrap();
                let endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().unwrap()).unwrap();
                let dial = || async {
                    let (config, _) = tls.client(b_key).unwrap();
                    endpoint
                        .connect_with(
                            config,
                            format!("10.9.0.2:{PORT}").parse().unwrap(),
                            "10.9.0.2",
                        )
                        .unwrap()
                        .await
                        .unwrap()
                };
                let hello = |version| {
                    // A selection, in case A's key is the lower (the
                    // arbiter's hello must carry one).
                    Frame::Hello(Hello {
                        version,
                        selection: 1,
                        acked: 0,
                    })
                    .encode()
                };
                let mut out = Vec::new();
                // 1. A hello of an unknown version: closed with code 7.
                let conn = dial().await;
                let (mut send, _recv) = conn.open_bi().await.unwrap();
                send.write_all(&hello(9)).await.unwrap();
                out.push(conn.closed().await.to_string());
                // 2. A frame longer than allowed on the control stream.
                let conn = dial().await;
                let (mut send, _recv) = conn.open_bi().await.unwrap();
                send.write_all(&[0x01, 0xff, 0xff, 0, 0, 0]).await.unwrap();
                out.push(conn.closed().await.to_string());
                // 3. A proper hello, then a data stream that starts with
                // garbage: that stream is refused, the session lives on,
                // and then garbage on the control stream closes it.
                let conn = dial().await;
                let (mut csend, mut crecv) = conn.open_bi().await.unwrap();
                csend.write_all(&hello(1)).await.unwrap();
                let reply = peerd_connect::wire::read_frame(&mut crecv).await.unwrap();
                out.push(format!("{reply:?}"));
                let (mut send, mut recv) = conn.open_bi().await.unwrap();
                send.write_all(&[0x10, 0x00, 0x03, 0x01, b'.', b'.'])
                    .await
                    .unwrap();
                let answer = peerd_connect::wire::read_frame(&mut recv).await.unwrap();
                out.push(format!("{answer:?}"));
                csend.write_all(&Frame::Accept.encode()).await.unwrap();
                out.push(conn.closed().await.to_string());
                out
            })
            .await;
        assert!(outcomes[0].contains("unsupported version"), "{outcomes:?}");
        assert!(outcomes[1].contains("protocol error"), "{outcomes:?}");
        assert!(outcomes[2].starts_with("Some(Hello("), "{outcomes:?}");
        assert!(
            outcomes[3].contains(&format!("{:?}", RefuseCode::PROTOCOL)),
            "{outcomes:?}"
        );
        assert!(outcomes[4].contains("protocol error"), "{outcomes:?}");
        assert_eq!(count.load(Ordering::SeqCst), 0);
        let reason = b
            .event("disconnected", |e| match e {
                ConnectEvent::Disconnected { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .await;
        assert!(reason.to_string().contains("protocol error"), "{reason}");
        b.stop().await;
    });
}
