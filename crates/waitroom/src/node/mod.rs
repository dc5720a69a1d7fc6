//! The node runtime: one applier feeding every room's state machine from the log, the appender
//! that batches writes, heartbeat batching, the ticker, and the read-your-writes waits.
//!
//! # Layout
//! - [`Node`]: the rooms (each behind its own lock), submit-and-wait, lookups with catch-up.
//! - `applier`: consumes the log subscription, applies records, wakes writers, tracks progress.
//! - `appender`: batches concurrent appends into one backend call (group commit).
//! - `heartbeats`: batches heartbeats per room into one record.
//! - `ticker`: appends `Tick`s for rooms that have live sessions; forgets vacant rooms.
//! - `digests`: digest checks in the log, so that a node whose copy of a room diverged finds
//!   out and rebuilds it.
//! - `snapshots`: takes room snapshots (by records, bytes or time since the last), stores them,
//!   trims the history they make unneeded, and restores rooms from them.
//!
//! # A log that went back
//! When the backend says a shard lost entries this node had applied (`Event::Regressed`: a
//! broker restarted empty, or without its latest writes), the applier counts it
//! (`waitroom_log_regressions_total`), logs an error, turns the node unready, rebuilds the
//! shard's rooms from snapshots the log still continues (or from nothing, appending a room's last
//! configuration again when its snapshot is gone too), and reads the shard again from its start:
//! see `applier::regressed`.
//!
//! # Snapshots
//! Every room carries, beside its state, where it stands in its shard ([`RoomLog`]): the last
//! entry applied, the newest snapshot known to be stored, and what was applied since. A starting
//! node restores every room from its newest snapshot and subscribes from the log's trim marker;
//! the applier then skips, room by room, entries its snapshot already holds. Any node may take a
//! room's snapshot once enough of the room's log has gone by; see `snapshots` for when, and for
//! how a shard is trimmed only as far as every room of it is covered.
//!
//! # Reads and writes
//! Reads (status polls) take a room's read lock for about a microsecond and never touch the
//! backend. Writes append a record, then wait until this node's applier has applied it and hand
//! back the state machine's outcome: once a write is answered, this node's state includes it.
//! Every wait is bounded ([`NodeOptions`]).

mod appender;
mod applier;
mod digests;
mod heads;
mod heartbeats;
mod snapshots;
mod ticker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use waitroom_core::{
    Command, Outcome, Record, RecordId, Room, RoomId, RoomStats, SessionId, SessionView,
};

use waitroom_log::{Append, Checkpoint, Log, Position, ShardId};

use crate::ids::{PublicSessionId, new_record_id, room_tag};
use crate::metrics::{Metrics, RoomFigures, RoomStatsSource};

pub use appender::APPEND_BATCH_RECORDS_MAX;
pub use heads::HEAD_READ_INTERVAL_MIN;
pub use snapshots::{SNAPSHOT_QUEUE_ROOMS_MAX, SnapshotMode};

/// Bounds and intervals of the node runtime. The defaults are [`NodeOptions::DEFAULT`], which
/// `waitroom serve`'s flags take as their defaults too.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// How long a write waits for its append and for this node to apply it; past it, a `503`.
    pub write_wait_ms: u64,
    /// How long a read of an unknown room or session waits for this node to catch up with the
    /// log before answering `404` (or `503` if it could not catch up).
    pub catch_up_wait_ms: u64,
    /// Heartbeats arriving within this window go into one record per room.
    pub heartbeat_flush_ms: u64,
    /// Ticks are appended this often for rooms with live sessions.
    pub tick_interval_ms: u64,
    /// A closed room that still remembers ended sessions or record ids is ticked this often, so
    /// its clock reaches the end of their retention and the node can forget it.
    pub closed_room_tick_interval_ms: u64,
    /// Writes waiting for their record to be applied, node-wide; past it, `503` (back-pressure).
    pub pending_writes_max: usize,
    /// Whether the node restores rooms from snapshots at start, takes them, and trims.
    pub snapshots: SnapshotMode,
    /// A room's snapshot is taken once this many of its records were applied since the last...
    pub snapshot_every_records: u64,
    /// ...or this many bytes of its records...
    pub snapshot_every_bytes: u64,
    /// ...or, if any record was, this long after the first one.
    pub snapshot_every_ms: u64,
    /// A node waits a random time up to this before taking a snapshot that is due, and skips it
    /// if another node stored one meanwhile: with several nodes, usually one takes each. 0 for a
    /// node alone on its log.
    pub snapshot_jitter_ms: u64,
    /// Busy rooms get a digest check in their log this often (see `digests`); 0: none written,
    /// none compared. Nodes compare only checks written with their own value.
    pub digest_check_every_ms: u64,
}

impl NodeOptions {
    /// Every default, written once. Snapshot thresholds: a starting node replays at most about
    /// 100 000 records or 64 MiB of a room's log after its snapshot (well under a second here,
    /// see bench/README.md), and a quiet room is snapshotted within 5 minutes of its last
    /// change, so it stops holding its shard's history.
    pub const DEFAULT: NodeOptions = NodeOptions {
        write_wait_ms: 5_000,
        catch_up_wait_ms: 2_000,
        heartbeat_flush_ms: 20,
        tick_interval_ms: 250,
        closed_room_tick_interval_ms: 10_000,
        pending_writes_max: 100_000,
        snapshots: SnapshotMode::On,
        snapshot_every_records: 100_000,
        snapshot_every_bytes: 64 * 1024 * 1024,
        snapshot_every_ms: 300_000,
        snapshot_jitter_ms: 2_000,
        digest_check_every_ms: 60_000,
    };
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One room's state machine behind its lock, and where it stands in its log.
#[derive(Debug)]
pub struct RoomCell {
    pub id: RoomId,
    pub state: RwLock<Room>,
    /// Changed only while `state`'s write lock is held (lock order: `state`, then `log`), so
    /// under `state`'s read lock it describes exactly the state one reads.
    pub log: Mutex<RoomLog>,
    /// Woken (every waiter) after records that may have changed a session's status were applied:
    /// an admission, an expiry, a leave, a configuration, a close, a tick. Held status reads wait
    /// on it.
    pub changed: tokio::sync::Notify,
}

/// Where a room stands in its shard.
#[derive(Debug, Default)]
pub struct RoomLog {
    pub shard: Option<ShardId>,
    /// The last entry of the room that the state includes.
    pub position: Option<Position>,
    /// The entry of the shard just before the first entry of the room this node applied (or the
    /// position it subscribed from): the room needs nothing up to it. `None` when the room's
    /// first entry was the first the node read of the shard, or the room started from a snapshot.
    /// (An entry's position minus one would do on a log with dense positions, but the file log's
    /// positions are byte offsets: only an entry's own position is a valid checkpoint.)
    pub before_first: Option<Position>,
    /// The newest snapshot of the room known to be stored.
    pub snapshot_position: Option<Position>,
    /// Applied since that snapshot (or since the room's first entry).
    pub records_since_snapshot: u64,
    pub bytes_since_snapshot: u64,
    /// When the first of those was applied.
    pub changed_since: Option<Instant>,
    /// A snapshot of the room is queued or being taken.
    pub snapshot_queued: bool,
    /// This node's digest of the room at the start of the current digest-check interval, and
    /// how the checks of it compared (see `digests`).
    pub digest: Option<digests::DigestTally>,
}

/// What a room still needs of its shard, for trimming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing up to its position: its snapshot holds all of it.
    Nothing,
    /// The entries after this position.
    After(Position),
    /// Everything: the shard cannot be trimmed.
    Everything,
}

impl RoomLog {
    pub(crate) fn need(&self) -> Need {
        match (self.snapshot_position, self.position) {
            (Some(snapshot), Some(position)) if position > snapshot => Need::After(snapshot),
            (Some(_), _) => Need::Nothing,
            (None, _) => match self.before_first {
                Some(before) => Need::After(before),
                None => Need::Everything,
            },
        }
    }
}

#[derive(Default)]
struct Rooms {
    by_id: HashMap<RoomId, Arc<RoomCell>>,
    /// Room tag → rooms with that tag (almost always one).
    by_tag: HashMap<u32, Vec<Arc<RoomCell>>>,
}

/// Where the applier is.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Per shard, the last entry applied.
    pub applied: Checkpoint,
    /// The applier has delivered everything that was in the log when it (re)subscribed.
    pub caught_up: bool,
    /// Set while the backend cannot be reached.
    pub unavailable: Option<String>,
}

/// Why a write did not complete.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The backend refused or failed the append, or did not answer in time: nothing may have
    /// been appended.
    #[error("the log backend is unavailable: {0}")]
    Unavailable(String),
    /// The record was appended but this node did not apply it within the bound.
    #[error("the write was accepted but not applied in time")]
    NotApplied,
    /// Too many writes are waiting already.
    #[error("too many writes in flight")]
    Overloaded,
}

/// Why a read could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error("this node has not caught up with its log yet")]
    NotCaughtUp,
    #[error("the log backend is unavailable: {0}")]
    Unavailable(String),
}

type WriteResult = Result<Outcome, WriteError>;

/// Writers waiting for their record to be applied, by record id.
#[derive(Default)]
pub(crate) struct Waiters {
    pending: Mutex<HashMap<RecordId, oneshot::Sender<WriteResult>>>,
}

impl Waiters {
    fn register(
        &self,
        id: RecordId,
        max: usize,
    ) -> Result<oneshot::Receiver<WriteResult>, WriteError> {
        let (sender, receiver) = oneshot::channel();
        let mut pending = self.pending.lock();
        if pending.len() >= max {
            return Err(WriteError::Overloaded);
        }
        pending.insert(id, sender);
        Ok(receiver)
    }

    fn forget(&self, id: &RecordId) {
        self.pending.lock().remove(id);
    }

    pub(crate) fn fail(&self, id: RecordId, error: WriteError) {
        if let Some(sender) = self.pending.lock().remove(&id) {
            let _ = sender.send(Err(error));
        }
    }

    /// Hands applied outcomes to the writers waiting for them.
    fn applied(&self, outcomes: Vec<(RecordId, Outcome)>) {
        let mut pending = self.pending.lock();
        if pending.is_empty() {
            return;
        }
        for (id, outcome) in outcomes {
            if let Some(sender) = pending.remove(&id) {
                // The writer may have given up (timed out); nothing to do then.
                let _ = sender.send(Ok(outcome));
            }
        }
    }
}

/// The node: every room of the log, kept up to date by the applier.
pub struct Node {
    log: Arc<dyn Log>,
    options: NodeOptions,
    rooms: RwLock<Rooms>,
    waiters: Arc<Waiters>,
    progress: watch::Sender<Progress>,
    appender: appender::Appender,
    heartbeats: heartbeats::Batcher,
    heads: Arc<heads::HeadReader>,
    /// Rooms whose snapshot is due, for the snapshot task.
    snapshot_queue: tokio::sync::mpsc::Sender<RoomId>,
    /// Wakes the snapshot task to look for due rooms (on catching up with the log).
    snapshot_scan: tokio::sync::Notify,
    /// Rooms forgotten where rooms share a shard (their tombstones, read at start): entries of
    /// the room at or before the position are skipped. Dropped once the shard is applied past.
    floors: Mutex<HashMap<RoomId, (ShardId, Position)>>,
    /// Rooms dropped from the node whose forgetting the log has not confirmed yet: what they
    /// still need of their shard keeps it from being trimmed meanwhile.
    forgetting: Arc<Mutex<HashMap<RoomId, (ShardId, Need)>>>,
    /// Per shard, the newest position this node trimmed it through.
    trimmed: Mutex<Checkpoint>,
    /// Shards being replayed to rebuild diverged rooms (see `digests`): their entries up to the
    /// position are applied to those rooms only. Dropped once the shard is applied past.
    replaying: Mutex<HashMap<ShardId, (Position, Vec<RoomId>)>>,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("log", &self.log.describe())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts the node's tasks on the current runtime: the applier (subscribed from the start of
    /// the log), the appender, the heartbeat batcher and the ticker. They stop when `tasks` is
    /// dropped or aborted.
    pub fn start(log: Arc<dyn Log>, options: NodeOptions, tasks: &mut JoinSet<()>) -> Arc<Node> {
        let metrics = Arc::new(Metrics::default());
        let waiters = Arc::new(Waiters::default());
        let (appender, appender_task) =
            appender::Appender::new(log.clone(), waiters.clone(), metrics.clone());
        let (heartbeats, heartbeats_rx) = heartbeats::Batcher::new();
        let (snapshot_queue, snapshot_rx) = tokio::sync::mpsc::channel(SNAPSHOT_QUEUE_ROOMS_MAX);
        let node = Arc::new(Node {
            log,
            options,
            rooms: RwLock::new(Rooms::default()),
            waiters,
            progress: watch::Sender::new(Progress::default()),
            appender,
            heartbeats,
            heads: heads::HeadReader::new(),
            snapshot_queue,
            snapshot_scan: tokio::sync::Notify::new(),
            floors: Mutex::new(HashMap::new()),
            forgetting: Arc::default(),
            trimmed: Mutex::new(Checkpoint::start()),
            replaying: Mutex::new(HashMap::new()),
            metrics,
        });
        tasks.spawn(appender_task);
        tasks.spawn(applier::run(node.clone()));
        tasks.spawn(heartbeats::run(node.clone(), heartbeats_rx));
        tasks.spawn(ticker::run(node.clone()));
        tasks.spawn(
            node.heads
                .clone()
                .run(node.log.clone(), node.metrics.clone()),
        );
        if node.options.snapshots == SnapshotMode::On {
            tasks.spawn(snapshots::run(node.clone(), snapshot_rx));
        }
        node
    }

    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
    }

    pub fn options(&self) -> &NodeOptions {
        &self.options
    }

    /// Caught up with the log and the backend reachable.
    pub fn is_ready(&self) -> bool {
        let progress = self.progress.borrow();
        progress.caught_up && progress.unavailable.is_none()
    }

    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Waits (bounded) until the node is ready.
    pub async fn wait_ready(&self, wait: Duration) -> Result<(), CatchUpError> {
        let mut progress = self.progress.subscribe();
        let ready = tokio::time::timeout(
            wait,
            progress.wait_for(|p| p.caught_up && p.unavailable.is_none()),
        )
        .await;
        match ready {
            Ok(Ok(_)) => Ok(()),
            _ => Err(self.not_ready_reason()),
        }
    }

    fn not_ready_reason(&self) -> CatchUpError {
        match &self.progress.borrow().unavailable {
            Some(why) => CatchUpError::Unavailable(why.clone()),
            None => CatchUpError::NotCaughtUp,
        }
    }

    /// Waits until this node has applied everything appended to the log (by any node) before
    /// the call: after it, "unknown" really means unknown. The head is read once for every
    /// caller that arrived before the read was sent (see `heads`).
    pub async fn catch_up(&self) -> Result<(), CatchUpError> {
        let arrived = tokio::time::Instant::now();
        let wait = Duration::from_millis(self.options.catch_up_wait_ms);
        let deadline = arrived + wait;
        self.wait_ready(wait).await?;
        let head = tokio::time::timeout_at(deadline, self.heads.head_since(arrived))
            .await
            .map_err(|_| CatchUpError::Unavailable("the backend did not answer in time".into()))?
            .map_err(CatchUpError::Unavailable)?;
        let mut progress = self.progress.subscribe();
        match tokio::time::timeout_at(deadline, progress.wait_for(|p| p.applied.covers(&head)))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            _ => Err(self.not_ready_reason()),
        }
    }

    /// The room, if this node has seen any record of it.
    pub fn room(&self, id: &RoomId) -> Option<Arc<RoomCell>> {
        self.rooms.read().by_id.get(id).cloned()
    }

    /// Every room this node knows, configured or not, sorted by id.
    pub fn rooms(&self) -> Vec<Arc<RoomCell>> {
        let mut rooms: Vec<_> = self.rooms.read().by_id.values().cloned().collect();
        rooms.sort_by(|a, b| a.id.cmp(&b.id));
        rooms
    }

    /// Stats of every existing room, for metrics.
    pub fn all_room_stats(&self) -> Vec<(RoomId, RoomStats)> {
        self.rooms()
            .into_iter()
            .filter_map(|cell| {
                let room = cell.state.read();
                room.exists().then(|| (cell.id.clone(), room.stats()))
            })
            .collect()
    }

    /// A room's state digest and where it stands in its log (for replica comparisons).
    pub fn room_digest(&self, id: &RoomId) -> Option<([u8; 16], Option<Position>)> {
        let cell = self.room(id)?;
        let state = cell.state.read();
        let position = cell.log.lock().position;
        Some((state.digest(), position))
    }

    /// A session's room and view, from memory.
    pub fn find_session(&self, id: &PublicSessionId) -> Option<(Arc<RoomCell>, SessionView)> {
        let rooms = self.rooms.read();
        rooms.by_tag.get(&id.tag)?.iter().find_map(|cell| {
            let view = cell.state.read().view(&id.session)?;
            Some((cell.clone(), view))
        })
    }

    /// Like [`Node::find_session`], but a session not found locally is looked up again after
    /// catching up with the log (it may have been created through another node a moment ago).
    pub async fn find_session_caught_up(
        &self,
        id: &PublicSessionId,
    ) -> Result<Option<(Arc<RoomCell>, SessionView)>, CatchUpError> {
        if let Some(found) = self.find_session(id) {
            return Ok(Some(found));
        }
        self.catch_up().await?;
        Ok(self.find_session(id))
    }

    /// Like [`Node::room`] for an existing room, after catching up if it is not known here.
    pub async fn existing_room_caught_up(
        &self,
        id: &RoomId,
    ) -> Result<Option<Arc<RoomCell>>, CatchUpError> {
        let exists = |cell: &Arc<RoomCell>| cell.state.read().exists();
        if let Some(cell) = self.room(id).filter(exists) {
            return Ok(Some(cell));
        }
        self.catch_up().await?;
        Ok(self.room(id).filter(exists))
    }

    /// The cell of `id`, created (empty) if this is its first record.
    fn room_or_insert(&self, id: &RoomId) -> Arc<RoomCell> {
        if let Some(cell) = self.room(id) {
            return cell;
        }
        let mut rooms = self.rooms.write();
        if let Some(cell) = rooms.by_id.get(id) {
            return cell.clone();
        }
        let cell = Arc::new(RoomCell {
            id: id.clone(),
            state: RwLock::new(Room::new(id.clone())),
            log: Mutex::new(RoomLog::default()),
            changed: tokio::sync::Notify::new(),
        });
        rooms.by_id.insert(id.clone(), cell.clone());
        rooms
            .by_tag
            .entry(room_tag(id))
            .or_default()
            .push(cell.clone());
        cell
    }

    /// Removes `cell` from the node if its room is vacant, under the rooms lock (lock order: rooms,
    /// then room). Only the applier calls this: it is the only writer of room state, so the room
    /// cannot be created again between the check and the removal.
    fn remove_room_if_vacant(&self, cell: &Arc<RoomCell>) -> bool {
        let mut rooms = self.rooms.write();
        if !cell.state.read().is_vacant()
            || !rooms
                .by_id
                .get(&cell.id)
                .is_some_and(|known| Arc::ptr_eq(known, cell))
        {
            return false;
        }
        Self::unlink_room(&mut rooms, &cell.id);
        true
    }

    fn unlink_room(rooms: &mut Rooms, id: &RoomId) {
        rooms.by_id.remove(id);
        if let Some(cells) = rooms.by_tag.get_mut(&room_tag(id)) {
            cells.retain(|cell| cell.id != *id);
            if cells.is_empty() {
                rooms.by_tag.remove(&room_tag(id));
            }
        }
    }

    /// Drops a room from the node whatever its state (it was forgotten while this node lagged).
    fn remove_room(&self, id: &RoomId) {
        Self::unlink_room(&mut self.rooms.write(), id);
    }

    /// Appends `command` for `room`, waits until this node applied it, and returns what the state
    /// machine did.
    ///
    /// # Errors
    /// See [`WriteError`]. After `NotApplied` the record may still apply later.
    pub async fn write(&self, room: &RoomId, command: Command) -> Result<Outcome, WriteError> {
        let record = Record::new(new_record_id(), room.clone(), command);
        let applied = self
            .waiters
            .register(record.id, self.options.pending_writes_max)?;
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.options.write_wait_ms);
        let append = Self::to_append(&record);
        let enqueued = tokio::time::timeout_at(
            deadline,
            self.appender
                .enqueue(append, appender::Ack::Applied(record.id)),
        )
        .await;
        let result = match enqueued {
            Ok(Ok(())) => match tokio::time::timeout_at(deadline, applied).await {
                Ok(Ok(result)) => return result,
                // Appended or not, it was not applied in time (or the node is stopping).
                _ => Err(WriteError::NotApplied),
            },
            Ok(Err(why)) => Err(WriteError::Unavailable(why)),
            Err(_) => Err(WriteError::Unavailable(
                "the append queue stayed full".into(),
            )),
        };
        self.waiters.forget(&record.id);
        self.metrics.writes_timed_out_total.inc();
        result
    }

    /// Appends `command` without waiting for it to be applied (ticks, compensations), within
    /// `write_wait_ms` like any write: a stalled backend does not keep the caller forever.
    pub async fn write_unwaited(&self, room: &RoomId, command: Command) -> Result<(), String> {
        let record = Record::new(new_record_id(), room.clone(), command);
        let wait = Duration::from_millis(self.options.write_wait_ms);
        tokio::time::timeout(wait, self.appender.append(Self::to_append(&record)))
            .await
            .unwrap_or_else(|_| Err(format!("not appended within {} ms", wait.as_millis())))
    }

    fn to_append(record: &Record) -> Append {
        Append {
            room: Arc::from(record.room.as_str()),
            payload: Bytes::from(record.encode()),
        }
    }

    /// Refreshes `session` through the heartbeat batcher; returns once the heartbeat record was
    /// applied.
    pub async fn heartbeat(&self, room: &RoomId, session: SessionId) -> Result<(), WriteError> {
        self.heartbeats.heartbeat(room.clone(), session).await
    }

    /// Hands applied outcomes to the writers waiting for them.
    fn wake_writers(&self, outcomes: Vec<(RecordId, Outcome)>) {
        self.waiters.applied(outcomes);
    }
}

impl Node {
    /// The Prometheus registry of this node's metrics and its rooms' figures.
    pub fn metrics_registry(self: &Arc<Self>) -> prometheus_client::registry::Registry {
        let rooms: std::sync::Weak<Node> = Arc::downgrade(self);
        self.metrics.registry(rooms)
    }
}

impl RoomStatsSource for Node {
    fn all_room_figures(&self) -> Vec<RoomFigures> {
        self.rooms()
            .into_iter()
            .filter_map(|cell| {
                let room = cell.state.read();
                let config = room.config().filter(|_| room.exists())?;
                Some(RoomFigures {
                    room: cell.id.clone(),
                    stats: room.stats(),
                    // The capacity in force: a running event's, else the room's.
                    capacity: room.capacity(),
                    paused: config.paused,
                })
            })
            .collect()
    }

    fn billed_log_requests(&self) -> Vec<(&'static str, u64)> {
        self.log.billed_requests()
    }
}

#[cfg(test)]
mod tests;
