//! The `sqs://` URL, the names it leads to (queues, S3 keys), and every limit and timing of the
//! backend, tied to the crate's shared limits and to SQS's own by compile-time assertions.

use std::time::Duration;

use crate::options::{OptionError, QueryOptions, parse_duration_ms};
use crate::{LogError, RECORD_BYTES_MAX};

/// Default first part of every queue name and S3 key.
pub const PREFIX_DEFAULT: &str = "waitroom";

/// Longest `prefix`: the longest node queue name, `{prefix}-node-{node}-{8 hex}.fifo`, must stay
/// within [`QUEUE_NAME_BYTES_MAX`].
pub const PREFIX_BYTES_MAX: usize = 24;

/// Longest `node` name.
pub const NODE_BYTES_MAX: usize = 32;

/// SQS's limit on a queue name (`.fifo` included).
pub const QUEUE_NAME_BYTES_MAX: usize = 80;

/// Longest room name: rooms name their snapshots' S3 keys (at most 1 024 bytes).
pub const ROOM_NAME_BYTES_MAX: usize = 256;

/// Default `groups`: how many message groups (shards) the rooms are spread over.
pub const GROUPS_DEFAULT: u32 = 4;
/// Most `groups`: `head()` sends a marker to each.
pub const GROUPS_MAX: u32 = 256;

/// Largest SQS message (body and attributes), in bytes: 1 MiB since August 2025 (it was 256 KiB
/// before, which could not carry a record of [`RECORD_BYTES_MAX`] with any framing at all); the
/// queues are created with `MaximumMessageSize` set to it. A `SendMessageBatch` may carry this
/// much in total too.
pub const SQS_MESSAGE_BYTES_MAX: usize = 1024 * 1024;

/// Most messages one `SendMessageBatch`, `DeleteMessageBatch` or `ReceiveMessage` handles
/// (SQS's limit).
pub const SQS_BATCH_MESSAGES_MAX: usize = 10;

/// Most raw (before base64) bytes of records packed into one intake message: base64 makes 4 of
/// every 3, and the framing adds a little, which must stay within [`SQS_MESSAGE_BYTES_MAX`].
pub const INTAKE_MESSAGE_RAW_BYTES_MAX: usize = 600 * 1024;

/// Framing of one record inside a message or an S3 object (its length).
pub const RECORD_FRAME_BYTES: usize = 4;

/// Most bytes of the header of an intake message or of a copy (version, kind, room, positions,
/// timestamp, the intake message ids of its object).
pub const HEADER_BYTES_MAX: usize = 2 * 1024;

/// Most raw bytes of records in one copy message (a chunk of a stamped object sent to the node
/// queues).
pub const COPY_CHUNK_RAW_BYTES_MAX: usize = 700 * 1024;

/// Bytes of a base64 encoding of `raw` bytes.
pub const fn base64_bytes(raw: usize) -> usize {
    raw.div_ceil(3) * 4
}

// A record of the shared limit fits one intake message and one copy, and both fit SQS.
const _: () = assert!(RECORD_BYTES_MAX + RECORD_FRAME_BYTES <= INTAKE_MESSAGE_RAW_BYTES_MAX);
const _: () = assert!(RECORD_BYTES_MAX + RECORD_FRAME_BYTES <= COPY_CHUNK_RAW_BYTES_MAX);
const _: () =
    assert!(base64_bytes(INTAKE_MESSAGE_RAW_BYTES_MAX + HEADER_BYTES_MAX) <= SQS_MESSAGE_BYTES_MAX);
const _: () =
    assert!(base64_bytes(COPY_CHUNK_RAW_BYTES_MAX + HEADER_BYTES_MAX) <= SQS_MESSAGE_BYTES_MAX);
// Names: the longest node queue name and copy deduplication id fit SQS.
const _: () = assert!(
    PREFIX_BYTES_MAX + "-node-".len() + NODE_BYTES_MAX + "-".len() + 8 + ".fifo".len()
        <= QUEUE_NAME_BYTES_MAX
);
const _: () = assert!(ROOM_NAME_BYTES_MAX >= waitroom_core::limits::ROOM_ID_BYTES_MAX);
const _: () = assert!(GROUPS_DEFAULT <= GROUPS_MAX);

/// Largest snapshot: S3's limit on one `PutObject` (5 GiB), or the crate's, whichever is less.
pub const SNAPSHOT_BYTES_MAX: usize = if crate::limits::SNAPSHOT_BYTES_MAX < S3_PUT_BYTES_MAX {
    crate::limits::SNAPSHOT_BYTES_MAX
} else {
    S3_PUT_BYTES_MAX
};

/// S3's limit on one `PutObject`.
pub const S3_PUT_BYTES_MAX: usize = 5 * 1024 * 1024 * 1024;

/// Longest wait of one `ReceiveMessage` (long polling; SQS's maximum is 20 s): an idle node costs
/// its own queue and the intake three requests a minute each.
pub const RECEIVE_WAIT: Duration = Duration::from_secs(20);

/// Pause after an empty short poll of the intake (`receive-wait=0s`): bounds the requests of an
/// idle node to 20 a second per intake receiver.
pub const SHORT_POLL_IDLE: Duration = Duration::from_millis(50);

/// How long a message of a node's own queue stays invisible after it was received: the node
/// deletes it right after reading it, and one received again (after a crash, a failed delete) is
/// skipped by its position. Short, because a node queue is FIFO: while a received message is
/// invisible, the messages behind it (head answers among them) wait, so a receive whose answer
/// was lost with a dropped connection kept the node unready for this long (24–28 s at 30 s, in
/// the fault suite: 3 s of dropped connections). Reading and deleting take milliseconds.
pub const NODE_QUEUE_VISIBILITY: Duration = Duration::from_secs(5);

/// Default `visibility-timeout` of the intake: how long the node that received a group's batch
/// holds it before another node may take it over.
pub const VISIBILITY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Shortest `visibility-timeout`: the stamping round trips must fit well within it.
pub const VISIBILITY_TIMEOUT_MIN: Duration = Duration::from_secs(2);
/// Longest `visibility-timeout` (SQS's maximum is 12 h; a crashed copier's batch waits this long).
pub const VISIBILITY_TIMEOUT_MAX: Duration = Duration::from_secs(15 * 60);

/// A node stops working on a batch once this part of the visibility timeout is left: past it,
/// another node may already hold the batch (see "Exactly once" in the module documentation).
pub const VISIBILITY_MARGIN_DIVISOR: u32 = 4;

/// Default `reap-after`: a node queue whose node has not shown itself for this long is deleted.
pub const REAP_AFTER_DEFAULT: Duration = Duration::from_secs(15 * 60);
/// Shortest `reap-after` (a node touches its queue four times per `reap-after`).
pub const REAP_AFTER_MIN: Duration = Duration::from_secs(4);
/// Longest `reap-after`.
pub const REAP_AFTER_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// How old the list of node queues may be when a batch is copied: a node queue created longer
/// ago than this (plus [`QUEUE_LIST_MARGIN`]) receives every batch stamped from then on.
pub const QUEUE_LIST_REFRESH: Duration = Duration::from_secs(1);
/// Added to [`QUEUE_LIST_REFRESH`]: a new queue is on every copier's list this long after it was
/// created (a node turns ready only then, see "Reading").
pub const QUEUE_LIST_MARGIN: Duration = Duration::from_secs(1);

/// How often a node asks for the head of every group, so that a copy it missed (its queue was
/// created while a batch was being copied, or a copy failed) is read from S3 even in a group that
/// stays quiet.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(60);

/// Longest wait for the answers to the markers of one `head()` (or to a forget), on top of the
/// visibility timeout: a batch held by a node that died or stopped keeps the later messages of
/// its group, the marker among them, back for up to the visibility timeout.
pub const MARKER_WAIT: Duration = Duration::from_secs(30);

/// Timeout of one SQS or S3 request (a long poll gets [`RECEIVE_WAIT`] on top).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Tries of one copy to one node queue before the copier goes on without it (that node reads the
/// batch from S3 when it sees the gap).
pub const COPY_TRIES_MAX: u32 = 3;

/// Stamping loops per node: one receives from the intake while the other stamps what the last
/// receive brought (groups whose batches arrive together are stamped concurrently anyway).
pub const INTAKE_RECEIVERS: usize = 2;

/// Backoff after a failed request, doubling from the first to the last.
pub const RETRY_DELAY_MIN: Duration = Duration::from_millis(50);
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(5);

/// Longest an append waits for its records' commit before it returns (they are durable before:
/// the wait only keeps the intake short; see `intake::wait_for_commit`).
pub const APPEND_COMMIT_WAIT: Duration = Duration::from_secs(10);

/// How often a log says how many requests it made (when it made any since).
pub const REQUESTS_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// How many committed intake message ids a log remembers for appends waiting on them.
pub const COMMITTED_IDS_MAX: usize = 65_536;

/// Most payload bytes of recent entries a log keeps in memory for its subscriptions (older
/// entries are read again from S3).
pub const CACHE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Most entries in one delivered [`crate::Event::Entries`] batch.
pub const SUBSCRIBE_BATCH_ENTRIES_MAX: usize = 4096;
/// Most payload bytes in one delivered batch (a batch holds at least one entry).
pub const SUBSCRIBE_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Events a subscription computes ahead of its reader.
pub const SUBSCRIBE_QUEUE_EVENTS_MAX: usize = 4;

/// Most keys one S3 `ListObjectsV2` page or `DeleteObjects` request carries (S3's limit).
pub const S3_KEYS_PER_REQUEST_MAX: usize = 1000;

/// Most history objects read ahead of a subscription (S3 `GetObject` requests in flight).
pub const HISTORY_READ_AHEAD: usize = 8;

const _: () = assert!(RECORD_BYTES_MAX <= SUBSCRIBE_BATCH_BYTES_MAX);
const _: () = assert!(SNAPSHOT_BYTES_MAX <= crate::limits::SNAPSHOT_BYTES_MAX);
const _: () = assert!(VISIBILITY_TIMEOUT_MIN.as_secs() < VISIBILITY_TIMEOUT_MAX.as_secs());
const _: () = assert!(VISIBILITY_TIMEOUT_MAX.as_secs() <= 12 * 3600);
const _: () = assert!(RETRY_DELAY_MIN.as_millis() < RETRY_DELAY_MAX.as_millis());
const _: () = assert!(RECEIVE_WAIT.as_secs() <= 20);

/// What a backend URL says (see the module documentation of `sqs`).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) region: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) bucket: String,
    pub(crate) prefix: String,
    pub(crate) node: Option<String>,
    pub(crate) groups: u32,
    /// Static credentials from the URL's user info (tests, local servers).
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) visibility_timeout: Duration,
    pub(crate) reap_after: Duration,
    /// The long-poll wait of intake receives (0: short polls).
    pub(crate) receive_wait: Duration,
    pub(crate) keep_history_ms: u64,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .field("groups", &self.groups)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .field("visibility_timeout", &self.visibility_timeout)
            .field("reap_after", &self.reap_after)
            .field("receive_wait", &self.receive_wait)
            .field("keep_history_ms", &self.keep_history_ms)
            .finish()
    }
}

pub(crate) fn rejected(message: impl Into<String>) -> LogError {
    LogError::Rejected(message.into())
}

fn check_chars(option: &str, value: &str, max: usize, extra: &[u8]) -> Result<(), LogError> {
    let valid = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b));
    if valid {
        Ok(())
    } else {
        let extra: String = extra.iter().map(|&b| format!(" {}", b as char)).collect();
        Err(rejected(format!(
            "SQS URL option {option}={value:?}: use 1 to {max} of A-Z a-z 0-9{extra}"
        )))
    }
}

/// Checks a room name: the characters an S3 key takes safely, at most
/// [`ROOM_NAME_BYTES_MAX`] bytes.
pub(crate) fn check_room(room: &str) -> Result<(), LogError> {
    let valid = !room.is_empty()
        && room.len() <= ROOM_NAME_BYTES_MAX
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(rejected(format!(
            "room name {room:?}: the SQS log takes 1 to {ROOM_NAME_BYTES_MAX} of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// A duration option between `min` and `max`; in whole seconds when `whole_seconds` (what SQS
/// itself takes: a `500ms` it would round down, while the node budgets with the exact value).
fn duration_option(
    options: &mut QueryOptions,
    name: &'static str,
    min: Duration,
    max: Duration,
    whole_seconds: bool,
) -> Result<Option<Duration>, LogError> {
    options.take_parsed(name, |text| {
        let ms = parse_duration_ms(text)?;
        let duration = Duration::from_millis(ms);
        if duration < min || duration > max {
            return Err(OptionError(format!(
                "between {} s and {} s",
                min.as_secs(),
                max.as_secs()
            )));
        }
        if whole_seconds && duration.subsec_nanos() != 0 {
            return Err(OptionError(
                "whole seconds (SQS counts this in seconds)".to_owned(),
            ));
        }
        Ok(duration)
    })
}

fn percent_decode(text: &str) -> Result<String, LogError> {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| rejected("SQS URL: credentials that do not decode"))
}

impl Settings {
    /// Parses `sqs://[key-id:secret@]?bucket=…&…`. Error messages never quote the credentials.
    pub(crate) fn parse(url: &str) -> Result<Self, LogError> {
        let rest = url
            .strip_prefix("sqs://")
            .ok_or_else(|| rejected("an SQS URL starts with sqs://"))?;
        if rest.contains('#') {
            return Err(rejected("an SQS URL takes no #fragment"));
        }
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        if !host.is_empty() {
            return Err(rejected(
                "an SQS URL names no host (sqs://?region=…&bucket=…): the endpoint, if not \
                 AWS's, is the endpoint= option",
            ));
        }
        let credentials = match userinfo {
            None => None,
            Some(userinfo) => {
                let (id, secret) = userinfo
                    .split_once(':')
                    .ok_or_else(|| rejected("SQS URL credentials are key-id:secret-access-key@"))?;
                let (id, secret) = (percent_decode(id)?, percent_decode(secret)?);
                if id.is_empty() || secret.is_empty() {
                    return Err(rejected("SQS URL credentials: an empty key id or secret"));
                }
                Some((id, secret))
            }
        };
        let mut options = QueryOptions::parse("SQS", query)?;
        let region = options.take("region");
        if let Some(region) = &region {
            check_chars("region", region, 32, b"-")?;
        }
        let endpoint = options.take("endpoint");
        if let Some(endpoint) = &endpoint {
            let parsed = url::Url::parse(endpoint)
                .map_err(|error| rejected(format!("SQS URL option endpoint: {error}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(rejected(
                    "SQS URL option endpoint: an http:// or https:// URL with a host",
                ));
            }
        }
        let bucket = options.take("bucket").ok_or_else(|| {
            rejected("an SQS URL needs bucket=<S3 bucket> (history and snapshots)")
        })?;
        check_chars("bucket", &bucket, 63, b".-")?;
        let prefix = options.take("prefix");
        if let Some(prefix) = &prefix {
            check_chars("prefix", prefix, PREFIX_BYTES_MAX, b"_")?;
        }
        let node = options.take("node");
        if let Some(node) = &node {
            check_chars("node", node, NODE_BYTES_MAX, b"_-")?;
        }
        let groups = options
            .take_parsed("groups", |text| {
                text.parse::<u32>()
                    .ok()
                    .filter(|groups| (1..=GROUPS_MAX).contains(groups))
                    .ok_or_else(|| OptionError(format!("a whole number from 1 to {GROUPS_MAX}")))
            })?
            .unwrap_or(GROUPS_DEFAULT);
        let visibility_timeout = duration_option(
            &mut options,
            "visibility-timeout",
            VISIBILITY_TIMEOUT_MIN,
            VISIBILITY_TIMEOUT_MAX,
            true,
        )?
        .unwrap_or(VISIBILITY_TIMEOUT_DEFAULT);
        let reap_after = duration_option(
            &mut options,
            "reap-after",
            REAP_AFTER_MIN,
            REAP_AFTER_MAX,
            false,
        )?
        .unwrap_or(REAP_AFTER_DEFAULT);
        let receive_wait = duration_option(
            &mut options,
            "receive-wait",
            Duration::ZERO,
            RECEIVE_WAIT,
            true,
        )?
        .unwrap_or(RECEIVE_WAIT);
        let keep_history_ms = options.take_keep_history_ms()?;
        options.finish()?;
        Ok(Self {
            region,
            endpoint,
            bucket,
            prefix: prefix.unwrap_or_else(|| PREFIX_DEFAULT.to_owned()),
            node,
            groups,
            credentials,
            visibility_timeout,
            reap_after,
            receive_wait,
            keep_history_ms,
        })
    }

    /// What `describe()` shows: everything but the credentials.
    pub(crate) fn shown(&self) -> String {
        format!(
            "sqs://{}?{}bucket={}&prefix={}&groups={}{}",
            if self.credentials.is_some() {
                "***@"
            } else {
                ""
            },
            self.region
                .as_ref()
                .map(|region| format!("region={region}&"))
                .unwrap_or_default(),
            self.bucket,
            self.prefix,
            self.groups,
            self.endpoint
                .as_ref()
                .map(|endpoint| format!("&endpoint={endpoint}"))
                .unwrap_or_default(),
        )
    }
}

/// The names of one prefix: queues and S3 keys.
#[derive(Debug)]
pub(crate) struct Names {
    pub(crate) prefix: String,
    pub(crate) intake: String,
    /// What every node queue's name starts with.
    pub(crate) node_queue_prefix: String,
}

/// An S3 key part that orders newer positions first: S3 lists keys in ascending order, so the
/// first key of a listing is the newest (`ListObjectsV2 MaxKeys=1` finds it).
pub(crate) fn newest_first(position: u64) -> String {
    format!("{:020}", u64::MAX - position)
}

/// The position of a key part made by [`newest_first`].
pub(crate) fn position_of(part: &str) -> Option<u64> {
    if part.len() != 20 {
        return None;
    }
    part.parse::<u64>().ok().map(|inverted| u64::MAX - inverted)
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            intake: format!("{prefix}-intake.fifo"),
            node_queue_prefix: format!("{prefix}-node-"),
        }
    }

    /// The name of the queue of node `node`, incarnation `incarnation`.
    pub(crate) fn node_queue(&self, node: &str, incarnation: u32) -> String {
        format!("{}{node}-{incarnation:08x}.fifo", self.node_queue_prefix)
    }

    /// The message group id of group `group`.
    pub(crate) fn group_id(group: u32) -> String {
        format!("g{group}")
    }

    /// The shard of group `group` (its history's key prefix, which names it uniquely).
    pub(crate) fn shard(&self, group: u32) -> String {
        format!("{}/log/g{group}", self.prefix)
    }

    /// The group of a shard of this prefix.
    pub(crate) fn group_of_shard(&self, shard: &str) -> Option<u32> {
        shard
            .strip_prefix(&self.prefix)?
            .strip_prefix("/log/g")?
            .parse()
            .ok()
    }

    /// Where group `group`'s history objects are (`…/{newest_first(first seq)}`).
    pub(crate) fn history_dir(&self, group: u32) -> String {
        format!("{}/log/g{group}/", self.prefix)
    }

    pub(crate) fn history_key(&self, group: u32, first: u64) -> String {
        format!("{}{}", self.history_dir(group), newest_first(first))
    }

    /// The object that records how many groups this prefix has.
    pub(crate) fn groups_key(&self) -> String {
        format!("{}/groups", self.prefix)
    }

    pub(crate) fn snapshots_root(&self) -> String {
        format!("{}/snapshots/", self.prefix)
    }

    pub(crate) fn snapshot_dir(&self, room: &str) -> String {
        format!("{}{room}/", self.snapshots_root())
    }

    pub(crate) fn snapshot_key(&self, room: &str, position: u64) -> String {
        format!("{}{}", self.snapshot_dir(room), newest_first(position))
    }

    pub(crate) fn trim_root(&self) -> String {
        format!("{}/trim/", self.prefix)
    }

    pub(crate) fn trim_dir(&self, group: u32) -> String {
        format!("{}g{group}/", self.trim_root())
    }

    pub(crate) fn trim_key(&self, group: u32, through: u64) -> String {
        format!("{}{}", self.trim_dir(group), newest_first(through))
    }
}

/// The group of `room` among `groups`: FNV-1a of its name, so that every node (every build)
/// puts a room in the same group.
pub(crate) fn group_of(room: &str, groups: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(groups)) as u32
}

/// A name for this log when the URL gives none: `{hostname}-{pid}`, cut to fit.
pub(crate) fn generated_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .take(NODE_BYTES_MAX - 11)
        .collect();
    let host = if host.is_empty() { "node" } else { &host };
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let settings = Settings::parse(
            "sqs://AKID:se%2Fcret@?region=us-east-1&bucket=my-bucket&prefix=tickets&node=web-1\
             &endpoint=http://127.0.0.1:5000&visibility-timeout=5s&reap-after=10m&keep-history=1h\
             &receive-wait=0s&groups=8",
        )
        .unwrap();
        assert_eq!(settings.region.as_deref(), Some("us-east-1"));
        assert_eq!(settings.bucket, "my-bucket");
        assert_eq!(settings.prefix, "tickets");
        assert_eq!(settings.node.as_deref(), Some("web-1"));
        assert_eq!(
            settings.credentials,
            Some(("AKID".to_owned(), "se/cret".to_owned()))
        );
        assert_eq!(settings.visibility_timeout, Duration::from_secs(5));
        assert_eq!(settings.reap_after, Duration::from_secs(600));
        assert_eq!(settings.keep_history_ms, 3_600_000);
        assert_eq!(settings.receive_wait, Duration::ZERO);
        assert_eq!(settings.groups, 8);
        assert!(!settings.shown().contains("cret") && !format!("{settings:?}").contains("cret"));

        let defaults = Settings::parse("sqs://?bucket=b12").unwrap();
        assert_eq!(defaults.prefix, PREFIX_DEFAULT);
        assert_eq!(defaults.groups, GROUPS_DEFAULT);
        assert_eq!(defaults.visibility_timeout, VISIBILITY_TIMEOUT_DEFAULT);
        assert_eq!(defaults.credentials, None);
        for bad in [
            "sqs://",
            "sqs://host?bucket=b12",
            "sqs://?bucket=b12&prefix=a-b",
            "sqs://?bucket=b12&node=",
            "sqs://?bucket=b12&visibility-timeout=1s",
            "sqs://?bucket=b12&reap-after=1s",
            "sqs://?bucket=b12&receive-wait=21s",
            "sqs://?bucket=b12&receive-wait=500ms",
            "sqs://?bucket=b12&visibility-timeout=2999ms",
            "sqs://?bucket=b12&groups=0",
            "sqs://?bucket=b12&endpoint=ftp://x",
            "sqs://?bucket=b12&unknown=1",
            "sqs://nocolon@?bucket=b12",
            "redis://?bucket=b12",
        ] {
            assert!(Settings::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn newest_first_orders_keys_backwards() {
        let keys: Vec<String> = [0, 1, 9, 10, u64::MAX].map(newest_first).to_vec();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.reverse();
        assert_eq!(keys, sorted);
        assert_eq!(position_of(&newest_first(12345)), Some(12345));
        assert_eq!(position_of("12"), None);
    }

    #[test]
    fn names() {
        let names = Names::new("p");
        assert_eq!(
            names.node_queue("web-1", 0xab),
            "p-node-web-1-000000ab.fifo"
        );
        assert_eq!(names.group_of_shard(&names.shard(3)), Some(3));
        assert_eq!(names.group_of_shard("q/log/g1"), None);
        assert_eq!(group_of("eras-tour", 4), group_of("eras-tour", 4));
        let spread: std::collections::BTreeSet<u32> = (0..100)
            .map(|room| group_of(&format!("room{room}"), 4))
            .collect();
        assert_eq!(spread.len(), 4);
        assert!(check_room("ok.room-1_x").is_ok());
        assert!(check_room("no/slash").is_err());
        assert!(check_room(&"x".repeat(ROOM_NAME_BYTES_MAX + 1)).is_err());
    }
}
