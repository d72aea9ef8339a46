//! The peer book: nodes this node has met and where they were, kept across restarts so two
//! nodes that met once find each other again with no mDNS and no bootstrap.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// Most peers remembered; the least recently seen go first.
pub const MAX_PEERS: usize = 256;
/// Most addresses remembered per peer; the oldest go first.
pub const MAX_ADDRS: usize = 8;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Entry {
    /// Newest last.
    addrs: Vec<String>,
    /// Unix seconds.
    last_seen: u64,
    name: Option<String>,
}

/// Peers and their addresses.
#[derive(Debug)]
pub struct PeerBook {
    path: PathBuf,
    peers: BTreeMap<String, Entry>,
    dirty: bool,
}

impl PeerBook {
    /// Load `peers.json` from `dir` (a missing or damaged file starts an empty book; the
    /// damaged one is kept aside as `peers.json.bad` so nothing is silently lost).
    pub fn load(dir: &Path) -> Self {
        let path = dir.join("peers.json");
        let peers = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "peer book damaged; starting empty");
                    let _ = std::fs::rename(&path, path.with_extension("json.bad"));
                    BTreeMap::new()
                }
            },
            Err(_) => BTreeMap::new(),
        };
        Self {
            path,
            peers,
            dirty: false,
        }
    }

    /// Remember that `peer` was reachable at `addr` at `now` (Unix seconds).
    pub fn saw(&mut self, peer: &PeerId, addr: &Multiaddr, now: u64) {
        let addr = addr.to_string();
        let e = self.peers.entry(peer.to_string()).or_default();
        if e.addrs.last() != Some(&addr) {
            e.addrs.retain(|a| *a != addr);
            e.addrs.push(addr);
            if e.addrs.len() > MAX_ADDRS {
                e.addrs.remove(0);
            }
            self.dirty = true;
        }
        // Last-seen times are coarse on disk: a minute's precision is plenty for eviction.
        if now.saturating_sub(e.last_seen) > 60 {
            e.last_seen = now;
            self.dirty = true;
        }
        if self.peers.len() > MAX_PEERS {
            if let Some(oldest) = self
                .peers
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone())
            {
                self.peers.remove(&oldest);
            }
        }
    }

    /// Remember a peer's name.
    pub fn named(&mut self, peer: &PeerId, name: &str) {
        if let Some(e) = self.peers.get_mut(&peer.to_string()) {
            if e.name.as_deref() != Some(name) {
                e.name = Some(name.to_owned());
                self.dirty = true;
            }
        }
    }

    /// Every remembered peer with its addresses, newest address first.
    pub fn peers(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.peers
            .iter()
            .filter_map(|(id, e)| {
                let id: PeerId = id.parse().ok()?;
                let addrs = e
                    .addrs
                    .iter()
                    .rev()
                    .filter_map(|a| a.parse().ok())
                    .collect();
                Some((id, addrs))
            })
            .collect()
    }

    /// Write the book if it changed (atomically: a crash leaves the old or the new book).
    pub fn save(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(&self.peers).map_err(io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_across_reload_bounded() {
        let dir = std::env::temp_dir().join(format!("veche-peerbook-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let peer = PeerId::random();
        let mut book = PeerBook::load(&dir);
        for port in 0..20u16 {
            let a: Multiaddr = format!("/ip4/10.0.0.1/tcp/{port}").parse().expect("addr");
            book.saw(&peer, &a, 1000);
        }
        book.named(&peer, "library");
        book.save().expect("save");
        let again = PeerBook::load(&dir);
        let peers = again.peers();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].0, peer);
        assert_eq!(peers[0].1.len(), MAX_ADDRS);
        assert_eq!(
            peers[0].1[0].to_string(),
            "/ip4/10.0.0.1/tcp/19",
            "newest first"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
