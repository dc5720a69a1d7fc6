//! The operator's console (`GET /admin`) in a real browser: headless Chromium through
//! chromedriver (`common/browser.rs`), against real servers started by `tests/common` and the
//! real `waitroom demo` binary.
//!
//! The test acts as a person does: it types into the fields, clicks the buttons and reads the
//! texts on screen (the figures, the messages, the drawn chart lines); the crowd is simulated
//! through the API. Without chromium or chromedriver the tests print `SKIPPED` and pass, except
//! with `CI=true`. Screenshots: `<workspace>/target/screenshots/console-*.png`.
//!
//! Nothing sleeps to let something happen: every wait polls the page or the API, with a bound.

#[path = "common/browser.rs"]
mod chromium;
mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::Locator;
use serde_json::{Value, json};

use chromium::{Browser, LAPTOP, with_browser};
use common::{ADMIN_TOKEN, TestServer, id};

/// The room the test steers, and another one for the list.
const SALE: &str = "console-sale";
const OTHER: &str = "console-other";
/// Idle timeouts of the test rooms: the test's sessions (which never heartbeat) outlive it.
const IDLE_TIMEOUT_SECONDS: u64 = 600;
/// The console's samples the room's charts must hold before their screenshot: several refreshes
/// (one every 2 s), so the lines have a shape.
const CHART_SAMPLES_MIN: u64 = 6;
/// A window tall enough to show a room's figures and all four charts in one screenshot.
const ROOM_SCREENSHOT_HEIGHT: u32 = 1500;
/// Longest wait for `waitroom demo` to print its addresses.
const DEMO_START_WAIT: Duration = Duration::from_secs(60);

fn room_config(capacity: u32) -> Value {
    json!({
        "capacity": capacity,
        "activeIdleTimeoutSeconds": IDLE_TIMEOUT_SECONDS,
        "waitingIdleTimeoutSeconds": IDLE_TIMEOUT_SECONDS,
        "maxActiveSeconds": IDLE_TIMEOUT_SECONDS,
        "heartbeatIntervalSeconds": 10,
    })
}

async fn join(server: &TestServer, room: &str) -> Value {
    let (status, view) = server.join(room).await;
    assert_eq!(status, 201, "join {room}: {view}");
    view
}

/// Types `text` into `#id`, replacing what it held.
async fn type_into(browser: &Browser, id: &str, text: &str) {
    let field = browser
        .client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("find #{id}: {e}"));
    field
        .clear()
        .await
        .unwrap_or_else(|e| panic!("clear #{id}: {e}"));
    field
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("type into #{id}: {e}"));
}

/// Waits until the console shows `view` (`sign-in`, `rooms` or `room`), and only that.
async fn wait_for_view(browser: &Browser, view: &str) {
    let script = format!(
        "return document.body.dataset.view === {view}
           && !document.getElementById({section}).hidden
           && ['sign-in-view', 'rooms-view', 'room-view'].filter((id) => !document.getElementById(id).hidden).length === 1;",
        view = json!(view),
        section = json!(format!("{view}-view")),
    );
    browser.wait_for(&format!("the {view} view"), &script).await;
}

/// Waits until the rooms list's row of `room` reads `expected` (cell by cell, from the state on:
/// state, waiting, active / capacity; the rest is not compared).
async fn wait_for_row(browser: &Browser, room: &str, expected: [&str; 3]) {
    let script = format!(
        "const row = document.querySelector('#rooms-body tr[data-room=' + JSON.stringify({room}) + ']');
         if (row === null || row.closest('[hidden]') !== null) return false;
         const cells = Array.from(row.children, (cell) => cell.textContent.trim());
         return JSON.stringify(cells.slice(1, 4)) === JSON.stringify({expected});",
        room = json!(room),
        expected = json!(expected),
    );
    browser
        .wait_for(&format!("the row of {room} reading {expected:?}"), &script)
        .await;
}

/// The texts of the rooms list's rows: room id and the cells after it.
async fn rows(browser: &Browser) -> Vec<Vec<String>> {
    let value = browser
        .js(
            "return Array.from(document.querySelectorAll('#rooms-body tr'),
               (row) => Array.from(row.children, (cell) => cell.textContent.trim()));",
        )
        .await
        .expect("read the rows");
    serde_json::from_value(value).expect("rows of texts")
}

/// Waits until the room's figures read `waiting` and `active` ("2 / 4").
async fn wait_for_figures(browser: &Browser, waiting: &str, active: &str) {
    let script = format!(
        "return document.getElementById('fig-waiting').textContent.trim() === {waiting}
           && document.getElementById('fig-active').textContent.trim() === {active};",
        waiting = json!(waiting),
        active = json!(active),
    );
    browser
        .wait_for(
            &format!("the figures waiting {waiting}, active {active}"),
            &script,
        )
        .await;
}

async fn session_storage_token(browser: &Browser) -> Value {
    browser
        .js("return sessionStorage.getItem('waitroom:console:token');")
        .await
        .expect("read sessionStorage")
}

async fn location(browser: &Browser) -> String {
    browser
        .js("return location.href;")
        .await
        .expect("read the location")
        .as_str()
        .expect("a string")
        .to_string()
}

/// The scenario: sign in (a wrong token refused first), the rooms list and a room's
/// figures moving while a crowd joins, the capacity changed in the form with the active count
/// following, a pause that stops admissions (and a resume), an eviction by id, the charts, and a
/// close confirmed by typing the room's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_and_steers_a_sale_from_the_console() {
    with_browser(LAPTOP, |browser| async move {
        let server = TestServer::start().await;
        server.put_room(SALE, room_config(2)).await;
        server.put_room(OTHER, room_config(50)).await;

        // Signing in: a wrong token is refused and kept nowhere.
        browser.goto(&server.url("/admin")).await;
        wait_for_view(&browser, "sign-in").await;
        type_into(&browser, "token", "not-the-admin-token").await;
        browser.click("sign-in").await;
        browser
            .wait_for_text(
                "sign-in-error",
                "That token was refused: it is not this node's admin token.",
            )
            .await;
        wait_for_view(&browser, "sign-in").await;
        assert_eq!(session_storage_token(&browser).await, Value::Null);
        browser.screenshot("console-sign-in-refused").await;

        type_into(&browser, "token", ADMIN_TOKEN).await;
        browser.click("sign-in").await;
        wait_for_view(&browser, "rooms").await;
        assert_eq!(session_storage_token(&browser).await, json!(ADMIN_TOKEN));
        let url = location(&browser).await;
        assert!(!url.contains(ADMIN_TOKEN), "the token is in the URL: {url}");
        wait_for_row(&browser, SALE, ["Admitting", "0", "0 / 2"]).await;
        wait_for_row(&browser, OTHER, ["Admitting", "0", "0 / 50"]).await;

        // A crowd joins: two are admitted, three wait; the list follows.
        let mut crowd = Vec::new();
        for _ in 0..5 {
            crowd.push(join(&server, SALE).await);
        }
        wait_for_row(&browser, SALE, ["Full", "3", "2 / 2"]).await;
        let listed = rows(&browser).await;
        assert_eq!(
            listed.iter().map(|row| row[0].as_str()).collect::<Vec<_>>(),
            [OTHER, SALE],
            "{listed:?}"
        );
        // Admissions per minute and the expiry counts are there too.
        let sale_row = listed.iter().find(|row| row[0] == SALE).expect("the sale's row");
        assert_eq!(sale_row[4], "2", "admissions per minute: {sale_row:?}");
        assert_eq!(sale_row[7], "0 · 0 · 0 · 0 · 0", "ended by reason: {sale_row:?}");
        browser.screenshot("console-rooms").await;

        // One room: its figures move with every join.
        browser
            .client
            .find(Locator::Css(&format!("#rooms-body tr[data-room=\"{SALE}\"] a")))
            .await
            .expect("the room's link")
            .click()
            .await
            .expect("click the room's link");
        wait_for_view(&browser, "room").await;
        browser.wait_for_text("room-title", SALE).await;
        browser.wait_for_text("room-state", "Full").await;
        wait_for_figures(&browser, "3", "2 / 2").await;
        for waiting in 4..=7 {
            crowd.push(join(&server, SALE).await);
            wait_for_figures(&browser, &waiting.to_string(), "2 / 2").await;
        }
        browser.wait_for_text("fig-admitted", "2").await;

        // The form refuses a capacity out of the API's range, with a message, and saves nothing.
        browser.wait_for_text("fig-active", "2 / 2").await;
        type_into(&browser, "cfg-capacity", "0").await;
        browser.click("save-config").await;
        browser
            .wait_for_text(
                "err-capacity",
                "Capacity must be a whole number from 1 to 1,000,000.",
            )
            .await;
        browser
            .wait_for_text(
                "config-message",
                "Nothing was saved: correct the fields marked above.",
            )
            .await;
        assert_eq!(server.room(SALE).await["config"]["capacity"], 2);

        // "Undo my changes" brings back the room's configuration.
        browser.click("reset-config").await;
        browser
            .wait_for(
                "the form back to the room's configuration",
                "return document.getElementById('cfg-capacity').value === '2'
                   && document.getElementById('err-capacity').textContent === '';",
            )
            .await;
        // A value the form lets through but the node refuses: the node's reason is shown.
        type_into(&browser, "cfg-opensAt", "2027-02-30T10:00:00Z").await;
        browser.click("save-config").await;
        browser
            .wait_for(
                "the node's refusal under the form",
                "return document.getElementById('config-message').textContent
                   .startsWith('Not saved: opensAt is not an RFC 3339 date-time');",
            )
            .await;
        assert_eq!(server.room(SALE).await["config"]["opensAt"], Value::Null);
        // The configuration changes on the node while the form holds unsaved changes: the form
        // says so, and keeps them until "Undo my changes".
        let mut changed = room_config(2);
        changed["heartbeatIntervalSeconds"] = json!(9);
        server.put_room(SALE, changed).await;
        browser
            .wait_for_text(
                "config-dirty",
                "Unsaved changes, and the room's configuration changed on the node meanwhile \
                 (“Undo my changes” shows it).",
            )
            .await;
        assert_eq!(
            browser
                .js("return document.getElementById('cfg-heartbeatIntervalSeconds').value;")
                .await
                .expect("read the field"),
            json!("10")
        );
        browser.click("reset-config").await;
        browser
            .wait_for(
                "the form back to the room's configuration",
                "return document.getElementById('cfg-opensAt').value === ''
                   && document.getElementById('cfg-capacity').value === '2'
                   && document.getElementById('cfg-heartbeatIntervalSeconds').value === '9'
                   && document.getElementById('config-dirty').hidden;",
            )
            .await;

        // A capacity of 4: two more are admitted, and the active count follows.
        type_into(&browser, "cfg-capacity", "4").await;
        browser.click("save-config").await;
        browser.wait_for_text("config-message", "Saved: capacity 4.").await;
        wait_for_figures(&browser, "5", "4 / 4").await;
        assert_eq!(browser.text("err-capacity").await, "");

        // Pause: slots come free, and nobody is admitted.
        browser.wait_for_text("pause", "Pause admissions").await;
        browser.click("pause").await;
        browser.wait_for_text("room-state", "Paused").await;
        browser.wait_for_text("pause", "Resume admissions").await;
        browser.wait_for_text("fig-newcomer", "—").await;
        let active: Vec<String> = crowd[..2].iter().map(id).collect();
        for session in &active {
            let (status, view) = server.leave(session).await;
            assert_eq!(status, 200, "leave: {view}");
        }
        wait_for_figures(&browser, "5", "2 / 4").await;
        browser.wait_for_text("fig-admitted", "4").await;
        let room = server.room(SALE).await;
        assert_eq!(
            (room["stats"]["activeCount"].as_u64(), room["stats"]["waitingCount"].as_u64()),
            (Some(2), Some(5)),
            "{room}"
        );

        // Resume: the free slots fill again.
        browser.click("pause").await;
        browser.wait_for_text("pause", "Pause admissions").await;
        wait_for_figures(&browser, "3", "4 / 4").await;
        browser.wait_for_text("fig-admitted", "6").await;

        // Evict a waiting session by its id.
        let last = id(crowd.last().expect("a crowd"));
        type_into(&browser, "evict-id", &last).await;
        browser.click("evict").await;
        browser
            .wait_for_text("evict-message", &format!("Evicted {last} (it was waiting)."))
            .await;
        wait_for_figures(&browser, "2", "4 / 4").await;
        browser.wait_for_text("fig-expired", "0 · 2 · 0 · 1 · 0").await;
        let (_, view) = server.session(&last).await;
        assert_eq!(view["expiredReason"], "evicted", "{view}");
        // A session of another room is not evicted from this one's page.
        let elsewhere = id(&join(&server, OTHER).await);
        type_into(&browser, "evict-id", &elsewhere).await;
        browser.click("evict").await;
        browser
            .wait_for_text(
                "evict-message",
                &format!("{elsewhere} is in room {OTHER}, not {SALE}: not evicted."),
            )
            .await;
        assert_eq!(server.session(&elsewhere).await.1["status"], "ACTIVE");

        // The queueing method: passthrough admits everyone waiting at once, past capacity;
        // reject refuses joins; the form shows the room's method.
        assert_eq!(browser.text("err-queueingMethod").await, "");
        let choose = |method: &str| {
            format!(
                "const select = document.getElementById('cfg-queueingMethod');
                 select.value = {};
                 select.dispatchEvent(new Event('input', {{ bubbles: true }}));
                 return select.value;",
                json!(method)
            )
        };
        assert_eq!(
            browser.js(&choose("passthrough")).await.expect("choose"),
            json!("passthrough")
        );
        browser.click("save-config").await;
        browser
            .wait_for_text("config-message", "Saved: capacity 4, passthrough.")
            .await;
        wait_for_figures(&browser, "0", "6 / 4").await;
        browser.wait_for_text("room-state", "Passthrough").await;
        assert_eq!(server.room(SALE).await["config"]["queueingMethod"], "passthrough");
        browser.js(&choose("reject")).await.expect("choose");
        browser.click("save-config").await;
        browser.wait_for_text("config-message", "Saved: capacity 4, reject.").await;
        browser.wait_for_text("room-state", "Refusing joins").await;
        let refused = server
            .client
            .post(server.url("/api/waiting-room/sessions"))
            .json(&json!({ "roomId": SALE }))
            .send()
            .await
            .expect("POST join");
        assert_eq!(refused.status(), 403);
        browser.js(&choose("fifo")).await.expect("choose");
        browser.click("save-config").await;
        browser.wait_for_text("config-message", "Saved: capacity 4.").await;
        browser.wait_for_text("room-state", "Full").await;
        assert_eq!(
            browser
                .js("return document.getElementById('cfg-queueingMethod').value;")
                .await
                .expect("read"),
            json!("fifo")
        );

        // A join challenge: out of range is marked and not saved; 22 bits makes every join
        // without one a 403 `challenge-required`; 0 takes it away.
        type_into(&browser, "cfg-challengeDifficultyBits", "29").await;
        browser.click("save-config").await;
        browser
            .wait_for_text(
                "err-challengeDifficultyBits",
                "Join challenge must be a whole number from 0 to 28.",
            )
            .await;
        type_into(&browser, "cfg-challengeDifficultyBits", "22").await;
        browser.click("save-config").await;
        browser
            .wait_for_text(
                "config-message",
                "Saved: capacity 4, a 22-bit join challenge.",
            )
            .await;
        assert_eq!(
            server.room(SALE).await["config"]["challengeDifficultyBits"],
            22
        );
        let refused = server
            .client
            .post(server.url("/api/waiting-room/sessions"))
            .json(&json!({ "roomId": SALE }))
            .send()
            .await
            .expect("POST join");
        assert_eq!(refused.status(), 403);
        let problem: Value = refused.json().await.expect("problem");
        assert_eq!(
            problem["type"],
            "https://waitroom.dev/problems/challenge-required"
        );
        type_into(&browser, "cfg-challengeDifficultyBits", "0").await;
        browser.click("save-config").await;
        browser.wait_for_text("config-message", "Saved: capacity 4.").await;
        assert_eq!(
            server.room(SALE).await["config"]["challengeDifficultyBits"],
            0
        );

        // Issue passes: the codes are shown once, with a copy button and a download; each is
        // this room's (another room refuses it, and nothing changes there).
        type_into(&browser, "passes-count", "3").await;
        type_into(&browser, "passes-hours", "2").await;
        browser.click("issue-passes").await;
        browser
            .wait_for("the codes", "return !document.getElementById('passes-result').hidden;")
            .await;
        let message = browser.text("passes-message").await;
        assert!(message.starts_with(&format!("Issued 3 passes for {SALE}")), "{message}");
        let codes = browser
            .js("return document.getElementById('passes-codes').value;")
            .await
            .expect("the codes");
        let codes: Vec<String> = codes
            .as_str()
            .expect("text")
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(codes.len(), 3, "{codes:?}");
        assert!(codes.iter().all(|c| c.len() == 22), "{codes:?}");
        let download = browser
            .js("return document.getElementById('passes-download').getAttribute('href');")
            .await
            .expect("the download");
        assert!(download.as_str().expect("href").starts_with("blob:"), "{download}");
        let foreign = server
            .client
            .post(server.url("/api/waiting-room/sessions"))
            .json(&json!({ "roomId": OTHER, "pass": codes[0] }))
            .send()
            .await
            .expect("POST join");
        assert_eq!(foreign.status(), 403);
        // The room's figures count them until they are used.
        browser.wait_for_text("fig-passes", "3").await;

        // The charts of the last hour: a line per series, drawn from the samples of this tab.
        let charts = format!(
            "const ready = (id, lines) => Number(document.getElementById(id).dataset.samples) >= {CHART_SAMPLES_MIN}
               && document.querySelectorAll('#' + id + ' svg polyline').length >= lines;
             return ready('chart-waiting', 1) && ready('chart-active', 2) && ready('chart-apm', 1)
               && document.querySelectorAll('#chart-newcomer svg polyline, #chart-newcomer svg circle').length >= 1;"
        );
        browser.wait_for("the four charts with their lines", &charts).await;
        let preview = browser
            .js("return document.getElementById('preview').getAttribute('href');")
            .await
            .expect("the preview link");
        assert_eq!(preview, json!(format!("/room/{SALE}?preview")));
        browser
            .client
            .set_window_size(LAPTOP.width, ROOM_SCREENSHOT_HEIGHT)
            .await
            .expect("a taller window");
        browser.screenshot("console-room").await;
        browser
            .client
            .set_window_size(LAPTOP.width, LAPTOP.height)
            .await
            .expect("the usual window");

        // A reload keeps the tab signed in, on the same room, with the charts' history: they
        // still begin where they began ("kept by this tab since 21:26:19, 1 min").
        let since = browser.text("history-note").await;
        let since = since.split(',').next().expect("the note").to_string();
        assert!(since.starts_with("(kept by this tab since "), "{since}");
        browser.client.refresh().await.expect("reload");
        wait_for_view(&browser, "room").await;
        browser.wait_for_text("room-title", SALE).await;
        browser
            .wait_for(
                "the history kept across the reload",
                &format!(
                    "return document.getElementById('history-note').textContent.startsWith({});",
                    json!(format!("{since},"))
                ),
            )
            .await;

        // Close, with a confirmation that names the room and takes its name typed out.
        browser.click("close-room").await;
        browser
            .wait_for("the close dialog", "return document.getElementById('close-dialog').open;")
            .await;
        browser.wait_for_text("close-title", &format!("Close {SALE}?")).await;
        browser.wait_for_text("close-confirm", &format!("Close {SALE}")).await;
        let disabled = "return document.getElementById('close-confirm').disabled;";
        assert_eq!(browser.js(disabled).await.expect("read"), json!(true));
        type_into(&browser, "close-confirm-input", "console-sal").await;
        assert_eq!(browser.js(disabled).await.expect("read"), json!(true));
        browser.click("close-cancel").await;
        browser
            .wait_for("the dialog closed", "return !document.getElementById('close-dialog').open;")
            .await;
        assert_eq!(server.room(SALE).await["roomId"], SALE, "cancelled: still open");

        browser.click("close-room").await;
        browser
            .wait_for("the close dialog", "return document.getElementById('close-dialog').open;")
            .await;
        type_into(&browser, "close-confirm-input", SALE).await;
        browser.screenshot("console-close").await;
        browser.click("close-confirm").await;
        wait_for_view(&browser, "rooms").await;
        browser
            .wait_for_text("rooms-message", &format!("Closed {SALE}."))
            .await;
        browser
            .wait_for(
                "the list without the closed room",
                &format!(
                    "return document.querySelector('#rooms-body tr[data-room={}]') === null
                       && document.querySelector('#rooms-body tr[data-room={}]') !== null;",
                    json!(SALE),
                    json!(OTHER)
                ),
            )
            .await;
        let gone = server
            .client
            .get(server.url(&format!("/api/waiting-room/rooms/{SALE}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET room");
        assert_eq!(gone.status(), 404);
        let (_, view) = server.session(&id(&crowd[3])).await;
        assert_eq!(view["expiredReason"], "closed", "{view}");

        // Signing out forgets the token.
        browser.click("sign-out").await;
        wait_for_view(&browser, "sign-in").await;
        assert_eq!(session_storage_token(&browser).await, Value::Null);
        server.stop().await;
    })
    .await;
}

/// The console page itself: self-contained under a strict policy, and in the OpenAPI document
/// like the waiting page.
#[tokio::test]
async fn the_console_is_one_self_contained_page() {
    let server = TestServer::start().await;
    let response = server
        .client
        .get(server.url("/admin"))
        .send()
        .await
        .expect("GET /admin");
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let policy = header("content-security-policy");
    assert!(policy.starts_with("default-src 'self';"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("form-action 'none'"), "{policy}");
    assert!(!policy.contains("unsafe"), "{policy}");
    let html = response.text().await.expect("the page");
    // Nothing from elsewhere, no inline script or style.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(
        !html.contains("<style") && !html.contains(" style="),
        "{html}"
    );
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(html.contains("<script src=\"/assets/console.js\" defer></script>"));
    for (asset, content_type) in [
        ("/assets/console.js", "text/javascript; charset=utf-8"),
        ("/assets/console.css", "text/css; charset=utf-8"),
    ] {
        let response = server
            .client
            .get(server.url(asset))
            .send()
            .await
            .expect("asset");
        assert_eq!(response.status(), 200, "{asset}");
        assert_eq!(
            response.headers()["content-type"].to_str().expect("ascii"),
            content_type
        );
        let text = response.text().await.expect("asset body");
        assert!(!text.contains("innerHTML"), "{asset} writes HTML");
    }
    let post = server
        .client
        .post(server.url("/admin"))
        .send()
        .await
        .expect("POST /admin");
    assert_eq!(post.status(), 405);
    let allow: Vec<&str> = post.headers()["allow"]
        .to_str()
        .expect("ascii")
        .split(',')
        .map(str::trim)
        .collect();
    assert_eq!(allow, ["GET", "HEAD"]);
    let document: Value = server
        .client
        .get(server.url("/api/waiting-room/openapi.json"))
        .send()
        .await
        .expect("the document")
        .json()
        .await
        .expect("JSON");
    let operation = &document["paths"]["/admin"]["get"];
    assert!(
        operation["responses"]["200"]["content"]["text/html"].is_object(),
        "{operation}"
    );
    server.stop().await;
}

/// `waitroom demo` (the real binary) prints the console's address beside the waiting page's and
/// the admin token on its own line, never inside a URL; signing in with it shows the demo room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_the_console_and_its_token_apart() {
    with_browser(LAPTOP, |browser| async move {
        let mut demo = Demo::start();
        let (lines, console_url, token) = demo.read_addresses();
        assert!(
            console_url.starts_with("http://127.0.0.1:") && console_url.ends_with("/admin"),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|line| line.contains("/room/")),
            "{lines:?}"
        );
        for line in &lines {
            if line.contains("http://") {
                // A URL line may quote the token in a curl header, never inside the URL.
                for word in line.split_whitespace().filter(|w| w.contains("http://")) {
                    assert!(!word.contains(&token), "the token is in a URL: {line}");
                }
            }
        }
        browser.goto(&console_url).await;
        wait_for_view(&browser, "sign-in").await;
        type_into(&browser, "token", &token).await;
        browser.click("sign-in").await;
        wait_for_view(&browser, "rooms").await;
        browser
            .wait_for(
                "the demo room in the list",
                &format!(
                    "return document.querySelector('#rooms-body tr[data-room={}]') !== null;",
                    json!(waitroom::demo::ROOM)
                ),
            )
            .await;
        demo.stop();
    })
    .await;
}

/// `waitroom demo --listen 127.0.0.1:0`, killed by its PID when dropped. Its data dir is the
/// test's (removed when the test ends, however the demo ended).
struct Demo {
    child: Child,
    _data_dir: tempfile::TempDir,
}

impl Demo {
    fn start() -> Self {
        let data_dir = tempfile::tempdir().expect("a data dir");
        let child = Command::new(env!("CARGO_BIN_EXE_waitroom"))
            .args([
                "demo",
                "--listen",
                "127.0.0.1:0",
                "--crowd",
                "5",
                "--data-dir",
            ])
            .arg(data_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start waitroom demo");
        Self {
            child,
            _data_dir: data_dir,
        }
    }

    /// Reads what the demo printed up to "Press Ctrl-C": its lines, the console's address and
    /// the admin token.
    fn read_addresses(&mut self) -> (Vec<String>, String, String) {
        let stdout = self.child.stdout.take().expect("the demo's stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let done = line.contains("Press Ctrl-C");
                lines.push(line);
                if done {
                    break;
                }
            }
            let _ = tx.send(lines);
        });
        let lines = rx
            .recv_timeout(DEMO_START_WAIT)
            .expect("the demo printed its addresses in time");
        let value = |label: &str| {
            lines
                .iter()
                .find_map(|line| line.trim_start().strip_prefix(label))
                .map(|rest| {
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
                .unwrap_or_else(|| panic!("no line {label:?} in {lines:#?}"))
        };
        let console_url = value("Operator's console:");
        let token = value("Admin token:");
        assert!(!token.is_empty(), "{lines:?}");
        (lines, console_url, token)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A room with scheduled events: the console names the running and the next event and counts
/// against the event's capacity, and saving the form (which does not edit events) keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_events_and_keeps_them_when_saving() {
    with_browser(LAPTOP, |browser| async move {
        let server = TestServer::start().await;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let at = |offset_s: u64, back: bool| {
            let ms = if back {
                now_ms - offset_s * 1000
            } else {
                now_ms + offset_s * 1000
            };
            waitroom::http::api::rfc3339_ms(ms)
        };
        let mut config = room_config(1);
        config["events"] = json!([
            { "name": "drop", "startsAt": at(60, true), "endsAt": at(3_600, false),
              "capacity": 3 },
            { "name": "later", "startsAt": at(7_200, false), "endsAt": at(10_800, false),
              "preQueueMinutes": 30 },
        ]);
        server.put_room(SALE, config).await;

        browser.goto(&server.url("/admin")).await;
        wait_for_view(&browser, "sign-in").await;
        type_into(&browser, "token", ADMIN_TOKEN).await;
        browser.click("sign-in").await;
        wait_for_view(&browser, "rooms").await;
        browser
            .client
            .find(Locator::Css(&format!(
                "#rooms-body tr[data-room=\"{SALE}\"] a"
            )))
            .await
            .expect("the room's link")
            .click()
            .await
            .expect("click the room's link");
        wait_for_view(&browser, "room").await;
        wait_for_figures(&browser, "0", "0 / 3").await;
        browser
            .wait_for(
                "the running and the next event",
                "const text = document.getElementById('fig-event').textContent;
                 return text.startsWith('drop until ')
                   && text.includes(' (capacity 3); next: later at ')
                   && text.endsWith(', pre-queue from 30 min before');",
            )
            .await;
        browser
            .wait_for(
                "the form's note on events",
                "return document.getElementById('cfg-events').textContent
                   .startsWith('2 scheduled events (drop, later): saving keeps them');",
            )
            .await;
        browser.screenshot("console-events").await;

        type_into(&browser, "cfg-capacity", "5").await;
        browser.click("save-config").await;
        browser
            .wait_for(
                "the save",
                "return document.getElementById('config-message').textContent
                   .startsWith('Saved: capacity 5');",
            )
            .await;
        let room = server.room(SALE).await;
        assert_eq!(room["config"]["capacity"], 5);
        let names: Vec<&str> = room["config"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["drop", "later"], "the save kept the events");
        // The event's capacity still holds while it runs.
        assert_eq!(room["stats"]["capacityNow"], 3);
        server.stop().await;
    })
    .await;
}
