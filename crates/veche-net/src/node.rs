//! The swarm task: one libp2p swarm on the node's identity, driven by one task that also
//! answers the [`NetHandle`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::metrics::{Metrics, Recorder};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    autonat, dcutr, identify, identity, kad, mdns, noise, ping, relay, request_response, tcp,
    yamux, Multiaddr, PeerId, StreamProtocol, Swarm,
};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::peerbook::PeerBook;
use crate::protocol::{self, Codec, NodeHello, RawRequest, Request, Response};

/// Provider lookups one node runs at once.
const MAX_PROVIDER_QUERIES: usize = 32;

/// The DHT key under which nodes announce they carry a meeting.
/// A hash, not the id: the id is what lets someone join, and DHT keys are seen by
/// whichever nodes store them.
fn meeting_key(id: &str) -> kad::RecordKey {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("veche meeting provider v1\0{id}").as_bytes());
    kad::RecordKey::new(&digest.as_slice())
}

/// Kademlia under veche's own protocol name: a separate DHT from IPFS's.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/veche/kad/1.0.0");
/// Identify's protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/veche/id/1.0.0";
/// Relays a node reserves a slot on at most.
const MAX_RELAYS: usize = 2;

/// How the node takes part in the network.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Find nodes on the LAN by multicast DNS.
    pub mdns: bool,
    /// Nodes to connect to at start (each with `/p2p/ID`).
    pub bootstrap: Vec<Multiaddr>,
    /// Serve as a relay for others (circuit relay v2), within [`relay_limits`].
    pub relay: bool,
    /// Addresses others can reach this node at, announced as they are (a public server).
    pub external: Vec<Multiaddr>,
    /// The operator's name for the node.
    pub name: String,
    /// Where the peer book lives.
    pub data_dir: PathBuf,
}

/// The limits of the relay service (see `docs/network.md`): enough for signaling and
/// control between nodes behind NATs, bounded per peer so one peer cannot take the relay.
pub fn relay_limits() -> relay::Config {
    relay::Config {
        max_reservations: 128,
        max_reservations_per_peer: 4,
        reservation_duration: Duration::from_secs(60 * 60),
        max_circuits: 64,
        max_circuits_per_peer: 8,
        // Control traffic only (media has its own path): an hour and 16 MiB per circuit.
        max_circuit_duration: Duration::from_secs(60 * 60),
        max_circuit_bytes: 16 * 1024 * 1024,
        ..relay::Config::default()
    }
}

/// One connected node, as `veche peers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    /// Its peer id.
    pub id: String,
    /// Its name (from its hello), once known.
    pub name: Option<String>,
    /// Its veche version, once known.
    pub version: Option<String>,
    /// The address of the connection in use (the first direct one, else a relayed one).
    pub address: String,
    /// Whether some connection to it is direct (not through a relay).
    pub direct: bool,
    /// Every open connection's address.
    pub connections: Vec<String>,
    /// Last ping round trip, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Public meetings it hosts.
    pub meetings: Vec<protocol::MeetingSummary>,
    /// It relays (circuits, and media for meetings whose nodes cannot reach each other).
    pub relay: bool,
}

/// The result of asking a node who it is.
#[derive(Debug, Clone, Serialize)]
pub struct HelloResult {
    /// Whom we asked.
    pub peer: String,
    /// What it said.
    pub response: Response,
    /// Round trip of the request, milliseconds.
    pub rtt_ms: f64,
    /// Whether a direct connection to it existed when the answer came.
    pub direct: bool,
}

/// Why asking a node failed.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[non_exhaustive]
pub enum HelloError {
    /// Not a peer id.
    #[error("not a peer id: {0}")]
    BadPeerId(String),
    /// It could not be reached, or did not answer in time.
    #[error("no answer: {0}")]
    Unreachable(String),
    /// The network task stopped.
    #[error("the network task has stopped")]
    Stopped,
}

/// What the network tells the application.
#[derive(Debug)]
pub enum AppEvent {
    /// Another node asks something about meetings; answer on `reply` (dropping it answers
    /// `unavailable`).
    Request {
        /// Who asks.
        peer: PeerId,
        /// What.
        request: Request,
        /// Where the answer goes.
        reply: oneshot::Sender<Response>,
    },
    /// Another node saw us at this IP address (identify's observed address): behind a NAT,
    /// the NAT's public address. Media links offer it, with the media ports, as a candidate.
    ObservedIp {
        /// The address.
        ip: std::net::IpAddr,
    },
    /// The last connection to a node closed.
    Disconnected {
        /// Which node.
        peer: PeerId,
    },
}

enum NetCommand {
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Request {
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Result<HelloResult, HelloError>>,
    },
    Respond {
        channel: request_response::ResponseChannel<Response>,
        response: Response,
    },
    /// Announce a provider record.
    Provide {
        key: kad::RecordKey,
    },
    /// Look providers up.
    FindProviders {
        key: kad::RecordKey,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    /// Send these bytes as a request, as they are (tests of hostile input).
    Raw {
        peer: PeerId,
        bytes: RawRequest,
        reply: oneshot::Sender<Result<HelloResult, HelloError>>,
    },
}

/// A handle to the network task.
#[derive(Clone, Debug)]
pub struct NetHandle {
    tx: mpsc::Sender<NetCommand>,
    /// This node's peer id.
    pub local_peer_id: PeerId,
}

impl NetHandle {
    /// The connected nodes.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(NetCommand::Peers(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Ask a node who it is (connecting first if needed, through a relay if that is the way).
    pub async fn hello(&self, peer: &str) -> Result<HelloResult, HelloError> {
        let peer: PeerId = peer
            .parse()
            .map_err(|_| HelloError::BadPeerId(peer.to_owned()))?;
        self.request(peer, Request::Hello).await
    }

    /// Send a request to a node (connecting first if needed) and wait for its answer.
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<HelloResult, HelloError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(NetCommand::Request {
                peer,
                request,
                reply,
            })
            .await
            .map_err(|_| HelloError::Stopped)?;
        rx.await.map_err(|_| HelloError::Stopped)?
    }

    /// Announce in the DHT that this node carries meeting `id` (a provider record), so a node
    /// that has only the id can find it.
    pub async fn provide(&self, id: &str) {
        let _ = self
            .tx
            .send(NetCommand::Provide {
                key: meeting_key(id),
            })
            .await;
    }

    /// Nodes that announced they carry meeting `id` (at most a few, within 15 s).
    pub async fn find_providers(&self, id: &str) -> Vec<PeerId> {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(NetCommand::FindProviders {
                key: meeting_key(id),
                reply,
            })
            .await
            .is_err()
        {
            return Vec::new();
        }
        tokio::time::timeout(Duration::from_secs(15), rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// Send raw bytes as a request (for tests of how nodes treat garbage).
    pub async fn send_raw(
        &self,
        peer: PeerId,
        bytes: RawRequest,
    ) -> Result<HelloResult, HelloError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(NetCommand::Raw { peer, bytes, reply })
            .await
            .map_err(|_| HelloError::Stopped)?;
        rx.await.map_err(|_| HelloError::Stopped)?
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    // First: a connection over a limit is refused before any other behaviour spends on it.
    limits: libp2p::connection_limits::Behaviour,
    per_address: crate::limits::PerAddress,
    relay_client: relay::client::Behaviour,
    relay: Toggle<relay::Behaviour>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    autonat_client: autonat::v2::client::Behaviour,
    autonat_server: autonat::v2::server::Behaviour,
    dcutr: dcutr::Behaviour,
    node: request_response::Behaviour<Codec>,
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// Building the transport or a behaviour failed.
    #[error("cannot set up libp2p: {0}")]
    Setup(String),
    /// A listen address could not be used.
    #[error("cannot listen on {addr}: {message}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        message: String,
    },
}

/// What the node says about itself in hellos; the closure is asked at each hello so the list
/// of public meetings is current.
pub type HelloSource = Arc<dyn Fn() -> NodeHello + Send + Sync>;

/// Start the swarm and its task. Requests about meetings go to `app` (without one they are
/// answered `unavailable`).
pub fn start(
    keypair: identity::Keypair,
    config: NetConfig,
    hello: HelloSource,
    app: Option<mpsc::Sender<AppEvent>>,
    registry: &mut Registry,
) -> Result<NetHandle, NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    let local = keypair.public().to_peer_id();
    let relay_server = config.relay;
    let mdns_on = config.mdns;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        // A connection whose other end died (a relay killed, a cable pulled) is given up
        // within 4 s rather than libp2p's 10: circuits through a dead relay close sooner,
        // and the warm one through the other relay takes over.
        .with_quic_config(|mut c| {
            c.max_idle_timeout = QUIC_IDLE_TIMEOUT_MS;
            c.keep_alive_interval = Duration::from_secs(1);
            c
        })
        .with_dns()
        .map_err(|e| setup(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| setup(&e))?
        .with_behaviour(|key, relay_client| {
            let id = key.public().to_peer_id();
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(mdns::Config::default(), id)?)
            } else {
                None
            };
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config.set_query_timeout(Duration::from_secs(30));
            Ok(Behaviour {
                limits: crate::limits::connection_limits(),
                per_address: crate::limits::PerAddress::new(crate::limits::MAX_INCOMING_PER_IP),
                relay_client,
                relay: Toggle::from(
                    relay_server.then(|| relay::Behaviour::new(id, relay_limits())),
                ),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                        .with_agent_version(format!("veche/{}", env!("CARGO_PKG_VERSION")))
                        .with_push_listen_addr_updates(true),
                ),
                ping: ping::Behaviour::new(
                    ping::Config::new().with_interval(Duration::from_secs(5)),
                ),
                mdns: Toggle::from(mdns),
                kad: kad::Behaviour::with_config(id, kad::store::MemoryStore::new(id), kad_config),
                autonat_client: autonat::v2::client::Behaviour::default(),
                autonat_server: autonat::v2::server::Behaviour::default(),
                dcutr: dcutr::Behaviour::new(id),
                node: request_response::Behaviour::with_codec(
                    Codec,
                    [(protocol::PROTOCOL, request_response::ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(20)),
                ),
            })
        })
        .map_err(|e| setup(&e))?
        // Node links carry meetings; do not drop them for a lull in control traffic.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();

    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                message: e.to_string(),
            })?;
    }
    for addr in &config.external {
        swarm.add_external_address(addr.clone());
    }
    if config.relay || !config.external.is_empty() {
        // Reachable nodes serve the DHT; others would wait for AutoNAT to say so.
        swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
    }

    let metrics = Metrics::new(registry);
    let mut book = PeerBook::load(&config.data_dir);
    let mut bootstrap_ids = HashSet::new();
    for addr in &config.bootstrap {
        match peer_of(addr) {
            Some(id) => {
                bootstrap_ids.insert(id);
                swarm.behaviour_mut().kad.add_address(&id, addr.clone());
                if let Err(e) = swarm.dial(addr.clone()) {
                    tracing::warn!(%addr, error = %e, "cannot dial bootstrap node");
                }
            }
            None => tracing::warn!(%addr, "bootstrap address without /p2p/<peer id> ignored"),
        }
    }
    // Redial the peers we met before: nodes that met once find each other again.
    for (id, addrs) in book.peers() {
        if id == local || addrs.is_empty() {
            continue;
        }
        for a in &addrs {
            swarm.behaviour_mut().kad.add_address(&id, a.clone());
        }
        let opts = DialOpts::peer_id(id)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = swarm.dial(opts) {
            tracing::debug!(peer = %id, error = %e, "cannot redial a known peer");
        }
    }
    let _ = book.save();

    let (tx, rx) = mpsc::channel(256);
    let task = Task {
        swarm,
        rx,
        self_tx: tx.clone(),
        app,
        observed_ips: HashSet::new(),
        hello,
        metrics,
        book,
        relay_server,
        has_external: !config.external.is_empty(),
        connections: HashMap::new(),
        rtt: HashMap::new(),
        hellos: HashMap::new(),
        relays: HashSet::new(),
        warming: HashMap::new(),
        dialled: HashMap::new(),
        pending: HashMap::new(),
        provider_queries: HashMap::new(),
    };
    tokio::spawn(task.run());
    Ok(NetHandle {
        tx,
        local_peer_id: local,
    })
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// See the QUIC transport's configuration above.
const QUIC_IDLE_TIMEOUT_MS: u32 = 4_000;

fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Pending {
    peer: PeerId,
    started: Instant,
    reply: oneshot::Sender<Result<HelloResult, HelloError>>,
}

struct Task {
    swarm: Swarm<Behaviour>,
    rx: mpsc::Receiver<NetCommand>,
    /// For answers the application computes asynchronously.
    self_tx: mpsc::Sender<NetCommand>,
    app: Option<mpsc::Sender<AppEvent>>,
    observed_ips: HashSet<std::net::IpAddr>,
    hello: HelloSource,
    metrics: Metrics,
    book: PeerBook,
    relay_server: bool,
    has_external: bool,
    /// Open connections per peer: id → remote address.
    connections: HashMap<PeerId, Vec<(ConnectionId, Multiaddr)>>,
    rtt: HashMap<PeerId, Duration>,
    hellos: HashMap<PeerId, NodeHello>,
    /// Relays we hold (or asked for) a reservation on.
    relays: HashSet<PeerId>,
    /// Circuits dialled to keep a second control path warm, and when (see `warm_circuits`).
    warming: HashMap<String, Instant>,
    /// When we last dialled each peer for a request (bounded).
    dialled: HashMap<PeerId, Instant>,
    /// Our outstanding requests, by id: answers are matched to the asker.
    pending: HashMap<request_response::OutboundRequestId, Option<Pending>>,
    /// Provider lookups in flight.
    provider_queries: HashMap<kad::QueryId, oneshot::Sender<Vec<PeerId>>>,
}

impl Task {
    async fn run(mut self) {
        // Saving only writes when something changed, so a short interval costs nothing idle.
        let mut save = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                ev = self.swarm.select_next_some() => self.on_event(ev),
                _ = save.tick() => {
                    if let Err(e) = self.book.save() {
                        tracing::warn!(error = %e, "cannot save the peer book");
                    }
                    self.warm_circuits();
                }
            }
        }
        let _ = self.book.save();
    }

    fn on_command(&mut self, cmd: NetCommand) {
        match cmd {
            NetCommand::Peers(reply) => {
                let _ = reply.send(self.peer_list());
            }
            NetCommand::Request {
                peer,
                request,
                reply,
            } => {
                self.request(peer, protocol::encode(&request), reply);
            }
            NetCommand::Respond { channel, response } => self.respond(channel, response),
            NetCommand::Raw { peer, bytes, reply } => self.request(peer, bytes, reply),
            NetCommand::Provide { key } => {
                if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
                    tracing::warn!(error = %e, "cannot announce a meeting in the DHT");
                }
            }
            NetCommand::FindProviders { key, reply } => {
                if self.provider_queries.len() >= MAX_PROVIDER_QUERIES {
                    let _ = reply.send(Vec::new());
                    return;
                }
                let q = self.swarm.behaviour_mut().kad.get_providers(key);
                self.provider_queries.insert(q, reply);
            }
        }
    }

    fn request(
        &mut self,
        peer: PeerId,
        bytes: RawRequest,
        reply: oneshot::Sender<Result<HelloResult, HelloError>>,
    ) {
        if !self.swarm.is_connected(&peer) {
            self.dial(peer);
        }
        let id = self.swarm.behaviour_mut().node.send_request(&peer, bytes);
        self.pending.insert(
            id,
            Some(Pending {
                peer,
                started: Instant::now(),
                reply,
            }),
        );
    }

    /// The address of a circuit through `relay` (its direct address, then `/p2p-circuit`),
    /// to which a peer's id is added.
    fn circuit_through(&self, relay: &PeerId) -> Option<Multiaddr> {
        let (_, addr) = self.connections.get(relay)?.first()?;
        if is_relayed(addr) {
            return None;
        }
        let mut a = addr.clone();
        if peer_of(&a).is_none() {
            a.push(Protocol::P2p(*relay));
        }
        a.push(Protocol::P2pCircuit);
        Some(a)
    }

    /// A peer we reach only through relays gets a circuit through each relay we hold a
    /// reservation on (at most 2), so that when one relay dies the control path through
    /// the other is already there. (A dial through a relay the peer holds no reservation on
    /// fails and is tried again at the next tick; nothing else is affected.)
    fn warm_circuits(&mut self) {
        let mut dials = Vec::new();
        for (peer, conns) in &self.connections {
            if self.relays.contains(peer) || conns.iter().any(|(_, a)| !is_relayed(a)) {
                continue;
            }
            for relay in &self.relays {
                let through = format!("/p2p/{relay}/p2p-circuit");
                if conns.iter().any(|(_, a)| a.to_string().contains(&through)) {
                    continue;
                }
                if let Some(a) = self.circuit_through(relay) {
                    dials.push((*peer, a.with(Protocol::P2p(*peer))));
                }
            }
        }
        // Each path tried at most every 10 s.
        let now = Instant::now();
        self.warming
            .retain(|_, at| now.duration_since(*at) < Duration::from_secs(10));
        for (peer, addr) in dials {
            let key = addr.to_string();
            if self.warming.len() >= 64 || self.warming.contains_key(&key) {
                continue;
            }
            self.warming.insert(key, now);
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr])
                .condition(PeerCondition::Always)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, error = %e, "second circuit not dialled");
            }
        }
    }

    /// Dial a peer by id: the addresses we know, and through every relay we hold a
    /// reservation on (if the peer has one there too, that path works behind any NAT).
    fn dial(&mut self, peer: PeerId) {
        let mut addrs: Vec<Multiaddr> = self
            .book
            .peers()
            .into_iter()
            .find(|(id, _)| *id == peer)
            .map(|(_, a)| a)
            .unwrap_or_default();
        addrs.extend(self.relays.iter().filter_map(|r| self.circuit_through(r)));
        // Even while another dial is under way: Kademlia dials peers it heard of at their
        // private addresses, which never answer from another network, and waiting on that
        // dial failed every request while the circuit would have connected at once. At most
        // one of ours every 2 s per peer.
        let now = Instant::now();
        if self
            .dialled
            .get(&peer)
            .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(2))
        {
            return;
        }
        if self.dialled.len() >= 1024 {
            self.dialled
                .retain(|_, t| now.duration_since(*t) < Duration::from_secs(2));
        }
        self.dialled.insert(peer, now);
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .condition(PeerCondition::Disconnected)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "dial not started");
        }
    }

    fn peer_list(&self) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = self
            .connections
            .iter()
            .map(|(id, conns)| {
                let direct = conns.iter().find(|(_, a)| !is_relayed(a));
                let address = direct
                    .or(conns.first())
                    .map(|(_, a)| a.to_string())
                    .unwrap_or_default();
                let hello = self.hellos.get(id);
                PeerInfo {
                    id: id.to_string(),
                    name: hello.map(|h| h.name.clone()),
                    version: hello.map(|h| h.version.clone()),
                    address,
                    direct: direct.is_some(),
                    connections: conns.iter().map(|(_, a)| a.to_string()).collect(),
                    rtt_ms: self.rtt.get(id).map(|d| d.as_secs_f64() * 1000.0),
                    meetings: hello.map(|h| h.meetings.clone()).unwrap_or_default(),
                    relay: hello.is_some_and(|h| h.relay),
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        self.metrics.record(&ev);
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                // A relay announces where it is reachable; without --external-address, its
                // concrete non-loopback listen addresses are the best guess.
                if self.relay_server && !self.has_external && !is_relayed(&address) {
                    let loopback = address
                        .iter()
                        .any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_loopback()));
                    if !loopback {
                        self.swarm.add_external_address(address);
                    }
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let addr = match &endpoint {
                    // A circuit the other node opened to us through our relay: its remote
                    // address names only the peer, our listening address names the relay.
                    // Kept as the dialer sees it (relay, circuit, peer), so that it counts
                    // as relayed, and through which relay, on this side too.
                    ConnectedPoint::Listener { local_addr, .. }
                        if is_relayed(local_addr) && !is_relayed(endpoint.get_remote_address()) =>
                    {
                        local_addr.clone().with(Protocol::P2p(peer_id))
                    }
                    _ => endpoint.get_remote_address().clone(),
                };
                tracing::info!(peer = %peer_id, %addr, relayed = is_relayed(&addr), "connected");
                if let ConnectedPoint::Dialer { address, .. } = &endpoint {
                    if !is_relayed(address) {
                        self.book.saw(&peer_id, address, unix_now());
                    }
                }
                let first = !self.connections.contains_key(&peer_id);
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .push((connection_id, addr));
                if first {
                    // Learn who it is, once per connected peer.
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .node
                        .send_request(&peer_id, protocol::encode(&Request::Hello));
                    self.pending.insert(id, None);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                if let Some(c) = self.connections.get_mut(&peer_id) {
                    c.retain(|(id, _)| *id != connection_id);
                    if c.is_empty() {
                        self.connections.remove(&peer_id);
                        self.rtt.remove(&peer_id);
                        self.hellos.remove(&peer_id);
                        self.relays.remove(&peer_id);
                        tracing::info!(peer = %peer_id, "disconnected");
                        if let Some(app) = self.app.clone() {
                            // Not try_send: a flood of requests must not crowd this out.
                            tokio::spawn(async move {
                                let _ = tokio::time::timeout(
                                    Duration::from_secs(10),
                                    app.send(AppEvent::Disconnected { peer: peer_id }),
                                )
                                .await;
                            });
                        }
                    }
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                // Refusals over a limit included: debug, as a flood must not flood the log.
                tracing::debug!(from = %send_back_addr, %error, "incoming connection refused or failed");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
            }
            SwarmEvent::Behaviour(b) => self.on_behaviour(b),
            _ => {}
        }
    }

    /// Answer provider lookups with the first providers found (or none, when done).
    fn on_kad(&mut self, e: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = e
        else {
            return;
        };
        let kad::QueryResult::GetProviders(r) = result else {
            return;
        };
        let me = *self.swarm.local_peer_id();
        let found: Vec<PeerId> = match r {
            Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                providers.into_iter().filter(|p| *p != me).take(8).collect()
            }
            _ => Vec::new(),
        };
        if found.is_empty() && !step.last {
            return;
        }
        if let Some(reply) = self.provider_queries.remove(&id) {
            let _ = reply.send(found);
        }
        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
            q.finish();
        }
    }

    /// Tell the application a new address another node observed us at (a few at most).
    fn observed(&mut self, addr: &Multiaddr) {
        // Seen through a relay circuit, the address is the relay's, not ours.
        if is_relayed(addr) {
            return;
        }
        let ip = addr.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
            Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        });
        let Some(ip) = ip.filter(|ip| !ip.is_loopback() && !ip.is_unspecified()) else {
            return;
        };
        if self.observed_ips.len() >= 8 || !self.observed_ips.insert(ip) {
            return;
        }
        tracing::info!(%ip, "another node observed us at this address");
        if let Some(app) = &self.app {
            let _ = app.try_send(AppEvent::ObservedIp { ip });
        }
    }

    fn on_behaviour(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Identify(e) => {
                self.metrics.record(&e);
                if let identify::Event::Received { peer_id, info, .. } = e {
                    if info.protocol_version != IDENTIFY_PROTOCOL {
                        return;
                    }
                    self.observed(&info.observed_addr);
                    // Its loopback addresses are ours to it only when it is on this machine:
                    // dialled from elsewhere they reach ourselves, and that wrong peer ends
                    // the whole dial, circuits through a relay included (a lost relay's
                    // pair then never found each other through the next one).
                    let same_machine = self
                        .connections
                        .get(&peer_id)
                        .is_some_and(|c| c.iter().any(|(_, a)| is_loopback(a)));
                    for a in &info.listen_addrs {
                        if !is_relayed(a) && (same_machine || !is_loopback(a)) {
                            self.swarm
                                .behaviour_mut()
                                .kad
                                .add_address(&peer_id, a.clone());
                        }
                    }
                    let hop = info.protocols.contains(&relay::HOP_PROTOCOL_NAME);
                    if hop
                        && !self.relay_server
                        && self.relays.len() < MAX_RELAYS
                        && !self.relays.contains(&peer_id)
                    {
                        self.reserve_on(peer_id);
                    }
                }
            }
            BehaviourEvent::Ping(e) => {
                self.metrics.record(&e);
                if let Ok(rtt) = e.result {
                    self.rtt.insert(e.peer, rtt);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                // One dial per peer with all its addresses (tried at once): a dial per
                // address would leave all but the first undialled while it runs, and where
                // UDP is blocked the first, QUIC, hangs until its timeout and TCP is never
                // tried.
                let mut by_peer: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
                for (peer, addr) in found {
                    if self.swarm.is_connected(&peer) {
                        continue;
                    }
                    tracing::info!(%peer, %addr, "found on the LAN");
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    match by_peer.iter_mut().find(|(p, _)| *p == peer) {
                        Some((_, addrs)) => addrs.push(addr),
                        None => by_peer.push((peer, vec![addr])),
                    }
                }
                for (peer, addrs) in by_peer {
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    let _ = self.swarm.dial(opts);
                }
            }
            BehaviourEvent::Mdns(_) => {}
            BehaviourEvent::Kad(e) => {
                self.metrics.record(&e);
                self.on_kad(e);
            }
            BehaviourEvent::Relay(e) => self.metrics.record(&e),
            BehaviourEvent::RelayClient(e) => {
                tracing::info!(event = ?e, "relay client");
            }
            BehaviourEvent::Dcutr(e) => {
                self.metrics.record(&e);
                match &e.result {
                    Ok(_) => {
                        tracing::info!(peer = %e.remote_peer_id, "hole punched: direct connection")
                    }
                    Err(err) => {
                        tracing::info!(peer = %e.remote_peer_id, error = %err, "hole punch failed; staying relayed")
                    }
                }
            }
            BehaviourEvent::AutonatClient(e) => {
                tracing::debug!(tested = %e.tested_addr, ok = e.result.is_ok(), "autonat probe");
            }
            BehaviourEvent::AutonatServer(_) => {}
            BehaviourEvent::Node(e) => self.on_node(e),
        }
    }

    /// Answer a request; the asker may have given up meanwhile, which is not our error.
    fn respond(
        &mut self,
        channel: request_response::ResponseChannel<Response>,
        response: Response,
    ) {
        if self
            .swarm
            .behaviour_mut()
            .node
            .send_response(channel, response)
            .is_err()
        {
            tracing::debug!("response not sent: the stream closed");
        }
    }

    /// Hand a meetings request to the application; its answer comes back as a command, so
    /// the swarm never waits for it.
    fn hand_to_app(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: request_response::ResponseChannel<Response>,
    ) {
        let unavailable = || Response::Error {
            code: protocol::ErrorCode::Unavailable,
            message: "this node does not serve meetings to other nodes now".into(),
        };
        let (reply, rx) = oneshot::channel();
        let queued = self.app.as_ref().is_some_and(|app| {
            app.try_send(AppEvent::Request {
                peer,
                request,
                reply,
            })
            .is_ok()
        });
        if !queued {
            self.respond(channel, unavailable());
            return;
        }
        let back = self.self_tx.clone();
        tokio::spawn(async move {
            let response = match tokio::time::timeout(Duration::from_secs(15), rx).await {
                Ok(Ok(r)) => r,
                _ => unavailable(),
            };
            let _ = back.send(NetCommand::Respond { channel, response }).await;
        });
    }

    fn reserve_on(&mut self, relay: PeerId) {
        let Some((_, addr)) = self
            .connections
            .get(&relay)
            .and_then(|c| c.iter().find(|(_, a)| !is_relayed(a)))
            .cloned()
        else {
            return;
        };
        let mut listen = addr;
        if peer_of(&listen).is_none() {
            listen.push(Protocol::P2p(relay));
        }
        listen.push(Protocol::P2pCircuit);
        match self.swarm.listen_on(listen.clone()) {
            Ok(_) => {
                tracing::info!(%relay, addr = %listen, "reserving a relay slot");
                self.relays.insert(relay);
            }
            Err(e) => tracing::warn!(%relay, error = %e, "cannot listen through relay"),
        }
    }

    fn on_node(&mut self, ev: request_response::Event<RawRequest, Response>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message { peer, message, .. } => match message {
                Message::Request {
                    request, channel, ..
                } => {
                    let me = (self.hello)();
                    let response = match protocol::handle_request(&request, &me) {
                        protocol::Handled::Answer(r) => r,
                        protocol::Handled::App(request) => {
                            self.hand_to_app(peer, request, channel);
                            return;
                        }
                    };
                    if let Response::Error { code, message } = &response {
                        tracing::info!(%peer, ?code, %message, "refused a node request");
                    }
                    self.respond(channel, response);
                }
                Message::Response {
                    request_id,
                    response,
                } => {
                    if let Response::Hello(h) = &response {
                        self.book.named(&peer, &h.name);
                        self.hellos.insert(peer, h.clone());
                    }
                    if let Some(Some(p)) = self.pending.remove(&request_id) {
                        let direct = self
                            .connections
                            .get(&p.peer)
                            .is_some_and(|c| c.iter().any(|(_, a)| !is_relayed(a)));
                        let _ = p.reply.send(Ok(HelloResult {
                            peer: p.peer.to_string(),
                            response,
                            rtt_ms: p.started.elapsed().as_secs_f64() * 1000.0,
                            direct,
                        }));
                    }
                }
            },
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let why = match error {
                    // The version is in the protocol's name: a node of another release
                    // refuses ours rather than misreading it.
                    request_response::OutboundFailure::UnsupportedProtocols => format!(
                        "that node does not speak this version of the node protocol ({}): it \
                         runs another veche release (run the same on both), or is no veche node",
                        protocol::PROTOCOL
                    ),
                    e => e.to_string(),
                };
                tracing::info!(%peer, error = %why, "node request failed");
                if let Some(Some(p)) = self.pending.remove(&request_id) {
                    let _ = p.reply.send(Err(HelloError::Unreachable(why)));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::info!(%peer, %error, "inbound node request failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }
}
