//! Appending, and creating the streams: see "Appending" and "head()" in the module documentation
//! of `rabbitmq`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::message::{self, message_bytes};
use super::protocol::{Connection, Publish};
use super::settings::*;
use super::{Appender, RabbitMqLog, Shared, random_u64};
use crate::{Append, LogError};

/// Bytes a record adds to a publish frame besides its payload and room name: publishing id,
/// message length, AMQP section header, envelope kind and room length.
pub(super) const RECORD_OVERHEAD_BYTES: usize = message_bytes(2) + 8;

/// Bytes of a publish frame before its messages: size, key, version, publisher, count.
const PUBLISH_HEADER_BYTES: usize = 13;

pub(super) fn check_room(room: &str) -> Result<(), LogError> {
    if room.is_empty() || room.len() > ROOM_NAME_BYTES_MAX {
        return Err(rejected(format!(
            "room name of {} bytes: must be 1 to ROOM_NAME_BYTES_MAX ({ROOM_NAME_BYTES_MAX})",
            room.len()
        )));
    }
    // A room names its snapshot stream: RabbitMQ takes any UTF-8 there, but the log keeps names
    // that read well in its tools and shells.
    if !room
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(rejected(format!(
            "room name {room:?}: use A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(())
}

/// Publishes `envelopes` to `stream` through a publisher of its own (named `reference` for
/// deduplication, with the given publishing ids), in frames of at most the agreed size, and
/// waits for every confirm. `Ok(false)` when the stream does not exist.
/// When [`create_streams`] writes the opening markers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Markers {
    /// To the log and registry streams (a log opening).
    Always,
    /// To those of them it created (a subscription that found them gone: see `reading`).
    WhereCreated,
}

/// Creates the log, registry and trim-marker streams that are missing, and writes the opening
/// marker as `markers` says (see "head()" in the module docs). Returns whether it created the
/// log stream.
pub(super) async fn create_streams(
    conn: &Connection,
    shared: &Shared,
    markers: Markers,
) -> Result<bool, LogError> {
    let settings = &shared.settings;
    let names = &shared.names;
    let mut log_arguments = vec![
        ("max-age", max_age_argument(settings.max_age_ms)),
        (
            "stream-max-segment-size-bytes",
            settings.segment_bytes.to_string(),
        ),
    ];
    if let Some(bytes) = settings.max_bytes {
        log_arguments.push(("max-length-bytes", bytes.to_string()));
    }
    let log_created = conn.create_stream(&names.log, &log_arguments).await?;
    let rooms_created = conn.create_stream(&names.rooms, &[]).await?;
    conn.create_stream(
        &names.trims,
        &[
            ("max-length-bytes", TRIMS_STREAM_BYTES.to_string()),
            (
                "stream-max-segment-size-bytes",
                TRIMS_SEGMENT_BYTES.to_string(),
            ),
        ],
    )
    .await?;
    let marker = message::marker(u128::from(random_u64()) << 64 | u128::from(random_u64()));
    for (stream, created) in [(&names.log, log_created), (&names.rooms, rooms_created)] {
        if markers == Markers::WhereCreated && !created {
            continue;
        }
        if !publish_all(conn, stream, None, &[(0, &[&marker])]).await? {
            return Err(LogError::Unavailable(format!(
                "stream {stream} disappeared while the log opened"
            )));
        }
    }
    Ok(log_created)
}

pub(super) async fn publish_all(
    conn: &Connection,
    stream: &str,
    reference: Option<&str>,
    envelopes: &[(u64, &[&[u8]])],
) -> Result<bool, LogError> {
    let Some(publisher) = conn.declare_publisher(stream, reference).await? else {
        return Ok(false);
    };
    let outcome = async {
        let mut confirms = Vec::new();
        let mut frame = Publish::new(publisher);
        for (id, parts) in envelopes {
            let bytes: usize = parts.iter().map(|part| part.len()).sum();
            if !frame.is_empty() && frame.bytes() + 8 + message_bytes(bytes) > conn.frame_max() {
                let full = std::mem::replace(&mut frame, Publish::new(publisher));
                confirms.push(conn.publish(full).await?);
            }
            frame.push(*id, parts);
        }
        if !frame.is_empty() {
            confirms.push(conn.publish(frame).await?);
        }
        for confirm in confirms {
            confirm.wait().await?;
        }
        Ok(())
    }
    .await;
    conn.delete_publisher(publisher).await;
    outcome.map(|()| true)
}

impl RabbitMqLog {
    /// Creates the log, registry and trim-marker streams if they are missing, and writes the
    /// opening marker to the log and registry streams (see "head()" in the module docs).
    pub(super) async fn create_streams(&self) -> Result<(), LogError> {
        let conn = self.store_connection().await?;
        create_streams(&conn, &self.shared, Markers::Always).await?;
        Ok(())
    }

    /// The appenders' connection and publisher, opened again if it closed.
    async fn appender(&self) -> Result<Arc<Appender>, LogError> {
        let mut appender = self.appender.lock().await;
        if let Some(open) = appender.as_ref()
            && open.conn.closed().is_none()
        {
            return Ok(Arc::clone(open));
        }
        *appender = None;
        let conn = Arc::new(Connection::open(&self.shared.settings, "waitroom appends").await?);
        let publisher = conn
            .declare_publisher(&self.shared.names.log, None)
            .await?
            .ok_or_else(|| {
                LogError::Unavailable(format!(
                    "the log stream {} does not exist (deleted under the log?)",
                    self.shared.names.log
                ))
            })?;
        let open = Arc::new(Appender {
            conn,
            publisher,
            next_id: AtomicU64::new(1),
        });
        *appender = Some(Arc::clone(&open));
        Ok(open)
    }

    /// Appends the batch: publish frames in order, then every confirm.
    ///
    /// # Errors
    /// - [`LogError::Rejected`] when the batch breaks a limit ([`APPEND_BATCH_RECORDS_MAX`],
    ///   [`RECORD_BYTES_MAX`], [`APPEND_BATCH_BYTES_MAX`], [`ROOM_NAME_BYTES_MAX`]); nothing is
    ///   appended then.
    /// - [`LogError::Unavailable`] when RabbitMQ fails, cannot be reached or does not confirm in
    ///   time; some records may have been appended.
    pub(super) async fn append_batch(&self, batch: Vec<Append>) -> Result<(), LogError> {
        crate::check_batch(&batch, RECORD_OVERHEAD_BYTES)?;
        for append in &batch {
            check_room(&append.room)?;
        }
        if batch.is_empty() {
            return Ok(());
        }
        let appender = self.appender().await?;
        let conn = &appender.conn;
        let frame_max = conn.frame_max();
        let mut confirms = Vec::new();
        let mut frame = Publish::new(appender.publisher);
        let first_id = appender
            .next_id
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for (index, append) in batch.iter().enumerate() {
            let header = message::record_header(&append.room);
            let bytes = RECORD_OVERHEAD_BYTES + append.room.len() + append.payload.len();
            if !frame.is_empty() && frame.bytes() + bytes > frame_max {
                let full = std::mem::replace(&mut frame, Publish::new(appender.publisher));
                confirms.push(conn.publish(full).await?);
            }
            debug_assert!(PUBLISH_HEADER_BYTES + bytes <= frame_max);
            frame.push(
                first_id + index as u64,
                &[&header, append.room.as_bytes(), &append.payload],
            );
        }
        confirms.push(conn.publish(frame).await?);
        for confirm in confirms {
            confirm.wait().await?;
        }
        Ok(())
    }
}
