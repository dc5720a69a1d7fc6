//! A fleet on one Redis: three `waitroom serve` processes share a room through Redis Streams.
//! 1 000 concurrent joins, heartbeats and completes go round-robin over the nodes; the cap and
//! the order hold at every observation whichever node answers; one node is killed with SIGKILL and
//! restarted, and Redis itself is killed and restarted (AOF on); at the end every node has the
//! same stats and the same state digest.
//!
//! Needs `redis-server` (Debian package `redis-server`): skipped with a loud message without it,
//! an error with `CI=true`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

const ADMIN: &str = "fleet-test-admin-token-01234";
const ROOM: &str = "fleet";
const CAPACITY: u64 = 50;
const SESSIONS: usize = 1000;

fn redis_server_or_skip() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!("redis-server is not installed, and the fleet test must not skip in CI");
        }
        eprintln!(
            "SKIPPED fleet test: install redis-server (apt-get install redis-server) to run it"
        );
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server with AOF (`appendfsync always`) in a directory of its own.
struct Redis {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    fn start(binary: &Path, dir: &Path) -> Redis {
        let mut redis = Redis {
            binary: binary.into(),
            port: free_port(),
            dir: dir.into(),
            child: None,
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args([
                "--port",
                &self.port.to_string(),
                "--daemonize",
                "no",
                "--logfile",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start");
    }

    fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL redis");
            child.wait().expect("reap redis");
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// One `waitroom serve` process.
struct Node {
    child: Child,
    url: String,
}

fn start_node(redis_url: &str, key_path: &Path, data_dir: &Path) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_waitroom"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            ADMIN,
            "--join-rate-per-ip",
            "0",
        ])
        .args(["--backend", redis_url])
        .arg("--signing-key")
        .arg(key_path)
        .arg("--data-dir")
        .arg(data_dir)
        .env("WAITROOM_LOG", "warn")
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

struct Fleet {
    client: reqwest::Client,
    urls: parking_lot::RwLock<Vec<String>>,
}

impl Fleet {
    fn url(&self, node: usize) -> String {
        let urls = self.urls.read();
        urls[node % urls.len()].clone()
    }

    /// Retries through the windows where a node or Redis is down; any answer but a 503 or a
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
    for _ in 0..400 {
        if fleet.ready(url).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not become ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_one_redis() {
    let Some(redis_binary) = redis_server_or_skip() else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(&redis_binary, &scratch.path().join("redis").tap_mkdir());
    let key_path = scratch.path().join("signing-key.pem");
    let key = waitroom_token::SigningKey::generate().unwrap();
    std::fs::write(&key_path, key.to_pkcs8_pem().as_bytes()).unwrap();
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| scratch.path().join(format!("node{i}")).tap_mkdir())
        .collect();
    let mut nodes: Vec<Node> = dirs
        .iter()
        .map(|d| start_node(&redis.url(), &key_path, d))
        .collect();
    let fleet = Arc::new(Fleet {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
        urls: parking_lot::RwLock::new(nodes.iter().map(|n| n.url.clone()).collect()),
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

    // Rounds of heartbeats and completes, round-robin; a node dies and comes back; Redis dies
    // and comes back.
    for round in 0..6 {
        match round {
            2 => {
                // kill -9 one node mid-run, and start it again: it replays and turns ready.
                let victim = nodes.remove(1);
                drop(victim);
                fleet.urls.write().remove(1);
                let node = start_node(&redis.url(), &key_path, &dirs[1]);
                wait_ready(&fleet, &node.url).await;
                fleet.urls.write().push(node.url.clone());
                nodes.push(node);
            }
            4 => {
                // Redis dies and comes back (AOF, appendfsync always): the nodes recover alone.
                redis.kill_9();
                tokio::time::sleep(Duration::from_millis(300)).await;
                redis.spawn();
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
    let mut agreed = None;
    for _ in 0..100 {
        let rooms: Vec<Option<Value>> = join_all((0..3).map(|n| fleet.room(n, true))).await;
        if let [Some(a), Some(b), Some(c)] = &rooms[..]
            && a == b
            && b == c
        {
            agreed = Some(a.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let room = agreed.expect("all nodes agree on stats and digest");
    assert_eq!(room["stats"]["activeCount"], 0);
    assert_eq!(room["stats"]["waitingCount"], 0);
    // 50 at first, 40 per round; more while everyone left (a freed slot goes to whoever still
    // waited).
    assert!(room["stats"]["admittedTotal"].as_u64().unwrap() >= 50 + 6 * 40);
    assert!(room["stateDigest"].is_string());
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
