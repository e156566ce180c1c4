//! The one error type of this crate, and how server text is quoted in it.
//!
//! Every error says whether retrying later can help ([`Error::is_transient`]):
//! the courier backs off and reconnects on transient errors and reports the
//! others to the user. Text that came from the server is truncated and has
//! its control characters escaped before it goes into an error ([`quote`]),
//! so a hostile server cannot flood or forge log lines. No error ever holds
//! a password.

use std::io;
use std::time::Duration;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How many characters of server text an error quotes at most.
pub const QUOTE_MAX_CHARS: usize = 160;

/// Why a POP3 operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection could not be opened (name resolution, refused,
    /// unreachable).
    #[error("Failed to connect to POP3 server {host}:{port}")]
    Connect {
        /// The host as given in the options.
        host: String,
        /// The port.
        port: u16,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// Reading from or writing to the connection failed.
    #[error("I/O error talking to the POP3 server")]
    Io(#[source] io::Error),
    /// TLS failed: a certificate that does not verify, no common protocol
    /// version or cipher suite, a TLS alert.
    #[error("TLS with the POP3 server failed")]
    Tls(#[source] rustls::Error),
    /// The server name for TLS is neither a DNS name nor an IP address.
    #[error("Invalid TLS server name {0:?}")]
    InvalidServerName(String),
    /// A step did not finish in time. The session is unusable afterwards.
    #[error("Timed out after {after:?} waiting for {what}")]
    Timeout {
        /// The step: `connect`, `TLS handshake`, `greeting`, or the command
        /// whose response was awaited (`RETR`, ...).
        what: &'static str,
        /// The configured timeout.
        after: Duration,
    },
    /// The server closed the connection (in the middle of a reply, or
    /// instead of one).
    #[error("The POP3 server closed the connection")]
    ConnectionClosed,
    /// A line from the server is longer than the configured maximum. Reading
    /// stops at the limit; the session is unusable afterwards.
    #[error("The POP3 server sent a line longer than {max} bytes")]
    LineTooLong {
        /// The configured maximum line length (without the line ending).
        max: usize,
    },
    /// A message (or its headers) is larger than the caller's limit. When
    /// LIST announced the size, nothing was downloaded and the session stays
    /// usable; when the limit was hit while reading, the session is unusable
    /// afterwards.
    #[error("Message {msg} is larger than the limit of {max} bytes")]
    MessageTooLarge {
        /// The message number.
        msg: u32,
        /// The limit the caller gave.
        max: u64,
    },
    /// A listing (LIST, UIDL, CAPA) has more entries than the configured
    /// maximum.
    #[error("The POP3 server's {command} listing has more than {max} entries")]
    TooManyEntries {
        /// The command.
        command: &'static str,
        /// The configured maximum.
        max: usize,
    },
    /// The server sent something that is not POP3. The session is unusable
    /// afterwards.
    #[error("POP3 protocol error: {0}")]
    Protocol(String),
    /// The server answered `-ERR` to a command.
    #[error("The POP3 server refused {command}: {message}")]
    Server {
        /// The command (never its arguments).
        command: &'static str,
        /// The server's text, quoted.
        message: String,
    },
    /// The server answered `-ERR` with a response code that says the
    /// failure is temporary (RFC 2449 `[IN-USE]`, `[LOGIN-DELAY]`, RFC 3206
    /// `[SYS/TEMP]`), or refused the connection in its greeting.
    #[error("The POP3 server is temporarily unable to serve {command}: {message}")]
    TemporaryFailure {
        /// The command, or `greeting`.
        command: &'static str,
        /// The server's text, quoted.
        message: String,
    },
    /// The server rejected the user name or password.
    #[error("POP3 login failed: {message}")]
    AuthFailed {
        /// The server's text, quoted (with the password blanked out if the
        /// server echoed it).
        message: String,
    },
    /// STLS was required, but the server's CAPA does not offer it (or the
    /// server has no CAPA). Nothing was sent in clear beyond CAPA.
    #[error("The POP3 server does not offer STLS; refusing to continue without TLS")]
    StlsNotOffered,
    /// The server offers neither USER/PASS nor SASL PLAIN on this
    /// connection (servers often hide them until TLS is up).
    #[error("The POP3 server offers no login method this client supports (USER or SASL PLAIN)")]
    NoLoginMethod,
    /// A user name or password that cannot be sent (it holds CR, LF or NUL).
    #[error("Invalid {0}: it must not contain CR, LF or NUL")]
    InvalidCredentials(&'static str),
    /// An earlier error, or a command future dropped before it finished,
    /// left the connection in an unknown state: reconnect.
    #[error("The POP3 session is unusable after an earlier error; reconnect")]
    SessionBroken,
}

impl Error {
    /// Whether trying again later (on a new connection) can succeed: I/O
    /// errors, timeouts, closed connections and temporary server failures.
    /// Not transient: failed logins, missing STLS, TLS and certificate
    /// failures, protocol errors, size limits and server refusals.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::Io(_)
            | Error::Timeout { .. }
            | Error::ConnectionClosed
            | Error::TemporaryFailure { .. }
            | Error::SessionBroken => true,
            Error::Tls(_)
            | Error::InvalidServerName(_)
            | Error::LineTooLong { .. }
            | Error::MessageTooLarge { .. }
            | Error::TooManyEntries { .. }
            | Error::Protocol(_)
            | Error::Server { .. }
            | Error::AuthFailed { .. }
            | Error::StlsNotOffered
            | Error::NoLoginMethod
            | Error::InvalidCredentials(_) => false,
        }
    }

    /// Maps an I/O error from the connection: a TLS error inside it becomes
    /// [`Error::Tls`], an unexpected end of stream [`Error::ConnectionClosed`].
    pub(crate) fn from_io(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => return Error::ConnectionClosed,
            _ => {},
        }
        let tls = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned();
        match tls {
            Some(tls) => Error::Tls(tls),
            None => Error::Io(err),
        }
    }
}

/// Server text made safe to show: decoded lossily as UTF-8, control
/// characters escaped (`\r`, `\u{1b}`, ...), cut to at most
/// [`QUOTE_MAX_CHARS`] characters plus a trailing `…`.
pub fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len().min(QUOTE_MAX_CHARS * 2));
    let mut chars = 0;
    for c in text.chars() {
        let escaped = c.is_control() || c == '\\';
        let width = if escaped {
            c.escape_default().count()
        } else {
            1
        };
        if chars + width > QUOTE_MAX_CHARS {
            out.push('…');
            break;
        }
        chars += width;
        if escaped {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_control_characters_and_truncates() {
        assert_eq!(quote(b"plain text"), "plain text");
        assert_eq!(quote(b"a\r\nb\x1b[31m"), "a\\r\\nb\\u{1b}[31m");
        assert_eq!(quote(b"back\\slash"), "back\\\\slash");
        assert_eq!(quote(b"\xff\xfe"), "\u{fffd}\u{fffd}");
        let long = vec![b'x'; 1000];
        let quoted = quote(&long);
        assert_eq!(quoted.chars().count(), QUOTE_MAX_CHARS + 1);
        assert!(quoted.ends_with('…'));
        let escapes = vec![0x1b; 1000];
        assert!(quote(&escapes).chars().count() <= QUOTE_MAX_CHARS + 1);
        let exact = vec![b'y'; QUOTE_MAX_CHARS];
        assert_eq!(quote(&exact), "y".repeat(QUOTE_MAX_CHARS));
    }

    #[test]
    fn transient_classification() {
        assert!(Error::ConnectionClosed.is_transient());
        assert!(
            Error::Timeout {
                what: "RETR",
                after: Duration::from_secs(1)
            }
            .is_transient()
        );
        assert!(Error::Io(io::Error::other("x")).is_transient());
        assert!(!Error::StlsNotOffered.is_transient());
        assert!(
            !Error::AuthFailed {
                message: String::new()
            }
            .is_transient()
        );
        assert!(!Error::Protocol(String::new()).is_transient());
    }

    #[test]
    fn io_errors_are_classified() {
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "eof");
        assert!(matches!(Error::from_io(eof), Error::ConnectionClosed));
        let tls = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert!(matches!(
            Error::from_io(tls),
            Error::Tls(rustls::Error::DecryptError)
        ));
        let other = io::Error::new(io::ErrorKind::PermissionDenied, "no");
        assert!(matches!(Error::from_io(other), Error::Io(_)));
    }
}
