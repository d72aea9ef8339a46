//! The selective forwarding state machine.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::alloc::{allocate, Reason, Video};
use crate::grow::Growth;
use crate::layers::{want_for, Layer, Layers, Route, TileView, Viewers, Want};
use crate::narrow::Narrowing;
use crate::notice::Recording;
use crate::notice::{ChatMessage, Notice, ParticipantInfo};
use crate::speakers::Speakers;
use crate::{MediaState, ParticipantId, RoomPlan, Source, TrackId, TrackKind};

/// Bounds on what participants can make the core hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Participants in one meeting.
    pub participants_per_meeting: usize,
    /// Display name length in characters.
    pub max_name_chars: usize,
    /// Chat message length in characters.
    pub max_chat_chars: usize,
    /// Chat messages kept per meeting and shown to late joiners.
    pub chat_history: usize,
    /// Shortest interval between two keyframe requests sent to one publisher track.
    /// Many viewers asking at once must not make the publisher send keyframes back to back.
    pub keyframe_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            participants_per_meeting: 100,
            max_name_chars: 64,
            max_chat_chars: 2000,
            chat_history: 100,
            keyframe_interval: Duration::from_millis(300),
        }
    }
}

/// What the driver must do after a call into the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Start sending `track` to `subscriber`: negotiate a new outgoing stream with it, then
    /// report [`Sfu::subscription_ready`].
    Subscribe {
        /// Who receives.
        subscriber: ParticipantId,
        /// Which track.
        track: TrackId,
        /// Whose track it is.
        publisher: ParticipantId,
        /// What it carries.
        source: Source,
    },
    /// Stop sending `track` to `subscriber` and release the outgoing stream.
    Unsubscribe {
        /// Who received.
        subscriber: ParticipantId,
        /// Which track.
        track: TrackId,
    },
    /// Ask the publisher of `track` for a keyframe.
    RequestKeyframe {
        /// Whose track.
        publisher: ParticipantId,
        /// Which track.
        track: TrackId,
        /// Of this simulcast layer; `None`: of a track without layers, or of every layer.
        layer: Option<Layer>,
    },
    /// Toward `viewer`, keep sending at least `minimum` bits per second (padding fills up
    /// to it: while a stream is held small, what the next step would need) and probe for up
    /// to `desired` (what its tiles need); both equal what it gets when nothing is held.
    Bitrate {
        /// Who receives.
        viewer: ParticipantId,
        /// What it receives now, in bits per second.
        minimum: u64,
        /// What its tiles need.
        desired: u64,
    },
    /// The bandwidth estimate toward `viewer` has stayed at `bps` a while although it
    /// holds streams back: start it afresh from there. Its first probes find out whether
    /// the path has room again; str0m's loss controller, once it saw loss, can hold an
    /// estimate (and its probes) for up to a minute after the path cleared.
    ResetEstimate {
        /// Who receives.
        viewer: ParticipantId,
        /// Where to start, bits per second (no less than what it receives).
        bps: u64,
    },
    /// Tell the publisher of a camera in layers which of them to send (the others nobody
    /// watches: its browser stops encoding them).
    SendLayers {
        /// Whose track.
        publisher: ParticipantId,
        /// Which track.
        track: TrackId,
        /// What it carries.
        source: Source,
        /// The layers to send.
        layers: Layers,
    },
    /// Deliver a notice to one participant.
    Notify {
        /// Recipient.
        to: ParticipantId,
        /// What to tell them.
        notice: Notice,
    },
    /// A person (a browser here or someone another node carries, never a node link) came
    /// into `meeting` on this node: what the meeting's attendance is made of. Every
    /// participant that arrives departs exactly once ([`Output::Departed`]).
    Arrived {
        /// Meeting id.
        meeting: String,
        /// Who.
        participant: ParticipantId,
        /// Their name as they joined.
        name: String,
        /// Their key, as their node checked it.
        key: Option<String>,
    },
    /// A person went out of `meeting` on this node (left, dropped, removed, or their node
    /// was lost).
    Departed {
        /// Meeting id.
        meeting: String,
        /// Who.
        participant: ParticipantId,
    },
}

/// An estimate that holds streams back and does not grow this long is started afresh
/// ([`Output::ResetEstimate`]); each time again, twice as long, up to `RESET_MOST`.
const RESET_FIRST: Duration = Duration::from_secs(3);
const RESET_MOST: Duration = Duration::from_secs(12);
/// A stream grows into this share of the estimate (`GROW_MUL / GROW_DIV`).
const GROW_MUL: u64 = 4;
const GROW_DIV: u64 = 5;

/// What a viewer receives of its videos ([`Sfu::reception`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reception {
    /// The bandwidth estimate toward it, bits per second.
    pub estimate: Option<u64>,
    /// Each video it receives.
    pub videos: Vec<Received>,
}

/// One video a viewer receives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Received {
    /// Whose.
    pub publisher: ParticipantId,
    /// Which.
    pub source: Source,
    /// What its stream carries now: `None` nothing, `Some(None)` a picture without layers.
    #[serde(serialize_with = "carries")]
    pub carries: Option<Option<Layer>>,
    /// What it should get.
    #[serde(serialize_with = "want")]
    pub want: Want,
    /// Why.
    pub reason: Reason,
    /// A stream of several layers (a node link's): each one it carries, smallest first
    /// (`carries` is the largest).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<&'static str>,
}

impl Received {
    /// What its stream carries, by name: `none`, `picture` (no layers) or a layer's rid.
    pub fn carried(&self) -> &'static str {
        carried(&self.carries)
    }
}

fn carried(c: &Option<Option<Layer>>) -> &'static str {
    match c {
        None => "none",
        Some(None) => "picture",
        Some(Some(l)) => l.rid(),
    }
}

fn carries<S: serde::Serializer>(c: &Option<Option<Layer>>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(carried(c))
}

fn want<S: serde::Serializer>(w: &Want, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match w {
        Want::Off => "off",
        Want::Layer(l) => l.rid(),
    })
}

/// Off below every layer, then the layers smallest first.
fn rank(w: Want) -> u8 {
    match w {
        Want::Off => 0,
        Want::Layer(l) => 1 + l.index(),
    }
}

/// What `want` of `video` costs, bits per second.
fn cost(video: &Video, want: Want) -> u64 {
    match want {
        Want::Off => 0,
        Want::Layer(_) if video.layers == Layers::NONE => video.rates[0],
        Want::Layer(l) => video.rates[usize::from(l.index())],
    }
}

/// What `video` costs more one layer up from `want`, toward what its tile needs.
fn step_up(video: &Video, want: Want) -> Option<u64> {
    let Want::Layer(cap) = video.cap else {
        return None;
    };
    let next = match want {
        Want::Off if video.layers == Layers::NONE => Layer::TOP,
        Want::Off => video.layers.iter().next()?,
        Want::Layer(l) => video.layers.iter().find(|n| *n > l)?,
    };
    if next > cap && want != Want::Off {
        return None;
    }
    Some(cost(video, Want::Layer(next)).saturating_sub(cost(video, want)))
}

/// One layer above `old` of `video`, toward what the link allows (`grown`): the layer and
/// why.
fn one_up(video: &Video, old: Want, grown: (Want, Reason)) -> (Want, Reason) {
    let next = match old {
        Want::Off if video.layers == Layers::NONE => Some(Layer::TOP),
        Want::Off => video.layers.iter().next(),
        Want::Layer(l) => video.layers.iter().find(|n| *n > l),
    };
    match next.map(Want::Layer) {
        Some(next) if rank(next) < rank(grown.0) => (next, Reason::Bandwidth),
        _ => grown,
    }
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The name is empty or too long.
    #[error("the name must be 1 to {max} characters")]
    BadName {
        /// The longest name allowed.
        max: usize,
    },
    /// The meeting has as many participants as it may.
    #[error("the meeting is full ({max} participants)")]
    MeetingFull {
        /// The participant limit.
        max: usize,
    },
}

/// Why a track could not be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The participant is not (or no longer) in a meeting.
    #[error("unknown participant")]
    UnknownParticipant,
    /// The participant already publishes a track from this source.
    #[error("already publishing this source")]
    Duplicate,
    /// The source's kind does not match the media kind.
    #[error("source and media kind disagree")]
    KindMismatch,
    /// The participant joined as a listener: what they send reaches nobody.
    #[error("listeners may not publish")]
    Listener,
}

/// Why a chat message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// The participant is not (or no longer) in a meeting.
    #[error("unknown participant")]
    UnknownParticipant,
    /// Empty or too long.
    #[error("a chat message must be 1 to {max} characters")]
    BadText {
        /// The longest message allowed.
        max: usize,
    },
}

/// Sizes of the core's state (see [`Sfu::counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Meetings with participants or chat.
    pub meetings: usize,
    /// Participants.
    pub participants: usize,
    /// Published tracks.
    pub tracks: usize,
    /// Subscriptions, negotiating or ready.
    pub subscriptions: usize,
    /// Ready subscriptions (entries in forwarding sets).
    pub forwarding: usize,
}

/// A change of what a participant sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange(pub MediaState);

/// Where a participant is, as the core sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A browser attached to this node: receives everything, gets notices.
    Local,
    /// Someone attached to another node, whose media arrives over a node link: listed and
    /// forwarded to local browsers, never forwarded on to other nodes (each node sends its own
    /// participants' tracks to every other node itself, so nothing loops).
    Remote,
    /// The outgoing media link to another node: receives local participants' tracks, is
    /// not a person (never listed, never told anything).
    Link,
    /// This node's recording of the meeting: receives every track of the main room, local
    /// and remote; not a person either.
    Recorder,
}

impl Kind {
    /// Someone in the meeting (listed, counted, told, in its attendance).
    pub fn person(self) -> bool {
        matches!(self, Kind::Local | Kind::Remote)
    }
}

#[derive(Debug)]
struct Participant {
    kind: Kind,
    meeting: String,
    name: String,
    state: MediaState,
    /// The person's key, as their node checked it.
    key: Option<String>,
    /// Joined as a listener (an invite's role): nothing they send is published.
    listener: bool,
    /// Muted by a moderator: their microphone is not forwarded until a moderator allows it.
    silenced: bool,
    /// Their breakout room (0: the main room): they receive, and are received by, only
    /// people of the same room (a node link receives every room: its node decides).
    room: u8,
    /// Tracks this participant publishes, by source.
    published: BTreeMap<SourceKey, TrackId>,
    /// Tracks this participant receives (negotiating or ready).
    subscribed: Vec<TrackId>,
    /// What its page shows of each other participant's video (the last it said).
    views: HashMap<(ParticipantId, SourceKey), TileView>,
    /// A node link: the layers its node needs of each video in layers (the last it said;
    /// all of them for one it did not say of). See [`Sfu::set_passing`].
    passes: HashMap<(ParticipantId, SourceKey), Layers>,
    /// The bandwidth estimate toward it (bits per second), once its connection has one.
    estimate: Option<u64>,
    /// The estimate the last allocation was made for.
    allocated_for: Option<u64>,
    /// When streams its link made smaller may grow again (a link that just dropped is not
    /// tried again at once, nor again and again).
    growth: Growth,
    /// The last `Output::Bitrate` for it.
    bitrate_told: (u64, u64),
    /// Whose cameras it was last told it gets no picture of, for its link (sorted).
    paused_told: Vec<ParticipantId>,
    /// A node link: how many layers its path carries (see [`Sfu::link_loss`]).
    narrowing: Narrowing,
    /// While its estimate holds streams back: the estimate then, and since when it has
    /// not grown a twentieth above it; how long that may last before it is started afresh
    /// (doubling each time, see [`Output::ResetEstimate`]).
    flat: Option<(u64, Instant)>,
    reset_wait: Duration,
}

/// `Source` as an ordered map key, so iteration order (and so output order) is stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum SourceKey {
    Mic,
    Camera,
    Screen,
}

impl From<Source> for SourceKey {
    fn from(s: Source) -> Self {
        match s {
            Source::Mic => SourceKey::Mic,
            Source::Camera => SourceKey::Camera,
            Source::Screen => SourceKey::Screen,
        }
    }
}

#[derive(Debug)]
struct Track {
    publisher: ParticipantId,
    source: Source,
    /// Who receives it (negotiated), what each viewer's stream carries, the layers sent.
    viewers: Viewers,
}

#[derive(Debug, Default)]
struct Meeting {
    /// In join order, so lists shown to people are stable.
    participants: Vec<ParticipantId>,
    /// Recent chat, each message with the room it was said in.
    chat: VecDeque<(u8, ChatMessage)>,
}

/// The forwarding core of one node. See the crate docs.
#[derive(Debug, Default)]
pub struct Sfu {
    limits: Limits,
    next_id: u64,
    meetings: HashMap<String, Meeting>,
    participants: HashMap<ParticipantId, Participant>,
    tracks: HashMap<TrackId, Track>,
    /// Breakout rooms per meeting, while open (kept when nobody is in the meeting here, for
    /// whoever joins next).
    rooms: HashMap<String, RoomPlan>,
    /// Meetings being recorded (here or at another node), for everyone who joins.
    recording: HashMap<String, Recording>,
    /// Who speaks in each meeting (here or at another node).
    speakers: HashMap<String, Speakers>,
    /// Whose camera (their key) is on everyone's stage, per meeting (kept when nobody is
    /// here, for whoever joins next).
    spotlights: HashMap<String, String>,
}

impl Sfu {
    /// A core with the given limits and no meetings.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// A core whose ids start after `base`. The driver passes something that grows across
    /// restarts (it has the clock; the core does not), so a browser that reconnects to a
    /// restarted node never meets an id it saw before, for someone else.
    pub fn with_id_base(limits: Limits, base: u64) -> Self {
        Self {
            limits,
            next_id: base,
            ..Self::default()
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Add a browser to a meeting (created on first join). The joiner gets a
    /// [`Notice::Welcome`], the others a [`Notice::ParticipantJoined`], and the joiner is
    /// subscribed to every track already published in the meeting.
    pub fn join(
        &mut self,
        meeting: &str,
        name: &str,
        now: Instant,
    ) -> Result<(ParticipantId, Vec<Output>), JoinError> {
        self.add(meeting, name, Kind::Local, MediaState::default(), None, now)
    }

    /// `join` for someone whose key the driver checked (the key is shown to the others).
    pub fn join_keyed(
        &mut self,
        meeting: &str,
        name: &str,
        key: Option<String>,
        now: Instant,
    ) -> Result<(ParticipantId, Vec<Output>), JoinError> {
        self.add(meeting, name, Kind::Local, MediaState::default(), key, now)
    }

    /// Add someone who is attached to another node. Local browsers are told and will
    /// receive its tracks once the node link publishes them.
    pub fn join_remote(
        &mut self,
        meeting: &str,
        name: &str,
        state: MediaState,
        key: Option<String>,
        now: Instant,
    ) -> Result<(ParticipantId, Vec<Output>), JoinError> {
        self.add(meeting, name, Kind::Remote, state, key, now)
    }

    /// Add the outgoing media link to another node: it subscribes to every local
    /// participant's track, now and later.
    pub fn attach_link(&mut self, meeting: &str, now: Instant) -> (ParticipantId, Vec<Output>) {
        self.add_unlisted(meeting, "node link", Kind::Link, now)
    }

    /// Add something that is not a person (a node link, a recording).
    fn add_unlisted(
        &mut self,
        meeting: &str,
        name: &str,
        kind: Kind,
        now: Instant,
    ) -> (ParticipantId, Vec<Output>) {
        match self.add(meeting, name, kind, MediaState::default(), None, now) {
            Ok(ok) => ok,
            // Not counted against the meeting's size, and always named.
            Err(_) => (ParticipantId(self.next_id()), Vec::new()),
        }
    }

    /// Add this node's recording of `meeting`: it receives every track of the main room,
    /// now and later, from this node's people and from those other nodes carry.
    pub fn attach_recorder(&mut self, meeting: &str, now: Instant) -> (ParticipantId, Vec<Output>) {
        self.add_unlisted(meeting, "recording", Kind::Recorder, now)
    }

    /// Whether `meeting` is being recorded (here or at another node), as the driver says:
    /// every browser here is told now, and whoever joins later in their welcome. A
    /// recording that stopped by itself says why (`problem`).
    pub fn set_recording(
        &mut self,
        meeting: &str,
        recording: Option<Recording>,
        problem: Option<String>,
    ) -> Vec<Output> {
        if self.recording.get(meeting) == recording.as_ref() && problem.is_none() {
            return Vec::new();
        }
        let notice = Notice::Recording {
            on: recording.is_some(),
            by: recording.as_ref().map(|r| r.by.clone()).unwrap_or_default(),
            since_ms: recording.as_ref().map_or(0, |r| r.since_ms),
            problem: problem.unwrap_or_default(),
        };
        match recording {
            Some(r) => self.recording.insert(meeting.to_owned(), r),
            None => self.recording.remove(meeting),
        };
        self.local_ids(meeting)
            .into_iter()
            .map(|to| Output::Notify {
                to,
                notice: notice.clone(),
            })
            .collect()
    }

    /// An id for something the driver owns that is not a participant (an incoming node
    /// link), unique among participant ids.
    pub fn reserve_id(&mut self) -> ParticipantId {
        ParticipantId(self.next_id())
    }

    /// Who `id` is and what it sends (links have no info).
    pub fn info(&self, id: ParticipantId) -> Option<ParticipantInfo> {
        self.participants
            .get(&id)
            .filter(|p| p.kind.person())
            .map(|p| ParticipantInfo::new(id, &p.name, p.state, p.key.as_deref()))
    }

    /// The browsers attached to this node in `meeting`, in join order.
    pub fn local_participants(&self, meeting: &str) -> Vec<ParticipantInfo> {
        self.meetings.get(meeting).map_or_else(Vec::new, |m| {
            m.participants
                .iter()
                .filter_map(|id| {
                    self.participants
                        .get(id)
                        .filter(|p| p.kind == Kind::Local)
                        .map(|p| ParticipantInfo::new(*id, &p.name, p.state, p.key.as_deref()))
                })
                .collect()
        })
    }

    /// What kind of participant `id` is.
    pub fn kind(&self, id: ParticipantId) -> Option<Kind> {
        self.participants.get(&id).map(|p| p.kind)
    }

    fn add(
        &mut self,
        meeting: &str,
        name: &str,
        kind: Kind,
        state: MediaState,
        key: Option<String>,
        now: Instant,
    ) -> Result<(ParticipantId, Vec<Output>), JoinError> {
        let name = name.trim();
        let chars = name.chars().count();
        if chars == 0 || chars > self.limits.max_name_chars || name.chars().any(char::is_control) {
            return Err(JoinError::BadName {
                max: self.limits.max_name_chars,
            });
        }
        let max = self.limits.participants_per_meeting;
        if kind.person() && self.visible_count(meeting) >= max {
            return Err(JoinError::MeetingFull { max });
        }

        let id = ParticipantId(self.next_id());
        let me = ParticipantInfo::new(id, name, state, key.as_deref());
        let my_room = room_in(self.rooms.get(meeting), key.as_deref());
        let room = self.meetings.entry(meeting.to_owned()).or_default();
        let mut out = Vec::new();

        let mut others = Vec::with_capacity(room.participants.len());
        for &other in &room.participants {
            let Some(p) = self.participants.get(&other) else {
                continue;
            };
            if p.kind.person() {
                others.push(ParticipantInfo::new(
                    other,
                    &p.name,
                    p.state,
                    p.key.as_deref(),
                ));
            }
            if p.kind == Kind::Local && kind.person() {
                out.push(Output::Notify {
                    to: other,
                    notice: Notice::ParticipantJoined {
                        participant: me.clone(),
                    },
                });
            }
        }
        if kind == Kind::Local {
            out.insert(
                0,
                Output::Notify {
                    to: id,
                    notice: Notice::Welcome {
                        you: id,
                        participants: others,
                        chat: room
                            .chat
                            .iter()
                            .filter(|(r, _)| *r == my_room || *r == EVERY_ROOM)
                            .map(|(_, m)| m.clone())
                            .collect(),
                        recording: self.recording.get(meeting).cloned(),
                    },
                },
            );
        }
        room.participants.push(id);
        if kind.person() {
            out.push(Output::Arrived {
                meeting: meeting.to_owned(),
                participant: id,
                name: name.to_owned(),
                key: key.clone(),
            });
        }

        let mut subscribed = Vec::new();
        if kind != Kind::Remote {
            for &other in &room.participants {
                let Some(p) = self.participants.get(&other) else {
                    continue;
                };
                if !subscribes(p.kind, kind) {
                    continue;
                }
                let away = apart(p.room, (kind, my_room));
                for (&_, &track) in &p.published {
                    if let Some(t) = self.tracks.get_mut(&track) {
                        subscribed.push(track);
                        if !away {
                            t.viewers.expect(id, now);
                        }
                        out.push(Output::Subscribe {
                            subscriber: id,
                            track,
                            publisher: other,
                            source: t.source,
                        });
                        // A camera nobody watched resumes while the newcomer negotiates.
                        out.extend(Self::layers_output(track, t, now));
                    }
                }
            }
        }

        self.participants.insert(
            id,
            Participant {
                kind,
                meeting: meeting.to_owned(),
                name: name.to_owned(),
                state,
                key,
                listener: false,
                silenced: false,
                room: my_room,
                published: BTreeMap::new(),
                subscribed,
                views: HashMap::new(),
                passes: HashMap::new(),
                estimate: None,
                allocated_for: None,
                growth: Growth::default(),
                bitrate_told: (0, 0),
                paused_told: Vec::new(),
                flat: None,
                reset_wait: RESET_FIRST,
                narrowing: Narrowing::default(),
            },
        );
        if kind.person() {
            // With rooms open, every browser here learns where the newcomer is.
            if let Some(notice) = self.rooms_notice(meeting) {
                for to in self.local_ids(meeting) {
                    out.push(Output::Notify {
                        to,
                        notice: notice.clone(),
                    });
                }
            }
        }
        if kind == Kind::Local {
            if let Some(key) = self.spotlights.get(meeting) {
                out.push(Output::Notify {
                    to: id,
                    notice: Notice::Spotlight {
                        key: Some(key.clone()),
                    },
                });
            }
            // Someone already speaking in its room is news to the newcomer: the others were
            // told. Another room's speakers stay in that room.
            let speaking = self.speaking_now(meeting);
            out.extend(
                self.speaking_notices(meeting, &speaking, vec![id])
                    .into_iter()
                    .filter(|o| {
                        !matches!(o, Output::Notify { notice: Notice::Speaking { ids }, .. } if ids.is_empty())
                    }),
            );
        }
        Ok((id, out))
    }

    fn visible_count(&self, meeting: &str) -> usize {
        self.meetings.get(meeting).map_or(0, |m| {
            m.participants
                .iter()
                .filter(|id| self.participants.get(id).is_some_and(|p| p.kind.person()))
                .count()
        })
    }

    /// Remove a participant: its tracks are unsubscribed everywhere, its own subscriptions
    /// dropped, and the meeting told. Unknown ids are ignored (leaving twice is harmless).
    pub fn leave(&mut self, id: ParticipantId, _now: Instant) -> Vec<Output> {
        let Some(p) = self.participants.remove(&id) else {
            return Vec::new();
        };
        let mut out = Vec::new();

        // Stop receiving: drop this participant from the forwarding sets it was in.
        for track in &p.subscribed {
            if let Some(t) = self.tracks.get_mut(track) {
                t.viewers.remove(id);
            }
        }

        let room_members: Vec<ParticipantId> = self
            .meetings
            .get(&p.meeting)
            .map(|m| m.participants.clone())
            .unwrap_or_default();

        // Stop sending: everyone who receives one of its tracks gets an Unsubscribe.
        for track in p.published.values() {
            if self.tracks.remove(track).is_none() {
                continue;
            }
            for &other in &room_members {
                if other == id {
                    continue;
                }
                if let Some(o) = self.participants.get_mut(&other) {
                    if let Some(pos) = o.subscribed.iter().position(|t| t == track) {
                        o.subscribed.swap_remove(pos);
                        out.push(Output::Unsubscribe {
                            subscriber: other,
                            track: *track,
                        });
                    }
                }
            }
        }

        if p.kind.person() {
            out.push(Output::Departed {
                meeting: p.meeting.clone(),
                participant: id,
            });
        }
        // Nobody keeps a view of someone who is gone.
        for other in &room_members {
            if let Some(o) = self.participants.get_mut(other) {
                o.views.retain(|(publisher, _), _| *publisher != id);
                o.passes.retain(|(publisher, _), _| *publisher != id);
            }
        }
        if let Some(room) = self.meetings.get_mut(&p.meeting) {
            room.participants.retain(|x| *x != id);
            if p.kind.person() {
                for &other in &room.participants {
                    if self
                        .participants
                        .get(&other)
                        .is_some_and(|o| o.kind == Kind::Local)
                    {
                        out.push(Output::Notify {
                            to: other,
                            notice: Notice::ParticipantLeft { id },
                        });
                    }
                }
            }
            // An empty meeting keeps nothing but its chat; forget it entirely when that is
            // empty too, so meetings nobody uses cost nothing.
            // The spotlight stays, as the rooms do, for whoever joins next: a join that
            // raced this leave would otherwise miss it (the driver tells it again before
            // each join, from the meeting's rules, and that may have come first).
            if room.participants.is_empty() {
                self.speakers.remove(&p.meeting);
            } else if let Some(s) = self.speakers.get_mut(&p.meeting) {
                s.forget(id);
            }
            if room.participants.is_empty() && room.chat.is_empty() {
                self.meetings.remove(&p.meeting);
            }
        }
        out
    }

    /// A participant started sending a track. Everyone else in the meeting subscribes.
    pub fn publish(
        &mut self,
        id: ParticipantId,
        source: Source,
        kind: TrackKind,
        now: Instant,
    ) -> Result<(TrackId, Vec<Output>), PublishError> {
        if source.kind() != kind {
            return Err(PublishError::KindMismatch);
        }
        let p = self
            .participants
            .get(&id)
            .ok_or(PublishError::UnknownParticipant)?;
        if !p.kind.person() {
            return Err(PublishError::UnknownParticipant);
        }
        if p.listener {
            return Err(PublishError::Listener);
        }
        if p.published.contains_key(&source.into()) {
            return Err(PublishError::Duplicate);
        }
        let publisher = (p.kind, p.room);
        let meeting = p.meeting.clone();
        let track = TrackId(self.next_id());
        self.tracks.insert(
            track,
            Track {
                publisher: id,
                source,
                viewers: Viewers::default(),
            },
        );
        if let Some(p) = self.participants.get_mut(&id) {
            p.published.insert(source.into(), track);
        }

        let mut out = Vec::new();
        let members = self
            .meetings
            .get(&meeting)
            .map(|m| m.participants.as_slice())
            .unwrap_or_default();
        for &other in members {
            if other == id {
                continue;
            }
            if let Some(o) = self.participants.get_mut(&other) {
                if !subscribes(publisher.0, o.kind) {
                    continue;
                }
                o.subscribed.push(track);
                if !apart(publisher.1, (o.kind, o.room)) {
                    if let Some(t) = self.tracks.get_mut(&track) {
                        t.viewers.expect(other, now);
                    }
                }
                out.push(Output::Subscribe {
                    subscriber: other,
                    track,
                    publisher: id,
                    source,
                });
            }
        }
        Ok((track, out))
    }

    /// Carry a remote participant's `track` on node link `link` too: a relaying node
    /// forwards between two nodes that cannot reach each other. (The usual rule keeps remote
    /// tracks off links, so that nothing loops; the driver decides the relayed pairs.)
    pub fn relay_track(&mut self, link: ParticipantId, track: TrackId) -> Vec<Output> {
        let Some(t) = self.tracks.get(&track) else {
            return Vec::new();
        };
        let (publisher, source) = (t.publisher, t.source);
        let same_meeting = self.meeting_of(publisher) == self.meeting_of(link);
        let Some(l) = self.participants.get_mut(&link) else {
            return Vec::new();
        };
        if l.kind != Kind::Link || !same_meeting || l.subscribed.contains(&track) {
            return Vec::new();
        }
        l.subscribed.push(track);
        vec![Output::Subscribe {
            subscriber: link,
            track,
            publisher,
            source,
        }]
    }

    /// Stop carrying a remote participant's `track` on node link `link`: the two nodes it
    /// was relayed between now reach each other directly.
    pub fn unrelay_track(&mut self, link: ParticipantId, track: TrackId) -> Vec<Output> {
        let Some(l) = self.participants.get_mut(&link) else {
            return Vec::new();
        };
        let Some(pos) = l.subscribed.iter().position(|t| *t == track) else {
            return Vec::new();
        };
        if l.kind != Kind::Link {
            return Vec::new();
        }
        l.subscribed.swap_remove(pos);
        if let Some(t) = self.tracks.get_mut(&track) {
            t.viewers.remove(link);
        }
        vec![Output::Unsubscribe {
            subscriber: link,
            track,
        }]
    }

    /// The track participant `id` publishes from `source`, if any.
    pub fn track_of(&self, id: ParticipantId, source: Source) -> Option<TrackId> {
        self.participants
            .get(&id)?
            .published
            .get(&source.into())
            .copied()
    }

    /// Stop a track (its node link went away; it may be published again on a new one):
    /// everyone receiving it unsubscribes.
    pub fn unpublish(&mut self, track: TrackId) -> Vec<Output> {
        let Some(t) = self.tracks.remove(&track) else {
            return Vec::new();
        };
        if let Some(p) = self.participants.get_mut(&t.publisher) {
            p.published.retain(|_, tr| *tr != track);
        }
        let mut out = Vec::new();
        for (&id, p) in self.participants.iter_mut() {
            if let Some(pos) = p.subscribed.iter().position(|x| *x == track) {
                p.subscribed.swap_remove(pos);
                out.push(Output::Unsubscribe {
                    subscriber: id,
                    track,
                });
            }
        }
        // Stable order for the driver and for tests.
        out.sort_by_key(|o| match o {
            Output::Unsubscribe { subscriber, .. } => *subscriber,
            _ => ParticipantId(0),
        });
        out
    }

    /// Tracks `id` publishes.
    /// Make `id` a listener (or not): from now on its tracks are refused. Call it right
    /// after the join, before the participant's media arrives.
    pub fn set_listener(&mut self, id: ParticipantId, listener: bool) {
        if let Some(p) = self.participants.get_mut(&id) {
            p.listener = listener;
        }
    }

    pub fn published(&self, id: ParticipantId) -> Vec<TrackId> {
        self.participants
            .get(&id)
            .map(|p| p.published.values().copied().collect())
            .unwrap_or_default()
    }

    /// The driver negotiated the outgoing stream of `track` to `subscriber`: start forwarding,
    /// and ask the publisher for a keyframe so the new viewer sees a picture at once.
    /// Returns nothing if the track or the subscription went away meanwhile.
    pub fn subscription_ready(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        now: Instant,
    ) -> Vec<Output> {
        let Some(sub) = self.participants.get(&subscriber) else {
            return Vec::new();
        };
        if !sub.subscribed.contains(&track) {
            return Vec::new();
        }
        let Some(t) = self.tracks.get_mut(&track) else {
            return Vec::new();
        };
        if t.viewers.contains(subscriber) {
            return Vec::new();
        }
        let key = (t.publisher, t.source.into());
        let mut out = Vec::new();
        if passes(sub.kind, t) {
            // A node link's stream of a camera in layers carries each layer its node needs.
            let wanted = sub
                .narrowing
                .apply(sub.passes.get(&key).copied().unwrap_or(Layers::ALL));
            t.viewers.add_passing(subscriber, wanted);
            for l in wanted.and(t.viewers.layers()).iter() {
                t.viewers
                    .keyframe_due(Some(l), now, self.limits.keyframe_interval, true);
                out.push(Output::RequestKeyframe {
                    publisher: t.publisher,
                    track,
                    layer: Some(l),
                });
            }
            out.extend(Self::layers_output(track, t, now));
            return out;
        }
        let view = sub.views.get(&key).copied();
        let want = want_for(view);
        let away = self
            .participants
            .get(&t.publisher)
            .is_some_and(|p| apart(p.room, (sub.kind, sub.room)));
        t.viewers.add(subscriber, want, away);
        if t.source.kind() == TrackKind::Video && !away {
            // A new viewer always gets its keyframe, even right after another request:
            // waiting out the rate limit would leave its tile black.
            if let Want::Layer(l) = want {
                let layer = (t.viewers.layers() != Layers::NONE).then_some(l);
                t.viewers
                    .keyframe_due(layer, now, self.limits.keyframe_interval, true);
                out.push(Output::RequestKeyframe {
                    publisher: t.publisher,
                    track,
                    layer,
                });
            }
        }
        out.extend(Self::layers_output(track, t, now));
        out.extend(self.reallocate(subscriber, now));
        out
    }

    /// Who receives `track` right now (subscribed, negotiated, in its room). Empty for
    /// unknown tracks.
    pub fn subscribers(&self, track: TrackId) -> Vec<ParticipantId> {
        self.tracks
            .get(&track)
            .map(|t| t.viewers.receiving())
            .unwrap_or_default()
    }

    /// Who gets one packet of `track` (of simulcast `layer`; `keyframe`: it starts one),
    /// each with the stretch of their stream (see [`crate::Gate`]), into `out`. A viewer's
    /// video switches layers, starts and resumes only at a keyframe.
    pub fn route(
        &mut self,
        track: TrackId,
        layer: Option<Layer>,
        keyframe: bool,
        out: &mut Vec<Route>,
    ) {
        match self.tracks.get_mut(&track) {
            Some(t) => {
                let video = t.source.kind() == TrackKind::Video;
                t.viewers.route(video, layer, keyframe, out);
            }
            None => out.clear(),
        }
    }

    /// A packet of `track` (a voice) said its level: `dbov` from −127 (silence) to 0. When
    /// who speaks in the meeting changes, everyone here is told (at most every 250 ms).
    pub fn heard(&mut self, track: TrackId, dbov: i8, now: Instant) -> Vec<Output> {
        let Some(t) = self.tracks.get(&track) else {
            return Vec::new();
        };
        if t.source != Source::Mic {
            return Vec::new();
        }
        let who = t.publisher;
        let Some(p) = self.participants.get(&who) else {
            return Vec::new();
        };
        // Per voice packet: no copy of the meeting's id unless it is new here.
        let speakers = match self.speakers.get_mut(p.meeting.as_str()) {
            Some(s) => s,
            None => self.speakers.entry(p.meeting.clone()).or_default(),
        };
        speakers.heard(who, dbov, now);
        let Some(ids) = speakers.changed(now) else {
            return Vec::new();
        };
        let meeting = p.meeting.clone();
        self.speaking_notices(&meeting, &ids, self.local_ids(&meeting))
    }

    /// Tell each of `to` who of `ids` speaks in their own breakout room (each hears only
    /// their room, so they are told only of its speakers).
    fn speaking_notices(
        &self,
        meeting: &str,
        ids: &[ParticipantId],
        to: Vec<ParticipantId>,
    ) -> Vec<Output> {
        let room_of = |id: &ParticipantId| {
            self.participants
                .get(id)
                .filter(|p| p.meeting == meeting)
                .map(|p| p.room)
        };
        to.into_iter()
            .map(|to| {
                let mine = room_of(&to);
                let ids = ids.iter().copied().filter(|s| room_of(s) == mine).collect();
                Output::Notify {
                    to,
                    notice: Notice::Speaking { ids },
                }
            })
            .collect()
    }

    /// Who was last said to speak in `meeting` (all rooms), loudest first.
    fn speaking_now(&self, meeting: &str) -> Vec<ParticipantId> {
        self.speakers
            .get(meeting)
            .map(|s| s.speaking().to_vec())
            .unwrap_or_default()
    }

    /// The publisher of `track` sends it in these simulcast layers (from its offer).
    pub fn set_simulcast(&mut self, track: TrackId, layers: Layers) {
        if let Some(t) = self.tracks.get_mut(&track) {
            if t.source.kind() == TrackKind::Video {
                t.viewers.set_layers(layers);
            }
        }
    }

    /// What `viewer`'s page shows of the others' video now: each tile's publisher, source
    /// and view (tiles it does not list keep what they had). Each of its streams moves to
    /// the layer that fits (none for a tile it does not show), at that layer's keyframe,
    /// asked for now; the publishers are told of layers that are needed again.
    pub fn set_view(
        &mut self,
        viewer: ParticipantId,
        tiles: &[(ParticipantId, Source, TileView)],
        now: Instant,
    ) -> Vec<Output> {
        let cap = self.limits.participants_per_meeting * 3;
        let Some(v) = self.participants.get_mut(&viewer) else {
            return Vec::new();
        };
        for &(publisher, source, view) in tiles {
            if v.views.len() >= cap && !v.views.contains_key(&(publisher, source.into())) {
                continue;
            }
            v.views.insert((publisher, source.into()), view);
        }
        self.reallocate(viewer, now)
    }

    /// Whether `subscriber`'s stream of `track` carries several layers side by side, and
    /// which the publisher sends: a node link's stream of a camera in layers, so the other
    /// node chooses for each of its viewers (the driver negotiates one stream per layer).
    pub fn link_layers(&self, subscriber: ParticipantId, track: TrackId) -> Option<Layers> {
        let sub = self.participants.get(&subscriber)?;
        let t = self.tracks.get(&track)?;
        passes(sub.kind, t).then(|| t.viewers.layers())
    }

    /// What the publisher of video `track` (in layers) is asked to send now: for another
    /// node's track, what this node asks that node's link for
    /// ([`crate::LinkView::layers`]). `None` for a track without layers.
    pub fn asked_layers(&self, track: TrackId) -> Option<Layers> {
        let t = self.tracks.get(&track)?;
        (t.viewers.layers() != Layers::NONE).then(|| t.viewers.asked())
    }

    /// Node `link`'s node needs these layers of each listed video (publisher, source,
    /// layers; videos it does not list keep what they had): its streams of several layers
    /// start the new ones at their keyframes, asked for now, and stop the others.
    pub fn set_passing(
        &mut self,
        link: ParticipantId,
        wanted: &[(ParticipantId, Source, Layers)],
        now: Instant,
    ) -> Vec<Output> {
        let cap = self.limits.participants_per_meeting * 3;
        let found: Vec<((ParticipantId, SourceKey), Layers, Option<TrackId>)> = wanted
            .iter()
            .map(|&(publisher, source, layers)| {
                let key = (publisher, SourceKey::from(source));
                let track = self
                    .participants
                    .get(&publisher)
                    .and_then(|p| p.published.get(&key.1))
                    .copied();
                (key, layers, track)
            })
            .collect();
        let Some(l) = self
            .participants
            .get_mut(&link)
            .filter(|l| l.kind == Kind::Link)
        else {
            return Vec::new();
        };
        let mut tracks = Vec::new();
        for (key, layers, track) in found {
            if l.passes.len() >= cap && !l.passes.contains_key(&key) {
                continue;
            }
            l.passes.insert(key, layers);
            tracks.extend(track.map(|t| (t, l.narrowing.apply(layers))));
        }
        self.pass(link, tracks, now)
    }

    /// The share of node `link`'s packets its node did not get over the last second (from
    /// its transport-wide feedback; `None`: nothing reported). A path that keeps losing
    /// carries fewer layers of each camera, and more again after a while
    /// (`narrow.rs`).
    pub fn link_loss(
        &mut self,
        link: ParticipantId,
        loss: Option<f32>,
        now: Instant,
    ) -> Vec<Output> {
        let Some(l) = self
            .participants
            .get_mut(&link)
            .filter(|l| l.kind == Kind::Link)
        else {
            return Vec::new();
        };
        if !l.narrowing.report(loss, now) {
            return Vec::new();
        }
        let narrowing = l.narrowing.clone();
        let asked: Vec<_> = l.passes.iter().map(|(k, v)| (*k, *v)).collect();
        let mut tracks = Vec::new();
        for (key, layers) in asked {
            let track = self
                .participants
                .get(&key.0)
                .and_then(|p| p.published.get(&key.1))
                .copied();
            tracks.extend(track.map(|t| (t, narrowing.apply(layers))));
        }
        tracks.sort_by_key(|(t, _)| *t);
        self.pass(link, tracks, now)
    }

    /// The largest layer node `link`'s path carries now for loss on it (`None`: every
    /// layer its node asks for, or not a link).
    pub fn link_cap(&self, link: ParticipantId) -> Option<Layer> {
        self.participants.get(&link)?.narrowing.cap()
    }

    /// Node `link`'s streams of these tracks carry these layers from now on: the new ones
    /// start at their keyframes, asked for now.
    fn pass(
        &mut self,
        link: ParticipantId,
        tracks: Vec<(TrackId, Layers)>,
        now: Instant,
    ) -> Vec<Output> {
        let interval = self.limits.keyframe_interval;
        let mut out = Vec::new();
        for (track, layers) in tracks {
            let Some(t) = self.tracks.get_mut(&track) else {
                continue;
            };
            let Some(new) = t.viewers.set_passing(link, layers) else {
                continue;
            };
            for l in new.iter() {
                if t.viewers.keyframe_due(Some(l), now, interval, false) {
                    out.push(Output::RequestKeyframe {
                        publisher: t.publisher,
                        track,
                        layer: Some(l),
                    });
                }
            }
            out.extend(Self::layers_output(track, t, now));
        }
        out
    }

    /// What this node's subscribers of video `track` show of it at most: visible if any
    /// tile of it is, as high as the largest. `None`: one of them does not say (a page that
    /// sent no view, a recording, a link whose node sent none), so the whole picture is
    /// needed. A subscription still being negotiated counts (its page will show the tile,
    /// and the other node must not pause the camera meanwhile); a viewer in another
    /// breakout room does not. Nobody subscribed: not visible. Another node's track asks its node for this (`MeetingEvent::Views`), so the
    /// link carries only what is watched here.
    pub fn shown(&self, track: TrackId) -> Option<TileView> {
        let Some(t) = self.tracks.get(&track) else {
            return Some(TileView {
                visible: false,
                height: 0,
            });
        };
        let mut most = TileView {
            visible: false,
            height: 0,
        };
        let key = (t.publisher, t.source.into());
        let from = self.participants.get(&t.publisher).map_or(0, |p| p.room);
        let negotiating = self
            .participants
            .get(&t.publisher)
            .and_then(|p| self.meetings.get(&p.meeting))
            .into_iter()
            .flat_map(|m| &m.participants)
            .filter(|id| !t.viewers.contains(**id))
            .filter(|id| {
                self.participants
                    .get(id)
                    .is_some_and(|p| p.subscribed.contains(&track))
            });
        for viewer in t.viewers.ready().iter().chain(negotiating) {
            let p = self.participants.get(viewer)?;
            // Someone in another room here does not watch it.
            if apart(from, (p.kind, p.room)) {
                continue;
            }
            let v = p.views.get(&key).copied()?;
            if v.visible && v.height > 0 {
                most.visible = true;
                most.height = most.height.max(v.height);
            }
        }
        Some(most)
    }

    /// The bandwidth estimate toward `viewer` is now `bps` (from its connection's
    /// transport-wide feedback): its videos are shared out again when it moved by a tenth.
    pub fn set_estimate(&mut self, viewer: ParticipantId, bps: u64, now: Instant) -> Vec<Output> {
        let Some(v) = self.participants.get_mut(&viewer) else {
            return Vec::new();
        };
        v.estimate = Some(bps);
        if let Some((at, _)) = v.flat {
            if bps.saturating_mul(20) > at.saturating_mul(21) {
                v.flat = Some((bps, now));
            }
        }
        let moved = v
            .allocated_for
            .is_none_or(|at| bps.abs_diff(at) * 10 > at.max(1));
        if moved {
            self.reallocate(viewer, now)
        } else {
            Vec::new()
        }
    }

    /// `track`'s simulcast `layer` (`None`: its one picture, or its audio) arrives at
    /// `bps` bits per second (the driver measures it about once a second).
    pub fn set_rate(&mut self, track: TrackId, layer: Option<Layer>, bps: u64) {
        if let Some(t) = self.tracks.get_mut(&track) {
            t.viewers.set_rate(layer, bps);
        }
    }

    /// What `viewer` receives of each video, and why: (publisher, source, what its stream
    /// carries, what it wants, why), and the estimate toward it.
    pub fn reception(&self, viewer: ParticipantId) -> Option<Reception> {
        let v = self.participants.get(&viewer)?;
        let mut videos = Vec::new();
        for track in &v.subscribed {
            let Some(t) = self.tracks.get(track) else {
                continue;
            };
            if t.source.kind() != TrackKind::Video {
                continue;
            }
            if t.viewers.is_apart(viewer) {
                continue;
            }
            let Some((want, reason)) = t.viewers.want_of(viewer) else {
                continue;
            };
            videos.push(Received {
                publisher: t.publisher,
                source: t.source,
                carries: t.viewers.current(viewer),
                want,
                reason,
                layers: if t.viewers.is_passing(viewer) {
                    t.viewers
                        .carrying(viewer)
                        .into_iter()
                        .flatten()
                        .map(Layer::rid)
                        .collect()
                } else {
                    Vec::new()
                },
            });
        }
        Some(Reception {
            estimate: v.estimate,
            videos,
        })
    }

    /// Share `viewer`'s downlink among the videos it receives again (its view, its
    /// estimate or what the videos cost changed): each stream moves to its new layer at
    /// that layer's keyframe; a stream grows again only a while after the link made one
    /// smaller.
    fn reallocate(&mut self, viewer: ParticipantId, now: Instant) -> Vec<Output> {
        let Some(v) = self.participants.get(&viewer) else {
            return Vec::new();
        };
        let mut videos = Vec::new();
        let mut ids = Vec::new();
        let mut idle = Vec::new();
        let mut idle_out = Vec::new();
        let mut audio = 0u64;
        for &track in &v.subscribed {
            let Some(t) = self.tracks.get(&track) else {
                continue;
            };
            // Not negotiated yet, or in another room: nothing of it comes. A node link's
            // stream of several layers carries what its node asks for.
            if !t.viewers.contains(viewer)
                || t.viewers.is_apart(viewer)
                || t.viewers.is_passing(viewer)
            {
                continue;
            }
            if t.source.kind() == TrackKind::Audio {
                audio += t.viewers.rates(false)[0];
                continue;
            }
            let view = v.views.get(&(t.publisher, t.source.into())).copied();
            // A video that sends nothing (a screen not shared, a camera-less person's camera,
            // a camera nobody wanted until now) costs nothing and is not in the way of the
            // others; it is let through as its tile says, so it shows at once when it starts
            // (and a camera's layers are asked for).
            if !t.viewers.sending() {
                idle.push((track, want_for(view)));
                continue;
            }
            let speaks = self
                .speakers
                .get(&v.meeting)
                .is_some_and(|s| s.speaking().contains(&t.publisher));
            let spotlit = self.spotlights.get(&v.meeting).is_some_and(|key| {
                self.participants
                    .get(&t.publisher)
                    .is_some_and(|p| p.key.as_ref() == Some(key))
            });
            videos.push(Video {
                // A screen share and the spotlight first, then the speakers' cameras, then
                // the others.
                priority: match (t.source, speaks) {
                    (Source::Screen, _) => 0,
                    (Source::Camera, _) if spotlit => 0,
                    (_, true) => 1,
                    _ => 2,
                },
                cap: want_for(view),
                layers: t.viewers.layers(),
                rates: t.viewers.rates(true),
            });
            ids.push(track);
        }
        let estimate = v.estimate;
        let by_view = || -> Vec<(Want, Reason)> {
            videos
                .iter()
                .map(|x| match x.cap {
                    Want::Off => (Want::Off, Reason::Hidden),
                    w => (w, Reason::View),
                })
                .collect()
        };
        // What the link keeps, and what it grows to: a stream shrinks when the estimate no
        // longer carries it, and grows only into four fifths of it (the estimate is a
        // guess, retransmissions and RTCP come on top, and a stream that flaps between
        // layers costs a keyframe at each change).
        let (keep, grow) = match estimate {
            Some(e) => (
                allocate(e / 20 * 19, audio, &videos),
                allocate(e / GROW_DIV * GROW_MUL, audio, &videos),
            ),
            None => (by_view(), by_view()),
        };
        let hold = !v.growth.may_grow(estimate, now);
        // The estimate itself holds a stream below its tile (not only the wait after a drop).
        let limited = grow.iter().any(|(_, reason)| *reason == Reason::Bandwidth);
        let told = v.bitrate_told;
        let interval = self.limits.keyframe_interval;
        for (track, want) in idle {
            let Some(t) = self.tracks.get_mut(&track) else {
                continue;
            };
            let reason = if want == Want::Off {
                Reason::Hidden
            } else {
                Reason::View
            };
            t.viewers.set_reason(viewer, reason);
            // Nothing comes yet: its keyframe is asked for when it starts (`set_state`, or
            // `tick` while a viewer waits for its first picture).
            t.viewers.set_want(viewer, want);
            idle_out.extend(Self::layers_output(track, t, now));
        }
        let (mut shrank, mut grew) = (false, false);
        let (mut minimum, mut desired) = (audio, audio);
        let mut out = idle_out;
        // The smallest step up any stream could take: the estimator is kept busy up to it
        // (padding), so it finds out whether the link would carry it.
        let mut next_step: Option<u64> = None;
        let mut paused = Vec::new();
        for (((track, video), kept), grown) in ids.iter().zip(&videos).zip(keep).zip(grow) {
            let Some(t) = self.tracks.get_mut(track) else {
                continue;
            };
            let Some((old, was)) = t.viewers.want_of(viewer) else {
                continue;
            };
            // Held small by the link, a stream waits a while before growing, and grows a
            // layer at a time; a tile shown or made larger grows at once, as far as the link
            // allows.
            let (want, reason) = if rank(kept.0) < rank(old) {
                kept
            } else if rank(grown.0) > rank(old) && was == Reason::Bandwidth {
                if hold {
                    (old, Reason::Bandwidth)
                } else {
                    one_up(video, old, grown)
                }
            } else if rank(grown.0) > rank(old) {
                grown
            } else if old == kept.0 {
                kept
            } else {
                (old, Reason::Bandwidth)
            };
            if rank(want) < rank(old) && reason == Reason::Bandwidth {
                shrank = true;
            }
            if rank(want) > rank(old) && was == Reason::Bandwidth {
                grew = true;
            }
            t.viewers.set_reason(viewer, reason);
            if want == Want::Off && reason == Reason::Bandwidth && t.source == Source::Camera {
                paused.push(t.publisher);
            }
            if let Some(layer) = t.viewers.set_want(viewer, want) {
                if t.viewers.keyframe_due(layer, now, interval, false) {
                    out.push(Output::RequestKeyframe {
                        publisher: t.publisher,
                        track: *track,
                        layer,
                    });
                }
            }
            out.extend(Self::layers_output(*track, t, now));
            minimum += cost(video, want);
            desired += cost(video, video.cap);
            // Held below its tile by the link: the next step is worth finding room for.
            if reason == Reason::Bandwidth {
                if let Some(up) = step_up(video, want) {
                    next_step = Some(next_step.map_or(up, |n| n.min(up)));
                }
            }
        }
        // Only while a stream is held small by the link: kept busy up to where its next
        // step would grow (str0m pads, never above the estimate), and probing for what the
        // tiles need. Otherwise nothing is padded or probed: nothing would use it.
        let (minimum, desired) = match next_step {
            Some(step) => (
                (minimum + step) / GROW_MUL * GROW_DIV,
                desired / GROW_MUL * GROW_DIV,
            ),
            None => (minimum, minimum),
        };
        paused.sort_unstable();
        if let Some(v) = self.participants.get_mut(&viewer) {
            // Held back from now: the estimate has that long to grow before it is started
            // afresh (not since it last grew, maybe long before the path filled).
            match (limited, v.flat) {
                (true, None) => v.flat = estimate.map(|e| (e, now)),
                (false, Some(_)) => {
                    v.flat = None;
                    v.reset_wait = RESET_FIRST;
                }
                _ => {}
            }
            if v.paused_told != paused {
                // Its page shows those tiles without a picture, and says why.
                v.paused_told = paused.clone();
                out.push(Output::Notify {
                    to: viewer,
                    notice: Notice::Paused { ids: paused },
                });
            }
            v.allocated_for = estimate;
            if shrank {
                v.growth.shrank(estimate, now);
            } else if grew {
                v.growth.grew(estimate, now);
            } else {
                v.growth.settle(now);
            }
            let moved = |a: u64, b: u64| a.abs_diff(b) * 20 > b.max(1);
            if estimate.is_some() && (moved(minimum, told.0) || moved(desired, told.1)) {
                v.bitrate_told = (minimum, desired);
                out.push(Output::Bitrate {
                    viewer,
                    minimum,
                    desired,
                });
            }
        }
        out
    }

    /// What the publisher of `t` should be told of its layers, if that changed.
    fn layers_output(track: TrackId, t: &mut Track, now: Instant) -> Option<Output> {
        t.viewers
            .layers_to_send(now)
            .map(|layers| Output::SendLayers {
                publisher: t.publisher,
                track,
                source: t.source,
                layers,
            })
    }

    /// Time passes (call it about once a second): layers nobody needed for a while are
    /// paused at their publishers, and keyframes a viewer waited too long for are asked
    /// for again.
    pub fn tick(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let mut ids: Vec<TrackId> = self.tracks.keys().copied().collect();
        ids.sort();
        for track in ids {
            let Some(t) = self.tracks.get_mut(&track) else {
                continue;
            };
            if t.source.kind() != TrackKind::Video {
                continue;
            }
            let simulcast = t.viewers.layers() != Layers::NONE;
            for l in t.viewers.overdue(now) {
                let layer = simulcast.then_some(l);
                if t.viewers
                    .keyframe_due(layer, now, self.limits.keyframe_interval, false)
                {
                    out.push(Output::RequestKeyframe {
                        publisher: t.publisher,
                        track,
                        layer,
                    });
                }
            }
            out.extend(Self::layers_output(track, t, now));
        }
        // An estimate that holds streams back and does not grow is started afresh.
        let mut flat: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, p)| p.flat.is_some())
            .map(|(id, _)| *id)
            .collect();
        flat.sort();
        for id in flat {
            let Some(v) = self.participants.get_mut(&id) else {
                continue;
            };
            let (Some(bps), Some((_, since))) = (v.estimate, v.flat) else {
                continue;
            };
            if now.saturating_duration_since(since) >= v.reset_wait {
                v.flat = Some((bps, now));
                v.reset_wait = (v.reset_wait * 2).min(RESET_MOST);
                // From no less than what it carries: its probes go a few times above it.
                let bps = bps.max(v.bitrate_told.0);
                out.push(Output::ResetEstimate { viewer: id, bps });
            }
        }
        // Streams held small after the link shrank may grow again.
        let mut viewers: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, p)| p.estimate.is_some())
            .map(|(id, _)| *id)
            .collect();
        viewers.sort();
        for viewer in viewers {
            out.extend(self.reallocate(viewer, now));
        }
        out
    }

    /// A viewer lost a picture (decoder error, packet loss) and asks for a keyframe of what
    /// its stream carries (`viewer`), or the node needs one of every layer viewers carry
    /// (`None`: a gap in the publisher's stream, a recording's new picture). Rate limited
    /// per layer; audio has no keyframes, so nothing is asked for it.
    pub fn keyframe_needed(
        &mut self,
        track: TrackId,
        viewer: Option<ParticipantId>,
        now: Instant,
    ) -> Vec<Output> {
        self.ask_keyframes(track, viewer, now, false)
    }

    /// Node link `viewer`'s stream of `layer` of `track` (one of several it carries) lost
    /// a picture: a keyframe of that layer, rate limited. A viewer with one stream of the
    /// track asks as in [`Sfu::keyframe_needed`].
    pub fn keyframe_needed_of(
        &mut self,
        track: TrackId,
        viewer: ParticipantId,
        layer: Layer,
        now: Instant,
    ) -> Vec<Output> {
        let interval = self.limits.keyframe_interval;
        let Some(t) = self.tracks.get_mut(&track) else {
            return Vec::new();
        };
        if !t.viewers.is_passing(viewer) {
            return self.keyframe_needed(track, Some(viewer), now);
        }
        if !t.viewers.carrying(viewer).contains(&Some(layer))
            || !t.viewers.keyframe_due(Some(layer), now, interval, false)
        {
            return Vec::new();
        }
        vec![Output::RequestKeyframe {
            publisher: t.publisher,
            track,
            layer: Some(layer),
        }]
    }

    /// What a viewer receives on `track` now comes from another source without starting at
    /// a keyframe (the publisher restarted its sender): its decoder needs a keyframe of it
    /// at once, like a new viewer's, whatever the rate limit says.
    pub fn source_switched(
        &mut self,
        track: TrackId,
        viewer: ParticipantId,
        now: Instant,
    ) -> Vec<Output> {
        self.ask_keyframes(track, Some(viewer), now, true)
    }

    fn ask_keyframes(
        &mut self,
        track: TrackId,
        viewer: Option<ParticipantId>,
        now: Instant,
        force: bool,
    ) -> Vec<Output> {
        let interval = self.limits.keyframe_interval;
        let Some(t) = self.tracks.get_mut(&track) else {
            return Vec::new();
        };
        if t.source.kind() != TrackKind::Video {
            return Vec::new();
        }
        let simulcast = t.viewers.layers() != Layers::NONE;
        let layers: Vec<Option<Layer>> = match viewer {
            Some(v) if t.viewers.is_passing(v) => t.viewers.carrying(v),
            Some(v) => match t.viewers.current(v) {
                Some(c) => vec![c],
                // Nothing shown yet: it waits for the keyframe it was promised.
                None if t.viewers.contains(v) => Vec::new(),
                None => vec![None],
            },
            None if simulcast => t.viewers.carried(),
            None => vec![None],
        };
        let mut out = Vec::new();
        for layer in layers {
            let layer = layer.filter(|_| simulcast);
            if t.viewers.keyframe_due(layer, now, interval, force) {
                out.push(Output::RequestKeyframe {
                    publisher: t.publisher,
                    track,
                    layer,
                });
            }
        }
        out
    }

    /// A participant changed what it sends. Everyone else is told; a screen share that just
    /// started also asks for a keyframe so viewers see it at once.
    pub fn set_state(
        &mut self,
        id: ParticipantId,
        change: StateChange,
        now: Instant,
    ) -> Vec<Output> {
        let StateChange(state) = change;
        let Some(p) = self.participants.get_mut(&id) else {
            return Vec::new();
        };
        if p.state == state {
            return Vec::new();
        }
        let screen_started = state.screen && !p.state.screen;
        let camera_started = state.video && !p.state.video;
        p.state = state;
        let meeting = p.meeting.clone();
        let restarted: Vec<TrackId> = p
            .published
            .iter()
            .filter(|(k, _)| {
                (screen_started && **k == SourceKey::Screen)
                    || (camera_started && **k == SourceKey::Camera)
            })
            .map(|(_, t)| *t)
            .collect();

        let mut out = Vec::new();
        for track in restarted {
            out.extend(self.keyframe_needed(track, None, now));
        }
        self.notify_others(
            &meeting,
            id,
            |_| Notice::State {
                id,
                audio: state.audio,
                video: state.video,
                screen: state.screen,
                hand: state.hand,
            },
            &mut out,
        );
        out
    }

    /// A chat message from `id` to its meeting, stamped with the node's wall clock `at_ms`.
    /// Everyone in the meeting gets it, the sender included (so all see one order).
    pub fn chat(
        &mut self,
        id: ParticipantId,
        text: &str,
        at_ms: u64,
    ) -> Result<Vec<Output>, ChatError> {
        self.say(id, text, at_ms, false)
    }

    /// A chat message, to the sender's room or (`everyone`) to every breakout room at once
    /// and the main room, kept in every room's history: the caller decided that `id` may
    /// (the host or a moderator).
    pub fn say(
        &mut self,
        id: ParticipantId,
        text: &str,
        at_ms: u64,
        everyone: bool,
    ) -> Result<Vec<Output>, ChatError> {
        let p = self
            .participants
            .get(&id)
            .ok_or(ChatError::UnknownParticipant)?;
        let text = text.trim();
        let chars = text.chars().count();
        if chars == 0 || chars > self.limits.max_chat_chars {
            return Err(ChatError::BadText {
                max: self.limits.max_chat_chars,
            });
        }
        let message = ChatMessage {
            from: id,
            name: p.name.clone(),
            text: text.to_owned(),
            at: at_ms,
            everyone,
        };
        let meeting = p.meeting.clone();
        let said_in = if everyone { EVERY_ROOM } else { p.room };
        let Some(room) = self.meetings.get_mut(&meeting) else {
            return Err(ChatError::UnknownParticipant);
        };
        if room.chat.len() == self.limits.chat_history {
            room.chat.pop_front();
        }
        room.chat.push_back((said_in, message.clone()));
        let participants = &self.participants;
        // Said in a breakout room: heard in that room only.
        Ok(room
            .participants
            .iter()
            .filter(|to| {
                participants.get(to).is_some_and(|p| {
                    p.kind == Kind::Local && (said_in == EVERY_ROOM || p.room == said_in)
                })
            })
            .map(|&to| Output::Notify {
                to,
                notice: Notice::Chat {
                    message: message.clone(),
                },
            })
            .collect())
    }

    /// Open, change or close (`None`) `meeting`'s breakout rooms: everyone is put in their
    /// room, what crosses rooms stops being forwarded and what is in the room again starts
    /// at a keyframe asked for at once (subscriptions stay), and every browser here is told
    /// who is where.
    pub fn set_rooms(
        &mut self,
        meeting: &str,
        plan: Option<RoomPlan>,
        now: Instant,
    ) -> Vec<Output> {
        if self.rooms.get(meeting) == plan.as_ref() {
            // Nothing changed (the driver tells the rooms again at every join).
            return Vec::new();
        }
        // Another session (closed, or opened anew): what was said in its rooms stays there.
        let same_session = matches!((self.rooms.get(meeting), &plan),
            (Some(a), Some(b)) if (a.count, a.until_ms) == (b.count, b.until_ms));
        match plan {
            Some(p) => self.rooms.insert(meeting.to_owned(), p),
            None => self.rooms.remove(meeting),
        };
        if !same_session {
            if let Some(m) = self.meetings.get_mut(meeting) {
                m.chat.retain(|(room, _)| *room == 0 || *room == EVERY_ROOM);
            }
        }
        let Some(members) = self.meetings.get(meeting).map(|m| m.participants.clone()) else {
            return Vec::new();
        };
        let plan = self.rooms.get(meeting);
        for id in &members {
            if let Some(p) = self.participants.get_mut(id) {
                p.room = room_in(plan, p.key.as_deref());
            }
        }
        let mut out = Vec::new();
        // Every track of the meeting against every local viewer (links keep everything).
        let mut tracks: Vec<(TrackId, ParticipantId, Source, (Kind, u8))> = Vec::new();
        for id in &members {
            if let Some(p) = self.participants.get(id) {
                for &t in p.published.values() {
                    if let Some(track) = self.tracks.get(&t) {
                        tracks.push((t, *id, track.source, (p.kind, p.room)));
                    }
                }
            }
        }
        // Nobody is unsubscribed or subscribed: what crosses rooms stops being forwarded,
        // and what is in the room again starts at a keyframe (a move renegotiates nothing).
        let interval = self.limits.keyframe_interval;
        let mut moved = Vec::new();
        for viewer in &members {
            let Some(v) = self.participants.get(viewer) else {
                continue;
            };
            if !matches!(v.kind, Kind::Local | Kind::Recorder) {
                continue;
            }
            let me = (v.kind, v.room);
            let mut changed = false;
            for &(track, publisher, _, from) in &tracks {
                if publisher == *viewer || !v.subscribed.contains(&track) {
                    continue;
                }
                let Some(t) = self.tracks.get_mut(&track) else {
                    continue;
                };
                let away = apart(from.1, me);
                if t.viewers.contains(*viewer) {
                    if !t.viewers.set_apart(*viewer, away) {
                        continue;
                    }
                    changed = true;
                    if !away && t.source.kind() == TrackKind::Video {
                        if let Some((Want::Layer(l), _)) = t.viewers.want_of(*viewer) {
                            let layer = (t.viewers.layers() != Layers::NONE).then_some(l);
                            t.viewers.keyframe_due(layer, now, interval, true);
                            out.push(Output::RequestKeyframe {
                                publisher,
                                track,
                                layer,
                            });
                        }
                    }
                } else if away {
                    t.viewers.expect_not(*viewer);
                } else {
                    t.viewers.expect(*viewer, now);
                }
                // A camera paused while nobody in its room watched it resumes at once.
                out.extend(Self::layers_output(track, t, now));
            }
            if changed {
                moved.push(*viewer);
            }
        }
        for viewer in moved {
            out.extend(self.reallocate(viewer, now));
        }
        let notice = self.rooms_notice(meeting).unwrap_or(Notice::Rooms {
            count: 0,
            until_ms: 0,
            choose: false,
            rooms: BTreeMap::new(),
        });
        for to in self.local_ids(meeting) {
            out.push(Output::Notify {
                to,
                notice: notice.clone(),
            });
        }
        // Moved to another room: its speakers, not the old room's.
        let speaking = self.speaking_now(meeting);
        if !speaking.is_empty() {
            out.extend(self.speaking_notices(meeting, &speaking, self.local_ids(meeting)));
        }
        out
    }

    /// Put the camera of the person with `key` on everyone's stage in `meeting` (`None`:
    /// nobody's), as the meeting's rules decided: every browser here is told, and each
    /// one's downlink is shared out again (the spotlight comes first); whoever joins next
    /// is told. Kept while nobody is here, as the rooms are (the driver tells it again
    /// before each join, from the rules).
    pub fn set_spotlight(
        &mut self,
        meeting: &str,
        key: Option<String>,
        now: Instant,
    ) -> Vec<Output> {
        if self.spotlights.get(meeting) == key.as_ref() {
            return Vec::new();
        }
        match &key {
            Some(k) => self.spotlights.insert(meeting.to_owned(), k.clone()),
            None => self.spotlights.remove(meeting),
        };
        let mut out = Vec::new();
        for to in self.local_ids(meeting) {
            out.push(Output::Notify {
                to,
                notice: Notice::Spotlight { key: key.clone() },
            });
            // The stage changed: shared out afresh, the spotlight first, without waiting
            // out a hold from the link's last shrink.
            if let Some(v) = self.participants.get_mut(&to) {
                v.growth.restart();
            }
            out.extend(self.reallocate(to, now));
        }
        out
    }

    /// The browsers here in `meeting`, in join order.
    fn local_ids(&self, meeting: &str) -> Vec<ParticipantId> {
        self.meetings.get(meeting).map_or_else(Vec::new, |m| {
            m.participants
                .iter()
                .copied()
                .filter(|id| {
                    self.participants
                        .get(id)
                        .is_some_and(|p| p.kind == Kind::Local)
                })
                .collect()
        })
    }

    /// Who is in which breakout room of `meeting`, for its pages; none without rooms.
    fn rooms_notice(&self, meeting: &str) -> Option<Notice> {
        let plan = self.rooms.get(meeting)?;
        let rooms = self.meetings.get(meeting).map_or_else(BTreeMap::new, |m| {
            m.participants
                .iter()
                .filter_map(|id| {
                    self.participants
                        .get(id)
                        .filter(|p| p.kind.person() && p.room != 0)
                        .map(|p| (*id, p.room))
                })
                .collect()
        });
        Some(Notice::Rooms {
            count: plan.count,
            until_ms: plan.until_ms,
            choose: plan.choose,
            rooms,
        })
    }

    /// The participants of a meeting, in join order. Empty for unknown meetings.
    pub fn participants(&self, meeting: &str) -> Vec<ParticipantInfo> {
        self.meetings
            .get(meeting)
            .map(|m| {
                m.participants
                    .iter()
                    .filter_map(|id| {
                        self.participants
                            .get(id)
                            .filter(|p| p.kind.person())
                            .map(|p| ParticipantInfo::new(*id, &p.name, p.state, p.key.as_deref()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How much state the core holds, to check that nothing leaks.
    pub fn counts(&self) -> Counts {
        Counts {
            meetings: self.meetings.len(),
            participants: self.participants.len(),
            tracks: self.tracks.len(),
            subscriptions: self.participants.values().map(|p| p.subscribed.len()).sum(),
            forwarding: self.tracks.values().map(|t| t.viewers.len()).sum(),
        }
    }

    /// The meeting a participant is in.
    pub fn meeting_of(&self, id: ParticipantId) -> Option<&str> {
        self.participants.get(&id).map(|p| p.meeting.as_str())
    }

    /// Mute (or allow) `id` by a moderator's decision: while silenced, its microphone
    /// reaches nobody, whatever its own mute button says.
    pub fn set_silenced(&mut self, id: ParticipantId, silenced: bool) {
        if let Some(p) = self.participants.get_mut(&id) {
            p.silenced = silenced;
        }
    }

    /// Whether `track` must not be forwarded now (a silenced participant's microphone).
    pub fn withheld(&self, track: TrackId) -> bool {
        self.tracks.get(&track).is_some_and(|t| {
            t.source == Source::Mic
                && self
                    .participants
                    .get(&t.publisher)
                    .is_some_and(|p| p.silenced)
        })
    }

    /// Local participants of `meeting` whose checked key is `key`.
    pub fn with_key(&self, meeting: &str, key: &str) -> Vec<ParticipantId> {
        self.meetings.get(meeting).map_or_else(Vec::new, |m| {
            m.participants
                .iter()
                .copied()
                .filter(|id| {
                    self.participants
                        .get(id)
                        .is_some_and(|p| p.kind == Kind::Local && p.key.as_deref() == Some(key))
                })
                .collect()
        })
    }

    /// Whose track it is and what it carries.
    pub fn track(&self, track: TrackId) -> Option<(ParticipantId, Source)> {
        self.tracks.get(&track).map(|t| (t.publisher, t.source))
    }

    fn notify_others(
        &self,
        meeting: &str,
        except: ParticipantId,
        notice: impl Fn(ParticipantId) -> Notice,
        out: &mut Vec<Output>,
    ) {
        if let Some(room) = self.meetings.get(meeting) {
            for &to in &room.participants {
                let local = self
                    .participants
                    .get(&to)
                    .is_some_and(|p| p.kind == Kind::Local);
                if to != except && local {
                    out.push(Output::Notify {
                        to,
                        notice: notice(to),
                    });
                }
            }
        }
    }
}

/// Where a message to every room is kept in the chat history (no room has this number).
const EVERY_ROOM: u8 = u8::MAX;

/// The room `key` is in under `plan` (0: the main room, and for everyone without rooms).
fn room_in(plan: Option<&RoomPlan>, key: Option<&str>) -> u8 {
    plan.zip(key)
        .and_then(|(p, k)| p.of.get(k).copied())
        .filter(|r| plan.is_some_and(|p| (1..=p.count).contains(r)))
        .unwrap_or(0)
}

/// Whether a `subscriber`'s stream of `t` carries several layers side by side: a node
/// link's, of a video in layers.
fn passes(subscriber: Kind, t: &Track) -> bool {
    subscriber == Kind::Link
        && t.source.kind() == TrackKind::Video
        && t.viewers.layers() != Layers::NONE
}

/// Whether a participant of kind `subscriber` subscribes to the tracks of one of kind
/// `publisher`. Local tracks go to everyone here and to every node link; remote tracks go
/// to local browsers only (their own node sends them to the other nodes).
fn subscribes(publisher: Kind, subscriber: Kind) -> bool {
    matches!(
        (publisher, subscriber),
        (Kind::Local, Kind::Local | Kind::Link | Kind::Recorder)
            | (Kind::Remote, Kind::Local | Kind::Recorder)
    )
}

/// Whether a subscriber of kind and breakout room `subscriber` is kept apart from a track
/// published in room `from`: a browser (and a recording) receives its own room only; a
/// node link receives every room (the node at its other end keeps its own people to
/// theirs). Apart, it stays subscribed but nothing is forwarded to it.
fn apart(from: u8, (subscriber, to): (Kind, u8)) -> bool {
    subscriber != Kind::Link && from != to
}
