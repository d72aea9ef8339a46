//! The scenarios, run the same way against every server, and what one run measures.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::janus::Janus;
use crate::media::Load;
use crate::peer::{Clock, Counters};
use crate::procfs;
use crate::server::Participant;
use crate::veche::Veche;

pub enum Target {
    Veche(Veche),
    Janus(Janus),
    /// No server (the direct baseline).
    None,
}

#[derive(Clone, Debug)]
pub enum Room {
    Veche(String),
    Janus(u64),
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Veche(_) => "veche",
            Target::Janus(_) => "janus",
            Target::None => "none",
        }
    }
    pub fn pid(&self) -> u32 {
        match self {
            Target::Veche(v) => v.pid,
            Target::Janus(j) => j.pid,
            Target::None => std::process::id(),
        }
    }
    async fn room(&self) -> Result<Room> {
        Ok(match self {
            Target::Veche(v) => Room::Veche(v.room().await?),
            Target::Janus(j) => Room::Janus(j.room().await?),
            Target::None => anyhow::bail!("no server"),
        })
    }
    async fn close(&self, room: &Room) {
        if let (Target::Janus(j), Room::Janus(r)) = (self, room) {
            j.close_room(*r).await;
        }
    }
    /// A participant that publishes (`publish`) and receives the given feeds (on veche it
    /// receives everything in the meeting; Janus needs the feed ids).
    async fn join(
        &self,
        room: &Room,
        name: &str,
        publish: bool,
        feeds: &[u64],
        load: Load,
        clock: &Arc<Clock>,
    ) -> Result<Participant> {
        match (self, room) {
            (Target::Veche(v), Room::Veche(m)) => v.join(m, name, publish, load, clock).await,
            (Target::Janus(j), Room::Janus(r)) => {
                j.join(*r, name, publish, feeds, load, clock).await
            }
            _ => anyhow::bail!("room of another server"),
        }
    }
}

/// What one scenario step measured on one server.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub server: &'static str,
    pub scenario: String,
    /// Subscribers (fan-out), participants (mesh) or joiners (storm).
    pub n: usize,
    /// Receivers that got media / receivers asked for.
    pub ready: usize,
    pub seconds: f64,
    pub sent_pps: f64,
    /// Packets per second that reached receivers.
    pub recv_pps: f64,
    pub recv_mbps: f64,
    /// The server's CPU time over the window, in cores.
    pub cpu: f64,
    /// Its busiest thread's, in cores (what saturates first when the work is spread).
    pub busiest_thread: f64,
    pub gen_cpu: f64,
    pub pkts_per_cpu_s: f64,
    pub mbits_per_cpu_s: f64,
    pub loss: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub rss_kib_per_sub: f64,
    pub join_p50_ms: f64,
    pub join_p95_ms: f64,
    pub video_p50_ms: f64,
    pub video_p95_ms: f64,
    pub failures: Vec<String>,
}

pub fn pct_ms(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

fn pct_dur(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn get(c: &crate::peer::Shared) -> std::sync::MutexGuard<'_, Counters> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wait until every receiver has had a video packet, at most `limit`; returns how many did.
async fn wait_video(ps: &[&Participant], limit: Duration) -> usize {
    let end = Instant::now() + limit;
    loop {
        let ready = ps
            .iter()
            .filter(|p| get(&p.counters).first_video.is_some())
            .count();
        let failed = ps
            .iter()
            .filter(|p| get(&p.counters).failed.is_some())
            .count();
        if ready + failed >= ps.len() || Instant::now() >= end {
            return ready;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_connected(p: &Participant, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let (connected, failed) = {
            let c = get(&p.sent);
            (c.connected.is_some(), c.failed.is_some())
        };
        if connected {
            return true;
        }
        if failed {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Open the window for `secs`, then sum what the receivers and the server did.
async fn measure(
    t: &Target,
    clock: &Arc<Clock>,
    senders: &[&Participant],
    receivers: &[&Participant],
    secs: f64,
    rss_before: u64,
    out: &mut Figures,
) {
    let pid = t.pid();
    let cpu0 = procfs::cpu(pid);
    let threads0 = procfs::thread_cpu(pid);
    let gen0 = procfs::cpu(std::process::id());
    let t0 = Instant::now();
    clock.window.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    clock.window.store(false, Ordering::Relaxed);
    let wall = t0.elapsed().as_secs_f64();
    let cpu = procfs::cpu(pid).saturating_sub(cpu0).as_secs_f64();
    out.busiest_thread = procfs::thread_cpu(pid)
        .iter()
        .map(|(tid, c)| {
            let before = threads0.get(tid).copied().unwrap_or_default();
            c.saturating_sub(before).as_secs_f64() / wall
        })
        .fold(0.0, f64::max);
    let gen = procfs::cpu(std::process::id())
        .saturating_sub(gen0)
        .as_secs_f64();
    let rss = procfs::rss_kib(pid);

    let (mut packets, mut bytes, mut expected, mut got) = (0u64, 0u64, 0u64, 0u64);
    let mut delays = Vec::new();
    for r in receivers {
        let c = get(&r.counters);
        packets += c.packets;
        bytes += c.bytes;
        for s in c.streams.values() {
            expected += s.last - s.first + 1;
            got += s.packets.min(s.last - s.first + 1);
        }
        delays.extend_from_slice(&c.delays_us);
        if let Some(f) = &c.failed {
            out.failures.push(f.clone());
        }
    }
    let sent: u64 = senders.iter().map(|s| get(&s.sent).sent_packets).sum();
    delays.sort_unstable();
    out.seconds = wall;
    out.sent_pps = sent as f64 / wall;
    out.recv_pps = packets as f64 / wall;
    out.recv_mbps = bytes as f64 * 8.0 / wall / 1e6;
    out.cpu = cpu / wall;
    out.gen_cpu = gen / wall;
    out.pkts_per_cpu_s = packets as f64 / cpu.max(1e-3);
    out.mbits_per_cpu_s = bytes as f64 * 8.0 / 1e6 / cpu.max(1e-3);
    out.loss = if expected == 0 {
        f64::NAN
    } else {
        1.0 - got as f64 / expected as f64
    };
    out.p50_ms = pct_ms(&delays, 0.5);
    out.p99_ms = pct_ms(&delays, 0.99);
    out.p999_ms = pct_ms(&delays, 0.999);
    if out.n > 0 {
        out.rss_kib_per_sub = (rss as f64 - rss_before as f64) / out.n as f64;
    }
}

/// One publisher (camera + microphone) to `n` subscribers.
pub async fn fanout(t: &Target, n: usize, secs: f64, load: Load) -> Result<Figures> {
    let mut f = Figures {
        server: t.name(),
        scenario: format!("1 → {n}"),
        n,
        ..Figures::default()
    };
    let clock = Clock::new();
    let room = t.room().await?;
    let publisher = t.join(&room, "publisher", true, &[], load, &clock).await?;
    if !wait_connected(&publisher, Duration::from_secs(10)).await {
        t.close(&room).await;
        let why = get(&publisher.sent).failed.clone().unwrap_or_default();
        anyhow::bail!("{}: the publisher did not connect {why}", t.name());
    }
    // Memory per subscriber: growth from here (the publisher already in) to the end of
    // the window, when every viewer's buffers are as full as they get.
    let rss_before = procfs::rss_kib(t.pid());
    let feeds: Vec<u64> = publisher.feed.into_iter().collect();
    let mut subs = Vec::with_capacity(n);
    for i in 0..n {
        match t
            .join(&room, &format!("viewer {i}"), false, &feeds, load, &clock)
            .await
        {
            Ok(p) => subs.push(p),
            Err(e) => f.failures.push(format!("join {i}: {e:#}")),
        }
        // Joins paced at 100/s: the storm is its own scenario.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refs: Vec<&Participant> = subs.iter().collect();
    f.ready = wait_video(&refs, Duration::from_secs(20)).await;
    // Past the first keyframes and the joins' negotiation.
    tokio::time::sleep(Duration::from_secs(1)).await;
    measure(t, &clock, &[&publisher], &refs, secs, rss_before, &mut f).await;
    for s in subs {
        s.leave();
    }
    publisher.leave();
    t.close(&room).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(f)
}

/// `m` participants, each publishing camera + microphone and receiving all the others.
pub async fn mesh(t: &Target, m: usize, secs: f64, load: Load) -> Result<Figures> {
    let mut f = Figures {
        server: t.name(),
        scenario: format!("{m} all-to-all"),
        n: m,
        ..Figures::default()
    };
    let clock = Clock::new();
    let room = t.room().await?;
    let rss_before = procfs::rss_kib(t.pid());
    let mut people = Vec::with_capacity(m);
    match t {
        Target::Veche(_) | Target::None => {
            for i in 0..m {
                people.push(
                    t.join(&room, &format!("p{i}"), true, &[], load, &clock)
                        .await?,
                );
            }
        }
        Target::Janus(_) => {
            // Publish first, then subscribe each to everyone else's feed.
            let mut pubs = Vec::with_capacity(m);
            for i in 0..m {
                pubs.push(
                    t.join(&room, &format!("p{i}"), true, &[], load, &clock)
                        .await?,
                );
            }
            // A feed can be subscribed to once its publisher is connected.
            for p in &pubs {
                if !wait_connected(p, Duration::from_secs(10)).await {
                    anyhow::bail!("janus: a publisher did not connect");
                }
            }
            let feeds: Vec<u64> = pubs.iter().filter_map(|p| p.feed).collect();
            for (i, p) in pubs.iter().enumerate() {
                let others: Vec<u64> = feeds
                    .iter()
                    .copied()
                    .filter(|f| Some(*f) != p.feed)
                    .collect();
                people.push(
                    t.join(&room, &format!("s{i}"), false, &others, load, &clock)
                        .await?,
                );
            }
            // Receivers count on the subscriber halves, senders on the publisher halves.
            for (s, p) in people.iter_mut().zip(pubs) {
                s.sent = p.sent.clone();
                s.merged.push(p);
            }
        }
    }
    let refs: Vec<&Participant> = people.iter().collect();
    f.ready = wait_video(&refs, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    measure(t, &clock, &refs, &refs, secs, rss_before, &mut f).await;
    for p in people {
        p.leave();
    }
    t.close(&room).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(f)
}

/// `n` viewers join a running meeting at `rate` per second; the time from each join's
/// first signaling message to its first media packet and first video packet.
pub async fn storm(t: &Target, n: usize, rate: f64, load: Load) -> Result<Figures> {
    let mut f = Figures {
        server: t.name(),
        scenario: format!("join storm {n} at {rate:.0}/s"),
        n,
        ..Figures::default()
    };
    let clock = Clock::new();
    let room = t.room().await?;
    let rss_before = procfs::rss_kib(t.pid());
    let publisher = t.join(&room, "publisher", true, &[], load, &clock).await?;
    if !wait_connected(&publisher, Duration::from_secs(10)).await {
        t.close(&room).await;
        let why = get(&publisher.sent).failed.clone().unwrap_or_default();
        anyhow::bail!("{}: the publisher did not connect {why}", t.name());
    }
    let feeds: Vec<u64> = publisher.feed.into_iter().collect();
    let cpu0 = procfs::cpu(t.pid());
    let t0 = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / rate);
    // Joins overlap: each runs on its own while the next starts on time.
    let mut pending = FuturesUnordered::new();
    let mut subs = Vec::new();
    let mut i = 0usize;
    let (room_ref, feeds_ref, clock_ref) = (&room, &feeds[..], &clock);
    while i < n || !pending.is_empty() {
        let next_at = t0 + gap * i as u32;
        tokio::select! {
            _ = tokio::time::sleep_until(next_at.into()), if i < n => {
                let name = format!("joiner {i}");
                let k = i;
                pending.push(async move {
                    (k, t.join(room_ref, &name, false, feeds_ref, load, clock_ref).await)
                });
                i += 1;
            }
            Some((k, r)) = pending.next(), if !pending.is_empty() => match r {
                Ok(p) => subs.push(p),
                Err(e) => f.failures.push(format!("join {k}: {e:#}")),
            },
        }
    }
    let refs: Vec<&Participant> = subs.iter().collect();
    f.ready = wait_video(&refs, Duration::from_secs(20)).await;
    let wall = t0.elapsed().as_secs_f64();
    f.cpu = procfs::cpu(t.pid()).saturating_sub(cpu0).as_secs_f64() / wall;
    let mut first = Vec::new();
    let mut video = Vec::new();
    for s in &subs {
        let c = get(&s.counters);
        if let Some(at) = c.first_packet {
            first.push(at.duration_since(s.started));
        }
        if let Some(at) = c.first_video {
            video.push(at.duration_since(s.started));
        }
        if let Some(e) = &c.failed {
            f.failures.push(e.clone());
        }
    }
    first.sort();
    video.sort();
    f.join_p50_ms = pct_dur(&first, 0.5);
    f.join_p95_ms = pct_dur(&first, 0.95);
    f.video_p50_ms = pct_dur(&video, 0.5);
    f.video_p95_ms = pct_dur(&video, 0.95);
    f.rss_kib_per_sub = (procfs::rss_kib(t.pid()) as f64 - rss_before as f64) / n as f64;
    for s in subs {
        s.leave();
    }
    publisher.leave();
    t.close(&room).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(f)
}

/// No server: the publisher straight to one receiver, both in this process. What the
/// generator and loopback themselves add to the one-way delay, subtracted from the servers'
/// figures to give the delay a server adds.
pub async fn direct(secs: f64, load: Load) -> Result<Figures> {
    use crate::peer::{self, Opening, SigIn, SigOut};
    use tokio::sync::mpsc;
    let mut f = Figures {
        server: "none",
        scenario: "direct".into(),
        n: 1,
        ..Figures::default()
    };
    let clock = Clock::new();
    let (mut sender, stop) = Participant::new(Instant::now());
    let (mut receiver, stop_r) = Participant::new(Instant::now());
    let (s_in, s_in_rx) = mpsc::channel(4);
    let (s_out, mut s_out_rx) = mpsc::channel(4);
    let (r_in, r_in_rx) = mpsc::channel(4);
    let (r_out, mut r_out_rx) = mpsc::channel(4);
    sender.tasks.push(tokio::spawn(peer::run(
        "direct sender".into(),
        std::net::Ipv4Addr::LOCALHOST.into(),
        Opening::Publish,
        load,
        clock.clone(),
        sender.sent.clone(),
        s_in_rx,
        s_out,
        stop,
    )));
    receiver.tasks.push(tokio::spawn(peer::run(
        "direct receiver".into(),
        std::net::Ipv4Addr::LOCALHOST.into(),
        Opening::Wait,
        load,
        clock.clone(),
        receiver.counters.clone(),
        r_in_rx,
        r_out,
        stop_r,
    )));
    sender.tasks.push(tokio::spawn(async move {
        if let Some(SigOut::Offer { sdp, .. }) = s_out_rx.recv().await {
            let _ = r_in.send(SigIn::Offer(sdp)).await;
        }
        if let Some(SigOut::Answer(sdp)) = r_out_rx.recv().await {
            let _ = s_in.send(SigIn::Answer(sdp)).await;
        }
        // Keep both ends of the signaling open.
        let _keep = (s_out_rx, r_out_rx, r_in, s_in);
        std::future::pending::<()>().await;
    }));
    f.ready = wait_video(&[&receiver], Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let me = Target::None;
    measure(&me, &clock, &[&sender], &[&receiver], secs, 0, &mut f).await;
    f.n = 0;
    sender.leave();
    receiver.leave();
    Ok(f)
}
