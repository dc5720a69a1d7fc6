//! The intake: appending (packing each group's records into messages), and the stamping loop
//! every node runs: receive a group's batch, commit it to S3 under the group's next sequence
//! number, copy it to every node queue, answer its markers, delete it. See "Sequencing" and
//! "Exactly once" in the module documentation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::clients::{Outgoing, Request, SendFailure, retry_delay, wall_clock_ms};
use super::format::{Chunk, Copy, Intake, Object, framed_bytes, from_body, to_body};
use super::settings::{
    APPEND_COMMIT_WAIT, COPY_CHUNK_RAW_BYTES_MAX, COPY_TRIES_MAX, INTAKE_MESSAGE_RAW_BYTES_MAX,
    Names, RECORD_FRAME_BYTES, SHORT_POLL_IDLE, SQS_BATCH_MESSAGES_MAX, VISIBILITY_MARGIN_DIVISOR,
    check_room, group_of,
};
use super::{Shared, lock};
use crate::fault::{self, points};
use crate::{Append, LogError, check_batch};

/// Sends `batch` to the intake (see `Log::append`): one message group per group of rooms, the
/// records of each in batch order.
pub(crate) async fn append(shared: &Shared, batch: Vec<Append>) -> Result<(), LogError> {
    check_batch(&batch, RECORD_FRAME_BYTES)?;
    let mut groups: Vec<(u32, Vec<Bytes>)> = Vec::new();
    for append in batch {
        check_room(&append.room)?;
        let group = group_of(&append.room, shared.settings.groups);
        match groups.iter_mut().find(|(seen, _)| *seen == group) {
            Some((_, records)) => records.push(append.payload),
            None => groups.push((group, vec![append.payload])),
        }
    }
    let sends = groups.iter().map(|(group, records)| async move {
        let messages = pack(*group, records);
        shared
            .store
            .clients
            .send(&shared.intake_url, &messages)
            .await
            .map_err(|failure| match failure {
                SendFailure::MissingQueue => {
                    LogError::Unavailable("the intake queue does not exist".to_owned())
                }
                SendFailure::Other(error) => error,
            })
    });
    let ids: Vec<String> = futures::future::try_join_all(sends)
        .await?
        .into_iter()
        .flatten()
        .collect();
    wait_for_commit(shared, &ids).await;
    Ok(())
}

/// Waits (at most [`APPEND_COMMIT_WAIT`]) until this node's queue brought the copies of the
/// intake messages `ids`. The records are durable already (SQS stored them): this keeps the
/// intake short (at most what the nodes' appends have in flight), which keeps the latency of
/// every room low, and hands the caller back when its records are about to be delivered.
async fn wait_for_commit(shared: &Shared, ids: &[String]) {
    let mut changes = shared.changes.subscribe();
    let deadline = tokio::time::Instant::now() + APPEND_COMMIT_WAIT;
    loop {
        changes.borrow_and_update();
        if lock(&shared.committed).all(ids) {
            return;
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            // Past the wait (a copy to this node missed, say), or the log is going away.
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// `group`'s records as intake messages of at most [`INTAKE_MESSAGE_RAW_BYTES_MAX`] raw bytes
/// each, in order.
fn pack(group: u32, records: &[Bytes]) -> Vec<Outgoing> {
    let mut messages = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < records.len()
            && (end == start || bytes + framed_bytes(&records[end]) <= INTAKE_MESSAGE_RAW_BYTES_MAX)
        {
            bytes += framed_bytes(&records[end]);
            end += 1;
        }
        let intake = Intake::Records {
            group,
            records: records[start..end].to_vec(),
        };
        messages.push(Outgoing {
            body: to_body(&intake.encode()),
            group: Names::group_id(group),
            dedup: None,
        });
        start = end;
    }
    messages
}

/// One message received from the intake.
pub(super) struct Received {
    pub(super) id: String,
    pub(super) receipt: String,
    pub(super) intake: Intake,
}

/// The stamping loop (see the module documentation); runs until the log is dropped.
pub(crate) async fn stamp(shared: Arc<Shared>) {
    let clients = Arc::clone(&shared.store.clients);
    let visibility = shared.settings.visibility_timeout;
    let mut failures = 0;
    loop {
        // One receive of the intake at a time per node (the other loop meanwhile stamps what the
        // last one brought): an idle node keeps one long poll open, not two.
        let turn = shared.intake_turn.lock().await;
        let received_at = Instant::now();
        let result = clients
            .sqs
            .receive_message()
            .queue_url(&shared.intake_url)
            .max_number_of_messages(SQS_BATCH_MESSAGES_MAX as i32)
            .wait_time_seconds(shared.settings.receive_wait.as_secs() as i32)
            .visibility_timeout(visibility.as_secs() as i32)
            .send()
            .await;
        drop(turn);
        let output = match result {
            Ok(output) if output.messages().is_empty() => {
                clients.counters.count(Request::SqsReceiveEmpty);
                if shared.settings.receive_wait.is_zero() {
                    tokio::time::sleep(SHORT_POLL_IDLE).await;
                }
                continue;
            }
            Ok(output) => output,
            Err(error) => {
                if failures == 0 {
                    tracing::warn!(log = %shared.description, error = %super::clients::describe(&error), "cannot read the intake queue");
                }
                tokio::time::sleep(retry_delay(failures)).await;
                failures += 1;
                continue;
            }
        };
        failures = 0;
        clients.counters.count(Request::SqsReceive);
        let mut groups: Vec<(u32, Vec<Received>)> = Vec::new();
        let mut damaged = Vec::new();
        for message in output.messages() {
            let (Some(id), Some(receipt)) = (message.message_id(), message.receipt_handle()) else {
                continue;
            };
            let decoded =
                from_body(message.body().unwrap_or_default()).and_then(|b| Intake::decode(&b));
            match decoded {
                Ok(intake) if intake.group() < shared.settings.groups => {
                    let group = intake.group();
                    let received = Received {
                        id: id.to_owned(),
                        receipt: receipt.to_owned(),
                        intake,
                    };
                    match groups.iter_mut().find(|(seen, _)| *seen == group) {
                        Some((_, messages)) => messages.push(received),
                        None => groups.push((group, vec![received])),
                    }
                }
                Ok(intake) => {
                    tracing::error!(
                        group = intake.group(),
                        "dropping an intake message of a group this prefix does not have"
                    );
                    damaged.push(receipt.to_owned());
                }
                Err(damage) => {
                    tracing::error!(%damage, "dropping an intake message that does not decode");
                    damaged.push(receipt.to_owned());
                }
            }
        }
        if !damaged.is_empty()
            && let Err(error) = clients.delete_received(&shared.intake_url, &damaged).await
        {
            tracing::warn!(%error, "could not delete damaged intake messages");
        }
        let deadline = received_at + visibility - visibility / VISIBILITY_MARGIN_DIVISOR;
        let rounds = groups.into_iter().map(|(group, messages)| {
            let shared = &shared;
            async move {
                match prepare_group(shared, group, &messages, deadline).await {
                    Ok(Ok(stamped)) => Some(stamped),
                    Ok(Err(Outcome::OutOfTime)) => {
                        tracing::warn!(group, "stamping took too long: the batch is given back to be received again");
                        release_later(shared, &messages, received_at + visibility);
                        None
                    }
                    Ok(Err(Outcome::Conflict)) => {
                        tracing::info!(group, "another node stamped this batch first: left to it");
                        None
                    }
                    Err(error) => {
                        tracing::warn!(group, %error, "stamping failed: the batch is given back to be received again");
                        release_later(shared, &messages, received_at + visibility);
                        None
                    }
                }
            }
        });
        // Groups are stamped concurrently; their copies, answers and deletes share requests.
        let mut all = Stamped::default();
        for stamped in futures::future::join_all(rounds)
            .await
            .into_iter()
            .flatten()
        {
            all.add(stamped);
        }
        if let Err(error) = finish(&shared, all).await {
            tracing::warn!(%error, "could not delete stamped batches from the intake: they are received again, and copied again");
        }
    }
}

/// Gives a batch whose stamping failed back to the intake at once (visibility timeout 0), in
/// the background, retrying until its visibility timeout would have passed anyway (`expires`):
/// otherwise the batch, and every later message of its group (a head marker among them), waits
/// out the whole visibility timeout, and a node whose connection dropped for a few seconds stays
/// unready for most of it. Giving it back is safe: whoever receives it next stamps it again with
/// the same sequence numbers, or finds it stamped (the history object's conditional write).
fn release_later(shared: &Arc<Shared>, messages: &[Received], expires: Instant) {
    let receipts: Vec<String> = messages.iter().map(|m| m.receipt.clone()).collect();
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let mut attempt = 0;
        loop {
            let result = shared
                .store
                .clients
                .release_received(&shared.intake_url, &receipts)
                .await;
            match result {
                Ok(()) => return,
                Err(error) => {
                    let delay = retry_delay(attempt);
                    if Instant::now() + delay >= expires {
                        tracing::debug!(%error, "could not give a batch back: it is received again after its visibility timeout");
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    });
}

/// Why stamping a group's batch stopped (it is left to be received again).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Too little of the visibility timeout was left to go on safely.
    OutOfTime,
    /// Another node wrote the history object this one was about to write.
    Conflict,
}

/// What stamping needs of a group's newest history object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Newest {
    pub(crate) first: u64,
    pub(crate) end: u64,
    pub(crate) timestamp_ms: u64,
    pub(crate) message_ids: Vec<String>,
}

impl Newest {
    pub(crate) fn of(object: &Object) -> Self {
        Self {
            first: object.first,
            end: object.end(),
            timestamp_ms: object.timestamp_ms,
            message_ids: object.message_ids.clone(),
        }
    }
}

/// The group's newest history object: listed in S3, and read unless this node knows it already
/// (it wrote it, or its queue brought a copy of it: copies name their object).
async fn newest_object(shared: &Shared, group: u32) -> Result<Option<Newest>, LogError> {
    let store = &shared.store;
    let listed = store
        .list(&store.names.history_dir(group), Some(1), |_| true)
        .await?;
    let Some(item) = listed.into_iter().next() else {
        return Ok(None);
    };
    let Some(first) = store.first_of(&item.key) else {
        return Err(LogError::Corrupt(format!(
            "S3 key {} is no history object",
            item.key
        )));
    };
    if let Some(newest) = lock(&shared.newest).get(&group)
        && newest.first == first
    {
        return Ok(Some(newest.clone()));
    }
    match store.object(group, &item.key).await? {
        Some(object) => {
            let newest = Newest::of(&object);
            lock(&shared.newest).insert(group, newest.clone());
            Ok(Some(newest))
        }
        // Only the newest object is never trimmed: this one was newer a moment ago.
        None => Err(LogError::Unavailable(format!(
            "S3 history object {} went away while being read",
            item.key
        ))),
    }
}

/// What stamping a group's batch leaves to do once it is committed.
#[derive(Default)]
pub(super) struct Stamped {
    /// History objects to copy to the node queues, in order.
    to_copy: Vec<Arc<Object>>,
    /// Answers to markers: the asker's queue, and the answer.
    answers: Vec<(String, Copy)>,
    /// The intake messages to delete.
    receipts: Vec<String>,
}

impl Stamped {
    fn add(&mut self, other: Stamped) {
        self.to_copy.extend(other.to_copy);
        self.answers.extend(other.answers);
        self.receipts.extend(other.receipts);
    }
}

/// Stamps one group's batch and finishes it (copies, answers, deletes), as the stamping loop
/// does for all the groups of a receive together; `None` when done.
#[cfg(test)]
pub(super) async fn stamp_group(
    shared: &Shared,
    group: u32,
    messages: &[Received],
    deadline: Instant,
) -> Result<Option<Outcome>, LogError> {
    match prepare_group(shared, group, messages, deadline).await? {
        Ok(stamped) => {
            finish(shared, stamped).await?;
            Ok(None)
        }
        Err(outcome) => Ok(Some(outcome)),
    }
}

/// Stamps and commits one group's batch: what is left to do, or why it stopped.
async fn prepare_group(
    shared: &Shared,
    group: u32,
    messages: &[Received],
    deadline: Instant,
) -> Result<Result<Stamped, Outcome>, LogError> {
    let newest = newest_object(shared, group).await?;
    // Past this point another node may hold the batch, and the newest object listed above might
    // already hold part of it under a later key (see "Exactly once").
    if Instant::now() >= deadline {
        return Ok(Err(Outcome::OutOfTime));
    }
    let end = newest.as_ref().map_or(0, |newest| newest.end);
    // The part of the batch the newest object accounts for was stamped before (the batch is
    // received again): it is copied again, not stamped again.
    let done = newest.as_ref().map_or(0, |object| {
        messages
            .iter()
            .take_while(|message| object.message_ids.contains(&message.id))
            .count()
    });
    let mut stamped = Stamped {
        receipts: messages
            .iter()
            .map(|message| message.receipt.clone())
            .collect(),
        ..Stamped::default()
    };
    if done > 0
        && let Some(newest) = &newest
    {
        // Copied again: read whole (rare: only a batch received again gets here).
        let key = shared.store.names.history_key(group, newest.first);
        match shared.store.object(group, &key).await? {
            Some(object) => stamped.to_copy.push(Arc::new(object)),
            None => {
                return Err(LogError::Unavailable(format!(
                    "S3 history object {key} went away while being read"
                )));
            }
        }
    }
    let mut records: Vec<Bytes> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        match &message.intake {
            Intake::Records { records: more, .. } => {
                if index >= done {
                    records.extend(more.iter().cloned());
                }
            }
            Intake::Marker {
                marker, reply_to, ..
            } => {
                // A marker answered again (its batch received again) gets the newest end: what
                // it asks for is covered all the same.
                let answer = if index < done {
                    end
                } else {
                    end + records.len() as u64
                };
                stamped.answers.push((
                    reply_to.clone(),
                    Copy::HeadAnswer {
                        group,
                        marker: *marker,
                        end: answer,
                    },
                ));
            }
        }
    }
    if !records.is_empty() {
        let object = Object {
            group,
            first: end + 1,
            timestamp_ms: newest
                .as_ref()
                .map_or(0, |newest| newest.timestamp_ms)
                .max(wall_clock_ms()),
            message_ids: messages.iter().map(|message| message.id.clone()).collect(),
            records,
        };
        let store = &shared.store;
        let key = store.names.history_key(group, object.first);
        // The commit: exactly one holder of this batch writes this key (see "Exactly once").
        if !store.put(&key, Bytes::from(object.encode()), true).await? {
            return Ok(Err(Outcome::Conflict));
        }
        lock(&shared.newest).insert(group, Newest::of(&object));
        stamped.to_copy.push(Arc::new(object));
    }
    Ok(Ok(stamped))
}

/// Copies the committed objects to every node queue, sends the answers, and deletes the
/// batches from the intake, in that order (see "Sequencing" in the module documentation).
async fn finish(shared: &Shared, stamped: Stamped) -> Result<(), LogError> {
    copy(shared, &stamped.to_copy).await;
    send_answers(shared, stamped.answers).await;
    shared
        .store
        .clients
        .delete_received(&shared.intake_url, &stamped.receipts)
        .await
}

/// `object`'s records as copies of at most [`COPY_CHUNK_RAW_BYTES_MAX`] raw bytes.
fn chunks(object: &Object) -> Vec<Outgoing> {
    let mut messages = Vec::new();
    let mut start = 0;
    while start < object.records.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < object.records.len()
            && (end == start
                || bytes + framed_bytes(&object.records[end]) <= COPY_CHUNK_RAW_BYTES_MAX)
        {
            bytes += framed_bytes(&object.records[end]);
            end += 1;
        }
        let first = object.first + start as u64;
        let copy = Copy::Chunk(Chunk {
            group: object.group,
            object_first: object.first,
            object_end: object.end(),
            first,
            timestamp_ms: object.timestamp_ms,
            message_ids: object.message_ids.clone(),
            records: object.records[start..end].to_vec(),
        });
        let group_id = Names::group_id(object.group);
        messages.push(Outgoing {
            body: to_body(&copy.encode()),
            // Within SQS's 5 minutes a second copy of the same records is dropped by the queue.
            dedup: Some(format!("{group_id}:{first}")),
            group: group_id,
        });
        start = end;
    }
    messages
}

/// Copies `objects` into every node queue, this node's first. A queue that keeps failing is
/// left out: its node reads the objects from S3 when it sees the gap.
async fn copy(shared: &Shared, objects: &[Arc<Object>]) {
    if objects.is_empty() {
        return;
    }
    let messages: Vec<Outgoing> = objects.iter().flat_map(|object| chunks(object)).collect();
    let queues = match shared.node_queues().await {
        Ok(queues) => queues,
        Err(error) => {
            tracing::warn!(%error, "cannot list the node queues: the batch is not copied (nodes read it from S3)");
            return;
        }
    };
    let Some((first, rest)) = queues.split_first() else {
        return;
    };
    copy_to(shared, first, &messages).await;
    if !rest.is_empty() {
        // A crash test kills the copier here: one queue has the batch, the others do not.
        fault::point(points::SQS_COPY_PARTIAL);
    }
    futures::future::join_all(rest.iter().map(|url| copy_to(shared, url, &messages))).await;
}

async fn copy_to(shared: &Shared, url: &str, messages: &[Outgoing]) {
    for attempt in 0..COPY_TRIES_MAX {
        match shared.store.clients.send(url, messages).await {
            Ok(_) => return,
            Err(SendFailure::MissingQueue) => {
                shared.queue_list_stale();
                if url == shared.own_queue_url {
                    shared.own_queue_gone();
                }
                return;
            }
            Err(SendFailure::Other(error)) => {
                if attempt + 1 == COPY_TRIES_MAX {
                    tracing::warn!(queue = %url, %error, "could not copy a batch to a node queue: that node reads it from S3");
                    return;
                }
                tokio::time::sleep(retry_delay(attempt)).await;
            }
        }
    }
}

/// Sends the answers to markers, each to the queue of the node that asked.
async fn send_answers(shared: &Shared, answers: Vec<(String, Copy)>) {
    let mut by_queue: HashMap<String, Vec<Outgoing>> = HashMap::new();
    for (reply_to, copy) in answers {
        let (group, dedup) = match &copy {
            Copy::HeadAnswer { group, marker, .. } => (*group, format!(":h{marker}")),
            Copy::Chunk(chunk) => (chunk.group, format!("g{}:{}", chunk.group, chunk.first)),
        };
        let message = Outgoing {
            body: to_body(&copy.encode()),
            group: Names::group_id(group),
            dedup: Some(dedup),
        };
        by_queue.entry(reply_to).or_default().push(message);
    }
    let sends = by_queue.into_iter().map(|(url, messages)| async move {
        match shared.store.clients.send(&url, &messages).await {
            // The asker is gone: nobody waits for the answer.
            Ok(_) | Err(SendFailure::MissingQueue) => {}
            Err(SendFailure::Other(error)) => {
                tracing::warn!(queue = %url, %error, "could not answer a marker: the asker times out and asks again")
            }
        }
    });
    futures::future::join_all(sends).await;
}
