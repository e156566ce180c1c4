//! The mail courier: announcements out by SMTP, in by IMAP or POP3.
//!
//! # Layout
//! - [`tls`]: the rustls client configuration (system roots + `ca_file`).
//! - [`stream`]: a connection that is plain or TLS.
//! - [`smtp`]: submission with lettre; permanent vs transient failures.
//! - [`imap`]: finding, downloading and disposing of our mail by IMAP.
//! - `pop3`: the same by POP3, with the ledger doing the remembering.
//! - [`courier`]: the actor: outbox, sending, receiving, events.

pub mod courier;
pub mod imap;
mod pop3;
pub mod smtp;
pub mod stream;
pub mod tls;

pub use courier::{CourierError, CourierEvent, CourierHandle, CourierState, spawn};
