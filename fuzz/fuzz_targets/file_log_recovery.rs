//! The file log's recovery on open (`FileLog::open`) and its reader (`subscribe`), on segment
//! files the fuzzer writes: never a panic, an unbounded allocation or a hang, and exactly the
//! outcome the on-disk format promises (see `crates/waitroom-log/src/file.rs`), which this target
//! computes on its own from the bytes:
//! - the log keeps exactly the valid frames up to the first damaged one, and the last segment is
//!   truncated right there (a torn tail);
//! - unless the damage cannot be a torn write (it is in an older segment, or a valid frame follows
//!   a frame that fails its CRC): then opening fails with `LogError::Corrupt` and changes nothing;
//! - a recovered log delivers those frames (positions, timestamps, payloads), names the last one
//!   as its head, accepts a subscription from any of them, takes a new append after them, and
//!   opens again to the same frames plus the new one.
//!
//! The first byte picks how the files are made:
//! - even: the rest is the log as is: one segment, or (when the second byte is odd) two, split at
//!   an offset the next two bytes give;
//! - odd: a valid log written by `FileLog::append` itself (payloads from the input; small segments,
//!   so it may roll over), then damaged: cut short, overwritten at an offset, or given a tail.
//!
//! Only the public API of `waitroom-log` is used: no fuzzing hook is needed.

#![no_main]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use waitroom_log::file::{FRAME_HEADER_BYTES, FileLog, FileLogOptions, FsyncPolicy, SHARD_NAME};
use waitroom_log::{Append, Checkpoint, Event, Log, LogError, Position, RECORD_BYTES_MAX, ShardId};

/// The smallest segments the file log accepts, so that built logs roll over.
const SEGMENT_BYTES_MAX: u64 = 4096;
/// Most events read from one subscription; every event delivers at least one frame of 16 bytes
/// or more, so a log of fuzzer-sized files never comes near it unless the reader loops.
const EVENTS_MAX: usize = 100_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = scratch_dir();
    if mode % 2 == 0 {
        write_raw(&dir, rest);
    } else {
        build_and_damage(&dir, rest);
    }
    check(&dir, rest);
});

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// An empty directory for this input (the same one, emptied, for every input of this process):
/// under `$TMPDIR` when it is set (scripts/fuzz points it at its scratch dir, which it removes),
/// else under /dev/shm where there is one, so the log's fsyncs cost nothing. libFuzzer ends the
/// process with `exit`, so the directory itself is left behind.
fn scratch_dir() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let parent = if std::env::var_os("TMPDIR").is_none() && shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        parent.join(format!("waitroom-fuzz-file-log-{}", std::process::id()))
    });
    let _ = fs::remove_dir_all(root);
    fs::create_dir_all(root).expect("create the scratch dir");
    root.clone()
}

fn options() -> FileLogOptions {
    FileLogOptions {
        fsync: FsyncPolicy::Interval(Duration::from_millis(1000)),
        segment_bytes_max: SEGMENT_BYTES_MAX,
        keep_history_ms: 0,
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

fn write_raw(dir: &Path, rest: &[u8]) {
    match rest {
        [split_flag, a, b, log @ ..] if split_flag % 2 == 1 => {
            let split = usize::from(u16::from_le_bytes([*a, *b])).min(log.len());
            fs::write(segment_path(dir, 0), &log[..split]).expect("write a segment");
            fs::write(segment_path(dir, split as u64), &log[split..]).expect("write a segment");
        }
        _ => fs::write(segment_path(dir, 0), rest).expect("write a segment"),
    }
}

/// Appends records made from `rest` with the file log itself, then damages its files as the
/// input's tail says.
fn build_and_damage(dir: &Path, rest: &[u8]) {
    let (payloads, damage) = split_payloads(rest);
    runtime().block_on(async {
        let log = FileLog::open(dir, options()).expect("open an empty dir");
        for payload in payloads {
            log.append(vec![Append {
                room: "fuzz".into(),
                payload: Bytes::from(payload),
            }])
            .await
            .expect("append");
        }
    });
    let [kind, target, a, b, c, tail @ ..] = damage else {
        return;
    };
    let segments = segment_files(dir);
    let (_, path) = &segments[usize::from(*target) % segments.len()];
    let mut bytes = fs::read(path).expect("read a segment");
    let offset = usize::from(u16::from_le_bytes([*a, *b]));
    match kind % 4 {
        // A torn write: the file cut short.
        0 => bytes.truncate(offset),
        // Bytes overwritten in place (a bad sector, a stray write).
        1 => {
            for (i, byte) in tail.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(offset + i) {
                    *slot = *byte;
                }
            }
        }
        // One bit flipped.
        2 => {
            let at = offset % bytes.len().max(1);
            if let Some(slot) = bytes.get_mut(at) {
                *slot ^= 1 << (c % 8);
            }
        }
        // Whatever was being written when the process died, after the last frame.
        _ => bytes.extend_from_slice(tail),
    }
    fs::write(path, bytes).expect("write a segment");
}

/// Payloads of up to 8 records: a length byte `n` then `n * 8` bytes (repeated input bytes,
/// so that small inputs fill segments); `0` ends the list. The rest describes the damage.
fn split_payloads(mut rest: &[u8]) -> (Vec<Vec<u8>>, &[u8]) {
    let mut payloads = Vec::new();
    while payloads.len() < 8 {
        let Some((&length, after)) = rest.split_first() else {
            break;
        };
        rest = after;
        if length == 0 {
            break;
        }
        let seed = rest.get(..4).unwrap_or(rest);
        rest = rest.get(4..).unwrap_or(&[]);
        let bytes = usize::from(length) * 8;
        let payload = if seed.is_empty() {
            vec![length; bytes]
        } else {
            seed.iter().copied().cycle().take(bytes).collect()
        };
        payloads.push(payload);
    }
    (payloads, rest)
}

/// The segment files of `dir`, by base.
fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut segments: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .expect("list the dir")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let base = name.strip_suffix(".seg")?.parse().ok()?;
            Some((base, entry.path()))
        })
        .collect();
    segments.sort();
    segments
}

/// A frame as the format defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Frame {
    position: u64,
    timestamp_ms: u64,
    payload: Vec<u8>,
}

/// What opening must do with these files.
#[derive(Debug)]
enum Expected {
    /// Refuse them: damage recovery may not drop.
    Corrupt,
    /// Keep these frames; the last segment (at `last_base`) keeps `last_bytes`.
    Recovered {
        frames: Vec<Frame>,
        last_base: u64,
        last_bytes: u64,
    },
}

/// Parses the frame at `offset` of `bytes`: `Ok(frame)` when it is whole and valid; `Err(length
/// trusted)` otherwise, where the length is trusted when the frame is whole but fails its CRC.
fn frame_at(bytes: &[u8], base: u64, offset: usize) -> Result<(Frame, usize), bool> {
    let header = bytes
        .get(offset..offset + FRAME_HEADER_BYTES)
        .ok_or(false)?;
    let length = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let timestamp_ms = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if length > RECORD_BYTES_MAX {
        return Err(false);
    }
    let end = offset + FRAME_HEADER_BYTES + length;
    let checked = bytes.get(offset + 8..end).ok_or(false)?;
    if crc32c::crc32c(checked) != crc {
        return Err(true);
    }
    let frame = Frame {
        position: base + offset as u64,
        timestamp_ms,
        payload: bytes[offset + FRAME_HEADER_BYTES..end].to_vec(),
    };
    Ok((frame, end))
}

/// The outcome the format promises for these segments (whose bases join up, as written here).
fn expected(segments: &[(u64, Vec<u8>)]) -> Expected {
    let mut frames = Vec::new();
    let mut end = segments.first().map_or(0, |(base, _)| *base);
    for (index, (base, bytes)) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        // Segments that do not join up (one cut short, or emptied): a segment is missing.
        if *base != end {
            return Expected::Corrupt;
        }
        end = base + bytes.len() as u64;
        let mut offset = 0;
        while offset < bytes.len() {
            match frame_at(bytes, *base, offset) {
                Ok((frame, end)) => {
                    frames.push(frame);
                    offset = end;
                }
                Err(length_trusted) => {
                    // A trusted length was read from a whole header.
                    let valid_follows = length_trusted && {
                        let length = u32::from_le_bytes(
                            bytes[offset..offset + 4].try_into().expect("4 bytes"),
                        );
                        let next = offset + FRAME_HEADER_BYTES + length as usize;
                        frame_at(bytes, *base, next).is_ok()
                    };
                    if !is_last || valid_follows {
                        return Expected::Corrupt;
                    }
                    return Expected::Recovered {
                        frames,
                        last_base: *base,
                        last_bytes: offset as u64,
                    };
                }
            }
        }
    }
    let (last_base, last) = segments
        .last()
        .map_or((0, 0), |(base, bytes)| (*base, bytes.len() as u64));
    Expected::Recovered {
        frames,
        last_base,
        last_bytes: last,
    }
}

fn check(dir: &Path, rest: &[u8]) {
    let segments: Vec<(u64, Vec<u8>)> = segment_files(dir)
        .into_iter()
        .map(|(base, path)| (base, fs::read(path).expect("read a segment")))
        .collect();
    let expected = expected(&segments);
    let opened = FileLog::open(dir, options());
    let (frames, last_base, last_bytes) = match (expected, opened) {
        (Expected::Corrupt, Err(LogError::Corrupt(_))) => {
            let after: Vec<(u64, Vec<u8>)> = segment_files(dir)
                .into_iter()
                .map(|(base, path)| (base, fs::read(path).expect("read a segment")))
                .collect();
            assert!(after == segments, "a refused log was changed");
            return;
        }
        (
            Expected::Recovered {
                frames,
                last_base,
                last_bytes,
            },
            Ok(log),
        ) => {
            drop(log);
            (frames, last_base, last_bytes)
        }
        (expected, opened) => {
            panic!(
                "expected {expected:?}, but opening gave {:?}",
                opened.map(|_| "a log")
            )
        }
    };
    let on_disk = fs::metadata(segment_path(dir, last_base))
        .expect("the last segment")
        .len();
    assert_eq!(on_disk, last_bytes, "the torn tail was not cut exactly");

    // Somewhere to subscribe from: a kept frame, or any position the input names.
    let from = match rest {
        [.., a, b] => u64::from(u16::from_le_bytes([*a, *b])),
        _ => 0,
    };
    runtime().block_on(async {
        let log = FileLog::open(dir, options()).expect("a recovered log opens again");
        assert_eq!(
            read(&log, Checkpoint::start()).await.expect("read all"),
            frames
        );
        let head = log.head().await.expect("head");
        let shard = ShardId::new(SHARD_NAME);
        assert_eq!(
            head.get(&shard),
            frames.last().map(|f| Position(f.position.into())),
            "the head is the last frame kept"
        );
        if let Some(index) = from_index(&frames, from) {
            let mut checkpoint = Checkpoint::start();
            checkpoint.advance(&shard, Position(frames[index].position.into()));
            let after = read(&log, checkpoint).await.expect("read from a frame");
            assert_eq!(after, frames[index + 1..], "read from a kept frame");
        }
        // Any other position: accepted or refused (it may land on a frame inside a payload), but
        // read without a panic or a hang.
        let mut checkpoint = Checkpoint::start();
        checkpoint.advance(&shard, Position(from.into()));
        let _ = read(&log, checkpoint).await;

        // The log goes on after what it kept, and keeps it all on the next open.
        log.append(vec![Append {
            room: "fuzz".into(),
            payload: Bytes::from_static(b"after recovery"),
        }])
        .await
        .expect("append after recovery");
        drop(log);
        let log = FileLog::open(dir, options()).expect("reopen after an append");
        let again = read(&log, Checkpoint::start()).await.expect("read again");
        assert_eq!(again.len(), frames.len() + 1, "the appended frame is kept");
        assert_eq!(again[..frames.len()], frames[..], "the kept frames stay");
        assert_eq!(again[frames.len()].payload, b"after recovery");
    });
}

/// A kept frame the input points at (by index), if there is one.
fn from_index(frames: &[Frame], from: u64) -> Option<usize> {
    (!frames.is_empty()).then(|| from as usize % frames.len())
}

/// Every frame delivered up to `CaughtUp`.
async fn read(log: &FileLog, from: Checkpoint) -> Result<Vec<Frame>, LogError> {
    let mut events = log.subscribe(from).await?;
    let mut frames = Vec::new();
    for _ in 0..EVENTS_MAX {
        match events.next().await {
            Some(Ok(Event::Entries(entries))) => {
                assert!(!entries.is_empty(), "an empty batch");
                frames.extend(entries.into_iter().map(|entry| Frame {
                    position: u64::try_from(entry.position.0).expect("a file position"),
                    timestamp_ms: entry.timestamp_ms,
                    payload: entry.payload.to_vec(),
                }));
            }
            Some(Ok(Event::CaughtUp)) => return Ok(frames),
            Some(Ok(other)) => panic!("unexpected event {other:?} from an untrimmed log"),
            Some(Err(error)) => return Err(error),
            None => panic!("the subscription ended before CaughtUp"),
        }
    }
    panic!("no CaughtUp after {EVENTS_MAX} events");
}
