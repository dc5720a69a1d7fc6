//! The node's whole HTTP API (`waitroom::http::router`: routing, the guard, every handler) on
//! requests the fuzzer writes, driven in-process with tower's `oneshot` against a real node on a
//! memory log: join bodies, room configuration PUT bodies, session ids and room ids in paths,
//! `Idempotency-Key` and `X-Forwarded-For` headers, content types, methods. Every request must
//! be answered without a panic, and:
//! - with a 2xx or a 4xx, never a 5xx (or anything else), except the documented `503` of a join
//!   to a room whose line is full (`room-full`);
//! - every 4xx with an `application/problem+json` body whose `status` is the response's;
//! - every `application/json` body valid JSON.
//!
//! An input is up to [`REQUESTS_MAX`] requests separated by lines `%%`, each written like
//! HTTP/1: `METHOD target`, header lines, an empty line, the body. In the target, header values
//! and the body, `$session` stands for the id of the last session a join of this input was given
//! (so later requests reach real sessions), `$unknown` for a well-formed id of room `fuzz` that
//! was never issued, and `$admin` for the admin token. Requests that HTTP/1 itself could not
//! carry (a bad method, target or header) are skipped, as hyper would refuse them before the
//! router.
//!
//! The node (rooms `fuzz`, capacity 1, and `line`, capacity 2 with at most 4 waiting) lives
//! across inputs, on a current-thread runtime (on paused time) that runs its tasks while a
//! request is in flight; it is replaced every [`INPUTS_PER_NODE`] inputs so that its memory
//! stays bounded.

#![no_main]

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use libfuzzer_sys::fuzz_target;
use tokio::task::JoinSet;
use tower::ServiceExt;
use waitroom::http::{AppState, JoinRateLimit, router};
use waitroom::ids::PublicSessionId;
use waitroom::node::{Node, NodeOptions};
use waitroom::tokens::Tokens;
use waitroom_core::{Command, RoomConfig, RoomId, SessionId};
use waitroom_log::memory::MemoryLog;

const ADMIN_TOKEN: &str = "fuzz-admin-token-0123456789";
const REQUESTS_MAX: usize = 8;
const INPUTS_PER_NODE: u32 = 2_000;
/// Larger than any body the API sends (the room list is bounded by the node's rooms here).
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    app: Router,
    /// The node's tasks, aborted when the fixture is replaced.
    _tasks: JoinSet<()>,
    inputs: u32,
}

impl Fixture {
    fn new() -> Self {
        // On paused time, which jumps to the next timer whenever every task waits: the node's
        // waits by design (one head read per 10 ms for reads of unknown ids, the heartbeat
        // flush window) cost no wall-clock time. The node's tasks all run on this runtime
        // (the memory log has no thread of its own), so a jump happens only when nothing else
        // can run, as a wait that expires would on real time. Room clocks are the log's
        // timestamps (wall clock), not this.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a tokio runtime");
        let (app, tasks) = runtime.block_on(async {
            let mut tasks = JoinSet::new();
            let node = Node::start(Arc::new(MemoryLog::new()), NodeOptions::DEFAULT, &mut tasks);
            node.wait_ready(Duration::from_secs(10))
                .await
                .expect("the node turns ready");
            let mut line = RoomConfig::with_capacity(2);
            line.max_waiting = Some(4);
            for (room, config) in [("fuzz", RoomConfig::with_capacity(1)), ("line", line)] {
                let room = RoomId::new(room).expect("a room id");
                node.write(&room, Command::ConfigureRoom(config))
                    .await
                    .expect("configure a room");
            }
            let state = Arc::new(AppState {
                node: node.clone(),
                tokens: Tokens::new(
                    waitroom_token::SigningKey::generate().expect("a signing key"),
                    "waitroom".into(),
                ),
                admin_token: ADMIN_TOKEN.into(),
                // Generous, so joins are not refused, but on: `X-Forwarded-For` is parsed.
                join_rate_limit: JoinRateLimit::new(1_000_000, 1_000_000),
                client_ip_header: Some(HeaderName::from_static("x-forwarded-for")),
                registry: node.metrics_registry(),
                held_reads: tokio::sync::Semaphore::new(waitroom::limits::HELD_READS_MAX),
                join_verifier: None,
            });
            (router(state), tasks)
        });
        Self {
            runtime,
            app,
            _tasks: tasks,
            inputs: 0,
        }
    }
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    FIXTURE.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|f| f.inputs >= INPUTS_PER_NODE) {
            // The old node's tasks end with its runtime.
            *cell = None;
            *cell = Some(Fixture::new());
        }
        let fixture = cell.as_mut().expect("a fixture");
        fixture.inputs += 1;
        let app = fixture.app.clone();
        fixture.runtime.block_on(run(app, data));
    });
});

async fn run(app: Router, data: &[u8]) {
    let unknown = PublicSessionId::new(
        &RoomId::new("fuzz").expect("a room id"),
        SessionId(u128::from(crc32c::crc32c(data)).to_be_bytes()),
    )
    .to_text();
    let mut session = unknown.clone();
    for text in split_requests(data).take(REQUESTS_MAX) {
        let substitute = |bytes: &[u8]| -> Vec<u8> {
            replace(
                &replace(
                    &replace(bytes, b"$session", session.as_bytes()),
                    b"$unknown",
                    unknown.as_bytes(),
                ),
                b"$admin",
                ADMIN_TOKEN.as_bytes(),
            )
        };
        let Some(request) = parse_request(text, substitute) else {
            continue;
        };
        let method = request.method().clone();
        let target = request.uri().clone();
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), RESPONSE_BYTES_MAX)
            .await
            .expect("a response body within bounds");
        let what = || {
            format!(
                "{method} {target} answered {status} {content_type}: {}",
                String::from_utf8_lossy(&body)
            )
        };
        if !status.is_success() && !status.is_client_error() {
            let room_full = status == StatusCode::SERVICE_UNAVAILABLE
                && method == Method::POST
                && target.path() == "/api/waiting-room/sessions"
                && problem_type(&body).is_some_and(|kind| kind.ends_with("room-full"));
            assert!(room_full, "neither a 2xx nor a 4xx: {}", what());
        }
        if (status.is_client_error() || status.is_server_error()) && method != Method::HEAD {
            assert!(
                content_type == "application/problem+json",
                "an error without a problem body: {}",
                what()
            );
            let problem: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{}", what()));
            assert_eq!(problem["status"], status.as_u16(), "{}", what());
        }
        if content_type.starts_with("application/json") && method != Method::HEAD {
            let json: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", what()));
            if status.is_success()
                && let Some(id) = json["waitingRoomSessionId"].as_str()
            {
                session = id.to_owned();
            }
        }
    }
}

fn problem_type(body: &[u8]) -> Option<String> {
    let problem: serde_json::Value = serde_json::from_slice(body).ok()?;
    problem["type"].as_str().map(str::to_owned)
}

/// The requests of an input: the parts between lines `%%`.
fn split_requests(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let text = rest?;
        match find(text, b"\n%%\n") {
            Some(at) => {
                rest = Some(&text[at + 4..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(at) = find(rest, from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// `METHOD target`, header lines, an empty line, the body; `None` for what HTTP/1 cannot carry.
fn parse_request(text: &[u8], substitute: impl Fn(&[u8]) -> Vec<u8>) -> Option<Request<Body>> {
    let (head, body) = match find(text, b"\n\n") {
        Some(at) => (&text[..at], &text[at + 2..]),
        None => (text, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let request_line = lines.next()?;
    let space = request_line.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&request_line[..space]).ok()?;
    let target = substitute(&request_line[space + 1..]);
    // Origin-form, as a client sends it to a server.
    if !target.starts_with(b"/") {
        return None;
    }
    let uri = Uri::try_from(target).ok()?;
    let mut request = Request::builder().method(method).uri(uri);
    for line in lines {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = substitute(line[colon + 1..].trim_ascii());
        let value = HeaderValue::from_bytes(&value).ok()?;
        request = request.header(name, value);
    }
    request.body(Body::from(substitute(body))).ok()
}
