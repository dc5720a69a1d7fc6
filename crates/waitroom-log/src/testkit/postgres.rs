//! The one launcher of PostgreSQL (Debian package `postgresql`) for tests, `scripts/test` and
//! `bench/`: a private cluster that `initdb` makes in its own directory, served by `postgres` on
//! a free loopback port with its Unix sockets in that directory, ready when it accepts a
//! connection, stopped by its PID.
//!
//! The server is `postgres` itself, run as a child rather than through `pg_ctl start` (which
//! daemonizes it): its PID is the child's, so it is stopped by PID like every other test server,
//! and it leads a process group of its own, so a crash ([`PostgresServer::kill_9`]) kills it and
//! its backends together, as a machine's crash would.
//!
//! # As root
//! PostgreSQL will not run as root: `initdb` and `postgres` both stop with "cannot be run as
//! root" (checked here: `postgres --version` works, `initdb -D dir` refuses). CI runs as root,
//! so as root both run as `nobody` instead (it exists on every Debian system, from base-passwd;
//! the `postgres` user exists only where the server package was installed), switched to in the
//! child by std's `CommandExt::uid`/`gid` (which also drops root's supplementary groups), so no
//! `su`, `runuser` or `setpriv` is involved. Two things follow:
//! - the directory is handed to `nobody` (chown), so that `initdb` can fill it and the server can
//!   put its sockets in it;
//! - `nobody` must be able to reach it. A scratch directory made by `mktemp -d` or `tempfile` is
//!   root's with mode 0700, so the launcher adds search permission for others (`o+x`: names can
//!   be followed, nothing can be listed) to the directories between the system's temporary
//!   directory and the cluster that lack it. It refuses, with an error saying so, to open up any
//!   directory elsewhere.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, User, geteuid};

use super::{find_binary, free_port, skip, wait_until};

/// Longest a cluster may take to accept connections after `postgres` starts (well under a
/// second here; recovery after a crash replays the WAL written since the last checkpoint).
pub const START_WAIT: Duration = Duration::from_secs(60);

/// Longest `initdb` may take (about two seconds here).
pub const INITDB_WAIT: Duration = Duration::from_secs(120);

/// Longest a server may take to stop after SIGINT (a fast shutdown: sessions are ended and a
/// checkpoint is written) before it and its backends are killed.
pub const STOP_WAIT: Duration = Duration::from_secs(30);
/// Starts after a crash ([`PostgresServer::start_again`]) while a killed backend still held the
/// shared memory.
const START_AGAIN_ATTEMPTS_MAX: u32 = 5;

/// Connections the server takes (PostgreSQL's default is 100): several tests share one server,
/// each with a pool of its own.
pub const CONNECTIONS_MAX: u32 = 300;

/// The superuser `initdb` makes, and the database every cluster has.
pub const USER: &str = "postgres";

/// Who runs PostgreSQL when the launcher runs as root (see the module's documentation).
const UNPRIVILEGED_USER: &str = "nobody";

/// Where Debian installs the server's programs, one directory per major version.
const DEBIAN_DIR: &str = "/usr/lib/postgresql";

/// The directory holding `initdb` and `postgres`: Debian's newest `/usr/lib/postgresql/<major>/bin`
/// (they are not on `PATH` there), else wherever `PATH` has both.
pub fn bin_dir() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_both(dir))
        .collect();
    debian.sort();
    if let Some((_, dir)) = debian.pop() {
        return Some(dir);
    }
    find_binary("initdb")
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
        .filter(|dir| has_both(dir))
}

/// True when PostgreSQL's server programs are installed.
pub fn installed() -> bool {
    bin_dir().is_some()
}

/// The user and group PostgreSQL runs as: `None` (this process's) unless this process is root.
fn run_as() -> Result<Option<(u32, u32)>, String> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    let user = User::from_name(UNPRIVILEGED_USER)
        .map_err(|e| format!("looking up the user {UNPRIVILEGED_USER}: {e}"))?
        .ok_or_else(|| {
            format!("PostgreSQL cannot run as root, and there is no user {UNPRIVILEGED_USER}")
        })?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

/// Lets `uid` reach `dir`: search permission for others on the directories above it, up to the
/// system's temporary directory, that lack it (see the module's documentation).
fn open_path_to(dir: &Path) -> Result<(), String> {
    let temp = std::env::temp_dir()
        .canonicalize()
        .map_err(|e| format!("the temporary directory: {e}"))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    for ancestor in dir.ancestors().skip(1) {
        let mode = std::fs::metadata(ancestor)
            .map_err(|e| format!("{}: {e}", ancestor.display()))?
            .permissions()
            .mode();
        if mode & 0o001 != 0 {
            continue;
        }
        if !ancestor.starts_with(&temp) || ancestor == temp {
            return Err(format!(
                "PostgreSQL runs as {UNPRIVILEGED_USER} (root may not run it), which cannot \
                 reach {}: {} is closed to others; use a directory under {}",
                dir.display(),
                ancestor.display(),
                temp.display()
            ));
        }
        std::fs::set_permissions(ancestor, std::fs::Permissions::from_mode(mode | 0o001))
            .map_err(|e| format!("opening {} for search: {e}", ancestor.display()))?;
    }
    Ok(())
}

/// A PostgreSQL server (and its backends) as a child process group on 127.0.0.1: stopped
/// (fast shutdown, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    port: u16,
    dir: PathBuf,
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PostgresServer {
    /// Starts a server on a free port, its cluster in `dir` (created; made by `initdb` unless
    /// `dir` holds one already).
    ///
    /// # Errors
    /// PostgreSQL is not installed, `initdb` failed, or the server did not accept connections
    /// within [`START_WAIT`].
    pub fn start(dir: &Path) -> Result<Self, String> {
        Self::start_on(dir, free_port())
    }

    /// Starts a server on `port`, as [`PostgresServer::start`].
    ///
    /// # Errors
    /// As [`PostgresServer::start`].
    pub fn start_on(dir: &Path, port: u16) -> Result<Self, String> {
        let bin = bin_dir()
            .ok_or_else(|| "PostgreSQL is not installed (Debian package postgresql)".to_owned())?;
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let run_as = run_as()?;
        if let Some((uid, gid)) = run_as {
            open_path_to(dir)?;
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| format!("handing {} to {UNPRIVILEGED_USER}: {e}", dir.display()))?;
        }
        let mut server = Self {
            bin,
            port,
            dir: dir.to_path_buf(),
            run_as,
            child: None,
        };
        if !server.data_dir().join("PG_VERSION").is_file() {
            server.initdb()?;
        }
        server.spawn()?;
        Ok(server)
    }

    /// The cluster's data directory (`PGDATA`).
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// A command for one of the server's programs, as the user the cluster belongs to.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        // The programs look for nothing in HOME, but nobody's is /nonexistent.
        command.env("HOME", &self.dir).env("LC_ALL", "C");
        command
    }

    fn initdb(&self) -> Result<(), String> {
        let log = self.dir.join("initdb.log");
        let output =
            std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let errors = output
            .try_clone()
            .map_err(|e| format!("opening {}: {e}", log.display()))?;
        let mut child = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            // Only this machine can reach the server (loopback and sockets in a private
            // directory), so connections need no password.
            .args(["--username", USER, "--auth", "trust", "--encoding", "UTF8"])
            // The cluster is scratch: a machine crash may lose it whole, so initdb need not wait
            // for its files to reach the disk. The server's own WAL is synced as usual.
            .args(["--no-locale", "--no-sync", "--no-instructions"])
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .map_err(|e| format!("starting initdb: {e}"))?;
        let mut status = None;
        let waited = wait_until("initdb", INITDB_WAIT, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if waited.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if status.is_some_and(|status| status.success()) {
            return Ok(());
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        Err(format!(
            "initdb of {} failed ({}):\n{log}",
            self.data_dir().display(),
            status.map_or_else(
                || format!("not done within {INITDB_WAIT:?}"),
                |s| s.to_string()
            )
        ))
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("opening {}: {e}", self.log_path().display()))?;
        let errors = log
            .try_clone()
            .map_err(|e| format!("opening {}: {e}", self.log_path().display()))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", &format!("max_connections={CONNECTIONS_MAX}")])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(errors)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting postgres: {e}"))?;
        self.child = Some(child);
        let port = self.port;
        let mut gone = false;
        let waited = wait_until(&format!("postgres on port {port}"), START_WAIT, || {
            gone = self
                .child
                .as_mut()
                .is_none_or(|child| child.try_wait().ok().flatten().is_some());
            gone || accepts_connections(port)
        });
        if gone || waited.is_err() {
            self.kill_9();
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            return Err(format!(
                "postgres on port {port} {}:\n{log}",
                if gone {
                    "exited at start".to_owned()
                } else {
                    format!("did not accept connections within {START_WAIT:?}")
                }
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

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{USER}", self.port)
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server and its backends like a crash (SIGKILL to its process group) and reaps
    /// it. What was committed survives: the server replays its WAL when it starts again.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The server leads its process group (`process_group(0)`), and its backends are in it.
            // An error only says they have all exited already.
            let group = Pid::from_raw(child.id() as i32);
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait();
            // The backends die with the server but are not its to wait for; one still exiting
            // keeps the cluster's shared memory attached, and a server started meanwhile refuses
            // to start ("pre-existing shared memory block is still in use"). Wait until the
            // group is gone (signal 0 finds nobody), within STOP_WAIT.
            let deadline = Instant::now() + STOP_WAIT;
            while killpg(group, None).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Stops the server with a fast shutdown (SIGINT: sessions ended, a checkpoint written),
    /// killing it if it is not gone within [`STOP_WAIT`].
    pub fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_9();
    }

    /// Stops the server (fast shutdown) and starts it again on the same port and cluster.
    ///
    /// # Errors
    /// As [`PostgresServer::start`].
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn()
    }

    /// Starts the server again after [`PostgresServer::kill_9`] (crash recovery on the same
    /// cluster and port).
    ///
    /// # Errors
    /// As [`PostgresServer::start`].
    pub fn start_again(&mut self) -> Result<(), String> {
        self.kill_9();
        // A killed backend may hold the shared memory a little longer than the group shows
        // (a zombie's exit): the server refuses to start then, and is started again.
        let mut attempt = 1;
        loop {
            match self.spawn() {
                Err(why)
                    if why.contains("pre-existing shared memory block")
                        && attempt < START_AGAIN_ATTEMPTS_MAX =>
                {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                started => return started,
            }
        }
    }

    /// Leaves the server running after this handle is gone (for `waitroom-servers`, whose
    /// caller stops it by PID: SIGTERM is PostgreSQL's smart shutdown); returns its PID.
    pub fn detach(mut self) -> Option<u32> {
        self.child.take().map(|child| child.id())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when a server on `port` accepts a connection as [`USER`] to its database: it answers a
/// startup message (protocol 3.0) with messages up to `ReadyForQuery`, not with an error (which
/// is what it answers while it starts up or recovers).
fn accepts_connections(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut body = 196_608_u32.to_be_bytes().to_vec(); // protocol version 3.0
    for text in ["user", USER, "database", USER, ""] {
        body.extend_from_slice(text.as_bytes());
        body.push(0);
    }
    let mut startup = u32::try_from(body.len() + 4)
        .expect("a short message")
        .to_be_bytes()
        .to_vec();
    startup.extend_from_slice(&body);
    if stream.write_all(&startup).is_err() {
        return false;
    }
    // Messages: a type byte, then a length that counts itself. A few dozen arrive before
    // ReadyForQuery (authentication, parameters, the backend's key).
    for _ in 0..64 {
        let mut head = [0_u8; 5];
        if stream.read_exact(&mut head).is_err() {
            return false;
        }
        let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut rest = vec![0_u8; length.saturating_sub(4)];
        if length > 1 << 16 || stream.read_exact(&mut rest).is_err() {
            return false;
        }
        match head[0] {
            b'E' => return false,
            b'Z' => {
                // Terminate, so that the server does not log an unexpected EOF.
                let _ = stream.write_all(&[b'X', 0, 0, 0, 4]);
                return true;
            }
            _ => {}
        }
    }
    false
}

/// The PostgreSQL a test uses: the one `scripts/test` started (`WAITROOM_TEST_POSTGRES_URL`), or
/// else a private one started for the test (kept alive by this handle).
#[derive(Debug)]
pub struct TestPostgres {
    url: String,
    _private: Option<(PostgresServer, tempfile::TempDir)>,
}

impl TestPostgres {
    /// `postgres://postgres@127.0.0.1:<port>/postgres` of the server.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The PostgreSQL for `test`, or `None` (after a loud `SKIPPED` line) when none is configured
/// and PostgreSQL is not installed.
///
/// # Panics
/// With `CI=true` instead of skipping; when a private server cannot be started.
pub fn for_test(test: &str) -> Option<TestPostgres> {
    if let Ok(url) = std::env::var("WAITROOM_TEST_POSTGRES_URL")
        && !url.trim().is_empty()
    {
        return Some(TestPostgres {
            url: url.trim().to_owned(),
            _private: None,
        });
    }
    require(test)?;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = PostgresServer::start(dir.path()).unwrap_or_else(|e| panic!("{test}: {e}"));
    Some(TestPostgres {
        url: server.url(),
        _private: Some((server, dir)),
    })
}

/// PostgreSQL for a test that starts (and restarts) its own server: its presence, or `None`
/// after a loud `SKIPPED` line.
///
/// # Panics
/// With `CI=true` when it is not installed.
pub fn require(test: &str) -> Option<()> {
    if installed() {
        return Some(());
    }
    skip(
        test,
        "needs PostgreSQL's server (apt-get install postgresql), or WAITROOM_TEST_POSTGRES_URL",
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_keeps_its_cluster_across_restarts_and_stops() {
        if require("a_server_starts_keeps_its_cluster_across_restarts_and_stops").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut server = PostgresServer::start(&dir.path().join("pg")).unwrap();
        assert!(accepts_connections(server.port()));
        assert!(server.url().starts_with("postgres://postgres@127.0.0.1:"));
        let pid = server.pid().unwrap();
        let socket = server.dir().join(format!(".s.PGSQL.{}", server.port()));
        assert!(socket.exists(), "{}", socket.display());

        server.kill_9();
        assert!(!accepts_connections(server.port()));
        server.start_again().unwrap();
        assert_ne!(server.pid(), Some(pid));
        server.restart().unwrap();
        assert!(accepts_connections(server.port()));

        // A second launcher on the same directory reuses the cluster (initdb refuses a
        // directory that is not empty, so it started only if initdb was not run again).
        let port = server.port();
        drop(server);
        assert!(!accepts_connections(port));
        let again = PostgresServer::start(&dir.path().join("pg")).unwrap();
        assert!(accepts_connections(again.port()));
    }

    #[test]
    fn nothing_listening_is_not_ready() {
        assert!(!accepts_connections(free_port()));
    }
}
