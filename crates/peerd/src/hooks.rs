//! The hooks runner: runs the executables in `[announce] hooks_dir` when
//! something happens, with the event in `PEERD_*` environment variables.
//!
//! - **Owns**: the queue of events and the one hook process running at a
//!   time.
//! - **Inputs**: [`HookEvent`]s through [`HooksHandle::notify`] (never
//!   blocks; a full queue drops the event with a warning),
//!   [`HooksHandle::reconfigure`] (SIGHUP), [`HooksHandle::flush`].
//! - **Outputs**: one log record per run (exit status, duration, the
//!   captured output), and [`HookReport`]s on a `broadcast`.
//! - **Shutdown**: on the cancellation token, a running hook gets SIGTERM
//!   (its whole process group), then SIGKILL after a short grace, and is
//!   reaped; events still queued are dropped (and counted in the log).
//!
//! The rules, as run-parts(8) and ifupdown's hook directories have them
//! (`docs/hooks.md` is the user's version):
//!
//! - For every event, the directory is read again (a hook added or removed
//!   takes effect at the next event) and every eligible file in it runs,
//!   in byte order of the names, one after the other; events run in the
//!   order they were notified, one at a time.
//! - Eligible: a regular file (a symlink to one counts) with an execute
//!   bit. Skipped quietly (debug log): dotfiles, editor and package
//!   manager leftovers ([`is_ignored_name`]), directories and other
//!   non-regular files, files without an execute bit (the way to disable a
//!   hook). Refused with a warning and a [`HookReport::Refused`]: a file
//!   (or the directory itself) owned by someone other than root or the
//!   daemon's user, or writable by group or others: whoever can change it
//!   could run code as the daemon.
//! - Each hook runs with stdin on `/dev/null`, its stdout and stderr
//!   captured (the first [`HooksConfig::output_limit`] bytes of each) into
//!   the log, in `/`, in a process group of its own, with no arguments and
//!   a clean environment: `PATH` ([`HOOK_PATH`]) and the event's
//!   variables ([`HookEvent::environment`]), nothing inherited from the
//!   daemon (no `NOTIFY_SOCKET`, no `CREDENTIALS_DIRECTORY`, ...).
//! - After [`HooksConfig::timeout`] the hook's process group gets SIGTERM,
//!   and SIGKILL [`HooksConfig::kill_grace`] later; the hook is reaped and
//!   the next one runs. A failing or hanging hook is logged, never fatal.
//! - A missing `hooks_dir` is normal (nothing runs, debug log).
//!
//! Only validated values reach a hook: every field of [`HookEvent`] has a
//! type that cannot hold anything else (a [`PeerName`], parsed IP
//! addresses, a [`ReasonCode`] from our own enums, a sender escaped to
//! `[A-Za-z0-9.@_+=-]` and `\xNN`), so a forged `From:` or subject cannot
//! put a shell metacharacter, a space or a newline into a hook's
//! environment.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use peerd_announce::Rejection;
use peerd_config::Config;
use peerd_core::PeerName;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// `PATH` in a hook's environment: the usual system directories, nothing
/// from the daemon's environment.
pub const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long a hook may run before it is stopped (default of
/// [`HooksConfig::timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Between SIGTERM and SIGKILL (default of [`HooksConfig::kill_grace`]).
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);
/// The grace a running hook gets when the daemon shuts down (or
/// `kill_grace`, if shorter).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// The output kept per stream and run (default of
/// [`HooksConfig::output_limit`]); the rest is counted and dropped.
pub const DEFAULT_OUTPUT_LIMIT: usize = 8 * 1024;
/// Events waiting to run; more are dropped with a warning.
pub const QUEUE_CAPACITY: usize = 128;
/// The most addresses put in `PEERD_ADDRESSES` (an announcement carries at
/// most 64 candidates).
pub const MAX_ADDRESSES: usize = 64;
/// How long the output of a hook that has exited is still read: a process
/// it left running in the background may hold its stdout open.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);
/// How often a hook is started again when the kernel says its file is
/// being written (`ETXTBSY`, e.g. while a package manager installs it).
const BUSY_RETRIES: u32 = 5;

/// The characters that stay as they are in an escaped value
/// ([`peerd_announce::escape_address`]'s alphabet).
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'@' | b'_' | b'+' | b'=' | b'-')
}

/// `s` with every byte outside [`is_plain`] written as `\xNN`, except that
/// an existing `\xNN` (two lowercase hex digits) is kept, so text escaped
/// by [`peerd_announce::escape_address`] stays as it is; cut at `max`
/// bytes with `...`.
fn sanitize(s: &str, max: usize) -> String {
    let bytes = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if out.len() >= max {
            out.push_str("...");
            break;
        }
        let b = bytes[i];
        let escape_seq = b == b'\\'
            && bytes.get(i + 1) == Some(&b'x')
            && bytes
                .get(i + 2..i + 4)
                .is_some_and(|h| h.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        if escape_seq {
            out.push_str(&s[i..i + 4]);
            i += 4;
            continue;
        }
        if is_plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
        i += 1;
    }
    out
}

/// A mail sender as it may reach a hook (`PEERD_SENDER`): only
/// `[A-Za-z0-9.@_+=-]`, every other byte written as `\xNN` (so `$(` is
/// `\x24\x28`, a space `\x20`, a newline `\x0a`), at most about 260
/// characters. The `From:` of a rejected mail proves nothing (anyone can
/// write any), so it is only ever shown in this form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EscapedSender(String);

impl EscapedSender {
    /// The longest value kept before it is cut with `...`.
    const MAX: usize = 256;

    /// Escapes a raw `From:` address (the same escaping as
    /// [`peerd_announce::escape_address`]).
    pub fn escape(raw: &str) -> Self {
        Self(sanitize(&peerd_announce::escape_address(raw), Self::MAX))
    }

    /// Takes text that was escaped already (by
    /// [`peerd_announce::escape_address`], as `Rejected::from` and the
    /// courier's events carry it): escaped text is kept as it is, and
    /// anything that is not escaped is escaped now, so this never lets
    /// through more than [`Self::escape`] does.
    pub fn from_escaped(escaped: &str) -> Self {
        Self(sanitize(escaped, Self::MAX))
    }

    /// The escaped text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EscapedSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A network interface name as it may reach a hook (`PEERD_INTERFACE`).
/// The kernel allows nearly any byte in a name (`$(x)` is a valid one), so
/// bytes outside `[A-Za-z0-9.@_+=-]` are written as `\xNN`, like a sender;
/// ordinary names (`ppp0`, `eth0`, `wlp3s0`, `br-lan`) are unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InterfaceName(String);

impl InterfaceName {
    /// An interface name from the kernel (netlink) or the config.
    pub fn new(name: &str) -> Self {
        // At most 15 bytes in Linux; the cap only guards against a caller
        // passing something that is not an interface name at all.
        Self(sanitize(name, 64))
    }

    /// The (escaped) name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A reason as it may reach a hook (`PEERD_REASON`): the short code of one
/// of peerd's own enums (`bad-signature`, `timed-out`, ...), never text
/// from outside. Only a `&'static str` makes one, so it is a string
/// written in peerd's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReasonCode(&'static str);

impl ReasonCode {
    /// `unknown`: what is reported if a code somehow is not one.
    pub const UNKNOWN: Self = Self("unknown");

    /// `code`, if it is a code: 1 to 64 bytes of `[a-z0-9-]`.
    pub fn new(code: &'static str) -> Option<Self> {
        let ok = !code.is_empty()
            && code.len() <= 64
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ok.then_some(Self(code))
    }

    /// The code.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl From<&Rejection> for ReasonCode {
    fn from(r: &Rejection) -> Self {
        // Rejection::code() is a fixed set of kebab-case words (checked by
        // a test below); fall back to a generic word rather than panic.
        Self::new(r.code()).unwrap_or(Self("rejected"))
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Something a hook is told about. The daemon maps actor events into it;
/// every field is already validated or escaped, so whatever is in here may
/// go into a hook's environment as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEvent {
    /// `address-changed`: the watched interface's announceable addresses
    /// changed (after the debounce).
    AddressChanged {
        /// The watched interface, if there is one.
        interface: Option<InterfaceName>,
        /// Its announceable addresses now, best first (may be empty).
        addresses: Vec<IpAddr>,
    },
    /// `announcement-sent`: the mail server accepted an announcement.
    AnnouncementSent {
        /// To whom (a peer of the address book).
        peer: PeerName,
        /// The addresses it carried.
        addresses: Vec<SocketAddr>,
        /// Its sequence number (`None` for a plain mail).
        sequence: Option<u64>,
    },
    /// `announcement-received`: a verified announcement arrived.
    AnnouncementReceived {
        /// From whom (a peer of the address book, found by its key).
        peer: PeerName,
        /// The addresses it carried.
        addresses: Vec<SocketAddr>,
        /// Its sequence number.
        sequence: u64,
    },
    /// `announcement-rejected`: a peerd mail failed verification.
    AnnouncementRejected {
        /// The peer whose key sealed it, when the key is in the address
        /// book (an expired or replayed mail of a known peer).
        peer: Option<PeerName>,
        /// The mail's `From:`, escaped; `None` when it had none.
        sender: Option<EscapedSender>,
        /// Why ([`Rejection::code`]).
        reason: ReasonCode,
    },
    /// `peer-connected`: an authenticated session with a peer is up.
    PeerConnected {
        /// Who.
        peer: PeerName,
        /// The peer's address.
        address: SocketAddr,
    },
    /// `peer-disconnected`: the session with a peer ended.
    PeerDisconnected {
        /// Who.
        peer: PeerName,
        /// Why (the connector's reason code).
        reason: ReasonCode,
    },
    /// `link-up`: the link has an announceable address.
    LinkUp {
        /// The interface.
        interface: InterfaceName,
    },
    /// `link-down`: the link went down (asked to, or failed).
    LinkDown {
        /// The interface, if known.
        interface: Option<InterfaceName>,
        /// Why (the link manager's reason code).
        reason: ReasonCode,
    },
}

fn joined<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .take(MAX_ADDRESSES)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

impl HookEvent {
    /// The value of `PEERD_EVENT`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::AddressChanged { .. } => "address-changed",
            Self::AnnouncementSent { .. } => "announcement-sent",
            Self::AnnouncementReceived { .. } => "announcement-received",
            Self::AnnouncementRejected { .. } => "announcement-rejected",
            Self::PeerConnected { .. } => "peer-connected",
            Self::PeerDisconnected { .. } => "peer-disconnected",
            Self::LinkUp { .. } => "link-up",
            Self::LinkDown { .. } => "link-down",
        }
    }

    /// The `PEERD_*` variables a hook gets for this event, in this order
    /// (with `PATH` they are its whole environment):
    ///
    /// | variable | events | value |
    /// |---|---|---|
    /// | `PEERD_EVENT` | all | [`Self::name`] |
    /// | `PEERD_PEER` | sent, received, connected, disconnected; rejected when the key is known | a peer name, `[a-z0-9_-]{1,32}` |
    /// | `PEERD_ADDRESSES` | address-changed (IPs), sent, received (IP:port), connected (one IP:port) | space-separated, IPv6 with port as `[addr]:port`; possibly empty for address-changed |
    /// | `PEERD_SEQUENCE` | sent (sealed), received | decimal |
    /// | `PEERD_SENDER` | rejected, when the mail had a `From:` | escaped ([`EscapedSender`]) |
    /// | `PEERD_REASON` | rejected, disconnected, link-down | a [`ReasonCode`] |
    /// | `PEERD_INTERFACE` | address-changed, link-up, link-down, when known | [`InterfaceName`] |
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("PEERD_EVENT", self.name().to_owned())];
        match self {
            Self::AddressChanged {
                interface,
                addresses,
            } => {
                if let Some(i) = interface {
                    env.push(("PEERD_INTERFACE", i.to_string()));
                }
                env.push(("PEERD_ADDRESSES", joined(addresses)));
            },
            Self::AnnouncementSent {
                peer,
                addresses,
                sequence,
            } => {
                env.push(("PEERD_PEER", peer.to_string()));
                env.push(("PEERD_ADDRESSES", joined(addresses)));
                if let Some(s) = sequence {
                    env.push(("PEERD_SEQUENCE", s.to_string()));
                }
            },
            Self::AnnouncementReceived {
                peer,
                addresses,
                sequence,
            } => {
                env.push(("PEERD_PEER", peer.to_string()));
                env.push(("PEERD_ADDRESSES", joined(addresses)));
                env.push(("PEERD_SEQUENCE", sequence.to_string()));
            },
            Self::AnnouncementRejected {
                peer,
                sender,
                reason,
            } => {
                if let Some(p) = peer {
                    env.push(("PEERD_PEER", p.to_string()));
                }
                if let Some(s) = sender {
                    env.push(("PEERD_SENDER", s.to_string()));
                }
                env.push(("PEERD_REASON", reason.to_string()));
            },
            Self::PeerConnected { peer, address } => {
                env.push(("PEERD_PEER", peer.to_string()));
                env.push(("PEERD_ADDRESSES", address.to_string()));
            },
            Self::PeerDisconnected { peer, reason } => {
                env.push(("PEERD_PEER", peer.to_string()));
                env.push(("PEERD_REASON", reason.to_string()));
            },
            Self::LinkUp { interface } => {
                env.push(("PEERD_INTERFACE", interface.to_string()));
            },
            Self::LinkDown { interface, reason } => {
                if let Some(i) = interface {
                    env.push(("PEERD_INTERFACE", i.to_string()));
                }
                env.push(("PEERD_REASON", reason.to_string()));
            },
        }
        env
    }
}

/// How hooks are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HooksConfig {
    /// `[announce] hooks_dir`.
    pub dir: PathBuf,
    /// How long one hook may run ([`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Between SIGTERM and SIGKILL when it ran too long
    /// ([`DEFAULT_KILL_GRACE`]).
    pub kill_grace: Duration,
    /// Output kept per stream and run ([`DEFAULT_OUTPUT_LIMIT`]).
    pub output_limit: usize,
}

impl HooksConfig {
    /// Hooks in `dir`, with the default timings.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            timeout: DEFAULT_TIMEOUT,
            kill_grace: DEFAULT_KILL_GRACE,
            output_limit: DEFAULT_OUTPUT_LIMIT,
        }
    }

    /// The hooks of a configuration (`[announce] hooks_dir`).
    pub fn from_config(config: &Config) -> Self {
        Self::new(config.announce.hooks_dir.clone())
    }
}

/// Why a hook request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HooksError {
    /// The runner has stopped.
    #[error("the hooks runner is not running")]
    Gone,
    /// [`QUEUE_CAPACITY`] events are waiting: this one was dropped.
    #[error("{QUEUE_CAPACITY} hook events are waiting already: event {0} dropped")]
    QueueFull(&'static str),
}

/// Why a file (or the directory) is not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Owned by this uid, which is neither root nor the daemon's user.
    Owner(u32),
    /// Group or others may write it (these permission bits).
    Writable(u32),
    /// Its name has bytes that are not printable UTF-8.
    BadName,
    /// Its status could not be read (a dangling symlink, ...).
    Unreadable(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Owner(uid) => write!(
                f,
                "owned by uid {uid}, not by root or the user peerd runs as"
            ),
            Self::Writable(mode) => {
                write!(f, "group or others can write it (mode {mode:04o})")
            },
            Self::BadName => f.write_str("its name is not printable UTF-8"),
            Self::Unreadable(e) => write!(f, "cannot read its status: {e}"),
        }
    }
}

/// How one hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// It exited with this status.
    Exited(i32),
    /// A signal we did not send ended it.
    Signalled(i32),
    /// It ran longer than the timeout and was stopped (SIGTERM, then
    /// SIGKILL if needed).
    TimedOut,
    /// It could not be started (the system's reason).
    SpawnFailed(String),
    /// The daemon shut down while it ran; it was stopped.
    Cancelled,
}

impl HookOutcome {
    /// Whether the hook ran and exited with status 0.
    pub fn is_success(&self) -> bool {
        *self == Self::Exited(0)
    }
}

impl fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "exited with status {code}"),
            Self::Signalled(sig) => write!(f, "killed by signal {sig}"),
            Self::TimedOut => f.write_str("timed out and was stopped"),
            Self::SpawnFailed(e) => write!(f, "could not be started: {e}"),
            Self::Cancelled => f.write_str("stopped because peerd is shutting down"),
        }
    }
}

/// One hook run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    /// The event's name ([`HookEvent::name`]).
    pub event: &'static str,
    /// The hook's file name.
    pub hook: String,
    /// How it ended.
    pub outcome: HookOutcome,
    /// How long it ran.
    pub duration: Duration,
    /// The first `output_limit` bytes of its stdout.
    pub stdout: Vec<u8>,
    /// The first `output_limit` bytes of its stderr.
    pub stderr: Vec<u8>,
    /// Output bytes beyond the limit (both streams), not kept.
    pub dropped_output: u64,
}

/// What the runner did, for tests and the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookReport {
    /// A hook ran.
    Ran(HookRun),
    /// A hook, or the whole directory, was not run because it is unsafe
    /// (a warning is logged as well).
    Refused {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        why: Refusal,
    },
}

enum Job {
    Event(HookEvent),
    Reconfigure(HooksConfig),
    Flush(oneshot::Sender<()>),
}

/// The hooks runner's handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct HooksHandle {
    jobs: mpsc::Sender<Job>,
    reports: broadcast::Sender<HookReport>,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Event(e) => write!(f, "Event({})", e.name()),
            Self::Reconfigure(_) => f.write_str("Reconfigure"),
            Self::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl HooksHandle {
    /// Queues `event`; its hooks run after those of every event queued
    /// before it. Never waits: when [`QUEUE_CAPACITY`] events are waiting
    /// (hooks that are slow to finish) the event is dropped and a warning
    /// logged.
    pub fn notify(&self, event: HookEvent) -> Result<(), HooksError> {
        let name = event.name();
        match self.jobs.try_send(Job::Event(event)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(
                    event = name,
                    "hook queue full ({QUEUE_CAPACITY} events waiting): event dropped"
                );
                Err(HooksError::QueueFull(name))
            },
            Err(mpsc::error::TrySendError::Closed(_)) => Err(HooksError::Gone),
        }
    }

    /// Uses `config` from the next event on (SIGHUP); events queued before
    /// run with the old one.
    pub async fn reconfigure(&self, config: HooksConfig) -> Result<(), HooksError> {
        self.jobs
            .send(Job::Reconfigure(config))
            .await
            .map_err(|_| HooksError::Gone)
    }

    /// Waits until the hooks of every event queued before this call have
    /// run.
    pub async fn flush(&self) -> Result<(), HooksError> {
        let (reply, done) = oneshot::channel();
        self.jobs
            .send(Job::Flush(reply))
            .await
            .map_err(|_| HooksError::Gone)?;
        done.await.map_err(|_| HooksError::Gone)
    }

    /// A receiver of reports from now on.
    pub fn reports(&self) -> broadcast::Receiver<HookReport> {
        self.reports.subscribe()
    }
}

/// Starts the hooks runner on `tasks`. It never fails: a hook's failure
/// is logged, and the task ends with `Ok` on shutdown or when every
/// handle is gone.
pub fn spawn<E>(
    config: HooksConfig,
    tasks: &mut JoinSet<Result<(), E>>,
    shutdown: CancellationToken,
) -> HooksHandle
where
    E: From<HooksError> + Send + 'static,
{
    let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
    let (reports, _) = broadcast::channel(256);
    let runner = Runner {
        config,
        queue,
        reports: reports.clone(),
        euid: nix::unistd::geteuid().as_raw(),
        shutdown,
    };
    tasks.spawn(async move {
        runner.run().await;
        Ok(())
    });
    HooksHandle { jobs, reports }
}

/// The task's state.
struct Runner {
    config: HooksConfig,
    queue: mpsc::Receiver<Job>,
    reports: broadcast::Sender<HookReport>,
    /// Hooks owned by this uid (or root) may run.
    euid: u32,
    shutdown: CancellationToken,
}

impl Runner {
    async fn run(mut self) {
        loop {
            let job = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                job = self.queue.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
            };
            match job {
                Job::Event(event) => self.run_event(&event).await,
                Job::Reconfigure(config) => {
                    if config.dir != self.config.dir {
                        info!(dir = %config.dir.display(), "hooks directory changed");
                    }
                    self.config = config;
                },
                Job::Flush(reply) => {
                    let _ = reply.send(());
                },
            }
        }
        self.queue.close();
        let mut dropped = 0u32;
        while let Ok(job) = self.queue.try_recv() {
            if matches!(job, Job::Event(_)) {
                dropped += 1;
            }
        }
        if dropped > 0 {
            info!(dropped, "shutting down: queued hook events not run");
        }
    }

    fn report(&self, report: HookReport) {
        // No subscriber is fine: reports are informational.
        let _ = self.reports.send(report);
    }

    async fn run_event(&mut self, event: &HookEvent) {
        let dir = self.config.dir.clone();
        let euid = self.euid;
        let scan = match tokio::task::spawn_blocking(move || scan(&dir, euid)).await {
            Ok(scan) => scan,
            Err(e) => {
                warn!(error = %e, "reading the hooks directory failed");
                return;
            },
        };
        let hooks = match scan {
            Scan::NoDir => {
                debug!(dir = %self.config.dir.display(), event = event.name(), "no hooks directory");
                return;
            },
            Scan::Unusable(why) => {
                warn!(dir = %self.config.dir.display(), error = %why, "hooks directory unusable: no hooks run");
                return;
            },
            Scan::Found { hooks, refused } => {
                for (path, why) in refused {
                    warn!(hook = %path.display(), reason = %why, "hook refused");
                    let dir_refused = path == self.config.dir;
                    self.report(HookReport::Refused { path, why });
                    if dir_refused {
                        return;
                    }
                }
                hooks
            },
        };
        let env = event.environment();
        for (name, path) in hooks {
            if self.shutdown.is_cancelled() {
                return;
            }
            let run = self.run_hook(event.name(), name, &path, &env).await;
            log_run(&run);
            self.report(HookReport::Ran(run));
        }
    }

    async fn run_hook(
        &self,
        event: &'static str,
        hook: String,
        path: &Path,
        env: &[(&'static str, String)],
    ) -> HookRun {
        let started = Instant::now();
        let mut run = HookRun {
            event,
            hook,
            outcome: HookOutcome::Cancelled,
            duration: Duration::ZERO,
            stdout: Vec::new(),
            stderr: Vec::new(),
            dropped_output: 0,
        };
        let mut child = match start(path, env).await {
            Ok(child) => child,
            Err(e) => {
                run.outcome = HookOutcome::SpawnFailed(e.to_string());
                run.duration = started.elapsed();
                return run;
            },
        };
        // Its own process group: the child's pid. `None` only once reaped.
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let exited = CancellationToken::new();
        let limit = self.config.output_limit;
        let stdout = capture(child.stdout.take(), limit, exited.clone());
        let stderr = capture(child.stderr.take(), limit, exited.clone());
        let waiter = async {
            let outcome = self.wait(&mut child, group).await;
            exited.cancel();
            outcome
        };
        let (outcome, (out, out_dropped), (err, err_dropped)) =
            tokio::join!(waiter, stdout, stderr);
        run.outcome = outcome;
        run.duration = started.elapsed();
        run.stdout = out;
        run.stderr = err;
        run.dropped_output = out_dropped + err_dropped;
        run
    }

    /// Waits for the hook, stopping it after the timeout or on shutdown.
    async fn wait(&self, child: &mut Child, group: Option<Pid>) -> HookOutcome {
        let grace = self.config.kill_grace;
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => {
                terminate(child, group, grace.min(SHUTDOWN_GRACE)).await;
                HookOutcome::Cancelled
            },
            status = child.wait() => match status {
                Ok(status) => outcome_of(status),
                // Waiting itself failed: kill it rather than leave it.
                Err(e) => {
                    terminate(child, group, Duration::ZERO).await;
                    HookOutcome::SpawnFailed(format!("waiting for it failed: {e}"))
                },
            },
            () = tokio::time::sleep(self.config.timeout) => {
                terminate(child, group, grace).await;
                HookOutcome::TimedOut
            },
        }
    }
}

fn outcome_of(status: ExitStatus) -> HookOutcome {
    match (status.code(), status.signal()) {
        (Some(code), _) => HookOutcome::Exited(code),
        (None, Some(sig)) => HookOutcome::Signalled(sig),
        (None, None) => HookOutcome::Exited(-1),
    }
}

/// Starts one hook with a clean environment.
async fn start(path: &Path, env: &[(&'static str, String)]) -> io::Result<Child> {
    let mut tries = 0;
    loop {
        let mut cmd = Command::new(path);
        cmd.env_clear()
            .env("PATH", HOOK_PATH)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        match cmd.spawn() {
            // The file is open for writing (being installed, or inherited
            // for a moment by a process another thread forks): try again
            // shortly, as a shell would not.
            Err(e) if e.raw_os_error() == Some(Errno::ETXTBSY as i32) && tries < BUSY_RETRIES => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20 << tries)).await;
            },
            other => return other,
        }
    }
}

/// SIGTERM to the hook's process group, SIGKILL after `grace` if the hook
/// is still there, then SIGKILL to whatever it left in its group; the hook
/// is reaped.
async fn terminate(child: &mut Child, group: Option<Pid>, grace: Duration) {
    let signal_group = |sig: Signal| {
        if let Some(g) = group {
            match killpg(g, sig) {
                Ok(()) | Err(Errno::ESRCH) => {},
                Err(e) => {
                    warn!(group = g.as_raw(), signal = %sig, error = %e, "cannot signal a hook");
                },
            }
        }
    };
    signal_group(Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        debug!("hook still running after SIGTERM: SIGKILL");
    }
    // Also for a hook that ended on SIGTERM: what it started and left in
    // its group goes with it.
    signal_group(Signal::SIGKILL);
    if let Err(e) = child.wait().await {
        warn!(error = %e, "reaping a stopped hook failed");
    }
}

/// Reads `stream` to its end, keeping the first `limit` bytes; stops
/// [`OUTPUT_GRACE`] after `exited` (a background process may hold the
/// stream open). Returns the kept bytes and how many were dropped.
async fn capture(
    stream: Option<impl AsyncRead + Unpin>,
    limit: usize,
    exited: CancellationToken,
) -> (Vec<u8>, u64) {
    let Some(mut stream) = stream else {
        return (Vec::new(), 0);
    };
    let mut kept = Vec::new();
    let mut dropped = 0u64;
    let mut buf = [0u8; 4096];
    let grace = async {
        exited.cancelled().await;
        tokio::time::sleep(OUTPUT_GRACE).await;
    };
    tokio::pin!(grace);
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = limit.saturating_sub(kept.len()).min(n);
                    kept.extend_from_slice(&buf[..room]);
                    dropped += (n - room) as u64;
                },
            },
            () = &mut grace => break,
        }
    }
    (kept, dropped)
}

/// Logs a run: how it ended, then its output line by line (escaped: a
/// hook's output is its own, but it must not forge log lines).
fn log_run(run: &HookRun) {
    let ms = u64::try_from(run.duration.as_millis()).unwrap_or(u64::MAX);
    if run.outcome.is_success() {
        info!(hook = %run.hook, event = run.event, duration_ms = ms, "hook finished");
    } else {
        warn!(hook = %run.hook, event = run.event, duration_ms = ms, outcome = %run.outcome, "hook failed");
    }
    for (stream, bytes) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        for line in String::from_utf8_lossy(bytes).lines() {
            info!(hook = %run.hook, stream, "{}", line.escape_debug());
        }
    }
    if run.dropped_output > 0 {
        info!(hook = %run.hook, bytes = run.dropped_output, "hook output beyond the limit not shown");
    }
}

/// The outcome of reading the hooks directory.
enum Scan {
    /// It does not exist.
    NoDir,
    /// It exists but cannot be used (not a directory, unreadable).
    Unusable(String),
    /// The hooks to run (name, path), in order, and the files (or the
    /// directory itself) refused.
    Found {
        hooks: Vec<(String, PathBuf)>,
        refused: Vec<(PathBuf, Refusal)>,
    },
}

/// Whether a file in the hooks directory is ignored by its name alone:
/// dotfiles, editor backups and swap files (`*~`, `#*#`, `*.swp`,
/// `*.bak`, `*.orig`), package manager leftovers (`*.dpkg-old`,
/// `*.dpkg-dist`, `*.dpkg-new`, `*.dpkg-tmp`, `*.ucf-*`, `*.rpmnew`,
/// `*.rpmsave`, `*.rpmorig`) and `*.disabled`.
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || (name.starts_with('#') && name.ends_with('#'))
        || name.contains(".dpkg-")
        || name.contains(".ucf-")
        || [
            ".rpmnew",
            ".rpmsave",
            ".rpmorig",
            ".swp",
            ".bak",
            ".orig",
            ".disabled",
        ]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// Whether a file owned by `uid` with permission bits `mode` may run code
/// as the daemon (running as `euid`).
fn unsafe_owner_or_mode(uid: u32, mode: u32, euid: u32) -> Option<Refusal> {
    if uid != 0 && uid != euid {
        return Some(Refusal::Owner(uid));
    }
    if mode & 0o022 != 0 {
        return Some(Refusal::Writable(mode & 0o7777));
    }
    None
}

/// Reads the hooks directory (blocking; runs on the blocking pool).
fn scan(dir: &Path, euid: u32) -> Scan {
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Scan::NoDir,
        Err(e) => return Scan::Unusable(e.to_string()),
    };
    if !meta.is_dir() {
        return Scan::Unusable("not a directory".to_owned());
    }
    if let Some(why) = unsafe_owner_or_mode(meta.uid(), meta.permissions().mode(), euid) {
        return Scan::Found {
            hooks: Vec::new(),
            refused: vec![(dir.to_path_buf(), why)],
        };
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return Scan::Unusable(e.to_string()),
    };
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => names.push(entry.file_name()),
            Err(e) => return Scan::Unusable(e.to_string()),
        }
    }
    names.sort();
    let mut hooks = Vec::new();
    let mut refused = Vec::new();
    for raw in names {
        let path = dir.join(&raw);
        let Some(name) = raw
            .to_str()
            .filter(|n| !n.chars().any(|c| c.is_control() || c.is_whitespace()))
        else {
            if !raw.as_encoded_bytes().starts_with(b".") {
                refused.push((path, Refusal::BadName));
            }
            continue;
        };
        if is_ignored_name(name) {
            debug!(hook = name, "ignored by its name");
            continue;
        }
        // Follows a symlink: what runs is the file it points to.
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) => {
                refused.push((path, Refusal::Unreadable(e.to_string())));
                continue;
            },
        };
        let mode = meta.permissions().mode();
        if !meta.is_file() {
            debug!(hook = name, "not a regular file: skipped");
            continue;
        }
        if mode & 0o111 == 0 {
            debug!(hook = name, "not executable: skipped");
            continue;
        }
        if let Some(why) = unsafe_owner_or_mode(meta.uid(), mode, euid) {
            refused.push((path, why));
            continue;
        }
        hooks.push((name.to_owned(), path));
    }
    Scan::Found { hooks, refused }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_escaped_text_and_escapes_everything_else() {
        let hostile = "x$(touch /tmp/x)`id`;\n\"@evil.example";
        let escaped = EscapedSender::escape(hostile);
        assert_eq!(
            escaped.as_str(),
            "x\\x24\\x28touch\\x20\\x2ftmp\\x2fx\\x29\\x60id\\x60\\x3b\\x0a\\x22@evil.example"
        );
        // Escaped text from the courier stays as it is...
        let from_courier = peerd_announce::escape_address(hostile);
        assert_eq!(EscapedSender::from_escaped(&from_courier), escaped);
        // ...and text that was not escaped is escaped now.
        assert_eq!(EscapedSender::from_escaped(hostile), escaped);
        assert_eq!(
            EscapedSender::from_escaped("(not downloaded)").as_str(),
            "\\x28not\\x20downloaded\\x29"
        );
        // A backslash not starting \xNN is escaped itself.
        assert_eq!(
            EscapedSender::from_escaped("a\\xZZ\\x4").as_str(),
            "a\\x5cxZZ\\x5cx4"
        );
        assert_eq!(
            EscapedSender::from_escaped("\\x4A").as_str(),
            "\\x5cx4A",
            "only lowercase hex, as escape_address writes it"
        );
        for s in [hostile, "ü@例え.jp", "\u{0}\u{7f}"] {
            let e = EscapedSender::escape(s);
            assert!(e.as_str().bytes().all(|b| is_plain(b) || b == b'\\'), "{e}");
        }
        let long = EscapedSender::escape(&"$".repeat(1000));
        assert!(long.as_str().len() < 270 && long.as_str().ends_with("..."));
    }

    #[test]
    fn interface_names_are_kept_or_escaped() {
        for ok in ["ppp0", "eth0", "wlp3s0", "br-lan", "enx001122334455"] {
            assert_eq!(InterfaceName::new(ok).as_str(), ok);
        }
        assert_eq!(
            InterfaceName::new("$(reboot)").as_str(),
            "\\x24\\x28reboot\\x29"
        );
    }

    #[test]
    fn reason_codes_are_our_words_only() {
        assert!(ReasonCode::new("bad-signature").is_some());
        let long: &'static str = "a".repeat(65).leak();
        for bad in ["", "Bad", "a b", "a\n", "x;y", long] {
            assert!(ReasonCode::new(bad).is_none(), "{bad:?}");
        }
        let all = [
            Rejection::NotPeerdMail,
            Rejection::Malformed("x"),
            Rejection::UnknownVersion(9),
            Rejection::UnknownSuite(9),
            Rejection::UnknownKind(9),
            Rejection::UnknownSender,
            Rejection::NotAddressedToUs,
            Rejection::DecryptionFailed,
            Rejection::BadSignature,
            Rejection::Expired,
            Rejection::FromFuture,
            Rejection::Duplicate,
            Rejection::Stale {
                sequence: 1,
                last: 2,
            },
            Rejection::Replayed,
            Rejection::ClockNotSet,
        ];
        for r in &all {
            assert!(ReasonCode::new(r.code()).is_some(), "{}", r.code());
            assert_eq!(ReasonCode::from(r).as_str(), r.code());
        }
    }

    #[test]
    fn the_environment_of_each_event() {
        let peer: PeerName = "hitoshi".parse().unwrap();
        let env = |e: HookEvent| {
            e.environment()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            env(HookEvent::AddressChanged {
                interface: Some(InterfaceName::new("ppp0")),
                addresses: vec![
                    "203.0.113.7".parse().unwrap(),
                    "2001:db8::7".parse().unwrap()
                ],
            }),
            [
                "PEERD_EVENT=address-changed",
                "PEERD_INTERFACE=ppp0",
                "PEERD_ADDRESSES=203.0.113.7 2001:db8::7"
            ]
        );
        assert_eq!(
            env(HookEvent::AddressChanged {
                interface: None,
                addresses: vec![],
            }),
            ["PEERD_EVENT=address-changed", "PEERD_ADDRESSES="]
        );
        assert_eq!(
            env(HookEvent::AnnouncementSent {
                peer: peer.clone(),
                addresses: vec!["[2001:db8::7]:7447".parse().unwrap()],
                sequence: None,
            }),
            [
                "PEERD_EVENT=announcement-sent",
                "PEERD_PEER=hitoshi",
                "PEERD_ADDRESSES=[2001:db8::7]:7447"
            ]
        );
        assert_eq!(
            env(HookEvent::AnnouncementReceived {
                peer: peer.clone(),
                addresses: vec!["203.0.113.7:7447".parse().unwrap()],
                sequence: 17,
            }),
            [
                "PEERD_EVENT=announcement-received",
                "PEERD_PEER=hitoshi",
                "PEERD_ADDRESSES=203.0.113.7:7447",
                "PEERD_SEQUENCE=17"
            ]
        );
        assert_eq!(
            env(HookEvent::AnnouncementRejected {
                peer: None,
                sender: Some(EscapedSender::escape("a b@c")),
                reason: ReasonCode::from(&Rejection::BadSignature),
            }),
            [
                "PEERD_EVENT=announcement-rejected",
                "PEERD_SENDER=a\\x20b@c",
                "PEERD_REASON=bad-signature"
            ]
        );
        assert_eq!(
            env(HookEvent::PeerConnected {
                peer: peer.clone(),
                address: "203.0.113.7:7447".parse().unwrap(),
            }),
            [
                "PEERD_EVENT=peer-connected",
                "PEERD_PEER=hitoshi",
                "PEERD_ADDRESSES=203.0.113.7:7447"
            ]
        );
        assert_eq!(
            env(HookEvent::PeerDisconnected {
                peer,
                reason: ReasonCode::new("idle-timeout").unwrap(),
            }),
            [
                "PEERD_EVENT=peer-disconnected",
                "PEERD_PEER=hitoshi",
                "PEERD_REASON=idle-timeout"
            ]
        );
        assert_eq!(
            env(HookEvent::LinkUp {
                interface: InterfaceName::new("ppp0"),
            }),
            ["PEERD_EVENT=link-up", "PEERD_INTERFACE=ppp0"]
        );
        assert_eq!(
            env(HookEvent::LinkDown {
                interface: None,
                reason: ReasonCode::new("requested").unwrap(),
            }),
            ["PEERD_EVENT=link-down", "PEERD_REASON=requested"]
        );
        let many = HookEvent::AddressChanged {
            interface: None,
            addresses: vec!["192.0.2.1".parse().unwrap(); 100],
        };
        let addresses = many.environment().pop().unwrap().1;
        assert_eq!(addresses.split(' ').count(), MAX_ADDRESSES);
    }

    #[test]
    fn ignored_names() {
        for name in [
            ".hidden",
            "hook~",
            "#hook#",
            "hook.dpkg-old",
            "hook.dpkg-dist",
            "hook.dpkg-new",
            "hook.dpkg-tmp",
            "hook.ucf-dist",
            "hook.rpmnew",
            "hook.rpmsave",
            "hook.rpmorig",
            ".hook.swp",
            "hook.swp",
            "hook.bak",
            "hook.orig",
            "hook.disabled",
        ] {
            assert!(is_ignored_name(name), "{name}");
        }
        for name in ["10-notify", "hook.sh", "50_ddns", "zz.py"] {
            assert!(!is_ignored_name(name), "{name}");
        }
    }

    #[test]
    fn owner_and_mode_rules() {
        assert_eq!(unsafe_owner_or_mode(0, 0o755, 1000), None);
        assert_eq!(unsafe_owner_or_mode(1000, 0o700, 1000), None);
        assert_eq!(
            unsafe_owner_or_mode(1001, 0o755, 1000),
            Some(Refusal::Owner(1001))
        );
        assert_eq!(
            unsafe_owner_or_mode(0, 0o100_775, 0),
            Some(Refusal::Writable(0o775))
        );
        assert_eq!(
            unsafe_owner_or_mode(0, 0o757, 0),
            Some(Refusal::Writable(0o757))
        );
    }
}
