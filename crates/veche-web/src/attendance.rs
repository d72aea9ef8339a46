//! A meeting's attendance: the writer that keeps the engine's arrivals and departures, and
//! the export the host (over their socket) and the node's operator (over loopback HTTP,
//! `veche attendance`) read. Who may have it is the meeting's rule
//! ([`veche_meeting::Governance::check_attendance`]).

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use veche_media::Attendance;
use veche_meeting::Presence;
use veche_node::attendance::{stays, to_csv, Record};
use veche_node::{MeetingStore, MeetingView};

use crate::rules;

/// Records taken off the queue into one transaction (one fsync) at most.
const BATCH: usize = 256;
/// Depth of the engine's attendance queue: a join storm of this many waits for the disk,
/// more are dropped (and counted) rather than slowing the media.
pub const QUEUE: usize = 4096;

/// Keep what `rx` brings until the engine stops: each record stamped with this node's
/// clock on arrival here, an arrival with the role its proof gives (the meeting's rules
/// decide), and written in batches off the async runtime. A failed write is logged and
/// those records are lost; the meeting goes on.
pub async fn record(
    mut rx: mpsc::Receiver<Attendance>,
    meetings: Arc<Mutex<MeetingStore>>,
    view: MeetingView,
) {
    while let Some(first) = rx.recv().await {
        let now = rules::now_ms();
        let mut batch = vec![stamp(&view, first, now)];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(a) => batch.push(stamp(&view, a, now)),
                Err(_) => break,
            }
        }
        let store = meetings.clone();
        let n = batch.len();
        let written = tokio::task::spawn_blocking(move || {
            store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record_attendance(&batch)
        })
        .await;
        match written {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, records = n, "cannot save attendance records")
            }
            Err(e) => tracing::error!(error = %e, "the attendance writer failed"),
        }
    }
}

/// The stored form of what the engine said, at `now_ms`.
fn stamp(view: &MeetingView, a: Attendance, now_ms: u64) -> (String, Record) {
    match a {
        Attendance::Arrived {
            meeting,
            participant,
            name,
            key,
            node,
            presence,
        } => {
            let role = presence.as_deref().and_then(|token| {
                let p: Presence = veche_trust::decode_token(token).ok()?;
                rules::read(view, &meeting, |m| {
                    m.rules.role_by_presence(&meeting, &node, &p, now_ms).ok()
                })
                .flatten()
            });
            let record = Record::Arrived {
                participant: participant.0,
                at_ms: now_ms,
                name,
                key,
                node,
                role,
            };
            (meeting, record)
        }
        Attendance::Departed {
            meeting,
            participant,
        } => {
            let record = Record::Departed {
                participant: participant.0,
                at_ms: now_ms,
            };
            (meeting, record)
        }
    }
}

/// Meeting `id`'s attendance as CSV (`this_node`: this node's peer id), read off the
/// async runtime.
pub(crate) async fn export(
    meetings: &Arc<Mutex<MeetingStore>>,
    id: &str,
    this_node: &str,
) -> std::io::Result<String> {
    let store = meetings.clone();
    let (id, this_node) = (id.to_owned(), this_node.to_owned());
    tokio::task::spawn_blocking(move || {
        let records = store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .attendance(&id)?;
        Ok(to_csv(&stays(records), &this_node))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The file name a download of meeting `id`'s attendance gets.
pub(crate) fn file_name(id: &str) -> String {
    format!("attendance-{id}.csv")
}
