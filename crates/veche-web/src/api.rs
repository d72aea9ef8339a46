//! The HTTP API. Errors are JSON: `{"error": code, "message": plain words}`.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use veche_node::{is_meeting_id, CreateMeetingError, SetDocError};

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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutDoc {
    doc: String,
}

/// `PUT /api/meetings/{id}/doc`: the host's signed meeting document. Checked (signature,
/// id) before it is stored, and stored durably before the answer; the first one stands.
pub(crate) async fn put_doc(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    body: Result<Json<PutDoc>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    if !is_meeting_id(&id) {
        return Err(ApiError::unknown_meeting());
    }
    let Json(req) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("Expected {{\"doc\": \"<token>\"}}: {}", e.body_text()),
        )
    })?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_doc", m);
    let doc: veche_trust::Signed<veche_trust::MeetingDoc> =
        veche_trust::decode_token(&req.doc).map_err(|e| bad(e.to_string()))?;
    veche_trust::check_meeting(&doc).map_err(|e| bad(e.to_string()))?;
    if doc.body.id != id {
        return Err(bad("the document is for another meeting".into()));
    }
    let store = ctx.app.meetings.clone();
    let token = req.doc.clone();
    let id2 = id.clone();
    let stored = tokio::task::spawn_blocking(move || {
        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
        store.set_doc(&id2, &token)
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "storing failed",
        )
    })?;
    stored.map_err(|e| match e {
        SetDocError::Unknown => ApiError::unknown_meeting(),
        SetDocError::AlreadySigned | SetDocError::Remote => {
            ApiError::new(StatusCode::CONFLICT, "already_signed", e.to_string())
        }
        _ => {
            tracing::error!(error = %e, "cannot save a meeting document");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
        }
    })?;
    tracing::info!(meeting = %id, host = %doc.body.host.fingerprint(), "meeting signed by its host");
    Ok(Json(json!({ "id": id, "host": doc.body.host, "policy": doc.body.policy, "lobby": doc.body.lobby }))
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostRevocation {
    revocation: String,
}

/// `POST /api/meetings/{id}/revocations`: the host withdraws an invite. Checked against the
/// meeting's signed document and stored durably before the answer; joins with that invite
/// (or any invite signed under it) are refused from then on.
pub(crate) async fn post_revocation(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    body: Result<Json<PostRevocation>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    if !is_meeting_id(&id) {
        return Err(ApiError::unknown_meeting());
    }
    let Json(req) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "Expected {{\"revocation\": \"<token>\"}}: {}",
                e.body_text()
            ),
        )
    })?;
    use crate::revocation::{self, RevocationError};
    let store = ctx.app.meetings.clone();
    let (id2, token) = (id.clone(), req.revocation.clone());
    let stored = tokio::task::spawn_blocking(move || revocation::store(&store, &id2, &token))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "storing failed",
            )
        })?;
    let (invite, new) = stored.map_err(|e| match e {
        RevocationError::UnknownMeeting => ApiError::unknown_meeting(),
        RevocationError::NoHost | RevocationError::Bad(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_revocation", e.to_string())
        }
        RevocationError::Storage(_) => {
            tracing::error!(error = %e, "cannot save a revocation");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
        }
    })?;
    tracing::info!(meeting = %id, %invite, "invite revoked");
    if new {
        // The other nodes of the meeting must refuse the invite too.
        let request = veche_net::protocol::Request::Revocation {
            meeting: id.clone(),
            revocation: req.revocation.clone(),
        };
        crate::nodes::tell(&ctx, &id, request).await;
    }
    Ok(Json(json!({ "id": id, "revoked": invite })).into_response())
}

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
    ctx.app.net.provide(&meeting.id).await;
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

#[derive(Deserialize)]
pub(crate) struct MeetingQuery {
    /// A node that carries the meeting (the `node` hint of a meeting link).
    node: Option<String>,
}

/// Ask `node` about meeting `id` and remember it, so browsers here can join it.
async fn learn_remote(ctx: &Ctx, id: &str, node: &str) -> Result<(), ApiError> {
    use veche_net::protocol::{ErrorCode as NetCode, Request, Response as NetResponse};
    use veche_net::HelloError;
    let peer: veche_net::PeerId = node.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_peer_id",
            format!("{node:?} is not a node id"),
        )
    })?;
    if node == ctx.app.node.id {
        return Err(ApiError::unknown_meeting());
    }
    // A node met moments ago may not be dialable yet (its relay reservation or DHT record
    // still propagating): a few tries, a second apart, before telling the person.
    let mut asked = Err(HelloError::Stopped);
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        asked = ctx
            .app
            .net
            .request(peer, Request::Meeting { id: id.to_owned() })
            .await;
        if !matches!(asked, Err(HelloError::Unreachable(_))) {
            break;
        }
    }
    let (title, doc, revocations, actions) = match asked {
        Ok(r) => match r.response {
            NetResponse::Meeting {
                title,
                doc,
                revocations,
                actions,
                ..
            } => (title, doc, revocations, actions),
            NetResponse::Error {
                code: NetCode::UnknownMeeting,
                ..
            } => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_meeting",
                    "The node in the link does not know this meeting.",
                ))
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "node_refused",
                    format!("The node in the link answered: {other:?}"),
                ))
            }
        },
        Err(e @ (HelloError::Unreachable(_) | HelloError::BadPeerId(_))) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "node_unreachable",
                format!("Cannot reach the node that hosts this meeting ({e})."),
            ))
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ))
        }
    };
    let store = ctx.app.meetings.clone();
    let (id, node) = (id.to_owned(), node.to_owned());
    let key = id.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
        store.add_remote(&id, &title, &node)?;
        // The host's document travels with the meeting: this node then admits and
        // moderates by the same signed rules. Kept only if it checks out for this id.
        if let Some(doc) = doc {
            let checked = veche_trust::decode_token::<veche_trust::Signed<veche_trust::MeetingDoc>>(&doc)
                .and_then(|d| veche_trust::check_meeting(&d).map(|()| d));
            match checked {
                Ok(d) if d.body.id == id => {
                    let _ = store.set_remote_doc(&id, &doc);
                    // With it: the invites the host withdrew, who was removed, whether it is
                    // locked or over; each checked against that document, stored in one write.
                    let mut history = veche_node::History::default();
                    for token in revocations.iter().take(crate::revocation::MAX_SHARED) {
                        match crate::revocation::check(&d.body, token) {
                            Ok(_) => history.revocations.push(token.clone()),
                            Err(e) => tracing::warn!(meeting = %id, %node, error = %e, "a node sent a revocation that does not check out; ignored"),
                        }
                    }
                    let tokens = &actions[actions.len().saturating_sub(veche_node::MAX_ACTIONS)..];
                    crate::moderation::take_past(&id, &d.body, tokens, &mut history);
                    // Without its revocations and removals the meeting would admit whom the
                    // host shut out: not learned at all then.
                    if let Err(e) = store.add_history(&id, &history) {
                        tracing::error!(meeting = %id, error = %e, "cannot save what came with the meeting");
                        return Err(veche_node::CreateMeetingError::Io(std::io::Error::other(e.to_string())));
                    }
                }
                _ => tracing::warn!(meeting = %id, %node, "a node sent a meeting document that does not check out; ignored"),
            }
        }
        Ok::<(), veche_node::CreateMeetingError>(())
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "store failed",
        )
    })?
    .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "node_refused", e.to_string()))?;
    // This node carries it now too: others with only the id can find it here as well.
    ctx.app.net.provide(&key).await;
    Ok(())
}

/// Find a meeting known only by its id through the DHT's provider records.
async fn find_remote(ctx: &Ctx, id: &str) -> Result<(), ApiError> {
    let providers = ctx.app.net.find_providers(id).await;
    let mut last = ApiError::unknown_meeting();
    for p in providers.iter().take(3) {
        match learn_remote(ctx, id, &p.to_string()).await {
            Ok(()) => {
                tracing::info!(meeting = %id, node = %p, "found a meeting's node in the DHT");
                return Ok(());
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// `GET /api/meetings/{id}[?node=PEER]`: the meeting, its participants and, per other node
/// carrying it, the media path. With `node`, a meeting this node does not know yet is
/// looked up there first.
pub(crate) async fn get_meeting(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<MeetingQuery>,
) -> Result<Response, ApiError> {
    if !is_meeting_id(&id) {
        return Err(ApiError::unknown_meeting());
    }
    let known = |ctx: &Ctx| {
        let store = ctx.app.meetings.lock().unwrap_or_else(|p| p.into_inner());
        store.get(&id).cloned()
    };
    let mut meeting = known(&ctx);
    if let Some(node) = q.node.as_deref().filter(|n| !n.is_empty()) {
        let needs = meeting
            .as_ref()
            .is_none_or(|m| !m.nodes.is_empty() && !m.nodes.iter().any(|n| n == node));
        if needs {
            learn_remote(&ctx, &id, node).await?;
            meeting = known(&ctx);
        }
    } else if meeting.is_none() {
        // Only the id: ask the DHT which nodes carry it.
        find_remote(&ctx, &id).await?;
        meeting = known(&ctx);
    }
    let meeting = meeting.ok_or_else(ApiError::unknown_meeting)?;
    let participants = ctx
        .app
        .engine
        .participants(&id)
        .await
        .map_err(|_| ApiError::engine_gone())?;
    let links = ctx
        .app
        .engine
        .links(&id)
        .await
        .map_err(|_| ApiError::engine_gone())?;
    let peers = if links.is_empty() {
        Vec::new()
    } else {
        ctx.app.net.peers().await
    };
    let nodes: Vec<serde_json::Value> = links
        .into_iter()
        .map(|l| {
            let peer = peers.iter().find(|p| p.id == l.node);
            let media = if l.out_connected || l.in_connected {
                "connected"
            } else {
                "connecting"
            };
            json!({
                "id": l.node,
                "name": peer.and_then(|p| p.name.clone()),
                "participants": l.participants,
                "media": media,
                // Straight between the two nodes' media ports, or through a relay node.
                "path": match (&l.via, &l.path) {
                    (Some(_), _) => "relayed",
                    (None, Some(_)) => "direct",
                    (None, None) => "none",
                },
                "via": l.via,
                "media_address": l.path,
                "control": peer.map(|p| if p.direct { "direct" } else { "relayed" }),
                "rtt_ms": peer.and_then(|p| p.rtt_ms),
                "tracks_out": l.tracks_out,
                "tracks_in": l.tracks_in,
                "frames_out": l.frames_out,
                "frames_in": l.frames_in,
                "kbps_out": (l.kbps_out * 10.0).round() / 10.0,
                "kbps_in": (l.kbps_in * 10.0).round() / 10.0,
                "loss_out": l.loss_out,
                "loss_in": l.loss_in,
                "media_rtt_ms": l.media_rtt_ms,
            })
        })
        .collect();
    let url = meeting_url(&ctx, &headers, &id);
    let mut share = url.clone();
    // Another node's browser opens this meeting through its own node, which finds this one.
    let host = meeting
        .nodes
        .first()
        .cloned()
        .unwrap_or_else(|| ctx.app.node.id.clone());
    share.push_str(&format!("?node={host}"));
    Ok(Json(json!({
        "id": id,
        "title": meeting.title,
        "url": url,
        "link": share,
        "host": host,
        "participants": participants,
        "nodes": nodes,
        // Signed by its host: joins and moderation follow the host's document.
        "signed": meeting.doc.is_some(),
    }))
    .into_response())
}
