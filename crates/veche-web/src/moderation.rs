//! Moderation actions: decided by the meeting's rules (veche-meeting), committed, then
//! carried out on this node's participants. Used for actions a browser sends here and for
//! actions another node passes on: every node checks for itself.

use tokio::sync::oneshot;
use veche_media::{Command, Moderation};
use veche_trust::{encode_key, Action, ActionKind, Signed};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use veche_media::EngineHandle;
use veche_node::{MeetingStore, MeetingView};

use crate::recording::Recordings;
use crate::rules::{self, Undecided};

/// Actions carried out in the last two minutes (an action is fresh for 60 s either way of
/// the clock): the same one again is not carried out twice, so a captured mute or allow
/// cannot be replayed to flip someone's microphone back. In memory, bounded.
#[derive(Debug, Default)]
pub struct Recent {
    seen: HashMap<u64, u64>,
    hasher: std::collections::hash_map::RandomState,
}

/// Most actions remembered.
const MAX_RECENT: usize = 16_384;

impl Recent {
    /// Whether `token` is new at `now_ms` (and remember it).
    pub fn first_time(&mut self, token: &str, now_ms: u64) -> bool {
        use std::hash::BuildHasher as _;
        let h = self.hasher.hash_one(token);
        let window = 2 * veche_trust::ACTION_TTL_MS;
        if self.seen.len() >= MAX_RECENT {
            self.seen
                .retain(|_, at| now_ms.saturating_sub(*at) < window);
        }
        if self.seen.len() >= MAX_RECENT {
            return false;
        }
        match self.seen.get(&h) {
            Some(at) if now_ms.saturating_sub(*at) < window => false,
            _ => {
                self.seen.insert(h, now_ms);
                true
            }
        }
    }
}

/// What a moderation action is decided with and carried out on.
pub type Stores<'a> = (
    &'a Arc<Mutex<MeetingStore>>,
    &'a MeetingView,
    &'a Mutex<Recent>,
    &'a Arc<Recordings>,
);

/// Check `token` with meeting `meeting`'s rules at this node's time, commit what it changes
/// (removal, lock, end, lobby decision) and carry it out on this node's people (the lobby's
/// admit and deny are the caller's), once. `here`: the name of the person whose socket on
/// this node sent it (`None`: another node passed it on); a recording starts at the node
/// it was sent to. Returns the action, or why it was refused.
pub async fn take(
    engine: &EngineHandle,
    (meetings, view, recent, recordings): Stores<'_>,
    meeting: &str,
    token: &str,
    here: Option<&str>,
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
    let fresh = recent
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .first_time(token, rules::now_ms());
    if !fresh {
        return Err("this action was already carried out".into());
    }
    let what = match action.body.kind {
        ActionKind::Mute => Moderation::Mute,
        ActionKind::Allow => Moderation::Allow,
        ActionKind::Remove => Moderation::Remove,
        ActionKind::End => Moderation::End,
        // Committed above: the rooms as the rules have them now go to the engine.
        ActionKind::OpenRooms { .. } | ActionKind::Assign { .. } | ActionKind::CloseRooms => {
            sync_rooms(engine, view, meeting).await;
            tracing::info!(%meeting, action = ?action.body.kind, by = %action.key.fingerprint(), "breakout rooms changed");
            return Ok(action);
        }
        // Committed above: the spotlight as the rules have it now goes to the engine.
        ActionKind::Spotlight | ActionKind::EndSpotlight => {
            sync_spotlight(engine, view, meeting).await;
            tracing::info!(%meeting, action = ?action.body.kind, by = %action.key.fingerprint(), "spotlight changed");
            return Ok(action);
        }
        ActionKind::StartRecording | ActionKind::StopRecording => {
            recordings
                .decided(engine, meeting, &action, here)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(action);
        }
        // Committed above; nobody in the meeting is affected now.
        ActionKind::Lock | ActionKind::Unlock | ActionKind::Admit | ActionKind::Deny => {
            return Ok(action)
        }
    };
    if what == Moderation::End {
        // The recording closes before anyone is told the meeting is over: the host's end
        // screen lists it finished.
        recordings.ended(engine, meeting).await;
    }
    let reached = carry_out(engine, meeting, &action, what)
        .await
        .ok_or_else(|| "the node is shutting down".to_string())?;
    tracing::info!(%meeting, action = ?what, reached, by = %action.key.fingerprint(), "moderation carried out");
    if what == Moderation::Remove {
        // Someone removed is off the stage too (the rules took them off).
        sync_spotlight(engine, view, meeting).await;
    }
    Ok(action)
}

/// Hand `meeting`'s breakout rooms, as its rules have them now
/// ([`veche_meeting::Governance::rooms`]), to the engine; while they are open, again once
/// their time is up (everyone back in the main room). Every node does the same on its own
/// clock from the same signed actions.
pub async fn sync_rooms(engine: &EngineHandle, view: &MeetingView, meeting: &str) {
    let Some(until) = send_rooms(engine, view, meeting).await else {
        return;
    };
    // One timer per meeting and closing time, however many joins and moves ask.
    {
        let mut armed = ROOM_TIMERS.lock().unwrap_or_else(|p| p.into_inner());
        if armed.get(meeting) == Some(&until) {
            return;
        }
        armed.insert(meeting.to_owned(), until);
    }
    let (engine, view, meeting) = (engine.clone(), view.clone(), meeting.to_owned());
    tokio::spawn(async move {
        let wait = until.saturating_sub(rules::now_ms()) + 20;
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        {
            let mut armed = ROOM_TIMERS.lock().unwrap_or_else(|p| p.into_inner());
            if armed.get(&meeting) == Some(&until) {
                armed.remove(&meeting);
            }
        }
        // A later opening has its own timer: this one only tells what holds now.
        send_rooms(&engine, &view, &meeting).await;
    });
}

/// Meeting → the closing time its rooms timer waits for (one entry per meeting with rooms
/// open: bounded by the meetings).
static ROOM_TIMERS: std::sync::LazyLock<Mutex<HashMap<String, u64>>> =
    std::sync::LazyLock::new(Mutex::default);
/// Held from reading the rules to handing the plan to the engine, so two plans read at
/// different moments reach the engine in the order they were read (a join's stale "open"
/// never lands after a "Bring everyone back").
static ROOMS_SEND: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The rooms as the rules have them now, to the engine: when they close, or `None`.
async fn send_rooms(engine: &EngineHandle, view: &MeetingView, meeting: &str) -> Option<u64> {
    let _in_order = ROOMS_SEND.lock().await;
    let now = rules::now_ms();
    let rooms = rules::read(view, meeting, |m| m.rules.rooms(now)).flatten();
    let until = rooms.as_ref().map(|r| r.until_ms);
    let plan = rooms.map(|r| veche_core::RoomPlan {
        count: r.count,
        until_ms: r.until_ms,
        choose: r.choose,
        of: r
            .of
            .iter()
            .map(|(k, room)| (encode_key(k), *room))
            .collect(),
    });
    let _ = engine
        .send(Command::Rooms {
            meeting: meeting.to_owned(),
            plan,
        })
        .await;
    until
}

/// Hand `meeting`'s spotlight, as its rules have it now, to the engine.
pub async fn sync_spotlight(engine: &EngineHandle, view: &MeetingView, meeting: &str) {
    // Held like the rooms: two readings reach the engine in the order they were made.
    let _in_order = SPOTLIGHT_SEND.lock().await;
    let key = rules::read(view, meeting, |m| m.rules.spotlight())
        .flatten()
        .map(|k| encode_key(&k));
    let _ = engine
        .send(Command::Spotlight {
            meeting: meeting.to_owned(),
            key,
        })
        .await;
}

static SPOTLIGHT_SEND: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Delete meeting `meeting` at once, as its host asked with `token` (an end signed by the
/// host's own key): checked by the meeting's rules, deleted on disk with all that was kept
/// for it, then ended for this node's people and those in its waiting room. Returns the
/// end, for the other nodes of the meeting (they end it, and forget it after their
/// retention).
pub async fn delete(
    engine: &EngineHandle,
    (meetings, lobby): (&Arc<Mutex<MeetingStore>>, &Mutex<crate::Lobby>),
    meeting: &str,
    token: &str,
) -> Result<Signed<Action>, Undecided<veche_meeting::Refused>> {
    let (m, t) = (meeting.to_owned(), token.to_owned());
    let action = rules::delete(meetings, meeting, move |rec| {
        rec.rules
            .check_delete(&m, &t, rules::now_ms())
            .map(|c| c.action)
    })
    .await?;
    let waiting = lobby
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .forget_meeting(meeting);
    let reached = carry_out(engine, meeting, &action, Moderation::End)
        .await
        .unwrap_or(0);
    tracing::info!(%meeting, reached, waiting, by = %action.key.fingerprint(), "meeting deleted by its host");
    Ok(action)
}

/// Carry out `what` on this node's people in `meeting` (its target is `action`'s): how
/// many it reached, or `None` when the engine is gone.
async fn carry_out(
    engine: &EngineHandle,
    meeting: &str,
    action: &Signed<Action>,
    what: Moderation,
) -> Option<usize> {
    let (reply, rx) = oneshot::channel();
    engine
        .send(Command::Moderate {
            meeting: meeting.to_owned(),
            key: encode_key(&action.body.target),
            action: what,
            reply,
        })
        .await
        .ok()?;
    Some(rx.await.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn an_action_is_carried_out_once_within_its_window() {
        let mut r = Recent::default();
        assert!(r.first_time("mute-bob", 1_000));
        assert!(
            !r.first_time("mute-bob", 30_000),
            "a replay within the window"
        );
        assert!(r.first_time("allow-bob", 30_000), "another action");
        // Past two minutes the token is stale anyway (the rules refuse it); it may pass here.
        assert!(r.first_time("mute-bob", 1_000 + 120_000));
    }
}
