//! The RabbitMQ log's own tests; the conformance suite runs here too. The node comes from the
//! test kit's launcher (`testkit::rabbitmq`): the one `scripts/test` started, or one per test
//! binary; tests that crash the broker start their own.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::appending::publish_all;
use super::message::{self, Body, Manifest};
use super::protocol::{Chunk, parse_deliver};
use super::reading::reconnect_delay;
use super::snapshots::SNAPSHOT_REFERENCE;
use super::*;
use crate::Event;
use crate::testkit::conformance::Limits;
use crate::testkit::rabbitmq::{RabbitMqServer, TestRabbitMq};
use crate::testkit::reading::{
    Node, expected, next_event, record, records, unique_prefix, with_options,
};
use crate::testkit::test_name;

const LIMITS: Limits = Limits {
    record_bytes_max: RECORD_BYTES_MAX,
    append_batch_records_max: APPEND_BATCH_RECORDS_MAX,
};

/// Longest a test waits for a retried append.
const WAIT: Duration = Duration::from_secs(60);

/// The test node with a prefix of the test's own, or `None` when the test is skipped.
fn test_url() -> Option<(TestRabbitMq, String)> {
    let node = crate::testkit::rabbitmq::for_test(&test_name())?;
    let url = with_options(node.url(), &format!("prefix={}", unique_prefix()));
    Some((node, url))
}

fn fixture(
    (node, url): (TestRabbitMq, String),
) -> (
    TestRabbitMq,
    impl AsyncFn() -> Result<Box<dyn Log>, LogError>,
) {
    (node, async move || {
        RabbitMqLog::connect(&url)
            .await
            .map(|log| Box::new(log) as Box<dyn Log>)
    })
}

mod conformance {
    crate::conformance_tests!(
        // Skipped (the test returns at once) when no RabbitMQ is available.
        fixture: match super::test_url() {
            Some(test) => super::fixture(test),
            None => return,
        },
        limits: super::LIMITS,
    );
}

#[test]
fn urls_parse_and_never_show_passwords() {
    let settings = Settings::parse(
        "rabbitmq-stream://ticketing:hunter2@mq.example:5553/sales%2Fprod?prefix=tickets&\
         max-age=48h&max-bytes=1073741824&segment-bytes=16777216&keep-history=1h",
    )
    .unwrap();
    assert_eq!(
        settings,
        Settings {
            host: "mq.example".to_owned(),
            port: 5553,
            user: "ticketing".to_owned(),
            password: "hunter2".to_owned(),
            vhost: "sales/prod".to_owned(),
            prefix: "tickets".to_owned(),
            max_age_ms: 48 * 3_600_000,
            max_bytes: Some(1 << 30),
            segment_bytes: 16 << 20,
            keep_history_ms: 3_600_000,
            shown: "rabbitmq-stream://ticketing@mq.example:5553/sales/prod".to_owned(),
        }
    );
    let defaults = Settings::parse("rabbitmq-stream://10.0.0.1").unwrap();
    assert_eq!(
        (
            defaults.port,
            defaults.user.as_str(),
            defaults.password.as_str()
        ),
        (PORT_DEFAULT, "guest", "guest")
    );
    assert_eq!(
        (defaults.vhost.as_str(), defaults.prefix.as_str()),
        ("/", PREFIX_DEFAULT)
    );
    assert_eq!(defaults.max_age_ms, MAX_AGE_DEFAULT_MS);
    assert_eq!(defaults.shown, "rabbitmq-stream://guest@10.0.0.1:5552/%2F");
    let slash = Settings::parse("rabbitmq-stream://u:p%40ss@h/%2F?keep-history=2d").unwrap();
    assert_eq!(
        (slash.vhost.as_str(), slash.password.as_str()),
        ("/", "p@ss")
    );
    assert_eq!(
        slash.max_age_ms,
        2 * 86_400_000,
        "max-age follows a longer keep-history"
    );
    assert_eq!(max_age_argument(86_400_000), "86400s");
}

#[test]
fn bad_urls_are_rejected_without_quoting_them() {
    let long = format!(
        "rabbitmq-stream://u:hunter2@h?prefix={}",
        "x".repeat(NAME_BYTES_MAX + 1)
    );
    for url in [
        "rabbitmq://u:hunter2@h",
        "amqp://u:hunter2@h",
        "rabbitmq-stream://u:hunter2@",
        "rabbitmq-stream://u:hunter2@h/a/b",
        "rabbitmq-stream://u:hunter2@h?prefix=a.b",
        "rabbitmq-stream://u:hunter2@h?unknown=1",
        "rabbitmq-stream://u:hunter2@h?prefix=a&prefix=b",
        "rabbitmq-stream://u:hunter2@h?max-age=10s",
        "rabbitmq-stream://u:hunter2@h?max-age=1h&keep-history=2h",
        "rabbitmq-stream://u:hunter2@h?segment-bytes=1",
        "rabbitmq-stream://u:hunter2@h?max-bytes=lots",
        "rabbitmq-stream://u:hunter2@h#x",
        "rabbitmq-stream://u:hunter2@h/%ZZ",
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
fn envelopes_round_trip() {
    let encode = |parts: &[&[u8]]| {
        let mut buf = BytesMut::new();
        message::put_message(&mut buf, parts);
        // The stored message is what follows the length.
        buf.split_off(4).freeze()
    };
    let stored = encode(&[&message::record_header("r1"), b"r1", b"payload"]);
    assert_eq!(
        message::decode(&stored),
        Ok(Body::Record {
            room: Bytes::from_static(b"r1"),
            payload: Bytes::from_static(b"payload")
        })
    );
    let manifest = Manifest {
        attempt: 7,
        position: 42,
        pieces: 3,
        bytes: 700_000,
        crc32c: 0xdead_beef,
    };
    assert_eq!(
        message::decode(&encode(&[&message::manifest(&manifest)])),
        Ok(Body::Manifest(manifest))
    );
    assert_eq!(
        message::decode(&encode(&[&message::piece_header(7, 2), b"data"])),
        Ok(Body::Piece {
            attempt: 7,
            index: 2,
            data: Bytes::from_static(b"data")
        })
    );
    assert_eq!(
        message::decode(&encode(&[&message::marker(9)])),
        Ok(Body::Marker)
    );
    assert_eq!(
        message::decode(&encode(&[&message::room_event(false, "gone")])),
        Ok(Body::RoomRemoved("gone".to_owned()))
    );
    assert_eq!(
        message::decode(&encode(&[&message::trim(5)])),
        Ok(Body::Trim(5))
    );
    // A short body written by another client (vbin8) still decodes.
    let mut short = vec![0x00, 0x53, 0x75, 0xa0, 4];
    short.extend_from_slice(&message::record_header("r"));
    short.extend_from_slice(b"rx");
    assert!(matches!(
        message::decode(&Bytes::from(short)),
        Ok(Body::Record { .. })
    ));
    for foreign in [
        &b""[..],
        b"\x00\x53\x77\xa0\x00",
        b"\x00\x53\x75\xb0\x00\x00\x00\x09x",
    ] {
        assert!(message::decode(&Bytes::copy_from_slice(foreign)).is_err());
    }
}

#[test]
fn deliver_frames_carry_the_chunk_timestamp() {
    let mut frame = BytesMut::new();
    frame.put_u8(3); // subscription
    frame.put_u8(0x50); // magic and version
    frame.put_u8(0); // user chunk
    frame.put_u16(2); // entries
    frame.put_u32(2); // records
    frame.put_i64(1_764_000_000_123); // timestamp
    frame.put_u64(1); // epoch
    frame.put_u64(40); // first offset
    frame.put_u32(0); // crc
    frame.put_u32(4 + 3 + 4 + 2); // data length
    frame.put_u32(0); // trailer
    frame.put_u32(0); // reserved
    frame.put_u32(3);
    frame.put_slice(b"abc");
    frame.put_u32(2);
    frame.put_slice(b"de");
    let (subscription, chunk) = parse_deliver(frame.freeze()).unwrap();
    assert_eq!(subscription, 3);
    assert_eq!(
        chunk,
        Chunk {
            first_offset: 40,
            timestamp_ms: 1_764_000_000_123,
            messages: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")],
        }
    );
    assert_eq!(chunk.last_offset(), 41);
}

#[test]
fn reconnect_delays_grow_within_bounds() {
    for attempt in 0..64 {
        let delay = reconnect_delay(attempt);
        assert!(delay >= RECONNECT_DELAY_MIN / 2 && delay <= RECONNECT_DELAY_MAX);
    }
    assert!(reconnect_delay(40) >= RECONNECT_DELAY_MAX / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_looks_past_the_markers_of_opening_logs() {
    let Some((_node, url)) = test_url() else {
        return;
    };
    let first = RabbitMqLog::connect(&url).await.unwrap();
    assert_eq!(first.head().await.unwrap(), Checkpoint::start());
    first.append(records(&["a"], 0..3)).await.unwrap();
    let head = first.head().await.unwrap();
    // Every log that opens writes a marker after the last record.
    for _ in 0..3 {
        let again = RabbitMqLog::connect(&url).await.unwrap();
        assert_eq!(again.head().await.unwrap(), head);
    }
    let mut stream = first.subscribe(Checkpoint::start()).await.unwrap();
    let mut node = Node::default();
    node.read_until_caught_up(&mut stream).await;
    assert_eq!(node.payloads(), expected("a", 0..3));
    assert!(node.checkpoint.covers(&head));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_past_the_end_is_rejected() {
    let Some((_node, url)) = test_url() else {
        return;
    };
    let log = RabbitMqLog::connect(&url).await.unwrap();
    log.append(records(&["a"], 0..2)).await.unwrap();
    let head = log.head().await.unwrap();
    let shard = ShardId::new(log.log_stream());
    let mut past = Checkpoint::start();
    past.advance(&shard, Position(head.get(&shard).unwrap().0 + 1));
    match log.subscribe(past).await {
        Err(LogError::Rejected(message)) => assert!(message.contains("past"), "{message}"),
        Err(other) => panic!("expected Rejected, got {other:?}"),
        Ok(_) => panic!("expected Rejected, got a subscription"),
    }
    let mut stream = log.subscribe(head).await.unwrap();
    assert_eq!(next_event(&mut stream).await, Event::CaughtUp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_names_that_cannot_name_a_stream_are_rejected() {
    let Some((_node, url)) = test_url() else {
        return;
    };
    let log = RabbitMqLog::connect(&url).await.unwrap();
    for room in [
        String::new(),
        "x".repeat(ROOM_NAME_BYTES_MAX + 1),
        "a b".to_owned(),
    ] {
        let result = log.append(vec![record(&room, "r".to_owned())]).await;
        assert!(matches!(result, Err(LogError::Rejected(_))), "{result:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_gaps_are_reported_as_trimmed() {
    let Some((_node, url)) = test_url() else {
        return;
    };
    // The smallest segments and retention RabbitMQ takes: 1 MiB each.
    let url = with_options(
        &url,
        &format!("segment-bytes={SEGMENT_BYTES_MIN}&max-bytes={SEGMENT_BYTES_MIN}"),
    );
    let log = RabbitMqLog::connect(&url).await.unwrap();
    let big = |seq: u32| Append {
        room: "big".into(),
        payload: Bytes::from(format!("{seq:08} {}", "x".repeat(100_000))),
    };
    // About 4 MiB: retention (run when a segment fills) removes the first segments.
    for seq in 0..40 {
        log.append(vec![big(seq)]).await.unwrap();
    }
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    let mut node = Node::default();
    node.read_until_caught_up(&mut stream).await;
    let first = node.applied.first().expect("records left").position;
    assert!(
        first.0 > 1,
        "retention removed nothing: first record at {first:?}"
    );
    assert_eq!(
        node.trimmed,
        vec![(ShardId::new(log.log_stream()), Position(first.0 - 1))],
        "a subscription from the start is told what retention removed"
    );
    let seqs: Vec<u32> = node
        .applied
        .iter()
        .map(|entry| {
            String::from_utf8_lossy(&entry.payload[..8])
                .parse()
                .unwrap()
        })
        .collect();
    let from = seqs[0];
    assert_eq!(
        seqs,
        (from..40).collect::<Vec<_>>(),
        "no gap after the trimmed part"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_newer_snapshot_holds_older_ones_off_until_a_newer_one() {
    let Some((_node, url)) = test_url() else {
        return;
    };
    let log = RabbitMqLog::connect(&url).await.unwrap();
    let shard = ShardId::new(log.log_stream());
    let snapshot = |position: u64, fill: u8| Snapshot {
        room: "s".into(),
        shard: shard.clone(),
        position: Position(u128::from(position)),
        bytes: Bytes::from(vec![fill; 600_000]),
    };
    assert!(log.store_snapshot(snapshot(10, 1)).await.unwrap());
    assert!(!log.store_snapshot(snapshot(5, 2)).await.unwrap());
    // A node dies after the first piece of a snapshot at 20.
    let conn = log.store_connection().await.unwrap();
    let header = message::piece_header(99, 0);
    let id = 20 << 24 | 99 << 16;
    assert!(
        publish_all(
            &conn,
            &log.snapshot_stream("s"),
            Some(SNAPSHOT_REFERENCE),
            &[(id, &[&header, b"partial"])]
        )
        .await
        .unwrap()
    );
    assert_eq!(
        log.snapshot_info("s").await.unwrap().unwrap().position.0,
        10
    );
    let refused = log.store_snapshot(snapshot(15, 3)).await;
    assert!(
        matches!(refused, Err(LogError::Unavailable(_))),
        "{refused:?}"
    );
    assert_eq!(log.load_snapshot("s").await.unwrap(), Some(snapshot(10, 1)));
    assert!(log.store_snapshot(snapshot(25, 4)).await.unwrap());
    assert_eq!(log.load_snapshot("s").await.unwrap(), Some(snapshot(25, 4)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_rooms_leave_the_registry_once_trimmed() {
    let Some((_node, url)) = test_url() else {
        return;
    };
    let log = RabbitMqLog::connect(&url).await.unwrap();
    let shard = ShardId::new(log.log_stream());
    log.append(records(&["kept"], 0..2)).await.unwrap();
    log.append(records(&["gone"], 0..2)).await.unwrap();
    let head = log.head().await.unwrap().get(&shard).unwrap();
    for room in ["kept", "gone"] {
        let snapshot = Snapshot {
            room: room.into(),
            shard: shard.clone(),
            position: head,
            bytes: Bytes::from_static(b"state"),
        };
        assert!(log.store_snapshot(snapshot).await.unwrap());
    }
    log.append(records(&["gone"], 2..3)).await.unwrap();
    let last = log.head().await.unwrap().get(&shard).unwrap();
    assert!(log.forget_room("gone", last).await.unwrap());
    // Another log (a node started later) lists the tombstone, and trimming past it drops it.
    let other = RabbitMqLog::connect(&url).await.unwrap();
    let rooms = |infos: Vec<SnapshotInfo>| -> Vec<(String, u64)> {
        let mut rooms: Vec<_> = infos
            .into_iter()
            .map(|info| (info.room.to_string(), info.bytes))
            .collect();
        rooms.sort();
        rooms
    };
    assert_eq!(
        rooms(other.list_snapshots().await.unwrap()),
        vec![("gone".to_owned(), 0), ("kept".to_owned(), 5)]
    );
    other.trim(&shard, last).await.unwrap();
    assert_eq!(other.load_snapshot("gone").await.unwrap(), None);
    assert_eq!(
        rooms(log.list_snapshots().await.unwrap()),
        vec![("kept".to_owned(), 5)]
    );
    // A room created again gets a snapshot stream again.
    let again = Snapshot {
        room: "gone".into(),
        shard: shard.clone(),
        position: last,
        bytes: Bytes::from_static(b"again"),
    };
    assert!(log.store_snapshot(again.clone()).await.unwrap());
    assert_eq!(other.load_snapshot("gone").await.unwrap(), Some(again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_survives_a_rabbitmq_restart_without_gaps_or_repeats() {
    if crate::testkit::rabbitmq::require(&test_name()).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut server = tokio::task::block_in_place(|| RabbitMqServer::start(dir.path())).unwrap();
    let log = RabbitMqLog::connect(&server.url()).await.unwrap();
    log.append(records(&["a"], 0..10)).await.unwrap();
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    let mut node = Node::default();
    node.read_until_caught_up(&mut stream).await;
    assert_eq!(node.applied.len(), 10);

    tokio::task::block_in_place(|| server.kill_9());
    node.read_until(&mut stream, |node| node.unavailable > 0)
        .await;
    let refused = log.append(records(&["a"], 10..11)).await;
    assert!(
        matches!(refused, Err(LogError::Unavailable(_))),
        "{refused:?}"
    );

    tokio::task::block_in_place(|| server.restart()).unwrap();
    node.read_until_caught_up(&mut stream).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Err(error) = log.append(records(&["a"], 10..20)).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "appending after the restart: {error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.read_until(&mut stream, |node| node.applied.len() >= 20)
        .await;
    assert_eq!(node.payloads(), expected("a", 0..20));
    assert_eq!(node.duplicates, 0, "resumed from the delivered offset");
    assert!(node.trimmed.is_empty());

    // A fresh reader sees exactly what the reconnected one applied.
    let mut fresh = Node::default();
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    fresh.read_until_caught_up(&mut stream).await;
    assert_eq!(fresh.applied, node.applied);
    drop(stream);
    drop(log);
    drop(server);
}

/// The broker's own rates that bench/rabbitmq.sh sets beside the log's: each measures messages
/// that really made their trip (the round trip: to the first subscriber), refuses settings out
/// of range, and deletes its stream. And the log asks the node for one append in flight (see
/// `appends_in_flight`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_rates_measure_real_trips_and_clean_up() {
    let Some((_node, url)) = test_url() else {
        return;
    };
    let run = Duration::from_millis(300);
    let prefix = format!("raw-{}", unique_prefix());
    let publish = format!("{prefix}-publish");
    let trip = format!("{prefix}-trip");
    assert!(
        confirmed_publish_rate(&url, &publish, 4, run)
            .await
            .unwrap()
            > 0.0
    );
    assert!(round_trip_rate(&url, &trip, 4, 2, run).await.unwrap() > 0.0);
    for (outstanding, subscribers) in [(0, 1), (4, 0), (4, RAW_SUBSCRIBERS_MAX + 1)] {
        let refused = round_trip_rate(&url, &trip, outstanding, subscribers, run).await;
        assert!(matches!(refused, Err(LogError::Rejected(_))), "{refused:?}");
    }
    let conn = protocol::Connection::open(&settings::Settings::parse(&url).unwrap(), "check")
        .await
        .unwrap();
    for stream in [&publish, &trip] {
        assert!(
            conn.declare_publisher(stream, None)
                .await
                .unwrap()
                .is_none(),
            "{stream} was deleted"
        );
    }
    let log = RabbitMqLog::connect(&url).await.unwrap();
    assert_eq!(log.appends_in_flight(), 1);
}
