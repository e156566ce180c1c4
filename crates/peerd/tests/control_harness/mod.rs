//! The control server with a stand-in for the daemon, for the server's
//! tests (`control.rs`) and peerctl's end-to-end tests (`peerctl.rs`).
//!
//! [`FakeApi`] implements [`ControlApi`] the way the daemon's actors will
//! once they are wired to the control socket: it stands in for them here,
//! with a small fixed world (peers hitoshi, me-on-phone and slowpoke) and
//! records what reached it. [`Server`] binds the real socket with the real
//! [`bind`] and runs the real server on its own runtime thread.

#![allow(
    clippy::unwrap_used,
    dead_code,
    reason = "test helpers, shared by two test files that use different parts"
)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use peerd::control::{self, ControlApi, Limits, PeerStream};
use peerd_config::ControlConfig;
use peerd_control::{
    AddressInfo, CandidateInfo, ControlError, ErrorKind, Event, InterfaceInfo, KeyInfo, LinkDriver,
    LinkInfo, LinkState, MailProtocol, MailboxInfo, NewPeer, OutboxEntryInfo, OutboxState,
    PeerFormat, PeerInfo, PeerSource, PeerState, SessionInfo, StatusInfo, Timestamp,
};
use peerd_core::{AddressClass, CandidateKind, Identity, PeerName, ServiceName};
use peerd_testkit::{Program, workspace_program};
use tokio::io::DuplexStream;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// How long anything may take before a test gives up.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn name(s: &str) -> PeerName {
    s.parse().unwrap()
}

/// A fixed point in time, so outputs are predictable.
pub fn at() -> Timestamp {
    Timestamp::from_unix_secs(1_795_000_000)
}

/// The host's identity in the fake world.
pub fn identity() -> Identity {
    Identity::from_seed(&[1; 32])
}

/// Another key, for peers.
pub fn peer_key(seed: u8) -> peerd_core::PublicKey {
    Identity::from_seed(&[seed; 32]).public_key()
}

pub fn candidate(addr: &str) -> CandidateInfo {
    CandidateInfo {
        address: addr.parse().unwrap(),
        kind: CandidateKind::Host,
        class: AddressClass::Public,
    }
}

pub fn session(peer: &PeerName) -> SessionInfo {
    SessionInfo {
        peer: peer.clone(),
        address: "198.51.100.7:7447".parse().unwrap(),
        since: at(),
    }
}

fn sealed(peer: &str, seed: u8, source: PeerSource) -> PeerInfo {
    let key = peer_key(seed);
    PeerInfo {
        name: name(peer),
        email: format!("{peer}@isp-b.example").parse().unwrap(),
        format: PeerFormat::Sealed,
        key: Some(key),
        fingerprint: Some(key.fingerprint().to_string()),
        source,
        announce: true,
        auto_connect: true,
        accept_unsigned: false,
        addresses: vec![],
        announced_at: None,
        state: PeerState::Idle,
        session: None,
        last_error: None,
    }
}

/// The address book the fake starts with.
fn initial_peers() -> Vec<PeerInfo> {
    let mut hitoshi = sealed("hitoshi", 2, PeerSource::Config);
    hitoshi.addresses = vec![candidate("198.51.100.7:7447")];
    hitoshi.announced_at = Some(at());
    hitoshi.state = PeerState::Connected;
    hitoshi.session = Some(session(&name("hitoshi")));
    let plain = PeerInfo {
        name: name("me-on-phone"),
        email: "me@example.org".parse().unwrap(),
        format: PeerFormat::Plain,
        key: None,
        fingerprint: None,
        source: PeerSource::Config,
        announce: true,
        auto_connect: false,
        accept_unsigned: false,
        addresses: vec![],
        announced_at: None,
        state: PeerState::Idle,
        session: None,
        last_error: None,
    };
    let mut slowpoke = sealed("slowpoke", 3, PeerSource::Runtime);
    slowpoke.announce = false;
    slowpoke.state = PeerState::Failed;
    slowpoke.last_error = Some("no answer from 203.0.113.9:7447".into());
    vec![hitoshi, plain, slowpoke]
}

pub fn link(state: LinkState) -> LinkInfo {
    LinkInfo {
        driver: LinkDriver::Pppd,
        on_demand: true,
        state,
        interface: (state == LinkState::Up).then(|| "ppp0".to_owned()),
        since: Some(at()),
        reason: None,
        retry_at: None,
    }
}

/// What `status` answers at first.
pub fn initial_status() -> StatusInfo {
    StatusInfo {
        name: "alice".into(),
        fingerprint: identity().public_key().fingerprint().to_string(),
        link: link(LinkState::Up),
        interface: InterfaceInfo {
            configured: "ppp0".into(),
            name: Some("ppp0".into()),
            up: true,
            addresses: vec![
                AddressInfo {
                    ip: "203.0.113.7".parse().unwrap(),
                    prefix_len: 32,
                    class: AddressClass::Public,
                    announced: true,
                    temporary: false,
                    deprecated: false,
                    tentative: false,
                },
                AddressInfo {
                    ip: "fe80::1".parse().unwrap(),
                    prefix_len: 64,
                    class: AddressClass::LinkLocal,
                    announced: false,
                    temporary: false,
                    deprecated: false,
                    tentative: false,
                },
            ],
        },
        mailbox: MailboxInfo {
            protocol: MailProtocol::Imap,
            connected: true,
            last_check: Some(at()),
            next_check: None,
            pending: 1,
            rejected: 2,
            last_error: None,
        },
        outbox_size: 1,
        connected_peers: vec![session(&name("hitoshi"))],
    }
}

/// Counts the futures of requests that were dropped before they finished.
struct DropGuard<'a>(&'a AtomicUsize);

impl Drop for DropGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The daemon's actors, as far as the control socket sees them.
pub struct FakeApi {
    /// The event bus; tests send on it.
    pub events: broadcast::Sender<Event>,
    /// A receiver to hand to the next `events` request instead of a fresh
    /// one (to start a follower in a lagged state).
    pub next_receiver: Mutex<Option<broadcast::Receiver<Event>>>,
    /// The address book.
    pub peers: Mutex<Vec<PeerInfo>>,
    /// Every mutating request that reached the API, in words.
    pub log: Mutex<Vec<String>>,
    /// `check` fails while set.
    pub check_fails: AtomicBool,
    /// `check` never completes while set (a mail server that does not
    /// answer).
    pub check_hangs: AtomicBool,
    /// What `status` answers; tests change it (then send the event).
    pub status: Mutex<StatusInfo>,
    /// Request futures dropped unfinished (client gone, timeout, stop).
    pub dropped: AtomicUsize,
    /// The test's ends of the streams `open` made.
    opened_tx: mpsc::UnboundedSender<DuplexStream>,
    opened_rx: Mutex<mpsc::UnboundedReceiver<DuplexStream>>,
}

impl FakeApi {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(16);
        let (opened_tx, opened_rx) = mpsc::unbounded_channel();
        Self {
            events,
            next_receiver: Mutex::new(None),
            peers: Mutex::new(initial_peers()),
            log: Mutex::new(Vec::new()),
            check_fails: AtomicBool::new(false),
            check_hangs: AtomicBool::new(false),
            status: Mutex::new(initial_status()),
            dropped: AtomicUsize::new(0),
            opened_tx,
            opened_rx: Mutex::new(opened_rx),
        }
    }

    fn record(&self, what: String) {
        self.log.lock().unwrap().push(what);
    }

    pub fn logged(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn peer(&self, name: &PeerName) -> Result<PeerInfo, ControlError> {
        self.peers
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.name == *name)
            .cloned()
            .ok_or_else(|| ControlError::unknown_peer(name))
    }

    /// The peer, if it has a key.
    fn sealed_peer(&self, name: &PeerName) -> Result<PeerInfo, ControlError> {
        let peer = self.peer(name)?;
        match peer.format {
            PeerFormat::Sealed => Ok(peer),
            PeerFormat::Plain => Err(ControlError::no_key(name)),
        }
    }

    /// The test's end of the next stream `open` makes.
    pub fn take_opened(&self) -> DuplexStream {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(end) = self.opened_rx.lock().unwrap().try_recv() {
                return end;
            }
            assert!(Instant::now() < deadline, "no stream was opened");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `n` connections follow the events.
    pub fn wait_for_followers(&self, n: usize) {
        wait_until("event followers", || self.events.receiver_count() >= n);
    }

    /// Sends an event now.
    pub fn emit(&self, event: Event) {
        self.events.send(event).unwrap();
    }
}

/// Polls `done` until it holds, failing the test after [`DEADLINE`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    peerd_testkit::wait_for(what, DEADLINE, || done().then_some(()));
}

impl ControlApi for FakeApi {
    async fn status(&self) -> Result<StatusInfo, ControlError> {
        Ok(self.status.lock().unwrap().clone())
    }

    async fn peers(&self) -> Result<Vec<PeerInfo>, ControlError> {
        Ok(self.peers.lock().unwrap().clone())
    }

    async fn peer_add(&self, new: NewPeer) -> Result<PeerInfo, ControlError> {
        let mut peers = self.peers.lock().unwrap();
        if peers.iter().any(|p| p.name == new.name) {
            return Err(ControlError::new(
                ErrorKind::PeerExists,
                format!("{} is in the address book already", new.name),
            ));
        }
        let peer = PeerInfo {
            name: new.name.clone(),
            email: new.email.clone(),
            format: PeerFormat::Sealed,
            key: Some(new.key),
            fingerprint: Some(new.key.fingerprint().to_string()),
            source: PeerSource::Runtime,
            announce: new.announce,
            auto_connect: true,
            accept_unsigned: new.accept_unsigned,
            addresses: vec![],
            announced_at: None,
            state: PeerState::Idle,
            session: None,
            last_error: None,
        };
        peers.push(peer.clone());
        drop(peers);
        self.record(format!(
            "peer-add {} {} {} announce={} accept_unsigned={}",
            new.name, new.email, new.key, new.announce, new.accept_unsigned
        ));
        Ok(peer)
    }

    async fn peer_remove(&self, name: PeerName) -> Result<(), ControlError> {
        let peer = self.peer(&name)?;
        if peer.source == PeerSource::Config {
            return Err(ControlError::new(
                ErrorKind::Failed,
                format!("{name} is a [[peer]] of the configuration file; edit the file"),
            ));
        }
        self.peers.lock().unwrap().retain(|p| p.name != name);
        self.record(format!("peer-remove {name}"));
        Ok(())
    }

    async fn outbox(&self) -> Result<Vec<OutboxEntryInfo>, ControlError> {
        Ok(vec![OutboxEntryInfo {
            peer: name("hitoshi"),
            state: OutboxState::SendingBackoff,
            addresses: vec![candidate("203.0.113.7:7447")],
            plain: false,
            attempts: 3,
            sends: 0,
            next_attempt: Some(at()),
            rate_limited: false,
            last_error: Some("smtp.isp-a.example: connection refused".into()),
            sequence: None,
            queued_at: at(),
        }])
    }

    async fn announce(&self, peers: Vec<PeerName>) -> Result<Vec<PeerName>, ControlError> {
        let to = if peers.is_empty() {
            self.peers
                .lock()
                .unwrap()
                .iter()
                .filter(|p| p.announce)
                .map(|p| p.name.clone())
                .collect()
        } else {
            for p in &peers {
                self.peer(p)?;
            }
            peers
        };
        self.record(format!(
            "announce {}",
            to.iter()
                .map(PeerName::as_str)
                .collect::<Vec<_>>()
                .join(",")
        ));
        Ok(to)
    }

    async fn check(&self) -> Result<(), ControlError> {
        if self.check_hangs.load(Ordering::SeqCst) {
            self.record("check (hangs)".into());
            let _guard = DropGuard(&self.dropped);
            std::future::pending::<()>().await;
        }
        if self.check_fails.load(Ordering::SeqCst) {
            return Err(ControlError::new(
                ErrorKind::Failed,
                "mail.isp-a.example: connection refused",
            ));
        }
        self.record("check".into());
        Ok(())
    }

    async fn call(&self, peer: PeerName, wait: Duration) -> Result<SessionInfo, ControlError> {
        self.sealed_peer(&peer)?;
        self.record(format!("call {peer} {}s", wait.as_secs()));
        if peer.as_str() == "slowpoke" {
            let _guard = DropGuard(&self.dropped);
            std::future::pending::<()>().await;
        }
        Ok(session(&peer))
    }

    async fn connect(&self, peer: PeerName) -> Result<SessionInfo, ControlError> {
        self.sealed_peer(&peer)?;
        self.record(format!("connect {peer}"));
        Ok(session(&peer))
    }

    async fn disconnect(&self, peer: PeerName) -> Result<(), ControlError> {
        let info = self.peer(&peer)?;
        if info.state != PeerState::Connected {
            return Err(ControlError::new(
                ErrorKind::NotConnected,
                format!("not connected to {peer}"),
            ));
        }
        self.record(format!("disconnect {peer}"));
        Ok(())
    }

    async fn open(&self, peer: PeerName, service: ServiceName) -> Result<PeerStream, ControlError> {
        self.sealed_peer(&peer)?;
        if service.as_str() != "ssh" {
            return Err(ControlError::new(
                ErrorKind::Failed,
                format!("{peer} offers no service {service} to this host"),
            ));
        }
        self.record(format!("open {peer} {service}"));
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        self.opened_tx.send(theirs).unwrap();
        Ok(Box::new(ours))
    }

    async fn link_up(&self) -> Result<LinkInfo, ControlError> {
        self.record("link-up".into());
        Ok(link(LinkState::Up))
    }

    async fn link_down(&self) -> Result<LinkInfo, ControlError> {
        self.record("link-down".into());
        Ok(link(LinkState::Down))
    }

    async fn link_status(&self) -> Result<LinkInfo, ControlError> {
        let mut failed = link(LinkState::Failed);
        failed.reason = Some("pppd exited with status 16: the modem hung up".into());
        failed.retry_at = Some(at());
        Ok(failed)
    }

    fn events(&self) -> broadcast::Receiver<Event> {
        self.next_receiver
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| self.events.subscribe())
    }

    fn key(&self) -> KeyInfo {
        KeyInfo::new("alice", identity().public_key())
    }

    /// The announcement is "queued" at once; then every peer but slowpoke
    /// connects (state connected, a PeerConnected event), slowpoke stays
    /// connecting.
    async fn call_start(&self, peer: PeerName) -> Result<(), ControlError> {
        self.sealed_peer(&peer)?;
        self.record(format!("call-start {peer}"));
        let connects = peer.as_str() != "slowpoke";
        for p in self.peers.lock().unwrap().iter_mut() {
            if p.name == peer {
                if connects {
                    p.state = PeerState::Connected;
                    p.session = Some(session(&peer));
                } else {
                    p.state = PeerState::Connecting;
                }
            }
        }
        if connects {
            let _ = self
                .events
                .send(Event::now(peerd_control::EventKind::PeerConnected {
                    address: session(&peer).address,
                    peer,
                }));
        }
        Ok(())
    }
}

/// A directory every user can enter (the socket's, for tests that run
/// peerctl as nobody).
pub fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A server (`serve(api, shutdown)`) over a fresh [`FakeApi`], on a
/// multi-threaded runtime driven by a thread of its own: the control
/// socket's and the D-Bus tests both run theirs this way.
pub struct FakeServing<T> {
    pub api: Arc<FakeApi>,
    pub runtime: Arc<tokio::runtime::Runtime>,
    pub shutdown: CancellationToken,
    pub thread: std::thread::JoinHandle<T>,
}

impl<T: Send + 'static> FakeServing<T> {
    pub fn start<F, Fut>(serve: F) -> Self
    where
        F: FnOnce(Arc<FakeApi>, CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        let api = Arc::new(FakeApi::new());
        let runtime = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        );
        let shutdown = CancellationToken::new();
        let thread = {
            let (api, runtime, shutdown) =
                (Arc::clone(&api), Arc::clone(&runtime), shutdown.clone());
            std::thread::spawn(move || runtime.block_on(serve(api, shutdown)))
        };
        Self {
            api,
            runtime,
            shutdown,
            thread,
        }
    }
}

/// The control server on its own runtime thread, serving a [`FakeApi`].
pub struct Server {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub api: Arc<FakeApi>,
    runtime: Arc<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

/// A `[control]` section for a socket in `dir`.
pub fn config(dir: &Path, mode: u32, group: &str) -> ControlConfig {
    ControlConfig {
        socket: dir.join("run/control.sock"),
        mode,
        group: group.to_owned(),
    }
}

impl Server {
    /// Mode 0666 so that every user reaches the access check; the group
    /// `daemon`, which the test users are not in.
    pub fn start() -> Self {
        Self::start_with(0o666, "daemon", Limits::default())
    }

    pub fn start_with(mode: u32, group: &str, limits: Limits) -> Self {
        let dir = open_dir();
        let config = config(dir.path(), mode, group);
        let socket = control::bind(&config).unwrap().with_limits(limits);
        let path = socket.path().to_owned();
        let FakeServing {
            api,
            runtime,
            shutdown,
            thread,
        } = FakeServing::start(move |api, shutdown| socket.serve(api, shutdown));
        Self {
            dir,
            socket: path,
            api,
            runtime,
            shutdown,
            thread: Some(thread),
        }
    }

    /// Runs `f` on the server's runtime (for the test's ends of streams).
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Stops the server; returns how long it took.
    pub fn stop(&mut self) -> Duration {
        let start = Instant::now();
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap().unwrap();
        }
        start.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// peerctl, built on demand in this test's target dir and copied where
/// every user may run it.
pub fn peerctl_binary() -> PathBuf {
    static BUILT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let built = workspace_program(Program::Bin, "peerctl");
            let dir = open_dir();
            let copy = dir.path().join("peerctl");
            fs::copy(&built, &copy).unwrap();
            fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
            (dir, copy)
        })
        .1
        .clone()
}
