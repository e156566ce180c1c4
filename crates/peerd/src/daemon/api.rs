//! The control API over the actors' handles: what `peerctl` (and D-Bus)
//! requests do in the running daemon.
//!
//! Reads come from the actors' `watch` channels and the router's
//! map of heard announcements, so `status` and `peers` never wait for a busy actor.
//! Address book edits go to the supervisor loop, which owns the book.
//! Every future here may be dropped at any await (the client went away):
//! what it holds then is a lease or a reply channel, and dropping either
//! is the right way to give up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use peerd_addr::WatcherHandle;
use peerd_config::{Config, IncomingProtocol, LinkDriver as ConfigDriver, PeerConfig};
use peerd_connect::{ConnectError, ConnectorHandle, FailReason, OpenError, PeerState as ConnState};
use peerd_control::{
    AddressInfo, CandidateInfo, ControlError, ErrorKind, Event, InterfaceInfo, KeyInfo, LinkDriver,
    LinkInfo, LinkState as InfoLinkState, MailProtocol, MailboxInfo, NewPeer, OutboxEntryInfo,
    OutboxState as InfoOutboxState, PeerFormat, PeerInfo, PeerSource as InfoSource,
    PeerState as InfoPeerState, SessionInfo, StatusInfo, Timestamp,
};
use peerd_core::{AddressSnapshot, Candidate, CandidateKind, PeerName, PublicKey, ServiceName};
use peerd_link::{Lease, LinkError, LinkHandle, LinkState};
use peerd_mail::{CourierError, CourierHandle};
use peerd_state::{OutboxEntry, OutboxState};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use super::router::Heard;
use super::{BookCommand, Settings};
use crate::address_book::{BookPeer, PeerSource};
use crate::control::{ControlApi, PeerStream};

/// How long `check` waits for the mailbox check to complete.
const CHECK_WAIT: Duration = Duration::from_secs(120);

/// Beyond the connector's own connect timeout, how long `connect` waits
/// for the state to say connected or failed.
const CONNECT_WAIT: Duration = Duration::from_secs(20);

/// How long a D-Bus `Call` keeps the link for the session to come up (as
/// `peerctl call`'s default `--wait`).
const CALL_START_HOLD: Duration = Duration::from_secs(300);

/// How long a D-Bus `Call` may wait for an on-demand link to come up
/// before it answers (D-Bus callers give up after 25 s).
const CALL_START_LINK_WAIT: Duration = Duration::from_secs(20);

/// The daemon behind the control socket.
#[derive(Debug)]
pub struct DaemonApi {
    pub(crate) name: PeerName,
    pub(crate) public_key: PublicKey,
    pub(crate) settings: watch::Receiver<Arc<Settings>>,
    pub(crate) heard: watch::Receiver<BTreeMap<PeerName, Heard>>,
    pub(crate) rejected: watch::Receiver<u64>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) book: mpsc::Sender<BookCommand>,
    pub(crate) watcher: WatcherHandle,
    pub(crate) link: LinkHandle,
    pub(crate) courier: CourierHandle,
    pub(crate) connector: ConnectorHandle,
    /// Ends what outlives a request (the lease of a D-Bus `Call`).
    pub(crate) shutdown: CancellationToken,
}

fn stopping() -> ControlError {
    ControlError::new(ErrorKind::Unavailable, "peerd is stopping")
}

fn failed(e: impl std::fmt::Display) -> ControlError {
    ControlError::new(ErrorKind::Failed, e.to_string())
}

fn courier_error(e: CourierError) -> ControlError {
    match e {
        CourierError::Gone => stopping(),
        CourierError::UnknownPeer(_) => ControlError::new(ErrorKind::UnknownPeer, e.to_string()),
        CourierError::NoKey(_) => ControlError::new(ErrorKind::NoKey, e.to_string()),
        other => failed(other),
    }
}

fn link_error(e: LinkError) -> ControlError {
    match e {
        LinkError::Gone => stopping(),
        LinkError::Timeout { .. } => ControlError::new(ErrorKind::Timeout, e.to_string()),
        // Not managed (external), held down, failed: the link is down.
        other => ControlError::new(ErrorKind::LinkDown, other.to_string()),
    }
}

fn connect_error(e: ConnectError) -> ControlError {
    match e {
        ConnectError::Gone => stopping(),
        ConnectError::UnknownPeer(_) => ControlError::new(ErrorKind::UnknownPeer, e.to_string()),
        ConnectError::NoKey(_) => ControlError::new(ErrorKind::NoKey, e.to_string()),
        ConnectError::NotConnected(_) => ControlError::new(ErrorKind::NotConnected, e.to_string()),
        other => failed(other),
    }
}

fn open_error(e: OpenError) -> ControlError {
    match e {
        OpenError::Gone => stopping(),
        OpenError::UnknownPeer(_) => ControlError::new(ErrorKind::UnknownPeer, e.to_string()),
        OpenError::NoKey(_) => ControlError::new(ErrorKind::NoKey, e.to_string()),
        OpenError::NotConnected(_) => ControlError::new(ErrorKind::NotConnected, e.to_string()),
        OpenError::Timeout(_) => ControlError::new(ErrorKind::Timeout, e.to_string()),
        OpenError::Refused { .. } => ControlError::new(ErrorKind::Refused, e.to_string()),
        other => failed(other),
    }
}

/// `snapshot`'s announceable addresses as candidates on the port we
/// listen on for that family.
pub(crate) fn candidates_of(
    snapshot: &AddressSnapshot,
    listening: &[SocketAddr],
) -> Vec<Candidate> {
    snapshot
        .announceable
        .iter()
        .filter_map(|a| {
            let port = listening
                .iter()
                .find(|l| l.is_ipv4() == a.ip.is_ipv4())
                .or(listening.first())?
                .port();
            Candidate::new(SocketAddr::new(a.ip, port), CandidateKind::Host)
        })
        .collect()
}

/// The link state's name, as the control protocol has it.
pub(crate) fn link_state_info(state: &LinkState) -> InfoLinkState {
    match state {
        LinkState::Down => InfoLinkState::Down,
        LinkState::Dialing => InfoLinkState::Dialing,
        LinkState::Connecting => InfoLinkState::Connecting,
        LinkState::Up { .. } => InfoLinkState::Up,
        LinkState::HangingUp => InfoLinkState::HangingUp,
        LinkState::Failed { .. } => InfoLinkState::Failed,
    }
}

fn link_info(config: &Config, state: &LinkState) -> LinkInfo {
    let driver = match config.link.driver {
        ConfigDriver::External => LinkDriver::External,
        ConfigDriver::Pppd => LinkDriver::Pppd,
        ConfigDriver::Modem => LinkDriver::Modem,
    };
    let (interface, since, reason, retry_at) = match state {
        LinkState::Up { interface, since } => {
            (Some(interface.clone()), Some((*since).into()), None, None)
        },
        LinkState::Failed { reason, retry_at } => (
            None,
            None,
            Some(reason.to_string()),
            retry_at.map(Timestamp::from),
        ),
        _ => (None, None, None, None),
    };
    LinkInfo {
        driver,
        on_demand: config.link.on_demand,
        state: link_state_info(state),
        interface,
        since,
        reason,
        retry_at,
    }
}

fn session_of(peer: &PeerName, state: &ConnState) -> Option<SessionInfo> {
    match state {
        ConnState::Connected { address, since, .. } => Some(SessionInfo {
            peer: peer.clone(),
            address: *address,
            since: (*since).into(),
        }),
        _ => None,
    }
}

fn outbox_info(e: OutboxEntry) -> OutboxEntryInfo {
    OutboxEntryInfo {
        state: match e.state {
            OutboxState::Pending => InfoOutboxState::Pending,
            OutboxState::SendingBackoff => InfoOutboxState::SendingBackoff,
            OutboxState::AwaitingAck => InfoOutboxState::AwaitingAck,
            OutboxState::Acknowledged => InfoOutboxState::Acknowledged,
            OutboxState::Sent => InfoOutboxState::Sent,
            OutboxState::FailedPermanent => InfoOutboxState::FailedPermanent,
        },
        addresses: e.candidates.into_iter().map(CandidateInfo::from).collect(),
        plain: e.plain,
        attempts: e.attempts,
        sends: e.sends,
        next_attempt: e.next_attempt.map(Timestamp::from),
        rate_limited: e.rate_limited,
        last_error: e.last_error,
        sequence: e.last_sequence,
        queued_at: e.created_at.into(),
        peer: e.peer,
    }
}

impl DaemonApi {
    fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.borrow())
    }

    /// The peer, which must be in the book.
    fn peer(&self, name: &PeerName) -> Result<PeerConfig, ControlError> {
        self.settings()
            .book
            .get(name.as_str())
            .map(|p| p.peer.clone())
            .ok_or_else(|| {
                ControlError::new(
                    ErrorKind::UnknownPeer,
                    format!("{name} is not in the address book (add it with `peerctl peer add`)"),
                )
            })
    }

    /// The peer, which must have a key (connections need one).
    fn keyed_peer(&self, name: &PeerName) -> Result<PeerConfig, ControlError> {
        let peer = self.peer(name)?;
        if peer.public_key.is_none() {
            return Err(ControlError::new(
                ErrorKind::NoKey,
                format!("{name}: no key for this peer"),
            ));
        }
        Ok(peer)
    }

    /// Whether requests must hold a lease for the link to be up.
    fn on_demand(&self) -> bool {
        self.settings().config.link.dials_on_demand()
    }

    /// A lease when the link is dialled on demand.
    async fn lease(&self, wait: Duration) -> Result<Option<Lease>, ControlError> {
        if !self.on_demand() {
            return Ok(None);
        }
        self.link
            .acquire_within(wait)
            .await
            .map(Some)
            .map_err(link_error)
    }

    /// A lease for a request that needs the link, waiting as long as the
    /// link manager's own `acquire` does.
    async fn request_lease(&self) -> Result<Option<Lease>, ControlError> {
        if !self.on_demand() {
            return Ok(None);
        }
        self.link.acquire().await.map(Some).map_err(link_error)
    }

    fn candidates(&self) -> Result<Vec<Candidate>, ControlError> {
        let c = candidates_of(&self.watcher.snapshot(), self.connector.listening());
        if c.is_empty() {
            return Err(failed(
                "this host has no address to announce (is the link up? see `peerctl status`)",
            ));
        }
        Ok(c)
    }

    /// Records and sends an announcement of our current addresses to
    /// `peers` (`None`: every `announce = true` peer). An intent the outbox
    /// holds already with the same addresses is sent again now, so the
    /// request always leads to a mail, and never to two.
    async fn announce_now(
        &self,
        peers: Option<Vec<PeerName>>,
    ) -> Result<Vec<PeerName>, ControlError> {
        let candidates = self.candidates()?;
        let before = self.courier.outbox().await.map_err(courier_error)?;
        let covered = self
            .courier
            .announce(peers, candidates.clone())
            .await
            .map_err(courier_error)?;
        let unchanged: Vec<PeerName> = covered
            .iter()
            .filter(|p| {
                before
                    .iter()
                    .any(|e| &e.peer == *p && e.candidates == candidates && !e.plain)
            })
            .cloned()
            .collect();
        if !unchanged.is_empty() {
            self.courier
                .send_now(Some(unchanged))
                .await
                .map_err(courier_error)?;
        }
        Ok(covered)
    }

    fn peer_info(&self, p: &BookPeer, heard: &BTreeMap<PeerName, Heard>) -> PeerInfo {
        let name = &p.peer.name;
        let state = self.connector.state(name);
        let h = heard.get(name);
        PeerInfo {
            name: name.clone(),
            email: p.peer.email.clone(),
            format: match p.peer.format {
                peerd_config::PeerFormat::Sealed => PeerFormat::Sealed,
                peerd_config::PeerFormat::Plain => PeerFormat::Plain,
            },
            key: p.peer.public_key,
            fingerprint: p.peer.public_key.map(|k| k.fingerprint().to_string()),
            source: match p.source {
                PeerSource::ConfigFile => InfoSource::Config,
                PeerSource::Runtime => InfoSource::Runtime,
            },
            announce: p.peer.announce,
            auto_connect: p.peer.auto_connect,
            accept_unsigned: p.peer.accept_unsigned,
            addresses: h
                .map(|h| {
                    h.candidates
                        .iter()
                        .cloned()
                        .map(CandidateInfo::from)
                        .collect()
                })
                .unwrap_or_default(),
            announced_at: h.map(|h| h.received_at.into()),
            state: match &state {
                ConnState::Idle => InfoPeerState::Idle,
                ConnState::Connecting { .. } => InfoPeerState::Connecting,
                ConnState::Connected { .. } => InfoPeerState::Connected,
                ConnState::Failed { .. } => InfoPeerState::Failed,
            },
            session: session_of(name, &state),
            last_error: match &state {
                ConnState::Failed { reason, .. } => Some(reason.to_string()),
                _ => None,
            },
        }
    }

    /// The start of the caller flow, once the link is up: if `peer`
    /// announced first, dial it while our announcement travels; then
    /// announce this host to it.
    async fn reach_out(&self, peer: &PeerName) -> Result<(), ControlError> {
        let heard = self.heard.borrow().get(peer).cloned();
        if let Some(h) = heard {
            self.connector
                .connect(peer, h.candidates, h.sequence)
                .await
                .map_err(connect_error)?;
        }
        self.announce_now(Some(vec![peer.clone()])).await?;
        Ok(())
    }

    /// Waits until `peer` is connected, until `deadline`.
    async fn wait_session(
        &self,
        peer: &PeerName,
        deadline: Instant,
    ) -> Result<SessionInfo, ControlError> {
        let mut states = self.connector.watch();
        let seen = timeout_at(
            deadline,
            states.wait_for(|m| matches!(m.get(peer), Some(ConnState::Connected { .. }))),
        )
        .await;
        match seen {
            Ok(Ok(m)) => m
                .get(peer)
                .and_then(|s| session_of(peer, s))
                .ok_or_else(|| failed("the session ended at once")),
            Ok(Err(_)) => Err(stopping()),
            Err(_) => {
                let state = self.connector.state(peer);
                let why = match state {
                    ConnState::Failed { reason, .. } => format!(" (last attempt: {reason})"),
                    _ => String::new(),
                };
                Err(ControlError::new(
                    ErrorKind::Timeout,
                    format!("{peer} did not connect in time{why}"),
                ))
            },
        }
    }

    /// Dials `peer`'s last announced addresses.
    async fn dial(&self, peer: &PeerName) -> Result<SessionInfo, ControlError> {
        if let Some(s) = session_of(peer, &self.connector.state(peer)) {
            return Ok(s);
        }
        let heard = self.heard.borrow().get(peer).cloned();
        let Some(heard) = heard else {
            return Err(failed(format!(
                "{peer}: no address to connect to (no announcement received yet; try `peerctl call {peer}`)"
            )));
        };
        self.connector
            .connect(peer, heard.candidates, heard.sequence)
            .await
            .map_err(connect_error)?;
        let wait = peerd_connect::Tuning::default().connect_timeout + CONNECT_WAIT;
        match self.connector.wait_connected(peer, wait).await {
            Ok(_) => session_of(peer, &self.connector.state(peer))
                .ok_or_else(|| failed("the session ended at once")),
            Err(ConnectError::Failed { reason, .. }) => {
                let kind = match reason {
                    FailReason::RefusedByPeer | FailReason::WrongKey { .. } => ErrorKind::Refused,
                    FailReason::Timeout { .. } => ErrorKind::Timeout,
                    _ => ErrorKind::Failed,
                };
                Err(ControlError::new(
                    kind,
                    format!("cannot connect to {peer}: {reason}"),
                ))
            },
            Err(e) => Err(connect_error(e)),
        }
    }

    async fn book_request(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), ControlError>>) -> BookCommand,
    ) -> Result<(), ControlError> {
        let (reply, rx) = oneshot::channel();
        self.book.send(make(reply)).await.map_err(|_| stopping())?;
        rx.await.map_err(|_| stopping())?
    }
}

impl ControlApi for DaemonApi {
    async fn status(&self) -> Result<StatusInfo, ControlError> {
        let settings = self.settings();
        let config = &settings.config;
        let snapshot = self.watcher.snapshot();
        let courier = self.courier.state();
        let interface = InterfaceInfo {
            configured: config.link.interface.to_string(),
            name: snapshot.interface.clone(),
            up: snapshot.up,
            addresses: snapshot
                .addresses
                .iter()
                .map(|a| AddressInfo {
                    ip: a.ip,
                    prefix_len: a.prefix_len,
                    class: a.class,
                    announced: snapshot.announceable.iter().any(|b| b.ip == a.ip),
                    temporary: a.flags.temporary,
                    deprecated: a.flags.deprecated,
                    tentative: a.flags.tentative,
                })
                .collect(),
        };
        let protocol = match config.mail.incoming.protocol {
            IncomingProtocol::Imap => MailProtocol::Imap,
            IncomingProtocol::Pop3 => MailProtocol::Pop3,
        };
        let next_check = if self.on_demand() {
            // the link manager dials for the next check
            self.link.next_check().map(Timestamp::from)
        } else {
            match (protocol, courier.last_check) {
                (MailProtocol::Pop3, Some(last)) => {
                    Some((last + config.mail.incoming.poll_interval).into())
                },
                _ => None,
            }
        };
        let mailbox = MailboxInfo {
            protocol,
            connected: courier.connected,
            last_check: courier.last_check.map(Timestamp::from),
            next_check,
            pending: u32::try_from(courier.pending).unwrap_or(u32::MAX),
            rejected: *self.rejected.borrow(),
            last_error: courier.mailbox_error.clone(),
        };
        let connected_peers = self
            .connector
            .states()
            .iter()
            .filter_map(|(p, s)| session_of(p, s))
            .collect();
        Ok(StatusInfo {
            name: self.name.to_string(),
            fingerprint: self.public_key.fingerprint().to_string(),
            link: link_info(config, &self.link.state()),
            interface,
            mailbox,
            outbox_size: u32::try_from(courier.outbox_size).unwrap_or(u32::MAX),
            connected_peers,
        })
    }

    async fn peers(&self) -> Result<Vec<PeerInfo>, ControlError> {
        let settings = self.settings();
        let heard = self.heard.borrow().clone();
        Ok(settings
            .book
            .peers()
            .iter()
            .map(|p| self.peer_info(p, &heard))
            .collect())
    }

    async fn peer_add(&self, peer: NewPeer) -> Result<PeerInfo, ControlError> {
        let name = peer.name.clone();
        self.book_request(|reply| BookCommand::Add {
            peer: Box::new(peer),
            reply,
        })
        .await?;
        let settings = self.settings();
        let heard = self.heard.borrow().clone();
        settings
            .book
            .get(name.as_str())
            .map(|p| self.peer_info(p, &heard))
            .ok_or_else(|| failed("the peer was added but is not in the address book"))
    }

    async fn peer_remove(&self, name: PeerName) -> Result<(), ControlError> {
        self.book_request(|reply| BookCommand::Remove { name, reply })
            .await
    }

    async fn outbox(&self) -> Result<Vec<OutboxEntryInfo>, ControlError> {
        let entries = self.courier.outbox().await.map_err(courier_error)?;
        Ok(entries.into_iter().map(outbox_info).collect())
    }

    async fn announce(&self, peers: Vec<PeerName>) -> Result<Vec<PeerName>, ControlError> {
        for p in &peers {
            self.peer(p)?;
        }
        let _lease = self.request_lease().await?;
        let peers = (!peers.is_empty()).then_some(peers);
        self.announce_now(peers).await
    }

    async fn check(&self) -> Result<(), ControlError> {
        let _lease = self.request_lease().await?;
        let mut state = self.courier.watch();
        let before = state.borrow_and_update().clone();
        self.courier.check_now();
        let seen = tokio::time::timeout(
            CHECK_WAIT,
            state.wait_for(|s| {
                s.last_check != before.last_check
                    || (s.mailbox_error.is_some() && s.mailbox_error != before.mailbox_error)
            }),
        )
        .await;
        match seen {
            Ok(Ok(s)) if s.last_check != before.last_check => Ok(()),
            Ok(Ok(s)) => Err(failed(format!(
                "the mailbox check failed: {}",
                s.mailbox_error.clone().unwrap_or_default()
            ))),
            Ok(Err(_)) => Err(stopping()),
            Err(_) => Err(ControlError::new(
                ErrorKind::Timeout,
                format!(
                    "the mailbox was not checked within {}s",
                    CHECK_WAIT.as_secs()
                ),
            )),
        }
    }

    async fn call(&self, peer: PeerName, wait: Duration) -> Result<SessionInfo, ControlError> {
        self.keyed_peer(&peer)?;
        let deadline = Instant::now() + wait;
        if let Some(s) = session_of(&peer, &self.connector.state(&peer)) {
            return Ok(s);
        }
        let _lease = self.lease(wait).await?;
        self.reach_out(&peer).await?;
        // The lease is held until the session is up; the router's session
        // lease takes over from there.
        self.wait_session(&peer, deadline).await
    }

    async fn call_start(&self, peer: PeerName) -> Result<(), ControlError> {
        self.keyed_peer(&peer)?;
        if session_of(&peer, &self.connector.state(&peer)).is_some() {
            return Ok(());
        }
        let lease = self.lease(CALL_START_LINK_WAIT).await?;
        self.reach_out(&peer).await?;
        if let Some(lease) = lease {
            // The rest of the flow is the peer's answer: the link is kept
            // for it as `call` would, and the router's session lease takes
            // over once connected.
            let mut states = self.connector.watch();
            let shutdown = self.shutdown.clone();
            tokio::spawn(async move {
                let connected =
                    states.wait_for(|m| matches!(m.get(&peer), Some(ConnState::Connected { .. })));
                tokio::select! {
                    () = shutdown.cancelled() => {},
                    _ = tokio::time::timeout(CALL_START_HOLD, connected) => {},
                }
                drop(lease);
            });
        }
        Ok(())
    }

    async fn connect(&self, peer: PeerName) -> Result<SessionInfo, ControlError> {
        self.keyed_peer(&peer)?;
        let _lease = self.request_lease().await?;
        self.dial(&peer).await
    }

    async fn disconnect(&self, peer: PeerName) -> Result<(), ControlError> {
        self.peer(&peer)?;
        match self.connector.disconnect(&peer).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ControlError::new(
                ErrorKind::NotConnected,
                format!("{peer} is not connected"),
            )),
            Err(e) => Err(connect_error(e)),
        }
    }

    async fn open(&self, peer: PeerName, service: ServiceName) -> Result<PeerStream, ControlError> {
        self.keyed_peer(&peer)?;
        if session_of(&peer, &self.connector.state(&peer)).is_none() {
            // Like ssh: `open` reaches the peer if it can be reached.
            let _lease = self.request_lease().await?;
            self.dial(&peer).await?;
        }
        let stream = self
            .connector
            .open(&peer, Some(service))
            .await
            .map_err(open_error)?;
        Ok(Box::new(stream))
    }

    async fn link_up(&self) -> Result<LinkInfo, ControlError> {
        self.link.up().await.map_err(link_error)?;
        self.link_status().await
    }

    async fn link_down(&self) -> Result<LinkInfo, ControlError> {
        self.link.down().await.map_err(link_error)?;
        self.link_status().await
    }

    async fn link_status(&self) -> Result<LinkInfo, ControlError> {
        Ok(link_info(&self.settings().config, &self.link.state()))
    }

    fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn key(&self) -> KeyInfo {
        KeyInfo::new(self.name.to_string(), self.public_key)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use peerd_core::{AddressClass, AddressFlags, InterfaceAddress};

    use super::*;

    fn address(ip: &str) -> InterfaceAddress {
        let ip: IpAddr = ip.parse().unwrap();
        InterfaceAddress {
            ip,
            prefix_len: if ip.is_ipv4() { 24 } else { 64 },
            class: AddressClass::of(ip),
            flags: AddressFlags::default(),
        }
    }

    #[test]
    fn candidates_take_the_listening_port_of_their_family() {
        let snapshot = AddressSnapshot {
            interface: Some("ppp0".into()),
            up: true,
            addresses: vec![address("203.0.113.7"), address("2001:db8::7")],
            announceable: vec![address("2001:db8::7"), address("203.0.113.7")],
        };
        let listening: Vec<SocketAddr> = vec![
            "0.0.0.0:7447".parse().unwrap(),
            "[::]:7448".parse().unwrap(),
        ];
        let c = candidates_of(&snapshot, &listening);
        let addrs: Vec<String> = c.iter().map(|c| c.addr.to_string()).collect();
        assert_eq!(addrs, ["[2001:db8::7]:7448", "203.0.113.7:7447"]);
        assert!(c.iter().all(|c| c.kind == CandidateKind::Host));
    }

    #[test]
    fn candidates_use_the_one_port_when_only_one_family_listens() {
        let snapshot = AddressSnapshot {
            announceable: vec![address("2001:db8::7")],
            ..AddressSnapshot::default()
        };
        let listening: Vec<SocketAddr> = vec!["0.0.0.0:7447".parse().unwrap()];
        let c = candidates_of(&snapshot, &listening);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].addr.to_string(), "[2001:db8::7]:7447");
    }

    #[test]
    fn no_candidates_without_an_address_or_a_socket() {
        let empty = AddressSnapshot::default();
        let listening: Vec<SocketAddr> = vec!["0.0.0.0:7447".parse().unwrap()];
        assert!(candidates_of(&empty, &listening).is_empty());
        let snapshot = AddressSnapshot {
            announceable: vec![address("203.0.113.7")],
            ..AddressSnapshot::default()
        };
        assert!(candidates_of(&snapshot, &[]).is_empty());
    }

    #[test]
    fn errors_map_to_the_kinds_peerctl_turns_into_exit_codes() {
        let peer: PeerName = "hitoshi".parse().unwrap();
        assert_eq!(
            courier_error(CourierError::Gone).kind,
            ErrorKind::Unavailable
        );
        assert_eq!(
            connect_error(ConnectError::NotConnected(peer.clone())).kind,
            ErrorKind::NotConnected
        );
        assert_eq!(
            open_error(OpenError::NoKey(peer.clone())).kind,
            ErrorKind::NoKey
        );
        assert_eq!(open_error(OpenError::Timeout(10)).kind, ErrorKind::Timeout);
        assert_eq!(link_error(LinkError::HeldDown).kind, ErrorKind::LinkDown);
        assert_eq!(link_error(LinkError::NotManaged).kind, ErrorKind::LinkDown);
        assert_eq!(link_error(LinkError::Gone).kind, ErrorKind::Unavailable);
        assert_eq!(
            connect_error(ConnectError::UnknownPeer("x".into())).kind,
            ErrorKind::UnknownPeer
        );
    }
}
