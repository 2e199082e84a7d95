//! RTP payloads back into codec frames: the payload descriptors of VP8 (RFC 7741) and VP9
//! (RFC 9628) stripped, fragments of one frame joined; Opus packets are frames already.

/// Where a VP8 or VP9 payload's codec data starts, and whether the packet begins a frame.
pub(crate) struct Descriptor {
    pub data_at: usize,
    pub begins: bool,
}

pub(crate) fn vp8(p: &[u8]) -> Option<Descriptor> {
    let b0 = *p.first()?;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            let pid = *p.get(i)?;
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    (i <= p.len()).then_some(Descriptor {
        data_at: i,
        begins: b0 & 0x10 != 0 && b0 & 0x07 == 0,
    })
}

pub(crate) fn vp9(p: &[u8]) -> Option<Descriptor> {
    let b0 = *p.first()?;
    let (has_pid, predicted, layers, flexible, begin, scalability) = (
        b0 & 0x80 != 0,
        b0 & 0x40 != 0,
        b0 & 0x20 != 0,
        b0 & 0x10 != 0,
        b0 & 0x08 != 0,
        b0 & 0x02 != 0,
    );
    let mut i = 1;
    if has_pid {
        let pid = *p.get(i)?;
        i += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    if layers {
        i += if flexible { 1 } else { 2 };
    }
    if flexible && predicted {
        // Up to three reference indices, each with a "more follow" bit.
        for _ in 0..3 {
            let r = *p.get(i)?;
            i += 1;
            if r & 0x01 == 0 {
                break;
            }
        }
    }
    if scalability {
        let ss = *p.get(i)?;
        i += 1;
        let spatial = ((ss >> 5) + 1) as usize;
        if ss & 0x10 != 0 {
            i += 4 * spatial;
        }
        if ss & 0x08 != 0 {
            let groups = *p.get(i)? as usize;
            i += 1;
            for _ in 0..groups {
                let g = *p.get(i)?;
                i += 1 + ((g >> 2) & 0x03) as usize;
            }
        }
    }
    (i <= p.len()).then_some(Descriptor {
        data_at: i,
        begins: begin,
    })
}

/// The picture size in a VP8 keyframe's header.
pub(crate) fn vp8_size(frame: &[u8]) -> Option<(u32, u32)> {
    if frame.len() < 10 || frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((w as u32, h as u32))
}

struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.at / 8)?;
            let bit = (byte >> (7 - self.at % 8)) & 1;
            v = (v << 1) | bit as u32;
            self.at += 1;
        }
        Some(v)
    }
}

/// The picture size in a VP9 keyframe's uncompressed header.
pub(crate) fn vp9_size(frame: &[u8]) -> Option<(u32, u32)> {
    let mut b = Bits { data: frame, at: 0 };
    if b.read(2)? != 2 {
        return None; // frame marker
    }
    let low = b.read(1)?;
    let high = b.read(1)?;
    let profile = (high << 1) | low;
    if profile == 3 {
        b.read(1)?;
    }
    if b.read(1)? == 1 {
        return None; // show_existing_frame
    }
    if b.read(1)? != 0 {
        return None; // not a keyframe
    }
    b.read(2)?; // show_frame, error_resilient_mode
    if b.read(24)? != 0x49_83_42 {
        return None;
    }
    if profile >= 2 {
        b.read(1)?;
    }
    let color_space = b.read(3)?;
    if color_space != 7 {
        b.read(1)?;
        if profile == 1 || profile == 3 {
            b.read(3)?;
        }
    } else if profile == 1 || profile == 3 {
        b.read(1)?;
    }
    let w = b.read(16)? + 1;
    let h = b.read(16)? + 1;
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_descriptors() {
        let d = vp8(&[0x10, 0xAA]).unwrap();
        assert!(d.begins && d.data_at == 1);
        // Extended, two-byte picture id, TL0PICIDX, TID.
        let d = vp8(&[0x90, 0xF0, 0x80, 0x01, 0x05, 0x20, 0xAA]).unwrap();
        assert!(d.begins && d.data_at == 6);
        assert!(!vp8(&[0x00, 0xAA]).unwrap().begins);
        assert!(vp8(&[0x80]).is_none());
        assert!(vp8(&[]).is_none());
    }

    #[test]
    fn vp8_keyframe_size() {
        let frame = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
        assert_eq!(vp8_size(&frame), Some((640, 480)));
        assert_eq!(vp8_size(&[0x11; 10]), None);
    }

    #[test]
    fn vp9_descriptors_and_size() {
        // I, B, E with a two-byte picture id.
        let d = vp9(&[0x8C, 0x80, 0x01, 0xAA]).unwrap();
        assert!(d.begins && d.data_at == 3);
        // Scalability structure with one spatial layer and its size.
        let d = vp9(&[0x0E, 0x10, 0x01, 0x40, 0x00, 0xF0, 0xAA]).unwrap();
        assert_eq!(d.data_at, 6);
        // A profile-0 keyframe header of 320x240.
        let mut frame = vec![0b1000_0010, 0x49, 0x83, 0x42];
        // color_space 0 (3 bits) and color_range 0 (the top 4 of 36 bits), then
        // width-1 = 319, height-1 = 239.
        let bits: u64 = (319u64 << 16) | 239;
        let packed = bits << (64 - 36);
        frame.extend(&packed.to_be_bytes()[..5]);
        assert_eq!(vp9_size(&frame), Some((320, 240)));
        for junk in [&[][..], &[0xff, 0xff], &[0x82, 0x00, 0x00, 0x00]] {
            assert_eq!(vp9_size(junk), None);
        }
    }
}
