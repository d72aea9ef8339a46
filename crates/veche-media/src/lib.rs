//! The media driver of a veche node: one UDP port, one WebRTC connection per browser, and the
//! forwarding decisions of [`veche_core::Sfu`] carried out on real packets.
//!
//! How the pieces connect:
//! - [`Engine`] is sans-IO: it takes [`Command`]s (through an [`EngineHandle`]), datagrams
//!   and the time, forwards RTP packets as they arrive (`forward.rs` renumbers them per
//!   subscriber), and leaves what it transmits in its outbox. It owns the
//!   [`veche_core::Sfu`] and every peer's `str0m::Rtc`, and answers each participant through
//!   its own bounded [`PeerEvent`] queue; a participant that does not read its queue is
//!   dropped rather than slowing the meeting.
//! - [`Engine::start`] binds the media port on every local IPv4 address (the same port on
//!   each, since ICE matches a packet to a candidate by its destination address) and spawns
//!   one reader task per socket plus the driver (`driver.rs`), which feeds the engine and
//!   sends its outbox with `sendmmsg`.
//! - Reader tasks push datagrams into one bounded queue; when it is full, datagrams are
//!   dropped, as the network would.
//! - Every call into a peer's `Rtc` runs under `catch_unwind`: a bug triggered by one peer
//!   removes that peer and nobody else.

mod api;
mod driver;
mod engine;
mod federation;
mod forward;
mod net;
mod outbox;
mod peer;
pub mod probe;
mod record;

pub use api::{
    Attendance, BrowserReception, Command, EngineHandle, EngineStats, ErrorCode, FedOut, LinkError,
    LinkInfo, LinkOffer, Moderation, PeerEvent, RecordTap, Recorded, Signal, TrackInfo,
};
pub use engine::{Engine, EngineConfig, StartError};
pub use federation::{MAX_LINKS_IN_PER_NODE, MAX_MEETINGS_PER_NODE};
pub use net::local_ipv4_addresses;
