//! Passes (`POST /api/waiting-room/rooms/{roomId}/passes`): single-use codes an operator hands
//! out; a join carrying one (`pass` in the join body) is admitted at once (see
//! `waitroom_core::Room`, "Passes").
//!
//! A code is 128 bits from the operating system's randomness, base64url (22 characters). The log
//! carries only `pass_hash(room, code)`, the first 16 bytes of a SHA-256 over the room id and the
//! code, so neither the log nor a snapshot holds a usable code, and a code is worth nothing in
//! another room (its hash there is one that room never issued). The answer to the issuing request
//! is the only place the codes ever appear.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;
use waitroom_core::limits::PASSES_PER_ROOM_MAX;
use waitroom_core::{Command, Outcome, PassHash, Rejection, RoomId};

use super::api::rfc3339_ms;
use super::problem::{PROBLEM_JSON, Problem, ProblemBody};
use super::{AppState, json_body, json_response, require_admin};

/// `count` of one request: 1..=10 000 (`PASSES_PER_RECORD_MAX`).
pub const PASS_COUNT_MAX: u32 = waitroom_core::limits::PASSES_PER_RECORD_MAX as u32;
/// `expiresInSeconds`: 1..=2 592 000 (30 days). The state machine accepts a day more, so a
/// record that reaches the log a little after this node's clock is never refused for it.
pub const PASS_EXPIRES_IN_SECONDS_MAX: u32 = 30 * 86_400;
const _: () = assert!(
    PASS_EXPIRES_IN_SECONDS_MAX as u64 * 1000 + 86_400_000
        <= waitroom_core::limits::PASS_LIFETIME_MS_MAX
);

/// A new code: 16 bytes from the operating system's randomness, base64url without padding.
pub fn new_pass_code() -> String {
    use rand::TryRng as _;
    let mut bytes = [0u8; 16];
    if rand::rngs::SysRng.try_fill_bytes(&mut bytes).is_err() {
        bytes = rand::random();
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What the log carries of `code` in `room`.
pub fn pass_hash(room: &RoomId, code: &str) -> PassHash {
    let mut hasher = Sha256::new();
    hasher.update(b"waitroom pass\0");
    hasher.update(room.as_str().as_bytes());
    hasher.update(b"\0");
    hasher.update(code.as_bytes());
    let digest = hasher.finalize();
    let mut hash = [0; 16];
    hash.copy_from_slice(&digest[..16]);
    hash
}

/// `POST /api/waiting-room/rooms/{roomId}/passes`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssuePassesRequest {
    /// How many passes: 1..=10000.
    #[schema(minimum = 1, maximum = 10000, example = 20)]
    #[serde(deserialize_with = "super::api::integral::u32")]
    pub count: u32,
    /// Each pass is valid for this long: 1..=2592000 (30 days).
    #[schema(minimum = 1, maximum = 2592000, example = 86400)]
    #[serde(deserialize_with = "super::api::integral::u32")]
    pub expires_in_seconds: u32,
}

/// The passes issued: shown once (the node keeps only their hashes).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PassesBody {
    pub room_id: String,
    /// The codes, each good for one join of this room until `expiresAt` (22 base64url
    /// characters each).
    #[schema(example = json!(["Jd0XzqX3b0m0YgK1W2aA8Q"]))]
    pub passes: Vec<String>,
    /// RFC 3339, UTC, milliseconds.
    pub expires_at: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `POST /api/waiting-room/rooms/{roomId}/passes`
#[utoipa::path(
    post, path = "/api/waiting-room/rooms/{roomId}/passes", tag = "admin",
    params(("roomId" = String, Path, description = "The room id: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$` (else `400`)",
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", min_length = 1, max_length = 64)),
    request_body = IssuePassesRequest,
    security(("adminToken" = [])),
    responses(
        (status = 201, description = "Issued: the codes, shown this once", body = PassesBody),
        (status = 400, description = "Malformed room id or body, or `count` or `expiresInSeconds` out of range", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 401, description = "No admin token", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 404, description = "Unknown room", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 405, description = "A method other than POST", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
        (status = 409, description = "The room would hold more than 100000 unused, unexpired passes (type `too-many-passes`)", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 413, description = "Body over 4 KiB", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 503, description = "Backend unavailable, or this node could not catch up with its log in time", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub(crate) async fn issue(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    let id = RoomId::new(&raw).map_err(|e| Problem::bad_request(e.to_string()))?;
    let request: IssuePassesRequest = json_body(&headers, body).await?;
    if !(1..=PASS_COUNT_MAX).contains(&request.count) {
        return Err(Problem::bad_request(format!(
            "count must be 1 to {PASS_COUNT_MAX}"
        )));
    }
    if !(1..=PASS_EXPIRES_IN_SECONDS_MAX).contains(&request.expires_in_seconds) {
        return Err(Problem::bad_request(format!(
            "expiresInSeconds must be 1 to {PASS_EXPIRES_IN_SECONDS_MAX}"
        )));
    }
    state
        .node
        .existing_room_caught_up(&id)
        .await?
        .ok_or_else(|| unknown_room(&id))?;
    let codes: Vec<String> = (0..request.count).map(|_| new_pass_code()).collect();
    let expires_at_ms = now_ms() + u64::from(request.expires_in_seconds) * 1000;
    let command = Command::IssuePasses {
        passes: codes.iter().map(|code| pass_hash(&id, code)).collect(),
        expires_at_ms,
    };
    match state.node.write(&id, command).await? {
        Outcome::PassesIssued { .. } => {}
        Outcome::Rejected(Rejection::UnknownRoom) => return Err(unknown_room(&id)),
        Outcome::Rejected(Rejection::InvalidPasses) => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "too-many-passes",
                "Too many passes",
                format!(
                    "room {id} would hold more than {PASSES_PER_ROOM_MAX} unused, unexpired passes"
                ),
            ));
        }
        other => {
            tracing::error!(outcome = ?other, "unexpected outcome of issuing passes");
            return Err(Problem::internal());
        }
    }
    let body = PassesBody {
        room_id: id.to_string(),
        passes: codes,
        expires_at: rfc3339_ms(expires_at_ms),
    };
    Ok(json_response(StatusCode::CREATED, &body))
}

fn unknown_room(room: &RoomId) -> Problem {
    let mut problem = Problem::not_found(format!("no room {room} (never created, or closed)"));
    problem.kind = "unknown-room";
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_random_and_hashes_are_per_room() {
        let a = new_pass_code();
        assert_eq!(a.len(), 22);
        assert_ne!(a, new_pass_code());
        let room = RoomId::new("r").unwrap();
        let other = RoomId::new("s").unwrap();
        assert_eq!(pass_hash(&room, &a), pass_hash(&room, &a));
        assert_ne!(pass_hash(&room, &a), pass_hash(&other, &a));
        // Pinned (SHA-256 of "waitroom pass\0r\0code", its first 16 bytes): every node must hash
        // a code the same, in every build.
        assert_eq!(
            pass_hash(&room, "code"),
            [
                163, 250, 122, 110, 10, 205, 159, 134, 94, 23, 114, 29, 112, 242, 108, 131
            ],
        );
    }
}
