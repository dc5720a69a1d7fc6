//! Reading: the head of a stream, and subscriptions, each with a connection of its own. See
//! "head()" and "Reading" in the module documentation of `rabbitmq`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use super::appending::Markers;
use super::message::{self, Body};
use super::protocol::{self, Chunk, Connection, Delivery, OffsetSpec};
use super::settings::*;
use super::{RabbitMqLog, Shared, random_u64};
use crate::{Checkpoint, Entry, Event, LogError, Position};

/// The offset of the last record in `stream` (see "head()" in the module documentation), or
/// `None` when it holds none.
///
/// # Errors
/// `Unavailable` when RabbitMQ fails, or the last [`HEAD_STEPS_BACK_MAX`] chunks hold no record.
pub(super) async fn last_record(conn: &Connection, stream: &str) -> Result<Option<u64>, LogError> {
    let missing = || LogError::Unavailable(format!("stream {stream} does not exist"));
    let mut chunk = conn
        .read_one(stream, OffsetSpec::Last)
        .await?
        .ok_or_else(missing)?;
    for _ in 0..=HEAD_STEPS_BACK_MAX {
        let last = chunk
            .messages
            .iter()
            .rposition(|message| matches!(message::decode(message), Ok(Body::Record { .. })));
        if let Some(index) = last {
            return Ok(Some(chunk.first_offset + index as u64));
        }
        if chunk.first_offset == 0 {
            return Ok(None);
        }
        let previous = conn
            .read_one(stream, OffsetSpec::Offset(chunk.first_offset - 1))
            .await?
            .ok_or_else(missing)?;
        if previous.first_offset >= chunk.first_offset {
            // Nothing before it is left (retention): no record.
            return Ok(None);
        }
        chunk = previous;
    }
    Err(LogError::Unavailable(format!(
        "the last HEAD_STEPS_BACK_MAX ({HEAD_STEPS_BACK_MAX}) chunks of {stream} hold no record"
    )))
}

/// Delay before reconnection attempt `attempt` (0-based): doubling from [`RECONNECT_DELAY_MIN`]
/// up to [`RECONNECT_DELAY_MAX`], each drawn in the upper half of its range so nodes spread out.
pub(super) fn reconnect_delay(attempt: u32) -> Duration {
    let ceiling = RECONNECT_DELAY_MIN
        .saturating_mul(1 << attempt.min(16))
        .min(RECONNECT_DELAY_MAX);
    let half = ceiling / 2;
    let jitter_ms = random_u64() % (half.as_millis() as u64 + 1);
    half + Duration::from_millis(jitter_ms)
}

/// Why a subscription's setup or read failed.
enum Failure {
    /// RabbitMQ failed or could not be reached: retried.
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
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// From `subscribe`: starts after the trim marker at the earliest, and a checkpoint past the
    /// stream's last record is an error.
    Initial,
    /// After an outage: goes on from the last delivered offset.
    Reconnect,
}

/// Where a subscription stands with `CaughtUp`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CatchUp {
    /// Delivered (until the next reconnect).
    Done,
    /// To deliver now: the position reached the target at setup.
    Due,
    /// To deliver once the record at this offset was delivered.
    Until(u64),
}

/// The reading side of one subscription, run as a task feeding the subscription's channel.
struct Subscription {
    shared: Arc<Shared>,
    /// Offset of the next entry to deliver.
    next: u64,
    conn: Option<Connection>,
    live: Option<protocol::Subscription>,
    catch_up: CatchUp,
    /// `Trimmed` events found by the last setup, to send before reading on.
    pending: Vec<Event>,
    /// Per room, the time of its last delivered entry (see "Positions and time").
    clocks: HashMap<Bytes, u64>,
    sender: mpsc::Sender<Result<Event, LogError>>,
}

impl RabbitMqLog {
    /// # Errors
    /// - [`LogError::Rejected`] when `from` names a position past the log stream's last record
    ///   (a checkpoint taken on other data, or RabbitMQ lost confirmed records).
    /// - [`LogError::Unavailable`] when RabbitMQ cannot be reached to start the subscription.
    pub(super) async fn subscribe_from(
        &self,
        from: Checkpoint,
    ) -> Result<BoxStream<'static, Result<Event, LogError>>, LogError> {
        let next = match from.get(&self.shared.shard) {
            None => 0,
            Some(Position(seen)) => u64::try_from(seen)
                .ok()
                .and_then(|seen| seen.checked_add(1))
                .ok_or_else(|| {
                    LogError::Rejected(format!(
                        "checkpoint position {seen} is not an offset of {}",
                        self.shared.shard
                    ))
                })?,
        };
        let (sender, receiver) = mpsc::channel(SUBSCRIBE_QUEUE_EVENTS_MAX);
        let mut subscription = Subscription {
            shared: Arc::clone(&self.shared),
            next,
            conn: None,
            live: None,
            catch_up: CatchUp::Done,
            pending: Vec::new(),
            clocks: HashMap::new(),
            sender,
        };
        match subscription.setup(Setup::Initial).await {
            Ok(()) => {}
            Err(Failure::Fatal(error)) => return Err(error),
            Err(Failure::Transient(why)) => {
                return Err(LogError::Unavailable(format!(
                    "subscribing to {}: {why}",
                    self.shared.description
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
}

impl Subscription {
    /// Connects, reads the catch-up target and subscribes: see "Reading" in the module docs.
    async fn setup(&mut self, mode: Setup) -> Result<(), Failure> {
        self.live = None;
        self.conn = None;
        let names = &self.shared.names;
        let conn = Connection::open(&self.shared.settings, "waitroom subscription").await?;
        if mode == Setup::Initial {
            let marker = conn
                .query_publisher_sequence(super::snapshots::TRIM_REFERENCE, &names.trims)
                .await?
                .and_then(|sequence| sequence.checked_sub(1));
            if let Some(marker) = marker
                && self.next <= marker
            {
                self.pending.push(Event::Trimmed {
                    shard: self.shared.shard.clone(),
                    through: Position(u128::from(marker)),
                });
                self.next = marker + 1;
            }
        }
        if mode == Setup::Reconnect
            && super::appending::create_streams(&conn, &self.shared, Markers::WhereCreated).await?
        {
            // The broker lost the log stream (it came back with an empty data dir, or the
            // stream was deleted): created again, so that the fleet can go on; what this
            // subscription delivered is gone (below).
            tracing::error!(
                log = %self.shared.description,
                "the log stream {} was gone: RabbitMQ lost its data; created it again",
                names.log
            );
        }
        let last = last_record(&conn, &names.log).await?;
        if mode == Setup::Reconnect
            && let Some(seen) = self.next.checked_sub(1)
            && last.is_none_or(|last| seen > last)
        {
            tracing::error!(
                log = %self.shared.description,
                "the log stream ends at {last:?}, before offset {seen} that this subscription \
                 delivered: RabbitMQ lost confirmed records (see Durability in the log::rabbitmq \
                 docs)"
            );
            self.pending.push(Event::Regressed {
                shards: vec![(
                    self.shared.shard.clone(),
                    last.map(|l| Position(u128::from(l))),
                )],
            });
            self.next = last.map_or(0, |last| last + 1);
        }
        if let Some(seen) = self.next.checked_sub(1)
            && last.is_none_or(|last| seen > last)
        {
            let problem = format!(
                "position {seen} of {} is past its last record ({last:?}): the checkpoint was \
                 taken on other data, or RabbitMQ lost confirmed records (see Durability in the \
                 log::rabbitmq docs)",
                self.shared.shard
            );
            if mode == Setup::Initial {
                return Err(Failure::Fatal(LogError::Rejected(problem)));
            }
            tracing::warn!(log = %self.shared.description, "resuming a subscription: {problem}");
        }
        self.catch_up = match last {
            Some(last) if last >= self.next => CatchUp::Until(last),
            _ => CatchUp::Due,
        };
        let live = conn
            .subscribe(
                &names.log,
                OffsetSpec::Offset(self.next),
                SUBSCRIBE_CREDIT_CHUNKS,
            )
            .await?
            .ok_or_else(|| {
                Failure::Transient(format!("the log stream {} does not exist", names.log))
            })?;
        self.live = Some(live);
        self.conn = Some(conn);
        Ok(())
    }

    /// Sends an event; false when the subscriber is gone.
    async fn send(&self, event: Event) -> bool {
        self.sender.send(Ok(event)).await.is_ok()
    }

    /// Delivers events until the subscriber drops the stream or a fatal error.
    async fn run(mut self) {
        loop {
            for event in std::mem::take(&mut self.pending) {
                if !self.send(event).await {
                    return;
                }
            }
            if self.catch_up == CatchUp::Due {
                self.catch_up = CatchUp::Done;
                if !self.send(Event::CaughtUp).await {
                    return;
                }
            }
            let Some(live) = self.live.as_mut() else {
                if !self.reconnect("not connected".to_owned()).await {
                    return;
                }
                continue;
            };
            let sender = self.sender.clone();
            let delivery = tokio::select! {
                () = sender.closed() => return,
                delivery = live.deliveries.recv() => delivery,
            };
            let failure = match delivery {
                Some(Delivery::Chunk(chunk)) => match self.deliver(chunk).await {
                    Ok(true) => continue,
                    Ok(false) => return,
                    Err(failure) => failure,
                },
                Some(Delivery::Ended(why)) => Failure::Transient(why),
                None => Failure::Transient("the subscription's connection closed".to_owned()),
            };
            match failure {
                Failure::Fatal(error) => {
                    tracing::error!(log = %self.shared.description, "subscription failed: {error}");
                    let _ = self.sender.send(Err(error)).await;
                    return;
                }
                Failure::Transient(why) => {
                    if !self.reconnect(why).await {
                        return;
                    }
                }
            }
        }
    }

    /// Reports the failure and reconnects, retrying with backoff; false when the subscription
    /// must end (the subscriber is gone, or the failure is fatal).
    async fn reconnect(&mut self, mut why: String) -> bool {
        self.live = None;
        self.conn = None;
        let mut attempt = 0;
        loop {
            tracing::warn!(log = %self.shared.description, attempt, "RabbitMQ unavailable: {why}");
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
                    tracing::info!(log = %self.shared.description, "reconnected to RabbitMQ");
                    return true;
                }
                Err(Failure::Transient(next)) => why = next,
                Err(Failure::Fatal(error)) => {
                    let _ = self.sender.send(Err(error)).await;
                    return false;
                }
            }
        }
    }

    /// Delivers one chunk's records and grants one more chunk; false when the subscriber is gone.
    async fn deliver(&mut self, chunk: Chunk) -> Result<bool, Failure> {
        if chunk.first_offset > self.next {
            // Retention removed entries this subscription had not delivered.
            tracing::warn!(
                log = %self.shared.description,
                "entries this node had not read were removed by the stream's retention: its \
                 rooms go back to their snapshots"
            );
            let trimmed = Event::Trimmed {
                shard: self.shared.shard.clone(),
                through: Position(u128::from(chunk.first_offset - 1)),
            };
            self.next = chunk.first_offset;
            if !self.send(trimmed).await {
                return Ok(false);
            }
        }
        let mut entries = Vec::with_capacity(chunk.messages.len());
        for (index, stored) in chunk.messages.iter().enumerate() {
            let offset = chunk.first_offset + index as u64;
            if offset < self.next {
                continue;
            }
            self.next = offset + 1;
            match message::decode(stored) {
                Ok(Body::Record { room, payload }) => {
                    let timestamp_ms = match self.clocks.get_mut(&room) {
                        Some(clock) => {
                            *clock = (*clock).max(chunk.timestamp_ms);
                            *clock
                        }
                        None => {
                            if self.clocks.len() < ROOM_CLOCKS_MAX {
                                self.clocks.insert(room, chunk.timestamp_ms);
                            }
                            chunk.timestamp_ms
                        }
                    };
                    entries.push(Entry {
                        shard: self.shared.shard.clone(),
                        position: Position(u128::from(offset)),
                        timestamp_ms,
                        payload,
                    });
                }
                Ok(Body::Marker) => {}
                Ok(_) | Err(_) => {
                    return Err(Failure::Fatal(LogError::Corrupt(format!(
                        "offset {offset} of {} is not a waitroom record: something other than \
                         waitroom writes to this stream",
                        self.shared.shard
                    ))));
                }
            }
        }
        while !entries.is_empty() {
            let rest = entries.split_off(entries.len().min(SUBSCRIBE_BATCH_ENTRIES_MAX));
            if !self.send(Event::Entries(entries)).await {
                return Ok(false);
            }
            entries = rest;
        }
        if let CatchUp::Until(target) = self.catch_up
            && self.next > target
        {
            self.catch_up = CatchUp::Due;
        }
        if let (Some(conn), Some(live)) = (&self.conn, &self.live) {
            conn.credit(live.id, 1).await?;
        }
        Ok(true)
    }
}
