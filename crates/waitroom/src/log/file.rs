//! The embedded, durable, single-node log: append-only segment files under a data directory.
//!
//! # On disk
//! - `LOCK`: held with an exclusive OS file lock while a [`FileLog`] is open, so two processes
//!   (or two `FileLog`s of one process) never write the same directory.
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: segments, each named after the global byte position of its first
//!   frame (20 digits, zero-padded), so the log is the concatenation of the segments in name
//!   order. Only the last segment is ever written. A new one starts when the next frame would push
//!   the last one past `segment_bytes_max` (a frame larger than that gets a segment of its own);
//!   frames never span segments, and the old segment is fsynced before the new one is created.
//! - A frame is `payload length: u32 LE | CRC32C: u32 LE | timestamp_ms: u64 LE | payload`, the
//!   CRC covering the timestamp and the payload. An entry's [`Position`] is its frame's global
//!   byte position, so a subscription from a checkpoint seeks straight to it. The log has one
//!   shard, [`SHARD_NAME`], holding every room.
//!
//! # Writing: one writer thread, group commit
//! A single writer thread owns the last segment. [`FileLog::append`] hands its batch to the
//! writer over a queue bounded to [`APPEND_QUEUE_BYTES_MAX`] bytes of frames (an appender waits
//! for room when it is full) and awaits the writer's acknowledgement. The writer takes everything
//! queued, writes it with one write (one per segment when it rolls over), fdatasyncs it once under
//! [`FsyncPolicy::Always`], publishes the new head and acknowledges every batch of the group. So
//! concurrent appends share their fsyncs. The writer stamps each group with the wall clock in
//! milliseconds made monotonic (`max(previous, now)`, recovered from the log on open), so
//! timestamps never go backwards, not even when the clock does or across restarts.
//!
//! The writer is an OS thread rather than a tokio task because write(2) and fdatasync block: on a
//! runtime worker they would stall every task scheduled there for the length of a disk flush.
//! Dropping the [`FileLog`] waits for the writer to finish what is queued and releases the lock,
//! so the directory can be reopened as soon as the drop returns.
//!
//! If a write or an fsync fails, the writer stops accepting appends (every later append fails) and
//! the log must be reopened: after a failed fsync the OS may have dropped the dirty pages, so
//! nothing written since the last good fsync can be trusted; reopening recovers from the files.
//!
//! # Reading
//! A subscription reads frames from the segment files (usually from the page cache), never past
//! the head the writer published after acknowledging, so it never delivers a frame that `append`
//! has not acknowledged. Every frame's CRC is checked on read.
//!
//! # Recovery on open
//! Opening scans every segment and checks every frame. Only the last segment can hold a torn
//! write (older ones were fsynced when the log moved on). In it, a frame that is cut short, that
//! declares an impossible length, or that fails its CRC with no valid frame right after it is a
//! torn tail: it and everything after it are truncated away, with a warning saying how many bytes
//! were dropped. A frame that fails its CRC while a valid frame follows it, any damage in an older
//! segment, or segments that do not join up are [`LogError::Corrupt`]: acknowledged data is
//! never dropped silently. Opening reads the whole log once; a node replays it anyway (and then
//! finds it in the page cache).

use super::check_batch;
pub use super::{APPEND_BATCH_BYTES_MAX, APPEND_BATCH_RECORDS_MAX, RECORD_BYTES_MAX};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};

use super::{Append, Checkpoint, Entry, Event, Log, LogError, Position, ShardId};

/// The name of the one shard of a file log.
pub const SHARD_NAME: &str = "file";

/// Name of the lock file in the data dir.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Bytes of a frame before its payload: length (4), CRC32C (4), timestamp (8).
pub const FRAME_HEADER_BYTES: usize = 16;

/// Largest frame, header included.
pub const FRAME_BYTES_MAX: usize = FRAME_HEADER_BYTES + RECORD_BYTES_MAX;

/// Most frame bytes waiting in the writer's queue (appends not yet acknowledged). Appenders beyond
/// it wait, which pushes back on callers when the disk falls behind, and it bounds one group
/// commit (the writer takes at most what is queued) and so the memory of its write buffer.
pub const APPEND_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Default size at which a segment is closed and a new one started. Large enough that rolling
/// over (two fsyncs) is rare, small enough that a segment is a convenient unit to copy.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;

/// Smallest `segment_bytes_max` accepted: below one page, segments would be mostly overhead.
pub const SEGMENT_BYTES_MAX_LOWEST: u64 = 4096;

/// Largest `segment_bytes_max` accepted: opening scans whole segments, and a segment this large
/// already takes a second or more to check.
pub const SEGMENT_BYTES_MAX_HIGHEST: u64 = 1024 * 1024 * 1024;

/// Default fdatasync interval of [`FsyncPolicy::Interval`]: about the latency of one disk flush,
/// so syncing in the background costs little throughput while a power loss loses at most a few
/// milliseconds of acknowledged records.
pub const FSYNC_INTERVAL_DEFAULT: Duration = Duration::from_millis(5);

/// Longest fdatasync interval accepted: a longer window defeats the point of a durable log.
pub const FSYNC_INTERVAL_MAX: Duration = Duration::from_secs(1);

/// Most entries in one delivered [`Event::Entries`] batch: many records per applier lock, while
/// bounding the memory one batch holds.
pub const SUBSCRIBE_BATCH_ENTRIES_MAX: usize = 4096;

/// Most bytes a subscription reads from a segment at once, and (roughly) the most payload bytes
/// in one delivered batch.
pub const SUBSCRIBE_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Read buffer for the scan on open: large sequential reads, little memory.
const SCAN_BUFFER_BYTES: usize = 1024 * 1024;

// A batch holds at least one record; the queue holds at least one batch; a read holds a frame.
const _: () = assert!(FRAME_BYTES_MAX <= APPEND_BATCH_BYTES_MAX);
const _: () = assert!(APPEND_BATCH_BYTES_MAX <= APPEND_QUEUE_BYTES_MAX);
const _: () = assert!(FRAME_BYTES_MAX <= SUBSCRIBE_BATCH_BYTES_MAX);
// Frame lengths are u32 on disk, and queue budgets are counted in u32 semaphore permits.
const _: () = assert!(RECORD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(APPEND_QUEUE_BYTES_MAX <= u32::MAX as usize);

/// When an appended record is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `append` returns `Ok` only after an fdatasync that covers its records: an acknowledged
    /// record survives a crash of the process and of the machine (power loss). Concurrent appends
    /// share one fdatasync (group commit), so throughput grows with concurrency while each append
    /// waits for about one disk flush.
    Always,
    /// `append` returns `Ok` once its records were handed to the OS with write(2), before they
    /// reach the disk: an acknowledged record survives a crash of the process (even `kill -9`),
    /// not of the machine. The writer fdatasyncs once written data has been unsynced for the
    /// interval, and so at most once per interval: a power loss loses the records acknowledged
    /// during the last interval, plus those acknowledged while the writer was busy with a group
    /// or an fdatasync when the interval ran out. Dropping the [`FileLog`] fdatasyncs what is left.
    Interval(Duration),
}

impl Default for FsyncPolicy {
    /// `Interval(FSYNC_INTERVAL_DEFAULT)`: the trait's promise (an acknowledged record survives
    /// the process crashing) at the cost of at most ~5 ms of records on a power loss.
    fn default() -> Self {
        Self::Interval(FSYNC_INTERVAL_DEFAULT)
    }
}

/// How to open a [`FileLog`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLogOptions {
    pub fsync: FsyncPolicy,
    /// Size in bytes past which a new segment starts, within
    /// [`SEGMENT_BYTES_MAX_LOWEST`]`..=`[`SEGMENT_BYTES_MAX_HIGHEST`].
    pub segment_bytes_max: u64,
}

impl Default for FileLogOptions {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::default(),
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
        }
    }
}

impl FileLogOptions {
    fn check(&self) -> Result<(), LogError> {
        let segments = SEGMENT_BYTES_MAX_LOWEST..=SEGMENT_BYTES_MAX_HIGHEST;
        if !segments.contains(&self.segment_bytes_max) {
            return Err(LogError::Rejected(format!(
                "segment_bytes_max {} is outside {SEGMENT_BYTES_MAX_LOWEST}..={SEGMENT_BYTES_MAX_HIGHEST}",
                self.segment_bytes_max
            )));
        }
        if let FsyncPolicy::Interval(interval) = self.fsync
            && interval > FSYNC_INTERVAL_MAX
        {
            return Err(LogError::Rejected(format!(
                "fsync interval {interval:?} is longer than FSYNC_INTERVAL_MAX ({FSYNC_INTERVAL_MAX:?})"
            )));
        }
        Ok(())
    }
}

/// Counters of a [`FileLog`] since it was opened, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileLogStats {
    /// `append` batches acknowledged with `Ok`.
    pub appends: u64,
    /// Records in those batches.
    pub records: u64,
    /// Group commits: each wrote every batch queued at the time.
    pub groups: u64,
    /// fdatasync/fsync calls, on segments and on the data dir.
    pub fsyncs: u64,
    /// Frame bytes written.
    pub bytes_written: u64,
}

/// The embedded, durable log. See the module documentation.
pub struct FileLog {
    shared: Arc<Shared>,
    options: FileLogOptions,
    /// The byte budget of the writer's queue (see [`APPEND_QUEUE_BYTES_MAX`]).
    queue_bytes: Arc<Semaphore>,
    /// `None` only while dropping.
    requests: Option<mpsc::Sender<Request>>,
    /// `None` only while dropping.
    writer: Option<JoinHandle<()>>,
}

/// What the writer and the readers share.
struct Shared {
    dir: PathBuf,
    shard: ShardId,
    /// Positions of the segments' first frames, ascending. The writer adds a segment before it
    /// publishes a head inside it.
    segment_bases: RwLock<Vec<u64>>,
    /// The acknowledged head, published by the writer.
    head: watch::Receiver<Head>,
    stats: watch::Receiver<FileLogStats>,
}

/// The end of what `append` has acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    /// Position just past the last acknowledged frame.
    end: u64,
    /// Position of the last acknowledged frame.
    last_frame: Option<u64>,
}

/// One `append` batch on its way to the writer.
struct Request {
    payloads: Vec<Bytes>,
    ack: oneshot::Sender<Result<(), LogError>>,
    /// Given back to the queue's byte budget when the writer is done with the request.
    _queue_slot: OwnedSemaphorePermit,
}

impl FileLog {
    /// Opens (creating it if needed) the log in `dir`: takes the lock, recovers the segments (see
    /// the module documentation) and starts the writer thread. Blocks while it scans the log;
    /// call it from `spawn_blocking` when that matters.
    ///
    /// # Errors
    /// - [`LogError::Unavailable`] when another process or `FileLog` holds the directory's lock.
    /// - [`LogError::Corrupt`] when the log holds damage that recovery may not drop.
    /// - [`LogError::Rejected`] for options out of range.
    /// - [`LogError::Io`] when the directory or its files cannot be read or written.
    pub fn open(dir: &Path, options: FileLogOptions) -> Result<Self, LogError> {
        options.check()?;
        fs::create_dir_all(dir).map_err(io_error(dir, "create the data dir"))?;
        let lock = lock_dir(dir)?;
        let recovered = recover(dir)?;
        let last_base = recovered
            .segment_bases
            .last()
            .copied()
            .ok_or_else(|| LogError::Corrupt("recovery found no segment".to_owned()))?;
        let last_path = segment_path(dir, last_base);
        let segment = OpenOptions::new()
            .append(true)
            .open(&last_path)
            .map_err(io_error(&last_path, "open for appending"))?;

        let head = Head {
            end: recovered.end,
            last_frame: recovered.last_frame,
        };
        let (head_sender, head_receiver) = watch::channel(head);
        let (stats_sender, stats_receiver) = watch::channel(FileLogStats::default());
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            shard: ShardId::new(SHARD_NAME),
            segment_bases: RwLock::new(recovered.segment_bases),
            head: head_receiver,
            stats: stats_receiver,
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            head: head_sender,
            stats: stats_sender,
            options,
            segment,
            segment_bytes: recovered.end - last_base,
            end: recovered.end,
            last_frame: recovered.last_frame,
            last_timestamp_ms: recovered.last_timestamp_ms,
            unsynced_since: None,
            failure: None,
            buffer: Vec::new(),
            _lock: lock,
        };
        let (requests, receiver) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("waitroom-file-log".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(io_error(dir, "start the writer thread for"))?;
        Ok(Self {
            shared,
            options,
            queue_bytes: Arc::new(Semaphore::new(APPEND_QUEUE_BYTES_MAX)),
            requests: Some(requests),
            writer: Some(writer),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Counters since the log was opened.
    pub fn stats(&self) -> FileLogStats {
        *self.shared.stats.borrow()
    }

    /// The counters, updated after every group commit and fsync (for metrics, and for tests that
    /// wait for the writer).
    pub fn watch_stats(&self) -> watch::Receiver<FileLogStats> {
        self.shared.stats.clone()
    }

    fn stopped(&self) -> LogError {
        LogError::Unavailable(format!(
            "the writer of the file log at {} has stopped",
            self.shared.dir.display()
        ))
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has written (and, under `Interval`, synced)
        // everything queued. Waiting for it releases the lock before the drop returns, so the
        // directory can be reopened at once. It takes at most one group commit.
        drop(self.requests.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(dir = %self.shared.dir.display(), "the file log's writer thread panicked");
        }
    }
}

#[async_trait]
impl Log for FileLog {
    /// Appends the batch; returns once the writer has written it (and fsynced it, under
    /// [`FsyncPolicy::Always`]). Waits while the writer's queue is full.
    ///
    /// # Errors
    /// - [`LogError::Rejected`] when the batch breaks a limit ([`APPEND_BATCH_RECORDS_MAX`],
    ///   [`RECORD_BYTES_MAX`], [`APPEND_BATCH_BYTES_MAX`]); nothing is appended then.
    /// - [`LogError::Io`] when writing or syncing failed; [`LogError::Unavailable`] when an earlier
    ///   failure stopped the writer. The log must be reopened.
    async fn append(&self, batch: Vec<Append>) -> Result<(), LogError> {
        let frame_bytes = check_batch(&batch, FRAME_HEADER_BYTES)?;
        if batch.is_empty() {
            return Ok(());
        }
        let permits = u32::try_from(frame_bytes).map_err(|_| {
            LogError::Rejected(format!("batch of {frame_bytes} bytes is too large"))
        })?;
        // The semaphore is never closed, so acquiring fails only if that ever changes.
        let queue_slot = Arc::clone(&self.queue_bytes)
            .acquire_many_owned(permits)
            .await
            .map_err(|_| self.stopped())?;
        let (ack, acked) = oneshot::channel();
        let request = Request {
            payloads: batch.into_iter().map(|append| append.payload).collect(),
            ack,
            _queue_slot: queue_slot,
        };
        let requests = self.requests.as_ref().ok_or_else(|| self.stopped())?;
        requests.send(request).map_err(|_| self.stopped())?;
        acked.await.map_err(|_| self.stopped())?
    }

    /// # Errors
    /// [`LogError::Rejected`] when `from` names a position of this log that is not the start of
    /// one of its frames (a checkpoint taken on other data). [`LogError::Io`] when the frame at
    /// that position cannot be read.
    async fn subscribe(
        &self,
        from: Checkpoint,
    ) -> Result<BoxStream<'static, Result<Event, LogError>>, LogError> {
        let mut head = self.shared.head.clone();
        let head_now = *head.borrow_and_update();
        let mut reader = SegmentReader::default();
        let next = match from.get(&self.shared.shard) {
            None => 0,
            Some(Position(seen)) => {
                let seen = u64::try_from(seen)
                    .ok()
                    .filter(|seen| *seen < head_now.end)
                    .ok_or_else(|| {
                        LogError::Rejected(format!(
                            "checkpoint position {seen} is beyond the end ({}) of the file log at {}",
                            head_now.end,
                            self.shared.dir.display()
                        ))
                    })?;
                // Read the frame the checkpoint names, both to check that it names a frame and to
                // find where the next one starts.
                let shared = Arc::clone(&self.shared);
                let (returned, result) = tokio::task::spawn_blocking(move || {
                    let result = reader.read_batch(&shared, seen, head_now.end, 1);
                    (reader, result)
                })
                .await
                .map_err(reader_failed)?;
                reader = returned;
                match result {
                    Ok((entries, next)) if !entries.is_empty() => next,
                    Ok(_) => {
                        return Err(LogError::Rejected(format!(
                            "checkpoint position {seen} names no frame"
                        )));
                    }
                    Err(LogError::Corrupt(problem)) => {
                        return Err(LogError::Rejected(format!(
                            "checkpoint position {seen} does not start a valid frame of the file \
                             log at {}: {problem}",
                            self.shared.dir.display()
                        )));
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        let cursor = Cursor {
            shared: Arc::clone(&self.shared),
            head,
            next,
            caught_up_at: Some(head_now.end),
            reader: Some(reader),
            ended: false,
        };
        Ok(futures::stream::unfold(cursor, |mut cursor| async move {
            let event = cursor.next_event().await?;
            Some((event, cursor))
        })
        .boxed())
    }

    async fn head(&self) -> Result<Checkpoint, LogError> {
        let head = *self.shared.head.borrow();
        let mut checkpoint = Checkpoint::start();
        if let Some(last_frame) = head.last_frame {
            checkpoint.advance(&self.shared.shard, Position(last_frame.into()));
        }
        Ok(checkpoint)
    }

    fn describe(&self) -> String {
        let fsync = match self.options.fsync {
            FsyncPolicy::Always => "always".to_owned(),
            FsyncPolicy::Interval(interval) => format!("every {interval:?}"),
        };
        format!(
            "file:{} (fsync {fsync}, segments up to {} bytes)",
            self.shared.dir.display(),
            self.options.segment_bytes_max
        )
    }
}

fn reader_failed(error: tokio::task::JoinError) -> LogError {
    LogError::Io(io::Error::other(format!(
        "file log reader task failed: {error}"
    )))
}

/// The state of one subscription.
struct Cursor {
    shared: Arc<Shared>,
    head: watch::Receiver<Head>,
    /// Position of the next frame to deliver.
    next: u64,
    /// The head's end at subscribe time, until `CaughtUp` has been delivered.
    caught_up_at: Option<u64>,
    /// `None` only while a blocking read has it.
    reader: Option<SegmentReader>,
    ended: bool,
}

impl Cursor {
    /// The next event; `None` ends the stream (after an error, or once the log was closed and
    /// everything it wrote was delivered).
    async fn next_event(&mut self) -> Option<Result<Event, LogError>> {
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
            if self.next < limit {
                let result = self.read(limit).await;
                self.ended = result.is_err();
                return Some(result.map(Event::Entries));
            }
            if self.head.changed().await.is_err() && self.next >= self.head.borrow().end {
                // The log was closed and everything it wrote was delivered.
                return None;
            }
        }
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
        // The writer only pushes to this vector, so a panic elsewhere cannot leave it
        // inconsistent; a poisoned lock still guards a valid list.
        let bases = self
            .segment_bases
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let after = bases.partition_point(|base| *base <= position);
        let base = after
            .checked_sub(1)
            .and_then(|index| bases.get(index))
            .copied()
            .ok_or_else(|| {
                LogError::Corrupt(format!("position {position} is before the first segment"))
            })?;
        let segment_end = bases.get(after).copied().unwrap_or(u64::MAX).min(limit);
        Ok((base, segment_end))
    }
}

/// Reads frames of one subscription from the segment files.
#[derive(Default)]
struct SegmentReader {
    /// The open segment file, with its base.
    segment: Option<(u64, File)>,
    /// Bytes read ahead, starting at position `buffered_at`.
    buffered: Bytes,
    buffered_at: u64,
}

/// One frame parsed from a buffer.
struct Frame {
    bytes: usize,
    timestamp_ms: u64,
    payload: Bytes,
}

impl SegmentReader {
    /// Reads up to `entries_max` frames from `position`, none past `limit` or past the end of
    /// `position`'s segment. Returns them and the position after the last one.
    fn read_batch(
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
        let mut entries = Vec::new();
        let mut payload_bytes = 0;
        loop {
            while entries.len() < entries_max && payload_bytes < SUBSCRIBE_BATCH_BYTES_MAX {
                // Never parse past the segment's end or the limit, even if bytes were read ahead.
                let available = usize::try_from(segment_end - position)
                    .unwrap_or(usize::MAX)
                    .min(self.buffered.len());
                let Some(frame) = parse_frame(&self.buffered, available, position)? else {
                    break;
                };
                payload_bytes += frame.payload.len();
                entries.push(Entry {
                    shard: shared.shard.clone(),
                    position: Position(position.into()),
                    timestamp_ms: frame.timestamp_ms,
                    payload: frame.payload,
                });
                self.buffered.advance(frame.bytes);
                position += frame.bytes as u64;
            }
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

/// Parses the frame at the start of `buffer[..available]` (which starts at log position
/// `position`). `None` when the frame is not all there yet.
fn parse_frame(buffer: &Bytes, available: usize, position: u64) -> Result<Option<Frame>, LogError> {
    let Some(header) = buffer
        .get(..FRAME_HEADER_BYTES)
        .filter(|_| available >= FRAME_HEADER_BYTES)
    else {
        return Ok(None);
    };
    let header = FrameHeader::decode(header);
    if header.payload_bytes > RECORD_BYTES_MAX {
        return Err(LogError::Corrupt(format!(
            "the frame at position {position} declares {} payload bytes, more than \
             RECORD_BYTES_MAX ({RECORD_BYTES_MAX})",
            header.payload_bytes
        )));
    }
    let frame_bytes = FRAME_HEADER_BYTES + header.payload_bytes;
    let Some(checked) = buffer
        .get(8..frame_bytes)
        .filter(|_| available >= frame_bytes)
    else {
        return Ok(None);
    };
    if crc32c::crc32c(checked) != header.crc {
        return Err(LogError::Corrupt(format!(
            "the frame at position {position} fails its CRC"
        )));
    }
    Ok(Some(Frame {
        bytes: frame_bytes,
        timestamp_ms: header.timestamp_ms,
        payload: buffer.slice(FRAME_HEADER_BYTES..frame_bytes),
    }))
}

struct FrameHeader {
    payload_bytes: usize,
    crc: u32,
    timestamp_ms: u64,
}

impl FrameHeader {
    /// Decodes the first [`FRAME_HEADER_BYTES`] of `bytes` (which must hold that many).
    fn decode(bytes: &[u8]) -> Self {
        let mut header = [0_u8; FRAME_HEADER_BYTES];
        let copied = bytes.len().min(FRAME_HEADER_BYTES);
        header[..copied].copy_from_slice(&bytes[..copied]);
        let [
            l0,
            l1,
            l2,
            l3,
            c0,
            c1,
            c2,
            c3,
            t0,
            t1,
            t2,
            t3,
            t4,
            t5,
            t6,
            t7,
        ] = header;
        let payload_bytes = u32::from_le_bytes([l0, l1, l2, l3]);
        Self {
            // u32 always fits in usize on the 32- and 64-bit targets this runs on.
            payload_bytes: usize::try_from(payload_bytes).unwrap_or(usize::MAX),
            crc: u32::from_le_bytes([c0, c1, c2, c3]),
            timestamp_ms: u64::from_le_bytes([t0, t1, t2, t3, t4, t5, t6, t7]),
        }
    }
}

/// Appends one frame to `buffer`. `payload` must be at most [`RECORD_BYTES_MAX`] bytes.
fn encode_frame(buffer: &mut Vec<u8>, timestamp_ms: u64, payload: &[u8]) {
    let start = buffer.len();
    // Checked by `check_batch` before a payload reaches the writer.
    let payload_bytes = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    buffer.extend_from_slice(&payload_bytes.to_le_bytes());
    buffer.extend_from_slice(&[0; 4]);
    buffer.extend_from_slice(&timestamp_ms.to_le_bytes());
    buffer.extend_from_slice(payload);
    let crc = crc32c::crc32c(&buffer[start + 8..]);
    buffer[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// The base position named by a segment file name, or `None` for a file that is no segment.
fn segment_base(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Wraps an I/O error with what was being done to which path.
fn io_error<'a>(path: &'a Path, doing: &'a str) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |error| {
        LogError::Io(io::Error::new(
            error.kind(),
            format!("{doing} {}: {error}", path.display()),
        ))
    }
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since_epoch| {
            u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
        })
}

fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error(&path, "open the lock file"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(LogError::Unavailable(format!(
            "the data dir {} is in use: another process (or another open file log) holds the \
             lock on {}",
            dir.display(),
            path.display()
        ))),
        Err(TryLockError::Error(error)) => Err(io_error(&path, "lock")(error)),
    }
}

/// Makes a new file's directory entry durable.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(dir, "fsync the data dir"))
}

fn create_segment(dir: &Path, base: u64) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(segment_path(dir, base))
}

/// What the scan on open found.
struct Recovered {
    segment_bases: Vec<u64>,
    end: u64,
    last_frame: Option<u64>,
    last_timestamp_ms: u64,
}

/// Checks every segment of `dir`, truncates a torn tail, and returns where the log stands.
fn recover(dir: &Path) -> Result<Recovered, LogError> {
    let mut bases = Vec::new();
    for dir_entry in fs::read_dir(dir).map_err(io_error(dir, "list the data dir"))? {
        let dir_entry = dir_entry.map_err(io_error(dir, "list the data dir"))?;
        if let Some(base) = dir_entry.file_name().to_str().and_then(segment_base) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    if bases.is_empty() {
        create_segment(dir, 0).map_err(io_error(&segment_path(dir, 0), "create"))?;
        sync_dir(dir)?;
        return Ok(Recovered {
            segment_bases: vec![0],
            end: 0,
            last_frame: None,
            last_timestamp_ms: 0,
        });
    }

    let mut recovered = Recovered {
        segment_bases: bases.clone(),
        end: 0,
        last_frame: None,
        last_timestamp_ms: 0,
    };
    for (index, &base) in bases.iter().enumerate() {
        let path = segment_path(dir, base);
        let is_last = index + 1 == bases.len();
        if base != recovered.end {
            return Err(LogError::Corrupt(format!(
                "segment {} starts at position {base}, but the segments before it end at {}: a \
                 segment is missing or was cut short",
                path.display(),
                recovered.end
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(is_last)
            .open(&path)
            .map_err(io_error(&path, "open"))?;
        let bytes = file
            .metadata()
            .map_err(io_error(&path, "read the size of"))?
            .len();
        let scan = scan_segment(&file, base, bytes).map_err(io_error(&path, "scan"))?;
        if scan.last_frame.is_some() {
            recovered.last_frame = scan.last_frame;
        }
        recovered.last_timestamp_ms = recovered.last_timestamp_ms.max(scan.last_timestamp_ms);
        let kept_bytes = match scan.damage {
            None => bytes,
            Some(damage) if !is_last || damage.valid_frame_follows => {
                let why = if is_last {
                    "a valid frame follows it, so this is not a torn write"
                } else {
                    "it is not in the last segment, which alone can hold a torn write"
                };
                return Err(LogError::Corrupt(format!(
                    "segment {}: the frame at position {} {}; {why}. Dropping it would drop the \
                     {} acknowledged bytes after it",
                    path.display(),
                    base + damage.offset,
                    damage.problem,
                    bytes - damage.offset
                )));
            }
            Some(damage) => {
                let dropped_bytes = bytes - damage.offset;
                file.set_len(damage.offset)
                    .and_then(|()| file.sync_all())
                    .map_err(io_error(&path, "truncate the torn tail of"))?;
                tracing::warn!(
                    segment = %path.display(),
                    position = base + damage.offset,
                    dropped_bytes,
                    problem = %damage.problem,
                    "dropped a torn tail from the file log"
                );
                damage.offset
            }
        };
        recovered.end = base.checked_add(kept_bytes).ok_or_else(|| {
            LogError::Corrupt(format!("segment {} ends past 2^64", path.display()))
        })?;
    }
    Ok(recovered)
}

#[derive(Default)]
struct Scan {
    /// Position of the last valid frame.
    last_frame: Option<u64>,
    last_timestamp_ms: u64,
    damage: Option<Damage>,
}

/// The first invalid frame of a segment.
struct Damage {
    /// Offset of the frame in its segment.
    offset: u64,
    problem: String,
    /// A valid frame starts right after the damaged one (known only for a frame whose length
    /// could be trusted).
    valid_frame_follows: bool,
}

/// Reads the `bytes` of a segment frame by frame up to the first invalid one.
fn scan_segment(file: &File, base: u64, bytes: u64) -> io::Result<Scan> {
    let mut reader = BufReader::with_capacity(SCAN_BUFFER_BYTES, file);
    let mut scan = Scan::default();
    let mut payload = Vec::new();
    let mut offset = 0;
    while offset < bytes {
        let remaining = bytes - offset;
        let damage = |problem: String, valid_frame_follows| Damage {
            offset,
            problem,
            valid_frame_follows,
        };
        if remaining < FRAME_HEADER_BYTES as u64 {
            scan.damage = Some(damage(
                format!("is cut short: {remaining} bytes of a {FRAME_HEADER_BYTES}-byte header"),
                false,
            ));
            break;
        }
        let mut header_bytes = [0_u8; FRAME_HEADER_BYTES];
        reader.read_exact(&mut header_bytes)?;
        let header = FrameHeader::decode(&header_bytes);
        if header.payload_bytes > RECORD_BYTES_MAX {
            scan.damage = Some(damage(
                format!(
                    "declares {} payload bytes, more than RECORD_BYTES_MAX ({RECORD_BYTES_MAX})",
                    header.payload_bytes
                ),
                false,
            ));
            break;
        }
        let frame_bytes = (FRAME_HEADER_BYTES + header.payload_bytes) as u64;
        if frame_bytes > remaining {
            scan.damage = Some(damage(
                format!("is cut short: {remaining} of its {frame_bytes} bytes"),
                false,
            ));
            break;
        }
        payload.resize(header.payload_bytes, 0);
        reader.read_exact(&mut payload)?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header_bytes[8..]), &payload);
        if crc != header.crc {
            let follows = valid_frame_at(file, offset + frame_bytes, bytes)?;
            scan.damage = Some(damage("fails its CRC".to_owned(), follows));
            break;
        }
        scan.last_frame = Some(base + offset);
        scan.last_timestamp_ms = scan.last_timestamp_ms.max(header.timestamp_ms);
        offset += frame_bytes;
    }
    Ok(scan)
}

/// True when a complete frame with a valid CRC starts at `offset` of a segment of `bytes` bytes.
fn valid_frame_at(mut file: &File, offset: u64, bytes: u64) -> io::Result<bool> {
    if bytes.saturating_sub(offset) < FRAME_HEADER_BYTES as u64 {
        return Ok(false);
    }
    let mut header_bytes = [0_u8; FRAME_HEADER_BYTES];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut header_bytes)?;
    let header = FrameHeader::decode(&header_bytes);
    let frame_bytes = (FRAME_HEADER_BYTES + header.payload_bytes.min(RECORD_BYTES_MAX)) as u64;
    if header.payload_bytes > RECORD_BYTES_MAX || frame_bytes > bytes - offset {
        return Ok(false);
    }
    let mut payload = vec![0; header.payload_bytes];
    file.read_exact(&mut payload)?;
    Ok(crc32c::crc32c_append(crc32c::crc32c(&header_bytes[8..]), &payload) == header.crc)
}

/// The writer thread's state. See the module documentation.
struct Writer {
    shared: Arc<Shared>,
    head: watch::Sender<Head>,
    stats: watch::Sender<FileLogStats>,
    options: FileLogOptions,
    /// The last segment, opened for appending.
    segment: File,
    segment_bytes: u64,
    /// Position just past the last frame written.
    end: u64,
    last_frame: Option<u64>,
    last_timestamp_ms: u64,
    /// When data was first written after the last fsync (`Interval` only).
    unsynced_since: Option<Instant>,
    /// Why the writer stopped accepting appends.
    failure: Option<String>,
    /// One group's frames, reused between groups.
    buffer: Vec<u8>,
    /// Held until the writer ends.
    _lock: File,
}

impl Writer {
    fn run(mut self, requests: mpsc::Receiver<Request>) {
        loop {
            let first = match self.sync_deadline() {
                None => match requests.recv() {
                    Ok(request) => request,
                    Err(_) => break,
                },
                Some(deadline) => {
                    match requests.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    {
                        Ok(request) => request,
                        Err(RecvTimeoutError::Timeout) => {
                            self.sync_unsynced();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            // Everything queued joins the group; the queue's byte budget bounds it.
            let mut group = vec![first];
            group.extend(requests.try_iter());
            self.commit(group);
        }
        self.sync_unsynced();
    }

    /// When written data must be fsynced (`Interval` only).
    fn sync_deadline(&self) -> Option<Instant> {
        match self.options.fsync {
            FsyncPolicy::Always => None,
            FsyncPolicy::Interval(interval) => self
                .unsynced_since
                .map(|since| since.checked_add(interval).unwrap_or(since)),
        }
    }

    fn commit(&mut self, group: Vec<Request>) {
        if let Some(failure) = &self.failure {
            let message = format!(
                "the file log accepts no appends since an earlier failure ({failure}); reopen it"
            );
            for request in group {
                let _ = request
                    .ack
                    .send(Err(LogError::Unavailable(message.clone())));
            }
            return;
        }
        let written = self
            .write_group(&group)
            .and_then(|()| match self.options.fsync {
                FsyncPolicy::Always => self.sync(),
                FsyncPolicy::Interval(_) => {
                    self.unsynced_since.get_or_insert_with(Instant::now);
                    Ok(())
                }
            });
        if let Err(error) = written {
            let message = format!(
                "writing the file log at {}: {error}",
                self.shared.dir.display()
            );
            tracing::error!(
                dir = %self.shared.dir.display(),
                error = %message,
                "the file log failed to write; it accepts no more appends until reopened"
            );
            for request in group {
                let error = io::Error::new(error.kind(), message.clone());
                let _ = request.ack.send(Err(LogError::Io(error)));
            }
            self.failure = Some(message);
            return;
        }
        let records: usize = group.iter().map(|request| request.payloads.len()).sum();
        self.stats.send_modify(|stats| {
            stats.appends += group.len() as u64;
            stats.records += records as u64;
            stats.groups += 1;
        });
        self.head.send_replace(Head {
            end: self.end,
            last_frame: self.last_frame,
        });
        for request in group {
            // An appender that gave up waiting dropped its receiver; its records are in the log.
            let _ = request.ack.send(Ok(()));
        }
        if self
            .sync_deadline()
            .is_some_and(|deadline| deadline <= Instant::now())
        {
            self.sync_unsynced();
        }
    }

    /// Writes the group's frames: one write per segment touched.
    fn write_group(&mut self, group: &[Request]) -> io::Result<()> {
        let timestamp_ms = self.last_timestamp_ms.max(wall_clock_ms());
        self.buffer.clear();
        for request in group {
            for payload in &request.payloads {
                let frame_bytes = (FRAME_HEADER_BYTES + payload.len()) as u64;
                let segment_used = self.segment_bytes + self.buffer.len() as u64;
                if segment_used > 0 && segment_used + frame_bytes > self.options.segment_bytes_max {
                    self.flush_buffer()?;
                    self.roll()?;
                }
                let position = self.end + self.buffer.len() as u64;
                encode_frame(&mut self.buffer, timestamp_ms, payload);
                self.last_frame = Some(position);
            }
        }
        self.flush_buffer()?;
        self.last_timestamp_ms = timestamp_ms;
        // Keep a buffer for the next group, but not one sized for the largest group ever.
        self.buffer.shrink_to(APPEND_BATCH_BYTES_MAX);
        Ok(())
    }

    fn flush_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.segment.write_all(&self.buffer)?;
        let written = self.buffer.len() as u64;
        self.segment_bytes += written;
        self.end += written;
        self.buffer.clear();
        self.stats
            .send_modify(|stats| stats.bytes_written += written);
        Ok(())
    }

    /// Closes the last segment (fsynced, so that only the new last segment can ever hold a torn
    /// write) and starts a new one at the current end.
    fn roll(&mut self) -> io::Result<()> {
        self.sync()?;
        let base = self.end;
        self.segment = create_segment(&self.shared.dir, base)?;
        File::open(&self.shared.dir)?.sync_all()?;
        self.stats.send_modify(|stats| stats.fsyncs += 1);
        self.segment_bytes = 0;
        self.shared
            .segment_bases
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(base);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.segment.sync_data()?;
        self.unsynced_since = None;
        self.stats.send_modify(|stats| stats.fsyncs += 1);
        Ok(())
    }

    /// Fsyncs data written since the last fsync (under `Interval`), unless the writer failed.
    fn sync_unsynced(&mut self) {
        if self.failure.is_some() || self.unsynced_since.is_none() {
            return;
        }
        if let Err(error) = self.sync() {
            let message = format!(
                "fsyncing the file log at {}: {error}",
                self.shared.dir.display()
            );
            tracing::error!(
                dir = %self.shared.dir.display(),
                error = %message,
                "the file log failed to fsync: records acknowledged since the last fsync may be \
                 lost on power loss; it accepts no more appends until reopened"
            );
            self.failure = Some(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::log::conformance::Limits;

    const LIMITS: Limits = Limits {
        record_bytes_max: RECORD_BYTES_MAX,
        append_batch_records_max: APPEND_BATCH_RECORDS_MAX,
    };

    const WAIT: Duration = Duration::from_secs(30);

    fn options(fsync: FsyncPolicy, segment_bytes_max: u64) -> FileLogOptions {
        FileLogOptions {
            fsync,
            segment_bytes_max,
        }
    }

    /// Small segments, so the suite crosses many segment boundaries.
    fn fixture(fsync: FsyncPolicy) -> (TempDir, impl AsyncFn() -> Result<Box<dyn Log>, LogError>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        let open = async move || {
            FileLog::open(&path, options(fsync, 64 * 1024)).map(|log| Box::new(log) as Box<dyn Log>)
        };
        (dir, open)
    }

    mod conformance_fsync_always {
        crate::conformance_tests!(
            fixture: super::fixture(super::FsyncPolicy::Always),
            limits: super::LIMITS,
        );
    }

    mod conformance_fsync_interval {
        crate::conformance_tests!(
            fixture: super::fixture(super::FsyncPolicy::default()),
            limits: super::LIMITS,
        );
    }

    fn record(payload: impl Into<Bytes>) -> Append {
        Append {
            room: "room".into(),
            payload: payload.into(),
        }
    }

    async fn next_event(stream: &mut BoxStream<'static, Result<Event, LogError>>) -> Event {
        tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .expect("no error")
    }

    /// Every entry before the first `CaughtUp` of a subscription from `from`.
    async fn read_to_caught_up(log: &FileLog, from: Checkpoint) -> Vec<Entry> {
        let mut stream = log.subscribe(from).await.unwrap();
        let mut entries = Vec::new();
        loop {
            match next_event(&mut stream).await {
                Event::Entries(batch) => entries.extend(batch),
                Event::CaughtUp => return entries,
                Event::Unavailable(problem) => panic!("unavailable: {problem}"),
            }
        }
    }

    fn payloads(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|entry| String::from_utf8_lossy(&entry.payload).into_owned())
            .collect()
    }

    fn open(dir: &Path) -> FileLog {
        FileLog::open(dir, options(FsyncPolicy::Always, SEGMENT_BYTES_MAX_DEFAULT)).unwrap()
    }

    /// Appends `count` one-record batches `record 0`, `record 1`, ...
    async fn append_records(log: &FileLog, range: std::ops::Range<u32>) {
        for index in range {
            log.append(vec![record(format!("record {index}"))])
                .await
                .unwrap();
        }
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
            .collect();
        files.sort();
        files
    }

    fn flip_byte(path: &Path, offset: u64) {
        let mut bytes = fs::read(path).unwrap();
        bytes[offset as usize] ^= 0x40;
        fs::write(path, bytes).unwrap();
    }

    fn expect_corrupt(result: Result<FileLog, LogError>) -> String {
        match result {
            Err(LogError::Corrupt(message)) => message,
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(_) => panic!("expected Corrupt, the log opened"),
        }
    }

    #[tokio::test]
    async fn a_locked_dir_cannot_be_opened_twice() {
        let temp = tempfile::tempdir().unwrap();
        let first = open(temp.path());
        let second = FileLog::open(temp.path(), FileLogOptions::default());
        match second {
            Err(LogError::Unavailable(message)) => {
                assert!(
                    message.contains(&temp.path().display().to_string()),
                    "the error names the dir: {message}"
                );
            }
            Err(other) => panic!("expected Unavailable, got {other}"),
            Ok(_) => panic!("a second open of a locked dir succeeded"),
        }
        drop(first);
        // Dropping released the lock.
        open(temp.path());
    }

    #[tokio::test]
    async fn positions_are_byte_offsets_across_segments() {
        let temp = tempfile::tempdir().unwrap();
        let log = FileLog::open(
            temp.path(),
            options(FsyncPolicy::Always, SEGMENT_BYTES_MAX_LOWEST),
        )
        .unwrap();
        // 100 frames of 116 bytes: 35 fit in a 4096-byte segment.
        let payload = Bytes::from(vec![b'p'; 100]);
        for _ in 0..10 {
            log.append((0..10).map(|_| record(payload.clone())).collect())
                .await
                .unwrap();
        }
        let entries = read_to_caught_up(&log, Checkpoint::start()).await;
        let positions: Vec<Position> = entries.iter().map(|entry| entry.position).collect();
        let expected: Vec<Position> = (0..100).map(|index| Position(index * 116)).collect();
        assert_eq!(positions, expected);
        let names: Vec<String> = segment_files(temp.path())
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec![
                "00000000000000000000.seg",
                "00000000000000004060.seg",
                "00000000000000008120.seg"
            ]
        );
        // Resuming inside the second segment seeks straight there.
        let mut from = Checkpoint::start();
        from.advance(&ShardId::new(SHARD_NAME), Position(40 * 116));
        let rest = read_to_caught_up(&log, from).await;
        assert_eq!(rest.len(), 59);
        assert_eq!(rest[0].position, Position(41 * 116));
        assert_eq!(
            log.head().await.unwrap().get(&ShardId::new(SHARD_NAME)),
            Some(Position(99 * 116))
        );

        // A record larger than a segment gets a segment of its own.
        log.append(vec![record(vec![b'b'; 10_000])]).await.unwrap();
        log.append(vec![record("after")]).await.unwrap();
        assert_eq!(segment_files(temp.path()).len(), 5);
        let all = read_to_caught_up(&log, Checkpoint::start()).await;
        assert_eq!(all.len(), 102);
        assert_eq!(all[100].payload.len(), 10_000);
        assert_eq!(&all[101].payload[..], b"after");
    }

    #[tokio::test]
    async fn a_frame_cut_short_at_the_tail_is_truncated() {
        for cut_into_last_frame in [1, 5, FRAME_HEADER_BYTES as u64 + 3] {
            let temp = tempfile::tempdir().unwrap();
            let log = open(temp.path());
            append_records(&log, 0..10).await;
            let last_frame = log.head().await.unwrap().get(&ShardId::new(SHARD_NAME));
            drop(log);

            let segment = &segment_files(temp.path())[0];
            let Some(Position(last_frame)) = last_frame else {
                panic!("no head");
            };
            let last_frame = last_frame as u64;
            let file = OpenOptions::new().write(true).open(segment).unwrap();
            file.set_len(last_frame + cut_into_last_frame).unwrap();
            drop(file);

            let log = open(temp.path());
            let entries = read_to_caught_up(&log, Checkpoint::start()).await;
            assert_eq!(
                payloads(&entries),
                (0..9)
                    .map(|index| format!("record {index}"))
                    .collect::<Vec<_>>()
            );
            assert_eq!(fs::metadata(segment).unwrap().len(), last_frame);
            // The next append lands where the torn frame was.
            log.append(vec![record("after recovery")]).await.unwrap();
            let head = log.head().await.unwrap();
            assert_eq!(
                head.get(&ShardId::new(SHARD_NAME)),
                Some(Position(last_frame.into()))
            );
        }
    }

    #[tokio::test]
    async fn a_damaged_last_frame_is_truncated() {
        // A flipped byte in the payload, in the timestamp and in the length of the last frame.
        for offset_in_frame in [20, 10, 1] {
            let temp = tempfile::tempdir().unwrap();
            let log = open(temp.path());
            append_records(&log, 0..10).await;
            let Some(Position(last_frame)) =
                log.head().await.unwrap().get(&ShardId::new(SHARD_NAME))
            else {
                panic!("no head");
            };
            drop(log);
            let segment = &segment_files(temp.path())[0];
            flip_byte(segment, last_frame as u64 + offset_in_frame);

            let log = open(temp.path());
            let entries = read_to_caught_up(&log, Checkpoint::start()).await;
            assert_eq!(
                entries.len(),
                9,
                "flipped byte {offset_in_frame} of the frame"
            );
        }
    }

    #[tokio::test]
    async fn a_zero_filled_tail_is_truncated() {
        // After a power loss the file may have grown without its data reaching the disk.
        let temp = tempfile::tempdir().unwrap();
        let log = open(temp.path());
        append_records(&log, 0..3).await;
        drop(log);
        let segment = &segment_files(temp.path())[0];
        let length = fs::metadata(segment).unwrap().len();
        let file = OpenOptions::new().write(true).open(segment).unwrap();
        file.set_len(length + 8192).unwrap();
        drop(file);

        let log = open(temp.path());
        assert_eq!(read_to_caught_up(&log, Checkpoint::start()).await.len(), 3);
        assert_eq!(fs::metadata(segment).unwrap().len(), length);
    }

    #[tokio::test]
    async fn a_damaged_frame_followed_by_valid_ones_is_corrupt() {
        let temp = tempfile::tempdir().unwrap();
        let log = open(temp.path());
        append_records(&log, 0..10).await;
        drop(log);
        let segment = &segment_files(temp.path())[0];
        // The payload of the fifth frame ("record 4" frames are 24 bytes).
        flip_byte(segment, 4 * 24 + 18);
        let length = fs::metadata(segment).unwrap().len();

        let message = expect_corrupt(FileLog::open(temp.path(), FileLogOptions::default()));
        assert!(message.contains("position 96"), "{message}");
        // Nothing was dropped, and the lock was released.
        assert_eq!(fs::metadata(segment).unwrap().len(), length);
        expect_corrupt(FileLog::open(temp.path(), FileLogOptions::default()));
    }

    #[tokio::test]
    async fn damage_in_an_older_segment_is_corrupt() {
        let small = options(FsyncPolicy::Always, SEGMENT_BYTES_MAX_LOWEST);
        let payload = Bytes::from(vec![b'p'; 1000]);

        // A flipped byte in the middle of the first segment.
        let temp = tempfile::tempdir().unwrap();
        let log = FileLog::open(temp.path(), small).unwrap();
        for _ in 0..10 {
            log.append(vec![record(payload.clone())]).await.unwrap();
        }
        drop(log);
        let segments = segment_files(temp.path());
        assert!(segments.len() >= 3);
        flip_byte(&segments[0], 1016 + 500);
        let message = expect_corrupt(FileLog::open(temp.path(), small));
        assert!(message.contains("not in the last segment"), "{message}");

        // Even at the end of an older segment, a damaged frame is not a torn tail.
        let temp = tempfile::tempdir().unwrap();
        let log = FileLog::open(temp.path(), small).unwrap();
        for _ in 0..10 {
            log.append(vec![record(payload.clone())]).await.unwrap();
        }
        drop(log);
        let segments = segment_files(temp.path());
        let first_length = fs::metadata(&segments[0]).unwrap().len();
        flip_byte(&segments[0], first_length - 1);
        expect_corrupt(FileLog::open(temp.path(), small));

        // An older segment cut short leaves a gap before the next one.
        let temp = tempfile::tempdir().unwrap();
        let log = FileLog::open(temp.path(), small).unwrap();
        for _ in 0..10 {
            log.append(vec![record(payload.clone())]).await.unwrap();
        }
        drop(log);
        let segments = segment_files(temp.path());
        let first_length = fs::metadata(&segments[0]).unwrap().len();
        let file = OpenOptions::new().write(true).open(&segments[0]).unwrap();
        file.set_len(first_length - 1016).unwrap();
        drop(file);
        let message = expect_corrupt(FileLog::open(temp.path(), small));
        assert!(message.contains("missing or was cut short"), "{message}");

        // A missing first segment.
        fs::remove_file(&segments[0]).unwrap();
        expect_corrupt(FileLog::open(temp.path(), small));
    }

    #[tokio::test]
    async fn a_corrupt_frame_fails_the_subscription() {
        let temp = tempfile::tempdir().unwrap();
        let log = open(temp.path());
        append_records(&log, 0..10).await;
        // Damage behind the log's back, after it was checked on open.
        flip_byte(&segment_files(temp.path())[0], 2 * 24 + 18);
        let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
        let outcome = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
        assert!(
            matches!(outcome, Some(Err(LogError::Corrupt(_)))),
            "{outcome:?}"
        );
        let end = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
        assert!(end.is_none(), "the stream ends after a corrupt frame");
    }

    #[tokio::test]
    async fn restart_recovers_positions_and_timestamps() {
        let temp = tempfile::tempdir().unwrap();
        // A log whose last record carries a timestamp an hour ahead of this machine's clock, as
        // if the clock had since been set back.
        let ahead_ms = wall_clock_ms() + 3_600_000;
        let mut frames = Vec::new();
        encode_frame(&mut frames, ahead_ms - 5, b"first");
        encode_frame(&mut frames, ahead_ms, b"second");
        fs::write(segment_path(temp.path(), 0), &frames).unwrap();

        let log = open(temp.path());
        let shard = ShardId::new(SHARD_NAME);
        assert_eq!(
            log.head().await.unwrap().get(&shard),
            Some(Position((FRAME_HEADER_BYTES + 5) as u128))
        );
        log.append(vec![record("third")]).await.unwrap();
        drop(log);

        let log = open(temp.path());
        log.append(vec![record("fourth")]).await.unwrap();
        let entries = read_to_caught_up(&log, Checkpoint::start()).await;
        assert_eq!(payloads(&entries), ["first", "second", "third", "fourth"]);
        let timestamps: Vec<u64> = entries.iter().map(|entry| entry.timestamp_ms).collect();
        assert_eq!(timestamps, [ahead_ms - 5, ahead_ms, ahead_ms, ahead_ms]);
        let positions: Vec<Position> = entries.iter().map(|entry| entry.position).collect();
        assert_eq!(
            positions,
            [Position(0), Position(21), Position(43), Position(64)]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_fsyncs() {
        const APPENDERS: usize = 100;
        const APPENDS_EACH: usize = 5;
        let temp = tempfile::tempdir().unwrap();
        let log = Arc::new(open(temp.path()));
        let before = log.stats();
        let start = Arc::new(tokio::sync::Barrier::new(APPENDERS));
        let appenders: Vec<_> = (0..APPENDERS)
            .map(|appender| {
                let (log, start) = (Arc::clone(&log), Arc::clone(&start));
                tokio::spawn(async move {
                    start.wait().await;
                    for index in 0..APPENDS_EACH {
                        log.append(vec![record(format!("{appender} {index}"))])
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for appender in appenders {
            tokio::time::timeout(WAIT, appender).await.unwrap().unwrap();
        }
        let after = log.stats();
        let appends = after.appends - before.appends;
        let fsyncs = after.fsyncs - before.fsyncs;
        assert_eq!(appends, (APPENDERS * APPENDS_EACH) as u64);
        assert_eq!(after.records - before.records, appends);
        assert!(
            fsyncs < appends,
            "{fsyncs} fsyncs for {appends} appends: concurrent appends must share fsyncs"
        );
        assert_eq!(fsyncs, after.groups - before.groups, "one fsync per group");
        let entries = read_to_caught_up(&log, Checkpoint::start()).await;
        assert_eq!(entries.len(), APPENDERS * APPENDS_EACH);
    }

    #[tokio::test]
    async fn interval_acknowledges_written_data_then_syncs_within_the_interval() {
        let temp = tempfile::tempdir().unwrap();
        let interval = FSYNC_INTERVAL_MAX;
        let log = FileLog::open(
            temp.path(),
            options(FsyncPolicy::Interval(interval), SEGMENT_BYTES_MAX_DEFAULT),
        )
        .unwrap();
        let mut stats = log.watch_stats();
        let started = Instant::now();
        log.append(vec![record("soon durable")]).await.unwrap();
        // Acknowledged once written to the OS: the bytes are in the file (what survives kill -9),
        // and no fsync has happened yet.
        let segment = &segment_files(temp.path())[0];
        assert_eq!(fs::metadata(segment).unwrap().len(), 28);
        assert_eq!(log.stats().fsyncs, 0);
        // With nothing else appended, the writer syncs when the interval has passed.
        tokio::time::timeout(WAIT, stats.wait_for(|stats| stats.fsyncs >= 1))
            .await
            .unwrap()
            .unwrap();
        assert!(started.elapsed() >= interval);
        assert_eq!(log.stats().fsyncs, 1);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_failed_write_stops_the_writer_until_reopened() {
        // Every write to /dev/full fails with ENOSPC.
        let temp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/full", segment_path(temp.path(), 0)).unwrap();
        let log = open(temp.path());
        let first = log.append(vec![record("lost")]).await;
        assert!(matches!(first, Err(LogError::Io(_))), "{first:?}");
        let second = log.append(vec![record("refused")]).await;
        match second {
            Err(LogError::Unavailable(message)) => {
                assert!(message.contains("reopen"), "{message}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert_eq!(log.head().await.unwrap(), Checkpoint::start());
        assert_eq!(log.stats().appends, 0);
    }

    #[tokio::test]
    async fn checkpoints_that_name_no_frame_are_rejected() {
        let temp = tempfile::tempdir().unwrap();
        let log = open(temp.path());
        append_records(&log, 0..3).await;
        let shard = ShardId::new(SHARD_NAME);
        for position in [3, 24 * 3, 10_000] {
            let mut from = Checkpoint::start();
            from.advance(&shard, Position(position));
            let result = log.subscribe(from).await;
            assert!(
                matches!(result, Err(LogError::Rejected(_))),
                "position {position}"
            );
        }
    }

    #[tokio::test]
    async fn a_subscription_ends_after_the_log_is_dropped() {
        let temp = tempfile::tempdir().unwrap();
        let log = open(temp.path());
        append_records(&log, 0..3).await;
        let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
        drop(log);
        let mut delivered = 0;
        // The loop ends only when the stream does.
        while let Some(event) = tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
            if let Event::Entries(entries) = event.unwrap() {
                delivered += entries.len();
            }
        }
        assert_eq!(delivered, 3);
    }

    #[tokio::test]
    async fn options_out_of_range_are_rejected() {
        let temp = tempfile::tempdir().unwrap();
        for options in [
            options(FsyncPolicy::Always, SEGMENT_BYTES_MAX_LOWEST - 1),
            options(FsyncPolicy::Always, SEGMENT_BYTES_MAX_HIGHEST + 1),
            options(
                FsyncPolicy::Interval(FSYNC_INTERVAL_MAX + Duration::from_millis(1)),
                SEGMENT_BYTES_MAX_DEFAULT,
            ),
        ] {
            assert!(matches!(
                FileLog::open(temp.path(), options),
                Err(LogError::Rejected(_))
            ));
        }
    }

    #[tokio::test]
    async fn large_batches_are_read_back_in_capped_batches() {
        let temp = tempfile::tempdir().unwrap();
        let log = FileLog::open(temp.path(), FileLogOptions::default()).unwrap();
        // 3 × 4096 small records, then 6 records of 1 MiB (more than one read's worth).
        for _ in 0..3 {
            log.append((0..APPEND_BATCH_RECORDS_MAX).map(|_| record("x")).collect())
                .await
                .unwrap();
        }
        for _ in 0..6 {
            log.append(vec![record(vec![b'm'; RECORD_BYTES_MAX])])
                .await
                .unwrap();
        }
        let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
        let mut delivered = 0;
        loop {
            match next_event(&mut stream).await {
                Event::Entries(entries) => {
                    assert!(entries.len() <= SUBSCRIBE_BATCH_ENTRIES_MAX);
                    let bytes: usize = entries.iter().map(|entry| entry.payload.len()).sum();
                    assert!(bytes <= SUBSCRIBE_BATCH_BYTES_MAX + RECORD_BYTES_MAX);
                    delivered += entries.len();
                }
                Event::CaughtUp => break,
                Event::Unavailable(problem) => panic!("{problem}"),
            }
        }
        assert_eq!(delivered, 3 * APPEND_BATCH_RECORDS_MAX + 6);
    }
}
