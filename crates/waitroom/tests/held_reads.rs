//! Held status reads (`GET /api/waiting-room/sessions/{id}?waitSeconds=`): a read of a WAITING
//! session whose view says `turnSoon` answers when its turn comes, or when the wait passes; one
//! whose view does not is answered at once; bad waits are `400`s; past `--held-reads-max` a read
//! is answered at once.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, id};
use serde_json::{Value, json};

async fn held_read(server: &TestServer, id: &str, query: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let response = server
        .client
        .get(server.url(&format!("/api/waiting-room/sessions/{id}?{query}")))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("GET session");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

fn room_config() -> Value {
    json!({
        "capacity": 1,
        "heartbeatIntervalSeconds": 10,
        "waitingIdleTimeoutSeconds": 600,
        "activeIdleTimeoutSeconds": 600,
        "maxActiveSeconds": 3600,
    })
}

/// The read of the next in line, held for up to 8 s, answers ACTIVE (with a token) as soon as the
/// one ahead completes — not when the wait passes; the metric counts it while it is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_read_answers_when_the_turn_comes() {
    let server = TestServer::start().await;
    server.put_room("front", room_config()).await;
    let (_, first) = server.join("front").await;
    let (_, second) = server.join("front").await;
    assert_eq!(first["status"], "ACTIVE");
    assert_eq!(second["status"], "WAITING");
    let second_id = id(&second);
    let read = {
        let server_url = server.url("");
        let client = server.client.clone();
        let second_id = second_id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let response = client
                .get(format!(
                    "{server_url}/api/waiting-room/sessions/{second_id}?waitSeconds=8"
                ))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap(), started)
        })
    };
    // The read is held: counted, and not answered.
    common::eventually(Duration::from_secs(5), || async {
        (server.node.metrics.status_reads_held.get() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!read.is_finished(), "answered before anything changed");
    let completed_at = Instant::now();
    let (status, _) = server
        .post_action(&id(&first), "complete", first["admissionToken"].as_str())
        .await;
    assert_eq!(status, 200);
    let (status, view, started) = read.await.unwrap();
    let answered_at = Instant::now();
    assert_eq!(status, 200);
    assert_eq!(view["status"], "ACTIVE", "{view}");
    assert!(view["admissionToken"].is_string());
    // Answered by the admission, not by the end of the wait.
    assert!(
        answered_at.duration_since(started) < Duration::from_secs(7),
        "held {:?} (the complete came {:?} after the read)",
        answered_at.duration_since(started),
        completed_at.duration_since(started)
    );
    assert_eq!(server.node.metrics.status_reads_held.get(), 0);
    server.stop().await;
}

/// Nothing changes: the read answers WAITING once the wait passed. A session that is not
/// WAITING is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_read_answers_when_the_wait_passes() {
    let server = TestServer::start().await;
    server.put_room("quiet", room_config()).await;
    let (_, first) = server.join("quiet").await;
    let (_, second) = server.join("quiet").await;
    let (status, view, took) = held_read(&server, &id(&second), "waitSeconds=1").await;
    assert_eq!(status, 200);
    assert_eq!(view["status"], "WAITING");
    assert_eq!(view["position"], 0);
    assert!(took >= Duration::from_millis(900), "{took:?}");
    let (status, view, took) = held_read(&server, &id(&first), "waitSeconds=8").await;
    assert_eq!(status, 200);
    assert_eq!(view["status"], "ACTIVE");
    assert!(took < Duration::from_secs(5), "{took:?}");
    server.stop().await;
}

/// `waitSeconds` outside 1..8, or not a number: a `400` problem; other parameters are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_wait_is_a_clear_400() {
    let server = TestServer::start().await;
    server.put_room("bad", room_config()).await;
    let (_, joined) = server.join("bad").await;
    for query in [
        "waitSeconds=0",
        "waitSeconds=9",
        "waitSeconds=abc",
        "waitSeconds=-1",
    ] {
        let response = server
            .client
            .get(server.url(&format!(
                "/api/waiting-room/sessions/{}?{query}",
                id(&joined)
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("waitSeconds")
                || problem["title"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("waitSeconds"),
            "{query}: {problem}"
        );
    }
    let (status, view, _) = held_read(&server, &id(&joined), "cacheBuster=123").await;
    assert_eq!((status, view["status"].as_str()), (200, Some("ACTIVE")));
    server.stop().await;
}

/// `turnSoon` is the room's judgement of the front, estimate or not: with the one slot of a new
/// room taken (no slot freed, so no estimate), the one inside may leave any time, so the first
/// two in line are marked (the admission and the active session), and the third is not. The
/// third's read is answered at once, not held; once a slot frees and the line moves, it is marked
/// too, and its read is held until its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_turn_soon_is_held() {
    let server = TestServer::start().await;
    server.put_room("soon", room_config()).await;
    let (_, first) = server.join("soon").await;
    let mut line = Vec::new();
    for _ in 0..3 {
        let (_, joined) = server.join("soon").await;
        line.push(joined);
    }
    let soon: Vec<(Value, Value, Value)> = line
        .iter()
        .map(|view| {
            (
                view["position"].clone(),
                view["turnSoon"].clone(),
                view["estimatedWaitRange"].clone(),
            )
        })
        .collect();
    assert_eq!(
        soon,
        [
            (json!(0), json!(true), Value::Null),
            (json!(1), json!(true), Value::Null),
            (json!(2), json!(false), Value::Null),
        ]
    );
    // Not soon: answered at once, WAITING, and never counted as held.
    let (status, view, took) = held_read(&server, &id(&line[2]), "waitSeconds=8").await;
    assert_eq!((status, view["status"].as_str()), (200, Some("WAITING")));
    assert_eq!(view["turnSoon"], false);
    assert!(took < Duration::from_secs(2), "{took:?}");
    // A slot frees: the first in line is admitted; one slot freed within a second is a turnover
    // of 15 within 15 s.
    let (status, _) = server
        .post_action(&id(&first), "complete", first["admissionToken"].as_str())
        .await;
    assert_eq!(status, 200);
    let (status, view, took) = held_read(&server, &id(&line[2]), "waitSeconds=1").await;
    assert_eq!((status, view["status"].as_str()), (200, Some("WAITING")));
    assert_eq!(
        (&view["position"], &view["turnSoon"]),
        (&json!(1), &json!(true))
    );
    assert!(took >= Duration::from_millis(900), "held {took:?}");
    // An ACTIVE session's views say false.
    assert_eq!(first["turnSoon"], false);
    server.stop().await;
}

/// Past `--held-reads-max`, a read is answered at once, as without `waitSeconds`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_a_read_is_answered_at_once() {
    let server = TestServer::start_with(|options| options.held_reads_max = 1).await;
    let mut config = room_config();
    config["capacity"] = json!(2);
    server.put_room("capped", config).await;
    let (_, _first) = server.join("capped").await;
    let (_, _also) = server.join("capped").await;
    let (_, second) = server.join("capped").await;
    let (_, third) = server.join("capped").await;
    // Both would be held (`turnSoon`), but the node holds one read only.
    assert_eq!(
        (&second["turnSoon"], &third["turnSoon"]),
        (&json!(true), &json!(true))
    );
    let holder = {
        let url = server.url(&format!(
            "/api/waiting-room/sessions/{}?waitSeconds=3",
            id(&second)
        ));
        let client = server.client.clone();
        tokio::spawn(async move { client.get(url).send().await.unwrap().status().as_u16() })
    };
    common::eventually(Duration::from_secs(5), || async {
        (server.node.metrics.status_reads_held.get() == 1).then_some(())
    })
    .await;
    let (status, view, took) = held_read(&server, &id(&third), "waitSeconds=8").await;
    assert_eq!((status, view["status"].as_str()), (200, Some("WAITING")));
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(holder.await.unwrap(), 200);
    server.stop().await;
}
