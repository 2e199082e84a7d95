//! The VP8 payload descriptor (RFC 7741 §4.2) as simulcast needs it: the temporal layer of a
//! packet, the frame size of a keyframe, and picture ids that stay continuous when a receiver
//! moves from one layer's stream to another's. Nothing here panics on short or odd input.

/// What the descriptor of one packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Descriptor {
    /// The picture id and where it is: (value, offset, 15 bits wide).
    pub(crate) picture_id: Option<(u16, usize, bool)>,
    /// TL0PICIDX and its offset.
    pub(crate) tl0: Option<(u8, usize)>,
    /// The temporal layer index.
    pub(crate) tid: Option<u8>,
    /// The layer-sync bit (`Y`): the frame depends only on temporal layer 0, so a receiver
    /// may start taking its temporal layer here.
    pub(crate) sync: bool,
    /// The packet starts a frame (`S` set, partition 0).
    pub(crate) start: bool,
    /// Where the VP8 payload starts.
    pub(crate) payload: usize,
}

/// Reads the payload descriptor at the start of `p`.
pub(crate) fn descriptor(p: &[u8]) -> Option<Descriptor> {
    let b0 = *p.first()?;
    let mut d = Descriptor {
        payload: 1,
        start: b0 & 0x10 != 0 && b0 & 0x07 == 0,
        ..Default::default()
    };
    if b0 & 0x80 == 0 {
        return Some(d);
    }
    let x = *p.get(1)?;
    let mut i = 2;
    if x & 0x80 != 0 {
        let hi = *p.get(i)?;
        if hi & 0x80 != 0 {
            let lo = *p.get(i + 1)?;
            d.picture_id = Some(((u16::from(hi & 0x7f) << 8) | u16::from(lo), i, true));
            i += 2;
        } else {
            d.picture_id = Some((u16::from(hi), i, false));
            i += 1;
        }
    }
    if x & 0x40 != 0 {
        d.tl0 = Some((*p.get(i)?, i));
        i += 1;
    }
    if x & 0x30 != 0 {
        let b = *p.get(i)?;
        if x & 0x20 != 0 {
            d.tid = Some(b >> 6);
            d.sync = b & 0x20 != 0;
        }
        i += 1;
    }
    if i > p.len() {
        return None;
    }
    d.payload = i;
    Some(d)
}

/// The frame size (width, height) of a packet that starts a VP8 keyframe.
pub(crate) fn keyframe_size(p: &[u8]) -> Option<(u32, u32)> {
    let d = descriptor(p)?;
    let b0 = *p.first()?;
    let (start, partition) = (b0 & 0x10 != 0, b0 & 0x07);
    if !start || partition != 0 {
        return None;
    }
    let f = p.get(d.payload..)?;
    // Frame tag (3 bytes, P bit clear for a keyframe), start code, 14-bit width and height.
    if f.len() < 10 || f[0] & 0x01 != 0 || f[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u32::from(u16::from_le_bytes([f[6], f[7]]) & 0x3fff);
    let h = u32::from(u16::from_le_bytes([f[8], f[9]]) & 0x3fff);
    Some((w, h))
}

/// Keeps picture ids and TL0PICIDX continuous on one outgoing stream across changes of the
/// stream feeding it: each feeding stream gets offsets so that its first picture follows the
/// last one sent.
#[derive(Debug, Default, Clone)]
pub(crate) struct Munger {
    source: Option<u64>,
    pid_offset: u16,
    tl0_offset: u8,
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
    /// The last picture dropped (its packets share the id; it counts once).
    last_dropped: Option<u16>,
}

impl Munger {
    /// Picture `pid` of `source` is not forwarded (a temporal layer the receiver does not
    /// take): the pictures after it are numbered as if it never existed.
    pub(crate) fn drop_picture(&mut self, source: u64, pid: u16) {
        if self.source == Some(source) && self.last_dropped != Some(pid) {
            self.pid_offset = self.pid_offset.wrapping_sub(1);
            self.last_dropped = Some(pid);
        }
    }

    /// The descriptor of `payload`, a packet of the feeding stream `source`, rewritten; `None`
    /// when it stays as it is (no copy is made then).
    /// `d` is `payload`'s descriptor, read once per packet by the caller for all receivers.
    pub(crate) fn munge(&mut self, source: u64, d: &Descriptor, payload: &[u8]) -> Option<Vec<u8>> {
        if self.source != Some(source) {
            if self.source.is_some() {
                if let (Some((pid, ..)), Some(last)) = (d.picture_id, self.last_pid) {
                    self.pid_offset = last.wrapping_add(1).wrapping_sub(pid);
                }
                if let (Some((tl0, _)), Some(last)) = (d.tl0, self.last_tl0) {
                    self.tl0_offset = last.wrapping_add(1).wrapping_sub(tl0);
                }
            }
            self.source = Some(source);
        }
        let mut out = None::<Vec<u8>>;
        if let Some((pid, at, wide)) = d.picture_id {
            let mask = if wide { 0x7fff } else { 0x7f };
            let new_pid = pid.wrapping_add(self.pid_offset) & mask;
            self.last_pid = Some(new_pid);
            if new_pid != pid {
                let buf = out.get_or_insert_with(|| payload.to_vec());
                if wide {
                    buf[at] = 0x80 | (new_pid >> 8) as u8;
                    buf[at + 1] = new_pid as u8;
                } else {
                    buf[at] = new_pid as u8;
                }
            }
        }
        if let Some((tl0, at)) = d.tl0 {
            let new_tl0 = tl0.wrapping_add(self.tl0_offset);
            self.last_tl0 = Some(new_tl0);
            if new_tl0 != tl0 {
                out.get_or_insert_with(|| payload.to_vec())[at] = new_tl0;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn munged(m: &mut Munger, source: u64, p: &[u8]) -> Option<Vec<u8>> {
        m.munge(source, &descriptor(p).unwrap(), p)
    }

    /// A descriptor with a 15-bit picture id, TL0PICIDX and TID, then `rest`.
    fn packet(start: bool, pid: u16, tl0: u8, tid: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x80 | if start { 0x10 } else { 0 },
            0xe0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            tid << 6,
        ];
        p.extend_from_slice(rest);
        p
    }

    const KEY_640X360: [u8; 10] = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];

    #[test]
    fn reads_the_descriptor() {
        let d = descriptor(&packet(true, 0x1234, 7, 2, &[0])).unwrap();
        assert_eq!(d.picture_id, Some((0x1234, 2, true)));
        assert_eq!(d.tl0, Some((7, 4)));
        assert_eq!(d.tid, Some(2));
        assert_eq!(d.payload, 6);
        assert_eq!(descriptor(&[0x10, 0x00]).unwrap().payload, 1);
    }

    #[test]
    fn short_or_odd_input_is_no_descriptor() {
        assert_eq!(descriptor(&[]), None);
        assert_eq!(descriptor(&[0x80]), None);
        assert_eq!(descriptor(&[0x80, 0x80, 0x81]), None);
        for len in 0..12 {
            let p = packet(true, 300, 1, 0, &KEY_640X360);
            let _ = descriptor(&p[..len]);
            let _ = keyframe_size(&p[..len]);
        }
    }

    #[test]
    fn dropped_pictures_leave_no_gap_in_the_ids() {
        let mut m = Munger::default();
        assert_eq!(munged(&mut m, 1, &packet(true, 10, 1, 0, &[0])), None);
        // Picture 11 (two packets) is dropped; 12 goes out as 11.
        m.drop_picture(1, 11);
        m.drop_picture(1, 11);
        let out = munged(&mut m, 1, &packet(true, 12, 1, 1, &[0])).unwrap();
        assert_eq!(descriptor(&out).unwrap().picture_id.unwrap().0, 11);
        // Dropping on another source changes nothing.
        m.drop_picture(2, 13);
        let out = munged(&mut m, 1, &packet(true, 13, 2, 0, &[0])).unwrap();
        assert_eq!(descriptor(&out).unwrap().picture_id.unwrap().0, 12);
    }

    #[test]
    fn reads_the_sync_bit() {
        let mut p = packet(true, 5, 1, 2, &[0]);
        assert!(!descriptor(&p).unwrap().sync);
        p[5] |= 0x20;
        let d = descriptor(&p).unwrap();
        assert!(d.sync && d.start);
    }

    #[test]
    fn reads_a_keyframes_size() {
        assert_eq!(
            keyframe_size(&packet(true, 1, 0, 0, &KEY_640X360)),
            Some((640, 360))
        );
        // Not the start of a frame, or an inter frame: no size.
        assert_eq!(keyframe_size(&packet(false, 1, 0, 0, &KEY_640X360)), None);
        let mut inter = KEY_640X360;
        inter[0] |= 1;
        assert_eq!(keyframe_size(&packet(true, 1, 0, 0, &inter)), None);
    }

    #[test]
    fn picture_ids_continue_across_a_switch() {
        let mut m = Munger::default();
        // The first stream goes out as it is: no copy.
        assert_eq!(munged(&mut m, 1, &packet(true, 100, 10, 0, &[0])), None);
        assert_eq!(munged(&mut m, 1, &packet(true, 101, 11, 0, &[0])), None);
        // Another stream, with its own numbering: continues at 102 and 12.
        let b = munged(&mut m, 2, &packet(true, 0x7ffe, 200, 0, &[7])).unwrap();
        let d = descriptor(&b).unwrap();
        assert_eq!(d.picture_id.unwrap().0, 102);
        assert_eq!(d.tl0.unwrap().0, 12);
        assert_eq!(b[d.payload..], [7]);
        let b2 = munged(&mut m, 2, &packet(true, 0x7fff, 201, 0, &[0])).unwrap();
        let b3 = munged(&mut m, 2, &packet(true, 0, 202, 0, &[0])).unwrap();
        assert_eq!(descriptor(&b2).unwrap().picture_id.unwrap().0, 103);
        assert_eq!(descriptor(&b3).unwrap().picture_id.unwrap().0, 104);
        // Back to the first stream: continues again.
        let a3 = munged(&mut m, 1, &packet(true, 102, 12, 0, &[0])).unwrap();
        assert_eq!(descriptor(&a3).unwrap().picture_id.unwrap().0, 105);
    }
}
