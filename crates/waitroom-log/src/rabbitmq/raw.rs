//! The broker's own confirmed-publish rate, without the log, for `bench/rabbitmq.sh` (through
//! the `rabbitmq_publish` example): the figure the log's append rate is compared with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::message;
use super::protocol::{Connection, Publish};
use super::settings::Settings;
use crate::LogError;

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
