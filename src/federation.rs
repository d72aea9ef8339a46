//! The bridge between the media engine and the control plane for meetings that span nodes:
//! requests from other nodes go to the engine (after checking the meeting is known here),
//! and what the engine has for other nodes goes out over libp2p, in order per node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use veche_media::{Command, EngineHandle, FedOut, LinkOffer};
use veche_net::protocol::{ErrorCode, Request, Response};
use veche_net::{AppEvent, NetHandle, PeerId};
use veche_node::MeetingStore;

/// Most events one request may carry (a snapshot of a full meeting fits).
const MAX_EVENTS: usize = 512;
/// Failed deliveries in a row (resyncs come every 5 s) before a node counts as gone.
const GIVE_UP_AFTER: u32 = 12;
/// Messages waiting for one node; beyond this the node is not keeping up and they drop.
const PER_NODE_QUEUE: usize = 512;

/// Run the bridge until the engine or the network stops.
pub async fn run(
    engine: EngineHandle,
    net: NetHandle,
    meetings: Arc<Mutex<MeetingStore>>,
    relay: bool,
    mut from_engine: mpsc::Receiver<FedOut>,
    mut from_net: mpsc::Receiver<AppEvent>,
) {
    let mut queues: HashMap<String, mpsc::Sender<FedOut>> = HashMap::new();
    loop {
        tokio::select! {
            out = from_engine.recv() => {
                let Some(out) = out else { break };
                let node = match &out {
                    FedOut::Events { node, .. } | FedOut::Offer { node, .. } => node.clone(),
                    FedOut::NeedRelay { node, meeting } => {
                        let (node, meeting) = (node.clone(), meeting.clone());
                        let (net, engine) = (net.clone(), engine.clone());
                        tokio::spawn(async move {
                            let via = pick_relay(&net, &node).await;
                            let _ = engine.send(Command::UseRelay { meeting, node, via }).await;
                        });
                        continue;
                    }
                };
                let Ok(peer) = node.parse::<PeerId>() else {
                    tracing::warn!(%node, "not a node id; message dropped");
                    continue;
                };
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
                on_net(ev, &engine, &meetings, relay).await;
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
                                failures = 0;
                                Command::NodeGone { node: node.clone() }
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

/// A relay node for media to `node`: the relay our control connection to it goes through,
/// else any connected node that relays.
async fn pick_relay(net: &NetHandle, node: &str) -> Option<String> {
    let peers = net.peers().await;
    let circuit_relay = peers.iter().find(|p| p.id == node).and_then(|p| {
        p.connections.iter().find_map(|a| {
            let (before, _) = a.split_once("/p2p-circuit")?;
            before.rsplit_once("/p2p/").map(|(_, id)| id.to_owned())
        })
    });
    circuit_relay.or_else(|| {
        peers
            .iter()
            .find(|p| p.relay && p.id != node)
            .map(|p| p.id.clone())
    })
}

async fn on_net(
    ev: AppEvent,
    engine: &EngineHandle,
    meetings: &Arc<Mutex<MeetingStore>>,
    relay: bool,
) {
    let (peer, request, reply) = match ev {
        AppEvent::ObservedIp { ip } => {
            let _ = engine.send(Command::ObservedIp { ip }).await;
            return;
        }
        AppEvent::Disconnected { peer } => {
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
    let title_of = |id: &str| {
        let store = meetings.lock().unwrap_or_else(|p| p.into_inner());
        store.get(id).map(|m| m.title.clone())
    };
    let doc_of = |id: &str| {
        let store = meetings.lock().unwrap_or_else(|p| p.into_inner());
        store.get(id).and_then(|m| m.doc.clone())
    };
    // A relay carries meetings it has never heard of, for the nodes that ask it to.
    let carries = |id: &str| title_of(id).is_some() || (relay && veche_node::is_meeting_id(id));
    let unknown = || error(ErrorCode::UnknownMeeting, "no such meeting on this node");
    let node = peer.to_string();
    let response = match request {
        Request::Meeting { id } => match title_of(&id) {
            Some(title) => {
                let doc = doc_of(&id);
                let revocations = veche_web::revocation::shared(meetings, &id);
                let actions = veche_web::moderation::shared(meetings, &id);
                Response::Meeting {
                    id,
                    title,
                    doc,
                    revocations,
                    actions,
                }
            }
            None => unknown(),
        },
        Request::Action { meeting, action } => {
            if title_of(&meeting).is_none() {
                unknown()
            } else {
                match moderate(engine, meetings, &meeting, &action).await {
                    Ok(()) => Response::Ok,
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
        } => {
            let store = meetings.clone();
            let m = meeting.clone();
            let stored = tokio::task::spawn_blocking(move || {
                veche_web::revocation::store(&store, &m, &revocation)
            })
            .await;
            match stored {
                Ok(Ok((invite, _))) => {
                    tracing::info!(%node, %meeting, %invite, "invite revoked (passed on by another node)");
                    Response::Ok
                }
                Ok(Err(veche_web::revocation::RevocationError::UnknownMeeting)) => unknown(),
                Ok(Err(e)) => {
                    tracing::info!(%node, %meeting, error = %e, "revocation from another node refused");
                    error(ErrorCode::Refused, &e.to_string())
                }
                Err(_) => error(ErrorCode::Unavailable, "shutting down"),
            }
        }
        Request::Events { meeting, events } => {
            if !carries(&meeting) {
                unknown()
            } else if events.len() > MAX_EVENTS {
                error(ErrorCode::TooLarge, "too many events in one request")
            } else {
                match engine
                    .send(Command::NodeEvents {
                        node,
                        meeting,
                        events,
                    })
                    .await
                {
                    Ok(()) => Response::Ok,
                    Err(_) => error(ErrorCode::Unavailable, "shutting down"),
                }
            }
        }
        Request::Link {
            meeting,
            link,
            sdp,
            tracks,
        } => {
            if !carries(&meeting) {
                unknown()
            } else {
                // The engine answers through a oneshot; do not hold the bridge while it does.
                let engine = engine.clone();
                tokio::spawn(async move {
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

/// A moderation action another node passed on: checked here, against this node's copy of
/// the host's document, before this node acts on its own participants. The waiting room is
/// each node's own, so admit and deny concern only the node where they were made.
async fn moderate(
    engine: &EngineHandle,
    meetings: &Arc<Mutex<MeetingStore>>,
    meeting: &str,
    token: &str,
) -> Result<(), String> {
    let checked = veche_web::moderation::check(meetings, meeting, token)?;
    veche_web::moderation::apply(engine, meetings, meeting, &checked.action)
        .await
        .map(|_| ())
}
