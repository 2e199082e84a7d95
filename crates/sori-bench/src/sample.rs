//! Sampling receivers: of the SRTP media a receiver gets, only 1 in N packets is decrypted.
//!
//! A full receiver hands every datagram to str0m, which decrypts it, so it costs about as much
//! CPU per packet as the server. A sampling receiver still gives str0m every datagram that is
//! not RTP (STUN, DTLS, SRTCP: told apart by the first byte and the payload-type byte, RFC 7983
//! and RFC 5761) and 1 in N RTP packets of each SSRC (the first of each SSRC always, and every
//! packet until one has been decrypted). The others are only counted from their RTP header,
//! which SRTP leaves in clear: SSRC, sequence number, timestamp, and the datagram's length.
//!
//! Each decrypted packet of an SSRC is a reference: its probe ([`crate::probe`]) names the
//! stream, its probe sequence number and its send time. A counted packet of that SSRC gets the
//! probe its sequence number implies (the reference's probe number plus the difference of the
//! 16-bit RTP sequence numbers, wrap-around included) and a send time from its RTP timestamp
//! (48 kHz audio, 90 kHz video), so it is counted in [`crate::measure::Reception`] like a
//! decrypted one: loss comes from every packet, delay only from the decrypted ones. The
//! generator stamps each packet with the time it sends it
//! ([`crate::probe::StreamKind::rtp_timestamp`]), so that send time comes back to within one
//! tick however late the pacer was, and a packet sent just inside the window is counted
//! inside it. A simulcast move to another layer on one SSRC is seen at the next decrypted
//! packet; the packets in between count as the old layer's.
//!
//! Until the measurement window opens every packet is decrypted, so joins and the first
//! keyframes are seen as a full receiver sees them; sampling starts with the window.
//!
//! What the server sees: a sampling receiver negotiates no transport-wide congestion control
//! (str0m would report the packets it never saw as lost, and the server's bandwidth estimate
//! would collapse) and sends no NACKs (str0m would see gaps where packets were only counted),
//! so the loss it reports is loss before any repair toward receivers.

use std::collections::HashMap;

use str0m::format::{CodecConfig, PayloadParams};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::RtcConfig;

use crate::probe::Probe;

/// The peer configuration of a sampling receiver: `base` without transport-wide congestion
/// control (no transport sequence number extension, no `transport-cc` feedback) and, for a
/// client that `publishes` nothing, without `nack` feedback. The client also suppresses NACKs
/// on each receive stream as it appears, so one that publishes (and must answer the server's
/// NACKs) sends none either.
pub fn config(mut base: RtcConfig, publishes: bool) -> RtcConfig {
    let params: Vec<PayloadParams> = base
        .codec_config()
        .params()
        .iter()
        .map(|p| {
            let mut q = *p;
            q.set_fb_transport_cc(false);
            if !publishes {
                q.set_fb_nack(false);
            }
            q
        })
        .collect();
    *base.codec_config() = CodecConfig::new_from_payload_params(params);
    let twcc = Extension::TransportSequenceNumber.as_uri().to_string();
    let mut exts = ExtensionMap::empty();
    for (id, e) in ExtensionMap::standard().iter() {
        if e.as_uri() != twcc {
            exts.set(id, e.clone());
        }
    }
    base.set_extension_map(exts)
}

/// An RTP datagram (not RTCP): version 2, and a payload-type byte outside 192–223 (RFC 5761).
pub fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && (128..192).contains(&d[0]) && !(64..96).contains(&(d[1] & 0x7f))
}

/// The clear part of an SRTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    /// Bytes of the header, CSRCs and extensions included.
    pub len: usize,
    pub padding: bool,
}

impl Header {
    pub fn parse(d: &[u8]) -> Option<Header> {
        if !is_rtp(d) {
            return None;
        }
        let mut len = 12 + 4 * (d[0] & 0x0f) as usize;
        if d[0] & 0x10 != 0 {
            let words = u16::from_be_bytes([*d.get(len + 2)?, *d.get(len + 3)?]) as usize;
            len += 4 + 4 * words;
        }
        if len > d.len() {
            return None;
        }
        Some(Header {
            ssrc: u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
            seq: u16::from_be_bytes([d[2], d[3]]),
            timestamp: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
            len,
            padding: d[0] & 0x20 != 0,
        })
    }
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Give it to str0m.
    Feed,
    /// Count it from its header: the probe it implies and its payload bytes (`None`: an SSRC
    /// no decrypted packet has named yet).
    Counted(Option<(Probe, usize)>),
}

/// The last decrypted packet of an SSRC.
#[derive(Debug, Clone, Copy)]
struct Reference {
    seq: u16,
    timestamp: u32,
    probe: Probe,
    /// Bytes after the payload: the SRTP tag (and any padding).
    trailer: usize,
}

/// A receiver's sampling state.
#[derive(Debug)]
pub struct Sampler {
    every: u32,
    /// RTP packets seen per SSRC.
    seen: HashMap<u32, u32>,
    refs: HashMap<u32, Reference>,
    /// The last packet fed to str0m per SSRC: sequence number, header and datagram length.
    fed: HashMap<u32, (u16, usize, usize)>,
    /// RTP packets given to str0m, and counted from their header only.
    pub decrypted: u64,
    pub counted: u64,
}

impl Sampler {
    /// Decrypts 1 in `every` RTP packets (`every` ≥ 1).
    pub fn new(every: u32) -> Sampler {
        Sampler {
            every: every.max(1),
            seen: HashMap::new(),
            refs: HashMap::new(),
            fed: HashMap::new(),
            decrypted: 0,
            counted: 0,
        }
    }

    /// Decides what happens to datagram `d`; all of it is fed while `sampling` is false.
    pub fn admit(&mut self, d: &[u8], sampling: bool) -> Verdict {
        let Some(h) = Header::parse(d) else {
            return Verdict::Feed;
        };
        let n = self.seen.entry(h.ssrc).or_default();
        let turn = n.is_multiple_of(self.every);
        *n = n.wrapping_add(1);
        // Padding hides how long the payload is (and may be all there is): str0m looks.
        if !sampling || turn || h.padding || !self.refs.contains_key(&h.ssrc) {
            self.fed.insert(h.ssrc, (h.seq, h.len, d.len()));
            self.decrypted += 1;
            return Verdict::Feed;
        }
        self.counted += 1;
        Verdict::Counted(self.estimate(&h, d.len()))
    }

    /// str0m delivered a packet of `ssrc` with sequence number `seq`, RTP timestamp
    /// `timestamp`, `payload_len` bytes of payload and `probe`: it becomes the SSRC's reference
    /// if it is the datagram last fed for that SSRC (not, say, one unwrapped from a resend).
    pub fn learn(&mut self, ssrc: u32, seq: u16, timestamp: u32, payload_len: usize, probe: Probe) {
        let Some(&(fed_seq, header_len, len)) = self.fed.get(&ssrc) else {
            return;
        };
        if fed_seq != seq || len < header_len + payload_len {
            return;
        }
        self.refs.insert(
            ssrc,
            Reference {
                seq,
                timestamp,
                probe,
                trailer: len - header_len - payload_len,
            },
        );
    }

    /// The probe a counted packet implies, and its payload bytes.
    fn estimate(&self, h: &Header, len: usize) -> Option<(Probe, usize)> {
        let r = self.refs.get(&h.ssrc)?;
        let ahead = h.seq.wrapping_sub(r.seq) as i16 as i64;
        let seq = u32::try_from(r.probe.seq as i64 + ahead).ok()?;
        let hz = r.probe.kind.clock_rate() as i64;
        let ticks = h.timestamp.wrapping_sub(r.timestamp) as i32 as i64;
        let sent_ns = (r.probe.sent_ns as i64 + ticks * 1_000_000_000 / hz).max(0) as u64;
        let payload = len.saturating_sub(h.len + r.trailer);
        Some((
            Probe {
                seq,
                sent_ns,
                keyframe_start: false,
                ..r.probe
            },
            payload,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::StreamKind;

    fn rtp(ssrc: u32, seq: u16, ts: u32, ext_words: u16, payload: usize) -> Vec<u8> {
        let mut d = vec![0x80 | if ext_words > 0 { 0x10 } else { 0 }, 96];
        d.extend_from_slice(&seq.to_be_bytes());
        d.extend_from_slice(&ts.to_be_bytes());
        d.extend_from_slice(&ssrc.to_be_bytes());
        if ext_words > 0 {
            d.extend_from_slice(&[0xbe, 0xde]);
            d.extend_from_slice(&ext_words.to_be_bytes());
            d.extend(std::iter::repeat_n(0, 4 * ext_words as usize));
        }
        d.extend(std::iter::repeat_n(7, payload + 10)); // payload and a 10-byte tag
        d
    }

    impl Sampler {
        fn admit_now(&mut self, d: &[u8]) -> Verdict {
            self.admit(d, true)
        }
    }

    #[test]
    fn rtp_is_told_from_rtcp_stun_and_dtls() {
        assert!(is_rtp(&rtp(1, 2, 3, 0, 20)));
        let mut rtcp = rtp(1, 2, 3, 0, 20);
        for pt in [200u8, 201, 205, 206] {
            rtcp[1] = pt;
            assert!(!is_rtp(&rtcp), "{pt}");
        }
        // Marker bit set on payload type 96 (byte 0xe0) is RTP.
        rtcp[1] = 0xe0;
        assert!(is_rtp(&rtcp));
        let mut stun = vec![0u8; 20];
        stun[1] = 1;
        assert!(!is_rtp(&stun));
        let dtls = [22u8; 40];
        assert!(!is_rtp(&dtls));
        let h = Header::parse(&rtp(9, 65535, 7, 2, 30)).unwrap();
        assert_eq!((h.ssrc, h.seq, h.timestamp, h.len), (9, 65535, 7, 24));
    }

    #[test]
    fn counted_packets_get_the_probe_their_sequence_number_implies_across_a_wrap() {
        let mut s = Sampler::new(4);
        let probe = Probe {
            publisher: 3,
            kind: StreamKind::Audio,
            keyframe_start: false,
            layer: 0,
            seq: 100,
            sent_ns: 1_000_000_000,
        };
        // The first packet of the SSRC is fed, and becomes the reference.
        let first = rtp(5, 65534, 960 * 100, 1, 80);
        assert_eq!(s.admit_now(&first), Verdict::Feed);
        s.learn(5, 65534, 960 * 100, 80, probe);
        // The next three are counted: sequence numbers 65535, 0, 1 are probes 101–103, 20 ms
        // apart, 80 bytes of payload each.
        for i in 1..4u16 {
            let seq = 65534u16.wrapping_add(i);
            let d = rtp(5, seq, 960 * (100 + i as u32), 1, 80);
            let Verdict::Counted(Some((p, bytes))) = s.admit_now(&d) else {
                panic!("packet {i} counted");
            };
            assert_eq!(
                (p.seq, p.sent_ns, bytes),
                (100 + i as u32, 1_000_000_000 + 20_000_000 * i as u64, 80)
            );
        }
        // The fourth is fed again; an unknown SSRC is fed until str0m named it.
        assert_eq!(s.admit_now(&rtp(5, 2, 0, 0, 80)), Verdict::Feed);
        assert_eq!(s.admit_now(&rtp(6, 2, 0, 0, 80)), Verdict::Feed);
        assert_eq!(s.admit_now(&rtp(6, 3, 0, 0, 80)), Verdict::Feed);
        assert_eq!((s.decrypted, s.counted), (4, 3));
        // RTCP and the rest are always fed.
        let mut rtcp = rtp(5, 3, 0, 0, 20);
        rtcp[1] = 201;
        assert_eq!(s.admit_now(&rtcp), Verdict::Feed);
    }

    #[test]
    fn a_counted_packet_sent_late_gets_back_its_own_send_time_within_one_tick() {
        for kind in [StreamKind::Audio, StreamKind::Video] {
            let tick_ns = 1_000_000_000 / kind.clock_rate();
            let mut s = Sampler::new(1_000);
            let t0 = 5_000_000_123;
            let probe = Probe {
                publisher: 1,
                kind,
                keyframe_start: false,
                layer: 0,
                seq: 0,
                sent_ns: t0,
            };
            let ts0 = kind.rtp_timestamp(t0);
            assert_eq!(s.admit_now(&rtp(7, 10, ts0, 0, 50)), Verdict::Feed);
            s.learn(7, 10, ts0, 50, probe);
            // A pacer that runs late by up to 19 ms, unevenly: frames 33 ms apart nominally.
            let mut sent = t0;
            for i in 1..200u16 {
                sent += 33_333_333 + (i as u64 * 7_919_003) % 19_000_000;
                let d = rtp(7, 10 + i, kind.rtp_timestamp(sent), 0, 50);
                let Verdict::Counted(Some((p, _))) = s.admit_now(&d) else {
                    panic!("packet {i} counted");
                };
                assert_eq!(p.seq, i as u32);
                assert!(
                    p.sent_ns.abs_diff(sent) <= tick_ns,
                    "{kind:?} {i}: {p:?} vs {sent}"
                );
            }
        }
    }
}
