//! The SQS log's own tests; the conformance suite runs here too. The server is `moto_server`
//! from the test kit's launcher (`testkit::moto`); each test has a prefix of its own, so tests
//! share one server.
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use super::*;
use crate::testkit::conformance::Limits;
use crate::testkit::moto::TestMoto;
use crate::testkit::reading::{Events, record, unique_prefix, with_options};
use crate::testkit::test_name;

const LIMITS: Limits = Limits {
    record_bytes_max: RECORD_BYTES_MAX,
    append_batch_records_max: APPEND_BATCH_RECORDS_MAX,
};

/// Longest a test waits for an event.
const WAIT: Duration = Duration::from_secs(60);

/// The test moto and a URL with a prefix of the test's own, or `None` when the test is skipped.
fn test_url() -> Option<(TestMoto, String)> {
    let moto = crate::testkit::moto::for_test(&test_name())?;
    let url = with_options(moto.url(), &format!("prefix={}", unique_prefix()));
    Some((moto, url))
}

fn fixture(
    (moto, url): (TestMoto, String),
) -> (TestMoto, impl AsyncFn() -> Result<Box<dyn Log>, LogError>) {
    (moto, async move || {
        SqsLog::connect(&url)
            .await
            .map(|log| Box::new(log) as Box<dyn Log>)
    })
}

mod conformance {
    crate::conformance_tests!(
        // Skipped (the test returns at once) when no moto can be had.
        fixture: match super::test_url() {
            Some(test) => super::fixture(test),
            None => return,
        },
        limits: super::LIMITS,
    );
}

/// The payloads of `shard` that start with `tag`, delivered by `events` until `count` arrived
/// (positions checked to follow each other).
async fn read_shard(events: &mut Events, shard: &ShardId, tag: &str, count: usize) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut last = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while payloads.len() < count {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("{shard}: {} of {count} within {WAIT:?}", payloads.len()))
            .expect("the subscription goes on")
            .expect("no error");
        if let Event::Entries(entries) = event {
            for entry in entries.into_iter().filter(|entry| entry.shard == *shard) {
                let seq = entry.position.0 as u64;
                assert!(seq > last, "{shard}: {seq} after {last}");
                last = seq;
                let payload = String::from_utf8(entry.payload.to_vec()).unwrap();
                if payload.starts_with(tag) {
                    payloads.push(payload);
                }
            }
        }
    }
    payloads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_received_again_keeps_its_sequence_numbers() {
    let Some((_moto, url)) = test_url() else {
        return;
    };
    let log = SqsLog::connect(&url).await.unwrap();
    let shared = &log.shared;
    // A group nothing else writes to: this test plays the stamping node itself.
    let group = 0;
    // Intake messages as a stamping node receives them (the receipts are made up: SQS refuses
    // to delete with them, which the stamper only logs).
    let message = |id: &str, text: &str| intake::Received {
        id: id.to_owned(),
        receipt: format!("receipt-{id}"),
        intake: format::Intake::Records {
            group,
            records: vec![Bytes::from(text.to_owned())],
        },
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = [message("m1", "again a"), message("m2", "again b")];
    assert_eq!(
        intake::stamp_group(shared, group, &first, deadline)
            .await
            .unwrap(),
        None
    );
    // Received again (its node was killed after committing): stamped with the same numbers, no
    // new history object.
    assert_eq!(
        intake::stamp_group(shared, group, &first, deadline)
            .await
            .unwrap(),
        None
    );
    let dir = shared.store.names.history_dir(group);
    let keys = shared.store.list(&dir, None, |_| false).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    // Received again with one more message behind: only that one is new.
    let longer = [
        message("m1", "again a"),
        message("m2", "again b"),
        message("m3", "again c"),
    ];
    assert_eq!(
        intake::stamp_group(shared, group, &longer, deadline)
            .await
            .unwrap(),
        None
    );
    let keys = shared.store.list(&dir, None, |_| false).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let newest = shared
        .store
        .object(group, &keys[0].key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((newest.first, newest.end()), (3, 3));
    assert_eq!(newest.records, vec![Bytes::from_static(b"again c")]);
    // Every reader sees a, b, c at 1, 2, 3.
    let mut events = log.subscribe(Checkpoint::start()).await.unwrap();
    let shard = shared.shard(group);
    assert_eq!(
        read_shard(&mut events, &shard, "again", 3).await,
        ["again a", "again b", "again c"]
    );
    // Out of time: nothing is written.
    let late = [message("m4", "again d")];
    assert_eq!(
        intake::stamp_group(shared, group, &late, Instant::now())
            .await
            .unwrap(),
        Some(intake::Outcome::OutOfTime)
    );
    let keys = shared.store.list(&dir, None, |_| false).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_a_node_missed_is_read_from_s3() {
    let Some((_moto, url)) = test_url() else {
        return;
    };
    let log = SqsLog::connect(&url).await.unwrap();
    let room = "missed";
    let shard = log.room_shard(room);
    let group = log.shared.store.names.group_of_shard(&shard.0).unwrap();
    log.append(vec![record(room, "missed one")]).await.unwrap();
    let mut events = log.subscribe(Checkpoint::start()).await.unwrap();
    assert_eq!(
        read_shard(&mut events, &shard, "missed", 1).await,
        ["missed one"]
    );
    // A batch committed to S3 whose copies never came (its copier died before copying).
    let object = format::Object {
        group,
        first: 2,
        timestamp_ms: clients::wall_clock_ms(),
        message_ids: vec!["lost".to_owned()],
        records: vec![
            Bytes::from_static(b"missed two"),
            Bytes::from_static(b"missed three"),
        ],
    };
    let store = &log.shared.store;
    assert!(
        store
            .put(
                &store.names.history_key(group, 2),
                Bytes::from(object.encode()),
                true
            )
            .await
            .unwrap()
    );
    // The next head() answer says the group is at 3: the subscription reads 2 and 3 from S3.
    let head = log.head().await.unwrap();
    assert_eq!(head.get(&shard), Some(Position(3)));
    assert_eq!(
        read_shard(&mut events, &shard, "missed", 2).await,
        ["missed two", "missed three"]
    );
    // And the group goes on from there.
    log.append(vec![record(room, "missed four")]).await.unwrap();
    assert_eq!(
        read_shard(&mut events, &shard, "missed", 1).await,
        ["missed four"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_of_gone_nodes_are_reaped_and_a_dropped_log_deletes_its_own() {
    let Some((_moto, url)) = test_url() else {
        return;
    };
    let log = SqsLog::connect(&with_options(&url, "reap-after=4s&node=reaper"))
        .await
        .unwrap();
    let shared = &log.shared;
    let other = SqsLog::connect(&url).await.unwrap();
    let names = |urls: Vec<String>| -> Vec<String> {
        let mut names: Vec<String> = urls
            .iter()
            .filter_map(|url| url.rsplit('/').next().map(str::to_owned))
            .collect();
        names.sort();
        names
    };
    // A queue whose node was last seen long ago: the reaper (every second at reap-after=4s)
    // deletes it; the live nodes' queues stay.
    let dead = shared.store.names.node_queue("dead", 1);
    shared
        .store
        .clients
        .sqs
        .create_queue()
        .queue_name(&dead)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .tags(reaping::SEEN_TAG, "1000")
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let queues = names(shared.list_node_queues().await.unwrap());
        assert!(queues.contains(&log.queue_name().to_owned()), "{queues:?}");
        assert!(
            queues.contains(&other.queue_name().to_owned()),
            "{queues:?}"
        );
        if !queues.contains(&dead) {
            break;
        }
        assert!(Instant::now() < deadline, "{dead} was not reaped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A clean shutdown deletes the node's queue.
    let other_name = other.queue_name().to_owned();
    drop(other);
    let after = names(shared.list_node_queues().await.unwrap());
    assert!(!after.contains(&other_name), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_stamp_one_order() {
    let Some((_moto, url)) = test_url() else {
        return;
    };
    let a = SqsLog::connect(&with_options(&url, "node=a"))
        .await
        .unwrap();
    let b = SqsLog::connect(&with_options(&url, "node=b"))
        .await
        .unwrap();
    let room = "shared";
    let shard = a.room_shard(room);
    let mut events_a = a.subscribe(Checkpoint::start()).await.unwrap();
    let mut events_b = b.subscribe(Checkpoint::start()).await.unwrap();
    async fn appends(name: &str, node: &SqsLog, room: &str) {
        for seq in 0..30 {
            node.append(vec![record(room, format!("{name}{seq}"))])
                .await
                .unwrap();
        }
    }
    tokio::join!(appends("a", &a, room), appends("b", &b, room));
    let seen_a = read_shard(&mut events_a, &shard, "", 60).await;
    let seen_b = read_shard(&mut events_b, &shard, "", 60).await;
    assert_eq!(seen_a, seen_b);
    for node in ["a", "b"] {
        let own: Vec<&String> = seen_a.iter().filter(|p| p.starts_with(node)).collect();
        let expected: Vec<String> = (0..30).map(|seq| format!("{node}{seq}")).collect();
        assert_eq!(own, expected.iter().collect::<Vec<_>>());
    }
    // Every append was one send to the intake.
    let requests = a.requests();
    assert!(requests[&Request::SqsSend] >= 30, "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_groups_setting_is_refused() {
    let Some((_moto, url)) = test_url() else {
        return;
    };
    let _first = SqsLog::connect(&with_options(&url, "groups=4"))
        .await
        .unwrap();
    match SqsLog::connect(&with_options(&url, "groups=5")).await {
        Err(LogError::Rejected(message)) => assert!(message.contains("groups=4"), "{message}"),
        Err(other) => panic!("expected Rejected, got {other:?}"),
        Ok(_) => panic!("a log with another groups setting opened"),
    }
}
