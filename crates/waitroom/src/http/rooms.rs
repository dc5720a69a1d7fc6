//! Admin endpoints: create/update, read, list and close rooms.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use waitroom_core::{Command, Outcome, Rejection, Room, RoomId};

use super::api::{RoomBody, RoomConfigBody, RoomListBody, RoomStatsBody};
use super::problem::{PROBLEM_JSON, Problem, ProblemBody};
use super::{AppState, json_body, json_response, require_admin};
use crate::ids::new_draw_seed;

fn room_id(text: &str) -> Result<RoomId, Problem> {
    RoomId::new(text).map_err(|e| Problem::bad_request(e.to_string()))
}

pub(crate) fn room_body(room: &Room) -> RoomBody {
    RoomBody {
        room_id: room.id().to_string(),
        config: RoomConfigBody::from_config(room.last_config()),
        stats: RoomStatsBody::of(room),
        state_digest: None,
    }
}

/// The query of `GET /api/waiting-room/rooms/{roomId}`: `digest` is `true` or `false` (any other
/// value, or any other parameter, is a `400`).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoomQuery {
    /// Include `stateDigest` (costs O(n log n) in the room's sessions).
    #[serde(default)]
    #[param(required = false)]
    digest: bool,
}

fn unknown_room(room: &RoomId) -> Problem {
    let mut problem = Problem::not_found(format!("no room {room} (never created, or closed)"));
    problem.kind = "unknown-room";
    problem
}

/// `PUT /api/waiting-room/rooms/{roomId}`
#[utoipa::path(
    put, path = "/api/waiting-room/rooms/{roomId}", tag = "admin",
    params(("roomId" = String, Path, description = "The room id: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$` (else `400`)",
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", min_length = 1, max_length = 64)),
    request_body = RoomConfigBody,
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "Created or replaced (the whole configuration)", body = RoomBody,
            links(
                ("getRoom" = (operation_id = "get", parameters(("roomId" = "$response.body#/roomId")))),
                ("closeRoom" = (operation_id = "close", parameters(("roomId" = "$response.body#/roomId")))),
                ("join" = (operation_id = "join", request_body = json!({"roomId": "$response.body#/roomId"}))),
            )),
        (status = 400, description = "Malformed room id or body, a value out of range, a heartbeat interval not below both idle timeouts, or events out of order, overlapping, with a duplicate name or more than 24 (the detail names the field, e.g. `events[1].startsAt`)", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 401, description = "No admin token", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 405, description = "A method other than PUT, GET, HEAD and DELETE", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
        (status = 413, description = "Body over 4 KiB", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 503, description = "Backend unavailable", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub(crate) async fn put(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    let id = room_id(&raw)?;
    let config = json_body::<RoomConfigBody>(&headers, body)
        .await?
        .to_config()?;
    // Every configuration brings a fresh secret seed for the pre-queue draw; the room keeps its
    // own while people wait in its pre-queue (see `waitroom_core::Room`). Neither is served.
    let command = Command::configure(config, new_draw_seed());
    match state.node.write(&id, command).await? {
        Outcome::Configured { .. } => {}
        Outcome::Rejected(Rejection::InvalidConfig(e)) => {
            return Err(Problem::bad_request(e.to_string()));
        }
        other => {
            tracing::error!(outcome = ?other, "unexpected outcome of a room configuration");
            return Err(Problem::internal());
        }
    }
    let cell = state.node.room(&id).ok_or_else(Problem::internal)?;
    let body = room_body(&cell.state.read());
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /api/waiting-room/rooms/{roomId}`
#[utoipa::path(
    get, path = "/api/waiting-room/rooms/{roomId}", tag = "admin",
    params(("roomId" = String, Path, description = "The room id: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$` (else `400`)",
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", min_length = 1, max_length = 64), RoomQuery),
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "Configuration and live statistics", body = RoomBody),
        (status = 400, description = "Malformed room id or query", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 401, description = "No admin token", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 404, description = "Unknown room", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 405, description = "A method other than PUT, GET, HEAD and DELETE", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
        (status = 503, description = "The room is unknown here and this node could not catch up with its log in time", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    query: Result<Query<RoomQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    let id = room_id(&raw)?;
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let cell = state
        .node
        .existing_room_caught_up(&id)
        .await?
        .ok_or_else(|| unknown_room(&id))?;
    let body = {
        let room = cell.state.read();
        let mut body = room_body(&room);
        if query.digest {
            body.state_digest = Some(room.digest().iter().map(|b| format!("{b:02x}")).collect());
        }
        body
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /api/waiting-room/rooms`
#[utoipa::path(
    get, path = "/api/waiting-room/rooms", tag = "admin",
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "Every room, sorted by id", body = RoomListBody),
        (status = 401, description = "No admin token", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 405, description = "A method other than GET and HEAD", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
        (status = 503, description = "This node could not catch up with its log in time", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    state.node.catch_up().await?;
    let rooms = state
        .node
        .rooms()
        .iter()
        .filter_map(|cell| {
            let room = cell.state.read();
            room.exists().then(|| room_body(&room))
        })
        .collect();
    Ok(json_response(StatusCode::OK, &RoomListBody { rooms }))
}

/// `DELETE /api/waiting-room/rooms/{roomId}`
#[utoipa::path(
    delete, path = "/api/waiting-room/rooms/{roomId}", tag = "admin",
    params(("roomId" = String, Path, description = "The room id: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$` (else `400`)",
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", min_length = 1, max_length = 64)),
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "Closed: every session ended (reason `closed`); the room is unknown afterwards", body = RoomBody),
        (status = 400, description = "Malformed room id", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 401, description = "No admin token", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 404, description = "Unknown room", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 405, description = "A method other than PUT, GET, HEAD and DELETE", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
        (status = 503, description = "Backend unavailable, or this node could not catch up with its log in time", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub(crate) async fn close(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    let id = room_id(&raw)?;
    let cell = state
        .node
        .existing_room_caught_up(&id)
        .await?
        .ok_or_else(|| unknown_room(&id))?;
    match state.node.write(&id, Command::CloseRoom).await? {
        Outcome::Closed { .. } => {}
        Outcome::Rejected(Rejection::UnknownRoom) => return Err(unknown_room(&id)),
        other => {
            tracing::error!(outcome = ?other, "unexpected outcome of a close");
            return Err(Problem::internal());
        }
    }
    let body = room_body(&cell.state.read());
    Ok(json_response(StatusCode::OK, &body))
}
