//! The object model: sessions, media objects, connections between elements, subscriptions,
//! and the events they raise.
//!
//! A frame is parsed into a typed request ([`request`]) and handled under the one lock on
//! [`Kms`]: sessions ([`session`]), the registry of media objects ([`registry`]), the links
//! between elements ([`links`]), the `ServerManager` ([`manager`]), WebRtcEndpoints ([`webrtc`]),
//! RecorderEndpoints ([`recorder_endpoint`]), media flow states ([`flow`]), and the events
//! sessions subscribe to ([`events`]).

mod events;
mod flow;
mod links;
mod manager;
mod recorder_endpoint;
mod registry;
mod relay;
mod request;
mod session;
mod webrtc;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use sori_net::MediaHandle;
use tokio::sync::Mutex;

use crate::rpc::{error_response, parse_request, response, RpcError};
use events::Sub;
pub(crate) use flow::flow_task;
use links::{Link, MediaType};
use registry::{Kind, Object};
pub(crate) use relay::{pump, Frame};
use request::{find_newref, Call, Method, ObjectMethod};
use session::Session;
pub(crate) use session::{gc_task, Conn};
pub(crate) use webrtc::FlowTrack;

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

fn with_session(mut v: Value, session: &str) -> Value {
    if let Value::Object(m) = &mut v {
        m.insert("sessionId".into(), json!(session));
    }
    v
}

fn value(v: Value) -> Value {
    json!({ "value": v })
}

/// Handles one text frame; returns the reply to send, if any.
pub(crate) async fn handle_frame(
    kms: &Arc<Mutex<Kms>>,
    conn: &mut Conn,
    text: &str,
    closed: bool,
) -> Option<String> {
    let reply = match parse_request(text) {
        Err((id, e)) => Some(error_response(&id, &e)),
        Ok(req) if closed && negotiates(&req) => {
            // The client closed the connection after sending this (it gave up waiting): the
            // session description it would make or take reaches no one, and applying it
            // would leave the endpoint negotiated in a way no client knows of.
            tracing::info!(
                conn = conn.id,
                "negotiation sent on a connection since closed: not applied"
            );
            None
        }
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

/// A request that negotiates a session description: its effect is known only from its reply.
fn negotiates(req: &crate::rpc::Request) -> bool {
    req.method == "invoke"
        && req
            .params
            .as_ref()
            .and_then(|p| p.get("operation"))
            .and_then(serde_json::Value::as_str)
            .is_some_and(|op| matches!(op, "processOffer" | "processAnswer" | "generateOffer"))
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

    async fn request(
        &mut self,
        conn: &mut Conn,
        method: &str,
        params: Option<Map<String, Value>>,
    ) -> Result<Value, RpcError> {
        match Method::parse(method) {
            Some(Method::Ping) => Ok(self.ping(conn)),
            Some(Method::Connect) => self.connect_session(conn, params.unwrap_or_default()),
            Some(Method::CloseSession) => {
                let params = params.ok_or_else(RpcError::params_required)?;
                self.close_session_request(conn, &params).await
            }
            Some(Method::Transaction) => {
                let params = params.ok_or_else(RpcError::params_required)?;
                self.transaction(conn, &params).await
            }
            Some(Method::On(m)) => self.dispatch(conn, m, params, false).await,
            None => Err(RpcError::method_not_found()),
        }
    }

    /// A method on media objects, on its own or as an operation of a transaction.
    async fn dispatch(
        &mut self,
        conn: &mut Conn,
        method: ObjectMethod,
        params: Option<Map<String, Value>>,
        in_transaction: bool,
    ) -> Result<Value, RpcError> {
        let params = params.ok_or_else(RpcError::params_required)?;
        if !in_transaction {
            if let Some(r) = find_newref(&Value::Object(params.clone())) {
                return Err(RpcError::newref_outside_transaction(r));
            }
        }
        let session = self.session_for(conn, &params);
        let result = match Call::parse(method, &params)? {
            Call::Create(c) => self.create(&session, c).await,
            Call::Describe { object } => self.describe(&session, &object),
            Call::Invoke(i) => self.invoke(&session, i).await,
            Call::Subscribe { object, event } => self.subscribe(&session, object, event),
            Call::Unsubscribe { subscription } => {
                if let Some(sub) = subscription {
                    self.subs.remove(&sub);
                }
                Ok(json!({}))
            }
            Call::Release { object } => {
                if !self.may_release(&session, &object) {
                    return Err(RpcError::not_owner(&object));
                }
                self.release(&object).await;
                Ok(json!({}))
            }
            Call::KeepAlive => Ok(json!({})),
            Call::Ref { object } => {
                let o = self
                    .objects
                    .get_mut(&object)
                    .ok_or_else(|| RpcError::object_not_found(&object))?;
                o.refs.insert(session.clone());
                Ok(json!({}))
            }
            Call::Unref { object } => {
                self.unref(&session, &object).await;
                Ok(json!({}))
            }
        }?;
        Ok(with_session(result, &session))
    }
}
