//! Snapshots, trimming and forgetting: each room's newest snapshot lives in a hash beside its
//! stream, `prefix:{room}:snapshot` (the same hash tag, so the same slot: one script touches both
//! under Redis Cluster), with the fields
//! - `position`, `data`: the snapshot (its position as a stream id `ms-seq`, and its bytes);
//! - `trimmed`: the newest position given to [`crate::Log::trim`] (where a node starts reading);
//! - `deleted`: the newest entry id that trimming actually deleted: a subscription whose position
//!   is before it missed entries and is told so (`Event::Trimmed`, see `reading`).
//!
//! Storing is one script that keeps the snapshot only if it is newer than the one held. Trimming
//! is one script: it records `trimmed`, works out the oldest id to keep — the trim position, but
//! not past the last entry delivered to any consumer group that read within [`GROUP_IDLE_MAX`]
//! (so a live node that lags is never trimmed under), nor past `keep-history` — records `deleted`
//! and runs `XTRIM MINID`. The trim position's own entry is always kept, so a stream never loses
//! its last entry to trimming. A script is atomic, so a crash cannot leave a marker without its
//! trim or a trim without its marker; and the snapshot is stored (an earlier, separate command)
//! before anything is trimmed, so a crash between the two only leaves history that is no longer
//! needed.

use std::sync::Arc;

use bytes::Bytes;
use redis::Value;

use super::RedisLog;
use super::appending::{check_room, register_command};
use super::connection::{query_per_slot, unavailable};
use super::settings::*;
use crate::{Checkpoint, LogError, Position, ShardId, Snapshot, SnapshotInfo, check_snapshot};

/// The hash field holding the snapshot's position.
const POSITION_FIELD: &str = "position";
/// The hash field holding the snapshot's bytes.
const DATA_FIELD: &str = "data";
/// The hash field holding the trim marker.
const TRIMMED_FIELD: &str = "trimmed";
/// The hash field holding the newest entry id trimming deleted.
pub(super) const DELETED_FIELD: &str = "deleted";

/// `less(a, b)`: stream id `a` is before stream id `b`, compared exactly as decimal strings
/// (Lua numbers are doubles, which cannot hold every 64-bit sequence number).
const LESS_LUA: &str = r"
local function less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
";

/// Stores a snapshot unless the hash holds one at the same or a later position. KEYS: the
/// snapshot hash. ARGV: position, bytes. Returns 1 if stored.
const STORE_SCRIPT: &str = r"
local held = redis.call('HGET', KEYS[1], 'position')
if held and not less(held, ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'position', ARGV[1], 'data', ARGV[2])
return 1
";

/// Trims a room stream (see the module documentation). KEYS: the stream, the snapshot hash.
/// ARGV: the trim position, the first millisecond of history kept for audit (0: none), the
/// idle time in ms past which a consumer group is taken for gone. Returns the entries deleted.
const TRIM_SCRIPT: &str = r"
local through = ARGV[1]
local held = redis.call('HGET', KEYS[2], 'trimmed')
if held and not less(held, through) then
  through = held
else
  redis.call('HSET', KEYS[2], 'trimmed', through)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local minid = through
if ARGV[2] ~= '0' and less(ARGV[2] .. '-0', minid) then minid = ARGV[2] .. '-0' end
local idle_max = tonumber(ARGV[3])
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then last = group[i + 1] end
  end
  local live = false
  for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], name)) do
    for i = 1, #consumer, 2 do
      if consumer[i] == 'idle' and consumer[i + 1] < idle_max then live = true end
    end
  end
  if live and less(last, minid) then minid = last end
end
-- A live group that was delivered nothing yet (0-0) holds everything: there is nothing below
-- 0-0 (and '(0-0' is no valid range start).
if minid == '0-0' then return 0 end
local gone = redis.call('XREVRANGE', KEYS[1], '(' .. minid, '-', 'COUNT', 1)
if #gone == 0 then return 0 end
local deleted = redis.call('HGET', KEYS[2], 'deleted')
if not deleted or less(deleted, gone[1][1]) then
  redis.call('HSET', KEYS[2], 'deleted', gone[1][1])
end
return redis.call('XTRIM', KEYS[1], 'MINID', minid)
";

/// Removes a room from the registry. KEYS: the registry set, the events stream. ARGV: room,
/// [`ROOM_EVENTS_MAX`]. Returns 1 if the room was registered (and the removal was announced).
const FORGET_SCRIPT: &str = r"
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'forget', ARGV[1])
return 1
";

/// Deletes a room stream and its snapshot hash if the stream's newest entry is the given one (or
/// it has none). KEYS: the stream, the snapshot hash. ARGV: the stream id the caller applied
/// last. Returns 1 if deleted (or absent), 0 if newer entries keep them. One slot, so it runs
/// under Redis Cluster too.
const DELETE_IF_LAST_SCRIPT: &str = r"
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #newest > 0 and newest[1][1] ~= ARGV[1] then return 0 end
redis.call('UNLINK', KEYS[1], KEYS[2])
return 1
";

fn with_less(script: &str) -> String {
    format!("{LESS_LUA}{script}")
}

fn parse_id(value: &[u8], what: &str) -> Result<StreamId, LogError> {
    StreamId::parse(value).ok_or_else(|| {
        LogError::Corrupt(format!(
            "{what} is not a stream id: {:?}",
            String::from_utf8_lossy(value)
        ))
    })
}

impl RedisLog {
    /// Every registered room.
    async fn rooms(&self) -> Result<Vec<String>, LogError> {
        let mut conn = self.commands.clone();
        redis::cmd("SMEMBERS")
            .arg(&self.shared.keys.rooms)
            .query_async(&mut conn)
            .await
            .map_err(|error| unavailable("reading the room registry", error))
    }

    /// Checks that `shard` is `room`'s stream.
    fn check_shard(&self, room: &str, shard: &ShardId) -> Result<(), LogError> {
        if *shard.0 == *self.shared.keys.room(room) {
            Ok(())
        } else {
            Err(LogError::Rejected(format!(
                "room {room} lives in shard {}, not {shard}",
                self.shared.keys.room(room)
            )))
        }
    }

    pub(super) async fn store(&self, snapshot: Snapshot) -> Result<bool, LogError> {
        check_snapshot(&snapshot)?;
        check_room(&snapshot.room)?;
        self.check_shard(&snapshot.room, &snapshot.shard)?;
        if snapshot.bytes.len() > SNAPSHOT_BYTES_MAX {
            return Err(LogError::Rejected(format!(
                "snapshot of room {} has {} bytes, more than Redis takes in one value \
                 (SNAPSHOT_BYTES_MAX, {SNAPSHOT_BYTES_MAX})",
                snapshot.room,
                snapshot.bytes.len()
            )));
        }
        let mut conn = self.commands.clone();
        let stored: i64 = redis::cmd("EVAL")
            .arg(with_less(STORE_SCRIPT))
            .arg(1)
            .arg(self.shared.keys.snapshot(&snapshot.room))
            .arg(StreamId::from_position(snapshot.position).to_string())
            .arg(&snapshot.bytes[..])
            .query_async(&mut conn)
            .await
            .map_err(|error| {
                unavailable(
                    &format!("storing the snapshot of room {}", snapshot.room),
                    error,
                )
            })?;
        Ok(stored == 1)
    }

    pub(super) async fn load(&self, room: &str) -> Result<Option<Snapshot>, LogError> {
        if check_room(room).is_err() {
            return Ok(None);
        }
        let mut conn = self.commands.clone();
        let (position, data): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(self.shared.keys.snapshot(room))
            .arg(POSITION_FIELD)
            .arg(DATA_FIELD)
            .query_async(&mut conn)
            .await
            .map_err(|error| unavailable(&format!("loading the snapshot of room {room}"), error))?;
        let (Some(position), Some(data)) = (position, data) else {
            return Ok(None);
        };
        let position = parse_id(&position, "a snapshot position")?;
        Ok(Some(Snapshot {
            room: room.into(),
            shard: ShardId::new(self.shared.keys.room(room)),
            position: position.position(),
            bytes: Bytes::from(data),
        }))
    }

    pub(super) async fn info(&self, room: &str) -> Result<Option<SnapshotInfo>, LogError> {
        if check_room(room).is_err() {
            return Ok(None);
        }
        let key = self.shared.keys.snapshot(room);
        let mut conn = self.commands.clone();
        let (position, bytes): (Option<Vec<u8>>, u64) = redis::pipe()
            .cmd("HGET")
            .arg(&key)
            .arg(POSITION_FIELD)
            .cmd("HSTRLEN")
            .arg(&key)
            .arg(DATA_FIELD)
            .query_async(&mut conn)
            .await
            .map_err(|error| unavailable(&format!("reading the snapshot of room {room}"), error))?;
        let Some(position) = position else {
            return Ok(None);
        };
        Ok(Some(SnapshotInfo {
            room: room.into(),
            shard: ShardId::new(self.shared.keys.room(room)),
            position: parse_id(&position, "a snapshot position")?.position(),
            bytes,
        }))
    }

    pub(super) async fn list(&self) -> Result<Vec<SnapshotInfo>, LogError> {
        let rooms = self.rooms().await?;
        let keys = &self.shared.keys;
        let mut commands = Vec::with_capacity(rooms.len() * 2);
        for room in &rooms {
            let key = keys.snapshot(room);
            let mut position = redis::cmd("HGET");
            position.arg(&key).arg(POSITION_FIELD);
            let mut length = redis::cmd("HSTRLEN");
            length.arg(&key).arg(DATA_FIELD);
            commands.push((key.clone(), position));
            commands.push((key, length));
        }
        let replies = query_per_slot(&self.commands, commands, false)
            .await
            .map_err(|error| unavailable("listing snapshots", error))?;
        let mut infos = Vec::new();
        for (room, pair) in rooms.iter().zip(replies.chunks(2)) {
            let (Value::BulkString(position), Value::Int(bytes)) = (&pair[0], &pair[1]) else {
                continue;
            };
            infos.push(SnapshotInfo {
                room: Arc::from(room.as_str()),
                shard: ShardId::new(keys.room(room)),
                position: parse_id(position, "a snapshot position")?.position(),
                bytes: u64::try_from(*bytes).unwrap_or(0),
            });
        }
        Ok(infos)
    }

    pub(super) async fn trim_stream(
        &self,
        shard: &ShardId,
        through: Position,
    ) -> Result<(), LogError> {
        let keys = &self.shared.keys;
        let room = shard
            .0
            .strip_prefix(&format!("{}:{{", keys.prefix))
            .and_then(|rest| rest.strip_suffix("}:log"))
            .ok_or_else(|| {
                LogError::Rejected(format!("{shard} is not a room stream of this log"))
            })?;
        let keep_from_ms = match self.shared.keep_history_ms {
            0 => 0,
            keep_ms => super::connection::wall_clock_ms().saturating_sub(keep_ms),
        };
        let mut conn = self.commands.clone();
        let _: i64 = redis::cmd("EVAL")
            .arg(with_less(TRIM_SCRIPT))
            .arg(2)
            .arg(&*shard.0)
            .arg(keys.snapshot(room))
            .arg(StreamId::from_position(through).to_string())
            .arg(keep_from_ms)
            .arg(GROUP_IDLE_MAX.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(|error| unavailable(&format!("trimming {shard}"), error))?;
        Ok(())
    }

    pub(super) async fn trim_markers(&self) -> Result<Checkpoint, LogError> {
        let rooms = self.rooms().await?;
        let keys = &self.shared.keys;
        let commands = rooms
            .iter()
            .map(|room| {
                let key = keys.snapshot(room);
                let mut cmd = redis::cmd("HGET");
                cmd.arg(&key).arg(TRIMMED_FIELD);
                (key, cmd)
            })
            .collect();
        let replies = query_per_slot(&self.commands, commands, false)
            .await
            .map_err(|error| unavailable("reading the trim markers", error))?;
        let mut trimmed = Checkpoint::start();
        for (room, reply) in rooms.iter().zip(replies) {
            if let Value::BulkString(marker) = reply {
                let marker = parse_id(&marker, "a trim marker")?;
                trimmed.advance(&ShardId::new(keys.room(room)), marker.position());
            }
        }
        Ok(trimmed)
    }

    /// Removes the room from the registry (announcing it, so subscriptions drop its stream), then
    /// deletes its stream and snapshot (`UNLINK`, which frees the memory in the background) if
    /// `last` is still its newest entry. In that order, so no subscription re-creates the stream
    /// (`MKSTREAM`) after it was deleted. If another node appended to the room meanwhile, the
    /// stream stays and the room is registered (and announced) again, so every node reads it on.
    ///
    /// One window remains: a node that appends to the room right after the `UNLINK`, and still
    /// holds a fresh registration in its cache ([`ROOM_REGISTRATION_REFRESH`]), writes to a
    /// stream nobody reads. Its write is never applied, so it is answered `503`, not acknowledged.
    pub(super) async fn forget(&self, room: &str, last: Position) -> Result<bool, LogError> {
        check_room(room)?;
        let keys = &self.shared.keys;
        let mut conn = self.commands.clone();
        let _: i64 = redis::cmd("EVAL")
            .arg(FORGET_SCRIPT)
            .arg(2)
            .arg(&keys.rooms)
            .arg(&keys.events)
            .arg(room)
            .arg(ROOM_EVENTS_MAX)
            .query_async(&mut conn)
            .await
            .map_err(|error| unavailable(&format!("forgetting room {room}"), error))?;
        self.forget_registration(room);
        let deleted: i64 = redis::cmd("EVAL")
            .arg(DELETE_IF_LAST_SCRIPT)
            .arg(2)
            .arg(keys.room(room))
            .arg(keys.snapshot(room))
            .arg(StreamId::from_position(last).to_string())
            .query_async(&mut conn)
            .await
            .map_err(|error| unavailable(&format!("deleting the stream of room {room}"), error))?;
        if deleted == 1 {
            return Ok(true);
        }
        let _: i64 = register_command(keys, room)
            .query_async(&mut conn)
            .await
            .map_err(|error| unavailable(&format!("registering room {room} again"), error))?;
        Ok(false)
    }
}
