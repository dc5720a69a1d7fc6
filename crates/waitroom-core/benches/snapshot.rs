//! `cargo bench -p waitroom-core --bench snapshot`: what taking and restoring a snapshot costs at
//! a million sessions. A node copies the room under a read lock (the applier waits that long) and
//! encodes the copy on another thread, so `clone` / `clone_from` is the figure that stalls a
//! room. Figures go into the crate README.

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

/// As in `benches/apply.rs`: capacity 1 and a million in line, joined 1 000 per millisecond.
fn waiting_room() -> Room {
    let mut room = Room::new(room_id());
    room.apply(&record(u128::MAX, Command::ConfigureRoom(config(1))), T0);
    for n in 0..=MILLION {
        room.apply(&join(n, None), T0 + (n / 1000) as u64);
    }
    room
}

/// A million sessions in every state: 400 000 active (capacity 400 000), 200 000 that completed
/// and are remembered, 400 000 waiting; one in ten joined with an idempotency key.
fn mixed_room() -> Room {
    let mut room = Room::new(room_id());
    room.apply(
        &record(u128::MAX, Command::ConfigureRoom(config(400_000))),
        T0,
    );
    for n in 0..MILLION {
        let key = (n % 10 == 0).then(|| IdempotencyKey::new(format!("key-{n:020}")).unwrap());
        room.apply(&join(n, key), T0 + (n / 1000) as u64);
    }
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
    room
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

/// Total time of `iters` runs of `f`, without the time to drop what each returned.
fn timed<T>(iters: u64, mut f: impl FnMut() -> T) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        let out = black_box(f());
        total += start.elapsed();
        drop(out);
    }
    total
}

fn waiting(c: &mut Criterion) {
    bench_room(c, "1M waiting", &waiting_room());
}

fn mixed(c: &mut Criterion) {
    bench_room(c, "1M mixed", &mixed_room());
}

fn configured() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10))
}

criterion_group! {
    name = benches;
    config = configured();
    targets = waiting, mixed
}
criterion_main!(benches);
