// Recording: the bar everyone sees while the meeting is recorded, the question a joiner is
// asked before their camera and microphone go out, and the host's list of recordings.

import { h, openDialog, formatTime } from './ui.js';
import { signChallenge } from './keys.js';

/** The recording state in a `welcome` or `recording` message: {by, sinceMs}, or null. */
export function recordingFrom(msg) {
  const r = msg && (msg.type === 'recording' ? (msg.on ? msg : null) : msg.recording);
  if (!r) return null;
  return { by: String(r.by ?? ''), sinceMs: Number(r.since_ms) || 0 };
}

/** What the bar says while recording. */
export function recordingText(state) {
  if (!state) return '';
  const by = state.by ? ` — started by ${state.by}` : '';
  const at = state.sinceMs ? ` at ${formatTime(state.sinceMs)}` : '';
  return `● Recording${by}${at}. Everyone's voice and the main picture are being saved.`;
}

/**
 * Ask someone joining a recorded meeting whether to go on before anything of theirs is
 * sent. Resolves to 'join' or 'leave'.
 */
export function askBeforeJoining(state) {
  return new Promise((resolve) => {
    let answered = false;
    const answer = (choice) => () => {
      if (answered) return;
      answered = true;
      dlg.close();
      resolve(choice);
    };
    const body = h('div', { class: 'recording-consent' },
      h('p', { text: `This meeting is being recorded${state.by ? ` (started by ${state.by})` : ''}. If you join, your voice and, when you are on the main picture, your camera or screen are saved in the recording.` }),
      h('div', { class: 'dialog-actions' },
        h('button', { class: 'btn btn-secondary', type: 'button', dataset: { consent: 'leave' }, text: 'Leave', onclick: answer('leave') }),
        h('button', { class: 'btn btn-primary', type: 'button', dataset: { consent: 'join' }, text: 'Join the recorded meeting', onclick: answer('join') })));
    // Closing the box without choosing is not a yes.
    const dlg = openDialog('This meeting is being recorded', body, { onClose: () => { if (!answered) { answered = true; resolve('leave'); } } });
  });
}

/** The host's recordings on this node, each a download link (the node made each link for them). */
export function recordingsDialog(msg) {
  const list = Array.isArray(msg.list) ? msg.list : [];
  const body = list.length
    ? h('ul', { class: 'recordings-list' }, ...list.map((r) => h('li', {},
      r.recording || !r.url
        ? h('span', { text: `${String(r.name ?? '')} (still recording)` })
        : h('a', { href: String(r.url), download: String(r.name ?? 'recording.webm'), dataset: { recording: String(r.name ?? '') }, text: String(r.name ?? '') }),
      h('span', { class: 'person-key', text: ` · ${Math.max(1, Math.round((Number(r.bytes) || 0) / 1048576))} MB` }))))
    : h('p', { text: 'No recordings of this meeting on this node yet.' });
  openDialog('Recordings', h('div', { class: 'recordings-dialog' }, body,
    h('p', { class: 'person-key', text: 'The files play in any browser or video player. Links work for ten minutes; open this list again for new ones.' })));
}

/**
 * The host's recordings of `meetingId` when the meeting is over (nobody joins an ended
 * meeting): a socket of its own, the node's challenge signed with the host's key, and the
 * list in the usual dialog. Rejects with the node's words.
 */
export async function recordingsAfterEnd(meetingId) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${proto}//${location.host}/ws`);
  try {
    const msg = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the node did not answer')), 20000);
      ws.onerror = () => { clearTimeout(timer); reject(new Error('the node cannot be reached')); };
      ws.onmessage = (ev) => {
        let m;
        try { m = JSON.parse(ev.data); } catch { return; }
        if (m && m.type === 'challenge') {
          signChallenge(String(m.node ?? ''), meetingId, String(m.nonce ?? ''))
            .then(({ key, sig }) => ws.send(JSON.stringify({ type: 'recordings', meeting: meetingId, key, sig })))
            .catch((err) => { clearTimeout(timer); reject(err); });
        } else if (m && (m.type === 'recordings' || m.type === 'error')) {
          clearTimeout(timer);
          resolve(m);
        }
      };
    });
    if (msg.type === 'error') throw new Error(String(msg.message || msg.code));
    recordingsDialog(msg);
  } finally {
    ws.close();
  }
}
