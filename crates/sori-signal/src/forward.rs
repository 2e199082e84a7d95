//! HTTP requests about a room another session server holds (`sori signal --redis`): the
//! server API's calls, WHIP/WHEP's `POST`s and their sessions' `PATCH`/`DELETE` go to the
//! room's server over the bus and its answer comes back, so that an application or an encoder
//! may reach any session server. `ListRooms` asks every session server and lists all rooms.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use crate::bus::Owner;
use crate::Signal;

/// Marks a request forwarded by another session server: it is answered here.
#[derive(Clone, Copy)]
pub(crate) struct Forwarded;

/// The largest body forwarded either way.
const MAX_BODY: usize = 1 << 20;

/// How long a forwarded request may take.
pub(crate) const WITHIN: Duration = Duration::from_secs(15);

/// A request as it crosses the bus.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Sent {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    /// Base64.
    pub body: String,
    /// The client's address, as the forwarding server saw it.
    pub peer: SocketAddr,
}

/// A response as it crosses the bus.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Base64.
    pub body: String,
}

/// Where a request goes.
enum Target {
    /// Answered here.
    Here,
    /// About room (decoded).
    Room(String),
    /// About a WHIP/WHEP session of node.
    Session(String),
    /// A server API call: its body names the room.
    Api,
    /// `ListRooms`: every server's rooms.
    AllRooms,
}

fn target(path: &str) -> Target {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["whip", room] | ["whep", room] | ["whep", room, _] => match decode(room) {
            Some(r) => Target::Room(r),
            None => Target::Here,
        },
        ["whip-sessions", id] | ["whep-sessions", id] => match id.split_once('~') {
            Some((node, _)) => Target::Session(node.to_string()),
            None => Target::Here,
        },
        ["twirp", "livekit.RoomService", "ListRooms"] => Target::AllRooms,
        ["twirp", "livekit.RoomService", _] => Target::Api,
        _ => Target::Here,
    }
}

/// A path segment, percent-decoded (`None`: not UTF-8).
fn decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The room a server API call names (`room`, or `name` for `CreateRoom`).
fn room_of_call(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let room = v.get("room").or_else(|| v.get("name"))?.as_str()?;
    Some(room.to_string())
}

/// The middleware: forwards what another session server should answer.
pub(crate) async fn layer(State(signal): State<Signal>, req: Request, next: Next) -> Response {
    let Some(links) = signal.links.clone() else {
        return next.run(req).await;
    };
    if req.extensions().get::<Forwarded>().is_some() {
        return next.run(req).await;
    }
    let (room, req) = match target(req.uri().path()) {
        Target::Here => return next.run(req).await,
        Target::Session(node) if node == links.node() => return next.run(req).await,
        Target::Session(node) => return forward(&links, &node, req).await,
        Target::Room(room) => (room, req),
        Target::Api => {
            let (parts, body) = req.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, crate::api::MAX_BODY).await else {
                return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response();
            };
            let req = Request::from_parts(parts, Body::from(bytes.clone()));
            match room_of_call(&bytes) {
                Some(room) => (room, req),
                None => return next.run(req).await,
            }
        }
        Target::AllRooms => return all_rooms(&links, req, next).await,
    };
    match links.place(&signal, &room).await {
        Owner::Here => next.run(req).await,
        Owner::Node(node) => forward(&links, &node, req).await,
    }
}

/// Sends `req` to session server `node` and answers with its response.
async fn forward(links: &crate::bus::Links, node: &str, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response();
    };
    let sent = Sent {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: pairs(&parts.headers),
        body: B64.encode(&body),
        peer,
    };
    match links.request(node, sent).await {
        Some(answer) => {
            let mut r = Response::new(Body::from(B64.decode(answer.body).unwrap_or_default()));
            *r.status_mut() =
                StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
            *r.headers_mut() = header_map(answer.headers);
            r
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "the room's session server did not answer; try again\n",
        )
            .into_response(),
    }
}

/// Bodies cross the bus in base64.
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The headers that cross the bus (those of this hop only do not).
fn pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| !hop_by_hop(k))
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// Headers that crossed the bus, as they were (a pair that does not parse is left out).
fn header_map(pairs: Vec<(String, String)>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            if !hop_by_hop(&k) {
                map.append(k, v);
            }
        }
    }
    map
}

fn hop_by_hop(h: &HeaderName) -> bool {
    matches!(
        h.as_str(),
        "connection" | "content-length" | "transfer-encoding" | "keep-alive" | "upgrade"
    )
}

/// Answers a request another session server forwarded, with `router` (this server's routes).
pub(crate) async fn answer(router: axum::Router, sent: Sent) -> Answer {
    let refused = |status: StatusCode| Answer {
        status: status.as_u16(),
        headers: Vec::new(),
        body: String::new(),
    };
    let mut req = Request::new(Body::from(B64.decode(sent.body).unwrap_or_default()));
    let (Ok(method), Ok(uri)) = (sent.method.parse(), sent.uri.parse()) else {
        return refused(StatusCode::BAD_REQUEST);
    };
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = header_map(sent.headers);
    req.extensions_mut().insert(ConnectInfo(sent.peer));
    req.extensions_mut().insert(Forwarded);
    let Ok(response) = router.oneshot(req).await;
    let (parts, body) = response.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return refused(StatusCode::BAD_GATEWAY);
    };
    Answer {
        status: parts.status.as_u16(),
        headers: pairs(&parts.headers),
        body: B64.encode(&body),
    }
}

/// `ListRooms`: this server's answer, with the rooms of every other session server added.
async fn all_rooms(links: &crate::bus::Links, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, crate::api::MAX_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response();
    };
    let copy = || {
        let mut r = Request::new(Body::from(body.clone()));
        *r.method_mut() = parts.method.clone();
        *r.uri_mut() = parts.uri.clone();
        *r.headers_mut() = parts.headers.clone();
        // What routing found (the path's parameters) and the client's address.
        *r.extensions_mut() = parts.extensions.clone();
        r
    };
    let others = links.others().await;
    let mut replies = Vec::new();
    for node in &others {
        replies.push(forward(links, node, copy()).await);
    }
    let here = next.run(copy()).await;
    if here.status() != StatusCode::OK {
        return here;
    }
    let (parts, body) = here.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let Ok(mut list) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Response::from_parts(parts, Body::from(body));
    };
    for reply in replies {
        if reply.status() != StatusCode::OK {
            continue;
        }
        let Ok(b) = axum::body::to_bytes(reply.into_body(), MAX_BODY).await else {
            continue;
        };
        let more = serde_json::from_slice::<serde_json::Value>(&b)
            .ok()
            .and_then(|v| v.get("rooms").and_then(|r| r.as_array()).cloned())
            .unwrap_or_default();
        if let Some(rooms) = list.get_mut("rooms").and_then(|r| r.as_array_mut()) {
            rooms.extend(more);
        } else if !more.is_empty() {
            list["rooms"] = serde_json::Value::Array(more);
        }
    }
    let mut parts = parts;
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(Bytes::from(list.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_say_where_a_request_goes() {
        assert!(matches!(target("/whip/stand%20up"), Target::Room(r) if r == "stand up"));
        assert!(matches!(target("/whep/r/Bo"), Target::Room(r) if r == "r"));
        assert!(matches!(target("/whip-sessions/s2~abc"), Target::Session(n) if n == "s2"));
        assert!(matches!(target("/whip-sessions/abc"), Target::Here));
        assert!(matches!(
            target("/twirp/livekit.RoomService/ListRooms"),
            Target::AllRooms
        ));
        assert!(matches!(
            target("/twirp/livekit.RoomService/DeleteRoom"),
            Target::Api
        ));
        assert!(matches!(target("/ws"), Target::Here));
        assert!(matches!(target("/whip/%ff"), Target::Here));
        assert_eq!(room_of_call(br#"{"room":"r"}"#).as_deref(), Some("r"));
        assert_eq!(room_of_call(br#"{"name":"n"}"#).as_deref(), Some("n"));
        assert_eq!(room_of_call(b"\x0a\x01r"), None);
    }
}
