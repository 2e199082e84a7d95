//! Room recording: one file per participant, written by the media core in this process, and a
//! manifest with each file's start time so the room can be replayed in sync.
//!
//! `<recordings dir>/<room>-<UTC time>/` holds `<participant>.webm` files and `manifest.json`
//! (names in [`folders`]). `GET /recordings` lists them a page at a time;
//! `GET /recordings/<recording>/<file>` downloads one, streamed, with byte ranges.

mod folders;
mod range;

use std::collections::{HashMap, VecDeque};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde_json::json;
use sori_media::sori_sfu::{MediaKind, TrackId};
use sori_media::{MediaBackend, Tap};
use sori_record::mkv::Container;
use sori_record::{Recording, RecordingConfig, Summary};
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

use crate::auth::Grants;
use crate::protocol::ErrorCode;
use crate::webhooks::Webhooks;
use crate::{Signal, SignalConfig};

use range::Ranged;

/// A participant's file in a room recording.
struct Part {
    name: String,
    file: String,
    recording: Option<Recording>,
    taps: Vec<(TrackId, Tap)>,
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
    /// Where `recording_started` and `recording_finished` go.
    hooks: Webhooks,
    dir: Option<PathBuf>,
    media: Option<Arc<dyn MediaBackend>>,
    /// Recordings one room may start in an hour (0: any number).
    starts_per_hour: u32,
    /// Bytes the directory may hold before new recordings are refused.
    quota: Option<u64>,
    inner: Mutex<Inner>,
}

/// A participant's name and the tracks it publishes.
type Published = (String, Vec<(TrackId, MediaKind)>);

#[derive(Default)]
struct Inner {
    rooms: HashMap<String, RoomRec>,
    /// Published tracks per (room, participant).
    tracks: HashMap<(String, String), Published>,
    starts: Starts,
}

const HOUR: Duration = Duration::from_secs(3600);

/// When each room started its recordings of the last hour.
#[derive(Default)]
struct Starts(HashMap<String, VecDeque<Instant>>);

impl Starts {
    /// `Ok` when `room` may start another recording at `now`; else how long until it may.
    fn check(&mut self, room: &str, limit: u32, now: Instant) -> Result<(), Duration> {
        let Some(times) = self.0.get_mut(room) else {
            return Ok(());
        };
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= HOUR)
        {
            times.pop_front();
        }
        match times.front() {
            Some(first) if limit > 0 && times.len() >= limit as usize => {
                Err(HOUR.saturating_sub(now.saturating_duration_since(*first)))
            }
            _ => Ok(()),
        }
    }

    fn record(&mut self, room: &str, now: Instant) {
        // Rooms whose last start is an hour old are forgotten: the table stays bounded.
        self.0.retain(|_, times| {
            times
                .back()
                .is_some_and(|t| now.saturating_duration_since(*t) < HOUR)
        });
        self.0.entry(room.to_string()).or_default().push_back(now);
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Recordings {
    pub(crate) fn new(
        config: &SignalConfig,
        media: Option<Arc<dyn MediaBackend>>,
        hooks: Webhooks,
    ) -> Self {
        Self {
            hooks,
            dir: config.recordings_dir.clone(),
            media,
            starts_per_hour: config.recording_starts_per_hour,
            quota: config.recordings_quota,
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
    pub(crate) async fn start(&self, room: &str) -> Result<String, (ErrorCode, String)> {
        let (Some(dir), Some(_)) = (&self.dir, &self.media) else {
            return Err((
                ErrorCode::MediaError,
                if self.media.is_none() {
                    "room recording needs the media server in this process (sori serve)".into()
                } else {
                    "recording is off: no recordings directory is configured".into()
                },
            ));
        };
        {
            let mut inner = self.inner.lock().await;
            if let Some(r) = inner.rooms.get(room) {
                return Ok(r.dir_name.clone());
            }
            self.check_rate(&mut inner, room)?;
        }
        if let Some(quota) = self.quota {
            // The directory is walked without the lock: other rooms' recordings go on meanwhile.
            let walked = dir.clone();
            let used = tokio::task::spawn_blocking(move || folders::usage(&walked))
                .await
                .unwrap_or(0);
            if used >= quota {
                tracing::warn!(room, used, quota, "recording refused: the quota is reached");
                return Err((
                    ErrorCode::ServerFull,
                    format!(
                        "recording refused: the server's recordings take {} MiB, its quota is \
                         {} MiB; old recordings must be deleted first",
                        used >> 20,
                        quota >> 20
                    ),
                ));
            }
        }
        let mut inner = self.inner.lock().await;
        // Another start of this room may have come in while the directory was walked.
        if let Some(r) = inner.rooms.get(room) {
            return Ok(r.dir_name.clone());
        }
        self.check_rate(&mut inner, room)?;
        let started = SystemTime::now();
        let dir_name = folders::create(dir, room, started).map_err(|e| {
            tracing::warn!(room, "cannot create a recording in {}: {e}", dir.display());
            (
                ErrorCode::MediaError,
                format!("cannot create a recording: {e}"),
            )
        })?;
        inner.starts.record(room, Instant::now());
        self.hooks.send(
            "recording_started",
            vec![
                ("room", json!({"name": room})),
                ("recording", json!({"name": dir_name})),
            ],
        );
        let path = dir.join(&dir_name);
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

    /// Refuses a start past the room's recordings per hour.
    fn check_rate(&self, inner: &mut Inner, room: &str) -> Result<(), (ErrorCode, String)> {
        let limit = self.starts_per_hour;
        inner
            .starts
            .check(room, limit, Instant::now())
            .map_err(|wait| {
                (
                    ErrorCode::RateLimited,
                    format!(
                        "this room has started {limit} recordings in the last hour, the most it \
                     may; the next may start in {} minutes",
                        wait.as_secs().div_ceil(60)
                    ),
                )
            })
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
            let file = format!(
                "{}-{}.webm",
                folders::name_part(participant),
                folders::name_part(&name)
            );
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
            let Ok(mut tap) = media.record(track).await else {
                continue;
            };
            let Some(rx) = tap.packets() else { continue };
            part.taps.push((track, tap));
            let Some(to) = part.recording.as_ref().map(Recording::sender) else {
                continue;
            };
            tokio::spawn(sori_record::forward(rx, to, |_| {}));
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
        // A dropped tap stops.
        part.taps.clear();
        if let Some(recording) = part.recording.take() {
            part.summary = tokio::task::spawn_blocking(move || recording.stop())
                .await
                .ok()
                .and_then(Result::ok)
                .or_else(|| Some(Summary::default()));
        }
    }

    /// Stops every room's recording (a shutdown).
    pub(crate) async fn stop_all(&self) {
        let rooms: Vec<String> = self.inner.lock().await.rooms.keys().cloned().collect();
        for room in rooms {
            if let Some(name) = self.stop(&room).await {
                tracing::info!(room, recording = name, "recording finished at shutdown");
            }
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
                "video_frames": s.video_frames, "dropped_packets": s.dropped_packets,
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
        let mut recording = manifest;
        recording["name"] = json!(rec.dir_name);
        recording["manifest"] = json!(format!("/recordings/{}/manifest.json", rec.dir_name));
        self.hooks.send(
            "recording_finished",
            vec![("room", json!({"name": room})), ("recording", recording)],
        );
        Some(rec.dir_name)
    }

    /// A page of the finished recordings `grants` may see (all on a server without keys), as
    /// JSON, and the next page's cursor. Reads the disk: call off the runtime's threads.
    fn page(
        &self,
        after: Option<&str>,
        limit: usize,
        grants: Option<&Grants>,
    ) -> (String, Option<String>) {
        let Some(dir) = &self.dir else {
            return ("[]".into(), None);
        };
        let room = grants.and_then(|g| g.room.as_deref());
        let page = folders::page(dir, after, limit, room, |r| {
            grants.is_none_or(|g| g.may_record(r))
        });
        let body = serde_json::to_string(&page.manifests).unwrap_or_else(|_| "[]".into());
        (body, page.next)
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

/// Recordings in one page of the listing, unless `?limit=` says otherwise.
const PAGE: usize = 100;
/// Most recordings in one page.
const MAX_PAGE: usize = 1000;
/// Bytes of a download read from the disk at a time.
const CHUNK: usize = 64 * 1024;

/// `?limit=N&after=<recording>`: a page of the listing.
#[derive(serde::Deserialize)]
pub(crate) struct PageQuery {
    limit: Option<usize>,
    after: Option<String>,
}

pub(crate) async fn list(
    State(signal): State<Signal>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    Query(page): Query<PageQuery>,
) -> Response {
    let grants = match access(&signal, &headers, &query) {
        Ok(g) => g,
        Err(refusal) => return refusal.into_response(),
    };
    let limit = page.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let recordings = signal.recordings.clone();
    let listed = tokio::task::spawn_blocking(move || {
        recordings.page(page.after.as_deref(), limit, grants.as_ref())
    })
    .await;
    let Ok((body, next)) = listed else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "listing failed\n").into_response();
    };
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(next) = next {
        // Folder names are plain ASCII: the link needs no escaping.
        let link = format!("</recordings?limit={limit}&after={next}>; rel=\"next\"");
        if let Ok(value) = link.parse() {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    response
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
    let not_found = || (StatusCode::NOT_FOUND, "no such recording\n").into_response();
    let Some(dir) = signal.recordings.dir.clone() else {
        return not_found();
    };
    if let Some(g) = grants {
        // The recording's room is in its manifest; one still running has none yet.
        let (d, r) = (dir.clone(), recording.clone());
        let room = tokio::task::spawn_blocking(move || {
            folders::read_manifest(&d, &r)?["room"]
                .as_str()
                .map(str::to_string)
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
            None => return not_found(),
        }
    }
    let kind = match Path::new(&file).extension().and_then(|e| e.to_str()) {
        Some("webm") => "video/webm",
        Some("mkv") => "video/x-matroska",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    // With If-Range the client's copy would have to be validated, and files carry no
    // validator: the whole file is always right.
    let range = (!headers.contains_key(header::IF_RANGE))
        .then(|| {
            headers
                .get(header::RANGE)?
                .to_str()
                .ok()
                .map(str::to_string)
        })
        .flatten();
    let opened = tokio::task::spawn_blocking(move || {
        let (mut f, len) = folders::open(&dir, &recording, &file)?;
        let ranged = range::parse(range.as_deref(), len);
        if let Ranged::Part { start, .. } = ranged {
            f.seek(SeekFrom::Start(start))?;
        }
        std::io::Result::Ok((f, len, ranged))
    })
    .await;
    let Ok(Ok((f, len, ranged))) = opened else {
        return not_found();
    };
    let (status, count, content_range) = match ranged {
        Ranged::Whole => (StatusCode::OK, len, None),
        Ranged::Part { start, end } => (
            StatusCode::PARTIAL_CONTENT,
            end - start + 1,
            Some(format!("bytes {start}-{end}/{len}")),
        ),
        Ranged::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response()
        }
    };
    let body = Body::from_stream(chunks(tokio::fs::File::from_std(f), count));
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (header::CONTENT_LENGTH, count.to_string()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
        ],
        body,
    )
        .into_response();
    if let Some(value) = content_range.and_then(|r| r.parse().ok()) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    response
}

/// `len` bytes of `file` from where it stands, read a chunk at a time as the client takes
/// them: a download holds one chunk in memory, whatever the file's size.
fn chunks(file: tokio::fs::File, len: u64) -> impl Stream<Item = std::io::Result<Bytes>> {
    futures_util::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
        match file.read(&mut buf).await {
            // The file shrank: the body ends short of its length, and the client sees that.
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_starts_so_many_recordings_an_hour() {
        let t0 = Instant::now();
        let mut starts = Starts::default();
        for i in 0..3 {
            let t = t0 + Duration::from_secs(i * 60);
            assert_eq!(starts.check("a", 3, t), Ok(()));
            starts.record("a", t);
        }
        let t = t0 + Duration::from_secs(600);
        assert_eq!(starts.check("a", 3, t), Err(Duration::from_secs(3000)));
        assert_eq!(starts.check("b", 3, t), Ok(()), "each room has its own");
        assert_eq!(starts.check("a", 0, t), Ok(()), "0: no limit");
        // An hour after the first start, one more may start.
        assert_eq!(starts.check("a", 3, t0 + HOUR), Ok(()));
        starts.record("b", t0 + HOUR * 2);
        assert_eq!(starts.0.len(), 1, "rooms quiet for an hour are forgotten");
    }
}
