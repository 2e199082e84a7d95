//! A stand-in media server speaking just enough of the control API for `RemoteMedia`, which a
//! test can cut off, restart (forgetting every session) or freeze.
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio_tungstenite::tungstenite::Message;

/// What the stub knows, and what it was asked.
#[derive(Default)]
pub struct State {
    pub sessions: HashSet<String>,
    pub objects: HashSet<String>,
    next: u64,
    /// Every request, in order: (connection number, method, params).
    pub requests: Vec<(u64, String, Value)>,
    /// WebSocket connections accepted so far.
    pub connections: u64,
    /// TCP connections accepted so far (a frozen stub accepts them, but no handshake).
    pub accepted: u64,
}

pub struct Stub {
    pub url: String,
    addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    frozen: watch::Sender<bool>,
    kill: broadcast::Sender<()>,
    /// Replies to `processOffer` of the SDP "hold" wait for this.
    pub release_held: Arc<Notify>,
    accepting: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Stub {
    pub async fn start() -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stub = Stub {
            url: format!("ws://{addr}/kurento"),
            addr,
            state: Arc::default(),
            frozen: watch::channel(false).0,
            kill: broadcast::channel(4).0,
            release_held: Arc::default(),
            accepting: Mutex::new(None),
        };
        stub.accept_on(listener);
        stub
    }

    fn accept_on(&self, listener: TcpListener) {
        let (state, frozen, kill, held) = (
            self.state.clone(),
            self.frozen.subscribe(),
            self.kill.clone(),
            self.release_held.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                state.lock().unwrap().accepted += 1;
                let conn = Conn {
                    state: state.clone(),
                    frozen: frozen.clone(),
                    kill: kill.subscribe(),
                    held: held.clone(),
                };
                tokio::spawn(conn.run(tcp));
            }
        });
        *self.accepting.lock().unwrap() = Some(task);
    }

    /// Every connection is dropped (no close frame), and new ones are refused until
    /// [`Stub::restore`].
    pub fn cut(&self) {
        if let Some(t) = self.accepting.lock().unwrap().take() {
            t.abort();
        }
        let _ = self.kill.send(());
    }

    /// Accepts connections again, on the same port.
    pub async fn restore(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.accept_on(listener);
    }

    /// Drops every connection and forgets every session and object, as a restarted media
    /// server would.
    pub fn restart(&self) {
        {
            let mut s = self.state.lock().unwrap();
            s.sessions.clear();
            s.objects.clear();
        }
        let _ = self.kill.send(());
    }

    /// Stops reading and answering anything, pings and handshakes included (a process
    /// stopped with SIGSTOP: the kernel still accepts connections).
    pub fn freeze(&self, on: bool) {
        self.frozen.send_replace(on);
    }

    /// The methods asked so far (with `create`'s type and `invoke`'s operation).
    pub fn methods(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|(_, m, p)| match m.as_str() {
                "create" => format!("create {}", p["type"].as_str().unwrap_or("")),
                "invoke" => format!("invoke {}", p["operation"].as_str().unwrap_or("")),
                _ => m.clone(),
            })
            .collect()
    }

    /// The `connect` requests so far: the connection each came on, and the session named.
    pub fn connects(&self) -> Vec<(u64, Value)> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(_, m, _)| m == "connect")
            .map(|(n, _, p)| (*n, p["sessionId"].clone()))
            .collect()
    }

    pub fn accepted(&self) -> u64 {
        self.state.lock().unwrap().accepted
    }

    pub fn connections(&self) -> u64 {
        self.state.lock().unwrap().connections
    }
}

struct Conn {
    state: Arc<Mutex<State>>,
    frozen: watch::Receiver<bool>,
    kill: broadcast::Receiver<()>,
    held: Arc<Notify>,
}

impl Conn {
    async fn run(mut self, tcp: TcpStream) {
        if !self.thawed().await {
            return;
        }
        let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        let number = {
            let mut s = self.state.lock().unwrap();
            s.connections += 1;
            s.connections
        };
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        let writer = tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
        });
        let mut session: Option<String> = None;
        loop {
            if !self.thawed().await {
                break;
            }
            let frame = tokio::select! {
                _ = self.kill.recv() => break,
                _ = self.frozen.changed() => continue,
                f = stream.next() => f,
            };
            let text = match frame {
                Some(Ok(Message::Text(t))) => t.as_str().to_string(),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            };
            let req: Value = serde_json::from_str(&text).unwrap();
            let reply = self.handle(number, &req, &mut session);
            if req["params"]["operationParams"]["offer"] == "hold" {
                let (out, held) = (out.clone(), self.held.clone());
                tokio::spawn(async move {
                    held.notified().await;
                    let _ = out.send(reply.to_string());
                });
            } else if out.send(reply.to_string()).is_err() {
                break;
            }
        }
        writer.abort();
    }

    /// Waits while frozen; false when killed meanwhile.
    async fn thawed(&mut self) -> bool {
        while *self.frozen.borrow_and_update() {
            tokio::select! {
                _ = self.kill.recv() => return false,
                r = self.frozen.changed() => if r.is_err() { return false },
            }
        }
        true
    }

    fn handle(&self, number: u64, req: &Value, session: &mut Option<String>) -> Value {
        let id = req["id"].clone();
        let method = req["method"].as_str().unwrap_or("").to_string();
        let params = req["params"].clone();
        let mut s = self.state.lock().unwrap();
        s.requests.push((number, method.clone(), params.clone()));
        let ok = |result: Value| json!({"jsonrpc": "2.0", "id": id, "result": result});
        let err = |code: i64, message: &str| json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
        if method == "ping" {
            let mut r = json!({"value": "pong"});
            if let Some(sess) = session {
                r["sessionId"] = json!(sess);
            }
            return ok(r);
        }
        if method == "connect" {
            let asked = params["sessionId"].as_str().unwrap_or_default().to_string();
            if !s.sessions.contains(&asked) {
                return err(40007, "Invalid session");
            }
            *session = Some(asked.clone());
            return ok(json!({"sessionId": asked, "serverId": "stub"}));
        }
        let sess = match params["sessionId"].as_str() {
            Some(named) => named.to_string(),
            None => session.clone().unwrap_or_else(|| {
                s.next += 1;
                format!("session-{}", s.next)
            }),
        };
        s.sessions.insert(sess.clone());
        *session = Some(sess.clone());
        let known = |o: &Value| o.as_str().is_some_and(|o| s.objects.contains(o));
        let value = match method.as_str() {
            "create" => {
                let parent = &params["constructorParams"]["mediaPipeline"];
                if !parent.is_null() && !known(parent) {
                    return err(40101, "Object not found");
                }
                s.next += 1;
                let obj = format!("obj-{}", s.next);
                s.objects.insert(obj.clone());
                json!(obj)
            }
            "invoke" | "subscribe" if !known(&params["object"]) => {
                return err(40101, "Object not found");
            }
            "invoke" => match params["operation"].as_str() {
                Some("processOffer") => json!("v=0 answer"),
                Some("getStreamId") => json!(format!("stream-{}", params["object"])),
                _ => Value::Null,
            },
            "subscribe" => json!("subscription"),
            "release" => {
                if let Some(o) = params["object"].as_str() {
                    s.objects.remove(o);
                }
                Value::Null
            }
            _ => return err(-32601, "Method not found"),
        };
        ok(json!({"value": value, "sessionId": sess}))
    }
}
