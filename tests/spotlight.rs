//! The host's spotlight across two nodes, with raw clients (signaling sockets with real
//! keys): someone who is neither host nor moderator cannot put anyone in the spotlight
//! (refused with the reason at the node they reach, and nobody is told anything); the host's
//! spotlight on a person at the other node reaches everyone at both nodes, each node having
//! checked the signature itself; a newcomer is told it after the welcome; an older
//! spotlight replayed changes nothing; the host's end takes it off everywhere. Loopback
//! only; no root.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::raw::*;
use veche_trust::{encode_key, encode_token, Action, ActionKind, Keypair, Policy};

fn action(
    signer: &Keypair,
    meeting: &str,
    kind: ActionKind,
    target: &Keypair,
    at_ms: u64,
) -> String {
    encode_token(&signer.sign(Action {
        meeting: meeting.into(),
        kind,
        target: target.public(),
        at_ms,
        authority: None,
    }))
}

/// The `spotlight` messages a socket gets within `wait` (whatever else comes is passed over).
async fn spotlights(ws: &mut Ws, wait: Duration) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(v)) = tokio::time::timeout_at(deadline, next(ws)).await {
        if v["type"] == "spotlight" {
            seen.push(v["key"].clone());
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_spotlight_reaches_both_nodes_and_nobody_else_can_set_one() {
    let TwoNodes {
        dir, a, a_id, b, ..
    } = two_nodes("spotlight").await;
    let host = Keypair::from_secret(&[1; 32]);
    let [ana, ben, cas, dan] = [2u8, 3, 4, 5].map(|n| Keypair::from_secret(&[n; 32]));
    let id = signed_meeting(a.http_port, &host, Policy::Anyone).await;
    learn_meeting(b.http_port, &id, &a_id, &host).await;
    // At A: the host and Ana; at B: Ben and Cas.
    let (mut hs, _) = joined(a.http_port, &host, &id, "Host", None).await;
    let (mut ana_s, _) = joined(a.http_port, &ana, &id, "Ana", None).await;
    let (mut ben_s, w) = joined(b.http_port, &ben, &id, "Ben", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let (mut cas_s, _) = joined(b.http_port, &cas, &id, "Cas", None).await;
    // Both nodes carry everyone (chat from A reaches B) before anything is tried.
    assert!(
        people_at(b.http_port, &id, 4).await,
        "B carries the four of them"
    );

    // Cas, at B, signs a spotlight of herself, then of Ben: B refuses both, with the reason.
    for target in [&cas, &ben] {
        let t = action(&cas, &id, ActionKind::Spotlight, target, now_ms());
        send(&mut cas_s, json!({"type": "moderate", "action": t})).await;
        expect_refusal(&mut cas_s, "not_allowed", false, "moderator").await;
    }
    // Ana, at A, tries the same there.
    let t = action(&ana, &id, ActionKind::Spotlight, &ana, now_ms());
    send(&mut ana_s, json!({"type": "moderate", "action": t})).await;
    expect_refusal(&mut ana_s, "not_allowed", false, "moderator").await;

    // The host puts Ben (at B) in the spotlight: told at both nodes, and nothing before it.
    let older = action(&host, &id, ActionKind::Spotlight, &ana, now_ms() - 1_000);
    let on_ben = action(&host, &id, ActionKind::Spotlight, &ben, now_ms());
    send(&mut hs, json!({"type": "moderate", "action": on_ben})).await;
    let ben_key = json!(encode_key(&ben.public()));
    for (who, s) in [
        ("the host", &mut hs),
        ("Ana", &mut ana_s),
        ("Ben", &mut ben_s),
        ("Cas", &mut cas_s),
    ] {
        assert_eq!(
            spotlights(s, Duration::from_secs(3)).await,
            std::slice::from_ref(&ben_key),
            "{who}: told of Ben once, and of nobody the refused ones named"
        );
    }
    // A newcomer at B is told after the welcome.
    let (mut dan_s, w) = joined(b.http_port, &dan, &id, "Dan", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    assert_eq!(
        spotlights(&mut dan_s, Duration::from_secs(2)).await,
        std::slice::from_ref(&ben_key)
    );
    // An older spotlight, signed before Ben's, arrives late: valid, but it decides nothing.
    send(&mut hs, json!({"type": "moderate", "action": older})).await;
    assert!(
        spotlights(&mut dan_s, Duration::from_secs(2))
            .await
            .is_empty(),
        "the newest decides"
    );

    // The host ends it: everyone at both nodes is told.
    let end = action(&host, &id, ActionKind::EndSpotlight, &host, now_ms());
    send(&mut hs, json!({"type": "moderate", "action": end})).await;
    for (who, s) in [
        ("Ana", &mut ana_s),
        ("Dan", &mut dan_s),
        ("Cas", &mut cas_s),
    ] {
        assert_eq!(
            spotlights(s, Duration::from_secs(3)).await,
            [Value::Null],
            "{who}"
        );
    }
    drop((hs, ana_s, ben_s, cas_s, dan_s));
    a.kill().await;
    b.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_learns_the_meeting_later_places_its_people_in_their_rooms_and_spotlight() {
    let TwoNodes {
        dir, a, a_id, b, ..
    } = two_nodes("learnstate").await;
    let host = Keypair::from_secret(&[1; 32]);
    let [ana, ben] = [2u8, 3].map(|n| Keypair::from_secret(&[n; 32]));
    let id = signed_meeting(a.http_port, &host, Policy::Anyone).await;
    let (mut hs, _) = joined(a.http_port, &host, &id, "Host", None).await;
    let (mut ana_s, _) = joined(a.http_port, &ana, &id, "Ana", None).await;
    // At A, before B knows the meeting: two rooms, Ben put in room 2, Ana in the spotlight.
    let open = ActionKind::OpenRooms {
        rooms: 2,
        until_ms: now_ms() + 60_000,
        choose: false,
    };
    for (kind, target) in [
        (open, &host),
        (ActionKind::Assign { room: 2 }, &ben),
        (ActionKind::Spotlight, &ana),
    ] {
        let t = action(&host, &id, kind, target, now_ms());
        send(&mut hs, json!({"type": "moderate", "action": t})).await;
    }
    // The positive control at A: Ana is told of the spotlight.
    let ana_key = json!(encode_key(&ana.public()));
    assert_eq!(
        spotlights(&mut ana_s, Duration::from_secs(2)).await,
        std::slice::from_ref(&ana_key)
    );
    // B learns the meeting only now (a link to it opened there), then Ben joins at B: he is
    // put in room 2 and told whose camera is on the stage, by B's own check of what A
    // handed over.
    learn_meeting(b.http_port, &id, &a_id, &host).await;
    let (mut ben_s, w) = joined(b.http_port, &ben, &id, "Ben", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let me = w["you"].clone();
    let mut placed = None;
    let mut spot = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(v)) = tokio::time::timeout_at(deadline, next(&mut ben_s)).await {
        match v["type"].as_str() {
            Some("rooms") => placed = Some(v["rooms"][me.to_string().trim_matches('"')].clone()),
            Some("spotlight") => spot = Some(v["key"].clone()),
            _ => {}
        }
        if placed.is_some() && spot.is_some() {
            break;
        }
    }
    assert_eq!(placed, Some(json!(2)), "Ben is in room 2 at B");
    assert_eq!(
        spot,
        Some(ana_key),
        "and B tells him Ana is in the spotlight"
    );
    drop((hs, ana_s, ben_s));
    a.kill().await;
    b.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}
