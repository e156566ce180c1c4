//! Each peer's last verified announcement: where it said it can be
//! reached, so that `peerctl connect NAME` and `peers` work after a
//! restart, before the peer announces again (it will not, once it has our
//! acknowledgement).
//!
//! Only ever moves forward, like the history: a record with a lower (or
//! equal) sequence than the stored one does not replace it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use peerd_core::{Candidate, PeerName};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::codec::{Dec, DecResult, Enc, secs, time};
use crate::{StateError, Store};

const ANNOUNCED: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("announced");
const TABLE: &str = "announced";

/// The most candidates kept per peer (an announcement carries at most 16).
const MAX_KEPT: usize = 32;

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StateError> {
    txn.open_table(ANNOUNCED).map_err(StateError::db)?;
    Ok(())
}

/// A peer's last verified announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastAnnounced {
    /// Where it can be reached, best first.
    pub candidates: Vec<Candidate>,
    /// Its sequence number.
    pub sequence: u64,
    /// When it arrived (whole seconds are kept).
    pub received_at: SystemTime,
}

impl LastAnnounced {
    /// Encoding, version 1: sequence u64, received_at u64 (unix seconds),
    /// candidates (count, then each).
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u64(self.sequence).u64(secs(self.received_at));
        let kept = &self.candidates[..self.candidates.len().min(MAX_KEPT)];
        e.count(kept.len());
        for c in kept {
            e.candidate(c);
        }
        e.finish()
    }

    fn decode(bytes: &[u8]) -> DecResult<Self> {
        let mut d = Dec::new(bytes)?;
        let sequence = d.u64()?;
        let received_at = time(d.u64()?);
        let n = d.count()?;
        if n > MAX_KEPT {
            return Err(format!("{n} candidates (at most {MAX_KEPT})"));
        }
        let candidates = (0..n).map(|_| d.candidate()).collect::<DecResult<_>>()?;
        d.finish()?;
        Ok(Self {
            candidates,
            sequence,
            received_at,
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

impl Store {
    /// Records `peer`'s announcement unless one with a sequence at least as
    /// high is stored. Returns whether it was recorded.
    pub fn record_announced(
        &self,
        peer: &PeerName,
        last: &LastAnnounced,
    ) -> Result<bool, StateError> {
        self.write(|txn| {
            let mut table = txn.open_table(ANNOUNCED).map_err(StateError::db)?;
            let stored = table
                .get(peer.as_str())
                .map_err(StateError::db)?
                .map(|v| LastAnnounced::decode(v.value()));
            // A stored record that no longer decodes is replaced: it is a
            // cache of what the peer said, and the new one is valid.
            if let Some(Ok(old)) = stored
                && old.sequence >= last.sequence
            {
                return Ok(false);
            }
            table
                .insert(peer.as_str(), last.encode().as_slice())
                .map_err(StateError::db)?;
            Ok(true)
        })
    }

    /// Every peer's last announcement, by name. A record that does not
    /// decode is an error naming it.
    pub fn announced(&self) -> Result<BTreeMap<PeerName, LastAnnounced>, StateError> {
        self.read(|txn| {
            let table = txn.open_table(ANNOUNCED).map_err(StateError::db)?;
            let mut out = BTreeMap::new();
            for row in table.iter().map_err(StateError::db)? {
                let (k, v) = row.map_err(StateError::db)?;
                let name = k.value();
                let peer: PeerName = name
                    .parse()
                    .map_err(|e| undecodable(name, format!("not a peer name: {e}")))?;
                let last = LastAnnounced::decode(v.value()).map_err(|p| undecodable(name, p))?;
                out.insert(peer, last);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use peerd_core::CandidateKind;

    use super::*;

    fn candidate(s: &str) -> Candidate {
        let addr: SocketAddr = s.parse().unwrap();
        Candidate::new(addr, CandidateKind::Host).unwrap()
    }

    fn last(sequence: u64, addr: &str) -> LastAnnounced {
        LastAnnounced {
            candidates: vec![candidate(addr), candidate("[2001:db8::1]:7447")],
            sequence,
            received_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    #[test]
    fn the_last_announcement_survives_a_reopen_and_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let hitoshi: PeerName = "hitoshi".parse().unwrap();
        {
            let store = Store::open_in(dir.path()).unwrap();
            assert!(store.announced().unwrap().is_empty());
            assert!(
                store
                    .record_announced(&hitoshi, &last(5, "203.0.113.5:7447"))
                    .unwrap()
            );
            assert!(
                store
                    .record_announced(&hitoshi, &last(7, "203.0.113.7:7447"))
                    .unwrap()
            );
            // Older or replayed: kept out.
            assert!(
                !store
                    .record_announced(&hitoshi, &last(6, "203.0.113.6:7447"))
                    .unwrap()
            );
            assert!(
                !store
                    .record_announced(&hitoshi, &last(7, "203.0.113.8:7447"))
                    .unwrap()
            );
            store.close().unwrap();
        }
        let store = Store::open_in(dir.path()).unwrap();
        let all = store.announced().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[&hitoshi], last(7, "203.0.113.7:7447"));
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_it_and_a_new_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in(dir.path()).unwrap();
        store
            .write(|txn| {
                let mut t = txn.open_table(ANNOUNCED).map_err(StateError::db)?;
                t.insert("hitoshi", [1u8, 2, 3].as_slice())
                    .map_err(StateError::db)?;
                Ok(())
            })
            .unwrap();
        let err = store.announced().unwrap_err().to_string();
        assert!(
            err.contains("announced") && err.contains("hitoshi"),
            "{err}"
        );
        let hitoshi: PeerName = "hitoshi".parse().unwrap();
        assert!(
            store
                .record_announced(&hitoshi, &last(1, "203.0.113.1:7447"))
                .unwrap()
        );
        assert_eq!(store.announced().unwrap().len(), 1);
    }

    #[test]
    fn hostile_bytes_never_panic() {
        for bytes in [
            &[][..],
            &[1][..],
            &[
                1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
            ][..],
            &[0xff; 64][..],
        ] {
            assert!(LastAnnounced::decode(bytes).is_err());
        }
    }
}
