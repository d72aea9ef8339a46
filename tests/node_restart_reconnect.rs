//! The node is killed (kill -9) mid-meeting and started again with the same data directory:
//! the browsers show that the connection was lost and why, reconnect by themselves, and see
//! each other again; the meeting and the node's id survived. And a browser key store that
//! hangs ends only that attempt: the page says why, and the next attempt joins.

mod support;

use std::time::{Duration, Instant};

use support::Lab;

/// JS: the participant id under which we decode `OTHER`'s camera (more than 5 frames), if
/// it is not `OLD`.
const DECODING_OTHER: &str = "(async () => { if (!window.veche) return null; const s = await veche.stats(); \
     const i = s.inbound.find(i => i.name === OTHER && i.source === 'camera' && i.framesDecoded > 5 && i.participant !== OLD); \
     return i ? i.participant : null; })()";

fn decoding(other: &str, old: &serde_json::Value) -> String {
    DECODING_OTHER
        .replace("OTHER", &format!("{other:?}"))
        .replace("OLD", &old.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_reconnect_after_the_node_is_killed_and_restarted() {
    let lab = Lab::new("restart");
    let data = lab.dir().join("data");
    let args = ["--http", "127.0.0.1:7300", "--media-port", "7301"];
    let node = lab.node(&data, &args).await;
    let id_line = node.printed[0].clone();
    let base = node.base();

    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    ada.wait_for(
        "landing page",
        "location.href.startsWith('http:') && document.readyState === 'complete'",
        Duration::from_secs(20),
    )
    .await;
    let created = ada
        .eval("fetch('/api/meetings', {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({title: 'Choir'})}).then(r => r.json())")
        .await
        .expect("create");
    let id = created["id"].as_str().expect("id").to_owned();
    ada.eval(&format!(
        "location.href = '{base}/m/{id}?name=Ada&autojoin=1'"
    ))
    .await
    .expect("navigate");
    let mut bob = lab
        .browser(&format!("{base}/m/{id}?name=Bob&autojoin=1"), &[])
        .await;
    let wait = Duration::from_secs(40);
    let bob_before = ada
        .wait_for(
            "Ada sees Bob",
            &decoding("Bob", &serde_json::Value::Null),
            wait,
        )
        .await;
    let ada_before = bob
        .wait_for(
            "Bob sees Ada",
            &decoding("Ada", &serde_json::Value::Null),
            wait,
        )
        .await;

    node.kill().await;
    for b in [&mut ada, &mut bob] {
        b.wait_for(
            "the lost-connection banner",
            "veche.state().connection === 'reconnecting' && !document.querySelector('#banner').hidden",
            Duration::from_secs(10),
        )
        .await;
        // From the second failed attempt on, the page says what fails.
        b.wait_for(
            "the banner saying the node cannot be reached",
            "veche.state().lost?.stage === 'opening' && veche.state().lost.attempt >= 2 && \
             document.querySelector('#banner').textContent.includes('the node cannot be reached')",
            Duration::from_secs(10),
        )
        .await;
    }

    let node = lab.node(&data, &args).await;
    assert_eq!(node.printed[0], id_line, "same node id after kill -9");
    let restarted = Instant::now();
    // Fresh participants on the restarted node: each decodes the other again, under the
    // new participant id (not numbers left over from before the kill).
    ada.wait_for("Ada sees Bob again", &decoding("Bob", &bob_before), wait)
        .await;
    bob.wait_for("Bob sees Ada again", &decoding("Ada", &ada_before), wait)
        .await;
    for b in [&mut ada, &mut bob] {
        b.wait_for(
            "the banner gone",
            "veche.state().connection === 'connected' && document.querySelector('#banner').hidden",
            Duration::from_secs(10),
        )
        .await;
    }
    println!(
        "media again {:?} after the node restarted",
        restarted.elapsed()
    );
    node.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_store_that_hangs_ends_that_attempt_and_the_next_one_joins() {
    let lab = Lab::new("keyhang");
    let node = lab.local_node().await;
    let base = node.base();
    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    let id = support::create_meeting(&mut ada, "Choir").await;
    // The browser's key store never answers its first open (as a profile's IndexedDB can
    // hang behind a page kept in the back-forward cache); later opens work.
    ada.before_each_page(
        "{ window.__warns = []; const warn = console.warn.bind(console); \
           console.warn = (...a) => { window.__warns.push(a.join(' ')); warn(...a); }; \
           let opens = 0; const open = indexedDB.open.bind(indexedDB); \
           indexedDB.open = (...a) => (opens++ === 0 ? {} : open(...a)); \
           window.__opens = () => opens; }",
    )
    .await;
    let asked = Instant::now();
    ada.eval(&format!(
        "location.href = '{base}/m/{id}?name=Ada&autojoin=1'; true"
    ))
    .await
    .expect("navigate");
    ada.wait_for(
        "Ada in, on a later attempt",
        "(window.veche && veche.state().joined && window.__opens() >= 2) || null",
        Duration::from_secs(40),
    )
    .await;
    let joined = asked.elapsed();
    let warns = ada.eval("window.__warns").await.expect("warnings");
    let said: Vec<&str> = warns
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|w| w.as_str())
        .filter(|w| w.contains("key store did not answer"))
        .collect();
    assert_eq!(said.len(), 1, "the one hung attempt, said once: {warns}");
    assert!(said[0].contains("while signing"), "{}", said[0]);
    assert!(
        joined >= Duration::from_secs(10) && joined < Duration::from_secs(30),
        "joined after {joined:?}: the hung attempt ends after 10 s, and the next one joins"
    );
    node.kill().await;
}
