//! # waitroom-log
//!
//! The ordered log every waitroom node appends to and applies from, and every backend of it.
//! Each room of waitroom is a deterministic state machine (`waitroom-core`) applied to this log;
//! this crate knows nothing of rooms beyond their names, nothing of HTTP and nothing of the node.
//!
//! # Layout
//! - [`Log`]: the one trait every backend implements: append a batch durably, subscribe from a
//!   checkpoint, read the head; keep each room's newest snapshot; trim history nobody needs.
//! - `limits`: the limits every backend shares, tied to the core's by compile-time assertions.
//! - `fault`: named points where crash tests make the process die (feature `fault-injection`).
//! - `url`: [`BackendUrl`] and [`open`]: the URL scheme picks the backend, and every backend
//!   takes its options as URL query parameters (`options`).
//! - `memory` (feature `memory`): in-process, for tests and benchmarks.
//! - `file/` (feature `file`): the embedded, durable single-node log (segment files).
//! - `redis/` (feature `redis`): Redis Streams, one stream per room, single server or Cluster.
//! - `kafka/` (feature `kafka`): one Kafka topic, a partition per group of rooms, snapshots in a
//!   compacted topic beside it.
//! - `sqs/` (feature `sqs`): AWS SQS FIFO queues order each group of rooms, S3 keeps the history
//!   and the snapshots.
//! - `rabbitmq/` (feature `rabbitmq`): RabbitMQ streams, one stream for every room's records,
//!   a snapshot stream per room.
//! - `testkit` (feature `testkit`): the conformance suite every backend passes, the helpers the
//!   backends' tests share, and one launcher per real server (also behind the
//!   `waitroom-servers` binary that `scripts/test` and `bench/` use).
//!
//! # The model
//! A log is made of independent **shards**, each a totally ordered sequence of entries: the one
//! file of the embedded log, a Redis stream (one per room), a Kafka partition, a RabbitMQ stream,
//! an SQS group of rooms (ordered through the intake, kept in S3). Every record of one room lives
//! in exactly one shard, so a room's records have a total order; records of different shards
//! have none. Each entry carries its
//! [`Position`] in its shard (strictly increasing along the shard) and a timestamp assigned by
//! whoever orders the shard (the broker where it assigns one), which becomes the room's clock.
//!
//! Delivery is at-least-once: a subscription may deliver an entry again after a reconnect. The
//! node skips entries at or below the position it already applied, and the state machine
//! deduplicates records by id, so redelivery is harmless.
//!
//! # Snapshots and trimming
//! A node keeps, per room, the position of the last record it applied. Any node may store a
//! room's [`Snapshot`]: the room's encoded state and that position. The backend keeps the newest
//! snapshot of each room (a store that already holds a newer one keeps it). A node that starts
//! restores every room from its snapshot and applies only that room's records after it.
//!
//! Once no room needs the entries of a shard up to a position (every room of the shard has a
//! snapshot at or past it), the node calls [`Log::trim`]; the backend drops that history (all of
//! it or, at its own granularity, some of it; less when the operator keeps history for audit) and
//! remembers the position durably ([`Log::trimmed`]): a starting node subscribes from there, so
//! a shard shared by many rooms is read from the lowest position any of its rooms still needs.
//! A subscription that falls behind a trim, or starts below one, is told with
//! [`Event::Trimmed`], and its node restores the shard's rooms from their snapshots.
//!
//! # Checking the trait against every backend
//! - embedded file: one shard (`"file"`), position = byte offset, timestamp = the writer's clock
//!   made monotonic; head = end of the last durable frame; trimmed by whole segments.
//! - Redis Streams: shard = room stream key, position = stream id (`ms << 64 | seq`), timestamp =
//!   the id's milliseconds; head = last id per room stream; trimmed with `XTRIM MINID`.
//! - Kafka: shard = partition, position = offset, timestamp = `LogAppendTime` (or, on brokers
//!   that keep the producer's time, the writing node's clock made monotonic per node); head =
//!   high watermark − 1 per partition; trimmed with `DeleteRecords`.
//! - RabbitMQ streams: shard = the one log stream, position = offset, timestamp = chunk timestamp
//!   (made monotonic per room); head = the offset of the last record of the stream's last chunk;
//!   trimmed by a marker the broker keeps, and on disk by the stream's retention.
//! - SQS: shard = a group of rooms (one FIFO message group of the intake; whoever holds it stamps
//!   the group's sequence numbers, commits each batch to S3 and copies it into every node's FIFO
//!   queue), position = that sequence number, timestamp = the stamping node's clock made
//!   monotonic per group; head = a marker per group through the intake, answered by the stamper;
//!   trimmed by deleting S3 history objects (SQS itself keeps nothing to trim).

pub mod fault;
pub mod limits;
mod options;
mod url;

#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqs")]
pub mod sqs;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use limits::{APPEND_BATCH_BYTES_MAX, APPEND_BATCH_RECORDS_MAX, RECORD_BYTES_MAX};
pub use options::{OptionError, parse_duration_ms};
pub use url::{BackendUrl, open, redact};

/// Checks a batch against the limits every backend shares, counting `overhead_per_record_bytes`
/// for each record's framing; returns the batch's bytes.
///
/// # Errors
/// [`LogError::Rejected`] naming the limit that the batch breaks.
pub fn check_batch(batch: &[Append], overhead_per_record_bytes: usize) -> Result<usize, LogError> {
    if batch.len() > APPEND_BATCH_RECORDS_MAX {
        return Err(LogError::Rejected(format!(
            "batch of {} records exceeds APPEND_BATCH_RECORDS_MAX ({APPEND_BATCH_RECORDS_MAX})",
            batch.len()
        )));
    }
    let mut batch_bytes = 0;
    for (index, append) in batch.iter().enumerate() {
        if append.payload.len() > RECORD_BYTES_MAX {
            return Err(LogError::Rejected(format!(
                "record {index} of the batch (room {}) has {} bytes, more than RECORD_BYTES_MAX \
                 ({RECORD_BYTES_MAX})",
                append.room,
                append.payload.len()
            )));
        }
        batch_bytes += overhead_per_record_bytes + append.payload.len();
    }
    if batch_bytes > APPEND_BATCH_BYTES_MAX {
        return Err(LogError::Rejected(format!(
            "batch of {batch_bytes} bytes exceeds APPEND_BATCH_BYTES_MAX ({APPEND_BATCH_BYTES_MAX})"
        )));
    }
    Ok(batch_bytes)
}

/// Checks a snapshot against the shared limits.
///
/// # Errors
/// [`LogError::Rejected`] for a snapshot larger than [`limits::SNAPSHOT_BYTES_MAX`] or with an
/// empty room name.
pub fn check_snapshot(snapshot: &Snapshot) -> Result<(), LogError> {
    if snapshot.bytes.len() > limits::SNAPSHOT_BYTES_MAX {
        return Err(LogError::Rejected(format!(
            "snapshot of room {} has {} bytes, more than SNAPSHOT_BYTES_MAX ({})",
            snapshot.room,
            snapshot.bytes.len(),
            limits::SNAPSHOT_BYTES_MAX
        )));
    }
    if snapshot.room.is_empty() {
        return Err(LogError::Rejected("a snapshot names no room".to_owned()));
    }
    Ok(())
}

/// Name of one independently ordered sequence of a log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub Arc<str>);

impl ShardId {
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Place of an entry in its shard. Strictly increasing along a shard; never compared across
/// shards. Wide enough for every backend's native position (a Redis stream id is two u64s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position(pub u128);

/// One record as the log delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub shard: ShardId,
    pub position: Position,
    /// Milliseconds since the Unix epoch, assigned by whoever ordered the shard.
    pub timestamp_ms: u64,
    /// The encoded record (`waitroom_core::Record::encode`). Opaque to the log.
    pub payload: Bytes,
}

/// One record to append. `room` picks the shard (and, for brokers, the key/partition/stream);
/// the payload is opaque to the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    pub room: Arc<str>,
    pub payload: Bytes,
}

/// A room's state as of a position of its shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub room: Arc<str>,
    /// The shard holding the room's records.
    pub shard: ShardId,
    /// Position (in `shard`) of the last record of the room that the snapshot includes: a node
    /// that restores it applies the room's entries after this position only.
    pub position: Position,
    /// The encoded room (`waitroom_core::Room::encode_snapshot`), opaque to the log. Empty for a
    /// **tombstone**: where rooms share a shard, a room that was forgotten leaves one, so that a
    /// node replaying the shard skips the room's old entries (see [`Log::forget_room`]).
    pub bytes: Bytes,
}

impl Snapshot {
    pub fn is_tombstone(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn info(&self) -> SnapshotInfo {
        SnapshotInfo {
            room: Arc::clone(&self.room),
            shard: self.shard.clone(),
            position: self.position,
            bytes: self.bytes.len() as u64,
        }
    }
}

/// What a snapshot store says of a snapshot without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub room: Arc<str>,
    pub shard: ShardId,
    pub position: Position,
    /// Size of the encoded room (0 for a tombstone).
    pub bytes: u64,
}

/// Per shard, the position of the last entry already seen. A subscription from a checkpoint
/// delivers, per shard, only entries after it; shards it does not name start from their
/// beginning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint(pub BTreeMap<ShardId, Position>);

impl Checkpoint {
    /// The beginning of every shard.
    pub fn start() -> Self {
        Self::default()
    }

    pub fn get(&self, shard: &ShardId) -> Option<Position> {
        self.0.get(shard).copied()
    }

    /// Records `position` as seen in `shard` (positions only move forward).
    pub fn advance(&mut self, shard: &ShardId, position: Position) {
        match self.0.get_mut(shard) {
            Some(seen) if *seen >= position => {}
            Some(seen) => *seen = position,
            None => {
                self.0.insert(shard.clone(), position);
            }
        }
    }

    /// True when this checkpoint has seen everything `head` names.
    pub fn covers(&self, head: &Checkpoint) -> bool {
        head.0
            .iter()
            .all(|(shard, position)| self.get(shard).is_some_and(|seen| seen >= *position))
    }
}

/// What a subscription delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Entries in log order within each shard. A backend delivers them in batches so the applier
    /// can apply many records per lock.
    Entries(Vec<Entry>),
    /// Everything that was in the log when the subscription started (or last reconnected) has
    /// been delivered: the node may turn ready.
    CaughtUp,
    /// The backend cannot be reached; the subscription keeps retrying (with backoff) and will
    /// deliver `CaughtUp` again once it has caught up after reconnecting.
    Unavailable(String),
    /// Entries of `shard` up to and including `through`, which this subscription had not
    /// delivered, are gone (trimmed while it was behind, or before it started from a checkpoint
    /// below them). Entries delivered next for the shard come after `through`. Every room with
    /// entries up to `through` has a snapshot at or past it (that is what allowed the trim), so
    /// the subscriber restores the shard's rooms that are behind `through` from their snapshots.
    Trimmed { shard: ShardId, through: Position },
    /// The backend lost entries that this subscription had delivered: the broker came back empty
    /// (restarted with no persistence, its data wiped) or without its latest writes. Each shard
    /// named now ends at its position (`None`: it holds nothing this subscription can place
    /// against what it delivered, e.g. the broker lost everything). Entries delivered next for
    /// such a shard are those after that position, and theirs may be at or below positions
    /// delivered before: the subscriber must not skip them as already seen. A node rebuilds the
    /// shards' rooms from their snapshots at or before the new ends (or from nothing) and
    /// subscribes again without those shards in its checkpoint. One event names every shard a
    /// (re)connection found gone back, so the subscriber can handle them at once.
    Regressed {
        shards: Vec<(ShardId, Option<Position>)>,
    },
}

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The backend cannot be reached now; retrying later may succeed.
    #[error("log backend unavailable: {0}")]
    Unavailable(String),
    /// Stored data is damaged beyond what recovery may silently drop.
    #[error("log data is corrupt: {0}")]
    Corrupt(String),
    /// A request the backend refuses (too large, bad name, ...).
    #[error("log rejected the request: {0}")]
    Rejected(String),
    #[error("log I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// An ordered, durable, at-least-once log of room records, with a store of room snapshots. See
/// the crate documentation.
#[async_trait]
pub trait Log: Send + Sync + 'static {
    /// Appends `batch` durably: once this returns `Ok`, every record of the batch will be
    /// delivered to every subscription, records of one room in batch order, even if this process
    /// crashes right after. On `Err`, none or some of the records may have been appended (each
    /// record carries a unique id, so retrying the whole batch is safe).
    async fn append(&self, batch: Vec<Append>) -> Result<(), LogError>;

    /// Delivers every entry after `from`, then every entry appended later, until the stream is
    /// dropped. Transient backend failures are reported as [`Event::Unavailable`] and retried by
    /// the backend itself; the stream ends only on an error it cannot recover from.
    async fn subscribe(
        &self,
        from: Checkpoint,
    ) -> Result<BoxStream<'static, Result<Event, LogError>>, LogError>;

    /// The position of the last entry of every shard that holds any, now. A node that has applied
    /// up to a checkpoint covering this head has seen every record appended before the call.
    async fn head(&self) -> Result<Checkpoint, LogError>;

    /// Drops a room's history where the backend keeps rooms apart (a closed room whose retention
    /// has passed), but only if `last` (the position of the last entry the caller applied for the
    /// room) is still its newest entry: a record appended meanwhile (the room created again) keeps
    /// the history and the room, and the answer is `false`. Backends whose shards hold many rooms
    /// store a tombstone instead (a [`Snapshot`] with no bytes at `last`, unless the store holds a
    /// newer snapshot of the room), so that a node replaying the shard skips the room's entries
    /// up to `last`, and answer `true`; the tombstone goes once the shard is trimmed past it.
    async fn forget_room(&self, room: &str, last: Position) -> Result<bool, LogError>;

    /// Stores `snapshot` unless the store already holds one of the room at the same or a later
    /// position; answers whether it was stored. Durable once `Ok(true)`.
    async fn store_snapshot(&self, snapshot: Snapshot) -> Result<bool, LogError>;

    /// The newest snapshot of `room`, if any (tombstones included).
    async fn load_snapshot(&self, room: &str) -> Result<Option<Snapshot>, LogError>;

    /// What the store holds of `room`, without reading the snapshot's bytes: a node about to
    /// take a snapshot asks whether another node just stored a newer one.
    async fn snapshot_info(&self, room: &str) -> Result<Option<SnapshotInfo>, LogError>;

    /// What the store holds of every room (one per room, the newest; tombstones included).
    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, LogError>;

    /// Says that no reader needs the entries of `shard` up to and including `through` any more:
    /// every room with entries there has a snapshot at or past `through`. `through` is the
    /// position of an entry of the shard (a reader later subscribes from it, as from a
    /// checkpoint); a backend whose positions are not dense (the file log's byte offsets) rejects
    /// any other position. The backend remembers
    /// `through` durably (see [`Log::trimmed`]), drops tombstones at or before it, and drops the
    /// entries — all of them or, at its own granularity, some; none that it keeps for audit
    /// (`keep-history`), none that a live reader of the shard has not read yet where it can tell.
    async fn trim(&self, shard: &ShardId, through: Position) -> Result<(), LogError>;

    /// Per shard, the newest `through` given to [`Log::trim`]. A node starting from snapshots
    /// subscribes from here: nothing at or before it is needed by any room.
    async fn trimmed(&self) -> Result<Checkpoint, LogError>;

    /// A short description for logs and `/metrics` (never includes secrets).
    fn describe(&self) -> String;

    /// How many `append` calls a writer should run at once on this log (1 to
    /// [`limits::APPENDS_IN_FLIGHT_MAX`]): fewer calls in flight make each batch larger. Every
    /// backend takes [`limits::APPENDS_IN_FLIGHT_MAX`] except where a measurement said otherwise.
    fn appends_in_flight(&self) -> usize {
        limits::APPENDS_IN_FLIGHT_MAX
    }

    /// The requests this log made so far that its provider bills per request, by kind (SQS and
    /// S3: `sqs_send`, `s3_put`, …; see the sqs module), for `/metrics`. Empty for backends
    /// that bill by server, not by request.
    fn billed_requests(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Releases what the backend holds for this node (SQS: its own queue), called once by a node
    /// that stops cleanly, while its runtime still runs: dropping the log does it too, but a log
    /// dropped as the runtime shuts down can no longer send a request. Nothing is appended or read
    /// through the log after. Does nothing for most backends.
    async fn close(&self) {}
}
