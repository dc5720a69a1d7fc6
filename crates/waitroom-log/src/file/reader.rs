//! Reading: each subscription reads frames from the segment files (usually from the page cache)
//! on the blocking pool, never past the head published once an append is acknowledged; one
//! keeping up reads the last group commit from the head, in memory.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::watch;

use super::frame::parse_frame;
use super::segments::{io_error, segment_path};
use super::settings::{SUBSCRIBE_BATCH_BYTES_MAX, SUBSCRIBE_BATCH_ENTRIES_MAX};
use super::{Head, Shared};
use crate::{Entry, Event, LogError, Position, ShardId};

pub(super) fn reader_failed(error: tokio::task::JoinError) -> LogError {
    LogError::Io(io::Error::other(format!(
        "file log reader task failed: {error}"
    )))
}

/// The state of one subscription.
pub(super) struct Cursor {
    pub(super) shared: Arc<Shared>,
    pub(super) head: watch::Receiver<Head>,
    /// Position of the next frame to deliver.
    pub(super) next: u64,
    /// The head's end at subscribe time, until `CaughtUp` has been delivered.
    pub(super) caught_up_at: Option<u64>,
    /// `None` only while a blocking read has it.
    pub(super) reader: Option<SegmentReader>,
    pub(super) ended: bool,
}

impl Cursor {
    /// The next event; `None` ends the stream (after an error, or once the log was closed and
    /// everything it wrote was delivered).
    pub(super) async fn next_event(&mut self) -> Option<Result<Event, LogError>> {
        if self.ended {
            return None;
        }
        loop {
            if self.caught_up_at.is_some_and(|at| self.next >= at) {
                self.caught_up_at = None;
                return Some(Ok(Event::CaughtUp));
            }
            let end = self.head.borrow_and_update().end;
            // Until caught up, stop at the subscribe-time end so `CaughtUp` follows exactly the
            // entries that existed then.
            let limit = self.caught_up_at.map_or(end, |at| at.min(end));
            if let Some(trimmed) = self.trimmed() {
                return Some(Ok(trimmed));
            }
            if self.next < limit {
                if let Some(entries) = self.read_tail(limit) {
                    self.shared
                        .read_batches_from_tail
                        .fetch_add(1, Ordering::Relaxed);
                    return Some(Ok(Event::Entries(entries)));
                }
                self.shared
                    .read_batches_from_files
                    .fetch_add(1, Ordering::Relaxed);
                let result = self.read(limit).await;
                // A segment trimmed between finding it and opening it.
                if result.is_err()
                    && let Some(trimmed) = self.trimmed()
                {
                    return Some(Ok(trimmed));
                }
                self.ended = result.is_err();
                return Some(result.map(Event::Entries));
            }
            if self.head.changed().await.is_err() && self.next >= self.head.borrow().end {
                // The log was closed and everything it wrote was delivered.
                return None;
            }
        }
    }

    /// `Trimmed` when the next frame to deliver is in a segment that trimming deleted; the cursor
    /// then goes on from the first segment kept.
    fn trimmed(&mut self) -> Option<Event> {
        let first = self.shared.first_base();
        if self.next >= first {
            return None;
        }
        self.next = first;
        self.reader = Some(SegmentReader::default());
        Some(Event::Trimmed {
            shard: self.shared.shard.clone(),
            through: Position(u128::from(first - 1)),
        })
    }

    /// The next entries from the head's tail (the last group commit, in memory), when it holds
    /// the next frame: what a subscription keeping up with the log reads. `None` sends the
    /// subscription to the files.
    fn read_tail(&mut self, limit: u64) -> Option<Vec<Entry>> {
        let (tail, tail_at) = {
            let head = self.head.borrow();
            (head.tail.clone(), head.tail_at)
        };
        let skip = usize::try_from(self.next.checked_sub(tail_at)?).ok()?;
        let tail = tail.get(skip..).map(|_| tail.slice(skip..))?;
        // Never past the limit (the subscribe-time end until `CaughtUp`).
        let available = usize::try_from(limit - self.next)
            .unwrap_or(usize::MAX)
            .min(tail.len());
        let (entries, next) = parse_entries(
            &self.shared.shard,
            tail,
            available,
            self.next,
            SUBSCRIBE_BATCH_ENTRIES_MAX,
        )
        .ok()?;
        if entries.is_empty() {
            return None;
        }
        self.next = next;
        Some(entries)
    }

    async fn read(&mut self, limit: u64) -> Result<Vec<Entry>, LogError> {
        let mut reader = self.reader.take().unwrap_or_default();
        let shared = Arc::clone(&self.shared);
        let next = self.next;
        let (reader, result) = tokio::task::spawn_blocking(move || {
            let result = reader.read_batch(&shared, next, limit, SUBSCRIBE_BATCH_ENTRIES_MAX);
            (reader, result)
        })
        .await
        .map_err(reader_failed)?;
        self.reader = Some(reader);
        let (entries, next) = result?;
        if entries.is_empty() {
            return Err(LogError::Corrupt(format!(
                "no frame could be read at position {next} of the file log at {}, below its \
                 end {limit}",
                self.shared.dir.display()
            )));
        }
        self.next = next;
        Ok(entries)
    }
}

impl Shared {
    /// The base of the segment holding `position`, and where reading it must stop: the next
    /// segment's base or `limit`, whichever comes first.
    fn segment_of(&self, position: u64, limit: u64) -> Result<(u64, u64), LogError> {
        // The writer only pushes to this list and trimming only removes from its front, each a
        // single step, so a panic elsewhere cannot leave it inconsistent; a poisoned lock still
        // guards a valid list.
        let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        let after = segments.partition_point(|segment| segment.base <= position);
        let base = after
            .checked_sub(1)
            .and_then(|index| segments.get(index))
            .map(|segment| segment.base)
            .ok_or_else(|| {
                LogError::Corrupt(format!("position {position} is before the first segment"))
            })?;
        let segment_end = segments
            .get(after)
            .map_or(u64::MAX, |segment| segment.base)
            .min(limit);
        Ok((base, segment_end))
    }

    /// Where the log starts now: the base of its first segment.
    pub(super) fn first_base(&self) -> u64 {
        self.segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .first()
            .map_or(0, |segment| segment.base)
    }
}

/// Reads frames of one subscription from the segment files.
#[derive(Default)]
pub(super) struct SegmentReader {
    /// The open segment file, with its base.
    segment: Option<(u64, File)>,
    /// Bytes read ahead, starting at position `buffered_at`.
    buffered: Bytes,
    buffered_at: u64,
}

impl SegmentReader {
    /// Reads up to `entries_max` frames from `position`, none past `limit` or past the end of
    /// `position`'s segment. Returns them and the position after the last one.
    pub(super) fn read_batch(
        &mut self,
        shared: &Shared,
        mut position: u64,
        limit: u64,
        entries_max: usize,
    ) -> Result<(Vec<Entry>, u64), LogError> {
        let (base, segment_end) = shared.segment_of(position, limit)?;
        if self.buffered_at != position {
            self.buffered = Bytes::new();
            self.buffered_at = position;
        }
        loop {
            // Never parse past the segment's end or the limit, even if bytes were read ahead.
            let available = usize::try_from(segment_end - position)
                .unwrap_or(usize::MAX)
                .min(self.buffered.len());
            let (entries, after) = parse_entries(
                &shared.shard,
                self.buffered.clone(),
                available,
                position,
                entries_max,
            )?;
            self.buffered
                .advance(usize::try_from(after - position).unwrap_or(usize::MAX));
            position = after;
            self.buffered_at = position;
            if !entries.is_empty() || position >= segment_end {
                return Ok((entries, position));
            }
            // The buffer holds at most part of the next frame: read more of the segment.
            let buffered_end = position + self.buffered.len() as u64;
            if buffered_end >= segment_end {
                return Err(LogError::Corrupt(format!(
                    "the frame at position {position} of the file log at {} runs past {segment_end}, \
                     the end of its segment or of the acknowledged log",
                    shared.dir.display()
                )));
            }
            let wanted = usize::try_from(segment_end - buffered_end)
                .unwrap_or(usize::MAX)
                .min(SUBSCRIBE_BATCH_BYTES_MAX);
            let mut fresh = BytesMut::with_capacity(self.buffered.len() + wanted);
            fresh.extend_from_slice(&self.buffered);
            let kept = fresh.len();
            fresh.resize(kept + wanted, 0);
            let path = segment_path(&shared.dir, base);
            let file = self.segment_file(&path, base)?;
            file.seek(SeekFrom::Start(buffered_end - base))
                .and_then(|_| file.read_exact(&mut fresh[kept..]))
                .map_err(io_error(&path, "read"))?;
            self.buffered = fresh.freeze();
        }
    }

    fn segment_file(&mut self, path: &Path, base: u64) -> Result<&mut File, LogError> {
        let file = match self.segment.take() {
            Some((open_base, file)) if open_base == base => file,
            _ => File::open(path).map_err(io_error(path, "open"))?,
        };
        let (_, file) = self.segment.insert((base, file));
        Ok(file)
    }
}

/// Parses the whole frames at the start of `buffer[..available]` (which starts at log position
/// `position`): up to `entries_max` of them and [`SUBSCRIBE_BATCH_BYTES_MAX`] of payloads.
/// Returns them and the position after the last one.
fn parse_entries(
    shard: &ShardId,
    mut buffer: Bytes,
    mut available: usize,
    mut position: u64,
    entries_max: usize,
) -> Result<(Vec<Entry>, u64), LogError> {
    let mut entries = Vec::new();
    let mut payload_bytes = 0;
    while entries.len() < entries_max && payload_bytes < SUBSCRIBE_BATCH_BYTES_MAX {
        let Some(frame) = parse_frame(&buffer, available, position)? else {
            break;
        };
        payload_bytes += frame.payload.len();
        entries.push(Entry {
            shard: shard.clone(),
            position: Position(position.into()),
            timestamp_ms: frame.timestamp_ms,
            payload: frame.payload,
        });
        buffer.advance(frame.bytes);
        available -= frame.bytes;
        position += frame.bytes as u64;
    }
    Ok((entries, position))
}
