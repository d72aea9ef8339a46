//! Who speaks, from the audio level each packet carries (RFC 6464, no decoding): the node
//! tells everyone, the pages highlight them and bring them to the top of the gallery, and
//! a speaker's camera goes before the others when a viewer's link is short.
//!
//! Sans-IO: levels and the time come in; a meeting's speakers go out when they change, at
//! most every [`EVERY`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::ParticipantId;

/// Louder than this (dBov, 0 the loudest) counts as speech (a quiet room is about −70).
const SPEECH_DBOV: f32 = -50.0;
/// How fast the level follows, per packet (20 ms): it rises within a few packets (a word
/// starts at once) and falls slowly (the pauses between words do not end a speaker).
const RISE: f32 = 0.5;
const FALL: f32 = 0.05;
/// Someone stops being a speaker this long after their last speech.
const HOLD: Duration = Duration::from_millis(800);
/// The meeting's speakers are worked out at most this often.
pub(crate) const EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
struct Voice {
    /// Smoothed level, dBov.
    level: f32,
    last_speech: Option<Instant>,
}

/// One meeting's voices.
#[derive(Debug, Default)]
pub(crate) struct Speakers {
    voices: HashMap<ParticipantId, Voice>,
    /// Who was said to speak, loudest first, and when that was worked out.
    said: Vec<ParticipantId>,
    at: Option<Instant>,
}

impl Speakers {
    /// A packet of `who`'s voice at `dbov` (−127 silence .. 0 loudest).
    pub fn heard(&mut self, who: ParticipantId, dbov: i8, now: Instant) {
        let v = self.voices.entry(who).or_insert(Voice {
            level: -127.0,
            last_speech: None,
        });
        let to = f32::from(dbov);
        v.level += (to - v.level) * if to > v.level { RISE } else { FALL };
        if v.level > SPEECH_DBOV {
            v.last_speech = Some(now);
        }
    }

    /// `who` left or stopped sending its voice.
    pub fn forget(&mut self, who: ParticipantId) {
        self.voices.remove(&who);
    }

    /// Who speaks now, loudest first, if that changed since it was last said and
    /// [`EVERY`] has passed.
    pub fn changed(&mut self, now: Instant) -> Option<Vec<ParticipantId>> {
        if self
            .at
            .is_some_and(|at| now.saturating_duration_since(at) < EVERY)
        {
            return None;
        }
        self.at = Some(now);
        let mut now_speaking: Vec<(ParticipantId, f32)> = self
            .voices
            .iter()
            .filter(|(_, v)| {
                v.last_speech
                    .is_some_and(|t| now.saturating_duration_since(t) < HOLD)
            })
            .map(|(id, v)| (*id, v.level))
            .collect();
        now_speaking.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let ids: Vec<ParticipantId> = now_speaking.into_iter().map(|(id, _)| id).collect();
        // Order alone does not make news: the set does.
        let mut a = ids.clone();
        let mut b = self.said.clone();
        a.sort();
        b.sort();
        if a == b {
            return None;
        }
        self.said = ids.clone();
        Some(ids)
    }

    /// Who was last said to speak, loudest first.
    pub fn speaking(&self) -> &[ParticipantId] {
        &self.said
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_voice_is_a_speaker_while_it_speaks_and_a_little_after() {
        let t = Instant::now();
        let (ada, bob) = (ParticipantId(1), ParticipantId(2));
        let mut s = Speakers::default();
        for i in 0..20u64 {
            let at = t + Duration::from_millis(20 * i);
            s.heard(ada, -20, at);
            s.heard(bob, -90, at);
        }
        assert_eq!(s.changed(t + Duration::from_millis(400)), Some(vec![ada]));
        assert_eq!(s.changed(t + Duration::from_millis(700)), None, "no change");
        // Ada stops: still a speaker for a moment, then not.
        for i in 20..30u64 {
            s.heard(ada, -127, t + Duration::from_millis(20 * i));
        }
        assert_eq!(s.changed(t + Duration::from_millis(1000)), None);
        assert_eq!(s.changed(t + Duration::from_millis(1800)), Some(vec![]));
        // A click (one loud packet) in a quiet room does not make a speaker.
        let mut quiet = Speakers::default();
        quiet.heard(bob, -90, t);
        quiet.heard(bob, -25, t + Duration::from_millis(20));
        for i in 2..10u64 {
            quiet.heard(bob, -90, t + Duration::from_millis(20 * i));
        }
        assert_eq!(quiet.changed(t + Duration::from_millis(300)), None);
        assert!(quiet.speaking().is_empty());
    }

    #[test]
    fn the_loudest_comes_first_and_news_comes_at_most_every_quarter_second() {
        let t = Instant::now();
        let (ada, bob) = (ParticipantId(1), ParticipantId(2));
        let mut s = Speakers::default();
        for i in 0..30u64 {
            let at = t + Duration::from_millis(20 * i);
            s.heard(ada, -40, at);
            s.heard(bob, -10, at);
        }
        assert_eq!(
            s.changed(t + Duration::from_millis(600)),
            Some(vec![bob, ada])
        );
        s.forget(bob);
        assert_eq!(s.changed(t + Duration::from_millis(700)), None, "too soon");
        assert_eq!(s.changed(t + Duration::from_millis(900)), Some(vec![ada]));
    }
}
