//! A small, strict POP3 client on tokio and rustls, for the mail courier's
//! POP3 receiving path.
//!
//! Why a client of our own: async-pop 1.1.3 spins at 100% CPU when a
//! server drops the connection mid-reply (`src/stream.rs`), cuts
//! multi-line bodies wrongly - no dot-unstuffing, the final CRLF dropped,
//! an empty message hangs (`src/response/parser/rfc1939.rs`) - has no STLS,
//! refuses UIDL/TOP unless CAPA lists them while swallowing CAPA errors,
//! and its tokio + rustls combination does not build. The other POP3
//! crates are abandoned or plaintext only. POP3 is small enough to get
//! exactly right here:
//!
//! - RFC 1939: the protocol, USER/PASS, STAT, LIST, UIDL, TOP, RETR, DELE,
//!   RSET, NOOP, QUIT, multi-line responses and byte-stuffing.
//! - RFC 2449: CAPA, response codes (`[IN-USE]`, `[LOGIN-DELAY]`), the
//!   512-octet status line.
//! - RFC 2595 section 4: STLS, mandatory when asked for.
//! - RFC 5034 + RFC 4616: AUTH PLAIN with an initial response.
//! - RFC 3206: `[SYS/TEMP]`, `[AUTH]` response codes.
//!
//! Strictness is what keeps the courier alive against a broken or hostile
//! server: every line has a length cap, every step a deadline, every
//! listing an entry cap, every message a size cap, and nothing the server
//! sends can make it panic, spin or allocate without bound. Passwords are
//! sent from zeroed buffers and never appear in errors, logs or `Debug`.
//!
//! ```no_run
//! # async fn example(tls: std::sync::Arc<rustls::ClientConfig>) -> peerd_pop3::Result<()> {
//! use peerd_pop3::{ConnectOptions, Pop3Client, Security};
//!
//! let options = ConnectOptions::new("mail.example.net", 110, Security::StartTls, tls);
//! let mut pop = Pop3Client::connect(options).await?;
//! pop.login("alice", "secret").await?;
//! for (msg, uid) in pop.uidl().await? {
//!     let headers = pop.top_headers(msg, 64 * 1024).await?;
//!     # let _ = (uid, headers);
//! }
//! pop.quit().await?; // only now are messages marked with `dele` deleted
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`client`]: [`Pop3Client`], its options and the commands.
//! - [`wire`]: the wire format without I/O: the line buffer, status lines,
//!   dot-unstuffing, the listings.
//! - [`error`]: [`Error`], with [`Error::is_transient`].

pub mod client;
pub mod error;
pub mod wire;

#[cfg(fuzzing)]
#[allow(missing_docs, clippy::expect_used)]
pub mod fuzzing;

pub use client::{
    Capabilities, ConnectOptions, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_LINE, DEFAULT_TIMEOUT,
    Pop3Client, Security, Stat,
};
pub use error::{Error, Result};
