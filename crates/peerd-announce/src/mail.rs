//! The mail that carries a message, and finding it again in received mail.
//!
//! An ordinary RFC 5322 message, so every mail system passes it on: a short
//! text part telling a person what it is (never the address itself), and
//! the sealed envelope as an `application/x-peerd-sealed` part in base64.
//! The header `X-Peerd: sealed; v=1` lets a receiver recognise our mail
//! from its headers alone (an IMAP `SEARCH HEADER X-Peerd` or a POP3
//! `TOP n 0`), so it never has to download anyone's other mail.
//!
//! Peers configured with `format = "plain"` get the original design's
//! readable mail instead (`X-Peerd: plain; v=1`), which does contain the
//! address: that is its purpose.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use mail_parser::{MessageParser, MimeHeaders};
use peerd_core::Candidate;
use sha2::{Digest, Sha256};

/// The header that marks peerd's mail.
pub const PEERD_HEADER: &str = "X-Peerd";
/// The content type of the sealed part.
pub const SEALED_CONTENT_TYPE: &str = "application/x-peerd-sealed";
const SEALED_VALUE: &str = "sealed; v=1";
const PLAIN_VALUE: &str = "plain; v=1";

/// Who a mail is from and to, and its identifying headers.
#[derive(Debug, Clone)]
pub struct MailHeaders<'a> {
    /// Our identity name, shown as the sender's display name.
    pub from_name: &'a str,
    /// Our mail address.
    pub from: &'a str,
    /// The peer's mail address.
    pub to: &'a str,
    /// The Date header (the message's issue time).
    pub date: SystemTime,
    /// The Message-ID header, `<...@...>`; see [`new_message_id`].
    pub message_id: &'a str,
}

/// Why a mail could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// A mail address did not parse.
    #[error("invalid mail address {address:?}: {reason}")]
    Address {
        /// The offending address.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// lettre refused to build the message.
    #[error("cannot build the mail: {0}")]
    Build(String),
    /// The system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// A fresh Message-ID in the sender's domain: 128 random bits, so it says
/// nothing about the host or the time.
pub fn new_message_id(from: &str) -> Result<String, MailError> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| MailError::Random(e.to_string()))?;
    let domain = from.rsplit_once('@').map_or("peerd.invalid", |(_, d)| d);
    let mut out = String::from("<");
    for b in id {
        let _ = write!(out, "{b:02x}");
    }
    let _ = write!(out, "@{domain}>");
    Ok(out)
}

fn mailbox(name: Option<&str>, address: &str) -> Result<Mailbox, MailError> {
    let addr = address
        .parse()
        .map_err(|e: lettre::address::AddressError| MailError::Address {
            address: address.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Mailbox::new(name.map(str::to_owned), addr))
}

fn builder(
    h: &MailHeaders<'_>,
    subject: String,
    marker: &str,
) -> Result<lettre::message::MessageBuilder, MailError> {
    Ok(lettre::Message::builder()
        .from(mailbox(Some(h.from_name), h.from)?)
        .to(mailbox(None, h.to)?)
        .subject(subject)
        .date(h.date)
        .message_id(Some(h.message_id.to_owned()))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str(PEERD_HEADER),
            marker.to_owned(),
        )))
}

/// A MIME boundary derived from the Message-ID: unique per mail, and the
/// same every time the same mail is built (test vectors stay stable).
fn boundary(message_id: &str) -> String {
    let digest = Sha256::digest(message_id.as_bytes());
    let mut out = String::from("peerd-");
    for b in &digest[..12] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The mail carrying a sealed envelope (see [`crate::seal()`]).
pub fn sealed_mail(h: &MailHeaders<'_>, sealed: &[u8]) -> Result<Vec<u8>, MailError> {
    let text = format!(
        "This message was sent by peerd for {name}\n\
         <{from}>.\n\
         \n\
         It carries a sealed note for the peerd program of\n\
         <{to}>\n\
         telling it how to reach {name} directly. Only that program can\n\
         open it. If you do not run peerd, you can ignore or delete this\n\
         message: there is nothing in it for you to read or do.\n",
        name = h.from_name,
        from = h.from,
        to = h.to,
    );
    let sealed_type =
        ContentType::parse(SEALED_CONTENT_TYPE).map_err(|e| MailError::Build(e.to_string()))?;
    let body = MultiPart::mixed()
        .boundary(boundary(h.message_id))
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(text),
        )
        .singlepart(
            SinglePart::builder()
                .header(sealed_type)
                .header(ContentTransferEncoding::Base64)
                .body(sealed.to_vec()),
        );
    let message = builder(
        h,
        format!("peerd: sealed message from {}", h.from_name),
        SEALED_VALUE,
    )?
    .multipart(body)
    .map_err(|e| MailError::Build(e.to_string()))?;
    Ok(message.formatted())
}

/// The original design's readable mail for a `format = "plain"` peer:
/// one line per address, then when it stops being true.
pub fn plain_mail(
    h: &MailHeaders<'_>,
    candidates: &[Candidate],
    valid_until: SystemTime,
) -> Result<Vec<u8>, MailError> {
    let mut text = String::new();
    for (i, c) in candidates.iter().enumerate() {
        let also = if i == 0 { "" } else { "also " };
        let _ = writeln!(
            text,
            "{} is {also}reachable at {} port {}",
            h.from_name,
            c.addr.ip(),
            c.addr.port()
        );
    }
    let until = valid_until
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let _ = write!(
        text,
        "\nThis message was sent by peerd on behalf of {name} <{from}> because\n\
         its network address changed. It is valid until {until} (Unix time {secs}).\n",
        name = h.from_name,
        from = h.from,
        until = httpdate::fmt_http_date(valid_until),
        secs = until.as_secs(),
    );
    let message = builder(h, format!("{}'s network address", h.from_name), PLAIN_VALUE)?
        .header(ContentType::TEXT_PLAIN)
        .body(text)
        .map_err(|e| MailError::Build(e.to_string()))?;
    Ok(message.formatted())
}

/// What a received mail is, as far as peerd is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Classified {
    /// Marked as ours, with exactly one sealed part, decoded from base64.
    Sealed {
        /// The From address, if any (for reports only; never trusted).
        from: Option<String>,
        /// The decoded sealed part.
        envelope: Vec<u8>,
    },
    /// Not marked as sealed peerd mail: a plain-text hint at most.
    Other {
        /// The From address, lower-cased, if there is exactly one.
        from: Option<String>,
        /// The first text body, up to [`HINT_TEXT_LIMIT`] bytes.
        text: String,
    },
}

/// Why a mail marked as ours cannot be read (becomes `Rejection::Malformed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MailFault {
    /// Not a mail at all, or marked as ours but too large.
    NotMail,
    Malformed(&'static str),
}

/// How much of a plain mail's text is searched for an address.
pub(crate) const HINT_TEXT_LIMIT: usize = 64 * 1024;

/// Finds out whether `raw` is sealed peerd mail and takes out its
/// envelope. Mail marked `X-Peerd: sealed` but broken is reported as
/// malformed, so a forgery or a mangled mail never looks like someone
/// else's mail to keep.
pub(crate) fn classify(raw: &[u8], max_size: usize) -> Result<Classified, MailFault> {
    let parser = MessageParser::new();
    let headers = parser.parse_headers(raw).ok_or(MailFault::NotMail)?;
    let marker = headers
        .header_values(PEERD_HEADER)
        .filter_map(|v| v.as_text())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect::<Vec<_>>();
    let from = headers
        .from()
        .filter(|a| a.iter().count() == 1)
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::to_ascii_lowercase);
    let sealed = marker.iter().any(|m| m == "sealed");
    if sealed && marker.len() > 1 {
        return Err(MailFault::Malformed("more than one X-Peerd header"));
    }
    if raw.len() > max_size {
        return if sealed {
            Err(MailFault::Malformed("larger than max_message_size"))
        } else {
            Ok(Classified::Other {
                from,
                text: String::new(),
            })
        };
    }
    let message = parser.parse(raw).ok_or(MailFault::NotMail)?;
    if !sealed {
        let text = message
            .body_text(0)
            .map(|t| truncate(&t, HINT_TEXT_LIMIT).to_owned())
            .unwrap_or_default();
        return Ok(Classified::Other { from, text });
    }
    let sealed: Vec<usize> = message
        .parts
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_content_type("application", "x-peerd-sealed"))
        .map(|(i, _)| i)
        .collect();
    let index = match sealed.as_slice() {
        [] => return Err(MailFault::Malformed("no sealed part")),
        [one] => *one,
        _ => return Err(MailFault::Malformed("more than one sealed part")),
    };
    // Our mail has the sealed part at the top: the whole body, or a direct
    // child of the top multipart. Anything buried deeper is not ours.
    let top_level = index == 0
        || message.parts[0].sub_parts().is_some_and(|children| {
            children
                .iter()
                .any(|c| usize::try_from(*c).ok() == Some(index))
        });
    if !top_level {
        return Err(MailFault::Malformed("sealed part is not at the top level"));
    }
    let part = &message.parts[index];
    if !part
        .content_transfer_encoding()
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("base64"))
    {
        return Err(MailFault::Malformed("sealed part is not base64"));
    }
    // Decode the part's raw body strictly ourselves: mail-parser's decoder
    // is lenient and would turn garbage into bytes.
    let start = usize::try_from(part.offset_body).unwrap_or(usize::MAX);
    let end = usize::try_from(part.offset_end).unwrap_or(usize::MAX);
    let body = raw
        .get(start..end)
        .ok_or(MailFault::Malformed("sealed part is truncated"))?;
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let envelope = STANDARD
        .decode(&compact)
        .map_err(|_| MailFault::Malformed("sealed part is not valid base64"))?;
    Ok(Classified::Sealed { from, envelope })
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str) -> MailHeaders<'_> {
        MailHeaders {
            from_name: "alice",
            from: "alice@isp-a.test",
            to: "hitoshi@isp-b.test",
            date: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            message_id: id,
        }
    }

    #[test]
    fn sealed_mail_is_recognised_and_its_part_recovered() {
        let sealed: Vec<u8> = (0..=255).collect();
        let raw = sealed_mail(&headers("<1@isp-a.test>"), &sealed).unwrap();
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(text.contains("X-Peerd: sealed; v=1\r\n"), "{text}");
        assert!(text.contains("Message-ID: <1@isp-a.test>\r\n"));
        assert!(text.contains("Content-Type: application/x-peerd-sealed\r\n"));
        match classify(&raw, 1 << 20).unwrap() {
            Classified::Sealed { from, envelope } => {
                assert_eq!(envelope, sealed);
                assert_eq!(from.as_deref(), Some("alice@isp-a.test"));
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn building_is_deterministic_for_one_message_id() {
        let a = sealed_mail(&headers("<1@isp-a.test>"), b"x").unwrap();
        let b = sealed_mail(&headers("<1@isp-a.test>"), b"x").unwrap();
        let c = sealed_mail(&headers("<2@isp-a.test>"), b"x").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn message_ids_are_random_and_in_our_domain() {
        let a = new_message_id("alice@isp-a.test").unwrap();
        let b = new_message_id("alice@isp-a.test").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with('<') && a.ends_with("@isp-a.test>"), "{a}");
    }

    #[test]
    fn plain_mail_reads_like_the_original_design() {
        let c = Candidate::new(
            "203.0.113.7:7447".parse().unwrap(),
            peerd_core::CandidateKind::Host,
        )
        .unwrap();
        let raw = plain_mail(
            &headers("<3@isp-a.test>"),
            &[c],
            UNIX_EPOCH + Duration::from_secs(1_700_003_600),
        )
        .unwrap();
        let text = String::from_utf8(raw).unwrap();
        assert!(
            text.contains("alice is reachable at 203.0.113.7 port 7447\r\n"),
            "{text}"
        );
        assert!(text.contains("X-Peerd: plain; v=1\r\n"));
    }

    #[test]
    fn unmarked_mail_is_other() {
        let raw = b"From: bob@example.org\r\nSubject: hi\r\n\r\nsee you at 10.0.0.1\r\n";
        match classify(raw, 1 << 20).unwrap() {
            Classified::Other { from, text } => {
                assert_eq!(from.as_deref(), Some("bob@example.org"));
                assert!(text.contains("10.0.0.1"));
            },
            other => panic!("{other:?}"),
        }
    }
}
