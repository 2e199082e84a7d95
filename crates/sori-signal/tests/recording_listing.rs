//! The recordings listing comes in pages, newest first, and a walk through the pages with the
//! `after` cursor sees every finished recording once. Listings of thousands of recordings,
//! several at once, leave the server answering `/healthz`.

mod common;

use common::{http_get, server_with, TempDir, WAIT};
use serde_json::Value;
use sori_signal::SignalConfig;

const RECORDINGS: usize = 3000;

/// `RECORDINGS` finished recordings of five rooms, one a second, and some folders the listing
/// leaves out; returns the names, oldest first.
fn fake_recordings(dir: &std::path::Path) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..RECORDINGS {
        let (h, m, s) = (i / 3600, i / 60 % 60, i % 60);
        let room = format!("room{}", i % 5);
        // Every tenth second two rooms start together; every hundredth a room starts twice.
        let mut batch = vec![format!("{room}-20261118T{h:02}{m:02}{s:02}Z")];
        if i % 10 == 0 {
            batch.push(format!("room{}-20261118T{h:02}{m:02}{s:02}Z", (i + 1) % 5));
        }
        batch.sort();
        if i % 100 == 0 {
            // The second start of a room in one second comes after every first one.
            batch.push(format!("{room}-20261118T{h:02}{m:02}{s:02}Z-2"));
        }
        for name in batch {
            let rec = dir.join(&name);
            std::fs::create_dir_all(&rec).unwrap();
            let manifest = serde_json::json!({"room": name.split('-').next().unwrap(),
                "recording": name, "started_unix_ms": 1_795_000_000_000u64 + i as u64 * 1000,
                "files": []});
            std::fs::write(rec.join("manifest.json"), manifest.to_string()).unwrap();
            names.push(name);
        }
    }
    // A recording still running (no manifest yet), a stray file, a hidden folder.
    std::fs::create_dir_all(dir.join("room0-20261118T235959Z")).unwrap();
    std::fs::write(dir.join("notes.txt"), "x").unwrap();
    std::fs::create_dir_all(dir.join(".trash")).unwrap();
    names
}

fn recording_names(page: &Value) -> Vec<String> {
    page.as_array()
        .expect("a JSON array")
        .iter()
        .map(|m| m["recording"].as_str().unwrap().to_string())
        .collect()
}

/// Every page from `first` on, following the `Link: …; rel="next"` header.
async fn walk(http: std::net::SocketAddr, first: &str) -> (Vec<String>, usize) {
    let (mut all, mut pages) = (Vec::new(), 0);
    let mut next = Some(first.to_string());
    while let Some(path) = next.take() {
        let r = http_get(http, &path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        pages += 1;
        all.extend(recording_names(&serde_json::from_slice(&r.body).unwrap()));
        next = r.header("link").map(|l| {
            l.strip_prefix('<')
                .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                .unwrap_or_else(|| panic!("a next link: {l}"))
                .to_string()
        });
    }
    (all, pages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_are_paged_newest_first() {
    let tmp = TempDir::new("listing-pages");
    let mut names = fake_recordings(&tmp.0);
    names.reverse();
    let server = server_with(SignalConfig {
        recordings_dir: Some(tmp.0.clone()),
        ..SignalConfig::default()
    })
    .await;

    let first = http_get(server.http, "/recordings", &[]).await;
    let page: Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(recording_names(&page), names[..100], "100 by default");
    assert_eq!(
        page[0]["files"],
        serde_json::json!([]),
        "each entry is the manifest"
    );
    assert_eq!(
        first.header("link"),
        Some(&*format!(
            "</recordings?limit=100&after={}>; rel=\"next\"",
            names[99]
        ))
    );

    let big = http_get(server.http, "/recordings?limit=5000", &[]).await;
    let big: Value = serde_json::from_slice(&big.body).unwrap();
    assert_eq!(recording_names(&big), names[..1000], "at most 1000 a page");

    let after = http_get(
        server.http,
        &format!("/recordings?limit=3&after={}", names[10]),
        &[],
    )
    .await;
    let after: Value = serde_json::from_slice(&after.body).unwrap();
    assert_eq!(recording_names(&after), names[11..14]);

    let (all, pages) = walk(server.http, "/recordings?limit=1000").await;
    assert_eq!(all, names, "every finished recording once, newest first");
    assert!((4..=5).contains(&pages), "{pages} pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_listings_run() {
    let tmp = TempDir::new("listing-healthz");
    fake_recordings(&tmp.0);
    let server = server_with(SignalConfig {
        recordings_dir: Some(tmp.0.clone()),
        ..SignalConfig::default()
    })
    .await;
    let http = server.http;
    let walks: Vec<_> = (0..8)
        .map(|_| tokio::spawn(async move { walk(http, "/recordings?limit=1000").await }))
        .collect();
    for _ in 0..20 {
        let r = tokio::time::timeout(WAIT, http_get(http, "/healthz", &[]))
            .await
            .expect("/healthz answers while listings run");
        assert_eq!(r.body, b"ok\n");
    }
    for w in walks {
        let (all, _) = tokio::time::timeout(WAIT, w).await.unwrap().unwrap();
        assert_eq!(all.len(), RECORDINGS + RECORDINGS / 10 + RECORDINGS / 100);
    }
}
