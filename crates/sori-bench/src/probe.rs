//! The probe every synthetic RTP payload ends with, and the synthetic VP8 and Opus payloads.
//!
//! An SFU forwards payloads untouched, so a probe at the end of each payload survives any SFU:
//! the receiver reads which publisher and stream sent it, its probe sequence number, and its send
//! time, and from those counts loss and one-way delay. Publisher and receivers live in one
//! process and share one monotonic clock ([`now_ns`]), so the delay needs no clock sync.
//!
//! A simulcast publisher sends each video frame once per layer; the probe names the layer
//! (0 the lowest), and each layer numbers its packets on its own, so a receiver sees which
//! layer the SFU forwards it and counts each layer's loss apart.

use std::sync::OnceLock;
use std::time::Instant;

/// Bytes the probe adds at the end of each payload.
pub const PROBE_LEN: usize = 20;
const MAGIC: &[u8; 4] = b"SBP1";

/// Largest RTP payload the publisher writes (leaves room for SRTP, RTP header and extensions
/// within a 1200-byte datagram).
pub const MAX_PAYLOAD: usize = 1100;

/// Nanoseconds since the first call in this process, on the monotonic clock.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    Instant::now().duration_since(epoch).as_nanos() as u64
}

/// Which of a publisher's streams a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    Audio,
    Video,
}

impl StreamKind {
    /// The RTP clock rate: 48 kHz for Opus, 90 kHz for VP8.
    pub fn clock_rate(self) -> u64 {
        match self {
            StreamKind::Audio => 48_000,
            StreamKind::Video => 90_000,
        }
    }

    /// The RTP timestamp of media captured at `sent_ns` ([`now_ns`]): the capture time on the
    /// stream's clock, as a browser stamps it, so a late-paced packet carries the time it was
    /// really sent (a receiver that only reads headers gets its send time back from it to
    /// within one tick: [`crate::sample`]).
    pub fn rtp_timestamp(self, sent_ns: u64) -> u32 {
        (sent_ns as u128 * self.clock_rate() as u128 / 1_000_000_000) as u32
    }
}

/// What the probe says about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub publisher: u16,
    pub kind: StreamKind,
    /// The first packet of a video keyframe.
    pub keyframe_start: bool,
    /// The simulcast layer, 0 the lowest (0 for audio and for video sent as one encoding).
    pub layer: u8,
    /// Per (publisher, kind, layer), from 0, one per packet.
    pub seq: u32,
    /// [`now_ns`] when the publisher wrote the packet.
    pub sent_ns: u64,
}

impl Probe {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.publisher.to_be_bytes());
        out.push(match self.kind {
            StreamKind::Audio => 0,
            StreamKind::Video => 1,
        });
        // Flags: bit 0 keyframe start, bits 4–5 the layer.
        out.push(self.keyframe_start as u8 | (self.layer & 3) << 4);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads the probe at the end of `payload`; `None` if there is none.
    pub fn parse(payload: &[u8]) -> Option<Probe> {
        let p = payload.get(payload.len().checked_sub(PROBE_LEN)?..)?;
        if &p[0..4] != MAGIC {
            return None;
        }
        let kind = match p[6] {
            0 => StreamKind::Audio,
            1 => StreamKind::Video,
            _ => return None,
        };
        if p[7] & !0x31 != 0 {
            return None;
        }
        Some(Probe {
            publisher: u16::from_be_bytes([p[4], p[5]]),
            kind,
            keyframe_start: p[7] & 1 == 1,
            layer: p[7] >> 4,
            seq: u32::from_be_bytes(p[8..12].try_into().ok()?),
            sent_ns: u64::from_be_bytes(p[12..20].try_into().ok()?),
        })
    }
}

/// One RTP payload to send, and whether it ends a frame (the RTP marker bit).
#[derive(Debug, Clone)]
pub struct Packet {
    pub payload: Vec<u8>,
    pub marker: bool,
}

/// Which video encoding a frame belongs to: its simulcast layer and its frame size (which a
/// keyframe's header carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    /// 0 the lowest; at most 3.
    pub index: u8,
    pub width: u16,
    pub height: u16,
}

impl Layer {
    /// One encoding (no simulcast), 640×480.
    pub const SINGLE: Layer = Layer {
        index: 0,
        width: 640,
        height: 480,
    };
}

/// Synthetic VP8 frames of a set size, cut into RTP payloads with a VP8 payload descriptor and
/// a real frame tag, so an SFU recognises keyframes (and their size) as it would from a browser.
pub fn vp8_frame(
    publisher: u16,
    layer: Layer,
    seq: &mut u32,
    frame_bytes: usize,
    keyframe: bool,
    sent_ns: u64,
) -> Vec<Packet> {
    let per_packet = MAX_PAYLOAD - PROBE_LEN - 1;
    let frame_bytes = frame_bytes.max(16);
    let count = frame_bytes.div_ceil(per_packet);
    let mut packets = Vec::with_capacity(count);
    for i in 0..count {
        let first = i == 0;
        let body = if i + 1 == count {
            frame_bytes - per_packet * (count - 1)
        } else {
            per_packet
        };
        let mut p = Vec::with_capacity(1 + body + PROBE_LEN);
        // Payload descriptor: S (start of partition) on the first packet, partition 0.
        p.push(if first { 0x10 } else { 0x00 });
        if first {
            if keyframe {
                // Frame tag with P=0 (keyframe), show_frame, then the start code and the size
                // (14 bits each, little endian).
                p.extend_from_slice(&[0x10, 0, 0, 0x9d, 0x01, 0x2a]);
                p.extend_from_slice(&(layer.width & 0x3fff).to_le_bytes());
                p.extend_from_slice(&(layer.height & 0x3fff).to_le_bytes());
            } else {
                p.extend_from_slice(&[0x11, 0, 0]);
            }
        }
        while p.len() < 1 + body {
            p.push((p.len() as u8).wrapping_mul(31));
        }
        Probe {
            publisher,
            kind: StreamKind::Video,
            keyframe_start: keyframe && first,
            layer: layer.index,
            seq: *seq,
            sent_ns,
        }
        .write(&mut p);
        *seq = seq.wrapping_add(1);
        packets.push(Packet {
            payload: p,
            marker: i + 1 == count,
        });
    }
    packets
}

/// A synthetic Opus packet (a TOC byte for 20 ms CELT fullband, then filler) of `bytes` bytes.
pub fn opus_packet(publisher: u16, seq: &mut u32, bytes: usize, sent_ns: u64) -> Packet {
    let mut p = Vec::with_capacity(bytes.max(PROBE_LEN + 1));
    p.push(0xfc);
    while p.len() + PROBE_LEN < bytes {
        p.push(0x55);
    }
    Probe {
        publisher,
        kind: StreamKind::Audio,
        keyframe_start: false,
        layer: 0,
        seq: *seq,
        sent_ns,
    }
    .write(&mut p);
    *seq = seq.wrapping_add(1);
    Packet {
        payload: p,
        marker: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_round_trips_at_the_end_of_any_payload() {
        let mut seq = 7;
        let frame = vp8_frame(3, Layer::SINGLE, &mut seq, 5000, true, 123_456_789);
        assert_eq!(frame.len(), 5);
        assert_eq!(seq, 12);
        assert!(frame.iter().all(|p| p.payload.len() <= MAX_PAYLOAD));
        assert!(frame.last().unwrap().marker);
        assert!(frame[..4].iter().all(|p| !p.marker));
        let total: usize = frame.iter().map(|p| p.payload.len() - 1 - PROBE_LEN).sum();
        assert_eq!(total, 5000);
        let first = Probe::parse(&frame[0].payload).unwrap();
        assert_eq!(
            first,
            Probe {
                publisher: 3,
                kind: StreamKind::Video,
                keyframe_start: true,
                layer: 0,
                seq: 7,
                sent_ns: 123_456_789
            }
        );
        let second = Probe::parse(&frame[1].payload).unwrap();
        assert!(!second.keyframe_start);
        assert_eq!(second.seq, 8);
        // The VP8 frame tag says keyframe (P bit clear) right after the descriptor, then
        // the start code and 640x480.
        assert_eq!(frame[0].payload[0], 0x10);
        assert_eq!(frame[0].payload[1] & 1, 0);
        assert_eq!(
            frame[0].payload[4..11],
            [0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]
        );

        let delta = vp8_frame(3, Layer::SINGLE, &mut seq, 100, false, 1);
        assert_eq!(delta.len(), 1);
        assert_eq!(delta[0].payload[1] & 1, 1);
        assert!(!Probe::parse(&delta[0].payload).unwrap().keyframe_start);

        let mut aseq = u32::MAX;
        let a = opus_packet(9, &mut aseq, 80, 42);
        assert_eq!(a.payload.len(), 80);
        assert_eq!(aseq, 0);
        let p = Probe::parse(&a.payload).unwrap();
        assert_eq!(
            (p.publisher, p.kind, p.seq, p.sent_ns),
            (9, StreamKind::Audio, u32::MAX, 42)
        );
    }

    #[test]
    fn payloads_without_a_probe_are_ignored() {
        assert_eq!(Probe::parse(&[]), None);
        assert_eq!(Probe::parse(&[0u8; 19]), None);
        assert_eq!(Probe::parse(&[0u8; 64]), None);
        let mut p = opus_packet(1, &mut 0, 40, 1).payload;
        let n = p.len();
        p[n - PROBE_LEN + 6] = 9; // an unknown stream kind
        assert_eq!(Probe::parse(&p), None);
        let mut p = opus_packet(1, &mut 0, 40, 1).payload;
        p[n - PROBE_LEN + 7] = 0x02; // an unknown flag
        assert_eq!(Probe::parse(&p), None);
    }

    #[test]
    fn each_layer_is_tagged_and_its_keyframes_carry_its_size() {
        let quarter = Layer {
            index: 1,
            width: 320,
            height: 240,
        };
        let mut seq = 0;
        let key = vp8_frame(5, quarter, &mut seq, 1500, true, 9);
        let probes: Vec<Probe> = key
            .iter()
            .map(|p| Probe::parse(&p.payload).unwrap())
            .collect();
        assert_eq!(probes.len(), 2);
        assert!(probes.iter().all(|p| p.layer == 1 && p.publisher == 5));
        assert!(probes[0].keyframe_start && !probes[1].keyframe_start);
        // 320 = 0x0140 and 240 = 0x00f0, little endian, after the start code.
        assert_eq!(key[0].payload[7..11], [0x40, 0x01, 0xf0, 0x00]);
        let top = Layer {
            index: 3,
            ..Layer::SINGLE
        };
        let delta = vp8_frame(5, top, &mut seq, 100, false, 9);
        let p = Probe::parse(&delta[0].payload).unwrap();
        assert_eq!((p.layer, p.keyframe_start, p.seq), (3, false, 2));
    }
}
