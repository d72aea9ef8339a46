//! A teacher's flow in real browsers, with nothing but the UI: start an invite-only meeting
//! (the browser's key signs it, so that browser is the host), make a listener invite link in
//! the invite dialog, and see the link admit a student as a listener while the plain link
//! admits nobody; withdrawn from the same dialog, the invite link admits nobody either; and
//! the host saves the attendance as a CSV file (nobody else's page offers it); and "End and
//! delete" ends the meeting for everyone and deletes it from the node at once.
//!
//! Runs as root (the browsers live in a network namespace).

mod support;

use std::time::Duration;

use support::{click, click_row, host_starts, make_invite, wait_text, withdraw_invite, Lab};

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
        .browser(
            &format!("{page}{}name=Lee&autojoin=1#{fragment}", sep(page)),
            &[],
        )
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
        .browser(&format!("{page}{}name=Cy&autojoin=1", sep(page)), &[])
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
        .browser(
            &format!("{page}{}name=Late&autojoin=1#{fragment}", sep(page)),
            &[],
        )
        .await;
    wait_text(
        &mut late,
        "the withdrawn link refused",
        "This invite was withdrawn by the host",
    )
    .await;

    // The host saves the attendance from the People panel: a CSV file with her as the host
    // and Lee as a listener, and nobody who was refused. Lee has no such button.
    click(
        &mut ada,
        "the attendance button",
        ".people-list button[data-action=\"attendance\"]",
    )
    .await;
    let csv = ada
        .wait_for(
            "the attendance file saved",
            "(() => { const a = document.querySelector('a[data-attendance]');
               return a ? fetch(a.href).then(r => r.text()) : null; })()",
            Duration::from_secs(10),
        )
        .await;
    let csv = csv.as_str().expect("the file's text");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"name,key,node,role,joined,left,minutes"),
        "{csv}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Ada,") && l.contains(",host,")),
        "{csv}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Lee,") && l.contains(",listener,")),
        "{csv}"
    );
    assert!(
        !csv.contains("Cy,") && !csv.contains("Late,"),
        "the refused are not in: {csv}"
    );
    let lee_has = lee
        .eval("!!document.querySelector('button[data-action=\"attendance\"]')")
        .await
        .expect("Lee's page");
    assert_eq!(
        lee_has,
        serde_json::json!(false),
        "only the host's page offers it"
    );

    // The host ends the meeting and deletes it from her node at once.
    let id = page
        .split("/m/")
        .nth(1)
        .and_then(|rest| rest.split(['?', '#']).next())
        .expect("the meeting's id in its link");
    let delete = ".people-list button[data-action=\"delete\"]";
    click(&mut ada, "the delete button", delete).await;
    // The first click only arms it (it cannot be undone): the meeting is still there.
    ada.wait_for(
        "the button armed",
        &format!(
            "document.querySelector({delete:?})?.textContent === 'Click again to delete' || null"
        ),
        Duration::from_secs(10),
    )
    .await;
    lee.wait_for(
        "the meeting still there after one click",
        &format!("fetch('/api/meetings/{id}').then(r => r.status === 200 || null)"),
        Duration::from_secs(10),
    )
    .await;
    click(&mut ada, "the delete button again", delete).await;
    wait_text(&mut ada, "Ada told it is deleted", "Meeting deleted").await;
    wait_text(
        &mut lee,
        "Lee told the meeting ended",
        "The host ended the meeting",
    )
    .await;
    lee.wait_for(
        "the meeting gone from the node",
        &format!("fetch('/api/meetings/{id}').then(r => r.status === 404 || null)"),
        Duration::from_secs(10),
    )
    .await;

    late.close().await;
    cy.close().await;
    lee.close().await;
    ada.close().await;
    node.kill().await;
}

/// What joins one more parameter to `page`'s query.
fn sep(page: &str) -> char {
    if page.contains('?') {
        '&'
    } else {
        '?'
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_makes_a_moderator_who_invites_a_listener() {
    let lab = Lab::new("hostmod");
    let node = lab.local_node().await;
    let base = node.base();

    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    host_starts(&mut ada, "Lab 5", &["new-invite-only"], "Ada").await;
    let link = make_invite(&mut ada, "speaker").await;
    let (page, fragment) = link.split_once('#').expect("the invite is in the fragment");
    let mut bob = lab
        .browser(
            &format!("{page}{}name=Bob&autojoin=1#{fragment}", sep(page)),
            &[],
        )
        .await;
    bob.wait_for(
        "Bob in as a speaker",
        "(window.veche && veche.state().joined && veche.state().role === 'speaker') || null",
        Duration::from_secs(30),
    )
    .await;

    // The host makes Bob a moderator from the People panel: an invite bound to his key,
    // checked by the node and handed to him.
    click_row(&mut ada, "Bob", "promote", false).await;
    bob.wait_for(
        "Bob a moderator",
        "(veche.state().role === 'moderator') || null",
        Duration::from_secs(10),
    )
    .await;

    // Bob invites a listener under his own moderator invite; the node checks the chain.
    let link = make_invite(&mut bob, "listener").await;
    let (page, fragment) = link.split_once('#').expect("the invite is in the fragment");
    let mut cy = lab
        .browser(
            &format!("{page}{}name=Cy&autojoin=1#{fragment}", sep(page)),
            &[],
        )
        .await;
    cy.wait_for(
        "Cy in, as a listener, on Bob's invite",
        "(window.veche && veche.state().joined && veche.state().role === 'listener') || null",
        Duration::from_secs(30),
    )
    .await;
    for b in [cy, bob, ada] {
        b.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_lets_in_only_the_keys_she_lists() {
    let lab = Lab::new("hostkeys");
    let node = lab.local_node().await;
    let base = node.base();

    // Bob copies his key from the start page (it shows once he opens "Your key").
    let mut bob = lab.browser(&format!("{base}/"), &[]).await;
    click(&mut bob, "Bob opens his key", "details.my-key summary").await;
    let key = bob
        .wait_for(
            "Bob's key on the start page",
            "(document.getElementById('my-key')?.textContent || '').length === 43 ? document.getElementById('my-key').textContent : null",
            Duration::from_secs(20),
        )
        .await;
    let key = key.as_str().expect("key").to_owned();

    // A typo is caught on the page, before any meeting is made.
    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    ada.wait_for(
        "start page",
        "document.getElementById('new-keys') ? true : null",
        Duration::from_secs(20),
    )
    .await;
    ada.eval("document.getElementById('new-keys').value = 'not-a-key'; document.getElementById('start-btn').click(); true")
        .await
        .expect("start");
    wait_text(&mut ada, "the typo refused", "is not a person's key").await;
    ada.eval("document.getElementById('new-keys').value = ''; document.getElementById('new-ends').value = '2001-01-01T09:00'; document.getElementById('start-btn').click(); true")
        .await
        .expect("start");
    wait_text(&mut ada, "a past end refused", "The end time has passed").await;

    // Only Bob's key.
    ada.eval(&format!(
        "document.getElementById('new-ends').value = ''; document.getElementById('new-keys').value = {key:?}; true"
    ))
    .await
    .expect("keys");
    let path = host_starts(&mut ada, "Tutoring", &[], "Ada").await;
    bob.eval(&format!(
        "location.href = '{path}?name=Bob&autojoin=1'; true"
    ))
    .await
    .expect("join");
    bob.wait_for(
        "Bob in, as a speaker, by his key",
        "(window.veche && veche.state().joined && veche.state().role === 'speaker') || null",
        Duration::from_secs(30),
    )
    .await;
    let mut cy = lab
        .browser(&format!("{base}{path}?name=Cy&autojoin=1"), &[])
        .await;
    wait_text(&mut cy, "Cy refused", "by invitation only").await;
    for b in [cy, bob, ada] {
        b.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_puts_a_students_camera_in_the_spotlight_for_everyone() {
    let lab = Lab::new("hostspot");
    let node = lab.local_node().await;
    let base = node.base();

    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    let path = host_starts(&mut ada, "Show and tell", &[], "Ada").await;
    let link = |name: &str| format!("{base}{path}?name={name}&autojoin=1");
    let mut bob = lab.browser(&link("Bob"), &[]).await;
    let mut cy = lab.browser(&link("Cy"), &["--window-size=1280,800"]).await;
    // Cy's gallery of three: Bob's tile is one of them, not the big spot.
    let tile = "(() => { const p = veche.state().participants.find(p => p.name === 'Bob');
        const t = p && document.querySelector(`.tile[data-participant=\"${p.id}\"][data-source=\"camera\"]`);
        return t ? { h: t.offsetHeight, spot: t.classList.contains('spotlit') } : null; })()";
    let widest = "veche.stats().then(s => { const i = s.inbound.find(i => i.name === 'Bob' && i.source === 'camera');
        return i && i.framesDecoded > 10 ? i.frameWidth : null; })";
    cy.wait_for("Cy decoding Bob", widest, Duration::from_secs(45))
        .await;
    let before = cy.eval(tile).await.expect("Bob's tile");
    assert_eq!(before["spot"], false, "{before}");
    // Nobody but the host and moderators has the button.
    let buttons = "document.querySelectorAll('button[data-action=\"spotlight\"]').length";
    assert_eq!(cy.eval(buttons).await.expect("buttons"), 0);

    // The host puts Bob in the spotlight from the People panel.
    click_row(&mut ada, "Bob", "spotlight", false).await;
    wait_text(&mut bob, "Bob told", "Your camera is in the spotlight").await;
    let js = format!(
        "(() => {{ const t = {tile}; return t && t.spot && t.h > {} ? t.h : null; }})()",
        before["h"].as_u64().unwrap_or(0)
    );
    let big = cy
        .wait_for("Bob's tile on Cy's stage", &js, Duration::from_secs(10))
        .await;
    let js = "veche.stats().then(s => { const i = s.inbound.find(i => i.name === 'Bob' && i.source === 'camera');
        return i && i.frameWidth >= 1200 ? i.frameWidth : null; })";
    let width = cy
        .wait_for("Cy decoding Bob's full layer", js, Duration::from_secs(20))
        .await;
    println!(
        "spotlight: Bob's tile on Cy's page {} -> {big} px high, decoded {width} px wide",
        before["h"]
    );

    // The host ends it: Bob is back in the gallery.
    click_row(&mut ada, "Bob", "end_spotlight", false).await;
    let js = format!("(() => {{ const t = {tile}; return t && !t.spot ? true : null; }})()");
    cy.wait_for("Bob back in Cy's gallery", &js, Duration::from_secs(10))
        .await;
    assert_eq!(
        cy.eval("veche.state().spotlight").await.expect("state"),
        serde_json::Value::Null
    );
    for b in [cy, bob, ada] {
        b.close().await;
    }
}
