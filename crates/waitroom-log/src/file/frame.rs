//! The frame of one record on disk: `payload length: u32 LE | CRC32C: u32 LE | timestamp_ms: u64
//! LE | payload`, the CRC covering the timestamp and the payload.

use bytes::Bytes;

use super::settings::FRAME_HEADER_BYTES;
use crate::{LogError, RECORD_BYTES_MAX};

/// One frame parsed from a buffer.
pub(super) struct Frame {
    pub(super) bytes: usize,
    pub(super) timestamp_ms: u64,
    pub(super) payload: Bytes,
}

/// Parses the frame at the start of `buffer[..available]` (which starts at log position
/// `position`). `None` when the frame is not all there yet.
pub(super) fn parse_frame(
    buffer: &Bytes,
    available: usize,
    position: u64,
) -> Result<Option<Frame>, LogError> {
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

pub(super) struct FrameHeader {
    pub(super) payload_bytes: usize,
    pub(super) crc: u32,
    pub(super) timestamp_ms: u64,
}

impl FrameHeader {
    /// Decodes the first [`FRAME_HEADER_BYTES`] of `bytes` (which must hold that many).
    pub(super) fn decode(bytes: &[u8]) -> Self {
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
pub(super) fn encode_frame(buffer: &mut Vec<u8>, timestamp_ms: u64, payload: &[u8]) {
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
