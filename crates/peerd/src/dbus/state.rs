//! What the properties say, and how it follows the daemon: a snapshot
//! made from `status` and `peers`, refreshed after events, methods and a
//! timer; each refresh emits `PropertiesChanged` for what changed and adds
//! or removes peer objects. The daemon's events become the signals of
//! INTERFACE.md here too.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use peerd_control::{CandidateInfo, Event, EventKind, PeerInfo, StatusInfo, Timestamp};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{MissedTickBehavior, interval, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedObjectPath, Variant};

use super::manager::Manager;
use super::path::peer_path;
use super::peer::PeerObject;
use super::{MANAGER_INTERFACE, MANAGER_PATH, PEER_INTERFACE, REFRESH_INTERVAL};
use crate::control::ControlApi;

/// How long one refresh may wait for the daemon before it is given up
/// (and the old values kept).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// The manager's properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ManagerProps {
    pub(super) link_state: String,
    pub(super) interface: String,
    pub(super) addresses: Vec<String>,
    pub(super) public_key: String,
    pub(super) peers: Vec<OwnedObjectPath>,
    pub(super) outbox_size: u32,
    pub(super) last_mail_check: u64,
}

/// One peer object's properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct PeerProps {
    pub(super) name: String,
    pub(super) email: String,
    pub(super) fingerprint: String,
    pub(super) addresses: Vec<String>,
    pub(super) last_announced: u64,
    pub(super) state: String,
}

/// Everything the properties say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Snapshot {
    pub(super) manager: ManagerProps,
    /// By peer name.
    pub(super) peers: BTreeMap<String, PeerProps>,
}

impl Snapshot {
    fn new(status: &StatusInfo, peers: &[PeerInfo], public_key: String) -> Self {
        let manager = ManagerProps {
            link_state: status.link.state.as_str().to_owned(),
            interface: status.interface.name.clone().unwrap_or_default(),
            // What announcements carry, as AddressChanged says it.
            addresses: status
                .interface
                .addresses
                .iter()
                .filter(|a| a.announced)
                .map(|a| a.ip.to_string())
                .collect(),
            public_key,
            peers: peers.iter().map(|p| peer_path(&p.name)).collect(),
            outbox_size: status.outbox_size,
            last_mail_check: status.mailbox.last_check.map_or(0, Timestamp::unix_secs),
        };
        let peers = peers
            .iter()
            .map(|p| {
                let props = PeerProps {
                    name: p.name.to_string(),
                    email: p.email.to_string(),
                    fingerprint: p.fingerprint.clone().unwrap_or_default(),
                    addresses: candidates(&p.addresses),
                    last_announced: p.announced_at.map_or(0, Timestamp::unix_secs),
                    state: p.state.as_str().to_owned(),
                };
                (p.name.to_string(), props)
            })
            .collect();
        Self { manager, peers }
    }
}

/// Candidates as D-Bus shows them: `address:port` (`[v6]:port`).
pub(super) fn candidates(addresses: &[CandidateInfo]) -> Vec<String> {
    addresses.iter().map(|c| c.address.to_string()).collect()
}

/// The snapshot, shared by the refresher (writes) and the objects (read
/// it in their property getters).
#[derive(Debug, Default)]
pub(super) struct Shared(RwLock<Snapshot>);

impl Shared {
    /// Reads the snapshot.
    pub(super) fn read<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> T {
        f(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn replace(&self, new: Snapshot) -> Snapshot {
        let mut guard = self.0.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut guard, new)
    }
}

/// How [`Refresher::run`] ended.
pub(super) enum Ended {
    Shutdown,
    Disconnected,
}

/// Keeps the snapshot and the objects in step with the daemon.
pub(super) struct Refresher<A> {
    api: Arc<A>,
    shared: Arc<Shared>,
    /// One refresh at a time, so that changes are emitted in the order
    /// they were read.
    lock: tokio::sync::Mutex<()>,
}

impl<A: ControlApi> Refresher<A> {
    pub(super) fn new(api: Arc<A>, shared: Arc<Shared>) -> Self {
        Self {
            api,
            shared,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads `status` and `peers`, updates the snapshot, adds and removes
    /// peer objects, emits `PropertiesChanged` for what changed. When the
    /// daemon does not answer (within [`REFRESH_TIMEOUT`]) or fails, the
    /// old values stay.
    pub(super) async fn refresh(&self, connection: &Connection) {
        let _one_at_a_time = self.lock.lock().await;
        let read = timeout(REFRESH_TIMEOUT, async {
            tokio::try_join!(self.api.status(), self.api.peers())
        })
        .await;
        let (status, peers) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                debug!(error = %e, "D-Bus properties not refreshed");
                return;
            },
            Err(_) => {
                warn!(
                    "D-Bus properties not refreshed: the daemon did not answer within {}s",
                    REFRESH_TIMEOUT.as_secs()
                );
                return;
            },
        };
        let public_key = self.api.key().public_key.to_string();
        let new = Snapshot::new(&status, &peers, public_key);
        let old = self.shared.replace(new.clone());
        if let Err(e) = publish(connection, &self.shared, &old, &new).await {
            warn!(error = %e, "Cannot publish D-Bus property changes");
        }
    }

    /// Follows the daemon's events until `stop` is cancelled or the bus
    /// connection closes: a refresh per event (and per
    /// [`REFRESH_INTERVAL`]), then the event's signal.
    pub(super) async fn run(
        &self,
        connection: &Connection,
        mut events: broadcast::Receiver<Event>,
        stop: &CancellationToken,
    ) -> Ended {
        let mut timer = interval(REFRESH_INTERVAL);
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick is now; the snapshot is fresh already.
        timer.tick().await;
        let mut events_open = true;
        loop {
            let event = tokio::select! {
                biased;
                () = stop.cancelled() => return Ended::Shutdown,
                () = connection.closed() => return Ended::Disconnected,
                event = events.recv(), if events_open => event,
                _ = timer.tick() => {
                    self.refresh(connection).await;
                    continue;
                },
            };
            match event {
                Ok(event) => {
                    self.refresh(connection).await;
                    if let Err(e) = emit_signal::<A>(connection, &event.kind).await {
                        warn!(error = %e, event = event.kind.name(), "Cannot emit a D-Bus signal");
                    }
                },
                Err(RecvError::Lagged(n)) => {
                    debug!(missed = n, "D-Bus front end fell behind the events");
                    self.refresh(connection).await;
                },
                Err(RecvError::Closed) => events_open = false,
            }
            timer.reset();
        }
    }
}

/// Makes the objects and `PropertiesChanged` say `new` (was `old`).
async fn publish(
    connection: &Connection,
    shared: &Arc<Shared>,
    old: &Snapshot,
    new: &Snapshot,
) -> zbus::Result<()> {
    let server = connection.object_server();
    for name in new.peers.keys().filter(|n| !old.peers.contains_key(*n)) {
        let Ok(peer) = name.parse() else { continue };
        server
            .at(
                peer_path(&peer),
                PeerObject::new(name.clone(), Arc::clone(shared)),
            )
            .await?;
    }
    for name in old.peers.keys().filter(|n| !new.peers.contains_key(*n)) {
        let Ok(peer) = name.parse() else { continue };
        server.remove::<PeerObject, _>(peer_path(&peer)).await?;
    }
    emit_changes(
        connection,
        MANAGER_PATH,
        MANAGER_INTERFACE,
        manager_changes(&old.manager, &new.manager),
    )
    .await?;
    for (name, props) in &new.peers {
        let Some(before) = old.peers.get(name) else {
            continue;
        };
        let Ok(peer) = name.parse() else { continue };
        emit_changes(
            connection,
            peer_path(&peer).as_str(),
            PEER_INTERFACE,
            peer_changes(before, props),
        )
        .await?;
    }
    Ok(())
}

type Changes = Vec<(&'static str, Variant<'static>)>;

fn manager_changes(old: &ManagerProps, new: &ManagerProps) -> Changes {
    let mut changes = Changes::new();
    if old.link_state != new.link_state {
        changes.push(("LinkState", Variant::from(new.link_state.clone())));
    }
    if old.interface != new.interface {
        changes.push(("Interface", Variant::from(new.interface.clone())));
    }
    if old.addresses != new.addresses {
        changes.push(("Addresses", Variant::from(new.addresses.clone())));
    }
    if old.peers != new.peers {
        changes.push(("Peers", Variant::from(new.peers.clone())));
    }
    if old.outbox_size != new.outbox_size {
        changes.push(("OutboxSize", Variant::from(new.outbox_size)));
    }
    if old.last_mail_check != new.last_mail_check {
        changes.push(("LastMailCheck", Variant::from(new.last_mail_check)));
    }
    // PublicKey is const: the key does not change while peerd runs.
    changes
}

fn peer_changes(old: &PeerProps, new: &PeerProps) -> Changes {
    let mut changes = Changes::new();
    if old.email != new.email {
        changes.push(("Email", Variant::from(new.email.clone())));
    }
    if old.fingerprint != new.fingerprint {
        changes.push(("Fingerprint", Variant::from(new.fingerprint.clone())));
    }
    if old.addresses != new.addresses {
        changes.push(("Addresses", Variant::from(new.addresses.clone())));
    }
    if old.last_announced != new.last_announced {
        changes.push(("LastAnnounced", Variant::from(new.last_announced)));
    }
    if old.state != new.state {
        changes.push(("State", Variant::from(new.state.clone())));
    }
    changes
}

/// One `PropertiesChanged` for all of `changes` (none if empty).
async fn emit_changes(
    connection: &Connection,
    path: &str,
    interface: &'static str,
    changes: Changes,
) -> zbus::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let emitter = SignalEmitter::new(connection, path.to_owned())?;
    let changed: HashMap<&str, Variant<'_>> = changes.into_iter().collect();
    zbus::fdo::Properties::properties_changed(
        &emitter,
        InterfaceName::from_static_str_unchecked(interface),
        changed,
        Cow::Borrowed(&[]),
    )
    .await
}

/// The signal of INTERFACE.md for `event`, if it has one.
async fn emit_signal<A: ControlApi>(
    connection: &Connection,
    event: &EventKind,
) -> zbus::Result<()> {
    let emitter = SignalEmitter::new(connection, MANAGER_PATH)?;
    match event {
        EventKind::AddressChanged { addresses, .. } => {
            let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            Manager::<A>::address_changed(&emitter, &addresses).await
        },
        EventKind::AnnouncementSent {
            peer, addresses, ..
        } => Manager::<A>::announcement_sent(&emitter, peer.as_str(), &candidates(addresses)).await,
        EventKind::AnnouncementReceived {
            peer, addresses, ..
        } => {
            Manager::<A>::announcement_received(&emitter, peer.as_str(), &candidates(addresses))
                .await
        },
        EventKind::AnnouncementRejected { sender, reason } => {
            Manager::<A>::announcement_rejected(
                &emitter,
                &escape_controls(sender),
                &escape_controls(reason),
            )
            .await
        },
        EventKind::PeerConnected { peer, address } => {
            Manager::<A>::peer_connected(&emitter, peer.as_str(), &address.to_string()).await
        },
        EventKind::PeerDisconnected { peer, reason } => {
            Manager::<A>::peer_disconnected(&emitter, peer.as_str(), &escape_controls(reason)).await
        },
        EventKind::LinkStateChanged { state, .. } => {
            Manager::<A>::link_state_changed_signal(&emitter, state.as_str()).await
        },
        // No signal in INTERFACE.md: the refresh before shows their effect
        // (OutboxSize, ...).
        _ => Ok(()),
    }
}

/// `s` with control characters (a forged sender's line breaks, escape
/// sequences) written as `\u{..}`, so that a value from outside cannot
/// fake lines or colours in whatever prints the signal. The daemon escapes
/// such values already; this keeps the D-Bus side safe on its own.
pub(super) fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("a@b.example"), "a@b.example");
        assert_eq!(
            escape_controls("evil\r\nX-Hook: 1\u{1b}[31m"),
            "evil\\u{d}\\u{a}X-Hook: 1\\u{1b}[31m"
        );
        assert_eq!(escape_controls("ünïcödé"), "ünïcödé");
    }

    #[test]
    fn only_changed_properties_are_reported() {
        let old = ManagerProps {
            link_state: "down".into(),
            outbox_size: 1,
            ..ManagerProps::default()
        };
        let mut new = old.clone();
        assert!(manager_changes(&old, &new).is_empty());
        new.link_state = "up".into();
        new.addresses = vec!["203.0.113.7".into()];
        let names: Vec<_> = manager_changes(&old, &new)
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(names, ["LinkState", "Addresses"]);
        let peer = PeerProps::default();
        let mut changed = peer.clone();
        changed.state = "connected".into();
        let names: Vec<_> = peer_changes(&peer, &changed)
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(names, ["State"]);
    }
}
