//! The meetings this node carries, kept in an embedded database (`meetings.redb`, redb) so
//! links, hosts and every decision under them survive restarts and a kill -9.
//!
//! One record per meeting (its JSON) and one per change since that record was written (an
//! invite use, a revocation, a moderation decision: a few hundred bytes, never the whole
//! meeting again). Each is committed in its own transaction (redb fsyncs on commit) before it
//! is applied in memory, and a failed write leaves both as they were. Opening replays a
//! meeting's changes onto its record; every [`FOLD_AFTER`] changes the record is written anew
//! with them folded in, so replay stays short. Meetings are deleted once they ended and the
//! retention period passed, and the file is compacted then, so it does not grow for ever.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::{Deserialize, Serialize};

use veche_meeting::{Change, Governance};

use crate::attendance::{Record, MAX_RECORDS};
use crate::fsutil::ensure_private_dir;

/// The store's file in the data directory.
pub const MEETINGS_FILE: &str = "meetings.redb";
/// The store of earlier versions (one JSON file), moved into the database on first open.
pub const LEGACY_FILE: &str = "meetings.json";
const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meetings");
/// A meeting's changes since its record was written: (meeting id, sequence) → the change.
const EVENTS: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("events");
/// A meeting's attendance: (meeting id, sequence) → an arrival or a departure
/// ([`crate::attendance::Record`]), deleted with the meeting.
const ATTENDANCE: redb::TableDefinition<(&str, u64), &[u8]> =
    redb::TableDefinition::new("attendance");
/// Changes after which a meeting's record is written again with them folded in.
pub const FOLD_AFTER: u64 = 256;
/// Longest meeting title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
const DAY_MS: u64 = 86_400_000;
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
    /// Who may be in it and what they may do: the host's signed document and everything
    /// decided under it (veche-meeting). Changed only through [`MeetingStore::commit`].
    #[serde(flatten)]
    pub rules: Governance,
    /// For a meeting created here and not signed yet: the SHA-256 (base64url) of the secret
    /// its creator got back, which must come with the host's document. Nobody else can make
    /// themselves its host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// For a meeting learned from another node: the host key's pin (`PublicKey::pin`) the link named.
    /// A document signed by anyone else is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// When it was ended (ms since the epoch): deleted once the retention period passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
}

/// The secret's digest, as kept in [`Meeting::claim`].
pub fn claim_digest(secret: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(secret.as_bytes()))
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
    /// The secret its creator got back did not come with the document.
    #[error("only the browser that created this meeting can sign it as its host")]
    NotCreator,
    /// The store could not be written; nothing changed.
    #[error("cannot save the meeting: {0}")]
    Io(#[from] io::Error),
}

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
    /// Another process (another veche) has the store open.
    #[error(
        "{path} is in use by another process: is another veche running on this data directory?"
    )]
    InUse {
        /// The store's file.
        path: PathBuf,
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

fn db_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// What the store holds, for readers on any thread: a read never waits for a write to
/// reach the disk (the store takes the write lock only to swap in what it committed).
#[derive(Debug, Clone, Default)]
pub struct MeetingView(Arc<RwLock<BTreeMap<String, Meeting>>>);

impl MeetingView {
    /// Meeting `id`, read with `f`.
    pub fn read<T>(&self, id: &str, f: impl FnOnce(&Meeting) -> T) -> Option<T> {
        self.map().get(id).map(f)
    }

    /// Every meeting, read with `f`.
    pub fn with_all<T>(&self, f: impl FnOnce(&mut dyn Iterator<Item = &Meeting>) -> T) -> T {
        f(&mut self.map().values())
    }

    /// The meetings listed to other nodes: (id, title).
    pub fn public(&self) -> Vec<(String, String)> {
        self.map()
            .values()
            .filter(|m| m.public && m.nodes.is_empty())
            .map(|m| (m.id.clone(), m.title.clone()))
            .collect()
    }

    fn map(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Meeting>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn map_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Meeting>> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The meetings of this node. A meeting is on disk before `create` returns. One writer
/// (keep it behind a mutex, used off the async runtime); readers use [`MeetingStore::view`].
pub struct MeetingStore {
    path: PathBuf,
    db: redb::Database,
    meetings: MeetingView,
    /// Each meeting's change records on disk (sequences `0..n`), absent when none.
    events: HashMap<String, u64>,
    /// Each meeting's next attendance sequence, learned from the disk at its first record
    /// since the store opened.
    attendance: HashMap<String, u64>,
    /// Tests: the next write fails, as a full disk would.
    #[cfg(test)]
    fail_next: bool,
}

impl std::fmt::Debug for MeetingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeetingStore")
            .field("path", &self.path)
            .field("meetings", &self.meetings.map().len())
            .finish()
    }
}

impl MeetingStore {
    /// Open (or start) the store in `dir`; a store of an earlier version (`meetings.json`)
    /// is moved into it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(MEETINGS_FILE);
        let io_err = |source: io::Error| StoreError::Io {
            path: path.clone(),
            source,
        };
        let corrupt = |message: String| StoreError::Corrupt {
            path: path.clone(),
            message,
        };
        ensure_private_dir(dir).map_err(io_err)?;
        let db = redb::Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: path.clone() },
            e => corrupt(e.to_string()),
        })?;
        set_private(&path).map_err(io_err)?;
        let mut meetings = BTreeMap::new();
        let mut events = HashMap::new();
        {
            use redb::{ReadableDatabase as _, ReadableTable as _};
            let txn = db.begin_read().map_err(|e| corrupt(e.to_string()))?;
            match txn.open_table(TABLE) {
                Ok(table) => {
                    for entry in table.iter().map_err(|e| corrupt(e.to_string()))? {
                        let (k, v) = entry.map_err(|e| corrupt(e.to_string()))?;
                        let m: Meeting = serde_json::from_slice(v.value())
                            .map_err(|e| corrupt(format!("meeting {}: {e}", k.value())))?;
                        meetings.insert(m.id.clone(), m);
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(corrupt(e.to_string())),
            }
            match txn.open_table(EVENTS) {
                // In key order: each meeting's changes in the order they were committed.
                Ok(table) => {
                    for entry in table.iter().map_err(|e| corrupt(e.to_string()))? {
                        let (k, v) = entry.map_err(|e| corrupt(e.to_string()))?;
                        let (id, seq) = k.value();
                        let change: Change = serde_json::from_slice(v.value())
                            .map_err(|e| corrupt(format!("meeting {id}, change {seq}: {e}")))?;
                        // A meeting is deleted with its changes, in one transaction.
                        let m = meetings.get_mut(id).ok_or_else(|| {
                            corrupt(format!("change {seq} of meeting {id}, which is not there"))
                        })?;
                        m.rules.apply(&change);
                        events.insert(id.to_owned(), seq + 1);
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(corrupt(e.to_string())),
            }
        }
        let mut store = Self {
            path,
            db,
            meetings: MeetingView(Arc::new(RwLock::new(meetings))),
            events,
            attendance: HashMap::new(),
            #[cfg(test)]
            fail_next: false,
        };
        store.migrate(&dir.join(LEGACY_FILE))?;
        Ok(store)
    }

    /// Move the meetings of `meetings.json` into the database (once, in one transaction),
    /// then keep the old file aside.
    fn migrate(&mut self, legacy: &Path) -> Result<(), StoreError> {
        let bytes = match std::fs::read(legacy) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: legacy.to_owned(),
                    source,
                })
            }
        };
        let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: legacy.to_owned(),
            message: e.to_string(),
        })?;
        let io_err = |source: io::Error| StoreError::Io {
            path: legacy.to_owned(),
            source,
        };
        let fresh: Vec<Meeting> = disk
            .meetings
            .into_iter()
            .filter(|m| !self.meetings.map().contains_key(&m.id))
            .collect();
        self.write(&fresh, &[]).map_err(io_err)?;
        let mut map = self.meetings.map_mut();
        for m in fresh {
            map.insert(m.id.clone(), m);
        }
        std::fs::rename(legacy, legacy.with_extension("json.migrated")).map_err(io_err)?;
        Ok(())
    }

    /// Write the records of `put` and delete `delete`, each with the change records it had,
    /// in one committed transaction.
    fn write(&mut self, put: &[Meeting], delete: &[String]) -> io::Result<()> {
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next) {
            return Err(io::Error::other("no space left on device (test)"));
        }
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(TABLE).map_err(db_err)?;
            let mut events = txn.open_table(EVENTS).map_err(db_err)?;
            for m in put {
                let bytes = serde_json::to_vec(m).map_err(io::Error::other)?;
                table
                    .insert(m.id.as_str(), bytes.as_slice())
                    .map_err(db_err)?;
            }
            let mut attendance = txn.open_table(ATTENDANCE).map_err(db_err)?;
            for id in delete {
                table.remove(id.as_str()).map_err(db_err)?;
                attendance
                    .retain_in((id.as_str(), 0)..=(id.as_str(), u64::MAX), |_, _| false)
                    .map_err(db_err)?;
            }
            // A record written anew holds its changes; a deleted one takes them along.
            for id in put.iter().map(|m| &m.id).chain(delete) {
                for seq in 0..self.events.get(id).copied().unwrap_or(0) {
                    events.remove((id.as_str(), seq)).map_err(db_err)?;
                }
            }
        }
        txn.commit().map_err(db_err)?;
        for id in put.iter().map(|m| &m.id).chain(delete) {
            self.events.remove(id);
        }
        for id in delete {
            self.attendance.remove(id);
        }
        Ok(())
    }

    /// Append arrivals and departures to their meetings' attendance, in one committed
    /// transaction. Records of meetings not kept here (a relay's, or one deleted since) and
    /// past a meeting's [`MAX_RECORDS`] are skipped. Returns how many were written.
    pub fn record_attendance(&mut self, batch: &[(String, Record)]) -> io::Result<usize> {
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next) {
            return Err(io::Error::other("no space left on device (test)"));
        }
        let txn = self.db.begin_write().map_err(db_err)?;
        let mut next = HashMap::new();
        let mut written = 0;
        {
            use redb::ReadableTable as _;
            let mut table = txn.open_table(ATTENDANCE).map_err(db_err)?;
            for (id, record) in batch {
                if !self.meetings.map().contains_key(id) {
                    continue;
                }
                let seq = match next.get(id).or(self.attendance.get(id)) {
                    Some(&n) => n,
                    None => table
                        .range((id.as_str(), 0)..=(id.as_str(), u64::MAX))
                        .map_err(db_err)?
                        .next_back()
                        .transpose()
                        .map_err(db_err)?
                        .map_or(0, |(k, _)| k.value().1 + 1),
                };
                if seq >= MAX_RECORDS {
                    tracing::warn!(meeting = %id, "attendance full: a record was not kept");
                    continue;
                }
                let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
                table
                    .insert((id.as_str(), seq), bytes.as_slice())
                    .map_err(db_err)?;
                next.insert(id.clone(), seq + 1);
                written += 1;
            }
        }
        txn.commit().map_err(db_err)?;
        self.attendance.extend(next);
        Ok(written)
    }

    /// Meeting `id`'s attendance records, in the order they were written.
    pub fn attendance(&self, id: &str) -> io::Result<Vec<Record>> {
        use redb::ReadableDatabase as _;
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = match txn.open_table(ATTENDANCE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err(e)),
        };
        let mut out = Vec::new();
        for entry in table.range((id, 0)..=(id, u64::MAX)).map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let record = serde_json::from_slice(v.value()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("attendance record {} of meeting {id}: {e}", k.value().1),
                )
            })?;
            out.push(record);
        }
        Ok(out)
    }

    /// Append one change record to meeting `id`, committed.
    fn write_event(&mut self, id: &str, change: &Change) -> io::Result<()> {
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next) {
            return Err(io::Error::other("no space left on device (test)"));
        }
        let seq = self.events.get(id).copied().unwrap_or(0);
        let bytes = serde_json::to_vec(change).map_err(io::Error::other)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut events = txn.open_table(EVENTS).map_err(db_err)?;
            events.insert((id, seq), bytes.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        self.events.insert(id.to_owned(), seq + 1);
        Ok(())
    }

    /// Change records meeting `id` has on disk (folded into its record every [`FOLD_AFTER`]).
    pub fn pending_changes(&self, id: &str) -> u64 {
        self.events.get(id).copied().unwrap_or(0)
    }

    /// Create a meeting and store it durably. Returns it and the secret that lets its
    /// creator sign it as its host ([`MeetingStore::set_doc`]).
    pub fn create(
        &mut self,
        title: &str,
        public: bool,
    ) -> Result<(Meeting, String), CreateMeetingError> {
        let title = title.trim();
        let chars = title.chars().count();
        if chars == 0 || chars > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
            return Err(CreateMeetingError::BadTitle);
        }
        if self.meetings.map().len() >= MAX_MEETINGS {
            return Err(CreateMeetingError::TooMany);
        }
        let secret = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())
        };
        let mut id = new_id();
        while self.meetings.map().contains_key(&id) {
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
            rules: Governance::default(),
            claim: Some(claim_digest(&secret)),
            pin: None,
            ended_at: None,
        };
        self.write(std::slice::from_ref(&meeting), &[])?;
        self.meetings.map_mut().insert(id, meeting.clone());
        Ok((meeting, secret))
    }

    /// Remember a meeting another node carries (learned by asking `node` about it), so a
    /// browser here can join it; stored durably, like a meeting created here.
    pub fn add_remote(
        &mut self,
        id: &str,
        title: &str,
        node: &str,
        pin: Option<&str>,
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
        let next = match self.get(id) {
            Some(m) if m.nodes.is_empty() => return Ok(m), // created here
            // Known already: the node it was first learned from and the host pinned then
            // stand (a later link cannot add a node that would hear of the meeting, nor
            // change whose document is taken).
            Some(m) => return Ok(m),
            None => {
                if self.meetings.map().len() >= MAX_MEETINGS {
                    return Err(CreateMeetingError::TooMany);
                }
                Meeting {
                    id: id.to_owned(),
                    title: title.to_owned(),
                    created_at: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                    public: false,
                    nodes: vec![node.to_owned()],
                    rules: Governance::default(),
                    claim: None,
                    pin: pin.map(str::to_owned),
                    ended_at: None,
                }
            }
        };
        self.replace(next.clone()).map_err(|e| match e {
            SetDocError::Io(e) => CreateMeetingError::Io(e),
            e => CreateMeetingError::Io(io::Error::other(e.to_string())),
        })?;
        Ok(next)
    }

    /// Store the host's signed document of a meeting created here, from its creator (who
    /// shows the secret [`MeetingStore::create`] gave back), once `rules.check_doc` passed:
    /// written before this returns, so an acknowledged document survives a kill -9.
    pub fn set_doc(&mut self, id: &str, secret: &str, change: &Change) -> Result<(), SetDocError> {
        let m = self.get(id).ok_or(SetDocError::Unknown)?;
        if !m.nodes.is_empty() {
            return Err(SetDocError::Remote);
        }
        if m.rules.doc().is_some() {
            return Err(SetDocError::AlreadySigned);
        }
        if m.claim.as_deref() != Some(claim_digest(secret).as_str()) {
            return Err(SetDocError::NotCreator);
        }
        let mut next = m;
        next.rules.apply(change);
        next.claim = None;
        self.replace(next)
    }

    /// Commit a change of meeting `id`'s governance: written first (one change record, or
    /// the meeting's record when it ends or has [`FOLD_AFTER`] changes to fold in), applied
    /// in memory only once it is on disk (a failed write leaves the meeting as it was).
    pub fn commit(&mut self, id: &str, change: &Change) -> Result<(), SetDocError> {
        let ends = {
            let map = self.meetings.map();
            let m = map.get(id).ok_or(SetDocError::Unknown)?;
            m.ended_at.is_none() && (m.rules.ended() || change.ends())
        };
        if ends || self.pending_changes(id) + 1 >= FOLD_AFTER {
            // Rare: the whole record is written anew, with the change (and the end time) in.
            let mut next = self.get(id).ok_or(SetDocError::Unknown)?;
            next.rules.apply(change);
            if next.rules.ended() && next.ended_at.is_none() {
                next.ended_at = Some(now_ms());
            }
            return self.replace(next);
        }
        // The common case: one small record on disk, then the change applied in place (the
        // meeting is not copied per change).
        self.write_event(id, change)?;
        if let Some(m) = self.meetings.map_mut().get_mut(id) {
            m.rules.apply(change);
        }
        Ok(())
    }

    fn replace(&mut self, next: Meeting) -> Result<(), SetDocError> {
        self.write(std::slice::from_ref(&next), &[])?;
        self.meetings.map_mut().insert(next.id.clone(), next);
        Ok(())
    }

    /// Delete the meetings that ended more than `retention_ms` before `now_ms`, those whose
    /// host's end time passed that long ago, and those created here that their creator did
    /// not sign within a day; then give the space back (compaction).
    /// Returns how many went.
    pub fn sweep(&mut self, now_ms: u64, retention_ms: u64) -> io::Result<usize> {
        let cutoff = now_ms.saturating_sub(retention_ms);
        let gone: Vec<String> = self
            .meetings
            .map()
            .values()
            .filter(|m| {
                // Created here and never signed by its creator within a day, or learned from another
                // node and never joined through this one within a day: nobody's.
                let day_old = m.created_at.saturating_add(DAY_MS) <= now_ms;
                let unclaimed = m.claim.is_some() && day_old;
                let unused = !m.nodes.is_empty() && m.rules.doc().is_none() && day_old;
                unclaimed
                    || unused
                    || m.ended_at.is_some_and(|t| t <= cutoff)
                    || m.rules
                        .doc()
                        .and_then(|d| d.body.ends_ms)
                        .is_some_and(|t| t <= cutoff)
            })
            .map(|m| m.id.clone())
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        self.write(&[], &gone)?;
        {
            let mut map = self.meetings.map_mut();
            for id in &gone {
                map.remove(id);
            }
        }
        self.db.compact().map_err(db_err)?;
        Ok(gone.len())
    }

    /// Delete meeting `id` now (its host asked), with its change records, committed, and
    /// give the space back.
    /// Returns whether it was here.
    pub fn delete(&mut self, id: &str) -> io::Result<bool> {
        if !self.meetings.map().contains_key(id) {
            return Ok(false);
        }
        self.write(&[], &[id.to_owned()])?;
        self.meetings.map_mut().remove(id);
        // Its bytes go from the file now, not at the next sweep (the delete stands either way).
        if let Err(e) = self.db.compact() {
            tracing::warn!(meeting = %id, error = %e, "cannot compact the store after a delete");
        }
        Ok(true)
    }

    /// Bytes the store takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// A view of the meetings for readers on any thread.
    pub fn view(&self) -> MeetingView {
        self.meetings.clone()
    }

    /// How many meetings the store holds.
    pub fn len(&self) -> usize {
        self.meetings.map().len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Meeting `id`, read with `f` (no copy).
    pub fn read<T>(&self, id: &str, f: impl FnOnce(&Meeting) -> T) -> Option<T> {
        self.meetings.read(id, f)
    }

    /// A meeting by id (a copy).
    pub fn get(&self, id: &str) -> Option<Meeting> {
        self.meetings.map().get(id).cloned()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The database holds secrets' digests and people's keys: owner only.
fn set_private(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
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
        let (m, _) = store.create("  Physics 7B ", false).expect("create");
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
            .add_remote("abc-def-ghk", "Chess club", "12D3KooWnode", None)
            .expect("remote");
        assert_eq!(remote.nodes, vec!["12D3KooWnode".to_owned()]);
        assert!(store.add_remote("../etc", "x", "n", None).is_err());
        assert!(
            matches!(MeetingStore::open(&dir), Err(StoreError::InUse { .. })),
            "one node per data directory"
        );
        drop(store);
        let again = MeetingStore::open(&dir).expect("reopen");
        assert_eq!(again.get(&m.id), Some(m.clone()));
        assert_eq!(again.get("abc-def-ghk"), Some(remote.clone()));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn damaged_store_is_reported_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("veche-meet-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(MEETINGS_FILE), b"{not a database").expect("write");
        assert!(matches!(
            MeetingStore::open(&dir),
            Err(StoreError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn only_the_creator_signs_a_meeting_and_a_failed_write_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("veche-meet-claim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = MeetingStore::open(&dir).expect("open");
        let (m, secret) = store.create("Choir", false).expect("create");
        let change = Change::Doc("token".into());
        assert!(matches!(
            store.set_doc(&m.id, "someone else's guess", &change),
            Err(SetDocError::NotCreator)
        ));
        assert_eq!(store.get(&m.id).expect("meeting").claim, m.claim);
        // A store whose directory became unwritable: the change is refused and not applied.
        let used = Change::Used {
            counter: "k/i".into(),
            joins: 1,
        };
        store.fail_next = true;
        assert!(matches!(
            store.commit(&m.id, &used),
            Err(SetDocError::Io(_))
        ));
        assert_eq!(store.get(&m.id), Some(m.clone()));
        drop(store);
        let store = MeetingStore::open(&dir).expect("reopen");
        assert_eq!(store.get(&m.id), Some(m.clone()), "nor on disk");
        assert!(!secret.is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_change_is_one_record_replayed_on_open_and_folded_into_the_meeting() {
        let dir = std::env::temp_dir().join(format!("veche-meet-events-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = MeetingStore::open(&dir).expect("open");
        let (m, _) = store.create("Lesson", false).expect("create");
        let used = |joins| Change::Used {
            counter: "k/i".into(),
            joins,
        };
        let before = store.disk_bytes();
        for joins in 1..=10 {
            store.commit(&m.id, &used(joins)).expect("commit");
        }
        assert_eq!(store.pending_changes(&m.id), 10, "one record per change");
        let after_ten = store.get(&m.id).expect("meeting");
        assert_ne!(after_ten.rules, m.rules, "the changes were applied");
        drop(store);
        let mut store = MeetingStore::open(&dir).expect("reopen");
        assert_eq!(store.get(&m.id), Some(after_ten), "replayed in order");
        assert_eq!(store.pending_changes(&m.id), 10);
        for joins in 11..=FOLD_AFTER as u32 + 5 {
            store.commit(&m.id, &used(joins)).expect("commit");
        }
        assert_eq!(
            store.pending_changes(&m.id),
            5,
            "folded at {FOLD_AFTER}, then 5 more"
        );
        let last = store.get(&m.id).expect("meeting");
        drop(store);
        let store = MeetingStore::open(&dir).expect("reopen");
        assert_eq!(store.get(&m.id), Some(last));
        println!("{before} bytes before, {} after", store.disk_bytes());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_deleted_meeting_and_its_changes_are_gone_for_good_and_a_failed_delete_keeps_it() {
        let dir = std::env::temp_dir().join(format!("veche-meet-delete-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = MeetingStore::open(&dir).expect("open");
        let (gone, _) = store.create("Choir", false).expect("create");
        let (kept, _) = store.create("Chess", false).expect("create");
        for id in [&gone.id, &kept.id] {
            let used = Change::Used {
                counter: "k/i".into(),
                joins: 1,
            };
            store.commit(id, &used).expect("change");
        }
        store.fail_next = true;
        assert!(store.delete(&gone.id).is_err());
        assert!(store.get(&gone.id).is_some(), "a failed delete keeps it");
        assert!(store.delete(&gone.id).expect("delete"));
        assert!(
            !store.delete(&gone.id).expect("again"),
            "nothing left to delete"
        );
        assert_eq!(store.pending_changes(&gone.id), 0);
        drop(store);
        let store = MeetingStore::open(&dir).expect("reopen");
        assert!(store.get(&gone.id).is_none(), "deleted on disk");
        let kept_now = store.get(&kept.id).expect("the other meeting");
        assert_eq!(store.pending_changes(&kept.id), 1, "{kept_now:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn attendance_survives_reopening_goes_with_its_meeting_and_skips_unknown_ones() {
        use crate::attendance::Record;
        let dir = std::env::temp_dir().join(format!("veche-meet-att-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = MeetingStore::open(&dir).expect("open");
        let (class, _) = store.create("Class", false).expect("create");
        let (other, _) = store.create("Other", false).expect("create");
        let came = |p: u64, at_ms: u64| Record::Arrived {
            participant: p,
            at_ms,
            name: format!("p{p}"),
            key: None,
            node: "n".into(),
            role: None,
        };
        let batch = vec![
            (class.id.clone(), came(1, 10)),
            ("zzz-zzz-zzz".to_owned(), came(2, 11)),
            (other.id.clone(), came(3, 12)),
            (
                class.id.clone(),
                Record::Departed {
                    participant: 1,
                    at_ms: 20,
                },
            ),
        ];
        assert_eq!(store.record_attendance(&batch).expect("write"), 3);
        store.fail_next = true;
        assert!(store
            .record_attendance(&[(class.id.clone(), came(4, 30))])
            .is_err());
        drop(store);
        // Reopened (as after a kill -9: each batch was committed), later records follow on.
        let mut store = MeetingStore::open(&dir).expect("reopen");
        store
            .record_attendance(&[(class.id.clone(), came(5, 40))])
            .expect("write");
        let got = store.attendance(&class.id).expect("read");
        assert_eq!(
            got,
            [
                came(1, 10),
                Record::Departed {
                    participant: 1,
                    at_ms: 20
                },
                came(5, 40)
            ],
            "in order, the failed write left nothing"
        );
        assert!(store.delete(&class.id).expect("delete"));
        assert!(store.attendance(&class.id).expect("read").is_empty());
        assert_eq!(store.attendance(&other.id).expect("read"), [came(3, 12)]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn ten_thousand_meetings_created_and_ended_leave_the_store_small_again() {
        let dir = std::env::temp_dir().join(format!("veche-meet-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = MeetingStore::open(&dir).expect("open");
        let empty = store.disk_bytes();
        let made: Vec<(String, String)> = (0..MAX_MEETINGS)
            .map(|i| {
                let (m, secret) = store.create(&format!("Lesson {i}"), false).expect("create");
                (m.id, secret)
            })
            .collect();
        let ids: Vec<String> = made.iter().map(|(id, _)| id.clone()).collect();
        assert!(matches!(
            store.create("one too many", false),
            Err(CreateMeetingError::TooMany)
        ));
        let full = store.disk_bytes();
        let end = |n: usize| Change::Acted {
            kind: veche_meeting::veche_trust::ActionKind::End,
            target: veche_meeting::veche_trust::PublicKey([7; 32]),
            at_ms: 1,
            token: format!("end-{n}"),
        };
        // Half ended now; the other half signed by their creators and kept.
        for (n, id) in ids.iter().enumerate().take(MAX_MEETINGS / 2) {
            store.commit(id, &end(n)).expect("end");
        }
        for (id, secret) in made.iter().skip(MAX_MEETINGS / 2) {
            store
                .set_doc(id, secret, &Change::Doc("signed".into()))
                .expect("claimed");
        }
        let retention = 30 * 86_400_000;
        assert_eq!(
            store.sweep(now_ms(), retention).expect("sweep"),
            0,
            "kept while retained"
        );
        let later = now_ms() + retention + 1;
        assert_eq!(
            store.sweep(later, retention).expect("sweep"),
            MAX_MEETINGS / 2
        );
        for (n, id) in ids.iter().enumerate().skip(MAX_MEETINGS / 2) {
            store.commit(id, &end(n)).expect("end");
        }
        let later = now_ms() + retention + 1;
        assert_eq!(
            store.sweep(later, retention).expect("sweep"),
            MAX_MEETINGS / 2
        );
        let small = store.disk_bytes();
        println!("store: {empty} bytes empty, {full} with {MAX_MEETINGS} meetings, {small} after");
        assert!(small * 10 < full, "{small} bytes after, {full} full");
        drop(store);
        let again = MeetingStore::open(&dir).expect("reopen");
        assert!(again.is_empty());
        let mut again = again;
        again.create("After the sweep", false).expect("room again");
        std::fs::remove_dir_all(&dir).ok();
    }
}
