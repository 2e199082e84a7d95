//! Sessions: a connection binds one, objects outlive its socket, and sessions whose socket
//! has been gone for a collection period or two are collected; `ping`, `connect`,
//! `closeSession` and `transaction`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Weak;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, Mutex};

use super::request::{substitute_newrefs, Method};
use super::{uuid, value, with_session, Kms};
use crate::rpc::{error_response, request_from_value, response, string_param, RpcError};

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

pub(super) struct Session {
    /// The sockets this session was bound to that are still open, the current one last
    /// (events go there). A socket that closes leaves the one bound before it current: frames
    /// a dead socket still had buffered (read after a newer socket resumed the session) do
    /// not leave the session without a socket.
    pub(super) sinks: Vec<(u64, mpsc::UnboundedSender<String>)>,
    /// Seen alive at the last collection pass.
    pub(super) marked: bool,
}

impl Kms {
    /// The socket closed: its sessions keep their objects until collected.
    pub(crate) fn disconnected(&mut self, conn: &Conn) {
        for s in self.sessions.values_mut() {
            s.sinks.retain(|(id, tx)| *id != conn.id && !tx.is_closed());
        }
    }

    fn bind(&mut self, conn: &mut Conn, session: &str) {
        let s = self.sessions.entry(session.to_string()).or_insert(Session {
            sinks: Vec::new(),
            marked: true,
        });
        // Events go to the newest open socket of the session: one opened later (a client that
        // reconnected) keeps them when frames the old one still delivers arrive late (a
        // media server that was frozen reads them on waking, then finds the old one closed).
        if !s.sinks.iter().any(|(id, _)| *id == conn.id) {
            s.sinks.retain(|(_, tx)| !tx.is_closed());
            let at = s.sinks.partition_point(|(id, _)| *id < conn.id);
            s.sinks.insert(at, (conn.id, conn.outbox.clone()));
        }
        conn.session = Some(session.to_string());
    }

    /// The session of a request: the one it names (adopted if unknown), else the socket's,
    /// else a new one.
    pub(super) fn session_for(&mut self, conn: &mut Conn, params: &Map<String, Value>) -> String {
        let id = match params.get("sessionId") {
            Some(Value::String(s)) => s.clone(),
            _ => conn.session.clone().unwrap_or_else(uuid),
        };
        self.bind(conn, &id);
        id
    }

    pub(super) fn ping(&self, conn: &Conn) -> Value {
        let mut v = value(json!("pong"));
        if let Some(s) = &conn.session {
            v = with_session(v, s);
        }
        v
    }

    /// `connect`: binds the session named (which must exist), else the socket's, else a new one.
    pub(super) fn connect_session(
        &mut self,
        conn: &mut Conn,
        params: Map<String, Value>,
    ) -> Result<Value, RpcError> {
        let (session, resumed) = match params.get("sessionId") {
            Some(Value::String(s)) => {
                if !self.sessions.contains_key(s) {
                    return Err(RpcError::invalid_session(format!("Invalid session: {s}")));
                }
                (s.clone(), conn.session.as_deref() != Some(s.as_str()))
            }
            Some(_) => return Err(RpcError::member("'sessionId' should be a string")),
            None => (conn.session.clone().unwrap_or_else(uuid), false),
        };
        self.bind(conn, &session);
        if resumed {
            // What the old socket may have lost on its way out.
            self.offer_again(&session);
        }
        Ok(json!({"sessionId": session, "serverId": self.server_id}))
    }

    pub(super) async fn close_session_request(
        &mut self,
        conn: &mut Conn,
        params: &Map<String, Value>,
    ) -> Result<Value, RpcError> {
        let session = string_param(params, "sessionId")?.to_string();
        let release = params.get("release").and_then(Value::as_bool) == Some(true);
        self.close_session(&session, release).await;
        if conn.session.as_deref() == Some(session.as_str()) {
            conn.session = None;
        }
        Ok(Value::Null)
    }

    /// `transaction`: its operations in order, each seeing the earlier ones' results as
    /// `newref:K`; the first failure ends it.
    pub(super) async fn transaction(
        &mut self,
        conn: &mut Conn,
        params: &Map<String, Value>,
    ) -> Result<Value, RpcError> {
        let session = self.session_for(conn, params);
        let Some(Value::Array(ops)) = params.get("operations") else {
            return Err(RpcError::member("'operations' parameter is required"));
        };
        let mut results = Vec::new();
        let mut created: Vec<Option<Value>> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match self.operation(conn, &session, i, op, &created).await {
                Ok(v) => {
                    created.push(v.get("value").cloned());
                    results.push(response(&json!(i), v));
                }
                Err((id, e)) => {
                    results.push(error_response(&id, &e));
                    break;
                }
            }
        }
        Ok(with_session(value(Value::Array(results)), &session))
    }

    /// Operation `i` of a transaction; an error comes with the id to answer it under.
    async fn operation(
        &mut self,
        conn: &mut Conn,
        session: &str,
        i: usize,
        op: &Value,
        created: &[Option<Value>],
    ) -> Result<Value, (Value, RpcError)> {
        let req = request_from_value(op.clone()).map_err(|(_, e)| (json!(i), e))?;
        if req.id != Some(json!(i)) {
            let e = RpcError::malformed_transaction(format!("operation {i} must have id {i}"));
            return Err((req.id.unwrap_or(Value::Null), e));
        }
        let mut params = Value::Object(req.params.unwrap_or_default());
        substitute_newrefs(&mut params, created).map_err(|e| (json!(i), e))?;
        let Value::Object(mut m) = params else {
            unreachable!("an object stays an object")
        };
        m.insert("sessionId".into(), json!(session));
        let outcome = match Method::parse(&req.method) {
            Some(Method::Transaction) => Err(RpcError::malformed_transaction(
                "transactions cannot be nested",
            )),
            Some(Method::On(method)) => self.dispatch(conn, method, Some(m), true).await,
            _ => Err(RpcError::method_not_found()),
        };
        outcome.map_err(|e| (json!(i), e))
    }

    /// Ends a session. With `release`, the objects it may release go at once; the others it
    /// only used lose its reference, and go only when nobody else references them.
    pub(super) async fn close_session(&mut self, session: &str, release: bool) {
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

    /// One garbage-collection pass.
    async fn collect(&mut self) {
        let mut dead = Vec::new();
        for (id, s) in self.sessions.iter_mut() {
            let open = s.sinks.iter().any(|(_, tx)| !tx.is_closed());
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
