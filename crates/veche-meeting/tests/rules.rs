//! One test per rule of a meeting's governance, with the attacks of the issue "One gate
//! decides who is in a meeting" as cases that are refused. No sockets, no clock: times are
//! arguments.

use veche_meeting::{Change, CheckedAction, Governance, JoinRefused, Person, Presence, Refused};
use veche_trust::{
    decode_token, encode_key, encode_token, Action, ActionKind, Invite, Keypair, MeetingDoc,
    Policy, Revocation, Role, Sig, Signed, TrustError,
};

const NOW: u64 = 1_800_000_000_000;
const HOUR: u64 = 3_600_000;
const ID: &str = "k3x-9qa-7mf";
const NODE: &str = "12D3KooWnodeOfTheSchool";
const OTHER_NODE: &str = "12D3KooWnodeOfTheClub";

fn key(n: u8) -> Keypair {
    Keypair::from_secret(&[n; 32])
}

fn doc(host: &Keypair, id: &str, policy: Policy, lobby: bool) -> String {
    encode_token(&host.sign(MeetingDoc {
        id: id.into(),
        title: "Physics 7B".into(),
        host: host.public(),
        policy,
        lobby,
        created_ms: NOW - HOUR,
        ends_ms: None,
    }))
}

/// A meeting signed by `host`, as a node that created it holds it.
fn meeting(host: &Keypair, policy: Policy, lobby: bool) -> Governance {
    let mut g = Governance::default();
    let change = g
        .check_doc(ID, &doc(host, ID, policy, lobby), None)
        .expect("doc")
        .expect("new");
    g.apply(&change);
    g
}

fn invite(
    signer: &Keypair,
    id: &str,
    role: Role,
    invitee: Option<&Keypair>,
    parent: Option<Signed<Invite>>,
) -> Signed<Invite> {
    signer.sign(Invite {
        meeting: ID.into(),
        id: id.into(),
        role,
        expires_ms: NOW + HOUR,
        max_uses: None,
        invitee: invitee.map(Keypair::public),
        parent: parent.map(Box::new),
    })
}

fn sig_text(sig: Sig) -> String {
    serde_json::to_value(sig)
        .expect("sig")
        .as_str()
        .expect("text")
        .to_owned()
}

/// What `who` presents to `node` for `meeting`, with `invite`.
fn presence(who: &Keypair, node: &str, meeting: &str, invite: Option<&Signed<Invite>>) -> Presence {
    let nonce = "nonce-0123456789abcdef".to_owned();
    Presence {
        key: encode_key(&who.public()),
        sig: sig_text(who.sign_challenge(node, meeting, &nonce)),
        nonce,
        invite: invite.map(encode_token),
        admit: None,
    }
}

fn join(g: &Governance, p: &Presence) -> Result<veche_meeting::Admitted, JoinRefused> {
    g.admit(
        ID,
        &Person {
            node: NODE,
            key: &p.key,
            nonce: &p.nonce,
            sig: &p.sig,
            invite: p.invite.as_deref(),
        },
        NOW,
    )
}

fn act(
    signer: &Keypair,
    kind: ActionKind,
    target: &Keypair,
    at_ms: u64,
    authority: Option<&Signed<Invite>>,
) -> String {
    encode_token(&signer.sign(Action {
        meeting: ID.into(),
        kind,
        target: target.public(),
        at_ms,
        authority: authority.cloned().map(Box::new),
    }))
}

fn revoke(host: &Keypair, invite: &str) -> String {
    encode_token(&host.sign(Revocation {
        meeting: ID.into(),
        invite: invite.into(),
        at_ms: NOW,
    }))
}

/// Check `token` and commit what it changes.
fn take(g: &mut Governance, token: &str, now: u64) -> Result<CheckedAction, Refused> {
    let c = g.check_action(ID, token, now)?;
    if let Some(change) = &c.change {
        g.apply(change);
    }
    Ok(c)
}

#[test]
fn a_role_is_earned_in_one_meeting_and_decided_there() {
    let attacker = key(9);
    // Host of a meeting of his own...
    let mine = {
        let mut g = Governance::default();
        let c = g
            .check_doc(
                "aaa-bbb-ccc",
                &doc(&attacker, "aaa-bbb-ccc", Policy::Anyone, false),
                None,
            )
            .expect("doc")
            .expect("new");
        g.apply(&c);
        g
    };
    let p = presence(&attacker, NODE, "aaa-bbb-ccc", None);
    let in_mine = mine
        .admit(
            "aaa-bbb-ccc",
            &Person {
                node: NODE,
                key: &p.key,
                nonce: &p.nonce,
                sig: &p.sig,
                invite: None,
            },
            NOW,
        )
        .expect("his own");
    assert_eq!(in_mine.role, Role::Host);
    // ...is nobody in another host's invite-only meeting: the role comes from its document.
    let theirs = meeting(&key(1), Policy::InviteOnly, false);
    let p = presence(&attacker, NODE, ID, None);
    assert_eq!(
        join(&theirs, &p),
        Err(JoinRefused::Policy(TrustError::NotInvited))
    );
    // And his proof for his own meeting is no proof for theirs.
    let reused = Presence {
        ..presence(&attacker, NODE, "aaa-bbb-ccc", None)
    };
    assert!(matches!(
        join(&theirs, &reused),
        Err(JoinRefused::BadProof(_))
    ));
}

#[test]
fn roles_follow_the_document_and_the_invite() {
    let host = key(1);
    let g = meeting(&host, Policy::InviteOnly, false);
    assert_eq!(
        join(&g, &presence(&host, NODE, ID, None))
            .expect("host")
            .role,
        Role::Host
    );
    let ada = key(2);
    let listen = invite(&host, "i-listen", Role::Listener, None, None);
    let a = join(&g, &presence(&ada, NODE, ID, Some(&listen))).expect("listener");
    assert_eq!((a.role, a.wait, a.change), (Role::Listener, false, None));
    let open = meeting(&host, Policy::Anyone, false);
    assert_eq!(
        join(&open, &presence(&ada, NODE, ID, None))
            .expect("anyone")
            .role,
        Role::Speaker
    );
    // Unsigned: anyone, as a speaker, and nobody has authority.
    let unsigned = Governance::default();
    assert_eq!(
        join(&unsigned, &presence(&ada, NODE, ID, None))
            .expect("open")
            .role,
        Role::Speaker
    );
    assert_eq!(
        unsigned.check_action(ID, &act(&ada, ActionKind::End, &ada, NOW, None), NOW),
        Err(Refused::NoHost)
    );
}

#[test]
fn a_withdrawn_moderator_has_no_power_left() {
    let host = key(1);
    let (mo, ada) = (key(2), key(3));
    let mut g = meeting(&host, Policy::Anyone, false);
    let mod_invite = invite(&host, "i-mod", Role::Moderator, Some(&mo), None);
    // While it holds, the moderator mutes, and may be handed the role.
    take(
        &mut g,
        &act(&mo, ActionKind::Mute, &ada, NOW, Some(&mod_invite)),
        NOW,
    )
    .expect("mute");
    let grant = encode_token(&mod_invite);
    let c = g.check_grant(ID, &grant, NOW).expect("grant");
    g.apply(&c);
    assert!(g.moderators(NOW).contains(&mo.public()));
    // The host withdraws it.
    let c = g
        .check_revocation(ID, &revoke(&host, "i-mod"))
        .expect("revocation");
    g.apply(&c);
    for kind in [
        ActionKind::Mute,
        ActionKind::Remove,
        ActionKind::Lock,
        ActionKind::End,
        ActionKind::Admit,
    ] {
        let target = if matches!(kind, ActionKind::Lock | ActionKind::End) {
            &mo
        } else {
            &ada
        };
        assert_eq!(
            g.check_action(ID, &act(&mo, kind, target, NOW, Some(&mod_invite)), NOW),
            Err(Refused::Withdrawn),
            "{kind:?}"
        );
    }
    assert_eq!(g.check_grant(ID, &grant, NOW), Err(Refused::Withdrawn));
    // Nor may they make a moderator of someone else with an invite signed under theirs.
    let sub = invite(
        &mo,
        "i-sub",
        Role::Moderator,
        Some(&ada),
        Some(mod_invite.clone()),
    );
    assert_eq!(
        g.check_grant(ID, &encode_token(&sub), NOW),
        Err(Refused::Withdrawn)
    );
    assert!(!g.moderators(NOW).contains(&mo.public()));
    assert!(!g.may_moderate(&mo.public(), Some(&mod_invite), NOW));
    assert!(!g.ended() && !g.locked());
    // And their link no longer admits them as a moderator.
    assert_eq!(
        join(&g, &presence(&mo, NODE, ID, Some(&mod_invite))),
        Err(JoinRefused::Policy(TrustError::Revoked))
    );
}

#[test]
fn a_removed_moderator_acts_as_nobody_and_their_invites_end() {
    let host = key(1);
    let (mo, ada, bob) = (key(2), key(3), key(4));
    let mut g = meeting(&host, Policy::InviteOnly, false);
    let mod_invite = invite(&host, "i-mod", Role::Moderator, Some(&mo), None);
    let theirs = invite(
        &mo,
        "i-by-mod",
        Role::Speaker,
        None,
        Some(mod_invite.clone()),
    );
    assert_eq!(
        join(&g, &presence(&bob, NODE, ID, Some(&theirs)))
            .expect("bob")
            .role,
        Role::Speaker
    );
    take(&mut g, &act(&host, ActionKind::Remove, &mo, NOW, None), NOW).expect("remove");
    assert!(g.is_removed(&mo.public()));
    assert_eq!(
        g.check_action(
            ID,
            &act(&mo, ActionKind::Remove, &ada, NOW, Some(&mod_invite)),
            NOW
        ),
        Err(Refused::SignerRemoved)
    );
    assert_eq!(
        join(&g, &presence(&mo, NODE, ID, Some(&mod_invite))),
        Err(JoinRefused::Removed)
    );
    assert_eq!(
        join(&g, &presence(&bob, NODE, ID, Some(&theirs))),
        Err(JoinRefused::Policy(TrustError::NotDelegated))
    );
}

#[test]
fn an_action_is_checked_at_the_checking_nodes_time() {
    let host = key(1);
    let (mo, ada) = (key(2), key(3));
    let g = meeting(&host, Policy::Anyone, false);
    let mod_invite = invite(&host, "i-mod", Role::Moderator, Some(&mo), None);
    // Backdated (or replayed) a minute and more: refused, whoever signed it.
    for signer in [&host, &mo] {
        let authority = (signer.public() != host.public()).then_some(&mod_invite);
        let old = act(
            signer,
            ActionKind::Remove,
            &ada,
            NOW - 10 * 60_000,
            authority,
        );
        assert_eq!(
            g.check_action(ID, &old, NOW),
            Err(Refused::Trust(TrustError::Stale))
        );
    }
    // A moderator's invite past its expiry moderates nothing, whatever the action says.
    let later = NOW + 2 * HOUR;
    assert_eq!(
        g.check_action(
            ID,
            &act(&mo, ActionKind::Mute, &ada, later, Some(&mod_invite)),
            later
        ),
        Err(Refused::Trust(TrustError::Expired))
    );
    // Nobody acts against the host; a speaker acts as nobody.
    assert_eq!(
        g.check_action(
            ID,
            &act(&mo, ActionKind::Remove, &host, NOW, Some(&mod_invite)),
            NOW
        ),
        Err(Refused::Trust(TrustError::NotModerator))
    );
    let speaker = invite(&host, "i-sp", Role::Speaker, Some(&ada), None);
    assert_eq!(
        g.check_action(
            ID,
            &act(&ada, ActionKind::End, &ada, NOW, Some(&speaker)),
            NOW
        ),
        Err(Refused::Trust(TrustError::NotModerator))
    );
}

#[test]
fn a_meetings_identity_cannot_be_claimed() {
    let host = key(1);
    let stranger = key(9);
    let g = meeting(&host, Policy::InviteOnly, false);
    // Another document for a known id.
    let theirs = doc(&stranger, ID, Policy::Anyone, false);
    assert_eq!(g.check_doc(ID, &theirs, None), Err(Refused::Conflict));
    // The stored one again: nothing to change.
    assert_eq!(
        g.check_doc(ID, &doc(&host, ID, Policy::InviteOnly, false), None),
        Ok(None)
    );
    // A node learning it: the link pins the host.
    let fresh = Governance::default();
    let pin = host.public().pin();
    assert_eq!(
        fresh.check_doc(ID, &theirs, Some(&pin)),
        Err(Refused::WrongHost)
    );
    assert!(matches!(
        fresh.check_doc(ID, &doc(&host, ID, Policy::InviteOnly, false), Some(&pin)),
        Ok(Some(Change::Doc(_)))
    ));
    // A document for another id, or signed by a key it does not name.
    assert_eq!(
        fresh.check_doc(ID, &doc(&host, "zzz-zzz-zzz", Policy::Anyone, false), None),
        Err(Refused::WrongMeeting)
    );
    let usurped = encode_token(&stranger.sign(MeetingDoc {
        id: ID.into(),
        title: "x".into(),
        host: host.public(),
        policy: Policy::Anyone,
        lobby: false,
        created_ms: NOW,
        ends_ms: None,
    }));
    assert_eq!(
        fresh.check_doc(ID, &usurped, None),
        Err(Refused::Trust(TrustError::NotHost))
    );
}

#[test]
fn history_from_another_node_is_checked_against_the_stored_document() {
    let host = key(1);
    let forger = key(9);
    let (mo, ada) = (key(2), key(3));
    let g = meeting(&host, Policy::Anyone, false);
    let mod_invite = invite(&host, "i-mod", Role::Moderator, Some(&mo), None);
    let revocations = vec![
        revoke(&host, "i-mod"),
        // Signed by the host of the document a hostile node sent, not the stored one.
        revoke(&forger, "i-other"),
    ];
    let actions = vec![
        // The forger's end: refused.
        act(&forger, ActionKind::End, &forger, NOW - 60_000, None),
        // The withdrawn moderator's removal, backdated to before the withdrawal: refused.
        act(
            &mo,
            ActionKind::Remove,
            &ada,
            NOW - HOUR / 2,
            Some(&mod_invite),
        ),
        // The host's lock an hour ago: kept (valid as of its time).
        act(&host, ActionKind::Lock, &host, NOW - HOUR, None),
        // Dated in the future: refused.
        act(&host, ActionKind::End, &host, NOW + HOUR, None),
    ];
    let (change, refused) = g.check_history(ID, &revocations, &actions, &[], NOW);
    assert_eq!(refused.len(), 4, "{refused:?}");
    let mut learned = g.clone();
    learned.apply(&change);
    assert!(learned.is_revoked("i-mod") && !learned.is_revoked("i-other"));
    assert!(learned.locked());
    assert!(!learned.ended());
    assert!(!learned.is_removed(&ada.public()));
}

#[test]
fn an_expired_moderator_cannot_date_an_action_back_into_its_lifetime() {
    let host = key(1);
    let (mo, ada) = (key(2), key(3));
    let g = meeting(&host, Policy::Anyone, true);
    // Valid for an hour from NOW - 2 h: expired an hour ago.
    let expired = host.sign(Invite {
        expires_ms: NOW - HOUR,
        ..invite(&host, "i-old", Role::Moderator, Some(&mo), None).body
    });
    let mut p = presence(&ada, OTHER_NODE, ID, None);
    p.admit = Some(act(
        &mo,
        ActionKind::Admit,
        &ada,
        NOW - 2 * HOUR,
        Some(&expired),
    ));
    assert_eq!(
        g.admit_remote(ID, OTHER_NODE, &p, NOW, true, false),
        Err(JoinRefused::NotLetIn)
    );
    let end = act(&mo, ActionKind::End, &mo, NOW - 2 * HOUR, Some(&expired));
    let (change, refused) = g.check_history(ID, &[], &[end], &[], NOW);
    let mut learned = g.clone();
    learned.apply(&change);
    assert!(!learned.ended() && refused.len() == 1, "{refused:?}");
}

#[test]
fn a_remote_person_counts_only_with_their_own_proof_for_their_node() {
    let host = key(1);
    let ada = key(2);
    let g = meeting(&host, Policy::InviteOnly, false);
    let inv = invite(&host, "i-ada", Role::Speaker, Some(&ada), None);
    let good = presence(&ada, OTHER_NODE, ID, Some(&inv));
    assert_eq!(
        g.admit_remote(ID, OTHER_NODE, &good, NOW, true, false),
        Ok((ada.public(), Role::Speaker))
    );
    // No invite in an invite-only meeting.
    let bare = presence(&ada, OTHER_NODE, ID, None);
    assert_eq!(
        g.admit_remote(ID, OTHER_NODE, &bare, NOW, true, false),
        Err(JoinRefused::Policy(TrustError::NotInvited))
    );
    // A proof made for another node (a node replaying what it saw elsewhere).
    assert!(matches!(
        g.admit_remote(ID, "12D3KooWhostileNode", &good, NOW, true, false),
        Err(JoinRefused::BadProof(TrustError::BadSignature))
    ));
    // For another meeting.
    let elsewhere = presence(&ada, OTHER_NODE, "aaa-bbb-ccc", Some(&inv));
    assert!(matches!(
        g.admit_remote(ID, OTHER_NODE, &elsewhere, NOW, true, false),
        Err(JoinRefused::BadProof(_))
    ));
    // Forged: the host's key with someone else's signature.
    let forged = Presence {
        key: encode_key(&host.public()),
        ..good.clone()
    };
    assert!(matches!(
        g.admit_remote(ID, OTHER_NODE, &forged, NOW, true, false),
        Err(JoinRefused::BadProof(TrustError::BadSignature))
    ));
    // Junk.
    let junk = Presence {
        sig: "AAAA".into(),
        ..good.clone()
    };
    assert!(matches!(
        g.admit_remote(ID, OTHER_NODE, &junk, NOW, true, false),
        Err(JoinRefused::BadProof(TrustError::Malformed(_)))
    ));
    // A removed key, whatever it carries.
    let mut removed = g.clone();
    take(
        &mut removed,
        &act(&host, ActionKind::Remove, &ada, NOW, None),
        NOW,
    )
    .expect("remove");
    assert_eq!(
        removed.admit_remote(ID, OTHER_NODE, &good, NOW, true, false),
        Err(JoinRefused::Removed)
    );
    // An ended meeting has nobody.
    let mut ended = g.clone();
    take(
        &mut ended,
        &act(&host, ActionKind::End, &host, NOW, None),
        NOW,
    )
    .expect("end");
    assert_eq!(
        ended.admit_remote(ID, OTHER_NODE, &good, NOW, true, false),
        Err(JoinRefused::Ended)
    );
}

#[test]
fn with_a_waiting_room_a_remote_person_needs_the_signed_decision_that_let_them_in() {
    let host = key(1);
    let (ada, eve) = (key(2), key(9));
    let g = meeting(&host, Policy::Anyone, true);
    let mut p = presence(&ada, OTHER_NODE, ID, None);
    assert_eq!(
        g.admit_remote(ID, OTHER_NODE, &p, NOW, true, false),
        Err(JoinRefused::NotLetIn)
    );
    // Waiting at their node: their node may learn the meeting's rules to let them in.
    assert!(g
        .admit_remote(ID, OTHER_NODE, &p, NOW, false, false)
        .is_ok());
    // Let in by someone with no authority.
    p.admit = Some(act(&eve, ActionKind::Admit, &ada, NOW, None));
    assert_eq!(
        g.admit_remote(ID, OTHER_NODE, &p, NOW, true, false),
        Err(JoinRefused::NotLetIn)
    );
    // The host's admit for someone else.
    p.admit = Some(act(&host, ActionKind::Admit, &eve, NOW, None));
    assert_eq!(
        g.admit_remote(ID, OTHER_NODE, &p, NOW, true, false),
        Err(JoinRefused::NotLetIn)
    );
    // The host's admit for them (made earlier: it holds as of its time).
    p.admit = Some(act(&host, ActionKind::Admit, &ada, NOW - HOUR, None));
    assert_eq!(
        g.admit_remote(ID, OTHER_NODE, &p, NOW, true, false),
        Ok((ada.public(), Role::Speaker))
    );
}

#[test]
fn the_waiting_room_lock_end_and_use_limits() {
    let host = key(1);
    let (ada, bob, mo) = (key(2), key(3), key(4));
    let mut g = meeting(&host, Policy::Anyone, true);
    let a = join(&g, &presence(&ada, NODE, ID, None)).expect("ada");
    assert!(a.wait);
    take(&mut g, &act(&host, ActionKind::Admit, &ada, NOW, None), NOW).expect("admit");
    assert!(
        !join(&g, &presence(&ada, NODE, ID, None))
            .expect("ada again")
            .wait
    );
    assert!(g.admit_of(&ada.public()).is_some());
    assert_eq!(g.still_admits(&ada.public(), Role::Speaker), Ok(()));
    // Removed while the decision travelled to her socket: she does not enter.
    let mut later = g.clone();
    take(
        &mut later,
        &act(&host, ActionKind::Remove, &ada, NOW, None),
        NOW,
    )
    .expect("remove");
    assert_eq!(
        later.still_admits(&ada.public(), Role::Speaker),
        Err(JoinRefused::Removed)
    );
    take(&mut g, &act(&host, ActionKind::Deny, &bob, NOW, None), NOW).expect("deny");
    assert_eq!(
        join(&g, &presence(&bob, NODE, ID, None)),
        Err(JoinRefused::Denied)
    );
    // The host and moderators never wait; a lock keeps everyone else out.
    let mod_invite = invite(&host, "i-mod", Role::Moderator, Some(&mo), None);
    assert!(
        !join(&g, &presence(&mo, NODE, ID, Some(&mod_invite)))
            .expect("mo")
            .wait
    );
    take(&mut g, &act(&host, ActionKind::Lock, &host, NOW, None), NOW).expect("lock");
    assert_eq!(
        join(&g, &presence(&ada, NODE, ID, None)),
        Err(JoinRefused::Locked)
    );
    // Those already in stay through a lock (another node keeps carrying them); whom the
    // host turned away does not.
    assert_eq!(g.still_in(&ada.public()), Ok(()));
    assert_eq!(g.still_in(&bob.public()), Err(JoinRefused::Denied));
    assert_eq!(
        join(&g, &presence(&mo, NODE, ID, Some(&mod_invite)))
            .expect("mo")
            .role,
        Role::Moderator
    );
    let lock = act(&host, ActionKind::Lock, &host, NOW - 1_000, None);
    take(
        &mut g,
        &act(&host, ActionKind::Unlock, &host, NOW, None),
        NOW,
    )
    .expect("unlock");
    // A lock signed before that unlock (a replay, or late from another node) changes
    // nothing, and one already taken is nothing new.
    take(&mut g, &lock, NOW).expect("an older lock checks out");
    assert!(!g.locked(), "the newest of lock and unlock decides");
    let seen = act(&host, ActionKind::Lock, &host, NOW + 1, None);
    take(&mut g, &seen, NOW).expect("lock");
    assert!(g.locked());
    assert_eq!(g.check_action(ID, &seen, NOW).expect("again").change, None);
    take(
        &mut g,
        &act(&host, ActionKind::Unlock, &host, NOW + 2, None),
        NOW,
    )
    .expect("unlock");
    // A one-use invite: the use is a change to commit; once applied it is used up.
    let mut once = meeting(&host, Policy::InviteOnly, false);
    let one = host.sign(Invite {
        max_uses: Some(1),
        ..invite(&host, "i-once", Role::Speaker, None, None).body
    });
    let first = join(&once, &presence(&ada, NODE, ID, Some(&one))).expect("first");
    let change = first.change.expect("a use to commit");
    // Not committed (the write failed): nothing changed, it still admits.
    assert!(join(&once, &presence(&bob, NODE, ID, Some(&one))).is_ok());
    once.apply(&change);
    assert_eq!(
        join(&once, &presence(&bob, NODE, ID, Some(&one))),
        Err(JoinRefused::Policy(TrustError::UsedUp))
    );
    // Ada rejoins with it (a reload, a lost connection): she used it already, nothing more.
    let again = join(&once, &presence(&ada, NODE, ID, Some(&one))).expect("Ada rejoins");
    assert_eq!(again.change, None);
    // Uses counted by a store from before uses were per person still count.
    let mut old = meeting(&host, Policy::InviteOnly, false);
    old.apply(&Change::Used {
        counter: match change {
            Change::UsedBy { counter, .. } => counter,
            other => panic!("a use is {other:?}"),
        },
        joins: 1,
    });
    assert_eq!(
        join(&old, &presence(&ada, NODE, ID, Some(&one))),
        Err(JoinRefused::Policy(TrustError::UsedUp))
    );
    take(&mut g, &act(&host, ActionKind::End, &host, NOW, None), NOW).expect("end");
    assert_eq!(
        join(&g, &presence(&host, NODE, ID, None)),
        Err(JoinRefused::Ended)
    );
}

#[test]
fn governance_survives_its_stored_form() {
    let host = key(1);
    let (ada, mo) = (key(2), key(4));
    let mut g = meeting(&host, Policy::Anyone, true);
    take(&mut g, &act(&host, ActionKind::Admit, &ada, NOW, None), NOW).expect("admit");
    take(&mut g, &act(&host, ActionKind::Lock, &host, NOW, None), NOW).expect("lock");
    let c = g
        .check_revocation(ID, &revoke(&host, "i-gone"))
        .expect("revocation");
    g.apply(&c);
    let c = g
        .check_grant(
            ID,
            &encode_token(&invite(&host, "i-mod", Role::Moderator, Some(&mo), None)),
            NOW,
        )
        .expect("grant");
    g.apply(&c);
    g.apply(&Change::UsedBy {
        counter: "signer/i-once".into(),
        key: ada.public(),
    });
    let text = serde_json::to_string(&g).expect("serialize");
    assert!(text.contains("used_by"), "{text}");
    let back: Governance = serde_json::from_str(&text).expect("deserialize");
    assert_eq!(back, g);
    assert!(back.is_revoked("i-gone") && back.locked());
    assert!(back.moderators(NOW).contains(&mo.public()));
    // A damaged token is an error, not a silently forgotten revocation.
    let damaged = text.replace("\"revocations\":[\"", "\"revocations\":[\"x");
    assert!(serde_json::from_str::<Governance>(&damaged).is_err());
}

/// A document as `host` signed it, then changed by `edit` (after signing).
fn edited(host: &Keypair, edit: impl FnOnce(&mut Signed<MeetingDoc>)) -> String {
    let mut signed = host.sign(MeetingDoc {
        id: ID.into(),
        title: "Physics 7B".into(),
        host: host.public(),
        policy: Policy::InviteOnly,
        lobby: false,
        created_ms: NOW - HOUR,
        ends_ms: None,
    });
    edit(&mut signed);
    encode_token(&signed)
}

#[test]
fn a_document_changed_after_signing_or_signed_by_another_is_refused() {
    let (host, mallory) = (key(1), key(9));
    let g = Governance::default();
    let loosened = edited(&host, |d| d.body.policy = Policy::Anyone);
    assert_eq!(
        g.check_doc(ID, &loosened, None),
        Err(Refused::Trust(TrustError::BadSignature))
    );
    let usurped = encode_token(
        &mallory.sign(MeetingDoc {
            host: host.public(),
            ..decode_token::<Signed<MeetingDoc>>(&edited(&host, |_| ()))
                .expect("doc")
                .body
        }),
    );
    assert_eq!(
        g.check_doc(ID, &usurped, None),
        Err(Refused::Trust(TrustError::NotHost))
    );
    assert_eq!(
        g.check_doc("zzz-zzz-zzz", &edited(&host, |_| ()), None),
        Err(Refused::WrongMeeting)
    );
}

#[test]
fn a_meeting_past_the_end_its_host_signed_admits_nobody() {
    let host = key(1);
    let mut g = Governance::default();
    let ends = edited(&host, |_| ());
    let mut d = decode_token::<Signed<MeetingDoc>>(&ends).expect("doc").body;
    d.ends_ms = Some(NOW + HOUR);
    let change = g
        .check_doc(ID, &encode_token(&host.sign(d)), None)
        .expect("doc")
        .expect("new");
    g.apply(&change);
    let inv = invite(&host, "e1", Role::Speaker, None, None);
    let ada = presence(&key(2), NODE, ID, Some(&inv));
    let at = |now| {
        g.admit(
            ID,
            &Person {
                node: NODE,
                key: &ada.key,
                nonce: &ada.nonce,
                sig: &ada.sig,
                invite: ada.invite.as_deref(),
            },
            now,
        )
        .map(|a| a.role)
    };
    assert_eq!(at(NOW), Ok(Role::Speaker));
    assert_eq!(at(NOW + HOUR), Err(JoinRefused::Ended));
}

#[test]
fn an_invite_bound_to_a_key_serves_only_that_key() {
    let host = key(1);
    let (ada, bob) = (key(2), key(3));
    let g = meeting(&host, Policy::InviteOnly, false);
    let for_ada = invite(&host, "a1", Role::Speaker, Some(&ada), None);
    assert_eq!(
        join(&g, &presence(&bob, NODE, ID, Some(&for_ada))).map(|a| a.role),
        Err(JoinRefused::Policy(TrustError::NotForYou))
    );
    assert_eq!(
        join(&g, &presence(&ada, NODE, ID, Some(&for_ada))).map(|a| a.role),
        Ok(Role::Speaker)
    );
}

#[test]
fn only_the_host_withdraws_and_a_withdrawn_invite_ends_the_invites_under_it() {
    let host = key(1);
    let (mo, bob) = (key(2), key(3));
    let mut g = meeting(&host, Policy::InviteOnly, false);
    let moderator = invite(&host, "mod", Role::Moderator, Some(&mo), None);
    let by_mod = invite(&mo, "bm", Role::Speaker, None, Some(moderator));
    assert_eq!(
        join(&g, &presence(&bob, NODE, ID, Some(&by_mod))).map(|a| a.role),
        Ok(Role::Speaker)
    );
    // Not a stranger, not a moderator (one the host removed must not strike back).
    for signer in [&bob, &mo] {
        let rev = encode_token(&signer.sign(Revocation {
            meeting: ID.into(),
            invite: "mod".into(),
            at_ms: NOW,
        }));
        assert_eq!(
            g.check_revocation(ID, &rev),
            Err(Refused::Trust(TrustError::NotDelegated))
        );
    }
    // Nor the host of another meeting.
    let other = key(7);
    let foreign = encode_token(&other.sign(Revocation {
        meeting: "zzz-zzz-zzz".into(),
        invite: "mod".into(),
        at_ms: NOW,
    }));
    assert_eq!(
        g.check_revocation(ID, &foreign),
        Err(Refused::Trust(TrustError::WrongMeeting))
    );
    assert!(!g.is_revoked("mod"));
    let change = g
        .check_revocation(ID, &revoke(&host, "mod"))
        .expect("the host withdraws");
    g.apply(&change);
    assert_eq!(
        join(&g, &presence(&bob, NODE, ID, Some(&by_mod))).map(|a| a.role),
        Err(JoinRefused::Policy(TrustError::Revoked))
    );
}

#[test]
fn a_proof_is_bound_to_the_node_the_meeting_and_the_nonce() {
    let host = key(1);
    let ada = key(2);
    let g = meeting(&host, Policy::Anyone, false);
    // Made for another node (one that passed her its own challenge cannot use it here).
    assert_eq!(
        join(&g, &presence(&ada, OTHER_NODE, ID, None)).map(|a| a.role),
        Err(JoinRefused::BadProof(TrustError::BadSignature))
    );
    // Made for another meeting.
    assert_eq!(
        join(&g, &presence(&ada, NODE, "zzz-zzz-zzz", None)).map(|a| a.role),
        Err(JoinRefused::BadProof(TrustError::BadSignature))
    );
    // A signature over another nonce than the one this socket was handed.
    let mut p = presence(&ada, NODE, ID, None);
    p.nonce = "nonce-fedcba9876543210".into();
    assert_eq!(
        join(&g, &p).map(|a| a.role),
        Err(JoinRefused::BadProof(TrustError::BadSignature))
    );
    assert_eq!(
        join(&g, &presence(&ada, NODE, ID, None)).map(|a| a.role),
        Ok(Role::Speaker)
    );
}

#[test]
fn a_list_of_keys_admits_those_keys_only_even_with_an_invite() {
    let host = key(1);
    let (ada, bob) = (key(2), key(3));
    let g = meeting(
        &host,
        Policy::Keys {
            keys: vec![ada.public()],
        },
        false,
    );
    assert_eq!(
        join(&g, &presence(&ada, NODE, ID, None)).map(|a| a.role),
        Ok(Role::Speaker)
    );
    assert_eq!(
        join(&g, &presence(&bob, NODE, ID, None)).map(|a| a.role),
        Err(JoinRefused::Policy(TrustError::NotInvited))
    );
    let inv = invite(&host, "i", Role::Listener, None, None);
    assert_eq!(
        join(&g, &presence(&bob, NODE, ID, Some(&inv))).map(|a| a.role),
        Err(JoinRefused::Policy(TrustError::NotInvited))
    );
}

#[test]
fn the_home_node_counts_a_limited_invite_once_per_person_whichever_node_lets_them_in() {
    let host = key(1);
    let (ada, bob) = (key(2), key(3));
    let mut home = meeting(&host, Policy::InviteOnly, false);
    let once = host.sign(Invite {
        max_uses: Some(1),
        ..invite(&host, "i-once", Role::Speaker, None, None).body
    });
    let ada_there = presence(&ada, OTHER_NODE, ID, Some(&once));
    // Announced by her node before the home counted her use: not taken.
    assert_eq!(
        home.admit_remote(ID, OTHER_NODE, &ada_there, NOW, true, true),
        Err(JoinRefused::UseNotCounted)
    );
    // Her node asks first: the use is a change to commit; counted, she is taken.
    let change = home
        .count_remote_use(ID, OTHER_NODE, &ada_there, NOW)
        .expect("counted")
        .expect("a use to commit");
    home.apply(&change);
    assert!(home
        .admit_remote(ID, OTHER_NODE, &ada_there, NOW, true, true)
        .is_ok());
    // Asked again for her (a rejoin there): nothing more to count.
    assert_eq!(
        home.count_remote_use(ID, OTHER_NODE, &ada_there, NOW),
        Ok(None)
    );
    // The next person, at either node: used up.
    assert_eq!(
        home.count_remote_use(
            ID,
            OTHER_NODE,
            &presence(&bob, OTHER_NODE, ID, Some(&once)),
            NOW
        ),
        Err(JoinRefused::Policy(TrustError::UsedUp))
    );
    assert_eq!(
        join(&home, &presence(&bob, NODE, ID, Some(&once))),
        Err(JoinRefused::Policy(TrustError::UsedUp))
    );
    // A forged proof counts nothing.
    let mut forged = presence(&bob, OTHER_NODE, ID, Some(&once));
    forged.nonce = "another-nonce-0123456789".into();
    assert!(matches!(
        home.count_remote_use(ID, OTHER_NODE, &forged, NOW),
        Err(JoinRefused::BadProof(_))
    ));
    // Where the meeting was learned, the carrying node's person with it is not checked for
    // uses (only the home counts): `home` false.
    let learned = meeting(&host, Policy::InviteOnly, false);
    assert!(learned
        .admit_remote(
            ID,
            OTHER_NODE,
            &presence(&bob, OTHER_NODE, ID, Some(&once)),
            NOW,
            true,
            false
        )
        .is_ok());
    // What a join here would need counted first: a limited invite not used by them yet.
    let p = presence(&bob, NODE, ID, Some(&once));
    let person = Person {
        node: NODE,
        key: &p.key,
        nonce: &p.nonce,
        sig: &p.sig,
        invite: p.invite.as_deref(),
    };
    assert!(learned.would_use(ID, &person, NOW));
    assert!(
        !home.would_use(ID, &person, NOW),
        "used up: the join says so itself"
    );
}

#[test]
fn only_an_end_signed_by_the_hosts_own_key_deletes_a_meeting() {
    let host = key(1);
    let (mo, ada) = (key(2), key(3));
    let mut g = meeting(&host, Policy::Anyone, false);
    let mod_invite = invite(&host, "i-mod", Role::Moderator, Some(&mo), None);
    // A moderator may end the meeting, but not delete it; nor may the host with anything
    // but an end of her own, or a stranger with no authority.
    let moderators_end = act(&mo, ActionKind::End, &mo, NOW, Some(&mod_invite));
    assert!(g.check_action(ID, &moderators_end, NOW).is_ok(), "it ends");
    for (what, token) in [
        ("a moderator's end", moderators_end.clone()),
        (
            "the host's lock",
            act(&host, ActionKind::Lock, &host, NOW, None),
        ),
        (
            "the host's end under an invite",
            act(&host, ActionKind::End, &host, NOW, Some(&mod_invite)),
        ),
        (
            "a stranger's end",
            act(&ada, ActionKind::End, &ada, NOW, None),
        ),
    ] {
        assert_eq!(
            g.check_delete(ID, &token, NOW).map(|c| c.action.body.kind),
            Err(Refused::NotTheHost),
            "{what}"
        );
    }
    // The host's own end, checked at this node's time like any action.
    let end = act(&host, ActionKind::End, &host, NOW, None);
    assert_eq!(
        g.check_delete(ID, &end, NOW + 10 * 60_000)
            .map(|c| c.action.body.kind),
        Err(Refused::Trust(TrustError::Stale)),
        "replayed later"
    );
    assert_eq!(
        g.check_delete("other-meeting", &end, NOW)
            .map(|c| c.action.body.kind),
        Err(Refused::WrongMeeting)
    );
    let c = g.check_delete(ID, &end, NOW).expect("the host deletes");
    assert!(c.change.as_ref().is_some_and(Change::ends), "{c:?}");
    // An ended meeting is still hers to delete.
    g.apply(&c.change.expect("end"));
    assert!(g.ended());
    let again = act(&host, ActionKind::End, &host, NOW + 1, None);
    assert!(g.check_delete(ID, &again, NOW + 1).is_ok());
}

#[test]
fn only_the_hosts_own_key_has_the_attendance() {
    let host = key(1);
    let (mo, ada) = (key(2), key(3));
    let mut g = meeting(&host, Policy::Anyone, false);
    let mod_invite = invite(&host, "i-mod", Role::Moderator, Some(&mo), None);
    let c = g
        .check_grant(ID, &encode_token(&mod_invite), NOW)
        .expect("grant");
    g.apply(&c);
    assert!(g.moderators(NOW).contains(&mo.public()), "a moderator");
    assert_eq!(g.check_attendance(&host.public()), Ok(()));
    // A moderator moderates, but who was in the meeting is the host's to keep.
    assert_eq!(g.check_attendance(&mo.public()), Err(Refused::NotTheHost));
    assert_eq!(g.check_attendance(&ada.public()), Err(Refused::NotTheHost));
    // An unsigned meeting has nobody who may have it.
    assert_eq!(
        Governance::default().check_attendance(&host.public()),
        Err(Refused::NoHost)
    );
}

#[test]
fn a_person_is_recorded_in_the_role_their_own_proof_and_invite_give() {
    let host = key(1);
    let (ada, bob) = (key(3), key(4));
    let g = meeting(&host, Policy::InviteOnly, false);
    let listen = invite(&host, "i-listen", Role::Listener, None, None);
    let cases = [
        (presence(&host, NODE, ID, None), Role::Host),
        (presence(&ada, NODE, ID, Some(&listen)), Role::Listener),
    ];
    for (p, role) in &cases {
        assert_eq!(g.role_by_presence(ID, NODE, p, NOW), Ok(*role));
    }
    // A proof made for another node, or another's key with Ada's proof, gives no role.
    let ada_here = presence(&ada, NODE, ID, Some(&listen));
    assert!(matches!(
        g.role_by_presence(ID, OTHER_NODE, &ada_here, NOW),
        Err(JoinRefused::BadProof(_))
    ));
    let stolen = Presence {
        key: encode_key(&bob.public()),
        ..ada_here
    };
    assert!(matches!(
        g.role_by_presence(ID, NODE, &stolen, NOW),
        Err(JoinRefused::BadProof(_))
    ));
}

#[test]
fn breakout_rooms_are_decided_by_the_newest_signed_action_and_close_on_time() {
    let host = key(1);
    let (mo, ada, bob) = (key(2), key(3), key(4));
    let mut g = meeting(&host, Policy::Anyone, false);
    let mod_invite = invite(&host, "i-mod", Role::Moderator, Some(&mo), None);
    let until = NOW + 10 * 60_000;
    let open = ActionKind::OpenRooms {
        rooms: 2,
        until_ms: until,
        choose: false,
    };
    assert_eq!(g.rooms(NOW), None, "closed until opened");
    // Bob, a speaker, cannot open rooms or move anyone (himself included).
    for (kind, target) in [(open, &bob), (ActionKind::Assign { room: 1 }, &bob)] {
        assert_eq!(
            take(&mut g, &act(&bob, kind, target, NOW, None), NOW).map(|_| ()),
            Err(Refused::Trust(TrustError::NotModerator))
        );
    }
    // Out of bounds: refused with their reason.
    for bad in [
        ActionKind::OpenRooms {
            rooms: 0,
            until_ms: until,
            choose: false,
        },
        ActionKind::OpenRooms {
            rooms: 51,
            until_ms: until,
            choose: false,
        },
        ActionKind::OpenRooms {
            rooms: 2,
            until_ms: NOW - 1,
            choose: false,
        },
        ActionKind::OpenRooms {
            rooms: 2,
            until_ms: NOW + 13 * HOUR,
            choose: false,
        },
        ActionKind::Assign { room: 51 },
    ] {
        assert_eq!(
            take(&mut g, &act(&host, bad, &host, NOW, None), NOW).map(|_| ()),
            Err(Refused::Trust(TrustError::BadRooms)),
            "{bad:?}"
        );
    }
    take(&mut g, &act(&host, open, &host, NOW, None), NOW).expect("open");
    let assign = |who: &Keypair, room: u8, at: u64| {
        act(&mo, ActionKind::Assign { room }, who, at, Some(&mod_invite))
    };
    take(&mut g, &assign(&ada, 1, NOW + 1), NOW).expect("Ada to 1");
    take(&mut g, &assign(&bob, 2, NOW + 2), NOW).expect("Bob to 2");
    // An older assignment arriving late (from another node) does not undo a newer one.
    let late = assign(&ada, 2, NOW);
    take(&mut g, &assign(&ada, 1, NOW + 3), NOW).expect("Ada to 1 again");
    take(&mut g, &late, NOW).expect("older, checked but outdated");
    let r = g.rooms(NOW + 5).expect("open");
    assert_eq!((r.count, r.until_ms), (2, until));
    assert_eq!(r.of.get(&ada.public()), Some(&1));
    assert_eq!(r.of.get(&bob.public()), Some(&2));
    assert_eq!(
        r.of.get(&host.public()),
        None,
        "the host is in the main room"
    );
    // A moderator may not move the host; the host moves herself to visit a room.
    assert!(take(&mut g, &assign(&host, 2, NOW + 4), NOW).is_err());
    take(
        &mut g,
        &act(&host, ActionKind::Assign { room: 2 }, &host, NOW + 4, None),
        NOW,
    )
    .expect("the host visits room 2");
    assert_eq!(
        g.rooms(NOW + 5).expect("open").of.get(&host.public()),
        Some(&2)
    );
    // They survive the store.
    let back: Governance =
        serde_json::from_str(&serde_json::to_string(&g).expect("json")).expect("parse");
    assert_eq!(back.rooms(NOW + 5), g.rooms(NOW + 5));
    // At their time, everyone is back in the main room, on every node's own clock.
    assert_eq!(g.rooms(until), None);
    // Opened again: a fresh start, nobody assigned; closed: none.
    let reopen = ActionKind::OpenRooms {
        rooms: 3,
        until_ms: until,
        choose: false,
    };
    take(&mut g, &act(&host, reopen, &host, NOW + 10, None), NOW).expect("reopen");
    let r = g.rooms(NOW + 11).expect("open");
    assert_eq!((r.count, r.of.len()), (3, 0));
    take(&mut g, &assign(&ada, 3, NOW + 12), NOW).expect("Ada to 3");
    take(
        &mut g,
        &act(
            &mo,
            ActionKind::CloseRooms,
            &mo,
            NOW + 13,
            Some(&mod_invite),
        ),
        NOW,
    )
    .expect("close");
    assert_eq!(g.rooms(NOW + 14), None);
}

#[test]
fn people_choose_their_own_room_only_where_the_host_lets_them() {
    let host = key(1);
    let (ada, bob) = (key(3), key(4));
    let mut g = meeting(&host, Policy::Anyone, false);
    let until = NOW + 10 * 60_000;
    let own =
        |who: &Keypair, room: u8, at: u64| act(who, ActionKind::Assign { room }, who, at, None);
    // Rooms the host assigns: Ada cannot put herself anywhere.
    let assigned = ActionKind::OpenRooms {
        rooms: 2,
        until_ms: until,
        choose: false,
    };
    take(&mut g, &act(&host, assigned, &host, NOW, None), NOW).expect("open");
    assert_eq!(
        take(&mut g, &own(&ada, 2, NOW + 1), NOW).map(|_| ()),
        Err(Refused::Trust(TrustError::NotModerator))
    );
    // Rooms people choose: Ada picks room 2 herself, but not a room that is not open, and
    // she cannot move Bob.
    let chosen = ActionKind::OpenRooms {
        rooms: 2,
        until_ms: until,
        choose: true,
    };
    take(&mut g, &act(&host, chosen, &host, NOW + 2, None), NOW).expect("reopen");
    assert!(g.rooms(NOW + 3).expect("open").choose);
    take(&mut g, &own(&ada, 2, NOW + 3), NOW).expect("Ada chooses room 2");
    assert_eq!(
        g.rooms(NOW + 4).expect("open").of.get(&ada.public()),
        Some(&2)
    );
    assert!(
        take(&mut g, &own(&ada, 3, NOW + 4), NOW).is_err(),
        "room 3 is not open"
    );
    assert_eq!(
        take(
            &mut g,
            &act(&ada, ActionKind::Assign { room: 1 }, &bob, NOW + 5, None),
            NOW
        )
        .map(|_| ()),
        Err(Refused::Trust(TrustError::NotModerator)),
        "nobody moves another without authority"
    );
    // Closed: no choosing any more.
    take(
        &mut g,
        &act(&host, ActionKind::CloseRooms, &host, NOW + 6, None),
        NOW,
    )
    .expect("close");
    assert!(take(&mut g, &own(&bob, 1, NOW + 7), NOW).is_err());
}

#[test]
fn room_decisions_stay_out_of_the_history_and_a_replay_changes_nothing() {
    let host = key(1);
    let ada = key(3);
    let mut g = meeting(&host, Policy::Anyone, false);
    let removal = act(&host, ActionKind::Remove, &key(9), NOW, None);
    take(&mut g, &removal, NOW).expect("remove");
    let open = ActionKind::OpenRooms {
        rooms: 2,
        until_ms: NOW + 60_000,
        choose: true,
    };
    take(&mut g, &act(&host, open, &host, NOW + 1, None), NOW).expect("open");
    let assign = act(&host, ActionKind::Assign { room: 2 }, &ada, NOW + 2, None);
    let first = take(&mut g, &assign, NOW).expect("assign");
    assert!(
        first.change.is_some(),
        "the first time, something to commit"
    );
    let again = take(&mut g, &assign, NOW).expect("replayed");
    assert_eq!(again.change, None, "a replay commits nothing");
    // Many moves later, the removal is still what a node learning the meeting is handed.
    let max = veche_meeting::MAX_SELF_ASSIGNED;
    for n in 0..(max as u64 + 200) {
        let mut secret = [20u8; 32];
        secret[..8].copy_from_slice(&n.to_le_bytes());
        let who = Keypair::from_secret(&secret);
        let t = act(&who, ActionKind::Assign { room: 1 }, &who, NOW + 3, None);
        let _ = take(&mut g, &t, NOW);
    }
    let (_, actions) = g.history(1 << 20);
    assert_eq!(
        actions,
        vec![removal],
        "only the removal: no room decision in the history"
    );
    // Choosing is bounded: made-up keys cannot crowd out the host's placements.
    let placed = g.rooms(NOW + 5).expect("open").of.len();
    assert_eq!(placed, max, "Ada and the first {} who chose", max - 1);
    let bob = key(4);
    take(
        &mut g,
        &act(&host, ActionKind::Assign { room: 1 }, &bob, NOW + 4, None),
        NOW,
    )
    .expect("the host still places people");
    assert_eq!(
        g.rooms(NOW + 5).expect("open").of.get(&bob.public()),
        Some(&1)
    );
}

#[test]
fn the_newest_signed_spotlight_decides_and_only_a_moderator_may_sign_one() {
    let host = key(1);
    let (mo, ada, bob) = (key(2), key(3), key(4));
    let mut g = meeting(&host, Policy::Anyone, false);
    let mod_invite = invite(&host, "i-mod", Role::Moderator, Some(&mo), None);
    assert_eq!(g.spotlight(), None);
    // The host puts Ada on the stage; the moderator then the host herself.
    take(
        &mut g,
        &act(&host, ActionKind::Spotlight, &ada, NOW, None),
        NOW,
    )
    .expect("spotlight");
    assert_eq!(g.spotlight(), Some(ada.public()));
    let on_host = act(
        &mo,
        ActionKind::Spotlight,
        &host,
        NOW + 10,
        Some(&mod_invite),
    );
    take(&mut g, &on_host, NOW + 10).expect("a moderator spotlights the host");
    assert_eq!(g.spotlight(), Some(host.public()));
    // An older one arriving late (from another node) changes nothing, and its replay is
    // nothing new.
    let older = act(&host, ActionKind::Spotlight, &bob, NOW + 5, None);
    take(&mut g, &older, NOW + 20).expect("valid, but older");
    assert_eq!(g.spotlight(), Some(host.public()));
    let c = g.check_action(ID, &on_host, NOW + 20).expect("replay");
    assert_eq!(c.change, None, "a replay changes nothing");
    // Someone without authority may not spotlight, themselves or anyone.
    for target in [&bob, &ada] {
        assert_eq!(
            g.check_action(
                ID,
                &act(&bob, ActionKind::Spotlight, target, NOW + 30, None),
                NOW + 30
            )
            .map(|c| c.change),
            Err(Refused::Trust(TrustError::NotModerator))
        );
    }
    // Withdrawn, the moderator can neither spotlight nor end it.
    let c = g
        .check_revocation(ID, &revoke(&host, "i-mod"))
        .expect("revocation");
    g.apply(&c);
    for (kind, target) in [
        (ActionKind::Spotlight, &mo),
        (ActionKind::EndSpotlight, &mo),
    ] {
        assert_eq!(
            g.check_action(
                ID,
                &act(&mo, kind, target, NOW + 40, Some(&mod_invite)),
                NOW + 40
            )
            .map(|c| c.change),
            Err(Refused::Withdrawn),
            "{kind:?}"
        );
    }
    assert_eq!(g.spotlight(), Some(host.public()));
    // It survives the store, stays out of the history, and the host ends it.
    let back: Governance =
        serde_json::from_str(&serde_json::to_string(&g).expect("serialize")).expect("back");
    assert_eq!(back.spotlight(), Some(host.public()));
    assert!(g.history(1 << 20).1.is_empty(), "{:?}", g.history(1 << 20));
    take(
        &mut g,
        &act(&host, ActionKind::EndSpotlight, &host, NOW + 50, None),
        NOW + 50,
    )
    .expect("end");
    assert_eq!(g.spotlight(), None);
    // Removing the person on the stage takes them off it.
    take(
        &mut g,
        &act(&host, ActionKind::Spotlight, &bob, NOW + 60, None),
        NOW + 60,
    )
    .expect("bob");
    take(
        &mut g,
        &act(&host, ActionKind::Remove, &bob, NOW + 70, None),
        NOW + 70,
    )
    .expect("remove");
    assert_eq!(g.spotlight(), None);
}

#[test]
fn a_node_that_learns_the_meeting_later_gets_the_rooms_and_spotlight_as_they_are_now() {
    let host = key(1);
    let (ada, bob, cy, mallory) = (key(3), key(4), key(5), key(9));
    let mut g = meeting(&host, Policy::Anyone, false);
    // An old opening, closed, then the rooms of now, where people may choose.
    let old = ActionKind::OpenRooms {
        rooms: 3,
        until_ms: NOW + 60_000,
        choose: false,
    };
    take(&mut g, &act(&host, old, &host, NOW, None), NOW).expect("old opening");
    take(
        &mut g,
        &act(&host, ActionKind::Assign { room: 3 }, &cy, NOW + 1, None),
        NOW,
    )
    .expect("old move");
    let open = ActionKind::OpenRooms {
        rooms: 2,
        until_ms: NOW + 60_000,
        choose: true,
    };
    take(&mut g, &act(&host, open, &host, NOW + 10, None), NOW).expect("open");
    for (t, n) in [
        (
            act(&host, ActionKind::Assign { room: 1 }, &ada, NOW + 11, None),
            "ada",
        ),
        (
            act(&host, ActionKind::Assign { room: 2 }, &ada, NOW + 12, None),
            "ada again",
        ),
        (
            act(&bob, ActionKind::Assign { room: 1 }, &bob, NOW + 13, None),
            "bob's own",
        ),
        (
            act(&host, ActionKind::Spotlight, &bob, NOW + 14, None),
            "spotlight",
        ),
    ] {
        take(&mut g, &t, NOW + 20).expect(n);
    }
    let state = g.state_tokens(1 << 20);
    assert_eq!(
        state.len(),
        4,
        "the opening, the spotlight, Ada's and Bob's latest rooms"
    );

    // Another node learns the meeting from this one, a minute on.
    let later = NOW + 50_000;
    let mut other = meeting(&host, Policy::Anyone, false);
    let (revocations, actions) = g.history(1 << 20);
    let (change, refused) = other.check_history(ID, &revocations, &actions, &state, later);
    assert!(refused.is_empty(), "{refused:?}");
    other.apply(&change);
    assert_eq!(other.rooms(later), g.rooms(later));
    let rooms = other.rooms(later).expect("open there too");
    assert_eq!(
        (
            rooms.count,
            rooms.of.get(&ada.public()),
            rooms.of.get(&bob.public())
        ),
        (2, Some(&2), Some(&1))
    );
    assert!(
        !rooms.of.contains_key(&cy.public()),
        "the old opening's moves are gone"
    );
    assert_eq!(other.spotlight(), Some(bob.public()));

    // What a node hands over as state is checked like any action: a student's spotlight,
    // or a valid action of another kind, is refused with the reason and changes nothing.
    let forged = act(&mallory, ActionKind::Spotlight, &mallory, NOW + 30, None);
    let lock = act(&host, ActionKind::Lock, &host, NOW + 31, None);
    let mut fresh = meeting(&host, Policy::Anyone, false);
    let (change, refused) = fresh.check_history(ID, &[], &[], &[forged, lock], later);
    assert_eq!(
        refused,
        [Refused::Trust(TrustError::NotModerator), Refused::NotState]
    );
    fresh.apply(&change);
    assert_eq!((fresh.spotlight(), fresh.locked()), (None, false));

    // Closed, and the spotlight ended: the closing and the end are what is handed over, and
    // a node that has them takes no older opening or spotlight (a stale or lying node's).
    take(
        &mut g,
        &act(&host, ActionKind::CloseRooms, &host, NOW + 40, None),
        NOW + 40,
    )
    .expect("close");
    take(
        &mut g,
        &act(&host, ActionKind::EndSpotlight, &host, NOW + 41, None),
        NOW + 41,
    )
    .expect("end");
    let ended = g.state_tokens(1 << 20);
    assert_eq!(ended.len(), 2, "the closing and the end");
    let mut third = meeting(&host, Policy::Anyone, false);
    let mut stale = ended.clone();
    stale.extend(state.iter().cloned());
    let (change, refused) = third.check_history(ID, &[], &[], &stale, later);
    assert_eq!(
        refused,
        [Refused::Trust(TrustError::NotModerator)],
        "only Bob's own choice, with no rooms open that let him choose"
    );
    third.apply(&change);
    assert_eq!((third.rooms(later), third.spotlight()), (None, None));
    // And the state survives the store.
    let back: Governance =
        serde_json::from_str(&serde_json::to_string(&other).expect("ser")).expect("de");
    assert_eq!(back.state_tokens(1 << 20), state);
}
