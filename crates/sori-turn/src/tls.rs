//! TURN over TLS (`turns:`): the certificate and key the TLS listener presents.
//!
//! The handshake uses rustls with the aws-lc-rs provider (the one the media server's DTLS
//! already builds); after it, a TLS connection runs the same framing code as plain TCP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The TLS listener of the TURN server.
#[derive(Clone)]
pub struct TurnTls {
    /// The TCP address TLS clients reach (port 0: any free port).
    pub listen: SocketAddr,
    /// Certificate chain and key, e.g. from [`load_pem`].
    pub config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TurnTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnTls")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// Why a certificate or key was not usable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("TLS certificate {path}: {message}")]
    Certificate { path: String, message: String },
    #[error("TLS key {path}: {message}")]
    Key { path: String, message: String },
    #[error("TLS certificate and key do not form a usable pair: {0}")]
    Pair(String),
}

/// A TLS server configuration from a certificate chain and its private key.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Pair(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
/// Errors name the file at fault.
pub fn load_pem(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (certs, key_der) = read_pem(cert, key)?;
    server_config(certs, key_der).map_err(|e| match e {
        TlsError::Pair(m) => {
            TlsError::Pair(format!("{} and {}: {m}", cert.display(), key.display()))
        }
        e => e,
    })
}

/// The certificate chain and key of [`load_pem`] as one signing identity, the key checked
/// against the certificate. Errors name the file at fault.
pub fn load_certified_key(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let (certs, key_der) = read_pem(cert, key)?;
    certified(certs, key_der)
        .map_err(|e| TlsError::Pair(format!("{} and {}: {e}", cert.display(), key.display())))
}

/// A certificate chain and key from PEM text (as an ACME server hands them out).
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let certs = parse_certs(cert_pem).map_err(|m| TlsError::Pair(format!("certificate: {m}")))?;
    let key = parse_key(key_pem).map_err(|m| TlsError::Pair(format!("key: {m}")))?;
    certified(certs, key).map_err(TlsError::Pair)
}

/// One signing identity, the key checked against the certificate.
fn certified(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    rustls::sign::CertifiedKey::from_der(certs, key, &provider)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// The certificates of a PEM text, at least one.
fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block in the file".into());
    }
    Ok(certs)
}

/// The private key of a PEM text (PKCS#8, PKCS#1 or SEC1).
fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block in the file".into(),
        e => e.to_string(),
    })
}

/// Reads and parses the two PEM files; errors name the file at fault.
fn read_pem(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let certs = parse_certs(&read(cert)?).map_err(|message| TlsError::Certificate {
        path: cert.display().to_string(),
        message,
    })?;
    let key_der = parse_key(&read(key)?).map_err(|message| TlsError::Key {
        path: key.display().to_string(),
        message,
    })?;
    Ok((certs, key_der))
}
