//! What the recorder tests share: tapped packets on virtual time, an in-memory output that can
//! be read while the recorder still owns it, and a small Matroska reader.

#![allow(dead_code)] // each test file uses part of it

use std::cell::RefCell;
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sori_record::mkv::Container;
use sori_record::{Profile, Recorder};
use sori_sfu::{MediaKind, TapId, TapPacket, VideoCodec};

/// An Opus packet every 20 ms (960 ticks at 48 kHz).
pub const AUDIO_MS: u64 = 20;
/// A video frame every 1/30 s (3000 ticks at 90 kHz).
pub const VIDEO_TICKS: u64 = 3000;

pub fn profile(audio: bool, video: bool) -> Profile {
    Profile {
        container: Container::WebM,
        audio,
        video,
    }
}

/// Audio packet `n` of a stream whose packet 0 arrived at `t0`: RTP time `n × 960`, arriving
/// on time, its payload `[0xfc, n]`.
pub fn opus(t0: Instant, n: u64) -> TapPacket {
    TapPacket {
        tap: TapId(1),
        kind: MediaKind::Audio,
        codec: None,
        clock_rate: 48_000,
        seq: n,
        rtp_time: (n * 960) as u32,
        marker: false,
        keyframe: false,
        arrival: t0 + Duration::from_millis(n * AUDIO_MS),
        sender_report: None,
        payload: Arc::from(vec![0xfc, n as u8]),
    }
}

/// Video frame `n` (one packet, sequence number `n`) of a VP8 stream whose frame 0 arrived at
/// `t0`: RTP time `n × 3000`, arriving on time. Its frame data ends with `n`, so a test can
/// tell which frame a block holds.
pub fn vp8(t0: Instant, n: u64, key: bool) -> TapPacket {
    // VP8 payload descriptor: start of partition 0.
    let mut payload = vec![0x10];
    if key {
        // A keyframe header of a 640×360 picture.
        payload.extend([0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
    } else {
        payload.extend([0x11, 0x02, 0x00]);
    }
    payload.push(n as u8);
    TapPacket {
        tap: TapId(2),
        kind: MediaKind::Video,
        codec: Some(VideoCodec::Vp8),
        clock_rate: 90_000,
        seq: n,
        rtp_time: (n * VIDEO_TICKS) as u32,
        marker: true,
        keyframe: key,
        arrival: t0 + video_time(n),
        sender_report: None,
        payload: Arc::from(payload),
    }
}

/// When video frame `n` was captured, after frame 0.
pub fn video_time(n: u64) -> Duration {
    Duration::from_nanos(n * 1_000_000_000 / 30)
}

/// The millisecond at which the recorder writes video frame `n` (its time, cut to the ms).
pub fn video_ms(n: u64) -> u64 {
    n * 1000 / 30
}

/// An in-memory output that tests can read while the recorder owns a clone of it.
#[derive(Clone, Default)]
pub struct Shared(Rc<RefCell<Cursor<Vec<u8>>>>);

impl Shared {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.borrow().get_ref().clone()
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for Shared {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.0.borrow_mut().seek(pos)
    }
}

/// A recorder into memory, and a handle on what it writes.
pub fn recorder(profile: Profile) -> (Recorder<Shared>, Shared) {
    let out = Shared::default();
    (Recorder::new(out.clone(), profile), out)
}

/// Each packet handled at its arrival.
pub fn feed(rec: &mut Recorder<Shared>, packets: impl IntoIterator<Item = TapPacket>) {
    for p in packets {
        rec.handle_packet(p.arrival, p)
            .expect("memory takes every write");
    }
}

/// Finishes the recording at `now` and reads the file back.
pub fn finish(rec: Recorder<Shared>, now: Instant) -> (sori_record::Summary, Mkv) {
    let (summary, out) = rec
        .finish(now, SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .expect("memory takes every write");
    (summary, Mkv::parse(&out.bytes()))
}

/// A block of the file: its track, its time from the file's start, keyframe flag, data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub track: u64,
    pub ms: u64,
    pub key: bool,
    pub data: Vec<u8>,
}

/// What a Matroska reader sees of a file.
#[derive(Debug, Default)]
pub struct Mkv {
    pub doc_type: String,
    pub duration_ms: Option<f64>,
    /// Track number and codec id, in file order.
    pub tracks: Vec<(u64, String)>,
    pub blocks: Vec<Block>,
    /// Set while reading a Cluster.
    cluster_ms: u64,
}

// Element ids (Matroska/EBML specification), read independently of the writer's.
const EBML: u64 = 0x1A45_DFA3;
const DOC_TYPE: u64 = 0x4282;
const SEGMENT: u64 = 0x1853_8067;
const INFO: u64 = 0x1549_A966;
const DURATION: u64 = 0x4489;
const TRACKS: u64 = 0x1654_AE6B;
const TRACK_ENTRY: u64 = 0xAE;
const TRACK_NUMBER: u64 = 0xD7;
const CODEC_ID: u64 = 0x86;
const CLUSTER: u64 = 0x1F43_B675;
const TIMESTAMP: u64 = 0xE7;
const SIMPLE_BLOCK: u64 = 0xA3;

/// An EBML variable-size integer at `buf[*at..]`: (value with its length marker, value
/// without it, all ones).
fn vint(buf: &[u8], at: &mut usize) -> (u64, u64, bool) {
    let first = buf[*at];
    assert!(first != 0, "no EBML integer is longer than 8 bytes");
    let len = first.leading_zeros() as usize + 1;
    let mut raw = 0u64;
    for b in &buf[*at..*at + len] {
        raw = raw << 8 | *b as u64;
    }
    *at += len;
    let value = raw & ((1u64 << (7 * len)) - 1);
    (raw, value, value == (1u64 << (7 * len)) - 1)
}

fn uint(body: &[u8]) -> u64 {
    body.iter().fold(0, |v, b| v << 8 | *b as u64)
}

impl Mkv {
    pub fn parse(bytes: &[u8]) -> Mkv {
        let mut mkv = Mkv::default();
        mkv.read(bytes);
        mkv
    }

    /// Reads the elements of `buf`, going into the masters the tests look at.
    fn read(&mut self, buf: &[u8]) {
        let mut at = 0;
        while at < buf.len() {
            let (id, _, _) = vint(buf, &mut at);
            let (_, size, unknown) = vint(buf, &mut at);
            let end = if unknown {
                buf.len()
            } else {
                at + size as usize
            };
            assert!(end <= buf.len(), "element {id:#x} runs past the end");
            let body = &buf[at..end];
            match id {
                EBML | SEGMENT | INFO | TRACKS | CLUSTER => self.read(body),
                TRACK_ENTRY => {
                    let mut entry = Mkv::default();
                    entry.read(body);
                    self.tracks.extend(entry.tracks);
                }
                TRACK_NUMBER => self.tracks.push((uint(body), String::new())),
                CODEC_ID => {
                    let codec = String::from_utf8_lossy(body).into_owned();
                    match self.tracks.last_mut() {
                        Some((_, c)) => *c = codec,
                        None => self.tracks.push((0, codec)),
                    }
                }
                DOC_TYPE => self.doc_type = String::from_utf8_lossy(body).into_owned(),
                DURATION => self.duration_ms = Some(f64::from_be_bytes(body.try_into().unwrap())),
                TIMESTAMP => self.cluster_ms = uint(body),
                SIMPLE_BLOCK => self.block(body),
                _ => {}
            }
            at = end;
        }
    }

    fn block(&mut self, body: &[u8]) {
        let mut at = 0;
        let (_, track, _) = vint(body, &mut at);
        let rel = i16::from_be_bytes([body[at], body[at + 1]]);
        let flags = body[at + 2];
        self.blocks.push(Block {
            track,
            ms: (self.cluster_ms as i64 + rel as i64) as u64,
            key: flags & 0x80 != 0,
            data: body[at + 3..].to_vec(),
        });
    }

    /// The number of the track with this codec id.
    pub fn track(&self, codec: &str) -> u64 {
        self.tracks
            .iter()
            .find(|(_, c)| c == codec)
            .unwrap_or_else(|| panic!("no {codec} track in {:?}", self.tracks))
            .0
    }

    /// The times of one track's blocks, in file order.
    pub fn times(&self, track: u64) -> Vec<u64> {
        self.blocks
            .iter()
            .filter(|b| b.track == track)
            .map(|b| b.ms)
            .collect()
    }

    /// The last data byte of one track's blocks: which packet or frame each one is.
    pub fn numbers(&self, track: u64) -> Vec<u8> {
        self.blocks
            .iter()
            .filter(|b| b.track == track)
            .map(|b| *b.data.last().expect("blocks carry data"))
            .collect()
    }
}
