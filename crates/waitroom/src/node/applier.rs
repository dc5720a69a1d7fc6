//! The applier: the one consumer of the log subscription. It decodes every entry, applies it to
//! its room's state machine, wakes the writers waiting for it, and publishes its progress. It
//! also drops rooms that became vacant (closed, and nothing left to remember: see
//! `Room::is_vacant`) and asks the log to drop their history. Being the only writer of room
//! state, it can do so without racing a record that creates the room again; and every node
//! drops a room at the same record, because vacancy is a function of the state.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use waitroom_core::{Record, RecordId};

use super::{Node, RoomCell};
use crate::log::{Checkpoint, Entry, Event, Position, ShardId};
use crate::metrics::KindLabels;

/// Records applied under one write lock: bounds how long status polls of a room can wait.
const APPLY_RECORDS_PER_LOCK_MAX: usize = 512;
/// Backoff between resubscriptions after a subscription failed.
const RESUBSCRIBE_BACKOFF_MS: [u64; 6] = [50, 100, 250, 500, 1_000, 2_000];

pub(crate) async fn run(node: Arc<Node>) {
    let mut failures = 0usize;
    loop {
        let from = node.progress.borrow().applied.clone();
        match node.log.subscribe(from).await {
            Ok(mut events) => {
                while let Some(event) = events.next().await {
                    match event {
                        Ok(Event::Entries(entries)) => {
                            failures = 0;
                            apply(&node, entries);
                        }
                        Ok(Event::CaughtUp) => {
                            node.progress.send_modify(|p| {
                                p.caught_up = true;
                                p.unavailable = None;
                            });
                            node.metrics.ready.set(1);
                            tracing::info!("caught up with the log");
                        }
                        Ok(Event::Unavailable(why)) => set_unavailable(&node, why),
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
        let backoff = RESUBSCRIBE_BACKOFF_MS[failures.min(RESUBSCRIBE_BACKOFF_MS.len() - 1)];
        failures += 1;
        tokio::time::sleep(Duration::from_millis(backoff)).await;
    }
}

fn set_unavailable(node: &Node, why: String) {
    tracing::warn!(reason = %why, "log unavailable");
    node.metrics.ready.set(0);
    node.progress.send_modify(|p| {
        p.caught_up = false;
        p.unavailable = Some(why);
    });
}

/// Applies a batch of entries: decoded outside any lock, then room by room, at most
/// `APPLY_RECORDS_PER_LOCK_MAX` records per lock hold.
fn apply(node: &Node, entries: Vec<Entry>) {
    let mut applied = node.progress.borrow().applied.clone();
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut last_timestamp_ms = None;
    let mut run: Vec<(ShardId, Position, u64, Record)> = Vec::new();
    let mut run_room: Option<Arc<RoomCell>> = None;
    let mut vacated: Vec<(Arc<RoomCell>, Position)> = Vec::new();
    for entry in entries {
        // At-least-once delivery: skip what this node already applied.
        if applied
            .get(&entry.shard)
            .is_some_and(|seen| seen >= entry.position)
        {
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
        let same_room = run_room.as_ref().is_some_and(|cell| cell.id == record.room);
        if !same_room || run.len() >= APPLY_RECORDS_PER_LOCK_MAX {
            if let Some(cell) = run_room.take()
                && let Some(last) = apply_run(node, &cell, &mut run, &mut applied, &mut outcomes)
            {
                vacated.push((cell, last));
            }
            run_room = Some(node.room_or_insert(&record.room));
        }
        run.push((entry.shard, entry.position, entry.timestamp_ms, record));
    }
    if let Some(cell) = run_room
        && let Some(last) = apply_run(node, &cell, &mut run, &mut applied, &mut outcomes)
    {
        vacated.push((cell, last));
    }
    node.progress.send_modify(|p| p.applied = applied);
    for (cell, last) in vacated {
        forget_if_vacant(node, &cell, last);
    }
    node.wake_writers(outcomes);
    if let Some(ts) = last_timestamp_ms {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        node.metrics
            .applier_lag_ms
            .set(now_ms.saturating_sub(ts) as i64);
    }
}

/// Applies `run` (records of one room) under one write lock. Returns the position of its last
/// entry if the room is vacant afterwards.
fn apply_run(
    node: &Node,
    cell: &RoomCell,
    run: &mut Vec<(ShardId, Position, u64, Record)>,
    applied: &mut Checkpoint,
    outcomes: &mut Vec<(RecordId, waitroom_core::Outcome)>,
) -> Option<Position> {
    let mut kinds: Vec<(&'static str, u64)> = Vec::new();
    let mut last = None;
    let vacant = {
        let mut room = cell.state.write();
        for (shard, position, timestamp_ms, record) in run.drain(..) {
            last = Some(position);
            let outcome = room.apply(&record, timestamp_ms);
            applied.advance(&shard, position);
            let kind = record.command.kind();
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => kinds.push((kind, 1)),
            }
            outcomes.push((record.id, outcome));
        }
        room.is_vacant()
    };
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
/// to `last`.
fn forget_if_vacant(node: &Node, cell: &Arc<RoomCell>, last: Position) {
    if !node.remove_room_if_vacant(cell) {
        return;
    }
    let log = Arc::clone(&node.log);
    let room = cell.id.clone();
    tokio::spawn(async move {
        match log.forget_room(room.as_str(), last).await {
            Ok(true) => tracing::info!(room = %room, "forgot a closed room and its log"),
            Ok(false) => {
                tracing::info!(room = %room, "a closed room was written to again: its log stays")
            }
            Err(e) => tracing::warn!(room = %room, error = %e, "could not drop the room's log"),
        }
    });
}
