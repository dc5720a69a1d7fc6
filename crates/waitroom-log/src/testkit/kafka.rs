//! The one launcher of the Kafka-compatible broker `tansu` (crates.io: `cargo install tansu
//! --locked --features dynostore,libsql`) for tests, `scripts/test` and `bench/`: a private
//! broker on a free loopback port with its own directory, ready when it answers a Kafka
//! `ApiVersions` request, stopped by its PID (a dropped [`TansuServer`] is killed).
//!
//! Two storage engines: memory (`memory://`, feature `dynostore`: nothing survives a stop) and
//! SQLite (`sqlite://`, feature `libsql`: a file in the broker's directory, kept across a crash
//! and restart). What tansu 0.6.0 lacks, and how the URLs of [`TansuServer::url`] work around it:
//! - a batch of several records is stored under its first offset only (high watermark and
//!   offsets go wrong): producers send one record per batch, `batch.num.messages=1`;
//! - a fetch with nothing to return is answered only when its wait is over, even if records
//!   arrive meanwhile: consumers wait at most `fetch.wait.max.ms=10`;
//! - `DeleteRecords` is implemented by neither engine (the broker's handler panics, and the
//!   connection hangs): `delete-records=false` (trimming then moves the markers only);
//! - `LogAppendTime` is not applied: records keep the producer's time;
//! - `retention.ms=-1` is read as "delete every record" on a topic that sets `cleanup.policy`
//!   to `delete` (the Kafka log leaves that setting at the default, so this does not bite);
//! - the memory engine never compacts: the snapshot topic keeps every record there (the SQLite
//!   engine compacts it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{find_binary, free_port, skip, wait_until};

/// Longest the broker may take to answer its first request (< 0.1 s here).
pub const START_WAIT: Duration = Duration::from_secs(30);

/// The tansu version the tests are written against (its bugs are listed above).
pub const TANSU_VERSION: &str = "0.6.0";

/// Client properties and options every URL of a test broker carries: the workarounds listed
/// above.
pub const TANSU_CLIENT_PROPERTIES: &str =
    "batch.num.messages=1&fetch.wait.max.ms=10&delete-records=false";

/// Where the broker keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// In memory: fast; nothing survives a stop.
    Memory,
    /// A SQLite file in the broker's directory: survives a crash and restart.
    Sqlite,
}

impl Storage {
    /// `memory` or `sqlite`.
    ///
    /// # Errors
    /// Any other text.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "memory" => Ok(Storage::Memory),
            "sqlite" => Ok(Storage::Sqlite),
            other => Err(format!("storage {other:?}: memory or sqlite")),
        }
    }

    fn engine_url(self) -> &'static str {
        match self {
            Storage::Memory => "memory://tansu/",
            // Relative to the broker's working directory, its own directory.
            Storage::Sqlite => "sqlite://tansu.db",
        }
    }
}

/// The `tansu` binary: `WAITROOM_TANSU` if set, else `tansu` on `PATH`.
pub fn binary() -> Option<PathBuf> {
    match std::env::var_os("WAITROOM_TANSU") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => find_binary("tansu"),
    }
}

/// True when `tansu` is installed.
pub fn installed() -> bool {
    binary().is_some()
}

/// A `tansu broker` child process on 127.0.0.1, killed (SIGKILL, by PID) when dropped.
#[derive(Debug)]
pub struct TansuServer {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    storage: Storage,
    child: Option<Child>,
}

impl TansuServer {
    /// Starts a broker on a free port, keeping its files in `dir` (created).
    ///
    /// # Errors
    /// `tansu` is not installed, lacks the storage engine (the message says which cargo
    /// feature), or did not answer within [`START_WAIT`].
    pub fn start(dir: &Path, storage: Storage) -> Result<Self, String> {
        Self::start_on(free_port(), dir, storage)
    }

    /// Starts a broker on `port`.
    ///
    /// # Errors
    /// As [`TansuServer::start`].
    pub fn start_on(port: u16, dir: &Path, storage: Storage) -> Result<Self, String> {
        let binary = binary().ok_or_else(|| {
            "tansu is not installed (cargo install tansu --locked --features dynostore,libsql)"
                .to_owned()
        })?;
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut server = Self {
            binary,
            port,
            dir: dir.to_path_buf(),
            storage,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let log_path = self.dir.join("tansu.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&self.binary)
            .arg("broker")
            .args(["--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", self.storage.engine_url()])
            .current_dir(&self.dir)
            // A process group of its own: a signal to the caller's group (Ctrl-C in a shell
            // that started it through `waitroom-servers`) does not stop it; its PID does.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| format!("opening {}: {e}", log_path.display()))?,
            )
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting tansu: {e}"))?;
        self.child = Some(child);
        let port = self.port;
        let mut gone = false;
        let child = &mut self.child;
        let ready = wait_until(&format!("tansu on port {port}"), START_WAIT, || {
            gone = child
                .as_mut()
                .is_some_and(|child| child.try_wait().ok().flatten().is_some());
            gone || answers_api_versions(port)
        });
        if gone || ready.is_err() {
            self.kill_9();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            let hint = if log.contains("FeatureNotEnabled") {
                " (this tansu lacks the storage engine: cargo install tansu --locked --features \
                 dynostore,libsql)"
            } else {
                ""
            };
            return Err(format!("tansu on port {port} did not start{hint}:\n{tail}"));
        }
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// The `--backend` URL for this broker, with the client properties and options that work
    /// around what tansu lacks ([`TANSU_CLIENT_PROPERTIES`]).
    pub fn url(&self) -> String {
        format!("kafka://127.0.0.1:{}?{TANSU_CLIENT_PROPERTIES}", self.port)
    }

    /// The broker's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the broker like a crash (SIGKILL) and reaps it.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error only says it has exited already.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port and directory (after [`TansuServer::kill_9`]):
    /// with SQLite storage it has its records back; with memory storage it starts empty.
    ///
    /// # Errors
    /// As [`TansuServer::start`].
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill_9();
        self.spawn()
    }

    /// Leaves the broker running after this handle is gone (for `waitroom-servers`, whose
    /// caller stops it by PID); returns its PID.
    pub fn detach(mut self) -> Option<u32> {
        self.child.take().map(|child| child.id())
    }
}

impl super::TestServer for TansuServer {
    fn backend_url(&self) -> String {
        self.url()
    }

    fn kill_9(&mut self) {
        TansuServer::kill_9(self);
    }

    fn restart(&mut self) -> Result<(), String> {
        TansuServer::restart(self)
    }
}

impl Drop for TansuServer {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// True when a Kafka broker on `port` answers `ApiVersions` (v0) without an error.
fn answers_api_versions(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    // Size 10 | api key 18 (ApiVersions) | version 0 | correlation id 7 | null client id.
    let request: [u8; 14] = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 7, 0xff, 0xff];
    if stream.write_all(&request).is_err() {
        return false;
    }
    let mut reply = [0_u8; 10];
    stream.read_exact(&mut reply).is_ok() && reply[4..8] == [0, 0, 0, 7] && reply[8..10] == [0, 0]
}

/// The broker a test uses: the one `scripts/test` started (`WAITROOM_TEST_KAFKA_URL`), or else a
/// private one started for the test (kept alive by this handle).
#[derive(Debug)]
pub struct TestKafka {
    url: String,
    _private: Option<(TansuServer, tempfile::TempDir)>,
}

impl TestKafka {
    /// The backend URL of the broker (with the workarounds of [`TansuServer::url`]).
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The broker for `test` (memory storage), or `None` (after a loud `SKIPPED` line) when none is
/// configured and `tansu` is not installed.
///
/// # Panics
/// With `CI=true` instead of skipping; when a private broker cannot be started.
pub fn for_test(test: &str) -> Option<TestKafka> {
    if let Ok(url) = std::env::var("WAITROOM_TEST_KAFKA_URL")
        && !url.trim().is_empty()
    {
        return Some(TestKafka {
            url: url.trim().to_owned(),
            _private: None,
        });
    }
    require(test)?;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server =
        TansuServer::start(dir.path(), Storage::Memory).unwrap_or_else(|e| panic!("{test}: {e}"));
    Some(TestKafka {
        url: server.url(),
        _private: Some((server, dir)),
    })
}

/// `tansu` for a test that starts (and restarts) its own: its presence, or `None` after a loud
/// `SKIPPED` line.
///
/// # Panics
/// With `CI=true` when it is not installed.
pub fn require(test: &str) -> Option<()> {
    if installed() {
        return Some(());
    }
    skip(
        test,
        "needs tansu (cargo install tansu --locked --features dynostore,libsql), or \
         WAITROOM_TEST_KAFKA_URL",
    );
    None
}
