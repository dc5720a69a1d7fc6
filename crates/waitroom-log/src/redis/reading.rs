//! Reading: each subscription has its own connection and consumer group, and reads every room
//! stream with one blocking `XREADGROUP` per round (one per slot under Cluster). See "Reading"
//! in the module documentation of `redis`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use redis::cluster_routing::Slot;
use redis::{Cmd, RedisError, Value};
use tokio::sync::mpsc;

use super::RedisLog;
use super::connection::{Conn, PrimaryGroup, Shared, query_per_slot, reconnect_delay, unavailable};
use super::settings::*;
use super::snapshots::DELETED_FIELD;
use crate::{Checkpoint, Entry, Event, LogError, ShardId};

/// Why a subscription's round or setup failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// Redis failed or could not be reached.
    Redis(RedisError),
    /// Redis answered something this log did not expect.
    Reply(String),
    /// The subscription cannot go on (the error is delivered and the stream ends).
    Fatal(LogError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Redis(error) => write!(f, "{error}"),
            Failure::Reply(message) => f.write_str(message),
            Failure::Fatal(error) => write!(f, "{error}"),
        }
    }
}

impl From<RedisError> for Failure {
    fn from(error: RedisError) -> Self {
        Failure::Redis(error)
    }
}

impl Failure {
    /// A stream or group went missing under the subscription: re-reading the registry fixes it.
    fn needs_resync(&self) -> bool {
        match self {
            Failure::Redis(error) => matches!(error.code(), Some("NOGROUP" | "UNBLOCKED")),
            _ => false,
        }
    }
}

/// The id of a stream entry reply `[id, [field, value, …]]`, and its fields (`None` for an entry
/// deleted while pending, which a `>` read never returns).
pub(super) fn parse_entry(entry: Value) -> Result<(StreamId, Option<Vec<Value>>), Failure> {
    let Value::Array(mut parts) = entry else {
        return Err(Failure::Reply(format!(
            "a stream entry that is not an array: {entry:?}"
        )));
    };
    let fields = match parts.pop() {
        Some(Value::Array(fields)) => Some(fields),
        Some(Value::Nil) => None,
        other => {
            return Err(Failure::Reply(format!("stream entry fields: {other:?}")));
        }
    };
    match parts.pop() {
        Some(Value::BulkString(id)) if parts.is_empty() => StreamId::parse(&id)
            .map(|id| (id, fields))
            .ok_or_else(|| Failure::Reply(format!("a stream id that does not parse: {id:?}"))),
        other => Err(Failure::Reply(format!("stream entry id: {other:?}"))),
    }
}

/// The id of the only entry of an `XREVRANGE … COUNT 1` reply, `None` for an empty stream.
pub(super) fn parse_last_id(reply: Value) -> Result<Option<StreamId>, Failure> {
    match reply {
        Value::Array(mut entries) => match entries.pop() {
            None => Ok(None),
            Some(entry) => parse_entry(entry).map(|(id, _)| Some(id)),
        },
        Value::ServerError(error) => Err(Failure::Redis(error.into())),
        other => Err(Failure::Reply(format!("XREVRANGE answered {other:?}"))),
    }
}

/// One stream of an `XREADGROUP` reply: its key and its entries.
pub(super) type StreamReply = (Vec<u8>, Vec<Value>);

/// The `(stream key, entries)` of an `XREADGROUP` reply (RESP2 array or RESP3 map; nil when
/// nothing arrived).
pub(super) fn parse_read_reply(reply: Value) -> Result<Vec<StreamReply>, Failure> {
    let pairs = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs,
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => {
                    let entries = pair.pop().unwrap_or(Value::Nil);
                    let key = pair.pop().unwrap_or(Value::Nil);
                    Ok((key, entries))
                }
                other => Err(Failure::Reply(format!(
                    "XREADGROUP stream reply: {other:?}"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Value::ServerError(error) => return Err(Failure::Redis(error.into())),
        other => return Err(Failure::Reply(format!("XREADGROUP answered {other:?}"))),
    };
    pairs
        .into_iter()
        .map(|(key, entries)| match (key, entries) {
            (Value::BulkString(key), Value::Array(entries)) => Ok((key, entries)),
            (key, entries) => Err(Failure::Reply(format!(
                "XREADGROUP stream reply: {key:?} {entries:?}"
            ))),
        })
        .collect()
}

/// The last entry id of every stream in `keys`, in order (`None` for an empty or missing one).
pub(super) async fn last_ids(
    conn: &Conn,
    keys: &[Arc<str>],
) -> Result<Vec<Option<StreamId>>, Failure> {
    let commands = keys
        .iter()
        .map(|key| {
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(&**key).arg("+").arg("-").arg("COUNT").arg(1);
            (key.to_string(), cmd)
        })
        .collect();
    query_per_slot(conn, commands, false)
        .await?
        .into_iter()
        .map(parse_last_id)
        .collect()
}

/// Commands that (re)create `group` on `key` positioned at `position`, with an empty pending
/// list. `MKSTREAM` because a room is registered before its first record creates its stream.
pub(super) fn group_reset(
    commands: &mut Vec<(String, Cmd)>,
    key: &str,
    group: &str,
    position: StreamId,
) {
    let mut destroy = redis::cmd("XGROUP");
    destroy.arg("DESTROY").arg(key).arg(group);
    let mut create = redis::cmd("XGROUP");
    create
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg(position.to_string())
        .arg("MKSTREAM");
    // The consumer exists (and counts as live for trimming) from now, not from its first read.
    let mut consumer = redis::cmd("XGROUP");
    consumer
        .arg("CREATECONSUMER")
        .arg(key)
        .arg(group)
        .arg(group);
    commands.push((key.to_owned(), destroy));
    commands.push((key.to_owned(), create));
    commands.push((key.to_owned(), consumer));
}

/// Runs group resets built by [`group_reset`] and checks every `CREATE` succeeded (a `DESTROY`
/// of a group or stream that does not exist is fine).
pub(super) async fn run_group_resets(
    conn: &Conn,
    commands: Vec<(String, Cmd)>,
) -> Result<(), Failure> {
    let replies = query_per_slot(conn, commands, true).await?;
    for create in replies.into_iter().skip(1).step_by(3) {
        match create {
            Value::Okay => {}
            Value::SimpleString(text) if text == "OK" => {}
            Value::ServerError(error) => return Err(Failure::Redis(error.into())),
            other => return Err(Failure::Reply(format!("XGROUP CREATE answered {other:?}"))),
        }
    }
    Ok(())
}

impl RedisLog {
    /// # Errors
    /// - [`LogError::Rejected`] when `from` names a position past the last entry of a room's
    ///   stream (a checkpoint taken on other data, or Redis lost acknowledged entries).
    /// - [`LogError::Unavailable`] when Redis cannot be reached to start the subscription.
    pub(super) async fn subscribe_from(
        &self,
        from: Checkpoint,
    ) -> Result<BoxStream<'static, Result<Event, LogError>>, LogError> {
        let node = &self.shared.node;
        let (group, primary) = if self
            .primary_group_taken
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let primary = PrimaryGroup(Arc::clone(&self.primary_group_taken));
            (node.clone(), Some(primary))
        } else {
            let number = self.subscriptions.fetch_add(1, Ordering::Relaxed) + 1;
            (format!("{node}.{number}"), None)
        };
        let (sender, receiver) = mpsc::channel(SUBSCRIBE_QUEUE_EVENTS_MAX);
        let mut subscription = Subscription {
            shared: Arc::clone(&self.shared),
            destroy_groups_on_exit: self.shared.node_generated || primary.is_none(),
            group,
            _primary: primary,
            conn: None,
            from: from
                .0
                .into_iter()
                .map(|(shard, position)| (shard.0, StreamId::from_position(position)))
                .collect(),
            streams: BTreeMap::new(),
            events_unacked: Vec::new(),
            catch_up: None,
            trimmed: Vec::new(),
            epoch: None,
            last_read_at: Instant::now(),
            sender,
        };
        match subscription.setup(Setup::Initial).await {
            Ok(()) => {}
            Err(Failure::Fatal(error)) => return Err(error),
            Err(failure) => {
                return Err(unavailable(
                    &format!("subscribing to {}", self.shared.description),
                    failure,
                ));
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

/// How a subscription (re)starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// From `subscribe`: a checkpoint past a stream's end is an error.
    Initial,
    /// After an outage: catch up again.
    Reconnect,
    /// After Redis said a stream or group is missing: no new `CaughtUp` if already caught up.
    Resync,
}

/// One stream a subscription reads.
struct StreamState {
    shard: ShardId,
    /// The room's snapshot hash, where the trim markers are.
    snapshot_key: Arc<str>,
    /// The last entry delivered (or the position to start after).
    position: StreamId,
    /// Delivered ids to acknowledge with the next read.
    unacked: Vec<StreamId>,
}

/// The reading side of one subscription, run as a task feeding the subscription's channel.
struct Subscription {
    shared: Arc<Shared>,
    group: String,
    destroy_groups_on_exit: bool,
    _primary: Option<PrimaryGroup>,
    /// `None` while disconnected.
    conn: Option<Conn>,
    /// The checkpoint subscribed from, by stream key: where a room's stream starts when the
    /// subscription first reads it.
    from: BTreeMap<Arc<str>, StreamId>,
    /// The streams read, by key.
    streams: BTreeMap<Arc<str>, StreamState>,
    events_unacked: Vec<StreamId>,
    /// Until `CaughtUp` is delivered: the last entry each stream had at (re)start, for the
    /// streams not yet read that far.
    catch_up: Option<BTreeMap<Arc<str>, StreamId>>,
    /// `Regressed` and `Trimmed` events found by the last setup, to send before reading on.
    trimmed: Vec<Event>,
    /// The epoch key's value when this subscription last (re)started.
    epoch: Option<String>,
    /// When the last read round was sent (see [`READ_STALL_RESYNC`]).
    last_read_at: Instant,
    sender: mpsc::Sender<Result<Event, LogError>>,
}

/// What a delivered read round leads to.
enum Flow {
    Continue { delivered_any: bool },
    Stop,
}

impl Subscription {
    /// Connects and (re)creates the groups: see "Reading" in the module documentation.
    async fn setup(&mut self, mode: Setup) -> Result<(), Failure> {
        self.conn = None;
        let conn = self.shared.read_connection().await?;
        let mut regressed = self.check_epoch(&conn).await?;
        let keys = &self.shared.keys;
        let events_key: Arc<str> = keys.events.as_str().into();
        let events_last = last_ids(&conn, std::slice::from_ref(&events_key))
            .await?
            .pop()
            .flatten()
            .unwrap_or(StreamId::ZERO);
        let rooms: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&keys.rooms)
            .query_async(&mut conn.clone())
            .await?;
        let mut streams = BTreeMap::new();
        for room in rooms {
            let key: Arc<str> = keys.room(&room).into();
            let position = self
                .streams
                .get(&key)
                .map(|state| state.position)
                .or_else(|| self.from.get(&key).copied())
                .unwrap_or(StreamId::ZERO);
            let state = StreamState {
                shard: ShardId(Arc::clone(&key)),
                snapshot_key: keys.snapshot(&room).into(),
                position,
                unacked: Vec::new(),
            };
            streams.insert(key, state);
        }
        self.skip_trimmed(&conn, &mut streams).await?;
        let stream_keys: Vec<Arc<str>> = streams.keys().cloned().collect();
        let lasts = last_ids(&conn, &stream_keys).await?;
        let mut targets = BTreeMap::new();
        for ((key, state), last) in streams.iter_mut().zip(lasts) {
            let last = last.unwrap_or(StreamId::ZERO);
            if mode != Setup::Initial && state.position > last && last > StreamId::ZERO {
                // Trimming always keeps a stream's last entry, so a stream that ends before what
                // this subscription delivered lost entries (an empty one may be a room forgotten
                // and registered again: left to the warning below).
                tracing::error!(
                    log = %self.shared.description,
                    shard = %state.shard,
                    "the stream ends at {last}, before {} that this subscription delivered: Redis \
                     lost acknowledged entries (see Durability in the log::redis docs)",
                    state.position
                );
                regressed.push((state.shard.clone(), Some(last.position())));
                state.position = last;
            } else if state.position > last {
                let problem = format!(
                    "position {} of {key} is past the stream's last entry {last}: the \
                     checkpoint was taken on other data, or Redis lost acknowledged entries \
                     (see Durability in the log::redis docs)",
                    state.position
                );
                if mode == Setup::Initial {
                    return Err(Failure::Fatal(LogError::Rejected(problem)));
                }
                tracing::warn!(log = %self.shared.description, "resuming a subscription: {problem}");
            } else if last > state.position {
                targets.insert(Arc::clone(key), last);
            }
        }
        if !regressed.is_empty() {
            // Before any `Trimmed`: the subscriber rebuilds the shards, then subscribes again.
            self.trimmed
                .insert(0, Event::Regressed { shards: regressed });
        }
        let mut commands = Vec::new();
        group_reset(&mut commands, &events_key, &self.group, events_last);
        for (key, state) in &streams {
            group_reset(&mut commands, key, &self.group, state.position);
        }
        run_group_resets(&conn, commands).await?;
        self.conn = Some(conn);
        self.streams = streams;
        self.events_unacked.clear();
        if mode != Setup::Resync || self.catch_up.is_some() {
            self.catch_up = Some(targets);
        }
        self.last_read_at = Instant::now();
        Ok(())
    }

    /// Reads the epoch key (setting it first if Redis holds none). If it is not the one this
    /// subscription saw before, Redis lost its data (restarted with no persistence, its data
    /// wiped, `FLUSHALL`): returns every stream this subscription had delivered from, as gone
    /// back to nothing, forgets their positions (so their streams are read from the start
    /// again) and has this log's appends register their rooms again.
    async fn check_epoch(
        &mut self,
        conn: &Conn,
    ) -> Result<Vec<(ShardId, Option<crate::Position>)>, Failure> {
        let key = &self.shared.keys.epoch;
        let mut set = redis::cmd("SET");
        set.arg(key)
            .arg(format!("{:016x}", super::connection::random_u64()))
            .arg("NX");
        let mut get = redis::cmd("GET");
        get.arg(key);
        let replies =
            query_per_slot(conn, vec![(key.clone(), set), (key.clone(), get)], false).await?;
        let epoch = match replies.last() {
            Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            other => return Err(Failure::Reply(format!("GET {key} answered {other:?}"))),
        };
        let known = self.epoch.replace(epoch.clone());
        if known.is_none_or(|known| known == epoch) {
            return Ok(Vec::new());
        }
        tracing::error!(
            log = %self.shared.description,
            "Redis lost its data (its epoch key {key} changed): it restarted with no persistence, \
             or its data was wiped; the rooms this node applied are rebuilt from what Redis holds"
        );
        self.shared.data_lost.fetch_add(1, Ordering::AcqRel);
        let mut regressed = Vec::new();
        for state in self.streams.values() {
            if state.position > StreamId::ZERO {
                regressed.push((state.shard.clone(), None));
            }
        }
        for (key, position) in &self.from {
            if !self.streams.contains_key(key) && *position > StreamId::ZERO {
                regressed.push((ShardId(Arc::clone(key)), None));
            }
        }
        self.streams.clear();
        self.from.clear();
        Ok(regressed)
    }

    /// Moves every stream whose entries after its position were trimmed (the snapshot hash's
    /// `deleted` marker is past it) to the marker, and queues a `Trimmed` event for it.
    async fn skip_trimmed(
        &mut self,
        conn: &Conn,
        streams: &mut BTreeMap<Arc<str>, StreamState>,
    ) -> Result<(), Failure> {
        let commands = streams
            .values()
            .map(|state| {
                let mut cmd = redis::cmd("HGET");
                cmd.arg(&*state.snapshot_key).arg(DELETED_FIELD);
                (state.snapshot_key.to_string(), cmd)
            })
            .collect();
        let replies = query_per_slot(conn, commands, false).await?;
        self.trimmed.clear();
        for (state, reply) in streams.values_mut().zip(replies) {
            let deleted = match reply {
                Value::Nil => continue,
                Value::BulkString(text) => StreamId::parse(&text).ok_or_else(|| {
                    Failure::Reply(format!("a trim marker that does not parse: {text:?}"))
                })?,
                other => return Err(Failure::Reply(format!("HGET answered {other:?}"))),
            };
            if deleted > state.position {
                tracing::warn!(
                    log = %self.shared.description,
                    shard = %state.shard,
                    "entries this node had not read were trimmed: its rooms go back to their snapshots"
                );
                state.position = deleted;
                self.trimmed.push(Event::Trimmed {
                    shard: state.shard.clone(),
                    through: deleted.position(),
                });
            }
        }
        Ok(())
    }

    /// Delivers events until the subscriber drops the stream or a fatal error.
    async fn run(mut self) {
        let mut resyncs_in_a_row = 0;
        loop {
            for event in std::mem::take(&mut self.trimmed) {
                if !self.send(event).await {
                    return self.destroy_groups().await;
                }
            }
            // A subscription that could not read for a while (its process stopped, or its
            // consumer slow) may have been taken for gone by a trim: check the markers first.
            if self.conn.is_some() && self.last_read_at.elapsed() > READ_STALL_RESYNC {
                tracing::info!(log = %self.shared.description, "no read for a while: checking the trim markers");
                if let Err(failure) = self.setup(Setup::Resync).await
                    && !self.reconnect(failure).await
                {
                    break;
                }
                continue;
            }
            if self.catch_up.as_ref().is_some_and(BTreeMap::is_empty) {
                self.catch_up = None;
                if !self.send(Event::CaughtUp).await {
                    break;
                }
            }
            let sender = self.sender.clone();
            let round = tokio::select! {
                () = sender.closed() => break,
                round = self.read_round() => round,
            };
            let failure = match round {
                Ok(replies) => match self.deliver(replies).await {
                    Ok(Flow::Stop) => break,
                    Ok(Flow::Continue { delivered_any }) => {
                        resyncs_in_a_row = 0;
                        if !delivered_any && self.conn.as_ref().is_some_and(Conn::is_cluster) {
                            tokio::select! {
                                () = sender.closed() => break,
                                () = tokio::time::sleep(CLUSTER_POLL_INTERVAL) => {}
                            }
                        }
                        continue;
                    }
                    Err(failure) => failure,
                },
                Err(failure) => failure,
            };
            let failure = if failure.needs_resync() && resyncs_in_a_row < RESYNCS_IN_A_ROW_MAX {
                resyncs_in_a_row += 1;
                tracing::info!(log = %self.shared.description, "re-reading the room registry: {failure}");
                match self.setup(Setup::Resync).await {
                    Ok(()) => continue,
                    Err(failure) => failure,
                }
            } else {
                failure
            };
            resyncs_in_a_row = 0;
            if !self.reconnect(failure).await {
                break;
            }
        }
        self.destroy_groups().await;
    }

    /// Sends an event; false when the subscriber is gone.
    async fn send(&self, event: Event) -> bool {
        self.sender.send(Ok(event)).await.is_ok()
    }

    /// Reports the failure and reconnects, retrying with backoff; false when the subscription
    /// must end (the subscriber is gone, or the failure is fatal).
    async fn reconnect(&mut self, mut failure: Failure) -> bool {
        self.conn = None;
        let mut attempt = 0;
        loop {
            if let Failure::Fatal(error) = failure {
                tracing::error!(log = %self.shared.description, "subscription failed: {error}");
                // The subscriber may be gone already; the stream ends either way.
                let _ = self.sender.send(Err(error)).await;
                return false;
            }
            tracing::warn!(log = %self.shared.description, attempt, "Redis unavailable: {failure}");
            if !self.send(Event::Unavailable(failure.to_string())).await {
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
                    tracing::info!(log = %self.shared.description, "reconnected to Redis");
                    return true;
                }
                Err(next) => failure = next,
            }
        }
    }

    /// One read round: acknowledge what the last round delivered and read what is new (see the
    /// module documentation). Returns the `XREADGROUP` replies.
    async fn read_round(&mut self) -> Result<Vec<Value>, Failure> {
        self.last_read_at = Instant::now();
        let conn = self
            .conn
            .clone()
            .ok_or_else(|| Failure::Reply("the subscription is not connected".to_owned()))?;
        let cluster = conn.is_cluster();
        let events_key = self.shared.keys.events.as_str();
        let count = (READ_ENTRIES_PER_ROUND_MAX / (self.streams.len() + 1))
            .clamp(1, READ_COUNT_PER_STREAM_MAX);
        // Streams grouped by slot (one group on a single server), the events stream included.
        let mut groups: HashMap<Option<Slot>, Vec<(&str, &[StreamId])>> = HashMap::new();
        let all = std::iter::once((events_key, self.events_unacked.as_slice())).chain(
            self.streams
                .iter()
                .map(|(key, state)| (&**key, state.unacked.as_slice())),
        );
        for (key, unacked) in all {
            let slot = cluster.then(|| Slot::for_key(key));
            groups.entry(slot).or_default().push((key, unacked));
        }
        let runs = groups.into_values().map(|streams| {
            let mut pipeline = redis::pipe();
            for (key, unacked) in &streams {
                if !unacked.is_empty() {
                    let mut ack = redis::cmd("XACK");
                    ack.arg(*key).arg(&self.group);
                    for id in *unacked {
                        ack.arg(id.to_string());
                    }
                    pipeline.add_command(ack).ignore();
                }
            }
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(&self.group)
                .arg(&self.group)
                .arg("COUNT")
                .arg(count);
            if !cluster {
                read.arg("BLOCK").arg(READ_BLOCK.as_millis() as u64);
            }
            read.arg("STREAMS");
            for (key, _) in &streams {
                read.arg(*key);
            }
            for _ in &streams {
                read.arg(">");
            }
            pipeline.add_command(read);
            let mut conn = conn.clone();
            async move {
                let mut replies: Vec<Value> = pipeline.query_async(&mut conn).await?;
                Ok::<_, RedisError>(replies.pop().unwrap_or(Value::Nil))
            }
        });
        let replies = futures::future::try_join_all(runs).await?;
        self.events_unacked.clear();
        for state in self.streams.values_mut() {
            state.unacked.clear();
        }
        Ok(replies)
    }

    /// Delivers the entries of one read round and applies its announcements.
    async fn deliver(&mut self, replies: Vec<Value>) -> Result<Flow, Failure> {
        let events_key = self.shared.keys.events.as_bytes();
        let mut entries = Vec::new();
        let mut announcements = Vec::new();
        for reply in replies {
            for (key, stream_entries) in parse_read_reply(reply)? {
                if key == events_key {
                    for entry in stream_entries {
                        let (id, fields) = parse_entry(entry)?;
                        self.events_unacked.push(id);
                        if let Some(announcement) = fields.and_then(parse_announcement) {
                            announcements.push(announcement);
                        }
                    }
                    continue;
                }
                let Some(state) = std::str::from_utf8(&key)
                    .ok()
                    .and_then(|key| self.streams.get_mut(key))
                else {
                    // A stream dropped by an announcement earlier in this round.
                    continue;
                };
                for entry in stream_entries {
                    let (id, fields) = parse_entry(entry)?;
                    if id <= state.position {
                        continue;
                    }
                    state.position = id;
                    state.unacked.push(id);
                    let Some(fields) = fields else {
                        continue;
                    };
                    let payload = record_payload(fields).ok_or_else(|| {
                        Failure::Fatal(LogError::Corrupt(format!(
                            "entry {id} of {} has no {RECORD_FIELD:?} field: something other \
                             than waitroom writes to this stream",
                            state.shard
                        )))
                    })?;
                    entries.push(Entry {
                        shard: state.shard.clone(),
                        position: id.position(),
                        timestamp_ms: id.ms,
                        payload,
                    });
                }
            }
        }
        let delivered_any = !entries.is_empty();
        while !entries.is_empty() {
            let rest = entries.split_off(entries.len().min(SUBSCRIBE_BATCH_ENTRIES_MAX));
            if !self.send(Event::Entries(entries)).await {
                return Ok(Flow::Stop);
            }
            entries = rest;
        }
        if let Some(targets) = &mut self.catch_up {
            if delivered_any {
                let streams = &self.streams;
                targets.retain(|key, target| {
                    streams
                        .get(key)
                        .is_some_and(|state| state.position < *target)
                });
            } else {
                // Nothing was left to read in any stream: everything older has been delivered.
                targets.clear();
            }
        }
        self.apply_announcements(announcements).await?;
        Ok(Flow::Continue { delivered_any })
    }

    /// Adds announced rooms to the streams read (with their groups) and drops forgotten ones.
    async fn apply_announcements(
        &mut self,
        announcements: Vec<Announcement>,
    ) -> Result<(), Failure> {
        let mut added = Vec::new();
        for announcement in announcements {
            match announcement {
                Announcement::New(room) => {
                    let key: Arc<str> = self.shared.keys.room(&room).into();
                    if self.streams.contains_key(&key) {
                        continue;
                    }
                    let position = self.from.get(&key).copied().unwrap_or(StreamId::ZERO);
                    let state = StreamState {
                        shard: ShardId(Arc::clone(&key)),
                        snapshot_key: self.shared.keys.snapshot(&room).into(),
                        position,
                        unacked: Vec::new(),
                    };
                    self.streams.insert(Arc::clone(&key), state);
                    added.push(key);
                }
                Announcement::Forget(room) => {
                    let key = self.shared.keys.room(&room);
                    self.streams.remove(key.as_str());
                    if let Some(targets) = &mut self.catch_up {
                        targets.remove(key.as_str());
                    }
                    added.retain(|added| **added != *key);
                }
            }
        }
        if added.is_empty() {
            return Ok(());
        }
        let conn = self
            .conn
            .clone()
            .ok_or_else(|| Failure::Reply("the subscription is not connected".to_owned()))?;
        let mut commands = Vec::new();
        for key in &added {
            if let Some(state) = self.streams.get(key) {
                group_reset(&mut commands, key, &self.group, state.position);
            }
        }
        run_group_resets(&conn, commands).await
    }

    /// Destroys this subscription's groups if they are not a configured node's (best effort:
    /// a group left behind goes with its stream).
    async fn destroy_groups(&mut self) {
        if !self.destroy_groups_on_exit {
            return;
        }
        let Some(conn) = self.conn.take() else {
            return;
        };
        let keys = std::iter::once(self.shared.keys.events.clone())
            .chain(self.streams.keys().map(|key| key.to_string()));
        let commands = keys
            .map(|key| {
                let mut cmd = redis::cmd("XGROUP");
                cmd.arg("DESTROY").arg(&key).arg(&self.group);
                (key, cmd)
            })
            .collect();
        let outcome =
            tokio::time::timeout(COMMAND_TIMEOUT, query_per_slot(&conn, commands, true)).await;
        if !matches!(outcome, Ok(Ok(_))) {
            tracing::debug!(log = %self.shared.description, group = %self.group, "could not destroy the groups of a finished subscription");
        }
    }
}

/// A registry change read from the events stream.
enum Announcement {
    New(String),
    Forget(String),
}

fn parse_announcement(fields: Vec<Value>) -> Option<Announcement> {
    let mut fields = fields.into_iter();
    let (Some(Value::BulkString(kind)), Some(Value::BulkString(room))) =
        (fields.next(), fields.next())
    else {
        return None;
    };
    let room = String::from_utf8(room).ok()?;
    match kind.as_slice() {
        b"new" => Some(Announcement::New(room)),
        b"forget" => Some(Announcement::Forget(room)),
        _ => None,
    }
}

/// The record of a room stream entry's fields.
fn record_payload(fields: Vec<Value>) -> Option<Bytes> {
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if let (Value::BulkString(name), Value::BulkString(value)) = (name, value)
            && name == RECORD_FIELD.as_bytes()
        {
            return Some(Bytes::from(value));
        }
    }
    None
}
