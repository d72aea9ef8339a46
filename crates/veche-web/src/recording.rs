//! Recordings: a signed start or stop (decided by the meeting's rules, like every moderation
//! action) carried out here. The node whose socket the start came from records: it attaches
//! a recorder to the engine and writes the file on a thread of its own (veche-record mixes
//! and muxes; this module owns the file, the clock and the disk checks). It says so to its
//! people (whoever joins is told in their welcome) and, through the engine, to every node
//! of the meeting, which tell theirs.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rand::RngCore as _;
use tokio::sync::oneshot;
use veche_core::Source;
use veche_media::{Command, EngineHandle, Recorded};
use veche_node::recordings::{self, MIN_FREE_TO_GO_ON, MIN_FREE_TO_START};
use veche_trust::{Action, ActionKind, Signed};

use crate::rules;

/// Packets a recording may fall behind by before the engine drops some (about 10 s of a
/// meeting of twenty).
const TAP_DEPTH: usize = 16_384;
/// How often the file is written and the picture decided.
const TICK: Duration = Duration::from_millis(20);
/// How often the free space is checked while recording.
const DISK_CHECK: Duration = Duration::from_secs(2);
/// How long a download link the host was given works.
const TICKET_TTL: Duration = Duration::from_secs(600);
/// Download links kept at once.
const MAX_TICKETS: usize = 1024;

/// This node's recordings and what it knows of others'.
#[derive(Debug)]
pub struct Recordings {
    data: PathBuf,
    state: Mutex<HashMap<String, Meeting>>,
    tickets: Mutex<HashMap<String, Ticket>>,
}

#[derive(Debug, Default)]
struct Meeting {
    /// When (this node's clock) the last decision reached this node.
    at_ms: u64,
    /// Recording here: the file's name.
    here: Option<String>,
    /// A start is under way here (the file being made).
    starting: bool,
}

/// How a recording ends.
enum Stopped {
    /// A signed stop (or a start that failed), reached this node at this time.
    Decided(u64),
    /// Its writer ended (disk full, everyone left): only that file's recording stops.
    ByItself {
        /// The file.
        file: String,
        /// Why, in words.
        problem: String,
    },
}

#[derive(Debug, Clone)]
struct Ticket {
    meeting: String,
    name: String,
    until: Instant,
}

/// Why a recording decision was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum RecordRefused {
    /// This node records the meeting already.
    #[error("this meeting is being recorded already")]
    Already,
    /// Not enough room on the node's disk.
    #[error("the node's disk has {free_mb} MB free; a recording needs at least {need_mb} MB")]
    DiskFull {
        /// Free now.
        free_mb: u64,
        /// Needed.
        need_mb: u64,
    },
    /// The file could not be made.
    #[error("the recording file cannot be made: {0}")]
    File(std::io::Error),
    /// The engine is gone.
    #[error("the node is shutting down")]
    Gone,
}

impl Recordings {
    /// Recordings kept under data directory `data`.
    pub fn new(data: PathBuf) -> Self {
        Self {
            data,
            state: Mutex::default(),
            tickets: Mutex::default(),
        }
    }

    /// The data directory.
    pub fn data(&self) -> &std::path::Path {
        &self.data
    }

    /// Carry out a checked start or stop of `meeting`'s recording. `here`: the name of
    /// the person whose socket on this node it came from (this node records); `None`: passed
    /// on by another node (its node records; this one tells its people). Decisions are
    /// ordered as they reach this node (a signer's clock may be a minute off): the last one
    /// stands; a stop is never refused.
    pub async fn decided(
        self: &Arc<Self>,
        engine: &EngineHandle,
        meeting: &str,
        action: &Signed<Action>,
        here: Option<&str>,
    ) -> Result<(), RecordRefused> {
        let at_ms = rules::now_ms();
        if action.body.kind != ActionKind::StartRecording {
            self.stop(engine, meeting, Stopped::Decided(at_ms)).await;
            return Ok(());
        }
        {
            let mut state = self.lock_state();
            let m = state.entry(meeting.to_owned()).or_default();
            if here.is_some() {
                if m.here.is_some() || m.starting {
                    return Err(RecordRefused::Already);
                }
                m.starting = true;
            }
            m.at_ms = m.at_ms.max(at_ms);
        }
        let Some(by) = here else {
            // Another node records it: it tells its people, and every node of the meeting,
            // itself (the node protocol's `recording`).
            return Ok(());
        };
        let state = Some(veche_core::Recording {
            by: by.to_owned(),
            since_ms: at_ms,
        });
        // Everyone is told before the first packet is recorded.
        engine
            .send(Command::Recording {
                meeting: meeting.to_owned(),
                state,
                problem: None,
            })
            .await
            .map_err(|_| RecordRefused::Gone)?;
        let started = self.start_here(engine, meeting).await;
        let newer = {
            let mut state = self.lock_state();
            let m = state.entry(meeting.to_owned()).or_default();
            m.starting = false;
            match &started {
                Ok(name) if m.at_ms <= at_ms => {
                    m.here = Some(name.clone());
                    false
                }
                _ => true,
            }
        };
        match started {
            Ok(name) if !newer => {
                tracing::info!(%meeting, file = %name, by = %action.key.fingerprint(), "recording started");
                Ok(())
            }
            Ok(name) => {
                // Stopped while it was starting: the stop stands.
                tracing::info!(%meeting, file = %name, "a recording stopped as it started");
                let _ = engine
                    .send(Command::Record {
                        meeting: meeting.to_owned(),
                        tap: None,
                    })
                    .await;
                self.stop(engine, meeting, Stopped::Decided(0)).await;
                Ok(())
            }
            Err(e) => {
                self.stop(engine, meeting, Stopped::Decided(0)).await;
                Err(e)
            }
        }
    }

    /// `meeting` was ended: its recording here (if any) stops now.
    pub async fn ended(&self, engine: &EngineHandle, meeting: &str) {
        self.stop(engine, meeting, Stopped::Decided(rules::now_ms()))
            .await;
    }

    /// Stop `meeting`'s recording: this node's file (if it records) is closed, and its
    /// people told (with why, when it stopped by itself). A writer that ended by itself
    /// closes only its own file (`Stopped::ByItself`), never a newer recording's.
    async fn stop(&self, engine: &EngineHandle, meeting: &str, how: Stopped) {
        let (was, problem) = {
            let mut state = self.lock_state();
            let m = state.entry(meeting.to_owned()).or_default();
            match &how {
                Stopped::Decided(at_ms) => {
                    m.at_ms = m.at_ms.max(*at_ms);
                    (m.here.take(), None)
                }
                Stopped::ByItself { file, problem } => {
                    if m.here.as_deref() != Some(file.as_str()) {
                        return;
                    }
                    (m.here.take(), Some(problem.clone()))
                }
            }
        };
        if let Some(name) = was {
            let _ = engine
                .send(Command::Record {
                    meeting: meeting.to_owned(),
                    tap: None,
                })
                .await;
            tracing::info!(%meeting, file = %name, ?problem, "recording stopped");
        }
        let _ = engine
            .send(Command::Recording {
                meeting: meeting.to_owned(),
                state: None,
                problem,
            })
            .await;
    }

    /// Start recording `meeting` here: the disk checked, the file made, the writer started
    /// and the engine's tap attached. Returns the file's name.
    async fn start_here(
        self: &Arc<Self>,
        engine: &EngineHandle,
        meeting: &str,
    ) -> Result<String, RecordRefused> {
        let dir = recordings::dir(&self.data);
        std::fs::create_dir_all(&dir).map_err(RecordRefused::File)?;
        let free = recordings::free_bytes(&dir).map_err(RecordRefused::File)?;
        if free < MIN_FREE_TO_START {
            return Err(RecordRefused::DiskFull {
                free_mb: free >> 20,
                need_mb: MIN_FREE_TO_START >> 20,
            });
        }
        let (path, file) = recordings::create(&self.data, meeting, SystemTime::now())
            .map_err(RecordRefused::File)?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let (tap, rx) = sync_channel(TAP_DEPTH);
        let (done_tx, done) = oneshot::channel();
        let writer_engine = engine.clone();
        let spawned = std::thread::Builder::new()
            .name("veche-record".into())
            .spawn(move || {
                let _ = done_tx.send(write(file, path, rx, &writer_engine));
            });
        if let Err(e) = spawned {
            return Err(RecordRefused::File(e));
        }
        engine
            .send(Command::Record {
                meeting: meeting.to_owned(),
                tap: Some(tap),
            })
            .await
            .map_err(|_| RecordRefused::Gone)?;
        // The writer ends when the tap closes (a stop) or by itself (the disk filled).
        let (engine, meeting_id, file) = (engine.clone(), meeting.to_owned(), name.clone());
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = done
                .await
                .unwrap_or(Err("the recording's writer stopped".into()));
            // Ended by itself (the disk filled; everyone left, and the engine closed it):
            // who is left is told, with why. After a stop, this finds nothing to do.
            let problem = match outcome {
                Err(problem) => {
                    tracing::error!(meeting = %meeting_id, file = %file, %problem, "recording stopped by itself");
                    problem
                }
                Ok(()) => "everyone left the meeting".to_owned(),
            };
            this.stop(&engine, &meeting_id, Stopped::ByItself { file, problem })
                .await;
        });
        Ok(name)
    }

    /// A download link for `meeting`'s recording `name`, valid for ten minutes.
    pub fn ticket(&self, meeting: &str, name: &str) -> String {
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        let t: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        tickets.retain(|_, k| k.until > now);
        if tickets.len() >= MAX_TICKETS {
            if let Some(oldest) = tickets
                .iter()
                .min_by_key(|(_, k)| k.until)
                .map(|(t, _)| t.clone())
            {
                tickets.remove(&oldest);
            }
        }
        tickets.insert(
            t.clone(),
            Ticket {
                meeting: meeting.to_owned(),
                name: name.to_owned(),
                until: now + TICKET_TTL,
            },
        );
        t
    }

    /// Whether `ticket` opens `meeting`'s recording `name` now.
    pub fn admits(&self, ticket: &str, meeting: &str, name: &str) -> bool {
        let tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        tickets
            .get(ticket)
            .is_some_and(|k| k.meeting == meeting && k.name == name && k.until > Instant::now())
    }

    /// The file this node is writing for `meeting` now, if any (not ready to download).
    pub fn writing(&self, meeting: &str) -> Option<String> {
        self.lock_state().get(meeting).and_then(|m| m.here.clone())
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, HashMap<String, Meeting>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer thread: the engine's packets into the recording, the file written as it goes.
/// Ends when the tap closes (the recording was stopped) with the file complete, or with why
/// it could not go on: the file stays, playable up to there, and gets its duration.
fn write(
    file: std::fs::File,
    path: PathBuf,
    rx: Receiver<Recorded>,
    engine: &EngineHandle,
) -> Result<(), String> {
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        write_file(file, &path, rx, engine)
    }))
    .unwrap_or_else(|_| Err("the recording's writer failed (a bug): it was kept".into()));
    if done.is_err() {
        let repaired = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .and_then(|mut f| veche_record::webm::repair(&mut f));
        if let Err(e) = repaired {
            tracing::warn!(file = %path.display(), error = %e, "a stopped recording cannot be closed");
        }
    }
    done
}

fn write_file(
    file: std::fs::File,
    path: &std::path::Path,
    rx: Receiver<Recorded>,
    engine: &EngineHandle,
) -> Result<(), String> {
    let started = Instant::now();
    let ms = |at: Instant| at.duration_since(started).as_millis() as u64;
    let mut rec = veche_record::Recorder::new(Disk(file)).map_err(|e| e.to_string())?;
    let mut next_tick = started + TICK;
    let mut next_check = started + DISK_CHECK;
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(msg) => feed(&mut rec, msg, &ms),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if now < next_tick {
            continue;
        }
        next_tick = now + TICK;
        rec.tick(ms(now)).map_err(|e| e.to_string())?;
        for track in rec.keyframe_requests() {
            let _ = engine.try_send(Command::RecordKeyframe {
                track: veche_core::TrackId(track),
            });
        }
        if now >= next_check {
            next_check = now + DISK_CHECK;
            let free = recordings::free_bytes(path).unwrap_or(u64::MAX);
            if free < MIN_FREE_TO_GO_ON {
                let _ = rec.finish(ms(now));
                return Err(format!(
                    "the node's disk is nearly full ({} MB free): the recording was stopped and kept",
                    free >> 20
                ));
            }
        }
    }
    let written = rec.written_ms();
    rec.finish(ms(Instant::now())).map_err(|e| e.to_string())?;
    tracing::info!(file = %path.display(), seconds = written / 1000, "recording written");
    Ok(())
}

/// One message from the engine into the recording; `ms` places an arrival on its clock.
fn feed<W: Write + std::io::Seek>(
    rec: &mut veche_record::Recorder<W>,
    msg: Recorded,
    ms: &dyn Fn(Instant) -> u64,
) {
    match msg {
        Recorded::Track {
            track,
            participant,
            source,
        } => {
            let source = match source {
                Source::Mic => veche_record::Source::Audio,
                Source::Camera => veche_record::Source::Camera,
                Source::Screen => veche_record::Source::Screen,
            };
            rec.track(track.0, participant.0, source);
        }
        Recorded::Gone { track } => rec.gone(track.0),
        Recorded::Packet {
            track,
            seq,
            ts,
            marker,
            payload,
            audio_level,
            source,
            arrival,
        } => rec.packet(
            track.0,
            veche_record::Packet {
                seq,
                ts,
                marker,
                payload: &payload,
                audio_level,
                source: u64::from(source.0) << 32 | u64::from(source.1),
            },
            ms(arrival),
        ),
    }
}

/// The file, written through to the kernel at every block: a kill loses nothing written.
struct Disk(std::fs::File);

impl Write for Disk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for Disk {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}

/// Give every recording a kill or a full disk cut off (at the node's start: none is being
/// written) its duration, from its last whole block, so players show and seek it.
pub fn repair_all(data: &std::path::Path) {
    let Ok(files) = recordings::list(data, None) else {
        return;
    };
    for f in files {
        let Some(path) = recordings::path_of(data, &f.meeting, &f.name) else {
            continue;
        };
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path);
        match opened.and_then(|mut file| veche_record::webm::repair(&mut file)) {
            Ok(Some(ms)) => {
                tracing::info!(file = %path.display(), seconds = ms / 1000, "a recording cut off by a stop of the node was closed")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "a recording cut off cannot be closed")
            }
        }
    }
}
