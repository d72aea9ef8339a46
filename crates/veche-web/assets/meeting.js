// The meeting screen: state, video tiles, controls, people and chat panels,
// the invite dialog, and automatic reconnection. One Meeting lives from
// "Join" until the user leaves or a fatal error ends it.

import {
  h, icon, mount, toast, showBanner, hideBanner, fatalScreen, brand, openDialog,
  initials, formatTime, hueFor, copyText,
} from './ui.js';
import { getLocalMedia, getScreen, screenShareAvailable, MSG } from './media.js';
import { Session } from './session.js';
import { personKey, fingerprint, pinOf, notePerson, signToken, randomId } from './keys.js';
import { qrCanvas } from './qr.js';
import { saveAttendance } from './attendance.js';
import { recordingFrom, recordingText, askBeforeJoining, recordingsDialog, recordingsAfterEnd } from './recording.js';
import { roomsFrom, roomOf, roomBarText, roomsDialog, roomPicker } from './rooms.js';

const BACKOFF_MS = [1000, 2000, 4000, 8000, 10000]; // then 10 s forever
const DELETE_ARMED_MS = 5000; // "End and delete" waits this long for its second click
const SPEAKING_POLL_MS = 400;
const SPEAKING_LEVEL = 0.04; // audioLevel is 0..1 (linear); above this = talking
const FEW_PEOPLE = 12;       // join/leave toasts only in small meetings (a class of 30 would be noisy)

/** Plain words for how far a lost attempt got (Session's `stage`) and why it ended. */
function lostWhy(reason, stage) {
  if (reason === 'media') return 'the audio and video path failed';
  switch (stage) {
    case 'opening': return 'the node cannot be reached';
    case 'open': return 'the node did not greet this page';
    case 'signing': return "this browser's key store did not answer";
    case 'joining': return 'the node did not answer the join';
    default: return reason === 'timeout' ? 'the node stopped answering' : 'the node closed the connection';
  }
}

// Plain words for the node's non-fatal error codes (docs/protocol.md).
const ERROR_TEXT = {
  bad_message: 'The node did not understand a message from this page.',
  binary_unsupported: 'The node refused a binary message.',
  not_joined: 'Not in the meeting yet — wait a moment and try again.',
  already_joined: 'Already in this meeting.',
  bad_name: 'Names must be 1 to 64 characters.',
  bad_chat: 'Chat messages must be 1 to 2000 characters.',
  rate_limited: 'Slow down — too many messages at once.',
  unexpected_sdp: 'The media connection got out of step; it will recover.',
};

// Fatal errors that a fresh connection can cure: reconnect instead of giving up.
const TRANSIENT_FATAL = new Set(['media_failed', 'slow_consumer']);

function chatKey(m) { return `${m.from}|${m.at}|${m.text}`; }

/** A signed token (base64url JSON) as its object, or null. */
function decodeToken(token) {
  try {
    const text = atob(String(token).replace(/-/g, '+').replace(/_/g, '/'));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(text, (c) => c.charCodeAt(0))));
  } catch { return null; }
}

/** Split text into text nodes and http(s) links (built as elements, never HTML). */
function linkify(text) {
  const out = [];
  const re = /https?:\/\/[^\s<>"']+/g;
  let last = 0;
  let m;
  while ((m = re.exec(text))) {
    let url = m[0];
    const trail = url.match(/[.,;:!?)\]]+$/); // sentence punctuation is not part of the link
    if (trail) url = url.slice(0, -trail[0].length);
    if (m.index > last) out.push(text.slice(last, m.index));
    out.push(h('a', { href: url, target: '_blank', rel: 'noopener noreferrer', text: url }));
    last = m.index + url.length;
    re.lastIndex = last;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

/** Best grid for n tiles of a given aspect in W×H: the largest tiles win. */
function fitGrid(n, W, H, gap, aspect = 16 / 9) {
  const options = [];
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    let w = (W - gap * (cols - 1)) / cols;
    let hgt = w / aspect;
    if (hgt * rows + gap * (rows - 1) > H) {
      hgt = (H - gap * (rows - 1)) / rows;
      w = hgt * aspect;
    }
    options.push({ cols, rows, w, h: hgt });
  }
  const maxW = Math.max(...options.map((o) => o.w));
  // Near-ties: follow the box's shape (side by side when wide, stacked when tall).
  return options
    .filter((o) => o.w >= maxW * 0.92)
    .reduce((a, b) => ((W >= H ? b.cols > a.cols : b.cols < a.cols) ? b : a));
}

/** Place elements in a centred grid inside a box; returns the bottom edge used. */
function placeGrid(els, box, gap, minW = 0) {
  const n = els.length;
  if (!n) return box.y;
  let g = fitGrid(n, box.w, box.h, gap);
  if (g.w >= minW) {
    // Use spare height: let tiles grow taller than 16:9 (4:3, or 3:4 in a tall box); video is cropped to fit.
    const availH = (box.h - gap * (g.rows - 1)) / g.rows;
    const minAspect = box.h > box.w ? 3 / 4 : 4 / 3;
    g.h = Math.min(availH, Math.max(g.h, g.w / minAspect));
  } else {
    // Too many to fit readable: keep a minimum size and let the stage scroll.
    const cols = Math.max(1, Math.floor((box.w + gap) / (minW + gap)));
    const w = (box.w - gap * (cols - 1)) / cols;
    g = { cols, rows: Math.ceil(n / cols), w, h: w * 9 / 16 };
  }
  const totalH = g.rows * g.h + (g.rows - 1) * gap;
  const top = box.y + Math.max(0, (box.h - totalH) / 2);
  els.forEach((el, i) => {
    const r = Math.floor(i / g.cols);
    const c = i % g.cols;
    const inRow = Math.min(g.cols, n - r * g.cols);
    const rowW = inRow * g.w + (inRow - 1) * gap;
    const s = el.style;
    s.left = `${Math.round(box.x + (box.w - rowW) / 2 + c * (g.w + gap))}px`;
    s.top = `${Math.round(top + r * (g.h + gap))}px`;
    s.width = `${Math.round(g.w)}px`;
    s.height = `${Math.round(g.h)}px`;
  });
  return top + totalH;
}

export class Meeting {
  /**
   * opts: {id, title, name, mic, cam, audio, video, nodeInfo (Promise), rejoin(prefs)}
   * mic/cam: MediaStreamTracks or null; audio/video: whether they start on.
   */
  constructor(opts) {
    this.opts = opts;
    this.id = opts.id;
    this.host = opts.host || null;
    this.hostKey = opts.hostKey || null; // the host key's fingerprint: links pin it
    this.nodes = [];               // other nodes carrying the meeting, from the API
    this.title = opts.title || 'Meeting';
    this.name = opts.name;
    this.nodeInfo = opts.nodeInfo || Promise.resolve(null);

    // Local media outlives sessions: reconnects reuse the same tracks.
    this.local = {
      stream: new MediaStream([opts.mic, opts.cam].filter(Boolean)),
      mic: opts.mic || null,
      cam: opts.cam || null,
      screen: null,
      audio: !!opts.mic && opts.audio !== false,
      video: !!opts.cam && opts.video !== false,
    };
    if (this.local.mic) { this.local.mic.enabled = this.local.audio; this.watchLocal('mic', this.local.mic); }
    if (this.local.cam) { this.local.cam.enabled = this.local.video; this.watchLocal('camera', this.local.cam); }

    this.session = null;
    this.you = null;
    this.myIds = new Set();        // our ids across reconnects, to mark our own chat
    this.joined = false;
    this.connection = 'connecting';
    this.error = null;
    this.ended = false;            // left or failed: never reconnect
    this.deleting = false;         // the host asked the node to delete the meeting
    this.deleteArmed = null;       // "End and delete" clicked once (its timer): the next click deletes
    this.attempt = 0;
    this.lost = null;              // {reason, stage, attempt} of the last loss, until a welcome
    this.retryTimer = null;
    this.participants = new Map(); // String(id) → {id, name, audio, video, screen}
    this.media = new Map();        // String(id) → {mic, camera, screen} remote tracks
    this.chat = [];
    this.chatKeys = new Set();
    this.unread = 0;
    this.silenced = false;         // a moderator withholds our microphone
    this.silencedKeys = new Set(); // host: keys we muted
    this.promoted = new Set(); // host: keys we made moderators
    this.granted = null; // a moderator invite handed to us in the meeting
    this.waitingRoom = new Map();  // host: key → {key, name, fp} waiting in the lobby
    this.rooms = null;             // breakout rooms open: {count, untilMs, of: Map(id → room)}
    this.roomTimer = null;         // the room bar's countdown
    this.panel = null;             // null | "people" | "chat"
    this.tiles = new Map();        // key → tile record
    this.tileOrder = [];
    this.speaking = new Set();
    this.watched = new WeakSet();
    this.busy = { mic: false, camera: false, screen: false };
    this.soundToast = null;
    this.soundBlocked = false;
    this.renderQueued = false;
    this.cleanups = [];
  }

  // ---- lifecycle -------------------------------------------------------

  start() {
    document.title = `${this.title} — veche`;
    this.buildScreen();
    this.listen(window, 'online', () => { if (this.retryTimer) this.connect(); });
    this.listen(window, 'pagehide', () => { if (this.session) this.session.leave(); });
    this.listen(window, 'pageshow', (ev) => { if (ev.persisted) location.reload(); }); // back/forward cache
    this.listen(document, 'pointerdown', () => { if (this.soundBlocked) this.unlockSound(); });
    this.listen(document, 'keydown', (ev) => {
      if (ev.key === 'Escape' && this.panel && !document.querySelector('dialog[open]')) this.togglePanel(null);
    });
    const poll = setInterval(() => this.pollSpeaking(), SPEAKING_POLL_MS);
    this.cleanups.push(() => clearInterval(poll));
    // The other nodes of the meeting and the media path to each, for the people panel.
    const nodesPoll = setInterval(() => this.pollNodes(), 3000);
    this.cleanups.push(() => clearInterval(nodesPoll));
    this.pollNodes();
    this.render();
    this.connect();
  }

  listen(target, type, fn) {
    target.addEventListener(type, fn);
    this.cleanups.push(() => target.removeEventListener(type, fn));
  }

  connect() {
    if (!this.myFp) {
      personKey().then((k) => { this.myFp = fingerprint(k.publicKey); this.renderPeople(); }).catch(() => {});
    }
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.ended) return;
    if (this.connection !== 'reconnecting') this.connection = 'connecting';
    const session = new Session({
      meetingId: this.id,
      name: this.name,
      local: this.local,
      on: this.handlersFor(() => session),
    });
    this.session = session;
    session.start();
  }

  /** Session callbacks, ignored once that session is no longer the current one. */
  handlersFor(getSession) {
    const guard = (fn) => (...args) => { if (this.session === getSession()) fn.apply(this, args); };
    return {
      welcome: guard(this.onWelcome),
      participantJoined: guard(this.onJoined),
      participantLeft: guard(this.onLeft),
      state: guard(this.onState),
      chat: guard(this.onChat),
      error: guard(this.onError),
      track: guard(this.onTrack),
      tracksChanged: guard(this.syncTracks),
      lost: guard(this.onLost),
      moderated: guard(this.onModerated),
      granted: guard(this.onGranted),
      lobby: guard(this.onLobby),
      knock: guard(this.onKnock),
      attendance: guard(this.onAttendance),
      rooms: guard(this.onRooms),
      recording: guard(this.onRecording),
      recordings: guard(this.onRecordings),
      // Asked before anything of ours is sent: a recorded meeting says so first.
      consent: (msg) => this.consent(msg),
    };
  }

  /** We wait in the lobby until a moderator lets us in. */
  onLobby() {
    this.connection = 'waiting';
    showBanner('Waiting for the host to let you in…');
    this.render();
  }

  /** Host or moderator: someone waits (or no longer does). */
  onKnock(msg) {
    const key = String(msg.key ?? '');
    if (!key) return;
    if (msg.waiting) {
      const name = String(msg.name ?? '');
      if (!this.waitingRoom.has(key)) toast(`${name} is waiting to join`, { timeout: 5000 });
      this.waitingRoom.set(key, { key, name, fp: fingerprint(key) });
    } else {
      this.waitingRoom.delete(key);
    }
    this.renderPeople();
  }

  /** A moderator muted us (our microphone is withheld by the node) or allows us again. */
  /** The host made us a moderator: their invite, bound to our key, is our authority now. */
  onGranted(token) {
    const invite = decodeToken(token);
    if (!invite) return;
    this.granted = invite;
    if (this.role !== 'host') this.role = 'moderator';
    toast('The host made you a moderator: you can mute, remove, let people in and invite.', { timeout: 6000 });
    this.render();
    this.renderPeople();
  }

  onModerated(action) {
    if (action === 'mute') {
      this.silenced = true;
      const L = this.local;
      if (L.mic && L.audio) {
        L.audio = false;
        L.mic.enabled = false;
        this.sendState();
      }
      toast('The host muted you. You can unmute once the host allows it.', { timeout: 8000 });
    } else if (action === 'allow') {
      this.silenced = false;
      toast('The host allows you to unmute.', { timeout: 5000 });
    }
    this.render();
  }

  /** Host or moderator: may mute, remove, admit, lock and end. */
  get moderates() { return this.role === 'host' || this.role === 'moderator'; }

  /** A moderator's authority: the moderator invite handed to us in the meeting, else the
   * one this page was opened with. */
  authority() {
    if (this.role !== 'moderator') return null;
    if (this.granted) return this.granted;
    return decodeToken(new URLSearchParams(location.hash.slice(1)).get('invite') || '');
  }

  /** Host: make `p` a moderator with an invite bound to their key (the node checks it and
   * hands it to them; they sign their actions and invites with it). */
  async promote(p) {
    if (!this.session || !p.key) return;
    try {
      const invite = await signToken('veche/invite/v1', {
        meeting: this.id, id: randomId(), role: 'moderator', expires_ms: Date.now() + 86400e3,
        max_uses: null, invitee: p.key, parent: null,
      });
      if (!this.session.send({ type: 'grant', invite })) throw new Error('not connected');
      this.promoted.add(p.key);
      toast(`${p.name} is a moderator now`, { timeout: 3000 });
      this.renderPeople();
    } catch (err) {
      toast(`Could not make ${p.name} a moderator: ${err && err.message || err}`, { kind: 'error' });
    }
  }

  /** Host or moderator: sign a moderation action about `p` and send it (the node checks the signature). */
  async moderate(kind, p) {
    if (!this.session) return;
    try {
      // Lock, unlock and end concern the meeting: the target is the signer.
      const action = await this.signAction(kind, p ? p.key : null, this.authority());
      if (!action) return;
      if (!this.session.send({ type: 'moderate', action })) throw new Error('not connected');
      if (kind === 'mute') this.silencedKeys.add(p.key);
      if (kind === 'allow') this.silencedKeys.delete(p.key);
      const done = { remove: 'removed', mute: 'muted', allow: 'may unmute', admit: 'let in', deny: 'turned away' };
      const whole = { lock: 'Meeting locked: nobody new can join', unlock: 'Meeting open again', end: 'Meeting ended for everyone' };
      if (kind === 'lock') this.locked = true;
      if (kind === 'unlock') this.locked = false;
      toast(p ? `${p.name} ${done[kind] || kind}` : whole[kind] || kind, { timeout: 3000 });
      this.renderPeople();
    } catch (err) {
      toast(`Could not ${kind}: ${err && err.message || err}`, { kind: 'error' });
    }
  }

  /** A signed moderation action on `target` (a key; null: the meeting, signed as its own
   * target), under `authority` (null: the host's own word); null without a target. */
  async signAction(kind, target, authority) {
    const on = target || (await personKey()).publicKey;
    if (!on) return null;
    return signToken('veche/action/v1', { meeting: this.id, kind, target: on, at_ms: Date.now(), authority });
  }

  /** Breakout rooms opened, changed or closed: the node now keeps our media and chat to
   * our room; the page shows only that room's people on the stage, and the countdown. */
  onRooms(msg) {
    const was = roomOf(this.rooms, this.you);
    const wasOpen = !!this.rooms;
    this.rooms = roomsFrom(msg);
    const now = roomOf(this.rooms, this.you);
    if (wasOpen && !this.rooms) toast('Breakout rooms closed: everyone is back in the main room', { timeout: 5000 });
    else if (this.rooms && now !== was) toast(now ? `You are in breakout room ${now}` : 'You are back in the main room', { timeout: 4000 });
    this.renderRoomBar();
    this.render();
  }

  /** Whether participant `p` is in our room (everyone is, without breakout rooms). */
  sameRoom(p) {
    return roomOf(this.rooms, p.id) === roomOf(this.rooms, this.you);
  }

  renderRoomBar() {
    const bar = this.el && this.el.roomBar;
    if (!bar) return;
    clearInterval(this.roomTimer);
    this.roomTimer = null;
    bar.hidden = !this.rooms;
    if (!this.rooms) return;
    const text = h('span');
    // Rooms open for people to choose: each picks their own (a signed `assign` of themselves).
    const pick = this.rooms.choose ? roomPicker(this.rooms, roomOf(this.rooms, this.you), (room) => {
      this.signAction({ assign: { room } }, null, null)
        .then((action) => { if (!action || !this.session || !this.session.send({ type: 'moderate', action })) throw new Error('not connected'); })
        .catch((err) => toast(`Could not change room: ${err && err.message || err}`, { kind: 'error' }));
    }) : null;
    bar.replaceChildren(text, ...(pick ? [' ', pick] : []));
    const tick = () => {
      if (this.rooms) text.textContent = roomBarText(roomOf(this.rooms, this.you), this.rooms.untilMs - Date.now());
    };
    tick();
    this.roomTimer = setInterval(tick, 1000);
  }

  /** Host or moderator: open breakout rooms, move people, visit a room, bring everyone back. */
  openRoomsDialog() {
    const seen = new Set();
    // A moderator cannot move the host: the host is not in their list.
    const people = [...this.participants.values()]
      .filter((p) => p.key && !seen.has(p.key) && seen.add(p.key))
      .filter((p) => this.role === 'host' || !this.hostKey || pinOf(p.key) !== this.hostKey)
      .map((p) => ({ key: p.key, name: p.name }));
    const byKey = new Map([...this.participants.values()].map((p) => [p.key, p]));
    const act = async (kind, target) => {
      const action = await this.signAction(kind, target, this.authority());
      if (!action || !this.session || !this.session.send({ type: 'moderate', action })) throw new Error('not connected');
    };
    const tell = (p, what) => p.catch((err) => toast(`Could not ${what}: ${err && err.message || err}`, { kind: 'error' }));
    roomsDialog({
      people,
      rooms: this.rooms,
      roomOfKey: (key) => roomOf(this.rooms, byKey.get(key) ? byKey.get(key).id : ''),
      open: (count, minutes, assignment, choose) => tell((async () => {
        await act({ open_rooms: { rooms: count, until_ms: Date.now() + Math.round(minutes * 60000), choose } }, null);
        for (const [key, room] of assignment) if (room) await act({ assign: { room } }, key);
        toast(`${count} breakout rooms open for ${minutes} min`, { timeout: 4000 });
      })(), 'open the rooms'),
      move: (key, room) => tell(act({ assign: { room } }, key), 'move them'),
      visit: (room) => tell(act({ assign: { room } }, null), 'go there'),
      close: () => tell(act('close_rooms', null), 'close the rooms'),
      announce: (text) => tell((async () => {
        if (!this.session || !this.session.send({ type: 'chat', text, everyone: true })) throw new Error('not connected');
        toast('Sent to every room', { timeout: 3000 });
      })(), 'write to every room'),
    });
  }

  /** Before we publish: in a recorded meeting, whether to go on (once per page). */
  async consent(msg) {
    const state = recordingFrom(msg);
    if (!state || this.recordingAgreed) return;
    this.asking = true;
    const choice = await askBeforeJoining(state);
    this.asking = false;
    if (choice === 'join') {
      this.recordingAgreed = true;
      return;
    }
    this.leave();
    throw new Error('left a recorded meeting');
  }

  async askDuring(hold) {
    this.asking = true;
    const L = this.local;
    const held = hold ? [L.mic, L.cam, L.screen].filter((t) => t && t.enabled) : [];
    for (const t of held) t.enabled = false;
    const choice = await askBeforeJoining(this.recording || {});
    this.asking = false;
    if (choice !== 'join') { this.leave(); return; }
    this.recordingAgreed = true;
    for (const t of held) t.enabled = true;
  }

  /** A recording started or stopped (here or at another node). */
  onRecording(msg) {
    const was = !!this.recording;
    this.recording = recordingFrom(msg);
    // A recording started while we are in: we are asked to stay or leave. One that ran
    // before we came in, which our node learned late: our camera, microphone and screen
    // are held until we agree.
    if (this.recording && !this.recordingAgreed && !this.asking) {
      this.askDuring(!!this.recording.sinceMs && this.recording.sinceMs < this.joinedAt - 2000);
    }
    if (msg.problem) toast(`Recording stopped: ${msg.problem}`, { kind: 'error', timeout: 10000 });
    else if (this.recording && !was) toast(`${this.recording.by || 'Someone'} started recording the meeting`, { timeout: 5000 });
    else if (!this.recording && was) toast('Recording stopped', { timeout: 4000 });
    this.renderRecording();
    this.renderPeople();
  }

  renderRecording() {
    const bar = this.el && this.el.recordingBar;
    if (!bar) return;
    bar.hidden = !this.recording;
    bar.textContent = recordingText(this.recording);
  }

  /** Host or moderator: start or stop recording the meeting (this node records it). */
  async toggleRecording() {
    const kind = this.recording ? 'stop_recording' : 'start_recording';
    // Whoever starts it is not asked whether to stay.
    this.recordingAgreed = true;
    try {
      const action = await this.signAction(kind, null, this.authority());
      if (!action || !this.session || !this.session.send({ type: 'moderate', action })) throw new Error('not connected');
    } catch (err) {
      toast(`Could not ${this.recording ? 'stop' : 'start'} the recording: ${err && err.message || err}`, { kind: 'error' });
    }
  }

  /** The host asks for this meeting's recordings; the answer comes as `recordings`. */
  askRecordings() {
    if (!this.session || !this.session.send({ type: 'recordings' })) {
      toast('Not connected: try again in a moment', { kind: 'error' });
    }
  }

  onRecordings(msg) {
    recordingsDialog(msg);
  }

  /** The host asks the node who was in the meeting; the answer comes as `attendance`. */
  askAttendance() {
    if (!this.session || !this.session.send({ type: 'attendance' })) {
      toast('Not connected to the node: try again in a moment.', { kind: 'error' });
    }
  }

  onAttendance(msg) {
    const stays = saveAttendance(msg);
    toast(`Attendance saved as ${msg.file}: ${stays} ${stays === 1 ? 'stay' : 'stays'} (a rejoin is a second one).`, { timeout: 6000 });
  }

  /** The host ends the meeting and deletes it from this node at once (an end signed by the
   * host's own key, sent over HTTP: the node answers once it is gone from its disk). */
  async deleteMeeting() {
    // It cannot be undone: the first click arms the button for a few seconds.
    clearTimeout(this.deleteArmed);
    if (!this.deleteArmed) {
      this.deleteArmed = setTimeout(() => { this.deleteArmed = null; if (!this.ended) this.renderPeople(); }, DELETE_ARMED_MS);
      this.renderPeople();
      return;
    }
    this.deleteArmed = null;
    try {
      const end = await this.signAction('end', null, null);
      // The node tells this socket `ended` before the answer comes.
      this.deleting = true;
      const r = await fetch(`/api/meetings/${encodeURIComponent(this.id)}`, {
        method: 'DELETE', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ end }),
      });
      const answer = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(answer.message || `the node answered ${r.status}`);
      toast('Meeting ended and deleted from this node', { timeout: 5000 });
    } catch (err) {
      this.deleting = false;
      toast(`Could not delete the meeting: ${err && err.message || err}`, { kind: 'error' });
    }
  }

  /** Connection broke: drop remote state and try again with backoff, saying why. */
  onLost(reason, stage) {
    if (this.ended) return;
    if (this.session) this.session.close();
    this.session = null;
    this.joined = false;
    this.you = null;
    this.connection = 'reconnecting';
    this.clearRemote();
    // Jitter: after a node restart a whole classroom must not rejoin in the same instant.
    const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    const delay = base * (0.5 + Math.random() * 0.5);
    this.attempt += 1;
    const why = lostWhy(String(reason || ''), String(stage || ''));
    this.lost = { reason: String(reason || ''), stage: String(stage || ''), attempt: this.attempt };
    console.warn(`veche: connection lost (${reason} while ${stage}): ${why}; attempt ${this.attempt} in ${Math.round(delay)} ms`);
    // The first loss is usually a blip; from the second on the person is told what fails.
    showBanner(this.attempt > 1 ? `Connection lost — reconnecting… (${why}; attempt ${this.attempt})` : 'Connection lost — reconnecting…');
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
    this.render();
  }

  clearRemote() {
    this.participants.clear();
    this.media.clear();
    this.speaking.clear();
  }

  /** Leave on purpose: no reconnect, camera off, "You left" screen. */
  leave() {
    if (this.ended) return;
    if (this.session) this.session.leave();
    this.end('left', null);
    fatalScreen('You left the meeting', this.title, [
      { label: 'Rejoin', onClick: () => this.opts.rejoin(this.prefs()) },
      { label: 'Start a new meeting', onClick: () => location.assign('/') },
    ]);
  }

  /** A fatal problem: stop everything and show it full-screen. */
  fail(code, title, detail, actions) {
    if (this.ended) return;
    if (this.session) this.session.close();
    this.end('failed', code);
    fatalScreen(title, detail, actions);
  }

  end(connection, error) {
    this.ended = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.roomTimer);
    this.retryTimer = null;
    this.session = null;
    this.joined = false;
    this.you = null;
    this.connection = connection;
    if (error) this.error = error;
    this.clearRemote();
    for (const fn of this.cleanups.splice(0)) fn();
    if (this.resizeObserver) this.resizeObserver.disconnect();
    if (this.soundToast) this.soundToast.remove();
    // Turn the camera light off: the user is no longer in a meeting.
    for (const t of [this.local.mic, this.local.cam, this.local.screen]) if (t) t.stop();
    this.local.screen = null;
  }

  /** What to turn on when rejoining. */
  prefs() { return { audio: this.local.audio, video: this.local.video }; }

  // ---- node messages ---------------------------------------------------

  onWelcome(msg) {
    const wasReconnect = this.attempt > 0;
    if (!wasReconnect) this.joinedAt = Date.now();
    this.you = msg.you;
    this.myIds.add(String(msg.you));
    this.joined = true;
    this.connection = 'connected';
    this.attempt = 0;
    this.lost = null;
    hideBanner();
    if (msg.meeting && msg.meeting.title) {
      this.title = msg.meeting.title;
      document.title = `${this.title} — veche`;
    }
    this.clearRemote();
    // The node says where we are right after the welcome, if rooms are open.
    this.rooms = null;
    this.renderRoomBar();
    this.recording = recordingFrom(msg);
    this.renderRecording();
    for (const p of msg.participants || []) {
      if (String(p.id) !== String(this.you)) this.participants.set(String(p.id), this.cleanParticipant(p));
    }
    this.mergeChat(msg.chat || [], true);
    this.role = msg.role || null;
    if (this.role === 'listener' && !wasReconnect) {
      toast('You joined as a listener: the others see and hear the speakers, not you.', { timeout: 8000 });
    }
    // join carries no media state; tell everyone if we start muted or sharing.
    this.sendState();
    if (wasReconnect) toast('Reconnected');
    this.render();
  }

  cleanParticipant(p) {
    const name = String(p.name ?? '');
    const key = typeof p.key === 'string' ? p.key : '';
    return {
      id: p.id, name, audio: !!p.audio, video: !!p.video, screen: !!p.screen,
      hand: !!p.hand, key, fp: fingerprint(key), newKey: notePerson(name, key),
    };
  }

  onJoined(p) {
    if (!p || String(p.id) === String(this.you)) return;
    this.participants.set(String(p.id), this.cleanParticipant(p));
    if (this.participants.size < FEW_PEOPLE) toast(`${p.name} joined`, { timeout: 3000 });
    this.render();
  }

  onLeft(id) {
    const key = String(id);
    const p = this.participants.get(key);
    this.participants.delete(key);
    this.media.delete(key);
    this.speaking.delete(key);
    if (p && this.participants.size < FEW_PEOPLE) toast(`${p.name} left`, { timeout: 3000 });
    this.render(); // synchronous: their tiles go at once
  }

  onState(msg) {
    const p = this.participants.get(String(msg.id));
    if (!p) return; // our own echo, or someone we do not know yet
    p.audio = !!msg.audio;
    p.video = !!msg.video;
    p.screen = !!msg.screen;
    const raised = !!msg.hand && !p.hand;
    p.hand = !!msg.hand;
    if (raised && this.moderates) toast(`${p.name} raised a hand`, { timeout: 5000 });
    this.render();
  }

  onChat(message) {
    if (!message) return;
    const added = this.mergeChat([message], false);
    if (added && this.panel !== 'chat' && !this.myIds.has(String(message.from))) {
      this.unread += 1;
      this.renderControls();
    }
  }

  onError(msg) {
    const code = msg.code || 'internal';
    this.error = code;
    if (!msg.fatal) {
      if (code === 'bad_name' && !this.joined) {
        // The node will not let us in under this name: back to the join screen.
        this.fail(code, "That name can't be used", ERROR_TEXT.bad_name, [
          { label: 'Change name', onClick: () => location.assign(`/m/${encodeURIComponent(this.id)}`) },
        ]);
        return;
      }
      toast(ERROR_TEXT[code] || msg.message || code, { kind: 'error' });
      return;
    }
    if (TRANSIENT_FATAL.has(code)) {
      this.onLost();
      return;
    }
    const again = { label: 'Rejoin', onClick: () => this.opts.rejoin(this.prefs()) };
    const fresh = { label: 'Start a new meeting', onClick: () => location.assign('/') };
    if (code === 'unknown_meeting') {
      this.fail(code, 'Meeting not found', 'This meeting does not exist on this veche node. The link may be mistyped, or the node was restarted.',
        [{ label: 'Start a meeting', href: '/' }]);
    } else if (code === 'ended' && this.deleting) {
      this.fail(code, 'Meeting deleted', 'You ended this meeting for everyone and deleted it from this node.', [{ label: 'Start a meeting', href: '/' }]);
    } else if (code === 'ended') {
      const actions = [{ label: 'Start a meeting', href: '/' }];
      // The host keeps the lesson's recordings: they are had from here once it is over.
      if (this.role === 'host') {
        actions.push({ label: 'Download the recordings', onClick: () => recordingsAfterEnd(this.id)
          .catch((err) => toast(`Could not list the recordings: ${err && err.message || err}`, { kind: 'error' })) });
      }
      this.fail(code, 'The host ended the meeting', 'This meeting is over.', actions);
    } else if (code === 'denied') {
      this.fail(code, 'The host did not let you in', 'You waited in this meeting\'s waiting room and the host turned you away.',
        [{ label: 'Start a meeting', href: '/' }]);
    } else if (code === 'removed') {
      this.fail(code, 'You were removed from this meeting', 'The host removed you. You cannot join this meeting again.',
        [{ label: 'Start a meeting', href: '/' }]);
    } else if (code === 'invite_refused') {
      const why = msg.message ? `${msg.message[0].toUpperCase()}${msg.message.slice(1)}.` : 'The host has not let you in.';
      this.fail(code, "You can't join this meeting", `${why} Ask the host for a new invite link.`,
        [{ label: 'Start a meeting', href: '/' }]);
    } else if (code === 'bad_signature' || code === 'no_key') {
      this.fail(code, 'Could not prove who you are', msg.message || 'Your key could not sign in to this meeting.',
        [{ ...again, label: 'Try again' }, fresh]);
    } else if (code === 'meeting_full') {
      this.fail(code, 'This meeting is full', 'A meeting holds at most 100 people. Try again when someone leaves.',
        [{ ...again, label: 'Try again' }, fresh]);
    } else {
      this.fail(code, 'Disconnected from the meeting', msg.message || `The node reported: ${code}`, [again, fresh]);
    }
  }

  /** ontrack: put the track on the right participant's tile. */
  onTrack(info, track) {
    const key = String(info.participant);
    if (!this.media.has(key)) this.media.set(key, { mic: null, camera: null, screen: null });
    this.media.get(key)[info.source] = track;
    this.watchRemote(track);
    this.scheduleRender();
  }

  /** After each negotiation, rebuild track assignment from the transceivers (mids get reused). */
  syncTracks() {
    if (!this.session) return;
    this.media.clear();
    for (const t of this.session.remoteTracks()) {
      const key = String(t.participant);
      if (!this.media.has(key)) this.media.set(key, { mic: null, camera: null, screen: null });
      this.media.get(key)[t.source] = t.track;
      this.watchRemote(t.track);
    }
    this.render();
  }

  /** Remote tracks are muted until packets flow: re-render to swap placeholder/video. */
  watchRemote(track) {
    if (this.watched.has(track)) return;
    this.watched.add(track);
    const again = () => this.scheduleRender();
    track.addEventListener('mute', again);
    track.addEventListener('unmute', again);
    track.addEventListener('ended', again);
  }

  mergeChat(list, fromHistory) {
    let added = 0;
    for (const m of list) {
      if (!m || typeof m.text !== 'string') continue;
      const entry = { from: m.from, name: String(m.name ?? ''), text: m.text, at: Number(m.at) || Date.now(), everyone: !!m.everyone };
      const key = chatKey(entry);
      if (this.chatKeys.has(key)) continue;
      this.chatKeys.add(key);
      this.chat.push(entry);
      added += 1;
      if (!fromHistory) this.appendChat(entry);
    }
    if (fromHistory && added) {
      // History can interleave with what we kept from before a reconnect.
      this.chat.sort((a, b) => a.at - b.at);
      this.renderChatLog();
    }
    return added;
  }

  // ---- local media -----------------------------------------------------

  localState() {
    const L = this.local;
    return {
      audio: !!(L.mic && L.audio && L.mic.readyState === 'live'),
      video: !!(L.cam && L.video && L.cam.readyState === 'live'),
      screen: !!L.screen,
      hand: !!this.hand,
    };
  }

  /** Raise or lower our hand: everyone sees it; the host and moderators get a note. */
  toggleHand() {
    this.hand = !this.hand;
    this.sendState();
    this.render();
  }

  sendState() {
    if (this.joined && this.session) this.session.send({ type: 'state', ...this.localState() });
  }

  /** A device can vanish (unplugged, permission revoked). */
  watchLocal(source, track) {
    track.addEventListener('ended', () => {
      const L = this.local;
      const slot = source === 'mic' ? 'mic' : 'cam';
      if (L[slot] !== track || this.ended) return;
      L.stream.removeTrack(track);
      L[slot] = null;
      if (this.session) this.session.replaceTrack(source, null).catch(() => {});
      toast(source === 'mic' ? 'Your microphone stopped working.' : 'Your camera stopped working.', { kind: 'error' });
      this.sendState();
      this.render();
    });
  }

  /** Toggle mic or camera: track.enabled, no renegotiation. With no track yet, ask for one. */
  async toggleDevice(source) {
    const L = this.local;
    if (source === 'mic' && this.silenced && !(L.mic && L.audio)) {
      toast('The host muted you. You can unmute once the host allows it.', { timeout: 5000 });
      return;
    }
    const slot = source === 'mic' ? 'mic' : 'cam';
    const flag = source === 'mic' ? 'audio' : 'video';
    if (this.busy[source] || this.ended) return;
    const track = L[slot];
    if (track && track.readyState === 'live') {
      L[flag] = !L[flag];
      track.enabled = L[flag];
    } else {
      // Joined without this device (blocked, missing, or turned off): try now.
      this.busy[source] = true;
      this.renderControls();
      const got = await getLocalMedia({ audio: source === 'mic', video: source === 'camera' });
      this.busy[source] = false;
      const fresh = got[slot];
      if (this.ended) { if (fresh) fresh.stop(); return; }
      if (!fresh) {
        toast((got.error && got.error.message) || MSG.notFound, { kind: 'error', timeout: 7000 });
        this.renderControls();
        return;
      }
      this.useDevice(source, fresh);
    }
    this.sendState();
    this.render();
  }

  /** Start sending a device we joined without (source 'mic' or 'camera'). */
  useDevice(source, fresh) {
    const L = this.local;
    const slot = source === 'mic' ? 'mic' : 'cam';
    if (L[slot]) L.stream.removeTrack(L[slot]);
    L[slot] = fresh;
    L.stream.addTrack(fresh);
    L[source === 'mic' ? 'audio' : 'video'] = fresh.enabled = source !== 'mic' || !this.silenced;
    this.watchLocal(source, fresh);
    if (this.session) {
      this.session.replaceTrack(source, fresh).catch(() => toast('Could not send the new device; reconnecting may help.', { kind: 'error' }));
    }
  }

  /**
   * Devices that started only after we joined without them (the browser took longer than
   * the join waits): send them now, as the person asked for them; stop any we no longer want.
   */
  adoptLate(got, prefs) {
    const wanted = [['mic', 'mic', prefs.audio], ['camera', 'cam', prefs.video]];
    for (const [source, slot, want] of wanted) {
      const fresh = got[slot];
      if (!fresh) continue;
      if (this.ended || this.local[slot] || !want) { fresh.stop(); continue; }
      this.useDevice(source, fresh);
    }
    if (!this.ended) { this.sendState(); this.render(); }
  }

  async toggleScreen() {
    if (this.busy.screen || this.ended) return;
    if (this.local.screen) { this.stopScreen(); return; }
    this.busy.screen = true;
    let track;
    try {
      track = await getScreen();
    } catch (err) {
      toast(err.message, { kind: 'error' });
      return;
    } finally {
      this.busy.screen = false;
    }
    if (this.ended) { track.stop(); return; }
    this.local.screen = track;
    // The browser's own "Stop sharing" button ends the track.
    track.onended = () => { if (this.local.screen === track) this.stopScreen(); };
    if (this.session) {
      try {
        await this.session.replaceTrack('screen', track);
      } catch {
        toast('Could not start screen sharing.', { kind: 'error' });
        this.stopScreen();
        return;
      }
    }
    this.sendState();
    this.render();
  }

  stopScreen() {
    const track = this.local.screen;
    this.local.screen = null;
    if (this.session) this.session.replaceTrack('screen', null).catch(() => {});
    if (track) { track.onended = null; track.stop(); }
    this.sendState();
    this.render();
  }

  // ---- screen construction ----------------------------------------------

  buildScreen() {
    // Icon, label and aria-label are filled in by renderControls().
    const ctl = (id, onclick, extra = '') => h('button', { id, class: `ctl ${extra}`.trim(), type: 'button', onclick },
      h('span', { class: 'ctl-icon' }), h('span', { class: 'ctl-label' }));
    const el = {};
    el.btnMic = ctl('btn-mic', () => this.toggleDevice('mic'));
    el.btnCam = ctl('btn-cam', () => this.toggleDevice('camera'));
    el.btnScreen = ctl('btn-screen', () => this.toggleScreen());
    el.btnHand = ctl('btn-hand', () => this.toggleHand());
    el.btnPeople = ctl('btn-people', () => this.togglePanel('people'));
    el.btnChat = ctl('btn-chat', () => this.togglePanel('chat'));
    el.btnCopy = ctl('btn-copy', () => this.invite());
    el.btnLeave = ctl('btn-leave', () => this.leave(), 'ctl-leave');
    el.peopleBadge = h('span', { class: 'badge badge-muted', 'aria-hidden': 'true' });
    el.chatBadge = h('span', { id: 'chat-badge', class: 'badge', hidden: true, 'aria-hidden': 'true' });
    el.btnPeople.append(el.peopleBadge);
    el.btnChat.append(el.chatBadge);
    el.btnPeople.setAttribute('aria-controls', 'panel-people');
    el.btnChat.setAttribute('aria-controls', 'panel-chat');
    if (!screenShareAvailable()) {
      el.btnScreen.disabled = true;
      el.btnScreen.title = 'Screen sharing is not supported on this device';
    }

    // Stage: tiles are absolutely positioned by layout() to fill the space.
    el.stageInner = h('div', { class: 'stage-inner' });
    el.stage = h('main', { class: 'stage', 'aria-label': 'Video' }, el.stageInner);
    el.roomBar = h('div', { id: 'room-bar', class: 'room-bar', role: 'status', hidden: true });
    el.recordingBar = h('div', { id: 'recording-bar', class: 'recording-bar', role: 'status', hidden: true });

    // People panel.
    el.peopleTitle = h('h2', { text: 'People' });
    el.peopleList = h('ul', { class: 'people-list' });
    el.panelPeople = h('aside', { id: 'panel-people', class: 'panel', hidden: true, 'aria-label': 'People' },
      h('div', { class: 'panel-head' }, el.peopleTitle,
        h('button', { class: 'icon-btn', type: 'button', 'aria-label': 'Close people', onclick: () => this.togglePanel(null) }, icon('close'))),
      el.peopleList);

    // Chat panel.
    el.chatLog = h('div', { id: 'chat-log', class: 'chat-log', role: 'log', 'aria-live': 'polite', 'aria-label': 'Chat messages' });
    el.chatInput = h('textarea', {
      id: 'chat-input', class: 'chat-input', rows: '1', maxlength: '2000',
      placeholder: 'Message everyone', 'aria-label': 'Chat message', enterkeyhint: 'send',
    });
    el.chatSend = h('button', { id: 'chat-send', class: 'icon-btn chat-send', type: 'submit', 'aria-label': 'Send message' }, icon('send'));
    el.chatInput.addEventListener('keydown', (ev) => {
      // Enter sends, Shift+Enter is a new line; never send mid-IME composition.
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
        ev.preventDefault();
        this.sendChat();
      }
    });
    el.chatInput.addEventListener('input', () => this.autosizeChat());
    el.panelChat = h('aside', { id: 'panel-chat', class: 'panel', hidden: true, 'aria-label': 'Chat' },
      h('div', { class: 'panel-head' }, h('h2', { text: 'Chat' }),
        h('button', { class: 'icon-btn', type: 'button', 'aria-label': 'Close chat', onclick: () => this.togglePanel(null) }, icon('close'))),
      el.chatLog,
      h('form', { class: 'chat-form', onsubmit: (ev) => { ev.preventDefault(); this.sendChat(); } }, el.chatInput, el.chatSend));

    el.title = h('span', { class: 'meeting-title', text: this.title });
    el.count = h('span', { class: 'meeting-count' });
    const topbar = h('header', { class: 'topbar' }, brand(false), el.title, el.count);
    const controls = h('footer', { class: 'controls', role: 'toolbar', 'aria-label': 'Meeting controls' },
      h('div', { class: 'ctl-group' }, el.btnMic, el.btnCam, el.btnScreen, el.btnHand),
      h('div', { class: 'ctl-group' }, el.btnPeople, el.btnChat, el.btnCopy),
      h('div', { class: 'ctl-group' }, el.btnLeave));

    this.el = el;
    mount(h('div', { class: 'meeting' }, topbar,
      el.recordingBar,
      el.roomBar,
      h('div', { class: 'meeting-body' }, el.stage, el.panelPeople, el.panelChat),
      controls));

    this.resizeObserver = new ResizeObserver(() => this.layout());
    this.resizeObserver.observe(el.stage);
    this.renderChatLog();
  }

  // ---- rendering ---------------------------------------------------------

  /** Coalesce bursts of track events into one render. */
  scheduleRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    queueMicrotask(() => { this.renderQueued = false; this.render(); });
  }

  render() {
    if (this.ended || !this.el) return;
    this.renderStage();
    this.renderPeople();
    this.renderControls();
    this.el.title.textContent = this.title;
    const n = this.participants.size + 1;
    this.el.count.textContent = this.joined ? `${n} ${n === 1 ? 'person' : 'people'}` : '';
  }

  /** Wanted tiles in display order: screens first (they get the big spot), then you, then others. */
  wantedTiles() {
    const L = this.local;
    const ps = [...this.participants.entries()];
    const media = (key) => this.media.get(key) || {};
    const want = [];
    if (L.screen) {
      want.push({ key: 'self:screen', self: true, source: 'screen', name: this.name, label: 'You (screen)',
        videoOn: true, videoTrack: L.screen });
    }
    for (const [key, p] of ps) {
      if (!p.screen || !this.sameRoom(p)) continue;
      want.push({ key: `p:${key}:screen`, id: p.id, source: 'screen', name: p.name, label: `${p.name} (screen)`,
        videoOn: true, videoTrack: media(key).screen || null });
    }
    const me = this.localState();
    want.push({ key: 'self:camera', self: true, source: 'camera', name: this.name, label: 'You', mirror: true,
      audio: me.audio, videoOn: me.video, videoTrack: L.cam });
    for (const [key, p] of ps) {
      if (!this.sameRoom(p)) continue;
      const m = media(key);
      want.push({ key: `p:${key}:camera`, id: p.id, pkey: key, source: 'camera', name: p.name, label: p.name,
        audio: p.audio, videoOn: p.video, videoTrack: m.camera || null, audioTrack: m.mic || null,
        speaking: p.audio && this.speaking.has(key) });
    }
    return want;
  }

  renderStage() {
    const want = this.wantedTiles();
    const keys = new Set(want.map((w) => w.key));
    for (const [key, tile] of this.tiles) {
      if (!keys.has(key)) { this.destroyTile(tile); this.tiles.delete(key); }
    }
    for (const spec of want) {
      let tile = this.tiles.get(spec.key);
      if (!tile) { tile = this.createTile(spec); this.tiles.set(spec.key, tile); }
      this.updateTile(tile, spec);
    }
    this.tileOrder = want.map((w) => w.key);
    this.layout();
  }

  createTile(spec) {
    const video = h('video', { autoplay: true, muted: true, playsinline: true, 'aria-hidden': 'true' });
    video.muted = true; // property, not just attribute: required for autoplay
    const avatar = h('div', { class: 'avatar', 'aria-hidden': 'true' });
    const micOff = h('span', { class: 'tile-mic-off', role: 'img', 'aria-label': 'Microphone off', hidden: true }, icon('micOff'));
    const name = h('span', { class: 'tile-name' });
    const attrs = spec.self
      ? { class: `tile self tile-${spec.source}`, dataset: { local: spec.source } }
      : { class: `tile tile-${spec.source}`, dataset: { participant: String(spec.id), source: spec.source } };
    const el = h('div', attrs, video, h('div', { class: 'tile-placeholder' }, avatar), h('div', { class: 'tile-label' }, micOff, name));
    let audio = null;
    if (!spec.self && spec.source === 'camera') {
      // Separate <audio>: sound keeps playing while the video shows a placeholder.
      audio = h('audio', { autoplay: true });
      el.append(audio);
    }
    this.el.stageInner.append(el);
    return { el, video, audio, avatar, micOff, name };
  }

  updateTile(tile, spec) {
    tile.name.textContent = spec.label;
    tile.el.setAttribute('aria-label', spec.label);
    tile.micOff.hidden = !(spec.source === 'camera' && !spec.audio);
    tile.avatar.textContent = initials(spec.name);
    tile.avatar.style.setProperty('--hue', hueFor(spec.name));
    const t = spec.videoTrack;
    // Remote tracks stay "muted" until the first packets arrive: keep the placeholder till then.
    const live = !!t && t.readyState === 'live' && (spec.self || !t.muted);
    tile.el.classList.toggle('no-video', !(spec.videoOn && live));
    tile.el.classList.toggle('mirror', !!spec.mirror);
    tile.el.classList.toggle('speaking', !!spec.speaking);
    this.attach(tile.video, t);
    if (tile.audio) this.attach(tile.audio, spec.audioTrack);
  }

  /** Point a media element at a track, only when it changed (avoids flicker). */
  attach(el, track) {
    const current = el.srcObject ? el.srcObject.getTracks()[0] : null;
    if (current === (track || null)) return;
    el.srcObject = track ? new MediaStream([track]) : null;
    if (!track) return;
    const p = el.play();
    if (p && p.catch) {
      p.catch((err) => {
        // Autoplay with sound needs a user gesture in some browsers.
        if (err && err.name === 'NotAllowedError' && el.tagName === 'AUDIO') this.onSoundBlocked();
      });
    }
  }

  destroyTile(tile) {
    for (const m of [tile.video, tile.audio]) {
      if (m) { m.pause(); m.srcObject = null; }
    }
    tile.el.remove();
  }

  onSoundBlocked() {
    this.soundBlocked = true;
    if (this.soundToast && this.soundToast.isConnected) return;
    this.soundToast = toast('Your browser is holding back the meeting sound.', {
      timeout: 0, action: { label: 'Turn on sound', onClick: () => this.unlockSound() },
    });
  }

  unlockSound() {
    this.soundBlocked = false;
    if (this.soundToast) { this.soundToast.remove(); this.soundToast = null; }
    for (const tile of this.tiles.values()) {
      if (tile.audio && tile.audio.srcObject) {
        tile.audio.play().catch((err) => { if (err && err.name === 'NotAllowedError') this.onSoundBlocked(); });
      }
    }
  }

  /** Fill the stage: equal grid, or big screen share plus a strip of faces. */
  layout() {
    if (!this.el || this.ended) return;
    const stage = this.el.stage;
    const narrow = stage.clientWidth < 600;
    const pad = narrow ? 6 : 12;
    const gap = narrow ? 6 : 10;
    const W = stage.clientWidth - 2 * pad;
    const H = stage.clientHeight - 2 * pad;
    if (W <= 0 || H <= 0) return;
    const els = this.tileOrder.map((k) => this.tiles.get(k)).filter(Boolean).map((t) => t.el);
    const screens = els.filter((e) => e.classList.contains('tile-screen'));
    const faces = els.filter((e) => !e.classList.contains('tile-screen'));
    let bottom;
    if (screens.length && faces.length) {
      if (W >= H) {
        const stripW = Math.min(320, Math.max(140, W * 0.22));
        placeGrid(screens, { x: pad, y: pad, w: W - stripW - gap, h: H }, gap);
        bottom = placeGrid(faces, { x: pad + W - stripW, y: pad, w: stripW, h: H }, gap);
      } else {
        const stripH = Math.min(260, Math.max(90, H * 0.3));
        placeGrid(screens, { x: pad, y: pad, w: W, h: H - stripH - gap }, gap);
        bottom = placeGrid(faces, { x: pad, y: pad + H - stripH, w: W, h: stripH }, gap);
      }
    } else {
      bottom = placeGrid(els, { x: pad, y: pad, w: W, h: H }, gap, narrow ? 130 : 180);
    }
    // Taller than the stage (many people on a phone): let it scroll.
    this.el.stageInner.style.height = `${Math.max(stage.clientHeight, bottom + pad)}px`;
  }

  async pollNodes() {
    try {
      // The operator's view (on the node's own machine only); elsewhere it answers 403.
      const r = await fetch(`/api/meetings/${encodeURIComponent(this.id)}/people`);
      if (!r.ok) return;
      const body = await r.json();
      this.nodes = Array.isArray(body.nodes) ? body.nodes : [];
      if (this.el) this.renderPeople();
    } catch { /* the connection state shows node trouble already */ }
  }

  renderPeople() {
    const el = this.el;
    if (!el) return;
    const n = this.participants.size + 1;
    el.peopleTitle.textContent = `People (${n})`;
    el.peopleBadge.textContent = String(n);
    const me = this.localState();
    const rows = [{ name: this.name, you: true, fp: this.myFp, ...me }, ...this.participants.values()];
    el.peopleList.replaceChildren(...rows.map((p) => {
      const stateIcon = (on, onName, offName, what) => h('span', {
        class: `state-icon ${on ? '' : 'off'}`, role: 'img', 'aria-label': `${what} ${on ? 'on' : 'off'}`,
      }, icon(on ? onName : offName));
      const avatar = h('span', { class: 'avatar small', 'aria-hidden': 'true', text: initials(p.name) });
      avatar.style.setProperty('--hue', hueFor(p.name));
      return h('li', { class: 'person', dataset: p.you ? { you: '1' } : { participant: String(p.id) } },
        avatar,
        h('span', { class: 'person-name' }, h('span', { text: p.name }), p.you ? h('span', { class: 'person-you', text: ' (You)' }) : null,
          this.rooms ? h('span', { class: 'person-room', text: ` · ${roomOf(this.rooms, p.you ? this.you : p.id) ? `room ${roomOf(this.rooms, p.you ? this.you : p.id)}` : 'main room'}` }) : null,
          p.fp ? h('span', { class: 'person-key', title: 'Key fingerprint: the same person shows the same one every time', text: ` · ${p.fp}` }) : null,
          p.newKey ? h('span', { class: 'person-newkey', title: 'This browser saw this name before with a different key: another person, or a new device', text: ' · new key' }) : null),
        (!p.you && this.moderates && p.key) ? h('span', { class: 'person-actions' },
          h('button', { class: 'btn btn-secondary btn-small', type: 'button', dataset: { action: this.silencedKeys.has(p.key) ? 'allow' : 'mute' },
            text: this.silencedKeys.has(p.key) ? 'Allow' : 'Mute',
            onclick: () => this.moderate(this.silencedKeys.has(p.key) ? 'allow' : 'mute', p) }),
          h('button', { class: 'btn btn-secondary btn-small', type: 'button', dataset: { action: 'remove' }, text: 'Remove',
            onclick: () => this.moderate('remove', p) }),
          this.role === 'host' ? h('button', { class: 'btn btn-secondary btn-small', type: 'button', dataset: { action: 'promote' },
            text: this.promoted.has(p.key) ? 'Moderator' : 'Make moderator', disabled: this.promoted.has(p.key),
            onclick: () => this.promote(p) }) : null) : null,
        h('span', { class: 'person-icons' },
          p.hand ? h('span', { class: 'state-icon on hand-up', role: 'img', 'aria-label': 'Hand raised' }, icon('hand')) : null,
          p.screen ? h('span', { class: 'state-icon on', role: 'img', 'aria-label': 'Sharing screen' }, icon('screen')) : null,
          stateIcon(p.audio, 'mic', 'micOff', 'Microphone'),
          stateIcon(p.video, 'cam', 'camOff', 'Camera')));
    }));
    if (this.moderates) {
      el.peopleList.prepend(h('li', { class: 'person host-actions' },
        h('span', { class: 'person-actions' },
          h('button', { class: 'btn btn-secondary btn-small', type: 'button', dataset: { action: this.locked ? 'unlock' : 'lock' },
            text: this.locked ? 'Unlock meeting' : 'Lock meeting', onclick: () => this.moderate(this.locked ? 'unlock' : 'lock', null) }),
          h('button', { class: 'btn btn-secondary btn-small', type: 'button', dataset: { action: 'rooms' },
            text: this.rooms ? 'Breakout rooms (open)' : 'Breakout rooms', onclick: () => this.openRoomsDialog() }),
          h('button', { class: 'btn btn-secondary btn-small', type: 'button', dataset: { action: 'record' },
            text: this.recording ? 'Stop recording' : 'Record', title: 'Record the meeting on this node: the main picture and everyone\'s voice',
            onclick: () => this.toggleRecording() }),
          this.role === 'host' ? h('button', { class: 'btn btn-secondary btn-small', type: 'button', dataset: { action: 'recordings' },
            text: 'Recordings', title: 'Download this meeting\'s recordings', onclick: () => this.askRecordings() }) : null,
          h('button', { class: 'btn btn-danger btn-small', type: 'button', dataset: { action: 'end' },
            text: 'End for everyone', onclick: () => this.moderate('end', null) }),
          this.role === 'host' ? h('button', { class: 'btn btn-secondary btn-small', type: 'button', dataset: { action: 'attendance' },
            text: 'Attendance (CSV)', title: 'Save who was in this meeting on this node, and when, as a spreadsheet file',
            onclick: () => this.askAttendance() }) : null,
          this.role === 'host' ? h('button', { class: 'btn btn-danger btn-small', type: 'button', dataset: { action: 'delete' },
            text: this.deleteArmed ? 'Click again to delete' : 'End and delete',
            title: 'End the meeting for everyone and delete it from this node now: this cannot be undone',
            onclick: () => this.deleteMeeting() }) : null)));
    }
    if (this.waitingRoom.size) {
      el.peopleList.prepend(h('li', { class: 'people-nodes-head', text: `Waiting to join (${this.waitingRoom.size})` }),
        ...[...this.waitingRoom.values()].map((w) => h('li', { class: 'person waiting', dataset: { waiting: w.key } },
          h('span', { class: 'person-name' }, h('span', { text: w.name }), h('span', { class: 'person-key', text: ` · ${w.fp}` })),
          h('span', { class: 'person-actions' },
            h('button', { class: 'btn btn-primary btn-small', type: 'button', dataset: { action: 'admit' }, text: 'Admit',
              onclick: () => { this.waitingRoom.delete(w.key); this.moderate('admit', w); } }),
            h('button', { class: 'btn btn-secondary btn-small', type: 'button', dataset: { action: 'deny' }, text: 'Deny',
              onclick: () => { this.waitingRoom.delete(w.key); this.moderate('deny', w); } })))));
    }
    if (this.nodes.length) {
      // Where the others are: one line per other node, with the media path to it.
      el.peopleList.append(h('li', { class: 'people-nodes-head', text: 'Other veche nodes in this meeting' }),
        ...this.nodes.map((n) => {
          const ms = typeof n.media_rtt_ms === 'number' ? n.media_rtt_ms : n.rtt_ms;
          const rtt = typeof ms === 'number' ? ` · ${Math.round(ms)} ms` : '';
          const rate = n.media === 'connected' ? ` · ↑${Math.round(n.kbps_out || 0)} ↓${Math.round(n.kbps_in || 0)} kbit/s` : '';
          const lossPct = Math.max(n.loss_in || 0, n.loss_out || 0) * 100;
          const loss = lossPct >= 0.5 ? ` · ${lossPct.toFixed(1)}% loss` : '';
          const via = n.via ? ` via ${String(n.via).slice(-8)}` : '';
          const path = n.media === 'connected' ? `media ${n.path}${via}${n.media_address ? ` (${n.media_address})` : ''}` : 'media connecting…';
          return h('li', { class: 'person node-row', dataset: { node: n.id } },
            h('span', { class: 'person-name' },
              h('span', { text: `${n.name || String(n.id).slice(-8)} · ${n.participants} ${n.participants === 1 ? 'person' : 'people'}` }),
              h('span', { class: 'node-path', text: ` ${path}, control ${n.control || '?'}${rtt}${rate}${loss}` })));
        }));
    }
  }

  renderControls() {
    const el = this.el;
    if (!el) return;
    const L = this.local;
    const me = this.localState();
    const set = (btn, iconName, label, ariaLabel, cls = {}) => {
      const iconBox = btn.querySelector('.ctl-icon');
      if (iconBox.dataset.icon !== iconName) {
        iconBox.dataset.icon = iconName;
        iconBox.replaceChildren(icon(iconName));
      }
      btn.querySelector('.ctl-label').textContent = label;
      btn.setAttribute('aria-label', ariaLabel);
      if (!btn.disabled || btn !== el.btnScreen) btn.title = ariaLabel;
      for (const [name, on] of Object.entries(cls)) btn.classList.toggle(name, !!on);
    };
    set(el.btnMic, me.audio ? 'mic' : 'micOff', me.audio ? 'Mute' : 'Unmute',
      me.audio ? 'Turn off microphone' : 'Turn on microphone', { off: !me.audio, busy: this.busy.mic });
    set(el.btnCam, me.video ? 'cam' : 'camOff', me.video ? 'Stop video' : 'Start video',
      me.video ? 'Turn off camera' : 'Turn on camera', { off: !me.video, busy: this.busy.camera });
    set(el.btnScreen, 'screen', L.screen ? 'Stop sharing' : 'Share screen',
      L.screen ? 'Stop sharing your screen' : 'Share your screen', { active: !!L.screen });
    set(el.btnHand, 'hand', this.hand ? 'Lower hand' : 'Raise hand',
      this.hand ? 'Lower your hand' : 'Raise your hand to speak', { active: !!this.hand });
    set(el.btnPeople, 'people', 'People', 'Show participants', { active: this.panel === 'people' });
    const unread = this.unread ? ` (${this.unread} unread)` : '';
    set(el.btnChat, 'chat', 'Chat', `Show chat${unread}`, { active: this.panel === 'chat' });
    set(el.btnCopy, 'link', 'Invite', 'Copy meeting link');
    set(el.btnLeave, 'leave', 'Leave', 'Leave meeting');
    el.btnPeople.setAttribute('aria-expanded', String(this.panel === 'people'));
    el.btnChat.setAttribute('aria-expanded', String(this.panel === 'chat'));
    el.chatBadge.hidden = this.unread === 0;
    el.chatBadge.textContent = this.unread > 99 ? '99+' : String(this.unread);
    el.panelPeople.hidden = this.panel !== 'people';
    el.panelChat.hidden = this.panel !== 'chat';
  }

  togglePanel(name) {
    this.panel = name && this.panel !== name ? name : null;
    if (this.panel === 'chat') {
      this.unread = 0;
      // Only focus with a mouse/keyboard: on tablets it would pop the keyboard over the video.
      if (window.matchMedia && window.matchMedia('(pointer: fine)').matches) this.el.chatInput.focus();
    }
    this.renderControls(); // shows the panel
    if (this.panel === 'chat') this.scrollChat(true);
    this.layout();
  }

  // ---- chat --------------------------------------------------------------

  chatEntry(m) {
    const mine = this.myIds.has(String(m.from));
    const time = h('span', { class: 'chat-time', text: formatTime(m.at) });
    time.title = new Date(m.at).toLocaleString();
    return h('div', { class: `chat-msg${mine ? ' mine' : ''}` },
      h('div', { class: 'chat-meta' }, h('span', { class: 'chat-name', text: m.name }),
        m.everyone ? h('span', { class: 'chat-everyone', text: ' · to every room' }) : null, time),
      h('div', { class: 'chat-text' }, linkify(m.text)));
  }

  renderChatLog() {
    if (!this.el) return;
    this.el.chatLog.replaceChildren(...this.chat.map((m) => this.chatEntry(m)));
    this.scrollChat(true);
  }

  appendChat(m) {
    if (!this.el) return;
    const log = this.el.chatLog;
    const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
    log.append(this.chatEntry(m));
    this.scrollChat(nearBottom || this.myIds.has(String(m.from)));
  }

  scrollChat(force) {
    const log = this.el && this.el.chatLog;
    if (log && force) log.scrollTop = log.scrollHeight;
  }

  autosizeChat() {
    const ta = this.el.chatInput;
    ta.style.height = 'auto';
    ta.style.height = `${Math.min(ta.scrollHeight, 140)}px`;
  }

  sendChat() {
    const input = this.el.chatInput;
    const text = input.value.trim();
    if (!text) return;
    if ([...text].length > 2000) {
      toast(ERROR_TEXT.bad_chat, { kind: 'error' });
      return;
    }
    // Our message appears when the node echoes it back (one source of truth, no duplicates).
    if (!this.joined || !this.session || !this.session.send({ type: 'chat', text })) {
      toast('Not connected — your message was not sent. Try again in a moment.', { kind: 'error' });
      return;
    }
    input.value = '';
    this.autosizeChat();
  }

  // ---- invite --------------------------------------------------------------

  async invite() {
    const id = encodeURIComponent(this.id);
    // The node id lets someone with their own veche node open the same link there.
    const pin = this.hostKey ? `&host=${encodeURIComponent(this.hostKey)}` : '';
    const hint = this.host ? `?node=${encodeURIComponent(this.host)}${pin}` : '';
    const link = `${location.origin}/m/${id}${hint}`;
    const copied = await copyText(link);
    let info = null;
    try { info = await this.nodeInfo; } catch { info = null; }
    const lan = (info && Array.isArray(info.lan_urls) ? info.lan_urls : [])
      .map((u) => String(u).replace(/\/+$/, ''))
      .filter((u) => u && u !== location.origin)
      .map((u) => `${u}/m/${id}${hint}`);

    const row = (value, label, id) => {
      const input = h('input', { class: 'copy-input', type: 'text', readonly: true, 'aria-label': label });
      if (id) input.id = id;
      input.value = value;
      input.addEventListener('focus', () => input.select());
      const btn = h('button', { class: 'btn btn-secondary btn-small', type: 'button' }, icon('copy'), ' Copy');
      btn.addEventListener('click', async () => {
        input.select();
        toast((await copyText(value)) ? 'Copied' : 'Select the text and copy it', { timeout: 2500 });
      });
      // A QR code for phones and tablets in the room (a projected one for a whole class).
      const qrBtn = h('button', { class: 'btn btn-secondary btn-small qr-toggle', type: 'button', 'aria-expanded': 'false', text: 'QR code' });
      const qrBox = h('div', { class: 'qr-box', hidden: true });
      qrBtn.addEventListener('click', () => {
        if (!qrBox.firstChild) {
          try {
            const canvas = qrCanvas(value, 5);
            canvas.className = 'qr';
            canvas.setAttribute('role', 'img');
            canvas.setAttribute('aria-label', `QR code of the ${label.toLowerCase()}`);
            qrBox.append(canvas);
          } catch (err) {
            qrBox.append(h('p', { class: 'dialog-note', text: `No QR code: ${err && err.message || err}` }));
          }
        }
        qrBox.hidden = !qrBox.hidden;
        qrBtn.setAttribute('aria-expanded', String(!qrBox.hidden));
      });
      return { input, el: h('div', { class: 'copy-block' }, h('div', { class: 'copy-row' }, input, btn, qrBtn), qrBox) };
    };
    const main = row(link, 'Meeting link');
    const body = [
      h('p', { class: 'dialog-note', text: copied ? 'Meeting link copied to the clipboard.' : 'Copy this link and send it to the people you want to invite:' }),
      main.el,
      h('p', { class: 'dialog-note', text: 'Someone who runs their own veche node pastes this link on their node\'s start page; it joins this meeting through their node.' }),
    ];
    // A moderator invites under their own moderator invite, which must name their key.
    const delegates = this.role === 'moderator' && this.authority()?.body?.invitee;
    if (this.role === 'host' || delegates) body.push(...this.inviteMaker(link, lan, row));
    if (lan.length) {
      body.push(h('h3', { text: 'On this network' }));
      for (const url of lan) body.push(row(url, 'Meeting link on this network').el);
      if (info.fingerprint) {
        body.push(
          h('p', { class: 'dialog-note', text: 'Other devices on this network open this address; their browser will warn about the certificate — check that it shows this fingerprint, then continue.' }),
          h('code', { class: 'fingerprint', text: String(info.fingerprint) }));
      }
    }
    openDialog('Invite people', body);
    if (!copied) { main.input.focus(); main.input.select(); }
  }

  /** The host's part of the invite dialog: signed invite links with a role and an expiry. */
  inviteMaker(link, lan, row) {
    const role = h('select', { id: 'invite-role', 'aria-label': 'Role' },
      h('option', { value: 'speaker', text: 'Speaker: talks, shows video, chats' }),
      h('option', { value: 'listener', text: 'Listener: sees and hears, is not seen or heard' }),
      h('option', { value: 'moderator', text: 'Moderator' }));
    const expiry = h('select', { id: 'invite-expiry', 'aria-label': 'Valid for' },
      h('option', { value: String(3600e3), text: 'valid 1 hour' }),
      h('option', { value: String(86400e3), text: 'valid 1 day', selected: true }),
      h('option', { value: String(7 * 86400e3), text: 'valid 7 days' }));
    const single = h('input', { id: 'invite-single', type: 'checkbox' });
    const out = h('div', { class: 'stack' });
    const make = h('button', { id: 'invite-create', class: 'btn btn-primary btn-small', type: 'button', text: 'Create invite link' });
    make.addEventListener('click', async () => {
      make.disabled = true;
      try {
        const inviteId = randomId();
        const token = await signToken('veche/invite/v1', {
          meeting: this.id,
          id: inviteId,
          role: role.value,
          expires_ms: Date.now() + Number(expiry.value),
          max_uses: single.checked ? 1 : null,
          invitee: null,
          parent: this.role === 'host' ? null : this.authority(),
        });
        const url = `${link}#invite=${token}`;
        const label = `${role.value}, ${expiry.selectedOptions[0].text}${single.checked ? ', one use' : ''}`;
        this.rememberInvite({ id: inviteId, label, made: Date.now() });
        // The same invite on this network's addresses, for devices in the room.
        const onLan = lan.map((u, i) => row(`${u}#invite=${token}`, 'Invite link on this network', `invite-link-lan-${i}`).el);
        out.replaceChildren(
          h('p', { class: 'dialog-note', text: `A ${role.value} invite, ${expiry.selectedOptions[0].text}${single.checked ? ', for one person' : ''}. The part after # never reaches any server.` }),
          row(url, 'Invite link', 'invite-link').el,
          ...onLan);
        if (this.role === 'host') list.replaceChildren(...this.inviteRows());
        toast((await copyText(url)) ? 'Invite link copied' : 'Select the link and copy it', { timeout: 2500 });
      } catch (err) {
        toast(`Could not sign the invite: ${err && err.message || err}`, { kind: 'error' });
      } finally {
        make.disabled = false;
      }
    });
    // Only the host withdraws invites (revocations are the host's), so only the host lists them.
    const list = h('ul', { class: 'invite-list' }, ...(this.role === 'host' ? this.inviteRows() : []));
    return [
      h('h3', { text: `Invite with a role (you are ${this.role === 'host' ? 'the host' : 'a moderator'})` }),
      h('div', { class: 'row' }, role, expiry),
      h('label', { class: 'check', for: 'invite-single' }, single, ' one use only'),
      make,
      out,
      list,
    ];
  }

  /** Invites this browser made for this meeting (their ids, to withdraw them). */
  madeInvites() {
    try { return JSON.parse(localStorage.getItem(`veche.invites.${this.id}`) || '[]') || []; } catch { return []; }
  }

  rememberInvite(inv) {
    const all = [inv, ...this.madeInvites()].slice(0, 50);
    try { localStorage.setItem(`veche.invites.${this.id}`, JSON.stringify(all)); } catch { /* full */ }
  }

  /** One row per invite made here, with a Withdraw button (a host-signed revocation). */
  inviteRows() {
    return this.madeInvites().map((inv) => {
      const btn = h('button', { class: 'btn btn-secondary btn-small', type: 'button', dataset: { withdraw: inv.id },
        text: inv.withdrawn ? 'Withdrawn' : 'Withdraw', disabled: !!inv.withdrawn });
      btn.addEventListener('click', async () => {
        btn.disabled = true;
        try {
          const revocation = await signToken('veche/revocation/v1', { meeting: this.id, invite: inv.id, at_ms: Date.now() });
          const res = await fetch(`/api/meetings/${encodeURIComponent(this.id)}/revocations`, {
            method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ revocation }),
          });
          if (!res.ok) throw new Error(`HTTP ${res.status}`);
          const all = this.madeInvites().map((x) => (x.id === inv.id ? { ...x, withdrawn: true } : x));
          try { localStorage.setItem(`veche.invites.${this.id}`, JSON.stringify(all)); } catch { /* full */ }
          btn.textContent = 'Withdrawn';
          toast('Invite withdrawn: its link no longer lets anyone in', { timeout: 4000 });
        } catch (err) {
          btn.disabled = false;
          toast(`Could not withdraw the invite: ${err && err.message || err}`, { kind: 'error' });
        }
      });
      return h('li', { class: 'invite-row' }, h('span', { text: `Invite (${inv.label})` }), btn);
    });
  }

  // ---- speaking indicator ---------------------------------------------------

  /** Highlight people who are talking, from the receivers' audio levels (cheap, no WebAudio). */
  pollSpeaking() {
    if (!this.session || !this.joined || document.hidden) return;
    const now = new Set();
    for (const t of this.session.remoteTracks()) {
      if (t.source !== 'mic' || typeof t.receiver.getSynchronizationSources !== 'function') continue;
      const src = t.receiver.getSynchronizationSources()[0];
      if (src && src.audioLevel > SPEAKING_LEVEL) now.add(String(t.participant));
    }
    const same = now.size === this.speaking.size && [...now].every((k) => this.speaking.has(k));
    if (same) return;
    this.speaking = now;
    for (const [key, tile] of this.tiles) {
      const m = key.match(/^p:(.*):camera$/);
      if (m) {
        const p = this.participants.get(m[1]);
        tile.el.classList.toggle('speaking', !!p && p.audio && now.has(m[1]));
      }
    }
  }

  // ---- test hook ------------------------------------------------------------

  state() {
    const participants = [];
    if (this.joined && this.you != null) participants.push({ id: this.you, name: this.name, ...this.localState() });
    for (const p of this.participants.values()) participants.push({ ...p });
    return {
      joined: this.joined,
      you: this.joined ? this.you : null,
      participants,
      chat: this.chat.map((m) => ({ ...m })),
      connection: this.connection,
      error: this.error,
      role: this.role || null,
      lost: this.lost ? { ...this.lost } : null,
      rooms: this.rooms ? { count: this.rooms.count, untilMs: this.rooms.untilMs, mine: roomOf(this.rooms, this.you) } : null,
      recording: this.recording ? { ...this.recording } : null,
    };
  }

  async stats() {
    if (!this.session) return { inbound: [], outbound: [] };
    return this.session.stats((pid) => {
      const p = this.participants.get(String(pid));
      return p ? p.name : null;
    });
  }

  get pc() { return this.session ? this.session.pc : null; }
}
