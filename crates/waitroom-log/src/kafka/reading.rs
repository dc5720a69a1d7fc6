//! Reading: each subscription is a consumer of its own, assigned every partition of the log
//! topic by hand at the positions it delivered (see "Mapping the Log trait onto Kafka" in the
//! module documentation of `kafka`).
//!
//! Starting, and after every outage, a subscription:
//! 1. checks the topic is still there with its partition count;
//! 2. reads every partition's low and high watermarks (one request each) and the trim markers;
//! 3. for each partition: a position past the high watermark means the checkpoint is of other
//!    data, or the brokers lost records this log delivered (refused: [`LogError::Rejected`] at
//!    subscribe, [`LogError::Corrupt`] on a reconnect); a first offset to read below the low
//!    watermark or at or below the partition's "deleted through" marker means records it had
//!    not delivered were trimmed: it says [`Event::Trimmed`] and goes on after them;
//! 4. assigns every partition at the offset after its position; the high watermarks are its
//!    catch-up targets.
//!
//! [`Event::CaughtUp`] follows once every partition was delivered up to its target, or reported
//! at its end (librdkafka's partition EOF). A fetch that finds its offset deleted (trimmed while
//! this subscription lagged) starts over from step 1 without reporting `Unavailable`. When no
//! record arrives for [`WATCHDOG_INTERVAL`], the subscription reads the high watermarks: if the
//! brokers do not answer it reports [`Event::Unavailable`] and reconnects with backoff
//! ([`RECONNECT_DELAY_MIN`] to [`RECONNECT_DELAY_MAX`], for as long as it lives), resuming after
//! its last delivered offset of each partition (no gap, no duplicate), then says `CaughtUp`
//! again; if a partition ends before what it delivered, it fails with [`LogError::Corrupt`].

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::connection::{ReadConsumer, Shared, reconnect_delay};
use super::settings::*;
use crate::{Checkpoint, Entry, Event, LogError, Position, ShardId};

/// Why a subscription's setup or read failed.
#[derive(Debug)]
enum Failure {
    /// The brokers failed or could not be reached: retried.
    Transient(String),
    /// The subscription cannot go on (the error is delivered and the stream ends).
    Fatal(LogError),
}

impl From<LogError> for Failure {
    fn from(error: LogError) -> Self {
        match error {
            LogError::Unavailable(why) => Failure::Transient(why),
            other => Failure::Fatal(other),
        }
    }
}

/// How a subscription (re)starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// From `subscribe`: a checkpoint past a partition's end is the caller's error.
    Initial,
    /// After an outage: catch up again; a partition that went back lost records.
    Reconnect,
    /// After a fetch found its offset deleted: no new `CaughtUp` if already caught up.
    Resync,
}

/// Starts a subscription (see the module documentation).
pub(super) async fn subscribe(
    shared: Arc<Shared>,
    from: Checkpoint,
    number: u64,
) -> Result<BoxStream<'static, Result<Event, LogError>>, LogError> {
    shared.check_intact()?;
    let mut positions = vec![-1_i64; shared.partitions as usize];
    for (shard, position) in &from.0 {
        // Shards of other logs are not read here.
        if let Ok(partition) = shared.partition(shard) {
            positions[partition as usize] = i64::try_from(position.0).map_err(|_| {
                LogError::Rejected(format!(
                    "checkpoint position {} of {shard} is not an offset",
                    position.0
                ))
            })?;
        }
    }
    let shards = (0..shared.partitions)
        .map(|partition| shared.shard(partition))
        .collect();
    let (sender, receiver) = mpsc::channel(SUBSCRIBE_QUEUE_EVENTS_MAX);
    let mut subscription = Subscription {
        shared,
        number,
        shards,
        positions,
        consumer: None,
        catch_up: None,
        trimmed: Vec::new(),
        went_back: Vec::new(),
        committed: Vec::new(),
        last_commit: Instant::now(),
        sender,
    };
    match subscription.setup(Setup::Initial).await {
        Ok(()) => {}
        Err(Failure::Fatal(error)) => return Err(error),
        Err(Failure::Transient(why)) => {
            return Err(LogError::Unavailable(format!(
                "subscribing to {}: {why}",
                subscription.shared.description
            )));
        }
    }
    tokio::spawn(subscription.run());
    Ok(
        futures::stream::unfold(receiver, |mut receiver| async move {
            let event = receiver.recv().await?;
            Some((event, receiver))
        })
        .boxed(),
    )
}

/// The reading side of one subscription, run as a task feeding the subscription's channel.
struct Subscription {
    shared: Arc<Shared>,
    number: u64,
    /// The shard name of each partition.
    shards: Vec<ShardId>,
    /// Per partition, the last offset delivered (or to start after); −1 for none.
    positions: Vec<i64>,
    /// `None` while disconnected.
    consumer: Option<Arc<ReadConsumer>>,
    /// Until `CaughtUp` is delivered: per partition not yet read that far, the last offset it
    /// had at (re)start.
    catch_up: Option<Vec<(i32, i64)>>,
    /// `Trimmed` events found by the last setup, to send before reading on.
    trimmed: Vec<Event>,
    /// Partitions found shorter than what this subscription delivered, and where they now end:
    /// said ([`Event::Regressed`]) just before the subscription fails for good.
    went_back: Vec<(ShardId, Option<Position>)>,
    /// The positions last committed to the node's group.
    committed: Vec<i64>,
    last_commit: Instant,
    sender: mpsc::Sender<Result<Event, LogError>>,
}

impl Subscription {
    /// Connects and assigns every partition: see the module documentation.
    async fn setup(&mut self, mode: Setup) -> Result<(), Failure> {
        self.consumer = None;
        let shared = Arc::clone(&self.shared);
        let topic = shared.settings.topic.as_str();
        match shared.topic_partitions(topic).await? {
            Some(partitions) if partitions == shared.partitions => {}
            Some(partitions) => {
                return Err(Failure::Fatal(LogError::Rejected(format!(
                    "topic {topic} now has {partitions} partitions instead of {}: rooms moved to \
                     other partitions",
                    shared.partitions
                ))));
            }
            None => {
                if mode != Setup::Initial {
                    self.went_back = (0..shared.partitions as usize)
                        .filter(|index| self.positions[*index] >= 0)
                        .map(|index| (self.shards[index].clone(), None))
                        .collect();
                }
                return Err(Failure::Fatal(shared.lost(format!(
                    "topic {topic} no longer exists: it was deleted, or the brokers lost it (a \
                     broker that keeps nothing across a restart?)"
                ))));
            }
        }
        let high = shared.watermarks(Offset::End).await?;
        let low = shared.watermarks(Offset::Beginning).await?;
        let deleted = shared.deleted_markers().await?;
        let mut targets = Vec::new();
        let mut assignment = TopicPartitionList::with_capacity(self.positions.len());
        self.trimmed.clear();
        for partition in 0..shared.partitions {
            let index = partition as usize;
            let shard = &self.shards[index];
            let position = self.positions[index];
            if position >= high[index] {
                let problem = format!(
                    "position {position} of {shard} is past the partition's last offset {} \
                     (first {}): the checkpoint was taken on other data, or the brokers lost \
                     acknowledged records (see Durability in the log::kafka docs)",
                    high[index] - 1,
                    low[index]
                );
                if mode != Setup::Initial {
                    self.went_back = vec![(shard.clone(), ends_at(low[index], high[index]))];
                }
                return Err(Failure::Fatal(match mode {
                    Setup::Initial => LogError::Rejected(problem),
                    Setup::Reconnect | Setup::Resync => shared.lost(problem),
                }));
            }
            let first_kept = low[index].max(deleted[index].map_or(0, |d| d as i64 + 1));
            if first_kept > position + 1 {
                tracing::warn!(log = %shared.description, %shard, "records this subscription had not read were trimmed: its rooms go back to their snapshots");
                self.positions[index] = first_kept - 1;
                self.trimmed.push(Event::Trimmed {
                    shard: shard.clone(),
                    through: Position((first_kept - 1) as u128),
                });
            }
            if high[index] - 1 > self.positions[index] {
                targets.push((partition, high[index] - 1));
            }
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(self.positions[index] + 1))
                .map_err(|error| Failure::Transient(error.to_string()))?;
        }
        let consumer = shared.consumer(&shared.node)?;
        consumer
            .assign(&assignment)
            .map_err(|error| Failure::Transient(format!("assigning the partitions: {error}")))?;
        self.consumer = Some(Arc::new(consumer));
        if mode != Setup::Resync || self.catch_up.is_some() {
            self.catch_up = Some(targets);
        }
        Ok(())
    }

    /// Delivers events until the subscriber drops the stream or a fatal error.
    async fn run(mut self) {
        loop {
            for event in std::mem::take(&mut self.trimmed) {
                if !self.send(event).await {
                    return;
                }
            }
            if self.catch_up.as_ref().is_some_and(Vec::is_empty) {
                self.catch_up = None;
                if !self.send(Event::CaughtUp).await {
                    return;
                }
            }
            self.commit_if_due();
            let Some(consumer) = self.consumer.clone() else {
                if !self
                    .reconnect(Failure::Transient("not connected".to_owned()))
                    .await
                {
                    return;
                }
                continue;
            };
            let sender = self.sender.clone();
            let received = tokio::select! {
                () = sender.closed() => return,
                received = tokio::time::timeout(WATCHDOG_INTERVAL, consumer.recv()) => received,
            };
            let failure = match received {
                Err(_idle) => match self.watchdog().await {
                    Ok(()) => continue,
                    Err(failure) => failure,
                },
                Ok(Ok(message)) => {
                    let mut entries = Vec::new();
                    self.accept(&message, &mut entries);
                    drop(message);
                    // Whatever else is already fetched goes in the same batch.
                    let mut failure = None;
                    while entries.len() < SUBSCRIBE_BATCH_ENTRIES_MAX {
                        match consumer.recv().now_or_never() {
                            Some(Ok(message)) => self.accept(&message, &mut entries),
                            Some(Err(error)) => {
                                failure = self.consumer_error(error);
                                break;
                            }
                            None => break,
                        }
                    }
                    if !entries.is_empty() && !self.send(Event::Entries(entries)).await {
                        return;
                    }
                    self.update_catch_up(None);
                    match failure {
                        None => continue,
                        Some(failure) => failure,
                    }
                }
                Ok(Err(error)) => match self.consumer_error(error) {
                    None => continue,
                    Some(failure) => failure,
                },
            };
            match failure {
                Stop::Resync => match self.setup(Setup::Resync).await {
                    Ok(()) => {}
                    Err(failure) => {
                        if !self.reconnect(failure).await {
                            return;
                        }
                    }
                },
                Stop::Failed(failure) => {
                    if !self.reconnect(failure).await {
                        return;
                    }
                }
            }
        }
    }

    /// Turns one record into an entry (unless it was delivered already).
    fn accept(&mut self, message: &BorrowedMessage<'_>, entries: &mut Vec<Entry>) {
        let Some(index) = usize::try_from(message.partition())
            .ok()
            .filter(|index| *index < self.positions.len())
        else {
            return;
        };
        let offset = message.offset();
        if offset <= self.positions[index] {
            return;
        }
        self.positions[index] = offset;
        let timestamp_ms = match message.timestamp() {
            Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => {
                u64::try_from(ms).unwrap_or(0)
            }
            // Kafka records always carry a time since message format v1; the room's clock
            // (`max(now, time)`) ignores a zero.
            Timestamp::NotAvailable => 0,
        };
        entries.push(Entry {
            shard: self.shards[index].clone(),
            position: Position(offset as u128),
            timestamp_ms,
            payload: message
                .payload()
                .map(Bytes::copy_from_slice)
                .unwrap_or_default(),
        });
    }

    /// Drops the catch-up targets reached (or, with `eof`, of a partition found at its end).
    fn update_catch_up(&mut self, eof: Option<i32>) {
        if let Some(targets) = &mut self.catch_up {
            let positions = &self.positions;
            targets.retain(|(partition, target)| {
                Some(*partition) != eof && positions[*partition as usize] < *target
            });
        }
    }

    /// What a consumer error means: `None` to read on.
    fn consumer_error(&mut self, error: KafkaError) -> Option<Stop> {
        match error {
            KafkaError::PartitionEOF(partition) => {
                self.update_catch_up(Some(partition));
                None
            }
            KafkaError::MessageConsumption(
                RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset,
            ) => {
                // Trimmed under this subscription: the setup finds where to go on, and says so.
                tracing::info!(log = %self.shared.description, "a fetch found its offset deleted: checking the trim markers");
                Some(Stop::Resync)
            }
            other => Some(Stop::Failed(Failure::Transient(other.to_string()))),
        }
    }

    /// No record for a while: checks the brokers answer and did not lose records.
    async fn watchdog(&mut self) -> Result<(), Stop> {
        let high = self
            .shared
            .watermarks(Offset::End)
            .await
            .map_err(|error| Stop::Failed(error.into()))?;
        for (index, high) in high.iter().enumerate() {
            if self.positions[index] >= *high {
                // The low watermark is not read here: a partition that ends before what was
                // delivered holds nothing this subscription can place anyway.
                self.went_back = vec![(self.shards[index].clone(), ends_at(0, *high))];
                return Err(Stop::Failed(Failure::Fatal(self.shared.lost(format!(
                    "{} ends at offset {}, but this subscription delivered offset {}: the brokers \
                     lost acknowledged records (a broker that keeps nothing across a restart?)",
                    self.shards[index],
                    high - 1,
                    self.positions[index]
                )))));
            }
        }
        // An idle subscription that is behind a target may have missed an EOF: read on.
        Ok(())
    }

    /// Commits the delivered positions to the node's group, for operators' lag tools (named
    /// nodes only; best effort).
    fn commit_if_due(&mut self) {
        if !self.shared.node_configured
            || self.number != 0
            || self.last_commit.elapsed() < COMMIT_INTERVAL
            || self.committed == self.positions
        {
            return;
        }
        let Some(consumer) = &self.consumer else {
            return;
        };
        self.last_commit = Instant::now();
        let mut offsets = TopicPartitionList::new();
        for (partition, position) in self.positions.iter().enumerate() {
            if *position >= 0 {
                let added = offsets.add_partition_offset(
                    &self.shared.settings.topic,
                    partition as i32,
                    Offset::Offset(position + 1),
                );
                if added.is_err() {
                    return;
                }
            }
        }
        match consumer.commit(&offsets, CommitMode::Async) {
            Ok(()) => self.committed = self.positions.clone(),
            Err(error) => {
                tracing::debug!(log = %self.shared.description, %error, "committing positions to the node's group")
            }
        }
    }

    /// Sends an event; false when the subscriber is gone.
    async fn send(&self, event: Event) -> bool {
        self.sender.send(Ok(event)).await.is_ok()
    }

    /// Reports the failure and reconnects, retrying with backoff; false when the subscription
    /// must end (the subscriber is gone, or the failure is fatal).
    async fn reconnect(&mut self, mut failure: Failure) -> bool {
        self.consumer = None;
        let mut attempt = 0;
        loop {
            let why = match failure {
                Failure::Fatal(error) => {
                    if !self.went_back.is_empty() {
                        // The node counts and logs it; this log then refuses every operation,
                        // so the node stays unready until it is restarted (see `kafka`).
                        let shards = std::mem::take(&mut self.went_back);
                        let _ = self.sender.send(Ok(Event::Regressed { shards })).await;
                    }
                    tracing::error!(log = %self.shared.description, "subscription failed: {error}");
                    // The subscriber may be gone already; the stream ends either way.
                    let _ = self.sender.send(Err(error)).await;
                    return false;
                }
                Failure::Transient(why) => why,
            };
            tracing::warn!(log = %self.shared.description, attempt, "Kafka unavailable: {why}");
            if !self.send(Event::Unavailable(why)).await {
                return false;
            }
            let delay = reconnect_delay(attempt);
            attempt = attempt.saturating_add(1);
            let sender = self.sender.clone();
            tokio::select! {
                () = sender.closed() => return false,
                () = tokio::time::sleep(delay) => {}
            }
            match self.setup(Setup::Reconnect).await {
                Ok(()) => {
                    tracing::info!(log = %self.shared.description, "reconnected to Kafka");
                    return true;
                }
                Err(next) => failure = next,
            }
        }
    }
}

/// Why reading stopped.
enum Stop {
    /// Set up again where the trim markers say, without reporting an outage.
    Resync,
    Failed(Failure),
}

/// Where a partition with watermarks `low` and `high` ends: its last offset, `None` when empty.
fn ends_at(low: i64, high: i64) -> Option<Position> {
    (high > low && high > 0).then(|| Position((high - 1) as u128))
}
