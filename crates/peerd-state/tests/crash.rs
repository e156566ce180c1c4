//! A writer process SIGKILLed at random moments: reopening always works, and
//! everything it reported committed is there (at most one step more, never
//! one less).
//!
//! The writer is `examples/crash_writer.rs`, a process of its own (built
//! on demand in this test's target dir). It prints a line after each
//! commit returns; the parent kills it, reads what it printed, and checks
//! the reopened database against it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peerd_announce::History;
use peerd_core::{Candidate, Identity, PeerName, PublicKey};
use peerd_state::{OutboxState, Policy, StateError, Store};
use peerd_testkit::{Program, workspace_program};

fn t(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

fn hitoshi() -> PeerName {
    "hitoshi".parse().expect("a peer name")
}

fn sender() -> PublicKey {
    Identity::from_seed(&[9; 32]).public_key()
}

/// The step n that `examples/crash_writer.rs` wrote into a candidate
/// (10.x.y.z carries n).
fn step_of(c: &Candidate) -> u32 {
    match c.addr.ip() {
        std::net::IpAddr::V4(v4) => u32::from(v4) & 0x00FF_FFFF,
        std::net::IpAddr::V6(_) => panic!("not a step"),
    }
}

/// The writer example, built in this test's target dir.
fn writer_binary() -> std::path::PathBuf {
    workspace_program(Program::Example, "crash_writer")
}

struct Reported {
    intent: Option<u32>,
    sent: Option<u32>,
    ledger: Option<u32>,
}

fn spawn_writer(db: &Path, start: u32) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(writer_binary())
        .arg(db)
        .arg(start.to_string())
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
