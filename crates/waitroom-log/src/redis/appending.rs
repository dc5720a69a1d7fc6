//! Appending: rooms are registered before their first record, then one pipeline of `XADD`s
//! carries the batch (one per slot under Cluster). See "Appending" in the module documentation
//! of `redis`.

use std::sync::Arc;
use std::time::Instant;

use redis::Value;

use super::RedisLog;
use super::connection::{query_per_slot, unavailable};
use super::settings::*;
use crate::{Append, LogError};

/// Registers a room. KEYS: the registry set, the events stream. ARGV: room, [`ROOMS_MAX`],
/// [`ROOM_EVENTS_MAX`]. Returns 1 if the room is new (and was announced), 0 if it was registered.
pub(super) const REGISTER_SCRIPT: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return redis.error_reply('WAITROOM_ROOMS_MAX the registry already holds ' .. ARGV[2] .. ' rooms')
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'new', ARGV[1])
return 1
";

/// The `EVAL` of [`REGISTER_SCRIPT`] for `room`.
pub(super) fn register_command(keys: &Keys, room: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(REGISTER_SCRIPT)
        .arg(2)
        .arg(&keys.rooms)
        .arg(&keys.events)
        .arg(room)
        .arg(ROOMS_MAX)
        .arg(ROOM_EVENTS_MAX);
    cmd
}

pub(super) fn check_batch(batch: &[Append]) -> Result<(), LogError> {
    crate::check_batch(batch, 0)?;
    batch.iter().try_for_each(|append| check_room(&append.room))
}

pub(super) fn check_room(room: &str) -> Result<(), LogError> {
    if room.is_empty() || room.len() > ROOM_NAME_BYTES_MAX {
        return Err(rejected(format!(
            "room name of {} bytes: must be 1 to ROOM_NAME_BYTES_MAX ({ROOM_NAME_BYTES_MAX})",
            room.len()
        )));
    }
    Ok(())
}

impl RedisLog {
    /// Registers the rooms of `batch` that are not registered (or not recently): see the module
    /// documentation.
    pub(super) async fn register_rooms(&self, batch: &[Append]) -> Result<(), LogError> {
        let now = Instant::now();
        let mut due: Vec<Arc<str>> = {
            let registered = self.registered();
            batch
                .iter()
                .filter(|append| {
                    registered
                        .get(&append.room)
                        .is_none_or(|at| now.duration_since(*at) >= ROOM_REGISTRATION_REFRESH)
                })
                .map(|append| Arc::clone(&append.room))
                .collect()
        };
        if due.is_empty() {
            return Ok(());
        }
        due.sort_unstable();
        due.dedup();
        let keys = &self.shared.keys;
        let commands = due
            .iter()
            .map(|room| (keys.rooms.clone(), register_command(keys, room)))
            .collect();
        let replies = query_per_slot(&self.commands, commands, true)
            .await
            .map_err(|error| unavailable("registering rooms", error))?;
        for (room, reply) in due.iter().zip(replies) {
            match reply {
                Value::Int(_) => {}
                Value::ServerError(error) if error.code() == "WAITROOM_ROOMS_MAX" => {
                    return Err(rejected(format!(
                        "cannot register room {room}: the registry already holds ROOMS_MAX \
                         ({ROOMS_MAX}) rooms"
                    )));
                }
                other => {
                    return Err(LogError::Unavailable(format!(
                        "registering room {room}: Redis answered {other:?}"
                    )));
                }
            }
        }
        let mut registered = self.registered();
        if registered.len() + due.len() > ROOMS_MAX {
            registered.retain(|_, at| now.duration_since(*at) < ROOM_REGISTRATION_REFRESH);
        }
        registered.extend(due.into_iter().map(|room| (room, now)));
        Ok(())
    }

    /// Registers new rooms, then appends the batch as one pipeline of `XADD`s.
    ///
    /// # Errors
    /// - [`LogError::Rejected`] when the batch breaks a limit ([`APPEND_BATCH_RECORDS_MAX`],
    ///   [`RECORD_BYTES_MAX`], [`APPEND_BATCH_BYTES_MAX`], [`ROOM_NAME_BYTES_MAX`], [`ROOMS_MAX`]);
    ///   nothing is appended then.
    /// - [`LogError::Unavailable`] when Redis fails or cannot be reached; some records may have
    ///   been appended.
    pub(super) async fn append_batch(&self, batch: Vec<Append>) -> Result<(), LogError> {
        check_batch(&batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        self.register_rooms(&batch).await?;
        let keys = &self.shared.keys;
        let commands = batch
            .iter()
            .map(|append| {
                let key = keys.room(&append.room);
                let mut cmd = redis::cmd("XADD");
                cmd.arg(&key)
                    .arg("*")
                    .arg(RECORD_FIELD)
                    .arg(&append.payload[..]);
                (key, cmd)
            })
            .collect();
        let replies = query_per_slot(&self.commands, commands, false)
            .await
            .map_err(|error| unavailable("appending", error))?;
        for reply in replies {
            match reply {
                Value::BulkString(_) => {}
                other => {
                    return Err(LogError::Unavailable(format!(
                        "appending: XADD answered {other:?}"
                    )));
                }
            }
        }
        Ok(())
    }
}
