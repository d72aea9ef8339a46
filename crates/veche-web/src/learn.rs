//! Learning a meeting from another node. A stranger learns only that a meeting exists and
//! its title; the host's document and what was decided under it come only for a person who
//! is really let in (their proof, made for this node, is checked by the node asked), and
//! are checked here against the host the link pinned and the document already stored.

use axum::http::StatusCode;
use veche_media::ErrorCode;
use veche_meeting::{Change, Presence, Refused};
use veche_net::protocol::{ErrorCode as NetCode, Request, Response as NetResponse};
use veche_net::HelloError;

use crate::api::{ApiCode, ApiError};
use crate::rules::{self, Undecided};
use crate::Ctx;

/// A node met moments ago may not be dialable yet (its relay reservation or DHT record
/// still propagating): a few tries, a second apart.
async fn ask(
    ctx: &Ctx,
    peer: veche_net::PeerId,
    request: Request,
) -> Result<NetResponse, HelloError> {
    let mut asked = Err(HelloError::Stopped);
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        asked = ctx.app.net.request(peer, request.clone()).await;
        if !matches!(asked, Err(HelloError::Unreachable(_))) {
            break;
        }
    }
    asked.map(|r| r.response)
}

/// Ask `node` whether it carries meeting `id` and remember it (its title, that node, and
/// the host key `pin` the link named), so browsers here can open it.
pub(crate) async fn learn_remote(
    ctx: &Ctx,
    id: &str,
    node: &str,
    pin: Option<&str>,
) -> Result<(), ApiError> {
    let peer: veche_net::PeerId = node.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ApiCode::BadPeerId,
            format!("{node:?} is not a node id"),
        )
    })?;
    if node == ctx.app.node.id {
        return Err(ApiError::unknown_meeting());
    }
    let request = Request::Meeting {
        id: id.to_owned(),
        presence: None,
    };
    let title = match ask(ctx, peer, request).await {
        Ok(NetResponse::Meeting { title, .. }) => title,
        Ok(NetResponse::Error {
            code: NetCode::UnknownMeeting,
            ..
        }) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ApiCode::UnknownMeeting,
                "The node in the link does not know this meeting.",
            ))
        }
        Ok(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                ApiCode::NodeRefused,
                format!("The node in the link answered: {other:?}"),
            ))
        }
        Err(e @ (HelloError::Unreachable(_) | HelloError::BadPeerId(_))) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                ApiCode::NodeUnreachable,
                format!("Cannot reach the node that hosts this meeting ({e})."),
            ))
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ApiCode::Unavailable,
                e.to_string(),
            ))
        }
    };
    let store = ctx.app.meetings.clone();
    let (id2, node2, pin) = (id.to_owned(), node.to_owned(), pin.map(str::to_owned));
    tokio::task::spawn_blocking(move || {
        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
        store.add_remote(&id2, &title, &node2, pin.as_deref())
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiCode::Internal,
            "store failed",
        )
    })?
    .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, ApiCode::NodeRefused, e.to_string()))?;
    // This node carries it now too: others with only the id can find it here as well.
    ctx.app.net.provide(id).await;
    Ok(())
}

/// Find a meeting known only by its id through the DHT's provider records. (No host is
/// pinned then: the first document a provider gives for a person let in stands.)
pub(crate) async fn find_remote(ctx: &Ctx, id: &str) -> Result<(), ApiError> {
    let providers = ctx.app.net.find_providers(id).await;
    let mut last = ApiError::unknown_meeting();
    for p in providers.iter().take(3) {
        match learn_remote(ctx, id, &p.to_string(), None).await {
            Ok(()) => {
                tracing::info!(meeting = %id, node = %p, "found a meeting's node in the DHT");
                return Ok(());
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Why a person's join could not be checked with the meeting's home node.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The home node refused this person (its rules, checked there).
    #[error("{0}")]
    Refused(String),
    /// What it answered does not check out here.
    #[error("the meeting's node sent a document that does not check out: {0}")]
    Forged(Refused),
    /// It cannot be reached.
    #[error("cannot reach the node that hosts this meeting: {0}")]
    Unreachable(String),
    /// It could not be stored.
    #[error("the node could not save the meeting; try again")]
    Storage,
    /// The invite has a use limit, counted by the meeting's home node, which is out of
    /// reach.
    #[error("this invite can be used a limited number of times, and the meeting's home node, which counts them, cannot be reached ({0}); try again, or ask the host for a link without a limit")]
    Uncounted(String),
}

impl FetchError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            FetchError::Refused(_) | FetchError::Forged(_) => ErrorCode::InviteRefused,
            FetchError::Unreachable(_) | FetchError::Uncounted(_) => ErrorCode::NodeUnreachable,
            FetchError::Storage => ErrorCode::Internal,
        }
    }
}

/// For a meeting learned from another node whose host's document is not here yet: ask the
/// nodes it was learned from, showing this person's proof, and store the document (checked
/// against the pinned host) and what came with it (checked against that document).
pub(crate) async fn fetch_doc(ctx: &Ctx, id: &str, person: &Presence) -> Result<(), FetchError> {
    let nodes = rules::read(&ctx.app.view, id, |m| {
        (m.rules.doc().is_none() && !m.nodes.is_empty()).then(|| m.nodes.clone())
    })
    .flatten();
    let Some(nodes) = nodes else {
        return Ok(());
    };
    let mut last = FetchError::Unreachable("no node known".into());
    for node in nodes {
        let Ok(peer) = node.parse::<veche_net::PeerId>() else {
            continue;
        };
        let request = Request::Meeting {
            id: id.to_owned(),
            presence: Some(veche_trust::encode_token(person)),
        };
        let (doc, revocations, actions, state) = match ask(ctx, peer, request).await {
            Ok(NetResponse::Meeting {
                doc,
                revocations,
                actions,
                state,
                ..
            }) => (doc, revocations, actions, state),
            Ok(NetResponse::Error { message, .. }) => {
                last = FetchError::Refused(message);
                continue;
            }
            Ok(other) => {
                last = FetchError::Refused(format!("the meeting's node answered {other:?}"));
                continue;
            }
            Err(e) => {
                last = FetchError::Unreachable(e.to_string());
                continue;
            }
        };
        let m = id.to_owned();
        let decided = rules::decide(&ctx.app.meetings, id, move |rec| {
            let Some(doc) = doc else {
                // Not signed at its home: anyone with the link, unless the link pinned a host.
                return match rec.pin {
                    Some(_) => Err(Refused::WrongHost),
                    None => Ok(((), None)),
                };
            };
            let Some(change) = rec.rules.check_doc(&m, &doc, rec.pin.as_deref())? else {
                return Ok(((), None));
            };
            let mut next = rec.rules.clone();
            next.apply(&change);
            let (history, refused) = next.check_history(&m, &revocations, &actions, &state, rules::now_ms());
            for e in refused {
                tracing::warn!(meeting = %m, error = %e, "a node sent history that does not check out; left out");
            }
            Ok(((), Some(Change::History(vec![change, history]))))
        })
        .await;
        return match decided {
            Ok(()) => {
                tracing::info!(meeting = %id, %node, "meeting's document learned for a person let in");
                Ok(())
            }
            Err(Undecided::Refused(e)) => {
                tracing::warn!(meeting = %id, %node, error = %e, "a node sent a meeting document that does not check out");
                Err(FetchError::Forged(e))
            }
            Err(_) => Err(FetchError::Storage),
        };
    }
    Err(last)
}

/// For a meeting learned from another node: a join that would use a limited invite is
/// counted first by the meeting's home node (the one it was learned from), so that a
/// one-use link opened at two nodes lets in one person, not one at each. Nothing to do for
/// other joins, or for one the rules here refuse anyway (the join says why).
pub(crate) async fn count_use(ctx: &Ctx, id: &str, person: &Presence) -> Result<(), FetchError> {
    let me = ctx.app.node.id.clone();
    let nodes = rules::read(&ctx.app.view, id, |m| {
        let p = person.person(&me);
        (!m.nodes.is_empty() && m.rules.would_use(id, &p, rules::now_ms())).then(|| m.nodes.clone())
    })
    .flatten();
    let Some(nodes) = nodes else {
        return Ok(());
    };
    let mut last = FetchError::Uncounted("no node known".into());
    for node in nodes {
        let Ok(peer) = node.parse::<veche_net::PeerId>() else {
            continue;
        };
        let request = Request::UseInvite {
            meeting: id.to_owned(),
            presence: veche_trust::encode_token(person),
        };
        match ask(ctx, peer, request).await {
            Ok(NetResponse::Ok) => {
                tracing::info!(meeting = %id, %node, "an invite's use counted by the meeting's home node");
                return Ok(());
            }
            Ok(NetResponse::Error { message, .. }) => last = FetchError::Refused(message),
            Ok(other) => {
                last = FetchError::Refused(format!("the meeting's node answered {other:?}"))
            }
            Err(e) => last = FetchError::Uncounted(e.to_string()),
        }
    }
    Err(last)
}
