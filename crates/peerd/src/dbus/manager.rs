//! `org.peerd.Peerd1` at `/org/peerd/Peerd1`: the methods, properties and
//! signals of INTERFACE.md. Each method checks the caller, reads its
//! arguments, calls the [`ControlApi`] and maps the error; properties read
//! the snapshot; signals are emitted by `state`.

use std::future::Future;
use std::sync::Arc;

use peerd_control::{ControlError, NewPeer};
use peerd_core::{MailAddress, PeerName, PublicKey, ServiceName};
use tokio::io::copy_bidirectional;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedObjectPath};

use super::caller::Gate;
use super::error::PeerdError;
use super::state::{Refresher, Shared, escape_controls};
use crate::control::{ControlApi, PeerStream};

/// The longest piece of a rejected argument quoted back in an error.
const QUOTE_MAX: usize = 64;

/// The manager object: handles only, no state of its own.
pub(super) struct Manager<A> {
    api: Arc<A>,
    shared: Arc<Shared>,
    refresher: Arc<Refresher<A>>,
    gate: Gate,
    /// The tasks copying `OpenStream` sockets, awaited when peerd stops.
    streams: TaskTracker,
    /// Cancelled when the interface stops: running calls are answered
    /// "peerd is stopping", streams are closed.
    stop: CancellationToken,
}

impl<A: ControlApi> Manager<A> {
    pub(super) fn new(
        api: Arc<A>,
        shared: Arc<Shared>,
        refresher: Arc<Refresher<A>>,
        gate: Gate,
        streams: TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        Self {
            api,
            shared,
            refresher,
            gate,
            streams,
            stop,
        }
    }

    /// Runs an API call unless peerd stops first.
    async fn run<T>(
        &self,
        call: impl Future<Output = Result<T, ControlError>>,
    ) -> Result<T, PeerdError> {
        tokio::select! {
            biased;
            () = self.stop.cancelled() => Err(PeerdError::Unavailable("peerd is stopping".into())),
            result = call => result.map_err(PeerdError::from),
        }
    }

    /// After a change: the properties, before the reply goes out.
    async fn refresh(&self, connection: &Connection) -> Result<(), PeerdError> {
        self.refresher.refresh(connection).await;
        Ok(())
    }
}

/// `value` quoted for an error message: escaped, and cut if long.
fn quote(value: &str) -> String {
    let cut: String = value.chars().take(QUOTE_MAX).collect();
    let more = if cut.len() < value.len() { "..." } else { "" };
    format!("\"{}{more}\"", escape_controls(&cut).replace('"', "\\\""))
}

fn peer_name(value: &str) -> Result<PeerName, PeerdError> {
    value
        .parse()
        .map_err(|e| PeerdError::invalid_args(format!("not a peer name: {} ({e})", quote(value))))
}

fn service_name(value: &str) -> Result<ServiceName, PeerdError> {
    value.parse().map_err(|e| {
        PeerdError::invalid_args(format!("not a service name: {} ({e})", quote(value)))
    })
}

/// peerd: announces this host's addresses to its peers by mail and
/// connects to them. See docs/dbus-api.md.
#[zbus::interface(name = "org.peerd.Peerd1")]
impl<A: ControlApi> Manager<A> {
    /// Sends an announcement now to the named peers, or to every peer with
    /// announce = true when the list is empty; returns once it is queued.
    async fn announce(
        &self,
        peers: Vec<String>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), PeerdError> {
        self.gate.require_full(&header, "Announce").await?;
        let peers = peers
            .iter()
            .map(|p| peer_name(p))
            .collect::<Result<Vec<_>, _>>()?;
        let to = self.run(self.api.announce(peers)).await?;
        debug!(peers = ?to, "Announcement queued");
        self.refresh(connection).await
    }

    /// Checks the mailbox now; returns once it was checked.
    async fn check_mail(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), PeerdError> {
        self.gate.require_full(&header, "CheckMail").await?;
        self.run(self.api.check()).await?;
        self.refresh(connection).await
    }

    /// The caller flow: brings the link up, announces this host to the
    /// peer and waits for it to connect back. Returns once the announcement
    /// is queued; PeerConnected says when the peer is connected.
    async fn call(
        &self,
        peer: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), PeerdError> {
        self.gate.require_full(&header, "Call").await?;
        let peer = peer_name(&peer)?;
        self.run(self.api.call_start(peer)).await?;
        self.refresh(connection).await
    }

    /// Connects to the peer's last announced addresses; returns once the
    /// session is up.
    async fn connect(
        &self,
        peer: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), PeerdError> {
        self.gate.require_full(&header, "Connect").await?;
        let peer = peer_name(&peer)?;
        self.run(self.api.connect(peer)).await?;
        self.refresh(connection).await
    }

    /// Drops the session with the peer.
    async fn disconnect(
        &self,
        peer: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), PeerdError> {
        self.gate.require_full(&header, "Disconnect").await?;
        let peer = peer_name(&peer)?;
        self.run(self.api.disconnect(peer)).await?;
        self.refresh(connection).await
    }

    /// Opens an authenticated stream to the service on the peer. The fd is
    /// one end of a Unix stream socket; the other end is the stream: what
    /// is written to the fd reaches the service, what the service sends
    /// can be read from it, shutdown(SHUT_WR) ends the sending direction.
    #[zbus(out_args("fd"))]
    async fn open_stream(
        &self,
        peer: String,
        service: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<zbus::OwnedFd, PeerdError> {
        self.gate.require_full(&header, "OpenStream").await?;
        let peer = peer_name(&peer)?;
        let service = service_name(&service)?;
        let stream = self
            .run(self.api.open(peer.clone(), service.clone()))
            .await?;
        let (ours, theirs) = socket_pair()
            .map_err(|e| PeerdError::Failed(format!("cannot make a socket for the stream: {e}")))?;
        let stop = self.stop.clone();
        self.streams.spawn(async move {
            splice(ours, stream, stop).await;
            debug!(%peer, %service, "D-Bus stream closed");
        });
        Ok(zbus::OwnedFd::from(std::os::fd::OwnedFd::from(theirs)))
    }

    /// Brings the link up; returns once it is up (or failed).
    async fn link_up(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), PeerdError> {
        self.gate.require_full(&header, "LinkUp").await?;
        self.run(self.api.link_up()).await?;
        self.refresh(connection).await
    }

    /// Hangs up; returns once the link is down.
    async fn link_down(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), PeerdError> {
        self.gate.require_full(&header, "LinkDown").await?;
        self.run(self.api.link_down()).await?;
        self.refresh(connection).await
    }

    /// Adds a peer to the runtime address book (kept across restarts),
    /// with announce = true; key is the first line of the peer's
    /// `peerd pubkey`. Its object exists when the call returns.
    async fn add_peer(
        &self,
        name: String,
        email: String,
        key: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), PeerdError> {
        self.gate.require_full(&header, "AddPeer").await?;
        let name = peer_name(&name)?;
        let email: MailAddress = email.parse().map_err(|e| {
            PeerdError::invalid_args(format!("not a mail address: {} ({e})", quote(&email)))
        })?;
        let key: PublicKey = key.parse().map_err(|e| {
            PeerdError::invalid_args(format!("not a peerd public key: {} ({e})", quote(&key)))
        })?;
        let new = NewPeer {
            name,
            email,
            key,
            announce: true,
            accept_unsigned: false,
        };
        self.run(self.api.peer_add(new)).await?;
        self.refresh(connection).await
    }

    /// Removes a peer of the runtime address book. Its object is gone when
    /// the call returns.
    async fn remove_peer(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), PeerdError> {
        self.gate.require_full(&header, "RemovePeer").await?;
        let name = peer_name(&name)?;
        self.run(self.api.peer_remove(name)).await?;
        self.refresh(connection).await
    }

    /// The link: "down", "dialing", "connecting", "up", "hanging-up" or
    /// "failed".
    #[zbus(property)]
    fn link_state(&self) -> String {
        self.shared.read(|s| s.manager.link_state.clone())
    }

    /// The watched interface (empty when there is none).
    #[zbus(property)]
    fn interface(&self) -> String {
        self.shared.read(|s| s.manager.interface.clone())
    }

    /// The addresses announcements carry now.
    #[zbus(property)]
    fn addresses(&self) -> Vec<String> {
        self.shared.read(|s| s.manager.addresses.clone())
    }

    /// This host's public key, as peers paste it.
    #[zbus(property(emits_changed_signal = "const"))]
    fn public_key(&self) -> String {
        self.shared.read(|s| s.manager.public_key.clone())
    }

    /// The peers' objects.
    #[zbus(property)]
    fn peers(&self) -> Vec<OwnedObjectPath> {
        self.shared.read(|s| s.manager.peers.clone())
    }

    /// Announcements waiting to be sent or acknowledged.
    #[zbus(property)]
    fn outbox_size(&self) -> u32 {
        self.shared.read(|s| s.manager.outbox_size)
    }

    /// When the mailbox was last checked, in seconds since 1970 (0: not
    /// yet).
    #[zbus(property)]
    fn last_mail_check(&self) -> u64 {
        self.shared.read(|s| s.manager.last_mail_check)
    }

    /// The addresses announcements carry changed.
    #[zbus(signal)]
    pub(super) async fn address_changed(
        emitter: &SignalEmitter<'_>,
        addresses: &[String],
    ) -> zbus::Result<()>;

    /// The mail server accepted an announcement to the peer.
    #[zbus(signal)]
    pub(super) async fn announcement_sent(
        emitter: &SignalEmitter<'_>,
        peer: &str,
        addresses: &[String],
    ) -> zbus::Result<()>;

    /// A verified announcement arrived from the peer.
    #[zbus(signal)]
    pub(super) async fn announcement_received(
        emitter: &SignalEmitter<'_>,
        peer: &str,
        addresses: &[String],
    ) -> zbus::Result<()>;

    /// A mail that claimed to be an announcement failed verification;
    /// sender is the peer's name if its key is known, else the mail's
    /// sender address (escaped: never trust it).
    #[zbus(signal)]
    pub(super) async fn announcement_rejected(
        emitter: &SignalEmitter<'_>,
        sender: &str,
        reason: &str,
    ) -> zbus::Result<()>;

    /// A session with the peer is up, at this address.
    #[zbus(signal)]
    pub(super) async fn peer_connected(
        emitter: &SignalEmitter<'_>,
        peer: &str,
        address: &str,
    ) -> zbus::Result<()>;

    /// The session with the peer ended.
    #[zbus(signal)]
    pub(super) async fn peer_disconnected(
        emitter: &SignalEmitter<'_>,
        peer: &str,
        reason: &str,
    ) -> zbus::Result<()>;

    /// The link changed state (as LinkState).
    // Named apart: `link_state_changed` is LinkState's PropertiesChanged.
    #[zbus(signal, name = "LinkStateChanged")]
    pub(super) async fn link_state_changed_signal(
        emitter: &SignalEmitter<'_>,
        state: &str,
    ) -> zbus::Result<()>;
}

/// A connected pair of Unix stream sockets: ours (for tokio) and the one
/// for the caller.
fn socket_pair() -> std::io::Result<(tokio::net::UnixStream, std::os::unix::net::UnixStream)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    Ok((tokio::net::UnixStream::from_std(ours)?, theirs))
}

/// Copies between the caller's socket and the peer stream until both
/// directions are done or peerd stops.
async fn splice(mut socket: tokio::net::UnixStream, mut peer: PeerStream, stop: CancellationToken) {
    tokio::select! {
        biased;
        () = stop.cancelled() => debug!("D-Bus stream closed: peerd is stopping"),
        copied = copy_bidirectional(&mut socket, &mut peer) => match copied {
            Ok((to_peer, from_peer)) => debug!(to_peer, from_peer, "D-Bus stream done"),
            Err(e) => debug!(error = %e, "D-Bus stream ended with an error"),
        },
    }
}
