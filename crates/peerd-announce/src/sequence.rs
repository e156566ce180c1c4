//! Sequence numbers: strictly increasing per sender, across restarts.
//!
//! `seq = max(last_sent + 1, now in microseconds)`. The clock term means a
//! host restored from backup, or reinstalled with its old key, still sends
//! numbers above anything its peers saw, and the persisted term means a
//! clock that steps back never makes a number repeat. A clock before 2020
//! is taken as not set (a box without a real-time clock, before NTP): such
//! a host does not announce at all.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 2020-01-01T00:00:00Z: clocks reading earlier are not set.
pub const CLOCK_FLOOR: u64 = 1_577_836_800;

/// Why no sequence number could be had.
#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    /// The clock reads before 2020.
    #[error("the system clock is not set (it reads before 2020); not announcing until it is")]
    ClockNotSet,
    /// The counter would overflow (only a corrupt or hostile file gets here).
    #[error("the sequence counter is exhausted")]
    Exhausted,
    /// The counter file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The counter file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The counter file does not hold a number.
    #[error("{}: not a sequence counter (expected one decimal number); move it aside to start over", path.display())]
    Corrupt {
        /// The counter file.
        path: PathBuf,
    },
}

/// Microseconds since the epoch, or `ClockNotSet` before 2020.
pub fn clock_micros(now: SystemTime) -> Result<u64, SequenceError> {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    if since.as_secs() < CLOCK_FLOOR {
        return Err(SequenceError::ClockNotSet);
    }
    u64::try_from(since.as_micros()).map_err(|_| SequenceError::Exhausted)
}

/// The next sequence number after `last_sent`, at time `now`.
pub fn next_sequence(last_sent: Option<u64>, now: SystemTime) -> Result<u64, SequenceError> {
    let clock = clock_micros(now)?;
    match last_sent {
        None => Ok(clock),
        Some(last) => Ok(last
            .checked_add(1)
            .ok_or(SequenceError::Exhausted)?
            .max(clock)),
    }
}

/// The persisted counter: one decimal number in a file in the state dir,
/// replaced atomically (write, fsync, rename, fsync the directory) before a
/// number is handed out, so a crash can never hand the same number twice.
#[derive(Debug)]
pub struct SequenceFile {
    path: PathBuf,
}

impl SequenceFile {
    /// The counter in `state_dir/sequence`.
    pub fn in_dir(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("sequence"),
        }
    }

    fn io(&self, source: io::Error) -> SequenceError {
        SequenceError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// The last number handed out, if any.
    pub fn last(&self) -> Result<Option<u64>, SequenceError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| SequenceError::Corrupt {
                    path: self.path.clone(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Hands out the next number, after it is safely on disk.
    pub fn next(&mut self, now: SystemTime) -> Result<u64, SequenceError> {
        let seq = next_sequence(self.last()?, now)?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("tmp");
        let mut file = fs::File::create(&tmp).map_err(|e| self.io(e))?;
        writeln!(file, "{seq}").map_err(|e| self.io(e))?;
        file.sync_all().map_err(|e| self.io(e))?;
        fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(e))?;
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn follows_the_clock_and_never_repeats() {
        let t = 1_700_000_000;
        assert_eq!(next_sequence(None, at(t)).unwrap(), t * 1_000_000);
        // last sent is ahead of the clock (clock stepped back): last + 1
        let ahead = (t + 100) * 1_000_000;
        assert_eq!(next_sequence(Some(ahead), at(t)).unwrap(), ahead + 1);
        // clock is ahead: the clock
        assert_eq!(next_sequence(Some(5), at(t)).unwrap(), t * 1_000_000);
    }

    #[test]
    fn refuses_an_unset_clock() {
        assert!(matches!(
            next_sequence(None, at(CLOCK_FLOOR - 1)),
            Err(SequenceError::ClockNotSet)
        ));
        assert!(next_sequence(None, at(CLOCK_FLOOR)).is_ok());
        assert!(matches!(
            next_sequence(Some(u64::MAX), at(1_700_000_000)),
            Err(SequenceError::Exhausted)
        ));
    }

    #[test]
    fn the_file_survives_a_restart_and_a_clock_step_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut seq = SequenceFile::in_dir(dir.path());
        assert_eq!(seq.last().unwrap(), None);
        let a = seq.next(at(1_700_000_000)).unwrap();
        drop(seq);
        let mut again = SequenceFile::in_dir(dir.path());
        assert_eq!(again.last().unwrap(), Some(a));
        let b = again.next(at(1_600_000_000)).unwrap();
        assert_eq!(b, a + 1);
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("sequence"), "twelve\n").unwrap();
        let mut seq = SequenceFile::in_dir(dir.path());
        let err = seq.next(at(1_700_000_000)).unwrap_err();
        assert!(err.to_string().contains("not a sequence counter"), "{err}");
        assert_eq!(
            fs::read_to_string(dir.path().join("sequence")).unwrap(),
            "twelve\n"
        );
    }
}
