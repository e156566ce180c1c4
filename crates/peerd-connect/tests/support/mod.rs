//! Test support: hosts in network namespaces of their own, joined by a
//! veth pair, each running a connector.
//!
//! Each [`Netns`] is a thread that unshares a fresh network namespace
//! (`unshare(CLONE_NEWNET)` changes only the calling thread) and runs a
//! current-thread tokio runtime. Work that must happen *inside* the
//! namespace (binding sockets, running `ip` or `nft`, a TCP service) is
//! sent to that thread with [`Netns::run`]; sockets keep the namespace
//! they were created in, so everything else (reading and writing peer
//! streams, the handles' channels) works from the test's own runtime. The
//! namespace, with its devices and firewall rules, disappears when the
//! thread ends: nothing is named, nothing needs cleaning up, even after a
//! panic.
//!
//! Root is needed (CAP_SYS_ADMIN to unshare, CAP_NET_ADMIN to configure).
//! CI runs as root; without it these tests fail saying so, never pass.

#![allow(dead_code)] // each test uses a different part

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use peerd_config::{ListenConfig, ServiceConfig};
use peerd_connect::{
    AddressBook, ConnectEvent, ConnectorConfig, ConnectorHandle, PeerStream, Tuning,
};
use peerd_core::{Candidate, CandidateKind, Identity, PeerName, PublicKey, ServiceName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long any one expected thing may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The port every connector listens on (each namespace has its own).
pub const PORT: u16 = 7447;

type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Runs a test body on a runtime of its own; panics unless root.
pub fn test<F, Fut>(body: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates network namespaces and needs root (CAP_SYS_ADMIN and \
         CAP_NET_ADMIN); run `cargo test` as root, as CI does"
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(body());
}

/// A thread in a network namespace of its own.
pub struct Netns {
    jobs: mpsc::UnboundedSender<Job>,
    /// `/proc/PID/task/TID/ns/net`: names the namespace for `ip ... netns`.
    pub path: String,
}

impl Netns {
    /// A fresh namespace with `lo` up.
    pub fn new(name: &str) -> Self {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        let (path_tx, path_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                peerd_testkit::enter_fresh_netns();
                let ok = std::process::Command::new("ip")
                    .args(["link", "set", "lo", "up"])
                    .status()
                    .expect("ip link set lo up");
                assert!(ok.success(), "ip link set lo up");
                let path = format!(
                    "/proc/{}/task/{}/ns/net",
                    std::process::id(),
                    nix::unistd::gettid()
                );
                let _ = path_tx.send(path);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(async move {
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job());
                    }
                });
            })
            .expect("spawn the namespace thread");
        let path = path_rx.recv().expect("the namespace thread died");
        Self { jobs, path }
    }

    /// Runs `f` inside the namespace and returns its result.
    pub async fn run<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let _ = tx.send(f().await);
            })
        });
        assert!(self.jobs.send(job).is_ok(), "namespace thread gone");
        rx.await.expect("the job panicked inside the namespace")
    }

    /// Runs `ip ARGS` (split on whitespace) in the namespace; panics with
    /// its stderr if it fails.
    pub async fn ip(&self, args: &str) {
        self.cmd("ip", args, None).await;
    }

    /// Loads an nftables ruleset into the namespace (`nft -f -`).
    pub async fn nft(&self, ruleset: &str) {
        self.cmd("nft", "-f -", Some(ruleset.to_owned())).await;
    }

    async fn cmd(&self, program: &str, args: &str, stdin: Option<String>) {
        let program = program.to_owned();
        let args = args.to_owned();
        self.run(move || async move {
            let mut cmd = tokio::process::Command::new(&program);
            cmd.args(args.split_whitespace())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap_or_else(|e| {
                panic!("run {program}: {e} (is it installed? tests/run installs it)")
            });
            let mut input = child.stdin.take().expect("stdin");
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).await.expect("write stdin");
            }
            drop(input);
            let out = child.wait_with_output().await.expect("wait");
            assert!(
                out.status.success(),
                "{program} {args}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        })
        .await;
    }
}

/// A test host: its namespace, identity and connector.
pub struct Host {
    pub name: PeerName,
    pub ns: Arc<Netns>,
    pub key: PublicKey,
    pub seed: [u8; 32],
    pub handle: ConnectorHandle,
    pub events: broadcast::Receiver<ConnectEvent>,
    token: CancellationToken,
}

/// What a host's connector is told.
#[derive(Clone)]
pub struct Setup {
    pub peers: Vec<(PeerName, Option<PublicKey>)>,
    pub services: Vec<ServiceConfig>,
    pub tuning: Tuning,
    pub port: u16,
}

impl Setup {
    pub fn new(peers: &[(&str, PublicKey)]) -> Self {
        Self {
            peers: peers
                .iter()
                .map(|(n, k)| (n.parse().expect("name"), Some(*k)))
                .collect(),
            services: Vec::new(),
            tuning: Tuning {
                connect_timeout: Duration::from_secs(5),
                ..Tuning::default()
            },
            port: PORT,
        }
    }

    pub fn service(mut self, name: &str, target: SocketAddr, peers: &[&str]) -> Self {
        self.services.push(ServiceConfig {
            name: name.parse().expect("service name"),
            target,
            peers: peers.iter().map(|p| p.parse().expect("name")).collect(),
        });
        self
    }

    pub fn book(&self) -> AddressBook {
        AddressBook::new(self.peers.clone(), self.services.clone())
    }
}

pub fn key_of(seed: u8) -> PublicKey {
    Identity::from_seed(&[seed; 32]).public_key()
}

impl Host {
    /// Starts a connector in `ns` with the identity of `seed`.
    pub async fn start(name: &str, ns: &Arc<Netns>, seed: u8, setup: Setup) -> Self {
        let ns = ns.clone();
        let seed = [seed; 32];
        let book = setup.book();
        let config = ConnectorConfig {
            listen: ListenConfig {
                port: setup.port,
                addresses: vec!["0.0.0.0".parse().expect("ip"), "::".parse().expect("ip")],
                keepalive: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(10),
            },
            book,
            tuning: setup.tuning.clone(),
        };
        let (handle, token) = ns
            .run(move || async move {
                let identity = Identity::from_seed(&seed);
                let token = CancellationToken::new();
                let mut tasks: JoinSet<Result<(), peerd_connect::ConnectError>> = JoinSet::new();
                let handle = peerd_connect::spawn(&identity, config, &mut tasks, token.clone())
                    .expect("start the connector");
                tokio::spawn(async move {
                    while let Some(r) = tasks.join_next().await {
                        r.expect("connector task panicked")
                            .expect("connector failed");
                    }
                });
                (handle, token)
            })
            .await;
        let events = handle.events();
        Self {
            name: name.parse().expect("name"),
            ns,
            key: Identity::from_seed(&seed).public_key(),
            seed,
            handle,
            events,
            token,
        }
    }

    /// The next event that `pick` accepts, skipping others.
    pub async fn event<T>(&mut self, what: &str, pick: impl Fn(&ConnectEvent) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(e)) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                },
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {},
                Ok(Err(e)) => panic!("{}: event channel: {e}", self.name),
                Err(_) => panic!("{}: no {what} event within {TIMEOUT:?}", self.name),
            }
        }
    }

    pub async fn stop(self) {
        self.token.cancel();
    }
}

/// Two namespaces joined by a veth pair: `a0` in A (10.9.0.1/24,
/// fd09::1/64), `b0` in B (10.9.0.2/24, fd09::2/64).
pub async fn pair() -> (Arc<Netns>, Arc<Netns>) {
    let a = Netns::new("a");
    let b = Netns::new("b");
    a.ip(&format!(
        "link add a0 type veth peer name b0 netns {}",
        b.path
    ))
    .await;
    a.ip("addr add 10.9.0.1/24 dev a0").await;
    a.ip("addr add fd09::1/64 dev a0 nodad").await;
    a.ip("link set a0 up").await;
    b.ip("addr add 10.9.0.2/24 dev b0").await;
    b.ip("addr add fd09::2/64 dev b0 nodad").await;
    b.ip("link set b0 up").await;
    (Arc::new(a), Arc::new(b))
}

/// A candidate at `addr`.
pub fn cand(addr: &str) -> Candidate {
    let addr: SocketAddr = addr.parse().expect("socket address");
    Candidate::new(addr, CandidateKind::Host).expect("announceable")
}

/// A TCP service inside `ns`: echoes every connection. Returns its
/// address and a counter of accepted connections.
pub async fn echo_service(ns: &Netns) -> (SocketAddr, Arc<AtomicUsize>) {
    ns.run(|| async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo");
        let addr = listener.local_addr().expect("addr");
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        (addr, count)
    })
    .await
}

/// A TCP service inside `ns` that reads to the end and answers with the
/// SHA-256 of what it read.
pub async fn hash_service(ns: &Netns) -> SocketAddr {
    use sha2::Digest;
    ns.run(|| async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind hash");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut hasher = sha2::Sha256::new();
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => hasher.update(&buf[..n]),
                        }
                    }
                    let _ = s.write_all(&hasher.finalize()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        addr
    })
    .await
}

/// Writes `data` to the stream and reads back as many bytes (an echo).
pub async fn echo_round(stream: &mut PeerStream, data: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(stream);
    let send = async {
        w.write_all(data).await.expect("write");
        w.flush().await.expect("flush");
    };
    let recv = async {
        let mut back = vec![0u8; data.len()];
        r.read_exact(&mut back).await.expect("read back");
        back
    };
    let ((), back) = tokio::join!(send, recv);
    back
}

pub fn service(name: &str) -> ServiceName {
    name.parse().expect("service name")
}

/// Deterministic pseudo-random bytes (xorshift), different per `seed`.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
