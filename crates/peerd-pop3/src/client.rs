//! The POP3 session: connecting, TLS, logging in and the commands.
//!
//! One [`Pop3Client`] is one connection. Commands take `&mut self` and run
//! one at a time; each has a deadline ([`ConnectOptions::timeout`]) that
//! covers sending it and reading its whole response. After an error that
//! leaves the connection in an unknown state (timeout, I/O, protocol error,
//! an over-long line, a message over the cap while reading) - or when a
//! command's future is dropped before it finished - every later command
//! fails with [`Error::SessionBroken`]: reconnect. A `-ERR` from the server
//! does not break the session.
//!
//! Deletions ([`Pop3Client::dele`]) only take effect when the server
//! confirms [`Pop3Client::quit`] (RFC 1939 section 6, the UPDATE state).
//! Dropping the client without `quit` closes the connection and the server
//! deletes nothing.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use zeroize::Zeroizing;

use crate::error::{Error, Result, quote};
use crate::wire::{
    Body, BodyLine, LineBuffer, Push, Status, is_temporary_code, parse_capability, parse_list_line,
    parse_stat, parse_status, parse_uidl_line, unstuff,
};

/// Default for [`ConnectOptions::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`ConnectOptions::max_line`]: generous, because mail in the
/// wild has lines far beyond RFC 5322's 998.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
/// Default for [`ConnectOptions::max_entries`].
pub const DEFAULT_MAX_ENTRIES: usize = 200_000;
/// The CRLF a server adds to a message without one, beyond its LIST size.
const FINAL_CRLF: u64 = 2;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Implicit TLS from the first byte (POP3S, port 995; RFC 8314).
    Tls,
    /// Plain TCP, then `STLS` (RFC 2595 section 4) before anything else is
    /// sent. Mandatory: if the server's CAPA does not offer STLS the
    /// connection fails with [`Error::StlsNotOffered`]; there is no fallback
    /// to plaintext.
    StartTls,
    /// No TLS at all: user name, password and mail travel in clear. The
    /// caller MUST only allow this to a loopback address (tests, a local
    /// server); this crate does not check.
    Plain,
}

/// Everything [`Pop3Client::connect`] needs.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Host name or IP address to connect to.
    pub host: String,
    /// TCP port (110 for POP3 and STLS, 995 for POP3S by convention).
    pub port: u16,
    /// TLS, STLS or plaintext.
    pub mode: Security,
    /// The name the server's certificate must be valid for (a DNS name or
    /// an IP address). Usually the same as `host`.
    pub server_name: String,
    /// The TLS client configuration (trusted roots, crypto provider). Not
    /// used in [`Security::Plain`] mode.
    pub tls: Arc<ClientConfig>,
    /// Deadline for each step: connecting, the TLS handshake, the greeting,
    /// and each command from sending it to the end of its response - for
    /// RETR and TOP the whole message, so it must allow the largest message
    /// accepted over the slowest link.
    pub timeout: Duration,
    /// Longest line accepted from the server, without its line ending.
    /// Values below 512 (RFC 2449's status line limit) are raised to 512,
    /// values above 1 MiB lowered to 1 MiB. The receive buffer has this
    /// size; it never grows.
    pub max_line: usize,
    /// Most entries accepted in a LIST, UIDL or CAPA listing, so a server
    /// cannot grow memory without bound.
    pub max_entries: usize,
}

impl ConnectOptions {
    /// Options with `server_name = host` and the default timeout and limits.
    pub fn new(host: impl Into<String>, port: u16, mode: Security, tls: Arc<ClientConfig>) -> Self {
        let host = host.into();
        ConnectOptions {
            server_name: host.clone(),
            host,
            port,
            mode,
            tls,
            timeout: DEFAULT_TIMEOUT,
            max_line: DEFAULT_MAX_LINE,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// The server's capabilities from CAPA (RFC 2449 section 5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    lines: Vec<String>,
}

impl Capabilities {
    /// The capability lines as the server sent them (`"SASL PLAIN LOGIN"`).
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The arguments of capability `name` (compared case-insensitively), or
    /// `None` if the server does not list it.
    pub fn args(&self, name: &str) -> Option<impl Iterator<Item = &str>> {
        self.lines.iter().find_map(|line| {
            let mut words = line.split_ascii_whitespace();
            let first = words.next()?;
            first.eq_ignore_ascii_case(name).then_some(words)
        })
    }

    /// Whether the server lists capability `name` (`"STLS"`, `"UIDL"`, ...).
    pub fn has(&self, name: &str) -> bool {
        self.args(name).is_some()
    }

    /// Whether the SASL capability lists `mechanism` (`"PLAIN"`).
    pub fn has_sasl(&self, mechanism: &str) -> bool {
        self.args("SASL")
            .is_some_and(|mut mechs| mechs.any(|m| m.eq_ignore_ascii_case(mechanism)))
    }
}

/// The answer to STAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Messages in the maildrop (not counting those marked deleted).
    pub count: u32,
    /// Their total size in octets.
    pub size: u64,
}

/// The byte stream under a session: TCP, TLS over TCP, or (in the fuzz
/// harness) memory.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Limits and timeout of a session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) timeout: Duration,
    pub(crate) max_line: usize,
    pub(crate) max_entries: usize,
}

/// TLS to set up: the configuration and the name to verify.
pub(crate) struct TlsSetup {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

/// [`Security`] with what it needs.
pub(crate) enum Mode {
    Tls(TlsSetup),
    StartTls(TlsSetup),
    Plain,
}

/// A reply's first line.
enum Reply {
    Ok(Vec<u8>),
    Err(Vec<u8>),
    Continue,
}

/// An open POP3 session. See the [module docs](self).
pub struct Pop3Client {
    io: Box<dyn Io>,
    lines: LineBuffer,
    settings: Settings,
    capabilities: Option<Capabilities>,
    tls: bool,
    /// A command was sent and its response not completely read: the stream
    /// is at an unknown position (set before sending, cleared when the
    /// response is complete, so an error or a dropped future leaves it set).
    in_flight: bool,
    bytes_received: u64,
}

impl fmt::Debug for Pop3Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pop3Client")
            .field("tls", &self.tls)
            .field("broken", &self.in_flight)
            .field("capabilities", &self.capabilities)
            .field("settings", &self.settings)
            .field("bytes_received", &self.bytes_received)
            .finish_non_exhaustive()
    }
}

impl Pop3Client {
    /// Connects, sets up TLS as `options.mode` says, reads the greeting and
    /// the capabilities. In [`Security::StartTls`] mode the capabilities
    /// are read again after TLS is up (RFC 2595 section 4).
    pub async fn connect(options: ConnectOptions) -> Result<Self> {
        let ConnectOptions {
            host,
            port,
            mode,
            server_name,
            tls,
            timeout,
            max_line,
            max_entries,
        } = options;
        let setup = || -> Result<TlsSetup> {
            Ok(TlsSetup {
                name: ServerName::try_from(server_name.clone())
                    .map_err(|_| Error::InvalidServerName(server_name.clone()))?,
                config: Arc::clone(&tls),
            })
        };
        let session_mode = match mode {
            Security::Plain => Mode::Plain,
            Security::Tls => Mode::Tls(setup()?),
            Security::StartTls => Mode::StartTls(setup()?),
        };
        let settings = Settings {
            timeout,
            max_line,
            max_entries,
        };
        tracing::debug!(%host, port, ?mode, "Connecting to POP3 server");
        let deadline = Instant::now() + timeout;
        let tcp = match timeout_at(deadline, TcpStream::connect((host.as_str(), port))).await {
            Err(_) => {
                return Err(Error::Timeout {
                    what: "connect",
                    after: timeout,
                });
            },
            Ok(Err(source)) => return Err(Error::Connect { host, port, source }),
            Ok(Ok(tcp)) => tcp,
        };
        // Commands are small and answered one at a time.
        let _ = tcp.set_nodelay(true);
        Self::establish(Box::new(tcp), session_mode, settings).await
    }

    /// Runs the session start on an open stream.
    pub(crate) async fn establish(io: Box<dyn Io>, mode: Mode, settings: Settings) -> Result<Self> {
        let mut client = Pop3Client {
            io,
            lines: LineBuffer::new(settings.max_line),
            settings,
            capabilities: None,
            tls: false,
            in_flight: true,
            bytes_received: 0,
        };
        if let Mode::Tls(setup) = &mode {
            client.start_tls(setup).await?;
        }
        client.greeting().await?;
        client.capa().await?;
        if let Mode::StartTls(setup) = &mode {
            let offered = client.capabilities.as_ref().is_some_and(|c| c.has("STLS"));
            if !offered {
                tracing::debug!("POP3 server does not offer STLS");
                return Err(Error::StlsNotOffered);
            }
            client.stls(setup).await?;
            client.capa().await?;
        }
        Ok(client)
    }

    /// The capabilities from the last CAPA, or `None` if the server does
    /// not support CAPA (it answered `-ERR`).
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.capabilities.as_ref()
    }

    /// Whether the connection is protected by TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Bytes received from the server so far (after TLS decryption). For
    /// metrics, and for tests that check reading stops at the limits.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    /// Asks for the capabilities again (RFC 2449 section 5; they may change
    /// after login). `None` if the server does not support CAPA.
    pub async fn capa(&mut self) -> Result<Option<&Capabilities>> {
        let deadline = self.begin()?;
        let reply = self.exchange("CAPA", b"CAPA\r\n", deadline).await?;
        match reply {
            Reply::Ok(_) => {},
            Reply::Err(_) => {
                // RFC 1939-only servers: no capabilities known.
                self.in_flight = false;
                self.capabilities = None;
                return Ok(None);
            },
            Reply::Continue => return Err(unexpected_continuation("CAPA")),
        }
        let mut lines = Vec::new();
        self.read_listing("CAPA", deadline, |line| {
            lines.push(parse_capability(line)?);
            Ok(())
        })
        .await?;
        self.capabilities = Some(Capabilities { lines });
        Ok(self.capabilities.as_ref())
    }

    /// Logs in: with AUTH PLAIN (RFC 5034, initial response) when CAPA
    /// lists SASL PLAIN, else with USER/PASS (RFC 1939 section 7). The
    /// password is sent from buffers that are zeroed afterwards and never
    /// appears in errors or logs.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<()> {
        check_credential("user name", user)?;
        check_credential("password", password)?;
        let use_plain = match &self.capabilities {
            Some(caps) if caps.has_sasl("PLAIN") => true,
            Some(caps) if caps.has("USER") => false,
            Some(_) => return Err(Error::NoLoginMethod),
            None => false,
        };
        tracing::debug!(
            method = if use_plain { "AUTH PLAIN" } else { "USER/PASS" },
            "Logging in to POP3 server"
        );
        let result = if use_plain {
            self.auth_plain(user, password).await
        } else {
            self.user_pass(user, password).await
        };
        result.map_err(|err| redact(err, password))
    }

    async fn user_pass(&mut self, user: &str, password: &str) -> Result<()> {
        let deadline = self.begin()?;
        let line = format!("USER {user}\r\n");
        let reply = self.exchange("USER", line.as_bytes(), deadline).await?;
        self.single_auth("USER", reply)?;

        let deadline = self.begin()?;
        let mut line = Zeroizing::new(Vec::with_capacity(password.len() + 7));
        line.extend_from_slice(b"PASS ");
        line.extend_from_slice(password.as_bytes());
        line.extend_from_slice(b"\r\n");
        let reply = self.exchange("PASS", &line, deadline).await?;
        self.single_auth("PASS", reply)
    }

    async fn auth_plain(&mut self, user: &str, password: &str) -> Result<()> {
        // RFC 4616: authzid NUL authcid NUL passwd; empty authzid.
        let mut message = Zeroizing::new(Vec::with_capacity(user.len() + password.len() + 2));
        message.push(0);
        message.extend_from_slice(user.as_bytes());
        message.push(0);
        message.extend_from_slice(password.as_bytes());
        let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*message));

        let deadline = self.begin()?;
        let mut line = Zeroizing::new(Vec::with_capacity(encoded.len() + 13));
        line.extend_from_slice(b"AUTH PLAIN ");
        line.extend_from_slice(encoded.as_bytes());
        line.extend_from_slice(b"\r\n");
        // RFC 5034 section 4: no initial response if the command would
        // exceed 255 octets; send it after the server's empty challenge.
        let reply = if line.len() <= 255 {
            self.exchange("AUTH", &line, deadline).await?
        } else {
            match self.exchange("AUTH", b"AUTH PLAIN\r\n", deadline).await? {
                Reply::Continue => {},
                Reply::Ok(_) => {
                    return Err(Error::Protocol(
                        "AUTH PLAIN accepted without credentials".into(),
                    ));
                },
                other => return self.single_auth("AUTH", other),
            }
            line.clear();
            line.extend_from_slice(encoded.as_bytes());
            line.extend_from_slice(b"\r\n");
            self.exchange("AUTH", &line, deadline).await?
        };
        self.single_auth("AUTH", reply)
            .map_err(|err| redact(err, &encoded))
    }

    /// The end of a login step: `-ERR` is a failed login unless its code
    /// says the failure is temporary.
    fn single_auth(&mut self, command: &'static str, reply: Reply) -> Result<()> {
        match reply {
            Reply::Ok(_) => {
                self.in_flight = false;
                Ok(())
            },
            Reply::Err(text) => {
                self.in_flight = false;
                if is_temporary_code(&text) {
                    Err(Error::TemporaryFailure {
                        command,
                        message: quote(&text),
                    })
                } else {
                    Err(Error::AuthFailed {
                        message: quote(&text),
                    })
                }
            },
            // A challenge we did not ask for: the exchange is open; leave
            // the session broken rather than guess.
            Reply::Continue => Err(unexpected_continuation(command)),
        }
    }

    /// STAT: number of messages and their total size.
    pub async fn stat(&mut self) -> Result<Stat> {
        let text = self.simple("STAT", b"STAT\r\n").await?;
        let (count, size) = parse_stat(&text)?;
        Ok(Stat { count, size })
    }

    /// LIST: every message's number and size in octets.
    pub async fn list(&mut self) -> Result<Vec<(u32, u64)>> {
        let deadline = self.begin()?;
        let reply = self.exchange("LIST", b"LIST\r\n", deadline).await?;
        self.multi_line_start("LIST", reply)?;
        let mut entries = Vec::new();
        self.read_listing("LIST", deadline, |line| {
            entries.push(parse_list_line(line)?);
            Ok(())
        })
        .await?;
        Ok(entries)
    }

    /// `LIST msg`: the size in octets of one message.
    pub async fn list_one(&mut self, msg: u32) -> Result<u64> {
        let line = format!("LIST {msg}\r\n");
        let text = self.simple("LIST", line.as_bytes()).await?;
        let (number, size) = parse_list_line(&text)?;
        if number != msg {
            return Err(Error::Protocol(format!(
                "LIST {msg} answered for message {number}"
            )));
        }
        Ok(size)
    }

    /// UIDL: every message's number and unique-id (RFC 1939 section 7).
    /// Unique-ids are checked: 1 to 70 characters 0x21-0x7E, no duplicates.
    pub async fn uidl(&mut self) -> Result<Vec<(u32, String)>> {
        let deadline = self.begin()?;
        let reply = self.exchange("UIDL", b"UIDL\r\n", deadline).await?;
        self.multi_line_start("UIDL", reply)?;
        let mut entries = Vec::new();
        let mut seen = HashSet::new();
        self.read_listing("UIDL", deadline, |line| {
            let (msg, uid) = parse_uidl_line(line)?;
            if !seen.insert(uid.clone()) {
                return Err(Error::Protocol(format!(
                    "UIDL lists unique-id \"{uid}\" twice"
                )));
            }
            entries.push((msg, uid));
            Ok(())
        })
        .await?;
        Ok(entries)
    }

    /// `TOP msg 0`: the message's header section (and the empty line after
    /// it), at most `max` bytes. Lines end with CRLF, byte-stuffing undone.
    pub async fn top_headers(&mut self, msg: u32, max: u64) -> Result<Vec<u8>> {
        let line = format!("TOP {msg} 0\r\n");
        self.fetch("TOP", line.as_bytes(), msg, max).await
    }

    /// RETR: the whole message, if its size is at most `max` bytes. The
    /// size is asked first (`LIST msg`): a larger message is refused before
    /// anything is downloaded, and the session stays usable. The cap is
    /// enforced while reading too, in case the server's size was wrong; then
    /// the session is broken. Lines end with CRLF, byte-stuffing undone.
    ///
    /// A message that did not end with CRLF gets one from the server (RFC
    /// 1939 section 3), which servers such as Dovecot do not count in LIST:
    /// so the body returned may be `max + 2` bytes long.
    pub async fn retr(&mut self, msg: u32, max: u64) -> Result<Vec<u8>> {
        let size = self.list_one(msg).await?;
        if size > max {
            tracing::debug!(msg, size, max, "Message over the size cap; not downloaded");
            return Err(Error::MessageTooLarge { msg, max });
        }
        let line = format!("RETR {msg}\r\n");
        self.fetch("RETR", line.as_bytes(), msg, max.saturating_add(FINAL_CRLF))
            .await
            .map_err(|err| match err {
                Error::MessageTooLarge { msg, .. } => Error::MessageTooLarge { msg, max },
                other => other,
            })
    }

    /// DELE: marks a message deleted. It is only removed when
    /// [`quit`](Pop3Client::quit) succeeds; [`rset`](Pop3Client::rset) or
    /// dropping the client unmarks it.
    pub async fn dele(&mut self, msg: u32) -> Result<()> {
        let line = format!("DELE {msg}\r\n");
        self.simple("DELE", line.as_bytes()).await.map(drop)
    }

    /// RSET: unmarks every message marked deleted.
    pub async fn rset(&mut self) -> Result<()> {
        self.simple("RSET", b"RSET\r\n").await.map(drop)
    }

    /// NOOP: keeps the session alive.
    pub async fn noop(&mut self) -> Result<()> {
        self.simple("NOOP", b"NOOP\r\n").await.map(drop)
    }

    /// QUIT: ends the session. `Ok(())` means the server confirmed the
    /// UPDATE state: every message marked with [`dele`](Pop3Client::dele)
    /// is now deleted. On any error the deletions may or may not have
    /// happened (a `-ERR` says some were not; a lost reply says nothing):
    /// look at UIDL on the next connection.
    pub async fn quit(mut self) -> Result<()> {
        let deadline = self.begin()?;
        let reply = self.exchange("QUIT", b"QUIT\r\n", deadline).await?;
        self.single("QUIT", reply)?;
        // Best effort: TLS close_notify and FIN; the server has answered.
        let _ = timeout_at(deadline, self.io.shutdown()).await;
        Ok(())
    }

    // --- plumbing ---------------------------------------------------------

    /// Starts a command: refuses if an earlier one left the stream at an
    /// unknown position, marks this one in flight, returns its deadline.
    fn begin(&mut self) -> Result<Instant> {
        if self.in_flight {
            return Err(Error::SessionBroken);
        }
        self.in_flight = true;
        Ok(Instant::now() + self.settings.timeout)
    }

    fn timeout(&self, what: &'static str) -> Error {
        Error::Timeout {
            what,
            after: self.settings.timeout,
        }
    }

    async fn greeting(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.settings.timeout;
        match self.read_reply("greeting", deadline).await? {
            Reply::Ok(_) => {
                self.in_flight = false;
                Ok(())
            },
            Reply::Err(text) => Err(Error::TemporaryFailure {
                command: "greeting",
                message: quote(&text),
            }),
            Reply::Continue => Err(unexpected_continuation("greeting")),
        }
    }

    /// RFC 2595 section 4: STLS, then the TLS handshake on the same stream.
    async fn stls(&mut self, setup: &TlsSetup) -> Result<()> {
        let deadline = self.begin()?;
        let reply = self.exchange("STLS", b"STLS\r\n", deadline).await?;
        match reply {
            Reply::Ok(_) => {},
            Reply::Err(text) => {
                return Err(Error::Server {
                    command: "STLS",
                    message: quote(&text),
                });
            },
            Reply::Continue => return Err(unexpected_continuation("STLS")),
        }
        // Anything already received after "+OK" was sent in clear but would
        // be read as if it came over TLS: the STARTTLS injection attack
        // (CVE-2011-0411 and kin). Refuse.
        if self.lines.has_buffered() {
            return Err(Error::Protocol(
                "the server sent data after its STLS reply, before TLS started".into(),
            ));
        }
        self.start_tls(setup).await?;
        // Capabilities learnt in clear are discarded (RFC 2595 section 4).
        self.capabilities = None;
        self.in_flight = false;
        Ok(())
    }

    async fn start_tls(&mut self, setup: &TlsSetup) -> Result<()> {
        let deadline = Instant::now() + self.settings.timeout;
        let io = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&setup.config));
        let stream = match timeout_at(deadline, connector.connect(setup.name.clone(), io)).await {
            Err(_) => return Err(self.timeout("TLS handshake")),
            Ok(Err(err)) => return Err(Error::from_io(err)),
            Ok(Ok(stream)) => stream,
        };
        self.io = Box::new(stream);
        self.tls = true;
        Ok(())
    }

    /// Sends `line` and reads the first line of the reply.
    async fn exchange(
        &mut self,
        command: &'static str,
        line: &[u8],
        deadline: Instant,
    ) -> Result<Reply> {
        tracing::trace!(command, "POP3 command");
        let io = &mut self.io;
        let sent = timeout_at(deadline, async {
            io.write_all(line).await?;
            io.flush().await
        })
        .await;
        match sent {
            Err(_) => return Err(self.timeout(command)),
            Ok(Err(err)) => return Err(Error::from_io(err)),
            Ok(Ok(())) => {},
        }
        self.read_reply(command, deadline).await
    }

    async fn read_reply(&mut self, what: &'static str, deadline: Instant) -> Result<Reply> {
        let line = self.read_line(what, deadline).await?;
        Ok(match parse_status(line)? {
            Status::Ok(text) => Reply::Ok(text.to_vec()),
            Status::Err(text) => Reply::Err(text.to_vec()),
            Status::Continue(_) => Reply::Continue,
        })
    }

    /// A single-line command: its `+OK` text.
    async fn simple(&mut self, command: &'static str, line: &[u8]) -> Result<Vec<u8>> {
        let deadline = self.begin()?;
        let reply = self.exchange(command, line, deadline).await?;
        self.single(command, reply)
    }

    fn single(&mut self, command: &'static str, reply: Reply) -> Result<Vec<u8>> {
        match reply {
            Reply::Ok(text) => {
                self.in_flight = false;
                Ok(text)
            },
            Reply::Err(text) => {
                self.in_flight = false;
                Err(refusal(command, &text))
            },
            Reply::Continue => Err(unexpected_continuation(command)),
        }
    }

    /// The first line of a multi-line response: `+OK` means lines follow.
    fn multi_line_start(&mut self, command: &'static str, reply: Reply) -> Result<()> {
        match reply {
            Reply::Ok(_) => Ok(()),
            Reply::Err(text) => {
                // -ERR is single-line: the response is complete.
                self.in_flight = false;
                Err(refusal(command, &text))
            },
            Reply::Continue => Err(unexpected_continuation(command)),
        }
    }

    /// A command whose answer is a message (RETR, TOP), capped at `max`.
    async fn fetch(
        &mut self,
        command: &'static str,
        line: &[u8],
        msg: u32,
        max: u64,
    ) -> Result<Vec<u8>> {
        let deadline = self.begin()?;
        let reply = self.exchange(command, line, deadline).await?;
        self.multi_line_start(command, reply)?;
        let mut body = Body::new(max);
        loop {
            let line = self.read_line(command, deadline).await?;
            match body.push(line) {
                Push::More => {},
                Push::Done => break,
                Push::TooLarge => {
                    tracing::debug!(msg, max, command, "Message over the size cap while reading");
                    return Err(Error::MessageTooLarge { msg, max });
                },
            }
        }
        self.in_flight = false;
        Ok(body.into_bytes())
    }

    /// Reads the lines of a listing up to the terminator, at most
    /// `max_entries` of them, handing each to `entry`.
    async fn read_listing(
        &mut self,
        command: &'static str,
        deadline: Instant,
        mut entry: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let max = self.settings.max_entries;
        let mut count = 0usize;
        loop {
            let line = self.read_line(command, deadline).await?;
            match unstuff(line) {
                BodyLine::End => break,
                BodyLine::Line(line) => {
                    count += 1;
                    if count > max {
                        return Err(Error::TooManyEntries { command, max });
                    }
                    entry(line)?;
                },
            }
        }
        self.in_flight = false;
        Ok(())
    }

    /// The next line from the server, reading as needed until `deadline`.
    async fn read_line(&mut self, what: &'static str, deadline: Instant) -> Result<&[u8]> {
        while !self.lines.line_ready()? {
            let spare = self.lines.spare();
            let n = match timeout_at(deadline, self.io.read(spare)).await {
                Err(_) => return Err(self.timeout(what)),
                Ok(Err(err)) => return Err(Error::from_io(err)),
                Ok(Ok(0)) => return Err(Error::ConnectionClosed),
                Ok(Ok(n)) => n,
            };
            self.lines.filled(n);
            self.bytes_received += n as u64;
        }
        self.lines
            .next_line()?
            .ok_or_else(|| Error::Protocol("line vanished from the buffer".into()))
    }
}

fn refusal(command: &'static str, text: &[u8]) -> Error {
    if is_temporary_code(text) {
        Error::TemporaryFailure {
            command,
            message: quote(text),
        }
    } else {
        Error::Server {
            command,
            message: quote(text),
        }
    }
}

fn unexpected_continuation(command: &'static str) -> Error {
    Error::Protocol(format!(
        "unexpected \"+ \" continuation in reply to {command}"
    ))
}

fn check_credential(what: &'static str, value: &str) -> Result<()> {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(Error::InvalidCredentials(what));
    }
    Ok(())
}

/// Blanks `secret` (the password, or the AUTH PLAIN blob) out of server
/// text quoted in `err`, in case the server echoed it.
fn redact(err: Error, secret: &str) -> Error {
    if secret.is_empty() {
        return err;
    }
    let quoted = Zeroizing::new(quote(secret.as_bytes()));
    let clean = |message: String| {
        let mut message = Zeroizing::new(message);
        for secret in [secret, quoted.as_str()] {
            if !secret.is_empty() && message.contains(secret) {
                message = Zeroizing::new(message.replace(secret, "<redacted>"));
            }
        }
        std::mem::take(&mut *message)
    };
    match err {
        Error::AuthFailed { message } => Error::AuthFailed {
            message: clean(message),
        },
        Error::TemporaryFailure { command, message } => Error::TemporaryFailure {
            command,
            message: clean(message),
        },
        Error::Server { command, message } => Error::Server {
            command,
            message: clean(message),
        },
        Error::Protocol(message) => Error::Protocol(clean(message)),
        other => other,
    }
}
