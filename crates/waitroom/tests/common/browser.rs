//! Headless Chromium (Debian's `chromium`) driven through `chromedriver` over WebDriver, shared by
//! the browser tests (`tests/browser.rs`: the waiting page; `tests/console.rs`: the operator's
//! console), which include this file with `#[path]`.
//!
//! Each test starts its own chromedriver on a free loopback port, with a fresh profile, and stops
//! it by PID when done. Without chromium or chromedriver the tests print `SKIPPED` and pass,
//! except with `CI=true`, where that is a failure. Screenshots go to
//! `<workspace>/target/screenshots/`.
#![allow(dead_code)]

use std::future::Future;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Where Debian puts them (`apt-get install chromium chromium-driver`); overridable.
const CHROMIUM_DEFAULT: &str = "/usr/bin/chromium";
const CHROMEDRIVER_DEFAULT: &str = "/usr/bin/chromedriver";
/// Longest wait for chromedriver to answer `/status` after it is started.
const DRIVER_START_WAIT: Duration = Duration::from_secs(20);
/// Longest wait for the page to reach a state (a loaded machine included).
pub const PAGE_WAIT: Duration = Duration::from_secs(30);
/// How often a wait re-reads the page.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The browser window, in CSS pixels.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub width: u32,
    pub height: u32,
    /// A phone: a desktop window is at least 500 px wide whatever `--window-size` says, so a
    /// phone's viewport is an emulated device.
    pub phone: bool,
}

/// A phone-sized window, so the screenshots show the narrow layout.
pub const PHONE: Window = Window {
    width: 390,
    height: 844,
    phone: true,
};

/// A laptop's window.
pub const LAPTOP: Window = Window {
    width: 1280,
    height: 900,
    phone: false,
};

/// chromium and chromedriver, or `None` (after saying so loudly) when they are not installed.
///
/// # Panics
/// When they are missing and `CI=true`: CI must run these tests.
pub fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = std::env::var_os("WAITROOM_CHROMIUM")
        .map_or_else(|| PathBuf::from(CHROMIUM_DEFAULT), PathBuf::from);
    let driver = std::env::var_os("WAITROOM_CHROMEDRIVER")
        .map_or_else(|| PathBuf::from(CHROMEDRIVER_DEFAULT), PathBuf::from);
    let missing: Vec<String> = [&chromium, &driver]
        .iter()
        .filter(|path| !path.exists())
        .map(|path| path.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((chromium, driver));
    }
    let message = format!(
        "browser tests need {} (Debian: apt-get install chromium chromium-driver; or set WAITROOM_CHROMIUM / \
         WAITROOM_CHROMEDRIVER)",
        missing.join(" and ")
    );
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("CI=true: {message}");
    }
    eprintln!("\n**************** SKIPPED: {message} ****************\n");
    None
}

fn free_loopback_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// A headless Chromium session through a chromedriver of its own. Dropping it ends the
/// session (chromedriver then quits chromium) and kills chromedriver by its PID.
pub struct Browser {
    pub client: Client,
    driver: Child,
    driver_port: u16,
    session_id: Option<String>,
    /// The chromium profile and chromedriver's log; removed after both are gone.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// `None` when the tools are not installed (and this is not CI).
    pub async fn start(window: Window) -> Option<Self> {
        let (chromium, driver_path) = browser_tools()?;
        let profile = tempfile::tempdir().expect("profile dir");
        let driver_port = free_loopback_port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={driver_port}"))
            .arg(format!(
                "--log-path={}",
                profile.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_path.display()));
        // From here on, a panic kills it: `Browser` owns it before anything else can fail.
        let mut browser = PendingDriver {
            driver: Some(driver),
        };
        let webdriver = format!("http://127.0.0.1:{driver_port}");
        wait_for_driver(&webdriver, &mut browser).await;

        let user_data_dir = profile.path().join("chromium");
        let mut capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--user-data-dir={}", user_data_dir.display()),
                    format!("--window-size={},{}", window.width, window.height),
                    "--lang=en-US",
                ],
                "prefs": { "intl.accept_languages": "en-US" },
            },
        });
        if window.phone {
            // A desktop window is at least 500 px wide whatever --window-size says; the
            // emulated device gives the page a phone's viewport.
            capabilities["goog:chromeOptions"]["mobileEmulation"] = json!({
                "deviceMetrics": { "width": window.width, "height": window.height, "pixelRatio": 1.0, "touch": true },
            });
        }
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot start a chromium session through chromedriver: {e}")
            });
        let session_id = client.session_id().await.expect("session id");
        let driver = browser.driver.take().expect("the driver");
        Some(Self {
            client,
            driver,
            driver_port,
            session_id,
            _profile: profile,
        })
    }

    /// Ends the session and stops chromedriver.
    pub async fn close(mut self) {
        if self.client.clone().close().await.is_ok() {
            self.session_id = None;
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` (a function body) in the page.
    pub async fn js(&self, script: &str) -> Result<Value, fantoccini::error::CmdError> {
        self.client.execute(script, Vec::new()).await
    }

    /// What the page shows, for failure messages.
    pub async fn describe(&self) -> String {
        self.js("const main = document.getElementById('main');
             const heading = document.getElementById('heading');
             return JSON.stringify({ url: location.href, body: Object.assign({}, document.body.dataset),
               main: main ? Object.assign({}, main.dataset) : null,
               heading: heading ? heading.textContent : null, title: document.title,
               text: document.body.innerText.slice(0, 600) });")
            .await
            .map_or_else(
                |e| format!("(page unreadable: {e})"),
                |v| v.as_str().unwrap_or_default().to_string(),
            )
    }

    /// Polls `script` until it returns something other than `null`/`false`, and returns that.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        self.wait_for_within(PAGE_WAIT, what, script).await
    }

    /// [`Self::wait_for`] with a bound of its own.
    pub async fn wait_for_within(&self, within: Duration, what: &str, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // While the browser navigates, a script may fail: that is "not yet".
            if let Ok(value) = self.js(script).await
                && !matches!(value, Value::Null | Value::Bool(false))
            {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the page did not show {what} within {within:?}; it shows {}",
                    self.describe().await
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits for `data-state` (on both `<body>` and `#main`) to be `state`.
    pub async fn wait_for_state(&self, state: &str) {
        let script = format!(
            "const main = document.getElementById('main');
             return document.body.dataset.state === '{state}' && main !== null && main.dataset.state === '{state}';"
        );
        self.wait_for(&format!("data-state={state}"), &script).await;
    }

    /// Waits until `#id`'s text is `expected`.
    pub async fn wait_for_text(&self, id: &str, expected: &str) {
        let script = format!(
            "const node = document.getElementById({id});
             return node !== null && node.textContent.trim() === {expected};",
            id = json!(id),
            expected = json!(expected),
        );
        self.wait_for(&format!("#{id} = {expected:?}"), &script)
            .await;
    }

    /// `#id`'s text (trimmed).
    pub async fn text(&self, id: &str) -> String {
        let value = self
            .js(&format!("const node = document.getElementById({}); return node ? node.textContent.trim() : null;", json!(id)))
            .await
            .expect("read an element");
        match value.as_str() {
            Some(text) => text.to_string(),
            None => panic!("no #{id} on {}", self.describe().await),
        }
    }

    pub async fn is_hidden(&self, id: &str) -> bool {
        let value = self
            .js(&format!(
                "return document.getElementById({}).closest('[hidden]') !== null;",
                json!(id)
            ))
            .await
            .expect("read an element");
        value.as_bool().expect("a boolean")
    }

    pub async fn click(&self, id: &str) {
        let element = self
            .client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("find #{id}: {e}"));
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("click #{id}: {e}"));
    }

    /// Writes a PNG of the viewport to `<workspace>/target/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        assert!(
            png.starts_with(b"\x89PNG"),
            "screenshot {name} is not a PNG"
        );
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).expect("create the screenshots dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = self.session_id.take() {
            delete_session(self.driver_port, &session);
        }
        stop_driver(&mut self.driver);
    }
}

/// chromedriver before its session exists: killed on drop (a failed start must not leak it).
struct PendingDriver {
    driver: Option<Child>,
}

impl Drop for PendingDriver {
    fn drop(&mut self) {
        if let Some(driver) = &mut self.driver {
            stop_driver(driver);
        }
    }
}

/// Kills chromedriver by its PID and reaps it.
fn stop_driver(driver: &mut Child) {
    let _ = driver.kill();
    let _ = driver.wait();
}

/// `DELETE /session/{id}`, blocking (it runs in `Drop`, maybe while a test panics): chromedriver
/// quits chromium before it answers.
fn delete_session(port: u16, session: &str) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return;
    }
    // Read the whole answer (chromedriver may keep the connection open regardless).
    let mut answer = Vec::new();
    let mut buffer = [0_u8; 4096];
    while let Ok(read) = stream.read(&mut buffer) {
        if read == 0 {
            return;
        }
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return;
            }
        }
    }
}

/// Polls chromedriver's `/status` until it is ready.
async fn wait_for_driver(webdriver: &str, pending: &mut PendingDriver) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let deadline = tokio::time::Instant::now() + DRIVER_START_WAIT;
    loop {
        if let Ok(response) = client.get(format!("{webdriver}/status")).send().await
            && let Ok(status) = response.json::<Value>().await
            && status["value"]["ready"] == json!(true)
        {
            return;
        }
        let driver = pending.driver.as_mut().expect("the driver");
        if let Ok(Some(exit)) = driver.try_wait() {
            panic!("chromedriver exited at start: {exit}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not answer within {DRIVER_START_WAIT:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

pub fn screenshots_dir() -> PathBuf {
    // CARGO_MANIFEST_DIR is crates/waitroom; the screenshots go to the workspace's target/, which
    // git ignores, whatever CARGO_TARGET_DIR says.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots")
}

/// Runs `test` with a browser, or skips it (see [`browser_tools`]).
pub async fn with_browser<F, Fut>(window: Window, test: F)
where
    F: FnOnce(Arc<Browser>) -> Fut,
    Fut: Future<Output = ()>,
{
    crate::common::init_tracing();
    let Some(browser) = Browser::start(window).await else {
        return;
    };
    let browser = Arc::new(browser);
    test(browser.clone()).await;
    if let Ok(browser) = Arc::try_unwrap(browser) {
        browser.close().await;
    }
}
