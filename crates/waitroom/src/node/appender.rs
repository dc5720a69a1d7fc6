//! Group commit for every backend: concurrent writers' records go to the log in one append.
//!
//! One task owns the appending. It takes the first queued record, everything else queued behind
//! it (up to the batch bounds), appends the lot in one backend call, and answers every writer.
//! While batches are in flight the next ones fill, so batches grow with load and a backend's
//! round trip (a Redis pipeline, a file fsync) is shared by everyone who arrived meanwhile.
//!
//! Up to `Log::appends_in_flight` batches (at most `APPEND_BATCHES_IN_FLIGHT_MAX`) are in flight
//! at once, so a backend whose round trip includes a disk flush (Redis with `appendfsync always`)
//! gets the next batch while it flushes the previous one; a backend whose cost is per append
//! (RabbitMQ: a chunk per publish frame) asks for one, so batches grow instead. Batches in flight together carry writes that were concurrent anyway
//! (every writer waits for its record before writing again), so no writer's order is at stake.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc, oneshot};

use waitroom_core::RecordId;

use super::{Waiters, WriteError};
use crate::metrics::Metrics;
use waitroom_log::{Append, Log};

pub use crate::limits::{
    APPEND_BATCH_BYTES_MAX, APPEND_BATCH_RECORDS_MAX, APPEND_BATCHES_IN_FLIGHT_MAX,
    APPEND_QUEUE_RECORDS_MAX,
};

/// Who hears about an append.
pub(crate) enum Ack {
    /// A writer waiting (in [`Waiters`]) for its record to be applied: told only if the append
    /// fails, since the applier tells it the outcome otherwise. One wake-up per write.
    Applied(RecordId),
    /// A caller waiting for the append itself.
    Appended(oneshot::Sender<Result<(), String>>),
}

pub(crate) struct Appender {
    queue: mpsc::Sender<(Append, Ack)>,
}

impl Appender {
    pub(crate) fn new(
        log: Arc<dyn Log>,
        waiters: Arc<Waiters>,
        metrics: Arc<Metrics>,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (queue, receiver) = mpsc::channel(APPEND_QUEUE_RECORDS_MAX);
        (Self { queue }, run(log, waiters, metrics, receiver))
    }

    /// Queues a record; `ack` hears how it went.
    pub(crate) async fn enqueue(&self, append: Append, ack: Ack) -> Result<(), String> {
        self.queue
            .send((append, ack))
            .await
            .map_err(|_| "the node is shutting down".to_string())
    }

    /// Appends one record (durably, once `Ok`).
    pub(crate) async fn append(&self, append: Append) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(append, Ack::Appended(reply)).await?;
        answer
            .await
            .map_err(|_| "the node is shutting down".to_string())?
    }
}

async fn run(
    log: Arc<dyn Log>,
    waiters: Arc<Waiters>,
    metrics: Arc<Metrics>,
    mut queue: mpsc::Receiver<(Append, Ack)>,
) {
    let batches_in_flight = log
        .appends_in_flight()
        .clamp(1, APPEND_BATCHES_IN_FLIGHT_MAX);
    let in_flight = Arc::new(Semaphore::new(batches_in_flight));
    loop {
        // Wait for a free slot first: meanwhile the queue fills, and the batch grows.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some((append, ack)) = queue.recv().await else {
            return;
        };
        let mut bytes = append.payload.len();
        let mut batch = vec![append];
        let mut acks = vec![ack];
        while batch.len() < APPEND_BATCH_RECORDS_MAX && bytes < APPEND_BATCH_BYTES_MAX {
            match queue.try_recv() {
                Ok((append, ack)) => {
                    bytes += append.payload.len();
                    batch.push(append);
                    acks.push(ack);
                }
                Err(_) => break,
            }
        }
        let append = append_batch(log.clone(), waiters.clone(), metrics.clone(), batch, acks);
        if batches_in_flight == 1 {
            // One at a time: appended here, which spares every batch a task of its own.
            append.await;
            drop(permit);
        } else {
            tokio::spawn(async move {
                append.await;
                drop(permit);
            });
        }
    }
}

/// Appends one batch and tells every writer in it how it went.
async fn append_batch(
    log: Arc<dyn Log>,
    waiters: Arc<Waiters>,
    metrics: Arc<Metrics>,
    batch: Vec<Append>,
    acks: Vec<Ack>,
) {
    let started = Instant::now();
    metrics.log_append_batch_records.observe(batch.len() as f64);
    let result = log.append(batch).await.map_err(|e| {
        metrics.log_append_errors_total.inc();
        tracing::warn!(error = %e, "append failed");
        e.to_string()
    });
    metrics
        .log_append_seconds
        .observe(started.elapsed().as_secs_f64());
    for ack in acks {
        match ack {
            Ack::Appended(reply) => {
                let _ = reply.send(result.clone());
            }
            Ack::Applied(id) => {
                if let Err(why) = &result {
                    waiters.fail(id, WriteError::Unavailable(why.clone()));
                }
            }
        }
    }
}
