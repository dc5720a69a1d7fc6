//! The ordered log every node appends to and applies from.
//!
//! # Layout
//! - [`Log`]: the one trait every backend implements (append a batch durably, subscribe from a
//!   checkpoint, read the head for read-after-write barriers).
//! - `memory`: an in-process log for tests and benchmarks.
//! - `file`: the embedded, durable single-node log (segment files, CRC-framed records).
//! - `redis`: Redis Streams, one stream per room (feature `redis`).
//! - `conformance`: the scenarios every backend must pass, written once (feature
//!   `test-support`).
//!
//! # The model
//! A log is made of independent **shards**, each a totally ordered sequence of entries: the one
//! file of the embedded log, a Redis stream (one per room), a Kafka partition, a RabbitMQ stream,
//! a node's SQS queue. Every record of one room lives in exactly one shard, so a room's records
//! have a total order; records of different shards have none. Each entry carries its
//! [`Position`] in its shard (strictly increasing along the shard) and a timestamp assigned by
//! whoever orders the shard (the broker where it assigns one), which becomes the room's clock.
//!
//! Delivery is at-least-once: a subscription may deliver an entry again after a reconnect. The
//! node skips entries at or below the position it already applied, and the state machine
//! deduplicates records by id, so redelivery is harmless.
//!
//! # Checking the trait against every backend
//! - embedded file: one shard (`"file"`), position = byte offset, timestamp = the writer's clock
//!   made monotonic; head = end of the last durable frame.
//! - Redis Streams: shard = room stream key, position = stream id (`ms << 64 | seq`), timestamp =
//!   the id's milliseconds; head = `XINFO STREAM` last-generated-id per room stream.
//! - Kafka: shard = partition, position = offset, timestamp = `LogAppendTime`; head = high
//!   watermark − 1 per partition.
//! - RabbitMQ streams: shard = stream, position = offset, timestamp = chunk timestamp; head = the
//!   stream's last committed offset.
//! - SQS: shard = room (the node's FIFO queue carries per-room sequence numbers stamped by the
//!   holder of the room's message group), position = that sequence number, timestamp = stamped
//!   time; head = the intake's sequence counter kept with the room's snapshot.

#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
pub mod file;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// Largest payload of one record, in bytes, in every backend: records are commands, far smaller
/// than this (at most 256 KiB by `waitroom_core`'s own limit); the bound keeps every record inside
/// what any backend accepts and bounds the memory a reader needs for one record.
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;

/// Most records in one `append` batch, in every backend: bounds the time one batch holds a writer
/// (the file log's writer thread, a Redis pipeline, the memory log's lock).
pub const APPEND_BATCH_RECORDS_MAX: usize = 4096;

/// Most bytes in one `append` batch (payloads plus each backend's per-record overhead): bounds
/// the memory one batch takes in a writer's queue or a pipeline's buffers.
pub const APPEND_BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;

const _: () = assert!(RECORD_BYTES_MAX <= APPEND_BATCH_BYTES_MAX);

/// Checks a batch against the limits above, counting `overhead_per_record_bytes` for each
/// record's framing; returns the batch's bytes.
pub(crate) fn check_batch(
    batch: &[Append],
    overhead_per_record_bytes: usize,
) -> Result<usize, LogError> {
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

/// An ordered, durable, at-least-once log of room records. See the module documentation.
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
    /// the history and the room, and the answer is `false`. Backends that share a shard between
    /// rooms do nothing and answer `true`.
    async fn forget_room(&self, _room: &str, _last: Position) -> Result<bool, LogError> {
        Ok(true)
    }

    /// A short description for logs and `/metrics` (never includes secrets).
    fn describe(&self) -> String;
}
