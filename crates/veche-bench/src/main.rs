//! `veche-bench`: veche's forwarding measured against the machine's ceiling and against
//! Janus, in one run, with one load generator. See docs/benchmarks.md.
//!
//! Every figure is printed, none asserted: this machine is shared and noisy, so the report
//! compares things measured side by side in the same run (veche / Janus, veche / ceiling).

mod ceiling;
mod http;
mod janus;
mod media;
mod peer;
mod procfs;
mod scenario;
mod server;
mod soak;
mod veche;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use crate::media::Load;
use crate::scenario::{Figures, Target};

#[derive(Parser, Debug)]
#[command(about = "veche against the machine's ceiling and Janus, side by side")]
struct Args {
    /// A few subscribers for a few seconds: checks the harness, not the numbers.
    #[arg(long)]
    quick: bool,
    /// Seconds each step measures.
    #[arg(long)]
    seconds: Option<f64>,
    /// Subscriber counts of the fan-out, in order; it stops early at 0.5 % loss or a
    /// saturated core.
    #[arg(long, value_delimiter = ',')]
    steps: Option<Vec<usize>>,
    /// Participants of the all-to-all meeting.
    #[arg(long)]
    mesh: Option<usize>,
    /// Joiners of the join storm, and joins per second.
    #[arg(long)]
    storm: Option<usize>,
    #[arg(long)]
    storm_rate: Option<f64>,
    /// Subscribers of the cores scenario (the node on one core, then on two); 0 leaves it out.
    #[arg(long)]
    cores_subs: Option<usize>,
    /// Video bitrate per publisher, bits per second.
    #[arg(long, default_value_t = 600_000)]
    video_bps: u32,
    /// Leave Janus out (it is in by default; the harness installs it as root).
    #[arg(long)]
    no_janus: bool,
    /// The veche binary [default: `veche` next to this one].
    #[arg(long)]
    veche: Option<PathBuf>,
    /// Janus' configuration folder [default: bench/janus of the repository].
    #[arg(long)]
    janus_config: Option<PathBuf>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only the soak: two nodes, participants joining, publishing, leaving and rejoining
    /// for this many seconds; what each node holds printed every minute (root: it runs in
    /// its own network namespace).
    #[arg(long, value_name = "SECONDS")]
    soak: Option<u64>,
    /// Set by the harness itself when it re-runs inside its own network namespace.
    #[arg(long, hide = true)]
    inside_netns: bool,
}

/// The private network the run happens in: loopback plus one veth pair (both ends inside),
/// because
/// Janus (libnice) never offers loopback candidates. Nothing leaves the namespace.
const NETNS_IF: &str = "vbd0";
const NETNS_ADDR: &str = "10.77.0.1/24";
const NETNS_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 77, 0, 1);

fn ip(args: &[&str]) -> Result<()> {
    let st = std::process::Command::new("ip")
        .args(args)
        .status()
        .with_context(|| format!("ip {}", args.join(" ")))?;
    anyhow::ensure!(st.success(), "ip {} failed ({st})", args.join(" "));
    Ok(())
}

/// Re-run this command inside a fresh network namespace and remove it after.
fn run_in_netns() -> Result<()> {
    let ns = format!("vbench{}", std::process::id());
    ip(&["netns", "add", &ns])?;
    let result = (|| -> Result<std::process::ExitStatus> {
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", &ns, "link", "add", NETNS_IF, "type", "veth", "peer", "name", "vbd1",
        ])?;
        ip(&["-n", &ns, "addr", "add", NETNS_ADDR, "dev", NETNS_IF])?;
        ip(&["-n", &ns, "link", "set", NETNS_IF, "up"])?;
        ip(&["-n", &ns, "link", "set", "vbd1", "up"])?;
        let exe = std::env::current_exe()?;
        Ok(std::process::Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .arg("--inside-netns")
            .status()?)
    })();
    let _ = ip(&["netns", "del", &ns]);
    let status = result?;
    anyhow::ensure!(status.success(), "the benchmark failed ({status})");
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.soak.is_some() && !args.inside_netns {
        anyhow::ensure!(
            nix::unistd::Uid::effective().is_root(),
            "the soak needs root: its two nodes link over the address of a network namespace \
             of its own, so that nothing leaves this machine"
        );
        return run_in_netns();
    }
    if !args.no_janus && !args.inside_netns {
        anyhow::ensure!(
            nix::unistd::Uid::effective().is_root(),
            "the run with Janus needs root: it makes its own network namespace, because Janus \
             offers no loopback candidates and the benchmark sends nothing outside this \
             machine's loopback (or run with --no-janus)"
        );
        return run_in_netns();
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Servers on core 0, the generator on the last core, when there are two.
    let (server_cpu, gen_cpu) = if cores >= 2 {
        (Some(0), Some(cores - 1))
    } else {
        (None, None)
    };
    if let Some(c) = gen_cpu {
        let mut set = nix::sched::CpuSet::new();
        set.set(c).context("cpu set")?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .context("pin the generator")?;
    }
    if str0m::crypto::CryptoProvider::get_default().is_none() {
        str0m::crypto::from_feature_flags().install_process_default();
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args, cores, server_cpu))
}

/// The veche binary to run: `--veche`, or the one next to this one.
fn veche_bin(args: &Args) -> Result<PathBuf> {
    match &args.veche {
        Some(p) => Ok(p.clone()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("no folder")?
            .join("veche")),
    }
}

async fn run(args: Args, cores: usize, server_cpu: Option<usize>) -> Result<()> {
    if let Some(secs) = args.soak {
        let bin = veche_bin(&args)?;
        let load = Load {
            video_bps: args.video_bps,
            keyframe_every: Duration::from_secs(3),
            simulcast: false,
        };
        let report = soak::run(&bin, secs, NETNS_IP, load).await?;
        if let Some(out) = &args.out {
            std::fs::write(out, &report).with_context(|| format!("{}", out.display()))?;
        }
        return Ok(());
    }
    let quick = args.quick;
    let secs = args.seconds.unwrap_or(if quick { 2.0 } else { 8.0 });
    let steps = args.steps.clone().unwrap_or_else(|| {
        if quick {
            vec![1, 3]
        } else {
            vec![1, 10, 50, 100, 200, 400, 800]
        }
    });
    // The classroom of 30 the project is for.
    let mesh_n = args.mesh.unwrap_or(if quick { 3 } else { 30 });
    let storm_n = args.storm.unwrap_or(if quick { 5 } else { 50 });
    let storm_rate = args.storm_rate.unwrap_or(if quick { 10.0 } else { 25.0 });
    let load = Load {
        video_bps: args.video_bps,
        keyframe_every: Duration::from_secs(3),
        simulcast: false,
    };

    let mut report = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(
        report,
        "machine: {} ({} cores), Linux {}; servers pinned to core {}, generator to core {}",
        procfs::cpu_model(),
        cores,
        kernel.trim(),
        server_cpu.map_or("-".into(), |c| c.to_string()),
        if cores >= 2 {
            (cores - 1).to_string()
        } else {
            "-".into()
        },
    );
    let _ = writeln!(
        report,
        "load: video {} kbit/s VP8 at {} fps, keyframe every 3 s; audio {} packets/s of ~{} bytes; {secs} s per step",
        load.video_bps / 1000,
        media::FPS,
        media::AUDIO_RATE,
        media::AUDIO_BYTES
    );
    print!("{report}");

    // The ceiling: packets of the average forwarded size to 100 destinations.
    let avg_packet = {
        let key = load.frame_bytes(true);
        let delta = load.frame_bytes(false);
        let frames = 90.0;
        let video_bytes = key as f64 + delta as f64 * (frames - 1.0);
        let video_packets: f64 = media::vp8_packets(key, true, 0, 0).len() as f64
            + media::vp8_packets(delta, false, 0, 0).len() as f64 * (frames - 1.0);
        let audio_packets = 150.0;
        let bytes =
            video_bytes + video_packets * 16.0 + audio_packets * (media::AUDIO_BYTES as f64 + 12.0);
        (bytes / (video_packets + audio_packets)) as usize + 12 + 16
    };
    let ceiling = ceiling::measure(avg_packet, 100, Duration::from_secs_f64(secs.min(3.0)))?;
    let rtt_ms = ceiling::loopback_rtt()?.as_secs_f64() * 1000.0;
    let line = format!(
        "ceiling: {:.0} packets per CPU-second (AES-128-GCM + sendmmsg, {} byte packets, {} destinations, one core); loopback round trip {rtt_ms:.3} ms\n",
        ceiling.packets_per_cpu_s, ceiling.packet_bytes, ceiling.destinations
    );
    print!("{line}");
    report.push_str(&line);

    let veche_bin = veche_bin(&args)?;
    let mut targets = vec![Target::Veche(
        veche::Veche::start(
            &veche_bin,
            server_cpu.map(|c| c.to_string()).as_deref(),
            None,
        )
        .await
        .with_context(|| format!("start {}", veche_bin.display()))?,
    )];
    if !args.no_janus {
        let config = args
            .janus_config
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/janus"));
        let bin = janus::find(&config)?;
        targets.push(Target::Janus(
            janus::Janus::start(&bin, &config, server_cpu, NETNS_IP.into()).await?,
        ));
    }

    let mut rows: Vec<Figures> = Vec::new();
    let direct = scenario::direct(secs, load).await?;
    eprintln!("{}", row(&direct));
    let line = format!(
        "direct, no server (generator and loopback alone): one-way delay p50 {} / p99 {} / p99.9 {} ms; the servers' added delay below is theirs minus this\n",
        num(direct.p50_ms, 3),
        num(direct.p99_ms, 3),
        num(direct.p999_ms, 3)
    );
    print!("{line}");
    report.push_str(&line);
    // Fan-out steps, alternating servers at every step; a server that lost more than
    // 0.5 % or saturated its core stops climbing.
    let mut climbing = vec![true; targets.len()];
    let mut generator_bound = false;
    for &n in &steps {
        for (i, t) in targets.iter().enumerate() {
            if !climbing[i] {
                continue;
            }
            let mut f = scenario::fanout(t, n, secs, load)
                .await
                .unwrap_or_else(|e| failed(t, &format!("1 → {n}"), n, e));
            // A receiver that never got media stops the climb: make sure it was not a
            // one-off of the run (a lost first keyframe, say) with one more try.
            if f.ready < n && f.cpu < 0.9 {
                eprintln!(
                    "{}: {}/{} receivers got media; trying the step once more",
                    t.name(),
                    f.ready,
                    n
                );
                f = scenario::fanout(t, n, secs, load)
                    .await
                    .unwrap_or_else(|e| failed(t, &format!("1 → {n}"), n, e));
            }
            eprintln!("{}", row(&f));
            if f.loss > 0.005 || f.cpu > 0.9 || f.ready < n {
                climbing[i] = false;
            }
            // Past this the generator, not the server, would set the figures.
            if f.gen_cpu > 0.85 {
                eprintln!(
                    "the generator used {:.2} of its core: stopping the fan-out here",
                    f.gen_cpu
                );
                generator_bound = true;
            }
            rows.push(f);
        }
        if generator_bound || !climbing.iter().any(|c| *c) {
            break;
        }
    }
    for t in &targets {
        let f = scenario::mesh(t, mesh_n, secs, load)
            .await
            .unwrap_or_else(|e| failed(t, &format!("{mesh_n} all-to-all"), mesh_n, e));
        eprintln!("{}", row(&f));
        rows.push(f);
    }
    // The same classroom with cameras in three layers and every page showing a gallery of
    // small tiles (veche only: the harness drives Janus without simulcast).
    if let Some(t) = targets.iter().find(|t| matches!(t, Target::Veche(_))) {
        let name = format!("{mesh_n} all-to-all, simulcast gallery");
        let simulcast = Load {
            simulcast: true,
            ..load
        };
        let mut f = scenario::mesh(t, mesh_n, secs, simulcast)
            .await
            .unwrap_or_else(|e| failed(t, &name, mesh_n, e));
        f.scenario = name;
        eprintln!("{}", row(&f));
        rows.push(f);
    }
    for t in &targets {
        let f = scenario::storm(t, storm_n, storm_rate, load)
            .await
            .unwrap_or_else(|e| {
                failed(
                    t,
                    &format!("join storm {storm_n} at {storm_rate:.0}/s"),
                    storm_n,
                    e,
                )
            });
        eprintln!("{}", row(&f));
        rows.push(f);
    }

    // The same fan-out on one core, then on two (veche's media threads spread over them).
    let cores_n = args.cores_subs.unwrap_or(if quick { 3 } else { 100 });
    let mut cores_rows = Vec::new();
    if cores >= 2 && cores_n > 0 {
        for (cpus, threads) in [("0", 1), ("0,1", 2)] {
            let name = format!("cores: 1 → {cores_n} on {threads} core(s)");
            let t = Target::Veche(
                veche::Veche::start(&veche_bin, Some(cpus), Some(threads))
                    .await
                    .with_context(|| format!("start {}", veche_bin.display()))?,
            );
            let mut f = scenario::fanout(&t, cores_n, secs, load)
                .await
                .unwrap_or_else(|e| failed(&t, &name, cores_n, e));
            f.scenario = name;
            eprintln!("{}", row(&f));
            cores_rows.push(f);
        }
        rows.extend(cores_rows.iter().cloned());
    }

    report.push_str(&table(&rows));
    report.push_str(&cores_line(&cores_rows, cores));
    report.push_str(&comparisons(
        &rows,
        ceiling.packets_per_cpu_s,
        direct.p99_ms,
        rtt_ms,
    ));
    print!("{}", &report[report.find("\n|").unwrap_or(0)..]);
    if let Some(out) = &args.out {
        std::fs::write(out, &report).with_context(|| format!("{}", out.display()))?;
    }
    Ok(())
}

/// A scenario that could not run: a row that says so (and stops nothing else).
fn failed(t: &Target, scenario: &str, n: usize, e: anyhow::Error) -> Figures {
    Figures {
        server: t.name(),
        scenario: scenario.into(),
        n,
        loss: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        p999_ms: f64::NAN,
        failures: vec![format!("{e:#}")],
        ..Figures::default()
    }
}

fn row(f: &Figures) -> String {
    let fails = if f.failures.is_empty() {
        String::new()
    } else {
        format!(" ({} failures: {})", f.failures.len(), f.failures[0])
    };
    format!(
        "{} {}: {}/{} ready, {:.0} pkt/s in, {:.0} pkt/s out, {:.2} cores (generator {:.2}), {:.0} pkt/CPU-s, loss {:.3} %, delay p50 {:.2} p99 {:.2} p99.9 {:.2} ms, {:.1} KiB/sub, join p50 {:.1} p95 {:.1} ms{fails}",
        f.server,
        f.scenario,
        f.ready,
        f.n,
        f.sent_pps,
        f.recv_pps,
        f.cpu,
        f.gen_cpu,
        f.pkts_per_cpu_s,
        f.loss * 100.0,
        f.p50_ms,
        f.p99_ms,
        f.p999_ms,
        f.rss_kib_per_sub,
        f.join_p50_ms,
        f.join_p95_ms
    )
}

fn num(v: f64, prec: usize) -> String {
    if v.is_finite() {
        format!("{v:.prec$}")
    } else {
        "–".into()
    }
}

fn table(rows: &[Figures]) -> String {
    let mut s = String::from(
        "\n| scenario | server | ready | forwarded pkt/s | server CPU (cores) | pkt per CPU-s | Mbit per CPU-s | loss % | delay p50 / p99 / p99.9 ms | RSS KiB per sub | join → 1st packet p50 / p95 ms | join → 1st video p50 / p95 ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for f in rows {
        let storm = f.scenario.starts_with("join storm");
        let _ = writeln!(
            s,
            "| {} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f.scenario,
            f.server,
            f.ready,
            f.n,
            if storm {
                "–".into()
            } else {
                num(f.recv_pps, 0)
            },
            num(f.cpu, 2),
            if storm {
                "–".into()
            } else {
                num(f.pkts_per_cpu_s, 0)
            },
            if storm {
                "–".into()
            } else {
                num(f.mbits_per_cpu_s, 1)
            },
            if storm {
                "–".into()
            } else {
                num(f.loss * 100.0, 3)
            },
            if storm {
                "–".into()
            } else {
                format!(
                    "{} / {} / {}",
                    num(f.p50_ms, 2),
                    num(f.p99_ms, 2),
                    num(f.p999_ms, 2)
                )
            },
            if f.scenario.starts_with("1 → ") {
                num(f.rss_kib_per_sub, 1)
            } else {
                "–".into()
            },
            if storm {
                format!("{} / {}", num(f.join_p50_ms, 1), num(f.join_p95_ms, 1))
            } else {
                "–".into()
            },
            if storm {
                format!("{} / {}", num(f.video_p50_ms, 1), num(f.video_p95_ms, 1))
            } else {
                "–".into()
            },
        );
    }
    s
}

/// veche / Janus per scenario, veche against the ceiling, and the goals.
/// What the cores scenario shows: the packets per second each setup would carry at the
/// point its first core saturates (the busiest thread, or all of its cores), from the CPU
/// each used at the same load; their ratio.
fn cores_line(rows: &[Figures], cores: usize) -> String {
    let [one, two] = rows else {
        return String::new();
    };
    let capacity = |f: &Figures, k: f64| f.recv_pps / f.busiest_thread.max(f.cpu / k).max(1e-6);
    let (c1, c2) = (capacity(one, 1.0), capacity(two, 2.0));
    let ratio = c2 / c1;
    let shared = if cores <= 2 {
        " (this machine has 2 cores: the second is the generator's too, so the 2-core figure is low)"
    } else {
        ""
    };
    format!(
        "\ncores: 1 → {} forwards {:.0} pkt/s; on 1 core it used {} cores, on 2 cores {} (busiest thread {}): capacity {:.0} → {:.0} pkt/s, ×{} (goal ≥ 1.8) — {}{shared}\n",
        one.n,
        one.recv_pps,
        num(one.cpu, 2),
        num(two.cpu, 2),
        num(two.busiest_thread, 2),
        c1,
        c2,
        num(ratio, 2),
        if ratio >= 1.8 { "met" } else { "short" }
    )
}

fn comparisons(rows: &[Figures], ceiling: f64, direct_p99: f64, rtt_ms: f64) -> String {
    // Carried, not just survived: a server at its core's limit delivers late (its queues
    // grow), so its figures there measure waiting, not work.
    let clean =
        |f: &Figures| f.loss <= 0.005 && f.ready == f.n && f.failures.is_empty() && f.cpu <= 0.9;
    let mut s = String::from("\nveche / Janus, same scenario, same run:\n");
    let pairs: Vec<(&Figures, &Figures)> = rows
        .iter()
        .filter(|f| f.server == "veche")
        .filter_map(|v| {
            rows.iter()
                .find(|j| j.server == "janus" && j.scenario == v.scenario)
                .map(|j| (v, j))
        })
        .collect();
    for (v, j) in &pairs {
        if v.scenario.starts_with("join storm") {
            let _ = writeln!(
                s,
                "  {}: join → first packet p50 ×{} p95 ×{}; → first video p50 ×{}",
                v.scenario,
                num(v.join_p50_ms / j.join_p50_ms, 2),
                num(v.join_p95_ms / j.join_p95_ms, 2),
                num(v.video_p50_ms / j.video_p50_ms, 2),
            );
        } else {
            let _ = writeln!(
                s,
                "  {}: packets per CPU-second ×{}, delay p50 ×{} p99 ×{}{}{}",
                v.scenario,
                num(v.pkts_per_cpu_s / j.pkts_per_cpu_s, 2),
                num(v.p50_ms / j.p50_ms, 2),
                num(v.p99_ms / j.p99_ms, 2),
                if v.scenario.starts_with("1 → ") {
                    format!(
                        ", memory per subscriber ×{}",
                        num(v.rss_kib_per_sub / j.rss_kib_per_sub, 2)
                    )
                } else {
                    String::new()
                },
                if clean(j) {
                    ""
                } else {
                    " (Janus saturated its core or lost packets)"
                },
            );
        }
    }
    if pairs.is_empty() {
        s.push_str("  (no Janus rows in this run)\n");
    }

    // Goals. Capacity comparisons use the busiest fan-out step both servers carried
    // without loss and below a saturated core (a saturated server's figures measure its
    // queues, not its work).
    let fan: Vec<&Figures> = rows
        .iter()
        .filter(|f| f.server == "veche" && f.scenario.starts_with("1 → ") && clean(f))
        .collect();
    let mark = |ok: bool| if ok { "pass" } else { "short" };
    s.push_str("\ngoals:\n");
    let most = |server: &str| {
        rows.iter()
            .filter(|f| f.server == server && f.scenario.starts_with("1 → ") && clean(f))
            .map(|f| f.n)
            .max()
    };
    if let (Some(v), Some(j)) = (most("veche"), most("janus")) {
        let _ = writeln!(
            s,
            "  most subscribers carried without loss: veche {v}, Janus {j} (×{})",
            num(v as f64 / j as f64, 2)
        );
    }
    let both = fan
        .iter()
        .filter(|v| {
            rows.iter()
                .any(|j| j.server == "janus" && j.scenario == v.scenario && clean(j))
        })
        .max_by_key(|f| f.n);
    if let Some(v) = both {
        if let Some(j) = rows
            .iter()
            .find(|j| j.server == "janus" && j.scenario == v.scenario)
        {
            let r = v.pkts_per_cpu_s / j.pkts_per_cpu_s;
            let _ = writeln!(
                s,
                "  forwarded packets per CPU-second ≥ 1.5 × Janus ({}, the busiest step both carried): ×{} — {}",
                v.scenario,
                num(r, 2),
                mark(r >= 1.5)
            );
        }
    }
    if let Some(best) = fan.iter().max_by_key(|f| f.n) {
        let c = best.pkts_per_cpu_s / ceiling;
        let _ = writeln!(
            s,
            "  forwarded packets per CPU-second ≥ 0.5 × ceiling ({}): ×{} — {}",
            best.scenario,
            num(c, 3),
            mark(c >= 0.5)
        );
        // Capacity: what one core forwards at the busiest clean step's efficiency; half of
        // it is the step whose forwarding rate is nearest to half that.
        let capacity = best.pkts_per_cpu_s;
        let half = fan
            .iter()
            .min_by(|a, b| {
                let da = (a.recv_pps - capacity / 2.0).abs();
                let db = (b.recv_pps - capacity / 2.0).abs();
                da.total_cmp(&db)
            })
            .copied()
            .unwrap_or(best);
        let added = half.p99_ms - direct_p99;
        let _ = writeln!(
            s,
            "  added delay p99 < 1 ms at half of capacity ({} forwards {:.0} pkt/s of a {:.0} pkt/s core): {} ms ({} minus the direct path's {}) — {}",
            half.scenario,
            half.recv_pps,
            capacity,
            num(added, 2),
            num(half.p99_ms, 2),
            num(direct_p99, 2),
            mark(added < 1.0)
        );
        if let Some(h) = fan.iter().find(|f| f.n == 100) {
            let added = h.p99_ms - direct_p99;
            let _ = writeln!(
                s,
                "  added delay p99 < 1 ms at 100 subscribers: {} ms — {}",
                num(added, 2),
                mark(added < 1.0)
            );
        }
        // RSS growth is noisy (the allocator keeps memory between steps): judge by the
        // largest figure of the steps with at least 50 subscribers, never by a lucky one.
        let mem = fan
            .iter()
            .filter(|f| f.n >= 50.min(best.n))
            .map(|f| f.rss_kib_per_sub)
            .fold(f64::NAN, f64::max);
        let _ = writeln!(
            s,
            "  memory < 64 KiB per subscriber (largest of the steps with ≥ 50): {} KiB — {}",
            num(mem, 1),
            mark(mem < 64.0)
        );
    }
    // The classroom: everyone publishing camera and mic and receiving all the others.
    if let Some(m) = rows
        .iter()
        .find(|f| f.server == "veche" && f.scenario.ends_with("all-to-all") && f.n >= 30)
    {
        let added = m.p99_ms - direct_p99;
        // No loss: under 0.001 % (a packet in 100,000, what the window's edges can show).
        let ok = m.loss < 1e-5 && m.ready == m.n && m.cpu <= 1.0 && added < 10.0;
        let _ = writeln!(
            s,
            "  {}: no loss (< 0.001 %) and p99 added delay < 10 ms on one core: loss {} %, {} ms, {} cores — {}",
            m.scenario,
            // Enough digits that a single lost packet shows.
            num(m.loss * 100.0, 5),
            num(added, 2),
            num(m.cpu, 2),
            mark(ok)
        );
    }
    if let (Some(m), Some(g)) = (
        rows.iter()
            .find(|f| f.server == "veche" && f.scenario.ends_with("all-to-all") && f.n >= 2),
        rows.iter()
            .find(|f| f.server == "veche" && f.scenario.ends_with("simulcast gallery")),
    ) {
        let down = |f: &Figures| f.recv_mbps / f.n.max(1) as f64;
        let _ = writeln!(
            s,
            "  {} with simulcast and gallery tiles, against without: node CPU {} vs {} cores, downlink per participant {} vs {} Mbit/s (×{}), loss {} vs {} %, p99 {} vs {} ms",
            g.scenario.trim_end_matches(", simulcast gallery"),
            num(g.cpu, 2),
            num(m.cpu, 2),
            num(down(g), 2),
            num(down(m), 2),
            num(down(g) / down(m), 2),
            num(g.loss * 100.0, 4),
            num(m.loss * 100.0, 4),
            num(g.p99_ms, 2),
            num(m.p99_ms, 2),
        );
    }
    if let Some(st) = rows
        .iter()
        .find(|f| f.server == "veche" && f.scenario.starts_with("join storm"))
    {
        let goal = 4.0 * rtt_ms + 1000.0 / media::FPS as f64;
        let _ = writeln!(
            s,
            "  join to first packet < 4 round trips + one frame interval (4 × {rtt_ms:.3} ms + {:.1} ms = {goal:.1} ms): p50 {} ms — {}",
            1000.0 / media::FPS as f64,
            num(st.join_p50_ms, 1),
            mark(st.join_p50_ms < goal)
        );
    }
    s
}
