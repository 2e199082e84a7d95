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

/// H.264 (RFC 6184) access units reassembled as length-prefixed NAL units (the form Matroska
/// and MP4 store), with the latest parameter sets kept for the `avcC` header.
#[derive(Default)]
pub(crate) struct H264 {
    frame: Vec<u8>,
    fragment: Option<Vec<u8>>,
    key: bool,
    pub sps: Option<Vec<u8>>,
    pub pps: Option<Vec<u8>>,
}

impl H264 {
    fn nal(&mut self, nal: &[u8]) {
        let Some(&head) = nal.first() else { return };
        match head & 0x1f {
            5 => self.key = true,
            7 => self.sps = Some(nal.to_vec()),
            8 => self.pps = Some(nal.to_vec()),
            _ => {}
        }
        self.frame.extend((nal.len() as u32).to_be_bytes());
        self.frame.extend_from_slice(nal);
    }

    /// Adds one RTP payload; `None` when it is malformed (the frame is then broken).
    pub(crate) fn push(&mut self, p: &[u8]) -> Option<()> {
        let head = *p.first()?;
        match head & 0x1f {
            1..=23 => self.nal(p),
            24 => {
                let mut i = 1;
                while i + 2 <= p.len() {
                    let size = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                    let nal = p.get(i + 2..i + 2 + size)?;
                    self.nal(nal);
                    i += 2 + size;
                }
            }
            28 => {
                let fu = *p.get(1)?;
                if fu & 0x80 != 0 {
                    let mut nal = vec![(head & 0xe0) | (fu & 0x1f)];
                    nal.extend_from_slice(&p[2..]);
                    self.fragment = Some(nal);
                } else {
                    self.fragment.as_mut()?.extend_from_slice(&p[2..]);
                }
                if fu & 0x40 != 0 {
                    let nal = self.fragment.take()?;
                    self.nal(&nal);
                }
            }
            _ => return None,
        }
        Some(())
    }

    /// The access unit so far (and whether it holds an IDR slice); starts the next one.
    pub(crate) fn take(&mut self) -> (Vec<u8>, bool) {
        self.fragment = None;
        (
            std::mem::take(&mut self.frame),
            std::mem::take(&mut self.key),
        )
    }

    /// The `AVCDecoderConfigurationRecord` for the parameter sets seen.
    pub(crate) fn avcc(&self) -> Option<Vec<u8>> {
        let (sps, pps) = (self.sps.as_ref()?, self.pps.as_ref()?);
        if sps.len() < 4 {
            return None;
        }
        let mut v = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        v.extend((sps.len() as u16).to_be_bytes());
        v.extend_from_slice(sps);
        v.push(1);
        v.extend((pps.len() as u16).to_be_bytes());
        v.extend_from_slice(pps);
        Some(v)
    }
}

#[cfg(test)]
mod h264_tests {
    use super::*;

    #[test]
    fn stap_a_and_fu_a_become_length_prefixed_units() {
        let mut h = H264::default();
        // STAP-A with SPS (4 bytes) and PPS (2 bytes).
        h.push(&[0x78, 0, 4, 0x67, 0x42, 0xc0, 0x1f, 0, 2, 0x68, 0xce])
            .unwrap();
        // An IDR slice in three FU-A fragments.
        h.push(&[0x7c, 0x85, 1, 2]).unwrap();
        h.push(&[0x7c, 0x05, 3]).unwrap();
        h.push(&[0x7c, 0x45, 4]).unwrap();
        let (frame, key) = h.take();
        assert!(key);
        assert_eq!(
            frame,
            vec![
                0, 0, 0, 4, 0x67, 0x42, 0xc0, 0x1f, 0, 0, 0, 2, 0x68, 0xce, 0, 0, 0, 5, 0x65, 1, 2,
                3, 4
            ]
        );
        assert_eq!(
            h.avcc().unwrap(),
            vec![
                1, 0x42, 0xc0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x42, 0xc0, 0x1f, 1, 0, 2, 0x68, 0xce
            ]
        );
        // A middle fragment without a start is refused; junk types too.
        let mut h = H264::default();
        assert!(h.push(&[0x7c, 0x05, 3]).is_none());
        assert!(h.push(&[0x7e]).is_none());
        assert!(h.push(&[0x78, 0, 9, 1]).is_none());
    }
}
