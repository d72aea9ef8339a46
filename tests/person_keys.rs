//! Person keys in real browsers: each browser makes an Ed25519 key (WebCrypto, kept in
//! IndexedDB), signs the node's challenge at every join, and everyone sees a short
//! fingerprint next to each name; the same browser keeps its fingerprint across a reload,
//! and a name seen before with another key is marked.
//!
//! Runs as root (it makes a network namespace so the browsers' traffic stays inside it).

mod support;

use std::time::Duration;

use support::{create_meeting, Browser, Lab};

/// The fingerprints `b` shows next to other people called `name`, and whether each is
/// marked as a new key: [[fingerprint, marked], ...].
fn rows_js(name: &str) -> String {
    format!(
        "[...document.querySelectorAll('.people-list li.person[data-participant]')]
           .filter(l => l.querySelector('.person-name span')?.textContent === {name:?})
           .map(l => [(l.querySelector('.person-key')?.textContent || '').replace(' · ', ''),
                      !!l.querySelector('.person-newkey')])"
    )
}

async fn own_fingerprint(b: &mut Browser, who: &str) -> String {
    let v = b
        .wait_for(
            &format!("{who}'s own fingerprint"),
            "(document.querySelector('.people-list li[data-you] .person-key')?.textContent || '').replace(' · ', '') || null",
            Duration::from_secs(30),
        )
        .await;
    v.as_str().expect("fingerprint").to_owned()
}

/// Wait until `b` shows exactly `count` people called `name` with a fingerprint.
async fn rows(b: &mut Browser, name: &str, count: usize) -> Vec<(String, bool)> {
    let js = format!(
        "(() => {{ const r = {}; return r.length === {count} && r.every(x => x[0]) ? r : null; }})()",
        rows_js(name)
    );
    let v = b
        .wait_for(
            &format!("{count} × {name} with keys"),
            &js,
            Duration::from_secs(30),
        )
        .await;
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap_or_default().to_owned(),
                r[1].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_prove_their_keys_and_show_fingerprints() {
    let lab = Lab::new("keys");
    let node = lab.local_node().await;
    let base = node.base();

    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    let id = create_meeting(&mut ada, "Keys").await;
    let link = |name: &str| format!("{base}/m/{id}?name={name}&autojoin=1");
    ada.eval(&format!("location.href = {:?}", link("Ada")))
        .await
        .expect("navigate");
    let mut bob = lab.browser(&link("Bob"), &[]).await;

    // Each shows its own fingerprint; the other shows the same one next to the name.
    let ada_fp = own_fingerprint(&mut ada, "Ada").await;
    let bob_fp = own_fingerprint(&mut bob, "Bob").await;
    assert_eq!(ada_fp.len(), 11, "8 bytes of key, base64url: {ada_fp}");
    assert_ne!(ada_fp, bob_fp, "two browsers, two keys");
    assert_eq!(
        rows(&mut bob, "Ada", 1).await,
        vec![(ada_fp.clone(), false)]
    );
    assert_eq!(
        rows(&mut ada, "Bob", 1).await,
        vec![(bob_fp.clone(), false)]
    );

    // Ada reloads: the same key from IndexedDB, the same fingerprint, nothing marked.
    let before = ada
        .eval("window.__beforeReload = true; veche.state().you")
        .await
        .expect("participant id");
    ada.eval("location.reload()").await.expect("reload");
    // The new page (the marker gone), joined again as a new participant.
    ada.wait_for(
        "Ada's reloaded page joined again",
        &format!(
            "(!window.__beforeReload && window.veche && veche.state().joined && veche.state().you !== {before}) || null"
        ),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(own_fingerprint(&mut ada, "Ada").await, ada_fp);
    assert_eq!(
        rows(&mut bob, "Ada", 1).await,
        vec![(ada_fp.clone(), false)]
    );

    // Someone else (another browser, another key) joins as "Ada": Bob sees both, and the
    // newcomer's row says its key is not the one this name had.
    let mut other = lab.browser(&link("Ada"), &[]).await;
    let other_fp = own_fingerprint(&mut other, "the other Ada").await;
    assert_ne!(other_fp, ada_fp);
    let mut seen = rows(&mut bob, "Ada", 2).await;
    seen.sort();
    let mut want = vec![(ada_fp, false), (other_fp, true)];
    want.sort();
    assert_eq!(seen, want, "Bob's view of the two Adas");

    other.close().await;
    bob.close().await;
    ada.close().await;
    node.kill().await;
}
