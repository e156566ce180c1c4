//! peerd's durable state: what must survive a restart, a crash or a
//! `kill -9` of the mail courier.
//!
//! Three things live here, in one [redb] file in the state dir
//! (`<state dir>/peerd.redb`, [`Store::FILE_NAME`]):
//!
//! - **The outbox** ([`outbox`]): per peer, the latest *intent* ("hitoshi
//!   should know these addresses"), and where sending it stands. An intent,
//!   not a sealed mail: each attempt is sealed afresh by the courier with
//!   fresh times, so mail sent after a long outage is never stale. The
//!   intent is committed before any send is tried, and a send is recorded
//!   only after the server accepted it, so a crash anywhere costs at most a
//!   duplicate mail, never a lost one.
//! - **The ledger of seen mail** ([`ledger`]): how far each IMAP folder was
//!   examined, and which POP3 messages were, so a restart neither
//!   re-processes nor misses mail, and rejected mail is not looked at again.
//! - **The history** ([`history`]): the last message accepted from each
//!   sender key, which a new one must beat ([`peerd_announce::History`]).
//! - **The runtime address book** ([`peers`]): peers added with `peerctl
//!   peer add` (or D-Bus), the half of the address book that is not in the
//!   config file.
//!
//! Why one redb file: each operation is one transaction, committed with
//! redb's default durability (fsync before `commit` returns), so the
//! state is always some prefix of the operations that returned `Ok`. redb
//! locks the file, so a second peerd on the same state dir is refused with
//! [`StateError::InUse`] instead of two couriers mailing in parallel.
//!
//! The API is synchronous (each call is one short transaction); the async
//! courier calls it directly. Time is always passed in, never read here, so
//! tests control it.
//!
//! Values are stored in a small explicit versioned encoding (see
//! `codec.rs`, and [`FORMAT`] for the file as a whole), not via serde, so
//! the on-disk format is written down in one place. A value that does not
//! decode is a [`StateError::Undecodable`] naming the table and key, never a
//! panic.
//!
//! # Layout
//! - [`outbox`]: intents, sending policy ([`Policy`]), what is due.
//! - [`ledger`]: IMAP positions and POP3 UIDLs already examined.
//! - [`history`]: the last accepted sequence per sender key.
//! - [`peers`]: the runtime address book ([`RuntimePeer`]).
//! - [`announced`]: each peer's last verified announcement.
//! - `codec` (private): the byte encoding of values.

pub mod announced;
pub mod history;
pub mod ledger;
pub mod outbox;
pub mod peers;

mod codec;

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
    WriteTransaction,
};

pub use announced::LastAnnounced;
pub use ledger::{ImapPosition, ImapStart, MailOutcome, Pop3Seen};
pub use outbox::{Due, FailureKind, Generation, OutboxEntry, OutboxState, Policy};
pub use peers::RuntimePeer;

/// The format of the database as a whole, stored in the `meta` table.
/// Version 1: the tables `meta`, `outbox`, `imap`, `pop3`, `history`,
/// `peers`, each value starting with its own version byte (1). (`peers`
/// came later; it is created when missing, and a peerd from before it
/// ignores it.)
pub const FORMAT: u64 = 1;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const META_FORMAT: &str = "format";

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database is open in another process (or another handle in this
    /// one): two couriers must never work on the same outbox.
    #[error("another peerd is using this state dir ({} is locked)", path.display())]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// The file is not a redb database, or it is damaged (truncated,
    /// overwritten), or it is a redb database of someone else's.
    #[error(
        "{}: not a peerd state database, or damaged ({detail}); move it aside to start over \
         (the outbox and the mail ledger are then rebuilt from scratch)",
        path.display()
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What redb or the format check said.
        detail: String,
    },
    /// The file was written by a newer peerd, in a format this one does
    /// not know.
    #[error("{}: state format {found} is newer than this peerd knows ({FORMAT}); upgrade peerd", path.display())]
    NewerFormat {
        /// The database file.
        path: PathBuf,
        /// The format found in the file.
        found: u64,
    },
    /// The file could not be created or opened.
    #[error("{}: {source}", path.display())]
    Io {
        /// The database file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A stored value does not decode: damage, or a newer peerd's record.
    #[error("state database, table {table}, key {key}: {problem}")]
    Undecodable {
        /// The table.
        table: &'static str,
        /// The key, as text.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// `add_peer`: a runtime peer with this name exists already.
    #[error("peer {0} is in the address book already (remove it first to change it)")]
    PeerExists(peerd_core::PeerName),
    /// `add_peer`: another runtime peer has this public key.
    #[error(
        "peer {name} would have the same public key as peer {other}; every host has its own key"
    )]
    KeyInUse {
        /// The peer being added.
        name: peerd_core::PeerName,
        /// The peer that has the key.
        other: peerd_core::PeerName,
    },
    /// More candidates than an intent may hold.
    #[error("an intent holds at most {max} candidates, not {0}", max = outbox::MAX_CANDIDATES)]
    TooManyCandidates(usize),
    /// redb failed while reading or committing.
    #[error("state database: {0}")]
    Database(#[source] Box<redb::Error>),
}

impl StateError {
    pub(crate) fn db(e: impl Into<redb::Error>) -> Self {
        Self::Database(Box::new(e.into()))
    }
}

/// The open state database. One per process: opening takes redb's lock on
/// the file. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Store {
    db: Database,
    path: PathBuf,
    /// Jitter for retry backoff; behind a mutex so `&self` methods can draw.
    rng: Mutex<fastrand::Rng>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// The database's file name in the state dir.
    pub const FILE_NAME: &'static str = "peerd.redb";

    /// Opens (creating if needed) `state_dir/peerd.redb`. The directory
    /// must exist.
    pub fn open_in(state_dir: &Path) -> Result<Self, StateError> {
        Self::open(&state_dir.join(Self::FILE_NAME))
    }

    /// Opens (creating if needed) the database at `path`.
    ///
    /// A new file is created with mode 0600 (it holds peers' addresses).
    /// An existing empty file is initialised as a new database (a crash
    /// during the very first open can leave one); any other file that is
    /// not a complete peerd database is refused with
    /// [`StateError::Damaged`]. Every page's checksum is verified on open,
    /// so damage is found here rather than in the middle of an operation.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let path = path.to_path_buf();
        let io_err = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => {},
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {},
            Err(e) => return Err(io_err(e)),
        }
        // Verifying every page on open turns a file damaged behind redb's
        // back into an error here; without it, redb may panic on a damaged
        // page later. The file is small, so this costs little.
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|e| open_error(&path, e))?;
        let store = Self {
            db,
            path,
            rng: Mutex::new(fastrand::Rng::new()),
        };
        store.init()?;
        Ok(store)
    }

    /// Checks the format, and creates every table so readers find them.
    fn init(&self) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(StateError::db)?;
        let others = txn
            .list_tables()
            .map_err(StateError::db)?
            .filter(|t| t.name() != "meta")
            .count();
        {
            let mut meta = txn.open_table(META).map_err(StateError::db)?;
            let found = meta
                .get(META_FORMAT)
                .map_err(StateError::db)?
                .map(|v| v.value());
            match found {
                Some(FORMAT) => {},
                Some(found) if found > FORMAT => {
                    return Err(StateError::NewerFormat {
                        path: self.path.clone(),
                        found,
                    });
                },
                Some(found) => {
                    return Err(StateError::Damaged {
                        path: self.path.clone(),
                        detail: format!("unknown state format {found}"),
                    });
                },
                None if others > 0 => {
                    return Err(StateError::Damaged {
                        path: self.path.clone(),
                        detail: "a redb database without peerd's format marker".to_owned(),
                    });
                },
                None => {
                    meta.insert(META_FORMAT, FORMAT).map_err(StateError::db)?;
                },
            }
        }
        outbox::create_tables(&txn)?;
        ledger::create_tables(&txn)?;
        history::create_tables(&txn)?;
        peers::create_tables(&txn)?;
        announced::create_tables(&txn)?;
        txn.commit().map_err(StateError::db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the database, releasing its lock, and reports any error
    /// (dropping the store closes it too, ignoring errors).
    pub fn close(self) -> Result<(), StateError> {
        self.db.close().map_err(|e| open_error(&self.path, e))
    }

    /// Seeds the random jitter of retry backoff, for reproducible runs.
    pub fn seed_jitter(&self, seed: u64) {
        self.rng().seed(seed);
    }

    fn rng(&self) -> std::sync::MutexGuard<'_, fastrand::Rng> {
        // A panic while holding the lock cannot leave an Rng inconsistent.
        self.rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` in one write transaction and commits it (durably) if it
    /// returns `Ok`; an `Err` aborts, leaving the state as it was.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let txn = self.db.begin_write().map_err(StateError::db)?;
        let out = f(&txn)?;
        txn.commit().map_err(StateError::db)?;
        Ok(out)
    }

    /// Runs `f` in one read transaction.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let txn = self.db.begin_read().map_err(StateError::db)?;
        f(&txn)
    }
}

fn open_error(path: &Path, e: redb::DatabaseError) -> StateError {
    use redb::{DatabaseError as D, StorageError as S};
    let damaged = |detail: String| StateError::Damaged {
        path: path.to_path_buf(),
        detail,
    };
    match e {
        D::DatabaseAlreadyOpen | D::LockProtocolMismatch => StateError::InUse {
            path: path.to_path_buf(),
        },
        D::Storage(S::Io(source)) if source.kind() == io::ErrorKind::InvalidData => {
            damaged(source.to_string())
        },
        D::Storage(S::Io(source)) if source.kind() == io::ErrorKind::UnexpectedEof => {
            damaged(format!("the file is cut short: {source}"))
        },
        D::Storage(S::Io(source)) => StateError::Io {
            path: path.to_path_buf(),
            source,
        },
        D::Storage(S::Corrupted(detail)) => damaged(detail),
        D::RepairAborted => damaged("it needs a repair that could not be done".to_owned()),
        D::UpgradeRequired(v) => damaged(format!("redb file format {v} is too old")),
        other => StateError::db(other),
    }
}
