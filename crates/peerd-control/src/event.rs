//! Events: what the daemon streams after [`Request::Events`](crate::Request::Events).

use std::net::{IpAddr, SocketAddr};

use peerd_core::PeerName;
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::info::{CandidateInfo, LinkState};

/// One event: when, and what.
///
/// On the wire: `{"at":"2026-11-26T09:30:00Z","event":"peer-connected","peer":"hitoshi","address":"198.51.100.7:7447"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// `kind`, happening now.
    pub fn now(kind: EventKind) -> Self {
        Self {
            at: Timestamp::now(),
            kind,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum EventKind {
    /// The announceable addresses of the watched interface changed.
    AddressChanged {
        /// The interface (`null` when none is watched now).
        interface: Option<String>,
        /// The addresses announcements carry now (possibly none).
        addresses: Vec<IpAddr>,
    },
    /// The mail server accepted an announcement to `peer`.
    AnnouncementSent {
        /// To whom.
        peer: PeerName,
        /// What it said.
        addresses: Vec<CandidateInfo>,
        /// Its sequence number (`null` for a plain mail).
        sequence: Option<u64>,
    },
    /// Sending an announcement to `peer` failed.
    SendFailed {
        /// To whom.
        peer: PeerName,
        /// Why.
        error: String,
        /// Whether it is given up until something changes.
        permanent: bool,
    },
    /// A verified announcement arrived.
    AnnouncementReceived {
        /// From whom.
        peer: PeerName,
        /// Where it can be reached.
        addresses: Vec<CandidateInfo>,
        /// Its sequence number.
        sequence: u64,
    },
    /// A mail that claimed to be an announcement failed verification.
    AnnouncementRejected {
        /// The peer's name if its key is known, else the sender's address
        /// as the mail gave it (escaped; never trust it).
        sender: String,
        /// Why (bad signature, unknown key, expired, replayed, ...).
        reason: String,
    },
    /// A session with a peer is up.
    PeerConnected {
        /// The peer.
        peer: PeerName,
        /// Its address.
        address: SocketAddr,
    },
    /// A session with a peer ended.
    PeerDisconnected {
        /// The peer.
        peer: PeerName,
        /// Why.
        reason: String,
    },
    /// The link changed state.
    LinkStateChanged {
        /// The new state.
        state: LinkState,
        /// The interface, when up.
        interface: Option<String>,
        /// Why, when it failed.
        reason: Option<String>,
    },
    /// A peer joined the address book (`peer add`, or a reload that found
    /// a new `[[peer]]`).
    PeerAdded {
        /// Who.
        peer: PeerName,
    },
    /// A peer left the address book (`peer remove`, or a reload).
    PeerRemoved {
        /// Who.
        peer: PeerName,
    },
    /// The mailbox could not be checked.
    MailboxError {
        /// Why.
        error: String,
    },
    /// This connection fell behind and `count` events were dropped for it;
    /// re-read the state (`status`) to catch up.
    Missed {
        /// How many.
        count: u64,
    },
}

impl EventKind {
    /// The event's name, as on the wire (`peer-connected`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::AddressChanged { .. } => "address-changed",
            Self::AnnouncementSent { .. } => "announcement-sent",
            Self::SendFailed { .. } => "send-failed",
            Self::AnnouncementReceived { .. } => "announcement-received",
            Self::AnnouncementRejected { .. } => "announcement-rejected",
            Self::PeerConnected { .. } => "peer-connected",
            Self::PeerDisconnected { .. } => "peer-disconnected",
            Self::LinkStateChanged { .. } => "link-state-changed",
            Self::PeerAdded { .. } => "peer-added",
            Self::PeerRemoved { .. } => "peer-removed",
            Self::MailboxError { .. } => "mailbox-error",
            Self::Missed { .. } => "missed",
        }
    }
}
