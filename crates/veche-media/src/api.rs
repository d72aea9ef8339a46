//! What the signaling layer and the engine say to each other.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use veche_core::{
    JoinError, LinkTrack, MediaState, MeetingEvent, Notice, ParticipantId, ParticipantInfo,
    RoomPlan, Source, TrackKind,
};

/// A request to the engine.
#[derive(Debug)]
pub enum Command {
    /// Enter a meeting. The engine answers on `reply`, then talks to the participant through
    /// `events` (the first event is the welcome).
    Join {
        /// Meeting id (the caller checked it exists).
        meeting: String,
        /// Display name.
        name: String,
        /// The person's key (base64url), checked by the caller against a fresh challenge.
        key: Option<String>,
        /// What the person travels with to the meeting's other nodes (a veche-meeting
        /// `Presence` token; opaque to the engine).
        presence: Option<String>,
        /// Joined as a listener (an invite's role): nothing they send is forwarded.
        listener: bool,
        /// The address the browser's signaling connection came from. A browser that reached
        /// the node over loopback is offered the loopback candidate; others are not, since
        /// 127.0.0.1 would be their own machine.
        client: Option<std::net::SocketAddr>,
        /// Other nodes that carry this meeting (from the meeting's link), to join it with.
        nodes: Vec<String>,
        /// Where this participant's events go.
        events: mpsc::Sender<PeerEvent>,
        /// The new participant's id, or why it cannot join.
        reply: oneshot::Sender<Result<ParticipantId, JoinError>>,
    },
    /// Send `signal` to every local participant of `meeting` whose key is in `keys`.
    Notify {
        /// Meeting id.
        meeting: String,
        /// Keys (base64url).
        keys: Vec<String>,
        /// What to tell them.
        signal: Signal,
    },
    /// Act on every local participant of `meeting` whose checked key is `key`; replies
    /// how many there were.
    Moderate {
        /// Meeting id.
        meeting: String,
        /// The target's key (base64url).
        key: String,
        /// What to do.
        action: Moderation,
        /// How many participants it reached.
        reply: oneshot::Sender<usize>,
    },
    /// The browser's one publishing offer; `sources` maps its mids to what they carry.
    Offer {
        /// Who.
        id: ParticipantId,
        /// SDP text.
        sdp: String,
        /// mid → source.
        sources: HashMap<String, Source>,
    },
    /// The browser's answer to the engine's latest offer.
    Answer {
        /// Who.
        id: ParticipantId,
        /// SDP text.
        sdp: String,
    },
    /// Microphone, camera or screen state changed.
    State {
        /// Who.
        id: ParticipantId,
        /// The new state.
        state: MediaState,
    },
    /// A chat message.
    Chat {
        /// Who.
        id: ParticipantId,
        /// The text.
        text: String,
        /// To every breakout room: the caller checked they are the host or a moderator.
        everyone: bool,
    },
    /// What a participant's page shows of the others' video: (publisher, source, view).
    View {
        /// Who.
        id: ParticipantId,
        /// Its tiles.
        tiles: Vec<(ParticipantId, Source, veche_core::TileView)>,
    },
    /// The participant left or its signaling connection closed.
    Leave {
        /// Who.
        id: ParticipantId,
    },
    /// Open, change or close (`None`) a meeting's breakout rooms (decided by its rules):
    /// everyone here is put in their room, and sees, hears and chats with that room only.
    Rooms {
        /// Meeting id.
        meeting: String,
        /// The rooms, or none.
        plan: Option<RoomPlan>,
    },
    /// Put a person's camera (their key) on everyone's stage in a meeting, or nobody's
    /// (`None`), as its rules decided.
    Spotlight {
        /// Meeting id.
        meeting: String,
        /// Whose camera.
        key: Option<String>,
    },
    /// Start (`Some`) or stop (`None`) this node's recording of a meeting (started by its
    /// rules): the tap receives every track of its main room and their packets.
    Record {
        /// Meeting id.
        meeting: String,
        /// Where the recording's input goes.
        tap: Option<RecordTap>,
    },
    /// A recording needs a keyframe of `track` (its picture switches to it, or lost some).
    RecordKeyframe {
        /// Which track.
        track: veche_core::TrackId,
    },
    /// Whether this node records a meeting (other nodes say so of theirs): every browser
    /// here is told, and whoever joins is told in their welcome, and so is every other node
    /// of the meeting.
    Recording {
        /// Meeting id.
        meeting: String,
        /// Who started it and when; none: not recording.
        state: Option<veche_core::Recording>,
        /// Why it stopped, when it stopped by itself (the disk filled).
        problem: Option<String>,
    },
    /// Who is in a meeting.
    Participants {
        /// Meeting id.
        meeting: String,
        /// The answer.
        reply: oneshot::Sender<Vec<ParticipantInfo>>,
    },
    /// Another node tells what happened on its side of a meeting.
    NodeEvents {
        /// Its peer id.
        node: String,
        /// Meeting id (the caller checked this node knows it).
        meeting: String,
        /// In order.
        events: Vec<MeetingEvent>,
    },
    /// Another node offers (or renegotiates) its media link to us for a meeting.
    LinkOffer(LinkOffer),
    /// Our offer on a node link could not be delivered or was refused.
    LinkFailed {
        /// The link.
        link: ParticipantId,
        /// Why.
        reason: String,
    },
    /// Another node saw this one at `ip` (behind a NAT: the NAT's public address). Node
    /// links offer it with our ports as a server-reflexive candidate, which is what lets ICE
    /// open a path through cone NATs.
    ObservedIp {
        /// The address.
        ip: std::net::IpAddr,
    },
    /// Where to relay a meeting's media to a node we cannot reach directly (answer to
    /// [`FedOut::NeedRelay`]); `None`: no relay, try directly again later.
    UseRelay {
        /// Meeting id.
        meeting: String,
        /// The node we cannot reach.
        node: String,
        /// The relay node.
        via: Option<String>,
    },
    /// Meeting events for a node were not delivered (dropped or failed): send it our
    /// whole list again, soon.
    Resync {
        /// The node.
        node: String,
        /// Meeting id.
        meeting: String,
    },
    /// The network lost every connection to a node.
    NodeGone {
        /// Its peer id.
        node: String,
    },
    /// A node no longer takes part in a meeting (nobody it carries is let in any more): its
    /// links and people in that meeting go, and it is not asked to sync again.
    NodeDismissed {
        /// Its peer id.
        node: String,
        /// Meeting id.
        meeting: String,
    },
    /// What each browser here in a meeting (`None`: in every meeting) receives of each
    /// video, with its bandwidth estimate, and why.
    Reception {
        /// Meeting id, or every meeting.
        meeting: Option<String>,
        /// What each receives.
        reply: oneshot::Sender<Vec<BrowserReception>>,
    },
    /// The media links of a meeting, per other node.
    Links {
        /// Meeting id.
        meeting: String,
        /// The answer.
        reply: oneshot::Sender<Vec<LinkInfo>>,
    },
    /// Counters, for tests and benchmarks.
    Stats {
        /// The answer.
        reply: oneshot::Sender<EngineStats>,
    },
}

/// Another node's offer of its media link to us, for one meeting.
#[derive(Debug)]
pub struct LinkOffer {
    /// Its peer id.
    pub node: String,
    /// Meeting id (the caller checked this node carries it).
    pub meeting: String,
    /// Its id for the link: a different one replaces the link we have.
    pub link: u64,
    /// SDP offer.
    pub sdp: String,
    /// mid → whose track.
    pub tracks: BTreeMap<String, LinkTrack>,
    /// The SDP answer, or why not.
    pub reply: oneshot::Sender<Result<String, LinkError>>,
}

/// Why a node's link offer was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The SDP could not be parsed or accepted.
    #[error("bad offer: {0}")]
    BadSdp(String),
    /// Too many links.
    #[error("too many node links")]
    TooMany,
}

/// What the engine asks the network to deliver to another node.
#[derive(Debug)]
pub enum FedOut {
    /// Meeting events, in order.
    Events {
        /// To whom.
        node: String,
        /// Meeting id.
        meeting: String,
        /// What.
        events: Vec<MeetingEvent>,
    },
    /// Our media link to `node` did not connect (yet): which relay node can carry it?
    /// Answered with [`Command::UseRelay`].
    NeedRelay {
        /// The node.
        node: String,
        /// Meeting id.
        meeting: String,
        /// Asked as the direct link starts: answered only where a direct path is unlikely
        /// soon (our control connection to that node goes through a relay), so that media
        /// starts on the relay while the direct path is tried.
        race: bool,
        /// Relays lost lately, not to be chosen again.
        avoid: Vec<String>,
    },
    /// Our offer on our media link to it; the answer comes back as [`Command::Answer`] with
    /// `id: link`, a failure as [`Command::LinkFailed`].
    Offer {
        /// To whom.
        node: String,
        /// Meeting id.
        meeting: String,
        /// The link.
        link: ParticipantId,
        /// SDP offer.
        sdp: String,
        /// mid → whose track.
        tracks: BTreeMap<String, LinkTrack>,
    },
}

/// One other node in a meeting, as this node's media links to it see it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkInfo {
    /// Its peer id.
    pub node: String,
    /// Its participants in the meeting.
    pub participants: usize,
    /// Our link to it: tracks carried, media connected.
    pub tracks_out: usize,
    /// Whether our link to it has connected.
    pub out_connected: bool,
    /// Its link to us: tracks carried.
    pub tracks_in: usize,
    /// Whether its link to us has connected.
    pub in_connected: bool,
    /// Media frames we sent on our link to it.
    pub frames_out: u64,
    /// Media frames we received on its link to us.
    pub frames_in: u64,
    /// Bitrate we send on our link to it (or to its relay), kbit/s, over the last second.
    pub kbps_out: f64,
    /// Bitrate we receive on its link to us, kbit/s.
    pub kbps_in: f64,
    /// Loss the other end reports of what we send (fraction 0..1).
    pub loss_out: Option<f32>,
    /// Loss we see on what it sends (fraction 0..1).
    pub loss_in: Option<f32>,
    /// Round trip of the media path, from RTCP, milliseconds.
    pub media_rtt_ms: Option<f64>,
    /// The remote address of the media path in use (our link's), once known.
    pub path: Option<String>,
    /// The relay node the media goes through, when the direct path failed.
    pub via: Option<String>,
    /// What our link to it carries of each video, and why (what that node's viewers show).
    pub videos_out: Vec<veche_core::Received>,
    /// The largest layer our link carries for loss on its path (`None`: all it is asked).
    pub capped: Option<&'static str>,
    /// `"udp"`, or `"tcp"` when the path between the nodes passes no UDP (ICE-TCP);
    /// `None` before anything came.
    pub transport: Option<&'static str>,
}

/// What one browser here receives, and what its media travels over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserReception {
    /// Its meeting.
    pub meeting: String,
    /// Who.
    pub participant: ParticipantId,
    /// Each video it receives, and the estimate toward it.
    pub reception: veche_core::Reception,
    /// `"udp"`, or `"tcp"` when its UDP is blocked (ICE-TCP); `None` before it connects.
    pub transport: Option<&'static str>,
}

/// The engine's counters since start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EngineStats {
    /// Connected peers now.
    pub peers: usize,
    /// Datagrams received on the media port.
    pub datagrams_in: u64,
    /// Datagrams sent from the media port.
    pub datagrams_out: u64,
    /// Datagrams dropped because the receive queue was full.
    pub datagrams_dropped: u64,
    /// Datagrams not sent because the socket's send buffer was full.
    pub datagrams_unsent: u64,
    /// System calls that sent them (`sendmmsg`, several datagrams each).
    pub send_calls: u64,
    /// Media frames written to subscribers.
    pub frames_forwarded: u64,
    /// Packets not forwarded to a subscriber whose queue was full (the engine fell behind).
    pub packets_dropped: u64,
    /// Rounds whose peers were drained on the worker threads (`media_threads` > 1).
    pub worker_rounds: u64,
    /// Peers removed because of a contained panic.
    pub peers_panicked: u64,
    /// Attendance records dropped because their writer fell behind.
    pub attendance_dropped: u64,
    /// Packets a recording did not take (it fell behind).
    pub recorded_dropped: u64,
}

/// What a recording receives from the engine, in order. Never waits: with the recording
/// far behind, packets are dropped and counted.
#[derive(Debug, Clone)]
pub enum Recorded {
    /// `participant` publishes `track`: its packets follow.
    Track {
        /// Which track.
        track: veche_core::TrackId,
        /// Whose.
        participant: ParticipantId,
        /// What it carries.
        source: Source,
    },
    /// `track` is no longer recorded (stopped, or its publisher left the main room).
    Gone {
        /// Which track.
        track: veche_core::TrackId,
    },
    /// One RTP packet of a track, as its publisher sent it.
    Packet {
        /// Which track.
        track: veche_core::TrackId,
        /// The publisher's extended sequence number.
        seq: u64,
        /// The publisher's RTP timestamp.
        ts: u32,
        /// Marker bit.
        marker: bool,
        /// The payload, shared with every subscriber.
        payload: std::sync::Arc<[u8]>,
        /// Audio level, -dBov (0 loudest, 127 silence).
        audio_level: Option<u8>,
        /// Where its numbering comes from: the publisher's SSRC and sending epoch.
        source: (u32, u32),
        /// When the node received it.
        arrival: std::time::Instant,
    },
}

/// Where a recording's input goes: bounded, written without waiting.
pub type RecordTap = std::sync::mpsc::SyncSender<Recorded>;

/// A person came into a meeting on this node or went out of it: what its attendance is
/// made of. The receiver stamps the time (it reads the clock; the engine does not) and
/// decides the person's role by their presence, with the meeting's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attendance {
    /// Came in.
    Arrived {
        /// Meeting id.
        meeting: String,
        /// Their participant id here (unique for the node's lifetime and across restarts).
        participant: ParticipantId,
        /// Their name as they joined.
        name: String,
        /// Their key (base64url), as their node checked it.
        key: Option<String>,
        /// The node they are attached to (its peer id): this one, or another.
        node: String,
        /// What they travel with (a veche-meeting `Presence` token): their proof for
        /// `node` and their invite.
        presence: Option<String>,
    },
    /// Went out (left, dropped, removed, or their node was lost).
    Departed {
        /// Meeting id.
        meeting: String,
        /// Who.
        participant: ParticipantId,
    },
}

/// Something for one participant's browser.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum PeerEvent {
    /// About the meeting and its people.
    Notice(Notice),
    /// About this participant's own media connection.
    Signal(Signal),
}

/// Media negotiation and errors for one participant.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Signal {
    /// Answer to the browser's offer.
    Answer {
        /// SDP text.
        sdp: String,
    },
    /// The engine's offer; the browser answers.
    Offer {
        /// SDP text.
        sdp: String,
        /// Every mid the engine sends on → whose track it is.
        tracks: BTreeMap<String, TrackInfo>,
    },
    /// Someone waits in the lobby (`waiting: true`) or no longer does (for moderators).
    Knock {
        /// Their key (base64url).
        key: String,
        /// Their display name.
        name: String,
        /// Still waiting.
        waiting: bool,
    },
    /// The host (or a moderator) made this participant a moderator: the invite, bound to
    /// their key, is their authority from now on (for actions and for invites they make).
    Granted {
        /// The moderator invite token (veche-trust `Invite`, checked by the node).
        invite: String,
    },
    /// A moderator acted on this participant (`mute`, `allow`).
    Moderated {
        /// What they did.
        action: Moderation,
    },
    /// Send only these simulcast layers of `source` (rids, smallest first): nobody here
    /// watches the others, so the browser stops encoding them.
    Layers {
        /// Which of its videos.
        source: Source,
        /// The rids to send.
        active: Vec<&'static str>,
    },
    /// Something the participant sent was refused, or its connection failed.
    Error {
        /// Machine-readable code (see `docs/protocol.md`).
        code: ErrorCode,
        /// Plain words.
        message: String,
        /// The engine dropped the participant.
        fatal: bool,
    },
}

/// A moderator's decision about one person (the caller checked its signature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Moderation {
    /// Withhold their microphone.
    Mute,
    /// Forward their microphone again (they unmute themselves).
    Allow,
    /// Drop them from the meeting.
    Remove,
    /// End the meeting: drop everyone in it (the key is ignored).
    End,
}

/// Whose track a mid carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrackInfo {
    /// Publisher.
    pub participant: ParticipantId,
    /// What it carries.
    pub source: Source,
    /// Audio or video.
    pub kind: TrackKind,
}

/// Error codes of the signaling protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not JSON, unknown type, wrong fields.
    BadMessage,
    /// Over the size limit.
    TooLarge,
    /// A binary frame.
    BinaryUnsupported,
    /// Anything but join before joining.
    NotJoined,
    /// A second join.
    AlreadyJoined,
    /// No such meeting.
    UnknownMeeting,
    /// The meeting is full.
    MeetingFull,
    /// Empty or too long name.
    BadName,
    /// Empty or too long chat message.
    BadChat,
    /// SDP that cannot be parsed or accepted.
    BadSdp,
    /// SDP at the wrong time.
    UnexpectedSdp,
    /// Too many messages.
    RateLimited,
    /// The browser does not read its socket.
    SlowConsumer,
    /// The media connection failed.
    MediaFailed,
    /// A bug in the node, contained to this participant.
    Internal,
    /// The join's key proof is missing, malformed or does not verify.
    BadSignature,
    /// The meeting's host does not let this key in (no invite, expired, revoked, ...).
    InviteRefused,
    /// A moderation action the node refused (not signed by the host or a moderator, ...).
    NotAllowed,
    /// A moderator removed this participant from the meeting.
    Removed,
    /// A moderator turned this participant away from the lobby.
    Denied,
    /// A moderator ended the meeting for everyone.
    Ended,
    /// The node the meeting was learned from cannot be reached to check this join.
    NodeUnreachable,
}

impl ErrorCode {
    /// Every code, in declaration order (docs/protocol.md documents each: a test checks).
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadMessage,
        ErrorCode::TooLarge,
        ErrorCode::BinaryUnsupported,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::UnknownMeeting,
        ErrorCode::MeetingFull,
        ErrorCode::BadName,
        ErrorCode::BadChat,
        ErrorCode::BadSdp,
        ErrorCode::UnexpectedSdp,
        ErrorCode::RateLimited,
        ErrorCode::SlowConsumer,
        ErrorCode::MediaFailed,
        ErrorCode::Internal,
        ErrorCode::BadSignature,
        ErrorCode::InviteRefused,
        ErrorCode::NotAllowed,
        ErrorCode::Removed,
        ErrorCode::Denied,
        ErrorCode::Ended,
        ErrorCode::NodeUnreachable,
    ];

    /// Its place in [`ErrorCode::ALL`]. A new code does not compile until it has one.
    pub fn index(self) -> usize {
        match self {
            ErrorCode::BadMessage => 0,
            ErrorCode::TooLarge => 1,
            ErrorCode::BinaryUnsupported => 2,
            ErrorCode::NotJoined => 3,
            ErrorCode::AlreadyJoined => 4,
            ErrorCode::UnknownMeeting => 5,
            ErrorCode::MeetingFull => 6,
            ErrorCode::BadName => 7,
            ErrorCode::BadChat => 8,
            ErrorCode::BadSdp => 9,
            ErrorCode::UnexpectedSdp => 10,
            ErrorCode::RateLimited => 11,
            ErrorCode::SlowConsumer => 12,
            ErrorCode::MediaFailed => 13,
            ErrorCode::Internal => 14,
            ErrorCode::BadSignature => 15,
            ErrorCode::InviteRefused => 16,
            ErrorCode::NotAllowed => 17,
            ErrorCode::Removed => 18,
            ErrorCode::Denied => 19,
            ErrorCode::Ended => 20,
            ErrorCode::NodeUnreachable => 21,
        }
    }
}

#[cfg(test)]
mod error_code_tests {
    use super::ErrorCode;

    #[test]
    fn every_error_code_is_listed_and_documented() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(c.index(), i, "{c:?} out of place in ALL");
        }
        assert!(ErrorCode::ALL.len() >= 20);
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/protocol.md"
        ))
        .expect("docs/protocol.md");
        for c in ErrorCode::ALL {
            let name = serde_json::to_value(c).expect("code");
            let row = format!("| `{}` |", name.as_str().expect("text"));
            assert!(
                doc.contains(&row),
                "{row} is not documented in docs/protocol.md"
            );
        }
    }
}

impl Signal {
    /// An error event.
    pub fn error(code: ErrorCode, message: impl Into<String>, fatal: bool) -> Self {
        Signal::Error {
            code,
            message: message.into(),
            fatal,
        }
    }
}

/// A cheap, cloneable handle to the engine task.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    pub(crate) tx: mpsc::Sender<Command>,
}

impl EngineHandle {
    /// Queue a command. Fails only when the engine has stopped.
    pub async fn send(&self, cmd: Command) -> Result<(), EngineGone> {
        self.tx.send(cmd).await.map_err(|_| EngineGone)
    }

    /// Queue a command without waiting (for a driver that is not async: the in-process
    /// tests). Fails when the engine has stopped or its queue is full.
    pub fn try_send(&self, cmd: Command) -> Result<(), EngineGone> {
        self.tx.try_send(cmd).map_err(|_| EngineGone)
    }

    /// Who is in a meeting.
    pub async fn participants(&self, meeting: &str) -> Result<Vec<ParticipantInfo>, EngineGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Participants {
            meeting: meeting.to_owned(),
            reply,
        })
        .await?;
        rx.await.map_err(|_| EngineGone)
    }

    /// What each browser here in `meeting` (`None`: in every meeting) receives.
    pub async fn reception(
        &self,
        meeting: Option<&str>,
    ) -> Result<Vec<BrowserReception>, EngineGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Reception {
            meeting: meeting.map(str::to_owned),
            reply,
        })
        .await?;
        rx.await.map_err(|_| EngineGone)
    }

    /// The media links of a meeting, per other node.
    pub async fn links(&self, meeting: &str) -> Result<Vec<LinkInfo>, EngineGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Links {
            meeting: meeting.to_owned(),
            reply,
        })
        .await?;
        rx.await.map_err(|_| EngineGone)
    }

    /// The engine's counters.
    pub async fn stats(&self) -> Result<EngineStats, EngineGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Stats { reply }).await?;
        rx.await.map_err(|_| EngineGone)
    }
}

/// The engine task has stopped (the node is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the media engine has stopped")]
pub struct EngineGone;
