//! Meetings created on this node, kept in `meetings.json` so links survive restarts.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::fsutil::{ensure_private_dir, write_atomic};

/// The store's file in the data directory.
pub const MEETINGS_FILE: &str = "meetings.json";
/// Longest meeting title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Most meetings one node keeps.
pub const MAX_MEETINGS: usize = 10_000;

/// A meeting created on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meeting {
    /// Short id used in links, like `k3x-9qa-7mf`.
    pub id: String,
    /// Title shown to participants.
    pub title: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at: u64,
    /// Listed to other nodes (in the node hello). Off unless asked for.
    #[serde(default)]
    pub public: bool,
    /// For a meeting created on another node: the nodes (peer ids) known to carry it.
    /// Empty for a meeting created here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// The host's signed meeting document (a veche-trust token), once the host signed it:
    /// from then on joins are checked against its policy. The caller checks it before
    /// storing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
    /// Keys (base64url) a moderator removed: they cannot join this meeting again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// The host's signed revocations of invites (veche-trust tokens; checked by the caller).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revocations: Vec<String>,
    /// The signed actions behind `removed`, `locked` and `ended` (veche-trust `Action`
    /// tokens, oldest first), so they can travel with the meeting to a node that learns it
    /// later, which checks each itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// Joins counted per invite with a use limit, as `signer key/invite id` → joins here
    /// (each node counts the joins it admits).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub uses: BTreeMap<String, u32>,
    /// The waiting room's decisions on this node: key → let in (`true`) or turned away.
    /// Someone let in comes back without waiting; someone turned away stays out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lobby: BTreeMap<String, bool>,
    /// A moderator locked it: nobody new joins but the host and moderators.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub locked: bool,
    /// A moderator ended it for everyone: nobody joins again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
}

/// Most keys removed from one meeting.
pub const MAX_REMOVED: usize = 10_000;
/// Most signed actions kept per meeting (the oldest go first).
pub const MAX_ACTIONS: usize = 1024;

/// What a node learns with a meeting from the node it asked (each piece checked by the
/// caller): stored in one write.
#[derive(Debug, Default)]
pub struct History {
    /// The host's revocations (tokens).
    pub revocations: Vec<String>,
    /// The signed actions kept (tokens, oldest first).
    pub actions: Vec<String>,
    /// Keys those actions removed.
    pub removed: Vec<String>,
    /// The lock state the last lock or unlock left, if any.
    pub locked: Option<bool>,
    /// An end among them.
    pub ended: bool,
}

fn push_revocation(m: &mut Meeting, token: &str) {
    if m.revocations.iter().any(|t| t == token) {
        return;
    }
    if m.revocations.len() >= MAX_REMOVED {
        m.revocations.remove(0);
    }
    m.revocations.push(token.to_owned());
}

fn push_removed(m: &mut Meeting, key: &str) {
    if m.removed.iter().any(|k| k == key) {
        return;
    }
    if m.removed.len() >= MAX_REMOVED {
        m.removed.remove(0);
    }
    m.removed.push(key.to_owned());
}

fn push_action(m: &mut Meeting, token: &str) {
    if m.actions.iter().any(|t| t == token) {
        return;
    }
    if m.actions.len() >= MAX_ACTIONS {
        m.actions.remove(0);
    }
    m.actions.push(token.to_owned());
}

/// Why a meeting's signed document was not stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetDocError {
    /// No such meeting here.
    #[error("there is no meeting with this id on this node")]
    Unknown,
    /// It is signed already (the first host's signature stands).
    #[error("this meeting already has a host")]
    AlreadySigned,
    /// It was created on another node, which keeps its document.
    #[error("this meeting belongs to another node")]
    Remote,
    /// Past the limit of what one meeting keeps.
    #[error("too many invites counted for this meeting")]
    TooMany,
    /// The store could not be written; nothing changed.
    #[error("cannot save the meeting: {0}")]
    Io(#[from] io::Error),
}

/// Most nodes remembered for one remote meeting.
pub const MAX_MEETING_NODES: usize = 8;

/// Why a meeting could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateMeetingError {
    /// Empty or too long title.
    #[error("the title must be 1 to {MAX_TITLE_CHARS} characters")]
    BadTitle,
    /// The node keeps as many meetings as it may.
    #[error("this node already has {MAX_MEETINGS} meetings")]
    TooMany,
    /// The store could not be written; the meeting was not created.
    #[error("cannot save the meeting: {0}")]
    Io(#[from] io::Error),
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The store's file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file is not a meeting store.
    #[error("{path} is damaged: {message}")]
    Corrupt {
        /// The store's file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    meetings: Vec<Meeting>,
}

/// The meetings of this node. A meeting is on disk before `create` returns.
#[derive(Debug)]
pub struct MeetingStore {
    path: PathBuf,
    meetings: BTreeMap<String, Meeting>,
}

impl MeetingStore {
    /// Open (or start) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(MEETINGS_FILE);
        let meetings = match std::fs::read(&path) {
            Ok(bytes) => {
                let disk: OnDisk =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                disk.meetings
                    .into_iter()
                    .map(|m| (m.id.clone(), m))
                    .collect()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        Ok(Self { path, meetings })
    }

    /// Create a meeting and store it durably.
    pub fn create(&mut self, title: &str, public: bool) -> Result<Meeting, CreateMeetingError> {
        let title = title.trim();
        let chars = title.chars().count();
        if chars == 0 || chars > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
            return Err(CreateMeetingError::BadTitle);
        }
        if self.meetings.len() >= MAX_MEETINGS {
            return Err(CreateMeetingError::TooMany);
        }
        let mut id = new_id();
        while self.meetings.contains_key(&id) {
            id = new_id();
        }
        let meeting = Meeting {
            id: id.clone(),
            title: title.to_owned(),
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            public,
            nodes: Vec::new(),
            doc: None,
            removed: Vec::new(),
            revocations: Vec::new(),
            actions: Vec::new(),
            uses: BTreeMap::new(),
            lobby: BTreeMap::new(),
            locked: false,
            ended: false,
        };
        self.meetings.insert(id.clone(), meeting.clone());
        if let Err(e) = self.save() {
            self.meetings.remove(&id);
            return Err(e.into());
        }
        Ok(meeting)
    }

    /// Remember a meeting another node carries (learned by asking `node` about it), so a
    /// browser here can join it; stored durably, like a meeting created here.
    pub fn add_remote(
        &mut self,
        id: &str,
        title: &str,
        node: &str,
    ) -> Result<Meeting, CreateMeetingError> {
        let title = title.trim();
        let chars = title.chars().count();
        if !is_meeting_id(id)
            || chars == 0
            || chars > MAX_TITLE_CHARS
            || title.chars().any(char::is_control)
        {
            return Err(CreateMeetingError::BadTitle);
        }
        let before = self.meetings.get(id).cloned();
        let meeting = match self.meetings.get_mut(id) {
            Some(m) => {
                if m.nodes.is_empty() || m.nodes.iter().any(|n| n == node) {
                    // Created here, or already known through this node.
                    return Ok(m.clone());
                }
                if m.nodes.len() >= MAX_MEETING_NODES {
                    m.nodes.remove(0);
                }
                m.nodes.push(node.to_owned());
                m.clone()
            }
            None => {
                if self.meetings.len() >= MAX_MEETINGS {
                    return Err(CreateMeetingError::TooMany);
                }
                let m = Meeting {
                    id: id.to_owned(),
                    title: title.to_owned(),
                    created_at: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                    public: false,
                    nodes: vec![node.to_owned()],
                    doc: None,
                    removed: Vec::new(),
                    revocations: Vec::new(),
                    actions: Vec::new(),
                    uses: BTreeMap::new(),
                    lobby: BTreeMap::new(),
                    locked: false,
                    ended: false,
                };
                self.meetings.insert(id.to_owned(), m.clone());
                m
            }
        };
        if let Err(e) = self.save() {
            match before {
                Some(b) => self.meetings.insert(id.to_owned(), b),
                None => self.meetings.remove(id),
            };
            return Err(e.into());
        }
        Ok(meeting)
    }

    /// Store the host's signed document of meeting `id` durably (written before this
    /// returns, so an acknowledged document survives a kill -9).
    pub fn set_doc(&mut self, id: &str, token: &str) -> Result<(), SetDocError> {
        let m = self.meetings.get_mut(id).ok_or(SetDocError::Unknown)?;
        if !m.nodes.is_empty() {
            return Err(SetDocError::Remote);
        }
        if m.doc.is_some() {
            return Err(SetDocError::AlreadySigned);
        }
        m.doc = Some(token.to_owned());
        if let Err(e) = self.save() {
            if let Some(m) = self.meetings.get_mut(id) {
                m.doc = None;
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Store the signed document of a meeting created on another node, as that node gave
    /// it (the caller checks it); kept once set.
    pub fn set_remote_doc(&mut self, id: &str, token: &str) -> Result<(), SetDocError> {
        let m = self.meetings.get_mut(id).ok_or(SetDocError::Unknown)?;
        if m.doc.is_some() {
            return Err(SetDocError::AlreadySigned);
        }
        m.doc = Some(token.to_owned());
        if let Err(e) = self.save() {
            if let Some(m) = self.meetings.get_mut(id) {
                m.doc = None;
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Lock or unlock meeting `id`, or end it (for good), durably.
    pub fn set_flags(
        &mut self,
        id: &str,
        locked: Option<bool>,
        ended: bool,
        action: Option<&str>,
    ) -> Result<(), SetDocError> {
        let m = self.meetings.get_mut(id).ok_or(SetDocError::Unknown)?;
        if let Some(l) = locked {
            m.locked = l;
        }
        m.ended |= ended;
        if let Some(a) = action {
            push_action(m, a);
        }
        self.save().map_err(SetDocError::from)
    }

    /// Remember durably that `key` was removed from meeting `id` (written before this
    /// returns: a removal survives a kill -9).
    pub fn add_removed(
        &mut self,
        id: &str,
        key: &str,
        action: Option<&str>,
    ) -> Result<(), SetDocError> {
        let m = self.meetings.get_mut(id).ok_or(SetDocError::Unknown)?;
        if m.removed.iter().any(|k| k == key) {
            return Ok(());
        }
        if let Some(a) = action {
            push_action(m, a);
        }
        push_removed(m, key);
        self.save().map_err(SetDocError::from)
    }

    /// Count durably that an invite with a use limit admitted someone: `counter` is
    /// `signer key/invite id`, `joins` the count now (written before the join is answered,
    /// so a one-use invite stays used after a restart).
    pub fn set_uses(&mut self, id: &str, counter: &str, joins: u32) -> Result<(), SetDocError> {
        let m = self.meetings.get_mut(id).ok_or(SetDocError::Unknown)?;
        if m.uses.len() >= MAX_REMOVED && !m.uses.contains_key(counter) {
            return Err(SetDocError::TooMany);
        }
        m.uses.insert(counter.to_owned(), joins);
        self.save().map_err(SetDocError::from)
    }

    /// Remember durably that the waiting room let `key` in (`admit`) or turned it away.
    pub fn set_lobby_decision(
        &mut self,
        id: &str,
        key: &str,
        admit: bool,
    ) -> Result<(), SetDocError> {
        let m = self.meetings.get_mut(id).ok_or(SetDocError::Unknown)?;
        if m.lobby.len() >= MAX_REMOVED && !m.lobby.contains_key(key) {
            return Err(SetDocError::TooMany);
        }
        m.lobby.insert(key.to_owned(), admit);
        self.save().map_err(SetDocError::from)
    }

    /// Store a checked revocation of meeting `id` durably (before the caller acknowledges).
    pub fn add_revocation(&mut self, id: &str, token: &str) -> Result<(), SetDocError> {
        let m = self.meetings.get_mut(id).ok_or(SetDocError::Unknown)?;
        if m.revocations.iter().any(|t| t == token) {
            return Ok(());
        }
        push_revocation(m, token);
        self.save().map_err(SetDocError::from)
    }

    /// Store what came with a meeting learned from another node (checked by the caller) in
    /// one durable write.
    pub fn add_history(&mut self, id: &str, h: &History) -> Result<(), SetDocError> {
        let m = self.meetings.get_mut(id).ok_or(SetDocError::Unknown)?;
        for t in &h.revocations {
            push_revocation(m, t);
        }
        for k in &h.removed {
            push_removed(m, k);
        }
        for a in &h.actions {
            push_action(m, a);
        }
        if let Some(l) = h.locked {
            m.locked = l;
        }
        m.ended |= h.ended;
        self.save().map_err(SetDocError::from)
    }

    /// Meetings listed to other nodes.
    pub fn public(&self) -> impl Iterator<Item = &Meeting> {
        self.meetings
            .values()
            .filter(|m| m.public && m.nodes.is_empty())
    }

    /// Every meeting known here.
    pub fn all(&self) -> impl Iterator<Item = &Meeting> {
        self.meetings.values()
    }

    /// A meeting by id.
    pub fn get(&self, id: &str) -> Option<&Meeting> {
        self.meetings.get(id)
    }

    fn save(&self) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            ensure_private_dir(dir)?;
        }
        let disk = OnDisk {
            meetings: self.meetings.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&disk).map_err(io::Error::other)?;
        write_atomic(&self.path, &bytes, 0o600)
    }
}

/// `xxx-xxx-xxx` from an alphabet without look-alikes (no 0/o, 1/l/i): easy to read aloud
/// and type on a tablet. 31^9 ids: guessing one is hopeless at any rate the node serves.
fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(11);
    for i in 0..9 {
        if i > 0 && i % 3 == 0 {
            s.push('-');
        }
        s.push(ALPHABET[rng.gen_range(0..ALPHABET.len())] as char);
    }
    s
}

/// Whether `id` has the shape of a meeting id (checked before any lookup or log).
pub fn is_meeting_id(id: &str) -> bool {
    id.len() == 11
        && id.bytes().enumerate().all(|(i, b)| {
            if i == 3 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_lowercase() || b.is_ascii_digit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meetings_survive_reopening_and_ids_are_well_formed() {
        let dir = std::env::temp_dir().join(format!("veche-meet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = MeetingStore::open(&dir).expect("open");
        let m = store.create("  Physics 7B ", false).expect("create");
        assert_eq!(m.title, "Physics 7B");
        assert!(is_meeting_id(&m.id), "{}", m.id);
        assert!(matches!(
            store.create("", false),
            Err(CreateMeetingError::BadTitle)
        ));
        assert!(matches!(
            store.create(&"t".repeat(201), false),
            Err(CreateMeetingError::BadTitle)
        ));
        let remote = store
            .add_remote("abc-def-ghk", "Chess club", "12D3KooWnode")
            .expect("remote");
        assert_eq!(remote.nodes, vec!["12D3KooWnode".to_owned()]);
        assert!(store.add_remote("../etc", "x", "n").is_err());
        let again = MeetingStore::open(&dir).expect("reopen");
        assert_eq!(again.get(&m.id), Some(&m));
        assert_eq!(again.get("abc-def-ghk"), Some(&remote));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn damaged_store_is_reported_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("veche-meet-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(MEETINGS_FILE), b"{not json").expect("write");
        assert!(matches!(
            MeetingStore::open(&dir),
            Err(StoreError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn history_from_another_node_is_stored_once_and_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("veche-meet-hist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = MeetingStore::open(&dir).expect("open");
        store
            .add_remote("abc-def-ghk", "Chess club", "12D3KooWnode")
            .expect("remote");
        let h = History {
            revocations: vec!["rev1".into(), "rev1".into()],
            actions: vec!["act1".into(), "act2".into()],
            removed: vec!["keyA".into()],
            locked: Some(true),
            ended: false,
        };
        store.add_history("abc-def-ghk", &h).expect("history");
        assert!(matches!(
            store.add_history("nop-nop-nop", &h),
            Err(SetDocError::Unknown)
        ));
        drop(store);
        let store = MeetingStore::open(&dir).expect("reopen");
        let m = store.get("abc-def-ghk").expect("meeting");
        assert_eq!(m.revocations, ["rev1"]);
        assert_eq!(m.actions, ["act1", "act2"]);
        assert_eq!(m.removed, ["keyA"]);
        assert!(m.locked && !m.ended);
        std::fs::remove_dir_all(&dir).ok();
    }
}
