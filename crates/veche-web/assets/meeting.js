// The meeting screen: one Meeting lives from "Join" until the person leaves or a fatal
// error ends it. It wires the parts together and owns nothing they own: what the page
// knows of the meeting is `roster.js` (a pure update per node message), reconnecting is
// `connection.js`, our devices `local.js`, the stage `stage.js`, the panels `people.js`
// and `chat.js`, the host's tools `moderation.js`, invites `invites.js`.

import { h, mount, toast, showBanner, hideBanner, fatalScreen, brand } from './ui.js';
import { Session } from './session.js';
import { personKey, fingerprint, notePerson } from './keys.js';
import { saveAttendance } from './attendance.js';
import { askBeforeJoining, recordingFrom, recordingText, recordingsDialog, recordingsAfterEnd } from './recording.js';
import { roomBarText, roomPicker } from './rooms.js';
import { emptyRoster, update, sameRoom, myRoom, galleryOrder, SPEAKERS_FIRST_FROM } from './roster.js';
import { retryDelay, lostWhy, lostBanner, TRANSIENT_FATAL, ERROR_TEXT, fatalScreen as fatalFor } from './connection.js';
import { LocalMedia } from './local.js';
import { Stage, wantedTiles } from './stage.js';
import { PeoplePanel } from './people.js';
import { ChatPanel } from './chat.js';
import { Controls } from './controls.js';
import { Moderation } from './moderation.js';
import { inviteDialog } from './invites.js';

const VIEW_DEBOUNCE_MS = 200; // a resize or scroll sends one view, not one per frame
// The gallery is reordered by who spoke at most this often: each move of a tile in or out
// of view costs its video a keyframe.
const REORDER_MS = 5000;

export class Meeting {
  /**
   * opts: {id, title, host, hostKey, name, mic, cam, audio, video, nodeInfo (Promise),
   * rejoin(prefs)}. mic/cam: MediaStreamTracks or null; audio/video: whether they start on.
   */
  constructor(opts) {
    this.opts = opts;
    this.id = opts.id;
    this.name = opts.name;
    this.s = emptyRoster(opts.title || 'Meeting');
    this.session = null;
    this.media = new Map();        // String(id) → {mic, camera, screen} remote tracks
    this.paused = new Set();       // String(id) of cameras our link has no room for now
    this.watched = new WeakSet();
    this.newKeys = new Set();      // keys this browser saw before with another name's key
    this.nodes = [];               // other nodes carrying the meeting, from the API
    this.panel = null;             // null | "people" | "chat"
    this.unread = 0;
    this.ended = false;            // left or failed: never reconnect
    this.error = null;
    this.silenced = false;         // a moderator withholds our microphone
    this.retryTimer = null;
    this.roomTimer = null;
    this.renderQueued = false;
    this.cleanups = [];
    this.local = new LocalMedia(opts, {
      replaceTrack: (source, track) => (this.session ? this.session.replaceTrack(source, track) : Promise.resolve()),
      changed: () => { this.sendState(); this.render(); },
      silenced: () => this.silenced,
      over: () => this.ended,
    });
    this.mod = new Moderation({
      meetingId: this.id,
      hostKey: opts.hostKey || null,
      send: (msg) => !!(this.session && this.session.send(msg)),
      view: () => this.s,
      changed: () => { if (!this.ended) this.renderPeople(); },
    });
  }

  // ---- lifecycle -------------------------------------------------------

  start() {
    document.title = `${this.s.title} — veche`;
    this.buildScreen();
    this.listen(window, 'online', () => { if (this.retryTimer) this.connect(); });
    this.listen(window, 'pagehide', () => { if (this.session) this.session.leave(); });
    this.listen(window, 'pageshow', (ev) => { if (ev.persisted) location.reload(); }); // back/forward cache
    this.listen(document, 'pointerdown', () => { if (this.stage.soundBlocked) this.stage.unlockSound(); });
    this.listen(document, 'visibilitychange', () => this.stage.reportView());
    this.listen(document, 'keydown', (ev) => {
      if (ev.key === 'Escape' && this.panel && !document.querySelector('dialog[open]')) this.togglePanel(null);
    });
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
      personKey().then((k) => { this.myKey = k.publicKey; this.myFp = fingerprint(k.publicKey); this.renderPeople(); }).catch(() => {});
    }
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.ended) return;
    const session = new Session({
      meetingId: this.id,
      name: this.name,
      local: this.local,
      on: this.handlersFor(() => session),
    });
    this.session = session;
    session.start();
  }

  /** Session callbacks, ignored once that session is no longer the current one. Each node
   * message goes through the roster's update first. */
  handlersFor(getSession) {
    const guard = (fn) => (...args) => { if (this.session === getSession()) fn.apply(this, args); };
    const roster = (toEvent, after) => guard((...args) => { this.apply(toEvent(...args)); if (after) after.apply(this, args); });
    return {
      welcome: roster((msg) => ({ ...msg, type: 'welcome' }), this.onWelcome),
      participantJoined: roster((participant) => ({ type: 'participant_joined', participant })),
      participantLeft: roster((id) => ({ type: 'participant_left', id }), (id) => this.media.delete(String(id))),
      state: roster((msg) => ({ ...msg, type: 'state' })),
      chat: roster((message) => ({ type: 'chat', message })),
      rooms: roster((msg) => ({ ...msg, type: 'rooms' }), () => this.renderRoomBar()),
      spotlight: roster((msg) => ({ ...msg, type: 'spotlight' })),
      recording: roster((msg) => ({ ...msg, type: 'recording' }), this.onRecording),
      lobby: roster(() => ({ type: 'lobby' }), () => showBanner('Waiting for the host to let you in…')),
      speaking: guard(this.onSpeaking),
      paused: guard(this.onPaused),
      error: guard(this.onError),
      track: guard(this.onTrack),
      tracksChanged: guard(this.syncTracks),
      lost: guard(this.onLost),
      media: roster((connected) => ({ type: 'media', connected }), this.onMedia),
      moderated: guard(this.onModerated),
      granted: guard(this.onGranted),
      knock: guard(this.onKnock),
      attendance: guard(this.onAttendance),
      recordings: guard(recordingsDialog),
      // Asked before anything of ours is sent: a recorded meeting says so first.
      consent: (msg) => this.consent(msg),
    };
  }

  /** Feed one event to the roster, tell the person what its notes say, redraw. */
  apply(event) {
    const before = this.s;
    const { state, notes } = update(before, event, Date.now());
    this.s = state;
    for (const p of state.participants.values()) {
      if (!before.participants.has(String(p.id)) && notePerson(p.name, p.key)) this.newKeys.add(p.key);
    }
    for (const n of notes) this.tell(n);
    this.render();
  }

  tell(n) {
    switch (n.kind) {
      case 'joined': toast(`${n.name} joined`, { timeout: 3000 }); break;
      case 'left': toast(`${n.name} left`, { timeout: 3000 }); break;
      case 'hand': toast(`${n.name} raised a hand`, { timeout: 5000 }); break;
      case 'reconnected': toast('Reconnected'); break;
      case 'listener': toast('You joined as a listener: the others see and hear the speakers, not you.', { timeout: 8000 }); break;
      case 'rooms_closed': toast('Breakout rooms closed: everyone is back in the main room', { timeout: 5000 }); break;
      case 'room': toast(n.room ? `You are in breakout room ${n.room}` : 'You are back in the main room', { timeout: 4000 }); break;
      case 'recording_problem': toast(`Recording stopped: ${n.problem}`, { kind: 'error', timeout: 10000 }); break;
      case 'recording_started': toast(`${n.by || 'Someone'} started recording the meeting`, { timeout: 5000 }); break;
      case 'recording_stopped': toast('Recording stopped', { timeout: 4000 }); break;
      case 'spotlight':
        toast(n.key === this.myKey ? 'Your camera is in the spotlight: everyone sees you on the stage'
          : `${n.name || 'Someone'} is in the spotlight`, { timeout: 4000 });
        break;
      case 'spotlight_off': toast('Spotlight off', { timeout: 3000 }); break;
      case 'chat':
        this.chat.append(n.entry, n.mine);
        if (this.panel !== 'chat' && !n.mine) this.unread += 1;
        break;
      default: break;
    }
  }

  /** Host or moderator: someone waits (or no longer does). */
  onKnock(msg) {
    if (this.mod.knock(msg)) toast(`${String(msg.name ?? '')} is waiting to join`, { timeout: 5000 });
    this.renderPeople();
  }

  /** The host made us a moderator: their invite, bound to our key, is our authority now. */
  onGranted(token) {
    if (!this.mod.grant(token)) return;
    this.apply({ type: 'granted' });
    toast('The host made you a moderator: you can mute, remove, let people in and invite.', { timeout: 6000 });
  }

  /** A moderator muted us (our microphone is withheld by the node) or allows us again. */
  onModerated(action) {
    if (action === 'mute') {
      this.silenced = true;
      if (this.local.silence()) this.sendState();
      toast('The host muted you. You can unmute once the host allows it.', { timeout: 8000 });
    } else if (action === 'allow') {
      this.silenced = false;
      toast('The host allows you to unmute.', { timeout: 5000 });
    }
    this.render();
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

  /** A recording started while we are in: we are asked to stay or leave. One that ran
   * before we came in, which our node learned late: what we send is held until we agree. */
  onRecording() {
    if (!this.s.recording || this.recordingAgreed || this.asking) return;
    const late = !!this.s.recording.sinceMs && this.s.recording.sinceMs < this.joinedAt - 2000;
    this.asking = true;
    const release = late ? this.local.hold() : () => {};
    askBeforeJoining(this.s.recording).then((choice) => {
      this.asking = false;
      if (choice !== 'join') { this.leave(); return; }
      this.recordingAgreed = true;
      release();
    });
  }

  /** Host or moderator: start or stop recording; whoever starts it is not asked to stay. */
  toggleRecording() {
    this.recordingAgreed = true;
    this.mod.toggleRecording();
  }

  /** The host asks for this meeting's recordings or attendance; the answer comes later. */
  ask(type) {
    if (!this.session || !this.session.send({ type })) {
      toast('Not connected to the node: try again in a moment.', { kind: 'error' });
    }
  }

  onAttendance(msg) {
    const stays = saveAttendance(msg);
    toast(`Attendance saved as ${msg.file}: ${stays} ${stays === 1 ? 'stay' : 'stays'} (a rejoin is a second one).`, { timeout: 6000 });
  }

  /** Connection broke: drop remote state and try again with backoff, saying why. */
  onLost(reason, stage) {
    if (this.ended) return;
    if (this.session) this.session.close();
    this.session = null;
    this.transport = null;
    this.media.clear();
    const delay = retryDelay(this.s.attempt, Math.random());
    this.apply({ type: 'lost', reason, stage });
    const lost = this.s.lost;
    console.warn(`veche: connection lost (${reason} while ${stage}): ${lostWhy(lost.reason, lost.stage)}; attempt ${lost.attempt} in ${Math.round(delay)} ms`);
    showBanner(lostBanner(lost));
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Audio and video flow again, or were interrupted: say so while they are. */
  onMedia(connected) {
    if (connected) {
      hideBanner();
      // Over TCP the people panel says so (a firewall passes no UDP: it can lag).
      const session = this.session;
      session.transport().then((t) => {
        if (this.session !== session) return;
        this.transport = t;
        this.renderPeople();
      }).catch(() => {});
      return;
    }
    // The browser says so only after seconds without an answer to its checks: no blip.
    showBanner('Connection interrupted — waiting for the network…');
  }

  /** Leave on purpose: no reconnect, camera off, "You left" screen. */
  leave() {
    if (this.ended) return;
    if (this.session) this.session.leave();
    this.end('left', null);
    fatalScreen('You left the meeting', this.s.title, [
      { label: 'Rejoin', onClick: () => this.opts.rejoin(this.prefs()) },
      { label: 'Start a new meeting', onClick: () => location.assign('/') },
    ]);
  }

  /** A fatal problem: stop everything and show it full-screen. */
  fail(code, screen) {
    if (this.ended) return;
    if (this.session) this.session.close();
    this.end('failed', code);
    const buttons = {
      start: { label: 'Start a meeting', href: '/' },
      new: { label: 'Start a new meeting', onClick: () => location.assign('/') },
      rejoin: { label: 'Rejoin', onClick: () => this.opts.rejoin(this.prefs()) },
      retry: { label: 'Try again', onClick: () => this.opts.rejoin(this.prefs()) },
      rename: { label: 'Change name', onClick: () => location.assign(`/m/${encodeURIComponent(this.id)}`) },
      recordings: { label: 'Download the recordings', onClick: () => recordingsAfterEnd(this.id)
        .catch((err) => toast(`Could not list the recordings: ${err && err.message || err}`, { kind: 'error' })) },
    };
    fatalScreen(screen.title, screen.detail, screen.actions.map((a) => buttons[a]));
  }

  end(connection, error) {
    this.ended = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.roomTimer);
    clearTimeout(this.viewTimer);
    this.retryTimer = null;
    this.session = null;
    if (error) this.error = error;
    this.s = update(this.s, { type: 'ended', connection }, Date.now()).state;
    this.media.clear();
    this.mod.stop();
    for (const fn of this.cleanups.splice(0)) fn();
    if (this.stage) this.stage.destroy();
    this.local.stop();
  }

  /** What to turn on when rejoining. */
  prefs() { return { audio: this.local.audio, video: this.local.video }; }

  /** What adoptLate needs from app.js (devices that started after the join). */
  adoptLate(got, prefs) { this.local.adoptLate(got, prefs); }

  // ---- node messages ---------------------------------------------------

  onWelcome() {
    if (!this.joinedAt) this.joinedAt = Date.now();
    hideBanner();
    document.title = `${this.s.title} — veche`;
    this.media.clear();
    this.sentView = null; // a new session: the node knows nothing of our tiles yet
    this.renderRoomBar();
    this.chat.renderLog(this.s.chat, (m) => this.s.myIds.has(String(m.from)));
    // join carries no media state; tell everyone if we start muted or sharing.
    this.sendState();
  }

  onError(msg) {
    const code = msg.code || 'internal';
    this.error = code;
    if (!msg.fatal && !(code === 'bad_name' && !this.s.joined)) {
      toast(ERROR_TEXT[code] || msg.message || code, { kind: 'error' });
      return;
    }
    // A name the node will not let us in under is fatal here: back to the join screen.
    if (TRANSIENT_FATAL.has(code)) { this.onLost(); return; }
    this.fail(code, fatalFor(code, msg.message, { deleting: this.mod.deleting, role: this.s.role }));
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

  // ---- our own state -----------------------------------------------------

  /** Raise or lower our hand: everyone sees it; the host and moderators get a note. */
  toggleHand() {
    this.local.hand = !this.local.hand;
    this.sendState();
    this.render();
  }

  sendState() {
    if (this.s.joined && this.session) this.session.send({ type: 'state', ...this.local.state() });
  }

  /** The node is told what our tiles show (after a short pause, and only what changed). */
  viewChanged(tiles) {
    this.pendingView = tiles;
    if (this.viewTimer) return;
    this.viewTimer = setTimeout(() => {
      this.viewTimer = null;
      const text = JSON.stringify(this.pendingView);
      if (!this.s.joined || !this.session || text === this.sentView) return;
      if (this.session.send({ type: 'view', tiles: this.pendingView })) this.sentView = text;
    }, VIEW_DEBOUNCE_MS);
  }

  sendChat(text) {
    if (!this.s.joined || !this.session || !this.session.send({ type: 'chat', text })) {
      toast('Not connected — your message was not sent. Try again in a moment.', { kind: 'error' });
      return false;
    }
    return true;
  }

  // ---- the screen ----------------------------------------------------------

  buildScreen() {
    this.stage = new Stage();
    this.stage.onView = (tiles) => this.viewChanged(tiles);
    // One camera pinned to the big spot, for this page only; pressed again, unpinned.
    this.stage.onPin = (key) => { this.pinned = this.pinned === key ? null : key; this.render(); };
    this.people = new PeoplePanel({ close: () => this.togglePanel(null) });
    this.chat = new ChatPanel({
      send: (text) => this.sendChat(text),
      refuse: (why) => toast(why, { kind: 'error' }),
      close: () => this.togglePanel(null),
    });
    this.controls = new Controls({
      mic: () => this.local.toggle('mic'),
      camera: () => this.local.toggle('camera'),
      screen: () => this.local.toggleScreen(),
      hand: () => this.toggleHand(),
      people: () => this.togglePanel('people'),
      chat: () => this.togglePanel('chat'),
      invite: () => inviteDialog({
        meetingId: this.id, host: this.opts.host || null, hostKey: this.opts.hostKey || null,
        role: this.s.role, authority: this.mod.authority(), nodeInfo: this.opts.nodeInfo || Promise.resolve(null),
      }),
      leave: () => this.leave(),
    });
    const el = {};
    el.roomBar = h('div', { id: 'room-bar', class: 'room-bar', role: 'status', hidden: true });
    el.recordingBar = h('div', { id: 'recording-bar', class: 'recording-bar', role: 'status', hidden: true });
    el.title = h('span', { class: 'meeting-title', text: this.s.title });
    el.count = h('span', { class: 'meeting-count' });
    this.el = el;
    mount(h('div', { class: 'meeting' },
      h('header', { class: 'topbar' }, brand(false), el.title, el.count),
      el.recordingBar,
      el.roomBar,
      h('div', { class: 'meeting-body' }, this.stage.el, this.people.el, this.chat.el),
      this.controls.el));
    this.chat.renderLog(this.s.chat, () => false);
  }

  /** Coalesce bursts of track events into one render. */
  scheduleRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    queueMicrotask(() => { this.renderQueued = false; this.render(); });
  }

  render() {
    if (this.ended || !this.el) return;
    const s = this.s;
    const want = wantedTiles({
      name: this.name,
      local: this.local,
      me: this.local.state(),
      participants: galleryOrder(s),
      media: this.media,
      speaking: s.speaking,
      inRoom: (p) => sameRoom(s, p.id),
      pinned: this.pinned || null,
      spotlight: s.spotlight,
      paused: this.paused,
    });
    // Pinned someone who left (or went to another room): nothing stays pinned.
    if (this.pinned && !want.some((t) => t.pinned)) this.pinned = null;
    this.stage.show(want);
    this.renderPeople();
    this.renderControls();
    this.el.title.textContent = s.title;
    const n = s.participants.size + 1;
    this.el.count.textContent = s.joined ? `${n} ${n === 1 ? 'person' : 'people'}` : '';
    this.el.recordingBar.hidden = !s.recording;
    this.el.recordingBar.textContent = recordingText(s.recording);
  }

  renderPeople() {
    if (!this.people || this.ended) return;
    this.people.render({
      roster: this.s, name: this.name, me: this.local.state(), myFp: this.myFp, newKeys: this.newKeys, nodes: this.nodes,
      transport: this.session ? this.transport : null,
    }, this.mod, {
      toggleRecording: () => this.toggleRecording(),
      recordings: () => this.ask('recordings'),
      attendance: () => this.ask('attendance'),
    });
  }

  renderControls() {
    if (!this.controls) return;
    this.controls.render({
      me: this.local.state(), busy: this.local.busy, panel: this.panel, unread: this.unread, people: this.s.participants.size + 1,
    });
    this.people.el.hidden = this.panel !== 'people';
    this.chat.el.hidden = this.panel !== 'chat';
  }

  renderRoomBar() {
    const bar = this.el && this.el.roomBar;
    if (!bar) return;
    clearInterval(this.roomTimer);
    this.roomTimer = null;
    const rooms = this.s.rooms;
    bar.hidden = !rooms;
    if (!rooms) return;
    const text = h('span');
    // Rooms open for people to choose: each picks their own (a signed `assign` of themselves).
    const pick = rooms.choose ? roomPicker(rooms, myRoom(this.s), (room) => this.mod.chooseRoom(room)) : null;
    bar.replaceChildren(text, ...(pick ? [' ', pick] : []));
    const tick = () => {
      if (this.s.rooms) text.textContent = roomBarText(myRoom(this.s), this.s.rooms.untilMs - Date.now());
    };
    tick();
    this.roomTimer = setInterval(tick, 1000);
  }

  togglePanel(name) {
    this.panel = name && this.panel !== name ? name : null;
    if (this.panel === 'chat') {
      this.unread = 0;
      // Only focus with a mouse/keyboard: on tablets it would pop the keyboard over the video.
      if (window.matchMedia && window.matchMedia('(pointer: fine)').matches) this.chat.focus();
    }
    this.renderControls(); // shows the panel
    if (this.panel === 'chat') this.chat.scroll(true);
    this.stage.layout();
  }

  async pollNodes() {
    try {
      // The operator's view (on the node's own machine only); elsewhere it answers 403.
      const r = await fetch(`/api/meetings/${encodeURIComponent(this.id)}/people`);
      if (!r.ok) return;
      const body = await r.json();
      this.nodes = Array.isArray(body.nodes) ? body.nodes : [];
      this.renderPeople();
    } catch { /* the connection state shows node trouble already */ }
  }

  /** The node says whose cameras our link has no room for: their tiles say so. */
  onPaused(ids) {
    this.paused = new Set(ids.map(String));
    this.render();
  }

  /** The node says who speaks (from the audio level each packet carries): highlight them;
   * in a larger meeting they come to the top of the gallery. */
  onSpeaking(ids) {
    const before = this.s;
    this.s = update(before, { type: 'speaking', ids }, Date.now()).state;
    if (this.s === before) return;
    const now = Date.now();
    if (this.s.participants.size > SPEAKERS_FIRST_FROM && !(now < (this.reorderedAt || 0) + REORDER_MS)) {
      this.reorderedAt = now;
      this.render();
    } else {
      this.stage.markSpeaking((id) => this.s.speaking.has(id));
    }
  }

  // ---- test hook ------------------------------------------------------------

  state() {
    const s = this.s;
    const participants = [];
    if (s.joined && s.you != null) participants.push({ id: s.you, name: this.name, ...this.local.state() });
    for (const p of s.participants.values()) {
      participants.push({ ...p, fp: fingerprint(p.key), newKey: this.newKeys.has(p.key) });
    }
    return {
      joined: s.joined,
      you: s.joined ? s.you : null,
      participants,
      chat: s.chat.map((m) => ({ ...m })),
      connection: s.connection,
      error: this.error,
      role: s.role || null,
      lost: s.lost ? { ...s.lost } : null,
      transport: this.session ? this.transport || null : null,
      rooms: s.rooms ? { count: s.rooms.count, untilMs: s.rooms.untilMs, mine: myRoom(s) } : null,
      recording: s.recording ? { ...s.recording } : null,
      speaking: [...s.speaking],
      spotlight: s.spotlight,
    };
  }

  async stats() {
    if (!this.session) return { inbound: [], outbound: [] };
    return this.session.stats((pid) => {
      const p = this.s.participants.get(String(pid));
      return p ? p.name : null;
    });
  }

  get pc() { return this.session ? this.session.pc : null; }
}

