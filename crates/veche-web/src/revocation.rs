//! Withdrawn invites: a host-signed revocation is checked against the meeting's signed
//! document, stored durably, and passed to every other node of the meeting, which checks and
//! stores it in turn; a node that learns a meeting later gets the revocations with it. So a
//! withdrawn link admits nobody at any node that heard of the withdrawal. (Passing it on:
//! [`crate::nodes::tell`].)

use std::sync::Mutex;

use veche_node::MeetingStore;
use veche_trust::{check_revocation, decode_token, MeetingDoc, Revocation, Signed};

/// Most revocations handed out with a meeting (the newest).
pub const MAX_SHARED: usize = 1024;
/// Bytes of tokens handed out with a meeting, per kind (revocations, actions): together
/// with the document they stay well inside one node-protocol response (1 MiB).
pub const SHARED_BYTES: usize = 384 * 1024;

/// The newest of `tokens` (kept in order, oldest first) that fit in `count` and `bytes`.
pub fn newest_within(tokens: &[String], count: usize, bytes: usize) -> Vec<String> {
    let mut total = 0;
    let mut n = 0;
    for t in tokens.iter().rev().take(count) {
        if total + t.len() > bytes {
            break;
        }
        total += t.len();
        n += 1;
    }
    tokens[tokens.len() - n..].to_vec()
}

/// Why a revocation was not taken.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("no such meeting on this node")]
    UnknownMeeting,
    #[error("this meeting has no host to revoke anything")]
    NoHost,
    #[error("{0}")]
    Bad(String),
    #[error("cannot store it: {0}")]
    Storage(String),
}

/// Check a revocation token against the meeting's document.
pub fn check(doc: &MeetingDoc, token: &str) -> Result<Signed<Revocation>, veche_trust::TrustError> {
    let rev: Signed<Revocation> = decode_token(token)?;
    check_revocation(doc, &rev)?;
    Ok(rev)
}

/// Check `token` against this node's copy of `meeting`'s document and store it (before
/// returning: write before acknowledging). Returns the revoked invite's id and whether it
/// was new here.
pub fn store(
    meetings: &Mutex<MeetingStore>,
    meeting: &str,
    token: &str,
) -> Result<(String, bool), RevocationError> {
    let mut store = meetings.lock().unwrap_or_else(|p| p.into_inner());
    let m = store.get(meeting).ok_or(RevocationError::UnknownMeeting)?;
    let doc = m.doc.clone().ok_or(RevocationError::NoHost)?;
    let known = m.revocations.iter().any(|t| t == token);
    let doc: Signed<MeetingDoc> =
        decode_token(&doc).map_err(|e| RevocationError::Bad(e.to_string()))?;
    let rev = check(&doc.body, token).map_err(|e| RevocationError::Bad(e.to_string()))?;
    if known {
        return Ok((rev.body.invite, false));
    }
    store
        .add_revocation(meeting, token)
        .map_err(|e| RevocationError::Storage(e.to_string()))?;
    Ok((rev.body.invite, true))
}

/// The revocations to hand out with `meeting`: the newest that fit [`MAX_SHARED`] and
/// [`SHARED_BYTES`].
pub fn shared(meetings: &Mutex<MeetingStore>, meeting: &str) -> Vec<String> {
    let store = meetings.lock().unwrap_or_else(|p| p.into_inner());
    store
        .get(meeting)
        .map(|m| newest_within(&m.revocations, MAX_SHARED, SHARED_BYTES))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::newest_within;

    #[test]
    fn the_newest_tokens_that_fit_in_count_and_bytes_in_order() {
        let t: Vec<String> = ["aaaa", "bb", "cccccc", "d"].map(String::from).to_vec();
        assert_eq!(newest_within(&t, 10, 100), t);
        assert_eq!(newest_within(&t, 2, 100), ["cccccc", "d"]);
        assert_eq!(newest_within(&t, 10, 9), ["bb", "cccccc", "d"]);
        assert_eq!(newest_within(&t, 10, 0), Vec::<String>::new());
        assert_eq!(newest_within(&[], 10, 10), Vec::<String>::new());
    }
}
