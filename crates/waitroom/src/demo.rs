//! `waitroom demo`: everything needed to see waitroom work, in one command.
//!
//! It starts an embedded node (the file log in a temporary data dir unless told otherwise) with
//! a room `demo` of small capacity and a short heartbeat interval, keeps a crowd of simulated
//! people in it (they join, wait heartbeating, hold a slot for a while and complete: the users
//! of [`waitroom_load`]; whoever is done is replaced by someone new), and serves a
//! tiny protected service next to the API: `GET /demo/seat-selection?waitroomToken=...`, which
//! verifies the admission token offline with `waitroom-token` against the node's own JWKS and
//! offers an "I'm done — free my slot" button that calls `:complete` with the token.
//!
//! Open `http://127.0.0.1:8080/room/demo`: you join behind the crowd, watch your place come
//! down, and are sent to the seat selection when it is your turn.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::header;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use waitroom_core::{Command, Outcome, RoomId};
use waitroom_load::{LoadOptions, NoProgress, SecondsRange};
use waitroom_token::{Expectations, SigningKey, Verifier};

use crate::http::api::{QueueingMethodBody, RoomConfigBody};
use crate::node::Node;
use crate::server::{self, ServeOptions};

/// The id of the demo room.
pub const ROOM: &str = "demo";
/// The demo's protected service: where the waiting page sends people with their token.
pub const TARGET_PATH: &str = "/demo/seat-selection";
/// Its script (served from the same origin, so the page runs under a strict CSP).
const TARGET_SCRIPT_PATH: &str = "/demo/seat-selection.js";

/// Short, so positions visibly move and the page reacts within a couple of seconds.
const HEARTBEAT_INTERVAL_SECONDS: u32 = 2;
/// A simulated person or a closed tab loses its place after this long without a heartbeat.
const WAITING_IDLE_TIMEOUT_SECONDS: u32 = 20;
/// Someone sent to the seat selection no longer heartbeats (the waiting page is gone): their
/// slot stays theirs this long, time enough to look around and press "I'm done".
const ACTIVE_IDLE_TIMEOUT_SECONDS: u32 = 120;
/// Nobody keeps a slot longer than this, heartbeat or not.
const MAX_ACTIVE_SECONDS: u32 = 300;
/// How often a simulated person reads their status between heartbeats, like the waiting page.
const CROWD_POLL_INTERVAL_MS: u64 = 2_000;
/// A simulated request without an answer after this long counts as failed.
const CROWD_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Each simulated person is replaced by a new one once done; the newcomer arrives after a pause
/// drawn from an exponential distribution with this mean, so arrivals stay irregular and the
/// first crowd trickles in over several seconds rather than in one burst.
const ARRIVAL_PAUSE_MEAN_SECONDS: f64 = 5.0;
/// A place in the crowd whose run joined nobody (server unreachable, room gone) waits this long
/// before trying again, rather than spinning.
const RETRY_DELAY_MS: u64 = 1_000;
/// A share of the simulated people give up while waiting, as real crowds do.
const ABANDON_WAITING_RATIO: f64 = 0.05;
/// ... after this long in line.
const ABANDON_WAITING_AFTER: SecondsRange = SecondsRange {
    min_us: 20_000_000,
    max_us: 90_000_000,
};
/// The room's figures are logged this often.
const STATUS_INTERVAL_SECONDS: u64 = 10;
/// Largest `--crowd`: each simulated person is a task with at most one request (and
/// connection) in flight, all from one address; past this the demo measures the laptop.
pub const CROWD_MAX: u32 = 10_000;
/// Largest `--capacity` (the API allows more, but a demo room that big never has a line).
pub const CAPACITY_MAX: u32 = 10_000;
/// Clock-skew allowance of the seat selection's token check (same process, so small).
const TOKEN_LEEWAY_SECONDS: u64 = 5;

/// Flags of `waitroom demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Address to listen on: the waiting page, the API and the demo's seat selection.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Base URL people open (and the room's targetUrl is built on), e.g. http://192.168.1.20:8080
    /// to try it from a phone. Default: http://<listen address> (127.0.0.1 for 0.0.0.0).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Slots of the demo room: how many people are in the seat selection at once.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=i64::from(CAPACITY_MAX)))]
    pub capacity: u32,
    /// Simulated people kept in the room (waiting or holding a slot); 0 for none.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(0..=i64::from(CROWD_MAX)))]
    pub crowd: u32,
    /// How long a simulated person holds their slot before completing: `min..max` seconds.
    #[arg(long, default_value = "3..12", value_name = "SECONDS_RANGE")]
    pub hold_seconds: SecondsRange,
    /// Where the log, the signing key and the admin token live. Default: a fresh temporary
    /// directory, removed on exit.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The log backend: file: (inside the data dir) or memory:.
    #[arg(long, default_value = "file:")]
    pub backend: String,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            capacity: 20,
            crowd: 300,
            hold_seconds: SecondsRange {
                min_us: 3_000_000,
                max_us: 12_000_000,
            },
            data_dir: None,
            backend: "file:".into(),
        }
    }
}

/// What a running demo tells its caller once the room is ready.
#[derive(Debug, Clone)]
pub struct DemoStarted {
    /// `http://host:port`.
    pub base_url: String,
    /// The waiting page of the demo room: the URL to open.
    pub room_url: String,
    /// The operator's console (`/admin`); sign in with `admin_token`, which is never in a URL.
    pub console_url: String,
    /// The seat selection the waiting page sends people to.
    pub target_url: String,
    pub admin_token: String,
    pub data_dir: PathBuf,
    /// Whether `data_dir` is a temporary directory removed on exit.
    pub data_dir_is_temporary: bool,
}

/// `waitroom demo`: serves on `--listen` until Ctrl-C (or SIGTERM), printing what to open.
///
/// # Errors
/// The address cannot be bound, or the node cannot start (see [`run_with`]).
pub async fn run(args: DemoArgs) -> Result<(), String> {
    server::raise_open_files_limit(server::defaults::CONNECTIONS_MAX);
    let listener = crate::server::listen(&args.listen)
        .await
        .map_err(|e| format!("{e} (try --listen 127.0.0.1:0)"))?;
    let crowd = args.crowd;
    let capacity = args.capacity;
    let hold = args.hold_seconds;
    run_with(listener, server::shutdown_signal(), args, move |started| {
        println!("\nwaitroom demo is running.\n");
        println!("  Open the waiting room:  {}", started.room_url);
        println!("  Seat selection (demo):  {} (reached with a token from the waiting room)", started.target_url);
        println!("  Operator's console:     {} (sign in with the admin token below)", started.console_url);
        println!("  Admin token:            {}", started.admin_token);
        println!(
            "                          e.g. curl -H 'Authorization: Bearer {}' {}/api/waiting-room/rooms/{ROOM}",
            started.admin_token, started.base_url
        );
        let removed = if started.data_dir_is_temporary { " (removed on exit)" } else { "" };
        println!("  Data dir:               {}{removed}", started.data_dir.display());
        println!(
            "\n  {crowd} simulated people share {capacity} slots, each holding one for {hold} s.\n  \
             Press Ctrl-C to stop.\n"
        );
    })
    .await
}

/// Runs the demo on `listener` until `shutdown` resolves; `on_start` is called once the demo
/// room exists (before the crowd arrives).
///
/// # Errors
/// Start-up failures: the data dir, the signing key, the node (see [`server::run_with`]), or
/// configuring the demo room.
pub async fn run_with(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    args: DemoArgs,
    on_start: impl FnOnce(&DemoStarted),
) -> Result<(), String> {
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let base_url = match &args.public_url {
        Some(url) => public_url(url)?,
        None if address.ip().is_unspecified() => format!("http://127.0.0.1:{}", address.port()),
        None => format!("http://{address}"),
    };
    // The node serves on `listener`; the crowd always talks to it directly.
    let node_url = if address.ip().is_unspecified() {
        format!("http://127.0.0.1:{}", address.port())
    } else {
        format!("http://{address}")
    };
    let person = person_options(&node_url, &args)?;
    let data_dir = DataDir::new(args.data_dir.clone())?;
    let key_path = data_dir.path.join("signing-key.pem");
    let (key, _) = SigningKey::load_or_generate(&key_path)
        .map_err(|e| format!("signing key {}: {e}", key_path.display()))?;
    let options = ServeOptions {
        data_dir: data_dir.path.clone(),
        backend: args.backend.clone(),
        signing_key: Some(key_path.to_string_lossy().into_owned()),
        // Every simulated person comes from this machine's address.
        join_rate_per_ip: 0,
        drain_timeout_ms: 2_000,
        ..ServeOptions::default()
    };
    // The seat selection checks tokens like any protected service: offline, against the JWKS
    // the node publishes at /.well-known/jwks.json (here: of the key just loaded).
    let verifier =
        Verifier::from_jwks_json(&key.jwks_json()).map_err(|e| format!("the node's JWKS: {e}"))?;
    let target = Arc::new(Target {
        verifier,
        expectations: Expectations::new(options.issuer.clone(), ROOM)
            .with_leeway_s(TOKEN_LEEWAY_SECONDS),
    });
    let options = ServeOptions {
        extra_routes: Some(target_routes(target)),
        ..options
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_on_shutdown = tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        }
    });
    let (started_tx, started_rx) = oneshot::channel();
    let serve = server::run_with(
        listener,
        stopped(stop_rx.clone()),
        options,
        move |started| {
            let _ = started_tx.send((started.node.clone(), started.admin_token.clone()));
        },
    );
    let demo = async {
        // Dropped unsent if the node failed to start: its error is the one reported.
        let Ok((node, admin_token)) = started_rx.await else {
            return Ok(());
        };
        let target_url = format!("{base_url}{TARGET_PATH}");
        let result = match configure_room(&node, args.capacity, &target_url).await {
            Ok(()) => {
                on_start(&DemoStarted {
                    room_url: format!("{base_url}/room/{ROOM}"),
                    console_url: format!("{base_url}/admin"),
                    target_url,
                    base_url: base_url.clone(),
                    admin_token,
                    data_dir: data_dir.path.clone(),
                    data_dir_is_temporary: data_dir.temporary,
                });
                tokio::join!(
                    run_crowd(&person, args.crowd, stop_rx.clone()),
                    log_status(&node, stop_rx.clone())
                );
                Ok(())
            }
            Err(e) => Err(e),
        };
        // Stop the node too when the demo ends on its own (an error).
        let _ = stop_tx.send(true);
        result
    };
    let (served, demo) = tokio::join!(serve, demo);
    stop_on_shutdown.abort();
    drop(data_dir); // after the node has stopped and closed its log
    served.and(demo)
}

/// `--public-url`, checked and without a trailing slash.
fn public_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("--public-url {text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "--public-url {text:?}: expected http(s)://host[:port]"
        ));
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The data dir: the one given, or a fresh temporary one, removed when this is dropped.
struct DataDir {
    path: PathBuf,
    temporary: bool,
}

impl DataDir {
    fn new(given: Option<PathBuf>) -> Result<Self, String> {
        let (path, temporary) = match given {
            Some(path) => (path, false),
            None => {
                let suffix: u64 = rand::random();
                let name = format!("waitroom-demo-{}-{suffix:016x}", std::process::id());
                (std::env::temp_dir().join(name), true)
            }
        };
        fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create the data dir {}: {e}", path.display()))?;
        Ok(Self { path, temporary })
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.temporary
            && let Err(e) = fs::remove_dir_all(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the demo's data dir");
        }
    }
}

/// Creates (or replaces) the demo room.
async fn configure_room(node: &Node, capacity: u32, target_url: &str) -> Result<(), String> {
    node.wait_ready(Duration::from_secs(30))
        .await
        .map_err(|e| format!("the node did not catch up with its log: {e:?}"))?;
    let config = RoomConfigBody {
        capacity,
        admit_per_minute: None,
        active_idle_timeout_seconds: ACTIVE_IDLE_TIMEOUT_SECONDS,
        max_active_seconds: MAX_ACTIVE_SECONDS,
        waiting_idle_timeout_seconds: WAITING_IDLE_TIMEOUT_SECONDS,
        heartbeat_interval_seconds: HEARTBEAT_INTERVAL_SECONDS,
        opens_at: None,
        max_waiting: None,
        paused: false,
        target_url: Some(target_url.to_string()),
        queueing_method: QueueingMethodBody::Fifo,
        challenge_difficulty_bits: 0,
        events: Vec::new(),
    }
    .to_config()
    .map_err(|problem| format!("the demo room's configuration: {}", problem.detail))?;
    let room = RoomId::new(ROOM).map_err(|e| e.to_string())?;
    let command = Command::configure(config, crate::ids::new_draw_seed());
    match node.write(&room, command).await {
        Ok(Outcome::Configured { .. }) => Ok(()),
        Ok(other) => Err(format!("configuring the demo room: {other:?}")),
        Err(e) => Err(format!("configuring the demo room: {e}")),
    }
}

/// What one simulated person does, built through `waitroom load`'s own flags (and checks).
/// Each place in the crowd starts from this and changes only the seed.
fn person_options(node_url: &str, args: &DemoArgs) -> Result<LoadOptions, String> {
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        load: waitroom_load::Args,
    }
    let capacity = args.capacity.to_string();
    let arrival = format!("poisson:{}", 1.0 / ARRIVAL_PAUSE_MEAN_SECONDS);
    let hold = args.hold_seconds.to_string();
    let abandon_after = ABANDON_WAITING_AFTER.to_string();
    let abandon_ratio = ABANDON_WAITING_RATIO.to_string();
    let heartbeat = HEARTBEAT_INTERVAL_SECONDS.to_string();
    let active_idle = ACTIVE_IDLE_TIMEOUT_SECONDS.to_string();
    let waiting_idle = WAITING_IDLE_TIMEOUT_SECONDS.to_string();
    let max_active = MAX_ACTIVE_SECONDS.to_string();
    let poll = CROWD_POLL_INTERVAL_MS.to_string();
    let timeout = CROWD_REQUEST_TIMEOUT_MS.to_string();
    let duration = waitroom_load::limits::DURATION_MAX_SECONDS_CEILING.to_string();
    let flags = [
        "waitroom-load",
        "--url",
        node_url,
        "--no-configure",
        "--room",
        ROOM,
        "--capacity",
        &capacity,
        "--users",
        "1",
        "--arrival",
        &arrival,
        "--hold-seconds",
        &hold,
        "--abandon-waiting-ratio",
        &abandon_ratio,
        "--abandon-waiting-after-seconds",
        &abandon_after,
        "--heartbeat-interval-seconds",
        &heartbeat,
        "--active-idle-timeout-seconds",
        &active_idle,
        "--waiting-idle-timeout-seconds",
        &waiting_idle,
        "--max-active-seconds",
        &max_active,
        "--poll-interval-ms",
        &poll,
        "--request-timeout-ms",
        &timeout,
        "--duration-max-seconds",
        &duration,
        "--connections-max",
        "1",
        "--no-gate",
    ];
    let flags = <Flags as clap::Parser>::try_parse_from(flags)
        .map_err(|e| format!("the demo crowd's options: {e}"))?;
    let mut options = flags
        .load
        .to_options()
        .map_err(|e| format!("the demo crowd's options: {e}"))?;
    // Never from WAITROOM_ADMIN_TOKEN: with a token, every person would also sample the room's
    // stats, which the demo does not need.
    options.admin_token = None;
    Ok(options)
}

/// Keeps `crowd` simulated people in the room until `stop`. Each place in the crowd is a loop
/// of one-person `waitroom_load` runs: someone arrives, joins, waits (polling and heartbeating
/// like the waiting page), holds a slot, completes (or gives up waiting), and a new person takes
/// their place. One person per run, so nobody waits for the slowest of a batch.
async fn run_crowd(person: &LoadOptions, crowd: u32, stop: watch::Receiver<bool>) {
    let seed: u64 = rand::random();
    let mut places = JoinSet::new();
    for place in 0..u64::from(crowd) {
        let mut options = person.clone();
        // Seeds of different places never meet: each place counts up from its own.
        options.seed = seed ^ (place << 40);
        places.spawn(run_place(options, stop.clone()));
    }
    while places.join_next().await.is_some() {}
}

/// One place in the crowd: a person, then the next, until `stop`.
async fn run_place(mut options: LoadOptions, stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let joined = match waitroom_load::run_until(
            options.clone(),
            &NoProgress,
            stopped(stop.clone()),
        )
        .await
        {
            Ok(report) => report.metrics.users.joined,
            Err(e) => {
                tracing::warn!(error = %e, "a simulated person of the demo crowd could not run");
                0
            }
        };
        if joined == 0 {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(RETRY_DELAY_MS)) => {}
                () = stopped(stop.clone()) => return,
            }
        }
        // A new person: new idempotency key, arrival pause and hold time.
        options.seed = options.seed.wrapping_add(1);
    }
}

/// Logs the demo room's figures every [`STATUS_INTERVAL_SECONDS`] until `stop`.
async fn log_status(node: &Node, stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(STATUS_INTERVAL_SECONDS));
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stopped(stop.clone()) => return,
        }
        if let Some((_, stats)) = node
            .all_room_stats()
            .into_iter()
            .find(|(id, _)| id.as_str() == ROOM)
        {
            tracing::info!(
                waiting = stats.waiting_count,
                active = stats.active_count,
                admitted_total = stats.admitted_total,
                admissions_per_minute = stats.admissions_per_minute,
                "demo room"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The seat selection: a protected service in miniature.

/// How the seat selection checks tokens.
struct Target {
    verifier: Verifier,
    expectations: Expectations,
}

fn target_routes(target: Arc<Target>) -> Router {
    Router::new()
        .route(TARGET_PATH, get(seat_selection))
        .route(TARGET_SCRIPT_PATH, get(seat_selection_script))
        .with_state(target)
}

#[derive(Debug, serde::Deserialize)]
struct TokenQuery {
    #[serde(rename = "waitroomToken")]
    token: Option<String>,
}

/// Strict, like the waiting page's: no inline code, nothing from elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// `GET /demo/seat-selection?waitroomToken=...`: with a valid token, the seat selection; without
/// one, back to the waiting room (which sends the person on again when it is their turn, and
/// stops doing so by itself if they bounce back within 20 s).
async fn seat_selection(
    State(target): State<Arc<Target>>,
    Query(query): Query<TokenQuery>,
) -> Response {
    let now_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let Some(token) = query.token else {
        return back_to_the_room("no token");
    };
    let claims = match target
        .verifier
        .verify(&token, &target.expectations, now_unix_s)
    {
        Ok(claims) => claims,
        Err(e) => return back_to_the_room(&e.to_string()),
    };
    let valid_until = jiff::Timestamp::from_second(i64::try_from(claims.exp).unwrap_or(i64::MAX))
        .map_or_else(
            |_| claims.exp.to_string(),
            |t| t.strftime("%H:%M:%S UTC").to_string(),
        );
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="referrer" content="no-referrer">
  <meta name="color-scheme" content="light dark">
  <title>Seat selection (demo)</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/assets/room.css">
  <script src="{TARGET_SCRIPT_PATH}" defer></script>
</head>
<body data-state="active">
  <div class="page">
    <header class="masthead">
      <p class="brand">waitroom demo</p>
      <p class="room">Room {room}</p>
    </header>
    <main id="main" class="card" data-state="active" aria-labelledby="heading">
      <p class="status" id="status"><span class="status-dot" aria-hidden="true"></span><span id="verified">Token verified</span></p>
      <h1 id="heading" tabindex="-1">Seat selection (demo)</h1>
      <p id="verified-text">Your admission token was <strong>verified</strong> offline against the node's
        JWKS: signature, issuer, room and expiry. A real sale would let you pick your seats here.</p>
      <dl class="facts">
        <div class="fact"><dt>Session</dt><dd id="session-id">{session}</dd></div>
        <div class="fact"><dt>Token valid until</dt><dd id="valid-until">{valid_until}</dd></div>
      </dl>
      <p id="done-result" class="lead" role="status" hidden></p>
      <div class="actions">
        <button type="button" id="done" class="button primary" data-session="{session}" data-token="{token}">I'm done — free my slot</button>
        <a id="back" class="button secondary" href="/room/{room}" hidden>Back to the waiting room</a>
      </div>
    </main>
  </div>
</body>
</html>
"#,
        room = escape(&claims.aud),
        session = escape(&claims.sub),
        valid_until = escape(&valid_until),
        token = escape(&token),
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The URL carries the token: no page after this one may learn it from `Referer`.
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

fn back_to_the_room(reason: &str) -> Response {
    tracing::info!(%reason, "seat selection without a valid admission token: back to the waiting room");
    Redirect::to(&format!("/room/{ROOM}")).into_response()
}

/// The button: `POST /api/waiting-room/sessions/{id}:complete` with the token, as the protected
/// service's own client would.
const SEAT_SELECTION_JS: &str = r#""use strict";
(function seatSelection() {
  const done = document.getElementById("done");
  const result = document.getElementById("done-result");
  const back = document.getElementById("back");
  done.addEventListener("click", async () => {
    done.disabled = true;
    let message;
    try {
      const id = encodeURIComponent(done.dataset.session);
      const response = await fetch(`/api/waiting-room/sessions/${id}:complete`, {
        method: "POST",
        headers: { Authorization: `Bearer ${done.dataset.token}` },
        cache: "no-store",
      });
      const body = await response.json().catch(() => null);
      if (response.ok && body && body.status === "EXPIRED") {
        document.body.dataset.state = "done";
        document.getElementById("main").dataset.state = "expired";
        document.getElementById("verified").textContent = "Done";
        message = body.expiredReason === "completed"
          ? "Your slot is free: the next person in line is on their way. Thanks!"
          : `Your turn had already ended (${body.expiredReason}).`;
        done.hidden = true;
        back.hidden = false;
      } else {
        const title = body && typeof body.title === "string" ? `: ${body.title}` : "";
        message = `Could not free the slot (HTTP ${response.status}${title}).`;
        done.disabled = false;
      }
    } catch (_) {
      message = "Could not reach the waiting room. Try again.";
      done.disabled = false;
    }
    result.textContent = message;
    result.hidden = false;
  });
})();
"#;

async fn seat_selection_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SEAT_SELECTION_JS,
    )
        .into_response()
}

/// Text for HTML text and attribute values.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn public_urls_are_checked() {
        assert_eq!(
            public_url("http://192.168.1.20:8080/").unwrap(),
            "http://192.168.1.20:8080"
        );
        assert!(public_url("ftp://example.com").is_err());
        assert!(public_url("example.com:8080").is_err());
    }

    #[test]
    fn a_simulated_person_is_one_user_of_the_existing_room() {
        let args = DemoArgs::default();
        let options = person_options("http://127.0.0.1:8080", &args).unwrap();
        assert_eq!(options.users, 1);
        assert_eq!(options.room, ROOM);
        assert!(!options.configure && !options.reset_room && options.admin_token.is_none());
        assert_eq!(options.capacity, Some(args.capacity));
        assert_eq!(options.hold_seconds, args.hold_seconds);
        assert_eq!(
            options.heartbeat_interval_seconds,
            u64::from(HEARTBEAT_INTERVAL_SECONDS)
        );
    }

    #[test]
    fn the_default_flags_are_the_defaults() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            demo: DemoArgs,
        }
        let parsed = <Cli as clap::Parser>::try_parse_from(["demo"])
            .unwrap()
            .demo;
        let default = DemoArgs::default();
        assert_eq!(parsed.listen, default.listen);
        assert_eq!(
            (parsed.capacity, parsed.crowd),
            (default.capacity, default.crowd)
        );
        assert_eq!(parsed.hold_seconds, default.hold_seconds);
        assert_eq!(parsed.backend, default.backend);
        assert!(<Cli as clap::Parser>::try_parse_from(["demo", "--capacity", "0"]).is_err());
        assert!(<Cli as clap::Parser>::try_parse_from(["demo", "--crowd", "10001"]).is_err());
    }
}
