//! The engine task: owns the core, the peers and the sockets' receive queue.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Rtc};
use tokio::sync::mpsc;
use veche_core::{ChatError, Layer, Limits, Output, ParticipantId, Sfu, StateChange, TrackKind};

use crate::api::{
    Attendance, BrowserReception, Command, EngineHandle, EngineStats, ErrorCode, FedOut,
    Moderation, PeerEvent, Signal, TrackInfo,
};
use crate::federation::Fed;
use crate::forward::Incoming;
use crate::net::{bind_all, bind_tcp, read_loop, tcp_accept_loop, Datagram, TcpConns, TcpPlumbing};
use crate::outbox::{Flushed, Outbox};
use crate::peer::{
    contained, Drained, Forwarded, Peer, PeerFailure, PendingSub, Role, VIDEO_HISTORY_PACKETS,
};
use crate::probe::{self, Probe};
use tokio::net::UdpSocket;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The UDP media port (0: pick one).
    pub port: u16,
    /// The first UDP port of the media links this node offers to other nodes, which use it
    /// and the `LINK_SOCKETS - 1` ports above it (0: pick them).
    pub link_port: u16,
    /// Local addresses to bind the port on (default: loopback and every interface address).
    pub bind: Vec<Ipv4Addr>,
    /// Extra addresses to offer as candidates (a public address forwarded to this port).
    pub advertise: Vec<IpAddr>,
    /// Bounds on meetings.
    pub limits: Limits,
    /// This node's peer id, as other nodes know it.
    pub node_id: String,
    /// Where messages for other nodes go; without it, meetings stay on this node.
    pub federation: Option<mpsc::Sender<FedOut>>,
    /// Where each person's arrival and departure goes (the meetings' attendance); none:
    /// nothing is recorded.
    pub attendance: Option<mpsc::Sender<Attendance>>,
    /// Relay media for pairs of other nodes that cannot reach each other (`--relay`).
    pub relay: bool,
    /// Offer loopback candidates on node links (several nodes on one machine: tests and
    /// benchmarks). Off: another node's loopback is not ours.
    pub links_on_loopback: bool,
    /// Threads that drain peers (encrypt and send what is forwarded to them); 0: one per
    /// core the process may run on.
    pub media_threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            port: 7301,
            link_port: 7303,
            bind: crate::net::local_ipv4_addresses(),
            advertise: Vec::new(),
            limits: Limits::default(),
            node_id: String::new(),
            federation: None,
            attendance: None,
            relay: false,
            links_on_loopback: false,
            media_threads: 0,
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The media port could not be bound on any address.
    #[error("cannot bind UDP media port {port}: {source}")]
    Bind {
        /// The port.
        port: u16,
        /// What the OS said.
        source: io::Error,
    },
}

/// Depth of the queues between tasks. Bounded: a flood is dropped, not buffered.
const COMMAND_QUEUE: usize = 1024;
/// Ports our own node links go out from. Two meetings carried with the same node need two
/// links from two ports: on one, their DTLS would share one 5-tuple and could not be told
/// apart. This many meetings with one node at once go over direct links.
const LINK_SOCKETS: u16 = 8;
const DATAGRAM_QUEUE: usize = 4096;
/// Probes of our link ports' mappings kept waiting for an answer.
pub(crate) const MAX_PROBES: usize = 64;
/// Other nodes' probes answered per second (each relayed node sends one per link port
/// every 5 s: 256 serve about 150 of them).
const MAX_PROBE_ANSWERS: u32 = 256;
/// A browser must send its offer this soon after joining.
const OFFER_DEADLINE: Duration = Duration::from_secs(30);
/// A browser must answer the engine's offer this soon.
const ANSWER_DEADLINE: Duration = Duration::from_secs(20);
/// A media connection that stays disconnected this long is given up.
const DISCONNECT_GRACE: Duration = Duration::from_secs(5);
/// The same for a link to another node: its participants vanish for everyone here, so
/// decide sooner (a node that is back resyncs).
const LINK_DISCONNECT_GRACE: Duration = Duration::from_secs(2);
/// Another node's link to us that has not connected this long is dropped.
const LINK_IN_GIVE_UP: Duration = Duration::from_secs(30);
/// A connected link that receives nothing at all this long is dead.
const LINK_SILENCE: Duration = Duration::from_secs(4);
/// Sooner when its media stopped with everything else: a relay or node that died mid-stream
/// (a muted stream stops only its media; checks and reports keep coming).
const LINK_MEDIA_SILENCE: Duration = Duration::from_secs(2);
/// Bytes a forwarded packet takes on the wire beyond its payload.
const WIRE_OVERHEAD: usize = 60;

/// The bandwidth estimate toward a new browser before its feedback says more, kbit/s: a
/// classroom's LAN carries it; a weaker link says so within a second or two.
const INITIAL_ESTIMATE_KBPS: u64 = 2_000;

/// The loop wakes at least this often for housekeeping.
const MAX_SLEEP: Duration = Duration::from_millis(500);

/// Dirty peers from which a round is drained on the workers (fewer: not worth waking them).
const PARALLEL_MIN: usize = 8;

/// One worker's share of a round: where its peers' datagrams go, and what they gave back.
#[derive(Default)]
struct Lane {
    outbox: Outbox,
    done: Vec<(ParticipantId, Result<Drained, PeerFailure>, Vec<Event>)>,
}

impl Lane {
    /// Drain `peers` into this lane (touches only them and the lane: any thread may).
    fn drain(&mut self, peers: &mut [(ParticipantId, Box<Peer>)], now: Instant) {
        for (id, peer) in peers.iter_mut() {
            let mut events = Vec::new();
            let outbox = &mut self.outbox;
            let res = peer.drain(now, |t| outbox.push_transmit(t), &mut events);
            self.done.push((*id, res, events));
        }
    }
}

/// The media engine. Start it with [`Engine::start`].
pub struct Engine {
    pub(crate) sfu: Sfu,
    /// Boxed: a peer holds its str0m `Rtc` inline (kilobytes), and the map's spare slots
    /// would each hold one.
    pub(crate) peers: HashMap<ParticipantId, Box<Peer>>,
    /// (Remote, local) address → peer, learned from `Rtc::accepts`, so most datagrams skip
    /// the scan.
    pub(crate) by_source: HashMap<(SocketAddr, SocketAddr), ParticipantId>,
    pub(crate) candidates: Vec<Candidate>,
    /// Each link port (our own node links go out from them; everything else is on the
    /// media port) and its candidates, for links this node offers.
    pub(crate) link_candidates: Vec<(u16, Vec<Candidate>)>,
    /// Per link port, its active ICE-TCP candidates (see [`Engine::offer_tcp`]).
    pub(crate) link_tcp: Vec<(u16, Vec<Candidate>)>,
    /// Candidates learned from other nodes' observations: offered on node links only.
    pub(crate) link_only: Vec<SocketAddr>,
    /// Our probes not answered yet, and the link port each went out from (oldest first,
    /// at most [`MAX_PROBES`]).
    pub(crate) probes: Vec<(str0m::ice::TransId, u16)>,
    /// Other nodes' probes answered this housekeeping round (at most
    /// [`MAX_PROBE_ANSWERS`]; an answer is about a probe's size, so this bounds what a
    /// forged source could have us send to someone else).
    pub(crate) probes_answered: u32,
    /// When our link ports' mappings were last probed.
    pub(crate) probed_at: Option<Instant>,
    /// When each link port was last given a new node link ([`Self::fresh_slot`]).
    pub(crate) tried_at: HashMap<u16, Instant>,
    /// Commands from the handle (signaling, the node bridge).
    pub(crate) commands: mpsc::Receiver<Command>,
    /// Peers with new input whose output must be drained.
    pub(crate) dirty: HashSet<ParticipantId>,
    /// Peers whose negotiation state changed.
    pub(crate) renegotiate: HashSet<ParticipantId>,
    pub(crate) node_id: String,
    pub(crate) fed_out: Option<mpsc::Sender<FedOut>>,
    attendance: Option<mpsc::Sender<Attendance>>,
    pub(crate) fed: Fed,
    pub(crate) links_on_loopback: bool,
    /// Peers to remove after the current step, with the error to tell them.
    failed: Vec<(ParticipantId, PeerFailure)>,
    /// Reused for each peer's events while it is drained.
    events: Vec<Event>,
    /// What the peers transmit during a pass, sent at its end (by the driver).
    pub(crate) outbox: Outbox,
    /// The worker threads that drain peers in parallel (`media_threads` > 1), and one lane
    /// per worker: its outbox and what its peers gave back.
    workers: Option<rayon::ThreadPool>,
    lanes: Vec<Lane>,
    pub(crate) stats: EngineStats,
    /// This node's recordings, and their subscriptions to make ready.
    pub(crate) recorders: crate::record::Recorders,
    pub(crate) record_pending: Vec<(ParticipantId, veche_core::TrackId)>,
    /// Datagrams the socket readers dropped (their queue was full).
    pub(crate) dropped: Arc<AtomicU64>,
    last_housekeeping: Instant,
    /// Who gets the packet being forwarded (the core's answer, reused).
    routes: Vec<veche_core::Route>,
    /// When the layers' rates were last measured.
    last_rates: Instant,
}

impl Engine {
    /// Bind the media port and spawn the engine. Returns the handle for signaling and the
    /// addresses the port is bound on.
    pub async fn start(
        config: EngineConfig,
    ) -> Result<(EngineHandle, Vec<SocketAddr>, tokio::task::JoinHandle<()>), StartError> {
        // One DTLS/SRTP crypto provider for the process instead of one built per connection.
        if str0m::crypto::CryptoProvider::get_default().is_none() {
            str0m::crypto::from_feature_flags().install_process_default();
        }
        let bound = bind_all(&config.bind, config.port)
            .await
            .map_err(|source| StartError::Bind {
                port: config.port,
                source,
            })?;
        // Links this node offers to other nodes get ports of their own: a link each way
        // between two nodes on one port pair would share one 5-tuple, and DTLS cannot be
        // told apart (nor two meetings' links from one port to the same node).
        let mut link_bound = bind_all(&config.bind, config.link_port)
            .await
            .map_err(|source| StartError::Bind {
                port: config.link_port,
                source,
            })?;
        for i in 1..LINK_SOCKETS {
            let port = match config.link_port {
                0 => Some(0),
                p => p.checked_add(i),
            };
            let Some(port) = port else { break };
            match bind_all(&config.bind, port).await {
                Ok(more) => link_bound.extend(more),
                // Fewer meetings with one node at once can have direct links.
                Err(e) => tracing::warn!(port, error = %e, "cannot bind a node link port"),
            }
        }
        let media: Vec<SocketAddr> = bound.iter().map(|(a, _)| *a).collect();
        let links: Vec<SocketAddr> = link_bound.iter().map(|(a, _)| *a).collect();
        // Milliseconds since the epoch times 1000: ids grow across restarts and stay
        // below 2^53, the largest integer JavaScript holds exactly, until year 2255.
        let id_base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64 * 1000)
            .unwrap_or(0);
        let (mut engine, handle) = Engine::new(config, (&media, &links), id_base, Instant::now());
        // Browsers whose UDP is blocked (a firewall that passes TCP only) reach the same
        // port over TCP (ICE-TCP, RFC 6544: the node's passive candidates).
        let listeners = bind_tcp(&media).await;
        let tcp: Vec<SocketAddr> = listeners.iter().map(|(a, _)| *a).collect();
        engine.offer_tcp(&tcp);
        let (udp_tx, udp_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let (tcp_tx, tcp_events) = mpsc::channel(DATAGRAM_QUEUE);
        let tcp_plumbing = TcpPlumbing {
            tx: udp_tx.clone(),
            events: tcp_tx,
            dropped: engine.dropped.clone(),
            open: Arc::new(crate::net::TcpOpen::default()),
        };
        for (addr, listener) in listeners {
            tokio::spawn(tcp_accept_loop(listener, addr, tcp_plumbing.clone()));
        }
        let mut sockets = HashMap::new();
        for (addr, sock) in bound.iter().chain(&link_bound) {
            tokio::spawn(read_loop(
                sock.clone(),
                *addr,
                udp_tx.clone(),
                engine.dropped.clone(),
            ));
            sockets.insert(*addr, sock.clone());
        }
        let task = tokio::spawn(crate::driver::run(
            engine,
            sockets,
            udp_rx,
            (tcp_events, tcp_plumbing),
        ));
        Ok((handle, media, task))
    }

    /// An engine with no sockets and no clock of its own (sans-IO): it takes commands
    /// (sent through the returned handle, taken with [`Engine::handle_commands`]),
    /// datagrams and the time, and leaves what it transmits for
    /// [`Engine::poll_transmit`]. `media` and `links` are the addresses browsers and
    /// other nodes reach it at; participant ids start at `id_base`.
    pub fn new(
        config: EngineConfig,
        (media, links): (&[SocketAddr], &[SocketAddr]),
        id_base: u64,
        now: Instant,
    ) -> (Engine, EngineHandle) {
        let (cmd_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let threads = match config.media_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        // One thread: no pool, every peer is drained on the engine's own thread.
        let workers = (threads > 1)
            .then(|| {
                // The engine's own thread drains a share too: one worker fewer.
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads - 1)
                    .thread_name(|i| format!("veche-media-{i}"))
                    .build()
                    .map_err(|e| tracing::warn!(error = %e, "no media worker threads; using one"))
                    .ok()
            })
            .flatten();
        let lanes = match &workers {
            Some(_) => (0..threads).map(|_| Lane::default()).collect(),
            None => Vec::new(),
        };
        let engine = Engine {
            workers,
            lanes,
            sfu: Sfu::with_id_base(config.limits, id_base),
            peers: HashMap::new(),
            by_source: HashMap::new(),
            candidates: candidates_for(media, &config.advertise),
            link_candidates: link_ports(links)
                .into_iter()
                .map(|port| {
                    let bound: Vec<SocketAddr> =
                        links.iter().copied().filter(|a| a.port() == port).collect();
                    (port, candidates_for(&bound, &config.advertise))
                })
                .collect(),
            link_only: Vec::new(),
            probes: Vec::new(),
            probes_answered: 0,
            probed_at: None,
            tried_at: HashMap::new(),
            link_tcp: Vec::new(),
            commands,
            dirty: HashSet::new(),
            renegotiate: HashSet::new(),
            failed: Vec::new(),
            events: Vec::new(),
            outbox: Outbox::default(),
            stats: EngineStats::default(),
            recorders: Default::default(),
            record_pending: Vec::new(),
            dropped: Arc::new(AtomicU64::new(0)),
            last_housekeeping: now,
            routes: Vec::new(),
            last_rates: now,
            node_id: config.node_id,
            fed_out: config.federation,
            attendance: config.attendance,
            fed: Fed::new(config.relay),
            links_on_loopback: config.links_on_loopback,
        };
        (engine, EngineHandle { tx: cmd_tx })
    }

    /// Offer ICE-TCP at `bound` (listening there): a passive TCP candidate each, after the
    /// UDP ones, which ICE prefers, for browsers and the links other nodes offer us; and for
    /// the links this node offers, an active one per link port address, which dials the
    /// other node's passive one (RFC 6544), for a path between nodes that passes no UDP
    /// (added to a link that has not connected over UDP in 2 s, `add_tcp_late`).
    pub(crate) fn offer_tcp(&mut self, bound: &[SocketAddr]) {
        let tcp = |addr: SocketAddr, kind: str0m::net::TcpType| {
            Candidate::builder()
                .tcp()
                .host(addr)
                .tcptype(kind)
                .build()
                .inspect_err(
                    |e| tracing::warn!(%addr, error = %e, "address not usable as a TCP candidate"),
                )
                .ok()
        };
        for addr in bound {
            self.candidates
                .extend(tcp(*addr, str0m::net::TcpType::Passive));
        }
        self.link_tcp = self
            .link_candidates
            .iter()
            .map(|(port, _)| {
                // Where this node listens for TCP; the port names the link (its UDP one).
                let active = bound
                    .iter()
                    .filter_map(|a| {
                        tcp(SocketAddr::new(a.ip(), *port), str0m::net::TcpType::Active)
                    })
                    .collect();
                (*port, active)
            })
            .collect();
    }

    /// Take every command queued on the handle.
    pub fn handle_commands(&mut self, now: Instant) {
        while let Ok(cmd) = self.commands.try_recv() {
            self.handle_command(cmd, now);
        }
    }

    /// A datagram that arrived at `destination` (one of the engine's addresses).
    pub fn receive(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        self.handle_datagram(
            Datagram {
                source,
                destination,
                data: data.to_vec(),
                proto: Protocol::Udp,
            },
            now,
        );
    }

    /// Everything transmitted since the last call, in order per peer: (from, to, bytes).
    pub fn poll_transmit(&mut self, mut send: impl FnMut(SocketAddr, SocketAddr, &[u8])) {
        let mut n = 0;
        for outbox in
            std::iter::once(&mut self.outbox).chain(self.lanes.iter_mut().map(|l| &mut l.outbox))
        {
            outbox.drain(|from, to, bytes| {
                n += 1;
                send(from, to, bytes)
            });
        }
        self.stats.datagrams_out += n;
    }

    /// When the engine next needs [`Engine::drive`] (now, if work is left over).
    pub fn next_timeout(&self, now: Instant) -> Instant {
        // Work left over from a busy step runs at once, not at the next timeout.
        let leftover =
            !self.dirty.is_empty() || !self.renegotiate.is_empty() || !self.failed.is_empty();
        if leftover {
            return now;
        }
        self.peers
            .values()
            .map(|p| p.timeout)
            .min()
            .unwrap_or(now + MAX_SLEEP)
            .min(now + MAX_SLEEP)
            .max(now)
    }

    /// The engine's counters now.
    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats.clone();
        s.peers = self.peers.len();
        s.datagrams_dropped = self.dropped.load(Ordering::Relaxed);
        s
    }

    /// What the driver's sends did.
    pub(crate) fn count_sent(&mut self, done: crate::outbox::Flushed) {
        self.stats.datagrams_out += done.sent;
        self.stats.send_calls += done.syscalls;
        // A full socket buffer drops, as a congested link would.
        self.stats.datagrams_unsent += done.dropped;
    }

    /// One command from signaling or the node bridge.
    pub fn handle_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Join {
                meeting,
                name,
                key,
                presence,
                listener,
                client,
                nodes,
                events,
                reply,
            } => {
                let (id, outputs) = match self.sfu.join_keyed(&meeting, &name, key, now) {
                    Ok(ok) => ok,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                if let Some(p) = presence {
                    self.fed.presence.insert(id, p);
                }
                self.sfu.set_listener(id, listener);
                let mut rtc = Rtc::builder()
                    .set_ice_lite(true)
                    .clear_codecs()
                    // Opus and VP8 only: every current browser has both, forwarding needs
                    // publisher and viewers on one codec, and each extra codec adds to every
                    // m-line of every renegotiation.
                    .enable_opus(true, false)
                    .enable_vp8(true)
                    // Retransmission history per outgoing video stream, at most (each
                    // stream keeps about a second of it: Peer::accept_answer).
                    .set_send_buffer_video(VIDEO_HISTORY_PACKETS)
                    // Packets are forwarded as they arrive, their payload shared by every
                    // viewer (forward.rs), not reassembled into frames and cut up again.
                    .set_rtp_mode(true)
                    // The estimate toward the browser decides which layers it gets
                    // (veche-core's alloc.rs); it starts here and probes up.
                    .enable_bwe(Some(str0m::bwe::Bitrate::kbps(INITIAL_ESTIMATE_KBPS)))
                    .build(now);
                let local_client = client.is_none_or(|a| a.ip().is_loopback());
                for c in &self.candidates {
                    if self.link_only.contains(&c.addr()) {
                        continue;
                    }
                    if local_client || !c.addr().ip().is_loopback() {
                        rtc.add_local_candidate(c.clone());
                    }
                }
                self.peers
                    .insert(id, Box::new(Peer::new(id, Role::Browser, rtc, events, now)));
                tracing::info!(participant = %id, %meeting, "joined");
                if reply.send(Ok(id)).is_err() {
                    // The signaling side vanished before hearing back.
                    self.fail(
                        id,
                        PeerFailure::new(ErrorCode::Internal, "signaling went away"),
                    );
                }
                self.apply(outputs);
                self.fed_local_joined(id, &meeting, &nodes, now);
            }
            Command::Offer { id, sdp, sources } => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return;
                };
                if peer.offered {
                    tracing::info!(participant = %id, code = ?ErrorCode::UnexpectedSdp, "second offer refused");
                    let _ = peer.send(PeerEvent::Signal(Signal::error(
                        ErrorCode::UnexpectedSdp,
                        "the browser may offer only once; the node makes all later offers",
                        false,
                    )));
                    return;
                }
                match peer.accept_offer(&sdp, sources) {
                    Ok(answer) => {
                        if let Err(f) = peer.send(PeerEvent::Signal(Signal::Answer { sdp: answer }))
                        {
                            self.fail(id, f);
                        }
                        self.dirty.insert(id);
                        self.renegotiate.insert(id);
                    }
                    Err(f) => self.fail(id, f),
                }
            }
            Command::Answer { id, sdp } => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return;
                };
                match peer.accept_answer(&sdp, now) {
                    Ok(ready) => {
                        self.dirty.insert(id);
                        self.renegotiate.insert(id);
                        for track in ready {
                            let out = self.sfu.subscription_ready(id, track, now);
                            self.apply(out);
                        }
                    }
                    Err(f) if f.code == ErrorCode::UnexpectedSdp => {
                        tracing::info!(participant = %id, code = ?f.code, "answer refused");
                        let _ =
                            peer.send(PeerEvent::Signal(Signal::error(f.code, f.message, false)));
                    }
                    Err(f) => self.fail(id, f),
                }
            }
            Command::State { id, state } => {
                let out = self.sfu.set_state(id, StateChange(state), now);
                self.apply(out);
                self.fed_local_state(id, state);
            }
            Command::Chat { id, text, everyone } => {
                let at = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                match self.sfu.say(id, &text, at, everyone) {
                    Ok(out) => {
                        self.apply(out);
                        self.fed_local_chat(id, &text, at, everyone);
                    }
                    Err(e @ ChatError::BadText { .. }) => {
                        tracing::info!(participant = %id, code = ?ErrorCode::BadChat, "chat refused");
                        if let Some(p) = self.peers.get(&id) {
                            let _ = p.send(PeerEvent::Signal(Signal::error(
                                ErrorCode::BadChat,
                                e.to_string(),
                                false,
                            )));
                        }
                    }
                    Err(_) => {}
                }
            }
            Command::Leave { id } => self.remove(id, None, now),
            Command::Notify {
                meeting,
                keys,
                signal,
            } => {
                for key in &keys {
                    for id in self.sfu.with_key(&meeting, key) {
                        if let Some(p) = self.peers.get(&id) {
                            if let Err(f) = p.send(PeerEvent::Signal(signal.clone())) {
                                self.fail(id, f);
                            }
                        }
                    }
                }
            }
            Command::Moderate {
                meeting,
                key,
                action,
                reply,
            } => {
                let targets = if action == Moderation::End {
                    self.sfu
                        .local_participants(&meeting)
                        .into_iter()
                        .map(|p| p.id)
                        .collect()
                } else {
                    self.sfu.with_key(&meeting, &key)
                };
                for &id in &targets {
                    match action {
                        Moderation::Mute | Moderation::Allow => {
                            self.sfu.set_silenced(id, action == Moderation::Mute);
                            if let Some(p) = self.peers.get(&id) {
                                if let Err(f) =
                                    p.send(PeerEvent::Signal(Signal::Moderated { action }))
                                {
                                    self.fail(id, f);
                                }
                            }
                        }
                        Moderation::Remove => self.fail(
                            id,
                            PeerFailure::new(
                                ErrorCode::Removed,
                                "the host removed you from this meeting",
                            ),
                        ),
                        Moderation::End => self.fail(
                            id,
                            PeerFailure::new(ErrorCode::Ended, "the host ended the meeting"),
                        ),
                    }
                    tracing::info!(participant = %id, %meeting, ?action, "moderated");
                }
                if action == Moderation::Remove {
                    // Whoever another node carries with that key is gone here too, and not
                    // taken back if that node announces them again.
                    self.remove_remotes_with_key(&meeting, &key, now);
                }
                let _ = reply.send(targets.len());
            }
            Command::View { id, tiles } => {
                let out = self.sfu.set_view(id, &tiles, now);
                self.apply(out);
                // A tile of another node's track shown or hidden: that node hears it now.
                self.fed_views();
            }
            Command::Participants { meeting, reply } => {
                let _ = reply.send(self.sfu.participants(&meeting));
            }
            Command::Rooms { meeting, plan } => {
                let out = self.sfu.set_rooms(&meeting, plan, now);
                self.apply(out);
            }
            Command::Spotlight { meeting, key } => {
                let out = self.sfu.set_spotlight(&meeting, key, now);
                self.apply(out);
            }
            Command::Record { meeting, tap } => self.record(meeting, tap, now),
            Command::RecordKeyframe { track } => {
                let out = self.sfu.keyframe_needed(track, None, now);
                self.apply(out);
            }
            Command::Recording {
                meeting,
                state,
                problem,
            } => self.own_recording(meeting, state, problem),
            Command::NodeEvents {
                node,
                meeting,
                events,
            } => self.on_node_events(node, meeting, events, now),
            Command::LinkOffer(offer) => self.on_link_offer(offer, now),
            Command::LinkFailed { link, reason } => {
                if self.peers.get(&link).is_some_and(|p| p.role.is_link()) {
                    self.fail(link, PeerFailure::new(ErrorCode::MediaFailed, reason));
                }
            }
            Command::NodeGone { node } => self.control_lost(&node, now),
            Command::NodeDismissed { node, meeting } => {
                self.node_lost(&node, Some(&meeting), now);
                self.fed.forget_lost(&meeting, &node);
            }
            Command::Resync { node, meeting } => self.resync_later(node, meeting),
            Command::ObservedIp { ip } => self.observed_ip(ip),
            Command::UseRelay { meeting, node, via } => self.use_relay(&meeting, &node, via, now),
            Command::Reception { meeting, reply } => {
                let mut out = Vec::new();
                for (&id, p) in &self.peers {
                    if p.role.is_link() {
                        continue;
                    }
                    let Some(m) = self.sfu.meeting_of(id) else {
                        continue;
                    };
                    if meeting.as_deref().is_some_and(|want| want != m) {
                        continue;
                    }
                    if let Some(r) = self.sfu.reception(id) {
                        out.push(BrowserReception {
                            meeting: m.to_owned(),
                            participant: id,
                            reception: r,
                            transport: p.transport.map(|t| match t {
                                Protocol::Udp => "udp",
                                _ => "tcp",
                            }),
                        });
                    }
                }
                out.sort_by_key(|r| r.participant);
                let _ = reply.send(out);
            }
            Command::Links { meeting, reply } => {
                let _ = reply.send(self.links(&meeting));
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
        }
        self.settle(now);
    }

    pub(crate) fn handle_datagram(&mut self, d: Datagram, now: Instant) {
        self.stats.datagrams_in += 1;
        // A probe of another node's, or the answer to one of ours: nobody's media.
        if d.proto == Protocol::Udp {
            match contained(|| probe::read(&d.data, d.source)).unwrap_or(None) {
                Some(Probe::Asked(answer)) => {
                    if self.probes_answered < MAX_PROBE_ANSWERS {
                        self.probes_answered += 1;
                        self.outbox.push(d.destination, d.source, &answer);
                    }
                    return;
                }
                Some(Probe::Answered(id, mapped)) => {
                    if let Some(i) = self.probes.iter().position(|(t, _)| *t == id) {
                        let (_, port) = self.probes.remove(i);
                        self.learned_mapping(port, mapped);
                    }
                    return;
                }
                None => {}
            }
        }
        // Parsing untrusted bytes: a bug here must not take the engine down.
        let Ok(Ok(contents)) = contained(|| d.data.as_slice().try_into()) else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: d.proto,
                source: d.source,
                destination: d.destination,
                contents,
            },
        );
        // str0m matches DTLS and media by their source address only (and a STUN check by
        // that too, before its credentials): with a link each way between two nodes, and
        // browsers, on one engine, only a peer on the socket the datagram came in on may
        // take it, or one link's handshake goes to another and never completes.
        let port = d.destination.port();
        let on_link_port = self.link_candidates.iter().any(|(p, _)| *p == port);
        let on_its_socket = |p: &Peer| match p.link_port {
            Some(link) => port == link,
            None => !on_link_port,
        };
        let accepts =
            |p: &Peer| on_its_socket(p) && contained(|| p.rtc.accepts(&input)).unwrap_or(false);
        let key = (d.source, d.destination);
        let cached = self
            .by_source
            .get(&key)
            .copied()
            .filter(|id| self.peers.get(id).is_some_and(|p| accepts(p)));
        let owner = cached.or_else(|| {
            self.peers
                .iter()
                .find(|(_, p)| accepts(p))
                .map(|(id, _)| *id)
        });
        let Some(id) = owner else {
            // Common for a STUN check racing the browser's signaling; harmless.
            tracing::trace!(source = %d.source, destination = %d.destination, "datagram for no peer");
            return;
        };
        self.by_source.insert(key, id);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.last_input = now;
        match d.proto {
            Protocol::Udp => peer.in_by_proto.0 += 1,
            _ => peer.in_by_proto.1 += 1,
        }
        match contained(|| peer.rtc.handle_input(input)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(participant = %id, error = %e, "bad input from peer");
            }
            Err(f) => return self.fail(id, f),
        }
        // Drained at once: in RTP mode str0m holds one received packet until the next
        // poll, and the next datagram would replace it.
        self.poll_peer(id, now);
    }

    /// Drain one peer: feed its timeout if due (or media was written to it), send what it
    /// transmits, and act on its events.
    fn poll_peer(&mut self, id: ParticipantId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let mut events = std::mem::take(&mut self.events);
        let outbox = &mut self.outbox;
        // Sent together at the end of the pass (`flush`).
        let res = peer.drain(now, |t| outbox.push_transmit(t), &mut events);
        self.drained(id, res, &mut events, now);
        self.events = events;
    }

    /// Act on what draining peer `id` gave: its events, the keyframes its streams need, or
    /// its failure.
    fn drained(
        &mut self,
        id: ParticipantId,
        res: Result<Drained, PeerFailure>,
        events: &mut Vec<Event>,
        now: Instant,
    ) {
        match res {
            Err(f) => {
                events.clear();
                self.fail(id, f);
            }
            Ok(done) => {
                self.stats.frames_forwarded += done.frames;
                // Its stream now carries another source (or resumes after a withheld
                // stretch): the decoder needs a keyframe of it.
                for track in done.switched {
                    let out = self.sfu.source_switched(track, id, now);
                    self.apply(out);
                }
                for ev in events.drain(..) {
                    self.on_event(id, ev, now);
                }
            }
        }
    }

    /// Drain the peers `ids`: on this thread when they are few or there are no workers;
    /// else split over the workers, each into its own outbox, then act on what they gave
    /// here, in the engine's own thread.
    fn drain_peers(&mut self, ids: Vec<ParticipantId>, now: Instant) {
        if ids.len() < PARALLEL_MIN || self.workers.is_none() || self.lanes.is_empty() {
            for id in ids {
                self.poll_peer(id, now);
            }
            return;
        }
        // Out of the map while the workers hold them: each worker gets its own peers.
        let mut taken: Vec<(ParticipantId, Box<Peer>)> = ids
            .into_iter()
            .filter_map(|id| self.peers.remove(&id).map(|p| (id, p)))
            .collect();
        self.stats.worker_rounds += 1;
        let per = taken.len().div_ceil(self.lanes.len()).max(1);
        if let (Some(pool), Some((own, others))) = (&self.workers, self.lanes.split_first_mut()) {
            let mut chunks = taken.chunks_mut(per);
            let first = chunks.next();
            // The engine's thread drains the first share itself while the workers take the rest.
            pool.in_place_scope(|scope| {
                for (chunk, lane) in chunks.zip(others.iter_mut()) {
                    scope.spawn(move |_| lane.drain(chunk, now));
                }
                if let Some(chunk) = first {
                    own.drain(chunk, now);
                }
            });
        }
        for (id, p) in taken {
            self.peers.insert(id, p);
        }
        let done: Vec<_> = self
            .lanes
            .iter_mut()
            .flat_map(|l| l.done.drain(..))
            .collect();
        for (id, res, mut events) in done {
            self.drained(id, res, &mut events, now);
        }
    }

    /// Whether anything waits to be sent.
    pub(crate) fn has_output(&self) -> bool {
        !self.outbox.is_empty() || self.lanes.iter().any(|l| !l.outbox.is_empty())
    }

    /// Send what the pass made: the engine's own outbox, and each worker's (in parallel).
    pub(crate) fn flush(
        &mut self,
        sockets: &HashMap<SocketAddr, Arc<UdpSocket>>,
        conns: &TcpConns,
    ) {
        let mut done = self.outbox.flush(sockets, conns);
        let mut parts = vec![Flushed::default(); self.lanes.len()];
        if let Some(pool) = &self.workers {
            // The lanes' outboxes leave in parallel, the first from this thread.
            pool.in_place_scope(|scope| {
                let mut lanes = self.lanes.iter_mut().zip(parts.iter_mut());
                let first = lanes.next();
                for (lane, part) in lanes.filter(|(l, _)| !l.outbox.is_empty()) {
                    scope.spawn(move |_| *part = lane.outbox.flush(sockets, conns));
                }
                if let Some((lane, part)) = first {
                    *part = lane.outbox.flush(sockets, conns);
                }
            });
        }
        for p in parts {
            done += p;
        }
        self.count_sent(done);
    }

    /// The ICE-TCP connections this engine should open: a node link's checks from its
    /// active candidate (on a link port) that found no connection. Packets from the media
    /// port (a browser's connection, or another node's, that closed) are not dialled back:
    /// the other end connects to us there.
    pub(crate) fn take_dials(&mut self) -> Vec<(SocketAddr, SocketAddr)> {
        let mut out = self.outbox.take_unconnected();
        for lane in &mut self.lanes {
            out.extend(lane.outbox.take_unconnected());
        }
        out.retain(|(local, _)| {
            self.link_candidates
                .iter()
                .any(|(port, _)| *port == local.port())
        });
        out.sort();
        out.dedup();
        out
    }

    /// Advance every peer that has input or a due timeout, act on what they emit, and repeat
    /// while forwarding makes other peers dirty.
    pub fn drive(&mut self, now: Instant) {
        for (id, p) in &self.peers {
            if p.timeout <= now {
                self.dirty.insert(*id);
            }
        }
        if now.duration_since(self.last_housekeeping) >= Duration::from_secs(1) {
            self.last_housekeeping = now;
            self.housekeeping(now);
        }
        self.settle(now);
    }

    fn settle(&mut self, now: Instant) {
        self.record_ready(now);
        // Each round only makes peers dirty by forwarding to them; a few rounds suffice.
        for _ in 0..8 {
            if self.dirty.is_empty() && self.renegotiate.is_empty() && self.failed.is_empty() {
                break;
            }
            for id in std::mem::take(&mut self.renegotiate) {
                let Some(p) = self.peers.get_mut(&id) else {
                    continue;
                };
                self.dirty.insert(id);
                match p.negotiate(now) {
                    Ok(None) => {}
                    Ok(Some(offer)) if p.role == Role::Browser => {
                        let sent = p.send(PeerEvent::Signal(Signal::Offer {
                            sdp: offer.sdp,
                            tracks: offer.tracks,
                        }));
                        if let Err(f) = sent {
                            self.fail(id, f);
                        }
                    }
                    Ok(Some(offer)) => self.send_link_offer(id, offer),
                    Err(f) => self.fail(id, f),
                }
            }
            let dirty: Vec<ParticipantId> = self.dirty.drain().collect();
            self.drain_peers(dirty, now);
            for (id, f) in std::mem::take(&mut self.failed) {
                self.remove(id, Some(f), now);
            }
        }
    }

    fn on_event(&mut self, id: ParticipantId, ev: Event, now: Instant) {
        match ev {
            Event::Connected => {
                let ready = match self.peers.get_mut(&id) {
                    Some(p) => p.on_connected(),
                    None => return,
                };
                tracing::debug!(participant = %id, "media connected");
                for track in ready {
                    let out = self.sfu.subscription_ready(id, track, now);
                    self.apply(out);
                }
                // Another node's link: what it carries that a worse link carried so far
                // (a relay, while this direct path connected) comes from it now.
                if self
                    .peers
                    .get(&id)
                    .is_some_and(|p| matches!(p.role, Role::LinkIn { .. }))
                {
                    self.publish_declared(id, now);
                }
            }
            Event::IceConnectionStateChange(state) => {
                let Some(p) = self.peers.get_mut(&id) else {
                    return;
                };
                match state {
                    IceConnectionState::Disconnected => {
                        p.disconnected_since.get_or_insert(now);
                    }
                    IceConnectionState::Connected | IceConnectionState::Completed => {
                        p.disconnected_since = None;
                        p.progress.ice_connected.get_or_insert(now);
                    }
                    _ => {}
                }
            }
            Event::MediaAdded(m) => {
                if m.direction != Direction::RecvOnly {
                    return;
                }
                let Some(p) = self.peers.get_mut(&id) else {
                    return;
                };
                if matches!(p.role, Role::LinkIn { .. }) {
                    let kind = match m.kind {
                        MediaKind::Audio => TrackKind::Audio,
                        MediaKind::Video => TrackKind::Video,
                    };
                    self.link_media_added(id, m.mid, kind, simulcast_layers(&m), now);
                    return;
                }
                let Some(source) = p.source_of(m.mid) else {
                    tracing::debug!(participant = %id, mid = %m.mid, "media without a declared source ignored");
                    return;
                };
                let kind = match m.kind {
                    MediaKind::Audio => TrackKind::Audio,
                    MediaKind::Video => TrackKind::Video,
                };
                match self.sfu.publish(id, source, kind, now) {
                    Ok((track, out)) => {
                        p.add_published(m.mid, track);
                        // A camera in layers (the rids of its offer).
                        let layers = simulcast_layers(&m);
                        if layers != veche_core::Layers::NONE {
                            self.sfu.set_simulcast(track, layers);
                        }
                        tracing::debug!(participant = %id, %track, ?source, "published");
                        self.apply(out);
                    }
                    Err(e) => {
                        tracing::info!(participant = %id, ?source, error = %e, "track not published");
                    }
                }
            }
            Event::RtpPacket(packet) => self.forward(id, packet),
            Event::EgressBitrateEstimate(str0m::bwe::BweKind::Twcc { estimate, .. }) => {
                tracing::debug!(viewer = %id, kbps = estimate.as_u64() / 1000, "estimate");
                let out = self.sfu.set_estimate(id, estimate.as_u64(), now);
                self.apply(out);
            }
            Event::PeerStats(stats) => {
                let Some(p) = self.peers.get_mut(&id) else {
                    return;
                };
                p.link_stats.update(&stats);
                if p.role.is_link() {
                    // What the other node got of this link: a path that keeps losing
                    // carries fewer layers (veche-core's narrow.rs).
                    let was = self.sfu.link_cap(id);
                    let out = self.sfu.link_loss(id, stats.egress_loss_fraction, now);
                    let cap = self.sfu.link_cap(id);
                    if cap != was {
                        tracing::info!(
                            link = %id,
                            loss = ?stats.egress_loss_fraction,
                            cap = cap.map(Layer::rid),
                            "node link's layers capped for loss on its path"
                        );
                    }
                    self.apply(out);
                }
            }
            Event::KeyframeRequest(req) => {
                let Some(track) = self.peers.get(&id).and_then(|p| p.out_track(req.mid)) else {
                    return;
                };
                // A node link's stream of one of several layers asks for that layer's.
                let out = match req.rid.and_then(|r| Layer::from_rid(&r)) {
                    Some(layer) => self.sfu.keyframe_needed_of(track, id, layer, now),
                    None => self.sfu.keyframe_needed(track, Some(id), now),
                };
                self.apply(out);
            }
            _ => {}
        }
    }

    /// One packet from publisher `id`, on to every subscriber of its track as it is.
    fn forward(&mut self, id: ParticipantId, packet: str0m::rtp::RtpPacket) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let Some((mid, layer)) = p.in_mid_of(packet.header.ssrc) else {
            return;
        };
        let Some(&track) = p.in_tracks.get(&mid) else {
            return;
        };
        let pt = packet.header.payload_type;
        let Some(params) = p.rtc.codec_config().find(|c| c.pt() == pt).copied() else {
            return;
        };
        // Padding on the main SSRC (rare with RTX) carries nothing to forward.
        if packet.payload.is_empty() {
            return;
        }
        // What it costs a viewer on the wire: its payload, and IP, UDP, RTP and SRTP
        // headers with their extensions (about 60 bytes; at audio's 50 packets a second,
        // a third of what a voice costs).
        p.count_in(mid, layer, packet.payload.len() + WIRE_OVERHEAD);
        p.last_media = packet.timestamp;
        let video = params.spec().codec.is_video();
        let frame = !video || packet.header.marker;
        if frame {
            p.frames_in += 1;
        }
        // A moderator muted its publisher: nobody gets it.
        if self.sfu.withheld(track) {
            p.withhold(mid);
            return;
        }
        let epoch = p.epoch(mid);
        let ext = &packet.header.ext_vals;
        // Only what describes the media travels on; the publisher's mid, rid and transport
        // numbers belong to its own connection (str0m writes ours).
        let ext = str0m::rtp::ExtensionValues {
            audio_level: ext.audio_level,
            voice_activity: ext.voice_activity,
            video_orientation: ext.video_orientation,
            ..Default::default()
        };
        let incoming = Incoming {
            source: (*packet.header.ssrc, epoch),
            seq: *packet.seq_no,
            ts: packet.header.timestamp,
            clock: params.spec().clock_rate.get(),
            arrival: packet.timestamp,
            marker: packet.header.marker,
            // The publisher's bytes: parsed under `contained`, like everything from a peer.
            vp8: video
                .then(|| contained(|| str0m::rtp::Vp8Descriptor::parse(&packet.payload).ok()))
                .and_then(|r| r.ok().flatten()),
            payload: packet.payload,
        };
        let keyframe = incoming
            .vp8
            .is_some_and(|d| d.starts_keyframe(&incoming.payload));
        // Written into each subscriber's stream when it is drained, maybe on a worker.
        let mut recorders = Vec::new();
        let packet = Arc::new(Forwarded {
            incoming,
            track,
            params,
            ext,
            frame,
            keyframe,
        });
        // The core says who gets it: a viewer's video takes one layer, and switches at
        // keyframes.
        let mut routes = std::mem::take(&mut self.routes);
        self.sfu.route(track, layer, keyframe, &mut routes);
        for r in &routes {
            let Some(peer) = self.peers.get_mut(&r.viewer) else {
                if self.recorders.is(r.viewer) {
                    recorders.push(r.viewer);
                }
                continue;
            };
            let Some(out) = peer.out_mid(track) else {
                continue;
            };
            if peer.queue(out, r.rid, r.stretch, packet.clone()) {
                self.dirty.insert(r.viewer);
            } else {
                self.stats.packets_dropped += 1;
            }
        }
        self.routes = routes;
        for sub in recorders {
            self.record_packet(sub, &packet);
        }
        // Who speaks, from the level the voice's packets carry (no decoding).
        if let Some(level) = packet.ext.audio_level {
            let out = self.sfu.heard(track, level, packet.incoming.arrival);
            self.apply(out);
        }
    }

    /// Carry out what the core decided.
    pub(crate) fn apply(&mut self, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Subscribe {
                    subscriber,
                    track,
                    publisher,
                    source,
                } => {
                    if self.recorders.is(subscriber) {
                        self.record_subscribe(subscriber, track, publisher, source);
                    } else if let Some(p) = self.peers.get_mut(&subscriber) {
                        p.subscribe(PendingSub {
                            track,
                            info: TrackInfo {
                                participant: publisher,
                                source,
                                kind: source.kind(),
                            },
                            layers: self
                                .sfu
                                .link_layers(subscriber, track)
                                .unwrap_or(veche_core::Layers::NONE),
                        });
                        self.renegotiate.insert(subscriber);
                    }
                }
                Output::Unsubscribe { subscriber, track } => {
                    if self.recorders.is(subscriber) {
                        self.record_unsubscribe(subscriber, track);
                    } else if let Some(p) = self.peers.get_mut(&subscriber) {
                        p.unsubscribe(track);
                        self.renegotiate.insert(subscriber);
                    }
                }
                Output::RequestKeyframe {
                    publisher,
                    track,
                    layer,
                } => {
                    tracing::debug!(%publisher, %track, layer = layer.map(|l| l.rid()), "keyframe asked for");
                    // A remote participant's tracks come in on a node link: ask upstream.
                    let owner = if self.peers.contains_key(&publisher) {
                        Some(publisher)
                    } else {
                        self.fed.track_in.get(&track).copied()
                    };
                    if let Some(publisher) = owner {
                        let Some(p) = self.peers.get_mut(&publisher) else {
                            continue;
                        };
                        match p.request_keyframe(track, layer) {
                            Ok(()) => {
                                self.dirty.insert(publisher);
                            }
                            Err(f) => self.failed.push((publisher, f)),
                        }
                    }
                }
                Output::Bitrate {
                    viewer,
                    minimum,
                    desired,
                } => {
                    if let Some(p) = self.peers.get_mut(&viewer) {
                        match p.set_bitrate(minimum, desired) {
                            Ok(()) => {
                                self.dirty.insert(viewer);
                            }
                            Err(f) => self.failed.push((viewer, f)),
                        }
                    }
                }
                Output::ResetEstimate { viewer, bps } => {
                    if let Some(p) = self.peers.get_mut(&viewer) {
                        tracing::debug!(%viewer, kbps = bps / 1000, "estimate started afresh");
                        match p.reset_estimate(bps) {
                            Ok(()) => {
                                self.dirty.insert(viewer);
                            }
                            Err(f) => self.failed.push((viewer, f)),
                        }
                    }
                }
                Output::SendLayers {
                    publisher,
                    source,
                    layers,
                    ..
                } => {
                    // A publisher at another node: its node hears what this one asks of
                    // its link (`fed_views`).
                    if !self.peers.contains_key(&publisher) {
                        self.fed_views();
                    }
                    if let Some(p) = self.peers.get(&publisher) {
                        let active = layers.rids();
                        tracing::debug!(%publisher, ?active, "layers to send");
                        if let Err(f) = p.send(PeerEvent::Signal(Signal::Layers { source, active }))
                        {
                            self.failed.push((publisher, f));
                        }
                    }
                }
                Output::Notify { to, notice } => {
                    if let Some(p) = self.peers.get(&to) {
                        if let Err(f) = p.send(PeerEvent::Notice(notice)) {
                            self.failed.push((to, f));
                        }
                    }
                }
                Output::Arrived {
                    meeting,
                    participant,
                    name,
                    key,
                } => {
                    // Someone another node carries, or a browser here.
                    let node = self
                        .fed
                        .node_of(participant)
                        .unwrap_or(&self.node_id)
                        .to_owned();
                    let presence = self.fed.presence.get(&participant).cloned();
                    self.attended(Attendance::Arrived {
                        meeting,
                        participant,
                        name,
                        key,
                        node,
                        presence,
                    });
                }
                Output::Departed {
                    meeting,
                    participant,
                } => self.attended(Attendance::Departed {
                    meeting,
                    participant,
                }),
            }
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.probes_answered = 0;
        // What each layer costs a viewer, measured over the last second or so.
        let secs = now
            .saturating_duration_since(self.last_rates)
            .as_secs_f64()
            .max(0.5);
        self.last_rates = now;
        let mut rates = Vec::new();
        for p in self.peers.values_mut() {
            rates.extend(p.take_in_bytes());
            // A browser's backup TCP connection carries a check now and then, its media
            // all the rest.
            match std::mem::take(&mut p.in_by_proto) {
                (0, 0) => {}
                (udp, tcp) if tcp > udp => p.transport = Some(Protocol::Tcp),
                _ => p.transport = Some(Protocol::Udp),
            }
        }
        for (track, layer, bytes) in rates {
            self.sfu
                .set_rate(track, layer, (bytes as f64 * 8.0 / secs) as u64);
        }
        let out = self.sfu.tick(now);
        self.apply(out);
        self.fed_housekeeping(now);
        // Viewers who left or came, and views that changed with them.
        self.fed_views();
        self.record_housekeeping(now);
        for (id, p) in &self.peers {
            let failure = if !p.offered && now.duration_since(p.joined_at) > OFFER_DEADLINE {
                Some(PeerFailure::new(
                    ErrorCode::MediaFailed,
                    "no offer arrived after joining",
                ))
            } else if p
                .offer
                .as_ref()
                .is_some_and(|o| now.duration_since(o.sent_at) > ANSWER_DEADLINE)
            {
                Some(PeerFailure::new(
                    ErrorCode::MediaFailed,
                    "the browser did not answer the node's offer",
                ))
            } else if p.role.is_link() && p.connected && {
                let silent = now.duration_since(p.last_input);
                let media_stopped_with_it =
                    p.last_input.duration_since(p.last_media) < Duration::from_millis(500);
                silent > LINK_SILENCE || (media_stopped_with_it && silent > LINK_MEDIA_SILENCE)
            } {
                // Media, RTCP and checks every second all stopped: the other node is gone.
                Some(PeerFailure::new(
                    ErrorCode::MediaFailed,
                    "the other node went silent",
                ))
            } else if p.role.is_link() && !p.connected {
                // A link that never connected is not a lost node: our own links go to a
                // relay after their deadline (federation housekeeping); another node's link
                // to us is dropped once that node must have given up on it too.
                (matches!(p.role, Role::LinkIn { .. })
                    && now.duration_since(p.joined_at) > LINK_IN_GIVE_UP)
                    .then(|| {
                        PeerFailure::new(ErrorCode::MediaFailed, "the node link never connected")
                    })
            } else if p.disconnected_since.is_some_and(|t| {
                let grace = if p.role.is_link() {
                    LINK_DISCONNECT_GRACE
                } else {
                    DISCONNECT_GRACE
                };
                now.duration_since(t) > grace
            }) {
                Some(PeerFailure::new(
                    ErrorCode::MediaFailed,
                    "the media connection was lost",
                ))
            } else {
                None
            };
            if let Some(f) = failure {
                self.failed.push((*id, f));
            }
        }
    }

    /// Add `ip` with our ports as a server-reflexive candidate for node links made from now
    /// on (not for browsers: a browser on the LAN reaches the host address).
    fn observed_ip(&mut self, ip: IpAddr) {
        const MAX_OBSERVED: usize = 4;
        for set in self
            .link_candidates
            .iter_mut()
            .map(|(_, set)| set)
            .chain(std::iter::once(&mut self.candidates))
        {
            // Learned mappings (another port than the set's own) do not count.
            let own = set.first().map(|c| c.addr().port());
            if set.iter().any(|c| c.addr().ip() == ip)
                || set
                    .iter()
                    .filter(|c| c.kind() == str0m::CandidateKind::ServerReflexive)
                    .filter(|c| Some(c.addr().port()) == own)
                    .count()
                    >= MAX_OBSERVED
            {
                continue;
            }
            let Some(base) = host_base(set, ip.is_ipv4()) else {
                continue;
            };
            match Candidate::server_reflexive(SocketAddr::new(ip, base.port()), base, "udp") {
                Ok(c) => {
                    tracing::info!(candidate = %c.addr(), "observed address offered on node links");
                    self.link_only.push(c.addr());
                    set.push(c);
                }
                Err(e) => tracing::debug!(%ip, error = %e, "observed address not usable"),
            }
        }
    }

    /// A probe from link port `port` was answered with `mapped`: where the other side sees
    /// our packets come from (`probe.rs`). A NAT that did not keep our port maps every flow
    /// from it there (one whose mapping was made while it was symmetric and kept since,
    /// or one that never keeps ports), so that is offered on links made from now on: a
    /// relayed pair's next direct try can meet. Only a new port of an address already seen
    /// from outside is learned, so a forged answer can at most add a port of our own
    /// address, and a port keeps only its newest.
    fn learned_mapping(&mut self, port: u16, mapped: SocketAddr) {
        let Some((_, set)) = self.link_candidates.iter_mut().find(|(p, _)| *p == port) else {
            return;
        };
        let srflx = |c: &Candidate| c.kind() == str0m::CandidateKind::ServerReflexive;
        if set.iter().any(|c| c.addr() == mapped)
            || !set.iter().any(|c| srflx(c) && c.addr().ip() == mapped.ip())
        {
            return;
        }
        let Some(base) = host_base(set, mapped.is_ipv4()) else {
            return;
        };
        match Candidate::server_reflexive(mapped, base, "udp") {
            Ok(c) => {
                tracing::info!(candidate = %c.addr(), %base, "our NAT's mapping of a link port, offered on node links");
                // A port has one mapping for new flows: the newest learned replaces the
                // last (a NAT that remapped it, a mapping that expired).
                let old: Vec<SocketAddr> = set
                    .iter()
                    .filter(|c| srflx(c) && c.addr().ip() == mapped.ip() && c.addr().port() != port)
                    .map(|c| c.addr())
                    .collect();
                set.retain(|c| !old.contains(&c.addr()));
                self.link_only.retain(|a| !old.contains(a));
                self.link_only.push(c.addr());
                set.push(c);
            }
            Err(e) => tracing::debug!(%mapped, error = %e, "learned mapping not usable"),
        }
    }

    /// A link port for a new node link (ours or the other node's) that no link is on,
    /// whose NAT mapping a probe learned ([`Self::learned_mapping`]), the one tried longest
    /// ago. A NAT that does not keep our port numbers gives a new flow from a port the
    /// mapping of its newest flow: on such a port that is the probe's, which is what the
    /// link offers. A port that carries links, or carried a try lately, has newer flows
    /// whose mappings may differ (made while the NAT was symmetric). `None`: no such port
    /// (a NAT that keeps ports, or no probe answered): the caller's default.
    pub(crate) fn fresh_slot(&mut self, now: Instant) -> Option<usize> {
        let busy: Vec<u16> = self.peers.values().filter_map(|p| p.link_port).collect();
        let slot = self
            .link_candidates
            .iter()
            .enumerate()
            .filter(|(_, (port, set))| {
                !busy.contains(port)
                    && set.iter().any(|c| {
                        c.kind() == str0m::CandidateKind::ServerReflexive
                            && c.addr().port() != *port
                    })
            })
            .min_by_key(|(_, (port, _))| self.tried_at.get(port).copied())
            .map(|(i, _)| i)?;
        self.tried_at.insert(self.link_candidates[slot].0, now);
        Some(slot)
    }

    /// Hand an arrival or departure to the attendance writer. Never waits: with its queue
    /// full (the disk far behind), the record is dropped and counted.
    fn attended(&mut self, a: Attendance) {
        let Some(tx) = &self.attendance else { return };
        if tx.try_send(a).is_err() {
            self.stats.attendance_dropped += 1;
            tracing::warn!("attendance queue full or closed: a record was dropped");
        }
    }

    pub(crate) fn fail(&mut self, id: ParticipantId, f: PeerFailure) {
        self.failed.push((id, f));
    }

    /// Drop a peer, tell it why (if it failed), and tell the meeting it left.
    pub(crate) fn remove(&mut self, id: ParticipantId, failure: Option<PeerFailure>, now: Instant) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        let failed = failure.is_some();
        if let Some(f) = failure {
            if f.code == ErrorCode::Internal {
                self.stats.peers_panicked += 1;
                tracing::error!(participant = %id, reason = %f.message, "peer removed after a fault");
            } else {
                tracing::info!(participant = %id, code = ?f.code, reason = %f.message, "peer removed");
            }
            peer.send_final(PeerEvent::Signal(Signal::error(f.code, f.message, true)));
        } else {
            tracing::info!(participant = %id, "left");
        }
        let _ = contained(|| peer.rtc.disconnect());
        self.by_source.retain(|_, v| *v != id);
        self.dirty.remove(&id);
        self.renegotiate.remove(&id);
        self.fed.presence.remove(&id);
        let local_meeting = (peer.role == Role::Browser)
            .then(|| self.sfu.meeting_of(id).map(str::to_owned))
            .flatten();
        let out = self.sfu.leave(id, now);
        self.apply(out);
        if let Some(meeting) = local_meeting {
            self.fed_broadcast(&meeting, veche_core::MeetingEvent::Left { id: id.0 });
        }
        let in_tracks = if matches!(peer.role, Role::LinkIn { .. }) {
            peer.in_tracks.values().copied().collect()
        } else {
            Vec::new()
        };
        self.link_removed(&peer.role, in_tracks, failed, peer.connected, now);
    }
}

/// The distinct ports of `bound`, in order.
fn link_ports(bound: &[SocketAddr]) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::new();
    for a in bound {
        if !ports.contains(&a.port()) {
            ports.push(a.port());
        }
    }
    ports
}

/// The address of `set`'s host candidate (not loopback) of the family `ipv4` says: what
/// a reflexive candidate of the set stands on, and where its probes go out from.
pub(crate) fn host_base(set: &[Candidate], ipv4: bool) -> Option<SocketAddr> {
    set.iter()
        .filter(|c| c.kind() == str0m::CandidateKind::Host)
        .map(|c| c.addr())
        .find(|a| !a.ip().is_loopback() && a.is_ipv4() == ipv4)
}

/// ICE candidates for sockets bound on `bound`: one host candidate each, and one
/// server-reflexive candidate per advertised address (reaching the same port through a
/// forward or a NAT; which base does not matter to ICE-lite, any of the same family will do).
fn candidates_for(bound: &[SocketAddr], advertise: &[IpAddr]) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for addr in bound {
        match Candidate::host(*addr, "udp") {
            Ok(c) => candidates.push(c),
            Err(e) => tracing::warn!(%addr, error = %e, "address not usable as a candidate"),
        }
    }
    let Some(port) = bound.first().map(|a| a.port()) else {
        return candidates;
    };
    for ip in advertise {
        let base = bound
            .iter()
            .copied()
            .find(|a| !a.ip().is_loopback() && a.is_ipv4() == ip.is_ipv4())
            .or_else(|| bound.iter().copied().find(|a| a.is_ipv4() == ip.is_ipv4()));
        let Some(base) = base else { continue };
        match Candidate::server_reflexive(SocketAddr::new(*ip, port), base, "udp") {
            Ok(c) => candidates.push(c),
            Err(e) => tracing::warn!(%ip, error = %e, "advertised address not usable"),
        }
    }
    candidates
}

/// The layers an incoming m-line sends side by side (the rids of its offer): a browser's
/// camera, or another node's link carrying several layers of one.
fn simulcast_layers(m: &str0m::media::MediaAdded) -> veche_core::Layers {
    veche_core::Layers::from_rids(
        m.simulcast
            .iter()
            .flat_map(|s| &s.recv)
            .map(|l| l.rid.to_string()),
    )
}
