//! Peer and service names.
//!
//! A name ends up in file names, D-Bus object paths, hook environment
//! variables and log lines. One strict rule, `[a-z0-9_-]{1,32}`, makes it
//! safe in all of them without any escaping, so the rule is enforced when a
//! name is made and a name can only be made through the rule.

use std::fmt;
use std::str::FromStr;

/// The longest name allowed.
pub const MAX_NAME_LEN: usize = 32;

/// Why a string is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("a name cannot be empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("a name has at most {MAX_NAME_LEN} characters, this one has {0}")]
    TooLong(usize),
    /// The name contains a character outside `[a-z0-9_-]`.
    #[error("a name may contain only a-z, 0-9, '_' and '-', not {0:?}")]
    BadChar(char),
}

fn check(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(c) = s
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
    {
        return Err(NameError::BadChar(c));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(s.len()));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                check(s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                check(&s)?;
                Ok(Self(s))
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// The name of a peer in the address book (`hitoshi`, `me-on-phone`).
    PeerName
);
name_type!(
    /// The name of a service peers may open a stream to (`ssh`).
    ServiceName
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["alice", "me-on-phone", "cam_01", "a", &"x".repeat(32)] {
            assert_eq!(ok.parse::<PeerName>().unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_everything_else_with_the_reason() {
        assert_eq!("".parse::<PeerName>(), Err(NameError::Empty));
        assert_eq!(
            "x".repeat(33).parse::<PeerName>(),
            Err(NameError::TooLong(33))
        );
        assert_eq!("Alice".parse::<PeerName>(), Err(NameError::BadChar('A')));
        assert_eq!("a b".parse::<ServiceName>(), Err(NameError::BadChar(' ')));
        assert_eq!("../x".parse::<PeerName>(), Err(NameError::BadChar('.')));
        assert_eq!("é".parse::<PeerName>(), Err(NameError::BadChar('é')));
        assert_eq!("a\nb".parse::<PeerName>(), Err(NameError::BadChar('\n')));
    }

    #[test]
    fn deserializing_validates() {
        use serde::Deserialize;
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error, StrDeserializer};
        let de: StrDeserializer<'_, Error> = "Bad Name".into_deserializer();
        assert!(PeerName::deserialize(de).is_err());
        let de: StrDeserializer<'_, Error> = "good-name".into_deserializer();
        assert_eq!(PeerName::deserialize(de).unwrap().as_str(), "good-name");
    }

    proptest! {
        #[test]
        fn any_string_either_parses_to_itself_or_is_refused(s in ".{0,40}") {
            match s.parse::<PeerName>() {
                Ok(n) => {
                    prop_assert_eq!(n.as_str(), s.as_str());
                    prop_assert!(s.len() <= MAX_NAME_LEN);
                    prop_assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'));
                }
                Err(_) => prop_assert!(s.is_empty() || s.len() > MAX_NAME_LEN
                    || s.chars().any(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))),
            }
        }
    }
}
