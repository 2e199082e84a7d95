//! A session server on loopback, driving a real media server in the same process, and a
//! WebSocket client for `/ws` that keeps reading (so it answers the server's pings) while a test
//! looks elsewhere.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sori_net::{MediaConfig, MediaServer};
use sori_signal::{Signal, SignalConfig};
use sori_testkit::ws;
use str0m::media::{Direction, MediaKind};
use str0m::RtcConfig;

pub mod stub;

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = ws::WAIT;

pub struct Server {
    /// `ws://…/ws`.
    pub url: String,
    /// The HTTP address (`/metrics`).
    pub http: SocketAddr,
    pub media: MediaServer,
}

/// `sori serve` in miniature: the media core on a free UDP port and the session server on a free
/// TCP port, both on 127.0.0.1.
pub async fn server() -> Server {
    server_with(SignalConfig::default()).await
}

/// [`server`] with these settings.
pub async fn server_with(config: SignalConfig) -> Server {
    server_with_core(config, Default::default()).await
}

/// [`server_with`], the media core configured with `sfu`.
pub async fn server_with_core(
    config: SignalConfig,
    sfu: sori_media::sori_sfu::SfuConfig,
) -> Server {
    let media = sori_net::start(MediaConfig {
        bind: SocketAddr::new(LOCALHOST, 0),
        advertise: vec![LOCALHOST],
        sfu,
        tcp: None,
        workers: 1,
        node: 0,
        links: 0,
    })
    .await
    .unwrap();
    let app = Signal::new(media.handle.clone(), config);
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(app.serve(listener, std::future::pending()));
    Server {
        url: format!("ws://{http}/ws"),
        http,
        media,
    }
}

impl Server {
    /// The whole `/metrics` page.
    pub async fn metrics_page(&self) -> String {
        let page = http_get(self.http, "/metrics", &[]).await;
        String::from_utf8(page.body).expect("a text page")
    }

    /// The value of an unlabelled sample on `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let page = self.metrics_page().await;
        page.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} on /metrics:\n{page}"))
            .parse()
            .unwrap()
    }
}

/// One browser's socket: the test kit's WebSocket client ([`sori_testkit::ws`]), which keeps
/// reading while a test looks elsewhere, with what `/ws` adds (joining, waiting for a type).
pub struct Client(ws::Client);

impl std::ops::Deref for Client {
    type Target = ws::Client;

    fn deref(&self) -> &ws::Client {
        &self.0
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut ws::Client {
        &mut self.0
    }
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        Client(ws::Client::connect(url).await)
    }

    /// Connects and joins `room` (SFU); returns the client and its `joined`.
    pub async fn join(url: &str, room: &str, name: &str) -> (Client, Value) {
        Client::connect_and_join(url, room, name, "sfu").await
    }

    /// Connects and joins `room` in `mode`; returns the client and its `joined`.
    pub async fn connect_and_join(
        url: &str,
        room: &str,
        name: &str,
        mode: &str,
    ) -> (Client, Value) {
        let mut c = Client::connect(url).await;
        c.send(json!({"type": "join", "v": 1, "room": room, "name": name, "mode": mode}));
        let joined = c.recv().await;
        assert_eq!(joined["type"], "joined", "{joined}");
        (c, joined)
    }

    /// The next message of type `ty`, passing over the media server's offers and participant
    /// events; any other message fails the test.
    pub async fn expect(&mut self, ty: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no {ty} within the wait");
            let v = self.recv().await;
            if v["type"] == ty {
                return v;
            }
            let passing = v["type"] == "offer"
                || v["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("participant-"));
            assert!(passing, "waiting for {ty}, got {v}");
        }
    }

    /// Drops the connection without a close frame, as a failing network does.
    pub async fn sever(self) {
        self.0.sever().await
    }

    /// Ends the connection in order without a close frame, as a killed browser's system does.
    pub async fn vanish(self) {
        self.0.vanish().await
    }

    /// Closes the socket and waits until the server has closed it too (after it let the
    /// participant go); returns what arrived meanwhile.
    pub async fn close(self) -> Vec<Value> {
        self.0.close().await
    }
}

/// Sends a chat from `c` and returns what `c` receives until its own chat comes back: proof
/// that nothing else reached it before.
pub async fn flush(c: &mut Client, text: &str) -> Vec<Value> {
    c.send(json!({"type": "chat", "text": text}));
    let mut before = Vec::new();
    loop {
        let v = c.recv().await;
        if v["type"] == "chat" && v["text"] == text {
            return before;
        }
        before.push(v);
    }
}

/// A browser-like SDP offer: audio and video to send (Opus and VP8).
pub fn offer() -> String {
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _) = api.apply().unwrap();
    offer.to_sdp_string()
}

/// An HTTP response, read whole.
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with these extra headers, on a connection of its own, read to its end.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    http_exchange(addr, request.into_bytes()).await
}

/// `POST path` with these extra headers and `body`, on a connection of its own, read to its
/// end.
pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    http_request(addr, "POST", path, headers, body).await
}

/// `METHOD path` with these extra headers and `body`, on a connection of its own, read to its
/// end.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut raw = request.into_bytes();
    raw.extend_from_slice(body);
    http_exchange(addr, raw).await
}

/// Sends `request` whole on a new connection and reads the response to its end.
async fn http_exchange(addr: SocketAddr, request: Vec<u8>) -> HttpResponse {
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(&request).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a whole response head");
        let head = String::from_utf8_lossy(&raw[..end]).to_string();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        assert!(
            !headers
                .iter()
                .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")),
            "responses here carry a Content-Length"
        );
        HttpResponse {
            status,
            headers,
            body: raw[end + 4..].to_vec(),
        }
    })
    .await
    .unwrap()
}

/// A directory of its own under the system's temporary directory, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("sori-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
