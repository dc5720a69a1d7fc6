//! In-process log for tests and benchmarks.
//!
//! One shard, [`SHARD_NAME`], holds every room; an entry's position is its index in that shard
//! (0 for the first entry ever appended; trimming drops entries from the front but never changes
//! positions). Timestamps come from the wall clock in milliseconds, made monotonic
//! (`max(previous, now)`), so they never go backwards even if the clock does.
//!
//! Nothing survives the process. Clones of a [`MemoryLog`] share the same entries and snapshots,
//! so a test "restarts" a node by dropping one handle and taking another clone, and runs a fleet
//! by giving each node a clone.
//!
//! The log is bounded ([`LOG_ENTRIES_MAX`], [`LOG_BYTES_MAX`], [`SNAPSHOTS_BYTES_MAX`]): once
//! full it rejects appends (and snapshots) instead of growing until the process is killed.
//!
//! Snapshots live in a map by room. Trimming drops entries at once (those older than
//! `keep-history`, if set); a subscription behind the trimmed front is told with
//! [`Event::Trimmed`] and goes on from the first entry kept.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::watch;

use crate::options::QueryOptions;
pub use crate::{APPEND_BATCH_BYTES_MAX, APPEND_BATCH_RECORDS_MAX, RECORD_BYTES_MAX};
use crate::{
    Append, Checkpoint, Entry, Event, Log, LogError, Position, ShardId, Snapshot, SnapshotInfo,
    check_batch, check_snapshot,
};

/// The name of the one shard of a memory log.
pub const SHARD_NAME: &str = "memory";

/// Most entries the log holds. About 72 bytes of bookkeeping per entry besides its payload, so
/// this caps that overhead near 1.2 GiB, enough for a benchmark of millions of joins.
pub const LOG_ENTRIES_MAX: usize = 16 * 1024 * 1024;

/// Most payload bytes the log holds, so a runaway benchmark fails with `Rejected` rather than
/// exhausting the machine's memory.
pub const LOG_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;

/// Most bytes of snapshots held at once (every room's newest): a benchmark's room of millions
/// of sessions fits; a runaway one gets `Rejected`.
pub const SNAPSHOTS_BYTES_MAX: u64 = 8 * 1024 * 1024 * 1024;

/// Most entries in one delivered [`Event::Entries`] batch: large enough to apply many records
/// per lock, small enough that a subscriber never copies an unbounded slice at once.
pub const SUBSCRIBE_BATCH_ENTRIES_MAX: usize = 4096;

/// Most payload bytes in one delivered batch (a batch always holds at least one entry).
pub const SUBSCRIBE_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

const _: () = assert!(APPEND_BATCH_RECORDS_MAX <= LOG_ENTRIES_MAX);
const _: () = assert!(RECORD_BYTES_MAX <= SUBSCRIBE_BATCH_BYTES_MAX);

/// How to make a [`MemoryLog`] (URL `memory:?keep-history=1h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryLogOptions {
    /// Trimmed entries younger than this are kept (for audit), in milliseconds.
    pub keep_history_ms: u64,
}

impl MemoryLogOptions {
    /// Options from the query string of a `memory:` URL.
    ///
    /// # Errors
    /// [`LogError::Rejected`] for an unknown option or a bad value.
    pub fn from_query(query: &str) -> Result<Self, LogError> {
        let mut options = QueryOptions::parse("memory", query)?;
        let keep_history_ms = options.take_keep_history_ms()?;
        options.finish()?;
        Ok(Self { keep_history_ms })
    }
}

/// An in-process, non-durable [`Log`]. Cheap to clone; clones share the same entries.
#[derive(Clone)]
pub struct MemoryLog {
    inner: Arc<Inner>,
}

struct Inner {
    shard: ShardId,
    options: MemoryLogOptions,
    state: Mutex<State>,
    /// The position after the last entry, published after every append so subscriptions wake up.
    end: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// Entries from position `first` on.
    entries: VecDeque<Entry>,
    first: u64,
    payload_bytes: u64,
    last_timestamp_ms: u64,
    snapshots: HashMap<Arc<str>, Snapshot>,
    snapshot_bytes: u64,
    trimmed_through: Option<Position>,
}

impl State {
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::with_options(MemoryLogOptions::default())
    }

    /// An empty log with `options`.
    pub fn with_options(options: MemoryLogOptions) -> Self {
        let (end, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                shard: ShardId::new(SHARD_NAME),
                options,
                state: Mutex::new(State::default()),
                end,
            }),
        }
    }

    /// The number of entries held (trimmed ones not counted).
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// True when the log holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the log's clock `ms` ahead of now: later entries are stamped at least that far in
    /// the future (until the wall clock catches up), so tests can let retention periods pass.
    pub fn skip_time_ms(&self, ms: u64) {
        let mut state = self.inner.lock();
        state.last_timestamp_ms = state.last_timestamp_ms.max(wall_clock_ms()) + ms;
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock is held cannot leave the state half-updated: every operation
        // checks its limits before it changes anything, and the changes themselves do not fail.
        // So a poisoned lock still guards a consistent state and is safe to keep using.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_shard(&self, shard: &ShardId) -> Result<(), LogError> {
        if *shard == self.shard {
            Ok(())
        } else {
            Err(LogError::Rejected(format!(
                "the memory log has one shard, {SHARD_NAME:?}, not {shard}"
            )))
        }
    }
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since_epoch| {
            u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
        })
}

/// A `u128` position of this log as an index, if it can be one.
fn index_of(position: Position) -> Option<u64> {
    u64::try_from(position.0).ok()
}

#[async_trait]
impl Log for MemoryLog {
    /// Appends the batch at once: all of it or, on `Err`, none of it.
    ///
    /// # Errors
    /// [`LogError::Rejected`] when the batch breaks a per-batch limit ([`APPEND_BATCH_RECORDS_MAX`],
    /// [`RECORD_BYTES_MAX`], [`APPEND_BATCH_BYTES_MAX`]) or the log is full ([`LOG_ENTRIES_MAX`],
    /// [`LOG_BYTES_MAX`]).
    async fn append(&self, batch: Vec<Append>) -> Result<(), LogError> {
        let batch_bytes = check_batch(&batch, 0)?;
        if batch.is_empty() {
            return Ok(());
        }
        let mut state = self.inner.lock();
        let entries_after = state.entries.len() + batch.len();
        let bytes_after = state.payload_bytes + batch_bytes as u64;
        if entries_after > LOG_ENTRIES_MAX || bytes_after > LOG_BYTES_MAX {
            return Err(LogError::Rejected(format!(
                "memory log is full: {} entries and {} payload bytes held, limits are \
                 LOG_ENTRIES_MAX ({LOG_ENTRIES_MAX}) and LOG_BYTES_MAX ({LOG_BYTES_MAX})",
                state.entries.len(),
                state.payload_bytes
            )));
        }
        let timestamp_ms = state.last_timestamp_ms.max(wall_clock_ms());
        state.last_timestamp_ms = timestamp_ms;
        state.payload_bytes = bytes_after;
        state.entries.reserve(batch.len());
        for append in batch {
            let position = Position(u128::from(state.end()));
            state.entries.push_back(Entry {
                shard: self.inner.shard.clone(),
                position,
                timestamp_ms,
                payload: append.payload,
            });
        }
        // Published under the lock so the published end never moves backwards when appends
        // race.
        self.inner.end.send_replace(state.end());
        Ok(())
    }

    /// # Errors
    /// [`LogError::Rejected`] when `from` names a position of this log's shard that it never
    /// held (a checkpoint taken on other data).
    async fn subscribe(
        &self,
        from: Checkpoint,
    ) -> Result<BoxStream<'static, Result<Event, LogError>>, LogError> {
        let mut end = self.inner.end.subscribe();
        let end_now = *end.borrow_and_update();
        let next = match from.get(&self.inner.shard) {
            None => 0,
            Some(seen) => match index_of(seen) {
                Some(seen) if seen < end_now => seen + 1,
                _ => {
                    return Err(LogError::Rejected(format!(
                        "checkpoint position {} is beyond the memory log's last entry \
                         (the log ends at {end_now})",
                        seen.0
                    )));
                }
            },
        };
        let cursor = Cursor {
            inner: Arc::clone(&self.inner),
            end,
            next,
            caught_up_at: Some(end_now),
        };
        Ok(futures::stream::unfold(cursor, |mut cursor| async move {
            let event = cursor.next_event().await?;
            Some((Ok(event), cursor))
        })
        .boxed())
    }

    async fn head(&self) -> Result<Checkpoint, LogError> {
        let mut head = Checkpoint::start();
        let end = *self.inner.end.borrow();
        if let Some(last) = end.checked_sub(1) {
            head.advance(&self.inner.shard, Position(last.into()));
        }
        Ok(head)
    }

    /// The shard holds every room: stores a tombstone at `last` (unless a newer snapshot of the
    /// room is held) and answers `true`.
    async fn forget_room(&self, room: &str, last: Position) -> Result<bool, LogError> {
        let mut state = self.inner.lock();
        let room: Arc<str> = room.into();
        if state
            .snapshots
            .get(&room)
            .is_some_and(|held| held.position > last)
        {
            return Ok(true);
        }
        let tombstone = Snapshot {
            room: Arc::clone(&room),
            shard: self.inner.shard.clone(),
            position: last,
            bytes: bytes::Bytes::new(),
        };
        if let Some(old) = state.snapshots.insert(room, tombstone) {
            state.snapshot_bytes -= old.bytes.len() as u64;
        }
        Ok(true)
    }

    async fn store_snapshot(&self, snapshot: Snapshot) -> Result<bool, LogError> {
        check_snapshot(&snapshot)?;
        self.inner.check_shard(&snapshot.shard)?;
        let mut state = self.inner.lock();
        let held = state.snapshots.get(&snapshot.room);
        if held.is_some_and(|held| held.position >= snapshot.position) {
            return Ok(false);
        }
        let held_bytes = held.map_or(0, |held| held.bytes.len() as u64);
        let bytes_after = state.snapshot_bytes - held_bytes + snapshot.bytes.len() as u64;
        if bytes_after > SNAPSHOTS_BYTES_MAX {
            return Err(LogError::Rejected(format!(
                "the memory log's snapshots would take {bytes_after} bytes, more than \
                 SNAPSHOTS_BYTES_MAX ({SNAPSHOTS_BYTES_MAX})"
            )));
        }
        state.snapshot_bytes = bytes_after;
        state.snapshots.insert(Arc::clone(&snapshot.room), snapshot);
        Ok(true)
    }

    async fn load_snapshot(&self, room: &str) -> Result<Option<Snapshot>, LogError> {
        Ok(self.inner.lock().snapshots.get(room).cloned())
    }

    async fn snapshot_info(&self, room: &str) -> Result<Option<SnapshotInfo>, LogError> {
        Ok(self.inner.lock().snapshots.get(room).map(Snapshot::info))
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, LogError> {
        Ok(self
            .inner
            .lock()
            .snapshots
            .values()
            .map(Snapshot::info)
            .collect())
    }

    /// Drops the entries up to `through` (but those younger than `keep-history`) and the
    /// tombstones up to it, at once.
    async fn trim(&self, shard: &ShardId, through: Position) -> Result<(), LogError> {
        self.inner.check_shard(shard)?;
        let keep_after_ms = wall_clock_ms().saturating_sub(self.inner.options.keep_history_ms);
        let mut state = self.inner.lock();
        if state.trimmed_through.is_some_and(|held| held >= through) {
            return Ok(());
        }
        state.trimmed_through = Some(through);
        state
            .snapshots
            .retain(|_, snapshot| !(snapshot.is_tombstone() && snapshot.position <= through));
        while let Some(front) = state.entries.front() {
            let keep = front.position > through
                || (self.inner.options.keep_history_ms > 0 && front.timestamp_ms > keep_after_ms);
            if keep {
                break;
            }
            let bytes = front.payload.len() as u64;
            state.entries.pop_front();
            state.first += 1;
            state.payload_bytes -= bytes;
        }
        Ok(())
    }

    async fn trimmed(&self) -> Result<Checkpoint, LogError> {
        let mut trimmed = Checkpoint::start();
        if let Some(through) = self.inner.lock().trimmed_through {
            trimmed.advance(&self.inner.shard, through);
        }
        Ok(trimmed)
    }

    fn describe(&self) -> String {
        "memory: (in-process, not durable)".to_owned()
    }
}

/// The state of one subscription.
struct Cursor {
    inner: Arc<Inner>,
    end: watch::Receiver<u64>,
    /// Position of the next entry to deliver.
    next: u64,
    /// The log's end at subscribe time, until `CaughtUp` has been delivered.
    caught_up_at: Option<u64>,
}

impl Cursor {
    /// The next event; `None` ends the stream.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.caught_up_at.is_some_and(|at| self.next >= at) {
                self.caught_up_at = None;
                return Some(Event::CaughtUp);
            }
            let end = *self.end.borrow_and_update();
            // Until caught up, stop batches at the subscribe-time end so `CaughtUp` follows
            // exactly the entries that existed then.
            let limit = self.caught_up_at.unwrap_or(end).min(end);
            if self.next < limit {
                return Some(self.take_batch(limit));
            }
            // The sender lives in `inner`, which this cursor keeps alive, so `changed` cannot
            // fail; were it to, nothing more could ever arrive, so the stream ends.
            self.end.changed().await.ok()?;
        }
    }

    fn take_batch(&mut self, limit: u64) -> Event {
        let state = self.inner.lock();
        if self.next < state.first {
            // Trimmed while this subscription was behind: say so, and go on from the front.
            let through = Position(u128::from(state.first - 1));
            self.next = state.first;
            return Event::Trimmed {
                shard: self.inner.shard.clone(),
                through,
            };
        }
        let start = (self.next - state.first) as usize;
        let end = (limit.min(state.end()) - state.first) as usize;
        let end = end.min(start + SUBSCRIBE_BATCH_ENTRIES_MAX);
        let mut batch = Vec::with_capacity(end.saturating_sub(start));
        let mut batch_bytes = 0;
        for entry in state.entries.range(start..end) {
            if !batch.is_empty() && batch_bytes + entry.payload.len() > SUBSCRIBE_BATCH_BYTES_MAX {
                break;
            }
            batch_bytes += entry.payload.len();
            batch.push(entry.clone());
        }
        self.next += batch.len() as u64;
        Event::Entries(batch)
    }
}

#[cfg(test)]
mod tests;
