//! A small blocking client (std only), as `peerctl` uses it.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::frame::{self, LineReader};
use crate::{ClientHello, ControlError, Event, PROTOCOL_NAME, Request, Response, ServerHello};

/// Why talking to the daemon failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No daemon listens at the socket: it does not exist, or nobody
    /// accepts connections on it.
    #[error("peerd is not reachable at {}: {source}", path.display())]
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// What `connect` said.
        #[source]
        source: io::Error,
    },
    /// The socket (or a directory on its path) may not be opened by this
    /// user.
    #[error("no permission to use {}: {source}", path.display())]
    PermissionDenied {
        /// The socket.
        path: PathBuf,
        /// What `connect` said.
        #[source]
        source: io::Error,
    },
    /// The daemon did not answer in time.
    #[error("peerd did not answer within {}s", .0.as_secs())]
    TimedOut(Duration),
    /// The daemon closed the connection.
    #[error("peerd closed the connection")]
    Closed,
    /// Reading or writing the socket failed.
    #[error("talking to peerd: {0}")]
    Io(#[source] io::Error),
    /// The daemon sent something this client cannot read.
    #[error("peerd's answer makes no sense to this peerctl: {0}")]
    Protocol(String),
    /// The daemon refused the hello or the request.
    #[error("{0}")]
    Refused(ControlError),
}

/// A connection to the daemon, past the hello.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    reader: LineReader,
    server: ServerHello,
}

/// How much is read from the socket at a time.
const CHUNK: usize = 64 * 1024;

impl Client {
    /// Connects to the socket at `path` and exchanges hellos, waiting at
    /// most `timeout` for the daemon's. `software` names this client in the
    /// daemon's log (`peerctl 0.1.0`).
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] when nothing listens there,
    /// [`ClientError::PermissionDenied`] when the socket may not be opened,
    /// [`ClientError::Refused`] when the daemon refuses the hello (another
    /// protocol version), and the I/O errors.
    pub fn connect(path: &Path, software: &str, timeout: Duration) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| {
            let path = path.to_owned();
            match source.kind() {
                io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { path, source },
                _ => ClientError::Unreachable { path, source },
            }
        })?;
        let mut client = Self {
            stream,
            reader: LineReader::default(),
            server: ServerHello {
                protocol: String::new(),
                version: 0,
                software: String::new(),
                access: crate::Access::ReadOnly,
            },
        };
        client.send(&ClientHello::new(software), timeout)?;
        match client.read_response(Some(timeout))? {
            Response::Hello(hello) if hello.protocol == PROTOCOL_NAME => {
                client.server = hello;
                Ok(client)
            },
            Response::Error(e) => Err(ClientError::Refused(e)),
            other => Err(ClientError::Protocol(format!(
                "expected a hello, got {}",
                other.kind()
            ))),
        }
    }

    /// The daemon's hello: its version and what this connection may do.
    pub fn server(&self) -> &ServerHello {
        &self.server
    }

    /// Sends `request` and waits for its answer, at most `timeout` (`None`:
    /// forever).
    ///
    /// # Errors
    /// [`ClientError::Refused`] with the daemon's error,
    /// [`ClientError::TimedOut`], [`ClientError::Protocol`] for an answer
    /// that does not fit the request, and the I/O errors.
    pub fn request(
        &mut self,
        request: &Request,
        timeout: Option<Duration>,
    ) -> Result<Response, ClientError> {
        match self.send(request, timeout.unwrap_or(Duration::from_secs(30))) {
            // The daemon may have said why before it closed ("peerd is
            // stopping"): read that, or learn that it is closed.
            Ok(()) | Err(ClientError::Closed) => {},
            Err(e) => return Err(e),
        }
        match self.read_response(timeout)? {
            Response::Error(e) => Err(ClientError::Refused(e)),
            r if request.expects(&r) => Ok(r),
            r => Err(ClientError::Protocol(format!(
                "{} answered with {}",
                request.method(),
                r.kind()
            ))),
        }
    }

    /// The next event after [`Request::Events`]; `None` when the daemon
    /// closed the stream.
    ///
    /// # Errors
    /// A line that is not an event, and the I/O errors.
    pub fn next_event(&mut self) -> Result<Option<Event>, ClientError> {
        match self.read_line(None) {
            Ok(line) => frame::decode(&line)
                .map(Some)
                .map_err(|e| ClientError::Protocol(e.to_string())),
            Err(ClientError::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The socket, and the bytes already read from it past the last line:
    /// after [`Response::StreamOpen`] these are the first bytes of the
    /// stream.
    pub fn into_stream(self) -> (UnixStream, Vec<u8>) {
        (self.stream, self.reader.into_buffered())
    }

    fn send<T: serde::Serialize>(
        &mut self,
        message: &T,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let line = frame::encode(message).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(ClientError::Io)?;
        self.stream.write_all(&line).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::TimedOut(timeout),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => ClientError::Closed,
            _ => ClientError::Io(e),
        })
    }

    fn read_response(&mut self, timeout: Option<Duration>) -> Result<Response, ClientError> {
        let line = self.read_line(timeout)?;
        frame::decode(&line).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// The next line, waiting at most `timeout` in total.
    fn read_line(&mut self, timeout: Option<Duration>) -> Result<Vec<u8>, ClientError> {
        let deadline = timeout.map(|t| (Instant::now() + t, t));
        let mut chunk = vec![0; CHUNK];
        loop {
            match self.reader.next_line() {
                Ok(Some(line)) => return Ok(line),
                Ok(None) => {},
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
            let wait = match deadline {
                Some((at, total)) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ClientError::TimedOut(total));
                    }
                    Some(left)
                },
                None => None,
            };
            self.stream
                .set_read_timeout(wait)
                .map_err(ClientError::Io)?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self.reader.push(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {},
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {},
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(ClientError::Closed);
                },
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
    }
}
