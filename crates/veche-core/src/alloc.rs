//! How a viewer's downlink is shared among the videos it shows: from the bandwidth
//! estimate toward it (str0m's, from the viewer's transport-wide feedback), the layer each
//! tile needs ([`crate::want_for`]) and priority (a screen share first, then the speakers'
//! cameras, then the others): audio is set aside first and never cut; then each tile that
//! is seen gets its smallest layer (a picture without layers, a screen share or a camera
//! another node carries, as it is), in priority order, while the estimate carries it: a
//! screen share and the first [`ALWAYS_SHOWN`] pictures always (a small meeting never loses
//! a picture to an estimate that dips on a busy machine), the rest turned off
//! (`Bandwidth`) once the link is full, since what a link cannot carry would only wait in
//! the pacer's queue and arrive seconds late; what is left goes to larger layers, in
//! priority order, one step at a time, up to what each tile needs. Pure: the core calls it
//! with what it knows.

use crate::layers::{Layer, Layers, Want};

/// This many pictures (the first in priority) come whatever the estimate says: every tile
/// of a small meeting, the first few of a class.
pub const ALWAYS_SHOWN: usize = 6;

/// One video a viewer receives, as the allocation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Video {
    /// Lower goes first (0: a screen share).
    pub priority: u8,
    /// What its tile needs.
    pub cap: Want,
    /// The layers its publisher sends; none for a video without layers.
    pub layers: Layers,
    /// Bits per second of each layer (of the one picture, for a video without layers, at
    /// index 0).
    pub rates: [u64; 3],
}

/// Why a viewer gets what it gets of a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// What its tile needs (or no estimate yet).
    View,
    /// The tile is not seen.
    Hidden,
    /// Less than the tile needs: the viewer's link has no room for more.
    Bandwidth,
}

impl Reason {
    /// Its name, as in JSON and in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::View => "view",
            Reason::Hidden => "hidden",
            Reason::Bandwidth => "bandwidth",
        }
    }
}

/// Share `budget` bits per second (after `audio`) among `videos`: what each gets, and
/// why, in the same order.
pub fn allocate(budget: u64, audio: u64, videos: &[Video]) -> Vec<(Want, Reason)> {
    let mut budget = budget.saturating_sub(audio);
    let mut order: Vec<usize> = (0..videos.len()).collect();
    order.sort_by_key(|&i| videos[i].priority);
    let mut out = vec![(Want::Off, Reason::Hidden); videos.len()];
    // Each video's steps, smallest first: its layers up to what the tile needs.
    let steps = |v: &Video| -> Vec<(Layer, u64)> {
        let Want::Layer(cap) = v.cap else {
            return Vec::new();
        };
        if v.layers == Layers::NONE {
            return vec![(Layer::TOP, v.rates[0])];
        }
        let mut s: Vec<(Layer, u64)> = v
            .layers
            .iter()
            .filter(|l| *l <= cap)
            .map(|l| (l, v.rates[usize::from(l.index())]))
            .collect();
        if s.is_empty() {
            // The tile needs less than the smallest layer sent: that one.
            s.extend(
                v.layers
                    .iter()
                    .take(1)
                    .map(|l| (l, v.rates[usize::from(l.index())])),
            );
        }
        s
    };
    let mut chosen: Vec<Option<usize>> = vec![None; videos.len()];
    // First the smallest layer of each while the link carries it; a screen share (what the
    // class looks at) and the first few pictures whatever it costs.
    let mut pictures = 0;
    for &i in &order {
        let s = steps(&videos[i]);
        let Some(&(_, rate)) = s.first() else {
            continue;
        };
        if rate > budget && pictures >= ALWAYS_SHOWN && videos[i].priority > 0 {
            out[i] = (Want::Off, Reason::Bandwidth);
            continue;
        }
        budget = budget.saturating_sub(rate);
        chosen[i] = Some(0);
        pictures += 1;
    }
    // Then larger layers, in priority order, each as far as it fits.
    for &i in &order {
        let s = steps(&videos[i]);
        let Some(mut at) = chosen[i] else {
            continue;
        };
        while let Some(&(_, next)) = s.get(at + 1) {
            let more = next.saturating_sub(s[at].1);
            if more > budget {
                break;
            }
            budget -= more;
            at += 1;
        }
        chosen[i] = Some(at);
        let full = at + 1 == s.len();
        out[i] = (
            Want::Layer(s[at].0),
            if full {
                Reason::View
            } else {
                Reason::Bandwidth
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Layer = Layer::ALL[0];
    const H: Layer = Layer::ALL[1];
    const F: Layer = Layer::ALL[2];

    fn camera(cap: Want) -> Video {
        Video {
            priority: 1,
            cap,
            layers: Layers::ALL,
            rates: [150_000, 500_000, 1_500_000],
        }
    }

    #[test]
    fn with_room_every_tile_gets_what_it_needs() {
        let v = [
            camera(Want::Layer(F)),
            camera(Want::Layer(H)),
            camera(Want::Off),
        ];
        assert_eq!(
            allocate(10_000_000, 128_000, &v),
            [
                (Want::Layer(F), Reason::View),
                (Want::Layer(H), Reason::View),
                (Want::Off, Reason::Hidden)
            ]
        );
    }

    #[test]
    fn the_smallest_layer_of_each_comes_before_a_larger_one_of_any() {
        // 128k of voices, then 450k: three cameras at q, not one at h.
        let v = [
            camera(Want::Layer(F)),
            camera(Want::Layer(F)),
            camera(Want::Layer(F)),
        ];
        let got = allocate(578_000, 128_000, &v);
        assert!(
            got.iter()
                .all(|(w, r)| *w == Want::Layer(Q) && *r == Reason::Bandwidth),
            "{got:?}"
        );
        // More room goes to the first in priority, one step at a time.
        let got = allocate(578_000 + 350_000, 128_000, &v);
        assert_eq!(got[0].0, Want::Layer(H));
        assert_eq!(got[1].0, Want::Layer(Q));
    }

    #[test]
    fn the_voices_come_first_and_a_screen_share_before_the_cameras() {
        let screen = Video {
            priority: 0,
            cap: Want::Layer(F),
            layers: Layers::NONE,
            rates: [800_000, 0, 0],
        };
        let v = [camera(Want::Layer(F)), screen];
        let got = allocate(1_100_000, 128_000, &v);
        assert_eq!(
            got[1],
            (Want::Layer(Layer::TOP), Reason::View),
            "the screen fits"
        );
        assert_eq!(
            got[0],
            (Want::Layer(Q), Reason::Bandwidth),
            "the camera gets its smallest layer only"
        );
        // Less than the voices: a small meeting's tiles still get their smallest pictures.
        let got = allocate(100_000, 128_000, &v);
        assert_eq!(
            got,
            [
                (Want::Layer(Q), Reason::Bandwidth),
                (Want::Layer(Layer::TOP), Reason::View)
            ]
        );
        let hidden = Video {
            cap: Want::Off,
            ..screen
        };
        assert_eq!(
            allocate(100_000, 128_000, &[hidden]),
            [(Want::Off, Reason::Hidden)]
        );
        assert!(allocate(1_000_000, 0, &[]).is_empty());
    }

    #[test]
    fn past_what_the_link_carries_the_lowest_priority_pictures_are_off() {
        // A class: 128k of voices, then room for eight smallest layers (150k each) of ten
        // cameras: the speaker's and the next seven in order; the last two are off.
        let n = 10;
        let mut v = vec![camera(Want::Layer(F)); n];
        for c in &mut v {
            c.priority = 2;
        }
        v[n - 1].priority = 1; // a speaker, last in the list, first in priority
        let room = 128_000 + 8 * 150_000 + 10_000;
        let got = allocate(room, 128_000, &v);
        let off: Vec<usize> = (0..n).filter(|&i| got[i].0 == Want::Off).collect();
        assert_eq!(off, [7, 8], "{got:?}");
        assert!(got
            .iter()
            .all(|(w, r)| *r == Reason::Bandwidth && matches!(w, Want::Off | Want::Layer(Q))));
        // A hidden tile costs nothing and is not in the way.
        v[0].cap = Want::Off;
        let got = allocate(room, 128_000, &v);
        assert_eq!(got[0], (Want::Off, Reason::Hidden));
        assert_eq!((0..n).filter(|&i| got[i].0 == Want::Layer(Q)).count(), 8);
        // However short the link, the first few pictures come (a small meeting keeps all).
        let got = allocate(0, 128_000, &v[1..]);
        assert_eq!(
            got.iter().filter(|(w, _)| *w == Want::Layer(Q)).count(),
            ALWAYS_SHOWN
        );
        assert_eq!(
            got[n - 2],
            (Want::Layer(Q), Reason::Bandwidth),
            "the speaker"
        );
    }

    #[test]
    fn a_tile_smaller_than_the_smallest_layer_still_gets_it() {
        let v = Video {
            layers: Layers::NONE.with(H).with(F),
            ..camera(Want::Layer(Q))
        };
        assert_eq!(
            allocate(10_000_000, 0, &[v]),
            [(Want::Layer(H), Reason::View)]
        );
    }
}
