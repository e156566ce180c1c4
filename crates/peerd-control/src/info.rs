//! What the daemon reports: the payloads of the responses, with every
//! field `peerctl` shows, in text and as `--json`.
//!
//! Field names are snake_case, enum values kebab-case strings, times
//! [`Timestamp`]s (RFC 3339, UTC). A field that has no value now (no
//! check yet, no session) is `null`, never left out, so scripts can rely
//! on every key being there.

use std::net::{IpAddr, SocketAddr};

use peerd_core::{AddressClass, Candidate, CandidateKind, MailAddress, PeerName, PublicKey};
use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// `Display`/`FromStr` as a serde string, for peerd-core's enums that do
/// not derive serde themselves.
mod as_str {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `status`: the whole daemon at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// This host's `[identity] name`.
    pub name: String,
    /// This host's key fingerprint (for reading aloud).
    pub fingerprint: String,
    /// The link.
    pub link: LinkInfo,
    /// The watched interface and its addresses.
    pub interface: InterfaceInfo,
    /// The mailbox.
    pub mailbox: MailboxInfo,
    /// Outbox entries still being worked on (waiting to be sent or
    /// acknowledged).
    pub outbox_size: u32,
    /// The peers connected now.
    pub connected_peers: Vec<SessionInfo>,
}

/// Which `[link] driver` brings the link up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkDriver {
    /// Someone else brings the network up.
    External,
    /// peerd runs pppd.
    Pppd,
    /// peerd dials a serial modem, then runs pppd.
    Modem,
}

impl LinkDriver {
    /// The name used in the configuration and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::External => "external",
            Self::Pppd => "pppd",
            Self::Modem => "modem",
        }
    }
}

/// Where the link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    /// Not up, and not being brought up.
    Down,
    /// Dialling (pppd started, or the modem dialling).
    Dialing,
    /// Connected at the line level; waiting for an address.
    Connecting,
    /// Up, with an address.
    Up,
    /// Hanging up.
    HangingUp,
    /// The last attempt failed; see the reason.
    Failed,
}

impl LinkState {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Dialing => "dialing",
            Self::Connecting => "connecting",
            Self::Up => "up",
            Self::HangingUp => "hanging-up",
            Self::Failed => "failed",
        }
    }
}

/// `link status`, and the link part of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// The driver.
    pub driver: LinkDriver,
    /// Whether the link is dialled only when needed (`on_demand`).
    pub on_demand: bool,
    /// The state.
    pub state: LinkState,
    /// The interface the link is up on (state `up`).
    pub interface: Option<String>,
    /// Since when the link is in this state, if known.
    pub since: Option<Timestamp>,
    /// Why it failed (state `failed`): pppd's exit status and its meaning,
    /// or the modem's final result code.
    pub reason: Option<String>,
    /// When the next dial attempt is due (state `failed`), if any.
    pub retry_at: Option<Timestamp>,
}

/// The watched interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceInfo {
    /// `[link] interface` as configured (`ppp0`, or `auto`).
    pub configured: String,
    /// The interface watched now (for `auto`, the default-route one);
    /// `null` when there is none.
    pub name: Option<String>,
    /// Whether it exists and is up.
    pub up: bool,
    /// Its addresses.
    pub addresses: Vec<AddressInfo>,
}

/// One address of the watched interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressInfo {
    /// The address.
    pub ip: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// Its class (`public`, `cgnat`, `private`, `link-local`, ...).
    #[serde(with = "as_str")]
    pub class: AddressClass,
    /// Whether announcements carry it (per `publish` and `ipv6`).
    pub announced: bool,
    /// An IPv6 privacy address.
    pub temporary: bool,
    /// An IPv6 address past its preferred lifetime.
    pub deprecated: bool,
    /// An IPv6 address still in duplicate address detection.
    pub tentative: bool,
}

/// How mail is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MailProtocol {
    /// IMAP, with IDLE when the server has it.
    Imap,
    /// POP3 polling.
    Pop3,
}

impl MailProtocol {
    /// The name used in the configuration and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Imap => "imap",
            Self::Pop3 => "pop3",
        }
    }
}

/// The mailbox part of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxInfo {
    /// `[mail.incoming] protocol`.
    pub protocol: MailProtocol,
    /// Whether a mailbox session is open now (IMAP IDLE).
    pub connected: bool,
    /// When the mailbox was last checked completely.
    pub last_check: Option<Timestamp>,
    /// When the next check is due (polling, or an on-demand link's
    /// `check_interval`), if one is scheduled.
    pub next_check: Option<Timestamp>,
    /// Mails the last check found and did not finish with (it broke
    /// off): the next check examines them again. 0 after a complete check.
    pub pending: u32,
    /// Announcements rejected since the daemon started (bad signature,
    /// unknown key, expired, replayed, ...).
    pub rejected: u64,
    /// The last mailbox error, if the last check failed.
    pub last_error: Option<String>,
}

/// A session with a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The peer.
    pub peer: PeerName,
    /// Its address in this session.
    pub address: SocketAddr,
    /// Since when.
    pub since: Timestamp,
}

/// A `[[peer]]` or runtime address-book peer's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerFormat {
    /// Sealed announcements; the peer has a key.
    Sealed,
    /// A readable mail; no key, no connection.
    Plain,
}

/// Where a peer is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerSource {
    /// `[[peer]]` in the configuration file (read-only at run time).
    Config,
    /// The runtime address book (`peer add`).
    Runtime,
}

/// Where the connection to a peer stands (as D-Bus `State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerState {
    /// No session, none being made.
    Idle,
    /// A connection is being made.
    Connecting,
    /// A session is up.
    Connected,
    /// The last attempt failed.
    Failed,
}

impl PeerState {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Failed => "failed",
        }
    }
}

/// A way to reach a peer, as it announced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CandidateInfo {
    /// Address and port.
    pub address: SocketAddr,
    /// How the peer learned it (`host`, `server-reflexive`, `mapped`).
    #[serde(with = "as_str")]
    pub kind: CandidateKind,
    /// Its class (`public`, `cgnat`, `private`).
    #[serde(with = "as_str")]
    pub class: AddressClass,
}

impl From<Candidate> for CandidateInfo {
    fn from(c: Candidate) -> Self {
        Self {
            address: c.addr,
            kind: c.kind,
            class: c.class,
        }
    }
}

/// One peer of the address book (`peers`, `peer add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its name.
    pub name: PeerName,
    /// Where announcements to it are mailed.
    pub email: MailAddress,
    /// Sealed or plain.
    pub format: PeerFormat,
    /// Its public key (`null` for a plain peer).
    pub key: Option<PublicKey>,
    /// Its key's fingerprint (`null` for a plain peer).
    pub fingerprint: Option<String>,
    /// Config file or runtime address book.
    pub source: PeerSource,
    /// Whether address changes are announced to it unasked.
    pub announce: bool,
    /// Whether its announcements are answered by connecting.
    pub auto_connect: bool,
    /// Whether a bare address in a plain mail from it is taken as a hint.
    pub accept_unsigned: bool,
    /// The addresses it last announced (empty if none yet).
    pub addresses: Vec<CandidateInfo>,
    /// When it last announced them.
    pub announced_at: Option<Timestamp>,
    /// The connection state.
    pub state: PeerState,
    /// The session, when connected.
    pub session: Option<SessionInfo>,
    /// Why the last connection attempt failed (state `failed`).
    pub last_error: Option<String>,
}

/// `peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerList {
    /// Every peer, by name.
    pub peers: Vec<PeerInfo>,
}

/// Where an outbox entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutboxState {
    /// Not yet sent; tried when due.
    Pending,
    /// The last try failed; backing off before the next.
    SendingBackoff,
    /// Sent; waiting for the acknowledgement, re-sent per `resend`.
    AwaitingAck,
    /// Acknowledged by the peer.
    Acknowledged,
    /// Sent to a plain peer (no acknowledgement exists).
    Sent,
    /// Failed for good until something changes.
    FailedPermanent,
}

impl OutboxState {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::SendingBackoff => "sending-backoff",
            Self::AwaitingAck => "awaiting-ack",
            Self::Acknowledged => "acknowledged",
            Self::Sent => "sent",
            Self::FailedPermanent => "failed-permanent",
        }
    }
}

/// One peer's entry in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntryInfo {
    /// The peer.
    pub peer: PeerName,
    /// Where it stands.
    pub state: OutboxState,
    /// The addresses to be announced.
    pub addresses: Vec<CandidateInfo>,
    /// A readable mail to a plain peer (never re-sent).
    pub plain: bool,
    /// Tries since the last success.
    pub attempts: u32,
    /// Mails the server accepted for this entry.
    pub sends: u32,
    /// When the next attempt is due (`null`: nothing scheduled).
    pub next_attempt: Option<Timestamp>,
    /// Held back by `max_per_hour`.
    pub rate_limited: bool,
    /// The last error, if the last try failed.
    pub last_error: Option<String>,
    /// The sequence number of the last mail sent, if any.
    pub sequence: Option<u64>,
    /// When this announcement was queued.
    pub queued_at: Timestamp,
}

/// `outbox`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxList {
    /// One entry per peer, by peer name.
    pub entries: Vec<OutboxEntryInfo>,
}

/// `key`: this host's public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// This host's `[identity] name`.
    pub name: String,
    /// The key, as peers paste it.
    pub public_key: PublicKey,
    /// Its fingerprint, for reading aloud.
    pub fingerprint: String,
}

impl KeyInfo {
    /// The key info of `public_key`, its fingerprint computed.
    pub fn new(name: impl Into<String>, public_key: PublicKey) -> Self {
        Self {
            name: name.into(),
            fingerprint: public_key.fingerprint().to_string(),
            public_key,
        }
    }
}

/// `peer add`: what the new peer is (the fields of
/// [`Request::PeerAdd`](crate::Request::PeerAdd), as one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPeer {
    /// Its name; must not be in the address book yet.
    pub name: PeerName,
    /// Its mail address.
    pub email: MailAddress,
    /// Its public key.
    pub key: PublicKey,
    /// Announce address changes to it unasked.
    pub announce: bool,
    /// Take bare addresses in plain mails from it as hints.
    pub accept_unsigned: bool,
}

/// `announce`: who the announcement was queued for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announced {
    /// The peers, by name.
    pub peers: Vec<PeerName>,
}

/// `open`: the stream that the connection carries from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The peer.
    pub peer: PeerName,
    /// The service on it.
    pub service: peerd_core::ServiceName,
}

/// A peer named in a response (`peer remove`, `disconnect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRef {
    /// The peer.
    pub peer: PeerName,
}
