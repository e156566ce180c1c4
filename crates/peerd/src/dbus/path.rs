//! Object paths of peers: `/org/peerd/Peerd1/peer/<name>`, the name
//! escaped as systemd escapes a path element (every byte outside
//! `[A-Za-z0-9]` as `_xx` in lower-case hex), so that every name gives a
//! valid, distinct path element and the escaping is known to D-Bus tools.

use std::fmt::Write;

use peerd_core::PeerName;
use zbus::OwnedObjectPath;

use super::PEER_PATH_PREFIX;

/// `name` escaped for one element of an object path: `me-on-phone` ->
/// `me_2don_2dphone`. An empty name is `_` (systemd's rule; peer names are
/// never empty).
pub fn escape(name: &str) -> String {
    if name.is_empty() {
        return "_".to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "_{b:02x}");
        }
    }
    out
}

/// The object path of `peer`.
pub fn peer_path(peer: &PeerName) -> OwnedObjectPath {
    let path = format!("{PEER_PATH_PREFIX}/{}", escape(peer.as_str()));
    // `escape` gives only [A-Za-z0-9_], which an element may hold.
    OwnedObjectPath::try_from(path).unwrap_or_else(|_| unreachable_path())
}

/// Never reached: a path made of the prefix and an escaped element is
/// valid. Kept out of line so that the `unwrap_or_else` above has no panic.
#[cold]
fn unreachable_path() -> OwnedObjectPath {
    OwnedObjectPath::try_from(PEER_PATH_PREFIX).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_systemd_does() {
        assert_eq!(escape("me-on-phone"), "me_2don_2dphone");
        assert_eq!(escape("hitoshi"), "hitoshi");
        assert_eq!(escape("a_b"), "a_5fb");
        assert_eq!(escape("0-9"), "0_2d9");
        assert_eq!(escape(""), "_");
    }

    #[test]
    fn peer_paths_are_under_the_manager() {
        let name: PeerName = "me-on-phone".parse().unwrap();
        assert_eq!(
            peer_path(&name).as_str(),
            "/org/peerd/Peerd1/peer/me_2don_2dphone"
        );
    }
}
