//! RelayEndpoint (a Sori extension): one pipeline's end of a link to a pipeline on another
//! media node, so that a room spans two nodes (cascading).
//!
//! Two elements make a link: one made without a `uri` waits; the other, made with
//! `uri` = `ws(s)://<first node's control API>/<path>/relay?element=<the first's id>` (and the
//! control API's `access_token` when it has one), dials it. Once linked, every track
//! published in either pipeline crosses to the other once (whatever the number of its
//! receivers there), packets and keyframe requests included; nothing else does. What crossed
//! comes out of the element: `connect(sink, sourceMediaDescription = <a publisher's stream id,
//! as getStreamId gave it on its node>, sinkMediaDescription = <any>)` feeds that publisher's
//! tracks to a renegotiating WebRtcEndpoint; `sourceMediaDescription = "default"` feeds all of
//! them. Stream ids are the same on both nodes (ids are unique across media nodes), so a
//! browser maps relayed tracks to their publisher as it maps local ones.
//!
//! A link whose connection breaks while both elements live (a network cut between the nodes,
//! a frame that does not read) is made again: the waiting element waits anew, the dialing one
//! dials again (every [`DIAL_WAIT`], doubling up to [`DIAL_WAIT_MAX`]) until it is released.
//! Meanwhile each side keeps its own node's media; the other's comes back with the link. Each
//! element raises `ConnectionStateChanged` (`CONNECTED`, `DISCONNECTED`) as its link comes
//! and goes.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use sori_net::{Link, LinkEvent, LinkMsg};
use sori_sfu::{MediaKind, PeerId, TrackId};
use tokio::sync::{mpsc, Mutex};
use tokio::task::AbortHandle;

use super::registry::Kind;
use super::Kms;

/// How often each end of a link pings the other, and how long it waits for anything at all
/// (a ping, a pong, a message) before it counts the link as dead.
pub(crate) const LINK_PING: Duration = Duration::from_secs(2);
pub(crate) const LINK_SILENCE: Duration = Duration::from_secs(6);

/// A RelayEndpoint: the other node's tracks it has, and its link's tasks.
pub(crate) struct Relay {
    /// The other node's tracks, imported here: their publisher (on that node), kind, and the
    /// link (its number, [`Relay::link`]) that brought them.
    pub(super) tracks: HashMap<TrackId, (PeerId, MediaKind, u64)>,
    /// The number of its current link (each link made again is the next).
    link: u64,
    /// The link's channels, until the other node dials in (an element made without `uri`).
    waiting: Option<(mpsc::Sender<LinkMsg>, mpsc::Receiver<LinkMsg>)>,
    /// Its tasks (events, dialing or carrying): stopped when it is released.
    tasks: Vec<AbortHandle>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A frame of the connection a link rides on, as [`pump`] sees it.
pub(crate) enum Frame {
    Data(Vec<u8>),
    Ping,
    /// Anything else that arrived (a pong, a text frame): it shows the other end is alive.
    Other,
}

impl Relay {
    /// A new element's link (`link`, from the media core): it dials `uri`, or waits.
    pub(super) fn new(kms: Weak<Mutex<Kms>>, id: String, link: Link, uri: Option<String>) -> Relay {
        let Link {
            from_remote,
            to_remote,
            events,
        } = link;
        let mut tasks =
            vec![tokio::spawn(events_task(kms.clone(), id.clone(), events, 0)).abort_handle()];
        let waiting = match uri {
            Some(uri) => {
                let dialing = dial(kms, id, uri, from_remote, to_remote);
                tasks.push(tokio::spawn(dialing).abort_handle());
                None
            }
            None => Some((from_remote, to_remote)),
        };
        Relay {
            tracks: HashMap::new(),
            link: 0,
            waiting,
            tasks,
        }
    }

    /// The tracks that a link out of it with source description `desc` carries, of `kind`.
    pub(super) fn tracks_for(&self, desc: &str, kind: MediaKind) -> Vec<TrackId> {
        let mut v: Vec<TrackId> = self
            .tracks
            .iter()
            .filter(|(_, (p, k, _))| *k == kind && (desc == "default" || p.to_string() == desc))
            .map(|(t, _)| *t)
            .collect();
        v.sort();
        v
    }
}

impl Kms {
    /// The link channels of the RelayEndpoint `id`, when it waits for the other node to dial
    /// in; the element keeps the task that carries them.
    pub(crate) fn take_waiting(
        &mut self,
        id: &str,
    ) -> Option<(mpsc::Sender<LinkMsg>, mpsc::Receiver<LinkMsg>)> {
        match self.objects.get_mut(id).map(|o| &mut o.kind) {
            Some(Kind::Relay(r)) => r.waiting.take(),
            _ => None,
        }
    }

    /// The link of RelayEndpoint `id` is up (`linked`) or down: its `ConnectionStateChanged`.
    pub(crate) fn relay_linked(&mut self, id: &str, linked: bool) {
        if self.relay_mut(id).is_none() {
            return;
        }
        let (old, new) = if linked {
            ("DISCONNECTED", "CONNECTED")
        } else {
            ("CONNECTED", "DISCONNECTED")
        };
        let data = serde_json::json!({"oldState": old, "newState": new});
        self.emit(id, "ConnectionStateChanged", data);
    }

    /// Keeps `task` (carrying the link of RelayEndpoint `id`) to stop it with the element.
    pub(crate) fn relay_task(&mut self, id: &str, task: AbortHandle) {
        match self.objects.get_mut(id).map(|o| &mut o.kind) {
            Some(Kind::Relay(r)) => r.tasks.push(task),
            _ => task.abort(),
        }
    }

    /// A fresh link for RelayEndpoint `id`, whose link ended while it lives: its events
    /// handled as the first link's; `None` when the element is gone or no link is free.
    fn relink(&mut self, id: &str) -> Option<(mpsc::Sender<LinkMsg>, mpsc::Receiver<LinkMsg>)> {
        let pipeline = self.objects.get(id)?.pipeline.clone()?;
        let Link {
            from_remote,
            to_remote,
            events,
        } = self.media.link(&pipeline)?;
        let kms = self.this.clone();
        let relay = self.relay_mut(id)?;
        relay.link += 1;
        let events = tokio::spawn(events_task(kms, id.to_string(), events, relay.link));
        relay.tasks.retain(|t| !t.is_finished());
        relay.tasks.push(events.abort_handle());
        Some((from_remote, to_remote))
    }

    /// The link of RelayEndpoint `id` (one made without `uri`) ended: it waits anew for the
    /// other node to dial in.
    pub(crate) fn rearm(&mut self, id: &str) {
        if let Some(link) = self.relink(id) {
            if let Some(r) = self.relay_mut(id) {
                r.waiting = Some(link);
            }
        }
    }

    fn relay_mut(&mut self, id: &str) -> Option<&mut Relay> {
        match self.objects.get_mut(id).map(|o| &mut o.kind) {
            Some(Kind::Relay(r)) => Some(r),
            _ => None,
        }
    }
}

/// The other node's tracks as they come and go: the element's pipeline forwards them anew.
async fn events_task(
    kms: Weak<Mutex<Kms>>,
    id: String,
    mut events: mpsc::Receiver<LinkEvent>,
    link: u64,
) {
    loop {
        let event = events.recv().await;
        let Some(kms) = kms.upgrade() else {
            return;
        };
        let mut k = kms.lock().await;
        let Some(relay) = k.relay_mut(&id) else {
            return;
        };
        match &event {
            Some(LinkEvent::Imported(info)) => {
                relay
                    .tracks
                    .insert(info.track, (info.publisher, info.kind, link));
            }
            Some(LinkEvent::Ended(track)) => {
                relay.tracks.remove(track);
            }
            // The link ended: what came through it is gone.
            None => relay.tracks.retain(|_, (_, _, l)| *l != link),
        }
        if let Some(p) = k.objects.get(&id).and_then(|o| o.pipeline.clone()) {
            k.sync_pipeline(&p).await;
        }
        if event.is_none() {
            tracing::info!(object = id, "relay link ended");
            return;
        }
    }
}

/// The first wait before a RelayEndpoint dials again; it doubles after each failure, up to
/// [`DIAL_WAIT_MAX`].
const DIAL_WAIT: Duration = Duration::from_millis(300);
const DIAL_WAIT_MAX: Duration = Duration::from_secs(5);

/// Dials the other node's RelayEndpoint at `uri` and carries the link over the connection;
/// dials again, with a fresh link, whenever the connection ends, while the element lives (the
/// task is stopped with it).
async fn dial(
    kms: Weak<Mutex<Kms>>,
    id: String,
    uri: String,
    from_remote: mpsc::Sender<LinkMsg>,
    to_remote: mpsc::Receiver<LinkMsg>,
) {
    // The URI carries the other node's token: only its address is ever logged.
    let shown = uri.split('?').next().unwrap_or_default().to_string();
    let mut link = Some((from_remote, to_remote));
    let mut wait = DIAL_WAIT;
    let mut attempt = 0u32;
    loop {
        let (from_remote, to_remote) = match link.take() {
            Some(l) => l,
            // The last link ended: a fresh one, unless the element is gone.
            None => {
                let Some(kms) = kms.upgrade() else { return };
                let fresh = kms.lock().await.relink(&id);
                match fresh {
                    Some(l) => l,
                    None => return,
                }
            }
        };
        attempt += 1;
        let connecting = tokio_tungstenite::connect_async_tls_with_config(&uri, None, true, None);
        let socket = match tokio::time::timeout(LINK_SILENCE, connecting).await {
            Ok(Ok((s, _))) => s,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".into(),
                };
                if attempt <= 3 || attempt.is_multiple_of(20) {
                    tracing::warn!(object = id, url = shown, attempt, "relay dial: {why}");
                }
                link = Some((from_remote, to_remote));
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(DIAL_WAIT_MAX);
                continue;
            }
        };
        tracing::info!(object = id, url = shown, attempt, "relay linked");
        (attempt, wait) = (0, DIAL_WAIT);
        let Some(k) = kms.upgrade() else { return };
        k.lock().await.relay_linked(&id, true);
        use tokio_tungstenite::tungstenite::Message;
        let (tx, rx) = socket.split();
        let rx = rx
            .take_while(|m| std::future::ready(matches!(m, Ok(m) if !m.is_close())))
            .map(|m| match m {
                Ok(Message::Binary(b)) => Frame::Data(b.to_vec()),
                _ => Frame::Other,
            });
        let tx = tx.with(|f: Frame| {
            std::future::ready(Ok::<_, tokio_tungstenite::tungstenite::Error>(match f {
                Frame::Data(b) => Message::Binary(b.into()),
                Frame::Ping | Frame::Other => Message::Ping(Default::default()),
            }))
        });
        pump(&id, rx, tx, from_remote, to_remote).await;
        let Some(k) = kms.upgrade() else { return };
        k.lock().await.relay_linked(&id, false);
        drop(k);
        tokio::time::sleep(DIAL_WAIT).await;
    }
}

/// Carries a link over a connection: what arrives is decoded into the link (a frame that
/// does not decode ends it), what the link sends is encoded out; each end pings, and a
/// connection silent for [`LINK_SILENCE`], or that takes nothing for as long, ends the link.
pub(crate) async fn pump<R, T>(
    id: &str,
    rx: R,
    tx: T,
    from_remote: mpsc::Sender<LinkMsg>,
    mut to_remote: mpsc::Receiver<LinkMsg>,
) where
    R: Stream<Item = Frame>,
    T: Sink<Frame>,
{
    let mut rx = std::pin::pin!(rx);
    let mut tx = std::pin::pin!(tx);
    let mut ping = tokio::time::interval(LINK_PING);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        let out = tokio::select! {
            frame = tokio::time::timeout(LINK_SILENCE, rx.next()) => match frame {
                Ok(Some(Frame::Data(bytes))) => match sori_net::link_wire::decode(&bytes, Instant::now()) {
                    Ok(m) => {
                        if from_remote.send(m).await.is_err() {
                            break "the link ended here";
                        }
                        continue;
                    }
                    Err(e) => break if e == sori_net::link_wire::WireError::Short {
                        "a message cut short"
                    } else {
                        "a message that does not read"
                    },
                },
                Ok(Some(Frame::Ping | Frame::Other)) => continue,
                Ok(None) => break "the connection closed",
                Err(_) => break "the other node fell silent",
            },
            m = to_remote.recv() => match m {
                Some(m) => Frame::Data(sori_net::link_wire::encode(&m, Instant::now())),
                None => break "the link ended here",
            },
            _ = ping.tick() => Frame::Ping,
        };
        match tokio::time::timeout(LINK_SILENCE, tx.send(out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break "the connection failed",
            Err(_) => break "the other node takes nothing",
        }
    };
    tracing::info!(object = id, "relay link closed: {why}");
    let _ = tokio::time::timeout(LINK_PING, tx.close()).await;
}
