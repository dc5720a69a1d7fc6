//! The room state machine.
//!
//! # Rules
//! - **Time** is the log's: `now = max(now, record timestamp)`. At the start of every record,
//!   everything due by `now` happens first, in this order: idle WAITING sessions expire, idle or
//!   over-long ACTIVE sessions expire, the rate-limit bucket refills, the pre-queue is drawn if
//!   the room opened, ended sessions past their retention are forgotten. A session whose deadline
//!   is exactly `now` has expired: a heartbeat carrying the deadline's timestamp is too late.
//! - **Admission** runs after everything due (so a command sees a settled room) and again after
//!   every command: while `active < capacity`, the room exists, is open
//!   (`opensAt` passed or unset) and not paused, and the token bucket (if `admitPerMinute` is set)
//!   holds a token, the head of the line becomes ACTIVE.
//! - **Order**: the line is first come, first served in log order. Joins before `opensAt` form
//!   the pre-queue; at opening they are placed, ahead of everyone who joins later, in the order of
//!   their draw tickets (`digest::draw_ticket`, keyed by the room's secret `DrawSeed`). The seed
//!   comes in configuration records, drawn by the node that wrote them, so every replica draws
//!   the same order and no client can compute its ticket. A configuration's seed replaces the
//!   room's only while nobody waits in the pre-queue (or the room has no seed yet): once people
//!   are in the pre-queue, the order they will be drawn in is fixed, and no reconfiguration
//!   (postponing the opening, a pause, ...) draws it again. Each seed so serves one draw at most
//!   (the positions a draw reveals say nothing about the next one), since a room that opened
//!   needs a new configuration, which finds the pre-queue empty and brings its own seed, to have
//!   a pre-queue again. A room configured only by seedless records (written before seeds were
//!   secret: `ConfigureRoom`, `ConfigureRoomFromFile`) draws with the public
//!   `legacy_draw_seed(room id, opensAt)`, so old logs replay as they did; a seedless record never
//!   takes a room's seed away (nor brings a new one).
//! - **Queueing method** (`RoomConfig::queueing_method`, set by a configuration): `fifo` is the
//!   above. `random`: each admission takes the session at index
//!   `digest::admission_draw(seed, admitted_total, line length)` of the line (in join order),
//!   the seed being the room's draw seed (or the legacy one), so every replica admits the same
//!   session and nobody can predict it; waiting sessions have no position. `passthrough`:
//!   admission takes the whole line, whatever `capacity` and the token bucket say (a pause and
//!   `opensAt` still hold), and takes no tokens. `reject`: a join that is not a duplicate or an
//!   idempotent replay is rejected (`JoinsRefused`); the line is served as `fifo`. A new method
//!   acts at once (admission runs after every command): the line itself is always in join order,
//!   so `random` to `fifo` serves the people waiting by join order. Records from before methods
//!   existed (every configuring command but the `…Queued` ones) configure a `fifo` room.
//! - **Passes** (`IssuePasses`, `JoinWithPass`): an operator's single-use passes, held as hashes
//!   (`PassHash`: the node hashes each code with the room id; codes never reach the log) with an
//!   expiry. A `JoinWithPass` whose pass the room holds is admitted at once (the pass is used by
//!   the same record): past `capacity`, the token bucket, a pause, `opensAt` and every method,
//!   `reject` and `inviteOnly` included; it never waits, so it is ahead of the whole line without
//!   taking anyone's place in it, and the line is served again once the active count is below
//!   `capacity`. A pass the room does not hold (never issued, used, expired: a pass expiring
//!   exactly `now` has expired) is `InvalidPass`, and nothing changes. Duplicates and idempotent
//!   replays are answered before the pass is looked at, so a retry with the same key replays
//!   though its pass is used. `inviteOnly` refuses a join without a pass (`PassRequired`).
//!   Passes are forgotten when used or expired (at the start of every record, like sessions) and
//!   all at a close. An issue is all or nothing (`InvalidPasses`): 1..=`PASSES_PER_RECORD_MAX`
//!   passes, an expiry later than `now` and within `PASS_LIFETIME_MS_MAX`, at most
//!   `PASSES_PER_ROOM_MAX` outstanding. `IssuePasses` records are remembered by id like
//!   configurations (redelivered, one would bring back a used pass).
//! - **Challenges** (`RoomConfig::challenge_difficulty_bits`): the proof of work a join must
//!   carry is checked by the node that takes the join (it holds the key that signs challenges;
//!   this crate holds none), before it writes the join. The room only carries the difficulty in
//!   its configuration (records `ConfigureRoomChallenged`, `ConfigureRoomFromFileChallenged`;
//!   snapshot format version 5), so every node enforces the same; it changes no rule here. Like
//!   the queueing method it is not in the digest. A replayed solution gets no second place: the
//!   node derives the join's session id from the challenge, so the replay is a duplicate of a
//!   session the room still remembers (see `waitroom::challenge`).
//! - **Events** (`RoomConfig::events`: records `ConfigureRoomScheduled`,
//!   `ConfigureRoomFromFileScheduled`; snapshot format version 6): which event runs is a function
//!   of the configuration and the room's clock, so every replica switches at the same record:
//!   the first whose time reaches the event's start (or end). While an event runs (start
//!   inclusive, end exclusive), its `capacity` and `admitPerMinute` (where set) replace the
//!   room's: admission and ETAs use them, the token bucket takes the event's rate (keeping the
//!   tokens already earned, clamped to the new burst, as a reconfiguration does) at the start
//!   of the first record at or after the switch, after its refill. Outside every event the room
//!   runs on its own settings, as a Cloudflare-style "base" room does: between the drops of a
//!   sale day the room still meters whoever comes (an operator who wants it shut between events
//!   pauses it or makes it `reject` by a configuration). An event's end admits nobody new while the active
//!   count is over the room's capacity (as a capacity decrease; nobody is evicted). For
//!   `preQueueMinutes` before an event's start, joins go to the pre-queue instead of the line
//!   (as before `opensAt`; the line already waiting is served as before), and the pre-queue is
//!   drawn at the start, appended behind whoever waits in the line already (they came before
//!   the pre-queue opened). A room with events draws every pre-queue (its `opensAt` one
//!   included) with `event_draw_seed(seed, time of the draw)`, so each of its draws has a seed of
//!   its own. Events that have ended stay in the configuration (the API shows what was
//!   configured); a pass admits through an event's pre-queue as through `opensAt`'s.
//! - **Duplicates**: a join whose session id is known is a duplicate; configure, close and
//!   heartbeat records, and every rejected record, are remembered by id for
//!   `RECORD_DEDUP_WINDOW_MS` (so are pass issues); accepted leaves and evictions and all ticks are idempotent by
//!   nature (a second leave finds the session ended; a stale tick finds nothing due).
//! - **Rooms files**: `ConfigureRoomFromFile` configures the room like `ConfigureRoom` and
//!   remembers the file entry's digest; a later one with the digest last applied changes nothing
//!   (`Duplicate`), whatever other commands changed in between. The digest survives other
//!   configurations and closes, and is part of the state (digest, snapshots).
//! - **Memory**: ended sessions are forgotten `SESSION_RETENTION_MS` after they end; a room holds
//!   at most `SESSIONS_PER_ROOM_MAX` sessions in all states.
//!
//! # ETA
//! A WAITING session at position `p` gets an estimate of the time for `p + 1` admissions:
//! `estimatedWaitRange` (low and high, whole seconds) whenever the room can estimate, and
//! `estimatedWaitSeconds` (a single figure inside the range) only when that range is narrow.
//! - **Turnover per slot**: the slots freed (ACTIVE sessions that ended: completed, left, timed
//!   out, evicted) in the last `ETA_WINDOW_MS` (not before the room was created), divided by the
//!   slot time behind them: the integral of the active count over the same window, rebuilt from
//!   the current active count and the admissions and frees of each `RATE_BUCKET_MS` bucket. Time
//!   with empty slots (the first fill, a pause that drained the room, a capacity raise) thus
//!   counts for what it is, so the rate is per occupied slot and a full room of `capacity`
//!   turns over at `capacity` times it: a capacity change takes effect at once.
//! - **Central estimate**: the active sessions over `capacity` (capacity lowered) free first,
//!   at the average active count of that drain, then `p + 1` slots at `capacity` active.
//! - **Range**: `ETA_RANGE_SIGMAS` standard deviations either side, the relative deviation
//!   being `sqrt(1 / freed + 1 / (p + 1 + excess))` (two counts of events, each taken as
//!   Poisson, which over-states the spread of regular hold times). People ahead may leave the
//!   line: the low end counts only `p × (1 − share)` of them, `share` being the share of those
//!   who left the line (rather than being admitted) since the room was created. Sessions
//!   admitted within the last mean hold (after a capacity raise or a resume the room fills at
//!   once) are young and few leave soon: the high end turns over only the slots occupied
//!   throughout the last mean hold (the least active count at a bucket boundary since).
//! - **Single figure** (`estimatedWaitSeconds`): the central estimate, given only when the
//!   range reaches at most `ETA_POINT_SPREAD_PERCENT_MAX` percent and `ETA_POINT_SPREAD_MS_MAX`
//!   away from it on either side; otherwise `null` with the range alone ("between X and Y").
//! - **Rate limit**: when `admitPerMinute` binds (free slots but no token) the estimate is
//!   exactly `(p + 1) / admitPerMinute` (range of one value); when both could bind, that is a
//!   floor of the estimate and its range.
//! - **Not yet** (both `null`): while paused, before opening, and while the room is full with
//!   fewer than `ETA_FREES_MIN` slots freed in the window, or open for less than
//!   `ETA_SETTLE_HOLDS` times the mean hold it measures (the first fill: everyone admitted at the
//!   opening is the same age, and the longer holds have not shown yet). The slot time before
//!   the oldest free of the window is left out (before the first slot frees, nobody could have
//!   left, whatever the hold times).
//!
//! A `random` room gives every waiting session the estimate of the middle of the line
//! (`p = (line length - 1) / 2`): the expected wait of a draw that is uniform over the line. A
//! `passthrough` room estimates 0 (nobody waits in it while open and not paused). Everything is
//! integer arithmetic on the room's state: every node gives the same estimate.
//!
//! # Data structures (per room)
//! Sessions live in a slab of 56-byte slots indexed by a hash map from session id. WAITING
//! sessions are in the [`Line`] (O(log n) positions); each live session is also on one of two
//! intrusive lists ordered by last heartbeat (WAITING and ACTIVE; every session on a list shares
//! the same timeout, so the front is the next to expire), ACTIVE ones on a set ordered by
//! admission time (for `maxActiveSeconds`), and ended ones on a list ordered by end time (for
//! forgetting). Every step is O(1) or O(log n) in the number of sessions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use crate::config::{QueueingMethod, RoomConfig, RoomEvent};
use crate::digest::{
    Digester, DrawSeed, SessionHasherBuilder, admission_draw, draw_ticket, event_draw_seed,
    legacy_draw_seed,
};
use crate::ids::{IdempotencyKey, RecordId, RoomId, SessionId};
use crate::limits::*;
use crate::line::{Line, Prequeue};
use crate::pass::{PassHash, Passes};
use crate::rate::{RateWindow, TokenBucket};
use crate::record::{Command, LeaveReason, Record};
use crate::view::*;

/// `config` with queueing method `method` (records carry the method beside the configuration:
/// see `RoomConfig::queueing_method`) and no challenge.
fn with_method(config: &RoomConfig, method: QueueingMethod) -> RoomConfig {
    with_challenge(config, method, 0)
}

/// `config` with queueing method `method`, a challenge of `bits` (see
/// `RoomConfig::challenge_difficulty_bits`) and no events (records that carry events say so:
/// `with_events`; a decoded configuration never has any, and this keeps one built in memory the
/// same).
fn with_challenge(config: &RoomConfig, method: QueueingMethod, bits: u8) -> RoomConfig {
    RoomConfig {
        queueing_method: method,
        challenge_difficulty_bits: bits,
        events: Vec::new(),
        ..config.clone()
    }
}

/// `config` with method `method`, a challenge of `bits` and `events` (see `RoomConfig::events`).
fn with_events(
    config: &RoomConfig,
    method: QueueingMethod,
    bits: u8,
    events: &[RoomEvent],
) -> RoomConfig {
    RoomConfig {
        events: events.to_vec(),
        ..with_challenge(config, method, bits)
    }
}

/// `config` as a `fifo` room's.
fn fifo(config: &RoomConfig) -> RoomConfig {
    with_method(config, QueueingMethod::Fifo)
}

/// "No slot" in the intrusive lists.
pub(crate) const NIL: u32 = u32::MAX;
/// `Slot::aux` of a session that was never admitted.
pub(crate) const NEVER: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotState {
    Free,
    Prequeue,
    Waiting,
    Active,
    Ended,
}

/// One session. 56 bytes: this is most of a waiting session's memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub(crate) id: SessionId,
    pub(crate) joined_at_ms: u64,
    /// Last heartbeat (or join, or admission) of a live session; end time of an ended one.
    pub(crate) seen_ms: u64,
    /// Prequeue: index in the pre-queue. Waiting: sequence number in the line.
    /// Active and Ended: admission time, or `NEVER`.
    pub(crate) aux: u64,
    /// Links of the one list the slot is on (idle lists, the ended list, or the free list).
    pub(crate) prev: u32,
    pub(crate) next: u32,
    pub(crate) state: SlotState,
    pub(crate) reason: ExpiredReason,
    pub(crate) has_key: bool,
}

const _: () = assert!(size_of::<Slot>() <= 56);

impl Slot {
    pub(crate) const FREE: Slot = Slot {
        id: SessionId([0; 16]),
        joined_at_ms: 0,
        seen_ms: 0,
        aux: 0,
        prev: NIL,
        next: NIL,
        state: SlotState::Free,
        reason: ExpiredReason::Timeout,
        has_key: false,
    };
}

/// An intrusive doubly linked list through `Slot::prev/next`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct List {
    pub(crate) head: u32,
    pub(crate) tail: u32,
    pub(crate) len: u32,
}

impl Default for List {
    fn default() -> Self {
        Self {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl List {
    fn front(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    pub(crate) fn push_back(&mut self, slots: &mut [Slot], index: u32) {
        slots[index as usize].prev = self.tail;
        slots[index as usize].next = NIL;
        if self.tail == NIL {
            self.head = index;
        } else {
            slots[self.tail as usize].next = index;
        }
        self.tail = index;
        self.len += 1;
    }

    fn unlink(&mut self, slots: &mut [Slot], index: u32) {
        let Slot { prev, next, .. } = slots[index as usize];
        if prev == NIL {
            self.head = next;
        } else {
            slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            slots[next as usize].prev = prev;
        }
        slots[index as usize].prev = NIL;
        slots[index as usize].next = NIL;
        self.len -= 1;
    }

    pub(crate) fn iter<'a>(&self, slots: &'a [Slot]) -> impl Iterator<Item = u32> + 'a {
        std::iter::successors(self.front(), move |&i| {
            let next = slots[i as usize].next;
            (next != NIL).then_some(next)
        })
    }
}

/// Idempotency keys in slot order: a room's own map, or the flat copy of a `SnapshotCopy`
/// (`(slot, key length)` pairs and the keys' text, concatenated).
#[derive(Clone, Debug)]
pub(crate) enum KeysBySlot<'a> {
    Map(std::collections::btree_map::Iter<'a, u32, IdempotencyKey>),
    Flat {
        slots: std::slice::Iter<'a, (u32, u8)>,
        text: &'a str,
    },
}

impl<'a> Iterator for KeysBySlot<'a> {
    type Item = (u32, &'a str);

    fn next(&mut self) -> Option<(u32, &'a str)> {
        match self {
            KeysBySlot::Map(map) => map.next().map(|(&slot, key)| (slot, key.as_str())),
            KeysBySlot::Flat { slots, text } => {
                let &(slot, len) = slots.next()?;
                // Keys are ASCII, so any byte offset is a character boundary; `get` keeps a
                // broken copy from panicking (it would end the keys early, and the digest then
                // refuses the snapshot).
                let key = text.get(..usize::from(len))?;
                *text = &text[key.len()..];
                Some((slot, key))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            KeysBySlot::Map(map) => map.size_hint(),
            KeysBySlot::Flat { slots, .. } => (0, Some(slots.len())),
        }
    }
}

impl KeysBySlot<'_> {
    /// How many keys (for a copy, as copied).
    pub(crate) fn len(&self) -> usize {
        match self {
            KeysBySlot::Map(map) => map.len(),
            KeysBySlot::Flat { slots, .. } => slots.len(),
        }
    }
}

/// Ids of recent non-idempotent records.
#[derive(Debug, Default)]
pub(crate) struct RecentRecords {
    pub(crate) ids: HashSet<RecordId, SessionHasherBuilder>,
    pub(crate) order: VecDeque<(u64, RecordId)>,
}

impl Clone for RecentRecords {
    fn clone(&self) -> Self {
        Self {
            ids: self.ids.clone(),
            order: self.order.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.ids.clone_from(&source.ids);
        self.order.clone_from(&source.order);
    }
}

impl RecentRecords {
    fn insert(&mut self, id: RecordId, now_ms: u64) {
        if !self.ids.insert(id) {
            return;
        }
        self.order.push_back((now_ms, id));
        if self.order.len() > RECORD_DEDUP_IDS_MAX
            && let Some((_, oldest)) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
    }

    fn purge(&mut self, now_ms: u64) {
        while let Some(&(at_ms, id)) = self.order.front() {
            if at_ms.saturating_add(RECORD_DEDUP_WINDOW_MS) > now_ms {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&id);
        }
    }
}

/// One room's state machine. See the module documentation for the rules.
///
/// # Copying
/// A node snapshots a room by copying it under a read lock and encoding the copy elsewhere, so
/// the copy's time stalls the room. It does not clone the room: it copies the parts a snapshot
/// reads into a [`SnapshotSpare`](crate::SnapshotSpare) prepared outside the lock (see
/// `crate::spare`). `Clone::clone_from` into a room of the same size also reuses the target's
/// memory (about four times faster than `clone`, which is bound by the kernel mapping fresh
/// pages), but a room that grew since needs fresh memory again.
#[derive(Debug)]
pub struct Room {
    pub(crate) id: RoomId,
    pub(crate) now_ms: u64,
    /// Configured and not closed since.
    pub(crate) exists: bool,
    /// The current configuration while `exists`; the last one after a close (ended sessions'
    /// views still show its heartbeat interval).
    pub(crate) config: RoomConfig,
    pub(crate) created_at_ms: u64,

    pub(crate) slots: Vec<Slot>,
    pub(crate) free_head: u32,
    pub(crate) index: HashMap<SessionId, u32, SessionHasherBuilder>,
    pub(crate) line: Line,
    pub(crate) prequeue: Prequeue,
    pub(crate) waiting_idle: List,
    pub(crate) active_idle: List,
    pub(crate) ended: List,
    pub(crate) active_by_admission: BTreeSet<(u64, u32)>,
    pub(crate) active_count: u32,
    /// Client-chosen strings: a B-tree, so no crafted keys can degrade it (unlike a fixed hash).
    pub(crate) keys: BTreeMap<IdempotencyKey, u32>,
    pub(crate) key_of_slot: BTreeMap<u32, IdempotencyKey>,
    /// The keys' total length: what a `SnapshotSpare` reserves to copy them flat. Derived from
    /// the keys (which the digest covers), so not in the digest or the snapshot.
    pub(crate) key_text_bytes: usize,
    pub(crate) recent_records: RecentRecords,

    pub(crate) bucket: Option<TokenBucket>,
    pub(crate) admissions: RateWindow,
    pub(crate) freed_slots: RateWindow,
    pub(crate) admitted_total: u64,
    pub(crate) expired_total: ExpiredTotals,
    /// The digest of the rooms-file entry last applied (`ConfigureRoomFromFile`); kept through
    /// API changes and closes, so a node restarted with the same file changes nothing.
    pub(crate) file_entry_digest: Option<[u8; 16]>,
    /// The secret seed of the pre-queue draw (see "Order"), or `None` before any configuration
    /// brought one (the public `legacy_draw_seed` then). Kept through closes, like the file entry
    /// digest; in snapshots, but not in the digest (see `digest`).
    pub(crate) draw_seed: Option<DrawSeed>,
    /// Outstanding passes (see "Passes"): cleared by a close, in the digest and snapshots.
    pub(crate) passes: Passes,
}

/// Written out rather than derived so that `clone_from` copies each table into the target's
/// existing allocation (`Vec`, `HashMap` and `VecDeque` reuse theirs; a derived `clone_from`
/// would allocate a whole new room and drop the old). The exhaustive patterns make a new field a
/// compile error here until it is cloned.
impl Clone for Room {
    fn clone(&self) -> Self {
        let Room {
            id,
            now_ms,
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
            active_count,
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
        } = self;
        Room {
            id: id.clone(),
            now_ms: *now_ms,
            exists: *exists,
            config: config.clone(),
            created_at_ms: *created_at_ms,
            slots: slots.clone(),
            free_head: *free_head,
            index: index.clone(),
            line: line.clone(),
            prequeue: prequeue.clone(),
            waiting_idle: *waiting_idle,
            active_idle: *active_idle,
            ended: *ended,
            active_by_admission: active_by_admission.clone(),
            active_count: *active_count,
            keys: keys.clone(),
            key_of_slot: key_of_slot.clone(),
            key_text_bytes: *key_text_bytes,
            recent_records: recent_records.clone(),
            bucket: bucket.clone(),
            admissions: admissions.clone(),
            freed_slots: freed_slots.clone(),
            admitted_total: *admitted_total,
            expired_total: *expired_total,
            file_entry_digest: *file_entry_digest,
            draw_seed: *draw_seed,
            passes: passes.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        let Room {
            id,
            now_ms,
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
            active_count,
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
        } = source;
        self.id.clone_from(id);
        self.now_ms = *now_ms;
        self.exists = *exists;
        self.config.clone_from(config);
        self.created_at_ms = *created_at_ms;
        self.slots.clone_from(slots);
        self.free_head = *free_head;
        self.index.clone_from(index);
        self.line.clone_from(line);
        self.prequeue.clone_from(prequeue);
        self.waiting_idle = *waiting_idle;
        self.active_idle = *active_idle;
        self.ended = *ended;
        self.active_by_admission.clone_from(active_by_admission);
        self.active_count = *active_count;
        self.keys.clone_from(keys);
        self.key_of_slot.clone_from(key_of_slot);
        self.key_text_bytes = *key_text_bytes;
        self.recent_records.clone_from(recent_records);
        self.bucket.clone_from(bucket);
        self.admissions.clone_from(admissions);
        self.freed_slots.clone_from(freed_slots);
        self.admitted_total = *admitted_total;
        self.expired_total = *expired_total;
        self.file_entry_digest = *file_entry_digest;
        self.draw_seed = *draw_seed;
        self.passes.clone_from(passes);
    }
}

impl Room {
    /// A room that does not exist yet: records other than `ConfigureRoom` are rejected.
    pub fn new(id: RoomId) -> Self {
        Self {
            id,
            now_ms: 0,
            exists: false,
            config: RoomConfig::with_capacity(1),
            created_at_ms: 0,
            slots: Vec::new(),
            free_head: NIL,
            index: HashMap::default(),
            line: Line::default(),
            prequeue: Prequeue::default(),
            waiting_idle: List::default(),
            active_idle: List::default(),
            ended: List::default(),
            active_by_admission: BTreeSet::new(),
            active_count: 0,
            keys: BTreeMap::new(),
            key_of_slot: BTreeMap::new(),
            key_text_bytes: 0,
            recent_records: RecentRecords::default(),
            bucket: None,
            admissions: RateWindow::default(),
            freed_slots: RateWindow::default(),
            admitted_total: 0,
            expired_total: ExpiredTotals::default(),
            file_entry_digest: None,
            draw_seed: None,
            passes: Passes::default(),
        }
    }

    pub fn id(&self) -> &RoomId {
        &self.id
    }

    /// The room's clock: the latest record timestamp applied.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Configured and not closed since.
    pub fn exists(&self) -> bool {
        self.exists
    }

    /// The configuration, while the room exists.
    pub fn config(&self) -> Option<&RoomConfig> {
        self.exists.then_some(&self.config)
    }

    /// The current configuration, or the last one after a close.
    pub fn last_config(&self) -> &RoomConfig {
        &self.config
    }

    /// The digest of the rooms-file entry last applied to this room (`ConfigureRoomFromFile`),
    /// whatever was changed since through other commands.
    pub fn file_entry_digest(&self) -> Option<[u8; 16]> {
        self.file_entry_digest
    }

    /// The secret seed of the room's pre-queue draw, if a configuration brought one (see the
    /// module documentation, "Order"). Secret: for the draw, snapshots and tests only; no response
    /// or log line may carry it.
    pub fn draw_seed(&self) -> Option<DrawSeed> {
        self.draw_seed
    }

    /// The remembered session an idempotency key created, if any.
    pub fn session_for_idempotency_key(&self, key: &IdempotencyKey) -> Option<SessionId> {
        self.keys.get(key).map(|&i| self.slots[i as usize].id)
    }

    /// Live sessions (waiting or active): the room needs ticks to expire them.
    pub fn has_live_sessions(&self) -> bool {
        self.waiting_idle.len + self.active_idle.len > 0
    }

    /// Nothing is left to remember: not configured, no session, no recent record. The digest of
    /// a rooms-file entry alone does not keep a room (a node then forgets a closed room as
    /// before; a node started later with the entry still in its file creates the room again).
    pub fn is_vacant(&self) -> bool {
        !self.exists && self.index.is_empty() && self.recent_records.order.is_empty()
    }

    /// Applies one record at `timestamp_ms` (see the module documentation).
    pub fn apply(&mut self, record: &Record, timestamp_ms: u64) -> Outcome {
        if record.room != self.id {
            return Outcome::Rejected(Rejection::WrongRoom);
        }
        self.advance(timestamp_ms);
        if self.recent_records.ids.contains(&record.id) {
            return Outcome::Duplicate;
        }
        let outcome = match &record.command {
            // Records from before queueing methods carry none: they configure a `fifo` room
            // (as decoded records always say; this keeps a record built in memory the same).
            Command::ConfigureRoom(config) => self.configure(&fifo(config), None),
            Command::ConfigureRoomSeeded { config, draw_seed } => {
                self.configure(&fifo(config), Some(*draw_seed))
            }
            Command::ConfigureRoomFromFile {
                config,
                file_entry_digest,
            } => self.configure_from_file(&fifo(config), *file_entry_digest, None),
            Command::ConfigureRoomFromFileSeeded {
                config,
                file_entry_digest,
                draw_seed,
            } => self.configure_from_file(&fifo(config), *file_entry_digest, Some(*draw_seed)),
            Command::ConfigureRoomQueued {
                config,
                draw_seed,
                queueing_method,
            } => self.configure(&with_method(config, *queueing_method), Some(*draw_seed)),
            Command::ConfigureRoomFromFileQueued {
                config,
                file_entry_digest,
                draw_seed,
                queueing_method,
            } => self.configure_from_file(
                &with_method(config, *queueing_method),
                *file_entry_digest,
                Some(*draw_seed),
            ),
            Command::ConfigureRoomChallenged {
                config,
                draw_seed,
                queueing_method,
                challenge_difficulty_bits,
            } => self.configure(
                &with_challenge(config, *queueing_method, *challenge_difficulty_bits),
                Some(*draw_seed),
            ),
            Command::ConfigureRoomFromFileChallenged {
                config,
                file_entry_digest,
                draw_seed,
                queueing_method,
                challenge_difficulty_bits,
            } => self.configure_from_file(
                &with_challenge(config, *queueing_method, *challenge_difficulty_bits),
                *file_entry_digest,
                Some(*draw_seed),
            ),
            Command::ConfigureRoomScheduled {
                config,
                draw_seed,
                queueing_method,
                challenge_difficulty_bits,
                events,
            } => self.configure(
                &with_events(config, *queueing_method, *challenge_difficulty_bits, events),
                Some(*draw_seed),
            ),
            Command::ConfigureRoomFromFileScheduled {
                config,
                file_entry_digest,
                draw_seed,
                queueing_method,
                challenge_difficulty_bits,
                events,
            } => self.configure_from_file(
                &with_events(config, *queueing_method, *challenge_difficulty_bits, events),
                *file_entry_digest,
                Some(*draw_seed),
            ),
            Command::CloseRoom => self.close(),
            Command::Join {
                session,
                idempotency_key,
            } => self.join(*session, idempotency_key.as_ref(), None),
            Command::JoinWithPass {
                session,
                idempotency_key,
                pass,
            } => self.join(*session, idempotency_key.as_ref(), Some(pass)),
            Command::IssuePasses {
                passes,
                expires_at_ms,
            } => self.issue_passes(passes, *expires_at_ms),
            Command::Heartbeat { sessions } => self.heartbeat(sessions),
            Command::Leave { session, reason } => self.leave(session, *reason),
            Command::Evict { session } => self.evict(session),
            // A digest check is compared by the node; to the room it is a tick.
            Command::Tick | Command::CheckDigest { .. } => Outcome::Ticked,
        };
        // Records that would act differently if delivered again are remembered: configure,
        // close and heartbeat always, and any rejected record (a join refused while the room was
        // full must stay refused). Accepted joins, leaves and evictions need no memory: their
        // session already exists or has ended. A file entry's configuration is remembered too:
        // redelivered after a newer entry was applied, it would otherwise apply again.
        let remembered = matches!(
            record.command,
            Command::ConfigureRoom(_)
                | Command::ConfigureRoomSeeded { .. }
                | Command::ConfigureRoomFromFile { .. }
                | Command::ConfigureRoomFromFileSeeded { .. }
                | Command::ConfigureRoomQueued { .. }
                | Command::ConfigureRoomFromFileQueued { .. }
                | Command::ConfigureRoomChallenged { .. }
                | Command::ConfigureRoomFromFileChallenged { .. }
                | Command::ConfigureRoomScheduled { .. }
                | Command::ConfigureRoomFromFileScheduled { .. }
                | Command::CloseRoom
                | Command::Heartbeat { .. }
                | Command::IssuePasses { .. }
        );
        if remembered || matches!(outcome, Outcome::Rejected(_)) {
            self.recent_records.insert(record.id, self.now_ms);
        }
        self.admit();
        outcome
    }

    /// Moves time to `max(now, timestamp_ms)` and does everything due by then.
    fn advance(&mut self, timestamp_ms: u64) {
        self.now_ms = self.now_ms.max(timestamp_ms);
        if self.exists {
            self.expire_due();
            if let Some(bucket) = &mut self.bucket {
                bucket.refill(self.now_ms);
            }
            // An event that started or ended brings its rate (see "Events").
            self.set_bucket_rate(false);
            self.draw_if_open();
            // The command then sees a settled room (a slot freed by expiry is already refilled).
            self.admit();
        }
        self.forget_ended();
        self.passes.expire(self.now_ms);
        self.recent_records.purge(self.now_ms);
    }

    /// The room has opened (`opensAt` passed or unset): admission may run.
    fn is_open(&self) -> bool {
        self.config.opened_at(self.now_ms)
    }

    /// Joins go to the pre-queue now (before `opensAt`, or in an event's pre-queue).
    fn pre_queue_collects(&self) -> bool {
        self.config.pre_queue_collects_at(self.now_ms)
    }

    /// The capacity in force: the running event's, else the room's (see "Events").
    pub fn capacity(&self) -> u32 {
        self.config.capacity_at(self.now_ms)
    }

    /// The event running at the room's clock, while the room exists.
    pub fn current_event(&self) -> Option<&RoomEvent> {
        self.config().and_then(|c| c.event_at(self.now_ms))
    }

    /// The first event that has not started by the room's clock, while the room exists.
    pub fn next_event(&self) -> Option<&RoomEvent> {
        self.config().and_then(|c| c.next_event_after(self.now_ms))
    }

    /// Gives the token bucket the rate in force (see "Events"): none without one, a full new
    /// bucket when one comes, else the same bucket at the new rate. `always` sets the rate even if
    /// unchanged (a configuration does: it clamps the tokens to the burst as before events).
    fn set_bucket_rate(&mut self, always: bool) {
        let rate = self.config.admit_per_minute_at(self.now_ms);
        self.bucket = match (rate, self.bucket.take()) {
            (None, _) => None,
            (Some(rate), Some(mut bucket)) => {
                if always || bucket.admit_per_minute() != u64::from(rate) {
                    bucket.set_rate(rate);
                }
                Some(bucket)
            }
            (Some(rate), None) => Some(TokenBucket::new(rate, self.now_ms)),
        };
    }

    fn expire_due(&mut self) {
        let now = self.now_ms;
        let waiting_ms = u64::from(self.config.waiting_idle_timeout_seconds) * 1000;
        while let Some(i) = self.waiting_idle.front() {
            if self.slots[i as usize].seen_ms + waiting_ms > now {
                break;
            }
            self.end(i, ExpiredReason::Timeout);
        }
        let idle_ms = u64::from(self.config.active_idle_timeout_seconds) * 1000;
        while let Some(i) = self.active_idle.front() {
            if self.slots[i as usize].seen_ms + idle_ms > now {
                break;
            }
            self.end(i, ExpiredReason::Timeout);
        }
        let max_ms = u64::from(self.config.max_active_seconds) * 1000;
        while let Some(&(admitted_ms, i)) = self.active_by_admission.first() {
            if admitted_ms + max_ms > now {
                break;
            }
            self.end(i, ExpiredReason::Timeout);
        }
    }

    fn draw_if_open(&mut self) {
        if self.prequeue.front().is_none() || self.pre_queue_collects() {
            return;
        }
        let seed = if self.config.events.is_empty() {
            self.draw_seed_bits()
        } else {
            event_draw_seed(self.draw_seed_bits(), self.now_ms)
        };
        let mut drawn = self.prequeue.drain();
        let slots = &self.slots;
        drawn.sort_by_cached_key(|&i| {
            let id = &slots[i as usize].id;
            (draw_ticket(seed, &id.0), *id)
        });
        for i in drawn {
            let seq = self.line.push(i);
            let slot = &mut self.slots[i as usize];
            slot.state = SlotState::Waiting;
            slot.aux = seq;
        }
    }

    fn forget_ended(&mut self) {
        while let Some(i) = self.ended.front() {
            let slot = self.slots[i as usize];
            if slot.seen_ms.saturating_add(SESSION_RETENTION_MS) > self.now_ms {
                break;
            }
            self.ended.unlink(&mut self.slots, i);
            self.index.remove(&slot.id);
            if slot.has_key
                && let Some(key) = self.key_of_slot.remove(&i)
            {
                self.keys.remove(&key);
                self.key_text_bytes -= key.as_str().len();
            }
            self.slots[i as usize] = Slot {
                next: self.free_head,
                ..Slot::FREE
            };
            self.free_head = i;
        }
    }

    /// Ends live session `i` now with `reason`.
    fn end(&mut self, i: u32, reason: ExpiredReason) {
        let slot = self.slots[i as usize];
        let admitted_at_ms = match slot.state {
            SlotState::Prequeue => {
                self.prequeue.remove(slot.aux);
                self.waiting_idle.unlink(&mut self.slots, i);
                NEVER
            }
            SlotState::Waiting => {
                self.line.remove(slot.aux);
                self.waiting_idle.unlink(&mut self.slots, i);
                NEVER
            }
            SlotState::Active => {
                self.active_idle.unlink(&mut self.slots, i);
                self.active_by_admission.remove(&(slot.aux, i));
                self.active_count -= 1;
                if reason != ExpiredReason::Closed {
                    self.freed_slots.record(self.now_ms);
                }
                slot.aux
            }
            SlotState::Free | SlotState::Ended => unreachable!("only live sessions end"),
        };
        let slot = &mut self.slots[i as usize];
        slot.state = SlotState::Ended;
        slot.reason = reason;
        slot.seen_ms = self.now_ms;
        slot.aux = admitted_at_ms;
        self.ended.push_back(&mut self.slots, i);
        self.expired_total.0[reason.index()] += 1;
    }

    fn admit(&mut self) {
        if !self.exists || self.config.paused || !self.is_open() {
            return;
        }
        let method = self.config.queueing_method;
        loop {
            let waiting = self.line.len();
            if waiting == 0 {
                break;
            }
            if method != QueueingMethod::Passthrough {
                if self.active_count >= self.capacity() {
                    break;
                }
                if let Some(bucket) = &mut self.bucket {
                    if !bucket.has_token() {
                        break;
                    }
                    bucket.take();
                }
            }
            let seq = if method == QueueingMethod::Random {
                let k = admission_draw(self.draw_seed_bits(), self.admitted_total, waiting);
                self.line.nth(k).0
            } else {
                self.line.front_seq()
            };
            self.admit_one(seq);
        }
    }

    /// The seed of the room's draws: its secret one, or the public legacy seed of a room that
    /// never got one (see "Order").
    fn draw_seed_bits(&self) -> u64 {
        match self.draw_seed {
            Some(seed) => seed.to_u64(),
            None => {
                let opened_at_ms = self.config.opens_at_ms.unwrap_or(self.now_ms);
                legacy_draw_seed(self.id.as_str(), opened_at_ms)
            }
        }
    }

    /// Admits the waiting session with sequence number `seq` in the line.
    fn admit_one(&mut self, seq: u64) {
        let i = self.line.slot_of(seq);
        self.line.remove(seq);
        self.waiting_idle.unlink(&mut self.slots, i);
        let now = self.now_ms;
        let slot = &mut self.slots[i as usize];
        slot.state = SlotState::Active;
        slot.aux = now;
        slot.seen_ms = now;
        self.active_idle.push_back(&mut self.slots, i);
        self.active_by_admission.insert((now, i));
        self.active_count += 1;
        self.admitted_total += 1;
        self.admissions.record(now);
    }

    fn configure(&mut self, config: &RoomConfig, draw_seed: Option<DrawSeed>) -> Outcome {
        if let Err(error) = config.validate() {
            return Outcome::Rejected(Rejection::InvalidConfig(error));
        }
        // See "Order": the pre-queue's draw is fixed once people wait in it. (Changing a secret
        // seed then would not be exploitable either, nobody knowing either seed; keeping it makes
        // the rule simple: one seed, one draw.) A public seed is replaced whenever possible.
        if let Some(seed) = draw_seed
            && (self.prequeue.front().is_none() || self.draw_seed.is_none())
        {
            self.draw_seed = Some(seed);
        }
        let created = !self.exists;
        if created {
            self.exists = true;
            self.created_at_ms = self.now_ms;
            self.admitted_total = 0;
            self.expired_total = ExpiredTotals::default();
            self.admissions = RateWindow::default();
            self.freed_slots = RateWindow::default();
            self.bucket = None;
        }
        self.config = config.clone();
        self.set_bucket_rate(true);
        // Shorter timeouts or an earlier opening take effect at once.
        self.expire_due();
        self.draw_if_open();
        Outcome::Configured { created }
    }

    /// A rooms-file entry: applied like `ConfigureRoom` unless this entry (by digest) is the one
    /// last applied, whatever changed since (an operator's pause through the API stands). So
    /// several nodes that start with the same file and each append the entry change the room
    /// once, even with other commands in between.
    fn configure_from_file(
        &mut self,
        config: &RoomConfig,
        digest: [u8; 16],
        draw_seed: Option<DrawSeed>,
    ) -> Outcome {
        if self.file_entry_digest == Some(digest) {
            return Outcome::Duplicate;
        }
        let outcome = self.configure(config, draw_seed);
        if matches!(outcome, Outcome::Configured { .. }) {
            self.file_entry_digest = Some(digest);
        }
        outcome
    }

    fn close(&mut self) -> Outcome {
        if !self.exists {
            return Outcome::Rejected(Rejection::UnknownRoom);
        }
        let mut ended = 0;
        while let Some(i) = self.waiting_idle.front().or(self.active_idle.front()) {
            self.end(i, ExpiredReason::Closed);
            ended += 1;
        }
        // A room created afresh later is a new room: old idempotency keys do not replay into it.
        for &i in self.key_of_slot.keys() {
            self.slots[i as usize].has_key = false;
        }
        self.keys.clear();
        self.key_of_slot.clear();
        self.key_text_bytes = 0;
        self.passes.clear();
        self.exists = false;
        self.bucket = None;
        Outcome::Closed { ended }
    }

    fn join(
        &mut self,
        session: SessionId,
        key: Option<&IdempotencyKey>,
        pass: Option<&PassHash>,
    ) -> Outcome {
        if !self.exists {
            return Outcome::Rejected(Rejection::UnknownRoom);
        }
        if self.index.contains_key(&session) {
            return Outcome::Duplicate;
        }
        if let Some(&i) = key.and_then(|key| self.keys.get(key)) {
            return Outcome::Replayed {
                session: self.slots[i as usize].id,
            };
        }
        if let Some(pass) = pass {
            if !self.passes.contains(pass) {
                return Outcome::Rejected(Rejection::InvalidPass);
            }
            if self.index.len() >= SESSIONS_PER_ROOM_MAX as usize {
                return Outcome::Rejected(Rejection::RoomFull);
            }
            self.passes.take(pass);
        } else {
            match self.config.queueing_method {
                QueueingMethod::Reject => return Outcome::Rejected(Rejection::JoinsRefused),
                QueueingMethod::InviteOnly => return Outcome::Rejected(Rejection::PassRequired),
                _ => {}
            }
            let waiting = self.line.len() + self.prequeue.len();
            let waiting_max = self.config.max_waiting.unwrap_or(MAX_WAITING_MAX);
            if waiting >= waiting_max || self.index.len() >= SESSIONS_PER_ROOM_MAX as usize {
                return Outcome::Rejected(Rejection::RoomFull);
            }
        }
        let i = self.allocate(session);
        // A pass admits at once (see "Passes"): through the line's tail, so the session is
        // admitted by the same steps as any other.
        let open = !self.pre_queue_collects() || pass.is_some();
        let slot = &mut self.slots[i as usize];
        if open {
            slot.state = SlotState::Waiting;
            slot.aux = self.line.push(i);
        } else {
            slot.state = SlotState::Prequeue;
            slot.aux = self.prequeue.push(i);
        }
        self.waiting_idle.push_back(&mut self.slots, i);
        self.index.insert(session, i);
        if let Some(key) = key {
            self.slots[i as usize].has_key = true;
            self.keys.insert(key.clone(), i);
            self.key_of_slot.insert(i, key.clone());
            self.key_text_bytes += key.as_str().len();
        }
        if pass.is_some() {
            let seq = self.slots[i as usize].aux;
            self.admit_one(seq);
        }
        Outcome::Joined { session }
    }

    fn issue_passes(&mut self, passes: &[PassHash], expires_at_ms: u64) -> Outcome {
        if !self.exists {
            return Outcome::Rejected(Rejection::UnknownRoom);
        }
        let lifetime_ms = expires_at_ms.saturating_sub(self.now_ms);
        if passes.is_empty()
            || passes.len() > PASSES_PER_RECORD_MAX
            || lifetime_ms == 0
            || lifetime_ms > PASS_LIFETIME_MS_MAX
            || self.passes.len() + passes.len() > PASSES_PER_ROOM_MAX
        {
            return Outcome::Rejected(Rejection::InvalidPasses);
        }
        let mut issued = 0;
        for hash in passes {
            issued += u32::from(self.passes.insert(*hash, expires_at_ms));
        }
        Outcome::PassesIssued { issued }
    }

    fn allocate(&mut self, session: SessionId) -> u32 {
        let slot = Slot {
            id: session,
            joined_at_ms: self.now_ms,
            seen_ms: self.now_ms,
            ..Slot::FREE
        };
        if self.free_head != NIL {
            let i = self.free_head;
            self.free_head = self.slots[i as usize].next;
            self.slots[i as usize] = slot;
            i
        } else {
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        }
    }

    fn heartbeat(&mut self, sessions: &[SessionId]) -> Outcome {
        let mut refreshed = 0;
        for session in sessions {
            let Some(&i) = self.index.get(session) else {
                continue;
            };
            let list = match self.slots[i as usize].state {
                SlotState::Prequeue | SlotState::Waiting => &mut self.waiting_idle,
                SlotState::Active => &mut self.active_idle,
                SlotState::Ended | SlotState::Free => continue,
            };
            list.unlink(&mut self.slots, i);
            list.push_back(&mut self.slots, i);
            self.slots[i as usize].seen_ms = self.now_ms;
            refreshed += 1;
        }
        Outcome::Heartbeat { refreshed }
    }

    fn leave(&mut self, session: &SessionId, reason: LeaveReason) -> Outcome {
        let Some(&i) = self.index.get(session) else {
            return Outcome::Rejected(Rejection::UnknownSession);
        };
        let expired_reason = match (self.slots[i as usize].state, reason) {
            (SlotState::Ended, _) => return Outcome::AlreadyEnded { session: *session },
            (SlotState::Active, LeaveReason::Completed) => ExpiredReason::Completed,
            (_, LeaveReason::Completed) => return Outcome::Rejected(Rejection::NotActive),
            (_, LeaveReason::Left) => ExpiredReason::Left,
        };
        self.end(i, expired_reason);
        Outcome::Ended { session: *session }
    }

    fn evict(&mut self, session: &SessionId) -> Outcome {
        let Some(&i) = self.index.get(session) else {
            return Outcome::Rejected(Rejection::UnknownSession);
        };
        if self.slots[i as usize].state == SlotState::Ended {
            return Outcome::AlreadyEnded { session: *session };
        }
        self.end(i, ExpiredReason::Evicted);
        Outcome::Ended { session: *session }
    }
}

/// What the room estimates of one wait (see "ETA"), milliseconds: `low ≤ central ≤ high`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Estimate {
    central_ms: u64,
    low_ms: u64,
    high_ms: u64,
}

impl Estimate {
    fn exact(ms: u64) -> Self {
        Self {
            central_ms: ms,
            low_ms: ms,
            high_ms: ms,
        }
    }

    /// The single figure, if the range is narrow enough around it (see "ETA").
    fn point_seconds(&self) -> Option<u64> {
        let half_ms = (self.central_ms - self.low_ms).max(self.high_ms - self.central_ms);
        let narrow = u128::from(half_ms) * 100
            <= u128::from(self.central_ms) * u128::from(ETA_POINT_SPREAD_PERCENT_MAX)
            && half_ms <= ETA_POINT_SPREAD_MS_MAX;
        narrow.then(|| self.central_ms.div_ceil(1000))
    }

    fn range(&self) -> WaitRange {
        WaitRange {
            low_seconds: self.low_ms / 1000,
            high_seconds: self.high_ms.div_ceil(1000),
        }
    }
}

/// The ETA window's history (see `Room::turnover`).
struct Turnover {
    freed: u64,
    slot_ms_doubled: u128,
    /// `(time, active count just before it)` at each bucket boundary, newest first.
    boundaries: [(u64, u64); RATE_BUCKETS],
}

/// `value × ppm / 1 000 000`, saturating.
fn scale_ppm(value: u64, ppm: u64) -> u64 {
    u64::try_from(u128::from(value) * u128::from(ppm) / 1_000_000).unwrap_or(u64::MAX)
}

impl SessionView {
    fn set_estimate(&mut self, estimate: Option<Estimate>) {
        self.estimated_wait_seconds = estimate.and_then(|estimate| estimate.point_seconds());
        self.estimated_wait_range = estimate.map(|estimate| estimate.range());
    }
}

/// Queries: answered from memory, change nothing.
impl Room {
    /// The session view, or `None` if the session was never seen or has been forgotten.
    pub fn view(&self, session: &SessionId) -> Option<SessionView> {
        let &i = self.index.get(session)?;
        let slot = &self.slots[i as usize];
        let config = &self.config;
        let mut view = SessionView {
            session: slot.id,
            status: Status::Waiting,
            position: None,
            waiting_count: self.waiting_count(),
            estimated_wait_seconds: None,
            estimated_wait_range: None,
            turn_soon: false,
            prequeue: false,
            opens_at_ms: config.opens_at_ms,
            joined_at_ms: slot.joined_at_ms,
            admitted_at_ms: None,
            expires_at_ms: None,
            last_seen_ms: Some(slot.seen_ms),
            heartbeat_interval_seconds: config.heartbeat_interval_seconds,
            target_url: None,
            expired_reason: None,
        };
        let waiting_deadline = slot.seen_ms + u64::from(config.waiting_idle_timeout_seconds) * 1000;
        match slot.state {
            SlotState::Prequeue => {
                view.prequeue = true;
                // When this pre-queue is drawn: `opensAt`, or the start of the event it is for.
                view.opens_at_ms = config.pre_queue_draw_at(self.now_ms).or(view.opens_at_ms);
                view.expires_at_ms = Some(waiting_deadline);
            }
            SlotState::Waiting => {
                if config.queueing_method == QueueingMethod::Random {
                    // No place in a lottery: the estimate is for the middle of the line.
                    let middle = u64::from(self.line.len().saturating_sub(1) / 2);
                    view.set_estimate(self.estimate(middle));
                } else {
                    let position = u64::from(self.line.ahead_of(slot.aux));
                    view.position = Some(position);
                    view.set_estimate(self.estimate(position));
                    view.turn_soon = self.turn_soon(position);
                }
                view.expires_at_ms = Some(waiting_deadline);
            }
            SlotState::Active => {
                view.status = Status::Active;
                view.admitted_at_ms = Some(slot.aux);
                let idle_deadline =
                    slot.seen_ms + u64::from(config.active_idle_timeout_seconds) * 1000;
                let max_deadline = slot.aux + u64::from(config.max_active_seconds) * 1000;
                view.expires_at_ms = Some(idle_deadline.min(max_deadline));
                view.target_url = config.target_url.clone();
            }
            SlotState::Ended => {
                view.status = Status::Expired;
                view.admitted_at_ms = (slot.aux != NEVER).then_some(slot.aux);
                view.last_seen_ms = None;
                view.expired_reason = Some(slot.reason);
            }
            SlotState::Free => unreachable!("the index names only used slots"),
        }
        Some(view)
    }

    /// Live WAITING sessions, pre-queue included.
    pub fn waiting_count(&self) -> u64 {
        u64::from(self.line.len() + self.prequeue.len())
    }

    pub fn active_count(&self) -> u64 {
        u64::from(self.active_count)
    }

    /// See the module documentation ("ETA"): `None` when the room cannot estimate.
    fn estimate(&self, position: u64) -> Option<Estimate> {
        if !self.exists || self.config.paused || !self.is_open() {
            return None;
        }
        if self.config.queueing_method == QueueingMethod::Passthrough {
            // Nobody waits in an open, running passthrough room.
            return Some(Estimate::exact(0));
        }
        let needed = position + 1;
        let by_rate_ms = self
            .bucket
            .as_ref()
            .map(|bucket| needed * 60_000 / bucket.admit_per_minute());
        let capacity = u64::from(self.capacity());
        let active = u64::from(self.active_count);
        if active < capacity {
            // Slots are free, so only the rate limit holds people back.
            return by_rate_ms.map(Estimate::exact);
        }
        let Turnover {
            freed,
            slot_ms_doubled,
            boundaries,
        } = self.turnover();
        if freed < ETA_FREES_MIN {
            return None;
        }
        // The first fill: the people admitted at the opening are all the same age, and until a
        // few hold times have passed the longer holds have not shown yet. Not yet, until the room
        // has been open for `ETA_SETTLE_HOLDS` times the mean hold it measures (over-estimated
        // early on, so this errs towards waiting longer).
        let opened_ms = self.created_at_ms.max(self.config.opens_at_ms.unwrap_or(0));
        let mean_hold_ms = slot_ms_doubled / (2 * u128::from(freed));
        if u128::from(self.now_ms.saturating_sub(opened_ms))
            < u128::from(ETA_SETTLE_HOLDS) * mean_hold_ms
        {
            return None;
        }
        // Slots over capacity (capacity lowered) must free before anyone is admitted: at the
        // average active count of the drain, `(active + capacity) / 2`; then `needed` slots at
        // `capacity` active. A slot frees every `slot_ms / freed` ms per active session.
        let excess = active - capacity;
        let time_ms = |admissions: u64| -> u64 {
            let numerator = slot_ms_doubled
                * (2 * u128::from(excess) * u128::from(capacity)
                    + u128::from(admissions) * u128::from(active + capacity));
            let denominator =
                2 * u128::from(freed) * u128::from(capacity) * u128::from(active + capacity);
            u64::try_from(numerator / denominator).unwrap_or(u64::MAX)
        };
        // People ahead may leave the line before their turn: at most the share of those who left
        // the line (rather than being admitted) since the room was created.
        let admitted = self.admitted_total;
        let ended_admitted = admitted.saturating_sub(active);
        let left_waiting = self.expired_total.sum().saturating_sub(ended_admitted);
        let ahead_staying = position
            - u64::try_from(
                u128::from(position) * u128::from(left_waiting)
                    / u128::from((left_waiting + admitted).max(1)),
            )
            .unwrap_or(position);
        // Two independent counts decide the spread: the slots freed in the window (the rate) and
        // the slots to free before this turn (each a wait of its own).
        let variance_ppm2 = 1_000_000_000_000 / freed + 1_000_000_000_000 / (needed + excess);
        let spread_ppm = ETA_RANGE_SIGMAS * variance_ppm2.isqrt();
        let central_ms = time_ms(needed);
        let low_ms = scale_ppm(
            time_ms(1 + ahead_staying),
            1_000_000_u64.saturating_sub(spread_ppm),
        );
        // Sessions admitted within the last mean hold (a capacity raise, a resume: the room
        // filled at once) are young and few of them leave soon: the high end counts only the
        // slots that were occupied throughout the last mean hold (the least active count seen
        // since), as if the rest freed nothing for now.
        let since_ms = u128::from(self.now_ms).saturating_sub(mean_hold_ms);
        let proven = boundaries
            .iter()
            .filter(|&&(at_ms, _)| u128::from(at_ms) >= since_ms)
            .map(|&(_, active)| active)
            .fold(active, u64::min)
            .clamp(1, capacity);
        let slow_ms = {
            let numerator = slot_ms_doubled
                * (2 * u128::from(excess) * u128::from(proven)
                    + u128::from(needed) * u128::from(active + capacity));
            let denominator =
                2 * u128::from(freed) * u128::from(proven) * u128::from(active + capacity);
            u64::try_from(numerator / denominator).unwrap_or(u64::MAX)
        };
        let high_ms = scale_ppm(slow_ms, 1_000_000 + spread_ppm);
        let floor_ms = by_rate_ms.unwrap_or(0);
        Some(Estimate {
            central_ms: central_ms.max(floor_ms),
            low_ms: low_ms.max(floor_ms),
            high_ms: high_ms.max(floor_ms),
        })
    }

    /// Slots freed within the ETA window, and the slot time behind them: the integral of the
    /// active count over the window (not before the room was created), in session-milliseconds,
    /// doubled. The active count at each bucket boundary is rebuilt backwards from the current
    /// one with the admissions and frees of each bucket, and taken as linear within a bucket.
    fn turnover(&self) -> Turnover {
        let newest = self.now_ms / RATE_BUCKET_MS;
        let buckets = ETA_WINDOW_MS / RATE_BUCKET_MS;
        let oldest = (newest + 1)
            .saturating_sub(buckets)
            .max(self.created_at_ms / RATE_BUCKET_MS);
        let mut active = u128::from(self.active_count);
        let mut until_ms = self.now_ms;
        let mut freed_total = 0;
        let mut slot_ms_doubled = 0_u128;
        // Up to the oldest bucket with a free: before the first slot freed (the first fill)
        // nobody could have left yet, whatever the hold times, so that time says nothing of them.
        let mut counted_ms_doubled = 0_u128;
        let mut boundaries = [(0, 0); RATE_BUCKETS];
        for (number, boundary) in (oldest..=newest).rev().zip(boundaries.iter_mut()) {
            let start_ms = (number * RATE_BUCKET_MS).max(self.created_at_ms);
            let freed = self.freed_slots.in_bucket(number);
            let admitted = self.admissions.in_bucket(number);
            let before = (active + u128::from(freed)).saturating_sub(u128::from(admitted));
            slot_ms_doubled += (active + before) * u128::from(until_ms.saturating_sub(start_ms));
            if freed > 0 {
                counted_ms_doubled = slot_ms_doubled;
            }
            freed_total += freed;
            active = before;
            until_ms = start_ms;
            *boundary = (start_ms, u64::try_from(before).unwrap_or(u64::MAX));
        }
        // Unused entries stay `(0, 0)`: older than any cut-off of the estimate, never counted.
        Turnover {
            freed: freed_total,
            slot_ms_doubled: counted_ms_doubled,
            boundaries,
        }
    }

    /// See [`RoomStats::newcomer_wait_seconds`]: a newcomer's position is the length of the line
    /// (`random`: the middle of the line they would join; `reject`: nobody can join, no
    /// estimate).
    fn newcomer_wait_seconds(&self) -> Option<u64> {
        if self.pre_queue_collects() {
            // A newcomer's place is still to be drawn.
            return None;
        }
        let ahead = match self.config.queueing_method {
            QueueingMethod::Reject | QueueingMethod::InviteOnly => return None,
            QueueingMethod::Random if self.line.len() > 0 => u64::from(self.line.len() / 2),
            _ => u64::from(self.line.len()),
        };
        let admitted_at_once = ahead == 0
            && self.bucket.is_none()
            && self.active_count < self.capacity()
            && self.exists
            && !self.config.paused
            && self.is_open();
        if admitted_at_once {
            Some(0)
        } else {
            self.estimate(ahead)
                .map(|estimate| estimate.central_ms.div_ceil(1000))
        }
    }

    /// Sessions admitted plus sessions ended since the room was created: changes whenever some
    /// session's status changes (the node wakes reads waiting for a turn on it). O(1).
    pub fn status_changes_total(&self) -> u64 {
        self.admitted_total + self.expired_total.sum()
    }

    pub fn stats(&self) -> RoomStats {
        let oldest_joined_ms = self
            .line
            .front()
            .or(self.prequeue.front())
            .map(|i| self.slots[i as usize].joined_at_ms);
        RoomStats {
            waiting_count: self.waiting_count(),
            active_count: self.active_count(),
            admitted_total: self.admitted_total,
            expired_total: self.expired_total,
            admissions_per_minute: self.admissions.recent(self.now_ms, 60_000, 0).0,
            oldest_waiting_seconds: oldest_joined_ms
                .map_or(0, |joined| self.now_ms.saturating_sub(joined) / 1000),
            newcomer_wait_seconds: self.newcomer_wait_seconds(),
            remembered_ended_count: u64::from(self.ended.len),
            passes_outstanding: self.passes.len() as u64,
        }
    }

    /// A digest of the whole state: replicas that applied the same records have equal digests,
    /// and any difference in sessions, order, counters, configuration, clock, rate state or
    /// remembered ids changes it (up to 128-bit collisions). O(n log n); meant for replica
    /// comparison, not for every request.
    ///
    /// Reads neither the session index, nor the active set by admission time, nor the set of
    /// remembered record ids (nor may `encode_snapshot`): a `SnapshotCopy` leaves them out, and
    /// holds the idempotency keys flat, in slot order (see `digest_with`).
    ///
    /// Leaves out the secret draw seed: the digest is served (`stateDigest`, to admins), and that
    /// of a quiet room (no sessions, no recent records) would hash the seed with public data only,
    /// which a search over the seeds could invert. Replicas that disagreed on a seed would differ
    /// as soon as it draws (the line's order is in the digest); snapshots carry the seed under
    /// their checksum.
    pub fn digest(&self) -> [u8; 16] {
        self.digest_with(self.keys_by_slot())
    }

    /// The idempotency keys in slot order, with their slots.
    pub(crate) fn keys_by_slot(&self) -> KeysBySlot<'_> {
        KeysBySlot::Map(self.key_of_slot.iter())
    }

    /// `digest`, reading the idempotency keys from `keys` (this room's own, or a flat copy of
    /// them: nothing else of `keys`/`key_of_slot` is read).
    pub(crate) fn digest_with(&self, keys: KeysBySlot<'_>) -> [u8; 16] {
        let mut d = Digester::default();
        let c = &self.config;
        d.bytes(self.id.as_str().as_bytes())
            .u64(self.now_ms)
            .u64(u64::from(self.exists));
        d.u64(self.created_at_ms)
            .u64(c.capacity.into())
            .option_u64(c.admit_per_minute.map(u64::from));
        for seconds in [
            c.active_idle_timeout_seconds,
            c.max_active_seconds,
            c.waiting_idle_timeout_seconds,
            c.heartbeat_interval_seconds,
        ] {
            d.u64(seconds.into());
        }
        d.option_u64(c.opens_at_ms)
            .option_u64(c.max_waiting.map(u64::from))
            .u64(u64::from(c.paused));
        d.bytes(c.target_url.as_deref().unwrap_or("\u{0}").as_bytes());
        match &self.file_entry_digest {
            Some(digest) => d.u64(1).bytes(digest),
            None => d.u64(0),
        };
        d.u64(self.admitted_total).u64(self.active_count.into());
        self.expired_total.0.iter().for_each(|&n| {
            d.u64(n);
        });
        match &self.bucket {
            Some(bucket) => bucket.digest_words().iter().for_each(|&w| {
                d.u64(w);
            }),
            None => {
                d.u64(u64::MAX);
            }
        }
        self.admissions
            .digest_words()
            .chain(self.freed_slots.digest_words())
            .for_each(|w| {
                d.u64(w);
            });
        // Every session is on exactly one of these lists; their orders are logical state (who
        // expires or is forgotten first).
        for (tag, list) in [
            (1, &self.waiting_idle),
            (2, &self.active_idle),
            (3, &self.ended),
        ] {
            d.u64(tag).u64(list.len.into());
            for i in list.iter(&self.slots) {
                let s = &self.slots[i as usize];
                d.bytes(&s.id.0).u64(s.joined_at_ms).u64(s.seen_ms);
                d.u64(s.state as u64).u64(s.reason as u64);
                // Sequence numbers and indices are physical; order and admission time are not.
                if matches!(s.state, SlotState::Active | SlotState::Ended) {
                    d.u64(s.aux);
                }
            }
        }
        d.u64(4).u64(self.line.len().into());
        for (_, i) in self.line.iter() {
            d.bytes(&self.slots[i as usize].id.0);
        }
        d.u64(5).u64(self.prequeue.len().into());
        for i in self.prequeue.iter() {
            d.bytes(&self.slots[i as usize].id.0);
        }
        // In slot order, like the snapshot: slot indices are state (see `crate::snapshot`).
        d.u64(6).u64(keys.len() as u64);
        for (i, key) in keys {
            d.bytes(key.as_bytes()).bytes(&self.slots[i as usize].id.0);
        }
        d.u64(7).u64(self.recent_records.order.len() as u64);
        for (at_ms, id) in &self.recent_records.order {
            d.u64(*at_ms).bytes(&id.0);
        }
        // Only when not `fifo`, so a `fifo` room's digest is what it was before queueing
        // methods (snapshots carry it, and nodes compare it: see `Command::CheckDigest`).
        if c.queueing_method != QueueingMethod::Fifo {
            d.u64(8).u64(u64::from(c.queueing_method.index()));
        }
        // Only when there are events, so a room without any keeps its digest.
        if !c.events.is_empty() {
            d.u64(10).u64(c.events.len() as u64);
            for event in &c.events {
                event.digest_into(&mut d);
            }
        }
        // Only when some are outstanding, so a room that never had passes keeps its digest.
        if !self.passes.is_empty() {
            d.u64(9).u64(self.passes.len() as u64);
            for (at_ms, hash) in self.passes.iter() {
                d.u64(at_ms).bytes(&hash);
            }
        }
        d.finish()
    }

    /// Heap bytes held by this room (allocated capacity of its collections, estimated for the
    /// hash map and B-trees from their lengths).
    pub fn heap_bytes(&self) -> usize {
        // hashbrown: one control byte per bucket plus the entry; buckets = next power of two
        // of len * 8 / 7.
        // `capacity()` is 7/8 of the buckets (for tables of 8 buckets and more).
        let buckets = |capacity: usize| (capacity * 8).div_ceil(7).next_power_of_two();
        let index = buckets(self.index.capacity()) * (size_of::<(SessionId, u32)>() + 1);
        let records = buckets(self.recent_records.ids.capacity()) * (size_of::<RecordId>() + 1)
            + self.recent_records.order.capacity() * size_of::<(u64, RecordId)>();
        let btree_entry = 2 * size_of::<(u64, u32)>();
        self.slots.capacity() * size_of::<Slot>()
            + index
            + self.line.heap_bytes()
            + self.prequeue.heap_bytes()
            + self.passes.heap_bytes()
            + self.active_by_admission.len() * btree_entry
            // Each key: one shared allocation (the text and two reference counts) and an entry
            // in each of the two maps.
            + self
                .keys
                .keys()
                .map(|k| k.as_str().len() + 16 + 2 * 40)
                .sum::<usize>()
            + records
    }

    /// Every remembered session id, for tests and tools (order unspecified).
    pub fn session_ids(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.index.keys().copied()
    }
}
