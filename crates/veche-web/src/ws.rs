//! The signaling WebSocket: one task per browser, between its socket and the engine.
//!
//! The task validates everything the browser says before the engine sees it (size, rate,
//! shape, meeting id), answers mistakes with a precise `error`, and never lets one browser's
//! behaviour reach another: its outgoing queue is bounded, and the engine drops it rather
//! than wait for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use veche_core::{JoinError, MediaState, ParticipantId, Source};
use veche_media::{Command, ErrorCode, PeerEvent, Signal};
use veche_node::is_meeting_id;
use veche_trust::{
    decode_token, ActionKind, Gate, Invite, JoinProof, MeetingDoc, PublicKey, Revocation, Role,
    Sig, Signed, TrustError,
};

use crate::Ctx;

/// Largest message we read and answer (bigger ones get `too_large` and a close).
pub const MAX_MESSAGE: usize = 256 * 1024;
/// Above this the WebSocket layer itself refuses the frame; between the two we can still
/// answer in words.
const HARD_LIMIT: usize = 1024 * 1024;
/// Events queued for one browser before it counts as not reading. Room for a whole
/// meeting's worth of joins, leaves and state changes arriving at once.
const EVENT_QUEUE: usize = 1024;
/// A send to a browser that takes longer than this means it stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Chat and state changes reach everyone in the meeting, so they get a tighter budget than
/// other messages: sustained per second, and burst.
const BROADCAST_RATE: f64 = 5.0;
const BROADCAST_BURST: f64 = 20.0;
/// Message rate: sustained per second, and burst.
const RATE: f64 = 50.0;
const BURST: f64 = 100.0;
/// Ping the browser this often; a browser that answers nothing for `IDLE_LIMIT` is gone.
const PING_EVERY: Duration = Duration::from_secs(5);
const IDLE_LIMIT: Duration = Duration::from_secs(20);

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMsg {
    Join {
        meeting: String,
        name: String,
        /// The person's Ed25519 public key, base64url.
        key: String,
        /// The key's signature of the challenge this socket was handed, base64url.
        sig: String,
        /// An invite token (from the link's fragment), for meetings signed by a host.
        #[serde(default)]
        invite: Option<String>,
    },
    Offer {
        sdp: String,
        sources: HashMap<String, Source>,
    },
    Answer {
        sdp: String,
    },
    State {
        audio: bool,
        video: bool,
        screen: bool,
        #[serde(default)]
        hand: bool,
    },
    Chat {
        text: String,
    },
    /// A moderation action token (veche-trust `Action`, signed by the host or a moderator).
    Moderate {
        action: String,
    },
    /// Make someone a moderator: a moderator invite (veche-trust `Invite`) bound to their
    /// key, signed by the host or a moderator; the node checks it and hands it to them.
    Grant {
        invite: String,
    },
    Leave,
}

/// Most people waiting in one meeting's lobby.
const MAX_WAITING: usize = 500;

/// Who waits in each meeting's lobby, and which keys may let them in.
#[derive(Default)]
pub struct Lobby {
    waiting: HashMap<String, Vec<Waiting>>,
    /// Keys admitted as moderators, per meeting (with the host's, they hear the knocks).
    moderators: HashMap<String, std::collections::HashSet<String>>,
}

struct Waiting {
    key: String,
    name: String,
    tx: oneshot::Sender<bool>,
}

impl Lobby {
    /// Who waits in `meeting` (dropping those who left).
    fn list(&mut self, meeting: &str) -> Vec<(String, String)> {
        let Some(w) = self.waiting.get_mut(meeting) else {
            return Vec::new();
        };
        w.retain(|x| !x.tx.is_closed());
        w.iter().map(|x| (x.key.clone(), x.name.clone())).collect()
    }

    /// Let in (or turn away) everyone waiting in `meeting` with `key`; how many.
    fn decide(&mut self, meeting: &str, key: &str, admit: bool) -> usize {
        let Some(w) = self.waiting.get_mut(meeting) else {
            return 0;
        };
        let (hit, keep): (Vec<Waiting>, Vec<Waiting>) = w.drain(..).partition(|x| x.key == key);
        *w = keep;
        hit.into_iter()
            .map(|x| x.tx.send(admit).is_ok())
            .filter(|ok| *ok)
            .count()
    }
}

/// A join admitted by the meeting's policy, waiting (in the lobby) to enter.
struct PendingJoin {
    meeting: String,
    name: String,
    key: String,
    role: Role,
    title: String,
    nodes: Vec<String>,
}

/// Send one message; false if the socket failed or the browser stopped reading.
async fn send(sink: &mut (impl SinkExt<Message> + Unpin), msg: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, sink.send(msg)).await,
        Ok(Ok(()))
    )
}

/// `GET /ws`.
pub(crate) async fn upgrade(
    State(ctx): State<Ctx>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: WebSocketUpgrade,
) -> Response {
    // Absent when the router is served without connect info (tests with `oneshot`).
    let client = client.map(|Extension(ConnectInfo(a))| a);
    // Signaling messages are small; tungstenite's 128 KiB read and write buffers per socket
    // were most of a viewer's memory on the node (veche-bench, memory per subscriber).
    ws.max_message_size(HARD_LIMIT)
        .max_frame_size(HARD_LIMIT)
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| Session::new(ctx, client).run(socket))
}

struct Bucket {
    tokens: f64,
    at: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            at: Instant::now(),
            rate,
            burst,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Session {
    ctx: Ctx,
    client: Option<SocketAddr>,
    joined: Option<(ParticipantId, String, String)>,
    /// Handed to the engine on join; the engine dropping its end means it dropped us.
    events_tx: Option<mpsc::Sender<PeerEvent>>,
    bucket: Bucket,
    broadcast: Bucket,
    last_heard: Instant,
    /// The challenge this socket was handed: a join signs it with the person's key. One per
    /// socket and a socket joins once, so a proof never works twice.
    nonce: String,
    /// The role this socket's key was admitted in (checked once per socket).
    admitted: Option<Role>,
    /// Waiting in the lobby: the join to finish once a moderator decides, and the decision.
    pending: Option<PendingJoin>,
    waiting: Option<oneshot::Receiver<bool>>,
}

/// What to do after handling one message.
enum Next {
    Continue,
    Close,
}

impl Session {
    fn new(ctx: Ctx, client: Option<SocketAddr>) -> Self {
        Self {
            ctx,
            client,
            joined: None,
            events_tx: None,
            bucket: Bucket::new(RATE, BURST),
            broadcast: Bucket::new(BROADCAST_RATE, BROADCAST_BURST),
            last_heard: Instant::now(),
            admitted: None,
            pending: None,
            waiting: None,
            nonce: {
                use base64::Engine as _;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())
            },
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let (mut sink, mut stream) = socket.split();
        let (events_tx, mut events_rx) = mpsc::channel(EVENT_QUEUE);
        self.events_tx = Some(events_tx);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let challenge =
            json!({"type": "challenge", "nonce": self.nonce, "node": self.ctx.app.node.id});
        if !send(&mut sink, Message::Text(challenge.to_string().into())).await {
            return;
        }
        let mut decision: Option<oneshot::Receiver<bool>> = None;
        let close_reason = loop {
            if let Some(rx) = self.waiting.take() {
                decision = Some(rx);
            }
            tokio::select! {
                d = async { decision.as_mut().expect("guarded").await }, if decision.is_some() => {
                    decision = None;
                    let mut replies = Vec::new();
                    let next = match (d, self.pending.take()) {
                        (Ok(true), Some(p)) => self.enter(p, &mut replies).await,
                        _ => {
                            replies.push(self.error(
                                ErrorCode::Denied,
                                "the host did not let you in",
                                true,
                            ));
                            Next::Close
                        }
                    };
                    for r in replies {
                        if !send(&mut sink, Message::Text(r.to_string().into())).await {
                            break;
                        }
                    }
                    if let Next::Close = next {
                        break Some("refused");
                    }
                }
                msg = stream.next() => {
                    let Some(msg) = msg else { break None };
                    let msg = match msg {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::info!(participant = ?self.pid(), error = %e, "signaling socket error");
                            break None;
                        }
                    };
                    self.last_heard = Instant::now();
                    let mut replies = Vec::new();
                    let next = self.on_message(msg, &mut replies).await;
                    for r in replies {
                        if !send(&mut sink, Message::Text(r.to_string().into())).await {
                            break;
                        }
                    }
                    if let Next::Close = next {
                        break Some("refused");
                    }
                }
                ev = events_rx.recv(), if self.events_tx.is_none() => {
                    let Some(ev) = ev else {
                        // The engine dropped this participant (it sent the reason first).
                        break Some("removed");
                    };
                    let text = self.render(ev);
                    if !send(&mut sink, Message::Text(text.into())).await {
                        break None;
                    }
                }
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > IDLE_LIMIT {
                        tracing::info!(participant = ?self.pid(), "signaling socket idle; closing");
                        break Some("idle");
                    }
                    if !send(&mut sink, Message::Ping(Default::default())).await {
                        break None;
                    }
                }
            }
        };
        if let Some(reason) = close_reason {
            // Deliver what the engine queued before it let go (the fatal error, typically).
            while let Ok(ev) = events_rx.try_recv() {
                let text = self.render(ev);
                if !send(&mut sink, Message::Text(text.into())).await {
                    break;
                }
            }
            let close = Message::Close(Some(CloseFrame {
                code: 1000,
                reason: Utf8Bytes::from_static(reason),
            }));
            let _ = send(&mut sink, close).await;
        }
        if let Some(id) = self.pid() {
            let _ = self.ctx.app.engine.send(Command::Leave { id }).await;
        }
    }

    /// Check a join against the host's signed document: the challenge, the invite chain,
    /// expiry, uses and policy (veche-trust's `Gate`).
    fn admit(
        &self,
        doc: &str,
        meeting: &str,
        key: PublicKey,
        sig: &str,
        invite: Option<String>,
        (revocations, uses): (&[String], &std::collections::BTreeMap<String, u32>),
    ) -> Result<(Role, Option<(String, u32)>), TrustError> {
        let doc: Signed<MeetingDoc> = decode_token(doc)?;
        let invite = invite
            .map(|t| decode_token::<Signed<Invite>>(&t))
            .transpose()?;
        let sig: Sig = serde_json::from_value(Value::String(sig.to_owned()))
            .map_err(|e| TrustError::Malformed(e.to_string()))?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut gates = self.ctx.app.gates.lock().unwrap_or_else(|p| p.into_inner());
        let gate = gates
            .entry(meeting.to_owned())
            .or_insert_with(|| Gate::new(&self.ctx.app.node.id, meeting));
        // The host's withdrawals, as stored (each was checked when it arrived).
        for token in revocations {
            if let Ok(rev) = decode_token::<Signed<Revocation>>(token) {
                let _ = gate.revoke(&doc.body, &rev);
            }
        }
        // This socket's nonce, handed out when it opened.
        let _ = gate.challenge(self.nonce.clone(), now_ms);
        // Joins counted before a restart (the gate itself lives in memory).
        let counter = invite.as_ref().map(|i| {
            (
                (i.key, i.body.id.clone()),
                format!("{}/{}", veche_trust::encode_key(&i.key), i.body.id),
                i.body.max_uses.is_some(),
            )
        });
        if let Some((k, stored, _)) = &counter {
            if let Some(&n) = uses.get(stored) {
                let e = gate.uses.entry(k.clone()).or_insert(0);
                *e = (*e).max(n);
            }
        }
        let proof = JoinProof {
            key,
            nonce: self.nonce.clone(),
            sig,
            invite,
        };
        let role = gate.check_join(&doc, &proof, now_ms)?;
        // Only a limited invite's count must survive a restart.
        let used = counter
            .filter(|(_, _, limited)| *limited)
            .map(|(k, stored, _)| (stored, gate.uses.get(&k).copied().unwrap_or(0)));
        Ok((role, used))
    }

    /// Check a moderation action against the meeting's signed document and carry it out;
    /// `Some(reason)` when refused.
    async fn moderate(&self, token: &str) -> Option<String> {
        let (_, meeting, _) = self.joined.as_ref()?;
        let meeting = meeting.clone();
        let checked = match crate::moderation::check(&self.ctx.app.meetings, &meeting, token) {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(participant = ?self.pid(), %meeting, error = %e, "moderation refused");
                return Some(e);
            }
        };
        let action = &checked.action;
        if let kind @ (ActionKind::Admit | ActionKind::Deny) = action.body.kind {
            let target = veche_trust::encode_key(&action.body.target);
            let admit = kind == ActionKind::Admit;
            // On disk first: the decision holds when they come back, also after a restart.
            let store = self.ctx.app.meetings.clone();
            let (m, k) = (meeting.clone(), target.clone());
            let saved = tokio::task::spawn_blocking(move || {
                let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
                store.set_lobby_decision(&m, &k, admit)
            })
            .await;
            if !matches!(saved, Ok(Ok(()))) {
                return Some("the node could not save the decision; nothing was done".into());
            }
            let n = {
                let mut lobby = self.ctx.app.lobby.lock().unwrap_or_else(|p| p.into_inner());
                lobby.decide(&meeting, &target, admit)
            };
            tracing::info!(%meeting, admit, reached = n, by = %action.key.fingerprint(), "lobby decision");
            self.knock(&checked.doc.body, &target, "", false).await;
            return None;
        }
        if let Err(e) = crate::moderation::apply(
            &self.ctx.app.engine,
            &self.ctx.app.meetings,
            &meeting,
            action,
        )
        .await
        {
            return Some(e);
        }
        // The other nodes of the meeting check it for themselves and act on their people.
        let request = veche_net::protocol::Request::Action {
            meeting: meeting.clone(),
            action: token.to_owned(),
        };
        crate::nodes::tell(&self.ctx, &meeting, request).await;
        None
    }

    fn pid(&self) -> Option<ParticipantId> {
        self.joined.as_ref().map(|(id, _, _)| *id)
    }

    /// Serialize an engine event; the welcome also carries the meeting's id and title.
    fn render(&self, ev: PeerEvent) -> String {
        let mut v = serde_json::to_value(&ev).unwrap_or(Value::Null);
        if let (Some(obj), Some((_, meeting, title))) = (v.as_object_mut(), &self.joined) {
            if obj.get("type").and_then(Value::as_str) == Some("welcome") {
                obj.insert("meeting".into(), json!({ "id": meeting, "title": title }));
                obj.insert("role".into(), json!(self.admitted));
            }
        }
        v.to_string()
    }

    fn error(&self, code: ErrorCode, message: impl Into<String>, fatal: bool) -> Value {
        let message = message.into();
        tracing::info!(participant = ?self.pid(), ?code, %message, fatal, "signaling error sent");
        serde_json::to_value(Signal::error(code, message, fatal)).unwrap_or(Value::Null)
    }

    async fn on_message(&mut self, msg: Message, replies: &mut Vec<Value>) -> Next {
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                replies.push(self.error(
                    ErrorCode::BinaryUnsupported,
                    "binary messages are not part of the protocol",
                    false,
                ));
                return Next::Continue;
            }
            Message::Ping(_) | Message::Pong(_) => return Next::Continue,
            Message::Close(_) => return Next::Close,
        };
        if text.len() > MAX_MESSAGE {
            replies.push(self.error(
                ErrorCode::TooLarge,
                format!(
                    "message of {} bytes is over the limit of {MAX_MESSAGE}",
                    text.len()
                ),
                true,
            ));
            return Next::Close;
        }
        if !self.bucket.take(Instant::now()) {
            replies.push(self.error(
                ErrorCode::RateLimited,
                "too many messages; slow down",
                false,
            ));
            return Next::Continue;
        }
        let msg: ClientMsg = match serde_json::from_str(text.as_str()) {
            Ok(m) => m,
            Err(e) => {
                replies.push(self.error(
                    ErrorCode::BadMessage,
                    format!("malformed message: {e}"),
                    false,
                ));
                return Next::Continue;
            }
        };
        if matches!(msg, ClientMsg::Chat { .. } | ClientMsg::State { .. })
            && !self.broadcast.take(Instant::now())
        {
            replies.push(self.error(
                ErrorCode::RateLimited,
                "too many chat messages or state changes; slow down",
                false,
            ));
            return Next::Continue;
        }
        let engine = self.ctx.app.engine.clone();
        let Some(id) = self.pid() else {
            let ClientMsg::Join {
                meeting,
                name,
                key,
                sig,
                invite,
            } = msg
            else {
                replies.push(self.error(ErrorCode::NotJoined, "send join first", false));
                return Next::Continue;
            };
            return self.join(meeting, name, (key, sig, invite), replies).await;
        };
        let cmd = match msg {
            ClientMsg::Join { .. } => {
                replies.push(self.error(
                    ErrorCode::AlreadyJoined,
                    "this socket already joined a meeting",
                    false,
                ));
                return Next::Continue;
            }
            ClientMsg::Offer { sdp, sources } => {
                if sources.len() > 3 {
                    replies.push(self.error(
                        ErrorCode::BadMessage,
                        "at most three sources: mic, camera, screen",
                        false,
                    ));
                    return Next::Continue;
                }
                Command::Offer { id, sdp, sources }
            }
            ClientMsg::Answer { sdp } => Command::Answer { id, sdp },
            ClientMsg::State {
                audio,
                video,
                screen,
                hand,
            } => Command::State {
                id,
                state: MediaState {
                    audio,
                    video,
                    screen,
                    hand,
                },
            },
            ClientMsg::Chat { text } => Command::Chat { id, text },
            ClientMsg::Moderate { action } => {
                if let Some(e) = self.moderate(&action).await {
                    replies.push(self.error(ErrorCode::NotAllowed, e, false));
                }
                return Next::Continue;
            }
            ClientMsg::Grant { invite } => {
                if let Some(e) = self.grant(&invite).await {
                    replies.push(self.error(ErrorCode::NotAllowed, e, false));
                }
                return Next::Continue;
            }
            ClientMsg::Leave => return Next::Close,
        };
        if engine.send(cmd).await.is_err() {
            return Next::Close;
        }
        Next::Continue
    }

    async fn join(
        &mut self,
        meeting: String,
        name: String,
        (key, sig, invite): (String, String, Option<String>),
        replies: &mut Vec<Value>,
    ) -> Next {
        let title = if is_meeting_id(&meeting) {
            let store = self
                .ctx
                .app
                .meetings
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            store.get(&meeting).map(|m| {
                (
                    m.title.clone(),
                    m.nodes.clone(),
                    m.doc.clone(),
                    (m.removed.clone(), m.revocations.clone(), m.locked, m.ended),
                    (m.uses.clone(), m.lobby.clone()),
                )
            })
        } else {
            None
        };
        let Some((title, nodes, doc, (removed, revocations, locked, ended), (uses, decided))) =
            title
        else {
            replies.push(self.error(
                ErrorCode::UnknownMeeting,
                "there is no meeting with this id on this node",
                true,
            ));
            return Next::Close;
        };
        // The key proves itself before anything else happens: a forged or malformed proof
        // ends the socket, with the reason.
        let person = match veche_trust::verify_challenge(
            &self.ctx.app.node.id,
            &meeting,
            &self.nonce,
            &key,
            &sig,
        ) {
            Ok(k) => k,
            Err(e) => {
                replies.push(self.error(
                    ErrorCode::BadSignature,
                    format!("your key's proof was refused: {e}"),
                    true,
                ));
                return Next::Close;
            }
        };
        if removed.contains(&key) {
            replies.push(self.error(
                ErrorCode::InviteRefused,
                "the host removed you from this meeting",
                true,
            ));
            return Next::Close;
        }
        // A meeting its host signed admits whom its policy and invites admit, in their role.
        let role = match (self.admitted, &doc) {
            (Some(r), _) => r,
            (None, None) => Role::Speaker,
            (None, Some(doc)) => {
                match self.admit(doc, &meeting, person, &sig, invite, (&revocations, &uses)) {
                    Ok((r, None)) => r,
                    Ok((r, Some((counter, joins)))) => {
                        // A limited invite's use is on disk before the join is answered.
                        let store = self.ctx.app.meetings.clone();
                        let m = meeting.clone();
                        let saved = tokio::task::spawn_blocking(move || {
                            let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
                            store.set_uses(&m, &counter, joins)
                        })
                        .await;
                        if !matches!(saved, Ok(Ok(()))) {
                            tracing::error!(%meeting, "cannot save an invite's use; join refused");
                            replies.push(self.error(
                                ErrorCode::Internal,
                                "the node could not record your invite's use; try again",
                                true,
                            ));
                            return Next::Close;
                        }
                        r
                    }
                    Err(e) => {
                        tracing::info!(%meeting, key = %person.fingerprint(), error = %e, "join refused by the meeting's policy");
                        replies.push(self.error(ErrorCode::InviteRefused, e.to_string(), true));
                        return Next::Close;
                    }
                }
            }
        };
        self.admitted = Some(role);
        if ended || (locked && role > Role::Moderator) {
            let why = if ended {
                "this meeting has ended"
            } else {
                "this meeting is locked: nobody new can join"
            };
            replies.push(self.error(ErrorCode::InviteRefused, why, true));
            return Next::Close;
        }
        let doc: Option<Signed<MeetingDoc>> = doc.as_deref().and_then(|d| decode_token(d).ok());
        let pending = PendingJoin {
            meeting,
            name,
            key,
            role,
            title,
            nodes,
        };
        // With the lobby on, everyone but the host and moderators waits to be let in, unless
        // the waiting room decided about this key already.
        let lobby_on = doc.as_ref().is_some_and(|d| d.body.lobby) && role > Role::Moderator;
        if lobby_on && decided.get(&pending.key) == Some(&false) {
            replies.push(self.error(ErrorCode::Denied, "the host did not let you in", true));
            return Next::Close;
        }
        let admitted_before = decided.get(&pending.key) == Some(&true);
        if let Some(doc) = doc.filter(|_| lobby_on && !admitted_before) {
            if self.pending.is_some() {
                return Next::Continue;
            }
            let (tx, rx) = oneshot::channel();
            {
                let mut lobby = self.ctx.app.lobby.lock().unwrap_or_else(|p| p.into_inner());
                let _ = lobby.list(&pending.meeting);
                let w = lobby.waiting.entry(pending.meeting.clone()).or_default();
                if w.len() >= MAX_WAITING {
                    replies.push(self.error(
                        ErrorCode::MeetingFull,
                        "too many people are waiting to enter this meeting",
                        true,
                    ));
                    return Next::Close;
                }
                w.push(Waiting {
                    key: pending.key.clone(),
                    name: pending.name.clone(),
                    tx,
                });
            }
            tracing::info!(meeting = %pending.meeting, key = %person.fingerprint(), "waiting in the lobby");
            self.knock(&doc.body, &pending.key, &pending.name, true)
                .await;
            replies.push(json!({"type": "lobby"}));
            self.pending = Some(pending);
            self.waiting = Some(rx);
            return Next::Continue;
        }
        self.enter(pending, replies).await
    }

    /// Hand a moderator invite to the person it is bound to (on this node), once it checks
    /// out against the meeting's document; `Some(reason)` when refused. From then on that
    /// person hears the lobby's knocks and their page signs with the invite as authority.
    async fn grant(&self, token: &str) -> Option<String> {
        let (_, meeting, _) = self.joined.as_ref()?;
        let meeting = meeting.clone();
        let doc = {
            let store = self
                .ctx
                .app
                .meetings
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            store.get(&meeting).and_then(|m| m.doc.clone())
        };
        let Some(doc) = doc else {
            return Some("this meeting has no host: nobody can make moderators".into());
        };
        let checked = decode_token::<Signed<MeetingDoc>>(&doc).and_then(|doc| {
            let invite = decode_token::<Signed<Invite>>(token)?;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let role = veche_trust::check_invite(&doc.body, &invite, now_ms)?;
            Ok((role, invite))
        });
        let invite = match checked {
            Ok((Role::Moderator, invite)) => invite,
            Ok(_) => return Some("only a moderator invite makes a moderator".into()),
            Err(e) => return Some(e.to_string()),
        };
        let Some(invitee) = invite.body.invitee else {
            return Some("a moderator invite handed to someone must name their key".into());
        };
        let target = veche_trust::encode_key(&invitee);
        {
            let mut lobby = self.ctx.app.lobby.lock().unwrap_or_else(|p| p.into_inner());
            let m = lobby.moderators.entry(meeting.clone()).or_default();
            if m.len() < MAX_WAITING {
                m.insert(target.clone());
            }
        }
        tracing::info!(%meeting, to = %invitee.fingerprint(), by = %invite.key.fingerprint(), "moderator granted");
        let _ = self
            .ctx
            .app
            .engine
            .send(Command::Notify {
                meeting,
                keys: vec![target],
                signal: Signal::Granted {
                    invite: token.to_owned(),
                },
            })
            .await;
        None
    }

    /// Tell the meeting's host and moderators on this node that `key` waits (or not).
    async fn knock(&self, doc: &MeetingDoc, key: &str, name: &str, waiting: bool) {
        let mut keys = vec![veche_trust::encode_key(&doc.host)];
        {
            let lobby = self.ctx.app.lobby.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(m) = lobby.moderators.get(&doc.id) {
                keys.extend(m.iter().cloned());
            }
        }
        let _ = self
            .ctx
            .app
            .engine
            .send(Command::Notify {
                meeting: doc.id.clone(),
                keys,
                signal: Signal::Knock {
                    key: key.to_owned(),
                    name: name.to_owned(),
                    waiting,
                },
            })
            .await;
    }

    /// Enter the meeting (the engine join), once admitted and, with a lobby, let in.
    async fn enter(&mut self, p: PendingJoin, replies: &mut Vec<Value>) -> Next {
        let PendingJoin {
            meeting,
            name,
            key,
            role,
            title,
            nodes,
        } = p;
        let Some(events) = self.events_tx.clone() else {
            return Next::Close;
        };
        let (reply, rx) = oneshot::channel();
        let privileged = role <= Role::Moderator;
        if role == Role::Moderator {
            let mut lobby = self.ctx.app.lobby.lock().unwrap_or_else(|p| p.into_inner());
            let m = lobby.moderators.entry(meeting.clone()).or_default();
            if m.len() < MAX_WAITING {
                m.insert(key.clone());
            }
        }
        let cmd = Command::Join {
            meeting: meeting.clone(),
            name,
            key: Some(key),
            listener: role == Role::Listener,
            client: self.client,
            nodes,
            events,
            reply,
        };
        if self.ctx.app.engine.send(cmd).await.is_err() {
            return Next::Close;
        }
        match rx.await {
            Ok(Ok(id)) => {
                // From now on only the engine holds a sender: when it drops the peer, our
                // receiver ends and we close the socket.
                self.events_tx = None;
                if privileged {
                    // Who already waits: the host or moderator sees them at once.
                    let waiting = {
                        let mut lobby =
                            self.ctx.app.lobby.lock().unwrap_or_else(|p| p.into_inner());
                        lobby.list(&meeting)
                    };
                    for (key, name) in waiting {
                        replies.push(
                            json!({"type": "knock", "key": key, "name": name, "waiting": true}),
                        );
                    }
                }
                self.joined = Some((id, meeting, title));
                Next::Continue
            }
            Ok(Err(JoinError::BadName { max })) => {
                replies.push(self.error(
                    ErrorCode::BadName,
                    format!("the name must be 1 to {max} characters"),
                    false,
                ));
                Next::Continue
            }
            Ok(Err(e @ JoinError::MeetingFull { .. })) => {
                replies.push(self.error(ErrorCode::MeetingFull, e.to_string(), true));
                Next::Close
            }
            Ok(Err(e)) => {
                replies.push(self.error(ErrorCode::Internal, e.to_string(), true));
                Next::Close
            }
            Err(_) => Next::Close,
        }
    }
}
