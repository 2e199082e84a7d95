//! The simulcast messages: `view` (how a receiver shows each video it gets), `layers` (which
//! layers a publisher's browser should encode) and `stats` (what a receiver gets).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sori_media::sori_sfu::{Quality, ReceiverStats, TrackId, TrackLayer, View};

use super::ServerMessage;

/// Most tracks one `view` message may name.
pub const MAX_VIEWS: usize = 256;

/// Largest tile width or height a `view` may state, in device pixels.
pub const MAX_VIEW_PIXELS: u32 = 16_384;

/// One track's entry in a `view` message, as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewEntry {
    /// The tile's width in device pixels (absent or 0: unknown).
    #[serde(default)]
    pub width: u32,
    /// The tile's height in device pixels (absent or 0: unknown).
    #[serde(default)]
    pub height: u32,
    /// Whether the tile is shown (absent: true).
    #[serde(default = "shown")]
    pub visible: bool,
    /// A quality the receiver pinned (absent: `auto`).
    #[serde(default)]
    pub quality: QualityName,
}

fn shown() -> bool {
    true
}

/// A pinned quality as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QualityName {
    /// Chosen by the tile size and the bandwidth estimate.
    #[default]
    Auto,
    /// The lowest layer.
    Low,
    /// The middle layer.
    Medium,
    /// The highest layer the estimate allows.
    High,
}

impl From<QualityName> for Quality {
    fn from(q: QualityName) -> Self {
        match q {
            QualityName::Auto => Quality::Auto,
            QualityName::Low => Quality::Low,
            QualityName::Medium => Quality::Medium,
            QualityName::High => Quality::High,
        }
    }
}

/// Checks a `view` message's `tracks`: at most [`MAX_VIEWS`] entries, each key a media-server
/// track id (`track-<n>`, as `a=msid` names it), width and height at most
/// [`MAX_VIEW_PIXELS`]. All of it or nothing: one bad entry refuses the message.
pub fn parse_views(tracks: &BTreeMap<String, ViewEntry>) -> Result<Vec<(TrackId, View)>, String> {
    if tracks.len() > MAX_VIEWS {
        return Err(format!(
            "a view with {} tracks was refused; the limit is {MAX_VIEWS}",
            tracks.len()
        ));
    }
    tracks
        .iter()
        .map(|(key, entry)| {
            let track = parse_track(key).ok_or_else(|| {
                let shown: String = key.chars().take(40).collect();
                format!("{shown:?} is not a track id: a view names tracks as \"track-<number>\"")
            })?;
            if entry.width > MAX_VIEW_PIXELS || entry.height > MAX_VIEW_PIXELS {
                return Err(format!(
                    "the view of {key} is {}x{}; width and height are at most {MAX_VIEW_PIXELS}",
                    entry.width, entry.height
                ));
            }
            let view = View {
                width: entry.width,
                height: entry.height,
                visible: entry.visible,
                quality: entry.quality.into(),
            };
            Ok((track, view))
        })
        .collect()
}

/// `track-<n>` in its one spelling (no sign, no leading zero), as the media server writes it.
pub(crate) fn parse_track(key: &str) -> Option<TrackId> {
    let digits = key.strip_prefix("track-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let track = TrackId(digits.parse().ok()?);
    (track.to_string() == key).then_some(track)
}

/// What a receiver gets of one video track (`stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackStats {
    /// The `rid` of the layer it gets (`null`: the publisher sends one encoding).
    pub rid: Option<String>,
    /// The layer's index, 0 the lowest.
    pub spatial: u8,
    /// How many layers the publisher sends.
    pub layers: u8,
    /// The highest temporal layer forwarded (`null`: all).
    pub temporal: Option<u8>,
    /// The layer's frame height, once known.
    pub height: Option<u32>,
    /// The layer's bitrate at the publisher.
    pub bitrate_bps: u64,
    /// Nothing is forwarded (hidden tile, or too little bandwidth).
    pub paused: bool,
}

impl From<TrackLayer> for TrackStats {
    fn from(t: TrackLayer) -> Self {
        Self {
            rid: t.rid,
            spatial: t.spatial,
            layers: t.layers,
            temporal: t.temporal,
            height: t.height,
            bitrate_bps: t.bitrate_bps,
            paused: t.paused,
        }
    }
}

impl ServerMessage {
    /// `stats` for a receiver, its tracks keyed by their media-server ids.
    pub fn stats(s: ReceiverStats) -> Self {
        ServerMessage::Stats {
            estimate_bps: s.estimate_bps,
            tracks: s
                .tracks
                .into_iter()
                .map(|t| (t.track.to_string(), t.into()))
                .collect(),
        }
    }

    /// `layers` for a publisher: which encodings of its m-line `mid` anyone receives.
    pub fn layers(mid: String, active: Vec<(String, bool)>) -> Self {
        ServerMessage::Layers {
            mid,
            active: active.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse, ClientMessage};
    use serde_json::json;

    fn views(text: &str) -> Result<Vec<(TrackId, View)>, String> {
        match parse(text) {
            Ok(ClientMessage::View { tracks }) => parse_views(&tracks),
            other => panic!("not a view: {other:?}"),
        }
    }

    #[test]
    fn a_view_fills_in_what_it_leaves_out() {
        let got = views(
            r#"{"type":"view","tracks":{"track-5":{"width":640,"height":360,"visible":true,"quality":"high"},"track-7":{"visible":false},"track-12":{}}}"#,
        )
        .unwrap();
        let hidden = View {
            visible: false,
            ..View::default()
        };
        assert_eq!(
            got,
            vec![
                (TrackId(12), View::default()),
                (
                    TrackId(5),
                    View {
                        width: 640,
                        height: 360,
                        visible: true,
                        quality: Quality::High
                    }
                ),
                (TrackId(7), hidden),
            ]
        );
    }

    #[test]
    fn bad_views_are_refused_whole() {
        // Checked after parsing: the message is well formed but asks too much.
        let many: serde_json::Map<String, serde_json::Value> = (0..=MAX_VIEWS)
            .map(|i| (format!("track-{i}"), json!({})))
            .collect();
        let too_many = json!({"type": "view", "tracks": many}).to_string();
        assert!(views(&too_many).unwrap_err().contains("257 tracks"));
        for key in [
            "5", "track-", "track-x", "track-+5", "track-05", "track-1 ", "Track-1",
        ] {
            let text = json!({"type": "view", "tracks": {"track-1": {}, key: {}}}).to_string();
            assert!(
                views(&text).unwrap_err().contains("not a track id"),
                "{key}"
            );
        }
        let wide = r#"{"type":"view","tracks":{"track-1":{"width":16385,"height":10}}}"#;
        assert!(views(wide).unwrap_err().contains("16385x10"));
        let edge = r#"{"type":"view","tracks":{"track-1":{"width":16384,"height":16384}}}"#;
        assert_eq!(views(edge).unwrap()[0].1.width, 16384);
        // Refused by the parser: wrong types and names.
        for bad in [
            r#"{"type":"view","tracks":{"track-1":{"quality":"ultra"}}}"#,
            r#"{"type":"view","tracks":{"track-1":{"width":-1}}}"#,
            r#"{"type":"view","tracks":{"track-1":{"width":1.5}}}"#,
            r#"{"type":"view","tracks":{"track-1":{"width":99999999999}}}"#,
            r#"{"type":"view","tracks":{"track-1":{"visible":"yes"}}}"#,
            r#"{"type":"view","tracks":{"track-1":{"fps":30}}}"#,
            r#"{"type":"view","tracks":[]}"#,
            r#"{"type":"view"}"#,
        ] {
            assert_eq!(
                parse(bad).unwrap_err().0,
                crate::protocol::ErrorCode::BadMessage,
                "{bad}"
            );
        }
    }

    #[test]
    fn stats_and_layers_have_the_documented_shape() {
        let stats = ServerMessage::stats(ReceiverStats {
            estimate_bps: Some(2_500_000),
            tracks: vec![
                TrackLayer {
                    track: TrackId(5),
                    rid: Some("f".into()),
                    spatial: 2,
                    layers: 3,
                    temporal: None,
                    height: Some(720),
                    bitrate_bps: 1_500_000,
                    paused: false,
                },
                TrackLayer {
                    track: TrackId(9),
                    rid: None,
                    spatial: 0,
                    layers: 1,
                    temporal: Some(1),
                    height: None,
                    bitrate_bps: 0,
                    paused: true,
                },
            ],
        });
        assert_eq!(
            serde_json::to_value(stats).unwrap(),
            json!({"type": "stats", "estimate_bps": 2_500_000, "tracks": {
                "track-5": {"rid": "f", "spatial": 2, "layers": 3, "temporal": null,
                            "height": 720, "bitrate_bps": 1_500_000, "paused": false},
                "track-9": {"rid": null, "spatial": 0, "layers": 1, "temporal": 1,
                            "height": null, "bitrate_bps": 0, "paused": true},
            }})
        );
        let none = ServerMessage::stats(ReceiverStats::default());
        assert_eq!(
            serde_json::to_value(none).unwrap(),
            json!({"type": "stats", "estimate_bps": null, "tracks": {}})
        );
        let layers = ServerMessage::layers(
            "1".into(),
            vec![("q".into(), true), ("h".into(), true), ("f".into(), false)],
        );
        assert_eq!(
            serde_json::to_value(layers).unwrap(),
            json!({"type": "layers", "mid": "1", "active": {"q": true, "h": true, "f": false}})
        );
    }
}
