//! What this log writes in a stream message: an AMQP 1.0 message with one `data` section (so
//! RabbitMQ's tools and other protocols read it as a binary message), whose bytes are an envelope:
//! a kind byte, then the kind's fields (integers big-endian):
//!
//! | kind | fields | where |
//! | --- | --- | --- |
//! | 1 record | room length `u8`, room, the record's payload | the log stream |
//! | 2 marker | anything (16 random bytes) | the log and registry streams: written when a log opens, so a stream is never empty (see "head" in the module docs) |
//! | 3 piece | attempt `u64`, index `u16`, bytes | a room's snapshot stream |
//! | 4 manifest | attempt `u64`, position `u64`, pieces `u32`, bytes `u64`, CRC32C `u32` | a room's snapshot stream; no pieces and no bytes: a tombstone |
//! | 5 room added, 6 room removed | room length `u8`, room | the registry stream |
//! | 7 trim | position `u64` | the trim-marker stream |

use bytes::{BufMut, Bytes, BytesMut};

/// The AMQP 1.0 `data` section descriptor (`0x00 smallulong 0x75`) and the `vbin32` type code.
const DATA_SECTION_VBIN32: [u8; 4] = [0x00, 0x53, 0x75, 0xb0];
/// The same with `vbin8` (one-byte length), which other writers may use for short bodies.
const DATA_SECTION_VBIN8: [u8; 4] = [0x00, 0x53, 0x75, 0xa0];

/// Bytes an AMQP message adds around an envelope.
pub(super) const AMQP_OVERHEAD_BYTES: usize = 8;

pub(super) const KIND_RECORD: u8 = 1;
pub(super) const KIND_MARKER: u8 = 2;
pub(super) const KIND_PIECE: u8 = 3;
pub(super) const KIND_MANIFEST: u8 = 4;
pub(super) const KIND_ROOM_ADDED: u8 = 5;
pub(super) const KIND_ROOM_REMOVED: u8 = 6;
pub(super) const KIND_TRIM: u8 = 7;

/// Bytes of a piece's envelope before its data.
pub(super) const PIECE_HEADER_BYTES: usize = 1 + 8 + 2;

/// A snapshot's manifest: written after its pieces (see `snapshots`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Manifest {
    pub(super) attempt: u64,
    pub(super) position: u64,
    pub(super) pieces: u32,
    pub(super) bytes: u64,
    pub(super) crc32c: u32,
}

/// A decoded envelope. Byte fields share the chunk's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Body {
    Record {
        room: Bytes,
        payload: Bytes,
    },
    Marker,
    Piece {
        attempt: u64,
        index: u16,
        data: Bytes,
    },
    Manifest(Manifest),
    RoomAdded(String),
    RoomRemoved(String),
    Trim(u64),
}

/// Why a message is not one of this log's.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Foreign(pub(super) &'static str);

/// Appends one message, `[length u32][AMQP data section of the envelope parts]`, as a publish
/// frame carries it.
pub(super) fn put_message(buf: &mut BytesMut, parts: &[&[u8]]) {
    let envelope: usize = parts.iter().map(|part| part.len()).sum();
    buf.put_u32((AMQP_OVERHEAD_BYTES + envelope) as u32);
    buf.put_slice(&DATA_SECTION_VBIN32);
    buf.put_u32(envelope as u32);
    for part in parts {
        buf.put_slice(part);
    }
}

/// The bytes `put_message` writes for `envelope_bytes` of envelope (with its length prefix).
pub(super) const fn message_bytes(envelope_bytes: usize) -> usize {
    4 + AMQP_OVERHEAD_BYTES + envelope_bytes
}

pub(super) fn record_header(room: &str) -> [u8; 2] {
    [KIND_RECORD, room.len() as u8]
}

pub(super) fn piece_header(attempt: u64, index: u16) -> [u8; PIECE_HEADER_BYTES] {
    let mut header = [0; PIECE_HEADER_BYTES];
    header[0] = KIND_PIECE;
    header[1..9].copy_from_slice(&attempt.to_be_bytes());
    header[9..11].copy_from_slice(&index.to_be_bytes());
    header
}

pub(super) fn manifest(manifest: &Manifest) -> Vec<u8> {
    let mut out = Vec::with_capacity(33);
    out.push(KIND_MANIFEST);
    out.extend_from_slice(&manifest.attempt.to_be_bytes());
    out.extend_from_slice(&manifest.position.to_be_bytes());
    out.extend_from_slice(&manifest.pieces.to_be_bytes());
    out.extend_from_slice(&manifest.bytes.to_be_bytes());
    out.extend_from_slice(&manifest.crc32c.to_be_bytes());
    out
}

pub(super) fn marker(random: u128) -> Vec<u8> {
    let mut out = vec![KIND_MARKER];
    out.extend_from_slice(&random.to_be_bytes());
    out
}

pub(super) fn room_event(added: bool, room: &str) -> Vec<u8> {
    let mut out = vec![
        if added {
            KIND_ROOM_ADDED
        } else {
            KIND_ROOM_REMOVED
        },
        room.len() as u8,
    ];
    out.extend_from_slice(room.as_bytes());
    out
}

pub(super) fn trim(through: u64) -> Vec<u8> {
    let mut out = vec![KIND_TRIM];
    out.extend_from_slice(&through.to_be_bytes());
    out
}

/// The envelope inside an AMQP message as stored in a chunk.
pub(super) fn envelope(message: &Bytes) -> Result<Bytes, Foreign> {
    let header = message
        .get(..4)
        .ok_or(Foreign("a message shorter than its header"))?;
    let (length, start) = if header == DATA_SECTION_VBIN32 {
        let length = message
            .get(4..8)
            .ok_or(Foreign("a data section without its length"))?;
        (
            u32::from_be_bytes(length.try_into().unwrap_or([0; 4])) as usize,
            8,
        )
    } else if header == DATA_SECTION_VBIN8 {
        let length = *message
            .get(4)
            .ok_or(Foreign("a data section without its length"))?;
        (usize::from(length), 5)
    } else {
        return Err(Foreign("a message that is not one AMQP data section"));
    };
    if message.len() != start + length {
        return Err(Foreign("a message with more than one data section"));
    }
    Ok(message.slice(start..))
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64, Foreign> {
    bytes
        .get(at..at + 8)
        .and_then(|slice| slice.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(Foreign("an envelope cut short"))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, Foreign> {
    bytes
        .get(at..at + 4)
        .and_then(|slice| slice.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or(Foreign("an envelope cut short"))
}

fn room_at(envelope: &Bytes) -> Result<(Bytes, usize), Foreign> {
    let length = usize::from(*envelope.get(1).ok_or(Foreign("an envelope cut short"))?);
    let room = envelope
        .get(2..2 + length)
        .ok_or(Foreign("an envelope cut short"))?;
    if room.is_empty() || std::str::from_utf8(room).is_err() {
        return Err(Foreign("a room name that is empty or not UTF-8"));
    }
    Ok((envelope.slice(2..2 + length), 2 + length))
}

/// Decodes one stored message.
pub(super) fn decode(message: &Bytes) -> Result<Body, Foreign> {
    let envelope = envelope(message)?;
    let kind = *envelope.first().ok_or(Foreign("an empty envelope"))?;
    match kind {
        KIND_RECORD => {
            let (room, end) = room_at(&envelope)?;
            Ok(Body::Record {
                room,
                payload: envelope.slice(end..),
            })
        }
        KIND_MARKER => Ok(Body::Marker),
        KIND_PIECE => {
            let attempt = u64_at(&envelope, 1)?;
            let index = envelope
                .get(9..11)
                .and_then(|slice| slice.try_into().ok())
                .map(u16::from_be_bytes)
                .ok_or(Foreign("an envelope cut short"))?;
            Ok(Body::Piece {
                attempt,
                index,
                data: envelope.slice(PIECE_HEADER_BYTES..),
            })
        }
        KIND_MANIFEST => {
            if envelope.len() != 33 {
                return Err(Foreign("a manifest of the wrong size"));
            }
            Ok(Body::Manifest(Manifest {
                attempt: u64_at(&envelope, 1)?,
                position: u64_at(&envelope, 9)?,
                pieces: u32_at(&envelope, 17)?,
                bytes: u64_at(&envelope, 21)?,
                crc32c: u32_at(&envelope, 29)?,
            }))
        }
        KIND_ROOM_ADDED | KIND_ROOM_REMOVED => {
            let (room, end) = room_at(&envelope)?;
            if end != envelope.len() {
                return Err(Foreign("a registry event with trailing bytes"));
            }
            let room = String::from_utf8_lossy(&room).into_owned();
            Ok(if kind == KIND_ROOM_ADDED {
                Body::RoomAdded(room)
            } else {
                Body::RoomRemoved(room)
            })
        }
        KIND_TRIM => Ok(Body::Trim(u64_at(&envelope, 1)?)),
        _ => Err(Foreign("an envelope of an unknown kind")),
    }
}
