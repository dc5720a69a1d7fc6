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
//! - `snapshots/`: the newest snapshot of each room and the trim marker (see `file/snapshots.rs`).
//!
//! # Writing: the append writes, a syncer thread fsyncs, group commit
//! [`FileLog::append`] writes its batch's frames to the last segment itself, under the writer's
//! lock, with one write (one per segment when it rolls over): a write to the page cache takes
//! microseconds. Under [`FsyncPolicy::Interval`] (the default) it is then acknowledged and its
//! frames published, and the syncer thread fdatasyncs within the interval, off the appends' path.
//! Under [`FsyncPolicy::Always`] it waits for the syncer, which takes everything written since its
//! last fdatasync, syncs it once, publishes it and acknowledges every append in it: concurrent
//! appends share their fsyncs. Appends not yet acknowledged hold at most
//! [`APPEND_QUEUE_BYTES_MAX`] bytes of frames (an appender waits for room beyond it). Each write
//! is stamped with the wall clock in milliseconds made monotonic (`max(previous, now)`, recovered
//! from the log on open), so timestamps never go backwards, not even when the clock does or across
//! restarts.
//!
//! The fsync runs on an OS thread rather than a tokio task because it blocks for the length of a
//! disk flush: on a runtime worker it would stall every task scheduled there. (Why the write does
//! not: see `file/writer.rs`.) Dropping or closing the [`FileLog`] waits for the syncer to sync
//! what was written and releases the lock, so the directory can be reopened as soon as it returns.
//!
//! If a write or an fsync fails, the writer stops accepting appends (every later append fails) and
//! the log must be reopened: after a failed fsync the OS may have dropped the dirty pages, so
//! nothing written since the last good fsync can be trusted; reopening recovers from the files.
//!
//! # Reading
//! A subscription reads frames from the segment files (usually from the page cache), never past
//! the head published once an append is acknowledged, so it never delivers a frame that `append`
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
//! finds it in the page cache). The log starts at its first segment, which after trimming is not
//! at position 0.
//!
//! # Trimming
//! [`Log::trim`] first makes its position the trim marker (durably), then deletes, oldest first,
//! every whole segment whose frames are all at or before the marker, except the last segment
//! (which the writer appends to) and, with `keep-history`, segments holding a frame younger than
//! that. A crash between two deletions leaves the newer segments, which still join up. A
//! subscription that was reading a deleted segment, or that starts from a position before the
//! first segment, gets [`Event::Trimmed`] and goes on from the first segment. Trimming works in
//! segments: up to `segment_bytes_max` of history a snapshot no longer needs stays on disk until
//! the next segment fills.

mod frame;
mod reader;
mod recovery;
mod segments;
mod settings;
mod snapshots;
mod writer;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{Semaphore, watch};

use self::reader::{Cursor, SegmentReader, reader_failed};
use self::recovery::recover;
use self::segments::{io_error, lock_dir, segment_path, sync_dir, wall_clock_ms};
pub use self::settings::*;
use self::snapshots::SnapshotStore;
use self::writer::{Durable, Writer, WriterCell};
use crate::fault::{self, points};
pub use crate::{APPEND_BATCH_BYTES_MAX, APPEND_BATCH_RECORDS_MAX, RECORD_BYTES_MAX};
use crate::{
    Append, Checkpoint, Event, Log, LogError, Position, ShardId, Snapshot, SnapshotInfo,
    check_batch, check_snapshot,
};

/// Counters of a [`FileLog`] since it was opened, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileLogStats {
    /// `append` batches acknowledged with `Ok`.
    pub appends: u64,
    /// Records in those batches.
    pub records: u64,
    /// Group commits: each acknowledged at once every batch written since the previous one (under
    /// `fsync=always`, one fdatasync's worth; under `interval`, one batch each).
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
    /// The byte budget of appends not yet acknowledged (see [`APPEND_QUEUE_BYTES_MAX`]).
    queue_bytes: Arc<Semaphore>,
    /// The writer, which appends lock to write, and the syncer's wake-up.
    writer: Arc<WriterCell>,
    /// How far the syncer has made the log durable (`Always`).
    durable: watch::Receiver<Durable>,
    /// The syncer thread; `None` once closed.
    syncer: Mutex<Option<JoinHandle<()>>>,
    snapshots: Arc<SnapshotStore>,
}

/// One segment of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SegmentMeta {
    /// Position of its first frame (also its file's name).
    base: u64,
    /// Position of its last frame, once known: for every segment the recovery scanned, and for
    /// segments the writer closed; `None` for the last segment while it is written.
    last_frame: Option<u64>,
    /// No frame of it is later than this (exactly, or an upper bound).
    last_timestamp_ms: u64,
}

impl SegmentMeta {
    fn new(base: u64) -> Self {
        Self {
            base,
            last_frame: None,
            last_timestamp_ms: 0,
        }
    }
}

/// What the writer and the readers share.
struct Shared {
    dir: PathBuf,
    shard: ShardId,
    /// The segments, ascending. The writer adds a segment before it publishes a head inside it;
    /// trimming removes segments from the front (never the last).
    segments: RwLock<Vec<SegmentMeta>>,
    /// The acknowledged head, published by the writer.
    head: watch::Receiver<Head>,
    stats: watch::Receiver<FileLogStats>,
    /// Batches delivered to subscriptions from the head's tail (memory) and from the files.
    read_batches_from_tail: AtomicU64,
    read_batches_from_files: AtomicU64,
}

/// The end of what `append` has acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Head {
    /// Position just past the last acknowledged frame.
    end: u64,
    /// Position of the last acknowledged frame.
    last_frame: Option<u64>,
    /// The frames of the last group commit (one append's under `interval`, one fsync's under
    /// `always`), which end at `end` and start at `tail_at`:
    /// a subscription following the log reads them from here, not from the files. That spares the
    /// joins' path a read on the blocking pool (two thread hand-offs and a system call per group);
    /// a subscription further behind reads the segment files.
    tail: Bytes,
    tail_at: u64,
}

impl FileLog {
    /// Opens (creating it if needed) the log in `dir`: takes the lock, recovers the segments (see
    /// the module documentation) and starts the syncer thread. Blocks while it scans the log;
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
        let shard = ShardId::new(SHARD_NAME);
        let snapshots = SnapshotStore::open(&dir.join("snapshots"), shard.clone())?;
        let recovered = recover(dir, snapshots.trimmed())?;
        let last_base = recovered
            .segments
            .last()
            .map(|segment| segment.base)
            .ok_or_else(|| LogError::Corrupt("recovery found no segment".to_owned()))?;
        let last_path = segment_path(dir, last_base);
        let segment = OpenOptions::new()
            .append(true)
            .open(&last_path)
            .map_err(io_error(&last_path, "open for appending"))?;

        let head = Head {
            end: recovered.end,
            last_frame: recovered.last_frame,
            tail: Bytes::new(),
            tail_at: recovered.end,
        };
        let (head_sender, head_receiver) = watch::channel(head);
        let (stats_sender, stats_receiver) = watch::channel(FileLogStats::default());
        let (durable_sender, durable_receiver) = watch::channel(Durable {
            end: recovered.end,
            failure: None,
        });
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            shard,
            segments: RwLock::new(recovered.segments),
            head: head_receiver,
            stats: stats_receiver,
            read_batches_from_tail: AtomicU64::new(0),
            read_batches_from_files: AtomicU64::new(0),
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            head: head_sender,
            stats: stats_sender,
            durable: durable_sender,
            options,
            segment: Arc::new(segment),
            segment_bytes: recovered.end - last_base,
            end: recovered.end,
            last_frame: recovered.last_frame,
            last_timestamp_ms: recovered.last_timestamp_ms,
            unsynced_since: None,
            failure: None,
            buffer: Vec::new(),
            tail: Vec::new(),
            tail_at: recovered.end,
            pending_appends: 0,
            pending_records: 0,
            _lock: lock,
        };
        let writer = Arc::new(WriterCell::new(writer));
        let syncer = {
            let writer = Arc::clone(&writer);
            std::thread::Builder::new()
                .name("waitroom-file-log-sync".to_owned())
                .spawn(move || writer.run_syncer())
                .map_err(io_error(dir, "start the syncer thread for"))?
        };
        Ok(Self {
            shared,
            options,
            queue_bytes: Arc::new(Semaphore::new(APPEND_QUEUE_BYTES_MAX)),
            writer,
            durable: durable_receiver,
            syncer: Mutex::new(Some(syncer)),
            snapshots: Arc::new(snapshots),
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

    /// Batches delivered to subscriptions since the log was opened: from the last group commit
    /// in memory (a subscription keeping up), and read from the segment files (one behind).
    pub fn read_batches(&self) -> (u64, u64) {
        (
            self.shared.read_batches_from_tail.load(Ordering::Relaxed),
            self.shared.read_batches_from_files.load(Ordering::Relaxed),
        )
    }

    /// The counters, updated after every group commit and fsync (for metrics, and for tests that
    /// wait for the writer).
    pub fn watch_stats(&self) -> watch::Receiver<FileLogStats> {
        self.shared.stats.clone()
    }

    /// Reads the frame at `position` (below `end`) with `reader`, both to check that a frame
    /// starts there and to find where the next one starts; returns the reader and that position.
    ///
    /// # Errors
    /// [`LogError::Rejected`] when no valid frame starts at `position` (a position taken on other
    /// data, or not an entry's); [`LogError::Io`] when the segment cannot be read.
    async fn frame_at(
        &self,
        mut reader: SegmentReader,
        position: u64,
        end: u64,
    ) -> Result<(SegmentReader, u64), LogError> {
        let shared = Arc::clone(&self.shared);
        let (returned, result) = tokio::task::spawn_blocking(move || {
            let result = reader.read_batch(&shared, position, end, 1);
            (reader, result)
        })
        .await
        .map_err(reader_failed)?;
        match result {
            Ok((entries, next)) if !entries.is_empty() => Ok((returned, next)),
            Ok(_) => Err(LogError::Rejected(format!(
                "position {position} names no frame of the file log at {}",
                self.shared.dir.display()
            ))),
            Err(LogError::Corrupt(problem)) => Err(LogError::Rejected(format!(
                "position {position} does not start a valid frame of the file log at {}: \
                 {problem}",
                self.shared.dir.display()
            ))),
            Err(error) => Err(error),
        }
    }

    fn stopped(&self) -> LogError {
        LogError::Unavailable(format!(
            "the writer of the file log at {} has stopped",
            self.shared.dir.display()
        ))
    }
}

fn blocking_failed(error: tokio::task::JoinError) -> LogError {
    LogError::Io(std::io::Error::other(format!(
        "a blocking task of the file log failed: {error}"
    )))
}

impl Shared {
    /// Deletes, oldest first, the segments whose frames are all at or before `marker` (and, with
    /// `keep_history_ms`, older than that), never the last one; a crash in between leaves the
    /// newer segments, which still join up.
    fn delete_segments_through(&self, marker: u64, keep_history_ms: u64) -> Result<(), LogError> {
        let keep_after_ms = wall_clock_ms().saturating_sub(keep_history_ms);
        let mut deleted_any = false;
        loop {
            let victim = {
                // See `segment_of` on why a poisoned lock still guards a valid list.
                let mut segments = self
                    .segments
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                let Some(first) = segments.first().copied().filter(|_| segments.len() > 1) else {
                    break;
                };
                let history_kept = keep_history_ms > 0 && first.last_timestamp_ms > keep_after_ms;
                if first.last_frame.is_none_or(|last| last > marker) || history_kept {
                    break;
                }
                segments.remove(0);
                first
            };
            let path = segment_path(&self.dir, victim.base);
            fault::archive(&path);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(&path, "delete the trimmed segment")(error)),
            }
            deleted_any = true;
            fault::point(points::TRIM_SEGMENT_DELETED);
        }
        if deleted_any {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

impl FileLog {
    /// Stops appends and takes the syncer thread, if still open. The syncer ends once it has
    /// synced everything written and closed the writer; joining it waits for that and for the
    /// lock's release.
    fn take_syncer(&self) -> Option<JoinHandle<()>> {
        self.writer.close();
        self.syncer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn syncer_panicked(&self) {
        tracing::error!(dir = %self.shared.dir.display(), "the file log's syncer thread panicked");
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        // Waiting for the syncer releases the lock before the drop returns, so the directory can
        // be reopened at once. It takes at most one fsync.
        if let Some(syncer) = self.take_syncer()
            && syncer.join().is_err()
        {
            self.syncer_panicked();
        }
    }
}

#[async_trait]
impl Log for FileLog {
    /// One batch at a time: an append takes microseconds (a write to the page cache; under
    /// `fsync=always` the syncer groups what is written during an fsync anyway), so more batches
    /// in flight only split the joins into smaller batches, each paying its own wake-ups (and the
    /// appender then appends in place rather than in a task per batch). Measured with
    /// `bench/join-ab.sh`, together with reading the head's tail (bench/results/2026-12-07/
    /// join-path): 8 % less node CPU and 40 % fewer context switches per join than with 4 batches
    /// in flight and reads from the files.
    fn appends_in_flight(&self) -> usize {
        1
    }

    /// Appends the batch; returns once it is written (and fsynced, under
    /// [`FsyncPolicy::Always`]). Waits while [`APPEND_QUEUE_BYTES_MAX`] bytes of frames are not
    /// yet acknowledged.
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
        // The semaphore is never closed, so acquiring fails only if that ever changes. The permits
        // are given back when the append is acknowledged (or fails).
        let _unacknowledged = self
            .queue_bytes
            .acquire_many(permits)
            .await
            .map_err(|_| self.stopped())?;
        let payloads: Vec<Bytes> = batch.into_iter().map(|append| append.payload).collect();
        let end = self.writer.append(&payloads, || self.stopped())?;
        if let FsyncPolicy::Always = self.options.fsync {
            let mut durable = self.durable.clone();
            let durable = durable
                .wait_for(|durable| durable.end >= end || durable.failure.is_some())
                .await
                .map_err(|_| self.stopped())?;
            if let Some(failure) = &durable.failure
                && durable.end < end
            {
                return Err(LogError::Io(std::io::Error::other(failure.clone())));
            }
        }
        Ok(())
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
        let head_now = head.borrow_and_update().clone();
        let mut reader = SegmentReader::default();
        let first_base = self.shared.first_base();
        let marker = self.snapshots.trimmed();
        let next = match from.get(&self.shared.shard) {
            // From the beginning: at 0, so that a trimmed log says so (`Trimmed`) first.
            None => 0,
            // Before the first segment: the frames after `seen` that trimming deleted are all at
            // or before the trim marker, so from a checkpoint at or past the marker nothing is
            // missing; from one before it, the cursor says `Trimmed` first.
            Some(Position(seen)) if seen < u128::from(first_base) => {
                if marker.is_some_and(|marker| seen >= u128::from(marker)) {
                    first_base
                } else {
                    // Below the first segment, and `seen + 1` is below it too.
                    seen as u64 + 1
                }
            }
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
                let (returned, next) = self.frame_at(reader, seen, head_now.end).await?;
                reader = returned;
                next
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

    /// The log holds every room in one shard: stores a tombstone at `last` (unless a newer
    /// snapshot of the room is held) and answers `true`.
    async fn forget_room(&self, room: &str, last: Position) -> Result<bool, LogError> {
        let tombstone = Snapshot {
            room: room.into(),
            shard: self.shared.shard.clone(),
            position: last,
            bytes: Bytes::new(),
        };
        let store = Arc::clone(&self.snapshots);
        tokio::task::spawn_blocking(move || store.store(&tombstone, true))
            .await
            .map_err(blocking_failed)??;
        Ok(true)
    }

    async fn store_snapshot(&self, snapshot: Snapshot) -> Result<bool, LogError> {
        check_snapshot(&snapshot)?;
        let store = Arc::clone(&self.snapshots);
        tokio::task::spawn_blocking(move || store.store(&snapshot, false))
            .await
            .map_err(blocking_failed)?
    }

    async fn load_snapshot(&self, room: &str) -> Result<Option<Snapshot>, LogError> {
        let store = Arc::clone(&self.snapshots);
        let room = room.to_owned();
        tokio::task::spawn_blocking(move || store.load(&room))
            .await
            .map_err(blocking_failed)?
    }

    async fn snapshot_info(&self, room: &str) -> Result<Option<SnapshotInfo>, LogError> {
        Ok(self.snapshots.info(room))
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, LogError> {
        Ok(self.snapshots.list())
    }

    /// Marks `through` as trimmed, then deletes whole segments (see "Trimming" in the module
    /// documentation).
    ///
    /// # Errors
    /// [`LogError::Rejected`] when `through` is not the position of a frame of the log (or of one
    /// trimmed away); nothing is marked then.
    async fn trim(&self, shard: &ShardId, through: Position) -> Result<(), LogError> {
        if *shard != self.shared.shard {
            return Err(LogError::Rejected(format!(
                "the file log has one shard, {SHARD_NAME}, not {shard}"
            )));
        }
        let through = u64::try_from(through.0).map_err(|_| {
            LogError::Rejected(format!("position {} is past any file log", through.0))
        })?;
        // The marker is where a node starting from snapshots subscribes, so it must name a frame
        // (a position already trimmed away names one that was there).
        let end = self.shared.head.borrow().end;
        if through >= end {
            return Err(LogError::Rejected(format!(
                "cannot trim through position {through}: the file log at {} ends at {end}",
                self.shared.dir.display()
            )));
        }
        if through >= self.shared.first_base() {
            self.frame_at(SegmentReader::default(), through, end)
                .await?;
        }
        let store = Arc::clone(&self.snapshots);
        let shared = Arc::clone(&self.shared);
        let keep_history_ms = self.options.keep_history_ms;
        tokio::task::spawn_blocking(move || {
            let marker = store.mark_trimmed(through)?;
            fault::point(points::TRIM_MARKED);
            shared.delete_segments_through(marker, keep_history_ms)
        })
        .await
        .map_err(blocking_failed)?
    }

    async fn trimmed(&self) -> Result<Checkpoint, LogError> {
        let mut trimmed = Checkpoint::start();
        if let Some(marker) = self.snapshots.trimmed() {
            trimmed.advance(&self.shared.shard, Position(marker.into()));
        }
        Ok(trimmed)
    }

    async fn head(&self) -> Result<Checkpoint, LogError> {
        let head = self.shared.head.borrow().clone();
        let mut checkpoint = Checkpoint::start();
        if let Some(last_frame) = head.last_frame {
            checkpoint.advance(&self.shared.shard, Position(last_frame.into()));
        }
        Ok(checkpoint)
    }

    /// Writes and syncs what is queued, stops the writer and releases the data directory's lock,
    /// so that the directory can be opened again as soon as this returns (a node stopped and
    /// started again in one process), however long other holders keep this value; appends after
    /// it fail (`Unavailable`). Waits for at most one group commit.
    async fn close(&self) {
        let Some(syncer) = self.take_syncer() else {
            return;
        };
        if !matches!(
            tokio::task::spawn_blocking(move || syncer.join()).await,
            Ok(Ok(()))
        ) {
            self.syncer_panicked();
        }
    }

    fn describe(&self) -> String {
        let fsync = match self.options.fsync {
            FsyncPolicy::Always => "always".to_owned(),
            FsyncPolicy::Interval(interval) => format!("every {interval:?}"),
        };
        let kept = match self.options.keep_history_ms {
            0 => String::new(),
            ms => format!(", trimmed history kept {} s", ms / 1000),
        };
        format!(
            "file:{} (fsync {fsync}, segments up to {} bytes{kept})",
            self.shared.dir.display(),
            self.options.segment_bytes_max
        )
    }
}

#[cfg(test)]
mod tests;
