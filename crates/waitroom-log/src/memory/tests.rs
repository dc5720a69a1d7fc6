//! The memory log's own tests; the conformance suite runs here too.
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::testkit::conformance::Limits;

const LIMITS: Limits = Limits {
    record_bytes_max: RECORD_BYTES_MAX,
    append_batch_records_max: APPEND_BATCH_RECORDS_MAX,
};

fn fixture() -> ((), impl AsyncFn() -> Result<Box<dyn Log>, LogError>) {
    let log = MemoryLog::new();
    ((), async move || Ok(Box::new(log.clone()) as Box<dyn Log>))
}

mod conformance {
    crate::conformance_tests!(fixture: super::fixture(), limits: super::LIMITS);
}

fn append(room: &str, payload: &'static str) -> Append {
    Append {
        room: room.into(),
        payload: Bytes::from_static(payload.as_bytes()),
    }
}

#[tokio::test]
async fn positions_are_indexes_and_head_names_the_last() {
    let log = MemoryLog::new();
    assert_eq!(log.head().await.unwrap(), Checkpoint::start());
    log.append(vec![append("a", "0"), append("b", "1")])
        .await
        .unwrap();
    log.append(vec![append("a", "2")]).await.unwrap();
    let shard = ShardId::new(SHARD_NAME);
    assert_eq!(log.head().await.unwrap().get(&shard), Some(Position(2)));

    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Event::Entries(entries) = event else {
        panic!("expected entries, got {event:?}");
    };
    let positions: Vec<_> = entries.iter().map(|entry| entry.position).collect();
    assert_eq!(positions, vec![Position(0), Position(1), Position(2)]);
    assert!(entries.iter().all(|entry| entry.shard == shard));
}

#[tokio::test]
async fn checkpoint_beyond_the_log_is_rejected() {
    let log = MemoryLog::new();
    log.append(vec![append("a", "0")]).await.unwrap();
    let mut from = Checkpoint::start();
    from.advance(&ShardId::new(SHARD_NAME), Position(1));
    let result = log.subscribe(from).await;
    assert!(matches!(result, Err(LogError::Rejected(_))));
}

#[tokio::test]
async fn batch_over_the_byte_limit_is_rejected_whole() {
    let log = MemoryLog::new();
    let big = Bytes::from(vec![b'x'; RECORD_BYTES_MAX]);
    let records = APPEND_BATCH_BYTES_MAX / RECORD_BYTES_MAX + 1;
    let batch = (0..records)
        .map(|_| Append {
            room: "a".into(),
            payload: big.clone(),
        })
        .collect();
    assert!(matches!(
        log.append(batch).await,
        Err(LogError::Rejected(_))
    ));
    assert!(log.is_empty());
}

#[tokio::test]
async fn delivered_batches_are_capped() {
    let log = MemoryLog::new();
    for _ in 0..3 {
        let batch = (0..APPEND_BATCH_RECORDS_MAX)
            .map(|_| append("a", "x"))
            .collect();
        log.append(batch).await.unwrap();
    }
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    let mut delivered = 0;
    while delivered < 3 * APPEND_BATCH_RECORDS_MAX {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Event::Entries(entries) = event else {
            panic!("expected entries before catching up, got {event:?}");
        };
        assert!(!entries.is_empty() && entries.len() <= SUBSCRIBE_BATCH_ENTRIES_MAX);
        delivered += entries.len();
    }
    let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event, Event::CaughtUp);
}
