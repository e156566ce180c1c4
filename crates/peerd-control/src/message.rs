//! The messages: the hello exchange, requests, responses and errors.

use peerd_core::{MailAddress, PeerName, PublicKey, ServiceName};
use serde::{Deserialize, Serialize};

use crate::info::{
    Announced, KeyInfo, LinkInfo, NewPeer, OutboxList, PeerInfo, PeerList, PeerRef, SessionInfo,
    StatusInfo, StreamInfo,
};

/// The name both sides put in their hello, so that a program that is not
/// peerctl or peerd is told so instead of getting a confusing error.
pub const PROTOCOL_NAME: &str = "peerd-control";

/// The protocol version. Both sides must speak the same one; it changes
/// whenever a message changes in a way the other side could misread.
/// Adding a field to a response or an event does not change it (clients
/// ignore fields they do not know).
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest `call --wait` the daemon accepts: one day.
pub const MAX_WAIT_SECS: u64 = 24 * 60 * 60;

/// The longest `software` string a hello may carry.
pub const MAX_SOFTWARE_LEN: usize = 64;

/// The client's first line. Its shape, the server's [`ServerHello`] and
/// [`Response::Error`] are the same in every protocol version, so that a
/// version mismatch is always reported as one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// Always [`PROTOCOL_NAME`].
    pub protocol: String,
    /// The client's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The client program and its version, for the daemon's log
    /// (`peerctl 0.1.0`).
    pub software: String,
}

impl ClientHello {
    /// This crate's hello, sent by `software`.
    pub fn new(software: impl Into<String>) -> Self {
        Self {
            protocol: PROTOCOL_NAME.to_owned(),
            version: PROTOCOL_VERSION,
            software: software.into(),
        }
    }

    /// Whether the server can talk to this client.
    ///
    /// # Errors
    /// [`ErrorKind::UnsupportedVersion`] for another protocol or version;
    /// [`ErrorKind::InvalidRequest`] for a `software` string that is too
    /// long or has control characters.
    pub fn check(&self) -> Result<(), ControlError> {
        if self.protocol != PROTOCOL_NAME {
            return Err(ControlError::new(
                ErrorKind::UnsupportedVersion,
                format!(
                    "this is the {PROTOCOL_NAME} protocol, not {:?}",
                    self.protocol
                ),
            ));
        }
        if self.version != PROTOCOL_VERSION {
            return Err(ControlError::new(
                ErrorKind::UnsupportedVersion,
                format!(
                    "the client speaks control protocol version {}, this daemon speaks version {PROTOCOL_VERSION}: use the peerctl that came with this peerd",
                    self.version
                ),
            ));
        }
        if self.software.len() > MAX_SOFTWARE_LEN || self.software.chars().any(char::is_control) {
            return Err(ControlError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "the hello's software name must be at most {MAX_SOFTWARE_LEN} bytes without control characters"
                ),
            ));
        }
        Ok(())
    }
}

/// What the caller may do, decided by the daemon from the connection's
/// credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Root, or a member of `[control] group`: every request.
    Full,
    /// Any other local user: only the requests that change nothing
    /// ([`Request::is_read_only`]).
    ReadOnly,
}

/// The server's answer to a [`ClientHello`] it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// Always [`PROTOCOL_NAME`].
    pub protocol: String,
    /// The server's [`PROTOCOL_VERSION`] (the client's).
    pub version: u32,
    /// The daemon and its version (`peerd 0.1.0`).
    pub software: String,
    /// What this connection may do.
    pub access: Access,
}

/// A request, one per line after the hello.
///
/// On the wire: `{"method":"status"}`,
/// `{"method":"call","params":{"peer":"hitoshi","wait_secs":120}}`. Unknown
/// methods and unknown fields are refused, and every name, address and
/// key is checked as it is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "method",
    content = "params",
    rename_all = "kebab-case",
    deny_unknown_fields
)]
pub enum Request {
    /// The daemon's state. Answer: [`Response::Status`].
    Status,
    /// The address book. Answer: [`Response::Peers`].
    Peers,
    /// Add a peer to the runtime address book. Answer:
    /// [`Response::PeerAdded`].
    PeerAdd {
        /// Its name.
        name: PeerName,
        /// Its mail address.
        email: MailAddress,
        /// Its public key.
        key: PublicKey,
        /// Announce address changes to it unasked (`--no-announce` clears).
        announce: bool,
        /// Take bare addresses in plain mails from it as hints.
        accept_unsigned: bool,
    },
    /// Remove a runtime peer. Answer: [`Response::PeerRemoved`].
    PeerRemove {
        /// The peer.
        name: PeerName,
    },
    /// The outbox. Answer: [`Response::Outbox`].
    Outbox,
    /// Send an announcement now. Answer: [`Response::Announced`].
    Announce {
        /// To these peers; empty: to every peer with `announce = true`.
        peers: Vec<PeerName>,
    },
    /// Check the mailbox now. Answer: [`Response::Checked`] once checked.
    Check,
    /// The caller flow: link up, announce, wait for the session. Answer:
    /// [`Response::Connected`], or [`ErrorKind::Timeout`] after
    /// `wait_secs`.
    Call {
        /// The peer.
        peer: PeerName,
        /// How long to wait for the session, 1..=[`MAX_WAIT_SECS`].
        wait_secs: u64,
    },
    /// Connect to the peer's last announced addresses. Answer:
    /// [`Response::Connected`].
    Connect {
        /// The peer.
        peer: PeerName,
    },
    /// Drop the session. Answer: [`Response::Disconnected`].
    Disconnect {
        /// The peer.
        peer: PeerName,
    },
    /// Open a stream to a service on the peer. Answer:
    /// [`Response::StreamOpen`], after which **the connection is no longer
    /// line-based**: every byte either side sends is the stream's, in both
    /// directions, until each side closes (half-closing its sending side
    /// ends that direction only).
    Open {
        /// The peer.
        peer: PeerName,
        /// The service, as the peer's `[[service]]` names it.
        service: ServiceName,
    },
    /// Bring the link up. Answer: [`Response::Link`].
    LinkUp,
    /// Hang up. Answer: [`Response::Link`].
    LinkDown,
    /// The link's state. Answer: [`Response::Link`].
    LinkStatus,
    /// Follow the events. Answer: [`Response::Subscribed`], then one
    /// [`Event`](crate::Event) per line until the client closes the
    /// connection (or the daemon stops).
    Events,
    /// This host's public key. Answer: [`Response::Key`].
    Key,
}

impl Request {
    /// The method name, as on the wire (`peer-add`).
    pub fn method(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Peers => "peers",
            Self::PeerAdd { .. } => "peer-add",
            Self::PeerRemove { .. } => "peer-remove",
            Self::Outbox => "outbox",
            Self::Announce { .. } => "announce",
            Self::Check => "check",
            Self::Call { .. } => "call",
            Self::Connect { .. } => "connect",
            Self::Disconnect { .. } => "disconnect",
            Self::Open { .. } => "open",
            Self::LinkUp => "link-up",
            Self::LinkDown => "link-down",
            Self::LinkStatus => "link-status",
            Self::Events => "events",
            Self::Key => "key",
        }
    }

    /// Whether the request only reads: these are the ones every local user
    /// may make; the others need [`Access::Full`].
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Self::Status | Self::Peers | Self::Outbox | Self::LinkStatus | Self::Events | Self::Key
        )
    }

    /// Checks what the types alone do not.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidRequest`] for a `wait_secs` of 0 or more than
    /// [`MAX_WAIT_SECS`].
    pub fn validate(&self) -> Result<(), ControlError> {
        match self {
            Self::Call { wait_secs, .. } if !(1..=MAX_WAIT_SECS).contains(wait_secs) => {
                Err(ControlError::new(
                    ErrorKind::InvalidRequest,
                    format!("wait_secs must be 1 to {MAX_WAIT_SECS}, not {wait_secs}"),
                ))
            },
            _ => Ok(()),
        }
    }

    /// The fields of a [`Request::PeerAdd`] as one value.
    pub fn new_peer(&self) -> Option<NewPeer> {
        match self {
            Self::PeerAdd {
                name,
                email,
                key,
                announce,
                accept_unsigned,
            } => Some(NewPeer {
                name: name.clone(),
                email: email.clone(),
                key: *key,
                announce: *announce,
                accept_unsigned: *accept_unsigned,
            }),
            _ => None,
        }
    }

    /// Whether `response` is a possible answer to this request (an error
    /// always is).
    pub fn expects(&self, response: &Response) -> bool {
        matches!(
            (self, response),
            (_, Response::Error(_))
                | (Self::Status, Response::Status(_))
                | (Self::Peers, Response::Peers(_))
                | (Self::PeerAdd { .. }, Response::PeerAdded(_))
                | (Self::PeerRemove { .. }, Response::PeerRemoved(_))
                | (Self::Outbox, Response::Outbox(_))
                | (Self::Announce { .. }, Response::Announced(_))
                | (Self::Check, Response::Checked)
                | (
                    Self::Call { .. } | Self::Connect { .. },
                    Response::Connected(_)
                )
                | (Self::Disconnect { .. }, Response::Disconnected(_))
                | (Self::Open { .. }, Response::StreamOpen(_))
                | (
                    Self::LinkUp | Self::LinkDown | Self::LinkStatus,
                    Response::Link(_)
                )
                | (Self::Events, Response::Subscribed)
                | (Self::Key, Response::Key(_))
        )
    }
}

/// A response line: `{"response":"<kind>", ...the payload's fields}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "kebab-case")]
pub enum Response {
    /// The hello was accepted.
    Hello(ServerHello),
    /// The request failed (or the hello was refused).
    Error(ControlError),
    /// For [`Request::Status`].
    Status(StatusInfo),
    /// For [`Request::Peers`].
    Peers(PeerList),
    /// For [`Request::PeerAdd`]: the peer as added.
    PeerAdded(PeerInfo),
    /// For [`Request::PeerRemove`].
    PeerRemoved(PeerRef),
    /// For [`Request::Outbox`].
    Outbox(OutboxList),
    /// For [`Request::Announce`].
    Announced(Announced),
    /// For [`Request::Check`]: the mailbox was checked.
    Checked,
    /// For [`Request::Call`] and [`Request::Connect`]: the session is up.
    Connected(SessionInfo),
    /// For [`Request::Disconnect`].
    Disconnected(PeerRef),
    /// For [`Request::Open`]: the raw stream follows.
    StreamOpen(StreamInfo),
    /// For the link requests: the link afterwards.
    Link(LinkInfo),
    /// For [`Request::Events`]: events follow.
    Subscribed,
    /// For [`Request::Key`].
    Key(KeyInfo),
}

impl Response {
    /// The response's kind, as on the wire (`peer-added`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Error(_) => "error",
            Self::Status(_) => "status",
            Self::Peers(_) => "peers",
            Self::PeerAdded(_) => "peer-added",
            Self::PeerRemoved(_) => "peer-removed",
            Self::Outbox(_) => "outbox",
            Self::Announced(_) => "announced",
            Self::Checked => "checked",
            Self::Connected(_) => "connected",
            Self::Disconnected(_) => "disconnected",
            Self::StreamOpen(_) => "stream-open",
            Self::Link(_) => "link",
            Self::Subscribed => "subscribed",
            Self::Key(_) => "key",
        }
    }
}

/// The kind of a failure; decides `peerctl`'s exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The hello names another protocol or version.
    UnsupportedVersion,
    /// The request is malformed or has a value out of range.
    InvalidRequest,
    /// This connection's user may not make this request.
    PermissionDenied,
    /// No such peer in the address book.
    UnknownPeer,
    /// A peer with that name (or key) exists already.
    PeerExists,
    /// The peer is plain: it has no key, so no connection.
    NoKey,
    /// There is no session with the peer.
    NotConnected,
    /// The wait ended without the result.
    Timeout,
    /// The link is down and could not be brought up (pppd or the modem
    /// failed, or it is held down by `link down`).
    LinkDown,
    /// The peer refused (our key during the handshake, or the service).
    Refused,
    /// The daemon cannot serve this now (it is stopping, a part of it is
    /// not running, too many connections).
    Unavailable,
    /// Anything else; the message says what.
    Failed,
}

impl ErrorKind {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnsupportedVersion => "unsupported-version",
            Self::InvalidRequest => "invalid-request",
            Self::PermissionDenied => "permission-denied",
            Self::UnknownPeer => "unknown-peer",
            Self::PeerExists => "peer-exists",
            Self::NoKey => "no-key",
            Self::NotConnected => "not-connected",
            Self::Timeout => "timeout",
            Self::LinkDown => "link-down",
            Self::Refused => "refused",
            Self::Unavailable => "unavailable",
            Self::Failed => "failed",
        }
    }
}

/// A failed request, as the daemon's API returns it and as it travels:
/// `{"response":"error","kind":"no-key","message":"no key for this peer (me-on-phone is a plain peer)"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ControlError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What happened, for people.
    pub message: String,
}

impl ControlError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// [`ErrorKind::UnknownPeer`] for `peer`.
    pub fn unknown_peer(peer: &PeerName) -> Self {
        Self::new(
            ErrorKind::UnknownPeer,
            format!("no peer {peer} in the address book"),
        )
    }

    /// [`ErrorKind::NoKey`] for `peer`: INTERFACE.md's "no key for this
    /// peer".
    pub fn no_key(peer: &PeerName) -> Self {
        Self::new(
            ErrorKind::NoKey,
            format!("no key for this peer ({peer} is a plain peer: it is told by mail only)"),
        )
    }

    /// [`ErrorKind::PermissionDenied`] for a request that needs
    /// [`Access::Full`].
    pub fn permission_denied(request: &Request) -> Self {
        Self::new(
            ErrorKind::PermissionDenied,
            format!(
                "permission denied: {} needs root or membership of the peerd control group ([control] group)",
                request.method()
            ),
        )
    }

    /// [`ErrorKind::Timeout`] after `secs` seconds.
    pub fn timeout(what: &str, secs: u64) -> Self {
        Self::new(
            ErrorKind::Timeout,
            format!("{what}: timed out after {secs}s"),
        )
    }
}

#[cfg(test)]
mod tests;
