//! A node's state on disk: its identity key, configuration, TLS certificate and meetings
//! (with their attendance).
//!
//! Everything lives in one data directory. Files are written atomically (a temporary file,
//! fsync, rename, fsync of the directory), so a node killed at any moment finds either the
//! old or the new content on restart, never a torn file. Secrets are created with mode 0600.

pub mod attendance;
mod config;
mod fsutil;
mod identity;
mod meetings;
mod person;
pub mod recordings;
mod tls;

pub use config::{Config, ConfigError};
pub use identity::{IdentityError, NodeIdentity};
pub use meetings::{
    claim_digest, is_meeting_id, CreateMeetingError, Meeting, MeetingStore, MeetingView,
    SetDocError, StoreError,
};
pub use person::{load_or_create_person_key, PersonKeyError, PERSON_KEY_FILE};
pub use tls::{TlsError, TlsMaterial};

use std::path::PathBuf;

/// The data directory used when none is given: `$XDG_DATA_HOME/veche` (or the platform's
/// equivalent), falling back to `./veche-data`.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("veche"))
        .unwrap_or_else(|| PathBuf::from("veche-data"))
}
