//! The sealed announcement: how one peer tells another where it is.
//!
//! A host that learns a new address writes a [`Message`] (its addresses,
//! a sequence number, an issue and an expiry time), signs it with its
//! identity key, seals it to the peer's key with HPKE, and mails it. The
//! peer's mail courier hands the raw mail to a [`Receiver`], which either
//! accepts it or says exactly why not ([`Rejection`]). The addresses never
//! appear in the stored mail in any form. `docs/protocol.md` describes the
//! format byte by byte, with a test vector.
//!
//! # Layout
//! - [`message`]: the signed payload, its binary layout and kinds.
//! - [`seal`](mod@seal): HPKE sealing to the recipient, the envelope layout.
//! - [`mail`]: the RFC 5322 mail around it; plain mail for `plain` peers.
//! - [`verify`]: receiving: every check, in order, and their outcomes.
//! - [`sequence`]: sequence numbers that only go up, persisted.

pub mod mail;
pub mod message;
pub mod seal;
pub mod sequence;
pub mod verify;

#[cfg(fuzzing)]
#[allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]
pub mod fuzzing;

use std::time::{Duration, SystemTime};

pub use mail::{MailHeaders, new_message_id, plain_mail, sealed_mail};
pub use message::{Body, EncodeError, Message, MessageKind};
pub use seal::{SealError, seal, seal_with_ikm};
pub use sequence::{SequenceError, SequenceFile, next_sequence};
pub use verify::{
    Accepted, Hint, History, KnownPeer, LastAccepted, Received, Receiver, Rejected, Rejection,
    escape_address,
};

use peerd_core::{Candidate, Identity, PublicKey};

/// Why an outgoing message could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OutgoingError {
    /// No sequence number (clock not set, counter unusable).
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    /// The message is invalid or could not be sealed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The mail could not be built.
    #[error(transparent)]
    Mail(#[from] mail::MailError),
}

/// An announcement from `identity` to `recipient`, issued `now`, valid for
/// `valid_for`, carrying `candidates`, numbered `sequence`.
pub fn announcement(
    identity: &Identity,
    recipient: PublicKey,
    sequence: u64,
    now: SystemTime,
    valid_for: Duration,
    candidates: Vec<Candidate>,
) -> Result<Message, SequenceError> {
    let issued_at = sequence::clock_micros(now)? / 1_000_000;
    Ok(Message {
        sender: identity.public_key(),
        recipient,
        sequence,
        issued_at,
        expires_at: issued_at.saturating_add(valid_for.as_secs().max(1)),
        body: Body::Announcement(candidates),
    })
}

#[cfg(test)]
mod tests;
