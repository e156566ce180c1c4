//! A stand-in for pppd and the kernel's PPP driver, for the link manager's
//! tests. Not shipped, not a PPP implementation.
//!
//! Why it exists: the machines the tests run on have no PPP in the kernel
//! (no `/dev/ppp`; the real pppd exits with status 4, "no kernel support
//! for PPP", and a test checks exactly that). So nothing can bring up a
//! real `ppp0`, and the link-up path (pppd runs, the interface appears
//! with the provider's address, the link manager sees it through the
//! address watcher, hangs up with SIGTERM, reaps) needs something that does
//! what pppd's kernel side would:
//!
//! - create the interface: `ip tuntap add name <ifname> mode tun` (TUN is
//!   in these kernels);
//! - assign the negotiated addresses the way PPP does: `ip addr add LOCAL
//!   peer REMOTE dev <ifname>`, so IFA_LOCAL is ours and IFA_ADDRESS is the
//!   far end (a watcher that announces IFA_ADDRESS gets it wrong);
//! - bring it up, and log like pppd ("Using interface ppp0", "local  IP
//!   address ...") on stdout, which `nodetach` makes pppd do;
//! - on SIGTERM (or SIGINT, SIGHUP) remove the interface and exit 5, as
//!   pppd does; or exit with one of pppd's documented statuses when told
//!   to fail.
//!
//! It is started through a symlink named like the program in the link
//! configuration (`pppd = "DIR/pppd"`), and DIR holds its plan: `DIR/plan`
//! has one line per run (the last line repeats):
//!
//! - `up LOCAL REMOTE`: bring the link up and stay until SIGTERM;
//! - `up LOCAL REMOTE drop CODE MS`: up, then after MS milliseconds remove
//!   the interface and exit CODE (the link dropping: 16 is a modem hangup);
//! - `up LOCAL REMOTE ignore-term`: up, and ignore SIGTERM (only SIGKILL
//!   ends it; the interface stays, as it would not with a real pppd);
//! - `fail CODE [MESSAGE]`: print MESSAGE like pppd and exit CODE;
//! - `hang`: negotiate forever (no interface) until SIGTERM.
//!
//! What happened is appended to `DIR/log`, one line per fact, each with
//! the run number: `N start PID ARGS...`, `N opened DEVICE`, `N up IFNAME`,
//! `N term`, `N exit CODE`. With a device argument (the modem driver), it
//! opens the tty as pppd would and exits 16 when it reads `NO CARRIER`
//! there (pppd would see carrier drop; a pty has no carrier line).

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

/// One run's instructions.
#[derive(Debug)]
enum Plan {
    Up {
        local: String,
        remote: String,
        then: Then,
    },
    Fail {
        code: u8,
        message: String,
    },
    Hang,
}

#[derive(Debug)]
enum Then {
    WaitForTerm,
    Drop { code: u8, after: Duration },
    IgnoreTerm,
}

struct Run {
    dir: PathBuf,
    number: usize,
}

impl Run {
    fn log(&self, fact: &str) {
        let line = format!("{} {fact}\n", self.number);
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
        {
            let _ = f.write_all(line.as_bytes());
        }
    }

    /// Logs the exit and returns it.
    fn exit(&self, code: u8) -> ExitCode {
        self.log(&format!("exit {code}"));
        ExitCode::from(code)
    }
}

/// Prints a line the way pppd logs with `nodetach` (stdout).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn ip(args: &[&str]) -> Result<(), String> {
    let status = Command::new("ip")
        .args(args)
        .status()
        .map_err(|e| format!("ip: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("ip {} failed: {status}", args.join(" ")))
    }
}

fn parse_plan(line: &str) -> Result<Plan, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let code = |s: &str| s.parse::<u8>().map_err(|e| format!("bad code {s:?}: {e}"));
    match words.as_slice() {
        ["up", local, remote] => Ok(Plan::Up {
            local: (*local).to_owned(),
            remote: (*remote).to_owned(),
            then: Then::WaitForTerm,
        }),
        ["up", local, remote, "drop", c, ms] => Ok(Plan::Up {
            local: (*local).to_owned(),
            remote: (*remote).to_owned(),
            then: Then::Drop {
                code: code(c)?,
                after: Duration::from_millis(ms.parse().map_err(|e| format!("bad ms: {e}"))?),
            },
        }),
        ["up", local, remote, "ignore-term"] => Ok(Plan::Up {
            local: (*local).to_owned(),
            remote: (*remote).to_owned(),
            then: Then::IgnoreTerm,
        }),
        ["fail", c, message @ ..] => Ok(Plan::Fail {
            code: code(c)?,
            message: message.join(" "),
        }),
        ["hang"] => Ok(Plan::Hang),
        _ => Err(format!("cannot read plan line {line:?}")),
    }
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pppd stand-in: no runtime: {e}");
            return ExitCode::from(1);
        },
    };
    runtime.block_on(run())
}

async fn run() -> ExitCode {
    // Signals first: pppd handles them from its start.
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("pppd stand-in: cannot handle signals");
        return ExitCode::from(1);
    };
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args
        .first()
        .and_then(|a| Path::new(a).parent())
        .map(Path::to_owned)
    else {
        eprintln!("pppd stand-in: no program path");
        return ExitCode::from(1);
    };
    let number = std::fs::read_to_string(dir.join("log"))
        .map(|log| log.lines().filter(|l| l.contains(" start ")).count())
        .unwrap_or(0)
        + 1;
    let run = Run { dir, number };
    run.log(&format!(
        "start {} {}",
        std::process::id(),
        args[1..].join(" ")
    ));

    let plan_text = std::fs::read_to_string(run.dir.join("plan")).unwrap_or_default();
    let lines: Vec<&str> = plan_text.lines().filter(|l| !l.trim().is_empty()).collect();
    let Some(line) = lines.get(number - 1).or(lines.last()) else {
        eprintln!("pppd stand-in: {}/plan is empty", run.dir.display());
        return run.exit(2);
    };
    let plan = match parse_plan(line) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("pppd stand-in: {e}");
            return run.exit(2);
        },
    };
    let ifname = args
        .windows(2)
        .find(|w| w[0] == "ifname")
        .map_or("ppp0", |w| w[1].as_str())
        .to_owned();

    // The modem driver passes the tty first: open it as pppd would.
    let (carrier_tx, mut carrier_lost) = tokio::sync::mpsc::unbounded_channel::<()>();
    if let Some(device) = args.get(1).filter(|a| a.starts_with('/')) {
        match OpenOptions::new().read(true).write(true).open(device) {
            Ok(tty) => {
                run.log(&format!("opened {device}"));
                say(&format!("Serial connection established on {device}."));
                std::thread::spawn(move || {
                    let mut lines = BufReader::new(tty);
                    let mut line = Vec::new();
                    loop {
                        line.clear();
                        match lines.read_until(b'\n', &mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {
                                if String::from_utf8_lossy(&line).contains("NO CARRIER") {
                                    let _ = carrier_tx.send(());
                                    return;
                                }
                            },
                        }
                    }
                });
            },
            Err(e) => {
                say(&format!("Failed to open {device}: {e}"));
                return run.exit(7);
            },
        }
    }

    let (local, remote, then) = match plan {
        Plan::Fail { code, message } => {
            if !message.is_empty() {
                say(&message);
            }
            return run.exit(code);
        },
        Plan::Hang => {
            say("LCP: timeout sending Config-Requests (stand-in: hanging)");
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
                _ = hup.recv() => {},
            }
            run.log("term");
            say("Terminating on signal 15");
            return run.exit(5);
        },
        Plan::Up {
            local,
            remote,
            then,
        } => (local, remote, then),
    };

    say(&format!("Using interface {ifname}"));
    say(&format!("Connect: {ifname} <--> /dev/stand-in"));
    let brought_up = ip(&["tuntap", "add", "name", &ifname, "mode", "tun"])
        .and_then(|()| ip(&["addr", "add", &local, "peer", &remote, "dev", &ifname]))
        .and_then(|()| ip(&["link", "set", &ifname, "up"]));
    if let Err(e) = brought_up {
        eprintln!("pppd stand-in: {e}");
        let _ = ip(&["link", "del", &ifname]);
        return run.exit(1);
    }
    say(&format!("local  IP address {local}"));
    say(&format!("remote IP address {remote}"));
    run.log(&format!("up {ifname}"));

    let remove = |run: &Run| {
        if let Err(e) = ip(&["link", "del", &ifname]) {
            eprintln!("pppd stand-in: {e}");
        } else {
            run.log(&format!("removed {ifname}"));
        }
    };
    match then {
        Then::WaitForTerm => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
                _ = hup.recv() => {},
                _ = carrier_lost.recv() => {
                    say("Modem hangup");
                    remove(&run);
                    return run.exit(16);
                },
            }
            run.log("term");
            say("Terminating on signal 15");
            say("Connection terminated.");
            remove(&run);
            run.exit(5)
        },
        Then::Drop { code, after } => {
            tokio::select! {
                () = tokio::time::sleep(after) => {},
                _ = term.recv() => {
                    run.log("term");
                    remove(&run);
                    return run.exit(5);
                },
            }
            say("Modem hangup");
            say("Connection terminated.");
            remove(&run);
            run.exit(code)
        },
        Then::IgnoreTerm => loop {
            tokio::select! {
                _ = term.recv() => run.log("term ignored"),
                _ = int.recv() => {},
                _ = hup.recv() => {},
            }
        },
    }
}
