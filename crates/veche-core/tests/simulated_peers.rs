//! Drive the forwarding core with simulated peers: no sockets, no clock, no sleeps.
//!
//! `Sim` plays the media driver: it answers `Subscribe` by negotiating (taking
//! `negotiation` of simulated time) and then reporting the subscription ready, counts the
//! packets each peer receives per track, and records keyframe requests and notices.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use veche_core::{
    ChatError, JoinError, Layer, Layers, Limits, MediaState, Notice, Output, ParticipantId,
    RoomPlan, Sfu, Source, StateChange, TileView, TrackId, TrackKind,
};

struct Sim {
    sfu: Sfu,
    now: Instant,
    negotiation: Duration,
    /// Subscriptions being negotiated: (ready at, subscriber, track).
    negotiating: Vec<(Instant, ParticipantId, TrackId)>,
    /// Packets received: (subscriber, track) -> count.
    received: HashMap<(ParticipantId, TrackId), u32>,
    keyframe_requests: HashMap<TrackId, u32>,
    notices: HashMap<ParticipantId, Vec<Notice>>,
    unsubscribed: HashSet<(ParticipantId, TrackId)>,
    /// Arrivals (`true`) and departures, in order: (meeting, participant, arrived).
    attendance: Vec<(String, ParticipantId, bool)>,
    /// The layers each publisher was last told to send.
    layers_sent: HashMap<TrackId, Layers>,
    /// Every keyframe request, in order, with its layer.
    keyframe_layers: Vec<(TrackId, Option<Layer>)>,
    /// What each viewer's connection was last told to keep and probe for.
    bitrates: HashMap<ParticipantId, (u64, u64)>,
    /// Each estimate started afresh: whose, from where, when.
    resets: Vec<(ParticipantId, u64, Instant)>,
}

impl Sim {
    fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    fn with_limits(limits: Limits) -> Self {
        Self {
            sfu: Sfu::new(limits),
            now: Instant::now(),
            negotiation: Duration::from_millis(40),
            negotiating: Vec::new(),
            received: HashMap::new(),
            keyframe_requests: HashMap::new(),
            notices: HashMap::new(),
            unsubscribed: HashSet::new(),
            attendance: Vec::new(),
            layers_sent: HashMap::new(),
            keyframe_layers: Vec::new(),
            bitrates: HashMap::new(),
            resets: Vec::new(),
        }
    }

    fn apply(&mut self, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Subscribe {
                    subscriber, track, ..
                } => self
                    .negotiating
                    .push((self.now + self.negotiation, subscriber, track)),
                Output::Unsubscribe { subscriber, track } => {
                    self.negotiating
                        .retain(|(_, s, t)| !(*s == subscriber && *t == track));
                    self.unsubscribed.insert((subscriber, track));
                }
                Output::RequestKeyframe { track, layer, .. } => {
                    *self.keyframe_requests.entry(track).or_default() += 1;
                    self.keyframe_layers.push((track, layer));
                }
                Output::SendLayers { track, layers, .. } => {
                    self.layers_sent.insert(track, layers);
                }
                Output::Bitrate {
                    viewer,
                    minimum,
                    desired,
                } => {
                    self.bitrates.insert(viewer, (minimum, desired));
                }
                Output::ResetEstimate { viewer, bps } => {
                    self.resets.push((viewer, bps, self.now));
                }
                Output::Notify { to, notice } => self.notices.entry(to).or_default().push(notice),
                Output::Arrived {
                    meeting,
                    participant,
                    ..
                } => self.attendance.push((meeting, participant, true)),
                Output::Departed {
                    meeting,
                    participant,
                } => self.attendance.push((meeting, participant, false)),
            }
        }
    }

    /// Advance simulated time, completing the negotiations that are due.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        let (due, pending): (Vec<_>, Vec<_>) = self
            .negotiating
            .drain(..)
            .partition(|(at, _, _)| *at <= now);
        self.negotiating = pending;
        for (_, subscriber, track) in due {
            let out = self.sfu.subscription_ready(subscriber, track, now);
            self.apply(out);
        }
    }

    fn join(&mut self, meeting: &str, name: &str) -> ParticipantId {
        let (id, out) = self.sfu.join(meeting, name, self.now).expect("join");
        self.apply(out);
        id
    }

    /// Join and publish mic, camera and screen, as a browser does.
    fn join_publishing(&mut self, meeting: &str, name: &str) -> (ParticipantId, [TrackId; 3]) {
        let id = self.join(meeting, name);
        (id, self.publish_all(id))
    }

    /// `id` publishes mic, camera and screen.
    fn publish_all(&mut self, id: ParticipantId) -> [TrackId; 3] {
        let mut tracks = [TrackId(0); 3];
        for (i, source) in [Source::Mic, Source::Camera, Source::Screen]
            .into_iter()
            .enumerate()
        {
            let (t, out) = self
                .sfu
                .publish(id, source, source.kind(), self.now)
                .expect("publish");
            tracks[i] = t;
            self.apply(out);
        }
        tracks
    }

    /// The publisher sends one packet on `track`; the core says who gets it.
    fn send(&mut self, track: TrackId) {
        for s in self.sfu.subscribers(track) {
            *self.received.entry((s, track)).or_default() += 1;
        }
    }

    /// The publisher sends one packet of simulcast `layer` on `track` (`keyframe`: it
    /// starts one); the core says who gets it.
    fn send_layer(&mut self, track: TrackId, layer: Layer, keyframe: bool) -> Vec<ParticipantId> {
        let mut routes = Vec::new();
        self.sfu.route(track, Some(layer), keyframe, &mut routes);
        for r in &routes {
            *self.received.entry((r.viewer, track)).or_default() += 1;
        }
        routes.into_iter().map(|r| r.viewer).collect()
    }

    fn got(&self, who: ParticipantId, track: TrackId) -> u32 {
        self.received.get(&(who, track)).copied().unwrap_or(0)
    }

    fn notices_of(&self, who: ParticipantId) -> &[Notice] {
        self.notices
            .get(&who)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

#[test]
fn three_peers_each_receive_both_others_and_never_themselves() {
    let mut sim = Sim::new();
    let (a, ta) = sim.join_publishing("m", "Ada");
    let (b, tb) = sim.join_publishing("m", "Bob");
    let (c, tc) = sim.join_publishing("m", "Cy");
    sim.advance(Duration::from_millis(50));
    for t in ta.iter().chain(&tb).chain(&tc) {
        sim.send(*t);
    }
    for (who, own, others) in [(a, ta, [tb, tc]), (b, tb, [ta, tc]), (c, tc, [ta, tb])] {
        for t in others.iter().flatten() {
            assert_eq!(sim.got(who, *t), 1, "{who} should receive {t}");
        }
        for t in own {
            assert_eq!(sim.got(who, t), 0, "{who} must not receive its own {t}");
        }
    }
}

#[test]
fn nothing_is_forwarded_before_the_subscription_is_negotiated() {
    let mut sim = Sim::new();
    let (_a, ta) = sim.join_publishing("m", "Ada");
    let b = sim.join("m", "Bob");
    sim.send(ta[1]);
    assert_eq!(sim.got(b, ta[1]), 0);
    sim.advance(Duration::from_millis(39));
    sim.send(ta[1]);
    assert_eq!(sim.got(b, ta[1]), 0);
    sim.advance(Duration::from_millis(1));
    sim.send(ta[1]);
    assert_eq!(sim.got(b, ta[1]), 1);
}

#[test]
fn late_joiner_gets_existing_tracks_history_and_a_keyframe() {
    let mut sim = Sim::new();
    let (a, ta) = sim.join_publishing("m", "Ada");
    let (_b, tb) = sim.join_publishing("m", "Bob");
    sim.advance(Duration::from_millis(50));
    let out = sim.sfu.chat(a, "welcome all", 1_000).expect("chat");
    sim.apply(out);
    let kf_before = sim.keyframe_requests.get(&ta[1]).copied().unwrap_or(0);

    sim.advance(Duration::from_secs(5));
    let late = sim.join("m", "Late");
    match &sim.notices_of(late)[0] {
        Notice::Welcome {
            you,
            participants,
            chat,
            ..
        } => {
            assert_eq!(*you, late);
            let names: Vec<_> = participants.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["Ada", "Bob"]);
            assert_eq!(chat.len(), 1);
            assert_eq!(chat[0].text, "welcome all");
            assert_eq!(chat[0].name, "Ada");
        }
        other => panic!("first notice should be welcome, got {other:?}"),
    }
    sim.advance(Duration::from_millis(40));
    for t in ta.iter().chain(&tb) {
        sim.send(*t);
        assert_eq!(sim.got(late, *t), 1, "late joiner receives {t}");
    }
    // PLI on subscribe: each video track it now receives got a keyframe request.
    assert_eq!(sim.keyframe_requests[&ta[1]], kf_before + 1);
    assert!(sim.keyframe_requests[&tb[1]] >= 1);
    // Audio has no keyframes to ask for.
    assert!(!sim.keyframe_requests.contains_key(&ta[0]));
}

#[test]
fn leaver_disappears_for_everyone_and_its_tracks_stop() {
    let mut sim = Sim::new();
    let (a, ta) = sim.join_publishing("m", "Ada");
    let (b, tb) = sim.join_publishing("m", "Bob");
    let (c, _tc) = sim.join_publishing("m", "Cy");
    sim.advance(Duration::from_millis(50));

    let out = sim.sfu.leave(b, sim.now);
    sim.apply(out);
    for t in tb {
        assert!(sim.sfu.subscribers(t).is_empty());
        assert!(sim.unsubscribed.contains(&(a, t)));
        assert!(sim.unsubscribed.contains(&(c, t)));
        sim.send(t);
        assert_eq!(sim.got(a, t), 0);
    }
    for who in [a, c] {
        assert!(sim
            .notices_of(who)
            .contains(&Notice::ParticipantLeft { id: b }));
    }
    // The leaver no longer receives, the others still do.
    sim.send(ta[1]);
    assert_eq!(sim.got(b, ta[1]), 0);
    assert_eq!(sim.got(c, ta[1]), 1);
    let names: Vec<_> = sim
        .sfu
        .participants("m")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["Ada", "Cy"]);
    // Leaving twice is harmless.
    assert!(sim.sfu.leave(b, sim.now).is_empty());
}

#[test]
fn every_person_arrives_and_departs_once_and_node_links_never() {
    let mut sim = Sim::new();
    let a = sim.join("m", "Ada");
    let (r, out) = sim
        .sfu
        .join_remote("m", "Rae", MediaState::default(), Some("k".into()), sim.now)
        .expect("remote join");
    let arrived = out.iter().find_map(|o| match o {
        Output::Arrived { name, key, .. } => Some((name.clone(), key.clone())),
        _ => None,
    });
    assert_eq!(arrived, Some(("Rae".to_owned(), Some("k".to_owned()))));
    sim.apply(out);
    let (link, out) = sim.sfu.attach_link("m", sim.now);
    sim.apply(out);
    let b = sim.join("other", "Bob");
    for id in [r, link, a, a, b] {
        let out = sim.sfu.leave(id, sim.now);
        sim.apply(out);
    }
    let m = |id| ("m".to_owned(), id);
    let want = [
        (m(a), true),
        (m(r), true),
        (("other".to_owned(), b), true),
        (m(r), false),
        (m(a), false),
        (("other".to_owned(), b), false),
    ];
    let got: Vec<_> = sim
        .attendance
        .iter()
        .map(|(mt, id, arrived)| ((mt.clone(), *id), *arrived))
        .collect();
    assert_eq!(
        got, want,
        "the link is never listed; leaving twice departs once"
    );
}

#[test]
fn leaver_during_negotiation_is_not_forwarded_later() {
    let mut sim = Sim::new();
    let (a, ta) = sim.join_publishing("m", "Ada");
    let b = sim.join("m", "Bob");
    let out = sim.sfu.leave(a, sim.now);
    sim.apply(out);
    // The driver may still finish a negotiation it started; the core must ignore it.
    let out = sim.sfu.subscription_ready(b, ta[1], sim.now);
    assert!(out.is_empty());
    assert!(sim.sfu.subscribers(ta[1]).is_empty());
}

#[test]
fn keyframe_requests_from_many_viewers_are_rate_limited() {
    let mut sim = Sim::new();
    let (_a, ta) = sim.join_publishing("m", "Ada");
    for i in 0..10 {
        sim.join("m", &format!("viewer {i}"));
    }
    sim.advance(Duration::from_millis(50));
    let cam = ta[1];
    let after_subscribe = sim.keyframe_requests[&cam];
    assert_eq!(after_subscribe, 10, "one per new viewer");

    // All ten viewers ask at once, then again 100 ms later: one request goes upstream.
    sim.advance(Duration::from_secs(1));
    for _ in 0..10 {
        let o = sim.sfu.keyframe_needed(cam, None, sim.now);
        sim.apply(o);
    }
    sim.advance(Duration::from_millis(100));
    let o = sim.sfu.keyframe_needed(cam, None, sim.now);
    sim.apply(o);
    assert_eq!(sim.keyframe_requests[&cam], after_subscribe + 1);
    // After the interval, the next ask goes through.
    sim.advance(Duration::from_millis(300));
    let o = sim.sfu.keyframe_needed(cam, None, sim.now);
    assert!(
        matches!(o.as_slice(), [Output::RequestKeyframe { track, layer: None, .. }] if *track == cam)
    );
    // Audio has no keyframes: a gap in the microphone stream asks nothing.
    assert!(sim.sfu.keyframe_needed(ta[0], None, sim.now).is_empty());
    // A change of source is not rate limited: the viewer's decoder needs the new one's.
    assert!(
        sim.sfu.keyframe_needed(cam, None, sim.now).is_empty(),
        "limited right after the last"
    );
    let viewer = sim.sfu.subscribers(cam)[0];
    let mut routes = Vec::new();
    sim.sfu.route(cam, None, true, &mut routes);
    assert_eq!(routes.len(), 10, "a keyframe starts every viewer's picture");
    let o = sim.sfu.source_switched(cam, viewer, sim.now);
    assert!(matches!(o.as_slice(), [Output::RequestKeyframe { track, .. }] if *track == cam));
    assert!(
        sim.sfu.source_switched(ta[0], viewer, sim.now).is_empty(),
        "audio: none"
    );
}

#[test]
fn mute_and_camera_off_are_shown_to_others_and_screen_start_asks_for_a_keyframe() {
    let mut sim = Sim::new();
    let (a, ta) = sim.join_publishing("m", "Ada");
    let b = sim.join("m", "Bob");
    sim.advance(Duration::from_secs(1));
    let muted = MediaState {
        audio: false,
        video: false,
        screen: false,
        hand: false,
    };
    let out = sim.sfu.set_state(a, StateChange(muted), sim.now);
    sim.apply(out);
    assert!(sim.notices_of(b).contains(&Notice::State {
        id: a,
        audio: false,
        video: false,
        screen: false,
        hand: false,
    }));
    assert!(
        sim.notices_of(a)
            .iter()
            .all(|n| !matches!(n, Notice::State { .. })),
        "the sender is not told its own state"
    );
    let info = &sim.sfu.participants("m")[0];
    assert!(!info.audio && !info.video);

    // Same state again: nothing to say.
    assert!(sim.sfu.set_state(a, StateChange(muted), sim.now).is_empty());

    sim.advance(Duration::from_secs(1));
    let before = sim.keyframe_requests[&ta[2]];
    let sharing = MediaState {
        screen: true,
        ..muted
    };
    let out = sim.sfu.set_state(a, StateChange(sharing), sim.now);
    sim.apply(out);
    assert_eq!(sim.keyframe_requests[&ta[2]], before + 1);
}

#[test]
fn meetings_are_isolated() {
    let mut sim = Sim::new();
    let (a, ta) = sim.join_publishing("one", "Ada");
    let (b, tb) = sim.join_publishing("two", "Bob");
    sim.advance(Duration::from_millis(50));
    sim.send(ta[1]);
    sim.send(tb[1]);
    assert_eq!(sim.got(b, ta[1]), 0);
    assert_eq!(sim.got(a, tb[1]), 0);
    let out = sim.sfu.chat(a, "only for one", 5).expect("chat");
    assert!(out
        .iter()
        .all(|o| matches!(o, Output::Notify { to, .. } if *to == a)));
}

#[test]
fn bad_names_chat_and_full_meetings_are_refused() {
    let mut sim = Sim::with_limits(Limits {
        participants_per_meeting: 2,
        ..Limits::default()
    });
    let now = sim.now;
    assert!(matches!(
        sim.sfu.join("m", "   ", now),
        Err(JoinError::BadName { .. })
    ));
    assert!(matches!(
        sim.sfu.join("m", &"x".repeat(65), now),
        Err(JoinError::BadName { .. })
    ));
    let a = sim.join("m", "Ada");
    sim.join("m", "Bob");
    assert_eq!(
        sim.sfu.join("m", "Cy", now),
        Err(JoinError::MeetingFull { max: 2 })
    );
    assert!(matches!(
        sim.sfu.chat(a, "  ", 0),
        Err(ChatError::BadText { .. })
    ));
    assert!(matches!(
        sim.sfu.chat(a, &"y".repeat(2001), 0),
        Err(ChatError::BadText { .. })
    ));
    assert_eq!(
        sim.sfu.chat(ParticipantId(999), "hi", 0),
        Err(ChatError::UnknownParticipant)
    );
}

#[test]
fn chat_history_is_bounded_and_keeps_the_newest() {
    let mut sim = Sim::with_limits(Limits {
        chat_history: 3,
        ..Limits::default()
    });
    let a = sim.join("m", "Ada");
    for i in 0..5 {
        sim.sfu.chat(a, &format!("msg {i}"), i).expect("chat");
    }
    let late = sim.join("m", "Late");
    let Notice::Welcome { chat, .. } = &sim.notices_of(late)[0] else {
        panic!("welcome first");
    };
    let texts: Vec<_> = chat.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["msg 2", "msg 3", "msg 4"]);
}

#[test]
fn publishing_twice_or_with_the_wrong_kind_is_refused() {
    let mut sim = Sim::new();
    let a = sim.join("m", "Ada");
    let now = sim.now;
    sim.sfu
        .publish(a, Source::Camera, TrackKind::Video, now)
        .expect("first camera");
    assert!(sim
        .sfu
        .publish(a, Source::Camera, TrackKind::Video, now)
        .is_err());
    assert!(sim
        .sfu
        .publish(a, Source::Mic, TrackKind::Video, now)
        .is_err());
    assert!(sim
        .sfu
        .publish(ParticipantId(42), Source::Mic, TrackKind::Audio, now)
        .is_err());
}

#[test]
fn a_listeners_tracks_are_refused_and_reach_nobody() {
    let mut sim = Sim::new();
    let (_ada, ada_tracks) = sim.join_publishing("m", "Ada");
    let lee = sim.join("m", "Lee");
    sim.sfu.set_listener(lee, true);
    let now = sim.now;
    assert_eq!(
        sim.sfu.publish(lee, Source::Camera, TrackKind::Video, now),
        Err(veche_core::PublishError::Listener)
    );
    assert_eq!(
        sim.sfu.publish(lee, Source::Mic, TrackKind::Audio, now),
        Err(veche_core::PublishError::Listener)
    );
    assert!(sim.sfu.published(lee).is_empty());
    // A listener still receives.
    sim.advance(Duration::from_millis(100));
    assert!(sim.sfu.subscribers(ada_tracks[1]).contains(&lee));
}

#[test]
fn a_silenced_microphone_is_withheld_until_allowed() {
    let mut sim = Sim::new();
    let (bob, bob_tracks) = sim.join_publishing("m", "Bob");
    // tracks[0] is the microphone, tracks[1] the camera.
    assert!(!sim.sfu.withheld(bob_tracks[0]));
    sim.sfu.set_silenced(bob, true);
    assert!(sim.sfu.withheld(bob_tracks[0]), "the mic is withheld");
    assert!(!sim.sfu.withheld(bob_tracks[1]), "the camera is not");
    sim.sfu.set_silenced(bob, false);
    assert!(!sim.sfu.withheld(bob_tracks[0]));
}

#[test]
fn thirty_peers_churn_without_leaking_subscriptions() {
    let mut sim = Sim::new();
    let mut peers = Vec::new();
    for i in 0..30 {
        peers.push(sim.join_publishing("big", &format!("p{i}")));
        sim.advance(Duration::from_millis(10));
    }
    sim.advance(Duration::from_millis(100));
    for (_, tracks) in &peers {
        assert_eq!(sim.sfu.subscribers(tracks[1]).len(), 29);
    }
    // Every other peer leaves.
    for (id, _) in peers.iter().step_by(2) {
        let out = sim.sfu.leave(*id, sim.now);
        sim.apply(out);
    }
    for (i, (_, tracks)) in peers.iter().enumerate() {
        let expected = if i % 2 == 0 { 0 } else { 14 };
        assert_eq!(sim.sfu.subscribers(tracks[1]).len(), expected);
    }
    assert_eq!(sim.sfu.participants("big").len(), 15);
    let c = sim.sfu.counts();
    assert_eq!(c.tracks, 15 * 3);
    // Each of the 15 receives the 14 others' 3 tracks; nothing of the leavers remains.
    assert_eq!(c.subscriptions, 15 * 14 * 3);
    assert_eq!(c.forwarding, 15 * 14 * 3);

    // Everyone leaves: the core holds nothing.
    for (id, _) in peers.iter().skip(1).step_by(2) {
        let out = sim.sfu.leave(*id, sim.now);
        sim.apply(out);
    }
    assert_eq!(sim.sfu.counts(), veche_core::Counts::default());
}

#[test]
fn node_links_carry_local_tracks_once_and_never_loop_remote_ones() {
    // Node B's view: Bob and Cy are local, Ada is on node A (her camera arrives over the
    // incoming link), and B's outgoing link to A is a `Link` participant.
    let mut b = Sim::new();
    let (bob, tb) = b.join_publishing("m", "Bob");
    let (link_to_a, out) = b.sfu.attach_link("m", b.now);
    b.apply(out);
    let (ada, out) = b
        .sfu
        .join_remote("m", "Ada", MediaState::default(), None, b.now)
        .expect("remote join");
    b.apply(out);
    let (ada_cam, out) = b
        .sfu
        .publish(ada, Source::Camera, TrackKind::Video, b.now)
        .expect("remote publish");
    b.apply(out);
    let (cy, tc) = b.join_publishing("m", "Cy");
    b.advance(Duration::from_millis(50));

    // The link to A carries B's local tracks (Bob's and Cy's), each once...
    for t in tb.iter().chain(&tc) {
        assert_eq!(
            b.sfu
                .subscribers(*t)
                .iter()
                .filter(|s| **s == link_to_a)
                .count(),
            1
        );
    }
    // ...and never Ada's own camera back to her node, nor to any other node.
    assert!(!b.sfu.subscribers(ada_cam).contains(&link_to_a));
    let mut viewers = b.sfu.subscribers(ada_cam).to_vec();
    viewers.sort();
    assert_eq!(viewers, [bob, cy]);

    // People see Ada, never the link; Bob was told Ada joined; the link is told nothing.
    let names: Vec<_> = b
        .sfu
        .participants("m")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["Bob", "Ada", "Cy"]);
    assert!(b.notices_of(bob).iter().any(
        |n| matches!(n, Notice::ParticipantJoined { participant } if participant.name == "Ada")
    ));
    assert!(b.notices_of(link_to_a).is_empty());
    assert!(
        b.notices_of(ada).is_empty(),
        "a remote participant's node tells it, not us"
    );

    // Ada's chat reaches the local browsers; Ada leaving unsubscribes them.
    let out = b.sfu.chat(ada, "hello from A", 7).expect("chat");
    assert_eq!(out.len(), 2);
    let out = b.sfu.leave(ada, b.now);
    b.apply(out);
    assert!(b.unsubscribed.contains(&(bob, ada_cam)) && b.unsubscribed.contains(&(cy, ada_cam)));
    // The link's departure (node A gone) stops forwarding to it and tells nobody.
    let before = b.notices_of(bob).len();
    let out = b.sfu.leave(link_to_a, b.now);
    b.apply(out);
    assert_eq!(b.notices_of(bob).len(), before);
    assert!(!b.sfu.subscribers(tb[1]).contains(&link_to_a));
}

#[test]
fn a_relay_forwards_chosen_remote_tracks_and_a_lost_link_unpublishes_them() {
    // Node R relays between nodes A and B: it has no browsers of its own.
    let mut r = Sim::new();
    let (link_to_b, out) = r.sfu.attach_link("m", r.now);
    r.apply(out);
    let (ada, out) = r
        .sfu
        .join_remote("m", "Ada", MediaState::default(), None, r.now)
        .expect("remote join");
    r.apply(out);
    let (ada_mic, out) = r
        .sfu
        .publish(ada, Source::Mic, TrackKind::Audio, r.now)
        .expect("remote publish");
    r.apply(out);
    r.advance(Duration::from_millis(50));
    // By the usual rule a remote track never goes to a link...
    assert!(r.sfu.subscribers(ada_mic).is_empty());
    // ...unless the driver relays it, once.
    let out = r.sfu.relay_track(link_to_b, ada_mic);
    assert_eq!(out.len(), 1);
    r.apply(out);
    assert!(
        r.sfu.relay_track(link_to_b, ada_mic).is_empty(),
        "only once"
    );
    // Only onto links.
    assert!(r.sfu.relay_track(ada, ada_mic).is_empty());
    r.advance(Duration::from_millis(50));
    assert_eq!(r.sfu.subscribers(ada_mic), &[link_to_b]);

    // The link the mic came in on goes away: the track stops for everyone, and Ada can
    // publish it again on a new link.
    let out = r.sfu.unpublish(ada_mic);
    assert_eq!(
        out,
        vec![Output::Unsubscribe {
            subscriber: link_to_b,
            track: ada_mic
        }]
    );
    r.apply(out);
    assert!(r.sfu.subscribers(ada_mic).is_empty());
    assert!(r.sfu.published(ada).is_empty());
    assert!(r
        .sfu
        .publish(ada, Source::Mic, TrackKind::Audio, r.now)
        .is_ok());
}

impl Sim {
    /// Join with `key` and publish mic, camera and screen.
    fn join_keyed_publishing(&mut self, name: &str, key: &str) -> (ParticipantId, [TrackId; 3]) {
        let (id, out) = self
            .sfu
            .join_keyed("m", name, Some(key.into()), self.now)
            .expect("join");
        self.apply(out);
        (id, self.publish_all(id))
    }

    fn rooms(&mut self, of: &[(&str, u8)]) {
        let plan = (!of.is_empty()).then(|| RoomPlan {
            count: 2,
            until_ms: 9_000,
            choose: false,
            of: of.iter().map(|(k, r)| ((*k).to_owned(), *r)).collect(),
        });
        let out = self.sfu.set_rooms("m", plan, self.now);
        self.apply(out);
        self.advance(Duration::from_millis(50));
    }

    /// Who gets each of `tracks` now, sorted.
    fn audience(&self, track: TrackId) -> Vec<ParticipantId> {
        let mut s = self.sfu.subscribers(track).to_vec();
        s.sort();
        s
    }
}

#[test]
fn breakout_rooms_keep_media_and_chat_in_the_room_and_closing_brings_everyone_back() {
    let mut sim = Sim::new();
    let (a, ta) = sim.join_keyed_publishing("Ada", "ka");
    let (b, tb) = sim.join_keyed_publishing("Bob", "kb");
    let (c, tc) = sim.join_keyed_publishing("Cy", "kc");
    let (d, td) = sim.join_keyed_publishing("Dee", "kd");
    sim.advance(Duration::from_millis(50));
    // The positive control: before the rooms, everyone receives everyone.
    assert_eq!(sim.audience(ta[1]), [b, c, d]);

    sim.rooms(&[("ka", 1), ("kb", 1), ("kc", 2), ("kd", 2)]);
    for t in ta.iter().chain(&tb) {
        let pair = if ta.contains(t) { b } else { a };
        assert_eq!(sim.audience(*t), [pair], "room 1 keeps to itself");
    }
    for t in tc.iter().chain(&td) {
        let pair = if tc.contains(t) { d } else { c };
        assert_eq!(sim.audience(*t), [pair], "room 2 keeps to itself");
    }
    // Nothing renegotiated: everyone stays subscribed, and what crosses rooms is not
    // forwarded, a voice or a keyframe alike.
    assert!(sim.unsubscribed.is_empty(), "{:?}", sim.unsubscribed);
    assert!(sim.negotiating.is_empty(), "{:?}", sim.negotiating);
    let mut to = Vec::new();
    for (track, keyframe) in [(ta[0], false), (ta[1], true)] {
        sim.sfu.route(track, None, keyframe, &mut to);
        assert_eq!(
            to.iter().map(|r| r.viewer).collect::<Vec<_>>(),
            [b],
            "Ada's {track:?} reaches Bob only"
        );
    }
    let told = Notice::Rooms {
        count: 2,
        until_ms: 9_000,
        choose: false,
        rooms: [(a, 1), (b, 1), (c, 2), (d, 2)].into_iter().collect(),
    };
    for who in [a, b, c, d] {
        assert_eq!(sim.notices_of(who).last(), Some(&told));
    }

    // Chat in room 1 is heard in room 1 only.
    let out = sim.sfu.chat(a, "room one here", 1_000).expect("chat");
    let heard: Vec<ParticipantId> = out
        .iter()
        .filter_map(|o| match o {
            Output::Notify {
                to,
                notice: Notice::Chat { .. },
            } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(heard, [a, b]);

    // A newcomer assigned to room 2 gets room 2's media and chat history, not room 1's.
    let out = sim.sfu.chat(c, "room two here", 1_001).expect("chat");
    sim.apply(out);
    sim.rooms(&[("ka", 1), ("kb", 1), ("kc", 2), ("kd", 2), ("ke", 2)]);
    let (e, out) = sim
        .sfu
        .join_keyed("m", "Eve", Some("ke".into()), sim.now)
        .expect("join");
    sim.apply(out);
    sim.advance(Duration::from_millis(50));
    assert!(sim.audience(tc[1]).contains(&e) && !sim.audience(ta[1]).contains(&e));
    let welcome_chat = sim.notices_of(e).iter().find_map(|n| match n {
        Notice::Welcome { chat, .. } => {
            Some(chat.iter().map(|m| m.text.clone()).collect::<Vec<_>>())
        }
        _ => None,
    });
    assert_eq!(
        welcome_chat,
        Some(vec!["room two here".to_owned()]),
        "Eve, placed in room 2, reads room 2's chat and not room 1's"
    );

    // The host visits room 2: she leaves room 1's audience and joins room 2's, where each
    // camera is asked for a keyframe at once (no renegotiation to wait for).
    sim.keyframe_layers.clear();
    sim.rooms(&[("ka", 2), ("kb", 1), ("kc", 2), ("kd", 2), ("ke", 2)]);
    assert_eq!(sim.audience(tc[1]), [a, d, e]);
    assert!(sim.negotiating.is_empty() && sim.unsubscribed.is_empty());
    for cam in [tc[1], td[1]] {
        assert!(
            sim.keyframe_layers.iter().any(|(t, _)| *t == cam),
            "{cam:?}: {:?}",
            sim.keyframe_layers
        );
    }
    assert!(sim.audience(tb[1]).is_empty(), "Bob alone in room 1");

    // Closed: everyone receives everyone again; a voice held back from Bob goes on as a
    // new stretch (its numbering has no hole of what he did not get).
    let stretch_of = |sim: &mut Sim, track, who| {
        let mut to = Vec::new();
        sim.sfu.route(track, None, false, &mut to);
        to.iter().find(|r| r.viewer == who).map(|r| r.stretch)
    };
    assert_eq!(stretch_of(&mut sim, tc[0], b), None, "held back from Bob");
    sim.rooms(&[]);
    assert!(
        stretch_of(&mut sim, tc[0], b).is_some_and(|s| s > 0),
        "Cy's voice reaches Bob again, as a new stretch"
    );
    assert_eq!(sim.audience(ta[1]), [b, c, d, e]);
    assert_eq!(sim.audience(tc[0]), [a, b, d, e]);
    let closed = Notice::Rooms {
        count: 0,
        until_ms: 0,
        choose: false,
        rooms: Default::default(),
    };
    assert_eq!(sim.notices_of(b).last(), Some(&closed));
    // What the rooms said stays with them: a newcomer to the main room reads none of it.
    let (f, out) = sim.sfu.join("m", "Fay", sim.now).expect("join");
    sim.apply(out);
    let welcome_chat = sim.notices_of(f).iter().find_map(|n| match n {
        Notice::Welcome { chat, .. } => Some(chat.len()),
        _ => None,
    });
    assert_eq!(welcome_chat, Some(0));
}

#[test]
fn a_node_link_carries_every_room_and_a_remote_person_keeps_to_their_room() {
    let mut sim = Sim::new();
    let (a, ta) = sim.join_keyed_publishing("Ada", "ka");
    let (_bob, _) = sim.join_keyed_publishing("Bob", "kb");
    let (link, out) = sim.sfu.attach_link("m", sim.now);
    sim.apply(out);
    let (r, out) = sim
        .sfu
        .join_remote(
            "m",
            "Rae",
            MediaState::default(),
            Some("kr".into()),
            sim.now,
        )
        .expect("remote");
    sim.apply(out);
    let (tr, out) = sim
        .sfu
        .publish(r, Source::Camera, TrackKind::Video, sim.now)
        .expect("remote track");
    sim.apply(out);
    sim.advance(Duration::from_millis(50));
    sim.rooms(&[("ka", 1), ("kr", 1), ("kb", 2)]);
    assert_eq!(
        sim.audience(ta[1]),
        [link],
        "only the link: Bob is in room 2"
    );
    assert_eq!(sim.audience(tr), [a], "Rae's camera reaches her room only");
}

#[test]
fn a_recording_gets_the_main_rooms_tracks_is_nobody_and_everyone_is_told() {
    let mut sim = Sim::new();
    let (a, at) = sim.join_publishing("m", "Ada");
    let (r, out) = sim
        .sfu
        .join_remote(
            "m",
            "Rae",
            MediaState::default(),
            Some("rk".into()),
            sim.now,
        )
        .expect("remote join");
    sim.apply(out);
    let rt = sim.publish_all(r);
    let (rec, out) = sim.sfu.attach_recorder("m", sim.now);
    sim.apply(out);
    sim.advance(Duration::from_millis(100));
    for t in at.iter().chain(rt.iter()) {
        sim.send(*t);
        assert_eq!(
            sim.got(rec, *t),
            1,
            "the recording gets track {t:?}, local or remote"
        );
    }
    // Nobody sees it, counts it or has it in the attendance.
    assert_eq!(sim.sfu.participants("m").len(), 2);
    assert!(sim.attendance.iter().all(|(_, id, _)| *id != rec));
    // A track published later reaches it too.
    let b = sim.join("m", "Bob");
    let (bt, out) = sim
        .sfu
        .publish(b, Source::Camera, TrackKind::Video, sim.now)
        .expect("publish");
    sim.apply(out);
    sim.advance(Duration::from_millis(100));
    sim.send(bt);
    assert_eq!(sim.got(rec, bt), 1);
    // Bob in a breakout room: the recording keeps to the main room.
    let plan = RoomPlan {
        count: 1,
        until_ms: u64::MAX,
        choose: false,
        of: [("bk".to_owned(), 1)].into_iter().collect(),
    };
    let (b2, out) = sim
        .sfu
        .join_keyed("m", "Bea", Some("bk".into()), sim.now)
        .expect("join");
    sim.apply(out);
    let (b2t, out) = sim
        .sfu
        .publish(b2, Source::Mic, TrackKind::Audio, sim.now)
        .expect("publish");
    sim.apply(out);
    sim.advance(Duration::from_millis(100));
    sim.send(b2t);
    assert_eq!(
        sim.got(rec, b2t),
        1,
        "Bea's voice is recorded in the main room"
    );
    let out = sim.sfu.set_rooms("m", Some(plan), sim.now);
    sim.apply(out);
    sim.send(b2t);
    assert_eq!(sim.got(rec, b2t), 1, "a room's voice leaves the recording");
    // The status reaches every browser here, and whoever joins later.
    let state = veche_core::Recording {
        by: "Ada".into(),
        since_ms: 5,
    };
    let out = sim.sfu.set_recording("m", Some(state.clone()), None);
    let told: Vec<ParticipantId> = out
        .iter()
        .filter_map(|o| match o {
            Output::Notify {
                to,
                notice: Notice::Recording { on: true, .. },
            } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(told.len(), 3, "Ada, Bob and Bea: {told:?}");
    assert!(told.contains(&a) && !told.contains(&r) && !told.contains(&rec));
    sim.apply(out);
    let late = sim.join("m", "Late");
    match &sim.notices_of(late)[0] {
        Notice::Welcome { recording, .. } => assert_eq!(recording.as_ref(), Some(&state)),
        other => panic!("{other:?}"),
    }
    // Stopped: its subscriptions end with it.
    let out = sim.sfu.leave(rec, sim.now);
    assert!(out
        .iter()
        .all(|o| !matches!(o, Output::Departed { .. } | Output::Notify { .. })));
    sim.send(at[0]);
    assert_eq!(sim.got(rec, at[0]), 1, "nothing more after it left");
}

#[test]
fn each_viewer_gets_the_layer_its_tile_needs_and_layers_nobody_needs_pause() {
    let mut sim = Sim::new();
    let (ada, ta) = sim.join_publishing("m", "Ada");
    let cam = ta[1];
    sim.sfu.set_simulcast(cam, Layers::ALL);
    let bob = sim.join("m", "Bob");
    let cy = sim.join("m", "Cy");
    let [q, h, f] = Layer::ALL;
    let tile = |height| TileView {
        visible: true,
        height,
    };
    // Their pages say how big Ada's camera is on their screens before it is negotiated.
    let out = sim
        .sfu
        .set_view(bob, &[(ada, Source::Camera, tile(700))], sim.now);
    sim.apply(out);
    let out = sim
        .sfu
        .set_view(cy, &[(ada, Source::Camera, tile(150))], sim.now);
    sim.apply(out);
    sim.keyframe_layers.clear();
    sim.advance(Duration::from_millis(50));
    let asked: Vec<_> = sim
        .keyframe_layers
        .iter()
        .filter(|(t, _)| *t == cam)
        .collect();
    assert_eq!(
        asked,
        [&(cam, Some(f)), &(cam, Some(q))],
        "each new viewer's own layer"
    );

    // Nothing before a keyframe; then each gets its layer only.
    assert!(sim.send_layer(cam, q, false).is_empty());
    assert_eq!(
        sim.send_layer(cam, q, true),
        [bob, cy],
        "q is nearer f than nothing"
    );
    assert_eq!(
        sim.send_layer(cam, h, true),
        [bob],
        "h is nearer still for Bob"
    );
    assert_eq!(sim.send_layer(cam, f, true), [bob]);
    assert_eq!(sim.send_layer(cam, f, false), [bob]);
    assert_eq!(sim.send_layer(cam, q, false), [cy]);
    assert!(sim.send_layer(cam, h, false).is_empty());

    // Nobody needs h: it pauses once the hold-off has passed, not before.
    let out = sim.sfu.tick(sim.now);
    sim.apply(out);
    assert_eq!(sim.layers_sent.get(&cam), None, "all three are still sent");
    sim.advance(Duration::from_secs(4));
    let out = sim.sfu.tick(sim.now);
    sim.apply(out);
    assert_eq!(sim.layers_sent[&cam], Layers::NONE.with(q).with(f));

    // Cy hides the tile: her stream stops at once, and q pauses after the hold-off.
    let out = sim.sfu.set_view(
        cy,
        &[(
            ada,
            Source::Camera,
            TileView {
                visible: false,
                height: 150,
            },
        )],
        sim.now,
    );
    sim.apply(out);
    assert!(sim.send_layer(cam, q, true).is_empty());
    sim.advance(Duration::from_secs(4));
    let out = sim.sfu.tick(sim.now);
    sim.apply(out);
    assert_eq!(sim.layers_sent[&cam], Layers::NONE.with(f));

    // Shown again: q is asked for at once, with its keyframe; she resumes at that keyframe.
    sim.keyframe_layers.clear();
    let out = sim
        .sfu
        .set_view(cy, &[(ada, Source::Camera, tile(150))], sim.now);
    sim.apply(out);
    // While she has no picture, every layer is asked for (the one she wants may never
    // come: a camera too small for it); her own is asked for a keyframe.
    assert_eq!(sim.layers_sent[&cam], Layers::ALL);
    assert_eq!(sim.keyframe_layers, [(cam, Some(q))]);
    assert!(
        sim.send_layer(cam, q, false).is_empty(),
        "mid-picture: not yet"
    );
    assert_eq!(sim.send_layer(cam, q, true), [cy]);

    // A viewer's keyframe request names the layer it carries.
    sim.keyframe_layers.clear();
    sim.advance(Duration::from_secs(1));
    let out = sim.sfu.keyframe_needed(cam, Some(bob), sim.now);
    sim.apply(out);
    assert_eq!(sim.keyframe_layers, [(cam, Some(f))]);
    // Audio is never held back by any of this.
    let mut routes = Vec::new();
    sim.sfu.route(ta[0], None, false, &mut routes);
    assert_eq!(routes.len(), 2);
}

#[test]
fn a_viewer_that_waits_too_long_for_its_keyframe_asks_again() {
    let mut sim = Sim::new();
    let (ada, ta) = sim.join_publishing("m", "Ada");
    let cam = ta[1];
    sim.sfu.set_simulcast(cam, Layers::ALL);
    let bob = sim.join("m", "Bob");
    sim.advance(Duration::from_millis(50));
    let [_, h, f] = Layer::ALL;
    assert_eq!(sim.send_layer(cam, f, true), [bob]);
    let tile = TileView {
        visible: true,
        height: 300,
    };
    let out = sim
        .sfu
        .set_view(bob, &[(ada, Source::Camera, tile)], sim.now);
    sim.apply(out);
    sim.keyframe_layers.clear();
    // The keyframe of h was lost: f goes on meanwhile, and h is asked for again (the
    // screen, which Ada does not share, sends nothing and is not asked for).
    assert_eq!(sim.send_layer(cam, f, false), [bob]);
    sim.advance(Duration::from_millis(500));
    let out = sim.sfu.tick(sim.now);
    sim.apply(out);
    assert!(sim.keyframe_layers.is_empty(), "not yet");
    sim.advance(Duration::from_millis(600));
    assert_eq!(sim.send_layer(cam, f, false), [bob]);
    let out = sim.sfu.tick(sim.now);
    sim.apply(out);
    assert_eq!(sim.keyframe_layers, [(cam, Some(h))]);
    assert_eq!(sim.send_layer(cam, h, true), [bob]);
    assert!(sim.send_layer(cam, f, false).is_empty(), "switched");
}

#[test]
fn a_viewer_on_a_weak_link_gets_small_layers_and_grows_back_slowly() {
    let mut sim = Sim::new();
    let (ada, ta) = sim.join_publishing("m", "Ada");
    let (bob, tb) = sim.join_publishing("m", "Bob");
    for t in [ta[1], tb[1]] {
        sim.sfu.set_simulcast(t, Layers::ALL);
    }
    let cy = sim.join("m", "Cy");
    sim.advance(Duration::from_millis(50));
    let [q, h, f] = Layer::ALL;
    let big = TileView {
        visible: true,
        height: 700,
    };
    let out = sim.sfu.set_view(
        cy,
        &[(ada, Source::Camera, big), (bob, Source::Camera, big)],
        sim.now,
    );
    sim.apply(out);
    let wants = |sim: &Sim| -> Vec<String> {
        let r = sim.sfu.reception(cy).expect("cy");
        r.videos
            .iter()
            .filter(|v| v.source == Source::Camera)
            .map(|v| format!("{:?}/{:?}", v.want, v.reason))
            .collect()
    };
    assert_eq!(
        wants(&sim),
        ["Layer(Layer(2))/View", "Layer(Layer(2))/View"],
        "no estimate yet: the view decides"
    );

    // Both cameras send (a video that sends nothing costs nothing): everyone starts at
    // the first keyframe.
    assert_eq!(sim.send_layer(ta[1], f, true), [bob, cy]);
    assert_eq!(sim.send_layer(tb[1], f, true), [ada, cy]);
    // 600 kbit/s: two voices (64k each at first) and both smallest layers fit, nothing more.
    let out = sim.sfu.set_estimate(cy, 600_000, sim.now);
    sim.apply(out);
    assert_eq!(
        wants(&sim),
        ["Layer(Layer(0))/Bandwidth", "Layer(Layer(0))/Bandwidth"]
    );
    let (minimum, desired) = sim.bitrates[&cy];
    assert!(
        minimum > 128_000 + 2 * 120_000,
        "kept busy toward the next step: {minimum}"
    );
    assert!(
        desired > 3_000_000,
        "probing toward what the tiles need: {desired}"
    );
    // With room for everything, nothing is padded or probed.
    let out = sim.sfu.set_estimate(bob, 20_000_000, sim.now);
    sim.apply(out);
    let (minimum, desired) = sim.bitrates[&bob];
    assert_eq!(minimum, desired, "Bob's tiles have what they need");
    // Cy moves to q, which is what she may have, and Bob (no view: the largest) keeps f.
    assert_eq!(sim.send_layer(ta[1], q, true), [cy]);
    assert_eq!(sim.send_layer(ta[1], f, false), [bob]);

    // The link recovers: nothing grows for a while after it shrank...
    sim.advance(Duration::from_secs(1));
    let out = sim.sfu.set_estimate(cy, 5_000_000, sim.now);
    sim.apply(out);
    assert_eq!(
        wants(&sim),
        ["Layer(Layer(0))/Bandwidth", "Layer(Layer(0))/Bandwidth"]
    );
    // ...then one step at a time.
    sim.advance(Duration::from_secs(8));
    let out = sim.sfu.tick(sim.now);
    sim.apply(out);
    assert_eq!(
        wants(&sim),
        ["Layer(Layer(1))/Bandwidth", "Layer(Layer(1))/Bandwidth"],
        "one layer up, though the estimate has room for the full one"
    );
    sim.advance(Duration::from_secs(1));
    let out = sim.sfu.tick(sim.now);
    sim.apply(out);
    assert_eq!(
        wants(&sim),
        ["Layer(Layer(1))/Bandwidth", "Layer(Layer(1))/Bandwidth"],
        "the next step only once this one has shown it fits"
    );
    sim.advance(Duration::from_secs(1));
    let out = sim.sfu.tick(sim.now);
    sim.apply(out);
    assert_eq!(
        wants(&sim),
        ["Layer(Layer(2))/View", "Layer(Layer(2))/View"]
    );
    let _ = h;
}

#[test]
fn a_larger_layer_the_link_cannot_carry_is_tried_less_and_less_often() {
    let mut sim = Sim::new();
    let (ada, ta) = sim.join_publishing("m", "Ada");
    sim.sfu.set_simulcast(ta[1], Layers::ALL);
    let cy = sim.join("m", "Cy");
    sim.advance(Duration::from_millis(50));
    let big = TileView {
        visible: true,
        height: 700,
    };
    let out = sim.sfu.set_view(cy, &[(ada, Source::Camera, big)], sim.now);
    sim.apply(out);
    sim.send_layer(ta[1], Layer::ALL[2], true);
    let layer = |sim: &Sim| -> String {
        let r = sim.sfu.reception(cy).expect("cy");
        let v = r.videos.iter().find(|v| v.source == Source::Camera);
        format!("{:?}", v.expect("camera").want)
    };
    // A link with room for q only: q.
    let out = sim.sfu.set_estimate(cy, 300_000, sim.now);
    sim.apply(out);
    assert_eq!(layer(&sim), "Layer(Layer(0))");
    // Each second, an estimate that would carry h (a guess that goes up and down, as
    // str0m's does behind a queue) and, after each step up, one that drops it again.
    let mut tries = Vec::new();
    for s in 1..=120u64 {
        sim.advance(Duration::from_secs(1));
        // Her camera sends every layer (one that sends nothing costs nothing).
        for l in Layer::ALL {
            sim.send_layer(ta[1], l, true);
        }
        let was = layer(&sim);
        let bps = if was == "Layer(Layer(1))" {
            300_000
        } else {
            900_000
        };
        let out = sim.sfu.set_estimate(cy, bps, sim.now);
        sim.apply(out);
        let out = sim.sfu.tick(sim.now);
        sim.apply(out);
        if was != "Layer(Layer(1))" && layer(&sim) == "Layer(Layer(1))" {
            tries.push(s);
        }
    }
    // 5 s after the first drop, then 10, 20, 40 and 40 s after each undone try.
    let gaps: Vec<u64> = tries.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(tries.len() >= 3, "tried: {tries:?}");
    assert!(
        tries.len() <= 5 && gaps.windows(2).all(|g| g[1] >= g[0]),
        "tries at {tries:?} s: each further apart"
    );
}

#[test]
fn an_estimate_that_holds_streams_back_and_stays_flat_is_started_afresh_less_and_less_often() {
    let mut sim = Sim::new();
    let (ada, ta) = sim.join_publishing("m", "Ada");
    sim.sfu.set_simulcast(ta[1], Layers::ALL);
    let cy = sim.join("m", "Cy");
    let bob = sim.join("m", "Bob");
    sim.advance(Duration::from_millis(50));
    let big = TileView {
        visible: true,
        height: 700,
    };
    for viewer in [cy, bob] {
        let out = sim
            .sfu
            .set_view(viewer, &[(ada, Source::Camera, big)], sim.now);
        sim.apply(out);
    }
    assert_eq!(sim.send_layer(ta[1], Layer::ALL[2], true), [cy, bob]);
    // Bob has room for everything; Cy's 400 kbit/s holds Ada's camera below its tile.
    let start = sim.now;
    for viewer in [bob, cy] {
        let bps = if viewer == bob { 20_000_000 } else { 400_000 };
        let out = sim.sfu.set_estimate(viewer, bps, sim.now);
        sim.apply(out);
    }
    let reason = |sim: &Sim| {
        let r = sim.sfu.reception(cy).expect("cy");
        format!("{:?}", r.videos[0].reason)
    };
    assert_eq!(reason(&sim), "Bandwidth");
    // Each layer Ada's page encodes keeps coming, as a browser's do.
    let send = |sim: &mut Sim| {
        for layer in Layer::ALL {
            for _ in 0..25 {
                sim.send_layer(ta[1], layer, false);
            }
        }
    };
    assert_eq!(sim.send_layer(ta[1], Layer::ALL[0], true), [cy]);
    // 25 s of a flat estimate, told each second as str0m does.
    for _ in 0..25 {
        send(&mut sim);
        sim.advance(Duration::from_secs(1));
        let out = sim.sfu.set_estimate(cy, 400_000, sim.now);
        sim.apply(out);
        let out = sim.sfu.tick(sim.now);
        sim.apply(out);
    }
    let at: Vec<u64> = sim
        .resets
        .iter()
        .map(|(who, bps, when)| {
            assert_eq!(*who, cy, "only the held-back viewer's estimate");
            assert!(*bps >= 400_000, "from no less than it was: {bps}");
            (*when - start).as_secs()
        })
        .collect();
    assert_eq!(at, [3, 9, 21], "after 3 s, then 6 s, then 12 s");

    // An estimate that grows is not started afresh, nor one held only by the wait after
    // a drop, nor one with room for everything.
    sim.resets.clear();
    for i in 0..30u64 {
        send(&mut sim);
        sim.advance(Duration::from_secs(1));
        let bps = (500_000 + i * 200_000).min(5_000_000);
        let out = sim.sfu.set_estimate(cy, bps, sim.now);
        sim.apply(out);
        let out = sim.sfu.tick(sim.now);
        sim.apply(out);
    }
    assert_eq!(reason(&sim), "View", "grown back to its tile");
    assert_eq!(sim.resets, [], "nothing started afresh once it grew");
}

#[test]
fn who_speaks_in_a_breakout_room_is_told_only_to_that_room() {
    let mut sim = Sim::new();
    let (ada, ta) = sim.join_keyed_publishing("Ada", "ak");
    let (bob, _) = sim.join_keyed_publishing("Bob", "bk");
    let (cy, _) = sim.join_keyed_publishing("Cy", "ck");
    sim.advance(Duration::from_millis(50));
    let told = |out: &[Output], to: ParticipantId| -> Option<Vec<ParticipantId>> {
        out.iter().find_map(|o| match o {
            Output::Notify {
                to: t,
                notice: Notice::Speaking { ids },
            } if *t == to => Some(ids.clone()),
            _ => None,
        })
    };
    // Without rooms everyone is told Ada speaks (the positive control).
    let mut out = Vec::new();
    for i in 0..20u32 {
        out.extend(sim.sfu.heard(
            ta[0],
            -20,
            sim.now + Duration::from_millis(20 * u64::from(i)),
        ));
    }
    let later = sim.now + Duration::from_millis(500);
    out.extend(sim.sfu.heard(ta[0], -20, later));
    assert_eq!(told(&out, bob), Some(vec![ada]));
    assert_eq!(told(&out, cy), Some(vec![ada]));
    // Ada and Bob in room 1, Cy in room 2: Cy is no longer told of Ada's voice.
    sim.rooms(&[("ak", 1), ("bk", 1), ("ck", 2)]);
    let mut out = Vec::new();
    // Bob starts speaking too: the set changes, and each is told of their room only.
    let bob_mic = sim.sfu.published(bob)[0];
    for i in 0..20u64 {
        let at = later + Duration::from_millis(300 + 20 * i);
        out.extend(sim.sfu.heard(ta[0], -20, at));
        out.extend(sim.sfu.heard(bob_mic, -15, at));
    }
    assert_eq!(told(&out, ada), Some(vec![bob, ada]));
    assert_eq!(
        told(&out, cy),
        Some(vec![]),
        "another room's voices stay in it"
    );
    // Someone who joins while Ada and Bob speak is told at once (nothing changes to make
    // news later): Dan, put in room 1, hears them; the others were told already.
    sim.rooms(&[("ak", 1), ("bk", 1), ("ck", 2), ("dk", 1)]);
    let (dan, _) = sim.join_keyed_publishing("Dan", "dk");
    let speaking: Vec<&Notice> = sim
        .notices_of(dan)
        .iter()
        .filter(|n| matches!(n, Notice::Speaking { .. }))
        .collect();
    assert_eq!(
        speaking,
        [&Notice::Speaking {
            ids: vec![bob, ada]
        }],
        "the newcomer told who speaks in its room"
    );
    assert!(matches!(sim.notices_of(dan)[0], Notice::Welcome { .. }));
    // Eve, put in room 2 where nobody speaks, is told nothing of room 1's voices.
    sim.rooms(&[("ak", 1), ("bk", 1), ("ck", 2), ("dk", 1), ("ek", 2)]);
    let (eve, _) = sim.join_keyed_publishing("Eve", "ek");
    assert!(
        !sim.notices_of(eve)
            .iter()
            .any(|n| matches!(n, Notice::Speaking { .. })),
        "another room's speakers are not told to a newcomer: {:?}",
        sim.notices_of(eve)
    );
    assert!(matches!(sim.notices_of(eve)[0], Notice::Welcome { .. }));
    // Cy moved into room 1 is told its speakers with the move, before anyone's next word.
    let before = sim.notices_of(cy).len();
    sim.rooms(&[("ak", 1), ("bk", 1), ("ck", 1), ("dk", 1)]);
    assert!(
        sim.notices_of(cy)[before..].contains(&Notice::Speaking {
            ids: vec![bob, ada]
        }),
        "moved rooms: told that room's speakers"
    );
}

#[test]
fn a_node_link_carries_each_layer_its_node_needs_and_nothing_nobody_there_needs() {
    // Node A: Ada publishes a camera in three layers; node B's viewers watch through A's
    // link to B, which carries each layer they need in its own stream.
    let mut a = Sim::new();
    let (ada, ta) = a.join_publishing("m", "Ada");
    let cam = ta[1];
    a.sfu.set_simulcast(cam, Layers::ALL);
    let (link, out) = a.sfu.attach_link("m", a.now);
    a.apply(out);
    assert_eq!(
        a.sfu.link_layers(link, cam),
        Some(Layers::ALL),
        "negotiated as one stream per layer"
    );
    assert_eq!(
        a.sfu.link_layers(link, ta[0]),
        None,
        "the voice: one stream"
    );
    a.advance(Duration::from_millis(50));
    let [q, h, f] = Layer::ALL;
    let to_link = |a: &mut Sim, layer: Layer, keyframe: bool| -> Option<Option<Layer>> {
        let mut routes = Vec::new();
        a.sfu.route(cam, Some(layer), keyframe, &mut routes);
        routes.iter().find(|r| r.viewer == link).map(|r| r.rid)
    };
    // Before B says anything, the link takes every layer, each into its own stream from
    // its own keyframe.
    assert_eq!(to_link(&mut a, f, false), None, "no picture starts here");
    for l in [q, h, f] {
        assert_eq!(to_link(&mut a, l, true), Some(Some(l)));
        assert_eq!(to_link(&mut a, l, false), Some(Some(l)));
    }
    // B's viewers need q only: h and f stop at once.
    let out = a
        .sfu
        .set_passing(link, &[(ada, Source::Camera, Layers::NONE.with(q))], a.now);
    a.apply(out);
    assert_eq!(to_link(&mut a, q, false), Some(Some(q)));
    assert_eq!(to_link(&mut a, f, true), None);
    assert_eq!(to_link(&mut a, h, true), None);
    let out = a.sfu.tick(a.now);
    a.apply(out);
    a.advance(Duration::from_secs(4));
    let out = a.sfu.tick(a.now);
    a.apply(out);
    assert_eq!(
        a.layers_sent[&cam],
        Layers::NONE.with(q),
        "nobody needs h or f: paused at Ada's page"
    );
    // A viewer there wants f again: Ada's page is asked for it and for its keyframe,
    // and the link's f starts there.
    a.keyframe_layers.clear();
    let out = a.sfu.set_passing(
        link,
        &[(ada, Source::Camera, Layers::NONE.with(q).with(f))],
        a.now,
    );
    a.apply(out);
    assert_eq!(a.layers_sent[&cam], Layers::NONE.with(q).with(f));
    assert_eq!(a.keyframe_layers, [(cam, Some(f))]);
    assert_eq!(to_link(&mut a, f, false), None);
    assert_eq!(to_link(&mut a, f, true), Some(Some(f)));
    // Nobody on B shows her: the link carries none of her video (her voice goes on).
    let out = a
        .sfu
        .set_passing(link, &[(ada, Source::Camera, Layers::NONE)], a.now);
    a.apply(out);
    assert_eq!(to_link(&mut a, q, true), None);
    let mut routes = Vec::new();
    a.sfu.route(ta[0], None, false, &mut routes);
    assert!(routes.iter().any(|r| r.viewer == link && r.rid.is_none()));
}

#[test]
fn what_a_node_shows_of_a_remote_track_is_its_largest_visible_tile() {
    let mut b = Sim::new();
    let (ada, out) = b
        .sfu
        .join_remote("m", "Ada", MediaState::default(), None, b.now)
        .expect("remote join");
    b.apply(out);
    let (cam, out) = b
        .sfu
        .publish(ada, Source::Camera, TrackKind::Video, b.now)
        .expect("remote publish");
    b.apply(out);
    // Nobody here yet: not shown.
    assert_eq!(
        b.sfu.shown(cam),
        Some(TileView {
            visible: false,
            height: 0
        })
    );
    let ben = b.join("m", "Ben");
    let bea = b.join("m", "Bea");
    b.advance(Duration::from_millis(50));
    // Pages that said nothing yet: the whole picture.
    assert_eq!(b.sfu.shown(cam), None);
    let tile = |visible, height| TileView { visible, height };
    let out = b
        .sfu
        .set_view(ben, &[(ada, Source::Camera, tile(true, 180))], b.now);
    b.apply(out);
    assert_eq!(b.sfu.shown(cam), None, "Bea still says nothing");
    let out = b
        .sfu
        .set_view(bea, &[(ada, Source::Camera, tile(false, 700))], b.now);
    b.apply(out);
    assert_eq!(
        b.sfu.shown(cam),
        Some(tile(true, 180)),
        "a hidden tile's size does not count"
    );
    let out = b
        .sfu
        .set_view(ben, &[(ada, Source::Camera, tile(false, 180))], b.now);
    b.apply(out);
    assert_eq!(b.sfu.shown(cam), Some(tile(false, 0)));
    // Someone whose subscription is still being negotiated (a newcomer, or one moved into
    // Ada's breakout room) will show her: the whole picture until their page says.
    let cy = b.join("m", "Cy");
    assert!(
        b.sfu.subscribers(cam).iter().all(|v| *v != cy),
        "negotiating"
    );
    assert_eq!(b.sfu.shown(cam), None, "a negotiating viewer counts");
    let out = b
        .sfu
        .set_view(cy, &[(ada, Source::Camera, tile(true, 360))], b.now);
    b.apply(out);
    assert_eq!(b.sfu.shown(cam), Some(tile(true, 360)));
}

#[test]
fn a_viewer_is_told_whose_cameras_its_link_has_no_room_for() {
    // A class of nine cameras, each in three layers, and Vee watching all in a gallery.
    let mut sim = Sim::new();
    let mut cams = Vec::new();
    for i in 0..9 {
        let (who, t) = sim.join_publishing("m", &format!("P{i}"));
        sim.sfu.set_simulcast(t[1], Layers::ALL);
        cams.push((who, t[1]));
    }
    let vee = sim.join("m", "Vee");
    sim.advance(Duration::from_millis(50));
    let small = TileView {
        visible: true,
        height: 150,
    };
    let tiles: Vec<(ParticipantId, Source, TileView)> = cams
        .iter()
        .map(|(who, _)| (*who, Source::Camera, small))
        .collect();
    let out = sim.sfu.set_view(vee, &tiles, sim.now);
    sim.apply(out);
    let [q, _, _] = Layer::ALL;
    let send_all = |sim: &mut Sim| {
        for &(_, cam) in &cams {
            sim.send_layer(cam, q, true);
        }
    };
    send_all(&mut sim);
    let paused = |sim: &Sim| -> Vec<Vec<ParticipantId>> {
        sim.notices_of(vee)
            .iter()
            .filter_map(|n| match n {
                Notice::Paused { ids } => Some(ids.clone()),
                _ => None,
            })
            .collect()
    };
    // With room (the positive control), no notice: every camera has its picture.
    let out = sim.sfu.set_estimate(vee, 20_000_000, sim.now);
    sim.apply(out);
    assert!(paused(&sim).is_empty(), "{:?}", paused(&sim));
    // 800 kbit/s: nine voices take most of it; the first six pictures come whatever it
    // costs, the last three get none, and Vee's page is told whose.
    let out = sim.sfu.set_estimate(vee, 800_000, sim.now);
    sim.apply(out);
    let told = paused(&sim);
    let mut last_three: Vec<ParticipantId> = cams[6..].iter().map(|(w, _)| *w).collect();
    last_three.sort();
    assert_eq!(told, [last_three.clone()], "told once, the last three");
    // The same estimate again: nothing new to tell.
    let out = sim.sfu.set_estimate(vee, 790_000, sim.now);
    sim.apply(out);
    assert_eq!(paused(&sim).len(), 1);
    // Room again, after the link's hold-off: all pictures back, and Vee is told.
    sim.advance(Duration::from_secs(6));
    send_all(&mut sim);
    let out = sim.sfu.set_estimate(vee, 20_000_000, sim.now);
    sim.apply(out);
    assert_eq!(paused(&sim), [last_three, vec![]]);
}

#[test]
fn the_spotlight_is_told_to_everyone_here_and_its_camera_comes_first_on_a_weak_link() {
    // Nine cameras in three layers; Vee watches them all in a gallery on a tight link.
    let mut sim = Sim::new();
    let mut cams = Vec::new();
    for i in 0..9 {
        let (who, t) = sim.join_keyed_publishing(&format!("P{i}"), &format!("key-{i}"));
        sim.sfu.set_simulcast(t[1], Layers::ALL);
        cams.push((who, t[1]));
    }
    let vee = sim.join("m", "Vee");
    sim.advance(Duration::from_millis(50));
    let small = TileView {
        visible: true,
        height: 150,
    };
    let tiles: Vec<(ParticipantId, Source, TileView)> = cams
        .iter()
        .map(|(who, _)| (*who, Source::Camera, small))
        .collect();
    let out = sim.sfu.set_view(vee, &tiles, sim.now);
    sim.apply(out);
    let [q, _, _] = Layer::ALL;
    for &(_, cam) in &cams {
        sim.send_layer(cam, q, true);
    }
    let out = sim.sfu.set_estimate(vee, 800_000, sim.now);
    sim.apply(out);
    let (last, last_cam) = cams[8];
    // The positive control: without a spotlight, the last camera gets no picture.
    let g0 = sim.got(vee, last_cam);
    sim.send_layer(last_cam, q, true);
    assert_eq!(
        sim.got(vee, last_cam),
        g0,
        "the last in the gallery is paused"
    );

    let out = sim.sfu.set_spotlight("m", Some("key-8".into()), sim.now);
    sim.apply(out);
    let told = |sim: &Sim, who| -> Vec<Option<String>> {
        sim.notices_of(who)
            .iter()
            .filter_map(|n| match n {
                Notice::Spotlight { key } => Some(key.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(told(&sim, vee), [Some("key-8".to_owned())]);
    assert_eq!(
        told(&sim, last),
        [Some("key-8".to_owned())],
        "they know too"
    );
    sim.send_layer(last_cam, q, true);
    sim.send_layer(last_cam, q, false);
    assert_eq!(
        sim.got(vee, last_cam),
        g0 + 2,
        "the spotlight's camera comes first"
    );
    // The same again tells nobody; a newcomer is told after its welcome.
    let out = sim.sfu.set_spotlight("m", Some("key-8".into()), sim.now);
    assert!(out.is_empty(), "{out:?}");
    let zed = sim.join("m", "Zed");
    assert_eq!(told(&sim, zed), [Some("key-8".to_owned())]);
    // Taken off: everyone is told, and a newcomer hears nothing of it.
    let out = sim.sfu.set_spotlight("m", None, sim.now);
    sim.apply(out);
    assert_eq!(told(&sim, vee), [Some("key-8".to_owned()), None]);
    let yan = sim.join("m", "Yan");
    assert!(told(&sim, yan).is_empty());
}

#[test]
fn a_join_right_after_the_last_leave_is_told_of_the_spotlight() {
    // The driver hands the spotlight before each join; the last person here leaves
    // between that and the join it was for.
    let mut sim = Sim::new();
    let ada = sim.join("m", "Ada");
    let out = sim
        .sfu
        .set_spotlight("m", Some("key-of-bob".into()), sim.now);
    sim.apply(out);
    let out = sim.sfu.leave(ada, sim.now);
    sim.apply(out);
    let (cy, out) = sim
        .sfu
        .join_keyed("m", "Cy", Some("key-of-cy".into()), sim.now)
        .expect("join");
    sim.apply(out);
    let told = sim.notices.get(&cy).cloned().unwrap_or_default();
    assert!(
        told.contains(&Notice::Spotlight {
            key: Some("key-of-bob".into())
        }),
        "Cy is told whose camera is on the stage: {told:?}"
    );
    // Ended while nobody was here: the next one is told nothing of it.
    let out = sim.sfu.leave(cy, sim.now);
    sim.apply(out);
    let out = sim.sfu.set_spotlight("m", None, sim.now);
    sim.apply(out);
    let dan = sim.join("m", "Dan");
    let told = sim.notices.get(&dan).cloned().unwrap_or_default();
    assert!(
        !told
            .iter()
            .any(|n| matches!(n, Notice::Spotlight { key: Some(_) })),
        "{told:?}"
    );
}
