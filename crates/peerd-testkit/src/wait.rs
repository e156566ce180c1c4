//! Waiting without fixed sleeps: a test polls for what it expects, with
//! a deadline that names what it waited for when it runs out.

use std::time::{Duration, Instant};

/// Polls `f` (10 ms at first, backing off to 250 ms) until it returns
/// `Some`, and returns that.
///
/// # Panics
/// After `timeout`, naming `what` was awaited.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}
