//! Points in time on the wire: RFC 3339 in UTC, to the second.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last second humantime (and RFC 3339) can write: 9999-12-31T23:59:59Z.
const MAX_SECS: u64 = 253_402_300_799;

/// A point in time, whole seconds since the Unix epoch, written as RFC 3339
/// in UTC (`2026-11-26T09:30:00Z`).
///
/// Made from a [`SystemTime`], it is clamped to 1970..=9999, so it can
/// always be written; read from the wire, anything that is not such a
/// string is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// Now, by the system clock.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// `secs` seconds after the epoch (clamped to the year 9999).
    pub fn from_unix_secs(secs: u64) -> Self {
        Self(secs.min(MAX_SECS))
    }

    /// Seconds since the epoch.
    pub fn unix_secs(self) -> u64 {
        self.0
    }

    /// The same instant as a [`SystemTime`].
    pub fn system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.0)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        // Before the epoch (a clock not yet set): the epoch.
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self::from_unix_secs(secs)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // In range by construction, so humantime cannot fail or panic.
        write!(
            f,
            "{}",
            humantime::format_rfc3339_seconds(self.system_time())
        )
    }
}

/// Why a string is not a [`Timestamp`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a time in RFC 3339 (like 2026-11-26T09:30:00Z): {0}")]
pub struct TimestampError(String);

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, TimestampError> {
        let t = humantime::parse_rfc3339(s).map_err(|e| TimestampError(e.to_string()))?;
        Ok(Self::from(t))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_rfc3339() {
        let t = Timestamp::from_unix_secs(1_795_000_000);
        assert_eq!(t.to_string(), "2026-11-18T11:06:40Z");
        assert_eq!("2026-11-18T11:06:40Z".parse::<Timestamp>().unwrap(), t);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-11-18T11:06:40Z\""
        );
    }

    #[test]
    fn clamps_what_cannot_be_written() {
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(Timestamp::from(before).to_string(), "1970-01-01T00:00:00Z");
        let far = Timestamp::from_unix_secs(u64::MAX);
        assert_eq!(far.to_string(), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn refuses_other_strings() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "1795000000",
            "2026-11-18 07:06:40",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<Timestamp>("1795000000").is_err());
    }
}
