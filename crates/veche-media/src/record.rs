//! This node's recordings: each is a subscriber of the core (`Kind::Recorder`) that never
//! negotiates; what the core would send it goes, as it arrives, into its tap.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::TrySendError;
use std::sync::Arc;
use std::time::Instant;

use veche_core::{MeetingEvent, Output, ParticipantId, Recording, Source, TrackId};

use crate::api::{RecordTap, Recorded};
use crate::engine::Engine;
use crate::peer::Forwarded;

/// The recordings running here, by their subscriber id and by meeting.
#[derive(Debug, Default)]
pub(crate) struct Recorders {
    taps: HashMap<ParticipantId, RecordTap>,
    of_meeting: HashMap<String, ParticipantId>,
    /// What a recording must be told of its tracks but had no room for yet, in order: it
    /// is told before anything else (a packet may be dropped, never a track).
    backlog: VecDeque<(ParticipantId, Recorded)>,
    /// Meetings this node records, as its owner says (who started it, when).
    own: HashMap<String, Recording>,
    /// (meeting, node) → that node's recording of it, as it says.
    others: HashMap<(String, String), Recording>,
}

/// Most track changes waiting for a recording that fell behind.
const MAX_BACKLOG: usize = 4096;

impl Recorders {
    /// Whether `id` is a recording.
    pub(crate) fn is(&self, id: ParticipantId) -> bool {
        self.taps.contains_key(&id)
    }

    /// Hand `msg` to recording `id` without waiting: false when it is full (or gone).
    fn give(&self, id: ParticipantId, msg: Recorded) -> bool {
        match self.taps.get(&id).map(|t| t.try_send(msg)) {
            Some(Ok(())) => true,
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => false,
        }
    }

    /// Tell recording `id` of a track change, now or as soon as it has room.
    fn tell(&mut self, id: ParticipantId, msg: Recorded) -> bool {
        self.catch_up();
        if self.backlog.iter().all(|(to, _)| *to != id) {
            match self.taps.get(&id).map(|t| t.try_send(msg)) {
                Some(Ok(())) | None => return true,
                Some(Err(TrySendError::Disconnected(_))) => return true,
                Some(Err(TrySendError::Full(m))) => return self.keep(id, m),
            }
        }
        self.keep(id, msg)
    }

    fn keep(&mut self, id: ParticipantId, msg: Recorded) -> bool {
        if self.backlog.len() >= MAX_BACKLOG {
            return false;
        }
        self.backlog.push_back((id, msg));
        true
    }

    /// Hand on what waits, in order, while the recordings take it.
    fn catch_up(&mut self) {
        while let Some((id, msg)) = self.backlog.pop_front() {
            if let Some(Err(TrySendError::Full(m))) = self.taps.get(&id).map(|t| t.try_send(msg)) {
                self.backlog.push_front((id, m));
                return;
            }
        }
    }

    /// Whether recording `id` still waits to be told of track changes.
    fn behind(&self, id: ParticipantId) -> bool {
        self.backlog.iter().any(|(to, _)| *to == id)
    }
}

impl Engine {
    /// This node's recording of `meeting` (as its owner said), if it records it.
    pub(crate) fn recording_here(&self, meeting: &str) -> Option<&Recording> {
        self.recorders.own.get(meeting)
    }

    /// This node records `meeting` (`Some`), or no longer does: its people are told, and
    /// so is every other node of the meeting (and every node that joins it later).
    pub(crate) fn own_recording(
        &mut self,
        meeting: String,
        state: Option<Recording>,
        problem: Option<String>,
    ) {
        let event = MeetingEvent::Recording {
            on: state.is_some(),
            by: state.as_ref().map(|r| r.by.clone()).unwrap_or_default(),
            since_ms: state.as_ref().map_or(0, |r| r.since_ms),
        };
        let changed = match state {
            Some(r) => self.recorders.own.insert(meeting.clone(), r.clone()) != Some(r),
            None => self.recorders.own.remove(&meeting).is_some(),
        };
        if changed {
            self.fed_broadcast(&meeting, event);
        }
        self.show_recording(&meeting, problem);
    }

    /// What node `node` says of its recording of `meeting`.
    pub(crate) fn remote_recording(&mut self, meeting: &str, node: &str, state: Option<Recording>) {
        let key = (meeting.to_owned(), node.to_owned());
        let changed = match state {
            Some(r) => self.recorders.others.insert(key, r.clone()) != Some(r),
            None => self.recorders.others.remove(&key).is_some(),
        };
        if changed {
            self.show_recording(meeting, None);
        }
    }

    /// Tell this node's people whether `meeting` is recorded anywhere.
    fn show_recording(&mut self, meeting: &str, problem: Option<String>) {
        let state = self.recorders.own.get(meeting).cloned().or_else(|| {
            self.recorders
                .others
                .iter()
                .find(|((m, _), _)| m == meeting)
                .map(|(_, r)| r.clone())
        });
        let out = self.sfu.set_recording(meeting, state, problem);
        self.apply(out);
    }

    /// Start or stop this node's recording of `meeting`.
    pub(crate) fn record(&mut self, meeting: String, tap: Option<RecordTap>, now: Instant) {
        if let Some(old) = self.recorders.of_meeting.remove(&meeting) {
            // Closing the tap ends that recording's file.
            self.recorders.taps.remove(&old);
            self.recorders.backlog.retain(|(to, _)| *to != old);
            let out = self.sfu.leave(old, now);
            self.apply(out);
        }
        let Some(tap) = tap else { return };
        let (id, out) = self.sfu.attach_recorder(&meeting, now);
        self.recorders.taps.insert(id, tap);
        self.recorders.of_meeting.insert(meeting, id);
        self.apply(out);
        self.record_ready(now);
    }

    /// A recording whose meeting nobody is in any more (everyone left, or it ended) stops:
    /// its tap closes, which ends the file, and the recording's owner tells who is left.
    pub(crate) fn record_housekeeping(&mut self, now: Instant) {
        self.recorders.catch_up();
        let empty: Vec<String> = self
            .recorders
            .of_meeting
            .keys()
            .filter(|m| self.sfu.participants(m).is_empty())
            .cloned()
            .collect();
        for meeting in empty {
            tracing::info!(%meeting, "everyone left: the recording stops");
            self.record(meeting, None, now);
        }
    }

    /// The core chose to send `track` to recording `subscriber`: tell it what the track is.
    /// It is ready at once (nothing to negotiate); see [`Engine::record_ready`].
    pub(crate) fn record_subscribe(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        participant: ParticipantId,
        source: Source,
    ) {
        let told = self.recorders.tell(
            subscriber,
            Recorded::Track {
                track,
                participant,
                source,
            },
        );
        if told {
            self.record_pending.push((subscriber, track));
        } else {
            self.stats.recorded_dropped += 1;
        }
    }

    /// Recordings' new subscriptions are ready: packets flow to them from now on.
    pub(crate) fn record_ready(&mut self, now: Instant) {
        for (subscriber, track) in std::mem::take(&mut self.record_pending) {
            // The recording asks for keyframes itself, for the picture it puts on stage;
            // the layers it needs must still reach the publisher.
            let out: Vec<Output> = self
                .sfu
                .subscription_ready(subscriber, track, now)
                .into_iter()
                .filter(|o| !matches!(o, Output::RequestKeyframe { .. }))
                .collect();
            self.apply(out);
        }
    }

    /// The core stopped sending `track` to recording `subscriber`.
    pub(crate) fn record_unsubscribe(&mut self, subscriber: ParticipantId, track: TrackId) {
        if !self.recorders.tell(subscriber, Recorded::Gone { track }) {
            self.stats.recorded_dropped += 1;
        }
    }

    /// One forwarded packet for recording `subscriber`.
    pub(crate) fn record_packet(&mut self, subscriber: ParticipantId, packet: &Arc<Forwarded>) {
        // Its tracks come first: a packet before the recording knows its track is worth
        // nothing to it.
        if self.recorders.behind(subscriber) {
            self.recorders.catch_up();
            if self.recorders.behind(subscriber) {
                self.stats.recorded_dropped += 1;
                return;
            }
        }
        let level = packet.ext.audio_level.map(|l| l.unsigned_abs().min(127));
        let msg = Recorded::Packet {
            track: packet.track,
            seq: packet.incoming.seq,
            ts: packet.incoming.ts,
            marker: packet.incoming.marker,
            payload: packet.incoming.payload.clone(),
            audio_level: level,
            source: packet.incoming.source,
            arrival: packet.incoming.arrival,
        };
        if !self.recorders.give(subscriber, msg) {
            self.stats.recorded_dropped += 1;
        }
    }
}
