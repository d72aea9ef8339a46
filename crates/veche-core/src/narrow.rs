//! How many of a camera's layers a node link may carry, from the loss on its path.
//!
//! A link has no bandwidth estimate of its own: str0m paces a connection's video to its
//! estimate, and on a loaded LAN a link's estimate fell far below what it must carry
//! (`docs/simulcast.md`). What the other node reports instead is which packets it got (its
//! transport-wide feedback, a fraction lost each second). A path that loses steadily is
//! narrower than what the link sends: the link stops carrying the top layer of every
//! camera, then the next (never the smallest: a picture of everyone first, and voices are
//! never touched). After a while it tries one layer wider again; a try that brings the loss
//! back waits twice as long before the next, up to [`WAIT_MOST`].
//!
//! The other node's viewers of a layer that stops coming take another at its next keyframe
//! (`Viewers::overdue`), as when a browser's encoder drops a layer.

use std::time::{Duration, Instant};

use crate::layers::{Layer, Layers};

/// A second with at least this share lost counts as lossy.
const LOSSY: f32 = 0.05;
/// Below this share, clean: a wider try may start.
const CLEAN: f32 = 0.02;
/// Lossy seconds in a row before a layer is dropped (one is a burst); during a wider try,
/// one is enough (it is the likely cause, and every lossy second costs voices).
const LOSSY_RUN: u8 = 2;
/// After a narrowing, loss is not judged this long (what was queued still drains).
const SETTLE: Duration = Duration::from_secs(2);
/// The first wait before a wider try, and the longest.
const WAIT_FIRST: Duration = Duration::from_secs(5);
const WAIT_MOST: Duration = Duration::from_secs(40);
/// A wider try that loses within this long failed: the next waits twice as long. One that
/// lasts this long clean makes the next wait the first again.
const PROVE: Duration = Duration::from_secs(10);

/// One node link's cap on the layers it carries.
#[derive(Debug, Clone)]
pub struct Narrowing {
    /// The largest layer carried, `None`: no cap.
    cap: Option<Layer>,
    lossy_run: u8,
    narrowed: Option<Instant>,
    widened: Option<Instant>,
    retry_at: Option<Instant>,
    wait: Duration,
}

impl Default for Narrowing {
    fn default() -> Self {
        Self {
            cap: None,
            lossy_run: 0,
            narrowed: None,
            widened: None,
            retry_at: None,
            wait: WAIT_FIRST,
        }
    }
}

impl Narrowing {
    /// The largest layer the link may carry now; `None`: every layer asked for.
    pub fn cap(&self) -> Option<Layer> {
        self.cap
    }

    /// What of `asked` the link carries: the layers up to the cap, or the cap's own layer
    /// in place of larger ones (the other node's viewers of those take it at its keyframe).
    pub fn apply(&self, asked: Layers) -> Layers {
        let Some(cap) = self.cap else {
            return asked;
        };
        let kept = asked
            .iter()
            .filter(|l| *l <= cap)
            .fold(Layers::NONE, Layers::with);
        if kept == Layers::NONE && asked != Layers::NONE {
            Layers::NONE.with(cap)
        } else {
            kept
        }
    }

    /// The share of the link's packets the other node did not get over the last second
    /// (`None`: nothing was reported). Returns whether the cap changed.
    pub fn report(&mut self, loss: Option<f32>, now: Instant) -> bool {
        let settling = self
            .narrowed
            .is_some_and(|at| now.saturating_duration_since(at) < SETTLE);
        let Some(loss) = loss.filter(|_| !settling) else {
            return false;
        };
        if loss >= LOSSY {
            self.lossy_run = self.lossy_run.saturating_add(1);
        } else {
            self.lossy_run = 0;
        }
        let trying = self
            .widened
            .is_some_and(|at| now.saturating_duration_since(at) < PROVE);
        if self.lossy_run >= LOSSY_RUN || (trying && self.lossy_run > 0) {
            self.lossy_run = 0;
            let narrower = match self.cap {
                None => Some(Layer::ALL[1]),
                Some(l) if l > Layer::ALL[0] => Some(Layer::ALL[usize::from(l.index()) - 1]),
                Some(_) => return false,
            };
            // A wider try that did not last: wait longer before the next.
            if trying {
                self.wait = (self.wait * 2).min(WAIT_MOST);
            }
            self.widened = None;
            self.cap = narrower;
            self.narrowed = Some(now);
            self.retry_at = Some(now + self.wait);
            return true;
        }
        if loss >= CLEAN {
            return false;
        }
        if let Some(at) = self.widened {
            if now.saturating_duration_since(at) >= PROVE {
                self.widened = None;
                if self.cap.is_none() {
                    self.wait = WAIT_FIRST;
                }
            }
        }
        let due = self.retry_at.is_some_and(|at| now >= at);
        let Some(cap) = self.cap.filter(|_| due) else {
            return false;
        };
        self.cap = (cap < Layer::TOP)
            .then(|| Layer::ALL[usize::from(cap.index()) + 1])
            .filter(|l| *l < Layer::TOP);
        self.widened = Some(now);
        self.retry_at = self.cap.map(|_| now + self.wait);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: &mut Narrowing, t0: Instant, secs: std::ops::Range<u64>, loss: f32) -> Vec<u64> {
        secs.filter(|s| n.report(Some(loss), t0 + Duration::from_secs(*s)))
            .collect()
    }

    #[test]
    fn steady_loss_drops_the_top_layer_then_the_next_never_the_smallest() {
        let t0 = Instant::now();
        let mut n = Narrowing::default();
        assert_eq!(n.apply(Layers::ALL), Layers::ALL, "no cap at first");
        // One lossy second is a burst.
        assert!(!n.report(Some(0.3), t0));
        assert!(n.report(Some(0.3), t0 + Duration::from_secs(1)));
        assert_eq!(n.cap(), Some(Layer::ALL[1]));
        assert_eq!(n.apply(Layers::ALL).rids(), ["q", "h"]);
        assert_eq!(
            n.apply(Layers::NONE.with(Layer::TOP)).rids(),
            ["h"],
            "in place of a larger one"
        );
        assert_eq!(
            n.apply(Layers::NONE),
            Layers::NONE,
            "nothing asked, nothing carried"
        );
        // Loss while it settles is not judged; then two more lossy seconds drop h.
        assert_eq!(run(&mut n, t0, 2..6, 0.3), [4]);
        assert_eq!(n.apply(Layers::ALL).rids(), ["q"]);
        assert_eq!(
            run(&mut n, t0, 6..9, 0.3),
            Vec::<u64>::new(),
            "q is always kept"
        );
    }

    #[test]
    fn a_wider_try_that_loses_waits_twice_as_long_and_a_clean_path_is_back_in_full() {
        let t0 = Instant::now();
        let mut n = Narrowing::default();
        assert_eq!(run(&mut n, t0, 0..2, 0.3), [1], "capped at h");
        // Clean: tried wider after the first wait.
        assert_eq!(run(&mut n, t0, 2..7, 0.0), [6]);
        assert_eq!(n.cap(), None);
        // That brought loss back: capped again at its first lossy second, and the next try
        // waits 10 s.
        assert_eq!(run(&mut n, t0, 7..10, 0.3), [7]);
        assert_eq!(run(&mut n, t0, 10..20, 0.0), [17]);
        assert_eq!(run(&mut n, t0, 20..23, 0.3), [20]);
        assert_eq!(run(&mut n, t0, 23..43, 0.0), [40], "then 20 s");
        // This one lasts: clean 10 s on, the next narrowing waits the first 5 s again.
        assert_eq!(run(&mut n, t0, 43..60, 0.0), Vec::<u64>::new());
        assert_eq!(run(&mut n, t0, 60..62, 0.3), [61]);
        assert_eq!(run(&mut n, t0, 62..67, 0.0), [66]);
        // Some loss that is neither lossy nor clean changes nothing.
        let mut m = Narrowing::default();
        assert_eq!(run(&mut m, t0, 0..10, 0.03), Vec::<u64>::new());
        // Nothing reported changes nothing.
        assert!(!m.report(None, t0 + Duration::from_secs(11)));
    }

    #[test]
    fn widening_goes_one_layer_at_a_time() {
        let t0 = Instant::now();
        let mut n = Narrowing::default();
        assert_eq!(run(&mut n, t0, 0..2, 0.3), [1]);
        assert_eq!(run(&mut n, t0, 3..5, 0.3), [4]);
        assert_eq!(n.cap(), Some(Layer::ALL[0]));
        // q → h after the wait, h → everything one wait later.
        assert_eq!(run(&mut n, t0, 5..20, 0.0), [9, 14]);
        assert_eq!(n.cap(), None);
    }
}
