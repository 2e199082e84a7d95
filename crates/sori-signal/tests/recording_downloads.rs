//! Recording downloads: whole files and byte ranges (how browsers seek in a video) give the
//! file's bytes, unsatisfiable ranges are 416, and nothing is served through a symbolic link —
//! neither a linked recording folder nor a linked file inside a real one.

mod common;

use common::{http_get, server_with, TempDir};
use sori_signal::SignalConfig;

const RECORDING: &str = "standup-20261118T110640Z";
const LEN: usize = 300_000;

fn content() -> Vec<u8> {
    (0..LEN).map(|i| (i * 7 % 251) as u8).collect()
}

/// A finished recording of room `standup` with one file, and a folder outside the recordings
/// directory that symbolic links inside it point to.
fn recordings(tmp: &TempDir) -> std::path::PathBuf {
    let dir = tmp.0.join("recordings");
    let rec = dir.join(RECORDING);
    std::fs::create_dir_all(&rec).unwrap();
    std::fs::write(rec.join("p1-Ada.webm"), content()).unwrap();
    let manifest = serde_json::json!({"room": "standup", "recording": RECORDING,
        "started_unix_ms": 1_795_000_000_000u64, "files": [{"file": "p1-Ada.webm"}]});
    std::fs::write(rec.join("manifest.json"), manifest.to_string()).unwrap();

    let outside = tmp.0.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.webm"), b"not for download").unwrap();
    let manifest = serde_json::json!({"room": "standup", "recording": "linked-20261118T110641Z",
        "started_unix_ms": 1_795_000_001_000u64, "files": [{"file": "secret.webm"}]});
    std::fs::write(outside.join("manifest.json"), manifest.to_string()).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("linked-20261118T110641Z")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.webm"), rec.join("p2-Eve.webm")).unwrap();
    dir
}

#[tokio::test]
async fn whole_files_and_ranges_give_the_files_bytes() {
    let tmp = TempDir::new("downloads-ranges");
    let server = server_with(SignalConfig {
        recordings_dir: Some(recordings(&tmp)),
        ..SignalConfig::default()
    })
    .await;
    let path = format!("/recordings/{RECORDING}/p1-Ada.webm");
    let bytes = content();

    let whole = http_get(server.http, &path, &[]).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("content-type"), Some("video/webm"));
    assert_eq!(whole.header("content-length"), Some(&*LEN.to_string()));
    assert!(whole.body == bytes, "the whole file");

    for (range, start, end) in [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=299990-", 299_990, LEN - 1),
        ("bytes=-10", LEN - 10, LEN - 1),
        ("bytes=-999999", 0, LEN - 1),
        ("bytes=299000-999999", 299_000, LEN - 1),
    ] {
        let part = http_get(server.http, &path, &[("Range", range)]).await;
        assert_eq!(part.status, 206, "{range}");
        assert_eq!(
            part.header("content-range"),
            Some(&*format!("bytes {start}-{end}/{LEN}")),
            "{range}"
        );
        assert_eq!(
            part.header("content-length"),
            Some(&*(end - start + 1).to_string())
        );
        assert!(
            part.body == bytes[start..=end],
            "{range}: the range's bytes"
        );
    }

    for range in ["bytes=300000-", "bytes=400000-500000", "bytes=-0"] {
        let refused = http_get(server.http, &path, &[("Range", range)]).await;
        assert_eq!(refused.status, 416, "{range}");
        assert_eq!(
            refused.header("content-range"),
            Some(&*format!("bytes */{LEN}"))
        );
    }

    // Several ranges at once, other units and nonsense are ignored: the whole file, as RFC 9110
    // allows.
    for range in ["bytes=0-1,5-6", "items=0-1", "bytes=5-2", "bytes=x-"] {
        let whole = http_get(server.http, &path, &[("Range", range)]).await;
        assert_eq!(whole.status, 200, "{range}");
        assert!(whole.body == bytes, "{range}");
    }
}

#[tokio::test]
async fn symbolic_links_are_not_followed() {
    let tmp = TempDir::new("downloads-links");
    let server = server_with(SignalConfig {
        recordings_dir: Some(recordings(&tmp)),
        ..SignalConfig::default()
    })
    .await;
    for path in [
        "/recordings/linked-20261118T110641Z/secret.webm",
        "/recordings/linked-20261118T110641Z/manifest.json",
        &format!("/recordings/{RECORDING}/p2-Eve.webm"),
    ] {
        let r = http_get(server.http, path, &[]).await;
        assert_eq!(
            r.status,
            404,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let real = http_get(
        server.http,
        &format!("/recordings/{RECORDING}/manifest.json"),
        &[],
    )
    .await;
    assert_eq!(real.status, 200);

    let list = http_get(server.http, "/recordings", &[]).await;
    let list: serde_json::Value = serde_json::from_slice(&list.body).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["recording"].as_str().unwrap())
        .collect();
    assert_eq!(names, [RECORDING], "a linked folder is not listed");
}
