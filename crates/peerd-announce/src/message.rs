//! The signed payload: what a peer says, before it is sealed.
//!
//! A fixed binary layout rather than JSON or CBOR: the payload is small,
//! every field has one encoding, so the bytes that are signed are the bytes
//! that are parsed, and `docs/protocol.md` can describe it byte by byte.
//! All integers are big-endian.
//!
//! ```text
//! offset  size  field
//!      0     1  version (1)
//!      1     1  kind (1 announcement, 2 ack; 3 key change and 4 pairing are reserved)
//!      2    32  sender's Ed25519 public key
//!     34    32  recipient's Ed25519 public key
//!     66     8  sequence number
//!     74     8  issued at, Unix seconds
//!     82     8  expires at, Unix seconds
//!     90     2  body length L
//!     92     L  body (by kind)
//!   92+L    64  Ed25519 signature over context(kind) || bytes 0 .. 92+L
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use peerd_core::key::{PUBLIC_KEY_LEN, SIGNATURE_LEN};
use peerd_core::{AddressClass, Candidate, CandidateKind, Identity, PublicKey, SignatureContext};

/// The payload format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Bytes before the body.
pub(crate) const HEADER_LEN: usize = 92;
/// Most candidates one announcement may carry.
pub const MAX_CANDIDATES: usize = 16;
/// Largest body accepted (a full announcement is 1 + 16 * 21 bytes).
pub const MAX_BODY_LEN: usize = 1024;
/// The longest validity an announcement may claim (matches the largest
/// `valid_for` the configuration allows).
pub const MAX_VALIDITY_SECS: u64 = 7 * 24 * 3600;

/// What a message is. The signature context is per kind, so a signature
/// made over one kind never verifies as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// "You can reach me at these addresses."
    Announcement,
    /// "I received your announcement with this sequence number."
    Ack,
}

impl MessageKind {
    /// The code in byte 1 of the payload.
    pub fn code(self) -> u8 {
        match self {
            Self::Announcement => 1,
            Self::Ack => 2,
        }
    }

    /// The kind with this code. Codes 3 (key change) and 4 (pairing) are
    /// reserved for later versions and, like every other code, refused.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Announcement),
            2 => Some(Self::Ack),
            _ => None,
        }
    }

    /// The signature context of this kind.
    pub fn context(self) -> SignatureContext {
        const ANNOUNCEMENT: SignatureContext = SignatureContext::new("peerd/v1/announcement\0");
        const ACK: SignatureContext = SignatureContext::new("peerd/v1/ack\0");
        match self {
            Self::Announcement => ANNOUNCEMENT,
            Self::Ack => ACK,
        }
    }

    /// The kind's name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Announcement => "announcement",
            Self::Ack => "ack",
        }
    }
}

/// What the message says, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Where the sender can be reached, best first.
    Announcement(Vec<Candidate>),
    /// The sequence number of the announcement being acknowledged.
    Ack {
        /// The acknowledged sequence number.
        sequence: u64,
    },
}

/// A message before signing (or after verification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who sends it.
    pub sender: PublicKey,
    /// Who may open it.
    pub recipient: PublicKey,
    /// Strictly increasing per sender (see [`crate::sequence`]).
    pub sequence: u64,
    /// When it was made, Unix seconds.
    pub issued_at: u64,
    /// When it stops being true, Unix seconds.
    pub expires_at: u64,
    /// What it says.
    pub body: Body,
}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// An announcement must carry at least one address.
    #[error("an announcement needs at least one address")]
    NoCandidates,
    /// More than [`MAX_CANDIDATES`].
    #[error("an announcement carries at most {MAX_CANDIDATES} addresses, not {0}")]
    TooManyCandidates(usize),
    /// A candidate that is never announced (link-local, loopback, ...), or
    /// whose class does not match its address.
    #[error("{0} is not an announceable address")]
    NotAnnounceable(SocketAddr),
    /// Expiry not after issue time, or validity longer than allowed.
    #[error("the validity period is empty or longer than 7 days")]
    BadValidity,
    /// The signing identity is not the message's sender.
    #[error("the message's sender is not this identity")]
    WrongIdentity,
}

/// Why received bytes are not a message (turned into a rejection reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    Version(u8),
    Kind(u8),
    Malformed(&'static str),
}

const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

fn kind_code(k: CandidateKind) -> u8 {
    match k {
        CandidateKind::Host => 1,
        CandidateKind::ServerReflexive => 2,
        CandidateKind::Mapped => 3,
    }
}

fn class_code(c: AddressClass) -> Option<u8> {
    match c {
        AddressClass::Public => Some(1),
        AddressClass::Cgnat => Some(2),
        AddressClass::Private => Some(3),
        _ => None,
    }
}

impl Message {
    /// The kind this message's body makes it.
    pub fn kind(&self) -> MessageKind {
        match self.body {
            Body::Announcement(_) => MessageKind::Announcement,
            Body::Ack { .. } => MessageKind::Ack,
        }
    }

    fn encode_body(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        match &self.body {
            Body::Announcement(cands) => {
                if cands.is_empty() {
                    return Err(EncodeError::NoCandidates);
                }
                if cands.len() > MAX_CANDIDATES {
                    return Err(EncodeError::TooManyCandidates(cands.len()));
                }
                out.push(
                    u8::try_from(cands.len())
                        .map_err(|_| EncodeError::TooManyCandidates(cands.len()))?,
                );
                for c in cands {
                    let class = class_code(c.class)
                        .filter(|_| AddressClass::of(c.addr.ip()) == c.class && c.addr.port() != 0)
                        .ok_or(EncodeError::NotAnnounceable(c.addr))?;
                    match c.addr.ip() {
                        IpAddr::V4(ip) => {
                            out.push(FAMILY_V4);
                            out.extend_from_slice(&ip.octets());
                        },
                        IpAddr::V6(ip) => {
                            out.push(FAMILY_V6);
                            out.extend_from_slice(&ip.octets());
                        },
                    }
                    out.extend_from_slice(&c.addr.port().to_be_bytes());
                    out.push(kind_code(c.kind));
                    out.push(class);
                }
            },
            Body::Ack { sequence } => out.extend_from_slice(&sequence.to_be_bytes()),
        }
        Ok(out)
    }

    /// The bytes that are signed: header and body.
    pub fn to_unsigned_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        if self.expires_at <= self.issued_at || self.expires_at - self.issued_at > MAX_VALIDITY_SECS
        {
            return Err(EncodeError::BadValidity);
        }
        let body = self.encode_body()?;
        let body_len = u16::try_from(body.len())
            .map_err(|_| EncodeError::TooManyCandidates(MAX_CANDIDATES + 1))?;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + SIGNATURE_LEN);
        out.push(VERSION);
        out.push(self.kind().code());
        out.extend_from_slice(self.sender.as_bytes());
        out.extend_from_slice(self.recipient.as_bytes());
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.extend_from_slice(&body_len.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The signed payload: header, body and the sender's signature.
    pub fn sign(&self, identity: &Identity) -> Result<Vec<u8>, EncodeError> {
        if identity.public_key() != self.sender {
            return Err(EncodeError::WrongIdentity);
        }
        let mut bytes = self.to_unsigned_bytes()?;
        let sig = identity.sign(self.kind().context(), &bytes);
        bytes.extend_from_slice(&sig);
        Ok(bytes)
    }
}

/// A payload split into its parts; the signature is not checked yet.
#[derive(Debug)]
pub(crate) struct Decoded<'a> {
    pub(crate) kind: MessageKind,
    pub(crate) sender: [u8; PUBLIC_KEY_LEN],
    pub(crate) recipient: [u8; PUBLIC_KEY_LEN],
    pub(crate) sequence: u64,
    pub(crate) issued_at: u64,
    pub(crate) expires_at: u64,
    body: &'a [u8],
    pub(crate) signed: &'a [u8],
    pub(crate) signature: [u8; SIGNATURE_LEN],
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if buf.len() < n {
        return Err(DecodeError::Malformed("payload is truncated"));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn array<const N: usize>(buf: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    let bytes = take(buf, N)?;
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    Ok(out)
}

fn u64_be(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    Ok(u64::from_be_bytes(array(buf)?))
}

/// Splits a payload into its fields. Checks framing only: the version, the
/// kind, the lengths. The body's contents are read by [`Decoded::body`],
/// after the signature has been checked.
pub(crate) fn decode(payload: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let mut buf = payload;
    let [version] = array(&mut buf)?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let [code] = array(&mut buf)?;
    let kind = MessageKind::from_code(code).ok_or(DecodeError::Kind(code))?;
    let sender = array(&mut buf)?;
    let recipient = array(&mut buf)?;
    let sequence = u64_be(&mut buf)?;
    let issued_at = u64_be(&mut buf)?;
    let expires_at = u64_be(&mut buf)?;
    let body_len = usize::from(u16::from_be_bytes(array(&mut buf)?));
    if body_len > MAX_BODY_LEN {
        return Err(DecodeError::Malformed("body is too long"));
    }
    let body = take(&mut buf, body_len)?;
    let signed = &payload[..HEADER_LEN + body_len];
    let signature = array(&mut buf)?;
    if !buf.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes after the signature"));
    }
    Ok(Decoded {
        kind,
        sender,
        recipient,
        sequence,
        issued_at,
        expires_at,
        body,
        signed,
        signature,
    })
}

impl Decoded<'_> {
    /// Reads the body. Call only after the signature has been verified.
    pub(crate) fn body(&self) -> Result<Body, DecodeError> {
        let mut buf = self.body;
        let body = match self.kind {
            MessageKind::Announcement => {
                let [count] = array(&mut buf)?;
                let count = usize::from(count);
                if count == 0 || count > MAX_CANDIDATES {
                    return Err(DecodeError::Malformed(
                        "an announcement carries 1 to 16 addresses",
                    ));
                }
                let mut cands = Vec::with_capacity(count);
                for _ in 0..count {
                    cands.push(candidate(&mut buf)?);
                }
                let mut sorted = cands.clone();
                sorted.sort();
                sorted.dedup();
                if sorted.len() != cands.len() {
                    return Err(DecodeError::Malformed("an address is listed twice"));
                }
                Body::Announcement(cands)
            },
            MessageKind::Ack => Body::Ack {
                sequence: u64_be(&mut buf)?,
            },
        };
        if !buf.is_empty() {
            return Err(DecodeError::Malformed("trailing bytes in the body"));
        }
        Ok(body)
    }
}

fn candidate(buf: &mut &[u8]) -> Result<Candidate, DecodeError> {
    let [family] = array(buf)?;
    let ip = match family {
        FAMILY_V4 => IpAddr::V4(Ipv4Addr::from(array::<4>(buf)?)),
        FAMILY_V6 => IpAddr::V6(Ipv6Addr::from(array::<16>(buf)?)),
        _ => return Err(DecodeError::Malformed("unknown address family")),
    };
    let port = u16::from_be_bytes(array(buf)?);
    let [kind, class] = array(buf)?;
    let kind = CandidateKind::ALL
        .into_iter()
        .find(|k| kind_code(*k) == kind)
        .ok_or(DecodeError::Malformed("unknown candidate type"))?;
    let actual = AddressClass::of(ip);
    if !actual.is_announceable() {
        return Err(DecodeError::Malformed(
            "a link-local, loopback or unroutable address",
        ));
    }
    if class_code(actual) != Some(class) {
        return Err(DecodeError::Malformed(
            "an address class does not match its address",
        ));
    }
    if port == 0 {
        return Err(DecodeError::Malformed("port 0"));
    }
    Ok(Candidate {
        addr: SocketAddr::new(ip, port),
        kind,
        class: actual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Identity, Identity) {
        (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]))
    }

    fn message(cands: Vec<Candidate>) -> Message {
        let (a, b) = ids();
        Message {
            sender: a.public_key(),
            recipient: b.public_key(),
            sequence: 1_700_000_000_000_000,
            issued_at: 1_700_000_000,
            expires_at: 1_700_003_600,
            body: Body::Announcement(cands),
        }
    }

    fn cand(s: &str) -> Candidate {
        Candidate::new(s.parse().unwrap(), CandidateKind::Host).unwrap()
    }

    #[test]
    fn encodes_and_decodes_every_field() {
        let m = message(vec![cand("203.0.113.7:7447"), cand("[2001:db8::7]:7447")]);
        let (a, _) = ids();
        let bytes = m.sign(&a).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 1 + 9 + 21 + SIGNATURE_LEN);
        let d = decode(&bytes).unwrap();
        assert_eq!(d.kind, MessageKind::Announcement);
        assert_eq!(d.sequence, m.sequence);
        assert_eq!(d.body().unwrap(), m.body);
        assert!(m.sender.verify(d.kind.context(), d.signed, &d.signature));
    }

    #[test]
    fn refuses_to_encode_what_must_never_be_sent() {
        let mut link_local = cand("203.0.113.7:7447");
        link_local.addr = "[fe80::1]:7447".parse().unwrap();
        assert!(matches!(
            message(vec![link_local]).to_unsigned_bytes(),
            Err(EncodeError::NotAnnounceable(_))
        ));
        assert_eq!(
            message(vec![]).to_unsigned_bytes(),
            Err(EncodeError::NoCandidates)
        );
        let many = (1..=17)
            .map(|i| cand(&format!("203.0.113.{i}:7447")))
            .collect();
        assert_eq!(
            message(many).to_unsigned_bytes(),
            Err(EncodeError::TooManyCandidates(17))
        );
        let mut m = message(vec![cand("203.0.113.7:7447")]);
        m.expires_at = m.issued_at;
        assert_eq!(m.to_unsigned_bytes(), Err(EncodeError::BadValidity));
        let (_, b) = ids();
        assert_eq!(
            message(vec![cand("203.0.113.7:7447")]).sign(&b),
            Err(EncodeError::WrongIdentity)
        );
    }

    #[test]
    fn decode_reports_version_kind_and_framing() {
        let (a, _) = ids();
        let good = message(vec![cand("203.0.113.7:7447")]).sign(&a).unwrap();
        let mut v = good.clone();
        v[0] = 2;
        assert_eq!(decode(&v).unwrap_err(), DecodeError::Version(2));
        for code in [0u8, 3, 4, 255] {
            let mut k = good.clone();
            k[1] = code;
            assert_eq!(decode(&k).unwrap_err(), DecodeError::Kind(code));
        }
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(DecodeError::Malformed(_))
        ));
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(DecodeError::Malformed(_))));
        assert!(matches!(decode(&[]), Err(DecodeError::Malformed(_))));
    }
}
