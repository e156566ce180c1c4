//! A writer process SIGKILLed at random moments: reopening always works, and
//! everything it reported committed is there (at most one step more, never
//! one less).
//!
//! The writer is this test binary itself, re-executed to run
//! `crash_writer_child` with `PEERD_STATE_CRASH_DB` set. It prints a line
//! after each commit returns; the parent kills it, reads what it printed,
//! and checks the reopened database against it.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peerd_announce::{History, LastAccepted};
use peerd_core::{Candidate, CandidateKind, Identity, PeerName, PublicKey};
use peerd_state::{MailOutcome, OutboxState, Policy, StateError, Store};

const DB_VAR: &str = "PEERD_STATE_CRASH_DB";
const START_VAR: &str = "PEERD_STATE_CRASH_START";

fn t(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

fn hitoshi() -> PeerName {
    "hitoshi".parse().expect("a peer name")
}

fn sender() -> PublicKey {
    Identity::from_seed(&[9; 32]).public_key()
}

/// The candidate that says "step n": 10.x.y.z carries n.
fn candidate(n: u32) -> Candidate {
    let ip = Ipv4Addr::from(0x0A00_0000 | (n & 0x00FF_FFFF));
    Candidate::new(
        SocketAddr::V4(SocketAddrV4::new(ip, 7447)),
        CandidateKind::Host,
    )
    .expect("10/8 is announceable")
}

fn step_of(c: &Candidate) -> u32 {
    match c.addr.ip() {
        std::net::IpAddr::V4(v4) => u32::from(v4) & 0x00FF_FFFF,
        std::net::IpAddr::V6(_) => panic!("not a step"),
    }
}

/// The writer: loops forever, printing after every commit.
#[test]
#[ignore = "the child process of kill_9_at_any_moment_loses_nothing_committed"]
fn crash_writer_child() {
    // Not a test on its own: without the parent's variables (say, under
    // `--include-ignored`) there is nothing to do.
    let Ok(db) = std::env::var(DB_VAR) else {
        return;
    };
    let mut n: u32 = std::env::var(START_VAR).unwrap().parse().unwrap();
    let store = Store::open(Path::new(&db)).unwrap();
    let policy = Policy::default();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let h = hitoshi();
    let key = sender();
    loop {
        n += 1;
        let now = t(u64::from(n));
        let g = store.set_intent(&h, &[candidate(n)], false, now).unwrap();
        writeln!(out, "intent {n}").unwrap();
        out.flush().unwrap();
        store
            .record_sent(&h, g, u64::from(n), &policy, now)
            .unwrap();
        writeln!(out, "sent {n}").unwrap();
        out.flush().unwrap();
        store
            .record_pop3("acct", &format!("u{n}"), &MailOutcome::Accepted, now)
            .unwrap();
        store.imap_examined("acct", "INBOX", 1, n).unwrap();
        store
            .record_accepted(
                &key,
                LastAccepted {
                    sequence: u64::from(n),
                    digest: [0; 32],
                },
            )
            .unwrap();
        writeln!(out, "ledger {n}").unwrap();
        out.flush().unwrap();
    }
}

struct Reported {
    intent: Option<u32>,
    sent: Option<u32>,
    ledger: Option<u32>,
}

fn spawn_writer(db: &Path, start: u32) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().expect("this test binary"))
        .args(["crash_writer_child", "--exact", "--ignored", "--nocapture"])
        .env(DB_VAR, db)
        .env(START_VAR, start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the writer starts");
    let stdout = child.stdout.take().expect("a piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait_ready(rx: &mpsc::Receiver<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == "ready" => return,
            Ok(_) => {},
            Err(e) => panic!("the writer did not start: {e}"),
        }
    }
}

fn collect(rx: mpsc::Receiver<String>) -> Reported {
    let mut r = Reported {
        intent: None,
        sent: None,
        ledger: None,
    };
    // The pipe closes when the child dies, ending the reader thread.
    for line in rx {
        let mut parts = line.split(' ');
        let (Some(what), Some(n)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u32>() else { continue };
        match what {
            "intent" => r.intent = Some(n),
            "sent" => r.sent = Some(n),
            "ledger" => r.ledger = Some(n),
            _ => {},
        }
    }
    r
}

#[test]
fn kill_9_at_any_moment_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(Store::FILE_NAME);
    let policy = Policy::default();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let rounds = 20;
    let mut total_steps = 0;
    for round in 0..rounds {
        let start = round * 100_000; // a round makes far fewer steps; all fit in 24 bits
        let (mut child, rx) = spawn_writer(&db, start);
        if round % 4 == 3 {
            // Sometimes while it is still opening (and repairing after the
            // last kill).
            std::thread::sleep(Duration::from_millis(rng.u64(0..40)));
        } else {
            wait_ready(&rx);
            if round == 0 {
                // The running writer holds the lock: a second peerd is refused.
                let err = Store::open(&db).unwrap_err();
                assert!(matches!(err, StateError::InUse { .. }), "{err:?}");
            }
            std::thread::sleep(Duration::from_millis(rng.u64(0..300)));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let r = collect(rx);

        let store = Store::open(&db).unwrap_or_else(|e| panic!("round {round}: reopen: {e}"));
        let Some(done) = r.intent else {
            store.close().unwrap();
            continue;
        };
        total_steps += done - start;
        let e = store
            .entry(&hitoshi(), &policy, t(0))
            .unwrap()
            .expect("the committed intent is there");
        let stored = step_of(&e.candidates[0]);
        assert!(
            stored == done || stored == done + 1,
            "round {round}: reported intent {done}, stored {stored}"
        );
        if r.sent == Some(stored) {
            assert_eq!(e.state, OutboxState::AwaitingAck);
            assert_eq!(e.last_sequence, Some(u64::from(stored)));
        }
        if e.state == OutboxState::Pending {
            // Committed but not (recorded as) sent: it is still due, so it
            // goes out after the restart.
            assert!(r.sent.is_none_or(|s| s < stored));
            let due = store.due(&policy, t(u64::from(stored) + 7200)).unwrap();
            assert_eq!(due.len(), 1, "round {round}");
            assert_eq!(step_of(&due[0].candidates[0]), stored);
        }
        if let Some(l) = r.ledger {
            let seen = store.pop3_seen("acct").unwrap();
            assert!((start + 1..=l).all(|k| seen.contains_key(&format!("u{k}"))));
            let pos = store.imap_position("acct", "INBOX").unwrap().unwrap();
            assert!(pos.highest_uid >= l && pos.highest_uid <= l + 1);
            let last = store.last_accepted(&sender()).unwrap().sequence;
            assert!(last >= u64::from(l) && last <= u64::from(l) + 1);
        }
        // Keep the ledger from growing across rounds.
        store.retain_pop3("acct", std::iter::empty()).unwrap();
        store.close().unwrap();
    }
    assert!(total_steps > 0, "the writer never got anywhere");
}
