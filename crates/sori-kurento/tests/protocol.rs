//! Protocol conformance, no media: every method, the error codes with their `data.type`, the
//! event shape, sessions across sockets, transactions, and in-order handling.

mod common;

use common::{endpoint, offer, pipeline, server, server_with, Client};
use serde_json::{json, Value};
use sori_kurento::KurentoConfig;
use str0m::media::Direction;

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn ping_describe_get_info_and_connect() {
    let s = server().await;
    let mut c = Client::connect(&s.url).await;
    // The first ping has no session yet.
    let r = c.ok("ping", json!({"interval": 5000})).await;
    assert_eq!(r, json!({"value": "pong"}));

    let r = c
        .ok("describe", json!({"object": "manager_ServerManager"}))
        .await;
    assert_eq!(r["type"], "ServerManager");
    assert_eq!(r["qualifiedType"], "kurento.ServerManager");
    assert_eq!(r["hierarchy"], json!(["kurento.MediaObject"]));
    let session = r["sessionId"].as_str().unwrap().to_string();
    assert!(is_uuid(&session));

    let info = c
        .invoke("manager_ServerManager", "getInfo", Value::Null)
        .await;
    assert_eq!(info["__type__"], "ServerInfo");
    let modules: Vec<&str> = info["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for m in ["core", "elements", "filters"] {
        assert!(modules.contains(&m), "module {m} in {modules:?}");
    }
    // Now the ping carries the session; connect without params keeps it.
    let r = c.ok("ping", Value::Null).await;
    assert_eq!(r["value"], "pong");
    assert_eq!(r["sessionId"], json!(session));
    let r = c.ok("connect", Value::Null).await;
    assert_eq!(r["sessionId"], json!(session));
    assert!(is_uuid(r["serverId"].as_str().unwrap()));
    for op in ["getUsedCpu", "getUsedMemory", "getCpuCount"] {
        let v = c.invoke("manager_ServerManager", op, json!({})).await;
        assert!(v.is_number(), "{op}: {v}");
    }
    let sessions = c
        .invoke("manager_ServerManager", "getSessions", Value::Null)
        .await;
    assert!(sessions.as_array().unwrap().contains(&json!(session)));
}

#[tokio::test]
async fn connections_fan_out_replace_and_stay_single_when_repeated() {
    let s = server().await;
    let mut c = Client::connect(&s.url).await;
    let p = pipeline(&mut c).await;
    let a = endpoint(&mut c, &p).await;
    let b = endpoint(&mut c, &p).await;
    let v1 = endpoint(&mut c, &p).await;
    let v2 = endpoint(&mut c, &p).await;
    for (o, ty) in [
        (&a, "ElementConnected"),
        (&a, "ElementDisconnected"),
        (&b, "ElementConnected"),
    ] {
        c.ok("subscribe", json!({"object": o, "type": ty})).await;
    }
    // Fan-out: one source, two sinks; no mediaType connects audio, video and data.
    c.invoke(&a, "connect", json!({"sink": v1})).await;
    c.invoke(&a, "connect", json!({"sink": v2, "mediaType": "VIDEO"}))
        .await;
    let e = c.event(&a, "ElementConnected").await;
    let data = &e["params"]["value"]["data"];
    assert_eq!(data["sink"], json!(v1));
    assert_eq!(data["mediaType"], "AUDIO");
    assert_eq!(data["sourceMediaDescription"], "default");
    assert_eq!(data["type"], "ElementConnected");
    assert_eq!(data["source"], json!(a));
    assert!(data["timestampMillis"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    assert_eq!(data["tags"], json!([]));
    let sinks = c.invoke(&a, "getSinkConnections", Value::Null).await;
    assert_eq!(sinks.as_array().unwrap().len(), 4);
    let video = c
        .invoke(&a, "getSinkConnections", json!({"mediaType": "VIDEO"}))
        .await;
    assert_eq!(video.as_array().unwrap().len(), 2);
    assert_eq!(video[0]["__type__"], "ElementConnectionData");

    // A repeated connect keeps one link.
    c.invoke(&a, "connect", json!({"sink": v1, "mediaType": "VIDEO"}))
        .await;
    let sources = c
        .invoke(&v1, "getSourceConnections", json!({"mediaType": "VIDEO"}))
        .await;
    assert_eq!(sources.as_array().unwrap().len(), 1);

    // A new source for v1's video replaces a: a gets ElementDisconnected, b ElementConnected.
    c.invoke(&b, "connect", json!({"sink": v1, "mediaType": "VIDEO"}))
        .await;
    let gone = c.event(&a, "ElementDisconnected").await;
    assert_eq!(gone["params"]["value"]["data"]["sink"], json!(v1));
    assert_eq!(gone["params"]["value"]["data"]["mediaType"], "VIDEO");
    let sources = c
        .invoke(&v1, "getSourceConnections", json!({"mediaType": "VIDEO"}))
        .await;
    assert_eq!(sources[0]["source"], json!(b));
    // Loopback is allowed; disconnect removes.
    c.invoke(&a, "connect", json!({"sink": a})).await;
    c.invoke(&a, "disconnect", json!({"sink": a, "mediaType": "AUDIO"}))
        .await;
    let own = c.invoke(&a, "getSourceConnections", Value::Null).await;
    assert_eq!(own.as_array().unwrap().len(), 2);
    // Releasing an element removes its links.
    c.ok("release", json!({"object": b})).await;
    let sources = c
        .invoke(&v1, "getSourceConnections", json!({"mediaType": "VIDEO"}))
        .await;
    assert_eq!(sources, json!([]));
}

#[tokio::test]
async fn release_cascades_and_later_unsubscribes_succeed() {
    let s = server().await;
    let mut c = Client::connect(&s.url).await;
    let mut watcher = Client::connect(&s.url).await;
    watcher
        .ok(
            "subscribe",
            json!({"object": "manager_ServerManager", "type": "ObjectDestroyed"}),
        )
        .await;
    let p = pipeline(&mut c).await;
    let w = endpoint(&mut c, &p).await;
    let sub = c
        .ok(
            "subscribe",
            json!({"object": w, "type": "IceCandidateFound"}),
        )
        .await;
    let token = sub["value"].as_str().unwrap().to_string();
    let session = sub["sessionId"].clone();

    c.ok("release", json!({"object": p})).await;
    for _ in 0..2 {
        let e = watcher
            .event("manager_ServerManager", "ObjectDestroyed")
            .await;
        let id = e["params"]["value"]["data"]["objectId"].clone();
        assert!(id == json!(w) || id == json!(p), "{e}");
    }
    assert_eq!(c.err("describe", json!({"object": w})).await["code"], 40101);
    // What the JS client does after a release: unsubscribe, which must succeed.
    let r = c
        .ok(
            "unsubscribe",
            json!({"object": w, "subscription": token, "sessionId": session}),
        )
        .await;
    assert_eq!(r["sessionId"], session);
    c.ok(
        "unsubscribe",
        json!({"object": "never", "subscription": "never"}),
    )
    .await;
    // Releasing again is fine.
    c.ok("release", json!({"object": p})).await;
    c.ok("release", json!({"object": w})).await;
    assert_eq!(s.kurento.counts().await.1 + s.kurento.counts().await.2, 0);
}

#[tokio::test]
async fn transactions_resolve_newrefs_and_stop_at_the_first_error() {
    let s = server().await;
    let mut c = Client::connect(&s.url).await;
    let r = c
        .ok(
            "transaction",
            json!({"operations": [
                {"jsonrpc": "2.0", "id": 0, "method": "create",
                 "params": {"type": "MediaPipeline", "properties": {}}},
                {"jsonrpc": "2.0", "id": 1, "method": "create",
                 "params": {"type": "WebRtcEndpoint",
                            "constructorParams": {"mediaPipeline": "newref:0"}, "properties": {}}},
                {"jsonrpc": "2.0", "id": 2, "method": "invoke",
                 "params": {"object": "newref:1", "operation": "getMediaPipeline"}},
            ]}),
        )
        .await;
    let results = r["value"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let p = results[0]["result"]["value"].as_str().unwrap();
    let w = results[1]["result"]["value"].as_str().unwrap();
    assert_eq!(results[1]["id"], 1);
    assert!(w.starts_with(p));
    assert_eq!(results[2]["result"]["value"], json!(p));
    assert!(r["sessionId"].is_string());

    let r = c
        .ok(
            "transaction",
            json!({"operations": [
                {"jsonrpc": "2.0", "id": 0, "method": "describe", "params": {"object": "nope"}},
                {"jsonrpc": "2.0", "id": 1, "method": "create",
                 "params": {"type": "MediaPipeline"}},
            ]}),
        )
        .await;
    let results = r["value"].as_array().unwrap();
    assert_eq!(results.len(), 1, "stopped at the first error");
    assert_eq!(results[0]["error"]["code"], 40101);
    let r = c
        .ok(
            "transaction",
            json!({"operations": [
                {"jsonrpc": "2.0", "id": 5, "method": "create", "params": {"type": "MediaPipeline"}},
            ]}),
        )
        .await;
    assert_eq!(r["value"][0]["error"]["code"], 40008);
    assert_eq!(
        s.kurento.counts().await.1,
        1,
        "only the first pipeline exists"
    );
}

#[tokio::test]
async fn sessions_survive_their_socket_and_events_follow_the_new_one() {
    let s = server().await;
    let mut a = Client::connect(&s.url).await;
    let p = pipeline(&mut a).await;
    let w = endpoint(&mut a, &p).await;
    let w2 = endpoint(&mut a, &p).await;
    let sub = a
        .ok(
            "subscribe",
            json!({"object": w, "type": "ElementConnected"}),
        )
        .await;
    let session = sub["sessionId"].as_str().unwrap().to_string();
    a.close().await;

    // What the JS client does after reconnecting: ping, then connect{sessionId}.
    let mut b = Client::connect(&s.url).await;
    b.ok("ping", Value::Null).await;
    let r = b.ok("connect", json!({"sessionId": session})).await;
    assert_eq!(r["sessionId"], json!(session));
    assert_eq!(
        b.ok("describe", json!({"object": w})).await["type"],
        "WebRtcEndpoint"
    );
    b.invoke(&w, "connect", json!({"sink": w2, "mediaType": "VIDEO"}))
        .await;
    let e = b.event(&w, "ElementConnected").await;
    assert_eq!(e["params"]["value"]["data"]["sink"], json!(w2));

    // An unknown session: connect fails with 40007, then the id is adopted as a new session.
    let mut c = Client::connect(&s.url).await;
    let e = c.err("connect", json!({"sessionId": "lost-session"})).await;
    assert_eq!(
        (e["code"].clone(), e["data"]["type"].clone()),
        (json!(40007), json!("INVALID_SESSION"))
    );
    let r = c
        .ok(
            "create",
            json!({"type": "MediaPipeline", "sessionId": "lost-session"}),
        )
        .await;
    assert_eq!(r["sessionId"], "lost-session");
    let r = c.ok("connect", json!({"sessionId": "lost-session"})).await;
    assert_eq!(r["sessionId"], "lost-session");
}

#[tokio::test]
async fn abandoned_sessions_are_collected_and_closed_sessions_released() {
    let s = server_with(KurentoConfig {
        gc_period: std::time::Duration::from_millis(200),
        ..KurentoConfig::default()
    })
    .await;
    let mut watcher = Client::connect(&s.url).await;
    watcher
        .ok(
            "subscribe",
            json!({"object": "manager_ServerManager", "type": "ObjectDestroyed"}),
        )
        .await;
    let mut a = Client::connect(&s.url).await;
    let p = pipeline(&mut a).await;
    a.close().await;
    let e = watcher
        .event("manager_ServerManager", "ObjectDestroyed")
        .await;
    assert_eq!(e["params"]["value"]["data"]["objectId"], json!(p));
    // The watcher's own session is alive: its socket is open.
    let (sessions, pipelines, _) = s.kurento.counts().await;
    assert_eq!((sessions, pipelines), (1, 0));

    // closeSession with release:true releases at once.
    let mut b = Client::connect(&s.url).await;
    let r = b.ok("create", json!({"type": "MediaPipeline"})).await;
    let r = b
        .call(
            "closeSession",
            json!({"sessionId": r["sessionId"], "release": true}),
        )
        .await;
    assert_eq!(r["result"], Value::Null);
    assert_eq!(s.kurento.counts().await.1, 0);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_candidates_match_the_m_lines() {
    let s = server().await;
    let mut c = Client::connect(&s.url).await;
    let p = pipeline(&mut c).await;
    let w = endpoint(&mut c, &p).await;
    let ids = send_hello_world_order(&mut c, &w).await;
    let mut answer = Value::Null;
    for id in &ids {
        let r = c.response(*id).await;
        assert!(r.get("error").is_none(), "{r}");
        if *id == ids[3] {
            answer = r["result"]["value"].clone();
        }
    }
    assert!(answer.as_str().unwrap().contains("a=ice-lite"));
    first_candidate_matches_the_first_m_line(&mut c, &w, answer.as_str().unwrap()).await;
    // Subscribed under the old name: delivered under it.
    let done = c.event(&w, "OnIceGatheringDone").await;
    assert_eq!(
        done["params"]["value"]["data"]["type"],
        "OnIceGatheringDone"
    );
    // No renegotiation for Kurento clients.
    let e = c
        .err(
            "invoke",
            json!({"object": w, "operation": "processOffer",
                   "operationParams": {"offer": offer(Direction::SendRecv)}}),
        )
        .await;
    assert_eq!(
        (e["code"].clone(), e["data"]["type"].clone()),
        (json!(40208), json!("SDP_END_POINT_ALREADY_NEGOTIATED"))
    );
    assert!(c
        .invoke(&w, "getLocalSessionDescriptor", Value::Null)
        .await
        .is_string());
}

/// The hello-world order, sent back to back without waiting: an early candidate, a
/// subscription, processOffer (the fourth request), gatherCandidates, and pings in between.
async fn send_hello_world_order(c: &mut Client, w: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    ids.push(
        c.send(
            "invoke",
            json!({"object": w, "operation": "addIceCandidate", "operationParams": {"candidate":
                   {"__module__": "kurento", "__type__": "IceCandidate",
                    "candidate": "candidate:1 1 UDP 2122260223 127.0.0.1 50000 typ host",
                    "sdpMid": "0", "sdpMLineIndex": 0}}}),
        )
        .await,
    );
    ids.push(
        c.send(
            "subscribe",
            json!({"object": w, "type": "IceCandidateFound"}),
        )
        .await,
    );
    ids.push(
        c.send(
            "subscribe",
            json!({"object": w, "type": "OnIceGatheringDone"}),
        )
        .await,
    );
    ids.push(
        c.send(
            "invoke",
            json!({"object": w, "operation": "processOffer",
                   "operationParams": {"offer": offer(Direction::SendRecv)}}),
        )
        .await,
    );
    ids.push(c.send("ping", Value::Null).await);
    ids.push(
        c.send(
            "invoke",
            json!({"object": w, "operation": "gatherCandidates"}),
        )
        .await,
    );
    for i in 0..20 {
        let method = if i % 2 == 0 { "ping" } else { "describe" };
        ids.push(c.send(method, json!({"object": w})).await);
    }
    ids
}

/// The first IceCandidateFound event: its shape, and the answer's first m-line as its mid.
async fn first_candidate_matches_the_first_m_line(c: &mut Client, w: &str, answer: &str) {
    let e = c.event(w, "IceCandidateFound").await;
    let value = &e["params"]["value"];
    assert_eq!(e["jsonrpc"], "2.0");
    assert!(e.get("id").is_none());
    assert_eq!(value["object"], json!(w));
    assert_eq!(value["type"], "IceCandidateFound");
    let cand = &value["data"]["candidate"];
    assert_eq!(cand["__module__"], "kurento");
    assert_eq!(cand["__type__"], "IceCandidate");
    let first_mid = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .unwrap()
        .trim();
    assert_eq!(
        cand["sdpMid"],
        json!(first_mid),
        "the answer's first m-line"
    );
    assert_eq!(cand["sdpMLineIndex"], 0);
    assert!(cand["candidate"].as_str().unwrap().contains("127.0.0.1"));
}

#[tokio::test]
async fn incompatible_video_is_an_error_event_not_black_video() {
    let s = server().await;
    let mut c = Client::connect(&s.url).await;
    let p = pipeline(&mut c).await;
    let vp8 = endpoint(&mut c, &p).await;
    let h264 = endpoint(&mut c, &p).await;
    c.ok("subscribe", json!({"object": h264, "type": "Error"}))
        .await;
    c.invoke(
        &vp8,
        "processOffer",
        json!({"offer": offer(Direction::SendRecv)}),
    )
    .await;
    let e = c
        .err(
            "invoke",
            json!({"object": h264, "operation": "processOffer",
                   "operationParams": {"offer": common::h264_offer()}}),
        )
        .await;
    assert_eq!(e["code"], 40205);
    let message = e["message"].as_str().unwrap().to_lowercase();
    assert!(message.contains("vp8") && message.contains("h264"), "{e}");
    let ev = c.event(&h264, "Error").await;
    let data = &ev["params"]["value"]["data"];
    assert_eq!(data["errorCode"], 40205);
    assert!(
        data["description"].as_str().unwrap().contains("h264"),
        "{ev}"
    );
}

#[tokio::test]
async fn an_access_token_is_required_when_configured() {
    let s = server_with(KurentoConfig {
        access_token: Some("s3cret".into()),
        ..KurentoConfig::default()
    })
    .await;
    assert!(tokio_tungstenite::connect_async(&s.url).await.is_err());
    let wrong = format!("{}?access_token=nope", s.url);
    assert!(tokio_tungstenite::connect_async(&wrong).await.is_err());
    let mut c = Client::connect(&format!("{}?access_token=s3cret", s.url)).await;
    assert_eq!(c.ok("ping", Value::Null).await["value"], "pong");
}

/// Opens the control API as a browser page of `origin` would; the HTTP status when refused.
async fn open_from(url: &str, origin: &str) -> Result<(), u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Error;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => Ok(()),
        Err(Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn browser_origins_are_refused_unless_allowed() {
    let s = server().await;
    assert_eq!(open_from(&s.url, "http://localhost:8080").await, Err(403));
    assert_eq!(open_from(&s.url, "null").await, Err(403));
    // Kurento applications send no Origin: accepted as ever.
    let mut c = Client::connect(&s.url).await;
    assert_eq!(c.ok("ping", Value::Null).await["value"], "pong");

    let s = server_with(KurentoConfig {
        allowed_origins: vec!["https://app.example.com".into()],
        access_token: Some("s3cret".into()),
        ..KurentoConfig::default()
    })
    .await;
    let with_token = format!("{}?access_token=s3cret", s.url);
    assert_eq!(
        open_from(&with_token, "https://app.example.com").await,
        Ok(())
    );
    assert_eq!(
        open_from(&with_token, "https://evil.example.com").await,
        Err(403)
    );
    assert_eq!(
        open_from(&s.url, "https://app.example.com").await,
        Err(401),
        "an allowed origin still needs the token"
    );
}

#[tokio::test]
async fn generate_offer_then_process_answer_once() {
    let s = server().await;
    let mut c = Client::connect(&s.url).await;
    let p = pipeline(&mut c).await;
    let w = endpoint(&mut c, &p).await;
    let e = c
        .err(
            "invoke",
            json!({"object": w, "operation": "processAnswer", "operationParams": {"answer": "v=0"}}),
        )
        .await;
    assert_eq!(e["code"], 40209, "an answer before any offer");
    let offer = c
        .invoke(
            &w,
            "generateOffer",
            json!({"options": {"offerToReceiveAudio": false}}),
        )
        .await;
    let offer = offer.as_str().unwrap().to_string();
    assert_eq!(offer.matches("m=audio").count(), 1);
    assert!(
        offer.contains("a=recvonly"),
        "audio: the endpoint only receives"
    );
    assert!(offer.contains("a=sendrecv"), "video both ways");
    let mut rtc = str0m::RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(std::time::Instant::now());
    let answer = rtc
        .sdp_api()
        .accept_offer(str0m::change::SdpOffer::from_sdp_string(&offer).unwrap())
        .unwrap()
        .to_sdp_string();
    let local = c
        .invoke(&w, "processAnswer", json!({"answer": answer}))
        .await;
    assert_eq!(
        local,
        json!(offer),
        "processAnswer returns the local description"
    );
    let e = c
        .err(
            "invoke",
            json!({"object": w, "operation": "processAnswer", "operationParams": {"answer": answer}}),
        )
        .await;
    assert_eq!(
        (e["code"].clone(), e["data"]["type"].clone()),
        (
            json!(40210),
            json!("SDP_END_POINT_ANSWER_ALREADY_PROCCESED")
        )
    );
    let e = c
        .err("invoke", json!({"object": w, "operation": "generateOffer"}))
        .await;
    assert_eq!(e["code"], 40208);
}
