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
        Self::to(std::env::var_os("NOTIFY_SOCKET"))
    }

    /// The socket named by `value` (as `NOTIFY_SOCKET` would name it).
    pub fn to(value: Option<std::ffi::OsString>) -> Self {
        let target = value.and_then(|raw| {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notifies_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        Notifier::to(Some(path.into_os_string())).notify("READY=1");
        assert_eq!(received(&socket), "READY=1");
    }

    #[test]
    fn notifies_an_abstract_socket() {
        let name = format!("peerd-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::to(Some(format!("@{name}").into())).notify("STOPPING=1");
        assert_eq!(received(&socket), "STOPPING=1");
    }
}
