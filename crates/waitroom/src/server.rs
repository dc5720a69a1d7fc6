//! `waitroom serve`: wires the backend, the node and the HTTP API, and serves until shutdown.
//!
//! [`run`] takes its listener and its shutdown future as arguments, so tests start a server on
//! `127.0.0.1:0` and stop it when they like.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use waitroom_core::{Command, Outcome, RoomId};
use waitroom_log::BackendUrl;

use crate::connections::ConnectionLimits;
use crate::http::api::RoomConfigBody;
use crate::http::{self, AppState, JoinRateLimit};
use crate::node::{Node, NodeOptions};
use crate::tokens::{OtherKeys, Tokens};

/// Everything `waitroom serve` is configured with (flags and `WAITROOM_*` variables, see
/// `main.rs`).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    /// `file:` (default), `memory:`, `redis://…`, with the backend's options as URL query
    /// parameters (`file:?fsync=always`).
    pub backend: String,
    pub admin_token: Option<String>,
    /// An Ed25519 PKCS#8 PEM: a file path, or the PEM text itself.
    pub signing_key: Option<String>,
    /// During a key rotation (see `tokens`): the key signing next, published and accepted
    /// already, and keys signing before, still published and accepted. Each a path or PEM text;
    /// a public key (SPKI) PEM or a PKCS#8 private key PEM.
    pub next_signing_key: Option<String>,
    pub retired_signing_keys: Vec<String>,
    pub issuer: String,
    /// A TOML file of rooms to create at start, or update where their entry changed since it was
    /// last applied (see `apply_rooms_file`).
    pub rooms_file: Option<PathBuf>,
    pub join_rate_per_ip: u32,
    pub join_burst_per_ip: u32,
    pub client_ip_header: Option<String>,
    pub drain_timeout_ms: u64,
    /// Open client connections in total, and per client address (`0`: no cap).
    pub connections_max: usize,
    pub connections_per_address_max: usize,
    pub header_read_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    /// How long a request may be in flight on its connection; `None` (the default, and what
    /// `waitroom serve` uses): the node's waits plus `limits::REQUEST_TIME_BEYOND_WAITS_MS`.
    pub request_timeout_ms: Option<u64>,
    /// Status reads held at once (`waitSeconds`); past it, reads are answered at once.
    pub held_reads_max: usize,
    /// The external join verifier (see `crate::verifier`): its URL (none: no verifier), how long
    /// a join waits for it, and what a failure means.
    pub join_verifier_url: Option<String>,
    pub join_verifier_timeout_ms: u64,
    pub join_verifier_fails: crate::verifier::FailMode,
    /// PEM certificates trusted for an `https://` verifier instead of the system's roots.
    pub join_verifier_ca_file: Option<PathBuf>,
    pub node: NodeOptions,
    /// Routes of a program that embeds the node, served next to the API on the same listener
    /// (see [`http::router_with`]); `waitroom demo` adds its seat-selection page this way.
    pub extra_routes: Option<axum::Router>,
}

/// Defaults of [`ServeOptions`], written once (`waitroom serve`'s flags take them too).
pub mod defaults {
    pub const LISTEN: &str = "127.0.0.1:8080";
    pub const DATA_DIR: &str = "./waitroom-data";
    pub const BACKEND: &str = "file:";
    pub const ISSUER: &str = "waitroom";
    /// Joins per second per client address (docs/api.md; generous on purpose: many fans share one
    /// carrier or office address).
    pub const JOIN_RATE_PER_IP: u32 = 50;
    pub const JOIN_BURST_PER_IP: u32 = 500;
    pub const DRAIN_TIMEOUT_MS: u64 = 10_000;
    pub use crate::limits::{
        CONNECTIONS_MAX, CONNECTIONS_PER_ADDRESS_MAX, HEADER_READ_TIMEOUT_MS, HELD_READS_MAX,
        IDLE_TIMEOUT_MS, JOIN_VERIFIER_TIMEOUT_MS_DEFAULT,
    };
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(defaults::DATA_DIR),
            backend: defaults::BACKEND.into(),
            admin_token: None,
            signing_key: None,
            next_signing_key: None,
            retired_signing_keys: Vec::new(),
            issuer: defaults::ISSUER.into(),
            rooms_file: None,
            join_rate_per_ip: defaults::JOIN_RATE_PER_IP,
            join_burst_per_ip: defaults::JOIN_BURST_PER_IP,
            client_ip_header: None,
            drain_timeout_ms: defaults::DRAIN_TIMEOUT_MS,
            connections_max: defaults::CONNECTIONS_MAX,
            connections_per_address_max: defaults::CONNECTIONS_PER_ADDRESS_MAX,
            header_read_timeout_ms: defaults::HEADER_READ_TIMEOUT_MS,
            idle_timeout_ms: defaults::IDLE_TIMEOUT_MS,
            request_timeout_ms: None,
            held_reads_max: defaults::HELD_READS_MAX,
            join_verifier_url: None,
            join_verifier_timeout_ms: defaults::JOIN_VERIFIER_TIMEOUT_MS_DEFAULT,
            join_verifier_fails: crate::verifier::FailMode::Open,
            join_verifier_ca_file: None,
            node: NodeOptions::DEFAULT,
            extra_routes: None,
        }
    }
}

/// A serving node, for callers that need its pieces (tests, `waitroom demo`).
pub struct Started {
    pub node: Arc<Node>,
    pub admin_token: String,
    pub url: String,
}

/// `rooms.toml`: `[rooms.<id>]` tables with the fields of the PUT body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomsFile {
    #[serde(default)]
    rooms: BTreeMap<String, RoomConfigBody>,
}

/// Serves until `shutdown` resolves, then drains requests for at most `drain_timeout_ms`.
///
/// # Errors
/// Start-up failures (data dir, backend, keys, rooms file); serving errors.
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> Result<(), String> {
    run_with(listener, shutdown, options, |_| {}).await
}

/// Like [`run`], calling `on_start` once the node serves.
pub async fn run_with(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
    on_start: impl FnOnce(&Started),
) -> Result<(), String> {
    let backend_url = BackendUrl::parse(&options.backend, &options.data_dir)?;
    if !matches!(backend_url, BackendUrl::Memory { .. })
        || options.admin_token.is_none()
        || options.signing_key.is_none()
    {
        fs::create_dir_all(&options.data_dir).map_err(|e| {
            format!(
                "cannot create the data dir {}: {e}",
                options.data_dir.display()
            )
        })?;
    }
    let admin_token = admin_token(&options)?;
    let signing_key = signing_key(&options, &backend_url)?;
    let other_keys = other_keys(&options)?;
    let tokens = Tokens::with_other_keys(signing_key, &other_keys, options.issuer.clone())?;
    let join_verifier = options
        .join_verifier_url
        .as_deref()
        .map(|url| {
            crate::verifier::JoinVerifier::new(
                url,
                options.join_verifier_timeout_ms,
                options.join_verifier_fails,
                options.join_verifier_ca_file.as_deref(),
            )
        })
        .transpose()?;
    tracing::info!(
        signing = tokens.kid(),
        next = other_keys.next.as_ref().map(|jwk| jwk.kid.as_str()),
        retired = ?other_keys.retired.iter().map(|jwk| jwk.kid.as_str()).collect::<Vec<_>>(),
        "admission token keys (kid)"
    );
    let rooms_file = match &options.rooms_file {
        Some(path) => Some(read_rooms_file(path)?),
        None => None,
    };
    let log = waitroom_log::open(&backend_url).await?;
    tracing::info!(backend = %log.describe(), "log opened");

    let mut node_options = options.node.clone();
    if backend_url.is_embedded() {
        // Alone on its log: nobody else takes snapshots, so no need to wait for one.
        node_options.snapshot_jitter_ms = 0;
    }
    let mut tasks = JoinSet::new();
    let node = Node::start(Arc::clone(&log), node_options, &mut tasks);
    let registry = node.metrics_registry();
    let join_rate_limit = JoinRateLimit::new(options.join_rate_per_ip, options.join_burst_per_ip);
    let client_ip_header = match &options.client_ip_header {
        Some(name) => Some(
            ::http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("--client-ip-header {name:?} is not a header name"))?,
        ),
        None => None,
    };
    if client_ip_header.is_some()
        && options.connections_per_address_max == defaults::CONNECTIONS_PER_ADDRESS_MAX
    {
        tracing::warn!(
            cap = options.connections_per_address_max,
            "behind a proxy (--client-ip-header), the connections come from the proxy's addresses, \
             and --connections-per-address-max caps each of them: set it above what one proxy \
             address opens, or to 0"
        );
    }
    let state = Arc::new(AppState {
        node: node.clone(),
        tokens,
        admin_token: admin_token.clone(),
        join_rate_limit,
        client_ip_header,
        registry,
        held_reads: tokio::sync::Semaphore::new(options.held_reads_max),
        join_verifier,
    });
    if state.join_rate_limit.is_some() {
        let state = state.clone();
        tasks.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(http::RETAIN_INTERVAL_MS));
            loop {
                every.tick().await;
                if let Some(limit) = &state.join_rate_limit {
                    limit.retain_recent();
                }
            }
        });
    }
    if let Some(rooms) = rooms_file {
        tasks.spawn(apply_rooms_file(node.clone(), rooms));
    }

    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let url = format!("http://{address}");
    tracing::info!(%url, "serving");
    on_start(&Started {
        node: node.clone(),
        admin_token,
        url,
    });

    let extra_routes = options.extra_routes.clone().unwrap_or_default();
    let app = http::router_with(state, extra_routes);
    let connection_limits = connection_limits(&options);
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_timeout = Duration::from_millis(options.drain_timeout_ms);
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, draining requests");
        let _ = drain_tx.send(());
    };
    let serve = crate::connections::serve(
        listener,
        app,
        connection_limits,
        node.metrics.connections.clone(),
        shutdown,
    );
    let drained = async move {
        if drain_rx.await.is_ok() {
            tokio::time::sleep(drain_timeout).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        () = serve => Ok(()),
        () = drained => {
            tracing::warn!("drain timeout reached; closing the remaining connections");
            Ok(())
        }
    };
    tasks.shutdown().await;
    drop(node);
    log.close().await;
    result
}

/// Raises this process's soft limit of open files to what `connections_max` client connections
/// need (plus [`crate::limits::FILES_BEYOND_CONNECTIONS`]), within the hard limit: many systems
/// start processes at 1024, far below the 50 000 connections a node takes by default, and a
/// node out of descriptors refuses connections (`accept` fails) however idle it is. Says so when
/// the hard limit is lower (raise it: `ulimit -Hn`, systemd's `LimitNOFILE=`, a container's
/// `--ulimit nofile=`).
pub fn raise_open_files_limit(connections_max: usize) {
    let wanted = (connections_max as u64).saturating_add(crate::limits::FILES_BEYOND_CONNECTIONS);
    match rlimit::increase_nofile_limit(wanted) {
        Ok(soft) if soft < wanted => tracing::warn!(
            open_files = soft,
            wanted,
            "the open-files limit is below --connections-max plus what the node needs besides: \
             raise the hard limit (ulimit -Hn, LimitNOFILE=), or lower --connections-max"
        ),
        Ok(soft) => tracing::debug!(open_files = soft, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "could not read or raise the open-files limit"),
    }
}

/// The bounds on client connections of `options`.
fn connection_limits(options: &ServeOptions) -> ConnectionLimits {
    let request_timeout_ms = options.request_timeout_ms.unwrap_or(
        options.node.write_wait_ms
            + options.node.catch_up_wait_ms
            + crate::limits::REQUEST_TIME_BEYOND_WAITS_MS,
    );
    ConnectionLimits {
        connections_max: options.connections_max.max(1),
        connections_per_address_max: options.connections_per_address_max,
        header_read_timeout: Duration::from_millis(options.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(options.idle_timeout_ms),
        request_timeout: Duration::from_millis(request_timeout_ms),
    }
}

/// The admin token: given, kept in the data dir, or generated there on first start.
fn admin_token(options: &ServeOptions) -> Result<String, String> {
    if let Some(token) = &options.admin_token {
        if token.len() < 16 {
            return Err("--admin-token must be at least 16 characters".into());
        }
        return Ok(token.clone());
    }
    let path = options.data_dir.join("admin-token");
    if let Ok(token) = fs::read_to_string(&path) {
        let token = token.trim().to_string();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_secret(&path, &token)?;
    tracing::info!(path = %path.display(), "generated an admin token (read it from this file)");
    eprintln!("waitroom: generated an admin token in {}", path.display());
    Ok(token)
}

/// The signing key: `--signing-key` (a path or PEM text), or for an embedded backend, kept in
/// (or generated into) the data dir. Shared backends need the same key on every node.
fn signing_key(
    options: &ServeOptions,
    backend: &BackendUrl,
) -> Result<waitroom_token::SigningKey, String> {
    if let Some(given) = &options.signing_key {
        let pem = if given.trim_start().starts_with("-----BEGIN") {
            given.clone()
        } else {
            fs::read_to_string(given)
                .map_err(|e| format!("cannot read --signing-key {given}: {e}"))?
        };
        return waitroom_token::SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| format!("--signing-key is not an Ed25519 PKCS#8 PEM: {e}"));
    }
    if !backend.is_embedded() {
        return Err(format!(
            "--signing-key (or WAITROOM_SIGNING_KEY) is required with the {} backend: every node of a \
             fleet must sign admission tokens with the same Ed25519 key. Generate one with \
             `openssl genpkey -algorithm ed25519 -out signing-key.pem`.",
            backend.describe()
        ));
    }
    let path = options.data_dir.join("signing-key.pem");
    let (key, created) = waitroom_token::SigningKey::load_or_generate(&path)
        .map_err(|e| format!("signing key {}: {e}", path.display()))?;
    if created {
        tracing::info!(path = %path.display(), "generated an Ed25519 signing key");
    }
    Ok(key)
}

/// The keys published besides the signing key (`--next-signing-key`, `--retired-signing-key`).
/// Those given as private keys also sign join challenges the node accepts (`crate::challenge`).
fn other_keys(options: &ServeOptions) -> Result<OtherKeys, String> {
    let mut challenge_keys = Vec::new();
    let mut read = |flag: &str, given: &str| -> Result<waitroom_token::Jwk, String> {
        let pem = if given.trim_start().starts_with("-----BEGIN") {
            given.to_owned()
        } else {
            fs::read_to_string(given).map_err(|e| format!("cannot read {flag} {given}: {e}"))?
        };
        if let Ok(private) = waitroom_token::SigningKey::from_pkcs8_pem(&pem) {
            challenge_keys.push(private);
        }
        waitroom_token::public_jwk_from_pem(&pem).map_err(|e| format!("{flag}: {e}"))
    };
    let next = options
        .next_signing_key
        .as_deref()
        .map(|given| read("--next-signing-key", given))
        .transpose()?;
    let retired = options
        .retired_signing_keys
        .iter()
        .map(|given| read("--retired-signing-key", given))
        .collect::<Result<_, _>>()?;
    Ok(OtherKeys {
        next,
        retired,
        challenge_keys,
    })
}

/// Writes a secret readable by the owner only.
fn write_secret(path: &Path, secret: &str) -> Result<(), String> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(secret.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn read_rooms_file(path: &Path) -> Result<Vec<(RoomId, waitroom_core::RoomConfig)>, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: RoomsFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    file.rooms
        .into_iter()
        .map(|(id, body)| {
            let room =
                RoomId::new(&id).map_err(|e| format!("{}: room {id:?}: {e}", path.display()))?;
            let config = body
                .to_config()
                .map_err(|p| format!("{}: room {id}: {}", path.display(), p.detail))?;
            Ok((room, config))
        })
        .collect()
}

/// Applies the rooms file once the node is ready (caught up with the log), entry by entry in
/// room id order. An entry is applied only if it changed since it was last applied to its room:
/// each room remembers the digest of the entry last applied (`RoomConfig::digest` of the entry's
/// settings, formatting and comments aside). So a restart with the same file changes nothing,
/// and whatever was changed through the API since (a pause, a new capacity, a close) stands; an
/// entry that changed, or a room the node does not know, is applied over it, once. Several nodes
/// starting at once may each append the same entry: the room applies the first and ignores the
/// others (`ConfigureRoomFromFile` with the digest already applied is a no-op), even with API
/// changes in between.
async fn apply_rooms_file(node: Arc<Node>, rooms: Vec<(RoomId, waitroom_core::RoomConfig)>) {
    loop {
        if node.wait_ready(Duration::from_secs(60)).await.is_ok() {
            break;
        }
    }
    for (room, config) in rooms {
        let file_entry_digest = config.digest();
        let applied = node
            .room(&room)
            .and_then(|cell| cell.state.read().file_entry_digest());
        if applied == Some(file_entry_digest) {
            tracing::debug!(room = %room, "the rooms file's entry is unchanged since it was applied");
            continue;
        }
        let command =
            Command::configure_from_file(config, file_entry_digest, crate::ids::new_draw_seed());
        match node.write(&room, command).await {
            Ok(Outcome::Configured { created }) => {
                tracing::info!(room = %room, created, "applied the rooms file's entry")
            }
            Ok(Outcome::Duplicate) => {
                tracing::info!(room = %room, "another node applied the rooms file's entry first")
            }
            Ok(outcome) => {
                tracing::error!(room = %room, ?outcome, "the rooms file's entry was refused")
            }
            Err(e) => {
                tracing::error!(room = %room, error = %e, "could not configure a room from the rooms file")
            }
        }
    }
}

pub use crate::limits::LISTEN_BACKLOG;

/// Binds `address` (`host:port`) with [`LISTEN_BACKLOG`].
///
/// # Errors
/// The address does not resolve or cannot be bound.
pub async fn listen(address: &str) -> Result<TcpListener, String> {
    let resolved = tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))?;
    let socket = if resolved.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| format!("cannot open a socket for {address}: {e}"))?;
    // A restarted node can bind again while the old connections sit in TIME_WAIT.
    socket
        .set_reuseaddr(true)
        .map_err(|e| format!("cannot set SO_REUSEADDR: {e}"))?;
    socket
        .bind(resolved)
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    socket
        .listen(LISTEN_BACKLOG)
        .map_err(|e| format!("cannot listen on {address}: {e}"))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    /// A rooms-file entry carries events as `[[rooms.<id>.events]]` tables (times as quoted
    /// RFC 3339 strings, like `opensAt`), checked like a PUT body's.
    #[test]
    fn a_rooms_file_entry_schedules_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rooms.toml");
        let entry = r#"
[rooms.sale-day]
capacity = 50

[[rooms.sale-day.events]]
name = "presale"
startsAt = "2030-06-01T09:00:00Z"
endsAt = "2030-06-01T10:00:00Z"
capacity = 200
preQueueMinutes = 30

[[rooms.sale-day.events]]
name = "general"
startsAt = "2030-06-01T12:00:00Z"
endsAt = "2030-06-01T16:00:00Z"
admitPerMinute = 3000
"#;
        std::fs::write(&path, entry).unwrap();
        let rooms = super::read_rooms_file(&path).unwrap();
        let events = &rooms[0].1.events;
        assert_eq!(
            events.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["presale", "general"]
        );
        assert_eq!(
            (events[0].capacity, events[0].pre_queue_minutes),
            (Some(200), Some(30))
        );
        assert_eq!(events[1].admit_per_minute, Some(3000));
        // Out of order: refused, naming the field.
        std::fs::write(&path, entry.replace("T12:00", "T09:30")).unwrap();
        let error = super::read_rooms_file(&path).unwrap_err();
        assert!(error.contains("events[1].startsAt"), "{error}");
    }

    /// Asked for more than the hard limit, the node takes all of it (only ever raising the soft
    /// limit, so the other tests of this process are not disturbed).
    #[cfg(unix)]
    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit_at_most() {
        let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
        let connections_max = usize::try_from(hard).unwrap_or(usize::MAX);
        super::raise_open_files_limit(connections_max);
        let (soft, hard_after) = rlimit::Resource::NOFILE.get().unwrap();
        assert_eq!(hard_after, hard);
        assert_eq!(soft, hard);
    }
}
