//! Errors as `application/problem+json` (RFC 9457).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::node::{CatchUpError, WriteError};

pub const PROBLEM_JSON: &str = "application/problem+json";
/// Seconds a client is told to wait after a `503`.
pub const RETRY_AFTER_UNAVAILABLE_S: u64 = 2;

/// One error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    /// A stable slug; the `type` URI is built from it.
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub retry_after_s: Option<u64>,
    /// For `405`.
    pub allow: Option<&'static str>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProblemBody<'a> {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'a str,
    #[schema(value_type = String)]
    pub title: &'a str,
    pub status: u16,
    #[schema(value_type = String)]
    pub detail: &'a str,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            retry_after_s: None,
            allow: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self {
            retry_after_s: Some(RETRY_AFTER_UNAVAILABLE_S),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                detail,
            )
        }
    }

    pub fn room_full(detail: impl Into<String>) -> Self {
        Self {
            retry_after_s: Some(RETRY_AFTER_UNAVAILABLE_S * 5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "room-full",
                "The waiting room is full",
                detail,
            )
        }
    }

    /// A join while the room's queueing method is `reject`: an operator's decision, not a
    /// passing state, so no `Retry-After`.
    pub fn joins_refused(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "joins-refused",
            "The waiting room is not taking anyone new",
            detail,
        )
    }

    /// A join without a pass in an invite-only room (`queueingMethod` `inviteOnly`).
    pub fn pass_required(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "pass-required",
            "This waiting room is invite-only",
            detail,
        )
    }

    /// A join with a pass the room does not hold: never issued for it, used, or expired.
    pub fn pass_invalid(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "pass-invalid",
            "The pass is not valid",
            detail,
        )
    }

    /// A join without a challenge (or without its solution) in a room that asks for one.
    pub fn challenge_required(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "challenge-required",
            "This waiting room asks for a challenge to be solved",
            detail,
        )
    }

    /// A join whose challenge is not one of this service's (malformed, altered, or signed with
    /// a key this node does not hold).
    pub fn challenge_invalid(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "challenge-invalid",
            "The challenge is not valid",
            detail,
        )
    }

    /// A join whose challenge was issued for another room.
    pub fn challenge_wrong_room(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "challenge-wrong-room",
            "The challenge is another room's",
            detail,
        )
    }

    /// A join whose challenge is past its expiry.
    pub fn challenge_expired(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "challenge-expired",
            "The challenge has expired",
            detail,
        )
    }

    /// A join whose solution does not reach the room's difficulty.
    pub fn challenge_insufficient_work(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "challenge-insufficient-work",
            "The solution does not solve the challenge",
            detail,
        )
    }

    /// A join the external verifier denied (`--join-verifier-url`).
    pub fn join_denied(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "join-denied",
            "The join was refused",
            detail,
        )
    }

    /// A join while the external verifier gives no usable answer and the node fails closed.
    pub fn join_verifier_unavailable(detail: impl Into<String>) -> Self {
        Self {
            retry_after_s: Some(RETRY_AFTER_UNAVAILABLE_S),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "join-verifier-unavailable",
                "Joins cannot be checked right now",
                detail,
            )
        }
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request failed; details are in the server log",
        )
    }

    /// The default problem for a status produced by the framework or a layer (no body).
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::not_found("no such resource"),
            StatusCode::METHOD_NOT_ALLOWED => Self::new(
                status,
                "method-not-allowed",
                "Method not allowed",
                "this resource does not support the request's method",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                status,
                "payload-too-large",
                "Request body too large",
                "request bodies are limited to 4096 bytes",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                status,
                "unsupported-media-type",
                "Unsupported media type",
                "send Content-Type: application/json",
            ),
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
                Self::unavailable("the request took too long")
            }
            StatusCode::SERVICE_UNAVAILABLE => Self::unavailable("the service is overloaded"),
            status if status.is_client_error() => {
                Self::bad_request(status.canonical_reason().unwrap_or("bad request"))
            }
            _ => Self::internal(),
        }
    }

    pub fn type_uri(&self) -> String {
        format!("https://waitroom.dev/problems/{}", self.kind)
    }
}

impl From<WriteError> for Problem {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Unavailable(_) | WriteError::NotApplied | WriteError::Overloaded => {
                Problem::unavailable(error.to_string())
            }
        }
    }
}

impl From<CatchUpError> for Problem {
    fn from(error: CatchUpError) -> Self {
        Problem::unavailable(error.to_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let type_uri = self.type_uri();
        let body = ProblemBody {
            kind: &type_uri,
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (self.status, json).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(seconds) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}
