//! [`PeerStream`]: one authenticated byte stream to a peer.
//!
//! A QUIC bidirectional stream after the open handshake (see
//! [`wire`](crate::wire)): the bytes written here come out of the
//! peer's service (or its plain-stream taker) and back. When the session
//! ends under a stream, reads and writes fail with an `io::Error` whose
//! inner error is a [`StreamClosed`] naming why (for example "peer address
//! changed"), not quinn's bare "closed locally".

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use peerd_core::{PeerName, ServiceName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::state::{DisconnectReason, close};

/// What a session's streams share: the connection, and why it ended once
/// it has.
#[derive(Debug)]
pub(crate) struct SessionShared {
    pub(crate) conn: quinn::Connection,
    pub(crate) peer: PeerName,
    /// Set by whoever closes the connection on this side, before closing,
    /// so streams report the real reason (quinn only says "closed
    /// locally").
    pub(crate) ended: OnceLock<DisconnectReason>,
}

impl SessionShared {
    pub(crate) fn new(conn: quinn::Connection, peer: PeerName) -> Arc<Self> {
        Arc::new(Self {
            conn,
            peer,
            ended: OnceLock::new(),
        })
    }

    /// Records why and closes the connection (first reason wins).
    pub(crate) fn close(&self, code: quinn::VarInt, reason: DisconnectReason) {
        let _ = self.ended.set(reason);
        self.conn.close(code, close_text(code));
    }

    /// Why the session ended (or is ending).
    pub(crate) fn reason(&self) -> DisconnectReason {
        if let Some(r) = self.ended.get() {
            return r.clone();
        }
        match self.conn.close_reason() {
            Some(e) => reason_of(&e),
            None => DisconnectReason::Lost("the session ended".into()),
        }
    }
}

/// The fixed text sent with a close code.
pub(crate) fn close_text(code: quinn::VarInt) -> &'static [u8] {
    match code {
        close::REQUESTED => b"disconnected",
        close::ADDRESS_CHANGED => b"address changed",
        close::REPLACED => b"replaced",
        close::CANCELLED => b"cancelled",
        close::SHUTDOWN => b"shutting down",
        close::KEY_REMOVED => b"key removed",
        close::VERSION => b"unsupported version",
        _ => b"protocol error",
    }
}

/// What a connection error means for the session.
pub(crate) fn reason_of(e: &quinn::ConnectionError) -> DisconnectReason {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => close::reason(c.error_code, &c.reason),
        quinn::ConnectionError::TimedOut => DisconnectReason::IdleTimeout,
        other => DisconnectReason::Lost(other.to_string()),
    }
}

/// The error inside the `io::Error` a [`PeerStream`] returns once its
/// session is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StreamClosed(pub DisconnectReason);

/// An authenticated byte stream to a peer: `AsyncRead + AsyncWrite`.
/// `shutdown` ends our direction (the peer reads end-of-stream); dropping
/// it ends both.
pub struct PeerStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    session: Arc<SessionShared>,
    service: Option<ServiceName>,
}

impl PeerStream {
    pub(crate) fn new(
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        session: Arc<SessionShared>,
        service: Option<ServiceName>,
    ) -> Self {
        Self {
            send,
            recv,
            session,
            service,
        }
    }

    /// The peer at the other end (authenticated by its key).
    pub fn peer(&self) -> &PeerName {
        &self.session.peer
    }

    /// The service the stream was opened for (`None`: a plain stream).
    pub fn service(&self) -> Option<&ServiceName> {
        self.service.as_ref()
    }

    /// The peer's address now (it changes when the peer migrates).
    pub fn remote_address(&self) -> SocketAddr {
        self.session.conn.remote_address()
    }

    fn map_err(&self, e: io::Error) -> io::Error {
        let lost = match e.get_ref() {
            Some(inner) => {
                if let Some(r) = inner.downcast_ref::<quinn::ReadError>() {
                    matches!(r, quinn::ReadError::ConnectionLost(_))
                } else if let Some(w) = inner.downcast_ref::<quinn::WriteError>() {
                    matches!(w, quinn::WriteError::ConnectionLost(_))
                } else {
                    false
                }
            },
            None => false,
        };
        if lost {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                StreamClosed(self.session.reason()),
            )
        } else {
            e
        }
    }
}

impl fmt::Debug for PeerStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerStream")
            .field("peer", &self.session.peer)
            .field("service", &self.service)
            .field("id", &self.send.id())
            .finish()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match AsyncRead::poll_read(Pin::new(&mut self.recv), cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.map_err(e))),
            other => other,
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.map_err(e))),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match AsyncWrite::poll_flush(Pin::new(&mut self.send), cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.map_err(e))),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.map_err(e))),
            other => other,
        }
    }
}
