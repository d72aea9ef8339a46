import { test } from 'node:test';
import assert from 'node:assert/strict';
import { retryDelay, lostBanner, lostWhy, fatalScreen, TRANSIENT_FATAL } from '../../assets/connection.js';

test('the wait before each attempt grows to 10 s and stays there, between half and all of its step', () => {
  const steps = [0, 1, 2, 3, 4, 5, 50].map((a) => [retryDelay(a, 0), retryDelay(a, 0.999999)]);
  assert.deepEqual(steps.map(([lo]) => lo), [500, 1000, 2000, 4000, 5000, 5000, 5000]);
  for (const [lo, hi] of steps) assert.ok(hi > lo && hi <= 2 * lo, `${lo}..${hi}`);
  assert.ok(retryDelay(50, 0.999999) <= 10000);
});

test('the first loss is a blip; from the second the banner says what fails', () => {
  assert.equal(lostBanner({ reason: 'closed', stage: 'opening', attempt: 1 }), 'Connection lost — reconnecting…');
  assert.equal(lostBanner({ reason: 'closed', stage: 'opening', attempt: 2 }),
    'Connection lost — reconnecting… (the node cannot be reached; attempt 2)');
  assert.equal(lostWhy('media', 'joined'), 'the audio and video path failed');
  assert.equal(lostBanner({ reason: 'media', stage: 'media', attempt: 1 }),
    'Connection lost — reconnecting… (audio and video could not get through to the node, perhaps a firewall blocks UDP)');
  assert.equal(lostWhy('media', 'media'), 'audio and video could not get through to the node, perhaps a firewall blocks UDP');
  assert.equal(lostBanner({ reason: 'media', stage: 'media', attempt: 3 }),
    'Connection lost — reconnecting… (audio and video could not get through to the node, perhaps a firewall blocks UDP; attempt 3)');
  assert.equal(lostWhy('timeout', 'joined'), 'the node stopped answering');
});

test('only media and slow-consumer failures reconnect', () => {
  assert.deepEqual([...TRANSIENT_FATAL].sort(), ['media_failed', 'slow_consumer']);
});

test('the end screen: the host may download the recordings, others may not', () => {
  assert.deepEqual(fatalScreen('ended', '', { role: 'host' }).actions, ['start', 'recordings']);
  assert.deepEqual(fatalScreen('ended', '', { role: 'moderator' }).actions, ['start']);
  assert.equal(fatalScreen('ended', '', { role: 'host', deleting: true }).title, 'Meeting deleted');
});

test('a refused invite says why, as a sentence', () => {
  const s = fatalScreen('invite_refused', 'the invite has expired');
  assert.equal(s.detail, 'The invite has expired. Ask the host for a new invite link.');
  assert.deepEqual(fatalScreen('removed').actions, ['start']);
  assert.deepEqual(fatalScreen('meeting_full').actions, ['retry', 'new']);
  assert.equal(fatalScreen('bad_name').actions[0], 'rename');
  const other = fatalScreen('internal');
  assert.equal(other.detail, 'The node reported: internal');
  assert.deepEqual(other.actions, ['rejoin', 'new']);
});
