//! Round trips, the exact wire shapes, and hostile input.

use std::net::SocketAddr;

use peerd_core::{AddressClass, CandidateKind, Identity};
use serde_json::{Value, json};

use super::*;
use crate::info::*;
use crate::{Event, EventKind, FrameError, Timestamp, decode, encode};

fn key() -> PublicKey {
    Identity::from_seed(&[7; 32]).public_key()
}

fn name(s: &str) -> PeerName {
    s.parse().unwrap()
}

fn at() -> Timestamp {
    Timestamp::from_unix_secs(1_795_000_000)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn candidate() -> CandidateInfo {
    CandidateInfo {
        address: addr("198.51.100.7:7447"),
        kind: CandidateKind::Host,
        class: AddressClass::Public,
    }
}

fn session() -> SessionInfo {
    SessionInfo {
        peer: name("hitoshi"),
        address: addr("198.51.100.7:7447"),
        since: at(),
    }
}

fn link() -> LinkInfo {
    LinkInfo {
        driver: LinkDriver::Pppd,
        on_demand: true,
        state: LinkState::Failed,
        interface: None,
        since: Some(at()),
        reason: Some(
            "pppd exited with status 16: the link was terminated by the modem hanging up".into(),
        ),
        retry_at: Some(at()),
    }
}

fn peer() -> PeerInfo {
    PeerInfo {
        name: name("hitoshi"),
        email: "hitoshi@isp-b.example".parse().unwrap(),
        format: PeerFormat::Sealed,
        key: Some(key()),
        fingerprint: Some(key().fingerprint().to_string()),
        source: PeerSource::Runtime,
        announce: true,
        auto_connect: true,
        accept_unsigned: false,
        addresses: vec![candidate()],
        announced_at: Some(at()),
        state: PeerState::Connected,
        session: Some(session()),
        last_error: None,
    }
}

fn status() -> StatusInfo {
    StatusInfo {
        name: "alice".into(),
        fingerprint: key().fingerprint().to_string(),
        link: link(),
        interface: InterfaceInfo {
            configured: "auto".into(),
            name: Some("eth0".into()),
            up: true,
            addresses: vec![AddressInfo {
                ip: "2001:db8::7".parse().unwrap(),
                prefix_len: 64,
                class: AddressClass::Public,
                announced: true,
                temporary: false,
                deprecated: false,
                tentative: false,
            }],
        },
        mailbox: MailboxInfo {
            protocol: MailProtocol::Imap,
            connected: true,
            last_check: Some(at()),
            next_check: None,
            pending: 0,
            rejected: 2,
            last_error: None,
        },
        outbox_size: 1,
        connected_peers: vec![session()],
    }
}

fn every_request() -> Vec<Request> {
    vec![
        Request::Status,
        Request::Peers,
        Request::PeerAdd {
            name: name("hitoshi"),
            email: "hitoshi@isp-b.example".parse().unwrap(),
            key: key(),
            announce: false,
            accept_unsigned: true,
        },
        Request::PeerRemove {
            name: name("hitoshi"),
        },
        Request::Outbox,
        Request::Announce { peers: vec![] },
        Request::Announce {
            peers: vec![name("hitoshi"), name("bob_2")],
        },
        Request::Check,
        Request::Call {
            peer: name("hitoshi"),
            wait_secs: 120,
        },
        Request::Connect {
            peer: name("hitoshi"),
        },
        Request::Disconnect {
            peer: name("hitoshi"),
        },
        Request::Open {
            peer: name("hitoshi"),
            service: "ssh".parse().unwrap(),
        },
        Request::LinkUp,
        Request::LinkDown,
        Request::LinkStatus,
        Request::Events,
        Request::Key,
    ]
}

fn every_response() -> Vec<Response> {
    vec![
        Response::Hello(ServerHello {
            protocol: PROTOCOL_NAME.into(),
            version: PROTOCOL_VERSION,
            software: "peerd 0.1.0".into(),
            access: Access::ReadOnly,
        }),
        Response::Error(ControlError::no_key(&name("me-on-phone"))),
        Response::Status(status()),
        Response::Peers(PeerList {
            peers: vec![peer()],
        }),
        Response::PeerAdded(peer()),
        Response::PeerRemoved(PeerRef {
            peer: name("hitoshi"),
        }),
        Response::Outbox(OutboxList {
            entries: vec![OutboxEntryInfo {
                peer: name("hitoshi"),
                state: OutboxState::SendingBackoff,
                addresses: vec![candidate()],
                plain: false,
                attempts: 3,
                sends: 0,
                next_attempt: Some(at()),
                rate_limited: false,
                last_error: Some("smtp.isp-a.example: connection refused".into()),
                sequence: None,
                queued_at: at(),
            }],
        }),
        Response::Announced(Announced {
            peers: vec![name("hitoshi")],
        }),
        Response::Checked,
        Response::Connected(session()),
        Response::Disconnected(PeerRef {
            peer: name("hitoshi"),
        }),
        Response::StreamOpen(StreamInfo {
            peer: name("hitoshi"),
            service: "ssh".parse().unwrap(),
        }),
        Response::Link(link()),
        Response::Subscribed,
        Response::Key(KeyInfo::new("alice", key())),
    ]
}

fn every_event() -> Vec<Event> {
    let kinds = vec![
        EventKind::AddressChanged {
            interface: Some("ppp0".into()),
            addresses: vec!["203.0.113.7".parse().unwrap()],
        },
        EventKind::AnnouncementSent {
            peer: name("hitoshi"),
            addresses: vec![candidate()],
            sequence: Some(1_795_000_000_000_000),
        },
        EventKind::SendFailed {
            peer: name("hitoshi"),
            error: "connection refused".into(),
            permanent: false,
        },
        EventKind::AnnouncementReceived {
            peer: name("hitoshi"),
            addresses: vec![candidate()],
            sequence: 7,
        },
        EventKind::AnnouncementRejected {
            sender: "mallory@isp-b.example".into(),
            reason: "unknown sender key".into(),
        },
        EventKind::PeerConnected {
            peer: name("hitoshi"),
            address: addr("[2001:db8::9]:7447"),
        },
        EventKind::PeerDisconnected {
            peer: name("hitoshi"),
            reason: "idle timeout".into(),
        },
        EventKind::LinkStateChanged {
            state: LinkState::Up,
            interface: Some("ppp0".into()),
            reason: None,
        },
        EventKind::MailboxError {
            error: "mail.isp-a.example: timed out".into(),
        },
        EventKind::Missed { count: 12 },
    ];
    kinds
        .into_iter()
        .map(|kind| Event { at: at(), kind })
        .collect()
}

fn round_trip<T>(value: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let line = encode(value).unwrap();
    assert_eq!(line.last(), Some(&b'\n'));
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    decode(&line[..line.len() - 1]).unwrap()
}

#[test]
fn every_message_round_trips() {
    for r in every_request() {
        assert_eq!(round_trip(&r), r);
        assert!(r.validate().is_ok(), "{r:?}");
    }
    for r in every_response() {
        assert_eq!(round_trip(&r), r);
    }
    for e in every_event() {
        assert_eq!(round_trip(&e), e);
    }
    let hello = ClientHello::new("peerctl 0.1.0");
    assert_eq!(round_trip(&hello), hello);
    assert!(hello.check().is_ok());
}

#[test]
fn every_request_expects_its_answer_and_errors() {
    let responses = every_response();
    for req in every_request() {
        let answers: Vec<&str> = responses
            .iter()
            .filter(|r| req.expects(r) && !matches!(r, Response::Error(_)))
            .map(Response::kind)
            .collect();
        assert_eq!(answers.len(), 1, "{req:?}: {answers:?}");
        assert!(req.expects(&Response::Error(ControlError::new(ErrorKind::Failed, "x"))));
        assert!(!req.expects(&responses[0]), "a hello answers no request");
    }
}

#[test]
fn the_wire_shapes_are_as_documented() {
    let v = |value: &dyn erased::Ser| -> Value { serde_json::from_slice(&value.line()).unwrap() };
    assert_eq!(v(&Request::Status), json!({"method": "status"}));
    assert_eq!(
        v(&Request::Call {
            peer: name("hitoshi"),
            wait_secs: 120
        }),
        json!({"method": "call", "params": {"peer": "hitoshi", "wait_secs": 120}})
    );
    assert_eq!(
        v(&ClientHello::new("peerctl 0.1.0")),
        json!({"protocol": "peerd-control", "version": 1, "software": "peerctl 0.1.0"})
    );
    assert_eq!(
        v(&Response::Error(ControlError::new(
            ErrorKind::NoKey,
            "no key for this peer"
        ))),
        json!({"response": "error", "kind": "no-key", "message": "no key for this peer"})
    );
    assert_eq!(v(&Response::Checked), json!({"response": "checked"}));
    assert_eq!(
        v(&Response::Connected(session())),
        json!({"response": "connected", "peer": "hitoshi", "address": "198.51.100.7:7447", "since": "2026-11-18T11:06:40Z"})
    );
    assert_eq!(
        v(&every_event()[5]),
        json!({"at": "2026-11-18T11:06:40Z", "event": "peer-connected", "peer": "hitoshi", "address": "[2001:db8::9]:7447"})
    );
    // absent values are null, never missing
    let status = v(&Response::Status(status()));
    assert_eq!(status["mailbox"]["next_check"], Value::Null);
    assert_eq!(status["link"]["state"], "failed");
    assert_eq!(status["interface"]["addresses"][0]["class"], "public");
    let peer = v(&Response::Peers(PeerList {
        peers: vec![peer()],
    }));
    assert_eq!(peer["peers"][0]["addresses"][0]["kind"], "host");
    assert_eq!(peer["peers"][0]["key"], key().to_string());
}

/// Serializes anything, for the shape test.
mod erased {
    pub trait Ser {
        fn line(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn line(&self) -> Vec<u8> {
            crate::encode(self).unwrap()
        }
    }
}

fn request_error(line: &str) -> String {
    match decode::<Request>(line.as_bytes()) {
        Ok(r) => panic!("{line:?} was accepted as {r:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hostile_requests_are_refused_with_a_reason() {
    let cases: &[(&str, &str)] = &[
        (r#"{"method":"reboot"}"#, "unknown variant `reboot`"),
        (r#"{"method":"status","extra":1}"#, "extra"),
        (
            r#"{"method":"peer-remove","params":{"name":"hitoshi","force":true}}"#,
            "unknown field `force`",
        ),
        (
            r#"{"method":"peer-remove","params":{"name":"../etc"}}"#,
            "a name may contain only",
        ),
        (
            r#"{"method":"peer-remove","params":{"name":"x"},"params":{"name":"y"}}"#,
            "duplicate field",
        ),
        (r#"{"method":"peer-remove"}"#, ""),
        (
            r#"{"method":"peer-add","params":{"name":"h","email":"h@x.example","key":"ybnd-rfg8-ejkm-cpqx","announce":true,"accept_unsigned":false}}"#,
            "fingerprint",
        ),
        (
            r#"{"method":"peer-add","params":{"name":"h","email":"h@x.example\r\nBcc: x@y","key":"AAAA","announce":true,"accept_unsigned":false}}"#,
            "cannot contain",
        ),
        (
            r#"{"method":"call","params":{"peer":"h","wait_secs":-1}}"#,
            "invalid value",
        ),
        (
            r#"{"method":"call","params":{"peer":"h","wait_secs":1e400}}"#,
            "",
        ),
        (r#"{"method":"call","params":["h",5]}"#, ""),
        (r#"["status"]"#, ""),
        (r#""status""#, ""),
        (r#"{"method":7}"#, ""),
        (r#"{}"#, ""),
        (r#"null"#, ""),
        ("{\"method\":\"status\"", "EOF"),
        ("{\"method\":\"sta\u{0}tus\"}", ""),
    ];
    for (line, want) in cases {
        let err = request_error(line);
        assert!(err.contains(want), "{line}: {err}");
        assert!(err.starts_with("malformed message: "), "{line}: {err}");
    }
    assert!(matches!(
        decode::<Request>(b"\xc3\x28"),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    for depth in [200, 10_000, 1_000_000] {
        let params = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        // typed: refused at the first level that is not a name
        let line = format!(r#"{{"method":"announce","params":{{"peers":{params}}}}}"#);
        let err = request_error(&line);
        assert!(err.contains("expected a string"), "{depth}: {err}");
        // params before method: serde buffers them untyped, and the
        // recursion limit stops it
        let line = format!(r#"{{"params":{params},"method":"announce"}}"#);
        let err = request_error(&line);
        assert!(err.contains("recursion limit"), "{depth}: {err}");
        let obj = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        assert!(decode::<Response>(obj.as_bytes()).is_err());
        assert!(decode::<Event>(obj.as_bytes()).is_err());
        assert!(decode::<ClientHello>(obj.as_bytes()).is_err());
    }
}

#[test]
fn out_of_range_waits_are_invalid() {
    for wait_secs in [0, MAX_WAIT_SECS + 1, u64::MAX] {
        let r = Request::Call {
            peer: name("h"),
            wait_secs,
        };
        assert_eq!(r.validate().unwrap_err().kind, ErrorKind::InvalidRequest);
    }
}

#[test]
fn only_the_reading_requests_are_read_only() {
    let read_only: Vec<&str> = every_request()
        .iter()
        .filter(|r| r.is_read_only())
        .map(Request::method)
        .collect();
    assert_eq!(
        read_only,
        ["status", "peers", "outbox", "link-status", "events", "key"]
    );
}

#[test]
fn hellos_of_other_protocols_and_versions_are_refused_clearly() {
    let mut h = ClientHello::new("peerctl 9.0");
    h.version = 2;
    let e = h.check().unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnsupportedVersion);
    assert!(e.message.contains("version 2"), "{e}");
    assert!(e.message.contains("version 1"), "{e}");
    let mut h = ClientHello::new("x");
    h.protocol = "http".into();
    assert_eq!(h.check().unwrap_err().kind, ErrorKind::UnsupportedVersion);
    let h = ClientHello::new("evil\x1b[2J");
    assert_eq!(h.check().unwrap_err().kind, ErrorKind::InvalidRequest);
    let h = ClientHello::new("x".repeat(MAX_SOFTWARE_LEN + 1));
    assert_eq!(h.check().unwrap_err().kind, ErrorKind::InvalidRequest);
    // a future hello with more fields still reads as a hello, so its
    // version can be refused properly
    let future: ClientHello = decode(
        br#"{"protocol":"peerd-control","version":2,"software":"peerctl 2","features":["x"]}"#,
    )
    .unwrap();
    assert_eq!(
        future.check().unwrap_err().kind,
        ErrorKind::UnsupportedVersion
    );
}

#[test]
fn responses_and_events_from_a_newer_daemon_keep_working_when_fields_are_added() {
    let line = br#"{"response":"connected","peer":"hitoshi","address":"198.51.100.7:7447","since":"2026-11-18T11:06:40Z","rtt_ms":12}"#;
    assert_eq!(
        decode::<Response>(line).unwrap(),
        Response::Connected(session())
    );
    let line = br#"{"at":"2026-11-18T11:06:40Z","event":"missed","count":3,"why":"slow"}"#;
    assert_eq!(
        decode::<Event>(line).unwrap().kind,
        EventKind::Missed { count: 3 }
    );
    // but an unknown kind is an error, not a guess
    assert!(decode::<Response>(br#"{"response":"teleported"}"#).is_err());
    assert!(decode::<Event>(br#"{"at":"2026-11-18T11:06:40Z","event":"teleported"}"#).is_err());
    assert!(decode::<Response>(br#"{"response":"error","kind":"on-fire","message":"x"}"#).is_err());
}
