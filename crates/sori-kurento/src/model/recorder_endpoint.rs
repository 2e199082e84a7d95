//! RecorderEndpoint: `record`, `pause`, `stop`, and the taps on the tracks connected to a
//! recording recorder.

use serde_json::{json, Value};
use sori_sfu::{MediaKind, TapId};

use super::registry::Kind;
use super::request::RecorderOp;
use super::Kms;
use crate::recorder::{self, Rec, RecState};

impl Kms {
    fn rec_mut(&mut self, id: &str) -> Option<&mut Rec> {
        match self.objects.get_mut(id).map(|o| &mut o.kind) {
            Some(Kind::Recorder(r)) => Some(r),
            _ => None,
        }
    }

    /// A recording recorder taps the tracks connected to it; any other taps nothing.
    pub(super) async fn sync_recorder(&mut self, id: &str) {
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let wanted = self.effective_source(id, kind);
            let Some(r) = self.rec_mut(id) else {
                return;
            };
            let recording = r.state == RecState::Start && r.recording.is_some();
            let wanted = wanted.filter(|_| recording && r.wants(kind));
            let current = r.taps.iter().position(|(k, ..)| *k == kind);
            if current.map(|i| r.taps[i].1) == wanted {
                continue;
            }
            if let Some(i) = current {
                let (_, _, tap) = r.taps.remove(i);
                self.media.untap(tap);
            }
            let Some(track) = wanted else {
                continue;
            };
            match self.media.tap(track).await {
                Ok((tap, rx)) => {
                    let Some(r) = self.rec_mut(id) else {
                        self.media.untap(tap);
                        return;
                    };
                    if let Some(rec) = &r.recording {
                        tokio::spawn(recorder::forward(rx, rec.sender(), r.counts.clone()));
                    }
                    r.taps.push((kind, track, tap));
                }
                Err(e) => tracing::warn!(object = id, %track, "cannot record: {e}"),
            }
        }
    }

    /// RecorderEndpoint operations.
    pub(super) async fn invoke_recorder(&mut self, id: &str, op: RecorderOp) -> Value {
        match op {
            RecorderOp::Record => self.record(id).await,
            RecorderOp::Pause => self.pause(id),
            RecorderOp::Stop => self.stop(id).await,
            RecorderOp::GetUri => json!(self.recorder(id).uri),
            RecorderOp::GetState => json!(self.recorder(id).state.name()),
        }
    }

    /// A recorder `invoke` has found.
    fn recorder(&mut self, id: &str) -> &mut Rec {
        // invoke looked the object up, and read its operation as a recorder's, under the
        // same lock.
        self.rec_mut(id).expect("checked by invoke")
    }

    async fn record(&mut self, id: &str) -> Value {
        let r = self.recorder(id);
        match r.state {
            RecState::Start => {}
            RecState::Pause => {
                if let Some(rec) = &r.recording {
                    let _ = rec.sender().send(sori_record::Input::Pause(false));
                }
                r.state = RecState::Start;
            }
            RecState::Stop => {
                let config = sori_record::RecordingConfig {
                    path: r.path.clone(),
                    container: r.profile.container,
                    audio: r.profile.audio,
                    video: r.profile.video,
                };
                match recorder::start(config) {
                    Ok(rec) => {
                        r.recording = Some(rec);
                        r.state = RecState::Start;
                    }
                    Err(e) => {
                        tracing::warn!(object = id, "recording refused: {e}");
                        // As in Kurento: an Error event, not an error reply.
                        self.error_event(id, 6, "RESOURCE_ERROR_OPEN", &e);
                        return Value::Null;
                    }
                }
            }
        }
        self.emit(id, "UriEndpointStateChanged", states(RecState::Start));
        self.emit(id, "Recording", json!({}));
        if let Some(p) = self.objects.get(id).and_then(|o| o.pipeline.clone()) {
            self.sync_pipeline(&p).await;
        }
        Value::Null
    }

    fn pause(&mut self, id: &str) -> Value {
        let r = self.recorder(id);
        if r.state == RecState::Start {
            if let Some(rec) = &r.recording {
                let _ = rec.sender().send(sori_record::Input::Pause(true));
            }
            r.state = RecState::Pause;
            self.emit(id, "UriEndpointStateChanged", states(RecState::Pause));
            self.emit(id, "Paused", json!({}));
        }
        Value::Null
    }

    async fn stop(&mut self, id: &str) -> Value {
        let r = self.recorder(id);
        let taps: Vec<TapId> = r.taps.drain(..).map(|(_, _, t)| t).collect();
        let recording = r.recording.take();
        let was = std::mem::replace(&mut r.state, RecState::Stop);
        for tap in taps {
            self.media.untap(tap);
        }
        if let Some(recording) = recording {
            // Both reply once the file is final: it takes milliseconds.
            let done = tokio::task::spawn_blocking(move || recording.stop()).await;
            match done {
                Ok(Ok(summary)) => {
                    tracing::info!(object = id, ?summary, "recording finished");
                }
                Ok(Err(e)) => {
                    self.error_event(id, 6, "RESOURCE_ERROR_WRITE", &e.to_string());
                }
                Err(e) => tracing::warn!(object = id, "recorder stopped badly: {e}"),
            }
        }
        if was != RecState::Stop {
            self.emit(id, "UriEndpointStateChanged", states(RecState::Stop));
            self.emit(id, "Stopped", json!({}));
        }
        Value::Null
    }
}

fn states(s: RecState) -> Value {
    json!({"state": s.name()})
}
