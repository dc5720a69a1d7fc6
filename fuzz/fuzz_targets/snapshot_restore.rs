//! `Room::restore_snapshot` on arbitrary bytes: never a panic, an unbounded allocation or a hang.
//!
//! Random bytes almost never carry a valid CRC-32C, so each input is also tried with its trailer
//! recomputed (the fuzzer then mutates past the checksum into the structure), and, when only the
//! digest then differs, with the rebuilt room's digest put in (so the fuzzer reaches rooms the
//! structural checks accept). Whatever restores must re-encode to the same bytes (one encoding
//! per state; a version 1 snapshot re-encodes as version 2, with the same body) and
//! keep working under every kind of command.

#![no_main]

use libfuzzer_sys::fuzz_target;
use waitroom_core::*;

/// Magic, then the version.
const VERSION_AT: usize = 4;
/// Magic and version, then the digest.
const DIGEST_AT: usize = 5;
const TRAILER_BYTES: usize = 4;

fuzz_target!(|data: &[u8]| {
    if let Ok(room) = Room::restore_snapshot(data) {
        accepted(room, data);
    }
    if data.len() < DIGEST_AT + 16 + TRAILER_BYTES {
        return;
    }
    let mut sealed = data.to_vec();
    reseal(&mut sealed);
    match Room::restore_snapshot(&sealed) {
        Ok(room) => accepted(room, &sealed),
        Err(SnapshotError::DigestMismatch { rebuilt, .. }) => {
            sealed[DIGEST_AT..DIGEST_AT + 16].copy_from_slice(&rebuilt);
            reseal(&mut sealed);
            let room = Room::restore_snapshot(&sealed).expect("only the digest differed");
            accepted(room, &sealed);
        }
        Err(_) => {}
    }
});

fn reseal(bytes: &mut [u8]) {
    let end = bytes.len() - TRAILER_BYTES;
    let crc = crc32c::crc32c(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
}

/// The bytes this build writes for the room `bytes` restored to: a version 1 snapshot (of a `fifo`
/// room without a draw seed) has the same body in version 2, the version of `fifo` rooms (version
/// 3, `SNAPSHOT_FORMAT_VERSION`, is for rooms with another queueing method).
fn as_written(bytes: &[u8]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    if bytes[VERSION_AT] == 1 {
        bytes[VERSION_AT] = 2;
        reseal(&mut bytes);
    }
    bytes
}

fn accepted(mut room: Room, bytes: &[u8]) {
    assert!(
        room.encode_snapshot() == as_written(bytes),
        "a second encoding of one state"
    );
    let ids: Vec<SessionId> = room.session_ids().collect();
    let now = room.now_ms();
    let mut next_id = u128::MAX - 100;
    let mut apply = |room: &mut Room, command: Command, ts: u64| {
        next_id += 1;
        let record = Record::new(RecordId::from_u128(next_id), room.id().clone(), command);
        room.apply(&record, ts);
        for id in ids.iter().take(64) {
            let _ = room.view(id);
        }
        let _ = room.stats().expired_total.sum();
    };
    let key = IdempotencyKey::new("fuzz").expect("a valid key");
    apply(&mut room, Command::Tick, now);
    let join = Command::Join {
        session: SessionId::from_u128(u128::MAX),
        idempotency_key: Some(key),
    };
    apply(&mut room, join, now + 1);
    if let Some(&first) = ids.first() {
        let sessions = ids.iter().take(16).copied().collect();
        apply(&mut room, Command::Heartbeat { sessions }, now + 2);
        let leave = Command::Leave {
            session: first,
            reason: LeaveReason::Completed,
        };
        apply(&mut room, leave, now + 3);
        apply(&mut room, Command::Evict { session: first }, now + 4);
    }
    apply(&mut room, Command::Tick, now + 3_600_000);
    let configure = Command::ConfigureRoomSeeded {
        config: RoomConfig::with_capacity(2),
        draw_seed: DrawSeed::from_u64(now),
    };
    apply(&mut room, configure, now + 3_600_001);
    apply(&mut room, Command::CloseRoom, now + 3_600_002);
    apply(&mut room, Command::Tick, now + 86_400_000);
    let _ = Room::restore_snapshot(&room.encode_snapshot()).expect("a room's own snapshot");
}
