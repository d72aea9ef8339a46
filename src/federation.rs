//! The bridge between the media engine and the control plane for meetings that span nodes:
//! requests from other nodes go to the engine, and what the engine has for other nodes goes
//! out over libp2p, in order per node.
//!
//! Nodes take part in a meeting only on behalf of people who were really let in: every
//! person another node announces comes with the proof they made for that node, and the
//! meeting's rules (veche-meeting) admit them here or the announcement is dropped. A node
//! with nobody admitted gets refused (no events, no link) and is told nothing (see
//! [`Members`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use veche_media::{Command, EngineHandle, FedOut, LinkOffer};
use veche_meeting::Presence;
use veche_net::protocol::{ErrorCode, MeetingEvent, Request, Response};
use veche_net::{AppEvent, NetHandle, PeerId};
use veche_node::{MeetingStore, MeetingView};
use veche_trust::ActionKind;
use veche_web::rules;

/// Most events one request may carry (a snapshot of a full meeting fits).
const MAX_EVENTS: usize = 512;
/// Failed deliveries in a row (resyncs come every 5 s) before a node counts as gone.
const GIVE_UP_AFTER: u32 = 12;
/// Messages waiting for one node; beyond this the node is not keeping up and they drop.
const PER_NODE_QUEUE: usize = 512;
/// People one node may have admitted in one meeting (a meeting holds 100).
const MAX_ADMITTED: usize = 512;
/// Nodes introduced (with a proof) per meeting.
const MAX_INTRODUCED: usize = 64;
/// As a relay: meetings one node may have us carry (we have no rules for them).
const MAX_CARRIED_FOR: usize = 8;

/// Which other nodes take part in which meeting here, and on whose behalf. Freed when the
/// node goes.
#[derive(Default)]
struct Members {
    /// (meeting, node) → that node's people whom the meeting's rules admitted here (their
    /// ids on that node → their proofs; one id per key). A node is a member while it has one.
    admitted: HashMap<(String, String), HashMap<u64, Proof>>,
    /// meeting → node → the proof of one of its people that a member passed on when it
    /// introduced the node (`node` events), admitted here: that node is told our people (so
    /// that it tells us its own) until its own events decide.
    introduced: HashMap<String, HashMap<String, Proof>>,
    /// (meeting, relay node) this node chose to relay its media (set by the task that picks).
    relays: Arc<Mutex<std::collections::HashSet<(String, String)>>>,
    /// (meeting, origin node) → the relay that origin said its tracks come through (`via`).
    via: HashMap<(String, String), String>,
    /// As a relay: node → the meetings it has us carry without rules of ours (bounded).
    carried_for: HashMap<String, std::collections::HashSet<String>>,
    /// As a relay: checks waiting for their destination's answer (each lasts seconds).
    confirming: Confirming,
}

/// A person another node carries, as admitted here.
#[derive(Clone)]
struct Proof {
    /// Their key, base64url.
    key: String,
    /// The presence token they made for that node.
    presence: String,
}

impl Members {
    fn is_member(&self, meeting: &str, node: &str) -> bool {
        self.admitted
            .get(&(meeting.to_owned(), node.to_owned()))
            .is_some_and(|a| !a.is_empty())
    }

    /// A member introduced `node` with `presence`: if the meeting's rules here admit that
    /// person through `node`, it is told our people (the first step of linking with it).
    /// Returns whether it was not introduced before (what it was sent before, it was not
    /// told).
    fn introduce(&mut self, view: &MeetingView, meeting: &str, node: &str, presence: &str) -> bool {
        match admit_presence(view, meeting, node, presence, rules::now_ms()) {
            Ok((key, _)) => {
                if self.is_member(meeting, node) {
                    return false;
                }
                let v = self.introduced.entry(meeting.to_owned()).or_default();
                if v.len() >= MAX_INTRODUCED && !v.contains_key(node) {
                    return false;
                }
                let proof = Proof {
                    key: veche_trust::encode_key(&key),
                    presence: presence.to_owned(),
                };
                v.insert(node.to_owned(), proof).is_none()
            }
            Err(why) => {
                tracing::info!(%node, %meeting, %why, "an introduced node's proof is not let in here");
                false
            }
        }
    }

    fn is_introduced(&self, meeting: &str, node: &str) -> bool {
        self.introduced
            .get(meeting)
            .is_some_and(|v| v.contains_key(node))
    }

    /// The proof of one of `node`'s people admitted here, to introduce it to others.
    fn proof_of(&self, meeting: &str, node: &str) -> Option<String> {
        let own = self
            .admitted
            .get(&(meeting.to_owned(), node.to_owned()))
            .and_then(|a| a.values().next());
        own.or_else(|| self.introduced.get(meeting)?.get(node))
            .map(|p| p.presence.clone())
    }

    /// `events` for another node with the proofs of the nodes they introduce.
    fn with_proofs(&self, meeting: &str, events: &mut [MeetingEvent]) {
        for ev in events {
            if let MeetingEvent::Node { peer, presence } = ev {
                *presence = self.proof_of(meeting, peer);
            }
        }
    }

    /// Chosen by this node as its relay for the meeting.
    fn is_our_relay(&self, meeting: &str, node: &str) -> bool {
        self.relays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(meeting.to_owned(), node.to_owned()))
    }

    /// Whether this node may tell `node` about `meeting` (our people, our media): a member,
    /// a relay this node chose, a node the meeting was learned from, or a node introduced
    /// with the proof of a person let in here.
    fn may_tell(&self, meeting: &str, node: &str, homes: &[String]) -> bool {
        self.is_member(meeting, node)
            || self.is_our_relay(meeting, node)
            || homes.iter().any(|h| h == node)
            || self.is_introduced(meeting, node)
    }

    /// Whether `node` may offer a media link for `meeting`: a member, a relay this node
    /// chose, or a relay a member named (`via`) whose tracks all come from members that
    /// named it (it may offer before it has any).
    fn may_link(
        &self,
        meeting: &str,
        node: &str,
        tracks: &std::collections::BTreeMap<String, veche_net::protocol::LinkTrack>,
    ) -> bool {
        let named_by = |o: &str| self.relays_for_us(meeting, o, node);
        let named = self
            .via
            .iter()
            .any(|((m, o), r)| m == meeting && r == node && self.is_member(meeting, o));
        let relayed = named
            && tracks
                .values()
                .all(|t| t.origin.as_deref().is_some_and(named_by));
        // A member carries its own people's tracks; another node's only as the relay that
        // node named (else it could feed someone else's picture and voice).
        let own = tracks
            .values()
            .all(|t| t.origin.as_deref().is_none_or(|o| o == node || named_by(o)));
        (self.is_member(meeting, node) && own) || self.is_our_relay(meeting, node) || relayed
    }

    /// For a link whose tracks (if any) all come from members: those members (all members
    /// of the meeting when it has no tracks yet); none when a track is not a member's.
    fn relayed_origins(
        &self,
        meeting: &str,
        tracks: &std::collections::BTreeMap<String, veche_net::protocol::LinkTrack>,
    ) -> Option<Vec<String>> {
        if tracks.is_empty() {
            let all: Vec<String> = self
                .admitted
                .keys()
                .filter(|(m, _)| m == meeting)
                .map(|(_, n)| n.clone())
                .collect();
            return (!all.is_empty()).then_some(all);
        }
        tracks
            .values()
            .map(|t| t.origin.clone().filter(|o| self.is_member(meeting, o)))
            .collect()
    }

    /// Drop the people removed or turned away since they were admitted (or all of them, once
    /// the meeting ended). Returns, per
    /// (meeting, node), the ids dropped and whether that node is left with nobody (it is
    /// dismissed from the meeting then).
    fn prune(&mut self, view: &MeetingView) -> Vec<(String, String, Vec<u64>, bool)> {
        let gone = |meeting: &str, key: &str| {
            veche_trust::decode_key(key).is_ok_and(|k| {
                rules::read(view, meeting, |m| m.rules.still_in(&k).is_err()).unwrap_or(true)
            })
        };
        for (meeting, nodes) in &mut self.introduced {
            nodes.retain(|_, p| !gone(meeting, &p.key));
        }
        self.introduced.retain(|_, v| !v.is_empty());
        let mut changed = Vec::new();
        self.admitted.retain(|(meeting, node), people| {
            let mut dropped = Vec::new();
            people.retain(|id, p| {
                let removed = gone(meeting, &p.key);
                if removed {
                    dropped.push(*id);
                }
                !removed
            });
            if !dropped.is_empty() {
                changed.push((meeting.clone(), node.clone(), dropped, people.is_empty()));
            }
            !people.is_empty()
        });
        changed
    }

    /// Whether `origin`, a member, named `relay` as the relay its tracks reach us through.
    fn relays_for_us(&self, meeting: &str, origin: &str, relay: &str) -> bool {
        self.is_member(meeting, origin)
            && self
                .via
                .get(&(meeting.to_owned(), origin.to_owned()))
                .is_some_and(|r| r == relay)
    }

    /// As a relay: whether `node` may have us carry `meeting` (a few meetings per node).
    fn carry_for(&mut self, node: &str, meeting: &str) -> bool {
        let m = self.carried_for.entry(node.to_owned()).or_default();
        if m.len() >= MAX_CARRIED_FOR && !m.contains(meeting) {
            return false;
        }
        m.insert(meeting.to_owned());
        true
    }

    fn forget_node(&mut self, node: &str) {
        self.carried_for.remove(node);
        self.admitted.retain(|(_, n), _| n != node);
        self.via.retain(|(_, o), r| o != node && r != node);
        self.relays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, n)| n != node);
        for v in self.introduced.values_mut() {
            v.remove(node);
        }
        self.introduced.retain(|_, v| !v.is_empty());
    }
}

/// What the bridge shares with the web side: the meeting store, the moderation actions
/// carried out lately, and the waiting rooms.
pub type Shared = (
    Arc<Mutex<MeetingStore>>,
    Arc<Mutex<veche_web::moderation::Recent>>,
    Arc<Mutex<veche_web::lobby::Lobby>>,
    Arc<veche_web::recording::Recordings>,
);

/// What a request from another node is decided with and carried out on.
type Stores<'a> = (
    &'a Arc<Mutex<MeetingStore>>,
    &'a MeetingView,
    &'a Mutex<veche_web::moderation::Recent>,
    &'a Mutex<veche_web::lobby::Lobby>,
    &'a Arc<veche_web::recording::Recordings>,
);

/// Run the bridge until the engine or the network stops.
pub async fn run(
    engine: EngineHandle,
    net: NetHandle,
    (meetings, recent, lobby, recordings): Shared,
    relay: bool,
    mut from_engine: mpsc::Receiver<FedOut>,
    mut from_net: mpsc::Receiver<AppEvent>,
) {
    let view = meetings.lock().unwrap_or_else(|p| p.into_inner()).view();
    let mut queues: HashMap<String, mpsc::Sender<FedOut>> = HashMap::new();
    let mut members = Members::default();
    // Removals take effect on other nodes' people at once (the engine drops them); this
    // sweep then dismisses the nodes left with nobody let in.
    let mut prune = tokio::time::interval(std::time::Duration::from_secs(2));
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = prune.tick() => {
                // Nodes given up (never reached, or gone without a disconnection).
                queues.retain(|_, q| !q.is_closed());
                for (meeting, node, ids, nobody) in members.prune(&view) {
                    // Announced before a removal that overtook them: gone here too.
                    let events = ids.into_iter().map(|id| MeetingEvent::Left { id }).collect();
                    let cmd = Command::NodeEvents { node: node.clone(), meeting: meeting.clone(), events };
                    let _ = engine.send(cmd).await;
                    if nobody {
                        tracing::info!(%node, %meeting, "nobody that node carries is let in any more; dismissed");
                        let _ = engine.send(Command::NodeDismissed { node, meeting }).await;
                    }
                }
            }
            out = from_engine.recv() => {
                let Some(mut out) = out else { break };
                let (node, meeting) = match &out {
                    FedOut::Events { node, meeting, .. } | FedOut::Offer { node, meeting, .. } => {
                        (node.clone(), meeting.clone())
                    }
                    FedOut::NeedRelay { node, meeting, race, avoid } => {
                        let (node, meeting, race) = (node.clone(), meeting.clone(), *race);
                        let avoid = avoid.clone();
                        let (net, engine) = (net.clone(), engine.clone());
                        let relays = members.relays.clone();
                        tokio::spawn(async move {
                            let via = pick_relay(&net, &node, race, &avoid).await;
                            if race && via.is_none() {
                                // A direct control path: the direct media path is likely
                                // to open too, and is given its second first.
                                return;
                            }
                            // A relay this node chose hears our people (it forwards them),
                            // recorded before the engine sends it anything.
                            if let Some(v) = &via {
                                let mut r = relays.lock().unwrap_or_else(|p| p.into_inner());
                                if r.len() < MAX_INTRODUCED * 16 {
                                    r.insert((meeting.clone(), v.clone()));
                                }
                            }
                            let _ = engine.send(Command::UseRelay { meeting, node, via }).await;
                        });
                        continue;
                    }
                };
                // A meeting this node carries under its rules: only members hear of it. (A
                // relay carrying other nodes' meeting forwards what those nodes asked for.)
                let homes = rules::read(&view, &meeting, |m| m.nodes.clone());
                if let Some(homes) = homes {
                    if !members.may_tell(&meeting, &node, &homes) {
                        tracing::debug!(%node, %meeting, "not a member of the meeting here; nothing sent");
                        if let FedOut::Offer { link, .. } = out {
                            let reason = "the node has nobody let into the meeting".into();
                            let _ = engine.send(Command::LinkFailed { link, reason }).await;
                        }
                        continue;
                    }
                }
                if let FedOut::Events { events, .. } = &mut out {
                    members.with_proofs(&meeting, events);
                }
                let Ok(peer) = node.parse::<PeerId>() else {
                    tracing::warn!(%node, "not a node id; message dropped");
                    continue;
                };
                // A queue whose task gave the node up is replaced by a fresh one.
                if queues.get(&node).is_some_and(mpsc::Sender::is_closed) {
                    queues.remove(&node);
                }
                let queue = queues.entry(node.clone()).or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(PER_NODE_QUEUE);
                    tokio::spawn(deliver(node.clone(), peer, rx, net.clone(), engine.clone()));
                    tx
                });
                if let Err(e) = queue.try_send(out) {
                    tracing::warn!(%node, "messages for a node are piling up; dropped one");
                    // Nothing vanishes silently: an offer's link would wait for an answer,
                    // lost events would leave the node with a wrong list of our people.
                    let cmd = match e.into_inner() {
                        FedOut::Offer { link, .. } => Command::LinkFailed {
                            link,
                            reason: "too many messages queued for the node".into(),
                        },
                        FedOut::Events { meeting, .. } => Command::Resync { node, meeting },
                        FedOut::NeedRelay { .. } => continue,
                    };
                    let _ = engine.send(cmd).await;
                }
            }
            ev = from_net.recv() => {
                let Some(ev) = ev else { break };
                if let AppEvent::Disconnected { peer } = &ev {
                    let node = peer.to_string();
                    members.forget_node(&node);
                    queues.remove(&node);
                }
                on_net(ev, (&engine, &net), (&meetings, &view, &recent, &lobby, &recordings), relay, &mut members).await;
            }
        }
    }
}

/// Send what the engine has for `node`, one request at a time so events stay in order.
async fn deliver(
    node: String,
    peer: PeerId,
    mut rx: mpsc::Receiver<FedOut>,
    net: NetHandle,
    engine: EngineHandle,
) {
    // Requests in a row that reached nobody: past a minute's worth of retries the node is
    // treated as gone (its people leave; it resyncs if it comes back).
    let mut failures = 0u32;
    while let Some(out) = rx.recv().await {
        match out {
            FedOut::Events {
                meeting, events, ..
            } => {
                for chunk in events.chunks(MAX_EVENTS) {
                    let req = Request::Events {
                        meeting: meeting.clone(),
                        events: chunk.to_vec(),
                    };
                    match net.request(peer, req).await {
                        Ok(r) => {
                            failures = 0;
                            if !matches!(r.response, Response::Ok) {
                                tracing::info!(%node, %meeting, response = ?r.response, "meeting events refused");
                            }
                        }
                        Err(e) => {
                            tracing::info!(%node, %meeting, error = %e, "meeting events not delivered");
                            failures += 1;
                            let cmd = if failures >= GIVE_UP_AFTER {
                                // Gone: this task and its queue end (a node that was only
                                // ever named, never reached, must not keep them).
                                let _ = engine.send(Command::NodeGone { node: node.clone() }).await;
                                return;
                            } else {
                                Command::Resync {
                                    node: node.clone(),
                                    meeting: meeting.clone(),
                                }
                            };
                            let _ = engine.send(cmd).await;
                            break;
                        }
                    }
                }
            }
            FedOut::Offer {
                meeting,
                link,
                sdp,
                tracks,
                ..
            } => {
                let req = Request::Link {
                    meeting: meeting.clone(),
                    link: link.0,
                    sdp,
                    tracks,
                };
                let cmd = match net.request(peer, req).await {
                    Ok(r) => match r.response {
                        Response::Link { sdp } => Command::Answer { id: link, sdp },
                        other => Command::LinkFailed {
                            link,
                            reason: format!("the other node refused the link: {other:?}"),
                        },
                    },
                    Err(e) => Command::LinkFailed {
                        link,
                        reason: format!("link offer not delivered: {e}"),
                    },
                };
                if engine.send(cmd).await.is_err() {
                    return;
                }
            }
            // Handled by the bridge itself, never queued.
            FedOut::NeedRelay { .. } => {}
        }
    }
}

/// Whether our control connection to one of `origins` runs through `relay` (a circuit
/// relay): then `relay` relays for them.
async fn relays_control_to(net: &NetHandle, relay: &str, origins: &[String]) -> bool {
    let through = format!("/p2p/{relay}/p2p-circuit");
    net.peers()
        .await
        .iter()
        .any(|p| origins.contains(&p.id) && p.connections.iter().any(|a| a.contains(&through)))
}

/// A relay node for media to `node`: the relay our control connection to it goes through,
/// else (unless `circuit_only`) any connected node that relays; none in `avoid` (lost
/// lately: its connections may not have closed yet).
async fn pick_relay(
    net: &NetHandle,
    node: &str,
    circuit_only: bool,
    avoid: &[String],
) -> Option<String> {
    let peers = net.peers().await;
    let circuit_relay = peers.iter().find(|p| p.id == node).and_then(|p| {
        p.connections.iter().find_map(|a| {
            let (before, _) = a.split_once("/p2p-circuit")?;
            let relay = before.rsplit_once("/p2p/").map(|(_, id)| id.to_owned())?;
            (!avoid.contains(&relay)).then_some(relay)
        })
    });
    if circuit_only {
        // A control path made direct (hole punched) while the circuit lingers: no race.
        let direct = peers.iter().any(|p| p.id == node && p.direct);
        return circuit_relay.filter(|_| !direct);
    }
    circuit_relay.or_else(|| {
        peers
            .iter()
            .find(|p| p.relay && p.id != node && !avoid.contains(&p.id))
            .map(|p| p.id.clone())
    })
}

async fn on_net(
    ev: AppEvent,
    (engine, net): (&EngineHandle, &NetHandle),
    (meetings, view, recent, lobby, recordings): Stores<'_>,
    relay: bool,
    members: &mut Members,
) {
    let (peer, request, reply) = match ev {
        AppEvent::ObservedIp { ip } => {
            let _ = engine.send(Command::ObservedIp { ip }).await;
            return;
        }
        AppEvent::Disconnected { peer } => {
            // Whom it showed waiting here waits no more (as far as anyone here can tell).
            let gone = lobby
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .forget_node(&peer.to_string());
            for (meeting, key) in gone {
                veche_web::lobby::notify((engine, view, lobby), &meeting, &key, "", false).await;
            }
            let _ = engine
                .send(Command::NodeGone {
                    node: peer.to_string(),
                })
                .await;
            return;
        }
        AppEvent::Request {
            peer,
            request,
            reply,
        } => (peer, request, reply),
    };
    let error = |code, message: &str| Response::Error {
        code,
        message: message.to_owned(),
    };
    let title_of = |id: &str| rules::read(view, id, |m| m.title.clone());
    // A relay carries meetings it has never heard of, for the nodes that ask it to.
    let carries = |id: &str| title_of(id).is_some() || (relay && veche_node::is_meeting_id(id));
    let unknown = || error(ErrorCode::UnknownMeeting, "no such meeting on this node");
    let node = peer.to_string();
    let response = match request {
        Request::Meeting { id, presence } => match title_of(&id) {
            Some(title) => answer_meeting(view, &node, id, title, presence.as_deref()),
            None => unknown(),
        },
        Request::Action { meeting, action } => {
            if title_of(&meeting).is_none() {
                unknown()
            } else {
                // Signed by the host or a moderator, checked here by the meeting's rules,
                // whoever delivers it.
                match veche_web::moderation::take(
                    engine,
                    (meetings, view, recent, recordings),
                    &meeting,
                    &action,
                    None,
                )
                .await
                {
                    Ok(a) if matches!(a.body.kind, ActionKind::Admit | ActionKind::Deny) => {
                        // A waiting-room decision taken at another node: whoever waits here
                        // for it is let in or turned away.
                        let key = veche_trust::encode_key(&a.body.target);
                        let admit = a.body.kind == ActionKind::Admit;
                        let n = veche_web::lobby::decided_at_another_node(
                            (engine, view, lobby),
                            &meeting,
                            &key,
                            admit,
                        )
                        .await;
                        tracing::info!(%node, %meeting, admit, reached = n, "waiting-room decision from another node");
                        Response::Ok
                    }
                    Ok(_) => Response::Ok,
                    Err(message) => {
                        tracing::info!(%node, %meeting, %message, "moderation from another node refused");
                        error(ErrorCode::Refused, &message)
                    }
                }
            }
        }
        Request::Revocation {
            meeting,
            revocation,
        } => match veche_web::revocation::take(meetings, &meeting, &revocation).await {
            Ok((invite, _)) => {
                tracing::info!(%node, %meeting, %invite, "invite revoked (passed on by another node)");
                Response::Ok
            }
            Err(rules::Undecided::Unknown) => unknown(),
            Err(e) => {
                tracing::info!(%node, %meeting, error = %e, "revocation from another node refused");
                error(ErrorCode::Refused, &e.to_string())
            }
        },
        Request::Knock {
            meeting,
            presence,
            name,
            waiting,
        } => {
            if title_of(&meeting).is_none() {
                unknown()
            } else {
                let knock = (presence.as_str(), name.as_str(), waiting);
                match veche_web::lobby::knock_from_node(
                    (engine, view, lobby),
                    &node,
                    &meeting,
                    knock,
                )
                .await
                {
                    Ok(()) => Response::Ok,
                    Err(message) => {
                        tracing::info!(%node, %meeting, %message, "a knock from another node refused");
                        error(ErrorCode::Refused, &message)
                    }
                }
            }
        }
        Request::UseInvite { meeting, presence } => {
            if title_of(&meeting).is_none() {
                unknown()
            } else {
                match count_use(meetings, &meeting, &node, &presence).await {
                    Ok(()) => Response::Ok,
                    Err(message) => {
                        tracing::info!(%node, %meeting, %message, "an invite's use from another node refused");
                        error(ErrorCode::Refused, &message)
                    }
                }
            }
        }
        Request::Relayed {
            meeting,
            node: origin,
        } => {
            if title_of(&meeting).is_none() {
                unknown()
            } else if members.relays_for_us(&meeting, &origin, &node) {
                Response::Ok
            } else {
                tracing::info!(relay = %node, %origin, %meeting, "a relay asked for a node that sends it nothing for us");
                error(
                    ErrorCode::Refused,
                    "that node is not a member here, or does not send its media here through you",
                )
            }
        }
        Request::Events { meeting, events } => {
            if !carries(&meeting) {
                unknown()
            } else if events.len() > MAX_EVENTS {
                error(ErrorCode::TooLarge, "too many events in one request")
            } else if title_of(&meeting).is_none() && !members.carry_for(&node, &meeting) {
                tracing::info!(%node, %meeting, "a node asked this relay to carry too many meetings");
                error(ErrorCode::Refused, &too_many_carried())
            } else {
                match admit_events(view, members, &node, &meeting, &events) {
                    Err(why) => {
                        tracing::info!(%node, %meeting, why, "events from a node with nobody let in refused");
                        error(ErrorCode::Refused, why)
                    }
                    Ok(newly) => {
                        take_events(
                            (engine, net),
                            view,
                            members,
                            relay,
                            (node, meeting, events),
                            newly,
                        )
                        .await
                    }
                }
            }
        }
        Request::Link {
            meeting,
            link,
            sdp,
            tracks,
        } => {
            let checked =
                title_of(&meeting).is_none() || members.may_link(&meeting, &node, &tracks);
            // Otherwise perhaps a relay carrying members' tracks before their `via` came: it
            // is taken when our own control connection to those members runs through it.
            let origins = (!checked)
                .then(|| members.relayed_origins(&meeting, &tracks))
                .flatten();
            if !carries(&meeting) {
                unknown()
            } else if title_of(&meeting).is_none() && !members.carry_for(&node, &meeting) {
                error(ErrorCode::Refused, &too_many_carried())
            } else if !checked && origins.is_none() {
                // Media only from a member (or a relay this node asked to forward to it).
                tracing::info!(%node, %meeting, "link offer from a node with nobody let in refused");
                error(
                    ErrorCode::Refused,
                    "nobody you carry is let into this meeting",
                )
            } else {
                // The engine answers through a oneshot; do not hold the bridge while it does.
                let (engine, net) = (engine.clone(), net.clone());
                let relaying = title_of(&meeting).is_some() && !members.is_member(&meeting, &node);
                let relays = members.relays.clone();
                tokio::spawn(async move {
                    if let Some(origins) = origins {
                        if !relays_control_to(&net, &node, &origins).await {
                            tracing::info!(%node, %meeting, "link offer from a node that relays for nobody here refused");
                            let _ = reply.send(error(
                                ErrorCode::Refused,
                                "nobody you carry is let into this meeting",
                            ));
                            return;
                        }
                    }
                    if relaying {
                        // A relay carrying members' media to us: the engine links back to it
                        // (and tells it our people), as to a relay of our own.
                        let mut r = relays.lock().unwrap_or_else(|p| p.into_inner());
                        if r.len() < MAX_INTRODUCED * 16 {
                            r.insert((meeting.clone(), node.clone()));
                        }
                    }
                    let (tx, rx) = oneshot::channel();
                    let cmd = Command::LinkOffer(LinkOffer {
                        node,
                        meeting,
                        link,
                        sdp,
                        tracks,
                        reply: tx,
                    });
                    let response = if engine.send(cmd).await.is_err() {
                        error(ErrorCode::Unavailable, "shutting down")
                    } else {
                        match rx.await {
                            Ok(Ok(sdp)) => Response::Link { sdp },
                            Ok(Err(e)) => error(ErrorCode::Malformed, &e.to_string()),
                            Err(_) => error(ErrorCode::Unavailable, "the link was dropped"),
                        }
                    };
                    let _ = reply.send(response);
                });
                return;
            }
        }
        other => error(
            ErrorCode::Malformed,
            &format!("not a meeting request: {other:?}"),
        ),
    };
    let _ = reply.send(response);
}

/// A member's (or, as a relay, anyone's) events, admitted: what of them the engine takes.
/// A node let in for the first time (`newly`) hears our people again (what it was sent
/// before, it was not told).
async fn take_events(
    (engine, net): (&EngineHandle, &NetHandle),
    view: &MeetingView,
    members: &mut Members,
    relay: bool,
    (node, meeting, mut events): (String, String, Vec<MeetingEvent>),
    newly: bool,
) -> Response {
    // A relay carrying other nodes' meeting has no rules for it: it forwards.
    if relay {
        // As a relay: forward only what the destination's own rules admit.
        events.retain(|e| match e {
            MeetingEvent::Relay { peer } => {
                confirm_relay((engine, net), &members.confirming, &meeting, &node, peer);
                false
            }
            // A check still under way for that pair ends without relaying (the direct link
            // came first).
            MeetingEvent::Unrelay { peer } => {
                members
                    .confirming
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(meeting.clone(), node.clone(), peer.clone()));
                true
            }
            _ => true,
        });
    }
    let ours = rules::read(view, &meeting, |_| ()).is_some();
    let (events, introduced) = if ours {
        members_filter(view, members, &node, &meeting, events)
    } else {
        (events, Vec::new())
    };
    let cmd = Command::NodeEvents {
        node: node.clone(),
        meeting: meeting.clone(),
        events,
    };
    if engine.send(cmd).await.is_err() {
        return Response::Error {
            code: ErrorCode::Unavailable,
            message: "shutting down".into(),
        };
    }
    for node in introduced.into_iter().chain(newly.then_some(node)) {
        let meeting = meeting.clone();
        let _ = engine.send(Command::Resync { node, meeting }).await;
    }
    Response::Ok
}

fn too_many_carried() -> String {
    format!("this relay carries at most {MAX_CARRIED_FOR} meetings for one node")
}

/// Most relay checks at once, and per node asking; beyond that a request is refused.
const MAX_CONFIRMING: usize = 64;
const MAX_CONFIRMING_PER_NODE: usize = 4;
/// Times a relay asks the destination, a quarter of a second apart (12 s in all): the
/// origin's `via` may reach the destination after its `relay` reached us (after a relay
/// died, only once the control connection through it has closed and the origin's list
/// went again), and media waits for the answer.
const CONFIRM_TRIES: u32 = 48;

/// As a relay: `origin` asks us to forward its media in `meeting` to `to`. Done only once
/// `to` confirms that `origin` is a member there and named us (`relayed`): the
/// destination's rules decide, so a stranger cannot make this node work for it.
fn confirm_relay(
    (engine, net): (&EngineHandle, &NetHandle),
    confirming: &Confirming,
    meeting: &str,
    origin: &str,
    to: &str,
) {
    let Ok(peer) = to.parse::<PeerId>() else {
        tracing::info!(%origin, %to, %meeting, "relay request for something that is not a node id");
        return;
    };
    if to == origin || peer == net.local_peer_id {
        tracing::info!(%origin, %to, %meeting, "relay request to itself refused");
        return;
    }
    let key = (meeting.to_owned(), origin.to_owned(), to.to_owned());
    let Some(pending) = Pending::take(confirming, key) else {
        tracing::info!(%origin, %to, %meeting, "relay request refused: already being checked, or too many checks");
        return;
    };
    let (engine, net) = (engine.clone(), net.clone());
    tokio::spawn(async move {
        let (meeting, origin, to) = &pending.key;
        let mut last = String::new();
        for attempt in 0..CONFIRM_TRIES {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            let ask = Request::Relayed {
                meeting: meeting.clone(),
                node: origin.clone(),
            };
            let asked = net.request(peer, ask).await.map(|r| r.response);
            let withdrawn = !pending
                .set
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&pending.key);
            if withdrawn {
                tracing::info!(%origin, %to, %meeting, "relay request withdrawn (unrelay) while checked");
                return;
            }
            match asked {
                Ok(Response::Ok) => {
                    // A check that ends after its node went is no request any more (it would
                    // leave a pair nobody frees).
                    let still_here = net.peers().await.iter().any(|p| p.id == *origin);
                    if !still_here {
                        return;
                    }
                    let events = vec![MeetingEvent::Relay { peer: to.clone() }];
                    let cmd = Command::NodeEvents {
                        node: origin.clone(),
                        meeting: meeting.clone(),
                        events,
                    };
                    let _ = engine.send(cmd).await;
                    return;
                }
                Ok(other) => last = format!("{other:?}"),
                Err(e) => last = e.to_string(),
            }
        }
        tracing::info!(%origin, %to, %meeting, answer = %last, "relay request refused: the destination does not take that node's media through us");
    });
}

/// The relay checks under way: (meeting, origin, destination).
type Confirming = Arc<Mutex<std::collections::HashSet<(String, String, String)>>>;

/// One relay check under way, counted until it is dropped (also if its task ends early).
struct Pending {
    set: Confirming,
    key: (String, String, String),
}

impl Pending {
    /// A place for this check: none if the same one is under way, or over the bounds.
    fn take(set: &Confirming, key: (String, String, String)) -> Option<Pending> {
        let mut s = set.lock().unwrap_or_else(|p| p.into_inner());
        let per_node = s.iter().filter(|(_, o, _)| *o == key.1).count();
        if s.contains(&key) || s.len() >= MAX_CONFIRMING || per_node >= MAX_CONFIRMING_PER_NODE {
            return None;
        }
        s.insert(key.clone());
        Some(Pending {
            set: set.clone(),
            key,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// Answer `Request::Meeting`: the title to anyone; the host's document and what was decided
/// under it only for a person of the asking node whom the meeting's rules admit (their
/// proof names the asking node).
fn answer_meeting(
    meetings: &MeetingView,
    node: &str,
    id: String,
    title: String,
    presence: Option<&str>,
) -> Response {
    let stranger = |title: String, id: String| Response::Meeting {
        id,
        title,
        doc: None,
        revocations: Vec::new(),
        actions: Vec::new(),
        state: Vec::new(),
    };
    let Some(token) = presence else {
        return stranger(title, id);
    };
    let checked = rules::read(meetings, &id, |m| {
        let presence: Presence = veche_trust::decode_token(token).map_err(|e| e.to_string())?;
        m.rules
            .admit_remote(&id, node, &presence, rules::now_ms(), false, false)
            .map_err(|e| e.to_string())?;
        let (revocations, actions) = m.rules.history(veche_web::revocation::SHARED_BYTES);
        let state = m.rules.state_tokens(veche_web::revocation::STATE_BYTES);
        Ok::<_, String>((
            m.rules.doc_token().map(str::to_owned),
            revocations,
            actions,
            state,
        ))
    });
    match checked {
        Some(Ok((doc, revocations, actions, state))) => Response::Meeting {
            id,
            title,
            doc,
            revocations,
            actions,
            state,
        },
        Some(Err(message)) => {
            tracing::info!(%node, meeting = %id, %message, "a node asked for a meeting for a person not let in");
            Response::Error {
                code: ErrorCode::Refused,
                message,
            }
        }
        None => stranger(title, id),
    }
}

/// At the meeting's home node (where it was made): count the use of a limited invite by a
/// person `node` is about to let in, committed before the answer. Elsewhere refused: only
/// the home node's count is one count.
async fn count_use(
    meetings: &Arc<Mutex<MeetingStore>>,
    meeting: &str,
    node: &str,
    presence: &str,
) -> Result<(), String> {
    let p: Presence = veche_trust::decode_token(presence).map_err(|e| e.to_string())?;
    let (m, node) = (meeting.to_owned(), node.to_owned());
    rules::decide(meetings, meeting, move |rec| {
        if !rec.nodes.is_empty() {
            return Err(
                "this node is not the meeting's home: it does not count its invites' uses"
                    .to_owned(),
            );
        }
        let change = rec
            .rules
            .count_remote_use(&m, &node, &p, rules::now_ms())
            .map_err(|e| e.to_string())?;
        Ok(((), change))
    })
    .await
    .map_err(|e| match e {
        rules::Undecided::Refused(message) => message,
        other => other.to_string(),
    })
}

/// Whether the meeting's rules here admit, in the meeting, the person whose presence token
/// this is, carried by `node`: their key and the presence decoded.
fn admit_presence(
    meetings: &MeetingView,
    meeting: &str,
    node: &str,
    token: &str,
    now_ms: u64,
) -> Result<(veche_trust::PublicKey, Presence), String> {
    let p: Presence = veche_trust::decode_token(token).map_err(|e| e.to_string())?;
    rules::read(meetings, meeting, |m| {
        // The home node (where the meeting was made) counts its invites' uses: a person
        // whose limited invite it never counted is not shown.
        let home = m.nodes.is_empty();
        m.rules
            .admit_remote(meeting, node, &p, now_ms, true, home)
            .map_err(|e| e.to_string())
    })
    .unwrap_or_else(|| Err("unknown meeting".into()))
    .map(|(key, _)| (key, p))
}

/// Admit the people a node announces in `events`, by the proof each carries, with the
/// meeting's rules here. A full list (`sync`) replaces what was admitted for that node.
/// Refused when the node would have nobody admitted and had nobody before; otherwise
/// whether it is a member for the first time. Its own events replace what an introduction
/// said of it.
fn admit_events(
    meetings: &MeetingView,
    members: &mut Members,
    node: &str,
    meeting: &str,
    events: &[veche_net::protocol::MeetingEvent],
) -> Result<bool, &'static str> {
    use veche_net::protocol::MeetingEvent as Ev;
    // A relay carrying other nodes' meeting has no rules for it: it only forwards.
    let Some(()) = rules::read(meetings, meeting, |_| ()) else {
        return Ok(false);
    };
    let was = members.is_member(meeting, node);
    if let Some(v) = members.introduced.get_mut(meeting) {
        v.remove(node);
    }
    let key = (meeting.to_owned(), node.to_owned());
    // Whom this node already let in, with which proof: announced again (a resync), they stay
    // without a second check, as on their own node, where a withdrawn invite lets nobody new
    // in but does not put out who is in; removals, turn-aways and an end are the sweep's
    // (`prune`). Checked again, a person let in before a withdrawal was dropped here only,
    // and their node, no longer a member, was told nothing more, not even the end.
    let before = members.admitted.get(&key).cloned().unwrap_or_default();
    let mut admitted = if matches!(events.first(), Some(Ev::Sync { .. })) {
        HashMap::new()
    } else {
        members.admitted.get(&key).cloned().unwrap_or_default()
    };
    let now = rules::now_ms();
    for ev in events {
        match ev {
            Ev::Joined {
                id,
                key: person,
                presence,
                ..
            } => {
                let known = before.get(id).filter(|p| {
                    Some(p.key.as_str()) == person.as_deref()
                        && Some(p.presence.as_str()) == presence.as_deref()
                });
                if let Some(p) = known {
                    admitted.insert(*id, p.clone());
                    continue;
                }
                let verdict = presence
                    .as_deref()
                    .ok_or_else(|| "no proof".to_owned())
                    .and_then(|t| admit_presence(meetings, meeting, node, t, now))
                    .and_then(|(k, p)| {
                        if person.as_deref() != Some(p.key.as_str()) {
                            return Err("the proof is for another key".to_owned());
                        }
                        Ok(k)
                    });
                match verdict {
                    Ok(k) if admitted.len() < MAX_ADMITTED => {
                        // One id per person: the same proof announced twice counts once.
                        let key = veche_trust::encode_key(&k);
                        admitted.retain(|other, p| *other == *id || p.key != key);
                        let presence = presence.clone().unwrap_or_default();
                        admitted.insert(*id, Proof { key, presence });
                    }
                    Ok(_) => tracing::warn!(%node, %meeting, "too many people from one node"),
                    Err(why) => {
                        admitted.remove(id);
                        tracing::info!(%node, %meeting, remote = id, %why, "a person another node announced is not let in here");
                    }
                }
            }
            Ev::Left { id } => {
                admitted.remove(id);
            }
            _ => {}
        }
    }
    if admitted.is_empty() && !was {
        return Err("nobody the node carries is let into this meeting");
    }
    let now_member = !admitted.is_empty();
    if admitted.is_empty() {
        members.admitted.remove(&key);
    } else {
        members.admitted.insert(key, admitted);
    }
    Ok(now_member && !was)
}

/// What of a member's events reaches the engine: the people admitted (and their leaving),
/// their state and chat, and the nodes it introduces (and which of those are let in by the
/// introduction, newly). Nothing for a person not admitted.
fn members_filter(
    view: &MeetingView,
    members: &mut Members,
    node: &str,
    meeting: &str,
    events: Vec<veche_net::protocol::MeetingEvent>,
) -> (Vec<veche_net::protocol::MeetingEvent>, Vec<String>) {
    use veche_net::protocol::MeetingEvent as Ev;
    let key = (meeting.to_owned(), node.to_owned());
    let Some(admitted) = members.admitted.get(&key).cloned() else {
        // Not a member (any more): only its leavings and an empty list pass.
        let events = events
            .into_iter()
            .filter(|e| matches!(e, Ev::Sync { .. } | Ev::Left { .. }))
            .collect();
        return (events, Vec::new());
    };
    let mut introduced = Vec::new();
    let mut out = Vec::with_capacity(events.len());
    for mut ev in events {
        // A message to every room: only if this node's rules make its sender the host or a
        // moderator now (else it stays in the sender's room).
        if let Ev::Chat {
            id,
            everyone: everyone @ true,
            ..
        } = &mut ev
        {
            let allowed = admitted.get(id).is_some_and(|p| {
                veche_trust::decode_token::<veche_meeting::Presence>(&p.presence).is_ok_and(
                    |presence| {
                        rules::read(view, meeting, |m| {
                            m.rules.may_address_every_room(
                                meeting,
                                node,
                                &presence,
                                rules::now_ms(),
                            )
                        })
                        .unwrap_or(false)
                    },
                )
            });
            if !allowed {
                tracing::info!(%node, %meeting, remote = *id, "a message to every room from someone who may not: kept to their room");
                *everyone = false;
            }
        }
        let pass = match &ev {
            Ev::Sync { .. } | Ev::Left { .. } => true,
            Ev::Joined { id, .. } | Ev::State { id, .. } | Ev::Chat { id, .. } => {
                admitted.contains_key(id)
            }
            Ev::Node { peer, presence } => {
                if let Some(p) = presence.as_deref().filter(|_| peer != node) {
                    if members.introduce(view, meeting, peer, p) {
                        introduced.push(peer.clone());
                    }
                }
                true
            }
            Ev::Via { relay } => {
                // Its tracks come through `relay`: links from there carry them (none: they
                // come directly now, and that relay carries them no more). The engine keeps
                // the relay while someone routes through it.
                if relay.is_empty() {
                    members.via.remove(&key);
                } else if members.via.len() < MAX_INTRODUCED * 16 || members.via.contains_key(&key)
                {
                    members.via.insert(key.clone(), relay.clone());
                }
                true
            }
            Ev::Relay { .. } | Ev::Unrelay { .. } => true,
            // What a member node says of its own recording: its people's media is on it.
            Ev::Recording { .. } => true,
            // What a member's viewers show of our tracks: it shapes only our link to it.
            Ev::Views { .. } => true,
        };
        if pass {
            out.push(ev);
        }
    }
    (out, introduced)
}
