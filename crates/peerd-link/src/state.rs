//! What the link is doing and why it failed: the values published on the
//! link manager's `watch` and `broadcast` channels.
//!
//! The failure reasons are typed (not strings) because they travel to
//! several places that treat them differently: `peerctl link status` and
//! D-Bus show their text, tests and the daemon match on them, and the
//! redial policy counts them. pppd's exit statuses come with the meaning
//! pppd(8) documents, so "pppd exited with status 4" never reaches a user
//! without "no kernel support for PPP" next to it.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// The link's state, as `peerctl link status` and D-Bus show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected, and nothing is being tried.
    Down,
    /// Dialling: the modem's AT dialogue, or pppd started and not yet
    /// negotiating (its connect script runs).
    Dialing,
    /// pppd negotiates the link (LCP, authentication, IPCP); the interface
    /// has no announceable address yet.
    Connecting,
    /// The interface has an announceable address.
    Up {
        /// The interface (`ppp0`, or the watched interface of an external
        /// link).
        interface: String,
        /// Since when.
        since: SystemTime,
    },
    /// Hanging up: pppd was asked to stop, the modem is being put on hook.
    HangingUp,
    /// The last attempt failed.
    Failed {
        /// Why.
        reason: FailureReason,
        /// When the next attempt is made; `None` when none is planned
        /// (given up, or nobody wants the link now).
        retry_at: Option<SystemTime>,
    },
}

impl LinkState {
    /// The state's name for D-Bus, JSON and logs: `down`, `dialing`,
    /// `connecting`, `up`, `hanging-up` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Dialing => "dialing",
            Self::Connecting => "connecting",
            Self::Up { .. } => "up",
            Self::HangingUp => "hanging-up",
            Self::Failed { .. } => "failed",
        }
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        matches!(self, Self::Up { .. })
    }
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Up { interface, .. } => write!(f, "up on {interface}"),
            Self::Failed {
                reason,
                retry_at: Some(at),
            } => {
                let wait = at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                write!(f, "failed: {reason}; next attempt in {}s", wait.as_secs())
            },
            Self::Failed {
                reason,
                retry_at: None,
            } => write!(f, "failed: {reason}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Something that happened to the link (the `broadcast` channel). The
/// current state is on the `watch`; these are the transitions and
/// requests that a subscriber may need to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A dial attempt started.
    Dialing {
        /// Failures in a row before this attempt.
        failures: u32,
    },
    /// The interface got an announceable address.
    Up {
        /// The interface.
        interface: String,
    },
    /// The link went down because it was asked to (request, idle timer,
    /// end of a mail check, shutdown).
    Down,
    /// An attempt failed, or an established link dropped.
    Failed {
        /// Why.
        reason: FailureReason,
        /// Failures in a row, this one included.
        failures: u32,
        /// When the next attempt is made, if one is planned.
        retry_at: Option<SystemTime>,
    },
    /// `on_demand` only: the link is up for the periodic mail check. The
    /// mail courier checks the mailbox and then calls
    /// [`LinkHandle::check_done`](crate::LinkHandle::check_done) with
    /// this number; without that the link manager ends the check after
    /// its window anyway.
    CheckDue {
        /// Which check (increasing).
        check: u64,
    },
    /// A periodic check could not bring the link up; the next one comes
    /// after `check_interval`.
    CheckMissed {
        /// Which check.
        check: u64,
        /// Why.
        reason: FailureReason,
    },
    /// Hanging up the modem did not complete (`ATH` unanswered): the line
    /// may still be off hook.
    HangupIncomplete {
        /// What went wrong.
        error: String,
    },
}

/// pppd's exit statuses, as pppd(8) "EXIT STATUS" documents them (0..19
/// in the manual; 20 and 21 are defined in pppd.h since 2.4.x and listed
/// in the manual of pppd 2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PppdExitCode {
    /// 0: pppd detached, or the connection was established and ended at
    /// the peer's request.
    Ok,
    /// 1: an immediately fatal error (an essential system call failed,
    /// out of memory).
    FatalError,
    /// 2: an error in the options.
    OptionError,
    /// 3: pppd is not setuid-root and the user is not root.
    NotRoot,
    /// 4: the kernel does not support PPP.
    NoKernelSupport,
    /// 5: pppd was sent SIGINT, SIGTERM or SIGHUP.
    UserRequest,
    /// 6: the serial port could not be locked.
    LockFailed,
    /// 7: the serial port could not be opened.
    OpenFailed,
    /// 8: the connect script failed.
    ConnectFailed,
    /// 9: the `pty` command could not be run.
    PtyCommandFailed,
    /// 10: PPP negotiation failed (no network protocol came up).
    NegotiationFailed,
    /// 11: the peer failed (or refused) to authenticate itself.
    PeerAuthFailed,
    /// 12: the link was idle and pppd ended it.
    IdleTimeout,
    /// 13: the connect time limit was reached.
    ConnectTime,
    /// 14: callback was negotiated; an incoming call should arrive.
    Callback,
    /// 15: the peer stopped answering LCP echo requests.
    PeerDead,
    /// 16: the modem hung up.
    Hangup,
    /// 17: serial loopback was detected.
    Loopback,
    /// 18: the init script failed.
    InitFailed,
    /// 19: we failed to authenticate ourselves to the peer.
    AuthToPeerFailed,
    /// 20: the traffic limit (`maxoctets`) was reached.
    TrafficLimit,
    /// 21: the calling number is not authorized.
    CallingNumberRefused,
    /// A status pppd does not document.
    Other(i32),
}

impl PppdExitCode {
    /// Every documented status, in order (0..=21).
    pub const DOCUMENTED: [PppdExitCode; 22] = [
        Self::Ok,
        Self::FatalError,
        Self::OptionError,
        Self::NotRoot,
        Self::NoKernelSupport,
        Self::UserRequest,
        Self::LockFailed,
        Self::OpenFailed,
        Self::ConnectFailed,
        Self::PtyCommandFailed,
        Self::NegotiationFailed,
        Self::PeerAuthFailed,
        Self::IdleTimeout,
        Self::ConnectTime,
        Self::Callback,
        Self::PeerDead,
        Self::Hangup,
        Self::Loopback,
        Self::InitFailed,
        Self::AuthToPeerFailed,
        Self::TrafficLimit,
        Self::CallingNumberRefused,
    ];

    /// The code for an exit status.
    pub fn from_code(code: i32) -> Self {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::DOCUMENTED.get(i).copied())
            .unwrap_or(Self::Other(code))
    }

    /// The numeric exit status.
    pub fn code(self) -> i32 {
        match self {
            Self::Other(code) => code,
            documented => Self::DOCUMENTED
                .iter()
                .position(|c| *c == documented)
                .and_then(|i| i32::try_from(i).ok())
                .unwrap_or(-1),
        }
    }

    /// What pppd(8) says the status means.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::Ok => "pppd detached, or the connection ended at the peer's request",
            Self::FatalError => {
                "an immediately fatal error (an essential system call failed, or out of memory)"
            },
            Self::OptionError => "an error in the options given to pppd",
            Self::NotRoot => "pppd is not setuid-root and the invoking user is not root",
            Self::NoKernelSupport => {
                "no kernel support for PPP (the PPP driver is not in the kernel or cannot be loaded)"
            },
            Self::UserRequest => "pppd was sent SIGINT, SIGTERM or SIGHUP",
            Self::LockFailed => "the serial port could not be locked",
            Self::OpenFailed => "the serial port could not be opened",
            Self::ConnectFailed => "the connect script failed",
            Self::PtyCommandFailed => "the command given to the pty option could not be run",
            Self::NegotiationFailed => {
                "PPP negotiation failed (no network protocol such as IP came up)"
            },
            Self::PeerAuthFailed => "the peer failed (or refused) to authenticate itself",
            Self::IdleTimeout => "the link was idle and pppd terminated it",
            Self::ConnectTime => "the connect time limit was reached",
            Self::Callback => "callback was negotiated; an incoming call should arrive shortly",
            Self::PeerDead => "the peer stopped answering echo requests",
            Self::Hangup => "modem hangup",
            Self::Loopback => "serial loopback was detected",
            Self::InitFailed => "the init script failed",
            Self::AuthToPeerFailed => {
                "authentication failed (we could not authenticate to the peer)"
            },
            Self::TrafficLimit => "the traffic limit was reached",
            Self::CallingNumberRefused => "the calling number is not authorized",
            Self::Other(_) => "an exit status pppd does not document",
        }
    }
}

impl fmt::Display for PppdExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.meaning())
    }
}

/// A modem's final result code that ends a dial attempt, or what else
/// went wrong talking to the modem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModemFailure {
    /// The serial device could not be opened.
    Open {
        /// The device.
        device: PathBuf,
        /// The error.
        error: String,
    },
    /// Reading or writing the serial device failed.
    Io {
        /// The error.
        error: String,
    },
    /// `BUSY`: the number is busy.
    Busy,
    /// `NO CARRIER`: the call did not connect (or carrier was lost).
    NoCarrier,
    /// `NO DIALTONE`: no dial tone (line unplugged, no network).
    NoDialtone,
    /// `NO ANSWER`: nobody answered.
    NoAnswer,
    /// `ERROR`: the modem rejected a command.
    Error {
        /// The command.
        command: String,
    },
    /// No final result code in time.
    Timeout {
        /// The command that got no answer.
        command: String,
        /// How long we waited.
        waited: Duration,
        /// The last line the modem sent, if any (to tell garbage from
        /// silence).
        last_line: Option<String>,
    },
    /// A final result code that makes no sense for the command (`OK` to
    /// `ATD`, `CONNECT` to an init string).
    Unexpected {
        /// The command.
        command: String,
        /// What the modem said.
        result: String,
    },
}

impl fmt::Display for ModemFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open { device, error } => {
                write!(f, "cannot open the modem {}: {error}", device.display())
            },
            Self::Io { error } => write!(f, "modem I/O failed: {error}"),
            Self::Busy => f.write_str("modem: BUSY (the number is busy)"),
            Self::NoCarrier => f.write_str("modem: NO CARRIER (the call did not connect)"),
            Self::NoDialtone => {
                f.write_str("modem: NO DIALTONE (no dial tone: is the line or network there?)")
            },
            Self::NoAnswer => f.write_str("modem: NO ANSWER (the remote end did not answer)"),
            Self::Error { command } => write!(f, "modem: ERROR in answer to {command:?}"),
            Self::Timeout {
                command,
                waited,
                last_line,
            } => {
                write!(
                    f,
                    "modem: no final result code for {command:?} within {}ms (timeout)",
                    waited.as_millis()
                )?;
                match last_line {
                    Some(line) => write!(f, "; last line {line:?}"),
                    None => f.write_str("; the modem said nothing"),
                }
            },
            Self::Unexpected { command, result } => {
                write!(f, "modem: unexpected {result:?} in answer to {command:?}")
            },
        }
    }
}

/// Why the link failed: what `LinkState::Failed` and `LinkEvent::Failed`
/// carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// pppd exited on its own.
    Pppd {
        /// Its exit status.
        code: PppdExitCode,
        /// The last thing it logged (its stdout; else the first line of
        /// its stderr), when it said anything.
        detail: Option<String>,
    },
    /// pppd was killed by a signal we did not send.
    PppdKilled {
        /// The signal number.
        signal: i32,
    },
    /// pppd could not be started.
    Spawn {
        /// The program.
        program: PathBuf,
        /// The error.
        error: String,
    },
    /// The modem dialogue failed.
    Modem(ModemFailure),
    /// pppd ran, but the interface got no announceable address in time;
    /// pppd was hung up.
    NoAddress {
        /// The interface expected (`None` with `interface = "auto"` when
        /// pppd named none).
        interface: Option<String>,
        /// How long we waited.
        waited: Duration,
    },
    /// `max_failures` failures in a row: no more attempts until `link up`
    /// (or, with `on_demand`, the next lease).
    GaveUp {
        /// The number of failures.
        failures: u32,
        /// The last one.
        last: Box<FailureReason>,
    },
}

impl FailureReason {
    /// A short kebab-case word for hooks and scripts (`PEERD_REASON`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Pppd { .. } => "pppd-exited",
            Self::PppdKilled { .. } => "pppd-killed",
            Self::Spawn { .. } => "spawn-failed",
            Self::Modem(_) => "modem-failed",
            Self::NoAddress { .. } => "no-address",
            Self::GaveUp { .. } => "gave-up",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pppd { code, detail } => {
                write!(f, "pppd exited with status {code}")?;
                match detail {
                    Some(d) => write!(f, ": {d}"),
                    None => Ok(()),
                }
            },
            Self::PppdKilled { signal } => write!(f, "pppd was killed by signal {signal}"),
            Self::Spawn { program, error } => {
                write!(f, "cannot run pppd ({}): {error}", program.display())
            },
            Self::Modem(m) => m.fmt(f),
            Self::NoAddress { interface, waited } => write!(
                f,
                "no announceable address on {} within {}s; hung up",
                interface.as_deref().unwrap_or("pppd's interface"),
                waited.as_secs()
            ),
            Self::GaveUp { failures, last } => write!(
                f,
                "gave up after {failures} failures in a row (max_failures); last: {last}"
            ),
        }
    }
}
