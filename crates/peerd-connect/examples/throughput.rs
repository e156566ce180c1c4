//! Throughput of one peerd stream on loopback, beside plain TCP and `ssh`
//! (aes128-gcm and chacha20-poly1305) measured in the same run, as ratios.
//!
//! Every run sends N bytes through one stream over 127.0.0.1 and stops the
//! clock when the receiver has counted all N (the count is checked):
//!
//! - **plain TCP**: a tokio client writes to a tokio sink that reads and
//!   discards (the baseline for what loopback can do at all);
//! - **peerd**: two connectors in this process, each with its own identity
//!   and its own single-threaded runtime (as the daemon runs), on
//!   127.0.0.1; the writer opens a stream to B's `sink` service (a
//!   `[[service]]` whose target is the same TCP sink), so the bytes go
//!   writer -> QUIC -> B's connector -> TCP -> sink. The clock includes the
//!   stream's open; the session is set up once, before (its time is
//!   printed);
//! - **ssh**: a private `sshd` on 127.0.0.1 (temporary host key, user key
//!   and config), `ssh -c CIPHER root@127.0.0.1 'cat > /dev/null'` with the
//!   data piped to its stdin, timed from the start to ssh's exit; an ssh
//!   run with 0 bytes, in the same rounds, gives its setup time, so the
//!   table also has ssh "without setup".
//!
//! Paths are interleaved (each round runs every path once, in an order
//! rotated per round) so that any load affects all alike; one smaller
//! warm-up round comes first. Before timing, 16 MiB of pseudo-random bytes
//! go through a peerd stream to a service that answers their SHA-256.
//!
//! ```sh
//! cargo run --release -p peerd-connect --example throughput                  # 256 MiB x 3
//! PEERD_HEAVY=1 cargo run --release -p peerd-connect --example throughput    # 1 GiB x 3
//! ```
//!
//! `PEERD_BENCH_MIB=N` and `PEERD_BENCH_RUNS=N` override the size and the
//! number of rounds. Needs root (it starts `sshd` and logs in as root) and
//! Debian's `openssh-server` (`/usr/sbin/sshd`).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    missing_docs
)]

use std::collections::BTreeMap;
use std::error::Error;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerd_config::{ListenConfig, ServiceConfig};
use peerd_connect::{AddressBook, ConnectError, ConnectorConfig, ConnectorHandle, Tuning};
use peerd_core::{AddressClass, Candidate, CandidateKind, Identity, PeerName, ServiceName};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

type Fallible<T> = Result<T, Box<dyn Error + Send + Sync>>;

const MIB: usize = 1 << 20;
/// What writers hand to a stream per call.
const CHUNK: usize = MIB;
/// What the sinks read per call.
const SINK_BUFFER: usize = 256 * 1024;
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const SSHD: &str = "/usr/sbin/sshd";
const GOAL: f64 = 1.5;
const WAIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "throughput: needs root: it starts a private sshd on 127.0.0.1 and logs in to it \
             as root (run it as root, as CI runs the tests)"
        );
        return ExitCode::FAILURE;
    }
    if !Path::new(SSHD).exists() {
        eprintln!(
            "throughput: {SSHD} is missing; install Debian's openssh-server without letting it \
             start a system sshd: printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d; \
             chmod 755 /usr/sbin/policy-rc.d; apt-get install --no-install-recommends \
             openssh-server"
        );
        return ExitCode::FAILURE;
    }
    let heavy = std::env::var("PEERD_HEAVY").is_ok_and(|v| v == "1");
    let mib = env_number("PEERD_BENCH_MIB").unwrap_or(if heavy { 1024 } else { 256 });
    let rounds = env_number("PEERD_BENCH_RUNS").unwrap_or(3).max(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(bench(mib * MIB, rounds, heavy)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("throughput: {e}");
            ExitCode::FAILURE
        },
    }
}

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok()
}

/// A single-threaded tokio runtime on a thread of its own: one "process"
/// of the benchmark (a connector, or the sink).
struct Loop {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Loop {
    fn new(name: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .expect("spawn a runtime thread");
        Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Runs `f` on this loop and waits for its result.
    async fn run<T, Fut>(&self, f: Fut) -> T
    where
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.handle.spawn(f).await.expect("a task panicked")
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the sink saw on one connection: the bytes it read and when it
/// read the end.
type Report = Result<(u64, Instant), String>;

/// A TCP sink: reads every connection to its end, discarding, and reports
/// the count.
async fn sink(listener: TcpListener, reports: mpsc::UnboundedSender<Report>) {
    while let Ok((mut socket, _)) = listener.accept().await {
        let reports = reports.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; SINK_BUFFER];
            let mut count = 0u64;
            let report = loop {
                match socket.read(&mut buffer).await {
                    Ok(0) => break Ok((count, Instant::now())),
                    Ok(n) => count += n as u64,
                    Err(e) => break Err(format!("the sink's read failed: {e}")),
                }
            };
            let _ = reports.send(report);
        });
    }
}

/// A TCP service that reads to the end and answers the SHA-256 of it.
async fn hasher(listener: TcpListener) {
    while let Ok((mut socket, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut hash = sha2::Sha256::new();
            let mut buffer = vec![0u8; SINK_BUFFER];
            while let Ok(n @ 1..) = socket.read(&mut buffer).await {
                hash.update(&buffer[..n]);
            }
            let _ = socket.write_all(&hash.finalize()).await;
            let _ = socket.shutdown().await;
        });
    }
}

/// Writes `total` bytes (`chunk` over and over), then ends the stream.
async fn send_all<W: AsyncWrite + Unpin>(
    writer: &mut W,
    chunk: &[u8],
    total: usize,
) -> std::io::Result<()> {
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len());
        writer.write_all(&chunk[..n]).await?;
        left -= n;
    }
    writer.shutdown().await
}

/// Deterministic pseudo-random bytes (xorshift).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
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

/// Waits for the sink's report of one run and checks its count.
async fn counted(
    reports: &mut mpsc::UnboundedReceiver<Report>,
    expected: usize,
    path: &str,
) -> Fallible<Instant> {
    let report = tokio::time::timeout(Duration::from_secs(600), reports.recv())
        .await
        .map_err(|_| format!("{path}: the sink saw no end of the stream within 600 s"))?
        .ok_or("the sink is gone")?;
    let (count, at) = report.map_err(|e| format!("{path}: {e}"))?;
    if count != expected as u64 {
        return Err(format!("{path}: the sink counted {count} bytes, {expected} were sent").into());
    }
    Ok(at)
}

// ---------------------------------------------------------------------
// peerd: two connectors on 127.0.0.1

struct Peers {
    a: Loop,
    b: Loop,
    a_handle: ConnectorHandle,
    /// Held: a connector shuts down when its last handle goes.
    _b_handle: ConnectorHandle,
    b_name: PeerName,
    tokens: Vec<CancellationToken>,
    /// Dial to first completed hello.
    connect_time: Duration,
}

fn name(s: &str) -> PeerName {
    s.parse().expect("peer name")
}

fn service_name(s: &str) -> ServiceName {
    s.parse().expect("service name")
}

/// Starts a connector on `at` (its own runtime), listening on 127.0.0.1
/// on an ephemeral port.
async fn start_connector(
    at: &Loop,
    seed: u8,
    book: AddressBook,
) -> Fallible<(ConnectorHandle, CancellationToken)> {
    let config = ConnectorConfig {
        listen: ListenConfig {
            port: 0,
            addresses: vec![LOCALHOST],
            keepalive: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
        },
        book,
        tuning: Tuning::default(),
    };
    at.run(async move {
        let identity = Identity::from_seed(&[seed; 32]);
        let token = CancellationToken::new();
        let mut tasks: JoinSet<Result<(), ConnectError>> = JoinSet::new();
        let handle = peerd_connect::spawn(&identity, config, &mut tasks, token.clone())?;
        tokio::spawn(async move {
            while let Some(r) = tasks.join_next().await {
                match r {
                    Ok(Ok(())) => {},
                    Ok(Err(e)) => eprintln!("throughput: a connector failed: {e}"),
                    Err(e) => eprintln!("throughput: a connector task panicked: {e}"),
                }
            }
        });
        Ok((handle, token))
    })
    .await
}

async fn start_peers(
    sink: SocketAddr,
    hash: SocketAddr,
    reports: mpsc::UnboundedSender<Report>,
) -> Fallible<Peers> {
    let (seed_a, seed_b) = (0x0a, 0x0b);
    let key_a = Identity::from_seed(&[seed_a; 32]).public_key();
    let key_b = Identity::from_seed(&[seed_b; 32]).public_key();
    let a = Loop::new("connector-a");
    let b = Loop::new("connector-b");
    let book_a = AddressBook::new([(name("b"), Some(key_b))], Vec::new());
    let services = ["sink", "hash"]
        .iter()
        .zip([sink, hash])
        .map(|(service, target)| ServiceConfig {
            name: service_name(service),
            target,
            peers: vec![name("a")],
        })
        .collect();
    let book_b = AddressBook::new([(name("a"), Some(key_a))], services);
    let (a_handle, token_a) = start_connector(&a, seed_a, book_a).await?;
    let (b_handle, token_b) = start_connector(&b, seed_b, book_b).await?;
    // B's taker of plain streams (a local program there): reads each to
    // its end, discarding, and reports the count like the sink.
    let mut incoming = b_handle.incoming_streams().await?;
    b.handle.spawn(async move {
        while let Some(mut stream) = incoming.recv().await {
            let reports = reports.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; SINK_BUFFER];
                let mut count = 0u64;
                let report = loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) => break Ok((count, Instant::now())),
                        Ok(n) => count += n as u64,
                        Err(e) => break Err(format!("the plain stream's read failed: {e}")),
                    }
                };
                let _ = reports.send(report);
            });
        }
    });
    let b_address = *b_handle
        .listening()
        .first()
        .ok_or("connector b listens nowhere")?;
    // Candidate::new refuses loopback addresses (never announced).
    let candidate = Candidate {
        addr: b_address,
        kind: CandidateKind::Host,
        class: AddressClass::Loopback,
    };
    let b_name = name("b");
    let start = Instant::now();
    a_handle.connect(&b_name, vec![candidate], 1).await?;
    a_handle.wait_connected(&b_name, WAIT).await?;
    let connect_time = start.elapsed();
    Ok(Peers {
        a,
        b,
        a_handle,
        _b_handle: b_handle,
        b_name,
        tokens: vec![token_a, token_b],
        connect_time,
    })
}

impl Peers {
    /// Sends `total` bytes through one stream to B's `sink` service, or
    /// with `service` = `None` to B's taker of plain streams; returns when
    /// the writer started (before the open).
    async fn send(
        &self,
        service: Option<ServiceName>,
        chunk: &Arc<Vec<u8>>,
        total: usize,
    ) -> Fallible<Instant> {
        let handle = self.a_handle.clone();
        let peer = self.b_name.clone();
        let chunk = chunk.clone();
        self.a
            .run(async move {
                let start = Instant::now();
                let mut stream = handle.open(&peer, service).await?;
                send_all(&mut stream, &chunk, total).await?;
                // Dropping the stream now could reset it before the bytes
                // are through: keep it until the other side ends it too.
                tokio::spawn(async move {
                    let mut rest = Vec::new();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(600),
                        stream.read_to_end(&mut rest),
                    )
                    .await;
                });
                Ok::<_, Box<dyn Error + Send + Sync>>(start)
            })
            .await
    }

    /// 16 MiB of pseudo-random bytes to the `hash` service: the SHA-256
    /// it answers must be ours.
    async fn check_sha256(&self) -> Fallible<()> {
        let handle = self.a_handle.clone();
        let peer = self.b_name.clone();
        self.a
            .run(async move {
                let data = pseudo_random(16 * MIB, 7);
                let mut stream = handle.open(&peer, Some(service_name("hash"))).await?;
                send_all(&mut stream, &data, data.len()).await?;
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).await?;
                if answer.as_slice() != sha2::Sha256::digest(&data).as_slice() {
                    return Err("the SHA-256 of 16 MiB through a peerd stream differs".into());
                }
                Ok::<_, Box<dyn Error + Send + Sync>>(())
            })
            .await
    }

    fn stop(self) {
        for token in &self.tokens {
            token.cancel();
        }
        // Let the connectors send their close frames.
        std::thread::sleep(Duration::from_millis(100));
        drop(self.a);
        drop(self.b);
    }
}

// ---------------------------------------------------------------------
// ssh: a private sshd on 127.0.0.1

struct Sshd {
    dir: PathBuf,
    port: u16,
    child: Option<std::process::Child>,
    made_privsep_dir: bool,
}

fn run_quietly(program: &str, args: &[&str]) -> Fallible<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

impl Sshd {
    async fn start() -> Fallible<Self> {
        let dir = std::env::temp_dir().join(format!("peerd-throughput-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut sshd = Self {
            dir,
            port: 0,
            child: None,
            made_privsep_dir: false,
        };
        // Debian's sshd refuses to start without its privilege separation
        // directory (a system sshd makes it at boot).
        let privsep = Path::new("/run/sshd");
        if !privsep.exists() {
            std::fs::create_dir_all(privsep)?;
            sshd.made_privsep_dir = true;
        }
        let host_key = sshd.dir.join("host_key");
        let user_key = sshd.dir.join("user_key");
        for key in [&host_key, &user_key] {
            let path = key.to_str().ok_or("temp dir is not UTF-8")?;
            run_quietly("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", path])?;
        }
        let authorized = sshd.dir.join("authorized_keys");
        std::fs::copy(sshd.dir.join("user_key.pub"), &authorized)?;
        // A free port: bind, note it, let it go (sshd binds it next).
        sshd.port = std::net::TcpListener::bind((LOCALHOST, 0))?
            .local_addr()?
            .port();
        let config = sshd.dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1:{port}\n\
                 HostKey {host}\n\
                 PidFile {dir}/sshd.pid\n\
                 AuthorizedKeysFile {authorized}\n\
                 AuthenticationMethods publickey\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 UseDNS no\n\
                 PrintMotd no\n\
                 PrintLastLog no\n\
                 X11Forwarding no\n\
                 Ciphers aes128-gcm@openssh.com,chacha20-poly1305@openssh.com\n\
                 LogLevel ERROR\n",
                port = sshd.port,
                host = host_key.display(),
                dir = sshd.dir.display(),
                authorized = authorized.display(),
            ),
        )?;
        let log = std::fs::File::create(sshd.dir.join("sshd.log"))?;
        let child = std::process::Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {SSHD}: {e}"))?;
        sshd.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect((LOCALHOST, sshd.port)).await.is_err() {
            if let Some(status) = sshd
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = std::fs::read_to_string(sshd.dir.join("sshd.log")).unwrap_or_default();
                return Err(format!("sshd exited ({status}): {}", log.trim()).into());
            }
            if Instant::now() > deadline {
                return Err(format!("sshd is not listening on 127.0.0.1:{}", sshd.port).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(sshd)
    }

    /// Pipes `total` bytes into `ssh -c cipher root@127.0.0.1 'cat >
    /// /dev/null'`; the time from the start to ssh's exit.
    async fn send(&self, cipher: &str, chunk: &[u8], total: usize) -> Fallible<Duration> {
        let port = self.port.to_string();
        let key = self.dir.join("user_key");
        let mut command = tokio::process::Command::new("ssh");
        command
            .args(["-F", "/dev/null"])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "IdentitiesOnly=yes"])
            .args(["-o", "LogLevel=ERROR"])
            .arg("-i")
            .arg(&key)
            .args([
                "-p",
                &port,
                "-c",
                cipher,
                "root@127.0.0.1",
                "cat > /dev/null",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let start = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run ssh: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("ssh has no stdin")?;
        let written = send_all(&mut stdin, chunk, total).await;
        drop(stdin);
        let out = child.wait_with_output().await?;
        let elapsed = start.elapsed();
        if !out.status.success() || written.is_err() {
            return Err(format!(
                "ssh -c {cipher} ({}; writing: {written:?}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Ok(elapsed)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if self.made_privsep_dir {
            let _ = std::fs::remove_dir(Path::new("/run/sshd"));
        }
    }
}

// ---------------------------------------------------------------------
// the run

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Route {
    Tcp,
    Peerd,
    PeerdPlain,
    SshAes,
    SshChacha,
    /// ssh with 0 bytes: its setup alone.
    SshSetup,
}

const ROUTES: [Route; 6] = [
    Route::Tcp,
    Route::Peerd,
    Route::PeerdPlain,
    Route::SshAes,
    Route::SshChacha,
    Route::SshSetup,
];

impl Route {
    fn label(self) -> &'static str {
        match self {
            Self::Tcp => "plain TCP (tokio, 127.0.0.1)",
            Self::Peerd => "peerd stream to a TCP service",
            Self::PeerdPlain => "peerd plain stream (read in B's process)",
            Self::SshAes => "ssh aes128-gcm@openssh.com",
            Self::SshChacha => "ssh chacha20-poly1305@openssh.com",
            Self::SshSetup => "ssh setup (0 bytes)",
        }
    }

    fn cipher(self) -> Option<&'static str> {
        match self {
            Self::SshAes | Self::SshSetup => Some("aes128-gcm@openssh.com"),
            Self::SshChacha => Some("chacha20-poly1305@openssh.com"),
            Self::Tcp | Self::Peerd | Self::PeerdPlain => None,
        }
    }
}

struct Bench {
    chunk: Arc<Vec<u8>>,
    sink_addr: SocketAddr,
    reports: mpsc::UnboundedReceiver<Report>,
    peers: Peers,
    sshd: Sshd,
    /// UDP datagrams the kernel dropped for a full receive buffer during
    /// the peerd runs (system-wide counter: nothing else should be busy).
    udp_drops: u64,
}

/// `RcvbufErrors` of /proc/net/snmp.
fn udp_receive_buffer_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
}

impl Bench {
    /// One run of `route` with `total` bytes: how long it took.
    async fn run(&mut self, route: Route, total: usize) -> Fallible<Duration> {
        match route {
            Route::Tcp => {
                let start = Instant::now();
                let mut socket = TcpStream::connect(self.sink_addr).await?;
                send_all(&mut socket, &self.chunk, total).await?;
                let end = counted(&mut self.reports, total, route.label()).await?;
                Ok(end - start)
            },
            Route::Peerd | Route::PeerdPlain => {
                let service = (route == Route::Peerd).then(|| service_name("sink"));
                let drops = udp_receive_buffer_errors();
                let start = self.peers.send(service, &self.chunk, total).await?;
                let end = counted(&mut self.reports, total, route.label()).await?;
                if let (Some(before), Some(after)) = (drops, udp_receive_buffer_errors()) {
                    self.udp_drops += after.saturating_sub(before);
                }
                Ok(end - start)
            },
            Route::SshAes | Route::SshChacha | Route::SshSetup => {
                let cipher = route.cipher().expect("an ssh route");
                let bytes = if route == Route::SshSetup { 0 } else { total };
                self.sshd.send(cipher, &self.chunk, bytes).await
            },
        }
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

async fn bench(total: usize, rounds: usize, heavy: bool) -> Fallible<()> {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let load_before = load_average();
    println!(
        "peerd stream throughput on loopback: {} MiB per run, {rounds} rounds, median (min-max); \
         MB = 10^6 bytes",
        total / MIB
    );
    println!(
        "machine: {cores} cores ({}), load average {load_before}",
        cpu_model()
    );

    // The sinks, on a runtime of their own (the receiving "process").
    let sinks = Loop::new("sink");
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let sink_reports = reports_tx.clone();
    let (sink_addr, hash_addr) = sinks
        .run(async move {
            let sink = TcpListener::bind((LOCALHOST, 0)).await?;
            let hash = TcpListener::bind((LOCALHOST, 0)).await?;
            let addrs = (sink.local_addr()?, hash.local_addr()?);
            tokio::spawn(self::sink(sink, sink_reports));
            tokio::spawn(hasher(hash));
            Ok::<_, std::io::Error>(addrs)
        })
        .await?;

    let peers = start_peers(sink_addr, hash_addr, reports_tx).await?;
    println!(
        "peerd session set up (dial, handshake, hello) in {:.1} ms; the QUIC cipher is \
         AES-128-GCM (first on both sides; rustls takes the client's order)",
        peers.connect_time.as_secs_f64() * 1e3
    );
    peers.check_sha256().await?;
    println!("16 MiB of pseudo-random bytes through a peerd stream: SHA-256 matches");
    let sshd = Sshd::start().await?;
    let mut bench = Bench {
        chunk: Arc::new(pseudo_random(CHUNK, 1)),
        sink_addr,
        reports,
        peers,
        sshd,
        udp_drops: 0,
    };

    // Warm-up: every path once, smaller, not counted.
    let warm = (total / 4).max(MIB);
    for route in ROUTES {
        bench.run(route, warm).await?;
    }
    bench.udp_drops = 0;
    let mut seconds: BTreeMap<Route, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        for i in 0..ROUTES.len() {
            let route = ROUTES[(i + round) % ROUTES.len()];
            let t = bench.run(route, total).await?;
            seconds.entry(route).or_default().push(t.as_secs_f64());
            eprintln!(
                "round {}: {:<42} {:>8.3} s",
                round + 1,
                route.label(),
                t.as_secs_f64()
            );
        }
    }
    let load_after = load_average();
    let Bench {
        peers,
        sshd,
        udp_drops,
        ..
    } = bench;
    drop(sshd);
    peers.stop();
    drop(sinks);

    let setup = median(&seconds[&Route::SshSetup]);
    let mbps = |t: f64| total as f64 / t / 1e6;
    let rates = |route: Route| -> Vec<f64> { seconds[&route].iter().map(|&t| mbps(t)).collect() };
    let rates_without_setup = |route: Route| -> Vec<f64> {
        seconds[&route]
            .iter()
            .map(|&t| mbps((t - setup).max(1e-9)))
            .collect()
    };
    println!();
    println!("| path | MB/s (median) | min-max |");
    println!("|---|---:|---:|");
    let row = |label: &str, r: &[f64]| -> f64 {
        let (lo, hi) = min_max(r);
        let m = median(r);
        println!("| {label} | {m:.0} | {lo:.0}-{hi:.0} |");
        m
    };
    let without = |route: Route| format!("{} without setup", route.label());
    let tcp = row(Route::Tcp.label(), &rates(Route::Tcp));
    let peerd = row(Route::Peerd.label(), &rates(Route::Peerd));
    let plain = row(Route::PeerdPlain.label(), &rates(Route::PeerdPlain));
    let aes = row(Route::SshAes.label(), &rates(Route::SshAes));
    let aes_bare = row(&without(Route::SshAes), &rates_without_setup(Route::SshAes));
    let chacha = row(Route::SshChacha.label(), &rates(Route::SshChacha));
    let chacha_bare = row(
        &without(Route::SshChacha),
        &rates_without_setup(Route::SshChacha),
    );
    println!(
        "ssh setup (connect, key exchange, login, 'cat' started; 0 bytes): {:.0} ms (median)",
        setup * 1e3
    );
    println!("UDP datagrams dropped for a full receive buffer during the peerd runs: {udp_drops}");
    println!();
    println!(
        "peerd (service) / ssh aes128-gcm:        {:.2}x ({:.2}x against ssh without its setup)",
        peerd / aes,
        peerd / aes_bare
    );
    println!(
        "peerd (service) / ssh chacha20-poly1305: {:.2}x ({:.2}x against ssh without its setup)",
        peerd / chacha,
        peerd / chacha_bare
    );
    println!(
        "peerd (service) / plain TCP:             {:.2}x",
        peerd / tcp
    );
    println!(
        "peerd (plain) / ssh aes128-gcm without its setup: {:.2}x",
        plain / aes_bare
    );
    let verdict = |ratio: f64| if ratio >= GOAL { "met" } else { "NOT met" };
    println!(
        "goal, peerd >= {GOAL}x ssh aes128-gcm: {} ({} against ssh without its setup)",
        verdict(peerd / aes),
        verdict(peerd / aes_bare),
    );
    println!("load average: {load_before} before, {load_after} after");
    println!(
        "reproduce: {}cargo run --release -p peerd-connect --example throughput",
        if heavy { "PEERD_HEAVY=1 " } else { "" }
    );
    Ok(())
}
