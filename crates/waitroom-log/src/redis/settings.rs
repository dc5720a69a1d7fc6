//! What a Redis backend URL says, the limits of the backend, and the names it uses in Redis.

use std::fmt;
use std::time::Duration;

use super::connection::random_u64;
use crate::options::QueryOptions;
use crate::{APPEND_BATCH_BYTES_MAX, LogError, Position, RECORD_BYTES_MAX};

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
pub(super) const RECORD_FIELD: &str = "r";

const _: () = assert!(RECORD_BYTES_MAX <= APPEND_BATCH_BYTES_MAX);
const _: () = assert!(READ_COUNT_PER_STREAM_MAX <= READ_ENTRIES_PER_ROUND_MAX);
const _: () = assert!(READ_ENTRIES_PER_ROUND_MAX <= 2 * SUBSCRIBE_BATCH_ENTRIES_MAX);
const _: () = assert!(RECONNECT_DELAY_MIN.as_millis() < RECONNECT_DELAY_MAX.as_millis());
const _: () = assert!(READ_BLOCK.as_millis() < COMMAND_TIMEOUT.as_millis());

/// Largest snapshot stored in Redis: its `proto-max-bulk-len` default (512 MiB) caps one value.
/// A bigger room is not snapshotted (the node logs why) and its stream is not trimmed.
pub const SNAPSHOT_BYTES_MAX: usize = 512 * 1024 * 1024 - 1024;

/// A consumer group none of whose consumers read for this long is taken for a node that is gone:
/// trimming no longer waits for it. A live subscription reads at least every [`READ_BLOCK`], and
/// one that could not read for [`READ_STALL_RESYNC`] re-reads its markers before reading on.
pub const GROUP_IDLE_MAX: Duration = Duration::from_secs(60);

/// A subscription that has not issued a read for this long (stopped, or held up by a slow
/// consumer) checks the trim markers of its streams before reading again (see `reading`).
pub const READ_STALL_RESYNC: Duration = Duration::from_secs(30);

const _: () = assert!(READ_STALL_RESYNC.as_millis() * 2 <= GROUP_IDLE_MAX.as_millis());
const _: () = assert!(
    READ_BLOCK.as_millis() + READ_RESPONSE_MARGIN.as_millis() < READ_STALL_RESYNC.as_millis()
);
const _: () = assert!(SNAPSHOT_BYTES_MAX <= crate::limits::SNAPSHOT_BYTES_MAX);

/// A Redis stream id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct StreamId {
    pub(super) ms: u64,
    pub(super) seq: u64,
}

impl StreamId {
    pub(super) const ZERO: Self = Self { ms: 0, seq: 0 };

    pub(super) fn parse(text: &[u8]) -> Option<Self> {
        let (ms, seq) = std::str::from_utf8(text).ok()?.split_once('-')?;
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    pub(super) fn position(self) -> Position {
        Position((u128::from(self.ms) << 64) | u128::from(self.seq))
    }

    pub(super) fn from_position(position: Position) -> Self {
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
pub(super) struct Keys {
    pub(super) prefix: String,
    pub(super) rooms: String,
    pub(super) events: String,
    /// A random value set once by the first subscription to find it missing: if it changes or
    /// vanishes, Redis lost its data (see "When Redis loses data" in the module documentation).
    pub(super) epoch: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            rooms: format!("{{{prefix}}}:rooms"),
            events: format!("{{{prefix}}}:rooms:events"),
            epoch: format!("{{{prefix}}}:epoch"),
        }
    }

    /// The stream of `room`'s records.
    pub(super) fn room(&self, room: &str) -> String {
        format!("{}:{{{room}}}:log", self.prefix)
    }

    /// The hash holding `room`'s snapshot and trim markers (same hash tag: same slot).
    pub(super) fn snapshot(&self, room: &str) -> String {
        format!("{}:{{{room}}}:snapshot", self.prefix)
    }
}

/// Where the servers are.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Servers {
    /// A URL for the `redis` crate: scheme, credentials, host, port, db; no query.
    Single(String),
    /// One such URL per seed node.
    Cluster(Vec<String>),
}

/// What a backend URL says.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Settings {
    pub(super) servers: Servers,
    pub(super) prefix: String,
    pub(super) node: Option<String>,
    /// Trimmed history younger than this is kept (for audit), in milliseconds.
    pub(super) keep_history_ms: u64,
    /// Scheme and servers without credentials, for `describe()`.
    pub(super) shown: String,
}

pub(super) fn rejected(message: impl Into<String>) -> LogError {
    LogError::Rejected(message.into())
}

pub(super) fn check_name(option: &str, value: &str) -> Result<(), LogError> {
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
    pub(super) fn parse(url: &str) -> Result<Self, LogError> {
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
        let mut options = QueryOptions::parse("Redis", query)?;
        let mut name_option = |option: &'static str| -> Result<Option<String>, LogError> {
            let value = options.take(option);
            if let Some(value) = &value {
                check_name(option, value)?;
            }
            Ok(value)
        };
        let prefix = name_option("prefix")?;
        let node = name_option("node")?;
        let keep_history_ms = options.take_keep_history_ms()?;
        options.finish()?;
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
            keep_history_ms,
        })
    }
}

/// Host, port and db of one server URL (no query).
pub(super) fn parse_server(server_url: &str) -> Result<(String, u16, u32), LogError> {
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
pub(super) fn generated_node_name() -> String {
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
