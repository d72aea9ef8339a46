//! When the streams a viewer's link held small may grow again.
//!
//! A stream made smaller for lack of bandwidth grows again only after a wait, and one
//! layer at a time ([`STEP`] apart). A growth that the link undoes within [`PROVE`], with the
//! estimate fallen below the one it was made at, did not fit: the next wait is twice as
//! long, up to [`WAIT_MOST`], unless the estimate has since grown a quarter above the one it
//! failed at (the path opened). A stream made smaller for another's sake at the same
//! estimate (a new speaker, a screen share) is not a failed step. A growth that lasts makes
//! the next wait the first again. Without the doubling, a viewer on a 600 kbit/s link was
//! tried on a larger layer every 5 s, and each try cost keyframes and a second of loss.

use std::time::{Duration, Instant};

/// The first wait after a stream was made smaller, and the longest.
const WAIT_FIRST: Duration = Duration::from_secs(5);
const WAIT_MOST: Duration = Duration::from_secs(40);
/// After one step up, the next only this much later (once it has shown it fits).
const STEP: Duration = Duration::from_secs(2);
/// A growth undone within this long did not fit; one that lasts this long did.
const PROVE: Duration = Duration::from_secs(10);

/// One viewer's growth after its link made streams smaller.
#[derive(Debug, Clone)]
pub struct Growth {
    /// After a stream was made smaller, none grows before this.
    after: Option<Instant>,
    /// After a step up, the next not before this.
    step_at: Option<Instant>,
    wait: Duration,
    /// The last step up: when, at what estimate.
    grown: Option<(Instant, Option<u64>)>,
    /// The estimate the last undone step was made at.
    failed_at: Option<u64>,
}

impl Default for Growth {
    fn default() -> Self {
        Self {
            after: None,
            step_at: None,
            wait: WAIT_FIRST,
            grown: None,
            failed_at: None,
        }
    }
}

impl Growth {
    /// Whether a stream the link holds small may grow a layer now, the estimate being
    /// `estimate`.
    pub fn may_grow(&self, estimate: Option<u64>, now: Instant) -> bool {
        let stepping = self.step_at.is_some_and(|at| now < at);
        let waiting = self.after.is_some_and(|at| now < at);
        let opened = self
            .failed_at
            .zip(estimate)
            .is_some_and(|(failed, e)| e >= failed / 4 * 5);
        !stepping && (!waiting || opened)
    }

    /// The link made a stream smaller, the estimate being `estimate`.
    pub fn shrank(&mut self, estimate: Option<u64>, now: Instant) {
        if let Some((at, grown_at)) = self.grown {
            let recent = now.saturating_duration_since(at) < PROVE;
            let fell = match (estimate, grown_at) {
                (Some(e), Some(g)) => e < g / 20 * 19,
                _ => true,
            };
            if recent && fell {
                self.grown = None;
                self.wait = (self.wait * 2).min(WAIT_MOST);
                self.failed_at = grown_at;
            }
        }
        self.after = Some(now + self.wait);
    }

    /// A stream the link held small grew a layer, at `estimate`.
    pub fn grew(&mut self, estimate: Option<u64>, now: Instant) {
        self.grown = Some((now, estimate));
        self.step_at = Some(now + STEP);
    }

    /// Time passed with nothing made smaller: a step that lasted [`PROVE`] fitted.
    pub fn settle(&mut self, now: Instant) {
        if self
            .grown
            .is_some_and(|(at, _)| now.saturating_duration_since(at) >= PROVE)
        {
            *self = Self::default();
        }
    }

    /// The stage changed (a spotlight): shared out afresh, without waiting.
    pub fn restart(&mut self) {
        self.after = None;
        self.step_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_the_link_undoes_waits_twice_as_long_and_one_that_lasts_resets_the_wait() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut g = Growth::default();
        assert!(g.may_grow(Some(600_000), t0), "nothing shrank yet");
        g.shrank(Some(500_000), at(0));
        assert!(!g.may_grow(Some(600_000), at(4)));
        assert!(g.may_grow(Some(600_000), at(5)), "the first wait");
        // A step undone 2 s later: 10 s, then 20, then 40, and no more.
        let mut t = 5;
        for wait in [10, 20, 40, 40] {
            g.grew(Some(600_000), at(t));
            assert!(!g.may_grow(Some(600_000), at(t + 1)), "one step at a time");
            g.shrank(Some(500_000), at(t + 2));
            assert!(!g.may_grow(Some(600_000), at(t + 2 + wait - 1)), "{wait}");
            assert!(g.may_grow(Some(600_000), at(t + 2 + wait)), "{wait}");
            t += 2 + wait;
        }
        // While waiting, an estimate a quarter above the failed one may grow at once.
        g.grew(Some(600_000), at(t));
        g.shrank(Some(500_000), at(t + 1));
        assert!(!g.may_grow(Some(740_000), at(t + 2)));
        assert!(g.may_grow(Some(750_000), at(t + 2)));
        // A stream made smaller at the estimate its step was made at (another's sake: a
        // new speaker) is no failed step: the wait stays.
        let mut h = Growth::default();
        h.grew(Some(600_000), at(0));
        h.shrank(Some(600_000), at(2));
        assert!(
            h.may_grow(Some(600_000), at(7)),
            "the first wait, not doubled"
        );
        // While the estimate is well above a failed one, still a step each 2 s.
        g.grew(Some(800_000), at(t + 3));
        assert!(!g.may_grow(Some(800_000), at(t + 4)));
        assert!(g.may_grow(Some(800_000), at(t + 5)));
        // A step that lasts: the next shrink waits the first wait again.
        g.grew(Some(600_000), at(t + 50));
        g.settle(at(t + 60));
        g.shrank(Some(500_000), at(t + 70));
        assert!(g.may_grow(Some(600_000), at(t + 75)));
    }
}
