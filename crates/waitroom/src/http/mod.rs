//! The HTTP API (docs/api.md), built as a `Router` apart from serving it so tests can call it
//! without a socket.
//!
//! # Layout
//! - `api`: the JSON bodies and their OpenAPI schemas.
//! - `problem`: errors as `application/problem+json`.
//! - `sessions`: client endpoints (join, status, heartbeat, leave, complete) and evict.
//! - `rooms`: admin endpoints.
//! - `passes`: issuing passes (admin), their codes and hashes.
//! - `challenge`: handing out join challenges (a room's proof of work).
//! - `ops`: health, readiness, metrics, JWKS, OpenAPI.
//! - `page`: the waiting page and its assets.
//! - `console`: the operator's console (`GET /admin`).
//! - `limits`: the per-IP join rate limit.
//! - `guard`: the middleware around everything (latency metrics, problem bodies).

pub mod api;
mod challenge;
mod console;
mod guard;
mod limits;
mod openapi;
mod ops;
mod page;
mod passes;
pub mod problem;
mod rooms;
mod sessions;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http::{HeaderMap, HeaderName, StatusCode, header};
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

pub use limits::{JoinRateLimit, RETAIN_INTERVAL_MS};
use problem::Problem;

use crate::node::Node;
use crate::tokens::Tokens;

pub use crate::limits::REQUEST_BODY_BYTES_MAX;

/// Everything a handler needs.
pub struct AppState {
    pub node: Arc<Node>,
    pub tokens: Tokens,
    /// Compared in constant time.
    pub admin_token: String,
    pub join_rate_limit: Option<JoinRateLimit>,
    /// Trusted header carrying the client address (set by your load balancer), if any.
    pub client_ip_header: Option<HeaderName>,
    pub registry: Registry,
    /// Permits of held status reads (`--held-reads-max`; see `sessions::get_session`).
    pub held_reads: tokio::sync::Semaphore,
    /// The external join verifier (`--join-verifier-url`), if any.
    pub join_verifier: Option<crate::verifier::JoinVerifier>,
}

/// The whole API.
pub fn router(state: Arc<AppState>) -> Router {
    router_with(state, Router::new())
}

/// The API plus `extra`: routes of a program that embeds the node (such as the seat-selection
/// page of `waitroom demo`), served on the same listener under the same body, concurrency and
/// time limits. They are not counted in the request metrics (whose routes are a fixed set), and
/// their error responses (4xx/5xx) are turned into problem bodies like everyone else's.
///
/// # Panics
/// If a route of `extra` overlaps one of the API's, or `extra` has a fallback (axum's merge rules).
pub fn router_with(state: Arc<AppState>, extra: Router) -> Router {
    let api = Router::new()
        .route("/api/waiting-room/sessions", post(sessions::join))
        .route(
            "/api/waiting-room/sessions/{id}",
            get(sessions::get_session)
                .delete(sessions::leave)
                .post(sessions::action)
                .fallback(sessions::other_method),
        )
        .route("/api/waiting-room/rooms", get(rooms::list))
        .route(
            "/api/waiting-room/rooms/{room_id}",
            put(rooms::put).get(rooms::get).delete(rooms::close),
        )
        .route(
            "/api/waiting-room/rooms/{room_id}/passes",
            post(passes::issue),
        )
        .route(
            "/api/waiting-room/rooms/{room_id}/challenge",
            post(challenge::issue),
        )
        .route("/api/waiting-room/openapi.json", get(openapi::document))
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/room/{room_id}", get(page::room_page))
        .route("/admin", get(console::console_page))
        .route("/assets/{file}", get(page::asset))
        .merge(extra.with_state::<Arc<AppState>>(()));
    // The guard wraps everything (latency metrics, problem bodies). There is no
    // request timeout layer: every wait inside a handler is bounded on its own (`NodeOptions`),
    // and a timer per request would cost every status poll. Request bodies are bounded where
    // they are read (`json_body`); handlers without a body never read one.
    let guard = guard::GuardLayer::new(state.node.metrics.clone());
    api.fallback(|| async { Problem::not_found("no such resource") })
        .layer(guard)
        .with_state(state)
}

/// Reads and parses a JSON body: `415` without a JSON content type, `413` over
/// `REQUEST_BODY_BYTES_MAX`, `400` for anything malformed or unknown. (Bodies are read here only,
/// so no body-limit layer wraps every request.)
pub(crate) async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, Problem> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| {
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        });
    if !is_json {
        return Err(Problem::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    let too_large = || Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > REQUEST_BODY_BYTES_MAX as u64) {
        return Err(too_large());
    }
    // Reads at most the limit: a longer (chunked) body fails here without being read whole.
    let bytes = axum::body::to_bytes(body, REQUEST_BODY_BYTES_MAX)
        .await
        .map_err(|_| too_large())?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request(format!("invalid JSON body: {e}")))
}

/// The bearer token of `Authorization`, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `401` unless the request carries the admin token (compared in constant time).
pub(crate) fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), Problem> {
    let given = bearer(headers).unwrap_or("");
    let expected = state.admin_token.as_bytes();
    if given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected)) {
        Ok(())
    } else {
        let mut problem =
            Problem::unauthorized("this endpoint needs Authorization: Bearer <admin token>");
        problem.kind = "admin-token-required";
        Err(problem)
    }
}

/// A JSON response with `Cache-Control: no-store` (views change with every poll).
pub(crate) fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(json) => (
            status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            json,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not serialise a response");
            Problem::internal().into_response()
        }
    }
}
