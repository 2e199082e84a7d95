//! Limits on room recordings: a room starts at most so many recordings an hour (`rate-limited`
//! past it), and none starts while the recordings directory holds its quota (`server-full`).

mod common;

use common::{server_with, Client, TempDir};
use serde_json::json;
use sori_signal::SignalConfig;

async fn record(c: &mut Client, on: bool) -> serde_json::Value {
    c.send(json!({"type": "record", "on": on}));
    loop {
        let v = c.recv().await;
        if v["type"] == "recording" || v["type"] == "error" {
            return v;
        }
    }
}

#[tokio::test]
async fn a_room_starts_so_many_recordings_an_hour() {
    let tmp = TempDir::new("limits-starts");
    let server = server_with(SignalConfig {
        recordings_dir: Some(tmp.0.clone()),
        recording_starts_per_hour: 2,
        ..SignalConfig::default()
    })
    .await;
    let (mut c, _) = Client::join(&server.url, "standup", "Ada").await;
    for _ in 0..2 {
        assert_eq!(record(&mut c, true).await["on"], true);
        // Pressing record again while it runs is not a new start.
        assert_eq!(record(&mut c, true).await["on"], true);
        assert_eq!(record(&mut c, false).await["on"], false);
    }
    let refused = record(&mut c, true).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "rate-limited", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("2 recordings"),
        "{refused}"
    );
    // Another room has its own count.
    let (mut other, _) = Client::join(&server.url, "retro", "Grace").await;
    assert_eq!(record(&mut other, true).await["on"], true);
    let folders = std::fs::read_dir(&tmp.0).unwrap().count();
    assert_eq!(folders, 3, "no folder for the refused start");
}

#[tokio::test]
async fn no_recording_starts_past_the_disk_quota() {
    let tmp = TempDir::new("limits-quota");
    let old = tmp.0.join("old-20261118T110640Z");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("p1-Ada.webm"), vec![0u8; 2 << 20]).unwrap();
    let server = server_with(SignalConfig {
        recordings_dir: Some(tmp.0.clone()),
        recordings_quota: Some(1 << 20),
        ..SignalConfig::default()
    })
    .await;
    let (mut c, _) = Client::join(&server.url, "standup", "Ada").await;
    let refused = record(&mut c, true).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "server-full", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("quota"),
        "{refused}"
    );
    assert_eq!(std::fs::read_dir(&tmp.0).unwrap().count(), 1);

    std::fs::remove_dir_all(&old).unwrap();
    assert_eq!(record(&mut c, true).await["on"], true, "room again");
}
