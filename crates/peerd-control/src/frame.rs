//! Line framing: one JSON document per `\n`-terminated line, at most
//! [`MAX_LINE`] bytes.
//!
//! [`LineReader`] is sans-I/O: the caller reads bytes from wherever it
//! likes (a blocking socket in peerctl, a tokio socket in the daemon) and
//! pushes them in; complete lines come out. It never holds more than one
//! unfinished line of at most [`MAX_LINE`] bytes plus the last chunk
//! pushed, so a peer that sends gigabytes without a newline costs
//! [`MAX_LINE`] bytes of memory and then an error, never more.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The longest line either side accepts (without its `\n`): 1 MiB.
pub const MAX_LINE: usize = 1 << 20;

/// Why bytes are not a line, or a line is not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// More than the limit arrived without a newline. The connection
    /// cannot be resynchronised and must be closed.
    #[error("line longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// The line is empty.
    #[error("empty line")]
    Empty,
    /// The line is not JSON, or not the message expected (an unknown
    /// method, field or variant, a bad name, nesting too deep, ...).
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Splits a byte stream into lines of at most `max_line` bytes.
#[derive(Debug)]
pub struct LineReader {
    /// Bytes received and not yet returned as lines.
    buf: Vec<u8>,
    /// `buf[..scanned]` is known to hold no `\n`.
    scanned: usize,
    /// The longest line accepted.
    max_line: usize,
    /// Set once a line was too long: the stream has no usable boundary any
    /// more, so nothing else is returned.
    failed: bool,
}

impl Default for LineReader {
    fn default() -> Self {
        Self::new(MAX_LINE)
    }
}

impl LineReader {
    /// A reader that refuses lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            max_line,
            failed: false,
        }
    }

    /// Adds bytes read from the stream. Call [`next_line`](Self::next_line)
    /// until it returns `Ok(None)` after every push: that is what keeps
    /// memory bounded.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next complete line, without its `\n` (a `\r` before it stays:
    /// JSON reads it as whitespace); `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// [`FrameError::TooLong`] once more than `max_line` bytes arrived
    /// without a newline; from then on every call fails the same way.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let too_long = FrameError::TooLong { max: self.max_line };
        if self.failed {
            return Err(too_long);
        }
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = self.scanned + i;
                if end > self.max_line {
                    return Err(self.fail(too_long));
                }
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                self.scanned = 0;
                Ok(Some(line))
            },
            None if self.buf.len() > self.max_line => Err(self.fail(too_long)),
            None => {
                self.scanned = self.buf.len();
                Ok(None)
            },
        }
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.failed = true;
        self.buf = Vec::new();
        self.scanned = 0;
        e
    }

    /// Bytes received after the last complete line (for a connection that
    /// stops being line-based, as after `open`).
    pub fn into_buffered(self) -> Vec<u8> {
        self.buf
    }

    /// Whether bytes of an unfinished line are waiting.
    pub fn has_partial_line(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Forgets everything buffered (for input that is to be ignored).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.scanned = 0;
    }
}

/// One message as a line: compact JSON and `\n`.
///
/// # Errors
/// [`FrameError::TooLong`] when the JSON is longer than [`MAX_LINE`]: the
/// other side would refuse it. [`FrameError::Malformed`] if serde fails
/// (not for this crate's types, whose keys are all strings).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut line = serde_json::to_vec(message).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if line.len() > MAX_LINE {
        return Err(FrameError::TooLong { max: MAX_LINE });
    }
    line.push(b'\n');
    Ok(line)
}

/// A line (without its `\n`) as a message. serde_json limits nesting to
/// 128 levels, so deep input is an error rather than a stack overflow.
///
/// # Errors
/// [`FrameError::Empty`] for an empty or blank line,
/// [`FrameError::Malformed`] for anything that is not exactly one `T`.
pub fn decode<T: DeserializeOwned>(line: &[u8]) -> Result<T, FrameError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(FrameError::Empty);
    }
    serde_json::from_slice(line).map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(r: &mut LineReader) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut lines = Vec::new();
        while let Some(l) = r.next_line()? {
            lines.push(l);
        }
        Ok(lines)
    }

    #[test]
    fn splits_lines_across_pushes() {
        let mut r = LineReader::new(16);
        r.push(b"ab");
        assert_eq!(drain(&mut r).unwrap(), Vec::<Vec<u8>>::new());
        r.push(b"c\nde\n\nf");
        assert_eq!(
            drain(&mut r).unwrap(),
            vec![b"abc".to_vec(), b"de".to_vec(), Vec::new()]
        );
        assert!(r.has_partial_line());
        r.push(b"g\r\n");
        assert_eq!(drain(&mut r).unwrap(), vec![b"fg\r".to_vec()]);
        assert!(!r.has_partial_line());
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_and_one_more_byte_fails() {
        let mut r = LineReader::new(4);
        r.push(b"abcd\n");
        assert_eq!(drain(&mut r).unwrap(), vec![b"abcd".to_vec()]);
        r.push(b"abcde\nok\n");
        assert_eq!(r.next_line(), Err(FrameError::TooLong { max: 4 }));
        // poisoned: nothing after it is trusted
        r.push(b"ok\n");
        assert_eq!(r.next_line(), Err(FrameError::TooLong { max: 4 }));
        assert!(!r.has_partial_line());
    }

    #[test]
    fn endless_input_without_newline_is_refused_with_bounded_memory() {
        let mut r = LineReader::new(1000);
        let chunk = [b'x'; 300];
        let mut pushed = 0;
        let err = loop {
            r.push(&chunk);
            pushed += chunk.len();
            assert!(r.buf.len() <= 1000 + chunk.len());
            if let Err(e) = r.next_line() {
                break e;
            }
        };
        assert_eq!(err, FrameError::TooLong { max: 1000 });
        assert_eq!(pushed, 1200);
        assert_eq!(r.buf.capacity(), 0);
    }

    #[test]
    fn leftover_bytes_are_handed_back() {
        let mut r = LineReader::default();
        r.push(b"{\"a\":1}\nraw bytes \x00\xff");
        assert_eq!(drain(&mut r).unwrap(), vec![b"{\"a\":1}".to_vec()]);
        assert_eq!(r.into_buffered(), b"raw bytes \x00\xff");
    }

    #[test]
    fn encode_refuses_what_the_other_side_would_refuse() {
        let big = "x".repeat(MAX_LINE);
        assert_eq!(encode(&big), Err(FrameError::TooLong { max: MAX_LINE }));
        let ok = "x".repeat(MAX_LINE - 2);
        assert_eq!(encode(&ok).unwrap().len(), MAX_LINE + 1);
    }

    #[test]
    fn decode_errors_are_errors() {
        assert_eq!(decode::<u32>(b""), Err(FrameError::Empty));
        assert_eq!(decode::<u32>(b" \r"), Err(FrameError::Empty));
        assert!(matches!(
            decode::<u32>(b"\xff\xfe"),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode::<u32>(b"1 2"),
            Err(FrameError::Malformed(_))
        ));
        let deep = "[".repeat(100_000);
        let err = decode::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_lines(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..400),
            cuts in proptest::collection::vec(1usize..50, 1..20),
        ) {
            let mut whole = LineReader::new(64);
            whole.push(&data);
            let want = drain(&mut whole);
            let mut r = LineReader::new(64);
            let mut got = Vec::new();
            let mut rest = &data[..];
            let mut cut = cuts.iter().cycle();
            let result = loop {
                if rest.is_empty() {
                    break Ok(got);
                }
                let n = (*cut.next().unwrap_or(&1)).min(rest.len());
                r.push(&rest[..n]);
                rest = &rest[n..];
                match drain(&mut r) {
                    Ok(lines) => got.extend(lines),
                    Err(e) => break Err(e),
                }
            };
            // The same lines, or the same refusal, however the bytes arrive.
            prop_assert_eq!(want, result);
        }
    }
}
