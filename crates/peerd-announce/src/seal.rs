//! Sealing: the signed payload encrypted to the recipient with HPKE.
//!
//! RFC 9180 in Base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and
//! ChaCha20-Poly1305. The X25519 keys are the Ed25519 identities converted
//! (RFC 7748 birational map); because that map sends `P` and `-P` to the
//! same X25519 key, both Ed25519 identities are bound into HPKE's `info`,
//! and the signature inside covers them too. Base mode plus a signature is
//! preferred to HPKE's Auth mode, which alone allows key-compromise
//! impersonation (whoever steals the recipient's key could forge messages
//! to it from anyone).
//!
//! ```text
//! offset  size  field
//!      0     1  envelope version (1)
//!      1     1  suite (1 = X25519-HKDF-SHA256 / HKDF-SHA256 / ChaCha20-Poly1305)
//!      2    32  sender's Ed25519 public key
//!     34    32  recipient's Ed25519 public key
//!     66    32  HPKE encapsulated key (enc)
//!     98     n  ciphertext: the signed payload, n = payload length + 16
//! ```
//! `info = "peerd/v1/seal\0" || sender key || recipient key`,
//! `aad = bytes 0..66` of the envelope.
//!
//! The two keys travel in the clear so a receiver can refuse mail that is
//! not for it, or from a stranger, before doing any cryptography. They are
//! public keys; the mail's From and To already say as much.

use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use peerd_core::key::PUBLIC_KEY_LEN;
use peerd_core::{Identity, PublicKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::message::{EncodeError, Message};

type Kem = X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

/// The envelope format version.
pub const ENVELOPE_VERSION: u8 = 1;
/// The only suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305.
pub const SUITE: u8 = 1;
/// Envelope bytes that are authenticated as HPKE's `aad`.
const HEADER_LEN: usize = 2 + 2 * PUBLIC_KEY_LEN;
const ENC_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// The largest envelope accepted; a full announcement seals to about 650 bytes.
pub const MAX_ENVELOPE_LEN: usize = 4096;
const INFO_PREFIX: &[u8] = b"peerd/v1/seal\0";

/// Why a message could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The message itself is not valid.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// HPKE failed (the recipient key is not usable for X25519).
    #[error("cannot encrypt to this recipient: {0}")]
    Hpke(String),
    /// The system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// Hands HPKE its key material as a byte stream: the 32 bytes of `ikmE`
/// first (all that DHKEM(X25519) asks for), then, should a future KEM ask
/// for more, blocks of SHA-256(ikm || block number).
struct IkmSource {
    seed: Zeroizing<[u8; 32]>,
    pos: u64,
}

impl IkmSource {
    fn block(&self, n: u64) -> Zeroizing<[u8; 32]> {
        if n == 0 {
            return self.seed.clone();
        }
        Zeroizing::new(
            Sha256::new()
                .chain_update(self.seed.as_ref())
                .chain_update(n.to_be_bytes())
                .finalize()
                .into(),
        )
    }
}

impl hpke::rand_core::TryRng for IkmSource {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, mut dst: &mut [u8]) -> Result<(), Self::Error> {
        while !dst.is_empty() {
            let block = self.block(self.pos / 32);
            let start = usize::try_from(self.pos % 32).unwrap_or(0);
            let n = dst.len().min(32 - start);
            let (head, rest) = dst.split_at_mut(n);
            head.copy_from_slice(&block[start..start + n]);
            dst = rest;
            self.pos += n as u64;
        }
        Ok(())
    }
}

impl hpke::rand_core::TryCryptoRng for IkmSource {}

fn info(sender: &[u8; PUBLIC_KEY_LEN], recipient: &[u8; PUBLIC_KEY_LEN]) -> Vec<u8> {
    [INFO_PREFIX, sender, recipient].concat()
}

/// Signs `message` with `identity` and seals it to `message.recipient`.
pub fn seal(identity: &Identity, message: &Message) -> Result<Vec<u8>, SealError> {
    let mut ikm = Zeroizing::new([0u8; 32]);
    getrandom::fill(ikm.as_mut()).map_err(|e| SealError::Random(e.to_string()))?;
    seal_with_ikm(identity, message, &ikm)
}

/// [`seal`] with HPKE's ephemeral input keying material (`ikmE`, RFC 9180
/// section 7.1.3) given instead of drawn at random. Only test vectors
/// should pass a fixed value: reusing an `ikmE` reuses the ephemeral key.
pub fn seal_with_ikm(
    identity: &Identity,
    message: &Message,
    ikm: &[u8; 32],
) -> Result<Vec<u8>, SealError> {
    let payload = message.sign(identity)?;
    seal_payload(&message.sender, &message.recipient, &payload, ikm)
}

/// Seals an already signed payload (tests use it to seal what an attacker
/// could: anything, to anyone, but without the sender's signing key).
pub(crate) fn seal_payload(
    sender: &PublicKey,
    recipient: &PublicKey,
    payload: &[u8],
    ikm: &[u8; 32],
) -> Result<Vec<u8>, SealError> {
    let mut rng = IkmSource {
        seed: Zeroizing::new(*ikm),
        pos: 0,
    };
    let recipient_hpke = <Kem as hpke::Kem>::PublicKey::from_bytes(&recipient.x25519())
        .map_err(|e| SealError::Hpke(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + ENC_LEN + payload.len() + TAG_LEN);
    out.push(ENVELOPE_VERSION);
    out.push(SUITE);
    out.extend_from_slice(sender.as_bytes());
    out.extend_from_slice(recipient.as_bytes());
    let (enc, ciphertext) = hpke::single_shot_seal_with_rng::<Aead, Kdf, Kem>(
        &OpModeS::Base,
        &recipient_hpke,
        &info(sender.as_bytes(), recipient.as_bytes()),
        payload,
        &out[..HEADER_LEN],
        &mut rng,
    )
    .map_err(|e| SealError::Hpke(e.to_string()))?;
    out.extend_from_slice(&enc.to_bytes());
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Why bytes are not an envelope we can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnvelopeError {
    Version(u8),
    Suite(u8),
    Malformed(&'static str),
}

/// An envelope split into its parts, not yet opened.
#[derive(Debug)]
pub(crate) struct Envelope<'a> {
    pub(crate) sender: [u8; PUBLIC_KEY_LEN],
    pub(crate) recipient: [u8; PUBLIC_KEY_LEN],
    header: &'a [u8],
    enc: &'a [u8],
    ciphertext: &'a [u8],
}

pub(crate) fn parse(bytes: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    if bytes.len() > MAX_ENVELOPE_LEN {
        return Err(EnvelopeError::Malformed("sealed part is too large"));
    }
    let Some(&version) = bytes.first() else {
        return Err(EnvelopeError::Malformed("sealed part is empty"));
    };
    if version != ENVELOPE_VERSION {
        return Err(EnvelopeError::Version(version));
    }
    let Some(&suite) = bytes.get(1) else {
        return Err(EnvelopeError::Malformed("sealed part is truncated"));
    };
    if suite != SUITE {
        return Err(EnvelopeError::Suite(suite));
    }
    if bytes.len() < HEADER_LEN + ENC_LEN + TAG_LEN {
        return Err(EnvelopeError::Malformed("sealed part is truncated"));
    }
    let mut sender = [0u8; PUBLIC_KEY_LEN];
    sender.copy_from_slice(&bytes[2..2 + PUBLIC_KEY_LEN]);
    let mut recipient = [0u8; PUBLIC_KEY_LEN];
    recipient.copy_from_slice(&bytes[2 + PUBLIC_KEY_LEN..HEADER_LEN]);
    Ok(Envelope {
        sender,
        recipient,
        header: &bytes[..HEADER_LEN],
        enc: &bytes[HEADER_LEN..HEADER_LEN + ENC_LEN],
        ciphertext: &bytes[HEADER_LEN + ENC_LEN..],
    })
}

impl Envelope<'_> {
    /// Decrypts with our identity, binding the sender's key as it is in the
    /// address book. `None` if anything was altered or it is not for us.
    pub(crate) fn open(&self, identity: &Identity, sender: &PublicKey) -> Option<Vec<u8>> {
        let secret =
            <Kem as hpke::Kem>::PrivateKey::from_bytes(identity.x25519_secret().as_ref()).ok()?;
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(self.enc).ok()?;
        hpke::single_shot_open::<Aead, Kdf, Kem>(
            &OpModeR::Base,
            &secret,
            &enc,
            &info(sender.as_bytes(), identity.public_key().as_bytes()),
            self.ciphertext,
            self.header,
        )
        .ok()
    }
}
