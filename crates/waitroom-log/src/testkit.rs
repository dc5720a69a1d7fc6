//! The test kit (feature `testkit`): what every backend's tests and the node's tests share.
//!
//! # Layout
//! - `conformance`: the scenarios every [`crate::Log`] backend must pass, written once.
//! - `redis`: the one launcher of `redis-server` (single servers and a Cluster) that the tests,
//!   `scripts/test` and `bench/` use (the last two through the `waitroom-servers` binary).
//! - `kafka`: the one launcher of the Kafka-compatible broker `tansu`, the same way.
//! - `moto`: the one launcher of `moto_server` (SQS and S3), in a venv it makes under the build
//!   dir, the same way.
//! - `rabbitmq`: the one launcher of a private RabbitMQ node (stream plugin on), the same way.
//! - `postgres`: the one launcher of a private PostgreSQL cluster (`initdb` into a scratch dir;
//!   as root, run as `nobody`), for the seat service example's tests and `bench/seats.sh`, the
//!   same way.
//! - `proxy`: a TCP proxy between a node and its broker that can pass, drop, hold (a black
//!   hole) and delay connections, for the fault suite.
//! - `reading`: what the backends' own tests share beyond the suite: unique prefixes, records,
//!   and a `Node` that applies a subscription as waitroom's node does.
//! - here: free ports, finding a server's binary, and the rule for tests whose server is
//!   missing: skip loudly under plain `cargo test`, fail with `CI=true`.

pub mod conformance;
pub mod kafka;
pub mod moto;
pub mod postgres;
pub mod proxy;
pub mod rabbitmq;
pub mod reading;
pub mod redis;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A real server a test runs a fleet against, which it can crash and start again (the fleet
/// test takes any; each backend's launcher implements it).
pub trait TestServer: Send + Sync {
    /// The `--backend` URL of waitroom for this server.
    fn backend_url(&self) -> String;
    /// Kills the server like a crash (SIGKILL) and waits until it is gone.
    fn kill_9(&mut self);
    /// Starts it again on the same port and data.
    ///
    /// # Errors
    /// It did not start.
    fn restart(&mut self) -> Result<(), String>;

    /// Whether the server comes back from [`TestServer::restart`] with what it held; false for
    /// servers that keep their state in memory only (moto), whose restart the fleet test skips.
    fn keeps_state_across_restart(&self) -> bool {
        true
    }

    /// How long work a killed node held stays held before another node takes it over: zero for
    /// logs where nothing is held by a node; on SQS the intake's visibility timeout (a node killed
    /// while stamping a batch keeps its message group, and every `head()` marker behind it, back
    /// for that long). A test waiting for a node to turn ready after a kill allows this much more.
    fn held_work_timeout(&self) -> Duration {
        Duration::ZERO
    }
}

/// A loopback port nothing listens on right now.
///
/// # Panics
/// When the OS has no free port to give.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// True when the tests run in CI (`CI=true`), where no test may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| ci == "true")
}

/// The path of `binary` on `PATH`, if it is installed.
pub fn find_binary(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|path| path.is_file())
    })
}

/// Says loudly that `test` is skipped because of `why` (how to run it included).
///
/// # Panics
/// With `CI=true`: tests must not skip in CI.
pub fn skip(test: &str, why: &str) {
    if in_ci() {
        panic!("{test}: {why}, and tests must not skip in CI (CI=true)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// The name of the running test (the test harness names each test's thread after it).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("a waitroom-log test")
        .to_owned()
}

/// Waits until `ready` holds, checking every few milliseconds, for at most `wait`.
///
/// # Errors
/// `ready` did not hold within `wait`; the error says what was awaited.
pub fn wait_until(
    what: &str,
    wait: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(2);
    while !ready() {
        if Instant::now() >= deadline {
            return Err(format!("{what}: not within {wait:?}"));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    Ok(())
}
