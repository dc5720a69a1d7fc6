//! Room snapshots on the node's side: when one is due, taking it without stalling the applier,
//! storing it, trimming what it makes unneeded, and restoring rooms from them.
//!
//! # When
//! A room's snapshot is due once, since its last one, `snapshot_every_records` of its records
//! or `snapshot_every_bytes` of them were applied, or `snapshot_every_ms` went by after the
//! first one (a periodic scan catches rooms that went quiet). A node catching up with a backlog
//! takes none until it has caught up, then one of each room that became due. Every node counts the same
//! records, so with several nodes each waits a random time up to `snapshot_jitter_ms`, then
//! asks the store what it holds: if another node stored a newer snapshot meanwhile, it adopts
//! that one (as its known snapshot) and takes none.
//!
//! # Taking
//! Under the room's read lock (which holds the applier off this room, not status polls) the
//! room is copied into a spare the task keeps (`waitroom_core::SnapshotSpare`), and its position
//! read; the lock is released, and the copy is encoded on the blocking pool. The lock is held
//! for the copy only: `snapshot_pause_seconds` measures it. What would make the copy slow is
//! fresh memory (the kernel mapping new pages: a million waiting take ~50 ms to clone into fresh
//! memory, ~9 ms to copy into a prepared spare, see the core's README), so the spare is prepared
//! first, with no lock held: the room's sizes are read under a brief read lock, then the
//! spare's buffers are sized for them (with headroom for what the room applies meanwhile) and
//! their pages mapped, on the blocking pool. A room that outgrew even the headroom by the time
//! the lock is taken is not copied: the lock is released and the spare prepared again (at most
//! `SPARE_PREPARE_ATTEMPTS_MAX` times, then the copy takes fresh memory). The spare is kept from
//! one snapshot to the next (of any room); it costs about 60 bytes per session of the largest
//! room snapshotted, 8 more and the key's length per idempotency key, plus 12.5 % headroom.
//!
//! # Trimming
//! Once the store holds the snapshot, the room's shard is trimmed through the lowest position
//! any of its rooms still needs (see `RoomLog::need`): a room with records after its snapshot
//! needs what follows the snapshot; a room without a snapshot needs everything from its first
//! record; a room whose snapshot holds all its records needs nothing. Where a shard holds one
//! room (Redis) that is the new snapshot's position; where it holds many (the file log) it is
//! the oldest snapshot among the busy rooms, so quiet rooms never hold a shard back. A node's
//! knowledge of other nodes' snapshots may be old, which only trims less.
//!
//! # Restoring
//! At start every room is restored from its newest snapshot (tombstones become floors), and the
//! subscription starts at the log's trim marker. A subscription that reports `Trimmed` (this
//! node fell behind a trim) restores the shard's rooms that are behind the gap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use waitroom_core::{Room, RoomId, RoomSizes, SnapshotSpare};
use waitroom_log::fault::{self, points};
use waitroom_log::{Checkpoint, Position, ShardId, Snapshot};

use super::{Need, Node, RoomCell, RoomLog};

pub use crate::limits::SNAPSHOT_QUEUE_ROOMS_MAX;
use crate::limits::{DUE_SCAN_INTERVAL_MAX, RESTORE_CONCURRENCY, SPARE_PREPARE_ATTEMPTS_MAX};

/// Whether a node uses snapshots (`--snapshots`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Restore rooms from snapshots at start, take snapshots, trim the log.
    On,
    /// None of it: every room is replayed from its first record, which needs the whole history
    /// (a log that was trimmed stops such a node, loudly). For comparisons and audits.
    Off,
}

/// The room's snapshot is due (see the module documentation).
pub(super) fn is_due(options: &super::NodeOptions, log: &RoomLog) -> bool {
    log.records_since_snapshot > 0
        && (log.records_since_snapshot >= options.snapshot_every_records
            || log.bytes_since_snapshot >= options.snapshot_every_bytes
            || log.changed_since.is_some_and(|since| {
                since.elapsed().as_millis() as u64 >= options.snapshot_every_ms
            }))
}

/// Hands a due room (already marked queued) to the snapshot task.
pub(super) fn queue(node: &Node, cell: &RoomCell) {
    if node.snapshot_queue.try_send(cell.id.clone()).is_err() {
        cell.log.lock().snapshot_queued = false;
    }
}

pub(crate) async fn run(node: Arc<Node>, mut due: tokio::sync::mpsc::Receiver<RoomId>) {
    let mut spare: Option<SnapshotSpare> = None;
    let scan_every = Duration::from_millis(node.options.snapshot_every_ms / 4)
        .clamp(Duration::from_millis(10), DUE_SCAN_INTERVAL_MAX);
    let mut scan = tokio::time::interval(scan_every);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            room = due.recv() => match room {
                Some(room) => take(&node, &room, &mut spare).await,
                None => return,
            },
            () = node.snapshot_scan.notified() => queue_due_rooms(&node),
            _ = scan.tick() => queue_due_rooms(&node),
        }
    }
}

/// Queues every room whose snapshot is due, once the node is caught up.
fn queue_due_rooms(node: &Node) {
    if !node.progress.borrow().caught_up {
        return;
    }
    for cell in node.rooms() {
        let due = {
            let mut log = cell.log.lock();
            let due = !log.snapshot_queued && is_due(&node.options, &log);
            log.snapshot_queued |= due;
            due
        };
        if due {
            queue(node, &cell);
        }
    }
}

/// A random delay below `max_ms` (OS randomness via `rand`'s thread generator).
fn jitter(max_ms: u64) -> Duration {
    if max_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::random::<u64>() % max_ms)
}

/// Sizes `spare` for a room of `sizes` and maps its pages, on the blocking pool (tens of
/// milliseconds for a million sessions of fresh memory).
async fn prepare(
    mut spare: SnapshotSpare,
    sizes: RoomSizes,
) -> Result<SnapshotSpare, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        spare.prepare(&sizes);
        spare
    })
    .await
}

/// Takes, stores and trims one room's snapshot (see the module documentation), copying the room
/// into `spare` (kept for the next one).
async fn take(node: &Arc<Node>, room: &RoomId, spare: &mut Option<SnapshotSpare>) {
    let Some(cell) = node.room(room) else {
        return;
    };
    let done = |cell: &RoomCell| cell.log.lock().snapshot_queued = false;
    tokio::time::sleep(jitter(node.options.snapshot_jitter_ms)).await;
    match node.log.snapshot_info(room.as_str()).await {
        Ok(Some(info)) => {
            let mut log = cell.log.lock();
            let newer = log.shard.as_ref() == Some(&info.shard)
                && log
                    .snapshot_position
                    .is_none_or(|known| info.position > known);
            if newer {
                // Another node took it: count from its position on.
                log.snapshot_position = Some(info.position);
                log.records_since_snapshot = 0;
                log.bytes_since_snapshot = 0;
                log.changed_since = None;
                log.snapshot_queued = false;
                node.metrics.snapshots_adopted_total.inc();
                return;
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(room = %room, error = %e, "could not read the snapshot store; taking the snapshot anyway");
        }
    }
    let mut sizes = cell.state.read().sizes();
    let mut prepared = spare.take().unwrap_or_default();
    let mut attempts = 0;
    let (copy, position, shard, counted) = loop {
        attempts += 1;
        prepared = match prepare(prepared, sizes).await {
            Ok(prepared) => prepared,
            Err(e) => {
                tracing::error!(room = %room, error = %e, "preparing a snapshot's copy failed");
                return done(&cell);
            }
        };
        // The pause: the applier cannot apply this room's records while the read lock is held.
        let state = cell.state.read();
        let started = Instant::now();
        let mut log = cell.log.lock();
        let (Some(position), Some(shard)) = (log.position, log.shard.clone()) else {
            log.snapshot_queued = false;
            *spare = Some(prepared);
            return;
        };
        if log.snapshot_position.is_some_and(|known| known >= position) {
            log.snapshot_queued = false;
            *spare = Some(prepared);
            return;
        }
        let copy = match prepared.copy(&state) {
            Ok(copy) => copy,
            Err(outgrown) if attempts < SPARE_PREPARE_ATTEMPTS_MAX => {
                // Grew past the headroom meanwhile: release the room, prepare for its new size.
                sizes = state.sizes();
                prepared = outgrown;
                continue;
            }
            Err(outgrown) => {
                tracing::warn!(room = %room, attempts, "the room kept outgrowing the spare prepared for its snapshot; copying it into fresh memory");
                outgrown.copy_allocating(&state)
            }
        };
        let counted = (
            log.records_since_snapshot,
            log.bytes_since_snapshot,
            log.changed_since.take(),
        );
        log.records_since_snapshot = 0;
        log.bytes_since_snapshot = 0;
        drop(log);
        drop(state);
        node.metrics
            .snapshot_pause_seconds
            .observe(started.elapsed().as_secs_f64());
        break (copy, position, shard, counted);
    };
    let encoding = Instant::now();
    let encoded = tokio::task::spawn_blocking(move || {
        let bytes = copy.encode_snapshot();
        (copy.into_spare(), bytes)
    });
    let bytes = match encoded.await {
        Ok((returned, bytes)) => {
            *spare = Some(returned);
            bytes
        }
        Err(e) => {
            tracing::error!(room = %room, error = %e, "encoding a snapshot failed");
            restore_counts(&cell, counted);
            return done(&cell);
        }
    };
    node.metrics
        .snapshot_encode_seconds
        .observe(encoding.elapsed().as_secs_f64());
    node.metrics.snapshot_bytes.observe(bytes.len() as f64);
    fault::point(points::SNAPSHOT_TAKEN);
    let snapshot = Snapshot {
        room: Arc::from(room.as_str()),
        shard: shard.clone(),
        position,
        bytes: bytes.into(),
    };
    match node.log.store_snapshot(snapshot).await {
        Ok(stored) => {
            fault::point(points::SNAPSHOT_STORED);
            if stored {
                node.metrics.snapshots_stored_total.inc();
            }
            {
                let mut log = cell.log.lock();
                if log.snapshot_position.is_none_or(|known| known < position) {
                    log.snapshot_position = Some(position);
                }
                log.snapshot_queued = false;
            }
            trim(node, &shard).await;
        }
        Err(e) => {
            node.metrics.snapshot_errors_total.inc();
            tracing::warn!(room = %room, error = %e, "storing a snapshot failed; its log is not trimmed");
            restore_counts(&cell, counted);
            done(&cell);
        }
    }
}

/// Puts back the counts a failed snapshot had taken, so the room stays due.
fn restore_counts(cell: &RoomCell, (records, bytes, since): (u64, u64, Option<Instant>)) {
    let mut log = cell.log.lock();
    log.records_since_snapshot += records;
    log.bytes_since_snapshot += bytes;
    if let Some(since) = since {
        log.changed_since = Some(log.changed_since.map_or(since, |later| later.min(since)));
    }
}

impl Node {
    /// The position `shard` can be trimmed through: the lowest any of its rooms still needs, no
    /// further than this node applied; `None` when some room needs all of it.
    pub(crate) fn trim_point(&self, shard: &ShardId) -> Option<Position> {
        let mut through = self.progress.borrow().applied.get(shard)?;
        let mut lower = |need: Need| match need {
            Need::Nothing => Some(()),
            Need::After(position) => {
                through = through.min(position);
                Some(())
            }
            Need::Everything => None,
        };
        for cell in self.rooms() {
            let log = cell.log.lock();
            if log.shard.as_ref() == Some(shard) {
                lower(log.need())?;
            }
        }
        for (room_shard, need) in self.forgetting.lock().values() {
            if room_shard == shard {
                lower(*need)?;
            }
        }
        Some(through)
    }
}

/// Trims `shard` as far as its rooms allow (see the module documentation).
async fn trim(node: &Node, shard: &ShardId) {
    let Some(through) = node.trim_point(shard) else {
        return;
    };
    if node
        .trimmed
        .lock()
        .get(shard)
        .is_some_and(|done| done >= through)
    {
        return;
    }
    match node.log.trim(shard, through).await {
        Ok(()) => {
            fault::point(points::TRIM_DONE);
            node.trimmed.lock().advance(shard, through);
            node.metrics.trims_total.inc();
        }
        Err(e) => {
            tracing::warn!(shard = %shard, error = %e, "trimming the log failed; it will be tried again after the next snapshot")
        }
    }
}

/// Restores every room from its newest snapshot; returns where to subscribe from (the log's
/// trim marker).
pub(super) async fn restore_all(node: &Arc<Node>) -> Result<Checkpoint, String> {
    let started = Instant::now();
    let infos = node
        .log
        .list_snapshots()
        .await
        .map_err(|e| format!("listing snapshots: {e}"))?;
    let mut restores = futures::stream::iter(infos)
        .map(|info| async move {
            match node.log.load_snapshot(&info.room).await {
                Ok(Some(snapshot)) => restore_room(node, snapshot).await,
                Ok(None) => Ok(()),
                Err(e) => Err(format!("loading the snapshot of room {}: {e}", info.room)),
            }
        })
        .buffer_unordered(RESTORE_CONCURRENCY);
    let mut restored = 0u64;
    while let Some(result) = restores.next().await {
        result?;
        restored += 1;
    }
    let from = node
        .log
        .trimmed()
        .await
        .map_err(|e| format!("reading the trim markers: {e}"))?;
    *node.trimmed.lock() = from.clone();
    if restored > 0 {
        tracing::info!(
            rooms = restored,
            seconds = started.elapsed().as_secs_f64(),
            "restored rooms from their snapshots"
        );
    }
    Ok(from)
}

/// Puts `snapshot`'s room into the node in place of what it held, or (a tombstone) drops the
/// room and skips its entries up to the tombstone.
pub(super) async fn restore_room(node: &Node, snapshot: Snapshot) -> Result<(), String> {
    let room_id = RoomId::new(&*snapshot.room)
        .map_err(|e| format!("a snapshot names room {:?}: {e}", snapshot.room))?;
    if snapshot.is_tombstone() {
        node.remove_room(&room_id);
        node.floors
            .lock()
            .insert(room_id, (snapshot.shard, snapshot.position));
        return Ok(());
    }
    let started = Instant::now();
    let bytes = snapshot.bytes;
    let room = tokio::task::spawn_blocking(move || Room::restore_snapshot(&bytes))
        .await
        .map_err(|e| format!("decoding the snapshot of room {room_id}: {e}"))?
        .map_err(|e| format!("the snapshot of room {room_id} is damaged: {e}"))?;
    if *room.id() != room_id {
        return Err(format!(
            "the snapshot stored for room {room_id} holds room {}",
            room.id()
        ));
    }
    let cell = node.room_or_insert(&room_id);
    {
        let mut state = cell.state.write();
        let mut log = cell.log.lock();
        *state = room;
        *log = RoomLog {
            shard: Some(snapshot.shard),
            position: Some(snapshot.position),
            snapshot_position: Some(snapshot.position),
            ..RoomLog::default()
        };
    }
    node.metrics.rooms_restored_total.inc();
    node.metrics
        .snapshot_restore_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(())
}

/// After `Trimmed { shard, through }`: restores the shard's rooms that this node holds behind
/// `through` (or does not hold at all) from their snapshots.
pub(super) async fn restore_shard(
    node: &Arc<Node>,
    shard: &ShardId,
    through: Position,
) -> Result<(), String> {
    tracing::warn!(shard = %shard, through = through.0, "entries this node had not applied were trimmed: restoring the shard's rooms from their snapshots");
    node.metrics.log_gaps_total.inc();
    let infos = node
        .log
        .list_snapshots()
        .await
        .map_err(|e| format!("listing snapshots: {e}"))?;
    for info in infos.into_iter().filter(|info| info.shard == *shard) {
        let behind = match RoomId::new(&*info.room).ok().and_then(|id| node.room(&id)) {
            Some(cell) => cell
                .log
                .lock()
                .position
                .is_none_or(|position| position < through && position < info.position),
            None => true,
        };
        if !behind {
            continue;
        }
        let Some(snapshot) = node
            .log
            .load_snapshot(&info.room)
            .await
            .map_err(|e| format!("loading the snapshot of room {}: {e}", info.room))?
        else {
            continue;
        };
        if snapshot.position < through {
            tracing::error!(room = %info.room, "the snapshot of this room is older than the log's trimmed history: records of it are lost");
            node.metrics.rooms_diverged_total.inc();
        }
        restore_room(node, snapshot).await?;
    }
    // Rooms of the shard that are behind the gap and have no snapshot lost records.
    for cell in node.rooms() {
        let log = cell.log.lock();
        if log.shard.as_ref() == Some(shard) && log.position.is_some_and(|p| p < through) {
            tracing::error!(room = %cell.id, "records of this room were trimmed before this node applied them, and no snapshot covers them");
            node.metrics.rooms_diverged_total.inc();
        }
    }
    Ok(())
}
