//! Signed moderation across two nodes on a LAN (network namespaces): the host's browser on
//! node A starts the meeting (its key signs it), Bob joins through node B, which gets the
//! host's document with the meeting. Actions signed by someone who is neither host nor
//! moderator are refused by the node they reach, on both nodes; the host's mute of Bob is
//! checked by node B itself, which then withholds Bob's microphone from everyone. An invite the
//! host withdraws on node A admits nobody at node B (told at once) nor at node C, which learns
//! the meeting after the withdrawal: the withdrawn link's holder is refused by A's rules (C
//! learns nothing for her), and once a validly invited person is let in through C the
//! revocation comes with the host's document and C refuses the link itself; the host's end
//! then reaches B and C.
//!
//! Runs as root (namespaces, veth, mDNS inside the lab).

mod support;

use std::time::Duration;

use support::{
    audio_from, click, click_row, forged_mute, host_starts, lan_nodes, make_invite, wait_text,
    withdraw_invite, NatLab,
};

const BASE: &str = "http://localhost:7300";

/// One lab at a time: each holds several nodes and browsers and the suite has two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_check_moderation_and_the_hosts_mute_holds_across() {
    let _serial = SERIAL.lock().await;
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

/// A link with `query` added to its query string, keeping its fragment.
fn with_query(link: &str, query: &str) -> String {
    let (page, fragment) = link.split_once('#').unwrap_or((link, ""));
    let sep = if page.contains('?') { '&' } else { '?' };
    format!("{page}{sep}{query}#{fragment}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_withdrawn_at_the_host_node_admits_nobody_at_the_other_nodes() {
    let _serial = SERIAL.lock().await;
    let lab = NatLab::up("revx", "cone");
    let nodes = lan_nodes(&lab, &["lan1a", "lan1b", "lan1c"]).await;
    let b_id = nodes[1].1.clone();

    let mut ada = lab.browser("lan1a", &format!("{BASE}/")).await;
    host_starts(&mut ada, "Invited only", &["new-invite-only"], "Ada").await;
    let link = make_invite(&mut ada, "speaker").await;
    assert!(
        link.contains("?node="),
        "the link names the host node: {link}"
    );

    // Bob comes in through node B with the invite: B learned the meeting from A.
    let mut bob = lab
        .browser("lan1b", &with_query(&link, "name=Bob&autojoin=1"))
        .await;
    bob.wait_for(
        "Bob in through node B, as a speaker",
        "(window.veche && veche.state().joined && veche.state().role === 'speaker') || null",
        Duration::from_secs(45),
    )
    .await;
    // Node A has a media link to B by now (Bob's tracks come over it): B is one of the
    // meeting's nodes the revocation goes to.
    ada.wait_for(
        "Ada hearing Bob across the nodes",
        "veche.stats().then(s => s.inbound.some(i => i.name === 'Bob' && i.source === 'mic' && i.packetsReceived > 0) || null)",
        Duration::from_secs(60),
    )
    .await;

    // The host withdraws the invite on node A.
    withdraw_invite(&mut ada).await;

    // Node B heard of it: the same link no longer admits anyone there.
    let mut late = lab
        .browser("lan1b", &with_query(&link, "name=Late&autojoin=1"))
        .await;
    wait_text(
        &mut late,
        "the withdrawn link refused at node B",
        "This invite was withdrawn by the host",
    )
    .await;
    // A second invite, still valid.
    let link2 = make_invite(&mut ada, "speaker").await;
    assert_ne!(link2, link);

    // Node C knows nothing of the meeting. The withdrawn link's holder is its first person:
    // C asks A for the meeting with her proof, and A's rules refuse her (C learns nothing).
    let mut cyd = lab
        .browser("lan1c", &with_query(&link, "name=Cyd&autojoin=1"))
        .await;
    wait_text(
        &mut cyd,
        "the withdrawn link refused for node C",
        "This invite was withdrawn by the host",
    )
    .await;
    // Dee, with the valid link, is let in: C gets the host's document and its history.
    let mut dee = lab
        .browser("lan1c", &with_query(&link2, "name=Dee&autojoin=1"))
        .await;
    dee.wait_for(
        "Dee in through node C",
        "(window.veche && veche.state().joined) || null",
        Duration::from_secs(45),
    )
    .await;
    // Now C refuses the withdrawn link by its own copy: the revocation came with the meeting.
    let mut cy2 = lab
        .browser("lan1c", &with_query(&link, "name=Cy2&autojoin=1"))
        .await;
    wait_text(
        &mut cy2,
        "the withdrawn link refused at node C",
        "This invite was withdrawn by the host",
    )
    .await;

    // The host ends the meeting: B and C act on it.
    click(
        &mut ada,
        "the end button",
        ".people-list button[data-action=\"end\"]",
    )
    .await;
    wait_text(
        &mut bob,
        "Bob at node B told the meeting ended",
        "The host ended the meeting",
    )
    .await;
    wait_text(
        &mut dee,
        "Dee at node C told the meeting ended",
        "The host ended the meeting",
    )
    .await;
    let mut eve = lab
        .browser("lan1c", &with_query(&link2, "name=Eve&autojoin=1"))
        .await;
    wait_text(
        &mut eve,
        "the ended meeting refused at node C",
        "This meeting has ended",
    )
    .await;
    println!("node B ({b_id}) and node C refuse the withdrawn invite and the ended meeting");
    for b in [ada, bob, late, cyd, dee, cy2, eve] {
        b.close().await;
    }
}
