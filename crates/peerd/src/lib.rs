//! The peerd daemon, as a library the `peerd` binary (and tests) call.
//!
//! peerd lets two hosts with changing IP addresses find each other: it
//! mails each peer a signed and encrypted announcement of this host's
//! address, reads the peers' announcements from its mailbox, and connects
//! to them directly.
//!
//! [`run`] starts the actors (address watcher, link manager, mail courier,
//! connector, hooks runner), wires them through the event router, serves
//! the control socket, and supervises them until shutdown
//! (`docs/ARCHITECTURE.md`).
//!
//! # Layout
//! - [`run`] ([`daemon`]): start the daemon and run it until `shutdown`
//!   completes; SIGHUP reloads.
//! - [`address_book`]: the effective address book (`[[peer]]` plus the
//!   runtime peers of `peerctl peer add`), conflicts between the two.
//! - [`hooks`]: the hooks runner (`hooks_dir`, `PEERD_*` variables).
//! - [`control`]: the control socket `peerctl` talks to.
//! - [`dbus`]: the D-Bus interface `org.peerd.Peerd1`, over the same API.

pub mod address_book;
pub mod control;
pub mod daemon;
pub mod dbus;
pub mod hooks;

pub use daemon::{DaemonError, SHUTDOWN_DEADLINE, run};
