//! Shared by the link manager's integration tests: a network namespace
//! per test, the pppd stand-in and its plan, a small address watcher
//! that polls `ip`, configuration and waiting helpers, and the [`Rig`]
//! that runs a link manager on them.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod modem;

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use peerd_config::{LinkConfig, LinkDriver, WatchedInterface};
use peerd_core::{AddressClass, AddressFlags, AddressSnapshot, InterfaceAddress};
use peerd_link::{Backoff, LinkError, LinkEvent, LinkHandle, LinkState, Tuning, spawn_tuned};
use peerd_testkit::{Program, workspace_program};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Fails (never skips) without root: these tests create network
/// namespaces and interfaces, which CI (root) does in the normal test run.
pub fn require_root(what: &str) {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root for {what}; CI runs the tests as root \
         (run `sudo -E cargo test -p peerd-link`); it fails rather than pass without testing"
    );
}

/// Runs `test` on a thread of its own in a fresh network namespace, on a
/// current-thread runtime built inside it, so every child process (pppd,
/// the stand-in, `ip`) is in that namespace and no interface touches the
/// host's.
pub fn in_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    require_root("a network namespace per test (unshare(CLONE_NEWNET)) and its interfaces");
    init_tracing();
    peerd_testkit::run_in_fresh_netns(|| async {
        run_ip(&["link", "set", "lo", "up"]);
        test().await;
    });
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "peerd_link=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

fn run_ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {} failed", args.join(" "));
}

/// Whether `ifname` exists (in the current namespace).
pub fn interface_exists(ifname: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", ifname])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// The stand-in (`examples/pppd_standin.rs`), built in this test's
/// target dir.
pub fn standin_binary() -> PathBuf {
    workspace_program(Program::Example, "pppd_standin")
}

/// A plan directory for the stand-in: `DIR/pppd` (a symlink to it),
/// `DIR/plan`, and the `DIR/log` it writes.
pub struct Plan {
    dir: tempfile::TempDir,
}

impl Plan {
    pub fn new(lines: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plan"), lines.join("\n") + "\n").unwrap();
        std::os::unix::fs::symlink(standin_binary(), dir.path().join("pppd")).unwrap();
        Self { dir }
    }

    /// The value for `pppd = ...`.
    pub fn program(&self) -> PathBuf {
        self.dir.path().join("pppd")
    }

    pub fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// How many times the stand-in was started.
    pub fn runs(&self) -> usize {
        self.log().iter().filter(|l| l.contains(" start ")).count()
    }

    /// Whether run `n` logged `fact`.
    pub fn has(&self, n: usize, fact: &str) -> bool {
        let want = format!("{n} {fact}");
        self.log().contains(&want)
    }

    /// Run `n`'s arguments.
    pub fn args(&self, n: usize) -> Vec<String> {
        let prefix = format!("{n} start ");
        let line = self
            .log()
            .into_iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("run {n} never started: {:?}", self.log()));
        line[prefix.len()..]
            .split_whitespace()
            .skip(1) // the pid
            .map(str::to_owned)
            .collect()
    }

    /// Run `n`'s process id.
    pub fn pid(&self, n: usize) -> i32 {
        let prefix = format!("{n} start ");
        let line = self
            .log()
            .into_iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap();
        line[prefix.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// Whether a process is gone and reaped: a zombie still has `/proc/PID`.
pub fn reaped(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// A test-side address watcher: polls `ip -o link/addr show dev IFNAME`
/// every 20 ms and publishes an [`AddressSnapshot`] when it changes. (The
/// real watcher is rtnetlink-based and lives in peerd-addr; the link
/// manager only depends on the snapshot.) Reads IFA_LOCAL on
/// point-to-point links: `inet LOCAL peer REMOTE/len`.
pub fn ip_watcher(
    ifname: &str,
) -> (
    watch::Receiver<AddressSnapshot>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = watch::channel(AddressSnapshot {
        interface: Some(ifname.to_owned()),
        ..AddressSnapshot::default()
    });
    let ifname = ifname.to_owned();
    let task = tokio::spawn(async move {
        loop {
            let snap = snapshot(&ifname).await;
            tx.send_if_modified(|current| {
                if *current == snap {
                    false
                } else {
                    *current = snap;
                    true
                }
            });
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (rx, task)
}

async fn snapshot(ifname: &str) -> AddressSnapshot {
    let mut snap = AddressSnapshot {
        interface: Some(ifname.to_owned()),
        ..AddressSnapshot::default()
    };
    let link = tokio::process::Command::new("ip")
        .args(["-o", "link", "show", "dev", ifname])
        .output()
        .await
        .unwrap();
    if !link.status.success() {
        return snap;
    }
    let text = String::from_utf8_lossy(&link.stdout);
    snap.up = text
        .split(['<', '>'])
        .nth(1)
        .is_some_and(|flags| flags.split(',').any(|f| f == "UP"));
    let addr = tokio::process::Command::new("ip")
        .args(["-o", "addr", "show", "dev", ifname])
        .output()
        .await
        .unwrap();
    for line in String::from_utf8_lossy(&addr.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "inet" || *w == "inet6") else {
            continue;
        };
        let Some(local) = words.get(at + 1) else {
            continue;
        };
        let (ip, mut prefix) = split_prefix(local);
        if words.get(at + 2) == Some(&"peer")
            && let Some(remote) = words.get(at + 3)
        {
            prefix = split_prefix(remote).1;
        }
        let Ok(ip) = ip.parse::<IpAddr>() else {
            continue;
        };
        let address = InterfaceAddress {
            ip,
            prefix_len: prefix,
            class: AddressClass::of(ip),
            flags: AddressFlags {
                tentative: words.contains(&"tentative"),
                ..AddressFlags::default()
            },
        };
        snap.addresses.push(address);
        if address.class.is_announceable() && !address.flags.tentative {
            snap.announceable.push(address);
        }
    }
    snap
}

fn split_prefix(s: &str) -> (&str, u8) {
    match s.split_once('/') {
        Some((ip, len)) => (ip, len.parse().unwrap_or(32)),
        None => (s, 32),
    }
}

/// A `[link]` section for tests.
pub fn link_config(driver: LinkDriver, pppd: &Path) -> LinkConfig {
    LinkConfig {
        driver,
        interface: WatchedInterface::Named("ppp0".to_owned()),
        families: vec![],
        idle_hangup: Duration::from_secs(300),
        on_demand: false,
        check_interval: Duration::from_secs(3600),
        max_failures: 5,
        pppd: pppd.to_owned(),
        peer: "isp-test".to_owned(),
        device: "/dev/null".into(),
        baud: 115_200,
        number: "*99#".to_owned(),
        init: vec!["ATZ".to_owned(), "ATE0V1".to_owned()],
    }
}

/// Short times for tests.
pub fn fast_tuning() -> Tuning {
    Tuning {
        backoff: Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_millis(400),
        },
        connect_timeout: Duration::from_secs(10),
        acquire_timeout: Duration::from_secs(10),
        hangup_grace: Duration::from_secs(2),
        at_timeout: Duration::from_millis(500),
        dial_timeout: Duration::from_secs(2),
        guard_time: Duration::from_millis(100),
        dtr_drop: Duration::from_millis(50),
        check_window: Duration::from_secs(5),
        check_at_start: false,
        ..Tuning::default()
    }
}

/// Waits (at most `secs`) for a state; panics with the current one.
pub async fn wait_state(
    state: &mut watch::Receiver<LinkState>,
    what: &str,
    secs: u64,
    mut f: impl FnMut(&LinkState) -> bool,
) -> LinkState {
    let found = tokio::time::timeout(Duration::from_secs(secs), async {
        state.wait_for(|s| f(s)).await.map(|s| s.clone())
    })
    .await;
    match found {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => panic!("the link manager stopped while waiting for {what}"),
        Err(_) => panic!(
            "timed out after {secs}s waiting for {what}; state: {:?}",
            *state.borrow()
        ),
    }
}

/// Waits (at most `secs`) for an event matching `f`, returning it.
pub async fn wait_event<T>(
    events: &mut broadcast::Receiver<LinkEvent>,
    what: &str,
    secs: u64,
    mut f: impl FnMut(&LinkEvent) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(t) = f(&event) {
                        return t;
                    }
                },
                Err(e) => panic!("events: {e}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out after {secs}s waiting for {what}"))
}

pub fn is_up_on(state: &LinkState, ifname: &str) -> bool {
    matches!(state, LinkState::Up { interface, .. } if interface == ifname)
}

/// A link manager on `ppp0`, fed by an `ip`-based address watcher, with
/// its own task set and shutdown token.
pub struct Rig {
    pub link: LinkHandle,
    tasks: JoinSet<Result<(), LinkError>>,
    token: CancellationToken,
    _watcher: tokio::task::JoinHandle<()>,
}

impl Rig {
    pub fn start(config: LinkConfig, tuning: Tuning) -> Self {
        let (addresses, watcher) = ip_watcher("ppp0");
        let mut tasks = JoinSet::new();
        let token = CancellationToken::new();
        let link = spawn_tuned(config, addresses, tuning, &mut tasks, token.clone());
        Self {
            link,
            tasks,
            token,
            _watcher: watcher,
        }
    }

    /// Cancels the token and waits (bounded) for the actor to finish.
    pub async fn shut_down(mut self) {
        self.token.cancel();
        let joined = tokio::time::timeout(Duration::from_secs(10), self.tasks.join_next())
            .await
            .expect("the actor ends within 10 s of the shutdown token");
        joined.unwrap().unwrap().unwrap();
    }
}
