//! Three real headless Chromium browsers (fake camera, microphone and screen) in one meeting
//! on one node: video and audio from both others, chat, screen share, and a closed browser
//! disappearing for the others, and a newcomer after them carried on the m-lines they left;
//! a camera slow to start does not keep its owner out.
//!
//! Runs as root (it makes a network namespace so the browsers' traffic stays inside it).

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{assert_growing, inbound, num, Browser, Lab};

/// Wait until `b` decodes video (source `camera` or `screen`) from every name in `from`.
async fn wait_decoding(b: &mut Browser, who: &str, from: &[&str], source: &str) -> Value {
    let names: Vec<String> = from.iter().map(|n| format!("{n:?}")).collect();
    let js = format!(
        "(async () => {{ if (!window.veche) return null; const s = await veche.stats();
           const ok = [{}].every(n => s.inbound.some(i => i.name === n && i.source === {source:?} && i.framesDecoded > 0));
           return ok ? s : null; }})()",
        names.join(",")
    );
    b.wait_for(
        &format!("{who} decoding {source} from {from:?}"),
        &js,
        Duration::from_secs(45),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_browsers_see_hear_chat_share_and_leave() {
    let lab = Lab::new("three");
    let node = lab.local_node().await;
    let base = node.base();

    // Ada creates the meeting from the landing page, as a teacher would.
    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    ada.wait_for(
        "landing page",
        "location.href.startsWith('http:') && document.readyState === 'complete'",
        Duration::from_secs(20),
    )
    .await;
    let created = ada
        .eval("fetch('/api/meetings', {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({title: 'Physics 7B'})}).then(r => r.json())")
        .await
        .expect("create meeting");
    let id = created["id"].as_str().expect("meeting id").to_owned();
    let link = |name: &str| format!("{base}/m/{id}?name={name}&autojoin=1");
    ada.eval(&format!("location.href = {:?}", link("Ada")))
        .await
        .expect("navigate");

    let mut bob = lab.browser(&link("Bob"), &[]).await;
    let mut cy = lab.browser(&link("Cy"), &[]).await;

    // Everyone decodes both others' cameras and receives their audio.
    for (b, me, others) in [
        (&mut ada, "Ada", ["Bob", "Cy"]),
        (&mut bob, "Bob", ["Ada", "Cy"]),
        (&mut cy, "Cy", ["Ada", "Bob"]),
    ] {
        wait_decoding(b, me, &others, "camera").await;
        let js = format!(
            "(async () => {{ const s = await veche.stats(); return [{:?},{:?}].every(n => s.inbound.some(i => i.name === n && i.source === 'mic' && i.packetsReceived > 0)); }})()",
            others[0], others[1]
        );
        b.wait_for(
            &format!("{me} receiving audio from {others:?}"),
            &js,
            Duration::from_secs(30),
        )
        .await;
    }
    // The numbers keep growing: media flows, it did not just start and stall.
    assert_growing(
        &mut [("Ada", &mut ada), ("Bob", &mut bob), ("Cy", &mut cy)],
        &[
            ("Ada", "Bob"),
            ("Ada", "Cy"),
            ("Bob", "Ada"),
            ("Bob", "Cy"),
            ("Cy", "Ada"),
            ("Cy", "Bob"),
        ],
    )
    .await;

    // Chat: Ada types and sends; Bob and Cy see it with her name.
    ada.eval(
        "(() => { const i = document.querySelector('#chat-input'); i.value = 'Open your books at page 42'; \
         document.querySelector('#chat-send').click(); return true; })()",
    )
    .await
    .expect("send chat");
    for (b, me) in [(&mut bob, "Bob"), (&mut cy, "Cy")] {
        b.wait_for(
            &format!("chat at {me}"),
            "[...document.querySelectorAll('#chat-log .chat-msg')].some(m => m.querySelector('.chat-text').textContent === 'Open your books at page 42' && m.querySelector('.chat-name').textContent.includes('Ada'))",
            Duration::from_secs(10),
        )
        .await;
    }

    // Screen share: Bob shares; Ada and Cy decode it as an extra video track.
    bob.eval("document.querySelector('#btn-screen').click(), true")
        .await
        .expect("share");
    let s_ada = wait_decoding(&mut ada, "Ada", &["Bob"], "screen").await;
    let s_cy = wait_decoding(&mut cy, "Cy", &["Bob"], "screen").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (b, before, me) in [(&mut ada, s_ada, "Ada"), (&mut cy, s_cy, "Cy")] {
        let after = b.stats().await;
        let f0 = num(
            &inbound(&before, "Bob", "screen").expect("screen"),
            "framesDecoded",
        );
        let f1 = num(
            &inbound(&after, "Bob", "screen").expect("screen"),
            "framesDecoded",
        );
        println!("{me}: screen from Bob +{} frames in 2 s", f1 - f0);
        assert!(f1 > f0, "{me}'s screen frames from Bob stopped at {f1}");
        let cameras = after["inbound"]
            .as_array()
            .expect("inbound")
            .iter()
            .filter(|i| i["name"] == "Bob" && i["kind"] == "video" && num(i, "framesDecoded") > 0)
            .count();
        assert_eq!(cameras, 2, "{me} should decode Bob's camera and screen");
    }

    // Cy closes the browser: Ada and Bob see Cy gone within 10 s.
    cy.close().await;
    let closed = Instant::now();
    for (b, me) in [(&mut ada, "Ada"), (&mut bob, "Bob")] {
        b.wait_for(
            &format!("Cy gone at {me}"),
            "!veche.state().participants.some(p => p.name === 'Cy') && ![...document.querySelectorAll('.tile[data-participant]')].some(t => t.textContent.includes('Cy'))",
            Duration::from_secs(10),
        )
        .await;
    }
    println!(
        "a closed browser disappeared for the others in {:?}",
        closed.elapsed()
    );
    assert!(closed.elapsed() < Duration::from_secs(10));
    // The rest of the meeting goes on.
    wait_decoding(&mut ada, "Ada", &["Bob"], "camera").await;

    // Dan comes in after Cy: Ada and Bob get his camera and voice on the m-lines Cy's
    // tracks left, so their connections do not grow with every newcomer of the day.
    let _dan = lab.browser(&link("Dan"), &[]).await;
    for (b, me) in [(&mut ada, "Ada"), (&mut bob, "Bob")] {
        wait_decoding(b, me, &["Dan"], "camera").await;
        b.wait_for(
            &format!("{me} receiving audio from Dan"),
            "(async () => { const s = await veche.stats(); return s.inbound.some(i => i.name === 'Dan' && i.source === 'mic' && i.packetsReceived > 0); })()",
            Duration::from_secs(30),
        )
        .await;
        let lines = b
            .eval("veche.pc.remoteDescription.sdp.split('\\n').filter(l => l.startsWith('m=')).length")
            .await
            .expect("m-lines");
        // Their own three, and three for each of the two others.
        assert_eq!(lines, 9, "{me}'s connection has {lines} m-lines");
    }
    node.kill().await;
}

/// A camera that takes 40 s to start (held by another app, a slow driver) does not keep its
/// owner out: the page joins without it after 8 s, says so, and sends it once it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_slow_to_start_joins_without_it_and_is_sent_once_it_starts() {
    let lab = Lab::new("slowcam");
    let node = lab.local_node().await;
    let base = node.base();
    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    let id = support::create_meeting(&mut ada, "Slow camera").await;
    let link = |name: &str| format!("{base}/m/{id}?name={name}&autojoin=1");
    ada.eval(&format!("location.href = {:?}; true", link("Ada")))
        .await
        .expect("navigate");

    let mut bob = lab.browser("about:blank", &[]).await;
    bob.before_each_page(
        "{ const md = navigator.mediaDevices; if (md) { const gum = md.getUserMedia.bind(md); \
           md.getUserMedia = (c) => new Promise((r) => setTimeout(r, 40000)).then(() => gum(c)); } }",
    )
    .await;
    let asked = Instant::now();
    bob.eval(&format!("location.href = {:?}; true", link("Bob")))
        .await
        .expect("navigate");
    bob.wait_for(
        "Bob's page saying his devices are slow to start",
        "document.body.innerText.includes('slow to start') || null",
        Duration::from_secs(30),
    )
    .await;
    bob.wait_for(
        "Bob in, without his devices yet",
        "(window.veche && veche.state().joined) || null",
        Duration::from_secs(30),
    )
    .await;
    let joined = asked.elapsed();
    assert!(
        joined < Duration::from_secs(40),
        "Bob joined only after {joined:?}: the page waited for the camera"
    );
    // His camera and microphone reach Ada once they start.
    wait_decoding(&mut ada, "Ada", &["Bob"], "camera").await;
    ada.wait_for(
        "Ada receiving Bob's audio",
        "veche.stats().then(s => s.inbound.some(i => i.name === 'Bob' && i.source === 'mic' && i.packetsReceived > 0))",
        Duration::from_secs(30),
    )
    .await;
    let sent = asked.elapsed();
    assert!(
        sent >= Duration::from_secs(40),
        "Bob's camera reached Ada after {sent:?}, before it started: the delay did not hold"
    );
    for b in [ada, bob] {
        b.close().await;
    }
}
