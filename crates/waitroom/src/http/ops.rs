//! Operations: health, readiness, metrics, the JWKS.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde::Serialize;

use super::problem::{PROBLEM_JSON, Problem, ProblemBody};
use super::{AppState, json_response};

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses(
    (status = 200, description = "The process is up: `{\"status\": \"ok\"}`", content_type = "application/json"),
    (status = 405, description = "A method other than GET and HEAD", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
))]
pub(crate) async fn healthz() -> Response {
    json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Readiness {
    ready: bool,
    caught_up: bool,
    backend: String,
    unavailable: Option<String>,
}

/// `GET /readyz`: `200` once this node caught up with its backend, `503` otherwise.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Caught up with the backend", content_type = "application/json"),
    (status = 405, description = "A method other than GET and HEAD", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
    (status = 503, description = "Replaying, or the backend is unreachable (the same body as the 200, `ready: false`)", content_type = "application/json"),
))]
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let progress = state.node.progress();
    let ready = state.node.is_ready();
    let body = Readiness {
        ready,
        caught_up: progress.caught_up,
        backend: state.node.log().describe(),
        unavailable: progress.unavailable,
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus/OpenMetrics text", content_type = "application/openmetrics-text"),
    (status = 405, description = "A method other than GET and HEAD", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        tracing::error!(error = %e, "could not encode metrics");
        return Problem::internal().into_response();
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

/// `GET /.well-known/jwks.json`: the public keys admission tokens are signed with: the signing
/// key first, then during a rotation the next key and retired ones. Tokens name theirs by `kid`.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "protected service", responses(
    (status = 200, description = "RFC 7517 JWK Set (OKP, Ed25519): the key signing now first, then, during a key rotation, the next key and retired keys; a token names its key by `kid`. Cacheable for 300 s.", content_type = "application/jwk-set+json"),
    (status = 405, description = "A method other than GET and HEAD", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
))]
pub(crate) async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json".to_owned()),
            (
                header::CACHE_CONTROL,
                format!("public, max-age={}", crate::limits::JWKS_MAX_AGE_S),
            ),
        ],
        state.tokens.jwks_json().to_string(),
    )
        .into_response()
}
