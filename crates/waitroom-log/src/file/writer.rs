//! Writing: one writer thread owns the last segment, takes every queued batch as one group,
//! writes it with one write (one per segment when it rolls over), syncs per the policy, publishes
//! the new head and acknowledges the group.

use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::watch;

use super::frame::encode_frame;
use super::segments::{create_segment, wall_clock_ms};
use super::settings::{FRAME_HEADER_BYTES, FileLogOptions, FsyncPolicy};
use super::{FileLogStats, Head, Request, SegmentMeta, Shared};
use crate::{APPEND_BATCH_BYTES_MAX, LogError};

/// The writer thread's state. See the module documentation.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) head: watch::Sender<Head>,
    pub(super) stats: watch::Sender<FileLogStats>,
    pub(super) options: FileLogOptions,
    /// The last segment, opened for appending.
    pub(super) segment: File,
    pub(super) segment_bytes: u64,
    /// Position just past the last frame written.
    pub(super) end: u64,
    pub(super) last_frame: Option<u64>,
    pub(super) last_timestamp_ms: u64,
    /// When data was first written after the last fsync (`Interval` only).
    pub(super) unsynced_since: Option<Instant>,
    /// Why the writer stopped accepting appends.
    pub(super) failure: Option<String>,
    /// One group's frames, reused between groups.
    pub(super) buffer: Vec<u8>,
    /// The frames of the current group (its last, when published), and their position: published
    /// in [`Head`] for subscriptions keeping up. Positions run on across segments, so a group
    /// that rolled over to a new segment is still one run of frames.
    pub(super) tail: Vec<u8>,
    pub(super) tail_at: u64,
    /// Held until the writer ends.
    pub(super) _lock: File,
}

impl Writer {
    pub(super) fn run(mut self, requests: mpsc::Receiver<Request>) {
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
            tail: Bytes::copy_from_slice(&self.tail),
            tail_at: self.tail_at,
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
        self.tail.clear();
        self.tail_at = self.end;
        for request in group {
            for payload in &request.payloads {
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
        }
        self.flush_buffer()?;
        self.last_timestamp_ms = timestamp_ms;
        // Keep a buffer for the next group, but not one sized for the largest group ever.
        self.buffer.shrink_to(APPEND_BATCH_BYTES_MAX);
        self.tail.shrink_to(APPEND_BATCH_BYTES_MAX);
        Ok(())
    }

    fn flush_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.segment.write_all(&self.buffer)?;
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
    /// `timestamp_ms` is the current group's timestamp: no frame of the closed segment is later.
    fn roll(&mut self, timestamp_ms: u64) -> io::Result<()> {
        self.sync()?;
        let base = self.end;
        self.segment = create_segment(&self.shared.dir, base)?;
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
