//! The waiting page and its assets, compiled into the binary (no build step, no CDN).

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::header;
use waitroom_core::RoomId;

use super::problem::{PROBLEM_JSON, Problem, ProblemBody};

const ROOM_HTML: &str = include_str!("../../assets/room.html");
const ROOM_CSS: &str = include_str!("../../assets/room.css");
const ROOM_JS: &str = include_str!("../../assets/room.js");
const STRINGS_JS: &str = include_str!("../../assets/strings.js");
/// The Web Worker that solves join challenges (`crate::challenge`).
const CHALLENGE_WORKER_JS: &str = include_str!("../../assets/challenge-worker.js");

/// No inline script or style anywhere in the page, so the policy can be strict. Workers (the
/// challenge solver) come from the node alone, said outright rather than left to `default-src`.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; worker-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// `GET /room/{roomId}`: the page a person sees (it reads the room id from its own URL).
#[utoipa::path(get, path = "/room/{roomId}", tag = "client",
    params(("roomId" = String, Path, description = "The room id: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$` (else `400`)",
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", min_length = 1, max_length = 64)),
    responses(
        (status = 200, description = "The waiting page (HTML)", content_type = "text/html"),
        (status = 400, description = "Malformed room id", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 405, description = "A method other than GET and HEAD", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
))]
pub(crate) async fn room_page(Path(room): Path<String>) -> Result<Response, Problem> {
    RoomId::new(room).map_err(|e| Problem::bad_request(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        ROOM_HTML,
    )
        .into_response())
}

/// `GET /assets/{file}`: the page's script, styles and strings, and the console's.
pub(crate) async fn asset(Path(file): Path<String>) -> Result<Response, Problem> {
    let (content_type, body) = match file.as_str() {
        "room.css" => ("text/css; charset=utf-8", ROOM_CSS),
        "room.js" => ("text/javascript; charset=utf-8", ROOM_JS),
        "strings.js" => ("text/javascript; charset=utf-8", STRINGS_JS),
        "challenge-worker.js" => ("text/javascript; charset=utf-8", CHALLENGE_WORKER_JS),
        // The operator's console (`super::console`) shares the assets path.
        "console.css" => ("text/css; charset=utf-8", super::console::CONSOLE_CSS),
        "console.js" => ("text/javascript; charset=utf-8", super::console::CONSOLE_JS),
        _ => return Err(Problem::not_found("no such asset")),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response())
}
