//! The signaling protocol on `/ws`: JSON messages with a `type` field. `docs/signaling.md`
//! describes every message and error code; this module is its single definition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod simulcast;

pub(crate) use simulcast::parse_track;
pub use simulcast::{parse_views, QualityName, TrackStats, ViewEntry, MAX_VIEWS, MAX_VIEW_PIXELS};

/// The protocol version a client states in `join`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest message accepted, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 2000;

/// Chat messages replayed to a participant who joins.
pub const CHAT_HISTORY: usize = 100;

/// How a room carries media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomMode {
    /// Everyone sends once to the media server, which forwards to the others.
    Sfu,
    /// Two participants, media directly between their browsers.
    P2p,
    /// Peer to peer while two are in the room, the media server from the third on.
    Auto,
}

/// What a participant's browser sends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Enter a room.
    Join {
        /// Protocol version; must be 1.
        v: u32,
        room: String,
        name: String,
        /// Requested mode for a new room (an existing room keeps its mode).
        #[serde(default)]
        mode: Option<RoomMode>,
        /// An access token (a JWT in LiveKit's claim layout); required when the server has
        /// API keys.
        #[serde(default)]
        token: Option<String>,
    },
    /// An SDP offer: to the media server, or with `to` to the other browser (P2P).
    Offer {
        sdp: String,
        #[serde(default)]
        to: Option<String>,
        /// The role of each sending m-line, by mid (checked by [`TrackRole::parse_map`]).
        #[serde(default)]
        roles: Option<BTreeMap<String, String>>,
    },
    /// An SDP answer, same addressing as `offer`.
    Answer {
        sdp: String,
        #[serde(default)]
        to: Option<String>,
        #[serde(default)]
        roles: Option<BTreeMap<String, String>>,
    },
    /// A trickled ICE candidate (`RTCIceCandidateInit`), same addressing as `offer`.
    Candidate {
        candidate: serde_json::Value,
        #[serde(default)]
        to: Option<String>,
    },
    /// A chat message to the room.
    Chat { text: String },
    /// The sender's microphone and camera state.
    Mute { audio: bool, video: bool },
    /// How the sender shows video tracks it receives, by media-server track id (SFU rooms):
    /// the tracks named change, the others stay as they were (checked by [`parse_views`]).
    View { tracks: BTreeMap<String, ViewEntry> },
    /// Video from at most `n` others (SFU rooms): those in `pinned` first, then screen shares,
    /// then the latest speakers; `n: null` goes back to the room's setting. The others' video
    /// pauses without renegotiation; `video-set` says who is sent.
    LastN {
        n: Option<u32>,
        #[serde(default)]
        pinned: Vec<String>,
    },
    /// Start (`on: true`) or stop recording the whole room (SFU rooms).
    Record { on: bool },
    /// A moderator stops (`true`) or resumes (`false`) forwarding someone's microphone or
    /// camera; a field left out is left as it is.
    MuteParticipant {
        id: String,
        #[serde(default)]
        audio: Option<bool>,
        #[serde(default)]
        video: Option<bool>,
    },
    /// A moderator removes someone; with `ban`, that identity may not join again while the
    /// room lasts.
    RemoveParticipant {
        id: String,
        #[serde(default)]
        ban: bool,
    },
    /// A moderator locks (new participants refused) or unlocks the room.
    LockRoom { locked: bool },
    /// A moderator ends the room for everyone.
    EndRoom,
    /// Take back a participant whose socket dropped: `secret` is the one `joined` gave,
    /// `received` the number (`seq`) of the last server message this client got; with access
    /// tokens, `token` must name the same identity.
    Resume {
        v: u32,
        secret: String,
        #[serde(default)]
        received: u64,
        #[serde(default)]
        token: Option<String>,
    },
    /// Leave the room (closing the socket with code 1000 or 1001 does the same).
    Leave,
    /// Keepalive; answered with `pong`.
    Ping,
}

/// What a video track shows: the camera or a screen share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackRole {
    Camera,
    Screen,
}

/// Longest mid accepted as a key of a `roles` map (browsers use a few digits).
pub const MAX_MID_CHARS: usize = 32;

impl TrackRole {
    /// The role named `name` on the wire.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "camera" => Some(TrackRole::Camera),
            "screen" => Some(TrackRole::Screen),
            _ => None,
        }
    }

    /// Checks a client's `roles` map: at most `max` entries, short mids, known roles.
    pub fn parse_map(
        roles: &BTreeMap<String, String>,
        max: usize,
    ) -> Result<BTreeMap<String, TrackRole>, String> {
        if roles.len() > max {
            return Err(format!(
                "a roles map with {} entries was refused; the limit is {max}",
                roles.len()
            ));
        }
        roles
            .iter()
            .map(|(mid, role)| {
                if mid.is_empty() || mid.chars().count() > MAX_MID_CHARS {
                    return Err(format!(
                        "a roles map key is a mid of 1 to {MAX_MID_CHARS} characters"
                    ));
                }
                let role = TrackRole::from_name(role).ok_or_else(|| {
                    format!("unknown track role {role:?}: a role is \"camera\" or \"screen\"")
                })?;
                Ok((mid.clone(), role))
            })
            .collect()
    }
}

/// A participant as others see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: String,
    /// Who it is: the access token's identity (`sub`), or its id on a server without keys.
    pub identity: String,
    pub name: String,
    /// The access token's `metadata`, as it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// It may moderate the room.
    pub admin: bool,
    /// Its own microphone and camera switches.
    pub audio_muted: bool,
    pub video_muted: bool,
    /// What a moderator muted: the server forwards none of it, whatever the browser sends.
    pub server_muted: ServerMuted,
    /// The media stream id of this participant's tracks at the media server (SFU mode).
    pub media_id: Option<String>,
    /// The role of each of its video tracks at the media server, by track id (the second
    /// part of `a=msid` in the media server's offers; SFU mode).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tracks: BTreeMap<String, TrackRole>,
    /// An encoder publishing over WHIP (no socket: it neither chats nor receives).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ingress: bool,
}

/// Media a moderator stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMuted {
    pub audio: bool,
    pub video: bool,
}

/// What the participant may do, from its access token (`joined`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Permissions {
    /// Sources it may publish: `camera`, `microphone`, `screen_share`, `screen_share_audio`.
    pub publish: Vec<&'static str>,
    pub subscribe: bool,
    pub chat: bool,
    /// Start and stop room recordings, and list and download them.
    pub record: bool,
    /// Moderate: mute and remove others, lock and end the room.
    pub admin: bool,
}

impl Permissions {
    pub(crate) fn from(g: &crate::auth::Grants, room: &str) -> Self {
        Self {
            publish: g.publish.names(),
            subscribe: g.subscribe,
            chat: g.chat,
            record: g.may_record(room),
            admin: g.admin,
        }
    }
}

/// What a moderator did (`moderation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModerationAction {
    MuteAudio,
    UnmuteAudio,
    MuteVideo,
    UnmuteVideo,
    Remove,
    Ban,
    Lock,
    Unlock,
}

/// A moderator's action, told to everyone in the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Moderation {
    pub action: ModerationAction,
    /// The moderator's id and name.
    pub by: String,
    pub by_name: String,
    /// The participant it applies to (not for `lock`/`unlock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,
}

/// Why the server ended a participant's membership (`removed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemovedReason {
    Removed,
    Banned,
    RoomEnded,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub id: u64,
    pub from: String,
    pub name: String,
    pub text: String,
    /// Milliseconds since the Unix epoch, server time.
    pub time: u64,
    /// The sender's number (`seq`) for the message. A chat sent again after a session server
    /// took the room over from a snapshot older than it has the `from` and `re` of the first
    /// copy, which a client shows once. None for the server's own messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re: Option<u64>,
}

/// An ICE server for the browser's `RTCPeerConnection` (the fields of `RTCIceServer`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    /// A time-limited TURN username, `<unix expiry>:<participant id>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Its password: base64(HMAC-SHA1(shared secret, username)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaveReason {
    /// It left, or closed its socket.
    Left,
    /// Its socket dropped and no new one took it back within the grace period.
    Timeout,
    /// The same identity joined again from elsewhere.
    Replaced,
    /// A moderator removed it, or ended the room.
    Removed,
}

/// A participant speaking, and how loud (0 to 1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeakerLevel {
    pub id: String,
    pub level: f32,
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    /// You are in.
    Joined {
        v: u32,
        id: String,
        /// Your identity and display name (from your access token when there is one).
        identity: String,
        name: String,
        room: String,
        /// The mode media uses now (`sfu` or `p2p`).
        mode: RoomMode,
        /// New participants are refused.
        locked: bool,
        /// What you may do.
        permissions: Permissions,
        participants: Vec<ParticipantInfo>,
        ice_servers: Vec<IceServer>,
        chat: Vec<ChatMessage>,
        /// The secret a new socket presents to take this participant back (`resume`);
        /// absent when the server keeps no one whose socket dropped.
        #[serde(skip_serializing_if = "Option::is_none")]
        resume: Option<String>,
    },
    /// The server is shutting down (SIGTERM): the socket closes with code 1001 next. A client
    /// reconnects to the same address; a restarted server takes it in again.
    Shutdown,
    /// SFU rooms: nothing has arrived from this client's media for a few seconds (its network
    /// may have changed): restart ICE, i.e. send an `offer` made with new ICE credentials
    /// (`RTCPeerConnection.restartIce()`). Everything else of the call stays as it is.
    IceRestart,
    /// A `resume` succeeded: the messages this client missed follow, then the live ones.
    /// `received` is the last client message number (`seq`) the server processed.
    Resumed {
        id: String,
        room: String,
        received: u64,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        id: String,
        reason: LeaveReason,
    },
    ParticipantUpdated {
        participant: ParticipantInfo,
    },
    /// The room moved to another mode (auto rooms: P2P to SFU); reconnect media that way.
    Mode {
        mode: RoomMode,
    },
    Offer {
        sdp: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// P2P: the sender's track roles by mid, as it stated them.
        #[serde(skip_serializing_if = "Option::is_none")]
        roles: Option<BTreeMap<String, TrackRole>>,
    },
    Answer {
        sdp: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        roles: Option<BTreeMap<String, TrackRole>>,
        /// SFU: the `seq` of the client's offer this answers, so that a client whose earlier
        /// offer never reached the server (it made a new peer connection meanwhile) does not
        /// take this answer for that offer's.
        #[serde(skip_serializing_if = "Option::is_none")]
        re: Option<u64>,
    },
    Candidate {
        candidate: serde_json::Value,
        from: String,
    },
    Chat(ChatMessage),
    /// The room's recording started or stopped (sent to everyone; on join while it runs).
    Recording {
        on: bool,
        /// Who started or stopped it.
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// The recording's name (its folder under `/recordings`).
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Who is speaking now, loudest first, each with a level from 0 to 1 (empty: nobody).
    /// Sent when that changes, at most four times a second, and every second while anyone
    /// speaks.
    Speakers {
        speakers: Vec<SpeakerLevel>,
    },
    /// The participant who has the floor changed (docs/signaling.md says how it is chosen).
    DominantSpeaker {
        id: String,
    },
    /// Last-N: the participants whose video you get (`null`: everyone's). Sent when it
    /// changes.
    VideoSet {
        ids: Option<Vec<String>>,
    },
    /// The room's metadata changed (the server API's `UpdateRoomMetadata`).
    RoomUpdated {
        metadata: String,
    },
    /// Application data (the server API's `SendData`), base64 as it was sent.
    Data {
        /// Who sent it: `None` for the application.
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        data: String,
    },
    /// A moderator acted (sent to everyone in the room).
    Moderation(Moderation),
    /// You are no longer in the room; the server closes the socket after this.
    Removed {
        reason: RemovedReason,
        /// The moderator's name.
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// Fresh ICE servers (TURN credentials are renewed before they expire).
    IceServers {
        ice_servers: Vec<IceServer>,
    },
    /// To a publisher: which simulcast encodings (by `rid`) of its m-line `mid` anyone
    /// receives; the browser pauses the others.
    Layers {
        mid: String,
        active: BTreeMap<String, bool>,
    },
    /// To a receiver in an SFU room, every 2 s while its media is connected: the media
    /// server's bandwidth estimate toward it and the layer of each video track it receives.
    Stats {
        estimate_bps: Option<u64>,
        tracks: BTreeMap<String, TrackStats>,
    },
    Pong,
    Error {
        code: ErrorCode,
        message: String,
        /// The `seq` of the client message refused, when it had one: a client with several
        /// requests out (an offer, an answer, `record`) knows which one failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        re: Option<u64>,
    },
}

/// Error codes of the `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Not JSON, an unknown `type`, or missing or wrong fields.
    BadMessage,
    /// Over 64 KiB.
    TooLarge,
    /// `join` with a version other than 1.
    UnsupportedVersion,
    /// A room or display name that is empty, too long or has control characters.
    InvalidName,
    /// A message that needs `join` first.
    NotJoined,
    /// `join` twice on one connection.
    AlreadyJoined,
    /// A P2P room already has two participants.
    RoomFull,
    /// `to` names no one in the room, or the message makes no sense in the room's mode.
    BadTarget,
    /// The media server refused the SDP (codec, syntax).
    MediaError,
    /// A chat message over 2000 characters or empty.
    BadChat,
    /// No access token, or one that does not verify (signature, key, expiry).
    Unauthorized,
    /// The access token does not grant this (another room, no `roomJoin`, no chat, no
    /// recording, no moderation, media a peer-to-peer room cannot restrict).
    Forbidden,
    /// A newer socket joined with the same identity; this one is closed.
    Replaced,
    /// This identity was removed from the room with a ban.
    Banned,
    /// The room is locked.
    RoomLocked,
    /// The server has as many rooms as it may have.
    ServerFull,
    /// Too many messages of this kind; the message was dropped (one error a second at most).
    RateLimited,
    /// A `roles` map with an unknown role, a bad mid or too many entries; the offer or answer
    /// was dropped.
    BadRoles,
    /// A `resume` found no participant to take back (gone, or the secret is wrong): join again.
    ResumeFailed,
    /// The server is shutting down: try again in a moment (it may be restarting).
    ShuttingDown,
}

impl ErrorCode {
    /// The code as it is on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad-message",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::UnsupportedVersion => "unsupported-version",
            ErrorCode::InvalidName => "invalid-name",
            ErrorCode::NotJoined => "not-joined",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::BadTarget => "bad-target",
            ErrorCode::MediaError => "media-error",
            ErrorCode::BadChat => "bad-chat",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Replaced => "replaced",
            ErrorCode::Banned => "banned",
            ErrorCode::RoomLocked => "room-locked",
            ErrorCode::ServerFull => "server-full",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::BadRoles => "bad-roles",
            ErrorCode::ResumeFailed => "resume-failed",
            ErrorCode::ShuttingDown => "shutting-down",
        }
    }
}

/// Parses one text frame from a client.
pub fn parse(text: &str) -> Result<ClientMessage, (ErrorCode, String)> {
    parse_sequenced(text).map(|(m, _)| m)
}

/// Parses one text frame from a client, with its message number (`seq`, optional: a client
/// that numbers its messages has those a dropped socket lost sent again after a `resume`).
pub fn parse_sequenced(text: &str) -> Result<(ClientMessage, Option<u64>), (ErrorCode, String)> {
    let bad = |e: serde_json::Error| (ErrorCode::BadMessage, format!("malformed message: {e}"));
    if text.len() > MAX_MESSAGE {
        return Err((
            ErrorCode::TooLarge,
            format!(
                "message of {} bytes refused; the limit is {MAX_MESSAGE}",
                text.len()
            ),
        ));
    }
    let mut value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(bad)?;
    let seq = match value.remove("seq") {
        None => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            (
                ErrorCode::BadMessage,
                "malformed message: seq must be a non-negative integer".to_string(),
            )
        })?),
    };
    let message = serde_json::from_value(serde_json::Value::Object(value)).map_err(bad)?;
    Ok((message, seq))
}

/// Checks a room or display name: 1–64 characters, no control characters.
pub fn valid_name(s: &str) -> bool {
    let n = s.chars().count();
    (1..=64).contains(&n) && !s.chars().any(char::is_control) && !s.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_client_message() {
        let join = parse(r#"{"type":"join","v":1,"room":"r","name":"Ann","mode":"p2p"}"#).unwrap();
        assert_eq!(
            join,
            ClientMessage::Join {
                v: 1,
                room: "r".into(),
                name: "Ann".into(),
                mode: Some(RoomMode::P2p),
                token: None
            }
        );
        assert!(matches!(
            parse(r#"{"type":"offer","sdp":"v=0"}"#),
            Ok(ClientMessage::Offer { to: None, .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"candidate","candidate":{"candidate":"x"},"to":"p2"}"#),
            Ok(ClientMessage::Candidate { .. })
        ));
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        assert_eq!(
            parse(r#"{"type":"mute","audio":true,"video":false}"#),
            Ok(ClientMessage::Mute {
                audio: true,
                video: false
            })
        );
    }

    #[test]
    fn refuses_bad_and_huge_messages() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"type":"dance"}"#,
            r#"{"type":"chat"}"#,
            r#"{"type":"chat","text":"a","x":1}"#,
            "\u{0}",
        ] {
            assert_eq!(parse(bad).unwrap_err().0, ErrorCode::BadMessage, "{bad:?}");
        }
        let huge = format!(r#"{{"type":"chat","text":"{}"}}"#, "a".repeat(MAX_MESSAGE));
        assert_eq!(parse(&huge).unwrap_err().0, ErrorCode::TooLarge);
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let m = serde_json::to_value(ServerMessage::Error {
            code: ErrorCode::RoomFull,
            message: "full".into(),
            re: None,
        })
        .unwrap();
        assert_eq!(
            m,
            serde_json::json!({"type": "error", "code": "room-full", "message": "full"})
        );
        let c = ServerMessage::Chat(ChatMessage {
            id: 1,
            from: "p1".into(),
            name: "A".into(),
            text: "hi".into(),
            time: 5,
            re: Some(8),
        });
        assert_eq!(
            serde_json::to_value(c).unwrap(),
            serde_json::json!({"type": "chat", "id": 1, "from": "p1", "name": "A", "text": "hi", "time": 5, "re": 8})
        );
    }

    const VALID: [&str; 4] = [
        r#"{"type":"join","v":1,"room":"r","name":"Ann","mode":"auto","token":"t"}"#,
        r#"{"type":"offer","sdp":"v=0\r\n","to":"p2"}"#,
        r#"{"type":"candidate","candidate":{"candidate":"x","sdpMid":"0"},"to":"p1"}"#,
        r#"{"type":"mute","audio":true,"video":false}"#,
    ];

    /// What every answer of `parse` satisfies: a refusal is `bad-message` (or `too-large` past
    /// the limit) with a reason no longer than the frame plus a line of explanation.
    fn check(text: &str) -> Result<(), TestCaseError> {
        if let Err((code, message)) = parse(text) {
            let expected = if text.len() > MAX_MESSAGE {
                ErrorCode::TooLarge
            } else {
                ErrorCode::BadMessage
            };
            prop_assert_eq!(code, expected);
            prop_assert!(
                !message.is_empty() && message.len() <= text.len() + 300,
                "{message}"
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(sori_testkit::prop::config(4000))]

        #[test]
        fn arbitrary_frames_parse_or_fail_cleanly(text in any::<String>()) {
            check(&text)?;
        }

        #[test]
        fn mutated_messages_parse_or_fail_cleanly(which in 0..VALID.len(), seed in any::<u64>()) {
            let mut rng = sori_testkit::Rng::new(seed);
            let mut bytes = VALID[which].as_bytes().to_vec();
            for _ in 0..1 + rng.below(3) {
                bytes = sori_testkit::mutate::bytes(&bytes, &mut rng);
            }
            check(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn built_messages_parse_to_what_was_built(
            room in any::<String>(),
            name in any::<String>(),
            text in any::<String>(),
            audio in any::<bool>(),
            video in any::<bool>(),
        ) {
            let join = serde_json::json!({"type": "join", "v": 1, "room": room, "name": name});
            prop_assert_eq!(
                parse(&join.to_string()),
                Ok(ClientMessage::Join { v: 1, room, name, mode: None, token: None })
            );
            let chat = serde_json::json!({"type": "chat", "text": text});
            prop_assert_eq!(parse(&chat.to_string()), Ok(ClientMessage::Chat { text }));
            let mute = serde_json::json!({"type": "mute", "audio": audio, "video": video});
            prop_assert_eq!(parse(&mute.to_string()), Ok(ClientMessage::Mute { audio, video }));
        }
    }

    #[test]
    fn error_code_names_are_the_wire_names() {
        for code in [
            ErrorCode::BadMessage,
            ErrorCode::TooLarge,
            ErrorCode::UnsupportedVersion,
            ErrorCode::InvalidName,
            ErrorCode::NotJoined,
            ErrorCode::AlreadyJoined,
            ErrorCode::RoomFull,
            ErrorCode::BadTarget,
            ErrorCode::MediaError,
            ErrorCode::BadChat,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::Replaced,
            ErrorCode::Banned,
            ErrorCode::RoomLocked,
            ErrorCode::ServerFull,
            ErrorCode::RateLimited,
            ErrorCode::BadRoles,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.name());
        }
    }

    #[test]
    fn names() {
        assert!(valid_name("Room 1"));
        assert!(valid_name("한국어"));
        assert!(!valid_name(""));
        assert!(!valid_name("   "));
        assert!(!valid_name("a\nb"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
