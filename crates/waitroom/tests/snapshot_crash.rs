//! Crash safety of snapshots: a node is killed (the process aborts, as after `kill -9`) at each
//! step of taking, storing and trimming a snapshot — the fault-injection points of
//! `waitroom_log::fault`, compiled into test builds only (feature `fault-injection`). After a
//! restart nothing acknowledged is lost, the room was restored from a snapshot, and its state
//! digest equals that of a node that replayed the whole history:
//! - on the file log, the history is rebuilt from the segments trimming deleted (the test build
//!   links each into an archive before deleting it) and the ones left, and replayed by a node
//!   started with `--snapshots off`;
//! - on Redis, a node with `--snapshots off` runs beside the crashing one from the start and
//!   applies every record live (trimming never cuts under a live reader, so it must stay ready).

#![cfg(feature = "fault-injection")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};
use waitroom_log::fault::{ARCHIVE_ENV, FAULT_ENV, points};

const ADMIN: &str = "snapshot-crash-admin-token-01";
const ROOM: &str = "crash";
/// Snapshots every few records, so each point is reached many times within a second of load.
const SNAPSHOT_EVERY_RECORDS: &str = "40";
/// The n-th time a point is reached is fatal: earlier snapshots and trims have happened.
const FATAL_HIT: u32 = 3;
/// Longest the load may run before the point must have been reached.
const LOAD_WAIT: Duration = Duration::from_secs(60);

struct Node {
    child: Child,
    url: String,
}

impl Node {
    /// Starts `waitroom serve` with `args` and `env`; returns once it prints its URL.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_waitroom"))
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-token", ADMIN])
            .args(["--join-rate-per-ip", "0"])
            .args(args)
            .envs(env.iter().copied())
            .env("WAITROOM_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn waitroom");
        let line = BufReader::new(child.stdout.take().expect("stdout"))
            .lines()
            .next()
            .expect("a line")
            .expect("readable");
        let url = line.rsplit(' ').next().expect("a URL").to_owned();
        Node { child, url }
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn as_refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn wait_ready(url: &str) {
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{url}/readyz")).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} did not become ready");
}

/// A session as its join was acknowledged.
#[derive(Clone, Debug)]
struct Acknowledged {
    id: String,
    status: String,
    position: Option<u64>,
}

async fn create_room(url: &str) {
    // Capacity 5 and long timeouts: once 5 are admitted, every later view stays as acknowledged.
    let config = json!({
        "capacity": 5,
        "activeIdleTimeoutSeconds": 3600,
        "maxActiveSeconds": 7200,
        "waitingIdleTimeoutSeconds": 3600,
    });
    let status = client()
        .put(format!("{url}/api/waiting-room/rooms/{ROOM}"))
        .bearer_auth(ADMIN)
        .json(&config)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

/// Joins from six clients until `node` dies; returns every acknowledged join.
async fn load_until_dead(node: &mut Node, point: &str) -> Vec<Acknowledged> {
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (url, acknowledged, stop) = (node.url.clone(), acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                let client = client();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(response) = client
                        .post(format!("{url}/api/waiting-room/sessions"))
                        .json(&json!({ "roomId": ROOM }))
                        .send()
                        .await
                    else {
                        break;
                    };
                    if !response.status().is_success() {
                        continue;
                    }
                    let Ok(view) = response.json::<Value>().await else {
                        break;
                    };
                    acknowledged.lock().push(Acknowledged {
                        id: view["waitingRoomSessionId"].as_str().unwrap().to_owned(),
                        status: view["status"].as_str().unwrap().to_owned(),
                        position: view["position"].as_u64(),
                    });
                }
            })
        })
        .collect();
    let deadline = Instant::now() + LOAD_WAIT;
    while !node.exited() {
        assert!(
            Instant::now() < deadline,
            "{point}: the node was never killed there ({} joins acknowledged)",
            acknowledged.lock().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged = acknowledged.lock().clone();
    // At least two snapshots' worth of records went by before the fatal one.
    assert!(
        acknowledged.len() >= 40,
        "{point}: only {} joins",
        acknowledged.len()
    );
    acknowledged
}

/// Every acknowledged session is on `url`, with the status and position it was acknowledged
/// with.
async fn nothing_lost(url: &str, acknowledged: &[Acknowledged], point: &str) {
    let client = client();
    for session in acknowledged {
        let view: Value = client
            .get(format!("{url}/api/waiting-room/sessions/{}", session.id))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (view["status"].as_str(), view["position"].as_u64()),
            (Some(session.status.as_str()), session.position),
            "{point}: {session:?} after the restart: {view}"
        );
    }
}

async fn room(url: &str) -> Value {
    client()
        .get(format!("{url}/api/waiting-room/rooms/{ROOM}?digest=true"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn metric(url: &str, name: &str) -> f64 {
    let text = client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn copy_segments(from: &Path, to: &Path) -> usize {
    let mut copied = 0;
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "seg") {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
            copied += 1;
        }
    }
    copied
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else if path.file_name().is_some_and(|name| name != "LOCK") {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The file log, killed at `point` (see the module documentation).
async fn file_log_killed_at(point: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let (data, archive) = (scratch.path().join("data"), scratch.path().join("archive"));
    std::fs::create_dir_all(&archive).unwrap();
    let fault = format!("{point}@{FATAL_HIT}");
    let data_dir = data.to_str().unwrap();
    // Small segments, so trimming deletes some at every snapshot.
    let backend = "file:?segment-bytes=4096";
    let common = [
        "--backend",
        backend,
        "--snapshot-every-records",
        SNAPSHOT_EVERY_RECORDS,
    ];
    let mut node = Node::start(
        &[&common[..], &["--data-dir", data_dir]].concat(),
        &[
            (FAULT_ENV, fault.as_str()),
            (ARCHIVE_ENV, archive.to_str().unwrap()),
        ],
    );
    wait_ready(&node.url).await;
    create_room(&node.url).await;
    let acknowledged = load_until_dead(&mut node, point).await;
    drop(node);

    // The whole history: the segments trimming deleted, then those left; no snapshots.
    let full = scratch.path().join("full");
    std::fs::create_dir_all(full.join("log")).unwrap();
    let archived = copy_segments(&archive, &full.join("log"));
    copy_segments(&data.join("log"), &full.join("log"));
    // The crashed node's data as it is, for the node that restores from snapshots.
    let crashed = scratch.path().join("crashed");
    copy_dir(&data, &crashed);

    // No ticks for a while: both nodes hold exactly what the log holds when compared.
    let quiet = ["--tick-interval-ms", "10000"];
    let restored = Node::start(
        &[
            &common[..],
            &quiet[..],
            &["--data-dir", crashed.to_str().unwrap()],
        ]
        .concat(),
        &[],
    );
    let replayed = Node::start(
        &[
            &quiet[..],
            &["--snapshots", "off", "--data-dir", full.to_str().unwrap()],
        ]
        .concat(),
        &[],
    );
    wait_ready(&restored.url).await;
    wait_ready(&replayed.url).await;
    assert!(
        metric(&restored.url, "waitroom_rooms_restored_total").await >= 1.0,
        "{point}: the restarted node did not restore the room from a snapshot"
    );
    if matches!(point, points::TRIM_SEGMENT_DELETED | points::TRIM_DONE) {
        assert!(archived > 0, "{point}: nothing was trimmed");
    }
    nothing_lost(&restored.url, &acknowledged, point).await;
    let (restored_room, replayed_room) = (room(&restored.url).await, room(&replayed.url).await);
    assert_eq!(
        restored_room, replayed_room,
        "{point}: the node that restored from snapshots and the one that replayed the whole \
         history disagree"
    );
    // And the crashed node's own data dir opens and serves on (its leftovers were cleaned up).
    let again = Node::start(&[&common[..], &["--data-dir", data_dir]].concat(), &[]);
    wait_ready(&again.url).await;
    nothing_lost(&again.url, &acknowledged, point).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_log_killed_at_each_step_of_a_snapshot() {
    for point in points::ALL {
        file_log_killed_at(point).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_node_killed_at_each_step_of_a_snapshot() {
    use waitroom_log::testkit::redis::{Persistence, RedisServer, require};
    if require("redis_node_killed_at_each_step_of_a_snapshot").is_none() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let key = scratch.path().join("key.pem");
    let signing_key = waitroom_token::SigningKey::generate().unwrap();
    std::fs::write(&key, signing_key.to_pkcs8_pem().as_bytes()).unwrap();
    let redis = RedisServer::start(&scratch.path().join("redis"), Persistence::Always).unwrap();
    // The points a node reaches on Redis (the others are the file log's own steps).
    for (index, point) in [
        points::SNAPSHOT_TAKEN,
        points::SNAPSHOT_STORED,
        points::TRIM_DONE,
    ]
    .into_iter()
    .enumerate()
    {
        let prefix = format!("crash{index}");
        let backend = |node: &str| format!("{}?prefix={prefix}&node={node}", redis.url());
        let node_args = |node: &str, dir: &str| -> Vec<String> {
            [
                "--backend",
                &backend(node),
                "--signing-key",
                key.to_str().unwrap(),
                "--data-dir",
                &scratch.path().join(dir).to_string_lossy(),
                "--snapshot-every-records",
                SNAPSHOT_EVERY_RECORDS,
            ]
            .map(str::to_owned)
            .to_vec()
        };
        let args = |node: &str, dir: &str, extra: &[&str]| {
            let mut args = node_args(node, dir);
            args.extend(extra.iter().map(|arg| (*arg).to_owned()));
            args
        };
        let reference_args = args("reference", "reference", &["--snapshots", "off"]);
        let reference = Node::start(&as_refs(&reference_args), &[]);
        wait_ready(&reference.url).await;
        let fault = format!("{point}@{FATAL_HIT}");
        let crashing_args = args("crashing", "crashing", &[]);
        let mut crashing = Node::start(&as_refs(&crashing_args), &[(FAULT_ENV, &fault)]);
        wait_ready(&crashing.url).await;
        create_room(&crashing.url).await;
        let acknowledged = load_until_dead(&mut crashing, point).await;
        drop(crashing);

        let restarted = Node::start(&as_refs(&crashing_args), &[]);
        wait_ready(&restarted.url).await;
        assert!(
            metric(&restarted.url, "waitroom_rooms_restored_total").await >= 1.0,
            "{point}: the restarted node did not restore the room from a snapshot"
        );
        nothing_lost(&restarted.url, &acknowledged, point).await;
        nothing_lost(&reference.url, &acknowledged, point).await;
        // Both apply the same records (ticks included) and must agree once caught up.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (a, b) = (room(&restarted.url).await, room(&reference.url).await);
            if a == b {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{point}: the restarted node and the one that applied everything disagree: {a} \
                 vs {b}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The reference was never trimmed under (it would have stopped, unready).
        wait_ready(&reference.url).await;
        assert_eq!(metric(&reference.url, "waitroom_log_gaps_total").await, 0.0);
        // And the stream was trimmed: it holds far fewer entries than the joins made.
        let length = Command::new("redis-cli")
            .args([
                "-u",
                &redis.url(),
                "XLEN",
                &format!("{prefix}:{{{ROOM}}}:log"),
            ])
            .output()
            .unwrap();
        let length: usize = String::from_utf8_lossy(&length.stdout)
            .trim()
            .parse()
            .unwrap();
        assert!(
            length < acknowledged.len(),
            "{point}: the stream holds {length} entries after {} joins",
            acknowledged.len()
        );
    }
}
