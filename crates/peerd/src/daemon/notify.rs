//! `sd_notify`: tells systemd (or a test) that the daemon is ready,
//! reloading or stopping.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the Unix socket
//! named by `NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace). It is small enough that a dependency would cost more than
//! these lines; without `NOTIFY_SOCKET` every call does nothing.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use tracing::{debug, warn};

/// Where readiness is reported, if anywhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<SocketAddr>,
}

impl Notifier {
    /// The socket of `NOTIFY_SOCKET`, if set and usable.
    pub fn from_env() -> Self {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|raw| {
            let text = raw.to_string_lossy();
            let parsed = match text.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
                None => SocketAddr::from_pathname(&*text),
            };
            parsed
                .map_err(|e| warn!(socket = %text, error = %e, "NOTIFY_SOCKET ignored"))
                .ok()
        });
        Self { target }
    }

    /// Sends `state` (`READY=1`, ...); a failure is logged, never fatal.
    pub fn notify(&self, state: &str) {
        let Some(target) = &self.target else { return };
        match send(target, state) {
            Ok(()) => debug!(state, "sd_notify sent"),
            Err(e) => warn!(error = %e, "cannot notify the service manager"),
        }
    }
}

fn send(target: &SocketAddr, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), target)?;
    Ok(())
}
