//! TLS for `wss://` media servers.

use std::sync::Arc;

use tokio_tungstenite::Connector;

use crate::RemoteError;

/// The TLS settings for a `wss://` URL (`None` for `ws://`): rustls on aws-lc-rs, the crypto
/// provider the rest of Sori builds, trusting the system's root certificates, which
/// `SSL_CERT_FILE` or `SSL_CERT_DIR` replace (as for OpenSSL: a private CA goes there).
pub(crate) fn tls_for(url: &str) -> Result<Option<Connector>, RemoteError> {
    if !url
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("wss://"))
    {
        return Ok(None);
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(RemoteError::unreachable(format!(
            "no trusted root certificates for wss:// (set SSL_CERT_FILE): {:?}",
            found.errors
        )));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RemoteError::unreachable(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Connector::Rustls(Arc::new(config))))
}
