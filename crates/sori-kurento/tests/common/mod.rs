//! A control API on loopback and a raw JSON-RPC client for it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use serde_json::{json, Value};
use sori_kurento::{Kurento, KurentoConfig};
use sori_net::{MediaConfig, MediaServer};
use sori_testkit::ws;
use str0m::media::{Direction, MediaKind};
use str0m::RtcConfig;

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = ws::WAIT;

pub struct Server {
    pub kurento: Kurento,
    pub url: String,
    pub media: MediaServer,
}

pub async fn server() -> Server {
    server_with(KurentoConfig::default()).await
}

pub async fn server_with(config: KurentoConfig) -> Server {
    server_linking(config, 0, 0).await
}

/// A server of media node `node` that may link `links` rooms with other nodes.
pub async fn server_linking(config: KurentoConfig, node: u16, links: usize) -> Server {
    let media = sori_net::start(MediaConfig {
        bind: SocketAddr::new(LOCALHOST, 0),
        advertise: vec![LOCALHOST],
        sfu: Default::default(),
        tcp: None,
        workers: 1,
        node,
        links,
    })
    .await
    .unwrap();
    let path = config.path.clone();
    let kurento = Kurento::new(media.handle.clone(), config);
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = kurento.router();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        kurento,
        url: format!("ws://{addr}{path}"),
        media,
    }
}

/// A JSON-RPC client over the test kit's WebSocket client ([`sori_testkit::ws`]).
pub struct Client {
    ws: ws::Client,
    next_id: u64,
    /// Events that arrived while waiting for a response.
    pub events: VecDeque<Value>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        Client {
            ws: ws::Client::connect(url).await,
            next_id: 0,
            events: VecDeque::new(),
        }
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send_text(text.to_string());
    }

    /// The next frame, as JSON.
    pub async fn recv(&mut self) -> Value {
        self.ws.recv().await
    }

    /// Sends a request; returns its id.
    pub async fn send(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({"jsonrpc": "2.0", "method": method, "id": id});
        if !params.is_null() {
            req["params"] = params;
        }
        self.send_raw(&req.to_string()).await;
        id
    }

    /// The response to request `id` (events on the way are kept).
    pub async fn response(&mut self, id: u64) -> Value {
        loop {
            let v = self.recv().await;
            if v.get("method").and_then(Value::as_str) == Some("onEvent") {
                self.events.push_back(v);
                continue;
            }
            assert_eq!(v["id"], json!(id), "responses come in request order: {v}");
            return v;
        }
    }

    /// Sends a request and returns the whole response.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params).await;
        self.response(id).await
    }

    /// `result` of a call that must succeed.
    pub async fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params.clone()).await;
        assert!(r.get("error").is_none(), "{method} {params}: {r}");
        r["result"].clone()
    }

    /// `error` of a call that must fail.
    pub async fn err(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params.clone()).await;
        assert!(
            r.get("result").is_none(),
            "{method} {params} must fail: {r}"
        );
        r["error"].clone()
    }

    pub async fn invoke(&mut self, object: &str, op: &str, params: Value) -> Value {
        let mut p = json!({"object": object, "operation": op});
        if !params.is_null() {
            p["operationParams"] = params;
        }
        self.ok("invoke", p).await["value"].clone()
    }

    /// Waits for the next event of `ty` on `object`.
    pub async fn event(&mut self, object: &str, ty: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self.events.iter().position(|e| {
                e["params"]["value"]["object"] == json!(object)
                    && e["params"]["value"]["type"] == json!(ty)
            });
            if let Some(i) = found {
                return self.events.remove(i).unwrap();
            }
            assert!(Instant::now() < deadline, "no {ty} event on {object}");
            let v = self.recv().await;
            if v.get("method").and_then(Value::as_str) == Some("onEvent") {
                self.events.push_back(v);
            }
        }
    }

    /// Closes the socket and waits until the server has closed it too.
    pub async fn close(self) {
        self.ws.close().await;
    }
}

/// A browser-like SDP offer: audio and video in `direction` (VP8 and Opus).
pub fn offer(direction: Direction) -> String {
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, direction, None, None, None);
    api.add_media(MediaKind::Video, direction, None, None, None);
    let (offer, _) = api.apply().unwrap();
    offer.to_sdp_string()
}

/// An offer whose video is H.264 only.
pub fn h264_offer() -> String {
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_h264(true)
        .build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, _) = api.apply().unwrap();
    offer.to_sdp_string()
}

/// Creates a pipeline; returns its id.
pub async fn pipeline(c: &mut Client) -> String {
    let r = c
        .ok("create", json!({"type": "MediaPipeline", "properties": {}}))
        .await;
    r["value"].as_str().unwrap().to_string()
}

/// Creates a WebRtcEndpoint in `pipeline`; returns its id.
pub async fn endpoint(c: &mut Client, pipeline: &str) -> String {
    let r = c
        .ok(
            "create",
            json!({"type": "WebRtcEndpoint", "constructorParams": {"mediaPipeline": pipeline},
               "properties": {}}),
        )
        .await;
    r["value"].as_str().unwrap().to_string()
}
