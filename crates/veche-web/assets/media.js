// Local camera / microphone / screen capture, with failures turned into
// plain-words messages a teacher or student can act on.

const AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30, max: 30 } };

export const MSG = {
  blocked: "Camera and microphone are blocked. Allow them in the browser's address bar, then retry.",
  notFound: 'No camera or microphone found',
  noCamera: 'No camera found — you can still talk and listen.',
  noMic: 'No microphone found — others will see you but not hear you.',
  busy: 'Your camera or microphone is being used by another app. Close that app, then retry.',
  slow: 'Your camera and microphone are slow to start: you joined without them, and they will turn on when they are ready.',
  insecure: "Camera and microphone only work on a secure page. Open this meeting over HTTPS (the node's --lan address) or on localhost.",
};

/** False on insecure origins (HTTP on a non-localhost address): the API is missing. */
export function mediaAvailable() {
  return !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

export function screenShareAvailable() {
  return !!(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
}

/** Map a getUserMedia failure to {message, retry}. */
export function describeMediaError(err) {
  if (!err) return null;
  switch (err.name) {
    case 'NotAllowedError':
    case 'PermissionDeniedError':
    case 'SecurityError':
      return { message: MSG.blocked, retry: true };
    case 'NotFoundError':
    case 'DevicesNotFoundError':
    case 'OverconstrainedError':
      return { message: MSG.notFound, retry: true };
    case 'NotReadableError':
    case 'TrackStartError':
    case 'AbortError':
      return { message: MSG.busy, retry: true };
    case 'Insecure':
      return { message: MSG.insecure, retry: false };
    default:
      return { message: `Could not start camera or microphone${err.message ? `: ${err.message}` : ''}`, retry: true };
  }
}

/** Errors where asking for fewer devices can still work (e.g. a laptop with no camera). */
function worthSplitting(err) {
  return ['NotFoundError', 'DevicesNotFoundError', 'OverconstrainedError', 'NotReadableError', 'TrackStartError', 'AbortError']
    .includes(err && err.name);
}

/**
 * Ask for mic and/or camera. Never throws. Returns
 * {mic, cam, error: {message, retry} | null}. Tracks are null when unavailable.
 */
export async function getLocalMedia({ audio = true, video = true } = {}) {
  const result = { mic: null, cam: null, error: null };
  if (!audio && !video) return result;
  if (!mediaAvailable()) {
    result.error = describeMediaError({ name: 'Insecure' });
    return result;
  }
  const md = navigator.mediaDevices;
  try {
    const stream = await md.getUserMedia({ audio: audio && AUDIO, video: video && VIDEO });
    result.mic = stream.getAudioTracks()[0] || null;
    result.cam = stream.getVideoTracks()[0] || null;
    return result;
  } catch (err) {
    if (!(audio && video && worthSplitting(err))) {
      result.error = describeMediaError(err);
      // Asked for one device only: name it.
      if (result.error.message === MSG.notFound && !(audio && video)) {
        result.error = { message: audio ? 'No microphone found' : 'No camera found', retry: true };
      }
      return result;
    }
    // One of the two may still work: try each on its own (one after the other, so
    // a browser never stacks two permission prompts).
    try { result.mic = (await md.getUserMedia({ audio: AUDIO })).getAudioTracks()[0] || null; } catch { /* no mic */ }
    try { result.cam = (await md.getUserMedia({ video: VIDEO })).getVideoTracks()[0] || null; } catch { /* no camera */ }
    if (result.mic && !result.cam) result.error = { message: MSG.noCamera, retry: true };
    else if (!result.mic && result.cam) result.error = { message: MSG.noMic, retry: true };
    else if (!result.mic && !result.cam) result.error = describeMediaError(err);
    return result;
  }
}

/** Screen capture; throws an Error whose message is plain words. */
export async function getScreen() {
  if (!screenShareAvailable()) throw new Error('Screen sharing is not supported in this browser');
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: true });
  } catch (err) {
    if (err && err.name === 'NotAllowedError') throw new Error('Screen sharing was cancelled or blocked');
    if (err && err.name === 'NotReadableError') throw new Error('Could not capture the screen. Another app may be blocking it.');
    throw new Error(`Screen sharing failed${err && err.message ? `: ${err.message}` : ''}`);
  }
  const track = stream.getVideoTracks()[0];
  if (!track) throw new Error('Screen sharing failed: no video');
  // Text and slides matter more than motion for a shared screen.
  if ('contentHint' in track) track.contentHint = 'detail';
  return track;
}
