//! The POP3 wire format without I/O: lines, status indicators, multi-line
//! responses and the listings inside them.
//!
//! RFC 1939 section 3: a response is a status line starting with `+OK` or
//! `-ERR`; some responses continue with lines terminated by a line holding
//! a single `.`. Lines of the body that begin with `.` are "byte-stuffed"
//! with one more `.` by the server, which the client strips again. Every
//! line ends with CRLF; a bare LF is accepted too (some servers send it).
//!
//! Everything here works on bytes already received, so the parsers can be
//! tested and fuzzed without sockets: [`LineBuffer`] finds lines in a fixed
//! buffer (it never grows: a line longer than the limit is an error as soon
//! as the buffer is full), [`Body`] undoes byte-stuffing under a size cap,
//! and the `parse_*` functions read single lines.

use crate::error::{Error, Result, quote};

/// The smallest line limit: RFC 2449 section 4 lets a status line be 512
/// octets including CRLF.
pub const MIN_MAX_LINE: usize = 512;
/// The largest line limit (the buffer is allocated up front).
pub const MAX_MAX_LINE: usize = 1 << 20;

/// A fixed-size receive buffer that hands out complete lines.
///
/// It holds at most `max_line + 2` bytes (a line and its CRLF), so memory
/// stays bounded whatever the server sends.
pub struct LineBuffer {
    buf: Box<[u8]>,
    /// Start of the unread bytes.
    start: usize,
    /// End of the unread bytes.
    end: usize,
    /// How far past `start` the search for LF has already looked.
    scanned: usize,
    /// Where the LF of the line found by `line_ready` is, past `start`.
    lf: Option<usize>,
    max_line: usize,
}

impl std::fmt::Debug for LineBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineBuffer")
            .field("buffered", &(self.end - self.start))
            .field("max_line", &self.max_line)
            .finish()
    }
}

impl LineBuffer {
    /// A buffer for lines of at most `max_line` bytes, not counting the
    /// line ending (kept within [`MIN_MAX_LINE`]..=[`MAX_MAX_LINE`]).
    pub fn new(max_line: usize) -> Self {
        let max_line = max_line.clamp(MIN_MAX_LINE, MAX_MAX_LINE);
        LineBuffer {
            buf: vec![0; max_line + 2].into_boxed_slice(),
            start: 0,
            end: 0,
            scanned: 0,
            lf: None,
            max_line,
        }
    }

    /// The line limit in force.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Whether bytes are buffered that no line has consumed yet.
    pub fn has_buffered(&self) -> bool {
        self.end > self.start
    }

    /// Whether a complete line is buffered. Errors with
    /// [`Error::LineTooLong`] as soon as the buffer is full without one, or
    /// when the line found is over the limit.
    pub fn line_ready(&mut self) -> Result<bool> {
        if self.lf.is_some() {
            return Ok(true);
        }
        let unread = &self.buf[self.start..self.end];
        let from = self.scanned.min(unread.len());
        match unread[from..].iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let lf = from + offset;
                let len = if lf > 0 && unread[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                if len > self.max_line {
                    return Err(Error::LineTooLong { max: self.max_line });
                }
                self.lf = Some(lf);
                Ok(true)
            },
            None => {
                self.scanned = unread.len();
                if unread.len() >= self.max_line + 2 {
                    return Err(Error::LineTooLong { max: self.max_line });
                }
                Ok(false)
            },
        }
    }

    /// The next complete line, without its line ending (CRLF or a bare LF).
    /// `Ok(None)` means more bytes are needed: read into [`spare`] and call
    /// [`filled`].
    ///
    /// [`spare`]: LineBuffer::spare
    /// [`filled`]: LineBuffer::filled
    pub fn next_line(&mut self) -> Result<Option<&[u8]>> {
        if !self.line_ready()? {
            return Ok(None);
        }
        let Some(lf) = self.lf.take() else {
            return Ok(None);
        };
        let line_start = self.start;
        let mut end = line_start + lf;
        if lf > 0 && self.buf[end - 1] == b'\r' {
            end -= 1;
        }
        self.start += lf + 1;
        self.scanned = 0;
        Ok(Some(&self.buf[line_start..end]))
    }

    /// Free space to read into, never empty after [`next_line`] returned
    /// `Ok(None)`. Moves a partial line to the front of the buffer first.
    ///
    /// [`next_line`]: LineBuffer::next_line
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`spare`](LineBuffer::spare).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }
}

/// A status line (RFC 1939 section 3, RFC 5034 section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<'a> {
    /// `+OK`, with the text after it.
    Ok(&'a [u8]),
    /// `-ERR`, with the text after it.
    Err(&'a [u8]),
    /// `+ `: a SASL continuation, with its (base64) text.
    Continue(&'a [u8]),
}

/// Reads a status line. The indicators are upper case (RFC 1939 section 3)
/// and followed by the end of the line or a space.
pub fn parse_status(line: &[u8]) -> Result<Status<'_>> {
    fn rest<'a>(line: &'a [u8], indicator: &[u8]) -> Option<&'a [u8]> {
        let after = line.strip_prefix(indicator)?;
        match after.split_first() {
            None => Some(after),
            Some((b' ', text)) => Some(text),
            Some(_) => None,
        }
    }
    if let Some(text) = rest(line, b"+OK") {
        Ok(Status::Ok(text))
    } else if let Some(text) = rest(line, b"-ERR") {
        Ok(Status::Err(text))
    } else if let Some(text) = rest(line, b"+") {
        Ok(Status::Continue(text))
    } else {
        Err(Error::Protocol(format!(
            "expected +OK or -ERR, got \"{}\"",
            quote(line)
        )))
    }
}

/// A line of a multi-line response after byte-stuffing is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLine<'a> {
    /// A line of the body.
    Line(&'a [u8]),
    /// The terminating `.` line.
    End,
}

/// Undoes byte-stuffing on one line of a multi-line response (RFC 1939
/// section 3): a line that is exactly `.` ends the response; otherwise one
/// leading `.` is removed.
pub fn unstuff(line: &[u8]) -> BodyLine<'_> {
    match line {
        b"." => BodyLine::End,
        _ => BodyLine::Line(line.strip_prefix(b".").unwrap_or(line)),
    }
}

/// A message body collected from a multi-line response, with CRLF after
/// every line, under a size cap.
#[derive(Debug)]
pub struct Body {
    bytes: Vec<u8>,
    max: u64,
}

/// What [`Body::push`] made of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// More lines follow.
    More,
    /// The terminating line was seen: the body is complete.
    Done,
    /// The line would take the body over the cap.
    TooLarge,
}

impl Body {
    /// An empty body that may grow to `max` bytes.
    pub fn new(max: u64) -> Self {
        Body {
            bytes: Vec::new(),
            max,
        }
    }

    /// Adds one raw line (without its line ending) of the response.
    pub fn push(&mut self, line: &[u8]) -> Push {
        match unstuff(line) {
            BodyLine::End => Push::Done,
            BodyLine::Line(content) => {
                let new_len = (self.bytes.len() as u64)
                    .saturating_add(content.len() as u64)
                    .saturating_add(2);
                if new_len > self.max {
                    return Push::TooLarge;
                }
                self.bytes.extend_from_slice(content);
                self.bytes.extend_from_slice(b"\r\n");
                Push::More
            },
        }
    }

    /// The body: every line ends with CRLF (also those the server ended
    /// with a bare LF).
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b' ' || b == b'\t')
        .filter(|field| !field.is_empty())
}

fn parse_number<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn parse_msgno(field: &[u8]) -> Option<u32> {
    parse_number::<u32>(field).filter(|&n| n > 0)
}

/// Reads `msgno size` (a LIST line, or the text of `+OK` to `LIST n`).
/// Text after the size is allowed (RFC 1939 leaves it to the server).
pub fn parse_list_line(line: &[u8]) -> Result<(u32, u64)> {
    let mut it = fields(line);
    let parsed = (|| Some((parse_msgno(it.next()?)?, parse_number::<u64>(it.next()?)?)))();
    parsed.ok_or_else(|| {
        Error::Protocol(format!(
            "expected \"message-number size\", got \"{}\"",
            quote(line)
        ))
    })
}

/// Reads the text of `+OK` to STAT: `count size`.
pub fn parse_stat(text: &[u8]) -> Result<(u32, u64)> {
    let mut it = fields(text);
    let parsed = (|| {
        Some((
            parse_number::<u32>(it.next()?)?,
            parse_number::<u64>(it.next()?)?,
        ))
    })();
    parsed.ok_or_else(|| {
        Error::Protocol(format!(
            "expected \"count size\" after STAT, got \"{}\"",
            quote(text)
        ))
    })
}

/// Longest unique-id (RFC 1939 section 7, UIDL).
pub const UID_MAX_LEN: usize = 70;

/// Reads `msgno unique-id` (a UIDL line). The unique-id is 1 to 70
/// characters in 0x21..=0x7E (RFC 1939 section 7); nothing may follow it.
pub fn parse_uidl_line(line: &[u8]) -> Result<(u32, String)> {
    let mut it = fields(line);
    let bad = || {
        Error::Protocol(format!(
            "expected \"message-number unique-id\", got \"{}\"",
            quote(line)
        ))
    };
    let msgno = it.next().and_then(parse_msgno).ok_or_else(bad)?;
    let uid = it.next().ok_or_else(bad)?;
    if it.next().is_some() {
        return Err(bad());
    }
    if uid.len() > UID_MAX_LEN || !uid.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(Error::Protocol(format!(
            "invalid unique-id \"{}\" (1 to 70 characters 0x21-0x7E)",
            quote(uid)
        )));
    }
    // Checked above: all ASCII.
    let uid = String::from_utf8_lossy(uid).into_owned();
    Ok((msgno, uid))
}

/// Reads one CAPA line (RFC 2449 section 5): a capability name, optionally
/// followed by arguments, all printable ASCII.
pub fn parse_capability(line: &[u8]) -> Result<String> {
    if line.is_empty()
        || !line
            .iter()
            .all(|&b| (0x20..=0x7e).contains(&b) || b == b'\t')
    {
        return Err(Error::Protocol(format!(
            "invalid capability line \"{}\"",
            quote(line)
        )));
    }
    Ok(String::from_utf8_lossy(line).into_owned())
}

/// Whether `-ERR` text carries a response code saying the failure is
/// temporary: `[IN-USE]`, `[LOGIN-DELAY]` (RFC 2449 section 8) or
/// `[SYS/TEMP]` (RFC 3206).
pub fn is_temporary_code(text: &[u8]) -> bool {
    let Some(rest) = text.strip_prefix(b"[") else {
        return false;
    };
    let Some(end) = rest.iter().position(|&b| b == b']') else {
        return false;
    };
    let code = &rest[..end];
    [&b"IN-USE"[..], b"LOGIN-DELAY", b"SYS/TEMP"]
        .iter()
        .any(|known| {
            code.eq_ignore_ascii_case(known) || code.starts_with(&[known, &b"/"[..]].concat())
        })
}

#[cfg(test)]
mod tests;
