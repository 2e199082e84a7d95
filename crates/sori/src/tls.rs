//! HTTPS on the web listener: the certificate store every TLS handshake asks, kept current from
//! PEM files (re-read when they change) or by ACME ([`crate::acme`]), and the plain-HTTP
//! listener that sends browsers to `https://` and answers ACME HTTP-01 challenges.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sori_turn::rustls;
use sori_turn::rustls::server::{ClientHello, ResolvesServerCert};
use sori_turn::rustls::sign::CertifiedKey;

/// How often the certificate files are compared with what was loaded.
pub const FILE_CHECK: Duration = Duration::from_secs(2);

/// The certificate the web listener (and TURN over TLS) presents, swapped in place when it is
/// renewed or its files change: handshakes after the swap get the new one, connections already
/// open keep theirs.
#[derive(Default)]
pub struct CertStore {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 challenge certificates, by domain.
    alpn_challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 challenges: token → key authorization.
    http_challenges: RwLock<HashMap<String, String>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("has_certificate", &self.current().is_some())
            .finish_non_exhaustive()
    }
}

impl CertStore {
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }

    /// The certificate presented to a CA's TLS-ALPN-01 check of `domain`.
    pub fn add_alpn_challenge(&self, domain: &str, key: Arc<CertifiedKey>) {
        self.alpn_challenges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(domain.to_string(), key);
    }

    /// The answer to a CA's HTTP-01 check of `token`.
    pub fn add_http_challenge(&self, token: &str, key_authorization: String) {
        self.http_challenges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_string(), key_authorization);
    }

    /// Forgets every challenge answer (after an order, whichever way it ended).
    pub fn clear_challenges(&self) {
        self.alpn_challenges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.http_challenges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn http_challenge(&self, token: &str) -> Option<String> {
        self.http_challenges
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == sori_signal::http::ACME_TLS_ALPN));
        if acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .alpn_challenges
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .cloned();
        }
        self.current()
    }
}

/// The TLS configuration of the web listener: HTTP/1.1 (WebSockets included), and ACME's
/// TLS-ALPN-01 when `acme` is on; certificates from `store`.
pub fn server_config(store: Arc<CertStore>, acme: bool) -> Arc<rustls::ServerConfig> {
    let mut config = base_config(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if acme {
        config
            .alpn_protocols
            .push(sori_signal::http::ACME_TLS_ALPN.to_vec());
    }
    Arc::new(config)
}

/// The same certificates for TURN over TLS, which negotiates no application protocol.
pub fn turn_config(store: Arc<CertStore>) -> Arc<rustls::ServerConfig> {
    Arc::new(base_config(store))
}

fn base_config(store: Arc<CertStore>) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // aws-lc-rs supports every version rustls has.
        .expect("TLS 1.2 and 1.3 are supported")
        .with_no_client_auth()
        .with_cert_resolver(store)
}

/// Loads the certificate files into `store`; the error names the file at fault.
pub fn load_files(store: &CertStore, cert: &Path, key: &Path) -> Result<(), String> {
    let loaded = sori_turn::tls::load_certified_key(cert, key).map_err(|e| e.to_string())?;
    store.set(loaded);
    Ok(())
}

/// Re-reads the certificate files every [`FILE_CHECK`] (and at once on SIGHUP); a pair whose
/// bytes changed and that loads replaces the certificate; one that does not load is logged and
/// the current certificate kept (a renewal tool may write the two files one after the other).
pub async fn watch_files(store: Arc<CertStore>, cert: PathBuf, key: PathBuf) {
    let read = |cert: &Path, key: &Path| (std::fs::read(cert).ok(), std::fs::read(key).ok());
    let mut loaded = read(&cert, &key);
    let mut failing = false;
    let mut hangup = hangups();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FILE_CHECK) => {}
            _ = hangup.recv() => tracing::info!("SIGHUP: reading the certificate files again"),
        }
        let now = read(&cert, &key);
        if now == loaded {
            continue;
        }
        match load_files(&store, &cert, &key) {
            Ok(()) => {
                tracing::info!(cert = %cert.display(), "certificate files changed: new certificate in use");
                loaded = now;
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("certificate files changed but do not load, the previous certificate stays: {e}");
                }
                failing = true;
            }
        }
    }
}

/// SIGHUP, as a stream of notices (never fires where there are no signals).
pub fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    if tx.send(()).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
    #[cfg(not(unix))]
    std::mem::forget(tx);
    rx
}

/// The plain-HTTP listener's routes: ACME HTTP-01 challenges, and a permanent redirect of
/// everything else to the same path on `https://` (`https_port`: the web listener's port,
/// left out of the URL when it is 443) at `domain` when the certificate is for one (ACME),
/// else at the host the request named.
pub fn redirect_router(store: Arc<CertStore>, https_port: u16, domain: Option<String>) -> Router {
    Router::new()
        .route(
            "/.well-known/acme-challenge/{token}",
            get(
                |State((store, _)): State<(Arc<CertStore>, u16)>,
                 UrlPath(token): UrlPath<String>| async move {
                    match store.http_challenge(&token) {
                        Some(k) => ([(header::CONTENT_TYPE, "application/octet-stream")], k)
                            .into_response(),
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                },
            ),
        )
        .fallback(
            move |headers: HeaderMap, uri: Uri, State((_, port)): State<(Arc<CertStore>, u16)>| {
                let domain = domain.clone();
                async move { redirect(port, domain, headers, uri) }
            },
        )
        .with_state((store, https_port))
}

fn redirect(port: u16, domain: Option<String>, headers: HeaderMap, uri: Uri) -> Response {
    let host = domain.or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(host_without_port)
    });
    let Some(host) = host else {
        return (
            StatusCode::BAD_REQUEST,
            "a Host header naming the server is needed\n",
        )
            .into_response();
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response()
}

/// The host of a `Host` header without its port, if it is a plausible host name or address
/// (nothing that could turn the redirect into another URL).
fn host_without_port(h: &str) -> Option<String> {
    let host = if let Some(rest) = h.strip_prefix('[') {
        // [v6]:port
        let end = rest.find(']')?;
        format!("[{}]", &rest[..end])
    } else {
        h.rsplit_once(':').map_or(h, |(host, _)| host).to_string()
    };
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    ok.then_some(host)
}

/// The address the plain-HTTP listener serves, for logs.
pub fn describe_redirect(addr: SocketAddr, https_port: u16) -> String {
    format!("http://{addr} (to https:// on port {https_port}, and ACME HTTP-01)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(port: u16, domain: Option<&str>, host: Option<&str>, uri: &str) -> (u16, String) {
        let mut headers = HeaderMap::new();
        if let Some(h) = host {
            headers.insert(header::HOST, h.parse().unwrap());
        }
        let r = redirect(
            port,
            domain.map(String::from),
            headers,
            uri.parse().unwrap(),
        );
        let at = r
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.status().as_u16(), at)
    }

    #[test]
    fn plain_http_goes_to_the_same_path_on_https() {
        assert_eq!(
            location(443, None, Some("meet.example.org:80"), "/?room=a&name=B"),
            (308, "https://meet.example.org/?room=a&name=B".into())
        );
        assert_eq!(
            location(8443, None, Some("meet.example.org"), "/recordings"),
            (308, "https://meet.example.org:8443/recordings".into())
        );
        // With a domain (ACME), the certificate's name, whatever the request said.
        assert_eq!(
            location(443, Some("meet.example.org"), Some("evil.example"), "/"),
            (308, "https://meet.example.org/".into())
        );
        assert_eq!(location(443, None, None, "/").0, 400);
        assert_eq!(location(443, None, Some("a/b"), "/").0, 400);
    }

    #[test]
    fn a_redirect_keeps_the_host_and_drops_anything_else() {
        assert_eq!(
            host_without_port("meet.example.org").as_deref(),
            Some("meet.example.org")
        );
        assert_eq!(
            host_without_port("meet.example.org:80").as_deref(),
            Some("meet.example.org")
        );
        assert_eq!(
            host_without_port("[2001:db8::1]:80").as_deref(),
            Some("[2001:db8::1]")
        );
        assert_eq!(host_without_port("evil.example/x"), None);
        assert_eq!(host_without_port("a@b"), None);
        assert_eq!(host_without_port(""), None);
    }
}
