//! Room snapshots: a room's whole state as bytes, so a node restarts from a recent snapshot and
//! the log after it instead of replaying the room's whole log.
//!
//! A restored room is the same state machine as the one encoded: same digest, views and stats,
//! and the same outcomes for any later records, forever after. That includes physical details
//! the rules depend on: slot indices (sessions admitted in the same millisecond end in slot
//! order) and the free-slot list's order (it decides which slot the next join takes). Only what
//! no rule can observe is rebuilt rather than copied: the line's sequence numbers, the pre-queue's
//! indices, hash map layouts and capacities (`Room::session_ids` order is unspecified).
//!
//! # Format
//! `[SNAPSHOT_MAGIC = "WRSN"][format version: u8][body][CRC-32C of all before it: u32 LE]`.
//! The magic differs from records' (`'W'` then version 1), so neither is mistaken for the other.
//! A later format adds a version and keeps reading the earlier ones. `Room::digest` is part of the
//! format (restore recomputes it and compares): a change to the digest is a format change, and
//! the new version must still restore snapshots carrying the old digest.
//!
//! This build writes versions 2 to 6 and reads versions 1 to 6. Version 2 is version 1 plus the
//! room's secret draw seed (flag bit 7, and 8 bytes after the configuration); a version 1
//! snapshot is of a room with no seed (it was written before seeds existed), and restores to the
//! room it was, whose version 2 encoding is the same bytes with the version byte 2 (and the
//! checksum recomputed). Version 3 is version 2 plus the room's queueing method (one byte after
//! the seed: its index, `QueueingMethod::index`), and is written only for a room whose method is
//! not `fifo`: a `fifo` room is written as version 2, byte for byte as before queueing methods
//! (so builds from before read it), and versions 1 and 2 restore as `fifo` rooms. A version 3
//! snapshot of a `fifo` room is refused. Version 4 is version 3 with the queueing method always
//! present (`fifo` included) and, after the remembered record ids, the room's outstanding passes
//! (13.: their count, at least 1, then per pass in expiry then hash order `expiry - now` and the
//! 16-byte hash); it is written only for a room holding passes, so a room without passes is
//! written as before passes. Version 5 is version 4 plus the room's challenge difficulty
//! (`RoomConfig::challenge_difficulty_bits`: one byte, 1 to `CHALLENGE_DIFFICULTY_BITS_MAX`,
//! right after the method byte), its passes' count then being 0 or more; it is written only for
//! a room whose configuration asks for a challenge, so a room without one is written exactly as
//! before challenges, and versions 1 to 4 restore as rooms without one. A version 5 snapshot of a
//! difficulty of 0 is refused. Version 6 is version 5 plus the room's scheduled events
//! (`RoomConfig::events`), right after the difficulty byte (which may then be 0): their count (1
//! to `EVENTS_PER_ROOM_MAX`), then per event its name (length u8, bytes), its start (varint, ms
//! since the epoch), its length (`end - start`, varint), a flags byte (bit 0 `capacity`, 1
//! `admitPerMinute`, 2 `preQueueMinutes` set) and the settings it has, in that order, as
//! varints. It is written only for a room with events, so a room without any is written exactly
//! as before events, and versions 1 to 5 restore as rooms without events; a version 6 snapshot
//! of none is refused. The token bucket (8.) is present exactly when the room exists and a rate
//! is in force at the clock (the running event's or the room's: see `Room`, "Events"). Within a
//! version every state has exactly one encoding.
//!
//! Integers are unsigned LEB128 varints in their shortest form ("varint"), so each state has
//! exactly one encoding; times are varints of their distance back from an anchor (usually the
//! clock), which keeps them to 1–3 bytes. Version 2's body, in order (version 1's differs only
//! where it says):
//! 1. the room's 16-byte `Room::digest()`;
//! 2. the room id: length (u8), bytes;
//! 3. the clock `now_ms`: varint (every later time is encoded relative to it);
//! 4. flags (u8): bit 0 the room exists, 1 paused, 2 `admitPerMinute` set, 3 `opensAt` set,
//!    4 `maxWaiting` set, 5 `targetUrl` set, 6 a rooms-file entry was applied, 7 the room holds a
//!    draw seed (version 1: bit 7 zero);
//! 5. the configuration (current, or last before a close), varints: capacity, [admitPerMinute],
//!    activeIdleTimeoutSeconds, maxActiveSeconds, waitingIdleTimeoutSeconds,
//!    heartbeatIntervalSeconds, [opensAt ms], [maxWaiting], [targetUrl: length, bytes]; then
//!    [the 16-byte digest of the rooms-file entry last applied]; then [the secret seed of the
//!    pre-queue draw: 8 bytes, little-endian] (version 1: none). The seed is not in the digest
//!    (see `Room::digest`): the checksum alone guards it. Version 3 only: then the queueing
//!    method (u8, 1 to 3: `random`, `passthrough`, `reject`);
//! 6. `now - created_at_ms`;
//! 7. admitted total, then expired totals by reason (timeout, left, completed, evicted,
//!    closed);
//! 8. the token bucket, present exactly when the room exists with `admitPerMinute` set: units,
//!    `now - last refill`;
//! 9. the admission window, then the freed-slot window: 60 buckets in ring order, each `0` if
//!    empty, else `now / 5000 - bucket number + 1` and the count;
//! 10. the slab: the number of slots, then per slot a tag byte, `0` for a free slot; else bits
//!     0–2 the state (1 pre-queue, 2 waiting, 3 active, 4 ended), bits 3–5 the expiry reason,
//!     bit 6 "has an idempotency key", bit 7 "was admitted" — followed by the session id (16
//!     bytes), `now - last seen`, `last seen - joined`, [`last seen - admitted`],
//!     [key: length (u8), bytes];
//! 11. six orders of slot indices, each index a zigzag varint of its difference from the previous
//!     one (from 0), their lengths given by the slab: the free list (free slots), the waiting
//!     idle list (pre-queue and waiting), the active idle list (active), the ended list (ended),
//!     the line (waiting) and the pre-queue (pre-queue);
//! 12. remembered record ids, oldest first: the count, then per id `now - remembered at` and the
//!     16-byte id.
//!
//! Restoring never panics and allocates in proportion to the input: damaged, truncated or
//! hostile bytes are a [`SnapshotError`]. The checksum catches damage; structural checks then
//! refuse anything no room could be in (each list holds exactly the slots of its states in the
//! order the rules rely on, ids and keys are unique, every limit holds); the digest, recomputed
//! from the rebuilt room, catches anything else that does not match what was encoded.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;

use crate::config::{ConfigError, QueueingMethod, RoomConfig, RoomEvent};
use crate::digest::{DrawSeed, SessionHasherBuilder};
use crate::ids::{IdempotencyKey, RecordId, RoomId, SessionId};
use crate::limits::*;
use crate::line::{Line, Prequeue};
use crate::pass::Passes;
use crate::rate::{RateWindow, TokenBucket};
use crate::room::{KeysBySlot, List, NEVER, NIL, RecentRecords, Room, Slot, SlotState};
use crate::view::{ExpiredReason, ExpiredTotals};

/// First bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"WRSN";
/// The newest snapshot format version this build writes (it reads this one and every earlier
/// one); it writes a `fifo` room as version 2 (see the module documentation).
pub const SNAPSHOT_FORMAT_VERSION: u8 = 6;
/// The format of rooms without events that ask for a challenge (version 6 without the events).
const SNAPSHOT_FORMAT_VERSION_5: u8 = 5;
/// The format of rooms without a challenge that hold passes (version 5 without the difficulty).
const SNAPSHOT_FORMAT_VERSION_4: u8 = 4;
/// The format of rooms that are not `fifo` and hold no passes (version 4 without the passes).
const SNAPSHOT_FORMAT_VERSION_3: u8 = 3;
/// The first snapshot format version, still read: rooms without a draw seed.
const SNAPSHOT_FORMAT_VERSION_1: u8 = 1;
/// The format of `fifo` rooms (version 3 without the queueing method).
const SNAPSHOT_FORMAT_VERSION_2: u8 = 2;

const HEADER_BYTES: usize = SNAPSHOT_MAGIC.len() + 1;
const TRAILER_BYTES: usize = 4;

const FLAG_EXISTS: u8 = 1 << 0;
const FLAG_PAUSED: u8 = 1 << 1;
const FLAG_ADMIT_PER_MINUTE: u8 = 1 << 2;
const FLAG_OPENS_AT: u8 = 1 << 3;
const FLAG_MAX_WAITING: u8 = 1 << 4;
const FLAG_TARGET_URL: u8 = 1 << 5;
const FLAG_FILE_ENTRY: u8 = 1 << 6;
/// Version 2 on.
const FLAG_DRAW_SEED: u8 = 1 << 7;
const FLAGS_KNOWN_V1: u8 = FLAG_DRAW_SEED - 1;
const FLAGS_KNOWN: u8 = u8::MAX;

/// Version 6: which optional settings an event carries.
const EVENT_CAPACITY: u8 = 1 << 0;
const EVENT_ADMIT_PER_MINUTE: u8 = 1 << 1;
const EVENT_PRE_QUEUE: u8 = 1 << 2;
const EVENT_FLAGS_KNOWN: u8 = (1 << 3) - 1;
/// Bytes an event takes at least (a one-byte name and its length, start, length, flags).
const EVENT_BYTES_MIN: usize = 5;

const TAG_STATE_MASK: u8 = 0b111;
const TAG_REASON_SHIFT: u32 = 3;
const TAG_REASON_MASK: u8 = 0b111;
const TAG_KEY: u8 = 1 << 6;
const TAG_ADMITTED: u8 = 1 << 7;

/// Bytes a slot takes in the slab at least (a free slot's tag), and a remembered record id at
/// least (a one-byte age and the id): counts claimed by the input are checked against what the
/// rest of the input could hold before anything is allocated for them.
const SLOT_BYTES_MIN: usize = 1;
const RECORD_ID_BYTES_MIN: usize = 1 + 16;

/// Why bytes could not be restored as a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// Larger than `SNAPSHOT_BYTES_MAX`.
    TooLarge(usize),
    /// The bytes end before the snapshot does.
    Truncated,
    /// Does not start with `SNAPSHOT_MAGIC`.
    NotASnapshot,
    /// A format version this build cannot read (written by a newer release).
    UnsupportedVersion(u8),
    /// The CRC-32C trailer does not match the bytes: they were damaged.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// Well-framed and checksummed, but no room can be in this state (the reason says which
    /// check failed).
    Malformed(&'static str),
    /// The configuration inside is out of range.
    InvalidConfig(ConfigError),
    /// Bytes left over after a complete snapshot.
    TrailingBytes(usize),
    /// The rebuilt room's digest differs from the one recorded when it was encoded.
    DigestMismatch { stored: [u8; 16], rebuilt: [u8; 16] },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::TooLarge(n) => {
                write!(
                    f,
                    "snapshot of {n} bytes exceeds {SNAPSHOT_BYTES_MAX} bytes"
                )
            }
            SnapshotError::Truncated => f.write_str("snapshot is truncated"),
            SnapshotError::NotASnapshot => f.write_str("not a waitroom snapshot (bad magic)"),
            SnapshotError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "snapshot format version {v} is not supported by this build"
                )
            }
            SnapshotError::ChecksumMismatch { stored, computed } => write!(
                f,
                "snapshot checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            ),
            SnapshotError::Malformed(why) => write!(f, "malformed snapshot: {why}"),
            SnapshotError::InvalidConfig(e) => write!(f, "snapshot of an invalid room: {e}"),
            SnapshotError::TrailingBytes(n) => write!(f, "{n} unexpected bytes in the snapshot"),
            SnapshotError::DigestMismatch { stored, rebuilt } => write!(
                f,
                "restored room's digest {} differs from the snapshot's {}",
                hex(rebuilt),
                hex(stored)
            ),
        }
    }
}

impl std::error::Error for SnapshotError {}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type Result<T> = std::result::Result<T, SnapshotError>;

fn malformed<T>(why: &'static str) -> Result<T> {
    Err(SnapshotError::Malformed(why))
}

impl Room {
    /// The room's whole state in the snapshot format (see the `snapshot` module documentation).
    /// O(n) in the sessions plus one `digest()`; about 22 bytes per waiting session.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        self.encode_snapshot_with(self.keys_by_slot())
    }

    /// `encode_snapshot`, reading the idempotency keys from `keys` (this room's own, or a
    /// `SnapshotCopy`'s flat copy: nothing else of `keys`/`key_of_slot` is read).
    pub(crate) fn encode_snapshot_with(&self, keys: KeysBySlot<'_>) -> Vec<u8> {
        let url_len = self.config.target_url.as_ref().map_or(0, String::len);
        let estimate = 256 + url_len + self.slots.len() * 24 + self.recent_records.order.len() * 20;
        let mut w = Writer(Vec::with_capacity(estimate));
        w.bytes(&SNAPSHOT_MAGIC);
        let method = self.config.queueing_method;
        let difficulty_bits = self.config.challenge_difficulty_bits;
        let version = if !self.config.events.is_empty() {
            SNAPSHOT_FORMAT_VERSION
        } else if difficulty_bits != 0 {
            SNAPSHOT_FORMAT_VERSION_5
        } else if !self.passes.is_empty() {
            SNAPSHOT_FORMAT_VERSION_4
        } else if method != QueueingMethod::Fifo {
            SNAPSHOT_FORMAT_VERSION_3
        } else {
            SNAPSHOT_FORMAT_VERSION_2
        };
        w.u8(version);
        w.bytes(&self.digest_with(keys.clone()));
        let id = self.id.as_str().as_bytes();
        w.u8(id.len() as u8);
        w.bytes(id);
        let now = self.now_ms;
        w.varint(now);
        // Differences below saturate rather than panic: they are never negative in a room the
        // rules built, and if a bug ever made one so, restore refuses the snapshot (its digest
        // no longer matches) instead of this crashing the node that takes it.
        let back = |t: u64| now.saturating_sub(t);

        let c = &self.config;
        let flag = |set: bool, bit: u8| if set { bit } else { 0 };
        w.u8(flag(self.exists, FLAG_EXISTS)
            | flag(c.paused, FLAG_PAUSED)
            | flag(c.admit_per_minute.is_some(), FLAG_ADMIT_PER_MINUTE)
            | flag(c.opens_at_ms.is_some(), FLAG_OPENS_AT)
            | flag(c.max_waiting.is_some(), FLAG_MAX_WAITING)
            | flag(c.target_url.is_some(), FLAG_TARGET_URL)
            | flag(self.file_entry_digest.is_some(), FLAG_FILE_ENTRY)
            | flag(self.draw_seed.is_some(), FLAG_DRAW_SEED));
        w.varint(c.capacity.into());
        if let Some(rate) = c.admit_per_minute {
            w.varint(rate.into());
        }
        for seconds in [
            c.active_idle_timeout_seconds,
            c.max_active_seconds,
            c.waiting_idle_timeout_seconds,
            c.heartbeat_interval_seconds,
        ] {
            w.varint(seconds.into());
        }
        if let Some(at_ms) = c.opens_at_ms {
            w.varint(at_ms);
        }
        if let Some(max) = c.max_waiting {
            w.varint(max.into());
        }
        if let Some(url) = &c.target_url {
            w.varint(url.len() as u64);
            w.bytes(url.as_bytes());
        }
        if let Some(digest) = &self.file_entry_digest {
            w.bytes(digest);
        }
        if let Some(seed) = self.draw_seed {
            w.bytes(&seed.to_u64().to_le_bytes());
        }
        if version >= SNAPSHOT_FORMAT_VERSION_3 {
            w.u8(method.index());
        }
        if version >= SNAPSHOT_FORMAT_VERSION_5 {
            w.u8(difficulty_bits);
        }
        if version == SNAPSHOT_FORMAT_VERSION {
            w.varint(c.events.len() as u64);
            for event in &c.events {
                w.u8(event.name.len() as u8);
                w.bytes(event.name.as_bytes());
                w.varint(event.starts_at_ms);
                w.varint(event.ends_at_ms.saturating_sub(event.starts_at_ms));
                w.u8(flag(event.capacity.is_some(), EVENT_CAPACITY)
                    | flag(event.admit_per_minute.is_some(), EVENT_ADMIT_PER_MINUTE)
                    | flag(event.pre_queue_minutes.is_some(), EVENT_PRE_QUEUE));
                for value in [
                    event.capacity,
                    event.admit_per_minute,
                    event.pre_queue_minutes,
                ]
                .into_iter()
                .flatten()
                {
                    w.varint(value.into());
                }
            }
        }
        w.varint(back(self.created_at_ms));

        w.varint(self.admitted_total);
        for total in self.expired_total.0 {
            w.varint(total);
        }
        if self.exists && c.admit_per_minute_at(now).is_some() {
            let bucket = self.bucket.as_ref();
            w.varint(bucket.map_or(0, TokenBucket::units));
            w.varint(back(bucket.map_or(now, TokenBucket::last_refill_ms)));
        }
        for window in [&self.admissions, &self.freed_slots] {
            let newest = now / RATE_BUCKET_MS;
            for &(number, count) in window.buckets() {
                if number == u64::MAX {
                    w.varint(0);
                } else {
                    w.varint(newest.saturating_sub(number) + 1);
                    w.varint(count.into());
                }
            }
        }

        w.varint(self.slots.len() as u64);
        // Keys are ordered by slot, like the slab: one merge pass finds each slot's key.
        let mut keys = keys.peekable();
        for (i, slot) in self.slots.iter().enumerate() {
            let state = match slot.state {
                SlotState::Free => {
                    w.u8(0);
                    continue;
                }
                SlotState::Prequeue => 1,
                SlotState::Waiting => 2,
                SlotState::Active => 3,
                SlotState::Ended => 4,
            };
            let key = keys.next_if(|&(k, _)| k as usize == i).map(|(_, key)| key);
            let admitted =
                matches!(slot.state, SlotState::Active | SlotState::Ended) && slot.aux != NEVER;
            w.u8(state
                | (slot.reason as u8) << TAG_REASON_SHIFT
                | flag(key.is_some(), TAG_KEY)
                | flag(admitted, TAG_ADMITTED));
            w.bytes(&slot.id.0);
            w.varint(back(slot.seen_ms));
            w.varint(slot.seen_ms.saturating_sub(slot.joined_at_ms));
            if admitted {
                w.varint(slot.seen_ms.saturating_sub(slot.aux));
            }
            if let Some(key) = key {
                w.u8(key.len() as u8);
                w.bytes(key.as_bytes());
            }
        }

        // `take` bounds every walk, so even a corrupted list could not loop forever here.
        let slot_count = self.slots.len();
        let free = std::iter::successors((self.free_head != NIL).then_some(self.free_head), |&i| {
            let next = self.slots.get(i as usize).map_or(NIL, |s| s.next);
            (next != NIL).then_some(next)
        });
        w.indices(free.take(slot_count));
        for list in [&self.waiting_idle, &self.active_idle, &self.ended] {
            w.indices(list.iter(&self.slots).take(slot_count));
        }
        w.indices(self.line.iter().map(|(_, i)| i));
        w.indices(self.prequeue.iter());

        let recent = &self.recent_records.order;
        w.varint(recent.len() as u64);
        for (at_ms, id) in recent {
            w.varint(back(*at_ms));
            w.bytes(&id.0);
        }
        if version >= SNAPSHOT_FORMAT_VERSION_4 {
            w.varint(self.passes.len() as u64);
            for (at_ms, hash) in self.passes.iter() {
                // Expired passes are forgotten as time moves: every expiry is after the clock.
                w.varint(at_ms.saturating_sub(now));
                w.bytes(&hash);
            }
        }
        let crc = crc32c::crc32c(&w.0);
        w.bytes(&crc.to_le_bytes());
        w.0
    }

    /// Rebuilds the room a snapshot was taken of.
    ///
    /// # Errors
    /// Bytes that are not an intact snapshot of a supported version of a room that could exist:
    /// damaged (checksum), truncated, too large, inconsistent (each list must hold exactly the
    /// sessions of its states in the order the rules rely on, ids and keys unique, every limit
    /// respected), or whose rebuilt room's digest differs from the one recorded.
    pub fn restore_snapshot(bytes: &[u8]) -> std::result::Result<Room, SnapshotError> {
        if bytes.len() as u64 > SNAPSHOT_BYTES_MAX {
            return Err(SnapshotError::TooLarge(bytes.len()));
        }
        let magic_len = bytes.len().min(SNAPSHOT_MAGIC.len());
        if bytes[..magic_len] != SNAPSHOT_MAGIC[..magic_len] {
            return Err(SnapshotError::NotASnapshot);
        }
        let version = *bytes
            .get(SNAPSHOT_MAGIC.len())
            .ok_or(SnapshotError::Truncated)?;
        if !(SNAPSHOT_FORMAT_VERSION_1..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        if bytes.len() < HEADER_BYTES + TRAILER_BYTES {
            return Err(SnapshotError::Truncated);
        }
        let (content, trailer) = bytes.split_at(bytes.len() - TRAILER_BYTES);
        let stored = u32::from_le_bytes(trailer.try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(content);
        if stored != computed {
            return Err(SnapshotError::ChecksumMismatch { stored, computed });
        }
        let mut reader = Reader(&content[HEADER_BYTES..]);
        let (room, stored) = decode_body(&mut reader, version)?;
        if !reader.0.is_empty() {
            return Err(SnapshotError::TrailingBytes(reader.0.len()));
        }
        let rebuilt = room.digest();
        if rebuilt != stored {
            return Err(SnapshotError::DigestMismatch { stored, rebuilt });
        }
        Ok(room)
    }
}

/// Slots by state, in the order of the tag's state numbers.
#[derive(Default)]
struct Counts {
    free: usize,
    prequeue: usize,
    waiting: usize,
    active: usize,
    ended: usize,
}

/// Reads the body of format `version` (1 to 5: see the module documentation).
fn decode_body(r: &mut Reader, version: u8) -> Result<(Room, [u8; 16])> {
    let digest: [u8; 16] = r.array()?;
    let id_len = r.u8()?;
    let id = std::str::from_utf8(r.take(id_len.into())?)
        .ok()
        .and_then(|id| RoomId::new(id).ok());
    let Some(id) = id else {
        return malformed("invalid room id");
    };
    let now = r.varint()?;
    if now > SNAPSHOT_CLOCK_MS_MAX {
        return malformed("clock after the year 9999");
    }

    let flags = r.u8()?;
    let known = if version == SNAPSHOT_FORMAT_VERSION_1 {
        FLAGS_KNOWN_V1
    } else {
        FLAGS_KNOWN
    };
    if flags & !known != 0 {
        return malformed("unknown flags");
    }
    let exists = flags & FLAG_EXISTS != 0;
    let config = RoomConfig {
        capacity: r.u32()?,
        admit_per_minute: r.u32_if(flags & FLAG_ADMIT_PER_MINUTE != 0)?,
        active_idle_timeout_seconds: r.u32()?,
        max_active_seconds: r.u32()?,
        waiting_idle_timeout_seconds: r.u32()?,
        heartbeat_interval_seconds: r.u32()?,
        opens_at_ms: if flags & FLAG_OPENS_AT != 0 {
            Some(r.varint()?)
        } else {
            None
        },
        max_waiting: r.u32_if(flags & FLAG_MAX_WAITING != 0)?,
        paused: flags & FLAG_PAUSED != 0,
        target_url: if flags & FLAG_TARGET_URL != 0 {
            let len = r.varint()?;
            if len > TARGET_URL_BYTES_MAX as u64 {
                return malformed("target URL too long");
            }
            let Ok(url) = std::str::from_utf8(r.take(len as usize)?) else {
                return malformed("target URL is not UTF-8");
            };
            Some(url.to_owned())
        } else {
            None
        },
        queueing_method: QueueingMethod::Fifo,
        challenge_difficulty_bits: 0,
        events: Vec::new(),
    };
    let file_entry_digest = if flags & FLAG_FILE_ENTRY != 0 {
        Some(r.array()?)
    } else {
        None
    };
    let draw_seed = if flags & FLAG_DRAW_SEED != 0 {
        Some(DrawSeed::from_u64(u64::from_le_bytes(r.array()?)))
    } else {
        None
    };
    let mut config = config;
    if version >= SNAPSHOT_FORMAT_VERSION_3 {
        config.queueing_method = match QueueingMethod::from_index(r.u8()?) {
            None => return malformed("unknown queueing method"),
            Some(QueueingMethod::Fifo) if version == SNAPSHOT_FORMAT_VERSION_3 => {
                return malformed("a fifo room in format version 3");
            }
            Some(method) => method,
        };
    }
    if version >= SNAPSHOT_FORMAT_VERSION_5 {
        config.challenge_difficulty_bits = match r.u8()? {
            0 if version == SNAPSHOT_FORMAT_VERSION_5 => {
                return malformed("no challenge in format version 5");
            }
            bits if bits > CHALLENGE_DIFFICULTY_BITS_MAX => {
                return malformed("challenge difficulty out of range");
            }
            bits => bits,
        };
    }
    if version == SNAPSHOT_FORMAT_VERSION {
        let count = r.varint()?;
        if count == 0 {
            return malformed("no events in format version 6");
        }
        if count > EVENTS_PER_ROOM_MAX as u64 {
            return malformed("more events than a room holds");
        }
        if count > (r.0.len() / EVENT_BYTES_MIN) as u64 {
            return Err(SnapshotError::Truncated);
        }
        for _ in 0..count {
            let len = r.u8()?;
            let Ok(name) = std::str::from_utf8(r.take(len.into())?) else {
                return malformed("an event name is not UTF-8");
            };
            let name = name.to_owned();
            let starts_at_ms = r.varint()?;
            let Some(ends_at_ms) = starts_at_ms.checked_add(r.varint()?) else {
                return malformed("an event ends after the year 9999");
            };
            let flags = r.u8()?;
            if flags & !EVENT_FLAGS_KNOWN != 0 {
                return malformed("unknown event flags");
            }
            config.events.push(RoomEvent {
                name,
                starts_at_ms,
                ends_at_ms,
                capacity: r.u32_if(flags & EVENT_CAPACITY != 0)?,
                admit_per_minute: r.u32_if(flags & EVENT_ADMIT_PER_MINUTE != 0)?,
                pre_queue_minutes: r.u32_if(flags & EVENT_PRE_QUEUE != 0)?,
            });
        }
    }
    // Every configuration a room holds passed this when it was applied.
    config.validate().map_err(SnapshotError::InvalidConfig)?;
    // Sessions wait in the pre-queue only while it collects: it is drawn as soon as it stops.
    let open = !config.pre_queue_collects_at(now);
    let created_at_ms = r.time_back_from(now)?;

    let admitted_total = r.total()?;
    let mut expired_total = ExpiredTotals::default();
    for total in &mut expired_total.0 {
        *total = r.total()?;
    }
    let bucket = match config.admit_per_minute_at(now) {
        Some(rate) if exists => {
            let units = r.varint()?;
            let last_refill_ms = r.time_back_from(now)?;
            let Some(bucket) = TokenBucket::restore(rate, units, last_refill_ms) else {
                return malformed("token bucket holds more than its burst");
            };
            Some(bucket)
        }
        _ => None,
    };
    let admissions = read_window(r, now)?;
    let freed_slots = read_window(r, now)?;

    // The slab.
    let slot_count = r.varint()?;
    if slot_count > u64::from(SESSIONS_PER_ROOM_MAX) {
        return malformed("more slots than a room holds");
    }
    let slot_count = slot_count as usize;
    if slot_count > r.0.len() / SLOT_BYTES_MIN {
        return Err(SnapshotError::Truncated);
    }
    let mut slots = Vec::with_capacity(slot_count);
    let mut counts = Counts::default();
    let mut keyed: Vec<(IdempotencyKey, u32)> = Vec::new();
    for i in 0..slot_count as u32 {
        let tag = r.u8()?;
        if tag == 0 {
            slots.push(Slot::FREE);
            counts.free += 1;
            continue;
        }
        let state = match tag & TAG_STATE_MASK {
            1 => SlotState::Prequeue,
            2 => SlotState::Waiting,
            3 => SlotState::Active,
            4 => SlotState::Ended,
            _ => return malformed("unknown slot state"),
        };
        let reason = (tag >> TAG_REASON_SHIFT) & TAG_REASON_MASK;
        let Some(&reason) = ExpiredReason::ALL.get(usize::from(reason)) else {
            return malformed("unknown expiry reason");
        };
        let admitted = tag & TAG_ADMITTED != 0;
        match state {
            SlotState::Prequeue | SlotState::Waiting if admitted => {
                return malformed("a waiting session has an admission time");
            }
            SlotState::Active if !admitted => {
                return malformed("an active session has no admission time");
            }
            SlotState::Prequeue | SlotState::Waiting | SlotState::Active if !exists => {
                return malformed("a live session in a room that does not exist");
            }
            SlotState::Prequeue if open => {
                return malformed("a pre-queue in a room that is open");
            }
            _ => {}
        }
        match state {
            SlotState::Prequeue => counts.prequeue += 1,
            SlotState::Waiting => counts.waiting += 1,
            SlotState::Active => counts.active += 1,
            _ => counts.ended += 1,
        }
        let id = SessionId(r.array()?);
        let seen_ms = r.time_back_from(now)?;
        let Some(joined_at_ms) = seen_ms.checked_sub(r.varint()?) else {
            return malformed("a session joined before the epoch");
        };
        let aux = if admitted {
            match seen_ms.checked_sub(r.varint()?) {
                Some(at) if at >= joined_at_ms => at,
                _ => return malformed("a session admitted before it joined"),
            }
        } else {
            // The line and the pre-queue set theirs when they are rebuilt below.
            NEVER
        };
        let has_key = tag & TAG_KEY != 0;
        if has_key {
            let len = r.u8()?;
            let key = std::str::from_utf8(r.take(len.into())?)
                .ok()
                .and_then(|key| IdempotencyKey::new(key).ok());
            let Some(key) = key else {
                return malformed("invalid idempotency key");
            };
            keyed.push((key, i));
        }
        slots.push(Slot {
            id,
            joined_at_ms,
            seen_ms,
            aux,
            prev: NIL,
            next: NIL,
            state,
            reason,
            has_key,
        });
    }

    let mut index =
        HashMap::with_capacity_and_hasher(slot_count - counts.free, SessionHasherBuilder);
    for (i, slot) in slots.iter().enumerate() {
        if slot.state != SlotState::Free && index.insert(slot.id, i as u32).is_some() {
            return malformed("a session id appears twice");
        }
    }
    // Closing a room drops its keys, and only an existing room takes joins.
    if !exists && !keyed.is_empty() {
        return malformed("idempotency keys in a room that does not exist");
    }
    let key_of_slot: BTreeMap<u32, IdempotencyKey> =
        keyed.iter().map(|(key, i)| (*i, key.clone())).collect();
    let key_text_bytes = keyed.iter().map(|(key, _)| key.as_str().len()).sum();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if keyed.windows(2).any(|pair| pair[0].0 == pair[1].0) {
        return malformed("an idempotency key names two sessions");
    }
    let keys: BTreeMap<IdempotencyKey, u32> = keyed.into_iter().collect();

    // Each slot is on exactly one of the free, waiting idle, active idle and ended lists: the
    // lengths come from the slab's counts, each entry must be of the list's states, and
    // `placed` refuses a slot twice.
    let mut placed = Bitmap::new(slot_count);
    let mut indices = Indices::new(slot_count);
    let mut free_head = NIL;
    let mut free_tail = NIL;
    for _ in 0..counts.free {
        let i = indices.next(r)?;
        if slots[i as usize].state != SlotState::Free || !placed.insert(i) {
            return malformed("free list does not hold exactly the free slots");
        }
        match free_tail {
            NIL => free_head = i,
            tail => slots[tail as usize].next = i,
        }
        free_tail = i;
    }
    let waiting_idle = read_idle_list(
        r,
        &mut slots,
        &mut placed,
        counts.prequeue + counts.waiting,
        |state| matches!(state, SlotState::Prequeue | SlotState::Waiting),
    )?;
    let active_idle = read_idle_list(r, &mut slots, &mut placed, counts.active, |state| {
        state == SlotState::Active
    })?;
    let ended = read_idle_list(r, &mut slots, &mut placed, counts.ended, |state| {
        state == SlotState::Ended
    })?;

    // The line and the pre-queue hold exactly the waiting and the pre-queue slots.
    let mut queued = Bitmap::new(slot_count);
    let mut indices = Indices::new(slot_count);
    let mut line = Line::default();
    for _ in 0..counts.waiting {
        let i = indices.next(r)?;
        if slots[i as usize].state != SlotState::Waiting || !queued.insert(i) {
            return malformed("the line does not hold exactly the waiting sessions");
        }
        slots[i as usize].aux = line.push(i);
    }
    let mut indices = Indices::new(slot_count);
    let mut prequeue = Prequeue::default();
    for _ in 0..counts.prequeue {
        let i = indices.next(r)?;
        if slots[i as usize].state != SlotState::Prequeue || !queued.insert(i) {
            return malformed("the pre-queue does not hold exactly its sessions");
        }
        slots[i as usize].aux = prequeue.push(i);
    }
    let active_by_admission: BTreeSet<(u64, u32)> = slots
        .iter()
        .enumerate()
        .filter(|(_, slot)| slot.state == SlotState::Active)
        .map(|(i, slot)| (slot.aux, i as u32))
        .collect();

    let recent_count = r.varint()?;
    if recent_count > RECORD_DEDUP_IDS_MAX as u64 {
        return malformed("more remembered record ids than a room keeps");
    }
    let recent_count = recent_count as usize;
    if recent_count > r.0.len() / RECORD_ID_BYTES_MIN {
        return Err(SnapshotError::Truncated);
    }
    let mut recent_records = RecentRecords {
        ids: HashSet::with_capacity_and_hasher(recent_count, SessionHasherBuilder),
        order: VecDeque::with_capacity(recent_count),
    };
    let mut previous_ms = 0;
    for _ in 0..recent_count {
        let at_ms = r.time_back_from(now)?;
        // Purging stops at the first id still inside the window.
        if at_ms < previous_ms {
            return malformed("remembered record ids out of order");
        }
        previous_ms = at_ms;
        let id = RecordId(r.array()?);
        if !recent_records.ids.insert(id) {
            return malformed("a record id is remembered twice");
        }
        recent_records.order.push_back((at_ms, id));
    }

    let mut passes = Passes::default();
    if version >= SNAPSHOT_FORMAT_VERSION_4 {
        let count = r.varint()?;
        if count == 0 && version == SNAPSHOT_FORMAT_VERSION_4 {
            return malformed("no passes in format version 4");
        }
        if count > PASSES_PER_ROOM_MAX as u64 {
            return malformed("more passes than a room holds");
        }
        if count > (r.0.len() / 17) as u64 {
            return Err(SnapshotError::Truncated);
        }
        let mut previous = (0, [0; 16]);
        for n in 0..count {
            let ahead = r.varint()?;
            if ahead == 0 || ahead > PASS_LIFETIME_MS_MAX {
                return malformed("a pass expiry out of range");
            }
            let pass = (now + ahead, r.array()?);
            if n > 0 && pass <= previous {
                return malformed("passes out of order");
            }
            previous = pass;
            passes.insert(pass.1, pass.0);
        }
        if passes.len() as u64 != count {
            return malformed("a pass is held twice");
        }
    }

    let room = Room {
        id,
        now_ms: now,
        exists,
        config,
        created_at_ms,
        slots,
        free_head,
        index,
        line,
        prequeue,
        waiting_idle,
        active_idle,
        ended,
        active_by_admission,
        active_count: counts.active as u32,
        keys,
        key_of_slot,
        key_text_bytes,
        recent_records,
        bucket,
        admissions,
        freed_slots,
        admitted_total,
        expired_total,
        file_entry_digest,
        draw_seed,
        passes,
    };
    Ok((room, digest))
}

/// Reads one of the lists ordered by last heartbeat (or end time) and links it through the slots.
fn read_idle_list(
    r: &mut Reader,
    slots: &mut [Slot],
    placed: &mut Bitmap,
    len: usize,
    belongs: impl Fn(SlotState) -> bool,
) -> Result<List> {
    let mut indices = Indices::new(slots.len());
    let mut list = List::default();
    let mut previous_ms = 0;
    for _ in 0..len {
        let i = indices.next(r)?;
        let slot = &slots[i as usize];
        if !belongs(slot.state) || !placed.insert(i) {
            return malformed("a session list does not hold exactly the sessions of its states");
        }
        // Expiry and forgetting stop at the first session not yet due.
        if slot.seen_ms < previous_ms {
            return malformed("a session list is out of time order");
        }
        previous_ms = slot.seen_ms;
        list.push_back(slots, i);
    }
    Ok(list)
}

fn read_window(r: &mut Reader, now: u64) -> Result<RateWindow> {
    let newest = now / RATE_BUCKET_MS;
    let mut buckets = [(u64::MAX, 0u32); RATE_BUCKETS];
    for bucket in &mut buckets {
        let age = r.varint()?;
        if age != 0 {
            let Some(number) = newest.checked_sub(age - 1) else {
                return malformed("rate bucket before the epoch");
            };
            *bucket = (number, r.u32()?);
        }
    }
    RateWindow::from_buckets(buckets).map_or(malformed("rate bucket out of place"), Ok)
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, byte: u8) {
        self.0.push(byte);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push(value as u8 | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    /// Slot indices as zigzag varints of their differences: lists built in join order are
    /// mostly ascending runs, one byte per index.
    fn indices(&mut self, indices: impl Iterator<Item = u32>) {
        let mut previous = 0i64;
        for i in indices {
            let delta = i64::from(i) - previous;
            self.varint(((delta << 1) ^ (delta >> 63)) as u64);
            previous = i64::from(i);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(SnapshotError::Truncated);
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8> {
        let (&byte, rest) = self.0.split_first().ok_or(SnapshotError::Truncated)?;
        self.0 = rest;
        Ok(byte)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    /// A varint in its shortest form: an encoding with a redundant zero group, or of more than
    /// 64 bits, is refused, so every value has exactly one encoding.
    fn varint(&mut self) -> Result<u64> {
        // Most varints here are one byte (index deltas, small ages).
        if let Some((&byte, rest)) = self.0.split_first()
            && byte < 0x80
        {
            self.0 = rest;
            return Ok(byte.into());
        }
        let mut value = 0u64;
        for (k, &byte) in self.0.iter().enumerate().take(10) {
            let group = u64::from(byte & 0x7f);
            if k == 9 && byte > 1 {
                break;
            }
            value |= group << (7 * k);
            if byte & 0x80 == 0 {
                if byte == 0 && k > 0 {
                    return malformed("varint not in its shortest form");
                }
                self.0 = &self.0[k + 1..];
                return Ok(value);
            }
        }
        if self.0.len() < 10 && self.0.iter().all(|b| b & 0x80 != 0) {
            return Err(SnapshotError::Truncated);
        }
        malformed("varint longer than 64 bits")
    }

    fn u32(&mut self) -> Result<u32> {
        u32::try_from(self.varint()?).map_or(malformed("number out of range"), Ok)
    }

    fn u32_if(&mut self, present: bool) -> Result<Option<u32>> {
        present.then(|| self.u32()).transpose()
    }

    fn total(&mut self) -> Result<u64> {
        match self.varint()? {
            total if total <= SNAPSHOT_TOTAL_MAX => Ok(total),
            _ => malformed("total out of range"),
        }
    }

    /// A time encoded as its distance back from `now`.
    fn time_back_from(&mut self, now: u64) -> Result<u64> {
        now.checked_sub(self.varint()?)
            .map_or(malformed("time before the epoch"), Ok)
    }
}

/// Reads a sequence of zigzag-delta slot indices, each checked against the slab's size.
struct Indices {
    previous: i64,
    slot_count: i64,
}

impl Indices {
    fn new(slot_count: usize) -> Self {
        Self {
            previous: 0,
            slot_count: slot_count as i64,
        }
    }

    fn next(&mut self, r: &mut Reader) -> Result<u32> {
        let zigzag = r.varint()?;
        let delta = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
        match self.previous.checked_add(delta) {
            Some(i) if (0..self.slot_count).contains(&i) => {
                self.previous = i;
                Ok(i as u32)
            }
            _ => malformed("slot index out of range"),
        }
    }
}

/// One bit per slot.
struct Bitmap(Vec<u64>);

impl Bitmap {
    fn new(bits: usize) -> Self {
        Self(vec![0; bits.div_ceil(64)])
    }

    /// Sets bit `i`; false if it was already set.
    fn insert(&mut self, i: u32) -> bool {
        let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
        let was_clear = self.0[word] & bit == 0;
        self.0[word] |= bit;
        was_clear
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Command, LeaveReason, Record};
    use crate::spare::{SPARE_HEADROOM_ENTRIES_MIN, SnapshotSpare};
    use proptest::prelude::*;

    const T0: u64 = 1_800_000_000_000;
    const MINUTE: u64 = 60_000;

    /// Drives a room with numbered records.
    struct Script {
        room: Room,
        next_id: u128,
    }

    impl Script {
        fn new() -> Self {
            Self {
                room: Room::new(RoomId::new("snap").unwrap()),
                next_id: 1,
            }
        }

        fn record(&mut self, command: Command) -> Record {
            self.next_id += 1;
            Record::new(
                RecordId::from_u128(self.next_id),
                self.room.id().clone(),
                command,
            )
        }

        fn at(&mut self, ts: u64, command: Command) -> &mut Self {
            let record = self.record(command);
            self.room.apply(&record, ts);
            self
        }

        /// Configures as nodes do, with a draw seed (a different one for each record).
        fn configure(&mut self, ts: u64, config: RoomConfig) -> &mut Self {
            let draw_seed = DrawSeed::from_u64(0x5eed_0000_0000_0000 ^ self.next_id as u64);
            self.at(ts, Command::configure(config, draw_seed))
        }

        fn join(&mut self, ts: u64, n: u128) -> &mut Self {
            self.at(ts, join(n, None))
        }

        fn join_keyed(&mut self, ts: u64, n: u128, key: &str) -> &mut Self {
            self.at(ts, join(n, Some(key)))
        }

        fn leave(&mut self, ts: u64, n: u128, reason: LeaveReason) -> &mut Self {
            self.at(
                ts,
                Command::Leave {
                    session: SessionId::from_u128(n),
                    reason,
                },
            )
        }

        fn heartbeat(&mut self, ts: u64, ns: &[u128]) -> &mut Self {
            let sessions = ns.iter().map(|&n| SessionId::from_u128(n)).collect();
            self.at(ts, Command::Heartbeat { sessions })
        }

        fn done(&mut self) -> Room {
            self.room.clone()
        }
    }

    fn join(n: u128, key: Option<&str>) -> Command {
        Command::Join {
            session: SessionId::from_u128(n),
            idempotency_key: key.map(|k| IdempotencyKey::new(k).unwrap()),
        }
    }

    fn long_timeouts(capacity: u32) -> RoomConfig {
        RoomConfig {
            active_idle_timeout_seconds: 3_600,
            max_active_seconds: 7_200,
            waiting_idle_timeout_seconds: 3_600,
            target_url: Some("https://tickets.example.com/select".into()),
            ..RoomConfig::with_capacity(capacity)
        }
    }

    /// Rooms in as many different states as the rules allow.
    fn samples() -> Vec<(&'static str, Room)> {
        let mut rooms = vec![("vacant", Room::new(RoomId::new("snap").unwrap()))];
        rooms.push((
            "configured, empty",
            Script::new().configure(T0, long_timeouts(2)).done(),
        ));
        let mut s = Script::new();
        s.configure(T0, long_timeouts(3));
        for n in 0..40 {
            s.join(T0 + (n as u64 / 7) * 100, n);
        }
        s.join_keyed(T0 + 1_000, 100, "key-a")
            .join_keyed(T0 + 1_000, 101, "key-b")
            .leave(T0 + 2_000, 1, LeaveReason::Completed)
            .leave(T0 + 2_000, 30, LeaveReason::Left)
            .heartbeat(T0 + 3_000, &[5, 3, 100, 0, 17])
            .at(
                T0 + 3_000,
                Command::Evict {
                    session: SessionId::from_u128(12),
                },
            );
        rooms.push(("line, keys, active and ended", s.done()));
        // Sessions admitted in the same millisecond, on reused slots out of order: the order
        // they end in depends on slot indices.
        let mut s = Script::new();
        s.configure(T0, long_timeouts(10));
        for n in 0..10 {
            s.join(T0, n);
        }
        for n in [3, 7, 1, 8] {
            s.leave(T0 + 1, n, LeaveReason::Left);
        }
        s.heartbeat(T0 + 15 * MINUTE, &[0, 2, 4, 5, 6, 9]);
        s.at(T0 + 16 * MINUTE, Command::Tick);
        for n in 20..23 {
            s.join(T0 + 16 * MINUTE, n);
        }
        rooms.push(("free slots reused, one left free", s.done()));
        let mut s = Script::new();
        s.configure(
            T0,
            RoomConfig {
                opens_at_ms: Some(T0 + 10 * MINUTE),
                ..long_timeouts(5)
            },
        );
        for n in 0..20 {
            s.join(T0 + n as u64, n);
        }
        s.leave(T0 + 100, 4, LeaveReason::Left);
        rooms.push(("pre-queue before opening", s.done()));
        let mut s = Script::new();
        s.configure(T0, long_timeouts(2));
        for n in 0..5 {
            s.join(T0, n);
        }
        s.configure(
            T0 + 10,
            RoomConfig {
                opens_at_ms: Some(T0 + MINUTE),
                ..long_timeouts(2)
            },
        );
        for n in 10..15 {
            s.join(T0 + 20, n);
        }
        rooms.push(("line and pre-queue at once", s.done()));
        let mut s = Script::new();
        s.configure(
            T0,
            RoomConfig {
                paused: true,
                max_waiting: Some(8),
                ..long_timeouts(4)
            },
        );
        for n in 0..10 {
            s.join(T0 + 5, n);
        }
        rooms.push(("paused, full", s.done()));
        let mut s = Script::new();
        s.configure(
            T0,
            RoomConfig {
                admit_per_minute: Some(130),
                ..long_timeouts(50)
            },
        );
        for n in 0..30 {
            s.join(T0 + n as u64 * 97, n);
        }
        s.at(T0 + 5_555, Command::Tick);
        rooms.push(("rate limited", s.done()));
        let mut s = Script::new();
        s.configure(T0, long_timeouts(2));
        for n in 0..6 {
            s.join_keyed(T0 + 1, n, &format!("k{n}"));
        }
        s.at(T0 + 2, Command::CloseRoom);
        rooms.push(("closed", s.done()));
        let mut s = Script::new();
        s.configure(T0, long_timeouts(2));
        for n in 0..6 {
            s.join(T0 + 1, n);
        }
        s.at(T0 + 2, Command::CloseRoom);
        s.configure(T0 + 3, long_timeouts(1)).join(T0 + 4, 50);
        rooms.push(("reopened after a close", s.done()));
        let mut s = Script::new();
        s.configure(T0, RoomConfig::with_capacity(1));
        for n in 0..4 {
            s.join(T0, n);
        }
        s.at(T0 + 100 * MINUTE, Command::Tick);
        rooms.push(("everyone timed out and forgotten", s.done()));
        let mut s = Script::new();
        let from_file = Command::ConfigureRoomFromFile {
            config: long_timeouts(2),
            file_entry_digest: long_timeouts(2).digest(),
        };
        s.at(T0, from_file);
        for n in 0..5 {
            s.join(T0 + 1, n);
        }
        // An operator's pause through the API: the file entry's digest stays.
        s.configure(
            T0 + 2,
            RoomConfig {
                paused: true,
                ..long_timeouts(2)
            },
        );
        rooms.push(("from a rooms file, then paused", s.done()));
        for method in [
            QueueingMethod::Random,
            QueueingMethod::Passthrough,
            QueueingMethod::Reject,
        ] {
            let mut s = Script::new();
            s.configure(T0, long_timeouts(2));
            for n in 0..6 {
                s.join(T0 + 1, n);
            }
            let config = RoomConfig {
                queueing_method: method,
                ..long_timeouts(3)
            };
            s.configure(T0 + 2, config).join(T0 + 3, 10);
            s.leave(T0 + 4, 0, LeaveReason::Completed);
            rooms.push((method.as_str(), s.done()));
        }
        for (name, method, bits, passes) in [
            ("challenged", QueueingMethod::Fifo, 20, false),
            (
                "challenged, random, with passes",
                QueueingMethod::Random,
                CHALLENGE_DIFFICULTY_BITS_MAX,
                true,
            ),
        ] {
            let mut s = Script::new();
            let config = RoomConfig {
                queueing_method: method,
                challenge_difficulty_bits: bits,
                ..long_timeouts(2)
            };
            s.configure(T0, config);
            for n in 0..4 {
                s.join(T0 + 1, n);
            }
            if passes {
                s.at(
                    T0 + 2,
                    Command::IssuePasses {
                        passes: vec![[1; 16], [2; 16]],
                        expires_at_ms: T0 + MINUTE,
                    },
                );
            }
            rooms.push((name, s.done()));
        }
        // A sale day: an event running on its own capacity and rate, the next one's pre-queue
        // collecting.
        let mut s = Script::new();
        s.configure(T0, scheduled(T0));
        for n in 0..6 {
            s.join(T0 + MINUTE + n as u64, n);
        }
        for n in 10..14 {
            s.join(T0 + 4 * MINUTE + n as u64, n);
        }
        rooms.push(("scheduled events", s.done()));
        rooms
    }

    /// Two events from `t0`: "first" from 1 to 3 minutes after it (capacity 2, 30 a minute),
    /// "second" from 5 to 9 minutes (capacity 4, a 2-minute pre-queue).
    fn scheduled(t0: u64) -> RoomConfig {
        RoomConfig {
            events: vec![
                RoomEvent {
                    capacity: Some(2),
                    admit_per_minute: Some(30),
                    ..RoomEvent::new("first", t0 + MINUTE, t0 + 3 * MINUTE)
                },
                RoomEvent {
                    capacity: Some(4),
                    pre_queue_minutes: Some(2),
                    ..RoomEvent::new("second", t0 + 5 * MINUTE, t0 + 9 * MINUTE)
                },
            ],
            ..long_timeouts(1)
        }
    }

    /// Everything observable through the public API is equal.
    fn assert_same(a: &Room, b: &Room, context: &str) {
        assert_eq!(a.digest(), b.digest(), "{context}: digest");
        assert_eq!(a.stats(), b.stats(), "{context}: stats");
        assert_eq!(a.now_ms(), b.now_ms(), "{context}: clock");
        assert_eq!(a.exists(), b.exists(), "{context}: exists");
        assert_eq!(a.last_config(), b.last_config(), "{context}: config");
        assert_eq!(a.is_vacant(), b.is_vacant(), "{context}: vacant");
        assert_eq!(a.draw_seed(), b.draw_seed(), "{context}: draw seed");
        let mut ids: Vec<SessionId> = a.session_ids().collect();
        ids.sort_unstable();
        let mut ids_b: Vec<SessionId> = b.session_ids().collect();
        ids_b.sort_unstable();
        assert_eq!(ids, ids_b, "{context}: sessions");
        for id in &ids {
            assert_eq!(a.view(id), b.view(id), "{context}: view of {id:?}");
        }
        for key in a.keys.keys() {
            assert_eq!(
                a.session_for_idempotency_key(key),
                b.session_for_idempotency_key(key),
                "{context}: key {key:?}"
            );
        }
    }

    /// Records that exercise what a snapshot must carry: new joins take free slots, same-ms
    /// admissions end together, keys replay, time runs past every deadline.
    fn later_records(room: &Room) -> Vec<(Record, u64)> {
        let now = room.now_ms();
        let mut out = Vec::new();
        let mut id = 1_000_000u128;
        let mut push = |command: Command, ts: u64| {
            id += 1;
            out.push((
                Record::new(RecordId::from_u128(id), room.id().clone(), command),
                ts,
            ));
        };
        for n in 0..6 {
            push(join(500 + n, (n == 2).then_some("key-a")), now + 1);
        }
        push(join(600, Some("k1")), now + 2);
        push(
            Command::Heartbeat {
                sessions: (0..50).map(SessionId::from_u128).collect(),
            },
            now + 10,
        );
        push(
            Command::Leave {
                session: SessionId::from_u128(2),
                reason: LeaveReason::Completed,
            },
            now + 20,
        );
        push(Command::ConfigureRoom(long_timeouts(20)), now + 30);
        let draw_seed = DrawSeed::from_u64(0xfeed);
        let reopening = RoomConfig {
            opens_at_ms: Some(now + 40),
            ..long_timeouts(20)
        };
        push(
            Command::ConfigureRoomSeeded {
                config: reopening,
                draw_seed,
            },
            now + 31,
        );
        for minutes in [1, 5, 11, 30, 61, 125, 200] {
            push(Command::Tick, now + minutes * MINUTE);
            push(
                join(700 + u128::from(minutes), None),
                now + minutes * MINUTE,
            );
        }
        push(Command::CloseRoom, now + 300 * MINUTE);
        push(Command::Tick, now + 400 * MINUTE);
        out
    }

    #[test]
    fn round_trip_is_exact() {
        for (name, room) in samples() {
            let bytes = room.encode_snapshot();
            let mut restored =
                Room::restore_snapshot(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_same(&room, &restored, name);
            assert_eq!(restored.encode_snapshot(), bytes, "{name}: re-encoding");
            let mut original = room.clone();
            for (record, ts) in later_records(&room) {
                let outcome = original.apply(&record, ts);
                assert_eq!(restored.apply(&record, ts), outcome, "{name}: {record:?}");
                assert_same(&original, &restored, name);
                assert_eq!(
                    restored.encode_snapshot(),
                    original.encode_snapshot(),
                    "{name}: after {record:?}"
                );
            }
        }
    }

    /// `clone_from` (how a node copies a room into a spare before encoding it) gives the same
    /// room whatever the spare held before.
    #[test]
    fn clone_from_is_exact() {
        let rooms = samples();
        for (name, room) in &rooms {
            for (_, spare) in &rooms {
                let mut spare = spare.clone();
                spare.clone_from(room);
                assert_same(room, &spare, name);
                assert_eq!(spare.encode_snapshot(), room.encode_snapshot(), "{name}");
                let mut original = room.clone();
                for (record, ts) in later_records(room) {
                    assert_eq!(spare.apply(&record, ts), original.apply(&record, ts));
                }
                assert_eq!(
                    spare.encode_snapshot(),
                    original.encode_snapshot(),
                    "{name}"
                );
            }
        }
    }

    /// A copy through a `SnapshotSpare` encodes to the room's own bytes, whatever the spare
    /// copied before.
    #[test]
    fn spare_copies_encode_like_their_rooms() {
        let rooms = samples();
        let mut spare = SnapshotSpare::new();
        for (name, room) in &rooms {
            for (_, previous) in &rooms {
                spare.prepare(&previous.sizes());
                spare = spare.copy(previous).expect("prepared").into_spare();
                spare.prepare(&room.sizes());
                let copy = spare.copy(room).expect("a prepared spare holds the room");
                assert_eq!(copy.encode_snapshot(), room.encode_snapshot(), "{name}");
                assert_eq!(copy.digest(), room.digest(), "{name}");
                assert_eq!(copy.room_id(), room.id(), "{name}");
                spare = copy.into_spare();
            }
        }
    }

    /// A room that outgrew its spare's headroom is not copied (the caller prepares again);
    /// `copy_allocating` copies it anyway.
    #[test]
    fn a_spare_too_small_copies_nothing() {
        let mut s = Script::new();
        s.configure(T0, long_timeouts(1));
        let small = s.room.clone();
        for n in 0..(2 * SPARE_HEADROOM_ENTRIES_MIN as u128) {
            s.join(T0 + 1, n);
        }
        let big = s.done();
        let mut spare = SnapshotSpare::new();
        spare.prepare(&small.sizes());
        assert!(spare.holds(&small));
        let spare = spare.copy(&big).expect_err("outgrown");
        assert!(!spare.holds(&big));
        let copy = spare.copy_allocating(&big);
        assert_eq!(copy.encode_snapshot(), big.encode_snapshot());
        let mut spare = copy.into_spare();
        spare.prepare(&big.sizes());
        assert!(spare.holds(&big));
        // Growth within the headroom still fits.
        let grown = s.join(T0 + 2, 1_000_000).join(T0 + 2, 1_000_001).done();
        assert!(spare.holds(&grown));
    }

    #[test]
    fn compact() {
        let mut s = Script::new();
        s.configure(T0, long_timeouts(1));
        for n in 0..10_000 {
            s.join(T0 + n as u64 / 10, n);
        }
        let bytes = s.room.encode_snapshot();
        assert!(bytes.len() < 10_000 * 23, "{} bytes", bytes.len());
    }

    fn error(bytes: &[u8]) -> Option<SnapshotError> {
        Room::restore_snapshot(bytes).err()
    }

    /// Recomputes the trailer after a test changed the bytes before it.
    fn reseal(bytes: &mut [u8]) {
        let end = bytes.len() - TRAILER_BYTES;
        let crc = crc32c::crc32c(&bytes[..end]);
        bytes[end..].copy_from_slice(&crc.to_le_bytes());
    }

    const DIGEST_AT: usize = HEADER_BYTES;

    /// A room touching every section of the format: a free slot, a pre-queue, a line, an active
    /// session with a key, an ended one, a token bucket, both rate windows, a remembered record.
    fn tiny() -> Room {
        let mut s = Script::new();
        s.room = Room::new(RoomId::new("r").unwrap());
        let config = RoomConfig {
            admit_per_minute: Some(60),
            target_url: Some("https://x".into()),
            ..RoomConfig::with_capacity(1)
        };
        // Seedless records, as builds before secret seeds wrote them: the pinned version 1
        // bytes below are of this room.
        s.at(0, Command::ConfigureRoom(config.clone()));
        s.join(0, 1).leave(0, 1, LeaveReason::Completed);
        for n in 2..=5 {
            s.join(0, n).leave(0, n, LeaveReason::Left);
        }
        s.at(900_000, Command::Tick)
            .join_keyed(900_000, 6, "k")
            .join(900_000, 7)
            .join(900_500, 8)
            .leave(900_500, 8, LeaveReason::Left);
        let config = RoomConfig {
            opens_at_ms: Some(2_000_000),
            ..config
        };
        let from_file = Command::ConfigureRoomFromFile {
            config,
            file_entry_digest: [0xf1; 16],
        };
        s.at(901_000, from_file).join(901_000, 9);
        s.done()
    }

    /// Pins version 1's bytes, as builds before secret seeds wrote them: they must still restore,
    /// to the same room. The digest inside is pinned with them: `Room::digest` is part of the
    /// format (and leaves out the draw seed, so a room without one digests as it did).
    #[test]
    fn version_1_still_restores() {
        let room = tiny();
        assert_eq!(room.draw_seed(), None);
        let id = |n: u8| {
            let mut id = [0u8; 16];
            id[0] = n;
            id
        };
        let mut expected: Vec<u8> = b"WRSN\x01".to_vec();
        expected.extend([
            197, 87, 97, 166, 59, 135, 1, 156, 213, 202, 76, 228, 21, 121, 170, 248,
        ]); // digest
        expected.extend([1, b'r']); // room id
        expected.extend([0x88, 0xff, 0x36]); // now: 901 000
        expected.push(0b0110_1101); // exists, admitPerMinute, opensAt, targetUrl, file entry
        expected.extend([1, 60, 60, 0xd8, 0x04, 120, 10]); // capacity .. heartbeat interval
        expected.extend([0x80, 0x89, 0x7a]); // opensAt: 2 000 000
        expected.push(9);
        expected.extend(b"https://x");
        expected.extend([0xf1; 16]); // the file entry's digest
        expected.extend([0x88, 0xff, 0x36]); // created 901 000 ms ago
        expected.extend([2, 0, 5, 1, 0, 0]); // admitted; expired by timeout, left, completed, ...
        expected.extend([0xe0, 0xd4, 0x03, 0]); // bucket: 60 000 units, refilled now
        // Admission window: ring slot 0 holds bucket 180 (t = 900 000): 1 admission.
        expected.extend([1, 1]);
        expected.extend([0; 59]);
        // Freed-slot window: ring slot 0 holds bucket 0 (t = 0, age 181): 1 completion.
        expected.extend([0xb5, 0x01, 1]);
        expected.extend([0; 59]);
        // The slab. Sessions 1..=5 ended at t = 0 and were forgotten at 900 000 (slots 0..5
        // freed, free list 4, 3, 2, 1, 0); 6, 7, 8 and 9 then took slots 4, 3, 2 and 1.
        expected.push(5);
        expected.push(0); // slot 0: free
        expected.push(1); // slot 1: pre-queue
        expected.extend(id(9));
        expected.extend([0, 0]); // seen now, joined when last seen
        expected.push(4 | 1 << 3); // slot 2: ended, left
        expected.extend(id(8));
        expected.extend([0xf4, 0x03, 0]); // ended 500 ms ago
        expected.push(2); // slot 3: waiting
        expected.extend(id(7));
        expected.extend([0xe8, 0x07, 0]); // seen 1 000 ms ago
        expected.push(3 | 1 << 6 | 1 << 7); // slot 4: active, with a key, admitted
        expected.extend(id(6));
        expected.extend([0xe8, 0x07, 0, 0, 1, b'k']); // admitted when last seen; key "k"
        expected.push(0); // free list: slot 0
        expected.extend([6, 3]); // waiting idle list: slots 3 (+3), 1 (-2)
        expected.push(8); // active idle list: slot 4 (+4)
        expected.push(4); // ended list: slot 2 (+2)
        expected.push(6); // line: slot 3
        expected.push(2); // pre-queue: slot 1
        expected.extend([1, 0]); // one remembered record id, remembered now
        expected.extend(RecordId::from_u128(18).0);
        expected.extend([126, 23, 80, 214]); // CRC-32C
        let restored = Room::restore_snapshot(&expected).unwrap();
        assert_same(&room, &restored, "pinned");
        assert_eq!(restored.draw_seed(), None);
        // This build writes the same room as version 2: the same body.
        assert_eq!(room.encode_snapshot(), as_current_version(&expected));
        assert_eq!(restored.encode_snapshot(), as_current_version(&expected));
        // Bit 7 of the flags (a draw seed) did not exist in version 1.
        let mut flagged = expected.clone();
        flagged[FLAGS_AT_IN_TINY] |= FLAG_DRAW_SEED;
        reseal(&mut flagged);
        assert_eq!(
            error(&flagged),
            Some(SnapshotError::Malformed("unknown flags"))
        );
    }

    /// Where `tiny()`'s flags are: after the header, the digest, the room id "r" and the clock.
    const FLAGS_AT_IN_TINY: usize = HEADER_BYTES + 16 + 2 + 3;

    /// A version 1 snapshot as this build writes the same (`fifo`) room: version byte 2,
    /// checksum recomputed (a room without a draw seed has the same body in both).
    fn as_current_version(bytes: &[u8]) -> Vec<u8> {
        let mut bytes = bytes.to_vec();
        if bytes.get(SNAPSHOT_MAGIC.len()) == Some(&SNAPSHOT_FORMAT_VERSION_1) {
            bytes[SNAPSHOT_MAGIC.len()] = SNAPSHOT_FORMAT_VERSION_2;
            reseal(&mut bytes);
        }
        bytes
    }

    /// Pins version 3's bytes: `tiny()` with a draw seed and a queueing method other than
    /// `fifo`, which is version 2's body with the method's index after the seed (and the method
    /// in the digest). Version 2 (and 1) snapshots restore as `fifo` rooms; a `fifo` room is
    /// written as version 2, and version 3 refuses a `fifo` room or an unknown method.
    #[test]
    fn version_3_is_stable() {
        let mut v2 = tiny();
        v2.draw_seed = Some(DrawSeed::from_u64(0x0807_0605_0403_0201));
        let v2_bytes = v2.encode_snapshot();
        assert_eq!(v2_bytes[4], 2, "a fifo room is written as version 2");
        let restored = Room::restore_snapshot(&v2_bytes).unwrap();
        assert_eq!(restored.last_config().queueing_method, QueueingMethod::Fifo);

        let mut room = v2.clone();
        room.config.queueing_method = QueueingMethod::Random;
        let bytes = room.encode_snapshot();
        let method_at = FLAGS_AT_IN_TINY + 1 + 7 + 3 + 1 + 9 + 16 + 8;
        let mut expected = v2_bytes[..v2_bytes.len() - TRAILER_BYTES].to_vec();
        expected[4] = 3;
        expected[HEADER_BYTES..HEADER_BYTES + 16].copy_from_slice(&room.digest());
        expected.insert(method_at, 1); // random
        expected.extend(PINNED_V3_CRC);
        assert_eq!(bytes, expected);
        assert_ne!(room.digest(), v2.digest(), "the digest covers the method");
        let restored = Room::restore_snapshot(&bytes).unwrap();
        assert_same(&room, &restored, "pinned");
        assert_eq!(restored.draw_seed(), room.draw_seed());

        for (method, why) in [
            (0, "a fifo room in format version 3"),
            (5, "unknown queueing method"),
        ] {
            let mut bad = bytes.clone();
            bad[method_at] = method;
            reseal(&mut bad);
            assert_eq!(error(&bad), Some(SnapshotError::Malformed(why)));
        }
        // Version 2 has no method byte: the same body under version byte 2 is refused.
        let mut bad = bytes.clone();
        bad[4] = 2;
        reseal(&mut bad);
        assert!(error(&bad).is_some());
    }

    const PINNED_V3_CRC: [u8; 4] = [194, 244, 196, 153];

    /// Version 4: version 3's body with the method byte whatever the method (`fifo` here), and
    /// the passes after the remembered record ids; written only for a room holding passes.
    #[test]
    fn version_4_is_stable() {
        let mut v2 = tiny();
        v2.draw_seed = Some(DrawSeed::from_u64(0x0807_0605_0403_0201));
        let v2_bytes = v2.encode_snapshot();
        let mut room = v2.clone();
        room.passes.insert([0xaa; 16], room.now_ms + 300);
        room.passes.insert([0xbb; 16], room.now_ms + 5);
        let bytes = room.encode_snapshot();
        let method_at = FLAGS_AT_IN_TINY + 1 + 7 + 3 + 1 + 9 + 16 + 8;
        let mut expected = v2_bytes[..v2_bytes.len() - TRAILER_BYTES].to_vec();
        expected[4] = 4;
        expected[HEADER_BYTES..HEADER_BYTES + 16].copy_from_slice(&room.digest());
        expected.insert(method_at, 0); // fifo
        expected.push(2); // two passes, by expiry
        expected.push(5);
        expected.extend([0xbb; 16]);
        expected.extend([0xac, 0x02]); // 300
        expected.extend([0xaa; 16]);
        let crc = crc32c::crc32c(&expected);
        assert_eq!(crc.to_le_bytes(), PINNED_V4_CRC);
        expected.extend(PINNED_V4_CRC);
        assert_eq!(bytes, expected);
        assert_ne!(room.digest(), v2.digest(), "the digest covers the passes");
        let restored = Room::restore_snapshot(&bytes).unwrap();
        assert_same(&room, &restored, "pinned");
        assert_eq!(restored.passes, room.passes);

        // Out of order, expired, or none at all: refused.
        let count_at = bytes.len() - TRAILER_BYTES - (1 + 16 + 2 + 16) - 1;
        let mut bad = bytes.clone();
        bad[count_at + 1] = 0; // an expiry at the clock
        reseal(&mut bad);
        assert_eq!(
            error(&bad),
            Some(SnapshotError::Malformed("a pass expiry out of range"))
        );
        let mut bad = bytes.clone();
        bad[count_at + 2..count_at + 18].copy_from_slice(&[0xaa; 16]); // the second's hash
        reseal(&mut bad);
        assert_eq!(
            error(&bad),
            Some(SnapshotError::Malformed("a pass is held twice"))
        );
        let mut bad = bytes[..count_at].to_vec();
        bad.push(0);
        bad.extend([0; 4]);
        reseal(&mut bad);
        assert_eq!(
            error(&bad),
            Some(SnapshotError::Malformed("no passes in format version 4"))
        );
    }

    const PINNED_V4_CRC: [u8; 4] = [72, 228, 15, 190];

    /// Pins version 2's bytes: `tiny()` with a draw seed, which takes flag bit 7 and 8 bytes
    /// after the file entry's digest. If this changes, snapshots written by this build no longer
    /// restore. (The rest is `tiny()`'s encoding without a seed, which `version_1_still_restores`
    /// pins: version 1's bytes under version byte 2.)
    #[test]
    fn version_2_is_stable() {
        let mut room = tiny();
        room.draw_seed = Some(DrawSeed::from_u64(0x0807_0605_0403_0201));
        let unseeded = tiny().encode_snapshot();
        let seed_at = FLAGS_AT_IN_TINY + 1 + 7 + 3 + 1 + 9 + 16;
        let mut expected = unseeded[..unseeded.len() - TRAILER_BYTES].to_vec();
        assert_eq!(expected[4], 2, "version");
        assert_eq!(expected[FLAGS_AT_IN_TINY], 0b0110_1101);
        expected[FLAGS_AT_IN_TINY] = 0b1110_1101; // ... and a draw seed
        assert_eq!(&expected[seed_at - 16..seed_at], &[0xf1; 16]); // the file entry's digest
        expected.splice(seed_at..seed_at, [1, 2, 3, 4, 5, 6, 7, 8]); // the seed
        expected.extend(PINNED_V2_CRC);
        assert_eq!(room.encode_snapshot(), expected);
        let restored = Room::restore_snapshot(&expected).unwrap();
        assert_same(&room, &restored, "pinned");
        assert_eq!(restored.draw_seed(), room.draw_seed());
    }

    const PINNED_V2_CRC: [u8; 4] = [129, 250, 189, 203];

    /// A restored room keeps its secret seed, and so draws its pre-queue in the order the room
    /// it was taken of draws it (replicas restored from snapshots and replicas that replayed the
    /// log agree).
    #[test]
    fn a_restored_room_keeps_its_draw_seed() {
        let opens = T0 + 10 * MINUTE;
        let mut s = Script::new();
        s.configure(
            T0,
            RoomConfig {
                opens_at_ms: Some(opens),
                ..long_timeouts(1)
            },
        );
        for n in 0..200 {
            s.join(T0 + n as u64, n);
        }
        let room = s.done();
        assert!(room.draw_seed().is_some());
        let mut restored = Room::restore_snapshot(&room.encode_snapshot()).unwrap();
        assert_eq!(restored.draw_seed(), room.draw_seed());
        let mut original = room.clone();
        let tick = Record::new(
            RecordId::from_u128(u128::MAX),
            room.id().clone(),
            Command::Tick,
        );
        original.apply(&tick, opens);
        restored.apply(&tick, opens);
        let order = |room: &Room| {
            let mut placed: Vec<(u64, SessionId)> = room
                .session_ids()
                .filter_map(|id| Some((room.view(&id)?.position?, id)))
                .collect();
            placed.sort_unstable();
            placed.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
        };
        assert_eq!(order(&original).len(), 199);
        assert_eq!(order(&restored), order(&original));
        // Without the seed (the public derivation), the same room draws another order.
        let mut unseeded = Room::restore_snapshot(&room.encode_snapshot()).unwrap();
        unseeded.draw_seed = None;
        unseeded.apply(&tick, opens);
        assert_ne!(order(&unseeded), order(&original));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for (name, room) in samples() {
            let bytes = room.encode_snapshot();
            for cut in 0..bytes.len() {
                assert!(
                    Room::restore_snapshot(&bytes[..cut]).is_err(),
                    "{name} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn every_damaged_byte_is_an_error() {
        for (name, room) in samples().into_iter().take(4) {
            let bytes = room.encode_snapshot();
            for at in 0..bytes.len() {
                for flip in [0x01, 0x80, 0xff] {
                    let mut damaged = bytes.clone();
                    damaged[at] ^= flip;
                    assert!(
                        Room::restore_snapshot(&damaged).is_err(),
                        "{name}: byte {at} ^ {flip:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn framing_errors() {
        let bytes = tiny().encode_snapshot();
        assert_eq!(error(b""), Some(SnapshotError::Truncated));
        assert_eq!(error(b"WRS"), Some(SnapshotError::Truncated));
        assert_eq!(error(b"WRX"), Some(SnapshotError::NotASnapshot));
        // A record is not a snapshot.
        let record = Record::new(
            RecordId::from_u128(1),
            RoomId::new("r").unwrap(),
            Command::Tick,
        );
        assert_eq!(error(&record.encode()), Some(SnapshotError::NotASnapshot));
        let mut newer = bytes.clone();
        newer[4] = SNAPSHOT_FORMAT_VERSION + 1;
        assert_eq!(
            error(&newer),
            Some(SnapshotError::UnsupportedVersion(
                SNAPSHOT_FORMAT_VERSION + 1
            ))
        );
        let mut older = bytes.clone();
        older[4] = 0;
        assert_eq!(error(&older), Some(SnapshotError::UnsupportedVersion(0)));
        let mut damaged = bytes.clone();
        damaged[30] ^= 4;
        assert!(matches!(
            Room::restore_snapshot(&damaged),
            Err(SnapshotError::ChecksumMismatch { .. })
        ));
        let mut longer = bytes.clone();
        longer.insert(bytes.len() - TRAILER_BYTES, 0);
        reseal(&mut longer);
        assert_eq!(error(&longer), Some(SnapshotError::TrailingBytes(1)));
    }

    #[test]
    fn a_wrong_digest_is_refused() {
        for (name, room) in samples() {
            let mut bytes = room.encode_snapshot();
            bytes[DIGEST_AT + 3] ^= 1;
            reseal(&mut bytes);
            let Err(SnapshotError::DigestMismatch { stored, rebuilt }) =
                Room::restore_snapshot(&bytes)
            else {
                panic!("{name}: a wrong digest was accepted");
            };
            assert_eq!(rebuilt, room.digest(), "{name}");
            assert_ne!(stored, rebuilt, "{name}");
        }
    }

    /// Rooms broken in ways the rules never produce, encoded as they are: restore must refuse
    /// each on structure, before the digest (which the encoder computed from the broken room).
    #[test]
    fn inconsistent_rooms_are_refused() {
        let base = || samples().swap_remove(2).1; // line, keys, active and ended
        let refused = |room: Room, why: &'static str| {
            assert_eq!(
                error(&room.encode_snapshot()),
                Some(SnapshotError::Malformed(why))
            );
        };
        let mut room = base();
        let first = room.slots[0].id;
        room.slots[5].id = first;
        refused(room, "a session id appears twice");

        let mut room = base();
        let i = room.waiting_idle.head as usize;
        room.slots[i].seen_ms = room.now_ms;
        refused(room, "a session list is out of time order");

        let mut room = base();
        room.exists = false;
        refused(room, "a live session in a room that does not exist");

        let mut room = samples().swap_remove(4).1; // pre-queue
        room.config.opens_at_ms = None;
        refused(room, "a pre-queue in a room that is open");

        let mut room = samples().swap_remove(8).1; // closed
        let key = IdempotencyKey::new("late").unwrap();
        room.keys.insert(key.clone(), 0);
        room.key_of_slot.insert(0, key);
        room.slots[0].has_key = true;
        refused(room, "idempotency keys in a room that does not exist");

        let mut room = base();
        let key = room.key_of_slot.first_key_value().unwrap().1.clone();
        room.key_of_slot.insert(7, key);
        room.slots[7].has_key = true;
        refused(room, "an idempotency key names two sessions");

        let mut room = base();
        let record = (room.now_ms, RecordId::from_u128(999));
        room.recent_records.order.push_front(record);
        room.recent_records.ids.insert(record.1);
        refused(room, "remembered record ids out of order");

        let mut room = base();
        let (_, id) = room.recent_records.order[0];
        room.recent_records.order.push_back((room.now_ms, id));
        refused(room, "a record id is remembered twice");

        let mut room = base();
        let i = room.active_idle.head as usize;
        room.slots[i].aux = room.slots[i].joined_at_ms - 1;
        refused(room, "a session admitted before it joined");

        let mut room = base();
        room.expired_total.0[0] = SNAPSHOT_TOTAL_MAX + 1;
        refused(room, "total out of range");

        let mut room = Room::new(RoomId::new("r").unwrap());
        room.now_ms = SNAPSHOT_CLOCK_MS_MAX + 1;
        refused(room, "clock after the year 9999");
    }

    /// A slot missing from its list, or on the wrong one: the lengths come from the slab, so the
    /// lists that follow are misread, which restore refuses somewhere.
    #[test]
    fn misplaced_slots_are_refused() {
        let room = samples().swap_remove(3).1; // free slots
        assert_eq!(
            room.slots
                .iter()
                .filter(|s| s.state == SlotState::Free)
                .count(),
            1
        );
        let mut broken = room.clone();
        broken.free_head = NIL;
        assert!(matches!(
            Room::restore_snapshot(&broken.encode_snapshot()),
            Err(SnapshotError::Malformed(_) | SnapshotError::Truncated)
        ));
        let mut broken = room.clone();
        let i = broken.active_idle.head;
        broken.slots[i as usize].state = SlotState::Waiting;
        assert!(Room::restore_snapshot(&broken.encode_snapshot()).is_err());
    }

    /// Runs a restored room through every kind of command and query: a snapshot that restores
    /// must give a room that works, whatever else it holds.
    fn exercise(mut room: Room) {
        let ids: Vec<SessionId> = room.session_ids().collect();
        for id in &ids {
            let _ = room.view(id);
        }
        let _ = room.stats().expired_total.sum();
        let now = room.now_ms();
        let mut n = u128::MAX - 100;
        let mut apply = |room: &mut Room, command: Command, ts: u64| {
            n += 1;
            let record = Record::new(RecordId::from_u128(n), room.id().clone(), command);
            room.apply(&record, ts);
            for id in &ids {
                let _ = room.view(id);
            }
            let _ = (room.stats(), room.digest());
        };
        apply(&mut room, Command::Tick, now);
        apply(&mut room, join(u128::MAX, Some("k")), now + 1);
        if let Some(&first) = ids.first() {
            apply(
                &mut room,
                Command::Heartbeat {
                    sessions: ids.iter().take(10).copied().collect(),
                },
                now + 2,
            );
            let leave = Command::Leave {
                session: first,
                reason: LeaveReason::Completed,
            };
            apply(&mut room, leave, now + 3);
            apply(&mut room, Command::Evict { session: first }, now + 4);
        }
        apply(&mut room, Command::Tick, now + 61 * MINUTE);
        apply(
            &mut room,
            Command::ConfigureRoom(RoomConfig::with_capacity(3)),
            now + 62 * MINUTE,
        );
        apply(&mut room, Command::CloseRoom, now + 63 * MINUTE);
        apply(&mut room, Command::Tick, now + 24 * 60 * MINUTE);
        let _ = room.encode_snapshot();
    }

    /// Restores `bytes`; if only the digest is wrong, puts the rebuilt room's digest in and
    /// restores again, so that what the structural checks let through is exercised too.
    fn restore_past_the_digest(bytes: &mut [u8]) -> Option<Room> {
        match Room::restore_snapshot(bytes) {
            Ok(room) => Some(room),
            Err(SnapshotError::DigestMismatch { rebuilt, .. }) => {
                bytes[DIGEST_AT..DIGEST_AT + 16].copy_from_slice(&rebuilt);
                reseal(bytes);
                Some(Room::restore_snapshot(bytes).expect("only the digest differed"))
            }
            Err(_) => None,
        }
    }

    #[derive(Clone, Debug)]
    enum Mutation {
        Set(usize, u8),
        Flip(usize, u8),
        Insert(usize, u8),
        Remove(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
            (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
            (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Insert(at, b)),
            any::<usize>().prop_map(Mutation::Remove),
        ]
    }

    /// Version 5: version 4's body with the difficulty byte after the method byte, the passes'
    /// count then 0 or more; written only for a room with a challenge.
    #[test]
    fn version_5_is_stable() {
        let mut v2 = tiny();
        v2.draw_seed = Some(DrawSeed::from_u64(0x0807_0605_0403_0201));
        let v2_bytes = v2.encode_snapshot();
        let mut room = v2.clone();
        room.config.challenge_difficulty_bits = 20;
        let bytes = room.encode_snapshot();
        let method_at = FLAGS_AT_IN_TINY + 1 + 7 + 3 + 1 + 9 + 16 + 8;
        let mut expected = v2_bytes[..v2_bytes.len() - TRAILER_BYTES].to_vec();
        expected[4] = 5;
        expected.insert(method_at, 0); // fifo
        expected.insert(method_at + 1, 20); // 20 bits
        expected.push(0); // no passes
        let crc = crc32c::crc32c(&expected);
        assert_eq!(crc.to_le_bytes(), PINNED_V5_CRC);
        expected.extend(PINNED_V5_CRC);
        assert_eq!(bytes, expected);
        // The difficulty is not in the digest (nor is the method): snapshots' checksum guards it.
        assert_eq!(room.digest(), v2.digest());
        let restored = Room::restore_snapshot(&bytes).unwrap();
        assert_same(&room, &restored, "pinned");
        assert_eq!(restored.last_config().challenge_difficulty_bits, 20);
        // Without a challenge the room is written as before challenges.
        room.config.challenge_difficulty_bits = 0;
        assert_eq!(room.encode_snapshot(), v2_bytes);

        // A difficulty of 0 or past the limit: refused.
        for (bits, why) in [
            (0, "no challenge in format version 5"),
            (
                CHALLENGE_DIFFICULTY_BITS_MAX + 1,
                "challenge difficulty out of range",
            ),
        ] {
            let mut bad = bytes.clone();
            bad[method_at + 1] = bits;
            reseal(&mut bad);
            assert_eq!(error(&bad), Some(SnapshotError::Malformed(why)), "{bits}");
        }
        // Version 4 has no difficulty byte: the same body under version byte 4 is refused.
        let mut bad = bytes.clone();
        bad[4] = 4;
        reseal(&mut bad);
        assert!(error(&bad).is_some());
    }

    const PINNED_V5_CRC: [u8; 4] = [170, 229, 206, 108];

    /// Version 6: version 5's body (the difficulty byte then 0 or more) with the events after
    /// the difficulty byte; written only for a room with events, and a room without them is
    /// written as before.
    #[test]
    fn version_6_is_stable() {
        let mut v2 = tiny();
        v2.draw_seed = Some(DrawSeed::from_u64(0x0807_0605_0403_0201));
        let v2_bytes = v2.encode_snapshot();
        let mut room = v2.clone();
        room.config.events = vec![RoomEvent {
            capacity: Some(300),
            pre_queue_minutes: Some(2),
            ..RoomEvent::new("e", 100, 200)
        }];
        let bytes = room.encode_snapshot();
        assert_eq!(bytes[4], 6, "version");
        let method_at = FLAGS_AT_IN_TINY + 1 + 7 + 3 + 1 + 9 + 16 + 8;
        let events = [
            0, 0, // fifo, no challenge
            1, 1, b'e', 100, 100, // one event "e" from 100, 100 long
            0b101, 0xac, 0x02, 2, // capacity 300 and a 2-minute pre-queue
        ];
        assert_eq!(bytes[method_at..method_at + events.len()], events);
        // Before: version 2's body, but for the digest (events are in it).
        assert_eq!(
            bytes[DIGEST_AT + 16..method_at],
            v2_bytes[DIGEST_AT + 16..method_at]
        );
        assert_ne!(room.digest(), v2.digest());
        // After: version 2's body, then no passes.
        let rest = &v2_bytes[method_at..v2_bytes.len() - TRAILER_BYTES];
        let after = method_at + events.len();
        assert_eq!(&bytes[after..after + rest.len()], rest);
        assert_eq!(bytes[after + rest.len()], 0, "no passes");
        assert_eq!(bytes.len(), after + rest.len() + 1 + TRAILER_BYTES);
        assert_eq!(bytes[bytes.len() - TRAILER_BYTES..], PINNED_V6_CRC);
        let restored = Room::restore_snapshot(&bytes).unwrap();
        assert_same(&room, &restored, "pinned");
        assert_eq!(restored.last_config().events, room.config.events);
        // Without events the room is written as before events.
        room.config.events.clear();
        assert_eq!(room.encode_snapshot(), v2_bytes);

        let refused = |at: usize, byte: u8| {
            let mut bad = bytes.clone();
            bad[at] = byte;
            reseal(&mut bad);
            error(&bad)
        };
        assert_eq!(
            refused(method_at + 2, 0),
            Some(SnapshotError::Malformed("no events in format version 6"))
        );
        assert_eq!(
            refused(method_at + 2, EVENTS_PER_ROOM_MAX as u8 + 1),
            Some(SnapshotError::Malformed("more events than a room holds"))
        );
        assert_eq!(
            refused(method_at + 7, 0b1000),
            Some(SnapshotError::Malformed("unknown event flags"))
        );
        // An event out of range (a name with a space) is an invalid configuration.
        assert!(matches!(
            refused(method_at + 4, b' '),
            Some(SnapshotError::InvalidConfig(_))
        ));
        // Version 5 has no events: the same body under version byte 5 is refused.
        let mut bad = bytes.clone();
        bad[4] = 5;
        reseal(&mut bad);
        assert!(error(&bad).is_some());
    }

    const PINNED_V6_CRC: [u8; 4] = [206, 45, 36, 17];

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Room::restore_snapshot(&bytes);
            // Behind a valid header and checksum, so that the body's parser sees them: as
            // either version this build reads.
            for version in SNAPSHOT_FORMAT_VERSION_1..=SNAPSHOT_FORMAT_VERSION {
                let mut framed = b"WRSN".to_vec();
                framed.push(version);
                framed.extend(&bytes);
                framed.extend([0; TRAILER_BYTES]);
                reseal(&mut framed);
                if let Some(room) = restore_past_the_digest(&mut framed) {
                    prop_assert_eq!(&room.encode_snapshot(), &as_current_version(&framed));
                    exercise(room);
                }
            }
        }

        /// Mutated snapshots with their checksum recomputed: the structural checks, not the
        /// CRC, must refuse them, or else the room they give must work and re-encode to the
        /// same bytes (one encoding per state).
        #[test]
        fn mutated_snapshots_never_panic(
            sample in 0usize..15,
            mutations in proptest::collection::vec(mutation(), 1..4),
        ) {
            let mut bytes = samples().swap_remove(sample).1.encode_snapshot();
            // Body only: the header and trailer have their own tests.
            for mutation in mutations {
                let body = bytes.len() - HEADER_BYTES - TRAILER_BYTES;
                let at = |at: usize| HEADER_BYTES + at % body.max(1);
                match mutation {
                    Mutation::Set(i, b) => bytes[at(i)] = b,
                    Mutation::Flip(i, bit) => bytes[at(i)] ^= 1 << bit,
                    Mutation::Insert(i, b) => bytes.insert(at(i), b),
                    Mutation::Remove(i) if body > 1 => {
                        bytes.remove(at(i));
                    }
                    Mutation::Remove(_) => {}
                }
            }
            reseal(&mut bytes);
            if let Some(room) = restore_past_the_digest(&mut bytes) {
                prop_assert_eq!(&room.encode_snapshot(), &bytes);
                exercise(room);
            }
        }
    }
}
