//! Test support: each test in a fresh network namespace, `ip` run inside
//! it, and a watcher with helpers that wait for events with a timeout.
//!
//! The namespace is made with `unshare(CLONE_NEWNET)` on a thread of its
//! own (`peerd_testkit::run_in_fresh_netns`), which then builds a current-thread tokio runtime: the runtime, the
//! watcher's socket and every `ip` child (forked from that thread) live in
//! the new namespace, and the namespace, with every veth and tun device in
//! it, disappears when the thread ends. Nothing is named, so nothing needs
//! cleaning up, even after a panic.
//!
//! These tests need root (CAP_SYS_ADMIN to unshare, CAP_NET_ADMIN to
//! configure). CI runs as root; without it they fail saying so, never pass.

#![allow(dead_code)] // each test file uses a different part

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use peerd_addr::{
    AddressEvent, AddressSnapshot, InterfaceAddress, WatcherConfig, WatcherError, WatcherHandle,
};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// How long any one expected thing may take (DAD is the slowest: ~1-2 s).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `test` on a new thread in a new network namespace, on a
/// current-thread runtime; a panic in it fails the calling test.
pub fn in_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    peerd_testkit::run_in_fresh_netns(test);
}

/// Runs `ip ARGS` (split on whitespace) in the test's namespace; panics
/// with its stderr if it fails.
pub async fn ip(args: &str) -> String {
    let output = tokio::process::Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .await
        .expect("run ip (iproute2)");
    assert!(
        output.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs many `ip` commands in one process (`ip -batch -`).
pub async fn ip_batch(lines: &[String]) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("ip")
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ip -batch");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(lines.join("\n").as_bytes())
        .await
        .expect("write the batch");
    drop(stdin);
    let output = child.wait_with_output().await.expect("ip -batch");
    assert!(
        output.status.success(),
        "ip -batch: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Sets a sysctl of the test's namespace (`net.ipv6.conf.veth0.accept_dad`).
pub fn sysctl(key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
}

/// A veth pair `name` / `peer`, both up (so IPv6 and DAD work on `name`).
pub async fn veth(name: &str, peer: &str) {
    ip(&format!("link add {name} type veth peer name {peer}")).await;
    ip(&format!("link set {peer} up")).await;
    ip(&format!("link set {name} up")).await;
}

/// The test's watcher, its task, and an event receiver subscribed before
/// the watcher read anything.
pub struct Harness {
    pub handle: WatcherHandle,
    pub events: broadcast::Receiver<AddressEvent>,
    tasks: JoinSet<Result<(), WatcherError>>,
    token: CancellationToken,
}

impl Harness {
    /// Starts a watcher and waits until it has read the kernel's state.
    pub async fn start(config: WatcherConfig) -> Self {
        let token = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let handle = peerd_addr::spawn(config, &mut tasks, token.clone());
        let events = handle.events();
        timeout(TIMEOUT, handle.ready())
            .await
            .expect("the watcher did not finish its first dump")
            .expect("watcher gone");
        Self {
            handle,
            events,
            tasks,
            token,
        }
    }

    /// The next event.
    pub async fn next_event(&mut self) -> AddressEvent {
        match timeout(TIMEOUT, self.events.recv()).await {
            Ok(Ok(event)) => event,
            Ok(Err(e)) => panic!("event channel: {e}"),
            Err(_) => panic!(
                "no event within {TIMEOUT:?}; snapshot: {:?}",
                self.handle.snapshot()
            ),
        }
    }

    /// Every event up to and including the first `AddressChanged`, and
    /// that event's addresses.
    pub async fn until_address_changed(&mut self) -> (Vec<AddressEvent>, Vec<String>) {
        let mut seen = Vec::new();
        loop {
            let event = self.next_event().await;
            let done = match &event {
                AddressEvent::AddressChanged { addresses, .. } => Some(ips(addresses)),
                _ => None,
            };
            seen.push(event);
            if let Some(addresses) = done {
                return (seen, addresses);
            }
        }
    }

    /// The addresses of the next `AddressChanged`, skipping other events.
    pub async fn address_changed(&mut self) -> Vec<String> {
        self.until_address_changed().await.1
    }

    /// Waits until the snapshot satisfies `ok`.
    pub async fn snapshot_where(
        &self,
        what: &str,
        ok: impl Fn(&AddressSnapshot) -> bool,
    ) -> AddressSnapshot {
        let mut watch = self.handle.watch();
        let result = timeout(TIMEOUT, watch.wait_for(|s| ok(s))).await;
        match result {
            Ok(Ok(s)) => s.clone(),
            Ok(Err(_)) => panic!("watcher gone while waiting for {what}"),
            Err(_) => panic!(
                "timed out waiting for {what}; snapshot: {:?}",
                self.handle.snapshot()
            ),
        }
    }

    /// Returns once the watcher has processed every notification the kernel
    /// sent before this call: a marker address is added on `lo` (which the
    /// watcher mirrors like any interface) and, notifications being
    /// delivered in order, once the watcher knows it, it knows everything
    /// before it too.
    pub async fn barrier(&self) {
        static MARK: AtomicU32 = AtomicU32::new(1);
        let n = MARK.fetch_add(1, Ordering::Relaxed);
        let marker: IpAddr = format!("10.255.{}.{}", n / 250, n % 250 + 1)
            .parse()
            .expect("marker");
        ip(&format!("addr add {marker}/32 dev lo")).await;
        let seen = async {
            loop {
                let interfaces = self.handle.interfaces().await.expect("watcher gone");
                if interfaces
                    .iter()
                    .any(|i| i.addresses.iter().any(|a| a.ip == marker))
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        timeout(TIMEOUT, seen)
            .await
            .expect("the watcher never saw the barrier address");
    }

    /// Asserts that no event arrives within `d` (after a [`Harness::barrier`],
    /// this only waits out a debounce that must not fire).
    pub async fn no_event_within(&mut self, d: Duration) {
        if let Ok(event) = timeout(d, self.events.recv()).await {
            panic!("unexpected event: {event:?}");
        }
    }

    /// Stops the watcher and checks that its task ended cleanly.
    pub async fn stop(mut self) {
        self.token.cancel();
        while let Some(result) = timeout(TIMEOUT, self.tasks.join_next())
            .await
            .expect("the watcher did not stop")
        {
            result
                .expect("watcher task panicked")
                .expect("watcher task failed");
        }
    }
}

/// The addresses as strings, in order.
pub fn ips(addresses: &[InterfaceAddress]) -> Vec<String> {
    addresses.iter().map(|a| a.ip.to_string()).collect()
}

/// A watcher config for `interface` with a short debounce.
pub fn config(interface: &str, debounce_ms: u64) -> WatcherConfig {
    let interface = if interface == "auto" {
        peerd_config::WatchedInterface::Auto
    } else {
        peerd_config::WatchedInterface::Named(interface.to_owned())
    };
    WatcherConfig {
        debounce: Duration::from_millis(debounce_ms),
        ..WatcherConfig::for_interface(interface)
    }
}
