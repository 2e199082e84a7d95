//! WHIP ingest and WHEP playback: one HTTP POST of an SDP offer, answered with `201 Created`,
//! the answer and the `Location` of the session (RFC 9725; WHEP is the same for watching).
//!
//! - **WHIP** (`POST /whip/<room>`): an encoder (OBS, GStreamer, FFmpeg) publishes into a room.
//!   It is a participant like any other, without a socket: everyone receives its audio and
//!   video, recordings take it, moderators mute and remove it. It receives nothing.
//! - **WHEP** (`POST /whep/<room>[/<who>]`): a player watches a room. It is not a participant
//!   (nobody sees it in the room); its own receive-only m-lines are fed one participant's
//!   camera and microphone — the one it named, or whoever has the floor (see
//!   [`Hub::viewer_sources`](crate::hub::Hub)) — switched without renegotiation, at the layer
//!   its bandwidth allows.
//! - The session (`/whip-sessions/<id>`, `/whep-sessions/<id>`; the id is 256 random bits, so
//!   the `Location` is the capability to end it): `DELETE` ends it; `PATCH` with
//!   `application/trickle-ice-sdpfrag` takes trickled candidates (204: the media server is
//!   ICE-lite and learns the client's addresses from its checks) or restarts ICE (200 with
//!   the new credentials), `If-Match` checked against the `ETag`.
//!
//! Access is that of `/ws`: a bearer token (`Authorization: Bearer …`) whose grants allow
//! joining the room and publishing (WHIP) or subscribing (WHEP); on a server without keys,
//! anyone. Every refusal leaves nothing behind: admission is checked before the media server
//! sees the offer, and a join the hub refuses afterwards takes the media back out.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use serde::Deserialize;
use sori_media::sori_sfu::{MediaKind, TrackId};

use crate::auth::{Grants, Sources, TokenError};
use crate::connection::{end_participant, revoke_turn, Forwarder};
use crate::hub::{JoinOutcome, Joining, Me, ViewerSources};
use crate::limits::Rate;
use crate::outbox::Outbox;
use crate::protocol::{self, ErrorCode, LeaveReason, RoomMode};
use crate::{http, ice_servers, sdp, BackendError, PeerRef, Signal};

/// The routes: the endpoints (`POST`) and the sessions (`DELETE`, `PATCH`), `OPTIONS` on
/// each, no body over [`MAX_SDP`].
pub(crate) fn routes() -> Router<Signal> {
    let session = |kind: Kind| {
        delete(
            move |State(signal): State<Signal>, Path(id): Path<String>, headers: HeaderMap| async move {
                let reply = end_session(&signal, kind, &id, &headers).await;
                respond(&signal, &headers, reply)
            },
        )
        .patch(
            move |State(signal): State<Signal>,
                  Path(id): Path<String>,
                  headers: HeaderMap,
                  body: Bytes| async move {
                let reply = patch(&signal, kind, &id, &headers, &body).await;
                respond(&signal, &headers, reply)
            },
        )
        .options(session_options)
    };
    Router::new()
        .route("/whip/{room}", post(publish).options(endpoint_options))
        .route("/whep/{room}", post(play_room).options(endpoint_options))
        .route(
            "/whep/{room}/{who}",
            post(play_participant).options(endpoint_options),
        )
        .route("/whip-sessions/{id}", session(Kind::Whip))
        .route("/whep-sessions/{id}", session(Kind::Whep))
        .layer(DefaultBodyLimit::max(MAX_SDP))
}

/// The largest offer or fragment taken.
pub(crate) const MAX_SDP: usize = 64 * 1024;

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// Who is on the other end of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Whip,
    Whep,
}

impl Kind {
    fn resources(self) -> &'static str {
        match self {
            Kind::Whip => "/whip-sessions",
            Kind::Whep => "/whep-sessions",
        }
    }
}

/// One WHIP or WHEP session.
struct Session {
    kind: Kind,
    room: String,
    peer: PeerRef,
    /// A publisher's membership of its room.
    me: Option<Me>,
    /// Whom the TURN credentials in its `Link` headers were issued to (revoked at its end).
    turn_id: String,
    ip: IpAddr,
    etag: String,
    /// The client's last offer (an ICE restart offers it again with new credentials).
    offer: String,
    ice: Option<IceCredentials>,
    /// What a viewer is fed.
    viewer: Option<Viewer>,
    /// ICE restarts (each one a renegotiation at the media server).
    restarts: Rate,
    task: Option<tokio::task::AbortHandle>,
}

struct Viewer {
    /// Who it asked to watch (`None`: whoever has the floor).
    follow: Option<String>,
    video_mid: Option<String>,
    audio_mid: Option<String>,
    fed: ViewerSources,
}

/// The open WHIP and WHEP sessions.
#[derive(Default)]
pub(crate) struct HttpSessions(Mutex<HashMap<String, Session>>);

impl HttpSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions of `kind` open now.
    pub(crate) fn count(&self, kind: Kind) -> usize {
        self.lock().values().filter(|s| s.kind == kind).count()
    }

    fn viewers_in(&self, room: &str) -> usize {
        self.lock()
            .values()
            .filter(|s| s.kind == Kind::Whep && s.room == room)
            .count()
    }
}

/// A refusal: the status and the reason, which is the body.
type Refusal = (StatusCode, String);

fn refusal(status: StatusCode, why: impl Into<String>) -> Refusal {
    (status, why.into())
}

/// The response to a request, with the CORS headers a page of an allowed origin needs.
fn respond(signal: &Signal, request: &HeaderMap, reply: Result<Response, Refusal>) -> Response {
    let mut response = match reply {
        Ok(r) => r,
        Err((status, why)) => {
            let what = match status {
                StatusCode::UNAUTHORIZED => "unauthorized",
                StatusCode::FORBIDDEN => "forbidden",
                StatusCode::TOO_MANY_REQUESTS => "rate-limited",
                _ => "whip-whep-refused",
            };
            signal.refusals.count(what);
            tracing::info!(%status, "WHIP/WHEP request refused: {why}");
            let mut r = (status, format!("{why}\n")).into_response();
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            r
        }
    };
    if let Some(origin) = request.get(header::ORIGIN) {
        if signal.origin_allowed(request) {
            let h = response.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("Location, ETag, Link, Accept-Patch, Accept-Post"),
            );
        }
    }
    response
}

/// The checks every request makes first: a page of an allowed origin, the content type, the
/// body as text.
fn checked_body<'b>(
    signal: &Signal,
    headers: &HeaderMap,
    body: &'b Bytes,
    want: &str,
) -> Result<&'b str, Refusal> {
    if !signal.origin_allowed(headers) {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "pages of this origin may not use this server; see allowed_origins",
        ));
    }
    let got = http::media_type(headers);
    if got != want {
        return Err(refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the body must be {want}, not {got:?}"),
        ));
    }
    std::str::from_utf8(body)
        .map_err(|_| refusal(StatusCode::BAD_REQUEST, "the body is not UTF-8 text"))
}

/// The checks of a new session: an SDP offer, no shutdown, the address's join rate.
fn new_session_offer<'b>(
    signal: &Signal,
    ip: IpAddr,
    headers: &HeaderMap,
    body: &'b Bytes,
) -> Result<&'b str, Refusal> {
    let offer = checked_body(signal, headers, body, SDP)?;
    if !offer.starts_with("v=0") {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "the body is not an SDP offer (it must start with \"v=0\")",
        ));
    }
    if signal.draining() {
        return Err(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down: try again in a moment",
        ));
    }
    if !signal.allow_join(ip) {
        return Err(refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "too many joins from your address: wait a moment and try again",
        ));
    }
    Ok(offer)
}

/// The grants of the request's bearer token (see [`Signal::authorize`]).
fn grants(signal: &Signal, headers: &HeaderMap, room: &str) -> Result<Grants, Refusal> {
    let grants = signal
        .authorize(http::bearer(headers))
        .map_err(|e| match e {
            TokenError::Missing => refusal(
                StatusCode::UNAUTHORIZED,
                "this server needs an access token: Authorization: Bearer <token>",
            ),
            e => refusal(StatusCode::UNAUTHORIZED, e.to_string()),
        })?;
    grants
        .may_join(room)
        .map_err(|why| refusal(StatusCode::FORBIDDEN, why))?;
    Ok(grants)
}

fn room_name(room: &str) -> Result<(), Refusal> {
    if protocol::valid_name(room) {
        Ok(())
    } else {
        Err(refusal(
            StatusCode::BAD_REQUEST,
            "a room name is 1 to 64 characters, without control characters",
        ))
    }
}

/// The status of a refused join.
fn join_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Forbidden | ErrorCode::Banned | ErrorCode::RoomLocked => StatusCode::FORBIDDEN,
        ErrorCode::RoomFull | ErrorCode::ServerFull => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The status of an offer the media server refused.
fn offer_refusal(e: BackendError) -> Refusal {
    let status = match &e {
        BackendError::BadOffer(_) => StatusCode::BAD_REQUEST,
        BackendError::Codec(_) => StatusCode::NOT_ACCEPTABLE,
        BackendError::NotSupported(_) => StatusCode::NOT_IMPLEMENTED,
        BackendError::UnknownPeer | BackendError::Unreachable(_) | BackendError::Failed(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    refusal(status, format!("the offer was refused: {e}"))
}

fn new_id() -> Result<String, Refusal> {
    sori_turn::credentials::random_secret().map_err(|_| {
        refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "no randomness for a session id",
        )
    })
}

/// A session's id: 256 random bits, after this session server's node id and `~` when it
/// shares rooms with others (a request for the session reaching another is sent here).
fn session_id(signal: &Signal) -> Result<String, Refusal> {
    let id = new_id()?;
    Ok(match &signal.links {
        Some(links) => format!("{}~{id}", links.node()),
        None => id,
    })
}

/// The `ETag` of a session's ICE state: new with every ICE restart.
fn new_etag() -> String {
    let bits = sori_turn::credentials::random_secret().unwrap_or_default();
    format!("\"{}\"", bits.get(..16).unwrap_or("0"))
}

/// `201 Created` with the answer and what RFC 9725 puts beside it.
fn created(kind: Kind, id: &str, etag: &str, answer: String, links: Vec<String>) -> Response {
    let mut r = (StatusCode::CREATED, answer).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(v) = HeaderValue::from_str(&format!("{}/{id}", kind.resources())) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    for link in links {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    r
}

/// The ICE servers of participant `id` as `Link` header values (RFC 9725 section 4.6).
fn ice_links(signal: &Signal, id: &str) -> Vec<String> {
    let mut links = Vec::new();
    for server in ice_servers(&signal.config, id) {
        for url in &server.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(u), Some(c)) = (&server.username, &server.credential) {
                link.push_str(&format!(
                    "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
                ));
            }
            links.push(link);
        }
    }
    links
}

#[derive(Deserialize)]
pub(crate) struct PublishQuery {
    /// The publisher's display name when its token gives none.
    name: Option<String>,
}

/// `POST /whip/<room>`.
async fn publish(
    State(signal): State<Signal>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    Query(query): Query<PublishQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ip = http::client_ip(addr, &headers, &signal.config.trusted_proxies);
    let reply = start_publisher(&signal, ip, &room, query.name, &headers, &body).await;
    respond(&signal, &headers, reply)
}

async fn start_publisher(
    signal: &Signal,
    ip: IpAddr,
    room: &str,
    name: Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Refusal> {
    let offer = new_session_offer(signal, ip, headers, body)?;
    room_name(room)?;
    let name = name.unwrap_or_else(|| "WHIP".into());
    if !protocol::valid_name(&name) {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "a name is 1 to 64 characters, without control characters",
        ));
    }
    let mut grants = grants(signal, headers, room)?;
    if grants.publish == Sources::NONE {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "the access token does not grant canPublish",
        ));
    }
    // A publisher receives nothing: the media server never renegotiates with it.
    grants.subscribe = false;
    if signal.hub().room_mode(room) == Some(RoomMode::P2p) {
        return Err(refusal(
            StatusCode::CONFLICT,
            format!("room {room:?} is a two-person peer-to-peer room: WHIP publishes into rooms whose media goes through the server"),
        ));
    }
    let max = signal.config.limits.mlines_per_sdp;
    let offer = sdp::restrict(offer, grants.publish, max).map_err(|sdp::TooManyLines(n)| {
        refusal(
            StatusCode::BAD_REQUEST,
            format!("an SDP with {n} m-lines was refused; the limit is {max}"),
        )
    })?;
    let out = Outbox::detached();
    let joining = |out: Outbox| Joining {
        room,
        name: &name,
        mode: RoomMode::Sfu,
        grants: &grants,
        out,
        resume: None,
        ingress: true,
    };
    // Admission first: a refused publisher costs the media server nothing.
    if let Err(JoinOutcome::Refused(code, why)) = signal.hub().admit(&joining(out.clone())) {
        return Err(refusal(join_status(code), why));
    }
    let id = session_id(signal)?;
    let joined = signal
        .media
        .join(room, &offer, false)
        .await
        .map_err(offer_refusal)?;
    let outcome = signal
        .hub()
        .join(joining(out.clone()), |p| ice_servers(&signal.config, p));
    let me = match outcome {
        JoinOutcome::Joined(me) => me,
        JoinOutcome::Refused(code, why) => {
            // Admitted a moment ago, refused now (the room filled meanwhile).
            signal.media.leave(&joined.peer).await;
            return Err(refusal(join_status(code), why));
        }
    };
    tracing::info!(room, id = me.id, identity = ?grants.identity, client = %ip, "WHIP publisher joined");
    let muted = {
        let mut hub = signal.hub();
        hub.offered(&me, &offer, None, true);
        hub.set_media(&me, joined.stream_id.clone(), joined.peer.clone())
    };
    for (kind, on) in [
        (MediaKind::Audio, muted.audio),
        (MediaKind::Video, muted.video),
    ] {
        if on {
            if let Err(e) = signal.media.set_muted(&joined.peer, kind, true).await {
                tracing::warn!("server mute not applied: {e}");
            }
        }
    }
    let etag = new_etag();
    let links = ice_links(signal, &me.id);
    let forwarder = Forwarder {
        hub: signal.hub.clone(),
        out: out.clone(),
        recordings: signal.recordings.clone(),
        media: signal.media.clone(),
        peer: joined.peer.clone(),
        me: me.clone(),
        name: signal.hub().name_of(&me).unwrap_or(name.clone()),
    };
    let session = Session {
        kind: Kind::Whip,
        room: room.to_string(),
        peer: joined.peer.clone(),
        turn_id: me.id.clone(),
        me: Some(me),
        ip,
        etag: etag.clone(),
        ice: IceCredentials::of(&offer),
        offer,
        viewer: None,
        restarts: restart_rate(signal),
        task: None,
    };
    signal.http_sessions.lock().insert(id.clone(), session);
    let (s, task_id) = (signal.clone(), id.clone());
    let signals = joined.signals;
    let task = tokio::spawn(async move {
        let end = out.end();
        tokio::select! {
            // The media connection is gone (the encoder stopped without a DELETE).
            _ = forwarder.run(signals) => {}
            // Removed by a moderator or the server API, or the room ended.
            _ = end.wait() => {}
        }
        finish_from_task(&s, &task_id, LeaveReason::Timeout).await;
    });
    if let Some(s) = signal.http_sessions.lock().get_mut(&id) {
        s.task = Some(task.abort_handle());
    }
    Ok(created(Kind::Whip, &id, &etag, joined.answer, links))
}

fn restart_rate(signal: &Signal) -> Rate {
    let l = &signal.config.limits;
    Rate::new(l.offers_per_sec, l.offers_burst, Instant::now())
}

/// Ends session `id` if it is still open: a publisher leaves its room (`reason`), a viewer's
/// media goes. Whoever takes the session out of the table does this, once; a session's own
/// task calls [`finish_from_task`] instead.
async fn finish(signal: &Signal, id: &str, reason: LeaveReason) -> bool {
    let Some(session) = signal.http_sessions.lock().remove(id) else {
        return false;
    };
    if let Some(task) = &session.task {
        // The session's task (watching its media) is not needed any more.
        task.abort();
    }
    end(signal, session, reason).await;
    true
}

/// [`finish`] from the session's own task: it must not abort itself (its cleanup would stop
/// at its first await).
async fn finish_from_task(signal: &Signal, id: &str, reason: LeaveReason) {
    let session = signal.http_sessions.lock().remove(id);
    if let Some(session) = session {
        end(signal, session, reason).await;
    }
}

async fn end(signal: &Signal, session: Session, reason: LeaveReason) {
    match session.me {
        Some(me) => end_participant(signal, session.ip, me, Some(session.peer), reason).await,
        None => {
            tracing::info!(room = session.room, client = %session.ip, "WHEP viewer left");
            signal.media.leave(&session.peer).await;
            revoke_turn(signal, &session.turn_id).await;
        }
    }
}

/// `POST /whep/<room>`: whoever has the floor.
async fn play_room(
    State(signal): State<Signal>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ip = http::client_ip(addr, &headers, &signal.config.trusted_proxies);
    let reply = start_viewer(&signal, ip, &room, None, &headers, &body).await;
    respond(&signal, &headers, reply)
}

/// `POST /whep/<room>/<who>`: one participant, named by identity, id or display name.
async fn play_participant(
    State(signal): State<Signal>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path((room, who)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ip = http::client_ip(addr, &headers, &signal.config.trusted_proxies);
    let reply = start_viewer(&signal, ip, &room, Some(who), &headers, &body).await;
    respond(&signal, &headers, reply)
}

async fn start_viewer(
    signal: &Signal,
    ip: IpAddr,
    room: &str,
    follow: Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Refusal> {
    let offer = new_session_offer(signal, ip, headers, body)?;
    room_name(room)?;
    let grants = grants(signal, headers, room)?;
    if !grants.subscribe {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "the access token does not grant canSubscribe",
        ));
    }
    {
        let hub = signal.hub();
        match hub.room_uses_sfu(room) {
            None => return Err(refusal(StatusCode::NOT_FOUND, format!("no room {room:?}"))),
            Some(false) => {
                return Err(refusal(
                    StatusCode::CONFLICT,
                    format!(
                    "room {room:?} is peer-to-peer now: its media does not go through the server"
                ),
                ))
            }
            Some(true) => {}
        }
        if let Some(who) = &follow {
            if hub.find_participant(room, who).is_none() {
                return Err(refusal(
                    StatusCode::NOT_FOUND,
                    format!("no participant {who:?} in room {room:?}"),
                ));
            }
        }
    }
    let most = signal.config.limits.viewers_per_room;
    if signal.http_sessions.viewers_in(room) >= most {
        return Err(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("room {room:?} has {most} viewers, the most it may have"),
        ));
    }
    let max = signal.config.limits.mlines_per_sdp;
    if let Err(sdp::TooManyLines(n)) = sdp::restrict(offer, Sources::ALL, max) {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            format!("an SDP with {n} m-lines was refused; the limit is {max}"),
        ));
    }
    let id = session_id(signal)?;
    let joined = signal
        .media
        .join(room, offer, false)
        .await
        .map_err(offer_refusal)?;
    let lines = receiving_lines(&joined.answer);
    let (video_mid, audio_mid) = (lines.video, lines.audio);
    if video_mid.is_none() && audio_mid.is_none() {
        signal.media.leave(&joined.peer).await;
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "the offer has no m-line on which to receive audio or video (recvonly)",
        ));
    }
    let viewer = Viewer {
        follow,
        video_mid,
        audio_mid,
        fed: ViewerSources::default(),
    };
    // What it is fed from the start; a media server that cannot feed is told here.
    let follow_id = follow_id(signal, room, viewer.follow.as_deref());
    let sources = signal
        .hub()
        .viewer_sources(room, follow_id.as_deref(), &viewer.fed)
        .unwrap_or_default();
    let mids = (&viewer.video_mid, &viewer.audio_mid);
    if let Err(e) = feed(signal, &joined.peer, mids, None, &sources).await {
        signal.media.leave(&joined.peer).await;
        return Err(offer_refusal(e));
    }
    let viewer = Viewer {
        fed: sources,
        ..viewer
    };
    tracing::info!(room, follow = ?viewer.follow, client = %ip, "WHEP viewer joined");
    let etag = new_etag();
    // The name its TURN credential is issued to (not derived from the session id, which is
    // the capability to end the session).
    let turn_id = format!("whep-{}", &new_id()?[..12]);
    let links = ice_links(signal, &turn_id);
    let session = Session {
        kind: Kind::Whep,
        room: room.to_string(),
        peer: joined.peer.clone(),
        me: None,
        turn_id,
        ip,
        etag: etag.clone(),
        ice: IceCredentials::of(offer),
        offer: offer.to_string(),
        viewer: Some(viewer),
        restarts: restart_rate(signal),
        task: None,
    };
    signal.http_sessions.lock().insert(id.clone(), session);
    let (s, task_id) = (signal.clone(), id.clone());
    let mut signals = joined.signals;
    let task = tokio::spawn(async move {
        // A viewer is offered nothing; it is only told when its media is gone.
        while let Some(signal) = signals.recv().await {
            if let sori_media::PeerSignal::Removed(reason) = signal {
                tracing::info!("WHEP viewer's media removed: {reason}");
                break;
            }
        }
        finish_from_task(&s, &task_id, LeaveReason::Timeout).await;
    });
    if let Some(s) = signal.http_sessions.lock().get_mut(&id) {
        s.task = Some(task.abort_handle());
    }
    Ok(created(Kind::Whep, &id, &etag, joined.answer, links))
}

/// The participant id of nobody: a viewer following someone not in the room now is fed
/// nothing until someone answering to that name is back.
const NOBODY: &str = "\u{0}";

/// The participant a viewer follows (`who`: an identity, id or name), as the room's
/// participant id now: someone who rejoined under the same identity or name is found again.
fn follow_id(signal: &Signal, room: &str, who: Option<&str>) -> Option<String> {
    let who = who?;
    Some(
        signal
            .hub()
            .find_participant(room, who)
            .unwrap_or_else(|| NOBODY.into()),
    )
}

/// Feeds the viewer's m-lines what `to` says where it differs from `from` (every line when
/// there is no `from`: a new viewer).
async fn feed(
    signal: &Signal,
    peer: &PeerRef,
    (video_mid, audio_mid): (&Option<String>, &Option<String>),
    from: Option<&ViewerSources>,
    to: &ViewerSources,
) -> Result<(), BackendError> {
    let lines = [
        (video_mid, from.map(|f| &f.video), &to.video),
        (audio_mid, from.map(|f| &f.audio), &to.audio),
    ];
    for (mid, now, next) in lines {
        let Some(mid) = mid else { continue };
        if now == Some(next) {
            continue;
        }
        let track = next.as_deref().and_then(track_id);
        signal.media.feed(peer, mid, track).await?;
    }
    Ok(())
}

/// `track-7` → the media server's track 7.
fn track_id(name: &str) -> Option<TrackId> {
    name.strip_prefix("track-")?.parse().ok().map(TrackId)
}

/// Keeps every viewer on what it should see: called after each speaker tick.
pub(crate) async fn refresh_viewers(signal: &Signal) {
    let viewers: Vec<(String, String, Option<String>, ViewerSources)> = signal
        .http_sessions
        .lock()
        .iter()
        .filter_map(|(id, s)| {
            let v = s.viewer.as_ref()?;
            Some((id.clone(), s.room.clone(), v.follow.clone(), v.fed.clone()))
        })
        .collect();
    if viewers.is_empty() {
        return;
    }
    // Decided under one hold of the hub, and once for all the viewers that watch the same
    // thing (a room's thousand viewers are one decision).
    type Watching = (String, Option<String>, ViewerSources);
    let decided: Vec<(String, String, ViewerSources, Option<ViewerSources>)> = {
        let hub = signal.hub();
        let mut memo: HashMap<Watching, Option<ViewerSources>> = HashMap::new();
        viewers
            .into_iter()
            .map(|(id, room, follow, fed)| {
                let key = (room, follow, fed);
                let next = memo
                    .entry(key.clone())
                    .or_insert_with(|| {
                        let (room, follow, fed) = &key;
                        let follow_id = follow.as_deref().map(|who| {
                            hub.find_participant(room, who)
                                .unwrap_or_else(|| NOBODY.into())
                        });
                        hub.viewer_sources(room, follow_id.as_deref(), fed)
                    })
                    .clone();
                (id, key.0, key.2, next)
            })
            .collect()
    };
    for (id, room, fed, next) in decided {
        let Some(next) = next else {
            // The room ended.
            finish(signal, &id, LeaveReason::Left).await;
            continue;
        };
        if next == fed {
            continue;
        }
        let (peer, video_mid, audio_mid) = {
            let sessions = signal.http_sessions.lock();
            let Some((s, v)) = sessions
                .get(&id)
                .and_then(|s| s.viewer.as_ref().map(|v| (s, v)))
            else {
                continue;
            };
            (s.peer.clone(), v.video_mid.clone(), v.audio_mid.clone())
        };
        match feed(signal, &peer, (&video_mid, &audio_mid), Some(&fed), &next).await {
            Ok(()) => {
                tracing::debug!(room, from = ?fed, to = ?next, "WHEP viewer switched");
                if let Some(v) = signal
                    .http_sessions
                    .lock()
                    .get_mut(&id)
                    .and_then(|s| s.viewer.as_mut())
                {
                    v.fed = next;
                }
            }
            Err(e) => tracing::debug!(room, "WHEP viewer not switched: {e}"),
        }
    }
}

/// The first m-line of each kind on which the media server sends (the answer says
/// `sendonly` or `sendrecv`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Lines {
    video: Option<String>,
    audio: Option<String>,
}

fn receiving_lines(answer: &str) -> Lines {
    let mut lines = Lines::default();
    for section in answer.split("\nm=").skip(1) {
        let kind = section.split(' ').next().unwrap_or("");
        let port_zero = section.split(' ').nth(1) == Some("0");
        let attr = |name: &str| {
            section
                .lines()
                .find_map(|l| l.trim().strip_prefix(name).map(str::to_string))
        };
        let sends = section
            .lines()
            .any(|l| matches!(l.trim(), "a=sendonly" | "a=sendrecv"));
        let Some(mid) = attr("a=mid:") else { continue };
        if port_zero || !sends {
            continue;
        }
        let slot = match kind {
            "video" => &mut lines.video,
            "audio" => &mut lines.audio,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(mid);
        }
    }
    lines
}

fn no_session() -> Refusal {
    refusal(StatusCode::NOT_FOUND, "no such session (it ended)")
}

async fn end_session(
    signal: &Signal,
    kind: Kind,
    id: &str,
    headers: &HeaderMap,
) -> Result<Response, Refusal> {
    if !signal.origin_allowed(headers) {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "pages of this origin may not use this server; see allowed_origins",
        ));
    }
    if signal.http_sessions.lock().get(id).map(|s| s.kind) != Some(kind) {
        return Err(no_session());
    }
    if !finish(signal, id, LeaveReason::Left).await {
        return Err(no_session());
    }
    Ok(StatusCode::OK.into_response())
}

/// A client's ICE credentials, as an SDP or a fragment gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IceCredentials {
    ufrag: String,
    pwd: String,
}

impl IceCredentials {
    /// The first `a=ice-ufrag` and `a=ice-pwd` of `sdp` (session or media level), when both
    /// are there and valid (RFC 8839: `ice-char`s, 4 to 256 of them in a ufrag, 22 to 256 in
    /// a password).
    fn of(sdp: &str) -> Option<Self> {
        let find = |name: &str| {
            sdp.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let valid = |v: &str, least: usize| {
            (least..=256).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        };
        let ufrag = find("a=ice-ufrag:").filter(|u| valid(u, 4))?;
        let pwd = find("a=ice-pwd:").filter(|p| valid(p, 22))?;
        Some(Self { ufrag, pwd })
    }

    /// Whether `frag` names credentials at all (valid or not).
    fn named_in(frag: &str) -> bool {
        frag.lines()
            .map(str::trim)
            .any(|l| l.starts_with("a=ice-ufrag:") || l.starts_with("a=ice-pwd:"))
    }
}

/// `sdp` with every ICE credential replaced by `ice` and the session version one higher.
fn with_credentials(sdp: &str, ice: &IceCredentials) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let eol = &line[body.len()..];
        if body.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{}{eol}", ice.ufrag));
        } else if body.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{}{eol}", ice.pwd));
        } else if let Some(origin) = body.strip_prefix("o=") {
            // o=<user> <session id> <version> …: a new version for a new offer.
            let mut fields: Vec<String> = origin.split(' ').map(str::to_string).collect();
            if let Some(v) = fields.get_mut(2) {
                if let Ok(n) = v.parse::<u64>() {
                    *v = n.saturating_add(1).to_string();
                }
            }
            out.push_str(&format!("o={}{eol}", fields.join(" ")));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The fragment answering an ICE restart: the media server's new credentials and its
/// candidates, from its answer.
fn answer_fragment(answer: &str) -> String {
    let mut frag = String::new();
    let mut seen = std::collections::HashSet::new();
    for line in answer.lines().map(str::trim) {
        let keep = line.starts_with("a=ice-ufrag:")
            || line.starts_with("a=ice-pwd:")
            || line.starts_with("a=ice-lite")
            || line.starts_with("a=candidate:")
            || line == "a=end-of-candidates";
        if keep && seen.insert(line.to_string()) {
            frag.push_str(line);
            frag.push_str("\r\n");
        }
    }
    frag
}

async fn patch(
    signal: &Signal,
    kind: Kind,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Refusal> {
    let frag = checked_body(signal, headers, body, SDPFRAG)?;
    let (peer, offer, ice) = {
        let mut sessions = signal.http_sessions.lock();
        let s = sessions
            .get_mut(id)
            .filter(|s| s.kind == kind)
            .ok_or_else(no_session)?;
        let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
        if let Some(tag) = if_match {
            if tag.trim() != "*" && tag.trim() != s.etag {
                return Err(refusal(
                    StatusCode::PRECONDITION_FAILED,
                    "If-Match names another state of this session (its ETag changed)",
                ));
            }
        }
        let named = IceCredentials::of(frag);
        if named.is_none() && IceCredentials::named_in(frag) {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "an ICE restart needs a=ice-ufrag (4 to 256 ice-chars) and a=ice-pwd (22 to 256)",
            ));
        }
        let new = named.filter(|c| Some(c) != s.ice.as_ref());
        let Some(new) = new else {
            // Candidates only: the media server is ICE-lite and learns the client's
            // addresses from its connectivity checks.
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        if !s.restarts.allow(Instant::now()) {
            return Err(refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "too many ICE restarts: slow down",
            ));
        }
        (s.peer.clone(), with_credentials(&s.offer, &new), new)
    };
    let answer = signal
        .media
        .offer(&peer, &offer)
        .await
        .map_err(offer_refusal)?;
    let etag = new_etag();
    {
        let mut sessions = signal.http_sessions.lock();
        let s = sessions.get_mut(id).ok_or_else(no_session)?;
        s.offer = offer;
        s.ice = Some(ice);
        s.etag = etag.clone();
    }
    let mut r = (StatusCode::OK, answer_fragment(&answer)).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    Ok(r)
}

/// `OPTIONS` on an endpoint (`POST`) or a session (`PATCH`, `DELETE`): what a page of an
/// allowed origin may send.
async fn endpoint_options(State(signal): State<Signal>, headers: HeaderMap) -> Response {
    options(&signal, &headers, "POST, OPTIONS")
}

async fn session_options(State(signal): State<Signal>, headers: HeaderMap) -> Response {
    options(&signal, &headers, "PATCH, DELETE, OPTIONS")
}

fn options(signal: &Signal, headers: &HeaderMap, methods: &'static str) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(methods));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    if methods.starts_with("POST") {
        h.insert("accept-post", HeaderValue::from_static(SDP));
    } else {
        h.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    }
    let reply = if signal.origin_allowed(headers) {
        Ok(r)
    } else {
        Err(refusal(
            StatusCode::FORBIDDEN,
            "pages of this origin may not use this server; see allowed_origins",
        ))
    };
    respond(signal, headers, reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:secretsecretsecretsecret\r\na=sendonly\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=inactive\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=ice-ufrag:abcd\r\na=ice-pwd:secretsecretsecretsecret\r\na=sendonly\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n";

    #[test]
    fn the_lines_a_viewer_receives_on_are_the_first_sending_ones_of_each_kind() {
        assert_eq!(
            receiving_lines(ANSWER),
            Lines {
                video: Some("2".into()),
                audio: Some("0".into())
            }
        );
        let recv_only = ANSWER.replace("a=sendonly", "a=recvonly");
        assert_eq!(receiving_lines(&recv_only), Lines::default());
        assert_eq!(receiving_lines("not an sdp"), Lines::default());
    }

    #[test]
    fn an_ice_restart_offer_has_the_new_credentials_and_a_newer_version() {
        let new = IceCredentials {
            ufrag: "wxyz".into(),
            pwd: "anotheranotheranother+/".into(),
        };
        let offer = with_credentials(ANSWER, &new);
        assert_eq!(IceCredentials::of(&offer), Some(new));
        assert!(!offer.contains("abcd"));
        assert!(offer.contains("o=- 1 3 IN IP4"), "{offer}");
        assert_eq!(offer.lines().count(), ANSWER.lines().count());
        assert!(offer.ends_with("\r\n"));
    }

    #[test]
    fn an_ice_restart_is_answered_with_the_credentials_and_candidates_once() {
        let frag = answer_fragment(ANSWER);
        assert_eq!(
            frag,
            "a=ice-lite\r\na=ice-ufrag:abcd\r\na=ice-pwd:secretsecretsecretsecret\r\n\
             a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"
        );
    }

    #[test]
    fn track_names_parse_back_to_ids() {
        assert_eq!(track_id("track-42"), Some(TrackId(42)));
        assert_eq!(track_id("track-"), None);
        assert_eq!(track_id("42"), None);
    }

    proptest::proptest! {
        #![proptest_config(sori_testkit::prop::config(3000))]

        /// A PATCH body is anything a client sends: credentials are found or not, never a
        /// panic, and a restart offer built from them keeps every other line.
        #[test]
        fn any_fragment_gives_credentials_or_none_and_a_whole_offer(
            seed in proptest::prelude::any::<u64>(),
            text in "(a=ice-(ufrag|pwd):[ -~]{0,12}\r?\n|a=ice-ufrag:[a-z0-9+/]{4,8}\r\na=ice-pwd:[A-Z0-9+/]{22,30}\r\n|a=candidate:[ -~]{0,40}\r?\n|[ -~\u{80}-\u{10ffff}]{0,20}\r?\n){0,8}",
        ) {
            let mut rng = sori_testkit::Rng::new(seed);
            let mangled = sori_testkit::mutate::lines(&text, "\n", &mut rng);
            for frag in [&text, &mangled] {
                if let Some(c) = IceCredentials::of(frag) {
                    let offer = with_credentials(ANSWER, &c);
                    proptest::prop_assert_eq!(offer.lines().count(), ANSWER.lines().count());
                    proptest::prop_assert_eq!(IceCredentials::of(&offer), Some(c));
                }
                let _ = answer_fragment(frag);
                let _ = receiving_lines(frag);
            }
        }
    }
}
