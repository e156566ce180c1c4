//! A courier in a process of its own, for the test that kills it with
//! SIGKILL between queueing an announcement and sending it
//! (`tests/courier_crash.rs`). Not a tool: it reads a config file, records
//! an announcement of the addresses given on the command line, prints
//! `queued` once the intent is on disk, and then runs until killed.
//!
//! ```sh
//! courier_child CONFIG_FILE ADDRESS:PORT...
//! ```
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use peerd_core::{Candidate, CandidateKind, Identity};
use peerd_state::Store;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let config_path = args
        .next()
        .expect("usage: courier_child CONFIG ADDR:PORT...");
    let candidates: Vec<Candidate> = args
        .map(|a| {
            Candidate::new(a.parse().expect("ADDR:PORT"), CandidateKind::Host)
                .expect("announceable")
        })
        .collect();
    let loaded = peerd_config::load(Path::new(&config_path)).unwrap_or_else(|p| panic!("{p}"));
    let config = Arc::new(loaded.config);
    let identity = Arc::new(Identity::load(&config.identity.key_file).expect("identity key"));
    let store = Arc::new(Store::open_in(&config.state.dir).expect("state store"));
    let mut tasks: JoinSet<Result<(), peerd_mail::CourierError>> = JoinSet::new();
    let handle = peerd_mail::spawn(
        config,
        identity,
        store,
        &mut tasks,
        CancellationToken::new(),
    );
    handle.announce(None, candidates).await.expect("announce");
    println!("queued");
    std::io::stdout().flush().unwrap();
    while tasks.join_next().await.is_some() {}
}
