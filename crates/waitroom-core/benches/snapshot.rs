//! `cargo bench -p waitroom-core --bench snapshot`: what taking and restoring a snapshot costs at
//! a million sessions. A node copies the room under a read lock (the applier waits that long) and
//! encodes the copy on another thread, so the copy is the figure that stalls a room: today's
//! `SnapshotSpare::copy` into a spare prepared outside the lock, beside `clone` and `clone_from`
//! for comparison. The cases that matter are the first snapshot of a room (a fresh spare) and a
//! room that grew since its last snapshot (15 % here): a spare that simply kept the last copy's
//! memory needs fresh memory then. Every figure is the measuring thread's CPU time (user and
//! system, so page faults count; see `thread_cpu_time`), not wall-clock time, so that they mean
//! something on a shared machine. Figures go into the crate README.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use waitroom_core::*;

const T0: u64 = 1_800_000_000_000;
const MILLION: u128 = 1_000_000;

fn room_id() -> RoomId {
    RoomId::new("bench").unwrap()
}

/// Long timeouts, so nobody expires while the room is built.
fn config(capacity: u32) -> RoomConfig {
    RoomConfig {
        active_idle_timeout_seconds: 86_400,
        max_active_seconds: 86_400,
        waiting_idle_timeout_seconds: 86_400,
        ..RoomConfig::with_capacity(capacity)
    }
}

fn record(n: u128, command: Command) -> Record {
    Record::new(RecordId::from_u128(n), room_id(), command)
}

fn join(n: u128, key: Option<IdempotencyKey>) -> Record {
    record(
        n,
        Command::Join {
            session: SessionId::from_u128(n),
            idempotency_key: key,
        },
    )
}

/// How much a room grew since its last snapshot in the "grew" cases: 15 %, so the room at its
/// last snapshot held `EARLIER_SESSIONS`. That crosses a doubling of the session index's hash
/// table (at 7/8 of 2^20 = 917 504 sessions), as a growing room does now and then.
const GROWTH_PER_MILLE: u128 = 150;
const EARLIER_SESSIONS: u128 = MILLION * 1000 / (1000 + GROWTH_PER_MILLE);

/// Joins sessions `from..to` (one in `keyed_every` with an idempotency key; 0: none), 1 000 per
/// millisecond of log time. Keys look like the waiting page's (a random UUID's 36 characters):
/// 32 hex digits of a scrambled `n`, dashed.
fn join_range(room: &mut Room, from: u128, to: u128, keyed_every: u128) {
    for n in from..to {
        let key = (keyed_every != 0 && n % keyed_every == 0).then(|| {
            let hex = format!(
                "{:032x}",
                n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
            );
            let uuid = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            IdempotencyKey::new(uuid).unwrap()
        });
        room.apply(&join(n, key), T0 + (n / 1000) as u64);
    }
}

/// As in `benches/apply.rs`: capacity 1 and a million in line, joined 1 000 per millisecond, one
/// in `keyed_every` with an idempotency key; and the same room when `EARLIER_SESSIONS` had
/// joined.
fn waiting_room(keyed_every: u128) -> (Room, Room) {
    let mut room = Room::new(room_id());
    room.apply(&record(u128::MAX, Command::ConfigureRoom(config(1))), T0);
    join_range(&mut room, 0, EARLIER_SESSIONS, keyed_every);
    let earlier = room.clone();
    join_range(&mut room, EARLIER_SESSIONS, MILLION + 1, keyed_every);
    (earlier, room)
}

/// A million sessions in every state: 400 000 active (capacity 400 000), 200 000 that completed
/// and are remembered, 400 000 waiting; one in `keyed_every` joined with an idempotency key. And
/// the same room when `EARLIER_SESSIONS` had joined (400 000 active, the rest waiting).
fn mixed_room(keyed_every: u128) -> (Room, Room) {
    let mut room = Room::new(room_id());
    room.apply(
        &record(u128::MAX, Command::ConfigureRoom(config(400_000))),
        T0,
    );
    join_range(&mut room, 0, EARLIER_SESSIONS, keyed_every);
    let earlier = room.clone();
    join_range(&mut room, EARLIER_SESSIONS, MILLION, keyed_every);
    let ts = T0 + 2_000;
    for n in (0..400_000).step_by(2) {
        let leave = Command::Leave {
            session: SessionId::from_u128(n),
            reason: LeaveReason::Completed,
        };
        room.apply(&record(MILLION + n, leave), ts);
    }
    assert_eq!(room.active_count(), 400_000);
    assert_eq!(room.waiting_count(), 400_000);
    (earlier, room)
}

/// A spare that copied `room` last (as the node's does after a snapshot of it).
fn spare_after(room: &Room) -> SnapshotSpare {
    let mut spare = SnapshotSpare::new();
    spare.prepare(&room.sizes());
    spare.copy(room).expect("prepared").into_spare()
}

/// Under the lock: what the node does in `take` (the fallback is never taken here).
fn copy(spare: SnapshotSpare, room: &Room) -> SnapshotCopy {
    spare.copy(room).expect("a prepared spare holds the room")
}

/// The calling thread's CPU time, user and system: page faults count, time the thread spent
/// waiting for a core does not (which on a shared machine is most of a 10 ms copy's wall-clock
/// time). On a core of its own, a copy's wall-clock time is this.
#[cfg(unix)]
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the clock id is a constant of the platform.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Elsewhere, wall-clock time since the first call.
#[cfg(not(unix))]
fn thread_cpu_time() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// The thread CPU time of one run of `f`, without the time to drop what it returned.
fn cpu_timed<T>(f: impl FnOnce() -> T) -> Duration {
    let start = thread_cpu_time();
    let out = black_box(f());
    let spent = thread_cpu_time() - start;
    drop(out);
    spent
}

/// What a node's snapshot pause costs for `room`, which was `earlier` at its last snapshot: the
/// copy under the lock (as before this spare, and into a prepared spare for a room that grew, a
/// first snapshot, and a room of the same size), and the preparation outside the lock.
fn bench_copies(c: &mut Criterion, name: &str, earlier: &Room, room: &Room) {
    let mut group = c.benchmark_group(format!("snapshot copy/{name}"));
    group.sample_size(10);
    // Each iteration rebuilds a spare (untimed, ~100 ms): a short measurement keeps the run short.
    group.measurement_time(Duration::from_secs(3));
    group.bench_function(
        "before: clone_from into the spare of the last snapshot, room grew",
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut spare = earlier.clone();
                    total += cpu_timed(|| spare.clone_from(black_box(room)));
                }
                total
            })
        },
    );
    group.bench_function("copy into a prepared spare, room grew", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut spare = spare_after(earlier);
                spare.prepare(&room.sizes());
                total += cpu_timed(|| copy(spare, black_box(room)));
            }
            total
        })
    });
    group.bench_function("copy into a prepared spare, first snapshot", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut spare = SnapshotSpare::new();
                spare.prepare(&room.sizes());
                total += cpu_timed(|| copy(spare, black_box(room)));
            }
            total
        })
    });
    // The steady state: the spare prepared again for the same room (its memory already mapped).
    let mut kept = Some(spare_after(room));
    group.bench_function("copy into a prepared spare, same size", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut spare = kept.take().unwrap();
                spare.prepare(&room.sizes());
                let start = thread_cpu_time();
                let copied = copy(spare, black_box(room));
                total += thread_cpu_time() - start;
                kept = Some(copied.into_spare());
            }
            total
        })
    });
    // Outside the lock: the applier is not held, but a core is busy this long.
    group.bench_function("prepare a fresh spare (no lock)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut spare = SnapshotSpare::new();
                total += cpu_timed(|| spare.prepare(black_box(&room.sizes())));
            }
            total
        })
    });
    group.bench_function("prepare the spare of the last snapshot (no lock)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut spare = kept.take().unwrap();
            for _ in 0..iters {
                total += cpu_timed(|| spare.prepare(black_box(&room.sizes())));
            }
            kept = Some(spare);
            total
        })
    });
    group.finish();
}

fn bench_room(c: &mut Criterion, name: &str, room: &Room) {
    let sessions = room.waiting_count() + room.active_count() + room.stats().remembered_ended_count;
    let bytes = room.encode_snapshot();
    println!(
        "{name}: {sessions} sessions, snapshot {} bytes = {:.1} bytes per session",
        bytes.len(),
        bytes.len() as f64 / sessions as f64
    );
    let start = Instant::now();
    black_box(room.digest());
    println!(
        "{name}: digest (encode and restore compute one each) {:?}",
        start.elapsed()
    );

    let mut group = c.benchmark_group(format!("snapshot/{name}"));
    group.sample_size(10);
    // Each timing excludes dropping what it built: a node drops its clone on the encoding thread.
    group.bench_function("clone", |b| {
        b.iter_custom(|iters| timed(iters, || room.clone()))
    });
    // How a node should take it: into a spare room kept from the previous snapshot, whose memory
    // is already mapped.
    let mut spare = room.clone();
    group.bench_function("clone_from into a spare", |b| {
        b.iter_custom(|iters| timed(iters, || spare.clone_from(black_box(room))))
    });
    group.bench_function("encode_snapshot", |b| {
        b.iter_custom(|iters| timed(iters, || room.encode_snapshot()))
    });
    group.bench_function("restore_snapshot", |b| {
        b.iter_custom(|iters| timed(iters, || Room::restore_snapshot(&bytes).unwrap()))
    });
    group.finish();
}

/// Total thread CPU time of `iters` runs of `f`, without the time to drop what each returned.
fn timed<T>(iters: u64, mut f: impl FnMut() -> T) -> Duration {
    (0..iters).map(|_| cpu_timed(&mut f)).sum()
}

fn waiting(c: &mut Criterion) {
    let (earlier, room) = waiting_room(0);
    bench_room(c, "1M waiting", &room);
    bench_copies(c, "1M waiting", &earlier, &room);
}

/// Every session joined with an idempotency key, as the waiting page joins.
fn waiting_keyed(c: &mut Criterion) {
    let (earlier, room) = waiting_room(1);
    bench_room(c, "1M waiting, all keyed", &room);
    bench_copies(c, "1M waiting, all keyed", &earlier, &room);
}

fn mixed(c: &mut Criterion) {
    let (earlier, room) = mixed_room(10);
    bench_room(c, "1M mixed", &room);
    bench_copies(c, "1M mixed", &earlier, &room);
}

/// The mixed room without idempotency keys: what the keys' B-trees cost the copy.
fn mixed_without_keys(c: &mut Criterion) {
    let (earlier, room) = mixed_room(0);
    bench_copies(c, "1M mixed, no keys", &earlier, &room);
}

fn configured() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10))
}

criterion_group! {
    name = benches;
    config = configured();
    targets = waiting, waiting_keyed, mixed, mixed_without_keys
}
criterion_main!(benches);
