//! A fresh network namespace per test (or per test host), so that
//! interfaces, addresses and routes a test makes never touch the machine's.
//!
//! `unshare(CLONE_NEWNET)` moves only the calling thread; every child it
//! forks (`ip`, pppd, the stand-in) and every socket it opens are then in
//! the new namespace, which disappears with the thread and everything in
//! it. Nothing is named, so nothing needs cleaning up, even after a panic.
//! Needs root (CAP_SYS_ADMIN to unshare, CAP_NET_ADMIN to configure); CI
//! runs as root, and without it these panic saying so, never pass.

use std::future::Future;
use std::process::Command;

/// Moves the calling thread into a new network namespace and checks that
/// a child process sees it: only `lo` (down).
///
/// # Panics
/// Without root, or when the namespace is not a fresh one.
pub fn enter_fresh_netns() {
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        panic!(
            "unshare(CLONE_NEWNET) failed: {e}; a network namespace needs root \
             (CAP_SYS_ADMIN), as CI has"
        );
    }
    // Were it still the host's namespace, the test stops here.
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("run ip (iproute2)");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        links.lines().count() == 1 && links.contains(": lo:"),
        "not in a fresh network namespace: {links}"
    );
}

/// Runs `test` on a thread of its own in a fresh network namespace, on a
/// current-thread tokio runtime built inside it; a panic in `test` fails
/// the caller.
///
/// # Panics
/// Without root (said plainly), or when `test` panics.
pub fn run_in_fresh_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test makes a network namespace and needs root (CAP_SYS_ADMIN and \
         CAP_NET_ADMIN); run `cargo test` as root, as CI does"
    );
    let thread = std::thread::Builder::new()
        .name("netns-test".to_owned())
        .spawn(move || {
            enter_fresh_netns();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(test());
        })
        .expect("spawn the namespace thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}
