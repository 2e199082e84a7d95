//! Every room recording gets a folder of its own: two rooms whose names have no ASCII letters,
//! started in the same second, and one room recorded three times within a second. Folder names
//! keep non-ASCII room names recognisable; the manifest keeps the real name.

mod common;

use common::{server_with, Client, TempDir};
use serde_json::{json, Value};
use sori_signal::SignalConfig;

async fn start(c: &mut Client) -> String {
    c.send(json!({"type": "record", "on": true}));
    let on = c.expect("recording").await;
    assert_eq!(on["on"], true, "{on}");
    on["name"].as_str().unwrap().to_string()
}

async fn stop(c: &mut Client) -> Value {
    c.send(json!({"type": "record", "on": false}));
    let off = c.expect("recording").await;
    assert_eq!(off["on"], false, "{off}");
    off
}

#[tokio::test]
async fn rooms_started_together_get_folders_of_their_own() {
    let tmp = TempDir::new("folders");
    let server = server_with(SignalConfig {
        recordings_dir: Some(tmp.0.clone()),
        ..SignalConfig::default()
    })
    .await;
    let (mut a, _) = Client::join(&server.url, "회의", "Ada").await;
    let (mut b, _) = Client::join(&server.url, "대화", "Grace").await;
    a.send(json!({"type": "record", "on": true}));
    b.send(json!({"type": "record", "on": true}));
    let name_a = a.expect("recording").await["name"]
        .as_str()
        .unwrap()
        .to_string();
    let name_b = b.expect("recording").await["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(name_a, name_b);
    // 회 is U+D68C, 대 is U+B300.
    assert!(name_a.starts_with("_d68c_c758-"), "{name_a}");
    assert!(name_b.starts_with("_b300_d654-"), "{name_b}");
    stop(&mut a).await;
    stop(&mut b).await;
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(tmp.0.join(&name_a).join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["room"], "회의");
    assert_eq!(manifest["recording"], name_a.as_str());

    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(start(&mut a).await);
        stop(&mut a).await;
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3, "three recordings, three folders: {names:?}");
    for n in &names {
        assert!(tmp.0.join(n).join("manifest.json").is_file(), "{n}");
    }
}
