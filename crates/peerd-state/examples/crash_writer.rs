//! The writer of `tests/crash.rs` (not a tool): opens the database given
//! as the first argument and loops forever writing outbox, ledger and
//! history records, printing a line after each commit returns, until the
//! test kills it with SIGKILL.
//!
//! ```sh
//! crash_writer DB_FILE START_STEP
//! ```
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use peerd_announce::LastAccepted;
use peerd_core::{Candidate, CandidateKind, Identity};
use peerd_state::{MailOutcome, Policy, Store};

/// The candidate that says "step n": 10.x.y.z carries n (the test reads
/// it back the same way).
fn candidate(n: u32) -> Candidate {
    let ip = Ipv4Addr::from(0x0A00_0000 | (n & 0x00FF_FFFF));
    Candidate::new(
        SocketAddr::V4(SocketAddrV4::new(ip, 7447)),
        CandidateKind::Host,
    )
    .expect("10/8 is announceable")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let db = args.next().expect("usage: crash_writer DB_FILE START_STEP");
    let mut n: u32 = args.next().expect("START_STEP").parse().expect("a number");
    let store = Store::open(Path::new(&db)).unwrap();
    let policy = Policy::default();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let peer = "hitoshi".parse().unwrap();
    let key = Identity::from_seed(&[9; 32]).public_key();
    loop {
        n += 1;
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000 + u64::from(n));
        let g = store
            .set_intent(&peer, &[candidate(n)], false, now)
            .unwrap();
        writeln!(out, "intent {n}").unwrap();
        out.flush().unwrap();
        store
            .record_sent(&peer, g, u64::from(n), &policy, now)
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
