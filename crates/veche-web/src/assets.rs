//! The embedded UI.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

fn find(name: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, mime, bytes)| (*mime, *bytes))
}

fn serve(name: &str) -> Response {
    match find(name) {
        Some((mime, bytes)) => (
            [
                (header::CONTENT_TYPE, mime),
                // The UI is tied to the node's version; never run a stale copy against it.
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// The single page: landing at `/`, meeting at `/m/{id}` (the script reads the path).
pub(crate) async fn index() -> Response {
    serve("index.html")
}

/// `/peers`: the connected nodes.
pub(crate) async fn peers_page() -> Response {
    serve("peers.html")
}

/// `/assets/{file}`.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    if file.ends_with(".html") {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    serve(&file)
}
