//! The Kafka log's own tests; the conformance suite runs here too, against tansu with memory
//! storage and with SQLite storage. Neither of tansu 0.6's engines has `DeleteRecords`, so there
//! trimming moves the marker and keeps the records (see the trim tests below).
//! Brokers come from the test kit's launcher (`testkit::kafka`).
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::connection::reconnect_delay;
use super::*;
use crate::Event;
use crate::testkit::conformance::Limits;
use crate::testkit::kafka::{Storage, TansuServer, TestKafka};
use crate::testkit::reading::{Node, expected, next_result, records, unique_prefix, with_options};
use crate::testkit::{in_ci, skip, test_name};

const LIMITS: Limits = Limits {
    record_bytes_max: RECORD_BYTES_MAX,
    append_batch_records_max: APPEND_BATCH_RECORDS_MAX,
};

/// Longest a test waits for a broker or a retried append.
const WAIT: Duration = Duration::from_secs(60);

/// The test broker with a topic of the test's own (4 partitions, so rooms share partitions),
/// or `None` when the test is skipped. Keep the handle for the length of the test.
fn test_url() -> Option<(TestKafka, String)> {
    let kafka = crate::testkit::kafka::for_test(&test_name())?;
    let url = with_options(
        kafka.url(),
        &format!("topic={}&partitions=4", unique_prefix()),
    );
    Some((kafka, url))
}

fn fixture<G>((guard, url): (G, String)) -> (G, impl AsyncFn() -> Result<Box<dyn Log>, LogError>) {
    (guard, async move || {
        KafkaLog::connect(&url)
            .await
            .map(|log| Box::new(log) as Box<dyn Log>)
    })
}

/// A private broker with SQLite storage (which survives a restart), or `None` (after a loud
/// `SKIPPED` line) when tansu is missing or was built without the `libsql` feature.
///
/// # Panics
/// With `CI=true` instead of skipping.
fn sqlite_broker(test: &str) -> Option<(TansuServer, tempfile::TempDir)> {
    crate::testkit::kafka::require(test)?;
    let dir = tempfile::tempdir().expect("a temporary directory");
    match TansuServer::start(&dir.path().join("tansu"), Storage::Sqlite) {
        Ok(server) => Some((server, dir)),
        Err(why) if why.contains("lacks the storage engine") && !in_ci() => {
            skip(test, &why);
            None
        }
        Err(why) => panic!("{test}: {why}"),
    }
}

fn sqlite_url() -> Option<((TansuServer, tempfile::TempDir), String)> {
    let broker = sqlite_broker(&test_name())?;
    let url = with_options(
        &broker.0.url(),
        &format!("topic={}&partitions=4", unique_prefix()),
    );
    Some((broker, url))
}

mod conformance_memory_storage {
    crate::conformance_tests!(
        // Skipped (the test returns at once) when no test broker is configured.
        fixture: match super::test_url() {
            Some(test) => super::fixture(test),
            None => return,
        },
        limits: super::LIMITS,
    );
}

mod conformance_sqlite_storage {
    crate::conformance_tests!(
        fixture: match super::sqlite_url() {
            Some(test) => super::fixture(test),
            None => return,
        },
        limits: super::LIMITS,
    );
}

#[test]
fn urls_parse_and_never_show_secrets() {
    let settings = Settings::parse(
        "kafka://k1.example:9093,k2.example?topic=tickets&node=web-1&partitions=32&\
         replication-factor=3&keep-history=1h&delete-records=false&sasl.password=hunter2&\
         security.protocol=SASL_SSL",
    )
    .unwrap();
    assert_eq!(settings.brokers, "k1.example:9093,k2.example:9092");
    assert_eq!(settings.topic, "tickets");
    assert_eq!(settings.snapshot_topic, "tickets.snapshots");
    assert_eq!(settings.partitions, 32);
    assert_eq!(settings.replication_factor, Some(3));
    assert_eq!(settings.node.as_deref(), Some("web-1"));
    assert_eq!(settings.keep_history_ms, 3_600_000);
    assert!(!settings.delete_records && settings.create_topics);
    assert_eq!(settings.properties["sasl.password"], "hunter2");
    let shown = settings.describe("web-1");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("sasl.password") && shown.contains("tickets"),
        "{shown}"
    );

    let plain = Settings::parse("kafka://[::1]").unwrap();
    assert_eq!(plain.brokers, "[::1]:9092");
    assert_eq!(plain.topic, TOPIC_DEFAULT);
    assert_eq!(plain.partitions, PARTITIONS_DEFAULT);
    assert_eq!(plain.replication_factor, None);
    assert!(plain.delete_records && plain.properties.is_empty());
}

#[test]
fn bad_urls_are_rejected_without_quoting_secrets() {
    let long = format!("kafka://h?topic={}", "x".repeat(TOPIC_NAME_BYTES_MAX + 1));
    for url in [
        "redis://h",
        "kafka://",
        "kafka://user:hunter2@h",
        "kafka://h/path?sasl.password=hunter2",
        "kafka://h?topic=a/b&sasl.password=hunter2",
        "kafka://h?partitions=0&sasl.password=hunter2",
        "kafka://h?partitions=100000",
        "kafka://h?replication-factor=x",
        "kafka://h?delete-records=maybe",
        "kafka://h?acks=1&sasl.password=hunter2",
        "kafka://h?enable.idempotence=false",
        "kafka://h?group.id=x",
        "kafka://h?sasl.password=a&sasl.password=hunter2",
        "kafka://h?properties=/nonexistent/file",
        "kafka://h#x",
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
fn properties_come_from_a_file_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.properties");
    std::fs::write(
        &path,
        "# SASL\nsasl.mechanism = PLAIN\n\n! also a comment\nsasl.password=hunter2\n",
    )
    .unwrap();
    let settings = Settings::parse(&format!(
        "kafka://h?properties={}&linger.ms=5",
        path.display()
    ))
    .unwrap();
    assert_eq!(settings.properties["sasl.mechanism"], "PLAIN");
    assert_eq!(settings.properties["sasl.password"], "hunter2");
    assert_eq!(settings.properties["linger.ms"], "5");
    // The same property in both places is refused; so is a line that is not name=value.
    let twice = Settings::parse(&format!(
        "kafka://h?properties={}&sasl.password=x",
        path.display()
    ));
    assert!(matches!(twice, Err(LogError::Rejected(m)) if !m.contains("hunter2")));
    assert!(settings::parse_properties("just words").is_err());
    std::fs::write(&path, "acks=1\n").unwrap();
    let forced = Settings::parse(&format!("kafka://h?properties={}", path.display()));
    assert!(matches!(forced, Err(LogError::Rejected(m)) if m.contains("acks")));
}

#[test]
fn rooms_go_to_kafkas_default_partition() {
    // The Java client's murmur2 test vectors (`UtilsTest.testMurmur2`).
    for (key, hash) in [
        ("21", -973_932_308),
        ("foobar", -790_332_482),
        ("a-little-bit-long-string", -985_981_536),
        ("a-little-bit-longer-string", -1_486_304_829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        ("abc", 479_470_107),
    ] {
        assert_eq!(settings::murmur2(key.as_bytes()), hash, "{key}");
    }
    for room in ["a", "eras-tour", "fleet"] {
        let partition = partition_of(room, 16);
        assert!((0..16).contains(&partition));
        assert_eq!(partition, partition_of(room, 16), "stable");
    }
    assert_eq!(partition_of("anything", 1), 0);
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

#[tokio::test]
async fn unknown_client_properties_are_refused_at_connect() {
    // librdkafka checks names and values when the clients are made, before any connection.
    for (url, name) in [
        (
            "kafka://127.0.0.1:1?no.such.property=hunter2",
            "no.such.property",
        ),
        ("kafka://127.0.0.1:1?linger.ms=hunter2", "linger.ms"),
    ] {
        match KafkaLog::connect(url).await {
            Err(LogError::Rejected(message)) => {
                assert!(message.contains(name), "{message}");
                assert!(!message.contains("hunter2"), "{message}");
            }
            Err(other) => panic!("expected Rejected, got {other:?}"),
            Ok(_) => panic!("expected Rejected, got a log"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_share_partitions_and_every_subscriber_agrees() {
    let Some((_kafka, url)) = test_url() else {
        return;
    };
    let node_a = KafkaLog::connect(&with_options(&url, "node=node-a"))
        .await
        .unwrap();
    let node_b = KafkaLog::connect(&url).await.unwrap();
    assert_eq!(node_a.partitions(), 4);
    let rooms: Vec<String> = (0..12).map(|room| format!("room-{room}")).collect();
    let rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
    node_a.append(records(&rooms[..6], 0..10)).await.unwrap();
    node_b.append(records(&rooms[6..], 0..10)).await.unwrap();
    let mut stream_a = node_a.subscribe(Checkpoint::start()).await.unwrap();
    let mut stream_b = node_b.subscribe(Checkpoint::start()).await.unwrap();
    let (mut seen_a, mut seen_b) = (Node::default(), Node::default());
    seen_a.read_until_caught_up(&mut stream_a).await;
    seen_b.read_until_caught_up(&mut stream_b).await;
    assert_eq!(seen_a.applied.len(), 120);
    assert!(
        seen_a.by_position() == seen_b.by_position(),
        "subscribers disagree"
    );
    let shards: std::collections::BTreeSet<&ShardId> =
        seen_a.applied.iter().map(|entry| &entry.shard).collect();
    assert!(shards.len() > 1 && shards.len() <= 4, "{shards:?}");
    for room in &rooms {
        let shard = node_a.shard_of(room);
        assert_eq!(seen_a.payloads_of_room(&shard, room), expected(room, 0..10));
    }
    // The head names each partition's last record, which the subscribers delivered.
    let head = node_b.head().await.unwrap();
    assert!(seen_a.checkpoint.covers(&head) && head.covers(&seen_a.checkpoint));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_node_commits_its_positions_for_lag_tools() {
    let Some((kafka, url)) = test_url() else {
        return;
    };
    let log = KafkaLog::connect(&with_options(&url, "node=lag-visible"))
        .await
        .unwrap();
    log.append(records(&["a", "b", "c"], 0..5)).await.unwrap();
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    let mut node = Node::default();
    node.read_until_caught_up(&mut stream).await;
    // Commits happen every COMMIT_INTERVAL while the subscription reads on.
    let topic = &log.shared.settings.topic;
    let brokers = kafka.url()["kafka://".len()..]
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "lag-visible")
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    for partition in 0..log.partitions() {
        wanted
            .add_partition_offset(topic, partition, Offset::Invalid)
            .unwrap();
    }
    let expected: Vec<(i32, Offset)> = (0..log.partitions())
        .filter_map(|partition| {
            let shard = log.shared.shard(partition);
            node.checkpoint
                .get(&shard)
                .map(|position| (partition, Offset::Offset(position.0 as i64 + 1)))
        })
        .collect();
    let deadline = tokio::time::Instant::now() + COMMIT_INTERVAL * 4;
    loop {
        // Reading on lets the subscription commit.
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
        let committed = watcher
            .committed_offsets(wanted.clone(), Duration::from_secs(5))
            .unwrap();
        let found: Vec<(i32, Offset)> = committed
            .elements()
            .iter()
            .filter(|element| element.offset() != Offset::Invalid)
            .map(|element| (element.partition(), element.offset()))
            .collect();
        if found == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "committed {found:?}, expected {expected:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_survives_a_broker_restart_without_gaps_or_repeats() {
    let Some((mut server, _dir)) = sqlite_broker(&test_name()) else {
        return;
    };
    let url = with_options(&server.url(), "topic=restart&partitions=2");
    let log = KafkaLog::connect(&url).await.unwrap();
    let rooms = ["a", "b", "c"];
    log.append(records(&rooms, 0..10)).await.unwrap();
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    let mut node = Node::default();
    node.read_until_caught_up(&mut stream).await;
    assert_eq!(node.applied.len(), 30);

    server.kill_9();
    node.read_until(&mut stream, |node| node.unavailable > 0)
        .await;
    server.restart().unwrap();
    node.read_until_caught_up(&mut stream).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    // The producer may fail once more before it has reconnected.
    while let Err(error) = log.append(records(&rooms, 10..20)).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "appending after the restart: {error}"
        );
    }
    node.read_until(&mut stream, |node| {
        rooms.iter().all(|room| {
            node.payloads_of_room(&log.shard_of(room), room)
                .last()
                .is_some_and(|last| *last == format!("{room} 19"))
        })
    })
    .await;
    for room in rooms {
        // A failed append retried may have landed twice: each record at least once, in order.
        let mut seen = node.payloads_of_room(&log.shard_of(room), room);
        seen.dedup();
        assert_eq!(seen, expected(room, 0..20), "room {room}");
    }
    assert_eq!(node.duplicates, 0, "resumed from the delivered positions");

    // A new log on the restarted broker has the same records.
    let again = KafkaLog::connect(&url).await.unwrap();
    let mut stream = again.subscribe(Checkpoint::start()).await.unwrap();
    let mut fresh = Node::default();
    fresh.read_until_caught_up(&mut stream).await;
    assert_eq!(fresh.applied, node.applied);
}

/// Copies the broker's SQLite files (while it is stopped) from `from` to `to`.
fn copy_broker_files(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("tansu.db{suffix}");
        let _ = std::fs::remove_file(to.join(&name));
        if from.join(&name).exists() {
            std::fs::copy(from.join(&name), to.join(&name)).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_lost_acknowledged_records_is_refused_loudly() {
    // The broker comes back with an older copy of its data (as after losing what it had not
    // flushed): records this log delivered, and a snapshot it stored, are gone.
    let Some((mut server, dir)) = sqlite_broker(&test_name()) else {
        return;
    };
    let url = with_options(&server.url(), "topic=lost&partitions=2");
    let log = KafkaLog::connect(&url).await.unwrap();
    let rooms = ["a", "b"];
    log.append(records(&rooms, 0..5)).await.unwrap();
    server.kill_9();
    let older = dir.path().join("older");
    copy_broker_files(server.dir(), &older);
    server.restart().unwrap();

    let deadline = tokio::time::Instant::now() + WAIT;
    while let Err(error) = log.append(records(&rooms, 5..10)).await {
        assert!(tokio::time::Instant::now() < deadline, "{error}");
    }
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    let mut node = Node::default();
    node.read_until_caught_up(&mut stream).await;
    assert!(node.applied.len() >= 20);
    let (shard, position) = node.checkpoint.0.iter().next().unwrap();
    let room = rooms
        .into_iter()
        .find(|room| log.shard_of(room) == *shard)
        .unwrap();
    log.store_snapshot(Snapshot {
        room: room.into(),
        shard: shard.clone(),
        position: *position,
        bytes: Bytes::from_static(b"state"),
    })
    .await
    .unwrap();

    server.kill_9();
    copy_broker_files(&older, server.dir());
    server.restart().unwrap();
    let mut regressed = Vec::new();
    let failure = loop {
        match next_result(&mut stream).await {
            Ok(Event::Unavailable(_) | Event::CaughtUp) => {}
            // Said once, just before the failure, so that the node counts it.
            Ok(Event::Regressed { shards }) if regressed.is_empty() => regressed = shards,
            Ok(other) => panic!("the subscription went on after the loss: {other:?}"),
            Err(error) => break error,
        }
    };
    assert!(matches!(failure, LogError::Corrupt(_)), "{failure:?}");
    assert!(
        !regressed.is_empty()
            && regressed
                .iter()
                .all(|(went_back, _)| node.checkpoint.get(went_back).is_some()),
        "the partitions that went back are named: {regressed:?}"
    );
    assert!(
        tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .is_none(),
        "the stream ends"
    );
    // Everything else this log does is refused from now on, rather than serving rooms that
    // silently lost records.
    assert!(matches!(log.head().await, Err(LogError::Corrupt(_))));
    assert!(matches!(
        log.append(records(&["a"], 10..11)).await,
        Err(LogError::Corrupt(_))
    ));
    assert!(matches!(
        log.list_snapshots().await,
        Err(LogError::Corrupt(_))
    ));
    assert!(matches!(
        log.subscribe(Checkpoint::start()).await,
        Err(LogError::Corrupt(_))
    ));
    // A log opened afterwards has nothing to compare with, but a subscriber that resumes from
    // what it applied is refused.
    let fresh = KafkaLog::connect(&url).await.unwrap();
    assert!(matches!(
        fresh.subscribe(node.checkpoint.clone()).await,
        Err(LogError::Rejected(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trim_survives_a_broker_restart_and_readers_from_before_it_are_told() {
    // tansu implements DeleteRecords in neither of its engines here, so the records stay in the
    // topic (`delete-records=false`); what is trimmed is what the markers say.
    let Some(((mut server, _dir), url)) = sqlite_url() else {
        return;
    };
    let log = KafkaLog::connect(&url).await.unwrap();
    let room = "trimmed-room";
    let shard = log.shard_of(room);
    log.append(records(&[room], 0..20)).await.unwrap();
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    let mut node = Node::default();
    node.read_until_caught_up(&mut stream).await;
    let cut = node.applied[9].position;
    log.store_snapshot(Snapshot {
        room: room.into(),
        shard: shard.clone(),
        position: cut,
        bytes: Bytes::from_static(b"state"),
    })
    .await
    .unwrap();
    log.trim(&shard, cut).await.unwrap();
    drop(log);
    server.kill_9();
    server.restart().unwrap();

    let log = KafkaLog::connect(&url).await.unwrap();
    assert_eq!(log.trimmed().await.unwrap().get(&shard), Some(cut));
    let mut from_start = Node::default();
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    from_start.read_until_caught_up(&mut stream).await;
    assert_eq!(from_start.trimmed, vec![(shard.clone(), cut)]);
    assert_eq!(
        from_start.payloads_of_room(&shard, room),
        expected(room, 10..20)
    );
    // A reader from before the cut is told too; one from the cut is not.
    let before = Checkpoint(BTreeMap::from([(shard.clone(), node.applied[3].position)]));
    let mut behind = Node::default();
    let mut stream = log.subscribe(before).await.unwrap();
    behind.read_until_caught_up(&mut stream).await;
    assert_eq!(behind.trimmed, vec![(shard.clone(), cut)]);
    let mut at_cut = Node::default();
    let mut stream = log.subscribe(log.trimmed().await.unwrap()).await.unwrap();
    at_cut.read_until_caught_up(&mut stream).await;
    assert!(at_cut.trimmed.is_empty());
    assert_eq!(
        at_cut.payloads_of_room(&shard, room),
        expected(room, 10..20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_asks_the_broker_to_delete_records_unless_told_not_to() {
    let Some((_kafka, url)) = test_url() else {
        return;
    };
    // The test broker's URL says delete-records=false; this log asks for DeleteRecords.
    let url = url.replace("delete-records=false", "delete-records=true");
    let log = KafkaLog::connect(&url).await.unwrap();
    assert!(log.shared.settings.delete_records);
    let room = "deleting-room";
    let shard = log.shard_of(room);
    log.append(records(&[room], 0..5)).await.unwrap();
    let through = log.head().await.unwrap().get(&shard).unwrap();
    match log.trim(&shard, through).await {
        // A broker with DeleteRecords (Apache Kafka) drops them: the low watermark moves.
        Ok(()) => {
            let partition = log.shared.partition(&shard).unwrap() as usize;
            let low = log.shared.watermarks(Offset::Beginning).await.unwrap()[partition];
            assert_eq!(low as u128, through.0 + 1);
        }
        // tansu 0.6.0 has none: the request fails, and the error says how to go on.
        Err(LogError::Unavailable(message)) => {
            assert!(message.contains("delete-records=false"), "{message}")
        }
        Err(other) => panic!("{other:?}"),
    }
    // The marker was recorded before the request either way.
    assert_eq!(log.trimmed().await.unwrap().get(&shard), Some(through));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_partition_count_is_refused() {
    let Some((kafka, url)) = test_url() else {
        return;
    };
    let log = KafkaLog::connect(&url).await.unwrap();
    let topic = log.shared.settings.topic.clone();
    drop(log);
    // The log topic is made again with more partitions; the snapshot topic remembers 4.
    let brokers = kafka.url()["kafka://".len()..]
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
    let options = rdkafka::admin::AdminOptions::new();
    admin.delete_topics(&[&topic], &options).await.unwrap();
    let results = admin
        .create_topics(
            [&rdkafka::admin::NewTopic::new(
                &topic,
                6,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &options,
        )
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    match KafkaLog::connect(&url).await {
        Err(LogError::Rejected(message)) => assert!(message.contains("partitions"), "{message}"),
        Err(other) => panic!("expected Rejected, got {other:?}"),
        Ok(_) => panic!("a changed partition count was accepted"),
    }
}
