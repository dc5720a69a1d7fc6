//! A fleet on one shared backend: three `waitroom serve` processes share a room through the log.
//! 1 000 concurrent joins, heartbeats and completes go round-robin over the nodes; the cap and
//! the order hold at every observation whichever node answers; one node is killed with SIGKILL
//! and restarted (it recovers from the room's snapshot: snapshots are taken every 200 records),
//! and the backend's server itself is killed and restarted; at the end every node has the same
//! stats and the same state digest, every joined session is still there, and every node stops
//! cleanly and promptly on SIGTERM.
//!
//! One test per backend, each a line at the bottom: the server comes from the test kit's
//! launcher, and is skipped with a loud message when it is not installed (an error with
//! `CI=true`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use waitroom_log::testkit::TestServer;

const ADMIN: &str = "fleet-test-admin-token-01234";
const ROOM: &str = "fleet";
const CAPACITY: u64 = 50;
const SESSIONS: usize = 1000;

/// One `waitroom serve` process.
struct Node {
    child: Child,
    url: String,
}

fn start_node(backend_url: &str, key_path: &Path, data_dir: &Path) -> Node {
    start_node_with(backend_url, key_path, data_dir, &[])
}

/// [`start_node`] with more environment variables (a fault to inject, say).
fn start_node_with(
    backend_url: &str,
    key_path: &Path,
    data_dir: &Path,
    env: &[(&str, &str)],
) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_waitroom"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            ADMIN,
            "--join-rate-per-ip",
            "0",
            "--snapshot-every-records",
            "200",
            // Digest checks every second of the room's log time: many per test, each compared
            // by every node (see the end of `three_nodes_one_backend`).
            "--digest-check-every-ms",
            "1000",
        ])
        .args(["--backend", backend_url])
        .arg("--signing-key")
        .arg(key_path)
        .arg("--data-dir")
        .arg(data_dir)
        .env("WAITROOM_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn waitroom");
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .expect("a line")
        .unwrap();
    Node {
        child,
        url: line.rsplit(' ').next().unwrap().to_string(),
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Longest a node may take to stop after SIGTERM: draining requests, then the backend's way out
/// (an SQS node deletes its queue).
const CLEAN_STOP_WAIT: Duration = Duration::from_secs(30);

/// Stops every node with SIGTERM, as an orchestrator does, and checks each exits cleanly in time.
fn stop_cleanly(nodes: Vec<Node>) {
    for node in &nodes {
        let status = Command::new("kill")
            .args(["-TERM", &node.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {}", node.child.id());
    }
    let deadline = Instant::now() + CLEAN_STOP_WAIT;
    for mut node in nodes {
        let exited = loop {
            if let Some(status) = node.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the node at {} did not stop within {CLEAN_STOP_WAIT:?} of SIGTERM",
                node.url
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            exited.success(),
            "the node at {} exited with {exited}",
            node.url
        );
    }
}

struct Fleet {
    client: reqwest::Client,
    urls: parking_lot::RwLock<Vec<String>>,
    /// How long a node may take to turn ready ([`READY_WAIT`] plus the backend's
    /// `TestServer::held_work_timeout`: a node killed holding work delays the others' start).
    ready_wait: Duration,
}

/// Longest a node may take to turn ready when no killed node holds work it must wait out.
const READY_WAIT: Duration = Duration::from_secs(20);

impl Fleet {
    fn url(&self, node: usize) -> String {
        let urls = self.urls.read();
        urls[node % urls.len()].clone()
    }

    /// Retries through the windows where a node or the backend is down; any answer but a 503 or a
    /// transport error is returned.
    async fn send(
        &self,
        node: usize,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> (u16, Value) {
        for attempt in 0..200 {
            let url = self.url(node + attempt);
            match build(&self.client, &url).send().await {
                Ok(response) if response.status() != 503 => {
                    let status = response.status().as_u16();
                    return (status, response.json().await.unwrap_or(Value::Null));
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("no node answered");
    }

    async fn room(&self, node: usize, digest: bool) -> Option<Value> {
        let url = format!(
            "{}/api/waiting-room/rooms/{ROOM}?digest={digest}",
            self.url(node)
        );
        let response = self.client.get(url).bearer_auth(ADMIN).send().await.ok()?;
        if response.status() != 200 {
            return None;
        }
        response.json().await.ok()
    }

    async fn ready(&self, url: &str) -> bool {
        matches!(self.client.get(format!("{url}/readyz")).send().await, Ok(r) if r.status() == 200)
    }
}

async fn wait_ready(fleet: &Fleet, url: &str) {
    let deadline = tokio::time::Instant::now() + fleet.ready_wait;
    while tokio::time::Instant::now() < deadline {
        if fleet.ready(url).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{url} did not become ready within {} s",
        fleet.ready_wait.as_secs()
    );
}

/// The room as every node of the fleet sees it, once all three agree on its stats and digest.
async fn agreed(fleet: &Fleet) -> Value {
    let deadline = tokio::time::Instant::now() + fleet.ready_wait;
    while tokio::time::Instant::now() < deadline {
        let rooms: Vec<Option<Value>> = join_all((0..3).map(|n| fleet.room(n, true))).await;
        if let [Some(a), Some(b), Some(c)] = &rooms[..]
            && a == b
            && b == c
        {
            return a.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the nodes did not agree on the room's stats and digest within {} s",
        fleet.ready_wait.as_secs()
    );
}

/// The value of a counter on a node's `/metrics` (0 when absent).
async fn metric(fleet: &Fleet, url: &str, name: &str) -> f64 {
    let text = fleet
        .client
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

/// Three nodes on `server`'s backend (see the module documentation).
async fn three_nodes_one_backend(mut server: impl TestServer, scratch: &Path) {
    let key_path = scratch.join("signing-key.pem");
    let key = waitroom_token::SigningKey::generate().unwrap();
    std::fs::write(&key_path, key.to_pkcs8_pem().as_bytes()).unwrap();
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| scratch.join(format!("node{i}")).tap_mkdir())
        .collect();
    let backend_url = server.backend_url();
    let mut nodes: Vec<Node> = dirs
        .iter()
        .map(|d| start_node(&backend_url, &key_path, d))
        .collect();
    let fleet = Arc::new(Fleet {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
        urls: parking_lot::RwLock::new(nodes.iter().map(|n| n.url.clone()).collect()),
        ready_wait: READY_WAIT + server.held_work_timeout(),
    });
    for node in &nodes {
        wait_ready(&fleet, &node.url).await;
    }
    let config = json!({
        "capacity": CAPACITY,
        "heartbeatIntervalSeconds": 5,
        "waitingIdleTimeoutSeconds": 600,
        "activeIdleTimeoutSeconds": 600,
        "maxActiveSeconds": 3600,
    });
    let (status, _) = fleet
        .send(0, |c, u| {
            c.put(format!("{u}/api/waiting-room/rooms/{ROOM}"))
                .bearer_auth(ADMIN)
                .json(&config)
        })
        .await;
    assert_eq!(status, 200);

    // An observer checks the cap on every node, all the time: never more than CAPACITY active,
    // and exactly CAPACITY whenever someone waits (no idle slot).
    let stop = Arc::new(AtomicBool::new(false));
    let observations = Arc::new(AtomicU64::new(0));
    let observer = {
        let (fleet, stop, observations) = (fleet.clone(), stop.clone(), observations.clone());
        tokio::spawn(async move {
            let mut node = 0;
            while !stop.load(Ordering::Relaxed) {
                node += 1;
                if let Some(room) = fleet.room(node, false).await {
                    let active = room["stats"]["activeCount"].as_u64().unwrap();
                    let waiting = room["stats"]["waitingCount"].as_u64().unwrap();
                    assert!(
                        active <= CAPACITY,
                        "node {node}: {active} active over capacity"
                    );
                    if waiting > 0 {
                        assert_eq!(
                            active, CAPACITY,
                            "node {node}: an idle slot while {waiting} wait"
                        );
                    }
                    observations.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // 1 000 concurrent joins, round-robin over the nodes.
    let limit = Arc::new(Semaphore::new(200));
    let joins = join_all((0..SESSIONS).map(|i| {
        let (fleet, limit) = (fleet.clone(), limit.clone());
        async move {
            let _permit = limit.acquire().await.unwrap();
            let (status, view) = fleet
                .send(i, |c, u| {
                    c.post(format!("{u}/api/waiting-room/sessions"))
                        .json(&json!({ "roomId": ROOM }))
                })
                .await;
            assert_eq!(status, 201, "{view}");
            view["waitingRoomSessionId"].as_str().unwrap().to_string()
        }
    }))
    .await;

    // Every session is visible on every node; positions are exactly 0..n-1 whichever node answers.
    let check_line = |offset: usize| {
        let (fleet, joins) = (fleet.clone(), joins.clone());
        async move {
            let views = join_all(joins.iter().enumerate().map(|(i, id)| {
                let fleet = fleet.clone();
                async move {
                    let (status, view) = fleet
                        .send(i + offset, |c, u| {
                            c.get(format!("{u}/api/waiting-room/sessions/{id}"))
                        })
                        .await;
                    assert_eq!(status, 200, "{view}");
                    view
                }
            }))
            .await;
            let active = views.iter().filter(|v| v["status"] == "ACTIVE").count();
            let mut positions: Vec<u64> = views
                .iter()
                .filter_map(|v| v["position"].as_u64())
                .collect();
            positions.sort_unstable();
            let waiting = views.iter().filter(|v| v["status"] == "WAITING").count();
            assert_eq!(
                positions,
                (0..waiting as u64).collect::<Vec<_>>(),
                "positions 0..n-1"
            );
            active
        }
    };
    assert_eq!(check_line(1).await, CAPACITY as usize);

    // Rounds of heartbeats and completes, round-robin; a node dies and comes back; the backend dies
    // and comes back.
    for round in 0..6 {
        match round {
            2 => {
                // kill -9 one node mid-run, and start it again: it restores the room from its
                // snapshot, replays what follows, and turns ready.
                let stored: f64 = join_all(
                    nodes
                        .iter()
                        .map(|node| metric(&fleet, &node.url, "waitroom_snapshots_stored_total")),
                )
                .await
                .into_iter()
                .sum();
                assert!(stored >= 1.0, "no snapshot was stored before the kill");
                let victim = nodes.remove(1);
                drop(victim);
                fleet.urls.write().remove(1);
                let node = start_node(&backend_url, &key_path, &dirs[1]);
                wait_ready(&fleet, &node.url).await;
                assert!(
                    metric(&fleet, &node.url, "waitroom_rooms_restored_total").await >= 1.0,
                    "the restarted node did not restore the room from a snapshot"
                );
                fleet.urls.write().push(node.url.clone());
                nodes.push(node);
            }
            // (Not a server that comes back empty, like moto: no real SQS does that.)
            4 if server.keeps_state_across_restart() => {
                // The backend's server dies and comes back (with the durability settings that
                // lose nothing acknowledged): the nodes recover alone.
                // (On a blocking-allowed thread: a RabbitMQ node takes seconds to start.)
                tokio::task::block_in_place(|| server.kill_9());
                tokio::time::sleep(Duration::from_millis(300)).await;
                tokio::task::block_in_place(|| server.restart())
                    .expect("the backend's server starts again");
                for node in &nodes {
                    wait_ready(&fleet, &node.url).await;
                }
            }
            _ => {}
        }
        let views = join_all(joins.iter().enumerate().map(|(i, id)| {
            let fleet = fleet.clone();
            async move {
                fleet
                    .send(i + round, |c, u| {
                        c.post(format!("{u}/api/waiting-room/sessions/{id}:heartbeat"))
                    })
                    .await
                    .1
            }
        }))
        .await;
        let active: Vec<(String, String)> = views
            .iter()
            .zip(&joins)
            .filter(|(v, _)| v["status"] == "ACTIVE")
            .map(|(v, id)| {
                (
                    id.clone(),
                    v["admissionToken"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert!(active.len() as u64 <= CAPACITY);
        // Complete 40 of the active sessions, on nodes other than the one that admitted them.
        join_all(active.iter().take(40).enumerate().map(|(i, (id, token))| {
            let fleet = fleet.clone();
            async move {
                let (status, view) = fleet
                    .send(i + 2, |c, u| {
                        c.post(format!("{u}/api/waiting-room/sessions/{id}:complete"))
                            .bearer_auth(token)
                    })
                    .await;
                assert_eq!(status, 200, "{view}");
                assert_eq!(view["expiredReason"], "completed");
            }
        }))
        .await;
        // Each node applies the completes when it reads them: once they all agree, positions are
        // exact whichever node answers (before, a node behind answers with the line before them).
        agreed(&fleet).await;
    }
    check_line(2).await;

    // Everyone leaves; once the room is idle, every node has the same stats and digest.
    join_all(joins.iter().enumerate().map(|(i, id)| {
        let fleet = fleet.clone();
        async move {
            fleet
                .send(i, |c, u| {
                    c.delete(format!("{u}/api/waiting-room/sessions/{id}"))
                })
                .await
        }
    }))
    .await;
    stop.store(true, Ordering::Relaxed);
    observer.await.expect("the observer saw no violation");
    assert!(
        observations.load(Ordering::Relaxed) > 20,
        "the observer observed"
    );
    let room = agreed(&fleet).await;
    // Every node compared digest checks of the others all along, and none disagreed: every
    // node applied the same records in the same order at the same times, whatever died.
    for node in &nodes {
        let text = fleet
            .client
            .get(format!("{}/metrics", node.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let checks = |result: &str| -> f64 {
            text.lines()
                .find_map(|line| {
                    line.strip_prefix(&format!(
                        "waitroom_digest_checks_total{{result=\"{result}\"}} "
                    ))?
                    .parse()
                    .ok()
                })
                .unwrap_or(0.0)
        };
        assert_eq!(
            checks("disagree"),
            0.0,
            "{}: a digest check disagreed",
            node.url
        );
        assert!(
            checks("agree") >= 1.0,
            "{}: no digest check compared",
            node.url
        );
        // What the provider bills per request is counted on SQS (every node sends to the
        // intake and receives from its queue), and on no other backend.
        let sends = metric(
            &fleet,
            &node.url,
            "waitroom_log_requests_total{kind=\"sqs_send\"}",
        )
        .await;
        let receives = metric(
            &fleet,
            &node.url,
            "waitroom_log_requests_total{kind=\"sqs_receive\"}",
        )
        .await;
        if backend_url.starts_with("sqs:") {
            assert!(
                sends >= 1.0 && receives >= 1.0,
                "{}: {sends} sends, {receives} receives",
                node.url
            );
        } else {
            assert!(
                !text.contains("waitroom_log_requests_total{"),
                "{}: billed requests counted on {backend_url}",
                node.url
            );
        }
    }
    assert_eq!(room["stats"]["activeCount"], 0);
    assert_eq!(room["stats"]["waitingCount"], 0);
    // 50 at first, 40 per round; more while everyone left (a freed slot goes to whoever still
    // waited).
    assert!(room["stats"]["admittedTotal"].as_u64().unwrap() >= 50 + 6 * 40);
    assert!(room["stateDigest"].is_string());
    tokio::task::block_in_place(|| stop_cleanly(nodes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_one_redis() {
    use waitroom_log::testkit::redis::{Persistence, RedisServer, require};
    if require("three_nodes_one_redis").is_none() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    // AOF with `appendfsync always`: nothing acknowledged is lost when it is killed.
    let redis = RedisServer::start(&scratch.path().join("redis"), Persistence::Always).unwrap();
    three_nodes_one_backend(redis, scratch.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_one_kafka() {
    use waitroom_log::testkit::kafka::{Storage, TansuServer, require};
    use waitroom_log::testkit::{in_ci, skip};
    let test = "three_nodes_one_kafka";
    if require(test).is_none() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    // SQLite storage: the broker keeps what it acknowledged across its kill -9. (A broker that
    // comes back without records the nodes read makes them refuse to go on instead: tested in
    // waitroom-log's `kafka::tests::a_broker_that_lost_acknowledged_records_is_refused_loudly`.)
    let broker = match TansuServer::start(&scratch.path().join("tansu"), Storage::Sqlite) {
        Ok(broker) => broker,
        Err(why) if why.contains("lacks the storage engine") && !in_ci() => {
            return skip(test, &why);
        }
        Err(why) => panic!("{test}: {why}"),
    };
    three_nodes_one_backend(broker, scratch.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_one_rabbitmq() {
    use waitroom_log::testkit::rabbitmq::{RabbitMqServer, require};
    if require("three_nodes_one_rabbitmq").is_none() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    // Confirmed chunks are in the broker's files (the page cache) when it is killed: nothing
    // confirmed is lost.
    let rabbitmq =
        tokio::task::block_in_place(|| RabbitMqServer::start(&scratch.path().join("rabbitmq")))
            .unwrap();
    three_nodes_one_backend(rabbitmq, scratch.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg(feature = "sqs")]
async fn three_nodes_one_sqs() {
    use waitroom_log::testkit::moto::{MotoServer, require};
    let Some(venv) = require("three_nodes_one_sqs") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let moto =
        tokio::task::block_in_place(|| MotoServer::start(&scratch.path().join("moto"), &venv))
            .unwrap();
    three_nodes_one_backend(moto, scratch.path()).await;
}

/// SQS: one node is killed (the process aborts, as after `kill -9`) halfway through copying a
/// batch it stamped, while 1 000 joins go round-robin over the fleet: another node finishes the
/// batch once its visibility timeout passes; then a fourth node starts after the room holds the
/// 1 000 sessions and builds it from the snapshot and history in S3. Capacity and positions are
/// exact whichever node answers, and every node ends with the same digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg(all(feature = "sqs", feature = "fault-injection"))]
async fn sqs_copier_killed_halfway_and_a_late_node() {
    use waitroom_log::fault::{FAULT_ENV, points};
    use waitroom_log::testkit::moto::{MotoServer, require};
    let Some(venv) = require("sqs_copier_killed_halfway_and_a_late_node") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let moto =
        tokio::task::block_in_place(|| MotoServer::start(&scratch.path().join("moto"), &venv))
            .unwrap();
    // A short visibility timeout: the killed copier's batch is taken over within seconds.
    const COPIER_VISIBILITY: Duration = Duration::from_secs(3);
    let backend_url = format!(
        "{}&visibility-timeout={}s",
        moto.url(),
        COPIER_VISIBILITY.as_secs()
    );
    let key_path = scratch.path().join("signing-key.pem");
    let key = waitroom_token::SigningKey::generate().unwrap();
    std::fs::write(&key_path, key.to_pkcs8_pem().as_bytes()).unwrap();
    let dirs: Vec<PathBuf> = (0..4)
        .map(|i| scratch.path().join(format!("node{i}")).tap_mkdir())
        .collect();
    // Node 2 dies the 5th time it has copied a batch into one node queue and not the others.
    let fault = format!("{}@5", points::SQS_COPY_PARTIAL);
    let mut nodes: Vec<Node> = vec![
        start_node(&backend_url, &key_path, &dirs[0]),
        start_node(&backend_url, &key_path, &dirs[1]),
        start_node_with(&backend_url, &key_path, &dirs[2], &[(FAULT_ENV, &fault)]),
    ];
    let fleet = Arc::new(Fleet {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
        urls: parking_lot::RwLock::new(nodes.iter().map(|n| n.url.clone()).collect()),
        ready_wait: READY_WAIT + COPIER_VISIBILITY,
    });
    for node in &nodes {
        wait_ready(&fleet, &node.url).await;
    }
    let config = json!({
        "capacity": CAPACITY,
        "heartbeatIntervalSeconds": 5,
        "waitingIdleTimeoutSeconds": 600,
        "activeIdleTimeoutSeconds": 600,
        "maxActiveSeconds": 3600,
    });
    let (status, _) = fleet
        .send(0, |c, u| {
            c.put(format!("{u}/api/waiting-room/rooms/{ROOM}"))
                .bearer_auth(ADMIN)
                .json(&config)
        })
        .await;
    assert_eq!(status, 200);
    let limit = Arc::new(Semaphore::new(100));
    let joins = join_all((0..SESSIONS).map(|i| {
        let (fleet, limit) = (fleet.clone(), limit.clone());
        async move {
            let _permit = limit.acquire().await.unwrap();
            let (status, view) = fleet
                .send(i, |c, u| {
                    c.post(format!("{u}/api/waiting-room/sessions"))
                        .header("Idempotency-Key", format!("join-{i}"))
                        .json(&json!({ "roomId": ROOM }))
                })
                .await;
            assert!(status == 201 || status == 200, "{status} {view}");
            view["waitingRoomSessionId"].as_str().unwrap().to_string()
        }
    }))
    .await;
    // Node 2 died at the fault point.
    let mut copier = nodes.remove(2);
    let exited = (0..600).find_map(|_| {
        copier.child.try_wait().unwrap().or_else(|| {
            std::thread::sleep(Duration::from_millis(100));
            None
        })
    });
    assert!(
        exited.is_some_and(|status| !status.success()),
        "the copier did not die at {}: {exited:?}",
        points::SQS_COPY_PARTIAL
    );
    fleet.urls.write().retain(|url| *url != copier.url);
    // A fourth node, started after the room holds the 1 000 sessions: it restores the room from
    // its snapshot in S3 and reads the rest of the history there.
    let late = start_node(&backend_url, &key_path, &dirs[3]);
    wait_ready(&fleet, &late.url).await;
    assert!(
        metric(&fleet, &late.url, "waitroom_rooms_restored_total").await >= 1.0,
        "the late node did not restore the room from a snapshot"
    );
    fleet.urls.write().push(late.url.clone());
    nodes.push(late);
    // Every session is on every node, with exact positions and capacity whichever answers.
    for offset in 0..nodes.len() {
        let views = join_all(joins.iter().enumerate().map(|(i, id)| {
            let fleet = fleet.clone();
            async move {
                let (status, view) = fleet
                    .send(i + offset, |c, u| {
                        c.get(format!("{u}/api/waiting-room/sessions/{id}"))
                    })
                    .await;
                assert_eq!(status, 200, "{view}");
                view
            }
        }))
        .await;
        let active = views.iter().filter(|v| v["status"] == "ACTIVE").count();
        assert_eq!(active, CAPACITY as usize, "node offset {offset}");
        let mut positions: Vec<u64> = views
            .iter()
            .filter_map(|v| v["position"].as_u64())
            .collect();
        positions.sort_unstable();
        assert_eq!(
            positions,
            (0..(SESSIONS - CAPACITY as usize) as u64).collect::<Vec<_>>(),
            "positions 0..n-1 (node offset {offset})"
        );
    }
    // Every live node ends with the same stats and digest.
    let mut agreed = None;
    for _ in 0..200 {
        let rooms: Vec<Option<Value>> =
            join_all((0..nodes.len()).map(|n| fleet.room(n, true))).await;
        if rooms.iter().all(|room| room.is_some()) && rooms.windows(2).all(|w| w[0] == w[1]) {
            agreed = rooms.into_iter().next().flatten();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let room = agreed.expect("all nodes agree on stats and digest");
    assert_eq!(
        room["stats"]["activeCount"].as_u64().unwrap()
            + room["stats"]["waitingCount"].as_u64().unwrap(),
        SESSIONS as u64,
        "{room}"
    );
    tokio::task::block_in_place(|| stop_cleanly(nodes));
    drop(moto);
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
