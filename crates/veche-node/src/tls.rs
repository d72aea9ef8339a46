//! The node's TLS certificate for HTTPS on the LAN.
//!
//! Browsers give camera and microphone only to secure contexts, so a student's tablet must
//! reach the teacher's node over HTTPS. With no certificate configured, the node makes a
//! self-signed one on first start and keeps it; people compare its fingerprint (printed at
//! start and shown in the invite panel) with what their browser shows.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::fsutil::{ensure_private_dir, write_atomic};

/// Certificate file made by the node.
pub const CERT_FILE: &str = "tls-cert.pem";
/// Its private key.
pub const KEY_FILE: &str = "tls-key.pem";

/// Why the TLS material could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// Which file.
        path: PathBuf,
    },
    /// Certificate generation failed.
    #[error("cannot make a certificate: {0}")]
    Generate(String),
}

/// A certificate chain and key in PEM, with the leaf's SHA-256 fingerprint.
#[derive(Clone)]
pub struct TlsMaterial {
    /// PEM certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// PEM private key.
    pub key_pem: Vec<u8>,
    /// SHA-256 of the leaf certificate (DER), as colon-separated hex, the way browsers show it.
    pub fingerprint: String,
    /// Where the certificate came from.
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("fingerprint", &self.fingerprint)
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Use the configured certificate and key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Io {
                path: p.to_owned(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let fingerprint = fingerprint_of_pem(&cert_pem).ok_or_else(|| TlsError::NoCertificate {
            path: cert.to_owned(),
        })?;
        Ok(Self {
            cert_pem,
            key_pem,
            fingerprint,
            cert_path: cert.to_owned(),
        })
    }

    /// Load the node's own certificate from `dir`, or make one valid for `localhost` and the
    /// given addresses and keep it there (key mode 0600).
    pub fn load_or_create(dir: &Path, addresses: &[IpAddr]) -> Result<Self, TlsError> {
        let cert = dir.join(CERT_FILE);
        let key = dir.join(KEY_FILE);
        if cert.exists() && key.exists() {
            return Self::load(&cert, &key);
        }
        let mut names = vec!["localhost".to_owned()];
        names.extend(addresses.iter().map(IpAddr::to_string));
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let cert_pem = made.cert.pem().into_bytes();
        let key_pem = made.signing_key.serialize_pem().into_bytes();
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Io { path, source }
        };
        ensure_private_dir(dir).map_err(io_err(dir))?;
        // Key first: a crash between the two writes leaves no certificate, so the next start
        // makes a fresh pair instead of pairing a new certificate with a lost key.
        write_atomic(&key, &key_pem, 0o600).map_err(io_err(&key))?;
        write_atomic(&cert, &cert_pem, 0o644).map_err(io_err(&cert))?;
        let fingerprint = hex_fingerprint(made.cert.der());
        tracing::info!(path = %cert.display(), %fingerprint, "created a self-signed TLS certificate");
        Ok(Self {
            cert_pem,
            key_pem,
            fingerprint,
            cert_path: cert,
        })
    }
}

fn fingerprint_of_pem(pem: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + text[start..].find("-----END CERTIFICATE-----")?;
    let b64: String = text[start..end].split_whitespace().collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(hex_fingerprint(&der))
}

fn hex_fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("veche-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a =
            TlsMaterial::load_or_create(&dir, &["10.1.2.3".parse().expect("ip")]).expect("make");
        let b = TlsMaterial::load_or_create(&dir, &[]).expect("load");
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
