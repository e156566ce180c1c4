//! Receiving: from raw mail to an accepted message, or the reason not.
//!
//! The checks run in an order chosen so each reason is the true one and no
//! work is done for a stranger: the mail's own marker, then the envelope's
//! clear-text keys (is it for us, is the sender in our address book), then
//! decryption, then the sender's signature, and only then what the message
//! says (its body, its sequence number, its times).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peerd_core::{AddressClass, Identity, MailAddress, PeerName, PublicKey};
use sha2::{Digest, Sha256};

use crate::mail::{self, Classified, MailFault};
use crate::message::{self, Body, DecodeError, MAX_VALIDITY_SECS, Message};
use crate::seal::{self, EnvelopeError};
use crate::sequence::CLOCK_FLOOR;

/// A peer as the receiving side needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPeer {
    /// Its name in our address book.
    pub name: PeerName,
    /// Its mail address (compared case-insensitively with From for hints).
    pub email: MailAddress,
    /// Its identity key; `None` for a `plain` peer.
    pub key: Option<PublicKey>,
    /// Whether a bare address in a plain mail from it is taken as a hint.
    pub accept_unsigned: bool,
}

/// The last message accepted from a key: what a new one must beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastAccepted {
    /// Its sequence number.
    pub sequence: u64,
    /// SHA-256 of its signed payload, to tell a duplicate from a replay.
    pub digest: [u8; 32],
}

/// Where the receiver looks up what it accepted before.
pub trait History {
    /// The last message accepted from `key`, if any.
    fn last_accepted(&self, key: &PublicKey) -> Option<LastAccepted>;
}

impl History for BTreeMap<PublicKey, LastAccepted> {
    fn last_accepted(&self, key: &PublicKey) -> Option<LastAccepted> {
        self.get(key).copied()
    }
}

/// Everything the receiving side needs to judge a mail.
pub struct Receiver<'a> {
    /// Our identity (we must be the recipient).
    pub identity: &'a Identity,
    /// The address book.
    pub peers: &'a [KnownPeer],
    /// What was accepted before.
    pub history: &'a dyn History,
    /// The time to judge expiry by.
    pub now: SystemTime,
    /// How far in the future an issue time may be.
    pub clock_skew: Duration,
    /// Mail larger than this is never parsed.
    pub max_message_size: usize,
}

/// A message that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The sender's name in our address book.
    pub peer: PeerName,
    /// What it said.
    pub message: Message,
    /// SHA-256 of the signed payload.
    pub digest: [u8; 32],
}

impl Accepted {
    /// What to remember so the next message from this key is judged right.
    pub fn last_accepted(&self) -> LastAccepted {
        LastAccepted {
            sequence: self.message.sequence,
            digest: self.digest,
        }
    }

    /// Whether this announcement still stands above any plain-text hint:
    /// a hint (spoofable) never overrides a sealed announcement that has
    /// not yet expired.
    pub fn outranks_hints(&self, now: SystemTime) -> bool {
        UNIX_EPOCH + Duration::from_secs(self.message.expires_at) > now
    }
}

/// An address found in a plain mail from a peer with `accept_unsigned`.
/// The From header is spoofable, so this is only a hint: the connection
/// that follows is still authenticated by the peer's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    /// Index of the peer in [`Receiver::peers`] whose address the From matched.
    pub peer_index: usize,
    /// The first announceable IP address in the text.
    pub ip: IpAddr,
    /// A port given with it (`1.2.3.4:7447` or `... port 7447`), if any.
    pub port: Option<u16>,
}

/// What a received mail turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A sealed message that passed every check.
    Message(Box<Accepted>),
    /// A plain-text address from an `accept_unsigned` peer. The mail is the
    /// peer's own, not ours: it is never deleted.
    Hint(Hint),
}

/// Why a mail was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not peerd mail: someone else's, to be left untouched.
    NotPeerdMail,
    /// Marked as peerd mail but not well-formed.
    Malformed(&'static str),
    /// An envelope or payload version this program does not know.
    UnknownVersion(u8),
    /// A cipher suite this program does not know.
    UnknownSuite(u8),
    /// A message kind this program does not know (including the kinds
    /// reserved for later versions: 3 key change, 4 pairing).
    UnknownKind(u8),
    /// Sealed by a key that is not in the address book.
    UnknownSender,
    /// Sealed or signed for another recipient.
    NotAddressedToUs,
    /// The envelope does not decrypt (altered, or not for our key).
    DecryptionFailed,
    /// The signature does not verify.
    BadSignature,
    /// Its validity has ended.
    Expired,
    /// Issued more than `clock_skew` in the future.
    FromFuture,
    /// The same message again (mail systems deliver twice): silent.
    Duplicate,
    /// Older than what was accepted already: mail out of order, not an attack.
    Stale {
        /// Its sequence number.
        sequence: u64,
        /// The last accepted one.
        last: u64,
    },
    /// Another message with a sequence number already used: a replay or a
    /// confused sender.
    Replayed,
    /// Our own clock reads before 2020, so freshness cannot be judged.
    ClockNotSet,
}

impl Rejection {
    /// A stable short name, for events, hooks and counters.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotPeerdMail => "not-peerd-mail",
            Self::Malformed(_) => "malformed",
            Self::UnknownVersion(_) => "unknown-version",
            Self::UnknownSuite(_) => "unknown-suite",
            Self::UnknownKind(_) => "unknown-kind",
            Self::UnknownSender => "unknown-sender",
            Self::NotAddressedToUs => "not-addressed-to-us",
            Self::DecryptionFailed => "decryption-failed",
            Self::BadSignature => "bad-signature",
            Self::Expired => "expired",
            Self::FromFuture => "from-the-future",
            Self::Duplicate => "duplicate",
            Self::Stale { .. } => "stale",
            Self::Replayed => "replayed",
            Self::ClockNotSet => "clock-not-set",
        }
    }

    /// Whether this deserves a warning (someone may be forging or
    /// tampering), as opposed to the ordinary noise of mail delivery
    /// (duplicates, reordering, other people's mail).
    pub fn is_alarm(&self) -> bool {
        !matches!(
            self,
            Self::NotPeerdMail | Self::Duplicate | Self::Stale { .. } | Self::Expired
        )
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPeerdMail => f.write_str("not peerd mail"),
            Self::Malformed(why) => write!(f, "malformed: {why}"),
            Self::UnknownVersion(v) => write!(f, "unknown format version {v}"),
            Self::UnknownSuite(s) => write!(f, "unknown cipher suite {s}"),
            Self::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            Self::UnknownSender => f.write_str("sender key is not in the address book"),
            Self::NotAddressedToUs => f.write_str("not addressed to this host's key"),
            Self::DecryptionFailed => f.write_str("does not decrypt"),
            Self::BadSignature => f.write_str("bad signature"),
            Self::Expired => f.write_str("expired"),
            Self::FromFuture => f.write_str("dated too far in the future"),
            Self::Duplicate => f.write_str("duplicate"),
            Self::Stale { sequence, last } => {
                write!(f, "stale (sequence {sequence}, already have {last})")
            },
            Self::Replayed => f.write_str("replayed (sequence number reused)"),
            Self::ClockNotSet => f.write_str("this host's clock is not set (before 2020)"),
        }
    }
}

/// A rejection with what is known of who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Why.
    pub reason: Rejection,
    /// The sender's name, once its key was found in the address book.
    pub peer: Option<PeerName>,
    /// The From address, escaped (see [`escape_address`]); for reports
    /// only, it proves nothing.
    pub from: Option<String>,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.peer, &self.from) {
            (Some(p), _) => write!(f, "from {p}: {}", self.reason),
            (None, Some(addr)) => write!(f, "from <{addr}>: {}", self.reason),
            (None, None) => write!(f, "{}", self.reason),
        }
    }
}

/// Makes an outside address safe for logs, hooks and D-Bus: letters,
/// digits and `.@_+=-` stay, every other byte becomes `\xNN` (so no shell
/// metacharacter, space or control character survives), and the result is
/// cut at about 254 characters with an ellipsis.
pub fn escape_address(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if out.len() >= 254 {
            out.push_str("...");
            break;
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'@' | b'_' | b'+' | b'=' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

impl Receiver<'_> {
    /// Judges one raw mail.
    pub fn receive(&self, raw: &[u8]) -> Result<Received, Rejected> {
        let mut rejected = Rejected {
            reason: Rejection::NotPeerdMail,
            peer: None,
            from: None,
        };
        let classified = match mail::classify(raw, self.max_message_size) {
            Ok(c) => c,
            Err(MailFault::NotMail) => return Err(rejected),
            Err(MailFault::Malformed(why)) => {
                rejected.reason = Rejection::Malformed(why);
                return Err(rejected);
            },
        };
        match classified {
            Classified::Other { from, text } => {
                rejected.from = from.as_deref().map(escape_address);
                self.hint(from.as_deref(), &text)
                    .map(Received::Hint)
                    .ok_or(rejected)
            },
            Classified::Sealed { from, envelope } => {
                rejected.from = from.as_deref().map(escape_address);
                self.open(&envelope, &mut rejected)
                    .map(|a| Received::Message(Box::new(a)))
                    .map_err(|reason| Rejected { reason, ..rejected })
            },
        }
    }

    fn hint(&self, from: Option<&str>, text: &str) -> Option<Hint> {
        let from = from?;
        let peer_index = self.peers.iter().position(|p| {
            p.accept_unsigned && p.key.is_some() && p.email.as_str().eq_ignore_ascii_case(from)
        })?;
        let (ip, port) = first_address(text)?;
        Some(Hint {
            peer_index,
            ip,
            port,
        })
    }

    fn open(&self, envelope: &[u8], rejected: &mut Rejected) -> Result<Accepted, Rejection> {
        let env = seal::parse(envelope).map_err(|e| match e {
            EnvelopeError::Version(v) => Rejection::UnknownVersion(v),
            EnvelopeError::Suite(s) => Rejection::UnknownSuite(s),
            EnvelopeError::Malformed(why) => Rejection::Malformed(why),
        })?;
        let own = self.identity.public_key();
        if &env.recipient != own.as_bytes() {
            return Err(Rejection::NotAddressedToUs);
        }
        let (peer, sender) = self
            .peers
            .iter()
            .find_map(|p| {
                p.key
                    .filter(|k| k.as_bytes() == &env.sender)
                    .map(|k| (p.name.clone(), k))
            })
            .ok_or(Rejection::UnknownSender)?;
        rejected.peer = Some(peer.clone());
        let payload = env
            .open(self.identity, &sender)
            .ok_or(Rejection::DecryptionFailed)?;
        let decoded = message::decode(&payload).map_err(|e| match e {
            DecodeError::Version(v) => Rejection::UnknownVersion(v),
            DecodeError::Kind(k) => Rejection::UnknownKind(k),
            DecodeError::Malformed(why) => Rejection::Malformed(why),
        })?;
        if &decoded.recipient != own.as_bytes() {
            return Err(Rejection::NotAddressedToUs);
        }
        if &decoded.sender != sender.as_bytes() {
            return Err(Rejection::Malformed("signed and sealed by different keys"));
        }
        if !sender.verify(decoded.kind.context(), decoded.signed, &decoded.signature) {
            return Err(Rejection::BadSignature);
        }
        let body = decoded.body().map_err(|e| match e {
            DecodeError::Malformed(why) => Rejection::Malformed(why),
            DecodeError::Version(v) => Rejection::UnknownVersion(v),
            DecodeError::Kind(k) => Rejection::UnknownKind(k),
        })?;
        if decoded.expires_at <= decoded.issued_at
            || decoded.expires_at - decoded.issued_at > MAX_VALIDITY_SECS
        {
            return Err(Rejection::Malformed(
                "validity period empty or longer than 7 days",
            ));
        }
        let now = self
            .now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        if now.as_secs() < CLOCK_FLOOR {
            return Err(Rejection::ClockNotSet);
        }
        let digest: [u8; 32] = Sha256::digest(&payload[..]).into();
        if let Some(last) = self.history.last_accepted(&sender) {
            if decoded.sequence < last.sequence {
                return Err(Rejection::Stale {
                    sequence: decoded.sequence,
                    last: last.sequence,
                });
            }
            if decoded.sequence == last.sequence {
                return Err(if digest == last.digest {
                    Rejection::Duplicate
                } else {
                    Rejection::Replayed
                });
            }
        }
        if decoded.expires_at <= now.as_secs() {
            return Err(Rejection::Expired);
        }
        if Duration::from_secs(decoded.issued_at) > now + self.clock_skew {
            return Err(Rejection::FromFuture);
        }
        Ok(Accepted {
            peer,
            message: Message {
                sender,
                recipient: own,
                sequence: decoded.sequence,
                issued_at: decoded.issued_at,
                expires_at: decoded.expires_at,
                body,
            },
            digest,
        })
    }
}

/// The first announceable IP address in a text, with a port if one is
/// given as `ip:port`, `[ipv6]:port` or `ip port N`.
pub(crate) fn first_address(text: &str) -> Option<(IpAddr, Option<u16>)> {
    let is_addr_char = |c: char| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '[' | ']');
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest.find(is_addr_char)?;
        let run = &rest[start..];
        let len = run.find(|c: char| !is_addr_char(c)).unwrap_or(run.len());
        let token = run[..len].trim_end_matches(['.', ':']);
        let after = &run[len..];
        rest = after;
        if token.len() < 2 || token.len() > 64 {
            continue;
        }
        let found = if let Ok(sa) = token.parse::<SocketAddr>() {
            Some((sa.ip(), Some(sa.port()).filter(|p| *p != 0)))
        } else {
            token
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
                .map(|ip| (ip, port_after(after)))
        };
        if let Some((ip, port)) = found
            && AddressClass::of(ip).is_announceable()
        {
            return Some((ip, port));
        }
    }
    None
}

/// `port 7447` right after an address.
fn port_after(text: &str) -> Option<u16> {
    let mut words = text.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("port") {
        return None;
    }
    let digits: String = words
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|p| *p != 0)
}

/// What a message's body says, for callers that want only announcements.
impl Accepted {
    /// The candidates, if this is an announcement.
    pub fn candidates(&self) -> Option<&[peerd_core::Candidate]> {
        match &self.message.body {
            Body::Announcement(c) => Some(c),
            Body::Ack { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_usable_address_and_its_port() {
        type Found<'a> = Option<(&'a str, Option<u16>)>;
        let cases: [(&str, Found<'_>); 9] = [
            (
                "alice is reachable at 203.0.113.7 port 7447",
                Some(("203.0.113.7", Some(7447))),
            ),
            ("at 203.0.113.7:7000.", Some(("203.0.113.7", Some(7000)))),
            (
                "at [2001:db8::7]:7447 now",
                Some(("2001:db8::7", Some(7447))),
            ),
            ("try 2001:db8::7.", Some(("2001:db8::7", None))),
            ("loopback 127.0.0.1 then 10.0.0.2", Some(("10.0.0.2", None))),
            ("cafe dead:beef 12:30 1.2.3", None),
            ("link-local fe80::1 only", None),
            ("", None),
            ("at 100.64.0.9 Port 99999", Some(("100.64.0.9", None))),
        ];
        for (text, want) in cases {
            let want = want.map(|(ip, p)| (ip.parse::<IpAddr>().unwrap(), p));
            assert_eq!(first_address(text), want, "{text}");
        }
    }

    #[test]
    fn huge_texts_are_scanned_without_trouble() {
        let text = "a".repeat(1 << 20) + " 198.51.100.1";
        assert_eq!(
            first_address(&text).map(|x| x.0),
            Some("198.51.100.1".parse().unwrap())
        );
        let colons = ":".repeat(1 << 16);
        assert_eq!(first_address(&colons), None);
    }

    #[test]
    fn escaping_keeps_addresses_and_neuters_the_rest() {
        assert_eq!(escape_address("alice@isp-a.test"), "alice@isp-a.test");
        assert_eq!(
            escape_address("a b\n$(x)\\"),
            "a\\x20b\\x0a\\x24\\x28x\\x29\\x5c"
        );
        assert_eq!(escape_address("é"), "\\xc3\\xa9");
        assert!(escape_address(&"x".repeat(1000)).len() <= 257);
    }
}
