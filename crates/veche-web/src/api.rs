//! The HTTP API. Errors are JSON: `{"error": code, "message": plain words}`.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use veche_node::{is_meeting_id, CreateMeetingError};

use crate::{Ctx, Scheme};

/// An HTTP error with a code and plain words.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn unknown_meeting() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_meeting",
            "There is no meeting with this id on this node.",
        )
    }

    fn engine_gone() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The node is shutting down.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response()
    }
}

/// `GET /healthz`.
pub(crate) async fn healthz(State(ctx): State<Ctx>) -> Response {
    Json(json!({ "status": "ok", "node": ctx.app.node.id, "version": ctx.app.node.version }))
        .into_response()
}

/// `GET /api/node`.
pub(crate) async fn node(State(ctx): State<Ctx>) -> Response {
    Json(ctx.app.node.as_ref().clone()).into_response()
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such page or API.")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateMeeting {
    title: String,
    /// List the meeting to other nodes.
    #[serde(default)]
    public: bool,
}

fn meeting_url(ctx: &Ctx, headers: &HeaderMap, id: &str) -> String {
    let scheme = match ctx.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    // The Host the browser used is the address that works for it; fall back to a relative link.
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) if host.bytes().all(|b| b.is_ascii_graphic()) => {
            format!("{scheme}://{host}/m/{id}")
        }
        _ => format!("/m/{id}"),
    }
}

/// `POST /api/meetings` `{"title": ...}`.
pub(crate) async fn create_meeting(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    body: Result<Json<CreateMeeting>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("Expected {{\"title\": \"...\"}}: {}", e.body_text()),
        )
    })?;
    let store = ctx.app.meetings.clone();
    // The store fsyncs; keep that off the async workers.
    let created = tokio::task::spawn_blocking(move || {
        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
        store.create(&req.title, req.public)
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "meeting creation failed",
        )
    })?;
    let meeting = created.map_err(|e| match e {
        CreateMeetingError::BadTitle => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_title", e.to_string())
        }
        CreateMeetingError::TooMany => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "too_many_meetings",
            e.to_string(),
        ),
        _ => {
            tracing::error!(error = %e, "cannot save a meeting");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
        }
    })?;
    tracing::info!(meeting = %meeting.id, "meeting created");
    let url = meeting_url(&ctx, &headers, &meeting.id);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": meeting.id, "title": meeting.title, "url": url })),
    )
        .into_response())
}

/// `GET /api/peers`: the connected nodes.
pub(crate) async fn peers(State(ctx): State<Ctx>) -> Response {
    Json(ctx.app.net.peers().await).into_response()
}

/// `POST /api/peers/{id}/hello`: ask a node who it is (connecting if needed).
pub(crate) async fn hello(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    use veche_net::HelloError;
    match ctx.app.net.hello(&id).await {
        Ok(r) => Ok(Json(r).into_response()),
        Err(e @ HelloError::BadPeerId(_)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_peer_id",
            e.to_string(),
        )),
        Err(e @ HelloError::Unreachable(_)) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "unreachable",
            e.to_string(),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )),
    }
}

/// `GET /metrics`: Prometheus text, libp2p's metrics and the node's in one registry.
pub(crate) async fn metrics(State(ctx): State<Ctx>) -> Response {
    if let Ok(stats) = ctx.app.engine.stats().await {
        ctx.app
            .node_metrics
            .update(&stats, ctx.app.net.peers().await.len());
    }
    let mut text = String::new();
    {
        let registry = ctx.app.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /api/meetings/{id}`.
pub(crate) async fn get_meeting(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !is_meeting_id(&id) {
        return Err(ApiError::unknown_meeting());
    }
    let title = {
        let store = ctx.app.meetings.lock().unwrap_or_else(|p| p.into_inner());
        store.get(&id).map(|m| m.title.clone())
    };
    let title = title.ok_or_else(ApiError::unknown_meeting)?;
    let participants = ctx
        .app
        .engine
        .participants(&id)
        .await
        .map_err(|_| ApiError::engine_gone())?;
    let url = meeting_url(&ctx, &headers, &id);
    Ok(
        Json(json!({ "id": id, "title": title, "url": url, "participants": participants }))
            .into_response(),
    )
}
