//! Starting real servers for integration tests: `waitroom::server::run` on 127.0.0.1:0 with a
//! temporary data dir, driven over HTTP.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use waitroom::ServeOptions;
use waitroom::node::Node;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct TestServer {
    pub url: String,
    pub node: Arc<Node>,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

pub fn options(data_dir: &std::path::Path) -> ServeOptions {
    ServeOptions {
        data_dir: data_dir.to_path_buf(),
        admin_token: Some(ADMIN_TOKEN.into()),
        join_rate_per_ip: 0,
        drain_timeout_ms: 1_000,
        ..ServeOptions::default()
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut ServeOptions)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut options = options(data_dir.path());
        configure(&mut options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (shutdown, stop) = oneshot::channel::<()>();
        let (started_tx, started_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            waitroom::server::run_with(
                listener,
                async move {
                    let _ = stop.await;
                },
                options,
                move |started| {
                    let _ = started_tx.send((started.url.clone(), started.node.clone()));
                },
            )
            .await
        });
        let (url, node) = match tokio::time::timeout(Duration::from_secs(10), started_rx)
            .await
            .expect("server started in time")
        {
            Ok(started) => started,
            // The server stopped before it started: say why.
            Err(_) => panic!("the server did not start: {:?}", task.await),
        };
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let server = TestServer {
            url,
            node,
            client,
            data_dir,
            shutdown: Some(shutdown),
            task: Some(task),
        };
        server.wait_ready().await;
        server
    }

    pub async fn wait_ready(&self) {
        self.node
            .wait_ready(Duration::from_secs(10))
            .await
            .expect("node ready");
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server ran");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn put_room(&self, room: &str, config: Value) -> Value {
        let response = self
            .client
            .put(self.url(&format!("/api/waiting-room/rooms/{room}")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&config)
            .send()
            .await
            .expect("PUT room");
        assert_eq!(
            response.status(),
            200,
            "PUT room: {:?}",
            response.text().await
        );
        response.json().await.expect("room body")
    }

    pub async fn room(&self, room: &str) -> Value {
        let response = self
            .client
            .get(self.url(&format!("/api/waiting-room/rooms/{room}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET room");
        assert_eq!(response.status(), 200);
        response.json().await.expect("room body")
    }

    /// Joins; returns (status, body).
    pub async fn join(&self, room: &str) -> (u16, Value) {
        self.join_with_key(room, None).await
    }

    pub async fn join_with_key(&self, room: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = self
            .client
            .post(self.url("/api/waiting-room/sessions"))
            .json(&json!({ "roomId": room }));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("join");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn session(&self, id: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(&format!("/api/waiting-room/sessions/{id}")))
            .send()
            .await
            .expect("GET session");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_action(&self, id: &str, action: &str, bearer: Option<&str>) -> (u16, Value) {
        let mut request = self
            .client
            .post(self.url(&format!("/api/waiting-room/sessions/{id}:{action}")));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST action");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn heartbeat(&self, id: &str) -> (u16, Value) {
        self.post_action(id, "heartbeat", None).await
    }

    pub async fn leave(&self, id: &str) -> (u16, Value) {
        let response = self
            .client
            .delete(self.url(&format!("/api/waiting-room/sessions/{id}")))
            .send()
            .await
            .expect("DELETE session");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

pub fn id(view: &Value) -> String {
    view["waitingRoomSessionId"]
        .as_str()
        .expect("session id")
        .to_string()
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Logs to the test output once (`RUST_LOG`-style filter in `WAITROOM_LOG`).
pub fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("WAITROOM_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
    });
}
