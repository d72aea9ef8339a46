//! Who may join a meeting and in which role, checked offline from signatures alone.
//!
//! veche keeps no accounts: a person is an Ed25519 key, a host's word is a signature, and
//! every node can check it without asking anybody. This crate is the rules, sans-IO: no
//! clock (times come in as milliseconds since the Unix epoch), no storage, no randomness
//! (challenge nonces come in from the caller).
//!
//! - A [`MeetingDoc`] is signed by its host key: id, title, access [`Policy`], lobby, times.
//! - An [`Invite`] is a capability signed by the host, or by a moderator the host delegated
//!   to (the moderator's own invite is carried inside, as `parent`, at most [`MAX_DEPTH`]
//!   deep). It names the meeting, a [`Role`], an expiry, optionally a limit on uses and the
//!   one key it is for.
//! - A [`Revocation`] of an invite is signed by the host (only the host: a moderator it
//!   removed must not be able to strike back).
//! - Joining proves the key: the node hands each socket one fresh challenge, the client
//!   signs it with the node's id and the meeting's ([`Keypair::sign_challenge`],
//!   [`verify_challenge`]); [`check_admission`] checks the policy and the invite's chain.
//!   What a meeting decided under these (withdrawals, removals, uses, the waiting room) is
//!   not here: the meeting's governance (`veche-meeting`) keeps it and is the one place a
//!   join is decided.
//!
//! Every signature covers a domain tag and the JSON of what is signed, so a signature made
//! for one kind of document can never be replayed as another. Tokens travel as base64url
//! JSON ([`encode_token`], [`decode_token`]), bounded in size before anything is parsed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Longest invite chain: host → moderator → moderator → invite.
pub const MAX_DEPTH: usize = 3;
/// Largest token accepted, in bytes of text (a chain of 3 fits in well under 4 KiB).
pub const MAX_TOKEN: usize = 8 * 1024;

/// An Ed25519 public key, as base64url text in documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// A short fingerprint to show next to a name (first 8 bytes, base64url).
    pub fn fingerprint(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.0[..8])
    }

    /// What a link pins a meeting's host by: the first 16 bytes, base64url (22 characters;
    /// too long to grind a key that matches).
    pub fn pin(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.0[..16])
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        b64_array(d, "a key is 32 bytes").map(PublicKey)
    }
}

/// Fixed-size bytes from base64url text.
fn b64_array<'de, D: serde::Deserializer<'de>, const N: usize>(
    d: D,
    wrong_length: &'static str,
) -> Result<[u8; N], D::Error> {
    let s = String::deserialize(d)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(s.as_bytes())
        .map_err(serde::de::Error::custom)?;
    bytes
        .try_into()
        .map_err(|_| serde::de::Error::custom(wrong_length))
}

/// A signature, as base64url text in documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sig(pub [u8; 64]);

impl Serialize for Sig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Sig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        b64_array(d, "a signature is 64 bytes").map(Sig)
    }
}

/// A signing key (a person's, a host's, a command-line participant's key file).
pub struct Keypair(SigningKey);

impl Keypair {
    /// From the 32 secret bytes.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Keypair(SigningKey::from_bytes(secret))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Sign `body` as a document of kind `K`.
    pub fn sign<T: Signable>(&self, body: T) -> Signed<T> {
        let sig = self.0.sign(&signing_bytes(&body));
        Signed {
            body,
            key: self.public(),
            sig: Sig(sig.to_bytes()),
            raw: None,
        }
    }

    /// Sign a join challenge that node `node` handed out for `meeting`.
    pub fn sign_challenge(&self, node: &str, meeting: &str, nonce: &str) -> Sig {
        Sig(self
            .0
            .sign(&challenge_bytes(node, meeting, nonce))
            .to_bytes())
    }
}

/// Something that can be signed: its domain tag keeps signatures of different kinds apart.
pub trait Signable: Serialize {
    /// Domain tag, unique per kind and version.
    const DOMAIN: &'static str;
}

fn signing_bytes<T: Signable>(body: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(T::DOMAIN.as_bytes());
    out.push(0);
    // serde_json writes struct fields in declaration order: the same body, the same bytes.
    out.extend_from_slice(&serde_json::to_vec(body).unwrap_or_default());
    out
}

/// The node's id is in what is signed: a proof made for one node is worthless at another
/// (a malicious node cannot relay another node's challenge to its own user).
fn challenge_bytes(node: &str, meeting: &str, nonce: &str) -> Vec<u8> {
    format!("veche/join-challenge/v1\0{node}\0{meeting}\0{nonce}").into_bytes()
}

/// A document and its signature.
///
/// The signature covers the body's bytes as the signer wrote them: a token read here keeps
/// its body's JSON as sent, and that is what is checked (and passed on), so a signer that
/// orders fields differently, or a later version's field, never breaks it silently. (A body
/// changed in memory after reading no longer matches those bytes: it is checked as it is
/// now.)
#[derive(Debug, Clone)]
pub struct Signed<T> {
    /// What is signed.
    pub body: T,
    /// Who signed it.
    pub key: PublicKey,
    /// The signature over the domain tag and the body.
    pub sig: Sig,
    /// The body's JSON as it was read.
    raw: Option<Box<serde_json::value::RawValue>>,
}

impl<T: PartialEq> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body && self.key == other.key && self.sig == other.sig
    }
}

impl<T: Eq> Eq for Signed<T> {}

impl<T> Signed<T> {
    /// A document with a signature that someone claims is its signer's (checked by
    /// [`Signed::verify`], never trusted).
    pub fn from_parts(body: T, key: PublicKey, sig: Sig) -> Self {
        Signed {
            body,
            key,
            sig,
            raw: None,
        }
    }
}

impl<T: DeserializeOwned + PartialEq> Signed<T> {
    /// The body's bytes as read, if they still say what the body says.
    fn raw_body(&self) -> Option<&str> {
        let raw = self.raw.as_deref()?.get();
        (serde_json::from_str::<T>(raw).ok().as_ref() == Some(&self.body)).then_some(raw)
    }
}

impl<T: Signable + DeserializeOwned + PartialEq> Signed<T> {
    /// Whether `key` really signed this body.
    pub fn verify(&self) -> Result<(), TrustError> {
        let key = VerifyingKey::from_bytes(&self.key.0).map_err(|_| TrustError::BadSignature)?;
        let bytes = match self.raw_body() {
            Some(raw) => {
                let mut b = Vec::with_capacity(T::DOMAIN.len() + 1 + raw.len());
                b.extend_from_slice(T::DOMAIN.as_bytes());
                b.push(0);
                b.extend_from_slice(raw.as_bytes());
                b
            }
            None => signing_bytes(&self.body),
        };
        key.verify_strict(&bytes, &Signature::from_bytes(&self.sig.0))
            .map_err(|_| TrustError::BadSignature)
    }
}

#[derive(Serialize)]
struct SignedOut<'a, B: Serialize> {
    body: B,
    key: &'a PublicKey,
    sig: &'a Sig,
}

impl<T: Serialize + DeserializeOwned + PartialEq> Serialize for Signed<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Passed on byte for byte when the body is as it was read.
        match self.raw_body() {
            Some(raw) => match serde_json::value::RawValue::from_string(raw.to_owned()) {
                Ok(r) => SignedOut {
                    body: r,
                    key: &self.key,
                    sig: &self.sig,
                }
                .serialize(s),
                Err(e) => Err(serde::ser::Error::custom(e)),
            },
            None => SignedOut {
                body: &self.body,
                key: &self.key,
                sig: &self.sig,
            }
            .serialize(s),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedIn {
    body: Box<serde_json::value::RawValue>,
    key: PublicKey,
    sig: Sig,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Signed<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = SignedIn::deserialize(d)?;
        let body = serde_json::from_str(w.body.get()).map_err(serde::de::Error::custom)?;
        Ok(Signed {
            body,
            key: w.key,
            sig: w.sig,
            raw: Some(w.body),
        })
    }
}

/// Who may join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Policy {
    /// Anyone with the link (as a speaker), or with an invite (in its role). (An invite
    /// with a lesser role does not bind here: its holder can join without it.)
    Anyone,
    /// Only with a valid invite.
    InviteOnly,
    /// Only these keys: as speakers, or in the role of a valid invite they present.
    Keys {
        /// The allowed keys.
        keys: Vec<PublicKey>,
    },
}

/// A meeting as its host declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeetingDoc {
    /// The meeting id.
    pub id: String,
    /// Title.
    pub title: String,
    /// The host's key (must be the signer).
    pub host: PublicKey,
    /// Who may join.
    pub policy: Policy,
    /// Newcomers wait in a lobby until a moderator admits them.
    pub lobby: bool,
    /// Created, ms since the epoch.
    pub created_ms: u64,
    /// Ends, ms since the epoch (none: open-ended).
    pub ends_ms: Option<u64>,
}

impl Signable for MeetingDoc {
    const DOMAIN: &'static str = "veche/meeting/v1";
}

/// What an invite lets its holder do, most powerful first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The host: everything.
    Host,
    /// Admit, mute, remove, lock, end; issue invites (not above moderator).
    Moderator,
    /// Send audio, video, screen and chat.
    Speaker,
    /// Receive only.
    Listener,
}

/// A capability to join a meeting in a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    /// The meeting.
    pub meeting: String,
    /// Unique id (revocations and use counts name it).
    pub id: String,
    /// The role it grants.
    pub role: Role,
    /// Not valid from this time, ms since the epoch.
    pub expires_ms: u64,
    /// How many joins it allows (none: no limit).
    pub max_uses: Option<u32>,
    /// Only this key may use it.
    pub invitee: Option<PublicKey>,
    /// When the signer is not the host: the signer's own moderator invite, bound to the
    /// signer's key.
    pub parent: Option<Box<Signed<Invite>>>,
}

impl Signable for Invite {
    const DOMAIN: &'static str = "veche/invite/v1";
}

/// The end of an invite, before its expiry. Signed by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// The meeting.
    pub meeting: String,
    /// The invite revoked (every invite of this meeting with this id, and every invite
    /// signed under it).
    pub invite: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

impl Signable for Revocation {
    const DOMAIN: &'static str = "veche/revocation/v1";
}

/// What a moderation action does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Stop forwarding the target's microphone until a moderator allows it again.
    Mute,
    /// Lift a mute: the target may unmute themselves.
    Allow,
    /// Put the target out of the meeting; their key cannot join it again.
    Remove,
    /// Let the target in from the lobby.
    Admit,
    /// Turn the target away from the lobby.
    Deny,
    /// Let nobody new in (but the host and moderators); `target` is the signer.
    Lock,
    /// Open the meeting again.
    Unlock,
    /// End the meeting for everyone, for good; `target` is the signer.
    End,
    /// Open breakout rooms: `rooms` of them (1 to [`MAX_ROOMS`]) until `until_ms`, when
    /// everyone is back in the main room; `target` is the signer. Opening again starts
    /// afresh (everyone in the main room until assigned).
    OpenRooms {
        /// How many rooms.
        rooms: u8,
        /// When they close, ms since the epoch (at most [`MAX_ROOMS_MS`] after signing).
        until_ms: u64,
        /// People may choose their own room (each signs an `assign` of themselves).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        choose: bool,
    },
    /// Put the target in breakout room `room` (1 to the rooms open; 0: the main room). The
    /// host and moderators move themselves this way to visit a room.
    Assign {
        /// The room.
        room: u8,
    },
    /// Close the breakout rooms: everyone back in the main room; `target` is the signer.
    CloseRooms,
    /// Start recording the meeting, at the node the signer sends it to; `target` is the
    /// signer.
    StartRecording,
    /// Stop recording the meeting, at every node recording it; `target` is the signer.
    StopRecording,
    /// Put the target's camera on everyone's stage (each person may still pin another for
    /// themselves); the newest spotlight or its end decides. The host may be spotlighted by
    /// a moderator: it takes nothing from them.
    Spotlight,
    /// Take the spotlight off; `target` is the signer.
    EndSpotlight,
}

/// Most breakout rooms open at once.
pub const MAX_ROOMS: u8 = 50;
/// Longest time breakout rooms stay open: 12 hours.
pub const MAX_ROOMS_MS: u64 = 12 * 3_600_000;

/// A moderation action, signed by the host or by a moderator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The meeting.
    pub meeting: String,
    /// What.
    pub kind: ActionKind,
    /// Whom: the participant's key.
    pub target: PublicKey,
    /// When, ms since the epoch: an action is valid within [`ACTION_TTL_MS`] of it, so a
    /// captured one cannot be replayed later.
    pub at_ms: u64,
    /// The moderator invite the signer holds (none: the host signs). One made for a key
    /// works for that key only; one made for nobody in particular is a bearer capability,
    /// like the link it came in: whoever holds it may join as moderator and act as one.
    pub authority: Option<Box<Signed<Invite>>>,
}

impl Signable for Action {
    const DOMAIN: &'static str = "veche/action/v1";
}

/// How far an action's time may be from the checking node's clock.
pub const ACTION_TTL_MS: u64 = 60_000;

/// Check a moderation action: signed by the host, or by a moderator whose moderator invite
/// it carries (made for the signer's key, or for nobody in particular); recent; for this
/// meeting; never against the host. Revocations and removals are the caller's: see
/// [`check_action_with`].
pub fn check_action(
    meeting: &MeetingDoc,
    action: &Signed<Action>,
    now_ms: u64,
) -> Result<(), TrustError> {
    check_action_with(meeting, action, now_ms, &mut |_| Ok(()))
}

/// [`check_action`], with `each` called on every invite of the signer's authority chain
/// (the caller refuses withdrawn invites and removed signers there).
pub fn check_action_with(
    meeting: &MeetingDoc,
    action: &Signed<Action>,
    now_ms: u64,
    each: &mut dyn FnMut(&Signed<Invite>) -> Result<(), TrustError>,
) -> Result<(), TrustError> {
    check_signed_now(meeting, action, now_ms)?;
    let body = &action.body;
    match body.kind {
        ActionKind::OpenRooms {
            rooms, until_ms, ..
        } if rooms == 0
            || rooms > MAX_ROOMS
            || until_ms <= body.at_ms
            || until_ms - body.at_ms > MAX_ROOMS_MS =>
        {
            return Err(TrustError::BadRooms);
        }
        ActionKind::Assign { room } if room > MAX_ROOMS => return Err(TrustError::BadRooms),
        _ => {}
    }
    if action.key == meeting.host {
        return Ok(());
    }
    if body.target == meeting.host && body.kind != ActionKind::Spotlight {
        return Err(TrustError::NotModerator);
    }
    check_authority(
        meeting,
        &action.key,
        body.authority.as_deref(),
        now_ms,
        each,
    )
}

/// Check an action a person signs about themselves (choosing their breakout room, where
/// the host lets people choose): signed by the key it names, with no moderator authority,
/// recent, for this meeting. Whether such an action is allowed at all is the meeting's
/// rule, not this token's.
pub fn check_own_action(
    meeting: &MeetingDoc,
    action: &Signed<Action>,
    now_ms: u64,
) -> Result<(), TrustError> {
    check_signed_now(meeting, action, now_ms)?;
    if action.body.target != action.key || action.body.authority.is_some() {
        return Err(TrustError::NotModerator);
    }
    Ok(())
}

/// An action's signature, meeting and freshness (within [`ACTION_TTL_MS`] of `now_ms`).
fn check_signed_now(
    meeting: &MeetingDoc,
    action: &Signed<Action>,
    now_ms: u64,
) -> Result<(), TrustError> {
    action.verify()?;
    if action.body.meeting != meeting.id {
        return Err(TrustError::WrongMeeting);
    }
    if now_ms.abs_diff(action.body.at_ms) > ACTION_TTL_MS {
        return Err(TrustError::Stale);
    }
    Ok(())
}

/// Whether `signer` may moderate `meeting` at `now_ms`: the host, or the holder of a
/// moderator invite (made for `signer`, or for nobody in particular) whose chain checks out,
/// with `each` called on every invite of the chain.
pub fn check_authority(
    meeting: &MeetingDoc,
    signer: &PublicKey,
    authority: Option<&Signed<Invite>>,
    now_ms: u64,
    each: &mut dyn FnMut(&Signed<Invite>) -> Result<(), TrustError>,
) -> Result<(), TrustError> {
    if *signer == meeting.host {
        return Ok(());
    }
    let Some(authority) = authority else {
        return Err(TrustError::NotModerator);
    };
    if authority.body.invitee.is_some_and(|k| k != *signer) {
        return Err(TrustError::NotModerator);
    }
    match check_chain(meeting, authority, now_ms, 0, each) {
        Ok(role) if role <= Role::Moderator => Ok(()),
        Ok(_) => Err(TrustError::NotModerator),
        Err(e) => Err(e),
    }
}

/// Why something was refused. Each has plain words for the person it happens to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// Not signed by the key it names, or altered after signing.
    #[error("the signature does not match: the link was altered or forged")]
    BadSignature,
    /// Not for this meeting.
    #[error("this invite is for another meeting")]
    WrongMeeting,
    /// The meeting's own document is not signed by its host.
    #[error("the meeting is not signed by its host")]
    NotHost,
    /// Past its expiry.
    #[error("this invite has expired")]
    Expired,
    /// The meeting is over.
    #[error("this meeting has ended")]
    MeetingEnded,
    /// Revoked by the host or a moderator.
    #[error("this invite was withdrawn by the host")]
    Revoked,
    /// Used as often as it may be.
    #[error("this invite has been used up")]
    UsedUp,
    /// Made for someone else's key.
    #[error("this invite was made for someone else")]
    NotForYou,
    /// Signed by someone who may not invite (not the host, not a moderator).
    #[error("this invite was signed by someone who may not invite")]
    NotDelegated,
    /// Grants more than its signer holds.
    #[error("this invite grants more than its signer may")]
    RoleTooHigh,
    /// Too many levels of delegation.
    #[error("this invite is delegated too many times")]
    ChainTooDeep,
    /// The meeting needs an invite (or a listed key) and none came.
    #[error("this meeting is by invitation only")]
    NotInvited,
    /// Not a token at all.
    #[error("not a valid token: {0}")]
    Malformed(String),
    /// A moderation action by someone who is neither host nor moderator.
    #[error("only the host or a moderator may do this")]
    NotModerator,
    /// A moderation action too far from now (replayed, or a wrong clock).
    #[error("this action is too old (or the clock is wrong)")]
    Stale,
    /// Breakout rooms out of bounds: none, more than [`MAX_ROOMS`], or closing in the past
    /// or more than [`MAX_ROOMS_MS`] ahead.
    #[error("breakout rooms are 1 to 50, for up to 12 hours")]
    BadRooms,
}

/// Check an invite (and its chain) for `meeting` at `now_ms`, ignoring uses and revocation;
/// returns the role it grants. The signer of the top invite must be the host; each level's
/// signer must hold a moderator invite bound to its key, signed by the level above.
pub fn check_invite(
    meeting: &MeetingDoc,
    invite: &Signed<Invite>,
    now_ms: u64,
) -> Result<Role, TrustError> {
    check_chain(meeting, invite, now_ms, 0, &mut |_| Ok(()))
}

/// [`check_invite`], with `each` called on every invite of the chain (the caller refuses
/// withdrawn invites and removed signers there).
pub fn check_invite_with(
    meeting: &MeetingDoc,
    invite: &Signed<Invite>,
    now_ms: u64,
    each: &mut dyn FnMut(&Signed<Invite>) -> Result<(), TrustError>,
) -> Result<Role, TrustError> {
    check_chain(meeting, invite, now_ms, 0, each)
}

fn check_chain(
    meeting: &MeetingDoc,
    invite: &Signed<Invite>,
    now_ms: u64,
    depth: usize,
    each: &mut dyn FnMut(&Signed<Invite>) -> Result<(), TrustError>,
) -> Result<Role, TrustError> {
    if depth >= MAX_DEPTH {
        return Err(TrustError::ChainTooDeep);
    }
    invite.verify()?;
    let body = &invite.body;
    if body.meeting != meeting.id {
        return Err(TrustError::WrongMeeting);
    }
    if now_ms >= body.expires_ms {
        return Err(TrustError::Expired);
    }
    each(invite)?;
    let signer_role = match &body.parent {
        None if invite.key == meeting.host => Role::Host,
        None => return Err(TrustError::NotDelegated),
        Some(parent) => {
            // The parent must be a moderator invite made for exactly this signer.
            if parent.body.invitee != Some(invite.key) {
                return Err(TrustError::NotDelegated);
            }
            let role = check_chain(meeting, parent, now_ms, depth + 1, each)?;
            if role > Role::Moderator {
                return Err(TrustError::NotDelegated);
            }
            Role::Moderator
        }
    };
    // Nobody grants host; a moderator grants at most moderator.
    if body.role == Role::Host || body.role < signer_role.max(Role::Moderator) {
        return Err(TrustError::RoleTooHigh);
    }
    Ok(body.role)
}

/// Check a revocation: signed by the host of this meeting.
pub fn check_revocation(meeting: &MeetingDoc, rev: &Signed<Revocation>) -> Result<(), TrustError> {
    rev.verify()?;
    if rev.body.meeting != meeting.id {
        return Err(TrustError::WrongMeeting);
    }
    if rev.key != meeting.host {
        return Err(TrustError::NotDelegated);
    }
    Ok(())
}

/// Check a meeting document: signed, and signed by the host it names.
pub fn check_meeting(doc: &Signed<MeetingDoc>) -> Result<(), TrustError> {
    doc.verify()?;
    if doc.key != doc.body.host {
        return Err(TrustError::NotHost);
    }
    Ok(())
}

/// Who `key` is in `doc` at `now_ms`, with `invite` if it brought one: the meeting's time,
/// the host, the policy, the invite's chain (signatures, expiry, invitee), with `each` called
/// on every invite of the chain (the caller refuses withdrawn ones there). Uses are the
/// caller's to count.
pub fn check_admission(
    doc: &MeetingDoc,
    key: &PublicKey,
    invite: Option<&Signed<Invite>>,
    now_ms: u64,
    each: &mut dyn FnMut(&Signed<Invite>) -> Result<(), TrustError>,
) -> Result<Role, TrustError> {
    if doc.ends_ms.is_some_and(|end| now_ms >= end) {
        return Err(TrustError::MeetingEnded);
    }
    if *key == doc.host {
        return Ok(Role::Host);
    }
    let Some(invite) = invite else {
        return match &doc.policy {
            Policy::Anyone => Ok(Role::Speaker),
            Policy::Keys { keys } if keys.contains(key) => Ok(Role::Speaker),
            _ => Err(TrustError::NotInvited),
        };
    };
    if invite.body.invitee.is_some_and(|k| k != *key) {
        return Err(TrustError::NotForYou);
    }
    if let Policy::Keys { keys } = &doc.policy {
        if !keys.contains(key) {
            return Err(TrustError::NotInvited);
        }
    }
    check_chain(doc, invite, now_ms, 0, each)
}

/// Check a key's proof for one join on one socket: `sig` (base64url, 64 bytes) must be the
/// signature by `key` (base64url, 32 bytes) of the challenge `nonce` that node `node` handed
/// out for `meeting`. The caller makes sure each nonce is fresh and used once (a socket gets
/// one nonce and joins once). Returns the key.
pub fn verify_challenge(
    node: &str,
    meeting: &str,
    nonce: &str,
    key: &str,
    sig: &str,
) -> Result<PublicKey, TrustError> {
    let decode = |text: &str, what: &str| -> Result<Vec<u8>, TrustError> {
        if text.len() > 128 {
            return Err(TrustError::Malformed(format!("{what} too long")));
        }
        URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|e| TrustError::Malformed(format!("{what}: {e}")))
    };
    let key: [u8; 32] = decode(key, "key")?
        .try_into()
        .map_err(|_| TrustError::Malformed("a key is 32 bytes".into()))?;
    let sig: [u8; 64] = decode(sig, "signature")?
        .try_into()
        .map_err(|_| TrustError::Malformed("a signature is 64 bytes".into()))?;
    let vk = VerifyingKey::from_bytes(&key).map_err(|_| TrustError::BadSignature)?;
    vk.verify_strict(
        &challenge_bytes(node, meeting, nonce),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| TrustError::BadSignature)?;
    Ok(PublicKey(key))
}

/// A key from the base64url text the signaling protocol carries.
pub fn decode_key(text: &str) -> Result<PublicKey, TrustError> {
    if text.len() > 128 {
        return Err(TrustError::Malformed("key too long".into()));
    }
    let bytes: [u8; 32] = URL_SAFE_NO_PAD
        .decode(text.as_bytes())
        .map_err(|e| TrustError::Malformed(format!("key: {e}")))?
        .try_into()
        .map_err(|_| TrustError::Malformed("a key is 32 bytes".into()))?;
    Ok(PublicKey(bytes))
}

/// A key as the base64url text the signaling protocol carries.
pub fn encode_key(key: &PublicKey) -> String {
    URL_SAFE_NO_PAD.encode(key.0)
}

/// A token for a link's fragment: base64url of the JSON.
pub fn encode_token<T: Serialize>(value: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// Read a token, refusing anything over [`MAX_TOKEN`] before decoding it.
pub fn decode_token<T: DeserializeOwned>(token: &str) -> Result<T, TrustError> {
    if token.len() > MAX_TOKEN {
        return Err(TrustError::Malformed(format!(
            "over {MAX_TOKEN} characters"
        )));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim().as_bytes())
        .map_err(|e| TrustError::Malformed(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| TrustError::Malformed(e.to_string()))
}
