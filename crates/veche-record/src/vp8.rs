//! VP8 frames out of RTP payloads (RFC 7741): the payload descriptor stripped, packets of one
//! picture put together, a frame after a loss dropped until the next keyframe (a decoder
//! given a frame whose reference is missing shows garbage or fails).

/// The payload descriptor of one VP8 RTP payload: how long it is and whether the payload
/// starts the frame (the start of partition 0).
fn descriptor(p: &[u8]) -> Option<(usize, bool)> {
    let b0 = *p.first()?;
    let extended = b0 & 0x80 != 0;
    let start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
    let mut len = 1;
    if extended {
        let x = *p.get(len)?;
        len += 1;
        if x & 0x80 != 0 {
            // Picture id: 7 or 15 bits.
            len += if *p.get(len)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            len += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            len += 1; // TID / Y / KEYIDX
        }
    }
    (len < p.len()).then_some((len, start))
}

/// Whether a whole VP8 frame is a keyframe, and its size if it is.
pub fn keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    // Frame tag bit 0 is 0 for a keyframe; the start code 9d 01 2a follows, then the size.
    if frame.len() < 10 || frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((w, h))
}

/// A whole frame, as a decoder takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The VP8 bitstream of the frame.
    pub data: Vec<u8>,
    /// The RTP timestamp (90 kHz) of its packets.
    pub ts: u32,
    /// A keyframe's size; `None` for an interframe.
    pub keyframe: Option<(u16, u16)>,
}

/// What one packet did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// A frame is complete.
    Frame(Frame),
    /// Part of a frame, or a repeat: nothing yet.
    Nothing,
    /// Something was lost (or the stream starts mid-picture): frames are dropped until the
    /// next keyframe, which the caller should ask for.
    NeedKeyframe,
}

/// Puts one track's packets together into frames. Sans-IO.
#[derive(Debug, Default)]
pub struct Assembler {
    next_seq: Option<u64>,
    ts: Option<u32>,
    buf: Vec<u8>,
    /// A keyframe came since the last loss: interframes can be decoded.
    synced: bool,
    /// Longest frame kept: a stream of never-ending frames must not grow memory.
    max_frame: usize,
}

/// Largest frame put together (a 4K keyframe is well under this).
const MAX_FRAME: usize = 4 << 20;

impl Assembler {
    /// A new assembler, waiting for a keyframe.
    pub fn new() -> Self {
        Self {
            max_frame: MAX_FRAME,
            ..Self::default()
        }
    }

    /// Start again (the track's source changed): wait for a keyframe.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// One packet: extended sequence number, RTP timestamp, marker bit and payload.
    pub fn push(&mut self, seq: u64, ts: u32, marker: bool, payload: &[u8]) -> Pushed {
        // Something before this packet is missing: what was being put together is lost,
        // but this packet may start the keyframe that mends it.
        let mut lost = false;
        match self.next_seq {
            Some(n) if seq < n => return Pushed::Nothing, // a repeat or late: ignore
            Some(n) if seq > n => {
                lost = true;
                self.buf.clear();
                self.synced = false;
            }
            _ => {}
        }
        self.next_seq = Some(seq + 1);
        let Some((skip, start)) = descriptor(payload) else {
            return self.lost(seq);
        };
        if start {
            if !self.buf.is_empty() {
                // The previous picture never ended.
                self.buf.clear();
                self.synced = false;
                lost = true;
            }
            self.ts = Some(ts);
        } else if self.buf.is_empty() || self.ts != Some(ts) {
            // The middle of a picture whose start we do not have.
            self.buf.clear();
            return self.lost(seq);
        }
        if self.buf.len() + payload.len() > self.max_frame {
            self.buf.clear();
            return self.lost(seq);
        }
        self.buf.extend_from_slice(&payload[skip..]);
        if !marker {
            return if lost {
                Pushed::NeedKeyframe
            } else {
                Pushed::Nothing
            };
        }
        let data = std::mem::take(&mut self.buf);
        let keyframe = keyframe_size(&data);
        if keyframe.is_some() {
            self.synced = true;
        }
        if !self.synced {
            return Pushed::NeedKeyframe;
        }
        Pushed::Frame(Frame { data, ts, keyframe })
    }

    fn lost(&mut self, seq: u64) -> Pushed {
        self.next_seq = Some(seq + 1);
        self.buf.clear();
        self.synced = false;
        Pushed::NeedKeyframe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keyframe of `w`×`h` with `n` bytes of body, as its VP8 bytes.
    pub(crate) fn keyframe(w: u16, h: u16, n: usize) -> Vec<u8> {
        let mut f = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        f.extend_from_slice(&w.to_le_bytes());
        f.extend_from_slice(&h.to_le_bytes());
        f.resize(10 + n, 0xab);
        f
    }

    /// Cut a frame into RTP payloads with a descriptor carrying a 15-bit picture id.
    fn packets(frame: &[u8], size: usize) -> Vec<Vec<u8>> {
        frame
            .chunks(size)
            .enumerate()
            .map(|(i, c)| {
                let mut p = vec![if i == 0 { 0x90 } else { 0x80 }, 0x80, 0x81, 0x23];
                p.extend_from_slice(c);
                p
            })
            .collect()
    }

    #[test]
    fn packets_of_a_picture_make_one_frame_without_their_descriptors() {
        let key = keyframe(1280, 720, 3000);
        let mut a = Assembler::new();
        let ps = packets(&key, 1000);
        assert_eq!(ps.len(), 4);
        let mut out = Vec::new();
        for (i, p) in ps.iter().enumerate() {
            out.push(a.push(10 + i as u64, 900, i == ps.len() - 1, p));
        }
        assert_eq!(
            out[..3],
            [Pushed::Nothing, Pushed::Nothing, Pushed::Nothing]
        );
        assert_eq!(
            out[3],
            Pushed::Frame(Frame {
                data: key,
                ts: 900,
                keyframe: Some((1280, 720))
            })
        );
    }

    #[test]
    fn after_a_loss_interframes_wait_for_a_keyframe() {
        let mut a = Assembler::new();
        let inter = {
            let mut f = vec![0x01, 0, 0];
            f.resize(50, 7);
            f
        };
        // An interframe before any keyframe: cannot be decoded.
        assert_eq!(
            a.push(1, 0, true, &packets(&inter, 100)[0]),
            Pushed::NeedKeyframe
        );
        let key = packets(&keyframe(320, 240, 10), 100);
        assert!(matches!(a.push(2, 3000, true, &key[0]), Pushed::Frame(_)));
        assert!(matches!(
            a.push(3, 6000, true, &packets(&inter, 100)[0]),
            Pushed::Frame(Frame { keyframe: None, .. })
        ));
        // Sequence 4 is lost.
        assert_eq!(
            a.push(5, 9000, true, &packets(&inter, 100)[0]),
            Pushed::NeedKeyframe
        );
        assert_eq!(
            a.push(6, 12000, true, &packets(&inter, 100)[0]),
            Pushed::NeedKeyframe
        );
        assert!(matches!(
            a.push(7, 15000, true, &key[0]),
            Pushed::Frame(Frame {
                keyframe: Some((320, 240)),
                ..
            })
        ));
        // A repeat of a packet already taken changes nothing.
        assert_eq!(a.push(7, 15000, true, &key[0]), Pushed::Nothing);
        // The keyframe that follows a gap directly is kept: it mends it.
        assert!(matches!(
            a.push(9, 18000, true, &key[0]),
            Pushed::Frame(Frame {
                keyframe: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn garbage_is_a_loss_not_a_panic() {
        let mut a = Assembler::new();
        for (i, p) in [&[][..], &[0x80], &[0x90, 0x80], &[0x90, 0xff, 0xff]]
            .iter()
            .enumerate()
        {
            assert_eq!(a.push(i as u64, 0, true, p), Pushed::NeedKeyframe);
        }
        assert_eq!(keyframe_size(&[0x00; 9]), None);
    }
}
