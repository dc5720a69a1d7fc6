//! The Redis log's own tests; the conformance suite runs here too, on one server and on a
//! Redis Cluster. Servers come from the test kit's launcher (`testkit::redis`).
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::cluster_routing::Slot;

use redis::Value;

use super::connection::reconnect_delay;
use super::*;
use crate::Event;
use crate::testkit::conformance::{self, Limits};
use crate::testkit::reading::{
    Node, expected, next_event, record, records, unique_prefix, with_options,
};
use crate::testkit::redis::{Persistence, RedisCluster, RedisServer, TestRedis};
use crate::testkit::test_name;

const LIMITS: Limits = Limits {
    record_bytes_max: RECORD_BYTES_MAX,
    append_batch_records_max: APPEND_BATCH_RECORDS_MAX,
};

/// Longest a test waits for a server or a retried append.
const WAIT: Duration = Duration::from_secs(30);

/// The test Redis with a prefix of the test's own, or `None` when the test is skipped. Keep the
/// handle for the length of the test.
fn test_url() -> Option<(TestRedis, String)> {
    let redis = crate::testkit::redis::for_test(&test_name())?;
    let url = with_options(redis.url(), &format!("prefix={}", unique_prefix()));
    Some((redis, url))
}

fn fixture(
    (redis, url): (TestRedis, String),
) -> (TestRedis, impl AsyncFn() -> Result<Box<dyn Log>, LogError>) {
    (redis, async move || {
        RedisLog::connect(&url)
            .await
            .map(|log| Box::new(log) as Box<dyn Log>)
    })
}

mod conformance_single_server {
    crate::conformance_tests!(
        // Skipped (the test returns at once) when no test Redis is configured.
        fixture: match super::test_url() {
            Some(test) => super::fixture(test),
            None => return,
        },
        limits: super::LIMITS,
    );
}

/// A plain connection to the Redis of `url` (our options stripped), for checking keys.
async fn raw_connection(url: &str) -> MultiplexedConnection {
    let server = url.split('?').next().unwrap_or(url);
    redis::Client::open(server)
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test Redis")
}

#[test]
fn urls_parse_and_never_show_passwords() {
    let single =
        Settings::parse("redis://user:hunter2@cache.example:6380/2?prefix=tickets&node=web-1")
            .unwrap();
    assert_eq!(
        single,
        Settings {
            servers: Servers::Single("redis://user:hunter2@cache.example:6380/2".to_owned()),
            prefix: "tickets".to_owned(),
            node: Some("web-1".to_owned()),
            keep_history_ms: 0,
            shown: "redis://***@cache.example:6380/2".to_owned(),
        }
    );
    let tls = Settings::parse("rediss://:hunter2@10.0.0.1").unwrap();
    assert_eq!(
        tls.servers,
        Servers::Single("rediss://:hunter2@10.0.0.1".to_owned())
    );
    assert_eq!(tls.shown, "rediss://***@10.0.0.1:6379/0");
    assert_eq!((tls.prefix.as_str(), tls.node), (PREFIX_DEFAULT, None));
    let cluster =
        Settings::parse("rediss+cluster://:hunter2@10.0.0.1:7000,10.0.0.2:7001/?node=a").unwrap();
    assert_eq!(
        cluster.servers,
        Servers::Cluster(vec![
            "rediss://:hunter2@10.0.0.1:7000".to_owned(),
            "rediss://:hunter2@10.0.0.2:7001".to_owned()
        ])
    );
    assert_eq!(
        cluster.shown,
        "rediss+cluster://***@10.0.0.1:7000,10.0.0.2:7001"
    );
    let plain = Settings::parse("redis+cluster://[::1]:7000").unwrap();
    assert_eq!(plain.shown, "redis+cluster://[::1]:7000");
}

#[test]
fn bad_urls_are_rejected_without_quoting_them() {
    let long = format!(
        "redis://:hunter2@h?prefix={}",
        "x".repeat(NAME_BYTES_MAX + 1)
    );
    for url in [
        "http://:hunter2@h",
        "redis//:hunter2@h",
        "redis://",
        "redis://:hunter2@h/notadb",
        "redis://:hunter2@h?prefix=a%20b",
        "redis://:hunter2@h?prefix=a:b",
        "redis://:hunter2@h?unknown=1",
        "redis://:hunter2@h?prefix=a&prefix=b",
        "redis://:hunter2@h?node",
        "redis://:hunter2@h?node=",
        "redis+cluster://:hunter2@h:1/0",
        "redis+cluster://:hunter2@h:1,,h:2",
        "redis://:hunter2@h#insecure",
        long.as_str(),
    ] {
        match Settings::parse(url) {
            Err(LogError::Rejected(message)) => {
                assert!(!message.contains("hunter2"), "{url}: {message}");
            }
            other => panic!("{url}: expected Rejected, got {other:?}"),
        }
    }
}

#[test]
fn stream_ids_pack_into_ordered_positions() {
    let ids: Vec<StreamId> = ["1700000000000-0", "1700000000000-1", "1700000000001-0"]
        .iter()
        .map(|id| StreamId::parse(id.as_bytes()).unwrap())
        .collect();
    assert!(ids[0].position() < ids[1].position() && ids[1].position() < ids[2].position());
    assert_eq!(ids[1].position(), Position((1_700_000_000_000 << 64) | 1));
    for id in ids.iter().copied().chain([StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    }]) {
        assert_eq!(StreamId::from_position(id.position()), id);
    }
    assert_eq!(ids[1].to_string(), "1700000000000-1");
    for bad in ["", "1", "1-", "-1", "x-1", "1-1-1"] {
        assert_eq!(StreamId::parse(bad.as_bytes()), None, "{bad:?}");
    }
}

#[test]
fn keys_hash_by_room_and_registry_keys_share_a_slot() {
    let keys = Keys::new("waitroom");
    assert_eq!(keys.room("concert-1"), "waitroom:{concert-1}:log");
    assert_eq!(keys.rooms, "{waitroom}:rooms");
    assert_eq!(keys.events, "{waitroom}:rooms:events");
    assert_eq!(Slot::for_key(&keys.rooms), Slot::for_key(&keys.events));
    assert_eq!(
        Slot::for_key(keys.room("concert-1")),
        Slot::for_key("{concert-1}")
    );
}

#[test]
fn reconnect_delays_grow_within_bounds() {
    for attempt in 0..64 {
        let delay = reconnect_delay(attempt);
        assert!(delay >= RECONNECT_DELAY_MIN / 2 && delay <= RECONNECT_DELAY_MAX);
    }
    assert!(reconnect_delay(0) <= RECONNECT_DELAY_MIN);
    assert!(reconnect_delay(40) >= RECONNECT_DELAY_MAX / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_survives_a_redis_restart_without_gaps_or_repeats() {
    if crate::testkit::redis::require(&test_name()).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // AOF with an fsync per write, so what Redis acknowledged survives the kill.
    let mut server = RedisServer::start(dir.path(), Persistence::Always).unwrap();
    let log = RedisLog::connect(&with_options(
        &server.url(),
        "prefix=restart&node=restarting",
    ))
    .await
    .unwrap();
    let rooms = ["a", "b"];
    log.append(records(&rooms, 0..10)).await.unwrap();
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    let mut node = Node::default();
    node.read_until_caught_up(&mut stream).await;
    assert_eq!(node.applied.len(), 20);

    server.kill_9();
    node.read_until(&mut stream, |node| node.unavailable > 0)
        .await;
    let refused = log.append(records(&rooms, 10..11)).await;
    assert!(
        matches!(refused, Err(LogError::Unavailable(_))),
        "{refused:?}"
    );

    server.restart().unwrap();
    node.read_until_caught_up(&mut stream).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    // The appenders' connection may fail once more before it has reconnected.
    while let Err(error) = log.append(records(&rooms, 10..20)).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "appending after the restart: {error}"
        );
    }
    node.read_until_applied(&mut stream, 40).await;
    for room in rooms {
        assert_eq!(
            node.payloads_of(&ShardId::new(log.room_key(room))),
            expected(room, 0..20)
        );
    }
    assert_eq!(node.duplicates, 0, "resumed from the delivered positions");

    // A fresh reader sees exactly what the reconnected one applied.
    let mut fresh = Node::default();
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    fresh.read_until_caught_up(&mut stream).await;
    assert_eq!(fresh.applied.len(), 40);
    assert_eq!(fresh.by_position(), node.by_position());
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_has_its_group_and_all_see_the_same_entries() {
    let Some((_redis, url)) = test_url() else {
        return;
    };
    let node_a = RedisLog::connect(&with_options(&url, "node=node-a"))
        .await
        .unwrap();
    let node_b = RedisLog::connect(&with_options(&url, "node=node-b"))
        .await
        .unwrap();
    let mut stream_a = node_a.subscribe(Checkpoint::start()).await.unwrap();
    let mut stream_b = node_b.subscribe(Checkpoint::start()).await.unwrap();
    let (mut seen_a, mut seen_b) = (Node::default(), Node::default());
    seen_a.read_until_caught_up(&mut stream_a).await;
    seen_b.read_until_caught_up(&mut stream_b).await;

    let rooms = ["r0", "r1", "r2"];
    async fn append_from(log: &RedisLog, name: &str, rooms: &[&str]) {
        for seq in 0..20 {
            let batch = rooms
                .iter()
                .map(|room| record(room, format!("{name} {room} {seq}")))
                .collect();
            log.append(batch).await.unwrap();
        }
    }
    let total = 2 * rooms.len() * 20;
    tokio::join!(
        append_from(&node_a, "a", &rooms),
        append_from(&node_b, "b", &rooms),
        seen_a.read_until_applied(&mut stream_a, total),
        seen_b.read_until_applied(&mut stream_b, total),
    );
    for room in rooms {
        let key = ShardId::new(node_a.room_key(room));
        assert_eq!(
            seen_a.payloads_of(&key),
            seen_b.payloads_of(&key),
            "room {room}"
        );
        for name in ["a", "b"] {
            let mine: Vec<String> = seen_a
                .payloads_of(&key)
                .into_iter()
                .filter(|payload| payload.starts_with(&format!("{name} ")))
                .collect();
            let expected: Vec<String> = (0..20).map(|seq| format!("{name} {room} {seq}")).collect();
            assert_eq!(mine, expected, "room {room}, node {name}");
        }
    }
    let positions = |node: &Node| -> Vec<(ShardId, Position)> {
        node.applied
            .iter()
            .map(|entry| (entry.shard.clone(), entry.position))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    assert_eq!(positions(&seen_a), positions(&seen_b));

    // One group per node on every room stream (and on the events stream), each caught up.
    let mut raw = raw_connection(&url).await;
    let events_key = node_a.shared.keys.events.clone();
    for key in rooms
        .iter()
        .map(|room| node_a.room_key(room))
        .chain([events_key])
    {
        let groups: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        let names: BTreeSet<String> = groups
            .iter()
            .map(|group| match group.get("name") {
                Some(Value::BulkString(name)) => String::from_utf8_lossy(name).into_owned(),
                other => panic!("XINFO GROUPS name: {other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["node-a".to_owned(), "node-b".to_owned()]),
            "{key}"
        );
        for group in &groups {
            assert_eq!(group.get("lag"), Some(&Value::Int(0)), "{key}: {group:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_created_after_subscribing_are_read() {
    let Some((_redis, url)) = test_url() else {
        return;
    };
    let log = RedisLog::connect(&url).await.unwrap();
    let other_node = RedisLog::connect(&url).await.unwrap();
    log.append(records(&["first"], 0..3)).await.unwrap();
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    let mut node = Node::default();
    node.read_until_caught_up(&mut stream).await;
    assert_eq!(node.applied.len(), 3);

    log.append(records(&["second", "third"], 0..2))
        .await
        .unwrap();
    other_node.append(records(&["fourth"], 0..2)).await.unwrap();
    node.read_until_applied(&mut stream, 9).await;
    for room in ["second", "third", "fourth"] {
        assert_eq!(
            node.payloads_of(&ShardId::new(log.room_key(room))),
            expected(room, 0..2)
        );
    }
    assert_eq!((node.caught_up, node.unavailable), (1, 0));
}

/// A node whose consumer group was just created (delivered nothing: `0-0`) holds the whole
/// stream: a trim then deletes nothing, and is no error (it once sent Redis the range `(0-0`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trim_under_a_group_delivered_nothing_deletes_nothing() {
    let Some((_redis, url)) = test_url() else {
        return;
    };
    let log = RedisLog::connect(&url).await.unwrap();
    log.append(records(&["room"], 0..5)).await.unwrap();
    let key = log.room_key("room");
    let shard = ShardId(key.clone().into());
    let through = log.head().await.unwrap().0[&shard];
    let mut raw = raw_connection(&url).await;
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("newcomer")
        .arg("0")
        .query_async(&mut raw)
        .await
        .unwrap();
    let created: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&key)
        .arg("newcomer")
        .arg("reader")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(created, 1);
    log.trim(&shard, through).await.unwrap();
    let length: i64 = redis::cmd("XLEN")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(length, 5, "nothing a live group still needs is deleted");
    assert_eq!(log.trimmed().await.unwrap().get(&shard), Some(through));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_rooms_leave_redis_and_the_subscriptions() {
    let Some((_redis, url)) = test_url() else {
        return;
    };
    let log = RedisLog::connect(&url).await.unwrap();
    log.append(records(&["kept", "gone"], 0..5)).await.unwrap();
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    let mut node = Node::default();
    node.read_until_caught_up(&mut stream).await;
    assert_eq!(node.applied.len(), 10);

    let (kept, gone) = (log.room_key("kept"), log.room_key("gone"));
    let last_of_gone = log.head().await.unwrap().0[&ShardId(gone.clone().into())];
    // Not the newest entry of the room: something was appended after it, so it stays.
    let older = Position(last_of_gone.0 - 1);
    assert!(!log.forget_room("gone", older).await.unwrap());
    let mut raw = raw_connection(&url).await;
    let is_member = async |raw: &mut redis::aio::MultiplexedConnection| -> i64 {
        redis::cmd("SISMEMBER")
            .arg(&log.shared.keys.rooms)
            .arg("gone")
            .query_async(raw)
            .await
            .unwrap()
    };
    assert_eq!(is_member(&mut raw).await, 1, "registered again");
    assert_eq!(log.head().await.unwrap().0.len(), 2);
    assert!(log.forget_room("gone", last_of_gone).await.unwrap());
    let head = log.head().await.unwrap();
    assert_eq!(
        head.0
            .keys()
            .map(|shard| shard.0.to_string())
            .collect::<Vec<_>>(),
        vec![kept.clone()]
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&gone)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!((exists, is_member(&mut raw).await), (0, 0));

    // The subscription goes on without the room, and without an outage.
    log.append(records(&["kept"], 5..6)).await.unwrap();
    node.read_until_applied(&mut stream, 11).await;
    // A room appended to again comes back, from its new first record.
    log.append(records(&["gone"], 100..101)).await.unwrap();
    node.read_until_applied(&mut stream, 12).await;
    assert_eq!(
        node.payloads_of(&ShardId::new(gone.clone())),
        [expected("gone", 0..5), expected("gone", 100..101)].concat()
    );
    assert_eq!(node.unavailable, 0);
    // Forgetting an unknown room is fine.
    assert!(log.forget_room("never-was", Position(0)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_past_a_stream_end_is_rejected() {
    let Some((_redis, url)) = test_url() else {
        return;
    };
    let log = RedisLog::connect(&url).await.unwrap();
    log.append(records(&["a"], 0..2)).await.unwrap();
    let head = log.head().await.unwrap();
    let shard = ShardId::new(log.room_key("a"));
    let last = head.get(&shard).unwrap();
    let mut past = Checkpoint::start();
    past.advance(&shard, Position(last.0 + 1));
    match log.subscribe(past).await {
        Err(LogError::Rejected(message)) => assert!(message.contains("past"), "{message}"),
        Err(other) => panic!("expected Rejected, got {other:?}"),
        Ok(_) => panic!("expected Rejected, got a subscription"),
    }
    // Exactly at the end is fine: caught up at once.
    let mut stream = log.subscribe(head).await.unwrap();
    assert_eq!(next_event(&mut stream).await, Event::CaughtUp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_beyond_the_limit_and_bad_room_names_are_rejected() {
    let Some((_redis, url)) = test_url() else {
        return;
    };
    let log = RedisLog::connect(&url).await.unwrap();
    for room in [String::new(), "x".repeat(ROOM_NAME_BYTES_MAX + 1)] {
        let result = log.append(vec![record(&room, "r".to_owned())]).await;
        assert!(matches!(result, Err(LogError::Rejected(_))), "{result:?}");
    }
    // Fill the registry up to the limit behind the log's back, then ask for one more room.
    let mut raw = raw_connection(&url).await;
    let rooms_key = &log.shared.keys.rooms;
    let mut fill = redis::cmd("SADD");
    fill.arg(rooms_key);
    for index in 0..ROOMS_MAX {
        fill.arg(format!("filler-{index}"));
    }
    let _: i64 = fill.query_async(&mut raw).await.unwrap();
    let result = log
        .append(vec![record("one-too-many", "r".to_owned())])
        .await;
    match result {
        Err(LogError::Rejected(message)) => assert!(message.contains("ROOMS_MAX"), "{message}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    let _: i64 = redis::cmd("DEL")
        .arg(rooms_key)
        .query_async(&mut raw)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plain_server_fails_without_panicking() {
    if crate::testkit::redis::require(&test_name()).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start(dir.path(), Persistence::None).unwrap();
    let url = format!("rediss://127.0.0.1:{}", server.port());
    let result = tokio::time::timeout(WAIT, RedisLog::connect(&url)).await;
    assert!(
        matches!(result, Ok(Err(LogError::Unavailable(_)))),
        "{:?}",
        result.map(|result| result.map(|log| log.describe()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_under_redis_cluster() {
    if crate::testkit::redis::require(&test_name()).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(dir.path())).unwrap();
    let url = cluster.url();
    let open = async || {
        RedisLog::connect(&with_options(&url, &format!("prefix={}", unique_prefix())))
            .await
            .unwrap()
    };
    conformance::fresh_log_is_empty(&open().await).await;
    let log = open().await;
    // Rooms hash to slots of their own (and so spread over the nodes).
    let slots: std::collections::HashSet<Slot> = (0..20)
        .map(|room| Slot::for_key(log.room_key(&format!("room{room}"))))
        .collect();
    assert!(slots.len() > 3);
    conformance::appends_arrive_in_order(&log).await;
    conformance::batches_keep_their_order(&log).await;
    conformance::rooms_interleave(&log).await;
    conformance::caught_up_follows_existing_entries_then_live_ones(&log).await;
    conformance::resume_from_checkpoint_delivers_exactly_the_rest(&log).await;
    conformance::head_is_covered_once_applied(&log).await;
    conformance::many_rooms_with_concurrent_appenders(&log).await;
    conformance::concurrent_appenders_keep_their_order(&log).await;
    conformance::subscribers_agree(&log).await;
    conformance::timestamps_never_decrease(&log).await;
    conformance::limits_are_enforced(&log, LIMITS).await;
    conformance::snapshots_store_and_load(&log).await;
    conformance::newer_snapshot_wins(&log).await;
    conformance::trim_drops_history_before_a_snapshot(&log).await;
    conformance::a_reader_behind_a_trim_is_told(&log).await;
    conformance::forget_room_drops_history_and_snapshot(&log).await;
    let prefix = format!("prefix={}", unique_prefix());
    conformance::restart_resumes_from_checkpoint(async || {
        RedisLog::connect(&with_options(&url, &prefix))
            .await
            .map(|log| Box::new(log) as Box<dyn Log>)
    })
    .await;
}

/// Append throughput against the test Redis: `WAITROOM_TEST_REDIS_URL=redis://127.0.0.1:PORT
/// cargo test --release -p waitroom --lib log::redis::tests::append_throughput -- --ignored
/// --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark; run it with --ignored --nocapture"]
async fn append_throughput() {
    let Some((_redis, url)) = test_url() else {
        return;
    };
    let log = RedisLog::connect(&url).await.unwrap();
    let payload = Bytes::from(vec![b'x'; 100]);
    let one = |room: &str| Append {
        room: room.into(),
        payload: payload.clone(),
    };
    log.append(vec![one("bench")]).await.unwrap();
    let report = |what: &str, records: usize, started: Instant| {
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{what}: {records} records in {seconds:.2} s = {:.0} records/s",
            records as f64 / seconds
        );
    };

    let started = Instant::now();
    for _ in 0..2_000 {
        log.append((0..100).map(|_| one("bench")).collect())
            .await
            .unwrap();
    }
    report("batches of 100, one appender", 200_000, started);

    let started = Instant::now();
    for _ in 0..20_000 {
        log.append(vec![one("bench")]).await.unwrap();
    }
    report("single appends, one appender", 20_000, started);

    for appenders in [8, 64] {
        let started = Instant::now();
        let per_appender = 160_000 / appenders;
        let log = &log;
        futures::future::join_all((0..appenders).map(|_| async move {
            for _ in 0..per_appender {
                log.append(vec![one("bench")]).await.unwrap();
            }
        }))
        .await;
        report(
            &format!("single appends, {appenders} concurrent appenders"),
            160_000,
            started,
        );
    }

    let started = Instant::now();
    let log = &log;
    futures::future::join_all((0..8).map(|_| async move {
        for _ in 0..500 {
            log.append((0..100).map(|_| one("bench")).collect())
                .await
                .unwrap();
        }
    }))
    .await;
    report("batches of 100, 8 concurrent appenders", 400_000, started);

    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    let started = Instant::now();
    let mut node = Node::default();
    node.read_until_caught_up(&mut stream).await;
    report("replaying the room", node.applied.len(), started);
}
