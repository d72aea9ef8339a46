//! Recording a meeting into one WebM file: the stage's video as it was sent (a screen share
//! when there is one, else whoever speaks, switched on keyframes, never transcoded) and
//! every voice mixed into one Opus track. Sans-IO: the caller hands in the packets of the
//! meeting's tracks and the time, asks for the keyframes it is told to, and owns the file.

pub mod mix;
pub mod stage;
pub mod vp8;
pub mod webm;

use std::collections::{HashMap, VecDeque};
use std::io::{Seek, Write};

pub use mix::MixError;
pub use webm::WriteError;

use mix::{Mixer, RATE};
use stage::{Stage, Video};
use vp8::{Assembler, Frame, Pushed};
use webm::{Muxer, AUDIO, VIDEO};

/// How far the file trails the meeting: late packets within it still make the mix.
pub const LATENCY_MS: u64 = 300;
/// Longest wait for the first picture before the file is started without one.
const FIRST_PICTURE_MS: u64 = 3_000;
/// Picture size written when no picture came in time.
const DEFAULT_SIZE: (u16, u16) = (640, 360);
/// Shortest time between two keyframe requests for one track.
const ASK_AGAIN_MS: u64 = 1_000;
/// Frames held before the file starts or while they wait for the audio: bounded.
const MAX_QUEUED_FRAMES: usize = 600;

/// What a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A microphone.
    Audio,
    /// A camera.
    Camera,
    /// A screen share.
    Screen,
}

/// One RTP packet of a track, as the node received it.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Extended sequence number.
    pub seq: u64,
    /// RTP timestamp.
    pub ts: u32,
    /// Marker bit (the end of a video frame).
    pub marker: bool,
    /// The payload.
    pub payload: &'a [u8],
    /// The audio level header extension, -dBov (audio only).
    pub audio_level: Option<u8>,
    /// Where its numbering comes from (the publisher's SSRC and sending epoch): a change
    /// starts the track's frames and times afresh.
    pub source: u64,
}

#[derive(Debug)]
struct Track {
    participant: u64,
    kind: Source,
    assembler: Assembler,
    /// (RTP timestamp, ms) of the frame the track's times are anchored at.
    anchor: Option<(u32, u64)>,
    asked_ms: Option<u64>,
    /// The numbering its packets come with.
    source: Option<u64>,
}

/// Why a recording could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The audio encoder would not start.
    #[error(transparent)]
    Mix(#[from] MixError),
    /// The file could not be written (the disk is full, or gone).
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// One recording. Times are ms since it started.
pub struct Recorder<W: Write + Seek> {
    tracks: HashMap<u64, Track>,
    stage: Stage,
    on_stage: Option<u64>,
    /// Chosen for the stage, waiting for its keyframe.
    next: Option<u64>,
    mixer: Mixer,
    frames: VecDeque<(u64, Frame)>,
    dest: Option<W>,
    mux: Option<Muxer<W>>,
    keyframes: Vec<u64>,
}

impl<W: Write + Seek> std::fmt::Debug for Recorder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("tracks", &self.tracks.len())
            .field("on_stage", &self.on_stage)
            .field("mux", &self.mux)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Seek> Recorder<W> {
    /// A recording into `dest` (nothing is written until the first picture, or
    /// [`FIRST_PICTURE_MS`]).
    pub fn new(dest: W) -> Result<Self, RecordError> {
        Ok(Self {
            tracks: HashMap::new(),
            stage: Stage::default(),
            on_stage: None,
            next: None,
            mixer: Mixer::new()?,
            frames: VecDeque::new(),
            dest: Some(dest),
            mux: None,
            keyframes: Vec::new(),
        })
    }

    /// `participant` publishes `track`.
    pub fn track(&mut self, track: u64, participant: u64, source: Source) {
        match source {
            Source::Camera => self.stage.add(participant, track, Video::Camera),
            Source::Screen => self.stage.add(participant, track, Video::Screen),
            Source::Audio => {}
        }
        self.tracks.insert(
            track,
            Track {
                participant,
                kind: source,
                assembler: Assembler::new(),
                anchor: None,
                asked_ms: None,
                source: None,
            },
        );
    }

    /// `track` stopped.
    pub fn gone(&mut self, track: u64) {
        if let Some(t) = self.tracks.remove(&track) {
            self.stage.remove(track);
            if t.kind == Source::Audio {
                self.stage.quiet(t.participant);
            }
            self.mixer.remove(track);
            if self.next == Some(track) {
                self.next = None;
            }
        }
    }

    /// One packet of `track`, arrived at `now_ms`.
    pub fn packet(&mut self, track: u64, p: Packet<'_>, now_ms: u64) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        if t.source != Some(p.source) {
            // Another sender behind the track (a new camera, a resumed stream): its numbers
            // and times start afresh.
            if t.source.is_some() {
                t.assembler.reset();
                t.anchor = None;
                self.mixer.remove(track);
            }
            t.source = Some(p.source);
        }
        if t.kind == Source::Audio {
            self.stage.heard(t.participant, p.audio_level, now_ms);
            self.mixer
                .push(track, p.ts, p.payload, now_ms * RATE / 1000);
            return;
        }
        self.stage.seen(track, now_ms);
        // Only the picture on the stage, and the one about to take it, are put together.
        if self.on_stage != Some(track) && self.next != Some(track) {
            return;
        }
        match t.assembler.push(p.seq, p.ts, p.marker, p.payload) {
            Pushed::Nothing => {}
            Pushed::NeedKeyframe => ask(t, track, now_ms, &mut self.keyframes),
            Pushed::Frame(frame) => {
                let at = match t.anchor {
                    Some((ts0, ms0)) => {
                        ms0 as i64 + i64::from(frame.ts.wrapping_sub(ts0) as i32) / 90
                    }
                    None => -1,
                };
                let at = if at < 0 || at.abs_diff(now_ms as i64) > 1_000 {
                    t.anchor = Some((frame.ts, now_ms));
                    now_ms
                } else {
                    at as u64
                };
                if self.next == Some(track) {
                    if frame.keyframe.is_none() {
                        return;
                    }
                    self.on_stage = Some(track);
                    self.next = None;
                }
                if self.frames.len() >= MAX_QUEUED_FRAMES {
                    self.frames.pop_front();
                }
                self.frames.push_back((at, frame));
            }
        }
    }

    /// Tracks to ask a keyframe of (each asked once, at most every second).
    pub fn keyframe_requests(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.keyframes)
    }

    /// Decide the stage and write what is due by `now_ms` (the meeting as it was
    /// [`LATENCY_MS`] ago).
    pub fn tick(&mut self, now_ms: u64) -> Result<(), RecordError> {
        let chosen = self.stage.choose(now_ms);
        if chosen.is_none() {
            self.on_stage = None;
            self.next = None;
        } else if chosen != self.on_stage {
            if self.next != chosen {
                self.next = chosen;
                if let Some(t) = chosen.and_then(|c| self.tracks.get_mut(&c)) {
                    t.assembler.reset();
                    t.asked_ms = None;
                }
            }
            if let Some(c) = chosen {
                if let Some(t) = self.tracks.get_mut(&c) {
                    ask(t, c, now_ms, &mut self.keyframes);
                }
            }
        }
        self.write(now_ms.saturating_sub(LATENCY_MS), now_ms)
    }

    /// Write everything up to `upto_ms`.
    fn write(&mut self, upto_ms: u64, now_ms: u64) -> Result<(), RecordError> {
        if self.mux.is_none() {
            let size = self.frames.iter().find_map(|(_, f)| f.keyframe);
            if size.is_none() && now_ms < FIRST_PICTURE_MS {
                return Ok(());
            }
            let Some(dest) = self.dest.take() else {
                return Ok(());
            };
            let (w, h) = size.unwrap_or(DEFAULT_SIZE);
            // A picture that starts the file must be a keyframe.
            while self
                .frames
                .front()
                .is_some_and(|(_, f)| f.keyframe.is_none())
            {
                self.frames.pop_front();
            }
            self.mux = Some(Muxer::new(dest, w, h)?);
        }
        let Some(mux) = self.mux.as_mut() else {
            return Ok(());
        };
        let mut audio = Vec::new();
        self.mixer.pull(upto_ms * RATE / 1000, |at, p| {
            audio.push((at * 1000 / RATE, p.to_vec()));
        });
        let mut audio = audio.into_iter().peekable();
        loop {
            let video_at = self
                .frames
                .front()
                .map(|(at, _)| *at)
                .filter(|at| *at <= upto_ms);
            let audio_at = audio.peek().map(|(at, _)| *at);
            match (video_at, audio_at) {
                (Some(v), a) if a.is_none_or(|a| v <= a) => {
                    if let Some((at, f)) = self.frames.pop_front() {
                        mux.block(VIDEO, at, f.keyframe.is_some(), &f.data)?;
                    }
                }
                (_, Some(_)) => {
                    if let Some((at, p)) = audio.next() {
                        mux.block(AUDIO, at, true, &p)?;
                    }
                }
                _ => break,
            }
        }
        Ok(())
    }

    /// How much was written, ms.
    pub fn written_ms(&self) -> u64 {
        self.mux.as_ref().map_or(0, Muxer::last_ms)
    }

    /// Write what is left up to `now_ms` and close the file.
    pub fn finish(mut self, now_ms: u64) -> Result<W, RecordError> {
        self.write(now_ms, now_ms.max(FIRST_PICTURE_MS))?;
        match self.mux {
            Some(mux) => Ok(mux.finish()?),
            None => Err(RecordError::Write(WriteError::from(
                webm_iterable::errors::TagWriterError::TagSizeError("nothing was written".into()),
            ))),
        }
    }
}

fn ask(t: &mut Track, track: u64, now_ms: u64, out: &mut Vec<u64>) {
    if t.asked_ms
        .is_none_or(|at| now_ms.saturating_sub(at) >= ASK_AGAIN_MS)
    {
        t.asked_ms = Some(now_ms);
        out.push(track);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use webm_iterable::matroska_spec::{MatroskaSpec, SimpleBlock};
    use webm_iterable::WebmIterator;

    fn frame(key: Option<(u16, u16)>) -> Vec<u8> {
        // One RTP payload: descriptor (start of frame, 15-bit picture id), then the frame.
        let mut p = vec![0x90, 0x80, 0x81, 0x23];
        match key {
            Some((w, h)) => {
                p.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
                p.extend_from_slice(&w.to_le_bytes());
                p.extend_from_slice(&h.to_le_bytes());
                p.resize(p.len() + 200, 0xab);
            }
            None => p.extend_from_slice(&[0x01, 0, 0, 7, 7, 7]),
        }
        p
    }

    /// A video block of the file: time (ms), keyframe, size of the keyframe.
    type Block = (u64, bool, Option<(u16, u16)>);

    fn video(bytes: &[u8]) -> Vec<Block> {
        let mut cluster = 0;
        let mut out = Vec::new();
        for t in WebmIterator::new(Cursor::new(bytes), &[]).take(100_000) {
            match t {
                Ok(MatroskaSpec::Timestamp(c)) => cluster = c,
                Ok(ref t @ MatroskaSpec::SimpleBlock(_)) => {
                    let b = SimpleBlock::try_from(t).expect("block");
                    if b.track == webm::VIDEO {
                        let data = b.read_frame_data().expect("frame")[0].data.to_vec();
                        out.push((
                            cluster + b.timestamp as u64,
                            b.keyframe,
                            vp8::keyframe_size(&data),
                        ));
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        out
    }

    #[test]
    fn the_picture_starts_and_switches_on_keyframes_only() {
        let mut r = Recorder::new(Cursor::new(Vec::new())).expect("recorder");
        r.track(1, 10, Source::Camera);
        r.track(2, 20, Source::Camera);
        r.track(3, 20, Source::Audio);
        let mut asked = Vec::new();
        let (mut seq1, mut seq2) = (0u64, 0u64);
        for i in 0..180u64 {
            let now = i * 33;
            let ts = (i * 33 * 90) as u32;
            // Ada's camera (1): a keyframe now and then; Bob's (2): only when asked.
            let key1 = (i % 60 == 5).then_some((320, 240));
            let key2 = (i == 120).then_some((640, 480));
            for (track, seq, key) in [(1, &mut seq1, key1), (2, &mut seq2, key2)] {
                *seq += 1;
                let payload = frame(key);
                let p = Packet {
                    seq: *seq,
                    ts,
                    marker: true,
                    payload: &payload,
                    audio_level: None,
                    source: 1,
                };
                r.packet(track, p, now);
            }
            // Bob speaks from the second second on.
            let level = if now >= 1000 { 20 } else { 127 };
            let p = Packet {
                seq: i,
                ts: (i * 960) as u32,
                marker: true,
                payload: &[0xf8, 0xff, 0xfe],
                audio_level: Some(level),
                source: 1,
            };
            r.packet(3, p, now);
            r.tick(now).expect("tick");
            asked.extend(r.keyframe_requests());
        }
        let bytes = r.finish(180 * 33).expect("finish").into_inner();
        let v = video(&bytes);
        assert!(!v.is_empty());
        assert_eq!(
            v[0].2,
            Some((320, 240)),
            "the file starts on a keyframe: {:?}",
            &v[..3]
        );
        assert!(
            asked.contains(&2),
            "Bob's camera is asked for a keyframe when he speaks: {asked:?}"
        );
        let switch = v
            .iter()
            .position(|(_, _, k)| *k == Some((640, 480)))
            .expect("Bob on the picture");
        // Until Bob's keyframe, Ada's frames go on; from it on, only Bob's (no keyframe of Ada's).
        assert!(v[..switch].iter().all(|(_, _, k)| *k != Some((640, 480))));
        assert!(
            v[switch..].iter().all(|(_, _, k)| *k != Some((320, 240))),
            "Ada's camera came back"
        );
        assert!(v[switch].1, "the switch is a keyframe block");
        assert!(
            v.windows(2).all(|w| w[0].0 < w[1].0),
            "video times only go up"
        );
    }
}
