//! The node runtime against the memory log: forgetting closed rooms, snapshots, restarts and
//! trims.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use waitroom_core::{Command, LeaveReason, RoomConfig, RoomId, SessionId};
use waitroom_log::memory::{MemoryLog, MemoryLogOptions};
use waitroom_log::{Log, ShardId};

use super::{Node, NodeOptions, SnapshotMode};
use crate::ids::PublicSessionId;

/// Longest a test waits for the node to get somewhere.
const WAIT: Duration = Duration::from_secs(20);

/// Waits until `done` holds, failing the test with `what` after [`WAIT`].
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Snapshots often: every 40 records of a room. No ticker (records come from the test only),
/// so states can be compared at a known point.
fn snapshotting() -> NodeOptions {
    NodeOptions {
        snapshot_every_records: 40,
        snapshot_jitter_ms: 0,
        tick_interval_ms: 60_000,
        ..NodeOptions::default()
    }
}

async fn started(log: &MemoryLog, options: NodeOptions) -> (Arc<Node>, JoinSet<()>) {
    let mut tasks = JoinSet::new();
    let node = Node::start(Arc::new(log.clone()), options, &mut tasks);
    node.wait_ready(WAIT).await.expect("the node turns ready");
    (node, tasks)
}

/// A room with `joins` sessions, of which some heartbeat and some leave; returns the sessions.
async fn busy_room(node: &Node, room: &RoomId, joins: usize) -> Vec<SessionId> {
    node.write(room, Command::ConfigureRoom(RoomConfig::with_capacity(5)))
        .await
        .unwrap();
    let mut sessions = Vec::new();
    for index in 0..joins {
        let session = PublicSessionId::generate(room).session;
        node.write(
            room,
            Command::Join {
                session,
                idempotency_key: None,
            },
        )
        .await
        .unwrap();
        sessions.push(session);
        if index % 7 == 3 {
            node.heartbeat(room, sessions[index / 2]).await.unwrap();
        }
        if index % 11 == 5 {
            node.write(
                room,
                Command::Leave {
                    session: sessions[index / 3],
                    reason: LeaveReason::Left,
                },
            )
            .await
            .unwrap();
        }
    }
    sessions
}

/// Every view of `sessions` on `node`, for comparisons.
fn views(
    node: &Node,
    room: &RoomId,
    sessions: &[SessionId],
) -> Vec<Option<waitroom_core::SessionView>> {
    let cell = node.room(room).expect("the room");
    let state = cell.state.read();
    sessions.iter().map(|session| state.view(session)).collect()
}

/// The memory log's one shard.
fn shard() -> ShardId {
    ShardId::new(waitroom_log::memory::SHARD_NAME)
}

/// A node stores snapshots as a room's log grows and trims the log below them; a node started
/// afterwards on the same log restores the room from its snapshot and reaches exactly the same
/// state (digest, every view); a node told to ignore snapshots cannot replay the trimmed log
/// and stays unready, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_restores_rooms_from_snapshots() {
    let log = MemoryLog::new();
    let room = RoomId::new("snapshotted").unwrap();
    let (first, mut tasks) = started(&log, snapshotting()).await;
    let sessions = busy_room(&first, &room, 300).await;
    until("a snapshot and a trim", || {
        first.metrics.snapshots_stored_total.get() >= 2 && first.metrics.trims_total.get() >= 1
    })
    .await;
    let trimmed = log.trimmed().await.unwrap();
    assert!(trimmed.get(&shard()).is_some(), "the log was trimmed");
    // Let everything settle (ticks keep coming: compare at a quiet moment).
    first.write(&room, Command::Tick).await.unwrap();
    let appended = log.head().await.unwrap();
    until("the first node to apply everything", || {
        first.progress().applied.covers(&appended)
    })
    .await;
    let (digest, position) = first.room_digest(&room).unwrap();
    let expected_views = views(&first, &room, &sessions);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}

    let options = NodeOptions {
        tick_interval_ms: 60_000,
        ..snapshotting()
    };
    let (second, mut tasks) = started(&log, options.clone()).await;
    assert!(
        second.metrics.rooms_restored_total.get() >= 1,
        "restored from a snapshot"
    );
    assert_eq!(second.room_digest(&room), Some((digest, position)));
    assert_eq!(views(&second, &room, &sessions), expected_views);

    // A node that may not use snapshots cannot rebuild the room from what is left: it says so.
    let mut ignoring_tasks = JoinSet::new();
    let ignoring = Node::start(
        Arc::new(log.clone()),
        NodeOptions {
            snapshots: SnapshotMode::Off,
            ..options
        },
        &mut ignoring_tasks,
    );
    until("the snapshot-less node to give up", || {
        ignoring
            .progress()
            .unavailable
            .is_some_and(|why| why.contains("--snapshots off"))
    })
    .await;
    assert!(!ignoring.is_ready());
    ignoring_tasks.abort_all();
    tasks.abort_all();
}

/// With history kept (`keep-history`), trimming drops nothing, so a node that ignores snapshots
/// replays the whole log, and reaches the same state as one that restored from a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_everything_and_restoring_agree() {
    let log = MemoryLog::with_options(MemoryLogOptions {
        keep_history_ms: 3_600_000,
    });
    let room = RoomId::new("kept").unwrap();
    let (first, mut tasks) = started(&log, snapshotting()).await;
    let sessions = busy_room(&first, &room, 200).await;
    until("a trim", || first.metrics.trims_total.get() >= 1).await;
    let entries = log.len();
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    assert_eq!(log.len(), entries);

    let quiet = NodeOptions {
        tick_interval_ms: 60_000,
        ..snapshotting()
    };
    let (restored, restored_tasks) = started(&log, quiet.clone()).await;
    let (replayed, replayed_tasks) = started(
        &log,
        NodeOptions {
            snapshots: SnapshotMode::Off,
            ..quiet
        },
    )
    .await;
    assert!(restored.metrics.rooms_restored_total.get() >= 1);
    assert_eq!(replayed.metrics.rooms_restored_total.get(), 0);
    assert_eq!(restored.room_digest(&room), replayed.room_digest(&room));
    assert_eq!(
        views(&restored, &room, &sessions),
        views(&replayed, &room, &sessions)
    );
    drop((restored_tasks, replayed_tasks));
}

/// Two nodes on one log: each applies everything, snapshots are shared (a node adopts the
/// other's newer snapshot instead of taking its own), and a third node that starts late, from the
/// snapshots and the trimmed log, agrees with both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_snapshots_and_a_late_node_agrees() {
    let log = MemoryLog::new();
    let room = RoomId::new("shared").unwrap();
    let options = NodeOptions {
        snapshot_jitter_ms: 50,
        ..snapshotting()
    };
    let (a, a_tasks) = started(&log, options.clone()).await;
    let (b, b_tasks) = started(&log, options.clone()).await;
    let sessions = busy_room(&a, &room, 150).await;
    sessions.iter().step_by(3).for_each(|_| {});
    for (index, session) in sessions.iter().enumerate().take(60) {
        let node = if index % 2 == 0 { &a } else { &b };
        node.heartbeat(&room, *session).await.unwrap();
    }
    until("snapshots", || {
        a.metrics.snapshots_stored_total.get() + b.metrics.snapshots_stored_total.get() >= 2
    })
    .await;
    a.write(&room, Command::Tick).await.unwrap();
    let head = log.head().await.unwrap();
    until("both nodes to apply everything", || {
        a.progress().applied.covers(&head) && b.progress().applied.covers(&head)
    })
    .await;
    let (late, late_tasks) = started(&log, options).await;
    until("the late node to apply everything", || {
        late.progress().applied.covers(&head)
    })
    .await;
    let digest = a.room_digest(&room);
    assert_eq!(b.room_digest(&room), digest);
    assert_eq!(late.room_digest(&room), digest);
    assert_eq!(views(&late, &room, &sessions), views(&a, &room, &sessions));
    drop((a_tasks, b_tasks, late_tasks));
}

/// A room forgotten where rooms share a shard leaves a tombstone; a node started later skips the
/// forgotten room's old entries (never resurrecting it) and builds the room created again under
/// the same id from its new records only, like a node that saw everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_room_stays_forgotten_after_a_restart() {
    let log = Arc::new(MemoryLog::new());
    let room = RoomId::new("reborn").unwrap();
    let other = RoomId::new("other").unwrap();
    // Ticking fast, so the closed room's clock reaches the end of its retention.
    let ticking = NodeOptions {
        tick_interval_ms: 20,
        closed_room_tick_interval_ms: 20,
        ..snapshotting()
    };
    let (first, mut tasks) = started(&log, ticking).await;
    busy_room(&first, &room, 30).await;
    first.write(&room, Command::CloseRoom).await.unwrap();
    log.skip_time_ms(waitroom_core::limits::SESSION_RETENTION_MS + 1_000);
    until("the closed room to be forgotten", || {
        first.room(&room).is_none()
    })
    .await;
    until("its tombstone", || {
        futures::executor::block_on(log.load_snapshot("reborn"))
            .unwrap()
            .is_some_and(|snapshot| snapshot.is_tombstone())
    })
    .await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}

    // Restarted: the tombstone keeps the old room's entries from being applied; the room is
    // created again, and another room trims the shard past some of the old entries.
    let (second, mut tasks) = started(&log, snapshotting()).await;
    assert!(second.room(&room).is_none(), "a forgotten room came back");
    let sessions = busy_room(&second, &room, 20).await;
    busy_room(&second, &other, 100).await;
    second.write(&room, Command::Tick).await.unwrap();
    let head = log.head().await.unwrap();
    until("the node to apply everything", || {
        second.progress().applied.covers(&head)
    })
    .await;
    let expected = (second.room_digest(&room), views(&second, &room, &sessions));
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}

    let (third, _tasks) = started(&log, snapshotting()).await;
    assert_eq!(
        (third.room_digest(&room), views(&third, &room, &sessions)),
        expected
    );
}

/// A closed room is ticked until its retention has passed, then dropped from the node; a room
/// created again under the same id starts afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_room_is_forgotten_after_its_retention() {
    let log = Arc::new(MemoryLog::new());
    let mut tasks = JoinSet::new();
    let options = NodeOptions {
        closed_room_tick_interval_ms: 50,
        ..NodeOptions::default()
    };
    let node = Node::start(log.clone(), options, &mut tasks);
    node.wait_ready(Duration::from_secs(5)).await.unwrap();
    let room = RoomId::new("closing").unwrap();
    node.write(&room, Command::ConfigureRoom(RoomConfig::with_capacity(1)))
        .await
        .unwrap();
    let session = crate::ids::PublicSessionId::generate(&room).session;
    node.write(
        &room,
        Command::Join {
            session,
            idempotency_key: None,
        },
    )
    .await
    .unwrap();
    node.write(&room, Command::CloseRoom).await.unwrap();
    node.write(&room, Command::Tick).await.unwrap();
    assert!(
        node.room(&room).is_some(),
        "remembered during the retention"
    );

    // The ticker's next tick of the closed room is stamped after the retention.
    log.skip_time_ms(waitroom_core::limits::SESSION_RETENTION_MS + 1_000);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while node.room(&room).is_some() {
        assert!(tokio::time::Instant::now() < deadline, "never forgotten");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        node.find_session(&crate::ids::PublicSessionId::new(&room, session))
            .is_none()
    );

    node.write(&room, Command::ConfigureRoom(RoomConfig::with_capacity(2)))
        .await
        .unwrap();
    let cell = node.room(&room).expect("created again");
    assert_eq!(cell.state.read().stats().active_count, 0);
    tasks.abort_all();
}

/// A log that counts the head reads it answers (and otherwise is a memory log).
struct CountingLog {
    inner: MemoryLog,
    heads: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl Log for CountingLog {
    async fn append(&self, batch: Vec<waitroom_log::Append>) -> Result<(), waitroom_log::LogError> {
        self.inner.append(batch).await
    }
    async fn subscribe(
        &self,
        from: waitroom_log::Checkpoint,
    ) -> Result<
        futures::stream::BoxStream<'static, Result<waitroom_log::Event, waitroom_log::LogError>>,
        waitroom_log::LogError,
    > {
        self.inner.subscribe(from).await
    }
    async fn head(&self) -> Result<waitroom_log::Checkpoint, waitroom_log::LogError> {
        self.heads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.head().await
    }
    async fn forget_room(
        &self,
        room: &str,
        last: waitroom_log::Position,
    ) -> Result<bool, waitroom_log::LogError> {
        self.inner.forget_room(room, last).await
    }
    async fn store_snapshot(
        &self,
        snapshot: waitroom_log::Snapshot,
    ) -> Result<bool, waitroom_log::LogError> {
        self.inner.store_snapshot(snapshot).await
    }
    async fn load_snapshot(
        &self,
        room: &str,
    ) -> Result<Option<waitroom_log::Snapshot>, waitroom_log::LogError> {
        self.inner.load_snapshot(room).await
    }
    async fn snapshot_info(
        &self,
        room: &str,
    ) -> Result<Option<waitroom_log::SnapshotInfo>, waitroom_log::LogError> {
        self.inner.snapshot_info(room).await
    }
    async fn list_snapshots(
        &self,
    ) -> Result<Vec<waitroom_log::SnapshotInfo>, waitroom_log::LogError> {
        self.inner.list_snapshots().await
    }
    async fn trim(
        &self,
        shard: &ShardId,
        through: waitroom_log::Position,
    ) -> Result<(), waitroom_log::LogError> {
        self.inner.trim(shard, through).await
    }
    async fn trimmed(&self) -> Result<waitroom_log::Checkpoint, waitroom_log::LogError> {
        self.inner.trimmed().await
    }
    fn describe(&self) -> String {
        "counting memory log".to_owned()
    }
}

/// A flood of reads of ids nobody issued costs the backend a handful of head reads, not one
/// each: every read waits for a head read sent after it arrived, and they share them. A session
/// appended to the log behind the node's back is still found by a read that arrives after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_unknown_ids_share_head_reads() {
    let inner = MemoryLog::new();
    let log = Arc::new(CountingLog {
        inner: inner.clone(),
        heads: Default::default(),
    });
    let mut tasks = JoinSet::new();
    let node = Node::start(log.clone(), NodeOptions::default(), &mut tasks);
    node.wait_ready(WAIT).await.unwrap();
    let room = RoomId::new("flooded").unwrap();
    node.write(&room, Command::ConfigureRoom(RoomConfig::with_capacity(1)))
        .await
        .unwrap();
    const READS: usize = 2_000;
    let reads = (0..READS).map(|_| {
        let id = PublicSessionId::generate(&room);
        let node = node.clone();
        async move { node.find_session_caught_up(&id).await }
    });
    let answers = futures::future::join_all(reads).await;
    assert!(answers.iter().all(|answer| matches!(answer, Ok(None))));
    let heads = log.heads.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        heads <= 20,
        "{READS} reads of unknown ids made {heads} head reads"
    );
    assert_eq!(node.metrics.log_head_reads_total.get(), heads);

    // Shared, but never stale: a session another node just appended is found.
    let session = PublicSessionId::generate(&room);
    let join = waitroom_core::Record::new(
        crate::ids::new_record_id(),
        room.clone(),
        Command::Join {
            session: session.session,
            idempotency_key: None,
        },
    );
    inner
        .append(vec![waitroom_log::Append {
            room: Arc::from(room.as_str()),
            payload: join.encode().into(),
        }])
        .await
        .unwrap();
    let found = node.find_session_caught_up(&session).await.unwrap();
    assert!(
        found.is_some(),
        "a session appended before the read is found"
    );
    tasks.abort_all();
}

/// A room with no snapshot yet holds its shard's trimming back to the entry just before its
/// first: on the file log, whose positions are byte offsets, that must be a frame's position
/// (the trim marker is where a restarted node subscribes from), never "first position − 1".
/// The node is restarted on the trimmed log and must turn ready with the same rooms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_without_a_snapshot_trims_the_file_log_to_a_frame() {
    use waitroom_log::file::{FileLog, FileLogOptions};

    let dir = tempfile::tempdir().expect("temp dir");
    let open = || Arc::new(FileLog::open(dir.path(), FileLogOptions::default()).expect("open"));
    let busy = RoomId::new("busy").unwrap();
    let late = RoomId::new("late").unwrap();
    // `late` gets 4 records, never enough for a snapshot of its own.
    let options = NodeOptions {
        snapshot_every_ms: 3_600_000,
        ..snapshotting()
    };
    let mut tasks = JoinSet::new();
    let log = open();
    let node = Node::start(log.clone(), options.clone(), &mut tasks);
    node.wait_ready(WAIT).await.expect("ready");
    let mut busy_sessions = busy_room(&node, &busy, 50).await;
    let late_sessions = busy_room(&node, &late, 3).await;
    busy_sessions.extend(busy_room(&node, &busy, 100).await);
    until(
        "snapshots of the busy room and a trim held back by the late one",
        || node.metrics.snapshots_stored_total.get() >= 3 && node.metrics.trims_total.get() >= 2,
    )
    .await;
    let marker = log
        .trimmed()
        .await
        .unwrap()
        .get(&ShardId::new(waitroom_log::file::SHARD_NAME))
        .expect("a trim marker");
    let late_first = {
        let cell = node.room(&late).expect("the late room");
        let room_log = cell.log.lock();
        assert_eq!(
            room_log.snapshot_position, None,
            "the late room has no snapshot"
        );
        room_log
            .before_first
            .expect("an entry before the late room's first")
    };
    assert_eq!(
        marker, late_first,
        "trimmed exactly to the entry before the late room"
    );
    let expected = (
        views(&node, &busy, &busy_sessions),
        views(&node, &late, &late_sessions),
    );
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    drop((node, log));

    let mut tasks = JoinSet::new();
    let node = Node::start(open(), options, &mut tasks);
    node.wait_ready(WAIT)
        .await
        .expect("a node restarted on the trimmed file log turns ready");
    assert_eq!(
        (
            views(&node, &busy, &busy_sessions),
            views(&node, &late, &late_sessions),
        ),
        expected
    );
    tasks.abort_all();
}

/// Digest checks: three nodes on one log, one of which silently changes its copy of a room (a
/// join applied to it alone, as a lost or misread record would). The checks in the log find it
/// out: the odd node counts the room as diverged, rebuilds it from the log and ends with the
/// others' digest; the other two count the disagreement and keep their copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_copy_diverged_finds_out_and_rebuilds_it() {
    use crate::metrics::ResultLabels;
    let log = MemoryLog::new();
    let room = RoomId::new("checked").unwrap();
    // Ticks every 20 ms carry the room's time across a 100 ms interval about every 5th tick.
    let options = NodeOptions {
        tick_interval_ms: 20,
        digest_check_every_ms: 100,
        ..NodeOptions::default()
    };
    let (a, a_tasks) = started(&log, options.clone()).await;
    let (b, b_tasks) = started(&log, options.clone()).await;
    let (odd, odd_tasks) = started(&log, options).await;
    let sessions = busy_room(&a, &room, 30).await;
    let agreed = |node: &Node| {
        node.metrics
            .digest_checks_total
            .get_or_create(&ResultLabels { result: "agree" })
            .get()
    };
    let disagreed = |node: &Node| {
        node.metrics
            .digest_checks_total
            .get_or_create(&ResultLabels { result: "disagree" })
            .get()
    };
    until("checks that agree on every node", || {
        [&a, &b, &odd].iter().all(|node| agreed(node) >= 3)
    })
    .await;
    assert_eq!([disagreed(&a), disagreed(&b), disagreed(&odd)], [0, 0, 0]);

    // The odd node's copy changes behind the log's back.
    let intruder = PublicSessionId::generate(&room).session;
    {
        let cell = odd.room(&room).unwrap();
        let mut state = cell.state.write();
        let now_ms = state.now_ms();
        let record = waitroom_core::Record::new(
            crate::ids::new_record_id(),
            room.clone(),
            Command::Join {
                session: intruder,
                idempotency_key: None,
            },
        );
        state.apply(&record, now_ms);
        assert!(state.view(&intruder).is_some());
    }
    until("the odd node to find out and rebuild the room", || {
        odd.metrics.rooms_diverged_total.get() >= 1
            && odd
                .room(&room)
                .is_some_and(|cell| cell.state.read().view(&intruder).is_none())
    })
    .await;
    assert!(
        disagreed(&a) >= 1 && disagreed(&b) >= 1,
        "the others saw it"
    );
    assert_eq!(
        (
            a.metrics.rooms_diverged_total.get(),
            b.metrics.rooms_diverged_total.get()
        ),
        (0, 0),
        "the majority keeps its copy"
    );
    // Rebuilt, it agrees again: same digest once all three stand at the same entry.
    until("the odd node to be ready again", || {
        odd.progress().caught_up
    })
    .await;
    a.write(&room, Command::Tick).await.unwrap();
    let head = log.head().await.unwrap();
    for node in [&a, &b, &odd] {
        until("every node to apply everything", || {
            node.progress().applied.covers(&head)
        })
        .await;
    }
    // Ticks keep coming: compare at one position, read under each room's lock.
    let at_head = |node: &Node| {
        let cell = node.room(&room).unwrap();
        let state = cell.state.read();
        (cell.log.lock().position, state.digest())
    };
    until("the three copies to agree", || {
        let (first, second, third) = (at_head(&a), at_head(&b), at_head(&odd));
        first == second && second == third
    })
    .await;
    assert_eq!(views(&odd, &room, &sessions), views(&a, &room, &sessions));
    let disagreed_after = disagreed(&a);
    until("more checks that agree on the odd node", || {
        agreed(&odd) >= 3
    })
    .await;
    drop((a_tasks, b_tasks, odd_tasks));
    let _ = disagreed_after;
}

/// An append retried after an unclear answer puts the same record in the log twice: the room
/// applies it once, and the node counts the second as a duplicate (`/metrics`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_appended_twice_is_applied_once_and_counted() {
    let log = MemoryLog::new();
    let room = RoomId::new("retried").unwrap();
    let (node, mut tasks) = started(&log, NodeOptions::default()).await;
    node.write(&room, Command::ConfigureRoom(RoomConfig::with_capacity(1)))
        .await
        .unwrap();
    let first = PublicSessionId::generate(&room).session;
    let second = PublicSessionId::generate(&room).session;
    node.write(
        &room,
        Command::Join {
            session: first,
            idempotency_key: None,
        },
    )
    .await
    .unwrap();
    let retried = waitroom_core::Record::new(
        crate::ids::new_record_id(),
        room.clone(),
        Command::Join {
            session: second,
            idempotency_key: None,
        },
    );
    let before = node.metrics.records_duplicate_total.get();
    for _ in 0..2 {
        log.append(vec![waitroom_log::Append {
            room: Arc::from(room.as_str()),
            payload: retried.encode().into(),
        }])
        .await
        .unwrap();
    }
    let head = log.head().await.unwrap();
    until("the node to apply both copies", || {
        node.progress().applied.covers(&head)
    })
    .await;
    assert_eq!(node.metrics.records_duplicate_total.get(), before + 1);
    // Applied once: one session waits behind the first, not two.
    let cell = node.room(&room).expect("the room");
    let state = cell.state.read();
    let view = state.view(&second).expect("the second session");
    assert_eq!(view.status, waitroom_core::Status::Waiting);
    assert_eq!((view.position, view.waiting_count), (Some(0), 1));
    drop(state);
    tasks.abort_all();
}

/// A memory log standing for a broker that can lose entries: [`RegressingLog::go_back`] swaps in
/// another memory log (the broker as it came back) and tells every live subscription that the
/// log went back, as a backend that notices it does ([`waitroom_log::Event::Regressed`]).
struct RegressingLog {
    current: parking_lot::RwLock<MemoryLog>,
    went_back: tokio::sync::watch::Sender<Option<Option<waitroom_log::Position>>>,
}

impl RegressingLog {
    fn new(log: MemoryLog) -> Self {
        Self {
            current: parking_lot::RwLock::new(log),
            went_back: tokio::sync::watch::Sender::new(None),
        }
    }

    fn log(&self) -> MemoryLog {
        self.current.read().clone()
    }

    /// From now on the log is `now`, which ends at `last`.
    fn go_back(&self, now: MemoryLog, last: Option<waitroom_log::Position>) {
        *self.current.write() = now;
        self.went_back.send_replace(Some(last));
    }
}

#[async_trait::async_trait]
impl Log for RegressingLog {
    async fn append(&self, batch: Vec<waitroom_log::Append>) -> Result<(), waitroom_log::LogError> {
        self.log().append(batch).await
    }
    async fn subscribe(
        &self,
        from: waitroom_log::Checkpoint,
    ) -> Result<
        futures::stream::BoxStream<'static, Result<waitroom_log::Event, waitroom_log::LogError>>,
        waitroom_log::LogError,
    > {
        use futures::StreamExt;
        let mut inner = self.log().subscribe(from).await?;
        let mut went_back = self.went_back.subscribe();
        went_back.mark_unchanged();
        let shard = ShardId::new(waitroom_log::memory::SHARD_NAME);
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = inner.next() => match event {
                        Some(event) => event,
                        None => return,
                    },
                    changed = went_back.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let last = went_back.borrow().flatten();
                        let event = waitroom_log::Event::Regressed { shards: vec![(shard, last)] };
                        let _ = sender.send(Ok(event)).await;
                        return;
                    }
                };
                if sender.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(
            futures::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|event| (event, receiver))
            })
            .boxed(),
        )
    }
    async fn head(&self) -> Result<waitroom_log::Checkpoint, waitroom_log::LogError> {
        self.log().head().await
    }
    async fn forget_room(
        &self,
        room: &str,
        last: waitroom_log::Position,
    ) -> Result<bool, waitroom_log::LogError> {
        self.log().forget_room(room, last).await
    }
    async fn store_snapshot(
        &self,
        snapshot: waitroom_log::Snapshot,
    ) -> Result<bool, waitroom_log::LogError> {
        self.log().store_snapshot(snapshot).await
    }
    async fn load_snapshot(
        &self,
        room: &str,
    ) -> Result<Option<waitroom_log::Snapshot>, waitroom_log::LogError> {
        self.log().load_snapshot(room).await
    }
    async fn snapshot_info(
        &self,
        room: &str,
    ) -> Result<Option<waitroom_log::SnapshotInfo>, waitroom_log::LogError> {
        self.log().snapshot_info(room).await
    }
    async fn list_snapshots(
        &self,
    ) -> Result<Vec<waitroom_log::SnapshotInfo>, waitroom_log::LogError> {
        self.log().list_snapshots().await
    }
    async fn trim(
        &self,
        shard: &ShardId,
        through: waitroom_log::Position,
    ) -> Result<(), waitroom_log::LogError> {
        self.log().trim(shard, through).await
    }
    async fn trimmed(&self) -> Result<waitroom_log::Checkpoint, waitroom_log::LogError> {
        self.log().trimmed().await
    }
    fn describe(&self) -> String {
        "memory log that can go back".to_owned()
    }
}

/// Every entry `log` holds, in order.
async fn entries_of(log: &MemoryLog) -> Vec<waitroom_log::Entry> {
    use futures::StreamExt;
    let mut events = log
        .subscribe(waitroom_log::Checkpoint::start())
        .await
        .unwrap();
    let mut entries = Vec::new();
    loop {
        match events.next().await.unwrap().unwrap() {
            waitroom_log::Event::Entries(batch) => entries.extend(batch),
            waitroom_log::Event::CaughtUp => return entries,
            other => panic!("{other:?}"),
        }
    }
}

/// The broker lost its latest entries but kept the room's snapshot: the node counts it, restores
/// the room from that snapshot, replays what the log still holds after it, and then applies (not
/// skips) the records appended at positions it had applied before, answering their writers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_went_back_is_rebuilt_from_the_snapshot_it_still_continues() {
    // Nothing is dropped by trimming, so the log can be copied from its start.
    let kept = MemoryLogOptions {
        keep_history_ms: 3_600_000,
    };
    let before = MemoryLog::with_options(kept);
    let log = Arc::new(RegressingLog::new(before.clone()));
    let mut tasks = JoinSet::new();
    let node = Node::start(log.clone(), snapshotting(), &mut tasks);
    node.wait_ready(WAIT).await.unwrap();
    let room = RoomId::new("went-back").unwrap();
    busy_room(&node, &room, 60).await;
    let mut snapshot = None;
    until("a snapshot of the room", || {
        snapshot = futures::executor::block_on(before.load_snapshot(room.as_str())).unwrap();
        snapshot.is_some()
    })
    .await;
    let snapshot = snapshot.unwrap();
    // More records after it, which the broker will lose.
    for _ in 0..20 {
        node.write(
            &room,
            Command::Join {
                session: PublicSessionId::generate(&room).session,
                idempotency_key: None,
            },
        )
        .await
        .unwrap();
    }
    let entries = entries_of(&before).await;
    let applied = node.progress().applied.get(&snapshot.shard).unwrap();
    // The broker as it came back: everything up to a few entries after the snapshot, and the
    // snapshot; the rest (the node applied it) is gone.
    let kept_entries: Vec<_> = entries
        .iter()
        .filter(|entry| entry.position <= waitroom_log::Position(snapshot.position.0 + 3))
        .collect();
    let last = kept_entries.last().unwrap().position;
    assert!(
        last < applied,
        "the node applied past what the broker keeps"
    );
    let after = MemoryLog::with_options(kept);
    for entry in &kept_entries {
        after
            .append(vec![waitroom_log::Append {
                room: Arc::from(room.as_str()),
                payload: entry.payload.clone(),
            }])
            .await
            .unwrap();
    }
    assert_eq!(entries_of(&after).await.last().unwrap().position, last);
    assert!(after.store_snapshot(snapshot.clone()).await.unwrap());
    log.go_back(after.clone(), Some(last));

    until("the node counts the log that went back", || {
        node.metrics.log_regressions_total.get() == 1
    })
    .await;
    node.wait_ready(WAIT).await.unwrap();
    // Restored from the snapshot the broker kept: the room lost no history of its own.
    assert_eq!(node.metrics.rooms_restored_total.get(), 1);
    assert_eq!(node.metrics.rooms_diverged_total.get(), 0);
    // A node started on what the broker holds now has the same room.
    let (fresh, mut fresh_tasks) = started(&after, snapshotting()).await;
    let digest = |node: &Node| node.room_digest(&room).map(|(digest, _)| digest);
    until("the nodes agree on the room", || {
        digest(&node) == digest(&fresh)
    })
    .await;
    // New records take positions the node had applied before the loss: applied, and answered.
    for _ in 0..5 {
        let outcome = node
            .write(
                &room,
                Command::Join {
                    session: PublicSessionId::generate(&room).session,
                    idempotency_key: None,
                },
            )
            .await
            .expect("a join after the loss is applied and answered");
        assert!(
            matches!(outcome, waitroom_core::Outcome::Joined { .. }),
            "{outcome:?}"
        );
    }
    assert!(node.progress().applied.get(&snapshot.shard).unwrap() < applied);
    until("the nodes agree on the room again", || {
        digest(&node) == digest(&fresh)
    })
    .await;
    tasks.abort_all();
    fresh_tasks.abort_all();
}
