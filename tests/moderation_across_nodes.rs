//! Signed moderation across two nodes on a LAN (network namespaces): the host's browser on
//! node A starts the meeting (its key signs it), Bob joins through node B, which gets the
//! host's document with the meeting. Actions signed by someone who is neither host nor
//! moderator are refused by the node they reach, on both nodes; the host's mute of Bob is
//! checked by node B itself, which then withholds Bob's microphone from everyone.
//!
//! Runs as root (namespaces, veth, mDNS inside the lab).

mod support;

use std::time::Duration;

use support::{lan_nodes, Browser, NatLab};

const BASE: &str = "http://localhost:7300";

async fn audio_from(b: &mut Browser, name: &str) -> u64 {
    b.eval(&format!(
        "veche.stats().then(s => s.inbound.filter(i => i.name === {name:?} && i.source === 'mic').reduce((a, i) => a + i.bytesReceived, 0))"
    ))
    .await
    .expect("stats")
    .as_u64()
    .unwrap_or(0)
}

/// `b` signs a mute of `target` with its own key and sends it; the page must show the
/// node's refusal.
async fn forged_mute(b: &mut Browser, who: &str, target: &str) {
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
    b.wait_for(
        &format!("{who}'s node refusing a mute signed by {who}"),
        "document.body.innerText.includes('only the host or a moderator may do this') || null",
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_check_moderation_and_the_hosts_mute_holds_across() {
    let lab = NatLab::up("modx", "cone");
    let nodes = lan_nodes(&lab, &["lan1a", "lan1b"]).await;
    let a_id = nodes[0].1.clone();

    let mut ada = lab.browser("lan1a", &format!("{BASE}/")).await;
    ada.wait_for(
        "start page",
        "(document.readyState === 'complete' && document.getElementById('start-btn')) ? true : null",
        Duration::from_secs(20),
    )
    .await;
    ada.eval("document.getElementById('new-title').value = 'Two schools'; document.getElementById('start-btn').click(); true")
        .await
        .expect("start");
    let path = ada
        .wait_for(
            "the meeting page",
            "location.pathname.startsWith('/m/') ? location.pathname : null",
            Duration::from_secs(20),
        )
        .await;
    let path = path.as_str().expect("path").to_owned();
    ada.eval(&format!(
        "location.href = '{BASE}{path}?name=Ada&autojoin=1'"
    ))
    .await
    .expect("join");
    ada.wait_for(
        "Ada in as the host",
        "(window.veche && veche.state().joined && veche.state().role === 'host') || null",
        Duration::from_secs(30),
    )
    .await;
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
    let js = "(() => { const li = [...document.querySelectorAll('.people-list li.person[data-participant]')]
        .find(l => l.querySelector('.person-name span')?.textContent === 'Bob');
      const b = li && li.querySelector('button[data-action=\"mute\"]');
      if (!b) return null; b.click(); return true; })()";
    ada.wait_for("the mute button for Bob", js, Duration::from_secs(20))
        .await;
    bob.wait_for(
        "Bob told he is muted (by node B)",
        "document.body.innerText.includes('The host muted you') || null",
        Duration::from_secs(15),
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
