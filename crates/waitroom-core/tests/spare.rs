//! The copy a node takes under a room's lock, into a `SnapshotSpare` prepared beforehand, neither
//! allocates in proportion to the room nor (on Linux) makes the kernel map fresh pages: for the
//! first snapshot of a room, and for a room that grew since the last one. Counted with a global
//! allocator that counts per thread (so tests running in parallel do not disturb each other) and
//! the thread's minor page faults. Speed is the benchmark's business (`benches/snapshot.rs`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use waitroom_core::*;

struct Counting;

thread_local! {
    static ALLOCATED_BYTES: Cell<u64> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    // `try_with`: allocations while the thread is being torn down are not counted.
    let _ = ALLOCATED_BYTES.try_with(|n| n.set(n.get() + bytes as u64));
}

// SAFETY: every call is passed on to the system allocator unchanged; counting touches only a
// thread-local `Cell` with a constant initialiser, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes this thread allocated while `f` ran, and what `f` returned.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCATED_BYTES.with(Cell::get);
    let out = f();
    (ALLOCATED_BYTES.with(Cell::get) - before, out)
}

/// This thread's minor page faults so far (field 10 of `/proc/thread-self/stat`), where Linux
/// tells.
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(7)?.parse().ok()
}

const T0: u64 = 1_800_000_000_000;
/// Large enough that the slab (56 bytes a session) spans well over a thousand pages.
const WAITING: u128 = 100_000;

struct Script {
    room: Room,
    next: u128,
    /// Every join carries an idempotency key, as the waiting page's do.
    keyed: bool,
}

impl Script {
    fn new(keyed: bool) -> Self {
        let mut script = Self {
            room: Room::new(RoomId::new("spare-test").unwrap()),
            next: 0,
            keyed,
        };
        let config = RoomConfig {
            waiting_idle_timeout_seconds: 86_400,
            active_idle_timeout_seconds: 86_400,
            max_active_seconds: 86_400,
            target_url: Some("https://tickets.example.com/select".into()),
            ..RoomConfig::with_capacity(1)
        };
        script.apply(Command::ConfigureRoom(config));
        script
    }

    fn apply(&mut self, command: Command) {
        self.next += 1;
        let record = Record::new(
            RecordId::from_u128(self.next),
            self.room.id().clone(),
            command,
        );
        self.room.apply(&record, T0 + (self.next / 1000) as u64);
    }

    fn join(&mut self, n: u128) {
        for _ in 0..n {
            let session = SessionId::from_u128(self.next);
            let key = self.keyed.then(|| {
                let n = self
                    .next
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
                IdempotencyKey::new(format!("{n:032x}")).unwrap()
            });
            self.apply(Command::Join {
                session,
                idempotency_key: key,
            });
        }
    }
}

/// Copies `room` into `spare` as a node does: sizes, prepare, copy. Asserts that the copy
/// allocated at most `bytes_max` and faulted few pages, and that it encodes like the room.
fn copy_prepared(spare: SnapshotSpare, room: &Room, bytes_max: u64) -> SnapshotSpare {
    let mut spare = spare;
    spare.prepare(&room.sizes());
    let faults_before = minor_faults();
    let (bytes, copy) = allocated_by(|| spare.copy(room));
    let faults_after = minor_faults();
    let copy = copy.expect("a prepared spare holds the room");
    assert!(bytes <= bytes_max, "the copy allocated {bytes} bytes");
    if let (Some(before), Some(after)) = (faults_before, faults_after) {
        // The slab alone spans ~1 400 pages (the keys' text ~800 more); reading the counter
        // costs a few.
        assert!(
            after - before < 64,
            "the copy faulted {} pages",
            after - before
        );
    }
    assert_eq!(copy.encode_snapshot(), room.encode_snapshot());
    copy.into_spare()
}

#[test]
fn copies_into_a_prepared_spare_allocate_nothing() {
    copies_allocate_nothing(false);
}

#[test]
fn copies_of_keyed_sessions_allocate_nothing() {
    copies_allocate_nothing(true);
}

fn copies_allocate_nothing(keyed: bool) {
    let mut script = Script::new(keyed);
    script.join(WAITING);
    // The first snapshot ever: a fresh spare. Only the room id and target URL are new to it.
    let spare = copy_prepared(SnapshotSpare::new(), &script.room, 256);
    // The room grew by 15 % since: the spare is prepared again for its new sizes.
    script.join(WAITING * 15 / 100);
    let spare = copy_prepared(spare, &script.room, 0);
    // Growth between `sizes` and the copy, within the headroom, still fits.
    let mut spare = spare;
    spare.prepare(&script.room.sizes());
    script.join(WAITING / 10);
    let (bytes, copy) = allocated_by(|| spare.copy(&script.room));
    assert_eq!(bytes, 0);
    assert_eq!(
        copy.expect("within the headroom").encode_snapshot(),
        script.room.encode_snapshot()
    );
}

#[test]
fn a_room_that_outgrew_its_spare_is_not_copied() {
    let mut script = Script::new(true);
    script.join(WAITING / 10);
    let mut spare = SnapshotSpare::new();
    spare.prepare(&script.room.sizes());
    script.join(WAITING);
    let (bytes, refused) = allocated_by(|| spare.copy(&script.room));
    assert_eq!(bytes, 0, "refusing copies nothing");
    // Prepared again, it holds the room (the id and URL are new to it).
    copy_prepared(refused.expect_err("outgrown"), &script.room, 256);
}
