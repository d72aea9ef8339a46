//! Several nodes in one process, on loopback: a peer that sends malformed and oversized
//! requests gets precise errors, and a third node's requests keep being served meanwhile; a
//! flood of connections from one address or one peer is refused past its share while another
//! address is still served.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{dummy, ConnectionId, SwarmEvent};
use tokio::sync::{mpsc, oneshot};

use libp2p::identity::Keypair;
use prometheus_client::registry::Registry;
use veche_net::protocol::{ErrorCode, NodeHello, RawRequest, Response, MAX_REQUEST};
use veche_net::{start, Multiaddr, NetConfig, NetHandle};

fn hello(name: &str) -> veche_net::HelloSource {
    let name = name.to_owned();
    Arc::new(move || NodeHello {
        name: name.clone(),
        version: "test".into(),
        protocol: veche_net::protocol::PROTOCOL_VERSION,
        relay: false,
        meetings: vec![],
    })
}

fn node(name: &str, port: u16, bootstrap: Vec<Multiaddr>) -> (NetHandle, Keypair) {
    node_at(name, "127.0.0.1", port, bootstrap)
}

/// A node listening (and so dialling) from `ip`, a loopback address.
fn node_at(name: &str, ip: &str, port: u16, bootstrap: Vec<Multiaddr>) -> (NetHandle, Keypair) {
    let key = Keypair::generate_ed25519();
    let dir = std::env::temp_dir().join(format!("veche-net-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = NetConfig {
        listen: vec![format!("/ip4/{ip}/udp/{port}/quic-v1")
            .parse()
            .expect("addr")],
        mdns: false,
        bootstrap,
        relay: false,
        external: vec![],
        name: name.into(),
        data_dir: dir,
    };
    let h = start(
        key.clone(),
        config,
        hello(name),
        None,
        &mut Registry::default(),
    )
    .expect("start");
    (h, key)
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_errors_and_others_are_still_served() {
    let port = free_udp_port();
    let (server, key) = node("server", port, vec![]);
    let server_id = key.public().to_peer_id();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{server_id}")
        .parse()
        .expect("addr");
    let (mallory, _) = node("mallory", free_udp_port(), vec![addr.clone()]);
    let (carol, _) = node("carol", free_udp_port(), vec![addr]);
    assert_eq!(server.local_peer_id, server_id);

    // Carol is served before, between and after Mallory's garbage.
    let ask = |h: NetHandle| async move {
        tokio::time::timeout(Duration::from_secs(20), h.hello(&server_id.to_string()))
            .await
            .expect("answer in 20 s")
    };
    let first = ask(carol.clone()).await.expect("carol served");
    assert!(
        matches!(first.response, Response::Hello(ref h) if h.name == "server"),
        "{first:?}"
    );

    for (bytes, code) in [
        (
            RawRequest::Bytes(b"\x00\x01garbage".to_vec()),
            ErrorCode::Malformed,
        ),
        (
            RawRequest::Bytes(b"{\"type\":\"no_such\"}".to_vec()),
            ErrorCode::Malformed,
        ),
        (
            RawRequest::Bytes(vec![b'{'; MAX_REQUEST + 1000]),
            ErrorCode::TooLarge,
        ),
    ] {
        let r = tokio::time::timeout(Duration::from_secs(20), mallory.send_raw(server_id, bytes))
            .await
            .expect("answer in 20 s")
            .expect("answered, not dropped");
        match r.response {
            Response::Error { code: got, message } => {
                assert_eq!(got, code);
                assert!(!message.is_empty());
            }
            other => panic!("expected {code:?}, got {other:?}"),
        }
        let again = ask(carol.clone()).await.expect("carol still served");
        assert!(matches!(again.response, Response::Hello(_)));
    }
    // Mallory is still connected and is served when it behaves: nothing was torn down.
    let ok = ask(mallory.clone())
        .await
        .expect("mallory served when it behaves");
    assert!(matches!(ok.response, Response::Hello(_)));
    let peers = server.peers().await;
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert!(peers.iter().all(|p| p.direct));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_this_protocol_version_is_named_as_such() {
    // A node of another release speaks another `/veche/node/N` (here: none at all); asking
    // it says why there is no answer, instead of a bare timeout.
    let port = free_udp_port();
    let (server, key) = node("asker", port, vec![]);
    let addr: Multiaddr = format!(
        "/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{}",
        key.public().to_peer_id()
    )
    .parse()
    .expect("addr");
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (_stop, other) = bare_peer(addr, 1, seen_tx);
    assert_eq!(settle(&mut seen, 1).await, 1, "the other peer connected");
    let asked = tokio::time::timeout(Duration::from_secs(20), server.hello(&other.to_string()))
        .await
        .expect("an outcome in 20 s");
    match asked {
        Err(veche_net::HelloError::Unreachable(why)) => assert!(
            why.contains("does not speak this version of the node protocol (/veche/node/2)"),
            "{why}"
        ),
        other => panic!("expected the version named, got {other:?}"),
    }
}

/// What a bare libp2p peer (no veche protocol at all) saw of one of its connections to the
/// node (connection ids are unique in the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Up(ConnectionId),
    Down(ConnectionId),
}

/// A bare libp2p peer with a new identity, dialling `to` from 127.0.0.1 `dials` times (each a
/// connection of its own); it reports each connection's ups and downs, and stops when the
/// returned sender is dropped (or after two minutes).
fn bare_peer(
    to: Multiaddr,
    dials: usize,
    seen: mpsc::UnboundedSender<Seen>,
) -> (oneshot::Sender<()>, libp2p::PeerId) {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| dummy::Behaviour)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    let id = *swarm.local_peer_id();
    let (stop, mut stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        swarm
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
            .expect("listen");
        let mut dialled = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep_until(deadline) => return,
                ev = swarm.select_next_some() => match ev {
                    SwarmEvent::NewListenAddr { .. } => {
                        while dialled < dials {
                            dialled += 1;
                            // An unknown peer id: a new connection at every dial.
                            let opts = DialOpts::unknown_peer_id().address(to.clone()).build();
                            swarm.dial(opts).expect("dial");
                        }
                    }
                    SwarmEvent::ConnectionEstablished { connection_id, .. } => {
                        let _ = seen.send(Seen::Up(connection_id));
                    }
                    SwarmEvent::ConnectionClosed { connection_id, .. }
                    | SwarmEvent::OutgoingConnectionError { connection_id, .. } => {
                        let _ = seen.send(Seen::Down(connection_id));
                    }
                    _ => {}
                },
            }
        }
    });
    (stop, id)
}

/// Wait until `n` dials came to an outcome (up, or refused), then 2 s more for late closes;
/// how many connections are still up.
async fn settle(rx: &mut mpsc::UnboundedReceiver<Seen>, n: usize) -> usize {
    let (mut up, mut down) = (HashSet::new(), HashSet::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut quiet_until = None;
    loop {
        let outcomes = up.union(&down).count();
        if outcomes >= n && quiet_until.is_none() {
            quiet_until = Some(tokio::time::Instant::now() + Duration::from_secs(2));
        }
        let until = quiet_until.unwrap_or(deadline);
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(Seen::Up(c))) => {
                up.insert(c);
            }
            Ok(Some(Seen::Down(c))) => {
                down.insert(c);
            }
            Ok(None) => panic!("the peers stopped before {n} dials came to an outcome"),
            Err(_) if quiet_until.is_some() => return up.difference(&down).count(),
            Err(_) => panic!("{outcomes} of {n} dials came to an outcome in 40 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_from_one_address_is_refused_past_its_share() {
    use veche_net::limits::{MAX_INCOMING_PER_IP, MAX_PER_PEER};
    let port = free_udp_port();
    let (server, key) = node("flooded", port, vec![]);
    let server_id = key.public().to_peer_id();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{server_id}")
        .parse()
        .expect("addr");

    // One peer opening connection after connection: its share, no more.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_one, one) = bare_peer(addr.clone(), MAX_PER_PEER as usize + 4, tx);
    let up = settle(&mut rx, MAX_PER_PEER as usize + 4).await;
    assert_eq!(
        up, MAX_PER_PEER as usize,
        "connections of one peer still up"
    );
    let peers = server.peers().await;
    let theirs = peers
        .iter()
        .find(|p| p.id == one.to_string())
        .map(|p| p.connections.len());
    assert_eq!(theirs, Some(MAX_PER_PEER as usize), "{peers:?}");
    drop(stop_one);

    // Many new identities from one address: its share, no more (a positive control first:
    // the share itself is let in).
    let flood = MAX_INCOMING_PER_IP + 8;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut stops = Vec::new();
    for _ in 0..flood {
        stops.push(bare_peer(addr.clone(), 1, tx.clone()).0);
    }
    let up = settle(&mut rx, flood).await;
    assert_eq!(
        up, MAX_INCOMING_PER_IP,
        "connections from 127.0.0.1 still up"
    );
    let from_flood = server.peers().await.len();
    assert_eq!(from_flood, MAX_INCOMING_PER_IP, "peers the node holds");

    // A node at another address is still let in and served.
    let (carol, _) = node_at("carol", "127.0.0.2", free_udp_port(), vec![addr.clone()]);
    let hello = tokio::time::timeout(Duration::from_secs(20), carol.hello(&server_id.to_string()))
        .await
        .expect("answer in 20 s")
        .expect("carol served");
    assert!(
        matches!(hello.response, Response::Hello(ref h) if h.name == "flooded"),
        "{hello:?}"
    );

    // The flood leaves: its share is free again for whoever comes next from that address.
    drop(stops);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.peers().await.len() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flood's connections stayed counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_stop, _) = bare_peer(addr, 1, tx);
    assert_eq!(
        settle(&mut rx, 1).await,
        1,
        "a newcomer from 127.0.0.1 after the flood left"
    );
}
