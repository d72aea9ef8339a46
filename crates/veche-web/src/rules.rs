//! The pump between the node's paths (socket, HTTP, node protocol) and the meeting's rules
//! (veche-meeting): a decision is taken and its change committed under the store's lock on
//! a blocking thread, so two joins cannot both take a one-use invite's last use, and what
//! was refused, or could not be written, changed nothing.

use std::sync::{Arc, Mutex};

use veche_meeting::Change;
use veche_node::{Meeting, MeetingStore, MeetingView};

/// Why a decision did not stand.
#[derive(Debug, thiserror::Error)]
pub enum Undecided<E> {
    /// No such meeting here.
    #[error("there is no meeting with this id on this node")]
    Unknown,
    /// The rules refused it.
    #[error("{0}")]
    Refused(E),
    /// It could not be written: nothing was done.
    #[error("the node could not save it; nothing was done ({0})")]
    Storage(String),
}

/// The time the rules are checked at: this node's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Decide with `f` on meeting `id` and commit the change it returns before answering.
pub async fn decide<T, E>(
    store: &Arc<Mutex<MeetingStore>>,
    id: &str,
    f: impl FnOnce(&Meeting) -> Result<(T, Option<Change>), E> + Send + 'static,
) -> Result<T, Undecided<E>>
where
    T: Send + 'static,
    E: Send + 'static,
{
    let id = id.to_owned();
    locked(store, move |store| {
        let (value, change) = decided(store, &id, f)?;
        if let Some(c) = change {
            store.commit(&id, &c).map_err(|e| {
                tracing::error!(meeting = %id, error = %e, "cannot save a meeting's change");
                Undecided::Storage(e.to_string())
            })?;
        }
        Ok(value)
    })
    .await
}

/// Decide with `f` whether meeting `id` goes, and delete it (on disk, then in memory)
/// before answering.
pub async fn delete<T, E>(
    store: &Arc<Mutex<MeetingStore>>,
    id: &str,
    f: impl FnOnce(&Meeting) -> Result<T, E> + Send + 'static,
) -> Result<T, Undecided<E>>
where
    T: Send + 'static,
    E: Send + 'static,
{
    let id = id.to_owned();
    locked(store, move |store| {
        let value = decided(store, &id, f)?;
        store.delete(&id).map_err(|e| {
            tracing::error!(meeting = %id, error = %e, "cannot delete a meeting");
            Undecided::Storage(e.to_string())
        })?;
        Ok(value)
    })
    .await
}

/// `f`'s decision on meeting `id`, read in place (the meeting is not copied).
fn decided<T, E>(
    store: &MeetingStore,
    id: &str,
    f: impl FnOnce(&Meeting) -> Result<T, E>,
) -> Result<T, Undecided<E>> {
    store
        .read(id, f)
        .ok_or(Undecided::Unknown)?
        .map_err(Undecided::Refused)
}

/// Run `f` with the store's lock held, on a blocking thread (it writes to disk), so no
/// decision interleaves with another.
async fn locked<T, E>(
    store: &Arc<Mutex<MeetingStore>>,
    f: impl FnOnce(&mut MeetingStore) -> Result<T, Undecided<E>> + Send + 'static,
) -> Result<T, Undecided<E>>
where
    T: Send + 'static,
    E: Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&mut store.lock().unwrap_or_else(|p| p.into_inner())))
        .await
        .unwrap_or_else(|_| Err(Undecided::Storage("the node is shutting down".into())))
}

/// Read meeting `id` with `f` (no change): never waits for a write to reach the disk.
pub fn read<T>(view: &MeetingView, id: &str, f: impl FnOnce(&Meeting) -> T) -> Option<T> {
    view.read(id, f)
}
