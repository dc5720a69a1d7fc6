//! The file log's limits and options (`file:[path][?fsync=always|interval&fsync-interval-ms=5&
//! segment-bytes=67108864&keep-history=24h]`).

use std::time::Duration;

use crate::options::{OptionError, QueryOptions};
use crate::{APPEND_BATCH_BYTES_MAX, LogError, RECORD_BYTES_MAX};

/// The name of the one shard of a file log.
pub const SHARD_NAME: &str = "file";

/// Name of the lock file in the data dir.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Bytes of a frame before its payload: length (4), CRC32C (4), timestamp (8).
pub const FRAME_HEADER_BYTES: usize = 16;

/// Largest frame, header included.
pub const FRAME_BYTES_MAX: usize = FRAME_HEADER_BYTES + RECORD_BYTES_MAX;

/// Most frame bytes of appends not yet acknowledged. Appenders beyond it wait, which pushes back on
/// callers when the disk falls behind (`fsync=always`), and it bounds one group commit (a syncer
/// round takes at most what was written) and so the memory of its tail.
pub const APPEND_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Default size at which a segment is closed and a new one started. Large enough that rolling
/// over (two fsyncs) is rare, small enough that a segment is a convenient unit to copy, and that
/// trimming (whole segments) keeps at most this much history a snapshot no longer needs.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;

/// Smallest `segment-bytes` accepted: below one page, segments would be mostly overhead.
pub const SEGMENT_BYTES_MAX_LOWEST: u64 = 4096;

/// Largest `segment-bytes` accepted: opening scans whole segments, and a segment this large
/// already takes a second or more to check.
pub const SEGMENT_BYTES_MAX_HIGHEST: u64 = 1024 * 1024 * 1024;

/// Default fdatasync interval of [`FsyncPolicy::Interval`]: about the latency of one disk flush,
/// so syncing in the background costs little throughput while a power loss loses at most a few
/// milliseconds of acknowledged records.
pub const FSYNC_INTERVAL_DEFAULT: Duration = Duration::from_millis(5);

/// Longest fdatasync interval accepted: a longer window defeats the point of a durable log.
pub const FSYNC_INTERVAL_MAX: Duration = Duration::from_secs(1);

/// Most entries in one delivered [`crate::Event::Entries`] batch: many records per applier lock,
/// while bounding the memory one batch holds.
pub const SUBSCRIBE_BATCH_ENTRIES_MAX: usize = 4096;

/// Most bytes a subscription reads from a segment at once, and (roughly) the most payload bytes
/// in one delivered batch.
pub const SUBSCRIBE_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Read buffer for the scan on open: large sequential reads, little memory.
pub(super) const SCAN_BUFFER_BYTES: usize = 1024 * 1024;

/// Longest room name a snapshot file may carry: the name is the file's name (with a short
/// prefix and suffix), which must stay within the 255 bytes file systems allow.
pub const SNAPSHOT_ROOM_NAME_BYTES_MAX: usize = 200;

// A batch holds at least one record; the queue holds at least one batch; a read holds a frame.
const _: () = assert!(FRAME_BYTES_MAX <= APPEND_BATCH_BYTES_MAX);
const _: () = assert!(APPEND_BATCH_BYTES_MAX <= APPEND_QUEUE_BYTES_MAX);
const _: () = assert!(FRAME_BYTES_MAX <= SUBSCRIBE_BATCH_BYTES_MAX);
// Frame lengths are u32 on disk, and queue budgets are counted in u32 semaphore permits.
const _: () = assert!(RECORD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(APPEND_QUEUE_BYTES_MAX <= u32::MAX as usize);
// Room ids of the state machine always fit a snapshot file name.
const _: () = assert!(waitroom_core::limits::ROOM_ID_BYTES_MAX <= SNAPSHOT_ROOM_NAME_BYTES_MAX);

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
    /// or an fdatasync when the interval ran out. Dropping the [`super::FileLog`] fdatasyncs
    /// what is left.
    Interval(Duration),
}

impl Default for FsyncPolicy {
    /// `Interval(FSYNC_INTERVAL_DEFAULT)`: the trait's promise (an acknowledged record survives
    /// the process crashing) at the cost of at most ~5 ms of records on a power loss.
    fn default() -> Self {
        Self::Interval(FSYNC_INTERVAL_DEFAULT)
    }
}

/// How to open a [`super::FileLog`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLogOptions {
    pub fsync: FsyncPolicy,
    /// Size in bytes past which a new segment starts, within
    /// [`SEGMENT_BYTES_MAX_LOWEST`]`..=`[`SEGMENT_BYTES_MAX_HIGHEST`].
    pub segment_bytes_max: u64,
    /// Trimmed segments holding an entry younger than this are kept (for audit), in ms.
    pub keep_history_ms: u64,
}

impl Default for FileLogOptions {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::default(),
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            keep_history_ms: 0,
        }
    }
}

impl FileLogOptions {
    /// Options from the query string of a `file:` URL: `fsync` (`always` or `interval`, the
    /// default), `fsync-interval-ms` (with `interval`; default 5), `segment-bytes`,
    /// `keep-history` (a duration such as `24h`; default `0`).
    ///
    /// # Errors
    /// [`LogError::Rejected`] for an unknown option, a bad value or one out of range.
    pub fn from_query(query: &str) -> Result<Self, LogError> {
        let mut options = QueryOptions::parse("file", query)?;
        let defaults = Self::default();
        let always = options
            .take_parsed("fsync", |value| match value {
                "always" => Ok(true),
                "interval" => Ok(false),
                _ => Err(OptionError("always or interval".to_owned())),
            })?
            .unwrap_or(false);
        let interval_ms = options.take_parsed("fsync-interval-ms", |value| {
            value
                .parse::<u64>()
                .ok()
                .filter(|ms| (1..=FSYNC_INTERVAL_MAX.as_millis() as u64).contains(ms))
                .ok_or_else(|| {
                    OptionError(format!(
                        "milliseconds from 1 to {}",
                        FSYNC_INTERVAL_MAX.as_millis()
                    ))
                })
        })?;
        if always && interval_ms.is_some() {
            return Err(LogError::Rejected(
                "file URL option fsync-interval-ms goes with fsync=interval, not fsync=always"
                    .to_owned(),
            ));
        }
        let fsync = if always {
            FsyncPolicy::Always
        } else {
            FsyncPolicy::Interval(interval_ms.map_or(FSYNC_INTERVAL_DEFAULT, Duration::from_millis))
        };
        let segment_bytes_max = options
            .take_parsed("segment-bytes", |value| {
                value
                    .parse::<u64>()
                    .map_err(|_| OptionError("a whole number of bytes (e.g. 67108864)".to_owned()))
            })?
            .unwrap_or(defaults.segment_bytes_max);
        let keep_history_ms = options.take_keep_history_ms()?;
        options.finish()?;
        let parsed = Self {
            fsync,
            segment_bytes_max,
            keep_history_ms,
        };
        parsed.check()?;
        Ok(parsed)
    }

    pub(super) fn check(&self) -> Result<(), LogError> {
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
        if self.keep_history_ms > crate::limits::KEEP_HISTORY_MS_MAX {
            return Err(LogError::Rejected(format!(
                "keep-history of {} ms is longer than KEEP_HISTORY_MS_MAX ({} ms)",
                self.keep_history_ms,
                crate::limits::KEEP_HISTORY_MS_MAX
            )));
        }
        Ok(())
    }
}
