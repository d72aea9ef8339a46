//! The node's own Prometheus metrics, beside libp2p's in one registry.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use veche_media::EngineStats;

/// Gauges read from the engine and the network when `/metrics` is scraped.
#[derive(Clone, Default)]
pub struct NodeMetrics {
    participants: Gauge,
    peers: Gauge,
    datagrams_in: Gauge,
    datagrams_out: Gauge,
    datagrams_dropped: Gauge,
    frames_forwarded: Gauge,
}

impl NodeMetrics {
    /// Register the node's metrics under `veche_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("veche");
        r.register(
            "participants",
            "Browsers connected to this node",
            m.participants.clone(),
        );
        r.register(
            "connected_nodes",
            "Other veche nodes connected",
            m.peers.clone(),
        );
        r.register(
            "media_datagrams_received",
            "UDP datagrams received on the media port",
            m.datagrams_in.clone(),
        );
        r.register(
            "media_datagrams_sent",
            "UDP datagrams sent from the media port",
            m.datagrams_out.clone(),
        );
        r.register(
            "media_datagrams_dropped",
            "Datagrams dropped because the engine queue was full",
            m.datagrams_dropped.clone(),
        );
        r.register(
            "media_frames_forwarded",
            "Media frames written to subscribers",
            m.frames_forwarded.clone(),
        );
        m
    }

    pub(crate) fn update(&self, s: &EngineStats, peers: usize) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.participants.set(g(s.peers as u64));
        self.peers.set(g(peers as u64));
        self.datagrams_in.set(g(s.datagrams_in));
        self.datagrams_out.set(g(s.datagrams_out));
        self.datagrams_dropped.set(g(s.datagrams_dropped));
        self.frames_forwarded.set(g(s.frames_forwarded));
    }
}
