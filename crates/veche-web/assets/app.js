// veche browser app: routing, landing page, join screen, and the test hook.
// Served for "/" and "/m/{id}"; no build step, no external resources.

import { h, icon, mount, toast, fatalScreen, brand, initials, hueFor } from './ui.js';
import { getLocalMedia, mediaAvailable, MSG } from './media.js';

import { Meeting } from './meeting.js';
import { personKey, signToken, fingerprint } from './keys.js';

/** How long a join waits for the camera and microphone before going in without them. */
const MEDIA_WAIT_MS = 8000;

const NAME_KEY = 'veche.name';
const NODE_INFO_TIMEOUT_MS = 4000;

let current = null; // the Meeting once joined (kept after leaving so the hook can report "left")
const page = { connection: 'connecting', error: null }; // hook state before/without a Meeting

// ---- test hook (window.veche) -------------------------------------------------

window.veche = {
  state() {
    if (current) return current.state();
    return { joined: false, you: null, participants: [], chat: [], connection: page.connection, error: page.error };
  },
  async stats() {
    return current ? current.stats() : { inbound: [], outbound: [] };
  },
  get pc() {
    return current ? current.pc : null;
  },
  /** Send one signaling message on the current session (tests). */
  send(msg) {
    return !!(current && current.session && current.session.send(msg));
  },
};

// ---- helpers ---------------------------------------------------------------------

/** fetch + JSON; throws only on network failure. */
async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: { accept: 'application/json', ...(options.headers || {}) } });
  let body = null;
  try { body = await res.json(); } catch { body = null; }
  return { ok: res.ok, status: res.status, body };
}

/** GET /api/node (LAN addresses + fingerprint); null when unavailable. Never rejects. */
function fetchNodeInfo() {
  const ctrl = typeof AbortController === 'function' ? new AbortController() : null;
  const timer = setTimeout(() => ctrl && ctrl.abort(), NODE_INFO_TIMEOUT_MS);
  return fetch('/api/node', { headers: { accept: 'application/json' }, signal: ctrl ? ctrl.signal : undefined })
    .then((res) => (res.ok ? res.json() : null))
    .catch(() => null)
    .finally(() => clearTimeout(timer));
}

function unreachableText() {
  return `Cannot reach the veche node at ${location.origin}. Is it running?`;
}

function storedName() {
  try { return localStorage.getItem(NAME_KEY) || ''; } catch { return ''; } // storage may be disabled
}

function storeName(name) {
  try { localStorage.setItem(NAME_KEY, name); } catch { /* private mode: fine */ }
}

/** Trim and cap at 64 characters (the node's limit). */
function cleanName(raw) {
  return [...String(raw || '').trim()].slice(0, 64).join('');
}

/**
 * Accept "https://host/m/ID?node=N", "host/m/ID", or a bare "ID". A link made on another
 * node carries that node's id, so this node can find the meeting there: {id, node}.
 */
export function parseMeetingRef(text) {
  const t = String(text || '').trim();
  if (!t) return null;
  const m = t.match(/\/m\/([^/?#\s]+)/);
  if (m) {
    const n = t.match(/[?&]node=([A-Za-z0-9]+)/);
    try { return { id: decodeURIComponent(m[1]), node: n ? n[1] : null }; } catch { return null; }
  }
  return /^[A-Za-z0-9_-]+$/.test(t) ? { id: t, node: null } : null;
}

function meetingPath(id, node) {
  const q = node ? `?node=${encodeURIComponent(node)}` : '';
  return `/m/${encodeURIComponent(id)}${q}`;
}

function loading(text) {
  mount(h('main', { class: 'center-screen' },
    h('div', { class: 'loading', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), h('span', { text }))));
}

// ---- landing page ----------------------------------------------------------------------

function landingPage() {
  document.title = 'veche';
  page.connection = 'connecting';

  const titleInput = h('input', {
    id: 'new-title', type: 'text', maxlength: '200', autocomplete: 'off', placeholder: 'e.g. Physics 7B',
  });
  const startBtn = h('button', { id: 'start-btn', class: 'btn btn-primary', type: 'submit', text: 'Start meeting' });
  const startErr = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const inviteOnly = h('input', { id: 'new-invite-only', type: 'checkbox' });
  const lobby = h('input', { id: 'new-lobby', type: 'checkbox' });
  // Only these people: their full keys (each person copies theirs from this page).
  const allowed = h('textarea', {
    id: 'new-keys', rows: '3', spellcheck: 'false', autocomplete: 'off',
    placeholder: 'Only these people: paste each person\'s key, one per line (empty: anyone with the link)',
    'aria-label': 'Only these people (their keys, one per line)',
  });
  const ends = h('input', { id: 'new-ends', type: 'datetime-local', 'aria-label': 'Ends at (optional)' });
  const startForm = h('form', { class: 'stack' },
    h('label', { class: 'label', for: 'new-title', text: 'Start a meeting' }),
    h('div', { class: 'row' }, titleInput, startBtn),
    h('label', { class: 'check', for: 'new-invite-only' }, inviteOnly,
      ' Invite only: people join with an invite link you make (as speaker, listener or moderator)'),
    h('label', { class: 'check', for: 'new-lobby' }, lobby,
      ' Waiting room: you let each person in'),
    allowed,
    h('label', { class: 'check', for: 'new-ends' }, 'Ends at (optional): ', ends),
    startErr);
  startForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    startErr.hidden = true;
    const title = titleInput.value.trim() || 'Meeting'; // an empty title should not block a quick start
    // Checked before the node is asked for anything, so a typo costs no meeting.
    const keys = allowed.value.split(/\s+/).map((k) => k.trim()).filter(Boolean);
    const bad = keys.find((k) => !/^[A-Za-z0-9_-]{43}$/.test(k));
    const endsMs = ends.value ? new Date(ends.value).getTime() : null;
    const refuse = (text) => {
      startErr.textContent = text;
      startErr.hidden = false;
    };
    if (bad) return refuse(`"${bad.slice(0, 20)}" is not a person's key: a key is 43 letters, digits, - and _.`);
    if (endsMs !== null && !(endsMs > Date.now())) return refuse('The end time has passed: pick a later one, or none.');
    startBtn.disabled = true;
    startBtn.textContent = 'Starting…';
    try {
      const r = await api('/api/meetings', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ title }),
      });
      if (!r.ok || !r.body || !r.body.id) {
        throw new Error((r.body && r.body.message) || `The node could not create the meeting (HTTP ${r.status}).`);
      }
      // This browser's key signs the meeting: it is the host, and the node checks every
      // join against what the host signed (docs/trust.md).
      const doc = await signToken('veche/meeting/v1', {
        id: r.body.id,
        title: String(r.body.title || title),
        host: (await personKey()).publicKey,
        policy: keys.length ? { type: 'keys', keys } : { type: inviteOnly.checked ? 'invite_only' : 'anyone' },
        lobby: lobby.checked,
        created_ms: Date.now(),
        ends_ms: endsMs,
      });
      const put = await api(`/api/meetings/${encodeURIComponent(r.body.id)}/doc`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ doc, claim: r.body.claim }),
      });
      if (!put.ok) {
        throw new Error((put.body && put.body.message) || `The node did not accept the signed meeting (HTTP ${put.status}).`);
      }
      location.assign(meetingPath(r.body.id));
    } catch (err) {
      startErr.textContent = err instanceof TypeError ? unreachableText() : err.message;
      startErr.hidden = false;
      startBtn.disabled = false;
      startBtn.textContent = 'Start meeting';
    }
  });

  const codeInput = h('input', {
    id: 'join-code', type: 'text', autocomplete: 'off', autocapitalize: 'off', spellcheck: 'false',
    placeholder: 'Paste a link or type a code',
  });
  const codeErr = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const joinForm = h('form', { class: 'stack' },
    h('label', { class: 'label', for: 'join-code', text: 'Join with a link or code' }),
    h('div', { class: 'row' }, codeInput, h('button', { class: 'btn btn-secondary', type: 'submit', text: 'Join' })),
    codeErr);
  joinForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const ref = parseMeetingRef(codeInput.value);
    if (!ref) {
      codeErr.textContent = 'That is not a meeting link or code. A code looks like k3x-9qa-7mf.';
      codeErr.hidden = false;
      return;
    }
    location.assign(meetingPath(ref.id, ref.node));
  });

  // This browser's key, whole: what a host pastes into "Only these people".
  const myKey = h('code', { id: 'my-key', class: 'fingerprint' });
  const keyCopy = h('button', { class: 'btn btn-secondary btn-small', type: 'button', text: 'Copy' });
  keyCopy.addEventListener('click', () => {
    if (navigator.clipboard) navigator.clipboard.writeText(myKey.textContent).catch(() => {});
  });
  const keyRow = h('details', { class: 'my-key' },
    h('summary', { text: 'Your key (for hosts who invite by key)' }),
    h('p', { class: 'dialog-note', text: 'Send this to a host who lets in only the people they list. Others see its short form next to your name.' }),
    h('div', { class: 'copy-row' }, myKey, keyCopy));
  // Loaded when opened, not with the page: a page left while it was still making the key
  // (a fresh browser, someone clicking straight through to a meeting) held up the key store
  // of the meeting page it led to, which then never signed in (seen on a fresh machine's
  // first test run). Starting a meeting waits for the key before it leaves the page.
  let keyShown = false;
  keyRow.addEventListener('toggle', () => {
    if (!keyRow.open || keyShown) return;
    keyShown = true;
    personKey().then((k) => {
      myKey.textContent = k.publicKey;
      keyRow.querySelector('summary').textContent = `Your key: ${fingerprint(k.publicKey)}… (for hosts who invite by key)`;
    }).catch((err) => {
      keyShown = false; // opening it again tries again
      myKey.textContent = String(err && err.message || err);
    });
  });

  const footer = h('p', { class: 'landing-foot' });
  mount(h('main', { class: 'center-screen landing' },
    h('div', { class: 'card landing-card' },
      h('div', { class: 'hero' }, brand(),
        h('p', { class: 'tagline', text: 'Video meetings served from your own machine — no cloud, no accounts, works without internet.' })),
      startForm,
      h('div', { class: 'divider', 'aria-hidden': 'true' }, h('span', { text: 'or' })),
      joinForm,
      keyRow),
    footer));
  // Focus only with a mouse/keyboard: on a tablet it would throw up the on-screen keyboard.
  if (window.matchMedia && window.matchMedia('(pointer: fine)').matches) titleInput.focus();

  fetchNodeInfo().then((info) => {
    if (info && info.version) footer.textContent = `veche node ${info.version}`;
  });
}

// ---- meeting page -------------------------------------------------------------------------

async function meetingPage(id) {
  const params = new URLSearchParams(location.search);
  const nodeInfo = fetchNodeInfo();
  page.connection = 'connecting';
  page.error = null;
  loading('Opening the meeting…');

  let meeting;
  try {
    const node = params.get('node');
    const pin = params.get('host');
    const q = node ? `?node=${encodeURIComponent(node)}${pin ? `&host=${encodeURIComponent(pin)}` : ''}` : '';
    const r = await api(`/api/meetings/${encodeURIComponent(id)}${q}`);
    if (r.status === 404) return notFound();
    if (r.body && r.body.error === 'node_unreachable') {
      page.connection = 'failed';
      page.error = 'node_unreachable';
      return fatalScreen('Cannot reach the meeting\'s node', r.body.message,
        [{ label: 'Retry', onClick: () => meetingPage(id) }]);
    }
    if (!r.ok || !r.body) {
      page.connection = 'failed';
      page.error = (r.body && r.body.error) || 'internal';
      return fatalScreen('Something went wrong', (r.body && r.body.message) || `The node answered HTTP ${r.status}.`,
        [{ label: 'Retry', onClick: () => meetingPage(id) }]);
    }
    meeting = { ...r.body, id: r.body.id || id };
  } catch {
    page.connection = 'failed';
    page.error = 'unreachable';
    return fatalScreen(unreachableText(), 'Check that the node is started and that this device is on the same network.',
      [{ label: 'Retry', onClick: () => meetingPage(id) }]);
  }
  document.title = `${meeting.title || 'Meeting'} — veche`;

  if (params.get('autojoin') === '1') {
    // Kiosks, classroom links and tests: straight in, camera and mic on.
    const name = cleanName(params.get('name')) || storedName() || 'Guest';
    return startMeeting(meeting, name, { audio: true, video: true }, nodeInfo, null);
  }
  return joinScreen(meeting, cleanName(params.get('name')), nodeInfo);
}

function notFound() {
  page.connection = 'failed';
  page.error = 'unknown_meeting';
  fatalScreen('Meeting not found', 'Check the link: it may be mistyped, or the meeting was created on another veche node.',
    [{ label: 'Start a meeting', href: '/' }]);
}

/**
 * Enter the meeting. media: {mic, cam, error} from the join screen, or null to
 * ask for devices now (autojoin / rejoin). Failure to get devices still joins, receive-only.
 */
async function startMeeting(meeting, name, prefs, nodeInfo, media) {
  let late = null;
  if (!media) {
    loading('Starting camera and microphone…');
    // A camera can hang (held by another app, a slow driver): join without it after a
    // while rather than never, and send it when it starts.
    const asked = getLocalMedia(prefs);
    media = await Promise.race([asked, new Promise((r) => setTimeout(r, MEDIA_WAIT_MS, null))]);
    if (!media) {
      media = { mic: null, cam: null, error: { message: MSG.slow } };
      late = asked;
    }
  }
  storeName(name);
  current = new Meeting({
    id: meeting.id,
    title: meeting.title,
    host: meeting.host,
    hostKey: meeting.host_key,
    name,
    mic: media.mic,
    cam: media.cam,
    audio: prefs.audio,
    video: prefs.video,
    nodeInfo,
    rejoin: (p) => startMeeting(meeting, name, p || prefs, nodeInfo, null),
  });
  current.start();
  if (media.error) toast(media.error.message, { kind: 'error', timeout: 8000 });
  const m = current;
  if (late) late.then((got) => m.adoptLate(got, prefs));
}

function joinScreen(meeting, nameParam, nodeInfo) {
  const prefs = { audio: true, video: true };
  let media = { mic: null, cam: null, error: null };
  let pending = null;
  let joining = false;

  const video = h('video', { class: 'preview-video', autoplay: true, muted: true, playsinline: true, 'aria-label': 'Your camera preview' });
  video.muted = true;
  const avatar = h('div', { class: 'avatar large', 'aria-hidden': 'true' });
  const previewStatus = h('div', { class: 'preview-status', 'aria-hidden': 'true' });
  const btnMic = h('button', { id: 'join-mic', class: 'ctl round', type: 'button' });
  const btnCam = h('button', { id: 'join-cam', class: 'ctl round', type: 'button' });
  const preview = h('div', { class: 'preview mirror' }, video,
    h('div', { class: 'tile-placeholder' }, avatar, previewStatus),
    h('div', { class: 'preview-controls' }, btnMic, btnCam));

  const mediaText = h('p', { class: 'media-msg-text' });
  const mediaRetry = h('button', { class: 'btn btn-secondary btn-small', type: 'button', text: 'Retry' });
  const mediaExtra = h('div', { class: 'media-msg-extra' });
  const mediaMsg = h('div', { class: 'media-msg', role: 'alert', hidden: true },
    icon('alert', 'media-msg-icon'), h('div', {}, mediaText, mediaExtra, mediaRetry));

  const nameInput = h('input', {
    id: 'join-name', type: 'text', maxlength: '64', autocomplete: 'name', placeholder: 'Your name', 'aria-required': 'true',
  });
  nameInput.value = nameParam || storedName();
  const nameErr = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const joinBtn = h('button', { id: 'join-btn', class: 'btn btn-primary btn-large', type: 'submit', text: 'Join' });

  // Who is in it is for those let in: the page learns it after joining.
  const who = meeting.invite_only
    ? 'This meeting is by invitation: your invite link lets you in.'
    : meeting.waiting_room ? 'The host lets people in from a waiting room.' : 'Type your name to join.';

  const form = h('form', { class: 'join-form stack' },
    h('p', { class: 'eyebrow', text: 'Ready to join?' }),
    h('h1', { class: 'join-title', text: meeting.title || 'Meeting' }),
    h('p', { class: 'muted', text: who }),
    h('label', { class: 'label', for: 'join-name', text: 'Your name' }),
    nameInput, nameErr, joinBtn);

  mount(h('main', { class: 'join-screen' },
    h('header', { class: 'topbar' }, brand()),
    h('div', { class: 'join-layout' },
      h('section', { class: 'join-preview', 'aria-label': 'Camera and microphone' }, preview, mediaMsg),
      form)));

  function refresh() {
    const { mic, cam } = media;
    video.srcObject = cam ? (video.srcObject && video.srcObject.getTracks()[0] === cam ? video.srcObject : new MediaStream([cam])) : null;
    preview.classList.toggle('no-video', !(cam && prefs.video));
    avatar.textContent = initials(nameInput.value || '?');
    avatar.style.setProperty('--hue', hueFor(nameInput.value));
    previewStatus.textContent = pending ? 'Starting camera…' : !cam ? 'No camera' : prefs.video ? '' : 'Camera is off';

    const setBtn = (btn, track, on, onIcon, offIcon, what) => {
      btn.replaceChildren(icon(track && on ? onIcon : offIcon));
      btn.classList.toggle('off', !(track && on));
      btn.disabled = !track;
      btn.setAttribute('aria-label', !track ? `No ${what}` : on ? `Turn off ${what}` : `Turn on ${what}`);
      btn.title = btn.getAttribute('aria-label');
    };
    setBtn(btnMic, mic, prefs.audio, 'mic', 'micOff', 'microphone');
    setBtn(btnCam, cam, prefs.video, 'cam', 'camOff', 'camera');

    const err = media.error;
    mediaMsg.hidden = !err;
    if (err) {
      mediaText.textContent = `${err.message}${mic || cam ? '' : ' You can still join to watch and listen.'}`;
      mediaRetry.hidden = !err.retry;
    }
  }

  async function acquire() {
    for (const t of [media.mic, media.cam]) if (t) t.stop(); // retry asks for both again
    media = { mic: null, cam: null, error: null };
    pending = getLocalMedia({ audio: true, video: true });
    refresh();
    const got = await pending;
    pending = null;
    if (joining === 'done') { // joined (receive-only) while we were waiting: don't leak the camera
      for (const t of [got.mic, got.cam]) if (t) t.stop();
      return;
    }
    media = got;
    if (media.mic) media.mic.enabled = prefs.audio;
    if (media.cam) media.cam.enabled = prefs.video;
    refresh();
  }

  btnMic.addEventListener('click', () => {
    prefs.audio = !prefs.audio;
    if (media.mic) media.mic.enabled = prefs.audio;
    refresh();
  });
  btnCam.addEventListener('click', () => {
    prefs.video = !prefs.video;
    if (media.cam) media.cam.enabled = prefs.video;
    refresh();
  });
  mediaRetry.addEventListener('click', () => acquire());
  nameInput.addEventListener('input', () => { nameErr.hidden = true; refresh(); });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (joining) return;
    const name = cleanName(nameInput.value);
    if (!name) {
      nameErr.textContent = 'Type your name so others know who you are.';
      nameErr.hidden = false;
      nameInput.focus();
      return;
    }
    joining = true;
    joinBtn.disabled = true;
    joinBtn.textContent = pending ? 'Waiting for camera…' : 'Joining…';
    // Wait for the permission prompt so the join uses whatever the user allowed.
    if (pending) await pending.catch(() => null);
    while (pending) await new Promise((r) => setTimeout(r, 50)); // acquire() is storing the result
    joining = 'done';
    startMeeting(meeting, name, { ...prefs }, nodeInfo, media);
  });

  if (!mediaAvailable()) {
    // Insecure page: point at the node's HTTPS LAN address when it has one.
    nodeInfo.then((info) => {
      const urls = info && Array.isArray(info.lan_urls) ? info.lan_urls : [];
      if (!urls.length) return;
      const url = `${String(urls[0]).replace(/\/+$/, '')}${meetingPath(meeting.id)}`;
      mediaExtra.replaceChildren(h('p', {}, 'Secure address: ', h('a', { href: url, text: url })));
    });
  }

  refresh();
  acquire();
  if (!nameInput.value) nameInput.focus();
}

// ---- routing -------------------------------------------------------------------------------------

function route() {
  const m = location.pathname.match(/^\/m\/([^/]+)\/?$/);
  if (!m) return landingPage();
  let id;
  try { id = decodeURIComponent(m[1]); } catch { return notFound(); }
  return meetingPage(id);
}

route();
