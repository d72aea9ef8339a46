// Breakout rooms on the page: who is in which (from the node's `rooms` message), the
// countdown, and the host's dialog that opens them. Opening, moving people and closing
// are signed actions (`open_rooms`, `assign`, `close_rooms`) that every node checks; the
// node then keeps each person's media and chat to their room.

import { h, openDialog } from './ui.js';

/** The rooms from a `rooms` message: {count, untilMs, of: Map(participant id → room)};
 * null when closed. */
export function roomsFrom(msg) {
  const count = Number(msg.count) || 0;
  if (count <= 0) return null;
  const of = new Map(Object.entries(msg.rooms || {}).map(([id, room]) => [String(id), Number(room) || 0]));
  return { count, untilMs: Number(msg.until_ms) || 0, choose: !!msg.choose, of };
}

/** The room participant `id` is in (0: the main room). */
export function roomOf(rooms, id) {
  return (rooms && rooms.of.get(String(id))) || 0;
}

/** Spread `keys` over rooms 1..count at random, as evenly as they go: Map(key → room). */
export function randomRooms(keys, count, random = Math.random) {
  const shuffled = [...keys];
  for (let i = shuffled.length - 1; i > 0; i -= 1) {
    const j = Math.floor(random() * (i + 1));
    [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
  }
  return new Map(shuffled.map((k, i) => [k, (i % count) + 1]));
}

/** Milliseconds left as "4:05" (never below 0:00). */
export function countdown(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/** The select in the room bar with which someone picks their own room (rooms open for
 * people to choose): `pick(room)` when they change it. */
export function roomPicker(rooms, mine, pick) {
  const sel = h('select', { id: 'room-pick', 'aria-label': 'Choose your room', onchange: () => pick(Number(sel.value) || 0) },
    h('option', { value: '0', text: 'Main room' }),
    ...Array.from({ length: rooms.count }, (_, i) => h('option', { value: String(i + 1), text: `Room ${i + 1}` })));
  sel.value = String(mine);
  return sel;
}

/** What the room bar says for someone in `room`, with `left` ms to go. */
export function roomBarText(room, left) {
  const when = countdown(left);
  return room ? `Breakout room ${room} · back to the main room in ${when}` : `Main room · breakout rooms close in ${when}`;
}

/**
 * The host's (or a moderator's) dialog. `people`: [{key, name}] (everyone but the one
 * opening it); `rooms`: the rooms open now (roomsFrom) and `roomOfKey(key)`; callbacks:
 * `open(count, minutes, assignment Map(key → room), choose)`, `move(key, room)`, `visit(room)`,
 * `close()`, `announce(text)` (a message to every room). Each returns a promise; the dialog
 * closes once it resolves.
 */
export function roomsDialog({ people, rooms, roomOfKey, open, move, visit, close, announce }) {
  let dlg;
  const done = (p) => Promise.resolve(p).then(() => dlg.close()).catch(() => {});
  const body = h('div', { class: 'rooms-dialog' });
  if (!rooms) {
    const count = h('input', { id: 'rooms-count', type: 'number', min: '1', max: '50', value: '2', 'aria-label': 'Rooms' });
    const minutes = h('input', { id: 'rooms-minutes', type: 'number', min: '0.5', max: '720', step: 'any', value: '10', 'aria-label': 'Minutes' });
    const byHand = h('input', { id: 'rooms-by-hand', type: 'checkbox' });
    const choose = h('input', { id: 'rooms-choose', type: 'checkbox' });
    const picks = new Map();
    const list = h('ul', { class: 'rooms-people', hidden: true }, ...people.map((p) => {
      const sel = h('select', { dataset: { key: p.key }, 'aria-label': `Room for ${p.name}` });
      picks.set(p.key, sel);
      return h('li', {}, h('span', { text: p.name }), sel);
    }));
    const fill = () => {
      const n = Math.max(1, Math.min(50, Number(count.value) || 1));
      const random = randomRooms(people.map((p) => p.key), n);
      for (const [key, sel] of picks) {
        const keep = Number(sel.value) || random.get(key);
        sel.replaceChildren(h('option', { value: '0', text: 'Main room' }),
          ...Array.from({ length: n }, (_, i) => h('option', { value: String(i + 1), text: `Room ${i + 1}` })));
        sel.value = String(keep <= n ? keep : random.get(key));
      }
    };
    count.addEventListener('input', fill);
    byHand.addEventListener('change', () => { list.hidden = !byHand.checked; if (byHand.checked) choose.checked = false; });
    choose.addEventListener('change', () => { if (choose.checked) { byHand.checked = false; list.hidden = true; } });
    fill();
    body.append(
      h('label', { class: 'field' }, h('span', { text: 'Rooms' }), count),
      h('label', { class: 'field' }, h('span', { text: 'Minutes (then everyone comes back)' }), minutes),
      h('label', { class: 'check', for: 'rooms-by-hand' }, byHand, h('span', { text: 'Choose who goes where (otherwise at random)' })),
      h('label', { class: 'check', for: 'rooms-choose' }, choose, h('span', { text: 'Let people choose their room' })),
      list,
      h('button', { id: 'rooms-open', class: 'btn btn-primary', type: 'button', text: 'Open rooms', onclick: () => {
        const n = Math.max(1, Math.min(50, Number(count.value) || 1));
        const m = Math.max(0.1, Math.min(720, Number(minutes.value) || 10));
        let assignment = new Map();
        if (byHand.checked) assignment = new Map([...picks].map(([key, sel]) => [key, Number(sel.value) || 0]));
        else if (!choose.checked) assignment = randomRooms(people.map((p) => p.key), n);
        done(open(n, m, assignment, choose.checked));
      } }));
  } else {
    const rows = people.map((p) => {
      const sel = h('select', { dataset: { key: p.key }, 'aria-label': `Room for ${p.name}`,
        onchange: () => move(p.key, Number(sel.value) || 0) },
      h('option', { value: '0', text: 'Main room' }),
      ...Array.from({ length: rooms.count }, (_, i) => h('option', { value: String(i + 1), text: `Room ${i + 1}` })));
      sel.value = String(roomOfKey(p.key));
      return h('li', {}, h('span', { text: p.name }), sel);
    });
    const note = h('input', { id: 'rooms-announce-text', type: 'text', maxlength: '2000',
      placeholder: 'Five minutes left!', 'aria-label': 'Message to every room' });
    body.append(
      h('p', { text: `${rooms.count} rooms open. Move people, or visit a room to see and hear it.` }),
      h('form', { class: 'field', onsubmit: (ev) => { ev.preventDefault(); if (note.value.trim()) done(announce(note.value.trim())); } },
        note, h('button', { id: 'rooms-announce', class: 'btn btn-secondary btn-small', type: 'submit', text: 'Send to every room' })),
      h('ul', { class: 'rooms-people' }, ...rows),
      h('div', { class: 'rooms-visit' },
        h('button', { class: 'btn btn-secondary btn-small', type: 'button', dataset: { visit: '0' }, text: 'Main room', onclick: () => done(visit(0)) }),
        ...Array.from({ length: rooms.count }, (_, i) => h('button', { class: 'btn btn-secondary btn-small', type: 'button',
          dataset: { visit: String(i + 1) }, text: `Visit room ${i + 1}`, onclick: () => done(visit(i + 1)) }))),
      h('button', { id: 'rooms-close', class: 'btn btn-danger', type: 'button', text: 'Bring everyone back', onclick: () => done(close()) }));
  }
  dlg = openDialog('Breakout rooms', body);
  return dlg;
}
