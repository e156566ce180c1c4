//! The connector: authenticated direct channels to peers.
//!
//! An announcement tells us where a peer is, but it came by mail, which
//! anyone could have sent. So the connection it leads to must prove who is
//! at each end before a single application byte passes: both sides present
//! their Ed25519 identity in the TLS 1.3 handshake as a raw public key
//! (RFC 7250), and each accepts only the keys of its address book. Unknown
//! keys fail the handshake; no stream is served before both keys are
//! checked and the hello exchange is done.
//!
//! The transport is QUIC (quinn over tokio, rustls with the ring provider
//! only). Why QUIC rather than TCP + Noise: it runs over UDP, which later
//! NAT traversal needs; it multiplexes many streams on one connection per
//! peer; and the dialling side can change address without losing its
//! streams (connection migration). `docs/channel.md` has the whole design,
//! the framed protocol byte by byte, and the measurements behind the
//! choice.
//!
//! On a connection, the first stream carries a hello each way (the
//! protocol version, which connection the arbiter keeps, and the sequence
//! number of the peer's announcement we accepted, so its outbox can stop
//! re-sending). Every other stream names a `[[service]]` (or asks for a
//! plain stream), and the accepting side connects it to the service's TCP
//! target or refuses with a reason the opener sees.
//!
//! # Layout
//! - [`actor`]: the actor: [`ConnectorHandle`], [`spawn`], [`Tuning`],
//!   [`AddressBook`]; dialling (Happy Eyeballs), accepting, one connection
//!   per peer, services, migration.
//! - [`tls`]: the pinning verifier ([`tls::KeyPins`]) and the rustls/quinn
//!   configurations (no resumption, no 0-RTT).
//! - [`wire`]: the framed protocol inside a connection (hostile-input
//!   tested and fuzzed).
//! - [`stream`]: [`PeerStream`], an `AsyncRead + AsyncWrite` stream to a
//!   peer.
//! - [`state`]: [`PeerState`], [`ConnectEvent`] and the typed reasons.
//! - [`error`]: [`ConnectError`], [`OpenError`].

pub mod actor;
pub mod error;
pub mod state;
pub mod stream;
pub mod tls;
pub mod wire;

pub use actor::{
    AddressBook, ConnectorConfig, ConnectorHandle, Tuning, happy_eyeballs_order, spawn,
};
pub use error::{ConnectError, OpenError};
pub use state::{
    ConnectEvent, Direction, DisconnectReason, FailReason, Path, PeerState, RefusedReason,
};
pub use stream::{PeerStream, StreamClosed};
