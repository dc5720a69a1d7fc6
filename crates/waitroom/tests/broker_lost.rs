//! A broker that comes back empty under a running fleet: the nodes must notice, count it, turn
//! unready, rebuild the room from what the broker still holds and turn ready again, and then
//! answer new joins correctly (docs/operations.md, "Durability per backend").
//!
//! Two `waitroom serve` processes on one broker; a room of capacity [`CAPACITY`] is configured
//! and [`JOINS`] people join (acknowledged). The broker is then killed and started again with
//! nothing (the launcher's empty restart). Within [`DETECT_WAIT`] every node must count the loss
//! in `waitroom_log_regressions_total`; within [`READY_WAIT`] every node must be ready again and
//! hold the room with its configuration and an empty line (the broker lost the line, and no
//! snapshot survived: the nodes append the room's configuration again). The people who joined
//! before are gone (`404`: they rejoin). Then [`JOINS`] new joins must each be answered with a
//! place that follows from the ones before it (the first [`CAPACITY`] admitted, the rest waiting
//! at positions 0, 1, … (people ahead), and both nodes must agree on the room's digest with exactly
//! [`CAPACITY`] active: before the fix, the nodes went on with the old line (new joins were
//! skipped as already applied, or never read), which this sees as unanswered joins, wrong
//! places, or a count over capacity.
//!
//! `BROKER_LOST_NODE_LOG` sets the nodes' `WAITROOM_LOG` (`warn` by default), and
//! `BROKER_LOST_SHOW_LOGS=1` prints the end of their logs after a run that passed.
//!
//! Kafka and SQS nodes do not rebuild in place: there the test checks that they stop (unready,
//! refusing joins) instead of going on, and that nodes started again afterwards work (see
//! [`broker_lost_stopping_on`]).
//!
//! One test per backend at the bottom; each skips with a loud line when its server is not
//! installed (an error with `CI=true`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ADMIN: &str = "broker-lost-test-admin-token-01";
const ROOM: &str = "lost";
const CAPACITY: u64 = 3;
/// Joins before the loss and after it: more than the capacity, so some wait.
const JOINS: u64 = 5;
const NODES: usize = 2;
/// Idle timeouts far beyond the test's length: nobody expires while it runs.
const IDLE_TIMEOUT_SECONDS: u64 = 600;
/// Longest every node may take to turn ready (at start, after the loss).
const READY_WAIT: Duration = Duration::from_secs(60);
/// Longest every node may take to count the loss once the broker is back.
const DETECT_WAIT: Duration = Duration::from_secs(30);
/// How long the tests of backends whose nodes stop watch them stay unready after the loss.
const STAYS_UNREADY_FOR: Duration = Duration::from_secs(3);
/// Longest a request of the test waits for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of each node's log shown when the test fails.
const LOG_TAIL_LINES: usize = 40;

/// One `waitroom serve` process; its log goes to a file.
struct Node {
    child: Child,
    url: String,
    log_path: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(backend_url: &str, key_path: &Path, scratch: &Path, index: usize) -> Node {
    use std::io::{BufRead, BufReader};
    let data_dir = scratch.join(format!("node{index}"));
    std::fs::create_dir_all(&data_dir).unwrap();
    let log_path = scratch.join(format!("node{index}.log"));
    // Appended to: a node started again on the same data dir adds to its predecessor's log.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_waitroom"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-token", ADMIN])
        .args(["--join-rate-per-ip", "0"])
        .args(["--backend", backend_url])
        .arg("--signing-key")
        .arg(key_path)
        .arg("--data-dir")
        .arg(&data_dir)
        .env(
            "WAITROOM_LOG",
            std::env::var("BROKER_LOST_NODE_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdout(Stdio::piped())
        .stderr(log)
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
        log_path,
    }
}

fn log_tails(nodes: &[Node]) -> String {
    let mut out = String::new();
    for node in nodes {
        let text = std::fs::read_to_string(&node.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        out.push_str(&format!("--- {} ---\n{}\n", node.url, tail.join("\n")));
    }
    out
}

async fn ready(client: &reqwest::Client, url: &str) -> bool {
    matches!(client.get(format!("{url}/readyz")).send().await, Ok(r) if r.status() == 200)
}

async fn wait_ready(client: &reqwest::Client, nodes: &[Node], wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    for node in nodes {
        while !ready(client, &node.url).await {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    true
}

/// A counter of the node's `/metrics` (0 when not served).
async fn metric(client: &reqwest::Client, url: &str, name: &str) -> f64 {
    let Ok(response) = client.get(format!("{url}/metrics")).send().await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn room(client: &reqwest::Client, url: &str) -> Option<Value> {
    let response = client
        .get(format!("{url}/api/waiting-room/rooms/{ROOM}?digest=true"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    response.json().await.ok()
}

async fn join(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client
        .post(format!("{url}/api/waiting-room/sessions"))
        .json(&json!({ "roomId": ROOM }))
        .send()
        .await
        .expect("the node answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Joins [`JOINS`] people, alternately through each node, one after the other: each answer
/// must be the place that follows from the ones before it. Returns the session ids.
async fn join_in_turn(client: &reqwest::Client, nodes: &[Node], when: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..JOINS {
        let url = &nodes[i as usize % nodes.len()].url;
        let (status, view) = join(client, url).await;
        assert_eq!(
            status,
            201,
            "{when}: join {i} through {url}: {view}\n{}",
            log_tails(nodes)
        );
        if i < CAPACITY {
            assert_eq!(view["status"], "ACTIVE", "{when}: join {i}: {view}");
        } else {
            assert_eq!(view["status"], "WAITING", "{when}: join {i}: {view}");
            assert_eq!(
                view["position"],
                json!(i - CAPACITY),
                "{when}: join {i}: {view}"
            );
        }
        ids.push(view["waitingRoomSessionId"].as_str().unwrap().to_owned());
    }
    ids
}

/// Every node holds the room with `active` and `waiting` and one digest, within [`READY_WAIT`].
async fn wait_agreed(client: &reqwest::Client, nodes: &[Node], active: u64, waiting: u64) {
    let deadline = Instant::now() + READY_WAIT;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let mut rooms = Vec::new();
        for node in nodes {
            rooms.push(room(client, &node.url).await);
        }
        let agreed = rooms.iter().all(|room| {
            room.as_ref().is_some_and(|room| {
                room["stats"]["activeCount"] == json!(active)
                    && room["stats"]["waitingCount"] == json!(waiting)
                    && room["config"]["capacity"] == json!(CAPACITY)
            })
        }) && rooms.windows(2).all(|pair| pair[0] == pair[1]);
        if agreed {
            return;
        }
        last = rooms;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the nodes did not agree on {active} active and {waiting} waiting within {READY_WAIT:?}: \
         {last:#?}\n{}",
        log_tails(nodes)
    );
}

/// Starts the nodes (data dirs under `scratch`) and waits until they are ready.
async fn start_nodes(client: &reqwest::Client, backend_url: &str, scratch: &Path) -> Vec<Node> {
    let key_path = scratch.join("signing-key.pem");
    if !key_path.exists() {
        let key = waitroom_token::SigningKey::generate().unwrap();
        std::fs::write(&key_path, key.to_pkcs8_pem().as_bytes()).unwrap();
    }
    let nodes: Vec<Node> = (0..NODES)
        .map(|i| start_node(backend_url, &key_path, scratch, i))
        .collect();
    assert!(
        wait_ready(client, &nodes, READY_WAIT).await,
        "the nodes turned ready\n{}",
        log_tails(&nodes)
    );
    nodes
}

/// Configures the room through the first node.
async fn configure(client: &reqwest::Client, nodes: &[Node]) {
    let config = json!({
        "capacity": CAPACITY,
        "waitingIdleTimeoutSeconds": IDLE_TIMEOUT_SECONDS,
        "activeIdleTimeoutSeconds": IDLE_TIMEOUT_SECONDS,
    });
    let response = client
        .put(format!("{}/api/waiting-room/rooms/{ROOM}", nodes[0].url))
        .bearer_auth(ADMIN)
        .json(&config)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Waits until every node counted the loss, within `wait`.
async fn wait_counted(client: &reqwest::Client, nodes: &[Node], wait: Duration) {
    let started = Instant::now();
    let deadline = started + wait;
    for node in nodes {
        while metric(client, &node.url, "waitroom_log_regressions_total").await < 1.0 {
            assert!(
                Instant::now() < deadline,
                "{} did not count the lost log within {wait:?}\n{}",
                node.url,
                log_tails(nodes)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("every node counted the loss after {:?}", started.elapsed());
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap()
}

/// The room configured and [`JOINS`] people in it, then the broker restarted empty
/// (`restart_empty`). Returns the nodes and the sessions of the people who joined.
async fn fleet_then_loss(
    client: &reqwest::Client,
    backend_url: &str,
    scratch: &Path,
    restart_empty: impl FnOnce(),
) -> (Vec<Node>, Vec<String>) {
    let nodes = start_nodes(client, backend_url, scratch).await;
    configure(client, &nodes).await;
    let before = join_in_turn(client, &nodes, "before the loss").await;
    wait_agreed(client, &nodes, CAPACITY, JOINS - CAPACITY).await;
    for node in &nodes {
        let counted = metric(client, &node.url, "waitroom_log_regressions_total").await;
        assert_eq!(counted, 0.0, "{}: nothing lost yet", node.url);
    }
    tokio::task::block_in_place(restart_empty);
    (nodes, before)
}

/// The scenario of the module documentation. `restart_empty` kills the broker and starts it
/// again with nothing.
async fn broker_lost_on(backend_url: &str, scratch: &Path, restart_empty: impl FnOnce()) {
    let client = client();
    let (nodes, before) = fleet_then_loss(&client, backend_url, scratch, restart_empty).await;
    wait_counted(&client, &nodes, DETECT_WAIT).await;
    assert!(
        wait_ready(&client, &nodes, READY_WAIT).await,
        "the nodes turned ready again\n{}",
        log_tails(&nodes)
    );
    // The room is back on every node with its configuration, and its lost line is empty.
    wait_agreed(&client, &nodes, 0, 0).await;
    for node in &nodes {
        let text = std::fs::read_to_string(&node.log_path).unwrap_or_default();
        assert!(
            text.contains("the log went back"),
            "{} logged the loss as an error\n{}",
            node.url,
            log_tails(&nodes)
        );
        for id in &before {
            let response = client
                .get(format!("{}/api/waiting-room/sessions/{id}", node.url))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                404,
                "{}: {id} joined before the broker lost everything",
                node.url
            );
        }
    }
    join_in_turn(&client, &nodes, "after the loss").await;
    wait_agreed(&client, &nodes, CAPACITY, JOINS - CAPACITY).await;
    if std::env::var_os("BROKER_LOST_SHOW_LOGS").is_some() {
        eprintln!("{}", log_tails(&nodes));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_lost_redis() {
    use waitroom_log::testkit::redis::{Persistence, RedisServer, require};
    if require("broker_lost_redis").is_none() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    // No persistence: killed and started again, it holds nothing.
    let mut redis = RedisServer::start(&scratch.path().join("redis"), Persistence::None).unwrap();
    let url = redis.url();
    broker_lost_on(&url, scratch.path(), || {
        redis.kill_9();
        redis.restart().unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_lost_rabbitmq() {
    use waitroom_log::testkit::rabbitmq::{RabbitMqServer, require};
    if require("broker_lost_rabbitmq").is_none() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let mut rabbitmq =
        tokio::task::block_in_place(|| RabbitMqServer::start(&scratch.path().join("rabbitmq")))
            .unwrap();
    let url = rabbitmq.url();
    broker_lost_on(&url, scratch.path(), || rabbitmq.restart_empty().unwrap()).await;
}

/// A backend whose nodes stop after the loss: within [`DETECT_WAIT`] none is ready, and they
/// stay so for [`STAYS_UNREADY_FOR`], refusing joins; with `count_wait`, every node counts the
/// loss within it too. Nodes
/// restarted afterwards start on what the broker holds (nothing: the room is configured again
/// by hand) and place new joins correctly.
async fn broker_lost_stopping_on(
    backend_url: &str,
    scratch: &Path,
    count_wait: Option<Duration>,
    restart_empty: impl FnOnce(),
) {
    let client = client();
    let (nodes, _) = fleet_then_loss(&client, backend_url, scratch, restart_empty).await;
    if let Some(wait) = count_wait {
        wait_counted(&client, &nodes, wait).await;
    }
    let deadline = Instant::now() + DETECT_WAIT;
    for node in &nodes {
        while ready(&client, &node.url).await {
            assert!(
                Instant::now() < deadline,
                "{} stayed ready on a broker that lost everything\n{}",
                node.url,
                log_tails(&nodes)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let until = Instant::now() + STAYS_UNREADY_FOR;
    while Instant::now() < until {
        for node in &nodes {
            assert!(
                !ready(&client, &node.url).await,
                "{} turned ready on a log that lost what it applied\n{}",
                node.url,
                log_tails(&nodes)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, view) = join(&client, &nodes[0].url).await;
    assert_ne!(status, 201, "a join on a stopped node: {view}");
    drop(nodes);
    let nodes = start_nodes(&client, backend_url, scratch).await;
    assert!(
        room(&client, &nodes[0].url).await.is_none(),
        "the room went with the broker's data"
    );
    configure(&client, &nodes).await;
    join_in_turn(&client, &nodes, "after the restart").await;
    wait_agreed(&client, &nodes, CAPACITY, JOINS - CAPACITY).await;
    if std::env::var_os("BROKER_LOST_SHOW_LOGS").is_some() {
        eprintln!("{}", log_tails(&nodes));
    }
}

/// Kafka: the nodes stop (unready, joins refused) rather than go on; see
/// docs/backends/kafka.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_lost_kafka() {
    use waitroom_log::testkit::kafka::{Storage, TansuServer, require};
    if require("broker_lost_kafka").is_none() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    // Memory storage: killed and started again, the broker holds nothing.
    let mut broker = TansuServer::start(&scratch.path().join("tansu"), Storage::Memory).unwrap();
    let url = broker.url();
    // Not asserted that the nodes count it: about one run in ten, a node's subscription stays
    // silent after librdkafka's `AllBrokersDown` (no reconnection attempt ends within minutes),
    // so that node stays unready without finding the topic gone. That the subscription says
    // `Event::Regressed` is checked in waitroom-log's Kafka tests
    // (`a_broker_that_lost_acknowledged_records_is_refused_loudly`).
    broker_lost_stopping_on(&url, scratch.path(), None, || {
        broker.kill_9();
        broker.restart().unwrap();
    })
    .await;
}

/// SQS on moto, which keeps nothing across a restart (AWS never loses what it acknowledged; this
/// is a bucket and queues deleted and created again): the intake queue is gone, so appends and
/// stamping fail and the nodes stop (unready, joins refused) rather than go on. Not counted: no
/// node can tell a history that started again from one that goes on. See docs/backends/sqs.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg(feature = "sqs")]
async fn broker_lost_sqs() {
    use waitroom_log::testkit::moto::{MotoServer, require};
    let Some(venv) = require("broker_lost_sqs") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("moto");
    let mut moto = tokio::task::block_in_place(|| MotoServer::start(&dir, &venv)).unwrap();
    let url = moto.url();
    let port = moto.port();
    broker_lost_stopping_on(&url, scratch.path(), None, || {
        moto.kill_9();
        // The launcher creates the test bucket again: only the intake queue stays missing.
        moto = MotoServer::start_on(port, &dir, &venv).unwrap();
    })
    .await;
}
