//! The broker's own rates, without the log, for `bench/rabbitmq.sh` (through the
//! `rabbitmq_publish` example): the confirmed-publish rate the log's append rate is compared
//! with, and the round-trip rate (published, confirmed and delivered to a subscriber) that a join
//! through a node needs, since a node answers a join once it has read it back and applied it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::message::{self, Body};
use super::protocol::{Connection, Delivery, OffsetSpec, Publish};
use super::settings::{SUBSCRIBE_CREDIT_CHUNKS, Settings};
use crate::LogError;

/// Most subscribers of a round-trip run.
pub const RAW_SUBSCRIBERS_MAX: usize = 16;

/// Bytes of each message's body: about a join record's size.
const MESSAGE_BYTES: usize = 64;

/// Most publishes in flight at once.
pub const RAW_OUTSTANDING_MAX: usize = 4096;

/// Publishes to `stream` (created if missing) from `outstanding` tasks sharing one connection
/// and one publisher, the way the log's appends do, each publishing one message and waiting for
/// its confirm before the next, for `run`. Returns the confirmed messages per second.
///
/// # Errors
/// [`LogError::Rejected`] for a bad URL or `outstanding` out of `1..=RAW_OUTSTANDING_MAX`;
/// `Unavailable` when RabbitMQ fails.
pub async fn confirmed_publish_rate(
    url: &str,
    stream: &str,
    outstanding: usize,
    run: Duration,
) -> Result<f64, LogError> {
    if !(1..=RAW_OUTSTANDING_MAX).contains(&outstanding) {
        return Err(LogError::Rejected(format!(
            "outstanding publishes: 1 to {RAW_OUTSTANDING_MAX}"
        )));
    }
    let settings = Settings::parse(url)?;
    let conn = Arc::new(Connection::open(&settings, "waitroom raw publish rate").await?);
    conn.create_stream(stream, &[]).await?;
    let publisher = conn
        .declare_publisher(stream, None)
        .await?
        .ok_or_else(|| LogError::Unavailable(format!("stream {stream} disappeared")))?;
    let body = vec![b'x'; MESSAGE_BYTES];
    let ids = Arc::new(AtomicU64::new(1));
    let started = Instant::now();
    let deadline = started + run;
    let tasks = (0..outstanding).map(|_| {
        let (conn, ids, body) = (Arc::clone(&conn), Arc::clone(&ids), body.clone());
        async move {
            let mut confirmed = 0_u64;
            while Instant::now() < deadline {
                let mut frame = Publish::new(publisher);
                frame.push(
                    ids.fetch_add(1, Ordering::Relaxed),
                    &[&message::marker(0), &body],
                );
                conn.publish(frame).await?.wait().await?;
                confirmed += 1;
            }
            Ok::<_, LogError>(confirmed)
        }
    });
    let confirmed: u64 = futures::future::try_join_all(tasks)
        .await?
        .into_iter()
        .sum();
    let seconds = started.elapsed().as_secs_f64();
    conn.delete_publisher(publisher).await;
    conn.delete_stream(stream).await?;
    Ok(confirmed as f64 / seconds)
}

/// Like [`confirmed_publish_rate`], but each publisher also waits until its message was delivered
/// to the first of `subscribers` subscribers (each on a connection of its own, reading from the
/// stream's end with the log's credit, the others reading everything too), the way a join through
/// one node of a fleet waits until its node has read it back. Returns the messages per second that
/// made the whole round trip.
///
/// # Errors
/// [`LogError::Rejected`] for a bad URL, `outstanding` out of `1..=RAW_OUTSTANDING_MAX` or
/// `subscribers` out of `1..=RAW_SUBSCRIBERS_MAX`; `Unavailable` when RabbitMQ fails.
pub async fn round_trip_rate(
    url: &str,
    stream: &str,
    outstanding: usize,
    subscribers: usize,
    run: Duration,
) -> Result<f64, LogError> {
    if !(1..=RAW_OUTSTANDING_MAX).contains(&outstanding)
        || !(1..=RAW_SUBSCRIBERS_MAX).contains(&subscribers)
    {
        return Err(LogError::Rejected(format!(
            "outstanding publishes: 1 to {RAW_OUTSTANDING_MAX}; subscribers: 1 to \
             {RAW_SUBSCRIBERS_MAX}"
        )));
    }
    let settings = Settings::parse(url)?;
    let conn = Arc::new(Connection::open(&settings, "waitroom raw round trip").await?);
    conn.create_stream(stream, &[]).await?;
    let publisher = conn
        .declare_publisher(stream, None)
        .await?
        .ok_or_else(|| LogError::Unavailable(format!("stream {stream} disappeared")))?;
    // The opening marker, so that the subscriptions below start past it.
    conn.publish({
        let mut frame = Publish::new(publisher);
        frame.push(0, &[&message::marker(0)]);
        frame
    })
    .await?
    .wait()
    .await?;
    let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>> = Arc::default();
    let mut readers = Vec::with_capacity(subscribers);
    for index in 0..subscribers {
        let reader = Connection::open(&settings, "waitroom raw round trip reader").await?;
        let mut subscription = reader
            .subscribe(stream, OffsetSpec::Last, SUBSCRIBE_CREDIT_CHUNKS)
            .await?
            .ok_or_else(|| LogError::Unavailable(format!("stream {stream} disappeared")))?;
        let waiting = (index == 0).then(|| Arc::clone(&waiting));
        readers.push(tokio::spawn(async move {
            while let Some(Delivery::Chunk(chunk)) = subscription.deliveries.recv().await {
                if let Some(waiting) = &waiting {
                    let mut waiting = waiting.lock().unwrap_or_else(PoisonError::into_inner);
                    for stored in &chunk.messages {
                        if let Ok(Body::Record { payload, .. }) = message::decode(stored)
                            && let Some(token) = payload.get(..8)
                            && let Some(done) = waiting
                                .remove(&u64::from_be_bytes(token.try_into().unwrap_or_default()))
                        {
                            let _ = done.send(());
                        }
                    }
                }
                if reader.credit(subscription.id, 1).await.is_err() {
                    return;
                }
            }
        }));
    }
    let ids = Arc::new(AtomicU64::new(1));
    let started = Instant::now();
    let deadline = started + run;
    let tasks = (0..outstanding).map(|_| {
        let (conn, ids, waiting) = (Arc::clone(&conn), Arc::clone(&ids), Arc::clone(&waiting));
        async move {
            let mut delivered = 0_u64;
            let mut body = vec![b'x'; MESSAGE_BYTES];
            while Instant::now() < deadline {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                body[..8].copy_from_slice(&id.to_be_bytes());
                let (done, arrived) = oneshot::channel();
                waiting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id, done);
                let mut frame = Publish::new(publisher);
                frame.push(id, &[&message::record_header("raw"), b"raw", &body]);
                conn.publish(frame).await?.wait().await?;
                tokio::time::timeout(super::settings::CONFIRM_TIMEOUT, arrived)
                    .await
                    .map_err(|_| {
                        LogError::Unavailable(format!(
                            "a confirmed message was not delivered within {:?}",
                            super::settings::CONFIRM_TIMEOUT
                        ))
                    })?
                    .map_err(|_| LogError::Unavailable("the subscriber stopped".to_owned()))?;
                delivered += 1;
            }
            Ok::<_, LogError>(delivered)
        }
    });
    let delivered: u64 = futures::future::try_join_all(tasks)
        .await?
        .into_iter()
        .sum();
    let seconds = started.elapsed().as_secs_f64();
    for reader in readers {
        reader.abort();
    }
    conn.delete_publisher(publisher).await;
    conn.delete_stream(stream).await?;
    Ok(delivered as f64 / seconds)
}
