//! The load tool's HTTP side against a tiny in-test server implementing a trivially correct
//! queue (one mutex, FIFO, admission on every change, no expiry), optionally with deliberate
//! flaws. This exercises the request code paths and the detection end to end; measuring the
//! real waitroom is done by running the tool against it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use serde_json::{Value, json};
use waitroom_load::{
    Args, CHART_FILES, LoadError, LoadOptions, NoProgress, Report, StopReason, format_rfc3339_ms,
    run, run_protected, run_until, write_outputs,
};

const ADMIN_TOKEN: &str = "admin-secret";

/// Deliberate bugs the fake server can have.
#[derive(Debug, Clone, Copy, Default)]
struct Flaws {
    /// Admit up to `capacity + extra_admissions`.
    extra_admissions: usize,
    /// Admit the newest waiter first.
    lifo: bool,
    /// Answer every n-th join with 503.
    fail_join_every: Option<u64>,
    /// Answer every n-th poll of each session with a body that is not a session view.
    garbage_poll_every: Option<u64>,
}

#[derive(Debug, Clone)]
struct Session {
    status: &'static str,
    joined_at_ms: i64,
    admitted_at_ms: Option<i64>,
    token: Option<String>,
    reason: Option<&'static str>,
    polls: u64,
}

#[derive(Debug, Default)]
struct Room {
    configured: bool,
    capacity: usize,
    heartbeat_interval_seconds: u64,
    waiting: VecDeque<String>,
    active: usize,
    sessions: HashMap<String, Session>,
    idempotency: HashMap<String, String>,
    next_id: u64,
    joins: u64,
    /// The `X-Forwarded-For` of every join that carried one.
    forwarded_for: Vec<String>,
}

/// What the fake protected service (`POST /protected`) saw.
#[derive(Debug, Default)]
struct ProtectedLog {
    /// `user` of every request's body.
    users: Vec<String>,
    /// Requests whose bearer token was the token of a session ACTIVE at that moment.
    with_active_token: u64,
    /// Requests without any `Authorization`.
    without_token: u64,
}

struct Fake {
    room: Mutex<Room>,
    flaws: Flaws,
    protected: Mutex<ProtectedLog>,
}

type Shared = Arc<Fake>;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn time(ms: i64) -> String {
    format_rfc3339_ms(ms * 1000)
}

impl Room {
    fn admit(&mut self, flaws: Flaws) {
        while self.active < self.capacity + flaws.extra_admissions {
            let next = if flaws.lifo {
                self.waiting.pop_back()
            } else {
                self.waiting.pop_front()
            };
            let Some(id) = next else { break };
            let session = self.sessions.get_mut(&id).unwrap();
            session.status = "ACTIVE";
            session.admitted_at_ms = Some(now_ms());
            session.token = Some(format!("token-{id}"));
            self.active += 1;
        }
    }

    fn end(&mut self, id: &str, reason: &'static str, flaws: Flaws) {
        let session = self.sessions.get_mut(id).unwrap();
        match session.status {
            "ACTIVE" => self.active -= 1,
            "WAITING" => self.waiting.retain(|waiting| waiting != id),
            _ => return,
        }
        session.status = "EXPIRED";
        session.reason = Some(reason);
        session.token = None;
        self.admit(flaws);
    }

    fn view(&self, id: &str) -> Value {
        let session = &self.sessions[id];
        let waiting = session.status == "WAITING";
        let position = waiting.then(|| self.waiting.iter().position(|other| other == id).unwrap());
        json!({
            "waitingRoomSessionId": id,
            "roomId": "load-test",
            "status": session.status,
            "position": position,
            "waitingCount": self.waiting.len(),
            "estimatedWaitSeconds": position.map(|position| position / self.capacity.max(1)),
            "prequeue": false,
            "opensAt": null,
            "joinedAt": time(session.joined_at_ms),
            "admittedAt": session.admitted_at_ms.map(time),
            "expiresAt": null,
            "heartbeatIntervalSeconds": self.heartbeat_interval_seconds,
            "admissionToken": session.token,
            "targetUrl": null,
            "expiredReason": session.reason,
        })
    }

    fn room_body(&self) -> Value {
        json!({
            "roomId": "load-test",
            "config": { "capacity": self.capacity, "heartbeatIntervalSeconds": self.heartbeat_interval_seconds },
            "stats": { "waitingCount": self.waiting.len(), "activeCount": self.active, "admittedTotal": 0 },
        })
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn problem(status: StatusCode) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        json!({"type": "about:blank", "title": "error", "status": status.as_u16(), "detail": ""})
            .to_string(),
    )
        .into_response()
}

fn is_admin(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        == Some(&format!("Bearer {ADMIN_TOKEN}"))
}

async fn put_room(State(fake): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if !is_admin(&headers) {
        return problem(StatusCode::UNAUTHORIZED);
    }
    let config: Value = serde_json::from_slice(&body).unwrap();
    let mut room = fake.room.lock().unwrap();
    room.configured = true;
    room.capacity = config["capacity"].as_u64().unwrap() as usize;
    room.heartbeat_interval_seconds = config["heartbeatIntervalSeconds"].as_u64().unwrap_or(10);
    room.admit(fake.flaws);
    json_response(StatusCode::OK, room.room_body())
}

async fn get_room(State(fake): State<Shared>, headers: HeaderMap) -> Response {
    if !is_admin(&headers) {
        return problem(StatusCode::UNAUTHORIZED);
    }
    let room = fake.room.lock().unwrap();
    if !room.configured {
        return problem(StatusCode::NOT_FOUND);
    }
    json_response(StatusCode::OK, room.room_body())
}

async fn delete_room(State(fake): State<Shared>, headers: HeaderMap) -> Response {
    if !is_admin(&headers) {
        return problem(StatusCode::UNAUTHORIZED);
    }
    let mut room = fake.room.lock().unwrap();
    if !room.configured {
        return problem(StatusCode::NOT_FOUND);
    }
    let body = room.room_body();
    *room = Room::default();
    json_response(StatusCode::OK, body)
}

async fn join(State(fake): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(_) => return problem(StatusCode::BAD_REQUEST),
    };
    if request["roomId"] != "load-test" {
        return problem(StatusCode::NOT_FOUND);
    }
    let mut room = fake.room.lock().unwrap();
    if !room.configured {
        return problem(StatusCode::NOT_FOUND);
    }
    room.joins += 1;
    if let Some(address) = headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
    {
        room.forwarded_for.push(address.to_owned());
    }
    if fake
        .flaws
        .fail_join_every
        .is_some_and(|every| room.joins % every == 0)
    {
        return problem(StatusCode::SERVICE_UNAVAILABLE);
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    if let Some(id) = key.as_ref().and_then(|key| room.idempotency.get(key)) {
        let id = id.clone();
        return json_response(StatusCode::OK, room.view(&id));
    }
    room.next_id += 1;
    let id = format!("wr_{}", room.next_id);
    room.sessions.insert(
        id.clone(),
        Session {
            status: "WAITING",
            joined_at_ms: now_ms(),
            admitted_at_ms: None,
            token: None,
            reason: None,
            polls: 0,
        },
    );
    room.waiting.push_back(id.clone());
    if let Some(key) = key {
        room.idempotency.insert(key, id.clone());
    }
    room.admit(fake.flaws);
    json_response(StatusCode::CREATED, room.view(&id))
}

async fn get_session(State(fake): State<Shared>, Path(id): Path<String>) -> Response {
    let mut room = fake.room.lock().unwrap();
    if !room.sessions.contains_key(&id) {
        return problem(StatusCode::NOT_FOUND);
    }
    let session = room.sessions.get_mut(&id).unwrap();
    session.polls += 1;
    let polls = session.polls;
    if fake
        .flaws
        .garbage_poll_every
        .is_some_and(|every| polls % every == 0)
    {
        return (StatusCode::OK, "<html>oops</html>").into_response();
    }
    json_response(StatusCode::OK, room.view(&id))
}

async fn delete_session(State(fake): State<Shared>, Path(id): Path<String>) -> Response {
    let mut room = fake.room.lock().unwrap();
    if !room.sessions.contains_key(&id) {
        return problem(StatusCode::NOT_FOUND);
    }
    room.end(&id, "left", fake.flaws);
    json_response(StatusCode::OK, room.view(&id))
}

async fn session_action(
    State(fake): State<Shared>,
    Path(id_and_action): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some((id, action)) = id_and_action.split_once(':') else {
        return problem(StatusCode::METHOD_NOT_ALLOWED);
    };
    let mut room = fake.room.lock().unwrap();
    if !room.sessions.contains_key(id) {
        return problem(StatusCode::NOT_FOUND);
    }
    match action {
        "heartbeat" => json_response(StatusCode::OK, room.view(id)),
        "complete" => {
            let session = &room.sessions[id];
            if session.status == "ACTIVE" {
                let expected = session
                    .token
                    .as_ref()
                    .map(|token| format!("Bearer {token}"));
                let given = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok());
                if given != expected.as_deref() {
                    return problem(StatusCode::UNAUTHORIZED);
                }
                room.end(id, "completed", fake.flaws);
            }
            json_response(StatusCode::OK, room.view(id))
        }
        _ => problem(StatusCode::NOT_FOUND),
    }
}

/// The protected service: checks the token against the sessions and logs the request.
async fn protected(State(fake): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(_) => return problem(StatusCode::BAD_REQUEST),
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer token-"))
        .map(str::to_string);
    let active = {
        let room = fake.room.lock().unwrap();
        token.as_ref().is_some_and(|id| {
            room.sessions
                .get(id)
                .is_some_and(|session| session.status == "ACTIVE")
        })
    };
    let mut log = fake.protected.lock().unwrap();
    log.users
        .push(request["user"].as_str().unwrap_or_default().to_string());
    log.with_active_token += u64::from(active);
    log.without_token += u64::from(!headers.contains_key(header::AUTHORIZATION));
    json_response(StatusCode::OK, json!({"seat": log.users.len()}))
}

/// Starts a fake server on a random port; returns its base URL and its state.
async fn start(flaws: Flaws) -> (String, Shared) {
    let fake = Arc::new(Fake {
        room: Mutex::new(Room::default()),
        flaws,
        protected: Mutex::new(ProtectedLog::default()),
    });
    let router = Router::new()
        .route(
            "/api/waiting-room/rooms/{room}",
            get(get_room).put(put_room).delete(delete_room),
        )
        .route("/api/waiting-room/sessions", post(join))
        .route(
            "/api/waiting-room/sessions/{id}",
            get(get_session).delete(delete_session).post(session_action),
        )
        .route("/protected", post(protected))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{address}"), fake)
}

#[derive(Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn options(url: &str, extra: &[&str]) -> LoadOptions {
    let mut argv = vec![
        "load",
        "--url",
        url,
        "--admin-token",
        ADMIN_TOKEN,
        "--seed",
        "1",
        "--heartbeat-interval-seconds",
        "1",
        "--poll-interval-ms",
        "20",
        "--stats-interval-ms",
        "10",
        "--duration-max-seconds",
        "60",
        "--connections-max",
        "64",
    ];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv)
        .unwrap()
        .args
        .to_options()
        .unwrap()
}

fn request_count(report: &Report, kind: &str) -> u64 {
    let json = serde_json::to_value(&report.metrics).unwrap();
    json["requests"][kind]["count"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_server_passes_and_everything_is_measured() {
    let (url, _fake) = start(Flaws::default()).await;
    let options = options(
        &url,
        &[
            "--users",
            "300",
            "--capacity",
            "20",
            "--hold-seconds",
            "0.02..0.1",
        ],
    );
    let report = run(options, &NoProgress).await.unwrap();
    let metrics = &report.metrics;
    assert_eq!(
        report.stop_reason,
        StopReason::Completed,
        "{}",
        report.summary()
    );
    assert_eq!(metrics.capacity, 20);
    assert_eq!(metrics.users.joined, 300);
    assert_eq!(metrics.users.completed, 300);
    assert_eq!(metrics.users.admitted, 300);
    assert_eq!(metrics.failures.total, 0, "{:?}", metrics.failures);
    assert_eq!(metrics.overshoot.client.overshoot, 0);
    assert!(metrics.overshoot.client.active_max > 0);
    let server = metrics.overshoot.server.as_ref().unwrap();
    assert_eq!(server.overshoot, 0);
    assert!(server.samples > 0);
    assert_eq!(metrics.fifo.inversions, 0);
    assert_eq!(metrics.fifo.sessions, 300);
    assert!(metrics.refill_latency.refilled > 0);
    assert_eq!(metrics.refill_latency.unrefilled, 0);
    assert!(metrics.utilisation.client.is_some_and(|value| value > 0.0));
    assert!(metrics.utilisation.server.is_some_and(|value| value > 0.0));
    assert!(metrics.eta_error.samples > 0);
    assert!(metrics.clock_offset.unwrap().consistent);
    assert!(report.gate.passed, "{:?}", report.gate);
    assert_eq!(request_count(&report, "join"), 300);
    assert_eq!(request_count(&report, "complete"), 300);
    assert_eq!(request_count(&report, "configure"), 1);
    assert!(request_count(&report, "poll") > 0);

    let directory = tempfile::tempdir().unwrap();
    let written = write_outputs(&report, directory.path()).unwrap();
    assert_eq!(written.len(), 2 + CHART_FILES.len());
    let json: Value =
        serde_json::from_slice(&std::fs::read(directory.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["options"]["adminToken"], "<redacted>");
    assert_eq!(json["metrics"]["overshoot"]["client"]["overshoot"], 0);
    assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(json["commandLine"].is_string());
    assert!(
        !std::fs::read_to_string(directory.path().join("report.json"))
            .unwrap()
            .contains(ADMIN_TOKEN)
    );
    for chart in CHART_FILES {
        let svg = std::fs::read_to_string(directory.path().join(chart)).unwrap();
        assert!(svg.contains("<svg"), "{chart}");
    }
}

/// `--forwarded-for`: every user's join carries an address of its own in that header (so a
/// deployment trusting it limits joins per user, not per load tool); without it, none does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_gives_each_user_an_address() {
    let (url, fake) = start(Flaws::default()).await;
    let base = [
        "--users",
        "300",
        "--capacity",
        "50",
        "--hold-seconds",
        "0.02",
    ];
    run(options(&url, &base), &NoProgress).await.unwrap();
    assert!(fake.room.lock().unwrap().forwarded_for.is_empty());
    let mut with = base.to_vec();
    with.extend(["--forwarded-for", "X-Forwarded-For", "--reset-room"]);
    run(options(&url, &with), &NoProgress).await.unwrap();
    let seen = fake.room.lock().unwrap().forwarded_for.clone();
    assert_eq!(seen.len(), 300);
    let addresses: std::collections::HashSet<std::net::Ipv4Addr> = seen
        .iter()
        .map(|address| address.parse().expect("an IPv4 address"))
        .collect();
    assert_eq!(addresses.len(), 300, "one address per user");
    assert!(addresses.iter().all(|address| address.octets()[0] == 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overadmitting_server_is_caught_both_ways() {
    let (url, _fake) = start(Flaws {
        extra_admissions: 1,
        ..Flaws::default()
    })
    .await;
    let options = options(
        &url,
        &[
            "--users",
            "60",
            "--capacity",
            "5",
            "--hold-seconds",
            "0.2..0.3",
            "--poll-interval-ms",
            "10",
        ],
    );
    let report = run(options, &NoProgress).await.unwrap();
    let overshoot = &report.metrics.overshoot;
    // The server really held 6 ACTIVE with capacity 5: the clients prove exactly 1 too many.
    assert_eq!(overshoot.client.overshoot, 1, "{}", report.summary());
    assert_eq!(overshoot.server.as_ref().unwrap().overshoot, 1);
    assert!(!report.gate.passed);
    assert_eq!(report.gate.failures.len(), 2, "{:?}", report.gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifo_server_shows_inversions() {
    let (url, _fake) = start(Flaws {
        lifo: true,
        ..Flaws::default()
    })
    .await;
    let options = options(
        &url,
        &[
            "--users",
            "100",
            "--capacity",
            "2",
            "--arrival",
            "ramp:0.5",
            "--hold-seconds",
            "0.01..0.03",
        ],
    );
    let report = run(options, &NoProgress).await.unwrap();
    assert!(report.metrics.fifo.inversions > 0, "{}", report.summary());
    // Inversions are reported, not gated.
    assert!(report.gate.passed, "{:?}", report.gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_measured_not_fatal() {
    let (url, _fake) = start(Flaws {
        fail_join_every: Some(3),
        garbage_poll_every: Some(3),
        ..Flaws::default()
    })
    .await;
    let options = options(
        &url,
        &[
            "--users",
            "90",
            "--capacity",
            "5",
            "--hold-seconds",
            "0.01..0.05",
        ],
    );
    let report = run(options, &NoProgress).await.unwrap();
    let metrics = &report.metrics;
    assert_eq!(metrics.users.join_failed, 30);
    assert_eq!(metrics.users.joined, 60);
    assert_eq!(metrics.users.completed, 60, "{}", report.summary());
    let by_kind = serde_json::to_value(&metrics.failures.by_kind).unwrap();
    assert_eq!(by_kind["join"]["503"], 30);
    assert!(by_kind["poll"]["bad-body"].as_u64().unwrap() > 0);
    assert_eq!(metrics.failures.by_status["503"], 30);
    assert!(!report.gate.passed);
    assert!(report.gate.failures[0].contains("30 joins failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_abandon_while_waiting_and_while_active() {
    let (url, _fake) = start(Flaws::default()).await;
    let options = options(
        &url,
        &[
            "--users",
            "60",
            "--capacity",
            "2",
            "--hold-seconds",
            "0.05..0.1",
            "--abandon-waiting-ratio",
            "0.5",
            "--abandon-waiting-after-seconds",
            "0.05..0.3",
            "--abandon-active-ratio",
            "0.5",
        ],
    );
    let report = run(options, &NoProgress).await.unwrap();
    let users = &report.metrics.users;
    assert!(users.left_waiting > 0, "{}", report.summary());
    assert!(users.left_active > 0, "{}", report.summary());
    assert!(users.completed > 0, "{}", report.summary());
    assert_eq!(
        users.left_waiting + users.left_active + users.completed,
        60,
        "{}",
        report.summary()
    );
    assert_eq!(report.metrics.failures.total, 0);
    assert_eq!(report.metrics.overshoot.client.overshoot, 0);
    assert_eq!(report.metrics.fifo.inversions, 0);
    // Slots freed by leaving count as freed slots too.
    assert_eq!(
        report.metrics.refill_latency.freed,
        users.completed + users.left_active
    );
    assert!(request_count(&report, "leave") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_room_without_admin_token() {
    let (url, fake) = start(Flaws::default()).await;
    {
        let mut room = fake.room.lock().unwrap();
        room.configured = true;
        room.capacity = 3;
        room.heartbeat_interval_seconds = 1;
    }
    let argv = [
        "load",
        "--url",
        url.as_str(),
        "--no-configure",
        "--capacity",
        "3",
        "--users",
        "20",
        "--hold-seconds",
        "0.01",
        "--poll-interval-ms",
        "20",
    ];
    let options = Cli::try_parse_from(argv)
        .unwrap()
        .args
        .to_options()
        .unwrap();
    let report = run(options, &NoProgress).await.unwrap();
    assert_eq!(report.metrics.users.completed, 20, "{}", report.summary());
    assert_eq!(report.metrics.overshoot.server, None);
    assert!(report.summary().contains("not sampled"));
    assert!(report.gate.passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_stops_at_its_duration_bound() {
    let (url, _fake) = start(Flaws::default()).await;
    let options = options(
        &url,
        &[
            "--users",
            "10",
            "--capacity",
            "2",
            "--hold-seconds",
            "30",
            "--duration-max-seconds",
            "1",
        ],
    );
    let report = run(options, &NoProgress).await.unwrap();
    assert_eq!(report.stop_reason, StopReason::DurationMax);
    assert_eq!(report.metrics.users.still_active, 2, "{}", report.summary());
    assert_eq!(report.metrics.users.still_waiting, 8);
    assert!(report.metrics.duration_seconds < 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_stops_when_the_trace_is_full() {
    let (url, _fake) = start(Flaws::default()).await;
    let options = options(
        &url,
        &[
            "--users",
            "20",
            "--capacity",
            "1",
            "--hold-seconds",
            "1",
            "--trace-records-max",
            "100",
        ],
    );
    let report = run(options, &NoProgress).await.unwrap();
    assert_eq!(
        report.stop_reason,
        StopReason::TraceFull,
        "{}",
        report.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_stops_the_run_and_keeps_the_figures() {
    let (url, _fake) = start(Flaws::default()).await;
    let options = options(
        &url,
        &["--users", "10", "--capacity", "2", "--hold-seconds", "30"],
    );
    let shutdown = tokio::time::sleep(Duration::from_millis(300));
    let report = run_until(options, &NoProgress, shutdown).await.unwrap();
    assert_eq!(report.stop_reason, StopReason::Interrupted);
    assert_eq!(report.metrics.users.joined, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_an_error_or_a_measured_failure() {
    // Bind then drop a listener: nothing listens on that port any more.
    let address = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{address}");
    let error = run(options(&url, &["--users", "3"]), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(error, LoadError::Configure(_)), "{error}");

    let argv = [
        "load",
        "--url",
        url.as_str(),
        "--no-configure",
        "--capacity",
        "3",
        "--users",
        "3",
    ];
    let options = Cli::try_parse_from(argv)
        .unwrap()
        .args
        .to_options()
        .unwrap();
    let report = run(options, &NoProgress).await.unwrap();
    assert_eq!(report.metrics.users.join_failed, 3);
    assert_eq!(report.metrics.failures.by_status["transport"], 3);
    assert!(!report.gate.passed);
}

fn protected_run_options(
    url: &str,
    extra: &[&str],
) -> (LoadOptions, waitroom_load::ProtectedOptions) {
    let mut argv = vec![
        "load",
        "--url",
        url,
        "--admin-token",
        ADMIN_TOKEN,
        "--seed",
        "1",
        "--heartbeat-interval-seconds",
        "1",
        "--poll-interval-ms",
        "20",
        "--stats-interval-ms",
        "10",
        "--duration-max-seconds",
        "60",
        "--connections-max",
        "64",
    ];
    argv.extend_from_slice(extra);
    let args = Cli::try_parse_from(argv).unwrap().args;
    let protected = args.protected_options().unwrap().unwrap();
    (args.to_options().unwrap(), protected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitted_users_call_the_protected_service_with_their_token() {
    let (url, fake) = start(Flaws::default()).await;
    let protected_url = format!("{url}/protected");
    let (options, protected) = protected_run_options(
        &url,
        &[
            "--users",
            "50",
            "--capacity",
            "5",
            "--hold-seconds",
            "0.01..0.05",
            "--protected-url",
            &protected_url,
        ],
    );
    assert!(!protected.direct);
    let report = run_protected(
        options,
        Some(protected),
        &NoProgress,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(report.metrics.users.completed, 50, "{}", report.summary());
    assert_eq!(request_count(&report, "protected"), 50);
    assert_eq!(
        report
            .metrics
            .requests
            .values()
            .map(|stats| stats.failed)
            .sum::<u64>(),
        0
    );
    assert!(report.gate.passed, "{:?}", report.gate);
    assert!(
        report.summary().contains("protected 50 sent, 50 ok"),
        "{}",
        report.summary()
    );
    let log = fake.protected.lock().unwrap();
    // Each user once, while ACTIVE, with its own token.
    assert_eq!(log.users.len(), 50);
    assert_eq!(log.with_active_token, 50);
    let mut users = log.users.clone();
    users.sort();
    users.dedup();
    assert_eq!(users.len(), 50);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["protected"]["url"], protected_url.as_str());
    assert_eq!(json["protected"]["direct"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_users_skip_the_waiting_room() {
    let (url, fake) = start(Flaws::default()).await;
    let protected_url = format!("{url}/protected");
    let (options, protected) = protected_run_options(
        &url,
        &[
            "--users",
            "40",
            "--direct",
            "--protected-url",
            &protected_url,
        ],
    );
    assert!(protected.direct && !options.gate && !options.configure);
    let report = run_protected(
        options,
        Some(protected),
        &NoProgress,
        std::future::pending(),
    )
    .await
    .unwrap();
    let metrics = &report.metrics;
    assert_eq!(report.stop_reason, StopReason::Completed);
    assert_eq!(metrics.users.direct, 40, "{}", report.summary());
    assert_eq!(metrics.users.joined, 0);
    assert_eq!(metrics.capacity, 0);
    // Nothing but the protected requests: no configure, join or stats sample.
    assert_eq!(metrics.requests.len(), 1, "{:?}", metrics.requests.keys());
    assert_eq!(request_count(&report, "protected"), 40);
    assert!(
        report
            .summary()
            .contains("gate      not applicable (--direct)")
    );
    assert_eq!(fake.room.lock().unwrap().joins, 0);
    assert!(!fake.room.lock().unwrap().configured);
    let log = fake.protected.lock().unwrap();
    assert_eq!(log.users.len(), 40);
    assert_eq!(log.without_token, 40);
}

#[test]
fn direct_needs_a_plain_http_protected_url() {
    let args = |extra: &[&str]| {
        let mut argv = vec!["load", "--url", "http://127.0.0.1:1"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args
    };
    assert!(args(&["--direct"]).protected_options().is_err());
    assert!(
        args(&["--protected-url", "https://h/p"])
            .protected_options()
            .is_err()
    );
    assert!(
        args(&["--protected-url", "http://h:1/p?q"])
            .protected_options()
            .is_err()
    );
    assert_eq!(args(&[]).protected_options().unwrap(), None);
    // --direct needs no admin token: the room is not touched.
    let direct = args(&["--direct", "--protected-url", "http://h:1/p/"]);
    assert_eq!(
        direct.protected_options().unwrap().unwrap().url,
        "http://h:1/p"
    );
    assert!(direct.to_options().is_ok());
}

/// A smoke benchmark of the tool itself (not run by default; run it in release mode):
/// `cargo test --release -p waitroom-load --test against_fake_server -- --ignored --nocapture`
/// (set `WAITROOM_LOAD_BENCH_OUT=<dir>` to keep its report and charts).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark of the load tool, seconds long; run on demand"]
async fn many_users_against_the_fake_server() {
    let (url, _fake) = start(Flaws::default()).await;
    let options = options(
        &url,
        &[
            "--users",
            "20000",
            "--capacity",
            "500",
            "--arrival",
            "ramp:5",
            "--hold-seconds",
            "0.2..1",
            "--heartbeat-interval-seconds",
            "5",
            "--poll-interval-ms",
            "2000",
            "--stats-interval-ms",
            "250",
            "--connections-max",
            "256",
            "--duration-max-seconds",
            "120",
        ],
    );
    let started = std::time::Instant::now();
    let report = run(options, &NoProgress).await.unwrap();
    println!("{}", report.summary());
    println!("wall time {:?}", started.elapsed());
    if let Some(out) = std::env::var_os("WAITROOM_LOAD_BENCH_OUT") {
        write_outputs(&report, std::path::Path::new(&out)).unwrap();
    }
    assert_eq!(report.stop_reason, StopReason::Completed);
    assert!(report.gate.passed, "{:?}", report.gate);
    assert_eq!(report.metrics.fifo.inversions, 0);
    assert_eq!(report.metrics.refill_latency.unrefilled, 0);
}
