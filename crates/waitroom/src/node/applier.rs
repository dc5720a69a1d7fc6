//! The applier: the one consumer of the log subscription. At start it restores every room from
//! its snapshot (see `snapshots`); then it decodes every entry, skips what a room's snapshot
//! already holds, applies the rest to the room's state machine, wakes the writers waiting for
//! it, and publishes its progress. It also drops rooms that became vacant (closed, and nothing
//! left to remember: see `Room::is_vacant`) and asks the log to drop their history. Being the
//! only writer of room state, it can do so without racing a record that creates the room again;
//! and every node drops a room at the same record, because vacancy is a function of the state.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use waitroom_core::{Command, Record, RecordId, RoomId};
use waitroom_log::{Checkpoint, Entry, Event, Position, ShardId};

use super::snapshots::{self, SnapshotMode};
use super::{Node, RoomCell, digests};
use crate::metrics::KindLabels;

use crate::limits::APPLY_RECORDS_PER_LOCK_MAX;
/// Backoff between resubscriptions after a subscription failed.
const RESUBSCRIBE_BACKOFF_MS: [u64; 6] = [50, 100, 250, 500, 1_000, 2_000];

/// Attempts to append a room's configuration again after its history was lost (see
/// `regressed`), [`RESUBSCRIBE_BACKOFF_MS`] apart: about 4 s in all.
const RECONFIGURE_ATTEMPTS_MAX: usize = 6;

fn backoff(failures: &mut usize) -> Duration {
    let ms = RESUBSCRIBE_BACKOFF_MS[(*failures).min(RESUBSCRIBE_BACKOFF_MS.len() - 1)];
    *failures += 1;
    Duration::from_millis(ms)
}

pub(crate) async fn run(node: Arc<Node>) {
    let mut failures = 0usize;
    if node.options.snapshots == SnapshotMode::On {
        loop {
            match snapshots::restore_all(&node).await {
                Ok(from) => {
                    node.progress.send_modify(|p| p.applied = from);
                    break;
                }
                Err(why) => {
                    set_unavailable(&node, format!("restoring rooms from snapshots: {why}"))
                }
            }
            tokio::time::sleep(backoff(&mut failures)).await;
        }
        failures = 0;
    }
    loop {
        let from = node.progress.borrow().applied.clone();
        match node.log.subscribe(from).await {
            Ok(mut events) => {
                while let Some(event) = events.next().await {
                    match event {
                        Ok(Event::Entries(entries)) => {
                            failures = 0;
                            let diverged = apply(&node, entries);
                            if !diverged.is_empty() {
                                rebuild(&node, &diverged).await;
                                // Subscribe again from the lowered checkpoint (below).
                                break;
                            }
                        }
                        Ok(Event::CaughtUp) => {
                            node.progress.send_modify(|p| {
                                p.caught_up = true;
                                p.unavailable = None;
                            });
                            node.metrics.ready.set(1);
                            node.snapshot_scan.notify_one();
                            tracing::info!("caught up with the log");
                        }
                        Ok(Event::Unavailable(why)) => set_unavailable(&node, why),
                        Ok(Event::Trimmed { shard, through }) => {
                            if node.options.snapshots == SnapshotMode::Off {
                                // Applying what comes after the gap would build rooms that miss
                                // records: this node must not serve them. It stays unready.
                                let why = format!(
                                    "the log's history of {shard} up to {through:?} was trimmed, \
                                     and this node runs with --snapshots off, so it cannot \
                                     rebuild its rooms: start it with snapshots on"
                                );
                                tracing::error!("{why}");
                                set_unavailable(&node, why);
                                return;
                            }
                            if let Err(why) = snapshots::restore_shard(&node, &shard, through).await
                            {
                                // Subscribing again delivers the same gap again: retried.
                                set_unavailable(&node, why);
                                break;
                            }
                            node.progress
                                .send_modify(|p| p.applied.advance(&shard, through));
                        }
                        Ok(Event::Regressed { shards }) => {
                            for (shard, last) in shards {
                                node.metrics.log_regressions_total.inc();
                                let applied = node.progress.borrow().applied.get(&shard);
                                tracing::error!(
                                    shard = %shard,
                                    applied = ?applied.map(|p| p.0),
                                    now_ends_at = ?last.map(|p| p.0),
                                    "the log went back: the backend lost entries this node had \
                                     applied (a broker restarted empty, or without its latest \
                                     writes); rebuilding the shard's rooms from their snapshots \
                                     and the log"
                                );
                                // Retried until done: the next subscription starts on what the
                                // backend holds now and would not report the regression again.
                                let mut attempts = 0usize;
                                loop {
                                    match regressed(&node, &shard, last).await {
                                        Ok(()) => break,
                                        Err(waitroom_log::LogError::Corrupt(why)) => {
                                            // The log refuses to go on (Kafka, once it found
                                            // the brokers lost records): the rooms stay as they
                                            // are, unserved, until the node is restarted.
                                            tracing::error!(shard = %shard, error = %why, "the log refuses to go on after losing entries: this node stays unready; restart it once the backend is back");
                                            set_unavailable(&node, why);
                                            break;
                                        }
                                        Err(why) => {
                                            tracing::error!(shard = %shard, error = %why, "could not rebuild the rooms of a shard that went back; retrying");
                                            tokio::time::sleep(backoff(&mut attempts)).await;
                                        }
                                    }
                                }
                            }
                            // Subscribe again from the lowered checkpoint (below).
                            break;
                        }
                        Err(e) => {
                            set_unavailable(&node, e.to_string());
                            break;
                        }
                    }
                }
            }
            Err(e) => set_unavailable(&node, e.to_string()),
        }
        // The subscription ended or could not start: subscribe again from where we are.
        tokio::time::sleep(backoff(&mut failures)).await;
    }
}

/// Rebuilds diverged rooms (see `digests`): the node is unready until it caught up again.
async fn rebuild(node: &Arc<Node>, rooms: &[RoomId]) {
    set_unavailable(
        node,
        format!(
            "rebuilding {} room(s) whose copy diverged from the other nodes'",
            rooms.len()
        ),
    );
    for room in rooms {
        if let Err(why) = digests::rebuild(node, room).await {
            // The room keeps its copy; the next interval's checks decide again.
            tracing::error!(room = %room, error = %why, "could not rebuild the room");
        }
    }
}

/// After `Regressed { shard, last }`: the backend lost entries of `shard` this node had applied
/// (a broker that came back empty, or without its latest writes). Entries appended since may
/// carry positions this node already applied, which the applier would skip as delivered twice,
/// and the node's rooms of the shard hold records no other node (nor any node started from now
/// on) will ever see. So the node counts it, logs an error, turns unready, and rebuilds each room
/// of the shard from what the backend still holds: its snapshot if that is at or before `last`
/// (the log still has what follows it), else nothing. A room that existed here and has no such
/// snapshot (the broker lost its snapshots too) lost its whole history: the node appends its
/// last configuration again, so the room goes on existing on every node (and on nodes started
/// later) with the configuration it had; the people in its line are gone, and rejoin (their
/// polls answer `404`). Every node that finds the regression does the same, so the room gets a
/// configuration record per node: the same configuration, applied in log order everywhere.
/// The shard is then dropped from the checkpoint, so the next subscription delivers all of it.
/// Writers waiting for records the broker lost time out (`503`); those appended after the loss
/// are applied and answered when the shard is delivered again.
///
/// # Errors
/// The backend's, from loading a snapshot; nothing was changed then.
async fn regressed(
    node: &Arc<Node>,
    shard: &ShardId,
    last: Option<Position>,
) -> Result<(), waitroom_log::LogError> {
    set_unavailable(
        node,
        format!("the log of {shard} went back (the backend lost entries): rebuilding its rooms"),
    );
    let cells: Vec<_> = node
        .rooms()
        .into_iter()
        .filter(|cell| cell.log.lock().shard.as_ref() == Some(shard))
        .collect();
    // First every fallible read, so that a failure (retried) leaves the rooms untouched.
    let mut usable = Vec::with_capacity(cells.len());
    for cell in &cells {
        let snapshot = match node.options.snapshots {
            SnapshotMode::On => node.log.load_snapshot(cell.id.as_str()).await?,
            SnapshotMode::Off => None,
        }
        .filter(|snapshot| {
            snapshot.shard == *shard && last.is_some_and(|last| snapshot.position <= last)
        });
        usable.push(snapshot);
    }
    let mut reconfigure = Vec::new();
    for (cell, snapshot) in cells.into_iter().zip(usable) {
        if let Some(snapshot) = snapshot {
            match snapshots::restore_room(node, snapshot).await {
                Ok(()) => continue,
                Err(why) => {
                    tracing::error!(room = %cell.id, error = %why, "could not restore the room from its snapshot")
                }
            }
        }
        let config = {
            let mut state = cell.state.write();
            let mut log = cell.log.lock();
            let config = state.config().cloned();
            *state = waitroom_core::Room::new(cell.id.clone());
            *log = super::RoomLog {
                shard: Some(shard.clone()),
                ..super::RoomLog::default()
            };
            config
        };
        tracing::error!(room = %cell.id, shard = %shard, "the backend holds no snapshot of this room that its log still continues: the room's line is lost; its configuration is appended again");
        node.metrics.rooms_diverged_total.inc();
        if let Some(config) = config {
            reconfigure.push((cell.id.clone(), config));
        }
    }
    node.floors
        .lock()
        .retain(|_, (floor_shard, _)| floor_shard != shard);
    node.replaying.lock().remove(shard);
    node.trimmed.lock().0.remove(shard);
    node.progress.send_modify(|p| {
        p.applied.0.remove(shard);
    });
    for (room, config) in reconfigure {
        let node = Arc::clone(node);
        tokio::spawn(async move {
            // A broker that just came back may fail the first commands on connections opened
            // before: retried a few times. One record, appended once or more (each node may
            // append it): the same configuration every time.
            let mut attempts = 0usize;
            loop {
                let command = Command::ConfigureRoomSeeded {
                    config: config.clone(),
                    draw_seed: crate::ids::new_draw_seed(),
                };
                match node.write_unwaited(&room, command).await {
                    Ok(()) => {
                        tracing::warn!(room = %room, "appended the room's configuration again");
                        return;
                    }
                    Err(why) if attempts + 1 >= RECONFIGURE_ATTEMPTS_MAX => {
                        tracing::error!(room = %room, error = %why, "could not append the room's configuration again: configure it through the API");
                        return;
                    }
                    Err(why) => {
                        tracing::warn!(room = %room, error = %why, "appending the room's configuration again failed; retrying");
                        tokio::time::sleep(backoff(&mut attempts)).await;
                    }
                }
            }
        });
    }
    Ok(())
}

pub(super) fn set_unavailable(node: &Node, why: String) {
    tracing::warn!(reason = %why, "log unavailable");
    node.metrics.ready.set(0);
    node.progress.send_modify(|p| {
        p.caught_up = false;
        p.unavailable = Some(why);
    });
}

/// One entry ready to apply.
struct Decoded {
    shard: ShardId,
    position: Position,
    timestamp_ms: u64,
    bytes: usize,
    record: Record,
}

/// Applies a batch of entries: decoded outside any lock, then room by room, at most
/// `APPLY_RECORDS_PER_LOCK_MAX` records per lock hold. Returns the rooms whose copy diverged
/// (see `digests`).
fn apply(node: &Arc<Node>, entries: Vec<Entry>) -> Vec<RoomId> {
    let mut applied = node.progress.borrow().applied.clone();
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut last_timestamp_ms = None;
    let mut run: Vec<Decoded> = Vec::new();
    let mut run_room: Option<Arc<RoomCell>> = None;
    let mut vacated: Vec<(Arc<RoomCell>, Position)> = Vec::new();
    let mut checks = Checks::default();
    let mut floors = node.floors.lock();
    let mut replaying = node.replaying.lock();
    let mut redelivered = 0;
    for entry in entries {
        // At-least-once delivery: skip what this node already applied.
        if applied
            .get(&entry.shard)
            .is_some_and(|seen| seen >= entry.position)
        {
            redelivered += 1;
            continue;
        }
        last_timestamp_ms = Some(entry.timestamp_ms);
        let record = match Record::decode(&entry.payload) {
            Ok(record) => record,
            Err(e) => {
                node.metrics.records_undecodable_total.inc();
                tracing::error!(shard = %entry.shard, position = entry.position.0, error = %e, "skipping an undecodable log entry");
                applied.advance(&entry.shard, entry.position);
                continue;
            }
        };
        // A forgotten room's entries up to its tombstone are history nobody applies.
        if let Some((shard, floor)) = floors.get(&record.room)
            && *shard == entry.shard
        {
            if entry.position <= *floor {
                applied.advance(&entry.shard, entry.position);
                continue;
            }
            floors.remove(&record.room);
        }
        // While a diverged room is rebuilt, what its shard delivers again is for it alone.
        if let Some((up_to, rooms)) = replaying.get(&entry.shard)
            && entry.position <= *up_to
            && !rooms.contains(&record.room)
        {
            applied.advance(&entry.shard, entry.position);
            continue;
        }
        let same_room = run_room.as_ref().is_some_and(|cell| cell.id == record.room);
        if !same_room || run.len() >= APPLY_RECORDS_PER_LOCK_MAX {
            if let Some(cell) = run_room.take()
                && let Some(last) = apply_run(
                    node,
                    &cell,
                    &mut run,
                    &mut applied,
                    &mut outcomes,
                    &mut checks,
                )
            {
                vacated.push((cell, last));
            }
            run_room = Some(node.room_or_insert(&record.room));
        }
        run.push(Decoded {
            shard: entry.shard,
            position: entry.position,
            timestamp_ms: entry.timestamp_ms,
            bytes: entry.payload.len(),
            record,
        });
    }
    if let Some(cell) = run_room
        && let Some(last) = apply_run(
            node,
            &cell,
            &mut run,
            &mut applied,
            &mut outcomes,
            &mut checks,
        )
    {
        vacated.push((cell, last));
    }
    if !floors.is_empty() {
        // Tombstones matter only until the shard is applied past them.
        floors.retain(|_, (shard, floor)| applied.get(shard).is_none_or(|seen| seen < *floor));
    }
    drop(floors);
    if !replaying.is_empty() {
        replaying.retain(|shard, (up_to, _)| applied.get(shard).is_none_or(|seen| seen < *up_to));
    }
    drop(replaying);
    if redelivered > 0 {
        node.metrics
            .log_entries_redelivered_total
            .inc_by(redelivered);
    }
    node.progress.send_modify(|p| p.applied = applied);
    for (cell, last) in vacated {
        forget_if_vacant(node, &cell, last);
    }
    node.wake_writers(outcomes);
    for (room, check) in checks.to_append {
        // Not waited for: the check is a word to the other nodes, and the next interval's
        // comes anyway if this one is lost.
        let node = Arc::clone(node);
        tokio::spawn(async move {
            if let Err(why) = node.write_unwaited(&room, check).await {
                tracing::debug!(room = %room, error = %why, "a digest check was not appended");
            }
        });
    }
    if let Some(ts) = last_timestamp_ms {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        node.metrics
            .applier_lag_ms
            .set(now_ms.saturating_sub(ts) as i64);
    }
    checks.diverged
}

/// What applying a batch asks of the node beyond the rooms' states (see `digests`).
#[derive(Default)]
struct Checks {
    /// Digest checks to append.
    to_append: Vec<(RoomId, Command)>,
    /// Rooms whose copy diverged.
    diverged: Vec<RoomId>,
}

/// Applies `run` (records of one room) under one write lock, skipping entries the room's state
/// already holds (restored from a snapshot at or past them). Returns the position of its last
/// entry if the room is vacant afterwards.
fn apply_run(
    node: &Node,
    cell: &RoomCell,
    run: &mut Vec<Decoded>,
    applied: &mut Checkpoint,
    outcomes: &mut Vec<(RecordId, waitroom_core::Outcome)>,
    checks: &mut Checks,
) -> Option<Position> {
    let mut kinds: Vec<(&'static str, u64)> = Vec::new();
    let mut last = None;
    let mut duplicates = 0;

    let (vacant, due, records_applied_bytes, status_changed) = {
        let mut room = cell.state.write();
        let mut log = cell.log.lock();
        let mut records = 0;
        let mut bytes = 0;
        let status_changes_before = room.status_changes_total();
        for decoded in run.drain(..) {
            let before = applied.get(&decoded.shard);
            applied.advance(&decoded.shard, decoded.position);
            if log.shard.as_ref() == Some(&decoded.shard)
                && log.position.is_some_and(|held| held >= decoded.position)
            {
                continue;
            }
            last = Some(decoded.position);
            digests::compare(node, &cell.id, &mut log, &decoded.record);
            let before_ms = room.now_ms();
            let outcome = room.apply(&decoded.record, decoded.timestamp_ms);
            if matches!(outcome, waitroom_core::Outcome::Duplicate) {
                duplicates += 1;
            }
            let (check, diverged) = digests::after_apply(node, &room, &mut log, before_ms);
            if let Some(check) = check {
                checks.to_append.push((cell.id.clone(), check));
            }
            if diverged && !checks.diverged.contains(&cell.id) {
                checks.diverged.push(cell.id.clone());
            }
            if log.shard.as_ref() != Some(&decoded.shard) {
                log.shard = Some(decoded.shard.clone());
            }
            if log.position.is_none() {
                log.before_first = before;
            }
            log.position = Some(decoded.position);
            records += 1;
            bytes += decoded.bytes as u64;
            let kind = decoded.record.command.kind();
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => kinds.push((kind, 1)),
            }
            outcomes.push((decoded.record.id, outcome));
        }
        if records > 0 {
            log.records_since_snapshot += records;
            log.bytes_since_snapshot += bytes;
            log.changed_since.get_or_insert_with(Instant::now);
        }
        // While catching up, snapshots wait: the backlog is applied first (at full speed), then
        // every room that became due is snapshotted once (see `snapshots::run`).
        let due = node.options.snapshots == SnapshotMode::On
            && !log.snapshot_queued
            && node.progress.borrow().caught_up
            && snapshots::is_due(&node.options, &log);
        if due {
            log.snapshot_queued = true;
        }
        let status_changed = room.status_changes_total() != status_changes_before;
        (room.is_vacant(), due, bytes, status_changed)
    };
    if status_changed {
        cell.changed.notify_waiters();
    }
    if due {
        snapshots::queue(node, cell);
    }
    if duplicates > 0 {
        node.metrics.records_duplicate_total.inc_by(duplicates);
    }
    if records_applied_bytes > 0 {
        node.metrics
            .log_applied_bytes_total
            .inc_by(records_applied_bytes);
    }
    for (kind, n) in kinds {
        node.metrics
            .records_applied_total
            .get_or_create(&KindLabels { kind })
            .inc_by(n);
    }
    last.filter(|_| vacant)
}

/// Drops `cell` from the node if it is still vacant (a later run of the same batch may have
/// created the room again), and asks the log, in the background, to drop the room's history up
/// to `last`. Until the log confirms, what the room needed of its shard keeps the shard from
/// being trimmed (where rooms share a shard, the log's confirmation is a tombstone).
fn forget_if_vacant(node: &Node, cell: &Arc<RoomCell>, last: Position) {
    let (shard, need) = {
        let log = cell.log.lock();
        (log.shard.clone(), log.need())
    };
    if !node.remove_room_if_vacant(cell) {
        return;
    }
    let room = cell.id.clone();
    if let Some(shard) = shard {
        node.forgetting.lock().insert(room.clone(), (shard, need));
    }
    let log = Arc::clone(&node.log);
    let forgetting = Arc::clone(&node.forgetting);
    tokio::spawn(async move {
        match log.forget_room(room.as_str(), last).await {
            Ok(true) => tracing::info!(room = %room, "forgot a closed room and its log"),
            Ok(false) => {
                tracing::info!(room = %room, "a closed room was written to again: its log stays")
            }
            Err(e) => {
                // The room keeps holding its shard's history until this node restarts: its
                // entries stay replayable, which is the safe side.
                tracing::warn!(room = %room, error = %e, "could not drop the room's log");
                return;
            }
        }
        forgetting.lock().remove(&room);
    });
}
