//! One synthetic participant's WebRTC side: a str0m `Rtc` in RTP mode on its own UDP socket
//! on loopback. It publishes a microphone and a camera (see `media.rs`) and/or receives
//! whatever the server sends, counting packets, bytes, sequence gaps and one-way delay.
//! Signaling is someone else's job: SDP comes and goes on two channels.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::media::{self, Load};

/// SDP from the server.
#[derive(Debug)]
pub enum SigIn {
    Offer(String),
    Answer(String),
    /// Send only these simulcast layers (rids) of the camera: nobody needs the others.
    Layers(Vec<String>),
}

/// SDP for the server.
#[derive(Debug)]
pub enum SigOut {
    /// Our offer; `sources` maps mid to "mic" / "camera" for veche.
    Offer {
        sdp: String,
        sources: Vec<(String, &'static str)>,
    },
    Answer(String),
}

/// What the peer offers first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// Send-only microphone and camera.
    Publish,
    /// A data channel only (veche's receive-only participants still open the connection).
    Channel,
    /// Nothing: wait for the server's offer (a Janus subscriber).
    Wait,
}

/// The clock all participants of a run share, and whether the measuring window is open.
#[derive(Debug)]
pub struct Clock {
    pub base: Instant,
    pub window: AtomicBool,
}

impl Clock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            window: AtomicBool::new(false),
        })
    }
    pub fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }
    pub fn measuring(&self) -> bool {
        self.window.load(Ordering::Relaxed)
    }
}

/// Per received stream: the extended sequence numbers seen in the window.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamCount {
    pub first: u64,
    pub last: u64,
    pub packets: u64,
}

/// What one participant saw. Counts cover only the measuring window; `first_*` do not.
#[derive(Debug, Default)]
pub struct Counters {
    pub connected: Option<Instant>,
    pub first_packet: Option<Instant>,
    pub first_video: Option<Instant>,
    pub packets: u64,
    pub bytes: u64,
    pub streams: HashMap<u32, StreamCount>,
    /// One-way delays in microseconds: every audio packet, every video frame's first packet.
    pub delays_us: Vec<u32>,
    pub sent_packets: u64,
    pub keyframe_requests: u64,
    pub failed: Option<String>,
}

pub type Shared = Arc<Mutex<Counters>>;

fn lock(c: &Shared) -> std::sync::MutexGuard<'_, Counters> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run one peer until `stop` turns true, the signaling goes away or the connection fails.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    name: String,
    bind: IpAddr,
    opening: Opening,
    load: Load,
    clock: Arc<Clock>,
    counters: Shared,
    mut sig_in: mpsc::Receiver<SigIn>,
    sig_out: mpsc::Sender<SigOut>,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(e) = drive(
        &name,
        bind,
        opening,
        load,
        &clock,
        &counters,
        &mut sig_in,
        &sig_out,
        &mut stop,
    )
    .await
    {
        lock(&counters).failed = Some(e);
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    name: &str,
    bind: IpAddr,
    opening: Opening,
    load: Load,
    clock: &Clock,
    counters: &Shared,
    sig_in: &mut mpsc::Receiver<SigIn>,
    sig_out: &mpsc::Sender<SigOut>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let sock = UdpSocket::bind(SocketAddr::new(bind, 0))
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let local: SocketAddr = sock.local_addr().map_err(|e| e.to_string())?;
    let mut rtc = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);

    let mut pending: Option<SdpPendingOffer> = None;
    let mut mics: Option<(Mid, Mid)> = None;
    if opening != Opening::Wait {
        let mut api = rtc.sdp_api();
        let mut sources = Vec::new();
        if opening == Opening::Publish {
            let a = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            let layers = load.simulcast.then(|| {
                let mut sim = Simulcast::new();
                for (rid, _) in media::LAYERS {
                    sim.add_send_layer(SimulcastLayer::new(rid));
                }
                sim
            });
            let v = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, layers);
            sources.push((a.to_string(), "mic"));
            sources.push((v.to_string(), "camera"));
            mics = Some((a, v));
        } else {
            api.add_channel("veche".into());
        }
        let (offer, p) = api.apply().ok_or("nothing to offer")?;
        pending = Some(p);
        sig_out
            .send(SigOut::Offer {
                sdp: offer.to_sdp_string(),
                sources,
            })
            .await
            .map_err(|_| "signaling closed")?;
    }

    // Payload types, learnt once the negotiation is done.
    let mut pts: HashMap<u8, Codec> = HashMap::new();
    let mut sender: Option<Sender> = None;
    let mut buf = vec![0u8; 2048];
    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = sock.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        lock(counters).connected = Some(Instant::now());
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        return Err(format!("{name}: ICE disconnected"));
                    }
                    Event::RtpPacket(p) => {
                        let codec = pts.get(&*p.header.payload_type).copied();
                        receive(clock, counters, codec, &p);
                    }
                    Event::KeyframeRequest(_) => {
                        if let Some(s) = sender.as_mut() {
                            s.keyframe_asked = true;
                        }
                        lock(counters).keyframe_requests += 1;
                    }
                    _ => {}
                },
                Err(e) => return Err(format!("{name}: {e}")),
            }
        };
        if *stop.borrow() {
            return Ok(());
        }
        let wake = match &sender {
            Some(s) if rtc.is_connected() => timeout.min(s.next()),
            _ => timeout,
        };
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, source) = r.map_err(|e| format!("recv: {e}"))?;
                if let Ok(contents) = buf[..n].try_into() {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: local,
                        contents,
                    }));
                }
            }
            sig = sig_in.recv() => {
                match sig {
                    Some(SigIn::Answer(sdp)) => {
                        let a = SdpAnswer::from_sdp_string(&sdp).map_err(|e| format!("answer: {e}"))?;
                        if let Some(p) = pending.take() {
                            rtc.sdp_api().accept_answer(p, a).map_err(|e| format!("answer: {e}"))?;
                        }
                    }
                    Some(SigIn::Layers(active)) => {
                        if let Some(s) = sender.as_mut() {
                            s.set_active(&active);
                        }
                        continue;
                    }
                    Some(SigIn::Offer(sdp)) => {
                        let o = SdpOffer::from_sdp_string(&sdp).map_err(|e| format!("offer: {e}"))?;
                        let a = rtc.sdp_api().accept_offer(o).map_err(|e| format!("offer: {e}"))?;
                        sig_out.send(SigOut::Answer(a.to_sdp_string())).await.map_err(|_| "signaling closed")?;
                    }
                    None => return Ok(()),
                }
                pts = rtc
                    .codec_config()
                    .params()
                    .iter()
                    .map(|p| (*p.pt(), p.spec().codec))
                    .collect();
                if sender.is_none() && pending.is_none() {
                    if let Some((a, v)) = mics {
                        sender = Sender::new(&mut rtc, a, v, load, &pts);
                    }
                }
            }
            _ = stop.changed() => return Ok(()),
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        let now = Instant::now();
        rtc.handle_input(Input::Timeout(now))
            .map_err(|e| format!("{name}: {e}"))?;
        if let Some(s) = sender.as_mut() {
            if rtc.is_connected() {
                let sent = s.send_due(&mut rtc, now, clock);
                if sent > 0 {
                    // str0m queues written packets until time moves: move it, or they wait
                    // for the next timeout.
                    rtc.handle_input(Input::Timeout(Instant::now()))
                        .map_err(|e| format!("{name}: {e}"))?;
                    if clock.measuring() {
                        lock(counters).sent_packets += sent;
                    }
                }
            }
        }
    }
}

fn receive(clock: &Clock, counters: &Shared, codec: Option<Codec>, p: &str0m::rtp::RtpPacket) {
    let now = Instant::now();
    let sent = match codec {
        Some(Codec::Vp8) => media::vp8_frame_start(&p.payload).map(|(_, t)| t),
        Some(Codec::Opus) => media::audio_sent(&p.payload),
        _ => None,
    };
    let mut c = lock(counters);
    c.first_packet.get_or_insert(now);
    if codec == Some(Codec::Vp8) {
        c.first_video.get_or_insert(now);
    }
    if !clock.measuring() {
        return;
    }
    c.packets += 1;
    c.bytes += p.payload.len() as u64 + 12;
    let seq = *p.seq_no;
    let s = c.streams.entry(*p.header.ssrc).or_insert(StreamCount {
        first: seq,
        last: seq,
        packets: 0,
    });
    s.first = s.first.min(seq);
    s.last = s.last.max(seq);
    s.packets += 1;
    if let Some(t) = sent {
        let d = clock.now_us().saturating_sub(t);
        c.delays_us.push(d.min(u32::MAX as u64) as u32);
    }
}

/// One video stream the camera sends: the whole picture, or one simulcast layer.
struct VideoOut {
    rid: Option<Rid>,
    seq: SeqNo,
    load: Load,
    /// The node asked for it (all at first).
    active: bool,
}

/// The publishing half: paces audio at 50 packets/s and video at 30 frames/s, on every
/// active layer.
struct Sender {
    audio: (Mid, u8, SeqNo),
    video: (Mid, u8),
    layers: Vec<VideoOut>,
    load: Load,
    start: Option<Instant>,
    audio_n: u64,
    video_n: u64,
    last_key: Option<Instant>,
    keyframe_asked: bool,
}

impl Sender {
    fn new(rtc: &mut Rtc, a: Mid, v: Mid, load: Load, pts: &HashMap<u8, Codec>) -> Option<Self> {
        let pt = |codec: Codec, mid: Mid, rtc: &Rtc| -> Option<u8> {
            let remote = rtc.media(mid)?.remote_pts().to_vec();
            pts.iter()
                .filter(|(pt, c)| **c == codec && remote.iter().any(|r| **r == **pt))
                .map(|(pt, _)| *pt)
                .min()
        };
        let apt = pt(Codec::Opus, a, rtc)?;
        let vpt = pt(Codec::Vp8, v, rtc)?;
        let layers = if load.simulcast {
            media::LAYERS
                .iter()
                .map(|(rid, share)| VideoOut {
                    rid: Some(Rid::from(*rid)),
                    seq: SeqNo::default(),
                    load: load.layer(*share),
                    active: true,
                })
                .collect()
        } else {
            vec![VideoOut {
                rid: None,
                seq: SeqNo::default(),
                load,
                active: true,
            }]
        };
        Some(Self {
            audio: (a, apt, SeqNo::default()),
            video: (v, vpt),
            layers,
            load,
            start: None,
            audio_n: 0,
            video_n: 0,
            last_key: None,
            keyframe_asked: false,
        })
    }

    /// Send only the layers `active` names (a camera without layers always sends).
    fn set_active(&mut self, active: &[String]) {
        for l in &mut self.layers {
            if let Some(rid) = &l.rid {
                let was = l.active;
                l.active = active.iter().any(|a| a.as_str() == &**rid);
                // A layer that starts again starts with a keyframe, as an encoder does.
                if l.active && !was {
                    self.keyframe_asked = true;
                }
            }
        }
    }

    fn next(&self) -> Instant {
        let Some(start) = self.start else {
            return Instant::now();
        };
        let a = start + Duration::from_micros(self.audio_n * 1_000_000 / media::AUDIO_RATE as u64);
        let v = start + Duration::from_micros(self.video_n * 1_000_000 / media::FPS as u64);
        a.min(v)
    }

    /// Send what is due at `now`; returns the number of packets.
    fn send_due(&mut self, rtc: &mut Rtc, now: Instant, clock: &Clock) -> u64 {
        let start = *self.start.get_or_insert(now);
        let mut sent = 0;
        let mut api = rtc.direct_api();
        while start + Duration::from_micros(self.audio_n * 1_000_000 / media::AUDIO_RATE as u64)
            <= now
        {
            let (mid, pt, seq) = &mut self.audio;
            let Some(tx) = api.stream_tx_by_mid(*mid, None) else {
                break;
            };
            let payload = media::audio_payload(clock.now_us(), self.audio_n);
            let time = (self.audio_n * 960) as u32;
            tx.write_rtp(RtpWrite::new((*pt).into(), *seq, time, now, payload).marker(false));
            *seq = (**seq + 1).into();
            self.audio_n += 1;
            sent += 1;
        }
        while start + Duration::from_micros(self.video_n * 1_000_000 / media::FPS as u64) <= now {
            let (mid, pt) = self.video;
            // Like libvpx's simulcast: a keyframe on one layer is a keyframe on all.
            let key = self.keyframe_asked
                && self
                    .last_key
                    .is_none_or(|t| now.duration_since(t) > Duration::from_millis(300))
                || self
                    .last_key
                    .is_none_or(|t| now.duration_since(t) >= self.load.keyframe_every);
            if key {
                self.last_key = Some(now);
                self.keyframe_asked = false;
            }
            let time = (self.video_n * 3000) as u32;
            for layer in self.layers.iter_mut().filter(|l| l.active) {
                let Some(tx) = api.stream_tx_by_mid(mid, layer.rid) else {
                    continue;
                };
                let bytes = layer.load.frame_bytes(key);
                let packets =
                    media::vp8_packets(bytes, key, (self.video_n & 0x7FFF) as u16, clock.now_us());
                let last = packets.len() - 1;
                for (i, p) in packets.into_iter().enumerate() {
                    tx.write_rtp(
                        RtpWrite::new(pt.into(), layer.seq, time, now, p)
                            .marker(i == last)
                            .nackable(true),
                    );
                    layer.seq = (*layer.seq + 1).into();
                    sent += 1;
                }
            }
            self.video_n += 1;
        }
        sent
    }
}
