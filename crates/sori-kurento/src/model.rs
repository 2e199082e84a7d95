//! The object model: sessions, media objects, connections between elements, subscriptions,
//! and the events they raise.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use sori_net::sori_sfu::{
    Forwarding, MediaKind, MediaLine, OfferLine, PeerFlow, PeerId, SfuError, TapId, TrackId,
};
use sori_net::{MediaError, MediaHandle, PeerSignal};
use tokio::sync::{mpsc, Mutex};

use crate::recorder::{self, Rec, RecState};
use crate::rpc::{
    error_response, opt_string_param, parse_request, request_from_value, response, string_param,
    RpcError,
};

const MANAGER: &str = "manager_ServerManager";
const VERSION: &str = "7.3.0";

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// One control connection: its outbox and the session bound to it.
pub(crate) struct Conn {
    pub id: u64,
    outbox: mpsc::UnboundedSender<String>,
    session: Option<String>,
}

impl Conn {
    pub(crate) fn new(outbox: mpsc::UnboundedSender<String>) -> Self {
        Self {
            id: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
            outbox,
            session: None,
        }
    }
}

struct Session {
    sink: Option<(u64, mpsc::UnboundedSender<String>)>,
    /// Seen alive at the last collection pass.
    marked: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum MediaType {
    Audio,
    Video,
    Data,
}

impl MediaType {
    fn parse(s: &str) -> Result<Self, RpcError> {
        match s {
            "AUDIO" => Ok(Self::Audio),
            "VIDEO" => Ok(Self::Video),
            "DATA" => Ok(Self::Data),
            other => Err(RpcError::marshall(format!(
                "'mediaType' parameter should be AUDIO, VIDEO or DATA, not {other}"
            ))),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Self::Audio => "AUDIO",
            Self::Video => "VIDEO",
            Self::Data => "DATA",
        }
    }
    fn kind(self) -> Option<MediaKind> {
        match self {
            Self::Audio => Some(MediaKind::Audio),
            Self::Video => Some(MediaKind::Video),
            Self::Data => None,
        }
    }
}

#[derive(Clone, Debug)]
struct Link {
    source: String,
    sink: String,
    ty: MediaType,
    source_desc: String,
    sink_desc: String,
}

impl Link {
    fn to_json(&self) -> Value {
        json!({"__module__":"kurento","__type__":"ElementConnectionData","source":self.source,
               "sink":self.sink,"type":self.ty.name(),"sourceDescription":self.source_desc,
               "sinkDescription":self.sink_desc})
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Flow {
    Unknown,
    Flowing,
    NotFlowing,
}

#[derive(Default)]
struct WebRtc {
    /// Extension: several sources through distinct sink media descriptions, each on an m-line
    /// the core adds, with renegotiation (RenegotiationNeeded, repeated processOffer/Answer).
    renegotiation: bool,
    /// Constructor flags: the endpoint only receives from / only sends to its browser
    /// (they shape `generateOffer`).
    recvonly: bool,
    sendonly: bool,
    /// Tracks subscribed for described links.
    subscribed: BTreeSet<TrackId>,
    peer: Option<PeerId>,
    local_sdp: Option<String>,
    remote_sdp: Option<String>,
    gather_requested: bool,
    gathered: bool,
    remote_candidates: Vec<String>,
    lines: Vec<MediaLine>,
    connected: bool,
    /// Browser → server per kind (audio, video): MediaFlowOut.
    flow_out: [FlowTrack; 2],
    /// Server → browser: MediaFlowIn.
    flow_in: [FlowTrack; 2],
}

#[derive(Clone, Copy)]
pub(crate) struct FlowTrack {
    state: Flow,
    count: u64,
    last_active: Option<Instant>,
}

impl Default for FlowTrack {
    fn default() -> Self {
        Self {
            state: Flow::Unknown,
            count: 0,
            last_active: None,
        }
    }
}

enum Kind {
    Pipeline,
    WebRtc(Box<WebRtc>),
    PassThrough,
    Recorder(Box<Rec>),
}

impl Kind {
    fn type_name(&self) -> &'static str {
        match self {
            Kind::Pipeline => "MediaPipeline",
            Kind::WebRtc(_) => "WebRtcEndpoint",
            Kind::PassThrough => "PassThrough",
            Kind::Recorder(_) => "RecorderEndpoint",
        }
    }
    fn hierarchy(&self) -> Vec<&'static str> {
        match self {
            Kind::Pipeline => vec!["kurento.MediaObject"],
            Kind::WebRtc(_) => vec![
                "kurento.BaseRtpEndpoint",
                "kurento.SdpEndpoint",
                "kurento.SessionEndpoint",
                "kurento.Endpoint",
                "kurento.MediaElement",
                "kurento.MediaObject",
            ],
            Kind::Recorder(_) => vec![
                "kurento.UriEndpoint",
                "kurento.Endpoint",
                "kurento.MediaElement",
                "kurento.MediaObject",
            ],
            Kind::PassThrough => vec![
                "kurento.Filter",
                "kurento.MediaElement",
                "kurento.MediaObject",
            ],
        }
    }
    fn supports_event(&self, event: &str) -> bool {
        const OBJECT: &[&str] = &["Error"];
        const ELEMENT: &[&str] = &[
            "ElementConnected",
            "ElementDisconnected",
            "MediaFlowInStateChanged",
            "MediaFlowOutStateChanged",
            "MediaTranscodingStateChanged",
        ];
        const WEBRTC: &[&str] = &[
            "MediaSessionStarted",
            "MediaSessionTerminated",
            "ConnectionStateChanged",
            "MediaStateChanged",
            "IceCandidateFound",
            "IceGatheringDone",
            "IceComponentStateChanged",
            "NewCandidatePairSelected",
            "DtlsConnectionStateChange",
            "DataChannelOpened",
            "DataChannelClosed",
            "RenegotiationNeeded",
        ];
        OBJECT.contains(&event)
            || match self {
                Kind::Pipeline => false,
                Kind::PassThrough => ELEMENT.contains(&event),
                Kind::Recorder(_) => {
                    ELEMENT.contains(&event)
                        || ["Recording", "Paused", "Stopped", "UriEndpointStateChanged"]
                            .contains(&event)
                }
                Kind::WebRtc(_) => ELEMENT.contains(&event) || WEBRTC.contains(&event),
            }
    }
}

/// Kurento 6 event names, still accepted; events go out under the name subscribed.
fn canonical_event(name: &str) -> &str {
    match name {
        "OnIceCandidate" => "IceCandidateFound",
        "OnIceGatheringDone" => "IceGatheringDone",
        "OnIceComponentStateChanged" | "IceComponentStateChange" => "IceComponentStateChanged",
        "OnDataChannelOpened" | "DataChannelOpen" => "DataChannelOpened",
        "OnDataChannelClosed" | "DataChannelClose" => "DataChannelClosed",
        "MediaFlowInStateChange" => "MediaFlowInStateChanged",
        "MediaFlowOutStateChange" => "MediaFlowOutStateChanged",
        "MediaTranscodingStateChange" => "MediaTranscodingStateChanged",
        other => other,
    }
}

struct Object {
    kind: Kind,
    pipeline: Option<String>,
    /// The session that created it. Only it, or the owner of its pipeline, may release it:
    /// any session may use an object, but one application must not tear down another's.
    owner: String,
    name: String,
    tags: Vec<(String, String)>,
    send_tags: bool,
    created: u64,
    refs: BTreeSet<String>,
    props: Map<String, Value>,
}

struct Sub {
    session: String,
    object: String,
    /// The event name as subscribed (legacy names are delivered under it).
    name: String,
}

/// The whole state of the control API.
pub(crate) struct Kms {
    media: MediaHandle,
    this: Weak<Mutex<Kms>>,
    server_id: String,
    started: Instant,
    flow_idle: Duration,
    sessions: HashMap<String, Session>,
    objects: HashMap<String, Object>,
    links: Vec<Link>,
    subs: HashMap<String, Sub>,
    candidates: Vec<SocketAddr>,
    recordings_dir: Option<PathBuf>,
    caps: Caps,
}

/// How much one session may hold, so that one application (or a runaway loop in it) cannot
/// exhaust the server for the others: every recorder that records is a thread and a file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub objects: usize,
    pub recorders: usize,
}

fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn webrtc_props() -> Map<String, Value> {
    let v = json!({
        "stunServerAddress": "", "stunServerPort": 3478, "turnUrl": "",
        "externalIPv4": "", "externalIPv6": "", "networkInterfaces": "", "iceTcp": true,
        "minVideoRecvBandwidth": 0, "maxVideoRecvBandwidth": 0, "maxAudioRecvBandwidth": 0,
        "minVideoSendBandwidth": 100, "maxVideoSendBandwidth": 500, "mtu": 1200,
        "encoderBitrate": 0, "minEncoderBitrate": 0, "maxEncoderBitrate": 0,
        "minOutputBitrate": 0, "maxOutputBitrate": 0,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn element_props() -> Map<String, Value> {
    let v = json!({"encoderBitrate": 0, "minEncoderBitrate": 0, "maxEncoderBitrate": 0,
                   "minOutputBitrate": 0, "maxOutputBitrate": 0});
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Replaces every `"newref:K"` string in `v` by the value created by operation K.
fn substitute_newrefs(v: &mut Value, created: &[Option<Value>]) -> Result<(), RpcError> {
    match v {
        Value::String(s) => {
            if let Some(k) = s.strip_prefix("newref:") {
                let found = k
                    .parse::<usize>()
                    .ok()
                    .and_then(|k| created.get(k).cloned().flatten());
                match found {
                    Some(value) => *v = value,
                    None => {
                        return Err(RpcError::malformed_transaction(format!(
                            "'{s}' does not name an earlier operation's result"
                        )))
                    }
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                substitute_newrefs(x, created)?;
            }
        }
        Value::Object(m) => {
            for x in m.values_mut() {
                substitute_newrefs(x, created)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn find_newref(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) if s.starts_with("newref:") => Some(s),
        Value::Array(a) => a.iter().find_map(find_newref),
        Value::Object(m) => m.values().find_map(find_newref),
        _ => None,
    }
}

fn media_error(e: MediaError, offer: bool) -> RpcError {
    match e {
        MediaError::Sfu(SfuError::BadSdp(why)) if offer => {
            RpcError::sdp_parse(format!("Error parsing SDP offer: {why}"))
        }
        MediaError::Sfu(SfuError::BadSdp(why)) => {
            RpcError::sdp_parse(format!("Error parsing SDP answer: {why}"))
        }
        MediaError::Sfu(e) if offer => RpcError::process_offer(e.to_string()),
        MediaError::Sfu(e) => RpcError::process_answer(e.to_string()),
        MediaError::Stopped => RpcError::unexpected("the media server is not running"),
    }
}

/// Handles one text frame; returns the reply to send, if any.
pub(crate) async fn handle_frame(
    kms: &Arc<Mutex<Kms>>,
    conn: &mut Conn,
    text: &str,
) -> Option<String> {
    let reply = match parse_request(text) {
        Err((id, e)) => Some(error_response(&id, &e)),
        Ok(req) => {
            let mut k = kms.lock().await;
            let result = k.request(conn, &req.method, req.params).await;
            req.id.map(|id| match result {
                Ok(v) => response(&id, v),
                Err(e) => error_response(&id, &e),
            })
        }
    };
    reply.map(|v| v.to_string())
}

fn with_session(mut v: Value, session: &str) -> Value {
    if let Value::Object(m) = &mut v {
        m.insert("sessionId".into(), json!(session));
    }
    v
}

fn value(v: Value) -> Value {
    json!({ "value": v })
}

impl Kms {
    pub(crate) fn new(
        media: MediaHandle,
        flow_idle: Duration,
        recordings_dir: Option<PathBuf>,
        caps: Caps,
    ) -> Arc<Mutex<Kms>> {
        Arc::new_cyclic(|this| {
            Mutex::new(Kms {
                media,
                this: this.clone(),
                server_id: uuid(),
                started: Instant::now(),
                flow_idle,
                sessions: HashMap::new(),
                objects: HashMap::new(),
                links: Vec::new(),
                subs: HashMap::new(),
                candidates: Vec::new(),
                recordings_dir,
                caps,
            })
        })
    }

    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let pipelines = self
            .objects
            .values()
            .filter(|o| matches!(o.kind, Kind::Pipeline))
            .count();
        (
            self.sessions.len(),
            pipelines,
            self.objects.len() - pipelines,
        )
    }

    /// The socket closed: its sessions keep their objects until collected.
    pub(crate) fn disconnected(&mut self, conn: &Conn) {
        for s in self.sessions.values_mut() {
            if s.sink.as_ref().is_some_and(|(id, _)| *id == conn.id) {
                s.sink = None;
            }
        }
    }

    fn bind(&mut self, conn: &mut Conn, session: &str) {
        let s = self.sessions.entry(session.to_string()).or_insert(Session {
            sink: None,
            marked: true,
        });
        s.sink = Some((conn.id, conn.outbox.clone()));
        conn.session = Some(session.to_string());
    }

    /// The session of a request: the one it names (adopted if unknown), else the socket's,
    /// else a new one.
    fn session_for(&mut self, conn: &mut Conn, params: &Map<String, Value>) -> String {
        let id = match params.get("sessionId") {
            Some(Value::String(s)) => s.clone(),
            _ => conn.session.clone().unwrap_or_else(uuid),
        };
        self.bind(conn, &id);
        id
    }

    async fn request(
        &mut self,
        conn: &mut Conn,
        method: &str,
        params: Option<Map<String, Value>>,
    ) -> Result<Value, RpcError> {
        match method {
            "ping" => {
                let mut v = value(json!("pong"));
                if let Some(s) = &conn.session {
                    v = with_session(v, s);
                }
                Ok(v)
            }
            "connect" => {
                let params = params.unwrap_or_default();
                let session = match params.get("sessionId") {
                    Some(Value::String(s)) => {
                        if !self.sessions.contains_key(s) {
                            return Err(RpcError::invalid_session(format!("Invalid session: {s}")));
                        }
                        s.clone()
                    }
                    Some(_) => return Err(RpcError::member("'sessionId' should be a string")),
                    None => conn.session.clone().unwrap_or_else(uuid),
                };
                self.bind(conn, &session);
                Ok(json!({"sessionId": session, "serverId": self.server_id}))
            }
            "closeSession" => {
                let params = params.ok_or_else(RpcError::params_required)?;
                let session = string_param(&params, "sessionId")?.to_string();
                let release = params.get("release").and_then(Value::as_bool) == Some(true);
                self.close_session(&session, release).await;
                if conn.session.as_deref() == Some(session.as_str()) {
                    conn.session = None;
                }
                Ok(Value::Null)
            }
            "transaction" => {
                let params = params.ok_or_else(RpcError::params_required)?;
                let session = self.session_for(conn, &params);
                let Some(Value::Array(ops)) = params.get("operations") else {
                    return Err(RpcError::member("'operations' parameter is required"));
                };
                let mut results = Vec::new();
                let mut created: Vec<Option<Value>> = Vec::new();
                for (i, op) in ops.iter().enumerate() {
                    let req = match request_from_value(op.clone()) {
                        Ok(r) => r,
                        Err((_, e)) => {
                            results.push(error_response(&json!(i), &e));
                            break;
                        }
                    };
                    if req.id != Some(json!(i)) {
                        let e = RpcError::malformed_transaction(format!(
                            "operation {i} must have id {i}"
                        ));
                        results.push(error_response(&req.id.unwrap_or(Value::Null), &e));
                        break;
                    }
                    let mut op_params = Value::Object(req.params.unwrap_or_default());
                    let outcome = match substitute_newrefs(&mut op_params, &created) {
                        Ok(()) => {
                            let Value::Object(mut m) = op_params else {
                                unreachable!("an object stays an object")
                            };
                            m.insert("sessionId".into(), json!(session));
                            if req.method == "transaction" {
                                Err(RpcError::malformed_transaction(
                                    "transactions cannot be nested",
                                ))
                            } else {
                                self.dispatch(conn, &req.method, Some(m), true).await
                            }
                        }
                        Err(e) => Err(e),
                    };
                    match outcome {
                        Ok(v) => {
                            created.push(v.get("value").cloned());
                            results.push(response(&json!(i), v));
                        }
                        Err(e) => {
                            results.push(error_response(&json!(i), &e));
                            break;
                        }
                    }
                }
                Ok(with_session(value(Value::Array(results)), &session))
            }
            _ => self.dispatch(conn, method, params, false).await,
        }
    }

    async fn dispatch(
        &mut self,
        conn: &mut Conn,
        method: &str,
        params: Option<Map<String, Value>>,
        in_transaction: bool,
    ) -> Result<Value, RpcError> {
        let known = [
            "create",
            "describe",
            "invoke",
            "subscribe",
            "unsubscribe",
            "release",
            "keepAlive",
            "ref",
            "unref",
        ];
        if !known.contains(&method) {
            return Err(RpcError::method_not_found());
        }
        let params = params.ok_or_else(RpcError::params_required)?;
        if !in_transaction {
            if let Some(r) = find_newref(&Value::Object(params.clone())) {
                return Err(RpcError::newref_outside_transaction(r));
            }
        }
        let session = self.session_for(conn, &params);
        let result = match method {
            "create" => self.create(&session, &params).await,
            "describe" => self.describe(&session, &params),
            "invoke" => self.invoke(&session, &params).await,
            "subscribe" => self.subscribe(&session, &params),
            "unsubscribe" => {
                if let Some(Value::String(sub)) = params.get("subscription") {
                    self.subs.remove(sub);
                }
                Ok(json!({}))
            }
            "release" => {
                let object = string_param(&params, "object")?.to_string();
                if !self.may_release(&session, &object) {
                    return Err(RpcError::not_owner(&object));
                }
                self.release(&object).await;
                Ok(json!({}))
            }
            "keepAlive" => Ok(json!({})),
            "ref" => {
                let object = string_param(&params, "object")?;
                let o = self
                    .objects
                    .get_mut(object)
                    .ok_or_else(|| RpcError::object_not_found(object))?;
                o.refs.insert(session.clone());
                Ok(json!({}))
            }
            "unref" => {
                let object = string_param(&params, "object")?.to_string();
                if let Some(o) = self.objects.get_mut(&object) {
                    o.refs.remove(&session);
                    if o.refs.is_empty() {
                        self.release(&object).await;
                    }
                }
                Ok(json!({}))
            }
            _ => Err(RpcError::method_not_found()),
        }?;
        Ok(with_session(result, &session))
    }

    fn touch(&mut self, session: &str, object: &str) {
        if let Some(o) = self.objects.get_mut(object) {
            o.refs.insert(session.to_string());
        }
    }

    async fn create(
        &mut self,
        session: &str,
        params: &Map<String, Value>,
    ) -> Result<Value, RpcError> {
        let ty = string_param(params, "type")?;
        let ty = ty.strip_prefix("kurento.").unwrap_or(ty);
        let ctor = match params.get("constructorParams") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return Err(RpcError::member(
                    "'constructorParams' parameter should be an object",
                ))
            }
        };
        let renegotiation = [
            ctor.get("renegotiation"),
            params
                .get("properties")
                .and_then(|p| p.get("renegotiation")),
        ]
        .into_iter()
        .flatten()
        .any(|v| v.as_bool() == Some(true));
        let mut flags = [false; 2];
        for (i, flag) in ["recvonly", "sendonly"].iter().enumerate() {
            match ctor.get(*flag) {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => flags[i] = *b,
                Some(_) => {
                    return Err(RpcError::marshall(format!(
                        "'{flag}' parameter should be a boolean"
                    )))
                }
            }
        }
        let kind = match ty {
            "MediaPipeline" => Kind::Pipeline,
            "WebRtcEndpoint" => Kind::WebRtc(Box::new(WebRtc {
                renegotiation,
                recvonly: flags[0],
                sendonly: flags[1],
                ..WebRtc::default()
            })),
            "PassThrough" => Kind::PassThrough,
            "RecorderEndpoint" => {
                let uri = string_param(&ctor, "uri")?.to_string();
                let profile = recorder::parse_profile(opt_string_param(&ctor, "mediaProfile")?)?;
                let path = recorder::resolve_uri(&uri, self.recordings_dir.as_deref())?;
                Kind::Recorder(Box::new(Rec::new(uri, path, profile)))
            }
            other => return Err(RpcError::factory_not_found(other)),
        };
        self.within_caps(session, &kind)?;
        let (id, pipeline) = if matches!(kind, Kind::Pipeline) {
            (format!("{}_kurento.MediaPipeline", uuid()), None)
        } else {
            let pipeline = string_param(&ctor, "mediaPipeline")?.to_string();
            match self.objects.get(&pipeline) {
                Some(o) if matches!(o.kind, Kind::Pipeline) => {}
                Some(_) => {
                    return Err(RpcError::illegal_param(format!(
                        "'{pipeline}' is not a MediaPipeline"
                    )))
                }
                None => return Err(RpcError::object_not_found(&pipeline)),
            }
            (
                format!("{pipeline}/{}_kurento.{}", uuid(), kind.type_name()),
                Some(pipeline),
            )
        };
        let props = match kind {
            Kind::WebRtc(_) => webrtc_props(),
            Kind::PassThrough | Kind::Recorder(_) => element_props(),
            Kind::Pipeline => match json!({"latencyStats": false}) {
                Value::Object(m) => m,
                _ => Map::new(),
            },
        };
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.objects.insert(
            id.clone(),
            Object {
                kind,
                pipeline,
                name: id.clone(),
                tags: Vec::new(),
                send_tags: false,
                created,
                owner: session.to_string(),
                refs: BTreeSet::from([session.to_string()]),
                props,
            },
        );
        tracing::debug!(object = id, "created");
        self.emit(MANAGER, "ObjectCreated", json!({"object": id}));
        Ok(value(json!(id)))
    }

    /// Refuses a new object that would take `session` past its caps.
    fn within_caps(&self, session: &str, kind: &Kind) -> Result<(), RpcError> {
        let owned = || self.objects.values().filter(|o| o.owner == session);
        if owned().count() >= self.caps.objects {
            return Err(RpcError::not_enough_resources(format!(
                "this session already has {} media objects, the most one session may have",
                self.caps.objects
            )));
        }
        let recorders = || owned().filter(|o| matches!(o.kind, Kind::Recorder(_)));
        if matches!(kind, Kind::Recorder(_)) && recorders().count() >= self.caps.recorders {
            return Err(RpcError::not_enough_resources(format!(
                "this session already has {} RecorderEndpoints, the most one session may have",
                self.caps.recorders
            )));
        }
        Ok(())
    }

    fn describe(&mut self, session: &str, params: &Map<String, Value>) -> Result<Value, RpcError> {
        let object = string_param(params, "object")?;
        if object == MANAGER {
            return Ok(
                json!({"type":"ServerManager","qualifiedType":"kurento.ServerManager",
                             "hierarchy":["kurento.MediaObject"]}),
            );
        }
        let o = self
            .objects
            .get(object)
            .ok_or_else(|| RpcError::object_not_found(object))?;
        let ty = o.kind.type_name();
        let v = json!({"type": ty, "qualifiedType": format!("kurento.{ty}"),
                       "hierarchy": o.kind.hierarchy()});
        self.touch(session, object);
        Ok(v)
    }

    fn subscribe(&mut self, session: &str, params: &Map<String, Value>) -> Result<Value, RpcError> {
        let object = string_param(params, "object")?.to_string();
        let name = string_param(params, "type")?.to_string();
        let event = canonical_event(&name);
        let supported = if object == MANAGER {
            ["ObjectCreated", "ObjectDestroyed", "Error"].contains(&event)
        } else {
            let o = self
                .objects
                .get(&object)
                .ok_or_else(|| RpcError::object_not_found(&object))?;
            o.kind.supports_event(event)
        };
        if !supported {
            return Err(RpcError::event_not_supported(&name));
        }
        self.touch(session, &object);
        let id = uuid();
        self.subs.insert(
            id.clone(),
            Sub {
                session: session.to_string(),
                object,
                name,
            },
        );
        Ok(value(json!(id)))
    }

    /// Raises `event` on `object`: delivered once to each subscribing session's socket.
    fn emit(&self, object: &str, event: &str, extra: Value) {
        let mut targets: Vec<(&str, &str)> = self
            .subs
            .values()
            .filter(|s| s.object == object && canonical_event(&s.name) == event)
            .map(|s| (s.session.as_str(), s.name.as_str()))
            .collect();
        targets.sort();
        targets.dedup_by(|a, b| a.0 == b.0);
        if targets.is_empty() {
            return;
        }
        let millis = now_millis();
        let tags: Vec<Value> = self
            .objects
            .get(object)
            .filter(|o| o.send_tags)
            .map(|o| {
                o.tags
                    .iter()
                    .map(
                        |(k, v)| json!({"__module__":"kurento","__type__":"Tag","key":k,"value":v}),
                    )
                    .collect()
            })
            .unwrap_or_default();
        for (session, name) in targets {
            let Some(Some((_, sink))) = self.sessions.get(session).map(|s| &s.sink) else {
                continue;
            };
            let mut data = json!({"source": object, "tags": tags,
                                  "timestampMillis": millis.to_string(),
                                  "timestamp": (millis / 1000).to_string(), "type": name});
            if let (Value::Object(d), Value::Object(e)) = (&mut data, &extra) {
                for (k, v) in e {
                    d.insert(k.clone(), v.clone());
                }
            }
            let msg = json!({"jsonrpc":"2.0","method":"onEvent",
                             "params":{"value":{"data":data,"object":object,"type":name}}});
            let _ = sink.send(msg.to_string());
        }
    }

    fn error_event(&self, object: &str, code: i64, kind: &str, description: &str) {
        self.emit(
            object,
            "Error",
            json!({"description": description, "errorCode": code, "type": kind}),
        );
    }

    /// Whether `session` may release `id`: it created it or its pipeline (unknown ids are
    /// fine, as release is idempotent).
    fn may_release(&self, session: &str, id: &str) -> bool {
        let Some(o) = self.objects.get(id) else {
            return true;
        };
        o.owner == session
            || o.pipeline
                .as_ref()
                .and_then(|p| self.objects.get(p))
                .is_some_and(|p| p.owner == session)
    }

    /// Ends a session. With `release`, the objects it may release go at once; the others it
    /// only used lose its reference, and go only when nobody else references them.
    async fn close_session(&mut self, session: &str, release: bool) {
        self.sessions.remove(session);
        self.subs.retain(|_, s| s.session != session);
        let releasable: BTreeSet<String> = if release {
            self.objects
                .keys()
                .filter(|id| self.may_release(session, id))
                .cloned()
                .collect()
        } else {
            BTreeSet::new()
        };
        let mut orphans = Vec::new();
        for (id, o) in self.objects.iter_mut() {
            if o.refs.remove(session) && (releasable.contains(id) || o.refs.is_empty()) {
                orphans.push(id.clone());
            }
        }
        for id in orphans {
            self.release(&id).await;
        }
    }

    /// Releases an object (and a pipeline's children); unknown ids are fine.
    async fn release(&mut self, id: &str) {
        let Some(o) = self.objects.get(id) else {
            return;
        };
        let mut doomed = vec![id.to_string()];
        if matches!(o.kind, Kind::Pipeline) {
            doomed.extend(
                self.objects
                    .iter()
                    .filter(|(_, c)| c.pipeline.as_deref() == Some(id))
                    .map(|(k, _)| k.clone()),
            );
        }
        let pipeline = o.pipeline.clone();
        for d in doomed.iter().rev() {
            let Some(o) = self.objects.remove(d) else {
                continue;
            };
            match o.kind {
                Kind::WebRtc(w) => {
                    if let Some(peer) = w.peer {
                        let _ = self.media.leave(peer).await;
                    }
                }
                // A recorder released without stop still finishes its file.
                Kind::Recorder(mut r) => {
                    for (_, _, tap) in r.taps.drain(..) {
                        self.media.untap(tap);
                    }
                    if let Some(recording) = r.recording.take() {
                        let _ = tokio::task::spawn_blocking(move || recording.stop()).await;
                    }
                }
                _ => {}
            }
            self.links.retain(|l| l.source != *d && l.sink != *d);
            self.subs.retain(|_, s| s.object != *d);
            tracing::debug!(object = d, "released");
            self.emit(MANAGER, "ObjectDestroyed", json!({"objectId": d}));
        }
        if let Some(p) = pipeline {
            self.sync_pipeline(&p).await;
        }
    }

    fn object(&self, id: &str) -> Result<&Object, RpcError> {
        self.objects
            .get(id)
            .ok_or_else(|| RpcError::object_not_found(id))
    }

    fn webrtc_mut(&mut self, id: &str) -> Option<&mut WebRtc> {
        match self.objects.get_mut(id).map(|o| &mut o.kind) {
            Some(Kind::WebRtc(w)) => Some(w),
            _ => None,
        }
    }

    async fn invoke(
        &mut self,
        session: &str,
        params: &Map<String, Value>,
    ) -> Result<Value, RpcError> {
        let object = string_param(params, "object")?.to_string();
        let op = string_param(params, "operation")?.to_string();
        let args = match params.get("operationParams") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return Err(RpcError::member(
                    "'operationParams' parameter should be an object",
                ))
            }
        };
        if object == MANAGER {
            return self.invoke_manager(session, &op, &args);
        }
        self.object(&object)?;
        self.touch(session, &object);
        if matches!(self.object(&object)?.kind, Kind::Recorder(_)) {
            if let Some(v) = self.invoke_recorder(&object, &op).await? {
                return Ok(v);
            }
        }
        let is_webrtc = matches!(self.object(&object)?.kind, Kind::WebRtc(_));
        let is_element = !matches!(self.object(&object)?.kind, Kind::Pipeline);
        if is_webrtc {
            if let Some(v) = self.invoke_webrtc(&object, &op, &args).await? {
                return Ok(v);
            }
        }
        if is_element {
            if let Some(v) = self.invoke_element(&object, &op, &args).await? {
                return Ok(v);
            }
        }
        if let Some(v) = self.invoke_object(&object, &op, &args)? {
            return Ok(v);
        }
        Err(RpcError::unknown_operation(&op, args.len()))
    }

    fn invoke_manager(
        &self,
        session: &str,
        op: &str,
        args: &Map<String, Value>,
    ) -> Result<Value, RpcError> {
        let v = match op {
            "getInfo" => {
                let module = |name: &str, factories: &[&str]| {
                    json!({"__module__":"kurento","__type__":"ModuleInfo","name":name,
                           "version":VERSION,"generationTime":"sori","factories":factories})
                };
                json!({"__module__":"kurento","__type__":"ServerInfo","version":VERSION,
                       "type":"KMS","capabilities":["transactions"],
                       "modules":[module("core", &["MediaPipeline","PassThrough"]),
                                  module("elements", &["WebRtcEndpoint","RecorderEndpoint"]),
                                  module("filters", &[])]})
            }
            "getPipelines" => json!(self
                .objects
                .iter()
                .filter(|(_, o)| matches!(o.kind, Kind::Pipeline))
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()),
            // Only the caller's own: a session id is all it takes to act as that session (a
            // reconnecting client names its old one), so other sessions' ids are not handed out.
            "getSessions" => json!([session]),
            "getUsedCpu" => json!(used_cpu_percent(self.started)),
            "getUsedMemory" => json!(used_memory_kib()),
            "getCpuCount" => json!(std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)),
            "getMetadata" => json!(""),
            "getName" => json!(MANAGER),
            "getKmd" => {
                return Err(RpcError::not_implemented(
                    "module descriptors are not served by Sori",
                ))
            }
            _ => return Err(RpcError::unknown_operation(op, args.len())),
        };
        Ok(value(v))
    }

    /// Operations every media object has; `None` when `op` is not one of them.
    fn invoke_object(
        &mut self,
        id: &str,
        op: &str,
        args: &Map<String, Value>,
    ) -> Result<Option<Value>, RpcError> {
        let children = || -> Vec<String> {
            self.objects
                .iter()
                .filter(|(_, c)| c.pipeline.as_deref() == Some(id))
                .map(|(k, _)| k.clone())
                .collect()
        };
        let o = self.object(id)?;
        let v = match op {
            "getId" => json!(id),
            "getName" => json!(o.name),
            "getCreationTime" => json!(o.created),
            "getSendTagsInEvents" => json!(o.send_tags),
            "getMediaPipeline" => json!(o.pipeline.clone().unwrap_or_else(|| id.to_string())),
            "getParent" => json!(o.pipeline),
            "getChildren" | "getChilds" => json!(children()),
            "getTags" => json!(o
                .tags
                .iter()
                .map(|(k, v)| json!({"__module__":"kurento","__type__":"Tag","key":k,"value":v}))
                .collect::<Vec<_>>()),
            "getTag" => {
                let key = string_param(args, "key")?;
                let found = o.tags.iter().find(|(k, _)| k == key);
                json!(found.ok_or_else(|| RpcError::tag_not_found(key))?.1)
            }
            "getGstreamerDot" => json!(format!("digraph \"{id}\" {{}}")),
            "setName" => {
                let name = string_param(args, "name")?.to_string();
                self.objects.get_mut(id).expect("checked").name = name;
                Value::Null
            }
            "setSendTagsInEvents" => {
                let Some(b) = args.get("sendTagsInEvents").and_then(Value::as_bool) else {
                    return Err(RpcError::marshall(
                        "'sendTagsInEvents' parameter should be a boolean",
                    ));
                };
                self.objects.get_mut(id).expect("checked").send_tags = b;
                Value::Null
            }
            "addTag" => {
                let key = string_param(args, "key")?.to_string();
                let val = string_param(args, "value")?.to_string();
                let o = self.objects.get_mut(id).expect("checked");
                o.tags.retain(|(k, _)| *k != key);
                o.tags.push((key, val));
                Value::Null
            }
            "removeTag" => {
                let key = string_param(args, "key")?.to_string();
                self.objects
                    .get_mut(id)
                    .expect("checked")
                    .tags
                    .retain(|(k, _)| *k != key);
                Value::Null
            }
            _ => return self.property(id, op, args),
        };
        Ok(Some(value(v)))
    }

    /// Generic property getters and setters of the object's property table.
    fn property(
        &mut self,
        id: &str,
        op: &str,
        args: &Map<String, Value>,
    ) -> Result<Option<Value>, RpcError> {
        let o = self.objects.get_mut(id).expect("checked by the caller");
        let lookup = |rest: &str| -> Option<String> {
            let mut lower = rest.to_string();
            if let Some(first) = lower.get_mut(0..1) {
                first.make_ascii_lowercase();
            }
            [lower, rest.to_string()]
                .into_iter()
                .find(|k| o.props.contains_key(k))
        };
        if let Some(rest) = op.strip_prefix("get") {
            if let Some(key) = lookup(rest) {
                return Ok(Some(value(o.props[&key].clone())));
            }
        } else if let Some(rest) = op.strip_prefix("set") {
            if let Some(key) = lookup(rest) {
                let Some(new) = args.get(&key).or_else(|| args.values().next()) else {
                    return Err(RpcError::member(format!("'{key}' parameter is required")));
                };
                let old = &o.props[&key];
                let same_type = (old.is_string() && new.is_string())
                    || (old.is_boolean() && new.is_boolean())
                    || (old.is_i64() && new.is_i64());
                if !same_type {
                    let expected = if old.is_string() {
                        "a string"
                    } else if old.is_boolean() {
                        "a boolean"
                    } else {
                        "an integer"
                    };
                    return Err(RpcError::marshall(format!(
                        "'{key}' parameter should be {expected}"
                    )));
                }
                o.props.insert(key, new.clone());
                return Ok(Some(value(Value::Null)));
            }
        }
        Ok(None)
    }

    /// MediaElement operations (connections, flow state); `None` when not one of them.
    async fn invoke_element(
        &mut self,
        id: &str,
        op: &str,
        args: &Map<String, Value>,
    ) -> Result<Option<Value>, RpcError> {
        let media_type = |args: &Map<String, Value>| -> Result<Option<MediaType>, RpcError> {
            opt_string_param(args, "mediaType")?
                .map(MediaType::parse)
                .transpose()
        };
        let desc = |args: &Map<String, Value>, name: &str| -> Result<String, RpcError> {
            Ok(opt_string_param(args, name)?
                .unwrap_or("default")
                .to_string())
        };
        let v = match op {
            "connect" | "disconnect" => {
                let sink = string_param(args, "sink")?.to_string();
                let sink_obj = self.object(&sink)?;
                if matches!(sink_obj.kind, Kind::Pipeline) {
                    return Err(RpcError::illegal_param("the sink must be a media element"));
                }
                let pipeline = self.object(id)?.pipeline.clone();
                if sink_obj.pipeline != pipeline {
                    return Err(RpcError::connect("Media elements do not share pipeline"));
                }
                let types = match media_type(args)? {
                    Some(t) => vec![t],
                    None => vec![MediaType::Audio, MediaType::Video, MediaType::Data],
                };
                let source_desc = desc(args, "sourceMediaDescription")?;
                let sink_desc = desc(args, "sinkMediaDescription")?;
                for ty in types {
                    if op == "connect" {
                        self.connect(id, &sink, ty, &source_desc, &sink_desc);
                    } else {
                        self.disconnect(id, &sink, ty, &sink_desc);
                    }
                }
                if let Some(p) = pipeline {
                    self.sync_pipeline(&p).await;
                }
                Value::Null
            }
            "getSourceConnections" | "getSinkConnections" => {
                let ty = media_type(args)?;
                let description = opt_string_param(args, "description")?;
                let sources = op == "getSourceConnections";
                json!(self
                    .links
                    .iter()
                    .filter(|l| if sources {
                        l.sink == id
                    } else {
                        l.source == id
                    })
                    .filter(|l| ty.is_none_or(|t| t == l.ty))
                    .filter(|l| {
                        description.is_none_or(|d| {
                            d == if sources {
                                &l.sink_desc
                            } else {
                                &l.source_desc
                            }
                        })
                    })
                    .map(Link::to_json)
                    .collect::<Vec<_>>())
            }
            "isMediaFlowingIn" | "isMediaFlowingOut" => {
                let Some(ty) = media_type(args)? else {
                    return Err(RpcError::member("'mediaType' parameter is required"));
                };
                let flowing = match (&self.object(id)?.kind, ty.kind()) {
                    (Kind::WebRtc(w), Some(k)) => {
                        let i = k as usize;
                        let t = if op == "isMediaFlowingIn" {
                            w.flow_in[i]
                        } else {
                            w.flow_out[i]
                        };
                        t.state == Flow::Flowing
                    }
                    _ => false,
                };
                json!(flowing)
            }
            "isMediaTranscoding" => json!(false),
            "setAudioFormat" | "setVideoFormat" => {
                return Err(RpcError::not_implemented(
                    "Sori forwards media without transcoding; formats cannot be forced",
                ))
            }
            _ => return Ok(None),
        };
        Ok(Some(value(v)))
    }

    fn connect(&mut self, source: &str, sink: &str, ty: MediaType, sd: &str, kd: &str) {
        let same = |l: &Link| l.sink == sink && l.ty == ty && l.sink_desc == kd;
        if let Some(l) = self.links.iter().find(|l| same(l)) {
            if l.source == source && l.source_desc == sd {
                return; // A repeated connect changes nothing.
            }
        }
        let replaced: Vec<Link> = self.links.iter().filter(|l| same(l)).cloned().collect();
        self.links.retain(|l| !same(l));
        for old in replaced {
            self.emit(
                &old.source,
                "ElementDisconnected",
                json!({"sink": old.sink, "mediaType": old.ty.name(),
                       "sourceMediaDescription": old.source_desc,
                       "sinkMediaDescription": old.sink_desc}),
            );
        }
        self.links.push(Link {
            source: source.to_string(),
            sink: sink.to_string(),
            ty,
            source_desc: sd.to_string(),
            sink_desc: kd.to_string(),
        });
        self.emit(
            source,
            "ElementConnected",
            json!({"sink": sink, "mediaType": ty.name(), "sourceMediaDescription": sd,
                   "sinkMediaDescription": kd}),
        );
    }

    fn disconnect(&mut self, source: &str, sink: &str, ty: MediaType, kd: &str) {
        let matches =
            |l: &Link| l.source == source && l.sink == sink && l.ty == ty && l.sink_desc == kd;
        let gone: Vec<Link> = self.links.iter().filter(|l| matches(l)).cloned().collect();
        self.links.retain(|l| !matches(l));
        for old in gone {
            self.emit(
                source,
                "ElementDisconnected",
                json!({"sink": old.sink, "mediaType": old.ty.name(),
                       "sourceMediaDescription": old.source_desc,
                       "sinkMediaDescription": old.sink_desc}),
            );
        }
    }

    /// The track that reaches `element` for `kind`, following the links upstream.
    fn effective_source(&self, element: &str, kind: MediaKind) -> Option<TrackId> {
        let ty = match kind {
            MediaKind::Audio => MediaType::Audio,
            MediaKind::Video => MediaType::Video,
        };
        let mut at = element.to_string();
        for _ in 0..16 {
            let link = self
                .links
                .iter()
                .find(|l| l.sink == at && l.ty == ty && l.sink_desc == "default")?;
            match &self.objects.get(&link.source)?.kind {
                Kind::WebRtc(w) => {
                    return w
                        .lines
                        .iter()
                        .find(|l| l.kind == kind && l.published.is_some())
                        .and_then(|l| l.published)
                }
                Kind::PassThrough => at = link.source.clone(),
                Kind::Pipeline | Kind::Recorder(_) => return None,
            }
        }
        None
    }

    /// Every track published by `source` (or reaching it, through pass-throughs) of `kind`.
    fn tracks_of(&self, source: &str, kind: MediaKind) -> Vec<TrackId> {
        match self.objects.get(source).map(|o| &o.kind) {
            Some(Kind::WebRtc(w)) => w
                .lines
                .iter()
                .filter(|l| l.kind == kind)
                .filter_map(|l| l.published)
                .collect(),
            Some(Kind::PassThrough) => self.effective_source(source, kind).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// The extension: links with a sink media description of their own reach a
    /// renegotiating sink on m-lines the core adds (and removes) by renegotiation.
    async fn sync_described(&mut self, id: &str, peer: PeerId) {
        let Some(w) = self.webrtc_mut(id) else {
            return;
        };
        if !w.renegotiation {
            return;
        }
        let mut wanted = BTreeSet::new();
        for l in self
            .links
            .iter()
            .filter(|l| l.sink == id && l.sink_desc != "default")
        {
            if let Some(kind) = l.ty.kind() {
                wanted.extend(self.tracks_of(&l.source, kind));
            }
        }
        let Some(w) = self.webrtc_mut(id) else {
            return;
        };
        let add: Vec<TrackId> = wanted.difference(&w.subscribed).copied().collect();
        let drop: Vec<TrackId> = w.subscribed.difference(&wanted).copied().collect();
        for (track, on) in add
            .into_iter()
            .map(|t| (t, true))
            .chain(drop.into_iter().map(|t| (t, false)))
        {
            match self.media.subscribe(peer, track, on).await {
                Ok(()) => {
                    tracing::debug!(object = id, %track, on, "described link");
                    if let Some(w) = self.webrtc_mut(id) {
                        if on {
                            w.subscribed.insert(track);
                        } else {
                            w.subscribed.remove(&track);
                        }
                    }
                }
                Err(e) => tracing::warn!(object = id, %track, "cannot subscribe: {e}"),
            }
        }
    }

    fn rec_mut(&mut self, id: &str) -> Option<&mut Rec> {
        match self.objects.get_mut(id).map(|o| &mut o.kind) {
            Some(Kind::Recorder(r)) => Some(r),
            _ => None,
        }
    }

    /// A recording recorder taps the tracks connected to it; any other taps nothing.
    async fn sync_recorder(&mut self, id: &str) {
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let wanted = self.effective_source(id, kind);
            let Some(r) = self.rec_mut(id) else {
                return;
            };
            let recording = r.state == RecState::Start && r.recording.is_some();
            let wanted = wanted.filter(|_| recording && r.wants(kind));
            let current = r.taps.iter().position(|(k, ..)| *k == kind);
            if current.map(|i| r.taps[i].1) == wanted {
                continue;
            }
            if let Some(i) = current {
                let (_, _, tap) = r.taps.remove(i);
                self.media.untap(tap);
            }
            let Some(track) = wanted else {
                continue;
            };
            match self.media.tap(track).await {
                Ok((tap, rx)) => {
                    let Some(r) = self.rec_mut(id) else {
                        self.media.untap(tap);
                        return;
                    };
                    if let Some(rec) = &r.recording {
                        tokio::spawn(recorder::forward(rx, rec.sender(), r.counts.clone()));
                    }
                    r.taps.push((kind, track, tap));
                }
                Err(e) => tracing::warn!(object = id, %track, "cannot record: {e}"),
            }
        }
    }

    /// RecorderEndpoint operations; `None` when `op` is not one of them.
    async fn invoke_recorder(&mut self, id: &str, op: &str) -> Result<Option<Value>, RpcError> {
        let states = |s: RecState| json!({"state": s.name()});
        let r = self.rec_mut(id).expect("checked");
        let v = match op {
            "record" => {
                match r.state {
                    RecState::Start => {}
                    RecState::Pause => {
                        if let Some(rec) = &r.recording {
                            let _ = rec.sender().send(sori_record::Input::Pause(false));
                        }
                        r.state = RecState::Start;
                    }
                    RecState::Stop => {
                        let config = sori_record::RecordingConfig {
                            path: r.path.clone(),
                            container: r.profile.container,
                            audio: r.profile.audio,
                            video: r.profile.video,
                        };
                        match recorder::start(config) {
                            Ok(rec) => {
                                r.recording = Some(rec);
                                r.state = RecState::Start;
                            }
                            Err(e) => {
                                tracing::warn!(object = id, "recording refused: {e}");
                                // As in Kurento: an Error event, not an error reply.
                                self.error_event(id, 6, "RESOURCE_ERROR_OPEN", &e);
                                return Ok(Some(value(Value::Null)));
                            }
                        }
                    }
                }
                self.emit(id, "UriEndpointStateChanged", states(RecState::Start));
                self.emit(id, "Recording", json!({}));
                if let Some(p) = self.objects.get(id).and_then(|o| o.pipeline.clone()) {
                    self.sync_pipeline(&p).await;
                }
                Value::Null
            }
            "pause" => {
                if r.state == RecState::Start {
                    if let Some(rec) = &r.recording {
                        let _ = rec.sender().send(sori_record::Input::Pause(true));
                    }
                    r.state = RecState::Pause;
                    self.emit(id, "UriEndpointStateChanged", states(RecState::Pause));
                    self.emit(id, "Paused", json!({}));
                }
                Value::Null
            }
            "stop" | "stopAndWait" => {
                let taps: Vec<TapId> = r.taps.drain(..).map(|(_, _, t)| t).collect();
                let recording = r.recording.take();
                let was = std::mem::replace(&mut r.state, RecState::Stop);
                for tap in taps {
                    self.media.untap(tap);
                }
                if let Some(recording) = recording {
                    // Both reply once the file is final: it takes milliseconds.
                    let done = tokio::task::spawn_blocking(move || recording.stop()).await;
                    match done {
                        Ok(Ok(summary)) => {
                            tracing::info!(object = id, ?summary, "recording finished");
                        }
                        Ok(Err(e)) => {
                            self.error_event(id, 6, "RESOURCE_ERROR_WRITE", &e.to_string());
                        }
                        Err(e) => tracing::warn!(object = id, "recorder stopped badly: {e}"),
                    }
                }
                if was != RecState::Stop {
                    self.emit(id, "UriEndpointStateChanged", states(RecState::Stop));
                    self.emit(id, "Stopped", json!({}));
                }
                Value::Null
            }
            "getUri" => json!(r.uri),
            "getState" => json!(r.state.name()),
            _ => return Ok(None),
        };
        Ok(Some(value(v)))
    }

    /// Brings the media core's forwarding in line with the pipeline's links.
    async fn sync_pipeline(&mut self, pipeline: &str) {
        let sinks: Vec<(String, PeerId)> = self
            .objects
            .iter()
            .filter(|(_, o)| o.pipeline.as_deref() == Some(pipeline))
            .filter_map(|(id, o)| match &o.kind {
                Kind::WebRtc(w) => w.peer.map(|p| (id.clone(), p)),
                _ => None,
            })
            .collect();
        let recorders: Vec<String> = self
            .objects
            .iter()
            .filter(|(_, o)| o.pipeline.as_deref() == Some(pipeline))
            .filter(|(_, o)| matches!(o.kind, Kind::Recorder(_)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in recorders {
            self.sync_recorder(&id).await;
        }
        for (id, peer) in sinks {
            self.sync_described(&id, peer).await;
            for kind in [MediaKind::Audio, MediaKind::Video] {
                let wanted = self.effective_source(&id, kind);
                let Some(w) = self.webrtc_mut(&id) else {
                    continue;
                };
                let own = |l: &&mut MediaLine| l.kind == kind && l.sends && !l.managed;
                let Some(line) = w.lines.iter_mut().find(own) else {
                    continue;
                };
                if line.fed_by == wanted {
                    continue;
                }
                let mid = line.mid.clone();
                match self.media.feed(peer, &mid, wanted).await {
                    Ok(()) => {
                        if let Some(w) = self.webrtc_mut(&id) {
                            if let Some(l) = w.lines.iter_mut().find(|l| l.mid == mid) {
                                l.fed_by = wanted;
                            }
                        }
                    }
                    Err(e) => tracing::warn!(object = id, mid, "cannot forward: {e}"),
                }
            }
        }
    }

    /// WebRtcEndpoint operations; `None` when `op` is not one of them.
    async fn invoke_webrtc(
        &mut self,
        id: &str,
        op: &str,
        args: &Map<String, Value>,
    ) -> Result<Option<Value>, RpcError> {
        let v = match op {
            "processOffer" => {
                let offer = string_param(args, "offer")?.to_string();
                json!(self.process_offer(id, &offer).await?)
            }
            "generateOffer" => json!(self.generate_offer(id, args).await?),
            "processAnswer" => {
                let answer = string_param(args, "answer")?.to_string();
                json!(self.process_answer(id, &answer).await?)
            }
            "gatherCandidates" => {
                let w = self.webrtc_mut(id).expect("checked");
                w.gather_requested = true;
                self.gather(id).await;
                Value::Null
            }
            "addIceCandidate" => {
                let Some(c) = args.get("candidate") else {
                    return Err(RpcError::member("'candidate' parameter is required"));
                };
                let text = match c {
                    Value::Object(m) => match m.get("candidate") {
                        Some(Value::String(s)) => s.clone(),
                        _ => {
                            return Err(RpcError::marshall("'candidate' should be an IceCandidate"))
                        }
                    },
                    _ => return Err(RpcError::marshall("'candidate' should be an IceCandidate")),
                };
                // The core is ICE-lite: it learns the browser's address from its checks, so
                // remote candidates are only remembered (early ones included).
                if !text.is_empty() {
                    let w = self.webrtc_mut(id).expect("checked");
                    if w.remote_candidates.len() < 64 {
                        w.remote_candidates.push(text);
                    }
                }
                Value::Null
            }
            // Extension: the stream id (`a=msid`) under which other endpoints receive this
            // one's tracks on renegotiated m-lines.
            "getStreamId" => json!(self
                .webrtc_mut(id)
                .expect("checked")
                .peer
                .map(|p| p.to_string())),
            "getLocalSessionDescriptor" => json!(self.webrtc_mut(id).expect("checked").local_sdp),
            "getRemoteSessionDescriptor" => {
                json!(self.webrtc_mut(id).expect("checked").remote_sdp)
            }
            "requestKeyframe" => {
                if let Some(peer) = self.webrtc_mut(id).expect("checked").peer {
                    let _ = self.media.request_keyframe(peer).await;
                }
                Value::Null
            }
            "getStats" => {
                let w = self.webrtc_mut(id).expect("checked");
                let mut stats = Map::new();
                let millis = now_millis() as u64;
                for (i, kind) in ["AUDIO", "VIDEO"].iter().enumerate() {
                    stats.insert(
                        format!("inbound-{kind}"),
                        json!({"__module__":"kurento","__type__":"RTCInboundRTPStreamStats",
                               "id": format!("inbound-{kind}"),"type":"inboundrtp",
                               "timestampMillis": millis,"packetsReceived": w.flow_out[i].count}),
                    );
                    stats.insert(
                        format!("outbound-{kind}"),
                        json!({"__module__":"kurento","__type__":"RTCOutboundRTPStreamStats",
                               "id": format!("outbound-{kind}"),"type":"outboundrtp",
                               "timestampMillis": millis,"packetsSent": w.flow_in[i].count}),
                    );
                }
                Value::Object(stats)
            }
            "getMediaState" => {
                let w = self.webrtc_mut(id).expect("checked");
                json!(if w.connected {
                    "CONNECTED"
                } else {
                    "DISCONNECTED"
                })
            }
            "getConnectionState" => {
                let w = self.webrtc_mut(id).expect("checked");
                json!(if w.connected {
                    "CONNECTED"
                } else {
                    "DISCONNECTED"
                })
            }
            "getIceConnectionState" | "getICECandidatePairs" | "getDtlsConnectionState" => {
                json!([])
            }
            "createDataChannel" | "closeDataChannel" => {
                return Err(RpcError::not_implemented(
                    "data channels are not supported by Sori's WebRtcEndpoint",
                ))
            }
            _ => return Ok(None),
        };
        Ok(Some(value(v)))
    }

    async fn generate_offer(
        &mut self,
        id: &str,
        args: &Map<String, Value>,
    ) -> Result<String, RpcError> {
        let pipeline = self.object(id)?.pipeline.clone().unwrap_or_default();
        let w = self.webrtc_mut(id).expect("checked");
        let (recvonly, sendonly) = (w.recvonly, w.sendonly);
        let options = args.get("options").and_then(Value::as_object);
        let wants = |name: &str| {
            options
                .and_then(|o| o.get(name))
                .and_then(Value::as_bool)
                .unwrap_or(true)
        };
        let mut lines = Vec::new();
        for (kind, option) in [
            (MediaKind::Audio, "offerToReceiveAudio"),
            (MediaKind::Video, "offerToReceiveVideo"),
        ] {
            let line = OfferLine {
                kind,
                receive: !sendonly,
                send: !recvonly && wants(option),
            };
            if line.receive || line.send {
                lines.push(line);
            }
        }
        let w = self.webrtc_mut(id).expect("checked");
        if w.local_sdp.is_some() || w.remote_sdp.is_some() {
            return Err(RpcError::already_negotiated());
        }
        let offered = self
            .media
            .offer_new(&pipeline, Forwarding::Manual, lines)
            .await
            .map_err(|e| RpcError::generate_offer(e.to_string()))?;
        let lines = self.media.media(offered.peer).await.unwrap_or_default();
        if self.candidates.is_empty() {
            self.candidates = candidates_in(&offered.offer);
        }
        let w = self.webrtc_mut(id).expect("checked");
        w.peer = Some(offered.peer);
        w.local_sdp = Some(offered.offer.clone());
        w.lines = lines;
        tokio::spawn(signal_task(
            self.this.clone(),
            id.to_string(),
            offered.signals,
        ));
        self.gather(id).await;
        Ok(offered.offer)
    }

    async fn process_answer(&mut self, id: &str, answer: &str) -> Result<String, RpcError> {
        let pipeline = self.object(id)?.pipeline.clone().unwrap_or_default();
        let w = self.webrtc_mut(id).expect("checked");
        let (Some(peer), Some(local)) = (w.peer, w.local_sdp.clone()) else {
            return Err(RpcError::not_offer_generated());
        };
        if w.remote_sdp.is_some() && !w.renegotiation {
            return Err(RpcError::answer_already_processed());
        }
        self.media
            .answer(peer, answer)
            .await
            .map_err(|e| media_error(e, false))?;
        let lines = self.media.media(peer).await.unwrap_or_default();
        let w = self.webrtc_mut(id).expect("checked");
        let first = w.remote_sdp.replace(answer.to_string()).is_none();
        w.lines = lines;
        if first {
            self.emit(id, "MediaSessionStarted", json!({}));
        }
        self.sync_pipeline(&pipeline).await;
        Ok(local)
    }

    async fn process_offer(&mut self, id: &str, offer: &str) -> Result<String, RpcError> {
        let pipeline = self.object(id)?.pipeline.clone().unwrap_or_default();
        let w = self.webrtc_mut(id).expect("checked");
        if let (true, Some(peer), Some(_)) = (w.renegotiation, w.peer, &w.remote_sdp) {
            let answer = self
                .media
                .offer(peer, offer)
                .await
                .map_err(|e| media_error(e, true))?;
            let lines = self.media.media(peer).await.unwrap_or_default();
            let w = self.webrtc_mut(id).expect("checked");
            w.remote_sdp = Some(offer.to_string());
            w.local_sdp = Some(answer.clone());
            w.lines = lines;
            self.sync_pipeline(&pipeline).await;
            return Ok(answer);
        }
        if w.remote_sdp.is_some() || w.local_sdp.is_some() {
            return Err(RpcError::already_negotiated());
        }
        let joined = match self
            .media
            .join_with(&pipeline, offer, Forwarding::Manual)
            .await
        {
            Ok(j) => j,
            Err(e) => {
                let err = media_error(e, true);
                tracing::warn!(object = id, "processOffer refused: {}", err.message);
                if err.code == 40205 {
                    self.error_event(
                        id,
                        err.code,
                        "SDP_END_POINT_PROCESS_OFFER_ERROR",
                        &err.message,
                    );
                }
                return Err(err);
            }
        };
        let lines = self.media.media(joined.peer).await.unwrap_or_default();
        if self.candidates.is_empty() {
            self.candidates = candidates_in(&joined.answer);
        }
        let w = self.webrtc_mut(id).expect("checked");
        w.peer = Some(joined.peer);
        w.local_sdp = Some(joined.answer.clone());
        w.remote_sdp = Some(offer.to_string());
        w.lines = lines;
        tokio::spawn(signal_task(
            self.this.clone(),
            id.to_string(),
            joined.signals,
        ));
        self.emit(id, "MediaSessionStarted", json!({}));
        self.sync_pipeline(&pipeline).await;
        self.gather(id).await;
        Ok(joined.answer)
    }

    /// Raises the candidate events once both gatherCandidates and negotiation have happened
    /// (the m-line ids must be known).
    async fn gather(&mut self, id: &str) {
        let Some(w) = self.webrtc_mut(id) else {
            return;
        };
        if !w.gather_requested || w.gathered || w.peer.is_none() {
            return;
        }
        w.gathered = true;
        let mid = w.lines.first().map(|l| l.mid.clone()).unwrap_or_default();
        let component = |state: &str| json!({"streamId": 1, "componentId": 1, "state": state});
        self.emit(id, "IceComponentStateChanged", component("GATHERING"));
        for (i, addr) in self.candidates.iter().enumerate() {
            let candidate = format!(
                "candidate:{} 1 UDP {} {} {} typ host",
                i + 1,
                2130706431u32 - i as u32,
                addr.ip(),
                addr.port()
            );
            self.emit(
                id,
                "IceCandidateFound",
                json!({"candidate": {"__module__":"kurento","__type__":"IceCandidate",
                                     "candidate": candidate, "sdpMid": mid, "sdpMLineIndex": 0}}),
            );
        }
        self.emit(id, "IceGatheringDone", json!({}));
    }

    fn on_signal(&mut self, id: &str, signal: PeerSignal) {
        let Some(w) = self.webrtc_mut(id) else {
            return;
        };
        let component = |state: &str| json!({"streamId": 1, "componentId": 1, "state": state});
        let states = |old: &str, new: &str| json!({"oldState": old, "newState": new});
        match signal {
            PeerSignal::Connected => {
                w.connected = true;
                let remote = w.remote_candidates.first().cloned().unwrap_or_default();
                let local = self
                    .candidates
                    .first()
                    .map(|a| {
                        format!(
                            "candidate:1 1 UDP 2130706431 {} {} typ host",
                            a.ip(),
                            a.port()
                        )
                    })
                    .unwrap_or_default();
                self.emit(id, "IceComponentStateChanged", component("CONNECTING"));
                self.emit(
                    id,
                    "NewCandidatePairSelected",
                    json!({"candidatePair": {"__module__":"kurento","__type__":"IceCandidatePair",
                           "streamId":"1","componentId":1,"localCandidate":local,
                           "remoteCandidate":remote}}),
                );
                self.emit(id, "IceComponentStateChanged", component("CONNECTED"));
                self.emit(id, "IceComponentStateChanged", component("READY"));
                self.emit(
                    id,
                    "DtlsConnectionStateChange",
                    json!({"streamId":"1","componentId":"1","connectionId":"1","state":"CONNECTED"}),
                );
                self.emit(
                    id,
                    "ConnectionStateChanged",
                    states("DISCONNECTED", "CONNECTED"),
                );
                self.emit(id, "MediaStateChanged", states("DISCONNECTED", "CONNECTED"));
            }
            PeerSignal::Removed(reason) => {
                let was = std::mem::replace(&mut w.connected, false);
                w.peer = None;
                tracing::info!(object = id, %reason, "endpoint's media session ended");
                if was {
                    self.emit(
                        id,
                        "ConnectionStateChanged",
                        states("CONNECTED", "DISCONNECTED"),
                    );
                    self.emit(id, "MediaStateChanged", states("CONNECTED", "DISCONNECTED"));
                }
                self.emit(id, "IceComponentStateChanged", component("FAILED"));
                self.emit(id, "MediaSessionTerminated", json!({}));
            }
            PeerSignal::Offer(sdp) => {
                tracing::debug!(object = id, "renegotiation needed");
                self.emit(id, "RenegotiationNeeded", json!({"sdpOffer": sdp}));
            }
            PeerSignal::Published { .. } => {}
        }
    }

    /// The endpoint's media started arriving: its m-lines now name their tracks, which may
    /// feed other elements.
    async fn published(&mut self, id: &str) {
        let Some(peer) = self.webrtc_mut(id).and_then(|w| w.peer) else {
            return;
        };
        let Ok(lines) = self.media.media(peer).await else {
            return;
        };
        let pipeline = self.objects.get(id).and_then(|o| o.pipeline.clone());
        if let Some(w) = self.webrtc_mut(id) {
            w.lines = lines;
        }
        if let Some(p) = pipeline {
            self.sync_pipeline(&p).await;
        }
    }

    /// Updates the flow states from packet counts and raises their events.
    fn on_flows(&mut self, flows: Vec<(String, PeerFlow)>, now: Instant) {
        let idle = self.flow_idle;
        let mut raised = Vec::new();
        for (id, f) in flows {
            let (mut flow_out, flow_in) = match self.objects.get_mut(&id).map(|o| &mut o.kind) {
                Some(Kind::WebRtc(w)) => (Some(&mut w.flow_out), &mut w.flow_in),
                Some(Kind::Recorder(r)) => (None, &mut r.flow_in),
                _ => continue,
            };
            let counts = [
                (false, 0, f.audio_in),
                (false, 1, f.video_in),
                (true, 0, f.audio_out),
                (true, 1, f.video_out),
            ];
            for (into_browser, i, count) in counts {
                let t = match (into_browser, flow_out.as_deref_mut()) {
                    (true, _) => &mut flow_in[i],
                    (false, Some(out)) => &mut out[i],
                    (false, None) => continue,
                };
                let new = if count > t.count {
                    t.last_active = Some(now);
                    Flow::Flowing
                } else if t
                    .last_active
                    .is_some_and(|at| now.duration_since(at) >= idle)
                {
                    Flow::NotFlowing
                } else {
                    t.state
                };
                t.count = count;
                if new != t.state {
                    t.state = new;
                    let event = if into_browser {
                        "MediaFlowInStateChanged"
                    } else {
                        "MediaFlowOutStateChanged"
                    };
                    let state = if new == Flow::Flowing {
                        "FLOWING"
                    } else {
                        "NOT_FLOWING"
                    };
                    let media = if i == 0 { "AUDIO" } else { "VIDEO" };
                    raised.push((id.clone(), event, state, media));
                }
            }
        }
        for (id, event, state, media) in raised {
            self.emit(
                &id,
                event,
                json!({"state": state, "padName": "default", "mediaType": media}),
            );
        }
    }

    /// One garbage-collection pass.
    async fn collect(&mut self) {
        let mut dead = Vec::new();
        for (id, s) in self.sessions.iter_mut() {
            let open = s.sink.as_ref().is_some_and(|(_, tx)| !tx.is_closed());
            if open {
                s.marked = true;
            } else if s.marked {
                s.marked = false;
            } else {
                dead.push(id.clone());
            }
        }
        for id in dead {
            tracing::info!(session = id, "session collected");
            self.close_session(&id, false).await;
        }
    }
}

/// The `a=candidate` addresses of an SDP (the media port's own candidates).
fn candidates_in(sdp: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in sdp.lines() {
        let Some(rest) = line.trim().strip_prefix("a=candidate:") else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() >= 6 {
            if let Ok(addr) = format!("{}:{}", f[4], f[5]).parse::<SocketAddr>() {
                if !out.contains(&addr) {
                    out.push(addr);
                }
            } else if let (Ok(ip), Ok(port)) = (f[4].parse(), f[5].parse()) {
                let addr = SocketAddr::new(ip, port);
                if !out.contains(&addr) {
                    out.push(addr);
                }
            }
        }
    }
    out
}

async fn signal_task(
    kms: Weak<Mutex<Kms>>,
    id: String,
    mut signals: mpsc::UnboundedReceiver<PeerSignal>,
) {
    while let Some(signal) = signals.recv().await {
        let Some(kms) = kms.upgrade() else {
            return;
        };
        let removed = matches!(signal, PeerSignal::Removed(_));
        let mut k = kms.lock().await;
        if let PeerSignal::Published { .. } = signal {
            k.published(&id).await;
        } else {
            k.on_signal(&id, signal);
        }
        if removed {
            return;
        }
    }
}

pub(crate) async fn flow_task(kms: Weak<Mutex<Kms>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(kms) = kms.upgrade() else {
            return;
        };
        let mut k = kms.lock().await;
        let peers: Vec<(String, PeerId)> = k
            .objects
            .iter()
            .filter_map(|(id, o)| match &o.kind {
                Kind::WebRtc(w) => w.peer.map(|p| (id.clone(), p)),
                _ => None,
            })
            .collect();
        // Recorders count what they are fed: media flowing into them.
        let recorders: Vec<(String, PeerFlow)> = k
            .objects
            .iter()
            .filter_map(|(id, o)| match &o.kind {
                Kind::Recorder(r) => Some((
                    id.clone(),
                    PeerFlow {
                        audio_out: r.counts[0].load(std::sync::atomic::Ordering::Relaxed),
                        video_out: r.counts[1].load(std::sync::atomic::Ordering::Relaxed),
                        ..PeerFlow::default()
                    },
                )),
                _ => None,
            })
            .collect();
        if !recorders.is_empty() {
            k.on_flows(recorders, Instant::now());
        }
        if peers.is_empty() {
            continue;
        }
        let Ok(flows) = k.media.flows(peers.iter().map(|(_, p)| *p).collect()).await else {
            return;
        };
        let flows = peers
            .into_iter()
            .zip(flows)
            .filter_map(|((id, _), f)| f.map(|f| (id, f)))
            .collect();
        k.on_flows(flows, Instant::now());
    }
}

pub(crate) async fn gc_task(kms: Weak<Mutex<Kms>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(kms) = kms.upgrade() else {
            return;
        };
        kms.lock().await.collect().await;
    }
}

/// Process CPU use since start, in percent of one core.
fn used_cpu_percent(started: Instant) -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let elapsed = started.elapsed().as_secs_f64().max(0.001);
    ticks / 100.0 / elapsed * 100.0
}

/// Resident memory of the process in KiB.
fn used_memory_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newrefs_are_replaced_by_earlier_results() {
        let mut v = json!({"constructorParams": {"mediaPipeline": "newref:0"}, "x": ["newref:1"]});
        let created = vec![Some(json!("P")), Some(json!("W"))];
        substitute_newrefs(&mut v, &created).unwrap();
        assert_eq!(
            v,
            json!({"constructorParams": {"mediaPipeline": "P"}, "x": ["W"]})
        );
        let mut bad = json!({"a": "newref:5"});
        assert_eq!(
            substitute_newrefs(&mut bad, &created).unwrap_err().code,
            40008
        );
    }

    #[test]
    fn candidates_are_read_from_the_answer() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 10.0.0.1 40000 typ host\r\n\
                   a=candidate:2 1 udp 2130706431 ::1 40000 typ host\r\n";
        assert_eq!(
            candidates_in(sdp),
            vec![
                "10.0.0.1:40000".parse().unwrap(),
                "[::1]:40000".parse().unwrap()
            ]
        );
    }
}
