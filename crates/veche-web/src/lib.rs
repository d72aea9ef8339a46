//! The web layer of a veche node: the embedded browser UI, the HTTP API and the signaling
//! WebSocket (see `docs/protocol.md`).
//!
//! [`router`] builds the whole HTTP surface for one listener; the binary serves it on
//! loopback HTTP and, with `--lan`, on HTTPS too. Handlers hold no media state: meetings
//! come from the [`veche_node::MeetingStore`], people and media from the engine.

mod api;
mod assets;
pub mod attendance;
pub mod guard;
mod learn;
mod limits;
pub mod lobby;
mod metrics;
pub mod moderation;
mod nodes;
pub mod recording;
pub mod revocation;
pub mod rules;
mod ws;
pub use lobby::Lobby;

use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use veche_media::EngineHandle;
use veche_node::MeetingStore;

pub use api::ApiError;
pub use metrics::NodeMetrics;

/// What the node tells the UI about itself (`GET /api/node`).
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// The node's id (libp2p peer id).
    pub id: String,
    /// veche version.
    pub version: String,
    /// HTTPS addresses other devices on the LAN can open (empty without `--lan`).
    pub lan_urls: Vec<String>,
    /// SHA-256 fingerprint of the HTTPS certificate, when serving HTTPS.
    pub fingerprint: Option<String>,
    /// Names this node answers to besides loopback and its addresses (its host name, the
    /// name of a real certificate): any other `Host` is refused.
    pub host_names: Vec<String>,
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The media engine.
    pub engine: EngineHandle,
    /// The meetings this node carries: the one writer (used on blocking threads only).
    pub meetings: Arc<Mutex<MeetingStore>>,
    /// What the store holds, for reading on the async runtime.
    pub view: veche_node::MeetingView,
    /// About this node.
    pub node: Arc<NodeInfo>,
    /// The control plane.
    pub net: veche_net::NetHandle,
    /// One Prometheus registry for libp2p's metrics and the node's.
    pub registry: Arc<Mutex<prometheus_client::registry::Registry>>,
    /// The node's own metrics, registered in `registry`.
    pub node_metrics: NodeMetrics,
    /// Who waits in each meeting's lobby, and who may let them in.
    pub lobby: Arc<Mutex<lobby::Lobby>>,
    /// Meetings each client may still create.
    pub creations: Arc<Mutex<limits::PerClient>>,
    /// Moderation actions carried out lately (none is carried out twice).
    pub recent: Arc<Mutex<moderation::Recent>>,
    /// The recordings this node makes and keeps.
    pub recordings: Arc<recording::Recordings>,
}

/// Which scheme a listener serves, for the absolute links the API returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (loopback by default).
    Http,
    /// HTTPS (LAN).
    Https,
}

#[derive(Clone)]
pub(crate) struct Ctx {
    pub app: AppState,
    pub scheme: Scheme,
}

/// Every route of the node, for one listener.
pub fn router(app: AppState, scheme: Scheme) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/m/{id}", get(assets::index))
        .route("/assets/{file}", get(assets::asset))
        .route("/healthz", get(api::healthz))
        .route("/api/node", get(api::node))
        .route("/api/meetings", post(api::create_meeting))
        .route(
            "/api/meetings/{id}",
            get(api::get_meeting).delete(api::delete_meeting),
        )
        .route("/api/meetings/{id}/people", get(api::get_people))
        .route("/api/meetings/{id}/attendance", get(api::get_attendance))
        .route(
            "/api/meetings/{id}/recordings/{name}",
            get(api::get_recording),
        )
        .route("/api/meetings/{id}/doc", axum::routing::put(api::put_doc))
        .route("/api/meetings/{id}/revocations", post(api::post_revocation))
        .route("/ws", get(ws::upgrade))
        .route("/peers", get(assets::peers_page))
        .route("/api/peers", get(api::peers))
        .route("/api/peers/{id}/hello", post(api::hello))
        .route("/metrics", get(api::metrics))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            guard::Names(Arc::new(app.node.host_names.clone())),
            guard::check,
        ))
        .with_state(Ctx { app, scheme })
}
