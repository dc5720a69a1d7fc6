//! Crash safety of the embedded node: `kill -9` mid-load loses nothing that was acknowledged,
//! and a torn final record is dropped cleanly on restart.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};

const ADMIN: &str = "crash-test-admin-token-0123";

struct Process {
    child: Child,
    url: String,
}

impl Process {
    /// Starts `waitroom serve` on a random port and waits until it is ready.
    async fn start(data_dir: &Path) -> Process {
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
            .arg("--data-dir")
            .arg(data_dir)
            .env("WAITROOM_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn waitroom");
        let stdout = child.stdout.take().expect("stdout");
        let url = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let line = lines.next().expect("a line").expect("readable");
            line.rsplit(' ').next().expect("url").to_string()
        })
        .await
        .expect("read the url");
        let process = Process { child, url };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{}/readyz", process.url)).send().await
                && r.status() == 200
            {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not become ready");
    }

    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = self.child.wait().expect("exit");
        assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn last_segment(data_dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data_dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

#[derive(Clone, Debug)]
struct Acknowledged {
    id: String,
    status: String,
    position: Option<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_nothing_acknowledged_and_torn_tails_are_dropped() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = Process::start(data.path()).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let config = json!({
        "capacity": 5,
        "activeIdleTimeoutSeconds": 3600,
        "maxActiveSeconds": 7200,
        "waitingIdleTimeoutSeconds": 3600,
    });
    let put = client
        .put(format!("{}/api/waiting-room/rooms/crash", server.url))
        .bearer_auth(ADMIN)
        .json(&config)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    // Eight clients join as fast as they can; every 2xx answer is recorded.
    let acknowledged = Arc::new(Mutex::new(Vec::<Acknowledged>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (client, url, acknowledged, stop) = (
            client.clone(),
            server.url.clone(),
            acknowledged.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let response = client
                    .post(format!("{url}/api/waiting-room/sessions"))
                    .json(&json!({ "roomId": "crash" }))
                    .send()
                    .await;
                let Ok(response) = response else { break };
                if !response.status().is_success() {
                    continue;
                }
                let Ok(view) = response.json::<Value>().await else {
                    break;
                };
                acknowledged.lock().push(Acknowledged {
                    id: view["waitingRoomSessionId"].as_str().unwrap().to_string(),
                    status: view["status"].as_str().unwrap().to_string(),
                    position: view["position"].as_u64(),
                });
            }
        }));
    }
    // Kill the server mid-load, once a few hundred joins were acknowledged.
    while acknowledged.lock().len() < 400 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill_9();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let acknowledged = acknowledged.lock().clone();
    assert!(acknowledged.len() >= 400);

    // Restart on the same data dir: every acknowledged session is there, unchanged.
    let server = Process::start(data.path()).await;
    let check = |server: &Process| {
        let (client, url, acknowledged) =
            (client.clone(), server.url.clone(), acknowledged.clone());
        async move {
            for a in &acknowledged {
                let view: Value = client
                    .get(format!("{url}/api/waiting-room/sessions/{}", a.id))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(
                    view["status"].as_str(),
                    Some(a.status.as_str()),
                    "{a:?} after restart: {view}"
                );
                assert_eq!(
                    view["position"].as_u64(),
                    a.position,
                    "{a:?} after restart: {view}"
                );
            }
        }
    };
    check(&server).await;
    let room: Value = client
        .get(format!("{}/api/waiting-room/rooms/crash", server.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let waiting = room["stats"]["waitingCount"].as_u64().unwrap();
    let max_position = acknowledged
        .iter()
        .filter_map(|a| a.position)
        .max()
        .unwrap();
    assert!(waiting > max_position);
    // Joins continue with the next position.
    let view: Value = client
        .post(format!("{}/api/waiting-room/sessions", server.url))
        .json(&json!({ "roomId": "crash" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["position"].as_u64(), Some(waiting));

    // A torn final record (the start of a frame, cut short) is dropped on the next start.
    server.terminate();
    let segment = last_segment(data.path());
    let intact_len = std::fs::metadata(&segment).unwrap().len();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    file.write_all(&[200, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3])
        .unwrap();
    drop(file);
    let server = Process::start(data.path()).await;
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        intact_len,
        "the torn tail was truncated"
    );
    check(&server).await;
    let after: Value = client
        .post(format!("{}/api/waiting-room/sessions", server.url))
        .json(&json!({ "roomId": "crash" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after["position"].as_u64(), Some(waiting + 1));
    server.kill_9();
}
