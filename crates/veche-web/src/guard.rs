//! What every request must show before a handler sees it, so that no other web page can
//! use the node through the visitor's browser:
//!
//! - **Host**: a loopback name or one of this machine's own addresses. A page on another
//!   site that points its own name at 127.0.0.1 (DNS rebinding) sends its own name as Host
//!   and is refused.
//! - **Origin** (on the signaling socket and on every request that changes state): absent
//!   (not a browser: curl, `veche join`, another tool on the machine) or this same origin.
//!   Browsers always name the page's origin on a WebSocket and on a cross-site POST or PUT.
//! - **Sec-Fetch-Site** on the API and the socket: absent or `same-origin` (a GET that
//!   makes the node learn a meeting from a node named in it must not come from another
//!   site's image or link either).
//!
//! State-changing requests also take only JSON bodies (their extractors refuse any other
//! content type), which a cross-site form cannot send.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::State;

use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::api::ApiCode;

fn refuse(code: ApiCode, message: String) -> Response {
    let code = code.as_str();
    tracing::info!(code, %message, "request refused");
    (
        StatusCode::FORBIDDEN,
        Json(json!({ "error": code, "message": message })),
    )
        .into_response()
}

/// The host part of a Host header (`name`, `1.2.3.4`, `[::1]`, each with an optional port).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The names the node answers to besides loopback and its addresses (lowercase).
#[derive(Debug, Clone, Default)]
pub struct Names(pub Arc<Vec<String>>);

/// Whether `host` names this node: a loopback name or address, one of `names`, or an
/// address of one of this machine's interfaces.
pub fn is_own_host(host: &str, names: &[String]) -> bool {
    let name = host_name(host).trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") || names.contains(&name) {
        return true;
    }
    let Ok(ip) = name.parse::<IpAddr>() else {
        return false;
    };
    if ip.is_loopback() {
        return true;
    }
    if_addrs::get_if_addrs().is_ok_and(|addrs| addrs.iter().any(|a| a.ip() == ip))
}

/// Whether `origin` is the page served at `host` (either scheme: the node serves HTTP on
/// loopback and HTTPS on the LAN).
fn same_origin(origin: &str, host: &str) -> bool {
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// The middleware: Host on every request, Origin where state can change.
pub async fn check(State(names): State<Names>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let Some(host) = host else {
        return refuse(ApiCode::BadHost, "the request names no host".into());
    };
    if !is_own_host(&host, &names.0) {
        return refuse(
            ApiCode::BadHost,
            format!("{host:?} is not this node: open it by its own address"),
        );
    }
    // Fetch Metadata: a browser says when another site's page makes the request (an image
    // or a form pointing here). Pages may be opened from anywhere (a link in a mail); the
    // API and the socket only from this node's own pages.
    let api = req.uri().path().starts_with("/api/") || req.uri().path() == "/ws";
    let site = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    if api && !matches!(site, "same-origin" | "none") {
        return refuse(
            ApiCode::BadOrigin,
            format!("a {site} page may not use this node's API"),
        );
    }
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || req.uri().path() == "/ws";
    if changes_state {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("null");
            if !same_origin(origin, &host) {
                return refuse(
                    ApiCode::BadOrigin,
                    format!("a page from {origin:?} may not act on this node"),
                );
            }
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_own_addresses_only() {
        let names = vec!["teacher-pc".to_owned(), "teacher-pc.local".to_owned()];
        for h in [
            "localhost:7300",
            "127.0.0.1:7300",
            "[::1]:7300",
            "127.0.0.1",
            "LOCALHOST",
            "Teacher-PC.local:7443",
        ] {
            assert!(is_own_host(h, &names), "{h}");
        }
        for h in [
            "evil.example:7300",
            "attacker.test",
            "8.8.8.8:7300",
            "[2001:db8::1]:1",
            "",
            "teacher-pc.evil.example",
        ] {
            assert!(!is_own_host(h, &names), "{h}");
        }
    }

    #[test]
    fn origin_must_be_the_page_at_this_host() {
        assert!(same_origin("http://localhost:7300", "localhost:7300"));
        assert!(same_origin(
            "https://192.168.1.20:7443",
            "192.168.1.20:7443"
        ));
        assert!(!same_origin("http://evil.example", "localhost:7300"));
        assert!(!same_origin("null", "localhost:7300"));
        assert!(!same_origin("http://localhost:7301", "localhost:7300"));
    }
}
