//! What the backends' own tests share beyond the conformance suite: names of their own on a
//! shared server, records `"{room} {seq}"`, and a [`Node`] that applies a subscription the way
//! waitroom's node does, so each backend's tests check what a node would see.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::{Append, Checkpoint, Entry, Event, LogError, Position, ShardId};

/// Longest [`next_event`] waits: as long as the conformance suite's reads, so a slow server (a
/// broker coming back from a restart, on a busy machine) is not taken for a lost event.
pub const EVENT_WAIT: Duration = super::conformance::READ_WAIT;

/// The events of a subscription.
pub type Events = BoxStream<'static, Result<Event, LogError>>;

/// A prefix (or topic) no other test or run uses, so tests share one server in parallel:
/// process, time and a counter, in at most 24 of A-Z a-z 0-9 _ (the strictest rule, SQS's).
pub fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since_epoch| since_epoch.as_nanos() % 1_000_000_000_000);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("t{:x}_{nanos:x}_{count:x}", std::process::id())
}

/// `url` with the query options `options` (`name=value&...`) added.
pub fn with_options(url: &str, options: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{options}")
}

/// A record of `room`.
pub fn record(room: &str, payload: impl Into<Bytes>) -> Append {
    Append {
        room: room.into(),
        payload: payload.into(),
    }
}

/// Records `"{room} {seq}"` for every seq of `seqs` and every room, seq by seq.
pub fn records(rooms: &[&str], seqs: Range<u32>) -> Vec<Append> {
    seqs.flat_map(|seq| {
        rooms
            .iter()
            .map(move |room| record(room, format!("{room} {seq}")))
    })
    .collect()
}

/// The payloads [`records`] makes for `room`, in order.
pub fn expected(room: &str, seqs: Range<u32>) -> Vec<String> {
    seqs.map(|seq| format!("{room} {seq}")).collect()
}

/// The next event of `stream`.
///
/// # Panics
/// When the subscription fails, ends, or has nothing within [`EVENT_WAIT`].
pub async fn next_event(stream: &mut Events) -> Event {
    match tokio::time::timeout(EVENT_WAIT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        other => panic!("expected an event within {EVENT_WAIT:?}, got {other:?}"),
    }
}

/// The next event of `stream`, or the error it ends with, for tests that expect it to fail.
///
/// # Panics
/// When the subscription ends without an error, or has nothing within [`EVENT_WAIT`].
pub async fn next_result(stream: &mut Events) -> Result<Event, LogError> {
    match tokio::time::timeout(EVENT_WAIT, stream.next()).await {
        Ok(Some(result)) => result,
        other => panic!("expected an event or an error within {EVENT_WAIT:?}, got {other:?}"),
    }
}

/// What a node makes of a subscription: entries applied once each (deduplicated by position),
/// the checkpoint moved past what was trimmed, and counts of the other events.
#[derive(Default)]
pub struct Node {
    pub checkpoint: Checkpoint,
    pub applied: Vec<Entry>,
    /// Entries delivered again at or before the checkpoint, and so not applied.
    pub duplicates: usize,
    pub caught_up: usize,
    pub unavailable: usize,
    /// Each `Trimmed` event: the shard, and the position it was trimmed through.
    pub trimmed: Vec<(ShardId, Position)>,
}

impl Node {
    /// Applies events from `stream` until `done` holds.
    ///
    /// # Panics
    /// As [`next_event`] does.
    pub async fn read_until(&mut self, stream: &mut Events, done: impl Fn(&Self) -> bool) {
        while !done(self) {
            match next_event(stream).await {
                Event::Entries(entries) => {
                    for entry in entries {
                        let seen = self.checkpoint.get(&entry.shard);
                        if seen.is_some_and(|seen| entry.position <= seen) {
                            self.duplicates += 1;
                            continue;
                        }
                        self.checkpoint.advance(&entry.shard, entry.position);
                        self.applied.push(entry);
                    }
                }
                Event::CaughtUp => self.caught_up += 1,
                Event::Unavailable(_) => self.unavailable += 1,
                Event::Trimmed { shard, through } => {
                    self.checkpoint.advance(&shard, through);
                    self.trimmed.push((shard, through));
                }
                Event::Regressed { shards } => {
                    panic!("the log went back ({shards:?}): a broker lost entries")
                }
            }
        }
    }

    /// Applies events until the next `CaughtUp`.
    pub async fn read_until_caught_up(&mut self, stream: &mut Events) {
        let before = self.caught_up;
        self.read_until(stream, |node| node.caught_up > before)
            .await;
    }

    /// Applies events until `count` entries in all are applied.
    ///
    /// # Panics
    /// When more than `count` were applied by then: entries the test did not append.
    pub async fn read_until_applied(&mut self, stream: &mut Events, count: usize) {
        self.read_until(stream, |node| node.applied.len() >= count)
            .await;
        assert_eq!(self.applied.len(), count, "more entries than appended");
    }

    /// Every payload applied, in order.
    pub fn payloads(&self) -> Vec<String> {
        self.payloads_where(|_| true)
    }

    /// The payloads applied for one shard, in order.
    pub fn payloads_of(&self, shard: &ShardId) -> Vec<String> {
        self.payloads_where(|entry| entry.shard == *shard)
    }

    /// The payloads [`records`] made for `room` that were applied on `shard` (which rooms may
    /// share), in order.
    pub fn payloads_of_room(&self, shard: &ShardId, room: &str) -> Vec<String> {
        let mine = format!("{room} ");
        self.payloads_of(shard)
            .into_iter()
            .filter(|payload| payload.starts_with(&mine))
            .collect()
    }

    /// The entries applied, by shard and position: what two readers must agree on (how shards
    /// interleave may differ between reads).
    pub fn by_position(&self) -> BTreeMap<(ShardId, Position), Entry> {
        self.applied
            .iter()
            .map(|entry| ((entry.shard.clone(), entry.position), entry.clone()))
            .collect()
    }

    fn payloads_where(&self, keep: impl Fn(&Entry) -> bool) -> Vec<String> {
        self.applied
            .iter()
            .filter(|entry| keep(entry))
            .map(|entry| String::from_utf8_lossy(&entry.payload).into_owned())
            .collect()
    }
}
