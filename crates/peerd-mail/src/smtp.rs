//! Sending: mail submission, with lettre's SMTP client over a connection
//! peerd makes and bounds itself.
//!
//! `starttls` is mandatory TLS: a server that does not offer STARTTLS is an
//! error, never a plaintext fallback, so a stripped STARTTLS never leaks
//! the password. `tls` is implicit TLS (port 465); `none` is accepted by
//! the configuration only towards loopback.
//!
//! peerd opens the TCP connection itself and hands it to lettre
//! ([`AsyncSmtpConnection::connect_with_transport`]) so that every step has
//! a timeout and a server can never make it buffer without bound: lettre
//! reads a reply line to its end before checking its length, so a server
//! sending one endless line would otherwise grow memory until the
//! connection dies. The connection caps what it will read from the server
//! ([`MAX_REPLY_BYTES`]); replies are a few hundred bytes per mail.
//!
//! One connection is opened per batch and reused for every peer in it.
//! Failures are classified for the outbox: permanent (5xx: unknown
//! recipient, authentication refused; no STARTTLS; a certificate that does
//! not verify) are reported and not retried until something changes,
//! transient ones (4xx, refused connection, timeout, dropped connection, a
//! misbehaving reply) are retried with backoff.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use peerd_config::{Security, SmtpConfig};
use peerd_core::MailAddress;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use zeroize::Zeroizing;

use crate::stream::{Capped, MailStream};
use crate::tls;

/// The most bytes read from one SMTP connection (all replies together).
pub const MAX_REPLY_BYTES: u64 = 1 << 20;
/// The longest reply line accepted (RFC 5321 allows 512).
pub const MAX_REPLY_LINE: u64 = 16 * 1024;

/// How a send failed, as the outbox needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Will not work by retrying: report it.
    Permanent(String),
    /// May work later: retry with backoff.
    Transient(String),
}

impl SendError {
    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Self::Permanent(m) | Self::Transient(m) => m,
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Permanent(m) => write!(f, "{m} (permanent)"),
            Self::Transient(m) => write!(f, "{m} (will retry)"),
        }
    }
}

impl std::error::Error for SendError {}

/// lettre takes any stream that can name its peer.
#[derive(Debug)]
struct SmtpStream(Capped<MailStream>);

impl AsyncRead for SmtpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SmtpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for SmtpStream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self.0.get_ref() {
            MailStream::Plain(s) => s.peer_addr(),
            MailStream::Tls(s) => s.get_ref().0.peer_addr(),
        }
    }
}

/// The submission server, with one connection reused for a batch of mails.
pub struct Submission {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    limit: Duration,
    /// For implicit TLS (our own handshake, like IMAP and POP3).
    tls: Arc<rustls::ClientConfig>,
    /// For STARTTLS (lettre upgrades its stream itself).
    starttls: Option<TlsParameters>,
    connection: Option<AsyncSmtpConnection>,
}

impl fmt::Debug for Submission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Submission")
            .field("server", &format_args!("{}:{}", self.host, self.port))
            .field("security", &self.security)
            .field("login", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

impl Submission {
    /// Prepares sending; no connection is made yet. `password` is the
    /// secret read from the configured source (never logged).
    pub fn new(
        config: &SmtpConfig,
        password: Option<Zeroizing<String>>,
        limit: Duration,
    ) -> Result<Self, SendError> {
        let tls = tls::client_config(config.ca_file.as_deref())
            .map_err(|e| SendError::Permanent(format!("SMTP TLS setup: {e}")))?;
        let starttls = if config.security == Security::StartTls {
            let mut builder = TlsParameters::builder(config.host.clone());
            if let Some(ca) = &config.ca_file {
                for cert in tls::read_pem_certificates(ca)
                    .map_err(|e| SendError::Permanent(e.to_string()))?
                {
                    let cert = Certificate::from_der(cert.to_vec()).map_err(|e| {
                        SendError::Permanent(format!("ca_file {}: {e}", ca.display()))
                    })?;
                    builder = builder.add_root_certificate(cert);
                }
            }
            Some(
                builder
                    .build_rustls()
                    .map_err(|e| SendError::Permanent(format!("SMTP TLS setup: {e}")))?,
            )
        } else {
            None
        };
        let credentials = match (&config.login, password) {
            (Some(login), Some(password)) => Some(Credentials::new(
                login.username.clone(),
                password.as_str().to_owned(),
            )),
            _ => None,
        };
        Ok(Self {
            host: config.host.clone(),
            port: config.port,
            security: config.security,
            credentials,
            limit,
            tls,
            starttls,
            connection: None,
        })
    }

    fn server(&self) -> String {
        format!("SMTP {}:{}", self.host, self.port)
    }

    async fn step<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
    ) -> Result<T, SendError> {
        match timeout(self.limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(&self.server(), what, &e)),
            Err(_) => Err(SendError::Transient(format!(
                "{}: {what}: no answer within {:?}",
                self.server(),
                self.limit
            ))),
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let server = self.server();
        let tcp = match timeout(
            self.limit,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(SendError::Transient(format!("{server}: connect: {e}"))),
            Err(_) => {
                return Err(SendError::Transient(format!(
                    "{server}: connect: no answer within {:?}",
                    self.limit
                )));
            },
        };
        let stream = if self.security == Security::Tls {
            let name = ServerName::try_from(self.host.clone())
                .map_err(|e| SendError::Permanent(format!("{server}: host name: {e}")))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls));
            match timeout(self.limit, connector.connect(name, tcp)).await {
                Ok(Ok(tls)) => MailStream::Tls(Box::new(tls)),
                // certificate problems do not go away by retrying
                Ok(Err(e)) => return Err(SendError::Permanent(format!("{server}: TLS: {e}"))),
                Err(_) => {
                    return Err(SendError::Transient(format!(
                        "{server}: TLS: no answer within {:?}",
                        self.limit
                    )));
                },
            }
        } else {
            MailStream::Plain(tcp)
        };
        let capped = Box::new(SmtpStream(Capped::new(
            stream,
            MAX_REPLY_BYTES,
            MAX_REPLY_LINE,
        )));
        let hello = ClientId::default();
        let mut connection = self
            .step(
                "greeting",
                AsyncSmtpConnection::connect_with_transport(capped, &hello),
            )
            .await?;
        if let Some(params) = &self.starttls {
            if !connection.can_starttls() {
                connection.abort().await;
                return Err(SendError::Permanent(format!(
                    "{server}: the server does not offer STARTTLS; not sending the password or mail in clear"
                )));
            }
            self.step("STARTTLS", connection.starttls(params.clone(), &hello))
                .await?;
        }
        if let Some(credentials) = &self.credentials {
            self.step(
                "AUTH",
                connection.auth(&[Mechanism::Plain, Mechanism::Login], credentials),
            )
            .await?;
        }
        Ok(connection)
    }

    /// Submits one mail for one recipient, over the batch's connection.
    pub async fn send(
        &mut self,
        from: &MailAddress,
        to: &MailAddress,
        raw: &[u8],
    ) -> Result<(), SendError> {
        let envelope = Envelope::new(
            Some(
                from.as_str()
                    .parse()
                    .map_err(|e| SendError::Permanent(format!("sender {from}: {e}")))?,
            ),
            vec![
                to.as_str()
                    .parse()
                    .map_err(|e| SendError::Permanent(format!("recipient {to}: {e}")))?,
            ],
        )
        .map_err(|e| SendError::Permanent(format!("envelope: {e}")))?;
        let mut connection = match self.connection.take() {
            Some(c) if !c.has_broken() => c,
            _ => self.connect().await?,
        };
        let result = self
            .step("sending", connection.send(&envelope, raw))
            .await
            .map(|_| ());
        // A connection that failed at the transport level is not reused;
        // after a refused recipient it still is.
        if !matches!(result, Err(SendError::Transient(_))) && !connection.has_broken() {
            self.connection = Some(connection);
        }
        result
    }

    /// Ends the batch politely (QUIT).
    pub async fn close(mut self) {
        if let Some(mut connection) = self.connection.take() {
            let _ = timeout(self.limit, connection.quit()).await;
        }
    }
}

/// Sorts lettre's errors into what the outbox does with them.
fn classify(server: &str, what: &str, e: &lettre::transport::smtp::Error) -> SendError {
    let text = format!("{server}: {what}: {e}");
    if e.is_permanent() {
        SendError::Permanent(text)
    } else if e.is_transient() || e.is_timeout() || e.is_transport_shutdown() {
        SendError::Transient(text)
    } else if e.is_tls() || e.is_client() {
        // a certificate that does not verify, no usable AUTH mechanism
        SendError::Permanent(text)
    } else {
        // connection refused or reset, a malformed or oversized reply
        SendError::Transient(text)
    }
}
