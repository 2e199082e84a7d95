//! What the server sends one socket: a bounded queue of serialised messages (a broadcast is
//! serialised once and shared by every recipient), and a way to end the connection from
//! elsewhere (replaced by a newer socket, removed by a moderator, too slow a reader).

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};

use crate::protocol::ServerMessage;

/// One message as it goes on the wire.
pub(crate) type Frame = Arc<str>;

/// Serialises `message` once.
pub(crate) fn frame(message: &ServerMessage) -> Frame {
    // Serialising our own types cannot fail.
    serde_json::to_string(message)
        .expect("server messages serialize")
        .into()
}

/// The sending half of a socket; cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Frame>,
    end: Arc<End>,
}

/// Why and when a connection is to end.
#[derive(Default)]
pub(crate) struct End {
    reason: Mutex<Option<String>>,
    notify: Notify,
}

impl End {
    /// Resolves once [`Outbox::close`] was called (at once if it already was).
    pub(crate) async fn wait(&self) {
        self.notify.notified().await;
    }

    /// Why the connection was ended, if it was.
    pub(crate) fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Outbox {
    /// An outbox holding at most `capacity` messages, its receiving end and its end signal.
    pub(crate) fn new(capacity: usize) -> (Self, mpsc::Receiver<Frame>, Arc<End>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let end = Arc::new(End::default());
        (
            Self {
                tx,
                end: end.clone(),
            },
            rx,
            end,
        )
    }

    /// Queues `message`; false when the connection is gone or was ended for being too slow.
    pub(crate) fn send(&self, message: &ServerMessage) -> bool {
        self.push(frame(message))
    }

    /// Queues a serialised message. A client whose queue is full is not reading: its
    /// connection is ended rather than letting the queue grow.
    pub(crate) fn push(&self, frame: Frame) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(format!(
                    "the client reads too slowly: {} messages were waiting",
                    self.tx.max_capacity()
                ));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Ends the connection (the first reason given is kept).
    pub(crate) fn close(&self, reason: impl Into<String>) {
        let mut r = self.end.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason.into());
            // A stored permit: the connection sees it even if it is not waiting right now.
            self.end.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_ends_the_connection_instead_of_growing() {
        let (out, mut rx, end) = Outbox::new(3);
        for _ in 0..3 {
            assert!(out.send(&ServerMessage::Pong));
        }
        assert!(!out.send(&ServerMessage::Pong));
        end.wait().await;
        assert!(end.reason().unwrap().contains("too slowly"));
        assert_eq!(&*rx.recv().await.unwrap(), r#"{"type":"pong"}"#);
        out.close("later reasons are ignored");
        assert!(end.reason().unwrap().contains("too slowly"));
    }
}
