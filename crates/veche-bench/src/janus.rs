//! Janus 1.1 (Debian's package) under test: the videoroom plugin over the REST transport on
//! loopback, configured like veche (VP8 + Opus, no recording, no bitrate cap; see
//! bench/janus/). One Janus session carries every handle of the harness; one long poll
//! routes events to the handle that sent them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::process::Child;
use tokio::sync::mpsc;

use crate::http;
use crate::media::Load;
use crate::peer::{self, Clock, Counters, Opening, Shared, SigIn, SigOut};
use crate::server::{spawn_pinned, wait_listening, Participant, Scratch};

/// The REST port in bench/janus/janus.transport.http.jcfg.
pub const PORT: u16 = 7388;

type Routes = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Value>>>>;

pub struct Janus {
    pub pid: u32,
    /// The address Janus offers ICE candidates on; our peers bind there too (str0m pairs
    /// a loopback candidate only with loopback).
    ice_ip: std::net::IpAddr,
    addr: SocketAddr,
    session: u64,
    routes: Routes,
    handles: Mutex<HashMap<u64, Vec<u64>>>,
    next_tx: AtomicU64,
    next_room: AtomicU64,
    _poller: tokio::task::JoinHandle<()>,
    _child: Child,
    _dir: Scratch,
}

/// Where Janus is and its configuration folder.
pub fn find(config: &Path) -> Result<PathBuf> {
    let bin = ["/usr/bin/janus", "/usr/local/bin/janus"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("Janus is not installed: apt-get install janus (./scripts/bench does)")?;
    if !config.join("janus.jcfg").exists() {
        bail!("no janus.jcfg in {}", config.display());
    }
    Ok(bin)
}

impl Janus {
    pub async fn start(
        bin: &Path,
        config: &Path,
        cpu: Option<usize>,
        ice_ip: std::net::IpAddr,
    ) -> Result<Self> {
        let dir = Scratch::new("janus")?;
        let args = vec![
            "-F".to_string(),
            config.to_string_lossy().into_owned(),
            "-C".to_string(),
            config.join("janus.jcfg").to_string_lossy().into_owned(),
        ];
        let log = dir.0.join("janus.log");
        let cpus = cpu.map(|c| c.to_string());
        let mut child = spawn_pinned(bin, &args, cpus.as_deref(), &log, &[])?;
        let pid = child.id().context("no pid")?;
        let addr: SocketAddr = ([127, 0, 0, 1], PORT).into();
        if let Err(e) = wait_listening(addr, Duration::from_secs(30), &mut child).await {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("Janus did not start: {e}\n{log}");
        }
        let (_, v) = http::json(
            addr,
            "POST",
            "/janus",
            Some(&json!({"janus": "create", "transaction": "s"})),
        )
        .await?;
        let session = v["data"]["id"]
            .as_u64()
            .with_context(|| format!("create session: {v}"))?;
        let routes: Routes = Arc::default();
        let poller = tokio::spawn(poll(addr, session, routes.clone()));
        Ok(Self {
            pid,
            ice_ip,
            addr,
            session,
            routes,
            handles: Mutex::default(),
            next_tx: AtomicU64::new(1),
            next_room: AtomicU64::new(1000),
            _poller: poller,
            _child: child,
            _dir: dir,
        })
    }

    fn tx(&self) -> String {
        format!("t{}", self.next_tx.fetch_add(1, Ordering::Relaxed))
    }

    async fn post(&self, path: &str, mut body: Value) -> Result<Value> {
        body["transaction"] = Value::from(self.tx());
        if crate::server::debug() {
            eprintln!(
                "bench → janus {path}: {}",
                body.to_string().chars().take(300).collect::<String>()
            );
        }
        let (status, v) = http::json(self.addr, "POST", path, Some(&body)).await?;
        if status != 200 || v["janus"] == "error" {
            bail!("Janus {path}: {status} {v}");
        }
        Ok(v)
    }

    async fn attach(&self, room: u64) -> Result<(u64, mpsc::UnboundedReceiver<Value>)> {
        let v = self
            .post(
                &format!("/janus/{}", self.session),
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
            )
            .await?;
        let h = v["data"]["id"].as_u64().context("attach: no handle")?;
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.routes).insert(h, tx);
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(room)
            .or_default()
            .push(h);
        Ok((h, rx))
    }

    async fn message(&self, h: u64, body: Value, jsep: Option<Value>) -> Result<Value> {
        let mut m = json!({"janus": "message", "body": body});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        let v = self
            .post(&format!("/janus/{}/{h}", self.session), m)
            .await?;
        if v["plugindata"]["data"]["error"].is_string() {
            bail!("videoroom: {}", v["plugindata"]["data"]["error"]);
        }
        Ok(v)
    }

    async fn trickle_done(&self, h: u64) -> Result<()> {
        self.post(
            &format!("/janus/{}/{h}", self.session),
            json!({"janus": "trickle", "candidate": {"completed": true}}),
        )
        .await
        .map(|_| ())
    }

    /// A new videoroom sized for the benchmark.
    pub async fn room(&self) -> Result<u64> {
        let room = self.next_room.fetch_add(1, Ordering::Relaxed);
        let (h, _rx) = self.attach(room).await?;
        self.message(
            h,
            json!({"request": "create", "room": room, "publishers": 1000, "bitrate": 0,
                   "fir_freq": 0, "audiocodec": "opus", "videocodec": "vp8",
                   "notify_joining": false, "record": false}),
            None,
        )
        .await?;
        Ok(room)
    }

    /// Destroy the room (Janus hangs up its participants) and detach its handles.
    pub async fn close_room(&self, room: u64) {
        let hs = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&room)
            .unwrap_or_default();
        if let Some(h) = hs.first() {
            let _ = self
                .message(*h, json!({"request": "destroy", "room": room}), None)
                .await;
        }
        for h in hs {
            let _ = self
                .post(
                    &format!("/janus/{}/{h}", self.session),
                    json!({"janus": "detach"}),
                )
                .await;
            lock(&self.routes).remove(&h);
        }
    }

    /// A participant: publishes if `publish`, subscribes to `feeds` if any.
    pub async fn join(
        &self,
        room: u64,
        name: &str,
        publish: bool,
        feeds: &[u64],
        load: Load,
        clock: &Arc<Clock>,
    ) -> Result<Participant> {
        let (mut p, stop) = Participant::new(Instant::now());
        if publish {
            let (h, mut events) = self.attach(room).await?;
            let (in_tx, in_rx) = mpsc::channel(4);
            let (out_tx, mut out_rx) = mpsc::channel(4);
            let sent: Shared = Arc::new(Mutex::new(Counters::default()));
            p.sent = sent.clone();
            p.tasks.push(tokio::spawn(peer::run(
                format!("{name}/pub"),
                self.ice_ip,
                Opening::Publish,
                load,
                clock.clone(),
                sent,
                in_rx,
                out_tx,
                stop.clone(),
            )));
            let Some(SigOut::Offer { sdp, .. }) = out_rx.recv().await else {
                bail!("the publisher made no offer");
            };
            self.message(
                h,
                json!({"request": "joinandconfigure", "room": room, "ptype": "publisher",
                       "display": name, "audio": true, "video": true}),
                Some(json!({"type": "offer", "sdp": sdp})),
            )
            .await?;
            self.trickle_done(h).await?;
            let ev = wait_jsep(&mut events, "answer").await?;
            p.feed = ev["plugindata"]["data"]["id"].as_u64();
            let sdp = ev["jsep"]["sdp"].as_str().unwrap_or_default().to_string();
            in_tx.send(SigIn::Answer(sdp)).await.ok();
            // Videoroom answers "No such feed" to a subscriber until its own side of the
            // publisher's connection is up (`webrtcup`), which can come after ours.
            wait_webrtcup(&mut events).await?;
            p.tasks.push(tokio::spawn(async move {
                // Keep the channels open for the peer's lifetime.
                let _keep = (in_tx, out_rx, events);
                std::future::pending::<()>().await;
            }));
        }
        if !feeds.is_empty() {
            let (h, mut events) = self.attach(room).await?;
            let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
            self.message(
                h,
                json!({"request": "join", "ptype": "subscriber", "room": room,
                       "streams": streams}),
                None,
            )
            .await?;
            let ev = wait_jsep(&mut events, "offer").await?;
            let (in_tx, in_rx) = mpsc::channel(4);
            let (out_tx, mut out_rx) = mpsc::channel(4);
            p.tasks.push(tokio::spawn(peer::run(
                format!("{name}/sub"),
                self.ice_ip,
                Opening::Wait,
                load,
                clock.clone(),
                p.counters.clone(),
                in_rx,
                out_tx,
                stop,
            )));
            let sdp = ev["jsep"]["sdp"].as_str().unwrap_or_default().to_string();
            in_tx.send(SigIn::Offer(sdp)).await.ok();
            let Some(SigOut::Answer(sdp)) = out_rx.recv().await else {
                bail!("the subscriber made no answer");
            };
            self.message(
                h,
                json!({"request": "start", "room": room}),
                Some(json!({"type": "answer", "sdp": sdp})),
            )
            .await?;
            self.trickle_done(h).await?;
            p.tasks.push(tokio::spawn(async move {
                let _keep = (in_tx, out_rx, events);
                std::future::pending::<()>().await;
            }));
        }
        Ok(p)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The next event on a handle that carries SDP of `kind`; errors end the wait.
async fn wait_jsep(events: &mut mpsc::UnboundedReceiver<Value>, kind: &str) -> Result<Value> {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(end, events.recv())
            .await
            .with_context(|| format!("no {kind} from Janus in 10 s"))?
            .context("Janus session gone")?;
        if let Some(e) = ev["plugindata"]["data"]["error"].as_str() {
            bail!("videoroom: {e}");
        }
        if ev["jsep"]["type"] == kind {
            return Ok(ev);
        }
    }
}

/// Janus's `webrtcup` for a handle: its end of ICE and DTLS is done.
async fn wait_webrtcup(events: &mut mpsc::UnboundedReceiver<Value>) -> Result<()> {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(end, events.recv())
            .await
            .context("no webrtcup from Janus in 10 s")?
            .context("Janus session gone")?;
        if let Some(e) = ev["plugindata"]["data"]["error"].as_str() {
            bail!("videoroom: {e}");
        }
        if ev["janus"] == "webrtcup" {
            return Ok(());
        }
    }
}

/// The session's long poll: route each event to its handle. The poll also keeps the
/// session alive.
async fn poll(addr: SocketAddr, session: u64, routes: Routes) {
    let path = format!("/janus/{session}?maxev=50");
    loop {
        match http::json(addr, "GET", &path, None).await {
            Ok((_, v)) => {
                let events = match v {
                    Value::Array(a) => a,
                    other => vec![other],
                };
                for ev in events {
                    if crate::server::debug() {
                        eprintln!("janus → bench: {ev}");
                    }
                    if let Some(h) = ev["sender"].as_u64() {
                        if let Some(tx) = lock(&routes).get(&h) {
                            let _ = tx.send(ev);
                        }
                    }
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
