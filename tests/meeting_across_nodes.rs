//! One meeting across several nodes: each browser attaches to its own node (in that node's
//! network namespace, opening `http://localhost:7300`), and the nodes carry the meeting
//! between them over node-to-node WebRTC links signaled over libp2p. Runs in the lab of
//! `tests/lab/netlab.sh` (root; CI is root).

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{inbound, node_id, num, Browser, NatLab};

/// One lab at a time: each holds several nodes and browsers and the suite has two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const BASE: &str = "http://localhost:7300";

async fn stats(b: &mut Browser) -> Value {
    b.eval("window.veche ? veche.stats() : null")
        .await
        .expect("stats")
}

/// Wait until `b` decodes camera video and receives audio from every name in `from`.
async fn wait_media(b: &mut Browser, who: &str, from: &[&str]) {
    let names: Vec<String> = from.iter().map(|n| format!("{n:?}")).collect();
    let js = format!(
        "(async () => {{ if (!window.veche) return null; const s = await veche.stats();
           const ok = [{}].every(n => s.inbound.some(i => i.name === n && i.source === 'camera' && i.framesDecoded > 0)
             && s.inbound.some(i => i.name === n && i.source === 'mic' && i.packetsReceived > 0));
           return ok ? true : null; }})()",
        names.join(",")
    );
    b.wait_for(
        &format!("{who} decoding video and receiving audio from {from:?}"),
        &js,
        Duration::from_secs(60),
    )
    .await;
}

/// Video frames decoded and audio packets received from `other`, per browser, grow over 3 s.
async fn assert_growing(browsers: &mut [(&str, &mut Browser)], pairs: &[(&str, &str)]) {
    let mut first = Vec::new();
    for (_, b) in browsers.iter_mut() {
        first.push(stats(b).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, (me, b)) in browsers.iter_mut().enumerate() {
        let second = stats(b).await;
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

async fn send_chat(b: &mut Browser, text: &str) {
    b.eval(&format!(
        "(() => {{ const i = document.querySelector('#chat-input'); i.value = {text:?}; \
         document.querySelector('#chat-send').click(); return true; }})()"
    ))
    .await
    .expect("send chat");
}

async fn wait_chat(b: &mut Browser, me: &str, text: &str, from: &str) {
    b.wait_for(
        &format!("chat {text:?} from {from} at {me}"),
        &format!(
            "[...document.querySelectorAll('#chat-log .chat-msg')].some(m => m.querySelector('.chat-text').textContent === {text:?} && m.querySelector('.chat-name').textContent.includes({from:?}))"
        ),
        Duration::from_secs(15),
    )
    .await;
}

/// Poll until `check` gives Some, every 250 ms, for at most `limit`.
async fn until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
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

/// Start nodes on `hosts` and wait until each is connected to all the others (mDNS).
async fn lan_nodes(lab: &NatLab, hosts: &[&str]) -> Vec<(support::Node, String)> {
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

fn meeting_link(id: &str, host_node: Option<&str>, name: &str) -> String {
    match host_node {
        Some(n) => format!("{BASE}/m/{id}?node={n}&name={name}&autojoin=1"),
        None => format!("{BASE}/m/{id}?name={name}&autojoin=1"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_a_lan_carry_one_meeting() {
    let _serial = SERIAL.lock().await;
    let lab = NatLab::up("two", "cone");
    let nodes = lan_nodes(&lab, &["lan1a", "lan1b"]).await;
    let a_id = nodes[0].1.clone();

    let created = lab
        .post("lan1a", "/api/meetings", r#"{"title":"Chess club"}"#)
        .await;
    let id = created["id"].as_str().expect("meeting id").to_owned();
    // The link the host's page hands out names the host node.
    let on_a = lab.get("lan1a", &format!("/api/meetings/{id}")).await;
    assert_eq!(on_a["host"], a_id.as_str(), "{on_a}");

    let mut ada = lab.browser("lan1a", &meeting_link(&id, None, "Ada")).await;
    let mut bob = lab
        .browser("lan1b", &meeting_link(&id, Some(&a_id), "Bob"))
        .await;
    wait_media(&mut ada, "Ada", &["Bob"]).await;
    wait_media(&mut bob, "Bob", &["Ada"]).await;
    assert_growing(
        &mut [("Ada", &mut ada), ("Bob", &mut bob)],
        &[("Ada", "Bob"), ("Bob", "Ada")],
    )
    .await;

    send_chat(&mut ada, "e4 e5, your move").await;
    wait_chat(&mut bob, "Bob", "e4 e5, your move", "Ada").await;
    send_chat(&mut bob, "Nf3").await;
    wait_chat(&mut ada, "Ada", "Nf3", "Bob").await;

    // Bob's camera off shows at Ada's, across the nodes.
    bob.eval("document.querySelector('#btn-cam').click(), true")
        .await
        .expect("camera off");
    ada.wait_for(
        "Bob's camera off shown at Ada",
        "window.veche && veche.state().participants.some(p => p.name === 'Bob' && p.video === false)",
        Duration::from_secs(10),
    )
    .await;

    // Both nodes report the other node with a connected, direct media path.
    for (host, other) in [("lan1a", &nodes[1].1), ("lan1b", &nodes[0].1)] {
        let m = until(
            &format!("{host} reports its media link"),
            Duration::from_secs(10),
            || async {
                let m = lab.get(host, &format!("/api/meetings/{id}")).await;
                let n = m["nodes"]
                    .as_array()?
                    .iter()
                    .find(|n| n["id"] == other.as_str())?
                    .clone();
                (n["media"] == "connected").then_some(n)
            },
        )
        .await;
        println!("{host} sees {m}");
        assert_eq!(m["path"], "direct", "{m}");
        assert_eq!(m["participants"], 1, "{m}");
        // A camera and a microphone: well over 50 kbit/s each way on the link.
        for dir in ["kbps_out", "kbps_in"] {
            assert!(m[dir].as_f64().unwrap_or(0.0) > 50.0, "{dir}: {m}");
        }
        // A browser publishes three tracks: mic, camera and its screen-share slot.
        assert_eq!(
            m["tracks_out"], 3,
            "each of the person's tracks crosses once: {m}"
        );
    }
    ada.close().await;
    bob.close().await;

    // A meeting known only by its id (no node in the link) is found through the DHT:
    // node A announced it as a provider record when it was created.
    let second = lab
        .post("lan1a", "/api/meetings", r#"{"title":"Go club"}"#)
        .await;
    let second = second["id"].as_str().expect("meeting id").to_owned();
    let found = lab.get("lan1b", &format!("/api/meetings/{second}")).await;
    assert_eq!(found["title"], "Go club", "{found}");
    assert_eq!(found["host"], a_id.as_str(), "{found}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_between_nodes_carries_each_track_once() {
    let _serial = SERIAL.lock().await;
    let lab = NatLab::up("once", "cone");
    let nodes = lan_nodes(&lab, &["lan1a", "lan1b"]).await;
    let (a_id, b_id) = (nodes[0].1.clone(), nodes[1].1.clone());
    let created = lab
        .post("lan1a", "/api/meetings", r#"{"title":"Assembly"}"#)
        .await;
    let id = created["id"].as_str().expect("meeting id").to_owned();

    // Three people on node A, two watching from node B.
    let mut on_a = Vec::new();
    for name in ["Ann", "Art", "Ava"] {
        on_a.push(lab.browser("lan1a", &meeting_link(&id, None, name)).await);
    }
    let mut on_b = Vec::new();
    for name in ["Ben", "Bea"] {
        on_b.push(
            lab.browser("lan1b", &meeting_link(&id, Some(&a_id), name))
                .await,
        );
    }
    for (b, me) in on_b.iter_mut().zip(["Ben", "Bea"]) {
        wait_media(b, me, &["Ann", "Art", "Ava"]).await;
    }

    // Node A's own counters: its link to B carries 3 people x 3 tracks (mic, camera, screen
    // slot) = 9, however many browsers watch on B, and B receives those 9 on the link.
    let a_view = until(
        "A's link to B carries its tracks",
        Duration::from_secs(10),
        || async {
            let m = lab.get("lan1a", &format!("/api/meetings/{id}")).await;
            let n = m["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["id"] == b_id.as_str())?
                .clone();
            (n["tracks_out"] == 9).then_some(n)
        },
    )
    .await;
    let b_view = lab.get("lan1b", &format!("/api/meetings/{id}")).await;
    let b_link = b_view["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["id"] == a_id.as_str()))
        .cloned()
        .expect("B lists A");
    println!("A → B link at A: {a_view}\nA → B link at B: {b_link}");
    assert_eq!(a_view["tracks_out"], 9, "{a_view}");
    assert_eq!(b_link["tracks_in"], 9, "{b_link}");
    let frames_in = num(&b_link, "frames_in");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = lab.get("lan1b", &format!("/api/meetings/{id}")).await;
    let later = later["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["id"] == a_id.as_str()))
        .cloned()
        .expect("B lists A");
    println!(
        "link frames into B in 3 s: {}",
        num(&later, "frames_in") - frames_in
    );
    assert_eq!(later["tracks_in"], 9, "{later}");
    for b in on_a.into_iter().chain(on_b) {
        b.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_disappears_and_the_rest_goes_on() {
    let _serial = SERIAL.lock().await;
    let lab = NatLab::up("kill", "cone");
    let mut nodes = lan_nodes(&lab, &["lan1a", "lan1b", "lan1c"]).await;
    let a_id = nodes[0].1.clone();
    let created = lab
        .post("lan1a", "/api/meetings", r#"{"title":"Choir"}"#)
        .await;
    let id = created["id"].as_str().expect("meeting id").to_owned();

    let mut ada = lab.browser("lan1a", &meeting_link(&id, None, "Ada")).await;
    let mut bob = lab
        .browser("lan1b", &meeting_link(&id, Some(&a_id), "Bob"))
        .await;
    let mut cy = lab
        .browser("lan1c", &meeting_link(&id, Some(&a_id), "Cy"))
        .await;
    wait_media(&mut ada, "Ada", &["Bob", "Cy"]).await;
    wait_media(&mut bob, "Bob", &["Ada", "Cy"]).await;
    wait_media(&mut cy, "Cy", &["Ada", "Bob"]).await;

    // kill -9 node C (its browser stays, cut off).
    let (c, _) = nodes.pop().expect("node c");
    let killed = Instant::now();
    c.kill().await;
    for (b, me) in [(&mut ada, "Ada"), (&mut bob, "Bob")] {
        b.wait_for(
            &format!("Cy gone at {me}"),
            "window.veche && !veche.state().participants.some(p => p.name === 'Cy')",
            Duration::from_secs(10),
        )
        .await;
        println!("Cy gone at {me} {:?} after kill -9", killed.elapsed());
    }
    assert!(killed.elapsed() < Duration::from_secs(10));
    assert_growing(
        &mut [("Ada", &mut ada), ("Bob", &mut bob)],
        &[("Ada", "Bob"), ("Bob", "Ada")],
    )
    .await;
    for b in [ada, bob, cy] {
        b.close().await;
    }
}

const RELAY_QUIC: &str = "/ip4/203.0.113.10/udp/7302/quic-v1";

/// A `--relay` node on the public side and two nodes behind their own NATs that know only
/// it. Returns (relay, a, b) with their ids.
async fn relay_and_two_nats(lab: &NatLab) -> Vec<(support::Node, String)> {
    let relay = lab
        .node("pub", "relay", &["--relay", "--no-mdns", "--name", "relay"])
        .await;
    let relay_id = node_id(&relay);
    let relay_addr = format!("{RELAY_QUIC}/p2p/{relay_id}");
    let args = ["--no-mdns", "--bootstrap", &relay_addr];
    let a = lab
        .node("lan1a", "a", &[&args[..], &["--name", "home-a"]].concat())
        .await;
    let b = lab
        .node("lan2a", "b", &[&args[..], &["--name", "home-b"]].concat())
        .await;
    for host in ["lan1a", "lan2a"] {
        until(
            &format!("{host} connected to the relay"),
            Duration::from_secs(30),
            || async {
                lab.peers(host)
                    .await
                    .iter()
                    .any(|p| p["name"] == "relay")
                    .then_some(())
            },
        )
        .await;
    }
    let (a_id, b_id) = (node_id(&a), node_id(&b));
    vec![(relay, relay_id), (a, a_id), (b, b_id)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cone_nats_carry_media_directly() {
    let _serial = SERIAL.lock().await;
    let lab = NatLab::up("mcone", "cone");
    let nodes = relay_and_two_nats(&lab).await;
    let (a_id, b_id) = (nodes[1].1.clone(), nodes[2].1.clone());
    let created = lab
        .post("lan1a", "/api/meetings", r#"{"title":"Two homes"}"#)
        .await;
    let id = created["id"].as_str().expect("meeting id").to_owned();

    let mut ada = lab.browser("lan1a", &meeting_link(&id, None, "Ada")).await;
    let mut bob = lab
        .browser("lan2a", &meeting_link(&id, Some(&a_id), "Bob"))
        .await;
    wait_media(&mut ada, "Ada", &["Bob"]).await;
    wait_media(&mut bob, "Bob", &["Ada"]).await;
    assert_growing(
        &mut [("Ada", &mut ada), ("Bob", &mut bob)],
        &[("Ada", "Bob"), ("Bob", "Ada")],
    )
    .await;
    // The media path is the other home's NAT, straight: not the relay's address.
    for (host, other, nat) in [
        ("lan1a", &b_id, "203.0.113.12:"),
        ("lan2a", &a_id, "203.0.113.11:"),
    ] {
        let n = until(
            &format!("{host} reports its media link"),
            Duration::from_secs(10),
            || async {
                let m = lab.get(host, &format!("/api/meetings/{id}")).await;
                let n = m["nodes"]
                    .as_array()?
                    .iter()
                    .find(|n| n["id"] == other.as_str())?
                    .clone();
                (n["media"] == "connected").then_some(n)
            },
        )
        .await;
        println!("{host} sees {n}");
        assert_eq!(n["path"], "direct", "{n}");
        assert!(
            n["media_address"].as_str().unwrap_or("").starts_with(nat),
            "media should come straight from the other NAT ({nat}): {n}"
        );
    }
    ada.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_nats_carry_media_through_the_relay_node() {
    let _serial = SERIAL.lock().await;
    let lab = NatLab::up("msym", "symmetric");
    let nodes = relay_and_two_nats(&lab).await;
    let (relay_id, a_id, b_id) = (nodes[0].1.clone(), nodes[1].1.clone(), nodes[2].1.clone());
    let created = lab
        .post("lan1a", "/api/meetings", r#"{"title":"Two offices"}"#)
        .await;
    let id = created["id"].as_str().expect("meeting id").to_owned();

    let started = Instant::now();
    let mut ada = lab.browser("lan1a", &meeting_link(&id, None, "Ada")).await;
    let mut bob = lab
        .browser("lan2a", &meeting_link(&id, Some(&a_id), "Bob"))
        .await;
    wait_media(&mut ada, "Ada", &["Bob"]).await;
    wait_media(&mut bob, "Bob", &["Ada"]).await;
    println!("media both ways after {:?}", started.elapsed());
    assert_growing(
        &mut [("Ada", &mut ada), ("Bob", &mut bob)],
        &[("Ada", "Bob"), ("Bob", "Ada")],
    )
    .await;
    // Both report the other node as reached through the relay node.
    for (host, other) in [("lan1a", &b_id), ("lan2a", &a_id)] {
        let n = until(
            &format!("{host} reports its media path"),
            Duration::from_secs(10),
            || async {
                let m = lab.get(host, &format!("/api/meetings/{id}")).await;
                let n = m["nodes"]
                    .as_array()?
                    .iter()
                    .find(|n| n["id"] == other.as_str())?
                    .clone();
                (n["media"] == "connected").then_some(n)
            },
        )
        .await;
        println!("{host} sees {n}");
        assert_eq!(n["path"], "relayed", "{n}");
        assert_eq!(n["via"], relay_id.as_str(), "{n}");
        assert!(
            n["media_address"]
                .as_str()
                .unwrap_or("")
                .starts_with("203.0.113.10:"),
            "media comes from the relay node: {n}"
        );
    }
    ada.close().await;
    bob.close().await;
}
