//! The framed protocol spoken inside an authenticated QUIC connection.
//!
//! Everything here is read from the network, from a peer whose key is in
//! the address book but whose program may be buggy or hostile, so every
//! decoder checks lengths before it reads, caps what it allocates
//! ([`MAX_BODY`]) and returns an error instead of panicking. The byte
//! layout is documented in `docs/channel.md`; the tests below and the
//! fuzz target (`fuzz/fuzz_targets/frames.rs`) hold the code to it.
//!
//! A frame is `type (1 byte) | length (2 bytes, big-endian) | body`.
//! Two kinds of QUIC stream carry frames:
//!
//! - the **control stream** (the first bidirectional stream, opened by the
//!   side that dialled): [`Frame::Hello`] each way, then [`Frame::Ack`]s;
//!   unknown frame types are skipped, so later versions can add frames;
//! - every other bidirectional stream begins with [`Frame::Open`] from the
//!   opener and [`Frame::Accept`] or [`Frame::Refuse`] from the other side;
//!   after `Accept` the stream carries the application's bytes unframed.

use std::fmt;

use peerd_core::ServiceName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The TLS ALPN protocol name: the major version of this protocol. A
/// peer speaking another major version fails the handshake
/// (`no_application_protocol`) before any frame is sent.
pub const ALPN: &[u8] = b"peerd/1";
/// The version inside [`Hello`] (minor revisions of `peerd/1`).
pub const VERSION: u8 = 1;
/// The largest frame body accepted or sent.
pub const MAX_BODY: usize = 1024;
/// The longest refusal text sent; longer texts are cut (at a character
/// boundary), and received ones are cut for display.
pub const MAX_REASON: usize = 200;

const T_HELLO: u8 = 0x01;
const T_ACK: u8 = 0x02;
const T_OPEN: u8 = 0x10;
const T_ACCEPT: u8 = 0x11;
const T_REFUSE: u8 = 0x12;

const HELLO_LEN: usize = 18;
const OPEN_PLAIN: u8 = 0;
const OPEN_SERVICE: u8 = 1;

/// The first frame each side sends on the control stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The sender's protocol version ([`VERSION`]).
    pub version: u8,
    /// Set by the side with the lower key only: which connection it has
    /// chosen (higher wins; see `docs/channel.md`, "One connection per
    /// peer"); 0 from the other side.
    pub selection: u64,
    /// The highest sequence number of the receiver's announcements that
    /// the sender has accepted (0: none), so the receiver's outbox can stop
    /// re-sending it.
    pub acked: u64,
}

/// What a new stream is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenRequest {
    /// A `[[service]]` of the accepting host, by name.
    Service(ServiceName),
    /// A stream for whatever local program takes plain streams on the
    /// accepting host (see `ConnectorHandle::incoming_streams`).
    Plain,
}

/// Why a stream was refused, as a number both sides agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefuseCode(pub u8);

impl RefuseCode {
    /// Anything not listed below.
    pub const OTHER: Self = Self(0);
    /// No `[[service]]` of that name.
    pub const UNKNOWN_SERVICE: Self = Self(1);
    /// The service exists but this peer is not in its `peers`.
    pub const NOT_ALLOWED: Self = Self(2);
    /// The service's `target` did not accept the TCP connection.
    pub const TARGET_UNREACHABLE: Self = Self(3);
    /// Nobody on the accepting host takes plain streams.
    pub const NO_LISTENER: Self = Self(4);
    /// The stream did not start with a valid `Open` frame.
    pub const PROTOCOL: Self = Self(5);

    /// What the code means, in words.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::UNKNOWN_SERVICE => "unknown service",
            Self::NOT_ALLOWED => "not allowed",
            Self::TARGET_UNREACHABLE => "target unreachable",
            Self::NO_LISTENER => "no listener",
            Self::PROTOCOL => "protocol error",
            _ => "refused",
        }
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Control stream, first frame each way.
    Hello(Hello),
    /// Control stream: the sender accepted the receiver's announcement
    /// with this sequence number (after the hello).
    Ack {
        /// The acknowledged sequence number.
        sequence: u64,
    },
    /// First frame of a data stream, from its opener.
    Open(OpenRequest),
    /// The answer to `Open`: the stream is connected; raw bytes follow.
    Accept,
    /// The answer to `Open`: no; the stream ends.
    Refuse {
        /// The agreed reason.
        code: RefuseCode,
        /// The refusing side's words (at most [`MAX_REASON`] bytes of
        /// UTF-8; show it through [`display_text`]).
        reason: String,
    },
    /// A frame type this version does not know (skipped on the control
    /// stream, an error where a specific frame is expected).
    Unknown {
        /// Its type byte.
        kind: u8,
    },
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The length field is above [`MAX_BODY`].
    #[error("frame body of {0} bytes (at most {MAX_BODY})")]
    TooLong(usize),
    /// The body is too short or too long for its type.
    #[error("{kind} frame with a {len}-byte body")]
    BadLength {
        /// The frame type.
        kind: &'static str,
        /// The body length seen.
        len: usize,
    },
    /// An `Open` frame with an unknown kind byte.
    #[error("open frame of unknown kind {0}")]
    BadOpenKind(u8),
    /// An `Open` frame whose service name is not a valid name.
    #[error("open frame with an invalid service name")]
    BadServiceName,
    /// A `Refuse` text that is not UTF-8.
    #[error("refuse frame with a reason that is not UTF-8")]
    BadReason,
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// Reading or writing the stream failed.
    #[error("stream: {0}")]
    Io(String),
}

impl Frame {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, body): (u8, Vec<u8>) = match self {
            Self::Hello(h) => {
                let mut b = Vec::with_capacity(HELLO_LEN);
                b.push(h.version);
                b.push(0); // flags, none defined
                b.extend_from_slice(&h.selection.to_be_bytes());
                b.extend_from_slice(&h.acked.to_be_bytes());
                (T_HELLO, b)
            },
            Self::Ack { sequence } => (T_ACK, sequence.to_be_bytes().to_vec()),
            Self::Open(OpenRequest::Plain) => (T_OPEN, vec![OPEN_PLAIN]),
            Self::Open(OpenRequest::Service(name)) => {
                let mut b = vec![OPEN_SERVICE];
                b.extend_from_slice(name.as_str().as_bytes());
                (T_OPEN, b)
            },
            Self::Accept => (T_ACCEPT, Vec::new()),
            Self::Refuse { code, reason } => {
                let mut b = vec![code.0];
                b.extend_from_slice(cut(reason, MAX_REASON).as_bytes());
                (T_REFUSE, b)
            },
            Self::Unknown { kind } => (*kind, Vec::new()),
        };
        let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(3 + body.len());
        out.push(kind);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body[..usize::from(len)]);
        out
    }

    /// Decodes one frame from the start of `buf`: `Ok(None)` when more
    /// bytes are needed, else the frame and how many bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
        let Some(header) = buf.get(..3) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([header[1], header[2]]));
        if len > MAX_BODY {
            return Err(WireError::TooLong(len));
        }
        let Some(body) = buf.get(3..3 + len) else {
            return Ok(None);
        };
        Ok(Some((Self::decode_body(header[0], body)?, 3 + len)))
    }

    /// Decodes a frame body of type `kind`.
    pub fn decode_body(kind: u8, body: &[u8]) -> Result<Frame, WireError> {
        let bad = |kind: &'static str| WireError::BadLength {
            kind,
            len: body.len(),
        };
        match kind {
            T_HELLO => {
                // Later minor versions may append fields: a longer body is
                // fine, a shorter one is not.
                if body.len() < HELLO_LEN {
                    return Err(bad("hello"));
                }
                Ok(Self::Hello(Hello {
                    version: body[0],
                    selection: be_u64(&body[2..10]),
                    acked: be_u64(&body[10..18]),
                }))
            },
            T_ACK => {
                if body.len() != 8 {
                    return Err(bad("ack"));
                }
                Ok(Self::Ack {
                    sequence: be_u64(body),
                })
            },
            T_OPEN => match body.split_first() {
                None => Err(bad("open")),
                Some((&OPEN_PLAIN, [])) => Ok(Self::Open(OpenRequest::Plain)),
                Some((&OPEN_PLAIN, _)) => Err(bad("open")),
                Some((&OPEN_SERVICE, name)) => {
                    let name = std::str::from_utf8(name).map_err(|_| WireError::BadServiceName)?;
                    let name = name
                        .parse::<ServiceName>()
                        .map_err(|_| WireError::BadServiceName)?;
                    Ok(Self::Open(OpenRequest::Service(name)))
                },
                Some((&other, _)) => Err(WireError::BadOpenKind(other)),
            },
            T_ACCEPT => {
                if !body.is_empty() {
                    return Err(bad("accept"));
                }
                Ok(Self::Accept)
            },
            T_REFUSE => {
                let Some((&code, text)) = body.split_first() else {
                    return Err(bad("refuse"));
                };
                let text = std::str::from_utf8(text).map_err(|_| WireError::BadReason)?;
                Ok(Self::Refuse {
                    code: RefuseCode(code),
                    reason: cut(text, MAX_REASON).to_owned(),
                })
            },
            other => Ok(Self::Unknown { kind: other }),
        }
    }
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A peer's text made safe for logs and messages: control characters
/// escaped, at most [`MAX_REASON`] bytes kept.
pub fn display_text(s: &str) -> String {
    cut(s, MAX_REASON).escape_debug().to_string()
}

/// Reads one frame; `Ok(None)` at a clean end of the stream before a frame.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, WireError> {
    let mut header = [0u8; 3];
    let mut got = 0;
    while got < header.len() {
        let n = r
            .read(&mut header[got..])
            .await
            .map_err(|e| WireError::Io(e.to_string()))?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(WireError::Truncated)
            };
        }
        got += n;
    }
    let len = usize::from(u16::from_be_bytes([header[1], header[2]]));
    if len > MAX_BODY {
        return Err(WireError::TooLong(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::Truncated,
        _ => WireError::Io(e.to_string()),
    })?;
    Frame::decode_body(header[0], &body).map(Some)
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> Result<(), WireError> {
    w.write_all(&frame.encode())
        .await
        .map_err(|e| WireError::Io(e.to_string()))
}

impl fmt::Display for RefuseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.meaning())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello {
                version: VERSION,
                selection: 0x0102_0304_0506_0708,
                acked: u64::MAX,
            }),
            Frame::Ack { sequence: 42 },
            Frame::Open(OpenRequest::Plain),
            Frame::Open(OpenRequest::Service("ssh".parse().unwrap())),
            Frame::Accept,
            Frame::Refuse {
                code: RefuseCode::NOT_ALLOWED,
                reason: "peer hitoshi may not open ssh".into(),
            },
        ]
    }

    #[test]
    fn frames_round_trip() {
        for f in all_frames() {
            let bytes = f.encode();
            assert_eq!(Frame::decode(&bytes).unwrap(), Some((f, bytes.len())));
        }
    }

    #[test]
    fn documented_bytes() {
        // The examples in docs/channel.md, byte for byte.
        let hello = Frame::Hello(Hello {
            version: 1,
            selection: 0x0006_2d7f_0000_0001,
            acked: 0x0006_2d7e_ffff_0000,
        });
        assert_eq!(
            hex(&hello.encode()),
            "01 00 12 01 00 00 06 2d 7f 00 00 00 01 00 06 2d 7e ff ff 00 00"
        );
        assert_eq!(
            hex(&Frame::Ack { sequence: 7 }.encode()),
            "02 00 08 00 00 00 00 00 00 00 07"
        );
        assert_eq!(
            hex(&Frame::Open(OpenRequest::Service("ssh".parse().unwrap())).encode()),
            "10 00 04 01 73 73 68"
        );
        assert_eq!(
            hex(&Frame::Open(OpenRequest::Plain).encode()),
            "10 00 01 00"
        );
        assert_eq!(hex(&Frame::Accept.encode()), "11 00 00");
        assert_eq!(
            hex(&Frame::Refuse {
                code: RefuseCode::UNKNOWN_SERVICE,
                reason: "no".into()
            }
            .encode()),
            "12 00 03 01 6e 6f"
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn hostile_frames_are_errors_not_panics() {
        let cases: &[(&[u8], WireError)] = &[
            (&[0x01, 0xff, 0xff], WireError::TooLong(0xffff)),
            (&[0x01, 0x04, 0x01], WireError::TooLong(1025)),
            (
                &[0x01, 0x00, 0x01, 0x01],
                WireError::BadLength {
                    kind: "hello",
                    len: 1,
                },
            ),
            (
                &[0x02, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0],
                WireError::BadLength {
                    kind: "ack",
                    len: 7,
                },
            ),
            (
                &[0x10, 0x00, 0x00],
                WireError::BadLength {
                    kind: "open",
                    len: 0,
                },
            ),
            (
                &[0x10, 0x00, 0x02, 0x00, b'x'],
                WireError::BadLength {
                    kind: "open",
                    len: 2,
                },
            ),
            (&[0x10, 0x00, 0x02, 0x07, b'x'], WireError::BadOpenKind(7)),
            (&[0x10, 0x00, 0x01, 0x01], WireError::BadServiceName),
            (
                &[0x10, 0x00, 0x03, 0x01, b'A', b'B'],
                WireError::BadServiceName,
            ),
            (
                &[0x10, 0x00, 0x03, 0x01, 0xff, 0xfe],
                WireError::BadServiceName,
            ),
            (
                &[0x10, 0x00, 0x03, 0x01, b'.', b'.'],
                WireError::BadServiceName,
            ),
            (
                &[0x11, 0x00, 0x01, 0x00],
                WireError::BadLength {
                    kind: "accept",
                    len: 1,
                },
            ),
            (
                &[0x12, 0x00, 0x00],
                WireError::BadLength {
                    kind: "refuse",
                    len: 0,
                },
            ),
            (&[0x12, 0x00, 0x02, 0x01, 0xc3], WireError::BadReason),
        ];
        for (bytes, want) in cases {
            assert_eq!(Frame::decode(bytes).as_ref(), Err(want), "{bytes:02x?}");
        }
        // A 33-byte service name is not a name.
        let mut long = vec![0x10, 0x00, 34, 0x01];
        long.extend_from_slice(&[b'a'; 33]);
        assert_eq!(Frame::decode(&long), Err(WireError::BadServiceName));
        // Incomplete input asks for more instead of failing.
        for f in all_frames() {
            let bytes = f.encode();
            for end in 0..bytes.len() {
                assert_eq!(Frame::decode(&bytes[..end]), Ok(None));
            }
        }
        // Unknown types are reported as such (skipped on the control stream).
        assert_eq!(
            Frame::decode(&[0x7f, 0x00, 0x02, 1, 2]),
            Ok(Some((Frame::Unknown { kind: 0x7f }, 5)))
        );
    }

    #[test]
    fn refusal_text_is_cut_and_escaped() {
        let long = "é".repeat(300);
        let f = Frame::Refuse {
            code: RefuseCode::OTHER,
            reason: long,
        };
        let bytes = f.encode();
        assert_eq!(bytes.len(), 3 + 1 + MAX_REASON);
        let Some((Frame::Refuse { reason, .. }, _)) = Frame::decode(&bytes).unwrap() else {
            panic!("not a refuse frame");
        };
        assert_eq!(reason.chars().count(), MAX_REASON / 2);
        assert_eq!(display_text("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
    }

    #[tokio::test]
    async fn async_reader_handles_ends_and_caps() {
        let mut empty: &[u8] = &[];
        assert_eq!(read_frame(&mut empty).await, Ok(None));
        let mut half: &[u8] = &[0x01, 0x00];
        assert_eq!(read_frame(&mut half).await, Err(WireError::Truncated));
        let mut short: &[u8] = &[0x02, 0x00, 0x08, 1, 2];
        assert_eq!(read_frame(&mut short).await, Err(WireError::Truncated));
        let mut huge: &[u8] = &[0x02, 0xff, 0xff];
        assert_eq!(read_frame(&mut huge).await, Err(WireError::TooLong(0xffff)));
        let mut two = [Frame::Accept.encode(), Frame::Ack { sequence: 9 }.encode()].concat();
        let mut r: &[u8] = &two;
        assert_eq!(read_frame(&mut r).await, Ok(Some(Frame::Accept)));
        assert_eq!(
            read_frame(&mut r).await,
            Ok(Some(Frame::Ack { sequence: 9 }))
        );
        assert_eq!(read_frame(&mut r).await, Ok(None));
        two.clear();
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut rest = &bytes[..];
            while let Ok(Some((frame, used))) = Frame::decode(rest) {
                prop_assert!(used >= 3 && used <= rest.len());
                // What decodes re-encodes to something that decodes the same.
                if !matches!(frame, Frame::Unknown { .. }) {
                    let again = frame.encode();
                    prop_assert_eq!(Frame::decode(&again).unwrap().map(|x| x.0), Some(frame));
                }
                rest = &rest[used..];
            }
        }
    }
}
