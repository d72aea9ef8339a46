//! Firefox in a meeting with Chromium, both real and headless: each decodes the other's
//! camera and hears the other; Firefox publishes its camera in simulcast layers, the node
//! forwards to each Chromium viewer the one its tile needs (a small window the smallest)
//! and pauses at Firefox the one nobody watches; Firefox gets Chromium's layers the same
//! way; a tile Firefox hides stops receiving video (its sound goes on), and comes
//! back when shown.
//!
//! Runs as root (it makes a network namespace so the browsers' traffic stays inside it).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{
    assert_growing, create_and_enter, receives, reception, sent_layer, sent_layers, Lab,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_and_chromium_see_and_hear_each_other_and_firefox_sends_layers() {
    let lab = Lab::new("fox");
    let node = lab.local_node().await;
    let base = node.base();

    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    let id = create_and_enter(&mut ada, &base, "Foxes", "Ada").await;
    let mut fox = lab
        .firefox(&format!("{base}/m/{id}?name=Fox&autojoin=1"), &[])
        .await;
    let version = fox.eval("navigator.userAgent").await.unwrap_or(Value::Null);
    println!("firefox: {version}");
    let mut cy = lab
        .browser(
            &format!("{base}/m/{id}?name=Cy&autojoin=1"),
            &["--window-size=800,500"],
        )
        .await;

    for (b, who, other) in [(&mut ada, "Ada", "Fox"), (&mut fox, "Fox", "Ada")] {
        b.wait_for(
            &format!("{who} decoding {other}'s camera"),
            &format!(
                "veche.stats().then(s => s.inbound.some(i => i.name === {other:?} && i.source === 'camera' && i.framesDecoded > 10) || null)"
            ),
            Duration::from_secs(60),
        )
        .await;
    }
    assert_growing(
        &mut [("Ada", &mut ada), ("Fox", &mut fox)],
        &[("Ada", "Fox"), ("Fox", "Ada")],
    )
    .await;

    // Firefox sends its camera in layers (the page asks for three of its 1280x720); the
    // node forwards to each viewer the one its tile needs: Cy's small window the smallest.
    let layers = sent_layers(&mut fox, "camera").await;
    println!("firefox: Fox's camera layers (rid, frames, keyframes, width): {layers:?}");
    let mut rids: Vec<&str> = layers.iter().map(|l| l.0.as_str()).collect();
    rids.sort();
    assert_eq!(
        rids,
        ["f", "h", "q"],
        "Firefox sends three layers: {layers:?}"
    );
    let small = cy
        .wait_for(
            "Cy decoding Fox's smallest layer",
            "veche.stats().then(s => { const i = s.inbound.find(i => i.name === 'Fox' && i.source === 'camera');
               return i && i.framesDecoded > 10 && i.frameWidth > 0 && i.frameWidth <= 400 ? i.frameWidth : null; })",
            Duration::from_secs(45),
        )
        .await;
    // Ada's tile is larger: she gets a larger layer (once her link's estimate has grown
    // to carry it, within seconds).
    let ada_w = ada
        .wait_for(
            "Ada decoding a larger layer of Fox than Cy",
            &format!(
                "veche.stats().then(s => {{ const i = s.inbound.find(i => i.name === 'Fox' && i.source === 'camera');
                   return i && i.framesDecoded > 10 && i.frameWidth > {small} ? i.frameWidth : null; }})"
            ),
            Duration::from_secs(30),
        )
        .await;
    println!("firefox: Cy decodes Fox at {small} px wide, Ada (a larger tile) at {ada_w}");
    // The layer neither watches stops being encoded in Firefox (the node tells its page
    // to pause it): after the node's hold-off, at most 40 s here, its frames stay flat.
    let fox_id = ada
        .eval("veche.state().participants.find(p => p.name === 'Fox').id")
        .await
        .expect("Fox's id");
    let mut idle = None;
    for _ in 0..10 {
        let watched: Vec<String> = [
            reception(&mut ada, "Ada").await,
            reception(&mut ada, "Cy").await,
        ]
        .iter()
        .flat_map(|r| {
            r["videos"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|v| v["source"] == "camera" && v["publisher"] == fox_id)
                .map(|v| v["carries"].as_str().unwrap_or("").to_owned())
        })
        .collect();
        let a = sent_layers(&mut fox, "camera").await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let b = sent_layers(&mut fox, "camera").await;
        let unwatched = ["q", "h", "f"]
            .into_iter()
            .find(|rid| !watched.iter().any(|w| w == rid));
        if let Some(rid) = unwatched {
            if sent_layer(&a, rid).1 == sent_layer(&b, rid).1 {
                idle = Some((rid, watched, a, b));
                break;
            }
        }
    }
    let Some((rid, watched, a, b)) = idle else {
        panic!(
            "a layer of Fox's nobody watches is still encoded after 40 s: {:?}",
            sent_layers(&mut fox, "camera").await
        );
    };
    println!("firefox: viewers carry {watched:?} of Fox's camera; {rid} paused: {a:?} -> {b:?}");
    for w in &watched {
        assert!(
            sent_layer(&b, w).1 > sent_layer(&a, w).1,
            "the watched layer {w} goes on: {a:?} -> {b:?}"
        );
    }

    // Firefox in its large window gets a larger layer of Chromium's camera than Cy.
    let fox_w = fox
        .wait_for(
            "Fox decoding a larger layer of Ada than Cy's smallest",
            "veche.stats().then(s => { const i = s.inbound.find(i => i.name === 'Ada' && i.source === 'camera');
               return i && i.framesDecoded > 10 && i.frameWidth > 400 ? i.frameWidth : null; })",
            Duration::from_secs(30),
        )
        .await;
    let window = fox
        .eval("[innerWidth, innerHeight, document.querySelector('.tile:not(.self)') ? document.querySelector('.tile:not(.self)').offsetHeight : 0]")
        .await
        .unwrap_or(Value::Null);
    println!("firefox: Fox (window and tile {window}) decodes Ada at {fox_w} px wide");

    // Fox hides Ada's tile: her video stops within 2 s (bytes flat for 3 s) while her
    // voice goes on; shown again, it decodes again.
    let hide = "(() => { const p = veche.state().participants.find(p => p.name === 'Ada');
        const b = p && document.querySelector(`.tile[data-participant=\"${p.id}\"][data-source=\"camera\"] .tile-hide`);
        if (!b) return null; b.click(); return b.textContent; })()";
    assert_eq!(fox.eval(hide).await.expect("hide"), "Show video");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (v0, _, _) = receives(&mut fox, "Ada", "camera").await;
    let (a0, _, _) = receives(&mut fox, "Ada", "mic").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (v1, _, _) = receives(&mut fox, "Ada", "camera").await;
    let (a1, _, _) = receives(&mut fox, "Ada", "mic").await;
    println!(
        "firefox: Fox's bytes of Ada's hidden video over 3 s: {v0} -> {v1}; her audio {a0} -> {a1}"
    );
    assert!(a1 > a0, "Ada's voice goes on: {a0} -> {a1}");
    assert_eq!(v1, v0, "a hidden tile receives no video");
    assert_eq!(fox.eval(hide).await.expect("show"), "Hide video");
    let (_, f0, _) = receives(&mut fox, "Ada", "camera").await;
    fox.wait_for(
        "Fox decoding Ada's video again",
        &format!(
            "veche.stats().then(s => {{ const i = s.inbound.find(i => i.name === 'Ada' && i.source === 'camera');
               return i && i.framesDecoded > {} ? i.framesDecoded : null; }})",
            f0 + 20
        ),
        Duration::from_secs(15),
    )
    .await;
}
