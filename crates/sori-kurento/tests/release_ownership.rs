//! Objects belong to the session that created them: another session may use them, but not
//! release them — not by `release`, not by `closeSession{release: true}`. A client that
//! reconnects with its old session id keeps its rights.

mod common;

use common::{endpoint, pipeline, server, Client};
use serde_json::{json, Value};

#[tokio::test]
async fn only_the_creating_session_releases_its_objects() {
    let s = server().await;
    let mut a = Client::connect(&s.url).await;
    let p = pipeline(&mut a).await;
    let w = endpoint(&mut a, &p).await;
    let session_a = a.ok("ping", Value::Null).await["sessionId"].clone();

    let mut b = Client::connect(&s.url).await;
    let session_b = b.ok("connect", Value::Null).await["sessionId"].clone();
    assert_ne!(session_a, session_b);
    for object in [&w, &p] {
        let e = b.err("release", json!({"object": object})).await;
        assert_eq!(
            (e["code"].clone(), e["data"]["type"].clone()),
            (json!(40111), json!("MEDIA_OBJECT_OPERATION_NOT_SUPPORTED")),
            "{e}"
        );
    }
    let r = b
        .ok(
            "transaction",
            json!({"operations": [
                {"jsonrpc": "2.0", "id": 0, "method": "release", "params": {"object": p}},
            ]}),
        )
        .await;
    assert_eq!(r["value"][0]["error"]["code"], 40111);
    assert_eq!(s.kurento.counts().await, (2, 1, 1), "nothing was released");

    // Using another session's objects stays allowed; it gives no right to release them.
    b.ok(
        "subscribe",
        json!({"object": w, "type": "ElementConnected"}),
    )
    .await;
    assert_eq!(
        b.invoke(&w, "getMediaPipeline", Value::Null).await,
        json!(p)
    );
    // Nor does it hand out the other sessions' ids.
    assert_eq!(
        b.invoke("manager_ServerManager", "getSessions", Value::Null)
            .await,
        json!([session_b])
    );
    // An element B creates in A's pipeline is B's, and goes with the pipeline too.
    let mine = endpoint(&mut b, &p).await;
    let theirs = endpoint(&mut b, &p).await;
    b.ok("release", json!({"object": mine})).await;
    a.ok("release", json!({"object": theirs})).await;
    assert_eq!(s.kurento.counts().await, (2, 1, 1));

    let r = b
        .call(
            "closeSession",
            json!({"sessionId": session_b, "release": true}),
        )
        .await;
    assert_eq!(r["result"], Value::Null);
    assert_eq!(
        s.kurento.counts().await.1 + s.kurento.counts().await.2,
        2,
        "closing B released nothing of A's"
    );

    // A reconnects with its session id: still the same session, with its rights.
    a.close().await;
    let mut a2 = Client::connect(&s.url).await;
    a2.ok("ping", Value::Null).await;
    a2.ok("connect", json!({"sessionId": session_a})).await;
    a2.ok("release", json!({"object": p})).await;
    assert_eq!(s.kurento.counts().await.1 + s.kurento.counts().await.2, 0);
}
