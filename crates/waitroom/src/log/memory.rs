//! In-process log for tests and benchmarks.
//!
//! One shard, [`SHARD_NAME`], holds every room; an entry's position is its index in that shard
//! (0 for the first entry). Timestamps come from the wall clock in milliseconds, made monotonic
//! (`max(previous, now)`), so they never go backwards even if the clock does.
//!
//! Nothing survives the process. Clones of a [`MemoryLog`] share the same entries, so a test
//! "restarts" a node by dropping one handle and taking another clone.
//!
//! The log is bounded ([`LOG_ENTRIES_MAX`], [`LOG_BYTES_MAX`]): once full it rejects appends
//! instead of growing until the process is killed.

use super::check_batch;
pub use super::{APPEND_BATCH_BYTES_MAX, APPEND_BATCH_RECORDS_MAX, RECORD_BYTES_MAX};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::watch;

use super::{Append, Checkpoint, Entry, Event, Log, LogError, Position, ShardId};

/// The name of the one shard of a memory log.
pub const SHARD_NAME: &str = "memory";

/// Most entries the log holds. About 72 bytes of bookkeeping per entry besides its payload, so
/// this caps that overhead near 1.2 GiB, enough for a benchmark of millions of joins.
pub const LOG_ENTRIES_MAX: usize = 16 * 1024 * 1024;

/// Most payload bytes the log holds, so a runaway benchmark fails with `Rejected` rather than
/// exhausting the machine's memory.
pub const LOG_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;

/// Most entries in one delivered [`Event::Entries`] batch: large enough to apply many records
/// per lock, small enough that a subscriber never copies an unbounded slice at once.
pub const SUBSCRIBE_BATCH_ENTRIES_MAX: usize = 4096;

/// Most payload bytes in one delivered batch (a batch always holds at least one entry).
pub const SUBSCRIBE_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

const _: () = assert!(RECORD_BYTES_MAX <= APPEND_BATCH_BYTES_MAX);
const _: () = assert!(APPEND_BATCH_RECORDS_MAX <= LOG_ENTRIES_MAX);

/// An in-process, non-durable [`Log`]. Cheap to clone; clones share the same entries.
#[derive(Clone)]
pub struct MemoryLog {
    inner: Arc<Inner>,
}

struct Inner {
    shard: ShardId,
    state: Mutex<State>,
    /// The number of entries, published after every append so subscriptions wake up.
    length: watch::Sender<usize>,
}

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    payload_bytes: u64,
    last_timestamp_ms: u64,
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        let (length, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                shard: ShardId::new(SHARD_NAME),
                state: Mutex::new(State::default()),
                length,
            }),
        }
    }

    /// The number of entries in the log.
    pub fn len(&self) -> usize {
        *self.inner.length.borrow()
    }

    /// True when nothing was ever appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the log's clock `ms` ahead of now: later entries are stamped at least that far in
    /// the future (until the wall clock catches up), so tests can let retention periods pass.
    #[cfg(any(test, feature = "test-support"))]
    pub fn skip_time_ms(&self, ms: u64) {
        let mut state = self.inner.lock();
        state.last_timestamp_ms = state.last_timestamp_ms.max(wall_clock_ms()) + ms;
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock is held cannot leave the state half-updated: an append checks
        // every limit before it pushes its first entry, and pushes never fail. So a poisoned lock
        // still guards a consistent state and is safe to keep using.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since_epoch| {
            u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
        })
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
            let position = Position(state.entries.len() as u128);
            state.entries.push(Entry {
                shard: self.inner.shard.clone(),
                position,
                timestamp_ms,
                payload: append.payload,
            });
        }
        // Published under the lock so the published length never moves backwards when appends
        // race.
        self.inner.length.send_replace(state.entries.len());
        Ok(())
    }

    /// # Errors
    /// [`LogError::Rejected`] when `from` names a position of this log's shard that it does not
    /// hold (a checkpoint taken on other data).
    async fn subscribe(
        &self,
        from: Checkpoint,
    ) -> Result<BoxStream<'static, Result<Event, LogError>>, LogError> {
        let mut length = self.inner.length.subscribe();
        let length_now = *length.borrow_and_update();
        let next = match from.get(&self.inner.shard) {
            None => 0,
            Some(Position(seen)) => match usize::try_from(seen) {
                Ok(seen) if seen < length_now => seen + 1,
                _ => {
                    return Err(LogError::Rejected(format!(
                        "checkpoint position {seen} is beyond the memory log's last entry \
                         (the log holds {length_now} entries)"
                    )));
                }
            },
        };
        let cursor = Cursor {
            inner: Arc::clone(&self.inner),
            length,
            next,
            caught_up_at: Some(length_now),
        };
        Ok(futures::stream::unfold(cursor, |mut cursor| async move {
            let event = cursor.next_event().await?;
            Some((Ok(event), cursor))
        })
        .boxed())
    }

    async fn head(&self) -> Result<Checkpoint, LogError> {
        let mut head = Checkpoint::start();
        let length = *self.inner.length.borrow();
        if let Some(last) = length.checked_sub(1) {
            head.advance(&self.inner.shard, Position(last as u128));
        }
        Ok(head)
    }

    fn describe(&self) -> String {
        "memory: (in-process, not durable)".to_owned()
    }
}

/// The state of one subscription.
struct Cursor {
    inner: Arc<Inner>,
    length: watch::Receiver<usize>,
    /// Index of the next entry to deliver.
    next: usize,
    /// The log's length at subscribe time, until `CaughtUp` has been delivered.
    caught_up_at: Option<usize>,
}

impl Cursor {
    /// The next event; `None` ends the stream.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.caught_up_at.is_some_and(|at| self.next >= at) {
                self.caught_up_at = None;
                return Some(Event::CaughtUp);
            }
            let length = *self.length.borrow_and_update();
            // Until caught up, stop batches at the subscribe-time length so `CaughtUp` follows
            // exactly the entries that existed then.
            let limit = self.caught_up_at.unwrap_or(length).min(length);
            if self.next < limit {
                return Some(Event::Entries(self.take_batch(limit)));
            }
            // The sender lives in `inner`, which this cursor keeps alive, so `changed` cannot
            // fail; were it to, nothing more could ever arrive, so the stream ends.
            self.length.changed().await.ok()?;
        }
    }

    fn take_batch(&mut self, limit: usize) -> Vec<Entry> {
        let state = self.inner.lock();
        let end = limit
            .min(state.entries.len())
            .min(self.next + SUBSCRIBE_BATCH_ENTRIES_MAX);
        let mut batch = Vec::with_capacity(end.saturating_sub(self.next));
        let mut batch_bytes = 0;
        // `next < limit <= published length <= entries.len()`, so the range exists; an empty
        // slice (never expected) would only make the caller wait for the next append.
        for entry in state.entries.get(self.next..end).unwrap_or_default() {
            if !batch.is_empty() && batch_bytes + entry.payload.len() > SUBSCRIBE_BATCH_BYTES_MAX {
                break;
            }
            batch_bytes += entry.payload.len();
            batch.push(entry.clone());
        }
        self.next += batch.len();
        batch
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::log::conformance::Limits;

    const LIMITS: Limits = Limits {
        record_bytes_max: RECORD_BYTES_MAX,
        append_batch_records_max: APPEND_BATCH_RECORDS_MAX,
    };

    fn fixture() -> ((), impl AsyncFn() -> Result<Box<dyn Log>, LogError>) {
        let log = MemoryLog::new();
        ((), async move || Ok(Box::new(log.clone()) as Box<dyn Log>))
    }

    mod conformance {
        crate::conformance_tests!(fixture: super::fixture(), limits: super::LIMITS);
    }

    fn append(room: &str, payload: &'static str) -> Append {
        Append {
            room: room.into(),
            payload: Bytes::from_static(payload.as_bytes()),
        }
    }

    #[tokio::test]
    async fn positions_are_indexes_and_head_names_the_last() {
        let log = MemoryLog::new();
        assert_eq!(log.head().await.unwrap(), Checkpoint::start());
        log.append(vec![append("a", "0"), append("b", "1")])
            .await
            .unwrap();
        log.append(vec![append("a", "2")]).await.unwrap();
        let shard = ShardId::new(SHARD_NAME);
        assert_eq!(log.head().await.unwrap().get(&shard), Some(Position(2)));

        let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Event::Entries(entries) = event else {
            panic!("expected entries, got {event:?}");
        };
        let positions: Vec<_> = entries.iter().map(|entry| entry.position).collect();
        assert_eq!(positions, vec![Position(0), Position(1), Position(2)]);
        assert!(entries.iter().all(|entry| entry.shard == shard));
    }

    #[tokio::test]
    async fn checkpoint_beyond_the_log_is_rejected() {
        let log = MemoryLog::new();
        log.append(vec![append("a", "0")]).await.unwrap();
        let mut from = Checkpoint::start();
        from.advance(&ShardId::new(SHARD_NAME), Position(1));
        let result = log.subscribe(from).await;
        assert!(matches!(result, Err(LogError::Rejected(_))));
    }

    #[tokio::test]
    async fn batch_over_the_byte_limit_is_rejected_whole() {
        let log = MemoryLog::new();
        let big = Bytes::from(vec![b'x'; RECORD_BYTES_MAX]);
        let records = APPEND_BATCH_BYTES_MAX / RECORD_BYTES_MAX + 1;
        let batch = (0..records)
            .map(|_| Append {
                room: "a".into(),
                payload: big.clone(),
            })
            .collect();
        assert!(matches!(
            log.append(batch).await,
            Err(LogError::Rejected(_))
        ));
        assert!(log.is_empty());
    }

    #[tokio::test]
    async fn delivered_batches_are_capped() {
        let log = MemoryLog::new();
        for _ in 0..3 {
            let batch = (0..APPEND_BATCH_RECORDS_MAX)
                .map(|_| append("a", "x"))
                .collect();
            log.append(batch).await.unwrap();
        }
        let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
        let mut delivered = 0;
        while delivered < 3 * APPEND_BATCH_RECORDS_MAX {
            let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let Event::Entries(entries) = event else {
                panic!("expected entries before catching up, got {event:?}");
            };
            assert!(!entries.is_empty() && entries.len() <= SUBSCRIBE_BATCH_ENTRIES_MAX);
            delivered += entries.len();
        }
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(event, Event::CaughtUp);
    }
}
