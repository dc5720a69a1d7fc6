//! Copying a room to snapshot it without stalling the room: [`Room::sizes`], [`SnapshotSpare`],
//! [`SnapshotCopy`].
//!
//! A node encodes a room's snapshot from a copy taken under the room's read lock, which holds the
//! applier off the room for as long as the copy takes; the encoding then runs elsewhere. What
//! makes a copy slow is fresh memory, not copying: the kernel maps every new page on first touch
//! (at a million waiting, a clone into fresh memory takes ~50 ms, the same copy into memory
//! already mapped ~14 ms, see the crate README). So the copy goes into memory prepared
//! beforehand, outside the lock:
//!
//! 1. under a brief read lock, [`Room::sizes`] (O(1)) reads how much the copy will fill;
//! 2. with no lock, [`SnapshotSpare::prepare`] gives each of the spare's buffers room for that
//!    plus headroom (for what the room may grow by until step 3: `SPARE_HEADROOM_PER_MILLE`),
//!    and writes to every page of them, so the kernel maps them now;
//! 3. under the read lock, [`SnapshotSpare::copy`] copies the room into those buffers. If the
//!    room outgrew them meanwhile it copies nothing and hands the spare back: the caller releases
//!    the lock and prepares again (or, as a last resort, [`SnapshotSpare::copy_allocating`]);
//! 4. anywhere, [`SnapshotCopy::encode_snapshot`]; then [`SnapshotCopy::into_spare`] gives the
//!    buffers back for the next snapshot (of any room).
//!
//! # What is copied
//! Only what the snapshot encodes and `Room::digest` reads: configuration (and the draw seed),
//! clock, counters, rate state, the slab, the line, the pre-queue, the session lists, the idempotency keys, and the
//! remembered record ids in their order. Not the session index (id → slot), the set of active
//! sessions by admission time, or the set of remembered record ids: restore rebuilds those from
//! the rest, and the index alone is ~40 % of a waiting room's memory. The idempotency keys are
//! copied flat, in slot order (their text one after the other, and a slot and length per key),
//! not as the room's two B-trees: those cannot be reserved, and cloning them allocates node by
//! node and increments each key's reference count, ~70 ns a key (the waiting page sends a key
//! with every join: ~70 ms at a million waiting). So a copy is not a room, and the types say so:
//! a [`SnapshotCopy`] can only be encoded and digested, and a [`SnapshotSpare`] holds no room at
//! all, only memory. (`Room::encode_snapshot` and `Room::digest` read the keys through
//! `KeysBySlot` and none of the three left out; the tests compare a copy's bytes with the
//! room's for every sample room, and the model test after every step.)
//!
//! Under the lock the copy allocates nothing but the room id and the target URL when they
//! changed since the last copy (a few bytes). Its time is a memory copy (~8 ms a million
//! sessions) plus ~25–30 ns a key: walking the slot → key B-tree and copying each key's text from
//! its own allocation. A room whose million sessions all have keys stays under 50 ms, not under
//! 15; if that is not enough, the room itself should keep its keys' text in one buffer (keys as
//! offsets into it), which a copy would take in one memory copy.

use std::collections::VecDeque;
use std::mem::MaybeUninit;

use crate::ids::{RecordId, RoomId};
use crate::limits::{IDEMPOTENCY_KEY_BYTES_MAX, RECORD_DEDUP_IDS_MAX, SESSIONS_PER_ROOM_MAX};
use crate::room::{KeysBySlot, Room, Slot};

/// Headroom `prepare` adds to each buffer, in thousandths of the size read: what the room may
/// grow by between `Room::sizes` and the copy. That gap is the time `prepare` takes (a few
/// milliseconds, tens when it maps a million sessions' worth of fresh memory) plus scheduling;
/// 1/8 of a million sessions is 125 000 joins, far more than one room's log applies meanwhile.
pub const SPARE_HEADROOM_PER_MILLE: usize = 125;
/// ...and at least this many entries: a small room's growth is a larger fraction of it.
pub const SPARE_HEADROOM_ENTRIES_MIN: usize = 4096;
/// Distance between the writes that make the kernel map a buffer's pages: the smallest page size
/// of the platforms waitroom runs on (on larger pages it writes each page several times, which
/// costs nothing more than a store each).
const PAGE_BYTES: usize = 4096;

const _: () = assert!(
    IDEMPOTENCY_KEY_BYTES_MAX <= u8::MAX as usize,
    "a copied key's length is a byte"
);

/// How much a copy of a room fills: the lengths of the buffers `SnapshotSpare::copy` copies into.
/// Read with [`Room::sizes`]; only [`SnapshotSpare::prepare`] uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomSizes {
    slots: usize,
    line_entries: usize,
    line_words: usize,
    prequeue_entries: usize,
    recent_records: usize,
    keys: usize,
    key_text_bytes: usize,
}

impl Room {
    /// How much a copy of this room fills, to prepare a [`SnapshotSpare`] for it. O(1): meant to
    /// be read under a brief lock, before the spare is prepared with no lock held.
    pub fn sizes(&self) -> RoomSizes {
        let (line_entries, line_words) = self.line.buffer_lens();
        RoomSizes {
            slots: self.slots.len(),
            line_entries,
            line_words,
            prequeue_entries: self.prequeue.buffer_len(),
            recent_records: self.recent_records.order.len(),
            keys: self.key_of_slot.len(),
            key_text_bytes: self.key_text_bytes,
        }
    }
}

/// `n` plus the headroom of `SPARE_HEADROOM_PER_MILLE`, but no more than `max` (when `n` is
/// below it: a room never holds more).
fn with_headroom(n: usize, max: usize) -> usize {
    let headroom =
        (n.saturating_mul(SPARE_HEADROOM_PER_MILLE) / 1000).max(SPARE_HEADROOM_ENTRIES_MIN);
    n.saturating_add(headroom).min(max.max(n))
}

/// Memory for copying rooms to snapshot them (see the module documentation). It holds no room:
/// only buffers, which [`SnapshotSpare::prepare`] sizes and maps, and which one copy after
/// another reuses (a node keeps one spare for all its rooms: it costs about 60 bytes per session
/// of the largest room it copied, 8 more and the key's length per idempotency key, plus
/// headroom).
#[derive(Debug)]
pub struct SnapshotSpare {
    /// Invariant: holds no room. Its buffers are empty (their capacity is the point) and so are
    /// the parts a copy leaves out; its id is `RoomId::none()` until a copy sets one. Boxed so
    /// that a spare and a copy move as a pointer.
    buffers: Box<Buffers>,
}

/// A copy of a room, good for encoding its snapshot (see the module documentation); not a room.
#[derive(Debug)]
pub struct SnapshotCopy {
    /// Invariant: the copied parts of a room, and empty parts where the copy leaves them out
    /// (so nothing but `encode_snapshot` and `digest` may read it).
    buffers: Box<Buffers>,
}

#[derive(Debug)]
struct Buffers {
    /// A room's parts; its two key maps stay empty (the keys are below).
    room: Room,
    /// The idempotency keys in slot order: each key's slot and length...
    key_slots: Vec<(u32, u8)>,
    /// ...and their text, one after the other.
    key_text: String,
}

impl Buffers {
    fn keys_by_slot(&self) -> KeysBySlot<'_> {
        KeysBySlot::Flat {
            slots: self.key_slots.iter(),
            text: &self.key_text,
        }
    }
}

impl Default for SnapshotSpare {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotSpare {
    /// A spare with no memory yet: the first `prepare` maps what the first copy needs.
    pub fn new() -> Self {
        Self {
            buffers: Box::new(Buffers {
                room: Room::new(RoomId::none()),
                key_slots: Vec::new(),
                key_text: String::new(),
            }),
        }
    }

    /// Gives every buffer a copy fills room for `sizes` plus headroom (growing those that are too
    /// small, keeping the rest), and writes to every page of them so that they are mapped before
    /// the copy. O(pages of the buffers): a few milliseconds for a million sessions whose memory
    /// is already mapped, tens when it is fresh. Holds no lock: call it with none held.
    pub fn prepare(&mut self, sizes: &RoomSizes) {
        let Buffers {
            room,
            key_slots,
            key_text,
        } = &mut *self.buffers;
        prepare_vec(
            &mut room.slots,
            with_headroom(sizes.slots, SESSIONS_PER_ROOM_MAX as usize),
            Slot::FREE,
        );
        room.line.prepare_buffers(
            with_headroom(sizes.line_entries, usize::MAX),
            with_headroom(sizes.line_words, usize::MAX),
        );
        room.prequeue
            .prepare_buffer(with_headroom(sizes.prequeue_entries, usize::MAX));
        prepare_deque(
            &mut room.recent_records.order,
            with_headroom(sizes.recent_records, RECORD_DEDUP_IDS_MAX),
            (0, RecordId([0; 16])),
        );
        prepare_vec(
            key_slots,
            with_headroom(sizes.keys, SESSIONS_PER_ROOM_MAX as usize),
            (0, 0),
        );
        let mut text = std::mem::take(key_text).into_bytes();
        prepare_vec(
            &mut text,
            with_headroom(sizes.key_text_bytes, usize::MAX),
            0,
        );
        // Empty, so valid UTF-8: the buffer is never lost.
        *key_text = String::from_utf8(text).unwrap_or_default();
    }

    /// Whether [`SnapshotSpare::copy`] would copy `room` (its buffers hold it without growing).
    pub fn holds(&self, room: &Room) -> bool {
        let Buffers {
            room: buffers,
            key_slots,
            key_text,
        } = &*self.buffers;
        buffers.slots.capacity() >= room.slots.len()
            && buffers.line.holds_copy_of(&room.line)
            && buffers.prequeue.holds_copy_of(&room.prequeue)
            && buffers.recent_records.order.capacity() >= room.recent_records.order.len()
            && key_slots.capacity() >= room.key_of_slot.len()
            && key_text.capacity() >= room.key_text_bytes
    }

    /// Copies `room` into the spare's buffers, if they hold it without growing (see the module
    /// documentation for what still allocates); otherwise copies nothing and gives the spare
    /// back, to be prepared again with the room's new sizes. O(sessions): a memory copy.
    ///
    /// # Errors
    /// The spare, unchanged, when `room` outgrew its buffers.
    pub fn copy(self, room: &Room) -> Result<SnapshotCopy, SnapshotSpare> {
        if !self.holds(room) {
            return Err(self);
        }
        Ok(self.copy_allocating(room))
    }

    /// Copies `room`, growing the spare's buffers where they are too small (into fresh memory:
    /// slow, see the module documentation). For when preparing again did not help.
    pub fn copy_allocating(mut self, room: &Room) -> SnapshotCopy {
        copy_parts(&mut self.buffers, room);
        SnapshotCopy {
            buffers: self.buffers,
        }
    }

    /// Heap bytes the spare's buffers hold.
    pub fn heap_bytes(&self) -> usize {
        let Buffers {
            room,
            key_slots,
            key_text,
        } = &*self.buffers;
        room.heap_bytes() + key_slots.capacity() * size_of::<(u32, u8)>() + key_text.capacity()
    }
}

impl SnapshotCopy {
    /// The id of the room copied.
    pub fn room_id(&self) -> &RoomId {
        self.buffers.room.id()
    }

    /// The snapshot of the room copied: the same bytes as its `Room::encode_snapshot` at the
    /// moment of the copy.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let buffers = &*self.buffers;
        buffers.room.encode_snapshot_with(buffers.keys_by_slot())
    }

    /// The digest of the room copied (`Room::digest` at the moment of the copy).
    pub fn digest(&self) -> [u8; 16] {
        let buffers = &*self.buffers;
        buffers.room.digest_with(buffers.keys_by_slot())
    }

    /// The buffers back, for the next copy (of any room).
    pub fn into_spare(self) -> SnapshotSpare {
        SnapshotSpare {
            buffers: self.buffers,
        }
    }
}

/// Copies what a snapshot reads of `source` into `buffers` (see the module documentation). The
/// exhaustive pattern makes a new field of `Room` a compile error here until it is decided.
fn copy_parts(buffers: &mut Buffers, source: &Room) {
    let Buffers {
        room: copy,
        key_slots,
        key_text,
    } = buffers;
    let Room {
        id,
        now_ms,
        exists,
        config,
        created_at_ms,
        slots,
        free_head,
        // Not read by the encoding or the digest; restore rebuilds them.
        index: _,
        line,
        prequeue,
        waiting_idle,
        active_idle,
        ended,
        active_by_admission: _,
        active_count,
        // Copied flat from `key_of_slot`, which holds the same keys.
        keys: _,
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
    } = source;
    // The id and configuration own strings: copied only when they changed (derived `clone_from`
    // allocates afresh).
    if copy.id != *id {
        copy.id = id.clone();
    }
    copy.now_ms = *now_ms;
    copy.exists = *exists;
    if copy.config != *config {
        copy.config = config.clone();
    }
    copy.created_at_ms = *created_at_ms;
    copy.slots.clone_from(slots);
    copy.free_head = *free_head;
    copy.line.clone_from(line);
    copy.prequeue.clone_from(prequeue);
    copy.waiting_idle = *waiting_idle;
    copy.active_idle = *active_idle;
    copy.ended = *ended;
    copy.active_count = *active_count;
    key_slots.clear();
    key_text.clear();
    for (&slot, key) in key_of_slot {
        // At most `IDEMPOTENCY_KEY_BYTES_MAX` bytes: the length fits a byte (asserted above).
        key_slots.push((slot, key.as_str().len() as u8));
        key_text.push_str(key.as_str());
    }
    copy.key_text_bytes = *key_text_bytes;
    // The order (oldest first) is what the snapshot holds; the set is rebuilt from it.
    copy.recent_records.order.clone_from(&recent_records.order);
    copy.bucket.clone_from(bucket);
    copy.admissions.clone_from(admissions);
    copy.freed_slots.clone_from(freed_slots);
    copy.admitted_total = *admitted_total;
    copy.expired_total = *expired_total;
    copy.file_entry_digest = *file_entry_digest;
    copy.draw_seed = *draw_seed;
    copy.passes.clone_from(passes);
}

/// Empties `buffer` and gives it room for `needed` elements, with every page written.
pub(crate) fn prepare_vec<T: Copy>(buffer: &mut Vec<T>, needed: usize, filler: T) {
    buffer.clear();
    if buffer.capacity() < needed {
        // Dropped first, so that at most one buffer is held (growing it would copy it).
        *buffer = Vec::new();
        *buffer = Vec::with_capacity(needed);
    }
    touch_pages(buffer.spare_capacity_mut(), filler);
}

/// Empties `buffer` and gives it room for `needed` elements, with every element written
/// (`VecDeque` lends no uninitialised capacity; its buffers here are of 4- and 24-byte entries).
pub(crate) fn prepare_deque<T: Copy>(buffer: &mut VecDeque<T>, needed: usize, filler: T) {
    buffer.clear();
    if buffer.capacity() < needed {
        *buffer = VecDeque::new();
        *buffer = VecDeque::with_capacity(needed);
    }
    buffer.resize(buffer.capacity(), filler);
    std::hint::black_box(&mut *buffer);
    buffer.clear();
}

/// Writes one element per page of `memory` (and the last one), so the kernel maps every page.
fn touch_pages<T: Copy>(memory: &mut [MaybeUninit<T>], filler: T) {
    let stride = (PAGE_BYTES / size_of::<T>().max(1)).max(1);
    for element in memory.iter_mut().step_by(stride) {
        element.write(filler);
    }
    if let Some(last) = memory.last_mut() {
        last.write(filler);
    }
    // The writes are the point: nothing may drop them as unread.
    std::hint::black_box(memory);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom() {
        assert_eq!(with_headroom(0, usize::MAX), SPARE_HEADROOM_ENTRIES_MIN);
        assert_eq!(with_headroom(1_000_000, usize::MAX), 1_125_000);
        assert_eq!(with_headroom(1_000_000, 1_050_000), 1_050_000);
        // Never below what the room holds, whatever the cap says.
        assert_eq!(with_headroom(2_000_000, 1_050_000), 2_000_000);
        assert_eq!(with_headroom(usize::MAX, usize::MAX), usize::MAX);
    }

    #[test]
    fn prepared_buffers_are_empty_with_room() {
        let mut buffer = vec![7u64; 10];
        prepare_vec(&mut buffer, 100_000, 0);
        assert!(buffer.is_empty() && buffer.capacity() >= 100_000);
        let mut deque: VecDeque<u32> = (0..10).collect();
        prepare_deque(&mut deque, 5_000, 0);
        assert!(deque.is_empty() && deque.capacity() >= 5_000);
        // A large enough buffer is kept, not replaced.
        let kept = buffer.as_ptr();
        prepare_vec(&mut buffer, 10, 0);
        assert_eq!(buffer.as_ptr(), kept);
    }
}
