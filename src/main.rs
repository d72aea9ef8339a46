//! `veche`: the command line. Parses flags, merges them over `config.toml`, and wires the
//! node's parts together; the parts themselves live in `crates/`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use veche_media::{Engine, EngineConfig};
use veche_net::Multiaddr;
use veche_node::{Config, MeetingStore, NodeIdentity, TlsMaterial};
use veche_web::{AppState, NodeInfo, NodeMetrics, Scheme};

mod federation;
mod participant;

const DEFAULT_HTTP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7300);
const DEFAULT_HTTPS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7443);
const DEFAULT_MEDIA_PORT: u16 = 7301;
const DEFAULT_LINK_PORT: u16 = 7303;

/// veche: a meeting node you run yourself. Audio, video, screen share and chat in the
/// browser, with no vendor and no account.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
// Parsed once per process; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Start the node and print the address to open in a browser.
    Run(RunArgs),
    /// Print this node's id (made on first use and kept in the data directory).
    Id(DataDirArg),
    /// List the veche nodes the running node is connected to.
    Peers(PeersArgs),
    /// Ask a node who it is, through the running node (connecting to it if needed).
    Hello(HelloArgs),
    /// Join a meeting from the terminal, as a person whose key is a file: report the media
    /// that arrives, who comes and goes, and the chat. Publishes no media.
    Join(JoinArgs),
    /// Print who was in a meeting on the running node, and when, as CSV (one line per
    /// stay: name, key, node, role, joined, left, minutes).
    Attendance(AttendanceArgs),
    /// List the recordings kept on this node (of one meeting, or all), or copy one out with
    /// --export NAME --out FILE. Reads the data directory: the node need not run.
    Recordings(RecordingsArgs),
}

#[derive(Args, Debug)]
struct RecordingsArgs {
    /// Only this meeting's (its id, like k3x-9qa-7mf, or its link).
    meeting: Option<String>,
    /// Copy this recording (a name the list shows) out of the node.
    #[arg(long, value_name = "NAME", requires = "meeting", requires = "out")]
    export: Option<String>,
    /// Where to copy it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    data: DataDirArg,
}

#[derive(Args, Debug)]
struct AttendanceArgs {
    /// The meeting's id (like k3x-9qa-7mf) or its link.
    meeting: String,
    /// The running node's HTTP address.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_HTTP)]
    http: SocketAddr,
    /// Write it to this file instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct JoinArgs {
    /// The meeting link, as the host gave it (http://HOST:PORT/m/ID, with its #invite=...).
    link: String,
    /// The name the others see.
    #[arg(long, default_value = "Terminal")]
    name: String,
    /// The person's key file (made on first use, mode 0600); the same file is the same
    /// person to every meeting [default: person.key in the data directory].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    #[command(flatten)]
    data: DataDirArg,
    /// Leave after this many seconds [default: stay until Ctrl-C].
    #[arg(long = "for", value_name = "SECONDS")]
    seconds: Option<u64>,
    /// Say this in the chat once joined.
    #[arg(long, value_name = "TEXT")]
    say: Option<String>,
    /// The id of the node the link's address reaches, when that node is not on this
    /// machine and the link does not name it: the key signs a challenge for no other node.
    #[arg(long, value_name = "ID")]
    node: Option<String>,
}

#[derive(Args, Debug)]
struct PeersArgs {
    /// The running node's HTTP address.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_HTTP)]
    http: SocketAddr,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct HelloArgs {
    /// The other node's peer id.
    peer: String,
    /// The running node's HTTP address.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_HTTP)]
    http: SocketAddr,
}

#[derive(Args, Debug)]
struct DataDirArg {
    /// Where the node keeps its key, certificate, config.toml and meetings
    /// [default: the user's data directory, e.g. ~/.local/share/veche].
    #[arg(long, env = "VECHE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Address for the web UI and API over plain HTTP. Keep it on loopback unless a proxy in
    /// front adds HTTPS: browsers on other machines need --lan [default: 127.0.0.1:7300].
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// The one UDP port that carries all media, for every participant [default: 7301].
    #[arg(long, value_name = "PORT")]
    media_port: Option<u16>,
    /// The UDP port of the media links this node opens to other nodes of a meeting
    /// (other nodes' links to it arrive on the media port): this port and the 7 above it,
    /// one per meeting carried with the same node [default: 7303].
    #[arg(long, value_name = "PORT")]
    link_port: Option<u16>,
    /// Threads that encrypt and send forwarded media [default: one per core this process
    /// may run on].
    #[arg(long, value_name = "N")]
    media_threads: Option<usize>,
    /// An extra IP address to offer browsers for media, e.g. a public address whose UDP
    /// media port is forwarded to this machine. Repeatable.
    #[arg(long, value_name = "IP")]
    advertise: Vec<IpAddr>,
    /// Bind the media ports on this local IPv4 address only (repeatable), e.g. 127.0.0.1
    /// for a node that serves this machine alone [default: loopback and every interface].
    #[arg(long, value_name = "IP")]
    media_bind: Vec<Ipv4Addr>,
    /// Most participants in one meeting on this node [default: 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(2..))]
    max_participants: Option<u16>,
    /// Also serve HTTPS on every network interface, so other devices on the LAN (students'
    /// laptops and tablets) can join with camera and microphone.
    #[arg(long)]
    lan: bool,
    /// Address for HTTPS when --lan is on [default: 0.0.0.0:7443].
    #[arg(long, value_name = "ADDR")]
    https: Option<SocketAddr>,
    /// PEM certificate chain to serve instead of the node's own self-signed certificate.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The name other nodes see [default: this machine's host name].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// A libp2p address to listen on for other nodes. Repeatable
    /// [default: /ip4/0.0.0.0/udp/7302/quic-v1 and /ip4/0.0.0.0/tcp/7302].
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Do not look for other nodes on the LAN with multicast DNS.
    #[arg(long)]
    no_mdns: bool,
    /// A node to connect to at start, e.g. /ip4/198.51.100.7/udp/7302/quic-v1/p2p/12D3Koo...
    /// Repeatable.
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Relay for nodes behind NATs (circuit relay v2, limits in docs/network.md). Give a
    /// node that others can reach.
    #[arg(long)]
    relay: bool,
    /// An address other nodes can reach this node at (a public server's address). Repeatable.
    #[arg(long, value_name = "MULTIADDR")]
    external_address: Vec<Multiaddr>,
    /// A name browsers use for this node (a real certificate's name, a LAN DNS name), besides
    /// loopback, its addresses and its host name; other names are refused. Repeatable.
    #[arg(long, value_name = "NAME")]
    host_name: Vec<String>,
    /// Days an ended meeting (or one past its host's end time) is kept before it is deleted
    /// with everything decided in it [default: 30].
    #[arg(long, value_name = "DAYS")]
    retention_days: Option<u32>,
}

fn main() -> Result<()> {
    // rustls needs one process-wide crypto provider before any TLS is set up.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,str0m=warn,is=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Id(a) => {
            let dir = a.data_dir.unwrap_or_else(veche_node::default_data_dir);
            let id = NodeIdentity::load_or_create(&dir)?;
            println!("{}", id.peer_id());
            Ok(())
        }
        Cmd::Peers(a) => peers(a),
        Cmd::Attendance(a) => attendance(a),
        Cmd::Recordings(a) => recordings(a),
        Cmd::Hello(a) => {
            let body = http_request(a.http, "POST", &format!("/api/peers/{}/hello", a.peer))?;
            println!("{body}");
            Ok(())
        }
        Cmd::Join(a) => {
            let key_file = a.key.unwrap_or_else(|| {
                a.data
                    .data_dir
                    .unwrap_or_else(veche_node::default_data_dir)
                    .join(veche_node::PERSON_KEY_FILE)
            });
            let opts = participant::JoinOptions {
                link: a.link,
                name: a.name,
                key_file,
                seconds: a.seconds,
                say: a.say,
                node: a.node,
            };
            let status = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(participant::join(opts))?;
            std::process::exit(status)
        }
        Cmd::Run(a) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(run(a)),
    }
}

/// The names browsers may use for this node besides loopback and its addresses: this
/// machine's host name (and `.local`, for mDNS) and the ones the operator gives.
fn host_names(flag: &[String], config: &[String]) -> Vec<String> {
    let mut names: Vec<String> = flag
        .iter()
        .chain(config)
        .map(|n| n.to_ascii_lowercase())
        .collect();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().to_ascii_lowercase();
        if !h.is_empty() {
            names.push(format!("{h}.local"));
            names.push(h);
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Delete the meetings past their retention (logged, never fatal: the next sweep retries).
fn sweep(meetings: &mut MeetingStore, retention_ms: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    match meetings.sweep(now, retention_ms) {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, "meetings past their retention deleted"),
        Err(e) => tracing::error!(error = %e, "cannot delete meetings past their retention"),
    }
}

async fn run(a: RunArgs) -> Result<()> {
    let a_net = NetArgs {
        name: a.name.clone(),
        listen: a.listen.clone(),
        no_mdns: a.no_mdns,
        bootstrap: a.bootstrap.clone(),
        relay: a.relay,
        external_address: a.external_address.clone(),
    };
    let dir = a.data.data_dir.unwrap_or_else(veche_node::default_data_dir);
    let config = Config::load(&dir)?;
    let identity = NodeIdentity::load_or_create(&dir)?;
    let mut meetings = MeetingStore::open(&dir)?;
    let retention_ms =
        u64::from(a.retention_days.or(config.retention_days).unwrap_or(30)) * 86_400_000;
    sweep(&mut meetings, retention_ms);

    let http = a.http.or(config.http).unwrap_or(DEFAULT_HTTP);
    let lan = a.lan || config.lan.unwrap_or(false);
    let https = a.https.or(config.https).unwrap_or(DEFAULT_HTTPS);
    let mut advertise = config.advertise.clone();
    advertise.extend(a.advertise);
    let media_port = a
        .media_port
        .or(config.media_port)
        .unwrap_or(DEFAULT_MEDIA_PORT);
    let link_port = a
        .link_port
        .or(config.link_port)
        .unwrap_or(DEFAULT_LINK_PORT);
    let mut media_bind = config.media_bind.clone();
    media_bind.extend(a.media_bind);
    if media_bind.is_empty() {
        media_bind = veche_media::local_ipv4_addresses();
    }
    let mut limits = veche_core::Limits::default();
    if let Some(n) = a.max_participants.or(config.max_participants) {
        limits.participants_per_meeting = usize::from(n.max(2));
    }

    // Meetings that span nodes: the engine and the network talk through the bridge.
    let (fed_tx, fed_rx) = tokio::sync::mpsc::channel(1024);
    let (app_tx, app_rx) = tokio::sync::mpsc::channel(256);
    let (attendance_tx, attendance_rx) = tokio::sync::mpsc::channel(veche_web::attendance::QUEUE);
    let (engine, media_addrs, engine_task) = Engine::start(EngineConfig {
        port: media_port,
        link_port,
        bind: media_bind,
        advertise,
        limits,
        node_id: identity.peer_id().to_string(),
        federation: Some(fed_tx),
        attendance: Some(attendance_tx),
        relay: a.relay || config.relay.unwrap_or(false),
        media_threads: a.media_threads.unwrap_or(0),
        ..EngineConfig::default()
    })
    .await?;

    let tls = if lan {
        let cert = a.tls_cert.or(config.tls_cert.clone());
        let key = a.tls_key.or(config.tls_key.clone());
        Some(match (cert, key) {
            (Some(c), Some(k)) => TlsMaterial::load(&c, &k)?,
            (None, None) => {
                let ips: Vec<IpAddr> = veche_media::local_ipv4_addresses()
                    .into_iter()
                    .map(IpAddr::V4)
                    .collect();
                TlsMaterial::load_or_create(&dir, &ips)?
            }
            _ => anyhow::bail!("tls_cert and tls_key must be given together"),
        })
    } else {
        None
    };

    let lan_urls: Vec<String> = if lan {
        lan_addresses(https)
            .into_iter()
            .map(|ip| format!("https://{}", SocketAddr::new(ip, https.port())))
            .collect()
    } else {
        Vec::new()
    };
    let node = NodeInfo {
        id: identity.peer_id().to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        lan_urls: lan_urls.clone(),
        fingerprint: tls.as_ref().map(|t| t.fingerprint.clone()),
        host_names: host_names(&a.host_name, &config.host_names),
    };
    let view = meetings.view();
    let meetings = Arc::new(Mutex::new(meetings));
    tokio::spawn(veche_web::attendance::record(
        attendance_rx,
        meetings.clone(),
        view.clone(),
    ));
    {
        // Ended meetings go once their retention passed: checked every hour.
        let meetings = meetings.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
            every.tick().await;
            loop {
                every.tick().await;
                let m = meetings.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    sweep(
                        &mut m.lock().unwrap_or_else(|p| p.into_inner()),
                        retention_ms,
                    )
                })
                .await;
            }
        });
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let node_metrics = NodeMetrics::register(&mut registry);
    let net = start_net(
        &a_net,
        &config,
        &identity,
        &dir,
        view.clone(),
        app_tx,
        &mut registry,
    )?;
    {
        // Announce the meetings this node carries, so nodes with only an id find them: the
        // most recent few hundred, not every meeting ever made (each is a DHT query).
        const ANNOUNCED_AT_START: usize = 256;
        let mut all: Vec<(u64, String)> =
            view.with_all(|all| all.map(|m| (m.created_at, m.id.clone())).collect());
        all.sort_unstable_by_key(|m| std::cmp::Reverse(m.0));
        let ids: Vec<String> = all
            .into_iter()
            .take(ANNOUNCED_AT_START)
            .map(|(_, id)| id)
            .collect();
        let net = net.clone();
        tokio::spawn(async move {
            for id in ids {
                net.provide(&id).await;
            }
        });
    }
    let recent = Arc::new(Mutex::new(veche_web::moderation::Recent::default()));
    let lobby = Arc::new(Mutex::new(veche_web::lobby::Lobby::default()));
    let recordings = Arc::new(veche_web::recording::Recordings::new(dir.clone()));
    {
        // Before anyone can start a new one: only files cut off by a stop are touched.
        let dir = dir.clone();
        let _ = tokio::task::spawn_blocking(move || veche_web::recording::repair_all(&dir)).await;
    }
    tokio::spawn(federation::run(
        engine.clone(),
        net.clone(),
        (
            meetings.clone(),
            recent.clone(),
            lobby.clone(),
            recordings.clone(),
        ),
        a_net.relay || config.relay.unwrap_or(false),
        fed_rx,
        app_rx,
    ));
    let state = AppState {
        engine,
        meetings,
        view: view.clone(),
        node: Arc::new(node),
        net,
        registry: Arc::new(Mutex::new(registry)),
        node_metrics,
        lobby,
        creations: Arc::default(),
        recent,
        recordings,
    };

    let listener = tokio::net::TcpListener::bind(http).await.with_context(|| {
        format!("cannot listen on {http} (is another veche running? try --http)")
    })?;
    let http_addr = listener.local_addr()?;
    let app = veche_web::router(state.clone(), Scheme::Http);
    let http_task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let https_task = match &tls {
        Some(tls) => {
            let rustls_config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(
                server_tls_config(tls).context("cannot use the TLS certificate and key")?,
            ));
            let std_listener = std::net::TcpListener::bind(https)
                .with_context(|| format!("cannot listen on {https} for HTTPS (try --https)"))?;
            std_listener.set_nonblocking(true)?;
            let app = veche_web::router(state.clone(), Scheme::Https);
            let server = axum_server::from_tcp_rustls(std_listener, rustls_config);
            Some(tokio::spawn(async move {
                server
                    .serve(app.into_make_service_with_connect_info::<SocketAddr>())
                    .await
            }))
        }
        None => None,
    };

    println!("veche node {}", state.node.id);
    println!("data directory: {}", dir.display());
    println!(
        "media: UDP port {} on {}",
        media_addrs[0].port(),
        media_addrs
            .iter()
            .map(|a| a.ip().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(tls) = &tls {
        for u in &lan_urls {
            println!("other devices on the network open: {u}");
        }
        println!("certificate fingerprint (SHA-256): {}", tls.fingerprint);
    } else {
        println!("(start with --lan to let other devices on the network join)");
    }
    // Last, so scripts that wait for it have everything above.
    println!(
        "open in a browser on this machine: http://{}",
        display_addr(http_addr)
    );

    tokio::select! {
        r = http_task => r.context("HTTP server task")?.context("HTTP server")?,
        r = async {
            match https_task {
                Some(t) => t.await,
                None => std::future::pending().await,
            }
        } => r.context("HTTPS server task")?.context("HTTPS server")?,
        r = engine_task => {
            // Without the engine no meeting works; exit so a supervisor restarts the node
            // rather than serve pages that cannot connect.
            r.context("the media engine failed")?;
            anyhow::bail!("the media engine stopped");
        }
        _ = tokio::signal::ctrl_c() => println!("stopping"),
    }
    Ok(())
}

struct NetArgs {
    name: Option<String>,
    listen: Vec<Multiaddr>,
    no_mdns: bool,
    bootstrap: Vec<Multiaddr>,
    relay: bool,
    external_address: Vec<Multiaddr>,
}

fn parse_addrs(what: &str, list: &[String]) -> Result<Vec<Multiaddr>> {
    list.iter()
        .map(|s| {
            s.parse()
                .with_context(|| format!("{what}: {s:?} is not a multiaddr"))
        })
        .collect()
}

/// Start the libp2p control plane: flags over config, then defaults.
fn start_net(
    a: &NetArgs,
    config: &Config,
    identity: &NodeIdentity,
    dir: &std::path::Path,
    view: veche_node::MeetingView,
    app: tokio::sync::mpsc::Sender<veche_net::AppEvent>,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<veche_net::NetHandle> {
    let pick = |flag: &[Multiaddr], key: &str, file: &[String]| -> Result<Vec<Multiaddr>> {
        if flag.is_empty() {
            parse_addrs(key, file)
        } else {
            Ok(flag.to_vec())
        }
    };
    let mut listen = pick(&a.listen, "listen", &config.listen)?;
    if listen.is_empty() {
        listen = vec![
            "/ip4/0.0.0.0/udp/7302/quic-v1".parse()?,
            "/ip4/0.0.0.0/tcp/7302".parse()?,
        ];
    }
    let relay = a.relay || config.relay.unwrap_or(false);
    let name = a
        .name
        .clone()
        .or_else(|| config.name.clone())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "veche node".to_owned());
    let net_config = veche_net::NetConfig {
        listen,
        mdns: !a.no_mdns && config.mdns.unwrap_or(true),
        bootstrap: pick(&a.bootstrap, "bootstrap", &config.bootstrap)?,
        relay,
        external: pick(
            &a.external_address,
            "external_address",
            &config.external_address,
        )?,
        name: name.clone(),
        data_dir: dir.to_owned(),
    };
    let hello: veche_net::HelloSource = Arc::new(move || veche_net::protocol::NodeHello {
        name: name.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol: veche_net::protocol::PROTOCOL_VERSION,
        relay,
        meetings: view
            .public()
            .into_iter()
            .map(|(id, title)| veche_net::protocol::MeetingSummary { id, title })
            .collect(),
    });
    Ok(veche_net::start(
        identity.keypair().clone(),
        net_config,
        hello,
        Some(app),
        registry,
    )?)
}

/// `veche peers`.
fn peers(a: PeersArgs) -> Result<()> {
    let body = http_request(a.http, "GET", "/api/peers")?;
    if a.json {
        println!("{body}");
        return Ok(());
    }
    let peers: Vec<serde_json::Value> = serde_json::from_str(&body).context("the node's answer")?;
    if peers.is_empty() {
        println!("no other veche nodes connected");
    }
    for p in peers {
        println!(
            "{}  {}  {}  {}  {}",
            p["id"].as_str().unwrap_or("?"),
            p["name"].as_str().unwrap_or("(unknown)"),
            if p["direct"].as_bool() == Some(true) {
                "direct"
            } else {
                "relayed"
            },
            p["rtt_ms"]
                .as_f64()
                .map(|r| format!("{r:.1} ms"))
                .unwrap_or_else(|| "-".into()),
            p["address"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}

/// The meeting id in `arg`: an id, or a link (the id is what follows `/m/`).
fn meeting_id_of(arg: &str) -> Result<&str> {
    let id = match arg.split_once("/m/") {
        Some((_, rest)) => rest.split(['#', '?', '/']).next().unwrap_or(rest),
        None => arg,
    };
    if !veche_node::is_meeting_id(id) {
        anyhow::bail!("{arg:?} is not a meeting id (like k3x-9qa-7mf) or link");
    }
    Ok(id)
}

fn recordings(a: RecordingsArgs) -> Result<()> {
    let data = a.data.data_dir.unwrap_or_else(veche_node::default_data_dir);
    let meeting = a.meeting.as_deref().map(meeting_id_of).transpose()?;
    if let (Some(name), Some(meeting), Some(out)) = (&a.export, meeting, &a.out) {
        let Some(path) = veche_node::recordings::path_of(&data, meeting, name) else {
            anyhow::bail!(
                "no recording {name:?} of meeting {meeting} in {} (`veche recordings {meeting}` lists them)",
                data.display()
            );
        };
        let n = std::fs::copy(&path, out)
            .with_context(|| format!("cannot copy {} to {}", path.display(), out.display()))?;
        eprintln!("{} MB written to {}", n >> 20, out.display());
        return Ok(());
    }
    let list = veche_node::recordings::list(&data, meeting)
        .with_context(|| format!("cannot read the recordings in {}", data.display()))?;
    if list.is_empty() {
        eprintln!(
            "no recordings in {}",
            veche_node::recordings::dir(&data).display()
        );
    }
    for r in list {
        println!("{}  {}  {:>8} KB", r.meeting, r.name, r.bytes >> 10);
    }
    Ok(())
}

fn attendance(a: AttendanceArgs) -> Result<()> {
    let id = meeting_id_of(&a.meeting)?;
    let csv = http_request(a.http, "GET", &format!("/api/meetings/{id}/attendance"))?;
    match a.out {
        Some(path) => {
            std::fs::write(&path, &csv)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "{} stays written to {}",
                csv.lines().count().saturating_sub(1),
                path.display()
            );
        }
        None => print!("{csv}"),
    }
    Ok(())
}

/// A plain HTTP/1.1 request to the running node on its (loopback) HTTP address.
fn http_request(addr: SocketAddr, method: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .with_context(|| format!("cannot reach a running veche node at {addr} (start one with `veche run`, or give --http)"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    // A JSON body on a POST: the node takes no other (a cross-site form cannot send one).
    let body = if method == "POST" { "{}" } else { "" };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let ok = head
        .split_whitespace()
        .nth(1)
        .is_some_and(|c| c.starts_with('2'));
    if !ok {
        anyhow::bail!("the node answered: {}", body.trim());
    }
    Ok(body.to_owned())
}

/// TLS for the LAN listener. HTTP/1.1 only: with HTTP/2 negotiated, Chromium's module
/// requests to this server stalled in about one page load in four (seen in
/// `tests/lan_https.rs`), and a handful of small assets gains nothing from HTTP/2.
fn server_tls_config(tls: &TlsMaterial) -> Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("certificate PEM")?;
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).context("private key PEM")?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The addresses the HTTPS listener is reachable on from the LAN.
fn lan_addresses(https: SocketAddr) -> Vec<IpAddr> {
    if !https.ip().is_unspecified() {
        return vec![https.ip()];
    }
    veche_media::local_ipv4_addresses()
        .into_iter()
        .filter(|ip| !ip.is_loopback())
        .map(IpAddr::V4)
        .collect()
}

/// `127.0.0.1:7300` for the printed link; `localhost` where the address is loopback, since
/// that name is a secure context in every browser.
fn display_addr(a: SocketAddr) -> String {
    if a.ip().is_loopback() || a.ip().is_unspecified() {
        format!("localhost:{}", a.port())
    } else {
        a.to_string()
    }
}
