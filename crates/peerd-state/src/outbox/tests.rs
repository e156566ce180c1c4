use std::collections::BTreeMap;
use std::net::SocketAddr;

use peerd_core::CandidateKind;
use proptest::prelude::*;

use super::*;

const T0: u64 = 1_800_000_000;

fn t(s: u64) -> SystemTime {
    time(T0 + s)
}

/// Seconds since `T0`.
fn rel(at: SystemTime) -> u64 {
    secs(at) - T0
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in(dir.path()).unwrap();
    (dir, store)
}

fn peer(name: &str) -> PeerName {
    name.parse().unwrap()
}

fn cands(n: u8) -> Vec<Candidate> {
    let addr: SocketAddr = format!("203.0.113.{n}:7447").parse().unwrap();
    let v6: SocketAddr = format!("[2001:db8::{n}]:7447").parse().unwrap();
    vec![
        Candidate::new(addr, CandidateKind::Host).unwrap(),
        Candidate::new(v6, CandidateKind::ServerReflexive).unwrap(),
    ]
}

fn entry(s: &Store, p: &PeerName, policy: &Policy, now: SystemTime) -> OutboxEntry {
    s.entry(p, policy, now).unwrap().unwrap()
}

fn due_peers(s: &Store, policy: &Policy, now: SystemTime) -> Vec<(String, Generation)> {
    s.due(policy, now)
        .unwrap()
        .into_iter()
        .map(|d| (d.peer.to_string(), d.generation))
        .collect()
}

#[test]
fn a_new_intent_is_due_at_once() {
    let (_d, s) = store();
    let p = Policy::default();
    let h = peer("hitoshi");
    let g = s.set_intent(&h, &cands(1), false, t(0)).unwrap();
    let due = s.due(&p, t(0)).unwrap();
    assert_eq!(
        due,
        vec![Due {
            peer: h.clone(),
            generation: g,
            candidates: cands(1),
            plain: false,
            attempt: 1,
        }]
    );
    let e = entry(&s, &h, &p, t(0));
    assert_eq!(e.state, OutboxState::Pending);
    assert_eq!(e.next_attempt, Some(t(0)));
    assert_eq!(e.created_at, t(0));
    assert_eq!(s.outbox_size().unwrap(), 1);
    assert_eq!(s.next_wakeup(&p, t(0)).unwrap(), Some(t(0)));
}

#[test]
fn sealed_peers_are_resent_doubling_up_to_an_hour_until_acknowledged() {
    let (_d, s) = store();
    let p = Policy::default(); // resend 10 min, cap 1 h
    let h = peer("hitoshi");
    let g = s.set_intent(&h, &cands(1), false, t(0)).unwrap();
    let mut now = 0;
    let mut gaps = Vec::new();
    for seq in 100..107 {
        assert!(s.record_sent(&h, g, seq, &p, t(now)).unwrap());
        let e = entry(&s, &h, &p, t(now));
        assert_eq!(e.state, OutboxState::AwaitingAck);
        let next = rel(e.next_attempt.unwrap());
        assert!(s.due(&p, t(next - 1)).unwrap().is_empty());
        assert_eq!(due_peers(&s, &p, t(next)), [("hitoshi".to_owned(), g)]);
        gaps.push(next - now);
        now = next;
    }
    assert_eq!(gaps, [600, 1200, 2400, 3600, 3600, 3600, 3600]);
    assert_eq!(entry(&s, &h, &p, t(now)).attempts, 7);
    assert_eq!(entry(&s, &h, &p, t(now)).last_sequence, Some(106));
    // The ack ends it.
    assert!(s.record_ack(&h, 106, t(now)).unwrap());
    let e = entry(&s, &h, &p, t(now));
    assert_eq!(e.state, OutboxState::Acknowledged);
    assert_eq!(e.next_attempt, None);
    assert!(s.due(&p, t(now + 30 * 86_400)).unwrap().is_empty());
    assert_eq!(s.next_wakeup(&p, t(now)).unwrap(), None);
    assert_eq!(s.outbox_size().unwrap(), 0);
}

#[test]
fn a_resend_interval_above_the_cap_is_kept() {
    let p = Policy::new(Duration::from_secs(2 * 3600), 6);
    assert_eq!(p.resend_delay(1), 7200);
    assert_eq!(p.resend_delay(5), 7200);
}

#[test]
fn plain_peers_get_one_mail_per_intent_and_no_resend() {
    let (_d, s) = store();
    let p = Policy::default();
    let m = peer("me-on-phone");
    let g = s.set_intent(&m, &cands(1), true, t(0)).unwrap();
    let due = s.due(&p, t(0)).unwrap();
    assert!(due[0].plain);
    assert!(s.record_sent(&m, g, 0, &p, t(1)).unwrap());
    let e = entry(&s, &m, &p, t(1));
    assert_eq!(e.state, OutboxState::Sent);
    assert_eq!(e.next_attempt, None);
    assert!(s.due(&p, t(365 * 86_400)).unwrap().is_empty());
    // A plain peer cannot acknowledge.
    assert!(!s.record_ack(&m, 0, t(2)).unwrap());
    // The same addresses again are not a change; new ones are.
    assert_eq!(s.set_intent(&m, &cands(1), true, t(3)).unwrap(), g);
    assert!(s.due(&p, t(3)).unwrap().is_empty());
    let g2 = s.set_intent(&m, &cands(2), true, t(4)).unwrap();
    assert_ne!(g2, g);
    assert_eq!(due_peers(&s, &p, t(4)), [("me-on-phone".to_owned(), g2)]);
}

#[test]
fn transient_failures_back_off_exponentially_with_jitter_up_to_the_cap() {
    let (_d, s) = store();
    let p = Policy::default(); // 30 s doubling, cap 15 min
    let h = peer("hitoshi");
    let g = s.set_intent(&h, &cands(1), false, t(0)).unwrap();
    let mut now = 0;
    let mut ceilings = Vec::new();
    for n in 1..=30u32 {
        assert!(
            s.record_failure(&h, g, FailureKind::Transient, "421 try later", &p, t(now))
                .unwrap()
        );
        let e = entry(&s, &h, &p, t(now));
        assert_eq!(e.state, OutboxState::SendingBackoff);
        assert_eq!(e.last_error.as_deref(), Some("421 try later"));
        assert_eq!(e.attempts, n);
        let delay = rel(e.next_attempt.unwrap()) - now;
        let ceiling = p.backoff_ceiling(n);
        assert!(
            (ceiling / 2..=ceiling).contains(&delay),
            "failure {n}: delay {delay} outside [{}, {ceiling}]",
            ceiling / 2
        );
        assert!(delay <= 900, "never more than the 15 min cap");
        assert!(s.due(&p, t(now + delay - 1)).unwrap().is_empty());
        assert_eq!(s.due(&p, t(now + delay)).unwrap()[0].attempt, n + 1);
        ceilings.push(ceiling);
        now += delay;
    }
    assert_eq!(ceilings[..7], [30, 60, 120, 240, 480, 900, 900]);
    assert!(ceilings.iter().all(|&c| c <= 900));
    // Success clears the backoff and the error.
    assert!(s.record_sent(&h, g, 5, &p, t(now)).unwrap());
    let e = entry(&s, &h, &p, t(now));
    assert_eq!(e.state, OutboxState::AwaitingAck);
    assert_eq!(e.last_error, None);
    assert_eq!(rel(e.next_attempt.unwrap()) - now, 600);
}

#[test]
fn jitter_spreads_within_bounds() {
    let p = Policy::default();
    let mut rng = fastrand::Rng::with_seed(7);
    for failures in [1, 3, 10] {
        let ceiling = p.backoff_ceiling(failures);
        let delays: Vec<u64> = (0..200)
            .map(|_| p.backoff_delay(failures, &mut rng))
            .collect();
        assert!(delays.iter().all(|d| (ceiling / 2..=ceiling).contains(d)));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 5, "jitter varies: {distinct:?}");
    }
    // Huge failure counts do not overflow.
    assert_eq!(p.backoff_ceiling(u32::MAX), 900);
    assert_eq!(Policy::default().resend_delay(u32::MAX), 3600);
}

#[test]
fn a_failed_resend_backs_off_then_resumes_the_resend_schedule() {
    let (_d, s) = store();
    let p = Policy::default();
    let h = peer("hitoshi");
    let g = s.set_intent(&h, &cands(1), false, t(0)).unwrap();
    s.record_sent(&h, g, 1, &p, t(0)).unwrap();
    s.record_failure(&h, g, FailureKind::Transient, "timeout", &p, t(600))
        .unwrap();
    let e = entry(&s, &h, &p, t(600));
    assert_eq!(e.state, OutboxState::SendingBackoff);
    assert_eq!(e.last_sequence, Some(1));
    s.record_sent(&h, g, 2, &p, t(700)).unwrap();
    let e = entry(&s, &h, &p, t(700));
    assert_eq!(e.state, OutboxState::AwaitingAck);
    assert_eq!(e.next_attempt, Some(t(700 + 1200)));
    // An ack of the first mail still counts: the peer has this intent.
    assert!(s.record_ack(&h, 1, t(800)).unwrap());
    assert_eq!(entry(&s, &h, &p, t(800)).state, OutboxState::Acknowledged);
}

#[test]
fn a_permanent_failure_stops_until_a_new_intent_or_a_retry() {
    let (_d, s) = store();
    let p = Policy::default();
    let h = peer("hitoshi");
    let g = s.set_intent(&h, &cands(1), false, t(0)).unwrap();
    assert!(
        s.record_failure(
            &h,
            g,
            FailureKind::Permanent,
            "550 5.1.1 no such user",
            &p,
            t(1)
        )
        .unwrap()
    );
    let e = entry(&s, &h, &p, t(1));
    assert_eq!(e.state, OutboxState::FailedPermanent);
    assert_eq!(e.last_error.as_deref(), Some("550 5.1.1 no such user"));
    assert_eq!(e.next_attempt, None);
    assert!(s.due(&p, t(86_400)).unwrap().is_empty());
    assert_eq!(s.outbox_size().unwrap(), 0);

    // An explicit retry re-arms the same intent.
    assert!(s.retry(&h, t(100)).unwrap());
    assert_eq!(due_peers(&s, &p, t(100)), [("hitoshi".to_owned(), g)]);
    s.record_failure(&h, g, FailureKind::Permanent, "535 auth", &p, t(101))
        .unwrap();
    // So does an intent, even with the same addresses (a new generation).
    let g2 = s.set_intent(&h, &cands(1), false, t(200)).unwrap();
    assert_ne!(g2, g);
    let e = entry(&s, &h, &p, t(200));
    assert_eq!(
        (e.state, e.attempts, e.last_error),
        (OutboxState::Pending, 0, None)
    );
    assert_eq!(due_peers(&s, &p, t(200)), [("hitoshi".to_owned(), g2)]);
    assert!(!s.retry(&peer("nobody"), t(200)).unwrap());
}

#[test]
fn a_new_intent_supersedes_the_old_one() {
    let (_d, s) = store();
    let p = Policy::default();
    let h = peer("hitoshi");
    let g1 = s.set_intent(&h, &cands(1), false, t(0)).unwrap();
    assert_eq!(s.due(&p, t(0)).unwrap()[0].generation, g1);
    let g2 = s.set_intent(&h, &cands(2), false, t(1)).unwrap();
    assert!(g2 > g1);
    let due = s.due(&p, t(1)).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].generation, &due[0].candidates), (g2, &cands(2)));
    // The old attempt finishing late changes nothing but the rate count.
    assert!(!s.record_sent(&h, g1, 10, &p, t(2)).unwrap());
    assert!(
        !s.record_failure(&h, g1, FailureKind::Permanent, "x", &p, t(2))
            .unwrap()
    );
    let e = entry(&s, &h, &p, t(2));
    assert_eq!(e.state, OutboxState::Pending);
    assert_eq!(e.sends_last_hour, 1);
    assert_eq!(e.last_error, None);
    assert_eq!(s.due(&p, t(2)).unwrap()[0].generation, g2);
}

#[test]
fn acks_of_old_generations_or_unknown_sequences_are_ignored() {
    let (_d, s) = store();
    let p = Policy::default();
    let h = peer("hitoshi");
    let g1 = s.set_intent(&h, &cands(1), false, t(0)).unwrap();
    s.record_sent(&h, g1, 100, &p, t(0)).unwrap();
    let g2 = s.set_intent(&h, &cands(2), false, t(10)).unwrap();
    assert!(!s.record_ack(&h, 100, t(11)).unwrap());
    assert_eq!(entry(&s, &h, &p, t(11)).state, OutboxState::Pending);
    s.record_sent(&h, g2, 200, &p, t(12)).unwrap();
    assert!(!s.record_ack(&h, 150, t(13)).unwrap());
    assert!(!s.record_ack(&h, 100, t(13)).unwrap());
    assert!(!s.record_ack(&peer("other"), 200, t(13)).unwrap());
    assert_eq!(entry(&s, &h, &p, t(13)).state, OutboxState::AwaitingAck);
    assert!(s.record_ack(&h, 200, t(14)).unwrap());
    assert!(s.record_ack(&h, 200, t(15)).unwrap(), "a duplicate ack");
    let e = entry(&s, &h, &p, t(15));
    assert_eq!(e.state, OutboxState::Acknowledged);
    assert_eq!(e.changed_at, t(14));
}

#[test]
fn the_same_intent_again_changes_nothing() {
    let (_d, s) = store();
    let p = Policy::default();
    let h = peer("hitoshi");
    let g = s.set_intent(&h, &cands(1), false, t(0)).unwrap();
    s.record_sent(&h, g, 1, &p, t(0)).unwrap();
    s.record_ack(&h, 1, t(5)).unwrap();
    assert_eq!(s.set_intent(&h, &cands(1), false, t(9)).unwrap(), g);
    assert_eq!(entry(&s, &h, &p, t(9)).state, OutboxState::Acknowledged);
    // Plain-ness is part of the intent.
    assert_ne!(s.set_intent(&h, &cands(1), true, t(10)).unwrap(), g);
}

#[test]
fn retry_sends_even_an_acknowledged_intent_again() {
    let (_d, s) = store();
    let p = Policy::default();
    let h = peer("hitoshi");
    let g = s.set_intent(&h, &cands(1), false, t(0)).unwrap();
    s.record_sent(&h, g, 1, &p, t(0)).unwrap();
    s.record_ack(&h, 1, t(5)).unwrap();
    assert!(s.retry(&h, t(20)).unwrap());
    let due = s.due(&p, t(20)).unwrap();
    assert_eq!((due[0].generation, due[0].attempt), (g, 2));
    assert_eq!(entry(&s, &h, &p, t(20)).state, OutboxState::AwaitingAck);
}

#[test]
fn a_clock_stepped_back_does_not_stall_the_outbox() {
    let (_d, s) = store();
    let p = Policy {
        max_per_hour: 1,
        ..Policy::default()
    };
    let h = peer("hitoshi");
    let year = 365 * 86_400;
    // Sent and failed while the clock read a year ahead.
    let g = s.set_intent(&h, &cands(1), false, t(year)).unwrap();
    s.record_sent(&h, g, 1, &p, t(year)).unwrap();
    s.record_failure(&h, g, FailureKind::Transient, "4xx", &p, t(year + 600))
        .unwrap();
    // Corrected: the backoff and the send in the "future" hold nothing back.
    let e = entry(&s, &h, &p, t(0));
    assert_eq!(
        (e.next_attempt, e.rate_limited, e.sends_last_hour),
        (Some(t(0)), false, 0)
    );
    assert_eq!(due_peers(&s, &p, t(0)), [("hitoshi".to_owned(), g)]);
    // Timers set by the corrected clock hold as usual (here the window).
    s.record_sent(&h, g, 2, &p, t(0)).unwrap();
    assert_eq!(entry(&s, &h, &p, t(0)).next_attempt, Some(t(3600)));
}

/// Runs an ideal courier: sends whatever is due, every second.
fn run_courier(
    s: &Store,
    p: &Policy,
    h: &PeerName,
    from: u64,
    to: u64,
    seq: &mut u64,
) -> Vec<(u64, Generation)> {
    let mut sent = Vec::new();
    for now in from..to {
        for d in s.due(p, t(now)).unwrap() {
            assert_eq!(&d.peer, h);
            *seq += 1;
            s.record_sent(h, d.generation, *seq, p, t(now)).unwrap();
            sent.push((now, d.generation));
        }
    }
    sent
}

#[test]
fn max_per_hour_is_a_sliding_window() {
    let (_d, s) = store();
    let p = Policy {
        resend: Duration::from_secs(60),
        resend_max: Duration::from_secs(60),
        max_per_hour: 3,
        ..Policy::default()
    };
    let h = peer("hitoshi");
    s.set_intent(&h, &cands(1), false, t(0)).unwrap();
    let mut seq = 0;
    let sent = run_courier(&s, &p, &h, 0, 3 * 3600 + 121, &mut seq);
    let times: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
    // A re-send every minute would be 180; the window lets 3 an hour out,
    // each as soon as the oldest in the window is an hour old.
    assert_eq!(times[..6], [0, 60, 120, 3600, 3660, 3720]);
    for (i, &a) in times.iter().enumerate() {
        let within = times[i..].iter().filter(|&&b| b < a + 3600).count();
        assert!(within <= 3, "{within} sends in the hour from {a}");
    }
    // While limited, the entry says so and when it frees up.
    let e = entry(&s, &h, &p, t(3 * 3600 + 130));
    assert!(e.rate_limited);
    assert_eq!(e.next_attempt, Some(t(4 * 3600)));
    assert_eq!(e.sends_last_hour, 3);
    assert_eq!(
        s.next_wakeup(&p, t(3 * 3600 + 130)).unwrap(),
        Some(t(4 * 3600))
    );
}

#[test]
fn the_rate_limit_spans_intents_and_the_latest_wins() {
    let (_d, s) = store();
    let p = Policy {
        max_per_hour: 2,
        ..Policy::default()
    };
    let h = peer("hitoshi");
    let mut seq = 0;
    for (i, now) in [0u64, 10].into_iter().enumerate() {
        let g = s
            .set_intent(&h, &cands(u8::try_from(i).unwrap()), false, t(now))
            .unwrap();
        assert_eq!(run_courier(&s, &p, &h, now, now + 1, &mut seq), [(now, g)]);
    }
    // Two more address changes while the window is full: only the last is
    // sent, when the window frees up (an hour after the first send).
    s.set_intent(&h, &cands(7), false, t(20)).unwrap();
    let last = s.set_intent(&h, &cands(8), false, t(30)).unwrap();
    let sent = run_courier(&s, &p, &h, 20, 3700, &mut seq);
    assert_eq!(sent, [(3600, last)]);
    assert_eq!(s.due(&p, t(3600)).unwrap(), []);
}

#[test]
fn remove_forgets_a_peer_and_generations_are_never_reused() {
    let (_d, s) = store();
    let p = Policy::default();
    let h = peer("hitoshi");
    let g1 = s.set_intent(&h, &cands(1), false, t(0)).unwrap();
    assert!(s.remove(&h).unwrap());
    assert!(!s.remove(&h).unwrap());
    assert!(s.entries(&p, t(0)).unwrap().is_empty());
    assert!(!s.record_sent(&h, g1, 1, &p, t(1)).unwrap());
    let g2 = s.set_intent(&h, &cands(1), false, t(2)).unwrap();
    assert!(g2 > g1);
    assert!(!s.record_sent(&h, g1, 1, &p, t(3)).unwrap());
    assert_eq!(entry(&s, &h, &p, t(3)).state, OutboxState::Pending);
}

#[test]
fn entries_list_every_peer_in_name_order() {
    let (_d, s) = store();
    let p = Policy::default();
    for (i, name) in ["zoe", "alice", "hitoshi"].into_iter().enumerate() {
        s.set_intent(&peer(name), &cands(u8::try_from(i).unwrap()), false, t(0))
            .unwrap();
    }
    let names: Vec<String> = s
        .entries(&p, t(0))
        .unwrap()
        .into_iter()
        .map(|e| e.peer.to_string())
        .collect();
    assert_eq!(names, ["alice", "hitoshi", "zoe"]);
}

#[test]
fn the_outbox_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = Policy::default();
    let (a, b, c) = (peer("alice"), peer("bob"), peer("carol"));
    let before = {
        let s = Store::open_in(dir.path()).unwrap();
        let ga = s.set_intent(&a, &cands(1), false, t(0)).unwrap();
        s.record_sent(&a, ga, 42, &p, t(1)).unwrap();
        let gb = s.set_intent(&b, &cands(2), true, t(2)).unwrap();
        s.record_failure(&b, gb, FailureKind::Transient, "refused", &p, t(3))
            .unwrap();
        s.set_intent(&c, &cands(3), false, t(4)).unwrap();
        let before = s.entries(&p, t(5)).unwrap();
        s.close().unwrap();
        before
    };
    let s = Store::open_in(dir.path()).unwrap();
    assert_eq!(s.entries(&p, t(5)).unwrap(), before);
    assert!(s.record_ack(&a, 42, t(6)).unwrap());
    // The generation counter survives too.
    let gc = s.set_intent(&c, &cands(4), false, t(7)).unwrap();
    assert!(before.iter().all(|e| e.generation < gc));
}

#[test]
fn an_undecodable_record_is_an_error_naming_table_and_key() {
    let (_d, s) = store();
    let p = Policy::default();
    let h = peer("hitoshi");
    s.write(|txn| {
        let mut t = txn.open_table(OUTBOX).map_err(StateError::db)?;
        t.insert("hitoshi", [1u8, 0, 0].as_slice())
            .map_err(StateError::db)?;
        t.insert("Bad Name", sample().encode().as_slice())
            .map_err(StateError::db)?;
        Ok(())
    })
    .unwrap();
    let err = s.due(&p, t(0)).unwrap_err().to_string();
    assert!(err.contains("table outbox, key Bad Name"), "{err}");
    s.write(|txn| {
        let mut t = txn.open_table(OUTBOX).map_err(StateError::db)?;
        t.remove("Bad Name").map_err(StateError::db)?;
        Ok(())
    })
    .unwrap();
    let err = s.entries(&p, t(0)).unwrap_err().to_string();
    assert!(
        err.contains("table outbox, key hitoshi") && err.contains("cut short"),
        "{err}"
    );
    let err = s.set_intent(&h, &cands(1), false, t(0)).unwrap_err();
    assert!(
        matches!(
            err,
            StateError::Undecodable {
                table: "outbox",
                ..
            }
        ),
        "{err}"
    );
    // The way out: drop the entry.
    assert!(s.remove(&h).unwrap());
    s.set_intent(&h, &cands(1), false, t(0)).unwrap();
}

#[test]
fn too_many_candidates_are_refused() {
    let (_d, s) = store();
    let many: Vec<Candidate> = (0..=MAX_CANDIDATES).map(|_| cands(1)[0]).collect();
    assert!(matches!(
        s.set_intent(&peer("h"), &many, false, t(0)),
        Err(StateError::TooManyCandidates(65))
    ));
}

fn sample() -> Record {
    Record {
        generation: 3,
        plain: false,
        created_at: 10,
        phase: Phase::AwaitingAck,
        changed_at: 11,
        next_attempt: 12,
        attempts: 4,
        failures: 1,
        sends: 2,
        last_error: Some("421".to_owned()),
        candidates: vec![cands(9)[0]],
        sequences: vec![7, 8],
        recent_sends: vec![20],
    }
}

#[test]
fn the_record_encoding_is_fixed() {
    // Version 1, byte by byte: changing this test means a new version.
    let hex: String = sample()
        .encode()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        hex,
        concat!(
            "01",               // version
            "0000000000000003", // generation
            "00",               // plain
            "000000000000000a", // created_at
            "01",               // phase: awaiting-ack
            "000000000000000b", // changed_at
            "000000000000000c", // next_attempt
            "00000004",
            "00000001",
            "00000002", // attempts, failures, sends
            "01",
            "0003",
            "343231", // last_error "421"
            "0001",
            "04",
            "cb007109",
            "1d17",
            "01",
            "01", // 203.0.113.9:7447 host public
            "0002",
            "0000000000000007",
            "0000000000000008", // sequences
            "0001",
            "0000000000000014", // recent sends
        )
    );
    assert_eq!(Record::decode(&sample().encode()).unwrap(), sample());
    let bytes = sample().encode();
    for cut in 0..bytes.len() {
        assert!(Record::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

// ---- property test: any sequence of operations keeps the invariants ----

#[derive(Debug, Clone)]
enum Op {
    Set {
        peer: usize,
        variant: u8,
        plain: bool,
    },
    Advance(u64),
    Courier {
        outcomes: Vec<u8>,
    },
    Ack {
        peer: usize,
        pick: usize,
    },
    Retry {
        peer: usize,
    },
    Remove {
        peer: usize,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..3u8, any::<bool>())
            .prop_map(|(peer, variant, plain)| Op::Set { peer, variant, plain }),
        4 => prop_oneof![0..120u64, 0..4000u64].prop_map(Op::Advance),
        5 => prop::collection::vec(0..10u8, 3).prop_map(|outcomes| Op::Courier { outcomes }),
        2 => (0..3usize, 0..8usize).prop_map(|(peer, pick)| Op::Ack { peer, pick }),
        1 => (0..3usize).prop_map(|peer| Op::Retry { peer }),
        1 => (0..3usize).prop_map(|peer| Op::Remove { peer }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Default, Clone)]
struct Model {
    /// The current intent's generation and plain flag, if any.
    current: Option<(Generation, bool)>,
    /// Sequences sent for each generation.
    sent: BTreeMap<Generation, Vec<u64>>,
    /// The current generation was acknowledged (no retry since).
    acked: bool,
    /// The current generation failed permanently (no retry since).
    failed: bool,
    /// A plain current generation was sent (no retry since).
    plain_done: bool,
    /// Every send time to this peer.
    send_times: Vec<u64>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_of_operations_keeps_the_invariants(
        ops in prop::collection::vec(op(), 1..40),
        max_per_hour in 1..4u32,
        resend in 30..1200u64,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Some(Store::open_in(dir.path()).unwrap());
        s.as_ref().unwrap().seed_jitter(1);
        let policy = Policy {
            resend: Duration::from_secs(resend),
            max_per_hour,
            ..Policy::default()
        };
        let peers = [peer("alice"), peer("bob"), peer("carol")];
        let mut models: [Model; 3] = Default::default();
        let mut now = 0u64;
        let mut seq = 1000u64;
        for op in ops {
            let st = s.as_ref().unwrap();
            match op {
                Op::Set { peer, variant, plain } => {
                    let m = &mut models[peer];
                    let g = st.set_intent(&peers[peer], &cands(variant), plain, t(now)).unwrap();
                    if m.current.map(|(old, _)| old) != Some(g) {
                        prop_assert!(m.current.is_none_or(|(old, _)| g > old));
                        m.current = Some((g, plain));
                        m.acked = false;
                        m.failed = false;
                        m.plain_done = false;
                    } else {
                        prop_assert!(!m.failed, "a failed intent is re-armed by a new one");
                    }
                }
                Op::Advance(d) => now += d,
                Op::Courier { outcomes } => {
                    let due = st.due(&policy, t(now)).unwrap();
                    for (i, d) in due.into_iter().enumerate() {
                        let ix = peers.iter().position(|p| *p == d.peer).unwrap();
                        let m = &mut models[ix];
                        // Only the current intent, and only if work is left.
                        prop_assert_eq!(Some((d.generation, d.plain)), m.current);
                        prop_assert!(!m.acked, "an acknowledged intent is not re-sent");
                        prop_assert!(!m.failed, "a permanent failure is not retried");
                        prop_assert!(!m.plain_done, "a plain peer gets one mail per intent");
                        match outcomes[i % outcomes.len()] {
                            0..=5 => {
                                seq += 1;
                                prop_assert!(st.record_sent(&d.peer, d.generation, seq, &policy, t(now)).unwrap());
                                m.sent.entry(d.generation).or_default().push(seq);
                                m.send_times.push(now);
                                m.plain_done = d.plain;
                                let in_hour = m.send_times.iter().filter(|&&x| x + 3600 > now).count();
                                prop_assert!(in_hour <= max_per_hour as usize,
                                    "{} sends within an hour", in_hour);
                            }
                            6..=8 => {
                                prop_assert!(st.record_failure(&d.peer, d.generation, FailureKind::Transient, "4xx", &policy, t(now)).unwrap());
                            }
                            _ => {
                                prop_assert!(st.record_failure(&d.peer, d.generation, FailureKind::Permanent, "5xx", &policy, t(now)).unwrap());
                                m.failed = true;
                            }
                        }
                    }
                }
                Op::Ack { peer, pick } => {
                    let m = &mut models[peer];
                    let all: Vec<(Generation, u64)> = m.sent.iter()
                        .flat_map(|(g, v)| v.iter().map(move |s| (*g, *s))).collect();
                    let (g, sq) = if all.is_empty() { (Generation(0), 1) } else { all[pick % all.len()] };
                    let matched = st.record_ack(&peers[peer], sq, t(now)).unwrap();
                    let expect = m.current.is_some_and(|(cur, plain)| cur == g && !plain);
                    prop_assert_eq!(matched, expect);
                    if matched { m.acked = true; m.failed = false; }
                }
                Op::Retry { peer } => {
                    let m = &mut models[peer];
                    prop_assert_eq!(st.retry(&peers[peer], t(now)).unwrap(), m.current.is_some());
                    m.acked = false;
                    m.failed = false;
                    m.plain_done = false;
                }
                Op::Remove { peer } => {
                    let m = &mut models[peer];
                    prop_assert_eq!(st.remove(&peers[peer]).unwrap(), m.current.is_some());
                    *m = Model::default();
                }
                Op::Reopen => {
                    s.take().unwrap().close().unwrap();
                    s = Some(Store::open_in(dir.path()).unwrap());
                }
            }
            // The display agrees with the model.
            let st = s.as_ref().unwrap();
            for (ix, p) in peers.iter().enumerate() {
                let m = &models[ix];
                let e = st.entry(p, &policy, t(now)).unwrap();
                prop_assert_eq!(e.as_ref().map(|e| (e.generation, e.plain)), m.current);
                if let Some(e) = e {
                    prop_assert_eq!(e.state == OutboxState::Acknowledged, m.acked);
                    prop_assert_eq!(e.state == OutboxState::FailedPermanent, m.failed);
                    prop_assert_eq!(e.state.is_active(), e.next_attempt.is_some());
                    if let Some(next) = e.next_attempt {
                        // Never more than the larger of the two caps ahead,
                        // plus an hour of rate limit.
                        prop_assert!(rel(next) <= now + 3600 + 3600);
                    }
                }
            }
        }
    }
}
