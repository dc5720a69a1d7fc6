//! Recovery on open: every segment is scanned and every frame checked; a torn tail of the last
//! segment is truncated, any other damage is refused (see the module documentation of `file`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::SegmentMeta;
use super::frame::FrameHeader;
use super::segments::{create_segment, io_error, segment_base, segment_path, sync_dir};
use super::settings::{FRAME_BYTES_MAX, FRAME_HEADER_BYTES, SCAN_BUFFER_BYTES};
use crate::{LogError, RECORD_BYTES_MAX};

/// What the scan on open found.
pub(super) struct Recovered {
    /// Every segment, oldest first; the first may start past 0 (the log was trimmed).
    pub(super) segments: Vec<SegmentMeta>,
    pub(super) end: u64,
    pub(super) last_frame: Option<u64>,
    pub(super) last_timestamp_ms: u64,
}

/// Checks every segment of `dir`, truncates a torn tail, and returns where the log stands.
///
/// `trimmed` is the trim marker: a log may start past 0 only as far as trimming explains (every
/// deleted segment held frames at or before the marker).
pub(super) fn recover(dir: &Path, trimmed: Option<u64>) -> Result<Recovered, LogError> {
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
            segments: vec![SegmentMeta::new(0)],
            end: 0,
            last_frame: None,
            last_timestamp_ms: 0,
        });
    }

    // Trimming deletes whole segments from the oldest on, so the log starts at its first segment,
    // which ends the last deleted one: at most one frame past the marker.
    let start = bases[0];
    let explained = start == 0
        || trimmed.is_some_and(|marker| start <= marker.saturating_add(FRAME_BYTES_MAX as u64));
    if !explained {
        return Err(LogError::Corrupt(format!(
            "the log in {} starts at position {start}, but no trim explains the missing segments \
             before it (trim marker: {trimmed:?}): a segment is missing",
            dir.display()
        )));
    }
    let mut recovered = Recovered {
        segments: Vec::with_capacity(bases.len()),
        end: bases[0],
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
        recovered.segments.push(SegmentMeta {
            base,
            last_frame: scan.last_frame,
            last_timestamp_ms: scan.last_timestamp_ms,
        });
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
