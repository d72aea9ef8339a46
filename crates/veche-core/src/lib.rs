//! The forwarding core of a veche node: meetings, participants, tracks and subscriptions.
//!
//! This crate does no IO and reads no clock. The media driver (which owns the UDP socket
//! and the WebRTC state) calls into [`Sfu`] with what happened and the current time, and
//! gets back [`Output`]s: which subscriptions to open or close, which publisher to ask for a
//! keyframe, and which notices to deliver to which participant. The per-packet question
//! "who receives this track?" is answered by [`Sfu::subscribers`] without allocating.
//!
//! Invariants:
//! - a participant never subscribes to its own tracks;
//! - a track is forwarded to a subscriber only after the driver reported the subscription
//!   ready ([`Sfu::subscription_ready`]), and each ready subscription asks the publisher for
//!   one keyframe so the new viewer sees a picture at once;
//! - keyframe requests towards one publisher track are rate limited, however many
//!   subscribers ask;
//! - when a participant leaves, every subscription to its tracks is closed and everyone in
//!   the meeting is told.
//!
//! ```
//! use std::time::Instant;
//! use veche_core::{Sfu, Source, TrackKind, Output};
//!
//! let now = Instant::now();
//! let mut sfu = Sfu::new(Default::default());
//! let (ada, _) = sfu.join("room", "Ada", now).unwrap();
//! let (bob, _) = sfu.join("room", "Bob", now).unwrap();
//! let (cam, out) = sfu.publish(ada, Source::Camera, TrackKind::Video, now).unwrap();
//! assert!(out.iter().any(|o| matches!(o, Output::Subscribe { subscriber, .. } if *subscriber == bob)));
//! sfu.subscription_ready(bob, cam, now);
//! assert_eq!(sfu.subscribers(cam), &[bob]);
//! ```

mod alloc;
pub mod federation;
mod grow;
mod layers;
mod narrow;
mod notice;
mod sfu;
mod speakers;

pub use alloc::{allocate, Reason, Video};
pub use federation::{LinkTrack, LinkView, MeetingEvent};
pub use layers::{want_for, Gate, Layer, Layers, Route, TileView, Want};
pub use notice::{ChatMessage, Notice, ParticipantInfo, Recording};
pub use sfu::{
    ChatError, Counts, JoinError, Kind, Limits, Output, PublishError, Received, Reception, Sfu,
    StateChange,
};

use serde::{Deserialize, Serialize};

/// A meeting's breakout rooms as the driver hands them to the core (decided by the
/// meeting's rules from signed actions; the core only enforces them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomPlan {
    /// Rooms open (numbered from 1).
    pub count: u8,
    /// When everyone returns to the main room, ms since the epoch (for the pages' countdown).
    pub until_ms: u64,
    /// People may choose their own room (the pages offer a choice).
    pub choose: bool,
    /// Person's key (base64url) → room; anyone not here is in the main room (0).
    pub of: std::collections::HashMap<String, u8>,
}

/// A participant of a meeting on this node, unique for the node's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ParticipantId(pub u64);

/// A published track, unique for the node's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrackId(pub u64);

impl std::fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl std::fmt::Display for TrackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// What a track carries, as the person sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Microphone audio.
    Mic,
    /// Camera video.
    Camera,
    /// Screen share video.
    Screen,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    /// An audio track.
    Audio,
    /// A video track.
    Video,
}

impl Source {
    /// The kind of media this source produces.
    pub fn kind(self) -> TrackKind {
        match self {
            Source::Mic => TrackKind::Audio,
            Source::Camera | Source::Screen => TrackKind::Video,
        }
    }

    /// Its name, as in JSON and in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mic => "mic",
            Source::Camera => "camera",
            Source::Screen => "screen",
        }
    }
}

/// What a participant currently sends (microphone, camera, screen) and whether their hand
/// is raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaState {
    /// Microphone on (not muted).
    pub audio: bool,
    /// Camera on.
    pub video: bool,
    /// Sharing the screen.
    pub screen: bool,
    /// Hand raised (asking to speak).
    #[serde(default)]
    pub hand: bool,
}

impl Default for MediaState {
    fn default() -> Self {
        Self {
            audio: true,
            video: true,
            screen: false,
            hand: false,
        }
    }
}
