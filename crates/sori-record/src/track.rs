//! One track's reassembly: RTP packets of one kind back into timed codec frames, with the
//! skip to the next keyframe after a loss.

use std::time::{Duration, Instant};

use sori_sfu::{MediaKind, TapPacket, VideoCodec};

use crate::depack;
use crate::mkv::{Container, TrackCodec, TrackSpec};

/// One track's reassembly state.
pub(crate) struct Track {
    /// The tap feeding it: a new one means a new source (its own sequence and RTP clock).
    tap: sori_sfu::TapId,
    pub(crate) kind: MediaKind,
    codec: Option<VideoCodec>,
    pub(crate) clock_rate: u32,
    /// First frame: arrival and extended RTP time.
    pub(crate) origin: Option<(Instant, i64)>,
    /// The sender's latest report: its wall clock and the extended RTP time at that moment.
    pub(crate) report: Option<(std::time::SystemTime, i64)>,
    last_rtp: Option<(u32, i64)>,
    last_seq: Option<u64>,
    pub(crate) need_key: bool,
    frame: Vec<u8>,
    frame_rtp: Option<u32>,
    frame_key: bool,
    frame_broken: bool,
    size: (u32, u32),
    h264: depack::H264,
}

impl Track {
    pub(crate) fn new(p: &TapPacket) -> Self {
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
    pub(crate) fn push(&mut self, p: &TapPacket) -> Option<(Instant, bool, Vec<u8>)> {
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

    pub(crate) fn spec(&self, container: Container) -> Option<TrackSpec> {
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
