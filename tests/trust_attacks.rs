//! The attacks of the issue "One gate decides who is in a meeting", tried against a real node
//! with nothing but its HTTP API, its signaling socket and a real libp2p peer built from the
//! project's own crates; each is refused by the meeting's rules, with the error's kind
//! checked, and a positive control shows what would have flowed. Loopback only; no root.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use support::raw::*;
use support::Node;
use veche_meeting::Presence;
use veche_net::protocol::{ErrorCode, MeetingEvent, Request, Response};
use veche_trust::{
    encode_key, encode_token, Action, ActionKind, Invite, Keypair, MeetingDoc, Policy, Revocation,
    Role, Signed,
};

fn moderator_invite(host: &Keypair, meeting: &str, id: &str, who: &Keypair) -> Signed<Invite> {
    host.sign(Invite {
        meeting: meeting.into(),
        id: id.into(),
        role: Role::Moderator,
        expires_ms: now_ms() + 3_600_000,
        max_uses: None,
        invitee: Some(who.public()),
        parent: None,
    })
}

fn action(
    signer: &Keypair,
    meeting: &str,
    kind: ActionKind,
    target: &Keypair,
    authority: Option<&Signed<Invite>>,
) -> String {
    encode_token(&signer.sign(Action {
        meeting: meeting.into(),
        kind,
        target: target.public(),
        at_ms: now_ms(),
        authority: authority.cloned().map(Box::new),
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_earned_in_one_meeting_is_not_carried_into_another() {
    let (node, dir) = start_node("role", free_udp_port()).await;
    let port = node.http_port;
    let victim = Keypair::from_secret(&[1; 32]);
    let mallory = Keypair::from_secret(&[9; 32]);
    let theirs = signed_meeting(port, &victim, Policy::InviteOnly).await;
    let mine = signed_meeting(port, &mallory, Policy::Anyone).await;

    // Positive control: in his own meeting Mallory is the host.
    let (_s, w) = joined(port, &mallory, &mine, "Mallory", None).await;
    assert_eq!(
        (&w["type"], &w["role"]),
        (&json!("welcome"), &json!("host")),
        "{w}"
    );

    // He earns the host role for his own meeting on a socket, with a name the node refuses...
    let mut s = ws(port).await;
    let ch = challenge(&mut s).await;
    send(&mut s, join(&mallory, &ch, &mine, "", None)).await;
    let e = next_of(&mut s, "error").await;
    assert_eq!(
        (&e["code"], &e["fatal"]),
        (&json!("bad_name"), &json!(false)),
        "{e}"
    );
    // ...then joins the victim's invite-only meeting on the same socket: refused there.
    send(&mut s, join(&mallory, &ch, &theirs, "Mallory", None)).await;
    expect_refusal(&mut s, "invite_refused", true, "invitation only").await;
    node.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_moderator_cannot_end_mute_or_grant() {
    let (node, dir) = start_node("withdrawn", free_udp_port()).await;
    let port = node.http_port;
    let host = Keypair::from_secret(&[1; 32]);
    let mo = Keypair::from_secret(&[2; 32]);
    let sp = Keypair::from_secret(&[3; 32]);
    let id = signed_meeting(port, &host, Policy::Anyone).await;
    let mod_invite = moderator_invite(&host, &id, "mod-1", &mo);
    let token = encode_token(&mod_invite);

    // Positive control: while the invite holds, Mo joins as moderator and mutes Sp.
    let (mut sps, w) = joined(port, &sp, &id, "Sp", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let (mut mos, w) = joined(port, &mo, &id, "Mo", Some(&token)).await;
    assert_eq!(w["role"], "moderator", "{w}");
    send(&mut mos, json!({"type": "moderate", "action": action(&mo, &id, ActionKind::Mute, &sp, Some(&mod_invite))})).await;
    let m = next_of(&mut sps, "moderated").await;
    assert_eq!(m["action"], "mute", "{m}");
    drop(mos);

    // The host withdraws it.
    let rev = encode_token(&host.sign(Revocation {
        meeting: id.clone(),
        invite: "mod-1".into(),
        at_ms: now_ms(),
    }));
    let (status, body) = post(
        port,
        &format!("/api/meetings/{id}/revocations"),
        json!({"revocation": rev}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Mo comes back without it (the meeting admits anyone, as a speaker) and signs with it.
    let (mut mos, w) = joined(port, &mo, &id, "Mo", None).await;
    assert_eq!(w["role"], "speaker", "{w}");
    for (kind, target) in [
        (ActionKind::End, &mo),
        (ActionKind::Lock, &mo),
        (ActionKind::Mute, &sp),
        (ActionKind::Remove, &sp),
        (ActionKind::Spotlight, &sp),
        (ActionKind::EndSpotlight, &mo),
    ] {
        send(&mut mos, json!({"type": "moderate", "action": action(&mo, &id, kind, target, Some(&mod_invite))})).await;
        expect_refusal(&mut mos, "not_allowed", false, "withdrawn").await;
    }
    // Nor can the withdrawn invite make moderators.
    let sub = encode_token(&mo.sign(Invite {
        meeting: id.clone(),
        id: "mod-2".into(),
        role: Role::Moderator,
        expires_ms: now_ms() + 3_600_000,
        max_uses: None,
        invitee: Some(sp.public()),
        parent: Some(Box::new(mod_invite.clone())),
    }));
    send(&mut mos, json!({"type": "grant", "invite": sub})).await;
    let e = next_of(&mut mos, "error").await;
    assert_eq!(e["code"], "not_allowed", "{e}");
    // Nothing happened: the meeting is neither ended nor locked, and Sp is still in.
    let newcomer = Keypair::from_secret(&[4; 32]);
    let (_n, w) = joined(port, &newcomer, &id, "New", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    send(&mut sps, json!({"type": "chat", "text": "still here"})).await;
    assert_eq!(
        next_of(&mut sps, "chat").await["message"]["text"],
        "still here"
    );
    node.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_other_sites_learn_and_change_nothing() {
    let (node, dir) = start_node("stranger", free_udp_port()).await;
    let port = node.http_port;
    let host = Keypair::from_secret(&[1; 32]);
    let id = signed_meeting(port, &host, Policy::InviteOnly).await;
    let (_h, w) = joined(port, &host, &id, "Ada Lovelace", None).await;
    assert_eq!(w["role"], "host", "{w}");

    // Anyone with the id: that it exists, its title and how one gets in; nobody's name.
    let (status, body) = http(port, "GET", &format!("/api/meetings/{id}"), "", "").await;
    assert_eq!(status, 200, "{body}");
    let info: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (&info["title"], &info["invite_only"]),
        (&json!("Class"), &json!(true)),
        "{info}"
    );
    assert!(
        !body.contains("Ada") && !body.contains(&encode_key(&host.public())),
        "{body}"
    );
    assert!(
        info.get("participants").is_none() && info.get("nodes").is_none(),
        "{info}"
    );
    // The operator, on the node's own machine, sees who is there (the positive control).
    let (status, people) = http(port, "GET", &format!("/api/meetings/{id}/people"), "", "").await;
    assert_eq!(status, 200, "{people}");
    assert!(people.contains("Ada Lovelace"), "{people}");

    // A foreign Host (DNS rebinding to 127.0.0.1): refused, on pages and on the API.
    let attendance = format!("/api/meetings/{id}/attendance");
    // The operator's attendance (the positive control), once the join is written.
    let mut csv = String::new();
    for _ in 0..50 {
        let (status, body) = http(port, "GET", &attendance, "", "").await;
        assert_eq!(status, 200, "{body}");
        csv = body;
        if csv.contains("Ada Lovelace") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(csv.contains("Ada Lovelace"), "{csv}");
    for path in ["/", &format!("/api/meetings/{id}/people"), &attendance] {
        let (status, body) = http(port, "GET", path, "Host: rebind.example:7300\r\n", "").await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("bad_host"), "{body}");
    }
    let (status, _) = http(port, "GET", "/", "Host: localhost\r\n", "").await;
    assert_eq!(status, 200, "a loopback name is this node");
    // A foreign Origin on a state change, and on the signaling socket.
    let evil = "Origin: http://evil.example\r\n";
    let (status, body) = http(
        port,
        "POST",
        "/api/meetings",
        &format!("{JSON}{evil}"),
        r#"{"title":"x"}"#,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("bad_origin"), "{body}");
    let (status, _) = http(
        port,
        "POST",
        "/api/meetings",
        &format!("{JSON}Origin: http://127.0.0.1:{port}\r\n"),
        r#"{"title":"x"}"#,
    )
    .await;
    assert_eq!(status, 201, "the same origin may");
    let mut req = format!("ws://127.0.0.1:{port}/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("origin", "http://evil.example".parse().expect("header"));
    match connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!(
            "a foreign page's socket must be refused: {:?}",
            other.map(|_| ())
        ),
    }
    // A body-less POST (what a cross-site form or image can send) changes nothing.
    let (status, body) = http(
        port,
        "POST",
        "/api/peers/12D3KooWPjceQrSwdWXPyLLeABRXmuqt69Rg3sBYbU1Nft9HyQ6X/hello",
        "",
        "",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // Nobody but its creator signs an unsigned meeting.
    let (_, created) = post(port, "/api/meetings", json!({"title": "Open"})).await;
    let open = created["id"].as_str().expect("id");
    let stranger = Keypair::from_secret(&[9; 32]);
    let doc = encode_token(&stranger.sign(MeetingDoc {
        id: open.into(),
        title: "Mine".into(),
        host: stranger.public(),
        policy: Policy::Anyone,
        lobby: false,
        created_ms: now_ms(),
        ends_ms: None,
    }));
    let body = json!({"doc": doc, "claim": "guessed"}).to_string();
    let (status, answer) = http(
        port,
        "PUT",
        &format!("/api/meetings/{open}/doc"),
        JSON,
        &body,
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("not_creator"), "{answer}");
    node.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// A libp2p peer built from veche-net, on loopback, dialling the nodes at `addrs`.
fn hostile_peer(
    addrs: Vec<veche_net::Multiaddr>,
) -> (
    veche_net::NetHandle,
    veche_net::PeerId,
    mpsc::Receiver<veche_net::AppEvent>,
) {
    let key = libp2p_identity::Keypair::generate_ed25519();
    let id = key.public().to_peer_id();
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("veche-attacks-peer-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = veche_net::NetConfig {
        listen: vec![format!("/ip4/127.0.0.1/udp/{}/quic-v1", free_udp_port())
            .parse()
            .expect("addr")],
        mdns: false,
        bootstrap: addrs,
        relay: false,
        external: vec![],
        name: "mallory".into(),
        data_dir: dir,
    };
    let hello: veche_net::HelloSource = Arc::new(|| veche_net::protocol::NodeHello {
        name: "mallory".into(),
        version: "0.1.0".into(),
        protocol: 1,
        relay: false,
        meetings: vec![],
    });
    let (tx, rx) = mpsc::channel(64);
    let h = veche_net::start(
        key,
        config,
        hello,
        Some(tx),
        &mut prometheus_client::registry::Registry::default(),
    )
    .expect("start mallory");
    (h, id, rx)
}

/// A node on loopback with an invite-only meeting whose host, Ada, is in it, and a libp2p
/// peer of our own crates connected to it.
struct Scene {
    node: Node,
    dir: std::path::PathBuf,
    node_id: veche_net::PeerId,
    host: Keypair,
    id: String,
    ada: Ws,
    peer: veche_net::NetHandle,
    peer_id: veche_net::PeerId,
    to_peer: mpsc::Receiver<veche_net::AppEvent>,
    /// The node's libp2p address, for more peers.
    node_addr: veche_net::Multiaddr,
}

async fn scene(tag: &str) -> Scene {
    let p2p = free_udp_port();
    let (node, dir) = start_node(tag, p2p).await;
    let port = node.http_port;
    let (_, body) = http(port, "GET", "/api/node", "", "").await;
    let info: Value = serde_json::from_str(&body).expect("node info");
    let node_id: veche_net::PeerId = info["id"].as_str().expect("id").parse().expect("peer id");
    let host = Keypair::from_secret(&[1; 32]);
    let id = signed_meeting(port, &host, Policy::InviteOnly).await;
    let (ada, w) = joined(port, &host, &id, "Ada", None).await;
    assert_eq!(w["role"], "host", "{w}");
    let node_addr: veche_net::Multiaddr = format!("/ip4/127.0.0.1/udp/{p2p}/quic-v1/p2p/{node_id}")
        .parse()
        .expect("addr");
    let (peer, peer_id, to_peer) = hostile_peer(vec![node_addr.clone()]);
    Scene {
        node,
        dir,
        node_id,
        host,
        id,
        ada,
        peer,
        peer_id,
        to_peer,
        node_addr,
    }
}

/// The words of a node-protocol refusal (`refused`); anything else fails the test.
fn refusal(r: Response) -> String {
    match r {
        Response::Error {
            code: ErrorCode::Refused,
            message,
        } => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// `r` to the node from `peer`: its answer.
async fn ask_node(peer: &veche_net::NetHandle, node: veche_net::PeerId, r: Request) -> Response {
    tokio::time::timeout(Duration::from_secs(20), peer.request(node, r))
        .await
        .expect("an answer in 20 s")
        .expect("answered")
        .response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_merely_claims_a_meeting_gets_nothing_and_changes_nothing() {
    let Scene {
        node,
        dir,
        node_id,
        host,
        id,
        mut ada,
        peer: mallory,
        peer_id: mallory_id,
        to_peer: mut to_mallory,
        ..
    } = scene("node").await;
    let ask = |r: Request| ask_node(&mallory, node_id, r);
    let port = node.http_port;
    // It reaches the node (the positive control for everything refused below).
    assert!(matches!(ask(Request::Hello).await, Response::Hello(_)));

    // What a stranger may learn: the title. Not the host's document, not its history.
    match ask(Request::Meeting {
        id: id.clone(),
        presence: None,
    })
    .await
    {
        Response::Meeting {
            title,
            doc,
            revocations,
            actions,
            ..
        } => {
            assert_eq!(title, "Class");
            assert!(doc.is_none() && revocations.is_empty() && actions.is_empty());
        }
        other => panic!("expected the title only, got {other:?}"),
    }
    // A made-up person of its own (a fresh key's proof for Mallory's node, no invite):
    // refused by the meeting's rules, the document still withheld.
    let eve = Keypair::from_secret(&[9; 32]);
    let nonce = "nonce-0123456789abcdef".to_owned();
    let sig = serde_json::to_value(eve.sign_challenge(&mallory_id.to_string(), &id, &nonce))
        .expect("sig");
    let made_up = Presence {
        key: encode_key(&eve.public()),
        nonce: nonce.clone(),
        sig: sig.as_str().expect("sig").to_owned(),
        invite: None,
        admit: None,
    };
    match ask(Request::Meeting {
        id: id.clone(),
        presence: Some(encode_token(&made_up)),
    })
    .await
    {
        Response::Error {
            code: ErrorCode::Refused,
            message,
        } => {
            assert!(message.contains("invitation only"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Events: the host's own key with no proof, and Eve with hers. Refused whole.
    let events = vec![
        MeetingEvent::Sync { reply: true },
        MeetingEvent::Joined {
            id: 1,
            name: "The host".into(),
            audio: true,
            video: true,
            screen: false,
            hand: false,
            key: Some(encode_key(&host.public())),
            presence: None,
        },
        MeetingEvent::Joined {
            id: 2,
            name: "Eve".into(),
            audio: true,
            video: true,
            screen: false,
            hand: false,
            key: Some(made_up.key.clone()),
            presence: Some(encode_token(&made_up)),
        },
        MeetingEvent::Chat {
            id: 2,
            text: "hello from nowhere".into(),
            at: now_ms(),
            everyone: true,
        },
    ];
    let why = refusal(
        ask(Request::Events {
            meeting: id.clone(),
            events,
        })
        .await,
    );
    assert!(why.contains("let into this meeting"), "{why}");
    // Nor may it say what "its viewers" show of Ada's camera, or which layers they need
    // (which shape only the link to a member node, and the layers Ada's page encodes).
    let views = vec![MeetingEvent::Views {
        tiles: vec![veche_core::LinkView {
            participant: 1,
            origin: None,
            source: veche_core::Source::Camera,
            view: Some(veche_core::TileView {
                visible: false,
                height: 0,
            }),
            layers: Some(Vec::new()),
        }],
    }];
    let why = refusal(
        ask(Request::Events {
            meeting: id.clone(),
            events: views,
        })
        .await,
    );
    assert!(why.contains("let into this meeting"), "{why}");
    // A real media offer: refused, so it never learns the node's ICE credentials or media
    // address, and no link exists for it (a member's same offer is answered: see
    // `removing_its_person_ends_what_a_node_receives`).
    let peers_before = engine_peers(port).await;
    let why = refusal(ask(link_offer(&id)).await);
    assert!(why.contains("let into this meeting"), "{why}");
    assert!(
        media_nodes(port, &id).await.is_empty(),
        "a stranger is listed as a node of the meeting"
    );
    assert_eq!(
        engine_peers(port).await,
        peers_before,
        "a media connection was made for a stranger"
    );
    // A forged end (signed by Eve): refused; the meeting goes on.
    let end = action(&eve, &id, ActionKind::End, &eve, None);
    let why = refusal(
        ask(Request::Action {
            meeting: id.clone(),
            action: end,
        })
        .await,
    );
    assert!(why.contains("only the host or a moderator"), "{why}");
    // Nor can it open breakout rooms or put anyone (Eve herself included) in one, nor start
    // or stop a recording.
    let open = ActionKind::OpenRooms {
        rooms: 2,
        until_ms: now_ms() + 60_000,
        choose: false,
    };
    for kind in [
        open,
        ActionKind::Assign { room: 1 },
        ActionKind::CloseRooms,
        ActionKind::StartRecording,
        ActionKind::StopRecording,
    ] {
        let why = refusal(
            ask(Request::Action {
                meeting: id.clone(),
                action: action(&eve, &id, kind, &eve, None),
            })
            .await,
        );
        assert!(
            why.contains("only the host or a moderator"),
            "{kind:?}: {why}"
        );
    }

    // The host's own start, passed on by a node: checked, but nothing is recorded here (a
    // recording is made at the node the host sent it to, from their socket).
    let hosts_start = action(&host, &id, ActionKind::StartRecording, &host, None);
    let answer = ask(Request::Action {
        meeting: id.clone(),
        action: hosts_start,
    })
    .await;
    assert!(matches!(answer, Response::Ok), "{answer:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let made = std::fs::read_dir(dir.join("data").join("recordings")).map_or(0, |d| d.count());
    assert_eq!(made, 0, "a node's passed-on start made a recording here");

    // Ada saw none of it, while a real newcomer reaches her (the positive control).
    let bob = Keypair::from_secret(&[3; 32]);
    let bobs = encode_token(&host.sign(Invite {
        meeting: id.clone(),
        id: "bob-1".into(),
        role: Role::Speaker,
        expires_ms: now_ms() + 3_600_000,
        max_uses: None,
        invitee: None,
        parent: None,
    }));
    let (_bob, w) = joined(port, &bob, &id, "Bob", Some(&bobs)).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let mut seen = Vec::new();
    while let Some(v) = next(&mut ada).await {
        let done = v["type"] == "participant_joined" && v["participant"]["name"] == "Bob";
        seen.push(v);
        if done {
            break;
        }
    }
    assert!(
        seen.iter().any(|v| v["participant"]["name"] == "Bob"),
        "Ada hears of a real newcomer: {seen:?}"
    );
    let text = serde_json::to_string(&seen).expect("json");
    assert!(
        !text.contains("The host") && !text.contains("Eve") && !text.contains("nowhere"),
        "{text}"
    );
    // The meeting was not ended, and has just Ada and Bob in it.
    let (_again, w) = joined(port, &host, &id, "Ada again", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let mut names: Vec<String> = w["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    assert_eq!(names, ["Ada", "Bob"]);
    // And the node told Mallory nothing of the meeting. (That this channel does carry what
    // a node is told is shown in `removing_its_person_ends_what_a_node_receives`, where the
    // same kind of peer, once a member, hears of Ada.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Ok(ev) = to_mallory.try_recv() {
        if let veche_net::AppEvent::Request { request, .. } = ev {
            panic!("the node sent a stranger {request:?}");
        }
    }
    node.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// A node link's real media offer for `meeting` (one audio track, as str0m makes it).
fn link_offer(meeting: &str) -> Request {
    let mut rtc = str0m::Rtc::new(std::time::Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(
        str0m::media::MediaKind::Audio,
        str0m::media::Direction::SendOnly,
        None,
        None,
        None,
    );
    let (offer, _pending) = api.apply().expect("an offer");
    Request::Link {
        meeting: meeting.into(),
        link: 1,
        sdp: offer.to_sdp_string(),
        tracks: Default::default(),
    }
}

/// The nodes the node has a media link with in `meeting` (its operator's view).
async fn media_nodes(port: u16, meeting: &str) -> Vec<String> {
    let (status, body) = http(
        port,
        "GET",
        &format!("/api/meetings/{meeting}/people"),
        "",
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_owned))
        .collect()
}

/// The media connections the node's engine holds (browsers and node links: the
/// `veche_participants` gauge of `/metrics`).
async fn engine_peers(port: u16) -> i64 {
    let (status, body) = http(port, "GET", "/metrics", "", "").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("veche_participants "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no veche_participants in {body}"))
}

/// The presence `who` makes for `node` in `meeting`, with `invite`.
fn presence_for(who: &Keypair, node: &str, meeting: &str, invite: Option<&str>) -> Presence {
    let nonce = "nonce-fedcba9876543210".to_owned();
    let sig = serde_json::to_value(who.sign_challenge(node, meeting, &nonce)).expect("sig");
    Presence {
        key: encode_key(&who.public()),
        nonce,
        sig: sig.as_str().expect("sig").to_owned(),
        invite: invite.map(str::to_owned),
        admit: None,
    }
}

/// Pat, invited by `host` to `meeting` and joined through node `via`: her `joined` event
/// (id `n` on that node), carrying her presence for it.
fn pat_joined(host: &Keypair, meeting: &str, via: &str, n: u64) -> MeetingEvent {
    invited_joined(host, meeting, via, n, ("Pat", 5)).0
}

/// `name` (key from the secret `[seed; 32]`), invited by `host`, joined through `via`: her
/// `joined` event and her presence token.
fn invited_joined(
    host: &Keypair,
    meeting: &str,
    via: &str,
    n: u64,
    (name, seed): (&str, u8),
) -> (MeetingEvent, String) {
    let who = Keypair::from_secret(&[seed; 32]);
    let invite = encode_token(&host.sign(Invite {
        meeting: meeting.into(),
        id: format!("{name}-1"),
        role: Role::Speaker,
        expires_ms: now_ms() + 3_600_000,
        max_uses: None,
        invitee: Some(who.public()),
        parent: None,
    }));
    let presence = presence_for(&who, via, meeting, Some(&invite));
    let token = encode_token(&presence);
    let joined = MeetingEvent::Joined {
        id: n,
        name: name.into(),
        audio: true,
        video: false,
        screen: false,
        hand: false,
        key: Some(presence.key.clone()),
        presence: Some(token.clone()),
    };
    (joined, token)
}

/// `events` of `meeting` to the node from `peer`, which it must take (`ok`).
async fn events_taken(
    peer: &veche_net::NetHandle,
    node: veche_net::PeerId,
    meeting: &str,
    events: Vec<MeetingEvent>,
) {
    let meeting = meeting.to_owned();
    let answer = ask_node(peer, node, Request::Events { meeting, events }).await;
    assert!(matches!(answer, Response::Ok), "{answer:?}");
}

/// The next meeting request the node sends the peer within `limit` (answered `ok`).
async fn next_request(
    rx: &mut mpsc::Receiver<veche_net::AppEvent>,
    limit: Duration,
) -> Option<Request> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(veche_net::AppEvent::Request { request, reply, .. })) => {
                let _ = reply.send(Response::Ok);
                return Some(request);
            }
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_its_person_ends_what_a_node_receives() {
    let Scene {
        node,
        dir,
        node_id,
        host,
        id,
        mut ada,
        peer,
        peer_id,
        mut to_peer,
        ..
    } = scene("removal").await;
    let ask = |r: Request| ask_node(&peer, node_id, r);
    // The media connections before any node takes part (Ada's).
    let port = node.http_port;
    let alone = engine_peers(port).await;
    // Pat, invited, really joins through that node: her proof names it.
    let pat = Keypair::from_secret(&[5; 32]);
    let joined_ev = |n: u64| pat_joined(&host, &id, &peer_id.to_string(), n);
    let events = vec![MeetingEvent::Sync { reply: true }, joined_ev(1)];
    let answer = ask(Request::Events {
        meeting: id.clone(),
        events,
    })
    .await;
    assert!(matches!(answer, Response::Ok), "{answer:?}");
    // She is shown, and the node tells her node about the meeting (the positive control).
    let v = next_of(&mut ada, "participant_joined").await;
    assert_eq!(v["participant"]["name"], "Pat", "{v}");
    let told = next_request(&mut to_peer, Duration::from_secs(10)).await;
    assert!(
        matches!(&told, Some(Request::Events { events, .. }) if events.iter().any(|e| matches!(e, MeetingEvent::Joined { name, .. } if name == "Ada"))),
        "the member node hears of Ada: {told:?}"
    );

    // Its real media offer is answered (ICE credentials, a candidate): the engine made a
    // media connection for it (besides the one it offers that node itself).
    let peers_before = engine_peers(port).await;
    match ask(link_offer(&id)).await {
        Response::Link { sdp } => assert!(
            sdp.contains("a=ice-ufrag") && sdp.contains("a=candidate"),
            "{sdp}"
        ),
        other => panic!("a member's link offer: {other:?}"),
    }
    assert_eq!(media_nodes(port, &id).await, [peer_id.to_string()]);
    assert_eq!(
        engine_peers(port).await,
        peers_before + 1,
        "the link's connection"
    );

    // The host removes Pat.
    let remove = action(&host, &id, ActionKind::Remove, &pat, None);
    send(&mut ada, json!({"type": "moderate", "action": remove})).await;
    let v = next_of(&mut ada, "participant_left").await;
    assert!(v["id"].is_number(), "{v}");
    // Her node has nobody let in now: what it says is refused, even her again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = vec![MeetingEvent::Sync { reply: true }, joined_ev(2)];
    let why = refusal(
        ask(Request::Events {
            meeting: id.clone(),
            events: again,
        })
        .await,
    );
    assert!(why.contains("let into this meeting"), "{why}");
    // Its media links are gone with her (both ways), and a new offer is refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !media_nodes(port, &id).await.is_empty() || engine_peers(port).await != alone {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dismissed node's media links stay: nodes {:?}, engine peers {} (alone {alone})",
            media_nodes(port, &id).await,
            engine_peers(port).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let why = refusal(ask(link_offer(&id)).await);
    assert!(why.contains("let into this meeting"), "{why}");
    // And the node tells it nothing more: Ada's chat does not reach it.
    while to_peer.try_recv().is_ok() {}
    send(
        &mut ada,
        json!({"type": "chat", "text": "after the removal"}),
    )
    .await;
    assert_eq!(
        next_of(&mut ada, "chat").await["message"]["text"],
        "after the removal"
    );
    let late = next_request(&mut to_peer, Duration::from_secs(3)).await;
    assert!(
        !matches!(&late, Some(Request::Events { .. })),
        "a dismissed node is told nothing: {late:?}"
    );
    node.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Whether the node tells `rx`'s peer anything of the meeting within `limit` (answered
/// `ok`): the first `events` request that names one of its people, if any.
async fn told_of_people(
    rx: &mut mpsc::Receiver<veche_net::AppEvent>,
    limit: Duration,
) -> Option<Vec<MeetingEvent>> {
    let deadline = tokio::time::Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
        match next_request(rx, left).await {
            Some(Request::Events { events, .. })
                if events
                    .iter()
                    .any(|e| matches!(e, MeetingEvent::Joined { .. })) =>
            {
                return Some(events)
            }
            Some(_) => continue,
            None => return None,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_a_member_introduces_hears_nothing_without_its_own_persons_proof() {
    let Scene {
        node,
        dir,
        node_id,
        host,
        id,
        ada: _ada,
        peer: member,
        peer_id: member_id,
        to_peer: mut to_member,
        node_addr,
    } = scene("introduce").await;
    // A member: Pat, invited, joined through it.
    let events = vec![
        MeetingEvent::Sync { reply: true },
        pat_joined(&host, &id, &member_id.to_string(), 1),
    ];
    events_taken(&member, node_id, &id, events).await;
    assert!(
        told_of_people(&mut to_member, Duration::from_secs(10))
            .await
            .is_some(),
        "a member hears of Ada (the positive control of this channel)"
    );
    // Another peer, connected to the node, whom the member introduces.
    let (stranger, stranger_id, mut to_stranger) = hostile_peer(vec![node_addr]);
    assert!(matches!(
        ask_node(&stranger, node_id, Request::Hello).await,
        Response::Hello(_)
    ));
    let introduce = |presence: Option<String>| Request::Events {
        meeting: id.clone(),
        events: vec![MeetingEvent::Node {
            peer: stranger_id.to_string(),
            presence,
        }],
    };
    // Introduced with no proof, then with Pat's (a proof made for the member, not for it):
    // the introduction is taken from a member, and the node tells the stranger nothing.
    let answer = ask_node(&member, node_id, introduce(None)).await;
    assert!(matches!(answer, Response::Ok), "{answer:?}");
    let pats = match pat_joined(&host, &id, &member_id.to_string(), 1) {
        MeetingEvent::Joined { presence, .. } => presence,
        _ => unreachable!(),
    };
    let answer = ask_node(&member, node_id, introduce(pats)).await;
    assert!(matches!(answer, Response::Ok), "{answer:?}");
    let heard = told_of_people(&mut to_stranger, Duration::from_secs(4)).await;
    assert!(
        heard.is_none(),
        "an introduced node heard of the meeting: {heard:?}"
    );
    // Introduced with the proof of Quin, invited and joined through it: now it is told
    // (the positive control: the same peer, the same channel).
    let (_, quins) = invited_joined(&host, &id, &stranger_id.to_string(), 1, ("Quin", 6));
    let answer = ask_node(&member, node_id, introduce(Some(quins))).await;
    assert!(matches!(answer, Response::Ok), "{answer:?}");
    let heard = told_of_people(&mut to_stranger, Duration::from_secs(10)).await;
    assert!(
        heard.as_ref().is_some_and(|evs| evs
            .iter()
            .any(|e| matches!(e, MeetingEvent::Joined { name, .. } if name == "Ada"))),
        "a node introduced with its own person's proof hears of Ada: {heard:?}"
    );
    node.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// `link_offer`, naming its track as `origin`'s (another node's) person's voice.
fn link_offer_carrying(meeting: &str, origin: Option<String>) -> Request {
    let mut offer = link_offer(meeting);
    if let Request::Link { sdp, tracks, .. } = &mut offer {
        let mid = sdp
            .lines()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .expect("the offer's mid")
            .trim()
            .to_owned();
        tracks.insert(
            mid,
            veche_net::protocol::LinkTrack {
                participant: 1,
                name: "Quin".into(),
                source: veche_core::Source::Mic,
                origin,
            },
        );
    }
    offer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_node_cannot_feed_another_members_voice() {
    // Two member nodes, each with its own invited person let in. One offers a media link
    // whose track it says is the other's person's voice: it did not name this node's link
    // through it as its relay, so it could put words in Quin's mouth. Refused; its own
    // person's voice on the same kind of offer is taken (the positive control).
    let Scene {
        node,
        dir,
        node_id,
        host,
        id,
        ada: _ada,
        peer: mallory,
        peer_id: mallory_id,
        to_peer: _to_mallory,
        node_addr,
    } = scene("foreign").await;
    let port = node.http_port;
    let events = vec![
        MeetingEvent::Sync { reply: true },
        pat_joined(&host, &id, &mallory_id.to_string(), 1),
    ];
    events_taken(&mallory, node_id, &id, events).await;
    let (other, other_id, _to_other) = hostile_peer(vec![node_addr]);
    let (quin, _) = invited_joined(&host, &id, &other_id.to_string(), 1, ("Quin", 6));
    let events = vec![MeetingEvent::Sync { reply: true }, quin];
    events_taken(&other, node_id, &id, events).await;

    let peers_before = engine_peers(port).await;
    // The other member's person, or the node's own people (fed back as Ada): refused.
    for origin in [other_id.to_string(), node_id.to_string()] {
        let offer = link_offer_carrying(&id, Some(origin.clone()));
        let why = refusal(ask_node(&mallory, node_id, offer).await);
        assert!(why.contains("let into this meeting"), "{origin}: {why}");
        assert_eq!(
            engine_peers(port).await,
            peers_before,
            "a refused offer ({origin}) left a media connection"
        );
    }
    // Its own person's voice (no origin: its own) is taken.
    match ask_node(&mallory, node_id, link_offer_carrying(&id, None)).await {
        Response::Link { sdp } => assert!(sdp.contains("a=ice-ufrag"), "{sdp}"),
        other => panic!("a member's offer of its own person's voice: {other:?}"),
    }
    assert_eq!(
        engine_peers(port).await,
        peers_before + 1,
        "the accepted link's connection"
    );
    node.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// A node's libp2p address on loopback (`p2p` its QUIC port) and its id.
async fn p2p_addr(node: &Node, p2p: u16) -> (veche_net::Multiaddr, veche_net::PeerId) {
    let (_, body) = http(node.http_port, "GET", "/api/node", "", "").await;
    let info: Value = serde_json::from_str(&body).expect("node info");
    let id: veche_net::PeerId = info["id"].as_str().expect("id").parse().expect("peer id");
    let addr = format!("/ip4/127.0.0.1/udp/{p2p}/quic-v1/p2p/{id}")
        .parse()
        .expect("addr");
    (addr, id)
}

/// A line of `node`'s log with all of `words` in it, within `limit`.
async fn log_line(node: &Node, words: &[&str], limit: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let found = node
            .log_text()
            .lines()
            .find(|l| words.iter().all(|w| l.contains(w)))
            .map(str::to_owned);
        if found.is_some() || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_forwards_only_for_nodes_their_destination_admitted() {
    // Node A carries an invite-only meeting with Ada, its host; R is a relay that knows A.
    let a_p2p = free_udp_port();
    let (a, dir) = start_node("relay-dest", a_p2p).await;
    let (a_addr, a_id) = p2p_addr(&a, a_p2p).await;
    let r_p2p = free_udp_port();
    let r_dir = dir.join("relay");
    std::fs::create_dir_all(&r_dir).expect("dir");
    let a_boot = a_addr.to_string();
    let r = start_node_with(&r_dir, r_p2p, &["--relay", "--bootstrap", &a_boot]).await;
    let (r_addr, r_id) = p2p_addr(&r, r_p2p).await;
    let host = Keypair::from_secret(&[1; 32]);
    let id = signed_meeting(a.http_port, &host, Policy::InviteOnly).await;
    let (_ada, w) = joined(a.http_port, &host, &id, "Ada", None).await;
    assert_eq!(w["role"], "host", "{w}");

    // P is a member at A (Pat, invited, joined through it) and routes its media through R.
    let (p, p_id, _to_p) = hostile_peer(vec![a_addr.clone(), r_addr.clone()]);
    // S is a stranger to the meeting.
    let (s, s_id, _to_s) = hostile_peer(vec![r_addr.clone(), a_addr.clone()]);
    let events = vec![
        MeetingEvent::Sync { reply: true },
        pat_joined(&host, &id, &p_id.to_string(), 1),
        MeetingEvent::Via {
            relay: r_id.to_string(),
        },
    ];
    events_taken(&p, a_id, &id, events).await;

    // A answers a relay's question only for a member that named that relay.
    let relayed = |node: veche_net::PeerId| Request::Relayed {
        meeting: id.clone(),
        node: node.to_string(),
    };
    let why = refusal(ask_node(&s, a_id, relayed(s_id)).await);
    assert!(why.contains("not a member here"), "{why}");
    // Asked by someone other than the relay P named, even about P: refused too, in the same
    // words (the answer does not tell a member from a stranger).
    let about_p = refusal(ask_node(&s, a_id, relayed(p_id)).await);
    assert_eq!(about_p, why);

    // Both ask R to forward their media to A. R takes both requests...
    let ask_relay = Request::Events {
        meeting: id.clone(),
        events: vec![MeetingEvent::Relay {
            peer: a_id.to_string(),
        }],
    };
    let answer = ask_node(&s, r_id, ask_relay.clone()).await;
    assert!(matches!(answer, Response::Ok), "{answer:?}");
    let answer = ask_node(&p, r_id, ask_relay).await;
    assert!(matches!(answer, Response::Ok), "{answer:?}");
    // ...relays for the member (the positive control)...
    let (p_s, s_s) = (p_id.to_string(), s_id.to_string());
    let limit = Duration::from_secs(20);
    let relaying = log_line(&r, &["relaying media between two nodes", &p_s], limit).await;
    assert!(
        relaying.is_some(),
        "the relay forwards for a member; log {}",
        r.log.display()
    );
    // ...and not for the stranger, whom A does not admit.
    let refused = log_line(
        &r,
        &["the destination does not take that node's media", &s_s],
        limit,
    )
    .await;
    assert!(
        refused.is_some(),
        "the stranger's request is refused; log {}",
        r.log.display()
    );
    assert!(
        log_line(
            &r,
            &["relaying media between two nodes", &s_s],
            Duration::ZERO
        )
        .await
        .is_none(),
        "the relay never forwarded for the stranger"
    );

    // What one node can make a relay carry is bounded: 8 meetings (this one counts).
    let mut answers = Vec::new();
    for n in 0..8 {
        let other = format!("zzz-zzz-zz{n}");
        let req = Request::Events {
            meeting: other,
            events: vec![MeetingEvent::Sync { reply: false }],
        };
        answers.push(ask_node(&s, r_id, req).await);
    }
    assert!(
        answers[..7].iter().all(|a| matches!(a, Response::Ok)),
        "{answers:?}"
    );
    let why = refusal(answers.pop().expect("eighth"));
    assert!(why.contains("at most 8 meetings"), "{why}");
    r.kill().await;
    a.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_let_in_before_their_invite_was_withdrawn_stays_in_when_announced_again() {
    // A withdrawn invite lets nobody new in; who is in stays, on every node. Before, the host
    // node checked a person its member node announced again (a resync) as if new, dropped
    // them, and then refused that node everything, the host's end of the meeting included.
    let Scene {
        node,
        dir,
        node_id,
        host,
        id,
        ada: _ada,
        peer: member,
        peer_id: member_id,
        to_peer: _to_member,
        node_addr,
    } = scene("stays").await;
    let pat = pat_joined(&host, &id, &member_id.to_string(), 1);
    let events = vec![MeetingEvent::Sync { reply: true }, pat.clone()];
    events_taken(&member, node_id, &id, events).await;
    // The host withdraws Pat's invite.
    let rev = encode_token(&host.sign(Revocation {
        meeting: id.clone(),
        invite: "Pat-1".into(),
        at_ms: now_ms(),
    }));
    let (status, body) = post(
        node.http_port,
        &format!("/api/meetings/{id}/revocations"),
        json!({"revocation": rev}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Pat announced again, with the proof she came in with, and then the node's next word:
    // both taken, since Pat is still in.
    events_taken(&member, node_id, &id, vec![pat]).await;
    events_taken(&member, node_id, &id, vec![MeetingEvent::Left { id: 99 }]).await;
    // The negative control: someone new with a withdrawn invite is refused.
    let (newcomer, newcomer_id, _) = hostile_peer(vec![node_addr]);
    let late = pat_joined(&host, &id, &newcomer_id.to_string(), 1);
    let answer = ask_node(
        &newcomer,
        node_id,
        Request::Events {
            meeting: id.clone(),
            events: vec![late],
        },
    )
    .await;
    assert_eq!(
        refusal(answer),
        "nobody the node carries is let into this meeting"
    );
    drop(dir);
}

/// A node of our own, and a hostile libp2p peer connected to it (its handle, id and what
/// reaches it): the node, its directory and its peer id.
async fn node_and_hostile_peer(
    tag: &str,
) -> (
    Node,
    std::path::PathBuf,
    veche_net::PeerId,
    (
        veche_net::NetHandle,
        veche_net::PeerId,
        mpsc::Receiver<veche_net::AppEvent>,
    ),
) {
    let p2p = free_udp_port();
    let (node, dir) = start_node(tag, p2p).await;
    let (_, body) = http(node.http_port, "GET", "/api/node", "", "").await;
    let info: Value = serde_json::from_str(&body).expect("node info");
    let node_id: veche_net::PeerId = info["id"].as_str().expect("id").parse().expect("peer id");
    let node_addr: veche_net::Multiaddr = format!("/ip4/127.0.0.1/udp/{p2p}/quic-v1/p2p/{node_id}")
        .parse()
        .expect("addr");
    (node, dir, node_id, hostile_peer(vec![node_addr]))
}

/// Answer, as Mallory's node would, every request about meetings: the title to anyone, and
/// to a node showing a person, a document for that id signed by Mallory as host.
fn answer_as_home(rx: mpsc::Receiver<veche_net::AppEvent>, mallory: Keypair) {
    answer_as_home_with_state(rx, mallory, std::collections::HashMap::new());
}

/// The same for `host`, and for each meeting what it says holds there now (`state`:
/// rooms, spotlight), as a real home node would.
fn answer_as_home_with_state(
    mut rx: mpsc::Receiver<veche_net::AppEvent>,
    host: Keypair,
    states: std::collections::HashMap<String, Vec<String>>,
) {
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let veche_net::AppEvent::Request { request, reply, .. } = ev else {
                continue;
            };
            let answer = match request {
                Request::Meeting { id, presence } => {
                    let doc = presence.map(|_| {
                        encode_token(&host.sign(MeetingDoc {
                            id: id.clone(),
                            title: "Class".into(),
                            host: host.public(),
                            policy: Policy::Anyone,
                            lobby: false,
                            created_ms: now_ms(),
                            ends_ms: None,
                        }))
                    });
                    Response::Meeting {
                        state: states.get(&id).cloned().unwrap_or_default(),
                        id,
                        title: "Class".into(),
                        doc,
                        revocations: vec![],
                        actions: vec![],
                    }
                }
                _ => Response::Ok,
            };
            let _ = reply.send(answer);
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_node_that_hands_out_a_spotlight_or_rooms_nobody_with_authority_signed_is_not_believed(
) {
    // A hostile libp2p peer is the home node of two of Hana's meetings and hands out her
    // real document with each, and what "holds now": for one, her own opening of rooms,
    // her move of Bob to room 2 and her spotlight on Ana (the positive control); for the
    // other, the same signed by Eve, who has no authority in it.
    let (node, dir, node_id, (mallory_net, mallory_id, to_mallory)) =
        node_and_hostile_peer("forgedstate").await;
    let port = node.http_port;
    let [hana, ana, bob, eve] = [4u8, 5, 6, 7].map(|n| Keypair::from_secret(&[n; 32]));
    let (good, forged) = ("stg-ood-abc", "stf-org-xyz");
    let state_by = |signer: &Keypair, id: &str| {
        let open = ActionKind::OpenRooms {
            rooms: 2,
            until_ms: now_ms() + 60_000,
            choose: false,
        };
        vec![
            action(signer, id, open, &hana, None),
            action(signer, id, ActionKind::Assign { room: 2 }, &bob, None),
            action(signer, id, ActionKind::Spotlight, &ana, None),
        ]
    };
    let states = std::collections::HashMap::from([
        (good.to_owned(), state_by(&hana, good)),
        (forged.to_owned(), state_by(&eve, forged)),
    ]);
    answer_as_home_with_state(to_mallory, Keypair::from_secret(&[4; 32]), states);
    assert!(matches!(
        ask_node(&mallory_net, node_id, Request::Hello).await,
        Response::Hello(_)
    ));
    let ana_key = json!(encode_key(&ana.public()));
    for (id, believed) in [(good, true), (forged, false)] {
        let path = format!(
            "/api/meetings/{id}?node={mallory_id}&host={}",
            hana.public().pin()
        );
        let (status, body) = http(port, "GET", &path, "", "").await;
        assert_eq!(status, 200, "{body}");
        let (mut s, w) = joined(port, &bob, id, "Bob", None).await;
        assert_eq!(w["type"], "welcome", "Bob is let in to {id}: {w}");
        let me = w["you"].to_string();
        let (mut placed, mut spot) = (None, None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while let Ok(Some(v)) = tokio::time::timeout_at(deadline, next(&mut s)).await {
            match v["type"].as_str() {
                Some("rooms") => placed = Some(v["rooms"][me.trim_matches('"')].clone()),
                Some("spotlight") if !v["key"].is_null() => spot = Some(v["key"].clone()),
                _ => {}
            }
        }
        if believed {
            assert_eq!(placed, Some(json!(2)), "Hana's move puts Bob in room 2");
            assert_eq!(spot, Some(ana_key.clone()), "Hana's spotlight is on Ana");
        } else {
            assert!(
                placed
                    .as_ref()
                    .is_none_or(|r| r.is_null() || *r == json!(0)),
                "Eve's move put Bob in room {placed:?}"
            );
            assert_eq!(spot, None, "Eve's spotlight was believed");
        }
    }
    node.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_pins_the_host_refuses_a_home_node_that_hands_out_another_host() {
    // Ada shares a link to her meeting naming a node (Mallory's, say a typo or a takeover of
    // the address) and pinning her key; Mallory's node signs a document of its own for it.
    let (node, dir, node_id, (mallory_net, mallory_id, to_mallory)) =
        node_and_hostile_peer("pin").await;
    let port = node.http_port;
    let mallory = Keypair::from_secret(&[9; 32]);
    answer_as_home(to_mallory, Keypair::from_secret(&[9; 32]));
    assert!(matches!(
        ask_node(&mallory_net, node_id, Request::Hello).await,
        Response::Hello(_)
    ));
    let ada = Keypair::from_secret(&[1; 32]);
    let bob = Keypair::from_secret(&[2; 32]);

    // Positive control: a link pinning Mallory's own key takes Mallory's document, so what is
    // refused below is refused for the pin alone.
    let control = "pin-ctl-abc";
    let path = format!(
        "/api/meetings/{control}?node={mallory_id}&host={}",
        mallory.public().pin()
    );
    let (status, body) = http(port, "GET", &path, "", "").await;
    assert_eq!(status, 200, "{body}");
    let (_s, w) = joined(port, &bob, control, "Bob", None).await;
    assert_eq!(
        (&w["type"], &w["role"]),
        (&json!("welcome"), &json!("speaker")),
        "{w}"
    );

    let id = "pin-ada-xyz";
    let path = format!(
        "/api/meetings/{id}?node={mallory_id}&host={}",
        ada.public().pin()
    );
    let (status, body) = http(port, "GET", &path, "", "").await;
    assert_eq!(status, 200, "the title is learned: {body}");
    let (mut s, w) = joined(port, &bob, id, "Bob", None).await;
    assert_eq!(
        (&w["type"], &w["code"], &w["fatal"]),
        (&json!("error"), &json!("invite_refused"), &json!(true)),
        "{w}"
    );
    assert!(
        w["message"]
            .as_str()
            .is_some_and(|m| m.contains("not signed by the host the link names")),
        "{w}"
    );
    assert!(
        next(&mut s).await.is_none(),
        "a fatal refusal closes the socket"
    );
    // Nothing of Mallory's document stayed: the meeting is still unsigned here, and pinned.
    let (_, body) = http(port, "GET", &format!("/api/meetings/{id}"), "", "").await;
    let m: Value = serde_json::from_str(&body).expect("meeting");
    assert_eq!(
        (&m["signed"], &m["host_key"]),
        (&json!(false), &Value::Null),
        "{m}"
    );
    assert!(
        m["link"]
            .as_str()
            .is_some_and(|l| l.ends_with(&format!("&host={}", ada.public().pin()))),
        "{m}"
    );
    node.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Two nodes on loopback, their data under the returned directory: A and B (which dialled
/// A at its start), each with its libp2p address and id.
async fn home_and_other(
    tag: &str,
) -> (
    std::path::PathBuf,
    Node,
    (veche_net::Multiaddr, veche_net::PeerId),
    Node,
    (veche_net::Multiaddr, veche_net::PeerId),
) {
    let n = two_nodes(tag).await;
    let a_p2p_addr = p2p_addr(&n.a, n.a_p2p).await;
    let b_p2p_addr = p2p_addr(&n.b, n.b_p2p).await;
    (n.dir, n.a, a_p2p_addr, n.b, b_p2p_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_use_invite_lets_in_one_person_across_the_nodes_of_a_meeting() {
    // A is the meeting's home (the host made it there); B learned it from A's link.
    let (dir, a, (a_addr, a_id), b, _) = home_and_other("uses").await;
    let host = Keypair::from_secret(&[1; 32]);
    let id = signed_meeting(a.http_port, &host, Policy::InviteOnly).await;
    let path = format!(
        "/api/meetings/{id}?node={a_id}&host={}",
        host.public().pin()
    );
    let (status, body) = http(b.http_port, "GET", &path, "", "").await;
    assert_eq!(status, 200, "B learns the meeting: {body}");
    let [uno, dos, tres] = [21u8, 22, 23].map(|n| Keypair::from_secret(&[n; 32]));
    let used_up = |w: &Value| {
        assert_eq!(
            (&w["type"], &w["code"]),
            (&json!("error"), &json!("invite_refused")),
            "{w}"
        );
        assert!(
            w["message"].as_str().is_some_and(|m| m.contains("used up")),
            "{w}"
        );
    };

    // Used at B first: A counted it, so it is used at A too.
    let once = one_use(&host, &id, "once-b");
    let (_uno_s, w) = joined(b.http_port, &uno, &id, "Uno", Some(&once)).await;
    assert_eq!(w["type"], "welcome", "Uno at B: {w}");
    let (_s, w) = joined(a.http_port, &dos, &id, "Dos", Some(&once)).await;
    used_up(&w);
    // Used at A first: B asks A, which refuses.
    let other = one_use(&host, &id, "once-a");
    let (_dos_s, w) = joined(a.http_port, &dos, &id, "Dos", Some(&other)).await;
    assert_eq!(w["type"], "welcome", "Dos at A: {w}");
    let (_s, w) = joined(b.http_port, &tres, &id, "Tres", Some(&other)).await;
    used_up(&w);
    // The person who used it rejoins with it, at B.
    let (_s, w) = joined(b.http_port, &uno, &id, "Uno", Some(&once)).await;
    assert_eq!(w["type"], "welcome", "Uno again at B: {w}");

    // A node that lets in a person with a limited invite without asking A: A does not take
    // that person; once A counted the use (the honest way), it does (the positive control).
    let (p, p_id, _to_p) = hostile_peer(vec![a_addr.clone()]);
    let third = one_use(&host, &id, "once-p");
    let presence = encode_token(&presence_for(&tres, &p_id.to_string(), &id, Some(&third)));
    let events = || {
        vec![
            MeetingEvent::Sync { reply: true },
            MeetingEvent::Joined {
                id: 1,
                name: "Tres".into(),
                audio: true,
                video: false,
                screen: false,
                hand: false,
                key: Some(encode_key(&tres.public())),
                presence: Some(presence.clone()),
            },
        ]
    };
    let ask = |r: Request| ask_node(&p, a_id, r);
    let why = refusal(
        ask(Request::Events {
            meeting: id.clone(),
            events: events(),
        })
        .await,
    );
    assert!(why.contains("let into this meeting"), "{why}");
    let counted = ask(Request::UseInvite {
        meeting: id.clone(),
        presence: presence.clone(),
    })
    .await;
    assert!(matches!(counted, Response::Ok), "{counted:?}");
    events_taken(&p, a_id, &id, events()).await;
    // Counted once: the next person's use of it is refused at A.
    let (_s, w) = joined(a.http_port, &uno, &id, "Uno", Some(&third)).await;
    used_up(&w);
    a.kill().await;
    b.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// The next `knock` the host's socket gets: (key, name, waiting).
async fn next_knock(ws: &mut Ws) -> (String, String, bool) {
    let k = next_of(ws, "knock").await;
    (
        k["key"].as_str().expect("key").to_owned(),
        k["name"].as_str().expect("name").to_owned(),
        k["waiting"].as_bool().expect("waiting"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_waiting_at_another_node_is_let_in_or_turned_away_by_the_host_there() {
    // The host, at A (the meeting's home), keeps a waiting room; her students open the link
    // at their own node B.
    let (dir, a, (a_addr, a_id), b, (b_p2p, b_id)) = home_and_other("lobby2").await;
    let host = Keypair::from_secret(&[1; 32]);
    let id = signed_meeting_with(a.http_port, &host, Policy::Anyone, true).await;
    let (mut ada, w) = joined(a.http_port, &host, &id, "Ada", None).await;
    assert_eq!(w["role"], "host", "{w}");
    let path = format!(
        "/api/meetings/{id}?node={a_id}&host={}",
        host.public().pin()
    );
    let (status, body) = http(b.http_port, "GET", &path, "", "").await;
    assert_eq!(status, 200, "B learns the meeting: {body}");
    let [bob, cy, dan] = [31u8, 32, 33].map(|n| Keypair::from_secret(&[n; 32]));
    let key_of = |k: &Keypair| encode_key(&k.public());

    // Bob waits at B; Ada, at A, sees him and lets him in; he enters at B.
    let (mut bob_s, w) = joined(b.http_port, &bob, &id, "Bob", None).await;
    assert_eq!(w["type"], "lobby", "{w}");
    assert_eq!(
        next_knock(&mut ada).await,
        (key_of(&bob), "Bob".into(), true)
    );
    let admit = action(&host, &id, ActionKind::Admit, &bob, None);
    send(&mut ada, json!({"type": "moderate", "action": admit})).await;
    let w = next_of(&mut bob_s, "welcome").await;
    assert_eq!(w["role"], "speaker", "{w}");
    // Decided: off Ada's list.
    assert_eq!(
        next_knock(&mut ada).await,
        (key_of(&bob), String::new(), false)
    );
    // And in the meeting at A too: her node took him, by the decision it committed.
    let v = next_of(&mut ada, "participant_joined").await;
    assert_eq!(v["participant"]["name"], "Bob", "{v}");

    // Cy waits at B; Ada turns her away: she is told so there.
    let (mut cy_s, w) = joined(b.http_port, &cy, &id, "Cy", None).await;
    assert_eq!(w["type"], "lobby", "{w}");
    assert_eq!(next_knock(&mut ada).await, (key_of(&cy), "Cy".into(), true));
    let deny = action(&host, &id, ActionKind::Deny, &cy, None);
    send(&mut ada, json!({"type": "moderate", "action": deny})).await;
    expect_refusal(&mut cy_s, "denied", true, "did not let you in").await;
    assert_eq!(
        next_knock(&mut ada).await,
        (key_of(&cy), String::new(), false)
    );

    // Dan waits at B and gives up: Ada's list drops him.
    let (dan_s, w) = joined(b.http_port, &dan, &id, "Dan", None).await;
    assert_eq!(w["type"], "lobby", "{w}");
    assert_eq!(
        next_knock(&mut ada).await,
        (key_of(&dan), "Dan".into(), true)
    );
    // Over B's node protocol, a peer that is not the host neither lets Dan in with its own
    // signature nor gets a use counted at B, which is not the meeting's home.
    let (q, q_id, _to_q) = hostile_peer(vec![b_p2p]);
    let mallory = Keypair::from_secret(&[36; 32]);
    let forged = action(&mallory, &id, ActionKind::Admit, &dan, None);
    let why = refusal(
        ask_node(
            &q,
            b_id,
            Request::Action {
                meeting: id.clone(),
                action: forged,
            },
        )
        .await,
    );
    assert!(why.contains("only the host or a moderator"), "{why}");
    let use_at_b = Request::UseInvite {
        meeting: id.clone(),
        presence: encode_token(&presence_for(&dan, &q_id.to_string(), &id, None)),
    };
    let why = refusal(ask_node(&q, b_id, use_at_b).await);
    assert!(why.contains("not the meeting's home"), "{why}");
    drop(dan_s);
    let (key, _, waiting) = next_knock(&mut ada).await;
    assert_eq!((key, waiting), (key_of(&dan), false));

    // A node knocking with a proof made for another node shows nobody: refused, and the next
    // knock Ada sees is the honest one that follows it.
    let (p, p_id, _to_p) = hostile_peer(vec![a_addr.clone()]);
    let eve = Keypair::from_secret(&[34; 32]);
    let knock = |who: &Keypair, made_for: &str, name: &str| Request::Knock {
        meeting: id.clone(),
        presence: encode_token(&presence_for(who, made_for, &id, None)),
        name: name.into(),
        waiting: true,
    };
    let why = refusal(ask_node(&p, a_id, knock(&eve, &b_id.to_string(), "Eve")).await);
    assert!(why.contains("proof"), "{why}");
    let fay = Keypair::from_secret(&[35; 32]);
    let ok = ask_node(&p, a_id, knock(&fay, &p_id.to_string(), "Fay")).await;
    assert!(matches!(ok, Response::Ok), "{ok:?}");
    assert_eq!(
        next_knock(&mut ada).await,
        (key_of(&fay), "Fay".into(), true)
    );
    a.kill().await;
    b.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_every_room_from_another_nodes_non_moderator_stays_in_their_room() {
    let Scene {
        node,
        dir,
        node_id,
        host,
        id,
        mut ada,
        peer,
        peer_id,
        ..
    } = scene("everyone").await;
    let port = node.http_port;
    // Bo, here, and Pat, at the hostile node, are in the main room; the host visits room 1.
    let bo = Keypair::from_secret(&[6; 32]);
    let (mut bo_s, w) = joined(port, &bo, &id, "Bo", Some(&one_use(&host, &id, "bo-1"))).await;
    assert_eq!(w["type"], "welcome", "{w}");
    events_taken(
        &peer,
        node_id,
        &id,
        vec![
            MeetingEvent::Sync { reply: true },
            pat_joined(&host, &id, &peer_id.to_string(), 1),
        ],
    )
    .await;
    let v = next_of(&mut ada, "participant_joined").await;
    assert_eq!(v["participant"]["name"], "Bo", "{v}");
    let v = next_of(&mut ada, "participant_joined").await;
    assert_eq!(v["participant"]["name"], "Pat", "{v}");
    let open = ActionKind::OpenRooms {
        rooms: 1,
        until_ms: now_ms() + 60_000,
        choose: false,
    };
    send(
        &mut ada,
        json!({"type": "moderate", "action": action(&host, &id, open, &host, None)}),
    )
    .await;
    let visit = action(&host, &id, ActionKind::Assign { room: 1 }, &host, None);
    send(&mut ada, json!({"type": "moderate", "action": visit})).await;
    for _ in 0..20 {
        let v = next_of(&mut ada, "rooms").await;
        if v["rooms"].as_object().is_some_and(|r| r.len() == 1) {
            break;
        }
    }
    // Pat's node says she writes to every room: she is no moderator, so only her room (the
    // main room: Bo) hears it, not the host in room 1.
    let said = MeetingEvent::Chat {
        id: 1,
        text: "to every room, says Pat".into(),
        at: now_ms(),
        everyone: true,
    };
    events_taken(&peer, node_id, &id, vec![said]).await;
    assert_eq!(
        chat_heard(&mut bo_s, Duration::from_secs(3)).await,
        ["to every room, says Pat"],
        "her room hears her (the positive control)"
    );
    assert!(
        chat_heard(&mut ada, Duration::from_secs(1))
            .await
            .is_empty(),
        "another room heard a non-moderator's message to every room"
    );
    node.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}
