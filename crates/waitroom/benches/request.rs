//! `cargo bench -p waitroom --bench request`: the cost of checking a join challenge (below), and
//! the cost of one status poll through waitroom's
//! whole router (routing, layers, metrics, the state lookup, JSON) without a socket, next to a
//! bare axum route answering a body of the same size. The difference is what waitroom adds to
//! each poll on top of the HTTP stack.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower::ServiceExt;
use waitroom::http::{AppState, router};
use waitroom::ids::PublicSessionId;
use waitroom::node::{Node, NodeOptions};
use waitroom::tokens::Tokens;
use waitroom_core::{Command, RoomConfig, RoomId};
use waitroom_log::memory::MemoryLog;

fn polls(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (app, path) = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let node = Node::start(
            Arc::new(MemoryLog::new()),
            NodeOptions::default(),
            &mut tasks,
        );
        node.wait_ready(Duration::from_secs(5)).await.unwrap();
        let room = RoomId::new("bench").unwrap();
        node.write(&room, Command::ConfigureRoom(RoomConfig::with_capacity(1)))
            .await
            .unwrap();
        let mut last = None;
        for _ in 0..1000 {
            let id = PublicSessionId::generate(&room);
            node.write(
                &room,
                Command::Join {
                    session: id.session,
                    idempotency_key: None,
                },
            )
            .await
            .unwrap();
            last = Some(id);
        }
        let state = Arc::new(AppState {
            node: node.clone(),
            tokens: Tokens::new(
                waitroom_token::SigningKey::generate().unwrap(),
                "waitroom".into(),
            ),
            admin_token: "bench-admin-token-0123456789".into(),
            join_rate_limit: None,
            client_ip_header: None,
            registry: node.metrics_registry(),
            held_reads: tokio::sync::Semaphore::new(waitroom::limits::HELD_READS_MAX),
            join_verifier: None,
        });
        std::mem::forget(tasks);
        (
            router(state),
            format!("/api/waiting-room/sessions/{}", last.unwrap().to_text()),
        )
    });
    let body = vec![b'x'; 420];
    let bare = Router::new().route(
        "/api/waiting-room/sessions/{id}",
        get(move || {
            let body = body.clone();
            async move { ([(http::header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let mut group = c.benchmark_group("status poll in-process");
    group.bench_function("waitroom router", |b| {
        b.to_async(&runtime).iter(|| {
            let request = Request::get(&path).body(Body::empty()).unwrap();
            let app = app.clone();
            async move { black_box(app.oneshot(request).await.unwrap()) }
        })
    });
    group.bench_function("bare axum route", |b| {
        b.to_async(&runtime).iter(|| {
            let request = Request::get(&path).body(Body::empty()).unwrap();
            let bare = bare.clone();
            async move { black_box(bare.oneshot(request).await.unwrap()) }
        })
    });
    group.finish();
}

/// What checking a join's challenge costs the node (`waitroom::challenge`): the HMAC of the
/// challenge and the SHA-256 of challenge and solution, at the suggested difficulty; and what
/// issuing one costs. The solution is found once, natively, before the measurement.
fn challenges(c: &mut Criterion) {
    use waitroom::challenge::Challenges;
    use waitroom_core::limits::CHALLENGE_DIFFICULTY_BITS_SUGGESTED as BITS;
    let key = waitroom_token::SigningKey::generate().unwrap();
    let challenges = Challenges::new(&key, &[]);
    let room = RoomId::new("bench").unwrap();
    let now_ms = 1_800_000_000_000;
    let issued = challenges.issue(&room, BITS, now_ms);
    let solution = waitroom_load::pow::solve(&issued.challenge, BITS.into(), 0, u64::MAX)
        .unwrap()
        .solution;
    assert!(
        challenges
            .check(&room, &issued.challenge, &solution, BITS, now_ms)
            .is_ok()
    );
    let mut group = c.benchmark_group("join challenge");
    group.bench_function("check a solved challenge", |b| {
        b.iter(|| {
            black_box(challenges.check(
                black_box(&room),
                black_box(&issued.challenge),
                black_box(&solution),
                BITS,
                now_ms,
            ))
        })
    });
    group.bench_function("issue a challenge", |b| {
        b.iter(|| black_box(challenges.issue(black_box(&room), BITS, now_ms)))
    });
    group.finish();
}

criterion_group!(benches, polls, challenges);
criterion_main!(benches);
