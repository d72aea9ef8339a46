//! The optional `config.toml` in the data directory. Command-line flags override it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The config file's name in the data directory.
pub const CONFIG_FILE: &str = "config.toml";

/// Settings read from `config.toml`. Every field is optional; see `docs/configuration.md`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address for the web UI and API (default 127.0.0.1:7300).
    pub http: Option<SocketAddr>,
    /// UDP port for all media (default 7301).
    pub media_port: Option<u16>,
    /// UDP port of the media links this node opens to other nodes.
    pub link_port: Option<u16>,
    /// Extra addresses to offer browsers for media (a public or forwarded address).
    #[serde(default)]
    pub advertise: Vec<IpAddr>,
    /// Local IPv4 addresses to bind the media ports on (default: loopback and every
    /// interface address).
    #[serde(default)]
    pub media_bind: Vec<std::net::Ipv4Addr>,
    /// Most participants in one meeting (default 100).
    pub max_participants: Option<u16>,
    /// Days an ended meeting is kept before it is deleted.
    pub retention_days: Option<u32>,
    /// Names browsers use for this node besides loopback, its addresses and host name.
    #[serde(default)]
    pub host_names: Vec<String>,
    /// Serve HTTPS on the LAN.
    pub lan: Option<bool>,
    /// HTTPS listen address when `lan` is on (default 0.0.0.0:7443).
    pub https: Option<SocketAddr>,
    /// A PEM certificate chain to use instead of the node's own self-signed one.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The node's name shown to other nodes.
    pub name: Option<String>,
    /// libp2p listen addresses (multiaddrs).
    #[serde(default)]
    pub listen: Vec<String>,
    /// Find other nodes on the LAN by mDNS (default true).
    pub mdns: Option<bool>,
    /// Nodes to connect to at start (multiaddrs with `/p2p/<id>`).
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Relay for other nodes.
    pub relay: Option<bool>,
    /// Addresses other nodes can reach this one at (multiaddrs).
    #[serde(default)]
    pub external_address: Vec<String>,
}

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// It exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The config file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// It is not valid TOML for veche.
    #[error("{path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
}

impl Config {
    /// Read `config.toml` from the data directory; no file means all defaults.
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        let path = data_dir.join(CONFIG_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|message| ConfigError::Parse { path, message }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Io { path, source }),
        }
    }

    /// Parse the TOML text of a config file.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_field_and_refuses_unknown_ones() {
        let c = Config::parse(
            "http = \"127.0.0.1:8000\"\nmedia_port = 9000\nadvertise = [\"192.0.2.7\"]\nlan = true\n",
        )
        .expect("valid");
        assert_eq!(c.http, Some("127.0.0.1:8000".parse().expect("addr")));
        assert_eq!(c.media_port, Some(9000));
        assert_eq!(c.lan, Some(true));
        assert_eq!(c.advertise.len(), 1);
        let err = Config::parse("htp = \"x\"").expect_err("typo must be caught");
        assert!(err.contains("htp"), "{err}");
    }
}
