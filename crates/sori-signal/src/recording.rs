//! Room recording: one file per participant, written by the media core in this process, and a
//! manifest with each file's start time so the room can be replayed in sync.
//!
//! `<recordings dir>/<room>-<UTC time>/` holds `<participant>.webm` files and `manifest.json`.
//! `GET /recordings` lists them; `GET /recordings/<recording>/<file>` downloads one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use sori_net::sori_sfu::{MediaKind, TapId, TrackId};
use sori_net::MediaHandle;
use sori_record::mkv::Container;
use sori_record::{Input, Recording, RecordingConfig, Summary};
use tokio::sync::Mutex;

use crate::auth::Grants;
use crate::Signal;

/// A participant's file in a room recording.
struct Part {
    name: String,
    file: String,
    recording: Option<Recording>,
    taps: Vec<(TrackId, TapId)>,
    summary: Option<Summary>,
}

struct RoomRec {
    dir_name: String,
    path: PathBuf,
    started: SystemTime,
    parts: HashMap<String, Part>,
}

/// Room recordings of this session server.
pub(crate) struct Recordings {
    dir: Option<PathBuf>,
    media: Option<MediaHandle>,
    inner: Mutex<Inner>,
}

/// A participant's name and the tracks it publishes.
type Published = (String, Vec<(TrackId, MediaKind)>);

#[derive(Default)]
struct Inner {
    rooms: HashMap<String, RoomRec>,
    /// Published tracks per (room, participant).
    tracks: HashMap<(String, String), Published>,
}

/// A name safe as one path component: letters, digits, `-`, `_`, `.` (not leading).
fn safe(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if cleaned.is_empty() {
        "x".into()
    } else {
        cleaned
    }
}

fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Recordings {
    pub(crate) fn new(dir: Option<PathBuf>, media: Option<MediaHandle>) -> Self {
        Self {
            dir,
            media,
            inner: Mutex::default(),
        }
    }

    /// Whether `room` is being recorded.
    pub(crate) async fn is_on(&self, room: &str) -> bool {
        self.inner.lock().await.rooms.contains_key(room)
    }

    /// A participant's track started arriving at the media server.
    pub(crate) async fn published(
        &self,
        room: &str,
        participant: &str,
        name: &str,
        track: TrackId,
        kind: MediaKind,
    ) {
        let mut inner = self.inner.lock().await;
        let entry = inner
            .tracks
            .entry((room.to_string(), participant.to_string()))
            .or_insert_with(|| (name.to_string(), Vec::new()));
        entry.1.push((track, kind));
        if inner.rooms.contains_key(room) {
            self.record_participant(&mut inner, room, participant).await;
        }
    }

    /// Starts recording `room`; returns its name, or why not.
    pub(crate) async fn start(&self, room: &str) -> Result<String, String> {
        let (Some(dir), Some(_)) = (&self.dir, &self.media) else {
            return Err(if self.media.is_none() {
                "room recording needs the media server in this process (sori serve)".into()
            } else {
                "recording is off: no recordings directory is configured".into()
            });
        };
        let mut inner = self.inner.lock().await;
        if let Some(r) = inner.rooms.get(room) {
            return Ok(r.dir_name.clone());
        }
        let started = SystemTime::now();
        let dir_name = format!("{}-{}", safe(room), utc_stamp(started));
        let path = dir.join(&dir_name);
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        inner.rooms.insert(
            room.to_string(),
            RoomRec {
                dir_name: dir_name.clone(),
                path,
                started,
                parts: HashMap::new(),
            },
        );
        let participants: Vec<String> = inner
            .tracks
            .keys()
            .filter(|(r, _)| r == room)
            .map(|(_, p)| p.clone())
            .collect();
        for p in participants {
            self.record_participant(&mut inner, room, &p).await;
        }
        tracing::info!(room, recording = dir_name, "room recording started");
        Ok(dir_name)
    }

    /// Opens the participant's file (once) and taps its tracks not yet tapped.
    async fn record_participant(&self, inner: &mut Inner, room: &str, participant: &str) {
        let Some(media) = &self.media else { return };
        let Some((name, tracks)) = inner
            .tracks
            .get(&(room.to_string(), participant.to_string()))
            .cloned()
        else {
            return;
        };
        let Some(rec) = inner.rooms.get_mut(room) else {
            return;
        };
        let part = rec.parts.entry(participant.to_string()).or_insert_with(|| {
            let file = format!("{}-{}.webm", safe(participant), safe(&name));
            Part {
                name: name.clone(),
                file,
                recording: None,
                taps: Vec::new(),
                summary: None,
            }
        });
        if part.summary.is_some() {
            return; // this participant's file is finished (it left)
        }
        if part.recording.is_none() {
            let config = RecordingConfig {
                path: rec.path.join(&part.file),
                container: Container::WebM,
                audio: true,
                video: true,
            };
            match Recording::start(config) {
                Ok(r) => part.recording = Some(r),
                Err(e) => {
                    tracing::warn!(room, participant, "cannot record: {e}");
                    return;
                }
            }
        }
        for (track, _) in tracks {
            if part.taps.iter().any(|(t, _)| *t == track) {
                continue;
            }
            let Ok((tap, mut rx)) = media.tap(track).await else {
                continue;
            };
            part.taps.push((track, tap));
            let Some(to) = part.recording.as_ref().map(Recording::sender) else {
                continue;
            };
            tokio::spawn(async move {
                while let Some(p) = rx.recv().await {
                    if to.send(Input::Packet(p)).is_err() {
                        break;
                    }
                }
            });
        }
    }

    /// The participant left: its file is finished (it stays in the room's recording).
    pub(crate) async fn left(&self, room: &str, participant: &str) {
        let mut inner = self.inner.lock().await;
        inner
            .tracks
            .remove(&(room.to_string(), participant.to_string()));
        let Some(part) = inner
            .rooms
            .get_mut(room)
            .and_then(|r| r.parts.get_mut(participant))
        else {
            return;
        };
        self.finish(part).await;
    }

    /// Closes a participant's taps and finishes its file (once).
    async fn finish(&self, part: &mut Part) {
        if let Some(media) = &self.media {
            for (_, tap) in part.taps.drain(..) {
                media.untap(tap);
            }
        }
        if let Some(recording) = part.recording.take() {
            part.summary = tokio::task::spawn_blocking(move || recording.stop())
                .await
                .ok()
                .and_then(Result::ok)
                .or_else(|| Some(Summary::default()));
        }
    }

    /// Stops recording `room`: every file finished, the manifest written.
    pub(crate) async fn stop(&self, room: &str) -> Option<String> {
        let mut inner = self.inner.lock().await;
        let mut rec = inner.rooms.remove(room)?;
        drop(inner);
        let mut files = Vec::new();
        for (id, part) in rec.parts.iter_mut() {
            self.finish(part).await;
            let s = part.summary.clone().unwrap_or_default();
            let start_ms = s
                .start
                .map(|t| millis(t).saturating_sub(millis(rec.started)))
                .unwrap_or(0);
            files.push(json!({
                "participant": id, "name": part.name, "file": part.file,
                "start_ms": start_ms, "start_unix_ms": s.start.map(millis),
                "duration_ms": s.duration_ms, "audio_frames": s.audio_frames,
                "video_frames": s.video_frames,
            }));
        }
        files.sort_by_key(|f| f["start_ms"].as_u64());
        let manifest = json!({
            "room": room, "recording": rec.dir_name, "started_unix_ms": millis(rec.started),
            "files": files,
        });
        let path = rec.path.join("manifest.json");
        let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text) {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
        tracing::info!(room, recording = rec.dir_name, "room recording stopped");
        Some(rec.dir_name)
    }

    /// The finished recordings, newest first (reads the disk: call off the runtime's threads).
    fn list(&self) -> Vec<Value> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return out;
        };
        for e in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path().join("manifest.json")) else {
                continue;
            };
            let Ok(mut manifest) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(files) = manifest["files"].as_array_mut() {
                for f in files {
                    let file = f["file"].as_str().unwrap_or_default().to_string();
                    f["href"] = json!(format!("/recordings/{name}/{file}"));
                }
            }
            manifest["href"] = json!(format!("/recordings/{name}/manifest.json"));
            out.push(manifest);
        }
        out.sort_by_key(|m| std::cmp::Reverse(m["started_unix_ms"].as_u64()));
        out
    }

    /// The file `recording/file`, when both are plain names inside the directory.
    fn file(&self, recording: &str, file: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let plain = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        (plain(recording) && plain(file)).then(|| dir.join(recording).join(file))
    }
}

/// `?access_token=…` on recording URLs: a download link cannot carry a header.
#[derive(serde::Deserialize)]
pub(crate) struct TokenQuery {
    access_token: Option<String>,
}

/// Who may see recordings of which room: everyone on a server without keys; else a token with
/// `roomRecord` or `roomAdmin` (401 without a valid token, 403 without the grant).
fn access(
    signal: &Signal,
    headers: &HeaderMap,
    query: &TokenQuery,
) -> Result<Option<Grants>, (StatusCode, String)> {
    let grants = signal.http_grants(headers, query.access_token.as_deref())?;
    match grants {
        Some(g) if !(g.record || g.admin) => Err((
            StatusCode::FORBIDDEN,
            "recordings need an access token with roomRecord or roomAdmin\n".into(),
        )),
        other => Ok(other),
    }
}

pub(crate) async fn list(
    State(signal): State<Signal>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    let grants = match access(&signal, &headers, &query) {
        Ok(g) => g,
        Err(refusal) => return refusal.into_response(),
    };
    let recordings = signal.recordings.clone();
    let all = tokio::task::spawn_blocking(move || recordings.list())
        .await
        .unwrap_or_default();
    let visible: Vec<Value> = all
        .into_iter()
        .filter(|m| {
            let room = m["room"].as_str().unwrap_or_default();
            grants.as_ref().is_none_or(|g| g.may_record(room))
        })
        .collect();
    let body = serde_json::to_string(&visible).unwrap_or_else(|_| "[]".into());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) async fn download(
    State(signal): State<Signal>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    UrlPath((recording, file)): UrlPath<(String, String)>,
) -> Response {
    let grants = match access(&signal, &headers, &query) {
        Ok(g) => g,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(path) = signal.recordings.file(&recording, &file) else {
        return (StatusCode::NOT_FOUND, "no such recording\n").into_response();
    };
    if let Some(g) = grants {
        // The recording's room is in its manifest; one still running has none yet.
        let manifest = path.with_file_name("manifest.json");
        let room = tokio::task::spawn_blocking(move || {
            let text = std::fs::read_to_string(manifest).ok()?;
            let v: Value = serde_json::from_str(&text).ok()?;
            v["room"].as_str().map(str::to_string)
        })
        .await
        .ok()
        .flatten();
        match room {
            Some(room) if g.may_record(&room) => {}
            Some(_) => {
                return (
                    StatusCode::FORBIDDEN,
                    "your access token is for another room\n",
                )
                    .into_response()
            }
            None => return (StatusCode::NOT_FOUND, "no such recording\n").into_response(),
        }
    }
    let kind = match Path::new(&file).extension().and_then(|e| e.to_str()) {
        Some("webm") => "video/webm",
        Some("mkv") => "video/x-matroska",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, kind)], bytes).into_response(),
        _ => (StatusCode::NOT_FOUND, "no such recording\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_stamps() {
        assert_eq!(safe("team standup/../x"), "team_standup____x");
        assert_eq!(safe(""), "x");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(utc_stamp(t), "20261118T110640Z");
    }

    #[test]
    fn downloads_are_confined() {
        let r = Recordings::new(Some(PathBuf::from("/srv/rec")), None);
        assert_eq!(
            r.file("room-1", "p1-Ada.webm"),
            Some(PathBuf::from("/srv/rec/room-1/p1-Ada.webm"))
        );
        for (a, b) in [
            ("..", "x"),
            ("a", "../etc"),
            (".hidden", "x"),
            ("a/b", "c"),
            ("a", ""),
        ] {
            assert_eq!(r.file(a, b), None, "{a}/{b}");
        }
    }
}
