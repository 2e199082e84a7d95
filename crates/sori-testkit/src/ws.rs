//! A WebSocket client for JSON text frames, as a browser on `/ws` or a Kurento client uses.
//!
//! A task owns the socket: it sends what the test queues and passes every text frame on as
//! JSON, and it keeps reading while the test looks elsewhere, so the server's pings get their
//! pongs. The channel of frames ends when the socket does.
//!
//! Sori numbers its messages to a participant (`seq`): the client checks that the numbers it
//! gets on one socket follow one another, keeps the last one (for a `resume`) and takes the
//! field out, so that tests compare messages as the protocol describes them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Every wait of the client is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// One WebSocket connection.
pub struct Client {
    out: mpsc::UnboundedSender<Message>,
    frames: mpsc::UnboundedReceiver<Value>,
    last_seq: Arc<AtomicU64>,
    pump: tokio::task::JoinHandle<()>,
    sever: tokio::sync::oneshot::Sender<()>,
}

impl Client {
    /// Connects to `url` (`ws://…`); panics if the server refuses.
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .unwrap_or_else(|e| panic!("WebSocket connects to {url}: {e}"));
        let (out, outgoing) = mpsc::unbounded_channel::<Message>();
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let last_seq = Arc::new(AtomicU64::new(0));
        let (sever, severed) = tokio::sync::oneshot::channel();
        let pump = tokio::spawn(pump(ws, outgoing, frames_tx, last_seq.clone(), severed));
        Client {
            out,
            frames,
            last_seq,
            pump,
            sever,
        }
    }

    /// The number (`seq`) of the last numbered message read from the socket so far (0:
    /// none); messages the test has not taken yet count.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::SeqCst)
    }

    /// Queues `message` as a text frame.
    pub fn send(&self, message: Value) {
        self.send_text(message.to_string());
    }

    /// Queues a text frame (a socket that has closed drops it; [`Client::next`] then says so).
    pub fn send_text(&self, text: String) {
        let _ = self.out.send(Message::text(text));
    }

    /// Queues a binary frame.
    pub fn send_binary(&self, bytes: Vec<u8>) {
        let _ = self.out.send(Message::binary(bytes));
    }

    /// The next message, or `None` once the socket has closed; panics after [`WAIT`].
    pub async fn next(&mut self) -> Option<Value> {
        tokio::time::timeout(WAIT, self.frames.recv())
            .await
            .expect("a message or the socket's end within the wait")
    }

    /// The next message on a socket that must stay open.
    pub async fn recv(&mut self) -> Value {
        self.next().await.expect("the socket stays open")
    }

    /// Drops the connection without a close frame, as a network that fails does: the server
    /// gets a TCP reset (not the orderly end a closing browser's system sends).
    pub async fn sever(self) {
        let _ = self.sever.send(());
        let _ = self.pump.await;
    }

    /// Ends the TCP connection in order but without a close frame, as the system of a browser
    /// that crashed or was killed does.
    pub async fn vanish(self) {
        self.pump.abort();
        let _ = self.pump.await;
    }

    /// Closes the socket and waits until the server has closed it too; returns what arrived
    /// meanwhile.
    pub async fn close(self) -> Vec<Value> {
        let Client {
            out, mut frames, ..
        } = self;
        drop(out);
        let mut rest = Vec::new();
        while let Some(v) = tokio::time::timeout(WAIT, frames.recv())
            .await
            .expect("the socket closes within the wait")
        {
            rest.push(v);
        }
        rest
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The socket's task: queued frames out, text frames in as JSON, until either side closes.
async fn pump(
    mut ws: Socket,
    mut outgoing: mpsc::UnboundedReceiver<Message>,
    frames: mpsc::UnboundedSender<Value>,
    last_seq: Arc<AtomicU64>,
    mut severed: tokio::sync::oneshot::Receiver<()>,
) {
    let mut closing = false;
    // Until the client is severed or dropped (a receiver that completed may not be polled
    // again).
    let mut may_sever = true;
    loop {
        tokio::select! {
            r = &mut severed, if may_sever => {
                may_sever = false;
                if r.is_ok() {
                    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_ref() {
                        // Closing with a zero linger resets the connection.
                        let _ = tcp.set_zero_linger();
                    }
                    return;
                }
            }
            m = outgoing.recv(), if !closing => match m {
                Some(m) => {
                    if ws.send(m).await.is_err() {
                        break;
                    }
                }
                // The test is done with this client: close, and read to the end.
                None => {
                    closing = true;
                    let _ = ws.close(None).await;
                }
            },
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let mut v: Value = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("the server sent JSON: {e}: {t}"));
                    if let Some(seq) = v.as_object_mut().and_then(|o| o.remove("seq")) {
                        let seq = seq.as_u64().expect("seq is a number");
                        let last = last_seq.swap(seq, Ordering::SeqCst);
                        // A socket's first message may continue an earlier socket's.
                        assert!(last == 0 || seq == last + 1, "message {seq} after {last}: {t}");
                    }
                    let _ = frames.send(v);
                }
                Some(Ok(_)) => {}
                // A closed or reset socket ends the stream.
                Some(Err(_)) | None => break,
            },
        }
    }
}
