//! What the connector tells the rest of peerd: each peer's state (on a
//! `watch`), events (on a `broadcast`), and the typed reasons both carry.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use peerd_core::{Fingerprint, PeerName};

/// One peer's connection state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PeerState {
    /// No session and no attempt.
    #[default]
    Idle,
    /// Dialling (or waiting for the other side's half of a collision).
    Connecting {
        /// When the attempt began.
        since: SystemTime,
    },
    /// A session is up.
    Connected {
        /// The peer's address as this host sees it.
        address: SocketAddr,
        /// When the session was established.
        since: SystemTime,
        /// How the session came about.
        path: Path,
    },
    /// The last attempt failed, or the session ended by failure.
    Failed {
        /// Why.
        reason: FailReason,
        /// When.
        at: SystemTime,
    },
}

impl PeerState {
    /// The word D-Bus and `peerctl` show: "idle", "connecting",
    /// "connected", "failed".
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Connecting { .. } => "connecting",
            Self::Connected { .. } => "connected",
            Self::Failed { .. } => "failed",
        }
    }
}

/// Who dialled, and over which local endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    /// Whether this host dialled or accepted.
    pub direction: Direction,
    /// The local UDP socket the session uses.
    pub local: SocketAddr,
}

/// Whether this host dialled or accepted a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// This host dialled the peer.
    Outgoing,
    /// The peer dialled this host.
    Incoming,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Outgoing => "outgoing",
            Self::Incoming => "incoming",
        })
    }
}

/// Why connecting failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailReason {
    /// No authenticated answer from any candidate in time.
    Timeout {
        /// How long the attempt ran.
        after: Duration,
        /// How many addresses were tried.
        tried: usize,
    },
    /// The user disconnected while connecting.
    Cancelled,
    /// None of the announced addresses can be dialled from here (for
    /// example IPv6 only, and no IPv6 here).
    NoUsableAddress,
    /// The host that answered refused our key during the handshake: this
    /// host is not in its address book.
    RefusedByPeer,
    /// The host that answered presented another key than the peer's.
    WrongKey {
        /// Where.
        address: SocketAddr,
        /// The key it showed, when it was an Ed25519 key.
        presented: Option<Fingerprint>,
    },
    /// Every candidate failed at the network level.
    Unreachable(String),
    /// The other side broke the protocol.
    Protocol(String),
    /// The session ended by failure after being up.
    Lost(DisconnectReason),
}

impl FailReason {
    /// A short kebab-case word for hooks and scripts (`PEERD_REASON`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timed-out",
            Self::Cancelled => "cancelled",
            Self::NoUsableAddress => "no-usable-address",
            Self::RefusedByPeer => "refused-by-peer",
            Self::WrongKey { .. } => "wrong-key",
            Self::Unreachable(_) => "unreachable",
            Self::Protocol(_) => "protocol-error",
            Self::Lost(r) => r.code(),
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout { after, tried } => write!(
                f,
                "no answer from {tried} address{} within {}s",
                if *tried == 1 { "" } else { "es" },
                after.as_secs_f32().round()
            ),
            Self::Cancelled => f.write_str("given up on request while connecting"),
            Self::NoUsableAddress => {
                f.write_str("none of the announced addresses can be dialled from here")
            },
            Self::RefusedByPeer => f.write_str(
                "the peer refused our key during the handshake (is this host in its address book?)",
            ),
            Self::WrongKey { address, presented } => match presented {
                Some(fp) => write!(f, "{address} answered with another key ({fp})"),
                None => write!(f, "{address} answered with a key that is not Ed25519"),
            },
            Self::Unreachable(e) => write!(f, "unreachable: {e}"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Lost(r) => write!(f, "session lost: {r}"),
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// A newer announcement gave the peer new addresses; the session was
    /// replaced by one to them.
    PeerAddressChanged,
    /// The session was replaced by a newer connection (a collision, or the
    /// peer dialled again).
    Replaced,
    /// Disconnected on request here.
    Requested,
    /// The peer closed the session on its user's request.
    ClosedByPeer,
    /// The peer is shutting down.
    PeerShuttingDown,
    /// This connector is shutting down.
    ShuttingDown,
    /// The peer's key was removed from (or changed in) the address book.
    KeyRemoved,
    /// No packet from the peer for `idle_timeout`.
    IdleTimeout,
    /// Anything else: the connection's error in words.
    Lost(String),
}

impl DisconnectReason {
    /// A short kebab-case word for hooks and scripts (`PEERD_REASON`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::PeerAddressChanged => "peer-address-changed",
            Self::Replaced => "replaced",
            Self::Requested => "requested",
            Self::ClosedByPeer => "closed-by-peer",
            Self::PeerShuttingDown => "peer-shutting-down",
            Self::ShuttingDown => "shutting-down",
            Self::KeyRemoved => "key-removed",
            Self::IdleTimeout => "idle-timeout",
            Self::Lost(_) => "connection-lost",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PeerAddressChanged => f.write_str("peer address changed"),
            Self::Replaced => f.write_str("replaced by a newer connection"),
            Self::Requested => f.write_str("disconnected on request"),
            Self::ClosedByPeer => f.write_str("closed by the peer"),
            Self::PeerShuttingDown => f.write_str("the peer is shutting down"),
            Self::ShuttingDown => f.write_str("shutting down"),
            Self::KeyRemoved => f.write_str("the peer's key was removed from the address book"),
            Self::IdleTimeout => f.write_str("no answer from the peer (idle timeout)"),
            Self::Lost(e) => write!(f, "connection lost: {e}"),
        }
    }
}

/// Why an incoming or outgoing connection was refused during the
/// handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusedReason {
    /// Its key is not in the address book (incoming) or not the dialled
    /// peer's (outgoing).
    UnknownKey,
    /// It presented no Ed25519 key.
    NotEd25519,
    /// The handshake failed or timed out before a key was seen.
    Handshake(String),
    /// It authenticated but never sent its hello.
    NoHello(String),
}

impl fmt::Display for RefusedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKey => f.write_str("key not in the address book"),
            Self::NotEd25519 => f.write_str("not an Ed25519 key"),
            Self::Handshake(e) => write!(f, "handshake failed: {e}"),
            Self::NoHello(e) => write!(f, "no hello: {e}"),
        }
    }
}

/// Something that happened, for the daemon, hooks and D-Bus signals.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectEvent {
    /// A session with `peer` is up.
    Connected {
        /// Who.
        peer: PeerName,
        /// Its address as seen here.
        address: SocketAddr,
        /// Who dialled.
        direction: Direction,
        /// The sequence number of our announcement that the peer said it
        /// accepted (0: none).
        acked: u64,
    },
    /// A session ended.
    Disconnected {
        /// Who.
        peer: PeerName,
        /// Why.
        reason: DisconnectReason,
    },
    /// Connecting to `peer` failed.
    Failed {
        /// Who.
        peer: PeerName,
        /// Why.
        reason: FailReason,
    },
    /// A connection was refused during the handshake, before any
    /// application byte.
    Refused {
        /// Where it came from (incoming) or went to (outgoing).
        remote: SocketAddr,
        /// The fingerprint of the key it presented, if it presented one.
        presented: Option<Fingerprint>,
        /// Why.
        reason: RefusedReason,
    },
    /// `peer` acknowledged our announcement `sequence` (in its hello or
    /// later on the session): the daemon tells the courier
    /// (`CourierHandle::acknowledged`) so it stops re-sending.
    Acknowledged {
        /// Who.
        peer: PeerName,
        /// The acknowledged sequence number.
        sequence: u64,
    },
}

/// QUIC application close codes (the `error_code` of CONNECTION_CLOSE).
///
/// Reasons sent with them are short fixed texts; the code is what counts.
pub mod close {
    use quinn::VarInt;

    /// Closed on request (user disconnect).
    pub const REQUESTED: VarInt = VarInt::from_u32(0);
    /// Replaced by a connection to the peer's new address.
    pub const ADDRESS_CHANGED: VarInt = VarInt::from_u32(1);
    /// Replaced by a newer connection (collision or re-dial).
    pub const REPLACED: VarInt = VarInt::from_u32(2);
    /// A racing connection that lost (Happy Eyeballs).
    pub const CANCELLED: VarInt = VarInt::from_u32(3);
    /// The other side broke the framed protocol.
    pub const PROTOCOL: VarInt = VarInt::from_u32(4);
    /// The sender is shutting down.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(5);
    /// The peer's key was removed from the sender's address book.
    pub const KEY_REMOVED: VarInt = VarInt::from_u32(6);
    /// A hello of a version the sender does not speak.
    pub const VERSION: VarInt = VarInt::from_u32(7);

    /// What a close code from the peer means here.
    pub fn reason(code: VarInt, text: &[u8]) -> super::DisconnectReason {
        use super::DisconnectReason as R;
        match code.into_inner() {
            0 => R::ClosedByPeer,
            1 => R::PeerAddressChanged,
            2 | 3 => R::Replaced,
            5 => R::PeerShuttingDown,
            6 => R::KeyRemoved,
            _ => R::Lost(format!(
                "closed by the peer (code {code}: {})",
                crate::wire::display_text(&String::from_utf8_lossy(text))
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_well() {
        assert_eq!(
            DisconnectReason::PeerAddressChanged.to_string(),
            "peer address changed"
        );
        assert_eq!(
            FailReason::Timeout {
                after: Duration::from_secs(10),
                tried: 2
            }
            .to_string(),
            "no answer from 2 addresses within 10s"
        );
        assert_eq!(
            close::reason(quinn::VarInt::from_u32(99), b"x\ny").to_string(),
            "connection lost: closed by the peer (code 99: x\\ny)"
        );
        assert_eq!(PeerState::Idle.as_str(), "idle");
    }
}
