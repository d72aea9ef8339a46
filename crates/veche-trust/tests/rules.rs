//! The signing and checking rules: forgery, tampering, expiry, revocation, delegation depth,
//! uses, binding to a key, policy and replay.

use veche_trust::{
    check_invite, decode_token, encode_token, Gate, Invite, JoinProof, Keypair, MeetingDoc, Policy,
    Revocation, Role, Signed, TrustError,
};

const NOW: u64 = 1_800_000_000_000;
const HOUR: u64 = 3_600_000;
const NODE: &str = "12D3KooWnodeOfTheSchool";

fn key(n: u8) -> Keypair {
    Keypair::from_secret(&[n; 32])
}

fn meeting(host: &Keypair, policy: Policy) -> Signed<MeetingDoc> {
    host.sign(MeetingDoc {
        id: "k3x-9qa-7mf".into(),
        title: "Physics 7B".into(),
        host: host.public(),
        policy,
        lobby: false,
        created_ms: NOW - HOUR,
        ends_ms: Some(NOW + 2 * HOUR),
    })
}

fn invite(
    signer: &Keypair,
    id: &str,
    role: Role,
    invitee: Option<&Keypair>,
    parent: Option<Signed<Invite>>,
) -> Signed<Invite> {
    signer.sign(Invite {
        meeting: "k3x-9qa-7mf".into(),
        id: id.into(),
        role,
        expires_ms: NOW + HOUR,
        max_uses: None,
        invitee: invitee.map(Keypair::public),
        parent: parent.map(Box::new),
    })
}

/// A fresh challenge, signed by `who`, with `invite`.
fn proof(gate: &mut Gate, who: &Keypair, n: u32, invite: Option<Signed<Invite>>) -> JoinProof {
    let nonce = gate
        .challenge(format!("nonce-{n:016}"), NOW)
        .expect("challenge");
    JoinProof {
        key: who.public(),
        sig: who.sign_challenge(NODE, "k3x-9qa-7mf", &nonce),
        nonce,
        invite,
    }
}

#[test]
fn host_invites_and_the_holder_joins_in_that_role() {
    let host = key(1);
    let ada = key(2);
    let m = meeting(&host, Policy::InviteOnly);
    let mut gate = Gate::new(NODE, "k3x-9qa-7mf");
    let inv = invite(&host, "i1", Role::Listener, None, None);
    let p = proof(&mut gate, &ada, 1, Some(inv));
    assert_eq!(gate.check_join(&m, &p, NOW), Ok(Role::Listener));
    // The host is the host without any invite.
    let p = proof(&mut gate, &host, 2, None);
    assert_eq!(gate.check_join(&m, &p, NOW), Ok(Role::Host));
    // Without an invite, an invite-only meeting refuses.
    let p = proof(&mut gate, &ada, 3, None);
    assert_eq!(gate.check_join(&m, &p, NOW), Err(TrustError::NotInvited));
}

#[test]
fn forged_and_tampered_documents_are_refused() {
    let host = key(1);
    let mallory = key(9);
    let m = meeting(&host, Policy::InviteOnly);
    // Signed by someone who is not the host, claiming to be a top-level invite.
    let forged = invite(&mallory, "f1", Role::Moderator, None, None);
    assert_eq!(
        check_invite(&m.body, &forged, NOW),
        Err(TrustError::NotDelegated)
    );
    // Signed by mallory but labelled with the host's key.
    let mut relabelled = forged.clone();
    relabelled.key = host.public();
    assert_eq!(
        check_invite(&m.body, &relabelled, NOW),
        Err(TrustError::BadSignature)
    );
    // A real listener invite edited into a moderator one.
    let mut tampered = invite(&host, "t1", Role::Listener, None, None);
    tampered.body.role = Role::Moderator;
    assert_eq!(
        check_invite(&m.body, &tampered, NOW),
        Err(TrustError::BadSignature)
    );
    // Its expiry pushed back.
    let mut later = invite(&host, "t2", Role::Listener, None, None);
    later.body.expires_ms += 100 * HOUR;
    assert_eq!(
        check_invite(&m.body, &later, NOW),
        Err(TrustError::BadSignature)
    );
    // A meeting document whose policy was loosened after signing.
    let mut loose = m.clone();
    loose.body.policy = Policy::Anyone;
    let mut gate = Gate::new(NODE, "k3x-9qa-7mf");
    let p = proof(&mut gate, &key(2), 1, None);
    assert_eq!(
        gate.check_join(&loose, &p, NOW),
        Err(TrustError::BadSignature)
    );
    // A meeting signed by someone other than the host it names.
    let usurped = mallory.sign(m.body.clone());
    let p = proof(&mut gate, &key(2), 2, None);
    assert_eq!(gate.check_join(&usurped, &p, NOW), Err(TrustError::NotHost));
    // A signature of one kind of document is not valid for another.
    let rev = host.sign(Revocation {
        meeting: "k3x-9qa-7mf".into(),
        invite: "x".into(),
        at_ms: NOW,
    });
    let as_invite: Signed<Invite> = Signed::from_parts(
        invite(&host, "x", Role::Moderator, None, None).body,
        rev.key,
        rev.sig,
    );
    assert_eq!(
        check_invite(&m.body, &as_invite, NOW),
        Err(TrustError::BadSignature)
    );
}

#[test]
fn expiry_meeting_end_and_wrong_meeting() {
    let host = key(1);
    let m = meeting(&host, Policy::InviteOnly);
    let inv = invite(&host, "e1", Role::Speaker, None, None);
    assert_eq!(
        check_invite(&m.body, &inv, NOW + HOUR - 1),
        Ok(Role::Speaker)
    );
    assert_eq!(
        check_invite(&m.body, &inv, NOW + HOUR),
        Err(TrustError::Expired)
    );
    let other = host.sign(Invite {
        meeting: "zzz-zzz-zzz".into(),
        ..inv.body.clone()
    });
    assert_eq!(
        check_invite(&m.body, &other, NOW),
        Err(TrustError::WrongMeeting)
    );
    let mut gate = Gate::new(NODE, "k3x-9qa-7mf");
    let late = NOW + 3 * HOUR;
    let nonce = gate
        .challenge("nonce-late-000000000".into(), late)
        .expect("challenge");
    let p = JoinProof {
        key: key(2).public(),
        sig: key(2).sign_challenge(NODE, "k3x-9qa-7mf", &nonce),
        nonce,
        invite: Some(inv),
    };
    assert_eq!(gate.check_join(&m, &p, late), Err(TrustError::MeetingEnded));
}

#[test]
fn moderators_delegate_within_depth_and_not_above_their_role() {
    let host = key(1);
    let (m1, m2, m3, ada) = (key(2), key(3), key(4), key(5));
    let m = meeting(&host, Policy::InviteOnly);
    let mod1 = invite(&host, "m1", Role::Moderator, Some(&m1), None);
    let mod2 = invite(&m1, "m2", Role::Moderator, Some(&m2), Some(mod1.clone()));
    // Depth 2: host → m1 → speaker invite.
    let by_m1 = invite(&m1, "s1", Role::Speaker, None, Some(mod1.clone()));
    assert_eq!(check_invite(&m.body, &by_m1, NOW), Ok(Role::Speaker));
    // Depth 3: host → m1 → m2 → speaker invite.
    let by_m2 = invite(&m2, "s2", Role::Speaker, None, Some(mod2.clone()));
    assert_eq!(check_invite(&m.body, &by_m2, NOW), Ok(Role::Speaker));
    // Depth 4 is too deep.
    let mod3 = invite(&m2, "m3", Role::Moderator, Some(&m3), Some(mod2));
    let by_m3 = invite(&m3, "s3", Role::Speaker, None, Some(mod3));
    assert_eq!(
        check_invite(&m.body, &by_m3, NOW),
        Err(TrustError::ChainTooDeep)
    );
    // Nobody grants host.
    let usurp = invite(&m1, "h", Role::Host, None, Some(mod1.clone()));
    assert_eq!(
        check_invite(&m.body, &usurp, NOW),
        Err(TrustError::RoleTooHigh)
    );
    // A speaker may not invite.
    let spk = invite(&host, "sp", Role::Speaker, Some(&ada), None);
    let by_speaker = invite(&ada, "x", Role::Listener, None, Some(spk));
    assert_eq!(
        check_invite(&m.body, &by_speaker, NOW),
        Err(TrustError::NotDelegated)
    );
    // Someone else's moderator invite does not make you a moderator.
    let stolen = invite(&ada, "y", Role::Listener, None, Some(mod1));
    assert_eq!(
        check_invite(&m.body, &stolen, NOW),
        Err(TrustError::NotDelegated)
    );
}

#[test]
fn revocation_uses_and_binding() {
    let host = key(1);
    let (mod1, ada, bob) = (key(2), key(3), key(4));
    let m = meeting(&host, Policy::InviteOnly);
    let mut gate = Gate::new(NODE, "k3x-9qa-7mf");

    // Bound to Ada: Bob cannot use it.
    let for_ada = invite(&host, "a1", Role::Speaker, Some(&ada), None);
    let p = proof(&mut gate, &bob, 1, Some(for_ada.clone()));
    assert_eq!(gate.check_join(&m, &p, NOW), Err(TrustError::NotForYou));
    let p = proof(&mut gate, &ada, 2, Some(for_ada));
    assert_eq!(gate.check_join(&m, &p, NOW), Ok(Role::Speaker));

    // Two uses, then used up.
    let twice = host.sign(Invite {
        max_uses: Some(2),
        ..invite(&host, "u2", Role::Listener, None, None).body
    });
    for n in 3..5 {
        let p = proof(&mut gate, &key(n as u8 + 10), n, Some(twice.clone()));
        assert_eq!(gate.check_join(&m, &p, NOW), Ok(Role::Listener));
    }
    let p = proof(&mut gate, &key(20), 5, Some(twice));
    assert_eq!(gate.check_join(&m, &p, NOW), Err(TrustError::UsedUp));

    // A moderator's invite revoked by the host: invites it signed stop working too.
    let moderator = invite(&host, "mod", Role::Moderator, Some(&mod1), None);
    let by_mod = invite(&mod1, "bm", Role::Speaker, None, Some(moderator.clone()));
    let p = proof(&mut gate, &bob, 6, Some(by_mod.clone()));
    assert_eq!(gate.check_join(&m, &p, NOW), Ok(Role::Speaker));
    // Only the host may revoke: not a stranger, not a moderator (one the host removed
    // must not be able to strike back at the others).
    let bogus = bob.sign(Revocation {
        meeting: "k3x-9qa-7mf".into(),
        invite: "mod".into(),
        at_ms: NOW,
    });
    assert_eq!(gate.revoke(&m.body, &bogus), Err(TrustError::NotDelegated));
    let by_moderator = mod1.sign(Revocation {
        meeting: "k3x-9qa-7mf".into(),
        invite: "a1".into(),
        at_ms: NOW,
    });
    assert_eq!(
        gate.revoke(&m.body, &by_moderator),
        Err(TrustError::NotDelegated)
    );
    let rev = host.sign(Revocation {
        meeting: "k3x-9qa-7mf".into(),
        invite: "mod".into(),
        at_ms: NOW,
    });
    gate.revoke(&m.body, &rev).expect("host revokes");
    let p = proof(&mut gate, &bob, 7, Some(by_mod));
    assert_eq!(gate.check_join(&m, &p, NOW), Err(TrustError::Revoked));

    // A host of another meeting cannot revoke here, and this gate keeps to its meeting.
    let other_host = key(7);
    let other = meeting_with_id(&other_host, "zzz-zzz-zzz");
    let foreign = other_host.sign(Revocation {
        meeting: "zzz-zzz-zzz".into(),
        invite: "a1".into(),
        at_ms: NOW,
    });
    assert_eq!(
        gate.revoke(&other.body, &foreign),
        Err(TrustError::WrongMeeting)
    );
    assert!(!gate.revoked.contains("a1"));
}

fn meeting_with_id(host: &Keypair, id: &str) -> Signed<MeetingDoc> {
    host.sign(MeetingDoc {
        id: id.into(),
        ..meeting(host, Policy::Anyone).body
    })
}

#[test]
fn a_proof_made_for_one_node_is_worthless_at_another() {
    let host = key(1);
    let ada = key(2);
    let m = meeting(&host, Policy::Anyone);
    let mut elsewhere = Gate::new("12D3KooWsomeOtherNode", "k3x-9qa-7mf");
    let nonce = elsewhere
        .challenge("nonce-relayed-000000".into(), NOW)
        .expect("challenge");
    // Ada signed it for our node; a node that passed her its own challenge cannot use it.
    let p = JoinProof {
        key: ada.public(),
        sig: ada.sign_challenge(NODE, "k3x-9qa-7mf", &nonce),
        nonce,
        invite: None,
    };
    assert_eq!(
        elsewhere.check_join(&m, &p, NOW),
        Err(TrustError::BadSignature)
    );
}

#[test]
fn challenges_are_single_use_fresh_and_bound_to_the_meeting() {
    let host = key(1);
    let ada = key(2);
    let m = meeting(&host, Policy::Anyone);
    let mut gate = Gate::new(NODE, "k3x-9qa-7mf");
    let p = proof(&mut gate, &ada, 1, None);
    assert_eq!(gate.check_join(&m, &p, NOW), Ok(Role::Speaker));
    // The same proof again: replay.
    assert_eq!(gate.check_join(&m, &p, NOW), Err(TrustError::Replayed));
    // A nonce handed out once is never handed out again.
    assert!(gate.challenge(p.nonce.clone(), NOW).is_none());
    // Too old.
    let p = proof(&mut gate, &ada, 2, None);
    assert_eq!(
        gate.check_join(&m, &p, NOW + 61_000),
        Err(TrustError::UnknownChallenge)
    );
    // Signed for another meeting (or by another key): refused, and the challenge is spent.
    let nonce = gate
        .challenge("nonce-0000000000000003".into(), NOW)
        .expect("c");
    let wrong = JoinProof {
        key: ada.public(),
        sig: ada.sign_challenge(NODE, "zzz-zzz-zzz", &nonce),
        nonce: nonce.clone(),
        invite: None,
    };
    assert_eq!(
        gate.check_join(&m, &wrong, NOW),
        Err(TrustError::BadSignature)
    );
    let retry = JoinProof {
        sig: ada.sign_challenge(NODE, "k3x-9qa-7mf", &nonce),
        ..wrong
    };
    assert_eq!(gate.check_join(&m, &retry, NOW), Err(TrustError::Replayed));
    // Short nonces are refused: they could be guessed.
    assert!(gate.challenge("short".into(), NOW).is_none());
}

#[test]
fn allowed_keys_policy() {
    let host = key(1);
    let (ada, bob) = (key(2), key(3));
    let m = meeting(
        &host,
        Policy::Keys {
            keys: vec![ada.public()],
        },
    );
    let mut gate = Gate::new(NODE, "k3x-9qa-7mf");
    let p = proof(&mut gate, &ada, 1, None);
    assert_eq!(gate.check_join(&m, &p, NOW), Ok(Role::Speaker));
    let p = proof(&mut gate, &bob, 2, None);
    assert_eq!(gate.check_join(&m, &p, NOW), Err(TrustError::NotInvited));
    // Even an invite does not let an unlisted key in.
    let inv = invite(&host, "i", Role::Listener, None, None);
    let p = proof(&mut gate, &bob, 3, Some(inv));
    assert_eq!(gate.check_join(&m, &p, NOW), Err(TrustError::NotInvited));
}

#[test]
fn tokens_round_trip_and_garbage_is_a_clear_error() {
    let host = key(1);
    let inv = invite(&host, "t", Role::Speaker, None, None);
    let token = encode_token(&inv);
    assert!(token.len() < 1024, "fits in a link: {}", token.len());
    let back: Signed<Invite> = decode_token(&token).expect("decode");
    assert_eq!(back, inv);
    for garbage in ["", "!!!", "e30", &"A".repeat(9000)] {
        assert!(matches!(
            decode_token::<Signed<Invite>>(garbage),
            Err(TrustError::Malformed(_))
        ));
    }
    // A key of the wrong length inside an otherwise good token.
    let mut json: serde_json::Value = serde_json::from_slice(&base64_decode(&token)).expect("json");
    json["key"] = serde_json::Value::String("AAAA".into());
    let bad = encode_token(&json);
    assert!(matches!(
        decode_token::<Signed<Invite>>(&bad),
        Err(TrustError::Malformed(_))
    ));
    assert_eq!(host.public().fingerprint().len(), 11);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .expect("base64")
}

#[test]
fn a_join_proof_checks_key_node_meeting_and_nonce() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let me = veche_trust::Keypair::from_secret(&[9u8; 32]);
    let key = URL_SAFE_NO_PAD.encode(me.public().0);
    let sig = URL_SAFE_NO_PAD.encode(
        me.sign_challenge("node-a", "abc-def-ghi", "nonce-0123456789abcdef")
            .0,
    );
    let ok = veche_trust::verify_challenge(
        "node-a",
        "abc-def-ghi",
        "nonce-0123456789abcdef",
        &key,
        &sig,
    );
    assert_eq!(ok, Ok(me.public()));
    // Another node, meeting or nonce: the same proof is worthless.
    for (node, meeting, nonce) in [
        ("node-b", "abc-def-ghi", "nonce-0123456789abcdef"),
        ("node-a", "xyz-def-ghi", "nonce-0123456789abcdef"),
        ("node-a", "abc-def-ghi", "nonce-0123456789abcdeF"),
    ] {
        assert_eq!(
            veche_trust::verify_challenge(node, meeting, nonce, &key, &sig),
            Err(veche_trust::TrustError::BadSignature)
        );
    }
    // Someone else's key with this signature: forged.
    let other = URL_SAFE_NO_PAD.encode(veche_trust::Keypair::from_secret(&[7u8; 32]).public().0);
    assert_eq!(
        veche_trust::verify_challenge(
            "node-a",
            "abc-def-ghi",
            "nonce-0123456789abcdef",
            &other,
            &sig
        ),
        Err(veche_trust::TrustError::BadSignature)
    );
    // Garbage: a precise error, no panic.
    for (k, s) in [
        ("", ""),
        ("!!!", &sig[..]),
        (&key[..], "AAAA"),
        (&key[..10], &sig[..]),
    ] {
        assert!(matches!(
            veche_trust::verify_challenge("node-a", "abc-def-ghi", "n", k, s),
            Err(veche_trust::TrustError::Malformed(_))
        ));
    }
}

#[test]
fn moderation_actions_need_the_host_or_a_bound_moderator_invite() {
    use veche_trust::{check_action, Action, ActionKind, TrustError, ACTION_TTL_MS};
    let host = key(1);
    let doc = meeting(&host, Policy::Anyone);
    let now = 1_000_000;
    let victim = key(9).public();
    let act = |by: &Keypair, target, at_ms, authority: Option<Signed<Invite>>| {
        by.sign(Action {
            meeting: doc.body.id.clone(),
            kind: ActionKind::Mute,
            target,
            at_ms,
            authority: authority.map(Box::new),
        })
    };
    assert_eq!(
        check_action(&doc.body, &act(&host, victim, now, None), now),
        Ok(())
    );
    // Anyone else, with no authority: refused.
    let mallory = key(3);
    assert_eq!(
        check_action(&doc.body, &act(&mallory, victim, now, None), now),
        Err(TrustError::NotModerator)
    );
    // A moderator with the host's moderator invite made for their key: allowed.
    let moderator = key(4);
    let mod_invite = host.sign(Invite {
        meeting: doc.body.id.clone(),
        id: "mod".into(),
        role: Role::Moderator,
        expires_ms: now + 3_600_000,
        max_uses: None,
        invitee: Some(moderator.public()),
        parent: None,
    });
    assert_eq!(
        check_action(
            &doc.body,
            &act(&moderator, victim, now, Some(mod_invite.clone())),
            now
        ),
        Ok(())
    );
    // Someone who stole that invite cannot use it (it names the moderator's key).
    assert_eq!(
        check_action(
            &doc.body,
            &act(&mallory, victim, now, Some(mod_invite.clone())),
            now
        ),
        Err(TrustError::NotModerator)
    );
    // A moderator invite made for nobody in particular is a bearer capability.
    let open_invite = host.sign(Invite {
        meeting: doc.body.id.clone(),
        id: "mod-open".into(),
        role: Role::Moderator,
        expires_ms: now + 3_600_000,
        max_uses: None,
        invitee: None,
        parent: None,
    });
    assert_eq!(
        check_action(
            &doc.body,
            &act(&mallory, victim, now, Some(open_invite)),
            now
        ),
        Ok(())
    );
    // A moderator cannot act on the host; a speaker invite gives no authority.
    assert_eq!(
        check_action(
            &doc.body,
            &act(&moderator, host.public(), now, Some(mod_invite)),
            now
        ),
        Err(TrustError::NotModerator)
    );
    let speaker_invite = host.sign(Invite {
        meeting: doc.body.id.clone(),
        id: "spk".into(),
        role: Role::Speaker,
        expires_ms: now + 3_600_000,
        max_uses: None,
        invitee: Some(moderator.public()),
        parent: None,
    });
    assert_eq!(
        check_action(
            &doc.body,
            &act(&moderator, victim, now, Some(speaker_invite)),
            now
        ),
        Err(TrustError::NotModerator)
    );
    // Old or tampered actions.
    assert_eq!(
        check_action(
            &doc.body,
            &act(&host, victim, now - ACTION_TTL_MS - 1, None),
            now
        ),
        Err(TrustError::Stale)
    );
    let mut tampered = act(&host, victim, now, None);
    tampered.body.kind = ActionKind::Remove;
    assert_eq!(
        check_action(&doc.body, &tampered, now),
        Err(TrustError::BadSignature)
    );
}

#[test]
fn signatures_cover_the_body_bytes_as_sent() {
    use base64::Engine as _;
    use ed25519_dalek::Signer as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let secret = [3u8; 32];
    let signer = ed25519_dalek::SigningKey::from_bytes(&secret);
    let host = Keypair::from_secret(&secret);
    // Another implementation writes the fields in another order than this crate does.
    let body = format!(r#"{{"at_ms":{NOW},"invite":"abc","meeting":"k3x-9qa-7mf"}}"#);
    let mut signed_bytes = b"veche/revocation/v1\0".to_vec();
    signed_bytes.extend_from_slice(body.as_bytes());
    let sig = signer.sign(&signed_bytes);
    let wire = format!(
        r#"{{"body":{body},"key":"{}","sig":"{}"}}"#,
        b64(&host.public().0),
        b64(&sig.to_bytes())
    );
    let token = b64(wire.as_bytes());
    let rev: Signed<Revocation> = decode_token(&token).expect("decodes");
    assert_eq!(rev.body.invite, "abc");
    assert_eq!(rev.verify(), Ok(()), "checked over the bytes as sent");
    // Passed on, it is the same token, byte for byte.
    assert_eq!(encode_token(&rev), token);
    // Changed after reading, it is checked as it is now: refused.
    let mut changed = rev.clone();
    changed.body.invite = "xyz".into();
    assert_eq!(changed.verify(), Err(TrustError::BadSignature));
    // A token made here still reads and checks (the bytes this crate signs are its own).
    let ours = encode_token(&host.sign(Revocation {
        meeting: "k3x-9qa-7mf".into(),
        invite: "abc".into(),
        at_ms: NOW,
    }));
    let back: Signed<Revocation> = decode_token(&ours).expect("decodes");
    assert_eq!(back.verify(), Ok(()));
    assert_eq!(encode_token(&back), ours);
}
