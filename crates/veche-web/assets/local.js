// Our own microphone, camera and screen. They outlive connection attempts (a reconnect
// sends the same tracks); turning one off is `track.enabled`, never a renegotiation; a
// device we joined without is asked for when first turned on.

import { toast } from './ui.js';
import { getLocalMedia, getScreen, MSG } from './media.js';

export class LocalMedia {
  /**
   * mic/cam: MediaStreamTracks or null; audio/video: whether they start on.
   * io: {replaceTrack(source, track) → Promise (the current session's, or none),
   * changed() (state to send and draw), silenced() (a moderator withholds our mic),
   * over() (the meeting ended)}.
   */
  constructor({ mic, cam, audio, video }, io) {
    this.io = io;
    this.stream = new MediaStream([mic, cam].filter(Boolean));
    this.mic = mic || null;
    this.cam = cam || null;
    this.screen = null;
    this.audio = !!mic && audio !== false;
    this.video = !!cam && video !== false;
    this.hand = false;
    this.busy = { mic: false, camera: false, screen: false };
    if (this.mic) { this.mic.enabled = this.audio; this.watch('mic', this.mic); }
    if (this.cam) { this.cam.enabled = this.video; this.watch('camera', this.cam); }
  }

  /** What the others are told about us. */
  state() {
    return {
      audio: !!(this.mic && this.audio && this.mic.readyState === 'live'),
      video: !!(this.cam && this.video && this.cam.readyState === 'live'),
      screen: !!this.screen,
      hand: !!this.hand,
    };
  }

  /** A moderator muted us: the microphone goes off (the node withholds it anyway). */
  silence() {
    if (!(this.mic && this.audio)) return false;
    this.audio = false;
    this.mic.enabled = false;
    return true;
  }

  /** A device can vanish (unplugged, permission revoked). */
  watch(source, track) {
    track.addEventListener('ended', () => {
      const slot = source === 'mic' ? 'mic' : 'cam';
      if (this[slot] !== track || this.io.over()) return;
      this.stream.removeTrack(track);
      this[slot] = null;
      this.io.replaceTrack(source, null).catch(() => {});
      toast(source === 'mic' ? 'Your microphone stopped working.' : 'Your camera stopped working.', { kind: 'error' });
      this.io.changed();
    });
  }

  /** Toggle mic or camera. With no track yet, ask for one. */
  async toggle(source) {
    if (source === 'mic' && this.io.silenced() && !(this.mic && this.audio)) {
      toast('The host muted you. You can unmute once the host allows it.', { timeout: 5000 });
      return;
    }
    const slot = source === 'mic' ? 'mic' : 'cam';
    const flag = source === 'mic' ? 'audio' : 'video';
    if (this.busy[source] || this.io.over()) return;
    const track = this[slot];
    if (track && track.readyState === 'live') {
      this[flag] = !this[flag];
      track.enabled = this[flag];
    } else {
      // Joined without this device (blocked, missing, or turned off): try now.
      this.busy[source] = true;
      this.io.changed();
      const got = await getLocalMedia({ audio: source === 'mic', video: source === 'camera' });
      this.busy[source] = false;
      const fresh = got[slot];
      if (this.io.over()) { if (fresh) fresh.stop(); return; }
      if (!fresh) {
        toast((got.error && got.error.message) || MSG.notFound, { kind: 'error', timeout: 7000 });
        this.io.changed();
        return;
      }
      this.use(source, fresh);
    }
    this.io.changed();
  }

  /** Start sending a device we joined without (source 'mic' or 'camera'). */
  use(source, fresh) {
    const slot = source === 'mic' ? 'mic' : 'cam';
    if (this[slot]) this.stream.removeTrack(this[slot]);
    this[slot] = fresh;
    this.stream.addTrack(fresh);
    this[source === 'mic' ? 'audio' : 'video'] = fresh.enabled = source !== 'mic' || !this.io.silenced();
    this.watch(source, fresh);
    this.io.replaceTrack(source, fresh).catch(() => toast('Could not send the new device; reconnecting may help.', { kind: 'error' }));
  }

  /**
   * Devices that started only after we joined without them (the browser took longer than
   * the join waits): send them now, as the person asked for them; stop any we no longer want.
   */
  adoptLate(got, prefs) {
    const wanted = [['mic', 'mic', prefs.audio], ['camera', 'cam', prefs.video]];
    for (const [source, slot, want] of wanted) {
      const fresh = got[slot];
      if (!fresh) continue;
      if (this.io.over() || this[slot] || !want) { fresh.stop(); continue; }
      this.use(source, fresh);
    }
    if (!this.io.over()) this.io.changed();
  }

  async toggleScreen() {
    if (this.busy.screen || this.io.over()) return;
    if (this.screen) { this.stopScreen(); return; }
    this.busy.screen = true;
    let track;
    try {
      track = await getScreen();
    } catch (err) {
      toast(err.message, { kind: 'error' });
      return;
    } finally {
      this.busy.screen = false;
    }
    if (this.io.over()) { track.stop(); return; }
    this.screen = track;
    // The browser's own "Stop sharing" button ends the track.
    track.onended = () => { if (this.screen === track) this.stopScreen(); };
    try {
      await this.io.replaceTrack('screen', track);
    } catch {
      toast('Could not start screen sharing.', { kind: 'error' });
      this.stopScreen();
      return;
    }
    this.io.changed();
  }

  stopScreen() {
    const track = this.screen;
    this.screen = null;
    this.io.replaceTrack('screen', null).catch(() => {});
    if (track) { track.onended = null; track.stop(); }
    this.io.changed();
  }

  /** Hold (or give back) everything we send: a recorded meeting waits for our answer. */
  hold() {
    const held = [this.mic, this.cam, this.screen].filter((t) => t && t.enabled);
    for (const t of held) t.enabled = false;
    return () => { for (const t of held) t.enabled = true; };
  }

  /** Turn the camera light off: the person is no longer in a meeting. */
  stop() {
    for (const t of [this.mic, this.cam, this.screen]) if (t) t.stop();
    this.screen = null;
  }
}
