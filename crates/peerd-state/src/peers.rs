//! The runtime address book: peers added while the daemon runs
//! (`peerctl peer add`, D-Bus `AddPeer`; later pairing), kept across
//! restarts.
//!
//! The other half of the address book is `[[peer]]` in the config file,
//! which peerd never writes. The daemon merges the two (and refuses a name
//! or a key that is in both); this table only guarantees that the runtime
//! half is consistent in itself: one record per name, and no public key
//! used by two names (every host has its own key, and a received
//! announcement must name exactly one peer).
//!
//! Runtime peers are always sealed (`peer add` requires `--key`): a plain
//! peer, someone without peerd, is configured in the file.
//!
//! The table is small (one short record per peer), so the key check reads
//! the whole table inside the write transaction that adds the peer.

use peerd_core::{MailAddress, PeerName, PublicKey};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::codec::{Dec, DecResult, Enc};
use crate::{StateError, Store};

const PEERS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("peers");
const TABLE: &str = "peers";

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StateError> {
    txn.open_table(PEERS).map_err(StateError::db)?;
    Ok(())
}

/// One peer of the runtime address book: what `peerctl peer add NAME
/// --email ADDR --key PUBKEY [--no-announce] [--accept-unsigned]` says,
/// with the same meaning as the `[[peer]]` keys of that name (a runtime
/// peer is always `format = "sealed"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimePeer {
    /// The peer's name, unique in the whole address book.
    pub name: PeerName,
    /// Where announcements to this peer go.
    pub email: MailAddress,
    /// The peer's identity key (announcements are sealed to it and must be
    /// signed by it; connections are authenticated with it).
    pub public_key: PublicKey,
    /// Send this peer our announcements (`--no-announce` clears it).
    pub announce: bool,
    /// Connect when this peer announces.
    pub auto_connect: bool,
    /// Take a bare address in a plain mail from this peer as a hint.
    pub accept_unsigned: bool,
}

impl RuntimePeer {
    /// A peer as `peer add NAME --email ADDR --key PUBKEY` makes it: it is
    /// announced to, connected to, and unsigned hints are refused.
    pub fn new(name: PeerName, email: MailAddress, public_key: PublicKey) -> Self {
        Self {
            name,
            email,
            public_key,
            announce: true,
            auto_connect: true,
            accept_unsigned: false,
        }
    }

    /// Encoding, version 1 (after the version byte): email (u16 length +
    /// UTF-8), public key 32 bytes, then one byte each (0 or 1) for
    /// announce, auto_connect, accept_unsigned. The name is the table key.
    fn encode(&self) -> Vec<u8> {
        Enc::new()
            .str(self.email.as_str())
            .bytes(self.public_key.as_bytes())
            .u8(u8::from(self.announce))
            .u8(u8::from(self.auto_connect))
            .u8(u8::from(self.accept_unsigned))
            .finish()
    }

    fn decode(name: &str, bytes: &[u8]) -> DecResult<Self> {
        let name: PeerName = name
            .parse()
            .map_err(|e| format!("the name is not a peer name: {e}"))?;
        let mut d = Dec::new(bytes)?;
        let email: MailAddress = d
            .str()?
            .parse()
            .map_err(|e| format!("the e-mail is not a mail address: {e}"))?;
        let public_key = PublicKey::from_bytes(&d.bytes32()?)
            .map_err(|e| format!("the public key is not a key: {e}"))?;
        let announce = d.bool()?;
        let auto_connect = d.bool()?;
        let accept_unsigned = d.bool()?;
        d.finish()?;
        Ok(Self {
            name,
            email,
            public_key,
            announce,
            auto_connect,
            accept_unsigned,
        })
    }
}

fn undecodable(name: &str, problem: String) -> StateError {
    StateError::Undecodable {
        table: TABLE,
        key: format!("{name:?}"),
        problem,
    }
}

fn all(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<RuntimePeer>, StateError> {
    let mut out = Vec::new();
    for row in table.iter().map_err(StateError::db)? {
        let (k, v) = row.map_err(StateError::db)?;
        let name = k.value();
        out.push(RuntimePeer::decode(name, v.value()).map_err(|p| undecodable(name, p))?);
    }
    Ok(out)
}

impl Store {
    /// Adds `peer` to the runtime address book, durably.
    ///
    /// Refused, changing nothing: a name that is already a runtime peer
    /// ([`StateError::PeerExists`]; remove it first to change it), and a
    /// public key another runtime peer has ([`StateError::KeyInUse`]).
    /// Conflicts with `[[peer]]` in the config file are the caller's to
    /// check: this store does not know the file.
    pub fn add_peer(&self, peer: &RuntimePeer) -> Result<(), StateError> {
        self.write(|txn| {
            let mut table = txn.open_table(PEERS).map_err(StateError::db)?;
            if table
                .get(peer.name.as_str())
                .map_err(StateError::db)?
                .is_some()
            {
                return Err(StateError::PeerExists(peer.name.clone()));
            }
            if let Some(other) = all(&table)?
                .into_iter()
                .find(|p| p.public_key == peer.public_key)
            {
                return Err(StateError::KeyInUse {
                    name: peer.name.clone(),
                    other: other.name,
                });
            }
            table
                .insert(peer.name.as_str(), peer.encode().as_slice())
                .map_err(StateError::db)?;
            Ok(())
        })
    }

    /// Removes the runtime peer `name`, durably. Returns whether it was
    /// there. The peer's outbox entry and history are left alone (the
    /// caller decides; a peer added again under the same key must still
    /// beat the sequence numbers it used before).
    pub fn remove_peer(&self, name: &PeerName) -> Result<bool, StateError> {
        self.write(|txn| {
            let mut table = txn.open_table(PEERS).map_err(StateError::db)?;
            let removed = table.remove(name.as_str()).map_err(StateError::db)?;
            Ok(removed.is_some())
        })
    }

    /// Every runtime peer, by name. A record that does not decode is an
    /// error naming it ([`StateError::Undecodable`]), never skipped: an
    /// address book missing a peer silently would drop its announcements.
    pub fn runtime_peers(&self) -> Result<Vec<RuntimePeer>, StateError> {
        self.read(|txn| {
            let table = txn.open_table(PEERS).map_err(StateError::db)?;
            all(&table)
        })
    }

    /// The runtime peer `name`, if there is one.
    pub fn runtime_peer(&self, name: &PeerName) -> Result<Option<RuntimePeer>, StateError> {
        self.read(|txn| {
            let table = txn.open_table(PEERS).map_err(StateError::db)?;
            let value = table.get(name.as_str()).map_err(StateError::db)?;
            value
                .map(|v| {
                    RuntimePeer::decode(name.as_str(), v.value())
                        .map_err(|p| undecodable(name.as_str(), p))
                })
                .transpose()
        })
    }
}

#[cfg(test)]
mod tests {
    use peerd_core::Identity;

    use super::*;

    fn peer(name: &str, seed: u8) -> RuntimePeer {
        RuntimePeer::new(
            name.parse().unwrap(),
            format!("{name}@isp-b.example").parse().unwrap(),
            Identity::from_seed(&[seed; 32]).public_key(),
        )
    }

    #[test]
    fn records_round_trip_with_every_flag() {
        let mut p = peer("hitoshi", 1);
        for bits in 0..8u8 {
            p.announce = bits & 1 != 0;
            p.auto_connect = bits & 2 != 0;
            p.accept_unsigned = bits & 4 != 0;
            let bytes = p.encode();
            assert_eq!(bytes[0], crate::codec::VERSION);
            assert_eq!(RuntimePeer::decode("hitoshi", &bytes).unwrap(), p);
        }
    }

    #[test]
    fn bad_records_say_what_is_wrong() {
        let p = peer("hitoshi", 1);
        let bytes = p.encode();
        let err = RuntimePeer::decode("Bad Name", &bytes).unwrap_err();
        assert!(err.contains("not a peer name"), "{err}");
        let err = RuntimePeer::decode("hitoshi", &bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.contains("cut short"), "{err}");
        let mut flag = bytes.clone();
        *flag.last_mut().unwrap() = 7;
        let err = RuntimePeer::decode("hitoshi", &flag).unwrap_err();
        assert!(err.contains("bad boolean"), "{err}");
        let bad_mail = Enc::new()
            .str("not an address")
            .bytes(p.public_key.as_bytes())
            .u8(1)
            .u8(1)
            .u8(0)
            .finish();
        let err = RuntimePeer::decode("hitoshi", &bad_mail).unwrap_err();
        assert!(err.contains("not a mail address"), "{err}");
        let mut newer = bytes;
        newer[0] = 2;
        let err = RuntimePeer::decode("hitoshi", &newer).unwrap_err();
        assert!(err.contains("version 2"), "{err}");
    }

    #[test]
    fn an_undecodable_record_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_in(dir.path()).unwrap();
        s.add_peer(&peer("hitoshi", 1)).unwrap();
        s.write(|txn| {
            let mut t = txn.open_table(PEERS).map_err(StateError::db)?;
            t.insert("broken", [1u8, 0, 3, b'a'].as_slice())
                .map_err(StateError::db)?;
            Ok(())
        })
        .unwrap();
        let err = s.runtime_peers().unwrap_err().to_string();
        assert!(
            err.contains("table peers") && err.contains("\"broken\"") && err.contains("cut short"),
            "{err}"
        );
        // Adding checks keys against every record, so it fails too rather
        // than skipping the broken one.
        assert!(s.add_peer(&peer("kenji", 2)).is_err());
        assert!(
            s.runtime_peer(&"hitoshi".parse().unwrap())
                .unwrap()
                .is_some()
        );
        assert!(s.remove_peer(&"broken".parse().unwrap()).unwrap());
        assert_eq!(s.runtime_peers().unwrap().len(), 1);
    }
}
