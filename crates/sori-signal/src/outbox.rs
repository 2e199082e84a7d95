//! What the server sends one participant: a bounded queue of serialised messages toward its
//! current socket (a broadcast is serialised once and shared by every recipient), the recent
//! history a resumed socket is replayed from, and a way to end the participant from elsewhere
//! (replaced by a newer socket, removed by a moderator, too slow a reader).
//!
//! Every message gets the participant's next sequence number (`seq`, from 1), written into
//! the frame as it goes on the wire. A socket that drops leaves the outbox detached: messages
//! then only go to the history. A new socket presenting the last `seq` it saw gets the
//! messages after it ([`Outbox::attach`]), in order, then the live ones.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};

use crate::protocol::ServerMessage;

/// One message as it goes on the wire.
pub(crate) type Frame = Arc<str>;

/// Messages kept for a resume, at most this many …
const HISTORY_FRAMES: usize = 512;
/// … and this many bytes (frames shared with other recipients count in full).
const HISTORY_BYTES: usize = 1 << 20;

/// Serialises `message` once.
pub(crate) fn frame(message: &ServerMessage) -> Frame {
    // Serialising our own types cannot fail.
    serde_json::to_string(message)
        .expect("server messages serialize")
        .into()
}

/// A frame on its way to the socket, with its sequence number (`None`: a reply to this
/// socket only, such as `pong` or `resumed`).
pub(crate) struct Out {
    pub seq: Option<u64>,
    pub frame: Frame,
    /// Instead of a message: a close frame with this code, the socket's last frame.
    pub close: Option<u16>,
}

impl Out {
    /// The text written to the socket: the frame with `"seq":N` as its first field.
    pub(crate) fn text(&self) -> String {
        match self.seq {
            Some(seq) => match self.frame.strip_prefix('{') {
                Some(rest) if rest.starts_with('}') => format!("{{\"seq\":{seq}}}"),
                Some(rest) => format!("{{\"seq\":{seq},{rest}"),
                None => self.frame.to_string(),
            },
            None => self.frame.to_string(),
        }
    }
}

/// The sending half of a participant's messages; cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbox {
    inner: Arc<Mutex<Inner>>,
    end: Arc<End>,
    /// The last client message number (`seq`) processed, for a session server that takes the
    /// participant over (see [`crate::bus`]).
    received: Arc<std::sync::atomic::AtomicU64>,
}

struct Inner {
    /// The current socket's queue; `None` while no socket is attached.
    tx: Option<mpsc::Sender<Out>>,
    /// Whether messages are numbered and kept: from the participant's `joined` on (a socket
    /// that has not joined gets refusals and errors only, unnumbered).
    numbered: bool,
    /// The sequence number of the next message.
    next: u64,
    history: VecDeque<(u64, Frame)>,
    history_bytes: usize,
    /// Numbers continue from the client's at the first attach (a participant restored on
    /// another session server, which cannot know how far its predecessor had come).
    rebase: bool,
}

/// Why and when a participant's connection is to end.
#[derive(Default)]
pub(crate) struct End {
    reason: Mutex<Option<String>>,
    notify: Notify,
}

impl End {
    /// Resolves once [`Outbox::close`] was called (at once if it already was).
    pub(crate) async fn wait(&self) {
        if self.reason().is_some() {
            return;
        }
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

/// Why a socket could not take over an outbox.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AttachError {
    /// Messages after the client's last one are no longer kept.
    Gap,
    /// The client claims a message that was never sent.
    Ahead,
}

impl Outbox {
    /// An outbox whose socket queue holds at most `capacity` messages, and that queue's
    /// receiving end.
    #[cfg(test)]
    pub(crate) fn new(capacity: usize) -> (Self, mpsc::Receiver<Out>) {
        let (tx, rx) = Self::socket(capacity);
        (Self::with_socket(tx), rx)
    }

    /// An outbox toward the socket queue `tx`.
    pub(crate) fn with_socket(tx: mpsc::Sender<Out>) -> Self {
        let inner = Inner {
            tx: Some(tx),
            numbered: false,
            next: 1,
            history: VecDeque::new(),
            history_bytes: 0,
            rebase: false,
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
            end: Arc::new(End::default()),
            received: Arc::default(),
        }
    }

    /// The outbox of a participant restored from another session server's snapshot, without
    /// a socket: messages are kept, and numbered after the client's last one once it resumes.
    pub(crate) fn restored(received: u64) -> Self {
        let out = Self::detached();
        {
            let mut inner = out.inner();
            inner.numbered = true;
            inner.rebase = true;
        }
        out.set_received(received);
        out
    }

    /// Notes that client message `seq` was processed.
    pub(crate) fn set_received(&self, seq: u64) {
        self.received
            .fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
    }

    /// The last client message number processed.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An outbox of a participant without a socket (a WHIP publisher): what the room says to
    /// it goes nowhere, and nothing is kept; its end signal still says when it was removed.
    pub(crate) fn detached() -> Self {
        let out = Self::with_socket(mpsc::channel(1).0);
        out.detach();
        out
    }

    /// A socket queue of `capacity` messages, for [`Outbox::attach`].
    pub(crate) fn socket(capacity: usize) -> (mpsc::Sender<Out>, mpsc::Receiver<Out>) {
        mpsc::channel(capacity.max(1))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The end signal of this participant.
    pub(crate) fn end(&self) -> Arc<End> {
        self.end.clone()
    }

    /// Queues `message`; false when the participant's connection was ended.
    pub(crate) fn send(&self, message: &ServerMessage) -> bool {
        self.push(frame(message))
    }

    /// Queues a serialised message with the next sequence number. A client whose queue is
    /// full is not reading: its connection is ended rather than letting the queue grow.
    pub(crate) fn push(&self, frame: Frame) -> bool {
        if self.end.reason().is_some() {
            return false;
        }
        let mut inner = self.inner();
        if !inner.numbered {
            drop(inner);
            self.push_direct(frame);
            return true;
        }
        let seq = inner.next;
        inner.next += 1;
        inner.history_bytes += frame.len();
        inner.history.push_back((seq, frame.clone()));
        while inner.history.len() > HISTORY_FRAMES || inner.history_bytes > HISTORY_BYTES {
            let Some((_, old)) = inner.history.pop_front() else {
                break;
            };
            inner.history_bytes -= old.len();
        }
        let Some(tx) = &inner.tx else {
            // No socket now: the history keeps it for a resume.
            return true;
        };
        let full = match tx.try_send(Out {
            seq: Some(seq),
            frame,
            close: None,
        }) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Full(_)) => tx.max_capacity(),
            // The socket's writer is gone; the history keeps it.
            Err(mpsc::error::TrySendError::Closed(_)) => return true,
        };
        drop(inner);
        self.close(format!(
            "the client reads too slowly: {full} messages were waiting"
        ));
        false
    }

    /// Numbers and keeps every message from now on (the participant joined).
    pub(crate) fn start_numbering(&self) {
        self.inner().numbered = true;
    }

    /// Queues `message` for the current socket only: no sequence number, not replayed.
    pub(crate) fn send_direct(&self, message: &ServerMessage) {
        self.push_direct(frame(message));
    }

    fn push_direct(&self, frame: Frame) {
        if let Some(tx) = &self.inner().tx {
            let _ = tx.try_send(Out {
                seq: None,
                frame,
                close: None,
            });
        }
    }

    /// Ends the current socket with a close frame of `code` after what is queued for it.
    pub(crate) fn close_socket(&self, code: u16) {
        if let Some(tx) = &self.inner().tx {
            let _ = tx.try_send(Out {
                seq: None,
                frame: Frame::from(""),
                close: Some(code),
            });
        }
    }

    /// The socket is gone: messages go to the history only.
    pub(crate) fn detach(&self) {
        self.inner().tx = None;
    }

    /// A new socket takes over: `first` (unsequenced), then every message after `last_seen`,
    /// then the live ones.
    pub(crate) fn attach(
        &self,
        tx: mpsc::Sender<Out>,
        last_seen: u64,
        first: &ServerMessage,
    ) -> Result<(), AttachError> {
        let mut inner = self.inner();
        if std::mem::take(&mut inner.rebase) {
            for (seq, _) in inner.history.iter_mut() {
                *seq += last_seen;
            }
            inner.next += last_seen;
        }
        if last_seen >= inner.next {
            return Err(AttachError::Ahead);
        }
        let oldest = inner.history.front().map_or(inner.next, |(seq, _)| *seq);
        if last_seen + 1 < oldest {
            return Err(AttachError::Gap);
        }
        let mut queue = vec![Out {
            seq: None,
            frame: frame(first),
            close: None,
        }];
        queue.extend(
            inner
                .history
                .iter()
                .filter(|(seq, _)| *seq > last_seen)
                .map(|(seq, f)| Out {
                    seq: Some(*seq),
                    frame: f.clone(),
                    close: None,
                }),
        );
        for out in queue {
            if tx.try_send(out).is_err() {
                drop(inner);
                self.close("the client reads too slowly: its resume did not fit the queue");
                return Err(AttachError::Gap);
            }
        }
        inner.tx = Some(tx);
        Ok(())
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

    fn texts(rx: &mut mpsc::Receiver<Out>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(o) = rx.try_recv() {
            out.push(o.text());
        }
        out
    }

    #[tokio::test]
    async fn a_full_queue_ends_the_connection_instead_of_growing() {
        let (out, mut rx) = Outbox::new(3);
        out.start_numbering();
        let end = out.end();
        for _ in 0..3 {
            assert!(out.send(&ServerMessage::Pong));
        }
        assert!(!out.send(&ServerMessage::Pong));
        end.wait().await;
        assert!(end.reason().unwrap().contains("too slowly"));
        assert_eq!(
            rx.recv().await.unwrap().text(),
            r#"{"seq":1,"type":"pong"}"#
        );
        out.close("later reasons are ignored");
        assert!(end.reason().unwrap().contains("too slowly"));
    }

    #[test]
    fn a_new_socket_gets_what_the_old_one_missed_then_the_live_messages() {
        let (out, mut rx) = Outbox::new(16);
        // Before the join: nothing numbered, nothing kept.
        out.send(&ServerMessage::Pong);
        assert_eq!(texts(&mut rx), [r#"{"type":"pong"}"#]);
        out.start_numbering();
        for _ in 0..3 {
            out.send(&ServerMessage::Pong);
        }
        assert_eq!(texts(&mut rx).len(), 3);
        // The client saw 1 and 2; 3 was lost with the old socket; 4 came while detached.
        out.detach();
        out.send(&ServerMessage::Pong);
        let (tx, mut rx2) = Outbox::socket(16);
        out.attach(tx, 2, &ServerMessage::Pong).unwrap();
        out.send(&ServerMessage::Pong);
        assert_eq!(
            texts(&mut rx2),
            [
                r#"{"type":"pong"}"#,
                r#"{"seq":3,"type":"pong"}"#,
                r#"{"seq":4,"type":"pong"}"#,
                r#"{"seq":5,"type":"pong"}"#,
            ]
        );
        // Direct replies carry no number and are not replayed.
        out.send_direct(&ServerMessage::Pong);
        assert_eq!(texts(&mut rx2), [r#"{"type":"pong"}"#]);
        let (tx, mut rx3) = Outbox::socket(16);
        out.attach(tx, 5, &ServerMessage::Pong).unwrap();
        assert_eq!(texts(&mut rx3).len(), 1);
    }

    #[test]
    fn a_restored_outbox_numbers_on_from_the_clients_last_message() {
        let out = Outbox::restored(7);
        assert_eq!(out.received(), 7);
        // Kept while nobody is attached (the others talk before the client is back).
        out.send(&ServerMessage::Pong);
        out.send(&ServerMessage::Pong);
        let (tx, mut rx) = Outbox::socket(16);
        out.attach(tx, 40, &ServerMessage::Pong).unwrap();
        out.send(&ServerMessage::Pong);
        assert_eq!(
            texts(&mut rx),
            [
                r#"{"type":"pong"}"#,
                r#"{"seq":41,"type":"pong"}"#,
                r#"{"seq":42,"type":"pong"}"#,
                r#"{"seq":43,"type":"pong"}"#,
            ]
        );
        // Once only: a later resume is checked as any other.
        out.detach();
        let (tx, _rx) = Outbox::socket(16);
        assert_eq!(
            out.attach(tx, 50, &ServerMessage::Pong),
            Err(AttachError::Ahead)
        );
    }

    #[test]
    fn a_resume_from_before_the_history_or_beyond_the_last_message_is_refused() {
        let (out, _rx) = Outbox::new(HISTORY_FRAMES * 2);
        out.start_numbering();
        for _ in 0..HISTORY_FRAMES + 10 {
            out.send(&ServerMessage::Pong);
        }
        let (tx, _r) = Outbox::socket(HISTORY_FRAMES * 2);
        assert_eq!(
            out.attach(tx.clone(), 5, &ServerMessage::Pong),
            Err(AttachError::Gap)
        );
        let last = (HISTORY_FRAMES + 10) as u64;
        assert_eq!(
            out.attach(tx.clone(), last + 1, &ServerMessage::Pong),
            Err(AttachError::Ahead)
        );
        // The oldest kept message is 11: a client that saw 10 misses nothing.
        assert!(out.attach(tx, 10, &ServerMessage::Pong).is_ok());
    }

    #[test]
    fn the_history_is_bounded_in_bytes() {
        let (out, _rx) = Outbox::new(8);
        out.start_numbering();
        out.detach();
        let big = ServerMessage::Error {
            code: crate::protocol::ErrorCode::BadMessage,
            message: "x".repeat(60_000),
            re: None,
        };
        for _ in 0..100 {
            out.send(&big);
        }
        let inner = out.inner();
        assert!(inner.history_bytes <= HISTORY_BYTES);
        assert_eq!(inner.history.len(), HISTORY_BYTES / frame(&big).len());
    }
}
