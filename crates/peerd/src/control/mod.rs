//! The control socket: the daemon's side of the protocol `peerctl` speaks
//! (`peerd-control`, described in `docs/control-protocol.md`).
//!
//! Owns: the listening Unix socket and its file, and one task per
//! connection. Inputs: connections; each request is handed to a
//! [`ControlApi`], the daemon's actors behind one trait. Outputs:
//! responses, event streams, spliced peer streams. Shutdown: on the
//! cancellation token, [`ControlSocket::serve`] stops accepting, every
//! connection task ends (a request in flight is answered "peerd is
//! stopping", event streams and spliced streams are closed), and the socket
//! file is removed if it is still ours.
//!
//! Access: root and members of `[control] group` (the process's gid, or
//! the user's primary or supplementary groups) may make every request;
//! other local users only the read-only ones ([`Request::is_read_only`]:
//! status, peers, outbox, link status, events, key). The caller's uid,
//! gid and pid come from `SO_PEERCRED` on every connection and are logged.
//!
//! Robustness: lines are read with a length limit (1 MiB; a longer one
//! ends the connection), a client has [`Limits::hello_timeout`] to say
//! hello and [`Limits::idle_timeout`] between requests, every write has
//! [`Limits::write_timeout`], and privileged and other users each have
//! their own pool of connections, so a local user who floods the socket
//! cannot lock root out. A client that closes its connection while a
//! request runs cancels that request (`peerctl call` interrupted with ^C).
//!
//! # Layout
//! - [`ControlApi`]: what the daemon does for each request.
//! - [`bind`] / [`ControlSocket`]: the socket file (stale sockets, mode,
//!   group) and the accept loop.
//! - [`access`]: who may do what.
//! - `connection`: one client, from hello to close.

pub mod access;
mod connection;
mod socket;

use std::future::Future;
use std::time::Duration;

use peerd_control::{
    ControlError, Event, KeyInfo, LinkInfo, NewPeer, OutboxEntryInfo, PeerInfo, SessionInfo,
    StatusInfo,
};
use peerd_core::{PeerName, ServiceName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;

pub use peerd_control::{Access, Request};
pub use socket::{BindError, ControlSocket, bind};

/// A byte stream to a service on a peer, as [`ControlApi::open`] returns
/// it: the control server copies it to and from the client's socket.
/// Shutting down its write side must tell the peer that no more data
/// comes (for QUIC: finish the stream); reading its end means the peer
/// finished.
pub type PeerStream = Box<dyn PeerIo>;

/// What a [`PeerStream`] is: readable, writable, movable between tasks.
pub trait PeerIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> PeerIo for T {}

/// What the daemon does for the control socket: one method per request.
///
/// The daemon implements it over its actors' handles (wired in
/// [`run`](crate::run)); tests implement it with fakes. The server has
/// already checked the caller's access and the request's values when a
/// method is called.
///
/// Every future may be dropped before it completes: when the client closes
/// its connection, when `call`'s wait is over, when the daemon stops. A
/// method must leave things consistent then (as a handle request whose
/// reply is not awaited does).
pub trait ControlApi: Send + Sync + 'static {
    /// `status`.
    fn status(&self) -> impl Future<Output = Result<StatusInfo, ControlError>> + Send;

    /// `peers`: every peer, by name.
    fn peers(&self) -> impl Future<Output = Result<Vec<PeerInfo>, ControlError>> + Send;

    /// `peer add`: adds `peer` to the runtime address book (persisted);
    /// returns it as `peers` would show it.
    fn peer_add(
        &self,
        peer: NewPeer,
    ) -> impl Future<Output = Result<PeerInfo, ControlError>> + Send;

    /// `peer remove`: removes a runtime peer.
    fn peer_remove(&self, name: PeerName) -> impl Future<Output = Result<(), ControlError>> + Send;

    /// `outbox`: one entry per peer, by peer name.
    fn outbox(&self) -> impl Future<Output = Result<Vec<OutboxEntryInfo>, ControlError>> + Send;

    /// `announce`: queues an announcement to `peers` (empty: every peer
    /// with `announce = true`); returns who it was queued for.
    fn announce(
        &self,
        peers: Vec<PeerName>,
    ) -> impl Future<Output = Result<Vec<PeerName>, ControlError>> + Send;

    /// `check`: checks the mailbox now; completes when it was checked.
    fn check(&self) -> impl Future<Output = Result<(), ControlError>> + Send;

    /// `call`: the caller flow; completes when the peer is connected. The
    /// server stops waiting after `wait` (answering
    /// [`ErrorKind::Timeout`](peerd_control::ErrorKind::Timeout)) and drops
    /// the future; `wait` is passed so the daemon can size its leases.
    fn call(
        &self,
        peer: PeerName,
        wait: Duration,
    ) -> impl Future<Output = Result<SessionInfo, ControlError>> + Send;

    /// `connect`: connects to the peer's last announced addresses.
    fn connect(
        &self,
        peer: PeerName,
    ) -> impl Future<Output = Result<SessionInfo, ControlError>> + Send;

    /// `disconnect`: drops the session.
    fn disconnect(&self, peer: PeerName) -> impl Future<Output = Result<(), ControlError>> + Send;

    /// `open`: an authenticated stream to `service` on `peer`.
    fn open(
        &self,
        peer: PeerName,
        service: ServiceName,
    ) -> impl Future<Output = Result<PeerStream, ControlError>> + Send;

    /// `link up`: completes when the link is up (or failed).
    fn link_up(&self) -> impl Future<Output = Result<LinkInfo, ControlError>> + Send;

    /// `link down`: completes when the link is down.
    fn link_down(&self) -> impl Future<Output = Result<LinkInfo, ControlError>> + Send;

    /// `link status`.
    fn link_status(&self) -> impl Future<Output = Result<LinkInfo, ControlError>> + Send;

    /// `events`: a new subscription to the daemon's events. A connection
    /// that falls behind gets an [`EventKind::Missed`](peerd_control::EventKind::Missed)
    /// in place of what it lost.
    fn events(&self) -> broadcast::Receiver<Event>;

    /// `key`: this host's public key.
    fn key(&self) -> KeyInfo;

    /// D-Bus `Call`: begins the caller flow for `peer` (link up, announce,
    /// wait for the session) and completes once the announcement is
    /// queued; the daemon carries on with the flow on its own (its leases
    /// sized as for a `call` with the default wait), and reports the
    /// session with [`EventKind::PeerConnected`](peerd_control::EventKind::PeerConnected).
    /// Errors as [`call`](Self::call) for what is known before queueing:
    /// unknown peer, no key, link that cannot come up.
    ///
    /// The default checks the peer in [`peers`](Self::peers) and queues an
    /// announcement to it with [`announce`](Self::announce), leaving the
    /// rest to `auto_connect`; a daemon that holds the link for a call
    /// (on-demand links) overrides it.
    fn call_start(&self, peer: PeerName) -> impl Future<Output = Result<(), ControlError>> + Send {
        async move {
            let peers = self.peers().await?;
            let info = peers
                .iter()
                .find(|p| p.name == peer)
                .ok_or_else(|| ControlError::unknown_peer(&peer))?;
            if info.key.is_none() {
                return Err(ControlError::no_key(&peer));
            }
            self.announce(vec![peer]).await.map(drop)
        }
    }
}

/// Timeouts and connection limits of the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// How long a new connection may take to send its hello.
    pub hello_timeout: Duration,
    /// How long a connection may sit between requests.
    pub idle_timeout: Duration,
    /// How long writing one line (or the first bytes of a stream) may
    /// take before the client is given up as stuck.
    pub write_timeout: Duration,
    /// Connections at once from root and `[control] group` members.
    pub max_privileged: usize,
    /// Connections at once from all other users together.
    pub max_unprivileged: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(30),
            max_privileged: 64,
            max_unprivileged: 32,
        }
    }
}
