//! The JSON of LiveKit's RoomService as Twirp carries it: requests as the server SDKs write them
//! (protobuf JSON, lowerCamelCase names; the proto's snake_case names are accepted too) and
//! responses as LiveKit's own server writes them (the proto's names, 64-bit integers as strings,
//! enums by name). Fields Sori has no use for are accepted and ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sori_media::sori_sfu::MediaKind;

use crate::hub::{ParticipantView, RoomView, TrackView};
use crate::protocol::TrackRole;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct CreateRoomRequest {
    pub name: String,
    #[serde(alias = "empty_timeout")]
    pub empty_timeout: u32,
    #[serde(alias = "departure_timeout")]
    pub departure_timeout: u32,
    #[serde(alias = "max_participants")]
    pub max_participants: u32,
    pub metadata: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ListRoomsRequest {
    pub names: Vec<String>,
}

/// `DeleteRoomRequest`, `ListParticipantsRequest`, `UpdateRoomMetadataRequest` and Sori's
/// recording calls: a room, and maybe its metadata.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct RoomRequest {
    pub room: String,
    pub metadata: String,
}

/// `RoomParticipantIdentity`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ParticipantRequest {
    pub room: String,
    pub identity: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct MuteRoomTrackRequest {
    pub room: String,
    pub identity: String,
    #[serde(alias = "track_sid")]
    pub track_sid: String,
    pub muted: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct UpdateParticipantRequest {
    pub room: String,
    pub identity: String,
    pub metadata: Option<String>,
    pub name: Option<String>,
    pub permission: Option<PermissionRequest>,
    pub attributes: BTreeMap<String, String>,
}

/// `ParticipantPermission` as a request gives it: what is absent stays as it is.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct PermissionRequest {
    #[serde(alias = "can_subscribe")]
    pub can_subscribe: Option<bool>,
    #[serde(alias = "can_publish")]
    pub can_publish: Option<bool>,
    #[serde(alias = "can_publish_data")]
    pub can_publish_data: Option<bool>,
    #[serde(alias = "can_publish_sources")]
    pub can_publish_sources: Option<Vec<serde_json::Value>>,
    pub hidden: Option<bool>,
    #[serde(alias = "can_update_metadata")]
    pub can_update_metadata: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct SendDataRequest {
    pub room: String,
    /// Base64, as protobuf JSON writes bytes.
    pub data: String,
    #[serde(alias = "destination_sids")]
    pub destination_sids: Vec<String>,
    #[serde(alias = "destination_identities")]
    pub destination_identities: Vec<String>,
    pub topic: Option<String>,
}

/// LiveKit's `Room`.
#[derive(Debug, Serialize)]
pub(crate) struct Room {
    pub sid: String,
    pub name: String,
    pub empty_timeout: u32,
    pub departure_timeout: u32,
    pub max_participants: u32,
    /// Unix seconds (int64: a string in protobuf JSON).
    pub creation_time: String,
    pub creation_time_ms: String,
    pub metadata: String,
    pub num_participants: u32,
    pub num_publishers: u32,
    pub active_recording: bool,
    /// Sori's own: how media flows in the room now (`sfu` or `p2p`).
    pub sori_mode: crate::protocol::RoomMode,
}

impl Room {
    pub(crate) fn from(v: &RoomView, recording: bool) -> Self {
        Room {
            sid: v.sid.clone(),
            name: v.name.clone(),
            empty_timeout: secs(v.empty_timeout),
            departure_timeout: secs(v.departure_timeout),
            max_participants: v.max_participants,
            creation_time: (v.created_ms / 1000).to_string(),
            creation_time_ms: v.created_ms.to_string(),
            metadata: v.metadata.clone(),
            num_participants: v.participants as u32,
            num_publishers: v.publishers as u32,
            active_recording: recording,
            sori_mode: v.mode,
        }
    }
}

fn secs(d: std::time::Duration) -> u32 {
    d.as_secs().min(u64::from(u32::MAX)) as u32
}

/// LiveKit's `ParticipantInfo`.
#[derive(Debug, Serialize)]
pub(crate) struct Participant {
    pub sid: String,
    pub identity: String,
    /// `JOINED` before its media is connected, `ACTIVE` after.
    pub state: &'static str,
    pub tracks: Vec<Track>,
    pub metadata: String,
    pub joined_at: String,
    pub joined_at_ms: String,
    pub name: String,
    pub permission: Permission,
    pub is_publisher: bool,
    pub kind: &'static str,
}

impl Participant {
    pub(crate) fn from(v: &ParticipantView) -> Self {
        Participant {
            sid: v.info.id.clone(),
            identity: v.info.identity.clone(),
            state: if v.info.media_id.is_some() {
                "ACTIVE"
            } else {
                "JOINED"
            },
            tracks: v.tracks.iter().map(Track::from).collect(),
            metadata: v.info.metadata.clone().unwrap_or_default(),
            joined_at: (v.joined_ms / 1000).to_string(),
            joined_at_ms: v.joined_ms.to_string(),
            name: v.info.name.clone(),
            permission: Permission {
                can_subscribe: v.subscribe,
                can_publish: v.publish,
                can_publish_data: v.chat,
            },
            is_publisher: !v.tracks.is_empty(),
            // LiveKit's kind of a participant its Ingress service brings in (WHIP).
            kind: if v.info.ingress {
                "INGRESS"
            } else {
                "STANDARD"
            },
        }
    }
}

/// LiveKit's `ParticipantPermission`, as far as Sori has it.
#[derive(Debug, Serialize)]
pub(crate) struct Permission {
    pub can_subscribe: bool,
    pub can_publish: bool,
    pub can_publish_data: bool,
}

/// LiveKit's `TrackInfo`.
#[derive(Debug, Serialize)]
pub(crate) struct Track {
    pub sid: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    pub muted: bool,
    pub source: &'static str,
}

impl Track {
    pub(crate) fn from(t: &TrackView) -> Self {
        let (kind, source) = match (t.kind, t.role) {
            (MediaKind::Audio, _) => ("AUDIO", "MICROPHONE"),
            (MediaKind::Video, Some(TrackRole::Screen)) => ("VIDEO", "SCREEN_SHARE"),
            (MediaKind::Video, _) => ("VIDEO", "CAMERA"),
        };
        Track {
            sid: t.sid.clone(),
            kind,
            name: source.to_ascii_lowercase(),
            muted: t.muted,
            source,
        }
    }
}
