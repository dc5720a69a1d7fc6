//! `waitroom serve --config rooms.toml` over HTTP: a restart never undoes a change made through
//! the API, and a change of the file is applied at the next start. Each test restarts a real
//! server (`waitroom::server::run`) on the same data dir, once replaying the room's log and once
//! restoring the room from its snapshot (which must carry the entry the room last applied).
//!
//! The rooms file is applied entry by entry in room id order, each write awaited; so once a room
//! listed after the one under test exists, the decision about the room under test was made.
//! Each restart adds such a marker room (`zz-…`) to the file; the entry under test stays as it
//! is unless the test changes it.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const ROOM: &str = "eras-tour";
const WAIT: Duration = Duration::from_secs(10);

/// The file: the room under test with `entry` (TOML lines), then the marker rooms.
fn write_rooms_file(path: &Path, entry: &str, markers: &[&str]) {
    let mut text = format!("# rooms of the on-sale\n[rooms.{ROOM}]\n{entry}\n");
    for marker in markers {
        text.push_str(&format!("\n[rooms.{marker}]\ncapacity = 1\n"));
    }
    std::fs::write(path, text).expect("write the rooms file");
}

async fn start(data_dir: &Path, rooms_file: &Path, snapshot_every_record: bool) -> TestServer {
    let data_dir: PathBuf = data_dir.to_path_buf();
    let rooms_file = rooms_file.to_path_buf();
    TestServer::start_with(move |options| {
        options.data_dir = data_dir;
        options.rooms_file = Some(rooms_file);
        if snapshot_every_record {
            options.node.snapshot_every_records = 1;
            options.node.snapshot_jitter_ms = 0;
        }
    })
    .await
}

/// The room's configuration, once it exists.
async fn config_once_created(server: &TestServer, room: &str) -> Value {
    eventually(WAIT, || async {
        let response = server
            .client
            .get(server.url(&format!("/api/waiting-room/rooms/{room}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET room");
        if response.status() != 200 {
            return None;
        }
        let body: Value = response.json().await.expect("room body");
        Some(body["config"].clone())
    })
    .await
}

/// The room's secret draw seed as this node holds it (no endpoint serves it).
fn draw_seed(server: &TestServer) -> Option<u64> {
    let room = waitroom_core::RoomId::new(ROOM).expect("a valid id");
    let seed = server.node.room(&room)?.state.read().draw_seed();
    seed.map(|seed| seed.to_u64())
}

/// Snapshots this node stored so far (`/metrics`).
async fn snapshots_stored(server: &TestServer) -> f64 {
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix("waitroom_snapshots_stored_total "))
        .map_or(0.0, |value| value.parse().expect("a number"))
}

/// Waits until this node stored a snapshot after the API's change, when snapshots are taken at
/// every record, so that the next start restores the room from it.
async fn settle(server: &TestServer, snapshot_every_record: bool, stored_before: f64) {
    if snapshot_every_record {
        eventually(WAIT, || async {
            (snapshots_stored(server).await > stored_before).then_some(())
        })
        .await;
    }
}

async fn restart_keeps_api_changes_and_applies_file_changes(snapshot_every_record: bool) {
    init_tracing();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let files = tempfile::tempdir().expect("temp dir");
    let rooms_file = files.path().join("rooms.toml");
    let entry = "capacity = 5\ntargetUrl = \"https://tickets.example.com/select\"";
    write_rooms_file(&rooms_file, entry, &[]);

    // First start: the file creates the room.
    let server = start(data_dir.path(), &rooms_file, snapshot_every_record).await;
    let config = config_once_created(&server, ROOM).await;
    assert_eq!(
        (config["capacity"].clone(), config["paused"].clone()),
        (json!(5), json!(false))
    );
    assert!(
        draw_seed(&server).is_some(),
        "the file's entry brings a draw seed"
    );
    // An operator pauses the room and raises its capacity through the API.
    let stored = snapshots_stored(&server).await;
    let by_api = json!({
        "capacity": 7,
        "paused": true,
        "targetUrl": "https://tickets.example.com/select"
    });
    server.put_room(ROOM, by_api).await;
    settle(&server, snapshot_every_record, stored).await;
    let seed = draw_seed(&server).expect("a draw seed");
    server.stop().await;

    // Restart with the same entry: the API's settings stand.
    write_rooms_file(&rooms_file, entry, &["zz-restart-1"]);
    let server = start(data_dir.path(), &rooms_file, snapshot_every_record).await;
    config_once_created(&server, "zz-restart-1").await;
    let config = server.room(ROOM).await["config"].clone();
    assert_eq!(
        config["capacity"],
        json!(7),
        "a restart undid the API's capacity"
    );
    assert_eq!(
        config["paused"],
        json!(true),
        "a restart undid the API's pause"
    );
    assert_eq!(
        draw_seed(&server),
        Some(seed),
        "the restarted node (from the log or a snapshot) holds the same draw seed"
    );
    server.stop().await;

    // The file's entry changed: its new settings apply at the next start, over the API's.
    let changed = "capacity = 9\ntargetUrl = \"https://tickets.example.com/select\"";
    write_rooms_file(&rooms_file, changed, &["zz-restart-1"]);
    let server = start(data_dir.path(), &rooms_file, snapshot_every_record).await;
    let config = eventually(WAIT, || async {
        let config = server.room(ROOM).await["config"].clone();
        (config["capacity"] == json!(9)).then_some(config)
    })
    .await;
    assert_eq!(
        config["paused"],
        json!(false),
        "the file's entry applies whole"
    );
    // Paused again through the API; then a restart with the changed file, unchanged since.
    let stored = snapshots_stored(&server).await;
    let by_api = json!({
        "capacity": 9,
        "paused": true,
        "targetUrl": "https://tickets.example.com/select"
    });
    server.put_room(ROOM, by_api).await;
    settle(&server, snapshot_every_record, stored).await;
    server.stop().await;

    // Formatting and comments are not a change: only the entry's settings count.
    let reformatted = "targetUrl   = \"https://tickets.example.com/select\" # where they go\n\
                       capacity = 9";
    write_rooms_file(&rooms_file, reformatted, &["zz-restart-1", "zz-restart-3"]);
    let server = start(data_dir.path(), &rooms_file, snapshot_every_record).await;
    config_once_created(&server, "zz-restart-3").await;
    let config = server.room(ROOM).await["config"].clone();
    assert_eq!(
        config["paused"],
        json!(true),
        "an unchanged entry applied again"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_api_changes_replaying_the_log() {
    restart_keeps_api_changes_and_applies_file_changes(false).await;
}

#[tokio::test]
async fn a_restart_keeps_api_changes_restoring_a_snapshot() {
    restart_keeps_api_changes_and_applies_file_changes(true).await;
}

/// `queueingMethod` in the rooms file: the entry configures it; a restart (from the log or a
/// snapshot, which carries the method) keeps it; a change of only the method is a change of the
/// entry, applied at the next start.
async fn the_queueing_method_comes_from_the_file(snapshot_every_record: bool) {
    init_tracing();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let files = tempfile::tempdir().expect("temp dir");
    let rooms_file = files.path().join("rooms.toml");
    write_rooms_file(
        &rooms_file,
        "capacity = 1\nqueueingMethod = \"random\"",
        &[],
    );
    let server = start(data_dir.path(), &rooms_file, snapshot_every_record).await;
    let config = config_once_created(&server, ROOM).await;
    assert_eq!(config["queueingMethod"], "random");
    let stored = snapshots_stored(&server).await;
    let (_, first) = server.join(ROOM).await;
    assert_eq!(first["status"], "ACTIVE");
    let (_, second) = server.join(ROOM).await;
    assert!(second["position"].is_null(), "{second}");
    settle(&server, snapshot_every_record, stored).await;
    server.stop().await;

    write_rooms_file(
        &rooms_file,
        "capacity = 1\nqueueingMethod = \"random\"",
        &["zz-restart-1"],
    );
    let server = start(data_dir.path(), &rooms_file, snapshot_every_record).await;
    config_once_created(&server, "zz-restart-1").await;
    assert_eq!(
        server.room(ROOM).await["config"]["queueingMethod"],
        "random"
    );
    let (_, second) = server.session(&id(&second)).await;
    assert_eq!(second["status"], "WAITING");
    assert!(second["position"].is_null(), "{second}");
    server.stop().await;

    write_rooms_file(
        &rooms_file,
        "capacity = 1\nqueueingMethod = \"reject\"",
        &["zz-restart-1", "zz-restart-2"],
    );
    let server = start(data_dir.path(), &rooms_file, snapshot_every_record).await;
    config_once_created(&server, "zz-restart-2").await;
    assert_eq!(
        server.room(ROOM).await["config"]["queueingMethod"],
        "reject"
    );
    assert_eq!(server.join(ROOM).await.0, 403);
    server.stop().await;
}

#[tokio::test]
async fn the_queueing_method_comes_from_the_file_replaying_the_log() {
    the_queueing_method_comes_from_the_file(false).await;
}

#[tokio::test]
async fn the_queueing_method_comes_from_the_file_restoring_a_snapshot() {
    the_queueing_method_comes_from_the_file(true).await;
}
