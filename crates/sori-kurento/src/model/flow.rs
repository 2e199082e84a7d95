//! Media flow states: packet counts polled from the core become FLOWING / NOT_FLOWING per
//! element, kind and direction, with their events.

use std::sync::Weak;
use std::time::{Duration, Instant};

use serde_json::json;
use sori_sfu::{PeerFlow, PeerId};
use tokio::sync::Mutex;

use super::registry::Kind;
use super::webrtc::Flow;
use super::Kms;

impl Kms {
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
