//! Addresses and paths: Happy Eyeballs against a black-holed candidate,
//! migration of the dialling side, the accepting side moving, and both
//! sides dialling at once. Each test in network namespaces of its own
//! (root only, as CI; see `support`).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use peerd_connect::{ConnectEvent, DisconnectReason, PeerState, StreamClosed, Tuning};
use peerd_core::PeerName;
use support::{
    Host, Netns, PORT, Setup, TIMEOUT, bytes, cand, echo_round, echo_service, key_of, pair,
    service, test,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A: u8 = 0x0a;
const B: u8 = 0x0b;

fn name(s: &str) -> PeerName {
    s.parse().expect("name")
}

async fn hosts(na: &Arc<Netns>, nb: &Arc<Netns>, tuning: Tuning) -> (Host, Host) {
    let (echo_b, _) = echo_service(nb).await;
    let (echo_a, _) = echo_service(na).await;
    let mut sa = Setup::new(&[("b", key_of(B))]).service("echo", echo_a, &["b"]);
    sa.tuning = tuning.clone();
    let mut sb = Setup::new(&[("a", key_of(A))]).service("echo", echo_b, &["a"]);
    sb.tuning = tuning;
    let a = Host::start("a", na, A, sa).await;
    let b = Host::start("b", nb, B, sb).await;
    (a, b)
}

#[test]
fn a_black_holed_candidate_costs_one_stagger_delay() {
    test(|| async {
        let (na, nb) = pair().await;
        let (a, b) = hosts(&na, &nb, Tuning::default()).await;
        let stagger = Tuning::default().stagger;

        // One handshake, measured: B's IPv4 address alone.
        let v4 = cand(&format!("10.9.0.2:{PORT}"));
        let t = Instant::now();
        a.handle.connect(&name("b"), vec![v4], 1).await.unwrap();
        a.handle.wait_connected(&name("b"), TIMEOUT).await.unwrap();
        let handshake = t.elapsed();
        a.handle.disconnect(&name("b")).await.unwrap();

        // B drops every packet to its IPv6 address: that candidate, tried
        // first, never answers.
        nb.nft(&format!(
            "table inet blackhole {{\n chain input {{\n type filter hook input priority 0;\n \
             ip6 daddr fd09::2 udp dport {PORT} drop\n }}\n}}\n"
        ))
        .await;
        let v6 = cand(&format!("[fd09::2]:{PORT}"));
        let t = Instant::now();
        a.handle.connect(&name("b"), vec![v4, v6], 2).await.unwrap();
        let addr = a.handle.wait_connected(&name("b"), TIMEOUT).await.unwrap();
        let took = t.elapsed();
        assert_eq!(addr, v4.addr);
        eprintln!(
            "one handshake {handshake:?}; with the IPv6 candidate black-holed: {took:?} \
             (stagger {stagger:?})"
        );
        assert!(
            took >= stagger,
            "IPv4 was tried before the stagger: {took:?}"
        );
        let limit = stagger + handshake * 3 + Duration::from_millis(200);
        assert!(
            took < limit,
            "{took:?} is above stagger + handshake ({limit:?})"
        );
        // The losing attempt left nothing behind.
        let mut s = a
            .handle
            .open(&name("b"), Some(service("echo")))
            .await
            .unwrap();
        assert!(echo_round(&mut s, b"ok").await == b"ok");
        a.stop().await;
        b.stop().await;
    });
}

#[test]
fn the_dialling_side_migrates_when_its_address_changes() {
    test(|| async {
        let (na, nb) = pair().await;
        let (a, b) = hosts(&na, &nb, Tuning::default()).await;
        a.handle
            .connect(&name("b"), vec![cand(&format!("10.9.0.2:{PORT}"))], 1)
            .await
            .unwrap();
        a.handle.wait_connected(&name("b"), TIMEOUT).await.unwrap();
        let mut s = a
            .handle
            .open(&name("b"), Some(service("echo")))
            .await
            .unwrap();
        let first = bytes(300_000, 1);
        assert!(echo_round(&mut s, &first).await == first);
        let mut back = b.handle.open(&name("a"), None).await;
        assert!(back.is_err(), "A takes no plain streams yet");
        let mut incoming = a.handle.incoming_streams().await.unwrap();
        back = b.handle.open(&name("a"), None).await;
        let seen_before = back.unwrap().remote_address();
        assert_eq!(seen_before.ip().to_string(), "10.9.0.1");
        let _ = incoming.recv().await;

        // A's address is replaced mid-stream; the connector is told.
        na.ip("addr del 10.9.0.1/24 dev a0").await;
        na.ip("addr add 10.9.0.5/24 dev a0").await;
        a.handle.local_addresses_changed().await.unwrap();

        // The same stream carries on.
        let second = bytes(300_000, 2);
        let t = Instant::now();
        assert!(echo_round(&mut s, &second).await == second);
        eprintln!("first echo after the move: {:?}", t.elapsed());
        // B sees A at its new address, on the same session.
        let moved = b.handle.open(&name("a"), None).await.unwrap();
        assert_eq!(moved.remote_address().ip().to_string(), "10.9.0.5");
        let _ = incoming.recv().await;
        // ... and so does B's state (what `peerctl peers` shows there).
        let mut states = b.handle.watch();
        let followed = tokio::time::timeout(
            TIMEOUT,
            states.wait_for(|m| {
                matches!(m.get(&name("a")), Some(PeerState::Connected { address, .. })
                    if address.ip().to_string() == "10.9.0.5")
            }),
        )
        .await;
        assert!(
            followed.is_ok(),
            "B's state: {:?}",
            b.handle.state(&name("a"))
        );
        assert!(matches!(
            a.handle.state(&name("b")),
            PeerState::Connected { .. }
        ));
        assert_eq!(a.handle.connection_count().await.unwrap(), 1);
        a.stop().await;
        b.stop().await;
    });
}

#[test]
fn when_the_accepting_side_moves_the_session_is_replaced_and_old_streams_say_why() {
    test(|| async {
        let (na, nb) = pair().await;
        let (mut a, b) = hosts(&na, &nb, Tuning::default()).await;
        a.handle
            .connect(&name("b"), vec![cand(&format!("10.9.0.2:{PORT}"))], 1)
            .await
            .unwrap();
        a.handle.wait_connected(&name("b"), TIMEOUT).await.unwrap();
        let mut old = a
            .handle
            .open(&name("b"), Some(service("echo")))
            .await
            .unwrap();
        assert!(echo_round(&mut old, b"before").await == b"before");

        // B's address changes; B would announce it; the announcement
        // (higher sequence, new candidates) reaches A.
        nb.ip("addr del 10.9.0.2/24 dev b0").await;
        nb.ip("addr add 10.9.0.6/24 dev b0").await;
        a.handle
            .connect(&name("b"), vec![cand(&format!("10.9.0.6:{PORT}"))], 2)
            .await
            .unwrap();
        let addr = a.handle.wait_connected(&name("b"), TIMEOUT).await.unwrap();
        assert_eq!(addr.ip().to_string(), "10.9.0.6");
        let reason = a
            .event("disconnected", |e| match e {
                ConnectEvent::Disconnected { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .await;
        assert_eq!(reason, DisconnectReason::PeerAddressChanged);

        // The old stream ends with the reason.
        let mut buf = [0u8; 8];
        let err = old.read(&mut buf).await.unwrap_err();
        assert_eq!(err.to_string(), "peer address changed");
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<StreamClosed>());
        assert_eq!(
            inner,
            Some(&StreamClosed(DisconnectReason::PeerAddressChanged))
        );
        let err = old.write_all(b"more").await.unwrap_err();
        assert_eq!(err.to_string(), "peer address changed");

        // A new stream works on the new session.
        let mut new = a
            .handle
            .open(&name("b"), Some(service("echo")))
            .await
            .unwrap();
        assert!(echo_round(&mut new, b"after").await == b"after");
        // B has exactly one connection once the old one is gone.
        let deadline = Instant::now() + TIMEOUT;
        while b.handle.connection_count().await.unwrap() != 1 {
            assert!(Instant::now() < deadline, "B keeps the old connection");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        a.stop().await;
        b.stop().await;
    });
}

#[test]
fn both_sides_dialling_at_once_leaves_one_connection() {
    test(|| async {
        let (na, nb) = pair().await;
        let (a, b) = hosts(&na, &nb, Tuning::default()).await;
        let to_b = vec![cand(&format!("10.9.0.2:{PORT}"))];
        let to_a = vec![cand(&format!("10.9.0.1:{PORT}"))];
        for round in 1..=5u64 {
            let (nb_, na_) = (name("b"), name("a"));
            let (ra, rb) = tokio::join!(
                a.handle.connect(&nb_, to_b.clone(), round),
                b.handle.connect(&na_, to_a.clone(), round),
            );
            ra.unwrap();
            rb.unwrap();
            a.handle.wait_connected(&name("b"), TIMEOUT).await.unwrap();
            b.handle.wait_connected(&name("a"), TIMEOUT).await.unwrap();
            // Settle: every loser closed and drained.
            let deadline = Instant::now() + TIMEOUT;
            loop {
                let (ca, cb) = (
                    a.handle.connection_count().await.unwrap(),
                    b.handle.connection_count().await.unwrap(),
                );
                if ca == 1 && cb == 1 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: {ca} connections at A, {cb} at B"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Both ends are on the same connection, and it works.
            let (sa, sb) = (a.handle.state(&name("b")), b.handle.state(&name("a")));
            let (
                PeerState::Connected {
                    address: ra,
                    path: pa,
                    ..
                },
                PeerState::Connected {
                    address: rb,
                    path: pb,
                    ..
                },
            ) = (&sa, &sb)
            else {
                panic!("round {round}: {sa:?} / {sb:?}");
            };
            assert_eq!(ra.port(), pb.local.port(), "round {round}");
            assert_eq!(rb.port(), pa.local.port(), "round {round}");
            assert_ne!(pa.direction, pb.direction);
            let mut s = a
                .handle
                .open(&name("b"), Some(service("echo")))
                .await
                .unwrap();
            assert!(echo_round(&mut s, b"one").await == b"one");
            let mut s = b
                .handle
                .open(&name("a"), Some(service("echo")))
                .await
                .unwrap();
            assert!(echo_round(&mut s, b"two").await == b"two");
            s.shutdown().await.unwrap();
            a.handle.disconnect(&name("b")).await.unwrap();
            let mut w = b.handle.watch();
            tokio::time::timeout(
                TIMEOUT,
                w.wait_for(|m| matches!(m.get(&name("a")), Some(PeerState::Idle))),
            )
            .await
            .unwrap()
            .unwrap();
        }
        a.stop().await;
        b.stop().await;
    });
}
