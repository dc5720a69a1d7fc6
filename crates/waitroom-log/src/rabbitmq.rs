//! The RabbitMQ streams log: every room's records in one stream, read by every node from its own
//! offsets over RabbitMQ's native stream protocol; each room's snapshots in a stream of its own.
//!
//! # Connecting
//! The backend URL is `rabbitmq-stream://[user:password@]host[:port][/vhost][?options]`: the
//! stream protocol's port (5552 unless given; the `rabbitmq_stream` plugin must be enabled),
//! user and password (`guest:guest` unless given; RabbitMQ lets `guest` in from loopback only),
//! the vhost percent-encoded (`/` unless given; `%2F` is `/` too). Options, the convention of
//! every backend (unknown ones are refused; the password never appears in [`Log::describe`],
//! errors or logs):
//! - `prefix` (default [`PREFIX_DEFAULT`]): the first part of every stream name, so several
//!   fleets (or test runs) share one vhost. `[A-Za-z0-9_-]`, at most [`NAME_BYTES_MAX`] bytes.
//! - `max-age` (default [`MAX_AGE_DEFAULT_MS`], 24 hours, or `keep-history` if longer),
//!   `max-bytes` (default none) and `segment-bytes` (default [`SEGMENT_BYTES_DEFAULT`]): the log
//!   stream's retention (`x-max-age`, `x-max-length-bytes`, `x-stream-max-segment-size-bytes`),
//!   set when this log creates the stream. An existing stream keeps what it was created with; a
//!   RabbitMQ policy can change it (see "What bounds the data").
//! - `keep-history` (default `0`): trimmed history younger than this stays readable; refused
//!   when longer than `max-age`.
//!
//! Why the stream protocol and not AMQP 0.9.1 stream queues (`lapin`): only the stream protocol
//! hands the consumer the broker's chunk timestamp, which is the log's clock (checked on 3.10.8:
//! an AMQP delivery from a stream carries its offset, `x-stream-offset`, and no time; and a passive
//! `queue.declare` of a stream answers 0 messages, so it tells nothing of the head either); its
//! publisher confirms and credit-based reads are also what the log needs, with less overhead. Why this
//! crate speaks it itself rather than through `rabbitmq-stream-client`: see `rabbitmq/protocol.rs`
//! (the current client cannot connect to RabbitMQ 3.10).
//!
//! # Streams
//! - `{prefix}.log`: every room's records. One stream rather than one per room: a stream is a
//!   process group and a set of files on the broker (thousands of rooms would be thousands of
//!   those), the stream protocol cannot list streams (so nodes would need a registry to find new
//!   rooms), and `head()` reads one stream's end instead of every room's. The price: one stream's
//!   write rate is the whole fleet's (measured in `bench/rabbitmq.sh`), and rooms share a shard,
//!   so a forgotten room leaves a tombstone (see "Snapshots").
//! - `{prefix}.rooms`: the registry of rooms that have a snapshot stream (events "added" and
//!   "removed"), read whole by `list_snapshots`.
//! - `{prefix}.trims`: the trim marker (see "Trimming").
//! - `{prefix}.snapshots.{room}`: the room's snapshots.
//!
//! Every message is an AMQP 1.0 message with one data section holding an envelope (see
//! `rabbitmq/message.rs`): a record carries its room's name and the record's bytes.
//!
//! # Positions and time
//! The shard of every entry is the log stream's name; its [`Position`] is its stream offset
//! (assigned by RabbitMQ, consecutive: this log writes no deduplication or offset-tracking data to
//! the log stream, which would occupy offsets). Its timestamp is the timestamp of the chunk that
//! holds it, the broker's clock when it wrote the chunk, made monotonic per room:
//! `max(chunk timestamp, the room's previous entry's time)` within a subscription. Per room, not
//! per stream: a room's state machine keeps its own clock (`now = max(now, record time)`) in its
//! snapshot, so every node reaches the same time for the same records whichever position it
//! started reading from, while a per-stream maximum would carry one room's time into another
//! differently on nodes that started at different positions. The two only differ when the
//! broker's clock goes back (a restart with the clock stepped back, a leader moving to a node
//! whose clock is behind).
//!
//! # Appending
//! One connection per log carries the appends of all its tasks: a batch is checked against the
//! limits ([`RECORD_BYTES_MAX`], [`APPEND_BATCH_RECORDS_MAX`], [`APPEND_BATCH_BYTES_MAX`],
//! [`ROOM_NAME_BYTES_MAX`]), split into publish frames no larger than the agreed frame size (1 MiB
//! by default), sent in order, and acknowledged once RabbitMQ confirmed every record (publisher
//! confirms). A room's records therefore keep the batch's order; batches of concurrent appends
//! interleave. On an error some records of the batch may have been appended, which the [`Log`]
//! contract allows (records carry unique ids; retrying is safe). A closed connection is opened
//! again by the next append.
//!
//! # head()
//! RabbitMQ 3.10 has no query for a stream's last offset (the stream protocol's `StreamStats`
//! came in 3.11). What is exact: a subscription from the offset specification `last` starts with
//! the stream's last chunk as of the subscribe, and every confirmed record is in that chunk or
//! before it. So `head()` reads that chunk and takes the offset of its last record. If that
//! chunk holds no record (only markers, below), it reads the chunk before it, and so on (at most
//! [`HEAD_STEPS_BACK_MAX`] chunks), until it finds a record or the stream's start (then the log
//! has no entry and the head names no shard). An empty stream would never answer `last`, so a
//! log, when it opens, writes a marker (a message subscriptions skip) to the log and registry
//! streams: a stream is never empty once a log has opened. Markers are written only then, so
//! runs of marker-only chunks are short.
//!
//! # Reading
//! Each subscription has its own connection. It starts (and, after an outage, starts again)
//! by reading the head as above (its catch-up target), then subscribes from the offset after its
//! position with a credit of [`SUBSCRIBE_CREDIT_CHUNKS`] chunks, granting one more each time a
//! chunk's entries were handed on. Chunks arrive in offset order; entries at or below the position
//! are skipped (a chunk is delivered whole), markers are skipped, anything else that is not a
//! record ends the subscription with [`LogError::Corrupt`].
//!
//! [`Event::CaughtUp`] follows once the position reached the catch-up target (at once if it was
//! there already). A checkpoint past the stream's last record (taken on other data, or the broker
//! lost confirmed records) is [`LogError::Rejected`] on subscribe. On a reconnect, the
//! subscription first creates the log, registry and trim-marker streams if they are gone (a
//! broker that came back with an empty data dir; the opening marker goes to those it created),
//! and a stream that ends before what it delivered is [`Event::Regressed`]: it goes on after
//! the stream's new end.
//!
//! When the connection fails (RabbitMQ restarting, a network cut, no heartbeat for
//! [`SILENCE_MAX`]) or the stream is deleted or moves, the subscription emits
//! [`Event::Unavailable`], waits (backoff with jitter between [`RECONNECT_DELAY_MIN`] and
//! [`RECONNECT_DELAY_MAX`], retrying for as long as the subscription lives), reconnects and goes
//! on from its last delivered offset: nothing is skipped, nothing is delivered twice (a node must
//! still not rely on the latter: the [`Log`] contract is at-least-once). Then `CaughtUp` again.
//!
//! # Snapshots
//! A room's snapshot is written to its snapshot stream as pieces of [`SNAPSHOT_PIECE_BYTES`]
//! followed by a manifest (position, size, CRC32C, number of pieces), all through a publisher
//! named for deduplication with publishing ids `position << 24 | attempt << 16 | piece` (the
//! manifest last): RabbitMQ drops a message whose id is not above the last one it kept, so the
//! stream's manifests come in increasing position, the newest is the last one, and a manifest the
//! broker kept has all its pieces before it (a message of a newer attempt in between would have
//! made it drop the manifest). Storing reads the newest manifest first and refuses a snapshot that
//! is not newer (`Ok(false)`); after the confirms it reads the newest again: its own manifest means
//! stored, a newer one means not stored (`Ok(false)`), an older one means a store of a newer
//! position is under way or was abandoned (a crash), which the broker's deduplication makes win,
//! so this one is refused with `Unavailable` and the node tries again later. Loading reads the
//! last chunk of the snapshot stream (stepping back over pieces of an attempt that has no manifest
//! yet), then the pieces before the manifest, and checks size and CRC. Snapshots larger than
//! [`SNAPSHOT_BYTES_MAX`] are refused (the room is then not snapshotted and its history not
//! trimmed). A snapshot is durable once its messages are confirmed.
//!
//! `forget_room` stores a tombstone (a manifest without pieces) at the room's last position,
//! unless a newer snapshot is held, and answers `true`: the stream is shared, so the room's
//! entries stay and nodes skip them up to the tombstone. Once the log is trimmed past the
//! tombstone, the room's snapshot stream is deleted and the registry says so. One window remains:
//! a room created again, whose first snapshot is stored between that check and the deletion,
//! loses that snapshot (the node then replays the room from the trim marker, and reports records
//! it cannot find as lost).
//!
//! # Trimming
//! RabbitMQ cannot cut a stream at an offset: streams shed history by retention, whole segments
//! at a time, by age (`max-age`) or size (`max-bytes`). So [`Log::trim`] records the position (the
//! trim marker) and every subscription that starts below it is told [`Event::Trimmed`] and goes
//! on after it, while the entries stay on disk until retention removes their segment. The marker
//! is kept by the broker itself: `trim` publishes to `{prefix}.trims` through a publisher named for
//! deduplication with publishing id `position + 1`, and [`Log::trimmed`] asks the broker for that
//! publisher's last id (a small, exact query; RabbitMQ keeps it across its own retention and
//! restarts, and drops a lower one, so the marker never goes back).
//!
//! A subscription also checks the first chunk it gets after (re)subscribing: one that starts past
//! the offset asked for means retention removed entries it had not read, and it says so with
//! `Trimmed` through the offset before that chunk.
//!
//! # What bounds the data; what an operator configures
//! The log stream holds what retention keeps: by default 24 hours (`max-age`), in segments of 64
//! MiB. Retention runs when a segment fills, and never removes the segment being written. It must
//! keep longer than any room waits for a snapshot (every node takes one at least every
//! `--snapshot-every-ms` after a room changed), else a node that restarts finds a room's history
//! gone where its snapshot does not reach (it says so loudly and counts the room as diverged).
//! `max-bytes` bounds the disk instead, with the same risk if too small for the write rate.
//! Each room's snapshot stream keeps [`SNAPSHOT_STREAM_BYTES`] (four of the largest snapshots),
//! in segments of [`SNAPSHOT_SEGMENT_BYTES`]; a forgotten room's goes entirely. The registry holds
//! at most [`ROOMS_MAX`] rooms; the trim-marker stream [`TRIMS_STREAM_BYTES`].
//!
//! # Durability
//! A publish is confirmed once the chunk is written on the stream's leader and, for a replicated
//! stream (on a RabbitMQ cluster a stream has replicas on other nodes), on a majority of its
//! replicas. RabbitMQ streams do not fsync each chunk: they count on
//! replication. So a crash of the RabbitMQ *process* (or `kill -9`) loses nothing confirmed (the
//! chunks are in the OS's page cache); a power loss of a single-node broker can lose the latest
//! confirmed records (joins that got a 2xx), and nodes that had applied them then disagree with
//! nodes replaying without them. Run a three-node RabbitMQ cluster where that matters: a confirmed
//! record is then on two machines.

mod appending;
mod message;
mod protocol;
mod raw;
mod reading;
mod settings;
mod snapshots;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures::stream::BoxStream;

use self::protocol::Connection;
pub use self::raw::{
    RAW_OUTSTANDING_MAX, RAW_SUBSCRIBERS_MAX, confirmed_publish_rate, round_trip_rate,
};
pub use self::settings::*;
pub use crate::{APPEND_BATCH_BYTES_MAX, APPEND_BATCH_RECORDS_MAX, RECORD_BYTES_MAX};
use crate::{Append, Checkpoint, Event, Log, LogError, Position, ShardId, Snapshot, SnapshotInfo};

/// How to reach RabbitMQ, and the names this log uses there.
pub(crate) struct Shared {
    settings: Settings,
    names: Names,
    /// The log stream as a shard.
    shard: ShardId,
    description: String,
}

/// The connection appends use, with its publisher on the log stream.
struct Appender {
    conn: Arc<Connection>,
    publisher: u8,
    /// The next publishing id (the publisher is not named: ids only match confirms).
    next_id: AtomicU64,
}

/// The RabbitMQ streams [`Log`]. See the module documentation.
pub struct RabbitMqLog {
    shared: Arc<Shared>,
    appender: tokio::sync::Mutex<Option<Arc<Appender>>>,
    /// Head, snapshots, registry and trims.
    store: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// Rooms this log put in the registry (re-registered after a restart of the log).
    registered: Mutex<HashSet<Arc<str>>>,
    /// Tombstones this log stored or saw, to delete once the log is trimmed past them.
    tombstones: Mutex<HashMap<Arc<str>, u64>>,
}

/// A random number (std's per-process random hash keys, advanced at every call): enough for
/// attempt numbers, markers and backoff jitter, which need no cryptographic strength.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher, RandomState};
    use std::sync::atomic::Ordering;
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

impl RabbitMqLog {
    /// Connects to the RabbitMQ named by `url` (see the module documentation), creates the
    /// streams that are missing and writes the opening markers.
    ///
    /// # Errors
    /// - [`LogError::Rejected`] for a URL that does not parse, unknown options, refused
    ///   credentials or stream arguments.
    /// - [`LogError::Unavailable`] when RabbitMQ cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, LogError> {
        let settings = Settings::parse(url)?;
        let names = Names::new(&settings.prefix);
        let description = format!("{} (prefix {})", settings.shown, settings.prefix);
        let log = Self {
            shared: Arc::new(Shared {
                shard: ShardId::new(names.log.as_str()),
                settings,
                names,
                description,
            }),
            appender: tokio::sync::Mutex::new(None),
            store: tokio::sync::Mutex::new(None),
            registered: Mutex::new(HashSet::new()),
            tombstones: Mutex::new(HashMap::new()),
        };
        log.create_streams().await?;
        Ok(log)
    }

    /// The log stream's name (the shard of every entry).
    pub fn log_stream(&self) -> &str {
        &self.shared.names.log
    }

    /// A room's snapshot stream.
    pub fn snapshot_stream(&self, room: &str) -> String {
        self.shared.names.snapshots(room)
    }

    /// The connection for head, snapshots, registry and trims, opened again if it closed.
    async fn store_connection(&self) -> Result<Arc<Connection>, LogError> {
        let mut store = self.store.lock().await;
        if let Some(conn) = store.as_ref()
            && conn.closed().is_none()
        {
            return Ok(Arc::clone(conn));
        }
        let conn = Arc::new(Connection::open(&self.shared.settings, "waitroom store").await?);
        *store = Some(Arc::clone(&conn));
        Ok(conn)
    }

    fn registered(&self) -> MutexGuard<'_, HashSet<Arc<str>>> {
        // Single insertions and removals only: a poisoned lock is still consistent.
        self.registered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn tombstones(&self) -> MutexGuard<'_, HashMap<Arc<str>, u64>> {
        self.tombstones
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Log for RabbitMqLog {
    async fn append(&self, batch: Vec<Append>) -> Result<(), LogError> {
        self.append_batch(batch).await
    }

    async fn subscribe(
        &self,
        from: Checkpoint,
    ) -> Result<BoxStream<'static, Result<Event, LogError>>, LogError> {
        self.subscribe_from(from).await
    }

    /// The offset of the log stream's last record (see "head()" in the module documentation).
    async fn head(&self) -> Result<Checkpoint, LogError> {
        let conn = self.store_connection().await?;
        let mut head = Checkpoint::start();
        if let Some(last) = reading::last_record(&conn, &self.shared.names.log).await? {
            head.advance(&self.shared.shard, Position(u128::from(last)));
        }
        Ok(head)
    }

    async fn forget_room(&self, room: &str, last: Position) -> Result<bool, LogError> {
        self.forget(room, last).await
    }

    async fn store_snapshot(&self, snapshot: Snapshot) -> Result<bool, LogError> {
        self.store(snapshot).await
    }

    async fn load_snapshot(&self, room: &str) -> Result<Option<Snapshot>, LogError> {
        self.load(room).await
    }

    async fn snapshot_info(&self, room: &str) -> Result<Option<SnapshotInfo>, LogError> {
        self.info(room).await
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, LogError> {
        self.list().await
    }

    async fn trim(&self, shard: &ShardId, through: Position) -> Result<(), LogError> {
        self.trim_log(shard, through).await
    }

    async fn trimmed(&self) -> Result<Checkpoint, LogError> {
        self.trim_marker().await
    }

    fn describe(&self) -> String {
        self.shared.description.clone()
    }

    /// One: RabbitMQ makes a chunk of each publish frame that arrives on its own, and every chunk
    /// costs the broker and each subscriber a delivery and a credit. With one append in flight
    /// the node's batches grow with the load (about 20 records at 64 concurrent joins instead of
    /// 5 with four in flight), and joins through one node doubled on 2 cores (bench/rabbitmq.sh:
    /// about 21 000/s against about 10 500/s, measured alternately, 2 runs each).
    fn appends_in_flight(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests;
