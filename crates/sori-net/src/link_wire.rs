//! [`LinkMsg`]s as bytes, for a link between media nodes that crosses a network (one message
//! per frame of the carrying connection). What arrives is checked field by field: a message
//! that does not read is refused whole ([`WireError`]), never half taken.
//!
//! A packet carries what the importing core uses of it: the RTP sequence number (extended),
//! timestamp and marker, the payload type's parameters (codec, clock rate, channels, `fmtp`),
//! the audio level, voice activity and video orientation extensions, the publisher's latest
//! sender report, how long ago it arrived at the publisher's node, and the payload.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use sori_sfu::throttle::Urgency;
use sori_sfu::{
    MediaKind, MediaPacket, PeerId, Priority, RelayId, RelayPacket, TrackId, TrackInfo, VideoCodec,
};
use str0m::format::{Codec, CodecSpec, FormatParams, PayloadParams};
use str0m::media::{Frequency, MediaTime, Rid};
use str0m::rtp::rtcp::SenderInfo;
use str0m::rtp::{ExtensionValues, RtpHeader, SeqNo, Ssrc, VideoOrientation};

use crate::workers::LinkMsg;

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// It ends before its last field.
    #[error("a link message cut short")]
    Short,
    /// A field holds what it may not (an unknown tag, text that is not UTF-8, a zero clock).
    #[error("a link message with a bad {0}")]
    Bad(&'static str),
}

/// The longest text field (a room name, a rid, an `fmtp` line).
const MAX_TEXT: usize = 1024;
/// The most layers of a track.
const MAX_RIDS: usize = 8;

const TRACK: u8 = 1;
const UNTRACK: u8 = 2;
const PACKET: u8 = 3;
const KEYFRAME: u8 = 4;

/// `m` as bytes; `now` dates the packet's arrival as an age.
pub fn encode(m: &LinkMsg, now: Instant) -> Vec<u8> {
    let mut w = Vec::with_capacity(64);
    match m {
        LinkMsg::Track(info) => {
            w.push(TRACK);
            w.extend(info.track.0.to_le_bytes());
            w.extend(info.publisher.0.to_le_bytes());
            w.push(match info.kind {
                MediaKind::Audio => 0,
                MediaKind::Video => 1,
            });
            w.push(match info.codec {
                None => 0,
                Some(VideoCodec::Vp8) => 1,
                Some(VideoCodec::Vp9) => 2,
                Some(VideoCodec::H264) => 3,
            });
            w.push(match info.priority {
                Priority::Screen => 0,
                Priority::Camera => 1,
            });
            w.push(info.rids.len() as u8);
            for rid in &info.rids {
                match rid {
                    None => w.push(0),
                    Some(r) => {
                        w.push(1);
                        text(&mut w, r);
                    }
                }
            }
            text(&mut w, &info.room);
        }
        LinkMsg::Untrack(track) => {
            w.push(UNTRACK);
            w.extend(track.0.to_le_bytes());
        }
        LinkMsg::Keyframe {
            track,
            layer,
            urgency,
        } => {
            w.push(KEYFRAME);
            w.extend(track.0.to_le_bytes());
            w.push(*layer);
            w.push(match urgency {
                Urgency::Repair => 0,
                Urgency::Start => 1,
            });
        }
        LinkMsg::Packet(p) => {
            w.push(PACKET);
            w.extend(p.track.0.to_le_bytes());
            w.push(p.layer);
            // The payload type's parameters.
            w.push(*p.params.pt());
            match p.params.resend() {
                Some(r) => w.extend([1, *r]),
                None => w.push(0),
            }
            let spec = p.params.spec();
            text(&mut w, &spec.codec.to_string());
            w.extend(spec.clock_rate.get().to_le_bytes());
            match spec.channels {
                Some(c) => w.extend([1, c]),
                None => w.push(0),
            }
            text(&mut w, &spec.format.to_string());
            // The packet.
            let h = &p.packet.header;
            w.extend((*p.packet.seq_no).to_le_bytes());
            w.extend(h.timestamp.to_le_bytes());
            w.extend((*h.ssrc).to_le_bytes());
            let e = &h.ext_vals;
            let flags = u8::from(h.marker)
                | u8::from(e.audio_level.is_some()) << 1
                | u8::from(e.voice_activity.is_some()) << 2
                | u8::from(e.video_orientation.is_some()) << 3
                | u8::from(p.packet.last_sender_info.is_some()) << 4;
            w.push(flags);
            if let Some(l) = e.audio_level {
                w.push(l as u8);
            }
            if let Some(v) = e.voice_activity {
                w.push(u8::from(v));
            }
            if let Some(o) = e.video_orientation {
                w.push(o as u8);
            }
            if let Some(s) = &p.packet.last_sender_info {
                w.extend((*s.ssrc).to_le_bytes());
                let ntp = s
                    .ntp_time
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_micros() as u64;
                w.extend(ntp.to_le_bytes());
                w.extend(s.rtp_time.numer().to_le_bytes());
                w.extend(s.rtp_time.denom().to_le_bytes());
                w.extend(s.sender_packet_count.to_le_bytes());
                w.extend(s.sender_octet_count.to_le_bytes());
            }
            let age = now
                .saturating_duration_since(p.packet.timestamp)
                .as_micros() as u32;
            w.extend(age.to_le_bytes());
            w.extend_from_slice(&p.packet.payload);
        }
    }
    w
}

fn text(w: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(MAX_TEXT)];
    w.extend((s.len() as u16).to_le_bytes());
    w.extend_from_slice(s);
}

/// Reads fields off the front of a message.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Short);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn text(&mut self) -> Result<&'a str, WireError> {
        let n = self.u16()? as usize;
        if n > MAX_TEXT {
            return Err(WireError::Bad("text length"));
        }
        std::str::from_utf8(self.take(n)?).map_err(|_| WireError::Bad("text"))
    }

    fn flag(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Bad("flag")),
        }
    }

    fn done(&self) -> Result<(), WireError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(WireError::Bad("length"))
        }
    }
}

/// The message in `bytes`; `now` turns a packet's age back into its arrival.
pub fn decode(bytes: &[u8], now: Instant) -> Result<LinkMsg, WireError> {
    let mut r = Reader(bytes);
    let m = match r.u8()? {
        TRACK => {
            let track = TrackId(r.u64()?);
            let publisher = PeerId(r.u64()?);
            let kind = match r.u8()? {
                0 => MediaKind::Audio,
                1 => MediaKind::Video,
                _ => return Err(WireError::Bad("kind")),
            };
            let codec = match r.u8()? {
                0 => None,
                1 => Some(VideoCodec::Vp8),
                2 => Some(VideoCodec::Vp9),
                3 => Some(VideoCodec::H264),
                _ => return Err(WireError::Bad("codec")),
            };
            let priority = match r.u8()? {
                0 => Priority::Screen,
                1 => Priority::Camera,
                _ => return Err(WireError::Bad("priority")),
            };
            let n = r.u8()? as usize;
            if n > MAX_RIDS {
                return Err(WireError::Bad("layer count"));
            }
            let mut rids = Vec::with_capacity(n);
            for _ in 0..n {
                rids.push(if r.flag()? {
                    Some(Rid::from(r.text()?))
                } else {
                    None
                });
            }
            let room = r.text()?.to_string();
            LinkMsg::Track(TrackInfo {
                track,
                publisher,
                room,
                kind,
                codec,
                rids,
                priority,
            })
        }
        UNTRACK => LinkMsg::Untrack(TrackId(r.u64()?)),
        KEYFRAME => {
            let track = TrackId(r.u64()?);
            let layer = r.u8()?;
            let urgency = match r.u8()? {
                0 => Urgency::Repair,
                1 => Urgency::Start,
                _ => return Err(WireError::Bad("urgency")),
            };
            LinkMsg::Keyframe {
                track,
                layer,
                urgency,
            }
        }
        PACKET => {
            let track = TrackId(r.u64()?);
            let layer = r.u8()?;
            let pt = r.u8()?;
            let resend = if r.flag()? {
                Some(r.u8()?.into())
            } else {
                None
            };
            let codec = Codec::from(r.text()?);
            let clock_rate = Frequency::new(r.u32()?).ok_or(WireError::Bad("clock rate"))?;
            let channels = if r.flag()? { Some(r.u8()?) } else { None };
            let format = FormatParams::parse_line(r.text()?);
            let spec = CodecSpec {
                codec,
                clock_rate,
                channels,
                format,
            };
            let params = PayloadParams::new(pt.into(), resend, spec);
            let seq_no = SeqNo::from(r.u64()?);
            let timestamp = r.u32()?;
            let ssrc = Ssrc::from(r.u32()?);
            let flags = r.u8()?;
            if flags >> 5 != 0 {
                return Err(WireError::Bad("flags"));
            }
            let mut ext_vals = ExtensionValues::default();
            if flags & 2 != 0 {
                ext_vals.audio_level = Some(r.u8()? as i8);
            }
            if flags & 4 != 0 {
                ext_vals.voice_activity = Some(r.flag()?);
            }
            if flags & 8 != 0 {
                ext_vals.video_orientation = Some(match r.u8()? {
                    0 => VideoOrientation::Deg0,
                    3 => VideoOrientation::Deg90,
                    2 => VideoOrientation::Deg180,
                    1 => VideoOrientation::Deg270,
                    _ => return Err(WireError::Bad("video orientation")),
                });
            }
            let last_sender_info = if flags & 16 != 0 {
                let ssrc = Ssrc::from(r.u32()?);
                let ntp = UNIX_EPOCH + Duration::from_micros(r.u64()?);
                let numer = r.u64()?;
                let denom = Frequency::new(r.u32()?).ok_or(WireError::Bad("rtp clock"))?;
                Some(SenderInfo {
                    ssrc,
                    ntp_time: ntp,
                    rtp_time: MediaTime::new(numer, denom),
                    sender_packet_count: r.u32()?,
                    sender_octet_count: r.u32()?,
                })
            } else {
                None
            };
            let age = Duration::from_micros(u64::from(r.u32()?));
            let payload: Arc<[u8]> = Arc::from(r.0);
            r.0 = &[];
            let header = RtpHeader {
                marker: flags & 1 != 0,
                payload_type: pt.into(),
                sequence_number: *seq_no as u16,
                timestamp,
                ssrc,
                ext_vals,
                ..RtpHeader::default()
            };
            LinkMsg::Packet(Box::new(RelayPacket {
                to: RelayId(0),
                track,
                layer,
                params,
                packet: MediaPacket {
                    seq_no,
                    header,
                    payload,
                    timestamp: now.checked_sub(age).unwrap_or(now),
                    last_sender_info,
                },
            }))
        }
        _ => return Err(WireError::Bad("message type")),
    };
    r.done()?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet(
        seq: u64,
        payload: Vec<u8>,
        marker: bool,
        level: Option<i8>,
        now: Instant,
    ) -> LinkMsg {
        let spec = CodecSpec {
            codec: Codec::Vp8,
            clock_rate: Frequency::new(90_000).unwrap(),
            channels: None,
            format: FormatParams::default(),
        };
        let mut header = RtpHeader {
            marker,
            payload_type: 96.into(),
            sequence_number: seq as u16,
            timestamp: (seq as u32).wrapping_mul(3000),
            ssrc: 1234.into(),
            ..RtpHeader::default()
        };
        header.ext_vals.audio_level = level;
        LinkMsg::Packet(Box::new(RelayPacket {
            to: RelayId(0),
            track: TrackId(7 << 48 | 3),
            layer: 1,
            params: PayloadParams::new(96.into(), Some(97.into()), spec),
            packet: MediaPacket {
                seq_no: seq.into(),
                header,
                payload: payload.into(),
                timestamp: now - Duration::from_millis(5),
                last_sender_info: None,
            },
        }))
    }

    fn same(a: &LinkMsg, b: &LinkMsg) -> bool {
        match (a, b) {
            (LinkMsg::Packet(x), LinkMsg::Packet(y)) => {
                x.track == y.track
                    && x.layer == y.layer
                    && x.params.pt() == y.params.pt()
                    && x.params.resend() == y.params.resend()
                    && x.params.spec() == y.params.spec()
                    && x.packet.seq_no == y.packet.seq_no
                    && x.packet.payload == y.packet.payload
                    && x.packet.header.marker == y.packet.header.marker
                    && x.packet.header.timestamp == y.packet.header.timestamp
                    && x.packet.header.ssrc == y.packet.header.ssrc
                    && x.packet.header.ext_vals.audio_level == y.packet.header.ext_vals.audio_level
                    && x.packet.timestamp.max(y.packet.timestamp)
                        - x.packet.timestamp.min(y.packet.timestamp)
                        < Duration::from_millis(1)
            }
            (LinkMsg::Track(x), LinkMsg::Track(y)) => x == y,
            (LinkMsg::Untrack(x), LinkMsg::Untrack(y)) => x == y,
            (
                LinkMsg::Keyframe {
                    track: a,
                    layer: b,
                    urgency: c,
                },
                LinkMsg::Keyframe {
                    track: d,
                    layer: e,
                    urgency: f,
                },
            ) => a == d && b == e && c == f,
            _ => false,
        }
    }

    #[test]
    fn a_track_and_its_requests_cross_whole() {
        let now = Instant::now();
        let all = [
            LinkMsg::Track(TrackInfo {
                track: TrackId(1 << 48 | 9),
                publisher: PeerId(1 << 48 | 2),
                room: "stand up ☕".into(),
                kind: MediaKind::Video,
                codec: Some(VideoCodec::H264),
                rids: vec![
                    Some(Rid::from("q")),
                    Some(Rid::from("h")),
                    Some(Rid::from("f")),
                ],
                priority: Priority::Screen,
            }),
            LinkMsg::Untrack(TrackId(5)),
            LinkMsg::Keyframe {
                track: TrackId(5),
                layer: 2,
                urgency: Urgency::Start,
            },
            packet(70_000, vec![1, 2, 3], true, Some(-30), now),
        ];
        for m in all {
            let back = decode(&encode(&m, now), now).unwrap();
            assert!(same(&m, &back), "{m:?}\n{back:?}");
        }
    }

    proptest! {
        #[test]
        fn packets_cross_whole(seq in 0u64..1 << 40, payload in proptest::collection::vec(any::<u8>(), 0..1500),
                               marker in any::<bool>(), level in proptest::option::of(-127i8..0)) {
            let now = Instant::now();
            let m = packet(seq, payload, marker, level, now);
            let back = decode(&encode(&m, now), now).unwrap();
            prop_assert!(same(&m, &back));
        }

        #[test]
        fn any_bytes_are_a_message_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes, Instant::now());
        }

        #[test]
        fn a_message_cut_short_is_refused(cut in 0usize..200) {
            let now = Instant::now();
            let full = encode(&packet(1, vec![9; 100], false, None, now), now);
            // The payload is the message's rest: cut into the fields before it.
            let fields = full.len() - 100;
            let at = cut % fields;
            prop_assert!(decode(&full[..at], now).is_err());
        }
    }
}
