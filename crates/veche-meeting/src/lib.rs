//! The rules of one meeting: who is in it, in which role, and what they may do.
//!
//! One [`Governance`] per meeting owns everything these decisions need: the host's signed
//! document, the host's revocations, removals, lock and end, the waiting room's decisions,
//! the moderators granted, and how often each limited invite was used. Every path that
//! carries authority asks it (the browser's socket, the HTTP API, the node protocol), and
//! nothing else decides:
//!
//! - [`Governance::admit`]: a person joining through this node (their key's proof, invite,
//!   policy, removals, lock, end, waiting room);
//! - [`Governance::admit_remote`]: a person another node says it carries, with the proof
//!   they made for that node: nodes take part in a meeting only on behalf of people who were
//!   really let in;
//! - [`Governance::check_action`], [`Governance::check_grant`],
//!   [`Governance::check_revocation`]: moderation, making moderators, withdrawing invites,
//!   with withdrawn invites and removed keys consulted at every level of an authority chain,
//!   at the checking node's own time;
//! - [`Governance::check_attendance`]: who may have the record of who was in the meeting
//!   (the host); [`Governance::role_by_presence`]: the role each person is recorded in;
//! - [`Governance::check_doc`], [`Governance::check_history`]: learning a meeting from
//!   another node: the first signed document for an id stands, a link's pinned host key is
//!   enforced, and what comes with it is checked against the stored document.
//!
//! Sans-IO: times come in as milliseconds since the Unix epoch, and a decision that must be
//! durable returns a [`Change`]. The caller commits the change to disk and only then
//! [`Governance::apply`]s it, so what was refused, or could not be stored, leaves no trace.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use veche_trust::{
    check_action_with, check_admission, check_authority, check_invite_with, check_meeting,
    check_own_action, check_revocation, decode_key, decode_token, encode_key, Action, ActionKind,
    Invite, MeetingDoc, Policy, PublicKey, Revocation, Role, Signed, TrustError,
};

pub use veche_trust;

/// Most keys removed from one meeting, revocations and counted invites kept (the oldest
/// go first).
pub const MAX_ENTRIES: usize = 10_000;
/// Most signed actions kept per meeting (the oldest go first).
pub const MAX_ACTIONS: usize = 1024;
/// Most moderators granted in one meeting.
pub const MAX_MODERATORS: usize = 500;
/// Most people who put themselves in a breakout room (where the host lets them choose):
/// past it, only the host and moderators place people, so a flood of made-up keys cannot
/// crowd out their decisions.
pub const MAX_SELF_ASSIGNED: usize = 1000;

/// A person asking to be in the meeting through node `node`: their key, the node's
/// challenge and their signature of it, and the invite they came with.
#[derive(Debug, Clone, Copy)]
pub struct Person<'a> {
    /// The node the person joins through (its id is in what they signed).
    pub node: &'a str,
    /// Their key, base64url.
    pub key: &'a str,
    /// The challenge that node handed them.
    pub nonce: &'a str,
    /// Their key's signature of it, base64url.
    pub sig: &'a str,
    /// The invite token from their link, if any.
    pub invite: Option<&'a str>,
}

/// What a person travels with to the meeting's other nodes: the proof they made for the
/// node that carries them, their invite, and (with a waiting room) the signed decision that
/// let them in. Every node checks it before it shows the person or carries their media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presence {
    /// Their key, base64url.
    pub key: String,
    /// The challenge the carrying node handed them.
    pub nonce: String,
    /// Their signature of it (node, meeting, nonce), base64url.
    pub sig: String,
    /// Their invite token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
    /// The host's or a moderator's signed `admit`, in a meeting with a waiting room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admit: Option<String>,
}

impl Presence {
    /// The person this presence proves, as joining through `node` (the node it was made for).
    pub fn person<'a>(&'a self, node: &'a str) -> Person<'a> {
        Person {
            node,
            key: &self.key,
            nonce: &self.nonce,
            sig: &self.sig,
            invite: self.invite.as_deref(),
        }
    }
}

/// A person let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// Their key (proven).
    pub key: PublicKey,
    /// Their role in this meeting (and in no other).
    pub role: Role,
    /// They wait in the waiting room until the host or a moderator decides.
    pub wait: bool,
    /// To commit before the join is answered (a limited invite's use).
    pub change: Option<Change>,
}

/// Why a person is not let in. Each has plain words for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinRefused {
    /// Their key's proof is malformed or forged.
    #[error("your key's proof was refused: {0}")]
    BadProof(TrustError),
    /// The host or a moderator removed them.
    #[error("the host removed you from this meeting")]
    Removed,
    /// The meeting was ended for everyone.
    #[error("this meeting has ended")]
    Ended,
    /// Locked: nobody new but the host and moderators.
    #[error("this meeting is locked: nobody new can join")]
    Locked,
    /// The waiting room turned them away.
    #[error("the host did not let you in")]
    Denied,
    /// A remote person in a meeting with a waiting room, with no signed decision letting
    /// them in.
    #[error("nobody let this person in from the waiting room")]
    NotLetIn,
    /// A remote person with a limited invite whose use this node (the meeting's home,
    /// which counts the uses) never counted.
    #[error("this person's invite has a use limit, and its use was not counted here")]
    UseNotCounted,
    /// The meeting's policy or their invite refuses them.
    #[error("{0}")]
    Policy(TrustError),
}

/// Why a moderation action, a grant, a revocation or a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The meeting has no signed document, so nobody has authority in it.
    #[error("this meeting has no host: nobody can moderate it")]
    NoHost,
    /// The token does not check out (signature, meeting, time, authority).
    #[error("{0}")]
    Trust(#[from] TrustError),
    /// The signer's authority was withdrawn (an invite of its chain revoked).
    #[error("this moderator's invite was withdrawn by the host")]
    Withdrawn,
    /// The signer (or a signer of its chain) was removed from the meeting.
    #[error("a removed person has no authority in this meeting")]
    SignerRemoved,
    /// Not an invite that makes a moderator of a named person.
    #[error("{0}")]
    NotAGrant(&'static str),
    /// Another document for this meeting is known already.
    #[error("this meeting already has another host's document")]
    Conflict,
    /// The link names another host.
    #[error("this meeting is not signed by the host the link names")]
    WrongHost,
    /// The document is for another meeting.
    #[error("the document is for another meeting")]
    WrongMeeting,
    /// Past the limits of one meeting.
    #[error("this meeting keeps no more of these")]
    Full,
    /// Only the host's own key may delete a meeting (an end signed by it, not a
    /// moderator's) or have its attendance.
    #[error("only the meeting's host can do this, with the host's own key")]
    NotTheHost,
    /// Handed over as the rooms' or spotlight's state, but another kind of action.
    #[error("not a breakout-room or spotlight decision")]
    NotState,
}

/// A checked moderation action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedAction {
    /// The action.
    pub action: Signed<Action>,
    /// To commit before it is carried out (removals, locks, ends, lobby decisions).
    pub change: Option<Change>,
}

/// A durable change of a meeting's governance, decided by a check; the caller writes it
/// and then applies it. Serialized as the store's event record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// The host's signed document.
    Doc(String),
    /// A limited invite admitted one more person: `signer key/invite id` → joins here.
    /// (Stores before uses were counted per person; replayed as a count.)
    Used {
        /// The invite's counter.
        counter: String,
        /// Joins counted now.
        joins: u32,
    },
    /// A limited invite admitted one more person, `key` (who then rejoins with it freely).
    UsedBy {
        /// The invite's counter (`signer key/invite id`).
        counter: String,
        /// The person's key.
        key: PublicKey,
    },
    /// The host withdrew an invite.
    Revoked {
        /// The invite id.
        invite: String,
        /// The signed revocation.
        token: String,
    },
    /// A durable moderation action (remove, lock, unlock, end, admit, deny).
    Acted {
        /// What.
        kind: ActionKind,
        /// Whom.
        target: PublicKey,
        /// When it was signed (a lock or unlock older than the last one applied is not).
        at_ms: u64,
        /// The signed action.
        token: String,
    },
    /// Someone was made a moderator.
    Granted {
        /// Their key.
        key: PublicKey,
        /// Their moderator invite.
        token: String,
    },
    /// What came with a meeting learned from another node, each piece checked.
    History(Vec<Change>),
}

impl Change {
    /// Whether applying this ends the meeting (an end, or a history carrying one).
    pub fn ends(&self) -> bool {
        match self {
            Change::Acted { kind, .. } => *kind == ActionKind::End,
            Change::History(changes) => changes.iter().any(Change::ends),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Doc {
    signed: Signed<MeetingDoc>,
    token: String,
}

/// The governance of one meeting: its rules and the state they need. Serialized with the
/// meeting (its tokens as they were signed; each was checked before it was stored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Stored", into = "Stored")]
pub struct Governance {
    doc: Option<Doc>,
    revocations: Vec<String>,
    revoked: HashSet<String>,
    removed: Vec<PublicKey>,
    actions: Vec<String>,
    /// Joins counted per limited invite by stores from before uses were per person.
    uses: BTreeMap<String, u32>,
    /// Who used each limited invite: a person rejoining with it uses nothing more.
    used_by: BTreeMap<String, BTreeSet<PublicKey>>,
    lobby: BTreeMap<PublicKey, bool>,
    /// The signed `admit` behind each key let in (a remote person's proof carries it).
    admits: BTreeMap<PublicKey, String>,
    moderators: BTreeMap<PublicKey, (Signed<Invite>, String)>,
    locked: bool,
    /// When the lock state last changed (the signed time of that lock or unlock).
    lock_at: u64,
    ended: bool,
    /// Breakout rooms open: how many, and until when; none: closed.
    rooms: Option<(u8, u64)>,
    /// With the rooms open, people may choose their own.
    rooms_choose: bool,
    /// When the rooms last opened or closed (the signed time: the newest decides).
    rooms_at: u64,
    /// Each person's breakout room and when they were put there (the newest decides).
    assigned: BTreeMap<PublicKey, (u8, u64)>,
    /// Whose camera is on everyone's stage, if anyone's.
    spotlight: Option<PublicKey>,
    /// When the spotlight last changed (the signed time: the newest decides).
    spotlight_at: u64,
    /// The signed decisions that make the rooms and the spotlight what they are now (the
    /// opening in force, each person's latest room, the spotlight), for a node that learns
    /// the meeting later ([`Governance::state_tokens`]).
    rooms_token: Option<String>,
    assign_tokens: BTreeMap<PublicKey, String>,
    spotlight_token: Option<String>,
}

/// Breakout rooms open now ([`Governance::rooms`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rooms {
    /// How many (numbered from 1).
    pub count: u8,
    /// When everyone returns to the main room, ms since the epoch.
    pub until_ms: u64,
    /// People may choose their own room.
    pub choose: bool,
    /// Who is in which room; anyone not here is in the main room (0).
    pub of: BTreeMap<PublicKey, u8>,
}

/// On disk: the tokens as they were signed (field names as the store always had them).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    doc: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    removed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    revocations: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    actions: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    uses: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    used_by: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    lobby: BTreeMap<String, bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    admits: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    moderators: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    locked: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    lock_at: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    ended: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rooms: Option<(u8, u64)>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    rooms_choose: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    rooms_at: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    assigned: BTreeMap<String, (u8, u64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spotlight: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    spotlight_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rooms_token: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    assign_tokens: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spotlight_token: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TryFrom<Stored> for Governance {
    type Error = String;

    fn try_from(s: Stored) -> Result<Self, String> {
        let bad = |what: &str, e: TrustError| format!("a stored {what} does not decode: {e}");
        let doc = s
            .doc
            .map(|token| {
                decode_token::<Signed<MeetingDoc>>(&token)
                    .map(|signed| Doc { signed, token })
                    .map_err(|e| bad("document", e))
            })
            .transpose()?;
        let mut revoked = HashSet::new();
        for t in &s.revocations {
            let r: Signed<Revocation> = decode_token(t).map_err(|e| bad("revocation", e))?;
            revoked.insert(r.body.invite);
        }
        let key = |k: &str| decode_key(k).map_err(|e| bad("key", e));
        let mut moderators = BTreeMap::new();
        for (k, t) in s.moderators {
            let invite: Signed<Invite> = decode_token(&t).map_err(|e| bad("grant", e))?;
            moderators.insert(key(&k)?, (invite, t));
        }
        Ok(Governance {
            doc,
            revocations: s.revocations,
            revoked,
            removed: s.removed.iter().map(|k| key(k)).collect::<Result<_, _>>()?,
            actions: s.actions,
            uses: s.uses,
            used_by: s
                .used_by
                .iter()
                .map(|(c, keys)| {
                    Ok((
                        c.clone(),
                        keys.iter().map(|k| key(k)).collect::<Result<_, _>>()?,
                    ))
                })
                .collect::<Result<_, String>>()?,
            lobby: s
                .lobby
                .iter()
                .map(|(k, v)| Ok((key(k)?, *v)))
                .collect::<Result<_, String>>()?,
            admits: s
                .admits
                .into_iter()
                .map(|(k, v)| Ok((key(&k)?, v)))
                .collect::<Result<_, String>>()?,
            moderators,
            locked: s.locked,
            lock_at: s.lock_at,
            ended: s.ended,
            rooms: s.rooms,
            rooms_choose: s.rooms_choose,
            rooms_at: s.rooms_at,
            assigned: s
                .assigned
                .iter()
                .map(|(k, v)| Ok((key(k)?, *v)))
                .collect::<Result<_, String>>()?,
            spotlight: s.spotlight.as_deref().map(key).transpose()?,
            spotlight_at: s.spotlight_at,
            rooms_token: s.rooms_token,
            assign_tokens: s
                .assign_tokens
                .into_iter()
                .map(|(k, t)| Ok((key(&k)?, t)))
                .collect::<Result<_, String>>()?,
            spotlight_token: s.spotlight_token,
        })
    }
}

impl From<Governance> for Stored {
    fn from(g: Governance) -> Self {
        Stored {
            doc: g.doc.map(|d| d.token),
            removed: g.removed.iter().map(encode_key).collect(),
            revocations: g.revocations,
            actions: g.actions,
            uses: g.uses,
            used_by: g
                .used_by
                .iter()
                .map(|(c, keys)| (c.clone(), keys.iter().map(encode_key).collect()))
                .collect(),
            lobby: g.lobby.iter().map(|(k, v)| (encode_key(k), *v)).collect(),
            admits: g
                .admits
                .iter()
                .map(|(k, v)| (encode_key(k), v.clone()))
                .collect(),
            moderators: g
                .moderators
                .into_iter()
                .map(|(k, (_, t))| (encode_key(&k), t))
                .collect(),
            locked: g.locked,
            lock_at: g.lock_at,
            ended: g.ended,
            rooms: g.rooms,
            rooms_choose: g.rooms_choose,
            rooms_at: g.rooms_at,
            assigned: g
                .assigned
                .iter()
                .map(|(k, v)| (encode_key(k), *v))
                .collect(),
            spotlight: g.spotlight.as_ref().map(encode_key),
            spotlight_at: g.spotlight_at,
            rooms_token: g.rooms_token,
            assign_tokens: g
                .assign_tokens
                .into_iter()
                .map(|(k, t)| (encode_key(&k), t))
                .collect(),
            spotlight_token: g.spotlight_token,
        }
    }
}

/// What anyone may learn of a meeting: that it exists, its title and how one gets in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outline {
    /// Signed by a host.
    pub signed: bool,
    /// The host key's pin (links carry it: [`PublicKey::pin`]).
    pub host: Option<String>,
    /// An invite (or a listed key) is needed.
    pub invite_only: bool,
    /// Newcomers wait to be let in.
    pub waiting_room: bool,
    /// Ended for everyone.
    pub ended: bool,
}

fn push_bounded(list: &mut Vec<String>, token: &str, max: usize) {
    if list.iter().any(|t| t == token) {
        return;
    }
    if list.len() >= max {
        list.remove(0);
    }
    list.push(token.to_owned());
}

impl Governance {
    /// The host's signed document, if the host signed the meeting.
    pub fn doc(&self) -> Option<&Signed<MeetingDoc>> {
        self.doc.as_ref().map(|d| &d.signed)
    }

    /// The document's token, as the host signed it.
    pub fn doc_token(&self) -> Option<&str> {
        self.doc.as_ref().map(|d| d.token.as_str())
    }

    /// The host's key.
    pub fn host(&self) -> Option<PublicKey> {
        self.doc().map(|d| d.body.host)
    }

    /// Whether the meeting was ended for everyone.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Whether the meeting is locked.
    pub fn locked(&self) -> bool {
        self.locked
    }

    /// The breakout rooms open at `now_ms` and who is in which, as the newest signed
    /// decisions have it; none when closed or past their time (everyone is back in the
    /// main room). Every node decides the same from the same actions, on its own clock.
    pub fn rooms(&self, now_ms: u64) -> Option<Rooms> {
        let (count, until_ms) = self.rooms.filter(|(_, until)| now_ms < *until)?;
        let of = self
            .assigned
            .iter()
            .filter(|(_, (room, _))| (1..=count).contains(room))
            .map(|(k, (room, _))| (*k, *room))
            .collect();
        Some(Rooms {
            count,
            until_ms,
            choose: self.rooms_choose,
            of,
        })
    }

    /// Whose camera the host or a moderator put on everyone's stage, as the newest signed
    /// spotlight (or its end) has it.
    pub fn spotlight(&self) -> Option<PublicKey> {
        self.spotlight
    }

    /// Whether the host withdrew invite `id`.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked.contains(id)
    }

    /// Whether `key` was removed.
    pub fn is_removed(&self, key: &PublicKey) -> bool {
        self.removed.contains(key)
    }

    /// What a stranger may learn.
    pub fn outline(&self) -> Outline {
        let doc = self.doc();
        Outline {
            signed: doc.is_some(),
            host: doc.map(|d| d.body.host.pin()),
            invite_only: doc.is_some_and(|d| !matches!(d.body.policy, Policy::Anyone)),
            waiting_room: doc.is_some_and(|d| d.body.lobby),
            ended: self.ended,
        }
    }

    /// The host's revocations and the durable actions, to hand to a node that has shown an
    /// admitted person (newest that fit `bytes` per kind, oldest first).
    pub fn history(&self, bytes: usize) -> (Vec<String>, Vec<String>) {
        (
            newest_within(&self.revocations, MAX_ENTRIES, bytes),
            newest_within(&self.actions, MAX_ACTIONS, bytes),
        )
    }

    /// The signed decisions that make the breakout rooms and the spotlight what they are
    /// now (the opening in force first, then the spotlight, then each person's latest
    /// room), within `bytes`: a node that learns the meeting later checks each and ends up
    /// where this one is ([`Governance::check_history`]).
    pub fn state_tokens(&self, bytes: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut total = 0;
        // Moves only while rooms are open (closing cleared them).
        let assigns = self.assign_tokens.values();
        for t in self
            .rooms_token
            .iter()
            .chain(self.spotlight_token.iter())
            .chain(assigns)
        {
            if total + t.len() > bytes {
                break;
            }
            total += t.len();
            out.push(t.clone());
        }
        out
    }

    /// The signed `admit` that let `key` in from the waiting room, if any.
    pub fn admit_of(&self, key: &PublicKey) -> Option<&str> {
        self.admits.get(key).map(String::as_str)
    }

    /// Refuses withdrawn invites and removed signers, at every level of a chain.
    fn chain_check(&self) -> impl FnMut(&Signed<Invite>) -> Result<(), TrustError> + '_ {
        |i: &Signed<Invite>| {
            if self.revoked.contains(&i.body.id) {
                Err(TrustError::Revoked)
            } else if self.removed.contains(&i.key) {
                Err(TrustError::NotDelegated)
            } else {
                Ok(())
            }
        }
    }

    /// Check a person joining through this node (`person.node`) at `now_ms`. The caller
    /// hands each socket one fresh nonce; the role is decided here, for this meeting, on
    /// every join.
    pub fn admit(
        &self,
        meeting: &str,
        person: &Person<'_>,
        now_ms: u64,
    ) -> Result<Admitted, JoinRefused> {
        let (key, invite) = self.proof(meeting, person)?;
        let role = self.role_of(&key, invite.as_ref(), now_ms)?;
        if self.locked && role > Role::Moderator {
            return Err(JoinRefused::Locked);
        }
        let lobby = self.doc().is_some_and(|d| d.body.lobby) && role > Role::Moderator;
        let wait = match (lobby, self.lobby.get(&key)) {
            (false, _) | (true, Some(true)) => false,
            (true, Some(false)) => return Err(JoinRefused::Denied),
            (true, None) => true,
        };
        let change = self.use_of(&key, invite.as_ref(), role)?;
        Ok(Admitted {
            key,
            role,
            wait,
            change,
        })
    }

    /// Whether someone let in from the waiting room (admitted earlier in `role`) may still
    /// enter now: not removed, not ended, not locked out, not turned away since.
    pub fn still_admits(&self, key: &PublicKey, role: Role) -> Result<(), JoinRefused> {
        self.still_in(key)?;
        if self.locked && role > Role::Moderator {
            return Err(JoinRefused::Locked);
        }
        Ok(())
    }

    /// Whether someone already in the meeting may stay: not removed, not turned away from
    /// its waiting room, and the meeting not ended (a lock keeps newcomers out, not those
    /// in; without a waiting room a `deny` decides nothing, as at a join).
    pub fn still_in(&self, key: &PublicKey) -> Result<(), JoinRefused> {
        if self.ended {
            return Err(JoinRefused::Ended);
        }
        if self.removed.contains(key) {
            return Err(JoinRefused::Removed);
        }
        let waiting_room = self.doc().is_some_and(|d| d.body.lobby);
        if waiting_room && self.lobby.get(key) == Some(&false) {
            return Err(JoinRefused::Denied);
        }
        Ok(())
    }

    /// The use a join of `key` with `invite` as `role` makes of a limited invite: `None` for
    /// an unlimited one, the host, or a person who used it already (rejoining is free).
    fn use_of(
        &self,
        key: &PublicKey,
        invite: Option<&Signed<Invite>>,
        role: Role,
    ) -> Result<Option<Change>, JoinRefused> {
        let Some(i) = invite.filter(|i| i.body.max_uses.is_some() && role != Role::Host) else {
            return Ok(None);
        };
        let counter = format!("{}/{}", encode_key(&i.key), i.body.id);
        let by = self.used_by.get(&counter);
        if by.is_some_and(|b| b.contains(key)) {
            return Ok(None);
        }
        let used =
            self.uses.get(&counter).copied().unwrap_or(0) as usize + by.map_or(0, BTreeSet::len);
        let full = i.body.max_uses.is_some_and(|max| used >= max as usize);
        // Bounded: at most MAX_ENTRIES invites tracked, and people per invite.
        let no_room = used >= MAX_ENTRIES || (by.is_none() && self.used_by.len() >= MAX_ENTRIES);
        if full || no_room {
            return Err(JoinRefused::Policy(TrustError::UsedUp));
        }
        Ok(Some(Change::UsedBy { counter, key: *key }))
    }

    /// Whether a join of `person` here would use a limited invite (whose uses, in a meeting
    /// learned from another node, its home node counts). False when the join is refused
    /// anyway: [`Governance::admit`] says why.
    pub fn would_use(&self, meeting: &str, person: &Person<'_>, now_ms: u64) -> bool {
        let Ok((key, invite)) = self.proof(meeting, person) else {
            return false;
        };
        let Ok(role) = self.role_of(&key, invite.as_ref(), now_ms) else {
            return false;
        };
        matches!(self.use_of(&key, invite.as_ref(), role), Ok(Some(_)))
    }

    /// At the meeting's home node: count the use of a limited invite by a person node
    /// `carrier` is about to let in (checked as [`Governance::admit_remote`] does). The
    /// change to commit, or `None` if nothing is to count.
    pub fn count_remote_use(
        &self,
        meeting: &str,
        carrier: &str,
        presence: &Presence,
        now_ms: u64,
    ) -> Result<Option<Change>, JoinRefused> {
        let (key, invite, role) = self.check_remote(meeting, carrier, presence, now_ms, false)?;
        self.use_of(&key, invite.as_ref(), role)
    }

    /// Check a person that node `carrier` says it carries, by the proof they made for it.
    /// Policy, invite chain, revocations, removals and end are checked as for a join here;
    /// with a waiting room and `in_meeting`, a signed `admit` for their key must come with
    /// them (without: they may be waiting at their node). The lock is the carrying node's.
    /// With `home` (this node counts the meeting's invite uses), a limited invite must have
    /// been counted for them here ([`Governance::count_remote_use`]).
    pub fn admit_remote(
        &self,
        meeting: &str,
        carrier: &str,
        presence: &Presence,
        now_ms: u64,
        in_meeting: bool,
        home: bool,
    ) -> Result<(PublicKey, Role), JoinRefused> {
        let (key, invite, role) =
            self.check_remote(meeting, carrier, presence, now_ms, in_meeting)?;
        if home
            && self
                .use_of(&key, invite.as_ref(), role)
                .map_or(true, |u| u.is_some())
        {
            return Err(JoinRefused::UseNotCounted);
        }
        Ok((key, role))
    }

    /// [`Governance::admit_remote`] but for the use limit: their key, invite and role.
    fn check_remote(
        &self,
        meeting: &str,
        carrier: &str,
        presence: &Presence,
        now_ms: u64,
        in_meeting: bool,
    ) -> Result<(PublicKey, Option<Signed<Invite>>, Role), JoinRefused> {
        let (key, invite) = self.proof(meeting, &presence.person(carrier))?;
        let role = self.role_of(&key, invite.as_ref(), now_ms)?;
        let lobby = self.doc().is_some_and(|d| d.body.lobby) && role > Role::Moderator;
        if lobby && in_meeting && self.lobby.get(&key) != Some(&true) {
            if self.lobby.get(&key) == Some(&false) {
                return Err(JoinRefused::Denied);
            }
            let token = presence.admit.as_deref().ok_or(JoinRefused::NotLetIn)?;
            let checked = self
                .check_past(meeting, token, now_ms)
                .map_err(|_| JoinRefused::NotLetIn)?;
            let a = &checked.action.body;
            if a.kind != ActionKind::Admit || a.target != key {
                return Err(JoinRefused::NotLetIn);
            }
        }
        Ok((key, invite, role))
    }

    /// The key's proof for this meeting through `person.node`, and the invite decoded.
    fn proof(
        &self,
        meeting: &str,
        person: &Person<'_>,
    ) -> Result<(PublicKey, Option<Signed<Invite>>), JoinRefused> {
        if let Some(d) = self.doc() {
            if d.body.id != meeting {
                return Err(JoinRefused::Policy(TrustError::WrongMeeting));
            }
        }
        let key = veche_trust::verify_challenge(
            person.node,
            meeting,
            person.nonce,
            person.key,
            person.sig,
        )
        .map_err(JoinRefused::BadProof)?;
        let invite = person
            .invite
            .map(decode_token::<Signed<Invite>>)
            .transpose()
            .map_err(JoinRefused::Policy)?;
        Ok((key, invite))
    }

    /// The role `key` holds in this meeting now: removals and the end first, then the host's
    /// document (policy, invite chain with revocations and removed signers).
    fn role_of(
        &self,
        key: &PublicKey,
        invite: Option<&Signed<Invite>>,
        now_ms: u64,
    ) -> Result<Role, JoinRefused> {
        if self.ended {
            return Err(JoinRefused::Ended);
        }
        if self.removed.contains(key) {
            return Err(JoinRefused::Removed);
        }
        let Some(doc) = self.doc() else {
            // Unsigned: anyone with the link, as a speaker; nobody moderates.
            return Ok(Role::Speaker);
        };
        check_admission(&doc.body, key, invite, now_ms, &mut self.chain_check()).map_err(
            |e| match e {
                TrustError::MeetingEnded => JoinRefused::Ended,
                e => JoinRefused::Policy(e),
            },
        )
    }

    /// The role a person holds now by the presence they travel with, made for `carrier`
    /// (the node they joined through): how they take part, for the meeting's attendance.
    /// Whether they may be in was decided at their join ([`Governance::admit`],
    /// [`Governance::admit_remote`]).
    pub fn role_by_presence(
        &self,
        meeting: &str,
        carrier: &str,
        presence: &Presence,
        now_ms: u64,
    ) -> Result<Role, JoinRefused> {
        let (key, invite) = self.proof(meeting, &presence.person(carrier))?;
        self.role_of(&key, invite.as_ref(), now_ms)
    }

    /// Whether the person travelling with `presence` (made for `carrier`) may write to every
    /// breakout room at once now: the host, or a moderator (by their invite, or made one
    /// during the meeting) whose authority still holds.
    pub fn may_address_every_room(
        &self,
        meeting: &str,
        carrier: &str,
        presence: &Presence,
        now_ms: u64,
    ) -> bool {
        let Ok(key) = veche_trust::decode_key(&presence.key) else {
            return false;
        };
        let proven = self.proof(meeting, &presence.person(carrier)).is_ok();
        proven
            && (self.moderators(now_ms).contains(&key)
                || matches!(
                    self.role_by_presence(meeting, carrier, presence, now_ms),
                    Ok(Role::Host | Role::Moderator)
                ))
    }

    /// Whether `key` may have the meeting's attendance (who was in it, when): the host's
    /// own key only. It names people and their times, which is the host's to keep, not a
    /// moderator's.
    pub fn check_attendance(&self, key: &PublicKey) -> Result<(), Refused> {
        match self.host() {
            None => Err(Refused::NoHost),
            Some(host) if host == *key => Ok(()),
            Some(_) => Err(Refused::NotTheHost),
        }
    }

    /// Whether `key` may have the meeting's recordings (list and download them): the host's
    /// own key only, like the attendance. A moderator may start and stop a recording; what
    /// it holds (everyone's faces and voices) is the host's to keep and hand on.
    pub fn check_recordings(&self, key: &PublicKey) -> Result<(), Refused> {
        self.check_attendance(key)
    }

    /// Whether `key` may moderate now, holding `authority` (none: only the host may).
    pub fn may_moderate(
        &self,
        key: &PublicKey,
        authority: Option<&Signed<Invite>>,
        now_ms: u64,
    ) -> bool {
        let Some(doc) = self.doc() else {
            return false;
        };
        !self.removed.contains(key)
            && check_authority(&doc.body, key, authority, now_ms, &mut self.chain_check()).is_ok()
    }

    /// The keys that may let people in now: the host and the moderators granted whose
    /// invites still hold.
    pub fn moderators(&self, now_ms: u64) -> Vec<PublicKey> {
        let Some(host) = self.host() else {
            return Vec::new();
        };
        let mut keys = vec![host];
        keys.extend(
            self.moderators
                .iter()
                .filter(|(k, (invite, _))| self.may_moderate(k, Some(invite), now_ms))
                .map(|(k, _)| *k),
        );
        keys
    }

    /// Check a moderation action at `now_ms`: fresh, by the host or by a moderator whose
    /// whole chain still holds here and now (not withdrawn, not removed).
    pub fn check_action(
        &self,
        meeting: &str,
        token: &str,
        now_ms: u64,
    ) -> Result<CheckedAction, Refused> {
        let (doc, action) = self.action_of(meeting, token)?;
        if self.chooses_own_room(&action, now_ms) {
            check_own_action(&doc.body, &action, now_ms).map_err(refusal)?;
        } else {
            check_action_with(&doc.body, &action, now_ms, &mut self.chain_check())
                .map_err(refusal)?;
        }
        Ok(self.checked(action, token))
    }

    /// Whether `action` is someone putting themselves in a breakout room while the rooms
    /// are open for people to choose (anyone in the meeting may; nobody may move another).
    fn chooses_own_room(&self, action: &Signed<Action>, now_ms: u64) -> bool {
        let ActionKind::Assign { room } = action.body.kind else {
            return false;
        };
        action.key == action.body.target
            && action.body.authority.is_none()
            && (self.assigned.contains_key(&action.key) || self.assigned.len() < MAX_SELF_ASSIGNED)
            && self
                .rooms(now_ms)
                .is_some_and(|r| r.choose && room <= r.count)
    }

    /// Whether a breakout-room action changes nothing any more (applied already).
    fn room_action_known(&self, action: &Action) -> bool {
        match action.kind {
            ActionKind::Assign { room } => {
                self.assigned.get(&action.target) == Some(&(room, action.at_ms))
            }
            ActionKind::OpenRooms {
                rooms, until_ms, ..
            } => self.rooms_at == action.at_ms && self.rooms == Some((rooms, until_ms)),
            ActionKind::CloseRooms => self.rooms.is_none() && self.rooms_at == action.at_ms,
            ActionKind::Spotlight => {
                self.spotlight_at == action.at_ms && self.spotlight == Some(action.target)
            }
            ActionKind::EndSpotlight => {
                self.spotlight.is_none() && self.spotlight_at == action.at_ms
            }
            _ => false,
        }
    }

    /// Check a request to delete the meeting at once: an end signed by the host's own key
    /// (a moderator may end a meeting, but its record is the host's to delete), checked at
    /// `now_ms` like any action. The change is the end, for the other nodes and for a
    /// meeting not yet ended.
    pub fn check_delete(
        &self,
        meeting: &str,
        token: &str,
        now_ms: u64,
    ) -> Result<CheckedAction, Refused> {
        let (doc, action) = self.action_of(meeting, token)?;
        if action.body.kind != ActionKind::End
            || action.key != doc.body.host
            || action.body.authority.is_some()
        {
            return Err(Refused::NotTheHost);
        }
        check_action_with(&doc.body, &action, now_ms, &mut self.chain_check()).map_err(refusal)?;
        Ok(self.checked(action, token))
    }

    /// An action made earlier (history from another node, a remote person's `admit`):
    /// checked as of its own time, which may not be in the future here; but the signer's
    /// authority must hold now too (withdrawals, removals and expiry count whenever they
    /// happened), so no action can be backdated past the end of its authority.
    fn check_past(
        &self,
        meeting: &str,
        token: &str,
        now_ms: u64,
    ) -> Result<CheckedAction, Refused> {
        let (doc, action) = self.action_of(meeting, token)?;
        if action.body.at_ms > now_ms.saturating_add(veche_trust::ACTION_TTL_MS) {
            return Err(Refused::Trust(TrustError::Stale));
        }
        // Someone's own choice of room, while the rooms (opened before it) let them choose.
        if self.chooses_own_room(&action, action.body.at_ms) {
            check_own_action(&doc.body, &action, action.body.at_ms).map_err(refusal)?;
            return Ok(self.checked(action, token));
        }
        check_action_with(
            &doc.body,
            &action,
            action.body.at_ms,
            &mut self.chain_check(),
        )
        .map_err(refusal)?;
        // The signer's authority must still hold now: an invite that has expired since
        // cannot sign actions dated back into its lifetime.
        check_authority(
            &doc.body,
            &action.key,
            action.body.authority.as_deref(),
            now_ms,
            &mut self.chain_check(),
        )
        .map_err(refusal)?;
        Ok(self.checked(action, token))
    }

    /// The document and a decoded action for this meeting, its signer not removed.
    fn action_of(
        &self,
        meeting: &str,
        token: &str,
    ) -> Result<(&Signed<MeetingDoc>, Signed<Action>), Refused> {
        let doc = self.doc().ok_or(Refused::NoHost)?;
        if doc.body.id != meeting {
            return Err(Refused::WrongMeeting);
        }
        let action: Signed<Action> = decode_token(token)?;
        if self.removed.contains(&action.key) {
            return Err(Refused::SignerRemoved);
        }
        Ok((doc, action))
    }

    fn checked(&self, action: Signed<Action>, token: &str) -> CheckedAction {
        let kind = action.body.kind;
        let change = match kind {
            // Carried out as they come (a recording is the node's, not the meeting's record).
            ActionKind::Mute
            | ActionKind::Allow
            | ActionKind::StartRecording
            | ActionKind::StopRecording => None,
            // Seen before (a replay, or the same action passed on twice): nothing new.
            _ if self.actions.iter().any(|t| t == token) => None,
            _ if self.room_action_known(&action.body) => None,
            _ => Some(Change::Acted {
                kind,
                target: action.body.target,
                at_ms: action.body.at_ms,
                token: token.to_owned(),
            }),
        };
        CheckedAction { action, change }
    }

    /// Check a grant: a moderator invite bound to a person's key, made by someone who may
    /// make moderators now, for someone not removed.
    pub fn check_grant(&self, meeting: &str, token: &str, now_ms: u64) -> Result<Change, Refused> {
        let doc = self.doc().ok_or(Refused::NoHost)?;
        if doc.body.id != meeting {
            return Err(Refused::WrongMeeting);
        }
        let invite: Signed<Invite> = decode_token(token)?;
        let role = check_invite_with(&doc.body, &invite, now_ms, &mut self.chain_check())
            .map_err(refusal)?;
        if role != Role::Moderator {
            return Err(Refused::NotAGrant(
                "only a moderator invite makes a moderator",
            ));
        }
        let key = invite.body.invitee.ok_or(Refused::NotAGrant(
            "a moderator invite handed to someone must name their key",
        ))?;
        if self.removed.contains(&key) {
            return Err(Refused::NotAGrant(
                "a removed person cannot be made a moderator",
            ));
        }
        if !self.moderators.contains_key(&key) && self.moderators.len() >= MAX_MODERATORS {
            return Err(Refused::Full);
        }
        Ok(Change::Granted {
            key,
            token: token.to_owned(),
        })
    }

    /// Check the host's revocation of an invite.
    pub fn check_revocation(&self, meeting: &str, token: &str) -> Result<Change, Refused> {
        let doc = self.doc().ok_or(Refused::NoHost)?;
        if doc.body.id != meeting {
            return Err(Refused::WrongMeeting);
        }
        let rev: Signed<Revocation> = decode_token(token)?;
        check_revocation(&doc.body, &rev)?;
        Ok(Change::Revoked {
            invite: rev.body.invite,
            token: token.to_owned(),
        })
    }

    /// Check a document for this meeting: signed by the host it names, for this id, by the
    /// host a link pinned (`pin`: [`PublicKey::pin`] of the host's key), and the same as any document
    /// known already (the first one stands). `None` when it is the stored one already.
    pub fn check_doc(
        &self,
        meeting: &str,
        token: &str,
        pin: Option<&str>,
    ) -> Result<Option<Change>, Refused> {
        let doc: Signed<MeetingDoc> = decode_token(token)?;
        check_meeting(&doc)?;
        if doc.body.id != meeting {
            return Err(Refused::WrongMeeting);
        }
        if pin.is_some_and(|p| p != doc.body.host.pin()) {
            return Err(Refused::WrongHost);
        }
        match self.doc() {
            Some(known) if *known == doc => Ok(None),
            Some(_) => Err(Refused::Conflict),
            None => Ok(Some(Change::Doc(token.to_owned()))),
        }
    }

    /// What another node handed out with the meeting, checked against the document stored
    /// here (never one that came with it): revocations signed by the host, and actions as of
    /// their time with withdrawals and removals counted. What does not check out is left out
    /// (returned with the reason, for the log).
    pub fn check_history(
        &self,
        meeting: &str,
        revocations: &[String],
        actions: &[String],
        state: &[String],
        now_ms: u64,
    ) -> (Change, Vec<Refused>) {
        let mut changes = Vec::new();
        let mut refused = Vec::new();
        // Revocations first: an action by a withdrawn moderator is then refused below.
        let mut scratch = self.clone();
        for t in revocations.iter().take(MAX_ENTRIES) {
            match scratch.check_revocation(meeting, t) {
                Ok(c) => {
                    scratch.apply(&c);
                    changes.push(c);
                }
                Err(e) => refused.push(e),
            }
        }
        for t in actions.iter().rev().take(MAX_ACTIONS).rev() {
            match scratch.check_past(meeting, t, now_ms) {
                Ok(CheckedAction {
                    change: Some(c),
                    action,
                }) if !matches!(action.body.kind, ActionKind::Admit | ActionKind::Deny) => {
                    scratch.apply(&c);
                    changes.push(c);
                }
                Ok(_) => {}
                Err(e) => refused.push(e),
            }
        }
        // Then the rooms and the spotlight as they are now (the opening before the moves).
        for t in state.iter().take(MAX_ENTRIES + 2) {
            match scratch.check_past(meeting, t, now_ms) {
                Ok(CheckedAction {
                    change: Some(c),
                    action,
                }) if matches!(
                    action.body.kind,
                    ActionKind::OpenRooms { .. }
                        | ActionKind::CloseRooms
                        | ActionKind::Assign { .. }
                        | ActionKind::Spotlight
                        | ActionKind::EndSpotlight
                ) =>
                {
                    scratch.apply(&c);
                    changes.push(c);
                }
                Ok(CheckedAction { change: None, .. }) => {}
                Ok(_) => refused.push(Refused::NotState),
                Err(e) => refused.push(e),
            }
        }
        (Change::History(changes), refused)
    }

    /// Apply a change once it is committed (or to a copy, to see what would follow).
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Doc(token) => {
                if self.doc.is_none() {
                    if let Ok(signed) = decode_token(token) {
                        self.doc = Some(Doc {
                            signed,
                            token: token.clone(),
                        });
                    }
                }
            }
            Change::Used { counter, joins } => {
                self.uses.insert(counter.clone(), *joins);
            }
            Change::UsedBy { counter, key } => {
                self.used_by
                    .entry(counter.clone())
                    .or_default()
                    .insert(*key);
            }
            Change::Revoked { invite, token } => {
                push_bounded(&mut self.revocations, token, MAX_ENTRIES);
                self.revoked.insert(invite.clone());
            }
            Change::Acted {
                kind,
                target,
                at_ms,
                token,
            } => {
                match kind {
                    ActionKind::Remove => {
                        if !self.removed.contains(target) {
                            if self.removed.len() >= MAX_ENTRIES {
                                self.removed.remove(0);
                            }
                            self.removed.push(*target);
                        }
                        self.moderators.remove(target);
                        // Nobody removed stays on the stage.
                        // (A spotlight of them signed before the removal stays off.)
                        if self.spotlight == Some(*target) {
                            self.spotlight = None;
                            self.spotlight_token = None;
                            self.spotlight_at = self.spotlight_at.max(*at_ms);
                        }
                    }
                    // The newest lock or unlock decides, whatever order they arrive in.
                    ActionKind::Lock | ActionKind::Unlock if *at_ms < self.lock_at => return,
                    ActionKind::Lock | ActionKind::Unlock => {
                        self.locked = *kind == ActionKind::Lock;
                        self.lock_at = *at_ms;
                    }
                    ActionKind::End => self.ended = true,
                    // The newest opening or closing decides; opening again starts afresh.
                    ActionKind::OpenRooms { .. } | ActionKind::CloseRooms
                        if *at_ms < self.rooms_at =>
                    {
                        return
                    }
                    ActionKind::OpenRooms {
                        rooms,
                        until_ms,
                        choose,
                    } => {
                        self.rooms = Some((*rooms, *until_ms));
                        self.rooms_choose = *choose;
                        self.rooms_at = *at_ms;
                        self.assigned.retain(|_, (_, at)| *at >= *at_ms);
                        let assigned = &self.assigned;
                        self.assign_tokens.retain(|k, _| assigned.contains_key(k));
                        self.rooms_token = Some(token.clone());
                        return;
                    }
                    ActionKind::CloseRooms => {
                        self.rooms = None;
                        self.rooms_choose = false;
                        self.rooms_at = *at_ms;
                        self.assigned.clear();
                        self.assign_tokens.clear();
                        // Handed on too: an older opening from elsewhere decides nothing.
                        self.rooms_token = Some(token.clone());
                        return;
                    }
                    ActionKind::Assign { room } => {
                        // Decided before the rooms last opened or closed: it decides nothing.
                        let newer = *at_ms >= self.rooms_at
                            && self.assigned.get(target).is_none_or(|(_, at)| at <= at_ms);
                        let room_left =
                            self.assigned.len() < MAX_ENTRIES || self.assigned.contains_key(target);
                        if !newer || !room_left {
                            return;
                        }
                        self.assigned.insert(*target, (*room, *at_ms));
                        self.assign_tokens.insert(*target, token.clone());
                        // Room decisions stay out of the history handed to other nodes:
                        // a class's many moves must not push out its removals and ends.
                        return;
                    }
                    ActionKind::Admit | ActionKind::Deny => {
                        if self.lobby.len() >= MAX_ENTRIES && !self.lobby.contains_key(target) {
                            return;
                        }
                        let admit = *kind == ActionKind::Admit;
                        self.lobby.insert(*target, admit);
                        if admit {
                            self.admits.insert(*target, token.clone());
                        } else {
                            self.admits.remove(target);
                        }
                        return;
                    }
                    // The newest spotlight or end decides, whatever order they arrive in. Like
                    // room decisions, it stays out of the history handed to other nodes.
                    ActionKind::Spotlight | ActionKind::EndSpotlight => {
                        if *at_ms >= self.spotlight_at {
                            self.spotlight = (*kind == ActionKind::Spotlight).then_some(*target);
                            // The end is handed on too: an older spotlight decides nothing.
                            self.spotlight_token = Some(token.clone());
                            self.spotlight_at = *at_ms;
                        }
                        return;
                    }
                    ActionKind::Mute
                    | ActionKind::Allow
                    | ActionKind::StartRecording
                    | ActionKind::StopRecording => return,
                }
                push_bounded(&mut self.actions, token, MAX_ACTIONS);
            }
            Change::Granted { key, token } => {
                if let Ok(invite) = decode_token(token) {
                    self.moderators.insert(*key, (invite, token.clone()));
                }
            }
            Change::History(changes) => {
                for c in changes {
                    self.apply(c);
                }
            }
        }
    }
}

/// Withdrawn and removed get their own words.
fn refusal(e: TrustError) -> Refused {
    match e {
        TrustError::Revoked => Refused::Withdrawn,
        e => Refused::Trust(e),
    }
}

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
