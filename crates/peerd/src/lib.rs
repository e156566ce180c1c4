//! The peerd daemon, as a library the `peerd` binary (and tests) call.
//!
//! peerd lets two hosts with changing IP addresses find each other: it
//! mails each peer a signed and encrypted announcement of this host's
//! address, reads the peers' announcements from its mailbox, and connects
//! to them directly.
//!
//! For now the daemon loads its configuration and identity, reports that it
//! runs, and waits for the shutdown signal. [`run`] is where the actors
//! (link, address watcher, mail courier, connector) and the front-ends
//! (control socket, D-Bus) will be started and supervised.
//!
//! # Layout
//! - [`run`]: start the daemon and run it until `shutdown` completes.
//! - [`address_book`]: the effective address book (`[[peer]]` plus the
//!   runtime peers of `peerctl peer add`), conflicts between the two.
//! - [`hooks`]: the hooks runner (`hooks_dir`, `PEERD_*` variables).
//! - [`control`]: the control socket `peerctl` talks to.

pub mod address_book;
pub mod control;
pub mod hooks;

use std::future::Future;

use peerd_config::Config;
use peerd_core::Identity;
use tracing::info;

/// Runs the daemon until `shutdown` completes, then stops it cleanly.
///
/// `shutdown` is a parameter so that the binary can pass "SIGTERM or
/// SIGINT" and tests can pass anything they control. The identity is
/// loaded by the caller, so that a missing or unreadable key is reported
/// before anything starts.
///
/// # Errors
/// When the daemon cannot run; nothing fails yet.
pub async fn run(
    config: Config,
    identity: Identity,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    info!(
        name = %config.identity.name,
        fingerprint = %identity.public_key().fingerprint(),
        "peerd started"
    );
    shutdown.await;
    info!("peerd shutting down");
    // Nothing to stop yet: no link dialled, no queue to flush.
    info!("peerd stopped cleanly");
    Ok(())
}
