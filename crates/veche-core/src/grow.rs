//! When the streams a viewer's link held small may grow again.
//!
//! A stream made smaller for lack of bandwidth grows again only after a wait, and one
//! layer at a time ([`STEP`] apart). A growth that the link undoes within [`PROVE`] did not
//! fit: the next wait is twice as long, up to [`WAIT_MOST`], unless the estimate has since
//! grown a quarter above the one it failed at (the path opened). A growth that lasts makes
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
    /// None grows before this.
    after: Option<Instant>,
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
        let waiting = self.after.is_some_and(|at| now < at);
        let opened = self
            .failed_at
            .zip(estimate)
            .is_some_and(|(failed, e)| e >= failed / 4 * 5);
        !waiting || opened
    }

    /// The link made a stream smaller.
    pub fn shrank(&mut self, now: Instant) {
        if let Some((at, estimate)) = self.grown.take() {
            if now.saturating_duration_since(at) < PROVE {
                self.wait = (self.wait * 2).min(WAIT_MOST);
                self.failed_at = estimate;
            }
        }
        self.after = Some(now + self.wait);
    }

    /// A stream the link held small grew a layer, at `estimate`.
    pub fn grew(&mut self, estimate: Option<u64>, now: Instant) {
        self.grown = Some((now, estimate));
        self.after = Some(now + STEP);
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
        g.shrank(at(0));
        assert!(!g.may_grow(Some(600_000), at(4)));
        assert!(g.may_grow(Some(600_000), at(5)), "the first wait");
        // A step undone 2 s later: 10 s, then 20, then 40, and no more.
        let mut t = 5;
        for wait in [10, 20, 40, 40] {
            g.grew(Some(600_000), at(t));
            assert!(!g.may_grow(Some(600_000), at(t + 1)), "one step at a time");
            g.shrank(at(t + 2));
            assert!(!g.may_grow(Some(600_000), at(t + 2 + wait - 1)), "{wait}");
            assert!(g.may_grow(Some(600_000), at(t + 2 + wait)), "{wait}");
            t += 2 + wait;
        }
        // While waiting, an estimate a quarter above the failed one may grow at once.
        g.grew(Some(600_000), at(t));
        g.shrank(at(t + 1));
        assert!(!g.may_grow(Some(740_000), at(t + 2)));
        assert!(g.may_grow(Some(750_000), at(t + 2)));
        // A step that lasts: the next shrink waits the first wait again.
        g.grew(Some(600_000), at(t + 50));
        g.settle(at(t + 60));
        g.shrank(at(t + 70));
        assert!(g.may_grow(Some(600_000), at(t + 75)));
    }
}
