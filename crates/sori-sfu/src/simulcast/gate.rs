//! Which packets of a simulcast track one receiver gets: the layer it is on (`current`) until
//! a keyframe of the layer it should be on (`target`) arrives, then that one. A downgrade
//! therefore never freezes the picture: the old layer flows until the new one can start.

/// What to do with one packet at one receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Forward it.
    Pass,
    /// Forward it: it starts a keyframe of the target layer, which the receiver is now on.
    Switched,
    /// Not for this receiver.
    Drop,
    /// Of the target layer, but not a keyframe: the receiver waits (a keyframe of the target
    /// is wanted).
    WaitKeyframe,
}

/// One receiver's layer of one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LayerGate {
    /// The layer forwarded now (`None`: nothing yet, waiting for a keyframe).
    pub(crate) current: Option<u8>,
    /// The layer wanted (`None`: paused).
    pub(crate) target: Option<u8>,
}

impl LayerGate {
    /// Video: the lowest layer, from its first keyframe.
    pub(crate) fn video() -> Self {
        Self {
            current: None,
            target: Some(0),
        }
    }

    /// Audio: every packet of its one layer.
    pub(crate) fn audio() -> Self {
        Self {
            current: Some(0),
            target: Some(0),
        }
    }

    /// A packet of `layer` arrives; `keyframe` when it starts a keyframe.
    pub(crate) fn admit(&mut self, layer: u8, keyframe: bool) -> Gate {
        let Some(target) = self.target else {
            return Gate::Drop;
        };
        if layer == target {
            if self.current == Some(target) {
                return Gate::Pass;
            }
            if keyframe {
                self.current = Some(target);
                return Gate::Switched;
            }
            return Gate::WaitKeyframe;
        }
        if self.current == Some(layer) {
            Gate::Pass
        } else {
            Gate::Drop
        }
    }

    /// Moves to `target` (from its next keyframe); `None` pauses at once.
    pub(crate) fn retarget(&mut self, target: Option<u8>) {
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
    }

    /// Starts over: nothing is forwarded until a keyframe of the target.
    pub(crate) fn restart(&mut self) {
        self.current = None;
    }

    /// Whether it waits for a keyframe of the target.
    pub(crate) fn switching(&self) -> bool {
        self.target.is_some() && self.current != self.target
    }
}

/// The highest temporal layer forwarded (`None`: all) once a packet of temporal layer `tid`
/// arrives, given the limit `now` and the wanted one `target`: down at once, up only at a
/// keyframe or at a frame with the layer-sync bit (it depends on temporal layer 0 alone, so
/// nothing it needs was dropped).
pub(crate) fn temporal_limit(
    now: Option<u8>,
    target: Option<u8>,
    tid: u8,
    sync: bool,
    keyframe: bool,
) -> Option<u8> {
    if keyframe {
        return target;
    }
    let down = match (now, target) {
        (None, Some(_)) => true,
        (Some(n), Some(t)) => t < n,
        _ => false,
    };
    if down {
        return target;
    }
    let up = match (now, target) {
        (Some(n), None) => tid > n,
        (Some(n), Some(t)) => t > n && tid > n && tid <= t,
        _ => false,
    };
    if up && sync {
        target
    } else {
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporal_layers_go_down_at_once_and_up_at_a_sync_frame() {
        // Down: at once, whatever the packet.
        assert_eq!(temporal_limit(None, Some(0), 2, false, false), Some(0));
        assert_eq!(temporal_limit(Some(2), Some(1), 0, false, false), Some(1));
        // Up: not at an ordinary frame, nor at a sync frame of a layer already taken...
        assert_eq!(temporal_limit(Some(0), None, 2, false, false), Some(0));
        assert_eq!(temporal_limit(Some(1), Some(2), 1, true, false), Some(1));
        // ...but at a sync frame of a higher layer, or a keyframe.
        assert_eq!(temporal_limit(Some(0), None, 1, true, false), None);
        assert_eq!(temporal_limit(Some(0), Some(1), 1, true, false), Some(1));
        assert_eq!(temporal_limit(Some(0), Some(2), 0, false, true), Some(2));
        // Steady.
        assert_eq!(temporal_limit(None, None, 2, false, false), None);
        assert_eq!(temporal_limit(Some(1), Some(1), 2, true, false), Some(1));
    }

    #[test]
    fn starts_on_a_keyframe_of_the_target() {
        let mut g = LayerGate::video();
        assert_eq!(g.admit(1, true), Gate::Drop);
        assert_eq!(g.admit(0, false), Gate::WaitKeyframe);
        assert_eq!(g.admit(0, true), Gate::Switched);
        assert_eq!(g.admit(0, false), Gate::Pass);
    }

    #[test]
    fn the_old_layer_flows_until_the_new_one_has_a_keyframe() {
        let mut g = LayerGate::video();
        g.admit(0, true);
        g.retarget(Some(2));
        assert_eq!(g.admit(0, false), Gate::Pass);
        assert_eq!(g.admit(2, false), Gate::WaitKeyframe);
        assert_eq!(g.admit(1, true), Gate::Drop);
        assert!(g.switching());
        assert_eq!(g.admit(2, true), Gate::Switched);
        assert_eq!(g.admit(0, false), Gate::Drop);
        assert_eq!(g.admit(0, true), Gate::Drop);
        assert!(!g.switching());
    }

    #[test]
    fn pausing_stops_at_once_and_resuming_waits_for_a_keyframe() {
        let mut g = LayerGate::video();
        g.admit(0, true);
        g.retarget(None);
        assert_eq!(g.admit(0, false), Gate::Drop);
        assert_eq!(g.admit(0, true), Gate::Drop);
        g.retarget(Some(0));
        assert_eq!(g.admit(0, false), Gate::WaitKeyframe);
        assert_eq!(g.admit(0, true), Gate::Switched);
    }

    #[test]
    fn audio_passes_from_the_first_packet() {
        let mut g = LayerGate::audio();
        assert_eq!(g.admit(0, false), Gate::Pass);
    }
}
