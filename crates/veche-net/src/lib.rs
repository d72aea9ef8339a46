//! The control plane of a veche node: a libp2p swarm on the node's identity.
//!
//! QUIC and TCP (Noise, Yamux), identify, ping, mDNS on the LAN, Kademlia under veche's own
//! protocol name, AutoNAT v2, circuit relay v2 (client always, server with `--relay`), DCUtR
//! hole punching, and veche's own request-response protocol ([`protocol`]). A persistent
//! [`peerbook::PeerBook`] lets nodes that met once find each other again.
//!
//! The swarm is owned by one task; the rest of the node talks to it through a [`NetHandle`].
//! Request handling is a pure function ([`protocol::handle_request`]).

pub mod limits;
mod node;
pub mod peerbook;
pub mod protocol;

pub use libp2p::{Multiaddr, PeerId};
pub use node::{
    relay_limits, start, AppEvent, HelloError, HelloResult, HelloSource, NetConfig, NetError,
    NetHandle, PeerInfo, IDENTIFY_PROTOCOL, KAD_PROTOCOL,
};
