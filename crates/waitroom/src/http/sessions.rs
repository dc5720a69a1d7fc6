//! Client endpoints: join, status, heartbeat, leave, complete; and the admin's evict.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use waitroom_core::{
    Command, IdempotencyKey, LeaveReason, Outcome, QueueingMethod, Rejection, RoomId, SessionId,
    SessionView, Status,
};

use super::api::{JoinRequest, SessionBody};
use super::passes::pass_hash;
use super::problem::{PROBLEM_JSON, Problem, ProblemBody};
use super::{AppState, bearer, json_body, require_admin};
use crate::challenge::{Refusal, SOLUTION_CHARS_MAX};
use crate::connections::PeerAddr;
use crate::ids::{PathIdError, PublicSessionId};
use crate::metrics::ResultLabels;
use crate::node::{RoomCell, WriteError};
use crate::verifier::{FORWARDED_HEADERS, FailMode, JoinVerifier, Verdict, VerifierRequest};

const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// `challenge` in a join body: 1 to 128 characters (a challenge is 72; any such text is well
/// formed, valid or not).
const CHALLENGE_TEXT_CHARS_MAX: usize = 128;
const _: () = assert!(crate::challenge::CHALLENGE_CHARS <= CHALLENGE_TEXT_CHARS_MAX);

fn parse_id(text: &str) -> Result<PublicSessionId, Problem> {
    PublicSessionId::parse(text).map_err(|e| match e {
        PathIdError::Malformed => {
            Problem::bad_request("a session id is at most 128 characters of A-Z a-z 0-9 _ -")
        }
        PathIdError::Unknown => unknown_session(),
    })
}

fn unknown_session() -> Problem {
    let mut problem =
        Problem::not_found("no such session (never issued, or forgotten after it ended)");
    problem.kind = "unknown-session";
    problem
}

fn unknown_room(room: &RoomId) -> Problem {
    let mut problem = Problem::not_found(format!("no room {room} (never created, or closed)"));
    problem.kind = "unknown-room";
    problem
}

/// The session view as JSON, with a fresh admission token when ACTIVE.
pub(crate) fn session_response(
    state: &AppState,
    status: StatusCode,
    room: &RoomId,
    id: &PublicSessionId,
    view: SessionView,
) -> Response {
    let text = id.to_text();
    let token = match (view.status, view.expires_at_ms) {
        (Status::Active, Some(expires_at_ms)) => {
            Some(state.tokens.issue(room.as_str(), &text, expires_at_ms))
        }
        _ => None,
    };
    let body = SessionBody::new(text, room.as_str(), view, token);
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_json(),
    )
        .into_response();
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&format!(
            "/api/waiting-room/sessions/{}",
            body.waiting_room_session_id
        ))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The current view of `id` in `cell` (after a write); `404` if it was forgotten meanwhile.
fn current(
    state: &AppState,
    cell: &RoomCell,
    id: &PublicSessionId,
    status: StatusCode,
) -> Response {
    match cell.state.read().view(&id.session) {
        Some(view) => session_response(state, status, &cell.id, id, view),
        None => unknown_session().into_response(),
    }
}

async fn find(
    state: &AppState,
    id: &PublicSessionId,
) -> Result<(Arc<RoomCell>, SessionView), Problem> {
    state
        .node
        .find_session_caught_up(id)
        .await?
        .ok_or_else(unknown_session)
}

/// The client's address: the last address of the trusted header if configured, else the peer.
/// The last one, because that is the one the load balancer in front of us added (or set): a
/// client can put any addresses it likes before it in `X-Forwarded-For`, which would let it
/// dodge the per-address limit (and grow the limiter's table).
fn client_ip(state: &AppState, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
    if let Some(name) = &state.client_ip_header
        && let Some(ip) = last_forwarded_ip(headers, name)
    {
        return Some(ip);
    }
    peer.map(|addr| addr.ip())
}

/// The last address of the last `name` header (`X-Forwarded-For: client, proxy1, proxy2`).
fn last_forwarded_ip(headers: &HeaderMap, name: &http::HeaderName) -> Option<IpAddr> {
    headers
        .get_all(name)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
}

/// `429` when the client's address is over the per-IP join rate (`--join-rate-per-ip`): joins
/// and challenges (`super::challenge`) draw on the same bucket.
pub(crate) fn check_join_rate(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<(), Problem> {
    if let Some(limit) = &state.join_rate_limit
        && let Some(ip) = client_ip(state, headers, peer)
        && let Err(wait_s) = limit.check(ip)
    {
        state.node.metrics.join_rate_limited_total.inc();
        let mut problem = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many joins from your address",
            "retry after the time in Retry-After",
        );
        problem.retry_after_s = Some(wait_s);
        return Err(problem);
    }
    Ok(())
}

/// `POST /api/waiting-room/sessions`
#[utoipa::path(
    post, path = "/api/waiting-room/sessions", tag = "client",
    request_body = JoinRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false,
        description = "1..128 printable ASCII characters (HTTP drops spaces at either end); the same key for the same room returns the same session",
        pattern = "^[!-~]([ -~]{0,126}[!-~])?$", min_length = 1, max_length = 128)),
    responses(
        (status = 201, description = "A new place in line", body = SessionBody, headers(("Location" = String, description = "/api/waiting-room/sessions/{id}")),
            links(
                ("getSession" = (operation_id = "get_session", parameters(("id" = "$response.body#/waitingRoomSessionId")))),
                ("heartbeat" = (operation_id = "heartbeat", parameters(("id" = "$response.body#/waitingRoomSessionId")))),
                ("leave" = (operation_id = "leave", parameters(("id" = "$response.body#/waitingRoomSessionId")))),
                ("complete" = (operation_id = "complete", parameters(("id" = "$response.body#/waitingRoomSessionId")))),
                ("evict" = (operation_id = "evict", parameters(("id" = "$response.body#/waitingRoomSessionId")))),
            )),
        (status = 200, description = "Idempotent replay: the session this key (or this solved challenge) created", body = SessionBody,
            links(
                ("getSession" = (operation_id = "get_session", parameters(("id" = "$response.body#/waitingRoomSessionId")))),
                ("heartbeat" = (operation_id = "heartbeat", parameters(("id" = "$response.body#/waitingRoomSessionId")))),
                ("leave" = (operation_id = "leave", parameters(("id" = "$response.body#/waitingRoomSessionId")))),
            )),
        (status = 400, description = "Malformed body, room id or key", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 403, description = "The room refuses joins (`queueingMethod` `reject`; type `joins-refused`, no `Retry-After`), is invite-only and the join has no pass (type `pass-required`), or the pass is unknown, used, expired or another room's (type `pass-invalid`). In a room with `challengeDifficultyBits`, a join without a pass carries no `challenge` or `solution` (type `challenge-required`), a challenge not of this service (type `challenge-invalid`), another room's (type `challenge-wrong-room`), an expired one (type `challenge-expired`), or a solution short of the difficulty (type `challenge-insufficient-work`); or the deployment's external verifier refused the join (type `join-denied`)", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 404, description = "Unknown room", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 405, description = "A method other than POST", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
        (status = 413, description = "Body over 4 KiB", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 429, description = "Over the per-IP join rate", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds"))),
        (status = 503, description = "Room full (maxWaiting), backend unavailable, or the external join verifier gave no usable answer and the node fails closed (type `join-verifier-unavailable`)", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub(crate) async fn join(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<ConnectInfo<PeerAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let request: JoinRequest = json_body(&headers, body).await?;
    let pass = request.pass;
    // Characters, as the document's maxLength counts them (not bytes): any such text is a
    // well-formed pass, known or not.
    if pass
        .as_ref()
        .is_some_and(|p| p.is_empty() || p.chars().count() > 64)
    {
        return Err(Problem::bad_request("pass: 1 to 64 characters"));
    }
    let chars_within = |text: &Option<String>, max: usize| {
        text.as_ref()
            .is_none_or(|t| !t.is_empty() && t.chars().count() <= max)
    };
    if !chars_within(&request.challenge, CHALLENGE_TEXT_CHARS_MAX) {
        return Err(Problem::bad_request("challenge: 1 to 128 characters"));
    }
    if !chars_within(&request.solution, SOLUTION_CHARS_MAX) {
        return Err(Problem::bad_request("solution: 1 to 64 characters"));
    }
    let room_id =
        RoomId::new(request.room_id).map_err(|e| Problem::bad_request(format!("roomId: {e}")))?;
    let key = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| IdempotencyKey::new(v).ok())
                .ok_or_else(|| {
                    Problem::bad_request("Idempotency-Key: 1 to 128 printable ASCII characters")
                })?,
        ),
    };
    let peer = peer.map(|Extension(ConnectInfo(PeerAddr(addr)))| addr);
    check_join_rate(&state, &headers, peer)?;
    let cell = state
        .node
        .existing_room_caught_up(&room_id)
        .await?
        .ok_or_else(|| unknown_room(&room_id))?;
    // Answer from memory what the state machine would answer anyway: no record for a replay or
    // for a room that is full.
    let mut challenged = None;
    {
        let room = cell.state.read();
        if let Some(key) = &key
            && let Some(session) = room.session_for_idempotency_key(key)
            && let Some(view) = room.view(&session)
        {
            drop(room);
            let id = PublicSessionId::new(&room_id, session);
            return Ok(session_response(
                &state,
                StatusCode::OK,
                &room_id,
                &id,
                view,
            ));
        }
        // A pass is checked by the state machine alone (it may be used by a record not yet
        // applied here); a join without one is refused from memory when the room says so.
        let method = room.config().map(|c| c.queueing_method);
        if pass.is_none() && method == Some(QueueingMethod::Reject) {
            return Err(joins_refused(&room_id));
        }
        if pass.is_none() && method == Some(QueueingMethod::InviteOnly) {
            return Err(pass_required(&room_id));
        }
        // The challenge (see `crate::challenge`): a join with a pass needs none (the pass is
        // proof enough, and single-use).
        let difficulty_bits = room.config().map_or(0, |c| c.challenge_difficulty_bits);
        if pass.is_none() && difficulty_bits != 0 {
            let session = check_challenge(
                &state,
                &room_id,
                request.challenge.as_deref(),
                request.solution.as_deref(),
                difficulty_bits,
            )?;
            // A replay: the session this challenge bought, never a second place.
            if let Some(view) = room.view(&session) {
                drop(room);
                count_challenge(&state, "replayed");
                let id = PublicSessionId::new(&room_id, session);
                return Ok(session_response(
                    &state,
                    StatusCode::OK,
                    &room_id,
                    &id,
                    view,
                ));
            }
            challenged = Some(session);
        }
        if pass.is_none()
            && let Some(max) = room.config().and_then(|c| c.max_waiting)
            && room.waiting_count() >= u64::from(max)
        {
            return Err(Problem::room_full(format!(
                "room {room_id} has {max} people waiting"
            )));
        }
    }
    if pass.is_none()
        && let Some(verifier) = &state.join_verifier
    {
        verify_join(&state, verifier, &room_id, &headers, peer).await?;
    }
    let id = match challenged {
        Some(session) => PublicSessionId::new(&room_id, session),
        None => PublicSessionId::generate(&room_id),
    };
    // A challenged join's session id is the challenge's: like a key, the client's retry with the
    // same challenge gets the place back, so a failed write is not withdrawn.
    let keyed = key.is_some() || challenged.is_some();
    let command = match &pass {
        None => Command::Join {
            session: id.session,
            idempotency_key: key,
        },
        Some(code) => Command::JoinWithPass {
            session: id.session,
            idempotency_key: key,
            pass: pass_hash(&room_id, code),
        },
    };
    match state.node.write(&room_id, command).await {
        Ok(Outcome::Joined { .. }) => {
            if challenged.is_some() {
                count_challenge(&state, "passed");
            }
            Ok(current(&state, &cell, &id, StatusCode::CREATED))
        }
        // The same challenge's join, written by another request first (on any node).
        Ok(Outcome::Duplicate) if challenged.is_some() => {
            count_challenge(&state, "replayed");
            Ok(current(&state, &cell, &id, StatusCode::OK))
        }
        Ok(Outcome::Replayed { session }) => {
            let id = PublicSessionId::new(&room_id, session);
            Ok(current(&state, &cell, &id, StatusCode::OK))
        }
        Ok(Outcome::Rejected(Rejection::UnknownRoom)) => Err(unknown_room(&room_id)),
        Ok(Outcome::Rejected(Rejection::RoomFull)) => {
            Err(Problem::room_full(format!("room {room_id} is full")))
        }
        Ok(Outcome::Rejected(Rejection::JoinsRefused)) => Err(joins_refused(&room_id)),
        Ok(Outcome::Rejected(Rejection::PassRequired)) => Err(pass_required(&room_id)),
        Ok(Outcome::Rejected(Rejection::InvalidPass)) => Err(Problem::pass_invalid(format!(
            "the pass is not one room {room_id} holds: never issued for it, already used, or expired"
        ))),
        Ok(other) => {
            tracing::error!(outcome = ?other, "unexpected outcome of a join");
            Err(Problem::internal())
        }
        Err(error) => {
            // The join may still land. With an Idempotency-Key the client retries with it and
            // gets that place back (withdrawing it would answer the retry with a session that
            // `left`); without one, nobody can ever claim it, so take it back.
            if !keyed && !matches!(error, WriteError::Overloaded) {
                compensate(&state, room_id, id);
            }
            Err(error.into())
        }
    }
}

/// Asks the external verifier about a join (see `crate::verifier`): `Ok` to go on.
async fn verify_join(
    state: &AppState,
    verifier: &JoinVerifier,
    room_id: &RoomId,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<(), Problem> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let request = VerifierRequest {
        room_id: room_id.as_str(),
        client_ip: client_ip(state, headers, peer).map(|ip| ip.to_string()),
        user_agent: header("user-agent"),
        headers: FORWARDED_HEADERS
            .iter()
            .map(|&name| (name, header(name)))
            .collect(),
    };
    let count = |result: &'static str| {
        state
            .node
            .metrics
            .join_verifier_total
            .get_or_create(&ResultLabels { result })
            .inc();
    };
    match verifier.verify(&request).await {
        Verdict::Allow => {
            count("allow");
            Ok(())
        }
        Verdict::Deny(reason) => {
            count("deny");
            Err(Problem::join_denied(match reason {
                Some(reason) => format!("this join was refused: {reason}"),
                None => "this join was refused".to_string(),
            }))
        }
        Verdict::Failed(why) => match verifier.fails() {
            FailMode::Open => {
                count("failed_open");
                tracing::warn!(%why, "the join verifier gave no answer; the join goes on (--join-verifier-fails open)");
                Ok(())
            }
            FailMode::Closed => {
                count("failed_closed");
                tracing::warn!(%why, "the join verifier gave no answer; the join is refused (--join-verifier-fails closed)");
                Err(Problem::join_verifier_unavailable(
                    "joins cannot be checked right now: retry after the time in Retry-After",
                ))
            }
        },
    }
}

/// Counts one join challenge check by `result` (`metrics::JOIN_CHALLENGE_RESULTS`).
fn count_challenge(state: &AppState, result: &'static str) {
    state
        .node
        .metrics
        .join_challenges_total
        .get_or_create(&ResultLabels { result })
        .inc();
}

/// A join's challenge in a room of `difficulty_bits`: the session id it buys, or the `403`.
fn check_challenge(
    state: &AppState,
    room_id: &RoomId,
    challenge: Option<&str>,
    solution: Option<&str>,
    difficulty_bits: u8,
) -> Result<SessionId, Problem> {
    let (Some(challenge), Some(solution)) = (challenge, solution) else {
        count_challenge(state, "required");
        return Err(Problem::challenge_required(format!(
            "room {room_id} asks every join to solve a challenge: get one with POST \
             /api/waiting-room/rooms/{room_id}/challenge, then join with \"challenge\" and \
             \"solution\""
        )));
    };
    let refusal = match state.tokens.challenges().check(
        room_id,
        challenge,
        solution,
        difficulty_bits,
        unix_now_ms(),
    ) {
        Ok(session) => return Ok(session),
        Err(refusal) => refusal,
    };
    let (result, problem) = match refusal {
        Refusal::Invalid { unknown_key: true } => (
            "invalid",
            Problem::challenge_invalid(
                "the challenge was signed with a key this node does not hold (a key rotation?): \
                 get a new one",
            ),
        ),
        Refusal::Invalid { unknown_key: false } => (
            "invalid",
            Problem::challenge_invalid("not a challenge of this service: get a new one"),
        ),
        Refusal::WrongRoom => (
            "wrong_room",
            Problem::challenge_wrong_room(format!(
                "the challenge was issued for another room than {room_id}: get one for it"
            )),
        ),
        Refusal::Expired => (
            "expired",
            Problem::challenge_expired("the challenge has expired: get a new one"),
        ),
        Refusal::InsufficientWork {
            work_bits,
            needed_bits,
        } => (
            "insufficient_work",
            Problem::challenge_insufficient_work(format!(
                "SHA-256(challenge ‖ solution) starts with {work_bits} zero bits; room {room_id} \
                 asks for {needed_bits}"
            )),
        ),
    };
    count_challenge(state, result);
    Err(problem)
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The answer to a join without a pass while the room is `inviteOnly`.
fn pass_required(room_id: &RoomId) -> Problem {
    Problem::pass_required(format!(
        "room {room_id} is invite-only: join with a pass (\"pass\" in the body)"
    ))
}

/// The answer to a join while the room's queueing method is `reject`.
fn joins_refused(room_id: &RoomId) -> Problem {
    Problem::joins_refused(format!(
        "room {room_id} refuses new joins (queueing method reject); sessions already in it carry on"
    ))
}

use crate::limits::{
    COMPENSATION_ATTEMPTS_MAX, COMPENSATIONS_IN_FLIGHT_MAX, STATUS_WAIT_SECONDS_MAX,
};
static COMPENSATIONS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(COMPENSATIONS_IN_FLIGHT_MAX);

/// Appends a `Leave` for a join whose answer was an error, in the background. Bounded: during
/// an outage every join fails, and a withdrawal that cannot be sent is not worth a task per
/// join; past the bound (or the attempts) the place expires on its own, like any abandoned one,
/// after the room's `waitingIdleTimeoutSeconds`.
fn compensate(state: &Arc<AppState>, room: RoomId, id: PublicSessionId) {
    let Ok(permit) = COMPENSATIONS.try_acquire() else {
        tracing::debug!(room = %room, "too many withdrawals on their way; this failed join expires on its own");
        return;
    };
    let node = state.node.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let leave = Command::Leave {
            session: id.session,
            reason: LeaveReason::Left,
        };
        for attempt in 0..COMPENSATION_ATTEMPTS_MAX {
            if node.write_unwaited(&room, leave.clone()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500 * (attempt + 1))).await;
        }
        tracing::warn!(room = %room, "could not withdraw a failed join; it expires on its own");
    });
}

/// `405` for a method the session resource does not have.
fn method_not_allowed(allow: &'static str) -> Problem {
    let mut problem = Problem::for_status(StatusCode::METHOD_NOT_ALLOWED);
    problem.allow = Some(allow);
    problem
}

/// The methods of a session (`{id}`): `HEAD` is `GET` without the body.
const SESSION_METHODS: &str = "GET, HEAD, DELETE";
/// The methods of a session's actions (`{id}:heartbeat`, `:complete`, `:evict`).
const ACTION_METHODS: &str = "POST";
const ACTIONS: [&str; 3] = ["heartbeat", "complete", "evict"];

/// Splits `{id}:{action}` at the last colon (an id has none).
fn split_action(raw: &str) -> (&str, Option<&str>) {
    match raw.rsplit_once(':') {
        Some((id, action)) => (id, Some(action)),
        None => (raw, None),
    }
}

fn unknown_action(action: &str) -> Problem {
    Problem::not_found(format!("no action {action:?} (heartbeat, complete, evict)"))
}

/// A path with an `:action` asked with another method than POST: `405`, or `404` for an action
/// that does not exist (that path is not served at all).
fn not_an_action_method(action: &str) -> Problem {
    if ACTIONS.contains(&action) {
        method_not_allowed(ACTION_METHODS)
    } else {
        unknown_action(action)
    }
}

/// The id of a path with no `:action` (GET and DELETE); `405` for an action, which takes POST.
fn plain_id(raw: &str) -> Result<PublicSessionId, Problem> {
    if let (_, Some(action)) = split_action(raw) {
        return Err(not_an_action_method(action));
    }
    parse_id(raw)
}

/// Any method the session route has no handler for (PUT, PATCH, OPTIONS, ...): `405` whose
/// `Allow` names the methods of this path only, a session's or an action's (both share one
/// route, whose own `Allow` would list them all).
pub(crate) async fn other_method(Path(raw): Path<String>) -> Problem {
    match split_action(&raw) {
        (_, None) => method_not_allowed(SESSION_METHODS),
        (_, Some(action)) => not_an_action_method(action),
    }
}

/// The query of `GET /api/waiting-room/sessions/{id}`. Other parameters are ignored (a cache
/// buster, say), as they always were.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatusQuery {
    /// Hold the answer while the session is `WAITING`, until its status changes (its turn came:
    /// `ACTIVE`; or it ended) or this many seconds pass, whichever comes first; then answer its
    /// view as of then. For pages near the front of the line: they learn of their turn the
    /// moment it comes, with one request per wait instead of one per second. Held only while
    /// the view says `turnSoon` (the room's own judgement of the front of the line); answered at
    /// once otherwise (read at the next heartbeat then), when the session is not `WAITING`, and
    /// when the node already holds as many reads as it may (`--held-reads-max`): read again
    /// after a second then.
    // Read as text, so that every bad value gets the same clear problem.
    #[serde(rename = "waitSeconds")]
    #[param(required = false, value_type = Option<u64>, minimum = 1, maximum = 8)]
    wait_seconds: Option<String>,
}

impl StatusQuery {
    fn wait(&self) -> Result<Option<Duration>, Problem> {
        let Some(text) = &self.wait_seconds else {
            return Ok(None);
        };
        match text.parse::<u64>() {
            Ok(seconds @ 1..=STATUS_WAIT_SECONDS_MAX) => Ok(Some(Duration::from_secs(seconds))),
            _ => Err(Problem::bad_request(format!(
                "waitSeconds must be a whole number of seconds from 1 to {STATUS_WAIT_SECONDS_MAX}"
            ))),
        }
    }
}

/// `GET /api/waiting-room/sessions/{id}`
#[utoipa::path(
    get, path = "/api/waiting-room/sessions/{id}", tag = "client",
    params(("id" = String, Path, description = "The session id: `wr_` and 27 base64url characters, as issued. Any other id of at most 128 characters of `A-Z a-z 0-9 _ -` is unknown (`404`); anything else is malformed (`400`).",
        pattern = "^[A-Za-z0-9_-]{1,128}$", min_length = 1, max_length = 128), StatusQuery),
    responses(
        (status = 200, description = "The session view (changes nothing); with `waitSeconds`, once the status changed or the wait passed", body = SessionBody),
        (status = 400, description = "Malformed id, or `waitSeconds` not an integer from 1 to 8", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 404, description = "Never issued, or forgotten", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 405, description = "A method other than GET, HEAD and DELETE, or GET of an `:action`", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
        (status = 503, description = "This node could not catch up with its log in time", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub(crate) async fn get_session(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    query: Result<Query<StatusQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let id = plain_id(&raw)?;
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let wait = query.wait()?;
    let (cell, mut view) = find(&state, &id).await?;
    if let Some(wait) = wait
        && view.status == Status::Waiting
        && view.turn_soon
    {
        view = held(&state, &cell, &id, view, wait).await?;
    }
    Ok(session_response(
        &state,
        StatusCode::OK,
        &cell.id,
        &id,
        view,
    ))
}

/// The view of a `WAITING` session whose turn is soon (`turnSoon`) once its status changed or
/// `wait` passed (at once when the node holds `--held-reads-max` reads already). The room wakes its waiters after applying
/// records that changed some session's status; each re-reads its own view under the read lock
/// (registered for the next wake first, so none is missed in between).
async fn held(
    state: &AppState,
    cell: &RoomCell,
    id: &PublicSessionId,
    mut view: SessionView,
    wait: Duration,
) -> Result<SessionView, Problem> {
    let Ok(_permit) = state.held_reads.try_acquire() else {
        return Ok(view);
    };
    let _counted = Counted::new(&state.node.metrics.status_reads_held);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let changed = cell.changed.notified();
        let mut changed = std::pin::pin!(changed);
        changed.as_mut().enable();
        view = cell
            .state
            .read()
            .view(&id.session)
            .ok_or_else(unknown_session)?;
        if view.status != Status::Waiting {
            return Ok(view);
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return Ok(view);
        }
    }
}

/// One in a gauge while it lives.
struct Counted<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> Counted<'a> {
    fn new(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `DELETE /api/waiting-room/sessions/{id}`
#[utoipa::path(
    delete, path = "/api/waiting-room/sessions/{id}", tag = "client",
    params(("id" = String, Path, description = "The session id: `wr_` and 27 base64url characters, as issued. Any other id of at most 128 characters of `A-Z a-z 0-9 _ -` is unknown (`404`); anything else is malformed (`400`).",
        pattern = "^[A-Za-z0-9_-]{1,128}$", min_length = 1, max_length = 128)),
    responses(
        (status = 200, description = "Left (EXPIRED, reason `left`); idempotent", body = SessionBody),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 404, description = "Unknown session", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 405, description = "A method other than GET, HEAD and DELETE, or DELETE of an `:action`", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
        (status = 503, description = "Backend unavailable", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub(crate) async fn leave(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Response, Problem> {
    let id = plain_id(&raw)?;
    let (cell, view) = find(&state, &id).await?;
    end(
        &state,
        &cell,
        &id,
        view,
        Command::Leave {
            session: id.session,
            reason: LeaveReason::Left,
        },
    )
    .await
}

/// Writes an ending command and answers with the view after it; a session that already ended
/// is answered as it is, with nothing written (ending is idempotent).
async fn end(
    state: &AppState,
    cell: &RoomCell,
    id: &PublicSessionId,
    view: SessionView,
    command: Command,
) -> Result<Response, Problem> {
    if view.status == Status::Expired {
        return Ok(session_response(state, StatusCode::OK, &cell.id, id, view));
    }
    match state.node.write(&cell.id, command).await? {
        Outcome::Ended { .. }
        | Outcome::AlreadyEnded { .. }
        | Outcome::Rejected(Rejection::NotActive) => Ok(current(state, cell, id, StatusCode::OK)),
        Outcome::Rejected(Rejection::UnknownSession) => Err(unknown_session()),
        other => {
            tracing::error!(outcome = ?other, "unexpected outcome of an ending command");
            Err(Problem::internal())
        }
    }
}

/// `POST /api/waiting-room/sessions/{id}:heartbeat`, `:complete`, `:evict`.
pub(crate) async fn action(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (raw_id, action) = split_action(&raw);
    let Some(action) = action else {
        return Err(method_not_allowed(SESSION_METHODS));
    };
    match action {
        "heartbeat" => heartbeat(state, raw_id).await,
        "complete" => complete(state, raw_id, &headers).await,
        "evict" => evict(state, raw_id, &headers).await,
        _ => Err(unknown_action(action)),
    }
}

/// `POST /api/waiting-room/sessions/{id}:heartbeat`
#[utoipa::path(
    post, path = "/api/waiting-room/sessions/{id}:heartbeat", tag = "client",
    params(("id" = String, Path, description = "The session id: `wr_` and 27 base64url characters, as issued. Any other id of at most 128 characters of `A-Z a-z 0-9 _ -` is unknown (`404`); anything else is malformed (`400`).",
        pattern = "^[A-Za-z0-9_-]{1,128}$", min_length = 1, max_length = 128)),
    responses(
        (status = 200, description = "The view after the heartbeat took effect (EXPIRED sessions are unchanged)", body = SessionBody),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 404, description = "Unknown session", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 405, description = "A method other than POST", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
        (status = 503, description = "Backend unavailable", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub(crate) async fn heartbeat(state: Arc<AppState>, raw_id: &str) -> Result<Response, Problem> {
    let id = parse_id(raw_id)?;
    let (cell, view) = find(&state, &id).await?;
    let refresh_needed = {
        let room = cell.state.read();
        match (view.status, view.last_seen_ms, room.config()) {
            (Status::Expired, ..) | (_, None, _) | (_, _, None) => false,
            (Status::Waiting, Some(seen_ms), Some(config)) => waiting_heartbeat_needs_record(
                room.now_ms(),
                seen_ms,
                config.waiting_idle_timeout_seconds,
                config.heartbeat_interval_seconds,
            ),
            (Status::Active, ..) => true,
        }
    };
    if !refresh_needed {
        return Ok(session_response(
            &state,
            StatusCode::OK,
            &cell.id,
            &id,
            view,
        ));
    }
    state.node.heartbeat(&cell.id, id.session).await?;
    Ok(current(&state, &cell, &id, StatusCode::OK))
}

/// Whether a WAITING session's heartbeat must go to the log, its last one recorded at `seen_ms`.
/// It only has to reach the log often enough to beat the waiting idle timeout, so it is skipped
/// (answered from memory) while the last recorded one is less than a quarter of the timeout old
/// *and* the deadline that one set is still more than a heartbeat interval plus that quarter
/// away: the client's next heartbeat, due within one interval, then lands long before the place
/// could expire, whatever the ratio of interval to timeout. At the default settings (10 s
/// interval, 120 s timeout) one heartbeat in three is recorded, and the extra heartbeats a page
/// sends when it comes back to the foreground are absorbed.
fn waiting_heartbeat_needs_record(
    now_ms: u64,
    seen_ms: u64,
    waiting_idle_timeout_seconds: u32,
    heartbeat_interval_seconds: u32,
) -> bool {
    let timeout_ms = u64::from(waiting_idle_timeout_seconds) * 1000;
    let quarter_ms = timeout_ms / 4;
    let interval_ms = u64::from(heartbeat_interval_seconds) * 1000;
    let remaining_ms = (seen_ms + timeout_ms).saturating_sub(now_ms);
    now_ms.saturating_sub(seen_ms) >= quarter_ms || remaining_ms < interval_ms + quarter_ms
}

/// `POST /api/waiting-room/sessions/{id}:complete`
#[utoipa::path(
    post, path = "/api/waiting-room/sessions/{id}:complete", tag = "protected service",
    params(("id" = String, Path, description = "The session id: `wr_` and 27 base64url characters, as issued. Any other id of at most 128 characters of `A-Z a-z 0-9 _ -` is unknown (`404`); anything else is malformed (`400`).",
        pattern = "^[A-Za-z0-9_-]{1,128}$", min_length = 1, max_length = 128)),
    security(("admissionToken" = [])),
    responses(
        (status = 200, description = "Ended (EXPIRED, reason `completed`); already ended sessions are unchanged", body = SessionBody),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 401, description = "No valid, unexpired admission token of this session", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 404, description = "Unknown session", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 405, description = "A method other than POST", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
        (status = 503, description = "Backend unavailable", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub(crate) async fn complete(
    state: Arc<AppState>,
    raw_id: &str,
    headers: &HeaderMap,
) -> Result<Response, Problem> {
    let id = parse_id(raw_id)?;
    let (cell, view) = find(&state, &id).await?;
    let token = bearer(headers).ok_or_else(|| {
        Problem::unauthorized("send Authorization: Bearer <admissionToken of this session>")
    })?;
    state
        .tokens
        .check(token, cell.id.as_str(), &id.to_text())
        .map_err(|why| Problem::unauthorized(format!("admission token rejected: {why}")))?;
    end(
        &state,
        &cell,
        &id,
        view,
        Command::Leave {
            session: id.session,
            reason: LeaveReason::Completed,
        },
    )
    .await
}

/// `POST /api/waiting-room/sessions/{id}:evict`
#[utoipa::path(
    post, path = "/api/waiting-room/sessions/{id}:evict", tag = "admin",
    params(("id" = String, Path, description = "The session id: `wr_` and 27 base64url characters, as issued. Any other id of at most 128 characters of `A-Z a-z 0-9 _ -` is unknown (`404`); anything else is malformed (`400`).",
        pattern = "^[A-Za-z0-9_-]{1,128}$", min_length = 1, max_length = 128)),
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "Ended (EXPIRED, reason `evicted`); already ended sessions are unchanged", body = SessionBody),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 401, description = "No admin token", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 404, description = "Unknown session", body = ProblemBody, content_type = PROBLEM_JSON),
        (status = 405, description = "A method other than POST", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Allow" = String))),
        (status = 503, description = "Backend unavailable, or this node could not catch up with its log in time", body = ProblemBody, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub(crate) async fn evict(
    state: Arc<AppState>,
    raw_id: &str,
    headers: &HeaderMap,
) -> Result<Response, Problem> {
    require_admin(&state, headers)?;
    let id = parse_id(raw_id)?;
    let (cell, view) = find(&state, &id).await?;
    end(
        &state,
        &cell,
        &id,
        view,
        Command::Evict {
            session: id.session,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use http::{Request, StatusCode};
    use tower::ServiceExt as _;
    use waitroom_core::{Command, RoomConfig, RoomId};

    use super::waiting_heartbeat_needs_record as needs_record;
    use crate::http::{AppState, router};
    use crate::node::{Node, NodeOptions};
    use crate::tokens::Tokens;
    use waitroom_log::memory::MemoryLog;

    async fn join(app: &axum::Router, key: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::post("/api/waiting-room/sessions")
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(r#"{"roomId":"held"}"#))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// A join that was appended but not applied in time is answered 503; the client retries
    /// with the same Idempotency-Key (the waiting page does) and must get that place, alive,
    /// not a session withdrawn behind its back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timed_out_join_is_kept_for_the_retry_with_its_key() {
        let mut tasks = tokio::task::JoinSet::new();
        let options = NodeOptions {
            write_wait_ms: 200,
            ..NodeOptions::default()
        };
        let node = Node::start(Arc::new(MemoryLog::new()), options, &mut tasks);
        node.wait_ready(Duration::from_secs(5)).await.unwrap();
        let room = RoomId::new("held").unwrap();
        node.write(&room, Command::ConfigureRoom(RoomConfig::with_capacity(1)))
            .await
            .unwrap();
        let app = router(Arc::new(AppState {
            node: node.clone(),
            tokens: Tokens::new(
                waitroom_token::SigningKey::generate().unwrap(),
                "waitroom".into(),
            ),
            admin_token: "test-admin-token-0123456789".into(),
            join_rate_limit: None,
            client_ip_header: None,
            registry: node.metrics_registry(),
            held_reads: tokio::sync::Semaphore::new(crate::limits::HELD_READS_MAX),
            join_verifier: None,
        }));

        // Another thread holds the room's state, so the applier cannot apply the join in time.
        let cell = node.room(&room).unwrap();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _state = cell.state.read();
            held_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        held_rx.recv().unwrap();
        let (status, body) = join(&app, "retry-me").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        release_tx.send(()).unwrap();
        holder.join().unwrap();

        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let place = loop {
            let (status, body) = join(&app, "retry-me").await;
            if status == StatusCode::OK {
                break body;
            }
            assert!(tokio::time::Instant::now() < deadline, "{status}: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(place["status"], "ACTIVE", "{place}");
        // Still alive a moment later: no withdrawal was on its way.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, again) = join(&app, "retry-me").await;
        assert_eq!(
            (status, &again["status"]),
            (StatusCode::OK, &place["status"]),
            "{again}"
        );
        assert_eq!(again["waitingRoomSessionId"], place["waitingRoomSessionId"]);
        tasks.abort_all();
    }

    #[test]
    fn the_client_address_is_the_one_our_proxy_added() {
        let name = http::HeaderName::from_static("x-forwarded-for");
        let mut headers = http::HeaderMap::new();
        assert_eq!(super::last_forwarded_ip(&headers, &name), None);
        headers.append(&name, "6.6.6.6, 10.0.0.1".parse().unwrap());
        headers.append(&name, "203.0.113.7, 198.51.100.2".parse().unwrap());
        assert_eq!(
            super::last_forwarded_ip(&headers, &name),
            Some("198.51.100.2".parse().unwrap())
        );
        let mut single = http::HeaderMap::new();
        single.insert(&name, " 2001:db8::1 ".parse().unwrap());
        assert_eq!(
            super::last_forwarded_ip(&single, &name),
            Some("2001:db8::1".parse().unwrap())
        );
        single.insert(&name, "not-an-address".parse().unwrap());
        assert_eq!(super::last_forwarded_ip(&single, &name), None);
    }

    #[test]
    fn waiting_heartbeats_are_skipped_only_while_the_next_one_is_safe() {
        // Defaults (10 s interval, 120 s timeout): recorded at 0, skipped until 30 s.
        assert!(!needs_record(10_000, 0, 120, 10));
        assert!(!needs_record(29_999, 0, 120, 10));
        assert!(needs_record(30_000, 0, 120, 10));
        // An interval close to the timeout (100 s of 120 s): a heartbeat 20 s after the recorded
        // one must be recorded, or the next one (100 s later) would come exactly at the deadline.
        assert!(needs_record(20_000, 0, 120, 100));
        assert!(needs_record(1_000, 0, 120, 100));
        // The log clock behind the last recorded heartbeat (another node's record): skip.
        assert!(!needs_record(0, 5_000, 120, 10));
    }
}
