// One connection attempt to the node: the signaling WebSocket plus the
// RTCPeerConnection it negotiates (see docs/protocol.md). A Session never
// reconnects by itself; it reports `lost` and the meeting makes a new one.

import { signChallenge, KeyStoreSlow } from './keys.js';

// No iceServers: the node hands out its own host candidates.
const PC_CONFIG = { bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' };
const ICE_GATHER_CAP_MS = 2000;  // the node does not take trickled candidates
const WELCOME_TIMEOUT_MS = 15000; // a socket that opens but never welcomes is dead
// Audio and video that never connect after the welcome (UDP blocked on the way), or stay
// interrupted this long, are lost: a fresh attempt, and the person is told why. Longer
// than the node's own grace (15 s), so a network back within that keeps its place.
const MEDIA_CONNECT_MS = 20000;
const MEDIA_INTERRUPTED_MS = 20000;

// The camera in three simulcast layers (a quarter, half and the full size), smallest
// first; the node sends each viewer the one that fills its tile and tells us which layers
// nobody watches, whose encoders then stop. A camera too small for all three gets fewer
// (the browser drops the largest).
const CAMERA_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 120_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];
// A screen share: the full resolution at a low frame rate (text stays sharp).
const SCREEN_ENCODING = [{ maxBitrate: 2_500_000, maxFramerate: 15 }];

/** Resolve once ICE gathering is complete, or after the cap. */
function iceGatheringDone(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onState);
      pc.removeEventListener('icecandidate', onCandidate);
      resolve();
    };
    const onState = () => { if (pc.iceGatheringState === 'complete') finish(); };
    const onCandidate = (ev) => { if (!ev.candidate) finish(); }; // null candidate = end of gathering
    const timer = setTimeout(finish, ICE_GATHER_CAP_MS);
    pc.addEventListener('icegatheringstatechange', onState);
    pc.addEventListener('icecandidate', onCandidate);
  });
}

export class Session {
  /**
   * local: {stream, mic, cam, screen} read when publishing (current tracks).
   * on: {welcome, participantJoined, participantLeft, state, chat, error,
   *      track(info, track), tracksChanged(), lost(reason, stage),
   *      media(connected): audio and video flow (true) or are interrupted (false)}
   */
  constructor({ meetingId, name, local, on }) {
    this.meetingId = meetingId;
    this.name = name;
    this.local = local;
    this.on = on;
    this.ws = null;
    this.pc = null;
    this.transceivers = null; // {mic, camera, screen}
    this.sources = {};        // our mid → "mic" | "camera" | "screen"
    this.tracks = new Map();  // node's mid → {participant, source, kind}
    this.chain = Promise.resolve(); // SDP work, strictly in arrival order
    this.layers = Promise.resolve(); // encoding changes, one at a time
    this.closed = false;
    this.fatal = false;
    this.welcomed = false;
    this.welcomeTimer = null;
    this.mediaTimer = null;   // media that has not connected, or is interrupted, fails at it
    // How far this attempt got, reported with a loss so the page (and a test) can say why.
    this.stage = 'opening';
  }

  start() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(`${proto}//${location.host}/ws`);
    } catch {
      setTimeout(() => this.fail('socket'), 0);
      return;
    }
    this.ws = ws;
    this.welcomeTimer = setTimeout(() => this.fail('timeout'), WELCOME_TIMEOUT_MS);
    // The node speaks first: a challenge, which the join signs with this browser's key.
    ws.onopen = () => { this.stage = 'open'; };
    ws.onmessage = (ev) => this.receive(ev);
    ws.onerror = () => { /* a close event always follows; handled there */ };
    ws.onclose = () => {
      // After a fatal error the node closes on purpose; the meeting shows that error.
      if (!this.closed && !this.fatal) this.fail('closed');
    };
  }

  /** Send one message; false when the socket is not open. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Leave on purpose: tell the node, then tear down without reporting `lost`. */
  leave() {
    this.send({ type: 'leave' });
    this.close();
  }

  /** Tear down quietly (no events). Local tracks are not stopped: they outlive sessions. */
  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.welcomeTimer);
    clearTimeout(this.mediaTimer);
    if (this.ws) {
      this.ws.onopen = this.ws.onmessage = this.ws.onclose = null;
      try { this.ws.close(1000); } catch { /* already closed */ }
    }
    if (this.pc) {
      this.pc.ontrack = this.pc.onconnectionstatechange = this.pc.oniceconnectionstatechange = null;
      try { this.pc.close(); } catch { /* already closed */ }
    }
  }

  /** The connection broke: tear down and let the meeting reconnect. */
  fail(reason) {
    if (this.closed) return;
    this.close();
    this.on.lost(reason, this.stage);
  }

  receive(ev) {
    if (this.closed || typeof ev.data !== 'string') return;
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    if (!msg || typeof msg.type !== 'string') return;
    switch (msg.type) {
      case 'challenge':
        if (this.challenged) break;
        this.challenged = true;
        this.stage = 'signing';
        signChallenge(String(msg.node ?? ''), this.meetingId, String(msg.nonce ?? ''))
          .then(({ key, sig }) => {
            if (this.closed) return;
            const join = { type: 'join', meeting: this.meetingId, name: this.name, key, sig };
            // An invite travels in the link's fragment: never in a request line or a log.
            const invite = new URLSearchParams(location.hash.slice(1)).get('invite');
            if (invite) join.invite = invite;
            this.stage = 'joining';
            this.send(join);
          })
          .catch((err) => {
            if (this.closed) return;
            if (err instanceof KeyStoreSlow) { this.fail('key'); return; }
            this.fatal = true;
            clearTimeout(this.welcomeTimer);
            this.on.error({ type: 'error', code: 'no_key', fatal: true, message: String(err && err.message || err) });
            this.close();
          });
        break;
      case 'welcome':
        clearTimeout(this.welcomeTimer);
        this.welcomed = true;
        this.stage = 'media';
        this.on.welcome(msg);
        // Nothing of ours goes out before the page agreed (a recorded meeting asks first).
        this.enqueue(async () => {
          if (this.on.consent) await this.on.consent(msg);
          if (!this.closed) await this.publish();
        });
        break;
      case 'answer':
        this.enqueue(() => this.acceptAnswer(msg));
        break;
      case 'offer':
        this.enqueue(() => this.answerOffer(msg));
        break;
      case 'participant_joined': this.on.participantJoined(msg.participant); break;
      case 'participant_left': this.on.participantLeft(msg.id); break;
      case 'state': this.on.state(msg); break;
      case 'chat': this.on.chat(msg.message); break;
      case 'moderated': if (this.on.moderated) this.on.moderated(String(msg.action ?? '')); break;
      case 'granted': if (this.on.granted) this.on.granted(String(msg.invite ?? '')); break;
      case 'lobby':
        // Waiting for a moderator: no welcome until they decide.
        clearTimeout(this.welcomeTimer);
        this.stage = 'lobby';
        if (this.on.lobby) this.on.lobby();
        break;
      case 'knock': if (this.on.knock) this.on.knock(msg); break;
      case 'attendance': if (this.on.attendance) this.on.attendance(msg); break;
      case 'rooms': if (this.on.rooms) this.on.rooms(msg); break;
      case 'spotlight': if (this.on.spotlight) this.on.spotlight(msg); break;
      case 'recording': if (this.on.recording) this.on.recording(msg); break;
      case 'speaking': if (this.on.speaking) this.on.speaking(Array.isArray(msg.ids) ? msg.ids : []); break;
      case 'paused': if (this.on.paused) this.on.paused(Array.isArray(msg.ids) ? msg.ids : []); break;
      case 'recordings': if (this.on.recordings) this.on.recordings(msg); break;
      case 'layers': this.layers = this.layers.then(() => this.setLayers(String(msg.source ?? ''), msg.active)).catch((err) => {
        console.warn('veche: could not change the layers sent', err);
      }); break;
      case 'error':
        if (msg.fatal) {
          this.fatal = true;
          clearTimeout(this.welcomeTimer);
        }
        this.on.error(msg);
        break;
      default: break; // newer node, unknown message: ignore
    }
  }

  /** Queue SDP work so offers/answers are handled one at a time, in order. */
  enqueue(task) {
    this.chain = this.chain
      .then(() => (this.closed ? undefined : task()))
      .catch((err) => {
        if (this.closed) return;
        console.error('veche: negotiation failed', err);
        this.fail('negotiation');
      });
  }

  /** The one publishing offer: sendonly mic, camera, screen (tracks may be null). */
  async publish() {
    const pc = new RTCPeerConnection(PC_CONFIG);
    this.pc = pc;
    pc.ontrack = (ev) => {
      const info = this.tracks.get(ev.transceiver.mid);
      if (info) this.on.track(info, ev.track);
    };
    this.mediaTimer = setTimeout(() => this.fail('media'), MEDIA_CONNECT_MS);
    pc.onconnectionstatechange = () => {
      switch (pc.connectionState) {
        case 'connected':
          this.stage = 'connected';
          clearTimeout(this.mediaTimer);
          if (this.on.media) this.on.media(true);
          break;
        case 'disconnected':
          // The network went away (Wi-Fi, a cable): ICE checks resume by themselves if it
          // comes back; past the limit this attempt is given up.
          clearTimeout(this.mediaTimer);
          this.mediaTimer = setTimeout(() => this.fail('media'), MEDIA_INTERRUPTED_MS);
          if (this.on.media) this.on.media(false);
          break;
        case 'failed':
          this.fail('media');
          break;
        default: break;
      }
    };
    // Fallback for browsers without connectionState.
    pc.oniceconnectionstatechange = () => {
      if (pc.iceConnectionState === 'failed') this.fail('media');
    };

    const { stream, mic, cam, screen } = this.local;
    const add = (trackOrKind, encodings) => pc.addTransceiver(trackOrKind, {
      direction: 'sendonly', streams: [stream], ...(encodings ? { sendEncodings: encodings.map((e) => ({ ...e })) } : {}),
    });
    this.transceivers = {
      mic: add(mic || 'audio'),
      camera: add(cam || 'video', CAMERA_LAYERS),
      screen: add(screen || 'video', SCREEN_ENCODING),
    };

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await iceGatheringDone(pc);
    if (this.closed) return;
    const sources = {};
    for (const [source, t] of Object.entries(this.transceivers)) sources[t.mid] = source;
    this.sources = sources;
    this.send({ type: 'offer', sdp: pc.localDescription.sdp, sources });
  }

  async acceptAnswer(msg) {
    if (!this.pc || this.pc.signalingState !== 'have-local-offer') return;
    await this.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
  }

  /** The node adds or stops m-lines for other participants' tracks. */
  async answerOffer(msg) {
    const pc = this.pc;
    if (!pc) return;
    // Mapping first: ontrack fires during setRemoteDescription and needs it.
    this.tracks = new Map(Object.entries(msg.tracks || {}));
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    await iceGatheringDone(pc);
    if (this.closed) return;
    this.send({ type: 'answer', sdp: pc.localDescription.sdp });
    this.on.tracksChanged();
  }

  /** Send only the simulcast layers `active` (rids) of `source`: nobody watches the others. */
  async setLayers(source, active) {
    const t = this.transceivers && this.transceivers[source];
    if (!t || this.closed || !Array.isArray(active)) return;
    const params = t.sender.getParameters();
    if (!params.encodings || params.encodings.length < 2) return;
    let changed = false;
    for (const e of params.encodings) {
      const on = active.includes(e.rid);
      if (e.active !== on) { e.active = on; changed = true; }
    }
    if (changed) await t.sender.setParameters(params);
  }

  /** Swap the track on one of our senders (mute/camera/screen need no renegotiation). */
  async replaceTrack(source, track) {
    const t = this.transceivers && this.transceivers[source];
    if (!t || this.closed) return;
    await t.sender.replaceTrack(track);
  }

  /**
   * Every live remote track by mid, from the transceivers themselves. Used to
   * re-sync tiles after each negotiation (mids can be reused for someone else).
   */
  remoteTracks() {
    const out = [];
    if (!this.pc) return out;
    for (const t of this.pc.getTransceivers()) {
      if (t.mid == null || t.stopped) continue;
      if (t.currentDirection === 'inactive' || t.currentDirection === 'stopped') continue;
      const info = this.tracks.get(t.mid);
      const track = t.receiver && t.receiver.track;
      if (!info || !track || track.readyState === 'ended') continue;
      out.push({ ...info, mid: t.mid, track, receiver: t.receiver });
    }
    return out;
  }

  /** What our audio and video travel over now: 'udp', 'tcp' (UDP blocked on the way:
   * ICE-TCP to the node's media port), or null before they connect. */
  async transport() {
    const pc = this.pc;
    if (!pc || this.closed) return null;
    const report = await pc.getStats();
    let pair = null;
    report.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = report.get(r.selectedCandidatePairId);
    });
    // Firefox names the pair in use instead of a transport's selection.
    if (!pair) report.forEach((r) => { if (r.type === 'candidate-pair' && r.selected) pair = r; });
    const local = pair && report.get(pair.localCandidateId);
    return local && local.protocol ? String(local.protocol) : null;
  }

  /** Inbound/outbound RTP numbers for the test hook. nameOf(participant) → name. */
  async stats(nameOf) {
    const pc = this.pc;
    const result = { inbound: [], outbound: [] };
    if (!pc || this.closed) return result;
    const report = await pc.getStats();
    // Older browsers have no `mid` on RTP stats: recover it through track ids.
    const midByRecvTrack = new Map();
    const midBySendTrack = new Map();
    for (const t of pc.getTransceivers()) {
      if (t.mid == null) continue;
      if (t.receiver && t.receiver.track) midByRecvTrack.set(t.receiver.track.id, t.mid);
      if (t.sender && t.sender.track) midBySendTrack.set(t.sender.track.id, t.mid);
    }
    const n = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
    report.forEach((r) => {
      if (r.type === 'inbound-rtp') {
        const mid = r.mid != null ? String(r.mid) : midByRecvTrack.get(r.trackIdentifier);
        const info = mid != null ? this.tracks.get(mid) : null;
        if (!info) return; // not a track the node told us about
        result.inbound.push({
          participant: info.participant,
          name: nameOf(info.participant),
          source: info.source,
          kind: r.kind || r.mediaType || info.kind,
          mid,
          framesDecoded: n(r.framesDecoded),
          packetsReceived: n(r.packetsReceived),
          packetsLost: n(r.packetsLost),
          pliCount: n(r.pliCount),
          nackCount: n(r.nackCount),
          bytesReceived: n(r.bytesReceived),
          frameWidth: n(r.frameWidth),
          frameHeight: n(r.frameHeight),
        });
      } else if (r.type === 'outbound-rtp') {
        let mid = r.mid != null ? String(r.mid) : undefined;
        if (mid == null && r.mediaSourceId) {
          const src = report.get(r.mediaSourceId);
          if (src) mid = midBySendTrack.get(src.trackIdentifier);
        }
        result.outbound.push({
          kind: r.kind || r.mediaType,
          mid: mid ?? null,
          source: mid != null ? this.sources[mid] || null : null,
          rid: r.rid || null,
          active: r.active !== false,
          packetsSent: n(r.packetsSent),
          bytesSent: n(r.bytesSent),
          framesEncoded: n(r.framesEncoded),
          keyFramesEncoded: n(r.keyFramesEncoded),
          frameWidth: n(r.frameWidth),
          // Keyframes the node asked of this stream.
          pliCount: n(r.pliCount),
        });
      }
    });
    return result;
  }
}
