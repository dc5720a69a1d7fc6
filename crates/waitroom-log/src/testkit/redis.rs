//! The one launcher of `redis-server` (Debian package `redis-server`) for tests, `scripts/test`
//! and `bench/`: a private server on a free loopback port with its own directory, ready when it
//! answers `PING`, stopped by its PID (a dropped [`RedisServer`] is killed).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{find_binary, free_port, skip, wait_until};

/// Longest a server may take to answer its first `PING` (tens of milliseconds here; a loaded
/// CI machine replaying a large AOF takes longer).
pub const START_WAIT: Duration = Duration::from_secs(60);

/// Longest a Cluster may take to agree that every slot is served.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(60);

/// What a Redis keeps across its own crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing (`--save '' --appendonly no`): the fastest, for tests that never restart it.
    None,
    /// AOF with `appendfsync everysec`: up to about a second of acknowledged writes lost.
    EverySec,
    /// AOF with `appendfsync always`: nothing acknowledged lost.
    Always,
}

impl Persistence {
    fn args(self) -> &'static [&'static str] {
        match self {
            Persistence::None => &["--save", "", "--appendonly", "no"],
            Persistence::EverySec => &[
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ],
            Persistence::Always => &[
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
        }
    }

    /// `none`, `everysec` or `always`.
    ///
    /// # Errors
    /// Any other text.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "none" => Ok(Persistence::None),
            "everysec" => Ok(Persistence::EverySec),
            "always" => Ok(Persistence::Always),
            other => Err(format!("persistence {other:?}: none, everysec or always")),
        }
    }
}

/// True when `redis-server` is on `PATH`.
pub fn installed() -> bool {
    find_binary("redis-server").is_some()
}

/// A `redis-server` child process on 127.0.0.1, killed (SIGKILL, by PID) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    persistence: Persistence,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port, keeping its files in `dir` (created).
    ///
    /// # Errors
    /// `redis-server` is not installed, or did not start within [`START_WAIT`].
    pub fn start(dir: &Path, persistence: Persistence) -> Result<Self, String> {
        Self::start_with(free_port(), dir, persistence, &[])
    }

    /// Starts a server on `port` with `extra` arguments.
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn start_with(
        port: u16,
        dir: &Path,
        persistence: Persistence,
        extra: &[&str],
    ) -> Result<Self, String> {
        let binary = find_binary("redis-server").ok_or_else(|| {
            "redis-server is not installed (Debian package redis-server)".to_owned()
        })?;
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut server = Self {
            binary,
            port,
            dir: dir.to_path_buf(),
            persistence,
            extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .args(self.persistence.args())
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting redis-server: {e}"))?;
        self.child = Some(child);
        let port = self.port;
        let exited = |child: &mut Option<Child>| {
            child
                .as_mut()
                .is_some_and(|child| child.try_wait().ok().flatten().is_some())
        };
        let mut gone = false;
        wait_until(&format!("redis-server on port {port}"), START_WAIT, || {
            gone = exited(&mut self.child);
            gone || ping(port)
        })?;
        if gone {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "redis-server on port {port} exited at start:\n{log}"
            ));
        }
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server like a crash (SIGKILL) and reaps it.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error only says it has exited already.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (after [`RedisServer::kill_9`]).
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill_9();
        self.spawn()
    }

    /// Leaves the server running after this handle is gone (for `waitroom-servers`, whose
    /// caller stops it by PID); returns its PID.
    pub fn detach(mut self) -> Option<u32> {
        self.child.take().map(|child| child.id())
    }
}

impl super::TestServer for RedisServer {
    fn backend_url(&self) -> String {
        self.url()
    }

    fn kill_9(&mut self) {
        RedisServer::kill_9(self);
    }

    fn restart(&mut self) -> Result<(), String> {
        RedisServer::restart(self)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// True when a Redis answers `PING` on `port`.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// A Redis Cluster of three masters (no replicas) on free ports; dropping it kills them.
#[derive(Debug)]
pub struct RedisCluster {
    pub servers: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three servers in directories under `dir`, joins them (`redis-cli --cluster
    /// create`), and waits until every node says the cluster is up.
    ///
    /// # Errors
    /// A server did not start, `redis-cli` failed, or the cluster did not come up within
    /// [`CLUSTER_WAIT`].
    pub fn start(dir: &Path) -> Result<Self, String> {
        let mut servers = Vec::new();
        for index in 0..3 {
            let bus_port = free_port().to_string();
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                bus_port.as_str(),
                "--cluster-config-file",
                "nodes.conf",
            ];
            servers.push(RedisServer::start_with(
                free_port(),
                &dir.join(format!("node{index}")),
                Persistence::None,
                &args,
            )?);
        }
        let cluster = Self { servers };
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.addresses())
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running redis-cli --cluster create: {e}"))?;
        if !created.status.success() {
            return Err(format!(
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&created.stdout)
            ));
        }
        for server in &cluster.servers {
            let port = server.port();
            wait_until("the cluster to come up", CLUSTER_WAIT, || {
                Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|out| {
                        String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok")
                    })
            })?;
        }
        Ok(cluster)
    }

    fn addresses(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|server| format!("127.0.0.1:{}", server.port()))
            .collect()
    }

    /// `redis+cluster://127.0.0.1:<port>,…`.
    pub fn url(&self) -> String {
        format!("redis+cluster://{}", self.addresses().join(","))
    }
}

/// The Redis a test uses: the one `scripts/test` started (`WAITROOM_TEST_REDIS_URL`), or else a
/// private one started for the test (kept alive by this handle).
#[derive(Debug)]
pub struct TestRedis {
    url: String,
    _private: Option<(RedisServer, tempfile::TempDir)>,
}

impl TestRedis {
    /// `redis://127.0.0.1:<port>` of the server.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The Redis for `test`, or `None` (after a loud `SKIPPED` line) when none is configured and
/// `redis-server` is not installed.
///
/// # Panics
/// With `CI=true` instead of skipping; when a private server cannot be started.
pub fn for_test(test: &str) -> Option<TestRedis> {
    if let Ok(url) = std::env::var("WAITROOM_TEST_REDIS_URL")
        && !url.trim().is_empty()
    {
        return Some(TestRedis {
            url: url.trim().to_owned(),
            _private: None,
        });
    }
    if !installed() {
        skip(
            test,
            "needs redis-server (apt-get install redis-server), or WAITROOM_TEST_REDIS_URL",
        );
        return None;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server =
        RedisServer::start(dir.path(), Persistence::None).unwrap_or_else(|e| panic!("{test}: {e}"));
    Some(TestRedis {
        url: server.url(),
        _private: Some((server, dir)),
    })
}

/// `redis-server` for a test that starts (and restarts) its own: the binary's presence, or
/// `None` after a loud `SKIPPED` line.
///
/// # Panics
/// With `CI=true` when it is not installed.
pub fn require(test: &str) -> Option<()> {
    if installed() {
        return Some(());
    }
    skip(test, "needs redis-server (apt-get install redis-server)");
    None
}
