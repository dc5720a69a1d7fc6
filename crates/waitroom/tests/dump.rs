//! `waitroom log dump` against what a room went through: a node (in-process) creates a room,
//! three people join, the one admitted heartbeats, one leaves, the admitted one completes, and
//! the room is closed; then the dump binary prints the room's records, which must be exactly
//! those commands, in that order, with those sessions, at increasing positions and plausible
//! times (ticks aside), and nothing of another room. On the file log, and on Kafka (tansu).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{ADMIN_TOKEN, TestServer, id};
use serde_json::{Value, json};

const ROOM: &str = "audited";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// What the room went through: the session ids of the three people, in join order.
async fn room_history(server: &TestServer) -> [String; 3] {
    server
        .put_room(
            ROOM,
            json!({ "capacity": 1, "waitingIdleTimeoutSeconds": 600, "activeIdleTimeoutSeconds": 600 }),
        )
        .await;
    server
        .put_room("other-room", json!({ "capacity": 5 }))
        .await;
    let mut views = Vec::new();
    for _ in 0..3 {
        let (status, view) = server.join(ROOM).await;
        assert_eq!(status, 201, "{view}");
        views.push(view);
    }
    let (status, _) = server.join("other-room").await;
    assert_eq!(status, 201);
    let [first, second, third] = [id(&views[0]), id(&views[1]), id(&views[2])];
    assert_eq!(views[0]["status"], "ACTIVE");
    let (status, view) = server.heartbeat(&first).await;
    assert_eq!(status, 200, "{view}");
    let token = view["admissionToken"].as_str().expect("a token").to_owned();
    let (status, _) = server.leave(&third).await;
    assert_eq!(status, 200);
    let (status, view) = server.post_action(&first, "complete", Some(&token)).await;
    assert_eq!(status, 200, "{view}");
    let response = server
        .client
        .delete(server.url(&format!("/api/waiting-room/rooms/{ROOM}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("DELETE room");
    assert!(response.status().is_success(), "{:?}", response.status());
    [first, second, third]
}

/// Runs `waitroom log dump` and returns its lines as JSON.
fn dump(backend: &str, data_dir: &Path, extra: &[&str]) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_waitroom"))
        .args(["log", "dump", "--backend", backend, "--room", ROOM])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env("WAITROOM_LOG", "warn")
        .output()
        .expect("run waitroom log dump");
    assert!(
        output.status.success(),
        "waitroom log dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

/// Checks the dump against the history (see the module documentation).
fn check(lines: &[Value], sessions: &[String; 3], started_ms: u64, ended_ms: u64) {
    let [first, second, third] = sessions;
    // Ticks and digest checks (see `node::digests`) are the nodes' own records, written by time.
    let records: Vec<&Value> = lines
        .iter()
        .filter(|line| line["command"] != "tick" && line["command"] != "check_digest")
        .collect();
    let summary: Vec<(String, Value)> = records
        .iter()
        .map(|line| {
            let command = line["command"].as_str().expect("a command").to_owned();
            let detail = match command.as_str() {
                "join" | "evict" => line["session"].clone(),
                "leave" => json!([line["session"], line["reason"]]),
                "heartbeat" => line["sessions"].clone(),
                "configure_room" => line["config"]["capacity"].clone(),
                _ => Value::Null,
            };
            (command, detail)
        })
        .collect();
    let expected = vec![
        ("configure_room".to_owned(), json!(1)),
        ("join".to_owned(), json!(first)),
        ("join".to_owned(), json!(second)),
        ("join".to_owned(), json!(third)),
        ("heartbeat".to_owned(), json!([first])),
        ("leave".to_owned(), json!([third, "left"])),
        ("leave".to_owned(), json!([first, "completed"])),
        ("close_room".to_owned(), Value::Null),
    ];
    assert_eq!(summary, expected, "the dump: {lines:#?}");
    let shard = &lines[0]["shard"];
    let mut last_position = None;
    let mut last_time = 0;
    for line in lines {
        assert_eq!(&line["shard"], shard, "a room lives in one shard");
        let position: u128 = line["position"].as_str().unwrap().parse().unwrap();
        assert!(last_position.is_none_or(|last| position > last), "{line}");
        last_position = Some(position);
        let time = line["timeMs"].as_u64().unwrap();
        assert!(
            time + 1_000 >= started_ms && time <= ended_ms + 1_000,
            "time {time} outside [{started_ms}, {ended_ms}]"
        );
        assert!(time >= last_time, "times go back: {line}");
        last_time = time;
        let parsed: jiff::Timestamp = line["time"].as_str().unwrap().parse().unwrap();
        assert_eq!(parsed.as_millisecond() as u64, time);
        assert_eq!(line["record"].as_str().unwrap().len(), 32);
    }
}

/// `--from` keeps the records at or after a time, `--to` those at or before.
fn check_time_window(all: &[Value], backend: &str, data_dir: &Path) {
    let heartbeat = all
        .iter()
        .find(|line| line["command"] == "heartbeat")
        .expect("a heartbeat");
    let at = heartbeat["time"].as_str().unwrap();
    let at_ms = heartbeat["timeMs"].as_u64().unwrap();
    let after = dump(backend, data_dir, &["--from", at]);
    let before = dump(backend, data_dir, &["--to", at]);
    assert!(
        after
            .iter()
            .all(|line| line["timeMs"].as_u64().unwrap() >= at_ms)
    );
    assert!(
        before
            .iter()
            .all(|line| line["timeMs"].as_u64().unwrap() <= at_ms)
    );
    assert!(after.iter().any(|line| line["command"] == "heartbeat"));
    assert!(before.iter().any(|line| line["command"] == "heartbeat"));
    assert_eq!(
        after.len() + before.len(),
        all.len()
            + all
                .iter()
                .filter(|line| line["timeMs"].as_u64() == Some(at_ms))
                .count(),
        "the two windows cover the dump, overlapping at the heartbeat's millisecond"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dump_of_a_file_log_is_what_the_room_went_through() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let started_ms = now_ms();
    let server = TestServer::start_with(|options| options.data_dir = data_dir.clone()).await;
    let sessions = room_history(&server).await;
    // The file log is locked by the node that runs on it.
    server.stop().await;
    let ended_ms = now_ms();
    let lines = dump("file:", &data_dir, &[]);
    check(&lines, &sessions, started_ms, ended_ms);
    assert_eq!(lines[0]["shard"], "file");
    check_time_window(&lines, "file:", &data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dump_of_a_kafka_log_is_what_the_room_went_through() {
    use waitroom_log::testkit::kafka::for_test;
    let Some(kafka) = for_test("the_dump_of_a_kafka_log_is_what_the_room_went_through") else {
        return;
    };
    let backend = format!("{}&topic=dump-{}", kafka.url(), std::process::id());
    let key = waitroom_token::SigningKey::generate().unwrap();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let started_ms = now_ms();
    let server = TestServer::start_with(|options| {
        options.data_dir = data_dir.clone();
        options.backend = backend.clone();
        options.signing_key = Some(key.to_pkcs8_pem().to_string());
    })
    .await;
    let sessions = room_history(&server).await;
    let ended_ms = now_ms();
    // A shared log is read while its node runs.
    let lines = dump(&backend, &data_dir, &[]);
    check(&lines, &sessions, started_ms, ended_ms);
    assert!(lines[0]["shard"].as_str().unwrap().starts_with("dump-"));
    check_time_window(&lines, &backend, &data_dir);
    server.stop().await;
}
