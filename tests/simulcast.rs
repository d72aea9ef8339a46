//! Simulcast in real headless Chromium: a 1280x720 camera published in three layers, a
//! viewer with a large window getting the full one and a viewer with a small window the
//! quarter one, with no keyframe storm; a layer nobody watches stops being encoded; a tile
//! hidden by its viewer stops receiving video within two seconds (its sound goes on), and
//! gets it back when shown again; the node says who speaks, and a muted voice is not one;
//! a camera pinned by a viewer takes the big spot and keeps its full layer while the others,
//! in the strip, get smaller ones.
//!
//! Runs as root (it makes a network namespace so the browsers' traffic stays inside it).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{create_and_enter, receives, reception, sent_layer, sent_layers, Browser, Lab};

/// Ada's outbound camera layers, rid → (framesEncoded, keyFramesEncoded, frameWidth).
async fn layers(ada: &mut Browser) -> Vec<(String, u64, u64, u64)> {
    sent_layers(ada, "camera").await
}

fn layer<'a>(all: &'a [(String, u64, u64, u64)], rid: &str) -> &'a (String, u64, u64, u64) {
    sent_layer(all, rid)
}

/// Wait until `b` decodes `name`'s camera at a width `ok` accepts; returns the width.
async fn decoding_at(b: &mut Browser, who: &str, name: &str, ok: &str) -> u64 {
    let js = format!(
        "veche.stats().then(s => {{ const i = s.inbound.find(i => i.name === {name:?} && i.source === 'camera');
           return i && i.framesDecoded > 10 && ({ok})(i.frameWidth) ? i.frameWidth : null; }})"
    );
    let v = b
        .wait_for(
            &format!("{who} decoding {name}'s camera ({ok})"),
            &js,
            Duration::from_secs(45),
        )
        .await;
    v.as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_viewer_gets_the_layer_its_tile_needs_and_unwatched_video_stops() {
    let lab = Lab::new("simul");
    let node = lab.local_node().await;
    let base = node.base();

    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    let id = create_and_enter(&mut ada, &base, "Layers", "Ada").await;
    let link = |name: &str| format!("{base}/m/{id}?name={name}&autojoin=1");
    // Bob on a large screen, Cy in a small window.
    let mut bob = lab
        .browser(&link("Bob"), &["--window-size=1920,1200"])
        .await;
    let mut cy = lab.browser(&link("Cy"), &["--window-size=800,500"]).await;

    let big = decoding_at(&mut bob, "Bob", "Ada", "w => w >= 1200").await;
    let small = decoding_at(&mut cy, "Cy", "Ada", "w => w > 0 && w <= 400").await;
    let tile_height = |who: &str| {
        format!(
            "(() => {{ const p = veche.state().participants.find(p => p.name === {who:?});
               const t = p && document.querySelector(`.tile[data-participant=\"${{p.id}}\"][data-source=\"camera\"]`);
               return t ? t.offsetHeight : null; }})()"
        )
    };
    let bob_tile = bob.eval(&tile_height("Ada")).await.unwrap_or(Value::Null);
    let cy_tile = cy.eval(&tile_height("Ada")).await.unwrap_or(Value::Null);
    println!("simulcast: Bob's tile of Ada {bob_tile} px high gets {big} px wide, Cy's {cy_tile} px high gets {small} px wide");

    // Nobody watches the middle layer: after the node's hold-off Ada stops encoding it,
    // while the two that are watched go on (the positive control). Bob's link estimate
    // starts below what his two large tiles need and grows as the node probes it; until
    // then his tiles get smaller layers, h among them: wait (at most 40 s) until h is idle.
    let mut settled = None;
    for _ in 0..10 {
        let a = layers(&mut ada).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let b = layers(&mut ada).await;
        if a.len() == 3 && layer(&a, "h").1 == layer(&b, "h").1 {
            settled = Some(b);
            break;
        }
    }
    let Some(mut before) = settled else {
        panic!("h is still encoded 40 s on: {:?}", layers(&mut ada).await);
    };
    // Over 10 s in which both viewers kept what their tiles need (their links' estimates
    // on this shared machine dip now and then, and a dip rightly shrinks a stream to h for
    // a while: such a window is tried again, at most four times).
    let what_of_ada = |r: &Value| -> String {
        r["videos"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["source"] == "camera" && v["want"] != "off" && v["reason"] != "hidden")
            .map(|v| format!("{}/{}", v["want"], v["reason"]))
            .unwrap_or_default()
    };
    let mut after = before.clone();
    for attempt in 1..=4 {
        let b0 = what_of_ada(&reception(&mut ada, "Bob").await);
        tokio::time::sleep(Duration::from_secs(10)).await;
        after = layers(&mut ada).await;
        let b1 = what_of_ada(&reception(&mut ada, "Bob").await);
        let steady =
            b0 == b1 && b0.contains("view") && layer(&after, "h").1 == layer(&before, "h").1;
        println!("simulcast: window {attempt}: Bob's view of Ada {b0} -> {b1}");
        if steady || attempt == 4 {
            break;
        }
        before = after.clone();
    }
    println!("simulcast: Ada's layers (rid, frames, keyframes, width) over 10 s: {before:?} -> {after:?}");
    assert_eq!(
        before.len(),
        3,
        "a 1280x720 camera is sent in three layers: {before:?}"
    );
    for rid in ["q", "f"] {
        assert!(
            layer(&after, rid).1 > layer(&before, rid).1 + 100,
            "layer {rid} is watched and keeps being encoded: {before:?} -> {after:?}"
        );
    }
    assert_eq!(
        layer(&after, "h").1,
        layer(&before, "h").1,
        "nobody watches h: it is not encoded"
    );
    // No keyframe storm: a watched layer makes at most a few keyframes in 10 s.
    for rid in ["q", "f"] {
        let more = layer(&after, rid).2 - layer(&before, rid).2;
        assert!(
            more <= 3,
            "layer {rid} made {more} keyframes in 10 s: {before:?} -> {after:?}"
        );
    }
    assert!(
        layer(&after, "f").3 >= 1200 && layer(&after, "q").3 <= 400,
        "{after:?}"
    );

    // Cy hides Ada's video: it stops coming within 2 s; her sound goes on.
    let (b0, _, _) = receives(&mut cy, "Ada", "camera").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (b1, _, _) = receives(&mut cy, "Ada", "camera").await;
    assert!(b1 > b0, "Ada's video flows to Cy before she hides it");
    let hide = "(() => { const p = veche.state().participants.find(p => p.name === 'Ada');
        const b = p && document.querySelector(`.tile[data-participant=\"${p.id}\"][data-source=\"camera\"] .tile-hide`);
        if (!b) return null; b.click(); return b.textContent; })()";
    let label = cy.eval(hide).await.expect("hide");
    assert_eq!(
        label, "Show video",
        "the button now offers to show it again"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (h0, _, _) = receives(&mut cy, "Ada", "camera").await;
    let (a0, _, _) = receives(&mut cy, "Ada", "mic").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (h1, _, _) = receives(&mut cy, "Ada", "camera").await;
    let (a1, _, _) = receives(&mut cy, "Ada", "mic").await;
    println!("simulcast: Cy's bytes of Ada's hidden video over 3 s: {h0} -> {h1}; her audio {a0} -> {a1}");
    assert_eq!(h1, h0, "a hidden tile receives no video");
    assert!(a1 > a0, "its sound goes on");

    // The operator's /metrics adds up what the node's browsers receive and why: Cy's hidden
    // tile, Bob's full layer of Ada, and the estimates toward them, with no one's name.
    let text = ada
        .eval("fetch('/metrics').then(r => r.text())")
        .await
        .expect("metrics");
    let text = text.as_str().unwrap_or_default();
    let series = |name: &str, labels: &[&str]| -> Vec<f64> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
            .collect()
    };
    let hidden = series(
        "veche_video_streams",
        &["source=\"camera\"", "reason=\"hidden\"", "carries=\"none\""],
    );
    let full = series(
        "veche_video_streams",
        &["source=\"camera\"", "carries=\"f\"", "reason=\"view\""],
    );
    let median = series("veche_receiver_estimate_bps", &["quantile=\"0.5\""]);
    println!("simulcast: /metrics: hidden cameras {hidden:?}, full-layer cameras {full:?}, median estimate {median:?}");
    assert!(
        hidden.iter().sum::<f64>() >= 1.0,
        "Cy's hidden tile counted: {text}"
    );
    assert!(
        full.iter().sum::<f64>() >= 1.0,
        "Bob's full layer counted: {text}"
    );
    assert!(
        median.first().is_some_and(|m| *m > 0.0),
        "an estimate: {text}"
    );
    assert!(
        !text.contains("Ada") && !text.contains(&id),
        "no names or meeting ids"
    );

    // Nobody watches q now either: Ada stops encoding it; f goes on for Bob.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = layers(&mut ada).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = layers(&mut ada).await;
    assert_eq!(
        layer(&after, "q").1,
        layer(&before, "q").1,
        "q unwatched: {before:?} -> {after:?}"
    );
    assert!(layer(&after, "f").1 > layer(&before, "f").1 + 30);

    // Who speaks comes from the node (the level in Ada's packets): Cy is told Ada speaks
    // (Chromium's fake microphone beeps), and once Ada mutes, no longer.
    let ada_speaks = "(() => { const p = veche.state().participants.find(p => p.name === 'Ada');
        return !!p && veche.state().speaking.includes(String(p.id)); })()";
    cy.wait_for(
        "Cy told that Ada speaks",
        &format!("{ada_speaks} || null"),
        Duration::from_secs(10),
    )
    .await;
    ada.eval("document.getElementById('btn-mic').click(); true")
        .await
        .expect("mute");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..6 {
        assert_eq!(
            cy.eval(ada_speaks).await.expect("speaking"),
            false,
            "Ada is muted: not a speaker"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Shown again: the video comes back (at q, from a keyframe), and decodes.
    let label = cy.eval(hide).await.expect("show");
    assert_eq!(label, "Hide video");
    let (_, f0, _) = receives(&mut cy, "Ada", "camera").await;
    let js = format!(
        "veche.stats().then(s => {{ const i = s.inbound.find(i => i.name === 'Ada' && i.source === 'camera');
           return i && i.framesDecoded > {} ? i.framesDecoded : null; }})",
        f0 + 20
    );
    cy.wait_for(
        "Cy decoding Ada's video again",
        &js,
        Duration::from_secs(10),
    )
    .await;
    let (_, _, w) = receives(&mut cy, "Ada", "camera").await;
    assert!(w > 0 && w <= 400, "back on the small layer: {w}");

    // Bob kept the full layer all along.
    let (_, _, bw) = receives(&mut bob, "Ada", "camera").await;
    assert!(bw >= 1200, "Bob still gets the full layer: {bw}");

    // Bob pins Cy: her tile takes the big spot and keeps the full layer, while Ada's, in
    // the strip beside it, gets a smaller one; unpinned, Ada is back on the full layer.
    let pin = |who: &str| {
        format!(
            "(() => {{ const p = veche.state().participants.find(p => p.name === {who:?});
               const b = p && document.querySelector(`.tile[data-participant=\"${{p.id}}\"][data-source=\"camera\"] .tile-pin`);
               if (!b) return null; b.click(); return b.textContent; }})()"
        )
    };
    let cy_on_bob = bob.eval(&tile_height("Cy")).await.unwrap_or(Value::Null);
    assert_eq!(bob.eval(&pin("Cy")).await.expect("pin"), "Unpin");
    let smaller = format!(
        "(() => {{ const h = {}; return h < {} ? h : null; }})()",
        tile_height("Ada"),
        bob_tile.as_u64().unwrap_or(0)
    );
    let ada_in_strip = bob
        .wait_for("Ada's tile in the strip", &smaller, Duration::from_secs(5))
        .await;
    let cy_pinned = bob.eval(&tile_height("Cy")).await.unwrap_or(Value::Null);
    let aw = decoding_at(&mut bob, "Bob", "Ada", "w => w > 0 && w <= 700").await;
    let (_, _, cw) = receives(&mut bob, "Cy", "camera").await;
    println!(
        "simulcast: Bob pinned Cy: her tile {cy_on_bob} -> {cy_pinned} px high, {cw} px wide; Ada's {bob_tile} -> {ada_in_strip} px high, {aw} px wide"
    );
    assert!(cw >= 1200, "the pinned camera keeps the full layer: {cw}");
    assert_eq!(bob.eval(&pin("Cy")).await.expect("unpin"), "Pin");
    decoding_at(&mut bob, "Bob", "Ada", "w => w >= 1200").await;
}
