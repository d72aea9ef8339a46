//! The other nodes of a meeting, as this node knows them, and telling them something every
//! node must check for itself (moderation actions, revocations).

use crate::Ctx;

/// The other nodes of `meeting` this node knows: those it learned the meeting from and
/// those it has media links with.
pub(crate) async fn meeting_nodes(ctx: &Ctx, meeting: &str) -> Vec<String> {
    let mut nodes: Vec<String> =
        { crate::rules::read(&ctx.app.view, meeting, |m| m.nodes.clone()).unwrap_or_default() };
    if let Ok(links) = ctx.app.engine.links(meeting).await {
        nodes.extend(links.into_iter().map(|l| l.node));
    }
    nodes.sort();
    nodes.dedup();
    nodes.retain(|n| *n != ctx.app.node.id);
    nodes
}

/// Send `request` to every other node of `meeting`, without waiting; refusals are logged.
pub(crate) async fn tell(ctx: &Ctx, meeting: &str, request: veche_net::protocol::Request) {
    for node in meeting_nodes(ctx, meeting).await {
        tell_one(ctx, &node, request.clone());
    }
}

/// Send `request` to `node`, without waiting; a refusal is logged.
pub(crate) fn tell_one(ctx: &Ctx, node: &str, request: veche_net::protocol::Request) {
    let Ok(peer) = node.parse() else { return };
    let (net, node) = (ctx.app.net.clone(), node.to_owned());
    tokio::spawn(async move {
        match net.request(peer, request).await {
            Ok(r) if matches!(r.response, veche_net::protocol::Response::Ok) => {}
            other => {
                tracing::info!(%node, result = ?other.map(|r| r.response), "another node did not take a meeting update")
            }
        }
    });
}
