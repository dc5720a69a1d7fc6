//! The Kafka log's limits and names, its URL (options and client properties), and the room →
//! partition rule.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::LogError;
use crate::limits::{RECORD_BYTES_MAX, SNAPSHOT_BYTES_MAX};
use crate::options::{OptionError, QueryOptions};

/// The log topic when the URL names none.
pub const TOPIC_DEFAULT: &str = "waitroom";
/// The snapshot topic is the log topic's name with this suffix.
pub const SNAPSHOT_TOPIC_SUFFIX: &str = ".snapshots";
/// Longest log topic name: Kafka allows 249 characters, and the snapshot topic adds its suffix.
pub const TOPIC_NAME_BYTES_MAX: usize = 200;
/// Longest `node` name (the consumer group that shows this node's lag).
pub const NODE_NAME_BYTES_MAX: usize = 64;
/// Partitions of a log topic created by waitroom when the URL says nothing: rooms spread over
/// this many shards (and brokers); a partition's rooms share one ordered sequence.
pub const PARTITIONS_DEFAULT: i32 = 16;
/// Most partitions of the log topic: every node reads every partition, and a subscription holds
/// per-partition state, so a topic with more is refused.
pub const PARTITIONS_MAX: i32 = 1024;
/// Longest room name: room ids are at most `waitroom_core::limits::ROOM_ID_BYTES_MAX`; the log
/// accepts longer ones (tests use long unique names), bounded so keys stay small.
pub const ROOM_NAME_BYTES_MAX: usize = 256;
/// Largest Kafka message this log writes (key, value and headers): below the broker's default
/// `message.max.bytes` (1 048 588) and librdkafka's default `message.max.bytes` (1 000 000), so
/// it fits a broker configured with the defaults.
pub const MESSAGE_BYTES_MAX: usize = 1_000_000;
/// Bytes of a snapshot per message of the snapshot topic: a snapshot larger than this is split
/// into chunks, each its own message, so a room of any size fits under the broker's message size
/// limit.
pub const SNAPSHOT_CHUNK_BYTES: usize = 512 * 1024;
/// Most chunks of one snapshot.
pub const SNAPSHOT_CHUNKS_MAX: usize = SNAPSHOT_BYTES_MAX.div_ceil(SNAPSHOT_CHUNK_BYTES);
/// Most rooms the snapshot index of one log holds (snapshots and tombstones): bounds a node's
/// memory for the index; a store beyond it is refused.
pub const SNAPSHOT_ROOMS_MAX: usize = 100_000;
/// Largest client properties file (`properties=`).
pub const PROPERTIES_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Most client properties (URL and file together).
pub const PROPERTIES_MAX: usize = 256;

/// Longest wait for the brokers' metadata, a watermark query or an admin request.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// librdkafka's `message.timeout.ms` unless the properties set it: how long an append waits
/// for the brokers' acknowledgement (retrying meanwhile) before it fails with `Unavailable`.
pub const DELIVERY_TIMEOUT_MS: u64 = 30_000;
/// librdkafka's `linger.ms` unless the properties set it: how long the producer waits to put
/// more records in one request. The node already groups writes (its appender batches them), so
/// this stays short: it adds to every join's latency.
pub const LINGER_MS: u64 = 2;
/// librdkafka's `fetch.wait.max.ms` unless the properties set it: how long a broker holds a
/// fetch with nothing to return. A broker answers as soon as a record arrives, so this bounds
/// only idle round trips, not latency.
pub const FETCH_WAIT_MAX_MS: u64 = 100;
/// librdkafka's `queued.max.messages.kbytes` unless the properties set it: records a consumer
/// prefetches, per consumer, in KiB. Bounds a subscription's memory.
pub const PREFETCH_KBYTES_MAX: u64 = 16 * 1024;
/// librdkafka's `queue.buffering.max.messages` unless the properties set it: records waiting to
/// be sent, per producer.
pub const PRODUCE_QUEUE_RECORDS_MAX: usize = 100_000;
/// Longest an append waits for room in a full producer queue before failing with
/// `Unavailable`.
pub const ENQUEUE_WAIT: Duration = Duration::from_secs(5);
/// How often an idle subscription checks that the brokers answer and that the log did not go
/// back (a broker that lost records), and how late it notices a broker that went away.
pub const WATCHDOG_INTERVAL: Duration = Duration::from_secs(1);
/// How often a subscription of a named node commits its positions to the node's consumer group
/// (for operators' lag tools only).
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// Shortest and longest wait between two reconnection attempts of a subscription.
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(50);
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);
/// Events a subscription's reader may queue ahead of its consumer.
pub const SUBSCRIBE_QUEUE_EVENTS_MAX: usize = 4;
/// Most entries in one delivered [`crate::Event::Entries`] batch.
pub const SUBSCRIBE_BATCH_ENTRIES_MAX: usize = 4096;
/// Longest a snapshot store operation waits for the snapshot index to read what the topic
/// holds (its own writes included).
pub const SNAPSHOT_SYNC_WAIT: Duration = Duration::from_secs(30);
/// Times a load retries when the snapshot it read was replaced (compacted away) meanwhile.
pub const SNAPSHOT_LOAD_TRIES_MAX: usize = 3;

const _: () = assert!(RECORD_BYTES_MAX + ROOM_NAME_BYTES_MAX + 1024 < MESSAGE_BYTES_MAX);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES + ROOM_NAME_BYTES_MAX + 1024 < MESSAGE_BYTES_MAX);
const _: () = assert!(ROOM_NAME_BYTES_MAX >= waitroom_core::limits::ROOM_ID_BYTES_MAX);
const _: () = assert!(SUBSCRIBE_BATCH_ENTRIES_MAX >= crate::APPEND_BATCH_RECORDS_MAX);
const _: () = assert!(crate::APPEND_BATCH_RECORDS_MAX < PRODUCE_QUEUE_RECORDS_MAX);
const _: () = assert!(TOPIC_NAME_BYTES_MAX + SNAPSHOT_TOPIC_SUFFIX.len() <= 249);
const _: () = assert!(SNAPSHOT_CHUNKS_MAX <= u32::MAX as usize);

/// librdkafka properties waitroom sets itself: the guarantees of the log rest on them.
const FORCED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "the URL's host list"),
    (
        "metadata.broker.list",
        "the URL's host list (bootstrap.servers)",
    ),
    (
        "enable.idempotence",
        "true: a retried send is written once, in order",
    ),
    (
        "acks",
        "all: an append is acknowledged once every in-sync replica has it",
    ),
    (
        "request.required.acks",
        "all (acks): an append is acknowledged once every in-sync replica has it",
    ),
    ("group.id", "the node option"),
    (
        "enable.auto.commit",
        "false: positions are the subscriber's checkpoints",
    ),
    (
        "enable.auto.offset.store",
        "false: positions are the subscriber's checkpoints",
    ),
    (
        "auto.offset.reset",
        "error: a position that was deleted is reported, never skipped silently",
    ),
    (
        "enable.partition.eof",
        "true: how a subscription catches up",
    ),
    ("transactional.id", "unset: appends are not transactions"),
];

/// What a backend URL says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Settings {
    /// `host:port,host:port`, for `bootstrap.servers`.
    pub(super) brokers: String,
    pub(super) topic: String,
    pub(super) snapshot_topic: String,
    /// Partitions of the log topic if waitroom creates it.
    pub(super) partitions: i32,
    /// Replication factor of the topics waitroom creates; `None`: the brokers' default.
    pub(super) replication_factor: Option<i32>,
    /// The configured node name: its consumer group shows this node's lag.
    pub(super) node: Option<String>,
    pub(super) keep_history_ms: u64,
    /// Trimming deletes records (`DeleteRecords`); off for brokers without it.
    pub(super) delete_records: bool,
    /// Missing topics are created at connect.
    pub(super) create_topics: bool,
    /// librdkafka properties from the URL and the properties file, by name.
    pub(super) properties: BTreeMap<String, String>,
}

pub(super) fn rejected(message: impl Into<String>) -> LogError {
    LogError::Rejected(message.into())
}

/// Checks a name made of `[A-Za-z0-9._-]`, 1 to `max` bytes.
fn check_name(what: &str, value: &str, max: usize) -> Result<(), LogError> {
    let valid = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(rejected(format!(
            "Kafka URL option {what}={value:?}: use 1 to {max} of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// Checks a room name: the room is the key of its records and part of snapshot keys.
///
/// # Errors
/// [`LogError::Rejected`] for an empty name, one longer than [`ROOM_NAME_BYTES_MAX`], or one
/// with characters other than `[A-Za-z0-9._-]` (the characters of room ids).
pub(super) fn check_room(room: &str) -> Result<(), LogError> {
    let valid = !room.is_empty()
        && room.len() <= ROOM_NAME_BYTES_MAX
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(rejected(format!(
            "the Kafka log takes rooms named with 1 to {ROOM_NAME_BYTES_MAX} of A-Z a-z 0-9 . _ -, \
             not a room of {} bytes like this one",
            room.len()
        )))
    }
}

fn parse_bool(text: &str) -> Result<bool, OptionError> {
    match text {
        "true" | "on" | "yes" => Ok(true),
        "false" | "off" | "no" => Ok(false),
        _ => Err(OptionError("true or false".to_owned())),
    }
}

impl Settings {
    /// Parses a backend URL (see the module documentation). Messages never quote a property's
    /// value (it may be a password).
    pub(super) fn parse(url: &str) -> Result<Self, LogError> {
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| rejected("a Kafka URL starts with kafka://"))?;
        if rest.contains('#') {
            return Err(rejected("a Kafka URL takes no #fragment"));
        }
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        if hosts.contains('@') {
            return Err(rejected(
                "a Kafka URL takes no credentials before the host: give sasl.username and \
                 sasl.password as client properties (in the properties file, to keep them out of \
                 process listings)",
            ));
        }
        let mut brokers = Vec::new();
        for host in hosts.split(',') {
            brokers.push(parse_broker(host)?);
        }
        let mut options = QueryOptions::parse("Kafka", query)?;
        let topic = options
            .take("topic")
            .unwrap_or_else(|| TOPIC_DEFAULT.to_owned());
        check_name("topic", &topic, TOPIC_NAME_BYTES_MAX)?;
        let node = options.take("node");
        if let Some(node) = &node {
            check_name("node", node, NODE_NAME_BYTES_MAX)?;
        }
        let partitions = options
            .take_parsed("partitions", |text| {
                let partitions: i32 = text
                    .parse()
                    .map_err(|_| OptionError("a whole number".to_owned()))?;
                if (1..=PARTITIONS_MAX).contains(&partitions) {
                    Ok(partitions)
                } else {
                    Err(OptionError(format!("1 to {PARTITIONS_MAX}")))
                }
            })?
            .unwrap_or(PARTITIONS_DEFAULT);
        let replication_factor =
            options.take_parsed("replication-factor", |text| match text.parse::<i32>() {
                Ok(factor) if (1..=32).contains(&factor) => Ok(factor),
                _ => Err(OptionError("1 to 32".to_owned())),
            })?;
        let keep_history_ms = options.take_keep_history_ms()?;
        let delete_records = options
            .take_parsed("delete-records", parse_bool)?
            .unwrap_or(true);
        let create_topics = options
            .take_parsed("create-topics", parse_bool)?
            .unwrap_or(true);
        let file = options.take("properties");
        // Everything else is a librdkafka property; librdkafka itself refuses unknown names when
        // the clients are made, so a typo never falls back to a default.
        let mut properties = BTreeMap::new();
        for (name, value) in options.into_rest() {
            add_property(&mut properties, name, value, "the URL")?;
        }
        if let Some(file) = file {
            for (name, value) in read_properties_file(Path::new(&file))? {
                add_property(&mut properties, name, value, "the properties file")?;
            }
        }
        let snapshot_topic = format!("{topic}{SNAPSHOT_TOPIC_SUFFIX}");
        Ok(Self {
            brokers: brokers.join(","),
            topic,
            snapshot_topic,
            partitions,
            replication_factor,
            node,
            keep_history_ms,
            delete_records,
            create_topics,
            properties,
        })
    }

    /// For logs: brokers, topic, node and the names (never the values) of client properties.
    pub(super) fn describe(&self, node: &str) -> String {
        let mut shown = format!(
            "kafka://{} (topic {}, node {node}",
            self.brokers, self.topic
        );
        if !self.properties.is_empty() {
            let names: Vec<&str> = self.properties.keys().map(String::as_str).collect();
            shown.push_str(&format!(", client properties {}", names.join(" ")));
        }
        shown.push(')');
        shown
    }
}

/// `host:port` of one broker (port 9092 unless given).
fn parse_broker(host: &str) -> Result<String, LogError> {
    if host.is_empty() {
        return Err(rejected("a Kafka URL needs a host (kafka://host:port)"));
    }
    // The url crate checks the host and port the way every other backend's URL is checked.
    let parsed = url::Url::parse(&format!("kafka://{host}"))
        .map_err(|error| rejected(format!("bad Kafka broker address: {error}")))?;
    let name = parsed
        .host_str()
        .filter(|name| !name.is_empty())
        .ok_or_else(|| rejected("a Kafka URL needs a host (kafka://host:port)"))?;
    if parsed.path() != "" && parsed.path() != "/" {
        return Err(rejected(
            "a Kafka URL has no path: kafka://host:port?options",
        ));
    }
    Ok(format!("{name}:{}", parsed.port().unwrap_or(9092)))
}

fn add_property(
    properties: &mut BTreeMap<String, String>,
    name: String,
    value: String,
    source: &str,
) -> Result<(), LogError> {
    if let Some((_, why)) = FORCED_PROPERTIES
        .iter()
        .find(|(forced, _)| *forced == name.as_str())
    {
        return Err(rejected(format!(
            "Kafka client property {name} (in {source}) is set by waitroom: {why}"
        )));
    }
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(rejected(format!(
            "Kafka client property {name:?} (in {source}): not a property name"
        )));
    }
    if properties.contains_key(&name) {
        return Err(rejected(format!(
            "Kafka client property {name} is given twice (the URL and the properties file)"
        )));
    }
    if properties.len() >= PROPERTIES_MAX {
        return Err(rejected(format!(
            "more than PROPERTIES_MAX ({PROPERTIES_MAX}) Kafka client properties"
        )));
    }
    properties.insert(name, value);
    Ok(())
}

/// A client properties file: `name=value` lines (Java `client.properties` style, without line
/// continuations or escapes), `#` or `!` comments, blank lines.
fn read_properties_file(path: &Path) -> Result<Vec<(String, String)>, LogError> {
    let shown = path.display();
    let metadata = std::fs::metadata(path)
        .map_err(|error| rejected(format!("Kafka properties file {shown}: {error}")))?;
    if metadata.len() > PROPERTIES_FILE_BYTES_MAX {
        return Err(rejected(format!(
            "Kafka properties file {shown} is larger than PROPERTIES_FILE_BYTES_MAX \
             ({PROPERTIES_FILE_BYTES_MAX})"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| rejected(format!("Kafka properties file {shown}: {error}")))?;
    parse_properties(&text).map_err(|why| rejected(format!("Kafka properties file {shown}: {why}")))
}

/// The `name=value` pairs of a properties file's text.
pub(super) fn parse_properties(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("line {} is not name=value", number + 1));
        };
        pairs.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(pairs)
}

/// Kafka's `murmur2` hash (the Java client's `Utils.murmur2`), so that a room's partition is the
/// one Kafka's default partitioner would pick for the room as key.
pub(super) fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = words.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `room` among `partitions`: Kafka's default for the room as key.
pub(super) fn partition_of(room: &str, partitions: i32) -> i32 {
    (murmur2(room.as_bytes()) & 0x7fff_ffff) % partitions.max(1)
}

/// Milliseconds since the Unix epoch by this machine's clock.
pub(super) fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since_epoch| {
            u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
        })
}
