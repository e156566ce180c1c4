//! The last message accepted from each sender key: what a new one must
//! beat (`docs/protocol.md`, "Sequence numbers").
//!
//! It only ever moves forward: [`Store::record_accepted`] never lets a lower
//! (or equal) sequence replace a higher one, so mail arriving out of order,
//! or a replayed old announcement, cannot roll a peer's address back.
//!
//! [`peerd_announce::History`] cannot report an error, so there are two
//! ways to give the verifier the history:
//! - [`Store::history`], a snapshot loaded fallibly (a `BTreeMap`, which
//!   implements `History`): the courier's way, so a database error is seen
//!   and handled before any mail is judged;
//! - `impl History for Store`, which reads per lookup and *fails closed*:
//!   if the record cannot be read, every message from that key is judged
//!   stale (sequence `u64::MAX` is taken as the last accepted), never
//!   accepted as new. The sender keeps re-sending until acknowledged, so
//!   nothing is lost once the database is readable again.

use std::collections::BTreeMap;

use peerd_announce::{History, LastAccepted};
use peerd_core::PublicKey;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::codec::{Dec, DecResult, Enc};
use crate::{StateError, Store};

const HISTORY: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("history");
const TABLE: &str = "history";

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StateError> {
    txn.open_table(HISTORY).map_err(StateError::db)?;
    Ok(())
}

/// Encoding, version 1: sequence u64, digest 32 bytes.
fn encode(last: &LastAccepted) -> Vec<u8> {
    Enc::new().u64(last.sequence).bytes(&last.digest).finish()
}

fn decode(bytes: &[u8]) -> DecResult<LastAccepted> {
    let mut d = Dec::new(bytes)?;
    let sequence = d.u64()?;
    let digest = d.bytes32()?;
    d.finish()?;
    Ok(LastAccepted { sequence, digest })
}

fn key_text(key: &[u8; 32]) -> String {
    match PublicKey::from_bytes(key) {
        Ok(k) => k.to_string(),
        Err(_) => key.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

fn undecodable(key: &[u8; 32], problem: String) -> StateError {
    StateError::Undecodable {
        table: TABLE,
        key: key_text(key),
        problem,
    }
}

impl Store {
    /// The last message accepted from `key`, if any.
    pub fn last_accepted_checked(
        &self,
        key: &PublicKey,
    ) -> Result<Option<LastAccepted>, StateError> {
        self.read(|txn| {
            let table = txn.open_table(HISTORY).map_err(StateError::db)?;
            let value = table.get(key.as_bytes()).map_err(StateError::db)?;
            value
                .map(|v| decode(v.value()).map_err(|p| undecodable(key.as_bytes(), p)))
                .transpose()
        })
    }

    /// The whole history, for [`peerd_announce::Receiver::history`].
    pub fn history(&self) -> Result<BTreeMap<PublicKey, LastAccepted>, StateError> {
        self.read(|txn| {
            let table = txn.open_table(HISTORY).map_err(StateError::db)?;
            let mut out = BTreeMap::new();
            for row in table.iter().map_err(StateError::db)? {
                let (k, v) = row.map_err(StateError::db)?;
                let raw = k.value();
                let key = PublicKey::from_bytes(raw)
                    .map_err(|e| undecodable(raw, format!("not a public key: {e}")))?;
                let last = decode(v.value()).map_err(|p| undecodable(raw, p))?;
                out.insert(key, last);
            }
            Ok(out)
        })
    }

    /// Remembers that `last` was accepted from `key`, if it is newer than
    /// what was: a lower or equal sequence changes nothing. Returns whether
    /// it was recorded.
    pub fn record_accepted(&self, key: &PublicKey, last: LastAccepted) -> Result<bool, StateError> {
        self.write(|txn| {
            let mut table = txn.open_table(HISTORY).map_err(StateError::db)?;
            let old = table
                .get(key.as_bytes())
                .map_err(StateError::db)?
                .map(|v| decode(v.value()).map_err(|p| undecodable(key.as_bytes(), p)))
                .transpose()?;
            if old.is_some_and(|o| o.sequence >= last.sequence) {
                return Ok(false);
            }
            table
                .insert(key.as_bytes(), encode(&last).as_slice())
                .map_err(StateError::db)?;
            Ok(true)
        })
    }
}

/// Reads per lookup; fails closed (see the module docs): a record that
/// cannot be read makes every message from that key stale.
impl History for Store {
    fn last_accepted(&self, key: &PublicKey) -> Option<LastAccepted> {
        match self.last_accepted_checked(key) {
            Ok(last) => last,
            Err(_) => Some(LastAccepted {
                sequence: u64::MAX,
                digest: [0; 32],
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use peerd_core::Identity;

    use super::*;

    fn key(n: u8) -> PublicKey {
        Identity::from_seed(&[n; 32]).public_key()
    }

    fn last(sequence: u64, d: u8) -> LastAccepted {
        LastAccepted {
            sequence,
            digest: [d; 32],
        }
    }

    #[test]
    fn history_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_in(dir.path()).unwrap();
        let (a, b) = (key(1), key(2));
        assert_eq!(s.last_accepted(&a), None);
        assert!(s.record_accepted(&a, last(10, 1)).unwrap());
        assert!(!s.record_accepted(&a, last(9, 2)).unwrap());
        assert!(!s.record_accepted(&a, last(10, 3)).unwrap());
        assert_eq!(s.last_accepted(&a), Some(last(10, 1)));
        assert!(s.record_accepted(&a, last(11, 4)).unwrap());
        assert!(s.record_accepted(&b, last(5, 5)).unwrap());
        let all = s.history().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[&a], last(11, 4));
        assert_eq!(all.last_accepted(&b), Some(last(5, 5)));
        s.close().unwrap();
        let s = Store::open_in(dir.path()).unwrap();
        assert_eq!(s.last_accepted_checked(&a).unwrap(), Some(last(11, 4)));
    }

    #[test]
    fn an_unreadable_record_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_in(dir.path()).unwrap();
        let a = key(1);
        s.write(|txn| {
            let mut t = txn.open_table(HISTORY).map_err(StateError::db)?;
            t.insert(a.as_bytes(), [1u8, 2, 3].as_slice())
                .map_err(StateError::db)?;
            Ok(())
        })
        .unwrap();
        let err = s.last_accepted_checked(&a).unwrap_err().to_string();
        assert!(
            err.contains("table history") && err.contains("cut short"),
            "{err}"
        );
        assert!(s.history().is_err());
        assert_eq!(s.last_accepted(&a).map(|l| l.sequence), Some(u64::MAX));
    }
}
