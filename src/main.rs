//! `veche`: the command line. Parses flags, merges them over `config.toml`, and wires the
//! node's parts together; the parts themselves live in `crates/`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use veche_media::{Engine, EngineConfig};
use veche_node::{Config, MeetingStore, NodeIdentity, TlsMaterial};
use veche_web::{AppState, NodeInfo, Scheme};

const DEFAULT_HTTP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7300);
const DEFAULT_HTTPS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7443);
const DEFAULT_MEDIA_PORT: u16 = 7301;

/// veche: a meeting node you run yourself. Audio, video, screen share and chat in the
/// browser, with no vendor and no account.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start the node and print the address to open in a browser.
    Run(RunArgs),
    /// Print this node's id (made on first use and kept in the data directory).
    Id(DataDirArg),
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
    /// An extra IP address to offer browsers for media, e.g. a public address whose UDP
    /// media port is forwarded to this machine. Repeatable.
    #[arg(long, value_name = "IP")]
    advertise: Vec<IpAddr>,
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
        Cmd::Run(a) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(run(a)),
    }
}

async fn run(a: RunArgs) -> Result<()> {
    let dir = a.data.data_dir.unwrap_or_else(veche_node::default_data_dir);
    let config = Config::load(&dir)?;
    let identity = NodeIdentity::load_or_create(&dir)?;
    let meetings = MeetingStore::open(&dir)?;

    let http = a.http.or(config.http).unwrap_or(DEFAULT_HTTP);
    let lan = a.lan || config.lan.unwrap_or(false);
    let https = a.https.or(config.https).unwrap_or(DEFAULT_HTTPS);
    let mut advertise = config.advertise.clone();
    advertise.extend(a.advertise);
    let media_port = a
        .media_port
        .or(config.media_port)
        .unwrap_or(DEFAULT_MEDIA_PORT);

    let (engine, media_addrs) = Engine::start(EngineConfig {
        port: media_port,
        advertise,
        ..EngineConfig::default()
    })
    .await?;

    let tls = if lan {
        let cert = a.tls_cert.or(config.tls_cert);
        let key = a.tls_key.or(config.tls_key);
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
    };
    let state = AppState {
        engine,
        meetings: Arc::new(Mutex::new(meetings)),
        node: Arc::new(node),
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
        _ = tokio::signal::ctrl_c() => println!("stopping"),
    }
    Ok(())
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
