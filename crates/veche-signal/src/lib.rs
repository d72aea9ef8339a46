//! The messages of the signaling socket (`GET /ws`, `docs/protocol.md`), typed once.
//!
//! [`ClientMsg`] is what a client sends: the node reads it with this definition, and the
//! command-line participant, the benchmark's load generator and the tests write it with the
//! same one, so a field renamed on one side cannot silently break the other.
//! [`ServerMsg`] is what a client reads of the node's messages (the node writes them from
//! its engine's events; `veche-web`'s tests check that every one of them parses here).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
pub use veche_core::Source;

/// A message from a browser (or another client) to its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// Enter a meeting, proving the key: must be the first message.
    Join {
        /// Meeting id.
        meeting: String,
        /// Display name.
        name: String,
        /// The person's Ed25519 public key, base64url.
        key: String,
        /// The key's signature of the challenge this socket was handed, base64url.
        sig: String,
        /// An invite token (from the link's fragment), for meetings signed by a host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invite: Option<String>,
    },
    /// The one publishing offer: mid → what it carries.
    Offer {
        /// SDP offer.
        sdp: String,
        /// mid → source.
        sources: HashMap<String, Source>,
    },
    /// Answer to the node's latest offer.
    Answer {
        /// SDP answer.
        sdp: String,
    },
    /// Mic on, camera on, sharing the screen, hand raised.
    State {
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
    /// A chat message to everyone in the meeting.
    Chat {
        /// The text.
        text: String,
        /// To every breakout room at once (the host and moderators only).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        everyone: bool,
    },
    /// A moderation action token (veche-trust `Action`, signed by the host or a moderator).
    Moderate {
        /// The signed action.
        action: String,
    },
    /// Make someone a moderator: a moderator invite (veche-trust `Invite`) bound to their
    /// key, signed by the host or a moderator; the node checks it and hands it to them.
    Grant {
        /// The invite token.
        invite: String,
    },
    /// The host asks for the meeting's attendance (who was in it, when) as CSV.
    Attendance,
    /// The host asks for the meeting's recordings on this node, with download links: on the
    /// socket they joined with, or (a meeting over, which nobody joins) on a fresh socket
    /// with the meeting and their key's proof of this socket's challenge, as `join` has it.
    Recordings {
        /// The meeting (without a join).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        meeting: Option<String>,
        /// The host's key (without a join).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Their signature of the challenge (without a join).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sig: Option<String>,
    },
    /// What the page shows of the others' video now (sent when its tiles change): each
    /// tile's size and whether it is seen. The node sends each tile the smallest
    /// simulcast layer that fills it, and no video for one not seen.
    View {
        /// The tiles (at most 300).
        tiles: Vec<TileView>,
    },
    /// Leave the meeting.
    Leave,
}

/// One video tile on a page (`view`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TileView {
    /// Whose video.
    pub participant: u64,
    /// Which of their videos (`camera` or `screen`).
    pub source: Source,
    /// On screen (not hidden, scrolled away or behind another tab).
    pub visible: bool,
    /// Its height on screen in device pixels.
    pub height: u32,
}

impl ClientMsg {
    /// The message as the socket's text frame.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A participant as the node describes them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Participant {
    /// Participant id (on this node).
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Mic on.
    #[serde(default)]
    pub audio: bool,
    /// Camera on.
    #[serde(default)]
    pub video: bool,
    /// Sharing the screen.
    #[serde(default)]
    pub screen: bool,
    /// Hand raised.
    #[serde(default)]
    pub hand: bool,
    /// Their key (base64url), as their node checked it.
    #[serde(default)]
    pub key: Option<String>,
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Chat {
    /// Who said it.
    pub from: u64,
    /// Their name.
    pub name: String,
    /// The text.
    pub text: String,
    /// The node's clock, ms since the Unix epoch.
    pub at: u64,
}

/// Whose track a mid of the node's offer carries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Track {
    /// Participant id.
    pub participant: u64,
    /// What it carries.
    pub source: Source,
}

/// The meeting a `welcome` is for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MeetingRef {
    /// Meeting id.
    pub id: String,
    /// Title.
    pub title: String,
}

/// A message from the node, as a client reads it. Fields a client does not need are
/// ignored, so the node may add some.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Sent once when the socket opens: what `join` signs.
    Challenge {
        /// Fresh random nonce.
        nonce: String,
        /// The node's id.
        node: String,
    },
    /// Joined.
    Welcome {
        /// Your participant id.
        you: u64,
        /// Your role in this meeting.
        #[serde(default)]
        role: Option<String>,
        /// The meeting.
        #[serde(default)]
        meeting: Option<MeetingRef>,
        /// Everyone else.
        #[serde(default)]
        participants: Vec<Participant>,
        /// Recent chat.
        #[serde(default)]
        chat: Vec<Chat>,
        /// The meeting is being recorded: who started it, when.
        #[serde(default)]
        recording: Option<RecordingState>,
    },
    /// Answer to your offer.
    Answer {
        /// SDP answer.
        sdp: String,
    },
    /// The node's offer.
    Offer {
        /// SDP offer.
        sdp: String,
        /// mid → whose track.
        #[serde(default)]
        tracks: HashMap<String, Track>,
    },
    /// Someone joined.
    ParticipantJoined {
        /// Who.
        participant: Participant,
    },
    /// Someone left.
    ParticipantLeft {
        /// Their id.
        id: u64,
    },
    /// Someone's mic, camera, screen or hand changed.
    State {
        /// Their id.
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
    /// A chat message.
    Chat {
        /// The message.
        message: Chat,
    },
    /// You wait in the waiting room.
    Lobby,
    /// Someone waits in the waiting room, or no longer does.
    Knock {
        /// Their key.
        key: String,
        /// Their name.
        name: String,
        /// Still waiting.
        waiting: bool,
    },
    /// You are a moderator now.
    Granted {
        /// Your moderator invite.
        invite: String,
    },
    /// A moderator muted you or lets you unmute.
    Moderated {
        /// `mute` or `allow`.
        action: String,
    },
    /// Who speaks now, loudest first (empty: nobody).
    Speaking {
        /// Their participant ids.
        ids: Vec<u64>,
    },
    /// Whose cameras your link has no room for now (empty: every camera has its picture).
    Paused {
        /// Their participant ids.
        ids: Vec<u64>,
    },
    /// Send these simulcast layers of your camera (rids, smallest first); pause the others,
    /// which nobody watches.
    Layers {
        /// Which of your videos.
        source: Source,
        /// The rids to send.
        active: Vec<String>,
    },
    /// The host or a moderator put this person's camera (their key) on everyone's stage;
    /// `None`: taken off.
    Spotlight {
        /// Whose camera.
        #[serde(default)]
        key: Option<String>,
    },
    /// Breakout rooms opened, changed or closed (`count` 0): who is in which.
    Rooms {
        /// Rooms open.
        count: u8,
        /// When everyone returns to the main room, ms since the epoch.
        until_ms: u64,
        /// People may choose their own room.
        #[serde(default)]
        choose: bool,
        /// Participant id → room, for those not in the main room.
        #[serde(default)]
        rooms: HashMap<String, u8>,
    },
    /// The meeting is being recorded (`on`), or no longer is.
    Recording {
        /// Recording now.
        on: bool,
        /// Who started it.
        #[serde(default)]
        by: String,
        /// When it started, ms since the epoch.
        #[serde(default)]
        since_ms: u64,
        /// Why it stopped by itself (the node's disk filled).
        #[serde(default)]
        problem: String,
    },
    /// The meeting's recordings on this node, for its host.
    Recordings {
        /// The meeting.
        meeting: String,
        /// Oldest first.
        list: Vec<RecordingLink>,
    },
    /// The meeting's attendance, for its host: one line per stay.
    Attendance {
        /// The meeting.
        meeting: String,
        /// The name to save it under.
        file: String,
        /// CSV with a header line (`docs/attendance.md`).
        csv: String,
    },
    /// Something you sent was refused, or your connection failed.
    Error {
        /// Machine-readable code.
        code: String,
        /// Plain words.
        message: String,
        /// The node dropped you.
        fatal: bool,
    },
}

impl ServerMsg {
    /// Read one text frame.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_is_written_as_the_node_reads_it_and_unknown_fields_are_refused() {
        let join = ClientMsg::Join {
            meeting: "k3x-9qa-7mf".into(),
            name: "Ada".into(),
            key: "k".into(),
            sig: "s".into(),
            invite: None,
        };
        let text = join.to_text();
        assert_eq!(
            text,
            r#"{"type":"join","meeting":"k3x-9qa-7mf","name":"Ada","key":"k","sig":"s"}"#
        );
        assert_eq!(
            serde_json::from_str::<ClientMsg>(&text).expect("read"),
            join
        );
        assert!(
            serde_json::from_str::<ClientMsg>(r#"{"type":"chat","text":"x","extra":1}"#).is_err()
        );
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"chat"}"#).is_err());
    }
}

/// A recording running, as a welcome tells it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RecordingState {
    /// Who started it.
    pub by: String,
    /// When, ms since the epoch.
    pub since_ms: u64,
}

/// One recording the host may download.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RecordingLink {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Last written, ms since the epoch.
    pub modified_ms: u64,
    /// Where to download it (works for ten minutes); none while it is being written.
    #[serde(default)]
    pub url: Option<String>,
    /// Still being written.
    #[serde(default)]
    pub recording: bool,
}
