//! TLS for the mail connections: rustls with the ring provider, the
//! system's trust anchors plus an optional extra CA file (`ca_file`).
//!
//! One place builds the client configuration so IMAP and POP3 check
//! servers the same way (SMTP goes through lettre, which takes the same
//! extra CA through its own builder, see [`crate::smtp`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Why a TLS client configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA file could not be read.
    #[error("cannot read ca_file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("ca_file {}: {reason}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No trust anchor at all (no system store and no ca_file).
    #[error("no trusted certificate authorities: install ca-certificates or set ca_file")]
    NoRoots,
    /// rustls refused the configuration.
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificates of a PEM file, each checked by parsing it.
pub fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bytes = fs::read(path).map_err(|source| TlsSetupError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsSetupError::BadCa {
            path: path.to_owned(),
            reason: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::BadCa {
            path: path.to_owned(),
            reason: "no certificate in it".to_owned(),
        });
    }
    Ok(certs)
}

/// A client configuration trusting the system's anchors and `ca_file`.
/// Session resumption stays at rustls' default: these are ordinary
/// server-authenticated connections.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        for cert in read_pem_certificates(path)? {
            roots.add(cert).map_err(|e| TlsSetupError::BadCa {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        }
    }
    if roots.is_empty() {
        return Err(TlsSetupError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
