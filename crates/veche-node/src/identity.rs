//! The node's identity: an ed25519 keypair, the same one libp2p uses as the node's peer id.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use libp2p_identity::{Keypair, PeerId};

use crate::fsutil::{ensure_private_dir, open_to_others, write_atomic};

/// The file in the data directory that holds the node's secret key (32 raw bytes).
pub const KEY_FILE: &str = "node.key";

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The key file or the data directory could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The key file exists but does not hold a key.
    #[error("{path} is not a veche node key (expected 32 bytes, found {len}); move it away to make a new identity")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The key file can be read by other users.
    #[error("{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
}

/// The node's keypair.
#[derive(Clone)]
pub struct NodeIdentity {
    keypair: Keypair,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Load the key from `dir`, or make one and store it (mode 0600) if there is none.
    pub fn load_or_create(dir: &Path) -> Result<Self, IdentityError> {
        let path = dir.join(KEY_FILE);
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| IdentityError::Io { path, source }
        };
        match fs::read(&path) {
            Ok(bytes) => {
                check_private(&path)?;
                let Ok(mut secret) = <[u8; 32]>::try_from(bytes.as_slice()) else {
                    return Err(IdentityError::Malformed {
                        len: bytes.len(),
                        path,
                    });
                };
                let keypair = Keypair::ed25519_from_bytes(&mut secret).map_err(|_| {
                    IdentityError::Malformed {
                        path: path.clone(),
                        len: 32,
                    }
                })?;
                Ok(Self { keypair })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                ensure_private_dir(dir).map_err(io_err(dir))?;
                let ed = libp2p_identity::ed25519::Keypair::generate();
                write_atomic(&path, ed.secret().as_ref(), 0o600).map_err(io_err(&path))?;
                tracing::info!(path = %path.display(), "created a new node identity");
                Ok(Self {
                    keypair: Keypair::from(ed),
                })
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// The node's id (its libp2p peer id).
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// The keypair, for the libp2p swarm.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }
}

fn check_private(path: &Path) -> Result<(), IdentityError> {
    match open_to_others(path) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => Err(IdentityError::Permissions {
            path: path.to_owned(),
            mode,
        }),
        Err(source) => Err(IdentityError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("veche-id-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn same_id_after_reload_and_key_is_private() {
        let dir = tempdir("reload");
        let a = NodeIdentity::load_or_create(&dir).expect("create");
        let b = NodeIdentity::load_or_create(&dir).expect("load");
        assert_eq!(a.peer_id(), b.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(KEY_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn truncated_key_is_refused_not_replaced() {
        let dir = tempdir("trunc");
        NodeIdentity::load_or_create(&dir).expect("create");
        let path = dir.join(KEY_FILE);
        write_atomic(&path, b"short", 0o600).expect("write");
        let err = NodeIdentity::load_or_create(&dir).expect_err("must refuse");
        assert!(
            matches!(err, IdentityError::Malformed { len: 5, .. }),
            "{err}"
        );
        assert_eq!(fs::read(&path).expect("still there"), b"short");
        fs::remove_dir_all(&dir).ok();
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir("perm");
        NodeIdentity::load_or_create(&dir).expect("create");
        let path = dir.join(KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = NodeIdentity::load_or_create(&dir).expect_err("must refuse");
        assert!(matches!(err, IdentityError::Permissions { .. }), "{err}");
        fs::remove_dir_all(&dir).ok();
    }
}
