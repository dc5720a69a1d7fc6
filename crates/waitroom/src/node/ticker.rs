//! The ticker: time only moves in a room when a record arrives, so every `tick_interval_ms` the
//! node appends a `Tick` for each room that has live sessions and heard nothing for that long
//! (expiry, the rate limit's refill and the pre-queue draw then happen on time), and for each room
//! that reached its `opensAt` or a scheduled event's start or end. Ticks are
//! idempotent, so several nodes ticking the same room is harmless. A closed room that still
//! remembers ended sessions or record ids is ticked now and then, so its
//! clock reaches the end of their retention: the applier then drops the vacant room and its log.
//! (`NodeOptions::closed_room_tick_interval_ms`, 10 s by default.)

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use waitroom_core::{Command, RoomId};

use super::Node;

pub(crate) async fn run(node: Arc<Node>) {
    let interval_ms = node.options.tick_interval_ms.max(1);
    let mut interval = tokio::time::interval(Duration::from_millis(interval_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Rooms with a Tick on its way to the log: at most one each, so a stalled backend does not
    // pile up a task per room per interval.
    let in_flight: Arc<Mutex<HashSet<RoomId>>> = Arc::default();
    loop {
        interval.tick().await;
        if !node.is_ready() {
            continue;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for cell in node.rooms() {
            let needs_tick = {
                let room = cell.state.read();
                let quiet_ms = now_ms.saturating_sub(room.now_ms());
                if room.exists() {
                    let opening = room
                        .config()
                        .and_then(|c| c.opens_at_ms)
                        .is_some_and(|at| at <= now_ms && room.now_ms() < at);
                    // A scheduled event starts or ends: the stats name it, and the settings in
                    // force change, on time even in a quiet room.
                    let switching = room
                        .config()
                        .and_then(|c| c.next_event_boundary_after(room.now_ms()))
                        .is_some_and(|at| at <= now_ms);
                    quiet_ms >= interval_ms && (room.has_live_sessions() || opening || switching)
                } else {
                    // Nothing in it waits for time but forgetting: a slow pace is enough.
                    !room.is_vacant() && quiet_ms >= node.options.closed_room_tick_interval_ms
                }
            };
            if needs_tick && in_flight.lock().insert(cell.id.clone()) {
                let node = node.clone();
                let room = cell.id.clone();
                let in_flight = Arc::clone(&in_flight);
                tokio::spawn(async move {
                    if let Err(why) = node.write_unwaited(&room, Command::Tick).await {
                        tracing::debug!(room = %room, reason = %why, "tick not appended");
                    }
                    in_flight.lock().remove(&room);
                });
            }
        }
    }
}
