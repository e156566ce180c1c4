//! The connector actor.
//!
//! - **Owns**: the QUIC endpoints (one per `[listen]` address, plus one
//!   dialling endpoint per address family on an ephemeral port), every
//!   connection to a peer, the dial attempts, the address-book snapshot
//!   the handshakes check against, and the tasks that serve streams.
//! - **Inputs**: [`ConnectorHandle`] methods: `connect` (a verified
//!   announcement's candidates and sequence number, or the user's
//!   `connect`), `disconnect`, `open`, `incoming_streams`,
//!   `set_address_book`, `local_addresses_changed`.
//! - **Outputs**: each peer's [`PeerState`] on a `watch`, [`ConnectEvent`]s
//!   on a `broadcast` (among them `Acknowledged`, which the daemon passes
//!   to the courier).
//! - **Shutdown**: on the cancellation token (or when every handle is
//!   dropped) it closes every connection with a "shutting down" code,
//!   cancels dials, waits (boundedly) for its tasks and for the close
//!   frames to leave, and returns.
//!
//! # One connection per peer
//!
//! Both sides may dial at once, and a peer may dial again after losing a
//! session this side still thinks is up. Both cases are settled by one
//! rule, decided by one side so the two cannot disagree: the side with the
//! **lower key** is the arbiter. Every hello it sends carries a
//! *selection* number, larger than any it sent before (microseconds of the
//! clock, or the last plus one); the arbiter keeps the newest connection
//! that completed its hello and closes the others ("replaced"), and the
//! other side keeps, among its connections, the one with the highest
//! selection, closing those below. Whatever order packets arrive in, both
//! end on the same connection. A dial that loses is closed cleanly.
//!
//! # Dialling
//!
//! All candidates of the latest announcement, IPv6 and IPv4 interleaved
//! with IPv6 first, one started every [`Tuning::stagger`] (or at once when
//! the previous one failed), in the spirit of RFC 8305. The first whose
//! TLS handshake completes with the peer's key wins and the others are
//! dropped; the winner must then complete the hello exchange, because a
//! TLS 1.3 client finishes its handshake before the server has checked the
//! client's key. The whole attempt is bounded by
//! [`Tuning::connect_timeout`]; the user's `disconnect` gives up on it.
//!
//! # Migration
//!
//! QUIC lets only the dialling side move. [`ConnectorHandle::local_addresses_changed`]
//! rebinds the dialling endpoints to fresh sockets, and sessions we
//! dialled carry on from the new address (the peer validates the new
//! path). When the accepting side moves, it announces its new address;
//! `connect` with the higher sequence and addresses that no longer include
//! the session's closes the old session ("peer address changed", which its
//! streams report) and dials the new ones.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peerd_config::{Config, ListenConfig, ServiceConfig};
use peerd_core::{Candidate, Identity, PeerName, PublicKey, ServiceName};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::{ConnectError, OpenError};
use crate::state::{
    ConnectEvent, Direction, DisconnectReason, FailReason, Path, PeerState, RefusedReason, close,
};
use crate::stream::{PeerStream, SessionShared, reason_of};
use crate::tls::{TlsFactory, peer_key};
use crate::wire::{
    Frame, Hello, OpenRequest, RefuseCode, VERSION, WireError, display_text, read_frame,
    write_frame,
};

/// What a service stream copies per read and write, each way, between
/// the QUIC stream and the service's TCP connection (so 512 KiB per open
/// service stream). tokio's default of 8 KiB made this copy the bottleneck:
/// a 256 MiB stream to a TCP sink on loopback ran at 609 MB/s with it and
/// at 920 MB/s with 256 KiB (64 KiB and 128 KiB fell in between), measured
/// by `examples/throughput.rs` (docs/performance.md).
const SERVICE_COPY_BUFFER: usize = 256 * 1024;

/// How often sessions are checked for a peer that moved (migration).
const PATH_CHECK: Duration = Duration::from_millis(500);

/// Timings that are not in the configuration file: the daemon uses
/// [`Tuning::default`]; tests shorten them.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Between starting two dial candidates (default 250 ms, RFC 8305's
    /// recommended "connection attempt delay").
    pub stagger: Duration,
    /// One whole dial attempt: every candidate, TLS and hello (default 10 s).
    pub connect_timeout: Duration,
    /// An incoming handshake, and the hello after any handshake
    /// (default 5 s).
    pub handshake_timeout: Duration,
    /// The answer to a stream's open request, and the open request on a
    /// stream the peer opened (default 10 s).
    pub open_timeout: Duration,
    /// Connecting a service's TCP target (default 5 s).
    pub target_timeout: Duration,
    /// How long shutdown waits for tasks and close frames (default 2 s).
    pub shutdown_grace: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            stagger: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            open_timeout: Duration::from_secs(10),
            target_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Who may connect and what they may open: the peers (a plain peer has no
/// key) and the `[[service]]`s.
#[derive(Debug, Clone, Default)]
pub struct AddressBook {
    peers: BTreeMap<PeerName, Option<PublicKey>>,
    services: Vec<ServiceConfig>,
}

impl AddressBook {
    /// A book of these peers and services.
    pub fn new(
        peers: impl IntoIterator<Item = (PeerName, Option<PublicKey>)>,
        services: Vec<ServiceConfig>,
    ) -> Self {
        Self {
            peers: peers.into_iter().collect(),
            services,
        }
    }

    /// The `[[peer]]`s and `[[service]]`s of the configuration (the daemon
    /// adds the runtime address book's peers with [`AddressBook::add`]).
    pub fn from_config(config: &Config) -> Self {
        Self::new(
            config.peers.iter().map(|p| (p.name.clone(), p.public_key)),
            config.services.clone(),
        )
    }

    /// Adds (or replaces) one peer.
    pub fn add(&mut self, name: PeerName, key: Option<PublicKey>) {
        self.peers.insert(name, key);
    }
}

/// Everything [`spawn`] needs besides the identity.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// `[listen]`.
    pub listen: ListenConfig,
    /// Peers and services.
    pub book: AddressBook,
    /// Timings.
    pub tuning: Tuning,
}

impl ConnectorConfig {
    /// From the daemon's configuration, with default timings.
    pub fn from_config(config: &Config) -> Self {
        Self {
            listen: config.listen.clone(),
            book: AddressBook::from_config(config),
            tuning: Tuning::default(),
        }
    }
}

/// The snapshot that handshakes and stream handlers read.
#[derive(Debug, Default)]
struct Book {
    by_key: BTreeMap<PublicKey, PeerName>,
    keys: Arc<BTreeSet<PublicKey>>,
    services: BTreeMap<ServiceName, ServiceConfig>,
}

impl Book {
    fn of(book: &AddressBook) -> Self {
        let by_key: BTreeMap<PublicKey, PeerName> = book
            .peers
            .iter()
            .filter_map(|(name, key)| key.map(|k| (k, name.clone())))
            .collect();
        Self {
            keys: Arc::new(by_key.keys().copied().collect()),
            by_key,
            services: book
                .services
                .iter()
                .map(|s| (s.name.clone(), s.clone()))
                .collect(),
        }
    }
}

type Reply<T> = oneshot::Sender<T>;

enum Command {
    Connect {
        peer: PeerName,
        candidates: Vec<Candidate>,
        sequence: u64,
        reply: Reply<Result<(), ConnectError>>,
    },
    Disconnect {
        peer: PeerName,
        reply: Reply<Result<bool, ConnectError>>,
    },
    Session {
        peer: PeerName,
        reply: Reply<Result<Arc<SessionShared>, OpenError>>,
    },
    SetBook {
        book: AddressBook,
        reply: Reply<()>,
    },
    Rebind {
        reply: Reply<Result<(), ConnectError>>,
    },
    IncomingStreams {
        reply: Reply<mpsc::Receiver<PeerStream>>,
    },
    ConnectionCount {
        reply: Reply<usize>,
    },
}

/// The connector's handle: cheap to clone.
#[derive(Clone)]
pub struct ConnectorHandle {
    commands: mpsc::Sender<Command>,
    states: watch::Receiver<BTreeMap<PeerName, PeerState>>,
    events: broadcast::Sender<ConnectEvent>,
    listening: Arc<Vec<SocketAddr>>,
    open_timeout: Duration,
}

impl fmt::Debug for ConnectorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorHandle")
            .field("listening", &self.listening)
            .finish_non_exhaustive()
    }
}

impl ConnectorHandle {
    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(make(reply)).await.ok()?;
        rx.await.ok()
    }

    /// A verified announcement from `peer` (or the user's `connect`): dial
    /// `candidates` unless a session is up. `sequence` is what our hello
    /// acknowledges; a sequence above the session's with addresses that no
    /// longer include the session's replaces the session ("peer address
    /// changed"). Returns once the attempt has started (watch the state,
    /// or use [`wait_connected`](Self::wait_connected)).
    pub async fn connect(
        &self,
        peer: &PeerName,
        candidates: Vec<Candidate>,
        sequence: u64,
    ) -> Result<(), ConnectError> {
        self.request(|reply| Command::Connect {
            peer: peer.clone(),
            candidates,
            sequence,
            reply,
        })
        .await
        .ok_or(ConnectError::Gone)?
    }

    /// Drops the session with `peer`, or gives up connecting to it (the
    /// state then says so). Returns whether there was anything to drop.
    pub async fn disconnect(&self, peer: &PeerName) -> Result<bool, ConnectError> {
        self.request(|reply| Command::Disconnect {
            peer: peer.clone(),
            reply,
        })
        .await
        .ok_or(ConnectError::Gone)?
    }

    /// Opens a stream to `peer`'s `service` (or, with `None`, a plain
    /// stream for whatever program takes them there). Needs a session;
    /// fails with the peer's reason when it refuses.
    pub async fn open(
        &self,
        peer: &PeerName,
        service: Option<ServiceName>,
    ) -> Result<PeerStream, OpenError> {
        let shared = self
            .request(|reply| Command::Session {
                peer: peer.clone(),
                reply,
            })
            .await
            .ok_or(OpenError::Gone)??;
        let wait = self.open_timeout;
        timeout(wait, open_on(shared, service))
            .await
            .map_err(|_| OpenError::Timeout(wait.as_secs()))?
    }

    /// Plain streams peers open toward this host from now on (replacing
    /// an earlier receiver). Without a receiver they are refused ("no
    /// listener"); so are they while the receiver's queue (16) is full.
    pub async fn incoming_streams(&self) -> Result<mpsc::Receiver<PeerStream>, ConnectError> {
        self.request(|reply| Command::IncomingStreams { reply })
            .await
            .ok_or(ConnectError::Gone)
    }

    /// Replaces the address book: sessions with peers that left it, or
    /// whose key changed, are closed; new handshakes check the new keys.
    pub async fn set_address_book(&self, book: AddressBook) -> Result<(), ConnectError> {
        self.request(|reply| Command::SetBook { book, reply })
            .await
            .ok_or(ConnectError::Gone)
    }

    /// This host's addresses changed (from the address watcher): the
    /// dialling endpoints move to fresh sockets, and the sessions we
    /// dialled migrate to the new address.
    pub async fn local_addresses_changed(&self) -> Result<(), ConnectError> {
        self.request(|reply| Command::Rebind { reply })
            .await
            .ok_or(ConnectError::Gone)?
    }

    /// How many QUIC connections the endpoints hold (including ones still
    /// in their handshake or closing).
    pub async fn connection_count(&self) -> Result<usize, ConnectError> {
        self.request(|reply| Command::ConnectionCount { reply })
            .await
            .ok_or(ConnectError::Gone)
    }

    /// Waits until `peer` is connected (its address) or failed (the
    /// reason), at most `within`.
    pub async fn wait_connected(
        &self,
        peer: &PeerName,
        within: Duration,
    ) -> Result<SocketAddr, ConnectError> {
        let mut rx = self.states.clone();
        let seen = timeout(
            within,
            rx.wait_for(|m| {
                matches!(
                    m.get(peer),
                    Some(PeerState::Connected { .. } | PeerState::Failed { .. }) | None
                )
            }),
        )
        .await;
        let state = match seen {
            Ok(Ok(m)) => m.get(peer).cloned(),
            Ok(Err(_)) => return Err(ConnectError::Gone),
            Err(_) => {
                return Err(ConnectError::Failed {
                    peer: peer.clone(),
                    reason: FailReason::Timeout {
                        after: within,
                        tried: 0,
                    },
                });
            },
        };
        match state {
            Some(PeerState::Connected { address, .. }) => Ok(address),
            Some(PeerState::Failed { reason, .. }) => Err(ConnectError::Failed {
                peer: peer.clone(),
                reason,
            }),
            _ => Err(ConnectError::UnknownPeer(peer.to_string())),
        }
    }

    /// `peer`'s state (`Idle` for a name not in the book).
    pub fn state(&self, peer: &PeerName) -> PeerState {
        self.states.borrow().get(peer).cloned().unwrap_or_default()
    }

    /// Every peer's state.
    pub fn states(&self) -> BTreeMap<PeerName, PeerState> {
        self.states.borrow().clone()
    }

    /// A receiver of state changes.
    pub fn watch(&self) -> watch::Receiver<BTreeMap<PeerName, PeerState>> {
        self.states.clone()
    }

    /// A receiver of events from now on.
    pub fn events(&self) -> broadcast::Receiver<ConnectEvent> {
        self.events.subscribe()
    }

    /// The UDP addresses the connector listens on (with the real port when
    /// `[listen] port` was 0).
    pub fn listening(&self) -> &[SocketAddr] {
        &self.listening
    }
}

/// Opens a stream on a session: `Open`, then `Accept` or `Refuse`.
async fn open_on(
    shared: Arc<SessionShared>,
    service: Option<ServiceName>,
) -> Result<PeerStream, OpenError> {
    let lost = |shared: &SessionShared| OpenError::Lost(shared.reason());
    let (mut send, mut recv) = shared.conn.open_bi().await.map_err(|_| lost(&shared))?;
    let request = match &service {
        Some(name) => OpenRequest::Service(name.clone()),
        None => OpenRequest::Plain,
    };
    if write_frame(&mut send, &Frame::Open(request)).await.is_err() {
        return Err(lost(&shared));
    }
    match read_frame(&mut recv).await {
        Ok(Some(Frame::Accept)) => Ok(PeerStream::new(send, recv, shared, service)),
        Ok(Some(Frame::Refuse { code, reason })) => Err(OpenError::Refused {
            code,
            reason: display_text(&reason),
        }),
        Ok(Some(other)) => Err(OpenError::Protocol(format!(
            "expected accept or refuse, got {other:?}"
        ))),
        Ok(None) => Err(OpenError::Protocol(
            "the peer ended the stream without an answer".into(),
        )),
        Err(WireError::Io(_)) if shared.conn.close_reason().is_some() => Err(lost(&shared)),
        Err(e) => Err(OpenError::Protocol(e.to_string())),
    }
}

/// Starts the connector: binds the `[listen]` sockets and the dialling
/// sockets, then runs the actor on `tasks`.
pub fn spawn<E>(
    identity: &Identity,
    config: ConnectorConfig,
    tasks: &mut JoinSet<Result<(), E>>,
    shutdown: CancellationToken,
) -> Result<ConnectorHandle, ConnectError>
where
    E: From<ConnectError> + Send + 'static,
{
    let tls = TlsFactory::new(
        identity,
        config.listen.keepalive,
        config.listen.idle_timeout,
    )?;
    let book = Book::of(&config.book);
    let mut listeners = Vec::new();
    let mut listening = Vec::new();
    for ip in &config.listen.addresses {
        let address = SocketAddr::new(*ip, config.listen.port);
        // The endpoint's own server config takes nobody: each incoming
        // connection gets its own (see accept_one).
        let (server, _) = tls.server(Arc::new(BTreeSet::new()))?;
        let socket = bind_udp(address).map_err(|source| ConnectError::Bind { address, source })?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| ConnectError::Bind { address, source })?;
        listening.push(endpoint.local_addr().unwrap_or(address));
        listeners.push(endpoint);
    }
    let dialers = Dialers::bind();
    let (commands_tx, commands) = mpsc::channel(32);
    let (states_tx, states) = watch::channel(
        config
            .book
            .peers
            .keys()
            .map(|p| (p.clone(), PeerState::Idle))
            .collect(),
    );
    let (events, _) = broadcast::channel(256);
    let (internal_tx, internal) = mpsc::unbounded_channel();
    let (book_tx, book_rx) = watch::channel(Arc::new(book));
    let (plain_tx, plain_rx) = watch::channel(None);
    let token = shutdown.child_token();
    let ctx = Ctx {
        tls,
        tuning: config.tuning.clone(),
        book: book_rx,
        plain: plain_rx,
        internal: internal_tx,
        events: events.clone(),
        tracker: TaskTracker::new(),
        token: token.clone(),
    };
    let own_key = identity.public_key();
    let peers = config
        .book
        .peers
        .iter()
        .map(|(name, key)| (name.clone(), PeerEntry::new(*key)))
        .collect();
    let actor = Actor {
        ctx,
        own_key,
        listeners,
        dialers,
        peers,
        states: states_tx,
        book: book_tx,
        plain: plain_tx,
        last_selection: 0,
        next_id: 1,
        commands,
        internal,
    };
    info!(listening = ?listening, key = %own_key.fingerprint(), "Connector listening");
    tasks
        .spawn(async move { actor.run().await.map_err(E::from) }.instrument(info_span!("connect")));
    Ok(ConnectorHandle {
        commands: commands_tx,
        states,
        events,
        listening: Arc::new(listening),
        open_timeout: config.tuning.open_timeout,
    })
}

/// The receive buffer asked for on every UDP socket. Linux's default
/// (208 KiB) overflows when a fast sender's datagrams arrive faster than
/// the actor reads them, and every drop halves QUIC's congestion window:
/// a 256 MiB stream on loopback lost 471 datagrams and ran at 920 MB/s
/// with the default, none and 1220 MB/s with this (`examples/throughput.rs`,
/// docs/performance.md). The kernel caps the request at
/// `net.core.rmem_max`; a smaller buffer is not an error.
const UDP_RECEIVE_BUFFER: usize = 2 * 1024 * 1024;

/// A UDP socket on `address`; an IPv6 one is IPv6-only, so `0.0.0.0` and
/// `::` can share a port.
fn bind_udp(address: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if let Err(e) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        debug!(%address, error = %e, "Cannot enlarge the UDP receive buffer");
    }
    socket.bind(&address.into())?;
    Ok(socket.into())
}

/// The endpoints we dial from: one per family, on ephemeral ports, so that
/// they can be rebound to fresh sockets when our address changes (the
/// listening sockets keep their configured port).
#[derive(Clone, Debug, Default)]
struct Dialers {
    v4: Option<quinn::Endpoint>,
    v6: Option<quinn::Endpoint>,
}

impl Dialers {
    fn bind() -> Self {
        let make = |address: SocketAddr| match bind_udp(address).and_then(|s| {
            quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                None,
                s,
                Arc::new(quinn::TokioRuntime),
            )
        }) {
            Ok(e) => Some(e),
            Err(e) => {
                warn!(%address, error = %e, "Cannot dial from this address family");
                None
            },
        };
        Self {
            v4: make(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
            v6: make(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)),
        }
    }

    fn for_addr(&self, addr: &SocketAddr) -> Option<&quinn::Endpoint> {
        if addr.is_ipv6() {
            self.v6.as_ref()
        } else {
            self.v4.as_ref()
        }
    }

    fn rebind(&self) -> Result<(), ConnectError> {
        for (endpoint, ip) in [
            (&self.v4, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            (&self.v6, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        ] {
            if let Some(endpoint) = endpoint {
                let address = SocketAddr::new(ip, 0);
                let socket =
                    bind_udp(address).map_err(|source| ConnectError::Bind { address, source })?;
                endpoint
                    .rebind(socket)
                    .map_err(|source| ConnectError::Bind { address, source })?;
                debug!(local = ?endpoint.local_addr().ok(), "Dialling endpoint rebound");
            }
        }
        Ok(())
    }

    fn all(&self) -> impl Iterator<Item = &quinn::Endpoint> {
        self.v4.iter().chain(self.v6.iter())
    }
}

/// What the tasks share with the actor.
#[derive(Clone)]
struct Ctx {
    tls: TlsFactory,
    tuning: Tuning,
    /// The address book as the handshakes and stream handlers see it.
    book: watch::Receiver<Arc<Book>>,
    /// Where plain streams go, if anyone takes them.
    plain: watch::Receiver<Option<mpsc::Sender<PeerStream>>>,
    /// Sub-tasks report to the actor here (unbounded: a task must never
    /// wait on the actor while the actor waits on it).
    internal: mpsc::UnboundedSender<Internal>,
    events: broadcast::Sender<ConnectEvent>,
    /// Every sub-task (accept loops, dials, sessions, streams), so that
    /// shutdown can wait for them.
    tracker: TaskTracker,
    /// Cancelled at shutdown.
    token: CancellationToken,
}

impl Ctx {
    fn report(&self, msg: Internal) {
        // The actor may be gone (shutting down): nothing to tell then.
        let _ = self.internal.send(msg);
    }

    fn event(&self, event: ConnectEvent) {
        let _ = self.events.send(event);
    }
}

/// A connection that finished its hello, waiting for the actor's verdict.
struct Arrival {
    peer: PeerName,
    key: PublicKey,
    conn_id: u64,
    shared: Arc<SessionShared>,
    direction: Direction,
    local: SocketAddr,
    /// The other side's hello.
    hello: Hello,
    /// The hello we sent (outgoing only).
    sent: Option<Hello>,
    /// The dial this came from (outgoing only).
    dial_id: Option<u64>,
    verdict: Reply<Verdict>,
}

enum Verdict {
    /// Serve it; for an incoming connection, answer with this hello first.
    Keep {
        reply: Option<Hello>,
        frames: mpsc::UnboundedReceiver<Frame>,
    },
    /// Already closed by the actor.
    Drop,
}

enum Internal {
    Arrived(Box<Arrival>),
    DialFailed {
        peer: PeerName,
        dial_id: u64,
        reason: FailReason,
    },
    Ended {
        peer: PeerName,
        conn_id: u64,
    },
    Acked {
        peer: PeerName,
        sequence: u64,
    },
}

struct Dial {
    id: u64,
    cancel: CancellationToken,
}

struct Live {
    id: u64,
    shared: Arc<SessionShared>,
    selection: u64,
    frames: mpsc::UnboundedSender<Frame>,
}

struct PeerEntry {
    key: Option<PublicKey>,
    /// The highest sequence of the peer's announcements accepted here
    /// (what our hellos and acks say).
    theirs: u64,
    /// The highest sequence of ours the peer acknowledged (so each is
    /// reported once).
    ours_acked: u64,
    dial: Option<Dial>,
    session: Option<Live>,
    /// Whether the last event said "connected" (so a session replaced
    /// under a collision is not reported twice).
    reported_up: bool,
}

impl PeerEntry {
    fn new(key: Option<PublicKey>) -> Self {
        Self {
            key,
            theirs: 0,
            ours_acked: 0,
            dial: None,
            session: None,
            reported_up: false,
        }
    }
}

struct Actor {
    ctx: Ctx,
    own_key: PublicKey,
    listeners: Vec<quinn::Endpoint>,
    dialers: Dialers,
    peers: BTreeMap<PeerName, PeerEntry>,
    states: watch::Sender<BTreeMap<PeerName, PeerState>>,
    book: watch::Sender<Arc<Book>>,
    plain: watch::Sender<Option<mpsc::Sender<PeerStream>>>,
    /// The last selection number handed out (see "One connection per
    /// peer").
    last_selection: u64,
    /// Connection and dial ids.
    next_id: u64,
    commands: mpsc::Receiver<Command>,
    internal: mpsc::UnboundedReceiver<Internal>,
}

impl Actor {
    async fn run(mut self) -> Result<(), ConnectError> {
        for endpoint in &self.listeners {
            let ctx = self.ctx.clone();
            let endpoint = endpoint.clone();
            self.ctx
                .tracker
                .spawn(accept_loop(endpoint, ctx).in_current_span());
        }
        let mut paths = tokio::time::interval(PATH_CHECK);
        paths.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.ctx.token.cancelled() => break,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                Some(msg) = self.internal.recv() => self.internal(msg),
                _ = paths.tick() => self.follow_migrations(),
            }
        }
        self.shutdown().await;
        Ok(())
    }

    async fn shutdown(&mut self) {
        for entry in self.peers.values_mut() {
            if let Some(dial) = entry.dial.take() {
                dial.cancel.cancel();
            }
            if let Some(live) = entry.session.take() {
                live.shared
                    .close(close::SHUTDOWN, DisconnectReason::ShuttingDown);
            }
        }
        for endpoint in self.listeners.iter().chain(self.dialers.all()) {
            endpoint.close(close::SHUTDOWN, b"shutting down");
        }
        self.ctx.token.cancel();
        self.ctx.tracker.close();
        let grace = self.ctx.tuning.shutdown_grace;
        if timeout(grace, self.ctx.tracker.wait()).await.is_err() {
            warn!("Connector tasks still running after {grace:?}; leaving them");
        }
        for endpoint in self.listeners.iter().chain(self.dialers.all()) {
            let _ = timeout(grace, endpoint.wait_idle()).await;
        }
        info!("Connector stopped");
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A selection number above every earlier one (microseconds of the
    /// clock, so a restarted host still goes above what it said before).
    fn next_selection(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.last_selection = (self.last_selection + 1).max(now);
        self.last_selection
    }

    /// A peer that dialled us may move (QUIC migration: its address
    /// changed and the session followed): the state then shows where it
    /// is now, as the session sees it.
    fn follow_migrations(&self) {
        for (peer, entry) in &self.peers {
            let Some(live) = &entry.session else { continue };
            let now = live.shared.conn.remote_address();
            let moved = self.states.send_if_modified(|m| match m.get_mut(peer) {
                Some(PeerState::Connected { address, .. }) if *address != now => {
                    *address = now;
                    true
                },
                _ => false,
            });
            if moved {
                info!(%peer, address = %now, "The peer moved; the session followed it");
            }
        }
    }

    fn set_state(&self, peer: &PeerName, state: PeerState) {
        self.states.send_if_modified(|m| {
            let slot = m.entry(peer.clone()).or_default();
            if *slot == state {
                false
            } else {
                *slot = state;
                true
            }
        });
    }

    fn current_state(&self, peer: &PeerName) -> PeerState {
        self.states.borrow().get(peer).cloned().unwrap_or_default()
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Connect {
                peer,
                candidates,
                sequence,
                reply,
            } => {
                let r = self.connect(peer, candidates, sequence);
                let _ = reply.send(r);
            },
            Command::Disconnect { peer, reply } => {
                let _ = reply.send(self.disconnect(&peer));
            },
            Command::Session { peer, reply } => {
                let r = match self.peers.get(&peer) {
                    None => Err(OpenError::UnknownPeer(peer.to_string())),
                    Some(e) if e.key.is_none() => Err(OpenError::NoKey(peer)),
                    Some(e) => e
                        .session
                        .as_ref()
                        .map(|s| s.shared.clone())
                        .ok_or(OpenError::NotConnected(peer)),
                };
                let _ = reply.send(r);
            },
            Command::SetBook { book, reply } => {
                self.set_book(book);
                let _ = reply.send(());
            },
            Command::Rebind { reply } => {
                let r = self.dialers.rebind();
                if r.is_ok() {
                    info!(
                        "Local addresses changed: dialling sockets rebound, dialled sessions migrate"
                    );
                }
                let _ = reply.send(r);
            },
            Command::IncomingStreams { reply } => {
                let (tx, rx) = mpsc::channel(16);
                self.plain.send_replace(Some(tx));
                let _ = reply.send(rx);
            },
            Command::ConnectionCount { reply } => {
                let n = self
                    .listeners
                    .iter()
                    .chain(self.dialers.all())
                    .map(quinn::Endpoint::open_connections)
                    .sum();
                let _ = reply.send(n);
            },
        }
    }

    fn connect(
        &mut self,
        peer: PeerName,
        candidates: Vec<Candidate>,
        sequence: u64,
    ) -> Result<(), ConnectError> {
        let Some(entry) = self.peers.get_mut(&peer) else {
            return Err(ConnectError::UnknownPeer(peer.to_string()));
        };
        let Some(key) = entry.key else {
            return Err(ConnectError::NoKey(peer));
        };
        let newer = sequence > entry.theirs;
        if newer {
            entry.theirs = sequence;
        }
        if let Some(live) = &entry.session {
            let remote = live.shared.conn.remote_address().ip();
            let still_there = candidates
                .iter()
                .any(|c| canonical(c.addr.ip()) == canonical(remote));
            if !newer || still_there || candidates.is_empty() {
                if newer {
                    // The session stands; acknowledge on it.
                    let _ = live.frames.send(Frame::Ack { sequence });
                }
                debug!(%peer, sequence, "Already connected");
                return Ok(());
            }
            info!(%peer, sequence, old = %live.shared.conn.remote_address(), "A newer announcement moved the peer: replacing the session");
            entry.reported_up = false;
            if let Some(live) = entry.session.take() {
                live.shared
                    .close(close::ADDRESS_CHANGED, DisconnectReason::PeerAddressChanged);
            }
            self.ctx.event(ConnectEvent::Disconnected {
                peer: peer.clone(),
                reason: DisconnectReason::PeerAddressChanged,
            });
        }
        if candidates.is_empty() {
            return Err(ConnectError::NoCandidates(peer));
        }
        if let Some(dial) = &entry.dial {
            if !newer {
                debug!(%peer, "Already connecting");
                return Ok(());
            }
            dial.cancel.cancel();
        }
        let we_arbitrate = self.own_key < key;
        let hello = Hello {
            version: VERSION,
            selection: 0,
            acked: entry.theirs,
        };
        let hello = if we_arbitrate {
            Hello {
                selection: self.next_selection(),
                ..hello
            }
        } else {
            hello
        };
        let dial_id = self.id();
        let cancel = self.ctx.token.child_token();
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.dial = Some(Dial {
                id: dial_id,
                cancel: cancel.clone(),
            });
        }
        let addresses = happy_eyeballs_order(&candidates);
        info!(%peer, sequence, candidates = ?addresses, "Connecting");
        self.set_state(
            &peer,
            PeerState::Connecting {
                since: SystemTime::now(),
            },
        );
        let conn_id = self.id();
        let job = DialJob {
            ctx: self.ctx.clone(),
            dialers: self.dialers.clone(),
            peer: peer.clone(),
            key,
            addresses,
            hello,
            dial_id,
            conn_id,
            cancel,
        };
        self.ctx
            .tracker
            .spawn(job.run().instrument(info_span!("dial", %peer)));
        Ok(())
    }

    fn disconnect(&mut self, peer: &PeerName) -> Result<bool, ConnectError> {
        let Some(entry) = self.peers.get_mut(peer) else {
            return Err(ConnectError::UnknownPeer(peer.to_string()));
        };
        if entry.key.is_none() {
            return Err(ConnectError::NoKey(peer.clone()));
        }
        let mut any = false;
        let dial = entry.dial.take();
        let session = entry.session.take();
        if let Some(dial) = dial {
            dial.cancel.cancel();
            any = true;
        }
        if let Some(live) = session {
            entry.reported_up = false;
            live.shared
                .close(close::REQUESTED, DisconnectReason::Requested);
            info!(%peer, "Disconnected on request");
            self.set_state(peer, PeerState::Idle);
            self.ctx.event(ConnectEvent::Disconnected {
                peer: peer.clone(),
                reason: DisconnectReason::Requested,
            });
            return Ok(true);
        }
        if any {
            info!(%peer, "Gave up connecting on request");
            self.fail(peer, FailReason::Cancelled);
        }
        Ok(any)
    }

    fn fail(&self, peer: &PeerName, reason: FailReason) {
        self.set_state(
            peer,
            PeerState::Failed {
                reason: reason.clone(),
                at: SystemTime::now(),
            },
        );
        self.ctx.event(ConnectEvent::Failed {
            peer: peer.clone(),
            reason,
        });
    }

    fn set_book(&mut self, book: AddressBook) {
        let snapshot = Book::of(&book);
        let mut gone = Vec::new();
        for (name, entry) in &mut self.peers {
            let new_key = book.peers.get(name);
            if new_key.copied() != Some(entry.key) {
                gone.push(name.clone());
            }
        }
        for name in gone {
            if let Some(entry) = self.peers.remove(&name) {
                if let Some(dial) = entry.dial {
                    dial.cancel.cancel();
                }
                if let Some(live) = entry.session {
                    info!(peer = %name, "Key removed or changed: closing the session");
                    live.shared
                        .close(close::KEY_REMOVED, DisconnectReason::KeyRemoved);
                    self.ctx.event(ConnectEvent::Disconnected {
                        peer: name.clone(),
                        reason: DisconnectReason::KeyRemoved,
                    });
                }
            }
            self.states.send_modify(|m| {
                m.remove(&name);
            });
        }
        for (name, key) in &book.peers {
            if !self.peers.contains_key(name) {
                self.peers.insert(name.clone(), PeerEntry::new(*key));
                self.set_state(name, PeerState::Idle);
            }
        }
        self.book.send_replace(Arc::new(snapshot));
    }

    fn internal(&mut self, msg: Internal) {
        match msg {
            Internal::Arrived(a) => self.arrived(*a),
            Internal::DialFailed {
                peer,
                dial_id,
                reason,
            } => {
                let Some(entry) = self.peers.get_mut(&peer) else {
                    return;
                };
                if entry.dial.as_ref().is_none_or(|d| d.id != dial_id) {
                    return; // given up or superseded: already reported
                }
                entry.dial = None;
                if entry.session.is_some() {
                    debug!(%peer, %reason, "A dial failed, but a session is up");
                    return;
                }
                warn!(%peer, %reason, "Connecting failed");
                self.fail(&peer, reason);
            },
            Internal::Ended { peer, conn_id } => self.ended(&peer, conn_id),
            Internal::Acked { peer, sequence } => self.acked(&peer, sequence),
        }
    }

    fn acked(&mut self, peer: &PeerName, sequence: u64) {
        if let Some(entry) = self.peers.get_mut(peer)
            && sequence > entry.ours_acked
        {
            entry.ours_acked = sequence;
            debug!(%peer, sequence, "The peer acknowledged our announcement");
            self.ctx.event(ConnectEvent::Acknowledged {
                peer: peer.clone(),
                sequence,
            });
        }
    }

    /// The verdict on a connection that finished its hello (see "One
    /// connection per peer").
    fn arrived(&mut self, a: Arrival) {
        let drop_it = |a: Arrival, code, reason: DisconnectReason| {
            a.shared.close(code, reason);
            let _ = a.verdict.send(Verdict::Drop);
        };
        let we_arbitrate = self.own_key < a.key;
        let Some(entry) = self.peers.get(&a.peer) else {
            return drop_it(a, close::KEY_REMOVED, DisconnectReason::KeyRemoved);
        };
        if entry.key != Some(a.key) {
            return drop_it(a, close::KEY_REMOVED, DisconnectReason::KeyRemoved);
        }
        if a.hello.version != VERSION {
            warn!(peer = %a.peer, version = a.hello.version, "Hello of an unknown version");
            return drop_it(
                a,
                close::VERSION,
                DisconnectReason::Lost("unsupported protocol version".into()),
            );
        }
        let current_dial = entry.dial.as_ref().map(|d| d.id);
        if a.direction == Direction::Outgoing && a.dial_id != current_dial {
            // Given up or superseded by a newer announcement meanwhile.
            return drop_it(a, close::CANCELLED, DisconnectReason::Replaced);
        }
        let selection = if we_arbitrate {
            match (a.direction, a.sent) {
                (Direction::Outgoing, Some(sent)) => sent.selection,
                _ => self.next_selection(),
            }
        } else {
            a.hello.selection
        };
        let Some(entry) = self.peers.get_mut(&a.peer) else {
            return;
        };
        if selection == 0 {
            return drop_it(
                a,
                close::PROTOCOL,
                DisconnectReason::Lost("the arbiter's hello has no selection".into()),
            );
        }
        let current = entry.session.as_ref().map_or(0, |s| s.selection);
        if selection <= current {
            debug!(peer = %a.peer, direction = %a.direction, "Keeping the newer connection; closing this one");
            if a.direction == Direction::Outgoing {
                entry.dial = None;
            }
            return drop_it(a, close::REPLACED, DisconnectReason::Replaced);
        }
        let report = !entry.reported_up;
        entry.reported_up = true;
        if let Some(old) = entry.session.take() {
            debug!(peer = %a.peer, "A newer connection replaces the session");
            old.shared
                .close(close::REPLACED, DisconnectReason::Replaced);
        }
        if a.direction == Direction::Outgoing {
            entry.dial = None;
        } else if we_arbitrate && let Some(dial) = entry.dial.take() {
            // Our own dial carries an older selection: it cannot win.
            dial.cancel.cancel();
        }
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let acked_sent = match a.sent {
            Some(h) => h.acked,
            None => entry.theirs,
        };
        if entry.theirs > acked_sent {
            let _ = frames_tx.send(Frame::Ack {
                sequence: entry.theirs,
            });
        }
        let reply = (a.direction == Direction::Incoming).then_some(Hello {
            version: VERSION,
            selection: if we_arbitrate { selection } else { 0 },
            acked: entry.theirs,
        });
        let address = a.shared.conn.remote_address();
        entry.session = Some(Live {
            id: a.conn_id,
            shared: a.shared.clone(),
            selection,
            frames: frames_tx,
        });
        let peer = a.peer.clone();
        let _ = a.verdict.send(Verdict::Keep { reply, frames });
        // The state first, then the event (as for disconnections).
        self.set_state(
            &peer,
            PeerState::Connected {
                address,
                since: SystemTime::now(),
                path: Path {
                    direction: a.direction,
                    local: a.local,
                },
            },
        );
        if report {
            info!(%peer, %address, direction = %a.direction, "Connected");
            self.ctx.event(ConnectEvent::Connected {
                peer: peer.clone(),
                address,
                direction: a.direction,
                acked: a.hello.acked,
            });
        }
        if a.hello.acked > 0 {
            self.acked(&peer, a.hello.acked);
        }
    }

    fn ended(&mut self, peer: &PeerName, conn_id: u64) {
        let Some(entry) = self.peers.get_mut(peer) else {
            return;
        };
        let Some(live) = entry.session.take_if(|s| s.id == conn_id) else {
            return; // not the session (a replaced or dropped connection)
        };
        let reason = live.shared.reason();
        let dialling = entry.dial.is_some();
        match reason {
            DisconnectReason::Replaced if dialling => {
                // The arbiter chose another connection, which is on its way.
                debug!(%peer, "Session replaced; waiting for the new one");
                self.set_state(
                    peer,
                    PeerState::Connecting {
                        since: SystemTime::now(),
                    },
                );
                return;
            },
            _ => {},
        }
        info!(%peer, %reason, "Disconnected");
        entry.reported_up = false;
        // The state first, then the event: whoever reacts to the event
        // reads the state it leads to.
        let state = match &reason {
            DisconnectReason::IdleTimeout | DisconnectReason::Lost(_) => PeerState::Failed {
                reason: FailReason::Lost(reason.clone()),
                at: SystemTime::now(),
            },
            _ if dialling => match self.current_state(peer) {
                s @ PeerState::Connecting { .. } => s,
                _ => PeerState::Connecting {
                    since: SystemTime::now(),
                },
            },
            _ => PeerState::Idle,
        };
        self.set_state(peer, state);
        self.ctx.event(ConnectEvent::Disconnected {
            peer: peer.clone(),
            reason,
        });
    }
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The order to try candidates in: IPv6 and IPv4 interleaved, IPv6 first
/// (RFC 8305 section 4), each address once, in announcement order within
/// a family.
pub fn happy_eyeballs_order(candidates: &[Candidate]) -> Vec<SocketAddr> {
    let mut seen = BTreeSet::new();
    let mut v6 = Vec::new();
    let mut v4 = Vec::new();
    for c in candidates {
        let addr = match c.addr {
            SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
                None => c.addr,
            },
            v4 => v4,
        };
        if !seen.insert(addr) {
            continue;
        }
        if addr.is_ipv6() {
            v6.push(addr);
        } else {
            v4.push(addr);
        }
    }
    let mut out = Vec::with_capacity(v6.len() + v4.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => break,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
    out
}

/// One dial attempt to one peer, as a task.
struct DialJob {
    ctx: Ctx,
    dialers: Dialers,
    peer: PeerName,
    key: PublicKey,
    addresses: Vec<SocketAddr>,
    hello: Hello,
    dial_id: u64,
    conn_id: u64,
    cancel: CancellationToken,
}

impl DialJob {
    async fn run(self) {
        let started = Instant::now();
        let limit = self.ctx.tuning.connect_timeout;
        let outcome = tokio::select! {
            _ = self.cancel.cancelled() => Err(FailReason::Cancelled),
            r = timeout(limit, self.race_and_hello()) => match r {
                Ok(r) => r,
                Err(_) => Err(FailReason::Timeout { after: limit, tried: self.addresses.len() }),
            },
        };
        let (shared, hello, send, recv, local) = match outcome {
            Ok(x) => x,
            Err(reason) => {
                debug!(%reason, elapsed = ?started.elapsed(), "Dial failed");
                self.ctx.report(Internal::DialFailed {
                    peer: self.peer,
                    dial_id: self.dial_id,
                    reason,
                });
                return;
            },
        };
        debug!(elapsed = ?started.elapsed(), remote = %shared.conn.remote_address(), "Dial succeeded");
        let (verdict, rx) = oneshot::channel();
        self.ctx.report(Internal::Arrived(Box::new(Arrival {
            peer: self.peer.clone(),
            key: self.key,
            conn_id: self.conn_id,
            shared: shared.clone(),
            direction: Direction::Outgoing,
            local,
            hello,
            sent: Some(self.hello),
            dial_id: Some(self.dial_id),
            verdict,
        })));
        if let Ok(Verdict::Keep { frames, .. }) = rx.await {
            serve_session(self.ctx, shared, self.conn_id, send, recv, frames).await;
        }
    }

    #[allow(clippy::type_complexity)]
    async fn race_and_hello(
        &self,
    ) -> Result<
        (
            Arc<SessionShared>,
            Hello,
            quinn::SendStream,
            quinn::RecvStream,
            SocketAddr,
        ),
        FailReason,
    > {
        let (conn, local) = self.race().await?;
        let shared = SessionShared::new(conn.clone(), self.peer.clone());
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| hello_error(&conn, &e))?;
            write_frame(&mut send, &Frame::Hello(self.hello))
                .await
                .map_err(|_| closed_error(&conn))?;
            match read_frame(&mut recv).await {
                Ok(Some(Frame::Hello(h))) => Ok((h, send, recv)),
                Ok(Some(other)) => Err(FailReason::Protocol(format!(
                    "expected a hello, got {other:?}"
                ))),
                Ok(None) => Err(closed_error(&conn)),
                Err(WireError::Io(_)) => Err(closed_error(&conn)),
                Err(e) => Err(FailReason::Protocol(e.to_string())),
            }
        };
        match timeout(self.ctx.tuning.handshake_timeout, exchange).await {
            Ok(Ok((hello, send, recv))) => Ok((shared, hello, send, recv, local)),
            Ok(Err(reason)) => {
                shared.close(close::PROTOCOL, DisconnectReason::Lost(reason.to_string()));
                Err(reason)
            },
            Err(_) => {
                shared.close(close::PROTOCOL, DisconnectReason::Lost("no hello".into()));
                Err(FailReason::Protocol(
                    "no hello from the peer in time".into(),
                ))
            },
        }
    }

    /// Races the candidates; the first TLS handshake to complete with the
    /// peer's key wins.
    async fn race(&self) -> Result<(quinn::Connection, SocketAddr), FailReason> {
        let usable: Vec<SocketAddr> = self
            .addresses
            .iter()
            .copied()
            .filter(|a| self.dialers.for_addr(a).is_some())
            .collect();
        if usable.is_empty() {
            return Err(FailReason::NoUsableAddress);
        }
        let mut attempts = JoinSet::new();
        let mut next = 0;
        let mut errors = Vec::new();
        let stagger = sleep(Duration::ZERO);
        tokio::pin!(stagger);
        loop {
            tokio::select! {
                () = &mut stagger, if next < usable.len() => {
                    let addr = usable[next];
                    next += 1;
                    stagger.as_mut().reset(Instant::now() + self.ctx.tuning.stagger);
                    if let Some(endpoint) = self.dialers.for_addr(&addr) {
                        let endpoint = endpoint.clone();
                        let local = endpoint.local_addr().unwrap_or(addr);
                        let attempt = attempt(self.ctx.clone(), endpoint, self.key, addr);
                        debug!(%addr, "Trying");
                        attempts.spawn(async move { (addr, local, attempt.await) }.in_current_span());
                    }
                },
                Some(joined) = attempts.join_next() => match joined {
                    Ok((addr, local, Ok(conn))) => {
                        debug!(%addr, "Handshake done; dropping the other attempts");
                        attempts.abort_all();
                        while let Some(other) = attempts.try_join_next() {
                            if let Ok((_, _, Ok(c))) = other {
                                c.close(close::CANCELLED, b"cancelled");
                            }
                        }
                        return Ok((conn, local));
                    },
                    Ok((addr, _, Err(reason))) => {
                        debug!(%addr, %reason, "Attempt failed");
                        errors.push(reason);
                        if next < usable.len() {
                            stagger.as_mut().reset(Instant::now());
                        } else if attempts.is_empty() {
                            return Err(best_error(errors));
                        }
                    },
                    Err(e) => {
                        errors.push(FailReason::Unreachable(format!("attempt task: {e}")));
                        if next >= usable.len() && attempts.is_empty() {
                            return Err(best_error(errors));
                        }
                    },
                },
            }
        }
    }
}

/// One candidate: QUIC + TLS with the peer's key pinned.
async fn attempt(
    ctx: Ctx,
    endpoint: quinn::Endpoint,
    key: PublicKey,
    addr: SocketAddr,
) -> Result<quinn::Connection, FailReason> {
    let (config, pins) = ctx
        .tls
        .client(key)
        .map_err(|e| FailReason::Protocol(e.to_string()))?;
    // An IP address as the server name: rustls sends no SNI for it (the
    // key, not a name, identifies the peer).
    let connecting = endpoint
        .connect_with(config, addr, &canonical(addr.ip()).to_string())
        .map_err(|e| FailReason::Unreachable(e.to_string()))?;
    match connecting.await {
        Ok(conn) => Ok(conn),
        Err(e) => match pins.presented() {
            Some(presented) if presented != Some(key) => {
                let fp = presented.map(|k| k.fingerprint());
                warn!(%addr, presented = ?fp.map(|f| f.to_string()), "Refused: the host answered with another key");
                ctx.event(ConnectEvent::Refused {
                    remote: addr,
                    presented: fp,
                    reason: if presented.is_some() {
                        RefusedReason::UnknownKey
                    } else {
                        RefusedReason::NotEd25519
                    },
                });
                Err(FailReason::WrongKey {
                    address: addr,
                    presented: fp,
                })
            },
            _ => Err(hello_error_of(&e)),
        },
    }
}

/// The most telling of several attempts' failures.
fn best_error(errors: Vec<FailReason>) -> FailReason {
    let rank = |r: &FailReason| match r {
        FailReason::WrongKey { .. } => 0,
        FailReason::RefusedByPeer => 1,
        FailReason::Protocol(_) => 2,
        _ => 3,
    };
    errors
        .into_iter()
        .min_by_key(rank)
        .unwrap_or(FailReason::NoUsableAddress)
}

fn is_crypto_close(e: &quinn::ConnectionError) -> bool {
    match e {
        quinn::ConnectionError::ConnectionClosed(c) => {
            (0x100..0x200).contains(&u64::from(c.error_code))
        },
        _ => false,
    }
}

fn hello_error_of(e: &quinn::ConnectionError) -> FailReason {
    if is_crypto_close(e) {
        FailReason::RefusedByPeer
    } else {
        match e {
            quinn::ConnectionError::ApplicationClosed(_) => FailReason::Lost(reason_of(e)),
            other => FailReason::Unreachable(other.to_string()),
        }
    }
}

fn hello_error(conn: &quinn::Connection, e: &quinn::ConnectionError) -> FailReason {
    conn.close_reason()
        .map_or_else(|| hello_error_of(e), |r| hello_error_of(&r))
}

fn closed_error(conn: &quinn::Connection) -> FailReason {
    match conn.close_reason() {
        Some(e) => hello_error_of(&e),
        None => FailReason::Protocol("the peer ended the control stream".into()),
    }
}

/// Accepts connections on one listening endpoint until shutdown.
async fn accept_loop(endpoint: quinn::Endpoint, ctx: Ctx) {
    let local = endpoint.local_addr().ok();
    loop {
        let incoming = tokio::select! {
            biased;
            _ = ctx.token.cancelled() => break,
            i = endpoint.accept() => i,
        };
        let Some(incoming) = incoming else { break };
        let Some(local) = local else { break };
        let job = accept_one(incoming, local, ctx.clone());
        ctx.tracker.spawn(job.in_current_span());
    }
}

/// One incoming connection: handshake against the address book, then the
/// initiator's hello, then the actor's verdict.
async fn accept_one(incoming: quinn::Incoming, local: SocketAddr, ctx: Ctx) {
    let remote = incoming.remote_address();
    let book = ctx.book.borrow().clone();
    let (config, pins) = match ctx.tls.server(book.keys.clone()) {
        Ok(x) => x,
        Err(e) => {
            warn!(%remote, error = %e, "Cannot set up TLS for an incoming connection");
            incoming.refuse();
            return;
        },
    };
    let connecting = match incoming.accept_with(Arc::new(config)) {
        Ok(c) => c,
        Err(e) => {
            debug!(%remote, error = %e, "Incoming connection failed at once");
            return;
        },
    };
    let refused = |reason: RefusedReason, presented: Option<PublicKey>| {
        let fp = presented.map(|k| k.fingerprint());
        match &reason {
            RefusedReason::UnknownKey | RefusedReason::NotEd25519 => {
                warn!(%remote, presented = ?fp.map(|f| f.to_string()), %reason, "Refused a connection during the handshake");
            },
            _ => debug!(%remote, %reason, "Incoming connection failed"),
        }
        ctx.event(ConnectEvent::Refused {
            remote,
            presented: fp,
            reason,
        });
    };
    let conn = match timeout(ctx.tuning.handshake_timeout, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            match pins.presented() {
                Some(Some(k)) if !book.keys.contains(&k) => {
                    refused(RefusedReason::UnknownKey, Some(k));
                },
                Some(None) => refused(RefusedReason::NotEd25519, None),
                _ => refused(RefusedReason::Handshake(e.to_string()), None),
            }
            return;
        },
        Err(_) => {
            refused(RefusedReason::Handshake("timed out".into()), None);
            return;
        },
    };
    let Some((key, peer)) =
        peer_key(&conn).and_then(|k| book.by_key.get(&k).map(|p| (k, p.clone())))
    else {
        // Cannot happen: the verifier took only these keys.
        conn.close(close::PROTOCOL, b"protocol error");
        return;
    };
    let shared = SessionShared::new(conn.clone(), peer.clone());
    let hello = async {
        let (send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        match read_frame(&mut recv).await {
            Ok(Some(Frame::Hello(h))) => Ok((h, send, recv)),
            Ok(Some(other)) => Err(format!("expected a hello, got {other:?}")),
            Ok(None) => Err("the control stream ended".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    };
    let (hello, mut send, recv) = match timeout(ctx.tuning.handshake_timeout, hello).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            shared.close(close::PROTOCOL, DisconnectReason::Lost(e.clone()));
            refused(RefusedReason::NoHello(e), Some(key));
            return;
        },
        Err(_) => {
            shared.close(close::PROTOCOL, DisconnectReason::Lost("no hello".into()));
            refused(RefusedReason::NoHello("timed out".into()), Some(key));
            return;
        },
    };
    let conn_id = next_conn_id();
    let (verdict, rx) = oneshot::channel();
    ctx.report(Internal::Arrived(Box::new(Arrival {
        peer,
        key,
        conn_id,
        shared: shared.clone(),
        direction: Direction::Incoming,
        local,
        hello,
        sent: None,
        dial_id: None,
        verdict,
    })));
    if let Ok(Verdict::Keep { reply, frames }) = rx.await {
        if let Some(reply) = reply
            && write_frame(&mut send, &Frame::Hello(reply)).await.is_err()
        {
            ctx.report(Internal::Ended {
                peer: shared.peer.clone(),
                conn_id,
            });
            return;
        }
        serve_session(ctx, shared, conn_id, send, recv, frames).await;
    }
}

/// Ids for incoming connections, from the top half of the id space so
/// they never meet the actor's (which count up from 1).
fn next_conn_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1 << 63);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Serves an adopted connection until it ends: control frames both ways,
/// streams the peer opens. Tells the actor when it ends.
async fn serve_session(
    ctx: Ctx,
    shared: Arc<SessionShared>,
    conn_id: u64,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut frames: mpsc::UnboundedReceiver<Frame>,
) {
    let conn = shared.conn.clone();
    let peer = shared.peer.clone();
    let reader = async {
        loop {
            match read_frame(&mut recv).await {
                Ok(Some(Frame::Ack { sequence })) => ctx.report(Internal::Acked {
                    peer: peer.clone(),
                    sequence,
                }),
                Ok(Some(Frame::Unknown { kind })) => {
                    debug!(%peer, kind, "Skipping an unknown control frame");
                },
                Ok(Some(other)) => {
                    return format!("unexpected frame on the control stream: {other:?}");
                },
                Ok(None) => return "the peer ended the control stream".to_owned(),
                Err(e) => return e.to_string(),
            }
        }
    };
    let writer = async {
        while let Some(frame) = frames.recv().await {
            if write_frame(&mut send, &frame).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    };
    let acceptor = async {
        loop {
            match conn.accept_bi().await {
                Ok((s, r)) => {
                    let job = serve_stream(ctx.clone(), shared.clone(), s, r);
                    ctx.tracker.spawn(job.in_current_span());
                },
                Err(_) => return,
            }
        }
    };
    tokio::select! {
        _ = conn.closed() => {},
        problem = reader => {
            if conn.close_reason().is_none() {
                warn!(%peer, %problem, "Closing the session: protocol error");
                shared.close(close::PROTOCOL, DisconnectReason::Lost(format!("protocol error: {problem}")));
            }
        },
        () = writer => {},
        () = acceptor => {},
    }
    ctx.report(Internal::Ended { peer, conn_id });
}

/// A stream the peer opened: its open request, checked against the
/// services, then bridged (or refused with a reason the opener sees).
async fn serve_stream(
    ctx: Ctx,
    shared: Arc<SessionShared>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let peer = shared.peer.clone();
    let request = match timeout(ctx.tuning.open_timeout, read_frame(&mut recv)).await {
        Ok(Ok(Some(Frame::Open(r)))) => r,
        Ok(Ok(None)) => return,
        other => {
            let why = match other {
                Ok(Ok(Some(f))) => format!("expected an open frame, got {f:?}"),
                Ok(Err(e)) => e.to_string(),
                _ => "no open frame in time".to_owned(),
            };
            debug!(%peer, %why, "Refusing a stream");
            refuse(&mut send, RefuseCode::PROTOCOL, "expected an open frame").await;
            return;
        },
    };
    match request {
        OpenRequest::Service(name) => {
            let service = ctx.book.borrow().services.get(&name).cloned();
            let Some(service) = service else {
                info!(%peer, service = %name, "Refused a stream: unknown service");
                let text = format!("no service {name} on this host");
                refuse(&mut send, RefuseCode::UNKNOWN_SERVICE, &text).await;
                return;
            };
            if !service.peers.contains(&peer) {
                info!(%peer, service = %name, "Refused a stream: peer not allowed");
                let text = format!("{peer} may not open {name}");
                refuse(&mut send, RefuseCode::NOT_ALLOWED, &text).await;
                return;
            }
            let tcp = match timeout(
                ctx.tuning.target_timeout,
                TcpStream::connect(service.target),
            )
            .await
            {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => {
                    warn!(%peer, service = %name, target = %service.target, error = %e, "Service target unreachable");
                    let text = format!("service {name} is not answering");
                    refuse(&mut send, RefuseCode::TARGET_UNREACHABLE, &text).await;
                    return;
                },
                Err(_) => {
                    warn!(%peer, service = %name, target = %service.target, "Service target did not answer in time");
                    let text = format!("service {name} is not answering");
                    refuse(&mut send, RefuseCode::TARGET_UNREACHABLE, &text).await;
                    return;
                },
            };
            let _ = tcp.set_nodelay(true);
            if write_frame(&mut send, &Frame::Accept).await.is_err() {
                return;
            }
            debug!(%peer, service = %name, "Stream connected to the service");
            let mut stream = PeerStream::new(send, recv, shared, Some(name.clone()));
            let mut tcp = tcp;
            let copied = tokio::io::copy_bidirectional_with_sizes(
                &mut stream,
                &mut tcp,
                SERVICE_COPY_BUFFER,
                SERVICE_COPY_BUFFER,
            )
            .await;
            match copied {
                Ok((to_service, to_peer)) => {
                    debug!(%peer, service = %name, to_service, to_peer, "Stream ended");
                },
                Err(e) => debug!(%peer, service = %name, error = %e, "Stream ended"),
            }
        },
        OpenRequest::Plain => {
            let taker = ctx.plain.borrow().clone();
            let Some(permit) = taker.and_then(|t| t.try_reserve_owned().ok()) else {
                refuse(
                    &mut send,
                    RefuseCode::NO_LISTENER,
                    "nothing on this host takes plain streams",
                )
                .await;
                return;
            };
            if write_frame(&mut send, &Frame::Accept).await.is_err() {
                return;
            }
            permit.send(PeerStream::new(send, recv, shared, None));
        },
    }
}

async fn refuse(send: &mut quinn::SendStream, code: RefuseCode, reason: &str) {
    let frame = Frame::Refuse {
        code,
        reason: reason.to_owned(),
    };
    if write_frame(send, &frame).await.is_ok() {
        let _ = send.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerd_core::CandidateKind;

    fn cand(s: &str) -> Candidate {
        Candidate::new(s.parse().unwrap(), CandidateKind::Host).unwrap()
    }

    #[test]
    fn happy_eyeballs_interleaves_ipv6_first_without_duplicates() {
        let order = happy_eyeballs_order(&[
            cand("10.0.0.1:7447"),
            cand("10.0.0.2:7447"),
            cand("10.0.0.1:7447"),
            cand("[fd00::1]:7447"),
            cand("[::ffff:10.0.0.2]:7447"),
            cand("[fd00::2]:7447"),
            cand("10.0.0.3:7447"),
        ]);
        let want: Vec<SocketAddr> = [
            "[fd00::1]:7447",
            "10.0.0.1:7447",
            "[fd00::2]:7447",
            "10.0.0.2:7447",
            "10.0.0.3:7447",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(order, want);
    }

    #[test]
    fn the_most_telling_failure_wins() {
        let r = best_error(vec![
            FailReason::Unreachable("x".into()),
            FailReason::RefusedByPeer,
        ]);
        assert_eq!(r, FailReason::RefusedByPeer);
        assert_eq!(best_error(vec![]), FailReason::NoUsableAddress);
    }
}
