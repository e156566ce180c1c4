//! pppd as a child process: its arguments, its output, its end.
//!
//! peerd runs the real pppd rather than speaking PPP itself: pppd owns the
//! kernel side (the `/dev/ppp` unit, the interface, routes, the ip-up
//! scripts) and the authentication secrets, and administrators know its
//! peers files. peerd supervises it:
//!
//! - `nodetach`: pppd stays our child, so we get its exit status (mapped
//!   to [`PppdExitCode`]), its log lines (pppd logs to stdout when it does
//!   not detach) and can signal it directly.
//! - `ipparam peerd`: handed to `/etc/ppp/ip-up` and friends as their 6th
//!   argument, so local scripts can tell peerd's link from others.
//! - `linkname peerd-<name>`: pppd writes `/run/ppp-peerd-<name>.pid`, so
//!   the link can be found (and is not confused with another pppd's).
//!   This is a privileged option: pppd refuses it unless run by root
//!   ("using the linkname option requires root privilege", exit 2).
//! - `ifname <interface>` when `[link] interface` names one: pppd names the
//!   interface so, and the address watcher watches the right one (without
//!   it a second pppd on the machine would make ours `ppp1`, which nobody
//!   watches). With `interface = "auto"` the name is learned from pppd's
//!   "Using interface pppN" line.
//! - `nopersist`: pppd must exit when the link ends, because peerd does
//!   the redialling (backoff, `max_failures`, the state that says why). As
//!   root, command-line options take precedence over the peers file's.
//! - The pppd driver adds `call <peer>` (`/etc/ppp/peers/<peer>`: device,
//!   chat script, user name; options in it are privileged). The modem
//!   driver, which dialled itself, gives the tty and speed instead, and
//!   `noauth` (do not require the provider to authenticate itself: Debian's
//!   `/etc/ppp/options` says `auth`; privileged too) and `noipdefault` (the
//!   provider assigns our address). Anything site-specific (`user`,
//!   `defaultroute`, `usepeerdns`) goes in `/etc/ppp/options.<tty>`, which
//!   pppd reads by itself.
//!
//! Hang-up is SIGTERM (pppd terminates the link cleanly and exits 5), then
//! SIGKILL after a deadline; the child is always reaped.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use peerd_config::{LinkConfig, WatchedInterface};

use crate::actor::sleep_until;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::state::{FailureReason, PppdExitCode};

/// The `ipparam` value peerd's pppd runs carry.
pub const IPPARAM: &str = "peerd";

/// What a session has reached, as its task reports it to the actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Progress {
    /// The phase.
    pub phase: Phase,
    /// The interface pppd uses, once it said so.
    pub interface: Option<String>,
}

/// A session's phase before the address arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The modem dialogue, or pppd's connect script.
    Dialing,
    /// PPP negotiation.
    Connecting,
}

/// The options both drivers give pppd after the device part.
fn common_args(config: &LinkConfig, linkname: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "nodetach".into(),
        "ipparam".into(),
        IPPARAM.into(),
        "linkname".into(),
        format!("peerd-{linkname}").into(),
        "nopersist".into(),
    ];
    if let WatchedInterface::Named(name) = &config.interface {
        args.push("ifname".into());
        args.push(name.into());
    }
    args
}

/// pppd's arguments for the pppd driver: `call <peer>` and the common
/// options.
pub fn call_args(config: &LinkConfig) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["call".into(), config.peer.as_str().into()];
    args.extend(common_args(config, &config.peer));
    args
}

/// pppd's arguments for the modem driver, once the modem said CONNECT:
/// the tty, its speed and the common options, plus `noauth` and
/// `noipdefault`.
pub fn tty_args(config: &LinkConfig) -> Vec<OsString> {
    let tty = config
        .device
        .file_name()
        .map_or_else(|| "modem".into(), |n| n.to_string_lossy().into_owned());
    let mut args: Vec<OsString> = vec![
        config.device.as_os_str().to_owned(),
        config.baud.to_string().into(),
    ];
    args.extend(common_args(config, &tty));
    args.push("noauth".into());
    args.push("noipdefault".into());
    args
}

/// How a pppd run ended.
#[derive(Debug)]
pub(crate) struct PppdEnd {
    /// Why, when pppd ended on its own (`None` after our SIGTERM).
    pub failure: Option<FailureReason>,
}

/// What pppd printed that explains its end.
#[derive(Debug, Default)]
struct Output {
    last_stdout: Option<String>,
    first_stderr: Option<String>,
}

impl Output {
    fn detail(&self) -> Option<String> {
        self.last_stdout
            .clone()
            .or_else(|| self.first_stderr.clone())
    }
}

/// Runs pppd until it exits; on `hangup`, SIGTERM, then SIGKILL after
/// `grace`. Always reaps the child.
pub(crate) async fn run(
    program: &Path,
    args: &[OsString],
    grace: Duration,
    progress: &watch::Sender<Progress>,
    hangup: &CancellationToken,
) -> PppdEnd {
    if hangup.is_cancelled() {
        return PppdEnd { failure: None };
    }
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C at peerd's terminal is for
        // peerd, which then hangs up in order (SIGTERM, wait, reap).
        .process_group(0)
        // Last resort only (a panicking task): every path below reaps.
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return PppdEnd {
                failure: Some(FailureReason::Spawn {
                    program: program.to_owned(),
                    error: e.to_string(),
                }),
            };
        },
    };
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    info!(pid = pid.map(Pid::as_raw), program = %program.display(), args = ?args, "pppd started");
    let mut stdout = child.stdout.take().map(|s| BufReader::new(s).lines());
    let mut stderr = child.stderr.take().map(|s| BufReader::new(s).lines());
    let mut output = Output::default();
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;

    let status = loop {
        tokio::select! {
            biased;
            () = hangup.cancelled(), if kill_at.is_none() => {
                match pid {
                    Some(pid) => {
                        debug!(pid = pid.as_raw(), "Sending pppd SIGTERM");
                        match kill(pid, Signal::SIGTERM) {
                            // exited already; `wait` below reaps it
                            Ok(()) | Err(nix::errno::Errno::ESRCH) => {},
                            Err(e) => warn!(error = %e, "Cannot send pppd SIGTERM"),
                        }
                    },
                    None => {
                        let _ = child.start_kill();
                    },
                }
                kill_at = Some(Instant::now() + grace);
            },
            () = sleep_until(kill_at), if kill_at.is_some() && !killed => {
                warn!(grace_ms = grace.as_millis(), "pppd still runs after SIGTERM; sending SIGKILL");
                if let Err(e) = child.start_kill() {
                    warn!(error = %e, "Cannot kill pppd");
                }
                killed = true;
            },
            status = child.wait() => break status,
            line = next_line(&mut stdout) => match line {
                Some(line) => on_stdout(line, &mut output, progress),
                None => stdout = None,
            },
            line = next_line(&mut stderr) => match line {
                Some(line) => on_stderr(line, &mut output),
                None => stderr = None,
            },
        }
    };
    // What pppd wrote just before it exited is still in the pipes. A
    // grandchild (a connect script) could hold them open: bounded.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while stdout.is_some() {
            match next_line(&mut stdout).await {
                Some(line) => on_stdout(line, &mut output, progress),
                None => stdout = None,
            }
        }
        while stderr.is_some() {
            match next_line(&mut stderr).await {
                Some(line) => on_stderr(line, &mut output),
                None => stderr = None,
            }
        }
    })
    .await;

    let requested = kill_at.is_some();
    let failure = match status {
        Ok(status) => {
            info!(status = %describe(status), requested, "pppd exited");
            if requested {
                None
            } else {
                Some(reason(status, output.detail()))
            }
        },
        Err(e) => {
            warn!(error = %e, "Cannot wait for pppd");
            (!requested).then(|| FailureReason::Spawn {
                program: program.to_owned(),
                error: format!("waiting for it failed: {e}"),
            })
        },
    };
    PppdEnd { failure }
}

/// The failure an unrequested pppd exit means.
fn reason(status: ExitStatus, detail: Option<String>) -> FailureReason {
    match (status.code(), status.signal()) {
        (Some(code), _) => FailureReason::Pppd {
            code: PppdExitCode::from_code(code),
            detail,
        },
        (None, Some(signal)) => FailureReason::PppdKilled { signal },
        (None, None) => FailureReason::Pppd {
            code: PppdExitCode::Other(-1),
            detail,
        },
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => PppdExitCode::from_code(code).to_string(),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

fn on_stdout(line: String, output: &mut Output, progress: &watch::Sender<Progress>) {
    let line = line.trim().to_owned();
    if line.is_empty() {
        return;
    }
    info!(line = %line, "pppd");
    // pppd 2.4/2.5: "Using interface ppp0", then "Connect: ppp0 <--> /dev/ttyUSB0"
    let interface = line
        .strip_prefix("Using interface ")
        .or_else(|| {
            line.strip_prefix("Connect: ")
                .and_then(|rest| rest.split_whitespace().next())
        })
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty());
    if let Some(interface) = interface {
        progress.send_if_modified(|p| {
            let changed = p.phase != Phase::Connecting || p.interface.as_ref() != Some(&interface);
            p.phase = Phase::Connecting;
            p.interface = Some(interface.clone());
            changed
        });
    }
    output.last_stdout = Some(line);
}

fn on_stderr(line: String, output: &mut Output) {
    let line = line.trim();
    if line.is_empty() {
        return;
    }
    warn!(line = %line, "pppd (stderr)");
    if output.first_stderr.is_none() {
        output.first_stderr = Some(line.to_owned());
    }
}

/// The next line of a child's output; `None` at its end (or on a read
/// error); never resolves for a stream already finished.
async fn next_line(
    lines: &mut Option<tokio::io::Lines<BufReader<impl tokio::io::AsyncRead + Unpin>>>,
) -> Option<String> {
    match lines {
        // `Lines::next_line` is cancel-safe
        Some(l) => l.next_line().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_status_table_is_pppd_8() {
        // (status, words pppd(8) uses)
        let table: [(i32, &str); 22] = [
            (0, "peer's request"),
            (1, "fatal error"),
            (2, "error in the options"),
            (3, "not setuid-root"),
            (4, "no kernel support for PPP"),
            (5, "SIGINT, SIGTERM or SIGHUP"),
            (6, "could not be locked"),
            (7, "could not be opened"),
            (8, "connect script failed"),
            (9, "pty option"),
            (10, "negotiation failed"),
            (11, "peer failed (or refused) to authenticate"),
            (12, "idle"),
            (13, "connect time limit"),
            (14, "callback"),
            (15, "echo requests"),
            (16, "modem hangup"),
            (17, "loopback"),
            (18, "init script failed"),
            (19, "authentication failed"),
            (20, "traffic limit"),
            (21, "calling number"),
        ];
        for (status, words) in table {
            let code = PppdExitCode::from_code(status);
            assert_eq!(code.code(), status);
            assert!(
                !matches!(code, PppdExitCode::Other(_)),
                "{status} is documented"
            );
            assert!(
                code.meaning().contains(words),
                "{status}: {:?} lacks {words:?}",
                code.meaning()
            );
            assert_eq!(
                PppdExitCode::DOCUMENTED[usize::try_from(status).unwrap()],
                code
            );
        }
        for undocumented in [-1, 22, 127, 255] {
            assert_eq!(
                PppdExitCode::from_code(undocumented),
                PppdExitCode::Other(undocumented)
            );
            assert_eq!(PppdExitCode::Other(undocumented).code(), undocumented);
        }
        let shown = FailureReason::Pppd {
            code: PppdExitCode::from_code(4),
            detail: Some("Couldn't open the /dev/ppp device".to_owned()),
        }
        .to_string();
        assert_eq!(
            shown,
            "pppd exited with status 4 (no kernel support for PPP (the PPP driver is not in the \
             kernel or cannot be loaded)): Couldn't open the /dev/ppp device"
        );
    }

    #[test]
    fn statuses_become_reasons() {
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(
            reason(exited(16), None),
            FailureReason::Pppd {
                code: PppdExitCode::Hangup,
                detail: None
            }
        );
        assert_eq!(
            reason(ExitStatus::from_raw(9), None),
            FailureReason::PppdKilled { signal: 9 }
        );
    }

    fn config() -> LinkConfig {
        LinkConfig {
            driver: peerd_config::LinkDriver::Pppd,
            interface: WatchedInterface::Named("ppp0".to_owned()),
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

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn arguments() {
        let mut c = config();
        assert_eq!(
            strings(call_args(&c)),
            [
                "call",
                "isp-a",
                "nodetach",
                "ipparam",
                "peerd",
                "linkname",
                "peerd-isp-a",
                "nopersist",
                "ifname",
                "ppp0"
            ]
        );
        assert_eq!(
            strings(tty_args(&c)),
            [
                "/dev/ttyUSB0",
                "115200",
                "nodetach",
                "ipparam",
                "peerd",
                "linkname",
                "peerd-ttyUSB0",
                "nopersist",
                "ifname",
                "ppp0",
                "noauth",
                "noipdefault"
            ]
        );
        c.interface = WatchedInterface::Auto;
        assert!(!strings(call_args(&c)).contains(&"ifname".to_owned()));
    }

    #[test]
    fn the_interface_comes_from_pppds_output() {
        let (tx, rx) = watch::channel(Progress {
            phase: Phase::Dialing,
            interface: None,
        });
        let mut out = Output::default();
        on_stdout("Serial connection established.".into(), &mut out, &tx);
        assert_eq!(rx.borrow().phase, Phase::Dialing);
        on_stdout("Using interface ppp3".into(), &mut out, &tx);
        assert_eq!(rx.borrow().interface.as_deref(), Some("ppp3"));
        assert_eq!(rx.borrow().phase, Phase::Connecting);
        on_stdout("Connect: ppp4 <--> /dev/ttyUSB0".into(), &mut out, &tx);
        assert_eq!(rx.borrow().interface.as_deref(), Some("ppp4"));
        assert_eq!(
            out.detail().as_deref(),
            Some("Connect: ppp4 <--> /dev/ttyUSB0")
        );
    }
}
