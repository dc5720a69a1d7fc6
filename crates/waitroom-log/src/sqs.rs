//! The SQS log: FIFO queues put the records in order, S3 keeps that order (the history) and the
//! rooms' snapshots, and every node reads it through a queue of its own.
//!
//! SQS keeps no history and has no ordered fan-out. So the order is made by whoever holds a FIFO
//! message group, and written down in S3, where a node that starts late, one that missed a copy,
//! or a subscription from an old checkpoint reads it.
//!
//! # Connecting
//! `sqs://[key-id:secret@]?bucket=<bucket>&region=<region>&…` (no host: the endpoint is AWS's
//! unless `endpoint=` says otherwise). Options, the convention of every backend:
//! - `bucket` (required): the S3 bucket of the history and the snapshots. It must exist.
//! - `region`: the AWS region; default from the standard chain (`AWS_REGION`, the shared
//!   config file).
//! - `endpoint`: another SQS and S3 endpoint (a local `moto_server`, a VPC endpoint), e.g.
//!   `http://127.0.0.1:5000`; S3 is then addressed path-style.
//! - `prefix` (default [`PREFIX_DEFAULT`]): the first part of every queue name and S3 key, so
//!   several fleets (or test runs) share an account and a bucket. `[A-Za-z0-9_]`, at most
//!   [`PREFIX_BYTES_MAX`] bytes.
//! - `groups` (default [`GROUPS_DEFAULT`], at most [`GROUPS_MAX`]): how many message groups
//!   (shards) the rooms are spread over; fixed for the life of a prefix (the first node records it
//!   in S3, and a node with another value refuses to start).
//! - `node`: this node's name, in its queue's name (`{prefix}-node-{node}-{incarnation}.fifo`,
//!   the incarnation being random for each opened log, because SQS refuses to create a queue
//!   under the name of one deleted less than 60 s ago, which a restarted node would hit).
//!   `[A-Za-z0-9_-]`, at most [`NODE_BYTES_MAX`] bytes; default `{hostname}-{pid}`. Set the
//!   pod or host name so the queues say whose they are.
//! - `visibility-timeout` (default 30s, from 2s to 15m, whole seconds): how long the node that
//!   received a group's batch from the intake holds it (see "Exactly once"); a node killed while
//!   stamping delays that group by this much.
//! - `reap-after` (default 15m): the queue of a node that has not shown itself for this long is
//!   deleted (see "Node queues").
//! - `receive-wait` (default 20s, whole seconds from 0s to 20s): the long-poll wait of intake
//!   receives. `0s` short-polls (pausing [`SHORT_POLL_IDLE`] after an empty answer), which costs
//!   far more requests; only for servers whose long polls break message-group order (moto).
//! - `keep-history` (default `0`): trimmed history younger than this stays in S3, for audit.
//!
//! Credentials come from the AWS SDK's standard chain: environment variables, the shared
//! credentials and config files (static keys, assumed roles, `credential_process`), web identity
//! (EKS service accounts), container credentials (ECS, EKS Pod Identity) and EC2 instance
//! metadata. SSO sessions are not built in (the SDK's `sso` feature is left out for build time):
//! resolve them to a credentials process. Static credentials in the URL's user info are for tests
//! and local servers; they never appear in [`Log::describe`], in errors or in logs.
//!
//! # Names
//! - `{prefix}-intake.fifo`: the intake, one FIFO queue for every room, message group `g{n}` for
//!   group n, content-based deduplication.
//! - `{prefix}-node-{node}-{incarnation}.fifo`: one FIFO queue per running node, found by name
//!   prefix (`ListQueues`), tagged `waitroom-seen-ms` with when its node last showed itself.
//! - S3, under `{prefix}/`: `log/g{n}/{k}` the history objects of group n, `snapshots/{room}/{k}`
//!   the snapshots (and tombstones), `trim/g{n}/{k}` the trim markers, `groups` the number of
//!   groups, where `{k}` is a position written so that newer ones list first (`u64::MAX -
//!   position`, 20 digits).
//!
//! # Mapping the Log trait: a group is a shard
//! A room belongs to group `fnv1a(room) % groups`. Each group is a shard (named
//! `{prefix}/log/g{n}`), like a Kafka partition holding many rooms; its positions are the group's
//! sequence numbers 1, 2, 3, … and an entry's timestamp is the time the stamping node gave its
//! batch (its clock, never earlier than the group's previous batch: monotonic per group).
//!
//! Why groups rather than one message group per room (the first sketch of this design): an
//! append carries records of many rooms, and the intake then gets one message per group instead
//! of one per room; a stamped batch is one S3 commit per group instead of one per room; `head()`
//! costs one marker per group whatever the number of rooms, and needs no registry of rooms. A
//! group's rooms share its order, so a busy room delays the others of its group by the batches
//! ahead of them (raise `groups` to spread them).
//!
//! # Appending: the intake
//! `append` packs each group's records, in order, into intake messages of at most
//! [`INTAKE_MESSAGE_RAW_BYTES_MAX`] (base64, since SQS bodies are text) and sends them with
//! `SendMessageBatch` (10 at most per request), message group = the group. SQS's content-based
//! deduplication (the SHA-256 of the body, which holds records with unique ids) drops a batch
//! retried within 5 minutes. Once SQS acknowledged it, the batch is durable (SQS stores messages
//! redundantly before answering). `append` then waits (at most [`APPEND_COMMIT_WAIT`]) until this
//! node's queue brings the stamped copies: that keeps the intake as short as the appends in
//! flight, so no group waits behind a backlog (and moto, whose requests cost time in proportion
//! to a queue's length, keeps up).
//!
//! # Sequencing: stamping and copying
//! Every node receives from the intake. SQS hands a message group to one receiver at a time, in
//! order (competing consumers), and only after everything before it was deleted. The node that
//! receives a group's batch (up to 10 messages):
//! 1. lists the group's newest history object in S3 (`ListObjectsV2 MaxKeys=1`, then reads it
//!    unless this node already has it): that is the group's last sequence number and time;
//! 2. stamps the batch's records with the next sequence numbers and one time, and writes them as
//!    one history object with `PutObject If-None-Match: *` under the key of its first sequence
//!    number (this is the commit);
//! 3. copies it, in order, into every node queue (its own first), in chunks of at most
//!    [`COPY_CHUNK_RAW_BYTES_MAX`], deduplication id `g{n}:{first}`; answers the batch's `head()`
//!    markers, to the asker's queue;
//! 4. deletes the batch from the intake.
//!
//! The groups of one receive are stamped concurrently, and their copies, answers and deletes
//! share requests.
//!
//! # Exactly once
//! A batch may be received twice: its node was killed before deleting it (halfway through
//! copying, say), or took longer than the visibility timeout. The core's deduplication of record
//! ids is bounded (15 minutes, a million ids) and is not what keeps a record from getting two
//! sequence numbers. What does:
//! - While a group's batch is undeleted, SQS hands out nothing after it in that group, so no
//!   history object of the group can be written but one holding that batch: every holder of the
//!   batch sees the same newest object in step 1 and writes at the same key in step 2, and
//!   `If-None-Match` lets exactly one of them succeed.
//! - Each history object lists the intake message ids of the received batch. A node that
//!   receives a batch whose first message is in the newest object knows that part was stamped
//!   already: it copies that object again (the same sequence numbers, so node queues drop it by
//!   deduplication id, or readers by position) and stamps only the rest.
//! - A node works on a batch only until a quarter of the visibility timeout is left: past that,
//!   another node may hold it, and the newest object it lists might already hold part of it
//!   under a later key. A node that runs out of time leaves the batch to be received again. A
//!   node that lost the race to write (412) does the same.
//! - Copies may be late, lost or repeated: readers place records by sequence number only.
//!
//! What a crash leaves at each step: before the commit, nothing (the batch is received again
//! after the visibility timeout); after the commit, a history object that some node queues have
//! and others not: the next holder copies it again (the copier killed halfway: another node
//! finishes it, as the fleet test shows); after copying, a batch still in the intake, copied
//! again harmlessly.
//!
//! # Reading
//! Each opened log has a queue of its own, created when it opens, and a pump that long-polls it,
//! keeps the newest entries of every group in memory (at most [`CACHE_BYTES_MAX`] bytes), and
//! deletes what it read. A subscription delivers each group's entries after its position from
//! that memory, and from the S3 history where the memory does not reach (an old checkpoint, a
//! log opened late, a copy that never came). Nothing is ever taken from a queue that S3 does not
//! hold, so a reader never depends on its queue having been there.
//!
//! A queue created while batches are being copied may miss them: a copier uses a list of node
//! queues at most [`QUEUE_LIST_REFRESH`] old. So a new queue receives every batch committed more
//! than [`QUEUE_LIST_REFRESH`] after it was created, and a subscription says `CaughtUp` only once
//! that time (plus [`QUEUE_LIST_MARGIN`]) has passed and it has read from S3 everything committed
//! up to then (so a node turns ready only when nothing can reach it through S3 alone). Every
//! [`SYNC_INTERVAL`] the log asks for the head of every group: an answer past what its queue
//! brought says that a copy was missed (a copy that failed, a queue created anew after it was
//! reaped), and subscriptions read it from S3. A gap inside a group (a copy missing before later
//! ones) is read from S3 the same way.
//!
//! # head() and CaughtUp
//! `head()` sends a marker through the intake to every group; the node that stamps a group's
//! batch answers each marker with the group's last sequence number once everything before the
//! marker is committed. So the head covers every record appended before the call, including
//! records still waiting in the intake. It costs a send per 10 groups, and a stamping round's
//! wait. A subscription asks for the head when it starts (and after an outage), delivers every
//! group up to it, and then says [`Event::CaughtUp`].
//!
//! When SQS or S3 fails, the subscription says [`Event::Unavailable`], retries with backoff and,
//! once it works again, catches up from the positions it delivered (no gap, no duplicate) and
//! says `CaughtUp` again.
//!
//! # Snapshots, tombstones and trimming
//! A snapshot is an S3 object under the key of its position: storing lists the room's newest
//! one and writes only if it is older (`If-None-Match` for the same position), then deletes the
//! older ones; with racing stores the newest stays newest, since positions order the keys.
//! A group holds many rooms, so `forget_room` leaves a tombstone (a snapshot without bytes at
//! `last`, unless a newer snapshot is held) and answers `true`. `trim(group, through)` writes the
//! trim marker and deletes the history objects that end at or before `through` (never the
//! group's newest object: it carries the group's sequence on; none younger than
//! `keep-history`), and the tombstones at or before it. `trimmed()` lists the markers: a starting
//! node restores the rooms from their snapshots and reads the history from there. A subscription
//! that finds history it needs gone says [`Event::Trimmed`]. SQS itself has nothing to trim: a
//! queue's message is deleted once read.
//!
//! # Node queues
//! A node's queue is created when its log opens and deleted when the log is dropped (a clean
//! shutdown). A node killed with `kill -9` leaves its queue; every node re-tags its own queue
//! every quarter of `reap-after`, and deletes the queues whose tag is older than `reap-after`.
//! Until then copies go on being sent to the dead node's queue (a request per batch).
//!
//! # What bounds the data
//! The history of a group holds what was stamped since its rooms' oldest snapshot, plus what
//! `keep-history` keeps; snapshots are taken often enough (every `snapshot-every-records` or
//! `snapshot-every-ms`) that it stays small. The intake holds what the nodes' appends have in
//! flight (an append waits for its commit; SQS keeps a message at most 14 days); a node queue
//! what its node has not read yet. Limits of SQS tie to the shared ones by compile-time
//! assertions (`sqs/settings.rs`): a record of [`RECORD_BYTES_MAX`] (256 KiB) fits one intake
//! message and one copy, both within SQS's 1 MiB ([`SQS_MESSAGE_BYTES_MAX`], raised from 256 KiB
//! in August 2025: a 256 KiB record would not have fitted a 256 KiB message with any framing).
//!
//! # Durability
//! An append is acknowledged once SQS stored it in the intake; a history object or snapshot once
//! S3 stored it. Both store redundantly across availability zones before answering: a crash of
//! any node loses nothing acknowledged. What a crash of a node costs is time: a group whose batch
//! it held waits up to the visibility timeout.
//!
//! # What you pay
//! Every node long-polls the intake and its own queue: an idle node makes about 6 SQS requests a
//! minute, plus its head sync (a marker per group) every minute. A stamped batch costs, besides
//! the appends that brought it (a `SendMessageBatch` per 10 messages), one receive and one delete
//! on the intake, an S3 list and put (and a get when the previous batch was stamped elsewhere), a
//! send per node queue, and on each node a receive and a delete. Batches grow with load, so the
//! cost per record falls. `bench/sqs.sh` measures it against moto; [`SqsLog::requests`] counts
//! one log's requests by kind.
//!
//! # moto
//! The tests run against `moto_server` (the test kit's `moto` launcher). Where moto 5.2.5 differs
//! from AWS: it returns no `SequenceNumber` (this backend never uses it); deleting a message with
//! a stale receipt handle succeeds silently (AWS fails or ignores it; this backend ignores the
//! answer either way); a long poll notes which message groups are in flight when it starts and
//! may hand out a later message of a group another receiver took while it waited, breaking the
//! group's order (so the tests short-poll the intake, `receive-wait=0s`); every send and receive
//! costs time in proportion to the queue's length; it keeps everything in memory, so a restarted
//! moto is empty (the fleet test does not restart it). Nothing here uses SNS FIFO fan-out, which
//! moto delivers to subscribed queues out of order.

mod clients;
mod format;
mod history;
mod intake;
mod reading;
mod reaping;
mod settings;
mod snapshots;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

pub use self::clients::Request;
use self::clients::{Clients, random_u64, unavailable};
use self::history::Store;
use self::intake::Newest;
use self::reading::{Cache, Committed};
use self::reaping::QueueList;
pub use self::settings::{
    APPEND_COMMIT_WAIT, CACHE_BYTES_MAX, COPY_CHUNK_RAW_BYTES_MAX, GROUPS_DEFAULT, GROUPS_MAX,
    INTAKE_MESSAGE_RAW_BYTES_MAX, NODE_BYTES_MAX, PREFIX_BYTES_MAX, PREFIX_DEFAULT,
    QUEUE_LIST_MARGIN, QUEUE_LIST_REFRESH, REQUESTS_REPORT_INTERVAL, ROOM_NAME_BYTES_MAX,
    SHORT_POLL_IDLE, SNAPSHOT_BYTES_MAX, SQS_MESSAGE_BYTES_MAX, SYNC_INTERVAL,
    VISIBILITY_TIMEOUT_DEFAULT,
};
use self::settings::{Names, Settings, generated_node_name, group_of};
pub use crate::{APPEND_BATCH_BYTES_MAX, APPEND_BATCH_RECORDS_MAX, RECORD_BYTES_MAX};
use crate::{Append, Checkpoint, Event, Log, LogError, Position, ShardId, Snapshot, SnapshotInfo};

/// Locks `mutex`. Every mutex here guards a cache or a list whose every state is valid (each
/// update is a single assignment, insert or removal), so a poisoned lock is used as is.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What one opened log shares with its tasks and subscriptions.
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) settings: Settings,
    pub(crate) node: String,
    pub(crate) own_queue_name: String,
    pub(crate) own_queue_url: String,
    /// Set when SQS said this node's queue does not exist (it was reaped): the pump creates it
    /// again.
    pub(crate) own_queue_missing: AtomicBool,
    /// Set once this node's queue was deleted (or its deletion started) on the way out.
    pub(crate) closed: AtomicBool,
    pub(crate) intake_url: String,
    pub(crate) description: String,
    /// The node queues batches are copied to.
    pub(crate) queues: Mutex<QueueList>,
    /// The newest entries of each group, as the pump read them.
    pub(crate) cache: Mutex<Cache>,
    /// Intake messages whose copies the pump read lately.
    pub(crate) committed: Mutex<Committed>,
    /// Bumped whenever the cache or the pump's state changes: subscriptions wait on it.
    pub(crate) changes: watch::Sender<u64>,
    /// Why the pump cannot read this node's queue, while it cannot.
    pub(crate) pump_failure: Mutex<Option<String>>,
    /// Markers waiting for their answers (a group's last sequence number), by id.
    pub(crate) waiters: Mutex<HashMap<u64, oneshot::Sender<u64>>>,
    /// The newest history object of each group that this node knows (it wrote or read it, or its
    /// queue brought a copy of it), so stamping reads it only when it did not.
    pub(crate) newest: Mutex<HashMap<u32, Newest>>,
    /// Wakes the sync task (this node's queue was created anew).
    pub(crate) resync: Notify,
    /// When this node's queue is on every copier's list (created, or created anew, plus
    /// [`QUEUE_LIST_REFRESH`] and [`QUEUE_LIST_MARGIN`]).
    pub(crate) listed_from: Mutex<tokio::time::Instant>,
    /// Taken by the stamping loop that receives from the intake.
    pub(crate) intake_turn: tokio::sync::Mutex<()>,
}

impl Shared {
    /// Tells subscriptions something changed.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|version| *version += 1);
    }

    /// The requests made so far, `kind=count …`.
    pub(crate) fn requests_made(&self) -> String {
        let requests: Vec<String> = self
            .store
            .clients
            .counters
            .snapshot()
            .into_iter()
            .map(|(kind, count)| format!("{}={count}", kind.name()))
            .collect();
        requests.join(" ")
    }

    /// The shard of group `group`.
    pub(crate) fn shard(&self, group: u32) -> ShardId {
        ShardId::new(self.store.names.shard(group))
    }

    /// The shard of `room`'s group.
    pub(crate) fn room_shard(&self, room: &str) -> ShardId {
        self.shard(group_of(room, self.settings.groups))
    }
}

/// The SQS [`Log`]. See the module documentation.
pub struct SqsLog {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl SqsLog {
    /// Connects to SQS and S3 as the URL says (see the module documentation), creates the intake
    /// (if it does not exist) and this node's queue, and starts reading and stamping.
    ///
    /// # Errors
    /// - [`LogError::Rejected`] for a URL that does not parse or has unknown options, a region
    ///   that cannot be found, or a bucket that does not exist.
    /// - [`LogError::Unavailable`] when SQS or S3 cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, LogError> {
        let settings = Settings::parse(url)?;
        let clients = Arc::new(Clients::new(&settings).await?);
        // HeadBucket: billed like a GET.
        clients.counters.count(Request::S3Get);
        if let Err(error) = clients
            .s3
            .head_bucket()
            .bucket(&settings.bucket)
            .send()
            .await
        {
            if error
                .as_service_error()
                .is_some_and(|service| service.is_not_found())
            {
                return Err(LogError::Rejected(format!(
                    "the S3 bucket {} does not exist (create it first)",
                    settings.bucket
                )));
            }
            return Err(unavailable(
                &format!("checking the S3 bucket {}", settings.bucket),
                &error,
            ));
        }
        let names = Arc::new(Names::new(&settings.prefix));
        let store = Store {
            clients: Arc::clone(&clients),
            names: Arc::clone(&names),
        };
        check_groups(&store, settings.groups).await?;
        let intake_url = reaping::create_intake(&clients, &names.intake).await?;
        let (node, generated) = match &settings.node {
            Some(node) => (node.clone(), false),
            None => (generated_node_name(), true),
        };
        let own_queue_name = names.node_queue(&node, random_u64() as u32);
        let own_queue_url = reaping::create_node_queue(&clients, &own_queue_name).await?;
        let description = format!(
            "{} (node {node}{})",
            settings.shown(),
            if generated { ", generated" } else { "" }
        );
        let shared = Arc::new(Shared {
            store,
            settings,
            node,
            own_queue_name,
            own_queue_url,
            own_queue_missing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            intake_url,
            description,
            queues: Mutex::new(QueueList::default()),
            cache: Mutex::new(Cache::default()),
            committed: Mutex::new(Committed::default()),
            changes: watch::Sender::new(0),
            pump_failure: Mutex::new(None),
            waiters: Mutex::new(HashMap::new()),
            newest: Mutex::new(HashMap::new()),
            resync: Notify::new(),
            intake_turn: tokio::sync::Mutex::new(()),
            listed_from: Mutex::new(
                tokio::time::Instant::now() + QUEUE_LIST_REFRESH + QUEUE_LIST_MARGIN,
            ),
        });
        let mut tasks = vec![
            tokio::spawn(reading::pump(Arc::clone(&shared))),
            tokio::spawn(reading::sync(Arc::clone(&shared))),
            tokio::spawn(reaping::run(Arc::clone(&shared))),
            tokio::spawn(report(Arc::clone(&shared))),
        ];
        for _ in 0..settings::INTAKE_RECEIVERS {
            tasks.push(tokio::spawn(intake::stamp(Arc::clone(&shared))));
        }
        tracing::info!(log = %shared.description, queue = %shared.own_queue_name, "opened the SQS log");
        Ok(Self { shared, tasks })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// The name of this node's queue.
    pub fn queue_name(&self) -> &str {
        &self.shared.own_queue_name
    }

    /// The shard of `room` (its group's).
    pub fn room_shard(&self, room: &str) -> ShardId {
        self.shared.room_shard(room)
    }

    /// The SQS and S3 requests this log made so far, by kind (what AWS bills).
    pub fn requests(&self) -> BTreeMap<Request, u64> {
        self.shared.store.clients.counters.snapshot()
    }
}

/// Says in the log, every [`REQUESTS_REPORT_INTERVAL`] in which any were made, how many SQS and
/// S3 requests this log made so far (what AWS bills; `bench/sqs.sh` reads it too).
async fn report(shared: Arc<Shared>) {
    let mut last = String::new();
    loop {
        tokio::time::sleep(REQUESTS_REPORT_INTERVAL).await;
        let now = shared.requests_made();
        if now != last {
            tracing::info!(log = %shared.description, requests = %now, "SQS and S3 requests this log made");
            last = now;
        }
    }
}

/// Records the prefix's number of groups in S3 the first time, and refuses another: rooms map to
/// groups by it, so a node with another count would put a room's records in another order.
async fn check_groups(store: &Store, groups: u32) -> Result<(), LogError> {
    let key = store.names.groups_key();
    store
        .put(&key, Bytes::from(groups.to_string()), true)
        .await?;
    let held = store.get(&key).await?.ok_or_else(|| {
        LogError::Unavailable(format!("S3 object {key} went away after it was written"))
    })?;
    if held.as_ref() == groups.to_string().as_bytes() {
        Ok(())
    } else {
        Err(LogError::Rejected(format!(
            "this prefix was started with groups={}, not {groups}: every node of a prefix \
             must use the same groups (or use another prefix)",
            String::from_utf8_lossy(&held)
        )))
    }
}

impl Shared {
    /// The way out, once: says how many requests this log made and deletes this node's queue
    /// (within [`settings::REQUEST_TIMEOUT`]; a queue left behind is reaped later).
    async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(log = %self.description, requests = %self.requests_made(), "SQS and S3 requests this log made");
        match tokio::time::timeout(settings::REQUEST_TIMEOUT, self.delete_own_queue()).await {
            Ok(Ok(())) => tracing::info!(queue = %self.own_queue_name, "deleted this node's queue"),
            Ok(Err(error)) => {
                tracing::warn!(queue = %self.own_queue_name, %error, "could not delete this node's queue: it is reaped later")
            }
            Err(_) => {
                tracing::warn!(queue = %self.own_queue_name, "deleting this node's queue timed out: it is reaped later")
            }
        }
    }
}

impl Drop for SqsLog {
    /// Stops reading and stamping and, unless [`Log::close`] did already, deletes this node's
    /// queue: on the runtime, waiting for it where the runtime allows blocking. The wait ends as
    /// soon as the task is gone, because a log dropped while its runtime shuts down (whose timers
    /// and sockets are gone) must not hang the process: its queue is then reaped later.
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if self.shared.closed.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            // No runtime: nothing can send the request; the queue is reaped later.
            return;
        };
        let shared = Arc::clone(&self.shared);
        let (done, finished) = std::sync::mpsc::channel::<()>();
        handle.spawn(async move {
            shared.close().await;
            drop(done);
        });
        if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            // Returns when the task ends, or is dropped unrun by a runtime shutting down.
            tokio::task::block_in_place(|| {
                let _ = finished.recv_timeout(settings::REQUEST_TIMEOUT * 2);
            });
        }
    }
}

#[async_trait]
impl Log for SqsLog {
    /// Sends the batch to the intake, one message group per group of rooms.
    ///
    /// # Errors
    /// - [`LogError::Rejected`] when the batch breaks a limit ([`APPEND_BATCH_RECORDS_MAX`],
    ///   [`RECORD_BYTES_MAX`], [`APPEND_BATCH_BYTES_MAX`], [`ROOM_NAME_BYTES_MAX`]) or names a
    ///   room with characters an S3 key cannot hold safely; nothing is appended then.
    /// - [`LogError::Unavailable`] when SQS or S3 fails; some records may have been appended.
    async fn append(&self, batch: Vec<Append>) -> Result<(), LogError> {
        intake::append(&self.shared, batch).await
    }

    /// # Errors
    /// - [`LogError::Rejected`] when `from` names a position past a room's last one (a
    ///   checkpoint taken on other data).
    /// - [`LogError::Unavailable`] when the head cannot be read to start the subscription.
    async fn subscribe(
        &self,
        from: Checkpoint,
    ) -> Result<BoxStream<'static, Result<Event, LogError>>, LogError> {
        reading::subscribe(Arc::clone(&self.shared), from).await
    }

    /// A marker through the intake to every group (see "head() and CaughtUp").
    async fn head(&self) -> Result<Checkpoint, LogError> {
        let ends = reading::head(&self.shared).await?;
        let mut head = Checkpoint::start();
        for (group, end) in ends {
            if end > 0 {
                head.advance(&self.shared.shard(group), Position(u128::from(end)));
            }
        }
        Ok(head)
    }

    /// A group holds many rooms: leaves a tombstone (see "Snapshots and trimming").
    async fn forget_room(&self, room: &str, last: Position) -> Result<bool, LogError> {
        snapshots::forget(&self.shared, room, last).await
    }

    async fn store_snapshot(&self, snapshot: Snapshot) -> Result<bool, LogError> {
        snapshots::store(&self.shared, snapshot).await
    }

    async fn load_snapshot(&self, room: &str) -> Result<Option<Snapshot>, LogError> {
        snapshots::load(&self.shared, room).await
    }

    async fn snapshot_info(&self, room: &str) -> Result<Option<SnapshotInfo>, LogError> {
        snapshots::info(&self.shared, room).await
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, LogError> {
        snapshots::list(&self.shared).await
    }

    async fn trim(&self, shard: &ShardId, through: Position) -> Result<(), LogError> {
        snapshots::trim(&self.shared, shard, through).await
    }

    async fn trimmed(&self) -> Result<Checkpoint, LogError> {
        snapshots::trimmed(&self.shared).await
    }

    fn describe(&self) -> String {
        self.shared.description.clone()
    }

    fn billed_requests(&self) -> Vec<(&'static str, u64)> {
        self.requests()
            .into_iter()
            .map(|(kind, count)| (kind.name(), count))
            .collect()
    }

    /// Deletes this node's queue (once), while the runtime runs.
    async fn close(&self) {
        for task in &self.tasks {
            task.abort();
        }
        self.shared.close().await;
    }
}

#[cfg(test)]
mod tests;
