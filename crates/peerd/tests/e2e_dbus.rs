//! The D-Bus interface of the real `peerd` binary (issue 7): `peerd run`
//! in a fresh network namespace, offering `org.peerd.Peerd1` on a private
//! system-style `dbus-daemon` (`DBUS_SYSTEM_BUS_ADDRESS`, the shipped
//! policy file included), driven by `gdbus` and `peerctl` as a user would.
//!
//! The host ("alice"): a namespace of its own with a veth pair, her
//! address on `veth0` (`[link] driver = "external"`), the far end `veth1`
//! at [`MAIL_HOST`], where her mail servers are - and stay unreachable for
//! the whole test, as on a host whose provider's mail servers are down.
//! Either nftables drops every packet to them, so the courier is stuck in
//! connects that never answer ([`Mail::BlackHoled`]), or nothing listens
//! there and connects are refused ([`Mail::Refused`]); nftables counts the
//! packets in both cases, so a test can see the courier trying.
//!
//! Readiness is `READY=1` on a `NOTIFY_SOCKET` the test binds, then the
//! bus name appearing; nothing waits by sleeping a fixed time.
//!
//! Cleanup, also when a test panics: peerd gets SIGTERM (then SIGKILL),
//! the dbus-daemon is killed, and the namespace, which is unnamed and
//! held only by a thread of the test and by peerd, disappears with its
//! veths when both are gone. Nothing is left in `/run/netns`, even when
//! the test process itself is killed.
//!
//! Needs root (namespaces, nftables); without it the tests fail saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dbus_bus;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dbus_bus::{Policy, TestBus};
use peerd_testkit::{Program, wait_for, workspace_program};
use serde_json::Value;

const DEST: &str = "org.peerd.Peerd1";
const ROOT: &str = "/org/peerd/Peerd1";
const IFACE: &str = "org.peerd.Peerd1";
const PEER_IFACE: &str = "org.peerd.Peerd1.Peer";

/// How long anything awaited may take (start-up, a signal, an object).
const DEADLINE: Duration = Duration::from_secs(20);
/// How long one property read or method call may take: "promptly".
const PROMPT: Duration = Duration::from_secs(5);
/// How long peerd may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long cleanup waits after SIGTERM before SIGKILL (a clean stop is
/// tested on its own, so a test that failed is not held up by it).
const DROP_GRACE: Duration = Duration::from_secs(3);

/// Alice's first address, on `veth0`.
const ALICE_ADDR: &str = "10.1.1.2";
/// Where her mail servers are (the far end of the veth), never answering.
const MAIL_HOST: &str = "10.1.1.1";
/// Her SMTP submission port (implicit TLS).
const SMTP_PORT: u16 = 1465;
/// Her IMAP port (implicit TLS).
const IMAP_PORT: u16 = 1993;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this end-to-end test creates a network namespace and nftables rules: it needs root \
         (CAP_SYS_ADMIN, CAP_NET_ADMIN); run `cargo test` as root, as CI does"
    );
}

type Job = Box<dyn FnOnce() + Send>;

/// A fresh network namespace, held by a thread that unshared into it:
/// whatever that thread starts (`ip`, `nft`, peerd) runs in it. The
/// namespace goes away, with its devices, once the thread has ended and
/// every process started in it has exited.
struct Netns {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Netns {
    fn new() -> Self {
        require_root();
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("alice-netns".into())
            .spawn(move || {
                let entered = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("unshare(CLONE_NEWNET): {e} (the test needs root)"))
                    .and_then(|()| {
                        // Were this the host's namespace, the test would stop here.
                        let links = run_out("ip", &["-o", "link", "show"]);
                        if links.lines().count() == 1 && links.contains(": lo:") {
                            Ok(())
                        } else {
                            Err(format!("not in a fresh network namespace: {links}"))
                        }
                    });
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                if ok {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                }
            })
            .unwrap();
        let entered = ready.recv().expect("the namespace thread died");
        let ns = Self {
            jobs: Some(jobs),
            thread: Some(thread),
        };
        if let Err(e) = entered {
            panic!("{e}");
        }
        ns.ip("link set lo up");
        ns
    }

    /// Runs `f` on the namespace's thread; its panic is the caller's.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(f)));
        });
        self.jobs
            .as_ref()
            .unwrap()
            .send(job)
            .expect("the namespace thread is gone");
        match rx.recv().expect("the namespace thread is gone") {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// `ip ARGS` (split on whitespace) in the namespace; panics on failure.
    fn ip(&self, args: &str) {
        let args: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
        self.run(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_out("ip", &args)
        });
    }

    /// Runs `program args` in the namespace, `stdin` fed to it; its stdout.
    fn exec(&self, program: &str, args: &[&str], stdin: &str) -> String {
        let program = program.to_owned();
        let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
        let stdin = stdin.to_owned();
        self.run(move || {
            let mut child = Command::new(&program)
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{program} {args:?}: {}", show(&out));
            text(&out.stdout)
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `program args` to completion; panics with its output on failure.
fn run_out(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", show(&out));
    text(&out.stdout)
}

/// `peerd keygen --key-file PATH`: the public key it printed.
fn keygen(key_file: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_peerd"))
        .arg("keygen")
        .arg("--key-file")
        .arg(key_file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "peerd keygen: {}", show(&out));
    text(&out.stdout)
        .lines()
        .next()
        .expect("keygen prints the key")
        .to_owned()
}

/// `peerctl` of this workspace, built in this test's target dir.
fn peerctl_binary() -> PathBuf {
    workspace_program(Program::Bin, "peerctl")
}

/// The `[[peer]]` of alice's config: hitoshi, whose daemon is never
/// reached (his mail goes nowhere).
struct Hitoshi {
    key: String,
    announce: bool,
}

/// How alice's mail servers are unreachable.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mail {
    /// Every packet to them is dropped: a connect hangs until the
    /// courier's own timeout.
    BlackHoled,
    /// Nothing listens there: a connect is refused at once.
    Refused,
}

/// Alice's running daemon and everything it needs; all of it stopped and
/// removed on drop.
struct Alice {
    child: Option<Child>,
    dir: PathBuf,
    /// Dropped after the daemon is stopped (fields drop in this order).
    bus: TestBus,
    ns: Netns,
    _dir: tempfile::TempDir,
}

impl Alice {
    /// Sets up the namespace and the bus and starts `peerd run`; returns
    /// once peerd said `READY=1` and owns `org.peerd.Peerd1`.
    fn start(announce_to_hitoshi: bool, mail: Mail) -> Self {
        require_root();
        let tmp = tempfile::Builder::new()
            .prefix("peerd-e2e-dbus-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_owned();
        keygen(&dir.join("alice.key"));
        let hitoshi = Hitoshi {
            key: keygen(&dir.join("hitoshi.key")),
            announce: announce_to_hitoshi,
        };
        let password = dir.join("mail.pass");
        fs::write(&password, "secret-alice\n").unwrap();
        fs::set_permissions(&password, fs::Permissions::from_mode(0o600)).unwrap();

        let ns = Netns::new();
        ns.ip("link add veth0 type veth peer name veth1");
        ns.ip(&format!("addr add {MAIL_HOST}/24 dev veth1"));
        ns.ip("link set veth1 up");
        ns.ip(&format!("addr add {ALICE_ADDR}/24 dev veth0"));
        ns.ip("link set veth0 up");
        // The packets to the mail servers are counted (and, black-holed,
        // dropped: connects hang, nothing answers).
        let verdict = match mail {
            Mail::BlackHoled => "drop",
            Mail::Refused => "accept",
        };
        ns.exec(
            "nft",
            &["-f", "-"],
            &format!(
                "table inet peerd_test {{\n\
                 \tcounter smtp {{ }}\n\
                 \tcounter imap {{ }}\n\
                 \tchain out {{\n\
                 \t\ttype filter hook output priority 0; policy accept;\n\
                 \t\tip daddr {MAIL_HOST} tcp dport {SMTP_PORT} counter name smtp {verdict}\n\
                 \t\tip daddr {MAIL_HOST} tcp dport {IMAP_PORT} counter name imap {verdict}\n\
                 \t}}\n\
                 }}\n"
            ),
        );

        let bus = TestBus::start(Policy::Shipped);
        let config = dir.join("peerd.toml");
        fs::write(&config, config_text(&dir, &hitoshi)).unwrap();
        let notify_path = dir.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let log = fs::File::create(dir.join("peerd.stderr")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerd"));
        cmd.arg("--config")
            .arg(&config)
            .arg("run")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("RUST_LOG", "info,peerd=debug")
            .env_remove("PEERD_SOCKET")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = ns.run(move || cmd.spawn().expect("peerd starts"));
        let mut alice = Self {
            child: Some(child),
            dir,
            bus,
            ns,
            _dir: tmp,
        };
        alice.wait_ready(&notify);
        wait_for("peerd to own org.peerd.Peerd1", DEADLINE, || {
            alice.assert_running();
            alice.bus.has_owner(DEST).then_some(())
        });
        alice
    }

    fn wait_ready(&mut self, notify: &UnixDatagram) {
        let deadline = Instant::now() + DEADLINE;
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = notify.recv(&mut buf)
                && text(&buf[..n]).lines().any(|l| l == "READY=1")
            {
                return;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "no READY=1 from peerd within {DEADLINE:?}"
            );
        }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            self.child = None;
            panic!("peerd exited ({status})");
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("peerd.stderr")).unwrap_or_default()
    }

    /// `gdbus call` on the test bus (as root), bounded by `timeout`.
    fn gdbus(&self, path: &str, method: &str, args: &[&str], timeout: Duration) -> Output {
        Command::new("gdbus")
            .args(["call", "--address", &self.bus.address, "--dest", DEST])
            .args(["--object-path", path, "--method", method, "--timeout"])
            .arg(timeout.as_secs().to_string())
            .args(args)
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
            .stdin(Stdio::null())
            .output()
            .expect("gdbus runs (package libglib2.0-bin)")
    }

    /// A manager method that must work within [`PROMPT`]; its output.
    fn call(&self, method: &str, args: &[&str]) -> String {
        let start = Instant::now();
        let out = self.gdbus(ROOT, &format!("{IFACE}.{method}"), args, PROMPT);
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "{method} {args:?}{}: {}",
            late(&out, took),
            show(&out)
        );
        assert!(took < PROMPT, "{method} took {took:?}");
        text(&out.stdout).trim().to_owned()
    }

    /// `Properties.Get` of `prop` on `path`, answered within [`PROMPT`]:
    /// its output (`(<'up'>,)`).
    fn get(&self, path: &str, iface: &str, prop: &str) -> String {
        let start = Instant::now();
        let out = self.gdbus(
            path,
            "org.freedesktop.DBus.Properties.Get",
            &[iface, prop],
            PROMPT,
        );
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "Get {path} {prop}{}: {}",
            late(&out, took),
            show(&out)
        );
        assert!(took < PROMPT, "reading {prop} took {took:?}");
        text(&out.stdout).trim().to_owned()
    }

    /// A manager property.
    fn prop(&self, prop: &str) -> String {
        self.get(ROOT, IFACE, prop)
    }

    /// `peerctl --socket S ARGS`, answered within [`PROMPT`].
    fn peerctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(peerctl_binary());
        cmd.arg("--socket")
            .arg(self.socket())
            .args(args)
            .env_remove("PEERD_SOCKET");
        let out = output_within(cmd, PROMPT);
        assert!(out.status.success(), "peerctl {args:?}: {}", show(&out));
        out
    }

    /// `peerctl --socket S ARGS --json`, parsed.
    fn peerctl_json(&self, args: &[&str]) -> Value {
        let out = self.peerctl(&[args, &["--json"]].concat());
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("peerctl {args:?}: not JSON ({e}): {}", show(&out)))
    }

    /// The names `peerctl peers --json` lists.
    fn peerctl_peers(&self) -> Vec<String> {
        self.peerctl_json(&["peers"])["peers"]
            .as_array()
            .expect("peers is a list")
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The packets peerd sent to a mail server (`counter`: "smtp", "imap").
    fn packets_to(&self, counter: &str) -> u64 {
        let out = self.ns.exec(
            "nft",
            &["list", "counter", "inet", "peerd_test", counter],
            "",
        );
        let at = out.find("packets ").expect("nft shows packets") + "packets ".len();
        out[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// SIGTERM; the exit status, or `None` when peerd has not exited
    /// within `timeout` (then it is killed).
    fn stop(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take().expect("peerd runs");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What a gdbus call that timed out says in a failure message.
fn late(out: &Output, took: Duration) -> String {
    if text(&out.stderr).contains("Timeout was reached") {
        format!(" got no answer within {took:?}")
    } else {
        String::new()
    }
}

/// Runs `cmd` (stdin empty) and returns its output; panics, killing it,
/// when it has not finished within `timeout`.
fn output_within(mut cmd: Command, timeout: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let out = rx.recv().unwrap().unwrap();
            panic!("{cmd:?} did not finish within {timeout:?}: {}", show(&out));
        },
    }
}

impl Drop for Alice {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + DROP_GRACE;
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- alice's peerd stderr -----\n{}\n----- end -----",
                self.log()
            );
        }
    }
}

fn config_text(dir: &Path, hitoshi: &Hitoshi) -> String {
    let dir = dir.display();
    format!(
        r#"# written by tests/e2e_dbus.rs
[identity]
name = "alice"
key_file = "{dir}/alice.key"

[state]
dir = "{dir}/state"

[control]
socket = "{dir}/control.sock"
group = "root"

[dbus]
bus = "system"

[link]
driver = "external"
interface = "veth0"
families = ["ipv4"]

[mail]
address = "alice@isp-a.test"

[mail.smtp]
host = "{MAIL_HOST}"
port = {SMTP_PORT}
security = "tls"
username = "alice@isp-a.test"
password_file = "{dir}/mail.pass"

[mail.incoming]
protocol = "imap"
host = "{MAIL_HOST}"
port = {IMAP_PORT}
security = "tls"
username = "alice@isp-a.test"
password_file = "{dir}/mail.pass"
folders = ["INBOX"]

[announce]
debounce = "0s"
hooks_dir = "{dir}/hooks.d"

[listen]
port = 7447
addresses = ["0.0.0.0"]

[[peer]]
name = "hitoshi"
email = "hitoshi@isp-b.test"
public_key = "{key}"
announce = {announce}
"#,
        key = hitoshi.key,
        announce = hitoshi.announce,
    )
}

/// `gdbus monitor` on peerd's objects, its lines collected by a thread.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Monitor {
    fn start(address: &str) -> Self {
        // stdbuf: gdbus writes its lines through stdio, fully buffered
        // into a pipe otherwise.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "gdbus", "monitor", "--address", address])
            .args(["--dest", DEST])
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gdbus runs (package libglib2.0-bin)");
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut monitor = Self {
            child,
            lines,
            seen: Vec::new(),
        };
        monitor.expect_all(&["The name org.peerd.Peerd1 is owned by"], DEADLINE);
        monitor
    }

    /// Takes in the lines that arrived within `wait`.
    fn take(&mut self, wait: Duration) {
        let until = Instant::now() + wait;
        while let Ok(line) = self
            .lines
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
    }

    /// Waits for a line containing every one of `parts`; returns it (and
    /// forgets it).
    fn expect_all(&mut self, parts: &[&str], timeout: Duration) -> String {
        self.find(parts, timeout).unwrap_or_else(|| {
            panic!(
                "gdbus monitor showed no line with {parts:?} within {timeout:?}; it showed {:#?}",
                self.seen
            )
        })
    }

    fn find(&mut self, parts: &[&str], timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self
                .seen
                .iter()
                .position(|l| parts.iter().all(|p| l.contains(p)))
            {
                return Some(self.seen.remove(i));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("gdbus monitor exited; it showed {:#?}", self.seen)
                },
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `AddressChanged` as gdbus monitor prints it.
fn address_changed(addresses: &[&str]) -> String {
    let list: Vec<String> = addresses.iter().map(|a| format!("'{a}'")).collect();
    format!("{IFACE}.AddressChanged ([{}],)", list.join(", "))
}

/// Waits until signals of peerd reach the monitor. GDBus drops the
/// signals of a subscription to a well-known name until it has learnt the
/// name's owner, which may be after it printed the owner; so a probe
/// address is added (and, unseen, replaced by another) until its
/// `AddressChanged` shows, then removed again.
fn sync(alice: &Alice, monitor: &mut Monitor) {
    let deadline = Instant::now() + DEADLINE;
    for n in 1u8.. {
        let probe = format!("10.1.9.{n}");
        alice.ns.ip(&format!("addr add {probe}/32 dev veth0"));
        let seen = monitor.find(
            &["AddressChanged", &format!("'{probe}'")],
            Duration::from_millis(300),
        );
        alice.ns.ip(&format!("addr del {probe}/32 dev veth0"));
        if seen.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no AddressChanged reached gdbus monitor within {DEADLINE:?}; it showed {:#?}",
            monitor.seen
        );
    }
    monitor.expect_all(&[&address_changed(&[ALICE_ADDR])], DEADLINE);
    // What the probes caused is not what the tests look for.
    monitor.take(Duration::from_millis(100));
    monitor.seen.clear();
}

/// Issue 7: "a signal is received when alice's address changes".
#[test]
fn a_signal_is_received_when_alices_address_changes() {
    let alice = Alice::start(true, Mail::BlackHoled);
    wait_for("LinkState up", DEADLINE, || {
        (alice.prop("LinkState") == "(<'up'>,)").then_some(())
    });
    assert_eq!(alice.prop("Addresses"), format!("(<['{ALICE_ADDR}']>,)"));

    let mut monitor = Monitor::start(&alice.bus.address);
    sync(&alice, &mut monitor);

    // A redial: the old address goes, a new one comes.
    let new = "10.1.1.3";
    alice.ns.ip(&format!("addr del {ALICE_ADDR}/24 dev veth0"));
    alice.ns.ip(&format!("addr add {new}/24 dev veth0"));
    let signal = monitor.expect_all(&[&address_changed(&[new])], DEADLINE);
    assert!(signal.starts_with(&format!("{ROOT}: ")), "{signal}");
    // The properties were refreshed before the signal went out.
    assert_eq!(alice.prop("Addresses"), format!("(<['{new}']>,)"));
    assert_eq!(alice.prop("LinkState"), "(<'up'>,)");
    let changed = monitor.expect_all(
        &["PropertiesChanged", "'Addresses'", &format!("'{new}'")],
        DEADLINE,
    );
    assert!(!changed.contains(ALICE_ADDR), "{changed}");

    // Nobody connected: hitoshi's daemon is nowhere.
    monitor.take(Duration::from_millis(100));
    assert!(
        !monitor.seen.iter().any(|l| l.contains("PeerConnected")),
        "{:#?}",
        monitor.seen
    );
}

/// Issue 7: "The daemon keeps serving D-Bus while its mail servers are
/// unreachable": properties and `Announce` answer promptly while the
/// courier waits on a mail server that never answers.
#[test]
fn keeps_serving_dbus_while_the_mail_servers_are_unreachable() {
    // hitoshi gets no announcement unasked: the outbox starts empty.
    let alice = Alice::start(false, Mail::BlackHoled);
    // The courier is stuck: its mailbox connect gets no answer.
    wait_for("the courier to try the IMAP server", DEADLINE, || {
        (alice.packets_to("imap") > 0).then_some(())
    });
    let check_properties = |outbox: u32| {
        assert_eq!(alice.prop("LinkState"), "(<'up'>,)");
        assert_eq!(alice.prop("Addresses"), format!("(<['{ALICE_ADDR}']>,)"));
        assert_eq!(
            alice.prop("Peers"),
            format!("(<[objectpath '{ROOT}/peer/hitoshi']>,)")
        );
        assert_eq!(alice.prop("OutboxSize"), format!("(<uint32 {outbox}>,)"));
    };
    check_properties(0);

    // Announce queues into the outbox and returns.
    assert_eq!(alice.call("Announce", &["['hitoshi']"]), "()");
    assert_eq!(alice.prop("OutboxSize"), "(<uint32 1>,)");

    // Now the courier also waits on the SMTP server (a connect that gets
    // no answer): everything still answers at once.
    wait_for("the courier to try the SMTP server", DEADLINE, || {
        (alice.packets_to("smtp") > 0).then_some(())
    });
    check_properties(1);
    assert_eq!(alice.call("Announce", &["['hitoshi']"]), "()");
    // The newer announcement replaced the one still queued.
    check_properties(1);
    let outbox = alice.peerctl_json(&["outbox"]);
    assert!(outbox.to_string().contains("hitoshi"), "{outbox}");
}

/// `AddPeer` over D-Bus with a real key makes a peer object appear and
/// peerctl list the peer; `RemovePeer` removes both. A peer added with
/// peerctl gets its object at once too (the daemon's peer-added event),
/// not only at the next periodic refresh.
#[test]
fn add_peer_and_remove_peer_over_dbus() {
    let alice = Alice::start(false, Mail::Refused);
    let carol_key = keygen(&alice.dir.join("carol.key"));
    // "carol-b" in an object path: each byte outside [A-Za-z0-9] as _xx.
    let carol = format!("{ROOT}/peer/carol_2db");
    assert!(!alice.prop("Peers").contains(&carol));

    assert_eq!(
        alice.call("AddPeer", &["carol-b", "carol@isp-c.test", &carol_key]),
        "()"
    );
    // The object exists when the call returns.
    assert_eq!(alice.get(&carol, PEER_IFACE, "Name"), "(<'carol-b'>,)");
    assert_eq!(
        alice.get(&carol, PEER_IFACE, "Email"),
        "(<'carol@isp-c.test'>,)"
    );
    let peers = alice.prop("Peers");
    assert!(peers.contains(&format!("'{carol}'")), "{peers}");
    assert!(peers.contains(&format!("'{ROOT}/peer/hitoshi'")), "{peers}");
    let listed = alice.peerctl_json(&["peers"]);
    let entry = listed["peers"]
        .as_array()
        .expect("peers is a list")
        .iter()
        .find(|p| p["name"] == "carol-b")
        .unwrap_or_else(|| panic!("peerctl does not list carol-b: {listed}"))
        .clone();
    assert_eq!(entry["email"], "carol@isp-c.test", "{entry}");
    assert_eq!(entry["key"], carol_key.as_str(), "{entry}");

    assert_eq!(alice.call("RemovePeer", &["carol-b"]), "()");
    // The object is gone when the call returns.
    let gone = alice.gdbus(
        &carol,
        "org.freedesktop.DBus.Properties.Get",
        &[PEER_IFACE, "Name"],
        PROMPT,
    );
    assert!(
        !gone.status.success(),
        "{carol} still answers: {}",
        show(&gone)
    );
    assert!(!alice.prop("Peers").contains(&carol));
    let listed = alice.peerctl_peers();
    assert_eq!(listed, ["hitoshi"]);

    // The other front end: a peer added with peerctl shows on D-Bus.
    let dave_key = keygen(&alice.dir.join("dave.key"));
    alice.peerctl(&[
        "peer",
        "add",
        "dave",
        "--email",
        "dave@isp-d.test",
        "--key",
        &dave_key,
    ]);
    let dave = format!("{ROOT}/peer/dave");
    // Well within the 15 s periodic refresh.
    wait_for("dave's object", Duration::from_secs(3), || {
        alice.prop("Peers").contains(&dave).then_some(())
    });
    assert_eq!(alice.get(&dave, PEER_IFACE, "Name"), "(<'dave'>,)");
    alice.peerctl(&["peer", "remove", "dave"]);
    wait_for("dave's object to go", Duration::from_secs(3), || {
        (!alice.prop("Peers").contains(&dave)).then_some(())
    });
}

/// SIGTERM while the courier waits on a mail server that never answers:
/// peerd gives up the bus name and exits 0 (INTERFACE.md: "Exits 0 on
/// SIGTERM/SIGINT after a clean shutdown").
#[test]
fn stops_cleanly_while_a_mail_server_does_not_answer() {
    let mut alice = Alice::start(true, Mail::BlackHoled);
    wait_for("the courier to try the SMTP server", DEADLINE, || {
        (alice.packets_to("smtp") > 0).then_some(())
    });
    let start = Instant::now();
    let status = alice.stop(STOP_TIMEOUT);
    let took = start.elapsed();
    assert!(!alice.bus.has_owner(DEST), "org.peerd.Peerd1 still owned");
    let status = status.unwrap_or_else(|| panic!("peerd did not stop within {STOP_TIMEOUT:?}"));
    assert!(
        status.success(),
        "peerd exited {status} after {took:?} of SIGTERM"
    );
    assert!(took < PROMPT, "peerd took {took:?} to stop");
}
