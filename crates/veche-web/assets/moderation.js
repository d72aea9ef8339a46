// The host's and moderators' tools: every one is an action signed with this browser's
// key (and, for a moderator, under the invite that made them one) that the node checks:
// mute, allow, remove, spotlight, admit, deny, lock, unlock, end, promote, breakout rooms, recording,
// and the host's "End and delete".

import { toast } from './ui.js';
import { personKey, pinOf, signToken, randomId } from './keys.js';
import { roomOf, roomsDialog } from './rooms.js';

const DELETE_ARMED_MS = 5000; // "End and delete" waits this long for its second click

/** A signed token (base64url JSON) as its object, or null. */
export function decodeToken(token) {
  try {
    const text = atob(String(token).replace(/-/g, '+').replace(/_/g, '/'));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(text, (c) => c.charCodeAt(0))));
  } catch { return null; }
}

/** What a person is told once an action went out. */
export function actionDone(kind, name) {
  const done = { remove: 'removed', mute: 'muted', allow: 'may unmute', admit: 'let in', deny: 'turned away', spotlight: 'is in the spotlight' };
  const whole = { lock: 'Meeting locked: nobody new can join', unlock: 'Meeting open again', end: 'Meeting ended for everyone', end_spotlight: 'Spotlight off', spotlight: 'Your camera is in the spotlight' };
  return name ? `${name} ${done[kind] || kind}` : whole[kind] || kind;
}

export class Moderation {
  /**
   * meetingId; hostKey: the host key's pin (a moderator cannot move the host);
   * send(msg): whether it went to the node; view(): the roster (roster.js);
   * changed(): redraw the people panel.
   */
  constructor({ meetingId, hostKey, send, view, changed }) {
    this.meetingId = meetingId;
    this.hostKey = hostKey;
    this.send = send;
    this.view = view;
    this.changed = changed;
    this.granted = null;            // a moderator invite handed to us in the meeting
    this.silencedKeys = new Set();  // keys we muted
    this.promoted = new Set();      // host: keys we made moderators
    this.waiting = new Map();       // key → {key, name} waiting in the lobby
    this.locked = false;
    this.deleteArmed = null;        // "End and delete" clicked once (its timer)
    this.deleting = false;          // the host asked the node to delete the meeting
  }

  get role() { return this.view().role; }

  /** A moderator's authority: the moderator invite handed to us in the meeting, else the
   * one this page was opened with. */
  authority() {
    if (this.role !== 'moderator') return null;
    if (this.granted) return this.granted;
    return decodeToken(new URLSearchParams(location.hash.slice(1)).get('invite') || '');
  }

  /** The host made us a moderator: their invite, bound to our key, is our authority now. */
  grant(token) {
    const invite = decodeToken(token);
    if (!invite) return false;
    this.granted = invite;
    return true;
  }

  /** Someone knocks (or no longer waits); true when they are new. */
  knock(msg) {
    const key = String(msg.key ?? '');
    if (!key) return false;
    if (!msg.waiting) { this.waiting.delete(key); return false; }
    const fresh = !this.waiting.has(key);
    this.waiting.set(key, { key, name: String(msg.name ?? '') });
    return fresh;
  }

  /** A signed moderation action on `target` (a key; null: the meeting, signed as its own
   * target), under `authority` (null: the host's own word); null without a target. */
  async sign(kind, target, authority) {
    const on = target || (await personKey()).publicKey;
    if (!on) return null;
    return signToken('veche/action/v1', { meeting: this.meetingId, kind, target: on, at_ms: Date.now(), authority });
  }

  /** Sign `kind` on `target` under our authority and send it; throws when it did not go. */
  async act(kind, target, authority = this.authority()) {
    const action = await this.sign(kind, target, authority);
    if (!action || !this.send({ type: 'moderate', action })) throw new Error('not connected');
  }

  /** Mute, allow, remove, admit or deny `p` (a person with a key), or lock, unlock or end
   * the meeting (`p` null). */
  async moderate(kind, p) {
    try {
      if (kind === 'admit' || kind === 'deny') this.waiting.delete(p.key);
      await this.act(kind, p ? p.key : null);
      if (kind === 'mute') this.silencedKeys.add(p.key);
      if (kind === 'allow') this.silencedKeys.delete(p.key);
      if (kind === 'lock') this.locked = true;
      if (kind === 'unlock') this.locked = false;
      toast(actionDone(kind, p ? p.name : null), { timeout: 3000 });
    } catch (err) {
      toast(`Could not ${kind}: ${err && err.message || err}`, { kind: 'error' });
    }
    this.changed();
  }

  /** Host: make `p` a moderator with an invite bound to their key (the node checks it and
   * hands it to them; they sign their actions and invites with it). */
  async promote(p) {
    if (!p.key) return;
    try {
      const invite = await signToken('veche/invite/v1', {
        meeting: this.meetingId, id: randomId(), role: 'moderator', expires_ms: Date.now() + 86400e3,
        max_uses: null, invitee: p.key, parent: null,
      });
      if (!this.send({ type: 'grant', invite })) throw new Error('not connected');
      this.promoted.add(p.key);
      toast(`${p.name} is a moderator now`, { timeout: 3000 });
      this.changed();
    } catch (err) {
      toast(`Could not make ${p.name} a moderator: ${err && err.message || err}`, { kind: 'error' });
    }
  }

  /** Rooms open for people to choose: go to `room` (a signed `assign` of ourselves). */
  chooseRoom(room) {
    this.act({ assign: { room } }, null, null)
      .catch((err) => toast(`Could not change room: ${err && err.message || err}`, { kind: 'error' }));
  }

  /** Open breakout rooms, move people, visit a room, bring everyone back. */
  roomsDialog() {
    const s = this.view();
    const all = [...s.participants.values()];
    const seen = new Set();
    // A moderator cannot move the host: the host is not in their list.
    const people = all
      .filter((p) => p.key && !seen.has(p.key) && seen.add(p.key))
      .filter((p) => s.role === 'host' || !this.hostKey || pinOf(p.key) !== this.hostKey)
      .map((p) => ({ key: p.key, name: p.name }));
    const byKey = new Map(all.map((p) => [p.key, p]));
    const tell = (p, what) => p.catch((err) => toast(`Could not ${what}: ${err && err.message || err}`, { kind: 'error' }));
    roomsDialog({
      people,
      rooms: s.rooms,
      roomOfKey: (key) => roomOf(s.rooms, byKey.get(key) ? byKey.get(key).id : ''),
      open: (count, minutes, assignment, choose) => tell((async () => {
        await this.act({ open_rooms: { rooms: count, until_ms: Date.now() + Math.round(minutes * 60000), choose } }, null);
        for (const [key, room] of assignment) if (room) await this.act({ assign: { room } }, key);
        toast(`${count} breakout rooms open for ${minutes} min`, { timeout: 4000 });
      })(), 'open the rooms'),
      move: (key, room) => tell(this.act({ assign: { room } }, key), 'move them'),
      visit: (room) => tell(this.act({ assign: { room } }, null), 'go there'),
      close: () => tell(this.act('close_rooms', null), 'close the rooms'),
      announce: (text) => tell((async () => {
        if (!this.send({ type: 'chat', text, everyone: true })) throw new Error('not connected');
        toast('Sent to every room', { timeout: 3000 });
      })(), 'write to every room'),
    });
  }

  /** Start or stop recording the meeting (this node records it). */
  async toggleRecording() {
    const on = !!this.view().recording;
    try {
      await this.act(on ? 'stop_recording' : 'start_recording', null);
    } catch (err) {
      toast(`Could not ${on ? 'stop' : 'start'} the recording: ${err && err.message || err}`, { kind: 'error' });
    }
  }

  /** The host ends the meeting and deletes it from this node at once (an end signed by the
   * host's own key, sent over HTTP: the node answers once it is gone from its disk). It
   * cannot be undone: the first click arms the button for a few seconds. */
  async deleteMeeting() {
    clearTimeout(this.deleteArmed);
    if (!this.deleteArmed) {
      this.deleteArmed = setTimeout(() => { this.deleteArmed = null; this.changed(); }, DELETE_ARMED_MS);
      this.changed();
      return;
    }
    this.deleteArmed = null;
    try {
      const end = await this.sign('end', null, null);
      // The node tells this socket `ended` before the answer comes.
      this.deleting = true;
      const r = await fetch(`/api/meetings/${encodeURIComponent(this.meetingId)}`, {
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

  /** The meeting is over: no timer left behind. */
  stop() {
    clearTimeout(this.deleteArmed);
    this.deleteArmed = null;
  }
}
