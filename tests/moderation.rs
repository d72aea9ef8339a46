//! Moderation in real browsers, through the UI: a raised hand shows at the host; the host (the browser that started the
//! meeting, whose key signed it) mutes a speaker from the People panel and the node stops
//! forwarding that speaker's microphone; a participant who is not the host cannot; the host
//! removes the speaker, who cannot come back with the same key; the host locks the meeting
//! (nobody new gets in) and ends it for everyone (and nobody joins again).
//!
//! Runs as root (the browsers live in a network namespace).

mod support;

use std::time::Duration;

use support::{Browser, Lab};

/// Audio bytes `b` has received from `name`.
async fn audio_from(b: &mut Browser, name: &str) -> u64 {
    b.eval(&format!(
        "veche.stats().then(s => s.inbound.filter(i => i.name === {name:?} && i.source === 'mic').reduce((a, i) => a + i.bytesReceived, 0))"
    ))
    .await
    .expect("stats")
    .as_u64()
    .unwrap_or(0)
}

/// Click the host's moderation button `action` on `name`'s row of the People panel.
async fn click(host: &mut Browser, name: &str, action: &str) {
    let js = format!(
        "(() => {{ const li = [...document.querySelectorAll('.people-list li.person[data-participant]')]
             .find(l => l.querySelector('.person-name span')?.textContent === {name:?});
           const b = li && li.querySelector('button[data-action={action:?}]');
           if (!b) return null; b.click(); return true; }})()"
    );
    host.wait_for(
        &format!("the {action} button for {name}"),
        &js,
        Duration::from_secs(20),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_mutes_and_removes_and_nobody_else_can() {
    let lab = Lab::new("moderate");
    let data = lab.dir().join("data");
    let node = lab
        .node(&data, &["--http", "127.0.0.1:7300", "--media-port", "7301"])
        .await;
    let base = node.base();

    // Ada starts the meeting from the start page: her browser's key is the host.
    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    ada.wait_for(
        "start page",
        "(document.readyState === 'complete' && document.getElementById('start-btn')) ? true : null",
        Duration::from_secs(20),
    )
    .await;
    ada.eval("document.getElementById('new-title').value = 'Club'; document.getElementById('start-btn').click(); true")
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
    ada.wait_for(
        "Ada in as the host",
        "(window.veche && veche.state().joined && veche.state().role === 'host') || null",
        Duration::from_secs(30),
    )
    .await;
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
    cy.eval(
        "import('/assets/keys.js').then(async (k) => {
           const ada = veche.state().participants.find(p => p.name === 'Ada');
           const action = await k.signToken('veche/action/v1', {meeting: location.pathname.split('/')[2],
             kind: 'mute', target: ada.key, at_ms: Date.now(), authority: null});
           return veche.send({type: 'moderate', action});
         })",
    )
    .await
    .expect("forged mute");
    cy.wait_for(
        "Cy told she may not",
        "document.body.innerText.includes('only the host or a moderator may do this') || null",
        Duration::from_secs(10),
    )
    .await;

    // The host mutes Bob: within 2 s the others' audio bytes from Bob stop growing.
    click(&mut ada, "Bob", "mute").await;
    bob.wait_for(
        "Bob told he is muted",
        "document.body.innerText.includes('The host muted you') || null",
        Duration::from_secs(10),
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
        "Bob's microphone must reach nobody while muted"
    );
    // Bob's own unmute is refused until the host allows it.
    bob.eval("document.getElementById('btn-mic').click(); true")
        .await
        .expect("unmute");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(audio_from(&mut cy, "Bob").await, c1, "still withheld");
    // Cy's own audio still reaches Ada: the mute concerned Bob only.
    let cy0 = audio_from(&mut ada, "Cy").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(audio_from(&mut ada, "Cy").await > cy0, "Cy is still heard");

    // A moderator (invited as one from the host's Invite dialog) mutes Cy: Ada stops
    // hearing her.
    ada.eval("document.getElementById('btn-copy').click(); true")
        .await
        .expect("invite dialog");
    ada.wait_for(
        "the invite maker",
        "document.getElementById('invite-create') ? true : null",
        Duration::from_secs(10),
    )
    .await;
    ada.eval("document.getElementById('invite-role').value = 'moderator'; document.getElementById('invite-create').click(); true")
        .await
        .expect("moderator invite");
    let mod_link = ada
        .wait_for(
            "the moderator link",
            "document.getElementById('invite-link')?.value || null",
            Duration::from_secs(10),
        )
        .await;
    let mod_link = mod_link.as_str().expect("link").to_owned();
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
    click(&mut mo, "Cy", "mute").await;
    cy.wait_for(
        "Cy told she is muted",
        "document.body.innerText.includes('The host muted you') || null",
        Duration::from_secs(10),
    )
    .await;
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
    click(&mut ada, "Bob", "remove").await;
    bob.wait_for(
        "Bob removed",
        "document.body.innerText.includes('You were removed from this meeting') || null",
        Duration::from_secs(15),
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
    ada.wait_for(
        "the lock button",
        "(() => { const b = document.querySelector('.people-list button[data-action=\"lock\"]'); if (!b) return null; b.click(); return true; })()",
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut dee = lab.browser(&link("Dee"), &[]).await;
    dee.wait_for(
        "Dee refused: locked",
        "document.body.innerText.includes('This meeting is locked') || null",
        Duration::from_secs(20),
    )
    .await;
    // Ended: everyone is out, and nobody joins again.
    ada.wait_for(
        "the end button",
        "(() => { const b = document.querySelector('.people-list button[data-action=\"end\"]'); if (!b) return null; b.click(); return true; })()",
        Duration::from_secs(10),
    )
    .await;
    cy.wait_for(
        "Cy told the meeting ended",
        "document.body.innerText.includes('The host ended the meeting') || null",
        Duration::from_secs(15),
    )
    .await;
    dee.eval(&format!("location.href = {:?}", link("Dee again")))
        .await
        .expect("rejoin");
    dee.wait_for(
        "Dee refused: ended",
        "document.body.innerText.includes('This meeting has ended') || null",
        Duration::from_secs(20),
    )
    .await;

    dee.close().await;
    cy.close().await;
    bob.close().await;
    ada.close().await;
    node.kill().await;
}
