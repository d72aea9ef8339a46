// The stage: which video tiles the meeting shows and in what order (`wantedTiles`, pure),
// where each goes (`gridRects`, pure), and the tiles themselves (`Stage`: their video and
// audio elements, sound the browser holds back, the speaking highlight, a camera pinned to
// the big spot). It tells the node
// what it shows of each remote video (`tileViews`, pure): each tile's height and whether
// it is seen, so the node sends the smallest layer that fills it, and nothing for a tile
// hidden, scrolled away or behind another tab.

import { h, icon, toast, initials, hueFor } from './ui.js';

/** Best grid for n tiles of a given aspect in W×H: the largest tiles win. */
export function fitGrid(n, W, H, gap, aspect = 16 / 9) {
  const options = [];
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    let w = (W - gap * (cols - 1)) / cols;
    let hgt = w / aspect;
    if (hgt * rows + gap * (rows - 1) > H) {
      hgt = (H - gap * (rows - 1)) / rows;
      w = hgt * aspect;
    }
    options.push({ cols, rows, w, h: hgt });
  }
  const maxW = Math.max(...options.map((o) => o.w));
  // Near-ties: follow the box's shape (side by side when wide, stacked when tall).
  return options
    .filter((o) => o.w >= maxW * 0.92)
    .reduce((a, b) => ((W >= H ? b.cols > a.cols : b.cols < a.cols) ? b : a));
}

/** n tiles in a centred grid inside `box` ({x, y, w, h}): `{ rects, bottom }`, rects in
 * order ({left, top, width, height}, whole pixels), bottom the lowest edge used. `fill`:
 * tiles may grow taller than 16:9 into spare height (the main grid; not the strip beside
 * the big spot, where a tall tile would crop the picture and need a larger layer). */
export function gridRects(n, box, gap, minW = 0, fill = true) {
  if (!n) return { rects: [], bottom: box.y };
  let g = fitGrid(n, box.w, box.h, gap);
  if (g.w >= minW && !fill) {
    // As fitted: 16:9.
  } else if (g.w >= minW) {
    // Use spare height: let tiles grow taller than 16:9 (4:3, or 3:4 in a tall box); video is cropped to fit.
    const availH = (box.h - gap * (g.rows - 1)) / g.rows;
    const minAspect = box.h > box.w ? 3 / 4 : 4 / 3;
    g.h = Math.min(availH, Math.max(g.h, g.w / minAspect));
  } else {
    // Too many to fit readable: keep a minimum size and let the stage scroll.
    const cols = Math.max(1, Math.floor((box.w + gap) / (minW + gap)));
    const w = (box.w - gap * (cols - 1)) / cols;
    g = { cols, rows: Math.ceil(n / cols), w, h: w * 9 / 16 };
  }
  const totalH = g.rows * g.h + (g.rows - 1) * gap;
  const top = box.y + Math.max(0, (box.h - totalH) / 2);
  const rects = [];
  for (let i = 0; i < n; i++) {
    const r = Math.floor(i / g.cols);
    const c = i % g.cols;
    const inRow = Math.min(g.cols, n - r * g.cols);
    const rowW = inRow * g.w + (inRow - 1) * gap;
    rects.push({
      left: Math.round(box.x + (box.w - rowW) / 2 + c * (g.w + gap)),
      top: Math.round(top + r * (g.h + gap)),
      width: Math.round(g.w),
      height: Math.round(g.h),
    });
  }
  return { rects, bottom: top + totalH };
}

/**
 * The tiles to show, in display order: the camera you pinned (else the one the host put in
 * the spotlight), then screens (these get the big spot: `stage: true`), then you, then the
 * others in our room. `view`: {name, local: {screen, cam}, me: {audio, video},
 * participants: [p], media: Map(id → {mic, camera, screen}), speaking: Set(id), inRoom(p),
 * pinned: a tile key or null, spotlight: a person's key or null, paused: Set(id) of
 * cameras the link has no room for}. A pin or spotlight of someone not here (left, or in
 * another room) puts nobody on the stage.
 */
export function wantedTiles(view) {
  const { local, me, name } = view;
  const media = (id) => view.media.get(String(id)) || {};
  const others = view.participants.filter((p) => view.inRoom(p));
  const want = [];
  const camera = (p) => {
    const m = media(p.id);
    const key = `p:${p.id}:camera`;
    return { key, id: p.id, source: 'camera', name: p.name, label: p.name,
      audio: p.audio, videoOn: p.video, videoTrack: m.camera || null, audioTrack: m.mic || null,
      speaking: p.audio && view.speaking.has(String(p.id)), pinned: key === view.pinned, stage: key === view.pinned,
      spotlight: !!view.spotlight && p.key === view.spotlight,
      paused: p.video && !!view.paused && view.paused.has(String(p.id)) };
  };
  const tiles = others.map(camera);
  // Your own pin wins over the host's spotlight.
  const first = tiles.find((t) => t.pinned) || tiles.find((t) => t.spotlight);
  if (first) { first.stage = true; want.push(first); }
  if (local.screen) {
    want.push({ key: 'self:screen', self: true, source: 'screen', name, label: 'You (screen)', videoOn: true, videoTrack: local.screen, stage: true });
  }
  for (const p of others) {
    if (!p.screen) continue;
    want.push({ key: `p:${p.id}:screen`, id: p.id, source: 'screen', name: p.name, label: `${p.name} (screen)`,
      videoOn: true, videoTrack: media(p.id).screen || null, stage: true });
  }
  want.push({ key: 'self:camera', self: true, source: 'camera', name, label: 'You', mirror: true,
    audio: me.audio, videoOn: me.video, videoTrack: local.cam });
  for (const tile of tiles) {
    if (tile !== first) want.push(tile);
  }
  return want;
}

/**
 * What the node is told of the remote tiles (`view`): [{participant, source, visible,
 * height}] in device pixels. tiles: [{id, source, top, height, hidden}] (top and height
 * in the stage's pixels), the stage's visible band [scrollTop, scrollTop + clientHeight),
 * `pageHidden`: the tab is not shown.
 */
export function tileViews(tiles, band, pageHidden, dpr = 1) {
  return tiles.map((t) => ({
    participant: t.id,
    source: t.source,
    visible: !pageHidden && !t.hidden && t.height > 0 && t.top < band.bottom && t.top + t.height > band.top,
    height: Math.round(t.height * dpr),
  }));
}

/** The stage's tiles, kept in step with `wantedTiles` by `show`. */
export class Stage {
  constructor() {
    this.inner = h('div', { class: 'stage-inner' });
    this.el = h('main', { class: 'stage', 'aria-label': 'Video' }, this.inner);
    this.tiles = new Map(); // key → {el, video, audio, avatar, micOff, name, screen}
    this.order = [];
    this.soundBlocked = false;
    this.soundToast = null;
    this.hidden = new Set(); // keys of tiles whose video the person hid
    this.onView = null;      // called with tileViews() after each layout and scroll
    this.onPin = null;       // called with a camera tile's key when its pin is pressed
    this.resizeObserver = new ResizeObserver(() => this.layout());
    this.resizeObserver.observe(this.el);
    this.el.addEventListener('scroll', () => this.reportView(), { passive: true });
  }

  /** Hide or show one remote tile's video (the node then stops or resumes sending it). */
  toggleHidden(key) {
    if (this.hidden.has(key)) this.hidden.delete(key);
    else this.hidden.add(key);
    const tile = this.tiles.get(key);
    if (tile && tile.spec) this.updateTile(tile, tile.spec);
    this.reportView();
  }

  /** Tell the node what each remote tile shows now. */
  reportView() {
    if (!this.onView) return;
    const remote = [...this.tiles.entries()].filter(([, t]) => t.spec && !t.spec.self);
    const band = { top: this.el.scrollTop, bottom: this.el.scrollTop + this.el.clientHeight };
    // Where layout() put each tile, not where its move (a CSS transition) has got to.
    const px = (v, now) => (Number.isFinite(parseFloat(v)) ? parseFloat(v) : now);
    this.onView(tileViews(remote.map(([key, t]) => ({
      id: t.spec.id,
      source: t.spec.source,
      top: px(t.el.style.top, t.el.offsetTop),
      height: px(t.el.style.height, t.el.offsetHeight),
      hidden: this.hidden.has(key),
    })), band, document.visibilityState === 'hidden', window.devicePixelRatio || 1));
  }

  /** Show exactly these tiles (from `wantedTiles`), in this order. */
  show(want) {
    const keys = new Set(want.map((w) => w.key));
    for (const [key, tile] of this.tiles) {
      if (!keys.has(key)) { destroyTile(tile); this.tiles.delete(key); this.hidden.delete(key); }
    }
    for (const spec of want) {
      let tile = this.tiles.get(spec.key);
      if (!tile) { tile = this.createTile(spec); this.tiles.set(spec.key, tile); }
      this.updateTile(tile, spec);
    }
    this.order = want.map((w) => w.key);
    this.layout();
  }

  /** Mark who speaks without redrawing the rest. */
  markSpeaking(isSpeaking) {
    for (const [key, tile] of this.tiles) {
      const m = key.match(/^p:(.*):camera$/);
      if (m) tile.el.classList.toggle('speaking', isSpeaking(m[1]));
    }
  }

  createTile(spec) {
    const video = h('video', { autoplay: true, muted: true, playsinline: true, 'aria-hidden': 'true' });
    video.muted = true; // property, not just attribute: required for autoplay
    const avatar = h('div', { class: 'avatar', 'aria-hidden': 'true' });
    const micOff = h('span', { class: 'tile-mic-off', role: 'img', 'aria-label': 'Microphone off', hidden: true }, icon('micOff'));
    const name = h('span', { class: 'tile-name' });
    const spot = h('span', { class: 'tile-spotlight', hidden: true, text: 'Spotlight' });
    const paused = h('span', { class: 'tile-paused', hidden: true }, 'Paused: slow connection');
    const attrs = spec.self
      ? { class: `tile self tile-${spec.source}`, dataset: { local: spec.source } }
      : { class: `tile tile-${spec.source}`, dataset: { participant: String(spec.id), source: spec.source } };
    const el = h('div', attrs, video, h('div', { class: 'tile-placeholder' }, avatar, paused), h('div', { class: 'tile-label' }, micOff, name, spot));
    let hide = null;
    let pin = null;
    if (!spec.self) {
      // Someone with a slow link, or who does not need a picture, hides it: it stops coming.
      hide = h('button', { class: 'tile-hide', type: 'button', onclick: () => this.toggleHidden(spec.key) });
      // A camera pinned takes the big spot (and, being large, the node's larger layer).
      if (spec.source === 'camera') {
        pin = h('button', { class: 'tile-pin', type: 'button', onclick: () => this.onPin && this.onPin(spec.key) });
      }
      el.append(h('div', { class: 'tile-actions' }, ...(pin ? [pin] : []), hide));
    }
    let audio = null;
    if (!spec.self && spec.source === 'camera') {
      // Separate <audio>: sound keeps playing while the video shows a placeholder.
      audio = h('audio', { autoplay: true });
      el.append(audio);
    }
    this.inner.append(el);
    return { el, video, audio, avatar, micOff, name, spot, hide, pin, paused };
  }

  updateTile(tile, spec) {
    tile.spec = spec;
    const hidden = this.hidden.has(spec.key);
    if (tile.hide) {
      tile.hide.textContent = hidden ? 'Show video' : 'Hide video';
      tile.hide.setAttribute('aria-label', `${hidden ? 'Show' : 'Hide'} ${spec.label}'s video`);
      tile.el.classList.toggle('video-hidden', hidden);
    }
    if (tile.pin) {
      tile.pin.textContent = spec.pinned ? 'Unpin' : 'Pin';
      tile.pin.setAttribute('aria-pressed', String(!!spec.pinned));
      tile.pin.setAttribute('aria-label', `${spec.pinned ? 'Unpin' : 'Pin'} ${spec.label}'s video`);
    }
    tile.el.classList.toggle('pinned', !!spec.pinned);
    tile.el.classList.toggle('spotlit', !!spec.spotlight);
    tile.spot.hidden = !spec.spotlight;
    tile.name.textContent = spec.label;
    tile.el.setAttribute('aria-label', spec.label);
    tile.micOff.hidden = !(spec.source === 'camera' && !spec.audio);
    tile.avatar.textContent = initials(spec.name);
    tile.avatar.style.setProperty('--hue', hueFor(spec.name));
    const t = spec.videoTrack;
    // Remote tracks stay "muted" until the first packets arrive: keep the placeholder till then.
    const live = !!t && t.readyState === 'live' && (spec.self || !t.muted);
    // Paused by the node for our link: its initials, and why, not a frozen last frame.
    tile.paused.hidden = !spec.paused || hidden;
    tile.el.classList.toggle('no-video', hidden || !!spec.paused || !(spec.videoOn && live));
    tile.el.classList.toggle('mirror', !!spec.mirror);
    tile.el.classList.toggle('speaking', !!spec.speaking);
    this.attach(tile.video, t);
    if (tile.audio) this.attach(tile.audio, spec.audioTrack);
  }

  /** Point a media element at a track, only when it changed (avoids flicker). */
  attach(el, track) {
    const current = el.srcObject ? el.srcObject.getTracks()[0] : null;
    if (current === (track || null)) return;
    el.srcObject = track ? new MediaStream([track]) : null;
    if (!track) return;
    const p = el.play();
    if (p && p.catch) {
      p.catch((err) => {
        // Autoplay with sound needs a user gesture in some browsers.
        if (err && err.name === 'NotAllowedError' && el.tagName === 'AUDIO') this.onSoundBlocked();
      });
    }
  }

  onSoundBlocked() {
    this.soundBlocked = true;
    if (this.soundToast && this.soundToast.isConnected) return;
    this.soundToast = toast('Your browser is holding back the meeting sound.', {
      timeout: 0, action: { label: 'Turn on sound', onClick: () => this.unlockSound() },
    });
  }

  unlockSound() {
    this.soundBlocked = false;
    if (this.soundToast) { this.soundToast.remove(); this.soundToast = null; }
    for (const tile of this.tiles.values()) {
      if (tile.audio && tile.audio.srcObject) {
        tile.audio.play().catch((err) => { if (err && err.name === 'NotAllowedError') this.onSoundBlocked(); });
      }
    }
  }

  /** Fill the stage: equal grid, or the big spot (screens, a pinned camera) plus a strip
   * of faces. */
  layout() {
    const stage = this.el;
    if (!stage.isConnected) return;
    const narrow = stage.clientWidth < 600;
    const pad = narrow ? 6 : 12;
    const gap = narrow ? 6 : 10;
    const W = stage.clientWidth - 2 * pad;
    const H = stage.clientHeight - 2 * pad;
    if (W <= 0 || H <= 0) return;
    const tiles = this.order.map((k) => this.tiles.get(k)).filter(Boolean);
    const screens = tiles.filter((t) => t.spec && t.spec.stage);
    const faces = tiles.filter((t) => !(t.spec && t.spec.stage));
    const place = (group, box, minW, fill = true) => {
      const { rects, bottom } = gridRects(group.length, box, gap, minW, fill);
      group.forEach((t, i) => {
        const s = t.el.style;
        s.left = `${rects[i].left}px`;
        s.top = `${rects[i].top}px`;
        s.width = `${rects[i].width}px`;
        s.height = `${rects[i].height}px`;
      });
      return bottom;
    };
    let bottom;
    if (screens.length && faces.length) {
      if (W >= H) {
        const stripW = Math.min(320, Math.max(140, W * 0.22));
        place(screens, { x: pad, y: pad, w: W - stripW - gap, h: H });
        bottom = place(faces, { x: pad + W - stripW, y: pad, w: stripW, h: H }, 0, false);
      } else {
        const stripH = Math.min(260, Math.max(90, H * 0.3));
        place(screens, { x: pad, y: pad, w: W, h: H - stripH - gap });
        bottom = place(faces, { x: pad, y: pad + H - stripH, w: W, h: stripH }, 0, false);
      }
    } else {
      bottom = place(tiles, { x: pad, y: pad, w: W, h: H }, narrow ? 130 : 180);
    }
    // Taller than the stage (many people on a phone): let it scroll.
    this.inner.style.height = `${Math.max(stage.clientHeight, bottom + pad)}px`;
    this.reportView();
  }

  /** Stop every element and observer: the meeting is over. */
  destroy() {
    this.resizeObserver.disconnect();
    if (this.soundToast) this.soundToast.remove();
    for (const tile of this.tiles.values()) destroyTile(tile);
    this.tiles.clear();
  }
}

function destroyTile(tile) {
  for (const m of [tile.video, tile.audio]) {
    if (m) { m.pause(); m.srcObject = null; }
  }
  tile.el.remove();
}
