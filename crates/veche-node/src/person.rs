//! A person's key for the command-line participant: an Ed25519 secret in a file of its own
//! (mode 0600), what a browser keeps in IndexedDB. Whoever holds the file is that person to
//! every meeting (their fingerprint, their role, their removal).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil::{ensure_private_dir, open_to_others, write_atomic};

/// The default key file's name in the data directory.
pub const PERSON_KEY_FILE: &str = "person.key";

/// Why a person's key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersonKeyError {
    /// The file or its directory could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file exists but does not hold a key.
    #[error("{path} is not a veche person key (expected 32 bytes, found {len})")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The file can be read by other users.
    #[error("{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
}

/// Load the 32-byte secret from `path`, or make one and store it (mode 0600, written
/// atomically and synced, so a crash leaves the old key or the new one, never half).
/// Returns the secret and whether it was made now.
pub fn load_or_create_person_key(path: &Path) -> Result<([u8; 32], bool), PersonKeyError> {
    let io_err = |p: &Path| {
        let path = p.to_owned();
        move |source| PersonKeyError::Io { path, source }
    };
    match fs::read(path) {
        Ok(bytes) => {
            check_private(path)?;
            let secret =
                <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| PersonKeyError::Malformed {
                    path: path.to_owned(),
                    len: bytes.len(),
                })?;
            Ok((secret, false))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            ensure_private_dir(dir).map_err(io_err(dir))?;
            let secret: [u8; 32] = rand::random();
            write_atomic(path, &secret, 0o600).map_err(io_err(path))?;
            Ok((secret, true))
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

fn check_private(path: &Path) -> Result<(), PersonKeyError> {
    match open_to_others(path) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => Err(PersonKeyError::Permissions {
            path: path.to_owned(),
            mode,
        }),
        Err(source) => Err(PersonKeyError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_and_the_same_afterwards() {
        let dir = std::env::temp_dir().join(format!("veche-person-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("me.key");
        let (a, made) = load_or_create_person_key(&path).expect("made");
        assert!(made);
        let (b, made) = load_or_create_person_key(&path).expect("loaded");
        assert!(!made);
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
            assert!(matches!(
                load_or_create_person_key(&path),
                Err(PersonKeyError::Permissions { .. })
            ));
        }
        fs::write(&path, b"short").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        assert!(matches!(
            load_or_create_person_key(&path),
            Err(PersonKeyError::Malformed { len: 5, .. })
        ));
        let _ = fs::remove_dir_all(&dir);
    }
}
