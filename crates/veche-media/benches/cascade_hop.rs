//! How much delay one node-to-node hop adds: a publisher on node A, one subscriber on A
//! (the single-node path) and one on node B, which gets the track over a node link from A
//! (the cascade path). Both engines, all three clients (str0m) and the signaling between
//! the nodes run in this process on loopback, so every packet's one-way delay is measured on
//! one clock: the publisher puts its send time in the payload.
//!
//! `cargo bench -p veche-media --bench cascade_hop` runs 20 s of audio (50 packets/s);
//! under `cargo test` (no `--bench`) it runs 3 s, so the harness cannot rot. Figures are
//! printed, never asserted: this machine is shared and noisy, compare the two paths of one
//! run with each other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use veche_core::Source;
use veche_media::{
    Command, Engine, EngineConfig, EngineHandle, FedOut, LinkOffer, PeerEvent, Signal,
};

const MEETING: &str = "bench-hop";
/// Node ids have the shape of libp2p peer ids (the engine refuses anything else).
const NODE_A: &str = "12D3KooWBenchNodeAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const NODE_B: &str = "12D3KooWBenchNodeBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let seconds = if full { 20 } else { 3 };
    if str0m::crypto::CryptoProvider::get_default().is_none() {
        str0m::crypto::from_feature_flags().install_process_default();
    }
    let (a, a_fed) = start(NODE_A).await;
    let (b, b_fed) = start(NODE_B).await;
    tokio::spawn(route(NODE_A, a_fed, b.clone(), a.clone()));
    tokio::spawn(route(NODE_B, b_fed, a.clone(), b.clone()));

    let base = Instant::now();
    let (stop_tx, stop) = watch::channel(false);
    let (local_tx, mut local_rx) = mpsc::unbounded_channel();
    let (hop_tx, mut hop_rx) = mpsc::unbounded_channel();
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
    let sub_a = tokio::spawn(client(
        a.clone(),
        "local viewer",
        vec![],
        None,
        base,
        local_tx,
        stop.clone(),
    ));
    let sub_b = tokio::spawn(client(
        b.clone(),
        "remote viewer",
        vec![NODE_A.into()],
        None,
        base,
        hop_tx,
        stop.clone(),
    ));
    // Let the viewers and the link settle before the first packet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let publisher = tokio::spawn(client(
        a.clone(),
        "speaker",
        vec![],
        Some(seconds),
        base,
        sent_tx,
        stop.clone(),
    ));
    let _ = publisher.await;
    // Stragglers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    let _ = sub_a.await;
    let _ = sub_b.await;

    let mut sent = 0;
    while sent_rx.try_recv().is_ok() {
        sent += 1;
    }
    let collect = |rx: &mut mpsc::UnboundedReceiver<Duration>| {
        let mut v = Vec::new();
        while let Ok(d) = rx.try_recv() {
            v.push(d);
        }
        v.sort();
        v
    };
    let local = collect(&mut local_rx);
    let hop = collect(&mut hop_rx);
    let pct = |v: &[Duration], p: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i].as_secs_f64() * 1000.0
    };
    println!("cascade hop benchmark: {seconds} s of audio at 50 packets/s, {sent} packets sent");
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>10}",
        "path", "received", "p50 ms", "p99 ms", "p99.9 ms"
    );
    for (name, v) in [
        ("single node (A)", &local),
        ("one cascade hop (A → B)", &hop),
    ] {
        println!(
            "{:<28} {:>9} {:>9.3} {:>9.3} {:>10.3}",
            name,
            v.len(),
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 0.999)
        );
    }
    println!(
        "added by the hop: p50 {:+.3} ms, p99 {:+.3} ms",
        pct(&hop, 0.5) - pct(&local, 0.5),
        pct(&hop, 0.99) - pct(&local, 0.99)
    );
    if local.is_empty() || hop.is_empty() {
        eprintln!("no packets arrived on a path: the benchmark is broken");
        std::process::exit(1);
    }
}

async fn start(id: &str) -> (EngineHandle, mpsc::Receiver<FedOut>) {
    let (fed_tx, fed_rx) = mpsc::channel(1024);
    let (engine, _, _) = Engine::start(EngineConfig {
        port: 0,
        link_port: 0,
        bind: vec![std::net::Ipv4Addr::LOCALHOST],
        node_id: id.into(),
        federation: Some(fed_tx),
        links_on_loopback: true,
        ..EngineConfig::default()
    })
    .await
    .expect("engine");
    (engine, fed_rx)
}

/// The libp2p bridge's job, in process: deliver `from`'s messages to `to`.
async fn route(from: &str, mut rx: mpsc::Receiver<FedOut>, to: EngineHandle, back: EngineHandle) {
    while let Some(out) = rx.recv().await {
        match out {
            FedOut::Events {
                meeting, events, ..
            } => {
                let _ = to
                    .send(Command::NodeEvents {
                        node: from.into(),
                        meeting,
                        events,
                    })
                    .await;
            }
            FedOut::Offer {
                meeting,
                link,
                sdp,
                tracks,
                ..
            } => {
                let (reply, answer) = oneshot::channel();
                let _ = to
                    .send(Command::LinkOffer(LinkOffer {
                        node: from.into(),
                        meeting,
                        link: link.0,
                        sdp,
                        tracks,
                        reply,
                    }))
                    .await;
                if let Ok(Ok(sdp)) = answer.await {
                    let _ = back.send(Command::Answer { id: link, sdp }).await;
                }
            }
            FedOut::NeedRelay { .. } => {}
        }
    }
}

/// A str0m client that joins like a browser. With `publish: Some(seconds)` it sends one
/// Opus-sized packet every 20 ms carrying its send time (micros since `base`) and reports
/// each on `out`; otherwise it reports each received packet's one-way delay on `out`.
async fn client(
    engine: EngineHandle,
    name: &str,
    nodes: Vec<String>,
    publish: Option<u64>,
    base: Instant,
    out: mpsc::UnboundedSender<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let local: SocketAddr = sock.local_addr().expect("addr");
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));

    let (events_tx, mut events) = mpsc::channel(256);
    let (reply, joined) = oneshot::channel();
    engine
        .send(Command::Join {
            meeting: MEETING.into(),
            name: name.into(),
            key: None,
            presence: None,
            listener: false,
            client: None,
            nodes,
            events: events_tx,
            reply,
        })
        .await
        .expect("engine");
    let id = joined.await.expect("reply").expect("joined");

    let mut api = rtc.sdp_api();
    let mut sources = HashMap::new();
    let mid: Option<Mid> = if publish.is_some() {
        let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        sources.insert(mid.to_string(), Source::Mic);
        Some(mid)
    } else {
        api.add_channel("veche".into());
        None
    };
    let (offer, pending) = api.apply().expect("an offer");
    let mut pending: Option<SdpPendingOffer> = Some(pending);
    engine
        .send(Command::Offer {
            id,
            sdp: offer.to_sdp_string(),
            sources,
        })
        .await
        .expect("engine");

    let mut buf = vec![0u8; 2000];
    let mut seq: u64 = 0;
    let mut connected = false;
    let mut next_send = Instant::now();
    let stop_at = publish.map(|s| Instant::now() + Duration::from_secs(s));
    loop {
        // Drain str0m.
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = sock.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => connected = true,
                Ok(Output::Event(Event::MediaData(d))) => {
                    if publish.is_none() && d.data.len() >= 8 {
                        let mut micros = [0u8; 8];
                        micros.copy_from_slice(&d.data[..8]);
                        let sent = Duration::from_micros(u64::from_be_bytes(micros));
                        let _ = out.send(base.elapsed().saturating_sub(sent));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("{name}: {e}");
                    return;
                }
            }
        };
        if stop_at.is_some_and(|t| Instant::now() >= t) || *stop.borrow() {
            return;
        }
        let wake = if publish.is_some() && connected && pending.is_none() {
            timeout.min(next_send)
        } else {
            timeout
        };
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let Ok((n, source)) = r else { return };
                if let Ok(contents) = buf[..n].try_into() {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: local,
                        contents,
                    }));
                }
            }
            ev = events.recv() => match ev {
                Some(PeerEvent::Signal(Signal::Answer { sdp })) => {
                    if let (Some(p), Ok(a)) = (pending.take(), SdpAnswer::from_sdp_string(&sdp)) {
                        rtc.sdp_api().accept_answer(p, a).expect("answer");
                    }
                }
                Some(PeerEvent::Signal(Signal::Offer { sdp, .. })) => {
                    let offer = SdpOffer::from_sdp_string(&sdp).expect("offer");
                    let answer = rtc.sdp_api().accept_offer(offer).expect("accept");
                    let _ = engine.send(Command::Answer { id, sdp: answer.to_sdp_string() }).await;
                }
                Some(_) => {}
                None => return,
            },
            _ = stop.changed() => return,
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        let now = Instant::now();
        let _ = rtc.handle_input(Input::Timeout(now));
        if let (Some(mid), true, true) = (mid, connected, now >= next_send) {
            next_send += Duration::from_millis(20);
            if let Some(w) = rtc.writer(mid) {
                let pt = w
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Opus)
                    .map(|p| p.pt());
                if let Some(pt) = pt {
                    let mut data = vec![0u8; 120];
                    data[..8].copy_from_slice(&(base.elapsed().as_micros() as u64).to_be_bytes());
                    let time = MediaTime::new(seq * 960, Frequency::FORTY_EIGHT_KHZ);
                    if w.write(pt, now, time, data).is_ok() {
                        seq += 1;
                        let _ = out.send(Duration::ZERO);
                        // str0m sends what was written once time moves: move it now.
                        let _ = rtc.handle_input(Input::Timeout(Instant::now()));
                    }
                }
            }
        }
    }
}
