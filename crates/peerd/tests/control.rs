//! The control server (crates/peerd/src/control) on a real Unix socket,
//! with a stand-in for the daemon's actors (`control_harness::FakeApi`):
//! the socket file, the hello, requests, hostile clients, limits, events,
//! `open` and shutdown. peerctl itself is tested against the same server
//! in `peerctl.rs`.

#![allow(clippy::unwrap_used, reason = "test code: a panic is the test failing")]

mod control_harness;

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind as IoErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use control_harness::{DEADLINE, Server, at, config, name, open_dir, wait_until};
use peerd::control::{self, BindError, Limits};
use peerd_control::{
    Access, Client, ClientError, ClientHello, ErrorKind, Event, EventKind, LinkState,
    PROTOCOL_VERSION, Request, Response, decode, encode,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client(server: &Server) -> Client {
    Client::connect(&server.socket, "test", DEADLINE).unwrap()
}

/// A raw connection that has said hello.
fn raw(server: &Server) -> (UnixStream, BufReader<UnixStream>) {
    let stream = UnixStream::connect(&server.socket).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    writer
        .write_all(&encode(&ClientHello::new("raw test")).unwrap())
        .unwrap();
    let hello = read_json(&mut reader);
    assert_eq!(hello["response"], "hello", "{hello}");
    (writer, reader)
}

fn read_json(reader: &mut BufReader<UnixStream>) -> Value {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.ends_with('\n'), "no complete line: {line:?}");
    serde_json::from_str(&line).unwrap()
}

/// Whether the server closed the connection (EOF or reset, no more lines).
fn closed(reader: &mut BufReader<UnixStream>) -> bool {
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == IoErrorKind::ConnectionReset,
    }
}

fn refusal(result: Result<Response, ClientError>) -> peerd_control::ControlError {
    match result {
        Err(ClientError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn one_connection_carries_the_hello_then_many_requests() {
    let server = Server::start();
    let mut c = client(&server);
    assert_eq!(c.server().version, PROTOCOL_VERSION);
    assert_eq!(c.server().access, Access::Full, "tests run as root");
    assert!(c.server().software.starts_with("peerd "));
    for _ in 0..3 {
        let Response::Status(status) = c.request(&Request::Status, Some(DEADLINE)).unwrap() else {
            panic!("not a status");
        };
        assert_eq!(status.name, "alice");
        assert!(matches!(
            c.request(&Request::Key, Some(DEADLINE)).unwrap(),
            Response::Key(_)
        ));
    }
    let Response::Peers(list) = c.request(&Request::Peers, Some(DEADLINE)).unwrap() else {
        panic!("not peers");
    };
    assert_eq!(list.peers.len(), 3);
}

#[test]
fn other_protocols_and_versions_are_refused_clearly() {
    let server = Server::start();
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{"protocol":"peerd-control","version":99,"software":"peerctl 9"}"#,
            "unsupported-version",
            "version 99",
        ),
        (
            r#"{"protocol":"other","version":1,"software":"x"}"#,
            "unsupported-version",
            "\"other\"",
        ),
        ("GET / HTTP/1.1\r", "invalid-request", "expected the hello"),
        (
            r#"{"method":"status"}"#,
            "invalid-request",
            "expected the hello",
        ),
    ];
    for (hello, kind, text) in cases {
        let mut stream = UnixStream::connect(&server.socket).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.write_all(format!("{hello}\n").as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let answer = read_json(&mut reader);
        assert_eq!(answer["response"], "error", "{hello}: {answer}");
        assert_eq!(answer["kind"], *kind, "{hello}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(text), "{hello}: {message}");
        assert!(closed(&mut reader), "{hello}: still open");
    }
}

#[test]
fn a_silent_client_is_dropped_after_the_hello_timeout() {
    let limits = Limits {
        hello_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let server = Server::start_with(0o660, "daemon", limits);
    let stream = UnixStream::connect(&server.socket).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let start = Instant::now();
    let mut reader = BufReader::new(stream);
    let answer = read_json(&mut reader);
    assert_eq!(answer["kind"], "timeout", "{answer}");
    assert!(closed(&mut reader));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn garbage_gets_an_error_and_the_connection_goes_on() {
    let server = Server::start();
    let (mut w, mut r) = raw(&server);
    let deep = format!(
        "{{\"params\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let garbage: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\xff\xfe".to_vec(),
        b"not json at all".to_vec(),
        b"{\"method\":\"reboot\"}".to_vec(),
        b"{\"method\":\"status\",\"sudo\":true}".to_vec(),
        b"{\"method\":\"peer-remove\",\"params\":{\"name\":\"../../etc/passwd\"}}".to_vec(),
        b"{\"method\":\"call\",\"params\":{\"peer\":\"hitoshi\",\"wait_secs\":0}}".to_vec(),
        b"{\"method\":\"call\",\"params\":{\"peer\":\"hitoshi\",\"wait_secs\":99999999}}".to_vec(),
        deep.into_bytes(),
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_vec(),
        b"   ".to_vec(),
        b"{\"protocol\":\"peerd-control\",\"version\":1,\"software\":\"again\"}".to_vec(),
    ];
    for line in &garbage {
        w.write_all(line).unwrap();
        w.write_all(b"\n").unwrap();
        let answer = read_json(&mut r);
        assert_eq!(answer["response"], "error", "{answer}");
        assert_eq!(answer["kind"], "invalid-request", "{answer}");
    }
    // still usable
    w.write_all(&encode(&Request::LinkStatus).unwrap()).unwrap();
    let answer = read_json(&mut r);
    assert_eq!(answer["response"], "link", "{answer}");
    assert_eq!(answer["state"], "failed");
}

#[test]
fn an_endless_line_ends_that_connection_only() {
    let server = Server::start();
    let (mut w, mut r) = raw(&server);
    let socket = server.socket.clone();
    // Others keep being served while the flood goes on.
    let others = std::thread::spawn(move || {
        for _ in 0..20 {
            let mut c = Client::connect(&socket, "bystander", DEADLINE).unwrap();
            c.request(&Request::Status, Some(DEADLINE)).unwrap();
        }
    });
    // Try to send 2 GiB without a newline.
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent: u64 = 0;
    let err = loop {
        match w.write(&chunk) {
            Ok(n) => sent += n as u64,
            Err(e) => break e,
        }
        assert!(sent < 2 << 30, "the server read 2 GiB without complaint");
    };
    assert!(
        matches!(
            err.kind(),
            IoErrorKind::BrokenPipe | IoErrorKind::ConnectionReset
        ),
        "{err}"
    );
    assert!(
        sent < 16 << 20,
        "{sent} bytes were taken before the connection was closed"
    );
    // The reason is still there to read (it was written before the close).
    let answer = read_json(&mut r);
    assert_eq!(answer["kind"], "invalid-request", "{answer}");
    assert_eq!(answer["message"], "line longer than 1048576 bytes");
    assert!(closed(&mut r));
    others.join().unwrap();
}

#[test]
fn a_stale_socket_is_replaced_and_anything_else_is_left_alone() {
    let dir = open_dir();
    let config = config(dir.path(), 0o660, "daemon");
    fs::create_dir_all(config.socket.parent().unwrap()).unwrap();

    // a socket nobody listens on: stale, replaced
    drop(UnixListener::bind(&config.socket).unwrap());
    let old_ino = fs::metadata(&config.socket).unwrap().ino();
    let socket = control::bind(&config).unwrap();
    assert_ne!(fs::metadata(&config.socket).unwrap().ino(), old_ino);

    // a socket someone listens on: refused, untouched
    let err = control::bind(&config).unwrap_err();
    assert!(matches!(err, BindError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("another peerd"), "{err}");
    drop(socket);
    assert!(!config.socket.exists(), "removed when dropped");

    // not a socket: refused, untouched
    fs::write(&config.socket, "precious").unwrap();
    let err = control::bind(&config).unwrap_err();
    assert!(matches!(err, BindError::NotASocket { .. }), "{err}");
    assert_eq!(fs::read_to_string(&config.socket).unwrap(), "precious");
    fs::remove_file(&config.socket).unwrap();

    // a temporary socket left by a crash while binding
    let tmp = config.socket.with_file_name("control.sock.new");
    drop(UnixListener::bind(&tmp).unwrap());
    let socket = control::bind(&config).unwrap();
    assert!(!tmp.exists());
    drop(socket);
}

#[test]
fn the_socket_has_the_configured_mode_and_group_from_the_start() {
    let dir = open_dir();
    let mut config = config(dir.path(), 0o640, "daemon");
    config.socket = dir.path().join("a/b/c/control.sock");
    let socket = control::bind(&config).unwrap();
    let meta = fs::metadata(&config.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(meta.gid(), 1, "group daemon");
    let parent = fs::metadata(dir.path().join("a/b/c")).unwrap();
    assert_eq!(parent.mode() & 0o777, 0o755);
    drop(socket);

    // a group that does not exist: a warning, the socket still works
    config.group = "peerd-test-no-such-group".into();
    config.mode = 0o600;
    let socket = control::bind(&config).unwrap();
    let meta = fs::metadata(&config.socket).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.gid(), nix::unistd::getegid().as_raw());
    drop(socket);
}

#[test]
fn shutdown_ends_every_connection_and_removes_the_socket() {
    let mut server = Server::start();
    // an event follower
    let mut follower = client(&server);
    follower.request(&Request::Events, Some(DEADLINE)).unwrap();
    // a call in flight
    let socket = server.socket.clone();
    let caller = std::thread::spawn(move || {
        let mut c = Client::connect(&socket, "caller", DEADLINE).unwrap();
        c.request(
            &Request::Call {
                peer: name("slowpoke"),
                wait_secs: 3600,
            },
            Some(DEADLINE),
        )
    });
    // an open stream
    let mut opener = client(&server);
    opener
        .request(
            &Request::Open {
                peer: name("hitoshi"),
                service: "ssh".parse().unwrap(),
            },
            Some(DEADLINE),
        )
        .unwrap();
    let _peer_end = server.api.take_opened();
    // an idle connection
    let _idle = client(&server);
    wait_until("the call to reach the API", || {
        server
            .api
            .logged()
            .iter()
            .any(|l| l.starts_with("call slowpoke"))
    });

    let took = server.stop();
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert!(!server.socket.exists(), "socket file left behind");
    let refusal = refusal(caller.join().unwrap());
    assert_eq!(refusal.kind, ErrorKind::Unavailable);
    assert!(refusal.message.contains("stopping"), "{refusal}");
    assert!(matches!(follower.next_event(), Ok(None)));
    let (mut stream, _) = opener.into_stream();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap_or(0), 0);
    assert_eq!(server.api.dropped.load(Ordering::SeqCst), 1);
}

#[test]
fn a_replaced_socket_file_is_not_removed() {
    let mut server = Server::start();
    let newer = server.socket.with_file_name("newer.sock");
    let _listener = UnixListener::bind(&newer).unwrap();
    fs::rename(&newer, &server.socket).unwrap();
    server.stop();
    assert!(server.socket.exists(), "another peerd's socket was removed");
}

#[test]
fn events_arrive_in_order_and_a_follower_that_fell_behind_is_told() {
    let server = Server::start();
    let mut c = client(&server);
    assert!(matches!(
        c.request(&Request::Events, Some(DEADLINE)).unwrap(),
        Response::Subscribed
    ));
    server.api.wait_for_followers(1);
    let sent = [
        EventKind::LinkStateChanged {
            state: LinkState::Up,
            interface: Some("ppp0".into()),
            reason: None,
        },
        EventKind::AddressChanged {
            interface: Some("ppp0".into()),
            addresses: vec!["203.0.113.7".parse().unwrap()],
        },
        EventKind::PeerConnected {
            peer: name("hitoshi"),
            address: "198.51.100.7:7447".parse().unwrap(),
        },
    ];
    for kind in &sent {
        server.api.emit(Event {
            at: at(),
            kind: kind.clone(),
        });
    }
    for kind in &sent {
        let event = c.next_event().unwrap().unwrap();
        assert_eq!(event.kind, *kind);
        assert_eq!(event.at, at());
    }

    drop(c);
    wait_until("the first follower to leave", || {
        server.api.events.receiver_count() == 0
    });

    // A follower whose subscription was made before a burst of 20 events
    // on a channel of 16: it lost the first 4.
    let behind = server.api.events.subscribe();
    for count in 100..120 {
        server.api.emit(Event {
            at: at(),
            kind: EventKind::Missed { count },
        });
    }
    *server.api.next_receiver.lock().unwrap() = Some(behind);
    let mut slow = client(&server);
    slow.request(&Request::Events, Some(DEADLINE)).unwrap();
    let first = slow.next_event().unwrap().unwrap();
    assert_eq!(first.kind, EventKind::Missed { count: 4 });
    let second = slow.next_event().unwrap().unwrap();
    assert_eq!(second.kind, EventKind::Missed { count: 104 });
}

#[test]
fn open_splices_bytes_both_ways_with_half_close() {
    let server = Server::start();
    // The request and the first stream bytes in one write: those bytes
    // must reach the peer, not be taken for a request.
    let (mut w, mut r) = raw(&server);
    let mut first = encode(&Request::Open {
        peer: name("hitoshi"),
        service: "ssh".parse().unwrap(),
    })
    .unwrap();
    first.extend_from_slice(b"SSH-2.0-early\r\n");
    w.write_all(&first).unwrap();
    let answer = read_json(&mut r);
    assert_eq!(answer["response"], "stream-open", "{answer}");
    let mut peer = server.api.take_opened();
    w.write_all(b"\x00binary\xff after").unwrap();
    w.shutdown(Shutdown::Write).unwrap();
    // the peer sees everything, then the end of the client's direction
    let got = server.block_on(async {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        got
    });
    assert_eq!(got, b"SSH-2.0-early\r\n\x00binary\xff after");
    // the other direction is still open (read on another thread: the
    // socket buffers less than is written)
    let reader = std::thread::spawn(move || {
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        back
    });
    server.block_on(async {
        peer.write_all(b"SSH-2.0-peer\r\n").await.unwrap();
        peer.write_all(&vec![7u8; 300_000]).await.unwrap();
        peer.shutdown().await.unwrap();
    });
    let back = reader.join().unwrap();
    assert_eq!(&back[..14], b"SSH-2.0-peer\r\n");
    assert_eq!(back.len(), 14 + 300_000);
}

#[test]
fn open_failures_leave_the_connection_usable() {
    let server = Server::start();
    let mut c = client(&server);
    let e = refusal(c.request(
        &Request::Open {
            peer: name("me-on-phone"),
            service: "ssh".parse().unwrap(),
        },
        Some(DEADLINE),
    ));
    assert_eq!(e.kind, ErrorKind::NoKey);
    assert!(e.message.contains("no key for this peer"));
    let e = refusal(c.request(
        &Request::Open {
            peer: name("hitoshi"),
            service: "vnc".parse().unwrap(),
        },
        Some(DEADLINE),
    ));
    assert_eq!(e.kind, ErrorKind::Failed);
    assert!(c.request(&Request::Status, Some(DEADLINE)).is_ok());
}

#[test]
fn many_clients_at_once() {
    let server = Server::start();
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let socket = server.socket.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket, "many", DEADLINE).unwrap();
                for _ in 0..5 {
                    c.request(&Request::Peers, Some(DEADLINE)).unwrap();
                }
                c.request(
                    &Request::Announce {
                        peers: vec![name("hitoshi")],
                    },
                    Some(DEADLINE),
                )
                .unwrap();
                i
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let announced = server
        .api
        .logged()
        .iter()
        .filter(|l| *l == "announce hitoshi")
        .count();
    assert_eq!(announced, 50);
}

#[test]
fn connections_beyond_the_limit_are_refused_until_one_leaves() {
    let limits = Limits {
        max_privileged: 2,
        ..Limits::default()
    };
    let server = Server::start_with(0o660, "daemon", limits);
    let first = client(&server);
    let _second = client(&server);
    match Client::connect(&server.socket, "third", DEADLINE) {
        Err(ClientError::Refused(e)) => {
            assert_eq!(e.kind, ErrorKind::Unavailable);
            assert!(e.message.contains("too many connections"), "{e}");
        },
        other => panic!("third connection: {other:?}"),
    }
    drop(first);
    wait_until("a slot to free up", || {
        Client::connect(&server.socket, "fourth", DEADLINE).is_ok()
    });
}

#[test]
fn call_gives_up_after_its_wait() {
    let server = Server::start();
    let mut c = client(&server);
    let start = Instant::now();
    let e = refusal(c.request(
        &Request::Call {
            peer: name("slowpoke"),
            wait_secs: 1,
        },
        Some(DEADLINE),
    ));
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(
        e.message.contains("slowpoke did not connect within 1s"),
        "{e}"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(server.api.dropped.load(Ordering::SeqCst), 1);
    // and the connection goes on
    assert!(matches!(
        c.request(
            &Request::Call {
                peer: name("hitoshi"),
                wait_secs: 5
            },
            Some(DEADLINE)
        )
        .unwrap(),
        Response::Connected(_)
    ));
}

#[test]
fn a_client_that_leaves_cancels_its_request() {
    let server = Server::start();
    let (mut w, r) = raw(&server);
    w.write_all(
        &encode(&Request::Call {
            peer: name("slowpoke"),
            wait_secs: 3600,
        })
        .unwrap(),
    )
    .unwrap();
    wait_until("the call to reach the API", || {
        server
            .api
            .logged()
            .iter()
            .any(|l| l.starts_with("call slowpoke"))
    });
    drop(w);
    drop(r);
    wait_until("the call to be dropped", || {
        server.api.dropped.load(Ordering::SeqCst) == 1
    });
}

#[test]
fn requests_reach_the_api_with_their_values() {
    let server = Server::start();
    let mut c = client(&server);
    let key = control_harness::peer_key(9);
    let Response::PeerAdded(peer) = c
        .request(
            &Request::PeerAdd {
                name: name("bob"),
                email: "bob@isp-c.example".parse().unwrap(),
                key,
                announce: false,
                accept_unsigned: true,
            },
            Some(DEADLINE),
        )
        .unwrap()
    else {
        panic!("not peer-added");
    };
    assert_eq!(peer.fingerprint, Some(key.fingerprint().to_string()));
    let e = refusal(c.request(
        &Request::PeerRemove {
            name: name("hitoshi"),
        },
        Some(DEADLINE),
    ));
    assert!(e.message.contains("configuration file"), "{e}");
    let e = refusal(c.request(
        &Request::Disconnect {
            peer: name("nobody"),
        },
        Some(DEADLINE),
    ));
    assert_eq!(e.kind, ErrorKind::UnknownPeer);
    assert_eq!(
        server.api.logged(),
        [format!(
            "peer-add bob bob@isp-c.example {key} announce=false accept_unsigned=true"
        )]
    );
}

#[test]
fn a_response_line_decodes_as_the_protocol_says() {
    // The hello answer, read raw, as a non-Rust client would.
    let server = Server::start();
    let mut stream = UnixStream::connect(&server.socket).unwrap();
    stream
        .write_all(&encode(&ClientHello::new("raw")).unwrap())
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let hello: Response = decode(line.trim_end().as_bytes()).unwrap();
    assert!(matches!(hello, Response::Hello(h) if h.access == Access::Full));
}
