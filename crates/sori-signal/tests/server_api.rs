//! The server API over HTTP, as an application (and an attacker) would call it: LiveKit's
//! RoomService in Twirp JSON, every call's effect seen by the participants' sockets, and every
//! refusal answered with Twirp's code and status, changing nothing.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::stub::{self, StubMedia};
use common::{flush, http_post, offer, Client, HttpResponse};
use serde_json::{json, Value};
use sori_media::sori_sfu::{MediaKind, TrackId};
use sori_media::PeerSignal;
use sori_signal::auth::{sign, Claims, Keys, VideoGrant};
use sori_signal::{RoomTimeouts, SignalConfig};

const KEY: &str = "APIserver";
const SECRET: &str = "server-api-test-secret-0123456789";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token as the server SDKs mint one for a call: no identity, just the grant.
fn api_token(f: impl FnOnce(&mut VideoGrant)) -> String {
    let mut grant = VideoGrant::default();
    f(&mut grant);
    let claims = Claims {
        iss: KEY.into(),
        nbf: Some(now() - 1),
        exp: Some(now() + 600),
        video: Some(grant),
        ..Claims::default()
    };
    sign(&claims, SECRET).unwrap()
}

fn admin(room: &str) -> String {
    api_token(|g| {
        g.room = Some(room.into());
        g.room_admin = Some(true);
    })
}

fn join_token(identity: &str, room: &str) -> String {
    let claims = Claims {
        iss: KEY.into(),
        sub: Some(identity.into()),
        name: Some(identity.to_uppercase()),
        nbf: Some(now() - 1),
        exp: Some(now() + 600),
        video: Some(VideoGrant {
            room: Some(room.into()),
            room_join: Some(true),
            ..VideoGrant::default()
        }),
        ..Claims::default()
    };
    sign(&claims, SECRET).unwrap()
}

struct Api {
    stub: Arc<StubMedia>,
    url: String,
    http: SocketAddr,
}

async fn api_server(timeouts: RoomTimeouts) -> Api {
    let stub = StubMedia::new(None);
    let config = SignalConfig {
        keys: Keys::new([(KEY.to_string(), SECRET.to_string())]),
        anonymous: false,
        room_timeouts: timeouts,
        ..SignalConfig::default()
    };
    let (url, http) = stub::server(&stub, config).await;
    Api { stub, url, http }
}

impl Api {
    /// Calls `RoomService.method` with `body`, bearing `token`.
    async fn call(&self, method: &str, token: Option<&str>, body: Value) -> HttpResponse {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        let path = format!("/twirp/livekit.RoomService/{method}");
        http_post(self.http, &path, &headers, body.to_string().as_bytes()).await
    }

    /// A call that must succeed; its JSON answer.
    async fn ok(&self, method: &str, token: &str, body: Value) -> Value {
        let r = self.call(method, Some(token), body).await;
        let text = String::from_utf8_lossy(&r.body).to_string();
        assert_eq!(r.status, 200, "{method}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn join(&self, identity: &str, room: &str) -> Client {
        let mut c = Client::connect(&self.url).await;
        c.send(json!({"type": "join", "v": 1, "room": room, "name": "x",
            "token": join_token(identity, room)}));
        let joined = c.recv().await;
        assert_eq!(joined["type"], "joined", "{joined}");
        c
    }
}

/// The next message `f` accepts, passing over the others (each read is bounded).
async fn next_where(c: &mut Client, f: impl Fn(&Value) -> bool) -> Value {
    loop {
        let m = c.recv().await;
        if f(&m) {
            return m;
        }
    }
}

/// A Twirp error: status, `code`, and the JSON content type the SDKs look for.
fn twirp_error(r: &HttpResponse) -> (u16, String) {
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    (r.status, v["code"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn rooms_are_created_listed_and_ended() {
    let api = api_server(RoomTimeouts::default()).await;
    let create = api_token(|g| g.room_create = Some(true));
    let list = api_token(|g| g.room_list = Some(true));

    let room = api
        .ok(
            "CreateRoom",
            &create,
            json!({"name": "standup", "emptyTimeout": 120, "maxParticipants": 2, "metadata": "m1"}),
        )
        .await;
    assert_eq!(room["name"], "standup");
    assert!(room["sid"].as_str().unwrap().starts_with("RM_"));
    assert_eq!(room["empty_timeout"], 120);
    assert_eq!(room["max_participants"], 2);
    assert_eq!(room["metadata"], "m1");
    assert_eq!(room["num_participants"], 0);
    // Creating it again returns it as it is.
    let again = api
        .ok(
            "CreateRoom",
            &create,
            json!({"name": "standup", "metadata": "other"}),
        )
        .await;
    assert_eq!(again["sid"], room["sid"]);
    assert_eq!(again["metadata"], "m1");

    let mut ada = api.join("ada", "standup").await;
    let _bo = api.join("bo", "standup").await;
    // max_participants: the third is refused.
    let mut cy = Client::connect(&api.url).await;
    cy.send(
        json!({"type": "join", "v": 1, "room": "standup", "name": "x",
        "token": join_token("cy", "standup")}),
    );
    assert_eq!(cy.recv().await["code"], "room-full");

    let rooms = api.ok("ListRooms", &list, json!({})).await;
    let rooms = rooms["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0]["num_participants"], 2);
    let none = api
        .ok("ListRooms", &list, json!({"names": ["elsewhere"]}))
        .await;
    assert_eq!(none["rooms"], json!([]));

    api.ok("DeleteRoom", &create, json!({"room": "standup"}))
        .await;
    let removed = ada.expect("removed").await;
    assert_eq!(removed["reason"], "room-ended");
    let rooms = api.ok("ListRooms", &list, json!({})).await;
    assert_eq!(rooms["rooms"], json!([]));
}

#[tokio::test]
async fn participants_are_listed_updated_muted_and_removed() {
    let api = api_server(RoomTimeouts::default()).await;
    let token = admin("r");
    let mut ada = api.join("ada", "r").await;
    ada.send(json!({"type": "offer", "sdp": offer()}));
    ada.expect("answer").await;
    let mut bo = api.join("bo", "r").await;
    api.stub.signal(
        0,
        PeerSignal::Published {
            track: TrackId(7),
            kind: MediaKind::Audio,
        },
    );
    // Published tracks show once the session server has heard of them.
    let mut listed = Value::Null;
    for _ in 0..100 {
        listed = api
            .ok("ListParticipants", &token, json!({"room": "r"}))
            .await;
        if listed["participants"][0]["tracks"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let people = listed["participants"].as_array().unwrap();
    assert_eq!(people.len(), 2, "{listed}");
    let ada_info = &people[0];
    assert_eq!(ada_info["identity"], "ada");
    assert_eq!(ada_info["name"], "ADA");
    assert_eq!(
        ada_info["tracks"],
        json!([{"sid": "track-7", "type": "AUDIO", "name": "microphone", "muted": false, "source": "MICROPHONE"}])
    );
    let got = api
        .ok(
            "GetParticipant",
            &token,
            json!({"room": "r", "identity": "bo"}),
        )
        .await;
    assert_eq!(got["identity"], "bo");
    assert_eq!(got["state"], "JOINED");

    // A mute by the API: applied at the media server, seen by everyone.
    let muted = api
        .ok(
            "MutePublishedTrack",
            &token,
            json!({"room": "r", "identity": "ada", "trackSid": "track-7", "muted": true}),
        )
        .await;
    assert_eq!(muted["track"]["muted"], true);
    let mutes = api.stub.mutes();
    assert_eq!(mutes.len(), 1);
    assert_eq!((mutes[0].1, mutes[0].2), (MediaKind::Audio, true));
    let moderation = next_where(&mut bo, |m| m["type"] == "moderation").await;
    assert_eq!(moderation["action"], "mute-audio");
    assert_eq!(moderation["by"], "server");

    // Name and metadata: everyone, the participant too, sees them.
    let updated = api
        .ok(
            "UpdateParticipant",
            &token,
            json!({"room": "r", "identity": "bo", "name": "Bo B.", "metadata": "{\"seat\":3}"}),
        )
        .await;
    assert_eq!(updated["name"], "Bo B.");
    // (Ada's own update and the notice of the mute come first.)
    let seen = next_where(&mut ada, |m| {
        m["type"] == "participant-updated" && m["participant"]["identity"] == "bo"
    })
    .await;
    assert_eq!(seen["participant"]["name"], "Bo B.");
    assert_eq!(seen["participant"]["metadata"], "{\"seat\":3}");

    // canPublishData off: Bo's chat is refused from now on.
    api.ok(
        "UpdateParticipant",
        &token,
        json!({"room": "r", "identity": "bo", "permission": {"canPublishData": false}}),
    )
    .await;
    bo.send(json!({"type": "chat", "text": "hello"}));
    let refused = next_where(&mut bo, |m| m["type"] == "error").await;
    assert_eq!(refused["code"], "forbidden");

    // Room metadata and data.
    api.ok(
        "UpdateRoomMetadata",
        &token,
        json!({"room": "r", "metadata": "agenda"}),
    )
    .await;
    let updated = next_where(&mut ada, |m| m["type"] == "room-updated").await;
    assert_eq!(updated["metadata"], "agenda");
    // "hi there" in base64, to Ada alone; the topic "chat" puts it in the chat too.
    api.ok(
        "SendData",
        &token,
        json!({"room": "r", "data": "aGkgdGhlcmU=", "topic": "chat", "destinationIdentities": ["ada"]}),
    )
    .await;
    let data = next_where(&mut ada, |m| m["type"] == "data").await;
    assert_eq!(
        data,
        json!({"type": "data", "topic": "chat", "data": "aGkgdGhlcmU="})
    );
    let chat = next_where(&mut ada, |m| m["type"] == "chat").await;
    assert_eq!(
        (&chat["text"], &chat["from"]),
        (&json!("hi there"), &json!("server"))
    );

    // Removal: Bo is told and gone, Ada sees it leave.
    api.ok(
        "RemoveParticipant",
        &token,
        json!({"room": "r", "identity": "bo"}),
    )
    .await;
    assert_eq!(
        next_where(&mut bo, |m| m["type"] == "removed").await["reason"],
        "removed"
    );
    let left = next_where(&mut ada, |m| m["type"] == "participant-left").await;
    assert_eq!(left["reason"], "removed");
    let listed = api
        .ok("ListParticipants", &token, json!({"room": "r"}))
        .await;
    assert_eq!(listed["participants"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn every_refusal_has_its_twirp_code_and_changes_nothing() {
    let api = api_server(RoomTimeouts::default()).await;
    let mut ada = api.join("ada", "r").await;
    let body = json!({"room": "r", "identity": "ada"});
    let cases: Vec<(&str, Option<String>, Value, u16, &str)> = vec![
        ("no token", None, body.clone(), 401, "unauthenticated"),
        (
            "not a JWT",
            Some("nope".into()),
            body.clone(),
            401,
            "unauthenticated",
        ),
        (
            "signed with another secret",
            Some(
                sign(
                    &Claims {
                        iss: KEY.into(),
                        exp: Some(now() + 60),
                        video: Some(VideoGrant {
                            room: Some("r".into()),
                            room_admin: Some(true),
                            ..VideoGrant::default()
                        }),
                        ..Claims::default()
                    },
                    "another-secret-of-enough-length-00",
                )
                .unwrap(),
            ),
            body.clone(),
            401,
            "unauthenticated",
        ),
        (
            "a join token",
            Some(join_token("ada", "r")),
            body.clone(),
            403,
            "permission_denied",
        ),
        (
            "admin of another room",
            Some(admin("other")),
            body.clone(),
            403,
            "permission_denied",
        ),
        (
            "a room that does not exist",
            Some(admin("nowhere")),
            json!({"room": "nowhere", "identity": "ada"}),
            404,
            "not_found",
        ),
        (
            "an identity that is not there",
            Some(admin("r")),
            json!({"room": "r", "identity": "zed"}),
            404,
            "not_found",
        ),
        (
            "no identity",
            Some(admin("r")),
            json!({"room": "r"}),
            400,
            "invalid_argument",
        ),
    ];
    for (what, token, body, status, code) in cases {
        let r = api.call("RemoveParticipant", token.as_deref(), body).await;
        assert_eq!(twirp_error(&r), (status, code.to_string()), "{what}");
    }
    let create = api_token(|g| g.room_create = Some(true));
    let bad_name = api
        .call("CreateRoom", Some(&create), json!({"name": "a\u{7}b"}))
        .await;
    assert_eq!(twirp_error(&bad_name), (400, "invalid_argument".into()));
    let long_name = api
        .call(
            "UpdateParticipant",
            Some(&admin("r")),
            json!({"room": "r", "identity": "ada", "name": "x".repeat(65)}),
        )
        .await;
    assert_eq!(twirp_error(&long_name), (400, "invalid_argument".into()));
    let r = api.call("ListRooms", Some(&create), json!({})).await;
    assert_eq!(twirp_error(&r), (403, "permission_denied".into()));
    let r = api.call("Nonsense", Some(&create), json!({})).await;
    assert_eq!(twirp_error(&r), (404, "bad_route".into()));
    let r = api
        .call(
            "UpdateSubscriptions",
            Some(&admin("r")),
            json!({"room": "r"}),
        )
        .await;
    assert_eq!(twirp_error(&r), (501, "unimplemented".into()));
    // Malformed JSON, and protobuf (which Sori does not speak).
    let auth = format!("Bearer {create}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", auth.as_str()),
    ];
    let r = http_post(
        api.http,
        "/twirp/livekit.RoomService/CreateRoom",
        &headers,
        b"{",
    )
    .await;
    assert_eq!(twirp_error(&r), (400, "malformed".into()));
    let headers = [
        ("Content-Type", "application/protobuf"),
        ("Authorization", auth.as_str()),
    ];
    let r = http_post(
        api.http,
        "/twirp/livekit.RoomService/CreateRoom",
        &headers,
        b"\x0a\x01r",
    )
    .await;
    assert_eq!(twirp_error(&r), (404, "bad_route".into()));
    // A body over the limit is refused before it is read whole.
    let big = vec![b' '; 200 * 1024];
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", auth.as_str()),
    ];
    let r = http_post(
        api.http,
        "/twirp/livekit.RoomService/CreateRoom",
        &headers,
        &big,
    )
    .await;
    assert_eq!(r.status, 413);

    // Ada is still there and heard of none of it.
    let seen = flush(&mut ada, "still here").await;
    assert!(seen.is_empty(), "{seen:?}");
    let listed = api
        .ok("ListParticipants", &admin("r"), json!({"room": "r"}))
        .await;
    assert_eq!(listed["participants"][0]["identity"], "ada");
}

#[tokio::test]
async fn a_room_nobody_joins_ends_after_its_empty_timeout() {
    let api = api_server(RoomTimeouts {
        empty: Duration::from_secs(300),
        departure: Duration::from_secs(1),
    })
    .await;
    let create = api_token(|g| g.room_create = Some(true));
    let list = api_token(|g| g.room_list = Some(true));
    api.ok(
        "CreateRoom",
        &create,
        json!({"name": "brief", "emptyTimeout": 1}),
    )
    .await;
    api.ok("CreateRoom", &create, json!({"name": "kept"})).await;
    let names = |v: &Value| -> Vec<String> {
        v["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    // Checked every second: gone within three.
    let mut rooms = Vec::new();
    for _ in 0..60 {
        rooms = names(&api.ok("ListRooms", &list, json!({})).await);
        if rooms == ["kept"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rooms, ["kept"]);
    // A room its last participant left ends after the departure timeout (1 s here).
    let ada = api.join("ada", "kept").await;
    ada.close().await;
    for _ in 0..60 {
        rooms = names(&api.ok("ListRooms", &list, json!({})).await);
        if rooms.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rooms.is_empty(), "{rooms:?}");
}

#[tokio::test]
async fn without_keys_the_api_answers_its_own_machine_only() {
    let stub = StubMedia::new(None);
    let config = SignalConfig {
        // Requests through this proxy come from the address it names.
        trusted_proxies: vec![common::LOCALHOST],
        ..SignalConfig::default()
    };
    let (_, http) = stub::server(&stub, config).await;
    let json = [("Content-Type", "application/json")];
    let r = http_post(
        http,
        "/twirp/livekit.RoomService/CreateRoom",
        &json,
        br#"{"name": "local"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let forwarded = [
        ("Content-Type", "application/json"),
        ("X-Forwarded-For", "198.51.100.7"),
    ];
    let r = http_post(
        http,
        "/twirp/livekit.RoomService/ListRooms",
        &forwarded,
        b"{}",
    )
    .await;
    assert_eq!(twirp_error(&r), (401, "unauthenticated".into()));
    let r = http_post(http, "/twirp/livekit.RoomService/ListRooms", &json, b"{}").await;
    let rooms: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(rooms["rooms"][0]["name"], "local");
}
