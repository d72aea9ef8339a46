//! Recordings on disk: one WebM file per recording, in `recordings/<meeting>/` under the data
//! directory, named by when it started. The file is the record: listing reads the
//! directory, so a recording cut off by a kill is listed like any other.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Free space a recording needs to start.
pub const MIN_FREE_TO_START: u64 = 256 << 20;
/// Free space below which a running recording stops (the rest of the disk is the node's).
pub const MIN_FREE_TO_GO_ON: u64 = 64 << 20;

/// One recording file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingFile {
    /// Its meeting.
    pub meeting: String,
    /// File name (when it started, UTC).
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Last written, ms since the epoch.
    pub modified_ms: u64,
}

/// Where the recordings of the node with data directory `data` are.
pub fn dir(data: &Path) -> PathBuf {
    data.join("recordings")
}

/// A new, empty recording file for `meeting`, named by `started`.
pub fn create(data: &Path, meeting: &str, started: SystemTime) -> io::Result<(PathBuf, File)> {
    if !crate::is_meeting_id(meeting) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a meeting id",
        ));
    }
    let folder = dir(data).join(meeting);
    std::fs::create_dir_all(&folder)?;
    let at = time::OffsetDateTime::from(started);
    let stem = format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}-{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    for n in 1..100 {
        let name = if n == 1 {
            format!("{stem}.webm")
        } else {
            format!("{stem}-{n}.webm")
        };
        let path = folder.join(&name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "too many recordings started this second",
    ))
}

/// The file of recording `name` of `meeting`, if it is one (a name from [`list`], nothing
/// that reaches out of the folder).
pub fn path_of(data: &Path, meeting: &str, name: &str) -> Option<PathBuf> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with('.')
        && name.ends_with(".webm");
    if !plain || !crate::is_meeting_id(meeting) {
        return None;
    }
    let path = dir(data).join(meeting).join(name);
    path.is_file().then_some(path)
}

/// The recordings of `meeting` (every meeting: `None`), oldest first.
pub fn list(data: &Path, meeting: Option<&str>) -> io::Result<Vec<RecordingFile>> {
    let root = dir(data);
    let meetings: Vec<String> = match meeting {
        Some(m) => vec![m.to_owned()],
        None => match std::fs::read_dir(&root) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|m| crate::is_meeting_id(m))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        },
    };
    let mut out = Vec::new();
    for m in meetings {
        let entries = match std::fs::read_dir(root.join(&m)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in entries.filter_map(Result::ok) {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() || path_of(data, &m, &name).is_none() {
                continue;
            }
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64);
            out.push(RecordingFile {
                meeting: m.clone(),
                name,
                bytes: meta.len(),
                modified_ms,
            });
        }
    }
    out.sort_by(|a, b| (&a.meeting, &a.name).cmp(&(&b.meeting, &b.name)));
    Ok(out)
}

/// Bytes free for an unprivileged writer on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(st.blocks_available() * st.fragment_size())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_listed_by_meeting_and_names_cannot_reach_out() {
        let data = std::env::temp_dir().join(format!("veche-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let at = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let (a, _) = create(&data, "abc-def-ghi", at).expect("create");
        let (b, _) = create(&data, "abc-def-ghi", at).expect("a second one the same second");
        assert_ne!(a, b);
        assert!(create(&data, "../etc", at).is_err());
        let all = list(&data, None).expect("list");
        assert_eq!(
            all.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["2023-11-14T22-13-20Z-2.webm", "2023-11-14T22-13-20Z.webm"]
        );
        assert!(path_of(&data, "abc-def-ghi", &all[0].name).is_some());
        for bad in ["../x.webm", ".webm", "a/b.webm", "x.txt", ""] {
            assert_eq!(path_of(&data, "abc-def-ghi", bad), None, "{bad}");
        }
        assert!(free_bytes(&data).expect("statvfs") > 0);
        let _ = std::fs::remove_dir_all(&data);
    }
}
