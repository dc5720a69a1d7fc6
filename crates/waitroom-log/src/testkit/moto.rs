//! The one launcher of `moto_server` (PyPI `moto[server]`, SQS and S3 in one process) for tests,
//! `scripts/test` and `bench/`: a Python venv under the build dir (made once, with `pip install
//! moto[server]`, and reused by every later run that finds moto in it), a private server on a
//! free loopback port, ready when `GET /moto-api/` answers, with the test bucket created, stopped
//! by its PID (a dropped [`MotoServer`] is killed).
//!
//! moto keeps everything in memory: a restarted `moto_server` is empty, which SQS and S3 never
//! are. So [`MotoServer::restart`] refuses, and the fleet test leaves it running
//! ([`super::TestServer::keeps_state_across_restart`]). moto's other differences from AWS are in
//! the `sqs` module's documentation.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{find_binary, free_port, skip, wait_until};

/// Longest `moto_server` may take to answer (about 1.5 s here; more on a loaded machine).
pub const START_WAIT: Duration = Duration::from_secs(60);

/// Longest making the venv and installing moto may take (about 50 s here).
pub const INSTALL_WAIT: Duration = Duration::from_secs(600);

/// The `sqs` backend's default intake `visibility-timeout`, which [`backend_url`] keeps (repeated
/// here because the test kit builds without the `sqs` feature; equal to it by the assertion
/// below).
pub const INTAKE_VISIBILITY_DEFAULT: Duration = Duration::from_secs(30);
#[cfg(feature = "sqs")]
const _: () = assert!(
    INTAKE_VISIBILITY_DEFAULT.as_secs() == crate::sqs::VISIBILITY_TIMEOUT_DEFAULT.as_secs()
);

/// The bucket every test server has.
pub const TEST_BUCKET: &str = "waitroom-test";
/// The region tests name (moto serves any).
pub const TEST_REGION: &str = "us-east-1";
/// moto takes any static credentials; these go in the test backend URL.
pub const TEST_CREDENTIALS: (&str, &str) = ("testing", "testing");

/// The environment variable naming the venv (default: `moto-venv` in the build dir).
pub const VENV_ENV: &str = "WAITROOM_MOTO_VENV";
/// The environment variable with the backend URL of a moto that `scripts/test` started.
pub const URL_ENV: &str = "WAITROOM_TEST_SQS_URL";

/// The venv this build uses: `$WAITROOM_MOTO_VENV`, else `moto-venv` in the cargo target dir.
pub fn default_venv() -> PathBuf {
    if let Some(venv) = std::env::var_os(VENV_ENV).filter(|venv| !venv.is_empty()) {
        return PathBuf::from(venv);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("moto-venv")
}

/// True when a venv with moto can be had: it is there, or `python3` can make it.
pub fn installed(venv: &Path) -> bool {
    venv.join("bin/moto_server").is_file() || find_binary("python3").is_some()
}

/// The `moto_server` of `venv`, making the venv and installing moto first unless it already has
/// it.
///
/// # Errors
/// No `python3`, or the venv or the install failed (pip's output is in the message).
pub fn ensure_venv(venv: &Path) -> Result<PathBuf, String> {
    // Tests of one process share a venv: one of them installs, the others wait.
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _guard = INSTALLING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let server = venv.join("bin/moto_server");
    let python = venv.join("bin/python");
    let has_moto = || {
        server.is_file()
            && Command::new(&python)
                .args(["-c", "import moto.server"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
    };
    if has_moto() {
        return Ok(server);
    }
    let python3 = find_binary("python3")
        .ok_or_else(|| "python3 is not installed (needed for moto_server)".to_owned())?;
    run_bounded(
        Command::new(python3).arg("-m").arg("venv").arg(venv),
        "python3 -m venv",
    )?;
    run_bounded(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "moto[server]",
        ]),
        "pip install moto[server]",
    )?;
    if has_moto() {
        Ok(server)
    } else {
        Err(format!(
            "moto_server is not in {} after installing it",
            venv.display()
        ))
    }
}

/// Runs `command` to its end within [`INSTALL_WAIT`] (killed past it).
fn run_bounded(command: &mut Command, what: &str) -> Result<(), String> {
    let output_file = tempfile::NamedTempFile::new().map_err(|e| format!("{what}: {e}"))?;
    let output = output_file.reopen().map_err(|e| format!("{what}: {e}"))?;
    let errors = output.try_clone().map_err(|e| format!("{what}: {e}"))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors)
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let deadline = Instant::now() + INSTALL_WAIT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let said = std::fs::read_to_string(output_file.path()).unwrap_or_default();
                return Err(format!("{what} failed ({status}):\n{said}"));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} did not finish within {INSTALL_WAIT:?}"));
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

/// A `moto_server` child process on 127.0.0.1, killed (SIGKILL, by PID) when dropped. Its
/// request log (one line per request) goes to `moto.log` in its directory.
#[derive(Debug)]
pub struct MotoServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl MotoServer {
    /// Starts a server on a free port with `venv`'s moto (installed first if needed), keeping its
    /// log in `dir` (created), and creates [`TEST_BUCKET`].
    ///
    /// # Errors
    /// moto cannot be installed, or did not start within [`START_WAIT`].
    pub fn start(dir: &Path, venv: &Path) -> Result<Self, String> {
        Self::start_on(free_port(), dir, venv)
    }

    /// Starts a server on `port`.
    ///
    /// # Errors
    /// As [`MotoServer::start`].
    pub fn start_on(port: u16, dir: &Path, venv: &Path) -> Result<Self, String> {
        let binary = ensure_venv(venv)?;
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let log_path = dir.join("moto.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let errors = log.try_clone().map_err(|e| format!("moto log: {e}"))?;
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(errors)
            .spawn()
            .map_err(|e| format!("starting moto_server: {e}"))?;
        let mut server = Self {
            port,
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        let mut gone = false;
        wait_until(&format!("moto_server on port {port}"), START_WAIT, || {
            gone = server
                .child
                .as_mut()
                .is_some_and(|child| child.try_wait().ok().flatten().is_some());
            gone || http(port, "GET", "/moto-api/").is_some_and(|status| status == 200)
        })?;
        if gone {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!(
                "moto_server on port {port} exited at start:\n{log}"
            ));
        }
        match http(port, "PUT", &format!("/{TEST_BUCKET}")) {
            Some(200) => Ok(server),
            other => Err(format!(
                "moto_server on port {port}: creating bucket {TEST_BUCKET} answered {other:?}"
            )),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The file moto writes its request log to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("moto.log")
    }

    /// The backend URL of this server: static test credentials, [`TEST_REGION`], the endpoint
    /// and [`TEST_BUCKET`].
    pub fn url(&self) -> String {
        backend_url(self.port)
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server like a crash (SIGKILL) and reaps it. Everything it held is gone.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error only says it has exited already.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Leaves the server running after this handle is gone (for `waitroom-servers`, whose
    /// caller stops it by PID); returns its PID.
    pub fn detach(mut self) -> Option<u32> {
        self.child.take().map(|child| child.id())
    }
}

/// The backend URL of a moto on `port` (see [`MotoServer::url`]). Intake receives short-poll
/// (`receive-wait=0s`): a long poll of moto 5.2.5 notes which message groups are in flight when
/// it starts and hands out later messages of a group that another receiver took meanwhile, which
/// SQS never does.
pub fn backend_url(port: u16) -> String {
    let (id, secret) = TEST_CREDENTIALS;
    format!(
        "sqs://{id}:{secret}@?region={TEST_REGION}&endpoint=http://127.0.0.1:{port}\
         &bucket={TEST_BUCKET}&receive-wait=0s"
    )
}

impl super::TestServer for MotoServer {
    fn backend_url(&self) -> String {
        self.url()
    }

    fn kill_9(&mut self) {
        MotoServer::kill_9(self);
    }

    /// The intake's visibility timeout: [`backend_url`] leaves it at its default.
    fn held_work_timeout(&self) -> Duration {
        INTAKE_VISIBILITY_DEFAULT
    }

    /// Refuses: moto keeps its state in memory only, so a restarted moto would be an empty
    /// account, which is nothing SQS or S3 ever does.
    fn restart(&mut self) -> Result<(), String> {
        Err("moto keeps its state in memory only: a restarted moto_server is empty".to_owned())
    }

    fn keeps_state_across_restart(&self) -> bool {
        false
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// The status code of `method path` on 127.0.0.1:`port`, if it answers.
fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request =
        format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The moto a test uses: the one `scripts/test` started ([`URL_ENV`]), or else a private one
/// started for the test (kept alive by this handle).
#[derive(Debug)]
pub struct TestMoto {
    url: String,
    _private: Option<(MotoServer, tempfile::TempDir)>,
}

impl TestMoto {
    /// The backend URL of the server (without a prefix: tests add their own).
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The moto for `test`, or `None` (after a loud `SKIPPED` line) when none is configured and no
/// venv with moto can be had.
///
/// # Panics
/// With `CI=true` instead of skipping; when a private server cannot be started.
pub fn for_test(test: &str) -> Option<TestMoto> {
    if let Ok(url) = std::env::var(URL_ENV)
        && !url.trim().is_empty()
    {
        return Some(TestMoto {
            url: url.trim().to_owned(),
            _private: None,
        });
    }
    let venv = require(test)?;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = MotoServer::start(dir.path(), &venv).unwrap_or_else(|e| panic!("{test}: {e}"));
    Some(TestMoto {
        url: server.url(),
        _private: Some((server, dir)),
    })
}

/// The venv for a test that starts its own moto, or `None` after a loud `SKIPPED` line.
///
/// # Panics
/// With `CI=true` when no venv with moto can be had.
pub fn require(test: &str) -> Option<PathBuf> {
    let venv = default_venv();
    if installed(&venv) {
        return Some(venv);
    }
    skip(
        test,
        "needs moto_server: python3 to make a venv with moto[server] in the build dir \
         (WAITROOM_MOTO_VENV), or WAITROOM_TEST_SQS_URL",
    );
    None
}
