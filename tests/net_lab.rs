//! Nodes finding, reaching and trusting each other across real NATs: network namespaces with
//! iptables NAT built by `tests/lab/netlab.sh` (root; CI is root).

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{node_id, until, NatLab};

/// One lab at a time: each holds several nodes and the suite runs on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn peer<'a>(peers: &'a [Value], id: &str) -> Option<&'a Value> {
    peers.iter().find(|p| p["id"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_lan_find_each_other_by_mdns() {
    let _serial = SERIAL.lock().await;
    let lab = NatLab::up("mdns", "cone");
    let start = Instant::now();
    let mut nodes = Vec::new();
    for host in ["lan1a", "lan1b", "lan1c"] {
        nodes.push((host, lab.node(host, host, &[]).await));
    }
    let ids: Vec<String> = nodes.iter().map(|(_, n)| node_id(n)).collect();
    for (i, (host, _)) in nodes.iter().enumerate() {
        let others: Vec<&String> = ids
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, id)| id)
            .collect();
        until(
            &format!("{host} connected to both others"),
            Duration::from_secs(30),
            || async {
                let peers = lab.peers(host).await;
                others
                    .iter()
                    .all(|id| peer(&peers, id).is_some())
                    .then_some(())
            },
        )
        .await;
    }
    println!(
        "three nodes found each other by mDNS in {:?}",
        start.elapsed()
    );
    // The node behind the other NAT heard nothing: multicast stays on its LAN.
    let outsider = lab.node("lan2a", "lan2a", &[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        lab.peers("lan2a").await.is_empty(),
        "mDNS must not cross the NAT"
    );
    drop(outsider);
}

/// The lab's relay and two NATed nodes (see `NatLab::relay_and_two_nats`); returns
/// (relay, a, b, a_id, b_id).
async fn relay_and_two_nats(
    lab: &NatLab,
) -> (support::Node, support::Node, support::Node, String, String) {
    let (relay, a, b) = lab.relay_and_two_nats().await;
    let (a_id, b_id) = (node_id(&a), node_id(&b));
    // Connected to the relay is not yet holding a reservation there, and nothing reports
    // the other node's reservation: give both a moment before anyone dials through it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    (relay, a, b, a_id, b_id)
}

async fn hello(lab: &NatLab, host: &str, peer_id: &str) -> Value {
    let out = lab
        .veche(host, &["hello", peer_id])
        .await
        .unwrap_or_else(|e| panic!("hello from {host} failed: {e}"));
    serde_json::from_str(&out).expect("hello json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cone_nats_connect_through_the_relay_then_hole_punch_to_direct() {
    let _serial = SERIAL.lock().await;
    let lab = NatLab::up("cone", "cone");
    let (_relay, _a, _b, a_id, b_id) = relay_and_two_nats(&lab).await;

    let started = Instant::now();
    let first = hello(&lab, "lan1a", &b_id).await;
    assert_eq!(first["response"]["type"], "hello", "{first}");
    assert_eq!(first["response"]["name"], "home-b");
    // DCUtR upgrades the relayed connection to a direct one.
    let direct = until(
        "a direct connection between the NATed nodes",
        Duration::from_secs(30),
        || async {
            let peers = lab.peers("lan1a").await;
            peer(&peers, &b_id).filter(|p| p["direct"] == true).cloned()
        },
    )
    .await;
    println!("hole punched in {:?}: {direct}", started.elapsed());
    assert!(
        !direct["address"]
            .as_str()
            .unwrap_or("")
            .contains("p2p-circuit"),
        "{direct}"
    );
    // A request round-trips, with the direct connection in place.
    let again = hello(&lab, "lan1a", &b_id).await;
    assert_eq!(again["response"]["name"], "home-b");
    assert_eq!(again["direct"], true, "{again}");
    // And the other way.
    let back = hello(&lab, "lan2a", &a_id).await;
    assert_eq!(back["response"]["name"], "home-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_nats_stay_relayed_and_requests_still_round_trip() {
    let _serial = SERIAL.lock().await;
    let lab = NatLab::up("sym", "symmetric");
    let (_relay, _a, _b, _a_id, b_id) = relay_and_two_nats(&lab).await;

    let first = hello(&lab, "lan1a", &b_id).await;
    assert_eq!(first["response"]["name"], "home-b", "{first}");
    // Give hole punching its chance (it retries a few times), then check it failed as it must.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let peers = lab.peers("lan1a").await;
    let b = peer(&peers, &b_id).unwrap_or_else(|| panic!("still connected to b: {peers:?}"));
    assert_eq!(
        b["direct"], false,
        "no direct path through symmetric NATs: {b}"
    );
    assert!(
        b["address"].as_str().unwrap_or("").contains("p2p-circuit"),
        "{b}"
    );
    let again = hello(&lab, "lan1a", &b_id).await;
    assert_eq!(again["response"]["name"], "home-b");
    assert_eq!(again["direct"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_finds_a_known_peer_from_its_peer_book() {
    let _serial = SERIAL.lock().await;
    let lab = NatLab::up("book", "cone");
    let a = lab.node("lan1a", "a", &["--name", "first"]).await;
    let b = lab.node("lan1b", "b", &["--name", "second"]).await;
    let a_id = node_id(&a);
    until("b met a on the LAN", Duration::from_secs(30), || async {
        peer(&lab.peers("lan1b").await, &a_id).map(|_| ())
    })
    .await;
    // The book is written within a second of a change; let it land, then kill -9.
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.kill().await;
    let book = std::fs::read_to_string(lab.dir.join("b/peers.json")).expect("peer book written");
    assert!(book.contains(&a_id), "{book}");

    let b = lab
        .node("lan1b", "b", &["--name", "second", "--no-mdns"])
        .await;
    let started = Instant::now();
    until(
        "b reconnected to a from its peer book",
        Duration::from_secs(30),
        || async { peer(&lab.peers("lan1b").await, &a_id).map(|_| ()) },
    )
    .await;
    println!("reconnected from the peer book in {:?}", started.elapsed());
    drop(b);
}
