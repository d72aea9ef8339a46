//! Withdrawn invites: a host-signed revocation is checked by the meeting's rules, committed,
//! and passed to every other node of the meeting, which checks and stores it in turn; a node
//! that learns a meeting later gets the revocations with it. So a withdrawn link admits
//! nobody, and a withdrawn moderator acts as nobody, at any node that heard of the
//! withdrawal. (Passing it on: [`crate::nodes::tell`].)

use veche_meeting::{Change, Refused};

use std::sync::{Arc, Mutex};

use veche_node::MeetingStore;

use crate::rules::{self, Undecided};

/// Bytes of tokens handed out with a meeting, per kind (revocations, actions): together
/// with the document they stay well inside one node-protocol response (1 MiB).
pub const SHARED_BYTES: usize = 384 * 1024;
/// Bytes of the rooms' and spotlight's state handed out with them (about 200 decisions):
/// the three lists and the document stay under 1 MiB.
pub const STATE_BYTES: usize = 128 * 1024;

/// Check `token` with `meeting`'s rules and commit it (before returning: write before
/// acknowledging). Returns the revoked invite's id and whether it was new here.
pub async fn take(
    meetings: &Arc<Mutex<MeetingStore>>,
    meeting: &str,
    token: &str,
) -> Result<(String, bool), Undecided<Refused>> {
    let (m, t) = (meeting.to_owned(), token.to_owned());
    rules::decide(meetings, meeting, move |rec| {
        let change = rec.rules.check_revocation(&m, &t)?;
        let Change::Revoked { invite, .. } = &change else {
            return Err(Refused::NoHost);
        };
        let new = !rec.rules.is_revoked(invite);
        Ok(((invite.clone(), new), new.then_some(change)))
    })
    .await
}
