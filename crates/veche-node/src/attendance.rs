//! Who was in a meeting on this node, and when: its attendance, kept with the meeting in
//! the store ([`crate::MeetingStore::record_attendance`]) and deleted with it.
//!
//! The media engine says when each person arrives and departs; the node stamps the time
//! and the role their proof gives them, and appends one [`Record`] per arrival and per
//! departure. [`stays`] folds them into one [`Stay`] per time someone was in (a rejoin is a
//! second stay), and [`to_csv`] writes those for a spreadsheet.

use serde::{Deserialize, Serialize};
use veche_meeting::veche_trust::{decode_key, Role};

/// Most records one meeting keeps (an arrival and a departure per stay): past it, new
/// ones are dropped (and logged), so a flood of joins cannot fill the disk.
pub const MAX_RECORDS: u64 = 20_000;

/// One line of a meeting's attendance, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    /// Someone came in.
    Arrived {
        /// Their participant id on this node (unique across restarts).
        participant: u64,
        /// When, ms since the Unix epoch (this node's clock).
        at_ms: u64,
        /// Their name as they joined.
        name: String,
        /// Their key (base64url), as their node checked it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// The node they were attached to (its peer id).
        node: String,
        /// Their role, as the meeting's rules gave it by their proof and invite.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
    },
    /// Someone went out.
    Departed {
        /// Their participant id.
        participant: u64,
        /// When, ms since the Unix epoch.
        at_ms: u64,
    },
}

/// One time someone was in the meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stay {
    /// Their name as they joined.
    pub name: String,
    /// Their key (base64url).
    pub key: Option<String>,
    /// The node they were attached to.
    pub node: String,
    /// Their role.
    pub role: Option<Role>,
    /// When they came in, ms since the epoch.
    pub joined_ms: u64,
    /// When they went out; `None`: still in, or this node stopped while they were in.
    pub left_ms: Option<u64>,
}

/// One stay per arrival, in the order they came in, each with the departure that ended it.
pub fn stays(records: impl IntoIterator<Item = Record>) -> Vec<Stay> {
    let mut out: Vec<Stay> = Vec::new();
    // Participant id → its stay in `out` (ids are never reused, so each has one).
    let mut open = std::collections::HashMap::new();
    for r in records {
        match r {
            Record::Arrived {
                participant,
                at_ms,
                name,
                key,
                node,
                role,
            } => {
                open.insert(participant, out.len());
                out.push(Stay {
                    name,
                    key,
                    node,
                    role,
                    joined_ms: at_ms,
                    left_ms: None,
                });
            }
            Record::Departed { participant, at_ms } => {
                if let Some(i) = open.remove(&participant) {
                    out[i].left_ms = Some(at_ms);
                }
            }
        }
    }
    out.sort_by_key(|s| s.joined_ms);
    out
}

/// The stays as CSV with a header line: name, key (its fingerprint, as the People panel
/// shows it), node, role, joined, left (RFC 3339, UTC), minutes. `this_node` is written
/// as `this node`.
pub fn to_csv(stays: &[Stay], this_node: &str) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = ["name", "key", "node", "role", "joined", "left", "minutes"];
    // Writing to memory fails only on a bug; an empty export then says so by its emptiness.
    let _ = w.write_record(header);
    for s in stays {
        let key = s
            .key
            .as_deref()
            .and_then(|k| decode_key(k).ok())
            .map(|k| k.fingerprint())
            .unwrap_or_default();
        let node = if s.node == this_node {
            "this node"
        } else {
            s.node.as_str()
        };
        let role = s.role.map(role_name).unwrap_or_default();
        let minutes = s
            .left_ms
            .map(|l| format!("{:.1}", l.saturating_sub(s.joined_ms) as f64 / 60_000.0))
            .unwrap_or_default();
        let _ = w.write_record([
            spreadsheet_safe(&s.name).as_str(),
            &key,
            node,
            role,
            &rfc3339(s.joined_ms),
            &s.left_ms.map(rfc3339).unwrap_or_default(),
            &minutes,
        ]);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Host => "host",
        Role::Moderator => "moderator",
        Role::Speaker => "speaker",
        Role::Listener => "listener",
    }
}

/// A name a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a `'` in
/// front: a participant chooses their name, and the host opens the file.
fn spreadsheet_safe(name: &str) -> String {
    if name.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{name}")
    } else {
        name.to_owned()
    }
}

/// `ms` since the epoch as `2026-12-03T09:05:00Z`.
fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrived(participant: u64, at_ms: u64, name: &str) -> Record {
        Record::Arrived {
            participant,
            at_ms,
            name: name.into(),
            key: None,
            node: "me".into(),
            role: Some(Role::Speaker),
        }
    }

    #[test]
    fn a_rejoin_is_a_second_stay_and_an_open_stay_has_no_end() {
        let records = vec![
            arrived(1, 1_000, "Ada"),
            arrived(2, 2_000, "Bob"),
            Record::Departed {
                participant: 2,
                at_ms: 62_000,
            },
            arrived(3, 70_000, "Bob"),
            // A departure of nobody known (its arrival was not kept) changes nothing.
            Record::Departed {
                participant: 9,
                at_ms: 71_000,
            },
        ];
        let s = stays(records);
        let got: Vec<_> = s
            .iter()
            .map(|s| (s.name.as_str(), s.joined_ms, s.left_ms))
            .collect();
        assert_eq!(
            got,
            [
                ("Ada", 1_000, None),
                ("Bob", 2_000, Some(62_000)),
                ("Bob", 70_000, None)
            ]
        );
        let csv = to_csv(&s, "me");
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "name,key,node,role,joined,left,minutes");
        assert_eq!(
            lines[2],
            "Bob,,this node,speaker,1970-01-01T00:00:02Z,1970-01-01T00:01:02Z,1.0"
        );
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn names_are_quoted_and_cannot_run_as_formulas() {
        let s = stays([
            arrived(1, 0, "Doe, \"Jo\""),
            arrived(2, 0, "=HYPERLINK(\"x\")"),
        ]);
        let csv = to_csv(&s, "other");
        let mut r = csv::Reader::from_reader(csv.as_bytes());
        let names: Vec<String> = r
            .records()
            .map(|rec| rec.expect("a record")[0].to_owned())
            .collect();
        assert_eq!(names, ["Doe, \"Jo\"", "'=HYPERLINK(\"x\")"]);
        assert!(
            csv.contains(",me,"),
            "another node is named by its id: {csv}"
        );
    }

    #[test]
    fn a_record_keeps_its_stored_form() {
        let r = arrived(7, 5, "Ada");
        let text = serde_json::to_string(&r).expect("json");
        assert_eq!(serde_json::from_str::<Record>(&text).expect("parse"), r);
        assert!(serde_json::from_str::<Record>(r#"{"kind":"departed","participant":1}"#).is_err());
    }
}
