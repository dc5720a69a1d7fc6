//! The physical limit of one node's HTTP stack, for `bench/http.sh`: a bare axum server with the
//! same routes and response sizes as waitroom's status poll and join, doing no work.
//!
//! `cargo run --release --example bare_axum -- 127.0.0.1:8090`

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

// The same allocator as the waitroom binary, so the comparison is of the request path alone.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A session view of the size waitroom answers (WAITING, all fields present).
fn view(id: &str) -> String {
    format!(
        r#"{{"waitingRoomSessionId":"{id}","roomId":"bench","status":"WAITING","position":1523,"waitingCount":48211,"estimatedWaitSeconds":310,"prequeue":false,"opensAt":null,"joinedAt":"2026-11-27T10:00:00.123Z","admittedAt":null,"expiresAt":"2026-11-27T10:02:00.123Z","heartbeatIntervalSeconds":10,"admissionToken":null,"targetUrl":null,"expiredReason":null}}"#
    )
}

async fn status(Path(id): Path<String>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        view(&id),
    )
}

async fn join(body: Bytes) -> impl IntoResponse {
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let room = parsed["roomId"].as_str().unwrap_or("bench");
    let id: [u8; 16] = rand::random();
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let mut body = view(&id);
    body = body.replace("\"bench\"", &format!("{room:?}"));
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
}

#[tokio::main]
async fn main() {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let app = Router::new()
        .route("/api/waiting-room/sessions", post(join))
        .route("/api/waiting-room/sessions/{id}", get(status));
    // The same listener and connection handling as waitroom's (backlog, connection bounds and
    // timeouts, TCP_NODELAY), so the comparison is of the request path alone.
    let listener = waitroom::server::listen(&address).await.expect("bind");
    println!("bare axum serving at http://{address}");
    waitroom::connections::serve(
        listener,
        app,
        waitroom::connections::ConnectionLimits::DEFAULT,
        waitroom::metrics::ConnectionMetrics::default(),
        std::future::pending(),
    )
    .await;
}
