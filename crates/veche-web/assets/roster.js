// What the page knows of the meeting, and how each message from the node changes it: a
// pure function (no DOM, no clock, no network), so every rule here has a unit test
// (`node --test crates/veche-web/tests/js`). The Meeting class feeds it the node's
// messages and turns the notes it returns into toasts; the screen is drawn from it.

import { roomsFrom, roomOf } from './rooms.js';
import { recordingFrom } from './recording.js';

/** Join and leave toasts only in small meetings (a class of 30 would be noisy). */
export const FEW_PEOPLE = 12;

/** The state before the first welcome. */
export function emptyRoster(title = 'Meeting') {
  return {
    title,
    connection: 'connecting', // connecting | waiting | connected | interrupted | reconnecting | left | failed
    joined: false,
    you: null,
    myIds: new Set(),          // our ids across reconnects, to mark our own chat
    role: null,
    attempt: 0,                // failed attempts since audio and video last connected
    lost: null,                // {reason, stage, attempt} of the last loss, until media connects
    participants: new Map(),   // String(id) → {id, name, audio, video, screen, hand, key}
    chat: [],                  // sorted by time
    chatKeys: new Set(),
    rooms: null,               // roomsFrom(): {count, untilMs, choose, of}
    recording: null,           // recordingFrom(): {by, sinceMs}
    spotlight: null,           // the key of the person the host put on everyone's stage
    speaking: new Set(),       // String(id) of those whose voice is heard now
    spokeAt: new Map(),        // String(id) → when they last spoke (ms), for the gallery's order
  };
}

/** A participant as the node described them, with only the fields the page uses. */
export function cleanParticipant(p) {
  return {
    id: p.id,
    name: String(p.name ?? ''),
    audio: !!p.audio,
    video: !!p.video,
    screen: !!p.screen,
    hand: !!p.hand,
    key: typeof p.key === 'string' ? p.key : '',
  };
}

function chatEntry(m, now) {
  return { from: m.from, name: String(m.name ?? ''), text: m.text, at: Number(m.at) || now, everyone: !!m.everyone };
}

function chatKey(m) { return `${m.from}|${m.at}|${m.text}`; }

/** The participant whose camera is in the spotlight, if they are here. */
export function spotlit(s) {
  if (!s.spotlight) return null;
  return [...s.participants.values()].find((p) => p.key === s.spotlight) || null;
}

/** Host or moderator: may mute, remove, admit, lock and end. */
export function moderates(s) { return s.role === 'host' || s.role === 'moderator'; }

/** Whether participant `id` is in our room (everyone is, without breakout rooms). */
export function sameRoom(s, id) { return roomOf(s.rooms, id) === roomOf(s.rooms, s.you); }

/** Our own room (0: the main room). */
export function myRoom(s) { return roomOf(s.rooms, s.you); }

/** Everyone else's presence gone: after a loss, and before a fresh welcome's list. */
function withoutRemote(s) {
  return { ...s, participants: new Map(), speaking: new Set(), spokeAt: new Map() };
}

/** Above this many others, the gallery puts the latest speakers first. */
export const SPEAKERS_FIRST_FROM = 6;

/**
 * The others in gallery order: as they joined; in a larger meeting, whoever spoke last
 * first (those who never spoke keep their order after them), so the first screen shows
 * the conversation.
 */
export function galleryOrder(s) {
  const people = [...s.participants.values()];
  if (people.length <= SPEAKERS_FIRST_FROM) return people;
  const at = (p) => s.spokeAt.get(String(p.id)) ?? -Infinity;
  return people.map((p, i) => ({ p, i })).sort((a, b) => (at(b.p) - at(a.p)) || (a.i - b.i)).map((x) => x.p);
}

/**
 * The roster after `event` (one of the node's messages, or the page's own `lost`,
 * `lobby`, `granted`), at `now` (ms since the epoch). Returns `{ state, notes }`: notes
 * are what a person should be told ({kind, ...}); the state is never changed in place.
 */
export function update(s, event, now) {
  const notes = [];
  const state = apply(s, event, now, notes);
  return { state, notes };
}

function apply(s, ev, now, notes) {
  switch (ev.type) {
    case 'welcome': {
      const again = s.attempt > 0 || s.joined;
      const next = { ...withoutRemote(s), chat: [...s.chat], chatKeys: new Set(s.chatKeys) };
      next.you = ev.you;
      next.myIds = new Set([...s.myIds, String(ev.you)]);
      next.joined = true;
      next.connection = 'connected';
      // The count goes on until audio and video connect too ('media'): an attempt that is
      // welcomed and then fails is still a failed attempt, and the banner says why.
      if (ev.meeting && ev.meeting.title) next.title = String(ev.meeting.title);
      next.role = ev.role || null;
      // The node says where we are right after the welcome, if rooms are open.
      next.rooms = null;
      next.recording = recordingFrom(ev);
      // The node says right after the welcome whose camera is in the spotlight, if any.
      next.spotlight = null;
      for (const p of ev.participants || []) {
        if (String(p.id) !== String(ev.you)) next.participants.set(String(p.id), cleanParticipant(p));
      }
      // History can interleave with what we kept from before a reconnect.
      if (mergeChat(next, ev.chat || [], now).length) next.chat.sort((a, b) => a.at - b.at);
      if (next.role === 'listener' && !again) notes.push({ kind: 'listener' });
      if (again) notes.push({ kind: 'reconnected' });
      return next;
    }
    case 'participant_joined': {
      const p = ev.participant;
      if (!p || String(p.id) === String(s.you)) return s;
      const participants = new Map(s.participants).set(String(p.id), cleanParticipant(p));
      if (participants.size < FEW_PEOPLE) notes.push({ kind: 'joined', name: String(p.name ?? '') });
      return { ...s, participants };
    }
    case 'participant_left': {
      const id = String(ev.id);
      const p = s.participants.get(id);
      if (!p) return s;
      const participants = new Map(s.participants);
      participants.delete(id);
      const speaking = new Set(s.speaking);
      speaking.delete(id);
      const spokeAt = new Map(s.spokeAt);
      spokeAt.delete(id);
      if (participants.size < FEW_PEOPLE) notes.push({ kind: 'left', name: p.name });
      return { ...s, participants, speaking, spokeAt };
    }
    case 'state': {
      const id = String(ev.id);
      const p = s.participants.get(id);
      if (!p) return s; // our own echo, or someone we do not know yet
      const next = { ...p, audio: !!ev.audio, video: !!ev.video, screen: !!ev.screen, hand: !!ev.hand };
      if (next.hand && !p.hand && moderates(s)) notes.push({ kind: 'hand', name: p.name });
      const speaking = next.audio ? s.speaking : without(s.speaking, id);
      return { ...s, participants: new Map(s.participants).set(id, next), speaking };
    }
    case 'chat': {
      if (!ev.message || typeof ev.message.text !== 'string') return s;
      const next = { ...s, chat: [...s.chat], chatKeys: new Set(s.chatKeys) };
      const [entry] = mergeChat(next, [ev.message], now);
      if (!entry) return s;
      notes.push({ kind: 'chat', mine: s.myIds.has(String(entry.from)), entry });
      return next;
    }
    case 'rooms': {
      const rooms = roomsFrom(ev);
      const was = roomOf(s.rooms, s.you);
      const now_ = roomOf(rooms, s.you);
      if (s.rooms && !rooms) notes.push({ kind: 'rooms_closed' });
      else if (rooms && now_ !== was) notes.push({ kind: 'room', room: now_ });
      return { ...s, rooms };
    }
    case 'recording': {
      const recording = recordingFrom(ev);
      if (ev.problem) notes.push({ kind: 'recording_problem', problem: String(ev.problem) });
      else if (recording && !s.recording) notes.push({ kind: 'recording_started', by: recording.by });
      else if (!recording && s.recording) notes.push({ kind: 'recording_stopped' });
      return { ...s, recording };
    }
    case 'spotlight': {
      const key = typeof ev.key === 'string' && ev.key ? ev.key : null;
      if (key === s.spotlight) return s;
      const p = key ? [...s.participants.values()].find((x) => x.key === key) : null;
      notes.push(key ? { kind: 'spotlight', key, name: p ? p.name : '' } : { kind: 'spotlight_off' });
      return { ...s, spotlight: key };
    }
    case 'speaking': {
      // The node says who speaks (loudest first). Only people we know, whose microphone
      // is on, are shown speaking.
      const ids = [...(ev.ids || [])].map(String).filter((id) => {
        const p = s.participants.get(id);
        return p && p.audio;
      });
      const speaking = new Set(ids);
      if (speaking.size === s.speaking.size && ids.every((id) => s.speaking.has(id))) return s;
      const spokeAt = new Map(s.spokeAt);
      for (const id of ids) spokeAt.set(id, now);
      return { ...s, speaking, spokeAt };
    }
    case 'granted':
      return s.role === 'host' ? s : { ...s, role: 'moderator' };
    case 'lobby':
      return { ...s, connection: 'waiting' };
    case 'media':
      // Audio and video flow (again), or were interrupted (the network went away).
      if (!s.joined) return s;
      if (ev.connected) return { ...s, connection: 'connected', attempt: 0, lost: null };
      return { ...s, connection: 'interrupted' };
    case 'lost': {
      const attempt = s.attempt + 1;
      return {
        ...withoutRemote(s),
        joined: false,
        you: null,
        connection: 'reconnecting',
        attempt,
        lost: { reason: String(ev.reason || ''), stage: String(ev.stage || ''), attempt },
      };
    }
    case 'ended':
      return { ...withoutRemote(s), joined: false, you: null, connection: ev.connection || 'left' };
    default:
      return s;
  }
}

function without(set, id) {
  if (!set.has(id)) return set;
  const next = new Set(set);
  next.delete(id);
  return next;
}

/** Append the chat messages not seen yet (history after a reconnect repeats what we
 * kept) and return them. `s.chat` and `s.chatKeys` must be the caller's own copies. */
function mergeChat(s, list, now) {
  const added = [];
  for (const m of list) {
    if (!m || typeof m.text !== 'string') continue;
    const entry = chatEntry(m, now);
    const key = chatKey(entry);
    if (s.chatKeys.has(key)) continue;
    s.chatKeys.add(key);
    s.chat.push(entry);
    added.push(entry);
  }
  return added;
}
