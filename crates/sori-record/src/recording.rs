//! A recording in progress: a thread that owns the file and runs a [`Recorder`] on the wall
//! clock, fed through a bounded queue.

use std::fs::File;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::mkv::Container;
use crate::queue::{Feed, Queue, QUEUE_PACKETS};
use crate::recorder::{Profile, Recorder};
use crate::{Input, Summary};

/// The writer thread's longest wait for input when no timeout is due.
const IDLE: Duration = Duration::from_millis(200);

/// What to record and where.
#[derive(Debug, Clone)]
pub struct RecordingConfig {
    /// The file to write (created or truncated).
    pub path: PathBuf,
    /// WebM or Matroska.
    pub container: Container,
    /// Record audio.
    pub audio: bool,
    /// Record video.
    pub video: bool,
}

/// Why a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file could not be created.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing failed (disk full, file removed…).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// A recording in progress: a thread that owns the file.
pub struct Recording {
    feed: Feed,
    thread: Option<JoinHandle<Result<Summary, RecordError>>>,
}

impl Recording {
    /// Creates the file (an error here means nothing was started) and starts the writer.
    pub fn start(config: RecordingConfig) -> Result<Recording, RecordError> {
        let file = File::create(&config.path).map_err(|source| RecordError::Open {
            path: config.path.display().to_string(),
            source,
        })?;
        let queue = Queue::new(QUEUE_PACKETS);
        let feed = Feed(queue.clone());
        let thread = std::thread::Builder::new()
            .name("sori-record".into())
            .spawn(move || {
                let result = run(&config, file, &queue);
                // Feeders learn that the file is done, whether it ended well or not.
                queue.close();
                result
            })
            .map_err(|source| RecordError::Open {
                path: "recorder thread".into(),
                source,
            })?;
        Ok(Recording {
            feed,
            thread: Some(thread),
        })
    }

    /// Where to send packets and commands (see [`crate::forward`] for a tap's packets).
    pub fn sender(&self) -> Feed {
        self.feed.clone()
    }

    /// Packets dropped so far because the writer fell behind (its queue was full).
    pub fn dropped(&self) -> u64 {
        self.feed.dropped()
    }

    /// Finishes the file and waits until it is complete on disk (blocking).
    pub fn stop(mut self) -> Result<Summary, RecordError> {
        let _ = self.feed.send(Input::Stop);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Ok(Summary::default()),
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        // Dropped without stop: the thread still finishes the file.
        let _ = self.feed.send(Input::Stop);
    }
}

/// The writer thread: the recorder driven by the queue and the wall clock.
fn run(config: &RecordingConfig, file: File, queue: &Queue) -> Result<Summary, RecordError> {
    let failed = |source| RecordError::Write {
        path: config.path.display().to_string(),
        source,
    };
    let profile = Profile {
        container: config.container,
        audio: config.audio,
        video: config.video,
    };
    let mut recorder = Recorder::new(file, profile);
    loop {
        let wait = recorder
            .poll_timeout()
            .map_or(IDLE, |due| due.saturating_duration_since(Instant::now()));
        let input = queue.pop(wait.min(IDLE));
        let now = Instant::now();
        match input {
            Some(Input::Packet(p)) => recorder.handle_packet(now, p),
            Some(Input::Pause(true)) => {
                recorder.pause(now);
                Ok(())
            }
            Some(Input::Pause(false)) => {
                recorder.resume(now);
                Ok(())
            }
            Some(Input::Stop) => break,
            None => recorder.handle_timeout(now),
        }
        .map_err(failed)?;
    }
    let (mut summary, file) = recorder
        .finish(Instant::now(), SystemTime::now())
        .map_err(failed)?;
    file.sync_all().map_err(failed)?;
    summary.dropped_packets = queue.dropped();
    if summary.dropped_packets > 0 {
        tracing::warn!(
            path = %config.path.display(),
            dropped = summary.dropped_packets,
            "the recording fell behind and dropped packets"
        );
    }
    Ok(summary)
}
