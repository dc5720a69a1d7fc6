//! The ticker: time only moves in a room when a record arrives, so every `tick_interval_ms` the
//! node appends a `Tick` for each room that has live sessions and heard nothing for that long
//! (expiry, the rate limit's refill and the pre-queue draw then happen on time). Ticks are
//! idempotent, so several nodes ticking the same room is harmless. It also drops rooms that are
//! closed and hold nothing any more, and asks the backend to drop their history.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use waitroom_core::Command;

use super::Node;

pub(crate) async fn run(node: Arc<Node>) {
    let interval_ms = node.options.tick_interval_ms.max(1);
    let mut interval = tokio::time::interval(Duration::from_millis(interval_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if !node.is_ready() {
            continue;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for cell in node.rooms() {
            let (needs_tick, vacant) = {
                let room = cell.state.read();
                let quiet = now_ms.saturating_sub(room.now_ms()) >= interval_ms;
                let opening = room
                    .config()
                    .and_then(|c| c.opens_at_ms)
                    .is_some_and(|at| at <= now_ms && room.now_ms() < at);
                (
                    room.exists() && quiet && (room.has_live_sessions() || opening),
                    room.is_vacant(),
                )
            };
            if needs_tick {
                let node = node.clone();
                let room = cell.id.clone();
                tokio::spawn(async move {
                    if let Err(why) = node.write_unwaited(&room, Command::Tick).await {
                        tracing::debug!(room = %room, reason = %why, "tick not appended");
                    }
                });
            } else if vacant {
                node.remove_room(&cell.id);
                if let Err(e) = node.log.forget_room(cell.id.as_str()).await {
                    tracing::warn!(room = %cell.id, error = %e, "could not drop the room's log");
                }
            }
        }
    }
}
