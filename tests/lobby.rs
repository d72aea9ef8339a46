//! The waiting room in real browsers: with the lobby on, a newcomer waits (no media, not in
//! the meeting) until the host admits them from the People panel; a turned-away newcomer
//! is told so.
//!
//! Runs as root (the browsers live in a network namespace).

mod support;

use std::time::Duration;

use support::{Browser, Lab};

async fn decide(host: &mut Browser, name: &str, action: &str) {
    let js = format!(
        "(() => {{ const li = [...document.querySelectorAll('.people-list li.waiting')]
             .find(l => l.querySelector('.person-name span')?.textContent === {name:?});
           const b = li && li.querySelector('button[data-action={action:?}]');
           if (!b) return null; b.click(); return true; }})()"
    );
    host.wait_for(
        &format!("{name} waiting, to {action}"),
        &js,
        Duration::from_secs(20),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_lobby_on_newcomers_wait_until_the_host_admits_them() {
    let lab = Lab::new("lobby");
    let data = lab.dir().join("data");
    let node = lab
        .node(&data, &["--http", "127.0.0.1:7300", "--media-port", "7301"])
        .await;
    let base = node.base();

    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    ada.wait_for(
        "start page",
        "(document.readyState === 'complete' && document.getElementById('start-btn')) ? true : null",
        Duration::from_secs(20),
    )
    .await;
    ada.eval(
        "document.getElementById('new-title').value = 'Office hours';
         document.getElementById('new-lobby').click();
         document.getElementById('start-btn').click(); true",
    )
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
    let link = |name: &str| format!("{base}{path}?name={name}&autojoin=1");
    ada.eval(&format!("location.href = {:?}", link("Ada")))
        .await
        .expect("join");
    // The host does not wait.
    ada.wait_for(
        "Ada in as the host",
        "(window.veche && veche.state().joined && veche.state().role === 'host') || null",
        Duration::from_secs(30),
    )
    .await;

    // Bob waits: told so, not in the meeting, and nobody sees him as a participant.
    let mut bob = lab.browser(&link("Bob"), &[]).await;
    bob.wait_for(
        "Bob waiting",
        "document.body.innerText.includes('Waiting for the host to let you in') || null",
        Duration::from_secs(20),
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
    decide(&mut ada, "Bob", "admit").await;
    bob.wait_for(
        "Bob decoding Ada's camera",
        "veche.state().joined ? veche.stats().then(s => s.inbound.some(i => i.name === 'Ada' && i.source === 'camera' && i.framesDecoded > 0) || null) : null",
        Duration::from_secs(45),
    )
    .await;

    // Turned away: Cy is told, and never joined.
    let mut cy = lab.browser(&link("Cy"), &[]).await;
    decide(&mut ada, "Cy", "deny").await;
    cy.wait_for(
        "Cy turned away",
        "document.body.innerText.includes('The host did not let you in') || null",
        Duration::from_secs(20),
    )
    .await;

    cy.close().await;
    bob.close().await;
    ada.close().await;
    node.kill().await;
}
