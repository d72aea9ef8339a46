//! The HTTP API. Errors are JSON: `{"error": code, "message": plain words}`.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use veche_node::{is_meeting_id, CreateMeetingError, SetDocError};

use crate::{Ctx, Scheme};

/// Defines [`ApiCode`] from one list: each variant, its text, and `ALL` (complete by
/// construction, so the documentation test sees every code).
macro_rules! api_codes {
    ($($(#[$doc:meta])* $variant:ident => $text:literal,)*) => {
        /// Every code the HTTP API answers in `error`, each documented in `docs/protocol.md`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ApiCode {
            $($(#[$doc])* $variant,)*
        }

        impl ApiCode {
            /// All of them.
            #[cfg(test)]
            pub const ALL: &'static [ApiCode] = &[$(ApiCode::$variant),*];

            /// As it appears in the answer.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ApiCode::$variant => $text,)*
                }
            }
        }
    };
}

api_codes! {
    /// The meeting already has a host, or belongs to another node (409).
    AlreadySigned => "already_signed",
    /// Not a valid signed document for this meeting (400).
    BadDoc => "bad_doc",
    /// Not a node id (400).
    BadPeerId => "bad_peer_id",
    /// A body that is not the JSON the request takes.
    BadRequest => "bad_request",
    /// A revocation not signed by this meeting's host, malformed, or no host (400).
    BadRevocation => "bad_revocation",
    /// An end that does not check out: malformed, for another meeting, stale (400).
    BadAction => "bad_action",
    /// Deleting a meeting takes an end signed by the host's own key (403).
    NotHost => "not_host",
    /// A meeting title empty, over 200 characters or with control characters.
    BadTitle => "bad_title",
    /// A bug in the node (500).
    Internal => "internal",
    /// The node asked refused or answered something else (502).
    NodeRefused => "node_refused",
    /// The node a meeting was learned from cannot be reached (504).
    NodeUnreachable => "node_unreachable",
    /// No or a wrong `claim` (403).
    NotCreator => "not_creator",
    /// No such page or API (404).
    NotFound => "not_found",
    /// The operator's view asked for off the loopback listener (403).
    OperatorOnly => "operator_only",
    /// This client created or looked up meetings too fast (429).
    RateLimited => "rate_limited",
    /// The change could not be written to disk; nothing changed (500).
    Storage => "storage",
    /// The node keeps as many meetings as it may (10,000).
    TooManyMeetings => "too_many_meetings",
    /// The node is shutting down (503).
    Unavailable => "unavailable",
    /// No meeting with this id here (404).
    UnknownMeeting => "unknown_meeting",
    /// The node a hello was sent to could not be reached (504).
    Unreachable => "unreachable",
    /// `Host` names no name of this node (403).
    BadHost => "bad_host",
    /// A browser request from another origin (403).
    BadOrigin => "bad_origin",
    /// A recording's download without a link its host was given (403).
    NotAllowed => "not_allowed",
}

/// An HTTP error with a code and plain words.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ApiCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ApiCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn unknown_meeting() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ApiCode::UnknownMeeting,
            "There is no meeting with this id on this node.",
        )
    }

    fn engine_gone() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ApiCode::Unavailable,
            "The node is shutting down.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.code.as_str(), "message": self.message })),
        )
            .into_response()
    }
}

/// A body that is not the JSON the request takes: `expected` says what it takes.
fn bad_body(e: &axum::extract::rejection::JsonRejection, expected: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ApiCode::BadRequest,
        format!("Expected {expected}: {}", e.body_text()),
    )
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
    ApiError::new(
        StatusCode::NOT_FOUND,
        ApiCode::NotFound,
        "No such page or API.",
    )
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutDoc {
    doc: String,
    /// The secret `POST /api/meetings` gave the meeting's creator.
    claim: String,
}

/// `PUT /api/meetings/{id}/doc`: the host's signed meeting document, from the meeting's
/// creator (with the secret its creation answered). Checked by the meeting's rules
/// (signature, id) and stored durably before the answer; the first one stands.
pub(crate) async fn put_doc(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    body: Result<Json<PutDoc>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    if !is_meeting_id(&id) {
        return Err(ApiError::unknown_meeting());
    }
    let Json(req) =
        body.map_err(|e| bad_body(&e, "{\"doc\": \"<token>\", \"claim\": \"<secret>\"}"))?;
    let store = ctx.app.meetings.clone();
    let id2 = id.clone();
    let stored = tokio::task::spawn_blocking(move || {
        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
        let m = store
            .get(&id2)
            .ok_or(PutDocError::Store(SetDocError::Unknown))?;
        let change = m
            .rules
            .check_doc(&id2, &req.doc, None)
            .map_err(PutDocError::Bad)?
            .ok_or(PutDocError::Store(SetDocError::AlreadySigned))?;
        store
            .set_doc(&id2, &req.claim, &change)
            .map_err(PutDocError::Store)?;
        Ok::<_, PutDocError>(store.get(&id2).and_then(|m| m.rules.doc().cloned()))
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiCode::Internal,
            "storing failed",
        )
    })?;
    let doc = stored
        .map_err(|e| match e {
            PutDocError::Bad(e @ veche_meeting::Refused::Conflict) => {
                ApiError::new(StatusCode::CONFLICT, ApiCode::AlreadySigned, e.to_string())
            }
            PutDocError::Bad(e) => {
                ApiError::new(StatusCode::BAD_REQUEST, ApiCode::BadDoc, e.to_string())
            }
            PutDocError::Store(SetDocError::Unknown) => ApiError::unknown_meeting(),
            PutDocError::Store(e @ (SetDocError::AlreadySigned | SetDocError::Remote)) => {
                ApiError::new(StatusCode::CONFLICT, ApiCode::AlreadySigned, e.to_string())
            }
            PutDocError::Store(e @ SetDocError::NotCreator) => {
                ApiError::new(StatusCode::FORBIDDEN, ApiCode::NotCreator, e.to_string())
            }
            PutDocError::Store(e) => {
                tracing::error!(error = %e, "cannot save a meeting document");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ApiCode::Storage,
                    e.to_string(),
                )
            }
        })?
        .ok_or_else(ApiError::unknown_meeting)?;
    tracing::info!(meeting = %id, host = %doc.body.host.fingerprint(), "meeting signed by its host");
    Ok(Json(json!({ "id": id, "host": doc.body.host, "policy": doc.body.policy, "lobby": doc.body.lobby }))
        .into_response())
}

enum PutDocError {
    Bad(veche_meeting::Refused),
    Store(SetDocError),
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
    let Json(req) = body.map_err(|e| bad_body(&e, "{\"revocation\": \"<token>\"}"))?;
    use crate::rules::Undecided;
    let (invite, new) = crate::revocation::take(&ctx.app.meetings, &id, &req.revocation)
        .await
        .map_err(|e| match e {
            Undecided::Unknown => ApiError::unknown_meeting(),
            Undecided::Refused(e) => ApiError::new(
                StatusCode::BAD_REQUEST,
                ApiCode::BadRevocation,
                e.to_string(),
            ),
            Undecided::Storage(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ApiCode::Storage,
                e.to_string(),
            ),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteMeeting {
    /// An end action signed by the host's own key, fresh.
    end: String,
}

/// `DELETE /api/meetings/{id}`: the host ends the meeting and deletes it from this node at
/// once (not after the retention period). The other nodes of the meeting are passed the end
/// and forget the meeting after their own retention.
pub(crate) async fn delete_meeting(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    body: Result<Json<DeleteMeeting>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    if !is_meeting_id(&id) {
        return Err(ApiError::unknown_meeting());
    }
    let Json(req) = body.map_err(|e| bad_body(&e, "{\"end\": \"<an end signed by the host>\"}"))?;
    // Asked before the meeting (and the nodes it was learned from) is gone.
    let nodes = crate::nodes::meeting_nodes(&ctx, &id).await;
    use crate::rules::Undecided;
    use veche_meeting::Refused;
    crate::moderation::delete(
        &ctx.app.engine,
        (&ctx.app.meetings, &ctx.app.lobby),
        &id,
        &req.end,
    )
    .await
    .map_err(|e| match e {
        Undecided::Unknown => ApiError::unknown_meeting(),
        Undecided::Refused(
            e @ (Refused::NotTheHost | Refused::NoHost | Refused::SignerRemoved),
        ) => ApiError::new(StatusCode::FORBIDDEN, ApiCode::NotHost, e.to_string()),
        Undecided::Refused(e) => {
            ApiError::new(StatusCode::BAD_REQUEST, ApiCode::BadAction, e.to_string())
        }
        Undecided::Storage(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiCode::Storage,
            e.to_string(),
        ),
    })?;
    for node in nodes {
        let request = veche_net::protocol::Request::Action {
            meeting: id.clone(),
            action: req.end.clone(),
        };
        crate::nodes::tell_one(&ctx, &node, request);
    }
    Ok(Json(json!({ "id": id, "deleted": true })).into_response())
}

pub(crate) async fn create_meeting(
    State(ctx): State<Ctx>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Json<CreateMeeting>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    // Every meeting is kept on disk: a client gets a budget of them.
    let ip = client.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0 .0.ip());
    let allowed = {
        let mut c = ctx.app.creations.lock().unwrap_or_else(|p| p.into_inner());
        c.take(ip, std::time::Instant::now())
    };
    if !allowed {
        tracing::info!(client = %ip, "meeting creation rate limited");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ApiCode::RateLimited,
            "Too many meetings created from this address; wait a minute.",
        ));
    }
    let Json(req) = body.map_err(|e| bad_body(&e, "{\"title\": \"...\"}"))?;
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
            ApiCode::Internal,
            "meeting creation failed",
        )
    })?;
    let (meeting, claim) = created.map_err(|e| match e {
        CreateMeetingError::BadTitle => {
            ApiError::new(StatusCode::BAD_REQUEST, ApiCode::BadTitle, e.to_string())
        }
        CreateMeetingError::TooMany => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            ApiCode::TooManyMeetings,
            e.to_string(),
        ),
        _ => {
            tracing::error!(error = %e, "cannot save a meeting");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ApiCode::Storage,
                e.to_string(),
            )
        }
    })?;
    tracing::info!(meeting = %meeting.id, "meeting created");
    ctx.app.net.provide(&meeting.id).await;
    let url = meeting_url(&ctx, &headers, &meeting.id);
    Ok((
        StatusCode::CREATED,
        // `claim` lets this creator, and nobody else, sign the meeting as its host.
        Json(json!({ "id": meeting.id, "title": meeting.title, "url": url, "claim": claim })),
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
    // A JSON body (`{}`): a cross-site form cannot send one.
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let _ = body.map_err(|e| bad_body(&e, "a JSON body ({})"))?;
    use veche_net::HelloError;
    match ctx.app.net.hello(&id).await {
        Ok(r) => Ok(Json(r).into_response()),
        Err(e @ HelloError::BadPeerId(_)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ApiCode::BadPeerId,
            e.to_string(),
        )),
        Err(e @ HelloError::Unreachable(_)) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            ApiCode::Unreachable,
            e.to_string(),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ApiCode::Unavailable,
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
    if let Ok(all) = ctx.app.engine.reception(None).await {
        ctx.app
            .node_metrics
            .update_reception(all.iter().map(|r| &r.reception));
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
    /// The host key's pin (22 characters) the link carries (the `host` of a meeting link).
    host: Option<String>,
}

/// `GET /api/meetings/{id}[?node=PEER&host=FP]`: what anyone may learn of a meeting (that
/// it exists, its title, how one gets in) and the link to share. With `node`, a meeting
/// this node does not know yet is looked up there first. Who is in it is not here: people
/// get that over their socket once let in (and the operator at `/people` on loopback).
pub(crate) async fn get_meeting(
    State(ctx): State<Ctx>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<MeetingQuery>,
) -> Result<Response, ApiError> {
    if !is_meeting_id(&id) {
        return Err(ApiError::unknown_meeting());
    }
    let pin = q.host.as_deref().filter(|h| {
        h.len() == 22
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let known = |ctx: &Ctx| crate::rules::read(&ctx.app.view, &id, Clone::clone);
    let mut meeting = known(&ctx);
    if meeting.is_none() {
        // Learning a meeting keeps a record: a client gets a budget of those too.
        let ip = client.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0 .0.ip());
        let allowed = {
            let mut c = ctx.app.creations.lock().unwrap_or_else(|p| p.into_inner());
            c.take(ip, std::time::Instant::now())
        };
        if !allowed {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ApiCode::RateLimited,
                "Too many meetings looked up from this address; wait a minute.",
            ));
        }
    }
    if let Some(node) = q
        .node
        .as_deref()
        .filter(|n| !n.is_empty() && meeting.is_none())
    {
        // The first node it is learned from (and the host the link pins) stand.
        crate::learn::learn_remote(&ctx, &id, node, pin).await?;
        meeting = known(&ctx);
    } else if meeting.is_none() {
        // Only the id: ask the DHT which nodes carry it.
        crate::learn::find_remote(&ctx, &id).await?;
        meeting = known(&ctx);
    }
    let meeting = meeting.ok_or_else(ApiError::unknown_meeting)?;
    let url = meeting_url(&ctx, &headers, &id);
    // Another node's browser opens this meeting through its own node, which finds this one
    // and refuses a document signed by any host but this one.
    let home = meeting
        .nodes
        .first()
        .cloned()
        .unwrap_or_else(|| ctx.app.node.id.clone());
    let outline = meeting.rules.outline();
    let mut share = format!("{url}?node={home}");
    if let Some(fp) = outline.host.as_deref().or(meeting.pin.as_deref()) {
        share.push_str(&format!("&host={fp}"));
    }
    Ok(Json(json!({
        "id": id,
        "title": meeting.title,
        "url": url,
        "link": share,
        "host": home,
        "host_key": outline.host,
        "signed": outline.signed,
        "invite_only": outline.invite_only,
        "waiting_room": outline.waiting_room,
        "ended": outline.ended,
    }))
    .into_response())
}

type Client = axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>;

/// The operator's views of meeting `id` are answered on the loopback HTTP listener only:
/// whoever can reach it is on the node's own machine (a browser elsewhere reaches HTTPS or
/// nothing). Then the meeting must be known here.
fn operator_view(
    ctx: &Ctx,
    client: Option<&Client>,
    id: &str,
    refusal: &'static str,
) -> Result<(), ApiError> {
    let loopback = client.is_some_and(|c| c.0 .0.ip().is_loopback());
    if !loopback || ctx.scheme != Scheme::Http {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ApiCode::OperatorOnly,
            refusal,
        ));
    }
    if !is_meeting_id(id) || crate::rules::read(&ctx.app.view, id, |_| ()).is_none() {
        return Err(ApiError::unknown_meeting());
    }
    Ok(())
}

/// `GET /api/meetings/{id}/attendance`: who was in the meeting on this node and when, as
/// CSV (`veche attendance`). For the operator, on loopback only: the host has it over
/// their socket, and nobody else.
pub(crate) async fn get_attendance(
    State(ctx): State<Ctx>,
    client: Option<Client>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    operator_view(
        &ctx,
        client.as_ref(),
        &id,
        "A meeting's attendance is given only to its host, and to the node's operator on the node's own machine.",
    )?;
    let csv = crate::attendance::export(&ctx.app.meetings, &id, &ctx.app.node.id)
        .await
        .map_err(|e| {
            tracing::error!(meeting = %id, error = %e, "cannot read the attendance");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ApiCode::Storage,
                format!("the attendance cannot be read: {e}"),
            )
        })?;
    let disposition = format!(
        "attachment; filename=\"{}\"",
        crate::attendance::file_name(&id)
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        csv,
    )
        .into_response())
}

/// The download link's ticket.
#[derive(Debug, Deserialize)]
pub(crate) struct TicketQuery {
    #[serde(default)]
    ticket: String,
}

/// `GET /api/meetings/{id}/recordings/{name}?ticket=…`: one recording file, for whoever holds
/// a link its host was given over their socket (`recordings`, the meeting's rules decide who
/// may have one). Streamed from disk.
pub(crate) async fn get_recording(
    State(ctx): State<Ctx>,
    Path((id, name)): Path<(String, String)>,
    Query(q): Query<TicketQuery>,
) -> Result<Response, ApiError> {
    let recordings = &ctx.app.recordings;
    if !recordings.admits(&q.ticket, &id, &name) {
        tracing::info!(meeting = %id, "recording download without a valid link refused");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ApiCode::NotAllowed,
            "A recording is downloaded only by its meeting's host, from the meeting's page (the link works for ten minutes).",
        ));
    }
    let Some(path) = veche_node::recordings::path_of(recordings.data(), &id, &name) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ApiCode::NotFound,
            "this recording is no longer on the node",
        ));
    };
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiCode::Storage,
            format!("the recording cannot be read: {e}"),
        )
    })?;
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let stream = futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "video/webm".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}-{name}\""),
            ),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// `GET /api/meetings/{id}/people`: who is in the meeting on this node and, per other node
/// carrying it, the media path. For the operator: answered on loopback only (the page on
/// the node's own machine shows it in the People panel; others get people over their
/// socket).
pub(crate) async fn get_people(
    State(ctx): State<Ctx>,
    client: Option<Client>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    operator_view(
        &ctx,
        client.as_ref(),
        &id,
        "Who is in a meeting is shown only to the node's operator, on the node's own machine.",
    )?;
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
    // Per browser here: the bandwidth estimate toward it, and for each video it receives
    // the layer its stream carries, the one it should get and why (docs/simulcast.md).
    let reception: Vec<serde_json::Value> = ctx
        .app
        .engine
        .reception(Some(&id))
        .await
        .map_err(|_| ApiError::engine_gone())?
        .into_iter()
        .map(|b| json!({ "participant": b.participant, "estimate_bps": b.reception.estimate, "videos": b.reception.videos, "transport": b.transport }))
        .collect();
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
                "videos_out": l.videos_out,
                "capped": l.capped,
                "transport": l.transport,
            })
        })
        .collect();
    Ok(Json(
        json!({ "id": id, "participants": participants, "nodes": nodes, "reception": reception }),
    )
    .into_response())
}

#[cfg(test)]
mod code_tests {
    use super::ApiCode;

    #[test]
    fn every_http_error_code_is_documented() {
        let doc = include_str!("../../../docs/protocol.md");
        let section = &doc[doc
            .find("### HTTP errors")
            .expect("the HTTP errors section")..];
        assert!(!ApiCode::ALL.is_empty());
        for code in ApiCode::ALL {
            assert!(
                section.contains(&format!("| `{}` |", code.as_str())),
                "{code:?} is not in docs/protocol.md's table of HTTP errors"
            );
        }
    }
}
