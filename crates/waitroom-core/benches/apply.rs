//! `cargo bench -p waitroom-core`: apply throughput and query latency at a million waiting, and
//! the memory a waiting session costs. Figures go into the crate README.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use waitroom_core::*;

/// Counts live heap bytes, to measure memory per waiting session exactly.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const T0: u64 = 1_800_000_000_000;
const MILLION: u128 = 1_000_000;

fn room_id() -> RoomId {
    RoomId::new("bench").unwrap()
}

/// Long timeouts and capacity 1: everyone but the first waits, nobody expires.
fn config() -> RoomConfig {
    RoomConfig {
        active_idle_timeout_seconds: 86_400,
        max_active_seconds: 86_400,
        waiting_idle_timeout_seconds: 86_400,
        ..RoomConfig::with_capacity(1)
    }
}

fn join(n: u128) -> Record {
    Record::new(
        RecordId::from_u128(n),
        room_id(),
        Command::Join {
            session: SessionId::from_u128(n),
            idempotency_key: None,
        },
    )
}

/// A room with `waiting` sessions in line, joined one millisecond apart per 1000.
fn room_with(waiting: u128) -> Room {
    let mut room = Room::new(room_id());
    let configure = Record::new(
        RecordId::from_u128(u128::MAX),
        room_id(),
        Command::ConfigureRoom(config()),
    );
    room.apply(&configure, T0);
    for n in 0..=waiting {
        room.apply(&join(n), T0 + (n / 1000) as u64);
    }
    room
}

fn joins(c: &mut Criterion) {
    let base = room_with(MILLION);
    const BATCH: u128 = 100_000;
    let records: Vec<Record> = (0..BATCH).map(|n| join(10 * MILLION + n)).collect();
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.bench_function("join into 1M waiting (100k per iteration)", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |room| {
                let ts = T0 + 2_000_000;
                for record in &records {
                    black_box(room.apply(record, ts));
                }
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn heartbeats(c: &mut Criterion) {
    let mut room = room_with(MILLION);
    const SESSIONS_PER_RECORD: usize = 1000;
    let mut next = 0u128;
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(SESSIONS_PER_RECORD as u64));
    group.bench_function("heartbeat batch of 1000 at 1M waiting", |b| {
        b.iter_custom(|iters| {
            let records: Vec<Record> = (0..iters)
                .map(|_| {
                    next += 1;
                    let sessions = (0..SESSIONS_PER_RECORD as u128)
                        .map(|k| SessionId::from_u128((next * 7919 + k * 104_729) % MILLION))
                        .collect();
                    Record::new(
                        RecordId::from_u128(u128::MAX - next),
                        room_id(),
                        Command::Heartbeat { sessions },
                    )
                })
                .collect();
            let ts = room.now_ms() + 1;
            let start = Instant::now();
            for record in &records {
                black_box(room.apply(record, ts));
            }
            start.elapsed()
        })
    });
    group.finish();
}

fn expiry(c: &mut Criterion) {
    // 10 000 sessions due at the tick, 10 000 more that are not.
    let mut base = Room::new(room_id());
    let configure = Record::new(
        RecordId::from_u128(u128::MAX),
        room_id(),
        Command::ConfigureRoom(RoomConfig {
            waiting_idle_timeout_seconds: 120,
            ..config()
        }),
    );
    base.apply(&configure, T0);
    for n in 0..10_001 {
        base.apply(&join(n), T0);
    }
    for n in 10_001..20_001 {
        base.apply(&join(n), T0 + 60_000);
    }
    let tick = Record::new(RecordId::from_u128(u128::MAX - 1), room_id(), Command::Tick);
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("tick expiring 10k waiting sessions", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |room| {
                black_box(room.apply(&tick, T0 + 120_000));
                debug_assert_eq!(room.waiting_count(), 10_000);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn queries(c: &mut Criterion) {
    let room = room_with(MILLION);
    let mut group = c.benchmark_group("query");
    let mut k: u128 = 0;
    group.bench_function("session view (position + ETA) at 1M waiting", |b| {
        b.iter(|| {
            // A pseudo-random walk over the line, so caches don't flatter the figure.
            k = (k + 482_711) % MILLION;
            black_box(room.view(&SessionId::from_u128(k + 1)))
        })
    });
    group.bench_function("room stats at 1M waiting", |b| {
        b.iter(|| black_box(room.stats()))
    });
    group.finish();
}

fn memory(_: &mut Criterion) {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let room = room_with(MILLION);
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    let per_session = (after - before) as f64 / MILLION as f64;
    println!(
        "memory: {per_session:.1} bytes per waiting session at 1M waiting \
         (live heap measured by a counting allocator; Room::heap_bytes estimates {:.1})",
        room.heap_bytes() as f64 / MILLION as f64
    );
    let start = Instant::now();
    let digest = room.digest();
    println!(
        "digest of a 1M-waiting room: {:?} in {:?}",
        &digest[..4],
        start.elapsed()
    );
}

fn configured() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
}

criterion_group! {
    name = benches;
    config = configured();
    targets = memory, joins, heartbeats, expiry, queries
}
criterion_main!(benches);
