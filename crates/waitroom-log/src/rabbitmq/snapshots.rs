//! Snapshots, the room registry, trimming and forgetting: see "Snapshots" and "Trimming" in the
//! module documentation of `rabbitmq`.
//!
//! A snapshot message's publishing id is `position << 24 | attempt << 16 | index`: the position
//! (below [`SNAPSHOT_POSITION_LIMIT`]) orders snapshots, the attempt's low byte (random) orders two
//! attempts at one position, and the index orders the pieces (`0..pieces`) before the manifest
//! ([`MANIFEST_INDEX`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::RabbitMqLog;
use super::appending::{check_room, publish_all};
use super::message::{self, Body, Manifest};
use super::protocol::{Connection, OffsetSpec};
use super::settings::*;
use crate::{Checkpoint, LogError, Position, ShardId, Snapshot, SnapshotInfo, check_snapshot};

/// The publisher name of every snapshot store (deduplication keeps the stream's ids increasing).
pub(super) const SNAPSHOT_REFERENCE: &str = "waitroom-snapshots";
/// The publisher name of every trim (its last publishing id is the trim marker plus one).
pub(super) const TRIM_REFERENCE: &str = "waitroom-trims";
/// The piece index of a manifest: after every piece of its attempt.
const MANIFEST_INDEX: u64 = 0xFFFF;
/// Chunks reading a snapshot steps back over, from the end of its stream, to find the newest
/// manifest: pieces of attempts without one (being written or abandoned) stand in between.
const SNAPSHOT_STEPS_BACK_MAX: usize = 4096;
/// Reads of the registry and snapshot streams at once when listing.
const LIST_CONCURRENCY: usize = 8;

const _: () = assert!((SNAPSHOT_PIECES_MAX as u64) < MANIFEST_INDEX);

fn publishing_id(position: u64, attempt: u64, index: u64) -> u64 {
    position << 24 | (attempt & 0xFF) << 16 | index
}

fn unavailable(message: impl Into<String>) -> LogError {
    LogError::Unavailable(message.into())
}

/// The newest manifest in a room's snapshot stream and its offset, if any (see the module
/// documentation of `rabbitmq`).
async fn newest_manifest(
    conn: &Connection,
    stream: &str,
) -> Result<Option<(u64, Manifest)>, LogError> {
    // A stream the deduplicating publisher never wrote to holds no snapshot (and may be empty,
    // which `last` would never answer).
    match conn
        .query_publisher_sequence(SNAPSHOT_REFERENCE, stream)
        .await?
    {
        None | Some(0) => return Ok(None),
        Some(_) => {}
    }
    let Some(mut chunk) = conn.read_one(stream, OffsetSpec::Last).await? else {
        return Ok(None);
    };
    for _ in 0..=SNAPSHOT_STEPS_BACK_MAX {
        let mut before = chunk.first_offset.checked_sub(1);
        for (index, stored) in chunk.messages.iter().enumerate().rev() {
            let offset = chunk.first_offset + index as u64;
            match message::decode(stored) {
                Ok(Body::Manifest(manifest)) => return Ok(Some((offset, manifest))),
                Ok(Body::Piece { index, .. }) => {
                    // Jump before this attempt's first piece.
                    before = offset.checked_sub(u64::from(index) + 1).min(before);
                }
                _ => {}
            }
        }
        let Some(before) = before else {
            return Ok(None);
        };
        let Some(previous) = conn.read_one(stream, OffsetSpec::Offset(before)).await? else {
            return Ok(None);
        };
        if previous.first_offset >= chunk.first_offset {
            return Ok(None);
        }
        chunk = previous;
    }
    Err(unavailable(format!(
        "no manifest in the last SNAPSHOT_STEPS_BACK_MAX ({SNAPSHOT_STEPS_BACK_MAX}) chunks of \
         {stream}"
    )))
}

/// The pieces of `manifest` (at `offset` in `stream`), joined and checked.
async fn read_pieces(
    conn: &Connection,
    stream: &str,
    offset: u64,
    manifest: &Manifest,
) -> Result<Bytes, LogError> {
    let pieces = manifest.pieces as usize;
    let mut found: Vec<Option<Bytes>> = vec![None; pieces];
    // Pieces are the records just before the manifest; offsets may also hold the broker's
    // deduplication data, hence the slack, widened until piece 0 is found.
    let mut window = manifest.pieces as u64 + 16;
    loop {
        let start = offset.saturating_sub(window);
        conn.read_while(stream, OffsetSpec::Offset(start), |chunk| {
            for (index, stored) in chunk.messages.iter().enumerate() {
                let at = chunk.first_offset + index as u64;
                if at >= offset {
                    return Ok(false);
                }
                if let Ok(Body::Piece {
                    attempt,
                    index,
                    data,
                }) = message::decode(stored)
                    && attempt == manifest.attempt
                    && usize::from(index) < pieces
                {
                    found[usize::from(index)] = Some(data);
                }
            }
            Ok(chunk.last_offset() + 1 < offset)
        })
        .await?;
        if found.iter().all(Option::is_some) {
            break;
        }
        if start == 0 {
            return Err(LogError::Corrupt(format!(
                "the snapshot at offset {offset} of {stream} misses pieces (removed by \
                 retention?)"
            )));
        }
        window = window.saturating_mul(4);
    }
    let mut bytes = BytesMut::with_capacity(manifest.bytes as usize);
    for piece in found.into_iter().flatten() {
        bytes.extend_from_slice(&piece);
    }
    if bytes.len() as u64 != manifest.bytes || crc32c::crc32c(&bytes) != manifest.crc32c {
        return Err(LogError::Corrupt(format!(
            "the snapshot at offset {offset} of {stream} does not match its manifest (size or \
             CRC)"
        )));
    }
    Ok(bytes.freeze())
}

impl RabbitMqLog {
    fn check_shard(&self, shard: &ShardId) -> Result<(), LogError> {
        if *shard == self.shared.shard {
            Ok(())
        } else {
            Err(LogError::Rejected(format!(
                "this RabbitMQ log has one shard, {}, not {shard}",
                self.shared.shard
            )))
        }
    }

    fn info_of(&self, room: &str, manifest: &Manifest) -> SnapshotInfo {
        SnapshotInfo {
            room: room.into(),
            shard: self.shared.shard.clone(),
            position: Position(u128::from(manifest.position)),
            bytes: manifest.bytes,
        }
    }

    /// Creates `room`'s snapshot stream if missing, and registers the room unless this log did.
    async fn prepare_room(&self, conn: &Connection, room: &str) -> Result<String, LogError> {
        let stream = self.shared.names.snapshots(room);
        let room: Arc<str> = room.into();
        if self.registered().contains(&room) {
            return Ok(stream);
        }
        conn.create_stream(
            &stream,
            &[
                ("max-length-bytes", SNAPSHOT_STREAM_BYTES.to_string()),
                (
                    "stream-max-segment-size-bytes",
                    SNAPSHOT_SEGMENT_BYTES.to_string(),
                ),
            ],
        )
        .await?;
        let event = message::room_event(true, &room);
        publish_all(conn, &self.shared.names.rooms, None, &[(0, &[&event])]).await?;
        self.registered().insert(room);
        Ok(stream)
    }

    /// Publishes a snapshot (pieces, then the manifest) to `room`'s snapshot stream; once more
    /// if the stream was deleted since this log registered the room (forgotten by another node,
    /// and created again here).
    async fn publish_snapshot(
        &self,
        conn: &Connection,
        room: &str,
        manifest: &Manifest,
        bytes: &Bytes,
    ) -> Result<(), LogError> {
        let headers: Vec<[u8; message::PIECE_HEADER_BYTES]> = (0..manifest.pieces)
            .map(|index| message::piece_header(manifest.attempt, index as u16))
            .collect();
        let pieces: Vec<&[u8]> = bytes.chunks(SNAPSHOT_PIECE_BYTES).collect();
        let manifest_bytes = message::manifest(manifest);
        let piece_parts: Vec<[&[u8]; 2]> = headers
            .iter()
            .zip(&pieces)
            .map(|(header, piece)| [&header[..], *piece])
            .collect();
        let mut envelopes: Vec<(u64, &[&[u8]])> = piece_parts
            .iter()
            .enumerate()
            .map(|(index, parts)| {
                (
                    publishing_id(manifest.position, manifest.attempt, index as u64),
                    &parts[..],
                )
            })
            .collect();
        let manifest_parts: [&[u8]; 1] = [&manifest_bytes];
        envelopes.push((
            publishing_id(manifest.position, manifest.attempt, MANIFEST_INDEX),
            &manifest_parts,
        ));
        for _ in 0..2 {
            let stream = self.prepare_room(conn, room).await?;
            if publish_all(conn, &stream, Some(SNAPSHOT_REFERENCE), &envelopes).await? {
                return Ok(());
            }
            self.registered().remove(room);
        }
        Err(unavailable(format!(
            "the snapshot stream of room {room} disappeared while storing"
        )))
    }

    pub(super) async fn store(&self, snapshot: Snapshot) -> Result<bool, LogError> {
        check_snapshot(&snapshot)?;
        check_room(&snapshot.room)?;
        self.check_shard(&snapshot.shard)?;
        if snapshot.bytes.len() > SNAPSHOT_BYTES_MAX {
            return Err(LogError::Rejected(format!(
                "snapshot of room {} has {} bytes, more than the RabbitMQ backend keeps \
                 (SNAPSHOT_BYTES_MAX, {SNAPSHOT_BYTES_MAX})",
                snapshot.room,
                snapshot.bytes.len()
            )));
        }
        let position = u64::try_from(snapshot.position.0)
            .ok()
            .filter(|position| *position < SNAPSHOT_POSITION_LIMIT)
            .ok_or_else(|| {
                LogError::Rejected(format!(
                    "snapshot position {} is not below SNAPSHOT_POSITION_LIMIT",
                    snapshot.position.0
                ))
            })?;
        let conn = self.store_connection().await?;
        let stream = self.prepare_room(&conn, &snapshot.room).await?;
        if let Some((_, held)) = newest_manifest(&conn, &stream).await?
            && held.position >= position
        {
            return Ok(false);
        }
        let attempt = super::random_u64();
        let manifest = Manifest {
            attempt,
            position,
            pieces: snapshot.bytes.len().div_ceil(SNAPSHOT_PIECE_BYTES) as u32,
            bytes: snapshot.bytes.len() as u64,
            crc32c: crc32c::crc32c(&snapshot.bytes),
        };
        self.publish_snapshot(&conn, &snapshot.room, &manifest, &snapshot.bytes)
            .await?;
        match newest_manifest(&conn, &stream).await? {
            Some((_, held)) if held.attempt == attempt => Ok(true),
            Some((_, held)) if held.position >= position => Ok(false),
            _ => Err(unavailable(format!(
                "the snapshot of room {} at {position} was not kept: a store of a newer \
                 position is under way or was abandoned (it is tried again later)",
                snapshot.room
            ))),
        }
    }

    pub(super) async fn load(&self, room: &str) -> Result<Option<Snapshot>, LogError> {
        if check_room(room).is_err() {
            return Ok(None);
        }
        let conn = self.store_connection().await?;
        let stream = self.shared.names.snapshots(room);
        let Some((offset, manifest)) = newest_manifest(&conn, &stream).await? else {
            return Ok(None);
        };
        let bytes = if manifest.pieces == 0 {
            self.tombstones().insert(room.into(), manifest.position);
            Bytes::new()
        } else {
            read_pieces(&conn, &stream, offset, &manifest).await?
        };
        Ok(Some(Snapshot {
            room: room.into(),
            shard: self.shared.shard.clone(),
            position: Position(u128::from(manifest.position)),
            bytes,
        }))
    }

    pub(super) async fn info(&self, room: &str) -> Result<Option<SnapshotInfo>, LogError> {
        if check_room(room).is_err() {
            return Ok(None);
        }
        let conn = self.store_connection().await?;
        let stream = self.shared.names.snapshots(room);
        Ok(newest_manifest(&conn, &stream)
            .await?
            .map(|(_, manifest)| self.info_of(room, &manifest)))
    }

    /// The rooms the registry names (events applied in order).
    async fn registry(&self, conn: &Connection) -> Result<BTreeSet<String>, LogError> {
        let names = &self.shared.names;
        let end = conn
            .read_one(&names.rooms, OffsetSpec::Last)
            .await?
            .ok_or_else(|| unavailable(format!("the registry stream {} is gone", names.rooms)))?
            .last_offset();
        let mut rooms = BTreeSet::new();
        let mut overflow = false;
        conn.read_while(&names.rooms, OffsetSpec::First, |chunk| {
            for stored in &chunk.messages {
                match message::decode(stored) {
                    Ok(Body::RoomAdded(room)) => {
                        overflow |= rooms.len() >= ROOMS_MAX;
                        rooms.insert(room);
                    }
                    Ok(Body::RoomRemoved(room)) => {
                        rooms.remove(&room);
                    }
                    Ok(Body::Marker) => {}
                    _ => {
                        return Err(LogError::Corrupt(format!(
                            "the registry stream {} holds something waitroom did not write",
                            names.rooms
                        )));
                    }
                }
            }
            Ok(chunk.last_offset() < end)
        })
        .await?;
        if overflow && rooms.len() > ROOMS_MAX {
            return Err(LogError::Rejected(format!(
                "the registry names more than ROOMS_MAX ({ROOMS_MAX}) rooms"
            )));
        }
        Ok(rooms)
    }

    pub(super) async fn list(&self) -> Result<Vec<SnapshotInfo>, LogError> {
        let conn = self.store_connection().await?;
        let rooms = self.registry(&conn).await?;
        let conn = &conn;
        let mut reads = futures::stream::iter(rooms)
            .map(|room| async move {
                let stream = self.shared.names.snapshots(&room);
                let newest = newest_manifest(conn, &stream).await?;
                Ok::<_, LogError>(newest.map(|(_, manifest)| (room, manifest)))
            })
            .buffer_unordered(LIST_CONCURRENCY);
        let mut infos = Vec::new();
        while let Some(read) = reads.next().await {
            if let Some((room, manifest)) = read? {
                if manifest.pieces == 0 {
                    self.tombstones()
                        .insert(room.as_str().into(), manifest.position);
                }
                infos.push(self.info_of(&room, &manifest));
            }
        }
        Ok(infos)
    }

    /// Stores a tombstone at `last` unless a newer snapshot is held (see the module docs).
    pub(super) async fn forget(&self, room: &str, last: Position) -> Result<bool, LogError> {
        check_room(room)?;
        let position = u64::try_from(last.0)
            .ok()
            .filter(|position| *position < SNAPSHOT_POSITION_LIMIT)
            .ok_or_else(|| LogError::Rejected(format!("position {} is not an offset", last.0)))?;
        let conn = self.store_connection().await?;
        let stream = self.prepare_room(&conn, room).await?;
        if let Some((_, held)) = newest_manifest(&conn, &stream).await?
            && (held.position > position || (held.position == position && held.pieces == 0))
        {
            return Ok(true);
        }
        let attempt = super::random_u64();
        let tombstone = Manifest {
            attempt,
            position,
            pieces: 0,
            bytes: 0,
            crc32c: crc32c::crc32c(&[]),
        };
        self.publish_snapshot(&conn, room, &tombstone, &Bytes::new())
            .await?;
        self.tombstones().insert(room.into(), position);
        Ok(true)
    }

    pub(super) async fn trim_log(
        &self,
        shard: &ShardId,
        through: Position,
    ) -> Result<(), LogError> {
        self.check_shard(shard)?;
        let through = u64::try_from(through.0)
            .ok()
            .filter(|through| *through < u64::MAX)
            .ok_or_else(|| {
                LogError::Rejected(format!("position {} is not an offset", through.0))
            })?;
        let conn = self.store_connection().await?;
        let names = &self.shared.names;
        let trim = message::trim(through);
        if !publish_all(
            &conn,
            &names.trims,
            Some(TRIM_REFERENCE),
            &[(through + 1, &[&trim])],
        )
        .await?
        {
            return Err(unavailable(format!(
                "the trim-marker stream {} does not exist",
                names.trims
            )));
        }
        // Tombstones at or before the marker go, with their room's snapshot stream.
        let due: Vec<(Arc<str>, u64)> = self
            .tombstones()
            .iter()
            .filter(|(_, position)| **position <= through)
            .map(|(room, position)| (Arc::clone(room), *position))
            .collect();
        for (room, _) in due {
            let stream = names.snapshots(&room);
            let still = matches!(
                newest_manifest(&conn, &stream).await?,
                Some((_, held)) if held.pieces == 0 && held.position <= through
            );
            if still {
                conn.delete_stream(&stream).await?;
                let event = message::room_event(false, &room);
                publish_all(&conn, &names.rooms, None, &[(0, &[&event])]).await?;
                self.registered().remove(&room);
            }
            self.tombstones().remove(&room);
        }
        Ok(())
    }

    pub(super) async fn trim_marker(&self) -> Result<Checkpoint, LogError> {
        let conn = self.store_connection().await?;
        let mut trimmed = Checkpoint::start();
        let sequence = conn
            .query_publisher_sequence(TRIM_REFERENCE, &self.shared.names.trims)
            .await?;
        if let Some(marker) = sequence.and_then(|sequence| sequence.checked_sub(1)) {
            trimmed.advance(&self.shared.shard, Position(u128::from(marker)));
        }
        Ok(trimmed)
    }
}
