//! The live-room demo page, served at `GET /`: a goim client in plain JavaScript that joins a
//! room over WebSocket with goim's binary protocol, shows every push as danmaku over a
//! video-like stage and in a list, follows the room's online count (heartbeat replies and
//! `GET /goim/online/room`), and pushes to the room from a form through `POST
//! /goim/push/room`.
//!
//! The page's files live in `dispatcher/assets/` (`demo.html`, `demo.js`, `demo.css`) and are
//! compiled in with `include_str!`: no build step, nothing fetched from elsewhere, so the page
//! works offline. The page finds its gateway by asking this dispatcher's
//! `/goim/nodes/weighted` (the best node's host with the advertised `ws_port`), unless its
//! address says `?ws=ws://host:port/sub`.
//!
//! These routes are public: the bearer secret (`http.bearer_secrets`) guards `/goim/*` only, so
//! anyone may load the page, and what it asks of the API (the node list, the online count, a
//! push) still needs the secret when one is set (the page has a field for it).

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const HTML: &str = include_str!("../assets/demo.html");
const JS: &str = include_str!("../assets/demo.js");
const CSS: &str = include_str!("../assets/demo.css");

/// The page's paths: `/` and its two assets (relative to the page, so it also works behind a
/// proxy that mounts the dispatcher under a prefix). Any other path is the API's 404.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", HTML) }),
        )
        .route(
            "/demo/demo.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .route(
            "/demo/demo.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Always the files of the running binary, never a stale copy after an upgrade.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
