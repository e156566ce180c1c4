//! End to end: the real `peerd` and `peerctl` on hosts in network
//! namespaces, mail through the real Postfix + Dovecot, QUIC between the
//! namespaces (see `e2e_harness` for the topology). Each test asserts what
//! a user sees: `peerctl --json` documents, exit statuses, bytes through
//! `peerctl open`, a real ssh session.
//!
//! Root only (namespaces, the mail stack), like the other namespace tests:
//! without it they fail saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_harness;

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e_harness::{Host, NOBODY, PEER_PORT, Readiness, Stream, World, is, show, wait_for};
use nix::sys::signal::Signal;
use peerd_testkit::SmtpSecurity;
use serde_json::Value;

/// How long mail may take from an address change to the peer's daemon
/// (debounce, SMTP, Dovecot's IDLE push of about 0.5 s, verification).
const MAIL: Duration = Duration::from_secs(60);
/// How long a connection may take once the announcement is in.
const CONNECT: Duration = Duration::from_secs(30);
/// How long a line through a stream may take.
const LINE: Duration = Duration::from_secs(15);

/// alice and hitoshi, each with the other as a `[[peer]]`, not started.
fn pair(world: &World) -> (Host, Host) {
    let mut alice = world.host("alice");
    let mut hitoshi = world.host("hitoshi");
    alice.add_peer(&hitoshi.identity());
    hitoshi.add_peer(&alice.identity());
    (alice, hitoshi)
}

/// Waits until the start-up has settled: each has read the other's
/// announcement made at start, and hitoshi is connected to alice.
///
/// Tests that change an address wait for this first, so that their
/// announcement does not land while the one from start-up is still being
/// read (that race has a test of its own,
/// `hitoshi_reads_announcements_that_arrive_back_to_back`).
fn settle(alice: &Host, hitoshi: &Host) {
    wait_for(
        "the start-up announcements read on both sides",
        MAIL,
        || {
            let knows = |host: &Host, peer: &str| {
                host.peer_info(peer)
                    .is_some_and(|p| p["announced_at"].is_string())
            };
            (knows(alice, "hitoshi") && knows(hitoshi, "alice")).then_some(())
        },
    );
    wait_for(
        "hitoshi connected to alice's address at start",
        MAIL,
        || (hitoshi.session_address("alice")?.ip() == IpAddr::V4(alice.addr)).then_some(()),
    );
}

/// Whether an event's `addresses` list has one with IP `ip`.
fn has_address(event: &Value, ip: IpAddr) -> bool {
    event["addresses"].as_array().is_some_and(|list| {
        list.iter().any(|c| {
            c["address"]
                .as_str()
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                .is_some_and(|a| a.ip() == ip)
        })
    })
}

/// Checks that `value` is an object with every key in `keys`.
fn assert_keys(what: &str, value: &Value, keys: &[&str]) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not a JSON object: {value}"));
    for key in keys {
        assert!(object.contains_key(*key), "{what}: no {key:?} in {value}");
    }
}

/// Sends one line through `stream` and expects it back from the echo
/// service of `owner`.
fn echo_round_trip(stream: &mut Stream, owner: &str, line: &str) {
    stream.send(line).expect("write to peerctl open");
    let answer = stream.recv(LINE).unwrap();
    assert_eq!(answer, format!("{owner} echo: {line}"));
}

/// alice's address changes; hitoshi learns it by mail, connects to it and
/// bytes go both ways through `peerctl open`. Then it changes again in
/// the middle of the session: hitoshi follows the newer announcement (a
/// higher sequence number) long before the old session could time out.
#[test]
fn hitoshi_follows_alice_through_two_address_changes() {
    let world = World::new();
    let (mut alice, mut hitoshi) = pair(&world);
    let rounds = if e2e_harness::heavy() { 10 } else { 1 };
    // At most 6 announcements per peer and hour by default: the heavy
    // variant's dozen address changes need more.
    alice.settings.max_per_hour = 6 + rounds;
    let echo = alice.start_echo_server();
    alice
        .settings
        .services
        .push(("echo".into(), echo, vec!["hitoshi".into()]));
    alice.start();
    hitoshi.start();
    let mut events = hitoshi.events();
    // At start each announces itself to the other; let that settle.
    settle(&alice, &hitoshi);

    let first = IpAddr::V4(alice.redial());
    let received = events.wait(
        "announcement-received from alice with her new address",
        MAIL,
        |e| is(e, "announcement-received") && e["peer"] == "alice" && has_address(e, first),
    );
    let first_seq = received["sequence"].as_u64().expect("sequence is a number");
    wait_for("hitoshi connected to alice's new address", CONNECT, || {
        (hitoshi.session_address("alice")?.ip() == first).then_some(())
    });
    let mut stream = Stream::open(&hitoshi, "alice", "echo");
    echo_round_trip(&mut stream, "alice", "hello from hitoshi");
    echo_round_trip(&mut stream, "alice", "and once more");

    // The second change (and more under PEERD_HEAVY=1), while the
    // session and a stream on it are up.
    let idle_timeout = Duration::from_secs(30); // Settings::idle_timeout
    let mut last_seq = first_seq;
    for round in 0..rounds {
        let changed = Instant::now();
        let next = IpAddr::V4(alice.redial());
        let received = events.wait(
            "announcement-received with alice's next address",
            MAIL,
            |e| is(e, "announcement-received") && e["peer"] == "alice" && has_address(e, next),
        );
        let seq = received["sequence"].as_u64().expect("sequence is a number");
        assert!(
            seq > last_seq,
            "the newer announcement must carry a higher sequence: {last_seq} then {seq}"
        );
        last_seq = seq;
        wait_for(
            "hitoshi connected to alice's next address",
            idle_timeout,
            || (hitoshi.session_address("alice")?.ip() == next).then_some(()),
        );
        let followed = changed.elapsed();
        assert!(
            followed < idle_timeout / 2,
            "round {round}: hitoshi took {followed:?} to follow alice (idle_timeout \
             {idle_timeout:?}): the old session was left to time out instead of being superseded"
        );
        events.wait("peer-connected to alice's next address", LINE, |e| {
            is(e, "peer-connected")
                && e["peer"] == "alice"
                && e["address"]
                    .as_str()
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                    .is_some_and(|a| a.ip() == next)
        });
        // If the old session was closed, it was for the new address, not
        // for silence.
        for e in events.seen() {
            if is(e, "peer-disconnected") && e["peer"] == "alice" {
                let reason = e["reason"].as_str().unwrap_or_default();
                assert!(
                    !reason.contains("idle") && !reason.contains("timed out"),
                    "the old session ended by timing out: {e}"
                );
            }
        }
        if round == 0 {
            // The stream on the superseded session ends; it does not hang
            // until the idle timeout.
            wait_for("the stream on the old session to end", LINE, || {
                stream.exited()
            });
        }
        // A new stream goes over the new session, both ways.
        let mut fresh = Stream::open(&hitoshi, "alice", "echo");
        echo_round_trip(&mut fresh, "alice", &format!("hello at {next}"));
        assert_eq!(
            fresh.finish(LINE).map(|s| s.code()),
            Some(Some(0)),
            "peerctl open exits 0 when its stdin closes and the service closes"
        );
    }
    // alice sees the session too, and status lists it.
    assert!(
        alice.session_address("hitoshi").is_some(),
        "alice does not list hitoshi as connected: {:?}",
        alice.peer_info("hitoshi")
    );
    let status = hitoshi.json(&["status"]);
    let sessions = status["connected_peers"].as_array().unwrap();
    assert!(
        sessions.iter().any(|s| s["peer"] == "alice"
            && s["address"]
                .as_str()
                .is_some_and(|a| a.starts_with(&format!("{}:", alice.addr)))
            && s["since"].is_string()),
        "status.connected_peers: {status}"
    );
}

/// alice's address changes several times in quick succession (each
/// change outlasting the debounce, so each one is announced): the mails
/// arrive at hitoshi's mailbox while he is still processing the previous
/// one, and he must still end up connected to her last address ("the
/// latest address always wins"), not to one in the middle.
#[test]
fn hitoshi_ends_at_alice_s_last_address_after_rapid_changes() {
    let world = World::new();
    let (mut alice, mut hitoshi) = pair(&world);
    alice.settings.max_per_hour = 30;
    alice.start();
    hitoshi.start();
    settle(&alice, &hitoshi);
    let mut alice_events = alice.events();
    let mut last = alice.addr;
    for _ in 0..5 {
        last = alice.redial();
        alice_events.wait("alice's announcement of her new address", MAIL, |e| {
            is(e, "announcement-sent") && e["peer"] == "hitoshi" && has_address(e, IpAddr::V4(last))
        });
    }
    let idle_timeout = Duration::from_secs(30); // Settings::idle_timeout
    wait_for(
        "hitoshi connected to alice's last address",
        idle_timeout,
        || (hitoshi.session_address("alice")?.ip() == IpAddr::V4(last)).then_some(()),
    );
}

/// After her address changed, alice still reads her mail: her mailbox
/// session made from the old address is dead with it, and must not be
/// left waiting for a server that can no longer answer. hitoshi's next
/// announcement reaches her, and she still stops cleanly.
#[test]
fn alice_still_reads_mail_after_her_address_changed() {
    let world = World::new();
    let (mut alice, mut hitoshi) = pair(&world);
    alice.start();
    hitoshi.start();
    settle(&alice, &hitoshi);
    let mut alice_events = alice.events();
    let new = IpAddr::V4(alice.redial());
    wait_for("hitoshi connected to alice's new address", MAIL, || {
        (hitoshi.session_address("alice")?.ip() == new).then_some(())
    });
    hitoshi.peerctl_ok(&["announce", "alice"]);
    alice_events.wait(
        "alice to read hitoshi's announcement sent after her address changed",
        Duration::from_secs(30),
        |e| is(e, "announcement-received") && e["peer"] == "hitoshi",
    );
    let started = Instant::now();
    let status = alice.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "peerd exits 0 on SIGTERM\n{}",
        alice.log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "peerd took {:?} to stop\n{}",
        started.elapsed(),
        alice.log()
    );
}

/// Two announcements that reach hitoshi's mailbox a moment apart (the
/// second while he is still reading the first) are both read: a mail
/// that lands between reading the folder and going back to IMAP IDLE is
/// not left unseen until some later mail wakes the mailbox session.
#[test]
fn hitoshi_reads_announcements_that_arrive_back_to_back() {
    let world = World::new();
    let (mut alice, mut hitoshi) = pair(&world);
    alice.settings.max_per_hour = 30;
    alice.start();
    hitoshi.start();
    settle(&alice, &hitoshi);
    let mut alice_events = alice.events();
    let mut hitoshi_events = hitoshi.events();
    // The second mail is sent a moment after the first left alice, the
    // moment walking across the time when hitoshi reads the first one
    // (Dovecot's IDLE push waits 0.5 s, then he fetches, verifies, deletes
    // it, and goes back to IDLE): a race is aimed at, these pauses are not
    // waits for readiness.
    for offset_ms in (300..=900).step_by(50) {
        alice.peerctl_ok(&["announce", "hitoshi"]);
        alice_events.wait("the first announcement leaving", MAIL, |e| {
            is(e, "announcement-sent") && e["peer"] == "hitoshi"
        });
        std::thread::sleep(Duration::from_millis(offset_ms));
        alice.peerctl_ok(&["announce", "hitoshi"]);
        let last = alice_events.wait("the second announcement leaving", MAIL, |e| {
            is(e, "announcement-sent") && e["peer"] == "hitoshi"
        });
        let seq = last["sequence"].as_u64().unwrap();
        hitoshi_events.wait(
            &format!(
                "hitoshi reading the second announcement (sequence {seq}, asked for \
                 {offset_ms} ms after the first left)"
            ),
            Duration::from_secs(20),
            |e| is(e, "announcement-received") && e["peer"] == "alice" && e["sequence"] == seq,
        );
    }
}

/// Every `--json` listing parses and carries the fields INTERFACE.md
/// names; `call` times out with 75, a refused socket gives 77, a stopped
/// daemon 69; the daemon says READY=1 once its socket answers and exits 0
/// on SIGTERM.
#[test]
fn json_listings_and_exit_statuses() {
    let world = World::new();
    let (mut alice, mut hitoshi) = pair(&world);
    let ready = alice.start();
    assert_eq!(
        ready,
        Readiness::Notify,
        "peerd must send READY=1 on NOTIFY_SOCKET once the control socket listens"
    );
    hitoshi.start();

    let status = alice.json(&["status"]);
    assert_keys(
        "status",
        &status,
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
    assert_eq!(status["name"], "alice");
    assert_eq!(status["fingerprint"], alice.fingerprint.as_str());
    assert_keys(
        "status.link",
        &status["link"],
        &[
            "driver",
            "on_demand",
            "state",
            "interface",
            "since",
            "reason",
            "retry_at",
        ],
    );
    assert_eq!(status["link"]["driver"], "external");
    assert_keys(
        "status.interface",
        &status["interface"],
        &["configured", "name", "up", "addresses"],
    );
    assert_eq!(status["interface"]["configured"], "isp0");
    assert_eq!(status["interface"]["name"], "isp0");
    assert_eq!(status["interface"]["up"], true);
    let addresses = status["interface"]["addresses"].as_array().unwrap();
    let own = addresses
        .iter()
        .find(|a| a["ip"] == alice.addr.to_string())
        .unwrap_or_else(|| panic!("status lists not {}: {status}", alice.addr));
    assert_keys(
        "status.interface.addresses[]",
        own,
        &[
            "ip",
            "prefix_len",
            "class",
            "announced",
            "temporary",
            "deprecated",
            "tentative",
        ],
    );
    assert_eq!(own["prefix_len"], 16);
    assert_eq!(own["class"], "private");
    assert_eq!(own["announced"], true);
    assert_keys(
        "status.mailbox",
        &status["mailbox"],
        &[
            "protocol",
            "connected",
            "last_check",
            "next_check",
            "pending",
            "rejected",
            "last_error",
        ],
    );
    assert_eq!(status["mailbox"]["protocol"], "imap");
    assert!(status["outbox_size"].is_u64(), "{status}");
    assert!(status["connected_peers"].is_array(), "{status}");

    let peers = alice.json(&["peers"]);
    let list = peers["peers"].as_array().expect("peers.peers is a list");
    assert_eq!(list.len(), 1, "{peers}");
    let h = &list[0];
    assert_keys(
        "peers[]",
        h,
        &[
            "name",
            "email",
            "format",
            "key",
            "fingerprint",
            "source",
            "announce",
            "auto_connect",
            "accept_unsigned",
            "addresses",
            "announced_at",
            "state",
            "session",
            "last_error",
        ],
    );
    assert_eq!(h["name"], "hitoshi");
    assert_eq!(h["email"], hitoshi.email.as_str());
    assert_eq!(h["key"], hitoshi.key.as_str());
    assert_eq!(h["fingerprint"], hitoshi.fingerprint.as_str());
    assert_eq!(h["source"], "config");
    assert_eq!(h["format"], "sealed");

    let key = alice.json(&["key"]);
    assert_keys("key", &key, &["name", "public_key", "fingerprint"]);
    assert_eq!(key["name"], "alice");
    assert_eq!(key["public_key"], alice.key.as_str());
    assert_eq!(key["fingerprint"], alice.fingerprint.as_str());

    let link = alice.json(&["link", "status"]);
    assert_keys(
        "link status",
        &link,
        &[
            "driver",
            "on_demand",
            "state",
            "interface",
            "since",
            "reason",
            "retry_at",
        ],
    );
    assert_eq!(link["driver"], "external");
    assert_eq!(link["on_demand"], false);

    // A peer whose daemon never answers: its announcement waits in the
    // outbox, and calling it times out.
    // mallory's mailbox takes the mail; nobody reads it.
    let ghost = world.identity("ghost", "mallory@isp-b.test");
    alice.peerctl_ok(&[
        "peer",
        "add",
        "ghost",
        "--email",
        &ghost.email,
        "--key",
        &ghost.key,
    ]);
    alice.peerctl_ok(&["announce", "ghost"]);
    let outbox = wait_for("an outbox entry for ghost", MAIL, || {
        let outbox = alice.json(&["outbox"]);
        let entry = outbox["entries"]
            .as_array()
            .expect("outbox.entries is a list")
            .iter()
            .find(|e| e["peer"] == "ghost")
            .cloned();
        entry.map(|e| (outbox.clone(), e))
    });
    let (outbox, entry) = outbox;
    assert_keys(
        "outbox.entries[]",
        &entry,
        &[
            "peer",
            "state",
            "addresses",
            "plain",
            "attempts",
            "sends",
            "next_attempt",
            "rate_limited",
            "last_error",
            "sequence",
            "queued_at",
        ],
    );
    assert!(
        ["pending", "sending-backoff", "awaiting-ack"]
            .contains(&entry["state"].as_str().unwrap_or("")),
        "an unacknowledged entry: {outbox}"
    );
    let started = Instant::now();
    let call = alice.peerctl(&["call", "ghost", "--wait", "2"]);
    assert_eq!(
        call.status.code(),
        Some(75),
        "call timing out: {}",
        show(&call)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "call --wait 2 took {:?}",
        started.elapsed()
    );

    // The socket is 0660 root:root: nobody is refused by the kernel.
    let denied = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .arg(e2e_harness::peerctl_binary())
        .arg("--socket")
        .arg(alice.socket())
        .args(["status", "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(denied.status.code(), Some(77), "nobody: {}", show(&denied));
    let mode = fs::metadata(alice.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the socket has [control] mode");

    // SIGTERM: a clean stop, the socket gone, peerctl says unreachable.
    let status = alice.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "peerd exits 0 on SIGTERM\n{}",
        alice.log()
    );
    let down = alice.peerctl(&["status", "--json"]);
    assert_eq!(down.status.code(), Some(69), "daemon down: {}", show(&down));
    let error: Value = serde_json::from_slice(&down.stdout).unwrap_or(Value::Null);
    if !down.stdout.is_empty() {
        assert_keys("--json error", &error["error"], &["code", "message"]);
    }
}

/// A real ssh session through `peerctl open` as ProxyCommand, to a
/// private sshd in hitoshi's namespace offered as `[[service]] ssh`.
#[test]
fn ssh_through_peerctl_open() {
    let world = World::new();
    let (mut alice, mut hitoshi) = pair(&world);
    let sshd = Sshd::start(&mut hitoshi);
    hitoshi
        .settings
        .services
        .push(("ssh".into(), sshd.addr, vec!["alice".into()]));
    alice.start();
    hitoshi.start();
    // alice needs to know where hitoshi is: hitoshi announces.
    hitoshi.peerctl_ok(&["announce", "alice"]);
    wait_for("alice to know hitoshi's address", MAIL, || {
        let info = alice.peer_info("hitoshi")?;
        (!info["addresses"].as_array()?.is_empty()).then_some(())
    });
    let proxy = format!(
        "{} --socket {} open %h --service ssh",
        e2e_harness::peerctl_binary().display(),
        alice.socket().display()
    );
    let out = Command::new("ssh")
        .args(["-F", "/dev/null"])
        .arg("-i")
        .arg(&sshd.user_key)
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", sshd.known_hosts.display()))
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR"])
        .args(["-o", "ConnectTimeout=30"])
        .arg("-o")
        .arg(format!("ProxyCommand={proxy}"))
        .arg("root@hitoshi")
        .arg("echo peerd-ssh-ok; ip -4 -o addr show dev isp0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ssh through peerctl open: {}\n{}\n{}\nsshd log: {}",
        show(&out),
        alice.log(),
        hitoshi.log(),
        fs::read_to_string(&sshd.log).unwrap_or_default()
    );
    assert!(stdout.starts_with("peerd-ssh-ok\n"), "{stdout}");
    // The shell ran in hitoshi's namespace: it sees his address.
    assert!(stdout.contains(&format!("{}/16", hitoshi.addr)), "{stdout}");
}

/// A private sshd in a host's namespace: temporary host key, authorized
/// key and config, `-D` on a free port of 127.0.0.1 there.
struct Sshd {
    addr: std::net::SocketAddr,
    user_key: std::path::PathBuf,
    known_hosts: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Sshd {
    fn start(host: &mut Host) -> Self {
        let dir = host.dir.join("sshd");
        fs::create_dir_all(&dir).unwrap();
        let host_key = dir.join("host_key");
        let user_key = dir.join("user_key");
        for key in [&host_key, &user_key] {
            e2e_harness::run(
                "ssh-keygen",
                &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
            );
        }
        let authorized = dir.join("authorized_keys");
        fs::copy(dir.join("user_key.pub"), &authorized).unwrap();
        let known_hosts = dir.join("known_hosts");
        fs::write(
            &known_hosts,
            format!(
                "hitoshi {}",
                fs::read_to_string(dir.join("host_key.pub")).unwrap()
            ),
        )
        .unwrap();
        // Debian's sshd wants its privilege separation directory.
        fs::create_dir_all("/run/sshd").unwrap();
        // A free port in the namespace: bind, note it, let it go.
        let port = e2e_harness::in_netns(&host.ns.name, || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1:{port}\nHostKey {}\nPidFile none\n\
                 AuthorizedKeysFile {}\nAuthenticationMethods publickey\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nUseDNS no\n\
                 PrintMotd no\nPrintLastLog no\nLogLevel ERROR\n",
                host_key.display(),
                authorized.display()
            ),
        )
        .unwrap();
        let log = dir.join("sshd.log");
        let child = host
            .ns
            .command("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        host.adopt(child);
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let ns = host.ns.name.clone();
        wait_for(
            "sshd listening in hitoshi's namespace",
            Duration::from_secs(10),
            || {
                let ns = ns.clone();
                e2e_harness::in_netns(&ns, move || std::net::TcpStream::connect(addr).ok())
                    .map(|_| ())
            },
        );
        Self {
            addr,
            user_key,
            known_hosts,
            log,
        }
    }
}

/// SIGHUP re-reads the config: a broken one is refused and the daemon
/// keeps running on the old one; a new `[[peer]]` takes effect without a
/// restart.
#[test]
fn sighup_reloads_a_good_config_and_keeps_the_old_one_on_a_broken_one() {
    let world = World::new();
    // hitoshi's host exists (alice's [[peer]]); his daemon is not needed.
    let (mut alice, _hitoshi) = pair(&world);
    let carol = world.identity("carol", "mallory@isp-a.test");
    alice.start();
    let pid = alice.pid();
    let names = |host: &Host| -> Vec<String> {
        host.json(&["peers"])["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&alice), ["hitoshi"]);

    // Broken: an unknown key, and carol added in the same edit.
    alice.add_peer(&carol);
    alice.settings.extra = "\n[listen.bogus]\nfrobnicate = 1\n".into();
    alice.write_config();
    alice.signal(Signal::SIGHUP);
    let config = alice.config_path().display().to_string();
    wait_for(
        "peerd to report the broken config",
        Duration::from_secs(20),
        || {
            let log = fs::read_to_string(alice.log_path()).unwrap();
            log.lines()
                .any(|l| l.contains(&format!("{config}:")) && l.contains("bogus"))
                .then_some(())
        },
    );
    assert!(
        alice.is_running(),
        "peerd died on a broken config\n{}",
        alice.log()
    );
    assert_eq!(alice.pid(), pid);
    let status = alice.json(&["status"]);
    assert_eq!(status["name"], "alice");
    assert_eq!(
        names(&alice),
        ["hitoshi"],
        "the broken config was applied in part"
    );

    // Fixed: carol appears without a restart.
    alice.settings.extra.clear();
    alice.write_config();
    alice.signal(Signal::SIGHUP);
    wait_for(
        "carol in peers after SIGHUP",
        Duration::from_secs(20),
        || {
            let names = names(&alice);
            (names.contains(&"carol".to_owned()) && names.contains(&"hitoshi".to_owned()))
                .then_some(())
        },
    );
    let carol_info = alice.peer_info("carol").unwrap();
    assert_eq!(carol_info["source"], "config");
    assert_eq!(carol_info["key"], carol.key.as_str());
    assert!(alice.is_running());
    assert_eq!(alice.pid(), pid, "reloaded in place, not restarted");
}

/// After a restart the sessions are gone and no mail comes to bring them
/// back (nobody's address changed): hitoshi dials alice at her last
/// announced address, which his state database kept.
#[test]
fn a_restarted_daemon_dials_its_peers_again() {
    let world = World::new();
    let (mut alice, mut hitoshi) = pair(&world);
    alice.start();
    hitoshi.start();
    settle(&alice, &hitoshi);
    let heard = |host: &Host| {
        let info = host.peer_info("alice").expect("alice is a peer");
        (info["announced_at"].clone(), info["addresses"].clone())
    };
    let before = heard(&hitoshi);
    let status = hitoshi.stop();
    assert_eq!(status.code(), Some(0), "{}", hitoshi.log());
    wait_for("alice sees the session end", CONNECT, || {
        alice.session_address("hitoshi").is_none().then_some(())
    });
    hitoshi.start();
    wait_for("hitoshi connected to alice again", CONNECT, || {
        (hitoshi.session_address("alice")?.ip() == IpAddr::V4(alice.addr)).then_some(())
    });
    assert_eq!(
        heard(&hitoshi),
        before,
        "the dial used the announcement from before the restart, no new one"
    );
    assert!(
        alice.session_address("hitoshi").is_some(),
        "alice has the session too"
    );
}

/// A plain mail from alice's address that names her address (the
/// original design: a script of hers mails it) is a hint to hitoshi, who
/// has `accept_unsigned` for her: he dials it, and the connection is
/// authenticated by her key as always. Neither daemon announces anything,
/// so the hint is the only way they meet; the mail, alice's own, stays in
/// hitoshi's mailbox.
#[test]
fn hitoshi_dials_an_unsigned_hint_from_alice() {
    let world = World::new();
    let (mut alice, mut hitoshi) = pair(&world);
    alice.settings.peers[0].announce = false;
    hitoshi.settings.peers[0].announce = false;
    hitoshi.settings.peers[0].accept_unsigned = true;
    alice.start();
    hitoshi.start();
    let mail = format!(
        "From: alice@isp-a.test\r\nTo: hitoshi@isp-b.test\r\nSubject: my address\r\n\
         Date: Thu, 26 Nov 2026 12:00:00 +0000\r\nMessage-ID: <hint-1@isp-a.test>\r\n\r\n\
         The box is at {} now.\r\n",
        alice.addr
    );
    world
        .runtime()
        .block_on(world.mail().send_via_submission(
            "alice@isp-a.test",
            "alice@isp-a.test",
            &["hitoshi@isp-b.test"],
            mail.as_bytes(),
            SmtpSecurity::StartTls,
        ))
        .unwrap();
    wait_for("hitoshi connected to the hinted address", MAIL, || {
        (hitoshi.session_address("alice")? == std::net::SocketAddr::from((alice.addr, PEER_PORT)))
            .then_some(())
    });
    assert!(
        hitoshi.log().contains("dialling an unsigned address hint"),
        "{}",
        hitoshi.log()
    );
    assert_eq!(
        hitoshi.peer_info("alice").unwrap()["announced_at"],
        Value::Null,
        "a hint is not remembered as an announcement"
    );
    let kept = world
        .runtime()
        .block_on(world.mail().fetch_all("hitoshi@isp-b.test", "INBOX"))
        .unwrap();
    assert_eq!(kept.len(), 1, "the plain mail is alice's own: it stays");
}

/// `peer add` and `peer remove` change the runtime address book, which
/// survives a restart of the daemon.
#[test]
fn runtime_peers_survive_a_restart() {
    let world = World::new();
    let (mut alice, _hitoshi) = pair(&world);
    let carol = world.identity("carol", "mallory@isp-a.test");
    let dave = world.identity("dave", "mallory@isp-b.test");
    alice.start();
    for other in [&carol, &dave] {
        let out = alice.peerctl_ok(&[
            "peer",
            "add",
            &other.name,
            "--email",
            &other.email,
            "--key",
            &other.key,
        ]);
        assert!(out.contains(&other.name), "{out}");
    }
    alice.peerctl_ok(&["peer", "remove", "dave"]);
    let refused = alice.peerctl(&["peer", "remove", "hitoshi"]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "a [[peer]] from the file cannot be removed at run time: {}",
        show(&refused)
    );
    let before = alice.json(&["peers"]);
    let status = alice.stop();
    assert_eq!(status.code(), Some(0), "{}", alice.log());
    alice.start();
    let after = alice.json(&["peers"]);
    let summary = |v: &Value| -> Vec<(String, String, String)> {
        v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["source"].as_str().unwrap().to_owned(),
                    p["key"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(summary(&before), summary(&after));
    let mut names: Vec<String> = summary(&after).into_iter().map(|(n, _, _)| n).collect();
    names.sort();
    assert_eq!(names, ["carol", "hitoshi"]);
    let carol_info = alice.peer_info("carol").unwrap();
    assert_eq!(carol_info["source"], "runtime");
    assert_eq!(carol_info["key"], carol.key.as_str());
    assert_eq!(carol_info["email"], carol.email.as_str());
}

/// The harness itself, without daemons: alice reaches the mail servers
/// through her veth and the router by the names in their certificate
/// (STARTTLS verified against the stack's CA), and hitoshi's namespace
/// after a redial of alice's address; the redial leaves exactly the new
/// address and a default route.
#[test]
fn harness_topology_reaches_mail_and_peers() {
    let world = World::new();
    let (mut alice, hitoshi) = pair(&world);
    let smtp = world.mail().ports().smtp;
    for (host, name) in [(&alice, "mail.isp-a.test"), (&hitoshi, "mail.isp-b.test")] {
        let out = host
            .ns
            .command("openssl")
            .args([
                "s_client",
                "-starttls",
                "smtp",
                "-brief",
                "-verify_return_error",
            ])
            .arg("-CAfile")
            .arg(world.mail().ca_path())
            .args(["-verify_hostname", name])
            .arg("-connect")
            .arg(format!("{name}:{smtp}"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("Verification: OK"),
            "{}: SMTP with STARTTLS to {name}: {}",
            host.name,
            show(&out)
        );
    }
    let old = alice.addr;
    let new = alice.redial();
    assert_ne!(old, new);
    let addrs = alice
        .ns
        .exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", "isp0"]);
    assert!(addrs.contains(&format!("{new}/16")), "{addrs}");
    assert!(!addrs.contains(&format!("{old}/")), "{addrs}");
    let routes = alice.ns.exec_ok(&["ip", "-4", "route", "show", "default"]);
    assert!(routes.contains("default via 10.1.0.1 dev isp0"), "{routes}");
    // A TCP connection from hitoshi's namespace to alice's new address.
    let listener = e2e_harness::in_netns(&alice.ns.name, || {
        std::net::TcpListener::bind((new, 0)).unwrap()
    });
    let target = listener.local_addr().unwrap();
    let connected = e2e_harness::in_netns(&hitoshi.ns.name, move || {
        std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5))
    });
    assert!(
        connected.is_ok(),
        "hitoshi -> alice {target}: {connected:?}"
    );
    assert!(listener.accept().is_ok());
    drop(listener);

    // Dropping everything removes the namespaces (with their veths), the
    // hosts files and the world's directory.
    let names = [
        alice.ns.name.clone(),
        hitoshi.ns.name.clone(),
        world.router().name.clone(),
    ];
    let dir = world.dir().to_owned();
    drop((alice, hitoshi, world));
    for name in names {
        assert!(
            !Path::new("/run/netns").join(&name).exists(),
            "{name} left behind"
        );
        assert!(
            !Path::new("/etc/netns").join(&name).exists(),
            "/etc/netns/{name} left behind"
        );
    }
    if std::env::var_os("PEERD_E2E_KEEP").is_none() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
