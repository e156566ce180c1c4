//! Connections: plain TCP or TLS decided at run time (implicit TLS,
//! STARTTLS, or none to loopback), and a cap on what a server can make us
//! read.
//!
//! The caps exist because the SMTP and IMAP client libraries buffer a
//! reply line until it ends (lettre without a limit, async-imap up to
//! 512 MiB, re-parsing the buffer as it grows): a server sending one
//! endless line would grow our memory, and burn CPU, until the connection
//! died. Two caps: on all bytes read from one connection, and on the bytes
//! between two line feeds. Passing either is an I/O error, which ends the
//! connection; the caller reconnects later.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Plain or TLS.
#[derive(Debug)]
pub enum MailStream {
    /// Cleartext (only ever to loopback, or before STARTTLS).
    Plain(TcpStream),
    /// TLS.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MailStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MailStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A stream that refuses to read more than a fixed number of bytes, or a
/// line longer than a fixed length.
#[derive(Debug)]
pub struct Capped<S> {
    inner: S,
    left: u64,
    cap: u64,
    max_line: u64,
    line: u64,
}

impl<S> Capped<S> {
    /// `inner`, of which at most `cap` bytes will be read, in lines of at
    /// most `max_line` bytes.
    pub fn new(inner: S, cap: u64, max_line: u64) -> Self {
        Self {
            inner,
            left: cap,
            cap,
            max_line,
            line: 0,
        }
    }

    /// The stream inside (for a STARTTLS upgrade).
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.left == 0 {
            let cap = self.cap;
            return Poll::Ready(Err(io::Error::other(format!(
                "the server sent more than {cap} bytes on this connection"
            ))));
        }
        if self.line > self.max_line {
            let max = self.max_line;
            return Poll::Ready(Err(io::Error::other(format!(
                "the server sent a line longer than {max} bytes"
            ))));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            // Checked per read: a cap may be passed by at most one read
            // buffer before it bites.
            let fresh = &buf.filled()[before..];
            let n = fresh.len() as u64;
            self.line = match fresh.iter().rposition(|b| *b == b'\n') {
                Some(i) => (fresh.len() - i - 1) as u64,
                None => self.line.saturating_add(n),
            };
            self.left = self.left.saturating_sub(n);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
