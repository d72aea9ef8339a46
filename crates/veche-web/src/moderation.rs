//! Moderation actions: checked against the meeting's signed document, made durable, then
//! carried out on this node's participants. Used for actions a browser sends here and for
//! actions another node passes on: every node checks for itself.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use veche_media::{Command, EngineHandle, Moderation};
use veche_node::{History, MeetingStore};
use veche_trust::{
    check_action, decode_token, encode_key, encode_token, Action, ActionKind, MeetingDoc, Signed,
};

/// A checked action and the meeting document it was checked against.
pub struct Checked {
    pub doc: Signed<MeetingDoc>,
    pub action: Signed<Action>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Check `token` for `meeting` against this node's copy of the host's document.
pub fn check(
    meetings: &Mutex<MeetingStore>,
    meeting: &str,
    token: &str,
) -> Result<Checked, String> {
    let doc = {
        let store = meetings.lock().unwrap_or_else(|p| p.into_inner());
        store.get(meeting).and_then(|m| m.doc.clone())
    };
    let doc = doc.ok_or("this meeting has no host: nobody can moderate it")?;
    let doc: Signed<MeetingDoc> = decode_token(&doc).map_err(|e| e.to_string())?;
    let action: Signed<Action> = decode_token(token).map_err(|e| e.to_string())?;
    check_action(&doc.body, &action, now_ms()).map_err(|e| e.to_string())?;
    Ok(Checked { doc, action })
}

/// Carry out a checked action on this node (the lobby's admit and deny are the caller's):
/// what must survive a restart is written first. Returns how many participants it reached.
pub async fn apply(
    engine: &EngineHandle,
    meetings: &Arc<Mutex<MeetingStore>>,
    meeting: &str,
    action: &Signed<Action>,
) -> Result<usize, String> {
    let key = encode_key(&action.body.target);
    // What must be on disk before anyone is told.
    let durable = match action.body.kind {
        ActionKind::Remove => Some((Some(key.clone()), None, false)),
        ActionKind::Lock => Some((None, Some(true), false)),
        ActionKind::Unlock => Some((None, Some(false), false)),
        ActionKind::End => Some((None, None, true)),
        _ => None,
    };
    if let Some((removed, locked, ended)) = durable {
        let store = meetings.clone();
        let m = meeting.to_owned();
        // The signed action is kept too, so it can travel with the meeting.
        let token = encode_token(action);
        let saved = tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
            match removed {
                Some(k) => store.add_removed(&m, &k, Some(&token)),
                None => store.set_flags(&m, locked, ended, Some(&token)),
            }
        })
        .await;
        if !matches!(saved, Ok(Ok(()))) {
            return Err("the node could not save it; nothing was done".into());
        }
    }
    let what = match action.body.kind {
        ActionKind::Mute => Moderation::Mute,
        ActionKind::Allow => Moderation::Allow,
        ActionKind::Remove => Moderation::Remove,
        ActionKind::End => Moderation::End,
        // Stored above; nobody in the meeting is affected now.
        ActionKind::Lock | ActionKind::Unlock | ActionKind::Admit | ActionKind::Deny => {
            return Ok(0)
        }
    };
    let (reply, rx) = oneshot::channel();
    engine
        .send(Command::Moderate {
            meeting: meeting.to_owned(),
            key,
            action: what,
            reply,
        })
        .await
        .map_err(|_| "the node is shutting down".to_string())?;
    let reached = rx.await.unwrap_or(0);
    tracing::info!(%meeting, action = ?what, reached, by = %action.key.fingerprint(), "moderation carried out");
    Ok(reached)
}

/// The durable actions (remove, lock, unlock, end) another node handed out with a meeting
/// this node just learned, oldest first, added to `history`: each is checked against `doc`
/// as of the time it was made (it was valid then; it is not fresh now). People need no
/// telling: nobody here is in the meeting yet.
pub fn take_past(meeting: &str, doc: &MeetingDoc, tokens: &[String], history: &mut History) {
    for token in tokens {
        let checked = decode_token::<Signed<Action>>(token)
            .and_then(|a| check_action(doc, &a, a.body.at_ms).map(|()| a));
        let action = match checked {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%meeting, error = %e, "a past action from another node does not check out; ignored");
                continue;
            }
        };
        match action.body.kind {
            ActionKind::Remove => history.removed.push(encode_key(&action.body.target)),
            ActionKind::Lock => history.locked = Some(true),
            ActionKind::Unlock => history.locked = Some(false),
            ActionKind::End => history.ended = true,
            _ => continue,
        }
        history.actions.push(token.clone());
    }
}

/// The durable actions to hand out with `meeting` (oldest first): the newest that fit one
/// response ([`crate::revocation::SHARED_BYTES`]); older ones stay with the nodes that
/// already have them.
pub fn shared(meetings: &Mutex<MeetingStore>, meeting: &str) -> Vec<String> {
    let store = meetings.lock().unwrap_or_else(|p| p.into_inner());
    store
        .get(meeting)
        .map(|m| {
            crate::revocation::newest_within(
                &m.actions,
                veche_node::MAX_ACTIONS,
                crate::revocation::SHARED_BYTES,
            )
        })
        .unwrap_or_default()
}
