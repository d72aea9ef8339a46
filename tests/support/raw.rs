//! Raw clients of a node for tests that need no browser: HTTP/1.1 requests with the headers
//! a test chooses, the signaling socket, and a node on loopback.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};
use veche_trust::{encode_token, Invite, Keypair, MeetingDoc, Policy, Role};

use super::Node;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A raw HTTP/1.1 request with extra header lines; returns (status, body).
pub async fn http(port: u16, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let host = if headers.contains("Host:") {
        String::new()
    } else {
        format!("Host: 127.0.0.1:{port}\r\n")
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\n{host}{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned(),
    )
}

pub const JSON: &str = "Content-Type: application/json\r\n";

pub async fn post(port: u16, path: &str, body: Value) -> (u16, Value) {
    let (status, body) = http(port, "POST", path, JSON, &body.to_string()).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A meeting signed by `host` with `policy`: its id.
pub async fn signed_meeting(port: u16, host: &Keypair, policy: Policy) -> String {
    signed_meeting_with(port, host, policy, false).await
}

/// A meeting signed by `host` with `policy` and, with `lobby`, a waiting room: its id.
pub async fn signed_meeting_with(port: u16, host: &Keypair, policy: Policy, lobby: bool) -> String {
    let (status, created) = post(port, "/api/meetings", json!({"title": "Class"})).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let doc = encode_token(&host.sign(MeetingDoc {
        id: id.clone(),
        title: "Class".into(),
        host: host.public(),
        policy,
        lobby,
        created_ms: now_ms(),
        ends_ms: None,
    }));
    let body = json!({"doc": doc, "claim": created["claim"]}).to_string();
    let (status, answer) = http(port, "PUT", &format!("/api/meetings/{id}/doc"), JSON, &body).await;
    assert_eq!(status, 200, "{answer}");
    id
}

pub async fn ws(port: u16) -> Ws {
    connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("ws connect")
        .0
}

/// The next JSON message, skipping pings; `None` when the socket closed or nothing came
/// within 10 s (a test that must see the socket close checks that itself).
pub async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .ok()?;
        match msg {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).expect("json")),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

pub async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    for _ in 0..50 {
        let v = next(ws)
            .await
            .unwrap_or_else(|| panic!("socket closed while waiting for {kind}"));
        if v["type"] == kind {
            return v;
        }
    }
    panic!("no {kind} message");
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// A socket's challenge: (node id, nonce).
pub async fn challenge(ws: &mut Ws) -> (String, String) {
    let v = next_of(ws, "challenge").await;
    let nonce = v["nonce"].as_str().expect("nonce").to_owned();
    assert!(nonce.len() >= 16, "a fresh nonce of 16 bytes or more: {v}");
    (v["node"].as_str().expect("node").to_owned(), nonce)
}

pub fn join(
    me: &Keypair,
    ch: &(String, String),
    meeting: &str,
    name: &str,
    invite: Option<&str>,
) -> Value {
    let join = veche_signal::ClientMsg::Join {
        meeting: meeting.to_owned(),
        name: name.to_owned(),
        key: b64(&me.public().0),
        sig: b64(&me.sign_challenge(&ch.0, meeting, &ch.1).0),
        invite: invite.map(str::to_owned),
    };
    serde_json::to_value(join).unwrap_or(Value::Null)
}

/// A fresh socket joined to `meeting` as `me`: the socket and its welcome.
pub async fn joined(
    port: u16,
    me: &Keypair,
    meeting: &str,
    name: &str,
    invite: Option<&str>,
) -> (Ws, Value) {
    let mut s = ws(port).await;
    let ch = challenge(&mut s).await;
    send(&mut s, join(me, &ch, meeting, name, invite)).await;
    let w = next(&mut s).await.expect("an answer to the join");
    (s, w)
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("port")
}

pub async fn start_node(tag: &str, p2p_port: u16) -> (Node, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("veche-raw-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    (start_node_in(&dir, p2p_port).await, dir)
}

/// A node on loopback with its data in `dir/data` (again, after a kill: the same node).
pub async fn start_node_in(dir: &std::path::Path, p2p_port: u16) -> Node {
    start_node_with(dir, p2p_port, &[]).await
}

/// [`start_node_in`] with more flags (`--relay`, `--bootstrap ADDR`, ...).
pub async fn start_node_with(dir: &std::path::Path, p2p_port: u16, extra: &[&str]) -> Node {
    let listen = format!("/ip4/127.0.0.1/udp/{p2p_port}/quic-v1");
    let mut args = vec![
        "--http",
        "127.0.0.1:0",
        "--media-port",
        "0",
        "--link-port",
        "0",
        "--no-mdns",
        "--listen",
        &listen,
    ];
    args.extend_from_slice(extra);
    Node::start(None, dir, &dir.join("data"), &args).await
}

/// [`joined`], for a node that may be going away: `None` if the socket fails first.
pub async fn try_joined(
    port: u16,
    me: &Keypair,
    meeting: &str,
    name: &str,
    invite: Option<&str>,
) -> Option<(Ws, Value)> {
    let (mut s, _) = connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .ok()?;
    let ch = loop {
        let v = next(&mut s).await?;
        if v["type"] == "challenge" {
            break (
                v["node"].as_str()?.to_owned(),
                v["nonce"].as_str()?.to_owned(),
            );
        }
    };
    s.send(Message::Text(
        join(me, &ch, meeting, name, invite).to_string().into(),
    ))
    .await
    .ok()?;
    let w = next(&mut s).await?;
    Some((s, w))
}

/// The next error on `ws`: its code, whether it is fatal, and that its words say `words`.
pub async fn expect_refusal(ws: &mut Ws, code: &str, fatal: bool, words: &str) {
    let e = next_of(ws, "error").await;
    assert_eq!(
        (&e["code"], &e["fatal"]),
        (&json!(code), &json!(fatal)),
        "{e}"
    );
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains(words)),
        "{words:?} not in {e}"
    );
}

/// A one-use speaker invite signed by `host` for `meeting`, valid for an hour.
pub fn one_use(host: &Keypair, meeting: &str, id: &str) -> String {
    one_use_for(host, meeting, id, None)
}

/// [`one_use`], bound to `invitee`'s key when given.
pub fn one_use_for(host: &Keypair, meeting: &str, id: &str, invitee: Option<&Keypair>) -> String {
    encode_token(&host.sign(Invite {
        meeting: meeting.into(),
        id: id.into(),
        role: Role::Speaker,
        expires_ms: now_ms() + 3_600_000,
        max_uses: Some(1),
        invitee: invitee.map(Keypair::public),
        parent: None,
    }))
}

/// This node's peer id, as `GET /api/node` says.
pub async fn node_id_of(port: u16) -> String {
    let (_, body) = http(port, "GET", "/api/node", "", "").await;
    let v: Value = serde_json::from_str(&body).expect("node info");
    v["id"].as_str().expect("id").to_owned()
}

/// Two nodes on loopback, their data under `dir`: A, and B, which dialled A at its start.
pub struct TwoNodes {
    pub dir: std::path::PathBuf,
    pub a: Node,
    /// A's libp2p (QUIC) port and peer id.
    pub a_p2p: u16,
    pub a_id: String,
    pub b: Node,
    /// B's libp2p (QUIC) port.
    pub b_p2p: u16,
}

pub async fn two_nodes(tag: &str) -> TwoNodes {
    let dir = std::env::temp_dir().join(format!("veche-raw-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (a_dir, b_dir) = (dir.join("a"), dir.join("b"));
    for d in [&a_dir, &b_dir] {
        std::fs::create_dir_all(d).expect("dir");
    }
    let a_p2p = free_udp_port();
    let a = start_node_in(&a_dir, a_p2p).await;
    let a_id = node_id_of(a.http_port).await;
    let boot = format!("/ip4/127.0.0.1/udp/{a_p2p}/quic-v1/p2p/{a_id}");
    let b_p2p = free_udp_port();
    let b = start_node_with(&b_dir, b_p2p, &["--bootstrap", &boot]).await;
    TwoNodes {
        dir,
        a,
        a_p2p,
        a_id,
        b,
        b_p2p,
    }
}

/// Have node `b` learn `meeting` (hosted by `host`) from node `a_id`, as its link would.
pub async fn learn_meeting(b_port: u16, meeting: &str, a_id: &str, host: &Keypair) {
    let path = format!(
        "/api/meetings/{meeting}?node={a_id}&host={}",
        host.public().pin()
    );
    let (status, body) = http(b_port, "GET", &path, "", "").await;
    assert_eq!(status, 200, "B learns the meeting: {body}");
}

/// Wait (up to 20 s) until the node on `port` lists `n` people in `meeting`; whether it
/// did.
pub async fn people_at(port: u16, meeting: &str, n: usize) -> bool {
    for _ in 0..100 {
        let path = format!("/api/meetings/{meeting}/people");
        let (_, body) = http(port, "GET", &path, "", "").await;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if v["participants"].as_array().map_or(0, Vec::len) == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The chat texts a socket hears within `wait` (whatever else comes is passed over).
pub async fn chat_heard(ws: &mut Ws, wait: Duration) -> Vec<String> {
    let mut heard = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(v)) = tokio::time::timeout_at(deadline, next(ws)).await {
        if v["type"] == "chat" {
            heard.push(v["message"]["text"].as_str().unwrap_or_default().to_owned());
        }
    }
    heard
}
