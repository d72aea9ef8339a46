//! Hostile and broken input at the signaling WebSocket and the HTTP API: each gets a precise
//! error, nothing panics, and another participant in the same meeting is unaffected. And at
//! the media socket: a flood of probes gets a bounded number of answers.
//! Loopback only; no root needed.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use support::raw::{self, b64, challenge, next, next_of, send, ws, Ws, JSON};
use veche_trust::Keypair;

/// The raw client's HTTP with a JSON content type (these requests are JSON or nothing).
async fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    raw::http(port, method, path, JSON, body.unwrap_or("")).await
}

/// Whether the node closes `ws` (no message, and not merely nothing within 10 s).
async fn closes(ws: &mut Ws) -> bool {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the socket closes within 10 s");
        match msg {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return true,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(_)) => return false,
        }
    }
}

/// A join that signs the socket's challenge with `me`.
fn join(me: &Keypair, ch: &(String, String), meeting: &str, name: &str) -> Value {
    raw::join(me, ch, meeting, name, None)
}

async fn expect_error(ws: &mut Ws, code: &str, fatal: bool) {
    let v = next_of(ws, "error").await;
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["fatal"], fatal, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    if fatal {
        assert!(closes(ws).await, "socket must close after a fatal error");
    }
}

#[tokio::test]
async fn bad_input_gets_precise_errors_and_others_are_unaffected() {
    let dir = std::env::temp_dir().join(format!("veche-badinput-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let node = raw::start_node_in(&dir, 0).await;
    let port = node.http_port;

    // HTTP API.
    let (status, body) = http(port, "POST", "/api/meetings", Some("{\"titel\": 1}")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_request"), "{body}");
    let (status, body) = http(port, "POST", "/api/meetings", Some("{\"title\": \"\"}")).await;
    assert_eq!(status, 400);
    assert!(body.contains("bad_title"), "{body}");
    let (status, body) = http(port, "GET", "/api/meetings/zzz-zzz-zzz", None).await;
    assert_eq!(status, 404);
    assert!(body.contains("unknown_meeting"), "{body}");
    let (status, body) = http(port, "GET", "/api/meetings/..%2F..%2Fetc", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(port, "POST", "/api/meetings", Some("{\"title\": \"Club\"}")).await;
    assert_eq!(status, 201, "{body}");
    let meeting: Value = serde_json::from_str(&body).expect("json");
    let id = meeting["id"].as_str().expect("id").to_owned();
    assert_eq!(meeting["url"], format!("http://127.0.0.1:{port}/m/{id}"));

    // A well-behaved participant in the meeting.
    let mut good = ws(port).await;
    let ch = challenge(&mut good).await;
    send(
        &mut good,
        join(&Keypair::from_secret(&[1; 32]), &ch, &id, "Good"),
    )
    .await;
    let welcome = next_of(&mut good, "welcome").await;
    assert_eq!(welcome["meeting"]["title"], "Club");

    // Before joining.
    let mut bad = ws(port).await;
    let mallory = Keypair::from_secret(&[2; 32]);
    let bad_ch = challenge(&mut bad).await;
    send(&mut bad, json!({"type": "chat", "text": "hi"})).await;
    expect_error(&mut bad, "not_joined", false).await;
    bad.send(Message::Text("{not json".into()))
        .await
        .expect("send");
    expect_error(&mut bad, "bad_message", false).await;
    send(&mut bad, json!({"type": "launch_missiles"})).await;
    expect_error(&mut bad, "bad_message", false).await;
    send(&mut bad, json!({"type": "join", "meeting": id})).await;
    expect_error(&mut bad, "bad_message", false).await;
    bad.send(Message::Binary(vec![0u8, 159, 146, 150].into()))
        .await
        .expect("send");
    expect_error(&mut bad, "binary_unsupported", false).await;
    send(&mut bad, join(&mallory, &bad_ch, &id, "   ")).await;
    expect_error(&mut bad, "bad_name", false).await;

    // Joined, then garbage.
    send(&mut bad, join(&mallory, &bad_ch, &id, "Mallory")).await;
    next_of(&mut bad, "welcome").await;
    let joined = next_of(&mut good, "participant_joined").await;
    assert_eq!(joined["participant"]["name"], "Mallory");
    // The others see the key the node checked.
    assert_eq!(joined["participant"]["key"], b64(&mallory.public().0));
    send(&mut bad, join(&mallory, &bad_ch, &id, "Again")).await;
    expect_error(&mut bad, "already_joined", false).await;
    send(&mut bad, json!({"type": "chat", "text": "x".repeat(2001)})).await;
    expect_error(&mut bad, "bad_chat", false).await;
    send(&mut bad, json!({"type": "answer", "sdp": "v=0"})).await;
    expect_error(&mut bad, "unexpected_sdp", false).await;
    send(
        &mut bad,
        json!({"type": "offer", "sdp": "this is not sdp", "sources": {"0": "camera"}}),
    )
    .await;
    expect_error(&mut bad, "bad_sdp", true).await;

    // The good participant saw Mallory leave, and goes on chatting.
    let left = next_of(&mut good, "participant_left").await;
    assert_eq!(left["id"], joined["participant"]["id"]);
    send(&mut good, json!({"type": "chat", "text": "still here"})).await;
    let chat = next_of(&mut good, "chat").await;
    assert_eq!(chat["message"]["text"], "still here");
    assert_eq!(chat["message"]["name"], "Good");

    // Oversized message.
    let mut big = ws(port).await;
    send(
        &mut big,
        json!({"type": "join", "meeting": id, "name": "x".repeat(300 * 1024)}),
    )
    .await;
    expect_error(&mut big, "too_large", true).await;

    // Unknown meeting.
    let mut lost = ws(port).await;
    let lost_ch = challenge(&mut lost).await;
    send(&mut lost, join(&mallory, &lost_ch, "abc-def-ghj", "Lost")).await;
    expect_error(&mut lost, "unknown_meeting", true).await;

    // A forged proof: signed by one key, presented with another.
    let mut forger = ws(port).await;
    let forger_ch = challenge(&mut forger).await;
    let mut forged = join(&mallory, &forger_ch, &id, "Eve");
    forged["key"] = json!(b64(&Keypair::from_secret(&[1; 32]).public().0));
    send(&mut forger, forged).await;
    expect_error(&mut forger, "bad_signature", true).await;
    // A proof captured from another socket (its nonce): worthless here.
    let mut replay = ws(port).await;
    let _ = challenge(&mut replay).await;
    send(&mut replay, join(&mallory, &bad_ch, &id, "Replay")).await;
    expect_error(&mut replay, "bad_signature", true).await;
    // Garbage where the key and signature go.
    let mut junk = ws(port).await;
    let _ = challenge(&mut junk).await;
    send(
        &mut junk,
        json!({"type": "join", "meeting": id, "name": "Junk", "key": "%%%", "sig": "x"}),
    )
    .await;
    expect_error(&mut junk, "bad_signature", true).await;
    // None of it reached the participant already in the meeting.
    send(
        &mut good,
        json!({"type": "chat", "text": "after the forgeries"}),
    )
    .await;
    let chat = next_of(&mut good, "chat").await;
    assert_eq!(chat["message"]["text"], "after the forgeries");

    // A flood is rate limited, not served.
    let mut flood = ws(port).await;
    for _ in 0..150 {
        flood
            .send(Message::Text("{\"type\":\"leave_not\"}".into()))
            .await
            .expect("send");
    }
    let mut limited = false;
    for _ in 0..150 {
        match next(&mut flood).await {
            Some(v) if v["code"] == "rate_limited" => {
                limited = true;
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    assert!(limited, "150 messages at once must hit the rate limit");

    // Still alive and serving, and never panicked.
    send(&mut good, json!({"type": "chat", "text": "after all that"})).await;
    assert_eq!(
        next_of(&mut good, "chat").await["message"]["text"],
        "after all that"
    );
    let (status, body) = http(port, "GET", &format!("/api/meetings/{id}/people"), None).await;
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&body).expect("json");
    let names: Vec<&str> = info["participants"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["Good"]);
    let log = node.log_text();
    assert!(!log.contains("panicked"), "node panicked:\n{log}");
    assert!(
        log.contains("bad_sdp") || log.contains("BadSdp"),
        "errors are logged:\n{log}"
    );
    node.kill().await;
}

/// A free UDP port on loopback, for the node's media socket.
fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

#[tokio::test]
async fn a_probe_of_the_media_port_is_answered_and_a_flood_of_them_is_bounded() {
    use veche_media::probe::{self, Probe};
    let dir = std::env::temp_dir().join(format!("veche-probeflood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let media = free_udp_port();
    let media_port = media.to_string();
    let node = support::Node::start(
        None,
        &dir,
        &dir.join("data"),
        &[
            "--http",
            "127.0.0.1:0",
            "--media-port",
            &media_port,
            "--link-port",
            "0",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ],
    )
    .await;
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], media));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let me = sock.local_addr().expect("addr");
    let mut buf = vec![0u8; 2048];
    // One probe: answered with where it came from (the node may still be binding: a few
    // tries, 200 ms apart).
    let mut answered = None;
    for _ in 0..25 {
        let (id, ask) = probe::request().expect("probe");
        sock.send_to(&ask, to).await.expect("send");
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await
        {
            answered = Some((probe::read(&buf[..n], from), id));
            break;
        }
    }
    let (got, id) = answered.expect("a probe of the media port is answered");
    assert_eq!(
        got,
        Some(Probe::Answered(id, me)),
        "it says where we came from"
    );
    // A flood: 1000 probes at once get at most two seconds' worth of answers (256 a second,
    // the window may span two), and the node still answers a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..1000 {
        let (_, ask) = probe::request().expect("probe");
        sock.send_to(&ask, to).await.expect("send");
    }
    let mut answers = 0;
    let end = tokio::time::Instant::now() + Duration::from_millis(900);
    while let Ok(Ok((n, from))) = tokio::time::timeout_at(end, sock.recv_from(&mut buf)).await {
        if matches!(probe::read(&buf[..n], from), Some(Probe::Answered(..))) {
            answers += 1;
        }
    }
    println!("probe flood: 1000 probes, {answers} answered in 0.9 s");
    assert!(answers > 0 && answers <= 512, "{answers} answers");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (id, ask) = probe::request().expect("probe");
    sock.send_to(&ask, to).await.expect("send");
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .expect("answered after the flood")
        .expect("recv");
    assert_eq!(probe::read(&buf[..n], from), Some(Probe::Answered(id, me)));
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
