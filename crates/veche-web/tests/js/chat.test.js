import { test } from 'node:test';
import assert from 'node:assert/strict';
import { splitLinks, draftProblem, MAX_CHAT_CHARS } from '../../assets/chat.js';

test('links are cut out of the text, without the sentence punctuation after them', () => {
  assert.deepEqual(splitLinks('see https://example.org/a?b=1. ok'),
    [{ text: 'see ' }, { url: 'https://example.org/a?b=1' }, { text: '. ok' }]);
  assert.deepEqual(splitLinks('(http://x.test/y)'), [{ text: '(' }, { url: 'http://x.test/y' }, { text: ')' }]);
});

test('only http and https become links', () => {
  assert.deepEqual(splitLinks('javascript:alert(1) ftp://a'), [{ text: 'javascript:alert(1) ftp://a' }]);
  assert.deepEqual(splitLinks(''), []);
});

test('a draft of 2000 characters goes, 2001 does not, and an emoji counts as one', () => {
  assert.equal(draftProblem(''), 'empty');
  assert.equal(draftProblem('x'.repeat(MAX_CHAT_CHARS)), null);
  assert.match(draftProblem('x'.repeat(MAX_CHAT_CHARS + 1)), /1 to 2000/);
  assert.equal(draftProblem('😀'.repeat(MAX_CHAT_CHARS)), null);
});
