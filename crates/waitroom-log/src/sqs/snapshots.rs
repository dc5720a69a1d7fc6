//! Snapshots, tombstones and trimming, in S3. See "Snapshots and trimming" in the module
//! documentation.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::Shared;
use super::clients::wall_clock_ms;
use super::history::Listed;
use super::settings::{SNAPSHOT_BYTES_MAX, check_room, position_of};
use crate::{Checkpoint, LogError, Position, ShardId, Snapshot, SnapshotInfo, check_snapshot};

fn sequence(position: Position) -> Result<u64, LogError> {
    u64::try_from(position.0)
        .map_err(|_| LogError::Rejected(format!("position {} is no sequence number", position.0)))
}

/// The newest of `dir`'s keys (they are written newest first): its position and listing.
async fn newest(shared: &Shared, dir: &str) -> Result<Option<(u64, Listed)>, LogError> {
    let listed = shared.store.list(dir, Some(1), |_| true).await?;
    Ok(listed.into_iter().next().and_then(|item| {
        let position = position_of(item.key.rsplit('/').next()?)?;
        Some((position, item))
    }))
}

/// Stores `snapshot` unless one at the same or a later position is held.
pub(crate) async fn store(shared: &Shared, snapshot: Snapshot) -> Result<bool, LogError> {
    check_snapshot(&snapshot)?;
    if snapshot.bytes.len() > SNAPSHOT_BYTES_MAX {
        return Err(LogError::Rejected(format!(
            "snapshot of room {} has {} bytes, more than the SQS log's SNAPSHOT_BYTES_MAX \
             ({SNAPSHOT_BYTES_MAX}, S3's limit on one object)",
            snapshot.room,
            snapshot.bytes.len()
        )));
    }
    check_room(&snapshot.room)?;
    if snapshot.shard != shared.room_shard(&snapshot.room) {
        return Err(LogError::Rejected(format!(
            "a snapshot of room {} names shard {}, not the room's",
            snapshot.room, snapshot.shard
        )));
    }
    let position = sequence(snapshot.position)?;
    let names = &shared.store.names;
    let dir = names.snapshot_dir(&snapshot.room);
    if let Some((held, _)) = newest(shared, &dir).await?
        && held >= position
    {
        return Ok(false);
    }
    let key = names.snapshot_key(&snapshot.room, position);
    if !shared.store.put(&key, snapshot.bytes, true).await? {
        return Ok(false);
    }
    // The older ones are no longer needed (keys after this one list older positions).
    let older: Vec<String> = shared
        .store
        .list(&dir, None, |_| false)
        .await?
        .into_iter()
        .filter(|item| item.key > key)
        .map(|item| item.key)
        .collect();
    if !older.is_empty() {
        shared.store.delete(older).await?;
    }
    Ok(true)
}

/// Leaves a tombstone of `room` at `last` (a snapshot without bytes), unless a newer snapshot is
/// held: its group holds other rooms too, so its history stays until trimmed past it.
pub(crate) async fn forget(shared: &Shared, room: &str, last: Position) -> Result<bool, LogError> {
    check_room(room)?;
    let tombstone = Snapshot {
        room: room.into(),
        shard: shared.room_shard(room),
        position: last,
        bytes: Bytes::new(),
    };
    // `false` from the store means it holds one at `last` or later: that one stays.
    store(shared, tombstone).await?;
    Ok(true)
}

/// The newest snapshot of `room`.
pub(crate) async fn load(shared: &Shared, room: &str) -> Result<Option<Snapshot>, LogError> {
    check_room(room)?;
    let dir = shared.store.names.snapshot_dir(room);
    // A newer snapshot may replace the listed one between listing and reading: list again.
    for _ in 0..3 {
        let Some((position, item)) = newest(shared, &dir).await? else {
            return Ok(None);
        };
        if let Some(bytes) = shared.store.get(&item.key).await? {
            return Ok(Some(Snapshot {
                room: room.into(),
                shard: shared.room_shard(room),
                position: Position(u128::from(position)),
                bytes,
            }));
        }
    }
    Err(LogError::Unavailable(format!(
        "the snapshot of room {room} kept changing while being read"
    )))
}

/// What is held of `room`'s snapshot, without reading it.
pub(crate) async fn info(shared: &Shared, room: &str) -> Result<Option<SnapshotInfo>, LogError> {
    check_room(room)?;
    let dir = shared.store.names.snapshot_dir(room);
    Ok(newest(shared, &dir)
        .await?
        .map(|(position, item)| SnapshotInfo {
            room: room.into(),
            shard: shared.room_shard(room),
            position: Position(u128::from(position)),
            bytes: item.size,
        }))
}

/// The newest snapshot of every room, with its listing.
async fn newest_of_every_room(
    shared: &Shared,
) -> Result<BTreeMap<String, (SnapshotInfo, Listed)>, LogError> {
    let root = shared.store.names.snapshots_root();
    let mut newest: BTreeMap<String, (SnapshotInfo, Listed)> = BTreeMap::new();
    for item in shared.store.list(&root, None, |_| false).await? {
        let Some((room, part)) = item
            .key
            .strip_prefix(&root)
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        let Some(position) = position_of(part) else {
            continue;
        };
        // Keys list newest first within a room: the first one seen is the newest.
        if !newest.contains_key(room) {
            let info = SnapshotInfo {
                room: room.into(),
                shard: shared.room_shard(room),
                position: Position(u128::from(position)),
                bytes: item.size,
            };
            newest.insert(room.to_owned(), (info, item.clone()));
        }
    }
    Ok(newest)
}

/// The newest snapshot of every room (tombstones included).
pub(crate) async fn list(shared: &Shared) -> Result<Vec<SnapshotInfo>, LogError> {
    Ok(newest_of_every_room(shared)
        .await?
        .into_values()
        .map(|(info, _)| info)
        .collect())
}

/// Writes the trim marker and deletes the history it allows, and the tombstones at or before it
/// (see the module documentation).
pub(crate) async fn trim(
    shared: &Shared,
    shard: &ShardId,
    through: Position,
) -> Result<(), LogError> {
    let store = &shared.store;
    let names = &store.names;
    let group = names
        .group_of_shard(&shard.0)
        .filter(|group| *group < shared.settings.groups)
        .ok_or_else(|| LogError::Rejected(format!("{shard} is no shard of this SQS log")))?;
    let through = sequence(through)?;
    // `false`: a marker at this position is there already.
    store
        .put(&names.trim_key(group, through), Bytes::new(), true)
        .await?;
    let markers = store.list(&names.trim_dir(group), None, |_| false).await?;
    let Some(marker) = markers
        .first()
        .and_then(|item| position_of(item.key.rsplit('/').next()?))
    else {
        return Ok(());
    };
    let mut doomed: Vec<String> = markers.into_iter().skip(1).map(|item| item.key).collect();
    let history = store
        .list(&names.history_dir(group), None, |_| false)
        .await?;
    let keep_after_ms = wall_clock_ms().saturating_sub(shared.settings.keep_history_ms);
    // Newest first: an object ends right before the one listed before it starts. The newest
    // stays, always: it carries the group's sequence on.
    for pair in history.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        let Some(newer_first) = store.first_of(&newer.key) else {
            continue;
        };
        let kept_for_audit =
            shared.settings.keep_history_ms > 0 && older.modified_ms > keep_after_ms;
        if newer_first - 1 <= marker && !kept_for_audit {
            doomed.push(older.key.clone());
        }
    }
    for (info, listed) in newest_of_every_room(shared).await?.into_values() {
        if info.bytes == 0 && info.shard == *shard && info.position.0 <= u128::from(marker) {
            doomed.push(listed.key);
        }
    }
    if !doomed.is_empty() {
        store.delete(doomed).await?;
    }
    Ok(())
}

/// Every group's newest trim marker.
pub(crate) async fn trimmed(shared: &Shared) -> Result<Checkpoint, LogError> {
    let names = &shared.store.names;
    let root = names.trim_root();
    let mut trimmed = Checkpoint::start();
    for item in shared.store.list(&root, None, |_| false).await? {
        let Some((group, part)) = item
            .key
            .strip_prefix(&root)
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        let group = group.strip_prefix('g').and_then(|n| n.parse::<u32>().ok());
        if let (Some(group), Some(through)) = (group, position_of(part)) {
            trimmed.advance(
                &ShardId::new(names.shard(group)),
                Position(u128::from(through)),
            );
        }
    }
    Ok(trimmed)
}
