//! A Matroska/WebM writer for live recording: the handful of elements a player needs, written
//! so that a file cut at any moment still plays.
//!
//! - The Segment has "unknown size" until the end, so readers treat everything up to the end
//!   of the file as its content.
//! - Each Cluster (about one second) is assembled in memory and written whole, with its size;
//!   a process killed mid-recording leaves every earlier cluster intact on disk.
//! - On [`MkvWriter::finish`] the Cues (an index of keyframe clusters) are appended, and the
//!   Segment size and the Duration are written into the places reserved for them.

use std::io::{self, Seek, SeekFrom, Write};

// Element ids (Matroska/EBML specification).
const EBML: u32 = 0x1A45_DFA3;
const EBML_VERSION: u32 = 0x4286;
const EBML_READ_VERSION: u32 = 0x42F7;
const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
const DOC_TYPE: u32 = 0x4282;
const DOC_TYPE_VERSION: u32 = 0x4287;
const DOC_TYPE_READ_VERSION: u32 = 0x4285;
const SEGMENT: u32 = 0x1853_8067;
const INFO: u32 = 0x1549_A966;
const TIMESTAMP_SCALE: u32 = 0x2AD7B1;
const DURATION: u32 = 0x4489;
const MUXING_APP: u32 = 0x4D80;
const WRITING_APP: u32 = 0x5741;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_UID: u32 = 0x73C5;
const TRACK_TYPE: u32 = 0x83;
const FLAG_LACING: u32 = 0x9C;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63A2;
const CODEC_DELAY: u32 = 0x56AA;
const SEEK_PRE_ROLL: u32 = 0x56BB;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const AUDIO: u32 = 0xE1;
const SAMPLING_FREQUENCY: u32 = 0xB5;
const CHANNELS: u32 = 0x9F;
const CLUSTER: u32 = 0x1F43_B675;
const TIMESTAMP: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;
const CUES: u32 = 0x1C53_BB6B;
const CUE_POINT: u32 = 0xBB;
const CUE_TIME: u32 = 0xB3;
const CUE_TRACK_POSITIONS: u32 = 0xB7;
const CUE_TRACK: u32 = 0xF7;
const CUE_CLUSTER_POSITION: u32 = 0xF1;

/// Longest cluster, in milliseconds: at most this much is lost when the process dies.
const CLUSTER_MS: u64 = 1000;

/// WebM or Matroska.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// `webm`: VP8/VP9 and Opus.
    WebM,
    /// `matroska`: also H.264.
    Matroska,
}

/// What a track holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackCodec {
    /// Opus, 48 kHz stereo.
    Opus,
    /// VP8.
    Vp8,
    /// VP9.
    Vp9,
    /// H.264 with its AVCDecoderConfigurationRecord.
    H264 {
        /// The `avcC` record (SPS and PPS).
        avcc: Vec<u8>,
    },
}

/// One track of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSpec {
    /// The codec.
    pub codec: TrackCodec,
    /// Video size, when known.
    pub width: u32,
    /// Video size, when known.
    pub height: u32,
}

fn id_bytes(id: u32) -> Vec<u8> {
    let b = id.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count();
    b[skip..].to_vec()
}

/// EBML variable-size integer for a size (8 bytes at most).
fn size_bytes(size: u64) -> Vec<u8> {
    for len in 1..=8u32 {
        // All ones is reserved for "unknown".
        if size < (1u64 << (7 * len)) - 1 {
            let marker = 1u64 << (7 * len);
            let v = (marker | size).to_be_bytes();
            return v[(8 - len as usize)..].to_vec();
        }
    }
    unreachable!("sizes below 2^56 fit in 8 bytes")
}

fn element(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = id_bytes(id);
    out.extend(size_bytes(body.len() as u64));
    out.extend_from_slice(body);
    out
}

fn uint(id: u32, v: u64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count().min(7);
    element(id, &b[skip..])
}

fn float(id: u32, v: f64) -> Vec<u8> {
    element(id, &v.to_be_bytes())
}

fn string(id: u32, s: &str) -> Vec<u8> {
    element(id, s.as_bytes())
}

/// Opus's identification header, as WebM wants it in CodecPrivate.
fn opus_head() -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1); // version
    h.push(2); // channels
    h.extend(312u16.to_le_bytes()); // pre-skip: the encoder's 6.5 ms lookahead at 48 kHz
    h.extend(48000u32.to_le_bytes());
    h.extend(0i16.to_le_bytes()); // output gain
    h.push(0); // channel mapping family
    h
}

fn track_entry(number: u64, spec: &TrackSpec) -> Vec<u8> {
    let mut body = uint(TRACK_NUMBER, number);
    body.extend(uint(TRACK_UID, number));
    body.extend(uint(FLAG_LACING, 0));
    match &spec.codec {
        TrackCodec::Opus => {
            body.extend(uint(TRACK_TYPE, 2));
            body.extend(string(CODEC_ID, "A_OPUS"));
            body.extend(element(CODEC_PRIVATE, &opus_head()));
            body.extend(uint(CODEC_DELAY, 6_500_000));
            body.extend(uint(SEEK_PRE_ROLL, 80_000_000));
            let mut audio = float(SAMPLING_FREQUENCY, 48000.0);
            audio.extend(uint(CHANNELS, 2));
            body.extend(element(AUDIO, &audio));
        }
        video => {
            body.extend(uint(TRACK_TYPE, 1));
            let id = match video {
                TrackCodec::Vp8 => "V_VP8",
                TrackCodec::Vp9 => "V_VP9",
                _ => "V_MPEG4/ISO/AVC",
            };
            body.extend(string(CODEC_ID, id));
            if let TrackCodec::H264 { avcc } = video {
                body.extend(element(CODEC_PRIVATE, avcc));
            }
            let mut v = uint(PIXEL_WIDTH, spec.width.max(1) as u64);
            v.extend(uint(PIXEL_HEIGHT, spec.height.max(1) as u64));
            body.extend(element(VIDEO, &v));
        }
    }
    element(TRACK_ENTRY, &body)
}

/// Writes one recording into `W`: a file in production, a `Cursor<Vec<u8>>` in tests.
pub struct MkvWriter<W> {
    file: W,
    /// File offset of the Segment's size field, and of its data.
    segment_size_at: u64,
    segment_data_at: u64,
    duration_at: u64,
    video_track: Option<u64>,
    cluster: Vec<u8>,
    cluster_start: Option<u64>,
    cluster_has_key: bool,
    cues: Vec<(u64, u64, u64)>,
    end_ms: u64,
}

impl<W: Write + Seek> MkvWriter<W> {
    /// Writes the header and track list; tracks are numbered from 1 in order.
    pub fn create(mut file: W, container: Container, tracks: &[TrackSpec]) -> io::Result<Self> {
        let doc = match container {
            Container::WebM => "webm",
            Container::Matroska => "matroska",
        };
        let mut header = uint(EBML_VERSION, 1);
        header.extend(uint(EBML_READ_VERSION, 1));
        header.extend(uint(EBML_MAX_ID_LENGTH, 4));
        header.extend(uint(EBML_MAX_SIZE_LENGTH, 8));
        header.extend(string(DOC_TYPE, doc));
        header.extend(uint(DOC_TYPE_VERSION, 4));
        header.extend(uint(DOC_TYPE_READ_VERSION, 2));
        let mut out = element(EBML, &header);
        out.extend(id_bytes(SEGMENT));
        let segment_size_at = out.len() as u64;
        // Unknown size, 8 bytes long so the real size fits later.
        out.extend([0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        let segment_data_at = out.len() as u64;

        let mut info = uint(TIMESTAMP_SCALE, 1_000_000);
        info.extend(string(MUXING_APP, "Sori"));
        info.extend(string(WRITING_APP, "Sori"));
        let duration_in_info = info.len() as u64;
        info.extend(float(DURATION, 0.0));
        let info_el = element(INFO, &info);
        let info_header = (info_el.len() - info.len()) as u64;
        // The Duration's 8-byte value: after its 2-byte id and 1-byte size.
        let duration_at = segment_data_at + info_header + duration_in_info + 3;
        out.extend(info_el);

        let mut entries = Vec::new();
        let mut video_track = None;
        for (i, t) in tracks.iter().enumerate() {
            let number = i as u64 + 1;
            if t.codec != TrackCodec::Opus {
                video_track.get_or_insert(number);
            }
            entries.extend(track_entry(number, t));
        }
        out.extend(element(TRACKS, &entries));
        file.write_all(&out)?;
        file.flush()?;
        Ok(Self {
            file,
            segment_size_at,
            segment_data_at,
            duration_at,
            video_track,
            cluster: Vec::new(),
            cluster_start: None,
            cluster_has_key: false,
            cues: Vec::new(),
            end_ms: 0,
        })
    }

    /// Adds one frame of track `track` (1-based) at `ms` milliseconds from the start. Frames
    /// of different tracks may interleave slightly out of order.
    pub fn write_frame(
        &mut self,
        track: u64,
        ms: u64,
        keyframe: bool,
        data: &[u8],
    ) -> io::Result<()> {
        let is_video = Some(track) == self.video_track;
        let start_new = match self.cluster_start {
            None => true,
            Some(start) => {
                let elapsed = ms.saturating_sub(start);
                // A cluster ends after a second, or earlier at a video keyframe, so that
                // clusters (and the Cues) start on keyframes where possible.
                elapsed >= CLUSTER_MS
                    || (elapsed >= CLUSTER_MS / 4 && keyframe && is_video)
                    || ms + CLUSTER_MS < start
            }
        };
        if start_new {
            self.flush_cluster()?;
            self.cluster_start = Some(ms);
            self.cluster = uint(TIMESTAMP, ms);
            self.cluster_has_key = false;
        }
        let start = self.cluster_start.unwrap_or(ms);
        let rel = (ms as i64 - start as i64).clamp(i16::MIN as i64, i16::MAX as i64) as i16;
        if is_video && keyframe && self.cluster.len() <= 16 {
            self.cluster_has_key = true;
        }
        let mut block = size_bytes(track);
        block.extend(rel.to_be_bytes());
        block.push(if keyframe { 0x80 } else { 0 });
        block.extend_from_slice(data);
        self.cluster.extend(element(SIMPLE_BLOCK, &block));
        self.end_ms = self.end_ms.max(ms);
        Ok(())
    }

    /// Writes the open cluster to the file.
    fn flush_cluster(&mut self) -> io::Result<()> {
        let Some(start) = self.cluster_start.take() else {
            return Ok(());
        };
        let at = self.file.stream_position()?;
        let key = self.cluster_has_key || self.video_track.is_none();
        let bytes = element(CLUSTER, &std::mem::take(&mut self.cluster));
        self.file.write_all(&bytes)?;
        // The Duration so far, so that a file cut from here on still tells its length.
        let end = self.file.stream_position()?;
        self.file.seek(SeekFrom::Start(self.duration_at))?;
        self.file.write_all(&(self.end_ms as f64).to_be_bytes())?;
        self.file.seek(SeekFrom::Start(end))?;
        self.file.flush()?;
        if key {
            let track = self.video_track.unwrap_or(1);
            self.cues.push((start, track, at - self.segment_data_at));
        }
        Ok(())
    }

    /// Milliseconds written so far.
    pub fn duration_ms(&self) -> u64 {
        self.end_ms
    }

    /// Writes the last cluster, the Cues, the Segment size and the Duration; gives the writer
    /// back, flushed (syncing a file to the disk is the caller's).
    pub fn finish(mut self, last_frame_ms: u64) -> io::Result<W> {
        self.flush_cluster()?;
        let mut cues = Vec::new();
        for (time, track, pos) in &self.cues {
            let mut positions = uint(CUE_TRACK, *track);
            positions.extend(uint(CUE_CLUSTER_POSITION, *pos));
            let mut point = uint(CUE_TIME, *time);
            point.extend(element(CUE_TRACK_POSITIONS, &positions));
            cues.extend(element(CUE_POINT, &point));
        }
        if !cues.is_empty() {
            self.file.write_all(&element(CUES, &cues))?;
        }
        let end = self.file.stream_position()?;
        let size = end - self.segment_data_at;
        let mut field = [0u8; 8];
        field[0] = 0x01;
        field[1..].copy_from_slice(&size.to_be_bytes()[1..]);
        self.file.seek(SeekFrom::Start(self.segment_size_at))?;
        self.file.write_all(&field)?;
        self.file.seek(SeekFrom::Start(self.duration_at))?;
        let duration = (self.end_ms.max(last_frame_ms)) as f64;
        self.file.write_all(&duration.to_be_bytes())?;
        self.file.seek(SeekFrom::Start(end))?;
        self.file.flush()?;
        Ok(self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_the_shortest_encoding() {
        assert_eq!(size_bytes(0), vec![0x80]);
        assert_eq!(size_bytes(126), vec![0xFE]);
        assert_eq!(size_bytes(127), vec![0x40, 0x7F]);
        assert_eq!(size_bytes(300), vec![0x41, 0x2C]);
        assert_eq!(id_bytes(SEGMENT), vec![0x18, 0x53, 0x80, 0x67]);
        assert_eq!(uint(TRACK_NUMBER, 1), vec![0xD7, 0x81, 0x01]);
        assert_eq!(uint(TRACK_NUMBER, 0), vec![0xD7, 0x81, 0x00]);
    }
}
