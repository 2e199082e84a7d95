//! Keyframe detection on RTP payloads, without decoding.
//!
//! The SFU needs two answers from a video packet: "does a keyframe start here?" (to start a new
//! subscriber cleanly, and to cancel pending keyframe requests) — nothing more. Each function reads
//! only the codec's payload descriptor and first header bytes, and never panics on short input.

/// The video codecs the SFU forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// VP8 (RFC 7741 payload format).
    Vp8,
    /// VP9 (RFC 9628 payload format).
    Vp9,
    /// H.264 (RFC 6184 payload format).
    H264,
}

impl VideoCodec {
    /// Whether this RTP payload starts a keyframe.
    pub fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            VideoCodec::Vp8 => vp8_keyframe_start(payload),
            VideoCodec::Vp9 => vp9_keyframe_start(payload),
            VideoCodec::H264 => h264_keyframe_start(payload),
        }
    }

    /// The lower-case name used in configuration and SDP (`vp8`, `vp9`, `h264`).
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "vp8",
            VideoCodec::Vp9 => "vp9",
            VideoCodec::H264 => "h264",
        }
    }

    /// Parses a codec name case-insensitively (`VP8`, `vp9`, `H264`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "vp8" => Some(VideoCodec::Vp8),
            "vp9" => Some(VideoCodec::Vp9),
            "h264" => Some(VideoCodec::H264),
            _ => None,
        }
    }
}

/// VP8: the payload descriptor's S bit and partition index 0 mark the start of a frame; the
/// first bit of the VP8 frame tag (P, "inverse key frame") is 0 for a keyframe.
fn vp8_keyframe_start(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let extended = b0 & 0x80 != 0;
    let start = b0 & 0x10 != 0;
    let partition = b0 & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut i = 1;
    if extended {
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // I: picture id, one byte or two when its M bit is set.
            let Some(&pid) = p.get(i) else { return false };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // L: TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // T or K: TID/Y/KEYIDX
        }
    }
    matches!(p.get(i), Some(tag) if tag & 0x01 == 0)
}

/// VP9: B (beginning of frame) set and P (inter-picture predicted) clear; with layer indices
/// present, only the base spatial layer starts a keyframe.
fn vp9_keyframe_start(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let has_pid = b0 & 0x80 != 0;
    let predicted = b0 & 0x40 != 0;
    let has_layers = b0 & 0x20 != 0;
    let begin = b0 & 0x08 != 0;
    if predicted || !begin {
        return false;
    }
    if !has_layers {
        return true;
    }
    let mut i = 1;
    if has_pid {
        let Some(&pid) = p.get(i) else { return false };
        i += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    matches!(p.get(i), Some(l) if (l >> 1) & 0x07 == 0)
}

/// H.264: an IDR slice (5) or a sequence parameter set (7), alone, aggregated in a STAP-A, or
/// as the first fragment of an FU-A.
fn h264_keyframe_start(p: &[u8]) -> bool {
    let is_key = |nal_type: u8| nal_type == 5 || nal_type == 7;
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        24 => {
            // STAP-A: 16-bit size, then the NAL unit, repeated.
            let mut i = 1;
            while i + 2 < p.len() {
                let size = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                let Some(&nal) = p.get(i + 2) else {
                    return false;
                };
                if size > 0 && is_key(nal & 0x1f) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => matches!(p.get(1), Some(fu) if fu & 0x80 != 0 && is_key(fu & 0x1f)),
        t => is_key(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_plain_descriptor() {
        assert!(VideoCodec::Vp8.is_keyframe_start(&[0x10, 0x00, 0x00, 0x00, 0x9d]));
        assert!(!VideoCodec::Vp8.is_keyframe_start(&[0x10, 0x01]));
        // Not the start of the frame.
        assert!(!VideoCodec::Vp8.is_keyframe_start(&[0x00, 0x00]));
        // Partition 1.
        assert!(!VideoCodec::Vp8.is_keyframe_start(&[0x11, 0x00]));
    }

    #[test]
    fn vp8_extended_descriptor() {
        // X, I with 15-bit picture id, L, T: 1 + 1 + 2 + 1 + 1 bytes of descriptor.
        let key = [0x90, 0xe0, 0x81, 0x23, 0x05, 0x20, 0x00];
        assert!(VideoCodec::Vp8.is_keyframe_start(&key));
        let delta = [0x90, 0xe0, 0x81, 0x23, 0x05, 0x20, 0x01];
        assert!(!VideoCodec::Vp8.is_keyframe_start(&delta));
        // Descriptor cut short.
        assert!(!VideoCodec::Vp8.is_keyframe_start(&key[..4]));
    }

    #[test]
    fn vp9_descriptor() {
        assert!(VideoCodec::Vp9.is_keyframe_start(&[0x08]));
        assert!(!VideoCodec::Vp9.is_keyframe_start(&[0x48]));
        assert!(!VideoCodec::Vp9.is_keyframe_start(&[0x00]));
        // I + L, spatial layer 0 then 1.
        assert!(VideoCodec::Vp9.is_keyframe_start(&[0xa8, 0x05, 0x00]));
        assert!(!VideoCodec::Vp9.is_keyframe_start(&[0xa8, 0x05, 0x02]));
    }

    #[test]
    fn h264_nal_units() {
        assert!(VideoCodec::H264.is_keyframe_start(&[0x65, 0x88]));
        assert!(VideoCodec::H264.is_keyframe_start(&[0x67, 0x42]));
        assert!(!VideoCodec::H264.is_keyframe_start(&[0x41, 0x9a]));
        // STAP-A carrying SPS.
        assert!(VideoCodec::H264.is_keyframe_start(&[0x78, 0x00, 0x02, 0x67, 0x42]));
        // STAP-A carrying only a non-IDR slice.
        assert!(!VideoCodec::H264.is_keyframe_start(&[0x78, 0x00, 0x02, 0x41, 0x9a]));
        // FU-A: first fragment of an IDR, then a middle fragment.
        assert!(VideoCodec::H264.is_keyframe_start(&[0x7c, 0x85]));
        assert!(!VideoCodec::H264.is_keyframe_start(&[0x7c, 0x05]));
    }

    #[test]
    fn never_panics_on_any_short_input() {
        for codec in [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264] {
            assert!(!codec.is_keyframe_start(&[]));
            for a in 0..=255u8 {
                codec.is_keyframe_start(&[a]);
                for b in [0u8, 0x7f, 0x80, 0xff] {
                    codec.is_keyframe_start(&[a, b]);
                    codec.is_keyframe_start(&[a, b, 0xff]);
                }
            }
        }
    }
}
