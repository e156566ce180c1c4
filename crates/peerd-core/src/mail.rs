//! Mail addresses.
//!
//! peerd puts addresses into `From:` and `To:` headers, the address book,
//! hook environments and logs. [`MailAddress`] is a deliberately plain
//! check, not a full RFC 5322 parser: one `local@domain`, no display name,
//! no quoted local part, no comments, no whitespace and no control
//! characters (so it can never break a header or a log line), at most 254
//! bytes (the longest address SMTP can carry, RFC 5321 section 4.5.3.1.3).
//! Dots in the local part are not policed: some providers hand out
//! addresses such as `taro..yamada@...` that strict parsers refuse.

use std::fmt;
use std::str::FromStr;

/// The longest address allowed, in bytes.
pub const MAX_ADDRESS_LEN: usize = 254;
/// The longest local part (before the `@`) allowed, in bytes.
pub const MAX_LOCAL_LEN: usize = 64;

/// Why a string is not a plausible mail address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailAddressError {
    /// The text is empty.
    #[error("a mail address cannot be empty")]
    Empty,
    /// The address is longer than [`MAX_ADDRESS_LEN`].
    #[error("a mail address has at most {MAX_ADDRESS_LEN} bytes, this one has {0}")]
    TooLong(usize),
    /// There is no `@`, or more than one.
    #[error("a mail address has exactly one '@', like name@example.org")]
    At,
    /// The part before the `@` is empty or longer than [`MAX_LOCAL_LEN`].
    #[error("the part before '@' must have 1 to {MAX_LOCAL_LEN} bytes")]
    LocalPart,
    /// The domain is empty or has an empty, too long or badly formed label.
    #[error("the part after '@' must be a domain name like example.org")]
    Domain,
    /// A character that never belongs in a bare address.
    #[error("a mail address cannot contain {0:?}")]
    BadChar(char),
}

/// A plausible mail address, `local@domain` (see the module docs for the
/// exact rule).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct MailAddress(String);

fn check(s: &str) -> Result<(), MailAddressError> {
    if s.is_empty() {
        return Err(MailAddressError::Empty);
    }
    if let Some(c) = s
        .chars()
        .find(|&c| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\".contains(c))
    {
        return Err(MailAddressError::BadChar(c));
    }
    if s.len() > MAX_ADDRESS_LEN {
        return Err(MailAddressError::TooLong(s.len()));
    }
    let Some((local, domain)) = s.split_once('@') else {
        return Err(MailAddressError::At);
    };
    if domain.contains('@') {
        return Err(MailAddressError::At);
    }
    if local.is_empty() || local.len() > MAX_LOCAL_LEN {
        return Err(MailAddressError::LocalPart);
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    };
    if domain.is_empty() || !domain.split('.').all(label_ok) {
        return Err(MailAddressError::Domain);
    }
    Ok(())
}

impl MailAddress {
    /// The address as typed.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`.
    pub fn local_part(&self) -> &str {
        self.0.split_once('@').map_or("", |(l, _)| l)
    }

    /// The part after the `@`.
    pub fn domain(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, d)| d)
    }
}

impl FromStr for MailAddress {
    type Err = MailAddressError;
    fn from_str(s: &str) -> Result<Self, MailAddressError> {
        check(s)?;
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for MailAddress {
    type Error = MailAddressError;
    fn try_from(s: String) -> Result<Self, MailAddressError> {
        check(&s)?;
        Ok(Self(s))
    }
}

impl From<MailAddress> for String {
    fn from(a: MailAddress) -> String {
        a.0
    }
}

impl AsRef<str> for MailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in [
            "alice@isp-a.example",
            "me+peerd@example.org",
            "taro..yamada@docomo.ne.jp",
            "a@localhost",
            "user_1@sub.mail.example.co.uk",
            "müller@bücher.example",
        ] {
            let a: MailAddress = ok.parse().unwrap();
            assert_eq!(a.as_str(), ok);
        }
        let a: MailAddress = "alice@isp-a.example".parse().unwrap();
        assert_eq!((a.local_part(), a.domain()), ("alice", "isp-a.example"));
    }

    #[test]
    fn refuses_with_the_reason() {
        use MailAddressError as E;
        let cases: [(&str, MailAddressError); 13] = [
            ("", E::Empty),
            ("alice", E::At),
            ("a@b@c", E::At),
            ("@example.org", E::LocalPart),
            ("alice@", E::Domain),
            ("alice@.example", E::Domain),
            ("alice@example.", E::Domain),
            ("alice@-x.example", E::Domain),
            ("alice @example.org", E::BadChar(' ')),
            ("alice@example.org\r\nBcc: x@y", E::BadChar('\r')),
            ("Alice <alice@example.org>", E::BadChar(' ')),
            ("<alice@example.org>", E::BadChar('<')),
            ("a\0@example.org", E::BadChar('\0')),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<MailAddress>(), Err(want), "{s:?}");
        }
        let long = format!("{}@{}.example", "a".repeat(64), "b".repeat(200));
        assert_eq!(long.parse::<MailAddress>(), Err(E::TooLong(long.len())));
        let long_local = format!("{}@example.org", "a".repeat(65));
        assert_eq!(long_local.parse::<MailAddress>(), Err(E::LocalPart));
    }

    proptest! {
        #[test]
        fn an_accepted_address_is_header_safe(s in "\\PC{0,80}") {
            if let Ok(a) = s.parse::<MailAddress>() {
                prop_assert!(a.as_str().len() <= MAX_ADDRESS_LEN);
                prop_assert!(!a.as_str().chars().any(|c| c.is_control() || c.is_whitespace()));
                prop_assert_eq!(a.as_str().matches('@').count(), 1);
            }
        }
    }
}
