//! Every token a browser or another node can hand a veche node: meeting documents, invites,
//! revocations, moderation actions. Decoding must never panic, and whatever decodes must go
//! through the checks without panicking either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veche_trust::{
    check_action, check_invite, check_meeting, check_revocation, decode_token, Action, Invite,
    MeetingDoc, Revocation, Signed,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line may be a meeting document the rest is checked against.
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let doc = decode_token::<Signed<MeetingDoc>>(first).ok();
    if let Some(d) = &doc {
        let _ = check_meeting(d);
    }
    let now = 1_764_300_000_000;
    if let Ok(i) = decode_token::<Signed<Invite>>(rest) {
        if let Some(d) = &doc {
            let _ = check_invite(&d.body, &i, now);
        }
    }
    if let Ok(r) = decode_token::<Signed<Revocation>>(rest) {
        if let Some(d) = &doc {
            let _ = check_revocation(&d.body, &r);
        }
    }
    if let Ok(a) = decode_token::<Signed<Action>>(rest) {
        if let Some(d) = &doc {
            let _ = check_action(&d.body, &a, now);
        }
    }
});
