//! Breakout rooms through a real node, with raw clients (signaling sockets with real keys):
//! the host opens two rooms and puts two people in each; everyone is told who is where;
//! chat stays in the room; someone who is not the host or a moderator cannot move anyone
//! (refused with the reason); a newcomer assigned to a room is placed in it on joining; at
//! their time the rooms close by themselves and everyone is back in the main room, where
//! chat reaches all again. A room spans nodes: its people at two nodes hear each other, and
//! each node keeps its own people to their room. Where the host lets people choose, each
//! puts themselves in a room (from the bar, in the browser) and nobody moves another. And in
//! real browsers, through the host's dialog: four people in
//! two rooms of two decode video and receive audio from their room only (the other room's
//! bytes flat), chat stays in the room, the host visits a room, and the timer brings all
//! four back to see each other again (runs as root: the browsers live in a namespace).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::raw::*;
use veche_trust::{encode_token, Action, ActionKind, Keypair, Policy};

fn action(signer: &Keypair, meeting: &str, kind: ActionKind, target: &Keypair) -> String {
    encode_token(&signer.sign(Action {
        meeting: meeting.into(),
        kind,
        target: target.public(),
        at_ms: now_ms(),
        authority: None,
    }))
}

/// The next `rooms` message on `ws` whose `count` is `count`.
async fn rooms_of(ws: &mut Ws, count: u64) -> Value {
    for _ in 0..50 {
        let v = next_of(ws, "rooms").await;
        if v["count"] == count {
            return v;
        }
    }
    panic!("no rooms message with {count} rooms");
}

/// The first `rooms` message on `ws` with `count` rooms and `placed` people in them.
async fn rooms_placed(ws: &mut Ws, count: u64, placed: usize) -> Value {
    for _ in 0..10 {
        let seen = rooms_of(ws, count).await;
        if seen["rooms"].as_object().map_or(0, |m| m.len()) == placed {
            return seen;
        }
    }
    panic!("nobody told of {placed} people in {count} rooms");
}

/// Chat texts `ws` receives within `wait` (after which it has heard all it will).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_keep_chat_to_the_room_and_close_by_themselves() {
    let (node, dir) = start_node("rooms", free_udp_port()).await;
    let port = node.http_port;
    let host = Keypair::from_secret(&[1; 32]);
    let people: Vec<Keypair> = (2..6u8).map(|n| Keypair::from_secret(&[n; 32])).collect();
    let names = ["Ana", "Ben", "Cas", "Dia"];
    let id = signed_meeting(port, &host, Policy::Anyone).await;
    let (mut hs, w) = joined(port, &host, &id, "Host", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let mut socks = Vec::new();
    let mut ids = Vec::new();
    for (k, name) in people.iter().zip(names) {
        let (s, w) = joined(port, k, &id, name, None).await;
        assert_eq!(w["type"], "welcome", "{name}: {w}");
        ids.push(w["you"].as_u64().expect("id"));
        socks.push(s);
    }

    // Ben is not a moderator: he cannot open rooms, nor put himself anywhere.
    let open = ActionKind::OpenRooms {
        rooms: 2,
        until_ms: now_ms() + 8_000,
        choose: false,
    };
    for kind in [open, ActionKind::Assign { room: 1 }] {
        let t = action(&people[1], &id, kind, &people[1]);
        send(&mut socks[1], json!({"type": "moderate", "action": t})).await;
        expect_refusal(
            &mut socks[1],
            "not_allowed",
            false,
            "only the host or a moderator",
        )
        .await;
    }

    // The host opens two rooms for 8 s: Ana and Ben in 1, Cas and Dia in 2.
    send(
        &mut hs,
        json!({"type": "moderate", "action": action(&host, &id, open, &host)}),
    )
    .await;
    for (k, room) in people.iter().zip([1u8, 1, 2, 2]) {
        let t = action(&host, &id, ActionKind::Assign { room }, k);
        send(&mut hs, json!({"type": "moderate", "action": t})).await;
    }
    // Everyone learns where everyone is.
    for s in &mut socks {
        let seen = rooms_placed(s, 2, 4).await;
        let want: serde_json::Map<String, Value> = ids
            .iter()
            .zip([1, 1, 2, 2])
            .map(|(i, r)| (i.to_string(), json!(r)))
            .collect();
        assert_eq!(seen["rooms"], Value::Object(want), "{seen}");
    }

    // Ana speaks in room 1: Ben hears her, Cas and Dia do not.
    send(&mut socks[0], json!({"type": "chat", "text": "room one"})).await;
    let heard: Vec<Vec<String>> = {
        let mut all = Vec::new();
        for s in &mut socks[1..] {
            all.push(chat_heard(s, Duration::from_millis(800)).await);
        }
        all
    };
    assert_eq!(heard[0], ["room one"], "Ben, in Ana's room");
    assert!(
        heard[1].is_empty() && heard[2].is_empty(),
        "room 2 heard nothing: {heard:?}"
    );

    // Eve, assigned to room 2 before she comes, is placed there when she joins.
    let eve = Keypair::from_secret(&[9; 32]);
    let t = action(&host, &id, ActionKind::Assign { room: 2 }, &eve);
    send(&mut hs, json!({"type": "moderate", "action": t})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut es, w) = joined(port, &eve, &id, "Eve", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let eve_id = w["you"].as_u64().expect("id").to_string();
    let placed = rooms_of(&mut es, 2).await;
    assert_eq!(placed["rooms"][&eve_id], 2, "{placed}");
    send(&mut socks[2], json!({"type": "chat", "text": "room two"})).await;
    assert_eq!(
        chat_heard(&mut es, Duration::from_millis(800)).await,
        ["room two"]
    );

    // At their time the rooms close by themselves: everyone is told, and chat reaches all.
    let closed = rooms_of(&mut socks[0], 0).await;
    assert_eq!(closed["rooms"], json!({}), "{closed}");
    for s in &mut socks[1..] {
        rooms_of(s, 0).await;
    }
    send(&mut socks[3], json!({"type": "chat", "text": "all of us"})).await;
    for (s, name) in socks[..3].iter_mut().zip(names) {
        let heard = chat_heard(s, Duration::from_millis(800)).await;
        assert_eq!(heard, ["all of us"], "{name}");
    }
    node.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// On the host's page `b`: open `count` breakout rooms for `minutes`, people placed by hand
/// (name → room).
async fn open_rooms_by_hand(
    b: &mut support::Browser,
    count: u8,
    minutes: &str,
    placed: &[(&str, u8)],
) {
    support::click(
        b,
        "the rooms button",
        ".people-list button[data-action=\"rooms\"]",
    )
    .await;
    b.wait_for(
        "the rooms dialog",
        "document.getElementById('rooms-open') ? true : null",
        Duration::from_secs(10),
    )
    .await;
    let places: Vec<String> = placed
        .iter()
        .map(|(n, r)| format!("[{n:?}, '{r}']"))
        .collect();
    b.eval(&format!(
        "(() => {{ const c = document.getElementById('rooms-count'); c.value = '{count}'; c.dispatchEvent(new Event('input'));
           document.getElementById('rooms-minutes').value = '{minutes}';
           document.getElementById('rooms-by-hand').click();
           for (const [n, r] of [{}]) document.querySelector(`select[aria-label=\"Room for ${{n}}\"]`).value = r;
           document.getElementById('rooms-open').click(); return true; }})()",
        places.join(", ")
    ))
    .await
    .expect("open the rooms");
}

/// Bytes `b` has received from `name`'s `source` (0 once that stream is gone).
async fn bytes_from(b: &mut support::Browser, name: &str, source: &str) -> u64 {
    b.eval(&format!(
        "veche.stats().then(s => s.inbound.filter(i => i.name === {name:?} && i.source === {source:?}).reduce((a, i) => a + i.bytesReceived, 0))"
    ))
    .await
    .expect("stats")
    .as_u64()
    .unwrap_or(0)
}

/// Browser tests take their turn: four Chromiums at once are all two cores carry.
static BROWSERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_browsers_in_two_rooms_see_and_hear_their_room_only_until_the_timer() {
    let _turn = BROWSERS.lock().await;
    use support::{assert_growing, click, host_starts, wait_text, Lab};
    let lab = Lab::new("rooms");
    let node = lab.local_node().await;
    let base = node.base();
    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    let path = host_starts(&mut ada, "Group work", &[], "Ada").await;
    let link = |name: &str| format!("{base}{path}?name={name}&autojoin=1");
    let mut bob = lab.browser(&link("Bob"), &[]).await;
    let mut cy = lab.browser(&link("Cy"), &[]).await;
    let mut dee = lab.browser(&link("Dee"), &[]).await;
    let everyone = ["Ada", "Bob", "Cy", "Dee"];
    let all_pairs: Vec<(&str, &str)> = everyone
        .iter()
        .flat_map(|a| {
            everyone
                .iter()
                .filter(move |b| a != *b)
                .map(move |b| (*a, *b))
        })
        .collect();
    for (b, who) in [
        (&mut ada, "Ada"),
        (&mut bob, "Bob"),
        (&mut cy, "Cy"),
        (&mut dee, "Dee"),
    ] {
        b.wait_for(
            &format!("{who} decoding the three others"),
            "veche.stats().then(s => ['Ada','Bob','Cy','Dee'].filter(n => s.inbound.some(i => i.name === n && i.source === 'camera' && i.framesDecoded > 0)).length >= 3 || null)",
            Duration::from_secs(60),
        )
        .await;
    }

    // The host opens two rooms by hand for 36 s: Bob in 1, Cy and Dee in 2; she stays in
    // the main room, then visits room 1.
    open_rooms_by_hand(&mut ada, 2, "0.6", &[("Bob", 1), ("Cy", 2), ("Dee", 2)]).await;
    for (b, who, room) in [
        (&mut bob, "Bob", 1),
        (&mut cy, "Cy", 2),
        (&mut dee, "Dee", 2),
    ] {
        b.wait_for(
            &format!("{who} in room {room}"),
            &format!("(veche.state().rooms && veche.state().rooms.mine === {room}) || null"),
            Duration::from_secs(10),
        )
        .await;
    }
    click(
        &mut ada,
        "the rooms button again",
        ".people-list button[data-action=\"rooms\"]",
    )
    .await;
    let (ada0, bob0) = (
        frames_from(&mut ada, "Bob").await,
        frames_from(&mut bob, "Ada").await,
    );
    click(
        &mut ada,
        "visit room 1",
        "dialog[open] button[data-visit=\"1\"]",
    )
    .await;
    let visited = std::time::Instant::now();
    // Timed from her click to the first new frames each way, polled every 100 ms.
    let mut first = [None, None];
    for _ in 0..150 {
        if first[0].is_none() && frames_from(&mut bob, "Ada").await > bob0 {
            first[0] = Some(visited.elapsed().as_secs_f64());
        }
        if first[1].is_none() && frames_from(&mut ada, "Bob").await > ada0 {
            first[1] = Some(visited.elapsed().as_secs_f64());
        }
        if first.iter().all(Option::is_some) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = |t: Option<f64>| t.map_or("never".to_owned(), |t| format!("{t:.2} s"));
    println!(
        "Ada's visit to room 1: Bob's first new frame of Ada {}, Ada's of Bob {} after her click",
        secs(first[0]),
        secs(first[1])
    );
    ada.wait_for(
        "Ada visiting room 1",
        "(veche.state().rooms && veche.state().rooms.mine === 1) || null",
        Duration::from_secs(10),
    )
    .await;
    wait_text(&mut bob, "Bob's room bar", "Breakout room 1").await;
    // Both keep decoding each other (the visit renegotiated nothing: they stayed subscribed
    // and their streams started again at a keyframe).
    decoding_again(&mut bob, "Bob", "Ada").await;
    decoding_again(&mut ada, "Ada", "Bob").await;

    // Each receives its room: Ada and Bob each other, Cy and Dee each other (growing), and
    // nothing from the other room (flat).
    let mut rooms = [
        (&"Ada", &mut ada),
        (&"Bob", &mut bob),
        (&"Cy", &mut cy),
        (&"Dee", &mut dee),
    ];
    let other_room = |me: &str| -> [&'static str; 2] {
        if me == "Ada" || me == "Bob" {
            ["Cy", "Dee"]
        } else {
            ["Ada", "Bob"]
        }
    };
    let mut before = Vec::new();
    for (me, b) in rooms.iter_mut() {
        let mut v = Vec::new();
        for other in other_room(me) {
            for source in ["mic", "camera"] {
                v.push(bytes_from(b, other, source).await);
            }
        }
        before.push(v);
    }
    {
        let mut browsers: Vec<(&str, &mut support::Browser)> =
            rooms.iter_mut().map(|(n, b)| (**n, &mut **b)).collect();
        assert_growing(
            &mut browsers,
            &[("Ada", "Bob"), ("Bob", "Ada"), ("Cy", "Dee"), ("Dee", "Cy")],
        )
        .await;
    }
    for ((me, b), v0) in rooms.iter_mut().zip(&before) {
        let mut v1 = Vec::new();
        for other in other_room(me) {
            for source in ["mic", "camera"] {
                v1.push(bytes_from(b, other, source).await);
            }
        }
        for (x0, x1) in v0.iter().zip(&v1) {
            assert!(
                x1 <= x0,
                "{me} still receives the other room: {v0:?} → {v1:?}"
            );
        }
    }

    // Chat stays in the room: Cy's message reaches Dee, not Bob.
    cy.eval("document.getElementById('chat-input').value = 'just us two'; document.getElementById('chat-send').click(); true")
        .await
        .expect("chat");
    dee.wait_for(
        "Dee reads Cy",
        "(veche.state().chat.some(m => m.text === 'just us two')) || null",
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bob_read = bob
        .eval("veche.state().chat.some(m => m.text === 'just us two')")
        .await
        .expect("Bob's chat");
    assert_eq!(bob_read, json!(false), "room 1 did not hear room 2");

    // The timer brings everyone back: all four see and hear each other again.
    for (b, who) in [
        (&mut ada, "Ada"),
        (&mut bob, "Bob"),
        (&mut cy, "Cy"),
        (&mut dee, "Dee"),
    ] {
        b.wait_for(
            &format!("{who} back in the main room"),
            "(veche.state().joined && veche.state().rooms === null && document.getElementById('room-bar').hidden) || null",
            Duration::from_secs(45),
        )
        .await;
    }
    // Everyone is subscribed again to the other room's people: each decodes the three
    // others before the figures are taken.
    for (b, who) in [
        (&mut ada, "Ada"),
        (&mut bob, "Bob"),
        (&mut cy, "Cy"),
        (&mut dee, "Dee"),
    ] {
        for other in everyone.iter().filter(|o| **o != who) {
            decoding_again(b, who, other).await;
        }
    }
    let mut browsers: Vec<(&str, &mut support::Browser)> = vec![
        ("Ada", &mut ada),
        ("Bob", &mut bob),
        ("Cy", &mut cy),
        ("Dee", &mut dee),
    ];
    assert_growing(&mut browsers, &all_pairs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spans_nodes_and_each_node_keeps_its_people_to_their_room() {
    let TwoNodes {
        dir, a, a_id, b, ..
    } = two_nodes("rooms-nodes").await;
    let host = Keypair::from_secret(&[1; 32]);
    let [ana, ben, cas] = [2u8, 3, 4].map(|n| Keypair::from_secret(&[n; 32]));
    let id = signed_meeting(a.http_port, &host, Policy::Anyone).await;
    learn_meeting(b.http_port, &id, &a_id, &host).await;
    // At A: the host and Ana; at B: Ben and Cas.
    let (mut hs, _) = joined(a.http_port, &host, &id, "Host", None).await;
    let (mut ana_s, _) = joined(a.http_port, &ana, &id, "Ana", None).await;
    let (mut ben_s, w) = joined(b.http_port, &ben, &id, "Ben", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let (mut cas_s, _) = joined(b.http_port, &cas, &id, "Cas", None).await;
    // Both nodes carry everyone before the rooms (the positive control): B's people hear A's.
    assert!(people_at(b.http_port, &id, 4).await, "B carries the four");
    send(&mut hs, json!({"type": "chat", "text": "hello all"})).await;
    assert_eq!(
        chat_heard(&mut ben_s, Duration::from_secs(2)).await,
        ["hello all"]
    );
    chat_heard(&mut cas_s, Duration::from_millis(300)).await;
    chat_heard(&mut ana_s, Duration::from_millis(300)).await;

    // Room 1 spans the nodes: Ana (at A) and Ben (at B); Cas (at B) in room 2.
    let open = ActionKind::OpenRooms {
        rooms: 2,
        until_ms: now_ms() + 60_000,
        choose: false,
    };
    send(
        &mut hs,
        json!({"type": "moderate", "action": action(&host, &id, open, &host)}),
    )
    .await;
    for (k, room) in [(&ana, 1u8), (&ben, 1), (&cas, 2)] {
        let t = action(&host, &id, ActionKind::Assign { room }, k);
        send(&mut hs, json!({"type": "moderate", "action": t})).await;
    }
    // B checked the host's signed decisions itself and placed its people.
    for s in [&mut ben_s, &mut cas_s] {
        rooms_placed(s, 2, 3).await;
    }
    // Ben speaks at B: Ana hears him at A; Cas (B, room 2) and the host (A, main) do not.
    send(
        &mut ben_s,
        json!({"type": "chat", "text": "room one, across"}),
    )
    .await;
    assert_eq!(
        chat_heard(&mut ana_s, Duration::from_secs(2)).await,
        ["room one, across"]
    );
    assert!(chat_heard(&mut cas_s, Duration::from_millis(500))
        .await
        .is_empty());
    assert!(chat_heard(&mut hs, Duration::from_millis(500))
        .await
        .iter()
        .all(|t| t != "room one, across"));

    chat_heard(&mut ben_s, Duration::from_millis(300)).await; // his own, echoed
                                                              // A message to every room: Ana may not (not a moderator: refused, nobody hears it) ...
    send(
        &mut ana_s,
        json!({"type": "chat", "text": "from me to all", "everyone": true}),
    )
    .await;
    expect_refusal(&mut ana_s, "not_allowed", false, "host or a moderator").await;
    // ... the host may: every room hears it, at both nodes, and it stays in their history.
    send(
        &mut hs,
        json!({"type": "chat", "text": "five minutes left", "everyone": true}),
    )
    .await;
    for (s, who) in [
        (&mut ana_s, "Ana"),
        (&mut ben_s, "Ben"),
        (&mut cas_s, "Cas"),
    ] {
        assert_eq!(
            chat_heard(s, Duration::from_secs(2)).await,
            ["five minutes left"],
            "{who}"
        );
    }
    let dee = Keypair::from_secret(&[5; 32]);
    let (_dee_s, w) = joined(b.http_port, &dee, &id, "Dee", None).await;
    let history: Vec<&str> = w["chat"]
        .as_array()
        .map(|c| c.iter().filter_map(|m| m["text"].as_str()).collect())
        .unwrap_or_default();
    assert!(history.contains(&"five minutes left"), "{w}");
    a.kill().await;
    b.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_the_host_lets_them_people_choose_their_own_room() {
    let (node, dir) = start_node("rooms-choose", free_udp_port()).await;
    let port = node.http_port;
    let host = Keypair::from_secret(&[1; 32]);
    let [ben, cas] = [3u8, 4].map(|n| Keypair::from_secret(&[n; 32]));
    let id = signed_meeting(port, &host, Policy::Anyone).await;
    let (mut hs, _) = joined(port, &host, &id, "Host", None).await;
    let (mut ben_s, w) = joined(port, &ben, &id, "Ben", None).await;
    let ben_id = w["you"].as_u64().expect("id").to_string();
    let (mut cas_s, _) = joined(port, &cas, &id, "Cas", None).await;
    let open = ActionKind::OpenRooms {
        rooms: 3,
        until_ms: now_ms() + 60_000,
        choose: true,
    };
    send(
        &mut hs,
        json!({"type": "moderate", "action": action(&host, &id, open, &host)}),
    )
    .await;
    let told = rooms_of(&mut ben_s, 3).await;
    assert_eq!(told["choose"], true, "{told}");
    // Ben picks room 3 himself: he is placed there, and Cas is told.
    let t = action(&ben, &id, ActionKind::Assign { room: 3 }, &ben);
    send(&mut ben_s, json!({"type": "moderate", "action": t})).await;
    let seen = rooms_placed(&mut cas_s, 3, 1).await;
    assert_eq!(seen["rooms"][&ben_id], 3, "{seen}");
    // But he cannot move Cas.
    let t = action(&ben, &id, ActionKind::Assign { room: 3 }, &cas);
    send(&mut ben_s, json!({"type": "moderate", "action": t})).await;
    expect_refusal(
        &mut ben_s,
        "not_allowed",
        false,
        "only the host or a moderator",
    )
    .await;
    // Nor can his socket place made-up people, each choosing for themselves.
    let made_up = Keypair::from_secret(&[77; 32]);
    let t = action(&made_up, &id, ActionKind::Assign { room: 1 }, &made_up);
    send(&mut ben_s, json!({"type": "moderate", "action": t})).await;
    expect_refusal(&mut ben_s, "not_allowed", false, "only for yourself").await;
    node.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_browser_a_student_picks_a_room_from_the_bar() {
    let _turn = BROWSERS.lock().await;
    use support::{click, host_starts, wait_text, Lab};
    let lab = Lab::new("roomspick");
    let node = lab.local_node().await;
    let base = node.base();
    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    let path = host_starts(&mut ada, "Free choice", &[], "Ada").await;
    let mut bob = lab
        .browser(&format!("{base}{path}?name=Bob&autojoin=1"), &[])
        .await;
    bob.wait_for(
        "Bob in",
        "(window.veche && veche.state().joined) || null",
        Duration::from_secs(30),
    )
    .await;
    ada.wait_for(
        "Ada sees Bob",
        "(veche.state().participants.some(p => p.name === 'Bob')) || null",
        Duration::from_secs(20),
    )
    .await;
    click(
        &mut ada,
        "the rooms button",
        ".people-list button[data-action=\"rooms\"]",
    )
    .await;
    ada.eval(
        "(() => { const c = document.getElementById('rooms-count'); c.value = '3'; c.dispatchEvent(new Event('input'));
           document.getElementById('rooms-choose').click();
           document.getElementById('rooms-open').click(); return true; })()",
    )
    .await
    .expect("open the rooms for people to choose");
    // Bob starts in the main room and picks room 3 from the bar.
    bob.wait_for(
        "Bob offered a choice",
        "(document.getElementById('room-pick') && veche.state().rooms && veche.state().rooms.mine === 0) || null",
        Duration::from_secs(10),
    )
    .await;
    bob.eval("(() => { const s = document.getElementById('room-pick'); s.value = '3'; s.dispatchEvent(new Event('change')); return true; })()")
        .await
        .expect("pick room 3");
    wait_text(&mut bob, "Bob in room 3", "Breakout room 3").await;
    ada.wait_for(
        "Ada sees Bob in room 3",
        "([...document.querySelectorAll('.people-list li.person')].some(l => l.textContent.includes('Bob') && l.textContent.includes('room 3'))) || null",
        Duration::from_secs(10),
    )
    .await;
}

/// Whether every source of `names` that `b` receives stays flat over 3 s, after `before`.
async fn flat_from(b: &mut support::Browser, me: &str, names: &[&str]) {
    let mut v0 = Vec::new();
    for n in names {
        for source in ["mic", "camera"] {
            v0.push(bytes_from(b, n, source).await);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut v1 = Vec::new();
    for n in names {
        for source in ["mic", "camera"] {
            v1.push(bytes_from(b, n, source).await);
        }
    }
    assert!(
        v0.iter().zip(&v1).all(|(a, b)| b <= a),
        "{me} still receives {names:?}: {v0:?} → {v1:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_browsers_a_room_of_two_on_two_nodes_sees_hears_and_chats_only_with_itself() {
    use support::{assert_growing, click, host_starts, lan_nodes, NatLab};
    let _turn = BROWSERS.lock().await;
    const BASE: &str = "http://localhost:7300";
    let lab = NatLab::up("roomsx", "cone");
    let nodes = lan_nodes(&lab, &["lan1a", "lan1b"]).await;
    let a_id = nodes[0].1.clone();
    let mut ada = lab.browser("lan1a", &format!("{BASE}/")).await;
    let path = host_starts(&mut ada, "Across", &[], "Ada").await;
    let mut bob = lab
        .browser("lan1a", &format!("{BASE}{path}?name=Bob&autojoin=1"))
        .await;
    let on_b = |name: &str| format!("{BASE}{path}?node={a_id}&name={name}&autojoin=1");
    let mut cy = lab.browser("lan1b", &on_b("Cy")).await;
    let mut dee = lab.browser("lan1b", &on_b("Dee")).await;
    for (b, who) in [
        (&mut ada, "Ada"),
        (&mut bob, "Bob"),
        (&mut cy, "Cy"),
        (&mut dee, "Dee"),
    ] {
        b.wait_for(
            &format!("{who} decoding the three others"),
            "veche.stats().then(s => ['Ada','Bob','Cy','Dee'].filter(n => s.inbound.some(i => i.name === n && i.source === 'camera' && i.framesDecoded > 0)).length >= 3 || null)",
            Duration::from_secs(90),
        )
        .await;
    }

    // Room 1: Bob (on A) and Cy (on B); room 2: Dee; Ada stays in the main room.
    open_rooms_by_hand(&mut ada, 2, "5", &[("Bob", 1), ("Cy", 1), ("Dee", 2)]).await;
    for (b, who, room) in [
        (&mut bob, "Bob", 1),
        (&mut cy, "Cy", 1),
        (&mut dee, "Dee", 2),
    ] {
        b.wait_for(
            &format!("{who} in room {room}"),
            &format!("(veche.state().rooms && veche.state().rooms.mine === {room}) || null"),
            Duration::from_secs(15),
        )
        .await;
    }
    // Moved one by one, Bob (in room 1 before Cy is) and Cy stop receiving each other and
    // start again: two renegotiations of each page, which on this loaded machine take
    // seconds. Wait (at most 20 s) until each decodes the other again.
    let start = std::time::Instant::now();
    decoding_again(&mut bob, "Bob", "Cy").await;
    decoding_again(&mut cy, "Cy", "Bob").await;
    println!(
        "Bob and Cy decode each other in room 1 {:.1} s after both were in it",
        start.elapsed().as_secs_f64()
    );
    // Bob and Cy see and hear each other across the nodes, and nobody else does.
    assert_growing(
        &mut [("Bob", &mut bob), ("Cy", &mut cy)],
        &[("Bob", "Cy"), ("Cy", "Bob")],
    )
    .await;
    flat_from(&mut bob, "Bob", &["Ada", "Dee"]).await;
    flat_from(&mut cy, "Cy", &["Ada", "Dee"]).await;
    flat_from(&mut dee, "Dee", &["Ada", "Bob", "Cy"]).await;
    flat_from(&mut ada, "Ada", &["Bob", "Cy", "Dee"]).await;

    // Chat stays in the room, across the nodes too.
    bob.eval("document.getElementById('chat-input').value = 'room one, across'; document.getElementById('chat-send').click(); true")
        .await
        .expect("chat");
    cy.wait_for(
        "Cy reads Bob",
        "(veche.state().chat.some(m => m.text === 'room one, across')) || null",
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (b, who) in [(&mut dee, "Dee"), (&mut ada, "Ada")] {
        let read = b
            .eval("veche.state().chat.some(m => m.text === 'room one, across')")
            .await
            .expect("chat");
        assert_eq!(read, json!(false), "{who} heard room 1");
    }

    // The host writes to every room from the dialog: both rooms read it, on both nodes.
    click(
        &mut ada,
        "the rooms button",
        ".people-list button[data-action=\"rooms\"]",
    )
    .await;
    ada.wait_for(
        "the message field",
        "document.getElementById('rooms-announce-text') ? true : null",
        Duration::from_secs(10),
    )
    .await;
    ada.eval("document.getElementById('rooms-announce-text').value = 'Five minutes left!'; document.getElementById('rooms-announce').click(); true")
        .await
        .expect("send to every room");
    for (b, who) in [(&mut bob, "Bob"), (&mut cy, "Cy"), (&mut dee, "Dee")] {
        b.wait_for(
            &format!("{who} reads the host's message to every room"),
            "(veche.state().chat.some(m => m.text === 'Five minutes left!' && m.everyone) && document.querySelector('.chat-everyone')) ? true : null",
            Duration::from_secs(10),
        )
        .await;
    }

    // The host brings everyone back: Dee (on B) and Bob (on A) see each other again.
    click(
        &mut ada,
        "the rooms button again",
        ".people-list button[data-action=\"rooms\"]",
    )
    .await;
    click(&mut ada, "bring everyone back", "dialog[open] #rooms-close").await;
    for (b, who) in [(&mut bob, "Bob"), (&mut cy, "Cy"), (&mut dee, "Dee")] {
        b.wait_for(
            &format!("{who} back in the main room"),
            "(veche.state().joined && veche.state().rooms === null) || null",
            Duration::from_secs(15),
        )
        .await;
    }
    // Everyone subscribes again to those of the other rooms (renegotiations, keyframes
    // across the link): wait until each pair below decodes again.
    let start = std::time::Instant::now();
    decoding_again(&mut bob, "Bob", "Dee").await;
    decoding_again(&mut dee, "Dee", "Bob").await;
    decoding_again(&mut ada, "Ada", "Cy").await;
    decoding_again(&mut dee, "Dee", "Ada").await;
    println!(
        "back in the main room, everyone decodes the others {:.1} s after the rooms closed",
        start.elapsed().as_secs_f64()
    );
    assert_growing(
        &mut [("Bob", &mut bob), ("Dee", &mut dee), ("Ada", &mut ada)],
        &[
            ("Bob", "Dee"),
            ("Dee", "Bob"),
            ("Ada", "Cy"),
            ("Dee", "Ada"),
        ],
    )
    .await;
}

/// Frames `b` has decoded of `other`'s camera so far.
async fn frames_from(b: &mut support::Browser, other: &str) -> u64 {
    b.eval(&format!(
        "veche.stats().then(s => s.inbound.filter(i => i.name === {other:?} && i.source === 'camera').reduce((n, i) => n + i.framesDecoded, 0))"
    ))
    .await
    .ok()
    .and_then(|v| v.as_u64())
    .unwrap_or(0)
}

/// Wait (at most 20 s) until `b` decodes `other`'s camera again: 5 more frames within a
/// second. A move between rooms unsubscribes and subscribes again, which takes seconds of
/// renegotiation and a keyframe (across a node link too).
async fn decoding_again(b: &mut support::Browser, who: &str, other: &str) {
    let frames = format!(
        "veche.stats().then(s => s.inbound.filter(i => i.name === {other:?} && i.source === 'camera').reduce((n, i) => n + i.framesDecoded, 0))"
    );
    let js = format!(
        "{frames}.then(a => new Promise(r => setTimeout(r, 1000)).then(() => {frames}).then(b => b >= a + 5 || null))"
    );
    b.wait_for(
        &format!("{who} decoding {other} again"),
        &js,
        Duration::from_secs(20),
    )
    .await;
}
