//! The signing and checking rules: forgery, tampering, expiry, delegation depth, key proofs.
//! What a meeting decides under them (withdrawals, removals, uses, policy at a join) is
//! tested with its governance, in `veche-meeting`.

use veche_trust::{
    check_admission, check_invite, check_meeting, decode_token, encode_token, Invite, Keypair,
    MeetingDoc, Policy, Revocation, Role, Signed, TrustError,
};

const NOW: u64 = 1_800_000_000_000;
const HOUR: u64 = 3_600_000;

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
    assert_eq!(check_meeting(&loose), Err(TrustError::BadSignature));
    // A meeting signed by someone other than the host it names.
    let usurped = mallory.sign(m.body.clone());
    assert_eq!(check_meeting(&usurped), Err(TrustError::NotHost));
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
    let late = NOW + 3 * HOUR;
    assert_eq!(
        check_admission(&m.body, &key(2).public(), Some(&inv), late, &mut |_| Ok(())),
        Err(TrustError::MeetingEnded)
    );
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

#[test]
fn a_moderator_may_spotlight_the_host_and_nobody_without_authority_may_spotlight() {
    use veche_trust::{check_action, Action, ActionKind, TrustError};
    let host = key(1);
    let doc = meeting(&host, Policy::Anyone);
    let now = 1_000_000;
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
    let act = |by: &Keypair, kind, target, authority: Option<&Signed<Invite>>| {
        by.sign(Action {
            meeting: doc.body.id.clone(),
            kind,
            target,
            at_ms: now,
            authority: authority.cloned().map(Box::new),
        })
    };
    let spot = ActionKind::Spotlight;
    assert_eq!(
        check_action(
            &doc.body,
            &act(&moderator, spot, host.public(), Some(&mod_invite)),
            now
        ),
        Ok(()),
        "the teacher's camera on the stage takes nothing from the teacher"
    );
    // Every other action on the host stays the host's own.
    assert_eq!(
        check_action(
            &doc.body,
            &act(
                &moderator,
                ActionKind::Mute,
                host.public(),
                Some(&mod_invite)
            ),
            now
        ),
        Err(TrustError::NotModerator)
    );
    // Someone without authority spotlights nobody, themselves included.
    let student = key(5);
    for kind in [ActionKind::Spotlight, ActionKind::EndSpotlight] {
        assert_eq!(
            check_action(&doc.body, &act(&student, kind, student.public(), None), now),
            Err(TrustError::NotModerator),
            "{kind:?}"
        );
    }
}
