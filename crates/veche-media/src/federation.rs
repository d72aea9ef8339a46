//! One meeting across many nodes: the engine's side of node-to-node meetings.
//!
//! Each node carries its own browsers' tracks to every other node of the meeting over one
//! WebRTC link per (meeting, other node), which it offers (a `LinkOut`, a
//! [`veche_core::Kind::Link`] participant that subscribes to local tracks only). The other
//! node accepts it as a `LinkIn` and publishes what arrives as its remote participants'
//! tracks, which go to its browsers only. So every track crosses every node link once and
//! nothing loops. Who is in the meeting travels as [`MeetingEvent`]s; both kinds of message
//! travel over the authenticated libp2p connection, so the DTLS fingerprint in the SDP binds
//! the media link to the other node's libp2p identity.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::net::Protocol;
use str0m::Rtc;
use tokio::sync::mpsc;
use veche_core::{
    LinkTrack, LinkView, MediaState, MeetingEvent, ParticipantId, ParticipantInfo, StateChange,
    TileView, TrackKind,
};

use crate::api::{FedOut, LinkError, LinkInfo, LinkOffer, PeerEvent};
use crate::engine::Engine;
use crate::peer::{MadeOffer, Peer, PeerFailure, Role};

/// Most node links (in and out, all meetings) one engine holds.
pub(crate) const MAX_LINKS: usize = 256;
/// Most other nodes one meeting may span.
const MAX_NODES_PER_MEETING: usize = 32;
/// Most meetings carried with other nodes at once (a relay carries meetings it is asked to).
const MAX_FED_MEETINGS: usize = 1024;
/// Most of those one other node takes part in: a node with people in many meetings here
/// (anyone can be a person in an open meeting) leaves the rest to other nodes.
pub const MAX_MEETINGS_PER_NODE: usize = MAX_FED_MEETINGS / 8;
/// Most links one other node holds to us: an honest node sends at most one per meeting from
/// each of its 8 link ports; twice that leaves room for its replacements.
pub const MAX_LINKS_IN_PER_NODE: usize = 16;

/// Whether `s` looks like a node id (a libp2p peer id in base58): anything else is refused
/// before it costs a queue, a link or a map entry.
fn is_node_id(s: &str) -> bool {
    (20..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}
/// Remembered departed remote participants (so late media cannot bring them back).
const MAX_GONE: usize = 4096;
/// A lost node is asked to sync again this often, for this long.
const RESYNC_EVERY: Duration = Duration::from_secs(5);
const RESYNC_FOR: Duration = Duration::from_secs(60);

/// Our link to a node that got no further towards connecting (answered, ICE connected) for
/// this long is given up for a relay.
const LINK_CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// With no relay to use, the direct link is tried again after this long.
const DIRECT_RETRY: Duration = Duration::from_secs(15);
/// While relayed, our link ports' mappings are probed this often.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// A direct link not connected this long after its offer asks for a relay too, and
/// media flows on whichever path connects first.
const RACE_AFTER: Duration = Duration::from_secs(1);
/// A link of ours not connected this long after its offer tries ICE-TCP as well (a path
/// that passes no UDP); UDP, which ICE prefers, has this head start.
const TCP_AFTER: Duration = Duration::from_secs(2);
/// While relayed, a direct link is tried again this long after the last try failed,
/// twice as long after each failure, up to [`DIRECT_AGAIN_MAX`].
const DIRECT_AGAIN: Duration = Duration::from_secs(5);
const DIRECT_AGAIN_MAX: Duration = Duration::from_secs(15);
/// A direct link that has been connected this long takes the relayed media over.
const DIRECT_SETTLED: Duration = Duration::from_secs(1);
/// A link that carried nothing for this long loses its tracks to another that carries them.
const LINK_LIVE: Duration = Duration::from_secs(1);
/// A lost relay is not chosen again for this long, and this many are remembered.
const LOST_RELAY_FOR: Duration = Duration::from_secs(60);
const MAX_LOST_RELAYS: usize = 16;
/// Most nodes kept while only their media says they are alive.
const MAX_UNCONFIRMED: usize = 64;
/// Most tracks one `MeetingEvent::Views` names (a meeting's people times their two videos).
const MAX_VIEWS_PER_EVENT: usize = 256;
/// Most meetings one node may have this relay forward for it.
const MAX_RELAYED_MEETINGS: usize = 8;
/// Most pairs one relay node forwards for, per meeting.
const MAX_RELAYED: usize = 64;

/// Another node carrying a meeting with us.
#[derive(Debug, Default)]
pub(crate) struct NodeState {
    pub link_out: Option<ParticipantId>,
    pub link_in: Option<ParticipantId>,
    /// The relay node our media to it goes through (the direct link did not connect).
    pub via: Option<String>,
    /// When we asked for a relay (the direct link had not connected).
    pub relay_asked: Option<Instant>,
    /// While relayed: when to try a direct link again, and how long to wait after that
    /// try if it fails too.
    pub direct_again: Option<(Instant, Duration)>,
    /// A relay we chose for media to another node (let go once no pair needs it).
    pub chosen_relay: bool,
    /// The relay this node said its tracks reach us through (`via`).
    pub their_via: Option<String>,
}

impl NodeState {
    /// No direct link now, and one is due: none asked for a relay (or it did not come,
    /// see [`DIRECT_RETRY`]), or relayed and the next try in the background is due.
    fn wants_direct_link(&self, now: Instant) -> bool {
        self.link_out.is_none()
            && match self.via {
                None => self.relay_asked.is_none(),
                Some(_) => self.direct_again.is_some_and(|(at, _)| now >= at),
            }
    }
}

/// Federation state of the engine.
#[derive(Debug, Default)]
pub(crate) struct Fed {
    /// meeting → other nodes carrying it.
    pub nodes: HashMap<String, BTreeMap<String, NodeState>>,
    /// (node, its participant id) → our remote participant.
    remotes: HashMap<(String, u64), ParticipantId>,
    remote_of: HashMap<ParticipantId, (String, u64)>,
    gone: HashSet<(String, u64)>,
    /// (meeting, node) lost with local browsers still in the meeting: asked to sync again.
    lost: HashMap<(String, String), (Instant, Instant)>,
    /// Track → the node link it arrives on (keyframe requests go there).
    pub track_in: HashMap<veche_core::TrackId, ParticipantId>,
    /// This node relays media for others (`--relay`).
    pub relay_enabled: bool,
    /// As a relay: (meeting, from node) → the nodes its tracks are forwarded to.
    relayed: HashMap<(String, String), HashSet<String>>,
    /// Relays lost lately (their pairs re-routed), and when: not asked for again for a
    /// minute.
    pub lost_relays: HashMap<String, Instant>,
    /// Nodes whose control connection closed while their media still came: lost once it
    /// stops before their events come again.
    unconfirmed: HashSet<String>,
    /// (meeting, node) whose events were lost: our list goes again.
    resync: HashSet<(String, String)>,
    /// When our list last went again to (meeting, node), to send it at most every 5 s.
    resync_sent: HashMap<(String, String), Instant>,
    /// Track that arrives on a link → what we last told its sending node our viewers show
    /// of it (`MeetingEvent::Views`).
    views_sent: HashMap<veche_core::TrackId, (Option<TileView>, Option<veche_core::Layers>)>,
    /// Participant → what they travel with (their proof, opaque here): for a browser here,
    /// what goes to other nodes; for someone another node carries, what it announced.
    pub presence: HashMap<ParticipantId, String>,
}

impl Fed {
    pub fn new(relay_enabled: bool) -> Self {
        Self {
            relay_enabled,
            ..Self::default()
        }
    }

    /// The node that carries remote participant `pid` (`None`: not a remote).
    pub fn node_of(&self, pid: ParticipantId) -> Option<&str> {
        self.remote_of.get(&pid).map(|(node, _)| node.as_str())
    }

    /// What we keep of `node` in `meeting`.
    pub fn state_mut(&mut self, meeting: &str, node: &str) -> Option<&mut NodeState> {
        self.nodes.get_mut(meeting)?.get_mut(node)
    }

    /// Stop asking `node` to sync `meeting` again.
    pub fn forget_lost(&mut self, meeting: &str, node: &str) {
        self.lost.remove(&(meeting.to_owned(), node.to_owned()));
    }
}

/// A participant another node announced: its id there, name, state and checked key.
struct Announced<'a> {
    id: u64,
    name: &'a str,
    state: MediaState,
    key: Option<String>,
    presence: Option<String>,
}

fn event_of(p: &ParticipantInfo, presence: Option<&String>) -> MeetingEvent {
    MeetingEvent::Joined {
        id: p.id.0,
        name: p.name.clone(),
        audio: p.audio,
        video: p.video,
        screen: p.screen,
        hand: p.hand,
        key: p.key.clone(),
        presence: presence.cloned(),
    }
}

impl Engine {
    fn fed_send(&mut self, node: &str, meeting: &str, events: Vec<MeetingEvent>) {
        let Some(out) = &self.fed_out else { return };
        if out
            .try_send(FedOut::Events {
                node: node.to_owned(),
                meeting: meeting.to_owned(),
                events,
            })
            .is_err()
        {
            tracing::warn!(%node, %meeting, "federation queue full; events to a node dropped");
            // Its view of our people is now wrong: the whole list goes again later.
            self.fed
                .resync
                .insert((meeting.to_owned(), node.to_owned()));
        }
    }

    /// Tell every other node of the meeting.
    pub(crate) fn fed_broadcast(&mut self, meeting: &str, event: MeetingEvent) {
        let nodes: Vec<String> = self
            .fed
            .nodes
            .get(meeting)
            .map(|n| n.keys().cloned().collect())
            .unwrap_or_default();
        for node in nodes {
            self.fed_send(&node, meeting, vec![event.clone()]);
        }
    }

    fn snapshot(&self, meeting: &str, to: &str, reply: bool) -> Vec<MeetingEvent> {
        let mut events = vec![MeetingEvent::Sync { reply }];
        events.extend(
            self.sfu
                .local_participants(meeting)
                .iter()
                .map(|p| event_of(p, self.fed.presence.get(&p.id))),
        );
        if let Some(r) = self.recording_here(meeting) {
            events.push(MeetingEvent::Recording {
                on: true,
                by: r.by.clone(),
                since_ms: r.since_ms,
            });
        }
        if let Some(nodes) = self.fed.nodes.get(meeting) {
            for other in nodes.keys().filter(|n| *n != to) {
                // The bridge adds the proof of one of its people on the way out.
                events.push(MeetingEvent::Node {
                    peer: other.clone(),
                    presence: None,
                });
            }
            // The relay our tracks reach it through: a `via` lost on the way (sent on a
            // control connection that died with the last relay) is said again here.
            if let Some(relay) = nodes.get(to).and_then(|s| s.via.clone()) {
                events.push(MeetingEvent::Via { relay });
            }
        }
        events
    }

    /// Start carrying `meeting` with `node`, if not already. Returns whether it is new.
    fn add_node(&mut self, meeting: &str, node: &str, reply: bool, now: Instant) -> bool {
        if node == self.node_id || self.fed_out.is_none() || !is_node_id(node) {
            return false;
        }
        if !self.fed.nodes.contains_key(meeting) && self.fed.nodes.len() >= MAX_FED_MEETINGS {
            tracing::warn!(%node, %meeting, "carrying too many meetings with other nodes; refused");
            return false;
        }
        let known = self
            .fed
            .nodes
            .get(meeting)
            .is_some_and(|n| n.contains_key(node));
        if !known
            && self
                .fed
                .nodes
                .values()
                .filter(|n| n.contains_key(node))
                .count()
                >= MAX_MEETINGS_PER_NODE
        {
            tracing::warn!(%node, %meeting, "that node takes part in too many meetings here; refused");
            return false;
        }
        let nodes = self.fed.nodes.entry(meeting.to_owned()).or_default();
        if nodes.contains_key(node) || nodes.len() >= MAX_NODES_PER_MEETING {
            return false;
        }
        nodes.insert(node.to_owned(), NodeState::default());
        self.fed.lost.remove(&(meeting.to_owned(), node.to_owned()));
        tracing::info!(%node, %meeting, "carrying the meeting with another node");
        let snap = self.snapshot(meeting, node, reply);
        self.fed_send(node, meeting, snap);
        self.ensure_link_out(meeting, node, now);
        true
    }

    /// `offering`: our own link, on the link port of that index, else another node's link
    /// to us (on the media port).
    fn link_rtc(&self, offering: Option<usize>, now: Instant) -> Rtc {
        let mut config = Rtc::builder()
            // Full ICE on node links: both ends send checks, so a path opens through NATs
            // that let a reply in once we sent out.
            .set_ice_lite(false)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_send_buffer_video(crate::peer::VIDEO_HISTORY_PACKETS)
            // As the browsers' connections: packets forwarded as they arrive.
            .set_rtp_mode(true)
            // Bitrate, loss and RTT per link, for the path shown in the API and the UI.
            .set_stats_interval(Some(Duration::from_secs(1)));
        // Check a link's path every second and give it up after a few unanswered checks:
        // a dead node's participants must vanish for everyone within seconds (str0m's
        // defaults, 3 s and 9 retries, take far longer).
        config.set_max_stun_rto(Duration::from_secs(1));
        config.set_max_stun_retransmits(4);
        let mut rtc = config.build(now);
        let candidates = match offering {
            Some(i) => &self.link_candidates[i].1,
            None => &self.candidates,
        };
        for c in candidates {
            // Another node's loopback is not ours.
            if self.links_on_loopback || !c.addr().ip().is_loopback() {
                rtc.add_local_candidate(c.clone());
            }
        }
        rtc
    }

    /// The link ports our links with `node` (ours and its) are on.
    fn ports_with(&self, node: &str) -> Vec<u16> {
        self.peers
            .values()
            .filter(|p| {
                matches!(&p.role, Role::LinkOut { node: n, .. } | Role::LinkIn { node: n, .. } if n == node)
            })
            .filter_map(|p| p.link_port)
            .collect()
    }

    fn link_count(&self) -> usize {
        self.peers.values().filter(|p| p.role.is_link()).count()
    }

    /// Our media link to `node` for `meeting`, made if missing.
    fn ensure_link_out(&mut self, meeting: &str, node: &str, now: Instant) {
        let needed = self
            .fed
            .nodes
            .get(meeting)
            .and_then(|n| n.get(node))
            .is_some_and(|s| s.wants_direct_link(now));
        // A link carries our browsers' tracks, or tracks we relay to that node: with neither,
        // there is nothing to send (it is made when a browser joins here).
        let relaying_to = self
            .fed
            .relayed
            .iter()
            .any(|((m, _), tos)| m == meeting && tos.contains(node));
        let has_local = !self.sfu.local_participants(meeting).is_empty();
        if !needed || !(has_local || relaying_to) || self.link_count() >= MAX_LINKS {
            return;
        }
        // A port none of our other links with that node is on (two on one port would share
        // its 5-tuple).
        let taken = self.ports_with(node);
        let free = self.fresh_slot(now).or_else(|| {
            self.link_candidates
                .iter()
                .position(|(p, _)| !taken.contains(p))
        });
        let Some(slot) = free else {
            tracing::warn!(%node, %meeting, "every link port carries another meeting with that node; no direct link");
            return;
        };
        let (id, outputs) = self.sfu.attach_link(meeting, now);
        tracing::debug!(%node, %meeting, port = self.link_candidates[slot].0, "direct media link offered");
        let rtc = self.link_rtc(Some(slot), now);
        // Nobody reads a link's events: what it needs to say goes through `fed_out`.
        let (events, _) = mpsc::channel::<PeerEvent>(1);
        let mut peer = Peer::new(
            id,
            Role::LinkOut {
                node: node.to_owned(),
                meeting: meeting.to_owned(),
            },
            rtc,
            events,
            now,
        );
        // We make every offer on our own links.
        peer.offered = true;
        peer.link_port = Some(self.link_candidates[slot].0);
        self.peers.insert(id, Box::new(peer));
        if let Some(s) = self.fed.state_mut(meeting, node) {
            s.link_out = Some(id);
        }
        self.apply(outputs);
        self.relay_existing(meeting, node, id);
        self.renegotiate.insert(id);
        // Race the relay: where the direct path is unlikely to open soon, media starts on
        // a relay at once and moves to this link when it connects.
        let relayed = self
            .fed
            .nodes
            .get(meeting)
            .and_then(|n| n.get(node))
            .is_some_and(|s| s.via.is_some());
        if !relayed && !self.fed.relay_enabled {
            self.ask_relay(node, meeting, true);
        }
    }

    /// As a relay: put on `link` (ours to `to`) every track of the nodes relayed to `to`.
    fn relay_existing(&mut self, meeting: &str, to: &str, link: ParticipantId) {
        let froms: Vec<String> = self
            .fed
            .relayed
            .iter()
            .filter(|((m, _), tos)| m == meeting && tos.contains(to))
            .map(|((_, from), _)| from.clone())
            .collect();
        for from in froms {
            let pids: Vec<ParticipantId> = self
                .fed
                .remote_of
                .iter()
                .filter(|(pid, (n, _))| *n == from && self.sfu.meeting_of(**pid) == Some(meeting))
                .map(|(pid, _)| *pid)
                .collect();
            for pid in pids {
                for track in self.sfu.published(pid) {
                    let out = self.sfu.relay_track(link, track);
                    self.apply(out);
                }
            }
        }
    }

    /// As a relay: `from` asks us to forward its tracks in `meeting` to `to`.
    fn relay_for(&mut self, meeting: &str, from: &str, to: &str, now: Instant) {
        if !self.fed.relay_enabled {
            tracing::info!(%from, %to, %meeting, "asked to relay media, but this node is not a relay");
            return;
        }
        if to == self.node_id || to == from {
            return;
        }
        let key = (meeting.to_owned(), from.to_owned());
        // Bounded per node, so that no one node can use up what the relay offers.
        let full = match self.fed.relayed.get(&key) {
            Some(tos) => tos.len() >= MAX_RELAYED,
            None => {
                self.fed.relayed.len() >= MAX_RELAYED * 16
                    || self.fed.relayed.keys().filter(|(_, f)| f == from).count()
                        >= MAX_RELAYED_MEETINGS
            }
        };
        if full || !is_node_id(to) {
            tracing::info!(%from, %to, %meeting, "relay request refused (limits)");
            return;
        }
        let tos = self.fed.relayed.entry(key).or_default();
        if !tos.insert(to.to_owned()) {
            return;
        }
        tracing::info!(%from, %to, %meeting, "relaying media between two nodes");
        self.add_node(meeting, to, true, now);
        // Now there is something to send to `to` (made with the relayed tracks on it).
        self.ensure_link_out(meeting, to, now);
        if let Some(link) = self
            .fed
            .nodes
            .get(meeting)
            .and_then(|n| n.get(to))
            .and_then(|s| s.link_out)
        {
            self.relay_existing(meeting, to, link);
        }
    }

    /// As a relay: `from` reaches `to` directly now; its tracks stop going there through us.
    fn unrelay_for(&mut self, meeting: &str, from: &str, to: &str) {
        let key = (meeting.to_owned(), from.to_owned());
        let Some(tos) = self.fed.relayed.get_mut(&key) else {
            return;
        };
        if !tos.remove(to) {
            return;
        }
        if tos.is_empty() {
            self.fed.relayed.remove(&key);
        }
        tracing::info!(%from, %to, %meeting, "no longer relaying: the two nodes reach each other directly");
        let link = self
            .fed
            .nodes
            .get(meeting)
            .and_then(|n| n.get(to))
            .and_then(|s| s.link_out);
        let tracks: Vec<veche_core::TrackId> = self
            .fed
            .remote_of
            .iter()
            .filter(|(pid, (n, _))| *n == from && self.sfu.meeting_of(**pid) == Some(meeting))
            .flat_map(|(pid, _)| self.sfu.published(*pid))
            .collect();
        for track in tracks {
            if let Some(link) = link {
                let out = self.sfu.unrelay_track(link, track);
                self.apply(out);
            }
        }
        // The nodes let us go once nothing goes through us (`dismiss_unused_relays`);
        // their links then fall silent here and close.
    }

    /// The network's answer to our request for a relay towards `node`.
    pub(crate) fn use_relay(
        &mut self,
        meeting: &str,
        node: &str,
        via: Option<String>,
        now: Instant,
    ) {
        let peers = &self.peers;
        let was_lost = via
            .as_ref()
            .is_some_and(|v| self.fed.lost_relays.contains_key(v));
        let Some(state) = self.fed.state_mut(meeting, node) else {
            return;
        };
        let direct_up = state
            .link_out
            .and_then(|id| peers.get(&id))
            .is_some_and(|p| p.connected);
        if direct_up || state.via.is_some() {
            // The direct link connected, or another answer came first.
            return;
        }
        let Some(via) = via.filter(|v| v != node && *v != self.node_id && !was_lost) else {
            if state.link_out.is_none() {
                tracing::info!(%node, %meeting, "no relay for a node we cannot reach directly; will retry directly");
            }
            return;
        };
        state.relay_asked.get_or_insert(now);
        tracing::info!(%node, relay = %via, %meeting, "media to the node goes through a relay");
        state.via = Some(via.clone());
        if state.link_out.is_none() {
            // The direct path is tried again in the background.
            state
                .direct_again
                .get_or_insert((now + DIRECT_AGAIN, DIRECT_AGAIN * 2));
        }
        self.add_node(meeting, &via, true, now);
        // Known already (its own link came first, carrying the other node's tracks): our
        // link to it is made now that it carries ours.
        self.ensure_link_out(meeting, &via, now);
        if let Some(r) = self.fed.state_mut(meeting, &via) {
            r.chosen_relay = true;
        }
        self.fed_send(
            &via,
            meeting,
            vec![MeetingEvent::Relay {
                peer: node.to_owned(),
            }],
        );
        // And the node our tracks go to learns which relay carries them.
        self.fed_send(
            node,
            meeting,
            vec![MeetingEvent::Via { relay: via.clone() }],
        );
    }

    /// Send an offer the engine made on a link.
    pub(crate) fn send_link_offer(&mut self, id: ParticipantId, offer: MadeOffer) {
        let Some(Role::LinkOut { node, meeting }) = self.peers.get(&id).map(|p| p.role.clone())
        else {
            return;
        };
        let tracks = offer
            .tracks
            .iter()
            .map(|(mid, info)| {
                let name = self
                    .sfu
                    .info(info.participant)
                    .map(|i| i.name)
                    .unwrap_or_default();
                // A relayed track names its own node and that node's id for the person.
                let (participant, origin) = match self.fed.remote_of.get(&info.participant) {
                    Some((n, id)) => (*id, Some(n.clone())),
                    None => (info.participant.0, None),
                };
                (
                    mid.clone(),
                    LinkTrack {
                        participant,
                        name,
                        source: info.source,
                        origin,
                    },
                )
            })
            .collect();
        let sent = self.fed_out.as_ref().is_some_and(|out| {
            out.try_send(FedOut::Offer {
                node,
                meeting,
                link: id,
                sdp: offer.sdp,
                tracks,
            })
            .is_ok()
        });
        if !sent {
            self.fail(
                id,
                PeerFailure::new(
                    crate::api::ErrorCode::Internal,
                    "federation queue full; link offer not sent",
                ),
            );
        }
    }

    /// A browser here joined: tell the other nodes, and join the nodes its link named.
    pub(crate) fn fed_local_joined(
        &mut self,
        id: ParticipantId,
        meeting: &str,
        hints: &[String],
        now: Instant,
    ) {
        if let Some(info) = self.sfu.info(id) {
            let ev = event_of(&info, self.fed.presence.get(&id));
            self.fed_broadcast(meeting, ev);
        }
        // The first browser here: now there is something to send to every other node.
        let known: Vec<String> = self
            .fed
            .nodes
            .get(meeting)
            .map(|n| n.keys().cloned().collect())
            .unwrap_or_default();
        for node in known {
            self.ensure_link_out(meeting, &node, now);
        }
        for node in hints {
            // The snapshot sent to a new node already holds the joiner.
            self.add_node(meeting, node, true, now);
        }
    }

    /// A local browser changed its state.
    pub(crate) fn fed_local_state(&mut self, id: ParticipantId, state: MediaState) {
        if let Some(meeting) = self.local_meeting(id) {
            self.fed_broadcast(
                &meeting,
                MeetingEvent::State {
                    id: id.0,
                    audio: state.audio,
                    video: state.video,
                    screen: state.screen,
                    hand: state.hand,
                },
            );
        }
    }

    /// A local browser said something.
    pub(crate) fn fed_local_chat(
        &mut self,
        id: ParticipantId,
        text: &str,
        at: u64,
        everyone: bool,
    ) {
        if let Some(meeting) = self.local_meeting(id) {
            self.fed_broadcast(
                &meeting,
                MeetingEvent::Chat {
                    id: id.0,
                    text: text.to_owned(),
                    at,
                    everyone,
                },
            );
        }
    }

    fn local_meeting(&self, id: ParticipantId) -> Option<String> {
        (self.sfu.kind(id) == Some(veche_core::Kind::Local))
            .then(|| self.sfu.meeting_of(id).map(str::to_owned))
            .flatten()
    }

    /// Another node's meeting events.
    pub(crate) fn on_node_events(
        &mut self,
        node: String,
        meeting: String,
        events: Vec<MeetingEvent>,
        now: Instant,
    ) {
        if node == self.node_id {
            return;
        }
        // Its control path is back.
        self.fed.unconfirmed.remove(&node);
        let reply = matches!(events.first(), Some(MeetingEvent::Sync { reply: true }));
        let is_sync = matches!(events.first(), Some(MeetingEvent::Sync { .. }));
        let new = self.add_node(&meeting, &node, false, now);
        if !self
            .fed
            .nodes
            .get(&meeting)
            .is_some_and(|n| n.contains_key(&node))
        {
            // Refused (too many nodes, or too many meetings of that node): nothing it says
            // applies, and it is told nothing.
            return;
        }
        if reply && !new {
            // It (re)started with us while we already knew it: it needs our list.
            let snap = self.snapshot(&meeting, &node, false);
            self.fed_send(&node, &meeting, snap);
            self.ensure_link_out(&meeting, &node, now);
        }
        let mut listed = HashSet::new();
        let mut saw_recording = false;
        for ev in events {
            match ev {
                MeetingEvent::Sync { .. } => {}
                MeetingEvent::Joined {
                    id,
                    name,
                    audio,
                    video,
                    screen,
                    hand,
                    key,
                    presence,
                } => {
                    // The bridge admitted this person by their presence before it got here.
                    listed.insert(id);
                    let state = MediaState {
                        audio,
                        video,
                        screen,
                        hand,
                    };
                    let who = Announced {
                        id,
                        name: &name,
                        state,
                        key,
                        presence,
                    };
                    self.remote_joined(&node, &meeting, who, now);
                }
                MeetingEvent::Left { id } => {
                    if self.remote_in(&node, id, &meeting).is_some() {
                        self.remote_left(&node, id, now);
                    }
                }
                MeetingEvent::State {
                    id,
                    audio,
                    video,
                    screen,
                    hand,
                } => {
                    if let Some(pid) = self.remote_in(&node, id, &meeting) {
                        let out = self.sfu.set_state(
                            pid,
                            StateChange(MediaState {
                                audio,
                                video,
                                screen,
                                hand,
                            }),
                            now,
                        );
                        self.apply(out);
                    }
                }
                MeetingEvent::Chat {
                    id,
                    text,
                    at,
                    everyone,
                } => {
                    if let Some(pid) = self.remote_in(&node, id, &meeting) {
                        // `everyone` passed the bridge's check of the sender's role.
                        if let Ok(out) = self.sfu.say(pid, &text, at, everyone) {
                            self.apply(out);
                        }
                    }
                }
                MeetingEvent::Node { peer, .. } => {
                    self.add_node(&meeting, &peer, true, now);
                }
                MeetingEvent::Recording { on, by, since_ms } => {
                    saw_recording = true;
                    let state = on.then_some(veche_core::Recording { by, since_ms });
                    self.remote_recording(&meeting, &node, state);
                }
                MeetingEvent::Relay { peer } => self.relay_for(&meeting, &node, &peer, now),
                MeetingEvent::Unrelay { peer } => self.unrelay_for(&meeting, &node, &peer),
                MeetingEvent::Views { tiles } => self.link_views(&meeting, &node, &tiles, now),
                // For the bridge, which accepts the relay's link for that node's tracks.
                MeetingEvent::Via { relay } => {
                    if let Some(s) = self.fed.state_mut(&meeting, &node) {
                        s.their_via = (!relay.is_empty()).then_some(relay);
                    }
                }
            }
        }
        if is_sync && !saw_recording {
            // Its list says nothing of a recording: it records nothing (any more).
            self.remote_recording(&meeting, &node, None);
        }
        if is_sync {
            // It may have lost what we told it our viewers show: said again.
            let from_it: Vec<veche_core::TrackId> = self
                .fed
                .track_in
                .iter()
                .filter(|(_, link)| {
                    self.peers.get(*link).is_some_and(
                        |p| matches!(&p.role, Role::LinkIn { node: n, .. } if *n == node),
                    )
                })
                .map(|(t, _)| *t)
                .collect();
            for t in from_it {
                self.fed.views_sent.remove(&t);
            }
            // Whoever it no longer lists is gone (a missed leave, or it restarted).
            let stale: Vec<u64> = self
                .fed
                .remote_of
                .iter()
                .filter(|(pid, (n, id))| {
                    *n == node
                        && !listed.contains(id)
                        && self.sfu.meeting_of(**pid) == Some(meeting.as_str())
                })
                .map(|(_, (_, id))| *id)
                .collect();
            for id in stale {
                self.remote_left(&node, id, now);
            }
        }
    }

    /// Tell the nodes whose links we receive what our viewers (and the links we forward
    /// on) show of each of their video tracks, and for a camera in layers which layers
    /// they need, where that changed: each link then carries a camera's needed layers, a
    /// video without layers only as large as it is shown here, and none that nobody here
    /// shows.
    pub(crate) fn fed_views(&mut self) {
        let mut batches: BTreeMap<(String, String), Vec<LinkView>> = BTreeMap::new();
        for (&track, link) in &self.fed.track_in {
            let Some((publisher, source)) = self.sfu.track(track) else {
                continue;
            };
            if source.kind() != TrackKind::Video {
                continue;
            }
            let Some(Role::LinkIn { node, meeting, .. }) = self.peers.get(link).map(|p| &p.role)
            else {
                continue;
            };
            let Some((origin, id)) = self.fed.remote_of.get(&publisher) else {
                continue;
            };
            let view = self.sfu.shown(track);
            // A link of several layers: those this node's viewers need (as a browser's
            // camera is asked for its encodings).
            let layers = self.sfu.asked_layers(track);
            if self.fed.views_sent.get(&track) == Some(&(view, layers)) {
                continue;
            }
            self.fed.views_sent.insert(track, (view, layers));
            batches
                .entry((meeting.clone(), node.clone()))
                .or_default()
                .push(LinkView {
                    participant: *id,
                    origin: (origin != node).then(|| origin.clone()),
                    source,
                    view,
                    layers: layers.map(|l| l.rids().into_iter().map(str::to_owned).collect()),
                });
        }
        let track_in = &self.fed.track_in;
        self.fed.views_sent.retain(|t, _| track_in.contains_key(t));
        for ((meeting, node), tiles) in batches {
            tracing::debug!(%node, tracks = tiles.len(), "views told");
            for chunk in tiles.chunks(MAX_VIEWS_PER_EVENT) {
                self.fed_send(
                    &node,
                    &meeting,
                    vec![MeetingEvent::Views {
                        tiles: chunk.to_vec(),
                    }],
                );
            }
        }
    }

    /// `node` says what its viewers show of the tracks our link to it carries, and which
    /// layers of each camera they need: that link carries those (`Sfu::set_passing`), and
    /// a video without layers as a viewer's stream takes its tile.
    fn link_views(&mut self, meeting: &str, node: &str, tiles: &[LinkView], now: Instant) {
        let Some(link) = self
            .fed
            .nodes
            .get(meeting)
            .and_then(|n| n.get(node))
            .and_then(|s| s.link_out)
        else {
            return;
        };
        let mut views = Vec::new();
        let mut passes = Vec::new();
        for t in tiles.iter().take(MAX_VIEWS_PER_EVENT) {
            // Our own participant, or (as a relay) one of the node we forward for.
            let pid = match &t.origin {
                None => Some(ParticipantId(t.participant))
                    .filter(|p| self.sfu.kind(*p) == Some(veche_core::Kind::Local)),
                Some(origin) => self
                    .fed
                    .remotes
                    .get(&(origin.clone(), t.participant))
                    .copied(),
            };
            let Some(pid) = pid.filter(|p| self.sfu.meeting_of(*p) == Some(meeting)) else {
                continue;
            };
            if let Some(rids) = &t.layers {
                passes.push((
                    pid,
                    t.source,
                    veche_core::Layers::from_rids(rids.iter().take(3)),
                ));
            }
            // Someone there who does not say what they show needs the whole picture.
            let view = t.view.unwrap_or(TileView {
                visible: true,
                height: u32::MAX,
            });
            views.push((pid, t.source, view));
        }
        if !views.is_empty() {
            let out = self.sfu.set_view(link, &views, now);
            self.apply(out);
        }
        if !passes.is_empty() {
            let out = self.sfu.set_passing(link, &passes, now);
            self.apply(out);
        }
    }

    /// A person removed from `meeting`: every participant other nodes carry with `key`.
    pub(crate) fn remove_remotes_with_key(&mut self, meeting: &str, key: &str, now: Instant) {
        let gone: Vec<(String, u64)> = self
            .fed
            .remote_of
            .iter()
            .filter(|(pid, _)| {
                self.sfu.meeting_of(**pid) == Some(meeting)
                    && self
                        .sfu
                        .info(**pid)
                        .is_some_and(|i| i.key.as_deref() == Some(key))
            })
            .map(|(_, remote)| remote.clone())
            .collect();
        for (node, id) in gone {
            tracing::info!(%node, %meeting, remote = id, "remote participant removed");
            self.remote_left(&node, id, now);
        }
    }

    /// Our participant for `node`'s participant `id`, if it is in `meeting`.
    fn remote_in(&self, node: &str, id: u64, meeting: &str) -> Option<ParticipantId> {
        self.fed
            .remotes
            .get(&(node.to_owned(), id))
            .copied()
            .filter(|pid| self.sfu.meeting_of(*pid) == Some(meeting))
    }

    fn remote_joined(
        &mut self,
        node: &str,
        meeting: &str,
        who: Announced<'_>,
        now: Instant,
    ) -> Option<ParticipantId> {
        let Announced {
            id,
            name,
            state,
            key: person_key,
            presence,
        } = who;
        let key = (node.to_owned(), id);
        if let Some(&pid) = self.fed.remotes.get(&key) {
            if self.sfu.info(pid).is_some_and(|i| {
                (i.audio, i.video, i.screen, i.hand)
                    != (state.audio, state.video, state.screen, state.hand)
            }) {
                let out = self.sfu.set_state(pid, StateChange(state), now);
                self.apply(out);
            }
            return Some(pid);
        }
        if self.fed.gone.contains(&key) {
            return None;
        }
        match self.sfu.join_remote(meeting, name, state, person_key, now) {
            Ok((pid, out)) => {
                tracing::info!(%node, %meeting, remote = id, participant = %pid, "remote participant joined");
                self.fed.remotes.insert(key.clone(), pid);
                self.fed.remote_of.insert(pid, key);
                if let Some(p) = presence {
                    self.fed.presence.insert(pid, p);
                }
                self.apply(out);
                // Their tracks may have come first, on a link here or through a relay.
                self.publish_declared_in(meeting, now);
                Some(pid)
            }
            Err(e) => {
                tracing::info!(%node, %meeting, error = %e, "remote participant refused");
                None
            }
        }
    }

    fn remote_left(&mut self, node: &str, id: u64, now: Instant) {
        let key = (node.to_owned(), id);
        if self.fed.gone.len() >= MAX_GONE {
            self.fed.gone.clear();
        }
        self.fed.gone.insert(key.clone());
        if let Some(pid) = self.fed.remotes.remove(&key) {
            self.fed.remote_of.remove(&pid);
            self.fed.presence.remove(&pid);
            for track in self.sfu.published(pid) {
                if let Some(link) = self.fed.track_in.remove(&track) {
                    if let Some(p) = self.peers.get_mut(&link) {
                        p.forget_in_track(track);
                    }
                }
            }
            tracing::info!(%node, remote = id, participant = %pid, "remote participant left");
            let out = self.sfu.leave(pid, now);
            self.apply(out);
        }
    }

    /// Another node offers its link to us (first offer or a renegotiation).
    pub(crate) fn on_link_offer(&mut self, offer: LinkOffer, now: Instant) {
        let LinkOffer {
            node,
            meeting,
            link,
            sdp,
            tracks,
            reply,
        } = offer;
        // An offer can come before the node's first events; it is in the meeting either way.
        self.add_node(&meeting, &node, true, now);
        let Some(state) = self.fed.nodes.get(&meeting).and_then(|n| n.get(&node)) else {
            let _ = reply.send(Err(LinkError::TooMany));
            return;
        };
        let relayed = state.via.is_some();
        let existing = state.link_in.filter(|id| {
            matches!(self.peers.get(id).map(|p| &p.role), Some(Role::LinkIn { link: l, .. }) if *l == link)
        });
        let id = match existing {
            Some(id) => id,
            None => {
                if let Some(old) = state.link_in {
                    // The other node replaced its link (after a failure): drop ours for it.
                    self.remove(old, None, now);
                }
                let theirs = self
                    .peers
                    .values()
                    .filter(|p| matches!(&p.role, Role::LinkIn { node: n, .. } if *n == node))
                    .count();
                if self.link_count() >= MAX_LINKS || theirs >= MAX_LINKS_IN_PER_NODE {
                    tracing::warn!(%node, %meeting, theirs, "too many node links; offer refused");
                    let _ = reply.send(Err(LinkError::TooMany));
                    return;
                }
                let id = self.sfu.reserve_id();
                let (events, _) = mpsc::channel::<PeerEvent>(1);
                // Answered on the media port (with its passive ICE-TCP candidate), or, for a
                // node whose media goes through a relay where our NAT does not keep ports,
                // on a link port whose mapping we know: only that one is offered where the
                // other node can reach it.
                let slot = if relayed { self.fresh_slot(now) } else { None };
                let port = slot.map(|i| self.link_candidates[i].0);
                tracing::debug!(%node, %meeting, ?port, "node link answered");
                let rtc = self.link_rtc(slot, now);
                let mut peer = Peer::new(
                    id,
                    Role::LinkIn {
                        node: node.clone(),
                        meeting: meeting.clone(),
                        link,
                        tracks: BTreeMap::new(),
                    },
                    rtc,
                    events,
                    now,
                );
                peer.link_port = slot.map(|i| self.link_candidates[i].0);
                self.peers.insert(id, Box::new(peer));
                if let Some(s) = self.fed.state_mut(&meeting, &node) {
                    s.link_in = Some(id);
                }
                id
            }
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let sources = tracks
            .iter()
            .map(|(mid, t)| (mid.clone(), t.source))
            .collect();
        // The other node carries a new track on an m-line that an old one left (str0m
        // never recycles an m-line, so the sender does): what was published from a mid
        // that no longer carries it goes.
        let mut stale = Vec::new();
        if let Role::LinkIn { tracks: t, .. } = &mut peer.role {
            for (mid, track) in &peer.in_tracks {
                let key = mid.to_string();
                if t.get(&key) != tracks.get(&key) {
                    stale.push(*track);
                }
            }
            *t = tracks;
        }
        for track in &stale {
            peer.forget_in_track(*track);
        }
        let accepted = peer.accept_offer(&sdp, sources);
        // What a mid no longer carries goes either way (a refused offer fails the link).
        for track in stale {
            self.fed.track_in.remove(&track);
            let out = self.sfu.unpublish(track);
            self.apply(out);
        }
        match accepted {
            Ok(answer) => {
                let _ = reply.send(Ok(answer));
                self.dirty.insert(id);
                // Another link may declare what went (a relay's and the direct one).
                self.publish_declared_in(&meeting, now);
            }
            Err(f) => {
                tracing::info!(%node, %meeting, error = %f.message, "node link offer refused");
                let _ = reply.send(Err(LinkError::BadSdp(f.message.clone())));
                self.fail(id, f);
            }
        }
    }

    /// A track arrived on another node's link: publish it as its participant's.
    pub(crate) fn link_media_added(
        &mut self,
        id: ParticipantId,
        mid: str0m::media::Mid,
        kind: veche_core::TrackKind,
        layers: veche_core::Layers,
        now: Instant,
    ) {
        let Some(Role::LinkIn {
            node,
            meeting,
            tracks,
            ..
        }) = self.peers.get(&id).map(|p| p.role.clone())
        else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.in_shapes.insert(mid, (kind, layers));
        if peer.in_tracks.contains_key(&mid) {
            return;
        }
        let Some(lt) = tracks.get(&*mid.to_string()).cloned() else {
            tracing::debug!(%node, %mid, "link media without a declared track ignored");
            return;
        };
        // A relayed track belongs to a participant of the node it came from first. That
        // node's own events made the participant; a relay can only attach tracks to it,
        // never make people up (or pose as us).
        let pid = match &lt.origin {
            Some(origin) if *origin != node => {
                let in_meeting = self
                    .fed
                    .nodes
                    .get(&meeting)
                    .is_some_and(|n| n.contains_key(origin));
                if !in_meeting {
                    tracing::info!(%node, %origin, "relayed track from a node not in the meeting ignored");
                    return;
                }
                self.remote_in(origin, lt.participant, &meeting)
            }
            // Only a person the node's events announced (and the bridge admitted) has
            // tracks here: a link cannot make people up.
            _ => self.remote_in(&node, lt.participant, &meeting),
        };
        let origin = lt.origin.clone().unwrap_or_else(|| node.clone());
        let Some(pid) = pid else {
            return;
        };
        if let Some(track) = self.sfu.track_of(pid, lt.source) {
            self.take_over(id, mid, track, (&origin, kind, layers), now);
            return;
        }
        match self.sfu.publish(pid, lt.source, kind, now) {
            Ok((track, out)) => {
                if let Some(p) = self.peers.get_mut(&id) {
                    p.add_published(mid, track);
                }
                self.fed.track_in.insert(track, id);
                // A camera whose layers the link carries side by side: chosen here per viewer.
                if layers != veche_core::Layers::NONE {
                    self.sfu.set_simulcast(track, layers);
                }
                tracing::debug!(%node, participant = %pid, %track, source = ?lt.source, rids = ?layers.rids(), "remote track published");
                self.apply(out);
                // As a relay: on to the nodes this one's tracks are relayed to.
                let tos: Vec<String> = self
                    .fed
                    .relayed
                    .get(&(meeting.clone(), origin.clone()))
                    .map(|t| t.iter().cloned().collect())
                    .unwrap_or_default();
                for to in tos {
                    if let Some(link) = self
                        .fed
                        .nodes
                        .get(&meeting)
                        .and_then(|n| n.get(&to))
                        .and_then(|s| s.link_out)
                    {
                        let out = self.sfu.relay_track(link, track);
                        self.apply(out);
                    }
                }
            }
            Err(e) => {
                tracing::info!(%node, participant = %pid, error = %e, "remote track not published")
            }
        }
    }

    /// A track published already arrives on link `id` too (while a pair moves between a
    /// relay and the direct path, both carry it): the better link carries it from now on,
    /// a connected one over one still connecting, the direct path over a relay. Its
    /// viewers keep the track; their streams continue from the new link's packets, as at
    /// a change of source, from a keyframe asked for now.
    fn take_over(
        &mut self,
        id: ParticipantId,
        mid: str0m::media::Mid,
        track: veche_core::TrackId,
        (origin, kind, layers): (&str, veche_core::TrackKind, veche_core::Layers),
        now: Instant,
    ) {
        // Connected and heard from lately: a relay that died a second ago is not.
        let rank = |p: &Peer| {
            let direct = matches!(&p.role, Role::LinkIn { node, .. } if node == origin);
            let live = p.connected && now.duration_since(p.last_input) < LINK_LIVE;
            1 + 2 * u8::from(live) + u8::from(direct)
        };
        let owner = self.fed.track_in.get(&track).copied();
        let theirs = owner
            .and_then(|o| self.peers.get(&o))
            .map_or(0, |p| rank(p));
        let Some(ours) = self.peers.get(&id).map(|p| rank(p)) else {
            return;
        };
        if owner == Some(id) || ours <= theirs {
            return;
        }
        if let Some(o) = owner.and_then(|o| self.peers.get_mut(&o)) {
            o.forget_in_track(track);
        }
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.add_published(mid, track);
        let asked = match kind {
            veche_core::TrackKind::Video => p.request_keyframe(track, None),
            veche_core::TrackKind::Audio => Ok(()),
        };
        self.fed.track_in.insert(track, id);
        // The node sending it now is told what our viewers show of it.
        self.fed.views_sent.remove(&track);
        self.sfu.set_simulcast(track, layers);
        tracing::info!(link = %id, %origin, %track, direct = ours % 2 == 0, "remote track now arrives on another link");
        if let Err(f) = asked {
            self.fail(id, f);
        }
    }

    /// Publish what link `id` declares and carries but nothing published yet: an m-line
    /// the other node reused for another track, or one whose person was not known here
    /// when it arrived.
    pub(crate) fn publish_declared(&mut self, id: ParticipantId, now: Instant) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let Role::LinkIn { tracks, .. } = &peer.role else {
            return;
        };
        let waiting: Vec<_> = peer
            .in_shapes
            .iter()
            .filter(|(mid, _)| {
                !peer.in_tracks.contains_key(*mid) && tracks.contains_key(&*mid.to_string())
            })
            .map(|(mid, shape)| (*mid, *shape))
            .collect();
        for (mid, (kind, layers)) in waiting {
            self.link_media_added(id, mid, kind, layers, now);
        }
    }

    /// The same, for every link of `meeting` here.
    fn publish_declared_in(&mut self, meeting: &str, now: Instant) {
        let links: Vec<ParticipantId> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(&p.role, Role::LinkIn { meeting: m, .. } if m == meeting))
            .map(|(id, _)| *id)
            .collect();
        for link in links {
            self.publish_declared(link, now);
        }
    }

    /// A link peer was removed; when it failed, the node is lost for that meeting.
    pub(crate) fn link_removed(
        &mut self,
        role: &Role,
        in_tracks: Vec<veche_core::TrackId>,
        failed: bool,
        connected: bool,
        now: Instant,
    ) {
        // What came in on it stops; a new link publishes it again.
        let carried = !in_tracks.is_empty();
        for track in in_tracks {
            self.fed.track_in.remove(&track);
            let out = self.sfu.unpublish(track);
            self.apply(out);
        }
        let (node, meeting) = match role {
            Role::Browser => return,
            Role::LinkOut { node, meeting } | Role::LinkIn { node, meeting, .. } => (node, meeting),
        };
        // Another link may carry the same tracks (a relay, while the direct path was up).
        if carried {
            self.publish_declared_in(meeting, now);
        }
        if let Some(s) = self.fed.state_mut(meeting, node) {
            if matches!(role, Role::LinkOut { .. }) {
                s.link_out = None;
            } else {
                s.link_in = None;
            }
        }
        if failed && connected {
            if self.media_heard_from(node, now) {
                // A direct link that failed while a relay still carries the node's people:
                // they stay, and our media goes through a relay again.
                tracing::info!(%node, %meeting, "a connected node link failed; back to a relay");
                if let Some(s) = self.fed.state_mut(meeting, node) {
                    if s.via.is_none() {
                        s.relay_asked = Some(now);
                        s.direct_again = Some((now + DIRECT_AGAIN, DIRECT_AGAIN * 2));
                    }
                }
                self.ask_relay(node, meeting, false);
            } else {
                self.node_lost(node, Some(meeting), now);
            }
        }
    }

    /// The libp2p connections to `node` all closed. Where its media still arrives directly
    /// the node is alive (the link's own silence check decides); elsewhere (relayed pairs,
    /// links not up yet) nothing else would notice, so it is lost now.
    pub(crate) fn control_lost(&mut self, node: &str, now: Instant) {
        // Its people's media still comes, through a relay: it is alive, and its control
        // path comes back (a circuit through another relay). Checked again each second
        // until it does (its events arrive).
        if self.media_heard_from(node, now) {
            tracing::info!(%node, "control connection lost, but its media still comes; kept");
            if self.fed.unconfirmed.len() < MAX_UNCONFIRMED {
                self.fed.unconfirmed.insert(node.to_owned());
            }
            return;
        }
        self.fed.unconfirmed.remove(node);
        let meetings: Vec<String> = self
            .fed
            .nodes
            .iter()
            .filter(|(_, n)| {
                n.get(node).is_some_and(|s| {
                    !s.link_in
                        .and_then(|id| self.peers.get(&id))
                        .is_some_and(|p| p.connected)
                })
            })
            .map(|(m, _)| m.clone())
            .collect();
        for m in meetings {
            self.node_lost(node, Some(&m), now);
        }
    }

    /// Whether media of `node`'s people arrived in the last two seconds, on any link.
    fn media_heard_from(&self, node: &str, now: Instant) -> bool {
        self.fed.remote_of.iter().any(|(pid, (n, _))| {
            n == node
                && self.sfu.published(*pid).iter().any(|t| {
                    self.fed
                        .track_in
                        .get(t)
                        .and_then(|l| self.peers.get(l))
                        .is_some_and(|p| {
                            p.connected && now.duration_since(p.last_media) < LINK_LIVE * 2
                        })
                })
        })
    }

    /// Forget `node` in `meeting` (or every meeting): its participants leave, its links go.
    /// While local browsers remain, it is asked to sync again for a while (it may be back).
    pub(crate) fn node_lost(&mut self, node: &str, meeting: Option<&str>, now: Instant) {
        let meetings: Vec<String> = match meeting {
            Some(m) => vec![m.to_owned()],
            None => self
                .fed
                .nodes
                .iter()
                .filter(|(_, n)| n.contains_key(node))
                .map(|(m, _)| m.clone())
                .collect(),
        };
        for m in meetings {
            let Some(state) = self.fed.nodes.get_mut(&m).and_then(|n| n.remove(node)) else {
                continue;
            };
            tracing::info!(%node, meeting = %m, "lost the other node for this meeting");
            self.remote_recording(&m, node, None);
            for link in [state.link_out, state.link_in].into_iter().flatten() {
                self.remove(link, None, now);
            }
            let theirs: Vec<u64> = self
                .fed
                .remote_of
                .iter()
                .filter(|(pid, (n, _))| n == node && self.sfu.meeting_of(**pid) == Some(m.as_str()))
                .map(|(_, (_, id))| *id)
                .collect();
            for id in theirs {
                self.remote_left(node, id, now);
                // It may come back with the same participants after a resync.
                self.fed.gone.remove(&(node.to_owned(), id));
            }
            if self.fed.nodes.get(&m).is_some_and(|n| n.is_empty()) {
                self.fed.nodes.remove(&m);
            }
            self.fed.relayed.retain(|(rm, from), tos| {
                if *rm != m {
                    return true;
                }
                tos.remove(node);
                from != node && !tos.is_empty()
            });
            // Pairs whose media went through the lost node: try directly again (and, failing
            // that, another relay).
            let rerouted: Vec<String> = self
                .fed
                .nodes
                .get_mut(&m)
                .map(|n| {
                    n.iter_mut()
                        .filter(|(_, s)| s.via.as_deref() == Some(node))
                        .map(|(k, s)| {
                            s.via = None;
                            s.relay_asked = None;
                            k.clone()
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !rerouted.is_empty() {
                if self.fed.lost_relays.len() >= MAX_LOST_RELAYS {
                    self.fed.lost_relays.clear();
                }
                self.fed.lost_relays.insert(node.to_owned(), now);
            }
            for other in rerouted {
                // The direct path did not work before: the next relay is asked for at once,
                // while the direct path is tried again.
                tracing::info!(node = %other, relay = %node, meeting = %m, "relay lost; re-routing");
                self.ensure_link_out(&m, &other, now);
                if let Some(s) = self.fed.state_mut(&m, &other) {
                    s.relay_asked = Some(now);
                }
                self.ask_relay(&other, &m, false);
            }
            if !self.sfu.local_participants(&m).is_empty() {
                self.fed.lost.insert((m, node.to_owned()), (now, now));
            }
        }
    }

    /// Events for `node` were lost: its view of our people may be wrong until we resend.
    pub(crate) fn resync_later(&mut self, node: String, meeting: String) {
        let carried = self
            .fed
            .nodes
            .get(&meeting)
            .is_some_and(|n| n.contains_key(&node));
        if carried {
            self.fed.resync.insert((meeting, node));
        }
    }

    /// While a node's media goes through a relay, each link port asks the relay where it
    /// comes from (`probe.rs`) every [`PROBE_EVERY`]: the next direct try offers what the
    /// NAT really maps (and the probes keep those mappings alive).
    fn probe_mappings(&mut self, now: Instant) {
        if self
            .probed_at
            .is_some_and(|at| now.saturating_duration_since(at) < PROBE_EVERY)
        {
            return;
        }
        // The first relay in use whose address we know (our link to it).
        let relay: Option<SocketAddr> = self.fed.nodes.values().find_map(|nodes| {
            nodes.values().find_map(|s| {
                let hop = s.via.as_ref().and_then(|v| nodes.get(v))?;
                let id = hop.link_out?;
                self.by_source
                    .iter()
                    .find(|(_, v)| **v == id)
                    .map(|((remote, _), _)| *remote)
            })
        });
        let Some(relay) = relay else {
            return;
        };
        self.probed_at = Some(now);
        for (port, set) in &self.link_candidates {
            let Some(base) = crate::engine::host_base(set, relay.is_ipv4()) else {
                continue;
            };
            let Some((id, bytes)) = crate::probe::request() else {
                continue;
            };
            if self.probes.len() >= crate::engine::MAX_PROBES {
                self.probes.remove(0);
            }
            self.probes.push((id, *port));
            self.outbox.push(base, relay, &bytes);
        }
    }

    /// Every second: ask lost nodes to sync again. (A meeting stays carried while no browser
    /// is here: its state is a few entries, and the other nodes link to each other directly.)
    pub(crate) fn fed_housekeeping(&mut self, now: Instant) {
        self.probe_mappings(now);
        let mut due = Vec::new();
        self.fed.lost.retain(|(m, n), (since, last)| {
            if now.duration_since(*since) > RESYNC_FOR {
                return false;
            }
            if now.duration_since(*last) >= RESYNC_EVERY {
                *last = now;
                due.push((m.clone(), n.clone()));
            }
            true
        });
        for (m, n) in due {
            if !self.sfu.local_participants(&m).is_empty() {
                let snap = self.snapshot(&m, &n, true);
                self.fed_send(&n, &m, snap);
            }
        }
        // Nodes whose events were lost: our whole list again (at most every 5 s each; a
        // snapshot is idempotent and also tells it whom we no longer have).
        let mut again = Vec::new();
        let nodes = &self.fed.nodes;
        let carried = |(m, n): &(String, String)| nodes.get(m).is_some_and(|x| x.contains_key(n));
        self.fed.resync_sent.retain(|k, _| carried(k));
        let sent = &mut self.fed.resync_sent;
        self.fed.resync.retain(|k| {
            if !carried(k) {
                return false;
            }
            if sent
                .get(k)
                .is_some_and(|t| now.duration_since(*t) < RESYNC_EVERY)
            {
                return true;
            }
            sent.insert(k.clone(), now);
            again.push(k.clone());
            false
        });
        for (m, n) in again {
            let snap = self.snapshot(&m, &n, false);
            self.fed_send(&n, &m, snap);
        }
        // Our links that never connected: give up the direct path and ask for a relay.
        let stuck: Vec<(ParticipantId, String, String, Option<Duration>, &str)> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                !p.connected
                    && p.progress
                        .last_step()
                        .is_some_and(|t| now.duration_since(t) > LINK_CONNECT_DEADLINE)
            })
            .filter_map(|(id, p)| match &p.role {
                Role::LinkOut { node, meeting } => {
                    // Whether anything of the other node's came in tells a path that drops
                    // everything from a handshake that stalls.
                    let heard = (p.last_input > p.joined_at).then(|| now - p.last_input);
                    let reached = if p.progress.ice_connected.is_some() {
                        "ice connected, dtls not"
                    } else if p.progress.answered.is_some() {
                        "answered, ice not connected"
                    } else {
                        "offered, no answer"
                    };
                    Some((*id, node.clone(), meeting.clone(), heard, reached))
                }
                _ => None,
            })
            .collect();
        let mut given_up = Vec::new();
        for (id, node, meeting, heard, reached) in stuck {
            let Some(s) = self.fed.state_mut(&meeting, &node) else {
                continue;
            };
            given_up.push(id);
            if s.via.is_some() {
                // Relayed: the direct path is tried again later, less often each time.
                let wait = s.direct_again.map_or(DIRECT_AGAIN, |(_, w)| w);
                s.direct_again = Some((now + wait, (wait * 2).min(DIRECT_AGAIN_MAX)));
                tracing::debug!(%node, %meeting, reached, wait_s = wait.as_secs(), "direct media link still does not connect; media stays relayed");
                continue;
            }
            let asked = s.relay_asked.replace(now).is_some();
            let last_heard_ms = heard.map(|d| d.as_millis() as u64);
            tracing::info!(%node, %meeting, reached, ?last_heard_ms, datagrams_dropped = self.dropped.load(std::sync::atomic::Ordering::Relaxed), "direct media link did not connect; asking for a relay");
            if !asked {
                self.ask_relay(&node, &meeting, false);
            }
        }
        for id in given_up {
            self.remove(id, None, now);
        }
        self.fed
            .lost_relays
            .retain(|_, at| now.duration_since(*at) < LOST_RELAY_FOR);
        let unconfirmed: Vec<String> = self.fed.unconfirmed.iter().cloned().collect();
        for node in unconfirmed {
            if !self.media_heard_from(&node, now) {
                self.control_lost(&node, now);
            }
        }
        // A link that went silent (a relay that died) loses what another link carries
        // too: checked each second, not only when a link changes.
        let links: Vec<ParticipantId> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.role, Role::LinkIn { .. }))
            .map(|(id, _)| *id)
            .collect();
        for link in links {
            self.publish_declared(link, now);
        }
        self.race_relays(now);
        self.add_tcp_late(now);
        self.settle_direct(now);
        self.dismiss_unused_relays(now);
        // Idle pairs: no browser here and none of theirs here either means nothing flows
        // either way; close our link (they do the same on their side). While either side
        // has people, links stay up, so a reload of the only browser drops nothing.
        let mut idle = Vec::new();
        for (m, nodes) in &self.fed.nodes {
            if !self.sfu.local_participants(m).is_empty() {
                continue;
            }
            for (node, state) in nodes {
                let theirs_here = self.fed.remote_of.iter().any(|(pid, (rn, _))| {
                    rn == node && self.sfu.meeting_of(*pid) == Some(m.as_str())
                });
                let relaying = self
                    .fed
                    .relayed
                    .iter()
                    .any(|((rm, from), tos)| rm == m && (from == node || tos.contains(node)));
                if !theirs_here && !relaying {
                    idle.extend(state.link_out);
                }
            }
        }
        for link in idle {
            self.remove(link, None, now);
        }
        // Links that could not be made (the link limit) or went away: make them again
        // while there are browsers here to send for.
        let missing: Vec<(String, String)> = self
            .fed
            .nodes
            .iter()
            .flat_map(|(m, n)| {
                n.iter()
                    .filter(|(_, s)| s.wants_direct_link(now))
                    .map(move |(node, _)| (m.clone(), node.clone()))
            })
            .collect();
        for (m, n) in missing {
            self.ensure_link_out(&m, &n, now);
        }
        // No relay came: try the direct path again.
        let mut retry = Vec::new();
        for (m, nodes) in self.fed.nodes.iter_mut() {
            for (n, s) in nodes.iter_mut() {
                if s.via.is_none()
                    && s.relay_asked
                        .is_some_and(|t| now.duration_since(t) > DIRECT_RETRY)
                {
                    s.relay_asked = None;
                    retry.push((m.clone(), n.clone()));
                }
            }
        }
        for (m, n) in retry {
            self.ensure_link_out(&m, &n, now);
        }
    }

    /// Ask the bridge for a relay towards `node`, not one lost lately (its libp2p connection
    /// may not have closed yet).
    fn ask_relay(&self, node: &str, meeting: &str, race: bool) {
        let Some(out) = &self.fed_out else {
            return;
        };
        let avoid = self.fed.lost_relays.keys().cloned().collect();
        let _ = out.try_send(FedOut::NeedRelay {
            node: node.to_owned(),
            meeting: meeting.to_owned(),
            race,
            avoid,
        });
    }

    /// Our links not connected [`TCP_AFTER`] after their offer try TCP too: their active
    /// ICE-TCP candidates are added, whose checks dial the other node's passive one. Not at
    /// once: ICE keeps the first pair it nominates, and a TCP pair that connected first
    /// would carry a link whose UDP works.
    fn add_tcp_late(&mut self, now: Instant) {
        let on_loopback = self.links_on_loopback;
        for p in self.peers.values_mut() {
            let (Role::LinkOut { .. }, Some(port)) = (&p.role, p.link_port) else {
                continue;
            };
            let late = p
                .progress
                .offered
                .is_some_and(|t| now.duration_since(t) >= TCP_AFTER);
            if p.connected || p.tcp_added || !late {
                continue;
            }
            p.tcp_added = true;
            let Some((_, active)) = self.link_tcp.iter().find(|(q, _)| *q == port) else {
                continue;
            };
            for c in active {
                if on_loopback || !c.addr().ip().is_loopback() {
                    p.rtc.add_local_candidate(c.clone());
                }
            }
            self.dirty.insert(p.id);
        }
    }

    /// Our links not connected a second after their offer ask for a relay as well: media
    /// flows on whichever path connects first.
    fn race_relays(&mut self, now: Instant) {
        if self.fed.relay_enabled {
            return;
        }
        let slow: Vec<(String, String)> = self
            .peers
            .values()
            .filter(|p| {
                !p.connected
                    && p.progress
                        .offered
                        .is_some_and(|t| now.duration_since(t) >= RACE_AFTER)
            })
            .filter_map(|p| match &p.role {
                Role::LinkOut { node, meeting } => Some((node.clone(), meeting.clone())),
                _ => None,
            })
            // A node with people here: not a relay (whose own link has no other way).
            .filter(|(node, meeting)| {
                self.fed.remote_of.iter().any(|(pid, (n, _))| {
                    n == node && self.sfu.meeting_of(*pid) == Some(meeting.as_str())
                })
            })
            .collect();
        for (node, meeting) in slow {
            let Some(s) = self.fed.state_mut(&meeting, &node) else {
                continue;
            };
            if s.via.is_some() || s.relay_asked.is_some() {
                continue;
            }
            s.relay_asked = Some(now);
            tracing::info!(%node, %meeting, "direct media link not connected yet; asking for a relay too");
            self.ask_relay(&node, &meeting, false);
        }
    }

    /// Relayed pairs whose direct link has connected and held: our media goes directly,
    /// and the relay stops forwarding it. (The other node takes each track from the
    /// direct link as soon as that connects, so nothing stops meanwhile.)
    fn settle_direct(&mut self, now: Instant) {
        let peers = &self.peers;
        let mut settled = Vec::new();
        for (m, nodes) in self.fed.nodes.iter_mut() {
            for (n, s) in nodes.iter_mut() {
                let direct = s.link_out.and_then(|id| peers.get(&id)).is_some_and(|p| {
                    p.connected
                        && p.progress
                            .ice_connected
                            .is_some_and(|t| now.duration_since(t) >= DIRECT_SETTLED)
                });
                if !direct {
                    continue;
                }
                if let Some(via) = s.via.take() {
                    settled.push((m.clone(), n.clone(), via));
                }
                s.relay_asked = None;
                s.direct_again = None;
            }
        }
        for (meeting, node, via) in settled {
            tracing::info!(%node, relay = %via, %meeting, "media to the node goes directly now");
            self.fed_send(
                &via,
                &meeting,
                vec![MeetingEvent::Unrelay { peer: node.clone() }],
            );
            // And the node they go to: no relay carries them any more (an empty `via`).
            self.fed_send(
                &node,
                &meeting,
                vec![MeetingEvent::Via {
                    relay: String::new(),
                }],
            );
        }
    }

    /// A relay we chose that carries nothing for us any more (every pair it served
    /// reaches the other directly) is no longer sent our media.
    fn dismiss_unused_relays(&mut self, now: Instant) {
        let mut unused = Vec::new();
        for (m, nodes) in &self.fed.nodes {
            for (relay, s) in nodes.iter().filter(|(_, s)| s.chosen_relay) {
                // We, or another node toward us, still route through it.
                let routed = nodes
                    .values()
                    .any(|o| o.via.as_ref() == Some(relay) || o.their_via.as_ref() == Some(relay));
                // Its link to us still carries another node's tracks: that node has not
                // moved yet (and the relay lets us go when it does).
                let carries = s.link_in.and_then(|l| self.peers.get(&l)).is_some_and(
                    |p| matches!(&p.role, Role::LinkIn { tracks, .. } if !tracks.is_empty()),
                );
                let people = self.fed.remote_of.iter().any(|(pid, (n, _))| {
                    n == relay && self.sfu.meeting_of(*pid) == Some(m.as_str())
                });
                if !routed && !carries && !people {
                    unused.push((m.clone(), relay.clone()));
                }
            }
        }
        for (meeting, relay) in unused {
            tracing::info!(%relay, %meeting, "relay no longer needed for this meeting");
            self.node_lost(&relay, Some(&meeting), now);
            self.fed.forget_lost(&meeting, &relay);
        }
    }

    /// The links of a meeting, per other node.
    pub(crate) fn links(&self, meeting: &str) -> Vec<LinkInfo> {
        let Some(nodes) = self.fed.nodes.get(meeting) else {
            return Vec::new();
        };
        nodes
            .iter()
            .map(|(node, s)| {
                // Relayed: the media path is the links with the relay node.
                let hop = s.via.as_ref().and_then(|v| nodes.get(v)).unwrap_or(s);
                let out = hop.link_out.and_then(|id| self.peers.get(&id));
                let inn = hop.link_in.and_then(|id| self.peers.get(&id));
                let path = hop.link_out.and_then(|id| {
                    self.by_source
                        .iter()
                        .find(|(_, v)| **v == id)
                        .map(|((a, _), _)| a.to_string())
                });
                LinkInfo {
                    node: node.clone(),
                    participants: self
                        .fed
                        .remote_of
                        .iter()
                        .filter(|(pid, (n, _))| {
                            n == node && self.sfu.meeting_of(**pid) == Some(meeting)
                        })
                        .count(),
                    tracks_out: out.map_or(0, |p| p.out_count()),
                    out_connected: out.is_some_and(|p| p.connected),
                    tracks_in: inn.map_or(0, |p| p.in_count()),
                    in_connected: inn.is_some_and(|p| p.connected),
                    frames_out: out.map_or(0, |p| p.frames_out),
                    frames_in: inn.map_or(0, |p| p.frames_in),
                    kbps_out: out.map_or(0.0, |p| p.link_stats.kbps_out),
                    kbps_in: inn.map_or(0.0, |p| p.link_stats.kbps_in),
                    loss_out: out.and_then(|p| p.link_stats.loss_out),
                    loss_in: inn.and_then(|p| p.link_stats.loss_in),
                    media_rtt_ms: out
                        .and_then(|p| p.link_stats.rtt)
                        .map(|d| d.as_secs_f64() * 1000.0),
                    path,
                    via: s.via.clone(),
                    videos_out: hop
                        .link_out
                        .and_then(|id| self.sfu.reception(id))
                        .map(|r| r.videos)
                        .unwrap_or_default(),
                    capped: hop
                        .link_out
                        .and_then(|id| self.sfu.link_cap(id))
                        .map(veche_core::Layer::rid),
                    // What came in on either link (ours brings its feedback).
                    transport: inn
                        .and_then(|p| p.transport)
                        .or_else(|| out.and_then(|p| p.transport))
                        .map(|t| match t {
                            Protocol::Udp => "udp",
                            _ => "tcp",
                        }),
                }
            })
            .collect()
    }
}
