//! Hostile frames: thousands of mutated messages (bytes flipped, cut, spliced; some as binary
//! frames, some near or over the size limits) from one participant of an SFU room. Each gets
//! the documented reply: `error` with the right code, or — when the mutation left a valid
//! message — what that message does. The server stays up, the two other participants stay in
//! the room and hear only what the hostile one legitimately did, and a newcomer joins.

mod common;

use std::collections::BTreeMap;

use common::{offer, server_with, Client};
use serde_json::{json, Value};
use sori_signal::protocol::{self, ClientMessage, MAX_CHAT_CHARS, MAX_MESSAGE};
use sori_signal::{Limits, SignalConfig};

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

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

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
    /// A candidate without `to`: accepted and ignored.
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
        ClientMessage::Join { .. } => Reply::Error("already-joined"),
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
            Seen::Left(id) => *e == json!({"type": "participant-left", "id": id}),
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
        ..Limits::default()
    };
    let s = server_with(SignalConfig {
        limits,
        ..SignalConfig::default()
    })
    .await;

    // Two participants who behave, and who can talk.
    let (mut a, joined) = Client::join(&s.url, ROOM, "Ada").await;
    let a_id = joined["id"].as_str().unwrap().to_string();
    let (mut b, joined) = Client::join(&s.url, ROOM, "Grace").await;
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

    // The hostile one.
    let (mut m, joined) = Client::join(&s.url, ROOM, "Mallory").await;
    let mut m_id = joined["id"].as_str().unwrap().to_string();
    for c in [&mut a, &mut b] {
        let v = c.recv().await;
        assert_eq!(
            (&v["type"], &v["participant"]["id"]),
            (&json!("participant-joined"), &json!(m_id))
        );
    }
    let candidate = json!({"candidate": "candidate:1 1 udp 2122260223 192.0.2.7 50000 typ host",
                           "sdpMid": "0", "sdpMLineIndex": 0});
    // The web client's messages (web/app.js), and the P2P ones an SFU room refuses.
    let seeds = [
        json!({"type": "join", "v": 1, "room": ROOM, "name": "Mallory", "mode": "sfu"}),
        json!({"type": "offer", "sdp": OFFER}),
        json!({"type": "answer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}),
        json!({"type": "candidate", "candidate": candidate}),
        json!({"type": "candidate", "candidate": candidate, "to": b_id}),
        json!({"type": "offer", "sdp": "v=0\r\n", "to": a_id}),
        json!({"type": "chat", "text": "hello from the storm"}),
        json!({"type": "mute", "audio": true, "video": false}),
        json!({"type": "record", "on": true}),
        json!({"type": "record", "on": false}),
        json!({"type": "ping"}),
        json!({"type": "leave"}),
    ];
    let seeds: Vec<Vec<u8>> = seeds.iter().map(|v| v.to_string().into_bytes()).collect();

    let mut rng = Rng(0x5eed_5016_f00d_0001);
    let mut outcomes = BTreeMap::<String, usize>::new();
    let mut seen = Vec::new();
    let mut has_media = false;
    // Messages the media server sends on its own: offers, and `mode` when it dropped the peer.
    let mut unprompted = 0;
    let (mut unmutated, mut binaries) = (0, [0, 0]);
    let started = std::time::Instant::now();
    for round in 0..FRAMES {
        let mut frame = seeds[rng.below(seeds.len())].clone();
        // One frame in eight goes unmutated, so that valid messages (leave and come back, mute,
        // chat, ping) run among the broken ones and the state they change is checked.
        let mutations = if rng.below(8) == 0 {
            0
        } else {
            1 + rng.below(4)
        };
        if mutations == 0 {
            unmutated += 1;
        }
        for _ in 0..mutations {
            match rng.below(4) {
                0 if !frame.is_empty() => {
                    let i = rng.below(frame.len());
                    frame[i] = rng.next() as u8;
                }
                0 | 1 => frame.truncate(rng.below(frame.len() + 1)),
                2 => {
                    let i = rng.below(frame.len() + 1);
                    let other = &seeds[rng.below(seeds.len())];
                    let j = rng.below(other.len());
                    frame.splice(i..i, other[j..].iter().copied());
                }
                _ => {
                    let i = rng.below(frame.len() + 1);
                    frame.insert(i, b"{}[]\",:0\\"[rng.below(9)]);
                }
            }
        }
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
        let binary = rng.below(10) == 0;
        if binary {
            binaries[usize::from(std::str::from_utf8(&frame).is_ok())] += 1;
        } else {
            frame = String::from_utf8_lossy(&frame).into_owned().into_bytes();
        }
        let expect = expected(&frame, binary, has_media);
        if binary {
            m.send_binary(frame.clone());
        } else {
            m.send_text(String::from_utf8(frame.clone()).unwrap());
        }
        // Whatever the frame was, a ping right after it is answered unless the socket closed;
        // the frame's own replies come first.
        m.send(json!({"type": "ping"}));
        let pongs = if matches!(expect, Reply::Pong) { 2 } else { 1 };
        let mut replies = Vec::new();
        let mut ponged = 0;
        let closed = loop {
            assert!(
                replies.len() < 16,
                "round {round}: a flood of replies: {replies:?}"
            );
            let Some(v) = m.next().await else {
                break true;
            };
            match v["type"].as_str() {
                Some("pong") => {
                    ponged += 1;
                    if ponged == pongs {
                        break false;
                    }
                }
                Some("mode") => unprompted += 1,
                Some("offer") if v.get("from").is_none() => unprompted += 1,
                _ => replies.push(v),
            }
        };
        let closes = matches!(expect, Reply::Leave | Reply::FrameTooLarge);
        assert_eq!(
            closed,
            closes,
            "round {round}: the socket {} after {}, expected {expect:?}",
            if closed { "closed" } else { "stayed open" },
            show(&frame)
        );
        let what = |replies: &[Value]| {
            format!(
                "round {round}: {} got {replies:?}, expected {expect:?}",
                show(&frame)
            )
        };
        let is_error = |v: &Value, code: &str| {
            v["type"] == "error"
                && v["code"] == code
                && v["message"].as_str().is_some_and(|m| !m.is_empty())
        };
        let outcome = match &expect {
            Reply::Error(code) => {
                assert!(
                    replies.len() == 1 && is_error(&replies[0], code),
                    "{}",
                    what(&replies)
                );
                format!("error {code}")
            }
            Reply::RecordRefused => {
                assert!(
                    replies.len() == 1 && is_error(&replies[0], "media-error"),
                    "{}",
                    what(&replies)
                );
                "error media-error (record)".into()
            }
            Reply::Pong | Reply::Nothing => {
                assert!(replies.is_empty(), "{}", what(&replies));
                if matches!(expect, Reply::Pong) {
                    "pong"
                } else {
                    "no reply (candidate)"
                }
                .into()
            }
            Reply::Muted { audio, video } => {
                assert!(replies.is_empty(), "{}", what(&replies));
                seen.push(Seen::Muted {
                    id: m_id.clone(),
                    audio: *audio,
                    video: *video,
                });
                "no reply (mute, seen by the others)".into()
            }
            Reply::Chat(text) => {
                let ok = replies.len() == 1
                    && replies[0]["type"] == "chat"
                    && replies[0]["from"] == m_id
                    && replies[0]["text"] == *text;
                assert!(ok, "{}", what(&replies));
                seen.push(Seen::Exactly(replies[0].clone()));
                "chat".into()
            }
            Reply::RecordingOff => {
                let ok = replies.len() == 1
                    && replies[0] == json!({"type": "recording", "on": false, "by": m_id});
                assert!(ok, "{}", what(&replies));
                seen.push(Seen::Exactly(replies[0].clone()));
                "recording off".into()
            }
            Reply::Answer => {
                assert!(replies.len() == 1, "{}", what(&replies));
                if replies[0]["type"] == "answer" {
                    assert!(
                        replies[0]["sdp"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("v=0")),
                        "{}",
                        what(&replies)
                    );
                    seen.push(Seen::Media {
                        id: m_id.clone(),
                        certain: !has_media,
                    });
                    has_media = true;
                    "answer".into()
                } else {
                    assert!(is_error(&replies[0], "media-error"), "{}", what(&replies));
                    "error media-error (offer)".into()
                }
            }
            Reply::MediaAnswer => match replies.as_slice() {
                [] => "no reply (answer)".into(),
                [e] if is_error(e, "media-error") => "error media-error (answer)".into(),
                _ => panic!("{}", what(&replies)),
            },
            Reply::Leave | Reply::FrameTooLarge => {
                assert!(replies.is_empty(), "{}", what(&replies));
                // The server let the participant go before closing: the others saw it leave.
                // Come back, as a browser would.
                seen.push(Seen::Left(m_id.clone()));
                let (again, joined) = Client::join(&s.url, ROOM, "Mallory").await;
                m = again;
                m_id = joined["id"].as_str().unwrap().to_string();
                let ids: Vec<&Value> = joined["participants"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| &p["id"])
                    .collect();
                assert_eq!(
                    ids,
                    [&json!(a_id), &json!(b_id)],
                    "no one left over: {joined}"
                );
                seen.push(Seen::Joined(m_id.clone()));
                has_media = false;
                if matches!(expect, Reply::Leave) {
                    "closed (leave)"
                } else {
                    "closed (frame over 64 KiB)"
                }
                .into()
            }
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    let storm = started.elapsed();

    // The good two are still there, still hear each other, and heard nothing but what the
    // hostile one did — both the same, in the same order.
    a.send(json!({"type": "chat", "text": "still here?"}));
    let a_saw = until_chat(&mut a, &a_id, "still here?").await;
    let b_saw = until_chat(&mut b, &a_id, "still here?").await;
    assert_eq!(a_saw, b_saw, "both saw the same room");
    check_seen(&a_saw, &seen);
    b.send(json!({"type": "chat", "text": "yes"}));
    for c in [&mut a, &mut b] {
        let v = c.recv().await;
        assert_eq!(
            (&v["type"], &v["from"], &v["text"]),
            (&json!("chat"), &json!(b_id), &json!("yes"))
        );
    }

    // A newcomer finds exactly the three, and media still works.
    let (mut c, joined) = Client::join(&s.url, ROOM, "Hedy").await;
    let c_id = joined["id"].as_str().unwrap().to_string();
    let mut ids: Vec<&str> = joined["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = [a_id.as_str(), b_id.as_str(), m_id.as_str()];
    want.sort();
    assert_eq!(ids, want, "{joined}");
    for c in [&mut a, &mut b] {
        let v = c.recv().await;
        assert_eq!(
            (&v["type"], &v["participant"]["id"]),
            (&json!("participant-joined"), &json!(c_id))
        );
    }
    let rest = m.close().await;
    assert!(rest.iter().all(|v| v["type"] != "error"), "{rest:?}");
    for c in [&mut a, &mut b, &mut c] {
        assert_eq!(c.expect("participant-left").await["id"], m_id);
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

    println!(
        "{FRAMES} frames ({unmutated} unmutated seeds; {} binary, {} of them UTF-8) in {storm:?}; \
         the media server spoke unprompted {unprompted} times",
        binaries[0] + binaries[1],
        binaries[1]
    );
    for (outcome, n) in &outcomes {
        println!("{n:6}  {outcome}");
    }
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
