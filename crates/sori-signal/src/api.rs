//! The server API: LiveKit's RoomService in its Twirp JSON form
//! (`POST /twirp/livekit.RoomService/<Method>`), so that LiveKit's server SDKs manage Sori's
//! rooms unchanged, and Sori's own recording calls beside it
//! (`POST /twirp/sori.RecordingService/<Method>`). docs/server-api.md lists every call.
//!
//! A call carries `Authorization: Bearer <access token>` signed with one of the server's API
//! keys; the grant each call needs is LiveKit's (`roomCreate`, `roomList`, `roomAdmin` or
//! `roomRecord` for the room named in the token). A server without keys answers only its
//! own machine (loopback), as it does for joins. Errors are Twirp's: `{"code", "msg"}` with
//! the status Twirp gives the code; nothing changes on a refused call.

pub(crate) mod wire;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::{self, Grants};
use crate::hub::{ApiError, NewRoom};
use crate::protocol::ServerMessage;
use crate::{http, unix_now, Signal};

/// Largest request body: SendData's payload is the only large field.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Largest SendData payload, decoded (LiveKit's limit for a reliable data packet).
const MAX_DATA: usize = 15 * 1024;

/// A Twirp error: its code and message.
#[derive(Debug)]
pub(crate) struct Twirp {
    code: &'static str,
    msg: String,
}

impl Twirp {
    fn new(code: &'static str, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self.code {
            "invalid_argument" | "malformed" | "out_of_range" => StatusCode::BAD_REQUEST,
            "unauthenticated" => StatusCode::UNAUTHORIZED,
            "permission_denied" => StatusCode::FORBIDDEN,
            "not_found" | "bad_route" => StatusCode::NOT_FOUND,
            "already_exists" | "aborted" => StatusCode::CONFLICT,
            "failed_precondition" => StatusCode::PRECONDITION_FAILED,
            "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
            "unimplemented" => StatusCode::NOT_IMPLEMENTED,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ApiError> for Twirp {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound(m) => Twirp::new("not_found", m),
            ApiError::Invalid(m) => Twirp::new("failed_precondition", m),
            ApiError::Exhausted(m) => Twirp::new("resource_exhausted", m),
        }
    }
}

impl IntoResponse for Twirp {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "msg": self.msg }).to_string();
        (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

type Answer = Result<Response, Twirp>;

/// Every method of the two services, for counting calls (anything else counts as `other`).
const METHODS: [&str; 16] = [
    "CreateRoom",
    "ListRooms",
    "DeleteRoom",
    "ListParticipants",
    "GetParticipant",
    "RemoveParticipant",
    "MutePublishedTrack",
    "UpdateParticipant",
    "UpdateRoomMetadata",
    "SendData",
    "ForwardParticipant",
    "MoveParticipant",
    "UpdateSubscriptions",
    "StartRecording",
    "StopRecording",
    "other",
];

/// Calls of the server API by method and outcome (`ok` or the Twirp code), for `/metrics`.
#[derive(Default)]
pub(crate) struct ApiCalls(
    std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
);

impl ApiCalls {
    fn count(&self, method: &str, outcome: &'static str) {
        let method = METHODS
            .iter()
            .find(|m| **m == method)
            .copied()
            .unwrap_or("other");
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((method, outcome)).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> Vec<((&'static str, &'static str), u64)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

fn json(value: &impl Serialize) -> Answer {
    let body = serde_json::to_string(value).map_err(|e| Twirp::new("internal", e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn empty() -> Answer {
    json(&serde_json::json!({}))
}

/// What the caller may do: a token's grants, or everything on a server without keys (whose
/// API answers loopback only).
enum Caller {
    Token(Grants),
    Local,
}

impl Caller {
    fn check(&self, what: Grant, room: Option<&str>) -> Result<(), Twirp> {
        let Caller::Token(g) = self else {
            return Ok(());
        };
        let (granted, name) = match what {
            Grant::Create => (g.create, "roomCreate"),
            Grant::List => (g.list, "roomList"),
            Grant::Admin => (g.admin, "roomAdmin"),
            Grant::Record => (g.record || g.admin, "roomRecord"),
        };
        if !granted {
            return Err(Twirp::new(
                "permission_denied",
                format!("this call needs an access token with {name}"),
            ));
        }
        if let (Some(room), Grant::Admin | Grant::Record) = (room, what) {
            if g.room.as_deref() != Some(room) {
                return Err(Twirp::new(
                    "permission_denied",
                    format!("the access token's {name} is not for room {room:?}"),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Grant {
    Create,
    List,
    Admin,
    Record,
}

impl Signal {
    fn api_caller(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<Caller, Twirp> {
        if self.config.keys.is_empty() {
            let ip = http::client_ip(peer, headers, &self.config.trusted_proxies);
            if ip.is_loopback() {
                return Ok(Caller::Local);
            }
            return Err(Twirp::new(
                "unauthenticated",
                "this server has no API keys: its API answers only its own machine",
            ));
        }
        let token = crate::http::bearer(headers).ok_or_else(|| {
            Twirp::new(
                "unauthenticated",
                "an access token is needed (Authorization: Bearer …)",
            )
        })?;
        auth::verify_api(&self.config.keys, token, unix_now())
            .map(Caller::Token)
            .map_err(|e| Twirp::new("unauthenticated", e.to_string()))
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Twirp> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| {
        Twirp::new(
            "malformed",
            format!("the request is not the JSON expected: {e}"),
        )
    })
}

fn need(value: &str, field: &str) -> Result<(), Twirp> {
    if value.trim().is_empty() {
        return Err(Twirp::new(
            "invalid_argument",
            format!("{field} is required"),
        ));
    }
    Ok(())
}

/// Checks the request's form (Twirp JSON: `POST` with `Content-Type: application/json`).
fn json_request(headers: &HeaderMap) -> Result<(), Twirp> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if crate::http::media_type(headers) != "application/json" {
        return Err(Twirp::new(
            "bad_route",
            format!(
                "Sori's server API speaks Twirp JSON (Content-Type: application/json), not {content_type:?}"
            ),
        ));
    }
    Ok(())
}

/// `POST /twirp/livekit.RoomService/{method}`.
pub(crate) async fn room_service(
    State(signal): State<Signal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (call, name) = (signal.clone(), method.clone());
    serve_call(&signal, peer, &method, &headers, |caller| async move {
        call.room_call(&caller, &name, &body).await
    })
    .await
}

/// `POST /twirp/sori.RecordingService/{method}`.
pub(crate) async fn recording_service(
    State(signal): State<Signal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (call, name) = (signal.clone(), method.clone());
    serve_call(&signal, peer, &method, &headers, |caller| async move {
        call.recording_call(&caller, &name, &body).await
    })
    .await
}

/// Checks a call's form and token, runs it, counts it, and answers it (a refusal as Twirp's
/// error JSON).
async fn serve_call<F: std::future::Future<Output = Answer>>(
    signal: &Signal,
    peer: SocketAddr,
    method: &str,
    headers: &HeaderMap,
    run: impl FnOnce(Caller) -> F,
) -> Response {
    let answer = match json_request(headers).and_then(|()| signal.api_caller(peer, headers)) {
        Ok(caller) => run(caller).await,
        Err(e) => Err(e),
    };
    let outcome = match &answer {
        Ok(_) => "ok",
        Err(e) => e.code,
    };
    signal.api_calls.count(method, outcome);
    answer.unwrap_or_else(|e| {
        tracing::debug!(method, code = e.code, "server API call refused: {}", e.msg);
        e.into_response()
    })
}

impl Signal {
    async fn room_call(&self, caller: &Caller, method: &str, body: &Bytes) -> Answer {
        let now = Instant::now();
        match method {
            "CreateRoom" => {
                caller.check(Grant::Create, None)?;
                let r: wire::CreateRoomRequest = parse(body)?;
                need(&r.name, "name")?;
                if !crate::protocol::valid_name(&r.name) {
                    return Err(Twirp::new(
                        "invalid_argument",
                        "a room name has 1 to 64 characters and no control characters",
                    ));
                }
                let seconds = |s: u32| (s > 0).then(|| Duration::from_secs(u64::from(s)));
                let new = NewRoom {
                    name: r.name,
                    mode: self.config.default_mode,
                    empty_timeout: seconds(r.empty_timeout),
                    departure_timeout: seconds(r.departure_timeout),
                    max_participants: r.max_participants,
                    metadata: r.metadata,
                };
                let (view, _created) = self.hub().create_room(&new, now)?;
                let recording = self.recordings.is_on(&view.name).await;
                json(&wire::Room::from(&view, recording))
            }
            "ListRooms" => {
                caller.check(Grant::List, None)?;
                let r: wire::ListRoomsRequest = parse(body)?;
                let views = self.hub().room_views(&r.names);
                let mut rooms = Vec::with_capacity(views.len());
                for v in &views {
                    rooms.push(wire::Room::from(v, self.recordings.is_on(&v.name).await));
                }
                json(&serde_json::json!({ "rooms": rooms }))
            }
            "DeleteRoom" => {
                // As in LiveKit, ending a room takes roomCreate.
                caller.check(Grant::Create, None)?;
                let r: wire::RoomRequest = parse(body)?;
                need(&r.room, "room")?;
                if !self
                    .hub()
                    .room_views(std::slice::from_ref(&r.room))
                    .is_empty()
                {
                    // The recording is finished before the room ends: its webhook comes first.
                    self.recordings.stop(&r.room).await;
                }
                self.hub().end_room(&r.room)?;
                empty()
            }
            "ListParticipants" => {
                let r: wire::RoomRequest = parse(body)?;
                need(&r.room, "room")?;
                caller.check(Grant::Admin, Some(&r.room))?;
                let views = self.hub().participant_views(&r.room)?;
                let participants: Vec<_> = views.iter().map(wire::Participant::from).collect();
                json(&serde_json::json!({ "participants": participants }))
            }
            "GetParticipant" => {
                let r: wire::ParticipantRequest = parse(body)?;
                need(&r.room, "room")?;
                need(&r.identity, "identity")?;
                caller.check(Grant::Admin, Some(&r.room))?;
                let view = self.hub().participant_view(&r.room, &r.identity)?;
                json(&wire::Participant::from(&view))
            }
            "RemoveParticipant" => {
                let r: wire::ParticipantRequest = parse(body)?;
                need(&r.room, "room")?;
                need(&r.identity, "identity")?;
                caller.check(Grant::Admin, Some(&r.room))?;
                self.hub().remove_identity(&r.room, &r.identity, now)?;
                empty()
            }
            "MutePublishedTrack" => {
                let r: wire::MuteRoomTrackRequest = parse(body)?;
                need(&r.room, "room")?;
                need(&r.identity, "identity")?;
                need(&r.track_sid, "track_sid")?;
                caller.check(Grant::Admin, Some(&r.room))?;
                let (track, media) =
                    self.hub()
                        .mute_track(&r.room, &r.identity, &r.track_sid, r.muted)?;
                if let Some(peer) = media {
                    if let Err(e) = self.media.set_muted(&peer, track.kind, r.muted).await {
                        tracing::warn!("server mute not applied: {e}");
                        return Err(Twirp::new(
                            "unavailable",
                            format!("the media server did not apply the mute: {e}"),
                        ));
                    }
                }
                json(&serde_json::json!({ "track": wire::Track::from(&track) }))
            }
            "UpdateParticipant" => {
                let r: wire::UpdateParticipantRequest = parse(body)?;
                need(&r.room, "room")?;
                need(&r.identity, "identity")?;
                caller.check(Grant::Admin, Some(&r.room))?;
                let chat = r.permission.as_ref().and_then(|p| p.can_publish_data);
                if let Some(p) = &r.permission {
                    if p.can_publish.is_some() || p.can_subscribe.is_some() {
                        return Err(Twirp::new(
                            "unimplemented",
                            "Sori changes canPublishData only; mute a participant's tracks \
                             with MutePublishedTrack, or remove it",
                        ));
                    }
                }
                if r.name
                    .as_deref()
                    .is_some_and(|n| !n.is_empty() && !crate::protocol::valid_name(n))
                {
                    return Err(Twirp::new(
                        "invalid_argument",
                        "a name has 1 to 64 characters and no control characters",
                    ));
                }
                if !r.attributes.is_empty() {
                    return Err(Twirp::new(
                        "unimplemented",
                        "Sori's participants have no attributes; use metadata",
                    ));
                }
                let view = self.hub().update_participant(
                    &r.room,
                    &r.identity,
                    r.name.as_deref(),
                    r.metadata.as_deref(),
                    chat,
                )?;
                json(&wire::Participant::from(&view))
            }
            "UpdateRoomMetadata" => {
                let r: wire::RoomRequest = parse(body)?;
                need(&r.room, "room")?;
                caller.check(Grant::Admin, Some(&r.room))?;
                let view = self.hub().update_room_metadata(&r.room, &r.metadata)?;
                let recording = self.recordings.is_on(&r.room).await;
                json(&wire::Room::from(&view, recording))
            }
            "SendData" => {
                let r: wire::SendDataRequest = parse(body)?;
                need(&r.room, "room")?;
                caller.check(Grant::Admin, Some(&r.room))?;
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(r.data.trim())
                    .map_err(|e| {
                        Twirp::new("invalid_argument", format!("data is not base64: {e}"))
                    })?;
                if bytes.is_empty() || bytes.len() > MAX_DATA {
                    return Err(Twirp::new(
                        "invalid_argument",
                        format!("data has 1 to {MAX_DATA} bytes"),
                    ));
                }
                if !r.destination_sids.is_empty() {
                    return Err(Twirp::new(
                        "unimplemented",
                        "address participants by destination_identities",
                    ));
                }
                let topic = r.topic.as_deref().filter(|t| !t.is_empty());
                // The topic `chat` puts UTF-8 text into the room's chat as well.
                let text = match topic {
                    Some("chat") => Some(std::str::from_utf8(&bytes).map_err(|_| {
                        Twirp::new("invalid_argument", "a chat message is UTF-8 text")
                    })?),
                    _ => None,
                };
                self.hub().send_data(
                    &r.room,
                    r.data.trim(),
                    topic,
                    &r.destination_identities,
                    text,
                )?;
                empty()
            }
            "ForwardParticipant" | "MoveParticipant" | "UpdateSubscriptions" => Err(Twirp::new(
                "unimplemented",
                format!("Sori does not implement {method} (docs/server-api.md)"),
            )),
            _ => Err(Twirp::new(
                "bad_route",
                format!("no method {method:?} in livekit.RoomService"),
            )),
        }
    }

    async fn recording_call(&self, caller: &Caller, method: &str, body: &Bytes) -> Answer {
        match method {
            "StartRecording" | "StopRecording" => {
                let r: wire::RoomRequest = parse(body)?;
                need(&r.room, "room")?;
                caller.check(Grant::Record, Some(&r.room))?;
                let on = method == "StartRecording";
                match self.hub().room_uses_sfu(&r.room) {
                    None => return Err(Twirp::new("not_found", format!("no room {:?}", r.room))),
                    Some(false) if on => {
                        return Err(Twirp::new(
                            "failed_precondition",
                            "only SFU rooms can be recorded: in a peer-to-peer room media bypasses the server",
                        ))
                    }
                    Some(_) => {}
                }
                let name = if on {
                    let name = self
                        .recordings
                        .start(&r.room)
                        .await
                        .map_err(|(code, why)| {
                            let code = match code {
                                crate::protocol::ErrorCode::RateLimited
                                | crate::protocol::ErrorCode::ServerFull => "resource_exhausted",
                                _ => "failed_precondition",
                            };
                            Twirp::new(code, why)
                        })?;
                    Some(name)
                } else {
                    self.recordings.stop(&r.room).await
                };
                self.hub().broadcast(
                    &r.room,
                    &ServerMessage::Recording {
                        on,
                        by: Some(crate::hub::SERVER_ID.into()),
                        name: name.clone(),
                    },
                );
                json(&serde_json::json!({ "room": r.room, "recording": name, "active": on }))
            }
            _ => Err(Twirp::new(
                "bad_route",
                format!("no method {method:?} in sori.RecordingService"),
            )),
        }
    }
}
