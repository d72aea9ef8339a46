// The roster's rules, one node message at a time (run: node --test crates/veche-web/tests/js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { emptyRoster, update, FEW_PEOPLE, sameRoom, galleryOrder, SPEAKERS_FIRST_FROM, spotlit } from '../../assets/roster.js';

const T = 1_700_000_000_000;
const ada = { id: 1, name: 'Ada', audio: true, video: true, key: 'a-key' };
const bob = { id: 2, name: 'Bob', audio: true, video: false, key: 'b-key' };

/** Feed events in order; returns the last state and every note. */
function run(events, s = emptyRoster('Lesson')) {
  const notes = [];
  for (const ev of events) {
    const out = update(s, ev, T);
    s = out.state;
    notes.push(...out.notes);
  }
  return { s, notes };
}

const welcome = (extra = {}) => ({ type: 'welcome', you: 7, participants: [ada, bob, { id: 7, name: 'Me' }], chat: [], ...extra });

test('a welcome lists the others, never ourselves, and says we are connected', () => {
  const { s, notes } = run([welcome({ meeting: { title: 'Maths' }, role: 'host' })]);
  assert.deepEqual([...s.participants.keys()], ['1', '2']);
  assert.equal(s.participants.get('1').name, 'Ada');
  assert.equal(s.joined, true);
  assert.equal(s.connection, 'connected');
  assert.equal(s.title, 'Maths');
  assert.equal(s.role, 'host');
  assert.deepEqual(notes, []);
});

test('the state before an update is never changed', () => {
  const before = run([welcome()]).s;
  const snapshot = [...before.participants.keys()];
  const after = update(before, { type: 'participant_left', id: 1 }, T).state;
  assert.deepEqual([...before.participants.keys()], snapshot);
  assert.deepEqual([...after.participants.keys()], ['2']);
});

test('a loss forgets everyone, counts the attempt and keeps the chat; the next welcome says reconnected', () => {
  const said = { from: 1, name: 'Ada', text: 'hello', at: T - 5000 };
  const { s: lost } = run([welcome({ chat: [said] }), { type: 'lost', reason: 'timeout', stage: 'joined' }]);
  assert.equal(lost.participants.size, 0);
  assert.equal(lost.joined, false);
  assert.equal(lost.connection, 'reconnecting');
  assert.deepEqual(lost.lost, { reason: 'timeout', stage: 'joined', attempt: 1 });
  assert.equal(lost.chat.length, 1);
  const later = { from: 2, name: 'Bob', text: 'while you were away', at: T - 1000 };
  const earlier = { from: 2, name: 'Bob', text: 'before that', at: T - 9000 };
  const { s: back, notes } = run([welcome({ chat: [said, later, earlier] })], lost);
  assert.deepEqual(notes.map((n) => n.kind), ['reconnected']);
  assert.equal(back.connection, 'connected');
  // Counted until audio and video connect too.
  assert.equal(back.attempt, 1);
  const { s } = run([{ type: 'media', connected: true }], back);
  assert.equal(s.attempt, 0);
  assert.equal(s.lost, null);
  // History repeats what we kept: no duplicate, in time order.
  assert.deepEqual(s.chat.map((m) => m.text), ['before that', 'hello', 'while you were away']);
});

test('an attempt welcomed whose audio and video never connect counts, so the banner says why', () => {
  let { s } = run([welcome(), { type: 'media', connected: true }]);
  for (let i = 0; i < 3; i += 1) s = run([{ type: 'lost', reason: 'media', stage: 'media' }, welcome()], s).s;
  assert.equal(s.attempt, 3);
  const { s: lost } = run([{ type: 'lost', reason: 'media', stage: 'media' }], s);
  assert.deepEqual(lost.lost, { reason: 'media', stage: 'media', attempt: 4 });
});

test('interrupted audio and video are said, and back is connected again, the same participant', () => {
  const { s } = run([welcome(), { type: 'media', connected: true }, { type: 'media', connected: false }]);
  assert.equal(s.connection, 'interrupted');
  assert.equal(s.you, 7);
  assert.equal(s.participants.size, 2, 'nobody is forgotten while interrupted');
  const { s: back, notes } = run([{ type: 'media', connected: true }], s);
  assert.equal(back.connection, 'connected');
  assert.deepEqual(notes, []);
  // Before a welcome (or after a loss) there is nothing to interrupt.
  const { s: early } = run([{ type: 'media', connected: false }]);
  assert.equal(early.connection, 'connecting');
});

test('a listener is told so once, not at every reconnect', () => {
  const first = run([welcome({ role: 'listener' })]);
  assert.deepEqual(first.notes.map((n) => n.kind), ['listener']);
  const again = run([{ type: 'lost' }, welcome({ role: 'listener' })], first.s);
  assert.deepEqual(again.notes.map((n) => n.kind), ['reconnected']);
});

test('joins and leaves are announced only in a small meeting', () => {
  const { notes } = run([welcome(), { type: 'participant_joined', participant: { id: 3, name: 'Cy' } }, { type: 'participant_left', id: 3 }]);
  assert.deepEqual(notes, [{ kind: 'joined', name: 'Cy' }, { kind: 'left', name: 'Cy' }]);
  const many = Array.from({ length: FEW_PEOPLE + 2 }, (_, i) => ({ id: 100 + i, name: `P${i}` }));
  const big = run([welcome({ participants: many }), { type: 'participant_joined', participant: { id: 3, name: 'Cy' } }]);
  assert.equal(big.s.participants.size, FEW_PEOPLE + 3);
  assert.deepEqual(big.notes, []);
});

test('our own join echo and a stranger leaving change nothing', () => {
  const { s } = run([welcome()]);
  assert.equal(update(s, { type: 'participant_joined', participant: { id: 7, name: 'Me' } }, T).state, s);
  assert.equal(update(s, { type: 'participant_left', id: 99 }, T).state, s);
  assert.equal(update(s, { type: 'state', id: 99, audio: true }, T).state, s);
});

test('a raised hand is a note for the host and moderators only, and only when it goes up', () => {
  const raise = { type: 'state', id: 2, audio: true, hand: true };
  const host = run([welcome({ role: 'host' }), raise, raise]);
  assert.deepEqual(host.notes, [{ kind: 'hand', name: 'Bob' }]);
  assert.equal(host.s.participants.get('2').hand, true);
  const speaker = run([welcome({ role: 'speaker' }), raise]);
  assert.deepEqual(speaker.notes, []);
  const promoted = run([welcome({ role: 'speaker' }), { type: 'granted' }, raise]);
  assert.equal(promoted.s.role, 'moderator');
  assert.deepEqual(promoted.notes, [{ kind: 'hand', name: 'Bob' }]);
});

test('chat: each message once, ours marked', () => {
  const m = { from: 7, name: 'Me', text: 'hi', at: T };
  const { s, notes } = run([welcome(), { type: 'chat', message: m }, { type: 'chat', message: m }, { type: 'chat', message: { from: 1, text: 'yo', at: T } }]);
  assert.deepEqual(s.chat.map((c) => c.text), ['hi', 'yo']);
  assert.deepEqual(notes.map((n) => [n.kind, n.mine]), [['chat', true], ['chat', false]]);
  // A message without text is not chat.
  assert.equal(update(s, { type: 'chat', message: { from: 1, at: T } }, T).state, s);
});

test('breakout rooms: we are told our room, and when everyone is back', () => {
  const open = { type: 'rooms', count: 2, until_ms: T + 60000, rooms: { 7: 1, 1: 1, 2: 2 } };
  const { s, notes } = run([welcome(), open]);
  assert.deepEqual(notes, [{ kind: 'room', room: 1 }]);
  assert.equal(sameRoom(s, 1), true);
  assert.equal(sameRoom(s, 2), false);
  const closed = update(s, { type: 'rooms', count: 0 }, T);
  assert.deepEqual(closed.notes, [{ kind: 'rooms_closed' }]);
  assert.equal(sameRoom(closed.state, 2), true);
});

test('recording: started, stopped and a problem are each a note', () => {
  const { s, notes } = run([welcome(), { type: 'recording', on: true, by: 'Ada', since_ms: T },
    { type: 'recording', on: false }, { type: 'recording', on: false, problem: 'the disk is full' }]);
  assert.equal(s.recording, null);
  assert.deepEqual(notes, [{ kind: 'recording_started', by: 'Ada' }, { kind: 'recording_stopped' }, { kind: 'recording_problem', problem: 'the disk is full' }]);
});

test('speaking: only people we know with their microphone on; an unchanged set is the same state', () => {
  const { s } = run([welcome(), { type: 'state', id: 2, audio: false }]);
  const next = update(s, { type: 'speaking', ids: [1, 2, 99] }, T).state;
  assert.deepEqual([...next.speaking], ['1']);
  assert.equal(update(next, { type: 'speaking', ids: ['1'] }, T).state, next);
  // Turning the microphone off stops the highlight; leaving too.
  assert.equal(update(next, { type: 'state', id: 1, audio: false }, T).state.speaking.size, 0);
  assert.equal(update(next, { type: 'participant_left', id: 1 }, T).state.speaking.size, 0);
});

test('the lobby and the end are connection states', () => {
  assert.equal(run([{ type: 'lobby' }]).s.connection, 'waiting');
  const ended = run([welcome(), { type: 'ended', connection: 'failed' }]).s;
  assert.equal(ended.connection, 'failed');
  assert.equal(ended.joined, false);
  assert.equal(ended.participants.size, 0);
});

test('in a larger meeting the latest speakers come first; a small one keeps its order', () => {
  const many = Array.from({ length: SPEAKERS_FIRST_FROM + 3 }, (_, i) => ({ id: i + 1, name: `P${i + 1}`, audio: true }));
  let { s } = run([welcome({ participants: many })]);
  assert.deepEqual(galleryOrder(s).slice(0, 3).map((p) => p.id), [1, 2, 3], 'nobody spoke: as they joined');
  s = update(s, { type: 'speaking', ids: [8] }, T).state;
  s = update(s, { type: 'speaking', ids: [4] }, T + 1000).state;
  assert.deepEqual(galleryOrder(s).slice(0, 4).map((p) => p.id), [4, 8, 1, 2]);
  assert.equal(galleryOrder(s).length, many.length - 1, 'nobody dropped (we are not in it)');
  const few = run([welcome()]).s;
  const after = update(few, { type: 'speaking', ids: [2] }, T).state;
  assert.deepEqual(galleryOrder(after).map((p) => p.id), [1, 2], 'a small meeting does not reshuffle');
  // Someone who leaves is forgotten.
  assert.equal(update(s, { type: 'participant_left', id: 4 }, T).state.spokeAt.has('4'), false);
});

test('spotlight: the host puts someone on the stage by key, a repeat is the same state, a new welcome forgets it', () => {
  const { s, notes } = run([welcome(), { type: 'spotlight', key: 'b-key' }]);
  assert.equal(s.spotlight, 'b-key');
  assert.equal(spotlit(s).name, 'Bob');
  assert.deepEqual(notes, [{ kind: 'spotlight', key: 'b-key', name: 'Bob' }]);
  assert.equal(update(s, { type: 'spotlight', key: 'b-key' }, T).state, s);
  // Someone not here (yet): kept, nobody on the stage until they come.
  const away = update(s, { type: 'spotlight', key: 'z-key' }, T).state;
  assert.equal(spotlit(away), null);
  const off = update(s, { type: 'spotlight', key: null }, T);
  assert.equal(off.state.spotlight, null);
  assert.deepEqual(off.notes, [{ kind: 'spotlight_off' }]);
  // Garbage is no spotlight.
  assert.equal(update(s, { type: 'spotlight', key: 42 }, T).state.spotlight, null);
  assert.equal(run([welcome()], s).s.spotlight, null, 'the node says it again after a welcome');
});
