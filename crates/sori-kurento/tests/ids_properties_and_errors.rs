//! Object ids, properties, tags and the error answers, as Kurento Media Server gives them.

mod common;

use common::{endpoint, pipeline, server, Client};
use serde_json::{json, Value};

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn ids_properties_and_errors_follow_kms() {
    let s = server().await;
    let mut c = Client::connect(&s.url).await;
    let p = pipeline(&mut c).await;
    assert!(
        p.ends_with("_kurento.MediaPipeline") && is_uuid(&p[..36]),
        "{p}"
    );
    let w = qualified_endpoint(&mut c, &p).await;
    tree_is_navigable(&mut c, &p, &w).await;
    properties_and_tags_follow_kms(&mut c, &w).await;
    errors_follow_kms(&mut c, &p, &w).await;
    // Elements of different pipelines cannot be connected.
    let p2 = pipeline(&mut c).await;
    let w2 = endpoint(&mut c, &p2).await;
    let e = c
        .err(
            "invoke",
            json!({"object": w, "operation": "connect", "operationParams": {"sink": w2}}),
        )
        .await;
    assert_eq!(e["code"], 40004);

    frames_that_are_not_requests_are_answered(&mut c).await;
    // Nothing above changed the objects.
    assert_eq!(s.kurento.counts().await.1, 2);
}

/// A WebRtcEndpoint created by its qualified type name; its id names its pipeline.
async fn qualified_endpoint(c: &mut Client, p: &str) -> String {
    // The qualified type name works too.
    let w = c
        .ok(
            "create",
            json!({"type": "kurento.WebRtcEndpoint", "constructorParams": {"mediaPipeline": p},
                   "properties": {}}),
        )
        .await["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(w.starts_with(&format!("{p}/")) && w.ends_with("_kurento.WebRtcEndpoint"));
    let d = c.ok("describe", json!({"object": w})).await;
    assert_eq!(d["type"], "WebRtcEndpoint");
    assert_eq!(d["hierarchy"][0], "kurento.BaseRtpEndpoint");
    assert_eq!(d["hierarchy"][5], "kurento.MediaObject");

    w
}

/// The manager lists the pipeline, which lists its endpoint, which names its pipeline.
async fn tree_is_navigable(c: &mut Client, p: &str, w: &str) {
    let pipelines = c
        .invoke("manager_ServerManager", "getPipelines", Value::Null)
        .await;
    assert_eq!(pipelines, json!([p]));
    assert_eq!(c.invoke(p, "getChildren", Value::Null).await, json!([w]));
    assert_eq!(c.invoke(w, "getMediaPipeline", Value::Null).await, json!(p));
    assert_eq!(c.invoke(w, "getParent", Value::Null).await, json!(p));
}

/// Properties: setter, getter, void result as null, type errors; name and tags.
async fn properties_and_tags_follow_kms(c: &mut Client, w: &str) {
    // Properties: setter, getter, void result as null, type errors.
    let r = c
        .ok(
            "invoke",
            json!({"object": w, "operation": "setStunServerAddress",
                   "operationParams": {"stunServerAddress": "192.0.2.1"}}),
        )
        .await;
    assert_eq!(r["value"], Value::Null);
    assert!(r.as_object().unwrap().contains_key("value"));
    assert_eq!(
        c.invoke(w, "getStunServerAddress", Value::Null).await,
        "192.0.2.1"
    );
    c.invoke(
        w,
        "setMinVideoRecvBandwidth",
        json!({"minVideoRecvBandwidth": 300}),
    )
    .await;
    assert_eq!(
        c.invoke(w, "getMinVideoRecvBandwidth", Value::Null).await,
        300
    );
    assert_eq!(
        c.invoke(w, "getMaxVideoSendBandwidth", Value::Null).await,
        500
    );
    let e = c
        .err(
            "invoke",
            json!({"object": w, "operation": "setMtu", "operationParams": {"mtu": "big"}}),
        )
        .await;
    assert_eq!(
        (e["code"].clone(), e["data"]["type"].clone()),
        (json!(40001), json!("MARSHALL_ERROR"))
    );
    c.invoke(w, "setName", json!({"name": "alice"})).await;
    assert_eq!(c.invoke(w, "getName", Value::Null).await, "alice");
    c.invoke(w, "addTag", json!({"key": "k", "value": "v"}))
        .await;
    assert_eq!(c.invoke(w, "getTag", json!({"key": "k"})).await, "v");
    let e = c
        .err(
            "invoke",
            json!({"object": w, "operation": "getTag", "operationParams": {"key": "nope"}}),
        )
        .await;
    assert_eq!(e["code"], 40110);
    // Not negotiated yet: the descriptors are null.
    assert_eq!(
        c.invoke(w, "getLocalSessionDescriptor", Value::Null).await,
        Value::Null
    );
}

/// Each refused request carries Kurento's code and symbolic type, and no result.
async fn errors_follow_kms(c: &mut Client, p: &str, w: &str) {
    let cases = [
        (
            "create",
            json!({"type": "FaceOverlayFilter", "constructorParams": {"mediaPipeline": p}}),
            40108,
            Some("MEDIA_OBJECT_NOT_AVAILABLE"),
        ),
        (
            // This server has no recordings directory: recording is off, and says so.
            "create",
            json!({"type": "RecorderEndpoint", "constructorParams": {"mediaPipeline": p,
                   "uri": "file:///tmp/x.webm"}}),
            40107,
            Some("MEDIA_OBJECT_ILLEGAL_PARAM_ERROR"),
        ),
        (
            "create",
            json!({"type": "WebRtcEndpoint", "constructorParams": {"mediaPipeline": "nope"}}),
            40101,
            Some("MEDIA_OBJECT_NOT_FOUND"),
        ),
        (
            "describe",
            json!({"object": "nope_kurento.MediaPipeline"}),
            40101,
            Some("MEDIA_OBJECT_NOT_FOUND"),
        ),
        (
            "invoke",
            json!({"object": w, "operation": "frobnicate", "operationParams": {"a": 1}}),
            40008,
            Some("MALFORMED_TRANSACTION"),
        ),
        (
            "subscribe",
            json!({"object": w, "type": "EndOfStream"}),
            40106,
            Some("MEDIA_OBJECT_EVENT_NOT_SUPPORTED"),
        ),
        (
            "invoke",
            json!({"object": w, "operation": "connect", "operationParams": {"sink": "missing"}}),
            40101,
            Some("MEDIA_OBJECT_NOT_FOUND"),
        ),
        (
            "invoke",
            json!({"object": w, "operation": "processAnswer", "operationParams": {"answer": "v=0"}}),
            40209,
            Some("SDP_END_POINT_NOT_OFFER_GENERATED"),
        ),
        (
            "invoke",
            json!({"object": w, "operation": "processOffer", "operationParams": {"offer": "bad"}}),
            40201,
            Some("SDP_PARSE_ERROR"),
        ),
        (
            "create",
            json!({"type": "WebRtcEndpoint", "constructorParams": {"mediaPipeline": "newref:0"}}),
            40109,
            Some("MEDIA_OBJECT_NOT_FOUND_TRANSACTION_NO_COMMIT"),
        ),
        ("create", Value::Null, -32602, Some("INVALID_PARAMS")),
        ("describe", json!({}), -32000, None),
        ("frobnicate", json!({}), -32601, None),
    ];
    for (method, params, code, kind) in cases {
        let r = c.call(method, params.clone()).await;
        assert_eq!(r["error"]["code"], json!(code), "{method} {params}: {r}");
        if let Some(kind) = kind {
            assert_eq!(r["error"]["data"]["type"], json!(kind), "{r}");
        }
        assert!(r.get("result").is_none() && r["error"].get("sessionId").is_none());
    }
}

/// Frames that are not requests, and notifications.
async fn frames_that_are_not_requests_are_answered(c: &mut Client) {
    c.send_raw("{not json").await;
    let r = c.recv().await;
    assert_eq!(r["error"]["code"], -32700);
    assert_eq!(r["id"], Value::Null);
    c.send_raw(r#"{"jsonrpc":"2.0","id":"abc","method":17}"#)
        .await;
    let r = c.recv().await;
    assert_eq!(
        (r["id"].clone(), r["error"]["code"].clone()),
        (json!("abc"), json!(-32600))
    );
    // A notification (no id) gets no answer; the next request still does, string ids echoed.
    c.send_raw(r#"{"jsonrpc":"2.0","method":"ping"}"#).await;
    c.send_raw(r#"{"jsonrpc":"2.0","id":"s-1","method":"ping"}"#)
        .await;
    let r = c.recv().await;
    assert_eq!(r["id"], "s-1");
}
