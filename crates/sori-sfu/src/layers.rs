//! Simulcast in the core: the application's view of each received track, what each receiver
//! gets, and the census for metrics.

use std::time::Instant;

use crate::error::SfuError;
use crate::id::{MediaKind, PeerId, TrackId};
use crate::sfu::Sfu;
use crate::simulcast::{LayerCensus, ReceiverStats, TrackLayer, View};

impl Sfu {
    /// How `peer` shows `track`, one of the video tracks it receives: the layer it gets follows.
    pub fn set_view(
        &mut self,
        peer: PeerId,
        track: TrackId,
        view: View,
        now: Instant,
    ) -> Result<(), SfuError> {
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(SfuError::UnknownPeer(peer))?;
        let Some(out) = p.out.values_mut().find(|o| o.source == track) else {
            return Err(SfuError::Rejected(format!(
                "{peer} does not receive {track}"
            )));
        };
        out.view = view;
        self.process(now);
        Ok(())
    }

    /// What `peer` receives: its bandwidth estimate and the layer of each video track.
    pub fn receiver_stats(&self, peer: PeerId) -> Option<ReceiverStats> {
        let p = self.peers.get(&peer)?;
        let tracks = p
            .out
            .values()
            .filter(|o| o.kind == MediaKind::Video)
            .map(|o| TrackLayer {
                track: o.source,
                rid: None,
                spatial: 0,
                layers: 1,
                temporal: None,
                height: None,
                bitrate_bps: 0,
                paused: !o.view.visible,
            })
            .collect();
        Some(ReceiverStats {
            estimate_bps: None,
            tracks,
        })
    }

    /// How many (receiver, video track) pairs get which layer.
    pub fn layer_census(&self) -> LayerCensus {
        let mut census = LayerCensus::default();
        for p in self.peers.values() {
            for o in p.out.values().filter(|o| o.kind == MediaKind::Video) {
                if o.view.visible {
                    census.high += 1;
                } else {
                    census.paused += 1;
                }
            }
        }
        census
    }
}
