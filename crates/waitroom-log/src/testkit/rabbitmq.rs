//! The one launcher of RabbitMQ (Debian package `rabbitmq-server`) for tests, `scripts/test`
//! and `bench/`: a private node on free loopback ports with its own data directory, home (and so
//! Erlang cookie), node name and port mapper (`epmd`), the stream plugin enabled; ready when
//! `rabbitmqctl wait` says so; stopped by its PID.
//!
//! As root, Debian's `/usr/sbin/rabbitmq*` switch to the `rabbitmq` user, so the scripts under
//! `/usr/lib/rabbitmq/bin` are run directly, with the same `HOME` for the server and the CLI.
//! `RUNNING_UNDER_SYSTEMD` makes the server script `exec` the Erlang VM, so the child's PID is the
//! broker's. The node's `epmd` is started first, as a child too (the VM would otherwise start one
//! that nobody stops).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{find_binary, free_port, skip};

/// Longest a node may take to start (6–11 s on a fresh data directory here; longer on a loaded
/// CI machine, or when it recovers streams after a crash).
pub const START_WAIT: Duration = Duration::from_secs(120);
/// Starts on fresh ports when a port was taken before the node bound it (see `start`).
const START_ATTEMPTS_MAX: u32 = 3;

/// Longest a node may take to stop after SIGTERM before it is killed.
pub const STOP_WAIT: Duration = Duration::from_secs(30);

/// Where Debian installs the scripts that run without switching user.
const SCRIPTS_DIR: &str = "/usr/lib/rabbitmq/bin";

fn script(name: &str) -> Option<PathBuf> {
    let debian = Path::new(SCRIPTS_DIR).join(name);
    if debian.is_file() {
        Some(debian)
    } else {
        find_binary(name)
    }
}

/// True when `rabbitmq-server` is installed.
pub fn installed() -> bool {
    script("rabbitmq-server").is_some()
        && script("rabbitmqctl").is_some()
        && find_binary("epmd").is_some()
}

/// The ports of one node.
#[derive(Clone, Copy, Debug)]
struct Ports {
    amqp: u16,
    distribution: u16,
    epmd: u16,
    stream: u16,
}

/// A RabbitMQ node (and its `epmd`) as child processes on 127.0.0.1, killed (SIGKILL, by PID)
/// when dropped.
#[derive(Debug)]
pub struct RabbitMqServer {
    dir: PathBuf,
    ports: Ports,
    node: String,
    epmd: Option<Child>,
    server: Option<Child>,
}

impl RabbitMqServer {
    /// Starts a node on free ports, keeping its files in `dir` (created).
    ///
    /// # Errors
    /// RabbitMQ is not installed, or the node did not start within [`START_WAIT`].
    pub fn start(dir: &Path) -> Result<Self, String> {
        // The ports are picked free (`free_port`) seconds before the node binds them, and other
        // processes' outgoing connections may take one meanwhile (seen once in five fault-suite
        // runs): then the node is started again on other ports.
        let mut attempt = 1;
        loop {
            match Self::start_on(dir, free_port()) {
                Err(why) if why.contains("could not bind") && attempt < START_ATTEMPTS_MAX => {
                    eprintln!(
                        "RabbitMQ launcher: a port was taken before the node bound it; starting it again on others ({why})"
                    );
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    /// Starts a node whose stream port is `stream_port` (the other ports are free ones).
    ///
    /// # Errors
    /// As [`RabbitMqServer::start`].
    pub fn start_on(dir: &Path, stream_port: u16) -> Result<Self, String> {
        if !installed() {
            return Err("rabbitmq-server is not installed (Debian package rabbitmq-server)".into());
        }
        let ports = Ports {
            amqp: free_port(),
            distribution: free_port(),
            epmd: free_port(),
            stream: stream_port,
        };
        for sub in ["home", "mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| format!("creating {}: {e}", dir.join(sub).display()))?;
        }
        let config = format!(
            "listeners.tcp.default = 127.0.0.1:{}\nstream.listeners.tcp.default = 127.0.0.1:{}\n",
            ports.amqp, ports.stream
        );
        std::fs::write(dir.join("rabbitmq.conf"), config)
            .map_err(|e| format!("writing rabbitmq.conf: {e}"))?;
        std::fs::write(dir.join("enabled_plugins"), "[rabbitmq_stream].\n")
            .map_err(|e| format!("writing enabled_plugins: {e}"))?;
        let mut server = Self {
            dir: dir.to_path_buf(),
            node: format!("waitroom-{}@localhost", ports.stream),
            ports,
            epmd: None,
            server: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// The environment every RabbitMQ script of this node runs with.
    fn environment(&self, command: &mut Command) {
        let dir = &self.dir;
        command
            .env("HOME", dir.join("home"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.ports.amqp.to_string())
            .env("RABBITMQ_DIST_PORT", self.ports.distribution.to_string())
            .env("ERL_EPMD_PORT", self.ports.epmd.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", self.pid_file())
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            // A node that fails to start writes a crash dump: into its scratch dir, not into the
            // directory the test runs in (the source tree).
            .env("ERL_CRASH_DUMP", dir.join("erl_crash.dump"));
        command.current_dir(dir);
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("rabbitmq.pid")
    }

    fn spawn(&mut self) -> Result<(), String> {
        let epmd_alive = self
            .epmd
            .as_mut()
            .is_some_and(|epmd| epmd.try_wait().ok().flatten().is_none());
        if !epmd_alive {
            let epmd = Command::new(find_binary("epmd").ok_or("epmd is not installed")?)
                .args([
                    "-port",
                    &self.ports.epmd.to_string(),
                    "-address",
                    "127.0.0.1",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .map_err(|e| format!("starting epmd: {e}"))?;
            self.epmd = Some(epmd);
        }
        let _ = std::fs::remove_file(self.pid_file());
        let output = std::fs::File::create(self.dir.join("server.out"))
            .map_err(|e| format!("creating server.out: {e}"))?;
        let errors = output
            .try_clone()
            .map_err(|e| format!("opening server.out: {e}"))?;
        let mut command =
            Command::new(script("rabbitmq-server").ok_or("rabbitmq-server is not installed")?);
        self.environment(&mut command);
        let child = command
            .env("RUNNING_UNDER_SYSTEMD", "true")
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting rabbitmq-server: {e}"))?;
        self.server = Some(child);
        let started = Instant::now();
        let (waited, exited) = loop {
            let mut wait =
                Command::new(script("rabbitmqctl").ok_or("rabbitmqctl is not installed")?);
            self.environment(&mut wait);
            let left = START_WAIT
                .saturating_sub(started.elapsed())
                .as_secs()
                .max(1);
            let waited = wait
                .args(["wait", "--timeout", &left.to_string()])
                .arg(self.pid_file())
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running rabbitmqctl wait: {e}"))?;
            let exited = self
                .server
                .as_mut()
                .is_none_or(|server| server.try_wait().ok().flatten().is_some());
            // `rabbitmqctl wait` reads the PID file as soon as it exists: caught between its
            // creation and its write, it reads it empty and gives up ("garbage_in_pid_file").
            // The node is still starting then: wait again.
            let torn_read = String::from_utf8_lossy(&waited.stderr).contains("garbage_in_pid_file");
            if waited.status.success() || exited || !torn_read || started.elapsed() >= START_WAIT {
                break (waited, exited);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if !waited.status.success() || exited {
            let log = std::fs::read_to_string(self.dir.join("server.out")).unwrap_or_default();
            self.kill_now();
            return Err(format!(
                "RabbitMQ node {} did not start within {:?}: {}\n{}\n{log}",
                self.node,
                started.elapsed(),
                String::from_utf8_lossy(&waited.stdout),
                String::from_utf8_lossy(&waited.stderr)
            ));
        }
        Ok(())
    }

    /// The stream protocol's port.
    pub fn port(&self) -> u16 {
        self.ports.stream
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `rabbitmq-stream://guest:guest@127.0.0.1:<port>/%2F`.
    pub fn url(&self) -> String {
        format!(
            "rabbitmq-stream://guest:guest@127.0.0.1:{}/%2F",
            self.ports.stream
        )
    }

    /// The broker's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// Has the node write its DETS tables to disk, as it does by itself at most three minutes
    /// after a change.
    ///
    /// Why: RabbitMQ 3.10 (Ra 2.2) records the stream coordinator in a DETS table that is saved
    /// three minutes after it changes. A node killed within three minutes of creating its first
    /// stream restarts without that record, and every stream stays down (checked: `names.dets`
    /// empty, `rabbitmqctl list_queues` shows the streams `down`, and nothing brings them back).
    /// A node that ran for three minutes is not affected. Tests crash nodes seconds after they
    /// start, so [`RabbitMqServer::kill_9`] saves first: the crash then loses what a crash of a
    /// node that has been up for a while loses.
    ///
    /// # Errors
    /// `rabbitmqctl` failed.
    pub fn save_metadata(&self) -> Result<(), String> {
        if self.server.is_none() {
            return Ok(());
        }
        let mut sync = Command::new(script("rabbitmqctl").ok_or("rabbitmqctl is not installed")?);
        self.environment(&mut sync);
        let output = sync
            .args(["eval", "[dets:sync(Table) || Table <- dets:all()]."])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running rabbitmqctl eval: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "saving the DETS tables of {}: {}",
                self.node,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Kills the broker like a crash (SIGKILL) and reaps it; its `epmd` keeps running. The
    /// node saves its DETS tables first (see [`RabbitMqServer::save_metadata`]).
    pub fn kill_9(&mut self) {
        if let Err(error) = self.save_metadata() {
            eprintln!("{error}");
        }
        self.kill_now();
    }

    /// Kills the broker (SIGKILL) at once and reaps it.
    fn kill_now(&mut self) {
        if let Some(mut server) = self.server.take() {
            // An error only says it has exited already.
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    /// Starts the broker again on the same ports and data (after [`RabbitMqServer::kill_9`]).
    ///
    /// # Errors
    /// As [`RabbitMqServer::start`].
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill_now();
        self.spawn()
    }

    /// Kills the broker (SIGKILL) and starts it again on the same ports with an empty data dir
    /// (its `mnesia` directory wiped): a broker that lost everything, streams and all.
    ///
    /// # Errors
    /// The data dir could not be wiped, or as [`RabbitMqServer::start`].
    pub fn restart_empty(&mut self) -> Result<(), String> {
        self.kill_now();
        let mnesia = self.dir.join("mnesia");
        std::fs::remove_dir_all(&mnesia)
            .and_then(|()| std::fs::create_dir_all(&mnesia))
            .map_err(|e| format!("wiping {}: {e}", mnesia.display()))?;
        self.spawn()
    }

    /// Leaves the node running after this handle is gone (for `waitroom-servers`, whose caller
    /// stops it by PID); returns the PIDs of the broker and of its `epmd`.
    pub fn detach(mut self) -> (Option<u32>, Option<u32>) {
        (
            self.server.take().map(|child| child.id()),
            self.epmd.take().map(|child| child.id()),
        )
    }
}

impl super::TestServer for RabbitMqServer {
    fn backend_url(&self) -> String {
        self.url()
    }

    fn kill_9(&mut self) {
        RabbitMqServer::kill_9(self);
    }

    fn restart(&mut self) -> Result<(), String> {
        RabbitMqServer::restart(self)
    }
}

impl Drop for RabbitMqServer {
    fn drop(&mut self) {
        self.kill_now();
        if let Some(mut epmd) = self.epmd.take() {
            let _ = epmd.kill();
            let _ = epmd.wait();
        }
    }
}

/// The RabbitMQ a test uses: the one `scripts/test` started (`WAITROOM_TEST_RABBITMQ_URL`), or
/// else one node started for the whole test binary (see [`for_test`]).
#[derive(Clone, Debug)]
pub struct TestRabbitMq {
    url: String,
}

impl TestRabbitMq {
    /// `rabbitmq-stream://…` of the node.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The node shared by a test binary's tests: a node takes seconds to start, so tests share one.
/// It is stopped when the test binary exits by a watcher process started with it, which waits
/// for the test binary to end, then kills the node and its `epmd` by PID and deletes its
/// directory.
fn shared_node() -> Result<String, String> {
    static NODE: OnceLock<Result<String, String>> = OnceLock::new();
    NODE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "waitroom-rabbitmq-test-{}-{}",
            std::process::id(),
            free_port()
        ));
        let server = RabbitMqServer::start(&dir)?;
        let url = server.url();
        let (server_pid, epmd_pid) = server.detach();
        let pids: Vec<String> = [server_pid, epmd_pid]
            .into_iter()
            .flatten()
            .map(|pid| pid.to_string())
            .collect();
        Command::new("sh")
            .args([
                "-c",
                r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; kill -9 $2 2>/dev/null; rm -rf "$3""#,
                "waitroom-rabbitmq-watcher",
            ])
            .arg(std::process::id().to_string())
            .arg(pids.join(" "))
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting the watcher of the test node: {e}"))?;
        Ok(url)
    })
    .clone()
}

/// The RabbitMQ for `test`, or `None` (after a loud `SKIPPED` line) when none is configured and
/// RabbitMQ is not installed.
///
/// # Panics
/// With `CI=true` instead of skipping; when the shared node cannot be started.
pub fn for_test(test: &str) -> Option<TestRabbitMq> {
    if let Ok(url) = std::env::var("WAITROOM_TEST_RABBITMQ_URL")
        && !url.trim().is_empty()
    {
        return Some(TestRabbitMq {
            url: url.trim().to_owned(),
        });
    }
    if !installed() {
        skip(
            test,
            "needs rabbitmq-server (apt-get install rabbitmq-server), or \
             WAITROOM_TEST_RABBITMQ_URL",
        );
        return None;
    }
    match shared_node() {
        Ok(url) => Some(TestRabbitMq { url }),
        Err(error) => panic!("{test}: {error}"),
    }
}

/// RabbitMQ for a test that starts (and restarts) its own node: its presence, or `None` after a
/// loud `SKIPPED` line.
///
/// # Panics
/// With `CI=true` when it is not installed.
pub fn require(test: &str) -> Option<()> {
    if installed() {
        return Some(());
    }
    skip(
        test,
        "needs rabbitmq-server (apt-get install rabbitmq-server)",
    );
    None
}
