//! Several nodes in one process, on loopback: a peer that sends malformed and oversized
//! requests gets precise errors, and a third node's requests keep being served meanwhile.

use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use prometheus_client::registry::Registry;
use veche_net::protocol::{ErrorCode, NodeHello, RawRequest, Response, MAX_REQUEST};
use veche_net::{start, Multiaddr, NetConfig, NetHandle};

fn hello(name: &str) -> veche_net::HelloSource {
    let name = name.to_owned();
    Arc::new(move || NodeHello {
        name: name.clone(),
        version: "test".into(),
        protocol: 1,
        relay: false,
        meetings: vec![],
    })
}

fn node(name: &str, port: u16, bootstrap: Vec<Multiaddr>) -> (NetHandle, Keypair) {
    let key = Keypair::generate_ed25519();
    let dir = std::env::temp_dir().join(format!("veche-net-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = NetConfig {
        listen: vec![format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
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
