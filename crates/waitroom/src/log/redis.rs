//! The Redis Streams log: one stream per room, every node reading every stream through a consumer
//! group of its own.
//!
//! # Connecting
//! The backend URL is one of:
//! - `redis://[[user]:password@]host[:port][/db]`: one Redis server (port 6379 and db 0 unless
//!   given). A Redis with replicas behind a failover address (Sentinel-managed, or a managed
//!   service's primary endpoint) is reached the same way.
//! - `rediss://…`: the same over TLS (rustls). The server's certificate is checked against the
//!   platform's root certificates.
//! - `redis+cluster://[[user]:password@]host:port[,host:port…]` and `rediss+cluster://…`: Redis
//!   Cluster. The listed nodes are seeds: the client learns the slot map from them and follows
//!   `MOVED`/`ASK` redirections. Cluster has only db 0, so these URLs take no `/db`.
//!
//! Options go in the query string, e.g. `redis://10.0.0.5:6379/0?prefix=tickets&node=web-1`:
//! - `prefix` (default [`PREFIX_DEFAULT`]): the first part of every key, so several fleets (or
//!   test runs) can share one Redis. `[A-Za-z0-9._-]`, at most [`NAME_BYTES_MAX`] bytes.
//! - `node`: this node's name, used as the name of its consumer groups, so `XINFO GROUPS` on a
//!   room's stream shows each node's lag. Same characters and length as `prefix`. It must be
//!   unique among the running nodes of a fleet (two readers in one group would split the entries
//!   between them). Default: a name generated for each opened log, `{hostname}-{pid}-{random}`;
//!   set a stable name (the pod or host name) in production so a restarted node reuses its groups.
//!
//! Unknown options are rejected, so a typo does not silently fall back to a default. The password
//! never appears in [`Log::describe`], in errors or in logs.
//!
//! # Keys
//! - `{prefix}:rooms`: a set, the registry of rooms (room names).
//! - `{prefix}:rooms:events`: a stream announcing registry changes, entries `new <room>` or
//!   `forget <room>`, trimmed to about [`ROOM_EVENTS_MAX`] entries.
//! - `prefix:{room}:log`: one stream per room. Each entry has one field, `r`, holding the encoded
//!   record.
//!
//! The braces are Redis Cluster hash tags: a room's stream hashes by the room's name, so each room
//! lives in one slot and rooms spread over the cluster; the two registry keys hash by the prefix,
//! so they share a slot and one Lua script updates both atomically. The shard of an entry is its
//! stream's key; its [`Position`] is its stream id packed as `ms << 64 | seq`; its timestamp is the
//! id's milliseconds. Ids are assigned by Redis (`XADD … *`) and never go backwards (Redis uses
//! `max(now, last id)`), so the room's clock is Redis's clock, not any node's.
//!
//! # Appending
//! An append first registers the rooms of the batch this log has not registered in the last
//! [`ROOM_REGISTRATION_REFRESH`]: a Lua script adds the room to the registry and, only if it was
//! not there yet, announces it on the events stream (refusing a room past [`ROOMS_MAX`]). That is
//! a round trip of its own and it completes before any record of the room is written, so a room is
//! in the registry before its first record can be read, and `head()` (registry first, then the
//! streams) covers every acknowledged record. The periodic refresh puts back a room that another
//! node forgot while this one still appended to it.
//!
//! Then one pipeline carries one `XADD <room stream> * r <record>` per record, in batch order, on
//! a multiplexed connection (the `redis` crate's connection manager, which reconnects by itself).
//! A room's records therefore keep the batch's order. There is no `MULTI`: on an error some
//! records of the batch may have been appended, which the [`Log`] contract allows (records carry
//! unique ids; retrying the batch is safe). Under Redis Cluster the batch is split into one
//! pipeline per slot, run concurrently; a room is in one slot, so its order holds. Limits: see
//! [`RECORD_BYTES_MAX`], [`APPEND_BATCH_RECORDS_MAX`], [`APPEND_BATCH_BYTES_MAX`],
//! [`ROOM_NAME_BYTES_MAX`]. Redis errors are [`LogError::Unavailable`].
//!
//! # Reading
//! Each subscription has its own dedicated connection (never the multiplexed one appends use,
//! since a blocked `XREADGROUP` would hold up every command queued behind it) and its own
//! consumer group, named after the node: the first live subscription of a [`RedisLog`] uses
//! `node`, further concurrent ones `node.2`, `node.3`, …. Groups are only a window for operators
//! (`XINFO GROUPS` shows each node's `last-delivered-id` and `lag`): where to read from is decided
//! by the positions the subscription delivered, never by the group's pending list.
//!
//! Starting (and after every reconnect) a subscription:
//! 1. notes the last id of the events stream, then reads the registry (`SMEMBERS`): a room
//!    registered after that read is announced after that id;
//! 2. reads the last entry id of every room stream (`XREVRANGE + - COUNT 1`, pipelined): these
//!    are the catch-up targets;
//! 3. (re)creates its group on every room stream at the position to resume from (`XGROUP
//!    DESTROY` then `XGROUP CREATE … <id> MKSTREAM`, which also empties the group's pending list)
//!    and on the events stream at the id noted in 1. The position is the subscription's last
//!    delivered id of that stream, else the `from` checkpoint's, else `0-0`.
//!
//! Then it loops on one `XREADGROUP GROUP <group> <group> COUNT <n> BLOCK <ms> STREAMS
//! <events> <room streams…> > > …` (preceded, in the same pipeline, by an `XACK` of what the
//! previous round delivered: acks only keep the pending list empty). Entries become
//! [`Event::Entries`] batches; a `new` announcement adds the room (its group created at its
//! checkpoint position or `0-0`), a `forget` drops it.
//!
//! # CaughtUp and reconnecting
//! [`Event::CaughtUp`] follows once every stream has been delivered up to its catch-up target
//! (step 2), or as soon as a read round finds nothing at all to deliver (which proves there is
//! nothing older left). Rooms created later are not waited for.
//!
//! When a command fails (Redis restarting, a network cut, no answer within [`READ_BLOCK`] plus
//! [`READ_RESPONSE_MARGIN`]), the subscription emits [`Event::Unavailable`] with the reason,
//! waits (exponential backoff with jitter between [`RECONNECT_DELAY_MIN`] and
//! [`RECONNECT_DELAY_MAX`], retrying for as long as the subscription lives, one `Unavailable` per
//! failed attempt), reconnects and starts over as above from its last delivered position per
//! stream. Nothing is skipped: a stream resumes right after the last entry delivered, whatever
//! the group says. Nothing is delivered twice either, though a node must not rely on that (the
//! [`Log`] contract is at-least-once). Then `CaughtUp` comes again. A stream deleted under the
//! subscription (`forget_room` by another node) makes Redis answer `NOGROUP`; the subscription
//! then re-reads the registry without reporting `Unavailable` (up to [`RESYNCS_IN_A_ROW_MAX`]
//! times in a row).
//!
//! A subscription keeps its own connection and outlives the [`RedisLog`] it came from; it ends
//! when its stream is dropped. On the way out it destroys its groups unless they carry a
//! configured node name (whose groups stay, so the stopped node's lag stays visible and a
//! restart reuses them). A process that crashes leaves its groups behind; they go with the room
//! streams (`forget_room`), or by hand with `XGROUP DESTROY`.
//!
//! # Redis Cluster
//! A multi-key `XREADGROUP` may only name keys of one slot, and a blocked read would stall the
//! other commands on the cluster connection's link to that node. So under Cluster a subscription
//! reads each slot's streams with one non-blocking `XREADGROUP`, all slots concurrently, and waits
//! [`CLUSTER_POLL_INTERVAL`] after a round that found nothing: up to that much extra latency, and
//! about `(slots in use + 1) / CLUSTER_POLL_INTERVAL` cheap commands per second per node when idle.
//!
//! # What bounds a stream
//! Nothing trims a live room's stream: every node replays a room from its first record, so
//! trimming (`MAXLEN`) would break replay; bounding it needs room snapshots (a later issue). Today
//! a stream grows for the life of the room: about 100–200 bytes of Redis memory per record (a
//! join, a heartbeat batch, a tick), so size Redis for the on-sale's records. Once a room is
//! closed and its retention has passed, every node drops it and [`Log::forget_room`] removes it
//! from the registry and deletes its stream (`UNLINK`), unless a record was appended to it
//! meanwhile (the room created again). The registry holds at most [`ROOMS_MAX`] rooms; the events
//! stream is trimmed (approximately) to [`ROOM_EVENTS_MAX`] entries, which is safe because a
//! (re)starting subscription reads the registry itself.
//!
//! # Durability: Redis persistence
//! `append` returns once Redis has executed the `XADD`s, which is in Redis's memory. What survives
//! a crash of Redis depends on its persistence settings:
//! - AOF with `appendfsync everysec` (Redis's AOF default): Redis fsyncs the AOF once a second, so
//!   a crash of the Redis process or machine loses up to about a second (more if the disk stalls)
//!   of acknowledged appends. Joins that got a 2xx may vanish, and nodes that had applied them
//!   disagree with nodes that restart and replay without them (a checkpoint past a stream's end is
//!   reported as [`LogError::Rejected`] on subscribe, and logged as a warning on reconnect).
//! - AOF with `appendfsync always`: Redis fsyncs before answering, so nothing acknowledged is
//!   lost, at the cost of an fsync per write batch (Redis groups the writes of one event-loop
//!   iteration, so pipelined appends share fsyncs).
//! - RDB snapshots only, or no persistence: everything since the last snapshot is lost.
//!
//! Replication is asynchronous: a failover to a replica can lose the latest acknowledged appends
//! whatever the fsync policy. Run `appendonly yes` with `appendfsync always` where a lost join
//! matters; `everysec` is a deliberate trade of up to a second of joins for write throughput.

pub use super::{APPEND_BATCH_BYTES_MAX, APPEND_BATCH_RECORDS_MAX, RECORD_BYTES_MAX};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};
use tokio::sync::mpsc;

use super::{Append, Checkpoint, Entry, Event, Log, LogError, Position, ShardId};

/// Default first part of every key.
pub const PREFIX_DEFAULT: &str = "waitroom";

/// Longest `prefix` or `node` option, in bytes: names stay readable in `XINFO GROUPS` and keys.
pub const NAME_BYTES_MAX: usize = 64;

/// Longest room name, in bytes. Room ids are at most 64 bytes (`waitroom-core`); the slack is for
/// tests and tools, while keeping keys short.
pub const ROOM_NAME_BYTES_MAX: usize = 256;

/// Most rooms the registry holds. Every read round names every room stream, so its cost grows
/// with the rooms; this bounds it (and the memory of a node, which holds every room).
pub const ROOMS_MAX: usize = 10_000;

/// Approximate length the events stream is trimmed to (`MAXLEN ~`). Subscriptions read it as it
/// grows and re-read the registry on every (re)start, so only announcements older than this many
/// newer ones, unread by a connected subscription, could be missed.
pub const ROOM_EVENTS_MAX: usize = 10_000;

/// How long a log trusts its own registration of a room before registering it again (one
/// script call, announcing only if the room had been forgotten meanwhile).
pub const ROOM_REGISTRATION_REFRESH: Duration = Duration::from_secs(60);

/// Longest wait for a TCP (and TLS) connection to Redis.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest wait for the answer to an append, head or registry command. Redis answers in
/// microseconds; seconds mean it is stalled (a slow fsync under `appendfsync always`, a failover).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Reconnection attempts the appenders' connection manager makes for one failing command before
/// the command fails with [`LogError::Unavailable`] (the next command tries again).
pub const COMMAND_RECONNECT_ATTEMPTS: usize = 2;

/// How long one `XREADGROUP` blocks waiting for new entries. Short enough that a silently dead
/// connection is noticed soon (see [`READ_RESPONSE_MARGIN`]); long enough to cost nothing idle.
pub const READ_BLOCK: Duration = Duration::from_secs(1);

/// How much longer than [`READ_BLOCK`] a subscription waits for an answer before it treats the
/// connection as dead and reconnects.
pub const READ_RESPONSE_MARGIN: Duration = Duration::from_secs(4);

/// Most entries one read round asks for, over all streams (`COUNT` is this divided by the number
/// of streams, at least 1): bounds the memory of one round.
pub const READ_ENTRIES_PER_ROUND_MAX: usize = 8192;

/// Most entries one read round asks for from one stream (`COUNT`).
pub const READ_COUNT_PER_STREAM_MAX: usize = 2048;

/// Most entries in one delivered [`Event::Entries`] batch.
pub const SUBSCRIBE_BATCH_ENTRIES_MAX: usize = 4096;

/// Events a subscription reads ahead of its consumer. Reading ahead overlaps Redis round trips
/// with applying; the bound keeps a slow applier from buffering without limit.
pub const SUBSCRIBE_QUEUE_EVENTS_MAX: usize = 4;

/// First delay before a subscription reconnects.
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(50);

/// Longest delay between reconnection attempts: a restarted Redis is noticed within this.
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);

/// Times in a row a subscription re-reads the registry after Redis said a stream or group is
/// missing, before it treats the problem as an outage (reports `Unavailable`, backs off).
pub const RESYNCS_IN_A_ROW_MAX: u32 = 3;

/// Under Redis Cluster, the wait after a read round that found nothing (see the module docs).
pub const CLUSTER_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The field of a room stream's entries that holds the record.
const RECORD_FIELD: &str = "r";

const _: () = assert!(RECORD_BYTES_MAX <= APPEND_BATCH_BYTES_MAX);
const _: () = assert!(READ_COUNT_PER_STREAM_MAX <= READ_ENTRIES_PER_ROUND_MAX);
const _: () = assert!(READ_ENTRIES_PER_ROUND_MAX <= 2 * SUBSCRIBE_BATCH_ENTRIES_MAX);
const _: () = assert!(RECONNECT_DELAY_MIN.as_millis() < RECONNECT_DELAY_MAX.as_millis());
const _: () = assert!(READ_BLOCK.as_millis() < COMMAND_TIMEOUT.as_millis());

/// Registers a room. KEYS: the registry set, the events stream. ARGV: room, [`ROOMS_MAX`],
/// [`ROOM_EVENTS_MAX`]. Returns 1 if the room is new (and was announced), 0 if it was registered.
const REGISTER_SCRIPT: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return redis.error_reply('WAITROOM_ROOMS_MAX the registry already holds ' .. ARGV[2] .. ' rooms')
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'new', ARGV[1])
return 1
";

/// Removes a room from the registry. KEYS: the registry set, the events stream. ARGV: room,
/// [`ROOM_EVENTS_MAX`]. Returns 1 if the room was registered (and the removal was announced).
const FORGET_SCRIPT: &str = r"
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'forget', ARGV[1])
return 1
";

/// The `EVAL` of [`REGISTER_SCRIPT`] for `room`.
fn register_command(keys: &Keys, room: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(REGISTER_SCRIPT)
        .arg(2)
        .arg(&keys.rooms)
        .arg(&keys.events)
        .arg(room)
        .arg(ROOMS_MAX)
        .arg(ROOM_EVENTS_MAX);
    cmd
}

/// Deletes a room stream if its newest entry is the given one (or it has none). KEYS: the
/// stream. ARGV: the stream id the caller applied last. Returns 1 if deleted (or absent), 0 if
/// newer entries keep it. One key, so it runs under Redis Cluster too.
const DELETE_IF_LAST_SCRIPT: &str = r"
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #newest > 0 and newest[1][1] ~= ARGV[1] then return 0 end
redis.call('UNLINK', KEYS[1])
return 1
";

/// A Redis stream id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct StreamId {
    ms: u64,
    seq: u64,
}

impl StreamId {
    const ZERO: Self = Self { ms: 0, seq: 0 };

    fn parse(text: &[u8]) -> Option<Self> {
        let (ms, seq) = std::str::from_utf8(text).ok()?.split_once('-')?;
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    fn position(self) -> Position {
        Position((u128::from(self.ms) << 64) | u128::from(self.seq))
    }

    fn from_position(position: Position) -> Self {
        Self {
            ms: (position.0 >> 64) as u64,
            seq: position.0 as u64,
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The key names of one prefix.
struct Keys {
    prefix: String,
    rooms: String,
    events: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            rooms: format!("{{{prefix}}}:rooms"),
            events: format!("{{{prefix}}}:rooms:events"),
        }
    }

    fn room(&self, room: &str) -> String {
        format!("{}:{{{room}}}:log", self.prefix)
    }
}

/// Where the servers are.
#[derive(Debug, PartialEq, Eq)]
enum Servers {
    /// A URL for the `redis` crate: scheme, credentials, host, port, db; no query.
    Single(String),
    /// One such URL per seed node.
    Cluster(Vec<String>),
}

/// What a backend URL says.
#[derive(Debug, PartialEq, Eq)]
struct Settings {
    servers: Servers,
    prefix: String,
    node: Option<String>,
    /// Scheme and servers without credentials, for `describe()`.
    shown: String,
}

fn rejected(message: impl Into<String>) -> LogError {
    LogError::Rejected(message.into())
}

fn check_name(option: &str, value: &str) -> Result<(), LogError> {
    let valid = !value.is_empty()
        && value.len() <= NAME_BYTES_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(rejected(format!(
            "Redis URL option {option}={value:?}: use 1 to {NAME_BYTES_MAX} of A-Z a-z 0-9 . _ -"
        )))
    }
}

impl Settings {
    /// Parses a backend URL (see the module documentation). Error messages never quote the URL,
    /// which may hold a password.
    fn parse(url: &str) -> Result<Self, LogError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            rejected("a Redis URL starts with redis://, rediss:// or redis+cluster://")
        })?;
        let (cluster, base_scheme) = match scheme {
            "redis" => (false, "redis"),
            "rediss" => (false, "rediss"),
            "redis+cluster" => (true, "redis"),
            "rediss+cluster" => (true, "rediss"),
            other => {
                return Err(rejected(format!(
                    "unknown Redis URL scheme {other:?}: use redis, rediss, redis+cluster or \
                     rediss+cluster"
                )));
            }
        };
        if rest.contains('#') {
            return Err(rejected("a Redis URL takes no #fragment"));
        }
        let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut prefix, mut node) = (None, None);
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (option, value) = pair
                .split_once('=')
                .ok_or_else(|| rejected(format!("Redis URL option {pair:?} has no value")))?;
            let slot = match option {
                "prefix" => &mut prefix,
                "node" => &mut node,
                other => {
                    return Err(rejected(format!(
                        "unknown Redis URL option {other:?} (known: prefix, node)"
                    )));
                }
            };
            check_name(option, value)?;
            if slot.replace(value.to_owned()).is_some() {
                return Err(rejected(format!(
                    "Redis URL option {option} is given twice"
                )));
            }
        }
        let prefix = prefix.unwrap_or_else(|| PREFIX_DEFAULT.to_owned());
        let (userinfo, hosts) = match address.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, address),
        };
        let credentials = if userinfo.is_some() { "***@" } else { "" };
        let with_userinfo = |host: &str| match userinfo {
            Some(userinfo) => format!("{base_scheme}://{userinfo}@{host}"),
            None => format!("{base_scheme}://{host}"),
        };
        let (servers, shown) = if cluster {
            let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
            if hosts.contains('/') {
                return Err(rejected(
                    "Redis Cluster has only db 0: a redis+cluster URL takes no /db",
                ));
            }
            let mut nodes = Vec::new();
            let mut shown = Vec::new();
            for host in hosts.split(',') {
                let node_url = with_userinfo(host);
                let (host, port, _) = parse_server(&node_url)?;
                nodes.push(node_url);
                shown.push(format!("{host}:{port}"));
            }
            (Servers::Cluster(nodes), shown.join(","))
        } else {
            let server_url = with_userinfo(hosts);
            let (host, port, db) = parse_server(&server_url)?;
            (Servers::Single(server_url), format!("{host}:{port}/{db}"))
        };
        Ok(Self {
            servers,
            shown: format!("{scheme}://{credentials}{shown}"),
            prefix,
            node,
        })
    }
}

/// Host, port and db of one server URL (no query).
fn parse_server(server_url: &str) -> Result<(String, u16, u32), LogError> {
    // The url crate's messages name the problem, never the URL.
    let parsed = url::Url::parse(server_url)
        .map_err(|error| rejected(format!("bad Redis server address: {error}")))?;
    let host = parsed
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| rejected("a Redis URL needs a host"))?;
    let db = match parsed.path() {
        "" | "/" => 0,
        path => path[1..]
            .parse()
            .map_err(|_| rejected("the path of a Redis URL is the db number, e.g. /0"))?,
    };
    Ok((host.to_owned(), parsed.port().unwrap_or(6379), db))
}

/// A name for this log's groups when the URL gives none: `{hostname}-{pid}-{random}`.
fn generated_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(32)
        .collect();
    let host = if host.is_empty() { "node" } else { &host };
    format!("{host}-{}-{:08x}", std::process::id(), random_u64() as u32)
}

/// A random number (std's per-process random hash keys, advanced at every call): enough for
/// backoff jitter and name suffixes, which need no cryptographic strength.
fn random_u64() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// Delay before reconnection attempt `attempt` (0-based): doubling from [`RECONNECT_DELAY_MIN`]
/// up to [`RECONNECT_DELAY_MAX`], each drawn in the upper half of its range so nodes spread out.
fn reconnect_delay(attempt: u32) -> Duration {
    let ceiling = RECONNECT_DELAY_MIN
        .saturating_mul(1 << attempt.min(16))
        .min(RECONNECT_DELAY_MAX);
    let half = ceiling / 2;
    let jitter_ms = random_u64() % (half.as_millis() as u64 + 1);
    half + Duration::from_millis(jitter_ms)
}

/// Installs rustls' ring crypto provider unless the process already has one: the `redis` crate
/// builds its TLS configuration from the process default and fails without one.
fn install_crypto_provider() {
    // An error only says a provider is installed already, which is all that is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A connection of any kind, so commands are written once.
#[derive(Clone)]
enum Conn {
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
    fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

/// Runs `commands` (each with the key that routes it), pipelined, and returns their replies in
/// order. On one server that is one pipeline; under Cluster, one pipeline per slot, run
/// concurrently (commands of one slot keep their order). With `ignore_errors`, a command's error
/// is returned as its `Value::ServerError` reply; otherwise it fails the call.
async fn query_per_slot(
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

/// Why a subscription's round or setup failed.
#[derive(Debug)]
enum Failure {
    /// Redis failed or could not be reached.
    Redis(RedisError),
    /// Redis answered something this log did not expect.
    Reply(String),
    /// The subscription cannot go on (the error is delivered and the stream ends).
    Fatal(LogError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Redis(error) => write!(f, "{error}"),
            Failure::Reply(message) => f.write_str(message),
            Failure::Fatal(error) => write!(f, "{error}"),
        }
    }
}

impl From<RedisError> for Failure {
    fn from(error: RedisError) -> Self {
        Failure::Redis(error)
    }
}

impl Failure {
    /// A stream or group went missing under the subscription: re-reading the registry fixes it.
    fn needs_resync(&self) -> bool {
        match self {
            Failure::Redis(error) => matches!(error.code(), Some("NOGROUP" | "UNBLOCKED")),
            _ => false,
        }
    }
}

/// The id of a stream entry reply `[id, [field, value, …]]`, and its fields (`None` for an entry
/// deleted while pending, which a `>` read never returns).
fn parse_entry(entry: Value) -> Result<(StreamId, Option<Vec<Value>>), Failure> {
    let Value::Array(mut parts) = entry else {
        return Err(Failure::Reply(format!(
            "a stream entry that is not an array: {entry:?}"
        )));
    };
    let fields = match parts.pop() {
        Some(Value::Array(fields)) => Some(fields),
        Some(Value::Nil) => None,
        other => {
            return Err(Failure::Reply(format!("stream entry fields: {other:?}")));
        }
    };
    match parts.pop() {
        Some(Value::BulkString(id)) if parts.is_empty() => StreamId::parse(&id)
            .map(|id| (id, fields))
            .ok_or_else(|| Failure::Reply(format!("a stream id that does not parse: {id:?}"))),
        other => Err(Failure::Reply(format!("stream entry id: {other:?}"))),
    }
}

/// The id of the only entry of an `XREVRANGE … COUNT 1` reply, `None` for an empty stream.
fn parse_last_id(reply: Value) -> Result<Option<StreamId>, Failure> {
    match reply {
        Value::Array(mut entries) => match entries.pop() {
            None => Ok(None),
            Some(entry) => parse_entry(entry).map(|(id, _)| Some(id)),
        },
        Value::ServerError(error) => Err(Failure::Redis(error.into())),
        other => Err(Failure::Reply(format!("XREVRANGE answered {other:?}"))),
    }
}

/// One stream of an `XREADGROUP` reply: its key and its entries.
type StreamReply = (Vec<u8>, Vec<Value>);

/// The `(stream key, entries)` of an `XREADGROUP` reply (RESP2 array or RESP3 map; nil when
/// nothing arrived).
fn parse_read_reply(reply: Value) -> Result<Vec<StreamReply>, Failure> {
    let pairs = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs,
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => {
                    let entries = pair.pop().unwrap_or(Value::Nil);
                    let key = pair.pop().unwrap_or(Value::Nil);
                    Ok((key, entries))
                }
                other => Err(Failure::Reply(format!(
                    "XREADGROUP stream reply: {other:?}"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Value::ServerError(error) => return Err(Failure::Redis(error.into())),
        other => return Err(Failure::Reply(format!("XREADGROUP answered {other:?}"))),
    };
    pairs
        .into_iter()
        .map(|(key, entries)| match (key, entries) {
            (Value::BulkString(key), Value::Array(entries)) => Ok((key, entries)),
            (key, entries) => Err(Failure::Reply(format!(
                "XREADGROUP stream reply: {key:?} {entries:?}"
            ))),
        })
        .collect()
}

/// The last entry id of every stream in `keys`, in order (`None` for an empty or missing one).
async fn last_ids(conn: &Conn, keys: &[Arc<str>]) -> Result<Vec<Option<StreamId>>, Failure> {
    let commands = keys
        .iter()
        .map(|key| {
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(&**key).arg("+").arg("-").arg("COUNT").arg(1);
            (key.to_string(), cmd)
        })
        .collect();
    query_per_slot(conn, commands, false)
        .await?
        .into_iter()
        .map(parse_last_id)
        .collect()
}

/// Commands that (re)create `group` on `key` positioned at `position`, with an empty pending
/// list. `MKSTREAM` because a room is registered before its first record creates its stream.
fn group_reset(commands: &mut Vec<(String, Cmd)>, key: &str, group: &str, position: StreamId) {
    let mut destroy = redis::cmd("XGROUP");
    destroy.arg("DESTROY").arg(key).arg(group);
    let mut create = redis::cmd("XGROUP");
    create
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg(position.to_string())
        .arg("MKSTREAM");
    commands.push((key.to_owned(), destroy));
    commands.push((key.to_owned(), create));
}

/// Runs group resets built by [`group_reset`] and checks every `CREATE` succeeded (a `DESTROY`
/// of a group or stream that does not exist is fine).
async fn run_group_resets(conn: &Conn, commands: Vec<(String, Cmd)>) -> Result<(), Failure> {
    let replies = query_per_slot(conn, commands, true).await?;
    for create in replies.into_iter().skip(1).step_by(2) {
        match create {
            Value::Okay => {}
            Value::SimpleString(text) if text == "OK" => {}
            Value::ServerError(error) => return Err(Failure::Redis(error.into())),
            other => return Err(Failure::Reply(format!("XGROUP CREATE answered {other:?}"))),
        }
    }
    Ok(())
}

fn unavailable(what: &str, error: impl fmt::Display) -> LogError {
    LogError::Unavailable(format!("{what}: {error}"))
}

/// Checks a batch against the shared limits and the room names against this backend's.
fn check_batch(batch: &[Append]) -> Result<(), LogError> {
    super::check_batch(batch, 0)?;
    batch.iter().try_for_each(|append| check_room(&append.room))
}

fn check_room(room: &str) -> Result<(), LogError> {
    if room.is_empty() || room.len() > ROOM_NAME_BYTES_MAX {
        return Err(rejected(format!(
            "room name of {} bytes: must be 1 to ROOM_NAME_BYTES_MAX ({ROOM_NAME_BYTES_MAX})",
            room.len()
        )));
    }
    Ok(())
}

/// How to reach Redis, and the names this log uses there.
struct Shared {
    client: Client,
    keys: Keys,
    node: String,
    /// The node name was generated (not configured): its groups are destroyed on the way out.
    node_generated: bool,
    description: String,
}

#[expect(
    clippy::large_enum_variant,
    reason = "one per log, behind an Arc: the size does not matter"
)]
enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

impl Shared {
    /// A new connection for one subscription.
    async fn read_connection(&self) -> Result<Conn, RedisError> {
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
struct PrimaryGroup(Arc<AtomicBool>);

impl Drop for PrimaryGroup {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The Redis Streams [`Log`]. See the module documentation.
pub struct RedisLog {
    shared: Arc<Shared>,
    /// Appends, `head`, `forget_room`.
    commands: Conn,
    /// Rooms this log registered, and when.
    registered: Mutex<HashMap<Arc<str>, Instant>>,
    /// A live subscription uses the bare node name as its group.
    primary_group_taken: Arc<AtomicBool>,
    /// Numbers the other subscriptions' groups (`node.2`, `node.3`, …).
    subscriptions: AtomicU64,
}

impl RedisLog {
    /// Connects to the Redis named by `url` (see the module documentation for the format).
    ///
    /// # Errors
    /// - [`LogError::Rejected`] for a URL that does not parse or has unknown options.
    /// - [`LogError::Unavailable`] when Redis cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, LogError> {
        let settings = Settings::parse(url)?;
        install_crypto_provider();
        let (node, node_generated) = match settings.node {
            Some(node) => (node, false),
            None => (generated_node_name(), true),
        };
        let description = format!(
            "{} (prefix {}, node {node}{})",
            settings.shown,
            settings.prefix,
            if node_generated { ", generated" } else { "" }
        );
        let (client, commands) = match settings.servers {
            Servers::Single(server_url) => {
                let client = redis::Client::open(server_url.as_str())
                    .map_err(|error| rejected(format!("bad Redis URL: {error}")))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_number_of_retries(COMMAND_RECONNECT_ATTEMPTS)
                    .set_min_delay(RECONNECT_DELAY_MIN)
                    .set_max_delay(RECONNECT_DELAY_MAX);
                let manager = ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map_err(|error| unavailable(&format!("connecting to {description}"), error))?;
                (Client::Single(client), Conn::Manager(manager))
            }
            Servers::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(COMMAND_TIMEOUT)
                    .retries(COMMAND_RECONNECT_ATTEMPTS as u32)
                    .build()
                    .map_err(|error| rejected(format!("bad Redis Cluster URL: {error}")))?;
                let conn = client
                    .get_async_connection()
                    .await
                    .map_err(|error| unavailable(&format!("connecting to {description}"), error))?;
                (Client::Cluster(client), Conn::Cluster(conn))
            }
        };
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                keys: Keys::new(&settings.prefix),
                node,
                node_generated,
                description,
            }),
            commands,
            registered: Mutex::new(HashMap::new()),
            primary_group_taken: Arc::new(AtomicBool::new(false)),
            subscriptions: AtomicU64::new(1),
        })
    }

    /// This node's name: the name of its consumer groups.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// The stream key (and shard name) of `room`.
    pub fn room_key(&self, room: &str) -> String {
        self.shared.keys.room(room)
    }

    fn registered(&self) -> MutexGuard<'_, HashMap<Arc<str>, Instant>> {
        // The map is only a cache of what Redis holds: whatever state a panicking holder left
        // is still a valid cache, so a poisoned lock is used as is.
        self.registered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers the rooms of `batch` that are not registered (or not recently): see the module
    /// documentation.
    async fn register_rooms(&self, batch: &[Append]) -> Result<(), LogError> {
        let now = Instant::now();
        let mut due: Vec<Arc<str>> = {
            let registered = self.registered();
            batch
                .iter()
                .filter(|append| {
                    registered
                        .get(&append.room)
                        .is_none_or(|at| now.duration_since(*at) >= ROOM_REGISTRATION_REFRESH)
                })
                .map(|append| Arc::clone(&append.room))
                .collect()
        };
        if due.is_empty() {
            return Ok(());
        }
        due.sort_unstable();
        due.dedup();
        let keys = &self.shared.keys;
        let commands = due
            .iter()
            .map(|room| (keys.rooms.clone(), register_command(keys, room)))
            .collect();
        let replies = query_per_slot(&self.commands, commands, true)
            .await
            .map_err(|error| unavailable("registering rooms", error))?;
        for (room, reply) in due.iter().zip(replies) {
            match reply {
                Value::Int(_) => {}
                Value::ServerError(error) if error.code() == "WAITROOM_ROOMS_MAX" => {
                    return Err(rejected(format!(
                        "cannot register room {room}: the registry already holds ROOMS_MAX \
                         ({ROOMS_MAX}) rooms"
                    )));
                }
                other => {
                    return Err(LogError::Unavailable(format!(
                        "registering room {room}: Redis answered {other:?}"
                    )));
                }
            }
        }
        let mut registered = self.registered();
        if registered.len() + due.len() > ROOMS_MAX {
            registered.retain(|_, at| now.duration_since(*at) < ROOM_REGISTRATION_REFRESH);
        }
        registered.extend(due.into_iter().map(|room| (room, now)));
        Ok(())
    }
}

#[async_trait]
impl Log for RedisLog {
    /// Registers new rooms, then appends the batch as one pipeline of `XADD`s.
    ///
    /// # Errors
    /// - [`LogError::Rejected`] when the batch breaks a limit ([`APPEND_BATCH_RECORDS_MAX`],
    ///   [`RECORD_BYTES_MAX`], [`APPEND_BATCH_BYTES_MAX`], [`ROOM_NAME_BYTES_MAX`], [`ROOMS_MAX`]);
    ///   nothing is appended then.
    /// - [`LogError::Unavailable`] when Redis fails or cannot be reached; some records may have
    ///   been appended.
    async fn append(&self, batch: Vec<Append>) -> Result<(), LogError> {
        check_batch(&batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        self.register_rooms(&batch).await?;
        let keys = &self.shared.keys;
        let commands = batch
            .iter()
            .map(|append| {
                let key = keys.room(&append.room);
                let mut cmd = redis::cmd("XADD");
                cmd.arg(&key)
                    .arg("*")
                    .arg(RECORD_FIELD)
                    .arg(&append.payload[..]);
                (key, cmd)
            })
            .collect();
        let replies = query_per_slot(&self.commands, commands, false)
            .await
            .map_err(|error| unavailable("appending", error))?;
        for reply in replies {
            match reply {
                Value::BulkString(_) => {}
                other => {
                    return Err(LogError::Unavailable(format!(
                        "appending: XADD answered {other:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// # Errors
    /// - [`LogError::Rejected`] when `from` names a position past the last entry of a room's
    ///   stream (a checkpoint taken on other data, or Redis lost acknowledged entries).
    /// - [`LogError::Unavailable`] when Redis cannot be reached to start the subscription.
    async fn subscribe(
        &self,
        from: Checkpoint,
    ) -> Result<BoxStream<'static, Result<Event, LogError>>, LogError> {
        let node = &self.shared.node;
        let (group, primary) = if self
            .primary_group_taken
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let primary = PrimaryGroup(Arc::clone(&self.primary_group_taken));
            (node.clone(), Some(primary))
        } else {
            let number = self.subscriptions.fetch_add(1, Ordering::Relaxed) + 1;
            (format!("{node}.{number}"), None)
        };
        let (sender, receiver) = mpsc::channel(SUBSCRIBE_QUEUE_EVENTS_MAX);
        let mut subscription = Subscription {
            shared: Arc::clone(&self.shared),
            destroy_groups_on_exit: self.shared.node_generated || primary.is_none(),
            group,
            _primary: primary,
            conn: None,
            from: from
                .0
                .into_iter()
                .map(|(shard, position)| (shard.0, StreamId::from_position(position)))
                .collect(),
            streams: BTreeMap::new(),
            events_unacked: Vec::new(),
            catch_up: None,
            sender,
        };
        match subscription.setup(Setup::Initial).await {
            Ok(()) => {}
            Err(Failure::Fatal(error)) => return Err(error),
            Err(failure) => {
                return Err(unavailable(
                    &format!("subscribing to {}", self.shared.description),
                    failure,
                ));
            }
        }
        tokio::spawn(subscription.run());
        Ok(
            futures::stream::unfold(receiver, |mut receiver| async move {
                let event = receiver.recv().await?;
                Some((event, receiver))
            })
            .boxed(),
        )
    }

    /// The last entry id of every registered room's stream (`XREVRANGE + - COUNT 1`, pipelined).
    async fn head(&self) -> Result<Checkpoint, LogError> {
        let keys = &self.shared.keys;
        let mut conn = self.commands.clone();
        let rooms: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&keys.rooms)
            .query_async(&mut conn)
            .await
            .map_err(|error| unavailable("reading the room registry", error))?;
        let streams: Vec<Arc<str>> = rooms.iter().map(|room| keys.room(room).into()).collect();
        let lasts = last_ids(&self.commands, &streams)
            .await
            .map_err(|failure| unavailable("reading the room streams' heads", failure))?;
        let mut head = Checkpoint::start();
        for (key, last) in streams.into_iter().zip(lasts) {
            if let Some(last) = last {
                head.advance(&ShardId(key), last.position());
            }
        }
        Ok(head)
    }

    /// Removes the room from the registry (announcing it, so subscriptions drop its stream), then
    /// deletes its stream (`UNLINK`, which frees the memory in the background) if `last` is still
    /// its newest entry. In that order, so no subscription re-creates the stream (`MKSTREAM`)
    /// after it was deleted. If another node appended to the room meanwhile, the stream stays and
    /// the room is registered (and announced) again, so every node reads it on.
    ///
    /// One window remains: a node that appends to the room right after the `UNLINK`, and still
    /// holds a fresh registration in its cache ([`ROOM_REGISTRATION_REFRESH`]), writes to a
    /// stream nobody reads. Its write is never applied, so it is answered `503`, not acknowledged.
    async fn forget_room(&self, room: &str, last: Position) -> Result<bool, LogError> {
        check_room(room)?;
        let keys = &self.shared.keys;
        let mut conn = self.commands.clone();
        let _: i64 = redis::cmd("EVAL")
            .arg(FORGET_SCRIPT)
            .arg(2)
            .arg(&keys.rooms)
            .arg(&keys.events)
            .arg(room)
            .arg(ROOM_EVENTS_MAX)
            .query_async(&mut conn)
            .await
            .map_err(|error| unavailable(&format!("forgetting room {room}"), error))?;
        self.registered().remove(room);
        let deleted: i64 = redis::cmd("EVAL")
            .arg(DELETE_IF_LAST_SCRIPT)
            .arg(1)
            .arg(keys.room(room))
            .arg(StreamId::from_position(last).to_string())
            .query_async(&mut conn)
            .await
            .map_err(|error| unavailable(&format!("deleting the stream of room {room}"), error))?;
        if deleted == 1 {
            return Ok(true);
        }
        let _: i64 = register_command(keys, room)
            .query_async(&mut conn)
            .await
            .map_err(|error| unavailable(&format!("registering room {room} again"), error))?;
        Ok(false)
    }

    fn describe(&self) -> String {
        self.shared.description.clone()
    }
}

/// How a subscription (re)starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// From `subscribe`: a checkpoint past a stream's end is an error.
    Initial,
    /// After an outage: catch up again.
    Reconnect,
    /// After Redis said a stream or group is missing: no new `CaughtUp` if already caught up.
    Resync,
}

/// One stream a subscription reads.
struct StreamState {
    shard: ShardId,
    /// The last entry delivered (or the position to start after).
    position: StreamId,
    /// Delivered ids to acknowledge with the next read.
    unacked: Vec<StreamId>,
}

/// The reading side of one subscription, run as a task feeding the subscription's channel.
struct Subscription {
    shared: Arc<Shared>,
    group: String,
    destroy_groups_on_exit: bool,
    _primary: Option<PrimaryGroup>,
    /// `None` while disconnected.
    conn: Option<Conn>,
    /// The checkpoint subscribed from, by stream key: where a room's stream starts when the
    /// subscription first reads it.
    from: BTreeMap<Arc<str>, StreamId>,
    /// The streams read, by key.
    streams: BTreeMap<Arc<str>, StreamState>,
    events_unacked: Vec<StreamId>,
    /// Until `CaughtUp` is delivered: the last entry each stream had at (re)start, for the
    /// streams not yet read that far.
    catch_up: Option<BTreeMap<Arc<str>, StreamId>>,
    sender: mpsc::Sender<Result<Event, LogError>>,
}

/// What a delivered read round leads to.
enum Flow {
    Continue { delivered_any: bool },
    Stop,
}

impl Subscription {
    /// Connects and (re)creates the groups: see "Reading" in the module documentation.
    async fn setup(&mut self, mode: Setup) -> Result<(), Failure> {
        self.conn = None;
        let conn = self.shared.read_connection().await?;
        let keys = &self.shared.keys;
        let events_key: Arc<str> = keys.events.as_str().into();
        let events_last = last_ids(&conn, std::slice::from_ref(&events_key))
            .await?
            .pop()
            .flatten()
            .unwrap_or(StreamId::ZERO);
        let rooms: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&keys.rooms)
            .query_async(&mut conn.clone())
            .await?;
        let mut streams = BTreeMap::new();
        for room in rooms {
            let key: Arc<str> = keys.room(&room).into();
            let position = self
                .streams
                .get(&key)
                .map(|state| state.position)
                .or_else(|| self.from.get(&key).copied())
                .unwrap_or(StreamId::ZERO);
            let state = StreamState {
                shard: ShardId(Arc::clone(&key)),
                position,
                unacked: Vec::new(),
            };
            streams.insert(key, state);
        }
        let stream_keys: Vec<Arc<str>> = streams.keys().cloned().collect();
        let lasts = last_ids(&conn, &stream_keys).await?;
        let mut targets = BTreeMap::new();
        for ((key, state), last) in streams.iter().zip(lasts) {
            let last = last.unwrap_or(StreamId::ZERO);
            if state.position > last {
                let problem = format!(
                    "position {} of {key} is past the stream's last entry {last}: the \
                     checkpoint was taken on other data, or Redis lost acknowledged entries \
                     (see Durability in the log::redis docs)",
                    state.position
                );
                if mode == Setup::Initial {
                    return Err(Failure::Fatal(LogError::Rejected(problem)));
                }
                tracing::warn!(log = %self.shared.description, "resuming a subscription: {problem}");
            } else if last > state.position {
                targets.insert(Arc::clone(key), last);
            }
        }
        let mut commands = Vec::new();
        group_reset(&mut commands, &events_key, &self.group, events_last);
        for (key, state) in &streams {
            group_reset(&mut commands, key, &self.group, state.position);
        }
        run_group_resets(&conn, commands).await?;
        self.conn = Some(conn);
        self.streams = streams;
        self.events_unacked.clear();
        if mode != Setup::Resync || self.catch_up.is_some() {
            self.catch_up = Some(targets);
        }
        Ok(())
    }

    /// Delivers events until the subscriber drops the stream or a fatal error.
    async fn run(mut self) {
        let mut resyncs_in_a_row = 0;
        loop {
            if self.catch_up.as_ref().is_some_and(BTreeMap::is_empty) {
                self.catch_up = None;
                if !self.send(Event::CaughtUp).await {
                    break;
                }
            }
            let sender = self.sender.clone();
            let round = tokio::select! {
                () = sender.closed() => break,
                round = self.read_round() => round,
            };
            let failure = match round {
                Ok(replies) => match self.deliver(replies).await {
                    Ok(Flow::Stop) => break,
                    Ok(Flow::Continue { delivered_any }) => {
                        resyncs_in_a_row = 0;
                        if !delivered_any && self.conn.as_ref().is_some_and(Conn::is_cluster) {
                            tokio::select! {
                                () = sender.closed() => break,
                                () = tokio::time::sleep(CLUSTER_POLL_INTERVAL) => {}
                            }
                        }
                        continue;
                    }
                    Err(failure) => failure,
                },
                Err(failure) => failure,
            };
            let failure = if failure.needs_resync() && resyncs_in_a_row < RESYNCS_IN_A_ROW_MAX {
                resyncs_in_a_row += 1;
                tracing::info!(log = %self.shared.description, "re-reading the room registry: {failure}");
                match self.setup(Setup::Resync).await {
                    Ok(()) => continue,
                    Err(failure) => failure,
                }
            } else {
                failure
            };
            resyncs_in_a_row = 0;
            if !self.reconnect(failure).await {
                break;
            }
        }
        self.destroy_groups().await;
    }

    /// Sends an event; false when the subscriber is gone.
    async fn send(&self, event: Event) -> bool {
        self.sender.send(Ok(event)).await.is_ok()
    }

    /// Reports the failure and reconnects, retrying with backoff; false when the subscription
    /// must end (the subscriber is gone, or the failure is fatal).
    async fn reconnect(&mut self, mut failure: Failure) -> bool {
        self.conn = None;
        let mut attempt = 0;
        loop {
            if let Failure::Fatal(error) = failure {
                tracing::error!(log = %self.shared.description, "subscription failed: {error}");
                // The subscriber may be gone already; the stream ends either way.
                let _ = self.sender.send(Err(error)).await;
                return false;
            }
            tracing::warn!(log = %self.shared.description, attempt, "Redis unavailable: {failure}");
            if !self.send(Event::Unavailable(failure.to_string())).await {
                return false;
            }
            let delay = reconnect_delay(attempt);
            attempt = attempt.saturating_add(1);
            let sender = self.sender.clone();
            tokio::select! {
                () = sender.closed() => return false,
                () = tokio::time::sleep(delay) => {}
            }
            match self.setup(Setup::Reconnect).await {
                Ok(()) => {
                    tracing::info!(log = %self.shared.description, "reconnected to Redis");
                    return true;
                }
                Err(next) => failure = next,
            }
        }
    }

    /// One read round: acknowledge what the last round delivered and read what is new (see the
    /// module documentation). Returns the `XREADGROUP` replies.
    async fn read_round(&mut self) -> Result<Vec<Value>, Failure> {
        let conn = self
            .conn
            .clone()
            .ok_or_else(|| Failure::Reply("the subscription is not connected".to_owned()))?;
        let cluster = conn.is_cluster();
        let events_key = self.shared.keys.events.as_str();
        let count = (READ_ENTRIES_PER_ROUND_MAX / (self.streams.len() + 1))
            .clamp(1, READ_COUNT_PER_STREAM_MAX);
        // Streams grouped by slot (one group on a single server), the events stream included.
        let mut groups: HashMap<Option<Slot>, Vec<(&str, &[StreamId])>> = HashMap::new();
        let all = std::iter::once((events_key, self.events_unacked.as_slice())).chain(
            self.streams
                .iter()
                .map(|(key, state)| (&**key, state.unacked.as_slice())),
        );
        for (key, unacked) in all {
            let slot = cluster.then(|| Slot::for_key(key));
            groups.entry(slot).or_default().push((key, unacked));
        }
        let runs = groups.into_values().map(|streams| {
            let mut pipeline = redis::pipe();
            for (key, unacked) in &streams {
                if !unacked.is_empty() {
                    let mut ack = redis::cmd("XACK");
                    ack.arg(*key).arg(&self.group);
                    for id in *unacked {
                        ack.arg(id.to_string());
                    }
                    pipeline.add_command(ack).ignore();
                }
            }
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(&self.group)
                .arg(&self.group)
                .arg("COUNT")
                .arg(count);
            if !cluster {
                read.arg("BLOCK").arg(READ_BLOCK.as_millis() as u64);
            }
            read.arg("STREAMS");
            for (key, _) in &streams {
                read.arg(*key);
            }
            for _ in &streams {
                read.arg(">");
            }
            pipeline.add_command(read);
            let mut conn = conn.clone();
            async move {
                let mut replies: Vec<Value> = pipeline.query_async(&mut conn).await?;
                Ok::<_, RedisError>(replies.pop().unwrap_or(Value::Nil))
            }
        });
        let replies = futures::future::try_join_all(runs).await?;
        self.events_unacked.clear();
        for state in self.streams.values_mut() {
            state.unacked.clear();
        }
        Ok(replies)
    }

    /// Delivers the entries of one read round and applies its announcements.
    async fn deliver(&mut self, replies: Vec<Value>) -> Result<Flow, Failure> {
        let events_key = self.shared.keys.events.as_bytes();
        let mut entries = Vec::new();
        let mut announcements = Vec::new();
        for reply in replies {
            for (key, stream_entries) in parse_read_reply(reply)? {
                if key == events_key {
                    for entry in stream_entries {
                        let (id, fields) = parse_entry(entry)?;
                        self.events_unacked.push(id);
                        if let Some(announcement) = fields.and_then(parse_announcement) {
                            announcements.push(announcement);
                        }
                    }
                    continue;
                }
                let Some(state) = std::str::from_utf8(&key)
                    .ok()
                    .and_then(|key| self.streams.get_mut(key))
                else {
                    // A stream dropped by an announcement earlier in this round.
                    continue;
                };
                for entry in stream_entries {
                    let (id, fields) = parse_entry(entry)?;
                    if id <= state.position {
                        continue;
                    }
                    state.position = id;
                    state.unacked.push(id);
                    let Some(fields) = fields else {
                        continue;
                    };
                    let payload = record_payload(fields).ok_or_else(|| {
                        Failure::Fatal(LogError::Corrupt(format!(
                            "entry {id} of {} has no {RECORD_FIELD:?} field: something other \
                             than waitroom writes to this stream",
                            state.shard
                        )))
                    })?;
                    entries.push(Entry {
                        shard: state.shard.clone(),
                        position: id.position(),
                        timestamp_ms: id.ms,
                        payload,
                    });
                }
            }
        }
        let delivered_any = !entries.is_empty();
        while !entries.is_empty() {
            let rest = entries.split_off(entries.len().min(SUBSCRIBE_BATCH_ENTRIES_MAX));
            if !self.send(Event::Entries(entries)).await {
                return Ok(Flow::Stop);
            }
            entries = rest;
        }
        if let Some(targets) = &mut self.catch_up {
            if delivered_any {
                let streams = &self.streams;
                targets.retain(|key, target| {
                    streams
                        .get(key)
                        .is_some_and(|state| state.position < *target)
                });
            } else {
                // Nothing was left to read in any stream: everything older has been delivered.
                targets.clear();
            }
        }
        self.apply_announcements(announcements).await?;
        Ok(Flow::Continue { delivered_any })
    }

    /// Adds announced rooms to the streams read (with their groups) and drops forgotten ones.
    async fn apply_announcements(
        &mut self,
        announcements: Vec<Announcement>,
    ) -> Result<(), Failure> {
        let mut added = Vec::new();
        for announcement in announcements {
            match announcement {
                Announcement::New(room) => {
                    let key: Arc<str> = self.shared.keys.room(&room).into();
                    if self.streams.contains_key(&key) {
                        continue;
                    }
                    let position = self.from.get(&key).copied().unwrap_or(StreamId::ZERO);
                    let state = StreamState {
                        shard: ShardId(Arc::clone(&key)),
                        position,
                        unacked: Vec::new(),
                    };
                    self.streams.insert(Arc::clone(&key), state);
                    added.push(key);
                }
                Announcement::Forget(room) => {
                    let key = self.shared.keys.room(&room);
                    self.streams.remove(key.as_str());
                    if let Some(targets) = &mut self.catch_up {
                        targets.remove(key.as_str());
                    }
                    added.retain(|added| **added != *key);
                }
            }
        }
        if added.is_empty() {
            return Ok(());
        }
        let conn = self
            .conn
            .clone()
            .ok_or_else(|| Failure::Reply("the subscription is not connected".to_owned()))?;
        let mut commands = Vec::new();
        for key in &added {
            if let Some(state) = self.streams.get(key) {
                group_reset(&mut commands, key, &self.group, state.position);
            }
        }
        run_group_resets(&conn, commands).await
    }

    /// Destroys this subscription's groups if they are not a configured node's (best effort:
    /// a group left behind goes with its stream).
    async fn destroy_groups(&mut self) {
        if !self.destroy_groups_on_exit {
            return;
        }
        let Some(conn) = self.conn.take() else {
            return;
        };
        let keys = std::iter::once(self.shared.keys.events.clone())
            .chain(self.streams.keys().map(|key| key.to_string()));
        let commands = keys
            .map(|key| {
                let mut cmd = redis::cmd("XGROUP");
                cmd.arg("DESTROY").arg(&key).arg(&self.group);
                (key, cmd)
            })
            .collect();
        let outcome =
            tokio::time::timeout(COMMAND_TIMEOUT, query_per_slot(&conn, commands, true)).await;
        if !matches!(outcome, Ok(Ok(_))) {
            tracing::debug!(log = %self.shared.description, group = %self.group, "could not destroy the groups of a finished subscription");
        }
    }
}

/// A registry change read from the events stream.
enum Announcement {
    New(String),
    Forget(String),
}

fn parse_announcement(fields: Vec<Value>) -> Option<Announcement> {
    let mut fields = fields.into_iter();
    let (Some(Value::BulkString(kind)), Some(Value::BulkString(room))) =
        (fields.next(), fields.next())
    else {
        return None;
    };
    let room = String::from_utf8(room).ok()?;
    match kind.as_slice() {
        b"new" => Some(Announcement::New(room)),
        b"forget" => Some(Announcement::Forget(room)),
        _ => None,
    }
}

/// The record of a room stream entry's fields.
fn record_payload(fields: Vec<Value>) -> Option<Bytes> {
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if let (Value::BulkString(name), Value::BulkString(value)) = (name, value)
            && name == RECORD_FIELD.as_bytes()
        {
            return Some(Bytes::from(value));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::ops::Range;
    use std::path::Path;
    use std::process::Stdio;
    use std::time::SystemTime;

    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::process::{Child, Command};

    use super::*;
    use crate::log::conformance::{self, Limits};
    use crate::test_support::redis_url_or_skip;

    const LIMITS: Limits = Limits {
        record_bytes_max: RECORD_BYTES_MAX,
        append_batch_records_max: APPEND_BATCH_RECORDS_MAX,
    };

    /// Longest a test waits for an event, a server or a retried append.
    const WAIT: Duration = Duration::from_secs(30);

    type Events = BoxStream<'static, Result<Event, LogError>>;

    fn test_name() -> String {
        std::thread::current()
            .name()
            .unwrap_or("a log::redis test")
            .to_owned()
    }

    /// A key prefix no other test (or run) uses, so tests share one Redis in parallel.
    fn unique_prefix() -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since_epoch| since_epoch.as_nanos() % 1_000_000_000_000);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("t{}-{nanos}-{count}", std::process::id())
    }

    fn with_options(url: &str, options: &str) -> String {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}{options}")
    }

    /// The shared test Redis (`WAITROOM_TEST_REDIS_URL`) with a prefix of the test's own, or
    /// `None` when the test is skipped.
    fn test_url() -> Option<String> {
        let url = redis_url_or_skip(&test_name())?;
        Some(with_options(&url, &format!("prefix={}", unique_prefix())))
    }

    fn fixture(url: String) -> ((), impl AsyncFn() -> Result<Box<dyn Log>, LogError>) {
        ((), async move || {
            RedisLog::connect(&url)
                .await
                .map(|log| Box::new(log) as Box<dyn Log>)
        })
    }

    mod conformance_single_server {
        crate::conformance_tests!(
            // Skipped (the test returns at once) when no test Redis is configured.
            fixture: match super::test_url() {
                Some(url) => super::fixture(url),
                None => return,
            },
            limits: super::LIMITS,
        );
    }

    fn record(room: &str, text: String) -> Append {
        Append {
            room: room.into(),
            payload: Bytes::from(text),
        }
    }

    /// Records `"{room} {seq}"` for every seq of `seqs` and every room, seq by seq.
    fn records(rooms: &[&str], seqs: Range<u32>) -> Vec<Append> {
        seqs.flat_map(|seq| {
            rooms
                .iter()
                .map(move |room| record(room, format!("{room} {seq}")))
        })
        .collect()
    }

    async fn next_event(stream: &mut Events) -> Event {
        match tokio::time::timeout(WAIT, stream.next()).await {
            Ok(Some(Ok(event))) => event,
            other => panic!("expected an event within {WAIT:?}, got {other:?}"),
        }
    }

    /// What a node makes of a subscription: entries applied once each (deduplicated by
    /// position), and counts of the other events.
    #[derive(Default)]
    struct Node {
        checkpoint: Checkpoint,
        applied: Vec<Entry>,
        duplicates: usize,
        caught_up: usize,
        unavailable: usize,
    }

    impl Node {
        async fn read_until(&mut self, stream: &mut Events, done: impl Fn(&Self) -> bool) {
            while !done(self) {
                match next_event(stream).await {
                    Event::Entries(entries) => {
                        for entry in entries {
                            let seen = self.checkpoint.get(&entry.shard);
                            if seen.is_some_and(|seen| entry.position <= seen) {
                                self.duplicates += 1;
                                continue;
                            }
                            self.checkpoint.advance(&entry.shard, entry.position);
                            self.applied.push(entry);
                        }
                    }
                    Event::CaughtUp => self.caught_up += 1,
                    Event::Unavailable(_) => self.unavailable += 1,
                }
            }
        }

        async fn read_until_caught_up(&mut self, stream: &mut Events) {
            let before = self.caught_up;
            self.read_until(stream, |node| node.caught_up > before)
                .await;
        }

        async fn read_until_applied(&mut self, stream: &mut Events, count: usize) {
            self.read_until(stream, |node| node.applied.len() >= count)
                .await;
            assert_eq!(self.applied.len(), count, "more entries than appended");
        }

        /// The payloads applied for one room stream, in order.
        fn payloads(&self, shard: &str) -> Vec<String> {
            self.applied
                .iter()
                .filter(|entry| &*entry.shard.0 == shard)
                .map(|entry| String::from_utf8_lossy(&entry.payload).into_owned())
                .collect()
        }
    }

    fn expected_payloads(room: &str, seqs: Range<u32>) -> Vec<String> {
        seqs.map(|seq| format!("{room} {seq}")).collect()
    }

    /// A plain connection to the Redis of `url` (our options stripped), for checking keys.
    async fn raw_connection(url: &str) -> MultiplexedConnection {
        let server = url.split('?').next().unwrap_or(url);
        redis::Client::open(server)
            .expect("a Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test Redis")
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free loopback port")
    }

    /// A throwaway `redis-server` child process, killed (by PID, SIGKILL) when dropped.
    struct RedisServer {
        child: Child,
        port: u16,
    }

    impl RedisServer {
        /// Starts `redis-server` on `port` in `dir` with `extra` arguments; returns once it
        /// accepts connections (it says so on stdout).
        async fn start(port: u16, dir: &Path, extra: &[&str]) -> Self {
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--daemonize", "no", "--logfile", ""])
                .arg("--dir")
                .arg(dir)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|error| {
                    panic!("starting redis-server (Debian package redis-server): {error}")
                });
            let stdout = child.stdout.take().expect("redis-server's stdout is piped");
            let mut lines = BufReader::new(stdout).lines();
            let ready = tokio::time::timeout(WAIT, async {
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("Ready to accept connections") {
                        return true;
                    }
                }
                false
            })
            .await;
            assert!(
                matches!(ready, Ok(true)),
                "redis-server on port {port} did not become ready"
            );
            // Keep reading its log so the server never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Self { child, port }
        }

        fn url(&self, options: &str) -> String {
            format!("redis://127.0.0.1:{}?{options}", self.port)
        }

        /// Kills the server like a crash (SIGKILL) and waits until it has exited.
        async fn kill(mut self) {
            self.child.kill().await.expect("kill redis-server");
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            // Already exited when `kill` was called; an error then says just that.
            let _ = self.child.start_kill();
        }
    }

    #[test]
    fn urls_parse_and_never_show_passwords() {
        let single =
            Settings::parse("redis://user:hunter2@cache.example:6380/2?prefix=tickets&node=web-1")
                .unwrap();
        assert_eq!(
            single,
            Settings {
                servers: Servers::Single("redis://user:hunter2@cache.example:6380/2".to_owned()),
                prefix: "tickets".to_owned(),
                node: Some("web-1".to_owned()),
                shown: "redis://***@cache.example:6380/2".to_owned(),
            }
        );
        let tls = Settings::parse("rediss://:hunter2@10.0.0.1").unwrap();
        assert_eq!(
            tls.servers,
            Servers::Single("rediss://:hunter2@10.0.0.1".to_owned())
        );
        assert_eq!(tls.shown, "rediss://***@10.0.0.1:6379/0");
        assert_eq!((tls.prefix.as_str(), tls.node), (PREFIX_DEFAULT, None));
        let cluster =
            Settings::parse("rediss+cluster://:hunter2@10.0.0.1:7000,10.0.0.2:7001/?node=a")
                .unwrap();
        assert_eq!(
            cluster.servers,
            Servers::Cluster(vec![
                "rediss://:hunter2@10.0.0.1:7000".to_owned(),
                "rediss://:hunter2@10.0.0.2:7001".to_owned()
            ])
        );
        assert_eq!(
            cluster.shown,
            "rediss+cluster://***@10.0.0.1:7000,10.0.0.2:7001"
        );
        let plain = Settings::parse("redis+cluster://[::1]:7000").unwrap();
        assert_eq!(plain.shown, "redis+cluster://[::1]:7000");
    }

    #[test]
    fn bad_urls_are_rejected_without_quoting_them() {
        let long = format!(
            "redis://:hunter2@h?prefix={}",
            "x".repeat(NAME_BYTES_MAX + 1)
        );
        for url in [
            "http://:hunter2@h",
            "redis//:hunter2@h",
            "redis://",
            "redis://:hunter2@h/notadb",
            "redis://:hunter2@h?prefix=a%20b",
            "redis://:hunter2@h?prefix=a:b",
            "redis://:hunter2@h?unknown=1",
            "redis://:hunter2@h?prefix=a&prefix=b",
            "redis://:hunter2@h?node",
            "redis://:hunter2@h?node=",
            "redis+cluster://:hunter2@h:1/0",
            "redis+cluster://:hunter2@h:1,,h:2",
            "redis://:hunter2@h#insecure",
            long.as_str(),
        ] {
            match Settings::parse(url) {
                Err(LogError::Rejected(message)) => {
                    assert!(!message.contains("hunter2"), "{url}: {message}");
                }
                other => panic!("{url}: expected Rejected, got {other:?}"),
            }
        }
    }

    #[test]
    fn stream_ids_pack_into_ordered_positions() {
        let ids: Vec<StreamId> = ["1700000000000-0", "1700000000000-1", "1700000000001-0"]
            .iter()
            .map(|id| StreamId::parse(id.as_bytes()).unwrap())
            .collect();
        assert!(ids[0].position() < ids[1].position() && ids[1].position() < ids[2].position());
        assert_eq!(ids[1].position(), Position((1_700_000_000_000 << 64) | 1));
        for id in ids.iter().copied().chain([StreamId {
            ms: u64::MAX,
            seq: u64::MAX,
        }]) {
            assert_eq!(StreamId::from_position(id.position()), id);
        }
        assert_eq!(ids[1].to_string(), "1700000000000-1");
        for bad in ["", "1", "1-", "-1", "x-1", "1-1-1"] {
            assert_eq!(StreamId::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_hash_by_room_and_registry_keys_share_a_slot() {
        let keys = Keys::new("waitroom");
        assert_eq!(keys.room("concert-1"), "waitroom:{concert-1}:log");
        assert_eq!(keys.rooms, "{waitroom}:rooms");
        assert_eq!(keys.events, "{waitroom}:rooms:events");
        assert_eq!(Slot::for_key(&keys.rooms), Slot::for_key(&keys.events));
        assert_eq!(
            Slot::for_key(keys.room("concert-1")),
            Slot::for_key("{concert-1}")
        );
    }

    #[test]
    fn reconnect_delays_grow_within_bounds() {
        for attempt in 0..64 {
            let delay = reconnect_delay(attempt);
            assert!(delay >= RECONNECT_DELAY_MIN / 2 && delay <= RECONNECT_DELAY_MAX);
        }
        assert!(reconnect_delay(0) <= RECONNECT_DELAY_MIN);
        assert!(reconnect_delay(40) >= RECONNECT_DELAY_MAX / 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscription_survives_a_redis_restart_without_gaps_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // AOF with an fsync per write, so what Redis acknowledged survives the kill.
        let aof = ["--appendonly", "yes", "--appendfsync", "always"];
        let server = RedisServer::start(port, dir.path(), &aof).await;
        let log = RedisLog::connect(&server.url("prefix=restart&node=restarting"))
            .await
            .unwrap();
        let rooms = ["a", "b"];
        log.append(records(&rooms, 0..10)).await.unwrap();
        let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
        let mut node = Node::default();
        node.read_until_caught_up(&mut stream).await;
        assert_eq!(node.applied.len(), 20);

        server.kill().await;
        node.read_until(&mut stream, |node| node.unavailable > 0)
            .await;
        let refused = log.append(records(&rooms, 10..11)).await;
        assert!(
            matches!(refused, Err(LogError::Unavailable(_))),
            "{refused:?}"
        );

        let server = RedisServer::start(port, dir.path(), &aof).await;
        node.read_until_caught_up(&mut stream).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        // The appenders' connection may fail once more before it has reconnected.
        while let Err(error) = log.append(records(&rooms, 10..20)).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "appending after the restart: {error}"
            );
        }
        node.read_until_applied(&mut stream, 40).await;
        for room in rooms {
            assert_eq!(
                node.payloads(&log.room_key(room)),
                expected_payloads(room, 0..20)
            );
        }
        assert_eq!(node.duplicates, 0, "resumed from the delivered positions");

        // A fresh reader sees exactly what the reconnected one applied.
        let mut fresh = Node::default();
        let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
        fresh.read_until_caught_up(&mut stream).await;
        // (Each shard's entries arrive in order; how shards interleave differs between reads.)
        let by_position = |node: &Node| -> BTreeMap<(ShardId, Position), Entry> {
            node.applied
                .iter()
                .map(|entry| ((entry.shard.clone(), entry.position), entry.clone()))
                .collect()
        };
        assert_eq!(fresh.applied.len(), 40);
        assert_eq!(by_position(&fresh), by_position(&node));
        drop(server);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_node_has_its_group_and_all_see_the_same_entries() {
        let Some(url) = test_url() else { return };
        let node_a = RedisLog::connect(&with_options(&url, "node=node-a"))
            .await
            .unwrap();
        let node_b = RedisLog::connect(&with_options(&url, "node=node-b"))
            .await
            .unwrap();
        let mut stream_a = node_a.subscribe(Checkpoint::start()).await.unwrap();
        let mut stream_b = node_b.subscribe(Checkpoint::start()).await.unwrap();
        let (mut seen_a, mut seen_b) = (Node::default(), Node::default());
        seen_a.read_until_caught_up(&mut stream_a).await;
        seen_b.read_until_caught_up(&mut stream_b).await;

        let rooms = ["r0", "r1", "r2"];
        async fn append_from(log: &RedisLog, name: &str, rooms: &[&str]) {
            for seq in 0..20 {
                let batch = rooms
                    .iter()
                    .map(|room| record(room, format!("{name} {room} {seq}")))
                    .collect();
                log.append(batch).await.unwrap();
            }
        }
        let total = 2 * rooms.len() * 20;
        tokio::join!(
            append_from(&node_a, "a", &rooms),
            append_from(&node_b, "b", &rooms),
            seen_a.read_until_applied(&mut stream_a, total),
            seen_b.read_until_applied(&mut stream_b, total),
        );
        for room in rooms {
            let key = node_a.room_key(room);
            assert_eq!(seen_a.payloads(&key), seen_b.payloads(&key), "room {room}");
            for name in ["a", "b"] {
                let mine: Vec<String> = seen_a
                    .payloads(&key)
                    .into_iter()
                    .filter(|payload| payload.starts_with(&format!("{name} ")))
                    .collect();
                let expected: Vec<String> =
                    (0..20).map(|seq| format!("{name} {room} {seq}")).collect();
                assert_eq!(mine, expected, "room {room}, node {name}");
            }
        }
        let positions = |node: &Node| -> Vec<(ShardId, Position)> {
            node.applied
                .iter()
                .map(|entry| (entry.shard.clone(), entry.position))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        assert_eq!(positions(&seen_a), positions(&seen_b));

        // One group per node on every room stream (and on the events stream), each caught up.
        let mut raw = raw_connection(&url).await;
        let events_key = node_a.shared.keys.events.clone();
        for key in rooms
            .iter()
            .map(|room| node_a.room_key(room))
            .chain([events_key])
        {
            let groups: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&key)
                .query_async(&mut raw)
                .await
                .unwrap();
            let names: BTreeSet<String> = groups
                .iter()
                .map(|group| match group.get("name") {
                    Some(Value::BulkString(name)) => String::from_utf8_lossy(name).into_owned(),
                    other => panic!("XINFO GROUPS name: {other:?}"),
                })
                .collect();
            assert_eq!(
                names,
                BTreeSet::from(["node-a".to_owned(), "node-b".to_owned()]),
                "{key}"
            );
            for group in &groups {
                assert_eq!(group.get("lag"), Some(&Value::Int(0)), "{key}: {group:?}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rooms_created_after_subscribing_are_read() {
        let Some(url) = test_url() else { return };
        let log = RedisLog::connect(&url).await.unwrap();
        let other_node = RedisLog::connect(&url).await.unwrap();
        log.append(records(&["first"], 0..3)).await.unwrap();
        let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
        let mut node = Node::default();
        node.read_until_caught_up(&mut stream).await;
        assert_eq!(node.applied.len(), 3);

        log.append(records(&["second", "third"], 0..2))
            .await
            .unwrap();
        other_node.append(records(&["fourth"], 0..2)).await.unwrap();
        node.read_until_applied(&mut stream, 9).await;
        for room in ["second", "third", "fourth"] {
            assert_eq!(
                node.payloads(&log.room_key(room)),
                expected_payloads(room, 0..2)
            );
        }
        assert_eq!((node.caught_up, node.unavailable), (1, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forgotten_rooms_leave_redis_and_the_subscriptions() {
        let Some(url) = test_url() else { return };
        let log = RedisLog::connect(&url).await.unwrap();
        log.append(records(&["kept", "gone"], 0..5)).await.unwrap();
        let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
        let mut node = Node::default();
        node.read_until_caught_up(&mut stream).await;
        assert_eq!(node.applied.len(), 10);

        let (kept, gone) = (log.room_key("kept"), log.room_key("gone"));
        let last_of_gone = log.head().await.unwrap().0[&ShardId(gone.clone().into())];
        // Not the newest entry of the room: something was appended after it, so it stays.
        let older = Position(last_of_gone.0 - 1);
        assert!(!log.forget_room("gone", older).await.unwrap());
        let mut raw = raw_connection(&url).await;
        let is_member = async |raw: &mut redis::aio::MultiplexedConnection| -> i64 {
            redis::cmd("SISMEMBER")
                .arg(&log.shared.keys.rooms)
                .arg("gone")
                .query_async(raw)
                .await
                .unwrap()
        };
        assert_eq!(is_member(&mut raw).await, 1, "registered again");
        assert_eq!(log.head().await.unwrap().0.len(), 2);
        assert!(log.forget_room("gone", last_of_gone).await.unwrap());
        let head = log.head().await.unwrap();
        assert_eq!(
            head.0
                .keys()
                .map(|shard| shard.0.to_string())
                .collect::<Vec<_>>(),
            vec![kept.clone()]
        );
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&gone)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!((exists, is_member(&mut raw).await), (0, 0));

        // The subscription goes on without the room, and without an outage.
        log.append(records(&["kept"], 5..6)).await.unwrap();
        node.read_until_applied(&mut stream, 11).await;
        // A room appended to again comes back, from its new first record.
        log.append(records(&["gone"], 100..101)).await.unwrap();
        node.read_until_applied(&mut stream, 12).await;
        assert_eq!(
            node.payloads(&gone),
            [
                expected_payloads("gone", 0..5),
                expected_payloads("gone", 100..101)
            ]
            .concat()
        );
        assert_eq!(node.unavailable, 0);
        // Forgetting an unknown room is fine.
        assert!(log.forget_room("never-was", Position(0)).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpoint_past_a_stream_end_is_rejected() {
        let Some(url) = test_url() else { return };
        let log = RedisLog::connect(&url).await.unwrap();
        log.append(records(&["a"], 0..2)).await.unwrap();
        let head = log.head().await.unwrap();
        let shard = ShardId::new(log.room_key("a"));
        let last = head.get(&shard).unwrap();
        let mut past = Checkpoint::start();
        past.advance(&shard, Position(last.0 + 1));
        match log.subscribe(past).await {
            Err(LogError::Rejected(message)) => assert!(message.contains("past"), "{message}"),
            Err(other) => panic!("expected Rejected, got {other:?}"),
            Ok(_) => panic!("expected Rejected, got a subscription"),
        }
        // Exactly at the end is fine: caught up at once.
        let mut stream = log.subscribe(head).await.unwrap();
        assert_eq!(next_event(&mut stream).await, Event::CaughtUp);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rooms_beyond_the_limit_and_bad_room_names_are_rejected() {
        let Some(url) = test_url() else { return };
        let log = RedisLog::connect(&url).await.unwrap();
        for room in [String::new(), "x".repeat(ROOM_NAME_BYTES_MAX + 1)] {
            let result = log.append(vec![record(&room, "r".to_owned())]).await;
            assert!(matches!(result, Err(LogError::Rejected(_))), "{result:?}");
        }
        // Fill the registry up to the limit behind the log's back, then ask for one more room.
        let mut raw = raw_connection(&url).await;
        let rooms_key = &log.shared.keys.rooms;
        let mut fill = redis::cmd("SADD");
        fill.arg(rooms_key);
        for index in 0..ROOMS_MAX {
            fill.arg(format!("filler-{index}"));
        }
        let _: i64 = fill.query_async(&mut raw).await.unwrap();
        let result = log
            .append(vec![record("one-too-many", "r".to_owned())])
            .await;
        match result {
            Err(LogError::Rejected(message)) => assert!(message.contains("ROOMS_MAX"), "{message}"),
            other => panic!("expected Rejected, got {other:?}"),
        }
        let _: i64 = redis::cmd("DEL")
            .arg(rooms_key)
            .query_async(&mut raw)
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_to_a_plain_server_fails_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let server = RedisServer::start(free_port(), dir.path(), &["--appendonly", "no"]).await;
        let url = format!("rediss://127.0.0.1:{}", server.port);
        let result = tokio::time::timeout(WAIT, RedisLog::connect(&url)).await;
        assert!(
            matches!(result, Ok(Err(LogError::Unavailable(_)))),
            "{:?}",
            result.map(|result| result.map(|log| log.describe()))
        );
    }

    /// Starts a three-node Redis Cluster (no replicas) on free ports; returns its servers (dropping
    /// them kills the cluster) and its URL.
    async fn start_cluster(dir: &Path) -> (Vec<RedisServer>, String) {
        let mut servers = Vec::new();
        for index in 0..3 {
            let node_dir = dir.join(format!("node{index}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let bus_port = free_port().to_string();
            let args = [
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                bus_port.as_str(),
                "--cluster-config-file",
                "nodes.conf",
            ];
            servers.push(RedisServer::start(free_port(), &node_dir, &args).await);
        }
        let addresses: Vec<String> = servers
            .iter()
            .map(|server| format!("127.0.0.1:{}", server.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        // Every node must agree the cluster is up before it serves every slot.
        let deadline = tokio::time::Instant::now() + WAIT;
        for server in &servers {
            let mut conn = raw_connection(&server.url("")).await;
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the cluster did not come up"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        (servers, format!("redis+cluster://{}", addresses.join(",")))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_under_redis_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let (_servers, url) = start_cluster(dir.path()).await;
        let open = async || {
            RedisLog::connect(&with_options(&url, &format!("prefix={}", unique_prefix())))
                .await
                .unwrap()
        };
        conformance::fresh_log_is_empty(&open().await).await;
        let log = open().await;
        // Rooms hash to slots of their own (and so spread over the nodes).
        let slots: std::collections::HashSet<Slot> = (0..20)
            .map(|room| Slot::for_key(log.room_key(&format!("room{room}"))))
            .collect();
        assert!(slots.len() > 3);
        conformance::appends_arrive_in_order(&log).await;
        conformance::batches_keep_their_order(&log).await;
        conformance::rooms_interleave(&log).await;
        conformance::caught_up_follows_existing_entries_then_live_ones(&log).await;
        conformance::resume_from_checkpoint_delivers_exactly_the_rest(&log).await;
        conformance::head_is_covered_once_applied(&log).await;
        conformance::many_rooms_with_concurrent_appenders(&log).await;
        conformance::concurrent_appenders_keep_their_order(&log).await;
        conformance::subscribers_agree(&log).await;
        conformance::timestamps_never_decrease(&log).await;
        conformance::limits_are_enforced(&log, LIMITS).await;
        let prefix = format!("prefix={}", unique_prefix());
        conformance::restart_resumes_from_checkpoint(async || {
            RedisLog::connect(&with_options(&url, &prefix))
                .await
                .map(|log| Box::new(log) as Box<dyn Log>)
        })
        .await;
    }

    /// Append throughput against the test Redis: `WAITROOM_TEST_REDIS_URL=redis://127.0.0.1:PORT
    /// cargo test --release -p waitroom --lib log::redis::tests::append_throughput -- --ignored
    /// --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a benchmark; run it with --ignored --nocapture"]
    async fn append_throughput() {
        let Some(url) = test_url() else { return };
        let log = RedisLog::connect(&url).await.unwrap();
        let payload = Bytes::from(vec![b'x'; 100]);
        let one = |room: &str| Append {
            room: room.into(),
            payload: payload.clone(),
        };
        log.append(vec![one("bench")]).await.unwrap();
        let report = |what: &str, records: usize, started: Instant| {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "{what}: {records} records in {seconds:.2} s = {:.0} records/s",
                records as f64 / seconds
            );
        };

        let started = Instant::now();
        for _ in 0..2_000 {
            log.append((0..100).map(|_| one("bench")).collect())
                .await
                .unwrap();
        }
        report("batches of 100, one appender", 200_000, started);

        let started = Instant::now();
        for _ in 0..20_000 {
            log.append(vec![one("bench")]).await.unwrap();
        }
        report("single appends, one appender", 20_000, started);

        for appenders in [8, 64] {
            let started = Instant::now();
            let per_appender = 160_000 / appenders;
            let log = &log;
            futures::future::join_all((0..appenders).map(|_| async move {
                for _ in 0..per_appender {
                    log.append(vec![one("bench")]).await.unwrap();
                }
            }))
            .await;
            report(
                &format!("single appends, {appenders} concurrent appenders"),
                160_000,
                started,
            );
        }

        let started = Instant::now();
        let log = &log;
        futures::future::join_all((0..8).map(|_| async move {
            for _ in 0..500 {
                log.append((0..100).map(|_| one("bench")).collect())
                    .await
                    .unwrap();
            }
        }))
        .await;
        report("batches of 100, 8 concurrent appenders", 400_000, started);

        let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
        let started = Instant::now();
        let mut node = Node::default();
        node.read_until_caught_up(&mut stream).await;
        report("replaying the room", node.applied.len(), started);
    }
}
