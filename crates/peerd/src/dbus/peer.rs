//! `org.peerd.Peerd1.Peer`: one object per address-book peer, at
//! `/org/peerd/Peerd1/peer/<escaped name>`, with read-only properties from
//! the snapshot. Objects come and go with the address book (`state`).

use std::sync::Arc;

use super::state::{PeerProps, Shared};

/// A peer's object: its name and the snapshot its properties come from.
pub(super) struct PeerObject {
    name: String,
    shared: Arc<Shared>,
}

impl PeerObject {
    pub(super) fn new(name: String, shared: Arc<Shared>) -> Self {
        Self { name, shared }
    }

    fn props<T>(&self, f: impl FnOnce(&PeerProps) -> T) -> T {
        self.shared.read(|s| match s.peers.get(&self.name) {
            Some(props) => f(props),
            // Removed a moment ago; the object goes next.
            None => f(&PeerProps::default()),
        })
    }
}

/// A peer of the address book.
#[zbus::interface(name = "org.peerd.Peerd1.Peer")]
impl PeerObject {
    /// The peer's name, as in the address book.
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// Where announcements to the peer are mailed.
    #[zbus(property)]
    fn email(&self) -> String {
        self.props(|p| p.email.clone())
    }

    /// The short fingerprint of the peer's key, for reading aloud; empty
    /// for a plain peer (no key).
    #[zbus(property)]
    fn fingerprint(&self) -> String {
        self.props(|p| p.fingerprint.clone())
    }

    /// The addresses the peer last announced, as `address:port`.
    #[zbus(property)]
    fn addresses(&self) -> Vec<String> {
        self.props(|p| p.addresses.clone())
    }

    /// When the peer last announced them, in seconds since 1970 (0: never).
    #[zbus(property)]
    fn last_announced(&self) -> u64 {
        self.props(|p| p.last_announced)
    }

    /// The connection: "idle", "connecting", "connected" or "failed".
    #[zbus(property)]
    fn state(&self) -> String {
        self.props(|p| p.state.clone())
    }
}
