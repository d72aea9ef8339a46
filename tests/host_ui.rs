//! A teacher's flow in real browsers, with nothing but the UI: start an invite-only meeting
//! (the browser's key signs it, so that browser is the host), make a listener invite link in
//! the invite dialog, and see the link admit a student as a listener while the plain link
//! admits nobody; withdrawn from the same dialog, the invite link admits nobody either.
//!
//! Runs as root (the browsers live in a network namespace).

mod support;

use std::time::Duration;

use support::{host_starts, make_invite, wait_text, withdraw_invite, Lab};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_starts_an_invite_only_meeting_and_invites_a_listener() {
    let lab = Lab::new("hostui");
    let node = lab.local_node().await;
    let base = node.base();

    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    host_starts(&mut ada, "Lab 3", &["new-invite-only"], "Ada").await;

    // The invite dialog makes a listener link.
    let link = make_invite(&mut ada, "listener").await;
    let (page, fragment) = link.split_once('#').expect("the invite is in the fragment");
    assert!(fragment.starts_with("invite="), "{link}");
    assert!(
        !page.contains("invite"),
        "the token must not be in the request: {link}"
    );

    let mut lee = lab
        .browser(&format!("{page}?name=Lee&autojoin=1#{fragment}"), &[])
        .await;
    lee.wait_for(
        "Lee in, as a listener",
        "(window.veche && veche.state().joined && veche.state().role === 'listener') || null",
        Duration::from_secs(30),
    )
    .await;
    lee.wait_for(
        "Lee decoding Ada's camera",
        "veche.stats().then(s => s.inbound.some(i => i.name === 'Ada' && i.source === 'camera' && i.framesDecoded > 0) || null)",
        Duration::from_secs(45),
    )
    .await;

    // The plain link admits nobody.
    let mut cy = lab
        .browser(&format!("{page}?name=Cy&autojoin=1"), &[])
        .await;
    cy.wait_for(
        "Cy refused",
        "(document.body.innerText.includes(\"You can't join this meeting\") && document.body.innerText.includes('by invitation only')) || null",
        Duration::from_secs(30),
    )
    .await;

    // The host withdraws the listener invite from the same dialog: the link stops working.
    withdraw_invite(&mut ada).await;
    let mut late = lab
        .browser(&format!("{page}?name=Late&autojoin=1#{fragment}"), &[])
        .await;
    wait_text(
        &mut late,
        "the withdrawn link refused",
        "This invite was withdrawn by the host",
    )
    .await;

    late.close().await;
    cy.close().await;
    lee.close().await;
    ada.close().await;
    node.kill().await;
}
