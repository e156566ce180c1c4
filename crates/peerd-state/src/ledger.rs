//! The ledger of seen mail: so a restart neither re-processes nor misses
//! mail, and mail that was rejected is not examined again.
//!
//! **IMAP** numbers messages with UIDs that only grow within a folder's
//! UIDVALIDITY. Per (account, folder) the ledger keeps the UIDVALIDITY and
//! the highest UID examined; the catch-up fetch after every IDLE wake-up and
//! reconnect asks for the UIDs above it. The courier records a UID after it
//! has handled that mail, in ascending order, so a crash re-examines at most
//! the mail in hand (a duplicate announcement is recognised and dropped by
//! the history). A changed UIDVALIDITY means the server renumbered the
//! folder: the position starts over from 0 ([`Store::imap_start`]).
//!
//! **POP3** has no order, only UIDLs (unique per message, stable across
//! sessions). Per account the ledger keeps every UIDL examined, with its
//! outcome and when; the courier skips those on the next visit, so a
//! rejected or foreign mail left on the server is not downloaded again.
//! [`Store::retain_pop3`] forgets UIDLs the server no longer lists, so the
//! table stays as large as the mailbox, not as large as its history.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::codec::{Dec, DecResult, Enc, secs, time};
use crate::{StateError, Store};

const IMAP: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("imap");
const POP3: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("pop3");

/// The longest rejection reason kept (longer ones are cut).
pub const MAX_REASON_LEN: usize = 256;

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StateError> {
    txn.open_table(IMAP).map_err(StateError::db)?;
    txn.open_table(POP3).map_err(StateError::db)?;
    Ok(())
}

fn undecodable(table: &'static str, account: &str, item: &str, problem: String) -> StateError {
    StateError::Undecodable {
        table,
        key: format!("({account:?}, {item:?})"),
        problem,
    }
}

/// How far an IMAP folder was examined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImapPosition {
    /// The folder's UIDVALIDITY when it was examined.
    pub uid_validity: u32,
    /// The highest UID examined (0: none yet).
    pub highest_uid: u32,
}

impl ImapPosition {
    /// Encoding, version 1: uid_validity u32, highest_uid u32.
    fn encode(self) -> Vec<u8> {
        Enc::new()
            .u32(self.uid_validity)
            .u32(self.highest_uid)
            .finish()
    }

    fn decode(bytes: &[u8]) -> DecResult<Self> {
        let mut d = Dec::new(bytes)?;
        let uid_validity = d.u32()?;
        let highest_uid = d.u32()?;
        d.finish()?;
        Ok(Self {
            uid_validity,
            highest_uid,
        })
    }
}

/// Where a catch-up fetch of a folder starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImapStart {
    /// Fetch the UIDs above this one (`UID FETCH <highest+1>:*`).
    pub highest_uid: u32,
    /// The folder's UIDVALIDITY differs from the one recorded: the folder
    /// was renumbered, and the position started over (0). `false` for a
    /// folder seen for the first time.
    pub reset: bool,
}

/// What examining a mail came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailOutcome {
    /// An announcement or ack that was accepted (and handled per `processed`).
    Accepted,
    /// A peerd mail that was rejected and left for the user to inspect.
    Rejected {
        /// The rejection's short code (`peerd_announce::Rejection::code`).
        reason: String,
    },
    /// Someone else's mail: left untouched.
    NotOurs,
}

impl MailOutcome {
    /// A rejection with this reason code.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::Rejected {
            reason: reason.into(),
        }
    }
}

/// A POP3 message examined before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pop3Seen {
    /// What it came to.
    pub outcome: MailOutcome,
    /// When it was examined (to the second).
    pub at: SystemTime,
}

impl Pop3Seen {
    /// Encoding, version 1: at u64 (Unix seconds), outcome u8 (0 accepted,
    /// 1 rejected, 2 not ours), for rejected a u16 length + UTF-8 reason.
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u64(secs(self.at));
        match &self.outcome {
            MailOutcome::Accepted => e.u8(0),
            MailOutcome::Rejected { reason } => {
                e.u8(1).str(crate::codec::truncate(reason, MAX_REASON_LEN))
            },
            MailOutcome::NotOurs => e.u8(2),
        };
        e.finish()
    }

    fn decode(bytes: &[u8]) -> DecResult<Self> {
        let mut d = Dec::new(bytes)?;
        let at = time(d.u64()?);
        let outcome = match d.u8()? {
            0 => MailOutcome::Accepted,
            1 => MailOutcome::Rejected { reason: d.str()? },
            2 => MailOutcome::NotOurs,
            c => return Err(format!("bad mail outcome {c}")),
        };
        d.finish()?;
        Ok(Self { outcome, at })
    }
}

impl Store {
    /// The recorded position of an IMAP folder, if any.
    pub fn imap_position(
        &self,
        account: &str,
        folder: &str,
    ) -> Result<Option<ImapPosition>, StateError> {
        self.read(|txn| {
            let table = txn.open_table(IMAP).map_err(StateError::db)?;
            let value = table.get((account, folder)).map_err(StateError::db)?;
            value
                .map(|v| {
                    ImapPosition::decode(v.value())
                        .map_err(|p| undecodable("imap", account, folder, p))
                })
                .transpose()
        })
    }

    /// Call after SELECT with the folder's UIDVALIDITY: where the catch-up
    /// fetch starts. A folder seen for the first time, or whose UIDVALIDITY
    /// changed, starts at 0 (everything in it is examined), and that is
    /// recorded at once.
    pub fn imap_start(
        &self,
        account: &str,
        folder: &str,
        uid_validity: u32,
    ) -> Result<ImapStart, StateError> {
        self.write(|txn| {
            let mut table = txn.open_table(IMAP).map_err(StateError::db)?;
            let old = table
                .get((account, folder))
                .map_err(StateError::db)?
                .map(|v| {
                    ImapPosition::decode(v.value())
                        .map_err(|p| undecodable("imap", account, folder, p))
                })
                .transpose()?;
            match old {
                Some(p) if p.uid_validity == uid_validity => Ok(ImapStart {
                    highest_uid: p.highest_uid,
                    reset: false,
                }),
                old => {
                    let fresh = ImapPosition {
                        uid_validity,
                        highest_uid: 0,
                    };
                    table
                        .insert((account, folder), fresh.encode().as_slice())
                        .map_err(StateError::db)?;
                    Ok(ImapStart {
                        highest_uid: 0,
                        reset: old.is_some(),
                    })
                },
            }
        })
    }

    /// The mail with `uid` in the folder (at `uid_validity`) was examined
    /// and handled. The position only moves forward; a UIDVALIDITY other
    /// than the recorded one replaces it (the folder was renumbered).
    pub fn imap_examined(
        &self,
        account: &str,
        folder: &str,
        uid_validity: u32,
        uid: u32,
    ) -> Result<(), StateError> {
        self.write(|txn| {
            let mut table = txn.open_table(IMAP).map_err(StateError::db)?;
            let old = table
                .get((account, folder))
                .map_err(StateError::db)?
                .map(|v| {
                    ImapPosition::decode(v.value())
                        .map_err(|p| undecodable("imap", account, folder, p))
                })
                .transpose()?;
            let highest_uid = match old {
                Some(p) if p.uid_validity == uid_validity => {
                    if p.highest_uid >= uid {
                        return Ok(());
                    }
                    uid
                },
                _ => uid,
            };
            let new = ImapPosition {
                uid_validity,
                highest_uid,
            };
            table
                .insert((account, folder), new.encode().as_slice())
                .map_err(StateError::db)?;
            Ok(())
        })
    }

    /// Every POP3 UIDL of `account` examined before, with its outcome.
    pub fn pop3_seen(&self, account: &str) -> Result<BTreeMap<String, Pop3Seen>, StateError> {
        self.read(|txn| {
            let table = txn.open_table(POP3).map_err(StateError::db)?;
            let mut out = BTreeMap::new();
            // Keys sort by account, then UIDL: the account's rows are one run.
            for row in table.range((account, "")..).map_err(StateError::db)? {
                let (k, v) = row.map_err(StateError::db)?;
                let (acc, uidl) = k.value();
                if acc != account {
                    break;
                }
                let seen = Pop3Seen::decode(v.value())
                    .map_err(|p| undecodable("pop3", account, uidl, p))?;
                out.insert(uidl.to_owned(), seen);
            }
            Ok(out)
        })
    }

    /// One POP3 UIDL's record, if it was examined before.
    pub fn pop3_lookup(&self, account: &str, uidl: &str) -> Result<Option<Pop3Seen>, StateError> {
        self.read(|txn| {
            let table = txn.open_table(POP3).map_err(StateError::db)?;
            let value = table.get((account, uidl)).map_err(StateError::db)?;
            value
                .map(|v| {
                    Pop3Seen::decode(v.value()).map_err(|p| undecodable("pop3", account, uidl, p))
                })
                .transpose()
        })
    }

    /// Records that the POP3 message `uidl` was examined, with its outcome.
    pub fn record_pop3(
        &self,
        account: &str,
        uidl: &str,
        outcome: &MailOutcome,
        now: SystemTime,
    ) -> Result<(), StateError> {
        self.record_pop3_many(account, [(uidl, outcome)], now)
    }

    /// Records several POP3 messages in one transaction (one disk sync).
    pub fn record_pop3_many<'a>(
        &self,
        account: &str,
        items: impl IntoIterator<Item = (&'a str, &'a MailOutcome)>,
        now: SystemTime,
    ) -> Result<(), StateError> {
        self.write(|txn| {
            let mut table = txn.open_table(POP3).map_err(StateError::db)?;
            for (uidl, outcome) in items {
                let seen = Pop3Seen {
                    outcome: outcome.clone(),
                    at: now,
                };
                table
                    .insert((account, uidl), seen.encode().as_slice())
                    .map_err(StateError::db)?;
            }
            Ok(())
        })
    }

    /// Forgets the UIDLs of `account` that are not in `present` (the
    /// server's current UIDL listing): those messages are gone, and their
    /// UIDLs are never reused. Returns how many were forgotten.
    pub fn retain_pop3<'a>(
        &self,
        account: &str,
        present: impl IntoIterator<Item = &'a str>,
    ) -> Result<usize, StateError> {
        let present: BTreeSet<&str> = present.into_iter().collect();
        self.write(|txn| {
            let mut table = txn.open_table(POP3).map_err(StateError::db)?;
            let mut gone = Vec::new();
            for row in table.range((account, "")..).map_err(StateError::db)? {
                let (k, _) = row.map_err(StateError::db)?;
                let (acc, uidl) = k.value();
                if acc != account {
                    break;
                }
                if !present.contains(uidl) {
                    gone.push(uidl.to_owned());
                }
            }
            for uidl in &gone {
                table
                    .remove((account, uidl.as_str()))
                    .map_err(StateError::db)?;
            }
            Ok(gone.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in(dir.path()).unwrap();
        (dir, store)
    }

    fn t(s: u64) -> SystemTime {
        time(1_800_000_000 + s)
    }

    #[test]
    fn imap_position_starts_at_zero_and_only_moves_forward() {
        let (_d, s) = store();
        assert_eq!(s.imap_position("a", "INBOX").unwrap(), None);
        let start = s.imap_start("a", "INBOX", 7).unwrap();
        assert_eq!(
            start,
            ImapStart {
                highest_uid: 0,
                reset: false
            }
        );
        s.imap_examined("a", "INBOX", 7, 10).unwrap();
        s.imap_examined("a", "INBOX", 7, 4).unwrap();
        assert_eq!(s.imap_start("a", "INBOX", 7).unwrap().highest_uid, 10);
        s.imap_examined("a", "INBOX", 7, 11).unwrap();
        assert_eq!(
            s.imap_position("a", "INBOX").unwrap(),
            Some(ImapPosition {
                uid_validity: 7,
                highest_uid: 11
            })
        );
        // Folders and accounts are independent.
        assert_eq!(s.imap_start("a", "Junk", 7).unwrap().highest_uid, 0);
        assert_eq!(s.imap_start("b", "INBOX", 7).unwrap().highest_uid, 0);
    }

    #[test]
    fn imap_uidvalidity_change_resets_the_position() {
        let (_d, s) = store();
        s.imap_start("a", "INBOX", 7).unwrap();
        s.imap_examined("a", "INBOX", 7, 50).unwrap();
        let start = s.imap_start("a", "INBOX", 8).unwrap();
        assert_eq!(
            start,
            ImapStart {
                highest_uid: 0,
                reset: true
            }
        );
        assert_eq!(
            s.imap_position("a", "INBOX").unwrap(),
            Some(ImapPosition {
                uid_validity: 8,
                highest_uid: 0
            })
        );
        // A late record under the old validity replaces, rather than mixes.
        s.imap_examined("a", "INBOX", 8, 3).unwrap();
        assert_eq!(s.imap_start("a", "INBOX", 8).unwrap().highest_uid, 3);
    }

    #[test]
    fn pop3_outcomes_are_remembered_per_account() {
        let (_d, s) = store();
        s.record_pop3("a", "u1", &MailOutcome::Accepted, t(0))
            .unwrap();
        s.record_pop3("a", "u2", &MailOutcome::rejected("bad-signature"), t(5))
            .unwrap();
        s.record_pop3("a", "u3", &MailOutcome::NotOurs, t(6))
            .unwrap();
        s.record_pop3("b", "u1", &MailOutcome::NotOurs, t(7))
            .unwrap();
        let seen = s.pop3_seen("a").unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(
            seen["u2"],
            Pop3Seen {
                outcome: MailOutcome::rejected("bad-signature"),
                at: t(5)
            }
        );
        assert_eq!(seen["u1"].outcome, MailOutcome::Accepted);
        assert_eq!(
            s.pop3_lookup("b", "u1").unwrap().unwrap().outcome,
            MailOutcome::NotOurs
        );
        assert_eq!(s.pop3_lookup("b", "u2").unwrap(), None);
        assert_eq!(s.pop3_seen("").unwrap().len(), 0);
        assert_eq!(s.pop3_seen("c").unwrap().len(), 0);
    }

    #[test]
    fn retain_pop3_forgets_only_what_the_server_no_longer_has() {
        let (_d, s) = store();
        let outcome = MailOutcome::NotOurs;
        s.record_pop3_many("a", ["u1", "u2", "u3"].map(|u| (u, &outcome)), t(0))
            .unwrap();
        s.record_pop3("b", "u1", &outcome, t(0)).unwrap();
        assert_eq!(s.retain_pop3("a", ["u2", "u9"]).unwrap(), 2);
        assert_eq!(s.pop3_seen("a").unwrap().keys().collect::<Vec<_>>(), ["u2"]);
        // Another account's ledger is untouched.
        assert_eq!(s.pop3_seen("b").unwrap().len(), 1);
        assert_eq!(s.retain_pop3("a", std::iter::empty()).unwrap(), 1);
        assert!(s.pop3_seen("a").unwrap().is_empty());
    }

    #[test]
    fn long_reasons_are_cut() {
        let (_d, s) = store();
        let long = "x".repeat(10_000);
        s.record_pop3("a", "u", &MailOutcome::rejected(long), t(0))
            .unwrap();
        let MailOutcome::Rejected { reason } = s.pop3_lookup("a", "u").unwrap().unwrap().outcome
        else {
            panic!("not rejected");
        };
        assert_eq!(reason.len(), MAX_REASON_LEN);
    }

    #[test]
    fn ledger_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open_in(dir.path()).unwrap();
            s.imap_start("a", "INBOX", 1).unwrap();
            s.imap_examined("a", "INBOX", 1, 42).unwrap();
            s.record_pop3("a", "u", &MailOutcome::rejected("expired"), t(1))
                .unwrap();
            s.close().unwrap();
        }
        let s = Store::open_in(dir.path()).unwrap();
        assert_eq!(s.imap_start("a", "INBOX", 1).unwrap().highest_uid, 42);
        assert_eq!(
            s.pop3_lookup("a", "u").unwrap().unwrap().at,
            t(1) + Duration::ZERO
        );
    }
}
