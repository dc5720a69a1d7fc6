//! What a RabbitMQ backend URL says, the limits of the backend, and the names of its streams.

use std::time::Duration;

use crate::options::{OptionError, QueryOptions};
use crate::{APPEND_BATCH_BYTES_MAX, LogError, RECORD_BYTES_MAX, parse_duration_ms};

/// Default first part of every stream name.
pub const PREFIX_DEFAULT: &str = "waitroom";

/// The stream protocol's port when the URL names none (RabbitMQ's default).
pub const PORT_DEFAULT: u16 = 5552;

/// Longest `prefix`, in bytes: with [`ROOM_NAME_BYTES_MAX`] it keeps every stream name within
/// [`STREAM_NAME_BYTES_MAX`].
pub const NAME_BYTES_MAX: usize = 64;

/// Longest room name, in bytes. Room ids are at most 64 bytes (`waitroom-core`); the slack is for
/// tests and tools. A room's snapshot stream is named after it (see [`Names::snapshots`]).
pub const ROOM_NAME_BYTES_MAX: usize = 160;

/// RabbitMQ's bound on a queue (stream) name.
pub const STREAM_NAME_BYTES_MAX: usize = 255;

const _: () = assert!(NAME_BYTES_MAX + ".snapshots.".len() + ROOM_NAME_BYTES_MAX <= 255);
const _: () = assert!(ROOM_NAME_BYTES_MAX <= u8::MAX as usize);

/// Most rooms the snapshot registry may name (every node restores them all at start).
pub const ROOMS_MAX: usize = 10_000;

/// Longest wait for a TCP connection and the protocol's handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for the answer to a command (create, subscribe, query, ...). RabbitMQ answers in
/// milliseconds; seconds mean it is stalled or restarting.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for the publisher confirms of one append. A confirm comes once the chunk is
/// written on the stream's leader (and, on a cluster, on a majority of its replicas).
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Heartbeat period asked of the broker, in seconds (the broker's own may be shorter). A
/// connection on which nothing arrived for [`SILENCE_MAX`] is taken for dead.
pub const HEARTBEAT_SECONDS: u32 = 5;

/// Silence after which a connection is taken for dead (three heartbeat periods).
pub const SILENCE_MAX: Duration = Duration::from_secs(3 * HEARTBEAT_SECONDS as u64);

/// Largest frame this client asks the broker to send or accept (RabbitMQ's `stream.frame_max`
/// defaults to the same 1 MiB; the smaller of the two is used).
pub const FRAME_BYTES_REQUESTED: u32 = 1024 * 1024;

/// Smallest frame size the backend works with: a record of [`RECORD_BYTES_MAX`] with its
/// envelope must fit one publish frame.
pub const FRAME_BYTES_MIN: u32 = 320 * 1024;

/// Largest frame read from the broker. Deliveries are whole chunks, which the broker does not
/// split by frame size; the broker's writer makes a chunk of what arrived together, so this bounds
/// the memory of one chunk read.
pub const READ_FRAME_BYTES_MAX: usize = 128 * 1024 * 1024;

/// Chunks a subscription lets the broker send ahead (its credit): reading ahead overlaps
/// transfers with applying, and the bound keeps a slow consumer's memory bounded.
pub const SUBSCRIBE_CREDIT_CHUNKS: u16 = 8;

/// Subscriptions (and publishers) one connection carries at once: the protocol numbers them
/// with one byte.
pub const CONNECTION_SUBSCRIPTIONS_MAX: usize = 250;

/// Most entries in one delivered [`crate::Event::Entries`] batch.
pub const SUBSCRIBE_BATCH_ENTRIES_MAX: usize = 4096;

/// Events a subscription reads ahead of its consumer.
pub const SUBSCRIBE_QUEUE_EVENTS_MAX: usize = 4;

/// First delay before a subscription reconnects.
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(50);

/// Longest delay between reconnection attempts: a restarted broker is noticed within this.
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(2);

/// Chunks `head()` steps back over when the stream's last chunks hold no record (only markers a
/// starting log wrote, see the module documentation), before it gives up with `Unavailable`.
pub const HEAD_STEPS_BACK_MAX: usize = 256;

/// Rooms whose clock a subscription keeps (see "Time" in the module documentation).
pub const ROOM_CLOCKS_MAX: usize = 100_000;

/// Largest snapshot stored; a bigger room is not snapshotted (the node logs why) and its history
/// is not trimmed. It bounds a room's snapshot stream (see [`SNAPSHOT_STREAM_BYTES`]).
pub const SNAPSHOT_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Bytes of a snapshot in one message (a piece), below the smallest frame size with room for the
/// envelope.
pub const SNAPSHOT_PIECE_BYTES: usize = 256 * 1024;

/// Segment size of a room's snapshot stream: retention removes whole segments.
pub const SNAPSHOT_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// Retention (`max-length-bytes`) of a room's snapshot stream: room for the newest complete
/// snapshot, one abandoned or superseded attempt and one being written, plus the segment that
/// retention may cut short. RabbitMQ deletes the oldest segments while the stream is larger than
/// this, so the newest complete snapshot is never among them.
pub const SNAPSHOT_STREAM_BYTES: u64 = 4 * SNAPSHOT_BYTES_MAX as u64 + 2 * SNAPSHOT_SEGMENT_BYTES;

/// Retention of the trim-marker stream: its messages are only there to move the marker (kept
/// by the broker apart from the messages, see `snapshots`).
pub const TRIMS_STREAM_BYTES: u64 = 4 * 1024 * 1024;
/// Segment size of the trim-marker stream.
pub const TRIMS_SEGMENT_BYTES: u64 = 1024 * 1024;

/// Snapshot positions (stream offsets) must stay below this: a snapshot message's publishing id
/// packs the position with an attempt number and a piece index (see `snapshots`).
pub const SNAPSHOT_POSITION_LIMIT: u64 = 1 << 40;

/// Pieces of one snapshot (the piece index has 16 bits of the publishing id, its top value being
/// the manifest's).
pub const SNAPSHOT_PIECES_MAX: usize = u16::MAX as usize - 1;

/// Default retention of the log stream (`max-age`): far past how long any room waits for its
/// next snapshot (`--snapshot-every-ms`, 5 minutes by default), so retention never removes
/// history a room still needs while the snapshots work.
pub const MAX_AGE_DEFAULT_MS: u64 = 24 * 60 * 60 * 1000;

/// Default segment size of the log stream (`segment-bytes`): retention removes whole segments.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// Bounds of `segment-bytes`: RabbitMQ refuses segments past 3 GB.
pub const SEGMENT_BYTES_MIN: u64 = 1024 * 1024;
pub const SEGMENT_BYTES_MAX: u64 = 3_000_000_000;

const _: () = assert!(SNAPSHOT_BYTES_MAX <= crate::limits::SNAPSHOT_BYTES_MAX);
const _: () = assert!(SNAPSHOT_BYTES_MAX.div_ceil(SNAPSHOT_PIECE_BYTES) <= SNAPSHOT_PIECES_MAX);
const _: () = assert!(SNAPSHOT_PIECE_BYTES + 1024 <= FRAME_BYTES_MIN as usize);
const _: () = assert!(RECORD_BYTES_MAX + 1024 <= FRAME_BYTES_MIN as usize);
const _: () = assert!(FRAME_BYTES_MIN <= FRAME_BYTES_REQUESTED);
const _: () = assert!(RECORD_BYTES_MAX <= APPEND_BATCH_BYTES_MAX);
const _: () = assert!(SUBSCRIBE_CREDIT_CHUNKS as usize * 2 < CONNECTION_SUBSCRIPTIONS_MAX);
const _: () = assert!(RECONNECT_DELAY_MIN.as_millis() < RECONNECT_DELAY_MAX.as_millis());
const _: () = assert!(SNAPSHOT_SEGMENT_BYTES >= SEGMENT_BYTES_MIN);

/// The names of one prefix's streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Names {
    pub(super) prefix: String,
    /// Every room's records.
    pub(super) log: String,
    /// Which rooms have a snapshot stream.
    pub(super) rooms: String,
    /// The trim marker.
    pub(super) trims: String,
}

impl Names {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            log: format!("{prefix}.log"),
            rooms: format!("{prefix}.rooms"),
            trims: format!("{prefix}.trims"),
        }
    }

    /// The stream of `room`'s snapshots.
    pub(super) fn snapshots(&self, room: &str) -> String {
        format!("{}.snapshots.{room}", self.prefix)
    }
}

/// What a backend URL says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Settings {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: String,
    pub(super) password: String,
    pub(super) vhost: String,
    pub(super) prefix: String,
    /// Retention of the log stream, set when this log creates it.
    pub(super) max_age_ms: u64,
    pub(super) max_bytes: Option<u64>,
    pub(super) segment_bytes: u64,
    /// Trimmed history younger than this stays (for audit), in milliseconds.
    pub(super) keep_history_ms: u64,
    /// Scheme, user, host, port and vhost, never the password: for `describe()`.
    pub(super) shown: String,
}

pub(super) fn rejected(message: impl Into<String>) -> LogError {
    LogError::Rejected(message.into())
}

fn check_name(option: &str, value: &str) -> Result<(), LogError> {
    let valid = !value.is_empty()
        && value.len() <= NAME_BYTES_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(rejected(format!(
            "RabbitMQ URL option {option}={value:?}: use 1 to {NAME_BYTES_MAX} of A-Z a-z 0-9 _ -"
        )))
    }
}

fn parse_bytes(text: &str) -> Result<u64, OptionError> {
    text.trim()
        .parse()
        .map_err(|_| OptionError("a whole number of bytes".to_owned()))
}

/// A duration as RabbitMQ's `x-max-age` takes it: seconds with the unit `s`.
pub(super) fn max_age_argument(ms: u64) -> String {
    format!("{}s", ms.div_ceil(1000).max(1))
}

impl Settings {
    /// Parses a backend URL (see the module documentation). Error messages never quote the URL,
    /// which may hold a password.
    pub(super) fn parse(url: &str) -> Result<Self, LogError> {
        let parsed =
            url::Url::parse(url).map_err(|error| rejected(format!("bad RabbitMQ URL: {error}")))?;
        if parsed.scheme() != "rabbitmq-stream" {
            return Err(rejected(
                "a RabbitMQ URL starts with rabbitmq-stream:// (TLS is not supported yet)",
            ));
        }
        if parsed.fragment().is_some() {
            return Err(rejected("a RabbitMQ URL takes no #fragment"));
        }
        let host = parsed
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| rejected("a RabbitMQ URL needs a host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed.port().unwrap_or(PORT_DEFAULT);
        let decode = |text: &str, what: &str| -> Result<String, LogError> {
            percent_decode(text)
                .ok_or_else(|| rejected(format!("the {what} of a RabbitMQ URL does not decode")))
        };
        let (user, password) = if parsed.username().is_empty() && parsed.password().is_none() {
            ("guest".to_owned(), "guest".to_owned())
        } else {
            (
                decode(parsed.username(), "user")?,
                decode(parsed.password().unwrap_or(""), "password")?,
            )
        };
        let vhost = match parsed.path() {
            "" | "/" => "/".to_owned(),
            path => {
                let path = &path[1..];
                if path.contains('/') {
                    return Err(rejected(
                        "the path of a RabbitMQ URL is the vhost (%2F for /), one segment",
                    ));
                }
                decode(path, "vhost")?
            }
        };
        let mut options = QueryOptions::parse("RabbitMQ", parsed.query().unwrap_or(""))?;
        let prefix = options.take("prefix");
        if let Some(prefix) = &prefix {
            check_name("prefix", prefix)?;
        }
        let max_age_ms = options.take_parsed("max-age", |text| {
            let ms = parse_duration_ms(text)?;
            if ms < 60_000 {
                return Err(OptionError("at least 1m".to_owned()));
            }
            Ok(ms)
        })?;
        let max_bytes = options.take_parsed("max-bytes", |text| {
            let bytes = parse_bytes(text)?;
            if bytes < SEGMENT_BYTES_MIN {
                return Err(OptionError(format!("at least {SEGMENT_BYTES_MIN}")));
            }
            Ok(bytes)
        })?;
        let segment_bytes = options
            .take_parsed("segment-bytes", |text| {
                let bytes = parse_bytes(text)?;
                if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&bytes) {
                    return Err(OptionError(format!(
                        "from {SEGMENT_BYTES_MIN} to {SEGMENT_BYTES_MAX}"
                    )));
                }
                Ok(bytes)
            })?
            .unwrap_or(SEGMENT_BYTES_DEFAULT);
        let keep_history_ms = options.take_keep_history_ms()?;
        options.finish()?;
        let max_age_ms = match max_age_ms {
            Some(ms) if ms < keep_history_ms => {
                return Err(rejected(
                    "RabbitMQ URL: max-age is shorter than keep-history, so retention would \
                     delete history kept for audit",
                ));
            }
            Some(ms) => ms,
            None => MAX_AGE_DEFAULT_MS.max(keep_history_ms),
        };
        let shown_host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let shown = format!(
            "rabbitmq-stream://{}@{shown_host}:{port}/{}",
            user.replace(['@', ':', '/'], "_"),
            if vhost == "/" { "%2F" } else { &vhost }
        );
        Ok(Self {
            host,
            port,
            user,
            password,
            vhost,
            prefix: prefix.unwrap_or_else(|| PREFIX_DEFAULT.to_owned()),
            max_age_ms,
            max_bytes,
            segment_bytes,
            keep_history_ms,
            shown,
        })
    }
}

/// `%XX`-decodes `text` (no `+` rule: a path is not a form).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}
