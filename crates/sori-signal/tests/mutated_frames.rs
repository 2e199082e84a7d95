//! Hostile frames: thousands of mutated messages (bytes flipped, cut, spliced; some as binary
//! frames, some near or over the size limits) from one participant of an SFU room. Each gets
//! the documented reply: `error` with the right code, or — when the mutation left a valid
//! message — what that message does. The server stays up, the two other participants stay in
//! the room and hear only what the hostile one legitimately did, and a newcomer joins.

mod common;

use std::collections::BTreeMap;

use common::{offer, server_with, Client, Server};
use serde_json::{json, Value};
use sori_signal::protocol::{self, ClientMessage, MAX_CHAT_CHARS, MAX_MESSAGE};
use sori_signal::{Limits, SignalConfig};
use sori_testkit::{mutate, Rng};

const ROOM: &str = "storm";
const FRAMES: usize = 3000;
/// Largest frame the server reads at all (the message limit); one byte more closes the socket.
const MAX_FRAME: usize = MAX_MESSAGE;

/// A browser-like offer (Opus and VP8 to send), fixed so that every run mutates the same bytes.
const OFFER: &str = "v=0\r\n\
o=- 2872696509426789441 2 IN IP4 0.0.0.0\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=msid-semantic: WMS storm\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:sc3uAcEIxeGjx9K5\r\n\
a=ice-pwd:MoxLiipkig7CCUJ0GxpUeh\r\n\
a=fingerprint:sha-256 FB:6D:15:AC:5A:D8:52:2D:E7:28:44:71:01:A6:85:D4:\
2C:45:59:30:ED:94:4B:FE:C3:2E:23:DB:FE:15:FF:50\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=sendonly\r\n\
a=msid:storm audio\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=ssrc:104556380 cname:storm\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:sc3uAcEIxeGjx9K5\r\n\
a=ice-pwd:MoxLiipkig7CCUJ0GxpUeh\r\n\
a=fingerprint:sha-256 FB:6D:15:AC:5A:D8:52:2D:E7:28:44:71:01:A6:85:D4:\
2C:45:59:30:ED:94:4B:FE:C3:2E:23:DB:FE:15:FF:50\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=sendonly\r\n\
a=msid:storm video\r\n\
a=rtcp-mux\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 nack\r\n\
a=rtcp-fb:96 nack pli\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=ssrc-group:FID 2203288438 1647926277\r\n\
a=ssrc:2203288438 cname:storm\r\n\
a=ssrc:1647926277 cname:storm\r\n";

/// What a frame must get back before the `pong` of the `ping` sent after it.
#[derive(Debug)]
enum Reply {
    /// One `error` with this code.
    Error(&'static str),
    /// A `pong` (the frame was a `ping`).
    Pong,
    /// Its chat message, text trimmed, to everyone.
    Chat(String),
    /// `record` with `on: true`: `error` `media-error`, as the server has no recordings
    /// directory.
    RecordRefused,
    /// `recording` off, to everyone (`record` with `on: false`; nothing was recording).
    RecordingOff,
    /// `mute`: nothing for the sender; the others see it.
    Muted { audio: bool, video: bool },
    /// An offer to the media server: `answer`, or `error` `media-error`.
    Answer,
    /// An answer to the media server once it has a peer for this participant: nothing, or
    /// `media-error` (none of its offers is outstanding, or the peer timed out).
    MediaAnswer,
    /// A candidate without `to`, or a well-formed `view`: accepted, no reply.
    Nothing,
    /// `leave`: the server closes the socket.
    Leave,
    /// Over the largest frame the server reads: it closes the socket.
    FrameTooLarge,
}

/// The reply the protocol documents for `frame` from a participant of an SFU room.
fn expected(frame: &[u8], binary: bool, has_media: bool) -> Reply {
    if frame.len() > MAX_FRAME {
        return Reply::FrameTooLarge;
    }
    // Binary frames that are UTF-8 are read as text; the others are refused.
    let Ok(text) = std::str::from_utf8(frame) else {
        assert!(binary, "text frames are sent as UTF-8");
        return Reply::Error("bad-message");
    };
    let message = match protocol::parse(text) {
        Ok(m) => m,
        Err((code, _)) => {
            // Said independently of the parser: the size, then whether it is JSON at all.
            if text.len() > MAX_MESSAGE {
                assert_eq!(code, protocol::ErrorCode::TooLarge, "{}", show(frame));
                return Reply::Error("too-large");
            }
            assert_eq!(code, protocol::ErrorCode::BadMessage, "{}", show(frame));
            return Reply::Error("bad-message");
        }
    };
    assert!(text.len() <= MAX_MESSAGE, "parsed: {}", show(frame));
    match message {
        ClientMessage::Ping => Reply::Pong,
        ClientMessage::Join { .. } | ClientMessage::Resume { .. } => Reply::Error("already-joined"),
        ClientMessage::Leave => Reply::Leave,
        // Addressed to a participant: P2P relaying, which an SFU room refuses.
        ClientMessage::Offer { to: Some(_), .. }
        | ClientMessage::Answer { to: Some(_), .. }
        | ClientMessage::Candidate { to: Some(_), .. } => Reply::Error("bad-target"),
        ClientMessage::Offer { to: None, .. } => Reply::Answer,
        ClientMessage::Answer { to: None, .. } if has_media => Reply::MediaAnswer,
        ClientMessage::Answer { to: None, .. } => Reply::Error("bad-target"),
        ClientMessage::Candidate { to: None, .. } => Reply::Nothing,
        ClientMessage::Chat { text } => {
            let text = text.trim();
            if text.is_empty() || text.chars().count() > MAX_CHAT_CHARS {
                Reply::Error("bad-chat")
            } else {
                Reply::Chat(text.to_string())
            }
        }
        ClientMessage::Mute { audio, video } => Reply::Muted { audio, video },
        // A view is checked whole; one the server takes changes only what this participant
        // receives, and names no track it receives here.
        ClientMessage::View { tracks } => match protocol::parse_views(&tracks) {
            Ok(_) => Reply::Nothing,
            Err(_) => Reply::Error("bad-message"),
        },
        // Last-N checks its pins only; the rest changes what this participant receives.
        ClientMessage::LastN { pinned, .. } if pinned.len() > 16 => Reply::Error("bad-message"),
        ClientMessage::LastN { .. } => Reply::Nothing,
        ClientMessage::Record { on: true } => Reply::RecordRefused,
        ClientMessage::Record { on: false } => Reply::RecordingOff,
        // Moderation without roomAdmin (a mute that names no kind asks for nothing).
        ClientMessage::MuteParticipant {
            audio: None,
            video: None,
            ..
        } => Reply::Nothing,
        ClientMessage::MuteParticipant { .. }
        | ClientMessage::RemoveParticipant { .. }
        | ClientMessage::LockRoom { .. }
        | ClientMessage::EndRoom => Reply::Error("forbidden"),
    }
}

/// A frame for a failure message.
fn show(frame: &[u8]) -> String {
    let text = String::from_utf8_lossy(frame);
    let mut short: String = text.chars().take(300).collect();
    if short.len() < text.len() {
        short.push_str(&format!("… ({} bytes)", frame.len()));
    }
    short
}

/// What the two well-behaved participants must see of the hostile one, in order.
#[derive(Debug)]
enum Seen {
    /// This exact message (chat, recording).
    Exactly(Value),
    Joined(String),
    Left(String),
    Muted {
        id: String,
        audio: bool,
        video: bool,
    },
    /// Its media connected: `participant-updated` with a `media_id`; `certain` when this was
    /// surely a fresh media join, not a renegotiation.
    Media {
        id: String,
        certain: bool,
    },
}

/// Checks `events` (what a good participant saw during the storm) against `seen`.
fn check_seen(events: &[Value], seen: &[Seen]) {
    let mut events = events.iter().peekable();
    // The hostile participant's `media_id` as last announced: a mute leaves it as it is, a
    // fresh media join changes it (every media peer has a new id).
    let mut media_id = Value::Null;
    for s in seen {
        let updated = |e: &Value, id: &str| {
            e["type"] == "participant-updated" && e["participant"]["id"] == id
        };
        if let Seen::Media { id, certain } = s {
            let hit = events.peek().is_some_and(|e| {
                updated(e, id)
                    && e["participant"]["media_id"].is_string()
                    && e["participant"]["media_id"] != media_id
            });
            if hit {
                media_id = events.next().unwrap()["participant"]["media_id"].clone();
            } else {
                assert!(!certain, "no media update for {id}: {:?}", events.peek());
            }
            continue;
        }
        let e = events.next().unwrap_or_else(|| panic!("missing {s:?}"));
        let ok = match s {
            Seen::Exactly(v) => e == v,
            Seen::Joined(id) => {
                media_id = Value::Null;
                e["type"] == "participant-joined" && e["participant"]["id"] == *id
            }
            Seen::Left(id) => *e == json!({"type": "participant-left", "id": id, "reason": "left"}),
            Seen::Muted { id, audio, video } => {
                updated(e, id)
                    && e["participant"]["audio_muted"] == *audio
                    && e["participant"]["video_muted"] == *video
                    && e["participant"]["media_id"] == media_id
            }
            Seen::Media { .. } => unreachable!("handled above"),
        };
        assert!(ok, "expected {s:?}, saw {e}");
    }
    if let Some(e) = events.next() {
        panic!("a spurious event: {e}");
    }
}

/// Reads `c`'s messages up to (and including) the chat `text` from `from`; returns those before.
async fn until_chat(c: &mut Client, from: &str, text: &str) -> Vec<Value> {
    let mut before = Vec::new();
    // Bounded: the storm causes a few hundred events at most.
    for _ in 0..10 * FRAMES {
        let v = c.recv().await;
        if v["type"] == "chat" && v["from"] == from && v["text"] == text {
            return before;
        }
        before.push(v);
    }
    panic!("no chat {text:?} from {from}");
}

/// The hostile participant and what the storm has done so far.
struct Storm {
    url: String,
    a_id: String,
    b_id: String,
    m: Client,
    m_id: String,
    /// The hostile participant has a media peer (an offer of its was answered).
    has_media: bool,
    /// What the good participants must see of it, in order.
    seen: Vec<Seen>,
    /// How many frames ended how.
    outcomes: BTreeMap<String, usize>,
    /// Messages the media server sent on its own: offers, and `mode` when it dropped the peer.
    unprompted: usize,
    unmutated: usize,
    /// Binary frames sent: [not UTF-8, UTF-8].
    binaries: [usize; 2],
}

/// Seeds of the storm: the web client's messages (web/app.js), and the P2P ones an SFU room
/// refuses.
fn seeds(a_id: &str, b_id: &str) -> Vec<Vec<u8>> {
    let candidate = json!({"candidate": "candidate:1 1 udp 2122260223 192.0.2.7 50000 typ host",
                           "sdpMid": "0", "sdpMLineIndex": 0});
    let seeds = [
        json!({"type": "join", "v": 1, "room": ROOM, "name": "Mallory", "mode": "sfu"}),
        json!({"type": "offer", "sdp": OFFER}),
        json!({"type": "answer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}),
        json!({"type": "candidate", "candidate": candidate}),
        json!({"type": "candidate", "candidate": candidate, "to": b_id}),
        json!({"type": "offer", "sdp": "v=0\r\n", "to": a_id}),
        json!({"type": "chat", "text": "hello from the storm"}),
        json!({"type": "mute", "audio": true, "video": false}),
        json!({"type": "last-n", "n": 4, "pinned": ["p1", "p2"]}),
        json!({"type": "view", "tracks": {"track-5": {"width": 640, "height": 360, "visible": true, "quality": "auto"},
                                          "track-6": {"width": 320, "height": 180, "visible": false}}}),
        json!({"type": "record", "on": true}),
        json!({"type": "record", "on": false}),
        json!({"type": "ping"}),
        json!({"type": "leave"}),
    ];
    seeds.iter().map(|v| v.to_string().into_bytes()).collect()
}

/// Frame number `round` of the storm: a seed, mutated `mutations` times (bytes flipped, cut,
/// spliced with another seed, JSON punctuation inserted), sometimes padded to the size limits.
fn storm_frame(round: usize, seeds: &[Vec<u8>], mutations: usize, rng: &mut Rng) -> Vec<u8> {
    let mut frame = mutate::json_frame(seeds, mutations, rng);
    // Sizes at the limits: trailing spaces keep a valid message valid.
    let pad_to = match round {
        1000 => Some(MAX_MESSAGE),
        1001 => Some(MAX_MESSAGE + 1),
        _ if rng.below(50) == 0 => Some(MAX_MESSAGE - 64 + rng.below(128)),
        _ => None,
    };
    if let Some(len) = pad_to {
        frame.resize(len.max(frame.len()), b' ');
    }
    frame
}

fn is_error(v: &Value, code: &str) -> bool {
    v["type"] == "error"
        && v["code"] == code
        && v["message"].as_str().is_some_and(|m| !m.is_empty())
}

impl Storm {
    /// Sends one frame and a ping after it; returns the frame's replies (pongs and unprompted
    /// messages aside) and whether the socket closed.
    async fn send(&mut self, frame: &[u8], binary: bool, expect: &Reply) -> (Vec<Value>, bool) {
        if binary {
            self.m.send_binary(frame.to_vec());
        } else {
            self.m.send_text(String::from_utf8(frame.to_vec()).unwrap());
        }
        // Whatever the frame was, a ping right after it is answered unless the socket closed;
        // the frame's own replies come first.
        self.m.send(json!({"type": "ping"}));
        let pongs = if matches!(expect, Reply::Pong) { 2 } else { 1 };
        let mut replies = Vec::new();
        let mut ponged = 0;
        loop {
            assert!(replies.len() < 16, "a flood of replies: {replies:?}");
            let Some(v) = self.m.next().await else {
                return (replies, true);
            };
            match v["type"].as_str() {
                Some("pong") => {
                    ponged += 1;
                    if ponged == pongs {
                        return (replies, false);
                    }
                }
                // The server's own: a mode change, last-N's video set, who is speaking.
                Some("mode" | "video-set" | "speakers" | "dominant-speaker") => {
                    self.unprompted += 1
                }
                Some("offer") if v.get("from").is_none() => self.unprompted += 1,
                _ => replies.push(v),
            }
        }
    }

    /// Checks the replies against `expect`, records what the others must see, and names the
    /// outcome.
    async fn judge(&mut self, expect: &Reply, replies: &[Value], what: &str) -> String {
        let one = |ok: fn(&Value) -> bool| replies.len() == 1 && ok(&replies[0]);
        match expect {
            Reply::Error(code) => {
                assert!(replies.len() == 1 && is_error(&replies[0], code), "{what}");
                format!("error {code}")
            }
            Reply::RecordRefused => {
                assert!(one(|v| is_error(v, "media-error")), "{what}");
                "error media-error (record)".into()
            }
            Reply::Pong => {
                assert!(replies.is_empty(), "{what}");
                "pong".into()
            }
            Reply::Nothing => {
                assert!(replies.is_empty(), "{what}");
                "no reply (candidate, view)".into()
            }
            Reply::Muted { audio, video } => {
                assert!(replies.is_empty(), "{what}");
                let (id, audio, video) = (self.m_id.clone(), *audio, *video);
                self.seen.push(Seen::Muted { id, audio, video });
                "no reply (mute, seen by the others)".into()
            }
            Reply::Chat(text) => {
                let ok = replies.len() == 1
                    && replies[0]["type"] == "chat"
                    && replies[0]["from"] == self.m_id
                    && replies[0]["text"] == *text;
                assert!(ok, "{what}");
                self.seen.push(Seen::Exactly(replies[0].clone()));
                "chat".into()
            }
            Reply::RecordingOff => {
                let off = json!({"type": "recording", "on": false, "by": self.m_id});
                assert!(replies.len() == 1 && replies[0] == off, "{what}");
                self.seen.push(Seen::Exactly(replies[0].clone()));
                "recording off".into()
            }
            Reply::Answer => self.judge_answer(replies, what),
            Reply::MediaAnswer => match replies {
                [] => "no reply (answer)".into(),
                [e] if is_error(e, "media-error") => "error media-error (answer)".into(),
                _ => panic!("{what}"),
            },
            Reply::Leave | Reply::FrameTooLarge => {
                assert!(replies.is_empty(), "{what}");
                self.come_back().await;
                if matches!(expect, Reply::Leave) {
                    "closed (leave)"
                } else {
                    "closed (frame over 64 KiB)"
                }
                .into()
            }
        }
    }

    fn judge_answer(&mut self, replies: &[Value], what: &str) -> String {
        assert!(replies.len() == 1, "{what}");
        if replies[0]["type"] != "answer" {
            assert!(is_error(&replies[0], "media-error"), "{what}");
            return "error media-error (offer)".into();
        }
        let sdp = replies[0]["sdp"].as_str();
        assert!(sdp.is_some_and(|s| s.starts_with("v=0")), "{what}");
        self.seen.push(Seen::Media {
            id: self.m_id.clone(),
            certain: !self.has_media,
        });
        self.has_media = true;
        "answer".into()
    }

    /// The server let the participant go before closing: the others saw it leave. It comes
    /// back, as a browser would, and finds no one left over.
    async fn come_back(&mut self) {
        self.seen.push(Seen::Left(self.m_id.clone()));
        let (again, joined) = Client::join(&self.url, ROOM, "Mallory").await;
        self.m = again;
        self.m_id = joined["id"].as_str().unwrap().to_string();
        let ids: Vec<&Value> = joined["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["id"])
            .collect();
        let want = [&json!(self.a_id), &json!(self.b_id)];
        assert_eq!(ids, want, "no one left over: {joined}");
        self.seen.push(Seen::Joined(self.m_id.clone()));
        self.has_media = false;
    }

    /// One frame of the storm, sent and judged.
    async fn round(&mut self, round: usize, seeds: &[Vec<u8>], rng: &mut Rng) {
        // One frame in eight goes unmutated, so that valid messages (leave and come back, mute,
        // chat, ping) run among the broken ones and the state they change is checked.
        let mutations = if rng.below(8) == 0 {
            0
        } else {
            1 + rng.below(4)
        };
        self.unmutated += usize::from(mutations == 0);
        let mut frame = storm_frame(round, seeds, mutations, rng);
        let binary = rng.below(10) == 0;
        if binary {
            self.binaries[usize::from(std::str::from_utf8(&frame).is_ok())] += 1;
        } else {
            frame = String::from_utf8_lossy(&frame).into_owned().into_bytes();
        }
        let expect = expected(&frame, binary, self.has_media);
        let (replies, closed) = self.send(&frame, binary, &expect).await;
        let closes = matches!(expect, Reply::Leave | Reply::FrameTooLarge);
        assert_eq!(
            closed,
            closes,
            "round {round}: the socket {} after {}, expected {expect:?}",
            if closed { "closed" } else { "stayed open" },
            show(&frame)
        );
        let what = format!(
            "round {round}: {} got {replies:?}, expected {expect:?}",
            show(&frame)
        );
        let outcome = self.judge(&expect, &replies, &what).await;
        *self.outcomes.entry(outcome).or_default() += 1;
    }
}

/// Two participants who behave, and who can talk; returns them with their ids.
async fn good_pair(url: &str) -> (Client, String, Client, String) {
    let (mut a, joined) = Client::join(url, ROOM, "Ada").await;
    let a_id = joined["id"].as_str().unwrap().to_string();
    let (mut b, joined) = Client::join(url, ROOM, "Grace").await;
    let b_id = joined["id"].as_str().unwrap().to_string();
    assert_eq!(joined["participants"][0]["id"], a_id);
    assert_eq!(a.recv().await["participant"]["id"], b_id);
    a.send(json!({"type": "chat", "text": "hello"}));
    for c in [&mut a, &mut b] {
        let v = c.recv().await;
        assert_eq!(
            (&v["type"], &v["from"], &v["text"]),
            (&json!("chat"), &json!(a_id), &json!("hello"))
        );
    }
    (a, a_id, b, b_id)
}

/// The good two are still there, still hear each other, and heard nothing but what the
/// hostile one did — both the same, in the same order.
async fn the_good_two_heard_only_the_storm(storm: &Storm, a: &mut Client, b: &mut Client) {
    let (a_id, b_id) = (&storm.a_id, &storm.b_id);
    a.send(json!({"type": "chat", "text": "still here?"}));
    let a_saw = until_chat(a, a_id, "still here?").await;
    let b_saw = until_chat(b, a_id, "still here?").await;
    assert_eq!(a_saw, b_saw, "both saw the same room");
    check_seen(&a_saw, &storm.seen);
    b.send(json!({"type": "chat", "text": "yes"}));
    for c in [a, b] {
        let v = c.recv().await;
        assert_eq!(
            (&v["type"], &v["from"], &v["text"]),
            (&json!("chat"), &json!(b_id), &json!("yes"))
        );
    }
}

/// A newcomer finds exactly the three, the hostile one leaves cleanly, media still works, and
/// nothing leaked.
async fn a_newcomer_finds_a_sound_room(s: &Server, storm: Storm, a: &mut Client, b: &mut Client) {
    let (mut c, joined) = Client::join(&s.url, ROOM, "Hedy").await;
    let c_id = joined["id"].as_str().unwrap().to_string();
    let mut ids: Vec<&str> = joined["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = [
        storm.a_id.as_str(),
        storm.b_id.as_str(),
        storm.m_id.as_str(),
    ];
    want.sort();
    assert_eq!(ids, want, "{joined}");
    for c in [&mut *a, &mut *b] {
        let v = c.recv().await;
        assert_eq!(
            (&v["type"], &v["participant"]["id"]),
            (&json!("participant-joined"), &json!(c_id))
        );
    }
    let rest = storm.m.close().await;
    assert!(rest.iter().all(|v| v["type"] != "error"), "{rest:?}");
    for c in [a, b, &mut c] {
        assert_eq!(c.expect("participant-left").await["id"], storm.m_id);
    }
    c.send(json!({"type": "offer", "sdp": offer()}));
    assert!(c.expect("answer").await["sdp"]
        .as_str()
        .unwrap()
        .starts_with("v=0"));

    // Nothing leaked: the hostile one's sessions and media peers are all gone.
    assert_eq!(s.metric("sori_rooms").await, 1);
    assert_eq!(s.metric("sori_participants").await, 3);
    let stats = s.media.handle.stats().await.unwrap();
    assert_eq!(
        stats.state.peers, 1,
        "only the newcomer's media peer: {:?}",
        stats.state
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_frames_get_their_replies_and_disturb_no_one() {
    // Thousands of messages from one client as fast as it can: this test is about what each
    // message does, so the rate limits (tested on their own) are out of the way.
    let limits = Limits {
        joins_per_sec: 1e6,
        chat_per_sec: 1e6,
        offers_per_sec: 1e6,
        mutes_per_sec: 1e6,
        relays_per_sec: 1e6,
        views_per_sec: 1e6,
        ..Limits::default()
    };
    let s = server_with(SignalConfig {
        limits,
        ..SignalConfig::default()
    })
    .await;
    let (mut a, a_id, mut b, b_id) = good_pair(&s.url).await;

    // The hostile one.
    let (m, joined) = Client::join(&s.url, ROOM, "Mallory").await;
    let m_id = joined["id"].as_str().unwrap().to_string();
    for c in [&mut a, &mut b] {
        let v = c.recv().await;
        assert_eq!(
            (&v["type"], &v["participant"]["id"]),
            (&json!("participant-joined"), &json!(m_id))
        );
    }
    let seeds = seeds(&a_id, &b_id);
    let mut storm = Storm {
        url: s.url.clone(),
        a_id,
        b_id,
        m,
        m_id,
        has_media: false,
        seen: Vec::new(),
        outcomes: BTreeMap::new(),
        unprompted: 0,
        unmutated: 0,
        binaries: [0, 0],
    };
    let mut rng = Rng::new(0x5eed_5016_f00d_0001);
    let started = std::time::Instant::now();
    for round in 0..FRAMES {
        storm.round(round, &seeds, &mut rng).await;
    }
    let elapsed = started.elapsed();

    the_good_two_heard_only_the_storm(&storm, &mut a, &mut b).await;
    println!(
        "{FRAMES} frames ({} unmutated seeds; {} binary, {} of them UTF-8) in {elapsed:?}; \
         the media server spoke unprompted {} times",
        storm.unmutated,
        storm.binaries[0] + storm.binaries[1],
        storm.binaries[1],
        storm.unprompted
    );
    let outcomes = storm.outcomes.clone();
    for (outcome, n) in &outcomes {
        println!("{n:6}  {outcome}");
    }
    a_newcomer_finds_a_sound_room(&s, storm, &mut a, &mut b).await;
    assert_eq!(outcomes.values().sum::<usize>(), FRAMES);
    // Most mutations break a message; the ones that do not were handled as messages.
    assert!(outcomes["error bad-message"] > FRAMES / 2, "{outcomes:?}");
    assert!(
        outcomes.contains_key("answer"),
        "the offer seed itself is answered"
    );
    assert!(
        outcomes.get("closed (frame over 64 KiB)") >= Some(&1),
        "{outcomes:?}"
    );
}
