//! The address watcher actor.
//!
//! - **Owns**: one rtnetlink socket, subscribed to link, address (and, for
//!   `interface = "auto"`, route) notifications, and a mirror of the
//!   kernel's interfaces, addresses and default routes built from them.
//! - **Inputs**: the kernel's notifications; [`WatcherHandle`] methods
//!   (`ready`, `interfaces`, `resync`).
//! - **Outputs**: the [`AddressSnapshot`] on a `watch`, replaced the moment
//!   the kernel reports a change; [`AddressEvent`]s on a `broadcast`, of
//!   which [`AddressEvent::AddressChanged`] is sent only when the
//!   announceable set really changed and then stayed put for
//!   `announce.debounce`.
//! - **Shutdown**: on the cancellation token, or when every handle is
//!   dropped. There is nothing to flush.
//!
//! The snapshot is immediate and the event is debounced because they serve
//! different readers: the link manager wants to know *now* that ppp0 has
//! its address, while an announcement costs a mail per peer and a flapping
//! DHCP lease or an LTE reconnect must not send twenty.
//!
//! The actor never fails. A netlink overrun (the kernel dropped
//! notifications because we were slow: ENOBUFS) is answered by reading
//! everything again; a dead socket by opening a new one with backoff and
//! reading everything again. Both are logged and reported as
//! [`AddressEvent::Resynced`].

use std::time::Duration;

use peerd_config::WatchedInterface;
use peerd_core::{AddressSnapshot, InterfaceAddress};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::WatcherConfig;
use crate::netlink::{DumpWhat, Incoming, Netlink};
use crate::select::{self, View};
use crate::table::Table;

/// First wait before reopening a failed socket; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between attempts to reopen the socket.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Something that happened to the watched interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressEvent {
    /// The announceable addresses changed and then stayed unchanged for
    /// `debounce`. Sent once per real change: a repeated notification, a
    /// lifetime refresh or a flap that ends where it began sends nothing.
    AddressChanged {
        /// The watched interface (`None`: `auto` found no default route).
        interface: Option<String>,
        /// The announceable addresses now, best first (may be empty).
        addresses: Vec<InterfaceAddress>,
    },
    /// `interface = "auto"`: the default route moved to another interface
    /// (or appeared, or went away). Sent at once.
    InterfaceChanged {
        /// The interface followed until now.
        from: Option<String>,
        /// The interface followed from now on.
        to: Option<String>,
    },
    /// The watched interface was deleted (or renamed). Sent at once.
    ///
    /// With `interface = "auto"` it is sent only if the interface was still
    /// followed when it went; usually its default route goes first and
    /// [`AddressEvent::InterfaceChanged`] has said it all.
    InterfaceGone {
        /// Its name.
        interface: String,
        /// Its index, which will not come back.
        index: u32,
    },
    /// A named watched interface (re)appeared, with a new index after it
    /// was deleted. Sent at once.
    InterfaceAppeared {
        /// Its name.
        interface: String,
        /// Its index.
        index: u32,
    },
    /// The watcher read the whole state again.
    Resynced {
        /// Why.
        reason: ResyncReason,
    },
}

/// Why the watcher read the whole state again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncReason {
    /// The kernel dropped notifications (ENOBUFS: the socket's buffer was
    /// full).
    Overrun,
    /// The socket failed and a new one was opened.
    Reconnected,
    /// [`WatcherHandle::resync`] asked for it.
    Requested,
}

/// One interface as the watcher sees it (for status displays and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// The kernel's interface index.
    pub index: u32,
    /// Its name (empty if the kernel has not named it to us yet).
    pub name: String,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Operationally up (`IFF_RUNNING`: carrier).
    pub running: bool,
    /// A point-to-point link (`IFF_POINTOPOINT`, e.g. ppp0).
    pub point_to_point: bool,
    /// Its addresses, best first.
    pub addresses: Vec<InterfaceAddress>,
}

/// Why a request to the watcher failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatcherError {
    /// The watcher has stopped.
    #[error("the address watcher is not running")]
    Gone,
}

type Reply<T> = oneshot::Sender<Result<T, WatcherError>>;

enum Command {
    Ready { reply: Reply<()> },
    Interfaces { reply: Reply<Vec<InterfaceInfo>> },
    Resync { reply: Reply<()> },
}

/// The address watcher's handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct WatcherHandle {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<AddressSnapshot>,
    events: broadcast::Sender<AddressEvent>,
}

impl WatcherHandle {
    /// Returns once the watcher has read the kernel's state for the first
    /// time. Every request is answered only after that, and waits while a
    /// failed socket is being reopened; [`WatcherHandle::snapshot`] never
    /// waits.
    pub async fn ready(&self) -> Result<(), WatcherError> {
        self.request(|reply| Command::Ready { reply }).await
    }

    /// Every interface the watcher knows, by index.
    pub async fn interfaces(&self) -> Result<Vec<InterfaceInfo>, WatcherError> {
        self.request(|reply| Command::Interfaces { reply }).await
    }

    /// Reads the whole state again; returns once it is applied.
    pub async fn resync(&self) -> Result<(), WatcherError> {
        self.request(|reply| Command::Resync { reply }).await
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, WatcherError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| WatcherError::Gone)?;
        rx.await.map_err(|_| WatcherError::Gone)?
    }

    /// The current state.
    pub fn snapshot(&self) -> AddressSnapshot {
        self.state.borrow().clone()
    }

    /// A receiver of state changes (what the link manager follows).
    pub fn watch(&self) -> watch::Receiver<AddressSnapshot> {
        self.state.clone()
    }

    /// A receiver of events from now on. A receiver that lags behind gets
    /// `RecvError::Lagged` and should read [`WatcherHandle::snapshot`].
    pub fn events(&self) -> broadcast::Receiver<AddressEvent> {
        self.events.subscribe()
    }
}

/// Starts the address watcher on `tasks`.
///
/// The task ends with `Ok(())` when `shutdown` is cancelled or every handle
/// is dropped; it never fails (netlink trouble is retried and logged), so
/// `E` is only the supervisor's common error type.
pub fn spawn<E>(
    config: WatcherConfig,
    tasks: &mut JoinSet<Result<(), E>>,
    shutdown: CancellationToken,
) -> WatcherHandle
where
    E: From<WatcherError> + Send + 'static,
{
    let initial = AddressSnapshot {
        interface: match &config.interface {
            WatchedInterface::Named(name) => Some(name.clone()),
            WatchedInterface::Auto => None,
        },
        ..AddressSnapshot::default()
    };
    let (state_tx, state_rx) = watch::channel(initial);
    let (events, _) = broadcast::channel(64);
    let (commands_tx, commands_rx) = mpsc::channel(32);
    let watcher = Watcher {
        config,
        commands: commands_rx,
        state: state_tx,
        events: events.clone(),
        shutdown,
        table: Table::default(),
        watched: None,
        current: Vec::new(),
        emitted: Vec::new(),
        deadline: None,
        synced: false,
        resync_waiters: Vec::new(),
    };
    tasks.spawn(async move {
        watcher.run().await;
        Ok(())
    });
    WatcherHandle {
        commands: commands_tx,
        state: state_rx,
        events,
    }
}

/// Why [`Watcher::listen`] returned.
enum Stop {
    Shutdown,
    Resync(ResyncReason),
    Closed,
}

struct Watcher {
    config: WatcherConfig,
    commands: mpsc::Receiver<Command>,
    state: watch::Sender<AddressSnapshot>,
    events: broadcast::Sender<AddressEvent>,
    shutdown: CancellationToken,
    /// The kernel's state as far as we know it.
    table: Table,
    /// The watched interface as last published (name, index), for the
    /// interface events.
    watched: Option<(String, u32)>,
    /// The announceable set as last published on the watch.
    current: Vec<InterfaceAddress>,
    /// The announceable set as last sent in an `AddressChanged` (or found
    /// by the first dump: the starting point is not an event).
    emitted: Vec<InterfaceAddress>,
    /// When `current` has been quiet for `debounce`; `None` when no change
    /// waits.
    deadline: Option<Instant>,
    /// Whether the first dump has been applied.
    synced: bool,
    /// `resync` callers waiting for the dump to finish.
    resync_waiters: Vec<Reply<()>>,
}

impl Watcher {
    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut reason = None;
        'socket: loop {
            let mut netlink = match Netlink::open(self.config.is_auto(), self.config.receive_buffer)
            {
                Ok(netlink) => netlink,
                Err(error) => {
                    warn!(%error, retry_in = ?backoff, "cannot open a netlink socket");
                    if !self.pause(&mut backoff).await {
                        return;
                    }
                    reason = Some(ResyncReason::Reconnected);
                    continue;
                },
            };
            loop {
                let what = DumpWhat {
                    addresses: true,
                    routes: self.config.is_auto(),
                };
                let dumped = tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => return,
                    dumped = netlink.dump(what) => dumped,
                };
                match dumped {
                    Ok(dumped) => {
                        self.table =
                            Table::from_dump(dumped.links, dumped.addresses, dumped.routes);
                    },
                    Err(error) => {
                        warn!(%error, retry_in = ?backoff, "reading the interfaces failed");
                        if !self.pause(&mut backoff).await {
                            return;
                        }
                        reason = Some(ResyncReason::Reconnected);
                        continue 'socket;
                    },
                }
                backoff = BACKOFF_MIN;
                self.synced_with_kernel(reason.take());
                match self.listen(&mut netlink).await {
                    Stop::Shutdown => return,
                    Stop::Resync(why) => reason = Some(why),
                    Stop::Closed => {
                        warn!(retry_in = ?backoff, "the netlink socket failed; opening a new one");
                        if !self.pause(&mut backoff).await {
                            return;
                        }
                        reason = Some(ResyncReason::Reconnected);
                        continue 'socket;
                    },
                }
            }
        }
    }

    /// Waits `backoff` (doubling it for next time); false on shutdown.
    async fn pause(&self, backoff: &mut Duration) -> bool {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }

    /// A full dump was just applied to the table.
    fn synced_with_kernel(&mut self, reason: Option<ResyncReason>) {
        if self.synced {
            let reason = reason.unwrap_or(ResyncReason::Requested);
            info!(?reason, "re-read the interfaces and addresses");
            self.emit(AddressEvent::Resynced { reason });
            self.publish();
        } else {
            // The starting point: published, not an event.
            let view = select::view(&self.config, &self.table);
            self.watched = watched(&view);
            self.current.clone_from(&view.snapshot.announceable);
            self.emitted.clone_from(&view.snapshot.announceable);
            info!(
                interface = ?view.snapshot.interface,
                up = view.snapshot.up,
                announceable = %list(&view.snapshot.announceable),
                "address watcher started",
            );
            self.state.send_replace(view.snapshot);
            self.synced = true;
        }
        for reply in self.resync_waiters.drain(..) {
            let _ = reply.send(Ok(()));
        }
    }

    /// Follows notifications and commands until a resync, a dead socket or
    /// shutdown.
    async fn listen(&mut self, netlink: &mut Netlink) -> Stop {
        loop {
            let deadline = self.deadline;
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Stop::Shutdown,
                command = self.commands.recv() => match command {
                    None => return Stop::Shutdown,
                    Some(Command::Resync { reply }) => {
                        self.resync_waiters.push(reply);
                        return Stop::Resync(ResyncReason::Requested);
                    },
                    Some(command) => self.command(command),
                },
                () = sleep_until(deadline), if deadline.is_some() => self.debounced(),
                incoming = netlink.next() => match incoming {
                    Incoming::Message(message, flags) => {
                        let effect = self.table.apply(&message, flags);
                        if effect.routes_stale && self.config.is_auto() {
                            // The kernel may have dropped routes through the
                            // interface without a word: read them again.
                            let what = DumpWhat { addresses: false, routes: true };
                            let dumped = tokio::select! {
                                biased;
                                () = self.shutdown.cancelled() => return Stop::Shutdown,
                                dumped = netlink.dump(what) => dumped,
                            };
                            match dumped {
                                Ok(dumped) => self.table.replace_routes(dumped.routes),
                                Err(error) => {
                                    warn!(%error, "reading the routes failed");
                                    return Stop::Closed;
                                },
                            }
                        }
                        self.publish();
                    },
                    Incoming::Overrun => {
                        warn!("netlink overrun: the kernel dropped notifications; reading everything again");
                        return Stop::Resync(ResyncReason::Overrun);
                    },
                    Incoming::Closed => return Stop::Closed,
                    Incoming::Other => {},
                },
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Ready { reply } => {
                let _ = reply.send(Ok(()));
            },
            Command::Interfaces { reply } => {
                let list = self
                    .table
                    .links()
                    .map(|(index, link)| InterfaceInfo {
                        index,
                        name: link.name.clone(),
                        up: link.up,
                        running: link.running,
                        point_to_point: link.point_to_point,
                        addresses: select::ordered(link),
                    })
                    .collect();
                let _ = reply.send(Ok(list));
            },
            Command::Resync { reply } => {
                // Handled in `listen`; answered after the dump.
                self.resync_waiters.push(reply);
            },
        }
    }

    /// Publishes the table's view: the snapshot at once, interface events
    /// at once, and (re)starts the debounce if the announceable set moved.
    fn publish(&mut self) {
        let view = select::view(&self.config, &self.table);
        self.interface_events(&view);
        if view.snapshot.announceable != self.current {
            debug!(
                announceable = %list(&view.snapshot.announceable),
                "announceable addresses changed; waiting for them to settle",
            );
            self.current.clone_from(&view.snapshot.announceable);
            self.deadline = Some(Instant::now() + self.config.debounce);
        }
        let snapshot = view.snapshot;
        self.state.send_if_modified(|s| {
            let changed = *s != snapshot;
            if changed {
                *s = snapshot;
            }
            changed
        });
        if self.config.debounce.is_zero() && self.deadline.is_some() {
            // No debounce: say it now. (A zero-length timer would still
            // wait for the timer wheel's next millisecond tick.)
            self.debounced();
        }
    }

    /// The debounce ran out: announce the set if it differs from the last
    /// one announced.
    fn debounced(&mut self) {
        self.deadline = None;
        if self.current == self.emitted {
            debug!("addresses came back to what was announced; nothing to say");
            return;
        }
        self.emitted.clone_from(&self.current);
        let interface = self.state.borrow().interface.clone();
        info!(?interface, addresses = %list(&self.emitted), "announceable addresses changed");
        self.emit(AddressEvent::AddressChanged {
            interface,
            addresses: self.emitted.clone(),
        });
    }

    fn interface_events(&mut self, view: &View) {
        let now = watched(view);
        if now == self.watched {
            return;
        }
        let before = std::mem::replace(&mut self.watched, now.clone());
        if let Some((name, index)) = &before {
            let gone = match &self.config.interface {
                // Named: deleted, renamed, or replaced by a new one.
                WatchedInterface::Named(_) => true,
                // Auto: only if it no longer exists (else the route moved).
                WatchedInterface::Auto => self.table.link(*index).is_none(),
            };
            if gone {
                info!(interface = %name, index, "watched interface gone");
                self.emit(AddressEvent::InterfaceGone {
                    interface: name.clone(),
                    index: *index,
                });
            }
        }
        match &self.config.interface {
            WatchedInterface::Named(_) => {
                if let Some((name, index)) = now {
                    info!(interface = %name, index, "watched interface appeared");
                    self.emit(AddressEvent::InterfaceAppeared {
                        interface: name,
                        index,
                    });
                }
            },
            WatchedInterface::Auto => {
                let from = before.map(|(name, _)| name);
                let to = now.map(|(name, _)| name);
                info!(?from, ?to, "the default route moved");
                self.emit(AddressEvent::InterfaceChanged { from, to });
            },
        }
    }

    fn emit(&self, event: AddressEvent) {
        // No subscriber is fine: events are informational.
        let _ = self.events.send(event);
    }
}

/// The watched interface of a view, if it exists.
fn watched(view: &View) -> Option<(String, u32)> {
    Some((view.snapshot.interface.clone()?, view.index?))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `a, b, c` for logs.
fn list(addresses: &[InterfaceAddress]) -> String {
    let list: Vec<String> = addresses.iter().map(|a| a.ip.to_string()).collect();
    if list.is_empty() {
        "(none)".to_owned()
    } else {
        list.join(", ")
    }
}
