//! The courier actor: owns the outbox and the mailbox connection.
//!
//! - **Owns**: the SMTP submission (built per batch, so a changed password
//!   is picked up), the sequence counter, the IMAP or POP3 session, and
//!   (shared with nothing outside this actor) the state store.
//! - **Inputs**: [`CourierHandle`] methods: `announce`, `check_now`,
//!   `acknowledged` (an ack carried by a connection), `outbox`.
//! - **Outputs**: [`CourierState`] on a `watch`, [`CourierEvent`]s on a
//!   `broadcast`.
//! - **Shutdown**: on the cancellation token: the receiving task logs out,
//!   the sending task finishes the mail in flight (for at most 3 s); the
//!   outbox is on disk at every step (an intent is committed before any send is tried), so a
//!   kill at any point costs at most a duplicate mail, never a lost one.
//!
//! Three tasks: the command loop (answers every request from the store
//! at once), the sender (mails what is due, woken by the command loop or
//! its timer; an SMTP server that does not answer stalls only it) and the
//! receiver (IMAP IDLE / POP3 polling, which may block on the network for
//! minutes). The receiver asks the sender to mail acks through the
//! command loop. On a link dialled on demand the receiver keeps no session
//! and polls on no timer: it checks once each time it is asked
//! ([`CourierHandle::check_now`], which the daemon calls for the link
//! manager's mail checks), since the link is down in between.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use peerd_announce::{
    Body, KnownPeer, MailHeaders, Message, Received, Receiver, Rejection, SequenceFile,
    new_message_id, plain_mail, seal, sealed_mail,
};
use peerd_config::{Config, IncomingProtocol, Login, PeerFormat, Processed, Security};
use peerd_core::{Candidate, Identity, PeerName};
use peerd_state::{FailureKind, MailOutcome, OutboxEntry, Policy, Store};
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use crate::imap::{FolderMark, ImapMailbox};
use crate::smtp::{SendError, Submission};
use crate::{pop3, tls};

/// The timeout of every single network step (connect, one command).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The least time between two timer-driven outbox rounds.
const MIN_ROUND_GAP: Duration = Duration::from_millis(200);
/// First wait after a mailbox failure; doubles up to [`RECONNECT_MAX`].
const RECONNECT_BASE: Duration = Duration::from_secs(5);
/// The longest wait between reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(15 * 60);

/// What the courier is doing, for `peerctl status` and D-Bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CourierState {
    /// "imap" or "pop3".
    pub protocol: &'static str,
    /// Whether a mailbox session is up.
    pub connected: bool,
    /// When the mailbox was last checked completely.
    pub last_check: Option<SystemTime>,
    /// Mails a check found and did not finish with (it broke off): the
    /// next check examines them again. 0 after a complete check. IMAP
    /// counts the peerd and accepted-sender mails of the folder being
    /// scanned; POP3 every message the ledger has not seen.
    pub pending: usize,
    /// Outbox entries still being worked on.
    pub outbox_size: usize,
    /// The last sending error, if the last send failed.
    pub last_error: Option<String>,
    /// The last mailbox error, if the last check failed.
    pub mailbox_error: Option<String>,
}

/// Something that happened, for the daemon, hooks and D-Bus signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CourierEvent {
    /// The server accepted an announcement for `peer`.
    AnnouncementSent {
        /// To whom.
        peer: PeerName,
        /// What it said.
        candidates: Vec<Candidate>,
        /// Its sequence number (`None` for a plain mail).
        sequence: Option<u64>,
    },
    /// Sending to `peer` failed.
    SendFailed {
        /// To whom.
        peer: PeerName,
        /// Why (never contains a password).
        error: String,
        /// Whether it is given up until something changes.
        permanent: bool,
    },
    /// A verified announcement arrived.
    AnnouncementReceived {
        /// From whom.
        peer: PeerName,
        /// Where it can be reached.
        candidates: Vec<Candidate>,
        /// Its sequence number (what a connection acknowledges).
        sequence: u64,
    },
    /// A peer acknowledged one of our announcements by mail.
    AckReceived {
        /// Who.
        peer: PeerName,
        /// The acknowledged sequence number.
        sequence: u64,
    },
    /// A plain mail from an `accept_unsigned` peer gave an address hint.
    HintReceived {
        /// From whom (by the spoofable From header).
        peer: PeerName,
        /// The address.
        ip: IpAddr,
        /// The port, if the mail named one.
        port: Option<u16>,
    },
    /// A peerd mail failed verification.
    AnnouncementRejected {
        /// The peer whose key sealed it, when that key is in the address
        /// book (so the name is ours, not the mail's).
        peer: Option<PeerName>,
        /// The mail's From address, escaped (`peerd_announce::escape_address`):
        /// for reports only, it proves nothing. `None` when there was none
        /// or the mail was not downloaded.
        from: Option<String>,
        /// Why.
        reason: Rejection,
    },
    /// The mailbox could not be checked.
    MailboxError {
        /// Why (never contains a password).
        error: String,
    },
}

/// Why a courier request failed.
#[derive(Debug, thiserror::Error)]
pub enum CourierError {
    /// The courier has stopped.
    #[error("the mail courier is not running")]
    Gone,
    /// The named peer is not in the address book.
    #[error("unknown peer {0}")]
    UnknownPeer(String),
    /// The peer has `format = "sealed"` but no key (cannot happen with a
    /// validated configuration).
    #[error("no key for peer {0}")]
    NoKey(PeerName),
    /// Nothing to announce.
    #[error("an announcement needs at least one address")]
    NoCandidates,
    /// The state store failed.
    #[error(transparent)]
    State(#[from] peerd_state::StateError),
}

enum Command {
    Announce {
        peers: Option<Vec<PeerName>>,
        candidates: Vec<Candidate>,
        reply: oneshot::Sender<Result<Vec<PeerName>, CourierError>>,
    },
    Acknowledged {
        peer: PeerName,
        sequence: u64,
        reply: oneshot::Sender<Result<bool, CourierError>>,
    },
    Outbox {
        reply: oneshot::Sender<Result<Vec<OutboxEntry>, CourierError>>,
    },
    SendNow {
        peers: Option<Vec<PeerName>>,
        reply: oneshot::Sender<Result<usize, CourierError>>,
    },
    /// From the receiver: mail `peer` an ack for `sequence`.
    SendAck { peer: PeerName, sequence: u64 },
    Reconfigure {
        config: Arc<Config>,
        reply: oneshot::Sender<Result<(), CourierError>>,
    },
}

/// The courier's handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct CourierHandle {
    commands: mpsc::Sender<Command>,
    network: Arc<watch::Sender<u64>>,
    wake_receiver: Arc<Notify>,
    state: watch::Receiver<CourierState>,
    events: broadcast::Sender<CourierEvent>,
}

impl CourierHandle {
    /// Records the intent "these peers should know `candidates`" (all
    /// `announce = true` peers when `peers` is `None`) and sends what is
    /// due. Returns once the intents are on disk, with the peers covered.
    pub async fn announce(
        &self,
        peers: Option<Vec<PeerName>>,
        candidates: Vec<Candidate>,
    ) -> Result<Vec<PeerName>, CourierError> {
        self.request(|reply| Command::Announce {
            peers,
            candidates,
            reply,
        })
        .await
    }

    /// An authenticated connection from `peer` carried `sequence`: our
    /// announcement arrived, stop re-sending it.
    pub async fn acknowledged(&self, peer: PeerName, sequence: u64) -> Result<bool, CourierError> {
        self.request(|reply| Command::Acknowledged {
            peer,
            sequence,
            reply,
        })
        .await
    }

    /// What waits in the outbox.
    pub async fn outbox(&self) -> Result<Vec<OutboxEntry>, CourierError> {
        self.request(|reply| Command::Outbox { reply }).await
    }

    /// Sends the outbox's current intents now (all peers, or the named
    /// ones), whatever their backoff or re-send schedule says: what
    /// `peerctl announce` and a call do. Returns how many were re-armed.
    pub async fn send_now(&self, peers: Option<Vec<PeerName>>) -> Result<usize, CourierError> {
        self.request(|reply| Command::SendNow { peers, reply })
            .await
    }

    /// Uses `config` from now on (after a reload: new peers, new mailbox or
    /// server settings). Intents for peers no longer configured are
    /// dropped when next due; the mailbox session reconnects with the new
    /// settings at its next wake-up, which this triggers.
    pub async fn reconfigure(&self, config: Arc<Config>) -> Result<(), CourierError> {
        self.request(|reply| Command::Reconfigure { config, reply })
            .await?;
        self.wake_receiver.notify_one();
        Ok(())
    }

    /// Sends a command made with a reply channel and awaits the reply.
    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, CourierError>>) -> Command,
    ) -> Result<T, CourierError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| CourierError::Gone)?;
        rx.await.map_err(|_| CourierError::Gone)?
    }

    /// This host's addresses changed: the mailbox session and a mail in
    /// flight, whose connections may come from an address that is gone,
    /// are dropped (without a goodbye the server could not hear) and made
    /// again at once. A mail dropped this way stays due and is sent again.
    pub fn local_addresses_changed(&self) {
        self.network.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Checks the mailbox now (interrupts IDLE or the poll wait).
    pub fn check_now(&self) {
        self.wake_receiver.notify_one();
    }

    /// The current state.
    pub fn state(&self) -> CourierState {
        self.state.borrow().clone()
    }

    /// A receiver of state changes.
    pub fn watch(&self) -> watch::Receiver<CourierState> {
        self.state.clone()
    }

    /// A receiver of events from now on.
    pub fn events(&self) -> broadcast::Receiver<CourierEvent> {
        self.events.subscribe()
    }
}

/// Everything the courier's tasks share (read-only, or internally
/// synchronised like the store and the watch sender).
struct Shared {
    /// The configuration; replaced by [`CourierHandle::reconfigure`].
    config: watch::Sender<Arc<Config>>,
    identity: Arc<Identity>,
    store: Arc<Store>,
    state: watch::Sender<CourierState>,
    events: broadcast::Sender<CourierEvent>,
    /// Bumped when this host's addresses change: connections made from an
    /// address that may be gone are dropped and made again.
    network: Arc<watch::Sender<u64>>,
}

impl Shared {
    /// The configuration as it is now.
    fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// The outbox's pacing, from the configuration as it is now.
    fn policy(&self) -> Policy {
        let config = self.config();
        Policy::new(config.announce.resend, config.announce.max_per_hour)
    }

    fn emit(&self, event: CourierEvent) {
        // No subscriber is fine: events are informational.
        let _ = self.events.send(event);
    }

    fn refresh_outbox_size(&self) {
        if let Ok(size) = self.store.outbox_size() {
            self.state.send_if_modified(|s| {
                let changed = s.outbox_size != size;
                s.outbox_size = size;
                changed
            });
        }
    }

    /// How many mails the check under way has not finished with.
    fn report_pending(&self, pending: usize) {
        self.state
            .send_if_modified(|s| std::mem::replace(&mut s.pending, pending) != pending);
    }

    fn set_error(&self, error: Option<String>) {
        self.state.send_if_modified(|s| {
            let changed = s.last_error != error;
            s.last_error = error.clone();
            changed
        });
    }

    fn known_peers(&self) -> Vec<KnownPeer> {
        self.config()
            .peers
            .iter()
            .map(|p| KnownPeer {
                name: p.name.clone(),
                email: p.email.clone(),
                key: p.public_key,
                accept_unsigned: p.accept_unsigned,
            })
            .collect()
    }
}

/// Starts the courier on `tasks`. `store` is the open state database.
pub fn spawn<E>(
    config: Arc<Config>,
    identity: Arc<Identity>,
    store: Arc<Store>,
    tasks: &mut JoinSet<Result<(), E>>,
    shutdown: CancellationToken,
) -> CourierHandle
where
    E: From<CourierError> + Send + 'static,
{
    let protocol = match config.mail.incoming.protocol {
        IncomingProtocol::Imap => "imap",
        IncomingProtocol::Pop3 => "pop3",
    };
    let (state_tx, state_rx) = watch::channel(CourierState {
        protocol,
        connected: false,
        last_check: None,
        pending: 0,
        outbox_size: store.outbox_size().unwrap_or(0),
        last_error: None,
        mailbox_error: None,
    });
    let (events, _) = broadcast::channel(256);
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let wake_receiver = Arc::new(Notify::new());
    let (config, _) = watch::channel(config);
    let network = Arc::new(watch::Sender::new(0));
    let shared = Arc::new(Shared {
        config,
        identity,
        store,
        state: state_tx,
        events: events.clone(),
        network: Arc::clone(&network),
    });
    let handle = CourierHandle {
        network,
        commands: commands_tx.clone(),
        wake_receiver: Arc::clone(&wake_receiver),
        state: state_rx,
        events,
    };
    let receiver = receive_loop(
        Arc::clone(&shared),
        commands_tx.downgrade(),
        wake_receiver,
        shutdown.clone(),
    );
    tasks.spawn(async move {
        receiver.await;
        Ok(())
    });
    tasks.spawn(async move {
        send_loop(shared, commands_rx, shutdown)
            .await
            .map_err(E::from)
    });
    handle
}

/// How long a mail in flight may take to finish once shutdown is asked
/// for; after that it is abandoned (it stays due in the outbox, so the
/// next run sends it: at most a duplicate, never a loss).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The command loop: every request is answered from the store at once,
/// never behind a mail server that is slow to answer (the sending task
/// does the network part and is woken when something becomes due).
async fn send_loop(
    shared: Arc<Shared>,
    mut commands: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
) -> Result<(), CourierError> {
    let wake = Arc::new(Notify::new());
    let (acks_tx, acks) = mpsc::unbounded_channel();
    let mut sender = tokio::spawn(sender_loop(
        Arc::clone(&shared),
        Arc::clone(&wake),
        acks,
        shutdown.clone(),
    ));
    let result = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            command = commands.recv() => match command {
                None => break Ok(()),
                Some(Command::SendAck { peer, sequence }) => {
                    // Unbounded: acks are few (one per accepted
                    // announcement) and must not be lost or block the
                    // receiver.
                    let _ = acks_tx.send((peer, sequence));
                },
                Some(command) => handle_command(&shared, command, &wake),
            },
            ended = &mut sender => break match ended {
                Ok(()) => Ok(()),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Ok(()),
            },
        }
    };
    // The sender sees the same token; wait for its mail in flight.
    if !sender.is_finished() {
        let _ = sender.await;
    }
    result
}

/// The sending task: the outbox whenever something is due (on its timer,
/// or woken by a new intent), and the acks the receiver asks for.
async fn sender_loop(
    shared: Arc<Shared>,
    wake: Arc<Notify>,
    mut acks: mpsc::UnboundedReceiver<(PeerName, u64)>,
    shutdown: CancellationToken,
) {
    let mut sequence = SequenceFile::in_dir(&shared.config().state.dir);
    let mut network = shared.network.subscribe();
    // Whatever an earlier run left in the outbox goes out now.
    let mut again = sending(
        send_due(&shared, &mut sequence, &shutdown),
        &mut network,
        &shutdown,
    )
    .await;
    while !shutdown.is_cancelled() {
        if again {
            again = sending(
                send_due(&shared, &mut sequence, &shutdown),
                &mut network,
                &shutdown,
            )
            .await;
            continue;
        }
        let next = shared
            .store
            .next_wakeup(&shared.policy(), SystemTime::now())
            .unwrap_or(None);
        // At least a moment between outbox rounds, so a schedule that is
        // due but cannot be served (a rate limit's edge) never spins.
        let sleep = next.map(|at| {
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .max(MIN_ROUND_GAP)
        });
        tokio::select! {
            () = shutdown.cancelled() => return,
            ack = acks.recv() => match ack {
                None => return,
                Some((peer, acked)) => {
                    // An ack cut off by an address change is not sent
                    // again: the peer re-sends its announcement, which is
                    // acknowledged then.
                    sending(send_ack(&shared, &mut sequence, &peer, acked), &mut network, &shutdown).await;
                },
            },
            () = wake.notified() => {
                again = sending(send_due(&shared, &mut sequence, &shutdown), &mut network, &shutdown).await;
            },
            () = sleep_or_forever(sleep) => {
                again = sending(send_due(&shared, &mut sequence, &shutdown), &mut network, &shutdown).await;
            },
        }
    }
}

/// Runs `work` (SMTP), dropping it when this host's addresses change (its
/// connection may come from an address that is gone: the intents stay
/// due, and `true` says to send again at once) or, after
/// [`SHUTDOWN_GRACE`], when shutdown is asked for.
async fn sending(
    work: impl std::future::Future<Output = ()>,
    network: &mut watch::Receiver<u64>,
    shutdown: &CancellationToken,
) -> bool {
    network.borrow_and_update();
    tokio::pin!(work);
    tokio::select! {
        () = until_shutdown(&mut work, shutdown) => false,
        _ = network.changed() => {
            info!("this host's address changed while sending: sending again from the new one");
            true
        },
    }
}

/// Runs `work` to its end, unless shutdown is asked for: then it gets
/// [`SHUTDOWN_GRACE`] more and is dropped (every step is on disk first).
async fn until_shutdown(work: impl std::future::Future<Output = ()>, shutdown: &CancellationToken) {
    tokio::pin!(work);
    tokio::select! {
        () = &mut work => {},
        () = shutdown.cancelled() => {
            if tokio::time::timeout(SHUTDOWN_GRACE, work).await.is_err() {
                info!("a mail in flight was abandoned at shutdown; it is sent at the next start");
            }
        },
    }
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Answers a request; wakes the sender when something became due.
fn handle_command(shared: &Shared, command: Command, wake: &Notify) {
    match command {
        Command::Announce {
            peers,
            candidates,
            reply,
        } => {
            let result = record_intents(shared, peers, &candidates);
            let ok = result.is_ok();
            let _ = reply.send(result);
            if ok {
                wake.notify_one();
            }
        },
        Command::Acknowledged {
            peer,
            sequence,
            reply,
        } => {
            let result = shared
                .store
                .record_ack(&peer, sequence, SystemTime::now())
                .map_err(CourierError::from);
            shared.refresh_outbox_size();
            let _ = reply.send(result);
        },
        Command::Outbox { reply } => {
            let _ = reply.send(
                shared
                    .store
                    .entries(&shared.policy(), SystemTime::now())
                    .map_err(CourierError::from),
            );
        },
        Command::SendNow { peers, reply } => {
            let result = rearm(shared, peers);
            let ok = result.is_ok();
            let _ = reply.send(result);
            if ok {
                wake.notify_one();
            }
        },
        Command::SendAck { peer, sequence } => {
            // Routed to the sender by the command loop.
            debug!(%peer, sequence, "ack request reached the command handler");
        },
        Command::Reconfigure { config, reply } => {
            shared.config.send_replace(config);
            shared.refresh_outbox_size();
            let _ = reply.send(Ok(()));
            // A new resend or rate policy may make something due earlier.
            wake.notify_one();
        },
    }
}

/// Makes intents due now.
fn rearm(shared: &Shared, peers: Option<Vec<PeerName>>) -> Result<usize, CourierError> {
    let config = shared.config();
    let now = SystemTime::now();
    let names: Vec<PeerName> = match peers {
        Some(names) => names,
        None => shared
            .store
            .entries(&shared.policy(), now)?
            .into_iter()
            .map(|e| e.peer)
            .collect(),
    };
    let mut rearmed = 0;
    for name in names {
        if config.peer(name.as_str()).is_none() {
            return Err(CourierError::UnknownPeer(name.to_string()));
        }
        if shared.store.retry(&name, now)? {
            rearmed += 1;
        }
    }
    Ok(rearmed)
}

/// Writes the intents (committed before anything is sent).
fn record_intents(
    shared: &Shared,
    peers: Option<Vec<PeerName>>,
    candidates: &[Candidate],
) -> Result<Vec<PeerName>, CourierError> {
    let config = shared.config();
    if candidates.is_empty() {
        return Err(CourierError::NoCandidates);
    }
    let targets: Vec<&peerd_config::PeerConfig> = match &peers {
        None => config.peers.iter().filter(|p| p.announce).collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                config
                    .peer(n.as_str())
                    .ok_or_else(|| CourierError::UnknownPeer(n.to_string()))
            })
            .collect::<Result<_, _>>()?,
    };
    let now = SystemTime::now();
    let mut covered = Vec::new();
    for peer in targets {
        let plain = peer.format == PeerFormat::Plain;
        if !plain && peer.public_key.is_none() {
            return Err(CourierError::NoKey(peer.name.clone()));
        }
        shared
            .store
            .set_intent(&peer.name, candidates, plain, now)?;
        covered.push(peer.name.clone());
    }
    shared.refresh_outbox_size();
    Ok(covered)
}

/// Reads a configured password off the async threads (a file read, or a
/// command that may take a while).
async fn read_password(login: &Login) -> Result<Zeroizing<String>, String> {
    let secret = login.password.clone();
    tokio::task::spawn_blocking(move || secret.read())
        .await
        .map_err(|e| format!("reading the password: {e}"))?
        .map_err(|e| e.to_string())
}

async fn submission(shared: &Shared) -> Result<Submission, SendError> {
    let config = shared.config();
    let smtp = &config.mail.smtp;
    let password = match &smtp.login {
        Some(login) => Some(read_password(login).await.map_err(SendError::Transient)?),
        None => None,
    };
    Submission::new(smtp, password, STEP_TIMEOUT)
}

/// Builds the mail for one due intent: sealed afresh with fresh times, or
/// the plain readable mail.
fn build_mail(
    shared: &Shared,
    sequence: &mut SequenceFile,
    peer: &peerd_config::PeerConfig,
    candidates: &[Candidate],
    plain: bool,
) -> Result<(Vec<u8>, Option<u64>), SendError> {
    let config = shared.config();
    let now = SystemTime::now();
    let from = config.mail.address.as_str();
    let message_id = new_message_id(from).map_err(|e| SendError::Transient(e.to_string()))?;
    let headers = MailHeaders {
        from_name: config.identity.name.as_str(),
        from,
        to: peer.email.as_str(),
        date: now,
        message_id: &message_id,
    };
    if plain {
        let raw = plain_mail(&headers, candidates, now + config.announce.valid_for)
            .map_err(|e| SendError::Permanent(e.to_string()))?;
        return Ok((raw, None));
    }
    let key = peer
        .public_key
        .ok_or_else(|| SendError::Permanent(format!("no key for peer {}", peer.name)))?;
    // A clock before 2020 or an unusable counter: retry later.
    let seq = sequence
        .next(now)
        .map_err(|e| SendError::Transient(e.to_string()))?;
    let message = peerd_announce::announcement(
        &shared.identity,
        key,
        seq,
        now,
        config.announce.valid_for,
        candidates.to_vec(),
    )
    .map_err(|e| SendError::Transient(e.to_string()))?;
    let envelope =
        seal(&shared.identity, &message).map_err(|e| SendError::Permanent(e.to_string()))?;
    let raw = sealed_mail(&headers, &envelope).map_err(|e| SendError::Permanent(e.to_string()))?;
    Ok((raw, Some(seq)))
}

/// Sends everything the outbox says is due, over one connection. On
/// shutdown it stops between mails (what is not sent stays due on disk).
async fn send_due(shared: &Shared, sequence: &mut SequenceFile, shutdown: &CancellationToken) {
    let config = shared.config();
    let due = match shared.store.due(&shared.policy(), SystemTime::now()) {
        Ok(due) => due,
        Err(e) => {
            warn!(error = %e, "cannot read the outbox");
            shared.set_error(Some(e.to_string()));
            return;
        },
    };
    if due.is_empty() {
        return;
    }
    let mut transport = submission(shared).await;
    for item in due {
        if shutdown.is_cancelled() {
            break;
        }
        let Some(peer) = config.peer(item.peer.as_str()) else {
            // removed from the configuration since: forget the intent
            let _ = shared.store.remove(&item.peer);
            continue;
        };
        let result = match &mut transport {
            Err(e) => Err(e.clone()),
            Ok(transport) => match build_mail(shared, sequence, peer, &item.candidates, item.plain)
            {
                Ok((raw, seq)) => transport
                    .send(&config.mail.address, &peer.email, &raw)
                    .await
                    .map(|()| seq),
                Err(e) => Err(e),
            },
        };
        let now = SystemTime::now();
        match result {
            Ok(seq) => {
                info!(peer = %item.peer, attempt = item.attempt, "announcement sent");
                if let Err(e) = shared.store.record_sent(
                    &item.peer,
                    item.generation,
                    seq.unwrap_or(0),
                    &shared.policy(),
                    now,
                ) {
                    warn!(error = %e, "cannot record a sent announcement");
                }
                shared.set_error(None);
                shared.emit(CourierEvent::AnnouncementSent {
                    peer: item.peer.clone(),
                    candidates: item.candidates.clone(),
                    sequence: seq,
                });
            },
            Err(error) => {
                warn!(peer = %item.peer, error = %error, "announcement not sent");
                let kind = if error.is_transient() {
                    FailureKind::Transient
                } else {
                    FailureKind::Permanent
                };
                if let Err(e) = shared.store.record_failure(
                    &item.peer,
                    item.generation,
                    kind,
                    error.message(),
                    &shared.policy(),
                    now,
                ) {
                    warn!(error = %e, "cannot record a failed announcement");
                }
                shared.set_error(Some(error.to_string()));
                shared.emit(CourierEvent::SendFailed {
                    peer: item.peer.clone(),
                    error: error.message().to_owned(),
                    permanent: !error.is_transient(),
                });
            },
        }
    }
    if let Ok(transport) = transport {
        transport.close().await;
    }
    shared.refresh_outbox_size();
}

/// Mails `peer` an ack for `acked` (best effort: if it is lost, the peer
/// re-sends its announcement and gets another ack).
async fn send_ack(shared: &Shared, sequence: &mut SequenceFile, peer: &PeerName, acked: u64) {
    let config = shared.config();
    let Some(peer_config) = config.peer(peer.as_str()) else {
        return;
    };
    let Some(key) = peer_config.public_key else {
        return;
    };
    let result = async {
        let now = SystemTime::now();
        let seq = sequence
            .next(now)
            .map_err(|e| SendError::Transient(e.to_string()))?;
        let mut message: Message = peerd_announce::announcement(
            &shared.identity,
            key,
            seq,
            now,
            config.announce.valid_for,
            Vec::new(),
        )
        .map_err(|e| SendError::Transient(e.to_string()))?;
        message.body = Body::Ack { sequence: acked };
        let envelope =
            seal(&shared.identity, &message).map_err(|e| SendError::Permanent(e.to_string()))?;
        let from = config.mail.address.as_str();
        let message_id = new_message_id(from).map_err(|e| SendError::Transient(e.to_string()))?;
        let raw = sealed_mail(
            &MailHeaders {
                from_name: config.identity.name.as_str(),
                from,
                to: peer_config.email.as_str(),
                date: now,
                message_id: &message_id,
            },
            &envelope,
        )
        .map_err(|e| SendError::Permanent(e.to_string()))?;
        let mut transport = submission(shared).await?;
        let sent = transport
            .send(&config.mail.address, &peer_config.email, &raw)
            .await;
        transport.close().await;
        sent
    }
    .await;
    match result {
        Ok(()) => info!(%peer, acked, "ack sent"),
        Err(e) => warn!(%peer, error = %e, "ack not sent"),
    }
}

/// The receiver: keeps a mailbox session and judges our mail, until
/// shutdown. Failures are reported and retried with backoff; they never
/// end the task.
async fn receive_loop(
    shared: Arc<Shared>,
    commands: mpsc::WeakSender<Command>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut config = shared.config.subscribe();
    let mut network = shared.network.subscribe();
    let mut failures: u32 = 0;
    while !shutdown.is_cancelled() {
        if checks_on_demand(&config.borrow()) {
            // The link is down between checks: a session, or a poll, is
            // made only when one is asked for (the link manager's mail
            // check, `peerctl check`), never on a timer of our own.
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = wake.notified() => {},
            }
        }
        let protocol = config.borrow_and_update().mail.incoming.protocol;
        network.borrow_and_update();
        let session = async {
            match protocol {
                IncomingProtocol::Imap => {
                    imap_session(&shared, &commands, &wake, &shutdown, &config).await
                },
                IncomingProtocol::Pop3 => {
                    pop3_polling(&shared, &commands, &wake, &shutdown, &config).await
                },
            }
        };
        tokio::pin!(session);
        let result = tokio::select! {
            r = &mut session => r,
            _ = network.changed() => Ok(Ended::AddressChanged),
            // The session logs out on its own; a server that cannot be
            // reached any more (our address went) gets only a moment.
            () = shutdown.cancelled() => {
                tokio::time::timeout(SHUTDOWN_GRACE, &mut session)
                    .await
                    .unwrap_or(Ok(Ended::Shutdown))
            },
        };
        shared
            .state
            .send_if_modified(|s| std::mem::replace(&mut s.connected, false));
        let error = match result {
            Ok(Ended::Shutdown) => return,
            Ok(Ended::Reconfigured) => {
                info!("mailbox settings reloaded; connecting again");
                failures = 0;
                continue;
            },
            Ok(Ended::Checked) => {
                failures = 0;
                continue;
            },
            Ok(Ended::AddressChanged) => {
                info!("this host's address changed; connecting to the mailbox again");
                failures = 0;
                continue;
            },
            Err(error) => error,
        };
        failures = failures.saturating_add(1);
        warn!(%error, "mailbox check failed");
        shared
            .state
            .send_modify(|s| s.mailbox_error = Some(error.clone()));
        shared.emit(CourierEvent::MailboxError { error });
        if checks_on_demand(&config.borrow()) {
            // The next check is the link manager's to ask for.
            continue;
        }
        let ceiling = RECONNECT_BASE
            .saturating_mul(1 << failures.min(10).saturating_sub(1))
            .min(RECONNECT_MAX);
        let delay = ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {},
            _ = network.changed() => {},
            () = tokio::time::sleep(delay) => {},
        }
    }
}

/// Why a mailbox session ended without an error.
enum Ended {
    /// The shutdown token was cancelled.
    Shutdown,
    /// The configuration changed: connect again with the new one.
    Reconfigured,
    /// This host's addresses changed: the session was dropped.
    AddressChanged,
    /// One check was asked for and made (an on-demand link).
    Checked,
}

/// Whether the mailbox is checked only when asked (a link dialled on
/// demand: no session is kept up, no poll runs on a timer, since either
/// would need the link, or fail while it is down).
fn checks_on_demand(config: &Config) -> bool {
    config.link.dials_on_demand()
}

/// Whether [`CourierHandle::reconfigure`] replaced the configuration since
/// this session began.
fn reconfigured(config: &watch::Receiver<Arc<Config>>) -> bool {
    config.has_changed().unwrap_or(false)
}

/// The IMAP account's name in the ledger: user, server and port.
fn account(incoming: &peerd_config::IncomingConfig) -> String {
    let user = incoming.login.as_ref().map_or("", |l| l.username.as_str());
    format!(
        "{}:{user}@{}:{}",
        incoming.protocol, incoming.host, incoming.port
    )
}

/// The addresses whose plain mail may carry a hint.
fn plain_senders(config: &Config) -> Vec<String> {
    config
        .peers
        .iter()
        .filter(|p| p.accept_unsigned && p.public_key.is_some())
        .map(|p| p.email.as_str().to_owned())
        .collect()
}

async fn login_password(shared: &Shared) -> Result<(String, Zeroizing<String>), String> {
    let config = shared.config();
    match &config.mail.incoming.login {
        Some(login) => Ok((login.username.clone(), read_password(login).await?)),
        None => Err("no username/password configured for [mail.incoming]".to_owned()),
    }
}

/// One IMAP connection: scan every folder, IDLE on the first (or wait
/// `poll_interval`), repeat. Returns `Ok` on shutdown, `Err` when the
/// connection must be made again.
async fn imap_session(
    shared: &Shared,
    commands: &mpsc::WeakSender<Command>,
    wake: &Notify,
    shutdown: &CancellationToken,
    config_changes: &watch::Receiver<Arc<Config>>,
) -> Result<Ended, String> {
    let config = shared.config();
    let incoming = &config.mail.incoming;
    let (user, password) = login_password(shared).await?;
    let tls = tls::client_config(incoming.ca_file.as_deref()).map_err(|e| e.to_string())?;
    let mut mailbox = tokio::select! {
        () = shutdown.cancelled() => return Ok(Ended::Shutdown),
        m = ImapMailbox::connect(incoming, &user, &password, tls, STEP_TIMEOUT) => m.map_err(|e| e.message)?,
    };
    drop(password);
    shared
        .state
        .send_if_modified(|s| !std::mem::replace(&mut s.connected, true));
    let account = account(incoming);
    let senders = plain_senders(&config);
    let first = incoming
        .folders
        .first()
        .cloned()
        .unwrap_or_else(|| "INBOX".to_owned());
    // The IDLE folder is scanned last, so it is still selected when IDLE
    // starts and nothing can arrive unseen between the scan and the IDLE.
    let mut order: Vec<&String> = incoming.folders.iter().skip(1).collect();
    order.push(&first);
    loop {
        for folder in order.iter().copied() {
            let mark = shared
                .store
                .imap_position(&account, folder)
                .map_err(|e| e.to_string())?
                .map(|p| FolderMark {
                    uid_validity: p.uid_validity,
                    last_uid: p.highest_uid,
                });
            let scan = tokio::select! {
                () = shutdown.cancelled() => { mailbox.logout().await; return Ok(Ended::Shutdown); },
                s = mailbox.scan(folder, mark, &senders, incoming.max_message_size) => s.map_err(|e| e.message)?,
            };
            let Some(scan) = scan else {
                debug!(folder, "folder does not exist; skipped");
                continue;
            };
            debug!(
                folder,
                found = scan.found.len(),
                last_uid = scan.mark.last_uid,
                "folder scanned"
            );
            // Earlier folders are done; these stay pending until the
            // folder's mark moves past them.
            shared.report_pending(scan.found.len());
            for found in scan.found {
                let verdict = match &found.raw {
                    Some(raw) => judge(shared, commands, raw),
                    None => oversize(shared, found.size),
                };
                if verdict == Verdict::Ours {
                    dispose_imap(&mut mailbox, incoming, folder, found.uid).await?;
                }
            }
            shared
                .store
                .imap_examined(&account, folder, scan.mark.uid_validity, scan.mark.last_uid)
                .map_err(|e| e.to_string())?;
            shared.report_pending(0);
        }
        shared.state.send_modify(|s| {
            s.last_check = Some(SystemTime::now());
            s.mailbox_error = None;
        });
        if checks_on_demand(&shared.config()) {
            mailbox.logout().await;
            return Ok(Ended::Checked);
        }
        if mailbox.supports_idle() {
            let woken = async {
                tokio::select! {
                    () = shutdown.cancelled() => {},
                    () = wake.notified() => {},
                }
            };
            debug!(folder = %first, "idling");
            mailbox = mailbox.idle(&first, woken).await.map_err(|e| e.message)?;
            debug!(folder = %first, "idle ended");
        } else {
            tokio::select! {
                () = shutdown.cancelled() => {},
                () = wake.notified() => {},
                () = tokio::time::sleep(incoming.poll_interval) => {},
            }
        }
        if shutdown.is_cancelled() {
            mailbox.logout().await;
            return Ok(Ended::Shutdown);
        }
        if reconfigured(config_changes) {
            mailbox.logout().await;
            return Ok(Ended::Reconfigured);
        }
    }
}

async fn dispose_imap(
    mailbox: &mut ImapMailbox,
    incoming: &peerd_config::IncomingConfig,
    folder: &str,
    uid: u32,
) -> Result<(), String> {
    let done = match &incoming.processed {
        Processed::Keep => return Ok(()),
        Processed::Delete => mailbox.delete(folder, uid).await,
        Processed::Move(target) => mailbox.move_to(folder, uid, target).await,
    }
    .map_err(|e| e.message)?;
    if !done {
        warn!(
            folder,
            uid, "the server lacks UIDPLUS/MOVE: keeping the processed announcement"
        );
    }
    Ok(())
}

/// A peerd mail too large to download: reported, never fetched.
fn oversize(shared: &Shared, size: u64) -> Verdict {
    let config = shared.config();
    let limit = config.mail.incoming.max_message_size;
    warn!(
        size,
        limit, "a peerd mail larger than max_message_size was not downloaded"
    );
    shared.emit(CourierEvent::AnnouncementRejected {
        peer: None,
        from: None,
        reason: Rejection::Malformed("larger than max_message_size"),
    });
    Verdict::Rejected("malformed")
}

/// What a downloaded mail came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Our accepted message (or a second delivery of one): handle it per
    /// `processed`.
    Ours,
    /// Rejected: left where it is for the user to inspect.
    Rejected(&'static str),
    /// Someone else's mail (a hint is the peer's own mail too).
    NotOurs,
}

impl Verdict {
    /// What the ledger remembers.
    pub(crate) fn outcome(&self) -> MailOutcome {
        match self {
            Self::Ours => MailOutcome::Accepted,
            Self::Rejected(code) => MailOutcome::rejected(*code),
            Self::NotOurs => MailOutcome::NotOurs,
        }
    }
}

/// Judges one downloaded mail and acts on the outcome.
fn judge(shared: &Shared, commands: &mpsc::WeakSender<Command>, raw: &[u8]) -> Verdict {
    let config = shared.config();
    let peers = shared.known_peers();
    let receiver = Receiver {
        identity: &shared.identity,
        peers: &peers,
        history: shared.store.as_ref(),
        now: SystemTime::now(),
        clock_skew: config.announce.clock_skew,
        max_message_size: usize::try_from(config.mail.incoming.max_message_size)
            .unwrap_or(usize::MAX),
    };
    match receiver.receive(raw) {
        Ok(Received::Message(accepted)) => {
            let peer = accepted.peer.clone();
            if let Err(e) = shared
                .store
                .record_accepted(&accepted.message.sender, accepted.last_accepted())
            {
                warn!(error = %e, "cannot record an accepted message");
            }
            match &accepted.message.body {
                Body::Announcement(candidates) => {
                    info!(%peer, sequence = accepted.message.sequence, "announcement received");
                    shared.emit(CourierEvent::AnnouncementReceived {
                        peer: peer.clone(),
                        candidates: candidates.clone(),
                        sequence: accepted.message.sequence,
                    });
                    let auto_connect = config.peer(peer.as_str()).is_some_and(|p| p.auto_connect);
                    if !auto_connect && let Some(commands) = commands.upgrade() {
                        let _ = commands.try_send(Command::SendAck {
                            peer,
                            sequence: accepted.message.sequence,
                        });
                    }
                },
                Body::Ack { sequence } => {
                    info!(%peer, sequence, "ack received");
                    if let Err(e) = shared.store.record_ack(&peer, *sequence, SystemTime::now()) {
                        warn!(error = %e, "cannot record an ack");
                    }
                    shared.refresh_outbox_size();
                    shared.emit(CourierEvent::AckReceived {
                        peer,
                        sequence: *sequence,
                    });
                },
            }
            Verdict::Ours
        },
        Ok(Received::Hint(hint)) => {
            let peer = peers[hint.peer_index].name.clone();
            info!(%peer, ip = %hint.ip, "address hint in a plain mail");
            shared.emit(CourierEvent::HintReceived {
                peer,
                ip: hint.ip,
                port: hint.port,
            });
            Verdict::NotOurs
        },
        Err(rejected) => match rejected.reason.clone() {
            Rejection::NotPeerdMail => Verdict::NotOurs,
            Rejection::Duplicate => {
                debug!(%rejected, "second delivery of an accepted message");
                Verdict::Ours
            },
            Rejection::Stale { .. } | Rejection::Expired => {
                debug!(%rejected, "old announcement ignored");
                Verdict::Rejected(rejected.reason.code())
            },
            reason => {
                warn!(%rejected, "peerd mail rejected");
                let code = reason.code();
                shared.emit(CourierEvent::AnnouncementRejected {
                    peer: rejected.peer,
                    from: rejected.from,
                    reason,
                });
                Verdict::Rejected(code)
            },
        },
    }
}

/// One POP3 poll per `poll_interval` (or when woken): new messages by
/// UIDL, headers first (TOP n 0), bodies only of our mail.
async fn pop3_polling(
    shared: &Shared,
    commands: &mpsc::WeakSender<Command>,
    wake: &Notify,
    shutdown: &CancellationToken,
    config_changes: &watch::Receiver<Arc<Config>>,
) -> Result<Ended, String> {
    let config = shared.config();
    let incoming = &config.mail.incoming;
    let account = account(incoming);
    let senders = plain_senders(&config);
    loop {
        let (user, password) = login_password(shared).await?;
        let tls = tls::client_config(incoming.ca_file.as_deref()).map_err(|e| e.to_string())?;
        let mode = match incoming.security {
            Security::Tls => peerd_pop3::Security::Tls,
            Security::StartTls => peerd_pop3::Security::StartTls,
            Security::None => peerd_pop3::Security::Plain,
        };
        let mut options =
            peerd_pop3::ConnectOptions::new(incoming.host.clone(), incoming.port, mode, tls);
        options.timeout = STEP_TIMEOUT;
        let poll = pop3::poll(
            &shared.store,
            pop3::PollSettings {
                options,
                user: &user,
                password: &password,
                account: &account,
                senders: &senders,
                max_size: incoming.max_message_size,
                delete: incoming.processed == Processed::Delete,
            },
            |raw| judge(shared, commands, raw),
            |size| oversize(shared, size),
            |pending| shared.report_pending(pending),
        );
        tokio::select! {
            () = shutdown.cancelled() => return Ok(Ended::Shutdown),
            r = poll => r?,
        }
        drop(password);
        shared.state.send_modify(|s| {
            s.last_check = Some(SystemTime::now());
            s.mailbox_error = None;
        });
        if checks_on_demand(&shared.config()) {
            return Ok(Ended::Checked);
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(Ended::Shutdown),
            () = wake.notified() => {},
            () = tokio::time::sleep(incoming.poll_interval) => {},
        }
        if reconfigured(config_changes) {
            return Ok(Ended::Reconfigured);
        }
    }
}
