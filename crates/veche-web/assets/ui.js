// Small DOM helpers shared by every screen: element builder, icons, toasts,
// the reconnect banner, full-screen status messages and dialogs.
// User-supplied text only ever goes through textContent (never innerHTML).

/**
 * Build an element. attrs: class, text, dataset, on<Event> handlers, any other
 * attribute (false/null skips it, true sets it empty). Children: nodes or strings.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Icon paths from Feather Icons (MIT licence), inlined so the app works offline.
const ICONS = {
  // A raised hand: four fingers and a thumb, in the same stroke style as the others.
  hand: '<path d="M8 12V6a1.5 1.5 0 0 1 3 0v5"/><path d="M11 11V4a1.5 1.5 0 0 1 3 0v7"/><path d="M14 11V5.5a1.5 1.5 0 0 1 3 0V12"/><path d="M17 10.5a1.5 1.5 0 0 1 3 0V15a7 7 0 0 1-7 7h-1.5a6 6 0 0 1-4.9-2.6L4 15.5a1.6 1.6 0 0 1 2.6-1.9L8 15.5"/>',
  mic: '<path d="M12 1a3 3 0 0 0-3 3v8a3 3 0 0 0 6 0V4a3 3 0 0 0-3-3z"/><path d="M19 10v2a7 7 0 0 1-14 0v-2"/><line x1="12" y1="19" x2="12" y2="23"/><line x1="8" y1="23" x2="16" y2="23"/>',
  micOff: '<line x1="1" y1="1" x2="23" y2="23"/><path d="M9 9v3a3 3 0 0 0 5.12 2.12M15 9.34V4a3 3 0 0 0-5.94-.6"/><path d="M17 16.95A7 7 0 0 1 5 12v-2m14 0v2a7 7 0 0 1-.11 1.23"/><line x1="12" y1="19" x2="12" y2="23"/><line x1="8" y1="23" x2="16" y2="23"/>',
  cam: '<polygon points="23 7 16 12 23 17 23 7"/><rect x="1" y="5" width="15" height="14" rx="2" ry="2"/>',
  camOff: '<path d="M16 16v1a2 2 0 0 1-2 2H3a2 2 0 0 1-2-2V7a2 2 0 0 1 2-2h2m5.66 0H14a2 2 0 0 1 2 2v3.34l1 1L23 7v10"/><line x1="1" y1="1" x2="23" y2="23"/>',
  screen: '<rect x="2" y="3" width="20" height="14" rx="2" ry="2"/><line x1="8" y1="21" x2="16" y2="21"/><line x1="12" y1="17" x2="12" y2="21"/>',
  people: '<path d="M17 21v-2a4 4 0 0 0-4-4H5a4 4 0 0 0-4 4v2"/><circle cx="9" cy="7" r="4"/><path d="M23 21v-2a4 4 0 0 0-3-3.87"/><path d="M16 3.13a4 4 0 0 1 0 7.75"/>',
  chat: '<path d="M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z"/>',
  link: '<path d="M10 13a5 5 0 0 0 7.54.54l3-3a5 5 0 0 0-7.07-7.07l-1.72 1.71"/><path d="M14 11a5 5 0 0 0-7.54-.54l-3 3a5 5 0 0 0 7.07 7.07l1.71-1.71"/>',
  leave: '<path d="M9 21H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h4"/><polyline points="16 17 21 12 16 7"/><line x1="21" y1="12" x2="9" y2="12"/>',
  close: '<line x1="18" y1="6" x2="6" y2="18"/><line x1="6" y1="6" x2="18" y2="18"/>',
  copy: '<rect x="9" y="9" width="13" height="13" rx="2" ry="2"/><path d="M5 15H4a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2h9a2 2 0 0 1 2 2v1"/>',
  send: '<line x1="22" y1="2" x2="11" y2="13"/><polygon points="22 2 15 22 11 13 2 9 22 2"/>',
  sound: '<polygon points="11 5 6 9 2 9 2 15 6 15 11 19 11 5"/><path d="M19.07 4.93a10 10 0 0 1 0 14.14M15.54 8.46a5 5 0 0 1 0 7.07"/>',
  alert: '<circle cx="12" cy="12" r="10"/><line x1="12" y1="8" x2="12" y2="12"/><line x1="12" y1="16" x2="12.01" y2="16"/>',
  logo: '<circle cx="12" cy="12" r="3"/><circle cx="12" cy="3.5" r="1.6"/><circle cx="19.4" cy="7.75" r="1.6"/><circle cx="19.4" cy="16.25" r="1.6"/><circle cx="12" cy="20.5" r="1.6"/><circle cx="4.6" cy="16.25" r="1.6"/><circle cx="4.6" cy="7.75" r="1.6"/>',
};

/** An inline SVG icon (decorative: hidden from screen readers). */
export function icon(name, cls = '') {
  const svgNS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(svgNS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  svg.setAttribute('class', `icon ${cls}`.trim());
  svg.innerHTML = ICONS[name] || ''; // constant markup, never user text
  return svg;
}

/** Replace the whole app view. */
export function mount(...nodes) {
  const app = document.getElementById('app');
  app.replaceChildren(...nodes);
  return app;
}

/** Short-lived message in the corner. kind: "info" | "error". */
export function toast(text, { kind = 'info', timeout = 4500, action = null } = {}) {
  const box = document.getElementById('toasts');
  if (!box) return null;
  const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { class: 'toast-text', text }));
  if (action) {
    el.append(h('button', {
      class: 'toast-action', type: 'button', text: action.label,
      onclick: () => { el.remove(); action.onClick(); },
    }));
  }
  box.append(el);
  if (timeout) setTimeout(() => el.remove(), timeout);
  return el;
}

export function showBanner(text) {
  const b = document.getElementById('banner');
  if (!b) return;
  b.textContent = text;
  b.hidden = false;
}

export function hideBanner() {
  const b = document.getElementById('banner');
  if (b) b.hidden = true;
}

/**
 * Full-screen status/error message (id="fatal", tests look for it).
 * actions: [{label, onClick} | {label, href}], first one is the primary button.
 */
export function fatalScreen(title, detail = '', actions = []) {
  hideBanner();
  const buttons = actions.map((a, i) => {
    const cls = `btn ${i === 0 ? 'btn-primary' : 'btn-secondary'}`;
    return a.href
      ? h('a', { class: cls, href: a.href, text: a.label })
      : h('button', { class: cls, type: 'button', text: a.label, onclick: a.onClick });
  });
  mount(h('main', { class: 'center-screen' },
    h('div', { id: 'fatal', class: 'card status-card', role: 'alert' },
      brand(),
      h('h1', { class: 'status-title', text: title }),
      detail ? h('p', { class: 'status-detail', text: detail }) : null,
      buttons.length ? h('div', { class: 'status-actions' }, buttons) : null)));
}

/** The veche logo + name; a home link unless link is false (in a meeting a stray tap must not leave). */
export function brand(link = true) {
  const parts = [icon('logo', 'brand-logo'), h('span', { class: 'brand-name', text: 'veche' })];
  return link
    ? h('a', { class: 'brand', href: '/', 'aria-label': 'veche home' }, parts)
    : h('span', { class: 'brand' }, parts);
}

/**
 * Modal dialog built on <dialog>. Returns {el, close}. onClose runs once.
 */
export function openDialog(title, body, { onClose } = {}) {
  const dlg = h('dialog', { class: 'dialog', 'aria-label': title });
  const close = () => {
    if (dlg.open && typeof dlg.close === 'function') dlg.close();
    dlg.remove();
    if (onClose) onClose();
  };
  dlg.append(
    h('div', { class: 'dialog-head' },
      h('h2', { text: title }),
      h('button', { class: 'icon-btn', type: 'button', 'aria-label': 'Close', onclick: close }, icon('close'))),
    h('div', { class: 'dialog-body' }, body),
  );
  dlg.addEventListener('cancel', (ev) => { ev.preventDefault(); close(); });
  // Click on the backdrop (outside the box) closes it.
  dlg.addEventListener('click', (ev) => { if (ev.target === dlg) close(); });
  document.body.append(dlg);
  if (typeof dlg.showModal === 'function') dlg.showModal();
  else dlg.setAttribute('open', ''); // very old browsers: plain box
  return { el: dlg, close };
}

/** "Ada Lovelace" → "AL"; works for any script. */
export function initials(name) {
  const words = String(name || '').trim().split(/\s+/).filter(Boolean);
  if (!words.length) return '?';
  const first = [...words[0]][0] || '';
  const last = words.length > 1 ? [...words[words.length - 1]][0] : '';
  return (first + last).toUpperCase();
}

/** Local wall-clock time HH:MM (24 h) for a millisecond timestamp. */
export function formatTime(ms) {
  const d = new Date(Number(ms) || Date.now());
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

/** Stable hue for a participant's avatar colour. */
export function hueFor(text) {
  let hash = 0;
  for (const ch of String(text)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return hash % 360;
}

/** Copy text: Clipboard API first, then the old execCommand route. */
export async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch { /* fall through to the legacy path */ }
  try {
    const ta = h('textarea', { class: 'offscreen', readonly: true });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    const ok = document.execCommand && document.execCommand('copy');
    ta.remove();
    return !!ok;
  } catch {
    return false;
  }
}
