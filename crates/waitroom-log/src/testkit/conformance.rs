//! The behaviour every [`Log`] backend must show, written once and run against each backend.
//!
//! # Using it from a backend
//! A backend's tests define a fixture, a function returning `(guard, open)`: `guard` keeps the
//! backend's data alive for the test (a temporary directory, a server), `open` is an
//! `AsyncFn() -> Result<Box<dyn Log>, LogError>` that opens the backend **on that same data**
//! (the restart scenario calls it twice, dropping the first handle in between). Then, inside a
//! test module:
//!
//! ```ignore
//! mod conformance {
//!     crate::conformance_tests!(fixture: super::fixture(), limits: super::LIMITS);
//! }
//! ```
//!
//! which expands to one `#[tokio::test]` per scenario below. Each scenario is also a plain
//! `pub async fn`, to call on its own.
//!
//! # Scenarios share data safely
//! Scenarios panic, like tests, when the backend misbehaves. Each one tags its payloads with a tag
//! unique to the run, names its rooms after that tag, subscribes from the head it read before
//! appending and ignores entries without its tag. So scenarios may share a backend that already
//! holds data (one Redis server for every test); only [`fresh_log_is_empty`] needs a fresh one.
//! All waits are bounded ([`READ_WAIT`]); nothing sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::{Append, Checkpoint, Entry, Event, Log, LogError, Position, ShardId, Snapshot};

/// Longest a scenario waits for a subscription to deliver what it expects. Generous, because CI
/// machines are slow and a broker may batch; a correct backend answers in milliseconds.
pub const READ_WAIT: Duration = Duration::from_secs(60);

/// How far a backend's timestamps may lie from this process's clock: brokers stamp records with
/// their own clock, which on CI runs on the same machine.
pub const CLOCK_SKEW_MS: u64 = 60_000;

/// The backend's per-append limits, which [`limits_are_enforced`] probes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest payload the backend accepts, in bytes.
    pub record_bytes_max: usize,
    /// Most records the backend accepts in one `append` batch.
    pub append_batch_records_max: usize,
}

/// Expands to one `#[tokio::test]` per conformance scenario. See the module documentation.
#[macro_export]
macro_rules! conformance_tests {
    (fixture: $fixture:expr, limits: $limits:expr $(,)?) => {
        $crate::conformance_tests!(@each $fixture;
            fresh_log_is_empty,
            appends_arrive_in_order,
            batches_keep_their_order,
            rooms_interleave,
            caught_up_follows_existing_entries_then_live_ones,
            resume_from_checkpoint_delivers_exactly_the_rest,
            head_is_covered_once_applied,
            many_rooms_with_concurrent_appenders,
            concurrent_appenders_keep_their_order,
            subscribers_agree,
            timestamps_never_decrease,
            empty_batch_is_accepted,
            snapshots_store_and_load,
            newer_snapshot_wins,
            trim_drops_history_before_a_snapshot,
            a_reader_behind_a_trim_is_told,
            forget_room_drops_history_and_snapshot,
        );

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn limits_are_enforced() {
            let (_guard, open) = $fixture;
            let log = open().await.expect("open the log under test");
            $crate::testkit::conformance::limits_are_enforced(&*log, $limits).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn restart_resumes_from_checkpoint() {
            let (_guard, open) = $fixture;
            $crate::testkit::conformance::restart_resumes_from_checkpoint(open).await;
        }
    };
    (@each $fixture:expr; $($scenario:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                let (_guard, open) = $fixture;
                let log = open().await.expect("open the log under test");
                $crate::testkit::conformance::$scenario(&*log).await;
            }
        )*
    };
}

/// What a scenario's payload says about itself.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Record {
    room: String,
    appender: u32,
    seq: u32,
}

/// One of the scenario's own entries as a subscription delivered it.
#[derive(Clone, Debug)]
struct Delivered {
    entry: Entry,
    record: Record,
    /// The subscriber's checkpoint right after this entry.
    checkpoint_after: Checkpoint,
}

/// A tag no other scenario run uses (process, time, counter), without spaces.
fn unique_tag(scenario: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since_epoch| since_epoch.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{scenario}.{}.{nanos}.{count}", std::process::id())
}

fn room_name(tag: &str, room: usize) -> String {
    format!("{tag}.room{room}")
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since_epoch| {
            u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
        })
}

fn record(tag: &str, room: &str, appender: u32, seq: u32) -> Append {
    Append {
        room: room.into(),
        payload: Bytes::from(format!("{tag} {room} {appender} {seq}")),
    }
}

/// A record whose payload is exactly `bytes` long.
fn padded_record(tag: &str, room: &str, appender: u32, seq: u32, bytes: usize) -> Append {
    let mut payload = format!("{tag} {room} {appender} {seq} ");
    assert!(
        payload.len() <= bytes,
        "a {bytes}-byte record cannot hold its {}-byte header",
        payload.len()
    );
    payload.extend(std::iter::repeat_n('x', bytes - payload.len()));
    Append {
        room: room.into(),
        payload: Bytes::from(payload),
    }
}

/// The scenario's own record in `payload`, or `None` for another run's entry.
fn parse(tag: &str, payload: &[u8]) -> Option<Record> {
    let text = std::str::from_utf8(payload.get(..payload.len().min(512))?).ok()?;
    let mut fields = text.split(' ');
    if fields.next()? != tag {
        return None;
    }
    let room = fields.next()?.to_owned();
    let appender = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    Some(Record {
        room,
        appender,
        seq,
    })
}

async fn append_ok(log: &dyn Log, batch: Vec<Append>) {
    let records = batch.len();
    if let Err(error) = log.append(batch).await {
        panic!(
            "{}: appending {records} records failed: {error}",
            log.describe()
        );
    }
}

async fn head(log: &dyn Log) -> Checkpoint {
    log.head()
        .await
        .unwrap_or_else(|error| panic!("{}: head failed: {error}", log.describe()))
}

/// A subscription read the way the node reads it, checking the log's promises on every event.
struct Reader {
    tag: String,
    stream: BoxStream<'static, Result<Event, LogError>>,
    /// Everything delivered so far (starting from the subscription's checkpoint).
    checkpoint: Checkpoint,
    /// The scenario's own entries, in delivery order.
    mine: Vec<Delivered>,
    /// Every position delivered, of any run.
    positions: BTreeSet<(ShardId, Position)>,
    last_timestamp_ms: BTreeMap<ShardId, u64>,
    caught_up: usize,
    /// How many of the scenario's entries had arrived at the first `CaughtUp`.
    mine_before_caught_up: Option<usize>,
    /// The subscription reported `Unavailable`: redelivery is allowed from then on.
    reconnected: bool,
    redelivered: usize,
    /// Every `Trimmed` event, with how many of the scenario's entries had arrived before it.
    trims: Vec<(ShardId, Position, usize)>,
}

impl Reader {
    async fn open(log: &dyn Log, from: Checkpoint, tag: &str) -> Self {
        let stream = log
            .subscribe(from.clone())
            .await
            .unwrap_or_else(|error| panic!("{}: subscribe failed: {error}", log.describe()));
        Self {
            tag: tag.to_owned(),
            stream,
            checkpoint: from,
            mine: Vec::new(),
            positions: BTreeSet::new(),
            last_timestamp_ms: BTreeMap::new(),
            caught_up: 0,
            mine_before_caught_up: None,
            reconnected: false,
            redelivered: 0,
            trims: Vec::new(),
        }
    }

    /// Reads events until `done` holds, failing the scenario after [`READ_WAIT`].
    async fn read_until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + READ_WAIT;
        while !done(self) {
            let event = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => panic!(
                    "{}: waiting for {what}: nothing more within {READ_WAIT:?} ({} of the \
                     scenario's entries delivered)",
                    self.tag,
                    self.mine.len()
                ),
                Ok(None) => panic!("{}: waiting for {what}: the subscription ended", self.tag),
                Ok(Some(Err(error))) => {
                    panic!(
                        "{}: waiting for {what}: the subscription failed: {error}",
                        self.tag
                    )
                }
                Ok(Some(Ok(event))) => event,
            };
            match event {
                Event::Entries(entries) => {
                    assert!(!entries.is_empty(), "{}: an empty Entries batch", self.tag);
                    for entry in entries {
                        self.accept(entry);
                    }
                }
                Event::CaughtUp => {
                    self.caught_up += 1;
                    self.mine_before_caught_up.get_or_insert(self.mine.len());
                }
                Event::Unavailable(_) => self.reconnected = true,
                Event::Trimmed { shard, through } => {
                    if let Some(seen) = self.checkpoint.get(&shard) {
                        assert!(
                            through > seen,
                            "{}: Trimmed through {through:?} of {shard}, which this \
                             subscription had delivered up to {seen:?} already",
                            self.tag
                        );
                    }
                    self.checkpoint.advance(&shard, through);
                    self.trims.push((shard, through, self.mine.len()));
                }
                Event::Regressed { shards } => panic!(
                    "{}: the log went back ({shards:?}), but no broker lost anything",
                    self.tag
                ),
            }
        }
    }

    async fn read_until_mine(&mut self, count: usize) {
        self.read_until(&format!("{count} of the scenario's entries"), |reader| {
            reader.mine.len() >= count
        })
        .await;
        assert_eq!(
            self.mine.len(),
            count,
            "{}: more of the scenario's entries than it appended",
            self.tag
        );
    }

    async fn read_until_caught_up(&mut self) {
        self.read_until("CaughtUp", |reader| reader.caught_up > 0)
            .await;
    }

    fn accept(&mut self, entry: Entry) {
        if let Some(seen) = self.checkpoint.get(&entry.shard)
            && entry.position <= seen
        {
            assert!(
                self.reconnected,
                "{}: shard {} delivered position {:?} after {seen:?} without reconnecting: \
                 positions must strictly increase and nothing at or below the checkpoint may \
                 be delivered",
                self.tag, entry.shard, entry.position
            );
            self.redelivered += 1;
            return;
        }
        let last_timestamp_ms = self
            .last_timestamp_ms
            .entry(entry.shard.clone())
            .or_insert(0);
        assert!(
            entry.timestamp_ms >= *last_timestamp_ms,
            "{}: shard {} went back in time: {} ms after {} ms",
            self.tag,
            entry.shard,
            entry.timestamp_ms,
            last_timestamp_ms
        );
        *last_timestamp_ms = entry.timestamp_ms;
        self.checkpoint.advance(&entry.shard, entry.position);
        self.positions.insert((entry.shard.clone(), entry.position));
        if let Some(record) = parse(&self.tag, &entry.payload) {
            self.mine.push(Delivered {
                entry,
                record,
                checkpoint_after: self.checkpoint.clone(),
            });
        }
    }
}

/// Asserts that `delivered` holds, for every `(room, appender)`, exactly the sequence numbers
/// `0..per_room_appender` in order, that `rooms × appenders` such sequences arrived, and that
/// every room's records share one shard.
fn assert_per_room_order(
    tag: &str,
    delivered: &[Delivered],
    rooms: usize,
    appenders: u32,
    per_room_appender: u32,
) {
    let mut sequences: BTreeMap<(&str, u32), Vec<u32>> = BTreeMap::new();
    let mut shards: BTreeMap<&str, &ShardId> = BTreeMap::new();
    for item in delivered {
        sequences
            .entry((&item.record.room, item.record.appender))
            .or_default()
            .push(item.record.seq);
        let shard = shards.entry(&item.record.room).or_insert(&item.entry.shard);
        assert_eq!(
            *shard, &item.entry.shard,
            "{tag}: room {} spread over two shards",
            item.record.room
        );
    }
    assert_eq!(
        sequences.len(),
        rooms * appenders as usize,
        "{tag}: records of some room or appender are missing"
    );
    let expected: Vec<u32> = (0..per_room_appender).collect();
    for ((room, appender), seqs) in &sequences {
        assert!(
            *seqs == expected,
            "{tag}: room {room}, appender {appender}: delivered {seqs:?}, expected \
             0..{per_room_appender} in order"
        );
    }
}

/// The scenario's entries as `(shard, position) → payload`.
fn by_position(delivered: &[Delivered]) -> BTreeMap<(ShardId, Position), Bytes> {
    delivered
        .iter()
        .map(|item| {
            (
                (item.entry.shard.clone(), item.entry.position),
                item.entry.payload.clone(),
            )
        })
        .collect()
}

/// A log nobody appended to has an empty head, and a subscription from the start is caught up
/// at once. Needs a fresh backend.
pub async fn fresh_log_is_empty(log: &dyn Log) {
    let tag = unique_tag("fresh_log_is_empty");
    assert_eq!(head(log).await, Checkpoint::start(), "a fresh log's head");
    let mut reader = Reader::open(log, Checkpoint::start(), &tag).await;
    reader.read_until_caught_up().await;
    assert!(reader.positions.is_empty(), "a fresh log delivered entries");
}

/// Single-record appends to one room arrive in append order, each exactly once.
pub async fn appends_arrive_in_order(log: &dyn Log) {
    let tag = unique_tag("appends_arrive_in_order");
    let room = room_name(&tag, 0);
    let start = head(log).await;
    for seq in 0..100 {
        append_ok(log, vec![record(&tag, &room, 0, seq)]).await;
    }
    let mut reader = Reader::open(log, start, &tag).await;
    reader.read_until_mine(100).await;
    assert_per_room_order(&tag, &reader.mine, 1, 1, 100);
}

/// Batches of many sizes, each mixing rooms, keep every room's records in batch order.
pub async fn batches_keep_their_order(log: &dyn Log) {
    let tag = unique_tag("batches_keep_their_order");
    const ROOMS: usize = 3;
    let rooms: Vec<String> = (0..ROOMS).map(|room| room_name(&tag, room)).collect();
    let start = head(log).await;
    let mut next_seq = [0_u32; ROOMS];
    let mut turn = 0;
    for batch_records in [1, 2, 3, 17, 64, 250, 5, 1, 35] {
        let mut batch = Vec::with_capacity(batch_records);
        for _ in 0..batch_records {
            let room = turn % ROOMS;
            batch.push(record(&tag, &rooms[room], 0, next_seq[room]));
            next_seq[room] += 1;
            turn += 1;
        }
        append_ok(log, batch).await;
    }
    assert!(next_seq.iter().all(|&count| count == next_seq[0]));
    let mut reader = Reader::open(log, start, &tag).await;
    reader.read_until_mine(turn).await;
    assert_per_room_order(&tag, &reader.mine, ROOMS, 1, next_seq[0]);
}

/// Appends that alternate between many rooms keep each room's order.
pub async fn rooms_interleave(log: &dyn Log) {
    let tag = unique_tag("rooms_interleave");
    const ROOMS: usize = 20;
    const ROUNDS: u32 = 10;
    let start = head(log).await;
    for seq in 0..ROUNDS {
        for room in 0..ROOMS {
            append_ok(log, vec![record(&tag, &room_name(&tag, room), 0, seq)]).await;
        }
    }
    let mut reader = Reader::open(log, start, &tag).await;
    reader.read_until_mine(ROOMS * ROUNDS as usize).await;
    assert_per_room_order(&tag, &reader.mine, ROOMS, 1, ROUNDS);
}

/// `CaughtUp` comes after every entry that existed at subscribe time, and entries appended
/// later follow it live. A subscription from a checkpoint that has seen everything is caught up
/// before delivering anything of the scenario's.
pub async fn caught_up_follows_existing_entries_then_live_ones(log: &dyn Log) {
    let tag = unique_tag("caught_up_follows_existing_entries_then_live_ones");
    let room = room_name(&tag, 0);
    let start = head(log).await;
    for first in (0..30).step_by(5) {
        append_ok(
            log,
            (first..first + 5)
                .map(|seq| record(&tag, &room, 0, seq))
                .collect(),
        )
        .await;
    }
    let mut reader = Reader::open(log, start, &tag).await;
    reader.read_until_caught_up().await;
    assert_eq!(
        reader.mine_before_caught_up,
        Some(30),
        "{tag}: CaughtUp before every existing entry was delivered"
    );
    for seq in 30..50 {
        append_ok(log, vec![record(&tag, &room, 0, seq)]).await;
    }
    reader.read_until_mine(50).await;
    assert!(
        reader.caught_up == 1 || reader.reconnected,
        "{tag}: CaughtUp delivered {} times without a reconnect",
        reader.caught_up
    );
    assert_per_room_order(&tag, &reader.mine, 1, 1, 50);

    let mut late = Reader::open(log, reader.checkpoint.clone(), &tag).await;
    late.read_until_caught_up().await;
    assert_eq!(
        late.mine_before_caught_up,
        Some(0),
        "{tag}: a subscription from a checkpoint past every entry delivered old entries"
    );
}

/// A subscription from any checkpoint taken along the way delivers exactly the entries after it
/// (no gap, no duplicate); and a node that re-reads from an older checkpoint, skipping what its
/// own checkpoint has seen (at-least-once delivery deduplicated by position), ends with the same.
pub async fn resume_from_checkpoint_delivers_exactly_the_rest(log: &dyn Log) {
    let tag = unique_tag("resume_from_checkpoint_delivers_exactly_the_rest");
    const ROOMS: usize = 3;
    const TOTAL: usize = 60;
    let start = head(log).await;
    let records: Vec<Append> = (0..TOTAL)
        .map(|index| {
            let room = room_name(&tag, index % ROOMS);
            record(&tag, &room, 0, (index / ROOMS) as u32)
        })
        .collect();
    for batch in records.chunks(7) {
        append_ok(log, batch.to_vec()).await;
    }
    let mut all = Reader::open(log, start.clone(), &tag).await;
    all.read_until_mine(TOTAL).await;
    assert_per_room_order(&tag, &all.mine, ROOMS, 1, (TOTAL / ROOMS) as u32);

    for cut in [0, 1, 29, 59, TOTAL] {
        let from = match cut {
            0 => start.clone(),
            _ => all.mine[cut - 1].checkpoint_after.clone(),
        };
        let mut resumed = Reader::open(log, from, &tag).await;
        resumed.read_until_caught_up().await;
        assert_eq!(
            by_position(&resumed.mine),
            by_position(&all.mine[cut..]),
            "{tag}: resuming after {cut} entries"
        );
        assert_eq!(
            resumed.mine.len(),
            TOTAL - cut,
            "{tag}: duplicates after {cut}"
        );
    }

    // A node that applied 40 entries re-reads from its checkpoint after 10 (as after a
    // reconnect) and skips what it has applied.
    let applied = all.mine[39].checkpoint_after.clone();
    let mut again = Reader::open(log, all.mine[9].checkpoint_after.clone(), &tag).await;
    again.read_until_mine(TOTAL - 10).await;
    let fresh: Vec<Delivered> = again
        .mine
        .iter()
        .filter(|item| {
            applied
                .get(&item.entry.shard)
                .is_none_or(|seen| item.entry.position > seen)
        })
        .cloned()
        .collect();
    assert_eq!(
        by_position(&fresh),
        by_position(&all.mine[40..]),
        "{tag}: deduplicating a redelivery by position"
    );
}

/// `head()` after appending names, per shard, a position that a subscription delivers; a
/// subscriber whose checkpoint covers it has seen every record appended before the call, and a
/// checkpoint short of the last record does not cover it.
pub async fn head_is_covered_once_applied(log: &dyn Log) {
    let tag = unique_tag("head_is_covered_once_applied");
    let room = room_name(&tag, 0);
    let start = head(log).await;
    for first in [0, 3, 6] {
        let last = if first == 6 { 10 } else { first + 3 };
        append_ok(
            log,
            (first..last)
                .map(|seq| record(&tag, &room, 0, seq))
                .collect(),
        )
        .await;
    }
    let head = head(log).await;
    assert!(
        !start.covers(&head),
        "{tag}: head did not move past {start:?}"
    );
    assert!(head.covers(&head) && head.covers(&start) && head.covers(&Checkpoint::start()));
    assert!(!Checkpoint::start().covers(&head));

    let mut reader = Reader::open(log, start, &tag).await;
    reader
        .read_until("a checkpoint covering the head", |reader| {
            reader.checkpoint.covers(&head)
        })
        .await;
    assert_eq!(
        reader.mine.len(),
        10,
        "{tag}: covering the head before every record appended before head() was delivered"
    );
    let shard = &reader.mine[0].entry.shard;
    let head_position = head
        .get(shard)
        .unwrap_or_else(|| panic!("{tag}: head {head:?} does not name shard {shard}"));
    assert!(
        head_position >= reader.mine[9].entry.position,
        "{tag}: head {head_position:?} is before the last record appended"
    );
    for (shard, position) in &head.0 {
        let delivered_here = reader.positions.iter().any(|(seen, _)| seen == shard);
        if delivered_here {
            assert!(
                reader.positions.contains(&(shard.clone(), *position)),
                "{tag}: head names {shard} {position:?}, which is no delivered entry"
            );
        }
    }
    assert!(
        !reader.mine[8].checkpoint_after.covers(&head),
        "{tag}: a checkpoint before the last record covers the head"
    );
}

/// 50 rooms × 200 records from 10 concurrent appenders (each appending 20 records to every room
/// in mixed batches), read live while they append: every appender's records of every room
/// arrive, in its order.
pub async fn many_rooms_with_concurrent_appenders(log: &dyn Log) {
    let tag = unique_tag("many_rooms_with_concurrent_appenders");
    const ROOMS: usize = 50;
    const APPENDERS: u32 = 10;
    const PER_ROOM_APPENDER: u32 = 20;
    const BATCH_RECORDS: usize = 25;
    let start = head(log).await;
    let mut reader = Reader::open(log, start, &tag).await;
    let tag = tag.as_str();
    let appenders = (0..APPENDERS).map(|appender| async move {
        let records: Vec<Append> = (0..PER_ROOM_APPENDER)
            .flat_map(|seq| {
                (0..ROOMS).map(move |room| record(tag, &room_name(tag, room), appender, seq))
            })
            .collect();
        for batch in records.chunks(BATCH_RECORDS) {
            append_ok(log, batch.to_vec()).await;
        }
    });
    let total = ROOMS * (APPENDERS * PER_ROOM_APPENDER) as usize;
    tokio::join!(
        futures::future::join_all(appenders),
        reader.read_until_mine(total)
    );
    assert_per_room_order(tag, &reader.mine, ROOMS, APPENDERS, PER_ROOM_APPENDER);
}

/// Many appenders racing on one room: the room's order keeps each appender's own order.
pub async fn concurrent_appenders_keep_their_order(log: &dyn Log) {
    let tag = unique_tag("concurrent_appenders_keep_their_order");
    const APPENDERS: u32 = 8;
    const RECORDS: u32 = 50;
    let room = room_name(&tag, 0);
    let start = head(log).await;
    let mut reader = Reader::open(log, start, &tag).await;
    let (tag, room) = (tag.as_str(), room.as_str());
    let appenders = (0..APPENDERS).map(|appender| async move {
        for seq in 0..RECORDS {
            append_ok(log, vec![record(tag, room, appender, seq)]).await;
        }
    });
    tokio::join!(
        futures::future::join_all(appenders),
        reader.read_until_mine((APPENDERS * RECORDS) as usize)
    );
    assert_per_room_order(tag, &reader.mine, 1, APPENDERS, RECORDS);
}

/// Two subscriptions reading while appenders write see the same entries: same positions, same
/// timestamps, same payloads.
pub async fn subscribers_agree(log: &dyn Log) {
    let tag = unique_tag("subscribers_agree");
    const ROOMS: usize = 5;
    const APPENDERS: u32 = 3;
    const PER_ROOM_APPENDER: u32 = 10;
    let start = head(log).await;
    let mut first = Reader::open(log, start.clone(), &tag).await;
    let mut second = Reader::open(log, start, &tag).await;
    let tag = tag.as_str();
    let appenders = (0..APPENDERS).map(|appender| async move {
        for seq in 0..PER_ROOM_APPENDER {
            let batch = (0..ROOMS)
                .map(|room| record(tag, &room_name(tag, room), appender, seq))
                .collect();
            append_ok(log, batch).await;
        }
    });
    let total = ROOMS * (APPENDERS * PER_ROOM_APPENDER) as usize;
    tokio::join!(
        futures::future::join_all(appenders),
        first.read_until_mine(total),
        second.read_until_mine(total)
    );
    let view = |reader: &Reader| -> BTreeMap<(ShardId, Position), (u64, Bytes)> {
        reader
            .mine
            .iter()
            .map(|item| {
                let entry = &item.entry;
                (
                    (entry.shard.clone(), entry.position),
                    (entry.timestamp_ms, entry.payload.clone()),
                )
            })
            .collect()
    };
    assert!(view(&first) == view(&second), "{tag}: subscribers disagree");
    assert_per_room_order(tag, &first.mine, ROOMS, APPENDERS, PER_ROOM_APPENDER);
}

/// Timestamps never decrease along a shard (the reader checks every entry) and stay close to the
/// wall clock of the moment of appending.
pub async fn timestamps_never_decrease(log: &dyn Log) {
    let tag = unique_tag("timestamps_never_decrease");
    const ROOMS: usize = 2;
    let start = head(log).await;
    let before_ms = wall_clock_ms();
    for seq in 0..20 {
        let batch = (0..ROOMS)
            .map(|room| record(&tag, &room_name(&tag, room), 0, seq))
            .collect();
        append_ok(log, batch).await;
    }
    let after_ms = wall_clock_ms();
    let mut reader = Reader::open(log, start, &tag).await;
    reader.read_until_mine(ROOMS * 20).await;
    for item in &reader.mine {
        let timestamp_ms = item.entry.timestamp_ms;
        assert!(
            timestamp_ms + CLOCK_SKEW_MS >= before_ms && timestamp_ms <= after_ms + CLOCK_SKEW_MS,
            "{tag}: timestamp {timestamp_ms} ms is far from the append window \
             [{before_ms}, {after_ms}] ms"
        );
    }
    assert_per_room_order(&tag, &reader.mine, ROOMS, 1, 20);
}

/// An empty batch is accepted and appends nothing; the log keeps working.
pub async fn empty_batch_is_accepted(log: &dyn Log) {
    let tag = unique_tag("empty_batch_is_accepted");
    let room = room_name(&tag, 0);
    let start = head(log).await;
    append_ok(log, Vec::new()).await;
    append_ok(log, vec![record(&tag, &room, 0, 0)]).await;
    let mut reader = Reader::open(log, start, &tag).await;
    reader.read_until_mine(1).await;
}

/// A record of exactly the size limit and a batch of exactly the count limit are accepted and
/// delivered intact; one byte or one record more is rejected with [`LogError::Rejected`], the
/// whole batch with it (none of its records is ever delivered), and the log keeps working.
pub async fn limits_are_enforced(log: &dyn Log, limits: Limits) {
    let tag = unique_tag("limits_are_enforced");
    let room = room_name(&tag, 0);
    let start = head(log).await;
    let expect_rejected = |what: &str, result: Result<(), LogError>| match result {
        Err(LogError::Rejected(_)) => {}
        other => panic!("{tag}: {what}: expected Rejected, got {other:?}"),
    };

    // Appender 0: records that must arrive; appender 1: records that must not.
    let largest = padded_record(&tag, &room, 0, 0, limits.record_bytes_max);
    append_ok(log, vec![largest.clone()]).await;
    let too_large = padded_record(&tag, &room, 1, 0, limits.record_bytes_max + 1);
    expect_rejected(
        "a record one byte over the limit",
        log.append(vec![too_large.clone()]).await,
    );
    expect_rejected(
        "a batch holding one record over the limit",
        log.append(vec![record(&tag, &room, 1, 1), too_large]).await,
    );
    let too_many = (0..=limits.append_batch_records_max)
        .map(|index| record(&tag, &room, 1, 2 + index as u32))
        .collect();
    expect_rejected(
        "a batch one record over the limit",
        log.append(too_many).await,
    );
    let most = limits.append_batch_records_max as u32;
    append_ok(
        log,
        (1..=most).map(|seq| record(&tag, &room, 0, seq)).collect(),
    )
    .await;

    let mut reader = Reader::open(log, start, &tag).await;
    reader.read_until_mine(1 + most as usize).await;
    assert!(
        reader.mine.iter().all(|item| item.record.appender == 0),
        "{tag}: a record of a rejected batch was delivered"
    );
    assert_eq!(
        reader.mine[0].entry.payload, largest.payload,
        "{tag}: the largest record came back altered"
    );
    assert_per_room_order(&tag, &reader.mine, 1, 1, 1 + most);
}

/// Entries survive a restart of the backend: reopened on the same data, the head covers the old
/// head, a subscription from a checkpoint taken before the restart delivers exactly the entries
/// after it, and entries appended after the restart follow with higher positions and timestamps
/// that did not go back.
pub async fn restart_resumes_from_checkpoint(
    open: impl AsyncFn() -> Result<Box<dyn Log>, LogError>,
) {
    let tag = unique_tag("restart_resumes_from_checkpoint");
    const ROOMS: usize = 2;
    let rooms: Vec<String> = (0..ROOMS).map(|room| room_name(&tag, room)).collect();
    let batch = |seqs: std::ops::Range<u32>| -> Vec<Append> {
        let tag = tag.as_str();
        seqs.flat_map(|seq| rooms.iter().map(move |room| record(tag, room, 0, seq)))
            .collect()
    };

    let first = open().await.expect("open the log under test");
    let start = head(&*first).await;
    for seqs in [0..5, 5..10, 10..15, 15..20] {
        append_ok(&*first, batch(seqs)).await;
    }
    let mut before = Reader::open(&*first, start.clone(), &tag).await;
    before.read_until_mine(40).await;
    let entries_before = by_position(&before.mine);
    let head_before = head(&*first).await;
    // A snapshot of the first room as of its 3rd record survives too.
    let snapshot = snapshot_of(&tag, &before.mine[4], 1000);
    store_ok(&*first, snapshot.clone(), true).await;
    drop(before);
    drop(first);

    let second = open().await.expect("reopen the log under test");
    assert_eq!(
        load(&*second, &snapshot.room).await,
        Some(snapshot.clone()),
        "{tag}: a snapshot did not survive a restart"
    );
    let head_after = head(&*second).await;
    assert!(
        head_after.covers(&head_before),
        "{tag}: head went back across a restart: {head_before:?} then {head_after:?}"
    );
    let mut all = Reader::open(&*second, start, &tag).await;
    all.read_until_mine(40).await;
    assert_eq!(
        by_position(&all.mine),
        entries_before,
        "{tag}: entries changed across a restart"
    );

    let middle = all.mine[19].checkpoint_after.clone();
    let mut resumed = Reader::open(&*second, middle, &tag).await;
    resumed.read_until_mine(20).await;
    assert_eq!(
        by_position(&resumed.mine),
        by_position(&all.mine[20..]),
        "{tag}: resuming after a restart"
    );

    append_ok(&*second, batch(20..25)).await;
    // Both readers saw the old entries before the new ones, so their per-shard checks of
    // positions and timestamps span the restart.
    resumed.read_until_mine(30).await;
    all.read_until_mine(50).await;
    assert_per_room_order(&tag, &all.mine, ROOMS, 1, 25);
}

// Snapshots and trimming.

/// A snapshot of `delivered`'s room as of that entry, with `bytes` bytes that say what they are.
fn snapshot_of(tag: &str, delivered: &Delivered, bytes: usize) -> Snapshot {
    let mut content = format!(
        "{tag} snapshot of {} at {:?} ",
        delivered.record.room, delivered.entry.position
    )
    .into_bytes();
    content.resize(bytes.max(content.len()), b's');
    Snapshot {
        room: delivered.record.room.as_str().into(),
        shard: delivered.entry.shard.clone(),
        position: delivered.entry.position,
        bytes: Bytes::from(content),
    }
}

async fn store_ok(log: &dyn Log, snapshot: Snapshot, expect_stored: bool) {
    match log.store_snapshot(snapshot.clone()).await {
        Ok(stored) => assert_eq!(
            stored,
            expect_stored,
            "{}: storing the snapshot of {} at {:?}: stored = {stored}",
            log.describe(),
            snapshot.room,
            snapshot.position
        ),
        Err(error) => panic!("{}: storing a snapshot failed: {error}", log.describe()),
    }
}

async fn load(log: &dyn Log, room: &str) -> Option<Snapshot> {
    log.load_snapshot(room)
        .await
        .unwrap_or_else(|error| panic!("{}: loading a snapshot failed: {error}", log.describe()))
}

async fn trim_ok(log: &dyn Log, shard: &ShardId, through: Position) {
    if let Err(error) = log.trim(shard, through).await {
        panic!(
            "{}: trimming {shard} through {through:?} failed: {error}",
            log.describe()
        );
    }
}

/// Appends `count` records of `bytes` bytes each to `room` (appender 0, seq `0..count`), in
/// batches of 10, and reads them back from the head before: the delivered entries, in order.
async fn append_and_read(
    log: &dyn Log,
    tag: &str,
    room: &str,
    count: u32,
    bytes: usize,
) -> Vec<Delivered> {
    let start = head(log).await;
    let records: Vec<Append> = (0..count)
        .map(|seq| padded_record(tag, room, 0, seq, bytes))
        .collect();
    for batch in records.chunks(10) {
        append_ok(log, batch.to_vec()).await;
    }
    let mut reader = Reader::open(log, start, tag).await;
    reader.read_until_mine(count as usize).await;
    assert_per_room_order(tag, &reader.mine, 1, 1, count);
    reader.mine
}

/// A stored snapshot comes back whole from `load_snapshot` and is listed by `list_snapshots`;
/// a room without one has none. A snapshot far larger than a record (3 MiB) is kept intact.
pub async fn snapshots_store_and_load(log: &dyn Log) {
    let tag = unique_tag("snapshots_store_and_load");
    let room = room_name(&tag, 0);
    let delivered = append_and_read(log, &tag, &room, 5, 256).await;
    assert_eq!(
        load(log, &room).await,
        None,
        "{tag}: a snapshot before any was stored"
    );
    let snapshot = snapshot_of(&tag, &delivered[2], 3 * 1024 * 1024);
    store_ok(log, snapshot.clone(), true).await;
    assert_eq!(
        load(log, &room).await,
        Some(snapshot.clone()),
        "{tag}: the snapshot loaded"
    );
    let listed = log
        .list_snapshots()
        .await
        .unwrap_or_else(|error| panic!("{tag}: listing snapshots failed: {error}"));
    assert!(
        listed.contains(&snapshot.info()),
        "{tag}: {:?} is not listed in {listed:?}",
        snapshot.info()
    );
    assert_eq!(
        load(log, &room_name(&tag, 1)).await,
        None,
        "{tag}: a room that has none"
    );
}

/// The store keeps the newest snapshot of a room: an older one, or another at the same
/// position, is refused (`false`) and changes nothing; a newer one replaces it.
pub async fn newer_snapshot_wins(log: &dyn Log) {
    let tag = unique_tag("newer_snapshot_wins");
    let room = room_name(&tag, 0);
    let delivered = append_and_read(log, &tag, &room, 6, 256).await;
    let held = snapshot_of(&tag, &delivered[3], 100);
    store_ok(log, held.clone(), true).await;
    store_ok(log, snapshot_of(&tag, &delivered[1], 200), false).await;
    store_ok(log, snapshot_of(&tag, &delivered[3], 300), false).await;
    assert_eq!(
        load(log, &room).await,
        Some(held),
        "{tag}: an older snapshot replaced a newer one"
    );
    let newer = snapshot_of(&tag, &delivered[5], 400);
    store_ok(log, newer.clone(), true).await;
    assert_eq!(
        load(log, &room).await,
        Some(newer),
        "{tag}: a newer snapshot was not kept"
    );
    // Concurrent stores of one room: the newest wins whatever the order they land in.
    let racing: Vec<Snapshot> = (0..6)
        .map(|index| snapshot_of(&tag, &delivered[index], 500 + index))
        .collect();
    futures::future::join_all(
        racing
            .iter()
            .map(|snapshot| log.store_snapshot(snapshot.clone())),
    )
    .await;
    assert_eq!(
        load(log, &room).await.map(|snapshot| snapshot.position),
        Some(delivered[5].entry.position),
        "{tag}: racing stores"
    );
}

/// After a snapshot at record 150 of 200 and `trim` through it: `trimmed()` names the position,
/// a subscription from there delivers exactly records 151..199, the head is unchanged, and a
/// subscription from the start finds some of the history gone (said with `Trimmed` where it was
/// deleted under it) while every record after the trim position is still delivered, in order.
pub async fn trim_drops_history_before_a_snapshot(log: &dyn Log) {
    let tag = unique_tag("trim_drops_history_before_a_snapshot");
    let room = room_name(&tag, 0);
    let delivered = append_and_read(log, &tag, &room, 200, 1024).await;
    let cut = &delivered[150];
    let shard = cut.entry.shard.clone();
    store_ok(log, snapshot_of(&tag, cut, 100), true).await;
    let head_before = head(log).await;
    trim_ok(log, &shard, cut.entry.position).await;
    assert_eq!(
        head(log).await,
        head_before,
        "{tag}: trimming moved the head"
    );
    let trimmed = log
        .trimmed()
        .await
        .unwrap_or_else(|error| panic!("{tag}: trimmed() failed: {error}"));
    assert_eq!(
        trimmed.get(&shard),
        Some(cut.entry.position),
        "{tag}: trimmed() does not name the trim position"
    );

    let mut from_marker = Reader::open(log, trimmed, &tag).await;
    from_marker.read_until_caught_up().await;
    let seqs: Vec<u32> = from_marker
        .mine
        .iter()
        .map(|item| item.record.seq)
        .collect();
    assert_eq!(
        seqs,
        (151..200).collect::<Vec<_>>(),
        "{tag}: reading on from trimmed()"
    );
    assert!(
        from_marker.trims.is_empty(),
        "{tag}: Trimmed from the trim marker itself"
    );

    let mut from_start = Reader::open(log, Checkpoint::start(), &tag).await;
    from_start.read_until_caught_up().await;
    let seqs: Vec<u32> = from_start.mine.iter().map(|item| item.record.seq).collect();
    let first = seqs.first().copied().unwrap_or(200);
    assert!(
        first > 0,
        "{tag}: nothing was trimmed: the start still delivers record 0"
    );
    assert!(
        first <= 151,
        "{tag}: trimmed past the trim position: first record {first}"
    );
    assert_eq!(
        seqs,
        (first..200).collect::<Vec<_>>(),
        "{tag}: a gap after trimming"
    );

    // A later trim never goes back, and tombstones are trimmed with the history.
    trim_ok(log, &shard, delivered[10].entry.position).await;
    let trimmed = log
        .trimmed()
        .await
        .unwrap_or_else(|error| panic!("{tag}: {error}"));
    assert_eq!(
        trimmed.get(&shard),
        Some(cut.entry.position),
        "{tag}: the trim marker went back"
    );
}

/// A subscription that has read only the start of a room while the room is trimmed far past it
/// never skips silently: each room's records keep coming in order, except across a `Trimmed`
/// event, after which they come on from past its position; and every record after the trim
/// position arrives.
pub async fn a_reader_behind_a_trim_is_told(log: &dyn Log) {
    let tag = unique_tag("a_reader_behind_a_trim_is_told");
    let room = room_name(&tag, 0);
    let start = head(log).await;
    // Subscribed before the records exist, and read only after the trim.
    let mut lagging = Reader::open(log, start.clone(), &tag).await;
    let delivered = append_and_read(log, &tag, &room, 200, 1024).await;
    let cut = &delivered[150];
    store_ok(log, snapshot_of(&tag, cut, 100), true).await;
    trim_ok(log, &cut.entry.shard, cut.entry.position).await;
    lagging
        .read_until("the room's last record", |reader| {
            reader
                .mine
                .last()
                .is_some_and(|item| item.record.seq == 199)
        })
        .await;
    let mut expected = 0;
    let mut trims = lagging.trims.iter().peekable();
    for (index, item) in lagging.mine.iter().enumerate() {
        while let Some((_, through, _)) = trims.next_if(|(_, _, before)| *before <= index) {
            assert!(
                item.entry.position > *through,
                "{tag}: record {} at {:?} came after Trimmed through {through:?}",
                item.record.seq,
                item.entry.position
            );
            expected = item.record.seq;
        }
        assert_eq!(
            item.record.seq, expected,
            "{tag}: a silent gap in a lagging subscription"
        );
        expected += 1;
    }
}

/// `forget_room(room, last)` with `last` the room's newest entry drops the room's history and
/// snapshot, or (where rooms share a shard) leaves a tombstone at `last` that trimming removes
/// with the history; with a `last` that is no longer the newest, nothing after it is dropped.
pub async fn forget_room_drops_history_and_snapshot(log: &dyn Log) {
    let tag = unique_tag("forget_room_drops_history_and_snapshot");
    let room = room_name(&tag, 0);
    let delivered = append_and_read(log, &tag, &room, 4, 256).await;
    store_ok(log, snapshot_of(&tag, &delivered[1], 100), true).await;
    let last = delivered[3].entry.position;
    let shard = delivered[3].entry.shard.clone();
    let forgotten = log
        .forget_room(&room, last)
        .await
        .unwrap_or_else(|error| panic!("{tag}: forget_room failed: {error}"));
    assert!(
        forgotten,
        "{tag}: forget_room with the newest entry answered false"
    );
    let mut after = Reader::open(log, Checkpoint::start(), &tag).await;
    after.read_until_caught_up().await;
    match load(log, &room).await {
        None => assert!(
            after.mine.is_empty(),
            "{tag}: the room's history survived forget_room without a tombstone"
        ),
        Some(tombstone) => {
            assert!(
                tombstone.is_tombstone(),
                "{tag}: a snapshot survived forget_room"
            );
            assert_eq!(tombstone.position, last, "{tag}: the tombstone's position");
            trim_ok(log, &shard, last).await;
            assert_eq!(
                load(log, &room).await,
                None,
                "{tag}: trimming kept the tombstone"
            );
        }
    }

    // A stale `last`: the room got a record after it.
    let room = room_name(&tag, 1);
    let delivered = append_and_read(log, &tag, &room, 4, 256).await;
    let snapshot = snapshot_of(&tag, &delivered[0], 100);
    store_ok(log, snapshot.clone(), true).await;
    let stale = delivered[1].entry.position;
    let forgotten = log
        .forget_room(&room, stale)
        .await
        .unwrap_or_else(|error| panic!("{tag}: forget_room failed: {error}"));
    let mut after = Reader::open(log, Checkpoint::start(), &tag).await;
    after.read_until_caught_up().await;
    let kept: Vec<u32> = after
        .mine
        .iter()
        .filter(|item| item.record.room == room)
        .map(|item| item.record.seq)
        .collect();
    if forgotten {
        let tombstone = load(log, &room).await;
        assert!(
            tombstone
                .as_ref()
                .is_some_and(|t| t.is_tombstone() && t.position == stale),
            "{tag}: forget_room with a stale position answered true without a tombstone at it: \
             {tombstone:?}"
        );
        assert_eq!(
            kept,
            vec![0, 1, 2, 3],
            "{tag}: entries after a tombstone were dropped"
        );
    } else {
        assert_eq!(
            load(log, &room).await,
            Some(snapshot),
            "{tag}: a refused forget dropped the snapshot"
        );
        assert_eq!(
            kept,
            vec![0, 1, 2, 3],
            "{tag}: a refused forget dropped history"
        );
    }
}
