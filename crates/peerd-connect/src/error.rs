//! The connector's errors.

use std::net::SocketAddr;

use peerd_core::PeerName;

use crate::state::{DisconnectReason, FailReason};
use crate::wire::RefuseCode;

/// Why starting the connector, or a request to it, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The connector has stopped.
    #[error("the connector is not running")]
    Gone,
    /// The name is not in the address book.
    #[error("unknown peer {0}")]
    UnknownPeer(String),
    /// A plain peer: it is told by readable mail and nothing else.
    #[error("{0}: no key for this peer")]
    NoKey(PeerName),
    /// The request needs a session and there is none.
    #[error("{0} is not connected")]
    NotConnected(PeerName),
    /// `connect` was given nothing to dial.
    #[error("{0}: no address to connect to (no announcement received yet)")]
    NoCandidates(PeerName),
    /// A `[listen]` or dialling socket could not be bound.
    #[error("cannot listen on {address} (UDP): {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// Setting up TLS failed (a bug or a broken key).
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Waiting for a connection ended in failure.
    #[error("{peer}: {reason}")]
    Failed {
        /// Who.
        peer: PeerName,
        /// Why.
        reason: FailReason,
    },
    /// A task of the connector panicked: a bug, which stops the actor.
    #[error("a connector task failed: {0}")]
    Task(String),
}

impl ConnectError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::NotConnected(_) | Self::Failed { .. })
    }
}

/// Why a stream to a peer could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The connector has stopped.
    #[error("the connector is not running")]
    Gone,
    /// The name is not in the address book.
    #[error("unknown peer {0}")]
    UnknownPeer(String),
    /// A plain peer.
    #[error("{0}: no key for this peer")]
    NoKey(PeerName),
    /// There is no session with the peer.
    #[error("{0} is not connected")]
    NotConnected(PeerName),
    /// The peer refused the stream; `reason` is its text, escaped.
    #[error("the peer refused the stream: {code}: {reason}")]
    Refused {
        /// The agreed reason.
        code: RefuseCode,
        /// The peer's words.
        reason: String,
    },
    /// The session ended while opening.
    #[error("the session ended: {0}")]
    Lost(DisconnectReason),
    /// No answer to the open request in time.
    #[error("no answer from the peer to the stream request within {0}s")]
    Timeout(u64),
    /// The peer's answer was not a valid frame.
    #[error("protocol error: {0}")]
    Protocol(String),
}
