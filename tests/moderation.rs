//! Moderation in real browsers, through the UI: a raised hand shows at the host; the host (the browser that started the
//! meeting, whose key signed it) mutes a speaker from the People panel and the node stops
//! forwarding that speaker's microphone; a participant who is not the host cannot; the host
//! removes the speaker, who cannot come back with the same key; the host locks the meeting
//! (nobody new gets in) and ends it for everyone (and nobody joins again).
//!
//! Runs as root (the browsers live in a network namespace).

mod support;

use std::time::Duration;

use support::{
    audio_from, click, click_row, forged_mute, host_starts, make_invite, wait_text, Lab,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_mutes_and_removes_and_nobody_else_can() {
    let lab = Lab::new("moderate");
    let node = lab.local_node().await;
    let base = node.base();

    // Ada starts the meeting from the start page: her browser's key is the host.
    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    let path = host_starts(&mut ada, "Club", &[], "Ada").await;
    let link = |name: &str| format!("{base}{path}?name={name}&autojoin=1");
    let mut bob = lab.browser(&link("Bob"), &[]).await;
    let mut cy = lab.browser(&link("Cy"), &[]).await;
    for (b, who) in [(&mut ada, "Ada"), (&mut cy, "Cy")] {
        b.wait_for(
            &format!("{who} hearing Bob"),
            "veche.stats().then(s => s.inbound.some(i => i.name === 'Bob' && i.source === 'mic' && i.packetsReceived > 20) || null)",
            Duration::from_secs(45),
        )
        .await;
    }

    // Cy raises her hand: the host sees it next to her name.
    cy.eval("document.getElementById('btn-hand').click(); true")
        .await
        .expect("raise hand");
    ada.wait_for(
        "Ada sees Cy's raised hand",
        "(() => { const li = [...document.querySelectorAll('.people-list li.person[data-participant]')]
            .find(l => l.querySelector('.person-name span')?.textContent === 'Cy');
          return (li && li.querySelector('.hand-up')) ? true : null; })()",
        Duration::from_secs(10),
    )
    .await;

    // VECHE_SCREENSHOTS=DIR keeps a picture of the host's view, to look at by hand.
    if let Ok(dir) = std::env::var("VECHE_SCREENSHOTS") {
        ada.eval("document.getElementById('btn-people').click(); true")
            .await
            .expect("people panel");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = ada
            .screenshot(&std::path::Path::new(&dir).join("host-people-panel.png"))
            .await;
    }

    // Cy is a speaker, not a moderator: her signed "mute Ada" is refused with a reason.
    forged_mute(&mut cy, "Cy", "Ada").await;

    // The host mutes Bob: within 2 s the others' audio bytes from Bob stop growing.
    click_row(&mut ada, "Bob", "mute", false).await;
    wait_text(&mut bob, "Bob told he is muted", "The host muted you").await;
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
        "Bob's microphone must reach nobody while muted"
    );
    // Bob unmutes anyway, past his page: his microphone track on again and `state` with
    // audio on straight over the socket. The node's refusal is what keeps him silent.
    bob.eval("(() => { for (const s of veche.pc.getSenders()) if (s.track && s.track.kind === 'audio') s.track.enabled = true; return veche.send({type: 'state', audio: true, video: true, screen: false, hand: false}); })()")
        .await
        .expect("unmute over the socket");
    let bob_sent = "veche.stats().then(s => s.outbound.filter(o => o.kind === 'audio').reduce((a, o) => a + o.bytesSent, 0))";
    let s0 = bob
        .eval(bob_sent)
        .await
        .expect("stats")
        .as_u64()
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s1 = bob
        .eval(bob_sent)
        .await
        .expect("stats")
        .as_u64()
        .unwrap_or(0);
    assert!(s1 > s0 + 2_000, "Bob's browser sends audio: {s0} → {s1}");
    assert_eq!(audio_from(&mut cy, "Bob").await, c1, "still withheld");
    // Cy's own audio still reaches Ada: the mute concerned Bob only.
    let cy0 = audio_from(&mut ada, "Cy").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(audio_from(&mut ada, "Cy").await > cy0, "Cy is still heard");

    // A moderator (invited as one from the host's Invite dialog) mutes Cy: Ada stops
    // hearing her.
    let mod_link = make_invite(&mut ada, "moderator").await;
    ada.eval("document.querySelector('dialog[open] button[aria-label=\"Close\"]')?.click(); document.querySelector('.dialog-backdrop button[aria-label=\"Close\"]')?.click(); true")
        .await
        .expect("close dialog");
    let (page, fragment) = mod_link.split_once('#').expect("fragment");
    let mut mo = lab
        .browser(&format!("{page}?name=Mo&autojoin=1#{fragment}"), &[])
        .await;
    mo.wait_for(
        "Mo in as a moderator",
        "(window.veche && veche.state().joined && veche.state().role === 'moderator') || null",
        Duration::from_secs(30),
    )
    .await;
    click_row(&mut mo, "Cy", "mute", false).await;
    wait_text(&mut cy, "Cy told she is muted", "The host muted you").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c0 = audio_from(&mut ada, "Cy").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        audio_from(&mut ada, "Cy").await,
        c0,
        "Cy's microphone withheld"
    );
    mo.close().await;

    // Removed: Bob's page says so, and the same browser (same key) cannot come back.
    click_row(&mut ada, "Bob", "remove", false).await;
    wait_text(
        &mut bob,
        "Bob removed",
        "You were removed from this meeting",
    )
    .await;
    bob.eval(&format!("location.href = {:?}", link("Bob again")))
        .await
        .expect("rejoin");
    bob.wait_for(
        "Bob refused on rejoin",
        "document.body.innerText.includes('the host removed you') || document.body.innerText.includes('The host removed you') || null",
        Duration::from_secs(20),
    )
    .await;
    assert!(cy
        .eval("veche.state().joined")
        .await
        .expect("state")
        .as_bool()
        .unwrap_or(false));

    // Locked: nobody new gets in.
    click(
        &mut ada,
        "the lock button",
        ".people-list button[data-action=\"lock\"]",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut dee = lab.browser(&link("Dee"), &[]).await;
    wait_text(&mut dee, "Dee refused: locked", "This meeting is locked").await;
    // Ended: everyone is out, and nobody joins again.
    click(
        &mut ada,
        "the end button",
        ".people-list button[data-action=\"end\"]",
    )
    .await;
    wait_text(
        &mut cy,
        "Cy told the meeting ended",
        "The host ended the meeting",
    )
    .await;
    dee.eval(&format!("location.href = {:?}", link("Dee again")))
        .await
        .expect("rejoin");
    wait_text(&mut dee, "Dee refused: ended", "This meeting has ended").await;

    dee.close().await;
    cy.close().await;
    bob.close().await;
    ada.close().await;
    node.kill().await;
}
