// The people panel: everyone in our meeting (their room, key fingerprint, hand, screen,
// microphone and camera), the host's and moderators' buttons, who waits in the lobby,
// and the other veche nodes carrying the meeting with the media path to each.

import { h, icon, initials, hueFor } from './ui.js';
import { fingerprint } from './keys.js';
import { roomOf } from './rooms.js';
import { moderates } from './roster.js';

/** A line about another node of the meeting: its people, media path and figures. */
export function nodeLine(n) {
  const ms = typeof n.media_rtt_ms === 'number' ? n.media_rtt_ms : n.rtt_ms;
  const rtt = typeof ms === 'number' ? ` · ${Math.round(ms)} ms` : '';
  const rate = n.media === 'connected' ? ` · ↑${Math.round(n.kbps_out || 0)} ↓${Math.round(n.kbps_in || 0)} kbit/s` : '';
  const lossPct = Math.max(n.loss_in || 0, n.loss_out || 0) * 100;
  const loss = lossPct >= 0.5 ? ` · ${lossPct.toFixed(1)}% loss` : '';
  const via = n.via ? ` via ${String(n.via).slice(-8)}` : '';
  const tcp = n.transport === 'tcp' ? ' over TCP' : '';
  const path = n.media === 'connected' ? `media ${n.path}${tcp}${via}${n.media_address ? ` (${n.media_address})` : ''}` : 'media connecting…';
  return {
    who: `${n.name || String(n.id).slice(-8)} · ${n.participants} ${n.participants === 1 ? 'person' : 'people'}`,
    path: ` ${path}, control ${n.control || '?'}${rtt}${rate}${loss}`,
  };
}

/** What the people panel says after "(You)" of our media's path: only TCP is worth a word. */
export function ownPath(transport) {
  return transport === 'tcp' ? ' · media over TCP' : '';
}

const button = (kind, text, action, onclick, extra = {}) => h('button', {
  class: `btn ${kind} btn-small`, type: 'button', dataset: { action }, text, onclick, ...extra,
});

export class PeoplePanel {
  constructor({ close }) {
    this.title = h('h2', { text: 'People' });
    this.list = h('ul', { class: 'people-list' });
    this.el = h('aside', { id: 'panel-people', class: 'panel', hidden: true, 'aria-label': 'People' },
      h('div', { class: 'panel-head' }, this.title,
        h('button', { class: 'icon-btn', type: 'button', 'aria-label': 'Close people', onclick: close }, icon('close'))),
      this.list);
  }

  /**
   * Redraw. view: {roster, name, me (our {audio, video, screen, hand}), myFp, newKeys
   * (keys this browser saw before under another name's key), nodes, transport (ours:
   * 'udp', 'tcp' or null)}; mod: the Moderation;
   * ask: {recordings(), attendance()}.
   */
  render(view, mod, ask) {
    const s = view.roster;
    const n = s.participants.size + 1;
    this.title.textContent = `People (${n})`;
    const rows = [{ name: view.name, you: true, fp: view.myFp, ...view.me }, ...s.participants.values()];
    const mayModerate = moderates(s);
    this.list.replaceChildren(...rows.map((p) => {
      const stateIcon = (on, onName, offName, what) => h('span', {
        class: `state-icon ${on ? '' : 'off'}`, role: 'img', 'aria-label': `${what} ${on ? 'on' : 'off'}`,
      }, icon(on ? onName : offName));
      const avatar = h('span', { class: 'avatar small', 'aria-hidden': 'true', text: initials(p.name) });
      avatar.style.setProperty('--hue', hueFor(p.name));
      const fp = p.you ? p.fp : (p.key ? fingerprint(p.key) : '');
      const room = s.rooms ? roomOf(s.rooms, p.you ? s.you : p.id) : 0;
      const muted = mod.silencedKeys.has(p.key);
      return h('li', { class: 'person', dataset: p.you ? { you: '1' } : { participant: String(p.id) } },
        avatar,
        h('span', { class: 'person-name' }, h('span', { text: p.name }), p.you ? h('span', { class: 'person-you', text: ' (You)' }) : null,
          p.you && ownPath(view.transport) ? h('span', { class: 'person-path', title: 'UDP does not get through to the node: audio and video go over TCP, which can lag on a busy network', text: ownPath(view.transport) }) : null,
          s.rooms ? h('span', { class: 'person-room', text: ` · ${room ? `room ${room}` : 'main room'}` }) : null,
          fp ? h('span', { class: 'person-key', title: 'Key fingerprint: the same person shows the same one every time', text: ` · ${fp}` }) : null,
          !p.you && view.newKeys.has(p.key) ? h('span', { class: 'person-newkey', title: 'This browser saw this name before with a different key: another person, or a new device', text: ' · new key' }) : null),
        (!p.you && mayModerate && p.key) ? h('span', { class: 'person-actions' },
          button('btn-secondary', muted ? 'Allow' : 'Mute', muted ? 'allow' : 'mute', () => mod.moderate(muted ? 'allow' : 'mute', p)),
          button('btn-secondary', s.spotlight === p.key ? 'End spotlight' : 'Spotlight', s.spotlight === p.key ? 'end_spotlight' : 'spotlight',
            () => mod.moderate(s.spotlight === p.key ? 'end_spotlight' : 'spotlight', s.spotlight === p.key ? null : p),
            { title: 'Put their camera on everyone\'s stage' }),
          button('btn-secondary', 'Remove', 'remove', () => mod.moderate('remove', p)),
          s.role === 'host' ? button('btn-secondary', mod.promoted.has(p.key) ? 'Moderator' : 'Make moderator', 'promote',
            () => mod.promote(p), { disabled: mod.promoted.has(p.key) }) : null) : null,
        h('span', { class: 'person-icons' },
          p.hand ? h('span', { class: 'state-icon on hand-up', role: 'img', 'aria-label': 'Hand raised' }, icon('hand')) : null,
          p.screen ? h('span', { class: 'state-icon on', role: 'img', 'aria-label': 'Sharing screen' }, icon('screen')) : null,
          stateIcon(p.audio, 'mic', 'micOff', 'Microphone'),
          stateIcon(p.video, 'cam', 'camOff', 'Camera')));
    }));
    if (mayModerate) {
      const host = s.role === 'host';
      this.list.prepend(h('li', { class: 'person host-actions' },
        h('span', { class: 'person-actions' },
          button('btn-secondary', mod.locked ? 'Unlock meeting' : 'Lock meeting', mod.locked ? 'unlock' : 'lock',
            () => mod.moderate(mod.locked ? 'unlock' : 'lock', null)),
          button('btn-secondary', s.rooms ? 'Breakout rooms (open)' : 'Breakout rooms', 'rooms', () => mod.roomsDialog()),
          s.spotlight ? button('btn-secondary', 'End spotlight', 'end_spotlight', () => mod.moderate('end_spotlight', null))
            : button('btn-secondary', 'Spotlight me', 'spotlight_me', () => mod.moderate('spotlight', null),
              { title: 'Put your camera on everyone\'s stage' }),
          button('btn-secondary', s.recording ? 'Stop recording' : 'Record', 'record', () => ask.toggleRecording(),
            { title: 'Record the meeting on this node: the main picture and everyone\'s voice' }),
          host ? button('btn-secondary', 'Recordings', 'recordings', () => ask.recordings(), { title: 'Download this meeting\'s recordings' }) : null,
          button('btn-danger', 'End for everyone', 'end', () => mod.moderate('end', null)),
          host ? button('btn-secondary', 'Attendance (CSV)', 'attendance', () => ask.attendance(),
            { title: 'Save who was in this meeting on this node, and when, as a spreadsheet file' }) : null,
          host ? button('btn-danger', mod.deleteArmed ? 'Click again to delete' : 'End and delete', 'delete', () => mod.deleteMeeting(),
            { title: 'End the meeting for everyone and delete it from this node now: this cannot be undone' }) : null)));
    }
    if (mod.waiting.size) {
      this.list.prepend(h('li', { class: 'people-nodes-head', text: `Waiting to join (${mod.waiting.size})` }),
        ...[...mod.waiting.values()].map((w) => h('li', { class: 'person waiting', dataset: { waiting: w.key } },
          h('span', { class: 'person-name' }, h('span', { text: w.name }), h('span', { class: 'person-key', text: ` · ${fingerprint(w.key)}` })),
          h('span', { class: 'person-actions' },
            h('button', { class: 'btn btn-primary btn-small', type: 'button', dataset: { action: 'admit' }, text: 'Admit', onclick: () => mod.moderate('admit', w) }),
            h('button', { class: 'btn btn-secondary btn-small', type: 'button', dataset: { action: 'deny' }, text: 'Deny', onclick: () => mod.moderate('deny', w) })))));
    }
    if (view.nodes.length) {
      // Where the others are: one line per other node, with the media path to it.
      this.list.append(h('li', { class: 'people-nodes-head', text: 'Other veche nodes in this meeting' }),
        ...view.nodes.map((node) => {
          const line = nodeLine(node);
          return h('li', { class: 'person node-row', dataset: { node: node.id } },
            h('span', { class: 'person-name' }, h('span', { text: line.who }), h('span', { class: 'node-path', text: line.path })));
        }));
    }
  }
}
