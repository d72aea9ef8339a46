//! Signed moderation across two nodes on a LAN (network namespaces): the host's browser on
//! node A starts the meeting (its key signs it), Bob joins through node B, which gets the
//! host's document with the meeting. Actions signed by someone who is neither host nor
//! moderator are refused by the node they reach, on both nodes; the host's mute of Bob is
//! checked by node B itself, which then withholds Bob's microphone from everyone.
//!
//! Runs as root (namespaces, veth, mDNS inside the lab).

mod support;

use std::time::Duration;

use support::{audio_from, click_row, forged_mute, host_starts, lan_nodes, wait_text, NatLab};

const BASE: &str = "http://localhost:7300";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_check_moderation_and_the_hosts_mute_holds_across() {
    let lab = NatLab::up("modx", "cone");
    let nodes = lan_nodes(&lab, &["lan1a", "lan1b"]).await;
    let a_id = nodes[0].1.clone();

    let mut ada = lab.browser("lan1a", &format!("{BASE}/")).await;
    let path = host_starts(&mut ada, "Two schools", &[], "Ada").await;
    let mut bob = lab
        .browser(
            "lan1b",
            &format!("{BASE}{path}?node={a_id}&name=Bob&autojoin=1"),
        )
        .await;
    let mut cy = lab
        .browser("lan1a", &format!("{BASE}{path}?name=Cy&autojoin=1"))
        .await;
    ada.wait_for(
        "Ada hearing Bob across the nodes",
        "veche.stats().then(s => s.inbound.some(i => i.name === 'Bob' && i.source === 'mic' && i.packetsReceived > 20) || null)",
        Duration::from_secs(60),
    )
    .await;
    // Node B has the host's document: it says so in the meeting's API.
    let on_b = lab
        .get("lan1b", &format!("/api/meetings{}", &path[2..]))
        .await;
    assert_eq!(on_b["signed"], true, "{on_b}");

    // Neither Bob (through B) nor Cy (on A) may mute anyone: each node refuses.
    forged_mute(&mut bob, "Bob", "Ada").await;
    forged_mute(&mut cy, "Cy", "Bob").await;

    // The host mutes Bob, who is on the other node: B checks the signature and withholds.
    click_row(&mut ada, "Bob", "mute", false).await;
    wait_text(
        &mut bob,
        "Bob told he is muted (by node B)",
        "The host muted you",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (a0, c0) = (
        audio_from(&mut ada, "Bob").await,
        audio_from(&mut cy, "Bob").await,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (a1, c1) = (
        audio_from(&mut ada, "Bob").await,
        audio_from(&mut cy, "Bob").await,
    );
    assert_eq!(
        (a1, c1),
        (a0, c0),
        "Bob's microphone must reach nobody on A"
    );
    // Cy is still heard: nothing else changed.
    let cy0 = audio_from(&mut ada, "Cy").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(audio_from(&mut ada, "Cy").await > cy0);
}
