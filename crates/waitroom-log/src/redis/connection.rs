//! Connections to Redis (one server or a Cluster), pipelines routed per slot, and backoff.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::settings::{
    CONNECT_TIMEOUT, Keys, READ_BLOCK, READ_RESPONSE_MARGIN, RECONNECT_DELAY_MAX,
    RECONNECT_DELAY_MIN,
};
use crate::LogError;

/// A random number (std's per-process random hash keys, advanced at every call): enough for
/// backoff jitter and name suffixes, which need no cryptographic strength.
pub(super) fn random_u64() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// Milliseconds since the Unix epoch, by this machine's clock (for `keep-history` only: the
/// log's own times are Redis's).
pub(super) fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since_epoch| {
            u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Delay before reconnection attempt `attempt` (0-based): doubling from [`RECONNECT_DELAY_MIN`]
/// up to [`RECONNECT_DELAY_MAX`], each drawn in the upper half of its range so nodes spread out.
pub(super) fn reconnect_delay(attempt: u32) -> Duration {
    let ceiling = RECONNECT_DELAY_MIN
        .saturating_mul(1 << attempt.min(16))
        .min(RECONNECT_DELAY_MAX);
    let half = ceiling / 2;
    let jitter_ms = random_u64() % (half.as_millis() as u64 + 1);
    half + Duration::from_millis(jitter_ms)
}

/// Installs rustls' ring crypto provider unless the process already has one: the `redis` crate
/// builds its TLS configuration from the process default and fails without one.
pub(super) fn install_crypto_provider() {
    // An error only says a provider is installed already, which is all that is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A connection of any kind, so commands are written once.
#[derive(Clone)]
pub(super) enum Conn {
    /// Appends, head, registry: reconnects by itself.
    Manager(ConnectionManager),
    /// A subscription's own connection.
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(conn) => conn.req_packed_command(cmd),
            Conn::Multiplexed(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Multiplexed(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(conn) => conn.get_db(),
            Conn::Multiplexed(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

impl Conn {
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

/// Runs `commands` (each with the key that routes it), pipelined, and returns their replies in
/// order. On one server that is one pipeline; under Cluster, one pipeline per slot, run
/// concurrently (commands of one slot keep their order). With `ignore_errors`, a command's error
/// is returned as its `Value::ServerError` reply; otherwise it fails the call.
pub(super) async fn query_per_slot(
    conn: &Conn,
    commands: Vec<(String, Cmd)>,
    ignore_errors: bool,
) -> Result<Vec<Value>, RedisError> {
    if commands.is_empty() {
        return Ok(Vec::new());
    }
    let expected = commands.len();
    let mut by_slot: HashMap<Option<Slot>, (Vec<usize>, Pipeline)> = HashMap::new();
    for (index, (key, cmd)) in commands.into_iter().enumerate() {
        let slot = conn.is_cluster().then(|| Slot::for_key(&key));
        let (indexes, pipeline) = by_slot.entry(slot).or_insert_with(|| {
            let mut pipeline = redis::pipe();
            if ignore_errors {
                pipeline.ignore_errors();
            }
            (Vec::new(), pipeline)
        });
        indexes.push(index);
        pipeline.add_command(cmd);
    }
    let runs = by_slot.into_values().map(|(indexes, pipeline)| {
        let mut conn = conn.clone();
        async move {
            let replies: Vec<Value> = pipeline.query_async(&mut conn).await?;
            Ok::<_, RedisError>((indexes, replies))
        }
    });
    let mut ordered = vec![Value::Nil; expected];
    for (indexes, replies) in futures::future::try_join_all(runs).await? {
        if replies.len() != indexes.len() {
            return Err(RedisError::from((
                redis::ErrorKind::Parse,
                "pipeline answered with the wrong number of replies",
            )));
        }
        for (index, reply) in indexes.into_iter().zip(replies) {
            ordered[index] = reply;
        }
    }
    Ok(ordered)
}

pub(super) fn unavailable(what: &str, error: impl fmt::Display) -> LogError {
    LogError::Unavailable(format!("{what}: {error}"))
}

/// How to reach Redis, and the names this log uses there.
pub(super) struct Shared {
    pub(super) client: Client,
    pub(super) keys: Keys,
    pub(super) node: String,
    /// The node name was generated (not configured): its groups are destroyed on the way out.
    pub(super) node_generated: bool,
    pub(super) keep_history_ms: u64,
    pub(super) description: String,
    /// Counts the times a subscription of this log found that Redis lost its data (the epoch
    /// key changed): appends then register their rooms again (see `appending`).
    pub(super) data_lost: std::sync::atomic::AtomicU64,
}

#[expect(
    clippy::large_enum_variant,
    reason = "one per log, behind an Arc: the size does not matter"
)]
pub(super) enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

impl Shared {
    /// A new connection for one subscription.
    pub(super) async fn read_connection(&self) -> Result<Conn, RedisError> {
        match &self.client {
            Client::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(READ_BLOCK + READ_RESPONSE_MARGIN));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Conn::Multiplexed(conn))
            }
            Client::Cluster(client) => Ok(Conn::Cluster(client.get_async_connection().await?)),
        }
    }
}

/// Frees the primary group name (the bare node name) when its subscription ends.
pub(super) struct PrimaryGroup(pub(super) Arc<AtomicBool>);

impl Drop for PrimaryGroup {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
