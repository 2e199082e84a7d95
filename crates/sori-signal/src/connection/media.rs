//! SFU rooms: a participant's offers, answers and views go to the media server, whose answers,
//! offers, news of published tracks, layer requests and receiver stats come back here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sori_media::sori_sfu::{MediaKind, Priority, RemoveReason};
use sori_media::PeerSignal;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::{Budget, Connection};
use crate::hub::{Hub, Me};
use crate::outbox::Outbox;
use crate::protocol::{self, ErrorCode, RoomMode, ServerMessage, TrackRole, ViewEntry};
use crate::{recording, BackendError, MediaBackend, PeerRef};

/// How often a participant whose media is connected gets `stats`.
pub(crate) const STATS_EVERY: Duration = Duration::from_secs(2);

impl Connection {
    pub(super) async fn media_offer(
        &mut self,
        me: &Me,
        sdp: &str,
        roles: Option<&BTreeMap<String, TrackRole>>,
    ) {
        if !self.signal.hub().uses_sfu(me) {
            self.error(
                ErrorCode::BadTarget,
                "this room is peer-to-peer: address offers to a participant with \"to\"",
            );
            return;
        }
        let media = self.signal.media.clone();
        let fingerprint = dtls_fingerprint(sdp);
        // Another DTLS fingerprint: the browser made a new peer connection (it was sent
        // round after a failed offer, or its media server connection was lost meanwhile),
        // which gets new media; the old one goes.
        let new_pc = self.media_fingerprint.is_some() && fingerprint != self.media_fingerprint;
        if self.media_retry.take_rejoin() || new_pc {
            if let Some(peer) = self.media_peer.take() {
                media.leave(&peer).await;
            }
        }
        let mut reply = None;
        // A renegotiation of media the participant has (an ICE restart, a new track).
        let renegotiation = self.media_peer.is_some();
        if let Some(peer) = &self.media_peer {
            self.signal.hub().offered(me, sdp, roles, false);
            match media.offer(peer, sdp).await {
                // The media server dropped this peer (see forward_media_signals): start anew.
                Err(BackendError::UnknownPeer) => self.media_peer = None,
                other => reply = Some(other),
            }
        }
        if reply.is_none() {
            // A new media connection: its tracks are all new.
            self.signal.hub().offered(me, sdp, roles, true);
        }
        let reply = match reply {
            Some(r) => r,
            None => match media.join(&me.room, sdp, self.grants.subscribe).await {
                Ok(joined) => {
                    let muted = self.signal.hub().set_media(
                        me,
                        joined.stream_id.clone(),
                        joined.peer.clone(),
                    );
                    for (kind, on) in [
                        (MediaKind::Audio, muted.audio),
                        (MediaKind::Video, muted.video),
                    ] {
                        if on {
                            if let Err(e) = media.set_muted(&joined.peer, kind, true).await {
                                tracing::warn!("server mute not applied: {e}");
                            }
                        }
                    }
                    self.media_peer = Some(joined.peer.clone());
                    self.media_fingerprint = fingerprint;
                    self.media_retry.succeeded();
                    self.send(ServerMessage::Answer {
                        sdp: joined.answer,
                        from: None,
                        roles: None,
                        re: self.handling,
                    });
                    let name = self.signal.hub().name_of(me).unwrap_or_default();
                    let forward = Forwarder {
                        hub: self.signal.hub.clone(),
                        out: self.out.clone(),
                        recordings: self.signal.recordings.clone(),
                        media: media.clone(),
                        peer: joined.peer.clone(),
                        me: me.clone(),
                        name,
                    };
                    tokio::spawn(forward.run(joined.signals));
                    return;
                }
                Err(e) => Err(e),
            },
        };
        match reply {
            Ok(answer) => self.send(ServerMessage::Answer {
                sdp: answer,
                from: None,
                roles: None,
                re: self.handling,
            }),
            Err(e) => {
                // A failed join is made again once the media server answers. A failed
                // renegotiation is not: the media it was for may well have outlived the outage
                // (the browser offers again, e.g. its next ICE restart), and media the media
                // server lost is reported as removed, which sends the browser round anyway.
                let unanswered = matches!(e, BackendError::Unreachable(_));
                let retry = (unanswered || matches!(e, BackendError::Failed(_))) && !renegotiation;
                self.media_error(e);
                if retry {
                    self.media_retry.start(media, self.out.clone(), unanswered);
                }
            }
        }
    }

    pub(super) async fn media_answer(&mut self, sdp: &str) {
        let Some(peer) = &self.media_peer else {
            self.error(
                ErrorCode::BadTarget,
                "no offer from the media server is waiting for an answer",
            );
            return;
        };
        if let Err(e) = self.signal.media.answer(peer, sdp).await {
            self.media_error(e);
        }
    }

    /// A `view`: checked whole (`bad-message` and nothing applied when any entry is bad), then
    /// each track's view goes to the media server. Ignored without a media connection (P2P
    /// rooms); a track the media server does not send this participant is skipped.
    pub(super) async fn view(&mut self, tracks: &BTreeMap<String, ViewEntry>) {
        if !self.within(Budget::Views) {
            return;
        }
        let views = match protocol::parse_views(tracks) {
            Ok(v) => v,
            Err(why) => {
                self.error(ErrorCode::BadMessage, &why);
                return;
            }
        };
        let Some(peer) = &self.media_peer else {
            return;
        };
        for (track, view) in views {
            if let Err(e) = self.signal.media.set_view(peer, track, view).await {
                tracing::debug!(%peer, %track, "view not applied: {e}");
            }
        }
    }

    fn media_error(&self, e: BackendError) {
        self.error(ErrorCode::MediaError, &e.to_string());
    }
}

/// The `a=fingerprint` of a session description (its first, at session or media level).
fn dtls_fingerprint(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=fingerprint:"))
        .map(str::to_string)
}

/// How long a participant whose offer failed is watched for the media server's return.
const RETRY_FOR: Duration = Duration::from_secs(600);

/// How often the media server's health is asked meanwhile, and how long each ask may take.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// A health check answered within this was answered by a media server that was up.
const ANSWERS_AT_ONCE: Duration = Duration::from_millis(500);
const HEALTH_WITHIN: Duration = Duration::from_secs(2);

/// An offer that failed while the media server could not be reached (its connection down,
/// or it did not answer in time) is made again once the media server answers: the browser
/// is told (`mode`) to connect its media anew. Of an offer that failed otherwise, a media
/// server that answers at once refused it for a reason of its own, and the browser is not sent
/// round again.
#[derive(Default)]
pub(super) struct Retry {
    waiting: Option<tokio::task::JoinHandle<()>>,
    /// Media joined since the wait started: nothing to retry.
    joined: Arc<AtomicU64>,
    /// The browser was told to connect its media anew: its next offer joins anew.
    rejoin: Arc<AtomicBool>,
}

impl Retry {
    /// `unanswered`: the offer failed for want of an answer (not a refusal), so it is made
    /// again whenever the media server answers, even at once (it may have thawed meanwhile).
    fn start(&mut self, media: Arc<dyn MediaBackend>, out: Outbox, unanswered: bool) {
        if self.waiting.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        let (joined, rejoin) = (self.joined.clone(), self.rejoin.clone());
        let at_start = joined.load(Ordering::SeqCst);
        let healthy = move || {
            let media = media.clone();
            async move {
                matches!(
                    tokio::time::timeout(HEALTH_WITHIN, media.health()).await,
                    Ok(Ok(()))
                )
            }
        };
        self.waiting = Some(tokio::spawn(async move {
            // A media server that answers at once was up when the offer failed: it refused it.
            // One that answers only later came back meanwhile (a frozen one thawing while this
            // check waited): the offer is made again.
            let asked = Instant::now();
            if !unanswered && healthy().await && asked.elapsed() < ANSWERS_AT_ONCE {
                return;
            }
            tracing::info!("media server unreachable: the offer is made again once it answers");
            let end = out.end();
            let back = async {
                // Asked already (a refusal's check above), or not yet (an offer unanswered).
                let mut first = unanswered;
                loop {
                    if !std::mem::take(&mut first) {
                        tokio::time::sleep(RETRY_EVERY).await;
                    }
                    if healthy().await {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = end.wait() => return,
                r = tokio::time::timeout(RETRY_FOR, back) => if r.is_err() { return },
            }
            if joined.load(Ordering::SeqCst) == at_start {
                rejoin.store(true, Ordering::SeqCst);
                out.send(&ServerMessage::Mode {
                    mode: RoomMode::Sfu,
                });
            }
        }));
    }

    /// Whether the browser was sent round again since the last call.
    fn take_rejoin(&self) -> bool {
        self.rejoin.swap(false, Ordering::SeqCst)
    }

    /// The participant's media joined: a wait under way has nothing left to do.
    fn succeeded(&self) {
        self.joined.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Retry {
    fn drop(&mut self) {
        if let Some(w) = self.waiting.take() {
            w.abort();
        }
    }
}

/// Passes what the media server says about this participant to its socket (offers, layers
/// to send) and the hub (published tracks), and sends `stats` every [`STATS_EVERY`] while its
/// media is connected.
pub(crate) struct Forwarder {
    pub(crate) hub: Arc<Mutex<Hub>>,
    pub(crate) out: Outbox,
    pub(crate) recordings: Arc<recording::Recordings>,
    pub(crate) media: Arc<dyn MediaBackend>,
    pub(crate) peer: PeerRef,
    pub(crate) me: Me,
    pub(crate) name: String,
}

impl Forwarder {
    pub(crate) async fn run(self, mut signals: mpsc::UnboundedReceiver<PeerSignal>) {
        let mut stats: Option<Interval> = None;
        loop {
            let signal = tokio::select! {
                signal = signals.recv() => match signal {
                    Some(s) => s,
                    None => break,
                },
                _ = next_tick(&mut stats) => {
                    if !self.send_stats().await {
                        break;
                    }
                    continue;
                }
            };
            if matches!(signal, PeerSignal::Connected) && stats.is_none() {
                let mut every = tokio::time::interval_at(Instant::now() + STATS_EVERY, STATS_EVERY);
                every.set_missed_tick_behavior(MissedTickBehavior::Delay);
                stats = Some(every);
            }
            if !self.forward(signal).await {
                break;
            }
        }
    }

    /// Acts on one signal; false when this participant's media or socket is gone.
    async fn forward(&self, signal: PeerSignal) -> bool {
        match signal {
            PeerSignal::Offer(sdp) => self.out.send(&ServerMessage::Offer {
                sdp,
                from: None,
                roles: None,
            }),
            PeerSignal::Layers { mid, active } => {
                self.out.send(&ServerMessage::layers(mid, active))
            }
            PeerSignal::Published { track, kind } => {
                self.hub
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .published(&self.me, track.to_string(), kind);
                if kind == MediaKind::Video {
                    let role = self
                        .hub
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .published_video(&self.me, track.to_string());
                    if role == Some(TrackRole::Screen) {
                        // Receivers give a screen share their bandwidth before cameras.
                        if let Err(e) = self.media.set_priority(track, Priority::Screen).await {
                            tracing::debug!(%track, "screen priority not applied: {e}");
                        }
                    }
                }
                self.recordings
                    .published(&self.me.room, &self.me.id, &self.name, track, kind)
                    .await;
                true
            }
            PeerSignal::Unpublished { track } => {
                self.hub
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .unpublished(&self.me, &track.to_string());
                true
            }
            PeerSignal::AudioLevels { sum, packets } => {
                self.hub
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .audio_levels(&self.me, sum, packets);
                true
            }
            PeerSignal::Connected => true,
            PeerSignal::IceStalled => {
                tracing::info!(
                    "nothing heard from the media connection: asking for an ICE restart"
                );
                self.out.send(&ServerMessage::IceRestart)
            }
            PeerSignal::Removed(reason) => {
                tracing::info!("media connection removed: {reason}");
                if reason != RemoveReason::Left {
                    // The socket is still up: have the browser connect its media again.
                    self.out.send(&ServerMessage::Mode {
                        mode: RoomMode::Sfu,
                    });
                }
                false
            }
        }
    }

    /// Sends `stats` when the media server has them; false when the socket is gone.
    async fn send_stats(&self) -> bool {
        match self.media.receiver_stats(&self.peer).await {
            Ok(Some(stats)) => self.out.send(&ServerMessage::stats(stats)),
            // A media server that does not say.
            Ok(None) => true,
            Err(e) => {
                tracing::debug!(peer = %self.peer, "no receiver stats: {e}");
                true
            }
        }
    }
}

/// The next tick of `interval`, or never while there is none.
async fn next_tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
