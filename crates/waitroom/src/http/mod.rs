//! The HTTP API (shared/API.md), built as a `Router` apart from serving it so tests can call it
//! without a socket.
//!
//! # Layout
//! - `api`: the JSON bodies and their OpenAPI schemas.
//! - `problem`: errors as `application/problem+json`.
//! - `sessions`: client endpoints (join, status, heartbeat, leave, complete) and evict.
//! - `rooms`: admin endpoints.
//! - `ops`: health, readiness, metrics, JWKS, OpenAPI.
//! - `page`: the waiting page and its assets.
//! - `limits`: the per-IP join rate limit.

pub mod api;
mod limits;
mod openapi;
mod ops;
mod page;
pub mod problem;
mod rooms;
mod sessions;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http::{HeaderMap, HeaderName, StatusCode, header};
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use tower_http::limit::RequestBodyLimitLayer;

pub use limits::{JoinRateLimit, RETAIN_INTERVAL_MS};
use problem::{PROBLEM_JSON, Problem};

use crate::metrics::RequestLabels;
use crate::node::Node;
use crate::tokens::Tokens;

/// Request bodies are at most this large (the API: `413` over 4 KiB).
pub const REQUEST_BODY_BYTES_MAX: usize = 4096;
/// A request that takes longer than this is answered `503`: every wait inside is bounded more
/// tightly, so this only catches the unexpected.
pub const REQUEST_TIMEOUT_MS: u64 = 15_000;
/// Requests in flight at once; past it, new ones are refused with `503` at once.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 20_000;

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
                .post(sessions::action),
        )
        .route("/api/waiting-room/rooms", get(rooms::list))
        .route(
            "/api/waiting-room/rooms/{room_id}",
            put(rooms::put).get(rooms::get).delete(rooms::close),
        )
        .route("/api/waiting-room/openapi.json", get(openapi::document))
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/room/{room_id}", get(page::room_page))
        .route("/assets/{file}", get(page::asset))
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .merge(extra.with_state::<Arc<AppState>>(()));
    // Layers run outside-in from the last one added: problem bodies for whatever the inner
    // layers answer, then the overload and time bounds, then the body size bounds.
    api.fallback(|| async { Problem::not_found("no such resource") })
        .layer(axum::extract::DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .layer(RequestBodyLimitLayer::new(REQUEST_BODY_BYTES_MAX))
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(
                    |_: tower::BoxError| async {
                        Problem::unavailable(
                            "the server is overloaded or the request took too long",
                        )
                    },
                ))
                .load_shed()
                .concurrency_limit(REQUESTS_IN_FLIGHT_MAX)
                .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS)),
        )
        .layer(middleware::map_response(problemize))
        .with_state(state)
}

/// Records the latency of every routed request by route template.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| route_name(p.as_str()))
        .unwrap_or("unmatched");
    let method = method_name(request.method());
    let response = next.run(request).await;
    state
        .node
        .metrics
        .http_request_seconds
        .get_or_create(&RequestLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Route templates as `'static` labels (a fixed set, so label cardinality stays bounded).
fn route_name(path: &str) -> &'static str {
    const ROUTES: [&str; 11] = [
        "/api/waiting-room/sessions",
        "/api/waiting-room/sessions/{id}",
        "/api/waiting-room/rooms",
        "/api/waiting-room/rooms/{room_id}",
        "/api/waiting-room/openapi.json",
        "/.well-known/jwks.json",
        "/healthz",
        "/readyz",
        "/metrics",
        "/room/{room_id}",
        "/assets/{file}",
    ];
    ROUTES.into_iter().find(|r| *r == path).unwrap_or("other")
}

fn method_name(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        _ => "OTHER",
    }
}

/// Errors produced by the framework or a layer (`405`, `413`, ...) carry no body: give them the
/// API's problem body, keeping their headers (`Allow`).
async fn problemize(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut replaced = Problem::for_status(status).into_response();
    *replaced.status_mut() = status;
    if let Some(allow) = allow {
        replaced.headers_mut().insert(header::ALLOW, allow);
    }
    replaced
}

/// Parses a JSON body: `415` without a JSON content type, `400` for anything malformed or
/// unknown. (Size is bounded by the body limit layers: `413`.)
pub(crate) fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
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
    serde_json::from_slice(body)
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
