//! A RecorderEndpoint never overwrites a file: one that exists at `create` is refused there
//! (40107), one that appears before `record` (or the recorder's own earlier recording) is an
//! `Error` event (RESOURCE_ERROR_OPEN) at `record`. Either way the file keeps its bytes.

mod common;

use common::{pipeline, server_with, Client};
use serde_json::{json, Value};
use sori_kurento::KurentoConfig;

/// A megabyte that is nobody's idea of an empty file.
fn megabyte() -> Vec<u8> {
    (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn existing_files_keep_their_bytes() {
    let dir = std::env::temp_dir().join(format!("sori-kurento-overwrite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let s = server_with(KurentoConfig {
        recordings_dir: Some(dir.clone()),
        ..KurentoConfig::default()
    })
    .await;
    let mut c = Client::connect(&s.url).await;
    let p = pipeline(&mut c).await;
    let recorder = |name: &str| {
        json!({"type": "RecorderEndpoint", "constructorParams": {"mediaPipeline": p,
               "uri": format!("file://{}/{name}", dir.display())}})
    };
    let bytes = megabyte();

    // Existing at create: refused there.
    let existing = dir.join("existing.webm");
    std::fs::write(&existing, &bytes).unwrap();
    let e = c.err("create", recorder("existing.webm")).await;
    assert_eq!(e["code"], 40107, "{e}");
    assert!(e["message"].as_str().unwrap().contains("exists"), "{e}");
    assert_eq!(std::fs::read(&existing).unwrap(), bytes);

    // Appearing between create and record: an Error event at record.
    let r = c.ok("create", recorder("later.webm")).await["value"]
        .as_str()
        .unwrap()
        .to_string();
    c.ok("subscribe", json!({"object": r, "type": "Error"}))
        .await;
    let later = dir.join("later.webm");
    std::fs::write(&later, &bytes).unwrap();
    c.invoke(&r, "record", Value::Null).await;
    let ev = c.event(&r, "Error").await;
    assert_eq!(ev["params"]["value"]["data"]["type"], "RESOURCE_ERROR_OPEN");
    assert_eq!(c.invoke(&r, "getState", Value::Null).await, "STOP");
    assert_eq!(std::fs::read(&later).unwrap(), bytes);

    // A recorder's own finished recording is not truncated by a second record either.
    let r = c.ok("create", recorder("own.webm")).await["value"]
        .as_str()
        .unwrap()
        .to_string();
    c.ok("subscribe", json!({"object": r, "type": "Error"}))
        .await;
    c.invoke(&r, "record", Value::Null).await;
    c.invoke(&r, "stopAndWait", Value::Null).await;
    let own = std::fs::read(dir.join("own.webm")).unwrap();
    c.invoke(&r, "record", Value::Null).await;
    let ev = c.event(&r, "Error").await;
    assert_eq!(ev["params"]["value"]["data"]["type"], "RESOURCE_ERROR_OPEN");
    assert_eq!(std::fs::read(dir.join("own.webm")).unwrap(), own);
    std::fs::remove_dir_all(&dir).unwrap();
}
