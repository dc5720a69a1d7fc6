//! Digest checks: nodes that silently disagree about a room find out, and the odd one rebuilds.
//!
//! Every node applies the same records in the same order, so every node's copy of a room should
//! be the same. It can differ without anyone noticing: a broker that lost acknowledged writes
//! (Redis with `appendfsync everysec` after a crash, a failover to a replica behind), a record
//! one node could not decode, a bug. So each node, right after applying the first record of a
//! room whose time reaches a new multiple of `digest_check_every_ms` (the record after which
//! `now_ms / every_ms` first takes a new value: the same record on every node, since time comes
//! from the log), computes the room's digest and keeps it, and — once caught up — appends it as a
//! `CheckDigest` record. Every node compares each `CheckDigest` it applies with its own digest at
//! that record: agree, disagree or unverified (it has none: it restored the room from a snapshot
//! taken after that record, or runs with another `every_ms`), counted in
//! `waitroom_digest_checks_total{result}`.
//!
//! At the next crossing, a node looks at the checks of the interval that ended. If more of them
//! disagreed with it than agreed (its own check agrees with it), it is the odd one: it logs an
//! error, counts the room in `waitroom_rooms_diverged_total`, turns unready, and rebuilds the
//! room from the room's newest snapshot and the log after it (or from the room's whole history
//! when it has no snapshot), then turns ready once caught up again. A node in the majority only
//! logs the disagreement. With two nodes, one against one, neither can tell which is right: both
//! log it and count the disagreement, and neither rebuilds. A snapshot taken by the odd node
//! before it was found out carries its divergence: rebuilt from it, the node disagrees again at
//! the next check, and stays counted — the operator deletes that snapshot (or restarts the node
//! with `--snapshots off` where the log holds the history) to cure it.
//!
//! Cost: one digest of the room per node per interval (a pass over the room's sessions under its
//! write lock, about as long as a snapshot's copy), and one record per node per busy room per
//! interval. Idle rooms get no records, so they cross no interval and are not checked.

use std::sync::Arc;

use waitroom_core::{Command, Record, Room, RoomId};
use waitroom_log::ShardId;

use super::{Node, RoomLog, snapshots};
use crate::metrics::ResultLabels;

/// A node's own digest of a room at the start of an interval, and how the checks of that
/// interval compared with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestTally {
    pub every_ms: u64,
    pub interval: u64,
    pub digest: [u8; 16],
    pub agree: u32,
    pub disagree: u32,
}

/// Before `record` is applied: a digest check is compared with this node's digest at its record.
pub(super) fn compare(node: &Node, room: &RoomId, log: &mut RoomLog, record: &Record) {
    let Command::CheckDigest {
        every_ms,
        interval,
        digest,
    } = &record.command
    else {
        return;
    };
    let result = match &mut log.digest {
        Some(tally) if tally.every_ms == *every_ms && tally.interval == *interval => {
            if tally.digest == *digest {
                tally.agree = tally.agree.saturating_add(1);
                "agree"
            } else {
                tally.disagree = tally.disagree.saturating_add(1);
                tracing::error!(
                    room = %room,
                    interval,
                    every_ms,
                    theirs = %hex(digest),
                    ours = %hex(&tally.digest),
                    "a node's digest of this room disagrees with this node's"
                );
                "disagree"
            }
        }
        _ => "unverified",
    };
    node.metrics
        .digest_checks_total
        .get_or_create(&ResultLabels { result })
        .inc();
}

/// After a record was applied to `room` (whose time was `before_ms` before it): at a new
/// interval, decides on the one that ended and starts the next. Returns the check to append for
/// the new interval (when this node is caught up), and whether this node's copy diverged.
pub(super) fn after_apply(
    node: &Node,
    room: &Room,
    log: &mut RoomLog,
    before_ms: u64,
) -> (Option<Command>, bool) {
    let every_ms = node.options.digest_check_every_ms;
    if every_ms == 0 {
        return (None, false);
    }
    let interval = room.now_ms() / every_ms;
    if before_ms == 0 {
        // The room's first record: it had no time before, so this starts no interval (else every
        // new room would get a check at once); its first check comes at its first crossing.
        return (None, false);
    }
    if interval == before_ms / every_ms {
        // Not a crossing (a room restored or first applied mid-interval has no digest until
        // its next one).
        return (None, false);
    }
    let diverged = match log.digest.take() {
        Some(ended) if ended.disagree > ended.agree => {
            tracing::error!(
                room = %room.id(),
                interval = ended.interval,
                agree = ended.agree,
                disagree = ended.disagree,
                "most digest checks of this room disagree with this node's copy: it diverged, \
                 and is rebuilt from its snapshot and the log"
            );
            node.metrics.rooms_diverged_total.inc();
            true
        }
        Some(ended) if ended.disagree > 0 => {
            tracing::error!(
                room = %room.id(),
                interval = ended.interval,
                agree = ended.agree,
                disagree = ended.disagree,
                "digest checks of this room disagreed; no more than agreed, so this node keeps \
                 its copy (another node diverged, or two nodes disagree one against one)"
            );
            false
        }
        _ => false,
    };
    let digest = room.digest();
    log.digest = Some(DigestTally {
        every_ms,
        interval,
        digest,
        agree: 0,
        disagree: 0,
    });
    let announce = node.progress.borrow().caught_up && !diverged;
    let check = announce.then_some(Command::CheckDigest {
        every_ms,
        interval,
        digest,
    });
    (check, diverged)
}

/// Rebuilds a diverged room: from its newest snapshot (if it is one this node has applied past)
/// or from nothing, and marks the entries of its shard after that point for replay to this room
/// alone. The applier then subscribes again from the lowered checkpoint.
pub(super) async fn rebuild(node: &Arc<Node>, room: &RoomId) -> Result<(), String> {
    let Some(cell) = node.room(room) else {
        return Ok(());
    };
    let (shard, up_to, before_first) = {
        let log = cell.log.lock();
        (log.shard.clone(), log.position, log.before_first)
    };
    let (Some(shard), Some(up_to)) = (shard, up_to) else {
        return Ok(());
    };
    let snapshot = node
        .log
        .load_snapshot(room.as_str())
        .await
        .map_err(|e| format!("loading the snapshot of room {room}: {e}"))?
        .filter(|snapshot| snapshot.shard == shard && snapshot.position <= up_to);
    let from = match snapshot {
        Some(snapshot) => {
            let at = snapshot.position;
            snapshots::restore_room(node, snapshot).await?;
            Some(at)
        }
        None => {
            let mut state = cell.state.write();
            let mut log = cell.log.lock();
            *state = Room::new(room.clone());
            *log = RoomLog {
                shard: Some(shard.clone()),
                ..RoomLog::default()
            };
            before_first
        }
    };
    tracing::warn!(room = %room, shard = %shard, "rebuilding the room: replaying its log");
    mark_replay(node, &shard, up_to, room);
    node.progress.send_modify(|progress| match from {
        Some(at) => {
            progress.applied.0.insert(shard.clone(), at);
        }
        None => {
            progress.applied.0.remove(&shard);
        }
    });
    Ok(())
}

/// Entries of `shard` up to `up_to`, delivered again, are applied to `room` only (every other
/// room of the shard has them already).
fn mark_replay(node: &Node, shard: &ShardId, up_to: waitroom_log::Position, room: &RoomId) {
    let mut replaying = node.replaying.lock();
    let (position, rooms) = replaying
        .entry(shard.clone())
        .or_insert_with(|| (up_to, Vec::new()));
    *position = (*position).max(up_to);
    if !rooms.contains(room) {
        rooms.push(room.clone());
    }
}

fn hex(digest: &[u8; 16]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
