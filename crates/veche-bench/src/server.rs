//! What the scenarios need from a server under test, and the process plumbing both share.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::peer::{Counters, Shared};

/// One synthetic participant: its peer connection(s) and signaling tasks.
pub struct Participant {
    /// Receive counters (a Janus participant's subscriber connection).
    pub counters: Shared,
    /// Send counters (a Janus participant's publisher connection; the same as `counters`
    /// on veche, where one connection does both).
    pub sent: Shared,
    /// Janus' feed id of what this participant publishes.
    pub feed: Option<u64>,
    /// When the join began (before any signaling).
    pub started: Instant,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) tasks: Vec<JoinHandle<()>>,
    /// Participants merged into this one (Janus: the publisher half of a mesh member).
    pub(crate) merged: Vec<Participant>,
}

impl Participant {
    pub(crate) fn new(started: Instant) -> (Self, watch::Receiver<bool>) {
        let (stop, rx) = watch::channel(false);
        let c: Shared = Arc::new(Mutex::new(Counters::default()));
        (
            Self {
                counters: c.clone(),
                sent: c,
                feed: None,
                started,
                stop,
                tasks: Vec::new(),
                merged: Vec::new(),
            },
            rx,
        )
    }

    /// Hang up: stop the peer, close the signaling.
    pub fn leave(self) {
        for m in self.merged {
            m.leave();
        }
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.abort();
        }
    }
}

/// A free TCP port on loopback (bound, read, released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Start `program` pinned to the cores `cpus` (a taskset list such as `0` or `0,1`;
/// taskset execs it, so the child's pid is the server's), its output in `log`.
pub fn spawn_pinned(
    program: &Path,
    args: &[String],
    cpus: Option<&str>,
    log: &Path,
    env: &[(&str, &str)],
) -> Result<Child> {
    let out = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = match cpus {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c).arg(program);
            cmd
        }
        None => Command::new(program),
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {}", program.display()))
}

/// Wait until `addr` accepts TCP connections, or fail after `limit`.
pub async fn wait_listening(addr: SocketAddr, limit: Duration, child: &mut Child) -> Result<()> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(status) = child.try_wait()? {
            bail!("the server exited at start ({status})");
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on {addr} after {limit:?}")
}

/// A scratch directory removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Result<Self> {
        let p = std::env::temp_dir().join(format!("veche-bench-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if debug() {
            eprintln!("kept {} (VECHE_BENCH_DEBUG)", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// VECHE_BENCH_DEBUG: print signaling and keep the servers' logs.
pub fn debug() -> bool {
    std::env::var_os("VECHE_BENCH_DEBUG").is_some()
}
