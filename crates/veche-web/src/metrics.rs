//! The node's own Prometheus metrics, beside libp2p's in one registry.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use veche_core::Reception;
use veche_media::EngineStats;

/// Label pairs of a series.
type Labels = Vec<(&'static str, &'static str)>;

/// Gauges read from the engine and the network when `/metrics` is scraped.
#[derive(Clone, Default)]
pub struct NodeMetrics {
    participants: Gauge,
    peers: Gauge,
    datagrams_in: Gauge,
    datagrams_out: Gauge,
    datagrams_dropped: Gauge,
    frames_forwarded: Gauge,
    /// Videos this node's browsers receive, by source, layer carried and why (no meeting
    /// or person in the labels: whoever reaches `/metrics` learns no one's name or room).
    video_streams: Family<Labels, Gauge>,
    /// The bandwidth estimates toward this node's browsers: least, median, most.
    estimates: Family<Labels, Gauge>,
    receivers_without_estimate: Gauge,
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
        r.register(
            "video_streams",
            "Videos this node's browsers receive, by source, the layer their stream carries (q, h, f; picture: no layers; none) and why (view: what the tile needs; hidden; bandwidth: the link has no room for more)",
            m.video_streams.clone(),
        );
        r.register(
            "receiver_estimate_bps",
            "Bandwidth estimate toward this node's browsers, bits per second (quantile 0: the least, 0.5: the median, 1: the most)",
            m.estimates.clone(),
        );
        r.register(
            "receivers_without_estimate",
            "Browsers whose connection has no bandwidth estimate yet",
            m.receivers_without_estimate.clone(),
        );
        m
    }

    /// What each browser here receives (`Engine::reception`), summed up.
    pub(crate) fn update_reception<'a>(&self, all: impl IntoIterator<Item = &'a Reception>) {
        self.video_streams.clear();
        self.estimates.clear();
        let mut estimates = Vec::new();
        let mut without = 0i64;
        for r in all {
            match r.estimate {
                Some(e) => estimates.push(e),
                None => without += 1,
            }
            for v in &r.videos {
                let labels = vec![
                    ("source", v.source.as_str()),
                    ("carries", v.carried()),
                    ("reason", v.reason.as_str()),
                ];
                self.video_streams.get_or_create(&labels).inc();
            }
        }
        self.receivers_without_estimate.set(without);
        estimates.sort_unstable();
        if let (Some(least), Some(most)) = (estimates.first(), estimates.last()) {
            let median = estimates[estimates.len() / 2];
            let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            for (q, v) in [("0", *least), ("0.5", median), ("1", *most)] {
                self.estimates
                    .get_or_create(&vec![("quantile", q)])
                    .set(g(v));
            }
        }
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
