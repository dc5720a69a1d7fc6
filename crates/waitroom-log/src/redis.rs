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
//! Options go in the query string, e.g. `redis://10.0.0.5:6379/0?prefix=tickets&node=web-1`
//! (the convention of every backend):
//! - `prefix` (default [`PREFIX_DEFAULT`]): the first part of every key, so several fleets (or
//!   test runs) can share one Redis. `[A-Za-z0-9._-]`, at most [`NAME_BYTES_MAX`] bytes.
//! - `node`: this node's name, used as the name of its consumer groups, so `XINFO GROUPS` on a
//!   room's stream shows each node's lag. Same characters and length as `prefix`. It must be
//!   unique among the running nodes of a fleet (two readers in one group would split the entries
//!   between them). Default: a name generated for each opened log, `{hostname}-{pid}-{random}`;
//!   set a stable name (the pod or host name) in production so a restarted node reuses its groups.
//! - `keep-history` (default `0`): trimmed history younger than this (e.g. `24h`) stays in the
//!   streams, for audit.
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
//! - `prefix:{room}:snapshot`: a hash with the room's newest snapshot and its trim markers (see
//!   `redis/snapshots.rs`).
//!
//! The braces are Redis Cluster hash tags: a room's stream and snapshot hash by the room's name,
//! so each room lives in one slot and rooms spread over the cluster; the two registry keys hash by the prefix,
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
//! Once a room's snapshot is stored, its stream is trimmed (`XTRIM MINID`) up to the snapshot's
//! position (see `redis/snapshots.rs`), so a live room's stream holds what was appended since
//! its last snapshot or two, plus what a lagging node has not read yet, plus what
//! `keep-history` keeps. Once a room is closed and its retention has passed, every node drops it
//! and [`Log::forget_room`] removes it from the registry and deletes its stream and snapshot
//! (`UNLINK`), unless a record was appended to it meanwhile (the room created again). The
//! registry holds at most [`ROOMS_MAX`] rooms; the events stream is trimmed (approximately) to
//! [`ROOM_EVENTS_MAX`] entries, which is safe because a (re)starting subscription reads the
//! registry itself.
//!
//! A subscription learns that entries it had not read were trimmed from the room's `deleted`
//! marker, which it reads whenever it (re)starts, and whenever it could not read for
//! [`READ_STALL_RESYNC`]: it then says [`Event::Trimmed`] and goes on after the marker. A live
//! subscription is never trimmed under: trimming keeps what any consumer group that read within
//! [`GROUP_IDLE_MAX`] has not been delivered.
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
//! whatever the fsync policy.
//!
//! # When Redis loses data
//! A running subscription notices at its next (re)setup, which a Redis restart forces: the key
//! `{prefix}:epoch` holds a random value the first subscription to find it missing sets (`SET
//! NX`); a subscription that finds another value (or sets a new one) than it saw before knows
//! Redis lost everything, and a stream that ends before the id it delivered lost its latest
//! entries (trimming always keeps a stream's last entry). It says [`crate::Event::Regressed`]
//! for those streams, reads them again from the start, and makes this log's appends register
//! their rooms again (the registry went too). An empty or missing stream under an unchanged
//! epoch is only a warning: a room forgotten and created again looks the same. Run `appendonly yes` with `appendfsync always` where a lost join
//! matters; `everysec` is a deliberate trade of up to a second of joins for write throughput.

mod appending;
mod connection;
mod reading;
mod settings;
mod snapshots;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use futures::stream::BoxStream;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;

use self::connection::{Client, Conn, Shared, install_crypto_provider, unavailable};
use self::reading::last_ids;
pub use self::settings::*;
pub use crate::{APPEND_BATCH_BYTES_MAX, APPEND_BATCH_RECORDS_MAX, RECORD_BYTES_MAX};
use crate::{Append, Checkpoint, Log, LogError, Position, ShardId, Snapshot, SnapshotInfo};

/// The Redis Streams [`Log`]. See the module documentation.
pub struct RedisLog {
    shared: Arc<Shared>,
    /// Appends, `head`, `forget_room`.
    commands: Conn,
    /// Rooms this log registered, and when.
    registered: Mutex<HashMap<Arc<str>, Instant>>,
    /// `Shared::data_lost` when `registered` was last valid: a newer count empties it.
    registered_since_loss: AtomicU64,
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
                keep_history_ms: settings.keep_history_ms,
                description,
                data_lost: AtomicU64::new(0),
            }),
            commands,
            registered: Mutex::new(HashMap::new()),
            registered_since_loss: AtomicU64::new(0),
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

    fn forget_registration(&self, room: &str) {
        self.registered().remove(room);
    }

    fn registered(&self) -> MutexGuard<'_, HashMap<Arc<str>, Instant>> {
        // The map is only a cache of what Redis holds: whatever state a panicking holder left
        // is still a valid cache, so a poisoned lock is used as is.
        let mut registered = self
            .registered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Redis lost its data (a subscription found out): the registry it held is gone, and a
        // room not registered again would have its new records read by nobody.
        let lost = self.shared.data_lost.load(Ordering::Acquire);
        if self.registered_since_loss.swap(lost, Ordering::AcqRel) != lost {
            registered.clear();
        }
        registered
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
        self.append_batch(batch).await
    }

    /// # Errors
    /// - [`LogError::Rejected`] when `from` names a position past the last entry of a room's
    ///   stream (a checkpoint taken on other data, or Redis lost acknowledged entries).
    /// - [`LogError::Unavailable`] when Redis cannot be reached to start the subscription.
    async fn subscribe(
        &self,
        from: Checkpoint,
    ) -> Result<BoxStream<'static, Result<crate::Event, LogError>>, LogError> {
        self.subscribe_from(from).await
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
        self.trim_stream(shard, through).await
    }

    async fn trimmed(&self) -> Result<Checkpoint, LogError> {
        self.trim_markers().await
    }

    fn describe(&self) -> String {
        self.shared.description.clone()
    }
}

#[cfg(test)]
mod tests;
