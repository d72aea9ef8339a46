import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gridRects, wantedTiles, tileViews } from '../../assets/stage.js';

const box = { x: 0, y: 0, w: 1600, h: 900 };

function overlap(a, b) {
  return a.left < b.left + b.width && b.left < a.left + a.width && a.top < b.top + b.height && b.top < a.top + a.height;
}

test('no tiles, no rectangles', () => {
  assert.deepEqual(gridRects(0, box, 10), { rects: [], bottom: 0 });
});

test('tiles fill a wide stage side by side, inside it, never overlapping', () => {
  for (const n of [1, 2, 3, 4, 7, 12, 30]) {
    const { rects } = gridRects(n, box, 10, 180);
    assert.equal(rects.length, n);
    for (const r of rects) {
      assert.ok(r.left >= 0 && r.top >= 0 && r.left + r.width <= box.w + 1 && r.top + r.height <= box.h + 1, `${n}: ${JSON.stringify(r)}`);
    }
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) assert.ok(!overlap(rects[i], rects[j]), `${n}: ${i} and ${j}`);
  }
  const two = gridRects(2, box, 10).rects;
  assert.equal(two[0].top, two[1].top, 'two people on a wide screen sit side by side');
});

test('too many to read on a phone: tiles keep their minimum width and the stage scrolls', () => {
  const phone = { x: 0, y: 0, w: 360, h: 640 };
  const { rects, bottom } = gridRects(30, phone, 6, 130);
  assert.ok(rects.every((r) => r.width >= 130));
  assert.ok(bottom > phone.h);
});

test('screens come first, then you, then the others of your room', () => {
  const want = wantedTiles({
    name: 'Me',
    local: { screen: null, cam: null },
    me: { audio: true, video: false },
    participants: [
      { id: 1, name: 'Ada', audio: true, video: true, screen: true },
      { id: 2, name: 'Bob', audio: false, video: true, screen: false },
      { id: 3, name: 'Cy', audio: true, video: true, screen: true },
    ],
    media: new Map([['1', { camera: 'cam1', mic: 'mic1', screen: 'scr1' }]]),
    speaking: new Set(['1', '2']),
    inRoom: (p) => p.id !== 3,
  });
  assert.deepEqual(want.map((t) => t.key), ['p:1:screen', 'self:camera', 'p:1:camera', 'p:2:camera']);
  assert.equal(want[0].videoTrack, 'scr1');
  assert.equal(want[2].audioTrack, 'mic1');
  // Bob's microphone is off: he is not shown speaking even if a level came through.
  assert.deepEqual(want.filter((t) => t.speaking).map((t) => t.id), [1]);
});

test('the node is told each remote tile height in device pixels, and which are not seen', () => {
  const band = { top: 0, bottom: 800 };
  const tiles = [
    { id: 1, source: 'camera', top: 10, height: 300, hidden: false },
    { id: 2, source: 'camera', top: 10, height: 300, hidden: true },
    { id: 3, source: 'camera', top: 900, height: 300, hidden: false },
    { id: 1, source: 'screen', top: 790, height: 300, hidden: false },
  ];
  assert.deepEqual(tileViews(tiles, band, false, 2), [
    { participant: 1, source: 'camera', visible: true, height: 600 },
    { participant: 2, source: 'camera', visible: false, height: 600 },
    { participant: 3, source: 'camera', visible: false, height: 600 },
    { participant: 1, source: 'screen', visible: true, height: 600 },
  ]);
  // Behind another tab, nothing is seen.
  assert.ok(tileViews(tiles, band, true).every((t) => !t.visible));
  assert.deepEqual(tileViews([], band, false), []);
});

test('a pinned camera comes first, on the big spot with the screens; a pin of someone not here pins nothing', () => {
  const view = (pinned) => ({
    name: 'Me',
    local: { screen: null, cam: null },
    me: { audio: true, video: true },
    participants: [
      { id: 1, name: 'Ada', audio: true, video: true, screen: true },
      { id: 2, name: 'Bob', audio: true, video: true, screen: false },
      { id: 3, name: 'Cy', audio: true, video: true, screen: false },
    ],
    media: new Map(),
    speaking: new Set(),
    inRoom: (p) => p.id !== 3,
    pinned,
  });
  const none = wantedTiles(view(null));
  assert.deepEqual(none.filter((t) => t.stage).map((t) => t.key), ['p:1:screen']);
  assert.ok(none.every((t) => !t.pinned));
  const bob = wantedTiles(view('p:2:camera'));
  assert.deepEqual(bob.map((t) => t.key), ['p:2:camera', 'p:1:screen', 'self:camera', 'p:1:camera']);
  assert.deepEqual(bob.filter((t) => t.stage).map((t) => t.key), ['p:2:camera', 'p:1:screen']);
  assert.deepEqual(bob.filter((t) => t.pinned).map((t) => t.key), ['p:2:camera']);
  // Cy is in another room, Dan never came: nothing pinned, the usual order.
  for (const gone of ['p:3:camera', 'p:4:camera']) {
    assert.deepEqual(wantedTiles(view(gone)).map((t) => t.key), none.map((t) => t.key));
  }
});

test('the spotlight takes the big spot for everyone, unless you pinned another', () => {
  const view = (pinned, spotlight) => ({
    name: 'Me',
    local: { screen: null, cam: null },
    me: { audio: true, video: true },
    participants: [
      { id: 1, name: 'Ada', audio: true, video: true, screen: false, key: 'a-key' },
      { id: 2, name: 'Bob', audio: true, video: true, screen: false, key: 'b-key' },
      { id: 3, name: 'Cy', audio: true, video: true, screen: false, key: 'c-key' },
    ],
    media: new Map(),
    speaking: new Set(),
    inRoom: (p) => p.id !== 3,
    pinned,
    spotlight,
  });
  const bob = wantedTiles(view(null, 'b-key'));
  assert.deepEqual(bob.map((t) => t.key), ['p:2:camera', 'self:camera', 'p:1:camera']);
  assert.deepEqual(bob.filter((t) => t.stage).map((t) => t.key), ['p:2:camera']);
  assert.deepEqual(bob.filter((t) => t.spotlight).map((t) => t.key), ['p:2:camera']);
  // Your own pin wins; the spotlight stays marked in the gallery.
  const mine = wantedTiles(view('p:1:camera', 'b-key'));
  assert.deepEqual(mine.filter((t) => t.stage).map((t) => t.key), ['p:1:camera']);
  assert.deepEqual(mine.filter((t) => t.spotlight).map((t) => t.key), ['p:2:camera']);
  // Someone in another room, or nobody's key: the usual gallery.
  const plain = wantedTiles(view(null, null)).map((t) => t.key);
  assert.deepEqual(plain, ['self:camera', 'p:1:camera', 'p:2:camera']);
  assert.deepEqual(wantedTiles(view(null, 'c-key')).map((t) => t.key), plain);
});

test('the strip beside the big spot keeps 16:9 tiles; the main grid may grow them', () => {
  const strip = { x: 0, y: 0, w: 320, h: 1000 };
  const tall = gridRects(2, strip, 10).rects;
  assert.ok(tall[0].height > 320 * 9 / 16 + 1, 'the main grid fills spare height');
  const flat = gridRects(2, strip, 10, 0, false).rects;
  assert.equal(flat.length, 2);
  for (const r of flat) assert.ok(Math.abs(r.height - r.width * 9 / 16) <= 1, JSON.stringify(r));
});

test('a camera the link has no room for is marked paused; a camera that is off is not', () => {
  const want = wantedTiles({
    name: 'Me',
    local: { screen: null, cam: null },
    me: { audio: true, video: true },
    participants: [
      { id: 1, name: 'Ada', audio: true, video: true, screen: false },
      { id: 2, name: 'Bob', audio: true, video: false, screen: false },
      { id: 3, name: 'Cy', audio: true, video: true, screen: false },
    ],
    media: new Map(),
    speaking: new Set(),
    inRoom: () => true,
    pinned: null,
    paused: new Set(['1', '2']),
  });
  assert.deepEqual(want.filter((t) => t.paused).map((t) => t.id), [1]);
  // Without the set (an older caller), nothing is paused.
  const plain = wantedTiles({ ...{ name: 'Me', local: { screen: null, cam: null }, me: { audio: true, video: true } },
    participants: [{ id: 1, name: 'Ada', audio: true, video: true }], media: new Map(), speaking: new Set(), inRoom: () => true });
  assert.ok(plain.every((t) => !t.paused));
});
