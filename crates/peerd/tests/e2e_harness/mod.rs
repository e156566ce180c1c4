//! The end-to-end harness: real `peerd` and `peerctl` binaries on hosts in
//! network namespaces of their own, talking through a router namespace to
//! the real mail stack (Postfix + Dovecot of `peerd-testkit`).
//!
//! Why a harness of its own: the other namespace tests run actors inside
//! the test process; here the daemon is the shipped binary, so the hosts
//! must be namespaces that processes can be started in (`ip netns exec`),
//! and everything a user would touch (config file, key file, control
//! socket, `peerctl --json`, signals, exit statuses) is what the tests
//! drive.
//!
//! The topology (`W` is a per-world id, so worlds run side by side):
//!
//! ```text
//!  pe2e-W-alice            pe2e-W-router                 pe2e-W-hitoshi
//!  isp0 10.1.N.2/16 ---- to-alice 10.1.0.1/16
//!                         to-hitoshi 10.2.0.1/16 ---- isp0 10.2.N.2/16
//!                         lo 10.77.0.1 "mail.isp-a.test", "mail.isp-b.test"
//! ```
//!
//! The mail stack binds the test process's loopback only (peerd-testkit
//! fixes `MAILSTACK_ADDR=127.0.0.1`), so the harness forwards TCP from
//! `10.77.0.1:<port>` in the router namespace to it: the listening socket
//! is made inside the router namespace, the outgoing one in the test's.
//! The hosts reach the mail servers through their veth and the router, as
//! a customer of an ISP would, by the names in the server certificate
//! (`/etc/netns/<ns>/hosts`, which `ip netns exec` mounts over
//! `/etc/hosts`), with TLS checked against the stack's CA.
//!
//! Changing an address "the way a redial would" ([`Host::redial`]):
//! the old address is deleted from `isp0` (which takes the default route
//! with it), the new one added and the default route put back.
//!
//! Everything is removed on drop, also when a test panics: daemons
//! (SIGTERM, then SIGKILL), helper processes, the namespaces (and with
//! them the veths), `/etc/netns/<ns>`, the mail stack. When a test fails,
//! each daemon's stderr (kept in a file) is printed.
//!
//! Needs root (namespaces, the mail stack); without it the tests fail
//! saying so, as the other namespace tests do.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    reason = "test helpers, shared by test files that use different parts"
)]

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

pub use peerd_testkit::wait_for;
use peerd_testkit::{MailStack, Program, workspace_program};
use serde_json::Value;

/// How long a daemon may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to stop after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The QUIC port every daemon listens on (each namespace has its own).
pub const PEER_PORT: u16 = 7447;
/// The router's mail address, where the mail servers are reached.
pub const MAIL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The uid and gid of `nobody`, for the permission tests.
pub const NOBODY: u32 = 65534;

/// Keeps the world's directory (configs, daemon logs, state) after the test.
const KEEP_ENV: &str = "PEERD_E2E_KEEP";

static WORLDS: AtomicUsize = AtomicUsize::new(0);

/// Panics unless root: the tests need namespaces and the mail stack.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this end-to-end test creates network namespaces and runs the real mail stack: it \
         needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN); run `cargo test` as root, as CI does"
    );
}

/// Whether the heavy variants run (`PEERD_HEAVY=1`).
pub fn heavy() -> bool {
    std::env::var_os("PEERD_HEAVY").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Runs `program args` to completion; panics with its stderr on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's stdout and stderr as text, for messages.
pub fn show(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `f` on a thread inside the named network namespace; sockets made
/// there stay in it.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = fs::File::open(format!("/run/netns/{ns}"))
                .unwrap_or_else(|e| panic!("open /run/netns/{ns}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns into {ns}: {e}"));
            f()
        })
        .join()
        .expect("the namespace thread panicked")
    })
}

/// A program of another package of the workspace, built in this test's
/// target dir and copied to a directory every user may read (the
/// permission test runs peerctl as `nobody`).
fn workspace_binary(kind: Program, name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    static OPEN_DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let from = workspace_program(kind, name);
    let dir = OPEN_DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("pe2e-bin-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        dir
    });
    let copy = dir.path().join(name);
    fs::copy(&from, &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    built.push((name.to_owned(), copy.clone()));
    copy
}

/// `peerctl`, built for this test.
pub fn peerctl_binary() -> PathBuf {
    workspace_binary(Program::Bin, "peerctl")
}

/// The pppd stand-in (`crates/peerd-link/examples/pppd_standin.rs`).
pub fn pppd_standin_binary() -> PathBuf {
    workspace_binary(Program::Example, "pppd_standin")
}

/// The `peerd` binary under test.
pub fn peerd_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_peerd"))
}

/// A named network namespace; deleted (with its devices) on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under `/run/netns`.
    pub name: String,
}

impl Netns {
    fn new(name: String) -> Self {
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip("link set lo up");
        // Reverse-path filtering would drop what arrives for a ppp0
        // address on the veth (the pppd stand-in's tun has no far end).
        for key in ["all", "default"] {
            ns.exec_ok(&["sysctl", "-qw", &format!("net.ipv4.conf.{key}.rp_filter=0")]);
        }
        ns
    }

    /// `ip -n NS ARGS` (split on whitespace); panics on failure.
    pub fn ip(&self, args: &str) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend(args.split_whitespace());
        run("ip", &all);
    }

    /// A command run inside the namespace (`ip netns exec NS PROGRAM`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `argv` inside the namespace; panics on failure; its stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self
            .command(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{argv:?} in {}: {}",
            self.name,
            show(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(self.etc_dir());
    }
}

/// What the router and every host share.
struct Shared {
    id: String,
    /// Runs the mail forwarders (and the services tests start).
    runtime: tokio::runtime::Runtime,
    /// Declared before `mail` and `router`: stopped first.
    mail: MailStack,
    router: Netns,
    dir: PathBuf,
    /// Removes `dir` on drop, unless `PEERD_E2E_KEEP` is set.
    _dir_guard: Option<tempfile::TempDir>,
    hosts: AtomicUsize,
}

/// The mail stack, the router and what every host needs.
#[derive(Clone)]
pub struct World {
    shared: Arc<Shared>,
}

impl World {
    /// Starts the mail stack and the router, with the mail forwarders.
    pub fn new() -> Self {
        require_root();
        let id = format!(
            "{}-{}",
            std::process::id() % 100_000,
            WORLDS.fetch_add(1, Ordering::Relaxed)
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mail = runtime.block_on(MailStack::start());
        let dir = tempfile::Builder::new()
            .prefix(&format!("pe2e-{id}-"))
            .tempdir_in("/tmp")
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let (dir, dir_guard) = if std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty()) {
            let path = dir.keep();
            eprintln!("harness: keeping {} ({KEEP_ENV} is set)", path.display());
            (path, None)
        } else {
            (dir.path().to_owned(), Some(dir))
        };
        let router = Netns::new(format!("pe2e-{id}-router"));
        router.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        router.ip(&format!("addr add {MAIL_ADDR}/32 dev lo"));
        let ports = mail.ports();
        for port in [
            ports.smtp,
            ports.smtps,
            ports.pop3,
            ports.pop3s,
            ports.imap,
            ports.imaps,
        ] {
            let listener = in_netns(&router.name, || {
                let l = TcpListener::bind((MAIL_ADDR, port)).unwrap();
                l.set_nonblocking(true).unwrap();
                l
            });
            let _guard = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            runtime.spawn(forward(listener, SocketAddr::from(([127, 0, 0, 1], port))));
        }
        Self {
            shared: Arc::new(Shared {
                id,
                runtime,
                mail,
                router,
                dir,
                _dir_guard: dir_guard,
                hosts: AtomicUsize::new(0),
            }),
        }
    }

    /// The mail stack.
    pub fn mail(&self) -> &MailStack {
        &self.shared.mail
    }

    /// The router namespace.
    pub fn router(&self) -> &Netns {
        &self.shared.router
    }

    /// A tokio runtime for helpers (services in namespaces).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.shared.runtime
    }

    /// A directory every user may read, removed with the world.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// A new host `name` behind the router, with its key, at its ISP's
    /// first address. `name` is also its mail user (`NAME@isp-X.test`).
    pub fn host(&self, name: &str) -> Host {
        let index = self.shared.hosts.fetch_add(1, Ordering::Relaxed) + 1;
        assert!(index < 200, "too many hosts");
        let ns = Netns::new(format!("pe2e-{}-{name}", self.shared.id));
        fs::create_dir_all(ns.etc_dir()).unwrap();
        fs::write(
            ns.etc_dir().join("hosts"),
            format!("127.0.0.1 localhost\n{MAIL_ADDR} mail.isp-a.test mail.isp-b.test\n"),
        )
        .unwrap();
        let router = &self.shared.router;
        let to = format!("to-{name}");
        assert!(to.len() <= 15, "host name too long for an interface name");
        router.ip(&format!(
            "link add {to} type veth peer name isp0 netns {}",
            ns.name
        ));
        let gateway = Ipv4Addr::new(10, u8::try_from(index).unwrap(), 0, 1);
        router.ip(&format!("addr add {gateway}/16 dev {to}"));
        router.ip(&format!("link set {to} up"));
        let addr = Ipv4Addr::new(10, u8::try_from(index).unwrap(), 1, 2);
        ns.ip(&format!("addr add {addr}/16 dev isp0"));
        ns.ip("link set isp0 up");
        ns.ip(&format!("route add default via {gateway}"));

        let dir = self.dir().join(name);
        fs::create_dir_all(dir.join("control")).unwrap();
        fs::set_permissions(dir.join("control"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(dir.join("hooks.d")).unwrap();
        fs::set_permissions(dir.join("hooks.d"), fs::Permissions::from_mode(0o755)).unwrap();
        let (key, fingerprint) = keygen(&dir.join("identity.key"));
        let domain = if index % 2 == 1 {
            "isp-a.test"
        } else {
            "isp-b.test"
        };
        let password = dir.join("mail.pass");
        fs::write(&password, self.mail().password(name)).unwrap();
        fs::set_permissions(&password, fs::Permissions::from_mode(0o600)).unwrap();
        let settings = Settings::new(name, domain);
        Host {
            world: self.clone(),
            name: name.to_owned(),
            email: format!("{name}@{domain}"),
            ns,
            index,
            addr,
            gateway,
            redials: 1,
            dir,
            key,
            fingerprint,
            settings,
            daemon: None,
            past_logs: Vec::new(),
            children: Vec::new(),
        }
    }
}

impl World {
    /// A key pair that no daemon runs with (a peer that never answers, or
    /// one only added to an address book): its public key and fingerprint.
    pub fn identity(&self, name: &str, email: &str) -> Identity {
        let dir = self.dir().join("identities");
        fs::create_dir_all(&dir).unwrap();
        let (key, fingerprint) = keygen(&dir.join(format!("{name}.key")));
        Identity {
            name: name.to_owned(),
            email: email.to_owned(),
            key,
            fingerprint,
        }
    }
}

/// `peerd keygen --key-file PATH`: the public key and fingerprint it printed.
fn keygen(key_file: &Path) -> (String, String) {
    let out = Command::new(peerd_binary())
        .arg("keygen")
        .arg("--key-file")
        .arg(key_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "peerd keygen: {}", show(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    let key = lines.next().expect("keygen prints the key").to_owned();
    let fingerprint = lines
        .next()
        .expect("keygen prints the fingerprint")
        .to_owned();
    (key, fingerprint)
}

/// A peer's name, mail address and key.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its name.
    pub name: String,
    /// Its mail address.
    pub email: String,
    /// Its public key, as `peerd pubkey` prints it.
    pub key: String,
    /// Its fingerprint.
    pub fingerprint: String,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

/// Copies every connection to `listener` to `target` and back.
async fn forward(listener: tokio::net::TcpListener, target: SocketAddr) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// How a host's link comes up.
#[derive(Debug, Clone)]
pub enum Link {
    /// `driver = "external"`, watching `isp0` (the veth).
    External,
    /// `driver = "pppd"` with the stand-in, watching `ppp0`; `local` is
    /// the address the stand-in gives it (`up LOCAL REMOTE`).
    PppdStandin {
        /// Dial only when needed.
        on_demand: bool,
        /// `idle_hangup`.
        idle_hangup: &'static str,
        /// `check_interval`.
        check_interval: &'static str,
        /// The address "the provider" assigns.
        local: Ipv4Addr,
    },
}

/// A `[[peer]]` entry.
#[derive(Debug, Clone)]
pub struct PeerEntry {
    /// `name`.
    pub name: String,
    /// `email`.
    pub email: String,
    /// `public_key`.
    pub key: String,
    /// `auto_connect`.
    pub auto_connect: bool,
    /// `announce`.
    pub announce: bool,
    /// `accept_unsigned`.
    pub accept_unsigned: bool,
}

/// What goes into a host's `peerd.toml`; tests change it before
/// [`Host::start`] (or before a reload).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[link]`.
    pub link: Link,
    /// `[mail.incoming] protocol`: "imap" or "pop3".
    pub incoming: &'static str,
    /// `[mail.incoming] poll_interval`.
    pub poll_interval: &'static str,
    /// `[control] mode`.
    pub control_mode: &'static str,
    /// `[listen] idle_timeout`.
    pub idle_timeout: &'static str,
    /// `[listen] keepalive`.
    pub keepalive: &'static str,
    /// `[announce] debounce`.
    pub debounce: &'static str,
    /// `[announce] max_per_hour`.
    pub max_per_hour: u32,
    /// `[[peer]]` entries.
    pub peers: Vec<PeerEntry>,
    /// `[[service]]` entries: name, target, peers.
    pub services: Vec<(String, SocketAddr, Vec<String>)>,
    /// Appended as is (for broken configs).
    pub extra: String,
}

impl Settings {
    fn new(_name: &str, _domain: &str) -> Self {
        Self {
            link: Link::External,
            incoming: "imap",
            poll_interval: "10s",
            control_mode: "0660",
            idle_timeout: "30s",
            keepalive: "5s",
            debounce: "200ms",
            max_per_hour: 6,
            peers: Vec::new(),
            services: Vec::new(),
            extra: String::new(),
        }
    }
}

/// A running `peerd` process.
struct Daemon {
    child: Child,
    /// How readiness was seen.
    ready: Readiness,
}

/// How the harness learned that a daemon was ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// `READY=1` on `NOTIFY_SOCKET`.
    Notify,
    /// The control socket answered, but no `READY=1` came.
    SocketOnly,
}

/// One host: a namespace, its key, config, state dir and daemon.
pub struct Host {
    world: World,
    /// Its name (identity name and mail user).
    pub name: String,
    /// Its mail address.
    pub email: String,
    /// Its namespace.
    pub ns: Netns,
    index: usize,
    /// Its current address on `isp0`.
    pub addr: Ipv4Addr,
    gateway: Ipv4Addr,
    redials: u8,
    /// Its directory (config, key, state, control socket, logs).
    pub dir: PathBuf,
    /// Its public key, as `peerd keygen` printed it.
    pub key: String,
    /// Its fingerprint, as `peerd keygen` printed it.
    pub fingerprint: String,
    /// What its config says.
    pub settings: Settings,
    daemon: Option<Daemon>,
    past_logs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Host {
    /// `[[peer]]` for `other` in this host's config.
    pub fn add_peer(&mut self, other: &Identity) {
        self.settings.peers.push(PeerEntry {
            name: other.name.clone(),
            email: other.email.clone(),
            key: other.key.clone(),
            auto_connect: true,
            announce: true,
            accept_unsigned: false,
        });
    }

    /// This host as a peer of others.
    pub fn identity(&self) -> Identity {
        Identity {
            name: self.name.clone(),
            email: self.email.clone(),
            key: self.key.clone(),
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("peerd.toml")
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("control").join("control.sock")
    }

    /// The daemon's stderr (all runs, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("peerd.stderr")
    }

    /// The state dir.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The pppd stand-in's directory (`pppd` symlink, `plan`, `log`).
    pub fn ppp_dir(&self) -> PathBuf {
        self.dir.join("ppp")
    }

    /// The config text for the current settings.
    pub fn config_text(&self) -> String {
        let s = &self.settings;
        let mail = self.world.mail();
        let ports = mail.ports();
        let ca = mail.ca_path().display().to_string();
        let domain = self.email.split('@').nth(1).unwrap();
        let dir = self.dir.display();
        let mut t = String::new();
        let _ = write!(
            t,
            r#"# written by the end-to-end harness
[identity]
name = "{name}"
key_file = "{dir}/identity.key"

[state]
dir = "{dir}/state"

[control]
socket = "{socket}"
mode = "{mode}"
group = "root"

[dbus]
bus = "none"

"#,
            name = self.name,
            socket = self.socket().display(),
            mode = s.control_mode,
        );
        match &s.link {
            Link::External => {
                t.push_str("[link]\ndriver = \"external\"\ninterface = \"isp0\"\nfamilies = [\"ipv4\"]\n\n");
            },
            Link::PppdStandin {
                on_demand,
                idle_hangup,
                check_interval,
                ..
            } => {
                let _ = write!(
                    t,
                    "[link]\ndriver = \"pppd\"\ninterface = \"ppp0\"\nfamilies = [\"ipv4\"]\n\
                     pppd = \"{ppp}/pppd\"\npeer = \"isp\"\non_demand = {on_demand}\n\
                     idle_hangup = \"{idle_hangup}\"\ncheck_interval = \"{check_interval}\"\n\
                     max_failures = 0\n\n",
                    ppp = self.ppp_dir().display(),
                );
            },
        }
        let (in_port, in_security) = match s.incoming {
            "imap" => (ports.imap, "starttls"),
            _ => (ports.pop3, "starttls"),
        };
        let _ = write!(
            t,
            r#"[mail]
address = "{email}"

[mail.smtp]
host = "mail.{domain}"
port = {smtp}
security = "starttls"
username = "{email}"
password_file = "{dir}/mail.pass"
ca_file = "{ca}"

[mail.incoming]
protocol = "{incoming}"
host = "mail.{domain}"
port = {in_port}
security = "{in_security}"
username = "{email}"
password_file = "{dir}/mail.pass"
ca_file = "{ca}"
poll_interval = "{poll}"
{folders}
[announce]
debounce = "{debounce}"
max_per_hour = {max_per_hour}
hooks_dir = "{dir}/hooks.d"

[listen]
port = {PEER_PORT}
addresses = ["0.0.0.0"]
keepalive = "{keepalive}"
idle_timeout = "{idle}"
"#,
            email = self.email,
            smtp = ports.smtp,
            incoming = s.incoming,
            poll = s.poll_interval,
            folders = if s.incoming == "imap" {
                "folders = [\"INBOX\"]\n"
            } else {
                ""
            },
            debounce = s.debounce,
            max_per_hour = s.max_per_hour,
            keepalive = s.keepalive,
            idle = s.idle_timeout,
        );
        for p in &s.peers {
            let _ = write!(
                t,
                "\n[[peer]]\nname = \"{}\"\nemail = \"{}\"\npublic_key = \"{}\"\nauto_connect = {}\nannounce = {}\naccept_unsigned = {}\n",
                p.name, p.email, p.key, p.auto_connect, p.announce, p.accept_unsigned
            );
        }
        for (name, target, peers) in &s.services {
            let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
            let _ = write!(
                t,
                "\n[[service]]\nname = \"{name}\"\ntarget = \"{target}\"\npeers = [{}]\n",
                peers.join(", ")
            );
        }
        t.push_str(&s.extra);
        t
    }

    /// Writes the config file from the settings.
    pub fn write_config(&self) {
        fs::write(self.config_path(), self.config_text()).unwrap();
    }

    /// Writes the stand-in's plan (`up LOCAL REMOTE` on every dial) and
    /// the `pppd` symlink, and routes LOCAL to this host's veth in the
    /// router: the stand-in's tun device has no far end, so the bytes of
    /// "the PPP address" travel on the veth.
    fn prepare_pppd(&self) {
        let Link::PppdStandin { local, .. } = &self.settings.link else {
            return;
        };
        let dir = self.ppp_dir();
        fs::create_dir_all(&dir).unwrap();
        let link = dir.join("pppd");
        if !link.exists() {
            symlink(pppd_standin_binary(), &link).unwrap();
        }
        // REMOTE is the provider's end, never the veth gateway: its /32
        // route on the carrier-less tun would swallow the way to the router.
        fs::write(dir.join("plan"), format!("up {local} 100.64.0.1\n")).unwrap();
        let _ = Command::new("ip")
            .args(["-n", &self.world.router().name, "route", "replace"])
            .arg(format!("{local}/32"))
            .args(["via", &self.addr.to_string()])
            .status();
    }

    /// Writes the config and starts `peerd run` in the namespace; returns
    /// once it is ready (`READY=1`, or else its control socket answering).
    pub fn start(&mut self) -> Readiness {
        assert!(self.daemon.is_none(), "{} runs already", self.name);
        self.write_config();
        self.prepare_pppd();
        let notify_path = self.dir.join("notify.sock");
        let _ = fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let _ = writeln!(log, "===== harness: peerd run ({}) =====", self.name);
        let child = self
            .ns
            .command(peerd_binary())
            .arg("--config")
            .arg(self.config_path())
            .arg("run")
            .env("NOTIFY_SOCKET", &notify_path)
            .env("RUST_LOG", "info,peerd=debug")
            .env_remove("PEERD_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(Daemon {
            child,
            ready: Readiness::SocketOnly,
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut socket_seen: Option<Instant> = None;
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]);
                if msg.lines().any(|l| l == "READY=1") {
                    assert!(
                        UnixStream::connect(self.socket()).is_ok(),
                        "{}: READY=1 came before the control socket accepts connections\n{}",
                        self.name,
                        self.log()
                    );
                    self.daemon.as_mut().unwrap().ready = Readiness::Notify;
                    return Readiness::Notify;
                }
            }
            if let Some(status) = self.daemon.as_mut().unwrap().child.try_wait().unwrap() {
                self.daemon = None;
                panic!(
                    "{}: peerd exited before it was ready ({status})\n{}",
                    self.name,
                    self.log()
                );
            }
            if UnixStream::connect(self.socket()).is_ok() {
                let seen = *socket_seen.get_or_insert_with(Instant::now);
                // The socket answers: READY=1 should be on its way.
                if seen.elapsed() > Duration::from_secs(3) {
                    eprintln!(
                        "harness: {}: the control socket answers but peerd sent no READY=1 on NOTIFY_SOCKET",
                        self.name
                    );
                    return Readiness::SocketOnly;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}: peerd not ready after {READY_TIMEOUT:?} (no READY=1, no control socket)\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// Whether the daemon process still runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.daemon {
            Some(d) => d.child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        let d = self.daemon.as_ref().expect("peerd runs");
        i32::try_from(d.child.id()).unwrap()
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// SIGTERM, then waits for the exit; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut d = self.daemon.take().expect("peerd runs");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(d.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = d.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = d.child.kill();
                let status = d.child.wait().unwrap();
                panic!(
                    "{}: peerd did not stop within {STOP_TIMEOUT:?} of SIGTERM (killed: {status})\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's stderr so far (the last 300 lines).
    pub fn log(&self) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(300);
        format!(
            "----- {} peerd stderr ({}) -----\n{}\n----- end of {} -----",
            self.name,
            self.log_path().display(),
            lines[from..].join("\n"),
            self.name
        )
    }

    /// A `peerctl --socket S ARGS` command (run it yourself).
    pub fn peerctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(peerctl_binary());
        cmd.arg("--socket").arg(self.socket()).args(args);
        cmd.env_remove("PEERD_SOCKET").stdin(Stdio::null());
        cmd
    }

    /// Runs `peerctl ARGS` against this host's daemon.
    pub fn peerctl(&self, args: &[&str]) -> Output {
        self.peerctl_command(args).output().unwrap()
    }

    /// Runs `peerctl ARGS` and panics unless it exits 0; its stdout.
    pub fn peerctl_ok(&self, args: &[&str]) -> String {
        let out = self.peerctl(args);
        assert!(
            out.status.success(),
            "{}: peerctl {args:?}: {}\n{}",
            self.name,
            show(&out),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `peerctl ARGS --json` and parses the one JSON document.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.peerctl_ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("peerctl {all:?}: not one JSON document ({e}): {text}"))
    }

    /// `peers --json`: the entry for `peer`, if listed.
    pub fn peer_info(&self, peer: &str) -> Option<Value> {
        self.json(&["peers"])["peers"]
            .as_array()
            .expect("peers is a list")
            .iter()
            .find(|p| p["name"] == peer)
            .cloned()
    }

    /// The address of the session with `peer`, when connected.
    pub fn session_address(&self, peer: &str) -> Option<SocketAddr> {
        let info = self.peer_info(peer)?;
        if info["state"] != "connected" {
            return None;
        }
        info["session"]["address"].as_str()?.parse().ok()
    }

    /// Follows `peerctl events --json` until dropped.
    pub fn events(&self) -> Events {
        Events::follow(self.peerctl_command(&["events", "--json"]), &self.name)
    }

    /// Changes the address of `isp0` the way a redial would: the old one
    /// goes (taking the default route with it), a new one in the ISP's
    /// range comes, the default route is put back. Returns the new one.
    pub fn redial(&mut self) -> Ipv4Addr {
        self.redials += 1;
        let new = Ipv4Addr::new(10, u8::try_from(self.index).unwrap(), self.redials, 2);
        self.ns.ip(&format!("addr del {}/16 dev isp0", self.addr));
        self.ns.ip(&format!("addr add {new}/16 dev isp0"));
        self.ns.ip(&format!(
            "route replace default via {} dev isp0",
            self.gateway
        ));
        self.addr = new;
        new
    }

    /// Starts a TCP echo server on 127.0.0.1 in this host's namespace
    /// (each line is sent back prefixed with `NAME echo: `); its address.
    pub fn start_echo_server(&self) -> SocketAddr {
        let listener = in_netns(&self.ns.name, || {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        });
        let addr = listener.local_addr().unwrap();
        let prefix = format!("{} echo: ", self.name);
        let rt = self.world.runtime();
        let _guard = rt.enter();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        rt.spawn(async move {
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
            while let Ok((stream, _)) = listener.accept().await {
                let prefix = prefix.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut lines = tokio::io::BufReader::new(r).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if w.write_all(format!("{prefix}{line}\n").as_bytes())
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Keeps `child` running until the host is dropped (killed then).
    pub fn adopt(&mut self, child: Child) {
        self.children.push(child);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut d) = self.daemon.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(d.child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while d.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
        // Whatever the stand-in left behind goes with the namespace.
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
        let _ = Command::new("ip")
            .args(["-n", &self.world.router().name, "link", "del"])
            .arg(format!("to-{}", self.name))
            .stderr(Stdio::null())
            .status();
    }
}

/// A `peerctl events --json` follower: every event it printed, in order.
pub struct Events {
    child: Child,
    rx: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    name: String,
}

impl Events {
    fn follow(mut cmd: Command, name: &str) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    },
                    Err(e) => {
                        let _ = tx.send(serde_json::json!({
                            "event": "harness-unparsable",
                            "line": line,
                            "error": e.to_string(),
                        }));
                    },
                }
            }
        });
        Self {
            child,
            rx,
            seen: Vec::new(),
            name: name.to_owned(),
        }
    }

    /// Waits for the first event (not returned before) that `pred`
    /// accepts; panics after `timeout` listing what came.
    pub fn wait(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    assert_ne!(
                        v["event"], "harness-unparsable",
                        "{}: peerctl events printed a line that is not JSON: {v}",
                        self.name
                    );
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                },
                Err(_) => {
                    let mut stderr = String::new();
                    if let Ok(Some(_)) = self.child.try_wait()
                        && let Some(mut e) = self.child.stderr.take()
                    {
                        let _ = e.read_to_string(&mut stderr);
                    }
                    panic!(
                        "{}: no event {what} within {timeout:?}; events seen:\n{}\n{stderr}",
                        self.name,
                        self.seen
                            .iter()
                            .map(Value::to_string)
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                },
            }
        }
    }

    /// Every event seen so far (including those not waited for), after
    /// taking in what has arrived.
    pub fn seen(&mut self) -> &[Value] {
        while let Ok(v) = self.rx.try_recv() {
            self.seen.push(v);
        }
        &self.seen
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `event` field is `name`.
pub fn is(event: &Value, name: &str) -> bool {
    event["event"] == name
}

/// A line-based conversation over `peerctl open`.
pub struct Stream {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdin: Option<std::process::ChildStdin>,
    pub(crate) stderr_path: PathBuf,
}

impl Stream {
    /// `peerctl open PEER --service SERVICE` on `host`'s daemon.
    pub fn open(host: &Host, peer: &str, service: &str) -> Self {
        let stderr_path = host.dir.join(format!(
            "open-{peer}-{service}-{}.stderr",
            WORLDS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = host
            .peerctl_command(&["open", peer, "--service", service])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines: rx,
            stdin,
            stderr_path,
        }
    }

    /// Sends one line.
    pub fn send(&mut self, line: &str) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(format!("{line}\n").as_bytes())?;
        stdin.flush()
    }

    /// The next line, or why there is none within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<String, String> {
        self.lines.recv_timeout(timeout).map_err(|e| {
            format!(
                "no line from peerctl open ({e}); its stderr: {}",
                fs::read_to_string(&self.stderr_path).unwrap_or_default()
            )
        })
    }

    /// Closes stdin and waits for peerctl to exit (up to `timeout`).
    pub fn finish(mut self, timeout: Duration) -> Option<ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether peerctl has exited, and how.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
