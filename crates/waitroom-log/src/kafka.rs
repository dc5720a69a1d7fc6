//! The Kafka log: one topic whose partitions are the shards, rooms keyed to partitions, every
//! node reading every partition from its own positions; snapshots and trim markers in a
//! compacted topic beside it.
//!
//! # Connecting
//! The backend URL is `kafka://host:port[,host:port…][?options]` (port 9092 unless given); the
//! hosts are the bootstrap brokers. Options, in the query string as for every backend:
//! - `topic` (default [`TOPIC_DEFAULT`]): the log topic. Snapshots and trim markers go to
//!   `<topic>.snapshots`. `[A-Za-z0-9._-]`, at most [`TOPIC_NAME_BYTES_MAX`] bytes.
//! - `partitions` (default [`PARTITIONS_DEFAULT`], at most [`PARTITIONS_MAX`]) and
//!   `replication-factor` (default: the brokers' `default.replication.factor`): used only when
//!   waitroom creates the log topic. An existing topic keeps its own; its partition count is
//!   recorded in the snapshot topic the first time, and a log whose topic has a different count
//!   later is refused (rooms would move to other partitions and lose their order). Never add
//!   partitions to the log topic.
//! - `create-topics` (default `true`): create missing topics at connect (`false` where the
//!   client may not create topics; then create them as below).
//! - `node`: this node's name. When set, each subscription commits the positions it delivered to
//!   the consumer group of that name every [`COMMIT_INTERVAL`], so the brokers' tools
//!   (`kafka-consumer-groups.sh --describe --group <node>`) show each node's lag. Unique per
//!   running node; set a stable one (the pod or host name). Without it, nothing is committed.
//! - `keep-history` (default `0`): trimmed history younger than this (e.g. `24h`) stays in the
//!   topic, for audit.
//! - `delete-records` (default `true`): trimming deletes records with `DeleteRecords`. `false`
//!   for Kafka-compatible brokers without it: trimming then only moves the markers (subscriptions
//!   behave as if the records were deleted) and the topic's size is left to its retention.
//! - `properties=<path>`: a file of librdkafka client properties (`name=value` lines, `#`
//!   comments), e.g. `security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`,
//!   `ssl.ca.location`. Keep secrets there rather than in the URL.
//! - any other option is a librdkafka client property, passed to every client (producer,
//!   consumers, admin), e.g. `?topic=tickets&linger.ms=5&compression.type=lz4`. librdkafka
//!   refuses names it does not know, so a typo fails at connect. Properties the log's guarantees
//!   rest on are set by waitroom and refused here: `enable.idempotence` (true), `acks` (all),
//!   `group.id` (the node), `enable.auto.commit` (false), `auto.offset.reset` (error),
//!   `enable.partition.eof` (true), `bootstrap.servers` (the URL's hosts). Defaults waitroom
//!   chooses unless a property says otherwise: `linger.ms` [`LINGER_MS`], `message.timeout.ms`
//!   [`DELIVERY_TIMEOUT_MS`], `fetch.wait.max.ms` [`FETCH_WAIT_MAX_MS`],
//!   `queued.max.messages.kbytes` [`PREFETCH_KBYTES_MAX`], `queue.buffering.max.messages`
//!   [`PRODUCE_QUEUE_RECORDS_MAX`].
//!
//! [`Log::describe`] names the brokers, the topic, the node and the names of the properties,
//! never their values.
//!
//! # Topics
//! Created at connect when missing (`create-topics`):
//! - the log topic: `partitions` partitions, `message.timestamp.type=LogAppendTime`,
//!   `retention.ms=-1` and `retention.bytes=-1` (waitroom trims it itself; a time-based
//!   retention would delete history that rooms without a snapshot still need: a topic found with
//!   one is reported at connect);
//! - `<topic>.snapshots`: one partition, `cleanup.policy=compact`.
//!
//! # Mapping the Log trait onto Kafka
//! - A shard is a partition of the log topic ([`ShardId`] `<topic>/<partition>`); a position is
//!   the record's offset. A partition holds many rooms.
//! - A room's records all go to partition `murmur2(room) mod partitions` (what Kafka's default
//!   partitioner picks for the room as key), keyed by the room, so a room has one total order and
//!   Kafka's tools find a room's records by key. The producer sets the partition itself, so the
//!   rule does not depend on the client's partitioner setting.
//! - `append`: every record of the batch is handed to librdkafka's idempotent producer
//!   (`enable.idempotence=true`, `acks=all`) in batch order under one lock, and the append
//!   returns once every record is acknowledged. The idempotent producer keeps a partition's
//!   records in the order they were handed over, even across retries, and writes a retried send
//!   once. An error leaves some records of the batch written and others not, which the trait
//!   allows (records carry unique ids).
//! - `subscribe`: every subscription is a consumer of its own, assigned every partition by hand
//!   (no group membership, no rebalancing), starting after its checkpoint's offset. Manual
//!   assignment because the positions a node reads from are its own checkpoints (from its
//!   snapshots, or after a reconnect), never a group's committed offsets, and because every node
//!   must read every partition, which a shared group would split between nodes. Lag still shows
//!   in the brokers' tools: a named node commits what it delivered to its own group (`node`).
//! - `head()`: the high watermark − 1 of every partition that has records (one `ListOffsets`
//!   request for all partitions).
//! - Snapshots, trim markers, tombstones: records of the snapshot topic (`kafka/snapshots.rs`).
//! - `trim`: a durable marker, then `DeleteRecords` below the first record to keep.
//!
//! # Time
//! A record's timestamp is the one Kafka stores with it, the same for every node that reads it:
//! - the broker's `LogAppendTime` where the topic has `message.timestamp.type=LogAppendTime`
//!   (set by waitroom when it creates the topic) and the broker applies it (Apache Kafka does);
//! - otherwise the producer's `CreateTime` (tansu keeps the producer's time even on a topic set
//!   to `LogAppendTime`). A log stamps every record of a batch with its own clock, made monotonic
//!   (`max(now, last stamped)`) and handed to the producer under the same lock, so the records of
//!   one node never go back in time along a partition.
//!
//! Why no running maximum per partition in the reader: nodes start reading a partition at
//! different offsets (each from its own snapshot, or after a reconnect), so a maximum over what
//! each one read would differ between nodes, and so would the rooms' clocks. The time is made
//! monotonic per room by the room's state machine instead (`now = max(now, record time)`, its
//! clock being part of its snapshot): every node derives the same clock from the same records.
//!
//! What clock skew between nodes does under `CreateTime`: records of a node whose clock is
//! ahead by `d` move the clock of every room they are appended to ahead by up to `d`, at once;
//! timeouts and the admission rate then act up to `d` early, and records from the other nodes are
//! applied at that advanced time until their clocks catch up. A node whose clock is behind
//! changes nothing (its records are applied at the room's clock). Along a partition, timestamps
//! of different nodes interleave and can go back by the skew: the per-shard monotonic time of
//! the [`Log`] contract holds per node, and per room through the state machine. Keep the
//! nodes' clocks synchronised (NTP); under `LogAppendTime` only the brokers' clocks count.
//!
//! # Durability
//! `append` returns once the partition's leader has the record and every in-sync replica
//! acknowledged it (`acks=all`). What a broker crash loses then depends on the topic:
//! - replication factor ≥ 3 with `min.insync.replicas=2`: nothing acknowledged is lost when
//!   one broker fails, even before it flushed (the replicas have it);
//! - replication factor 1: Kafka acknowledges before fsync (`log.flush.interval.messages` is
//!   unlimited by default), so a crash of the broker's machine (not just the process) loses what
//!   the OS had not written; set `flush.messages=1` on the topic to fsync each write batch;
//! - a broker that keeps nothing on disk (tansu with memory storage) loses everything when it
//!   stops. A subscription that finds a partition shorter than what it already delivered, or the
//!   topic gone, says so ([`crate::Event::Regressed`], so that the node counts it) and fails
//!   with [`LogError::Corrupt`] instead of going on, and the store refuses to serve a snapshot
//!   index that went back: the nodes stop serving (unready), loudly, until restarted.
//!
//! # What bounds the topics
//! Once a room's snapshot is stored, its partition is trimmed through the lowest position any of
//! its rooms still needs (the node decides, see `Log::trim`): `DeleteRecords` drops the records
//! before it (minus `keep-history`). A partition therefore holds what its rooms appended since
//! their last snapshots, plus what `keep-history` keeps. A subscription of a node that fell
//! behind a trim is told with [`crate::Event::Trimmed`] (its next fetch finds the offset gone, or
//! it finds the markers past its position when it reconnects), and the node restores the
//! partition's rooms from their snapshots. The snapshot topic is compacted: it holds the newest
//! snapshot of each room (older ones are deleted with Kafka tombstones when a newer one is
//! stored), one trim marker per partition and the layout record.
//!
//! # Limits
//! A record is at most [`RECORD_BYTES_MAX`] bytes, and a Kafka message of this log at most
//! [`MESSAGE_BYTES_MAX`] (snapshots are chunked by [`SNAPSHOT_CHUNK_BYTES`]); rooms are named
//! with `[A-Za-z0-9._-]`, at most [`ROOM_NAME_BYTES_MAX`] bytes; the snapshot index holds at
//! most [`SNAPSHOT_ROOMS_MAX`] rooms. Waits are bounded: [`COMMAND_TIMEOUT`],
//! [`DELIVERY_TIMEOUT_MS`], [`ENQUEUE_WAIT`], [`SNAPSHOT_SYNC_WAIT`].

mod connection;
mod reading;
mod settings;
mod snapshots;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use async_trait::async_trait;
use futures::stream::BoxStream;

use self::connection::Shared;
pub use self::settings::*;
pub use crate::{APPEND_BATCH_BYTES_MAX, APPEND_BATCH_RECORDS_MAX, RECORD_BYTES_MAX};
use crate::{Append, Checkpoint, Event, Log, LogError, Position, ShardId, Snapshot, SnapshotInfo};

/// The Kafka [`Log`]. See the module documentation.
pub struct KafkaLog {
    shared: Arc<Shared>,
    /// The last time stamped on a record (ms), held while a batch is stamped and handed to the
    /// producer, so a node's records are stamped in the order they are written.
    stamping: tokio::sync::Mutex<u64>,
    /// Numbers this log's subscriptions (for logs).
    subscriptions: AtomicU64,
}

impl KafkaLog {
    /// Connects to the brokers named by `url` (see the module documentation for the format),
    /// creates the topics if they are missing, and reads the snapshot topic.
    ///
    /// # Errors
    /// - [`LogError::Rejected`] for a URL that does not parse, unknown options or client
    ///   properties, topics that cannot be used (a partition count that changed, too many
    ///   partitions), or missing topics with `create-topics=false`.
    /// - [`LogError::Unavailable`] when the brokers cannot be reached.
    /// - [`LogError::Corrupt`] when the snapshot topic holds records this log cannot read.
    pub async fn connect(url: &str) -> Result<Self, LogError> {
        let settings = Settings::parse(url)?;
        let shared = Shared::connect(settings).await?;
        Ok(Self {
            shared,
            stamping: tokio::sync::Mutex::new(0),
            subscriptions: AtomicU64::new(0),
        })
    }

    /// The log topic's partitions.
    pub fn partitions(&self) -> i32 {
        self.shared.partitions
    }

    /// The shard (partition) that holds `room`'s records.
    pub fn shard_of(&self, room: &str) -> ShardId {
        self.shared
            .shard(partition_of(room, self.shared.partitions))
    }

    /// This node's name: the consumer group its subscriptions commit to, if configured.
    pub fn node(&self) -> &str {
        &self.shared.node
    }
}

#[async_trait]
impl Log for KafkaLog {
    /// # Errors
    /// - [`LogError::Rejected`] when the batch breaks a limit ([`APPEND_BATCH_RECORDS_MAX`],
    ///   [`RECORD_BYTES_MAX`], [`APPEND_BATCH_BYTES_MAX`], a room name); nothing is appended.
    /// - [`LogError::Unavailable`] when the brokers did not acknowledge every record within
    ///   [`DELIVERY_TIMEOUT_MS`]; some records may have been appended.
    /// - [`LogError::Corrupt`] when this log found the brokers lost its records.
    async fn append(&self, batch: Vec<Append>) -> Result<(), LogError> {
        self.append_batch(batch).await
    }

    /// # Errors
    /// - [`LogError::Rejected`] when `from` names a position past a partition's end (a checkpoint
    ///   taken on other data, or the brokers lost acknowledged records).
    /// - [`LogError::Unavailable`] when the brokers cannot be reached to start.
    async fn subscribe(
        &self,
        from: Checkpoint,
    ) -> Result<BoxStream<'static, Result<Event, LogError>>, LogError> {
        let number = self
            .subscriptions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        reading::subscribe(Arc::clone(&self.shared), from, number).await
    }

    async fn head(&self) -> Result<Checkpoint, LogError> {
        self.shared.check_intact()?;
        let high = self.shared.watermarks(rdkafka::Offset::End).await?;
        let mut head = Checkpoint::start();
        for (partition, high) in high.into_iter().enumerate() {
            if high > 0 {
                head.advance(
                    &self.shared.shard(partition as i32),
                    Position((high - 1) as u128),
                );
            }
        }
        Ok(head)
    }

    async fn forget_room(&self, room: &str, last: Position) -> Result<bool, LogError> {
        self.shared.forget(room, last).await
    }

    async fn store_snapshot(&self, snapshot: Snapshot) -> Result<bool, LogError> {
        self.shared.store(snapshot).await
    }

    async fn load_snapshot(&self, room: &str) -> Result<Option<Snapshot>, LogError> {
        self.shared.load(room).await
    }

    async fn snapshot_info(&self, room: &str) -> Result<Option<SnapshotInfo>, LogError> {
        self.shared.info(room).await
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, LogError> {
        self.shared.list().await
    }

    async fn trim(&self, shard: &ShardId, through: Position) -> Result<(), LogError> {
        self.shared.trim(shard, through).await
    }

    async fn trimmed(&self) -> Result<Checkpoint, LogError> {
        self.shared.trim_markers().await
    }

    fn describe(&self) -> String {
        self.shared.description.clone()
    }
}

#[cfg(test)]
mod tests;
