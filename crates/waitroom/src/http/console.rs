//! The operator's console, `GET /admin`: a page compiled into the binary (no build step, no
//! CDN), like the waiting page. It holds no secret: the admin token is typed into it, kept in the
//! tab's `sessionStorage` and sent as `Authorization: Bearer` to the admin API, which is where it
//! is checked. What it shows and why: docs/operations.md ("The operator's console").

use axum::response::{IntoResponse, Response};
use http::header;

use super::problem::{PROBLEM_JSON, ProblemBody};

const CONSOLE_HTML: &str = include_str!("console/console.html");
pub(crate) const CONSOLE_CSS: &str = include_str!("console/console.css");
pub(crate) const CONSOLE_JS: &str = include_str!("console/console.js");

/// No inline script or style anywhere in the console, so the policy can be strict: everything
/// from this node, charts drawn as inline SVG by the script (no `style` attributes: the script
/// sets styles through the CSSOM, which the policy allows), no framing (clickjacking a close
/// button), no form posted anywhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// `GET /admin`: the console. Served to anyone: it is static, and every figure and action in it
/// goes through the admin API with the token the operator types.
#[utoipa::path(get, path = "/admin", tag = "admin",
    responses(
        (status = 200, description = "The operator's console (HTML): sign in with the admin token, then the rooms, their live figures and charts, configuration, pause, close and evict, all through the admin endpoints", content_type = "text/html"),
        (status = 405, description = "A method other than GET and HEAD", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
))]
pub(crate) async fn console_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        CONSOLE_HTML,
    )
        .into_response()
}
