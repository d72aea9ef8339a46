//! Test harness: a private network namespace, a veche node inside it, and real headless
//! browsers: Chromium driven over the DevTools protocol, Firefox over WebDriver BiDi.
//!
//! Everything a test starts runs inside a network namespace the test made itself, so its
//! traffic (HTTP, WebRTC, whatever Chromium tries) can reach nothing but that namespace.
//! Chromium is driven over `--remote-debugging-pipe` (file descriptors 3 and 4), which
//! crosses the namespace boundary without any port. Processes are killed by their own pid
//! when the handle drops, also when a test fails.

#![allow(dead_code)]

pub mod firefox;
pub mod raw;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Fail with a clear reason when the test cannot do its job here.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        uid, "0",
        "this test builds a network namespace and must run as root (CI does); \
         run the suite with the README's test command"
    );
}

pub fn chromium_path() -> PathBuf {
    if let Ok(p) = std::env::var("VECHE_CHROMIUM") {
        return PathBuf::from(p);
    }
    for p in [
        "/usr/lib/chromium/chromium",
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("Chromium not found: install the Debian package `chromium` (the README's test command does) or set VECHE_CHROMIUM");
}

fn run(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e} (install iproute2)"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two network namespaces joined by a veth pair: the node's machine (`10.213.S.1`, where
/// the node and "local" browsers run) and a second device on the same LAN (`10.213.S.2`).
/// Nothing else is reachable from either.
pub struct Lab {
    /// The node machine's namespace.
    pub name: String,
    /// The second device's namespace.
    pub device: String,
    /// The node machine's LAN address.
    pub lan_ip: String,
    /// The second device's LAN address.
    pub peer_ip: String,
    dir: PathBuf,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        require_root();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!(
            "vt{}{}{}",
            tag.chars().take(6).collect::<String>(),
            pid % 100000,
            seq
        );
        let device = format!("{name}d");
        let subnet = (pid as usize * 7 + seq as usize) % 250 + 1;
        for ns in [&name, &device] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .output();
            run("ip", &["netns", "add", ns]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        run(
            "ip",
            &[
                "-n", &name, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns",
                &device,
            ],
        );
        let lan_ip = format!("10.213.{subnet}.1");
        let peer_ip = format!("10.213.{subnet}.2");
        run(
            "ip",
            &[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{lan_ip}/24"),
                "dev",
                "v0",
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &device,
                "addr",
                "add",
                &format!("{peer_ip}/24"),
                "dev",
                "v1",
            ],
        );
        run("ip", &["-n", &name, "link", "set", "v0", "up"]);
        run("ip", &["-n", &device, "link", "set", "v1", "up"]);
        let dir = std::env::temp_dir().join(format!("veche-test-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        Lab {
            name,
            device,
            lan_ip,
            peer_ip,
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A node at http://127.0.0.1:7300 in the namespace (media on UDP 7301), its data in
    /// the lab's folder.
    pub async fn local_node(&self) -> Node {
        let data = self.dir.join("data");
        self.node(&data, &["--http", "127.0.0.1:7300", "--media-port", "7301"])
            .await
    }

    /// A node as `local_node`, also serving the LAN over HTTPS at `https://LAN_IP:7443`
    /// (`--lan`): the second device reaches it there.
    pub async fn lan_node(&self) -> Node {
        let data = self.dir.join("data");
        let https = format!("{}:7443", self.lan_ip);
        self.node(
            &data,
            &[
                "--http",
                "127.0.0.1:7300",
                "--media-port",
                "7301",
                "--lan",
                "--https",
                &https,
            ],
        )
        .await
    }

    /// Start `veche run` in the namespace with `args`; waits for its web address.
    pub async fn node(&self, data_dir: &Path, args: &[&str]) -> Node {
        Node::start(Some(&self.name), &self.dir, data_dir, args).await
    }

    /// `veche ARGS` on the node's machine (in its namespace), output piped, killed on drop.
    pub fn veche(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_veche")])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Launch headless Chromium on the node's machine at `url`.
    pub async fn browser(&self, url: &str, extra: &[&str]) -> Browser {
        Browser::launch(self, &self.name, url, extra).await
    }

    /// Launch headless Chromium on the second device at `url`.
    pub async fn device_browser(&self, url: &str, extra: &[&str]) -> Browser {
        Browser::launch(self, &self.device, url, extra).await
    }

    /// Launch headless Firefox in the node's namespace at `url`. Firefox gathers no ICE
    /// candidates on a host without a default route, so the namespace gets one, toward the
    /// second device: whatever follows it stays inside the lab.
    pub async fn firefox(&self, url: &str, extra: &[&str]) -> Browser {
        run(
            "ip",
            &[
                "-n",
                &self.name,
                "route",
                "replace",
                "default",
                "via",
                &self.peer_ip,
            ],
        );
        Browser::launch_firefox_in(&self.dir, &self.name, url, extra).await
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.name, &self.device] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .output();
        }
    }
}

async fn copy_lines(mut from: impl tokio::io::AsyncBufRead + Unpin, mut to: tokio::fs::File) {
    let mut line = String::new();
    loop {
        line.clear();
        match from.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let _ = to.write_all(line.as_bytes()).await;
            }
        }
    }
}

/// A running node.
pub struct Node {
    pub pid: u32,
    child: Child,
    pub http_port: u16,
    /// What it printed on start.
    pub printed: Vec<String>,
    pub log: PathBuf,
}

impl Node {
    /// Start `veche run` (in network namespace `netns`, if given) and wait for it to print
    /// its web address. Logs go to a file in `log_dir`.
    pub async fn start(
        netns: Option<&str>,
        log_dir: &Path,
        data_dir: &Path,
        args: &[&str],
    ) -> Node {
        let bin = env!("CARGO_BIN_EXE_veche");
        // A node in the lab stands for a machine of its own, the browsers for people's
        // devices: on one small box the node runs ahead of their video encoders, or five
        // browsers starve it of the milliseconds a handshake needs. (`nice` execs the node,
        // so the child's id stays the node's; without root it warns and runs it as is.)
        let mut c = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nice", "-n", "-10", bin]);
                c
            }
            None => {
                let mut c = Command::new("nice");
                c.args(["-n", "-10", bin]);
                c
            }
        };
        c.kill_on_drop(true);
        c.arg("run").arg("--data-dir").arg(data_dir).args(args);
        // VECHE_TEST_LOG overrides the nodes' log filter when debugging a test.
        let filter =
            std::env::var("VECHE_TEST_LOG").unwrap_or_else(|_| "info,str0m=warn,is=warn".into());
        c.env("RUST_LOG", filter);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn veche");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log = log_dir.join(format!("node-{}.log", SEQ.fetch_add(1, Ordering::Relaxed)));
        let log_file = tokio::fs::File::create(&log).await.expect("log");
        tokio::spawn(copy_lines(BufReader::new(stderr), log_file));
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut http_port = None;
        while http_port.is_none() {
            let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "node did not print its address in 30 s; log {}",
                        log.display()
                    )
                })
                .expect("read stdout")
                .unwrap_or_else(|| {
                    panic!("node exited; printed {printed:?}; log {}", log.display())
                });
            if let Some(rest) =
                line.strip_prefix("open in a browser on this machine: http://localhost:")
            {
                http_port = rest.trim().parse::<u16>().ok();
            }
            printed.push(line);
        }
        // Keep draining stdout so the node never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Node {
            pid: child.id().expect("pid"),
            child,
            http_port: http_port.unwrap_or_default(),
            printed,
            log,
        }
    }

    pub fn base(&self) -> String {
        format!("http://localhost:{}", self.http_port)
    }

    /// kill -9, then wait for it.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The last `n` lines of the file at `path` (empty when it cannot be read).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A headless browser with a fake camera, microphone and screen: Chromium driven over a
/// pipe (DevTools protocol), or Firefox over WebDriver BiDi (`firefox.rs`).
pub struct Browser {
    child: Child,
    pub pid: u32,
    driver: Driver,
    next_id: u64,
    profile: PathBuf,
    log: PathBuf,
}

enum Driver {
    Cdp(Cdp),
    Bidi(Box<firefox::Bidi>),
}

/// Chromium's end of `--remote-debugging-pipe`, and the page's session.
struct Cdp {
    input: ChildStdin,
    output: ChildStdout,
    buf: Vec<u8>,
    session: String,
}

impl Browser {
    async fn launch(lab: &Lab, netns: &str, url: &str, extra: &[&str]) -> Browser {
        Browser::launch_in(&lab.dir, netns, url, extra).await
    }

    /// Launch headless Chromium in network namespace `netns`, its profile under `dir`.
    pub async fn launch_in(dir: &Path, netns: &str, url: &str, extra: &[&str]) -> Browser {
        let profile = dir.join(format!("chromium-{}", SEQ.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&profile).expect("profile dir");
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE 10.*",
            "--remote-debugging-pipe",
            "--window-size=1280,800",
            // No keyring over D-Bus (the lab has no bus): what headless test harnesses use.
            "--password-store=basic",
            // Console messages and network errors go to the browser's log file.
            "--enable-logging=stderr",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(url.to_owned());
        // fd 3 = commands in, fd 4 = replies out (the pipe protocol); Chromium's own stdout
        // goes to stderr, which goes to a log file.
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            netns,
            "sh",
            "-c",
            "exec \"$0\" \"$@\" 3<&0 4>&1 0</dev/null 1>&2",
        ])
        .arg(chromium_path())
        .args(&args)
        // The lab has no D-Bus: an address no library can use makes every call fail at
        // once, instead of whatever a machine's leftover socket or autolaunch would do.
        .env("DBUS_SESSION_BUS_ADDRESS", "disabled:")
        .env("DBUS_SYSTEM_BUS_ADDRESS", "disabled:")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(profile.join("chromium.log")).expect("log"),
        ))
        .kill_on_drop(true);
        let mut child = c.spawn().expect("spawn chromium");
        let driver = Driver::Cdp(Cdp {
            input: child.stdin.take().expect("stdin"),
            output: child.stdout.take().expect("stdout"),
            buf: Vec::new(),
            session: String::new(),
        });
        let mut b = Browser {
            pid: child.id().expect("pid"),
            child,
            driver,
            next_id: 0,
            log: profile.join("chromium.log"),
            profile,
        };
        b.attach().await;
        b
    }

    async fn attach(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let targets = self
                .call(None, "Target.getTargets", json!({}))
                .await
                .expect("getTargets");
            let page = targets["targetInfos"]
                .as_array()
                .and_then(|a| a.iter().find(|t| t["type"] == "page"))
                .and_then(|t| t["targetId"].as_str())
                .map(str::to_owned);
            if let Some(target) = page {
                let r = self
                    .call(
                        None,
                        "Target.attachToTarget",
                        json!({"targetId": target, "flatten": true}),
                    )
                    .await
                    .expect("attach");
                if let Driver::Cdp(cdp) = &mut self.driver {
                    cdp.session = r["sessionId"].as_str().expect("sessionId").to_owned();
                }
                return;
            }
            assert!(Instant::now() < deadline, "Chromium opened no page in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page's DevTools session (Chromium).
    fn session(&self) -> String {
        match &self.driver {
            Driver::Cdp(cdp) => cdp.session.clone(),
            Driver::Bidi(_) => String::new(),
        }
    }

    /// A DevTools call (Chromium only: Firefox is driven over BiDi).
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let Driver::Cdp(cdp) = &mut self.driver else {
            return Err(format!("{method}: a DevTools call, and this browser is Firefox").into());
        };
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(0);
        cdp.input.write_all(&bytes).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            while let Some(pos) = cdp.buf.iter().position(|b| *b == 0) {
                let frame: Vec<u8> = cdp.buf.drain(..=pos).collect();
                let v: Value = serde_json::from_slice(&frame[..frame.len() - 1])?;
                if v["id"].as_u64() == Some(id) {
                    if let Some(e) = v.get("error") {
                        return Err(format!("{method}: {e}").into());
                    }
                    return Ok(v["result"].clone());
                }
            }
            let mut chunk = vec![0u8; 65536];
            let n = tokio::time::timeout_at(deadline.into(), cdp.output.read(&mut chunk))
                .await
                .map_err(|_| format!("{method}: no reply from Chromium in 60 s"))??;
            if n == 0 {
                return Err(format!(
                    "{method}: Chromium exited (log {})",
                    self.profile.join("chromium.log").display()
                )
                .into());
            }
            cdp.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Evaluate `js` in the page (promises awaited) and return its JSON value.
    /// The page's `veche.stats()` (inbound and outbound media numbers), or null.
    pub async fn stats(&mut self) -> Value {
        self.eval("window.veche ? veche.stats() : null")
            .await
            .expect("stats")
    }

    pub async fn eval(&mut self, js: &str) -> Result<Value> {
        if let Driver::Bidi(bidi) = &mut self.driver {
            return bidi.eval(js).await;
        }
        let session = self.session();
        let r = self
            .call(
                Some(&session),
                "Runtime.evaluate",
                json!({"expression": js, "awaitPromise": true, "returnByValue": true, "userGesture": true}),
            )
            .await?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("page threw: {ex}").into());
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluate `js` every 200 ms until it returns something truthy; panic with `what` after
    /// `timeout`. Returns the truthy value.
    pub async fn wait_for(&mut self, what: &str, js: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            match self.eval(js).await {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => last = v,
                Err(e) => last = json!(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let page = self.describe().await;
        panic!("timed out after {timeout:?} waiting for {what}; last value: {last}; page: {page}");
    }

    /// Save a PNG of the page.
    pub async fn screenshot(&mut self, path: &Path) -> Result<()> {
        use base64::Engine;
        let r = match &mut self.driver {
            Driver::Bidi(bidi) => bidi.screenshot().await?,
            Driver::Cdp(_) => {
                let session = self.session();
                self.call(
                    Some(&session),
                    "Page.captureScreenshot",
                    json!({"format": "png"}),
                )
                .await?
            }
        };
        let data = r["data"].as_str().ok_or("no screenshot data")?;
        std::fs::write(
            path,
            base64::engine::general_purpose::STANDARD.decode(data)?,
        )?;
        Ok(())
    }

    /// Where the page is and what it shows, and the end of Chromium's log, for failure
    /// messages (a CI run keeps nothing else).
    pub async fn describe(&mut self) -> String {
        let page = self
            .eval(
                "JSON.stringify({url: location.href, state: window.veche ? veche.state() : null, \
                 text: document.body ? document.body.innerText.slice(0, 400) : ''})",
            )
            .await
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|e| e.to_string());
        let mut out = format!(
            "{page}\nend of the browser's log ({}):\n{}",
            self.log.display(),
            tail(&self.log_path(), 15)
        );
        // The nodes of this lab write their logs next to the browsers' profiles.
        let dir = self
            .profile
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("node-") && n.ends_with(".log"))
            })
            .collect();
        logs.sort();
        for log in logs {
            out.push_str(&format!("\nend of {}:\n{}", log.display(), tail(&log, 10)));
        }
        out
    }

    /// Run `js` in every page this browser loads from now on, before the page's own scripts
    /// (to stand in for a device or browser that behaves differently).
    pub async fn before_each_page(&mut self, js: &str) {
        if let Driver::Bidi(bidi) = &mut self.driver {
            bidi.before_each_page(js).await.expect("addPreloadScript");
            return;
        }
        let session = self.session();
        self.call(Some(&session), "Page.enable", json!({}))
            .await
            .expect("Page.enable");
        self.call(
            Some(&session),
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": js}),
        )
        .await
        .expect("addScriptToEvaluateOnNewDocument");
    }

    /// Kill the browser process (as when a person closes it).
    pub async fn close(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}

/// In `b`, open the node's landing page at `base`, create a meeting titled `title` over
/// the API (no host key) and go into it as `name`; returns the meeting's id.
pub async fn create_and_enter(b: &mut Browser, base: &str, title: &str, name: &str) -> String {
    b.eval(&format!("location.href = '{base}/'"))
        .await
        .expect("landing page");
    b.wait_for(
        "landing page",
        "location.href.startsWith('http:') && document.readyState === 'complete'",
        Duration::from_secs(20),
    )
    .await;
    let created = b
        .eval(&format!("fetch('/api/meetings', {{method: 'POST', headers: {{'content-type': 'application/json'}}, body: JSON.stringify({{title: {title:?}}})}}).then(r => r.json())"))
        .await
        .expect("create meeting");
    let id = created["id"].as_str().expect("meeting id").to_owned();
    b.eval(&format!(
        "location.href = '{base}/m/{id}?name={name}&autojoin=1'"
    ))
    .await
    .expect("navigate");
    id
}

/// What the node says `who` receives (the operator's view, from the node's machine).
pub async fn reception(ada: &mut Browser, who: &str) -> Value {
    let js = format!(
        "(async () => {{ const id = location.pathname.split('/')[2];
           const r = await fetch(`/api/meetings/${{id}}/people`).then(r => r.json());
           const p = veche.state().participants.find(p => p.name === {who:?});
           return r.reception.find(x => p && x.participant === p.id) || r; }})()"
    );
    ada.eval(&js).await.unwrap_or(Value::Null)
}

/// What `b` receives of `name`'s `source` now: (bytes, frames decoded, frame width).
pub async fn receives(b: &mut Browser, name: &str, source: &str) -> (u64, u64, u64) {
    let s = b.stats().await;
    let i = inbound(&s, name, source).unwrap_or(Value::Null);
    (
        num(&i, "bytesReceived"),
        num(&i, "framesDecoded"),
        num(&i, "frameWidth"),
    )
}

/// Inbound numbers for (participant name, source) from a `veche.stats()` result.
pub fn inbound(stats: &Value, name: &str, source: &str) -> Option<Value> {
    stats["inbound"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name && s["source"] == source)
        .cloned()
}

/// A browser's outbound layers of its `source` (from `veche.stats()`), by rid:
/// (rid, framesEncoded, keyFramesEncoded, frameWidth).
pub async fn sent_layers(b: &mut Browser, source: &str) -> Vec<(String, u64, u64, u64)> {
    let s = b.stats().await;
    let mut out: Vec<(String, u64, u64, u64)> = s["outbound"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["source"] == source && o["rid"].is_string())
        .map(|o| {
            (
                o["rid"].as_str().unwrap_or_default().to_owned(),
                num(o, "framesEncoded"),
                num(o, "keyFramesEncoded"),
                num(o, "frameWidth"),
            )
        })
        .collect();
    out.sort();
    out
}

/// Layer `rid` of [`sent_layers`]' answer; panics naming what there was.
pub fn sent_layer<'a>(
    all: &'a [(String, u64, u64, u64)],
    rid: &str,
) -> &'a (String, u64, u64, u64) {
    all.iter()
        .find(|l| l.0 == rid)
        .unwrap_or_else(|| panic!("no layer {rid} in {all:?}"))
}

pub fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .or_else(|| v[field].as_f64().map(|f| f as u64))
        .unwrap_or(0)
}

/// The simulated internet of `tests/lab/netlab.sh`: `pub` (203.0.113.10), NAT routers
/// `nat1`/`nat2`, hosts `lan1a`/`lan1b`/`lan1c` behind nat1 and `lan2a` behind nat2.
pub struct NatLab {
    prefix: String,
    state: PathBuf,
    pub dir: PathBuf,
}

impl NatLab {
    /// Build the lab with every router doing `mode` NAT ("cone" or "symmetric").
    pub fn up(tag: &str, mode: &str) -> NatLab {
        require_root();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let prefix = format!(
            "v{}{}{}",
            &tag[..tag.len().min(4)],
            std::process::id() % 10000,
            seq
        );
        let state = std::env::temp_dir().join(format!("veche-netlab-{prefix}"));
        let dir = std::env::temp_dir().join(format!("veche-natlab-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let lab = NatLab { prefix, state, dir };
        lab.script(&["down"]);
        lab.script(&["up", mode]);
        lab
    }

    fn script(&self, args: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/netlab.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .args(args)
            .env("NL_PREFIX", &self.prefix)
            .env("NL_STATE", &self.state)
            .output()
            .expect("run netlab.sh (needs bash, iproute2, iptables, conntrack)");
        assert!(
            out.status.success(),
            "netlab.sh {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Limit what lab host `host` sends out of `iface` to `rate` (`tbf`, e.g. "500kbit");
    /// `None` lifts the limit.
    pub fn rate(&self, host: &str, iface: &str, rate: Option<&str>) {
        match rate {
            Some(r) => self.script(&["rate", host, iface, r]),
            None => self.script(&["unrate", host, iface]),
        }
    }

    /// Switch router `router`'s NAT to `mode` (`cone`, `symmetric`); with `keep`, flows
    /// under way keep their mappings (else its conntrack is flushed).
    pub fn nat(&self, router: &str, mode: &str, keep: bool) {
        let mut args = vec!["nat", router, mode];
        if keep {
            args.push("keep");
        }
        self.script(&args);
    }

    /// The full namespace name of lab host `host`.
    pub fn ns(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    /// Start a node on `host` with its data in this lab's directory.
    pub async fn node(&self, host: &str, data: &str, args: &[&str]) -> Node {
        Node::start(Some(&self.ns(host)), &self.dir, &self.dir.join(data), args).await
    }

    /// Launch headless Chromium on lab host `host` at `url`.
    pub async fn browser(&self, host: &str, url: &str) -> Browser {
        Browser::launch_in(&self.dir, &self.ns(host), url, &[]).await
    }

    /// Launch headless Chromium on lab host `host` at `url`, with more switches.
    pub async fn browser_with(&self, host: &str, url: &str, extra: &[&str]) -> Browser {
        Browser::launch_in(&self.dir, &self.ns(host), url, extra).await
    }

    /// Launch headless Firefox on lab host `host` at `url` (the lab's hosts have their
    /// default routes, toward their routers).
    pub async fn firefox(&self, host: &str, url: &str) -> Browser {
        Browser::launch_firefox_in(&self.dir, &self.ns(host), url, &[]).await
    }

    /// `GET path` from the node on `host` (its HTTP API on the default loopback port).
    pub async fn get(&self, host: &str, path: &str) -> Value {
        self.curl(host, path, &[]).await
    }

    /// `POST path` with a JSON body to the node on `host`.
    pub async fn post(&self, host: &str, path: &str, body: &str) -> Value {
        self.curl(
            host,
            path,
            &["-H", "content-type: application/json", "-d", body],
        )
        .await
    }

    /// curl the node's HTTP API from inside `host`'s namespace; JSON, or null.
    async fn curl(&self, host: &str, path: &str, extra: &[&str]) -> Value {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(host),
                "curl",
                "-s",
                "--max-time",
                "10",
            ])
            .args(extra)
            .arg(format!("http://127.0.0.1:7300{path}"))
            .kill_on_drop(true)
            .output()
            .await
            .expect("curl (install curl)");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// A `--relay` node on `pub` (named "relay") and one node behind each NAT ("home-a" on
    /// lan1a, "home-b" on lan2a) that know only it; waits until both are connected to it.
    /// Returns (relay, a, b).
    pub async fn relay_and_two_nats(&self) -> (Node, Node, Node) {
        let relay = self
            .node("pub", "relay", &["--relay", "--no-mdns", "--name", "relay"])
            .await;
        let relay_addr = format!("{RELAY_QUIC}/p2p/{}", node_id(&relay));
        let args = ["--no-mdns", "--bootstrap", &relay_addr];
        let a = self
            .node("lan1a", "a", &[&args[..], &["--name", "home-a"]].concat())
            .await;
        let b = self
            .node("lan2a", "b", &[&args[..], &["--name", "home-b"]].concat())
            .await;
        self.until_connected(&["relay"]).await;
        (relay, a, b)
    }

    /// Wait until the nodes on lan1a and lan2a are both connected to every node `names`.
    async fn until_connected(&self, names: &[&str]) {
        for host in ["lan1a", "lan2a"] {
            until(
                &format!("{host} connected to {names:?}"),
                Duration::from_secs(30),
                || async {
                    let peers = self.peers(host).await;
                    let has = |name: &str| peers.iter().any(|p| p["name"] == name);
                    names.iter().all(|n| has(n)).then_some(())
                },
            )
            .await;
        }
    }

    /// Two `--relay` nodes on `pub` ("relay", and "relay-2" on ports 7400–7410) and one node
    /// behind each NAT that knows both; waits until both are connected to both. Returns
    /// (relay, relay 2, a, b).
    pub async fn two_relays_and_two_nats(&self) -> (Node, Node, Node, Node) {
        let relay = self
            .node("pub", "relay", &["--relay", "--no-mdns", "--name", "relay"])
            .await;
        let relay_2 = self
            .node(
                "pub",
                "relay-2",
                &[
                    "--relay",
                    "--no-mdns",
                    "--name",
                    "relay-2",
                    "--http",
                    "127.0.0.1:7400",
                    "--media-port",
                    "7401",
                    "--link-port",
                    "7403",
                    "--listen",
                    "/ip4/0.0.0.0/udp/7402/quic-v1",
                    "--listen",
                    "/ip4/0.0.0.0/tcp/7402",
                ],
            )
            .await;
        let first = format!("{RELAY_QUIC}/p2p/{}", node_id(&relay));
        let second = format!(
            "/ip4/203.0.113.10/udp/7402/quic-v1/p2p/{}",
            node_id(&relay_2)
        );
        let args = ["--no-mdns", "--bootstrap", &first, "--bootstrap", &second];
        let a = self
            .node("lan1a", "a", &[&args[..], &["--name", "home-a"]].concat())
            .await;
        let b = self
            .node("lan2a", "b", &[&args[..], &["--name", "home-b"]].concat())
            .await;
        self.until_connected(&["relay", "relay-2"]).await;
        (relay, relay_2, a, b)
    }

    /// Run `veche ARGS` on `host` (talking to the node there) and return its stdout.
    pub async fn veche(&self, host: &str, args: &[&str]) -> std::result::Result<String, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), env!("CARGO_BIN_EXE_veche")])
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The connected peers of the node on `host` (`veche peers --json`).
    pub async fn peers(&self, host: &str) -> Vec<Value> {
        match self.veche(host, &["peers", "--json"]).await {
            Ok(s) => serde_json::from_str(&s).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/netlab.sh");
        let _ = std::process::Command::new("bash")
            .arg(script)
            .arg("down")
            .env("NL_PREFIX", &self.prefix)
            .env("NL_STATE", &self.state)
            .output();
        // The nodes' logs and browser profiles stay for a test that failed, to read.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The relay node's QUIC address in the NAT lab.
pub const RELAY_QUIC: &str = "/ip4/203.0.113.10/udp/7302/quic-v1";

/// Poll `check` every 250 ms until it gives Some, for at most `limit`.
pub async fn until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Each browser's video frames decoded and audio packets received from each of its `pairs`
/// (me, other) grow over 3 s: at least 10 frames and 50 packets. Prints the figures.
pub async fn assert_growing(browsers: &mut [(&str, &mut Browser)], pairs: &[(&str, &str)]) {
    let mut first = Vec::new();
    for (_, b) in browsers.iter_mut() {
        first.push(b.stats().await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, (me, b)) in browsers.iter_mut().enumerate() {
        let second = b.stats().await;
        for (who, other) in pairs {
            if who != me {
                continue;
            }
            let v0 = inbound(&first[i], other, "camera").expect("video before");
            let v1 = inbound(&second, other, "camera").expect("video after");
            let a0 = inbound(&first[i], other, "mic").expect("audio before");
            let a1 = inbound(&second, other, "mic").expect("audio after");
            let frames = num(&v1, "framesDecoded") - num(&v0, "framesDecoded");
            let packets = num(&a1, "packetsReceived") - num(&a0, "packetsReceived");
            println!(
                "{me} from {other}: +{frames} frames decoded, +{packets} audio packets in 3 s"
            );
            assert!(
                frames >= 10,
                "{me} decoded only {frames} new frames from {other} in 3 s"
            );
            assert!(
                packets >= 50,
                "{me} received only {packets} audio packets from {other} in 3 s"
            );
        }
    }
}

/// The node id from `veche node <id>`, the first line a node prints.
pub fn node_id(node: &Node) -> String {
    node.printed[0]
        .strip_prefix("veche node ")
        .expect("first line names the node")
        .to_owned()
}

/// Start nodes on `hosts` and wait until each is connected to all the others (mDNS).
pub async fn lan_nodes(lab: &NatLab, hosts: &[&str]) -> Vec<(Node, String)> {
    let mut nodes = Vec::new();
    for host in hosts {
        let n = lab.node(host, host, &[]).await;
        let id = node_id(&n);
        nodes.push((n, id));
    }
    for (i, host) in hosts.iter().enumerate() {
        let others: Vec<String> = nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, (_, id))| id.clone())
            .collect();
        until(
            &format!("{host} connected to the other nodes"),
            Duration::from_secs(30),
            || async {
                let peers = lab.peers(host).await;
                others
                    .iter()
                    .all(|o| peers.iter().any(|p| p["id"] == o.as_str()))
                    .then_some(())
            },
        )
        .await;
    }
    nodes
}

/// The teacher's way in: on the start page `b` shows, tick the options (checkbox ids such as
/// `new-invite-only`, `new-lobby`), start a meeting titled `title`, then join it as `name`.
/// The browser's key signed the meeting, so it is the host. Returns the meeting's path.
pub async fn host_starts(b: &mut Browser, title: &str, options: &[&str], name: &str) -> String {
    b.wait_for(
        "start page",
        "(document.readyState === 'complete' && document.getElementById('start-btn')) ? true : null",
        Duration::from_secs(20),
    )
    .await;
    let ticks: String = options
        .iter()
        .map(|id| format!("document.getElementById({id:?}).click();"))
        .collect();
    b.eval(&format!(
        "document.getElementById('new-title').value = {title:?}; {ticks} document.getElementById('start-btn').click(); true"
    ))
    .await
    .expect("start a meeting");
    let path = b
        .wait_for(
            "the new meeting's page",
            "location.pathname.startsWith('/m/') ? location.pathname : null",
            Duration::from_secs(20),
        )
        .await;
    let path = path.as_str().expect("path").to_owned();
    b.eval(&format!("location.href = '{path}?name={name}&autojoin=1'"))
        .await
        .expect("join");
    b.wait_for(
        &format!("{name} in as the host"),
        "(window.veche && veche.state().joined && veche.state().role === 'host') || null",
        Duration::from_secs(30),
    )
    .await;
    path
}

/// Create a meeting through the API from the page `b` shows; returns its id.
pub async fn create_meeting(b: &mut Browser, title: &str) -> String {
    create_meeting_claimed(b, title).await.0
}

/// Create a meeting from the page in `b` (unsigned); its id and the secret that lets its
/// creator sign it as host (`PUT /api/meetings/{id}/doc` with `claim`).
pub async fn create_meeting_claimed(b: &mut Browser, title: &str) -> (String, String) {
    b.wait_for(
        "a page of the node",
        "location.href.startsWith('http') && document.readyState === 'complete'",
        Duration::from_secs(20),
    )
    .await;
    let created = b
        .eval(&format!(
            "fetch('/api/meetings', {{method: 'POST', headers: {{'content-type': 'application/json'}}, body: JSON.stringify({{title: {title:?}}})}}).then(r => r.json())"
        ))
        .await
        .expect("create meeting");
    (
        created["id"].as_str().expect("meeting id").to_owned(),
        created["claim"].as_str().expect("claim").to_owned(),
    )
}

/// Audio bytes `b` has received from `name`'s microphone.
pub async fn audio_from(b: &mut Browser, name: &str) -> u64 {
    b.eval(&format!(
        "veche.stats().then(s => s.inbound.filter(i => i.name === {name:?} && i.source === 'mic').reduce((a, i) => a + i.bytesReceived, 0))"
    ))
    .await
    .expect("stats")
    .as_u64()
    .unwrap_or(0)
}

/// Click the People panel button `action` (`mute`, `remove`, `admit`, ...) on the row of
/// `name` (rows of participants, or of people waiting with `waiting`).
pub async fn click_row(b: &mut Browser, name: &str, action: &str, waiting: bool) {
    let rows = if waiting {
        ".people-list li.waiting"
    } else {
        ".people-list li.person[data-participant]"
    };
    let js = format!(
        "(() => {{ const li = [...document.querySelectorAll({rows:?})]
             .find(l => l.querySelector('.person-name span')?.textContent === {name:?});
           const b = li && li.querySelector('button[data-action={action:?}]');
           if (!b) return null; b.click(); return true; }})()"
    );
    b.wait_for(
        &format!("the {action} button for {name}"),
        &js,
        Duration::from_secs(20),
    )
    .await;
}

/// Wait (up to 30 s) until the page `b` shows says `text`.
pub async fn wait_text(b: &mut Browser, what: &str, text: &str) {
    // 60 s: a Chromium started while others encode video on two cores can stall for 20 s
    // and more before its page gets a key, devices or a socket answer (seen in CI and here).
    b.wait_for(
        what,
        &format!("document.body.innerText.includes({text:?}) || null"),
        Duration::from_secs(60),
    )
    .await;
}

/// Click the element `css` selects, once it is there (up to 20 s).
pub async fn click(b: &mut Browser, what: &str, css: &str) {
    b.wait_for(
        what,
        &format!("(() => {{ const e = document.querySelector({css:?}); if (!e) return null; e.click(); return true; }})()"),
        Duration::from_secs(20),
    )
    .await;
}

/// In the host's open Invite dialog: withdraw the invite listed first (the newest) and wait
/// until the dialog says it is withdrawn.
pub async fn withdraw_invite(b: &mut Browser) {
    click(b, "the withdraw button", "button[data-withdraw]").await;
    b.wait_for(
        "the invite withdrawn",
        "(document.querySelector('button[data-withdraw]')?.textContent === 'Withdrawn') || null",
        Duration::from_secs(10),
    )
    .await;
}

/// The host's Invite dialog: make an invite link for `role`; returns the link.
pub async fn make_invite(b: &mut Browser, role: &str) -> String {
    // A fresh dialog: an open one still holds the last invite's link.
    b.eval("document.querySelectorAll('dialog.dialog').forEach(d => { if (d.open) d.close(); d.remove(); }); true")
        .await
        .expect("close dialogs");
    click(b, "the Invite button", "#btn-copy").await;
    b.wait_for(
        "the host's invite maker",
        "document.getElementById('invite-create') ? true : null",
        Duration::from_secs(10),
    )
    .await;
    b.eval(&format!(
        "document.getElementById('invite-role').value = {role:?}; document.getElementById('invite-create').click(); true"
    ))
    .await
    .expect("create invite");
    let link = b
        .wait_for(
            "the invite link",
            "document.getElementById('invite-link')?.value || null",
            Duration::from_secs(10),
        )
        .await;
    link.as_str().expect("link").to_owned()
}

/// `b` signs a mute of `target` with its own key and sends it; the page must show the
/// node's refusal.
pub async fn forged_mute(b: &mut Browser, who: &str, target: &str) {
    b.wait_for(
        &format!("{who} seeing {target} (with their key)"),
        &format!(
            "(window.veche && veche.state().participants.some(p => p.name === {target:?} && p.key)) || null"
        ),
        Duration::from_secs(30),
    )
    .await;
    b.eval(&format!(
        "import('/assets/keys.js').then(async (k) => {{
           const t = veche.state().participants.find(p => p.name === {target:?});
           const action = await k.signToken('veche/action/v1', {{meeting: location.pathname.split('/')[2],
             kind: 'mute', target: t.key, at_ms: Date.now(), authority: null}});
           return veche.send({{type: 'moderate', action}});
         }})"
    ))
    .await
    .expect("forged mute");
    wait_text(
        b,
        &format!("{who}'s node refusing a mute signed by {who}"),
        "only the host or a moderator may do this",
    )
    .await;
}
