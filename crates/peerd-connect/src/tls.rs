//! TLS 1.3 with raw public keys (RFC 7250): each side's certificate is its
//! bare Ed25519 key, checked against the address book.
//!
//! The address came by mail, which anyone could have sent, so the
//! connection itself must prove who is at each end before a single
//! application byte passes. There are no certificate authorities here:
//! peers know each other's keys (exchanged by hand or by pairing), so the
//! handshake pins them:
//!
//! - the **accepting** side takes any key of the address book (a snapshot
//!   taken when the connection arrives);
//! - the **dialling** side takes exactly the key of the peer it dials,
//!   nothing else (another address-book peer answering at that address is
//!   as wrong as a stranger).
//!
//! One verifier type, [`KeyPins`], serves both sides. It accepts only the
//! Ed25519 SubjectPublicKeyInfo form and only the `ed25519` signature
//! scheme, and remembers the key it was shown, so a refusal can be logged
//! with the key's fingerprint. Every refusal is the same error
//! (`ApplicationVerificationFailure`, the `access_denied` alert), because
//! quinn sends the error text to the peer: a stranger learns nothing about
//! why.
//!
//! Session resumption is off on both sides and 0-RTT is never used: a
//! resumed session skips the certificate check, so a key removed from the
//! address book could come back in on an old ticket.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use peerd_core::{Identity, PublicKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as TlsError, SignatureScheme,
};

use crate::error::ConnectError;
use crate::wire::ALPN;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE,
/// AlgorithmIdentifier { id-Ed25519 }, BIT STRING of 32 bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The SubjectPublicKeyInfo of an Ed25519 key: what a raw-public-key
/// "certificate" holds.
pub fn spki(key: &PublicKey) -> Vec<u8> {
    [&ED25519_SPKI_PREFIX[..], key.as_bytes()].concat()
}

/// The key inside an Ed25519 SubjectPublicKeyInfo; `None` for anything
/// else (another algorithm, trailing bytes, a weak key).
pub fn key_of_spki(der: &[u8]) -> Option<PublicKey> {
    let raw = der.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    let raw: &[u8; 32] = raw.try_into().ok()?;
    PublicKey::from_bytes(raw).ok()
}

/// The one error every refusal turns into (see the module docs).
fn refused() -> TlsError {
    TlsError::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// A verifier that accepts exactly a set of Ed25519 keys, for one
/// connection, and remembers the key the other side presented.
#[derive(Debug)]
pub struct KeyPins {
    allowed: Arc<BTreeSet<PublicKey>>,
    presented: OnceLock<Option<PublicKey>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl KeyPins {
    /// Pins for one connection.
    pub fn new(allowed: Arc<BTreeSet<PublicKey>>, provider: &CryptoProvider) -> Self {
        Self {
            allowed,
            presented: OnceLock::new(),
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// The key the other side presented: `None` before its certificate
    /// arrived, `Some(None)` when it was not an Ed25519 key.
    pub fn presented(&self) -> Option<Option<PublicKey>> {
        self.presented.get().copied()
    }

    fn check(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> bool {
        let key = key_of_spki(end_entity.as_ref());
        let _ = self.presented.set(key);
        intermediates.is_empty() && key.is_some_and(|k| self.allowed.contains(&k))
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        if dss.scheme != SignatureScheme::ED25519 || key_of_spki(cert.as_ref()).is_none() {
            return Err(refused());
        }
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &self.algorithms,
        )
    }
}

impl ServerCertVerifier for KeyPins {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        if self.check(end_entity, intermediates) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(refused())
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        // Only TLS 1.3 is enabled; this is never called.
        Err(refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for KeyPins {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        if self.check(end_entity, intermediates) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(refused())
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Err(refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// Builds the TLS and QUIC configurations for each new connection: our key
/// (loaded once), the crypto provider, the transport settings.
#[derive(Clone, Debug)]
pub struct TlsFactory {
    provider: Arc<CryptoProvider>,
    own: Arc<CertifiedKey>,
    transport: Arc<quinn::TransportConfig>,
}

impl TlsFactory {
    /// Loads `identity` into rustls and sets the transport's keep-alive and
    /// idle timeout.
    pub fn new(
        identity: &Identity,
        keepalive: Duration,
        idle_timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let mut provider = rustls::crypto::ring::default_provider();
        // TLS 1.3 suites only; AES-128-GCM first: QUIC's Initial packets
        // need it anyway, and it was the fastest here (docs/channel.md).
        provider.cipher_suites = vec![
            rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
            rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ];
        let der = identity.to_pkcs8_der();
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec()));
        let signer = provider
            .key_provider
            .load_private_key(private)
            .map_err(|e| ConnectError::Tls(format!("loading the identity key: {e}")))?;
        let own = CertifiedKey::new(
            vec![CertificateDer::from(spki(&identity.public_key()))],
            signer,
        );
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(keepalive));
        let idle = quinn::IdleTimeout::try_from(idle_timeout)
            .map_err(|_| ConnectError::Tls(format!("idle_timeout {idle_timeout:?} is too long")))?;
        transport.max_idle_timeout(Some(idle));
        Ok(Self {
            provider: Arc::new(provider),
            own: Arc::new(own),
            transport: Arc::new(transport),
        })
    }

    /// The configuration for one incoming connection, accepting the keys
    /// in `allowed`, and its verifier (to read the presented key after).
    pub fn server(
        &self,
        allowed: Arc<BTreeSet<PublicKey>>,
    ) -> Result<(quinn::ServerConfig, Arc<KeyPins>), ConnectError> {
        let pins = Arc::new(KeyPins::new(allowed, &self.provider));
        let mut tls = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ConnectError::Tls(e.to_string()))?
            .with_client_cert_verifier(pins.clone())
            .with_cert_resolver(Arc::new(
                rustls::server::AlwaysResolvesServerRawPublicKeys::new(self.own.clone()),
            ));
        tls.alpn_protocols = vec![ALPN.to_vec()];
        // No resumption, no 0-RTT (see the module docs).
        tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        tls.send_tls13_tickets = 0;
        tls.max_early_data_size = 0;
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(self.transport.clone());
        config.migration(true);
        Ok((config, pins))
    }

    /// The configuration for dialling the peer whose key is `expected`.
    pub fn client(
        &self,
        expected: PublicKey,
    ) -> Result<(quinn::ClientConfig, Arc<KeyPins>), ConnectError> {
        let pins = Arc::new(KeyPins::new(
            Arc::new(BTreeSet::from([expected])),
            &self.provider,
        ));
        let mut tls = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ConnectError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(pins.clone())
            .with_client_cert_resolver(Arc::new(
                rustls::client::AlwaysResolvesClientRawPublicKeys::new(self.own.clone()),
            ));
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.resumption = rustls::client::Resumption::disabled();
        tls.enable_early_data = false;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(self.transport.clone());
        Ok((config, pins))
    }
}

/// The key the other side proved it holds, read from the finished
/// handshake.
pub fn peer_key(conn: &quinn::Connection) -> Option<PublicKey> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    match certs.as_slice() {
        [only] => key_of_spki(only.as_ref()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_round_trips_and_rejects_others() {
        let key = Identity::from_seed(&[5; 32]).public_key();
        let der = spki(&key);
        assert_eq!(der.len(), 44);
        assert_eq!(key_of_spki(&der), Some(key));
        assert_eq!(key_of_spki(&der[..43]), None);
        assert_eq!(key_of_spki(&[der.clone(), vec![0]].concat()), None);
        let mut other_alg = der.clone();
        other_alg[8] = 0x71; // id-Ed448's last byte
        assert_eq!(key_of_spki(&other_alg), None);
        // The small-order identity point is refused like any weak key.
        let mut weak = der;
        weak[12..].fill(0);
        weak[12] = 1;
        assert_eq!(key_of_spki(&weak), None);
    }

    #[test]
    fn pins_accept_exactly_their_keys_and_remember_what_they_saw() {
        let a = Identity::from_seed(&[1; 32]).public_key();
        let b = Identity::from_seed(&[2; 32]).public_key();
        let provider = rustls::crypto::ring::default_provider();
        let pins = KeyPins::new(Arc::new(BTreeSet::from([a])), &provider);
        assert_eq!(pins.presented(), None);
        let cert_b = CertificateDer::from(spki(&b));
        assert!(
            pins.verify_client_cert(&cert_b, &[], UnixTime::now())
                .is_err()
        );
        assert_eq!(pins.presented(), Some(Some(b)));

        let pins = KeyPins::new(Arc::new(BTreeSet::from([a])), &provider);
        let cert_a = CertificateDer::from(spki(&a));
        assert!(
            pins.verify_client_cert(&cert_a, &[], UnixTime::now())
                .is_ok()
        );
        // A chain is not a raw key.
        let pins = KeyPins::new(Arc::new(BTreeSet::from([a])), &provider);
        assert!(
            pins.verify_client_cert(&cert_a, &[cert_b], UnixTime::now())
                .is_err()
        );
        let garbage = CertificateDer::from(vec![0x30, 0x00]);
        let pins = KeyPins::new(Arc::new(BTreeSet::from([a])), &provider);
        let err = pins
            .verify_server_cert(
                &garbage,
                &[],
                &ServerName::try_from("peerd").unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap_err();
        assert_eq!(pins.presented(), Some(None));
        // The text quinn would send says nothing about why.
        assert_eq!(
            err.to_string(),
            "invalid peer certificate: ApplicationVerificationFailure"
        );
    }
}
