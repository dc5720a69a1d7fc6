//! The file log's own tests; the conformance suite runs here too, under both fsync policies.
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tempfile::TempDir;

use super::frame::encode_frame;
use super::*;
use crate::Entry;
use crate::testkit::conformance::Limits;
use crate::testkit::reading::next_event;

const LIMITS: Limits = Limits {
    record_bytes_max: RECORD_BYTES_MAX,
    append_batch_records_max: APPEND_BATCH_RECORDS_MAX,
};

const WAIT: Duration = Duration::from_secs(30);

fn options(fsync: FsyncPolicy, segment_bytes_max: u64) -> FileLogOptions {
    FileLogOptions {
        fsync,
        segment_bytes_max,
        keep_history_ms: 0,
    }
}

/// Small segments, so the suite crosses many segment boundaries.
fn fixture(fsync: FsyncPolicy) -> (TempDir, impl AsyncFn() -> Result<Box<dyn Log>, LogError>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("log");
    let open = async move || {
        FileLog::open(&path, options(fsync, 64 * 1024)).map(|log| Box::new(log) as Box<dyn Log>)
    };
    (dir, open)
}

mod conformance_fsync_always {
    crate::conformance_tests!(
        fixture: super::fixture(super::FsyncPolicy::Always),
        limits: super::LIMITS,
    );
}

mod conformance_fsync_interval {
    crate::conformance_tests!(
        fixture: super::fixture(super::FsyncPolicy::default()),
        limits: super::LIMITS,
    );
}

fn record(payload: impl Into<Bytes>) -> Append {
    Append {
        room: "room".into(),
        payload: payload.into(),
    }
}

/// Every entry before the first `CaughtUp` of a subscription from `from`.
async fn read_to_caught_up(log: &FileLog, from: Checkpoint) -> Vec<Entry> {
    let mut stream = log.subscribe(from).await.unwrap();
    let mut entries = Vec::new();
    loop {
        match next_event(&mut stream).await {
            Event::Entries(batch) => entries.extend(batch),
            Event::CaughtUp => return entries,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn payloads(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|entry| String::from_utf8_lossy(&entry.payload).into_owned())
        .collect()
}

fn open(dir: &Path) -> FileLog {
    FileLog::open(dir, options(FsyncPolicy::Always, SEGMENT_BYTES_MAX_DEFAULT)).unwrap()
}

/// Appends `count` one-record batches `record 0`, `record 1`, ...
async fn append_records(log: &FileLog, range: std::ops::Range<u32>) {
    for index in range {
        log.append(vec![record(format!("record {index}"))])
            .await
            .unwrap();
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    files.sort();
    files
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

fn expect_corrupt(result: Result<FileLog, LogError>) -> String {
    match result {
        Err(LogError::Corrupt(message)) => message,
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("expected Corrupt, the log opened"),
    }
}

#[tokio::test]
async fn a_locked_dir_cannot_be_opened_twice() {
    let temp = tempfile::tempdir().unwrap();
    let first = open(temp.path());
    let second = FileLog::open(temp.path(), FileLogOptions::default());
    match second {
        Err(LogError::Unavailable(message)) => {
            assert!(
                message.contains(&temp.path().display().to_string()),
                "the error names the dir: {message}"
            );
        }
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("a second open of a locked dir succeeded"),
    }
    drop(first);
    // Dropping released the lock.
    open(temp.path());
}

/// `close` writes what was acknowledged and releases the lock while other holders still keep the
/// log (a node's detached tasks, as it stops): the dir opens again at once, with the records,
/// and appends through the closed log fail rather than write behind the new owner's back.
#[tokio::test]
async fn a_closed_log_releases_its_dir_while_still_held() {
    let temp = tempfile::tempdir().unwrap();
    let first = Arc::new(open(temp.path()));
    append_records(&first, 0..3).await;
    let written = first.head().await.unwrap();
    let holder = Arc::clone(&first);
    first.close().await;
    first.close().await; // closing twice is harmless
    let second = open(temp.path());
    assert!(matches!(
        holder.append(vec![record("late")]).await,
        Err(LogError::Unavailable(_))
    ));
    assert_eq!(
        second.head().await.unwrap(),
        written,
        "what was appended is there"
    );
    drop((first, holder));
}

#[tokio::test]
async fn positions_are_byte_offsets_across_segments() {
    let temp = tempfile::tempdir().unwrap();
    let log = FileLog::open(
        temp.path(),
        options(FsyncPolicy::Always, SEGMENT_BYTES_MAX_LOWEST),
    )
    .unwrap();
    // 100 frames of 116 bytes: 35 fit in a 4096-byte segment.
    let payload = Bytes::from(vec![b'p'; 100]);
    for _ in 0..10 {
        log.append((0..10).map(|_| record(payload.clone())).collect())
            .await
            .unwrap();
    }
    let entries = read_to_caught_up(&log, Checkpoint::start()).await;
    let positions: Vec<Position> = entries.iter().map(|entry| entry.position).collect();
    let expected: Vec<Position> = (0..100).map(|index| Position(index * 116)).collect();
    assert_eq!(positions, expected);
    let names: Vec<String> = segment_files(temp.path())
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![
            "00000000000000000000.seg",
            "00000000000000004060.seg",
            "00000000000000008120.seg"
        ]
    );
    // Resuming inside the second segment seeks straight there.
    let mut from = Checkpoint::start();
    from.advance(&ShardId::new(SHARD_NAME), Position(40 * 116));
    let rest = read_to_caught_up(&log, from).await;
    assert_eq!(rest.len(), 59);
    assert_eq!(rest[0].position, Position(41 * 116));
    assert_eq!(
        log.head().await.unwrap().get(&ShardId::new(SHARD_NAME)),
        Some(Position(99 * 116))
    );

    // A record larger than a segment gets a segment of its own.
    log.append(vec![record(vec![b'b'; 10_000])]).await.unwrap();
    log.append(vec![record("after")]).await.unwrap();
    assert_eq!(segment_files(temp.path()).len(), 5);
    let all = read_to_caught_up(&log, Checkpoint::start()).await;
    assert_eq!(all.len(), 102);
    assert_eq!(all[100].payload.len(), 10_000);
    assert_eq!(&all[101].payload[..], b"after");
}

#[tokio::test]
async fn a_frame_cut_short_at_the_tail_is_truncated() {
    for cut_into_last_frame in [1, 5, FRAME_HEADER_BYTES as u64 + 3] {
        let temp = tempfile::tempdir().unwrap();
        let log = open(temp.path());
        append_records(&log, 0..10).await;
        let last_frame = log.head().await.unwrap().get(&ShardId::new(SHARD_NAME));
        drop(log);

        let segment = &segment_files(temp.path())[0];
        let Some(Position(last_frame)) = last_frame else {
            panic!("no head");
        };
        let last_frame = last_frame as u64;
        let file = OpenOptions::new().write(true).open(segment).unwrap();
        file.set_len(last_frame + cut_into_last_frame).unwrap();
        drop(file);

        let log = open(temp.path());
        let entries = read_to_caught_up(&log, Checkpoint::start()).await;
        assert_eq!(
            payloads(&entries),
            (0..9)
                .map(|index| format!("record {index}"))
                .collect::<Vec<_>>()
        );
        assert_eq!(fs::metadata(segment).unwrap().len(), last_frame);
        // The next append lands where the torn frame was.
        log.append(vec![record("after recovery")]).await.unwrap();
        let head = log.head().await.unwrap();
        assert_eq!(
            head.get(&ShardId::new(SHARD_NAME)),
            Some(Position(last_frame.into()))
        );
    }
}

#[tokio::test]
async fn a_damaged_last_frame_is_truncated() {
    // A flipped byte in the payload, in the timestamp and in the length of the last frame.
    for offset_in_frame in [20, 10, 1] {
        let temp = tempfile::tempdir().unwrap();
        let log = open(temp.path());
        append_records(&log, 0..10).await;
        let Some(Position(last_frame)) = log.head().await.unwrap().get(&ShardId::new(SHARD_NAME))
        else {
            panic!("no head");
        };
        drop(log);
        let segment = &segment_files(temp.path())[0];
        flip_byte(segment, last_frame as u64 + offset_in_frame);

        let log = open(temp.path());
        let entries = read_to_caught_up(&log, Checkpoint::start()).await;
        assert_eq!(
            entries.len(),
            9,
            "flipped byte {offset_in_frame} of the frame"
        );
    }
}

#[tokio::test]
async fn a_zero_filled_tail_is_truncated() {
    // After a power loss the file may have grown without its data reaching the disk.
    let temp = tempfile::tempdir().unwrap();
    let log = open(temp.path());
    append_records(&log, 0..3).await;
    drop(log);
    let segment = &segment_files(temp.path())[0];
    let length = fs::metadata(segment).unwrap().len();
    let file = OpenOptions::new().write(true).open(segment).unwrap();
    file.set_len(length + 8192).unwrap();
    drop(file);

    let log = open(temp.path());
    assert_eq!(read_to_caught_up(&log, Checkpoint::start()).await.len(), 3);
    assert_eq!(fs::metadata(segment).unwrap().len(), length);
}

#[tokio::test]
async fn a_damaged_frame_followed_by_valid_ones_is_corrupt() {
    let temp = tempfile::tempdir().unwrap();
    let log = open(temp.path());
    append_records(&log, 0..10).await;
    drop(log);
    let segment = &segment_files(temp.path())[0];
    // The payload of the fifth frame ("record 4" frames are 24 bytes).
    flip_byte(segment, 4 * 24 + 18);
    let length = fs::metadata(segment).unwrap().len();

    let message = expect_corrupt(FileLog::open(temp.path(), FileLogOptions::default()));
    assert!(message.contains("position 96"), "{message}");
    // Nothing was dropped, and the lock was released.
    assert_eq!(fs::metadata(segment).unwrap().len(), length);
    expect_corrupt(FileLog::open(temp.path(), FileLogOptions::default()));
}

#[tokio::test]
async fn damage_in_an_older_segment_is_corrupt() {
    let small = options(FsyncPolicy::Always, SEGMENT_BYTES_MAX_LOWEST);
    let payload = Bytes::from(vec![b'p'; 1000]);

    // A flipped byte in the middle of the first segment.
    let temp = tempfile::tempdir().unwrap();
    let log = FileLog::open(temp.path(), small).unwrap();
    for _ in 0..10 {
        log.append(vec![record(payload.clone())]).await.unwrap();
    }
    drop(log);
    let segments = segment_files(temp.path());
    assert!(segments.len() >= 3);
    flip_byte(&segments[0], 1016 + 500);
    let message = expect_corrupt(FileLog::open(temp.path(), small));
    assert!(message.contains("not in the last segment"), "{message}");

    // Even at the end of an older segment, a damaged frame is not a torn tail.
    let temp = tempfile::tempdir().unwrap();
    let log = FileLog::open(temp.path(), small).unwrap();
    for _ in 0..10 {
        log.append(vec![record(payload.clone())]).await.unwrap();
    }
    drop(log);
    let segments = segment_files(temp.path());
    let first_length = fs::metadata(&segments[0]).unwrap().len();
    flip_byte(&segments[0], first_length - 1);
    expect_corrupt(FileLog::open(temp.path(), small));

    // An older segment cut short leaves a gap before the next one.
    let temp = tempfile::tempdir().unwrap();
    let log = FileLog::open(temp.path(), small).unwrap();
    for _ in 0..10 {
        log.append(vec![record(payload.clone())]).await.unwrap();
    }
    drop(log);
    let segments = segment_files(temp.path());
    let first_length = fs::metadata(&segments[0]).unwrap().len();
    let file = OpenOptions::new().write(true).open(&segments[0]).unwrap();
    file.set_len(first_length - 1016).unwrap();
    drop(file);
    let message = expect_corrupt(FileLog::open(temp.path(), small));
    assert!(message.contains("missing or was cut short"), "{message}");

    // A missing first segment.
    fs::remove_file(&segments[0]).unwrap();
    expect_corrupt(FileLog::open(temp.path(), small));
}

/// A subscription keeping up with the log gets each new write from memory (the head's tail), not
/// from the files; one that starts behind reads the files, then follows from memory too; what
/// both deliver is exactly what was appended, in order, at the same positions.
#[tokio::test]
async fn a_subscription_keeping_up_reads_new_writes_from_memory() {
    let temp = tempfile::tempdir().unwrap();
    // Small segments and 200-byte records: the writes cross segment boundaries.
    let log = FileLog::open(temp.path(), options(FsyncPolicy::default(), 4096)).unwrap();
    append_records(&log, 0..5).await;
    let mut follower = log.subscribe(Checkpoint::start()).await.unwrap();
    let mut followed = Vec::new();
    let next_entries = async |stream: &mut BoxStream<'static, Result<Event, LogError>>,
                              into: &mut Vec<Entry>,
                              count: usize| {
        while into.len() < count {
            match next_event(stream).await {
                Event::Entries(batch) => into.extend(batch),
                Event::CaughtUp => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    next_entries(&mut follower, &mut followed, 5).await;
    let (_, from_files) = log.read_batches();
    assert!(from_files >= 1, "the history is read from the files");
    for index in 5..40 {
        log.append(vec![
            record(format!("record {index:<193}")),
            record(format!("record {index}b")),
        ])
        .await
        .unwrap();
        next_entries(&mut follower, &mut followed, 5 + 2 * (index as usize - 4)).await;
    }
    let (from_tail, from_files_after) = log.read_batches();
    assert_eq!(
        from_files_after, from_files,
        "a subscription keeping up never goes back to the files"
    );
    assert!(from_tail >= 35, "{from_tail} batches from memory");
    // The same entries as a subscription that reads everything from the files.
    let read = read_to_caught_up(&log, Checkpoint::start()).await;
    assert_eq!(payloads(&followed), payloads(&read));
    let positions = |entries: &[Entry]| entries.iter().map(|e| e.position).collect::<Vec<_>>();
    assert_eq!(positions(&followed), positions(&read));
    let segments = segment_files(temp.path()).len();
    assert!(segments >= 3, "the writes crossed segments: {segments}");
}

#[tokio::test]
async fn a_corrupt_frame_fails_the_subscription() {
    let temp = tempfile::tempdir().unwrap();
    let log = open(temp.path());
    append_records(&log, 0..10).await;
    // Damage behind the log's back, after it was checked on open.
    flip_byte(&segment_files(temp.path())[0], 2 * 24 + 18);
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    let outcome = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
    assert!(
        matches!(outcome, Some(Err(LogError::Corrupt(_)))),
        "{outcome:?}"
    );
    let end = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
    assert!(end.is_none(), "the stream ends after a corrupt frame");
}

#[tokio::test]
async fn restart_recovers_positions_and_timestamps() {
    let temp = tempfile::tempdir().unwrap();
    // A log whose last record carries a timestamp an hour ahead of this machine's clock, as
    // if the clock had since been set back.
    let ahead_ms = wall_clock_ms() + 3_600_000;
    let mut frames = Vec::new();
    encode_frame(&mut frames, ahead_ms - 5, b"first");
    encode_frame(&mut frames, ahead_ms, b"second");
    fs::write(segment_path(temp.path(), 0), &frames).unwrap();

    let log = open(temp.path());
    let shard = ShardId::new(SHARD_NAME);
    assert_eq!(
        log.head().await.unwrap().get(&shard),
        Some(Position((FRAME_HEADER_BYTES + 5) as u128))
    );
    log.append(vec![record("third")]).await.unwrap();
    drop(log);

    let log = open(temp.path());
    log.append(vec![record("fourth")]).await.unwrap();
    let entries = read_to_caught_up(&log, Checkpoint::start()).await;
    assert_eq!(payloads(&entries), ["first", "second", "third", "fourth"]);
    let timestamps: Vec<u64> = entries.iter().map(|entry| entry.timestamp_ms).collect();
    assert_eq!(timestamps, [ahead_ms - 5, ahead_ms, ahead_ms, ahead_ms]);
    let positions: Vec<Position> = entries.iter().map(|entry| entry.position).collect();
    assert_eq!(
        positions,
        [Position(0), Position(21), Position(43), Position(64)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs() {
    const APPENDERS: usize = 100;
    const APPENDS_EACH: usize = 5;
    let temp = tempfile::tempdir().unwrap();
    let log = Arc::new(open(temp.path()));
    let before = log.stats();
    let start = Arc::new(tokio::sync::Barrier::new(APPENDERS));
    let appenders: Vec<_> = (0..APPENDERS)
        .map(|appender| {
            let (log, start) = (Arc::clone(&log), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                for index in 0..APPENDS_EACH {
                    log.append(vec![record(format!("{appender} {index}"))])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for appender in appenders {
        tokio::time::timeout(WAIT, appender).await.unwrap().unwrap();
    }
    let after = log.stats();
    let appends = after.appends - before.appends;
    let fsyncs = after.fsyncs - before.fsyncs;
    assert_eq!(appends, (APPENDERS * APPENDS_EACH) as u64);
    assert_eq!(after.records - before.records, appends);
    assert!(
        fsyncs < appends,
        "{fsyncs} fsyncs for {appends} appends: concurrent appends must share fsyncs"
    );
    assert_eq!(fsyncs, after.groups - before.groups, "one fsync per group");
    let entries = read_to_caught_up(&log, Checkpoint::start()).await;
    assert_eq!(entries.len(), APPENDERS * APPENDS_EACH);
}

#[tokio::test]
async fn interval_acknowledges_written_data_then_syncs_within_the_interval() {
    let temp = tempfile::tempdir().unwrap();
    let interval = FSYNC_INTERVAL_MAX;
    let log = FileLog::open(
        temp.path(),
        options(FsyncPolicy::Interval(interval), SEGMENT_BYTES_MAX_DEFAULT),
    )
    .unwrap();
    let mut stats = log.watch_stats();
    let started = Instant::now();
    log.append(vec![record("soon durable")]).await.unwrap();
    // Acknowledged once written to the OS: the bytes are in the file (what survives kill -9),
    // and no fsync has happened yet.
    let segment = &segment_files(temp.path())[0];
    assert_eq!(fs::metadata(segment).unwrap().len(), 28);
    assert_eq!(log.stats().fsyncs, 0);
    // With nothing else appended, the writer syncs when the interval has passed.
    tokio::time::timeout(WAIT, stats.wait_for(|stats| stats.fsyncs >= 1))
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= interval);
    assert_eq!(log.stats().fsyncs, 1);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_failed_write_stops_the_writer_until_reopened() {
    // Every write to /dev/full fails with ENOSPC.
    let temp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", segment_path(temp.path(), 0)).unwrap();
    let log = open(temp.path());
    let first = log.append(vec![record("lost")]).await;
    assert!(matches!(first, Err(LogError::Io(_))), "{first:?}");
    let second = log.append(vec![record("refused")]).await;
    match second {
        Err(LogError::Unavailable(message)) => {
            assert!(message.contains("reopen"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(log.head().await.unwrap(), Checkpoint::start());
    assert_eq!(log.stats().appends, 0);
}

#[tokio::test]
async fn checkpoints_that_name_no_frame_are_rejected() {
    let temp = tempfile::tempdir().unwrap();
    let log = open(temp.path());
    append_records(&log, 0..3).await;
    let shard = ShardId::new(SHARD_NAME);
    for position in [3, 24 * 3, 10_000] {
        let mut from = Checkpoint::start();
        from.advance(&shard, Position(position));
        let result = log.subscribe(from).await;
        assert!(
            matches!(result, Err(LogError::Rejected(_))),
            "position {position}"
        );
    }
}

/// The trim marker is where a node starting from snapshots subscribes: a position that names no
/// frame is refused and marks nothing; a frame's position is marked.
#[tokio::test]
async fn trimming_through_a_position_that_names_no_frame_is_rejected() {
    let temp = tempfile::tempdir().unwrap();
    let log = open(temp.path());
    append_records(&log, 0..3).await;
    let shard = ShardId::new(SHARD_NAME);
    let frames: Vec<Position> = read_to_caught_up(&log, Checkpoint::start())
        .await
        .iter()
        .map(|entry| entry.position)
        .collect();
    for position in [Position(frames[1].0 - 1), Position(3), Position(10_000)] {
        let result = log.trim(&shard, position).await;
        assert!(
            matches!(result, Err(LogError::Rejected(_))),
            "position {position:?}: {result:?}"
        );
        assert_eq!(log.trimmed().await.unwrap(), Checkpoint::start());
    }
    log.trim(&shard, frames[1]).await.unwrap();
    assert_eq!(log.trimmed().await.unwrap().get(&shard), Some(frames[1]));
    let after = read_to_caught_up(&log, log.trimmed().await.unwrap()).await;
    assert_eq!(payloads(&after), ["record 2"]);
}

#[tokio::test]
async fn a_subscription_ends_after_the_log_is_dropped() {
    let temp = tempfile::tempdir().unwrap();
    let log = open(temp.path());
    append_records(&log, 0..3).await;
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    drop(log);
    let mut delivered = 0;
    // The loop ends only when the stream does.
    while let Some(event) = tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        if let Event::Entries(entries) = event.unwrap() {
            delivered += entries.len();
        }
    }
    assert_eq!(delivered, 3);
}

#[tokio::test]
async fn options_out_of_range_are_rejected() {
    let temp = tempfile::tempdir().unwrap();
    for options in [
        options(FsyncPolicy::Always, SEGMENT_BYTES_MAX_LOWEST - 1),
        options(FsyncPolicy::Always, SEGMENT_BYTES_MAX_HIGHEST + 1),
        options(
            FsyncPolicy::Interval(FSYNC_INTERVAL_MAX + Duration::from_millis(1)),
            SEGMENT_BYTES_MAX_DEFAULT,
        ),
    ] {
        assert!(matches!(
            FileLog::open(temp.path(), options),
            Err(LogError::Rejected(_))
        ));
    }
}

#[tokio::test]
async fn large_batches_are_read_back_in_capped_batches() {
    let temp = tempfile::tempdir().unwrap();
    let log = FileLog::open(temp.path(), FileLogOptions::default()).unwrap();
    // 3 × 4096 small records, then 6 records of 1 MiB (more than one read's worth).
    for _ in 0..3 {
        log.append((0..APPEND_BATCH_RECORDS_MAX).map(|_| record("x")).collect())
            .await
            .unwrap();
    }
    for _ in 0..6 {
        log.append(vec![record(vec![b'm'; RECORD_BYTES_MAX])])
            .await
            .unwrap();
    }
    let mut stream = log.subscribe(Checkpoint::start()).await.unwrap();
    let mut delivered = 0;
    loop {
        match next_event(&mut stream).await {
            Event::Entries(entries) => {
                assert!(entries.len() <= SUBSCRIBE_BATCH_ENTRIES_MAX);
                let bytes: usize = entries.iter().map(|entry| entry.payload.len()).sum();
                assert!(bytes <= SUBSCRIBE_BATCH_BYTES_MAX + RECORD_BYTES_MAX);
                delivered += entries.len();
            }
            Event::CaughtUp => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(delivered, 3 * APPEND_BATCH_RECORDS_MAX + 6);
}
