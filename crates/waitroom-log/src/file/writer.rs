//! Writing: an append writes its own frames to the last segment, under the writer's lock, with
//! one write (one per segment when it rolls over); the syncer thread fsyncs behind it.
//!
//! - Under [`FsyncPolicy::Interval`] the append publishes the new head and is acknowledged as
//!   soon as its write returns; the syncer fdatasyncs once the interval has passed since the
//!   first write it has not synced, off the writers' path (it holds the lock only to note what
//!   to sync, and fsyncs a handle of the segment outside it).
//! - Under [`FsyncPolicy::Always`] the append waits for the syncer: each round takes everything
//!   written since the previous round, fdatasyncs it once, publishes the new head and
//!   acknowledges every append of the round. So concurrent appends share their fsyncs.
//!
//! Why the write is not handed to a thread of its own (it was, until measured): a write(2) to
//! the page cache takes microseconds, while handing it over cost every append a futex wake and a
//! context switch each way. Writing in place took 31 % of the node's context switches per join
//! away, for 3–4 % more joins a second (`bench/join-ab.sh`, bench/results/2026-12-07/
//! join-path-2). The fsync, which does block for the length of a disk flush, stays on the syncer
//! thread, never on a runtime worker, except the one that closes a full segment (once per
//! `segment_bytes_max`, 64 MiB by default).

use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::watch;

use super::frame::encode_frame;
use super::segments::{create_segment, wall_clock_ms};
use super::settings::{FRAME_HEADER_BYTES, FileLogOptions, FsyncPolicy};
use super::{FileLogStats, Head, SegmentMeta, Shared};
use crate::{APPEND_BATCH_BYTES_MAX, LogError};

/// What the appends and the syncer share: the writer behind its lock, and the syncer's wake-up.
pub(super) struct WriterCell {
    state: Mutex<WriterState>,
    /// Wakes the syncer: data to sync, or closing.
    wake: Condvar,
}

struct WriterState {
    /// `None` once the syncer has closed it (which releases the directory's lock).
    writer: Option<Writer>,
    /// Set by `close`: no more appends; the syncer syncs what was written, then closes the writer.
    closing: bool,
}

/// How far the syncer has made the log durable (`Always`).
#[derive(Clone, Debug, Default)]
pub(super) struct Durable {
    /// Position just past the last frame fsynced and published.
    pub(super) end: u64,
    /// Set when the writer failed: appends not yet durable fail with it.
    pub(super) failure: Option<String>,
}

/// The writer's state. See the module documentation.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) head: watch::Sender<Head>,
    pub(super) stats: watch::Sender<FileLogStats>,
    pub(super) durable: watch::Sender<Durable>,
    pub(super) options: FileLogOptions,
    /// The last segment, opened for appending; shared with the syncer while it fsyncs.
    pub(super) segment: Arc<File>,
    pub(super) segment_bytes: u64,
    /// Position just past the last frame written.
    pub(super) end: u64,
    pub(super) last_frame: Option<u64>,
    pub(super) last_timestamp_ms: u64,
    /// When data was first written after the last fsync (`Interval` only).
    pub(super) unsynced_since: Option<Instant>,
    /// Why the writer stopped accepting appends.
    pub(super) failure: Option<String>,
    /// One append's frames, reused between appends.
    pub(super) buffer: Vec<u8>,
    /// The frames written but not yet published in [`Head`] (for subscriptions keeping up), and
    /// their position: one append's under `Interval`, a round's under `Always`. Positions run on
    /// across segments, so frames that rolled over to a new segment are still one run.
    pub(super) tail: Vec<u8>,
    pub(super) tail_at: u64,
    /// Appends and records written but not yet published (`Always`).
    pub(super) pending_appends: u64,
    pub(super) pending_records: u64,
    /// Held until the writer is closed.
    pub(super) _lock: File,
}

/// What one `Always` round syncs and then publishes, taken under the lock.
struct Round {
    segment: Arc<File>,
    head: Head,
    appends: u64,
    records: u64,
}

impl WriterCell {
    pub(super) fn new(writer: Writer) -> Self {
        Self {
            state: Mutex::new(WriterState {
                writer: Some(writer),
                closing: false,
            }),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WriterState> {
        // A panic while holding the lock leaves a writer whose `failure` may be unset, but
        // whose positions are only ever advanced after a successful write: still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes one append's frames. Returns the position just past them: under `Interval` they are
    /// acknowledged (and published) already; under `Always` once [`Durable::end`] reaches it.
    ///
    /// # Errors
    /// [`LogError::Unavailable`] when the log is closing or an earlier failure stopped the writer;
    /// [`LogError::Io`] when the write failed (which stops the writer).
    pub(super) fn append(
        &self,
        payloads: &[Bytes],
        stopped: impl FnOnce() -> LogError,
    ) -> Result<u64, LogError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(writer) = state.writer.as_mut().filter(|_| !state.closing) else {
            return Err(stopped());
        };
        let (end, wake) = writer.append(payloads)?;
        drop(guard);
        if wake {
            self.wake.notify_one();
        }
        Ok(end)
    }

    /// Stops appends and wakes the syncer, which syncs what was written and closes the writer.
    pub(super) fn close(&self) {
        self.lock().closing = true;
        self.wake.notify_one();
    }

    /// The syncer thread's loop: fsyncs per the policy until closed.
    pub(super) fn run_syncer(&self) {
        let mut state = self.lock();
        loop {
            let closing = state.closing;
            let Some(writer) = state.writer.as_mut() else {
                return;
            };
            let now = Instant::now();
            match writer.sync_due(now) {
                Some(due) if due <= now || closing => {}
                Some(due) => {
                    state = self
                        .wake
                        .wait_timeout(state, due - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    continue;
                }
                None if closing => {
                    // Dropping the writer ends the subscriptions once they have read everything
                    // and releases the directory's lock.
                    state.writer = None;
                    return;
                }
                None => {
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
            }
            match writer.options.fsync {
                FsyncPolicy::Interval(_) => {
                    writer.unsynced_since = None;
                    let segment = Arc::clone(&writer.segment);
                    drop(state);
                    let synced = segment.sync_data();
                    state = self.lock();
                    if let Some(writer) = state.writer.as_mut() {
                        writer.synced(synced);
                    }
                }
                FsyncPolicy::Always => {
                    let round = writer.take_round();
                    drop(state);
                    let synced = round.segment.sync_data();
                    state = self.lock();
                    if let Some(writer) = state.writer.as_mut() {
                        writer.publish_round(round, synced);
                    }
                }
            }
        }
    }
}

impl Writer {
    /// When the syncer has work: under `Interval`, once the interval has passed since the first
    /// unsynced write; under `Always`, at once while written frames wait for their fsync. After a
    /// failure, only to tell the waiting appends (`Always`).
    fn sync_due(&self, now: Instant) -> Option<Instant> {
        match self.options.fsync {
            FsyncPolicy::Interval(interval) if self.failure.is_none() => self
                .unsynced_since
                .map(|since| since.checked_add(interval).unwrap_or(since)),
            FsyncPolicy::Interval(_) => None,
            FsyncPolicy::Always => (self.pending_appends > 0).then_some(now),
        }
    }

    /// Writes one append's frames (see [`WriterCell::append`]); also says whether the syncer must
    /// be woken (the first unsynced write under `Interval`; every write under `Always`).
    fn append(&mut self, payloads: &[Bytes]) -> Result<(u64, bool), LogError> {
        if let Some(failure) = &self.failure {
            return Err(LogError::Unavailable(format!(
                "the file log accepts no appends since an earlier failure ({failure}); reopen it"
            )));
        }
        if let Err(error) = self.write(payloads) {
            let message = format!(
                "writing the file log at {}: {error}",
                self.shared.dir.display()
            );
            self.fail(message.clone());
            return Err(LogError::Io(io::Error::new(error.kind(), message)));
        }
        let records = payloads.len() as u64;
        match self.options.fsync {
            FsyncPolicy::Interval(_) => {
                self.stats.send_modify(|stats| {
                    stats.appends += 1;
                    stats.records += records;
                    stats.groups += 1;
                });
                self.head.send_replace(Head {
                    end: self.end,
                    last_frame: self.last_frame,
                    tail: Bytes::copy_from_slice(&self.tail),
                    tail_at: self.tail_at,
                });
                self.tail.clear();
                self.tail_at = self.end;
                // Keep a buffer for the next append, but not one sized for the largest ever.
                self.tail.shrink_to(APPEND_BATCH_BYTES_MAX);
                let first_unsynced = self.unsynced_since.is_none();
                self.unsynced_since.get_or_insert_with(Instant::now);
                Ok((self.end, first_unsynced))
            }
            FsyncPolicy::Always => {
                self.pending_appends += 1;
                self.pending_records += records;
                Ok((self.end, true))
            }
        }
    }

    /// Writes the frames: one write per segment touched.
    fn write(&mut self, payloads: &[Bytes]) -> io::Result<()> {
        let timestamp_ms = self.last_timestamp_ms.max(wall_clock_ms());
        self.buffer.clear();
        for payload in payloads {
            let frame_bytes = (FRAME_HEADER_BYTES + payload.len()) as u64;
            let segment_used = self.segment_bytes + self.buffer.len() as u64;
            if segment_used > 0 && segment_used + frame_bytes > self.options.segment_bytes_max {
                self.flush_buffer()?;
                self.roll(timestamp_ms)?;
            }
            let position = self.end + self.buffer.len() as u64;
            encode_frame(&mut self.buffer, timestamp_ms, payload);
            self.last_frame = Some(position);
        }
        self.flush_buffer()?;
        self.last_timestamp_ms = timestamp_ms;
        self.buffer.shrink_to(APPEND_BATCH_BYTES_MAX);
        Ok(())
    }

    fn flush_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        (&*self.segment).write_all(&self.buffer)?;
        self.tail.extend_from_slice(&self.buffer);
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
    ///
    /// `timestamp_ms` is the current append's timestamp: no frame of the closed segment is later.
    fn roll(&mut self, timestamp_ms: u64) -> io::Result<()> {
        self.segment.sync_data()?;
        self.stats.send_modify(|stats| stats.fsyncs += 1);
        let base = self.end;
        self.segment = Arc::new(create_segment(&self.shared.dir, base)?);
        File::open(&self.shared.dir)?.sync_all()?;
        self.stats.send_modify(|stats| stats.fsyncs += 1);
        self.segment_bytes = 0;
        let mut segments = self
            .shared
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(closed) = segments.last_mut() {
            closed.last_frame = self.last_frame;
            closed.last_timestamp_ms = closed.last_timestamp_ms.max(timestamp_ms);
        }
        segments.push(SegmentMeta::new(base));
        Ok(())
    }

    /// After an `Interval` fsync: counts it, or stops the writer if it failed.
    fn synced(&mut self, synced: io::Result<()>) {
        match synced {
            Ok(()) => self.stats.send_modify(|stats| stats.fsyncs += 1),
            Err(error) => self.fail(format!(
                "fsyncing the file log at {}: {error}; records acknowledged since the last fsync \
                 may be lost on power loss",
                self.shared.dir.display()
            )),
        }
    }

    /// Takes everything written since the last round (`Always`).
    fn take_round(&mut self) -> Round {
        let head = Head {
            end: self.end,
            last_frame: self.last_frame,
            tail: Bytes::from(std::mem::take(&mut self.tail)),
            tail_at: self.tail_at,
        };
        self.tail_at = self.end;
        let round = Round {
            segment: Arc::clone(&self.segment),
            head,
            appends: self.pending_appends,
            records: self.pending_records,
        };
        self.pending_appends = 0;
        self.pending_records = 0;
        round
    }

    /// After an `Always` round's fsync: publishes its frames and acknowledges its appends, or
    /// fails them and stops the writer.
    fn publish_round(&mut self, round: Round, synced: io::Result<()>) {
        if self.failure.is_some() {
            // A write failed after the round was taken: `fail` has failed the round's appends
            // already (nothing after a failure is acknowledged, as when one group held both).
            return;
        }
        if let Err(error) = synced {
            self.fail(format!(
                "fsyncing the file log at {}: {error}",
                self.shared.dir.display()
            ));
            return;
        }
        self.stats.send_modify(|stats| {
            stats.appends += round.appends;
            stats.records += round.records;
            stats.groups += 1;
            stats.fsyncs += 1;
        });
        let end = round.head.end;
        self.head.send_replace(round.head);
        self.durable.send_modify(|durable| durable.end = end);
    }

    /// Stops accepting appends; appends waiting for an fsync (`Always`) fail.
    fn fail(&mut self, message: String) {
        tracing::error!(
            dir = %self.shared.dir.display(),
            error = %message,
            "the file log failed to write or fsync; it accepts no more appends until reopened"
        );
        self.durable.send_modify(|durable| {
            durable.failure = Some(message.clone());
        });
        self.failure = Some(message);
        // Nothing written since the last good round is published now (`Always`).
        self.pending_appends = 0;
        self.pending_records = 0;
    }
}
