//! Reading: the pump that reads this node's queue into memory, the sync that asks for every
//! group's head now and then, `head()` itself, and subscriptions, which deliver from memory and
//! from the S3 history. See "Reading" and "head() and CaughtUp" in the module documentation.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{mpsc, oneshot};

use super::clients::{Outgoing, Request, SendFailure, random_u64, retry_delay, unavailable};
use super::format::{Chunk, Copy, Intake, from_body, to_body};
use super::intake::Newest;
use super::settings::Names;
use super::settings::{
    CACHE_BYTES_MAX, COMMITTED_IDS_MAX, HISTORY_READ_AHEAD, MARKER_WAIT, NODE_QUEUE_VISIBILITY,
    QUEUE_LIST_MARGIN, QUEUE_LIST_REFRESH, RECEIVE_WAIT, SQS_BATCH_MESSAGES_MAX,
    SUBSCRIBE_BATCH_BYTES_MAX, SUBSCRIBE_BATCH_ENTRIES_MAX, SUBSCRIBE_QUEUE_EVENTS_MAX,
    SYNC_INTERVAL,
};
use super::{Shared, lock};
use crate::{Checkpoint, Entry, Event, LogError, Position};

/// The newest entries of one group that this node's queue brought.
#[derive(Debug)]
pub(crate) struct GroupCache {
    /// The sequence number of `entries[0]` (of the next entry when empty).
    first: u64,
    /// `(timestamp_ms, payload)` of `first`, `first + 1`, ….
    entries: VecDeque<(u64, Bytes)>,
    /// The largest last sequence number a `head()` answer gave: what is committed, whether or
    /// not this node's queue brought it.
    hint: u64,
}

impl GroupCache {
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }
}

/// The pump's memory of every group.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    groups: HashMap<u32, GroupCache>,
    bytes: usize,
}

/// One entry read from memory or S3: sequence number, timestamp, payload.
type Read = (u64, u64, Bytes);

/// The intake message ids whose copies this node's queue brought lately (the newest
/// [`COMMITTED_IDS_MAX`]), for appends waiting for their commit.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    order: VecDeque<String>,
    ids: std::collections::HashSet<String>,
}

impl Committed {
    pub(crate) fn add(&mut self, ids: &[String]) {
        for id in ids {
            if self.ids.insert(id.clone()) {
                self.order.push_back(id.clone());
            }
        }
        while self.order.len() > COMMITTED_IDS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    pub(crate) fn all(&self, ids: &[String]) -> bool {
        ids.iter().all(|id| self.ids.contains(id))
    }
}

impl Cache {
    /// Takes in a chunk of copied records. A chunk that does not follow what is held (a copy
    /// missed) starts the group's memory over at the chunk: what lies between is read from S3.
    fn insert(&mut self, chunk: Chunk) {
        if chunk.records.is_empty() || chunk.first == 0 {
            return;
        }
        let cache = self
            .groups
            .entry(chunk.group)
            .or_insert_with(|| GroupCache {
                first: chunk.first,
                entries: VecDeque::new(),
                hint: 0,
            });
        if chunk.first > cache.end() + 1 {
            self.bytes -= cache.entries.iter().map(|(_, p)| p.len()).sum::<usize>();
            cache.entries.clear();
            cache.first = chunk.first;
        }
        let skip = (cache.end() + 1 - chunk.first) as usize;
        for payload in chunk.records.into_iter().skip(skip) {
            self.bytes += payload.len();
            cache.entries.push_back((chunk.timestamp_ms, payload));
        }
        self.evict(chunk.group);
    }

    /// Drops the oldest entries, of `group` first, until the memory is within its bound.
    fn evict(&mut self, group: u32) {
        if self.bytes <= CACHE_BYTES_MAX {
            return;
        }
        let mut order: Vec<u32> = vec![group];
        order.extend(self.groups.keys().filter(|other| **other != group));
        for other in order {
            let Some(cache) = self.groups.get_mut(&other) else {
                continue;
            };
            while self.bytes > CACHE_BYTES_MAX {
                let Some((_, payload)) = cache.entries.pop_front() else {
                    break;
                };
                cache.first += 1;
                self.bytes -= payload.len();
            }
            if self.bytes <= CACHE_BYTES_MAX {
                return;
            }
        }
    }

    /// Records that `group`'s records up to `end` are committed.
    fn hint(&mut self, group: u32, end: u64) {
        if end == 0 {
            return;
        }
        let cache = self.groups.entry(group).or_insert_with(|| GroupCache {
            first: end + 1,
            entries: VecDeque::new(),
            hint: 0,
        });
        cache.hint = cache.hint.max(end);
    }

    /// Per group, how far a subscription should deliver: what memory holds or a head answer
    /// gave.
    fn targets(&self) -> Vec<(u32, u64)> {
        self.groups
            .iter()
            .map(|(group, cache)| (*group, cache.end().max(cache.hint)))
            .collect()
    }

    /// `group`'s entries after `after` up to `upto` (bounded like a delivered batch), if memory
    /// holds the one right after `after`.
    fn read(&self, group: u32, after: u64, upto: u64) -> Option<Vec<Read>> {
        let cache = self.groups.get(&group)?;
        if after + 1 < cache.first || after >= cache.end() {
            return None;
        }
        let mut entries = Vec::new();
        let mut bytes = 0;
        let last = upto.min(cache.end());
        for seq in after + 1..=last {
            let (timestamp_ms, payload) = &cache.entries[(seq - cache.first) as usize];
            if entries.len() >= SUBSCRIBE_BATCH_ENTRIES_MAX
                || (!entries.is_empty() && bytes + payload.len() > SUBSCRIBE_BATCH_BYTES_MAX)
            {
                break;
            }
            bytes += payload.len();
            entries.push((seq, *timestamp_ms, payload.clone()));
        }
        Some(entries)
    }
}

/// Reads this node's queue into the memory and resolves the answers to markers,
/// until the log is dropped.
pub(crate) async fn pump(shared: Arc<Shared>) {
    let clients = Arc::clone(&shared.store.clients);
    let mut failures = 0;
    loop {
        if shared.own_queue_missing.load(Ordering::Acquire) {
            match shared.recreate_own_queue().await {
                Ok(()) => {
                    tracing::warn!(queue = %shared.own_queue_name, "this node's queue was gone (reaped?): created it again; what it missed is read from S3");
                    shared.resync.notify_one();
                }
                Err(error) => {
                    set_failure(&shared, error.to_string());
                    tokio::time::sleep(retry_delay(failures)).await;
                    failures += 1;
                    continue;
                }
            }
        }
        let received = clients
            .sqs
            .receive_message()
            .queue_url(&shared.own_queue_url)
            .max_number_of_messages(SQS_BATCH_MESSAGES_MAX as i32)
            .wait_time_seconds(RECEIVE_WAIT.as_secs() as i32)
            .visibility_timeout(NODE_QUEUE_VISIBILITY.as_secs() as i32)
            .send()
            .await;
        let output = match received {
            Ok(output) => output,
            Err(error) => {
                if super::clients::is_missing_queue(&error) {
                    shared.own_queue_gone();
                }
                set_failure(
                    &shared,
                    unavailable("reading this node's queue", &error).to_string(),
                );
                tokio::time::sleep(retry_delay(failures)).await;
                failures += 1;
                continue;
            }
        };
        failures = 0;
        clients.counters.count(if output.messages().is_empty() {
            Request::SqsReceiveEmpty
        } else {
            Request::SqsReceive
        });
        if lock(&shared.pump_failure).take().is_some() {
            shared.changed();
        }
        let mut receipts = Vec::new();
        for message in output.messages() {
            if let Some(receipt) = message.receipt_handle() {
                receipts.push(receipt.to_owned());
            }
            let copy = from_body(message.body().unwrap_or_default())
                .and_then(|bytes| Copy::decode(&bytes));
            match copy {
                Ok(Copy::Chunk(chunk)) => {
                    lock(&shared.committed).add(&chunk.message_ids);
                    let newest = Newest {
                        first: chunk.object_first,
                        end: chunk.object_end,
                        timestamp_ms: chunk.timestamp_ms,
                        message_ids: chunk.message_ids.clone(),
                    };
                    let mut known = lock(&shared.newest);
                    if known
                        .get(&chunk.group)
                        .is_none_or(|held| held.end < newest.end)
                    {
                        known.insert(chunk.group, newest);
                    }
                    drop(known);
                    lock(&shared.cache).insert(chunk);
                }
                Ok(Copy::HeadAnswer { group, marker, end }) => {
                    lock(&shared.cache).hint(group, end);
                    answer(&shared, marker, end);
                }
                Err(damage) => {
                    tracing::error!(queue = %shared.own_queue_name, %damage, "dropping a node queue message that does not decode")
                }
            }
        }
        if !output.messages().is_empty() {
            shared.changed();
        }
        if let Err(error) = clients
            .delete_received(&shared.own_queue_url, &receipts)
            .await
        {
            // They come back after the visibility timeout and are skipped by position.
            tracing::debug!(%error, "could not delete read messages of this node's queue");
        }
    }
}

fn set_failure(shared: &Shared, reason: String) {
    let mut failure = lock(&shared.pump_failure);
    if failure.as_deref() != Some(reason.as_str()) {
        tracing::warn!(log = %shared.description, %reason, "cannot read this node's queue");
        *failure = Some(reason);
        drop(failure);
        shared.changed();
    }
}

fn answer(shared: &Shared, id: u64, answer: u64) {
    if let Some(waiter) = lock(&shared.waiters).remove(&id) {
        // The asker may have given up: then nobody needs the answer.
        let _ = waiter.send(answer);
    }
}

/// Asks for every group's head once this node's queue is surely on every copier's list, then
/// every [`SYNC_INTERVAL`] (and again after the queue was created anew): the answers tell
/// subscriptions about copies this node's queue missed.
pub(crate) async fn sync(shared: Arc<Shared>) {
    let settle = QUEUE_LIST_REFRESH + QUEUE_LIST_MARGIN;
    tokio::time::sleep(settle).await;
    loop {
        if let Err(error) = head(&shared).await {
            tracing::debug!(%error, "could not read the heads of the groups");
        }
        tokio::select! {
            () = tokio::time::sleep(SYNC_INTERVAL) => {}
            () = shared.resync.notified() => tokio::time::sleep(settle).await,
        }
    }
}

/// Every group's last sequence number (0 for one with none yet): a marker through the intake
/// to each, answered by whichever node stamps it.
///
/// # Errors
/// [`LogError::Unavailable`] when SQS fails, or an answer does not come within the visibility
/// timeout and [`MARKER_WAIT`].
pub(crate) async fn head(shared: &Shared) -> Result<HashMap<u32, u64>, LogError> {
    let groups = shared.settings.groups;
    let mut waiting = Vec::with_capacity(groups as usize);
    let mut messages = Vec::with_capacity(groups as usize);
    for group in 0..groups {
        let marker = random_u64();
        let (sender, receiver) = oneshot::channel();
        lock(&shared.waiters).insert(marker, sender);
        waiting.push((group, marker, receiver));
        messages.push(Outgoing {
            body: to_body(
                &Intake::Marker {
                    group,
                    marker,
                    reply_to: shared.own_queue_url.clone(),
                }
                .encode(),
            ),
            group: Names::group_id(group),
            dedup: None,
        });
    }
    let markers: Vec<u64> = waiting.iter().map(|(_, marker, _)| *marker).collect();
    let forget_waiters = || {
        let mut waiters = lock(&shared.waiters);
        for marker in &markers {
            waiters.remove(marker);
        }
    };
    if let Err(failure) = shared
        .store
        .clients
        .send(&shared.intake_url, &messages)
        .await
    {
        forget_waiters();
        return Err(match failure {
            SendFailure::MissingQueue => {
                LogError::Unavailable("the intake queue does not exist".to_owned())
            }
            SendFailure::Other(error) => error,
        });
    }
    let wait = shared.settings.visibility_timeout + MARKER_WAIT;
    let deadline = tokio::time::Instant::now() + wait;
    let mut ends = HashMap::with_capacity(groups as usize);
    for (group, _, receiver) in waiting {
        match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(end)) => {
                ends.insert(group, end);
            }
            _ => {
                forget_waiters();
                return Err(LogError::Unavailable(format!(
                    "no answer to the head marker of group {group} within {} s: is any node \
                     stamping the intake?",
                    wait.as_secs()
                )));
            }
        }
    }
    Ok(ends)
}

/// Starts a subscription (see `Log::subscribe`).
pub(crate) async fn subscribe(
    shared: Arc<Shared>,
    from: Checkpoint,
) -> Result<BoxStream<'static, Result<Event, LogError>>, LogError> {
    let names = &shared.store.names;
    let mut positions = HashMap::new();
    for (shard, position) in &from.0 {
        let Some(group) = names.group_of_shard(&shard.0) else {
            // Another backend's or another prefix's shard: nothing of it is here.
            continue;
        };
        let position = u64::try_from(position.0).map_err(|_| {
            LogError::Rejected(format!(
                "checkpoint position {} of {shard} is no sequence number",
                position.0
            ))
        })?;
        positions.insert(group, position);
    }
    let targets = head(&shared).await?;
    for (group, position) in &positions {
        if position > targets.get(group).unwrap_or(&0) {
            return Err(LogError::Rejected(format!(
                "position {position} of group {group} is past its last sequence number: the \
                 checkpoint was taken on other data (or with another groups= setting)"
            )));
        }
    }
    let (sender, receiver) = mpsc::channel(SUBSCRIBE_QUEUE_EVENTS_MAX);
    let subscription = Subscription {
        shared,
        positions,
        sender,
    };
    tokio::spawn(subscription.run(targets));
    Ok(
        futures::stream::unfold(receiver, |mut receiver| async move {
            let event = receiver.recv().await?;
            Some((event, receiver))
        })
        .boxed(),
    )
}

/// Why a subscription stops delivering.
enum Halt {
    /// Its stream was dropped (or the log is gone): it ends.
    Closed,
    /// SQS or S3 failed: it says `Unavailable`, waits and catches up again.
    Failed(String),
}

impl From<LogError> for Halt {
    fn from(error: LogError) -> Self {
        Halt::Failed(error.to_string())
    }
}

/// The task of one subscription.
struct Subscription {
    shared: Arc<Shared>,
    /// Per group, the last sequence number delivered (or to start after).
    positions: HashMap<u32, u64>,
    sender: mpsc::Sender<Result<Event, LogError>>,
}

impl Subscription {
    async fn run(mut self, targets: HashMap<u32, u64>) {
        let mut targets = Some(targets);
        let mut failures = 0;
        loop {
            let result = async {
                let targets = match targets.take() {
                    Some(targets) => targets,
                    None => head(&self.shared).await?,
                };
                self.catch_up(targets).await?;
                failures = 0;
                self.follow().await
            }
            .await;
            match result {
                Ok(()) | Err(Halt::Closed) => return,
                Err(Halt::Failed(reason)) => {
                    if self.send(Event::Unavailable(reason)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(retry_delay(failures)).await;
                    failures += 1;
                }
            }
        }
    }

    async fn send(&self, event: Event) -> Result<(), Halt> {
        self.sender.send(Ok(event)).await.map_err(|_| Halt::Closed)
    }

    /// Delivers every group up to `targets`, then says `CaughtUp`. Not before this node's queue
    /// is on every copier's list: until then, a batch another node stamps might reach this node
    /// only through S3, and a node that answers for it must have it (see "Reading").
    async fn catch_up(&mut self, targets: HashMap<u32, u64>) -> Result<(), Halt> {
        self.deliver_all(targets).await?;
        let listed_from = *lock(&self.shared.listed_from);
        if tokio::time::Instant::now() < listed_from {
            tokio::time::sleep_until(listed_from).await;
            let targets = head(&self.shared).await?;
            self.deliver_all(targets).await?;
        }
        self.send(Event::CaughtUp).await
    }

    async fn deliver_all(&mut self, targets: HashMap<u32, u64>) -> Result<(), Halt> {
        let mut groups: Vec<(u32, u64)> = targets.into_iter().collect();
        groups.sort_unstable();
        for (group, target) in groups {
            self.deliver(group, target).await?;
        }
        Ok(())
    }

    /// Delivers what the pump brings (and what head answers say was committed), until the
    /// stream is dropped or the pump fails.
    async fn follow(&mut self) -> Result<(), Halt> {
        let mut changes = self.shared.changes.subscribe();
        loop {
            changes.borrow_and_update();
            if let Some(reason) = lock(&self.shared.pump_failure).clone() {
                return Err(Halt::Failed(reason));
            }
            let mut targets = lock(&self.shared.cache).targets();
            targets.sort_unstable();
            for (group, target) in targets {
                self.deliver(group, target).await?;
            }
            tokio::select! {
                changed = changes.changed() => changed.map_err(|_| Halt::Closed)?,
                () = self.sender.closed() => return Err(Halt::Closed),
            }
        }
    }

    fn position(&self, group: u32) -> u64 {
        self.positions.get(&group).copied().unwrap_or(0)
    }

    /// Delivers `group` up to `target`, from memory where it holds the entries, else from S3.
    async fn deliver(&mut self, group: u32, target: u64) -> Result<(), Halt> {
        let mut stalled = 0;
        while self.position(group) < target {
            let position = self.position(group);
            // A group this subscription has not read yet starts from S3, which knows where the
            // group's history begins: memory only knows its end.
            let cached = if position == 0 {
                None
            } else {
                lock(&self.shared.cache).read(group, position, target)
            };
            match cached {
                Some(entries) if !entries.is_empty() => {
                    self.deliver_entries(group, entries).await?
                }
                _ => {
                    if !self.read_history(group, target).await? {
                        // S3 holds nothing after the position (it never does below a head).
                        return Ok(());
                    }
                }
            }
            if self.position(group) == position {
                stalled += 1;
                if stalled >= 3 {
                    return Err(Halt::Failed(format!(
                        "group {group}: the history in S3 does not go on after {position}"
                    )));
                }
            } else {
                stalled = 0;
            }
        }
        Ok(())
    }

    async fn deliver_entries(&mut self, group: u32, entries: Vec<Read>) -> Result<(), Halt> {
        let Some(&(last, _, _)) = entries.last() else {
            return Ok(());
        };
        let shard = self.shared.shard(group);
        let entries = entries
            .into_iter()
            .map(|(seq, timestamp_ms, payload)| Entry {
                shard: shard.clone(),
                position: Position(u128::from(seq)),
                timestamp_ms,
                payload,
            })
            .collect();
        self.send(Event::Entries(entries)).await?;
        self.positions.insert(group, last);
        Ok(())
    }

    /// Says that `group`'s history up to `through` is gone, and goes on after it.
    async fn skip_to(&mut self, group: u32, through: u64) -> Result<(), Halt> {
        self.send(Event::Trimmed {
            shard: self.shared.shard(group),
            through: Position(u128::from(through)),
        })
        .await?;
        self.positions.insert(group, through);
        Ok(())
    }

    /// Delivers `group`'s history from S3 after the position, up to `target` at least; false
    /// when S3 holds nothing after the position.
    async fn read_history(&mut self, group: u32, target: u64) -> Result<bool, Halt> {
        let store = &self.shared.store;
        let firsts = store.objects_after(group, self.position(group)).await?;
        if firsts.is_empty() {
            return Ok(false);
        }
        let shared = Arc::clone(&self.shared);
        let mut objects = futures::stream::iter(firsts)
            .map(|first| {
                let shared = Arc::clone(&shared);
                async move {
                    let key = shared.store.names.history_key(group, first);
                    shared.store.object(group, &key).await
                }
            })
            .buffered(HISTORY_READ_AHEAD);
        while let Some(object) = objects.next().await {
            // Gone since it was listed (trimmed): the caller lists again.
            let Some(object) = object? else {
                return Ok(true);
            };
            let position = self.position(group);
            if object.end() <= position {
                continue;
            }
            if object.first > position + 1 {
                self.skip_to(group, object.first - 1).await?;
            }
            let mut batch = Vec::new();
            let mut bytes = 0;
            for (index, payload) in object.records.iter().enumerate() {
                let seq = object.first + index as u64;
                if seq <= self.position(group) {
                    continue;
                }
                if batch.len() >= SUBSCRIBE_BATCH_ENTRIES_MAX
                    || (!batch.is_empty() && bytes + payload.len() > SUBSCRIBE_BATCH_BYTES_MAX)
                {
                    self.deliver_entries(group, std::mem::take(&mut batch))
                        .await?;
                    bytes = 0;
                }
                bytes += payload.len();
                batch.push((seq, object.timestamp_ms, payload.clone()));
            }
            self.deliver_entries(group, batch).await?;
            if self.position(group) >= target {
                break;
            }
        }
        Ok(true)
    }
}
