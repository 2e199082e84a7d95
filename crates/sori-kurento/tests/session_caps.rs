//! Per-session caps: a session that reaches its number of objects or recorders is refused
//! with 40009 NOT_ENOUGH_RESOURCES, and the other sessions are unaffected.

mod common;

use common::{endpoint, pipeline, server_with, Client};
use serde_json::json;
use sori_kurento::KurentoConfig;

#[tokio::test]
async fn a_session_at_its_object_cap_is_refused_and_others_are_not() {
    let s = server_with(KurentoConfig {
        max_objects_per_session: 3,
        ..KurentoConfig::default()
    })
    .await;
    let mut a = Client::connect(&s.url).await;
    let p = pipeline(&mut a).await;
    let w = endpoint(&mut a, &p).await;
    endpoint(&mut a, &p).await;
    let create = json!({"type": "WebRtcEndpoint", "constructorParams": {"mediaPipeline": p}});
    let e = a.err("create", create.clone()).await;
    assert_eq!(
        (e["code"].clone(), e["data"]["type"].clone()),
        (json!(40009), json!("NOT_ENOUGH_RESOURCES")),
        "{e}"
    );
    let e = a.err("create", json!({"type": "MediaPipeline"})).await;
    assert_eq!(e["code"], 40009);
    assert_eq!(s.kurento.counts().await, (1, 1, 2));

    // Another session creates as it pleases, even in A's pipeline.
    let mut b = Client::connect(&s.url).await;
    pipeline(&mut b).await;
    b.ok("create", create.clone()).await;

    // Releasing one makes room again.
    a.ok("release", json!({"object": w})).await;
    a.ok("create", create).await;
}

#[tokio::test]
async fn a_session_at_its_recorder_cap_is_refused_and_others_are_not() {
    let dir = std::env::temp_dir().join(format!("sori-kurento-caps-{}", std::process::id()));
    let s = server_with(KurentoConfig {
        max_recorders_per_session: 2,
        recordings_dir: Some(dir.clone()),
        ..KurentoConfig::default()
    })
    .await;
    let recorder = |p: &str, name: &str| {
        json!({"type": "RecorderEndpoint",
               "constructorParams": {"mediaPipeline": p, "uri": name}})
    };
    let mut a = Client::connect(&s.url).await;
    let p = pipeline(&mut a).await;
    a.ok("create", recorder(&p, "a1.webm")).await;
    a.ok("create", recorder(&p, "a2.webm")).await;
    let e = a.err("create", recorder(&p, "a3.webm")).await;
    assert_eq!(e["code"], 40009, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("RecorderEndpoint"),
        "{e}"
    );
    // Other elements are still fine for A, and recorders for B.
    endpoint(&mut a, &p).await;
    let mut b = Client::connect(&s.url).await;
    b.ok("create", recorder(&p, "b1.webm")).await;
    let _ = std::fs::remove_dir_all(&dir);
}
