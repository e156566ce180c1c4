//! The runtime address book: what `peerctl peer add/remove` changes must
//! survive a restart, and duplicates are refused without changing anything.

use peerd_core::{Identity, PeerName, PublicKey};
use peerd_state::{RuntimePeer, StateError, Store};

fn key(seed: u8) -> PublicKey {
    Identity::from_seed(&[seed; 32]).public_key()
}

fn name(s: &str) -> PeerName {
    s.parse().expect("a peer name")
}

fn peer(n: &str, seed: u8) -> RuntimePeer {
    RuntimePeer::new(
        name(n),
        format!("{n}@isp-b.example").parse().expect("an address"),
        key(seed),
    )
}

#[test]
fn added_and_removed_peers_persist_across_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    assert!(s.runtime_peers().unwrap().is_empty());
    let mut kenji = peer("kenji", 2);
    kenji.announce = false;
    kenji.accept_unsigned = true;
    s.add_peer(&peer("hitoshi", 1)).unwrap();
    s.add_peer(&kenji).unwrap();
    s.add_peer(&peer("aiko", 3)).unwrap();
    assert!(s.remove_peer(&name("aiko")).unwrap());
    assert!(!s.remove_peer(&name("aiko")).unwrap());
    s.close().unwrap();

    let s = Store::open_in(dir.path()).unwrap();
    // By name, with every field as it was added.
    assert_eq!(
        s.runtime_peers().unwrap(),
        vec![peer("hitoshi", 1), kenji.clone()]
    );
    assert_eq!(s.runtime_peer(&name("kenji")).unwrap(), Some(kenji));
    assert_eq!(s.runtime_peer(&name("aiko")).unwrap(), None);
    // A removed name and its key are free again.
    s.add_peer(&peer("aiko", 3)).unwrap();
    s.close().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    assert_eq!(s.runtime_peers().unwrap().len(), 3);
}

#[test]
fn a_taken_name_or_key_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    s.add_peer(&peer("hitoshi", 1)).unwrap();

    // The same name, even with another key and address.
    let err = s.add_peer(&peer("hitoshi", 9)).unwrap_err();
    assert!(
        matches!(&err, StateError::PeerExists(n) if n.as_str() == "hitoshi"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "peer hitoshi is in the address book already (remove it first to change it)"
    );

    // The same key under another name.
    let err = s.add_peer(&peer("kenji", 1)).unwrap_err();
    assert!(
        matches!(&err, StateError::KeyInUse { name, other }
            if name.as_str() == "kenji" && other.as_str() == "hitoshi"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "peer kenji would have the same public key as peer hitoshi; every host has its own key"
    );

    s.close().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    assert_eq!(s.runtime_peers().unwrap(), vec![peer("hitoshi", 1)]);
}
