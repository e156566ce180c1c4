//! Opening the database: the lock, damaged files, foreign files, formats.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peerd_core::{Candidate, CandidateKind, PeerName};
use peerd_state::{Policy, StateError, Store};

fn t(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

fn hitoshi() -> PeerName {
    "hitoshi".parse().expect("a peer name")
}

fn cands() -> Vec<Candidate> {
    vec![
        Candidate::new(
            "203.0.113.7:7447".parse().expect("an address"),
            CandidateKind::Host,
        )
        .expect("announceable"),
    ]
}

/// A database with some of everything in it, closed.
fn filled(dir: &std::path::Path) -> std::path::PathBuf {
    let s = Store::open_in(dir).expect("a new store");
    for i in 0..200 {
        let p: PeerName = format!("peer{i}").parse().expect("a peer name");
        s.set_intent(&p, &cands(), false, t(i)).expect("an intent");
        s.record_pop3(
            "acct",
            &format!("uidl-{i}"),
            &peerd_state::MailOutcome::NotOurs,
            t(i),
        )
        .expect("a ledger entry");
    }
    let path = s.path().to_path_buf();
    s.close().expect("a clean close");
    path
}

#[test]
fn a_second_open_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open_in(dir.path()).unwrap();
    let err = Store::open_in(dir.path()).unwrap_err();
    assert!(matches!(err, StateError::InUse { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("another peerd is using this state dir") && msg.contains("peerd.redb"),
        "{msg}"
    );
    first.close().unwrap();
    Store::open_in(dir.path()).unwrap();
}

#[test]
fn a_new_database_is_private_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    let mode = fs::metadata(s.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(s.path(), dir.path().join(Store::FILE_NAME));
}

#[test]
fn a_missing_state_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open_in(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(err, StateError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nope/peerd.redb"), "{err}");
}

#[test]
fn an_empty_file_becomes_a_new_database() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(Store::FILE_NAME), b"").unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    assert!(s.entries(&Policy::default(), t(0)).unwrap().is_empty());
}

fn assert_damaged(err: StateError) {
    assert!(matches!(err, StateError::Damaged { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(".redb: not a peerd state database, or damaged")
            && msg.contains("move it aside"),
        "{msg}"
    );
}

#[test]
fn a_truncated_database_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = filled(dir.path());
    let len = fs::metadata(&path).unwrap().len();
    for keep in [len / 2, 4096, 100, 1] {
        let bytes = fs::read(&path).unwrap();
        let cut = dir.path().join("cut.redb");
        fs::write(&cut, &bytes[..usize::try_from(keep).unwrap()]).unwrap();
        match Store::open(&cut) {
            Err(err) => assert_damaged(err),
            Ok(s) => panic!("a database cut to {keep} of {len} bytes opened: {s:?}"),
        }
    }
}

#[test]
fn a_file_of_garbage_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(Store::FILE_NAME);
    let mut rng = fastrand::Rng::with_seed(3);
    let garbage: Vec<u8> = (0..64 * 1024).map(|_| rng.u8(..)).collect();
    fs::File::create(&path)
        .unwrap()
        .write_all(&garbage)
        .unwrap();
    assert_damaged(Store::open(&path).unwrap_err());
    fs::write(&path, b"[announce]\nresend = \"10m\"\n").unwrap();
    assert_damaged(Store::open(&path).unwrap_err());
}

#[test]
fn a_damaged_header_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = filled(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    // Both commit slots of the header.
    for b in &mut bytes[8..512] {
        *b ^= 0x5a;
    }
    fs::write(&path, &bytes).unwrap();
    assert_damaged(Store::open(&path).unwrap_err());
}

#[test]
fn another_programs_redb_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(Store::FILE_NAME);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<u64, u64>::new("theirs"))
            .unwrap()
            .insert(1, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    assert_damaged(err);
}

#[test]
fn a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = Store::open_in(dir.path()).unwrap().path().to_path_buf();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, u64>::new("meta"))
            .unwrap()
            .insert("format", peerd_state::FORMAT + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(err, StateError::NewerFormat { found: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade peerd"), "{err}");
}

#[test]
fn the_store_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Store>();
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(Store::open_in(dir.path()).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let p: PeerName = format!("p{i}").parse().unwrap();
                for n in 0..10 {
                    s.set_intent(&p, &cands(), n % 2 == 0, t(n)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(s.outbox_size().unwrap(), 4);
    assert!(
        s.entry(&hitoshi(), &Policy::default(), t(0))
            .unwrap()
            .is_none()
    );
}

#[test]
fn damaged_pages_give_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = filled(dir.path());
    let pristine = fs::read(&path).unwrap();
    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for offset in (4096..pristine.len()).step_by(1024) {
        let mut bytes = pristine.clone();
        for b in &mut bytes[offset..(offset + 64).min(pristine.len())] {
            *b ^= 0xa5;
        }
        let path = dir.path().join(format!("hurt-{offset}.redb"));
        fs::write(&path, &bytes).unwrap();
        let result = std::panic::catch_unwind(|| {
            let s = Store::open(&path)?;
            s.entries(&Policy::default(), t(0))?;
            s.pop3_seen("acct")?;
            s.history()?;
            s.set_intent(&hitoshi(), &cands(), false, t(0))?;
            Ok::<_, StateError>(())
        });
        let what = match result {
            Ok(Ok(())) => "unharmed",
            Ok(Err(StateError::Damaged { .. })) => "refused as damaged",
            Ok(Err(e)) => panic!("damage at offset {offset}: unexpected error {e:?}"),
            Err(_) => panic!("a panic with damage at offset {offset}"),
        };
        *outcomes.entry(what).or_default() += 1;
    }
    // Damage to free pages is harmless; damage to live ones is found.
    assert!(outcomes["refused as damaged"] > 10, "{outcomes:?}");
}
