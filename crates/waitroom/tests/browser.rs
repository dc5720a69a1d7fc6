//! The waiting page in a real browser: headless Chromium (Debian's `chromium`), driven through
//! `chromedriver` over WebDriver (`common/browser.rs`), against real servers started by
//! `tests/common`.
//!
//! Each test starts its own chromedriver on a free loopback port, with a fresh profile, and
//! stops it by PID when done. Without chromium or chromedriver the tests print `SKIPPED` and
//! pass, except with `CI=true`, where that is a failure. A screenshot of every state is written
//! to `<workspace>/target/screenshots/`.
//!
//! Nothing here sleeps to let something happen: every wait polls the page (its `data-state`
//! and element texts, see `assets/README.md`) or the API, with a bound.

#[path = "common/browser.rs"]
mod chromium;
mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::Extension;
use axum::response::Html;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use waitroom_token::{AdmissionClaims, Expectations, RequireAdmission, Verifier};

use chromium::{Browser, PAGE_WAIT, PHONE, POLL_INTERVAL};
use common::{ADMIN_TOKEN, TestServer, id};

/// Longest wait for a person's turn in the demo test: behind at most the whole (small) crowd.
const DEMO_TURN_WAIT: Duration = Duration::from_secs(90);
/// The issuer of the test servers' tokens (`ServeOptions::default()`).
const ISSUER: &str = "waitroom";
/// Seconds between heartbeats of the page in the test rooms: the smallest the API allows.
const HEARTBEAT_INTERVAL_SECONDS: u64 = 1;
/// The heartbeat interval of the room where the page must learn of its turn between heartbeats.
const SLOW_HEARTBEAT_INTERVAL_SECONDS: u64 = 60;
/// How soon after its slot is freed that page must show its turn and be at the target: a fraction
/// of the interval above, so only a read between heartbeats meets it (a generous bound on a
/// shared machine: the times it took are printed, and measured by bench/turn-browser.sh).
const FRONT_TURN_WAIT: Duration = Duration::from_secs(20);
/// Turns the front test measures: `TURN_SAMPLES` from the environment (bench/turn-browser.sh),
/// one by default, at most this many.
const TURN_SAMPLES_MAX: usize = 200;
/// While nothing changes, a page near the front has at most one read answered in this long (it
/// holds one for 8 s); without held reads it would have had three.
const HELD_READS_WINDOW: Duration = Duration::from_secs(3);
/// `waitingIdleTimeoutSeconds` of the room whose page is closed for a while: short, so the place
/// expires soon after the heartbeats stop (the page heartbeats every second while open).
const AWAY_IDLE_TIMEOUT_SECONDS: u64 = 3;
/// Idle timeouts of the test rooms: long enough that sessions driven by the test through the
/// API (which does not heartbeat them) outlive every test.
const IDLE_TIMEOUT_SECONDS: u64 = 600;

/// Runs `test` with a phone-sized browser, or skips it (see [`chromium::browser_tools`]).
async fn with_browser<F, Fut>(test: F)
where
    F: FnOnce(Arc<Browser>) -> Fut,
    Fut: Future<Output = ()>,
{
    chromium::with_browser(PHONE, test).await;
}

impl Browser {
    /// The session id the page stored for `room`.
    async fn stored_session_id(&self, room: &str) -> String {
        let key = format!("waitroom:session:{room}");
        let script = format!(
            "const raw = localStorage.getItem({}); return raw === null ? null : JSON.parse(raw).id;",
            json!(key)
        );
        self.wait_for(&format!("a session stored under {key}"), &script)
            .await
            .as_str()
            .expect("an id")
            .to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// A protected service: the room's targetUrl

/// A seat selection behind `RequireAdmission`: it renders only for a valid token of `room`.
struct TargetService {
    url: String,
    verifier: Arc<Verifier>,
    /// When each request for the seat selection arrived (milliseconds since the epoch).
    arrivals: Arc<std::sync::Mutex<Vec<i64>>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TargetService {
    async fn start(server: &TestServer, room: &str) -> Self {
        let jwks = server
            .client
            .get(server.url("/.well-known/jwks.json"))
            .send()
            .await
            .expect("GET jwks")
            .text()
            .await
            .expect("jwks body");
        let verifier = Verifier::from_jwks_json(&jwks).expect("a valid JWKS");
        let layer = RequireAdmission::new(verifier.clone(), expectations(room));
        let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
        let arrived = arrivals.clone();
        let app = Router::new()
            .route(
                "/seat-selection",
                get(move |Extension(claims): Extension<AdmissionClaims>| async move {
                    arrived.lock().expect("arrivals").push(now_ms());
                    Html(format!(
                        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Seat selection</title></head>\
                         <body data-state=\"verified\"><h1>Seat selection</h1><p id=\"verified\">verified</p>\
                         <p id=\"session\">{}</p><p id=\"room\">{}</p></body></html>",
                        claims.sub, claims.aud
                    ))
                }),
            )
            .layer(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (shutdown, stop) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                })
                .await;
        });
        Self {
            url,
            verifier: Arc::new(verifier),
            arrivals,
            shutdown: Some(shutdown),
        }
    }

    /// When the seat selection was first asked for, once it has been.
    fn first_arrival_ms(&self) -> Option<i64> {
        self.arrivals.lock().expect("arrivals").first().copied()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as i64
}

impl Drop for TargetService {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

fn expectations(room: &str) -> Expectations {
    Expectations::new(ISSUER, room).with_leeway_s(5)
}

fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

// ---------------------------------------------------------------------------------------------
// Rooms and sessions through the API

fn room_config(capacity: u32, target_url: Option<&str>, opens_at: Option<&str>) -> Value {
    json!({
        "capacity": capacity,
        "heartbeatIntervalSeconds": HEARTBEAT_INTERVAL_SECONDS,
        "waitingIdleTimeoutSeconds": IDLE_TIMEOUT_SECONDS,
        "activeIdleTimeoutSeconds": IDLE_TIMEOUT_SECONDS,
        "maxActiveSeconds": IDLE_TIMEOUT_SECONDS,
        "targetUrl": target_url,
        "opensAt": opens_at,
    })
}

/// Joins through the API and expects `status`.
async fn join(server: &TestServer, room: &str, status: &str) -> String {
    let (code, view) = server.join(room).await;
    assert_eq!(code, 201, "join: {view}");
    assert_eq!(view["status"], status, "join: {view}");
    id(&view)
}

/// The session's current view.
async fn view(server: &TestServer, session: &str) -> Value {
    let (code, view) = server.session(session).await;
    assert_eq!(code, 200, "GET {session}: {view}");
    view
}

/// Ends an ACTIVE session the way the protected service does: `:complete` with its token.
async fn complete(server: &TestServer, session: &str) {
    let current = view(server, session).await;
    assert_eq!(current["status"], "ACTIVE", "{current}");
    let token = current["admissionToken"]
        .as_str()
        .expect("an admission token");
    let (code, ended) = server.post_action(session, "complete", Some(token)).await;
    assert_eq!(code, 200, ":complete: {ended}");
    assert_eq!(ended["expiredReason"], "completed", "{ended}");
}

/// Polls the API until `check` accepts the session's view.
async fn wait_for_view(
    server: &TestServer,
    session: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + PAGE_WAIT;
    loop {
        let current = view(server, session).await;
        if check(&current) {
            return current;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "session {session} never became {what}: {current}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What the page says for a position (English).
fn position_words(position: u64) -> String {
    match position {
        0 => "You're next!".to_string(),
        1 => "1 person ahead of you".to_string(),
        n => format!("{n} people ahead of you"),
    }
}

/// Whether `text` is an estimated wait in words ("less than a minute", "about 5 minutes", "up to
/// 2 minutes", "between 4 and 9 minutes", ...).
fn is_eta_in_words(text: &str) -> bool {
    if text == "less than a minute" || text == "more than a day" {
        return true;
    }
    let units = ["minute", "minutes", "hour", "hours"];
    if let Some(rest) = text.strip_prefix("between ") {
        let words: Vec<&str> = rest.split(' ').collect();
        return matches!(words.as_slice(), [low, "and", high, unit]
            if low.parse::<u64>().is_ok() && high.parse::<u64>().is_ok() && units.contains(unit));
    }
    let Some(rest) = text
        .strip_prefix("about ")
        .or_else(|| text.strip_prefix("up to "))
    else {
        return false;
    };
    let Some((count, unit)) = rest.split_once(' ') else {
        return false;
    };
    count.parse::<u64>().is_ok() && units.contains(&unit)
}

// ---------------------------------------------------------------------------------------------
// The tests

/// The issue's scenario: a full room of capacity 1 with turnover, the page's position and ETA,
/// the slot freed through the API, and the page moving on to the target with a token that
/// verifies; then the page opened again right after (no redirect loop) and the turn completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_waits_its_turn_and_arrives_at_the_target_with_a_valid_token() {
    with_browser(|browser| async move {
        let server = TestServer::start().await;
        let room = "browser-turn";
        let target = TargetService::start(&server, room).await;
        // An existing query with an escape in it: the page must append the token, not rewrite it.
        let target_url = format!("{}/seat-selection?show=late%20night", target.url);
        server.put_room(room, room_config(1, Some(&target_url), None)).await;

        // Turnover first, so the room can estimate: the slot changes hands until enough have
        // freed (one says nothing yet about how long people stay: no estimate then); `third`
        // then waits at the front of the line.
        let mut holder = join(&server, room, "ACTIVE").await;
        for freed in 0..waitroom_core::limits::ETA_FREES_MIN {
            let next = join(&server, room, "WAITING").await;
            if freed == 1 {
                let early = view(&server, &next).await;
                assert!(
                    early["estimatedWaitSeconds"].is_null() && early["estimatedWaitRange"].is_null(),
                    "no estimate yet: {early}"
                );
            }
            complete(&server, &holder).await;
            wait_for_view(&server, &next, "ACTIVE", |v| v["status"] == "ACTIVE").await;
            holder = next;
        }
        let second = holder;
        let third = join(&server, room, "WAITING").await;

        browser.goto(&server.url(&format!("/room/{room}"))).await;
        browser.wait_for_state("waiting").await;
        let me = browser.stored_session_id(room).await;
        let mine = view(&server, &me).await;
        assert_eq!((mine["status"].as_str(), mine["position"].as_u64()), (Some("WAITING"), Some(1)), "{mine}");
        assert!(mine["estimatedWaitRange"].is_object(), "the API has an estimate: {mine}");
        browser.wait_for_text("position", &position_words(1)).await;
        let eta = browser.text("eta").await;
        assert!(is_eta_in_words(&eta), "the ETA in words, got {eta:?}");
        assert_eq!(browser.text("waiting-count").await, "2 people");
        assert_eq!(browser.client.title().await.expect("title"), "1 ahead · Waiting room");
        assert_eq!(browser.text("status").await, "In line");
        assert!(!browser.is_hidden("leave").await, "the leave button shows while waiting");
        browser.screenshot("waiting").await;

        // The slot is freed: `third` is admitted and the page is next.
        complete(&server, &second).await;
        wait_for_view(&server, &third, "ACTIVE", |v| v["status"] == "ACTIVE").await;
        let mine = wait_for_view(&server, &me, "first in line", |v| v["position"] == 0).await;
        assert_eq!(mine["status"], "WAITING");
        browser.wait_for_text("position", &position_words(0)).await;
        browser.screenshot("next").await;

        // Freed again: the page's session is admitted, and the page takes the person to the
        // target with the token, which the target verified (it renders only then).
        complete(&server, &third).await;
        let arrived = browser
            .wait_for(
                "the seat selection",
                &format!(
                    "return location.href.startsWith({}) && document.getElementById('verified') !== null \
                     ? location.href : null;",
                    json!(format!("{}/seat-selection?", target.url))
                ),
            )
            .await;
        assert_eq!(browser.text("verified").await, "verified");
        assert_eq!(browser.text("session").await, me, "the target saw this page's session");
        browser.screenshot("target").await;
        let arrived = url::Url::parse(arrived.as_str().expect("a URL")).expect("a URL");
        let query = arrived.query().expect("a query");
        let (kept, token) = query.split_once("&waitroomToken=").expect("the token appended to the query");
        assert_eq!(kept, "show=late%20night", "the target's own query is kept byte for byte");
        let claims = target.verifier.verify(token, &expectations(room), now_unix_s()).expect("the token verifies");
        assert_eq!((claims.sub.as_str(), claims.aud.as_str()), (me.as_str(), room));
        let mine = view(&server, &me).await;
        assert_eq!(mine["status"], "ACTIVE", "{mine}");

        // Back on the waiting page within 20 s of the redirect: no second redirect (a target that
        // bounces people back must not loop them), but a link with a fresh token.
        browser.goto(&server.url(&format!("/room/{room}"))).await;
        browser.wait_for_state("active").await;
        browser.wait_for_text("active-message", "Continue to the sale when you're ready.").await;
        assert!(!browser.is_hidden("target-link").await, "the link to the sale shows");
        let link = browser.js("return document.getElementById('target-link').href;").await.expect("href");
        assert!(link.as_str().is_some_and(|href| href.contains("waitroomToken=")), "{link}");
        assert_eq!(browser.text("heading").await, "It's your turn!");
        assert_eq!(browser.text("leave").await, "Give up my turn");
        browser.screenshot("your-turn").await;

        // The protected service is done with this person: the page says so.
        complete(&server, &me).await;
        browser.wait_for_state("expired").await;
        browser.wait_for("data-reason=completed", "return document.getElementById('main').dataset.reason === 'completed';").await;
        assert_eq!(browser.text("heading").await, "You're all done");
        browser.screenshot("completed").await;

        drop(target);
        server.stop().await;
    })
    .await;
}

/// Before `opensAt` the page shows the pre-queue (time of opening, fair draw, countdown); once
/// the room opens, the person (alone, capacity 1) is admitted, and with no `targetUrl` the page
/// says it is their turn and counts down the time they have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prequeue_then_a_turn_without_a_target() {
    with_browser(|browser| async move {
        let server = TestServer::start().await;
        let room = "browser-prequeue";
        let opens_at = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(1))
            .expect("in range")
            .strftime("%Y-%m-%dT%H:%M:%S.000Z")
            .to_string();
        server.put_room(room, room_config(1, None, Some(&opens_at))).await;

        browser.goto(&server.url(&format!("/room/{room}"))).await;
        browser.wait_for_state("prequeue").await;
        let me = browser.stored_session_id(room).await;
        let mine = view(&server, &me).await;
        assert_eq!(mine["prequeue"], true, "{mine}");
        assert!(mine["position"].is_null(), "no place before the draw: {mine}");
        let opens = browser.text("opens-at").await;
        assert!(opens.starts_with("The sale opens at ") || opens.starts_with("The sale opens on "), "{opens:?}");
        assert_eq!(browser.text("countdown-label").await, "Opens in");
        // About an hour to go: "59:59" or "1:00:00" depending on the second it is read.
        browser
            .wait_for(
                "the countdown to the opening",
                "const text = document.getElementById('countdown').textContent;
                 return /^(59:[0-5][0-9]|1:00:00)$/.test(text) ? text : null;",
            )
            .await;
        assert_eq!(browser.text("waiting-count").await, "1 person");
        assert_eq!(browser.text("status").await, "Before the sale");
        browser.screenshot("prequeue").await;

        // The organiser opens the room now: the draw happens and the one person is admitted.
        server.put_room(room, room_config(1, None, None)).await;
        wait_for_view(&server, &me, "ACTIVE", |v| v["status"] == "ACTIVE").await;
        browser.wait_for_state("active").await;
        browser.wait_for_text("active-message", "Keep this page open while you complete your purchase.").await;
        assert!(browser.is_hidden("target-link").await, "no target, no link");
        assert_eq!(browser.text("countdown-label").await, "Your turn is held for");
        browser
            .wait_for(
                "the countdown of the turn",
                "return /^\\d+:\\d\\d(:\\d\\d)?$/.test(document.getElementById('countdown').textContent);",
            )
            .await;
        assert_eq!(browser.client.title().await.expect("title"), "It's your turn! · Waiting room");
        browser.screenshot("active-no-target").await;

        server.stop().await;
    })
    .await;
}

/// `?pass=<code>`: the page's join carries the pass, and a valid one is admitted at once, past a
/// full room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_in_the_link_is_admitted_at_once() {
    with_browser(|browser| async move {
        let server = TestServer::start().await;
        let room = "browser-pass";
        server.put_room(room, room_config(1, None, None)).await;
        let (status, first) = server.join(room).await;
        assert_eq!((status, first["status"].as_str()), (201, Some("ACTIVE")));
        let issued: Value = server
            .client
            .post(server.url(&format!("/api/waiting-room/rooms/{room}/passes")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "count": 1, "expiresInSeconds": 600 }))
            .send()
            .await
            .expect("POST passes")
            .json()
            .await
            .expect("passes body");
        let code = issued["passes"][0].as_str().expect("a code").to_string();
        browser
            .goto(&server.url(&format!("/room/{room}?pass={code}")))
            .await;
        browser.wait_for_state("active").await;
        let stats = &server.room(room).await["stats"];
        assert_eq!(
            (
                stats["activeCount"].as_u64(),
                stats["waitingCount"].as_u64()
            ),
            (Some(2), Some(0))
        );
        server.stop().await;
    })
    .await;
}

/// A room that asks for a challenge: the page's join is refused (`challenge-required`), and the
/// page explains what it is doing while its Web Worker solves one, then joins with it. The first
/// room asks for 28 bits (minutes of work), so the explanation is certainly on screen when the
/// test looks; then the room asks for the suggested difficulty and the reloaded page solves a new
/// challenge and takes its place. It then times `WAITROOM_CHALLENGE_SAMPLES` (default 3) more
/// solves of fresh challenges at that difficulty in the same Worker script and prints them (the
/// figures in bench/results/2026-12-07/challenge/ come from this run with more samples).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_solves_the_challenge_explains_it_while_it_works() {
    with_browser(|browser| async move {
        let server = TestServer::start().await;
        let room = "browser-challenge";
        let config = |bits: u8| {
            let mut config = room_config(5, None, None);
            config["challengeDifficultyBits"] = json!(bits);
            config
        };
        server
            .put_room(
                room,
                config(waitroom_core::limits::CHALLENGE_DIFFICULTY_BITS_MAX),
            )
            .await;
        browser.goto(&server.url(&format!("/room/{room}"))).await;
        let notice = browser
            .wait_for(
                "the challenge's explanation",
                "const main = document.getElementById('main');
                 return main.dataset.notice === 'challenge' && main.dataset.challenge === 'working'
                   && document.getElementById('connection').textContent;",
            )
            .await;
        let notice = notice.as_str().expect("text").to_string();
        assert!(notice.contains("puzzle that keeps bots"), "{notice}");
        assert!(!browser.is_hidden("connection").await);
        browser.screenshot("challenge-working").await;
        assert_eq!(server.room(room).await["stats"]["waitingCount"], 0);

        let bits = waitroom_core::limits::CHALLENGE_DIFFICULTY_BITS_SUGGESTED;
        server.put_room(room, config(bits)).await;
        browser.goto(&server.url(&format!("/room/{room}"))).await;
        browser.wait_for_state("active").await;
        let solved = browser
            .js("const main = document.getElementById('main');
                 return [main.dataset.challenge, Number(main.dataset.challengeMs),
                         Number(main.dataset.challengeTries), main.dataset.notice];")
            .await
            .expect("read the page");
        assert_eq!(solved[0], "solved", "{solved}");
        assert_ne!(solved[3], "challenge", "the explanation is gone: {solved}");
        let session = browser.stored_session_id(room).await;
        let view = view(&server, &session).await;
        assert_eq!(view["status"], "ACTIVE", "{view}");
        let stats = &server.room(room).await["stats"];
        assert_eq!(stats["activeCount"], 1);

        // Timings of this browser at this difficulty, for the figures.
        let samples: u32 = std::env::var("WAITROOM_CHALLENGE_SAMPLES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        let mut ms = vec![solved[1].as_f64().expect("ms")];
        let mut tries = vec![solved[2].as_u64().expect("tries")];
        for _ in 0..samples {
            let issued: Value = server
                .client
                .post(server.url(&format!("/api/waiting-room/rooms/{room}/challenge")))
                .send()
                .await
                .expect("POST challenge")
                .json()
                .await
                .expect("challenge body");
            let script = format!(
                "return new Promise((resolve) => {{
                   const worker = new Worker('/assets/challenge-worker.js');
                   worker.onmessage = (event) => {{
                     if (typeof event.data.solution === 'string') {{
                       worker.terminate();
                       resolve([event.data.solution, event.data.ms, event.data.tries]);
                     }}
                   }};
                   worker.postMessage({{ challenge: {}, bits: {bits} }});
                 }});",
                json!(issued["challenge"])
            );
            let result = browser.js(&script).await.expect("solve in the page");
            let solution = result[0].as_str().expect("solution");
            assert!(
                waitroom_load::pow::work_bits(issued["challenge"].as_str().unwrap(), solution)
                    >= u32::from(bits),
                "the browser's solution has the work"
            );
            ms.push(result[1].as_f64().expect("ms"));
            tries.push(result[2].as_u64().expect("tries"));
        }
        let user_agent = browser
            .js("return navigator.userAgent;")
            .await
            .expect("user agent");
        println!("browser challenge solves at {bits} bits ({user_agent}):");
        for (ms, tries) in ms.iter().zip(&tries) {
            println!("solve_ms={ms:.1} tries={tries}");
        }
        let mut sorted = ms.clone();
        sorted.sort_by(f64::total_cmp);
        let rate: f64 = tries.iter().sum::<u64>() as f64 / (ms.iter().sum::<f64>() / 1000.0);
        println!(
            "samples={} median_ms={:.1} hashes_per_second={rate:.0}",
            sorted.len(),
            sorted[sorted.len() / 2]
        );
        server.stop().await;
    })
    .await;
}

/// `?preview` (the console's link): the page shows an example place in line and says it is a
/// preview, and joins nothing, stores nothing, sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_shows_a_place_and_joins_nothing() {
    with_browser(|browser| async move {
        let server = TestServer::start().await;
        let room = "browser-preview";
        server.put_room(room, room_config(5, None, None)).await;
        browser
            .goto(&server.url(&format!("/room/{room}?preview")))
            .await;
        browser.wait_for_state("waiting").await;
        browser
            .wait_for_text(
                "connection",
                "Preview: this is how a place in line looks. This page has not joined the line, \
                 and its figures are examples.",
            )
            .await;
        // Longer than a front check and a heartbeat's first delay: still nothing sent.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let stats = &server.room(room).await["stats"];
        assert_eq!((stats["waitingCount"].as_u64(), stats["activeCount"].as_u64()), (Some(0), Some(0)));
        let metrics = server
            .client
            .get(server.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        let session_requests: f64 = metrics
            .lines()
            .filter(|line| {
                line.starts_with(
                    r#"waitroom_http_request_duration_seconds_count{route="/api/waiting-room/sessions"#,
                )
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(session_requests, 0.0, "no request about a session: {metrics}");
        let stored = browser
            .js("return Object.keys(localStorage).filter((key) => key.startsWith('waitroom:'));")
            .await
            .expect("storage");
        assert_eq!(stored, json!([]), "nothing stored");
        server.stop().await;
    })
    .await;
}

/// Next in line, the page learns of its turn the moment it comes even when heartbeats are a minute
/// apart: between heartbeats it reads its view with `waitSeconds` (held by the server: one read
/// per wait, not one a second), it shows "It's your turn" as soon as the slot is freed, then goes
/// on to the target. Both times, from the freeing `:complete` to the change on the page and to the
/// target's first request, are printed (`turn shown after ... target reached after ...`), for
/// `TURN_SAMPLES` turns in rooms of their own (bench/turn-browser.sh takes their percentiles).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_in_line_the_page_learns_of_its_turn_the_moment_it_comes() {
    let samples = std::env::var("TURN_SAMPLES")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, TURN_SAMPLES_MAX);
    with_browser(|browser| async move {
        let server = TestServer::start().await;
        let mut shown_ms = Vec::with_capacity(samples);
        let mut reached_ms = Vec::with_capacity(samples);
        for sample in 0..samples {
            let room = format!("browser-front-{sample}");
            let target = TargetService::start(&server, &room).await;
            let mut config = room_config(1, Some(&format!("{}/seat-selection", target.url)), None);
            config["heartbeatIntervalSeconds"] = json!(SLOW_HEARTBEAT_INTERVAL_SECONDS);
            server.put_room(&room, config).await;
            let holder = join(&server, &room, "ACTIVE").await;

            browser.goto(&server.url(&format!("/room/{room}"))).await;
            browser.wait_for_state("waiting").await;
            browser.wait_for_text("position", &position_words(0)).await;
            // The page holds a read of its view on the server (the previous sample's page, gone,
            // held one until its wait ran out).
            common::eventually(PAGE_WAIT, || async {
                (server.node.metrics.status_reads_held.get() == 1).then_some(())
            })
            .await;
            if sample == 0 {
                // From here until the slot is freed the test itself sends no GET of a session, so
                // every one counted is the page's (its heartbeats are POSTs, and a minute away):
                // held, they are far fewer than one a second.
                let before = session_gets(&server).await;
                tokio::time::sleep(HELD_READS_WINDOW).await;
                let reads = session_gets(&server).await - before;
                assert!(
                    reads <= 1,
                    "{reads} reads of the view answered within {HELD_READS_WINDOW:?}: the page should hold one"
                );
            }

            // When the page shows its turn, by the browser's clock (the same machine's).
            browser
                .js("window.turnShownAt = null;
                     new MutationObserver(() => {
                       if (window.turnShownAt === null && document.body.dataset.state === 'active') {
                         window.turnShownAt = Date.now();
                       }
                     }).observe(document.body, { attributes: true, subtree: true });
                     return true;")
                .await
                .expect("observer");
            let freed_at_ms = now_ms();
            complete(&server, &holder).await;
            let shown_at_ms = browser
                .wait_for_within(
                    FRONT_TURN_WAIT,
                    "\"It's your turn\", well before the next heartbeat",
                    "return window.turnShownAt;",
                )
                .await
                .as_i64()
                .expect("a time");
            browser
                .wait_for_within(
                    FRONT_TURN_WAIT,
                    "the seat selection, well before the next heartbeat",
                    &format!(
                        "return location.href.startsWith({}) && document.getElementById('verified') !== null;",
                        json!(format!("{}/seat-selection?", target.url))
                    ),
                )
                .await;
            let reached_at_ms = target.first_arrival_ms().expect("the target was asked for");
            let (shown, reached) = (shown_at_ms - freed_at_ms, reached_at_ms - freed_at_ms);
            tracing::info!(shown, reached, "turn shown and target reached after the slot was freed");
            println!(
                "turn shown after {shown} ms, target reached after {reached} ms (from the :complete that freed the slot)"
            );
            for ms in [shown, reached] {
                assert!(
                    u64::try_from(ms).is_ok_and(|ms| ms < FRONT_TURN_WAIT.as_millis() as u64),
                    "{ms} ms"
                );
            }
            shown_ms.push(shown);
            reached_ms.push(reached);
            drop(target);
        }
        if samples > 1 {
            for (what, times) in [("turn shown", &mut shown_ms), ("target reached", &mut reached_ms)] {
                times.sort_unstable();
                let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
                println!(
                    "{what}: {samples} turns, p50 {} ms, p99 {} ms, max {} ms",
                    at(0.5),
                    at(0.99),
                    times[times.len() - 1]
                );
            }
        }
        server.stop().await;
    })
    .await;
}

/// `GET /api/waiting-room/sessions/{id}` answered `200` so far, from the node's metrics.
async fn session_gets(server: &TestServer) -> u64 {
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let series = r#"waitroom_http_request_duration_seconds_count{route="/api/waiting-room/sessions/{id}",method="GET",status="200"} "#;
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .map_or(0, |count| count.trim().parse().expect("a count"))
}

/// The tab is closed while waiting: heartbeats stop and the place expires (`timeout`). Opened
/// again, the page says what happened and why, and offers to join again, which gives a new place
/// at the back of the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_place_lost_while_away_is_explained_on_return() {
    with_browser(|browser| async move {
        let server = TestServer::start().await;
        let room = "browser-away";
        let mut config = room_config(1, None, None);
        config["waitingIdleTimeoutSeconds"] = json!(AWAY_IDLE_TIMEOUT_SECONDS);
        server.put_room(room, config).await;
        let holder = join(&server, room, "ACTIVE").await;

        let page = server.url(&format!("/room/{room}"));
        browser.goto(&page).await;
        browser.wait_for_state("waiting").await;
        let me = browser.stored_session_id(room).await;
        browser.goto("about:blank").await;
        let gone = wait_for_view(&server, &me, "expired", |v| v["status"] == "EXPIRED").await;
        assert_eq!(gone["expiredReason"], "timeout", "{gone}");
        // Someone else joins meanwhile: rejoining must put this person behind them.
        let other = join(&server, room, "WAITING").await;

        browser.goto(&page).await;
        browser.wait_for_state("expired").await;
        browser
            .wait_for(
                "data-reason=timeout",
                "return document.getElementById('main').dataset.reason === 'timeout';",
            )
            .await;
        assert_eq!(
            browser.text("heading").await,
            "Your place in line has expired"
        );
        assert!(
            browser
                .text("expired-message")
                .await
                .starts_with("Your place expired because this page stopped checking in"),
            "the page says why"
        );
        assert!(
            !browser.is_hidden("rejoin").await,
            "the rejoin button shows"
        );
        browser.screenshot("expired").await;

        browser.click("rejoin").await;
        browser.wait_for_state("waiting").await;
        browser.wait_for_text("position", &position_words(1)).await;
        assert_eq!(view(&server, &other).await["position"], 0);
        assert_eq!(view(&server, &holder).await["status"], "ACTIVE");
        server.stop().await;
    })
    .await;
}

/// A session ended by the organiser shows why, with a button to join again, which gets a new
/// place; leaving the line (confirmed in the dialog) ends the session as `left`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_then_rejoined_then_left() {
    with_browser(|browser| async move {
        let server = TestServer::start().await;
        let room = "browser-expired";
        server.put_room(room, room_config(1, None, None)).await;
        let holder = join(&server, room, "ACTIVE").await;

        browser.goto(&server.url(&format!("/room/{room}"))).await;
        browser.wait_for_state("waiting").await;
        let evicted = browser.stored_session_id(room).await;
        browser.wait_for_text("position", &position_words(0)).await;

        let response = server
            .client
            .post(server.url(&format!("/api/waiting-room/sessions/{evicted}:evict")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("evict");
        assert_eq!(response.status(), 200);
        browser.wait_for_state("expired").await;
        browser
            .wait_for(
                "data-reason=evicted",
                "return document.getElementById('main').dataset.reason === 'evicted';",
            )
            .await;
        assert_eq!(
            browser.text("heading").await,
            "You were removed from the line"
        );
        assert_eq!(
            browser.text("expired-message").await,
            "The organiser ended this place in line."
        );
        assert!(
            !browser.is_hidden("rejoin").await,
            "the rejoin button shows"
        );
        assert!(
            browser.is_hidden("leave").await,
            "nothing to leave any more"
        );
        assert_eq!(browser.text("status").await, "Ended");
        browser.screenshot("evicted").await;

        // Join again: a new session, back in line.
        browser.click("rejoin").await;
        browser.wait_for_state("waiting").await;
        let script = format!(
            "const raw = localStorage.getItem('waitroom:session:{room}');
             const id = raw === null ? null : JSON.parse(raw).id;
             return id !== null && id !== {} ? id : null;",
            json!(evicted)
        );
        let rejoined = browser
            .wait_for("a new stored session", &script)
            .await
            .as_str()
            .expect("an id")
            .to_string();
        let view_now = view(&server, &rejoined).await;
        assert_eq!(
            (view_now["status"].as_str(), view_now["position"].as_u64()),
            (Some("WAITING"), Some(0)),
            "{view_now}"
        );
        assert_eq!(view(&server, &evicted).await["expiredReason"], "evicted");

        // Leave the line: a dialog asks first ("Stay in line" has the focus).
        browser.click("leave").await;
        browser
            .wait_for(
                "the leave dialog",
                "return document.getElementById('leave-dialog').open;",
            )
            .await;
        let focused = browser
            .js("return document.activeElement.id;")
            .await
            .expect("focus");
        assert_eq!(focused, "leave-cancel", "the safe choice is focused");
        browser.click("leave-confirm").await;
        browser.wait_for_state("expired").await;
        browser
            .wait_for(
                "data-reason=left",
                "return document.getElementById('main').dataset.reason === 'left';",
            )
            .await;
        assert_eq!(browser.text("heading").await, "You left the line");
        let left = view(&server, &rejoined).await;
        assert_eq!(
            (left["status"].as_str(), left["expiredReason"].as_str()),
            (Some("EXPIRED"), Some("left")),
            "{left}"
        );
        browser.screenshot("left").await;
        assert_eq!(
            view(&server, &holder).await["status"],
            "ACTIVE",
            "the holder is untouched"
        );

        server.stop().await;
    })
    .await;
}

/// `waitroom demo` end to end: the crowd moves, the page gets its turn, the built-in seat
/// selection verifies the token, and its button frees the slot with `:complete`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_sends_a_person_to_its_seat_selection_and_frees_the_slot() {
    with_browser(|browser| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let args = waitroom::demo::DemoArgs {
            listen: "127.0.0.1:0".into(),
            capacity: 3,
            crowd: 12,
            hold_seconds: "0.5..1.5".parse().expect("a range"),
            ..waitroom::demo::DemoArgs::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let (started_tx, started_rx) = oneshot::channel();
        let demo = tokio::spawn(waitroom::demo::run_with(
            listener,
            async move {
                let _ = stopped.await;
            },
            args,
            move |started| {
                let _ = started_tx.send(started.clone());
            },
        ));
        let started = tokio::time::timeout(PAGE_WAIT, started_rx).await.expect("the demo started").expect("started");
        assert!(started.data_dir_is_temporary && started.data_dir.exists());
        let client = reqwest::Client::new();

        browser.goto(&started.room_url).await;
        let me = browser.stored_session_id(waitroom::demo::ROOM).await;
        // Wherever the crowd puts this person, their turn comes and the page sends them on.
        let seat_selection = format!("{}?", started.target_url);
        browser
            .wait_for_within(
                DEMO_TURN_WAIT,
                "the demo's seat selection",
                &format!(
                    "return location.href.startsWith({}) && document.getElementById('session-id') !== null;",
                    json!(seat_selection)
                ),
            )
            .await;
        assert_eq!(browser.text("heading").await, "Seat selection (demo)");
        assert_eq!(browser.text("verified").await, "Token verified");
        assert_eq!(browser.text("session-id").await, me);
        browser.screenshot("demo-seat-selection").await;

        let session_url = format!("{}/api/waiting-room/sessions/{me}", started.base_url);
        let mine: Value = client.get(&session_url).send().await.expect("GET").json().await.expect("view");
        assert_eq!(mine["status"], "ACTIVE", "{mine}");

        browser.click("done").await;
        browser.wait_for("the slot freed", "return document.body.dataset.state === 'done';").await;
        assert!(browser.text("done-result").await.starts_with("Your slot is free"));
        assert!(!browser.is_hidden("back").await, "a way back to the waiting room");
        browser.screenshot("demo-done").await;
        let mine: Value = client.get(&session_url).send().await.expect("GET").json().await.expect("view");
        assert_eq!((mine["status"].as_str(), mine["expiredReason"].as_str()), (Some("EXPIRED"), Some("completed")));

        // Without a token (or with a bad one) the seat selection sends people to the line.
        let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        let bounced = no_redirects
            .get(format!("{}?waitroomToken=not-a-token", started.target_url))
            .send()
            .await
            .expect("GET seat selection");
        assert_eq!(bounced.status(), 303);
        assert_eq!(bounced.headers()["location"], "/room/demo");

        let _ = stop.send(());
        tokio::time::timeout(PAGE_WAIT, demo).await.expect("the demo stopped").expect("demo task").expect("demo ran");
        assert!(!started.data_dir.exists(), "the temporary data dir is removed");
    })
    .await;
}

/// A `random` room: the waiting page has no place to show, so it says the next person is drawn
/// from everyone waiting, with the count of people waiting; once drawn, the person's turn comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_room_shows_the_draw_instead_of_a_place() {
    with_browser(|browser| async move {
        let server = TestServer::start().await;
        let room = "browser-random";
        let mut config = room_config(1, None, None);
        config["queueingMethod"] = json!("random");
        server.put_room(room, config).await;
        let first = join(&server, room, "ACTIVE").await;
        join(&server, room, "WAITING").await;

        browser.goto(&server.url(&format!("/room/{room}"))).await;
        browser.wait_for_state("waiting").await;
        let me = browser.stored_session_id(room).await;
        let mine = view(&server, &me).await;
        assert!(mine["position"].is_null(), "no place in a draw: {mine}");
        browser
            .wait_for_text(
                "position",
                "You're in the draw: whenever a place frees up, the next person is picked at random from everyone waiting.",
            )
            .await;
        assert_eq!(browser.text("waiting-count").await, "2 people");
        assert!(browser.is_hidden("progress").await, "no progress bar in a draw");
        browser.screenshot("waiting-random").await;

        // The first person finishes, and the draw admits one of the two waiting; if it is the
        // other one, a second slot lets this one in too.
        complete(&server, &first).await;
        let room_now = server.room(room).await;
        assert_eq!(room_now["stats"]["activeCount"], 1, "{room_now}");
        assert_eq!(room_now["stats"]["waitingCount"], 1, "{room_now}");
        if view(&server, &me).await["status"] != "ACTIVE" {
            let mut config = room_config(2, None, None);
            config["queueingMethod"] = json!("random");
            server.put_room(room, config).await;
        }
        wait_for_view(&server, &me, "ACTIVE", |v| v["status"] == "ACTIVE").await;
        browser.wait_for_state("active").await;
        server.stop().await;
    })
    .await;
}
