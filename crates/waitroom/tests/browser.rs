//! The waiting page in a real browser: headless Chromium (Debian's `chromium`), driven through
//! `chromedriver` over WebDriver, against real servers started by `tests/common`.
//!
//! Each test starts its own chromedriver on a free loopback port, with a fresh profile, and
//! stops it by PID when done. Without chromium or chromedriver the tests print `SKIPPED` and
//! pass, except with `CI=true`, where that is a failure. A screenshot of every state is written
//! to `<workspace>/target/screenshots/`.
//!
//! Nothing here sleeps to let something happen: every wait polls the page (its `data-state`
//! and element texts, see `assets/README.md`) or the API, with a bound.

mod common;

use std::future::Future;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::Extension;
use axum::response::Html;
use axum::routing::get;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use waitroom_token::{AdmissionClaims, Expectations, RequireAdmission, Verifier};

use common::{ADMIN_TOKEN, TestServer, id};

/// Where Debian puts them (`apt-get install chromium chromium-driver`); overridable.
const CHROMIUM_DEFAULT: &str = "/usr/bin/chromium";
const CHROMEDRIVER_DEFAULT: &str = "/usr/bin/chromedriver";
/// A phone-sized window (CSS pixels), so the screenshots show the narrow layout.
const WINDOW_WIDTH: u32 = 390;
const WINDOW_HEIGHT: u32 = 844;
/// Longest wait for chromedriver to answer `/status` after it is started.
const DRIVER_START_WAIT: Duration = Duration::from_secs(20);
/// Longest wait for the page to reach a state. The page heartbeats every second in these
/// rooms, so a change shows within about a second; the rest is room for a loaded machine.
const PAGE_WAIT: Duration = Duration::from_secs(30);
/// Longest wait for a person's turn in the demo test: behind at most the whole (small) crowd.
const DEMO_TURN_WAIT: Duration = Duration::from_secs(90);
/// How often a wait re-reads the page.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The issuer of the test servers' tokens (`ServeOptions::default()`).
const ISSUER: &str = "waitroom";
/// Seconds between heartbeats of the page in the test rooms: the smallest the API allows.
const HEARTBEAT_INTERVAL_SECONDS: u64 = 1;
/// The heartbeat interval of the room where the page must learn of its turn between heartbeats.
const SLOW_HEARTBEAT_INTERVAL_SECONDS: u64 = 60;
/// How soon after its slot is freed that page must be at the target: a fraction of the interval
/// above, so only a read between heartbeats meets it (the page reads every second, then shows
/// "it's your turn" for 1.5 s before it redirects).
const FRONT_TURN_WAIT: Duration = Duration::from_secs(20);
/// Two reads of the view a second apart take at least this long; less would be a busy loop.
const FRONT_READS_MIN_SPAN: Duration = Duration::from_millis(900);
/// `waitingIdleTimeoutSeconds` of the room whose page is closed for a while: short, so the place
/// expires soon after the heartbeats stop (the page heartbeats every second while open).
const AWAY_IDLE_TIMEOUT_SECONDS: u64 = 3;
/// Idle timeouts of the test rooms: long enough that sessions driven by the test through the
/// API (which does not heartbeat them) outlive every test.
const IDLE_TIMEOUT_SECONDS: u64 = 600;

// ---------------------------------------------------------------------------------------------
// The browser

/// chromium and chromedriver, or `None` (after saying so loudly) when they are not installed.
///
/// # Panics
/// When they are missing and `CI=true`: CI must run these tests.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = std::env::var_os("WAITROOM_CHROMIUM")
        .map_or_else(|| PathBuf::from(CHROMIUM_DEFAULT), PathBuf::from);
    let driver = std::env::var_os("WAITROOM_CHROMEDRIVER")
        .map_or_else(|| PathBuf::from(CHROMEDRIVER_DEFAULT), PathBuf::from);
    let missing: Vec<String> = [&chromium, &driver]
        .iter()
        .filter(|path| !path.exists())
        .map(|path| path.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((chromium, driver));
    }
    let message = format!(
        "browser tests need {} (Debian: apt-get install chromium chromium-driver; or set WAITROOM_CHROMIUM / \
         WAITROOM_CHROMEDRIVER)",
        missing.join(" and ")
    );
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("CI=true: {message}");
    }
    eprintln!("\n**************** SKIPPED: {message} ****************\n");
    None
}

fn free_loopback_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// A headless Chromium session through a chromedriver of its own. Dropping it ends the
/// session (chromedriver then quits chromium) and kills chromedriver by its PID.
struct Browser {
    client: Client,
    driver: Child,
    driver_port: u16,
    session_id: Option<String>,
    /// The chromium profile and chromedriver's log; removed after both are gone.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// `None` when the tools are not installed (and this is not CI).
    async fn start() -> Option<Self> {
        let (chromium, driver_path) = browser_tools()?;
        let profile = tempfile::tempdir().expect("profile dir");
        let driver_port = free_loopback_port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={driver_port}"))
            .arg(format!(
                "--log-path={}",
                profile.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_path.display()));
        // From here on, a panic kills it: `Browser` owns it before anything else can fail.
        let mut browser = PendingDriver {
            driver: Some(driver),
        };
        let webdriver = format!("http://127.0.0.1:{driver_port}");
        wait_for_driver(&webdriver, &mut browser).await;

        let user_data_dir = profile.path().join("chromium");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--user-data-dir={}", user_data_dir.display()),
                    format!("--window-size={WINDOW_WIDTH},{WINDOW_HEIGHT}"),
                    "--lang=en-US",
                ],
                "prefs": { "intl.accept_languages": "en-US" },
                // A desktop window is at least 500 px wide whatever --window-size says; the
                // emulated device gives the page a phone's viewport.
                "mobileEmulation": {
                    "deviceMetrics": { "width": WINDOW_WIDTH, "height": WINDOW_HEIGHT, "pixelRatio": 1.0, "touch": true },
                },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot start a chromium session through chromedriver: {e}")
            });
        let session_id = client.session_id().await.expect("session id");
        let driver = browser.driver.take().expect("the driver");
        Some(Self {
            client,
            driver,
            driver_port,
            session_id,
            _profile: profile,
        })
    }

    /// Ends the session and stops chromedriver.
    async fn close(mut self) {
        if self.client.clone().close().await.is_ok() {
            self.session_id = None;
        }
    }

    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` (a function body) in the page.
    async fn js(&self, script: &str) -> Result<Value, fantoccini::error::CmdError> {
        self.client.execute(script, Vec::new()).await
    }

    /// What the page shows, for failure messages.
    async fn describe(&self) -> String {
        self.js("const main = document.getElementById('main');
             const heading = document.getElementById('heading');
             return JSON.stringify({ url: location.href, bodyState: document.body.dataset.state,
               main: main ? Object.assign({}, main.dataset) : null,
               heading: heading ? heading.textContent : null, title: document.title });")
            .await
            .map_or_else(
                |e| format!("(page unreadable: {e})"),
                |v| v.as_str().unwrap_or_default().to_string(),
            )
    }

    /// Polls `script` until it returns something other than `null`/`false`, and returns that.
    async fn wait_for(&self, what: &str, script: &str) -> Value {
        self.wait_for_within(PAGE_WAIT, what, script).await
    }

    /// [`Self::wait_for`] with a bound of its own.
    async fn wait_for_within(&self, within: Duration, what: &str, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // While the browser navigates, a script may fail: that is "not yet".
            if let Ok(value) = self.js(script).await
                && !matches!(value, Value::Null | Value::Bool(false))
            {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the page did not show {what} within {within:?}; it shows {}",
                    self.describe().await
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits for `data-state` (on both `<body>` and `#main`) to be `state`.
    async fn wait_for_state(&self, state: &str) {
        let script = format!(
            "const main = document.getElementById('main');
             return document.body.dataset.state === '{state}' && main !== null && main.dataset.state === '{state}';"
        );
        self.wait_for(&format!("data-state={state}"), &script).await;
    }

    /// Waits until `#id`'s text is `expected`.
    async fn wait_for_text(&self, id: &str, expected: &str) {
        let script = format!(
            "const node = document.getElementById({id});
             return node !== null && node.textContent.trim() === {expected};",
            id = json!(id),
            expected = json!(expected),
        );
        self.wait_for(&format!("#{id} = {expected:?}"), &script)
            .await;
    }

    /// `#id`'s text (trimmed).
    async fn text(&self, id: &str) -> String {
        let value = self
            .js(&format!("const node = document.getElementById({}); return node ? node.textContent.trim() : null;", json!(id)))
            .await
            .expect("read an element");
        match value.as_str() {
            Some(text) => text.to_string(),
            None => panic!("no #{id} on {}", self.describe().await),
        }
    }

    async fn is_hidden(&self, id: &str) -> bool {
        let value = self
            .js(&format!(
                "return document.getElementById({}).closest('[hidden]') !== null;",
                json!(id)
            ))
            .await
            .expect("read an element");
        value.as_bool().expect("a boolean")
    }

    async fn click(&self, id: &str) {
        let element = self
            .client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("find #{id}: {e}"));
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("click #{id}: {e}"));
    }

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

    /// Writes a PNG of the viewport to `<workspace>/target/screenshots/<name>.png`.
    async fn screenshot(&self, name: &str) {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        assert!(
            png.starts_with(b"\x89PNG"),
            "screenshot {name} is not a PNG"
        );
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).expect("create the screenshots dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = self.session_id.take() {
            delete_session(self.driver_port, &session);
        }
        stop_driver(&mut self.driver);
    }
}

/// chromedriver before its session exists: killed on drop (a failed start must not leak it).
struct PendingDriver {
    driver: Option<Child>,
}

impl Drop for PendingDriver {
    fn drop(&mut self) {
        if let Some(driver) = &mut self.driver {
            stop_driver(driver);
        }
    }
}

/// Kills chromedriver by its PID and reaps it.
fn stop_driver(driver: &mut Child) {
    let _ = driver.kill();
    let _ = driver.wait();
}

/// `DELETE /session/{id}`, blocking (it runs in `Drop`, maybe while a test panics): chromedriver
/// quits chromium before it answers.
fn delete_session(port: u16, session: &str) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return;
    }
    // Read the whole answer (chromedriver may keep the connection open regardless).
    let mut answer = Vec::new();
    let mut buffer = [0_u8; 4096];
    while let Ok(read) = stream.read(&mut buffer) {
        if read == 0 {
            return;
        }
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return;
            }
        }
    }
}

/// Polls chromedriver's `/status` until it is ready.
async fn wait_for_driver(webdriver: &str, pending: &mut PendingDriver) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let deadline = tokio::time::Instant::now() + DRIVER_START_WAIT;
    loop {
        if let Ok(response) = client.get(format!("{webdriver}/status")).send().await
            && let Ok(status) = response.json::<Value>().await
            && status["value"]["ready"] == json!(true)
        {
            return;
        }
        let driver = pending.driver.as_mut().expect("the driver");
        if let Ok(Some(exit)) = driver.try_wait() {
            panic!("chromedriver exited at start: {exit}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not answer within {DRIVER_START_WAIT:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn screenshots_dir() -> PathBuf {
    // CARGO_MANIFEST_DIR is crates/waitroom; the screenshots go to the workspace's target/, which
    // git ignores, whatever CARGO_TARGET_DIR says.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots")
}

// ---------------------------------------------------------------------------------------------
// A protected service: the room's targetUrl

/// A seat selection behind `RequireAdmission`: it renders only for a valid token of `room`.
struct TargetService {
    url: String,
    verifier: Arc<Verifier>,
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
        let app = Router::new()
            .route(
                "/seat-selection",
                get(|Extension(claims): Extension<AdmissionClaims>| async move {
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
            shutdown: Some(shutdown),
        }
    }
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

/// Whether `text` is an estimated wait in words ("less than a minute", "about 5 minutes", ...).
fn is_eta_in_words(text: &str) -> bool {
    if text == "less than a minute" || text == "more than a day" {
        return true;
    }
    let Some(rest) = text.strip_prefix("about ") else {
        return false;
    };
    let Some((count, unit)) = rest.split_once(' ') else {
        return false;
    };
    count.parse::<u64>().is_ok() && ["minute", "minutes", "hour", "hours"].contains(&unit)
}

/// Runs `test` with a browser, or skips it (see [`browser_tools`]).
async fn with_browser<F, Fut>(test: F)
where
    F: FnOnce(Arc<Browser>) -> Fut,
    Fut: Future<Output = ()>,
{
    common::init_tracing();
    let Some(browser) = Browser::start().await else {
        return;
    };
    let browser = Arc::new(browser);
    test(browser.clone()).await;
    if let Ok(browser) = Arc::try_unwrap(browser) {
        browser.close().await;
    }
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

        // Turnover first, so the room can estimate: `first` is admitted, then completes, and
        // `second` takes its slot; `third` waits at the front of the line.
        let first = join(&server, room, "ACTIVE").await;
        let second = join(&server, room, "WAITING").await;
        complete(&server, &first).await;
        wait_for_view(&server, &second, "ACTIVE", |v| v["status"] == "ACTIVE").await;
        let third = join(&server, room, "WAITING").await;

        browser.goto(&server.url(&format!("/room/{room}"))).await;
        browser.wait_for_state("waiting").await;
        let me = browser.stored_session_id(room).await;
        let mine = view(&server, &me).await;
        assert_eq!((mine["status"].as_str(), mine["position"].as_u64()), (Some("WAITING"), Some(1)), "{mine}");
        assert!(mine["estimatedWaitSeconds"].is_u64(), "the API has an estimate: {mine}");
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

/// Next in line, the page learns of its turn within seconds even when heartbeats are a minute
/// apart: between heartbeats it reads its view (GETs, about one a second, not a busy loop), and
/// it is at the target long before the next heartbeat would have told it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_in_line_the_page_learns_of_its_turn_between_heartbeats() {
    with_browser(|browser| async move {
        let server = TestServer::start().await;
        let room = "browser-front";
        let target = TargetService::start(&server, room).await;
        let mut config = room_config(1, Some(&format!("{}/seat-selection", target.url)), None);
        config["heartbeatIntervalSeconds"] = json!(SLOW_HEARTBEAT_INTERVAL_SECONDS);
        server.put_room(room, config).await;
        let holder = join(&server, room, "ACTIVE").await;

        browser.goto(&server.url(&format!("/room/{room}"))).await;
        browser.wait_for_state("waiting").await;
        browser.wait_for_text("position", &position_words(0)).await;
        // From here until the slot is freed the test itself sends no GET of a session, so every
        // one counted is the page's (its heartbeats are POSTs, and a minute away).
        let counted_from = tokio::time::Instant::now();
        let before = session_gets(&server).await;
        let reads = common::eventually(PAGE_WAIT, || async {
            let now = session_gets(&server).await;
            (now >= before + 2).then_some(now - before)
        })
        .await;
        let elapsed = counted_from.elapsed();
        assert!(
            elapsed >= FRONT_READS_MIN_SPAN,
            "{reads} reads of the view within {elapsed:?}: the page should read about once a second"
        );

        complete(&server, &holder).await;
        let freed_at = tokio::time::Instant::now();
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
        tracing::info!(after = ?freed_at.elapsed(), "the page reached the target after the slot was freed");

        drop(target);
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
