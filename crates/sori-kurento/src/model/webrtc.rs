//! WebRtcEndpoint: negotiation (`processOffer`, `generateOffer`, `processAnswer`, with the
//! renegotiation extension), candidates, and the events its peer's signals raise.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Weak;
use std::time::Instant;

use serde_json::{json, Map, Value};
use sori_net::{MediaError, PeerSignal};
use sori_sfu::{Forwarding, MediaKind, MediaLine, OfferLine, PeerId, SfuError, TrackId};
use tokio::sync::{mpsc, Mutex};

use super::events::canonical_event;
use super::registry::Kind;
use super::request::WebRtcOp;
use super::{now_millis, Kms};
use crate::rpc::RpcError;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Flow {
    Unknown,
    Flowing,
    NotFlowing,
}

#[derive(Default)]
pub(super) struct WebRtc {
    /// Extension: several sources through distinct sink media descriptions, each on an m-line
    /// the core adds, with renegotiation (RenegotiationNeeded, repeated processOffer/Answer).
    pub(super) renegotiation: bool,
    /// Constructor flags: the endpoint only receives from / only sends to its browser
    /// (they shape `generateOffer`).
    pub(super) recvonly: bool,
    pub(super) sendonly: bool,
    /// Tracks subscribed for described links.
    pub(super) subscribed: BTreeSet<TrackId>,
    pub(super) peer: Option<PeerId>,
    pub(super) local_sdp: Option<String>,
    pub(super) remote_sdp: Option<String>,
    /// The core's offer (RenegotiationNeeded) not answered yet: said again when the session
    /// resumes on a new socket, since one emitted while the old socket was dying is lost.
    pub(super) pending_offer: Option<String>,
    pub(super) gather_requested: bool,
    pub(super) gathered: bool,
    pub(super) remote_candidates: Vec<String>,
    pub(super) lines: Vec<MediaLine>,
    pub(super) connected: bool,
    /// Browser → server per kind (audio, video): MediaFlowOut.
    pub(super) flow_out: [FlowTrack; 2],
    /// Server → browser: MediaFlowIn.
    pub(super) flow_in: [FlowTrack; 2],
}

#[derive(Clone, Copy)]
pub(crate) struct FlowTrack {
    pub(super) state: Flow,
    pub(super) count: u64,
    pub(super) last_active: Option<Instant>,
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

fn media_error(e: MediaError, offer: bool) -> RpcError {
    match e {
        MediaError::Sfu(SfuError::BadSdp(why)) if offer => {
            RpcError::sdp_parse(format!("Error parsing SDP offer: {why}"))
        }
        MediaError::Sfu(SfuError::BadSdp(why)) => {
            RpcError::sdp_parse(format!("Error parsing SDP answer: {why}"))
        }
        MediaError::Sfu(e @ SfuError::VideoCodecUnsupported { .. }) if offer => {
            RpcError::no_common_codec(e.to_string())
        }
        MediaError::Sfu(e) if offer => RpcError::process_offer(e.to_string()),
        MediaError::Sfu(e) => RpcError::process_answer(e.to_string()),
        MediaError::Stopped => RpcError::unexpected("the media server is not running"),
    }
}

impl Kms {
    pub(super) fn webrtc_mut(&mut self, id: &str) -> Option<&mut WebRtc> {
        match self.objects.get_mut(id).map(|o| &mut o.kind) {
            Some(Kind::WebRtc(w)) => Some(w),
            _ => None,
        }
    }

    /// The extension: links with a sink media description of their own reach a
    /// renegotiating sink on m-lines the core adds (and removes) by renegotiation.
    pub(super) async fn sync_described(&mut self, id: &str, peer: PeerId) {
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
            let Some(kind) = l.ty.kind() else { continue };
            match self.objects.get(&l.source).map(|o| &o.kind) {
                // Another node's tracks, of the publisher the source description names.
                Some(Kind::Relay(r)) => wanted.extend(r.tracks_for(&l.source_desc, kind)),
                _ => wanted.extend(self.tracks_of(&l.source, kind)),
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

    /// An endpoint `invoke` has found.
    fn endpoint(&mut self, id: &str) -> &mut WebRtc {
        // invoke looked the object up, and read its operation as a WebRtcEndpoint's, under
        // the same lock.
        self.webrtc_mut(id).expect("checked by invoke")
    }

    /// WebRtcEndpoint operations.
    pub(super) async fn invoke_webrtc(
        &mut self,
        id: &str,
        op: WebRtcOp,
    ) -> Result<Value, RpcError> {
        Ok(match op {
            WebRtcOp::ProcessOffer { offer } => json!(self.process_offer(id, &offer).await?),
            WebRtcOp::GenerateOffer { send } => json!(self.generate_offer(id, send).await?),
            WebRtcOp::ProcessAnswer { answer } => json!(self.process_answer(id, &answer).await?),
            WebRtcOp::GatherCandidates => {
                self.endpoint(id).gather_requested = true;
                self.gather(id).await;
                Value::Null
            }
            WebRtcOp::AddIceCandidate { candidate } => {
                // The core is ICE-lite: it learns the browser's address from its checks, so
                // remote candidates are only remembered (early ones included).
                let w = self.endpoint(id);
                if !candidate.is_empty() && w.remote_candidates.len() < 64 {
                    w.remote_candidates.push(candidate);
                }
                Value::Null
            }
            WebRtcOp::GetStreamId => json!(self.endpoint(id).peer.map(|p| p.to_string())),
            WebRtcOp::GetLocalSessionDescriptor => json!(self.endpoint(id).local_sdp),
            WebRtcOp::GetRemoteSessionDescriptor => json!(self.endpoint(id).remote_sdp),
            WebRtcOp::RequestKeyframe => {
                if let Some(peer) = self.endpoint(id).peer {
                    let _ = self.media.request_keyframe(peer).await;
                }
                Value::Null
            }
            WebRtcOp::GetStats => stats(self.endpoint(id)),
            WebRtcOp::GetMediaState | WebRtcOp::GetConnectionState => {
                json!(if self.endpoint(id).connected {
                    "CONNECTED"
                } else {
                    "DISCONNECTED"
                })
            }
            WebRtcOp::GetIceDetails => json!([]),
            WebRtcOp::DataChannel => {
                return Err(RpcError::not_implemented(
                    "data channels are not supported by Sori's WebRtcEndpoint",
                ))
            }
        })
    }

    async fn generate_offer(&mut self, id: &str, send: [bool; 2]) -> Result<String, RpcError> {
        let pipeline = self.object(id)?.pipeline.clone().unwrap_or_default();
        let w = self.webrtc_mut(id).expect("checked");
        let (recvonly, sendonly) = (w.recvonly, w.sendonly);
        let mut lines = Vec::new();
        for (kind, wanted) in [MediaKind::Audio, MediaKind::Video].into_iter().zip(send) {
            let line = OfferLine {
                kind,
                receive: !sendonly,
                send: !recvonly && wanted,
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
        w.pending_offer = None;
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
            // The core dropped an offer of its own that crossed this one (it offers again).
            w.pending_offer = None;
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
                        err.kind.unwrap_or("SDP_END_POINT_PROCESS_OFFER_ERROR"),
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

    /// Says again every unanswered offer of the endpoints `session` subscribed to
    /// RenegotiationNeeded on: the session resumed on a new socket.
    pub(super) fn offer_again(&mut self, session: &str) {
        let objects: BTreeSet<String> = self
            .subs
            .values()
            .filter(|s| s.session == session && canonical_event(&s.name) == "RenegotiationNeeded")
            .map(|s| s.object.clone())
            .collect();
        for id in objects {
            let Some(sdp) = self.webrtc_mut(&id).and_then(|w| w.pending_offer.clone()) else {
                continue;
            };
            tracing::debug!(
                object = id,
                "renegotiation needed, said again after a resume"
            );
            self.emit(&id, "RenegotiationNeeded", json!({"sdpOffer": sdp}));
        }
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
                w.pending_offer = Some(sdp.clone());
                self.emit(id, "RenegotiationNeeded", json!({"sdpOffer": sdp}));
            }
            // Nothing heard from the browser: its ICE component is down (the application may
            // renegotiate with an ICE restart).
            PeerSignal::IceStalled => {
                self.emit(id, "IceComponentStateChanged", component("DISCONNECTED"));
            }
            // How loud the browser's audio was over the last 50 ms (a Sori extension event):
            // a session server tells who is speaking from it.
            PeerSignal::AudioLevels { sum, packets } => {
                self.emit(id, "AudioLevels", json!({"sum": sum, "packets": packets}));
            }
            // Tracks come and go in `signal_task` (TrackPublished, TrackUnpublished).
            // Kurento's API has no simulcast: an endpoint's browser keeps every layer on.
            PeerSignal::Published { .. }
            | PeerSignal::Unpublished { .. }
            | PeerSignal::Layers { .. } => {}
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
}

/// `getStats`: packet counts per kind, in and out.
fn stats(w: &WebRtc) -> Value {
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
        match signal {
            PeerSignal::Published { track, kind } => {
                k.published(&id).await;
                let kind = match kind {
                    MediaKind::Audio => "AUDIO",
                    MediaKind::Video => "VIDEO",
                };
                let data = json!({"trackId": track.to_string(), "mediaType": kind});
                k.emit(&id, "TrackPublished", data);
            }
            PeerSignal::Unpublished { track } => {
                k.emit(
                    &id,
                    "TrackUnpublished",
                    json!({"trackId": track.to_string()}),
                );
            }
            signal => k.on_signal(&id, signal),
        }
        if removed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
