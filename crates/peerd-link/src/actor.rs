//! The link manager actor.
//!
//! - **Owns**: the dial session (a task in its own `JoinSet`, which owns
//!   the serial port and the pppd child), the redial schedule, the lease
//!   count and the mail-check timer.
//! - **Inputs**: [`LinkHandle`] methods (`acquire`, `up`, `down`,
//!   `check_done`), dropped [`Lease`]s, and the address watcher's
//!   `watch<AddressSnapshot>`: the link is up when the watched interface is
//!   up and has an announceable address. The watcher is the only judge of
//!   "up" for every driver; pppd's own "local IP address" line is logged,
//!   not trusted, so that the link manager and the announcements agree.
//! - **Outputs**: [`LinkState`] on a `watch`, [`LinkEvent`]s on a
//!   `broadcast`.
//! - **Shutdown**: on the cancellation token (or when every handle is
//!   dropped) it hangs up what it dialled (SIGTERM to pppd, SIGKILL after
//!   [`Tuning::hangup_grace`], the modem put on hook), waits for that, and
//!   returns.
//!
//! # When the link is wanted
//!
//! - `driver = "external"`: never dialled; the state follows the snapshot.
//! - `on_demand = false`: always, unless taken down with [`LinkHandle::down`]
//!   (until [`LinkHandle::up`]) or given up after `max_failures` failures
//!   in a row (until `up`).
//! - `on_demand = true`: while a [`Lease`] is held, while a mail check
//!   runs, and for `idle_hangup` after the last lease is dropped (a new
//!   lease cancels that timer). [`LinkHandle::up`] dials and lets the idle
//!   timer run; `down` hangs up at once and holds the link down until
//!   `up`.
//!
//! # Failures and redialling
//!
//! A session that ends without being asked to (pppd's exit, a modem's
//! `BUSY`, no address within [`Tuning::connect_timeout`]) is a failure: the
//! state becomes `Failed { reason, retry_at }` and, while the link is still
//! wanted, it is redialled after an exponential backoff with jitter
//! ([`Backoff`]). Reaching `Up` resets the count, so a link that drops
//! after working is redialled however often that happens; `max_failures`
//! failures in a row (0 = never) give up: `Failed { reason: GaveUp, retry_at:
//! None }`. Waiting callers of `acquire` get the first failure as their
//! error rather than waiting through the backoff.
//!
//! # The metered mail check (the callee side)
//!
//! On a metered, on-demand link nobody can reach us while it is down, so
//! the mailbox must be looked at now and then. Every `check_interval`
//! (and once at start, see [`Tuning::check_at_start`]) the actor takes a
//! lease of its own and dials. Once the link is up it emits
//! [`LinkEvent::CheckDue`]; the daemon (its event router) has the mail
//! courier check the mailbox and then calls [`LinkHandle::check_done`]
//! with the check's number. The check ends then,
//! or after [`Tuning::check_window`] if nobody says so (a courier that
//! missed the event must not keep a metered line up). At its end the
//! check's lease goes and, unless someone else holds a lease, the link is
//! hung up at once: "dial, check, hang up". Whoever needs the link beyond
//! the check (an announcement that asks us to connect) takes its own lease
//! before saying done. A check whose dial fails emits
//! [`LinkEvent::CheckMissed`] and is not retried: the next one comes after
//! `check_interval`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use peerd_config::{LinkConfig, LinkDriver, WatchedInterface};
use peerd_core::AddressSnapshot;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::backoff::Backoff;
use crate::error::LinkError;
use crate::modem::{PortOpener, SerialOpener};
use crate::pppd::{Phase, Progress};
use crate::session::{self, SessionCtx, SessionEnd};
use crate::state::{FailureReason, LinkEvent, LinkState};

/// Timings and backends that are not in the configuration file: the
/// daemon uses [`Tuning::default`]; tests shorten the times and wrap the
/// serial port.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Redial delays (default 5 s doubling to 5 min).
    pub backoff: Backoff,
    /// How long a session may dial or negotiate before the interface must
    /// have an address (default 120 s); re-armed when the phase changes.
    pub connect_timeout: Duration,
    /// How long [`LinkHandle::acquire`] and [`LinkHandle::up`] wait
    /// (default 240 s: a dial plus a negotiation).
    pub acquire_timeout: Duration,
    /// SIGTERM to SIGKILL (default 4 s, so that hanging up fits the
    /// daemon's 10 s shutdown deadline; pppd sends its LCP
    /// Terminate-Request at once).
    pub hangup_grace: Duration,
    /// The answer to one `init` string, `+++` or `ATH` (default 3 s).
    pub at_timeout: Duration,
    /// The answer to `ATD` (default 90 s).
    pub dial_timeout: Duration,
    /// Silence around `+++` (default 1 s, the Hayes S12 default).
    pub guard_time: Duration,
    /// How long DTR is held low to hang up (default 1 s).
    pub dtr_drop: Duration,
    /// The longest a mail check keeps the link up (default 2 min).
    pub check_window: Duration,
    /// Whether the first mail check is at start (default true: mail that
    /// came while the host was off is read at once) or after one
    /// `check_interval`.
    pub check_at_start: bool,
    /// Opens the modem's port (default: [`SerialOpener`]).
    pub port: Arc<dyn PortOpener>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            backoff: Backoff {
                min: Duration::from_secs(5),
                max: Duration::from_secs(300),
            },
            connect_timeout: Duration::from_secs(120),
            acquire_timeout: Duration::from_secs(240),
            hangup_grace: Duration::from_secs(4),
            at_timeout: Duration::from_secs(3),
            dial_timeout: Duration::from_secs(90),
            guard_time: Duration::from_secs(1),
            dtr_drop: Duration::from_secs(1),
            check_window: Duration::from_secs(120),
            check_at_start: true,
            port: Arc::new(SerialOpener),
        }
    }
}

/// A claim on the link: while any lease is held, an on-demand link stays
/// up. Dropping the last one starts the `idle_hangup` timer.
#[must_use = "an on-demand link may hang up as soon as the lease is dropped"]
pub struct Lease {
    /// Tells the actor the lease is gone (unbounded: `Drop` cannot wait,
    /// and a lost release would keep a metered line up forever).
    release: mpsc::UnboundedSender<()>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lease")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The actor may be gone: nothing to release then.
        let _ = self.release.send(());
    }
}

/// The answer to an acquire: the lease at once, and whether the link came
/// up later.
type Acquired = (Lease, oneshot::Receiver<Result<(), LinkError>>);

enum Command {
    Acquire {
        /// `up()`: also lifts a hold-down, a give-up and a pending backoff.
        explicit: bool,
        reply: oneshot::Sender<Result<Acquired, LinkError>>,
    },
    Down {
        reply: oneshot::Sender<Result<(), LinkError>>,
    },
    CheckDone {
        check: u64,
    },
}

/// The link manager's handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct LinkHandle {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<LinkState>,
    next_check: watch::Receiver<Option<SystemTime>>,
    events: broadcast::Sender<LinkEvent>,
    acquire_timeout: Duration,
}

impl LinkHandle {
    /// Takes a lease and waits (at most [`Tuning::acquire_timeout`]) until
    /// the link is up. On an on-demand link this dials.
    pub async fn acquire(&self) -> Result<Lease, LinkError> {
        self.acquire_within(self.acquire_timeout).await
    }

    /// [`acquire`](Self::acquire) with its own timeout.
    pub async fn acquire_within(&self, wait: Duration) -> Result<Lease, LinkError> {
        self.acquire_inner(false, wait).await
    }

    /// Dials now (lifting a `down`, a give-up or a pending backoff) and
    /// waits until the link is up. An on-demand link then hangs up after
    /// `idle_hangup` unless someone takes a lease.
    pub async fn up(&self) -> Result<(), LinkError> {
        let _lease = self.acquire_inner(true, self.acquire_timeout).await?;
        Ok(())
    }

    /// Hangs up and keeps the link down until [`up`](Self::up). Returns
    /// once pppd is reaped and the modem is on hook.
    pub async fn down(&self) -> Result<(), LinkError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Down { reply })
            .await
            .map_err(|_| LinkError::Gone)?;
        rx.await.map_err(|_| LinkError::Gone)?
    }

    /// The mail courier finished the check announced by
    /// [`LinkEvent::CheckDue`]. An old or unknown number is ignored.
    pub async fn check_done(&self, check: u64) -> Result<(), LinkError> {
        self.commands
            .send(Command::CheckDone { check })
            .await
            .map_err(|_| LinkError::Gone)
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    /// When the next periodic mail check dials (an on-demand link's
    /// `check_interval`); `None` on a link without checks.
    pub fn next_check(&self) -> Option<SystemTime> {
        *self.next_check.borrow()
    }

    /// A receiver of state changes.
    pub fn watch(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// A receiver of events from now on.
    pub fn events(&self) -> broadcast::Receiver<LinkEvent> {
        self.events.subscribe()
    }

    async fn acquire_inner(&self, explicit: bool, wait: Duration) -> Result<Lease, LinkError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Acquire { explicit, reply })
            .await
            .map_err(|_| LinkError::Gone)?;
        let (lease, outcome) = rx.await.map_err(|_| LinkError::Gone)??;
        match tokio::time::timeout(wait, outcome).await {
            Ok(Ok(Ok(()))) => Ok(lease),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(LinkError::Gone),
            Err(_) => Err(LinkError::Timeout {
                waited: wait,
                state: self.state(),
            }),
        }
    }
}

/// Spawns the link manager onto `tasks` with the default [`Tuning`].
/// `addresses` is the address watcher's snapshot: the link is up when the
/// watched interface is up and has an announceable address.
pub fn spawn<E>(
    config: LinkConfig,
    addresses: watch::Receiver<AddressSnapshot>,
    tasks: &mut JoinSet<Result<(), E>>,
    shutdown: CancellationToken,
) -> LinkHandle
where
    E: From<LinkError> + Send + 'static,
{
    spawn_tuned(config, addresses, Tuning::default(), tasks, shutdown)
}

/// [`spawn`] with explicit timings and port opener.
pub fn spawn_tuned<E>(
    config: LinkConfig,
    addresses: watch::Receiver<AddressSnapshot>,
    tuning: Tuning,
    tasks: &mut JoinSet<Result<(), E>>,
    shutdown: CancellationToken,
) -> LinkHandle
where
    E: From<LinkError> + Send + 'static,
{
    let now = Instant::now();
    let checks = Checks {
        next_at: config.dials_on_demand().then(|| {
            if tuning.check_at_start {
                now
            } else {
                now + config.check_interval
            }
        }),
        running: None,
        counter: 0,
    };
    let (state_tx, state_rx) = watch::channel(LinkState::Down);
    let (next_check_tx, next_check_rx) = watch::channel(checks.next_at.map(wall_clock));
    let (events, _) = broadcast::channel(64);
    let (commands_tx, commands_rx) = mpsc::channel(32);
    let (release_tx, release_rx) = mpsc::unbounded_channel();
    let handle = LinkHandle {
        commands: commands_tx,
        state: state_rx,
        next_check: next_check_rx,
        events: events.clone(),
        acquire_timeout: tuning.acquire_timeout,
    };
    let span = info_span!("link", driver = %config.driver);
    let actor = Actor {
        config: Arc::new(config),
        tuning,
        state: state_tx,
        next_check: next_check_tx,
        events,
        commands: commands_rx,
        release_tx,
        release_rx,
        addresses,
        addresses_open: true,
        shutdown,
        demand: Demand::default(),
        held_down: false,
        gave_up: false,
        failures: 0,
        last_failure: None,
        retry: None,
        waiters: Vec::new(),
        down_waiters: Vec::new(),
        session: None,
        sessions: JoinSet::new(),
        next_session: 0,
        checks,
        external_up: None,
    };
    tasks.spawn(async move { actor.run().instrument(span).await.map_err(E::from) });
    handle
}

/// Who wants an on-demand link: leases, and the idle timer after the last
/// one.
#[derive(Debug, Default)]
struct Demand {
    leases: usize,
    idle_until: Option<Instant>,
}

impl Demand {
    /// A lease was taken: the idle timer stops.
    fn take(&mut self) {
        self.leases += 1;
        self.idle_until = None;
    }

    /// A lease was dropped; the last one starts the idle timer if there
    /// is a link to keep.
    fn release(&mut self, now: Instant, idle: Duration, link_active: bool) {
        self.leases = self.leases.saturating_sub(1);
        if self.leases == 0 && link_active {
            self.idle_until = Some(now + idle);
        }
    }

    /// Whether leases or the idle timer keep the link.
    fn wanted(&self) -> bool {
        self.leases > 0 || self.idle_until.is_some()
    }
}

/// The periodic mail checks of an on-demand link.
#[derive(Debug)]
struct Checks {
    /// When the next one starts (`None`: no checks on this link).
    next_at: Option<Instant>,
    running: Option<CheckRun>,
    counter: u64,
}

#[derive(Debug)]
struct CheckRun {
    id: u64,
    /// Set when `CheckDue` went out: the window ends then.
    ends_at: Option<Instant>,
}

/// The session the actor is running.
struct Session {
    id: u64,
    progress: watch::Receiver<Progress>,
    progress_open: bool,
    hangup: CancellationToken,
    /// Hang-up asked for (by us).
    hanging_up: bool,
    /// Why we hung up, when it counts as a failure (no address in time).
    imposed_failure: Option<FailureReason>,
    /// Until when an address must arrive.
    deadline: Instant,
    /// Interface and since when, once the address arrived.
    up: Option<(String, SystemTime)>,
    phase: Phase,
}

struct Actor {
    config: Arc<LinkConfig>,
    tuning: Tuning,
    state: watch::Sender<LinkState>,
    /// `checks.next_at` on the wall clock, for `status`.
    next_check: watch::Sender<Option<SystemTime>>,
    events: broadcast::Sender<LinkEvent>,
    commands: mpsc::Receiver<Command>,
    /// Cloned into every lease.
    release_tx: mpsc::UnboundedSender<()>,
    release_rx: mpsc::UnboundedReceiver<()>,
    addresses: watch::Receiver<AddressSnapshot>,
    /// False once the watcher is gone (its last snapshot stays).
    addresses_open: bool,
    shutdown: CancellationToken,
    demand: Demand,
    /// `down()` was called: nothing dials until `up()`.
    held_down: bool,
    /// `max_failures` reached.
    gave_up: bool,
    /// Failures in a row.
    failures: u32,
    /// What `Failed` shows when no session runs.
    last_failure: Option<FailureReason>,
    /// The next redial: when (for the timer) and when (for people).
    retry: Option<(Instant, SystemTime)>,
    /// Callers of acquire/up waiting for the link.
    waiters: Vec<oneshot::Sender<Result<(), LinkError>>>,
    /// Callers of down waiting for the hang-up.
    down_waiters: Vec<oneshot::Sender<Result<(), LinkError>>>,
    session: Option<Session>,
    /// At most one session task.
    sessions: JoinSet<SessionEnd>,
    next_session: u64,
    checks: Checks,
    /// External driver: the interface and since when it is up.
    external_up: Option<(String, SystemTime)>,
}

impl Actor {
    async fn run(mut self) -> Result<(), LinkError> {
        info!(
            interface = %self.config.interface,
            on_demand = self.config.on_demand,
            "Link manager started"
        );
        self.reconcile();
        let result = loop {
            let retry = self.retry.map(|(at, _)| at);
            let idle = self.demand.idle_until;
            let check_next = self.checks.next_at;
            let check_end = self.checks.running.as_ref().and_then(|c| c.ends_at);
            let deadline = self
                .session
                .as_ref()
                .filter(|s| s.up.is_none() && !s.hanging_up)
                .map(|s| s.deadline);
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break Ok(()),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break Ok(()),
                },
                Some(()) = self.release_rx.recv() => self.on_release(),
                changed = self.addresses.changed(), if self.addresses_open => {
                    if changed.is_err() {
                        warn!("The address watcher stopped; the link state keeps its last snapshot");
                        self.addresses_open = false;
                    }
                },
                () = progress_changed(&mut self.session) => self.on_progress(),
                Some(joined) = self.sessions.join_next() => {
                    if let Err(e) = self.on_session_end(joined) {
                        break Err(e);
                    }
                },
                () = sleep_until(retry) => self.retry = None,
                () = sleep_until(idle) => {
                    debug!("Idle timer expired");
                    self.demand.idle_until = None;
                },
                () = sleep_until(check_next) => self.start_check(),
                () = sleep_until(check_end) => {
                    info!("Mail check window over");
                    self.end_check();
                },
                () = sleep_until(deadline) => self.connect_timed_out(),
            }
            self.reconcile();
        };
        self.stop().await;
        result
    }

    /// Hangs up what we dialled and waits for it.
    async fn stop(&mut self) {
        if let Some(s) = &mut self.session {
            info!("Shutting down: hanging up");
            s.hanging_up = true;
            s.hangup.cancel();
            self.publish();
        }
        while let Some(joined) = self.sessions.join_next().await {
            match joined {
                Ok(end) => {
                    if let Some(error) = end.hangup_error {
                        self.emit(LinkEvent::HangupIncomplete { error });
                    }
                },
                Err(e) => warn!(error = %e, "A link session task failed during shutdown"),
            }
        }
        if self.session.take().is_some() {
            self.emit(LinkEvent::Down);
        }
        // Waiters' senders are dropped: their callers get `Gone`.
        self.waiters.clear();
        for w in self.down_waiters.drain(..) {
            let _ = w.send(Ok(()));
        }
        self.last_failure = None;
        self.retry = None;
        self.external_up = None;
        self.state.send_replace(LinkState::Down);
        info!("Link manager stopped");
    }

    fn managed(&self) -> bool {
        self.config.driver != LinkDriver::External
    }

    /// Whether the link should be dialled (or kept).
    fn wanted(&self) -> bool {
        if !self.managed() || self.held_down || self.gave_up {
            return false;
        }
        !self.config.on_demand || self.demand.wanted() || self.checks.running.is_some()
    }

    fn is_up(&self) -> bool {
        match self.config.driver {
            LinkDriver::External => self.external_up.is_some(),
            _ => self.session.as_ref().is_some_and(|s| s.up.is_some()),
        }
    }

    fn emit(&self, event: LinkEvent) {
        // No subscriber is fine: events are informational.
        let _ = self.events.send(event);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Acquire { explicit, reply } => {
                let _ = reply.send(self.acquire(explicit));
            },
            Command::Down { reply } => {
                if !self.managed() {
                    let _ = reply.send(Err(LinkError::NotManaged));
                    return;
                }
                info!("Link down requested");
                self.held_down = true;
                self.gave_up = false;
                self.failures = 0;
                self.last_failure = None;
                self.retry = None;
                self.demand.idle_until = None;
                for w in self.waiters.drain(..) {
                    let _ = w.send(Err(LinkError::HeldDown));
                }
                if self.session.is_some() {
                    self.down_waiters.push(reply);
                } else {
                    let _ = reply.send(Ok(()));
                }
            },
            Command::CheckDone { check } => {
                if self.checks.running.as_ref().is_some_and(|c| c.id == check) {
                    info!(check, "Mail check done");
                    self.end_check();
                } else {
                    debug!(check, "Stale check_done ignored");
                }
            },
        }
    }

    fn acquire(&mut self, explicit: bool) -> Result<Acquired, LinkError> {
        if explicit {
            if !self.managed() {
                return Err(LinkError::NotManaged);
            }
            info!("Link up requested");
            self.held_down = false;
            if self.gave_up {
                self.gave_up = false;
                self.failures = 0;
            }
            // dial now, not after the backoff
            self.retry = None;
        } else if self.held_down {
            return Err(LinkError::HeldDown);
        } else if self.gave_up {
            if self.config.on_demand {
                // a new demand is a new start
                self.gave_up = false;
                self.failures = 0;
            } else {
                // `last_failure` says GaveUp whenever `gave_up` is set
                return Err(self
                    .last_failure
                    .clone()
                    .map_or(LinkError::HeldDown, LinkError::Failed));
            }
        }
        self.demand.take();
        let lease = Lease {
            release: self.release_tx.clone(),
        };
        let (tx, rx) = oneshot::channel();
        if self.is_up() {
            let _ = tx.send(Ok(()));
        } else {
            self.waiters.retain(|w| !w.is_closed());
            self.waiters.push(tx);
        }
        debug!(leases = self.demand.leases, "Lease taken");
        Ok((lease, rx))
    }

    fn on_release(&mut self) {
        let active = self.session.is_some();
        self.demand
            .release(Instant::now(), self.config.idle_hangup, active);
        debug!(leases = self.demand.leases, "Lease dropped");
        if self.demand.leases == 0 && active && self.config.on_demand {
            info!(
                idle_hangup_s = self.config.idle_hangup.as_secs_f64(),
                "Last lease dropped; idle timer started"
            );
        }
    }

    fn on_progress(&mut self) {
        if let Some(s) = &mut self.session {
            let phase = s.progress.borrow_and_update().phase;
            if phase != s.phase {
                s.phase = phase;
                s.deadline = Instant::now() + self.tuning.connect_timeout;
            }
        }
    }

    fn start_check(&mut self) {
        let next = Instant::now() + self.config.check_interval;
        self.checks.next_at = Some(next);
        self.next_check.send_replace(Some(wall_clock(next)));
        if self.checks.running.is_some() {
            debug!("A mail check is still running; skipping this one");
            return;
        }
        if self.held_down {
            info!("Mail check skipped: the link is held down");
            return;
        }
        if self.gave_up {
            self.gave_up = false;
            self.failures = 0;
        }
        self.checks.counter += 1;
        let id = self.checks.counter;
        info!(check = id, "Mail check due: bringing the link up");
        self.checks.running = Some(CheckRun { id, ends_at: None });
        if self.is_up() {
            self.check_link_up();
        }
    }

    /// The link is up: a check waiting for it becomes due.
    fn check_link_up(&mut self) {
        let window = self.tuning.check_window;
        if let Some(run) = &mut self.checks.running
            && run.ends_at.is_none()
        {
            run.ends_at = Some(Instant::now() + window);
            let check = run.id;
            self.emit(LinkEvent::CheckDue { check });
        }
    }

    /// A check is over: its lease goes, and with no other lease the link
    /// is hung up at once.
    fn end_check(&mut self) {
        if self.checks.running.take().is_some() && self.demand.leases == 0 {
            self.demand.idle_until = None;
        }
    }

    fn connect_timed_out(&mut self) {
        let waited = self.tuning.connect_timeout;
        let interface = self.expected_interface();
        if let Some(s) = &mut self.session {
            warn!(
                waited_s = waited.as_secs(),
                "No address in time; hanging up"
            );
            s.hanging_up = true;
            s.imposed_failure = Some(FailureReason::NoAddress { interface, waited });
            s.hangup.cancel();
        }
    }

    /// The interface the session's address must appear on.
    fn expected_interface(&self) -> Option<String> {
        match &self.config.interface {
            WatchedInterface::Named(name) => Some(name.clone()),
            WatchedInterface::Auto => self
                .session
                .as_ref()
                .and_then(|s| s.progress.borrow().interface.clone()),
        }
    }

    /// Whether the snapshot shows `interface` up with an announceable
    /// address.
    fn has_address(&self, interface: &str) -> bool {
        let snap = self.addresses.borrow();
        snap.up && snap.interface.as_deref() == Some(interface) && !snap.announceable.is_empty()
    }

    fn on_session_end(&mut self, joined: Result<SessionEnd, JoinError>) -> Result<(), LinkError> {
        let end = joined.map_err(|e| LinkError::Session(e.to_string()))?;
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        debug_assert_eq!(session.id, end.id);
        if let Some(error) = end.hangup_error {
            self.emit(LinkEvent::HangupIncomplete { error });
        }
        self.demand.idle_until = None;
        let failure = match session.imposed_failure {
            Some(imposed) => Some(imposed),
            None if session.hanging_up => None,
            None => end.failure,
        };
        for w in self.down_waiters.drain(..) {
            let _ = w.send(Ok(()));
        }
        let Some(reason) = failure else {
            info!("Link down");
            self.last_failure = None;
            self.emit(LinkEvent::Down);
            return Ok(());
        };
        self.failures = self.failures.saturating_add(1);
        warn!(reason = %reason, failures = self.failures, "Link failed");
        for w in self.waiters.drain(..) {
            let _ = w.send(Err(LinkError::Failed(reason.clone())));
        }
        if let Some(run) = self.checks.running.take() {
            self.emit(LinkEvent::CheckMissed {
                check: run.id,
                reason: reason.clone(),
            });
        }
        let max = self.config.max_failures;
        let shown = if max > 0 && self.failures >= max {
            warn!(failures = self.failures, "Giving up (max_failures)");
            self.gave_up = true;
            self.retry = None;
            FailureReason::GaveUp {
                failures: self.failures,
                last: Box::new(reason),
            }
        } else {
            let delay = self.tuning.backoff.delay(self.failures);
            info!(delay_ms = delay.as_millis(), "Redial scheduled");
            self.retry = Some((Instant::now() + delay, SystemTime::now() + delay));
            reason
        };
        self.last_failure = Some(shown.clone());
        self.emit(LinkEvent::Failed {
            reason: shown,
            failures: self.failures,
            retry_at: self.retry.map(|(_, at)| at),
        });
        Ok(())
    }

    fn start_session(&mut self) {
        self.next_session += 1;
        let id = self.next_session;
        let (progress_tx, progress_rx) = watch::channel(Progress {
            phase: Phase::Dialing,
            interface: None,
        });
        let hangup = self.shutdown.child_token();
        let ctx = SessionCtx {
            id,
            config: Arc::clone(&self.config),
            tuning: self.tuning.clone(),
            progress: progress_tx,
            hangup: hangup.clone(),
        };
        info!(session = id, failures = self.failures, "Dialling");
        self.sessions
            .spawn(session::run(ctx).instrument(info_span!("session", id)));
        self.session = Some(Session {
            id,
            progress: progress_rx,
            progress_open: true,
            hangup,
            hanging_up: false,
            imposed_failure: None,
            deadline: Instant::now() + self.tuning.connect_timeout,
            up: None,
            phase: Phase::Dialing,
        });
        self.emit(LinkEvent::Dialing {
            failures: self.failures,
        });
    }

    /// Brings everything in line after an input: up detection, dial or
    /// hang up, the published state.
    fn reconcile(&mut self) {
        if self.managed() {
            self.detect_session_up();
            let wanted = self.wanted();
            if !wanted {
                self.retry = None;
            }
            match &mut self.session {
                None if wanted && self.retry.is_none() => self.start_session(),
                Some(s) if !wanted && !s.hanging_up => {
                    info!("Link no longer wanted; hanging up");
                    s.hanging_up = true;
                    s.hangup.cancel();
                },
                _ => {},
            }
        } else {
            self.detect_external_up();
        }
        self.publish();
    }

    fn detect_external_up(&mut self) {
        let interface = {
            let snap = self.addresses.borrow();
            let name = match &self.config.interface {
                WatchedInterface::Named(name) => Some(name.clone()),
                WatchedInterface::Auto => snap.interface.clone(),
            };
            name.filter(|n| snap.up && snap.interface.as_deref() == Some(n.as_str()))
                .filter(|_| !snap.announceable.is_empty())
        };
        match (interface, &self.external_up) {
            (Some(now), Some((was, _))) if *was == now => {},
            (Some(now), _) => {
                info!(interface = %now, "Link up (external)");
                self.external_up = Some((now.clone(), SystemTime::now()));
                self.emit(LinkEvent::Up { interface: now });
                for w in self.waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
            },
            (None, Some(_)) => {
                info!("Link down (external)");
                self.external_up = None;
                self.emit(LinkEvent::Down);
            },
            (None, None) => {},
        }
    }

    fn detect_session_up(&mut self) {
        let Some(interface) = self.expected_interface() else {
            return;
        };
        let has = self.has_address(&interface);
        let modem = self.config.driver == LinkDriver::Modem;
        let timeout = self.tuning.connect_timeout;
        let Some(s) = &mut self.session else {
            return;
        };
        // the modem's tty carries no IP before pppd runs
        if s.hanging_up || (modem && s.phase == Phase::Dialing) {
            return;
        }
        match (&s.up, has) {
            (None, true) => {
                info!(interface = %interface, "Link up");
                s.up = Some((interface.clone(), SystemTime::now()));
                self.failures = 0;
                self.last_failure = None;
                self.emit(LinkEvent::Up { interface });
                for w in self.waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
                self.check_link_up();
            },
            (Some(_), false) => {
                warn!(interface = %interface, "The link lost its address; waiting for it");
                s.up = None;
                s.deadline = Instant::now() + timeout;
            },
            _ => {},
        }
    }

    fn compute_state(&self) -> LinkState {
        if !self.managed() {
            return match &self.external_up {
                Some((interface, since)) => LinkState::Up {
                    interface: interface.clone(),
                    since: *since,
                },
                None => LinkState::Down,
            };
        }
        match &self.session {
            Some(s) if s.hanging_up => LinkState::HangingUp,
            Some(s) => match (&s.up, s.phase) {
                (Some((interface, since)), _) => LinkState::Up {
                    interface: interface.clone(),
                    since: *since,
                },
                (None, Phase::Dialing) => LinkState::Dialing,
                (None, Phase::Connecting) => LinkState::Connecting,
            },
            None => match &self.last_failure {
                Some(reason) => LinkState::Failed {
                    reason: reason.clone(),
                    retry_at: self.retry.map(|(_, at)| at),
                },
                None => LinkState::Down,
            },
        }
    }

    fn publish(&self) {
        let next = self.compute_state();
        self.state.send_if_modified(|current| {
            if *current == next {
                false
            } else {
                debug!(state = %next, "Link state");
                *current = next;
                true
            }
        });
    }
}

/// `at` on the wall clock, for people (`status`, D-Bus).
fn wall_clock(at: Instant) -> SystemTime {
    SystemTime::now() + at.saturating_duration_since(Instant::now())
}

/// Resolves when the running session's progress changes; never without
/// one.
async fn progress_changed(session: &mut Option<Session>) {
    match session {
        Some(s) if s.progress_open => {
            if s.progress.changed().await.is_err() {
                s.progress_open = false;
            }
        },
        _ => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever without one (a disabled `select!` timer).
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_count_and_the_last_one_starts_the_idle_timer() {
        let idle = Duration::from_secs(300);
        let t0 = Instant::now();
        let mut d = Demand::default();
        assert!(!d.wanted());
        d.take();
        d.take();
        assert_eq!(d.leases, 2);
        d.release(t0, idle, true);
        assert!(d.idle_until.is_none(), "one lease is still held");
        assert!(d.wanted());
        d.release(t0, idle, true);
        assert_eq!(d.idle_until, Some(t0 + idle));
        assert!(d.wanted(), "the idle timer keeps the link");
        d.take();
        assert!(d.idle_until.is_none(), "a new lease cancels the timer");
        d.release(t0, idle, false);
        assert!(d.idle_until.is_none(), "no link, no idle timer");
        assert!(!d.wanted());
        d.release(t0, idle, true);
        assert_eq!(d.leases, 0, "never below zero");
    }

    fn external(interface: WatchedInterface) -> LinkConfig {
        LinkConfig {
            driver: LinkDriver::External,
            interface,
            families: vec![],
            idle_hangup: Duration::from_secs(300),
            on_demand: false,
            check_interval: Duration::from_secs(900),
            max_failures: 5,
            pppd: "/usr/sbin/pppd".into(),
            peer: "isp-a".to_owned(),
            device: "/dev/ttyUSB0".into(),
            baud: 115_200,
            number: "*99#".to_owned(),
            init: vec![],
        }
    }

    fn snapshot(interface: &str, up: bool, ip: Option<&str>) -> AddressSnapshot {
        let addresses: Vec<_> = ip
            .map(|ip| {
                let ip: std::net::IpAddr = ip.parse().unwrap();
                peerd_core::InterfaceAddress {
                    ip,
                    prefix_len: 32,
                    class: peerd_core::AddressClass::of(ip),
                    flags: peerd_core::AddressFlags::default(),
                }
            })
            .into_iter()
            .collect();
        AddressSnapshot {
            interface: Some(interface.to_owned()),
            up,
            announceable: addresses
                .iter()
                .copied()
                .filter(|a| a.class.is_announceable())
                .collect(),
            addresses,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn external_follows_the_snapshot_and_refuses_up_down() {
        let (tx, rx) = watch::channel(AddressSnapshot::default());
        let mut tasks: JoinSet<Result<(), LinkError>> = JoinSet::new();
        let token = CancellationToken::new();
        let link = spawn(
            external(WatchedInterface::Named("eth0".into())),
            rx,
            &mut tasks,
            token.clone(),
        );
        assert_eq!(link.up().await, Err(LinkError::NotManaged));
        assert_eq!(link.down().await, Err(LinkError::NotManaged));
        let mut state = link.watch();
        let mut events = link.events();

        // an acquire waits for the address
        let waiting = tokio::spawn({
            let link = link.clone();
            async move { link.acquire_within(Duration::from_secs(60)).await }
        });
        tokio::task::yield_now().await;
        // link-local only: not up
        tx.send_replace(snapshot("eth0", true, Some("169.254.1.1")));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(link.state(), LinkState::Down);
        // another interface: not ours
        tx.send_replace(snapshot("wlan0", true, Some("192.0.2.7")));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(link.state(), LinkState::Down);
        tx.send_replace(snapshot("eth0", true, Some("192.0.2.7")));
        state
            .wait_for(|s| matches!(s, LinkState::Up { interface, .. } if interface == "eth0"))
            .await
            .unwrap();
        let lease = waiting.await.unwrap().unwrap();
        assert_eq!(
            events.recv().await.unwrap(),
            LinkEvent::Up {
                interface: "eth0".into()
            }
        );
        // the interface going down takes the link down
        tx.send_replace(snapshot("eth0", false, Some("192.0.2.7")));
        state.wait_for(|s| *s == LinkState::Down).await.unwrap();
        assert_eq!(events.recv().await.unwrap(), LinkEvent::Down);
        drop(lease);
        // a timeout says what the link is doing
        let err = link
            .acquire_within(Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                LinkError::Timeout {
                    state: LinkState::Down,
                    ..
                }
            ),
            "{err:?}"
        );
        token.cancel();
        tasks.join_next().await.unwrap().unwrap().unwrap();
        assert_eq!(link.acquire().await.unwrap_err(), LinkError::Gone);
    }

    #[tokio::test(start_paused = true)]
    async fn external_auto_follows_whatever_interface_the_watcher_names() {
        let (tx, rx) = watch::channel(AddressSnapshot::default());
        let mut tasks: JoinSet<Result<(), LinkError>> = JoinSet::new();
        let token = CancellationToken::new();
        let link = spawn(
            external(WatchedInterface::Auto),
            rx,
            &mut tasks,
            token.clone(),
        );
        let mut state = link.watch();
        tx.send_replace(snapshot("wwan0", true, Some("100.64.3.4")));
        state
            .wait_for(|s| matches!(s, LinkState::Up { interface, .. } if interface == "wwan0"))
            .await
            .unwrap();
        tx.send_replace(snapshot("eth1", true, Some("2001:db8::5")));
        state
            .wait_for(|s| matches!(s, LinkState::Up { interface, .. } if interface == "eth1"))
            .await
            .unwrap();
        token.cancel();
        tasks.join_next().await.unwrap().unwrap().unwrap();
    }
}
