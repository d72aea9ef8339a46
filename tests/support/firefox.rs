//! Headless Firefox (ESR, the Debian package `firefox-esr`) driven over WebDriver BiDi: the
//! same `Browser` the tests use for Chromium, so a test can put both in one meeting.
//!
//! Firefox serves BiDi on a WebSocket inside its network namespace; the test connects to it
//! from a thread that enters that namespace (`setns`), so nothing listens outside it. Its
//! fake camera and microphone, and ICE on a lab's addresses, are preferences in the fresh
//! profile's `user.js`.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{Browser, Driver, Result, SEQ};

/// What a test profile needs: fake devices without a prompt, sound without a gesture,
/// host candidates on loopback and without mDNS names (the node cannot resolve them), and
/// nothing that would call out (updates, telemetry, studies, captive-portal checks).
const PREFS: &str = r#"
user_pref("media.navigator.streams.fake", true);
user_pref("media.navigator.permission.disabled", true);
user_pref("media.autoplay.default", 0);
user_pref("media.autoplay.blocking_policy", 0);
user_pref("media.peerconnection.ice.loopback", true);
user_pref("media.peerconnection.ice.obfuscate_host_addresses", false);
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("app.update.disabledForTesting", true);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);
user_pref("app.normandy.enabled", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("network.manage-offline-status", false);
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("extensions.update.enabled", false);
"#;

pub fn firefox_path() -> PathBuf {
    if let Ok(p) = std::env::var("VECHE_FIREFOX") {
        return PathBuf::from(p);
    }
    for p in ["/usr/bin/firefox-esr", "/usr/bin/firefox"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("Firefox not found: install the Debian package `firefox-esr` (the README's test command does) or set VECHE_FIREFOX");
}

/// A BiDi session on one browsing context (the first tab).
pub(super) struct Bidi {
    ws: WebSocketStream<TcpStream>,
    context: String,
    next_id: u64,
}

impl Browser {
    /// Launch headless Firefox in network namespace `netns` (which needs a default route:
    /// Firefox gathers no ICE candidates without one), its profile under `dir`, at `url`.
    /// `extra` are Firefox's own switches (e.g. `--window-size=1920,1200`).
    pub async fn launch_firefox_in(dir: &Path, netns: &str, url: &str, extra: &[&str]) -> Browser {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let profile = dir.join(format!("firefox-{seq}"));
        std::fs::create_dir_all(&profile).expect("profile dir");
        std::fs::write(profile.join("user.js"), PREFS).expect("user.js");
        let log = profile.join("firefox.log");
        // A port of its own in the namespace (several browsers may share one).
        let port = 9300 + (seq % 500) as u16;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", netns])
            .arg(firefox_path())
            .args(["--headless", "--no-remote", "--profile"])
            .arg(&profile)
            .arg("--remote-debugging-port")
            .arg(port.to_string())
            .args(extra)
            .env("HOME", &profile)
            .env("MOZ_HEADLESS", "1")
            .env("DBUS_SESSION_BUS_ADDRESS", "disabled:")
            .env("DBUS_SYSTEM_BUS_ADDRESS", "disabled:")
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log).expect("log")))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&log)
                    .expect("log"),
            ))
            .kill_on_drop(true);
        let child = c.spawn().expect("spawn firefox");
        let pid = child.id().expect("pid");
        let bidi = Bidi::connect(netns, port, &log)
            .await
            .unwrap_or_else(|e| panic!("Firefox's BiDi: {e}; log {}", log.display()));
        let mut b = Browser {
            child,
            pid,
            driver: Driver::Bidi(Box::new(bidi)),
            next_id: 0,
            profile,
            log,
        };
        if let Driver::Bidi(bidi) = &mut b.driver {
            bidi.navigate(url).await.expect("navigate");
        }
        b
    }
}

impl Bidi {
    /// Wait (at most 30 s) for Firefox to listen, connect from inside `netns`, and start a
    /// session on its first tab.
    async fn connect(netns: &str, port: u16, log: &Path) -> Result<Bidi> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("WebDriver BiDi listening")
        {
            if Instant::now() > deadline {
                return Err("Firefox did not start its BiDi server in 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ns = format!("/run/netns/{netns}");
        let stream =
            tokio::task::spawn_blocking(move || -> std::io::Result<std::net::TcpStream> {
                // This thread only: a socket keeps the namespace it was made in.
                let f = std::fs::File::open(&ns)?;
                nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                let s = std::net::TcpStream::connect(("127.0.0.1", port))?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .await??;
        let stream = TcpStream::from_std(stream)?;
        let (ws, _) =
            tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/session"), stream)
                .await?;
        let mut b = Bidi {
            ws,
            context: String::new(),
            next_id: 0,
        };
        b.call(
            "session.new",
            json!({"capabilities": {"alwaysMatch": {"acceptInsecureCerts": true}}}),
        )
        .await?;
        let tree = b.call("browsingContext.getTree", json!({})).await?;
        b.context = tree["contexts"][0]["context"]
            .as_str()
            .ok_or("no browsing context")?
            .to_owned();
        Ok(b)
    }

    async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::text(msg.to_string())).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let next = tokio::time::timeout_at(deadline.into(), self.ws.next())
                .await
                .map_err(|_| format!("{method}: no reply from Firefox in 60 s"))?;
            let Some(frame) = next else {
                return Err(format!("{method}: Firefox closed the session").into());
            };
            let Message::Text(text) = frame? else {
                continue;
            };
            let v: Value = serde_json::from_str(&text)?;
            if v["id"].as_u64() != Some(id) {
                continue; // an event
            }
            if v["type"] == "error" {
                return Err(format!("{method}: {} {}", v["error"], v["message"]).into());
            }
            return Ok(v["result"].clone());
        }
    }

    async fn navigate(&mut self, url: &str) -> Result<()> {
        let context = self.context.clone();
        self.call(
            "browsingContext.navigate",
            json!({"context": context, "url": url, "wait": "none"}),
        )
        .await?;
        Ok(())
    }

    /// Evaluate `js` as a script (its last expression's value, promises awaited), as a user
    /// gesture, and return it as JSON.
    pub(super) async fn eval(&mut self, js: &str) -> Result<Value> {
        let context = self.context.clone();
        let r = self
            .call(
                "script.evaluate",
                json!({
                    "expression": js,
                    "target": {"context": context},
                    "awaitPromise": true,
                    "resultOwnership": "none",
                    "userActivation": true,
                    "serializationOptions": {"maxObjectDepth": 32},
                }),
            )
            .await?;
        if r["type"] == "exception" {
            return Err(format!("page threw: {}", r["exceptionDetails"]["text"]).into());
        }
        Ok(to_json(&r["result"]))
    }

    pub(super) async fn screenshot(&mut self) -> Result<Value> {
        let context = self.context.clone();
        self.call(
            "browsingContext.captureScreenshot",
            json!({"context": context}),
        )
        .await
    }

    pub(super) async fn before_each_page(&mut self, js: &str) -> Result<()> {
        self.call(
            "script.addPreloadScript",
            json!({"functionDeclaration": format!("() => {{ {js} }}")}),
        )
        .await?;
        Ok(())
    }
}

/// A BiDi remote value as JSON (what Chromium's `returnByValue` gives): objects and maps
/// by their string keys, arrays and sets as arrays, what has no JSON form as null.
fn to_json(v: &Value) -> Value {
    let value = &v["value"];
    match v["type"].as_str() {
        Some("string" | "boolean") => value.clone(),
        Some("number") => match value {
            Value::Number(_) => value.clone(),
            Value::String(s) if s == "-0" => json!(0),
            _ => Value::Null, // NaN, Infinity
        },
        Some("bigint") => value.clone(),
        Some("array" | "set") => Value::Array(
            value
                .as_array()
                .into_iter()
                .flatten()
                .map(to_json)
                .collect(),
        ),
        Some("object" | "map") => {
            let mut out = serde_json::Map::new();
            for pair in value.as_array().into_iter().flatten() {
                let key = match &pair[0] {
                    Value::String(k) => k.clone(),
                    other => match to_json(other) {
                        Value::String(k) => k,
                        k => k.to_string(),
                    },
                };
                out.insert(key, to_json(&pair[1]));
            }
            Value::Object(out)
        }
        _ => Value::Null,
    }
}
