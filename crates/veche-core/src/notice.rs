//! Notices: what the core tells participants about each other. Serialized as they are into
//! the signaling protocol (see `docs/protocol.md`).

use serde::Serialize;

use crate::{MediaState, ParticipantId};

/// One participant as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParticipantInfo {
    /// The participant's id.
    pub id: ParticipantId,
    /// Display name.
    pub name: String,
    /// Microphone on.
    pub audio: bool,
    /// Camera on.
    pub video: bool,
    /// Sharing the screen.
    pub screen: bool,
    /// Hand raised.
    pub hand: bool,
    /// The person's key (base64url Ed25519 public key) that their node checked when they
    /// joined; `None` for participants whose node did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl ParticipantInfo {
    pub(crate) fn new(id: ParticipantId, name: &str, state: MediaState, key: Option<&str>) -> Self {
        Self {
            id,
            name: name.to_owned(),
            audio: state.audio,
            video: state.video,
            screen: state.screen,
            hand: state.hand,
            key: key.map(str::to_owned),
        }
    }
}

/// One chat message, as stored in the meeting's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// Sender.
    pub from: ParticipantId,
    /// Sender's display name at the time of sending.
    pub name: String,
    /// The text.
    pub text: String,
    /// Node wall clock, milliseconds since the Unix epoch.
    pub at: u64,
    /// Said by the host or a moderator to every breakout room at once.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub everyone: bool,
}

/// A recording of the meeting that is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recording {
    /// Who started it (their name).
    pub by: String,
    /// When, ms since the epoch.
    pub since_ms: u64,
}

/// A message from the core to one participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Notice {
    /// Sent once to a participant that joined: who is there and the recent chat.
    Welcome {
        /// The joiner's own id.
        you: ParticipantId,
        /// The others already in the meeting.
        participants: Vec<ParticipantInfo>,
        /// Recent chat history, oldest first.
        chat: Vec<ChatMessage>,
        /// The meeting is being recorded: told before the joiner sends anything.
        #[serde(skip_serializing_if = "Option::is_none")]
        recording: Option<Recording>,
    },
    /// Someone joined.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone left or their connection died.
    ParticipantLeft {
        /// Who.
        id: ParticipantId,
    },
    /// Someone's microphone, camera or screen state changed.
    State {
        /// Who.
        id: ParticipantId,
        /// Microphone on.
        audio: bool,
        /// Camera on.
        video: bool,
        /// Sharing the screen.
        screen: bool,
        /// Hand raised.
        hand: bool,
    },
    /// A chat message.
    Chat {
        /// The message.
        message: ChatMessage,
    },
    /// Breakout rooms opened, changed or closed: who is in which. Each person sees, hears
    /// and chats only with their room; `count` 0: closed, everyone in the main room.
    Rooms {
        /// Rooms open (numbered from 1).
        count: u8,
        /// When everyone returns to the main room, ms since the epoch (0: closed).
        until_ms: u64,
        /// People may choose their own room.
        choose: bool,
        /// Participant → room, for those not in the main room (0).
        rooms: std::collections::BTreeMap<ParticipantId, u8>,
    },
    /// Who speaks now, loudest first (empty: nobody), from the audio level their packets
    /// carry; sent when that changes.
    Speaking {
        /// The speakers.
        ids: Vec<ParticipantId>,
    },
    /// Whose cameras this viewer's link has no room for now (the last in priority of a
    /// large meeting on a weak link): its page shows them without a picture, and why.
    /// Sent when that changes (empty: every camera has its picture).
    Paused {
        /// The publishers.
        ids: Vec<ParticipantId>,
    },
    /// The host or a moderator put someone's camera on everyone's stage (`None`: took it
    /// off). Sent to a newcomer too. The person's key: the page finds them among its
    /// participants, at this node or another.
    Spotlight {
        /// Whose camera.
        key: Option<String>,
    },
    /// A recording of the meeting started or stopped.
    Recording {
        /// Recording now.
        on: bool,
        /// Who started it (empty when stopped).
        by: String,
        /// When it started, ms since the epoch (0 when stopped).
        since_ms: u64,
        /// Why it stopped by itself (the node's disk filled); empty otherwise.
        #[serde(skip_serializing_if = "String::is_empty")]
        problem: String,
    },
}
