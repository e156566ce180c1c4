//! An in-process POP3 server that follows a script, for the faults the real
//! Dovecot cannot be made to produce (stalls, drops, garbage, huge lines,
//! missing STLS). It records every line the client sent.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerd_pop3::{ConnectOptions, Security};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A CA, a server certificate for `localhost` signed by it, and matching
/// rustls configurations (ring provider).
pub struct Pki {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "peerd-pop3 test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();

    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();

    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    Pki {
        server: Arc::new(server),
        client: client_config_trusting(ca.der().clone()),
    }
}

pub fn client_config_trusting(ca: CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca).unwrap();
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A client config for plaintext tests (never used to connect).
pub fn unused_tls() -> Arc<ClientConfig> {
    client_config_trusting(pki_ca_only())
}

fn pki_ca_only() -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().der().clone()
}

/// One accepted connection, driven by a test's script.
pub struct Conn {
    io: BufReader<Box<dyn Io>>,
    tls: Option<Arc<ServerConfig>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Conn {
    /// Sends bytes; errors (the client went away) are ignored.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let _ = self.io.write_all(bytes.as_ref()).await;
        let _ = self.io.flush().await;
    }

    /// The next line from the client (without CRLF), or `None` at EOF.
    pub async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.io.read_line(&mut line).await {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                let line = line.trim_end_matches(['\r', '\n']).to_owned();
                self.log.lock().unwrap().push(line.clone());
                Some(line)
            },
        }
    }

    /// Reads one command and answers `reply`.
    pub async fn answer(&mut self, reply: impl AsRef<[u8]>) -> Option<String> {
        let line = self.line().await?;
        self.send(reply).await;
        Some(line)
    }

    /// Greeting, CAPA (`caps`), USER and PASS accepted.
    pub async fn greet_and_login(&mut self, caps: &str) {
        self.send("+OK POP3 test server ready\r\n").await;
        self.answer(format!("+OK\r\n{caps}.\r\n")).await;
        self.answer("+OK\r\n").await;
        self.answer("+OK logged in\r\n").await;
    }

    /// Switches to TLS (after answering STLS).
    pub async fn start_tls(&mut self) {
        let config = self.tls.clone().expect("no TLS configuration");
        assert!(self.io.buffer().is_empty(), "client pipelined before TLS");
        let io = std::mem::replace(
            &mut self.io,
            BufReader::new(Box::new(tokio::io::empty()) as Box<dyn Io>),
        )
        .into_inner();
        let tls = tokio_rustls::TlsAcceptor::from(config)
            .accept(io)
            .await
            .unwrap();
        self.io = BufReader::new(Box::new(tls));
    }

    /// Holds the connection open without answering.
    pub async fn stall(self) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(self);
    }

    /// The raw stream, for tests that write huge amounts.
    pub fn raw(&mut self) -> &mut BufReader<Box<dyn Io>> {
        &mut self.io
    }
}

/// A scripted server on 127.0.0.1, serving one connection.
pub struct Fake {
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
    pub task: JoinHandle<()>,
}

impl Fake {
    /// Plain TCP (STLS possible with `tls`).
    pub async fn start<F, Fut>(tls: Option<Arc<ServerConfig>>, script: F) -> Fake
    where
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        Self::start_with(tls, false, script).await
    }

    /// Implicit TLS from the first byte.
    pub async fn start_tls<F, Fut>(tls: Arc<ServerConfig>, script: F) -> Fake
    where
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        Self::start_with(Some(tls), true, script).await
    }

    async fn start_with<F, Fut>(tls: Option<Arc<ServerConfig>>, implicit: bool, script: F) -> Fake
    where
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let task_log = Arc::clone(&log);
        let task = tokio::spawn(async move {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let mut conn = Conn {
                io: BufReader::new(Box::new(tcp)),
                tls,
                log: task_log,
            };
            if implicit {
                conn.start_tls().await;
            }
            script(conn).await;
        });
        Fake { port, log, task }
    }

    /// Every line the client sent so far.
    pub fn received(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) for the script to finish.
    pub async fn finish(mut self) -> Vec<String> {
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        self.received()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Options for a test server: `localhost` as the TLS name, a short timeout.
pub fn options(port: u16, mode: Security, tls: Arc<ClientConfig>) -> ConnectOptions {
    let mut options = ConnectOptions::new("127.0.0.1", port, mode, tls);
    options.server_name = "localhost".to_owned();
    options.timeout = Duration::from_secs(5);
    options
}
