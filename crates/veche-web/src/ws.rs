//! The signaling WebSocket: one task per browser, between its socket and the engine.
//!
//! The task validates everything the browser says before the engine sees it (size, rate,
//! shape, meeting id), answers mistakes with a precise `error`, and never lets one browser's
//! behaviour reach another: its outgoing queue is bounded, and the engine drops it rather
//! than wait for it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use veche_core::{JoinError, MediaState, ParticipantId, Source};
use veche_media::{Command, ErrorCode, PeerEvent, Signal};
use veche_meeting::{Change, JoinRefused, Presence};
use veche_node::is_meeting_id;
use veche_signal::ClientMsg;
use veche_trust::{ActionKind, Role};

use crate::rules::{self, Undecided};
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
/// A page's view lists at most this many tiles (a meeting holds 100 people, each with a
/// camera and a screen), each at most this high.
const MAX_TILES: usize = 300;
const MAX_TILE_HEIGHT: u32 = 20_000;
/// Message rate: sustained per second, and burst.
const RATE: f64 = 50.0;
const BURST: f64 = 100.0;
/// Ping the browser this often; a browser that answers nothing for `IDLE_LIMIT` is gone.
const PING_EVERY: Duration = Duration::from_secs(5);
const IDLE_LIMIT: Duration = Duration::from_secs(20);

/// A join admitted by the meeting's rules, about to enter (or waiting in the lobby).
struct PendingJoin {
    meeting: String,
    name: String,
    key: String,
    sig: String,
    invite: Option<String>,
    role: Role,
    title: String,
    nodes: Vec<String>,
}

/// An engine event as the socket's text; the welcome also carries the meeting's id and
/// title and the role (`joined`: the meeting entered).
fn render(ev: PeerEvent, joined: Option<(&str, &str)>, role: Option<Role>) -> String {
    let mut v = serde_json::to_value(&ev).unwrap_or(Value::Null);
    if let (Some(obj), Some((meeting, title))) = (v.as_object_mut(), joined) {
        if obj.get("type").and_then(Value::as_str) == Some("welcome") {
            obj.insert("meeting".into(), json!({ "id": meeting, "title": title }));
            obj.insert("role".into(), json!(role));
        }
    }
    v.to_string()
}

/// A meeting's attendance, for its host.
fn attendance_message(meeting: &str, csv: String) -> Value {
    json!({
        "type": "attendance",
        "meeting": meeting,
        "file": crate::attendance::file_name(meeting),
        "csv": csv,
    })
}

/// A meeting's recordings, for its host: each with a download link of its own.
fn recordings_message(
    recordings: &crate::recording::Recordings,
    meeting: &str,
    files: Vec<veche_node::recordings::RecordingFile>,
) -> Value {
    let writing = recordings.writing(meeting);
    let list: Vec<Value> = files
        .into_iter()
        .map(|f| {
            if writing.as_deref() == Some(f.name.as_str()) {
                // Still being written: its link comes once it is finished.
                return json!({"name": f.name, "bytes": f.bytes, "modified_ms": f.modified_ms, "recording": true});
            }
            let ticket = recordings.ticket(meeting, &f.name);
            json!({
                "name": f.name,
                "bytes": f.bytes,
                "modified_ms": f.modified_ms,
                "url": format!("/api/meetings/{meeting}/recordings/{}?ticket={ticket}", f.name),
            })
        })
        .collect();
    json!({"type": "recordings", "meeting": meeting, "list": list})
}

/// The first message on a socket.
fn challenge(nonce: &str, node: &str) -> String {
    json!({"type": "challenge", "nonce": nonce, "node": node}).to_string()
}

/// To the host and moderators: `key` waits in the waiting room (or no longer does).
fn knock(key: &str, name: &str, waiting: bool) -> Value {
    serde_json::to_value(Signal::Knock {
        key: key.to_owned(),
        name: name.to_owned(),
        waiting,
    })
    .unwrap_or(Value::Null)
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
    /// The lobby entry this socket holds as a moderator: (meeting, key), freed when it goes.
    moderator_of: Option<(String, String)>,
    /// The role this socket's person holds in the meeting it entered (decided by the
    /// meeting's rules at that join; none before).
    role: Option<Role>,
    /// Their key, proven at the join (none before).
    key: Option<veche_trust::PublicKey>,
    /// Their name as they joined (empty before).
    name: String,
    /// What they joined with (their proof for this node, their invite): what the meeting's
    /// rules read their standing from, later.
    presence: Option<Presence>,
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
            moderator_of: None,
            role: None,
            name: String::new(),
            presence: None,
            key: None,
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
        let first = challenge(&self.nonce, &self.ctx.app.node.id);
        if !send(&mut sink, Message::Text(first.into())).await {
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
                        (Ok(true), Some(p)) => match self.still_admitted(&p) {
                            Ok(()) => self.enter(p, &mut replies).await,
                            Err(e) => {
                                replies.push(self.error(ErrorCode::InviteRefused, e.to_string(), true));
                                Next::Close
                            }
                        },
                        (_, p) => {
                            // Turned away, or the host deleted the meeting while they waited.
                            let gone = p.is_some_and(|p| {
                                rules::read(&self.ctx.app.view, &p.meeting, |_| ()).is_none()
                            });
                            replies.push(if gone {
                                self.error(ErrorCode::Ended, "the host ended the meeting", true)
                            } else {
                                self.error(ErrorCode::Denied, "the host did not let you in", true)
                            });
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
        if let Some((meeting, key)) = self.moderator_of.take() {
            let mut lobby = self.ctx.app.lobby.lock().unwrap_or_else(|p| p.into_inner());
            lobby.moderator_left(&meeting, &key);
        }
        if let Some(p) = self.pending.take() {
            // Gave up waiting (closed the page): nobody needs to decide any more.
            self.knock(&p.meeting, &p.key, "", false).await;
            self.knock_elsewhere(&p, false).await;
        }
        if let Some(id) = self.pid() {
            let _ = self.ctx.app.engine.send(Command::Leave { id }).await;
        }
    }

    /// Check a moderation action with the meeting's rules, commit what it changes, and carry
    /// it out; `Some(reason)` when refused.
    async fn moderate(&self, token: &str) -> Option<String> {
        let (_, meeting, _) = self.joined.as_ref()?;
        let meeting = meeting.clone();
        // Someone putting themselves in a breakout room does it from their own socket: one
        // socket cannot fill the rooms with made-up keys.
        if let Ok(a) = veche_trust::decode_token::<veche_trust::Signed<veche_trust::Action>>(token)
        {
            let own = matches!(a.body.kind, ActionKind::Assign { .. }) && a.key == a.body.target;
            if own && self.key != Some(a.key) {
                tracing::info!(participant = ?self.pid(), %meeting, "a room chosen for another key refused");
                return Some("you can choose a room only for yourself, from your own page".into());
            }
        }
        let action = match crate::moderation::take(
            &self.ctx.app.engine,
            (
                &self.ctx.app.meetings,
                &self.ctx.app.view,
                &self.ctx.app.recent,
                &self.ctx.app.recordings,
            ),
            &meeting,
            token,
            Some(self.name.as_str()),
        )
        .await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(participant = ?self.pid(), %meeting, error = %e, "moderation refused");
                return Some(e);
            }
        };
        if let kind @ (ActionKind::Admit | ActionKind::Deny) = action.body.kind {
            // The decision is on disk: let in (or turn away) whoever waits for it, here or at
            // the other node they wait at.
            let target = veche_trust::encode_key(&action.body.target);
            let admit = kind == ActionKind::Admit;
            let (n, elsewhere) = {
                let mut lobby = self.ctx.app.lobby.lock().unwrap_or_else(|p| p.into_inner());
                (
                    lobby.decide(&meeting, &target, admit),
                    lobby.decided_elsewhere(&meeting, &target),
                )
            };
            tracing::info!(%meeting, admit, reached = n, waits_at = ?elsewhere, by = %action.key.fingerprint(), "lobby decision");
            self.knock(&meeting, &target, "", false).await;
            if let Some(node) = elsewhere {
                // They wait at another node: it checks the decision itself and lets them in.
                let request = veche_net::protocol::Request::Action {
                    meeting: meeting.clone(),
                    action: token.to_owned(),
                };
                crate::nodes::tell_one(&self.ctx, &node, request);
            }
            return None;
        }
        // The other nodes of the meeting check it for themselves and act on their people.
        let request = veche_net::protocol::Request::Action {
            meeting: meeting.clone(),
            action: token.to_owned(),
        };
        crate::nodes::tell(&self.ctx, &meeting, request).await;
        None
    }

    /// Whether this socket's person may write to every breakout room now (the meeting's
    /// rules decide: the host or a moderator).
    fn may_address_every_room(&self) -> bool {
        let (Some((_, meeting, _)), Some(presence)) = (&self.joined, &self.presence) else {
            return false;
        };
        let node = &self.ctx.app.node.id;
        rules::read(&self.ctx.app.view, meeting, |m| {
            m.rules
                .may_address_every_room(meeting, node, presence, rules::now_ms())
        })
        .unwrap_or(false)
    }

    /// The meeting's recordings on this node with download links, if this socket's person
    /// may have them (the meeting's rules decide: its host); else why not.
    fn recordings(&self) -> Value {
        let (Some((_, meeting, _)), Some(key)) = (&self.joined, &self.key) else {
            return self.error(ErrorCode::NotJoined, "send join first", false);
        };
        self.recordings_for(meeting, key)
    }

    /// `meeting`'s recordings with download links, if `key` (proven) may have them.
    fn recordings_for(&self, meeting: &str, key: &veche_trust::PublicKey) -> Value {
        if !veche_node::is_meeting_id(meeting) {
            return self.error(ErrorCode::UnknownMeeting, "no such meeting", false);
        }
        let allowed = rules::read(&self.ctx.app.view, meeting, |m| {
            m.rules.check_recordings(key)
        });
        match allowed {
            None => return self.error(ErrorCode::UnknownMeeting, "this meeting is gone", false),
            Some(Err(e)) => {
                tracing::info!(participant = ?self.pid(), %meeting, error = %e, "recordings refused");
                return self.error(ErrorCode::NotAllowed, e.to_string(), false);
            }
            Some(Ok(())) => {}
        }
        let recordings = &self.ctx.app.recordings;
        match veche_node::recordings::list(recordings.data(), Some(meeting)) {
            Ok(files) => recordings_message(recordings, meeting, files),
            Err(e) => {
                tracing::error!(%meeting, error = %e, "cannot list the recordings");
                self.error(
                    ErrorCode::Internal,
                    format!("the recordings cannot be listed: {e}"),
                    false,
                )
            }
        }
    }

    /// The meeting's attendance as CSV, if this socket's person may have it (the meeting's
    /// rules decide: its host); else why not.
    async fn attendance(&self) -> Value {
        let Some((_, meeting, _)) = &self.joined else {
            return self.error(ErrorCode::NotJoined, "send join first", false);
        };
        let allowed = self.key.as_ref().and_then(|k| {
            rules::read(&self.ctx.app.view, meeting, |m| m.rules.check_attendance(k))
        });
        match allowed {
            None => {
                return self.error(ErrorCode::UnknownMeeting, "this meeting is gone", false);
            }
            Some(Err(e)) => {
                tracing::info!(participant = ?self.pid(), %meeting, error = %e, "attendance refused");
                return self.error(ErrorCode::NotAllowed, e.to_string(), false);
            }
            Some(Ok(())) => {}
        }
        match crate::attendance::export(&self.ctx.app.meetings, meeting, &self.ctx.app.node.id)
            .await
        {
            Ok(csv) => attendance_message(meeting, csv),
            Err(e) => {
                tracing::error!(%meeting, error = %e, "cannot read the attendance");
                self.error(
                    ErrorCode::Internal,
                    format!("the attendance cannot be read: {e}"),
                    false,
                )
            }
        }
    }

    fn pid(&self) -> Option<ParticipantId> {
        self.joined.as_ref().map(|(id, _, _)| *id)
    }

    fn render(&self, ev: PeerEvent) -> String {
        let joined = self
            .joined
            .as_ref()
            .map(|(_, m, t)| (m.as_str(), t.as_str()));
        render(ev, joined, self.role)
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
        if let (
            None,
            ClientMsg::Recordings {
                meeting: Some(meeting),
                key: Some(key),
                sig: Some(sig),
            },
        ) = (self.pid(), &msg)
        {
            // A meeting over is joined by nobody: its host proves their key to this socket.
            let proven = veche_trust::verify_challenge(
                &self.ctx.app.node.id,
                meeting,
                &self.nonce,
                key,
                sig,
            );
            replies.push(match proven {
                Ok(key) => self.recordings_for(meeting, &key),
                Err(e) => {
                    tracing::info!(%meeting, error = %e, "recordings asked with a refused proof");
                    self.error(
                        ErrorCode::NotAllowed,
                        format!("your key's proof was refused: {e}"),
                        false,
                    )
                }
            });
            return Next::Continue;
        }
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
            ClientMsg::View { tiles } => {
                if tiles.len() > MAX_TILES
                    || tiles
                        .iter()
                        .any(|t| t.source == Source::Mic || t.height > MAX_TILE_HEIGHT)
                {
                    replies.push(self.error(
                        ErrorCode::BadMessage,
                        format!("a view lists at most {MAX_TILES} camera or screen tiles, each at most {MAX_TILE_HEIGHT} pixels high"),
                        false,
                    ));
                    return Next::Continue;
                }
                let tiles = tiles
                    .into_iter()
                    .map(|t| {
                        let view = veche_core::TileView {
                            visible: t.visible,
                            height: t.height,
                        };
                        (ParticipantId(t.participant), t.source, view)
                    })
                    .collect();
                Command::View { id, tiles }
            }
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
            ClientMsg::Chat { text, everyone } => {
                if everyone && !self.may_address_every_room() {
                    tracing::info!(participant = ?self.pid(), "a message to every room refused");
                    replies.push(self.error(
                        ErrorCode::NotAllowed,
                        "only the host or a moderator can write to every room",
                        false,
                    ));
                    return Next::Continue;
                }
                Command::Chat { id, text, everyone }
            }
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
            ClientMsg::Attendance => {
                replies.push(self.attendance().await);
                return Next::Continue;
            }
            ClientMsg::Recordings { .. } => {
                replies.push(self.recordings());
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
        let store = self.ctx.app.meetings.clone();
        if !is_meeting_id(&meeting) || rules::read(&self.ctx.app.view, &meeting, |_| ()).is_none() {
            replies.push(self.error(
                ErrorCode::UnknownMeeting,
                "there is no meeting with this id on this node",
                true,
            ));
            return Next::Close;
        }
        let presence = Presence {
            key: key.clone(),
            nonce: self.nonce.clone(),
            sig: sig.clone(),
            invite: invite.clone(),
            admit: None,
        };
        // A meeting learned from another node: its host's document comes from there, given
        // for this person's proof (a node with nobody let in learns nothing more).
        if let Err(e) = crate::learn::fetch_doc(&self.ctx, &meeting, &presence).await {
            replies.push(self.error(e.code(), e.to_string(), true));
            return Next::Close;
        }
        // An invite with a use limit in such a meeting: its home node counts the use first.
        if let Err(e) = crate::learn::count_use(&self.ctx, &meeting, &presence).await {
            replies.push(self.error(e.code(), e.to_string(), true));
            return Next::Close;
        }
        // The meeting's rules decide, for this meeting and this join: a role never comes
        // from an earlier join on this socket.
        let node = self.ctx.app.node.id.clone();
        let m = meeting.clone();
        let decided = rules::decide(&store, &meeting, move |rec| {
            let a = rec
                .rules
                .admit(&m, &presence.person(&node), rules::now_ms())?;
            let change = a.change.clone();
            Ok(((a, rec.title.clone(), rec.nodes.clone()), change))
        })
        .await;
        let (admitted, title, nodes) = match decided {
            Ok(d) => d,
            Err(Undecided::Unknown) => {
                replies.push(self.error(
                    ErrorCode::UnknownMeeting,
                    "there is no meeting with this id on this node",
                    true,
                ));
                return Next::Close;
            }
            Err(Undecided::Refused(e)) => {
                tracing::info!(%meeting, error = %e, "join refused by the meeting's rules");
                let code = match e {
                    JoinRefused::BadProof(_) => ErrorCode::BadSignature,
                    JoinRefused::Denied => ErrorCode::Denied,
                    _ => ErrorCode::InviteRefused,
                };
                replies.push(self.error(code, e.to_string(), true));
                return Next::Close;
            }
            Err(Undecided::Storage(_)) => {
                replies.push(self.error(
                    ErrorCode::Internal,
                    "the node could not record your join; try again",
                    true,
                ));
                return Next::Close;
            }
        };
        let pending = PendingJoin {
            meeting,
            name,
            key,
            sig,
            invite,
            role: admitted.role,
            title,
            nodes,
        };
        if admitted.wait {
            if self.pending.is_some() {
                return Next::Continue;
            }
            let (tx, rx) = oneshot::channel();
            let full = {
                let mut lobby = self.ctx.app.lobby.lock().unwrap_or_else(|p| p.into_inner());
                lobby.wait(&pending.meeting, &pending.key, &pending.name, tx)
            };
            if full.is_err() {
                replies.push(self.error(
                    ErrorCode::MeetingFull,
                    "too many people are waiting to enter this meeting",
                    true,
                ));
                return Next::Close;
            }
            tracing::info!(meeting = %pending.meeting, key = %admitted.key.fingerprint(), "waiting in the lobby");
            self.knock(&pending.meeting, &pending.key, &pending.name, true)
                .await;
            self.knock_elsewhere(&pending, true).await;
            replies.push(json!({"type": "lobby"}));
            self.pending = Some(pending);
            self.waiting = Some(rx);
            return Next::Continue;
        }
        self.enter(pending, replies).await
    }

    /// Someone let in from the waiting room: whether the meeting's rules still let them in
    /// (removed, ended or locked while they waited).
    fn still_admitted(&self, p: &PendingJoin) -> Result<(), JoinRefused> {
        let key = veche_trust::decode_key(&p.key).map_err(JoinRefused::BadProof)?;
        rules::read(&self.ctx.app.view, &p.meeting, |rec| {
            rec.rules.still_admits(&key, p.role)
        })
        .unwrap_or(Err(JoinRefused::Ended))
    }

    /// Hand a moderator invite to the person it is bound to (on this node), once the
    /// meeting's rules take it; `Some(reason)` when refused. From then on that person hears
    /// the lobby's knocks and their page signs with the invite as authority.
    async fn grant(&self, token: &str) -> Option<String> {
        let (_, meeting, _) = self.joined.as_ref()?;
        let meeting = meeting.clone();
        let (m, t) = (meeting.clone(), token.to_owned());
        let decided = rules::decide(&self.ctx.app.meetings, &meeting, move |rec| {
            let change = rec.rules.check_grant(&m, &t, rules::now_ms())?;
            let Change::Granted { key, .. } = &change else {
                return Err(veche_meeting::Refused::NotAGrant("not a grant"));
            };
            Ok((*key, Some(change)))
        })
        .await;
        let invitee = match decided {
            Ok(k) => k,
            Err(e) => return Some(e.to_string()),
        };
        tracing::info!(%meeting, to = %invitee.fingerprint(), "moderator granted");
        let _ = self
            .ctx
            .app
            .engine
            .send(Command::Notify {
                meeting,
                keys: vec![veche_trust::encode_key(&invitee)],
                signal: Signal::Granted {
                    invite: token.to_owned(),
                },
            })
            .await;
        None
    }

    /// Tell the people on this node who may let others in now (the host, the moderators
    /// whose authority still holds) that `key` waits (or not).
    async fn knock(&self, meeting: &str, key: &str, name: &str, waiting: bool) {
        let app = &self.ctx.app;
        crate::lobby::notify(
            (&app.engine, &app.view, &app.lobby),
            meeting,
            key,
            name,
            waiting,
        )
        .await;
    }

    /// Tell the other nodes of the meeting that this person waits here (or stopped): their
    /// hosts and moderators see them too, and a decision taken there comes back here.
    async fn knock_elsewhere(&self, p: &PendingJoin, waiting: bool) {
        if p.nodes.is_empty() && !self.has_links(&p.meeting).await {
            return;
        }
        let presence = Presence {
            key: p.key.clone(),
            nonce: self.nonce.clone(),
            sig: p.sig.clone(),
            invite: p.invite.clone(),
            admit: None,
        };
        let request = veche_net::protocol::Request::Knock {
            meeting: p.meeting.clone(),
            presence: veche_trust::encode_token(&presence),
            name: p.name.clone(),
            waiting,
        };
        crate::nodes::tell(&self.ctx, &p.meeting, request).await;
    }

    /// Whether the meeting has media links with other nodes here (it spans nodes).
    async fn has_links(&self, meeting: &str) -> bool {
        self.ctx
            .app
            .engine
            .links(meeting)
            .await
            .is_ok_and(|l| !l.is_empty())
    }

    /// Enter the meeting (the engine join), once admitted and, with a lobby, let in.
    async fn enter(&mut self, p: PendingJoin, replies: &mut Vec<Value>) -> Next {
        let PendingJoin {
            meeting,
            name,
            key,
            sig,
            invite,
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
            if lobby.moderator_entered(&meeting, &key, invite.clone()) {
                self.moderator_of = Some((meeting.clone(), key.clone()));
            }
        }
        // What this person travels with to the meeting's other nodes, which check it.
        let admit = veche_trust::decode_key(&key).ok().and_then(|k| {
            rules::read(&self.ctx.app.view, &meeting, |rec| {
                rec.rules.admit_of(&k).map(str::to_owned)
            })
            .flatten()
        });
        let presence = Presence {
            key: key.clone(),
            nonce: self.nonce.clone(),
            sig,
            invite,
            admit,
        };
        let key_for_check = key.clone();
        // Breakout rooms open here already (this node may have restarted since): the engine
        // places the newcomer in theirs.
        let open = rules::read(&self.ctx.app.view, &meeting, |m| {
            m.rules.rooms(rules::now_ms()).is_some()
        });
        if open == Some(true) {
            crate::moderation::sync_rooms(&self.ctx.app.engine, &self.ctx.app.view, &meeting).await;
        }
        // Likewise someone's camera on the stage: the newcomer is told after its welcome.
        crate::moderation::sync_spotlight(&self.ctx.app.engine, &self.ctx.app.view, &meeting).await;
        self.name = name.clone();
        self.presence = Some(presence.clone());
        let cmd = Command::Join {
            meeting: meeting.clone(),
            name,
            key: Some(key),
            presence: Some(veche_trust::encode_token(&presence)),
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
                // A removal, lock or end decided while the engine was letting them in: they
                // leave again at once.
                let still = veche_trust::decode_key(&key_for_check)
                    .ok()
                    .and_then(|k| {
                        rules::read(&self.ctx.app.view, &meeting, |rec| {
                            rec.rules.still_admits(&k, role)
                        })
                    })
                    .unwrap_or(Err(JoinRefused::Ended));
                if let Err(e) = still {
                    let _ = self.ctx.app.engine.send(Command::Leave { id }).await;
                    replies.push(self.error(ErrorCode::InviteRefused, e.to_string(), true));
                    return Next::Close;
                }
                // From now on only the engine holds a sender: when it drops the peer, our
                // receiver ends and we close the socket.
                self.events_tx = None;
                self.role = Some(role);
                self.key = veche_trust::decode_key(&key_for_check).ok();
                if privileged {
                    // Who already waits: the host or moderator sees them at once.
                    let waiting = {
                        let mut lobby =
                            self.ctx.app.lobby.lock().unwrap_or_else(|p| p.into_inner());
                        lobby.list(&meeting)
                    };
                    for (key, name) in waiting {
                        replies.push(knock(&key, &name, true));
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

#[cfg(test)]
mod tests {
    use super::*;
    use veche_core::{ChatMessage, ParticipantInfo, Source};
    use veche_media::{Moderation, TrackInfo};
    use veche_signal::ServerMsg;

    /// Every kind of message the node writes on the socket parses as the clients' typed
    /// definition (veche-signal), so the two cannot drift apart unnoticed.
    #[test]
    fn every_message_the_node_writes_parses_as_the_clients_read_it() {
        let ada = ParticipantInfo {
            id: ParticipantId(7),
            name: "Ada".into(),
            audio: true,
            video: true,
            screen: false,
            hand: false,
            key: Some("k".into()),
        };
        let said = ChatMessage {
            from: ParticipantId(7),
            name: "Ada".into(),
            text: "hello".into(),
            at: 1,
            everyone: true,
        };
        let tracks = [(
            "3".to_owned(),
            TrackInfo {
                participant: ParticipantId(7),
                source: Source::Camera,
                kind: veche_core::TrackKind::Video,
            },
        )]
        .into_iter()
        .collect();
        let events = [
            PeerEvent::Notice(veche_core::Notice::Welcome {
                you: ParticipantId(8),
                participants: vec![ada.clone()],
                chat: vec![said.clone()],
                recording: Some(veche_core::Recording {
                    by: "Ada".into(),
                    since_ms: 3,
                }),
            }),
            PeerEvent::Notice(veche_core::Notice::Recording {
                on: false,
                by: String::new(),
                since_ms: 0,
                problem: "the disk is full".into(),
            }),
            PeerEvent::Notice(veche_core::Notice::ParticipantJoined { participant: ada }),
            PeerEvent::Notice(veche_core::Notice::ParticipantLeft {
                id: ParticipantId(7),
            }),
            PeerEvent::Notice(veche_core::Notice::State {
                id: ParticipantId(7),
                audio: false,
                video: true,
                screen: true,
                hand: true,
            }),
            PeerEvent::Notice(veche_core::Notice::Chat { message: said }),
            PeerEvent::Notice(veche_core::Notice::Rooms {
                count: 2,
                until_ms: 5,
                choose: true,
                rooms: [(ParticipantId(7), 2)].into_iter().collect(),
            }),
            PeerEvent::Signal(Signal::Answer { sdp: "v=0".into() }),
            PeerEvent::Signal(Signal::Offer {
                sdp: "v=0".into(),
                tracks,
            }),
            PeerEvent::Signal(Signal::Granted { invite: "i".into() }),
            PeerEvent::Signal(Signal::Moderated {
                action: Moderation::Mute,
            }),
            PeerEvent::Notice(veche_core::Notice::Speaking {
                ids: vec![ParticipantId(7)],
            }),
            PeerEvent::Notice(veche_core::Notice::Paused {
                ids: vec![ParticipantId(7)],
            }),
            PeerEvent::Notice(veche_core::Notice::Spotlight {
                key: Some("k".into()),
            }),
            PeerEvent::Notice(veche_core::Notice::Spotlight { key: None }),
            PeerEvent::Signal(Signal::Layers {
                source: veche_core::Source::Camera,
                active: vec!["q", "h"],
            }),
            PeerEvent::Signal(Signal::error(ErrorCode::InviteRefused, "no", true)),
        ];
        let mut texts: Vec<String> = events
            .into_iter()
            .map(|e| render(e, Some(("k3x-9qa-7mf", "Physics")), Some(Role::Host)))
            .collect();
        texts.push(challenge("nonce", "12D3KooW"));
        texts.push(knock("k", "Bob", true).to_string());
        texts.push(json!({"type": "lobby"}).to_string());
        texts.push(attendance_message("k3x-9qa-7mf", "name\n".into()).to_string());
        let recordings = crate::recording::Recordings::new(std::env::temp_dir());
        let file = veche_node::recordings::RecordingFile {
            meeting: "k3x-9qa-7mf".into(),
            name: "2026-12-04T10-00-00Z.webm".into(),
            bytes: 1,
            modified_ms: 2,
        };
        texts.push(recordings_message(&recordings, "k3x-9qa-7mf", vec![file]).to_string());
        for t in &texts {
            assert!(ServerMsg::parse(t).is_ok(), "a client cannot read {t}");
        }
        match ServerMsg::parse(&texts[0]).expect("welcome") {
            ServerMsg::Welcome {
                you,
                role,
                meeting,
                participants,
                chat,
                recording,
            } => {
                assert_eq!((you, role.as_deref()), (8, Some("host")));
                assert_eq!(recording.map(|r| r.by).as_deref(), Some("Ada"));
                assert_eq!(meeting.map(|m| m.title).as_deref(), Some("Physics"));
                assert_eq!((participants.len(), chat.len()), (1, 1));
            }
            other => panic!("{other:?}"),
        }
    }
}
