// The chat panel: the log (links made clickable, never HTML), the input (Enter sends,
// Shift+Enter is a new line) and the length rule the node enforces.

import { h, icon, formatTime } from './ui.js';

/** The node refuses longer messages (`bad_chat`). */
export const MAX_CHAT_CHARS = 2000;

/** Text as pieces: `{text}` and `{url}` (http and https only; sentence punctuation after
 * a link is not part of it). */
export function splitLinks(text) {
  const out = [];
  const re = /https?:\/\/[^\s<>"']+/g;
  let last = 0;
  let m;
  while ((m = re.exec(text))) {
    let url = m[0];
    const trail = url.match(/[.,;:!?)\]]+$/);
    if (trail) url = url.slice(0, -trail[0].length);
    if (m.index > last) out.push({ text: text.slice(last, m.index) });
    out.push({ url });
    last = m.index + url.length;
    re.lastIndex = last;
  }
  if (last < text.length) out.push({ text: text.slice(last) });
  return out;
}

/** Why a draft cannot be sent (null: it can), in words. */
export function draftProblem(text) {
  if (!text) return 'empty';
  if ([...text].length > MAX_CHAT_CHARS) return 'Chat messages must be 1 to 2000 characters.';
  return null;
}

export class ChatPanel {
  /** `send(text)` returns whether the message went out; `refuse(why)` tells the person
   * why a draft cannot go; `close()` hides the panel. */
  constructor({ send, refuse, close }) {
    this.log = h('div', { id: 'chat-log', class: 'chat-log', role: 'log', 'aria-live': 'polite', 'aria-label': 'Chat messages' });
    this.input = h('textarea', {
      id: 'chat-input', class: 'chat-input', rows: '1', maxlength: String(MAX_CHAT_CHARS),
      placeholder: 'Message everyone', 'aria-label': 'Chat message', enterkeyhint: 'send',
    });
    const sendBtn = h('button', { id: 'chat-send', class: 'icon-btn chat-send', type: 'submit', 'aria-label': 'Send message' }, icon('send'));
    this.send = send;
    this.refuse = refuse;
    this.input.addEventListener('keydown', (ev) => {
      // Enter sends, Shift+Enter is a new line; never send mid-IME composition.
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
        ev.preventDefault();
        this.submit();
      }
    });
    this.input.addEventListener('input', () => this.autosize());
    this.el = h('aside', { id: 'panel-chat', class: 'panel', hidden: true, 'aria-label': 'Chat' },
      h('div', { class: 'panel-head' }, h('h2', { text: 'Chat' }),
        h('button', { class: 'icon-btn', type: 'button', 'aria-label': 'Close chat', onclick: close }, icon('close'))),
      this.log,
      h('form', { class: 'chat-form', onsubmit: (ev) => { ev.preventDefault(); this.submit(); } }, this.input, sendBtn));
  }

  /** Redraw the whole log (after history arrived); `mine(entry)` marks our own. */
  renderLog(entries, mine) {
    this.log.replaceChildren(...entries.map((m) => entryEl(m, mine(m))));
    this.scroll(true);
  }

  /** One new message at the bottom; the log follows it if we were reading the end. */
  append(entry, mine) {
    const log = this.log;
    const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
    log.append(entryEl(entry, mine));
    this.scroll(nearBottom || mine);
  }

  scroll(force) {
    if (force) this.log.scrollTop = this.log.scrollHeight;
  }

  autosize() {
    const ta = this.input;
    ta.style.height = 'auto';
    ta.style.height = `${Math.min(ta.scrollHeight, 140)}px`;
  }

  focus() { this.input.focus(); }

  submit() {
    const text = this.input.value.trim();
    const problem = draftProblem(text);
    if (problem === 'empty') return;
    // Our message appears when the node echoes it back (one source of truth, no duplicates).
    if (problem) { this.refuse(problem); return; }
    if (!this.send(text)) return;
    this.input.value = '';
    this.autosize();
  }
}

function entryEl(m, mine) {
  const time = h('span', { class: 'chat-time', text: formatTime(m.at) });
  time.title = new Date(m.at).toLocaleString();
  return h('div', { class: `chat-msg${mine ? ' mine' : ''}` },
    h('div', { class: 'chat-meta' }, h('span', { class: 'chat-name', text: m.name }),
      m.everyone ? h('span', { class: 'chat-everyone', text: ' · to every room' }) : null, time),
    h('div', { class: 'chat-text' }, splitLinks(m.text).map((piece) => (piece.url
      ? h('a', { href: piece.url, target: '_blank', rel: 'noopener noreferrer', text: piece.url })
      : piece.text))));
}
