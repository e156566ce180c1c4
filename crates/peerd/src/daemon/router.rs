//! The event router: every actor's events in; the next actor's requests,
//! control-socket events and hooks out.
//!
//! | event | what follows |
//! |---|---|
//! | watcher `AddressChanged` | connector: the dialling sockets move (migration); courier: the mailbox session and a mail in flight start again from the new address, and an announcement goes to every `announce = true` peer (`announce.on_change`) |
//! | courier `AnnouncementReceived` | remembered as the peer's last announced addresses; connector: dial them when the peer has `auto_connect` (the hello carries the sequence as our ack) |
//! | courier `HintReceived` (plain mail, `accept_unsigned`) | connector: dial the address when the peer has `auto_connect`, at most once a minute per peer, never replacing a session; not remembered |
//! | connector `Acknowledged` | courier: that announcement arrived, stop re-sending it |
//! | link `CheckDue` | courier: check the mailbox now; when the check is over, link: `check_done` |
//! | connector `Connected` | on an on-demand link, a lease held while the session lasts |
//! | start-up, once we have an address | connector: dial each `auto_connect` peer at its last announced addresses (not on an on-demand link) |
//!
//! and each of them, with the link's state changes and rejected mail, as a
//! control event and a hook.
//!
//! Requests that may wait (an announcement is recorded by a courier that
//! may be busy sending) run as side tasks, so the router itself never
//! blocks on an actor: a slow mail server cannot delay a connection.
//!
//! # Leases on an on-demand link
//! The link manager dials while somebody holds a lease. The router takes
//! one for each connection attempt that follows a received announcement
//! (taken before the mail check is declared done, so the check's hang-up
//! does not cut the dial), and one for each session while it is up; when
//! the last session ends the link hangs up after `idle_hangup`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use peerd_addr::{AddressEvent, WatcherHandle};
use peerd_connect::{ConnectEvent, ConnectorHandle, PeerState as ConnState};
use peerd_control::{CandidateInfo, Event, EventKind, LinkState as InfoLinkState};
use peerd_core::{Candidate, CandidateKind, PeerName};
use peerd_link::{Lease, LinkEvent, LinkHandle, LinkState};
use peerd_mail::{CourierEvent, CourierHandle, CourierState};
use peerd_state::{LastAnnounced, Store};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::api::{candidates_of, link_state_info};
use super::{DaemonError, Settings};
use crate::hooks::{EscapedSender, HookEvent, HooksHandle, InterfaceName, ReasonCode};

/// How long a lease for a connection attempt may take to be granted
/// (the link is up then: it is taken during a mail check or a session).
const LEASE_WAIT: Duration = Duration::from_secs(5);

/// How long a connection attempt's lease is held at most (the connector
/// gives up on an attempt after 10 s); once connected, the session's own
/// lease takes over.
const DIAL_LEASE_HOLD: Duration = Duration::from_secs(15);

/// At most one dial per peer from unsigned address hints this often.
const HINT_DIAL_INTERVAL: Duration = Duration::from_secs(60);

/// What a dial from a hint acknowledges: nothing (sequences start at 1),
/// and as no newer sequence it never replaces a session.
const HINT_SEQUENCE: u64 = 0;

/// A peer's last verified announcement (persisted, so it outlives a
/// restart).
pub type Heard = LastAnnounced;

/// A mail check the link manager asked for.
#[derive(Debug)]
struct PendingCheck {
    number: u64,
    last_check: Option<SystemTime>,
    mailbox_error: Option<String>,
}

/// The router's state; see the module docs.
pub struct Router {
    settings: watch::Receiver<Arc<Settings>>,
    watcher: WatcherHandle,
    link: LinkHandle,
    courier: CourierHandle,
    connector: ConnectorHandle,
    hooks: HooksHandle,
    store: Arc<Store>,
    events: broadcast::Sender<Event>,
    heard: watch::Sender<BTreeMap<PeerName, Heard>>,
    rejected: watch::Sender<u64>,
    /// Receivers subscribed at construction, so nothing sent between
    /// start-up and the first poll is lost.
    address_events: broadcast::Receiver<AddressEvent>,
    courier_events: broadcast::Receiver<CourierEvent>,
    connect_events: broadcast::Receiver<ConnectEvent>,
    link_events: broadcast::Receiver<LinkEvent>,
    link_state: watch::Receiver<LinkState>,
    courier_state: watch::Receiver<CourierState>,
    /// Side tasks: requests that may wait, and lease holders.
    side: JoinSet<()>,
    /// The task holding each connected peer's session lease.
    session_leases: HashMap<PeerName, AbortHandle>,
    check: Option<PendingCheck>,
    /// The dial after a restart waits for an address of our own.
    redial_pending: bool,
    /// Dials from unsigned hints, limited per peer.
    hint_dials: HintDials,
}

impl Router {
    /// A router over these actors (subscribed to their events now), with
    /// the peers' last announcements read from `store`.
    #[allow(clippy::too_many_arguments, reason = "one handle per actor")]
    pub fn new(
        settings: watch::Receiver<Arc<Settings>>,
        watcher: WatcherHandle,
        link: LinkHandle,
        courier: CourierHandle,
        connector: ConnectorHandle,
        hooks: HooksHandle,
        store: Arc<Store>,
        events: broadcast::Sender<Event>,
    ) -> Self {
        let heard = store.announced().unwrap_or_else(|e| {
            warn!("cannot read the peers' last announcements: {e}");
            BTreeMap::new()
        });
        Self {
            address_events: watcher.events(),
            courier_events: courier.events(),
            connect_events: connector.events(),
            link_events: link.events(),
            link_state: link.watch(),
            courier_state: courier.watch(),
            settings,
            watcher,
            link,
            courier,
            connector,
            hooks,
            store,
            events,
            heard: watch::channel(heard).0,
            rejected: watch::channel(0).0,
            side: JoinSet::new(),
            session_leases: HashMap::new(),
            check: None,
            redial_pending: true,
            hint_dials: HintDials::default(),
        }
    }

    /// The peers' last announcements, as the router learns them.
    pub fn heard(&self) -> watch::Receiver<BTreeMap<PeerName, Heard>> {
        self.heard.subscribe()
    }

    /// How many announcements were rejected since start.
    pub fn rejected(&self) -> watch::Receiver<u64> {
        self.rejected.subscribe()
    }

    fn config(&self) -> Arc<peerd_config::Config> {
        Arc::clone(&self.settings.borrow().config)
    }

    /// Whether the link is dialled on demand (leases matter).
    fn on_demand(&self) -> bool {
        self.config().link.dials_on_demand()
    }

    /// Routes events until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), DaemonError> {
        // Our addresses are known once the watcher has read the kernel.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.watcher.ready()).await;
        let candidates = self.our_candidates();
        if !candidates.is_empty() {
            self.redial_at_start();
        }
        self.announce_at_start(candidates);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                e = self.address_events.recv() => match e {
                    Ok(e) => self.on_address(e),
                    Err(RecvError::Lagged(n)) => self.lagged("address watcher", n),
                    Err(RecvError::Closed) => break,
                },
                e = self.courier_events.recv() => match e {
                    Ok(e) => self.on_courier(e).await,
                    Err(RecvError::Lagged(n)) => self.lagged("mail courier", n),
                    Err(RecvError::Closed) => break,
                },
                e = self.connect_events.recv() => match e {
                    Ok(e) => self.on_connect(e),
                    Err(RecvError::Lagged(n)) => self.lagged("connector", n),
                    Err(RecvError::Closed) => break,
                },
                e = self.link_events.recv() => match e {
                    Ok(e) => self.on_link_event(e),
                    Err(RecvError::Lagged(n)) => self.lagged("link manager", n),
                    Err(RecvError::Closed) => break,
                },
                changed = self.link_state.changed() => {
                    if changed.is_err() { break; }
                    self.on_link_state();
                },
                changed = self.courier_state.changed() => {
                    if changed.is_err() { break; }
                    self.on_courier_state().await;
                },
                Some(_) = self.side.join_next(), if !self.side.is_empty() => {},
            }
        }
        // Dropping the side tasks releases every lease.
        self.side.shutdown().await;
        Ok(())
    }

    fn lagged(&self, source: &str, missed: u64) {
        warn!(missed, "the event router fell behind the {source}");
        self.emit(EventKind::Missed { count: missed });
    }

    fn emit(&self, kind: EventKind) {
        // Nobody listening is fine.
        let _ = self.events.send(Event::now(kind));
    }

    fn hook(&self, event: HookEvent) {
        // A full queue or a stopped runner is logged by the runner's handle.
        let _ = self.hooks.notify(event);
    }

    /// Our current addresses, as candidates on the listening port.
    fn our_candidates(&self) -> Vec<Candidate> {
        candidates_of(&self.watcher.snapshot(), self.connector.listening())
    }

    /// At start, the current addresses are announced (when `on_change`):
    /// a restart after an address change that happened while peerd was
    /// down must not leave the peers with the old one. Addresses the
    /// outbox holds already are not sent again.
    fn announce_at_start(&mut self, candidates: Vec<Candidate>) {
        if !self.config().announce.on_change {
            return;
        }
        if candidates.is_empty() {
            debug!("no announceable address at start");
            return;
        }
        self.spawn_announce(candidates);
    }

    /// After a restart the sessions are gone, and a peer whose address did
    /// not change sends no announcement to bring them back: each
    /// `auto_connect` peer is dialled at the addresses of its last
    /// announcement (kept in the state database), once, as soon as we
    /// have an address of our own. The hello carries that announcement's
    /// sequence again, which the peer's outbox already has as
    /// acknowledged. Not on an on-demand link: that would dial the
    /// metered line for a peer that may be long gone; there the next
    /// announcement, `peerctl connect` or `call` does it.
    fn redial_at_start(&mut self) {
        self.redial_pending = false;
        if self.on_demand() {
            return;
        }
        let heard = self.heard.borrow().clone();
        for (peer, last) in heard {
            if !self.auto_connects(&peer) {
                continue;
            }
            info!(%peer, sequence = last.sequence, "dialling the peer's last announced addresses after the start");
            let connector = self.connector.clone();
            self.side.spawn(async move {
                if let Err(e) = connector
                    .connect(&peer, last.candidates, last.sequence)
                    .await
                {
                    warn!(%peer, "cannot connect: {e}");
                }
            });
        }
    }

    /// Whether `peer` is dialled when its announcement arrives.
    fn auto_connects(&self, peer: &PeerName) -> bool {
        self.config()
            .peers
            .iter()
            .find(|p| &p.name == peer)
            .is_some_and(|p| p.auto_connect && p.public_key.is_some())
    }

    fn spawn_announce(&mut self, candidates: Vec<Candidate>) {
        let courier = self.courier.clone();
        self.side.spawn(async move {
            match courier.announce(None, candidates).await {
                Ok(peers) if peers.is_empty() => debug!("no peer to announce to"),
                Ok(peers) => debug!(?peers, "announcement queued"),
                Err(e) => warn!("cannot queue the announcement: {e}"),
            }
        });
    }

    fn on_address(&mut self, event: AddressEvent) {
        let AddressEvent::AddressChanged {
            interface,
            addresses,
        } = event
        else {
            debug!(?event, "address watcher");
            return;
        };
        let ips: Vec<_> = addresses.iter().map(|a| a.ip).collect();
        info!(interface = interface.as_deref().unwrap_or("-"), addresses = ?ips, "address changed");
        self.emit(EventKind::AddressChanged {
            interface: interface.clone(),
            addresses: ips.clone(),
        });
        self.hook(HookEvent::AddressChanged {
            interface: interface.as_deref().map(InterfaceName::new),
            addresses: ips,
        });
        // Before the announcement is queued: the courier drops connections
        // made from the old address, then sends from the new one.
        self.courier.local_addresses_changed();
        let connector = self.connector.clone();
        self.side.spawn(async move {
            if let Err(e) = connector.local_addresses_changed().await {
                warn!("connector: {e}");
            }
        });
        let candidates = self.our_candidates();
        if self.redial_pending && !candidates.is_empty() {
            self.redial_at_start();
        }
        if self.config().announce.on_change {
            if candidates.is_empty() {
                info!("no announceable address: nothing to announce");
            } else {
                self.spawn_announce(candidates);
            }
        }
    }

    async fn on_courier(&mut self, event: CourierEvent) {
        match event {
            CourierEvent::AnnouncementSent {
                peer,
                candidates,
                sequence,
            } => {
                self.emit(EventKind::AnnouncementSent {
                    peer: peer.clone(),
                    addresses: infos(&candidates),
                    sequence,
                });
                self.hook(HookEvent::AnnouncementSent {
                    peer,
                    addresses: candidates.iter().map(|c| c.addr).collect(),
                    sequence,
                });
            },
            CourierEvent::SendFailed {
                peer,
                error,
                permanent,
            } => self.emit(EventKind::SendFailed {
                peer,
                error,
                permanent,
            }),
            CourierEvent::AnnouncementReceived {
                peer,
                candidates,
                sequence,
            } => self.on_announcement(peer, candidates, sequence).await,
            CourierEvent::AckReceived { peer, sequence } => {
                debug!(%peer, sequence, "acknowledged by mail");
            },
            CourierEvent::HintReceived { peer, ip, port } => self.on_hint(peer, ip, port).await,
            CourierEvent::AnnouncementRejected { peer, from, reason } => {
                self.rejected.send_modify(|n| *n += 1);
                // The name is ours (found by the sealing key); the From
                // address is only what the mail claims.
                let sender = peer
                    .as_ref()
                    .map(ToString::to_string)
                    .or_else(|| from.clone())
                    .unwrap_or_else(|| "unknown".to_owned());
                self.emit(EventKind::AnnouncementRejected {
                    sender,
                    reason: reason.code().to_owned(),
                });
                self.hook(HookEvent::AnnouncementRejected {
                    peer,
                    sender: from.as_deref().map(EscapedSender::from_escaped),
                    reason: ReasonCode::from(&reason),
                });
            },
            CourierEvent::MailboxError { error } => self.emit(EventKind::MailboxError { error }),
        }
    }

    async fn on_announcement(&mut self, peer: PeerName, candidates: Vec<Candidate>, sequence: u64) {
        let last = LastAnnounced {
            candidates: candidates.clone(),
            sequence,
            received_at: SystemTime::now(),
        };
        if let Err(e) = self.store.record_announced(&peer, &last) {
            warn!(%peer, "cannot keep the announcement for after a restart: {e}");
        }
        self.heard.send_modify(|h| {
            h.insert(peer.clone(), last);
        });
        self.emit(EventKind::AnnouncementReceived {
            peer: peer.clone(),
            addresses: infos(&candidates),
            sequence,
        });
        self.hook(HookEvent::AnnouncementReceived {
            peer: peer.clone(),
            addresses: candidates.iter().map(|c| c.addr).collect(),
            sequence,
        });
        if !self.auto_connects(&peer) {
            debug!(%peer, "announcement received; auto_connect is off");
            return;
        }
        self.dial(peer, candidates, sequence).await;
    }

    /// An address in a plain mail from an `accept_unsigned` peer (the
    /// spoofable original design). It is dialled like an announcement
    /// with three limits: the connection is still authenticated by the
    /// peer's key (a forged hint costs a failed handshake, nothing else);
    /// at most one dial per peer per [`HINT_DIAL_INTERVAL`]; and a hint
    /// never overrides a sealed announcement: it is not remembered as
    /// the peer's addresses, and it dials with sequence 0, which the
    /// connector never lets replace a session or a dial under way.
    async fn on_hint(&mut self, peer: PeerName, ip: IpAddr, port: Option<u16>) {
        if !self.auto_connects(&peer) {
            info!(%peer, %ip, ?port, "unsigned address hint received; auto_connect is off");
            return;
        }
        // The port the mail named, else the one of the peer's last sealed
        // announcement, else the default.
        let port = port
            .or_else(|| {
                self.heard
                    .borrow()
                    .get(&peer)
                    .and_then(|h| h.candidates.first())
                    .map(|c| c.addr.port())
            })
            .unwrap_or(peerd_config::DEFAULT_PORT);
        let Some(candidate) = Candidate::new(SocketAddr::new(ip, port), CandidateKind::Host) else {
            info!(%peer, %ip, "unsigned address hint not dialled: not a routable address");
            return;
        };
        if !self.hint_dials.allow(&peer, Instant::now()) {
            info!(%peer, %ip, "unsigned address hint not dialled: one dial per {HINT_DIAL_INTERVAL:?}");
            return;
        }
        info!(%peer, address = %candidate.addr, "dialling an unsigned address hint");
        self.dial(peer, vec![candidate], HINT_SEQUENCE).await;
    }

    /// Dials `peer` at `candidates`, the hello acknowledging `sequence`.
    async fn dial(&mut self, peer: PeerName, candidates: Vec<Candidate>, sequence: u64) {
        // Taken here, in order, so that a mail check is not declared done
        // (and the link hung up) before the dial holds the link.
        let lease = if self.on_demand() {
            match self.link.acquire_within(LEASE_WAIT).await {
                Ok(lease) => Some(lease),
                Err(e) => {
                    warn!(%peer, "cannot hold the link for the connection: {e}");
                    None
                },
            }
        } else {
            None
        };
        let connector = self.connector.clone();
        let hold = DIAL_LEASE_HOLD;
        self.side.spawn(async move {
            if let Err(e) = connector.connect(&peer, candidates, sequence).await {
                warn!(%peer, "cannot connect: {e}");
                return;
            }
            if lease.is_some() {
                // Keep the link until the attempt ends; the session's own
                // lease takes over once connected.
                let _ = connector.wait_connected(&peer, hold).await;
                drop(lease);
            }
        });
    }

    fn on_connect(&mut self, event: ConnectEvent) {
        match event {
            ConnectEvent::Connected {
                peer,
                address,
                direction,
                ..
            } => {
                info!(%peer, %address, %direction, "peer connected");
                self.emit(EventKind::PeerConnected {
                    peer: peer.clone(),
                    address,
                });
                self.hook(HookEvent::PeerConnected {
                    peer: peer.clone(),
                    address,
                });
                if self.on_demand() {
                    self.hold_session(peer);
                }
            },
            ConnectEvent::Disconnected { peer, reason } => {
                info!(%peer, %reason, "peer disconnected");
                self.emit(EventKind::PeerDisconnected {
                    peer: peer.clone(),
                    reason: reason.to_string(),
                });
                self.hook(HookEvent::PeerDisconnected {
                    peer,
                    reason: ReasonCode::new(reason.code()).unwrap_or(ReasonCode::UNKNOWN),
                });
            },
            ConnectEvent::Failed { peer, reason } => {
                info!(%peer, %reason, "connecting failed");
                self.emit(EventKind::PeerDisconnected {
                    peer: peer.clone(),
                    reason: reason.to_string(),
                });
            },
            ConnectEvent::Refused { remote, reason, .. } => {
                debug!(%remote, %reason, "connection refused");
            },
            ConnectEvent::Acknowledged { peer, sequence } => {
                let courier = self.courier.clone();
                self.side.spawn(async move {
                    match courier.acknowledged(peer.clone(), sequence).await {
                        Ok(true) => {
                            info!(%peer, sequence, "announcement acknowledged by the connection");
                        },
                        Ok(false) => debug!(%peer, sequence, "acknowledgement of nothing pending"),
                        Err(e) => warn!(%peer, "cannot record the acknowledgement: {e}"),
                    }
                });
            },
            other => debug!(?other, "connector"),
        }
    }

    /// Holds a lease while `peer`'s session is up (on-demand links).
    fn hold_session(&mut self, peer: PeerName) {
        if self
            .session_leases
            .get(&peer)
            .is_some_and(|h| !h.is_finished())
        {
            return;
        }
        let link = self.link.clone();
        let mut states = self.connector.watch();
        let name = peer.clone();
        let handle = self.side.spawn(async move {
            let lease: Lease = match link.acquire_within(LEASE_WAIT).await {
                Ok(lease) => lease,
                Err(e) => {
                    warn!(peer = %name, "cannot hold the link for the session: {e}");
                    return;
                },
            };
            let _ = states
                .wait_for(|m| !matches!(m.get(&name), Some(ConnState::Connected { .. })))
                .await;
            debug!(peer = %name, "session over: its link lease is released");
            drop(lease);
        });
        self.session_leases.insert(peer, handle);
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::CheckDue { check } => {
                let state = self.courier.state();
                info!(check, "link up for the mail check");
                self.check = Some(PendingCheck {
                    number: check,
                    last_check: state.last_check,
                    mailbox_error: state.mailbox_error,
                });
                self.courier.check_now();
            },
            LinkEvent::CheckMissed { check, reason } => {
                warn!(check, %reason, "mail check missed: the link did not come up");
            },
            other => debug!(?other, "link"),
        }
    }

    fn on_link_state(&mut self) {
        let state = self.link_state.borrow_and_update().clone();
        let info = link_state_info(&state);
        let (interface, reason) = match &state {
            LinkState::Up { interface, .. } => (Some(interface.clone()), None),
            LinkState::Failed { reason, .. } => (None, Some(reason.to_string())),
            _ => (None, None),
        };
        self.emit(EventKind::LinkStateChanged {
            state: info,
            interface: interface.clone(),
            reason,
        });
        match &state {
            LinkState::Up { interface, .. } => self.hook(HookEvent::LinkUp {
                interface: InterfaceName::new(interface),
            }),
            LinkState::Down => self.hook(HookEvent::LinkDown {
                interface: None,
                reason: ReasonCode::new("requested").unwrap_or(ReasonCode::UNKNOWN),
            }),
            LinkState::Failed { reason, .. } => self.hook(HookEvent::LinkDown {
                interface: None,
                reason: ReasonCode::new(reason.code()).unwrap_or(ReasonCode::UNKNOWN),
            }),
            _ => {},
        }
        if info == InfoLinkState::Up {
            debug!("link up");
        }
    }

    /// A mail check is over when the courier's last complete check moved
    /// (or it reported a new error): everything it found is routed first
    /// (so its leases are held), then the link manager is told.
    async fn on_courier_state(&mut self) {
        let state = self.courier_state.borrow_and_update().clone();
        let Some(check) = &self.check else { return };
        let done = state.last_check != check.last_check
            || (state.mailbox_error.is_some() && state.mailbox_error != check.mailbox_error);
        if !done {
            return;
        }
        let number = check.number;
        self.check = None;
        loop {
            match self.courier_events.try_recv() {
                Ok(e) => self.on_courier(e).await,
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.lagged("mail courier", n),
                Err(_) => break,
            }
        }
        info!(check = number, "mail check done");
        if let Err(e) = self.link.check_done(number).await {
            warn!("link manager: {e}");
        }
    }
}

/// The rate limit on dials from unsigned hints: one per peer per
/// [`HINT_DIAL_INTERVAL`], so a stream of forged hints costs at most one
/// failed handshake a minute.
#[derive(Debug, Default)]
struct HintDials {
    last: HashMap<PeerName, Instant>,
}

impl HintDials {
    /// Whether `peer` may be dialled from a hint at `now`; a yes counts
    /// as the dial.
    fn allow(&mut self, peer: &PeerName, now: Instant) -> bool {
        if self
            .last
            .get(peer)
            .is_some_and(|last| now.saturating_duration_since(*last) < HINT_DIAL_INTERVAL)
        {
            return false;
        }
        self.last.insert(peer.clone(), now);
        true
    }
}

fn infos(candidates: &[Candidate]) -> Vec<CandidateInfo> {
    candidates
        .iter()
        .cloned()
        .map(CandidateInfo::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str) -> PeerName {
        name.parse().expect("a valid name")
    }

    #[test]
    fn hint_dials_are_one_per_peer_per_interval() {
        let mut dials = HintDials::default();
        let start = Instant::now();
        let (alice, bob) = (peer("alice"), peer("bob"));
        assert!(dials.allow(&alice, start));
        assert!(!dials.allow(&alice, start + Duration::from_secs(1)));
        assert!(
            !dials.allow(
                &alice,
                start + HINT_DIAL_INTERVAL - Duration::from_millis(1)
            ),
            "still inside the interval"
        );
        assert!(
            dials.allow(&bob, start + Duration::from_secs(1)),
            "per peer"
        );
        assert!(dials.allow(&alice, start + HINT_DIAL_INTERVAL));
        assert!(
            !dials.allow(&alice, start + HINT_DIAL_INTERVAL + Duration::from_secs(1)),
            "the allowed dial starts a new interval"
        );
    }
}
