//! # sori-record — recordings written by the media server itself
//!
//! A [`Recording`] takes the RTP packets of one participant's audio and video as the media core
//! forwards them ([`TapPacket`]s), turns them back into codec frames without decoding them, and
//! writes WebM (VP8/VP9 + Opus) or Matroska (also H.264) with [`mkv::MkvWriter`], cluster by cluster, so that
//! a file cut by a crash still plays up to its last second.
//!
//! - Timestamps come from RTP: each track's frames are placed at the arrival time of its first
//!   packet plus the RTP time elapsed since; audio and video are lined up by the sender's RTCP
//!   sender reports when both have one.
//! - Video starts on a keyframe (the core asks the sender for one when the tap opens); after
//!   a lost packet the recorder skips to the next keyframe instead of writing broken frames.
//! - The file's tracks are fixed once every expected kind has produced its first frame, or
//!   two seconds after the first frame of any: a kind that never arrives is left out, so a
//!   recording never ends up empty because one kind was missing.
//!
//! The writer is this crate's own (about 300 lines): libwebm's muxer, wrapped by the `webm`
//! crate, keeps its own buffering and finalisation that Sori cannot steer for crash safety,
//! and needs a C++ build; the Matroska subset a live recording needs is small.

#![forbid(unsafe_code)]

mod depack;
pub mod mkv;

use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mkv::{Container, MkvWriter, TrackCodec, TrackSpec};
use sori_sfu::{MediaKind, TapPacket, VideoCodec};

/// How long the recorder waits for every expected kind before fixing the file's tracks.
const TRACK_WAIT: Duration = Duration::from_secs(2);

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

/// What the recorder is told.
#[derive(Debug)]
pub enum Input {
    /// A packet of a tapped track.
    Packet(TapPacket),
    /// Pause (`true`) or resume (`false`): paused time is left out of the file.
    Pause(bool),
    /// Finish the file.
    Stop,
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

/// What a finished recording holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Wall-clock time of the file's first frame (its time zero).
    pub start: Option<std::time::SystemTime>,
    /// Milliseconds of media.
    pub duration_ms: u64,
    /// Audio frames written.
    pub audio_frames: u64,
    /// Video frames written.
    pub video_frames: u64,
}

/// A recording in progress: a thread that owns the file.
pub struct Recording {
    tx: mpsc::Sender<Input>,
    thread: Option<JoinHandle<Result<Summary, RecordError>>>,
}

impl Recording {
    /// Creates the file (an error here means nothing was started) and starts the writer.
    pub fn start(config: RecordingConfig) -> Result<Recording, RecordError> {
        let file = File::create(&config.path).map_err(|source| RecordError::Open {
            path: config.path.display().to_string(),
            source,
        })?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sori-record".into())
            .spawn(move || Writer::new(config, file).run(rx))
            .map_err(|source| RecordError::Open {
                path: "recorder thread".into(),
                source,
            })?;
        Ok(Recording {
            tx,
            thread: Some(thread),
        })
    }

    /// Where to send packets and commands.
    pub fn sender(&self) -> mpsc::Sender<Input> {
        self.tx.clone()
    }

    /// Finishes the file and waits until it is complete on disk (blocking).
    pub fn stop(mut self) -> Result<Summary, RecordError> {
        let _ = self.tx.send(Input::Stop);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Ok(Summary::default()),
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        // Dropped without stop: the thread still finishes the file.
        let _ = self.tx.send(Input::Stop);
    }
}

/// One track's reassembly state.
struct Track {
    /// The tap feeding it: a new one means a new source (its own sequence and RTP clock).
    tap: sori_sfu::TapId,
    kind: MediaKind,
    codec: Option<VideoCodec>,
    clock_rate: u32,
    /// First frame: arrival and extended RTP time.
    origin: Option<(Instant, i64)>,
    /// The sender's latest report: its wall clock and the extended RTP time at that moment.
    report: Option<(std::time::SystemTime, i64)>,
    last_rtp: Option<(u32, i64)>,
    last_seq: Option<u64>,
    need_key: bool,
    frame: Vec<u8>,
    frame_rtp: Option<u32>,
    frame_key: bool,
    frame_broken: bool,
    size: (u32, u32),
    h264: depack::H264,
}

impl Track {
    fn new(p: &TapPacket) -> Self {
        Self {
            tap: p.tap,
            kind: p.kind,
            codec: p.codec,
            clock_rate: p.clock_rate.max(1),
            origin: None,
            report: None,
            last_rtp: None,
            last_seq: None,
            need_key: p.kind == MediaKind::Video,
            frame: Vec::new(),
            frame_rtp: None,
            frame_key: false,
            frame_broken: false,
            size: (0, 0),
            h264: depack::H264::default(),
        }
    }

    fn extend_rtp(&mut self, rtp: u32) -> i64 {
        let ext = match self.last_rtp {
            None => rtp as i64,
            Some((last, ext)) => ext + rtp.wrapping_sub(last) as i32 as i64,
        };
        self.last_rtp = Some((rtp, ext));
        ext
    }

    /// The wall-clock time of RTP time `ext`.
    fn time_of(&mut self, ext: i64, arrival: Instant) -> Instant {
        let (t0, r0) = *self.origin.get_or_insert((arrival, ext));
        let secs = (ext - r0) as f64 / self.clock_rate as f64;
        if secs >= 0.0 {
            t0 + Duration::from_secs_f64(secs)
        } else {
            t0.checked_sub(Duration::from_secs_f64(-secs)).unwrap_or(t0)
        }
    }

    /// Takes one packet; returns a complete frame (time, keyframe, data) when one ends.
    fn push(&mut self, p: &TapPacket) -> Option<(Instant, bool, Vec<u8>)> {
        if p.tap != self.tap {
            // The source was switched: continue on the wall clock from its first packet, at
            // its first keyframe.
            *self = Track {
                size: self.size,
                ..Track::new(p)
            };
        }
        let gap = self.last_seq.is_some_and(|s| p.seq != s + 1);
        if self.last_seq.is_some_and(|s| p.seq <= s) {
            return None; // duplicate or reordered late: skip
        }
        self.last_seq = Some(p.seq);
        let ext = self.extend_rtp(p.rtp_time);
        if let Some((ntp, rtp)) = p.sender_report {
            self.report = Some((ntp, ext + rtp.wrapping_sub(p.rtp_time) as i32 as i64));
        }
        if self.kind == MediaKind::Audio {
            let at = self.time_of(ext, p.arrival);
            return Some((at, true, p.payload.to_vec()));
        }
        if self.codec == Some(VideoCodec::H264) {
            return self.push_h264(p, gap, ext);
        }
        let desc = match self.codec {
            Some(VideoCodec::Vp8) => depack::vp8(&p.payload),
            Some(VideoCodec::Vp9) => depack::vp9(&p.payload),
            _ => None,
        }?;
        if gap {
            // A frame lost a packet: everything up to the next keyframe would be damaged.
            self.frame_broken = true;
            self.need_key = true;
        }
        if desc.begins || self.frame_rtp != Some(p.rtp_time) {
            self.frame.clear();
            self.frame_rtp = Some(p.rtp_time);
            self.frame_key = p.keyframe;
            self.frame_broken = !desc.begins;
        }
        self.frame.extend_from_slice(&p.payload[desc.data_at..]);
        if !p.marker {
            return None;
        }
        let frame = std::mem::take(&mut self.frame);
        let (key, broken) = (self.frame_key, self.frame_broken);
        self.frame_rtp = None;
        if broken || frame.is_empty() || (self.need_key && !key) {
            return None;
        }
        if key {
            self.need_key = false;
            let size = match self.codec {
                Some(VideoCodec::Vp8) => depack::vp8_size(&frame),
                Some(VideoCodec::Vp9) => depack::vp9_size(&frame),
                _ => None,
            };
            if let Some(s) = size {
                self.size = s;
            }
        }
        let at = self.time_of(ext, p.arrival);
        Some((at, key, frame))
    }

    /// H.264: an access unit is the packets of one RTP timestamp, up to the marker.
    fn push_h264(
        &mut self,
        p: &TapPacket,
        gap: bool,
        ext: i64,
    ) -> Option<(Instant, bool, Vec<u8>)> {
        if gap {
            self.frame_broken = true;
            self.need_key = true;
        }
        if self.frame_rtp != Some(p.rtp_time) {
            self.h264.take();
            self.frame_rtp = Some(p.rtp_time);
            self.frame_broken = gap;
        }
        if self.h264.push(&p.payload).is_none() {
            self.frame_broken = true;
        }
        if !p.marker {
            return None;
        }
        let (frame, key) = self.h264.take();
        self.frame_rtp = None;
        if self.frame_broken || frame.is_empty() || (self.need_key && !key) {
            return None;
        }
        if key {
            self.need_key = false;
        }
        let at = self.time_of(ext, p.arrival);
        Some((at, key, frame))
    }

    fn spec(&self, container: Container) -> Option<TrackSpec> {
        let codec = match (self.kind, self.codec) {
            (MediaKind::Audio, _) => TrackCodec::Opus,
            (_, Some(VideoCodec::Vp8)) => TrackCodec::Vp8,
            (_, Some(VideoCodec::Vp9)) => TrackCodec::Vp9,
            (_, Some(VideoCodec::H264)) if container == Container::Matroska => TrackCodec::H264 {
                avcc: self.h264.avcc()?,
            },
            (_, Some(VideoCodec::H264)) => {
                tracing::warn!("WebM cannot hold H.264 video: recording audio only (use MKV)");
                return None;
            }
            _ => return None,
        };
        Some(TrackSpec {
            codec,
            width: self.size.0,
            height: self.size.1,
        })
    }
}

/// Frames waiting for the file's tracks to be fixed, then the open file.
struct Writer {
    config: RecordingConfig,
    file: Option<File>,
    mkv: Option<MkvWriter>,
    tracks: Vec<Track>,
    /// Track index → track number in the file.
    numbers: Vec<Option<u64>>,
    pending: Vec<(usize, Instant, bool, Vec<u8>)>,
    first_frame: Option<Instant>,
    epoch: Option<Instant>,
    paused_at: Option<Instant>,
    paused_total: Duration,
    summary: Summary,
}

impl Writer {
    fn new(config: RecordingConfig, file: File) -> Self {
        Self {
            config,
            file: Some(file),
            mkv: None,
            tracks: Vec::new(),
            numbers: Vec::new(),
            pending: Vec::new(),
            first_frame: None,
            epoch: None,
            paused_at: None,
            paused_total: Duration::ZERO,
            summary: Summary::default(),
        }
    }

    fn write_error(&self, source: std::io::Error) -> RecordError {
        RecordError::Write {
            path: self.config.path.display().to_string(),
            source,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Input>) -> Result<Summary, RecordError> {
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Input::Packet(p)) => self.packet(p)?,
                Ok(Input::Pause(true)) => {
                    self.paused_at.get_or_insert_with(Instant::now);
                }
                Ok(Input::Pause(false)) => {
                    if let Some(at) = self.paused_at.take() {
                        self.paused_total += at.elapsed();
                        for t in &mut self.tracks {
                            t.need_key = t.kind == MediaKind::Video;
                        }
                    }
                }
                Ok(Input::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if self.mkv.is_none() && self.first_frame.is_some_and(|t| t.elapsed() >= TRACK_WAIT) {
                self.open()?;
            }
        }
        if self.mkv.is_none() && !self.pending.is_empty() {
            self.open()?;
        }
        self.summary.duration_ms = self.mkv.as_ref().map(|m| m.duration_ms()).unwrap_or(0);
        self.summary.start = self.epoch.map(|e| {
            let ago = Instant::now().saturating_duration_since(e);
            std::time::SystemTime::now() - ago
        });
        match self.mkv.take() {
            Some(mkv) => mkv
                .finish(self.summary.duration_ms)
                .map_err(|e| self.write_error(e))?,
            None => {
                // Nothing ever arrived: the file holds a valid header and no tracks.
                if let Some(file) = self.file.take() {
                    let mkv = MkvWriter::create(file, self.config.container, &[])
                        .map_err(|e| self.write_error(e))?;
                    mkv.finish(0).map_err(|e| self.write_error(e))?;
                }
            }
        }
        Ok(self.summary)
    }

    fn packet(&mut self, p: TapPacket) -> Result<(), RecordError> {
        let wanted = match p.kind {
            MediaKind::Audio => self.config.audio,
            MediaKind::Video => self.config.video,
        };
        if !wanted || self.paused_at.is_some() {
            return Ok(());
        }
        let i = match self.tracks.iter().position(|t| t.kind == p.kind) {
            Some(i) => i,
            None => {
                self.tracks.push(Track::new(&p));
                self.numbers.push(None);
                self.tracks.len() - 1
            }
        };
        let Some((at, key, data)) = self.tracks[i].push(&p) else {
            return Ok(());
        };
        let at = at.checked_sub(self.paused_total).unwrap_or(at);
        self.first_frame.get_or_insert_with(Instant::now);
        if self.mkv.is_some() {
            return self.write(i, at, key, &data);
        }
        self.pending.push((i, at, key, data));
        let all_there = [
            (self.config.audio, MediaKind::Audio),
            (self.config.video, MediaKind::Video),
        ]
        .iter()
        .filter(|(want, _)| *want)
        .all(|(_, kind)| {
            self.pending
                .iter()
                .any(|(j, _, _, _)| self.tracks[*j].kind == *kind)
        });
        if all_there {
            self.open()?;
        }
        Ok(())
    }

    /// Lines the tracks up by the sender's clock: when every track has a sender report, each
    /// track's first frame is placed where the sender's wall clock says it was captured,
    /// relative to the first track, instead of where its first packet happened to arrive.
    fn align_by_sender_reports(&mut self) {
        let mut walls = Vec::new();
        for (i, t) in self.tracks.iter().enumerate() {
            tracing::trace!(track = i, origin = ?t.origin.map(|o| o.1), report = ?t.report, "alignment input");
            let (Some((t0, r0)), Some((ntp, sr_rtp))) = (t.origin, t.report) else {
                return;
            };
            let secs = (r0 - sr_rtp) as f64 / t.clock_rate as f64;
            let ntp_secs = ntp
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            walls.push((i, t0, ntp_secs + secs));
        }
        let Some(&(_, ref_t0, ref_wall)) = walls.first() else {
            return;
        };
        if walls.len() < 2 {
            return;
        }
        for &(i, t0, wall) in &walls[1..] {
            let arrived = if t0 >= ref_t0 {
                t0.duration_since(ref_t0).as_secs_f64()
            } else {
                -ref_t0.duration_since(t0).as_secs_f64()
            };
            let shift = (wall - ref_wall) - arrived;
            if !shift.is_finite() || shift.abs() > 5.0 {
                continue; // not one clock after all
            }
            let moved = |at: Instant| {
                let d = Duration::from_secs_f64(shift.abs());
                if shift >= 0.0 {
                    at + d
                } else {
                    at.checked_sub(d).unwrap_or(at)
                }
            };
            if let Some((t0, r0)) = self.tracks[i].origin {
                self.tracks[i].origin = Some((moved(t0), r0));
            }
            for (j, at, ..) in self.pending.iter_mut() {
                if *j == i {
                    *at = moved(*at);
                }
            }
            tracing::debug!(
                track = i,
                shift_ms = shift * 1000.0,
                "aligned by sender reports"
            );
        }
    }

    /// Fixes the file's tracks (the kinds seen so far) and writes what waited.
    fn open(&mut self) -> Result<(), RecordError> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        self.align_by_sender_reports();
        let mut specs = Vec::new();
        for (i, t) in self.tracks.iter().enumerate() {
            let seen = self.pending.iter().any(|(j, ..)| *j == i);
            if let (true, Some(spec)) = (seen, t.spec(self.config.container)) {
                specs.push(spec);
                self.numbers[i] = Some(specs.len() as u64);
            }
        }
        let mkv = MkvWriter::create(file, self.config.container, &specs)
            .map_err(|e| self.write_error(e))?;
        self.mkv = Some(mkv);
        // With video, the file starts at its first keyframe: earlier audio would play over
        // a blank picture and shift the two tracks' start times apart.
        let first_video = self
            .pending
            .iter()
            .filter(|(j, ..)| {
                self.tracks[*j].kind == MediaKind::Video && self.numbers[*j].is_some()
            })
            .map(|(_, at, ..)| *at)
            .min();
        if let Some(v) = first_video {
            self.pending.retain(|(_, at, ..)| *at >= v);
        }
        self.epoch = self.pending.iter().map(|(_, at, ..)| *at).min();
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_by_key(|(_, at, ..)| *at);
        for (i, at, key, data) in pending {
            self.write(i, at, key, &data)?;
        }
        tracing::debug!(path = %self.config.path.display(), tracks = specs.len(), "recording tracks fixed");
        Ok(())
    }

    fn write(&mut self, i: usize, at: Instant, key: bool, data: &[u8]) -> Result<(), RecordError> {
        let Some(number) = self.numbers[i] else {
            return Ok(()); // a kind that arrived after the tracks were fixed
        };
        let epoch = *self.epoch.get_or_insert(at);
        let ms = at.saturating_duration_since(epoch).as_millis() as u64;
        let result = match self.mkv.as_mut() {
            Some(mkv) => mkv.write_frame(number, ms, key, data),
            None => Ok(()),
        };
        result.map_err(|e| self.write_error(e))?;
        match self.tracks[i].kind {
            MediaKind::Audio => self.summary.audio_frames += 1,
            MediaKind::Video => self.summary.video_frames += 1,
        }
        Ok(())
    }
}
