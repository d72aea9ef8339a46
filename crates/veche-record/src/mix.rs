//! Every voice mixed into one: each track's Opus packets decoded, laid on one timeline by
//! their RTP timestamps (anchored at their arrival), summed, and encoded again in 20 ms
//! frames. Sans-IO: positions are samples since the recording started, passed in.

use std::collections::{HashMap, VecDeque};

use opus_rs::{Application, OpusDecoder, OpusEncoder};

/// Samples per second.
pub const RATE: u64 = 48_000;
/// Samples in one mixed frame (20 ms).
pub const FRAME: usize = 960;
/// Longest Opus packet, in samples (120 ms).
const MAX_PACKET: usize = 5760;
/// A voice whose timestamps drift this far from its arrival is anchored again (a new source
/// behind the same track, a long pause).
const REANCHOR: i64 = RATE as i64;
/// Most audio kept ahead of what was mixed: a voice timed far ahead is anchored again.
const MAX_AHEAD: usize = 10 * RATE as usize;

/// Why the mixer could not be made.
#[derive(Debug, thiserror::Error)]
#[error("the audio encoder cannot start: {0}")]
pub struct MixError(&'static str);

struct Voice {
    decoder: OpusDecoder,
    /// (RTP timestamp, sample position) of the packet the voice was anchored at.
    anchor: Option<(u32, i64)>,
}

/// Mixes voices into one Opus track.
pub struct Mixer {
    voices: HashMap<u64, Voice>,
    /// Samples from `start` on, summed over the voices.
    pending: VecDeque<f32>,
    /// Position of `pending[0]`: everything before it was encoded.
    start: u64,
    encoder: OpusEncoder,
    pcm: Vec<f32>,
    /// Packets that could not be decoded (counted, skipped).
    pub undecodable: u64,
}

impl std::fmt::Debug for Mixer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mixer")
            .field("voices", &self.voices.len())
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

impl Mixer {
    /// A mixer making mono 48 kHz Opus.
    pub fn new() -> Result<Self, MixError> {
        let mut encoder = OpusEncoder::new(RATE as i32, 1, Application::Voip).map_err(MixError)?;
        encoder.bitrate_bps = 48_000;
        Ok(Self {
            voices: HashMap::new(),
            pending: VecDeque::new(),
            start: 0,
            encoder,
            pcm: vec![0.0; MAX_PACKET],
            undecodable: 0,
        })
    }

    /// Forget voice `track` (it stopped).
    pub fn remove(&mut self, track: u64) {
        self.voices.remove(&track);
    }

    /// Where the next mixed frame starts, in samples.
    pub fn position(&self) -> u64 {
        self.start
    }

    /// One Opus packet of voice `track` with RTP timestamp `ts`, arrived at sample position
    /// `arrival`.
    pub fn push(&mut self, track: u64, ts: u32, payload: &[u8], arrival: u64) {
        let voice = match self.voices.entry(track) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                match OpusDecoder::new(RATE as i32, 1) {
                    Ok(decoder) => v.insert(Voice {
                        decoder,
                        anchor: None,
                    }),
                    Err(_) => {
                        self.undecodable += 1;
                        return;
                    }
                }
            }
        };
        let arrival = arrival as i64;
        let mut at = match voice.anchor {
            Some((ts0, pos0)) => pos0 + i64::from(ts.wrapping_sub(ts0) as i32),
            None => arrival,
        };
        let ahead = at - self.start as i64;
        if voice.anchor.is_none() || (at - arrival).abs() > REANCHOR || ahead > MAX_AHEAD as i64 {
            voice.anchor = Some((ts, arrival));
            at = arrival;
        }
        // A participant's bytes: a decoder bug they trigger costs their voice a packet (and
        // its decoder), not the recording.
        let pcm = &mut self.pcm;
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            voice.decoder.decode(payload, MAX_PACKET, pcm)
        }));
        let n = match decoded {
            Ok(Ok(n)) => n.min(self.pcm.len()),
            Ok(Err(_)) => {
                self.undecodable += 1;
                return;
            }
            Err(_) => {
                self.undecodable += 1;
                self.voices.remove(&track);
                return;
            }
        };
        // Late: what it would add to was mixed already.
        let Ok(offset) = usize::try_from(at - self.start as i64) else {
            return;
        };
        if offset + n > MAX_AHEAD {
            return;
        }
        if self.pending.len() < offset + n {
            self.pending.resize(offset + n, 0.0);
        }
        for (i, s) in self.pcm[..n].iter().enumerate() {
            self.pending[offset + i] += s;
        }
    }

    /// Mix and encode every whole frame that ends at or before sample `upto`, handing each
    /// Opus packet with its starting position to `out`.
    pub fn pull(&mut self, upto: u64, mut out: impl FnMut(u64, &[u8])) {
        let mut frame = [0f32; FRAME];
        let mut packet = [0u8; 1500];
        while self.start + FRAME as u64 <= upto {
            for s in frame.iter_mut() {
                *s = self.pending.pop_front().unwrap_or(0.0).clamp(-1.0, 1.0);
            }
            if let Ok(n) = self.encoder.encode(&frame, FRAME, &mut packet) {
                out(self.start, &packet[..n.min(packet.len())]);
            }
            self.start += FRAME as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 ms Opus packets of a tone at `hz`, as a browser would send them.
    fn tone(hz: f32, frames: usize, amplitude: f32) -> Vec<Vec<u8>> {
        let mut enc = OpusEncoder::new(48_000, 1, Application::Voip).expect("encoder");
        let mut out = Vec::new();
        for f in 0..frames {
            let pcm: Vec<f32> = (0..FRAME)
                .map(|i| {
                    let t = (f * FRAME + i) as f32 / 48_000.0;
                    amplitude * (2.0 * std::f32::consts::PI * hz * t).sin()
                })
                .collect();
            let mut buf = [0u8; 1500];
            let n = enc.encode(&pcm, FRAME, &mut buf).expect("encode");
            out.push(buf[..n].to_vec());
        }
        out
    }

    /// The RMS level of the mixer's output, decoded again.
    fn rms(packets: &[(u64, Vec<u8>)]) -> f32 {
        let mut dec = OpusDecoder::new(48_000, 1).expect("decoder");
        let (mut sum, mut n) = (0f64, 0usize);
        let mut pcm = vec![0f32; MAX_PACKET];
        for (_, p) in packets {
            let k = dec.decode(p, MAX_PACKET, &mut pcm).expect("decode");
            for s in &pcm[..k] {
                sum += f64::from(*s) * f64::from(*s);
            }
            n += k;
        }
        (sum / n.max(1) as f64).sqrt() as f32
    }

    #[test]
    fn two_voices_taking_turns_are_both_heard_and_silence_is_silent() {
        let mut m = Mixer::new().expect("mixer");
        let a = tone(440.0, 50, 0.3);
        let b = tone(660.0, 50, 0.3);
        // Ada speaks for the first second, Bob the next; the third is silent.
        for (i, p) in a.iter().enumerate() {
            m.push(1, 1000 + (i * FRAME) as u32, p, (i * FRAME) as u64);
        }
        for (i, p) in b.iter().enumerate() {
            let at = RATE + (i * FRAME) as u64;
            m.push(2, 77 + (i * FRAME) as u32, p, at);
        }
        let mut out = Vec::new();
        m.pull(3 * RATE, |at, p| out.push((at, p.to_vec())));
        assert_eq!(out.len(), 150, "three seconds of 20 ms frames");
        assert!(out.windows(2).all(|w| w[1].0 == w[0].0 + FRAME as u64));
        let (first, rest) = out.split_at(50);
        let (second, third) = rest.split_at(50);
        // The codec's look-ahead carries the last words a few ms into the silence.
        let (l1, l2, l3) = (rms(first), rms(second), rms(&third[5..]));
        assert!(l1 > 0.1 && l2 > 0.1, "both voices heard: {l1} {l2}");
        assert!(l3 < 0.01, "silence stays silent: {l3}");
    }

    #[test]
    fn a_late_packet_adds_nothing_to_what_was_mixed() {
        let mut m = Mixer::new().expect("mixer");
        m.pull(RATE, |_, _| {});
        let p = tone(440.0, 1, 0.3);
        // Anchored at its arrival (after what was mixed): kept.
        m.push(1, 0, &p[0], RATE);
        let kept: Vec<f32> = m.pending.iter().copied().collect();
        assert_eq!(kept.len(), FRAME);
        // Timed 100 ms before the mixed edge: nothing left to add it to.
        m.push(1, 0u32.wrapping_sub(4800), &p[0], RATE);
        assert_eq!(m.pending.iter().copied().collect::<Vec<_>>(), kept);
        let mut n = 0;
        m.pull(2 * RATE, |_, _| n += 1);
        assert_eq!(n, 50);
    }
}
