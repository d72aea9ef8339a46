//! `--soak SECONDS`: two nodes carry one meeting for a long time while synthetic
//! participants join, publish, leave and come back on both; what each node holds is printed
//! at the start and every minute, so a leak shows as a line that keeps growing.
//!
//! Node A hosts the meeting; node B knows A from `--bootstrap` and carries the meeting over
//! a node link. Both bind their media on the benchmark namespace's own address (a node
//! link uses no loopback candidate) as well as loopback (the participants'); nothing leaves
//! the namespace.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::http;
use crate::media::Load;
use crate::peer::Clock;
use crate::procfs;
use crate::server::{free_port, Participant};
use crate::veche::Veche;

/// Participants on each node at any time.
const PER_NODE: usize = 3;
/// One of them leaves and someone new joins this often, alternating between the nodes.
const CHURN_EVERY: Duration = Duration::from_secs(5);
/// What is held is printed this often.
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// Before the first figures: the first joins, the link and the first allocations.
const WARM_UP: Duration = Duration::from_secs(30);

/// What a node holds now.
struct Held {
    rss_kib: u64,
    fds: usize,
    threads: u64,
    /// The meeting as the node's operator view shows it: people here, other nodes and
    /// whether media to them is connected.
    people: usize,
    nodes: String,
}

fn held(node: &Veche, people: &Value) -> Held {
    let fds = std::fs::read_dir(format!("/proc/{}/fd", node.pid)).map_or(0, |d| d.count());
    let nodes = people["nodes"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .map(|n| {
                    format!(
                        "{} {}",
                        n["media"].as_str().unwrap_or("?"),
                        n["path"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    Held {
        rss_kib: procfs::rss_kib(node.pid),
        fds,
        threads: procfs::threads(node.pid),
        people: people["participants"].as_array().map_or(0, Vec::len),
        nodes,
    }
}

/// Who is in the meeting on each node (A, B), and how many came, went and failed to come.
#[derive(Default)]
struct Crowd {
    here: [Vec<Participant>; 2],
    joins: u64,
    leaves: u64,
    failed: u64,
    /// Names are numbered.
    seq: u64,
}

impl Crowd {
    /// Someone new joins `meeting` on node `i`, publishing.
    async fn join(
        &mut self,
        i: usize,
        node: &Veche,
        meeting: &str,
        load: Load,
        clock: &Arc<Clock>,
    ) {
        self.seq += 1;
        match node
            .join(meeting, &format!("soak {}", self.seq), true, load, clock)
            .await
        {
            Ok(p) => {
                self.here[i].push(p);
                self.joins += 1;
            }
            Err(e) => {
                self.failed += 1;
                eprintln!("soak: join on node {}: {e:#}", ["A", "B"][i]);
            }
        }
    }
}

/// Of `ps`: how many have had video, and the packets they received in all.
fn media(ps: &[Participant]) -> (usize, u64) {
    ps.iter().fold((0, 0), |(video, packets), p| {
        let c = p.counters.lock().unwrap_or_else(|e| e.into_inner());
        (
            video + usize::from(c.first_video.is_some()),
            packets + c.packets,
        )
    })
}

/// Run the soak for `secs` seconds and return its report.
pub async fn run(bin: &Path, secs: u64, bind: std::net::Ipv4Addr, load: Load) -> Result<String> {
    let quic = |port: u16| format!("/ip4/{bind}/udp/{port}/quic-v1");
    let a_port = free_port()?;
    let common = |listen: String| -> Vec<String> {
        vec![
            "--media-bind".into(),
            bind.to_string(),
            "--listen".into(),
            listen,
        ]
    };
    let a = Veche::start_with(bin, None, None, &common(quic(a_port)))
        .await
        .context("node A")?;
    let a_id = a.node_id().context("node A's id")?;
    let mut b_args = common(quic(free_port()?));
    b_args.extend(["--bootstrap".into(), format!("{}/p2p/{a_id}", quic(a_port))]);
    let b = Veche::start_with(bin, None, None, &b_args)
        .await
        .context("node B")?;
    let meeting = a.room().await?;
    // B learns the meeting from A, as a browser's page on B makes it do.
    let path = format!("/api/meetings/{meeting}?node={a_id}");
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = http::json(b.http(), "GET", &path, None).await?;
        if status == 200 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < end,
            "node B never learned the meeting: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let nodes = [&a, &b];
    let clock = Clock::new();
    // Counted all along (each participant's counts live only as long as it stays).
    clock
        .window
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let mut crowd = Crowd::default();
    for (i, node) in nodes.iter().enumerate() {
        for _ in 0..PER_NODE {
            crowd.join(i, node, &meeting, load, &clock).await;
        }
    }
    let mut report = String::new();
    let line = format!(
        "soak: {secs} s, two nodes, {PER_NODE} participants on each publishing audio and video; one leaves and another joins every {} s, alternating nodes\n",
        CHURN_EVERY.as_secs()
    );
    print!("{line}");
    report.push_str(&line);
    let start = Instant::now();
    let mut next_churn = start + CHURN_EVERY;
    let mut next_report = start + WARM_UP;
    let mut first: Option<[(u64, usize); 2]> = None;
    let mut last = [(0u64, 0usize); 2];
    // Packets of those who left, per node: the received count goes on across churn.
    let mut gone = [0u64; 2];
    let mut packets_before = [0u64; 2];
    let mut turn = 0usize;
    let deadline = start + Duration::from_secs(secs);
    // Bounded by the deadline: one churn or report per pass.
    while Instant::now() < deadline {
        let now = Instant::now();
        if now >= next_report {
            next_report += REPORT_EVERY;
            let mut line = format!("soak {:>5} s:", start.elapsed().as_secs());
            for (i, node) in nodes.iter().enumerate() {
                let people = http::json(
                    node.http(),
                    "GET",
                    &format!("/api/meetings/{meeting}/people"),
                    None,
                )
                .await
                .map(|(_, v)| v)
                .unwrap_or(Value::Null);
                let h = held(node, &people);
                last[i] = (h.rss_kib, h.fds);
                let (video, packets) = media(&crowd.here[i]);
                let packets = packets + gone[i];
                let got = packets - packets_before[i];
                packets_before[i] = packets;
                let _ = write!(
                    line,
                    " node {} RSS {} KiB, {} fds, {} threads, {} in the meeting, links [{}], {video}/{} of its participants getting video, {got} packets to them;",
                    ["A", "B"][i],
                    h.rss_kib,
                    h.fds,
                    h.threads,
                    h.people,
                    h.nodes,
                    crowd.here[i].len()
                );
            }
            let _ = writeln!(
                line,
                " {} joins, {} leaves, {} failed joins",
                crowd.joins, crowd.leaves, crowd.failed
            );
            first.get_or_insert(last);
            print!("{line}");
            report.push_str(&line);
            continue;
        }
        if now >= next_churn {
            next_churn += CHURN_EVERY;
            let i = turn % 2;
            turn += 1;
            if !crowd.here[i].is_empty() {
                let p = crowd.here[i].remove(0);
                gone[i] += media(std::slice::from_ref(&p)).1;
                p.leave();
                crowd.leaves += 1;
            }
            crowd.join(i, nodes[i], &meeting, load, &clock).await;
            continue;
        }
        let wake = next_churn.min(next_report).min(deadline);
        tokio::time::sleep_until(wake.into()).await;
    }
    for p in crowd.here.into_iter().flatten() {
        p.leave();
    }
    if let Some(first) = first {
        let line = format!(
            "soak: from the first figures to the last, node A RSS {:+} KiB and {:+} fds, node B RSS {:+} KiB and {:+} fds\n",
            last[0].0 as i64 - first[0].0 as i64,
            last[0].1 as i64 - first[0].1 as i64,
            last[1].0 as i64 - first[1].0 as i64,
            last[1].1 as i64 - first[1].1 as i64,
        );
        print!("{line}");
        report.push_str(&line);
    }
    Ok(report)
}
