//! End to end on on-demand links: the caller flow (`peerctl call`) and the
//! callee flow (POP3 polling on a metered link), with idle hang-up.
//!
//! Both hosts use `[link] driver = "pppd"` with `on_demand = true`, and
//! the pppd program is the stand-in `crates/peerd-link/examples/pppd_standin.rs`:
//! this kernel has no PPP (`/dev/ppp` is missing, the real pppd exits 4),
//! so the stand-in does what pppd's kernel side would: it creates `ppp0`
//! (a tun device) with `ip`, gives it `LOCAL peer REMOTE` as IPCP would,
//! brings it up, and removes it again on SIGTERM (exit 5), logging each
//! run to `ppp/log`. A tun device with no reader carries no packets, so
//! the router routes each host's "PPP address" to its veth: the bytes
//! to and from that address travel there, as they would over the line.
//!
//! Root only, like the other namespace tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_harness;

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use e2e_harness::{Host, Link, World, is, show, wait_for};
use peerd_control::Timestamp;

/// The stand-in's log lines for `host` (`N start ...`, `N up ppp0`,
/// `N term`, `N exit 5`, ...).
fn ppp_log(host: &Host) -> Vec<String> {
    fs::read_to_string(host.ppp_dir().join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// How many dials the stand-in saw, and how many of them ended.
fn dials(host: &Host) -> (usize, usize) {
    let log = ppp_log(host);
    let started = log
        .iter()
        .filter(|l| l.split(' ').nth(1) == Some("start"))
        .count();
    let ended = log
        .iter()
        .filter(|l| l.split(' ').nth(1) == Some("exit"))
        .count();
    (started, ended)
}

fn link_state(host: &Host) -> String {
    host.json(&["link", "status"])["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The mail check at start of an on-demand link: dial, check, hang up
/// at once (not after idle_hangup).
fn start_check_dials_and_hangs_up(host: &Host) {
    wait_for(
        &format!("{}'s first mail check to dial and hang up", host.name),
        Duration::from_secs(60),
        || {
            let (started, ended) = dials(host);
            (started >= 1 && ended >= 1).then_some(())
        },
    );
    assert!(
        ppp_log(host).iter().any(|l| l.starts_with("1 up ppp0")),
        "{}: the first dial brought ppp0 up: {:?}",
        host.name,
        ppp_log(host)
    );
    wait_for(
        &format!("{}'s link down after the check", host.name),
        Duration::from_secs(20),
        || (link_state(host) == "down").then_some(()),
    );
}

/// alice calls hitoshi; both links are on demand. hitoshi's daemon dials
/// only to poll his mailbox over POP3 (once at start, then every
/// `check_interval`), hanging up right after each check. alice's `call`
/// dials, announces and waits; hitoshi's next check finds the
/// announcement, keeps the link up and connects to alice's PPP address;
/// `call` exits 0. When hitoshi disconnects, both links hang up after
/// `idle_hangup`.
#[test]
fn call_reaches_a_callee_that_polls_on_an_on_demand_link_then_both_hang_up() {
    let world = World::new();
    let mut alice = world.host("alice");
    let mut hitoshi = world.host("hitoshi");
    let alice_ppp = Ipv4Addr::new(100, 64, 1, 2);
    let hitoshi_ppp = Ipv4Addr::new(100, 64, 2, 2);
    alice.settings.link = Link::PppdStandin {
        on_demand: true,
        idle_hangup: "3s",
        check_interval: "1h",
        local: alice_ppp,
    };
    hitoshi.settings.link = Link::PppdStandin {
        on_demand: true,
        idle_hangup: "3s",
        check_interval: "1m",
        local: hitoshi_ppp,
    };
    hitoshi.settings.incoming = "pop3";
    hitoshi.settings.poll_interval = "10s";
    alice.add_peer(&hitoshi.identity());
    hitoshi.add_peer(&alice.identity());
    // The callee does not announce itself: only alice's call brings them together.
    hitoshi.settings.peers[0].announce = false;

    hitoshi.start();
    let hitoshi_started = Instant::now();
    start_check_dials_and_hangs_up(&hitoshi);
    let status = hitoshi.json(&["status"]);
    assert_eq!(status["mailbox"]["protocol"], "pop3");
    assert!(
        status["mailbox"]["last_check"].is_string(),
        "the check at start is recorded: {status}"
    );
    // the next dial for a check: check_interval after the one at start
    let time = |field: &str| {
        status["mailbox"][field]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or_else(|| panic!("mailbox.{field} is a time: {status}"))
            .unix_secs()
    };
    let ahead = time("next_check").saturating_sub(time("last_check"));
    assert!(
        (30..=61).contains(&ahead),
        "next_check is check_interval (1m) after the check at start, not {ahead} s after it: {status}"
    );

    alice.start();
    start_check_dials_and_hangs_up(&alice);
    assert_eq!(
        dials(&alice),
        (1, 1),
        "alice dials only for the check at start"
    );
    let mut alice_events = alice.events();
    let mut hitoshi_events = hitoshi.events();

    let mut call = alice
        .peerctl_command(&["call", "hitoshi", "--wait", "150"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    alice_events.wait(
        "alice's link up for the call",
        Duration::from_secs(30),
        |e| is(e, "link-state-changed") && e["state"] == "up",
    );
    let sent = alice_events.wait(
        "the announcement to hitoshi leaving",
        Duration::from_secs(60),
        |e| is(e, "announcement-sent") && e["peer"] == "hitoshi",
    );
    assert!(
        sent["addresses"].as_array().unwrap().iter().any(|c| {
            c["address"] == format!("{alice_ppp}:{}", e2e_harness::PEER_PORT)
                && c["class"] == "cgnat"
        }),
        "alice announces her PPP address: {sent}"
    );

    // hitoshi's next check (check_interval after his start) finds it.
    let check_due = Duration::from_secs(60).saturating_sub(hitoshi_started.elapsed());
    let received = hitoshi_events.wait(
        "hitoshi's poll to receive alice's announcement",
        check_due + Duration::from_secs(60),
        |e| is(e, "announcement-received") && e["peer"] == "alice",
    );
    assert!(received["sequence"].is_u64(), "{received}");
    hitoshi_events.wait("hitoshi connected to alice", Duration::from_secs(30), |e| {
        is(e, "peer-connected")
            && e["peer"] == "alice"
            && e["address"]
                .as_str()
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                .is_some_and(|a| a.ip() == IpAddr::V4(alice_ppp))
    });
    wait_for("peerctl call to return", Duration::from_secs(30), || {
        call.try_wait().unwrap().map(|_| ())
    });
    let out = call.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "peerctl call: {}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hitoshi"),
        "call says who is connected: {}",
        show(&out)
    );
    wait_for(
        "alice to list hitoshi as connected",
        Duration::from_secs(10),
        || alice.session_address("hitoshi"),
    );
    assert_eq!(link_state(&alice), "up");
    assert_eq!(
        link_state(&hitoshi),
        "up",
        "the callee keeps the link up for the session"
    );

    // The user on hitoshi's side hangs up the session; with nothing left
    // to do, both links hang up after idle_hangup (3 s).
    hitoshi.peerctl_ok(&["disconnect", "alice"]);
    assert_eq!(
        link_state(&alice),
        "up",
        "the link waits idle_hangup (3 s) before hanging up"
    );
    for host in [&alice, &hitoshi] {
        wait_for(
            &format!("{}'s link to hang up when idle", host.name),
            Duration::from_secs(30),
            || (link_state(host) == "down").then_some(()),
        );
        let (started, ended) = dials(host);
        assert_eq!(
            started,
            ended,
            "{}: every dial ended: {:?}",
            host.name,
            ppp_log(host)
        );
        assert!(
            ppp_log(host).iter().any(|l| l.ends_with(" term")),
            "{}: hung up with SIGTERM: {:?}",
            host.name,
            ppp_log(host)
        );
    }
    alice_events.wait("alice's link down", Duration::from_secs(5), |e| {
        is(e, "link-state-changed") && e["state"] == "down"
    });
}
