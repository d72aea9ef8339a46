//! What nodes tell each other about a meeting they both carry (the wire types; the
//! node-to-node protocol in `veche-net` sends them, the media engine acts on them).

use serde::{Deserialize, Serialize};

use crate::Source;

/// Whose track a mid of a node link carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkTrack {
    /// The participant's id on the sending node.
    pub participant: u64,
    /// The participant's name.
    pub name: String,
    /// What the track carries.
    pub source: Source,
    /// The node the participant is attached to, when it is not the sender (a relaying node
    /// forwards another node's tracks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// What a node shows of one track it receives on a link ([`MeetingEvent::Views`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkView {
    /// Whose track, as the link named them ([`LinkTrack::participant`]).
    pub participant: u64,
    /// Their node, when it is not the receiver (as [`LinkTrack::origin`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Which of their tracks.
    pub source: Source,
    /// The largest tile of it there; `None`: the whole picture (someone there does not
    /// say what they show).
    pub view: Option<crate::TileView>,
    /// For a link that carries the track's layers side by side: the ones needed there
    /// (rids, smallest first; the others are not sent). Absent for a track without layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<String>>,
}

/// Something that happened to a participant attached to the sending node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MeetingEvent {
    /// The sender (re)starts carrying the meeting with the receiver: what follows is its
    /// whole list of participants, and remotes of the sender not in it are gone. With
    /// `reply`, the receiver answers with its own list.
    Sync {
        /// Answer with your list.
        reply: bool,
    },
    /// Joined (or, sent again, is there with this name and state).
    Joined {
        /// Id on the sending node.
        id: u64,
        /// Name.
        name: String,
        /// Mic on.
        audio: bool,
        /// Camera on.
        video: bool,
        /// Sharing the screen.
        screen: bool,
        /// Hand raised.
        #[serde(default)]
        hand: bool,
        /// The person's key as the sending node checked it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// What the person travels with (a veche-meeting `Presence` token: their proof for
        /// the sending node, their invite): the receiver admits them by it, or ignores them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        presence: Option<String>,
    },
    /// Left.
    Left {
        /// Id on the sending node.
        id: u64,
    },
    /// Changed what it sends.
    State {
        /// Id on the sending node.
        id: u64,
        /// Mic on.
        audio: bool,
        /// Camera on.
        video: bool,
        /// Sharing the screen.
        screen: bool,
        /// Hand raised.
        #[serde(default)]
        hand: bool,
    },
    /// Said something in the chat.
    Chat {
        /// Id on the sending node.
        id: u64,
        /// The text.
        text: String,
        /// The sending node's clock, ms since the Unix epoch.
        at: u64,
        /// To every breakout room (its node checked the sender is the host or a
        /// moderator; the receiving node checks again).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        everyone: bool,
    },
    /// The sender cannot reach `peer` directly for media: the receiver, a relay node,
    /// forwards the sender's tracks to `peer` (and `peer` asks the same for its own).
    Relay {
        /// The node the sender's tracks go to.
        peer: String,
    },
    /// The sender reaches `peer` directly now: the receiver, a relay node, stops
    /// forwarding the sender's tracks to it.
    Unrelay {
        /// The node the sender's tracks went to.
        peer: String,
    },
    /// What the sender's viewers (and the links it forwards on) show of tracks the
    /// receiver's link to it carries: the receiver sends each only as large as that, and
    /// none that nobody there shows. Only what changed is said.
    Views {
        /// One per track.
        tiles: Vec<LinkView>,
    },
    /// The sender's tracks reach the receiver through the relay node `relay` (its direct
    /// link did not connect): links from that relay may carry them.
    Via {
        /// The relay's peer id.
        relay: String,
    },
    /// The sender records the meeting (`on`), or no longer does. A node says this of
    /// itself only, at each change and in every list it sends: a node that learns the
    /// meeting late, or restarts, tells its people too.
    Recording {
        /// Recording now.
        on: bool,
        /// Who started it (their name).
        #[serde(default)]
        by: String,
        /// When it started, ms since the epoch (the recording node's clock).
        #[serde(default)]
        since_ms: u64,
    },
    /// Another node takes part in this meeting: link with it too.
    Node {
        /// Its peer id.
        peer: String,
        /// The presence one of its people made for it (a token), which the sender admitted:
        /// the receiver checks it with its own rules before it tells that node anything, so
        /// an introduction alone lets no node in.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        presence: Option<String>,
    },
}
