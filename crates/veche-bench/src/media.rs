//! Synthetic media: what a camera and a microphone would put on the wire, minus the codec.
//!
//! Video is VP8 RTP (RFC 7741): a 4-byte payload descriptor with a 15-bit picture id, as
//! Chrome sends it, then a VP8 frame whose first bytes are a real frame tag (and, on
//! keyframes, the start code and size), so SFUs that look for keyframes find them. Every
//! frame and every audio packet carries the sender's clock (microseconds since the run's
//! start) right after those bytes, so any receiver in the process can measure one-way delay.

use std::time::Duration;

/// Largest RTP payload we put in one packet (libwebrtc stays near 1200 bytes on the wire).
pub const MAX_PAYLOAD: usize = 1100;
/// Opus at ~32 kbit/s: 20 ms frames of about 80 bytes.
pub const AUDIO_BYTES: usize = 80;
/// Audio packets per second.
pub const AUDIO_RATE: u32 = 50;
/// Video frames per second.
pub const FPS: u32 = 30;

/// How a synthetic publisher sends.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Video bits per second (payload).
    pub video_bps: u32,
    /// A keyframe this often.
    pub keyframe_every: Duration,
    /// The camera in three simulcast layers ([`LAYERS`]), as the page sends it, and a
    /// view of gallery-sized tiles from every receiver.
    pub simulcast: bool,
}

/// A simulcast camera's layers, smallest first: rid and the share of `video_bps` each sends
/// (the page's caps, 120 / 500 / 1500 kbit/s, in proportion).
pub const LAYERS: [(&str, u32); 3] = [("q", 12), ("h", 3), ("f", 1)];

impl Load {
    /// The load of one layer that sends `1 / divisor` of the whole.
    pub fn layer(&self, divisor: u32) -> Load {
        Load {
            video_bps: self.video_bps / divisor.max(1),
            ..*self
        }
    }

    /// Frame sizes that average out to the bitrate with a keyframe 5× a delta frame.
    pub fn frame_bytes(&self, keyframe: bool) -> usize {
        let per_frame = self.video_bps as f64 / 8.0 / FPS as f64;
        let frames = (self.keyframe_every.as_secs_f64() * FPS as f64).max(1.0);
        let delta = per_frame * frames / (frames + 4.0);
        let n = if keyframe { delta * 5.0 } else { delta };
        (n as usize).max(20)
    }
}

/// One VP8 frame split into RTP payloads of near-equal size, as libwebrtc does.
/// `picture_id` is the 15-bit picture id; `sent_us` goes into the frame.
pub fn vp8_packets(bytes: usize, keyframe: bool, picture_id: u16, sent_us: u64) -> Vec<Vec<u8>> {
    let mut frame = Vec::with_capacity(bytes);
    // Frame tag (RFC 6386 9.1): bit 0 is 0 for a keyframe; version 0, show_frame 1,
    // first partition size in the upper 19 bits.
    let part = ((bytes as u32).min(0x7FFFF)) << 5;
    let tag = part | (1 << 4) | u32::from(!keyframe);
    frame.extend_from_slice(&tag.to_le_bytes()[..3]);
    if keyframe {
        // Start code, then 640x360 with no scaling.
        frame.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
    }
    frame.extend_from_slice(&sent_us.to_be_bytes());
    // Filler that is not all zeros (nothing compresses or special-cases it).
    let mut x = (picture_id as u32).wrapping_mul(2_654_435_761) | 1;
    while frame.len() < bytes {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        frame.push(x as u8);
    }
    let count = frame.len().div_ceil(MAX_PAYLOAD - 4);
    let chunk = frame.len().div_ceil(count);
    frame
        .chunks(chunk)
        .enumerate()
        .map(|(i, c)| {
            let mut p = Vec::with_capacity(c.len() + 4);
            // X=1, S on the first packet, partition index 0; I=1; M=1 and 15-bit picture id.
            p.push(0x80 | if i == 0 { 0x10 } else { 0 });
            p.push(0x80);
            p.push(0x80 | ((picture_id >> 8) as u8 & 0x7F));
            p.push(picture_id as u8);
            p.extend_from_slice(c);
            p
        })
        .collect()
}

/// An audio payload of Opus size carrying the send time.
pub fn audio_payload(sent_us: u64, seq: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(AUDIO_BYTES);
    p.extend_from_slice(&sent_us.to_be_bytes());
    // Opus sizes vary a little with the signal.
    let len = AUDIO_BYTES - 8 + (seq % 7) as usize;
    p.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seq as u8)));
    p
}

/// What a received VP8 RTP payload starts: `Some((keyframe, sent_us))` for the first packet
/// of a frame, `None` for continuation packets or anything malformed.
pub fn vp8_frame_start(payload: &[u8]) -> Option<(bool, u64)> {
    let b0 = *payload.first()?;
    let start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
    if !start {
        return None;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *payload.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            // Picture id: 7 or 15 bits.
            i += if *payload.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID / KEYIDX
        }
    }
    let frame = payload.get(i..)?;
    let keyframe = *frame.first()? & 1 == 0;
    let at = if keyframe { 10 } else { 3 };
    let ts = frame.get(at..at + 8)?;
    Some((keyframe, u64::from_be_bytes(ts.try_into().ok()?)))
}

/// The send time in an audio payload.
pub fn audio_sent(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_evenly() {
        for (bytes, key) in [(2400, false), (12000, true), (30, false)] {
            let packets = vp8_packets(bytes, key, 300, 123_456);
            let total: usize = packets.iter().map(|p| p.len() - 4).sum();
            assert_eq!(total, bytes);
            assert!(packets.iter().all(|p| p.len() <= MAX_PAYLOAD));
            assert_eq!(vp8_frame_start(&packets[0]), Some((key, 123_456)));
            assert!(packets[1..].iter().all(|p| vp8_frame_start(p).is_none()));
        }
        let load = Load {
            video_bps: 600_000,
            keyframe_every: Duration::from_secs(3),
            simulcast: false,
        };
        let per_3s = load.frame_bytes(true) + 89 * load.frame_bytes(false);
        assert!((per_3s as f64 - 225_000.0).abs() < 500.0, "{per_3s}");
        assert_eq!(audio_sent(&audio_payload(77, 3)), Some(77));
    }
}
