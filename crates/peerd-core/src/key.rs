//! Identity keys: the host's own key, peers' public keys, fingerprints.
//!
//! Every host has one long-term Ed25519 key. It signs announcements, signs
//! the TLS handshake of the peer channel, and (converted to X25519) receives
//! sealed announcements. Because one key serves several uses, every
//! signature peerd makes is over a [`SignatureContext`] prefix that names
//! its use, so a signature made for one use never verifies for another.
//!
//! Users exchange keys as text: the public key is the 44-character standard
//! base64 of its 32 bytes (as WireGuard does), and the [`Fingerprint`] is a
//! short hash for reading aloud. A fingerprint is never accepted where a key
//! is needed: it identifies a key but cannot be used to check a signature.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Length of a public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a signature in bytes.
pub const SIGNATURE_LEN: usize = 64;
/// Largest key file we read; a PKCS#8 PEM Ed25519 key is about 120 bytes.
const MAX_KEY_FILE_LEN: u64 = 4096;

/// What a signature is for: a prefix signed before the message.
///
/// Every context starts with `peerd/v1/` and ends with a NUL byte, so no
/// context is a prefix of another and none can be confused with the TLS 1.3
/// CertificateVerify context (64 spaces, then `TLS 1.3, ...`), which is the
/// other thing this key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureContext(&'static [u8]);

impl SignatureContext {
    /// Makes a context; the text must look like `peerd/v1/<use>\0`.
    ///
    /// # Panics
    /// At compile time (in a `const`) or at first use, if the text breaks
    /// that rule. Contexts are constants of this program, never input.
    pub const fn new(text: &'static str) -> Self {
        let b = text.as_bytes();
        assert!(b.len() > 10, "signature context too short");
        assert!(
            b[0] == b'p' && b[1] == b'e' && b[2] == b'e' && b[3] == b'r' && b[4] == b'd',
            "signature context must start with peerd/"
        );
        assert!(b[b.len() - 1] == 0, "signature context must end with NUL");
        Self(b)
    }

    /// The bytes that are signed before the message.
    pub fn as_bytes(&self) -> &'static [u8] {
        self.0
    }
}

/// Context of fingerprints (hashed, not signed, but kept apart the same way).
const FINGERPRINT_CONTEXT: &[u8] = b"peerd/v1/fingerprint\0";

/// Why a text is not a usable public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is a fingerprint, not the key itself.
    #[error(
        "this is a key fingerprint, not a key: paste the full public key (the first line of `peerd pubkey`)"
    )]
    Fingerprint,
    /// The text is not base64.
    #[error("a public key is 44 characters of base64 (the first line of `peerd pubkey`)")]
    NotBase64,
    /// The text decodes to the wrong number of bytes.
    #[error("a public key is 32 bytes, this one decodes to {0}")]
    WrongLength(usize),
    /// The bytes are not a point on the curve.
    #[error("not a valid Ed25519 public key")]
    NotOnCurve,
    /// The key has small order: anyone could forge signatures for it.
    #[error("a weak (small-order) Ed25519 key is refused")]
    Weak,
}

/// A peer's Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Takes a key from its 32 bytes, refusing invalid and weak keys.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::NotOnCurve)?;
        if key.is_weak() {
            return Err(KeyError::Weak);
        }
        Ok(Self(key))
    }

    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.0.as_bytes()
    }

    /// The short fingerprint users read aloud to check a key.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(FINGERPRINT_CONTEXT);
        h.update(self.as_bytes());
        let digest = h.finalize();
        let mut fp = [0u8; 10];
        fp.copy_from_slice(&digest[..10]);
        Fingerprint(fp)
    }

    /// Checks `signature` over `context || message` (strict verification:
    /// no malleable or small-order signatures).
    pub fn verify(
        &self,
        context: SignatureContext,
        message: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> bool {
        let signed = [context.as_bytes(), message].concat();
        self.0
            .verify_strict(&signed, &Signature::from_bytes(signature))
            .is_ok()
    }

    /// The X25519 public key this identity receives sealed messages on
    /// (the birational map of RFC 7748 section 4.1).
    pub fn x25519(&self) -> [u8; 32] {
        self.0.to_montgomery().to_bytes()
    }
}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Keys are ordered by their bytes, so they can key a `BTreeMap` and so two
/// hosts agree on which of them is "lower" (used to break ties).
impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        if Fingerprint::looks_like(s) {
            return Err(KeyError::Fingerprint);
        }
        let bytes = STANDARD.decode(s).map_err(|_| KeyError::NotBase64)?;
        let bytes: [u8; PUBLIC_KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        Self::from_bytes(&bytes)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A short hash of a public key, for people to compare by reading it aloud:
/// 80 bits of SHA-256 in z-base-32, as four groups of four (`ybnd-rfg8-...`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 10]);

/// z-base-32: an alphabet chosen to be easy to read aloud and to type.
const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

impl Fingerprint {
    /// Whether `s` has the shape of a fingerprint (so that pasting one where
    /// a key belongs gets a helpful message).
    pub fn looks_like(s: &str) -> bool {
        let groups: Vec<&str> = s.split('-').collect();
        groups.len() == 4
            && groups.iter().all(|g| {
                g.len() == 4 && g.bytes().all(|b| ZBASE32.contains(&b.to_ascii_lowercase()))
            })
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 80 bits = 16 symbols of 5 bits.
        let mut bits: u128 = 0;
        for b in self.0 {
            bits = (bits << 8) | u128::from(b);
        }
        for i in 0..16 {
            if i > 0 && i % 4 == 0 {
                f.write_str("-")?;
            }
            let shift = 5 * (15 - i);
            let idx = usize::try_from((bits >> shift) & 0x1f).unwrap_or(0);
            write!(f, "{}", char::from(ZBASE32[idx]))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why the identity key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// `keygen` would overwrite an existing key.
    #[error(
        "{}: a key already exists; peerd keygen never overwrites one (peers know this key: remove it yourself only if you mean to replace it)",
        path.display()
    )]
    Exists {
        /// The key file.
        path: PathBuf,
    },
    /// The key file can be read by others.
    #[error(
        "{}: the key file has mode {mode:04o}; it must be readable by its owner only (chmod 600 {})",
        path.display(), path.display()
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold an Ed25519 private key.
    #[error("{}: not a peerd identity key ({reason})", path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// This host's long-term identity: the Ed25519 private key.
///
/// The key bytes are wiped from memory when the value is dropped, and never
/// appear in `Debug` output.
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(Self::from_seed(&seed))
    }

    /// The identity with this 32-byte secret seed (test vectors use fixed seeds).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// Makes a new identity and writes it to `path` (PKCS#8 PEM, mode 0600),
    /// creating the parent directory (mode 0700) if needed. Refuses if
    /// anything already exists at `path`.
    pub fn create(path: &Path) -> Result<Self, IdentityError> {
        let io_err = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        if path.symlink_metadata().is_ok() {
            return Err(IdentityError::Exists {
                path: path.to_owned(),
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
        }
        let identity = Self::generate()?;
        let pem = identity.key.to_pkcs8_pem(Default::default()).map_err(|e| {
            IdentityError::Malformed {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        })?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => IdentityError::Exists {
                    path: path.to_owned(),
                },
                _ => io_err(e),
            })?;
        file.write_all(pem.as_bytes()).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err)?;
        }
        Ok(identity)
    }

    /// Reads the identity from `path`, refusing a file that others can read
    /// or that does not hold an Ed25519 key.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let io_err = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        let malformed = |reason: &str| IdentityError::Malformed {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let file = fs::File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(malformed("not a regular file"));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let mut text = Zeroizing::new(String::new());
        file.take(MAX_KEY_FILE_LEN + 1)
            .read_to_string(&mut text)
            .map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => malformed("not text"),
                _ => io_err(e),
            })?;
        if text.len() as u64 > MAX_KEY_FILE_LEN {
            return Err(malformed("too large for a key file"));
        }
        let key = SigningKey::from_pkcs8_pem(&text)
            .map_err(|_| malformed("expected an Ed25519 PKCS#8 PEM private key"))?;
        Ok(Self { key })
    }

    /// The public half, as peers know it.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// Signs `context || message`.
    pub fn sign(&self, context: SignatureContext, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        use ed25519_dalek::Signer;
        let signed = [context.as_bytes(), message].concat();
        self.key.sign(&signed).to_bytes()
    }

    /// The private key as PKCS#8 DER (RFC 8410), for TLS libraries that
    /// load keys in that form (the peer channel's rustls). Wiped on drop.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        match self.key.to_pkcs8_der() {
            Ok(doc) => Zeroizing::new(doc.as_bytes().to_vec()),
            // Encoding a valid 32-byte seed cannot fail; an empty result
            // makes any TLS library refuse the key rather than panicking.
            Err(_) => Zeroizing::new(Vec::new()),
        }
    }

    /// The X25519 secret this identity opens sealed messages with (the
    /// clamped scalar of the Ed25519 key, matching [`PublicKey::x25519`]).
    pub fn x25519_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_scalar_bytes())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const CTX_A: SignatureContext = SignatureContext::new("peerd/v1/test-a\0");
    const CTX_B: SignatureContext = SignatureContext::new("peerd/v1/test-b\0");

    #[test]
    fn public_key_text_round_trips() {
        let id = Identity::from_seed(&[7; 32]);
        let text = id.public_key().to_string();
        assert_eq!(text.len(), 44);
        assert_eq!(text.parse::<PublicKey>().unwrap(), id.public_key());
        assert_eq!(
            format!("  {text}\n").parse::<PublicKey>().unwrap(),
            id.public_key()
        );
    }

    #[test]
    fn bad_key_texts_get_their_reason() {
        let id = Identity::from_seed(&[7; 32]);
        let fp = id.public_key().fingerprint().to_string();
        assert_eq!(fp.parse::<PublicKey>(), Err(KeyError::Fingerprint));
        assert_eq!("not base64!".parse::<PublicKey>(), Err(KeyError::NotBase64));
        assert_eq!("AAAA".parse::<PublicKey>(), Err(KeyError::WrongLength(3)));
        // The identity point (all zero y = 1) has small order.
        let mut ident = [0u8; 32];
        ident[0] = 1;
        assert_eq!(
            STANDARD.encode(ident).parse::<PublicKey>(),
            Err(KeyError::Weak)
        );
        // y = 2 is not on the curve.
        let mut off = [0u8; 32];
        off[0] = 2;
        assert_eq!(
            STANDARD.encode(off).parse::<PublicKey>(),
            Err(KeyError::NotOnCurve)
        );
    }

    #[test]
    fn fingerprint_is_four_groups_of_zbase32() {
        let fp = Identity::from_seed(&[1; 32]).public_key().fingerprint();
        let s = fp.to_string();
        assert_eq!(s.len(), 19);
        assert!(Fingerprint::looks_like(&s), "{s}");
        assert!(!Fingerprint::looks_like("abcd-efgh"));
        let other = Identity::from_seed(&[2; 32]).public_key().fingerprint();
        assert_ne!(fp, other);
    }

    #[test]
    fn signatures_are_bound_to_their_context() {
        let id = Identity::from_seed(&[3; 32]);
        let sig = id.sign(CTX_A, b"message");
        assert!(id.public_key().verify(CTX_A, b"message", &sig));
        assert!(!id.public_key().verify(CTX_B, b"message", &sig));
        assert!(!id.public_key().verify(CTX_A, b"messagf", &sig));
        let other = Identity::from_seed(&[4; 32]).public_key();
        assert!(!other.verify(CTX_A, b"message", &sig));
    }

    #[test]
    fn x25519_halves_agree() {
        // X25519(secret, base point) must be the public key peers seal to.
        for seed in [[9u8; 32], [0xff; 32], [0; 32]] {
            let id = Identity::from_seed(&seed);
            let derived = curve25519_dalek::MontgomeryPoint::mul_base_clamped(*id.x25519_secret());
            assert_eq!(derived.to_bytes(), id.public_key().x25519());
        }
    }

    #[test]
    fn keygen_writes_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/identity.key");
        let made = Identity::create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(made.public_key(), loaded.public_key());
        assert!(matches!(
            Identity::create(&path),
            Err(IdentityError::Exists { .. })
        ));
        // and the existing key is untouched
        assert_eq!(
            Identity::load(&path).unwrap().public_key(),
            made.public_key()
        );
    }

    #[test]
    fn load_refuses_open_permissions_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        Identity::create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load(&path).unwrap_err();
        assert!(
            matches!(err, IdentityError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));

        let junk = dir.path().join("junk.key");
        fs::write(
            &junk,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        fs::set_permissions(&junk, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Identity::load(&junk),
            Err(IdentityError::Malformed { .. })
        ));

        let big = dir.path().join("big.key");
        fs::write(&big, vec![b'A'; 10_000]).unwrap();
        fs::set_permissions(&big, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Identity::load(&big),
            Err(IdentityError::Malformed { .. })
        ));

        let missing = dir.path().join("missing.key");
        assert!(matches!(
            Identity::load(&missing),
            Err(IdentityError::Io { .. })
        ));
    }

    #[test]
    fn pkcs8_der_round_trips() {
        let id = Identity::from_seed(&[0x24; 32]);
        let der = id.to_pkcs8_der();
        // RFC 8410 OneAsymmetricKey v2 (with the public key): 83 bytes.
        assert_eq!(der.len(), 83);
        let back = SigningKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(back.verifying_key(), id.key.verifying_key());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let id = Identity::from_seed(&[0x42; 32]);
        let dbg = format!("{id:?}");
        let fp = id.public_key().fingerprint();
        assert_eq!(
            dbg,
            format!("Identity {{ public_key: PublicKey({fp}), .. }}")
        );
    }
}
