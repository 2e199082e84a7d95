//! The recorder proper, without IO of its own: packets and commands go in with the time they
//! happen at, frames come out into a `Write + Seek` (a file in production, memory in tests).
//!
//! Run loop: [`Recorder::handle_packet`], [`Recorder::pause`] and [`Recorder::resume`] as
//! things happen; [`Recorder::handle_timeout`] when [`Recorder::poll_timeout`]'s instant
//! comes; [`Recorder::finish`] at the end. The recorder never reads a clock.

use std::io::{self, Seek, Write};
use std::time::{Duration, Instant, SystemTime};

use sori_sfu::{MediaKind, TapPacket};

use crate::mkv::{Container, MkvWriter};
use crate::track::Track;
use crate::Summary;

/// How long the recorder waits for every expected kind before fixing the file's tracks.
pub const TRACK_WAIT: Duration = Duration::from_secs(2);

/// What a recording holds: the container and the kinds it records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// WebM or Matroska.
    pub container: Container,
    /// Record audio.
    pub audio: bool,
    /// Record video.
    pub video: bool,
}

/// A frame waiting for the file's tracks to be fixed: track index, time, keyframe, data.
type Pending = (usize, Instant, bool, Vec<u8>);

/// One recording's state: frames waiting for the file's tracks to be fixed, then the file.
pub struct Recorder<W> {
    profile: Profile,
    /// The output until the header is written into it.
    out: Option<W>,
    mkv: Option<MkvWriter<W>>,
    tracks: Vec<Track>,
    /// Track index → track number in the file.
    numbers: Vec<Option<u64>>,
    pending: Vec<Pending>,
    /// When the first frame came out (the track wait runs from there).
    first_frame: Option<Instant>,
    /// The file's time zero.
    epoch: Option<Instant>,
    paused_at: Option<Instant>,
    paused_total: Duration,
    summary: Summary,
}

impl<W: Write + Seek> Recorder<W> {
    /// A recorder writing into `out`; nothing is written before the tracks are fixed.
    pub fn new(out: W, profile: Profile) -> Self {
        Self {
            profile,
            out: Some(out),
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

    /// Takes a tapped packet, arrived at `now` (its timestamps come from its RTP time and
    /// `arrival`; `now` starts the track wait and fixes the tracks when it is over).
    pub fn handle_packet(&mut self, now: Instant, p: TapPacket) -> io::Result<()> {
        self.packet(now, p)?;
        self.handle_timeout(now)
    }

    /// Pauses at `now`: packets are left out until [`Recorder::resume`], and so is the
    /// paused time (the file goes on where it stopped).
    pub fn pause(&mut self, now: Instant) {
        self.paused_at.get_or_insert(now);
    }

    /// Resumes at `now`; video goes on at its next keyframe.
    pub fn resume(&mut self, now: Instant) {
        if let Some(at) = self.paused_at.take() {
            self.paused_total += now.saturating_duration_since(at);
            for t in &mut self.tracks {
                t.need_key = t.kind == MediaKind::Video;
            }
        }
    }

    /// When [`Recorder::handle_timeout`] is due: the end of the track wait, while the file's
    /// tracks are not fixed yet.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (&self.out, self.first_frame) {
            (Some(_), Some(first)) => Some(first + TRACK_WAIT),
            _ => None,
        }
    }

    /// Fixes the file's tracks once the track wait is over at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> io::Result<()> {
        if self.poll_timeout().is_some_and(|due| now >= due) {
            self.open()?;
        }
        Ok(())
    }

    /// Frames written so far (the duration and start are set by [`Recorder::finish`]).
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Finishes the file at `now`, when the wall clock says `wall`: the tracks fixed if they
    /// were not yet, the last cluster, the index, the sizes. Gives the output back.
    pub fn finish(mut self, now: Instant, wall: SystemTime) -> io::Result<(Summary, W)> {
        if self.mkv.is_none() && !self.pending.is_empty() {
            self.open()?;
        }
        let mut summary = std::mem::take(&mut self.summary);
        summary.duration_ms = self.mkv.as_ref().map(|m| m.duration_ms()).unwrap_or(0);
        summary.start = self.epoch.map(|e| wall - now.saturating_duration_since(e));
        let out = match (self.mkv.take(), self.out.take()) {
            (Some(mkv), _) => mkv.finish(summary.duration_ms)?,
            // Nothing ever arrived: the file holds a valid header and no tracks.
            (None, Some(out)) => MkvWriter::create(out, self.profile.container, &[])?.finish(0)?,
            (None, None) => unreachable!("the output is either waiting or in the writer"),
        };
        Ok((summary, out))
    }

    fn packet(&mut self, now: Instant, p: TapPacket) -> io::Result<()> {
        let wanted = match p.kind {
            MediaKind::Audio => self.profile.audio,
            MediaKind::Video => self.profile.video,
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
        self.first_frame.get_or_insert(now);
        if self.mkv.is_some() {
            return self.write(i, at, key, &data);
        }
        self.pending.push((i, at, key, data));
        let all_there = [
            (self.profile.audio, MediaKind::Audio),
            (self.profile.video, MediaKind::Video),
        ]
        .iter()
        .filter(|(want, _)| *want)
        .all(|(_, kind)| {
            self.pending
                .iter()
                .any(|(j, ..)| self.tracks[*j].kind == *kind)
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
        for &(i, t0, wall) in walls.iter().skip(1) {
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
    fn open(&mut self) -> io::Result<()> {
        let Some(out) = self.out.take() else {
            return Ok(());
        };
        self.align_by_sender_reports();
        let mut specs = Vec::new();
        for (i, t) in self.tracks.iter().enumerate() {
            let seen = self.pending.iter().any(|(j, ..)| *j == i);
            if let (true, Some(spec)) = (seen, t.spec(self.profile.container)) {
                specs.push(spec);
                self.numbers[i] = Some(specs.len() as u64);
            }
        }
        self.mkv = Some(MkvWriter::create(out, self.profile.container, &specs)?);
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
        tracing::debug!(tracks = specs.len(), "recording tracks fixed");
        Ok(())
    }

    fn write(&mut self, i: usize, at: Instant, key: bool, data: &[u8]) -> io::Result<()> {
        let Some(number) = self.numbers[i] else {
            return Ok(()); // a kind that arrived after the tracks were fixed
        };
        let epoch = *self.epoch.get_or_insert(at);
        let ms = at.saturating_duration_since(epoch).as_millis() as u64;
        if let Some(mkv) = self.mkv.as_mut() {
            mkv.write_frame(number, ms, key, data)?;
        }
        match self.tracks[i].kind {
            MediaKind::Audio => self.summary.audio_frames += 1,
            MediaKind::Video => self.summary.video_frames += 1,
        }
        Ok(())
    }
}
