//! One browser's WebRTC connection and the negotiation state around it.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::PayloadParams;
use str0m::media::{
    Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer,
};
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};
use str0m::{Event, Input, Output, Rtc};
use tokio::sync::mpsc;
use veche_core::{Layer, Layers, LinkTrack, ParticipantId, Source, TrackId, TrackKind};

use crate::api::{ErrorCode, PeerEvent, TrackInfo};
use crate::forward::{Incoming, Rewriter};

/// Retransmission history per outgoing video stream: this long...
pub(crate) const VIDEO_HISTORY: std::time::Duration = std::time::Duration::from_secs(1);
/// ...and at most this many packets (1 s of a 4 Mbit/s screen share).
pub(crate) const VIDEO_HISTORY_PACKETS: usize = 512;

/// A contained failure: the peer must go, nobody else is affected.
#[derive(Debug)]
pub(crate) struct PeerFailure {
    pub code: ErrorCode,
    pub message: String,
}

impl PeerFailure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Run `f` on this peer's state, turning a panic inside str0m into a failure of this peer.
pub(crate) fn contained<T>(f: impl FnOnce() -> T) -> Result<T, PeerFailure> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        PeerFailure::new(ErrorCode::Internal, format!("media engine fault: {what}"))
    })
}

/// A packet on its way to subscribers: shared by all of them, written into each one's
/// stream when that subscriber is drained (on whichever thread drains it).
pub(crate) struct Forwarded {
    pub incoming: Incoming,
    pub track: TrackId,
    pub params: PayloadParams,
    pub ext: ExtensionValues,
    /// It ends a frame (every audio packet does).
    pub frame: bool,
    /// It starts a VP8 keyframe: a stream that switches to it needs no keyframe request.
    pub keyframe: bool,
}

/// Most packets queued for one subscriber between two drains (a drain comes every pass:
/// more means the engine fell far behind, and older media is worth less than newer).
const MAX_QUEUED: usize = 4096;

/// What draining a peer did besides transmitting.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    /// Frames written to it.
    pub frames: u64,
    /// Tracks whose stream to it now carries another source (its decoder needs a keyframe).
    pub switched: Vec<TrackId>,
}

/// An outgoing stream waiting to be negotiated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingSub {
    pub track: TrackId,
    pub info: TrackInfo,
    /// Sent in these layers side by side, one stream (rid) each: a node link's camera
    /// (`veche_core::Sfu::link_layers`). None: one stream.
    pub layers: Layers,
}

/// One outgoing stream's renumbering, and the publisher's payload type → ours.
type OutStream = (Rewriter, Option<(Pt, Pt)>);

/// The engine's offer that awaits the browser's answer.
pub(crate) struct OfferInFlight {
    pending: SdpPendingOffer,
    added: Vec<TrackId>,
    pub sent_at: Instant,
}

/// What is at the other end of a peer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// A browser attached to this node.
    Browser,
    /// Our media link to another node for one meeting: we offer, it carries our local
    /// participants' tracks.
    LinkOut { node: String, meeting: String },
    /// Another node's media link to us: it offers, we receive its participants' tracks.
    LinkIn {
        node: String,
        meeting: String,
        /// The other node's id for this link, so a new link replaces an old one.
        link: u64,
        /// mid → whose track, from the latest offer.
        tracks: BTreeMap<String, LinkTrack>,
    },
}

impl Role {
    pub fn is_link(&self) -> bool {
        !matches!(self, Role::Browser)
    }
}

/// What a node link's last stats said, and the byte counters to compute rates from.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LinkStats {
    pub kbps_in: f64,
    pub kbps_out: f64,
    pub loss_in: Option<f32>,
    pub loss_out: Option<f32>,
    pub rtt: Option<std::time::Duration>,
    last: Option<(Instant, u64, u64)>,
}

impl LinkStats {
    pub fn update(&mut self, s: &str0m::stats::PeerStats) {
        if let Some((t, rx, tx)) = self.last {
            let dt = s.timestamp.saturating_duration_since(t).as_secs_f64();
            if dt > 0.0 {
                self.kbps_in = s.bytes_rx.saturating_sub(rx) as f64 * 8.0 / dt / 1000.0;
                self.kbps_out = s.bytes_tx.saturating_sub(tx) as f64 * 8.0 / dt / 1000.0;
            }
        }
        self.last = Some((s.timestamp, s.bytes_rx, s.bytes_tx));
        self.loss_in = s.ingress_loss_fraction;
        self.loss_out = s.egress_loss_fraction;
        self.rtt = s.rtt;
    }
}

/// An offer the engine made, to deliver to the other side.
pub(crate) struct MadeOffer {
    pub sdp: String,
    pub tracks: BTreeMap<String, TrackInfo>,
}

/// When a connection took each step towards connecting: its first offer, the first answer
/// (ICE starts), ICE connected (DTLS starts). A node link is given up when it has not got
/// further for a while, not at a fixed time after its offer: on a loaded node each step can
/// take seconds, and a link about to connect would be torn down and begun again.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Progress {
    pub offered: Option<Instant>,
    pub answered: Option<Instant>,
    pub ice_connected: Option<Instant>,
}

impl Progress {
    /// When the last step was taken, if any was.
    pub fn last_step(&self) -> Option<Instant> {
        self.ice_connected.or(self.answered).or(self.offered)
    }
}

pub(crate) struct Peer {
    pub id: ParticipantId,
    pub role: Role,
    pub rtc: Rtc,
    events: mpsc::Sender<PeerEvent>,
    pub joined_at: Instant,
    /// The next time str0m wants a timeout input.
    pub timeout: Instant,
    /// Media was written since the last poll: str0m sends it only once time moves, so the
    /// next poll moves time even before the timeout (else forwarding waits for it: ~1.4 ms
    /// on average, measured by veche-bench).
    pub written: bool,
    /// The browser's offer was accepted; from now on only the engine offers.
    pub offered: bool,
    /// Our own node link: the link port it goes out from (everything else is on the media
    /// port).
    pub link_port: Option<u16>,
    /// A link of ours: its active ICE-TCP candidates were added (UDP did not connect soon).
    pub tcp_added: bool,
    pub connected: bool,
    /// Connection figures for node links (str0m's peer stats, once a second).
    pub link_stats: LinkStats,
    /// When the last datagram from it arrived.
    pub last_input: Instant,
    /// When the last media packet it sends us arrived.
    pub last_media: Instant,
    /// Packets from it since the last housekeeping, over UDP and over TCP; and what most
    /// of them came over in the last second that had any (media flows on the pair in use).
    pub in_by_proto: (u64, u64),
    pub transport: Option<str0m::net::Protocol>,
    /// Media frames received from it and written to it (a video frame is the packet that
    /// ends it, marker bit set; every audio packet is one).
    pub frames_in: u64,
    pub frames_out: u64,
    /// Since when ICE says disconnected (cleared when it recovers).
    pub disconnected_since: Option<Instant>,
    /// What the browser said each of its mids carries.
    sources: HashMap<String, Source>,
    /// Published tracks: incoming mid → track, and back.
    pub in_tracks: HashMap<Mid, TrackId>,
    in_mids: HashMap<TrackId, Mid>,
    /// Incoming SSRC → mid and simulcast layer (a packet names only its SSRC; browsers
    /// stop sending the mid and rid once the node has seen them), learned from str0m once.
    in_ssrcs: HashMap<Ssrc, (Mid, Option<Layer>)>,
    /// Bytes received per incoming mid and simulcast layer since the engine last measured
    /// (what each layer costs a viewer).
    in_bytes: HashMap<(Mid, Option<Layer>), u64>,
    /// Per incoming mid: a counter that moves on after a stretch that was withheld, and
    /// whether the last packet was (so subscribers' streams continue without a hole).
    in_epochs: HashMap<Mid, (u32, bool)>,
    /// Per outgoing stream (its mid, and its layer on an m-line of several): its
    /// renumbering, and the publisher's payload type → ours.
    rewriters: HashMap<(Mid, Option<Layer>), OutStream>,
    /// Keyframes asked for on incoming tracks that had no stream yet (bounded).
    keyframes_waiting: Vec<(TrackId, Option<Layer>)>,
    /// Outgoing streams (negotiating or ready): track → mid, mid → (track, info).
    out_mids: HashMap<TrackId, Mid>,
    out_tracks: BTreeMap<Mid, (TrackId, TrackInfo)>,
    /// What each outgoing m-line was made for (audio or video, the layers side by side).
    out_shapes: HashMap<Mid, (TrackKind, Layers)>,
    to_add: Vec<PendingSub>,
    /// Outgoing m-lines whose track went away, to be made inactive at the next offer.
    to_idle: Vec<Mid>,
    /// Inactive outgoing m-lines, each carrying the next track of its shape. str0m never
    /// recycles an m-line it offered, so without this a long-lived peer (a node link, a
    /// browser that stays all day) grows by one m-line per track anyone ever published,
    /// in memory and in every offer.
    idle: Vec<Mid>,
    /// What each incoming m-line of a node link is (audio or video, its layers), seen
    /// once, for when the other node reuses it for another track.
    pub in_shapes: HashMap<Mid, (TrackKind, Layers)>,
    pub offer: Option<OfferInFlight>,
    /// How far this connection got towards connecting, and when (node links: the connect
    /// deadline counts from its last step).
    pub progress: Progress,
    /// Negotiated before ICE connected; reported ready once it is, so the keyframe asked for
    /// on subscribe is not dropped on a connection that cannot carry it yet.
    ready_when_connected: Vec<TrackId>,
    /// Packets forwarded to it since it was last drained: outgoing mid, its layer's stream
    /// on an m-line of several, the stretch (see `veche_core::Gate`), the packet.
    queued: Vec<(Mid, Option<Layer>, u32, Arc<Forwarded>)>,
}

impl Peer {
    pub fn new(
        id: ParticipantId,
        role: Role,
        rtc: Rtc,
        events: mpsc::Sender<PeerEvent>,
        now: Instant,
    ) -> Self {
        Self {
            id,
            role,
            rtc,
            events,
            joined_at: now,
            timeout: now,
            written: false,
            offered: false,
            link_port: None,
            tcp_added: false,
            connected: false,
            link_stats: LinkStats::default(),
            last_input: now,
            last_media: now,
            in_by_proto: (0, 0),
            transport: None,
            frames_in: 0,
            frames_out: 0,
            disconnected_since: None,
            sources: HashMap::new(),
            in_tracks: HashMap::new(),
            in_mids: HashMap::new(),
            in_ssrcs: HashMap::new(),
            in_bytes: HashMap::new(),
            in_epochs: HashMap::new(),
            rewriters: HashMap::new(),
            keyframes_waiting: Vec::new(),
            out_mids: HashMap::new(),
            out_tracks: BTreeMap::new(),
            out_shapes: HashMap::new(),
            to_add: Vec::new(),
            to_idle: Vec::new(),
            idle: Vec::new(),
            in_shapes: HashMap::new(),
            offer: None,
            progress: Progress::default(),
            ready_when_connected: Vec::new(),
            queued: Vec::new(),
        }
    }

    /// Queue an event for the browser. A full queue means the browser stopped reading.
    pub fn send(&self, ev: PeerEvent) -> Result<(), PeerFailure> {
        match self.events.try_send(ev) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(PeerFailure::new(
                ErrorCode::SlowConsumer,
                "the browser is not reading its signaling messages",
            )),
            // The signaling side is gone; its Leave is on the way.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    /// Best effort, for the last words before the peer is dropped.
    pub fn send_final(&self, ev: PeerEvent) {
        let _ = self.events.try_send(ev);
    }

    /// Accept an offer (the browser's one publishing offer, or a node link's latest) and
    /// return the answer.
    pub fn accept_offer(
        &mut self,
        sdp: &str,
        sources: HashMap<String, Source>,
    ) -> Result<String, PeerFailure> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| {
            PeerFailure::new(ErrorCode::BadSdp, format!("cannot parse the offer: {e}"))
        })?;
        let answer = contained(|| self.rtc.sdp_api().accept_offer(offer))?.map_err(|e| {
            PeerFailure::new(ErrorCode::BadSdp, format!("cannot accept the offer: {e}"))
        })?;
        self.sources = sources;
        self.offered = true;
        Ok(answer.to_sdp_string())
    }

    /// What the browser said `mid` carries.
    pub fn source_of(&self, mid: Mid) -> Option<Source> {
        self.sources.get(&*mid.to_string()).copied()
    }

    pub fn add_published(&mut self, mid: Mid, track: TrackId) {
        self.in_tracks.insert(mid, track);
        self.in_mids.insert(track, mid);
    }

    /// Ask this peer (as publisher) for a keyframe on `track`: of simulcast `layer`, or
    /// (`None`) of each layer it sends.
    pub fn request_keyframe(
        &mut self,
        track: TrackId,
        layer: Option<Layer>,
    ) -> Result<(), PeerFailure> {
        let Some(&mid) = self.in_mids.get(&track) else {
            return Ok(());
        };
        let sent = contained(|| {
            let params = self.rtc.codec_config().params();
            let kind = if params.iter().any(|p| p.fb_pli()) {
                KeyframeRequestKind::Pli
            } else if params.iter().any(|p| p.fb_fir()) {
                KeyframeRequestKind::Fir
            } else {
                return false;
            };
            let mut api = self.rtc.direct_api();
            // `None` finds any one of a simulcast track's streams: name each layer.
            let rids: Vec<Option<Rid>> = match layer {
                Some(l) => vec![Some(Rid::from(l.rid()))],
                None => {
                    let mut r: Vec<Option<Rid>> = Layer::ALL
                        .iter()
                        .map(|l| Rid::from(l.rid()))
                        .filter(|rid| api.stream_rx_by_mid(mid, Some(*rid)).is_some())
                        .map(Some)
                        .collect();
                    if r.is_empty() {
                        r.push(None);
                    }
                    r
                }
            };
            let mut sent = false;
            for rid in rids {
                if let Some(rx) = api.stream_rx_by_mid(mid, rid) {
                    rx.request_keyframe(kind);
                    sent = true;
                }
            }
            sent
        })?;
        if sent {
            // Out with the next poll, not at the next unrelated timer.
            self.written = true;
        } else {
            // Sent when its first packet comes (a relayed camera's viewers would otherwise
            // wait for the publisher's next keyframe of its own accord).
            if self.keyframes_waiting.len() < 16
                && !self.keyframes_waiting.contains(&(track, layer))
            {
                self.keyframes_waiting.push((track, layer));
            }
            tracing::debug!(peer = %self.id, %track, "keyframe request not sent yet (no stream yet)");
        }
        Ok(())
    }

    /// The incoming mid a packet's SSRC belongs to, and its simulcast layer.
    pub fn in_mid_of(&mut self, ssrc: Ssrc) -> Option<(Mid, Option<Layer>)> {
        if let Some(found) = self.in_ssrcs.get(&ssrc) {
            return Some(*found);
        }
        let found = contained(|| {
            self.rtc
                .direct_api()
                .stream_rx(&ssrc)
                .map(|s| (s.mid(), s.rid().and_then(|r| Layer::from_rid(&r))))
        })
        .ok()
        .flatten()?;
        // Bounded: a publisher has a few SSRCs; a flood of new ones starts over.
        if self.in_ssrcs.len() >= 64 {
            self.in_ssrcs.clear();
        }
        self.in_ssrcs.insert(ssrc, found);
        // A new stream: the keyframes asked of it before it existed go now.
        let on_mid = self.in_tracks.get(&found.0).copied();
        let waiting = std::mem::take(&mut self.keyframes_waiting);
        for (track, layer) in waiting {
            if Some(track) == on_mid {
                // A failure here is str0m's panic, contained; the peer's next step reports it.
                let _ = self.request_keyframe(track, layer);
            } else {
                self.keyframes_waiting.push((track, layer));
            }
        }
        Some(found)
    }

    /// Count a packet of `len` bytes on `mid`, `layer`, toward its layer's rate.
    pub fn count_in(&mut self, mid: Mid, layer: Option<Layer>, len: usize) {
        // Bounded like `in_ssrcs`: a few mids and layers per publisher.
        if self.in_bytes.len() >= 64 && !self.in_bytes.contains_key(&(mid, layer)) {
            return;
        }
        *self.in_bytes.entry((mid, layer)).or_default() += len as u64;
    }

    /// What was counted since the last call: (track, layer, bytes).
    pub fn take_in_bytes(&mut self) -> Vec<(TrackId, Option<Layer>, u64)> {
        let tracks = &self.in_tracks;
        self.in_bytes
            .drain()
            .filter_map(|((mid, layer), bytes)| tracks.get(&mid).map(|t| (*t, layer, bytes)))
            .collect()
    }

    /// Keep at least `minimum` bits per second toward this browser and probe for up to
    /// `desired` (str0m's estimator and pacer).
    pub fn set_bitrate(&mut self, minimum: u64, desired: u64) -> Result<(), PeerFailure> {
        contained(|| {
            self.rtc.bwe().set_bitrate(
                str0m::bwe::Bitrate::bps(minimum),
                str0m::bwe::Bitrate::bps(desired.max(minimum)),
            );
        })
    }

    /// Start the bandwidth estimate afresh from `bps`: its first probes find out whether
    /// the path has room again.
    pub fn reset_estimate(&mut self, bps: u64) -> Result<(), PeerFailure> {
        contained(|| self.rtc.bwe().reset(str0m::bwe::Bitrate::bps(bps)))
    }

    /// A packet on `mid` was withheld (its publisher is muted): nobody gets it.
    pub fn withhold(&mut self, mid: Mid) {
        self.in_epochs.entry(mid).or_default().1 = true;
    }

    /// The numbering epoch of a packet on `mid` that is forwarded: it moves on after a
    /// withheld stretch, so subscribers' streams continue without a hole.
    pub fn epoch(&mut self, mid: Mid) -> u32 {
        let e = self.in_epochs.entry(mid).or_default();
        if std::mem::take(&mut e.1) {
            e.0 = e.0.wrapping_add(1);
        }
        e.0
    }

    /// Write one forwarded packet on outgoing `mid`. `Ok(None)`: not sent (nothing
    /// negotiated for it yet, a codec this peer lacks, a late packet); `Ok(Some(switched))`
    /// sent, and whether its source changed with it (a keyframe is needed then).
    fn forward(
        &mut self,
        (mid, rid): (Mid, Option<Layer>),
        stretch: u32,
        p: &Incoming,
        params: PayloadParams,
        ext: &ExtensionValues,
    ) -> Result<Option<bool>, PeerFailure> {
        let (rewriter, pts) = self.rewriters.entry((mid, rid)).or_insert_with(|| {
            // Any start below 2^15 will do; spread them so streams do not look alike (the
            // layers of one m-line too).
            let seed = (self.id.0 as u16)
                .wrapping_add(self.out_tracks.len() as u16 * 997)
                .wrapping_add(rid.map_or(0, |l| u16::from(l.index()) * 331));
            (Rewriter::new(seed), None)
        });
        let pt = match *pts {
            Some((from, to)) if from == params.pt() => to,
            _ => {
                let Some(to) = self.rtc.codec_config().match_params(params).map(|c| c.pt()) else {
                    return Ok(None);
                };
                *pts = Some((params.pt(), to));
                to
            }
        };
        let video = params.spec().codec.is_video();
        // One lookup of the stream; numbered only once there is one to write on (else a
        // hole the viewer could never fill).
        let written = contained(|| {
            let mut api = self.rtc.direct_api();
            let tx = api.stream_tx_by_mid(mid, rid.map(|l| Rid::from(l.rid())))?;
            let m = rewriter.map(p, stretch)?;
            let mut w = RtpWrite::new(pt, m.seq.into(), m.ts, p.arrival, p.payload.clone())
                .marker(p.marker)
                .ext_vals(ext.clone())
                .nackable(video);
            if let Some(patch) = m.vp8 {
                w = w.vp8_patch(patch);
            }
            tx.write_rtp(w);
            Some(m)
        })?;
        let Some(m) = written else {
            return Ok(None);
        };
        self.written = true;
        Ok(Some(m.switched))
    }

    /// Queue a packet for outgoing stream `mid` (of layer `rid`, on an m-line of several
    /// layers), written at the next drain. Returns false when the queue is full and the
    /// packet was dropped.
    pub fn queue(
        &mut self,
        mid: Mid,
        rid: Option<Layer>,
        stretch: u32,
        packet: Arc<Forwarded>,
    ) -> bool {
        if self.queued.len() >= MAX_QUEUED {
            return false;
        }
        self.queued.push((mid, rid, stretch, packet));
        true
    }

    /// Write what was queued, then poll (as [`Peer::poll`]). Touches only this peer: any
    /// thread may drain it.
    pub fn drain(
        &mut self,
        now: Instant,
        send: impl FnMut(&str0m::net::Transmit),
        events: &mut Vec<Event>,
    ) -> Result<Drained, PeerFailure> {
        let mut done = Drained::default();
        let mut queued = std::mem::take(&mut self.queued);
        for (mid, rid, stretch, f) in queued.drain(..) {
            if let Some(switched) =
                self.forward((mid, rid), stretch, &f.incoming, f.params, &f.ext)?
            {
                if f.frame {
                    done.frames += 1;
                }
                // A switch at a keyframe (a simulcast layer's, a stream resuming) needs none.
                if switched
                    && !f.keyframe
                    && f.params.spec().codec.is_video()
                    && !done.switched.contains(&f.track)
                {
                    done.switched.push(f.track);
                }
            }
        }
        // Keep the allocation for the next pass.
        self.queued = queued;
        self.frames_out += done.frames;
        self.poll(now, send, events)?;
        Ok(done)
    }

    pub fn subscribe(&mut self, sub: PendingSub) {
        self.to_add.push(sub);
    }

    pub fn unsubscribe(&mut self, track: TrackId) {
        self.to_add.retain(|s| s.track != track);
        self.ready_when_connected.retain(|t| *t != track);
        if let Some(mid) = self.out_mids.remove(&track) {
            self.out_tracks.remove(&mid);
            // Its renumbering stays: the next track on this m-line continues the stream's
            // numbers, as a change of source does.
            // Queued this pass for the stream now stopped: not written.
            self.queued.retain(|(m, _, _, _)| *m != mid);
            self.to_idle.push(mid);
        }
    }

    /// The outgoing mid of `track`, if negotiated or negotiating.
    pub fn out_mid(&self, track: TrackId) -> Option<Mid> {
        self.out_mids.get(&track).copied()
    }

    /// The track an outgoing mid carries.
    pub fn out_track(&self, mid: Mid) -> Option<TrackId> {
        self.out_tracks.get(&mid).map(|(t, _)| *t)
    }

    /// Make an offer of the streams added and stopped since the last offer, if any and if
    /// no offer is in flight (one at a time, so offers never collide).
    pub fn negotiate(&mut self, now: Instant) -> Result<Option<MadeOffer>, PeerFailure> {
        if !self.offered
            || self.offer.is_some()
            || (self.to_add.is_empty() && self.to_idle.is_empty())
        {
            return Ok(None);
        }
        let to_add = std::mem::take(&mut self.to_add);
        let to_idle = std::mem::take(&mut self.to_idle);
        let (idle, shapes) = (&mut self.idle, &mut self.out_shapes);
        let applied = contained(|| {
            let mut api = self.rtc.sdp_api();
            let mut added = Vec::with_capacity(to_add.len());
            // An m-line freed by this offer is reused only from the next one: in the same
            // offer its direction would not change, and the other end would not notice
            // that it carries another track now.
            for sub in &to_add {
                let shape = (sub.info.kind, sub.layers);
                if let Some(i) = idle.iter().position(|m| shapes.get(m) == Some(&shape)) {
                    let mid = idle.swap_remove(i);
                    api.set_direction(mid, Direction::SendOnly);
                    added.push((sub.track, mid, sub.info));
                    continue;
                }
                let kind = match sub.info.kind {
                    TrackKind::Audio => MediaKind::Audio,
                    TrackKind::Video => MediaKind::Video,
                };
                // Several layers: one rid each, for the node at the other end to choose from.
                let simulcast = (sub.layers != Layers::NONE).then(|| Simulcast {
                    send: sub
                        .layers
                        .rids()
                        .into_iter()
                        .map(SimulcastLayer::new)
                        .collect(),
                    recv: Vec::new(),
                });
                // The stream id groups a participant's tracks in the browser.
                let mid = api.add_media(
                    kind,
                    Direction::SendOnly,
                    Some(sub.info.participant.to_string()),
                    Some(sub.track.to_string()),
                    simulcast,
                );
                shapes.insert(mid, shape);
                added.push((sub.track, mid, sub.info));
            }
            for mid in &to_idle {
                api.set_direction(*mid, Direction::Inactive);
            }
            idle.extend(to_idle);
            api.apply().map(|(offer, pending)| (offer, pending, added))
        })?;
        let Some((offer, pending, added)) = applied else {
            return Ok(None);
        };
        let mut added_tracks = Vec::with_capacity(added.len());
        for (track, mid, info) in added {
            self.out_mids.insert(track, mid);
            self.out_tracks.insert(mid, (track, info));
            added_tracks.push(track);
        }
        self.progress.offered.get_or_insert(now);
        self.offer = Some(OfferInFlight {
            pending,
            added: added_tracks,
            sent_at: now,
        });
        let tracks = self
            .out_tracks
            .iter()
            .map(|(mid, (_, info))| (mid.to_string(), *info))
            .collect();
        // Every m-line keeps transport-cc: the bandwidth estimate toward the browser, which
        // decides the layers it gets, is made from its feedback.
        let sdp = offer.to_sdp_string();
        Ok(Some(MadeOffer { sdp, tracks }))
    }

    /// A published track went away (its participant left): forget its incoming mid.
    pub fn forget_in_track(&mut self, track: TrackId) {
        self.keyframes_waiting.retain(|(t, _)| *t != track);
        if let Some(mid) = self.in_mids.remove(&track) {
            self.in_tracks.remove(&mid);
            self.in_ssrcs.retain(|_, m| m.0 != mid);
            self.in_epochs.remove(&mid);
        }
    }

    /// Outgoing streams now (negotiating or ready).
    pub fn out_count(&self) -> usize {
        self.out_tracks.len()
    }

    /// Incoming streams now.
    pub fn in_count(&self) -> usize {
        self.in_tracks.len()
    }

    /// Accept the browser's answer. Returns the tracks that may now be forwarded.
    pub fn accept_answer(&mut self, sdp: &str, now: Instant) -> Result<Vec<TrackId>, PeerFailure> {
        let Some(flight) = self.offer.take() else {
            return Err(PeerFailure::new(
                ErrorCode::UnexpectedSdp,
                "an answer arrived but no offer is outstanding",
            ));
        };
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| {
            PeerFailure::new(ErrorCode::BadSdp, format!("cannot parse the answer: {e}"))
        })?;
        contained(|| self.rtc.sdp_api().accept_answer(flight.pending, answer))?.map_err(|e| {
            PeerFailure::new(ErrorCode::BadSdp, format!("cannot accept the answer: {e}"))
        })?;
        self.progress.answered.get_or_insert(now);
        // Retransmission history by time, not by count: about a second of video is more
        // than any useful NACK round trip, and entries share their payload with every other
        // viewer's. Audio keeps none (Opus has no RTX).
        let video: Vec<Mid> = flight
            .added
            .iter()
            .filter_map(|t| self.out_mids.get(t))
            .filter(|m| {
                self.out_tracks
                    .get(m)
                    .is_some_and(|(_, i)| i.kind == TrackKind::Video)
            })
            .copied()
            .collect();
        contained(|| {
            let mut api = self.rtc.direct_api();
            for mid in video {
                // One stream, or one per layer.
                let rids =
                    std::iter::once(None).chain(Layer::ALL.map(|l| Some(Rid::from(l.rid()))));
                for rid in rids {
                    if let Some(tx) = api.stream_tx_by_mid(mid, rid) {
                        tx.set_rtx_cache(VIDEO_HISTORY_PACKETS, VIDEO_HISTORY, Some(0.15));
                    }
                }
            }
        })?;
        // Tracks unsubscribed while the offer was in flight are no longer in out_mids.
        let live: Vec<TrackId> = flight
            .added
            .into_iter()
            .filter(|t| self.out_mids.contains_key(t))
            .collect();
        if self.connected {
            Ok(live)
        } else {
            self.ready_when_connected.extend(live);
            Ok(Vec::new())
        }
    }

    /// ICE connected: the tracks negotiated meanwhile may be forwarded now.
    pub fn on_connected(&mut self) -> Vec<TrackId> {
        self.connected = true;
        self.disconnected_since = None;
        std::mem::take(&mut self.ready_when_connected)
    }

    /// Feed a timeout and drain everything str0m has to say, sending transmits with `send`.
    /// Events are returned for the engine to act on.
    pub fn poll(
        &mut self,
        now: Instant,
        mut send: impl FnMut(&str0m::net::Transmit),
        events: &mut Vec<Event>,
    ) -> Result<(), PeerFailure> {
        contained(|| -> Result<(), PeerFailure> {
            if now >= self.timeout || std::mem::take(&mut self.written) {
                self.rtc
                    .handle_input(Input::Timeout(now))
                    .map_err(|e| PeerFailure::new(ErrorCode::MediaFailed, e.to_string()))?;
            }
            // Bounded: str0m always ends with a timeout, but a bug must not spin us forever.
            for _ in 0..10_000 {
                if !self.rtc.is_alive() {
                    return Err(PeerFailure::new(
                        ErrorCode::MediaFailed,
                        "media connection closed",
                    ));
                }
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => {
                        self.timeout = t;
                        return Ok(());
                    }
                    Ok(Output::Transmit(t)) => send(&t),
                    Ok(Output::Event(e)) => events.push(e),
                    Err(e) => return Err(PeerFailure::new(ErrorCode::MediaFailed, e.to_string())),
                }
            }
            Err(PeerFailure::new(
                ErrorCode::Internal,
                "media engine output did not settle",
            ))
        })?
    }
}
