//! A meeting signed by its host, invite-only, in real browsers: invites in the link's
//! fragment admit people in their role; a listener's camera and microphone reach nobody
//! while they see and hear the speaker; an expired invite, a forged one and no invite are
//! refused with their reason on the page; the signed meeting, a one-use invite's use and the
//! host's revocations survive a kill -9.
//!
//! The host here holds a key file (a command-line host, veche-trust's `Keypair`); browsers
//! are the invitees. Runs as root (the browsers live in a network namespace).

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{create_meeting_claimed, wait_text, Browser, Lab};
use veche_trust::{encode_token, Invite, Keypair, MeetingDoc, Policy, Revocation, Role};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn invite(signer: &Keypair, meeting: &str, id: &str, role: Role, expires_ms: u64) -> String {
    encode_token(&signer.sign(Invite {
        meeting: meeting.into(),
        id: id.into(),
        role,
        expires_ms,
        max_uses: None,
        invitee: None,
        parent: None,
    }))
}

/// Sum of bytes `b` received from `name`'s tracks.
async fn bytes_from(b: &mut Browser, name: &str) -> u64 {
    let v = b
        .eval(&format!(
            "veche.stats().then(s => s.inbound.filter(i => i.name === {name:?}).reduce((a, i) => a + i.bytesReceived, 0))"
        ))
        .await
        .expect("stats");
    v.as_u64().unwrap_or(0)
}

async fn refused(b: &mut Browser, who: &str, words: &str) {
    b.wait_for(
        &format!("{who} refused with '{words}'"),
        &format!(
            "(document.body.innerText.includes(\"You can't join this meeting\") && document.body.innerText.includes({words:?})) || null"
        ),
        Duration::from_secs(30),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_admit_in_their_role_and_everything_else_is_refused() {
    let lab = Lab::new("invite");
    let data = lab.dir().join("data");
    let args = ["--http", "127.0.0.1:7300", "--media-port", "7301"];
    let node = lab.node(&data, &args).await;
    let base = node.base();

    // The host creates the meeting and signs it: invite only.
    let host = Keypair::from_secret(&[5; 32]);
    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    let (id, claim) = create_meeting_claimed(&mut ada, "Physics").await;
    let doc = encode_token(&host.sign(MeetingDoc {
        id: id.clone(),
        title: "Physics".into(),
        host: host.public(),
        policy: Policy::InviteOnly,
        lobby: false,
        created_ms: now_ms(),
        ends_ms: None,
    }));
    let put = |token: &str, claim: &str| {
        format!(
            "fetch('/api/meetings/{id}/doc', {{method: 'PUT', headers: {{'content-type': 'application/json'}}, body: JSON.stringify({{doc: {token:?}, claim: {claim:?}}})}}).then(async r => [r.status, await r.json()])"
        )
    };
    // Whoever did not create the meeting cannot make themselves its host, not even first.
    let other_host = Keypair::from_secret(&[6; 32]);
    let grab = encode_token(&other_host.sign(MeetingDoc {
        id: id.clone(),
        title: "Mine now".into(),
        host: other_host.public(),
        policy: Policy::Anyone,
        lobby: false,
        created_ms: now_ms(),
        ends_ms: None,
    }));
    let early = ada.eval(&put(&grab, "a guess")).await.expect("put doc");
    assert_eq!(
        (&early[0], &early[1]["error"]),
        (&403.into(), &"not_creator".into()),
        "{early}"
    );
    let stored = ada.eval(&put(&doc, &claim)).await.expect("put doc");
    assert_eq!(stored[0], 200, "{stored}");
    // The first host's signature stands, even with the creator's secret.
    let again = ada.eval(&put(&grab, &claim)).await.expect("put doc again");
    assert_eq!(again[0], 409, "{again}");

    let hour = now_ms() + 3_600_000;
    let link =
        |name: &str, token: &str| format!("{base}/m/{id}?name={name}&autojoin=1#invite={token}");
    ada.eval(&format!(
        "location.href = {:?}",
        link("Ada", &invite(&host, &id, "speaker-1", Role::Speaker, hour))
    ))
    .await
    .expect("navigate");
    let mut lee = lab
        .browser(
            &link("Lee", &invite(&host, &id, "listen-1", Role::Listener, hour)),
            &[],
        )
        .await;
    // A second speaker: her media reaching Ada shows the window in which Lee's does not.
    let sam = lab
        .browser(
            &link(
                "Sam",
                &invite(&host, &id, "speaker-sam", Role::Speaker, hour),
            ),
            &[],
        )
        .await;

    // Lee sees and hears Ada.
    lee.wait_for(
        "Lee decoding Ada's camera",
        "veche.stats().then(s => s.inbound.some(i => i.name === 'Ada' && i.source === 'camera' && i.framesDecoded > 0) || null)",
        Duration::from_secs(45),
    )
    .await;
    wait_text(
        &mut lee,
        "Lee told it is a listener",
        "You joined as a listener",
    )
    .await;
    // Lee's browser sends its camera and microphone to the node...
    lee.wait_for(
        "Lee's browser sending",
        "veche.stats().then(s => s.outbound.some(o => o.bytesSent > 10000) || null)",
        Duration::from_secs(30),
    )
    .await;
    // ...and none of it reaches Ada: her inbound bytes from Lee stay flat (at zero).
    ada.wait_for(
        "Ada sees Lee in the meeting",
        "veche.state().participants.some(p => p.name === 'Lee') || null",
        Duration::from_secs(20),
    )
    .await;
    ada.wait_for(
        "Ada receiving Sam's media",
        "veche.stats().then(s => s.inbound.some(i => i.name === 'Sam' && i.bytesReceived > 0) || null)",
        Duration::from_secs(30),
    )
    .await;
    let before = (
        bytes_from(&mut ada, "Lee").await,
        bytes_from(&mut ada, "Sam").await,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = (
        bytes_from(&mut ada, "Lee").await,
        bytes_from(&mut ada, "Sam").await,
    );
    assert!(
        after.1 > before.1 + 10_000,
        "a speaker's media keeps reaching Ada in the same window: {before:?} → {after:?}"
    );
    assert_eq!(
        (before.0, after.0),
        (0, 0),
        "a listener's media must reach nobody"
    );
    sam.close().await;

    // An expired invite, a forged one, and none at all: refused, the reason on the page.
    let mut old = lab
        .browser(
            &link(
                "Old",
                &invite(&host, &id, "old-1", Role::Speaker, now_ms() - 60_000),
            ),
            &[],
        )
        .await;
    refused(&mut old, "an expired invite", "This invite has expired").await;
    let forger = Keypair::from_secret(&[7; 32]);
    let mut eve = lab
        .browser(
            &link(
                "Eve",
                &invite(&forger, &id, "forged-1", Role::Moderator, hour),
            ),
            &[],
        )
        .await;
    refused(&mut eve, "a forged invite", "may not invite").await;
    let mut nobody = lab
        .browser(&format!("{base}/m/{id}?name=Nobody&autojoin=1"), &[])
        .await;
    refused(&mut nobody, "no invite", "by invitation only").await;
    // Ada was not disturbed by any of it.
    assert!(ada
        .eval("veche.state().joined")
        .await
        .expect("state")
        .as_bool()
        .unwrap_or(false));

    // A one-use invite admits one person; its use is on disk before she is in.
    let once = encode_token(&host.sign(Invite {
        meeting: id.clone(),
        id: "once-1".into(),
        role: Role::Speaker,
        expires_ms: hour,
        max_uses: Some(1),
        invitee: None,
        parent: None,
    }));
    let mut uno = lab.browser(&link("Uno", &once), &[]).await;
    uno.wait_for(
        "the one-use invite admits Uno",
        "(window.veche && veche.state().joined) || null",
        Duration::from_secs(30),
    )
    .await;
    uno.close().await;

    // kill -9 and restart: the signed meeting is still invite only.
    for b in [old, eve, nobody, lee] {
        b.close().await;
    }
    ada.close().await;
    node.kill().await;
    let node = lab.node(&data, &args).await;
    let mut late = lab
        .browser(&format!("{base}/m/{id}?name=Late&autojoin=1"), &[])
        .await;
    refused(&mut late, "no invite after a restart", "by invitation only").await;
    let mut back = lab
        .browser(
            &link(
                "Back",
                &invite(&host, &id, "speaker-2", Role::Speaker, hour),
            ),
            &[],
        )
        .await;
    back.wait_for(
        "a speaker admitted after the restart",
        "(window.veche && veche.state().joined) || null",
        Duration::from_secs(30),
    )
    .await;
    // The one-use invite stays used after the kill -9.
    let mut dos = lab.browser(&link("Dos", &once), &[]).await;
    refused(
        &mut dos,
        "a used one-use invite after a restart",
        "has been used up",
    )
    .await;
    dos.close().await;

    // The host withdraws an invite: whoever holds it is refused, also after a kill -9.
    let withdrawn = invite(&host, &id, "speaker-3", Role::Speaker, hour);
    let revocation = encode_token(&host.sign(Revocation {
        meeting: id.clone(),
        invite: "speaker-3".into(),
        at_ms: now_ms(),
    }));
    let post = |token: &str| {
        format!(
            "fetch('/api/meetings/{id}/revocations', {{method: 'POST', headers: {{'content-type': 'application/json'}}, body: JSON.stringify({{revocation: {token:?}}})}}).then(r => r.status)"
        )
    };
    // Only the host may revoke.
    let not_host = encode_token(&forger.sign(Revocation {
        meeting: id.clone(),
        invite: "speaker-1".into(),
        at_ms: now_ms(),
    }));
    assert_eq!(back.eval(&post(&not_host)).await.expect("post"), 400);
    assert_eq!(back.eval(&post(&revocation)).await.expect("post"), 200);
    let mut gone = lab.browser(&link("Gone", &withdrawn), &[]).await;
    refused(
        &mut gone,
        "a withdrawn invite",
        "This invite was withdrawn by the host",
    )
    .await;
    gone.close().await;
    back.close().await;
    late.close().await;
    node.kill().await;
    let _node = lab.node(&data, &args).await;
    let mut gone = lab.browser(&link("Gone again", &withdrawn), &[]).await;
    refused(
        &mut gone,
        "a withdrawn invite after a restart",
        "This invite was withdrawn by the host",
    )
    .await;
}
