//! The HTTP server loop shared by the session server and the control API: accepts connections
//! up to a total and a per-address cap, gives each a deadline for its TLS handshake (HTTPS)
//! and its request head, hands the client's address to handlers (`ConnectInfo<SocketAddr>`),
//! and logs accept errors instead of spinning on them.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tower::ServiceExt;

/// The ALPN protocol of ACME's TLS-ALPN-01 challenge (RFC 8737): such a connection only
/// fetches the challenge certificate, it carries no HTTP.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Connection caps of one listener.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Open connections in all.
    pub total: usize,
    /// Open connections from one address.
    pub per_ip: usize,
    /// Time to send a whole request head.
    pub header_timeout: Duration,
    /// Addresses not held to `per_ip`: reverse proxies, through which every client comes.
    pub proxies: Vec<IpAddr>,
}

impl From<&crate::Limits> for ConnLimits {
    fn from(l: &crate::Limits) -> Self {
        Self {
            total: l.connections,
            per_ip: l.connections_per_ip,
            header_timeout: l.header_timeout,
            proxies: Vec::new(),
        }
    }
}

/// Open connections per address.
#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// A connection's place in the count, in every request's extensions: a WebSocket keeps it
/// after the upgrade, when the HTTP connection itself is done.
#[derive(Clone)]
pub struct ConnSlot(#[allow(dead_code)] Arc<Slot>);

/// A counted connection; uncounted when dropped.
struct Slot {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(n) = open.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
    }
}

fn admit(open: &Arc<Mutex<Open>>, ip: IpAddr, limits: &ConnLimits) -> Result<Slot, &'static str> {
    let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
    if o.total >= limits.total {
        return Err("the server's connection limit");
    }
    let n = o.by_ip.entry(ip).or_default();
    if *n >= limits.per_ip && !limits.proxies.contains(&ip) {
        return Err("the per-address connection limit");
    }
    *n += 1;
    o.total += 1;
    Ok(Slot {
        open: open.clone(),
        ip,
    })
}

/// Serves `app` on `listener` until `shutdown` resolves; `what` names it in logs.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    what: &'static str,
    shutdown: impl Future<Output = ()>,
) {
    serve_tls(listener, app, limits, what, None, shutdown).await
}

/// As [`serve`], over TLS when `tls` is given (HTTPS, WSS): the handshake must end within the
/// request-head deadline.
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    what: &'static str,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let open = Arc::new(Mutex::new(Open::default()));
    // Refusals are logged at most once a second per listener: a flood must not flood the log.
    let mut last_refusal_log: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, typically: wait for some to be freed.
                    tracing::warn!("{what}: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match admit(&open, addr.ip(), &limits) {
            Ok(s) => ConnSlot(Arc::new(s)),
            Err(why) => {
                let now = tokio::time::Instant::now();
                if last_refusal_log.is_none_or(|t| now - t >= Duration::from_secs(1)) {
                    last_refusal_log = Some(now);
                    tracing::warn!(client = %addr.ip(), "{what}: connection refused: {why}");
                }
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let held = slot.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(addr));
            req.extensions_mut().insert(held.clone());
            app.clone().oneshot(req)
        });
        let header_timeout = limits.header_timeout;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Some(acceptor) = acceptor else {
                serve_connection(TokioIo::new(tcp), service, header_timeout, addr).await;
                return;
            };
            let stream = match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(client = %addr.ip(), "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client = %addr.ip(), "TLS handshake timed out");
                    return;
                }
            };
            if stream.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
                // A certificate authority checked the challenge certificate: done.
                return;
            }
            serve_connection(TokioIo::new(stream), service, header_timeout, addr).await;
        });
    }
}

/// Serves HTTP/1.1 (with upgrades, for WebSockets) on one connection.
async fn serve_connection<I, S>(io: I, service: S, header_timeout: Duration, addr: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming> + Send,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(client = %addr.ip(), "connection ended: {e}");
    }
}

/// The token of an `Authorization: Bearer …` header (the scheme in any case, RFC 9110).
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The request's media type (`Content-Type` without its parameters), in lower case; empty
/// when there is none.
pub fn media_type(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The client's address: the connection's, or — when that is a trusted proxy — the last
/// address of `X-Forwarded-For` that is not one.
pub fn client_ip(peer: SocketAddr, headers: &axum::http::HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let mut ip = peer.ip();
    if !trusted.contains(&ip) {
        return ip;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(h) if trusted.contains(&h) => ip = h,
            Ok(h) => return h,
            Err(_) => return ip,
        }
    }
    ip
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderMap, HeaderValue};

    fn with(name: header::HeaderName, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn bearer_tokens_and_media_types_are_read_as_http_says() {
        assert_eq!(
            bearer(&with(header::AUTHORIZATION, "Bearer abc")),
            Some("abc")
        );
        assert_eq!(
            bearer(&with(header::AUTHORIZATION, "bearer abc ")),
            Some("abc")
        );
        assert_eq!(bearer(&with(header::AUTHORIZATION, "Basic abc")), None);
        assert_eq!(bearer(&with(header::AUTHORIZATION, "Bearer")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
        let sdp = with(header::CONTENT_TYPE, "Application/SDP; charset=utf-8");
        assert_eq!(media_type(&sdp), "application/sdp");
        assert_eq!(media_type(&HeaderMap::new()), "");
    }

    #[test]
    fn slots_are_capped_per_address_and_in_all() {
        let open = Arc::new(Mutex::new(Open::default()));
        let proxy: IpAddr = "192.0.2.9".parse().unwrap();
        let limits = ConnLimits {
            total: 5,
            per_ip: 2,
            header_timeout: Duration::from_secs(1),
            proxies: vec![proxy],
        };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = admit(&open, a, &limits).unwrap();
        let _s2 = admit(&open, a, &limits).unwrap();
        assert!(admit(&open, a, &limits).is_err());
        // A proxy brings many clients: only the total holds it.
        let _p: Vec<Slot> = (0..3)
            .map(|_| admit(&open, proxy, &limits).unwrap())
            .collect();
        assert!(admit(&open, b, &limits).is_err(), "total reached");
        drop(s1);
        assert!(admit(&open, a, &limits).is_ok());
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7".parse().unwrap(),
        );
        let peer = SocketAddr::new(proxy, 5000);
        assert_eq!(client_ip(peer, &h, &[]), proxy);
        assert_eq!(
            client_ip(peer, &h, &[proxy]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let other = SocketAddr::new("198.51.100.1".parse().unwrap(), 1);
        assert_eq!(client_ip(other, &h, &[proxy]), other.ip());
    }
}
