//! Join challenges (`POST /api/waiting-room/rooms/{roomId}/challenge`): a proof of work a room
//! can ask of every join (`challengeDifficultyBits`). The format, the keys and why replays buy
//! nothing are in `crate::challenge`; the join's check is in `super::sessions::join`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;
use waitroom_core::RoomId;

use super::api::rfc3339_ms;
use super::problem::{PROBLEM_JSON, Problem, ProblemBody};
use super::sessions::check_join_rate;
use super::{AppState, json_response};
use crate::connections::PeerAddr;

/// A challenge to solve before joining.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeBody {
    pub room_id: String,
    /// 72 base64url characters, signed by the service: join with it and a `solution` such that
    /// SHA-256 of the challenge's characters followed by the solution's starts with
    /// `difficultyBits` zero bits.
    #[schema(min_length = 72, max_length = 72)]
    pub challenge: String,
    /// The room's `challengeDifficultyBits` now: about `2^difficultyBits` hashes to try.
    #[schema(minimum = 1, maximum = 28, example = 20)]
    pub difficulty_bits: u8,
    /// RFC 3339, UTC, milliseconds: join before then (10 minutes from now).
    pub expires_at: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `POST /api/waiting-room/rooms/{roomId}/challenge`
#[utoipa::path(
    post, path = "/api/waiting-room/rooms/{roomId}/challenge", tag = "client",
    params(("roomId" = String, Path, description = "The room id: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$` (else `400`)",
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", min_length = 1, max_length = 64)),
    responses(
        (status = 200, description = "A new challenge (not stored: `Cache-Control: no-store`); any body is ignored", body = ChallengeBody),
        (status = 400, description = "Malformed room id", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 404, description = "Unknown room", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 405, description = "A method other than POST", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
        (status = 409, description = "The room asks for no challenge (`challengeDifficultyBits` 0: join without one; type `challenge-not-required`)", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 429, description = "Over the per-IP join rate (a challenge counts as a join)", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds"))),
        (status = 503, description = "Backend unavailable, or this node could not catch up with its log in time", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub(crate) async fn issue(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<ConnectInfo<PeerAddr>>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let id = RoomId::new(&raw).map_err(|e| Problem::bad_request(format!("roomId: {e}")))?;
    let peer = peer.map(|Extension(ConnectInfo(PeerAddr(addr)))| addr);
    check_join_rate(&state, &headers, peer)?;
    let cell = state
        .node
        .existing_room_caught_up(&id)
        .await?
        .ok_or_else(|| {
            let mut problem =
                Problem::not_found(format!("no room {id} (never created, or closed)"));
            problem.kind = "unknown-room";
            problem
        })?;
    let difficulty_bits = cell
        .state
        .read()
        .config()
        .map_or(0, |c| c.challenge_difficulty_bits);
    if difficulty_bits == 0 {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "challenge-not-required",
            "This waiting room asks for no challenge",
            format!("room {id} asks for no challenge: join without one"),
        ));
    }
    let issued = state
        .tokens
        .challenges()
        .issue(&id, difficulty_bits, now_ms());
    state.node.metrics.challenges_issued_total.inc();
    let body = ChallengeBody {
        room_id: id.to_string(),
        challenge: issued.challenge,
        difficulty_bits,
        expires_at: rfc3339_ms(issued.expires_at_ms),
    };
    Ok(json_response(StatusCode::OK, &body))
}
