//! Domain types shared by every part of peerd.
//!
//! These are the words the rest of the code speaks: who a peer is (its
//! [`PeerName`] and [`PublicKey`]), who we are ([`Identity`]), and what kind
//! of address we may tell a peer about ([`AddressClass`], [`Candidate`]).
//! Everything here validates on construction, so a value of one of these
//! types is known to be well-formed wherever it travels (logs, hooks, D-Bus,
//! mail). No async, no network.
//!
//! # Layout
//! - [`name`]: peer and service names (`[a-z0-9_-]{1,32}`).
//! - [`key`]: public keys as users paste them, fingerprints for reading
//!   aloud, the host identity and its key file, signature contexts.
//! - [`address`]: address classes (public, CGNAT, private, ...) and
//!   connection candidates.
//! - [`mail`]: plausible mail addresses (`local@domain`, header-safe).

pub mod address;
pub mod key;
pub mod mail;
pub mod name;

pub use address::{
    AddressClass, AddressFlags, AddressSnapshot, Candidate, CandidateKind, InterfaceAddress,
};
pub use key::{Fingerprint, Identity, IdentityError, KeyError, PublicKey, SignatureContext};
pub use mail::{MailAddress, MailAddressError};
pub use name::{NameError, PeerName, ServiceName};
