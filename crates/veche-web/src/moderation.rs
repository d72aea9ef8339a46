//! Moderation actions: decided by the meeting's rules (veche-meeting), committed, then
//! carried out on this node's participants. Used for actions a browser sends here and for
//! actions another node passes on: every node checks for itself.

use tokio::sync::oneshot;
use veche_media::{Command, Moderation};
use veche_trust::{encode_key, Action, ActionKind, Signed};

use std::sync::{Arc, Mutex};

use veche_media::EngineHandle;
use veche_node::MeetingStore;

use crate::rules::{self, Undecided};

/// Check `token` with meeting `meeting`'s rules at this node's time, commit what it changes
/// (removal, lock, end, lobby decision) and carry it out on this node's people (the lobby's
/// admit and deny are the caller's). Returns the action, or why it was refused.
pub async fn take(
    engine: &EngineHandle,
    meetings: &Arc<Mutex<MeetingStore>>,
    meeting: &str,
    token: &str,
) -> Result<Signed<Action>, String> {
    let (m, t) = (meeting.to_owned(), token.to_owned());
    let action = rules::decide(meetings, meeting, move |rec| {
        let c = rec.rules.check_action(&m, &t, rules::now_ms())?;
        Ok::<_, veche_meeting::Refused>((c.action, c.change))
    })
    .await
    .map_err(|e| match e {
        Undecided::Unknown => "there is no meeting with this id on this node".to_owned(),
        e => e.to_string(),
    })?;
    let what = match action.body.kind {
        ActionKind::Mute => Moderation::Mute,
        ActionKind::Allow => Moderation::Allow,
        ActionKind::Remove => Moderation::Remove,
        ActionKind::End => Moderation::End,
        // Committed above; nobody in the meeting is affected now.
        ActionKind::Lock | ActionKind::Unlock | ActionKind::Admit | ActionKind::Deny => {
            return Ok(action)
        }
    };
    let (reply, rx) = oneshot::channel();
    engine
        .send(Command::Moderate {
            meeting: meeting.to_owned(),
            key: encode_key(&action.body.target),
            action: what,
            reply,
        })
        .await
        .map_err(|_| "the node is shutting down".to_string())?;
    let reached = rx.await.unwrap_or(0);
    tracing::info!(%meeting, action = ?what, reached, by = %action.key.fingerprint(), "moderation carried out");
    Ok(action)
}
