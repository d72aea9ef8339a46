//! veche under test: a `veche run` process on loopback, joined over the same WebSocket
//! signaling a browser uses (docs/protocol.md).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use veche_signal::{ClientMsg, ServerMsg, Source, TileView};

use crate::http;
use crate::media::Load;
use crate::peer::{self, Clock, Opening, SigIn, SigOut};
use crate::server::{free_port, spawn_pinned, wait_listening, Participant, Scratch};

/// A tile of a 30-person gallery on a 1280x800 window (6 x 5), in pixels: the quarter layer.
const GALLERY_TILE_HEIGHT: u32 = 150;

pub struct Veche {
    pub pid: u32,
    http: SocketAddr,
    log: std::path::PathBuf,
    _child: Child,
    _dir: Scratch,
}

impl Veche {
    /// The node on the cores `cpus` (taskset list), with `threads` media threads (its
    /// default, one per core it may run on, without).
    pub async fn start(bin: &Path, cpus: Option<&str>, threads: Option<usize>) -> Result<Self> {
        Self::start_with(bin, cpus, threads, &[]).await
    }

    /// As [`Veche::start`], with more arguments for `veche run` (repeatable ones add to
    /// the defaults: another media address, another libp2p address, a node to dial).
    pub async fn start_with(
        bin: &Path,
        cpus: Option<&str>,
        threads: Option<usize>,
        extra: &[String],
    ) -> Result<Self> {
        let dir = Scratch::new("veche")?;
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let args: Vec<String> = [
            "run",
            "--data-dir",
            &dir.0.join("data").to_string_lossy(),
            "--http",
            &http.to_string(),
            "--media-port",
            "0",
            "--link-port",
            "0",
            "--media-bind",
            "127.0.0.1",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--no-mdns",
            "--max-participants",
            "1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(threads.map(|n| format!("--media-threads={n}")))
        .chain(extra.iter().cloned())
        .collect();
        let log = dir.0.join("veche.log");
        let filter = std::env::var("VECHE_BENCH_LOG").unwrap_or_else(|_| "warn".into());
        let mut child = spawn_pinned(bin, &args, cpus, &log, &[("RUST_LOG", &filter)])?;
        let pid = child.id().context("no pid")?;
        if let Err(e) = wait_listening(http, Duration::from_secs(30), &mut child).await {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("veche did not start: {e}\n{log}");
        }
        Ok(Self {
            pid,
            http,
            log,
            _child: child,
            _dir: dir,
        })
    }

    /// Its web address.
    pub fn http(&self) -> SocketAddr {
        self.http
    }

    /// Its libp2p peer id, as it printed it first thing ("veche node ID").
    pub fn node_id(&self) -> Result<String> {
        let log = std::fs::read_to_string(&self.log)?;
        log.lines()
            .find_map(|l| l.strip_prefix("veche node "))
            .map(|id| id.trim().to_owned())
            .context("the node did not print its id")
    }

    /// A new meeting.
    pub async fn room(&self) -> Result<String> {
        let (status, v) = http::json(
            self.http,
            "POST",
            "/api/meetings",
            Some(&json!({"title": "benchmark"})),
        )
        .await?;
        if status != 201 {
            bail!("create meeting: {status} {v}");
        }
        Ok(v["id"].as_str().context("no meeting id")?.to_string())
    }

    /// Join like a browser: WebSocket, `join`, then the peer's offer.
    pub async fn join(
        &self,
        meeting: &str,
        name: &str,
        publish: bool,
        load: Load,
        clock: &Arc<Clock>,
    ) -> Result<Participant> {
        let started = Instant::now();
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", self.http))
            .await
            .context("signaling connect")?;
        // Like a browser: the node's challenge first, signed with this participant's key.
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        let challenge = loop {
            let m = tokio::time::timeout_at(end, ws.next())
                .await
                .context("no challenge in 10 s")?;
            match m {
                Some(Ok(Message::Text(t))) => match ServerMsg::parse(&t)? {
                    ServerMsg::Challenge { nonce, node } => break (nonce, node),
                    other => bail!("no challenge: {other:?}"),
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => bail!("no challenge: {other:?}"),
            }
        };
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let me = veche_trust::Keypair::from_secret(&secret);
        let (nonce, node) = (challenge.0.as_str(), challenge.1.as_str());
        let b64 = |b: &[u8]| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
        };
        let key = b64(&me.public().0);
        let sig = b64(&me.sign_challenge(node, meeting, nonce).0);
        let join = ClientMsg::Join {
            meeting: meeting.to_owned(),
            name: name.to_owned(),
            key,
            sig,
            invite: None,
        };
        ws.send(Message::text(join.to_text())).await?;
        let mut others: Vec<u64> = Vec::new();
        loop {
            let m = tokio::time::timeout_at(end, ws.next())
                .await
                .context("no welcome in 10 s")?;
            match m {
                Some(Ok(Message::Text(t))) => match ServerMsg::parse(&t) {
                    Ok(ServerMsg::Welcome { participants, .. }) => {
                        others.extend(participants.iter().map(|p| p.id));
                        break;
                    }
                    _ => bail!("join refused: {t}"),
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => bail!("join refused: {other:?}"),
            }
        }
        let (mut p, stop) = Participant::new(started);
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let counters = p.counters.clone();
        let opening = if publish {
            Opening::Publish
        } else {
            Opening::Channel
        };
        p.tasks.push(tokio::spawn(peer::run(
            name.to_string(),
            std::net::Ipv4Addr::LOCALHOST.into(),
            opening,
            load,
            clock.clone(),
            counters.clone(),
            in_rx,
            out_tx,
            stop,
        )));
        // A gallery page tells the node how large it shows everyone's camera.
        let gallery = load.simulcast;
        let view = move |others: &[u64]| ClientMsg::View {
            tiles: others
                .iter()
                .map(|&participant| TileView {
                    participant,
                    source: Source::Camera,
                    visible: true,
                    height: GALLERY_TILE_HEIGHT,
                })
                .collect(),
        };
        if gallery && !others.is_empty() {
            ws.send(Message::text(view(&others).to_text())).await?;
        }
        p.tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = ws.next() => {
                        let t = match m {
                            Some(Ok(Message::Text(t))) => t,
                            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                            _ => return,
                        };
                        if crate::server::debug() {
                            eprintln!("veche → bench: {t}");
                        }
                        let Ok(msg) = ServerMsg::parse(&t) else { continue };
                        let changed = match &msg {
                            ServerMsg::ParticipantJoined { participant } => {
                                others.push(participant.id);
                                true
                            }
                            ServerMsg::ParticipantLeft { id } => {
                                others.retain(|o| o != id);
                                true
                            }
                            _ => false,
                        };
                        if gallery && changed {
                            let _ = ws.send(Message::text(view(&others).to_text())).await;
                            continue;
                        }
                        let sig = match msg {
                            ServerMsg::Layers { source: Source::Camera, active } => SigIn::Layers(active),
                            ServerMsg::Offer { sdp, .. } => SigIn::Offer(sdp),
                            ServerMsg::Answer { sdp } => SigIn::Answer(sdp),
                            ServerMsg::Error { code, fatal: true, .. } => {
                                let mut c = counters.lock().unwrap_or_else(|e| e.into_inner());
                                c.failed = Some(format!("veche: {code}"));
                                continue;
                            }
                            _ => continue,
                        };
                        if in_tx.send(sig).await.is_err() {
                            return;
                        }
                    }
                    out = out_rx.recv() => {
                        let msg = match out {
                            Some(SigOut::Offer { sdp, sources }) => ClientMsg::Offer {
                                sdp,
                                sources: sources
                                    .into_iter()
                                    .map(|(m, s)| {
                                        let source = if s == "mic" { Source::Mic } else { Source::Camera };
                                        (m, source)
                                    })
                                    .collect(),
                            },
                            Some(SigOut::Answer(sdp)) => ClientMsg::Answer { sdp },
                            None => return,
                        };
                        if crate::server::debug() {
                            eprintln!("bench → veche: {}", msg.to_text());
                        }
                        if ws.send(Message::text(msg.to_text())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }));
        Ok(p)
    }
}
