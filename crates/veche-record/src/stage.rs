//! Who is on the recording's picture: a screen share when there is one (the newest), else the
//! camera of whoever speaks, from the audio level each voice packet carries (RFC 6464, no
//! decoding), held for a while so the picture does not flicker between two voices.

use std::collections::HashMap;

/// A voice is speaking when its level is above this, in -dBov (0 loudest, 127 silence).
const SPEAKING_DBOV: u8 = 55;
/// How long speech counts, in ms (the time constant of the activity average).
const WINDOW_MS: f32 = 1500.0;
/// How much more active a voice must be than the one on the picture to take it.
const MARGIN: f32 = 0.2;
/// A video track with no packet for this long is not sending (a screen slot nobody
/// shares, a camera turned off): not a picture to show.
const LIVE_MS: u64 = 1_500;

/// What a participant publishes on video, by the ids of the tracks.
#[derive(Debug, Default, Clone)]
struct Person {
    camera: Option<u64>,
    screen: Option<(u64, u64)>, // (track, order added)
    /// Average of "speaking" over the last `WINDOW_MS`, 0 to 1.
    activity: f32,
    heard_ms: u64,
}

/// Chooses the stage. Sans-IO: times in ms since the recording started.
#[derive(Debug, Default)]
pub struct Stage {
    people: HashMap<u64, Person>,
    /// Video track → when its last packet came, ms.
    seen: HashMap<u64, u64>,
    speaker: Option<u64>,
    added: u64,
}

/// Kind of video a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Video {
    /// A camera.
    Camera,
    /// A screen share.
    Screen,
}

impl Stage {
    /// `participant` publishes video `track`.
    pub fn add(&mut self, participant: u64, track: u64, kind: Video) {
        self.added += 1;
        self.seen.insert(track, 0);
        let p = self.people.entry(participant).or_default();
        match kind {
            Video::Camera => p.camera = Some(track),
            Video::Screen => p.screen = Some((track, self.added)),
        }
    }

    /// A packet of video `track` came at `now_ms`: it is sending.
    pub fn seen(&mut self, track: u64, now_ms: u64) {
        if let Some(t) = self.seen.get_mut(&track) {
            *t = now_ms;
        }
    }

    /// Video `track` stopped.
    pub fn remove(&mut self, track: u64) {
        self.seen.remove(&track);
        for p in self.people.values_mut() {
            if p.camera == Some(track) {
                p.camera = None;
            }
            if p.screen.is_some_and(|(t, _)| t == track) {
                p.screen = None;
            }
        }
        self.people
            .retain(|_, p| p.camera.is_some() || p.screen.is_some() || p.heard_ms > 0);
    }

    /// `participant`'s voice stopped: forget them unless they still show something.
    pub fn quiet(&mut self, participant: u64) {
        if self
            .people
            .get(&participant)
            .is_some_and(|p| p.camera.is_none() && p.screen.is_none())
        {
            self.people.remove(&participant);
        }
    }

    /// A voice packet of `participant` at `now_ms` with audio level `level` (-dBov).
    pub fn heard(&mut self, participant: u64, level: Option<u8>, now_ms: u64) {
        let p = self.people.entry(participant).or_default();
        let speaking = level.is_some_and(|l| l <= SPEAKING_DBOV);
        let dt = now_ms.saturating_sub(p.heard_ms).min(1000) as f32;
        let k = (dt / WINDOW_MS).min(1.0);
        p.activity += (f32::from(u8::from(speaking)) - p.activity) * k;
        p.heard_ms = now_ms;
    }

    /// The track on the picture at `now_ms`: the newest screen share, else the speaker's
    /// camera (the last one to speak clearly more than the one before), else any camera;
    /// only tracks that are sending.
    pub fn choose(&mut self, now_ms: u64) -> Option<u64> {
        let seen = &self.seen;
        let live = |t: &u64| {
            seen.get(t)
                .is_some_and(|at| *at > 0 && now_ms.saturating_sub(*at) <= LIVE_MS)
        };
        if let Some((track, _)) = self
            .people
            .values()
            .filter_map(|p| p.screen)
            .filter(|(t, _)| live(t))
            .max_by_key(|(_, order)| *order)
        {
            return Some(track);
        }
        // A voice not heard for a while has gone quiet.
        let activity = |p: &Person| {
            if now_ms.saturating_sub(p.heard_ms) > WINDOW_MS as u64 {
                0.0
            } else {
                p.activity
            }
        };
        let current = self
            .speaker
            .and_then(|s| self.people.get(&s))
            .filter(|p| p.camera.is_some_and(|t| live(&t)))
            .map(activity);
        let best = self
            .people
            .iter()
            .filter(|(_, p)| p.camera.is_some_and(|t| live(&t)))
            .max_by(|a, b| activity(a.1).total_cmp(&activity(b.1)).then(b.0.cmp(a.0)))
            .map(|(id, p)| (*id, activity(p)));
        match (current, best) {
            (Some(c), Some((id, a))) if a > c + MARGIN => self.speaker = Some(id),
            (None, Some((id, _))) => self.speaker = Some(id),
            _ => {}
        }
        self.speaker
            .and_then(|s| self.people.get(&s))
            .and_then(|p| p.camera)
            .filter(|t| live(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speak(s: &mut Stage, who: u64, loud: bool, from: u64, to: u64) {
        for t in (from..to).step_by(20) {
            s.heard(who, Some(if loud { 30 } else { 127 }), t);
        }
    }

    #[test]
    fn the_speaker_takes_the_picture_and_a_screen_share_takes_it_from_them() {
        let mut s = Stage::default();
        assert_eq!(s.choose(0), None, "nothing to show");
        s.add(1, 10, Video::Camera);
        s.add(2, 20, Video::Camera);
        // Ada's screen slot sends nothing: not a picture.
        s.add(1, 11, Video::Screen);
        assert_eq!(s.choose(0), None, "nothing sends yet");
        let sending = |s: &mut Stage, at: u64| {
            s.seen(10, at);
            s.seen(20, at);
        };
        sending(&mut s, 1);
        assert!(
            matches!(s.choose(1), Some(10 | 20)),
            "a camera before anyone speaks"
        );
        speak(&mut s, 1, true, 0, 3000);
        speak(&mut s, 2, false, 0, 3000);
        sending(&mut s, 3000);
        assert_eq!(s.choose(3000), Some(10), "Ada speaks");
        // Bob answers: after a moment (not at his first word) the picture is his.
        speak(&mut s, 1, false, 3000, 3100);
        speak(&mut s, 2, true, 3000, 3100);
        sending(&mut s, 3100);
        assert_eq!(s.choose(3100), Some(10), "held through a short word");
        speak(&mut s, 1, false, 3100, 6000);
        speak(&mut s, 2, true, 3100, 6000);
        sending(&mut s, 6000);
        assert_eq!(s.choose(6000), Some(20), "Bob speaks");
        // A screen share is on the picture whoever speaks, until it stops sending.
        s.seen(11, 6000);
        assert_eq!(s.choose(6000), Some(11));
        sending(&mut s, 9000);
        assert_eq!(s.choose(9000), Some(20), "the share stopped sending");
        s.seen(11, 9000);
        s.remove(11);
        assert_eq!(s.choose(9000), Some(20));
        // The speaker's camera goes: someone else's camera.
        s.remove(20);
        assert_eq!(s.choose(9000), Some(10));
    }
}
