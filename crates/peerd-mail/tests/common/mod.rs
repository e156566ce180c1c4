//! Two couriers (alice at isp-a.test, hitoshi at isp-b.test) on the real
//! loopback mail stack, configured through the real configuration parser.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use peerd_core::{Candidate, CandidateKind, Identity, PeerName};
use peerd_mail::{CourierError, CourierEvent, CourierHandle};
use peerd_state::Store;
use peerd_testkit::MailStack;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How one host reads its mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// IMAP with STARTTLS (IDLE).
    Imap,
    /// POP3 with STLS.
    Pop3,
}

/// What a host's configuration says beyond the defaults.
#[derive(Clone, Debug)]
pub struct HostOptions {
    pub incoming: Incoming,
    pub processed: &'static str,
    pub auto_connect: bool,
    /// Where SMTP goes (default: the stack's submission port).
    pub smtp_port: Option<u16>,
    /// Where the mailbox is reached (default: the stack's IMAP or POP3
    /// port), and with what `security` (default `starttls`; `none` lets a
    /// test's relay read the commands).
    pub incoming_port: Option<u16>,
    pub incoming_security: &'static str,
    pub resend: &'static str,
    pub max_per_hour: u32,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            incoming: Incoming::Imap,
            processed: "delete",
            auto_connect: true,
            smtp_port: None,
            incoming_port: None,
            incoming_security: "starttls",
            resend: "10m",
            max_per_hour: 6,
        }
    }
}

/// A fixed identity per name, so configs can name each other's keys.
pub fn identity(name: &str) -> Identity {
    let seed = match name {
        "alice" => [1u8; 32],
        "hitoshi" => [2u8; 32],
        _ => [3u8; 32],
    };
    Identity::from_seed(&seed)
}

/// The configuration text of `me@domain`, whose peer is `peer@peer_domain`.
pub fn config_text(
    stack: &MailStack,
    dir: &Path,
    me: &str,
    domain: &str,
    peer: &str,
    peer_domain: &str,
    o: &HostOptions,
) -> String {
    let ports = stack.ports();
    let addr = stack.addr();
    let ca = stack.ca_path().display();
    let password = stack.password(me);
    let (protocol, port) = match o.incoming {
        Incoming::Imap => ("imap", ports.imap),
        Incoming::Pop3 => ("pop3", ports.pop3),
    };
    let folders = match o.incoming {
        Incoming::Imap => "folders = [\"INBOX\", \"Junk\"]\n",
        Incoming::Pop3 => "",
    };
    let peer_key = identity(peer).public_key();
    format!(
        r#"
[identity]
name = "{me}"
key_file = "{dir}/identity.key"

[state]
dir = "{dir}"

[mail]
address = "{me}@{domain}"

[mail.smtp]
host = "{addr}"
port = {smtp}
security = "starttls"
username = "{me}@{domain}"
password = "{password}"
ca_file = "{ca}"

[mail.incoming]
protocol = "{protocol}"
host = "{addr}"
port = {port}
security = "{incoming_security}"
username = "{me}@{domain}"
password = "{password}"
ca_file = "{ca}"
poll_interval = "10s"
{folders}processed = "{processed}"

[announce]
resend = "{resend}"
max_per_hour = {max_per_hour}

[[peer]]
name = "{peer}"
email = "{peer}@{peer_domain}"
public_key = "{peer_key}"
auto_connect = {auto_connect}
"#,
        dir = dir.display(),
        smtp = o.smtp_port.unwrap_or(ports.smtp),
        port = o.incoming_port.unwrap_or(port),
        incoming_security = o.incoming_security,
        processed = o.processed,
        resend = o.resend,
        max_per_hour = o.max_per_hour,
        auto_connect = o.auto_connect,
    )
}

/// A running courier.
pub struct Host {
    pub name: &'static str,
    pub dir: PathBuf,
    pub handle: CourierHandle,
    pub events: broadcast::Receiver<CourierEvent>,
    pub store: Arc<Store>,
    tasks: JoinSet<Result<(), CourierError>>,
    shutdown: CancellationToken,
}

impl Host {
    /// Starts `me`'s courier with its state in `dir` (kept by the caller).
    pub fn start(
        stack: &MailStack,
        dir: &Path,
        me: &'static str,
        domain: &str,
        peer: &str,
        peer_domain: &str,
        o: &HostOptions,
    ) -> Host {
        // the courier's log goes with the test's output (shown on failure)
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "peerd_mail=debug".into()),
            )
            .with_test_writer()
            .try_init();
        std::fs::create_dir_all(dir).unwrap();
        let text = config_text(stack, dir, me, domain, peer, peer_domain, o);
        let loaded = peerd_config::parse(&text, Path::new("test.toml"), 0o600)
            .unwrap_or_else(|p| panic!("test config invalid:\n{p}\n{text}"));
        let config = Arc::new(loaded.config);
        let store = Arc::new(Store::open_in(dir).unwrap());
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let handle = peerd_mail::spawn(
            config,
            Arc::new(identity(me)),
            Arc::clone(&store),
            &mut tasks,
            shutdown.clone(),
        );
        let events = handle.events();
        Host {
            name: me,
            dir: dir.to_owned(),
            handle,
            events,
            store,
            tasks,
            shutdown,
        }
    }

    /// Reloads the courier with `me`'s configuration naming another peer.
    pub async fn reconfigure(
        &self,
        stack: &MailStack,
        domain: &str,
        peer: &str,
        peer_domain: &str,
        o: &HostOptions,
    ) {
        let text = config_text(stack, &self.dir, self.name, domain, peer, peer_domain, o);
        let loaded = peerd_config::parse(&text, Path::new("test.toml"), 0o600)
            .unwrap_or_else(|p| panic!("test config invalid:\n{p}\n{text}"));
        self.handle
            .reconfigure(Arc::new(loaded.config))
            .await
            .unwrap();
    }

    /// Waits until the mailbox session is up and its first check is done
    /// (over IMAP: IDLE is running, so new mail is seen at once).
    pub async fn wait_mailbox_session(&self, within: Duration) {
        let mut state = self.handle.watch();
        tokio::time::timeout(
            within,
            state.wait_for(|s| s.connected && s.last_check.is_some()),
        )
        .await
        .unwrap_or_else(|_| panic!("{}'s mailbox session comes up", self.name))
        .unwrap();
    }

    /// Stops the courier and waits for its tasks.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let deadline = Duration::from_secs(40);
        tokio::time::timeout(deadline, async {
            while let Some(r) = self.tasks.join_next().await {
                r.unwrap().unwrap();
            }
        })
        .await
        .expect("the courier stops within its deadline");
    }

    /// Waits for the first event that `pick` accepts.
    pub async fn wait_for<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&CourierEvent) -> Option<T>,
    ) -> T {
        let until = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Ok(event)) => {
                    if let Some(t) = pick(&event) {
                        return t;
                    }
                    seen.push(event);
                },
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {},
                Ok(Err(e)) => panic!("{}: events ended: {e}", self.name),
                Err(_) => panic!(
                    "{}: no matching event within {within:?}; saw {seen:#?}; state {:?}",
                    self.name,
                    self.handle.state()
                ),
            }
        }
    }

    /// Collects every event for `period`.
    pub async fn drain(&mut self, period: Duration) -> Vec<CourierEvent> {
        let until = Instant::now() + period;
        let mut out = Vec::new();
        while let Ok(Ok(e)) = tokio::time::timeout(
            until.saturating_duration_since(Instant::now()),
            self.events.recv(),
        )
        .await
        {
            out.push(e);
        }
        out
    }
}

/// alice's address as a candidate.
pub fn candidate(s: &str) -> Candidate {
    Candidate::new(s.parse().unwrap(), CandidateKind::Host).unwrap()
}

pub fn peer(name: &str) -> PeerName {
    name.parse().unwrap()
}

/// alice (isp-a.test) and hitoshi (isp-b.test) on one stack.
pub fn pair(
    stack: &MailStack,
    dir: &Path,
    alice: &HostOptions,
    hitoshi: &HostOptions,
) -> (Host, Host) {
    let a = Host::start(
        stack,
        &dir.join("alice"),
        "alice",
        "isp-a.test",
        "hitoshi",
        "isp-b.test",
        alice,
    );
    let h = Host::start(
        stack,
        &dir.join("hitoshi"),
        "hitoshi",
        "isp-b.test",
        "alice",
        "isp-a.test",
        hitoshi,
    );
    (a, h)
}

/// A TCP relay in front of a real mail server that drops the first
/// connection on which the client sends a command line containing
/// `trigger` (that line never reaches the server), and relays every other
/// connection untouched. The client must speak plaintext (`security =
/// "none"`) for the relay to read its commands.
pub struct CuttingRelay {
    pub port: u16,
    cuts: Arc<AtomicUsize>,
}

impl CuttingRelay {
    pub async fn start(upstream: SocketAddr, trigger: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cuts = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&cuts);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_rx, mut client_tx) = client.into_split();
                    let (mut server_rx, mut server_tx) = server.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
                    });
                    let mut lines = BufReader::new(client_rx);
                    let mut line = Vec::new();
                    loop {
                        line.clear();
                        match lines.read_until(b'\n', &mut line).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {},
                        }
                        let cut = String::from_utf8_lossy(&line)
                            .to_ascii_uppercase()
                            .contains(trigger)
                            && counter
                                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                                .is_ok();
                        if cut || server_tx.write_all(&line).await.is_err() {
                            break;
                        }
                    }
                    // both directions end: the client sees the connection drop
                    down.abort();
                });
            }
        });
        Self { port, cuts }
    }

    /// How many connections were cut (0 or 1).
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}
