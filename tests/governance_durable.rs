//! kill -9 in the middle of a burst of invite uses, waiting-room decisions, removals, a lock
//! and an end:
//! after the restart every change a client saw acknowledged is there, and what the node
//! refused left no trace, and a person who used a one-use invite rejoins with it. Loopback
//! only; no root.

mod support;

use std::time::Duration;

use serde_json::json;
use support::raw::*;
use veche_trust::{encode_token, Action, ActionKind, Invite, Keypair, Policy, Role, Signed};

fn act(host: &Keypair, meeting: &str, kind: ActionKind, target: &Keypair) -> String {
    encode_token(&host.sign(Action {
        meeting: meeting.into(),
        kind,
        target: target.public(),
        at_ms: now_ms(),
        authority: None::<Box<Signed<Invite>>>,
    }))
}

/// What a client saw acknowledged before the kill.
#[derive(Debug)]
enum Seen {
    /// Joined with invite `n`.
    Used(usize),
    /// Let in from the waiting room.
    Admitted(usize),
    /// Told it was removed.
    Removed(usize),
    /// A join refused because the meeting is locked.
    Locked,
    /// Told the meeting ended.
    Ended,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_every_acknowledged_change_holds_and_refused_ones_left_no_trace() {
    const N: usize = 24;
    let p2p = free_udp_port();
    let (node, dir) = start_node("durable", p2p).await;
    let port = node.http_port;
    let host = Keypair::from_secret(&[1; 32]);
    let people: Vec<Keypair> = (0..N)
        .map(|i| Keypair::from_secret(&[10 + i as u8; 32]))
        .collect();
    let invited = signed_meeting(port, &host, Policy::InviteOnly).await;
    let waiting = signed_meeting_with(port, &host, Policy::Anyone, true).await;
    let invites: Vec<String> = (0..N)
        .map(|i| one_use(&host, &invited, &format!("once-{i}")))
        .collect();
    // An invite bound to its owner (outside the burst), tried first by someone else:
    // refused, and so not used.
    let owner = Keypair::from_secret(&[97; 32]);
    let bound = one_use_for(&host, &invited, "bound", Some(&owner));
    let intruder = Keypair::from_secret(&[99; 32]);
    let (_s, e) = joined(port, &intruder, &invited, "Intruder", Some(&bound)).await;
    assert_eq!(
        (&e["type"], &e["code"]),
        (&json!("error"), &json!("invite_refused")),
        "{e}"
    );

    // The host in both meetings.
    let (mut host_inv, w) = joined(port, &host, &invited, "Host", None).await;
    assert_eq!(w["role"], "host", "{w}");
    let (mut host_wait, w) = joined(port, &host, &waiting, "Host", None).await;
    assert_eq!(w["role"], "host", "{w}");

    // A meeting the host will lock and one she will end, with a pupil in it.
    let lockme = signed_meeting(port, &host, Policy::Anyone).await;
    let endme = signed_meeting(port, &host, Policy::Anyone).await;
    let (mut host_lock, w) = joined(port, &host, &lockme, "Host", None).await;
    assert_eq!(w["role"], "host", "{w}");
    let (mut host_end, w) = joined(port, &host, &endme, "Host", None).await;
    assert_eq!(w["role"], "host", "{w}");
    let pupil = Keypair::from_secret(&[96; 32]);
    let (mut pupil_s, w) = joined(port, &pupil, &endme, "Pupil", None).await;
    assert_eq!(w["type"], "welcome", "{w}");

    // Everyone knocks at the waiting room first (nothing is decided yet).
    let mut knockers = Vec::new();
    for (i, p) in people.iter().enumerate() {
        let (s, w) = joined(port, p, &waiting, &format!("W{i}"), None).await;
        assert_eq!(w["type"], "lobby", "{w}");
        knockers.push(s);
    }

    // The burst: joins with one-use invites, the host letting people in and removing some
    // of those who joined. Each client reports what it saw acknowledged.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, inv) in invites.iter().enumerate() {
        // The same person (keys are made from their secret).
        let (p, inv, m) = (
            Keypair::from_secret(&[10 + i as u8; 32]),
            inv.clone(),
            invited.clone(),
        );
        let tx = seen_tx.clone();
        tasks.spawn(async move {
            let Some((mut s, w)) = try_joined(port, &p, &m, &format!("U{i}"), Some(&inv)).await
            else {
                return;
            };
            if w["type"] != "welcome" {
                return;
            }
            let _ = tx.send(Seen::Used(i));
            // Held open until the kill closes it: a removal may reach it first.
            while let Some(v) = next(&mut s).await {
                if v["code"] == "removed" {
                    let _ = tx.send(Seen::Removed(i));
                    return;
                }
            }
        });
    }
    for (i, mut s) in knockers.into_iter().enumerate() {
        let tx = seen_tx.clone();
        tasks.spawn(async move {
            if next(&mut s).await.is_some_and(|v| v["type"] == "welcome") {
                let _ = tx.send(Seen::Admitted(i));
            }
        });
    }
    // The lock and the end, each seen taking effect: a join refused, the pupil told.
    let tx = seen_tx.clone();
    tasks.spawn(async move {
        while let Some(v) = next(&mut pupil_s).await {
            if v["code"] == "ended" {
                let _ = tx.send(Seen::Ended);
                return;
            }
        }
    });
    let tx = seen_tx.clone();
    let (m, probe) = (lockme.clone(), Keypair::from_secret(&[95; 32]));
    tasks.spawn(async move {
        for _ in 0..100 {
            let Some((_s, w)) = try_joined(port, &probe, &m, "Probe", None).await else {
                return;
            };
            if w["message"].as_str().is_some_and(|t| t.contains("locked")) {
                let _ = tx.send(Seen::Locked);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    drop(seen_tx);
    let lock = act(&host, &lockme, ActionKind::Lock, &host);
    send(&mut host_lock, json!({"type": "moderate", "action": lock})).await;
    let end = act(&host, &endme, ActionKind::End, &host);
    send(&mut host_end, json!({"type": "moderate", "action": end})).await;
    for p in &people {
        let admit = act(&host, &waiting, ActionKind::Admit, p);
        send(&mut host_wait, json!({"type": "moderate", "action": admit})).await;
    }
    let (mut used, mut admitted, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut locked, mut ended) = (false, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // Kill while the rest is still in flight, once each kind was acknowledged.
    while admitted.is_empty() || removed.is_empty() || !locked || !ended {
        let s = tokio::time::timeout_at(deadline, seen_rx.recv())
            .await
            .expect("acknowledgements within 30 s")
            .expect("clients still running");
        match s {
            Seen::Used(i) => {
                if used.is_empty() {
                    // The first person in is removed at once.
                    let remove = act(&host, &invited, ActionKind::Remove, &people[i]);
                    send(&mut host_inv, json!({"type": "moderate", "action": remove})).await;
                }
                used.push(i);
            }
            Seen::Admitted(i) => admitted.push(i),
            Seen::Removed(i) => removed.push(i),
            Seen::Locked => locked = true,
            Seen::Ended => ended = true,
        }
    }
    node.kill().await;
    while tasks.join_next().await.is_some() {}
    while let Ok(s) = seen_rx.try_recv() {
        match s {
            Seen::Used(i) => used.push(i),
            Seen::Admitted(i) => admitted.push(i),
            Seen::Removed(i) => removed.push(i),
            Seen::Locked | Seen::Ended => {}
        }
    }
    println!(
        "acknowledged before the kill: {} invite uses, {} let in, {} removed (of {N} each)",
        used.len(),
        admitted.len(),
        removed.len()
    );
    assert!(
        used.len() < N || admitted.len() < N,
        "the kill came after the burst"
    );

    // Restart on the same data directory.
    let node = start_node_in(&dir, p2p).await;
    let port = node.http_port;
    let stranger = Keypair::from_secret(&[98; 32]);
    for &i in &used {
        // A one-use invite seen used stays used.
        let (_s, e) = joined(port, &stranger, &invited, "Again", Some(&invites[i])).await;
        assert_eq!(e["code"], "invite_refused", "invite {i}: {e}");
        assert!(
            e["message"].as_str().is_some_and(|m| m.contains("used up")),
            "{e}"
        );
    }
    // The person who used it rejoins with it (a reload after the node came back): it was
    // used by them, and admits them again.
    let rejoining: Vec<usize> = used
        .iter()
        .copied()
        .filter(|i| !removed.contains(i))
        .collect();
    assert!(
        !rejoining.is_empty(),
        "nobody to rejoin: used {used:?}, removed {removed:?}"
    );
    for &i in &rejoining {
        let (_s, w) = joined(port, &people[i], &invited, "Back", Some(&invites[i])).await;
        assert_eq!(
            w["type"], "welcome",
            "person {i} with their own invite: {w}"
        );
    }
    for &i in &admitted {
        // Someone let in comes back without waiting.
        let (_s, w) = joined(port, &people[i], &waiting, "Back", None).await;
        assert_eq!(w["type"], "welcome", "person {i}: {w}");
    }
    for &i in &removed {
        let (_s, e) = joined(
            port,
            &people[i],
            &invited,
            "Back",
            Some(&invites[(i + 1) % N]),
        )
        .await;
        assert_eq!(e["code"], "invite_refused", "person {i}: {e}");
        assert!(
            e["message"].as_str().is_some_and(|m| m.contains("removed")),
            "{e}"
        );
    }
    // The lock and the end seen before the kill hold after it.
    let newcomer = Keypair::from_secret(&[94; 32]);
    let (_s, e) = joined(port, &newcomer, &lockme, "New", None).await;
    assert_eq!(e["code"], "invite_refused", "{e}");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("locked")),
        "{e}"
    );
    let (_s, e) = joined(port, &pupil, &endme, "Pupil", None).await;
    assert_eq!(e["code"], "invite_refused", "{e}");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("ended")),
        "{e}"
    );
    // The refused attempt with the bound invite used nothing: its holder still gets in.
    let (_s, w) = joined(port, &owner, &invited, "Owner", Some(&bound)).await;
    assert_eq!(w["type"], "welcome", "{w}");
    node.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_deletes_a_meeting_at_once_and_nobody_else_can() {
    let p2p = free_udp_port();
    let (node, dir) = start_node("delete", p2p).await;
    let port = node.http_port;
    let host = Keypair::from_secret(&[1; 32]);
    let mo = Keypair::from_secret(&[2; 32]);
    let pupil = Keypair::from_secret(&[3; 32]);
    let late = Keypair::from_secret(&[4; 32]);
    let id = signed_meeting_with(port, &host, Policy::Anyone, true).await;
    let kept = signed_meeting(port, &host, Policy::Anyone).await;
    let mod_invite = host.sign(Invite {
        meeting: id.clone(),
        id: "mod-1".into(),
        role: Role::Moderator,
        expires_ms: now_ms() + 3_600_000,
        max_uses: None,
        invitee: Some(mo.public()),
        parent: None,
    });
    let (mut host_s, w) = joined(port, &host, &id, "Host", None).await;
    assert_eq!(w["role"], "host", "{w}");
    let (mut mo_s, w) = joined(port, &mo, &id, "Mo", Some(&encode_token(&mod_invite))).await;
    assert_eq!(w["role"], "moderator", "{w}");
    let admit = act(&host, &id, ActionKind::Admit, &pupil);
    let (mut pupil_s, w) = joined(port, &pupil, &id, "Pupil", None).await;
    assert_eq!(w["type"], "lobby", "{w}");
    send(&mut host_s, json!({"type": "moderate", "action": admit})).await;
    assert_eq!(next_of(&mut pupil_s, "welcome").await["type"], "welcome");
    // Someone still waiting when the meeting goes.
    let (mut late_s, w) = joined(port, &late, &id, "Late", None).await;
    assert_eq!(w["type"], "lobby", "{w}");

    let delete = |end: String| {
        let body = json!({ "end": end }).to_string();
        let path = format!("/api/meetings/{id}");
        async move { http(port, "DELETE", &path, JSON, &body).await }
    };
    // The moderator may end the meeting, not delete it; nor may the host's lock or a
    // stranger's end. Nothing changes: the pupil still chats.
    let moderators_end = encode_token(&mo.sign(Action {
        meeting: id.clone(),
        kind: ActionKind::End,
        target: mo.public(),
        at_ms: now_ms(),
        authority: Some(Box::new(mod_invite.clone())),
    }));
    for (what, end, status, code) in [
        ("moderator's end", moderators_end, 403, "not_host"),
        (
            "host's lock",
            act(&host, &id, ActionKind::Lock, &host),
            403,
            "not_host",
        ),
        (
            "stranger's end",
            act(&late, &id, ActionKind::End, &late),
            403,
            "not_host",
        ),
        ("garbage", "not-a-token".into(), 400, "bad_action"),
    ] {
        let (s, body) = delete(end).await;
        let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(
            (s, body["error"].as_str()),
            (status, Some(code)),
            "{what}: {body}"
        );
    }
    // The host's own end, sent by another site's page through her browser: refused at the
    // door (the guard every state change passes).
    let hosts_end = json!({ "end": act(&host, &id, ActionKind::End, &host) }).to_string();
    let (s, body) = http(
        port,
        "DELETE",
        &format!("/api/meetings/{id}"),
        &format!("{JSON}Origin: http://evil.example\r\n"),
        &hosts_end,
    )
    .await;
    assert!(s == 403 && body.contains("bad_origin"), "{s} {body}");
    send(&mut pupil_s, json!({"type": "chat", "text": "still here"})).await;
    assert_eq!(
        next_of(&mut pupil_s, "chat").await["message"]["text"],
        "still here"
    );

    // The host's own end: gone at once, its people told, its waiter turned away.
    let (s, body) = delete(act(&host, &id, ActionKind::End, &host)).await;
    assert_eq!(s, 200, "{body}");
    expect_refusal(&mut pupil_s, "ended", true, "ended").await;
    expect_refusal(&mut late_s, "ended", true, "ended").await;
    expect_refusal(&mut host_s, "ended", true, "ended").await;
    expect_refusal(&mut mo_s, "ended", true, "ended").await;
    let (s, body) = http(port, "GET", &format!("/api/meetings/{id}"), "", "").await;
    assert_eq!(s, 404, "{body}");
    let (_s, e) = joined(port, &pupil, &id, "Pupil", None).await;
    assert_eq!(e["code"], "unknown_meeting", "{e}");
    let (s, _) = delete(act(&host, &id, ActionKind::End, &host)).await;
    assert_eq!(s, 404, "deleted already");

    // Deleted on disk: after a kill -9 it is still gone, and the other meeting still there.
    node.kill().await;
    let node = start_node_in(&dir, p2p).await;
    let port = node.http_port;
    let (s, body) = http(port, "GET", &format!("/api/meetings/{id}"), "", "").await;
    assert_eq!(s, 404, "{body}");
    let (s, body) = http(port, "GET", &format!("/api/meetings/{kept}"), "", "").await;
    assert_eq!(s, 200, "{body}");
    node.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}
