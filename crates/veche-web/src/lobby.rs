//! The waiting room: who waits in each meeting, here or at another node of it, and who may
//! let them in. A person waiting at one node is shown to the host and moderators at every
//! node of the meeting (the node tells the others, `knock`); a decision signed at any node
//! reaches the node where the person waits, which checks it with the meeting's rules like any
//! moderation action before it lets them in or turns them away.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;
use veche_media::{Command, EngineHandle, Signal};
use veche_meeting::Presence;
use veche_node::MeetingView;
use veche_trust::{decode_token, Invite, Signed};

use crate::rules;

/// Most people waiting in one meeting's lobby (at this node, and at other nodes, each).
const MAX_WAITING: usize = 500;
/// Most people one other node may show waiting in one meeting.
const MAX_WAITING_PER_NODE: usize = 100;

/// Who waits in each meeting's lobby, and which keys may let them in.
#[derive(Default)]
pub struct Lobby {
    waiting: HashMap<String, Vec<Waiting>>,
    /// People waiting at other nodes, per meeting: key → (that node, name).
    elsewhere: HashMap<String, HashMap<String, (String, String)>>,
    /// Keys here as moderators, per meeting, with the invite they came with (with the
    /// host's, they hear the knocks while that invite holds) and how many of their sockets
    /// are in: freed when the last one goes.
    moderators: HashMap<String, HashMap<String, (Option<String>, u32)>>,
}

struct Waiting {
    key: String,
    name: String,
    tx: oneshot::Sender<bool>,
}

/// The waiting room is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

impl Lobby {
    /// A socket of moderator `key` entered `meeting` with `invite`; false when the meeting
    /// has as many moderators here as it may (their sockets are not counted then).
    pub(crate) fn moderator_entered(
        &mut self,
        meeting: &str,
        key: &str,
        invite: Option<String>,
    ) -> bool {
        let m = self.moderators.entry(meeting.to_owned()).or_default();
        if m.len() >= MAX_WAITING && !m.contains_key(key) {
            return false;
        }
        let entry = m.entry(key.to_owned()).or_insert((None, 0));
        *entry = (invite, entry.1 + 1);
        true
    }

    /// One socket of moderator `key` in `meeting` went; the last one frees the entry.
    pub(crate) fn moderator_left(&mut self, meeting: &str, key: &str) {
        let Some(m) = self.moderators.get_mut(meeting) else {
            return;
        };
        if let Some(entry) = m.get_mut(key) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                m.remove(key);
            }
        }
        if m.is_empty() {
            self.moderators.remove(meeting);
        }
    }

    /// `key` waits here in `meeting`; `tx` gets the decision.
    pub(crate) fn wait(
        &mut self,
        meeting: &str,
        key: &str,
        name: &str,
        tx: oneshot::Sender<bool>,
    ) -> Result<(), Full> {
        let _ = self.list(meeting);
        let w = self.waiting.entry(meeting.to_owned()).or_default();
        if w.len() >= MAX_WAITING {
            return Err(Full);
        }
        w.push(Waiting {
            key: key.to_owned(),
            name: name.to_owned(),
            tx,
        });
        Ok(())
    }

    /// Who waits in `meeting`, here and at other nodes (dropping those who left here).
    pub(crate) fn list(&mut self, meeting: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(w) = self.waiting.get_mut(meeting) {
            w.retain(|x| !x.tx.is_closed());
            out.extend(w.iter().map(|x| (x.key.clone(), x.name.clone())));
            if w.is_empty() {
                self.waiting.remove(meeting);
            }
        }
        if let Some(e) = self.elsewhere.get(meeting) {
            out.extend(e.iter().map(|(k, (_, name))| (k.clone(), name.clone())));
        }
        out
    }

    /// Let in (or turn away) everyone waiting here in `meeting` with `key`; how many.
    pub(crate) fn decide(&mut self, meeting: &str, key: &str, admit: bool) -> usize {
        let Some(w) = self.waiting.get_mut(meeting) else {
            return 0;
        };
        let (hit, keep): (Vec<Waiting>, Vec<Waiting>) = w.drain(..).partition(|x| x.key == key);
        *w = keep;
        hit.into_iter()
            .map(|x| x.tx.send(admit).is_ok())
            .filter(|ok| *ok)
            .count()
    }

    /// `key` waits (or stopped waiting) at `node`; false when that is more than the
    /// meeting's or the node's share.
    fn knocked_at(
        &mut self,
        meeting: &str,
        key: &str,
        node: &str,
        name: &str,
        waiting: bool,
    ) -> bool {
        if !waiting {
            if let Some(e) = self.elsewhere.get_mut(meeting) {
                e.retain(|k, (n, _)| !(k == key && n == node));
                if e.is_empty() {
                    self.elsewhere.remove(meeting);
                }
            }
            return true;
        }
        let e = self.elsewhere.entry(meeting.to_owned()).or_default();
        let of_node = e.values().filter(|(n, _)| n == node).count();
        if !e.contains_key(key) && (e.len() >= MAX_WAITING || of_node >= MAX_WAITING_PER_NODE) {
            if e.is_empty() {
                self.elsewhere.remove(meeting);
            }
            return false;
        }
        e.insert(key.to_owned(), (node.to_owned(), name.to_owned()));
        true
    }

    /// A decision about `key` in `meeting` was taken: the node where they wait elsewhere,
    /// if they do (no longer listed).
    pub(crate) fn decided_elsewhere(&mut self, meeting: &str, key: &str) -> Option<String> {
        let e = self.elsewhere.get_mut(meeting)?;
        let node = e.remove(key).map(|(n, _)| n);
        if e.is_empty() {
            self.elsewhere.remove(meeting);
        }
        node
    }

    /// Meeting `meeting` was deleted: whoever waits here is sent away (their socket tells
    /// them it ended), and all kept for it goes. Returns how many were sent away.
    pub(crate) fn forget_meeting(&mut self, meeting: &str) -> usize {
        self.elsewhere.remove(meeting);
        self.moderators.remove(meeting);
        self.waiting.remove(meeting).map_or(0, |w| {
            w.into_iter()
                .map(|x| x.tx.send(false).is_ok())
                .filter(|ok| *ok)
                .count()
        })
    }

    /// Node `node` went: whom it showed waiting (no longer listed), per meeting.
    pub fn forget_node(&mut self, node: &str) -> Vec<(String, String)> {
        let mut gone = Vec::new();
        self.elsewhere.retain(|meeting, e| {
            e.retain(|key, (n, _)| {
                let keep = n != node;
                if !keep {
                    gone.push((meeting.clone(), key.clone()));
                }
                keep
            });
            !e.is_empty()
        });
        gone
    }
}

/// Who may let people in, by the meeting's rules now: the host, moderators granted, and
/// moderators present here by their own invite, each of whose authority still holds.
pub(crate) fn gatekeepers(view: &MeetingView, lobby: &Mutex<Lobby>, meeting: &str) -> Vec<String> {
    let present: Vec<(String, Option<String>)> = {
        let lobby = lobby.lock().unwrap_or_else(|p| p.into_inner());
        lobby
            .moderators
            .get(meeting)
            .map(|m| m.iter().map(|(k, (i, _))| (k.clone(), i.clone())).collect())
            .unwrap_or_default()
    };
    rules::read(view, meeting, |rec| {
        let now = rules::now_ms();
        let mut keys: Vec<String> = rec
            .rules
            .moderators(now)
            .iter()
            .map(veche_trust::encode_key)
            .collect();
        for (key, invite) in present {
            let Ok(k) = veche_trust::decode_key(&key) else {
                continue;
            };
            let invite = invite.and_then(|t| decode_token::<Signed<Invite>>(&t).ok());
            if rec.rules.may_moderate(&k, invite.as_ref(), now) && !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    })
    .unwrap_or_default()
}

/// Tell the people on this node who may let others in now that `key` waits (or not).
pub async fn notify(
    (engine, view, lobby): (&EngineHandle, &MeetingView, &Mutex<Lobby>),
    meeting: &str,
    key: &str,
    name: &str,
    waiting: bool,
) {
    let keys = gatekeepers(view, lobby, meeting);
    let _ = engine
        .send(Command::Notify {
            meeting: meeting.to_owned(),
            keys,
            signal: Signal::Knock {
                key: key.to_owned(),
                name: name.to_owned(),
                waiting,
            },
        })
        .await;
}

/// Node `node` says a person waits (or stopped waiting) there in `meeting`: shown to the
/// host and moderators here once the meeting's rules take their proof (made for that node),
/// as for a join here but for the waiting room itself. Why not, otherwise.
pub async fn knock_from_node(
    (engine, view, lobby): (&EngineHandle, &MeetingView, &Mutex<Lobby>),
    node: &str,
    meeting: &str,
    (presence, name, waiting): (&str, &str, bool),
) -> Result<(), String> {
    let p: Presence = decode_token(presence).map_err(|e| e.to_string())?;
    let name: String = name.chars().take(64).collect();
    let key = rules::read(view, meeting, |m| {
        if !m.rules.doc().is_some_and(|d| d.body.lobby) {
            return Err("this meeting has no waiting room".to_owned());
        }
        m.rules
            .admit_remote(meeting, node, &p, rules::now_ms(), false, false)
            .map(|(k, _)| veche_trust::encode_key(&k))
            .map_err(|e| e.to_string())
    })
    .unwrap_or_else(|| Err("there is no meeting with this id on this node".into()))?;
    let taken = {
        let mut l = lobby.lock().unwrap_or_else(|p| p.into_inner());
        l.knocked_at(meeting, &key, node, &name, waiting)
    };
    if !taken {
        return Err("too many people are waiting to enter this meeting".into());
    }
    notify((engine, view, lobby), meeting, &key, &name, waiting).await;
    Ok(())
}

/// A waiting-room decision checked and committed here (`take`n from another node): let in
/// or turn away whoever waits here with `key`, and tell the gatekeepers here.
pub async fn decided_at_another_node(
    (engine, view, lobby): (&EngineHandle, &MeetingView, &Mutex<Lobby>),
    meeting: &str,
    key: &str,
    admit: bool,
) -> usize {
    let n = {
        let mut l = lobby.lock().unwrap_or_else(|p| p.into_inner());
        let _ = l.decided_elsewhere(meeting, key);
        l.decide(meeting, key, admit)
    };
    notify((engine, view, lobby), meeting, key, "", false).await;
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moderators_gatekeeper_entry_goes_with_their_last_socket() {
        let mut lobby = Lobby::default();
        assert!(lobby.moderator_entered("k3x-9qa-7mf", "mo", Some("invite".into())));
        assert!(lobby.moderator_entered("k3x-9qa-7mf", "mo", Some("invite".into())));
        assert_eq!(lobby.moderators["k3x-9qa-7mf"]["mo"].1, 2, "two sockets");
        lobby.moderator_left("k3x-9qa-7mf", "mo");
        assert!(
            lobby.moderators["k3x-9qa-7mf"].contains_key("mo"),
            "kept while a socket is in"
        );
        lobby.moderator_left("k3x-9qa-7mf", "mo");
        assert!(lobby.moderators.is_empty(), "freed with the last");
        // Bounded: a meeting holds at most MAX_WAITING of them.
        for i in 0..MAX_WAITING {
            assert!(lobby.moderator_entered("k3x-9qa-7mf", &format!("k{i}"), None));
        }
        assert!(!lobby.moderator_entered("k3x-9qa-7mf", "one more", None));
        assert!(
            lobby.moderator_entered("k3x-9qa-7mf", "k0", None),
            "one already in"
        );
    }

    #[test]
    fn people_waiting_elsewhere_are_listed_bounded_per_node_and_forgotten_with_it() {
        let mut l = Lobby::default();
        assert!(l.knocked_at("m", "k1", "node-b", "Bob", true));
        assert_eq!(l.list("m"), vec![("k1".to_owned(), "Bob".to_owned())]);
        for i in 0..MAX_WAITING_PER_NODE + 5 {
            let _ = l.knocked_at("m", &format!("c{i}"), "node-c", "C", true);
        }
        assert_eq!(l.list("m").len(), 1 + MAX_WAITING_PER_NODE);
        // Another node still gets its share.
        assert!(l.knocked_at("m", "d1", "node-d", "Dee", true));
        // Stopped waiting: gone from the list; a decision names the node.
        assert!(l.knocked_at("m", "d1", "node-d", "", false));
        assert_eq!(l.decided_elsewhere("m", "k1").as_deref(), Some("node-b"));
        assert_eq!(l.decided_elsewhere("m", "k1"), None);
        assert_eq!(l.forget_node("node-c").len(), MAX_WAITING_PER_NODE);
        assert!(l.list("m").is_empty() && l.elsewhere.is_empty());
    }
}
