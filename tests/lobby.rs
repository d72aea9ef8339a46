//! The waiting room in real browsers: with the lobby on, a newcomer waits (no media, not in
//! the meeting) until the host admits them from the People panel; a turned-away newcomer
//! is told so. The decisions survive a kill -9: the admitted come back without waiting, the
//! turned-away stay out.
//!
//! Runs as root (the browsers live in a network namespace).

mod support;

use std::time::Duration;

use support::{click_row, host_starts, wait_text, Lab};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_lobby_on_newcomers_wait_until_the_host_admits_them() {
    let lab = Lab::new("lobby");
    let node = lab.local_node().await;
    let base = node.base();

    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    // The host does not wait.
    let path = host_starts(&mut ada, "Office hours", &["new-lobby"], "Ada").await;
    let link = |name: &str| format!("{base}{path}?name={name}&autojoin=1");

    // Bob waits: told so, not in the meeting, and nobody sees him as a participant.
    let mut bob = lab.browser(&link("Bob"), &[]).await;
    wait_text(
        &mut bob,
        "Bob waiting",
        "Waiting for the host to let you in",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        bob.eval("veche.state().joined").await.expect("state"),
        false,
        "Bob must not be in yet"
    );
    assert_eq!(
        ada.eval("veche.state().participants.some(p => p.name === 'Bob')")
            .await
            .expect("state"),
        false
    );

    // Admitted: Bob is in and sees Ada.
    click_row(&mut ada, "Bob", "admit", true).await;
    bob.wait_for(
        "Bob decoding Ada's camera",
        "veche.state().joined ? veche.stats().then(s => s.inbound.some(i => i.name === 'Ada' && i.source === 'camera' && i.framesDecoded > 0) || null) : null",
        Duration::from_secs(45),
    )
    .await;

    // Turned away: Cy is told, and never joined.
    let mut cy = lab.browser(&link("Cy"), &[]).await;
    click_row(&mut ada, "Cy", "deny", true).await;
    wait_text(&mut cy, "Cy turned away", "The host did not let you in").await;

    // The decisions are on disk: after a kill -9 and a restart, Bob (same browser, same key)
    // comes straight in, and Cy is turned away without anyone deciding again.
    node.kill().await;
    let node = lab.local_node().await;
    // A mark on the old page tells its answers from the reloaded page's.
    let reload = "window.beforeReload = true; location.reload(); true";
    bob.eval(reload).await.expect("reload");
    bob.wait_for(
        "Bob back in without waiting",
        "(!window.beforeReload && window.veche && veche.state().joined) || null",
        Duration::from_secs(30),
    )
    .await;
    cy.eval(reload).await.expect("reload");
    cy.wait_for(
        "Cy still turned away",
        "(!window.beforeReload && document.body.innerText.includes('The host did not let you in')) || null",
        Duration::from_secs(30),
    )
    .await;

    cy.close().await;
    bob.close().await;
    ada.close().await;
    node.kill().await;
}
