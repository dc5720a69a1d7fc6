//! The whole API against a real server (random port, temporary data dir, the embedded file log),
//! driven over HTTP.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{ADMIN_TOKEN, TestServer, eventually, id};
use futures::future::join_all;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capacity_holds_under_300_concurrent_joins() {
    common::init_tracing();
    let server = TestServer::start().await;
    server.put_room("concert", json!({ "capacity": 10 })).await;
    let joins = join_all((0..300).map(|_| server.join("concert"))).await;
    let mut ids = Vec::new();
    for (status, view) in &joins {
        assert_eq!(*status, 201, "{view}");
        ids.push(id(view));
    }
    let views: Vec<Value> = join_all(ids.iter().map(|id| server.session(id)))
        .await
        .into_iter()
        .map(|(s, v)| {
            assert_eq!(s, 200);
            v
        })
        .collect();
    let active = views.iter().filter(|v| v["status"] == "ACTIVE").count();
    assert_eq!(active, 10, "exactly capacity admitted");
    let mut positions: Vec<u64> = views
        .iter()
        .filter_map(|v| v["position"].as_u64())
        .collect();
    positions.sort_unstable();
    assert_eq!(
        positions,
        (0..290).collect::<Vec<u64>>(),
        "positions exactly 0..n-1"
    );
    for view in &views {
        assert_eq!(view["waitingCount"], 290);
        if view["status"] == "ACTIVE" {
            assert!(view["admissionToken"].is_string());
            assert!(view["position"].is_null());
        }
    }
    let stats = &server.room("concert").await["stats"];
    assert_eq!(
        (
            stats["activeCount"].as_u64(),
            stats["waitingCount"].as_u64()
        ),
        (Some(10), Some(290))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_and_leave_admit_the_next_in_line() {
    let server = TestServer::start().await;
    server
        .put_room(
            "r",
            json!({ "capacity": 1, "targetUrl": "https://tickets.example.com/select" }),
        )
        .await;
    let (status, first) = server.join("r").await;
    assert_eq!(status, 201);
    assert_eq!(first["status"], "ACTIVE");
    assert_eq!(first["targetUrl"], "https://tickets.example.com/select");
    let (_, second) = server.join("r").await;
    let (_, third) = server.join("r").await;
    assert_eq!(
        (second["position"].as_u64(), third["position"].as_u64()),
        (Some(0), Some(1))
    );

    // Completing needs the session's own token.
    let (status, problem) = server.post_action(&id(&first), "complete", None).await;
    assert_eq!(status, 401, "{problem}");
    let (status, _) = server
        .post_action(&id(&first), "complete", Some("not-a-token"))
        .await;
    assert_eq!(status, 401);
    let token = first["admissionToken"].as_str().unwrap();
    let (status, _) = server
        .post_action(&id(&second), "complete", Some(token))
        .await;
    assert_eq!(status, 401, "a token of another session");
    let (status, done) = server
        .post_action(&id(&first), "complete", Some(token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (done["status"].as_str(), done["expiredReason"].as_str()),
        (Some("EXPIRED"), Some("completed"))
    );
    assert!(done["expiresAt"].is_null() && done["admissionToken"].is_null());
    // Completing again changes nothing.
    let (status, again) = server
        .post_action(&id(&first), "complete", Some(token))
        .await;
    assert_eq!(
        (status, again["expiredReason"].as_str()),
        (200, Some("completed"))
    );

    let (_, second) = server.session(&id(&second)).await;
    assert_eq!(
        second["status"], "ACTIVE",
        "the next in line got the slot at once"
    );
    assert!(second["admittedAt"].is_string());
    let (_, third) = server.session(&id(&third)).await;
    assert_eq!(third["position"], 0);

    // Leaving (idempotent) frees the slot too.
    let (status, left) = server.leave(&id(&second)).await;
    assert_eq!(
        (status, left["expiredReason"].as_str()),
        (200, Some("left"))
    );
    let (status, left) = server.leave(&id(&second)).await;
    assert_eq!(
        (status, left["expiredReason"].as_str()),
        (200, Some("left"))
    );
    let (_, third) = server.session(&id(&third)).await;
    assert_eq!(third["status"], "ACTIVE");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_heartbeating_ones_survive() {
    let server = TestServer::start().await;
    let config = json!({
        "capacity": 2,
        "heartbeatIntervalSeconds": 1,
        "activeIdleTimeoutSeconds": 2,
        "waitingIdleTimeoutSeconds": 2,
    });
    server.put_room("short", config).await;
    // One after the other, so the log order is the vector's order.
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(id(&server.join("short").await.1));
    }
    // Sessions 0 and 1 are ACTIVE, 2 and 3 WAITING. 0 and 2 heartbeat; 1 and 3 go quiet.
    let mut statuses = Vec::new();
    for s in &sessions {
        statuses.push(
            server.session(s).await.1["status"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(statuses, ["ACTIVE", "ACTIVE", "WAITING", "WAITING"]);
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(3_500) {
        for s in [&sessions[0], &sessions[2]] {
            let (status, view) = server.heartbeat(s).await;
            assert_eq!(status, 200, "{view}");
            assert_ne!(
                view["status"], "EXPIRED",
                "a heartbeating session expired: {view}"
            );
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    for s in [&sessions[1], &sessions[3]] {
        let (_, view) = server.session(s).await;
        assert_eq!(
            (view["status"].as_str(), view["expiredReason"].as_str()),
            (Some("EXPIRED"), Some("timeout")),
            "{view}"
        );
    }
    // The quiet ACTIVE session's slot went to the heartbeating waiting one.
    let (_, view) = server.session(&sessions[2]).await;
    assert_eq!(view["status"], "ACTIVE");
    // Heartbeating an expired session changes nothing and returns its view.
    let (status, view) = server.heartbeat(&sessions[1]).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("EXPIRED")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_join_returns_the_same_session() {
    let server = TestServer::start().await;
    server.put_room("r", json!({ "capacity": 1 })).await;
    let (status, first) = server.join_with_key("r", Some("page-load-1")).await;
    assert_eq!(status, 201);
    let (status, replay) = server.join_with_key("r", Some("page-load-1")).await;
    assert_eq!(status, 200);
    assert_eq!(id(&first), id(&replay));
    let (status, other) = server.join_with_key("r", Some("page-load-2")).await;
    assert_eq!(status, 201);
    assert_ne!(id(&first), id(&other));
    // Concurrent replays of one key: one place.
    let replays = join_all((0..20).map(|_| server.join_with_key("r", Some("burst")))).await;
    let ids: BTreeSet<String> = replays.iter().map(|(_, v)| id(v)).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(replays.iter().filter(|(s, _)| *s == 201).count(), 1);
    assert_eq!(server.room("r").await["stats"]["waitingCount"], 2);
    server.stop().await;
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prequeue_is_drawn_at_opening() {
    let server = TestServer::start().await;
    let opens_at_ms = now_ms() + 1_500;
    let opens_at = waitroom::http::api::rfc3339_ms(opens_at_ms);
    server
        .put_room("sale", json!({ "capacity": 1, "opensAt": opens_at }))
        .await;
    let mut early = Vec::new();
    for _ in 0..30 {
        let (status, view) = server.join("sale").await;
        assert_eq!(status, 201);
        assert_eq!(
            (view["status"].as_str(), view["prequeue"].as_bool()),
            (Some("WAITING"), Some(true))
        );
        assert!(view["position"].is_null() && view["estimatedWaitSeconds"].is_null());
        assert_eq!(view["opensAt"].as_str(), Some(opens_at.as_str()));
        early.push(id(&view));
    }
    // After the opening, everyone has a place; a later joiner is behind all of them.
    let views: Vec<Value> = eventually(Duration::from_secs(5), || async {
        let views: Vec<Value> = join_all(early.iter().map(|s| server.session(s)))
            .await
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        views
            .iter()
            .all(|v| v["prequeue"] == false)
            .then_some(views)
    })
    .await;
    let (_, late) = server.join("sale").await;
    assert_eq!(late["position"], 29);
    assert_eq!(views.iter().filter(|v| v["status"] == "ACTIVE").count(), 1);
    let mut by_position: Vec<(u64, usize)> = views
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v["position"].as_u64().map(|p| (p, i)))
        .collect();
    by_position.sort_unstable();
    assert_eq!(
        by_position.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        (0..29).collect::<Vec<_>>()
    );
    let order: Vec<usize> = by_position.iter().map(|(_, i)| *i).collect();
    let mut join_order = order.clone();
    join_order.sort_unstable();
    assert_ne!(
        order, join_order,
        "the draw is not the join order (a 1 in 29! chance)"
    );
    server.stop().await;
}

/// Status, headers and body of a response, as one text to search.
async fn served(request: reqwest::RequestBuilder) -> String {
    let response = request.send().await.unwrap();
    let mut text = format!("{}\n", response.status());
    for (name, value) in response.headers() {
        text.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    text + &response.text().await.unwrap()
}

/// The secret seed of the pre-queue draw is never served: no response of the admin room
/// endpoints (the state digest included), the session endpoints, the operations endpoints, the
/// OpenAPI document or the waiting page holds it, in any usual rendering of 64 bits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_draw_seed_is_never_served() {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};

    let server = TestServer::start().await;
    let c = &server.client;
    let admin_url = |path: &str| server.url(&format!("/api/waiting-room/rooms{path}"));
    let opens_at = waitroom::http::api::rfc3339_ms(now_ms() + 3_600_000);
    let config = json!({ "capacity": 1, "opensAt": opens_at });
    let mut responses = Vec::new();
    let put = c.put(admin_url("/sale")).bearer_auth(ADMIN_TOKEN);
    responses.push(served(put.json(&config)).await);
    let room = waitroom_core::RoomId::new("sale").unwrap();
    let seed = || {
        let cell = server.node.room(&room).expect("the room");
        let seed = cell.state.read().draw_seed();
        seed.expect("a room configured through the API has a secret draw seed")
    };
    let first_seed = seed();
    let mut sessions = Vec::new();
    for _ in 0..5 {
        let join = c
            .post(server.url("/api/waiting-room/sessions"))
            .json(&json!({ "roomId": "sale" }));
        let text = served(join).await;
        let body: Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
        assert_eq!(body["prequeue"], true, "{body}");
        sessions.push(id(&body));
        responses.push(text);
    }
    // A new configuration while people wait in the pre-queue keeps the seed.
    let put = c.put(admin_url("/sale")).bearer_auth(ADMIN_TOKEN);
    responses.push(served(put.json(&json!({ "capacity": 2, "opensAt": opens_at }))).await);
    assert_eq!(seed(), first_seed, "the pre-queue's draw is fixed");
    for session in &sessions {
        let path = format!("/api/waiting-room/sessions/{session}");
        responses.push(served(c.get(server.url(&path))).await);
        responses.push(served(c.post(server.url(&format!("{path}:heartbeat")))).await);
    }
    for path in ["/sale", "/sale?digest=true", ""] {
        responses.push(served(c.get(admin_url(path)).bearer_auth(ADMIN_TOKEN)).await);
    }
    for path in [
        "/api/waiting-room/openapi.json",
        "/metrics",
        "/healthz",
        "/readyz",
        "/.well-known/jwks.json",
        "/room/sale",
        "/assets/room.js",
        "/assets/strings.js",
    ] {
        responses.push(served(c.get(server.url(path))).await);
    }
    let evict = format!("/api/waiting-room/sessions/{}:evict", sessions[0]);
    responses.push(served(c.post(server.url(&evict)).bearer_auth(ADMIN_TOKEN)).await);
    let leave = format!("/api/waiting-room/sessions/{}", sessions[1]);
    responses.push(served(c.delete(server.url(&leave))).await);
    responses.push(served(c.delete(admin_url("/sale")).bearer_auth(ADMIN_TOKEN)).await);
    assert_eq!(seed(), first_seed, "a closed room keeps its seed");

    let bits = first_seed.to_u64();
    let (le, be) = (bits.to_le_bytes(), bits.to_be_bytes());
    let mut renderings = vec![
        bits.to_string(),
        (bits as i64).to_string(),
        format!("{bits:016x}"),
        format!("{bits:016X}"),
        format!("{:016x}", u64::from_le_bytes(be)),
        format!("{:016X}", u64::from_le_bytes(be)),
    ];
    for bytes in [le, be] {
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            renderings.push(engine.encode(bytes));
        }
    }
    for response in &responses {
        for rendering in &renderings {
            assert!(
                !response.contains(rendering.as_str()),
                "the draw seed ({rendering}) was served:\n{response}"
            );
        }
    }
    server.stop().await;
}

async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(content_type, "application/problem+json");
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    if matches!(status, 429 | 503) {
        assert!(retry_after.is_some(), "Retry-After on {status}");
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_a_problem() {
    let server = TestServer::start_with(|o| {
        o.join_rate_per_ip = 1;
        o.join_burst_per_ip = 8;
    })
    .await;
    server
        .put_room("small", json!({ "capacity": 1, "maxWaiting": 1 }))
        .await;
    let c = &server.client;
    let sessions = server.url("/api/waiting-room/sessions");
    let post_json = |body: &'static str| {
        c.post(&sessions)
            .header("content-type", "application/json")
            .body(body)
    };

    // 400
    assert_problem(post_json("{not json").send().await.unwrap(), 400).await;
    assert_problem(
        post_json(r#"{"roomId": "small", "extra": 1}"#)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_problem(
        post_json(r#"{"roomId": "no spaces"}"#)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_problem(
        post_json(r#"{"roomId": "small"}"#)
            .header("Idempotency-Key", "")
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_problem(
        c.get(server.url("/api/waiting-room/sessions/bad.id"))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_problem(
        c.get(server.url(&format!("/api/waiting-room/sessions/{}", "a".repeat(129))))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    let bad_config = c
        .put(server.url("/api/waiting-room/rooms/x"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "capacity": 0 }));
    let body = assert_problem(bad_config.send().await.unwrap(), 400).await;
    assert!(body["detail"].as_str().unwrap().contains("capacity"));
    // 401
    assert_problem(
        c.get(server.url("/api/waiting-room/rooms"))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    assert_problem(
        c.get(server.url("/api/waiting-room/rooms"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    // 404
    assert_problem(
        post_json(r#"{"roomId": "nope"}"#).send().await.unwrap(),
        404,
    )
    .await;
    assert_problem(
        c.get(server.url("/api/waiting-room/sessions/wr_AAAAAAAAAAAAAAAAAAAAAAAAAAA"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_problem(
        c.get(server.url("/api/waiting-room/sessions/unknown"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_problem(
        c.get(server.url("/nothing/here")).send().await.unwrap(),
        404,
    )
    .await;
    assert_problem(
        c.get(server.url("/api/waiting-room/rooms/nope"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    // 405
    let response = c
        .put(server.url("/api/waiting-room/sessions"))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("allow").is_some());
    assert_problem(response, 405).await;
    assert_problem(
        c.post(server.url("/api/waiting-room/sessions/wr_x"))
            .send()
            .await
            .unwrap(),
        405,
    )
    .await;
    // An action takes POST only: GET and DELETE of `{id}:heartbeat` are 405 with `Allow: POST`.
    for request in [
        c.get(server.url("/api/waiting-room/sessions/wr_x:heartbeat")),
        c.delete(server.url("/api/waiting-room/sessions/wr_x:complete")),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()["allow"], "POST");
        assert_problem(response, 405).await;
    }
    // 413
    let big = format!(r#"{{"roomId": "small", "pad": "{}"}}"#, "x".repeat(5000));
    assert_problem(
        c.post(&sessions)
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await
            .unwrap(),
        413,
    )
    .await;
    // 415
    assert_problem(
        c.post(&sessions)
            .header("content-type", "text/plain")
            .body(r#"{"roomId":"small"}"#)
            .send()
            .await
            .unwrap(),
        415,
    )
    .await;
    assert_problem(
        c.post(&sessions)
            .body(r#"{"roomId":"small"}"#)
            .send()
            .await
            .unwrap(),
        415,
    )
    .await;
    // 503: maxWaiting reached (one active, one waiting).
    assert_eq!(server.join("small").await.0, 201);
    assert_eq!(server.join("small").await.0, 201);
    let body = assert_problem(
        post_json(r#"{"roomId": "small"}"#).send().await.unwrap(),
        503,
    )
    .await;
    assert!(body["title"].as_str().unwrap().contains("full"));
    // 429: the burst of 8 joins per address is used up by now.
    let mut limited = None;
    for _ in 0..10 {
        let response = post_json(r#"{"roomId": "small"}"#).send().await.unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    assert_problem(limited.expect("rate limited"), 429).await;
    server.stop().await;
}

/// What the contract test (scripts/contract, schemathesis) found the server and its OpenAPI
/// document disagreeing on, answered as the document now says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_as_its_document_says() {
    let server = TestServer::start().await;
    let c = &server.client;
    let method = |name: &str, path: &str| {
        c.request(
            reqwest::Method::from_bytes(name.as_bytes()).unwrap(),
            server.url(path),
        )
    };
    // `Allow` names the methods of the path asked, not those of the route it shares.
    for (name, path, allow) in [
        (
            "PUT",
            "/api/waiting-room/sessions/wr_x",
            "GET, HEAD, DELETE",
        ),
        (
            "OPTIONS",
            "/api/waiting-room/sessions/wr_x",
            "GET, HEAD, DELETE",
        ),
        (
            "POST",
            "/api/waiting-room/sessions/wr_x",
            "GET, HEAD, DELETE",
        ),
        (
            "OPTIONS",
            "/api/waiting-room/sessions/wr_x:heartbeat",
            "POST",
        ),
        ("PATCH", "/api/waiting-room/sessions/wr_x:evict", "POST"),
        ("GET", "/api/waiting-room/sessions/wr_x:complete", "POST"),
    ] {
        let response = method(name, path).send().await.unwrap();
        assert_eq!(response.headers()["allow"], allow, "{name} {path}");
        assert_problem(response, 405).await;
    }
    // An action that does not exist is no path of the API, whatever the method.
    for name in ["GET", "POST", "OPTIONS"] {
        let response = method(name, "/api/waiting-room/sessions/wr_x:nope")
            .send()
            .await
            .unwrap();
        assert_problem(response, 404).await;
    }
    // `digest` is a boolean: `true` or `false`, nothing else.
    server.put_room("doc", json!({ "capacity": 1 })).await;
    let room = |query: &str| {
        c.get(server.url(&format!("/api/waiting-room/rooms/doc{query}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    for query in ["?digest=1", "?digest=yes", "?digest=TRUE", "?digest="] {
        assert_problem(room(query).await.unwrap(), 400).await;
    }
    for (query, has_digest) in [
        ("?digest=true", true),
        ("?digest=false", false),
        ("", false),
    ] {
        let body: Value = room(query).await.unwrap().json().await.unwrap();
        assert_eq!(
            body["stateDigest"].is_string(),
            has_digest,
            "{query}: {body}"
        );
    }
    // Integers written with a zero fraction are integers; any RFC 3339 date-time is an
    // `opensAt` (before 1970: open already).
    let body = server
        .put_room(
            "doc",
            json!({ "capacity": 2.0, "maxWaiting": 1e3, "opensAt": "1969-07-20t20:17:40.5-05:00" }),
        )
        .await;
    assert_eq!(body["config"]["capacity"], 2);
    assert_eq!(body["config"]["maxWaiting"], 1000);
    assert_eq!(body["config"]["opensAt"], "1970-01-01T00:00:00.000Z");
    for config in [
        json!({ "capacity": 2.5 }),
        json!({ "capacity": 1, "opensAt": "2027-01-15T08:00Z" }),
        json!({ "capacity": 1, "targetUrl": "https://caf\u{e9}.example/" }),
    ] {
        let response = c
            .put(server.url("/api/waiting-room/rooms/doc"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&config)
            .send()
            .await
            .unwrap();
        assert_problem(response, 400).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_token_verifies_against_the_jwks() {
    let server = TestServer::start().await;
    server.put_room("r", json!({ "capacity": 1 })).await;
    let (_, view) = server.join("r").await;
    let token = view["admissionToken"]
        .as_str()
        .expect("ACTIVE sessions carry a token");
    let jwks = server
        .client
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), 200);
    let verifier = waitroom_token::Verifier::from_jwks_json(&jwks.text().await.unwrap()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expected = waitroom_token::Expectations::new("waitroom", "r");
    let claims = verifier
        .verify(token, &expected, now)
        .expect("token verifies");
    assert_eq!(claims.sub, id(&view));
    assert!(claims.exp <= now + 300);
    let expires_at_s =
        waitroom::http::api::parse_rfc3339_ms(view["expiresAt"].as_str().unwrap()).unwrap() / 1000;
    assert!(claims.exp <= expires_at_s, "exp ≤ expiresAt");
    assert!(
        verifier
            .verify(
                token,
                &waitroom_token::Expectations::new("waitroom", "other-room"),
                now
            )
            .is_err()
    );
    // WAITING sessions have no token.
    let (_, waiting) = server.join("r").await;
    assert!(waiting["admissionToken"].is_null());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints() {
    let server = TestServer::start().await;
    server.put_room("r", json!({ "capacity": 1 })).await;
    server.join("r").await;
    server.join("r").await;
    let c = &server.client;
    assert_eq!(
        c.get(server.url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(server.url("/readyz")).send().await.unwrap().status(),
        200
    );

    // Metrics parse as Prometheus text, and carry the room's figures and request latencies.
    let text = c
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut samples = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_'),
            "bad name {name}"
        );
        samples.insert(series.to_string(), value);
    }
    assert!(text.ends_with("# EOF\n"));
    assert_eq!(
        samples.get(r#"waitroom_room_waiting{room="r"}"#),
        Some(&1.0)
    );
    assert_eq!(samples.get(r#"waitroom_room_active{room="r"}"#), Some(&1.0));
    assert_eq!(
        samples.get(r#"waitroom_room_capacity{room="r"}"#),
        Some(&1.0)
    );
    assert_eq!(samples.get(r#"waitroom_room_paused{room="r"}"#), Some(&0.0));
    assert_eq!(
        samples.get(r#"waitroom_room_admissions_total{room="r"}"#),
        Some(&1.0)
    );
    assert!(samples.contains_key(r#"waitroom_room_expired_total{room="r",reason="timeout"}"#));
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("waitroom_http_request_duration_seconds_bucket{"))
    );
    assert!(samples.contains_key("waitroom_applier_lag_milliseconds"));
    assert_eq!(samples.get("waitroom_ready"), Some(&1.0));

    // The OpenAPI document describes every endpoint.
    let doc: Value = c
        .get(server.url("/api/waiting-room/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/waiting-room/sessions",
        "/api/waiting-room/sessions/{id}",
        "/api/waiting-room/sessions/{id}:heartbeat",
        "/api/waiting-room/sessions/{id}:complete",
        "/api/waiting-room/sessions/{id}:evict",
        "/api/waiting-room/rooms",
        "/api/waiting-room/rooms/{roomId}",
        "/.well-known/jwks.json",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }

    // The placeholder page is served with a strict CSP.
    let page = c.get(server.url("/room/r")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    assert!(page.text().await.unwrap().contains("<html"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_rooms_lifecycle_and_evict() {
    let server = TestServer::start().await;
    let body = server
        .put_room("r", json!({ "capacity": 3, "paused": true }))
        .await;
    assert_eq!(body["roomId"], "r");
    assert_eq!(body["config"]["capacity"], 3);
    assert_eq!(
        body["config"]["waitingIdleTimeoutSeconds"], 120,
        "defaults filled in"
    );
    assert_eq!(body["config"]["targetUrl"], Value::Null);
    let (_, a) = server.join("r").await;
    assert_eq!(a["status"], "WAITING", "paused rooms admit nobody");
    let body = server.put_room("r", json!({ "capacity": 3 })).await;
    assert_eq!(body["stats"]["activeCount"], 1);
    let list: Value = server
        .client
        .get(server.url("/api/waiting-room/rooms"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["rooms"].as_array().unwrap().len(), 1);

    let (status, _) = server.post_action(&id(&a), "evict", None).await;
    assert_eq!(status, 401);
    let (status, evicted) = server
        .post_action(&id(&a), "evict", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(
        (status, evicted["expiredReason"].as_str()),
        (200, Some("evicted"))
    );

    let (_, b) = server.join("r").await;
    let closed: Value = server
        .client
        .delete(server.url("/api/waiting-room/rooms/r"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(closed["stats"]["expiredTotal"]["closed"], 1);
    let (_, b) = server.session(&id(&b)).await;
    assert_eq!(b["expiredReason"], "closed");
    assert_eq!(server.join("r").await.0, 404, "a closed room is unknown");
    let status = server
        .client
        .get(server.url("/api/waiting-room/rooms/r"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    server.put_room("r", json!({ "capacity": 1 })).await;
    assert_eq!(server.join("r").await.0, 201, "created afresh");
    server.stop().await;
}

/// `queueingMethod`: defaults to `fifo`, echoed in every room body; a value outside the four is
/// a `400` problem naming the field; each method acts as docs/api.md says over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queueing_methods_over_http() {
    let server = TestServer::start().await;
    let put = |room: &str, body: &'static str| {
        server
            .client
            .put(server.url(&format!("/api/waiting-room/rooms/{room}")))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
    };
    // The default, echoed in PUT, GET and the list.
    let body = server.put_room("q", json!({ "capacity": 1 })).await;
    assert_eq!(body["config"]["queueingMethod"], "fifo");
    assert_eq!(server.room("q").await["config"]["queueingMethod"], "fifo");
    // Out of the four, or not a string: a problem, and nothing changes.
    for bad in [
        r#"{"capacity": 1, "queueingMethod": "lifo"}"#,
        r#"{"capacity": 1, "queueingMethod": "FIFO"}"#,
        r#"{"capacity": 1, "queueingMethod": 1}"#,
        r#"{"capacity": 1, "queueingMethod": null}"#,
    ] {
        let problem = assert_problem(put("q", bad).send().await.unwrap(), 400).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail
                .contains(r#"queueingMethod must be "fifo", "random", "passthrough", "reject" or "inviteOnly""#),
            "{bad}: {problem}"
        );
    }
    assert_eq!(server.room("q").await["config"]["queueingMethod"], "fifo");

    // random: no positions, the same expected wait for everyone waiting.
    let body = server
        .put_room("q", json!({ "capacity": 1, "queueingMethod": "random" }))
        .await;
    assert_eq!(body["config"]["queueingMethod"], "random");
    let list: Value = server
        .client
        .get(server.url("/api/waiting-room/rooms"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["rooms"][0]["config"]["queueingMethod"], "random");
    let (status, first) = server.join("q").await;
    assert_eq!((status, first["status"].as_str()), (201, Some("ACTIVE")));
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let (status, view) = server.join("q").await;
        assert_eq!(status, 201);
        assert_eq!(view["status"], "WAITING");
        assert!(view["position"].is_null(), "{view}");
        waiting.push(id(&view));
    }
    for session in &waiting {
        let (_, view) = server.session(session).await;
        assert!(view["position"].is_null(), "{view}");
        assert_eq!(view["waitingCount"], 4);
    }
    let token = first["admissionToken"].as_str().unwrap().to_string();
    let (status, _) = server
        .post_action(&id(&first), "complete", Some(&token))
        .await;
    assert_eq!(status, 200);
    let room = server.room("q").await;
    assert_eq!(
        (
            room["stats"]["activeCount"].as_u64(),
            room["stats"]["waitingCount"].as_u64()
        ),
        (Some(1), Some(3)),
        "one of the four was drawn: {room}"
    );

    // random → fifo: positions again, in join order.
    server.put_room("q", json!({ "capacity": 1 })).await;
    let mut positions = Vec::new();
    for session in &waiting {
        let (_, view) = server.session(session).await;
        if view["status"] == "WAITING" {
            positions.push(view["position"].as_u64().unwrap());
        }
    }
    assert_eq!(positions, [0, 1, 2]);

    // reject: joins refused with a 403 problem (no Retry-After), existing sessions carry on,
    // a replay of a key still answers its session.
    let (status, keyed) = server.join_with_key("q", Some("k-1")).await;
    assert_eq!(status, 201);
    let body = server
        .put_room("q", json!({ "capacity": 1, "queueingMethod": "reject" }))
        .await;
    assert_eq!(body["config"]["queueingMethod"], "reject");
    assert!(body["stats"]["newcomerWaitSeconds"].is_null(), "{body}");
    let response = server
        .client
        .post(server.url("/api/waiting-room/sessions"))
        .json(&json!({ "roomId": "q" }))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("retry-after").is_none());
    let problem = assert_problem(response, 403).await;
    assert_eq!(
        problem["type"],
        "https://waitroom.dev/problems/joins-refused"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("reject"),
        "{problem}"
    );
    let (status, replayed) = server.join_with_key("q", Some("k-1")).await;
    assert_eq!((status, id(&replayed)), (200, id(&keyed)));
    let (status, view) = server.heartbeat(&id(&keyed)).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("WAITING")));
    assert_eq!(view["position"], 3);

    // passthrough: everyone waiting admitted at once, past capacity; newcomers too.
    let body = server
        .put_room(
            "q",
            json!({ "capacity": 1, "queueingMethod": "passthrough" }),
        )
        .await;
    assert_eq!(body["config"]["queueingMethod"], "passthrough");
    assert_eq!(body["stats"]["waitingCount"], 0);
    assert_eq!(body["stats"]["activeCount"], 5);
    assert_eq!(body["stats"]["newcomerWaitSeconds"], 0);
    let (status, view) = server.join("q").await;
    assert_eq!((status, view["status"].as_str()), (201, Some("ACTIVE")));
    assert!(
        view["admissionToken"].is_string(),
        "tokens are still issued"
    );
    assert_eq!(server.room("q").await["stats"]["activeCount"], 6);
    server.stop().await;
}

/// Passes: `POST …/rooms/{id}/passes` answers the codes once; a join with one is admitted at
/// once past a full room and uses it; a used, unknown, or other room's pass is a `403`
/// `pass-invalid` that changes nothing; an `inviteOnly` room refuses joins without a pass
/// (`403` `pass-required`); a keyed join with a pass replays; every error of the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_over_http() {
    let server = TestServer::start().await;
    let issue = |room: &str, body: Value| {
        server
            .client
            .post(server.url(&format!("/api/waiting-room/rooms/{room}/passes")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
    };
    let join = |room: &str, pass: &str| {
        server
            .client
            .post(server.url("/api/waiting-room/sessions"))
            .json(&json!({ "roomId": room, "pass": pass }))
    };
    server.put_room("p", json!({ "capacity": 1 })).await;
    server.put_room("other", json!({ "capacity": 1 })).await;
    let (_, first) = server.join("p").await;
    assert_eq!(first["status"], "ACTIVE");
    let (_, second) = server.join("p").await;
    assert_eq!(second["position"], 0);

    let response = issue("p", json!({ "count": 3, "expiresInSeconds": 3600 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["roomId"], "p");
    let codes: Vec<String> = body["passes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 3);
    assert!(codes.iter().all(|c| c.len() == 22));
    assert_eq!(server.room("p").await["stats"]["passesOutstanding"], 3);
    let expires = body["expiresAt"].as_str().unwrap();
    assert!(expires.ends_with('Z'), "{expires}");
    // JSON has one kind of number: 1.0 and 60.0 are the integers 1 and 60 (JSON Schema's
    // `integer`); a fraction is a 400.
    let response = issue("other", json!({ "count": 1.0, "expiresInSeconds": 60.0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = issue("other", json!({ "count": 1, "expiresInSeconds": 60.5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // 64 characters of more than one byte each are a well-formed pass (the document counts
    // characters), just not a known one.
    let response = join("p", &"é".repeat(64)).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let response = join("p", &"é".repeat(65)).send().await.unwrap();
    assert_eq!(response.status(), 400);

    // Admitted at once, past the full room; the line is untouched.
    let response = join("p", &codes[0]).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["status"], "ACTIVE", "{view}");
    assert!(view["admissionToken"].is_string());
    let (_, still) = server.session(&id(&second)).await;
    assert_eq!(still["position"], 0);
    let room = server.room("p").await;
    assert_eq!(room["stats"]["activeCount"], 2);
    assert_eq!(room["stats"]["passesOutstanding"], 2, "the pass was used");

    // Used, unknown, another room's: 403 pass-invalid, and nothing changes.
    for (room, pass) in [
        ("p", codes[0].as_str()),
        ("p", "not-a-pass"),
        ("other", codes[1].as_str()),
    ] {
        let problem = assert_problem(join(room, pass).send().await.unwrap(), 403).await;
        assert_eq!(
            problem["type"],
            "https://waitroom.dev/problems/pass-invalid"
        );
    }
    let room = server.room("p").await;
    assert_eq!(
        (
            room["stats"]["activeCount"].as_u64(),
            room["stats"]["waitingCount"].as_u64()
        ),
        (Some(2), Some(1))
    );
    // A malformed pass: 400.
    let problem = assert_problem(join("p", "").send().await.unwrap(), 400).await;
    assert!(problem["detail"].as_str().unwrap().contains("pass"));

    // A keyed join with a pass replays, though the pass is used.
    let keyed = || {
        server
            .client
            .post(server.url("/api/waiting-room/sessions"))
            .header("idempotency-key", "pass-key")
            .json(&json!({ "roomId": "p", "pass": codes[1] }))
    };
    let response = keyed().send().await.unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let response = keyed().send().await.unwrap();
    assert_eq!(response.status(), 200);
    let replayed: Value = response.json().await.unwrap();
    assert_eq!(id(&replayed), id(&created));

    // Invite-only: no join without a pass; with one, admitted.
    let body = server
        .put_room(
            "p",
            json!({ "capacity": 1, "queueingMethod": "inviteOnly" }),
        )
        .await;
    assert_eq!(body["config"]["queueingMethod"], "inviteOnly");
    let response = server
        .client
        .post(server.url("/api/waiting-room/sessions"))
        .json(&json!({ "roomId": "p" }))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 403).await;
    assert_eq!(
        problem["type"],
        "https://waitroom.dev/problems/pass-required"
    );
    let response = join("p", &codes[2]).send().await.unwrap();
    assert_eq!(response.status(), 201);

    // The endpoint's errors.
    let problem = assert_problem(
        issue("p", json!({ "count": 0, "expiresInSeconds": 60 }))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("count"));
    for body in [
        json!({ "count": 10001, "expiresInSeconds": 60 }),
        json!({ "count": 1, "expiresInSeconds": 0 }),
        json!({ "count": 1, "expiresInSeconds": 2592001 }),
        json!({ "count": 1 }),
        json!({ "count": 1, "expiresInSeconds": 60, "extra": 1 }),
    ] {
        assert_problem(issue("p", body).send().await.unwrap(), 400).await;
    }
    assert_problem(
        issue("nope", json!({ "count": 1, "expiresInSeconds": 60 }))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_problem(
        issue("bad room!", json!({ "count": 1, "expiresInSeconds": 60 }))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    let response = server
        .client
        .post(server.url("/api/waiting-room/rooms/p/passes"))
        .json(&json!({ "count": 1, "expiresInSeconds": 60 }))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401).await;
    let response = server
        .client
        .get(server.url("/api/waiting-room/rooms/p/passes"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_problem(response, 405).await;
    let response = server
        .client
        .post(server.url("/api/waiting-room/rooms/p/passes"))
        .bearer_auth(ADMIN_TOKEN)
        .body("count=1")
        .send()
        .await
        .unwrap();
    assert_problem(response, 415).await;
    // Up to the room's limit, then 409 too-many-passes.
    for _ in 0..10 {
        let response = issue("p", json!({ "count": 10000, "expiresInSeconds": 60 }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let problem = assert_problem(
        issue("p", json!({ "count": 1, "expiresInSeconds": 60 }))
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;
    assert_eq!(
        problem["type"],
        "https://waitroom.dev/problems/too-many-passes"
    );
    server.stop().await;
}

/// Join challenges over HTTP: `challengeDifficultyBits` in the room's configuration; the
/// challenge endpoint and each of its errors; a join without a challenge, with a solved one, with
/// every kind of bad one (each its `403` problem), a replay (the same session, never a second
/// place), a join with a pass (no challenge needed), and the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_over_http() {
    use waitroom_load::pow::{solve, work_bits};
    let key = waitroom_token::SigningKey::generate().unwrap();
    let pem = key.to_pkcs8_pem().to_string();
    let server = TestServer::start_with(|options| options.signing_key = Some(pem)).await;
    let get_challenge = |room: &str| {
        server
            .client
            .post(server.url(&format!("/api/waiting-room/rooms/{room}/challenge")))
            .send()
    };
    let join = |body: Value| {
        server
            .client
            .post(server.url("/api/waiting-room/sessions"))
            .json(&body)
            .send()
    };
    async fn problem(response: reqwest::Response, status: u16, kind: &str) -> Value {
        assert_eq!(response.status(), status, "{kind}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{kind}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["type"],
            format!("https://waitroom.dev/problems/{kind}"),
            "{body}"
        );
        body
    }

    // The configuration: 0..=28, 0 (the default) is no challenge.
    let room = server
        .put_room(
            "ch",
            json!({ "capacity": 1, "challengeDifficultyBits": 12 }),
        )
        .await;
    assert_eq!(room["config"]["challengeDifficultyBits"], 12);
    assert_eq!(
        server.room("ch").await["config"]["challengeDifficultyBits"],
        12
    );
    let plain = server.put_room("plain", json!({ "capacity": 1 })).await;
    assert_eq!(plain["config"]["challengeDifficultyBits"], 0);
    server
        .put_room(
            "other",
            json!({ "capacity": 1, "challengeDifficultyBits": 1 }),
        )
        .await;
    for bits in [json!(29), json!(-1), json!(1.5), json!("12")] {
        let response = server
            .client
            .put(server.url("/api/waiting-room/rooms/bad"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "capacity": 1, "challengeDifficultyBits": bits }))
            .send()
            .await
            .unwrap();
        let body = problem(response, 400, "bad-request").await;
        // In range as an integer: the check names the field.
        if bits == 29 {
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("challengeDifficultyBits"),
                "{body}"
            );
        }
    }

    // The endpoint and its errors.
    let response = get_challenge("ch").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let issued: Value = response.json().await.unwrap();
    assert_eq!(issued["roomId"], "ch");
    assert_eq!(issued["difficultyBits"], 12);
    let challenge = issued["challenge"].as_str().unwrap().to_string();
    assert_eq!(challenge.len(), 72);
    let expires = issued["expiresAt"].as_str().unwrap();
    let expires_ms = expires.parse::<jiff::Timestamp>().unwrap().as_millisecond() as u64;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        (now_ms + 590_000..=now_ms + 600_000).contains(&expires_ms),
        "{expires}"
    );
    problem(
        get_challenge("plain").await.unwrap(),
        409,
        "challenge-not-required",
    )
    .await;
    problem(get_challenge("nope").await.unwrap(), 404, "unknown-room").await;
    problem(get_challenge("bad%20id").await.unwrap(), 400, "bad-request").await;
    let response = server
        .client
        .get(server.url("/api/waiting-room/rooms/ch/challenge"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    problem(response, 405, "method-not-allowed").await;

    // A join without a challenge, or with half of one.
    problem(
        join(json!({ "roomId": "ch" })).await.unwrap(),
        403,
        "challenge-required",
    )
    .await;
    problem(
        join(json!({ "roomId": "ch", "challenge": challenge }))
            .await
            .unwrap(),
        403,
        "challenge-required",
    )
    .await;
    // Malformed: 400.
    for body in [
        json!({ "roomId": "ch", "challenge": "", "solution": "1" }),
        json!({ "roomId": "ch", "challenge": "a".repeat(129), "solution": "1" }),
        json!({ "roomId": "ch", "challenge": challenge, "solution": "" }),
        json!({ "roomId": "ch", "challenge": challenge, "solution": "1".repeat(65) }),
        json!({ "roomId": "ch", "challenge": 7, "solution": "1" }),
    ] {
        problem(join(body).await.unwrap(), 400, "bad-request").await;
    }

    // Short of the difficulty.
    let weak = (0u64..)
        .map(|n| n.to_string())
        .find(|s| work_bits(&challenge, s) < 12)
        .unwrap();
    let body = problem(
        join(json!({ "roomId": "ch", "challenge": challenge, "solution": weak }))
            .await
            .unwrap(),
        403,
        "challenge-insufficient-work",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("asks for 12"),
        "{body}"
    );
    // Not a challenge of this service: altered, or made up.
    let mut altered = challenge.clone().into_bytes();
    altered[40] = if altered[40] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let solved_altered = solve(&altered, 12, 0, 1 << 26).unwrap().solution;
    problem(
        join(json!({ "roomId": "ch", "challenge": altered, "solution": solved_altered }))
            .await
            .unwrap(),
        403,
        "challenge-invalid",
    )
    .await;
    problem(
        join(json!({ "roomId": "ch", "challenge": "x".repeat(72), "solution": "1" }))
            .await
            .unwrap(),
        403,
        "challenge-invalid",
    )
    .await;
    // Another room's.
    let theirs: Value = get_challenge("other").await.unwrap().json().await.unwrap();
    let theirs = theirs["challenge"].as_str().unwrap().to_string();
    let solved_theirs = solve(&theirs, 12, 0, 1 << 26).unwrap().solution;
    problem(
        join(json!({ "roomId": "ch", "challenge": theirs, "solution": solved_theirs }))
            .await
            .unwrap(),
        403,
        "challenge-wrong-room",
    )
    .await;
    // Expired: one this node's key signed 11 minutes ago.
    let room_id = waitroom_core::RoomId::new("ch").unwrap();
    let old = waitroom::challenge::Challenges::new(&key, &[])
        .issue(&room_id, 12, now_ms - 11 * 60 * 1000)
        .challenge;
    let solved_old = solve(&old, 12, 0, 1 << 26).unwrap().solution;
    problem(
        join(json!({ "roomId": "ch", "challenge": old, "solution": solved_old }))
            .await
            .unwrap(),
        403,
        "challenge-expired",
    )
    .await;
    assert_eq!(server.room("ch").await["stats"]["activeCount"], 0);

    // Solved: a place; the same solution again, or another solution of the same challenge,
    // from any client: that same session, never a second place.
    let solved = solve(&challenge, 12, 0, 1 << 26).unwrap();
    let response =
        join(json!({ "roomId": "ch", "challenge": challenge, "solution": solved.solution }))
            .await
            .unwrap();
    assert_eq!(response.status(), 201);
    let first: Value = response.json().await.unwrap();
    assert_eq!(first["status"], "ACTIVE");
    let another = solve(&challenge, 12, solved.tries, 1 << 26).unwrap();
    for solution in [&solved.solution, &another.solution] {
        let response =
            join(json!({ "roomId": "ch", "challenge": challenge, "solution": solution }))
                .await
                .unwrap();
        assert_eq!(response.status(), 200, "a replay");
        let again: Value = response.json().await.unwrap();
        assert_eq!(again["waitingRoomSessionId"], first["waitingRoomSessionId"]);
    }
    // After the session left, a replay still gets it back (ended), not a new place.
    server.leave(&id(&first)).await;
    let response =
        join(json!({ "roomId": "ch", "challenge": challenge, "solution": solved.solution }))
            .await
            .unwrap();
    assert_eq!(response.status(), 200);
    let again: Value = response.json().await.unwrap();
    assert_eq!(again["waitingRoomSessionId"], first["waitingRoomSessionId"]);
    assert_eq!(again["status"], "EXPIRED");
    let stats = &server.room("ch").await["stats"];
    assert_eq!(
        (
            stats["activeCount"].as_u64(),
            stats["waitingCount"].as_u64()
        ),
        (Some(0), Some(0))
    );

    // A new challenge, a new place.
    let fresh: Value = get_challenge("ch").await.unwrap().json().await.unwrap();
    let fresh = fresh["challenge"].as_str().unwrap().to_string();
    let solution = solve(&fresh, 12, 0, 1 << 26).unwrap().solution;
    let response = join(json!({ "roomId": "ch", "challenge": fresh, "solution": solution }))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let second: Value = response.json().await.unwrap();
    assert_ne!(
        second["waitingRoomSessionId"],
        first["waitingRoomSessionId"]
    );

    // A join with a pass needs no challenge.
    let passes: Value = server
        .client
        .post(server.url("/api/waiting-room/rooms/ch/passes"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "count": 1, "expiresInSeconds": 60 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = join(json!({ "roomId": "ch", "pass": passes["passes"][0] }))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // A room without a challenge ignores one.
    let response = join(json!({ "roomId": "plain", "challenge": fresh, "solution": "1" }))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (series, value) in [
        ("waitroom_challenges_issued_total", 3),
        ("waitroom_join_challenges_total{result=\"passed\"}", 2),
        ("waitroom_join_challenges_total{result=\"replayed\"}", 3),
        ("waitroom_join_challenges_total{result=\"required\"}", 2),
        ("waitroom_join_challenges_total{result=\"invalid\"}", 2),
        ("waitroom_join_challenges_total{result=\"wrong_room\"}", 1),
        ("waitroom_join_challenges_total{result=\"expired\"}", 1),
        (
            "waitroom_join_challenges_total{result=\"insufficient_work\"}",
            1,
        ),
    ] {
        assert!(
            metrics.contains(&format!("{series} {value}\n")),
            "{series} {value}: {metrics}"
        );
    }
    server.stop().await;

    // Challenges count against the per-address join rate.
    let server = TestServer::start_with(|options| {
        options.join_rate_per_ip = 1;
        options.join_burst_per_ip = 1;
    })
    .await;
    server
        .put_room("ch", json!({ "capacity": 1, "challengeDifficultyBits": 1 }))
        .await;
    let challenge = |server: &TestServer| {
        server
            .client
            .post(server.url("/api/waiting-room/rooms/ch/challenge"))
            .send()
    };
    assert_eq!(challenge(&server).await.unwrap().status(), 200);
    let response = challenge(&server).await.unwrap();
    assert!(response.headers().contains_key("retry-after"));
    problem(response, 429, "rate-limited").await;
    server.stop().await;
}

/// The external join verifier (`--join-verifier-url`) against a real HTTP server on 127.0.0.1:
/// it gets the join's room, address, user agent and headers; an allow lets the join in, a deny
/// is a `403` `join-denied`; a verifier slower than the timeout (or down) lets joins in when the
/// node fails open and refuses them (`503` `join-verifier-unavailable`) when it fails closed; a
/// join with a pass is not asked about; every outcome is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_verifier_allows_denies_and_fails_open_or_closed() {
    use axum::routing::post;
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = |seen: Arc<Mutex<Vec<Value>>>, answer: Value, delay_ms: u64| {
        move |axum::Json(body): axum::Json<Value>| {
            let seen = seen.clone();
            let answer = answer.clone();
            async move {
                seen.lock().unwrap().push(body);
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                axum::Json(answer)
            }
        }
    };
    let app = axum::Router::new()
        .route(
            "/allow",
            post(record(seen.clone(), json!({ "allow": true }), 0)),
        )
        .route(
            "/deny",
            post(record(
                seen.clone(),
                json!({ "allow": false, "reason": "known bot network" }),
                0,
            )),
        )
        .route(
            "/slow",
            post(record(seen.clone(), json!({ "allow": true }), 3_000)),
        )
        .route("/garbage", post(|| async { "not json" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let verifier = format!("http://{}", listener.local_addr().unwrap());
    let verifier_task = tokio::spawn(async move { axum::serve(listener, app).await });

    let start = |path: &str, fails: waitroom::verifier::FailMode| {
        let url = format!("{verifier}{path}");
        TestServer::start_with(move |options| {
            options.join_verifier_url = Some(url);
            options.join_verifier_timeout_ms = 300;
            options.join_verifier_fails = fails;
        })
    };
    let join = |server: &TestServer, body: Value| {
        server
            .client
            .post(server.url("/api/waiting-room/sessions"))
            .header("user-agent", "verifier-test/1.0")
            .header("accept-language", "en-GB")
            .json(&body)
            .send()
    };
    let metric = |text: &str, result: &str| -> u64 {
        let prefix = format!("waitroom_join_verifier_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix}in {text}"))
    };
    let metrics = |server: &TestServer| {
        let request = server.client.get(server.url("/metrics")).send();
        async move { request.await.unwrap().text().await.unwrap() }
    };
    use waitroom::verifier::FailMode::{Closed, Open};

    // Allow: the join goes on; the verifier saw the join's data.
    let server = start("/allow", Closed).await;
    server.put_room("v", json!({ "capacity": 1 })).await;
    let response = join(&server, json!({ "roomId": "v" })).await.unwrap();
    assert_eq!(response.status(), 201);
    let asked = seen.lock().unwrap().pop().expect("the verifier was asked");
    assert_eq!(asked["roomId"], "v");
    assert_eq!(asked["clientIp"], "127.0.0.1");
    assert_eq!(asked["userAgent"], "verifier-test/1.0");
    assert_eq!(asked["headers"]["accept-language"], "en-GB");
    assert!(asked["headers"]["referer"].is_null(), "{asked}");
    assert_eq!(metric(&metrics(&server).await, "allow"), 1);
    server.stop().await;

    // Deny: a 403 with the reason; nothing joined. A join with a pass is not asked about.
    let server = start("/deny", Open).await;
    server.put_room("v", json!({ "capacity": 1 })).await;
    let response = join(&server, json!({ "roomId": "v" })).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "https://waitroom.dev/problems/join-denied");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("known bot network")
    );
    assert_eq!(server.room("v").await["stats"]["waitingCount"], 0);
    assert_eq!(server.room("v").await["stats"]["activeCount"], 0);
    let passes: Value = server
        .client
        .post(server.url("/api/waiting-room/rooms/v/passes"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "count": 1, "expiresInSeconds": 60 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let asked_before = seen.lock().unwrap().len();
    let response = join(
        &server,
        json!({ "roomId": "v", "pass": passes["passes"][0] }),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        seen.lock().unwrap().len(),
        asked_before,
        "a pass is not asked about"
    );
    assert_eq!(metric(&metrics(&server).await, "deny"), 1);
    server.stop().await;

    // Slower than the timeout, or an unreadable answer: open lets the join in (in about the
    // timeout, not the verifier's 3 s)...
    for path in ["/slow", "/garbage"] {
        let server = start(path, Open).await;
        server.put_room("v", json!({ "capacity": 1 })).await;
        let started = std::time::Instant::now();
        let response = join(&server, json!({ "roomId": "v" })).await.unwrap();
        assert_eq!(response.status(), 201, "{path}");
        assert!(
            started.elapsed() < Duration::from_millis(2_500),
            "{path}: {:?}",
            started.elapsed()
        );
        assert_eq!(metric(&metrics(&server).await, "failed_open"), 1, "{path}");
        server.stop().await;
    }
    // ...closed refuses it.
    let server = start("/slow", Closed).await;
    server.put_room("v", json!({ "capacity": 1 })).await;
    let response = join(&server, json!({ "roomId": "v" })).await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://waitroom.dev/problems/join-verifier-unavailable"
    );
    assert_eq!(server.room("v").await["stats"]["activeCount"], 0);
    assert_eq!(metric(&metrics(&server).await, "failed_closed"), 1);
    server.stop().await;
    verifier_task.abort();
}

/// An `https://` join verifier on 127.0.0.1, with a certificate from a CA made for the test: a
/// node given that CA (`--join-verifier-ca-file`) asks it over TLS and follows its deny; a node
/// that trusts only the system's roots cannot check the certificate, so its joins fail open or
/// closed as configured, counted as failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_join_verifier_is_asked_over_tls_with_its_ca() {
    use http_body_util::{BodyExt as _, Full};
    use std::sync::{Arc, Mutex};
    use tokio_rustls::rustls;

    // A CA, and the verifier's certificate for localhost signed by it.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("verifier-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let verifier_task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate ends the handshake here.
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                let body = request.into_body().collect().await?.to_bytes();
                                seen.lock()
                                    .unwrap()
                                    .push(serde_json::from_slice::<Value>(&body).unwrap());
                                let answer = json!({ "allow": false, "reason": "seen over TLS" });
                                Ok::<_, hyper::Error>(
                                    http::Response::builder()
                                        .header("content-type", "application/json")
                                        .body(Full::new(bytes::Bytes::from(answer.to_string())))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    };
    let url = format!("https://localhost:{port}/verify");
    let start = |ca_file: Option<std::path::PathBuf>, fails: waitroom::verifier::FailMode| {
        let url = url.clone();
        TestServer::start_with(move |options| {
            options.join_verifier_url = Some(url);
            options.join_verifier_timeout_ms = 2_000;
            options.join_verifier_fails = fails;
            options.join_verifier_ca_file = ca_file;
        })
    };
    let join = |server: &TestServer| {
        server
            .client
            .post(server.url("/api/waiting-room/sessions"))
            .json(&json!({ "roomId": "t" }))
            .send()
    };
    let verifier_metric = |server: &TestServer, result: &'static str| {
        let request = server.client.get(server.url("/metrics")).send();
        async move {
            let text = request.await.unwrap().text().await.unwrap();
            let prefix = format!("waitroom_join_verifier_total{{result=\"{result}\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&prefix))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {prefix}in {text}"))
        }
    };
    use waitroom::verifier::FailMode::{Closed, Open};

    // With the CA: asked over TLS, and its deny is the join's answer.
    let server = start(Some(ca_file.clone()), Open).await;
    server.put_room("t", json!({ "capacity": 1 })).await;
    let response = join(&server).await.unwrap();
    assert_eq!(response.status(), 403);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "https://waitroom.dev/problems/join-denied");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("seen over TLS"),
        "{problem}"
    );
    assert_eq!(seen.lock().unwrap().pop().unwrap()["roomId"], "t");
    assert_eq!(verifier_metric(&server, "deny").await, 1);
    server.stop().await;

    // Without it, the certificate is not trusted: nothing reaches the verifier, and the join
    // goes on (open) or is refused (closed), counted as a failure either way.
    for (fails, status, result) in [(Open, 201, "failed_open"), (Closed, 503, "failed_closed")] {
        let server = start(None, fails).await;
        server.put_room("t", json!({ "capacity": 1 })).await;
        let response = join(&server).await.unwrap();
        assert_eq!(response.status(), status, "{fails:?}");
        assert_eq!(verifier_metric(&server, result).await, 1, "{fails:?}");
        server.stop().await;
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "an untrusted verifier was sent a join"
    );
    verifier_task.abort();
}

/// `waitroom load` joins a room that asks for a challenge: each simulated user gets one, solves
/// it natively and joins with it, as the waiting page does; everyone gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_solves_challenges_to_join() {
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: waitroom_load::Args,
    }
    let server = TestServer::start().await;
    server
        .put_room(
            "load-ch",
            json!({ "capacity": 5, "challengeDifficultyBits": 10, "heartbeatIntervalSeconds": 1 }),
        )
        .await;
    let url = server.url("");
    let options = Cli::try_parse_from([
        "load",
        "--url",
        url.as_str(),
        "--admin-token",
        ADMIN_TOKEN,
        "--room",
        "load-ch",
        "--no-configure",
        "--users",
        "20",
        "--hold-seconds",
        "0.02..0.1",
        "--seed",
        "1",
        "--duration-max-seconds",
        "60",
    ])
    .unwrap()
    .args
    .to_options()
    .unwrap();
    let report = waitroom_load::run(options, &waitroom_load::NoProgress)
        .await
        .unwrap();
    let users = &report.metrics.users;
    assert_eq!(
        (users.joined, users.admitted),
        (20, 20),
        "{}",
        report.summary()
    );
    let stats = &server.room("load-ch").await["stats"];
    assert_eq!(stats["admittedTotal"], 20);
    server.stop().await;
}

/// `events` in a room's configuration: accepted and answered in UTC, replaced whole by the next
/// `PUT`, and every rule broken is a `400` problem naming the event and the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_configured_and_validated_over_http() {
    let server = TestServer::start().await;
    let at = |hour: u32, minute: u32| format!("2030-06-01T{hour:02}:{minute:02}:00+02:00");
    let utc = |hour: u32, minute: u32| format!("2030-06-01T{:02}:{minute:02}:00.000Z", hour - 2);
    let presale = json!({ "name": "presale", "startsAt": at(9, 0), "endsAt": at(10, 0),
        "capacity": 200, "preQueueMinutes": 30 });
    let general = json!({ "name": "general.1", "startsAt": at(12, 0), "endsAt": at(16, 0),
        "capacity": 1000, "admitPerMinute": 3000, "preQueueMinutes": 60 });
    let body = server
        .put_room(
            "day",
            json!({ "capacity": 50, "events": [presale.clone(), general.clone()] }),
        )
        .await;
    let events = &body["config"]["events"];
    assert_eq!(
        events,
        &json!([
            { "name": "presale", "startsAt": utc(9, 0), "endsAt": utc(10, 0), "capacity": 200,
              "admitPerMinute": null, "preQueueMinutes": 30 },
            { "name": "general.1", "startsAt": utc(12, 0), "endsAt": utc(16, 0), "capacity": 1000,
              "admitPerMinute": 3000, "preQueueMinutes": 60 },
        ])
    );
    let stats = &body["stats"];
    assert_eq!(stats["currentEvent"], Value::Null);
    assert_eq!(stats["nextEvent"], "presale");
    assert_eq!(stats["capacityNow"], 50);
    assert_eq!(stats["admitPerMinuteNow"], Value::Null);
    assert_eq!(server.room("day").await["config"]["events"], *events);
    // The answered configuration, sent back, is the same configuration.
    let again = server.put_room("day", body["config"].clone()).await;
    assert_eq!(again["config"], body["config"]);
    // A PUT replaces the whole list: without `events`, none.
    let cleared = server.put_room("day", json!({ "capacity": 50 })).await;
    assert_eq!(cleared["config"]["events"], json!([]));
    assert_eq!(cleared["stats"]["nextEvent"], Value::Null);

    let put = |config: Value| {
        server
            .client
            .put(server.url("/api/waiting-room/rooms/day"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&config)
            .send()
    };
    let with = |change: &dyn Fn(&mut Vec<Value>)| {
        let mut events = vec![presale.clone(), general.clone()];
        change(&mut events);
        json!({ "capacity": 50, "events": events })
    };
    let cases: Vec<(Value, &str)> = vec![
        (with(&|e| e[0]["name"] = json!("")), "events[0].name"),
        (
            with(&|e| e[1]["name"] = json!("two words")),
            "events[1].name",
        ),
        (with(&|e| e[1]["name"] = json!("presale")), "events[1].name"),
        (
            with(&|e| e[0]["name"] = json!("x".repeat(65))),
            "events[0].name",
        ),
        (
            with(&|e| e[0]["endsAt"] = json!(at(9, 0))),
            "events[0].endsAt",
        ),
        (
            with(&|e| e[0]["endsAt"] = json!(at(8, 59))),
            "events[0].endsAt",
        ),
        (
            with(&|e| e[0]["startsAt"] = json!("tomorrow")),
            "events[0].startsAt",
        ),
        (
            with(&|e| e[1]["endsAt"] = json!("2030-06-01")),
            "events[1].endsAt",
        ),
        (with(&|e| e[0]["capacity"] = json!(0)), "events[0].capacity"),
        (
            with(&|e| e[0]["capacity"] = json!(1_000_001)),
            "events[0].capacity",
        ),
        (
            with(&|e| e[1]["admitPerMinute"] = json!(0)),
            "events[1].admitPerMinute",
        ),
        (
            with(&|e| e[1]["preQueueMinutes"] = json!(0)),
            "events[1].preQueueMinutes",
        ),
        (
            with(&|e| e[1]["preQueueMinutes"] = json!(1441)),
            "events[1].preQueueMinutes",
        ),
        // A pre-queue that would open before the previous event ends.
        (
            with(&|e| e[1]["preQueueMinutes"] = json!(121)),
            "events[1].preQueueMinutes",
        ),
        // Overlapping, and out of order.
        (
            with(&|e| e[1]["startsAt"] = json!(at(9, 30))),
            "events[1].startsAt",
        ),
        (with(&|e| e.swap(0, 1)), "events[1].startsAt"),
    ];
    for (config, field) in cases {
        let problem = assert_problem(put(config.clone()).await.unwrap(), 400).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.starts_with(field), "{field}: {detail} ({config})");
    }
    // More than 24 events.
    let many: Vec<Value> = (0..25)
        .map(|n| {
            let (hour, minute) = (n / 2, n % 2 * 30);
            json!({ "name": format!("e{n}"), "startsAt": at(hour, minute),
                "endsAt": at(hour, minute + 20) })
        })
        .collect();
    let problem = assert_problem(
        put(json!({ "capacity": 1, "events": many })).await.unwrap(),
        400,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("events must hold at most 24"),
        "{problem}"
    );
    assert_eq!(
        server
            .put_room("day", json!({ "capacity": 1, "events": many[..24] }))
            .await["config"]["events"]
            .as_array()
            .unwrap()
            .len(),
        24,
        "24 events fit in the body"
    );
    // Malformed events: an unknown field, a missing one, a fraction, not a list.
    for events in [
        json!([{ "name": "a", "startsAt": at(9, 0), "endsAt": at(10, 0), "nope": 1 }]),
        json!([{ "name": "a", "startsAt": at(9, 0) }]),
        json!([{ "name": "a", "startsAt": at(9, 0), "endsAt": at(10, 0), "capacity": 1.5 }]),
        json!({ "name": "a" }),
    ] {
        let problem = assert_problem(
            put(json!({ "capacity": 1, "events": events }))
                .await
                .unwrap(),
            400,
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .starts_with("invalid JSON body"),
            "{problem}"
        );
    }
    // Nothing refused changed the room.
    assert_eq!(
        server.room("day").await["config"]["events"]
            .as_array()
            .unwrap()
            .len(),
        24
    );
    server.stop().await;
}

/// An event starts on its own: its pre-queue is drawn at its start, its own capacity admits
/// people, the stats name it; at its end the room's own capacity holds again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_starts_and_admits_with_its_own_capacity() {
    let server = TestServer::start().await;
    let starts_ms = now_ms() + 2_000;
    let ends_ms = starts_ms + 2_500;
    let starts_at = waitroom::http::api::rfc3339_ms(starts_ms);
    let config = json!({
        "capacity": 1,
        "events": [
            { "name": "drop", "startsAt": starts_at,
              "endsAt": waitroom::http::api::rfc3339_ms(ends_ms),
              "capacity": 3, "preQueueMinutes": 1 },
            { "name": "later", "startsAt": waitroom::http::api::rfc3339_ms(ends_ms + 3_600_000),
              "endsAt": waitroom::http::api::rfc3339_ms(ends_ms + 7_200_000) },
        ],
    });
    let body = server.put_room("drop", config).await;
    assert_eq!(body["stats"]["nextEvent"], "drop");
    // In the event's pre-queue: nobody admitted, everyone's place still to be drawn.
    let mut sessions = Vec::new();
    for _ in 0..5 {
        let (status, view) = server.join("drop").await;
        assert_eq!(status, 201);
        assert_eq!(view["status"], "WAITING", "{view}");
        assert_eq!(view["prequeue"], true);
        assert_eq!(view["position"], Value::Null);
        assert_eq!(view["opensAt"].as_str(), Some(starts_at.as_str()));
        sessions.push(id(&view));
    }
    assert!(
        now_ms() < starts_ms,
        "the joins took too long for this test"
    );
    assert_eq!(server.room("drop").await["stats"]["activeCount"], 0);
    // At the start: drawn, and three admitted at the event's capacity.
    let room = eventually(Duration::from_secs(5), || async {
        let room = server.room("drop").await;
        (room["stats"]["currentEvent"] == "drop").then_some(room)
    })
    .await;
    assert_eq!(room["stats"]["activeCount"], 3);
    assert_eq!(room["stats"]["waitingCount"], 2);
    assert_eq!(room["stats"]["capacityNow"], 3);
    assert_eq!(room["stats"]["nextEvent"], "later");
    let views: Vec<Value> = join_all(sessions.iter().map(|s| server.session(s)))
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert!(views.iter().all(|v| v["prequeue"] == false));
    let mut positions: Vec<u64> = views
        .iter()
        .filter_map(|v| v["position"].as_u64())
        .collect();
    positions.sort_unstable();
    assert_eq!(positions, [0, 1]);
    // At the end: the room's own capacity of 1; nobody is evicted, nobody new admitted.
    let room = eventually(Duration::from_secs(6), || async {
        let room = server.room("drop").await;
        (room["stats"]["currentEvent"].is_null()).then_some(room)
    })
    .await;
    assert_eq!(room["stats"]["capacityNow"], 1);
    assert_eq!(room["stats"]["nextEvent"], "later");
    let admitted: Vec<&String> = sessions
        .iter()
        .zip(&views)
        .filter(|(_, v)| v["status"] == "ACTIVE")
        .map(|(s, _)| s)
        .collect();
    assert_eq!(admitted.len(), 3);
    for session in &admitted {
        let (status, view) = server.heartbeat(session).await;
        assert_eq!((status, view["status"].as_str()), (200, Some("ACTIVE")));
    }
    server.leave(admitted[0]).await;
    server.leave(admitted[1]).await;
    let room = server.room("drop").await;
    assert_eq!(
        room["stats"]["activeCount"], 1,
        "still at the room's capacity"
    );
    assert_eq!(room["stats"]["waitingCount"], 2);
    server.leave(admitted[2]).await;
    assert_eq!(server.room("drop").await["stats"]["activeCount"], 1);
    server.stop().await;
}

/// A room nobody is in still switches to its event on time: the node ticks it at the start and
/// the end, so the stats name the event (and its capacity is in force) when it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_room_switches_events_on_time() {
    let server = TestServer::start().await;
    let starts_ms = now_ms() + 1_000;
    let config = json!({
        "capacity": 1,
        "events": [{ "name": "soon", "startsAt": waitroom::http::api::rfc3339_ms(starts_ms),
            "endsAt": waitroom::http::api::rfc3339_ms(starts_ms + 1_500), "capacity": 9 }],
    });
    let body = server.put_room("quiet", config).await;
    assert_eq!(body["stats"]["currentEvent"], Value::Null);
    let running = eventually(Duration::from_secs(5), || async {
        let room = server.room("quiet").await;
        (room["stats"]["currentEvent"] == "soon").then_some(room)
    })
    .await;
    assert_eq!(running["stats"]["capacityNow"], 9);
    assert_eq!(running["stats"]["nextEvent"], Value::Null);
    let ended = eventually(Duration::from_secs(5), || async {
        let room = server.room("quiet").await;
        room["stats"]["currentEvent"].is_null().then_some(room)
    })
    .await;
    assert_eq!(ended["stats"]["capacityNow"], 1);
    server.stop().await;
}
