//! One control connection, from hello to close.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use peerd_control::{
    Access, Announced, ClientHello, ControlError, ErrorKind, Event, EventKind, FrameError,
    LineReader, OutboxList, PROTOCOL_NAME, PROTOCOL_VERSION, PeerList, PeerRef, Request, Response,
    ServerHello, StreamInfo, decode, encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, copy_bidirectional};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{Span, debug, info, warn};

use super::access::{AccessPolicy, Credentials};
use super::{ControlApi, Limits, PeerStream};

/// How much is read from a client at a time.
const CHUNK: usize = 16 * 1024;
/// How long the last words to a client may take while peerd stops.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// The connection slots: one pool for root and group members, one for
/// everybody else, so that other users cannot use up root's.
pub(super) struct Pools {
    pub(super) privileged: Arc<Semaphore>,
    pub(super) unprivileged: Arc<Semaphore>,
}

/// Serves one accepted connection until it ends.
pub(super) async fn run<A: ControlApi>(
    stream: UnixStream,
    api: Arc<A>,
    policy: Arc<AccessPolicy>,
    pools: Arc<Pools>,
    limits: Arc<Limits>,
    shutdown: CancellationToken,
) {
    let cred = match stream.peer_cred() {
        Ok(c) => Credentials {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
        },
        Err(e) => {
            warn!(error = %e, "Cannot read the credentials of a control connection; closing it");
            return;
        },
    };
    let span = Span::current();
    span.record("uid", cred.uid);
    span.record("gid", cred.gid);
    if let Some(pid) = cred.pid {
        span.record("pid", pid);
    }
    let access = tokio::task::spawn_blocking(move || policy.access(&cred))
        .await
        .unwrap_or(Access::ReadOnly);
    let pool = match access {
        Access::Full => &pools.privileged,
        Access::ReadOnly => &pools.unprivileged,
    };
    let mut conn = Conn {
        stream,
        reader: LineReader::default(),
        scratch: vec![0; CHUNK],
        eof: false,
        limits,
        shutdown,
    };
    let Ok(_slot) = Arc::clone(pool).try_acquire_owned() else {
        warn!(?access, "Too many control connections; refusing one");
        conn.respond(&Response::Error(ControlError::new(
            ErrorKind::Unavailable,
            "too many connections to peerd's control socket; try again later",
        )))
        .await;
        return;
    };
    debug!(?access, "Control connection");
    conn.serve(&*api, access).await;
    debug!("Control connection closed");
}

/// What waiting for the next line gave.
enum Next {
    Line(Vec<u8>),
    /// The client closed its side (or the socket failed).
    Closed,
    TooLong(FrameError),
    TimedOut,
    Shutdown,
}

/// How a request ended.
enum Outcome<T> {
    Done(T),
    /// The client closed the connection while it ran.
    Gone,
    /// The daemon is stopping.
    Stopping,
}

/// A connection: the socket, the bytes read from it, and the rules.
struct Conn {
    stream: UnixStream,
    reader: LineReader,
    scratch: Vec<u8>,
    /// The client closed its sending side.
    eof: bool,
    limits: Arc<Limits>,
    shutdown: CancellationToken,
}

impl Conn {
    /// The hello, then requests until the client leaves.
    async fn serve<A: ControlApi>(mut self, api: &A, access: Access) {
        if !self.hello(access).await {
            return;
        }
        loop {
            let line = match self.next_line(self.limits.idle_timeout).await {
                Next::Line(line) => line,
                Next::TooLong(e) => {
                    self.respond(&invalid(e.to_string())).await;
                    return;
                },
                Next::TimedOut => {
                    debug!("Control connection idle for too long; closing it");
                    return;
                },
                Next::Closed | Next::Shutdown => return,
            };
            let request = match decode::<Request>(&line).map_err(|e| invalid(e.to_string())) {
                Ok(request) => match request.validate() {
                    Ok(()) => request,
                    Err(e) => {
                        if !self.respond(&Response::Error(e)).await {
                            return;
                        }
                        continue;
                    },
                },
                Err(response) => {
                    debug!("Malformed control request");
                    if !self.respond(&response).await {
                        return;
                    }
                    continue;
                },
            };
            let method = request.method();
            if request.is_read_only() {
                debug!(method, "Control request");
            } else if access == Access::Full {
                info!(method, ?request, "Control request");
            } else {
                warn!(method, "Control request refused: permission denied");
                if !self
                    .respond(&Response::Error(ControlError::permission_denied(&request)))
                    .await
                {
                    return;
                }
                continue;
            }
            match request {
                Request::Events => return self.follow_events(api.events()).await,
                Request::Open { peer, service } => {
                    let opened = self
                        .run_request(api.open(peer.clone(), service.clone()))
                        .await;
                    match opened {
                        Outcome::Done(Ok(stream)) => {
                            if self
                                .respond(&Response::StreamOpen(StreamInfo { peer, service }))
                                .await
                            {
                                self.splice(stream).await;
                            }
                            return;
                        },
                        Outcome::Done(Err(e)) => {
                            if !self.respond(&Response::Error(e)).await {
                                return;
                            }
                        },
                        Outcome::Gone => return,
                        Outcome::Stopping => {
                            self.farewell(&stopping()).await;
                            return;
                        },
                    }
                },
                request => match self.run_request(dispatch(api, request)).await {
                    Outcome::Done(response) => {
                        if !self.respond(&response).await {
                            return;
                        }
                    },
                    Outcome::Gone => {
                        debug!(method, "Control client left; its request was dropped");
                        return;
                    },
                    Outcome::Stopping => {
                        self.farewell(&stopping()).await;
                        return;
                    },
                },
            }
        }
    }

    /// Reads and answers the hello; false when the connection is over.
    async fn hello(&mut self, access: Access) -> bool {
        let line = match self.next_line(self.limits.hello_timeout).await {
            Next::Line(line) => line,
            Next::TooLong(e) => {
                self.respond(&invalid(e.to_string())).await;
                return false;
            },
            Next::TimedOut => {
                debug!("No hello on a control connection; closing it");
                let secs = self.limits.hello_timeout.as_secs();
                self.respond(&Response::Error(ControlError::new(
                    ErrorKind::Timeout,
                    format!("no hello within {secs}s"),
                )))
                .await;
                return false;
            },
            Next::Closed | Next::Shutdown => return false,
        };
        let hello = match decode::<ClientHello>(&line) {
            Ok(hello) => hello,
            Err(e) => {
                debug!("A control client did not say hello");
                self.respond(&invalid(format!(
                    "expected the hello of the {PROTOCOL_NAME} protocol: {e}"
                )))
                .await;
                return false;
            },
        };
        if let Err(e) = hello.check() {
            info!(software = ?hello.software, version = hello.version, error = %e, "Control client refused");
            self.respond(&Response::Error(e)).await;
            return false;
        }
        debug!(software = ?hello.software, "Control client said hello");
        self.respond(&Response::Hello(ServerHello {
            protocol: PROTOCOL_NAME.to_owned(),
            version: PROTOCOL_VERSION,
            software: concat!("peerd ", env!("CARGO_PKG_VERSION")).to_owned(),
            access,
        }))
        .await
    }

    /// Reads one chunk from the client into the line reader (cancel-safe:
    /// what was read is pushed in the same poll).
    async fn fill(&mut self) -> io::Result<()> {
        let n = self.stream.read(&mut self.scratch).await?;
        if n == 0 {
            self.eof = true;
        } else {
            self.reader.push(&self.scratch[..n]);
        }
        Ok(())
    }

    /// The next line, waiting at most `wait` for it.
    async fn next_line(&mut self, wait: Duration) -> Next {
        let shutdown = self.shutdown.clone();
        let read = async {
            loop {
                match self.reader.next_line() {
                    Ok(Some(line)) => return Next::Line(line),
                    Ok(None) => {},
                    Err(e) => return Next::TooLong(e),
                }
                if self.eof || self.fill().await.is_err() {
                    return Next::Closed;
                }
            }
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => Next::Shutdown,
            next = timeout(wait, read) => next.unwrap_or(Next::TimedOut),
        }
    }

    /// Runs a request's future, unless the client leaves or the daemon
    /// stops first. Bytes the client sends meanwhile are kept for later;
    /// once some are waiting, the socket is not read any more until the
    /// request is done (so a client cannot make it buffer without end).
    async fn run_request<F: Future>(&mut self, fut: F) -> Outcome<F::Output> {
        let shutdown = self.shutdown.clone();
        let mut fut = std::pin::pin!(fut);
        loop {
            let watch_client = !self.eof && !self.reader.has_partial_line();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Outcome::Stopping,
                out = &mut fut => return Outcome::Done(out),
                read = self.fill(), if watch_client => {
                    if read.is_err() || self.eof {
                        return Outcome::Gone;
                    }
                },
            }
        }
    }

    /// Writes a line, within the write timeout; false if the connection
    /// is over.
    async fn write_line(&mut self, line: &[u8]) -> bool {
        let shutdown = self.shutdown.clone();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => false,
            written = timeout(self.limits.write_timeout, self.stream.write_all(line)) => match written {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    debug!(error = %e, "Cannot write to a control client");
                    false
                },
                Err(_) => {
                    info!("A control client does not read; closing its connection");
                    false
                },
            },
        }
    }

    /// Sends a last response before closing, also while the daemon stops
    /// (briefly: nobody waits for a stuck client then).
    async fn farewell(&mut self, response: &Response) {
        if let Ok(line) = encode(response) {
            let wait = self.limits.write_timeout.min(FAREWELL_TIMEOUT);
            let _ = timeout(wait, self.stream.write_all(&line)).await;
        }
    }

    /// Sends a response; one that is too large to send becomes an error.
    async fn respond(&mut self, response: &Response) -> bool {
        let line = encode(response).or_else(|e| {
            warn!(kind = response.kind(), error = %e, "A control response is too large to send");
            encode(&Response::Error(ControlError::new(
                ErrorKind::Failed,
                format!("the answer is too large to send ({e})"),
            )))
        });
        match line {
            Ok(line) => self.write_line(&line).await,
            Err(_) => false,
        }
    }

    /// After `events`: one event per line until the client leaves.
    async fn follow_events(mut self, mut events: broadcast::Receiver<Event>) {
        if !self.respond(&Response::Subscribed).await {
            return;
        }
        // Whatever the client sends from now on is ignored.
        self.reader.clear();
        let shutdown = self.shutdown.clone();
        loop {
            let event = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                read = self.fill() => {
                    self.reader.clear();
                    if read.is_err() || self.eof {
                        debug!("Event follower left");
                        return;
                    }
                    continue;
                },
                event = events.recv() => match event {
                    Ok(event) => event,
                    Err(RecvError::Lagged(count)) => Event::now(EventKind::Missed { count }),
                    Err(RecvError::Closed) => return,
                },
            };
            let line = match encode(&event) {
                Ok(line) => line,
                Err(e) => {
                    warn!(event = event.kind.name(), error = %e, "An event is too large to send; skipped");
                    continue;
                },
            };
            if !self.write_line(&line).await {
                return;
            }
        }
    }

    /// After `open`: the socket and the peer stream, copied both ways.
    async fn splice(self, mut peer: PeerStream) {
        let Self {
            mut stream,
            reader,
            limits,
            shutdown,
            ..
        } = self;
        // Bytes the client sent right behind its request are the stream's.
        let early = reader.into_buffered();
        let copy = async {
            if !early.is_empty() {
                timeout(limits.write_timeout, peer.write_all(&early))
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            }
            copy_bidirectional(&mut stream, &mut peer).await
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => debug!("Stream closed: peerd is stopping"),
            copied = copy => match copied {
                Ok((to_peer, from_peer)) => debug!(to_peer, from_peer, "Stream closed"),
                Err(e) => debug!(error = %e, "Stream ended with an error"),
            },
        }
    }
}

/// The answer to an ordinary request (not `events`, not `open`).
async fn dispatch<A: ControlApi>(api: &A, request: Request) -> Response {
    let answer = match request {
        Request::Status => api.status().await.map(Response::Status),
        Request::Peers => api
            .peers()
            .await
            .map(|peers| Response::Peers(PeerList { peers })),
        Request::PeerAdd { .. } => match request.new_peer() {
            Some(new) => api.peer_add(new).await.map(Response::PeerAdded),
            None => Err(internal()),
        },
        Request::PeerRemove { name } => api
            .peer_remove(name.clone())
            .await
            .map(|()| Response::PeerRemoved(PeerRef { peer: name })),
        Request::Outbox => api
            .outbox()
            .await
            .map(|entries| Response::Outbox(OutboxList { entries })),
        Request::Announce { peers } => api
            .announce(peers)
            .await
            .map(|peers| Response::Announced(Announced { peers })),
        Request::Check => api.check().await.map(|()| Response::Checked),
        Request::Call { peer, wait_secs } => {
            let wait = Duration::from_secs(wait_secs);
            match timeout(wait, api.call(peer.clone(), wait)).await {
                Ok(session) => session.map(Response::Connected),
                Err(_) => Err(ControlError::new(
                    ErrorKind::Timeout,
                    format!("{peer} did not connect within {wait_secs}s"),
                )),
            }
        },
        Request::Connect { peer } => api.connect(peer).await.map(Response::Connected),
        Request::Disconnect { peer } => api
            .disconnect(peer.clone())
            .await
            .map(|()| Response::Disconnected(PeerRef { peer })),
        Request::LinkUp => api.link_up().await.map(Response::Link),
        Request::LinkDown => api.link_down().await.map(Response::Link),
        Request::LinkStatus => api.link_status().await.map(Response::Link),
        Request::Key => Ok(Response::Key(api.key())),
        Request::Events | Request::Open { .. } => Err(internal()),
    };
    answer.unwrap_or_else(Response::Error)
}

fn invalid(message: String) -> Response {
    Response::Error(ControlError::new(ErrorKind::InvalidRequest, message))
}

fn stopping() -> Response {
    Response::Error(ControlError::new(
        ErrorKind::Unavailable,
        "peerd is stopping",
    ))
}

/// A request routed to the wrong handler: a bug here, reported as such.
fn internal() -> ControlError {
    ControlError::new(
        ErrorKind::Failed,
        "internal error in peerd's control server",
    )
}
