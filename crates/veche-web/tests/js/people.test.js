import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nodeLine, ownPath } from '../../assets/people.js';

test('our own row says media over TCP, and nothing for UDP or before media connects', () => {
  assert.equal(ownPath('tcp'), ' · media over TCP');
  assert.equal(ownPath('udp'), '');
  assert.equal(ownPath(null), '');
});

test('a node line says its people, the media path and loss worth mentioning', () => {
  const line = nodeLine({ id: '12D3KooWabcdefgh', participants: 1, media: 'connected', path: 'relayed', via: 'QmRelay12345678',
    control: 'direct', media_rtt_ms: 41.6, kbps_out: 300.4, kbps_in: 120, loss_in: 0.02 });
  assert.equal(line.who, 'abcdefgh · 1 person');
  assert.equal(line.path, ' media relayed via 12345678, control direct · 42 ms · ↑300 ↓120 kbit/s · 2.0% loss');
  assert.equal(nodeLine({ id: 'n', name: 'School', participants: 3, media: 'connecting' }).path, ' media connecting…, control ?');
});

test('a node line says when the media between the nodes goes over TCP, and only then', () => {
  const over = (transport) => nodeLine({ id: 'n', participants: 2, media: 'connected', path: 'direct', control: 'direct', transport }).path;
  assert.equal(over('tcp'), ' media direct over TCP, control direct · ↑0 ↓0 kbit/s');
  assert.equal(over('udp'), ' media direct, control direct · ↑0 ↓0 kbit/s');
  assert.equal(over(null), ' media direct, control direct · ↑0 ↓0 kbit/s');
});
