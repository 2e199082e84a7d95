//! # sori-record — recordings written by the media server itself
//!
//! A [`Recording`] takes the RTP packets of one participant's audio and video as the media core
//! forwards them ([`TapPacket`]s), turns them back into codec frames without decoding them, and
//! writes WebM (VP8/VP9 + Opus) or Matroska (also H.264) with [`mkv::MkvWriter`], cluster by
//! cluster, so that a file cut by a crash still plays up to its last second.
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
//! ## Layers
//!
//! - [`Recorder`] is the logic, without IO: `handle_packet(now, packet)`, `pause(now)`,
//!   `resume(now)`, `handle_timeout(now)` when `poll_timeout()` says, `finish(now, wall)`. It
//!   writes into any `Write + Seek` and never reads a clock, so tests run it on virtual time
//!   into memory.
//! - [`Recording`] runs a `Recorder` on a thread that owns the file and reads the clock. It is
//!   fed through a bounded queue ([`Feed`], [`QUEUE_PACKETS`]): packets that find it full are
//!   dropped and counted ([`Recording::dropped`], [`Summary::dropped_packets`]).
//! - [`forward`] is the bridge from a media tap to a `Feed`, used by room recordings and the
//!   RecorderEndpoint.
//!
//! The writer is this crate's own (about 300 lines): libwebm's muxer, wrapped by the `webm`
//! crate, keeps its own buffering and finalisation that Sori cannot steer for crash safety,
//! and needs a C++ build; the Matroska subset a live recording needs is small.

#![forbid(unsafe_code)]

mod depack;
pub mod mkv;
mod queue;
mod recorder;
mod recording;
mod tap;
mod track;

use sori_sfu::TapPacket;

pub use queue::{Closed, Feed, QUEUE_PACKETS};
pub use recorder::{Profile, Recorder, TRACK_WAIT};
pub use recording::{RecordError, Recording, RecordingConfig};
pub use tap::forward;

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
    /// Packets dropped because the writer fell behind and its queue was full.
    pub dropped_packets: u64,
}
