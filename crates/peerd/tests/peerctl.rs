//! The real `peerctl` binary against the real control server, which serves
//! a stand-in for the daemon's actors (`control_harness::FakeApi`; the
//! actors are wired to the socket with the daemon). Every subcommand, its
//! text and `--json` output and its exit status; permissions as another
//! user (`nobody`, by setuid in the child: CI runs as root).

#![allow(clippy::unwrap_used, reason = "test code: a panic is the test failing")]

mod control_harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;

use control_harness::{Server, at, identity, name, open_dir, peer_key, peerctl_binary, wait_until};
use peerd::control::Limits;
use peerd_control::{Event, EventKind};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EX_FAILED: i32 = 1;
const EX_USAGE: i32 = 2;
const EX_UNAVAILABLE: i32 = 69;
const EX_TEMPFAIL: i32 = 75;
const EX_NOPERM: i32 = 77;

/// The uid and gid of `nobody` on Debian.
const NOBODY: u32 = 65_534;

fn command(socket: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(peerctl_binary());
    cmd.arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("PEERD_SOCKET")
        .stdin(Stdio::null());
    cmd
}

fn peerctl(server: &Server, args: &[&str]) -> Output {
    command(&server.socket, args).output().unwrap()
}

/// peerctl run as `nobody` (with its group nogroup, no others).
fn peerctl_as_nobody(socket: &Path, args: &[&str]) -> Output {
    command(socket, args)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Runs peerctl, checks the exit status, returns stdout.
fn ok(server: &Server, args: &[&str]) -> String {
    let out = peerctl(server, args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    assert!(out.stderr.is_empty(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Runs peerctl expecting `code`; returns its one-line stderr.
fn fails(out: &Output, code: i32, args: &[&str]) -> String {
    assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(out));
    assert!(out.stdout.is_empty(), "{args:?}: {}", stdout(out));
    let err = stderr(out);
    assert!(err.starts_with("peerctl: cannot "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

fn json(server: &Server, args: &[&str]) -> Value {
    let text = ok(server, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

fn has_keys(value: &Value, keys: &[&str]) {
    for key in keys {
        assert!(value.get(key).is_some(), "no {key:?} in {value}");
    }
}

#[test]
fn status_shows_everything_interface_md_names() {
    let server = Server::start();
    let v = json(&server, &["status", "--json"]);
    has_keys(
        &v,
        &[
            "name",
            "fingerprint",
            "link",
            "interface",
            "mailbox",
            "outbox_size",
            "connected_peers",
        ],
    );
    assert_eq!(v["link"]["state"], "up");
    assert_eq!(v["interface"]["name"], "ppp0");
    assert_eq!(v["interface"]["addresses"][0]["ip"], "203.0.113.7");
    assert_eq!(v["interface"]["addresses"][0]["announced"], true);
    has_keys(
        &v["mailbox"],
        &["protocol", "last_check", "pending", "rejected"],
    );
    assert_eq!(v["mailbox"]["protocol"], "imap");
    assert_eq!(v["mailbox"]["last_check"], at().to_string());
    assert_eq!(v["outbox_size"], 1);
    assert_eq!(v["connected_peers"][0]["peer"], "hitoshi");

    let text = ok(&server, &["status"]);
    for want in [
        "name       alice (",
        "link       up on ppp0 since 2026-11-18T11:06:40Z (",
        "(driver pppd, on demand)",
        "interface  ppp0 (configured: ppp0), up",
        "addresses  203.0.113.7/32 public announced",
        "           fe80::1/64 link-local\n",
        "mailbox    imap, connected; last check 2026-11-18T11:06:40Z (",
        "1 pending; 2 rejected",
        "outbox     1 waiting",
        "connected  hitoshi at 198.51.100.7:7447 since",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}

#[test]
fn peers_lists_the_address_book() {
    let server = Server::start();
    let v = json(&server, &["peers", "--json"]);
    let peers = v["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 3);
    for p in peers {
        has_keys(
            p,
            &[
                "name",
                "email",
                "fingerprint",
                "addresses",
                "announced_at",
                "state",
            ],
        );
    }
    let hitoshi = &peers[0];
    assert_eq!(hitoshi["name"], "hitoshi");
    assert_eq!(hitoshi["email"], "hitoshi@isp-b.example");
    assert_eq!(
        hitoshi["fingerprint"],
        peer_key(2).fingerprint().to_string()
    );
    assert_eq!(hitoshi["addresses"][0]["address"], "198.51.100.7:7447");
    assert_eq!(hitoshi["announced_at"], at().to_string());
    assert_eq!(hitoshi["state"], "connected");
    assert_eq!(peers[1]["fingerprint"], Value::Null, "plain peer");

    let text = ok(&server, &["peers"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("NAME "));
    for col in ["EMAIL", "FINGERPRINT", "ADDRESSES", "ANNOUNCED", "STATE"] {
        assert!(lines[0].contains(col), "{text}");
    }
    // aligned: every column starts where its header does
    let col = lines[0].find("EMAIL").unwrap();
    for line in &lines[1..] {
        assert_eq!(line.as_bytes()[col - 1], b' ', "{text}");
        assert_ne!(line.as_bytes()[col], b' ', "{text}");
    }
    assert!(lines[1].contains("198.51.100.7:7447"), "{text}");
    assert!(lines[1].ends_with("connected"), "{text}");
    assert!(lines[2].starts_with("me-on-phone"), "{text}");
    assert!(
        lines[3].ends_with("failed: no answer from 203.0.113.9:7447"),
        "{text}"
    );
}

#[test]
fn outbox_link_status_and_key() {
    let server = Server::start();
    let v = json(&server, &["outbox", "--json"]);
    let entry = &v["entries"][0];
    has_keys(
        entry,
        &["peer", "state", "addresses", "next_attempt", "last_error"],
    );
    assert_eq!(entry["peer"], "hitoshi");
    assert_eq!(entry["state"], "sending-backoff");
    assert_eq!(
        entry["last_error"],
        "smtp.isp-a.example: connection refused"
    );
    let text = ok(&server, &["outbox"]);
    assert!(text.starts_with("PEER "), "{text}");
    assert!(text.contains("NEXT ATTEMPT"), "{text}");
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .ends_with("smtp.isp-a.example: connection refused"),
        "{text}"
    );

    let v = json(&server, &["link", "status", "--json"]);
    assert_eq!(v["state"], "failed");
    assert_eq!(v["driver"], "pppd");
    assert_eq!(v["reason"], "pppd exited with status 16: the modem hung up");
    let text = ok(&server, &["link", "status"]);
    assert!(
        text.starts_with("failed: pppd exited with status 16: the modem hung up since "),
        "{text}"
    );
    assert!(
        text.contains("; next attempt 2026-11-18T11:06:40Z ("),
        "{text}"
    );

    let key = identity().public_key();
    let v = json(&server, &["key", "--json"]);
    assert_eq!(v["public_key"], key.to_string());
    assert_eq!(v["fingerprint"], key.fingerprint().to_string());
    assert_eq!(
        ok(&server, &["key"]),
        format!("{key}\n{}\n", key.fingerprint())
    );
}

#[test]
fn commands_that_change_things_say_what_they_did() {
    let server = Server::start();
    let key = peer_key(9).to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "peer",
                "add",
                "bob",
                "--email",
                "bob@isp-c.example",
                "--key",
                &key,
                "--no-announce",
            ],
            "added peer bob <bob@isp-c.example>, key ",
        ),
        (&["peer", "remove", "bob"], "removed peer bob\n"),
        (
            &["announce"],
            "announcement queued for hitoshi, me-on-phone\n",
        ),
        (
            &["announce", "slowpoke"],
            "announcement queued for slowpoke\n",
        ),
        (&["check"], "mailbox checked\n"),
        (
            &["call", "hitoshi", "--wait", "5"],
            "hitoshi connected at 198.51.100.7:7447\n",
        ),
        (
            &["connect", "hitoshi"],
            "hitoshi connected at 198.51.100.7:7447\n",
        ),
        (&["disconnect", "hitoshi"], "disconnected from hitoshi\n"),
        (&["link", "up"], "up on ppp0 since 2026-11-18T11:06:40Z ("),
        (&["link", "down"], "down since 2026-11-18T11:06:40Z ("),
    ];
    for (args, want) in cases {
        let text = ok(&server, args);
        assert!(text.starts_with(want), "{args:?}: {text}");
    }
    assert_eq!(
        server.api.logged(),
        [
            format!("peer-add bob bob@isp-c.example {key} announce=false accept_unsigned=false"),
            "peer-remove bob".to_owned(),
            "announce hitoshi,me-on-phone".to_owned(),
            "announce slowpoke".to_owned(),
            "check".to_owned(),
            "call hitoshi 5s".to_owned(),
            "connect hitoshi".to_owned(),
            "disconnect hitoshi".to_owned(),
            "link-up".to_owned(),
            "link-down".to_owned(),
        ]
    );
}

#[test]
fn failures_exit_with_the_documented_status() {
    let server = Server::start();
    let key = peer_key(2).to_string();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["call", "slowpoke", "--wait", "1"],
            EX_TEMPFAIL,
            "cannot call slowpoke (waiting up to 1s): slowpoke did not connect within 1s",
        ),
        (&["call", "me-on-phone"], EX_FAILED, "no key for this peer"),
        (
            &["connect", "me-on-phone"],
            EX_FAILED,
            "cannot connect to me-on-phone: no key for this peer",
        ),
        (&["open", "me-on-phone"], EX_FAILED, "no key for this peer"),
        (
            &["open", "hitoshi", "--service", "vnc"],
            EX_FAILED,
            "hitoshi offers no service vnc",
        ),
        (
            &["connect", "stranger"],
            EX_FAILED,
            "no peer stranger in the address book",
        ),
        (
            &["disconnect", "slowpoke"],
            EX_FAILED,
            "not connected to slowpoke",
        ),
        (&["peer", "remove", "hitoshi"], EX_FAILED, "edit the file"),
        (
            &[
                "peer",
                "add",
                "hitoshi",
                "--email",
                "h@isp-b.example",
                "--key",
                &key,
            ],
            EX_FAILED,
            "hitoshi is in the address book already",
        ),
        (&["announce", "stranger"], EX_FAILED, "no peer stranger"),
    ];
    for (args, code, want) in cases {
        let err = fails(&peerctl(&server, args), *code, args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    server.api.check_fails.store(true, Ordering::SeqCst);
    let err = fails(&peerctl(&server, &["check"]), EX_FAILED, &["check"]);
    assert_eq!(
        err,
        "peerctl: cannot check the mailbox: mail.isp-a.example: connection refused\n"
    );
    // usage errors never reach the daemon
    let out = peerctl(&server, &["call", "hitoshi", "--wait", "0"]);
    assert_eq!(out.status.code(), Some(EX_USAGE));
}

#[test]
fn no_daemon_is_exit_69_naming_the_socket() {
    let dir = open_dir();
    let missing = dir.path().join("missing.sock");
    let out = command(&missing, &["status", "--json"]).output().unwrap();
    let err = fails(&out, EX_UNAVAILABLE, &["status"]);
    assert!(
        err.contains(&format!("peerd is not reachable at {}", missing.display())),
        "{err}"
    );
    assert!(err.contains("is peerd running?"), "{err}");
    // a socket file nobody listens on (peerd killed)
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let out = command(&stale, &["peers"]).output().unwrap();
    let err = fails(&out, EX_UNAVAILABLE, &["peers"]);
    assert!(err.contains("Connection refused"), "{err}");
}

#[test]
fn other_users_may_read_but_not_change_anything() {
    // group `daemon`: nobody is not a member
    let server = Server::start();
    for args in [
        &["status", "--json"][..],
        &["peers", "--json"],
        &["outbox", "--json"],
        &["link", "status", "--json"],
        &["key", "--json"],
    ] {
        let out = peerctl_as_nobody(&server.socket, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap();
    }
    let key = peer_key(9).to_string();
    for args in [
        &["call", "hitoshi"][..],
        &["connect", "hitoshi"],
        &["disconnect", "hitoshi"],
        &["open", "hitoshi"],
        &["announce"],
        &["check"],
        &["link", "up"],
        &["link", "down"],
        &["peer", "remove", "slowpoke"],
        &[
            "peer",
            "add",
            "bob",
            "--email",
            "bob@isp-c.example",
            "--key",
            &key,
        ],
    ] {
        let err = fails(&peerctl_as_nobody(&server.socket, args), EX_NOPERM, args);
        assert!(err.contains("permission denied"), "{err}");
        assert!(err.contains("[control] group"), "{err}");
    }
    assert!(server.api.logged().is_empty(), "{:?}", server.api.logged());
}

#[test]
fn members_of_the_control_group_may_do_everything() {
    // nobody's primary group is nogroup
    let server = Server::start_with(0o660, "nogroup", Limits::default());
    let out = peerctl_as_nobody(&server.socket, &["link", "up"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(server.api.logged(), ["link-up"]);
}

#[test]
fn a_socket_the_user_may_not_open_is_exit_77() {
    let server = Server::start_with(0o600, "daemon", Limits::default());
    let meta = std::fs::metadata(&server.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let out = peerctl_as_nobody(&server.socket, &["status"]);
    let err = fails(&out, EX_NOPERM, &["status"]);
    assert!(
        err.contains(&format!("no permission to use {}", server.socket.display())),
        "{err}"
    );
    assert!(err.contains("[control] group"), "{err}");
}

#[test]
fn events_follow_as_text_and_as_json_lines() {
    let server = Server::start();
    for json in [false, true] {
        let mut args = vec!["events"];
        if json {
            args.push("--json");
        }
        let mut child = command(&server.socket, &args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        server.api.wait_for_followers(1);
        let events = [
            EventKind::AddressChanged {
                interface: Some("ppp0".into()),
                addresses: vec!["203.0.113.8".parse().unwrap()],
            },
            EventKind::AnnouncementRejected {
                sender: "mallory@evil.example\u{1b}[2J".into(),
                reason: "unknown sender key".into(),
            },
            EventKind::PeerConnected {
                peer: name("hitoshi"),
                address: "198.51.100.7:7447".parse().unwrap(),
            },
        ];
        for kind in &events {
            server.api.emit(Event {
                at: at(),
                kind: kind.clone(),
            });
        }
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let got: Vec<String> = (0..3).map(|_| lines.next().unwrap().unwrap()).collect();
        child.kill().unwrap();
        child.wait().unwrap();
        wait_until("the follower to go", || {
            server.api.events.receiver_count() == 0
        });
        if json {
            for (line, kind) in got.iter().zip(&events) {
                let event: Event = serde_json::from_str(line).unwrap();
                assert_eq!(event.kind, *kind);
                let v: Value = serde_json::from_str(line).unwrap();
                has_keys(&v, &["at", "event"]);
            }
        } else {
            assert_eq!(
                got,
                [
                    "2026-11-18T11:06:40Z address-changed ppp0: 203.0.113.8",
                    "2026-11-18T11:06:40Z announcement-rejected from mallory@evil.example\\u{1b}[2J: unknown sender key",
                    "2026-11-18T11:06:40Z peer-connected hitoshi at 198.51.100.7:7447",
                ]
            );
        }
    }
}

#[test]
fn events_end_with_69_when_the_daemon_stops() {
    let mut server = Server::start();
    let child = command(&server.socket, &["events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    server.api.wait_for_followers(1);
    server.stop();
    let out = child.wait_with_output().unwrap();
    let err = fails(&out, EX_UNAVAILABLE, &["events"]);
    assert!(err.contains("closed the event stream"), "{err}");
}

#[test]
fn open_bridges_stdin_and_stdout_like_a_proxy_command() {
    let server = Server::start();
    let mut child = command(&server.socket, &["open", "hitoshi", "--service", "ssh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peer = server.api.take_opened();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    stdin.write_all(&[0, 1, 2, 255]).unwrap();
    // ssh's side done: the peer sees the end of the stream
    drop(stdin);
    let got = server.block_on(async {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        got
    });
    assert_eq!(got, b"SSH-2.0-OpenSSH_9.2\r\n\x00\x01\x02\xff");
    // the peer still talks back, then finishes; peerctl exits 0
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut back = Vec::new();
        stdout.read_to_end(&mut back).unwrap();
        back
    });
    let reply: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    server.block_on(async {
        peer.write_all(b"SSH-2.0-peer\r\n").await.unwrap();
        peer.write_all(&reply).await.unwrap();
        peer.shutdown().await.unwrap();
    });
    let back = reader.join().unwrap();
    assert_eq!(&back[..14], b"SSH-2.0-peer\r\n");
    assert_eq!(&back[14..], &reply[..]);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn open_ends_when_the_peer_does_even_with_stdin_open() {
    let server = Server::start();
    let mut child = command(&server.socket, &["open", "hitoshi"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peer = server.api.take_opened();
    server.block_on(async {
        peer.write_all(b"bye").await.unwrap();
        peer.shutdown().await.unwrap();
        drop(peer);
    });
    // stdin stays open (ssh keeps it): peerctl must not wait for it
    let _stdin = child.stdin.take().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "bye");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
