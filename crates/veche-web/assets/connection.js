// Staying connected, in words: how long to wait before the next attempt, what to tell
// the person about a loss, and which of the node's errors end the meeting (and with
// what screen). Pure functions, unit-tested (crates/veche-web/tests/js).

const BACKOFF_MS = [1000, 2000, 4000, 8000, 10000]; // then 10 s forever

/** Fatal errors that a fresh connection can cure: reconnect instead of giving up. */
export const TRANSIENT_FATAL = new Set(['media_failed', 'slow_consumer']);

/**
 * Milliseconds before attempt `attempt` (0 after the first loss). `random` in [0, 1):
 * after a node restart a whole classroom must not rejoin in the same instant, so each
 * waits between half and all of its step.
 */
export function retryDelay(attempt, random) {
  const base = BACKOFF_MS[Math.min(Math.max(0, attempt), BACKOFF_MS.length - 1)];
  return base * (0.5 + random * 0.5);
}

/** Plain words for how far a lost attempt got (Session's `stage`) and why it ended. */
export function lostWhy(reason, stage) {
  // Welcomed, but audio and video never got through: most often UDP is blocked.
  if (reason === 'media' && stage === 'media') return 'audio and video could not get through to the node, perhaps a firewall blocks UDP';
  if (reason === 'media') return 'the audio and video path failed';
  switch (stage) {
    case 'opening': return 'the node cannot be reached';
    case 'open': return 'the node did not greet this page';
    case 'signing': return "this browser's key store did not answer";
    case 'joining': return 'the node did not answer the join';
    default: return reason === 'timeout' ? 'the node stopped answering' : 'the node closed the connection';
  }
}

/** The banner while reconnecting: the first loss is usually a blip; from the second on,
 * or after audio and video waited 20 s in vain (no blip), the person is told what fails. */
export function lostBanner(lost) {
  const why = lostWhy(lost.reason, lost.stage);
  if (lost.attempt > 1) return `Connection lost — reconnecting… (${why}; attempt ${lost.attempt})`;
  return lost.stage === 'media' ? `Connection lost — reconnecting… (${why})` : 'Connection lost — reconnecting…';
}

/** Plain words for the node's non-fatal error codes (docs/protocol.md). */
export const ERROR_TEXT = {
  bad_message: 'The node did not understand a message from this page.',
  binary_unsupported: 'The node refused a binary message.',
  not_joined: 'Not in the meeting yet — wait a moment and try again.',
  already_joined: 'Already in this meeting.',
  bad_name: 'Names must be 1 to 64 characters.',
  bad_chat: 'Chat messages must be 1 to 2000 characters.',
  rate_limited: 'Slow down — too many messages at once.',
  unexpected_sdp: 'The media connection got out of step; it will recover.',
};

/**
 * What a fatal error ends in: `{ title, detail, actions }`, actions being the names of
 * the buttons ('start': a new meeting's page, 'rejoin', 'retry', 'recordings', 'rename').
 * `deleting`: the host asked for the meeting's deletion; `role`: ours.
 */
export function fatalScreen(code, message, { deleting = false, role = null } = {}) {
  const msg = message ? String(message) : '';
  switch (code) {
    case 'bad_name':
      return { title: "That name can't be used", detail: ERROR_TEXT.bad_name, actions: ['rename'] };
    case 'unknown_meeting':
      return { title: 'Meeting not found', detail: 'This meeting does not exist on this veche node. The link may be mistyped, or the node was restarted.', actions: ['start'] };
    case 'ended':
      if (deleting) return { title: 'Meeting deleted', detail: 'You ended this meeting for everyone and deleted it from this node.', actions: ['start'] };
      // The host keeps the lesson's recordings: they are had from here once it is over.
      return { title: 'The host ended the meeting', detail: 'This meeting is over.', actions: role === 'host' ? ['start', 'recordings'] : ['start'] };
    case 'denied':
      return { title: 'The host did not let you in', detail: 'You waited in this meeting\'s waiting room and the host turned you away.', actions: ['start'] };
    case 'removed':
      return { title: 'You were removed from this meeting', detail: 'The host removed you. You cannot join this meeting again.', actions: ['start'] };
    case 'invite_refused': {
      const why = msg ? `${msg[0].toUpperCase()}${msg.slice(1)}.` : 'The host has not let you in.';
      return { title: "You can't join this meeting", detail: `${why} Ask the host for a new invite link.`, actions: ['start'] };
    }
    case 'bad_signature':
    case 'no_key':
      return { title: 'Could not prove who you are', detail: msg || 'Your key could not sign in to this meeting.', actions: ['retry', 'new'] };
    case 'meeting_full':
      return { title: 'This meeting is full', detail: 'A meeting holds at most 100 people. Try again when someone leaves.', actions: ['retry', 'new'] };
    default:
      return { title: 'Disconnected from the meeting', detail: msg || `The node reported: ${code}`, actions: ['rejoin', 'new'] };
  }
}
