//! RecorderEndpoint: where its file may go, its media profiles, and the packets it is fed.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sori_record::mkv::Container;
use sori_record::{Feed, Recording, RecordingConfig};
use sori_sfu::{MediaKind, TapId, TapPacket, TrackId};
use tokio::sync::mpsc;

use crate::model::FlowTrack;
use crate::rpc::RpcError;

/// Kurento's UriEndpoint states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecState {
    Stop,
    Start,
    Pause,
}

impl RecState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            RecState::Stop => "STOP",
            RecState::Start => "START",
            RecState::Pause => "PAUSE",
        }
    }
}

/// A media profile: container and kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Profile {
    pub container: Container,
    pub audio: bool,
    pub video: bool,
}

pub(crate) fn parse_profile(name: Option<&str>) -> Result<Profile, RpcError> {
    let name = name.unwrap_or("WEBM");
    let (container, rest) = if let Some(rest) = name.strip_prefix("WEBM") {
        (Container::WebM, rest)
    } else if let Some(rest) = name.strip_prefix("MKV") {
        (Container::Matroska, rest)
    } else if name.starts_with("MP4") || name == "FLV" {
        return Err(RpcError::illegal_param(format!(
            "mediaProfile {name} is not supported: Sori records without transcoding, into \
             WEBM or MKV (VP8/VP9 and Opus)"
        )));
    } else {
        return Err(RpcError::illegal_param(format!(
            "unknown mediaProfile {name} (use WEBM, WEBM_AUDIO_ONLY, WEBM_VIDEO_ONLY, MKV, \
             MKV_AUDIO_ONLY or MKV_VIDEO_ONLY)"
        )));
    };
    let (audio, video) = match rest {
        "" => (true, true),
        "_AUDIO_ONLY" => (true, false),
        "_VIDEO_ONLY" => (false, true),
        _ => {
            return Err(RpcError::illegal_param(format!(
                "unknown mediaProfile {name}"
            )))
        }
    };
    Ok(Profile {
        container,
        audio,
        video,
    })
}

/// The file a recorder `uri` names, which must lie inside `dir`: `file:///…` absolute paths
/// under it, or a plain relative name resolved against it. No `..`, no other scheme, no
/// escape through a symbolic link.
pub(crate) fn resolve_uri(uri: &str, dir: Option<&Path>) -> Result<PathBuf, RpcError> {
    let Some(dir) = dir else {
        return Err(RpcError::illegal_param(
            "recording is off: no recordings directory is configured",
        ));
    };
    let refuse = |why: &str| {
        RpcError::illegal_param(format!(
            "uri {uri:?} refused: {why}; recordings go inside {}",
            dir.display()
        ))
    };
    let raw = if let Some(path) = uri.strip_prefix("file://") {
        PathBuf::from(path)
    } else if uri.contains("://") {
        return Err(refuse("only file:// URIs are supported"));
    } else {
        dir.join(uri)
    };
    if raw.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(refuse("'..' is not allowed"));
    }
    if !raw.is_absolute() {
        return Err(refuse("the path must be absolute"));
    }
    let name = raw
        .file_name()
        .ok_or_else(|| refuse("it names no file"))?
        .to_owned();
    std::fs::create_dir_all(dir)
        .map_err(|e| refuse(&format!("cannot create the directory: {e}")))?;
    let root = dir
        .canonicalize()
        .map_err(|e| refuse(&format!("the directory is unusable: {e}")))?;
    let parent = raw.parent().ok_or_else(|| refuse("it names no file"))?;
    // The file's directory must exist inside the root (it is not created: a missing one is an
    // Error event at record time, as for any unwritable path).
    let parent_real = parent
        .canonicalize()
        .unwrap_or_else(|_| parent.to_path_buf());
    if !parent_real.starts_with(&root) {
        return Err(refuse("it is outside the recordings directory"));
    }
    let path = parent_real.join(name);
    if std::fs::symlink_metadata(&path).is_ok() {
        return Err(refuse(
            "the file exists, and a recorder never overwrites one",
        ));
    }
    Ok(path)
}

/// Starts a recording into a file that must not exist yet. `create` already refused an
/// existing one; creating it exclusively here also covers a file that appeared since (or a
/// recorder asked to record again after `stop`), so a recording never truncates a file.
pub(crate) fn start(config: RecordingConfig) -> Result<Recording, String> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&config.path)
        .map_err(|e| format!("cannot open {}: {e}", config.path.display()))?;
    let path = config.path.clone();
    Recording::start(config).map_err(|e| {
        // The file is the empty one just created: nothing of anyone else's is lost.
        let _ = std::fs::remove_file(&path);
        e.to_string()
    })
}

/// A RecorderEndpoint's state.
pub(crate) struct Rec {
    pub uri: String,
    pub path: PathBuf,
    pub profile: Profile,
    pub state: RecState,
    pub recording: Option<Recording>,
    /// Open taps: kind, source track, tap.
    pub taps: Vec<(MediaKind, TrackId, TapId)>,
    /// Packets fed to the file so far, per kind (audio, video).
    pub counts: Arc<[AtomicU64; 2]>,
    /// MediaFlowIn state per kind.
    pub flow_in: [FlowTrack; 2],
}

impl Rec {
    pub(crate) fn new(uri: String, path: PathBuf, profile: Profile) -> Self {
        Self {
            uri,
            path,
            profile,
            state: RecState::Stop,
            recording: None,
            taps: Vec::new(),
            counts: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
            flow_in: [FlowTrack::default(); 2],
        }
    }

    pub(crate) fn wants(&self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Audio => self.profile.audio,
            MediaKind::Video => self.profile.video,
        }
    }
}

/// Passes a tap's packets to the recording until either side goes (through sori-record's
/// bounded queue, which drops and counts what a writer behind cannot take), counting them per
/// kind for MediaFlowIn and the stats.
pub(crate) async fn forward(
    rx: mpsc::UnboundedReceiver<TapPacket>,
    to: Feed,
    counts: Arc<[AtomicU64; 2]>,
) {
    sori_record::forward(rx, to, move |p| {
        counts[p.kind as usize].fetch_add(1, Ordering::Relaxed);
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles() {
        let p = parse_profile(None).unwrap();
        assert_eq!(
            (p.container, p.audio, p.video),
            (Container::WebM, true, true)
        );
        let p = parse_profile(Some("MKV_VIDEO_ONLY")).unwrap();
        assert_eq!(
            (p.container, p.audio, p.video),
            (Container::Matroska, false, true)
        );
        let e = parse_profile(Some("MP4")).unwrap_err();
        assert!(e.message.contains("not supported"), "{}", e.message);
        assert!(parse_profile(Some("WEBM_SOMETHING")).is_err());
    }

    #[test]
    fn uris_stay_inside_the_directory() {
        let dir = std::env::temp_dir().join(format!("sori-rec-uri-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = dir.canonicalize().unwrap();
        let inside = format!("file://{}/a.webm", root.display());
        assert_eq!(
            resolve_uri(&inside, Some(&dir)).unwrap(),
            root.join("a.webm")
        );
        assert_eq!(
            resolve_uri("b.webm", Some(&dir)).unwrap(),
            root.join("b.webm")
        );
        for bad in [
            "file:///etc/passwd".to_string(),
            format!("file://{}/../x.webm", root.display()),
            "../x.webm".to_string(),
            "http://example.invalid/x.webm".to_string(),
            "file://relative.webm".to_string(),
        ] {
            assert!(
                resolve_uri(&bad, Some(&dir)).is_err(),
                "{bad} must be refused"
            );
        }
        #[cfg(unix)]
        {
            let link = dir.join("escape");
            let _ = std::os::unix::fs::symlink("/etc", &link);
            let through = format!("file://{}/escape/x.webm", root.display());
            assert!(
                resolve_uri(&through, Some(&dir)).is_err(),
                "no escape by symlink"
            );
        }
        assert!(resolve_uri("x.webm", None).is_err());
        std::fs::write(dir.join("taken.webm"), b"someone's recording").unwrap();
        let e = resolve_uri("taken.webm", Some(&dir)).unwrap_err();
        assert!(e.message.contains("never overwrites"), "{}", e.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
