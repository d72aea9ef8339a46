//! Forwarding RTP packets as they arrive: what one incoming packet is ([`Incoming`], read
//! once for all its subscribers) and how one outgoing stream renumbers it ([`Rewriter`]).
//!
//! Sans-IO and free of str0m's connection state, so it is tested on its own. A subscriber's
//! stream has its own sequence numbers, timestamps and VP8 picture ids, continuous across
//! a change of what feeds it (the publisher restarting its sender, a stretch withheld by a
//! moderator, and next simulcast layers), while the publisher's own losses and reordering
//! keep their places so the subscriber's NACKs and jitter buffer see them as they are.

use std::sync::Arc;
use std::time::Instant;

use str0m::rtp::{Vp8Descriptor, Vp8Patch};

/// One incoming RTP packet, as every subscriber's [`Rewriter`] needs it.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    /// Where the packet's numbering comes from: the publisher's SSRC, and a counter that
    /// moves on after a withheld stretch (the subscriber saw nothing meanwhile).
    pub source: (u32, u32),
    /// The publisher's extended sequence number.
    pub seq: u64,
    /// The publisher's RTP timestamp.
    pub ts: u32,
    /// The codec's clock rate (Hz).
    pub clock: u32,
    pub arrival: Instant,
    pub marker: bool,
    /// Shared by every subscriber, their send queues and retransmission caches.
    pub payload: Arc<[u8]>,
    /// The VP8 payload descriptor, for video.
    pub vp8: Option<Vp8Descriptor>,
}

/// Where one packet goes in a subscriber's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mapped {
    /// Extended, starting below 2^16 (a new receiver starts its SRTP rollover count at 0).
    pub seq: u64,
    pub ts: u32,
    /// Set when the picture ids must be renumbered (after a change of source).
    pub vp8: Option<Vp8Patch>,
    /// The source changed with this packet: the subscriber needs a keyframe of the new one.
    pub switched: bool,
}

/// One subscriber's outgoing stream: the publisher's numbers mapped into its own.
#[derive(Debug, Clone)]
pub(crate) struct Rewriter {
    /// The source of the current segment and its first incoming sequence number: older
    /// packets of it would reuse numbers already sent, so they are dropped.
    segment: Option<(SegmentKey, u64)>,
    /// The highest incoming sequence number of the current segment.
    high: u64,
    /// Sources this stream carried before, with the highest number it took from each: a
    /// straggler of theirs (late, or retransmitted) is dropped rather than switching the
    /// stream back; a newer packet is a real switch back.
    retired: [Option<(SegmentKey, u64)>; 4],
    seq_off: u64,
    ts_off: u32,
    /// Highest outgoing sequence number, and the timestamp and arrival of that packet.
    last: Option<(u64, u32, Instant)>,
    first_seq: u64,
    pic_off: u16,
    tl0_off: u8,
    /// Highest outgoing picture id (15 bits) and TL0PICIDX, for renumbering at a switch.
    last_pic: Option<u16>,
    last_tl0: Option<u8>,
}

const PIC_MASK: u16 = 0x7fff;

/// What a segment's numbers come from: the publisher's SSRC and epoch, and the viewer's
/// stretch.
type SegmentKey = (u32, u32, u32);

impl Rewriter {
    /// A stream whose first packet will be numbered `first_seq` (below 2^15, so the stream
    /// has room before its first wrap and never starts with a rollover).
    pub fn new(first_seq: u16) -> Self {
        Self {
            segment: None,
            high: 0,
            retired: [None; 4],
            seq_off: 0,
            ts_off: 0,
            last: None,
            first_seq: u64::from(first_seq & 0x7fff).max(1),
            pic_off: 0,
            tl0_off: 0,
            last_pic: None,
            last_tl0: None,
        }
    }

    /// Map `p` into this stream, or `None` for a late packet of an earlier segment.
    /// `stretch`: the viewer's own count of resumptions (its video was off meanwhile):
    /// a new one starts a segment as a new source would.
    pub fn map(&mut self, p: &Incoming, stretch: u32) -> Option<Mapped> {
        let mut switched = false;
        let key = (p.source.0, p.source.1, stretch);
        match self.segment {
            Some((source, first)) if source == key => {
                if p.seq < first {
                    return None;
                }
            }
            _ if self
                .retired
                .iter()
                .flatten()
                .any(|(source, high)| *source == key && p.seq <= *high) =>
            {
                return None;
            }
            previous => {
                if let Some((old, _)) = previous {
                    self.retired.rotate_right(1);
                    self.retired[0] = Some((old, self.high));
                }
                self.high = p.seq;
                // A new segment: its first packet follows the last one sent.
                let next = self.last.map_or(self.first_seq, |(s, _, _)| s + 1);
                self.seq_off = next.wrapping_sub(p.seq);
                let ssrc_changed = previous.is_some_and(|((ssrc, _, _), _)| ssrc != p.source.0);
                if let Some((_, ts, at)) = self.last {
                    if ssrc_changed {
                        // Another clock: continue ours by the time that passed.
                        let gap = p.arrival.saturating_duration_since(at).as_secs_f64();
                        let ticks = ((gap * f64::from(p.clock)) as u32).max(1);
                        self.ts_off = ts.wrapping_add(ticks).wrapping_sub(p.ts);
                        self.renumber_pictures(p.vp8.as_ref());
                    }
                    // (The same publisher after a withheld stretch: its clock kept
                    // running, and the jump in timestamps reads as silence.)
                }
                switched = previous.is_some();
                self.segment = Some((key, p.seq));
            }
        }
        self.high = self.high.max(p.seq);
        let seq = p.seq.wrapping_add(self.seq_off);
        let ts = p.ts.wrapping_add(self.ts_off);
        if self.last.is_none_or(|(s, _, _)| seq > s) {
            self.last = Some((seq, ts, p.arrival));
        }
        let vp8 = p.vp8.as_ref().and_then(|d| self.patch(d));
        Some(Mapped {
            seq,
            ts,
            vp8,
            switched,
        })
    }

    /// Picture ids of a new source continue from the last one sent.
    fn renumber_pictures(&mut self, d: Option<&Vp8Descriptor>) {
        let Some(d) = d else { return };
        if let (Some(last), Some(pic)) = (self.last_pic, d.picture_id()) {
            self.pic_off = last.wrapping_add(1).wrapping_sub(pic) & PIC_MASK;
        }
        if let (Some(last), Some(tl0)) = (self.last_tl0, d.tl0_pic_idx()) {
            self.tl0_off = last.wrapping_add(1).wrapping_sub(tl0);
        }
    }

    /// The patch for `d`'s picture id and TL0PICIDX, if they are renumbered; and note what
    /// goes out.
    fn patch(&mut self, d: &Vp8Descriptor) -> Option<Vp8Patch> {
        let pic = d
            .picture_id()
            .map(|p| p.wrapping_add(self.pic_off) & PIC_MASK);
        let tl0 = d.tl0_pic_idx().map(|t| t.wrapping_add(self.tl0_off));
        if let Some(p) = pic {
            let newer = self
                .last_pic
                .is_none_or(|l| p != l && p.wrapping_sub(l) & PIC_MASK < 0x4000);
            if newer {
                self.last_pic = Some(p);
            }
        }
        if tl0.is_some() {
            self.last_tl0 = tl0;
        }
        if self.pic_off == 0 && self.tl0_off == 0 {
            return None;
        }
        let build = |pic: Option<u16>| {
            let mut b = d.patch();
            if let Some(p) = pic {
                b = b.picture_id(p);
            }
            if let Some(t) = tl0 {
                b = b.tl0_pic_idx(t);
            }
            b.build()
        };
        // A 7-bit picture id keeps its width.
        build(pic).or_else(|_| build(pic.map(|p| p & 0x7f))).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn packet(ssrc: u32, epoch: u32, seq: u64, ts: u32, at: Instant) -> Incoming {
        Incoming {
            source: (ssrc, epoch),
            seq,
            ts,
            clock: 90_000,
            arrival: at,
            marker: false,
            payload: Arc::from(&[0u8; 4][..]),
            vp8: None,
        }
    }

    /// A VP8 payload with a 15-bit picture id and a TL0PICIDX.
    fn vp8(pic: u16, tl0: u8) -> Incoming {
        let payload: Vec<u8> = vec![
            0x90, // X, S
            0xe0, // I, L, T
            0x80 | (pic >> 8) as u8,
            pic as u8,
            tl0,
            0x00, // TID, KEYIDX
            0x00,
            0x00,
        ];
        let d = Vp8Descriptor::parse(&payload).expect("descriptor");
        Incoming {
            vp8: Some(d),
            payload: payload.into(),
            ..packet(1, 0, 0, 0, Instant::now())
        }
    }

    #[test]
    fn a_long_running_source_starts_a_new_subscriber_below_the_first_wrap() {
        let t = Instant::now();
        let mut w = Rewriter::new(1000);
        // The publisher is past several wraps (ROC 5).
        let first = w
            .map(&packet(7, 0, 5 * 65_536 + 300, 1234, t), 0)
            .expect("mapped");
        assert_eq!((first.seq, first.ts, first.switched), (1000, 1234, false));
        let next = w
            .map(&packet(7, 0, 5 * 65_536 + 301, 1234 + 3000, t), 0)
            .expect("mapped");
        assert_eq!((next.seq, next.ts), (1001, 4234));
    }

    #[test]
    fn losses_and_reordering_keep_their_places_and_wraps_continue() {
        let t = Instant::now();
        let mut w = Rewriter::new(65_530);
        let seqs: Vec<u64> = [10u64, 12, 11, 20]
            .iter()
            .map(|s| w.map(&packet(7, 0, *s, 0, t), 0).expect("mapped").seq)
            .collect();
        // 0x7fff caps the start: 65_530 & 0x7fff = 32_762.
        assert_eq!(seqs, [32_762, 32_764, 32_763, 32_772]);
        let mut w = Rewriter::new(32_767);
        let mut out = Vec::new();
        for s in 0..40_000u64 {
            out.push(w.map(&packet(7, 0, 100 + s, 0, t), 0).expect("mapped").seq);
        }
        assert!(out.windows(2).all(|p| p[1] == p[0] + 1), "continuous");
        assert!(
            out.last().is_some_and(|s| *s > 65_535),
            "past the wrap: {:?}",
            out.last()
        );
    }

    #[test]
    fn after_a_withheld_stretch_the_stream_continues_without_a_hole() {
        let t = Instant::now();
        let mut w = Rewriter::new(100);
        for s in 0..5 {
            w.map(&packet(7, 0, 1000 + s, 960 * s as u32, t), 0);
        }
        // 500 packets withheld; the epoch moved on.
        let resumed = w.map(&packet(7, 1, 1505, 960 * 505, t), 0).expect("mapped");
        assert_eq!(resumed.seq, 105, "no hole for the receiver to ask for");
        assert_eq!(
            resumed.ts,
            960 * 505,
            "same clock: the gap reads as silence"
        );
        assert!(resumed.switched);
        // A straggler from before the stretch would reuse a number: dropped.
        assert_eq!(w.map(&packet(7, 1, 1004, 0, t), 0), None);
    }

    #[test]
    fn a_straggler_of_an_earlier_source_does_not_switch_the_stream_back() {
        let t = Instant::now();
        let mut w = Rewriter::new(100);
        w.map(&packet(7, 0, 50, 0, t), 0);
        let first = w.map(&packet(8, 0, 9000, 0, t), 0).expect("the new source");
        assert_eq!(
            w.map(&packet(7, 0, 49, 0, t), 0),
            None,
            "a late packet of the old one"
        );
        let next = w
            .map(&packet(8, 0, 9001, 0, t), 0)
            .expect("the new source goes on");
        assert_eq!((next.seq, next.switched), (first.seq + 1, false));
        // A newer packet of the old source is a real switch back, and continues the stream.
        let back = w.map(&packet(7, 0, 51, 0, t), 0).expect("switched back");
        assert_eq!((back.seq, back.switched), (next.seq + 1, true));
    }

    #[test]
    fn a_new_source_continues_the_clock_by_the_time_that_passed() {
        let t = Instant::now();
        let mut w = Rewriter::new(100);
        w.map(&packet(7, 0, 50, 90_000, t), 0);
        let later = t + Duration::from_millis(100);
        let m = w.map(&packet(8, 0, 9000, 5, later), 0).expect("mapped");
        assert_eq!(m.seq, 101);
        assert_eq!(m.ts, 90_000 + 9000, "100 ms at 90 kHz after the last");
        assert!(m.switched);
        let m = w.map(&packet(8, 0, 9001, 3005, later), 0).expect("mapped");
        assert_eq!((m.seq, m.ts), (102, 90_000 + 9000 + 3000));
    }

    #[test]
    fn picture_ids_are_patched_only_after_a_switch_and_then_continue() {
        let t = Instant::now();
        let mut w = Rewriter::new(100);
        let a = Incoming {
            source: (1, 0),
            arrival: t,
            ..vp8(500, 9)
        };
        assert_eq!(
            w.map(&a, 0).expect("mapped").vp8,
            None,
            "one source: untouched"
        );
        let b = Incoming {
            source: (2, 0),
            seq: 7,
            arrival: t,
            ..vp8(20_000, 200)
        };
        let m = w.map(&b, 0).expect("mapped");
        let patch = m.vp8.expect("renumbered after the switch");
        let want = Vp8Descriptor::parse(&b.payload)
            .expect("d")
            .patch()
            .picture_id(501)
            .tl0_pic_idx(10)
            .build()
            .expect("patch");
        assert_eq!(patch, want);
    }
}
