//! The control protocol between the peerd daemon and `peerctl`.
//!
//! A Unix stream socket (`[control] socket`) carries newline-delimited
//! JSON: one object per line, at most [`MAX_LINE`] bytes. The client
//! speaks first:
//!
//! 1. **Hello.** The client sends a [`ClientHello`] with
//!    [`PROTOCOL_VERSION`]; the daemon answers [`Response::Hello`] (with the
//!    [`Access`] this connection has) or [`Response::Error`] of kind
//!    [`ErrorKind::UnsupportedVersion`], and closes.
//! 2. **Requests.** Then any number of [`Request`]s, one at a time: each
//!    gets exactly one [`Response`] line before the next is read. An error
//!    is a [`Response::Error`] with an [`ErrorKind`] and a message.
//! 3. Two requests change the connection for good: after
//!    [`Response::Subscribed`] (to [`Request::Events`]) the daemon writes
//!    one [`Event`] per line until the client closes; after
//!    [`Response::StreamOpen`] (to [`Request::Open`]) the connection is the
//!    raw byte stream to the peer's service in both directions.
//!
//! Every message is a named-field struct or enum (no positional tuples);
//! names, mail addresses and keys are peerd-core's validated types, so a
//! bad one is refused while decoding. The full description, with examples,
//! is `docs/control-protocol.md`.
//!
//! The crate has no async runtime: [`LineReader`] is sans-I/O (the daemon
//! drives it from tokio) and [`Client`] is a small blocking client over
//! `std::os::unix::net::UnixStream` (peerctl uses it).
//!
//! # Layout
//! - [`frame`]: [`LineReader`], [`encode`], [`decode`], [`MAX_LINE`].
//! - [`message`]: hellos, [`Request`], [`Response`], [`ControlError`],
//!   [`Access`], [`PROTOCOL_VERSION`].
//! - [`info`]: the payloads ([`StatusInfo`], [`PeerInfo`], ...).
//! - [`event`]: [`Event`] and [`EventKind`].
//! - [`time`]: [`Timestamp`] (RFC 3339).
//! - [`client`]: the blocking [`Client`].

pub mod client;
pub mod event;
pub mod frame;
pub mod info;
pub mod message;
pub mod time;

pub use client::{Client, ClientError};
pub use event::{Event, EventKind};
pub use frame::{FrameError, LineReader, MAX_LINE, decode, encode};
pub use info::{
    AddressInfo, Announced, CandidateInfo, InterfaceInfo, KeyInfo, LinkDriver, LinkInfo, LinkState,
    MailProtocol, MailboxInfo, NewPeer, OutboxEntryInfo, OutboxList, OutboxState, PeerFormat,
    PeerInfo, PeerList, PeerRef, PeerSource, PeerState, SessionInfo, StatusInfo, StreamInfo,
};
pub use message::{
    Access, ClientHello, ControlError, ErrorKind, MAX_WAIT_SECS, PROTOCOL_NAME, PROTOCOL_VERSION,
    Request, Response, ServerHello,
};
pub use time::{Timestamp, TimestampError};
