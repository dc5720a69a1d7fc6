//! Writes the seed corpora of the fuzz targets (`fuzz/`): real snapshots of rooms in different
//! states, in the current format (rooms configured as nodes configure them, with a draw seed) and
//! in version 1 (`v1_*`: the same rooms configured by seedless records, which is all version 1
//! held), and one record of each command. Run from the repository root:
//!
//! `cargo run -p waitroom-core --example fuzz_corpus -- fuzz/corpus`

use std::path::Path;

use waitroom_core::*;

const T0: u64 = 1_800_000_000_000;
const MINUTE: u64 = 60_000;

struct Script {
    room: Room,
    next_id: u128,
    /// Configure with draw seeds (as nodes do), or with the seedless records of earlier builds.
    seeded: bool,
}

impl Script {
    fn new(seeded: bool) -> Self {
        Self {
            room: Room::new(RoomId::new("seed-room").expect("valid id")),
            next_id: 0,
            seeded,
        }
    }

    fn at(&mut self, ts: u64, command: Command) -> &mut Self {
        self.next_id += 1;
        let record = Record::new(
            RecordId::from_u128(self.next_id),
            self.room.id().clone(),
            command,
        );
        self.room.apply(&record, ts);
        self
    }

    fn join(&mut self, ts: u64, n: u128, key: Option<&str>) -> &mut Self {
        let idempotency_key = key.map(|k| IdempotencyKey::new(k).expect("valid key"));
        self.at(
            ts,
            Command::Join {
                session: SessionId::from_u128(n),
                idempotency_key,
            },
        )
    }

    fn leave(&mut self, ts: u64, n: u128, reason: LeaveReason) -> &mut Self {
        let session = SessionId::from_u128(n);
        self.at(ts, Command::Leave { session, reason })
    }

    /// Configures as nodes do, with a draw seed (the corpus's are made up, not random), or as
    /// earlier builds did, without.
    fn configure(&mut self, ts: u64, config: RoomConfig) -> &mut Self {
        if !self.seeded {
            return self.at(ts, Command::ConfigureRoom(config));
        }
        let draw_seed = DrawSeed::from_u64(0x5eed_5eed ^ self.next_id as u64);
        self.at(ts, Command::ConfigureRoomSeeded { config, draw_seed })
    }
}

fn config(capacity: u32) -> RoomConfig {
    RoomConfig {
        target_url: Some("https://tickets.example.com/select".into()),
        ..RoomConfig::with_capacity(capacity)
    }
}

fn rooms(seeded: bool) -> Vec<(&'static str, Room)> {
    let mut rooms = vec![("vacant", Script::new(seeded).room)];
    let mut s = Script::new(seeded);
    s.configure(T0, config(2));
    rooms.push(("configured", s.room.clone()));

    // Line, actives, ended, keys, free slots and remembered record ids at once.
    let mut s = Script::new(seeded);
    s.configure(T0, config(3));
    for n in 0..8 {
        s.join(T0, n, None);
    }
    s.leave(T0 + 1, 1, LeaveReason::Completed)
        .leave(T0 + 1, 6, LeaveReason::Left);
    s.at(T0 + 16 * MINUTE, Command::Tick);
    for n in 10..16 {
        s.join(
            T0 + 16 * MINUTE + n as u64,
            n,
            (n % 2 == 0).then_some("key"),
        );
    }
    s.leave(T0 + 16 * MINUTE + 20, 11, LeaveReason::Completed);
    let sessions = (10..14).map(SessionId::from_u128).collect();
    s.at(T0 + 16 * MINUTE + 30, Command::Heartbeat { sessions });
    rooms.push(("busy", s.room.clone()));

    let mut s = Script::new(seeded);
    let opening = RoomConfig {
        opens_at_ms: Some(T0 + 10 * MINUTE),
        ..config(2)
    };
    s.configure(T0, opening);
    for n in 0..6 {
        s.join(T0 + n as u64, n, None);
    }
    rooms.push(("prequeue", s.room.clone()));

    let mut s = Script::new(seeded);
    let limited = RoomConfig {
        admit_per_minute: Some(120),
        max_waiting: Some(10),
        ..config(5)
    };
    s.configure(T0, limited.clone());
    for n in 0..8 {
        s.join(T0 + n as u64 * 100, n, None);
    }
    let paused = RoomConfig {
        paused: true,
        ..limited
    };
    s.configure(T0 + 2_000, paused);
    rooms.push(("rate_limited_paused", s.room.clone()));

    let mut s = Script::new(seeded);
    s.configure(T0, config(1));
    for n in 0..4 {
        s.join(T0, n, Some(&format!("k{n}")));
    }
    s.at(T0 + 5, Command::CloseRoom);
    rooms.push(("closed", s.room.clone()));

    // Snapshot format 3: a room whose queueing method is not `fifo` (seeded rooms only: only
    // the seeded `ConfigureRoomQueued` carries a method).
    if seeded {
        let mut s = Script::new(seeded);
        let random = RoomConfig {
            queueing_method: QueueingMethod::Random,
            ..config(2)
        };
        s.at(
            T0,
            Command::configure(random, DrawSeed::from_u64(0x5eed_0003)),
        );
        for n in 0..8 {
            s.join(T0 + 1, n, None);
        }
        s.leave(T0 + 2, 0, LeaveReason::Completed);
        rooms.push(("random", s.room.clone()));

        // Snapshot format 5: a room with a join challenge.
        let mut s = Script::new(seeded);
        let challenged = RoomConfig {
            challenge_difficulty_bits: 22,
            ..config(2)
        };
        s.at(
            T0,
            Command::configure(challenged, DrawSeed::from_u64(0x5eed_0005)),
        );
        for n in 0..3 {
            s.join(T0 + 1, n, None);
        }
        rooms.push(("challenged", s.room.clone()));
    }
    rooms
}

fn records() -> Vec<(&'static str, Record)> {
    let room = RoomId::new("seed-room").expect("valid id");
    let session = SessionId::from_u128(7);
    let commands = [
        ("configure", Command::ConfigureRoom(config(100))),
        ("close", Command::CloseRoom),
        (
            "join",
            Command::Join {
                session,
                idempotency_key: None,
            },
        ),
        (
            "join_keyed",
            Command::Join {
                session,
                idempotency_key: Some(IdempotencyKey::new("retry-1").expect("valid key")),
            },
        ),
        (
            "heartbeat",
            Command::Heartbeat {
                sessions: (0..5).map(SessionId::from_u128).collect(),
            },
        ),
        (
            "leave",
            Command::Leave {
                session,
                reason: LeaveReason::Left,
            },
        ),
        (
            "complete",
            Command::Leave {
                session,
                reason: LeaveReason::Completed,
            },
        ),
        ("evict", Command::Evict { session }),
        ("tick", Command::Tick),
        (
            "configure_seeded",
            Command::ConfigureRoomSeeded {
                config: config(100),
                draw_seed: DrawSeed::from_u64(0x5eed_5eed),
            },
        ),
        (
            "configure_from_file",
            Command::ConfigureRoomFromFile {
                config: config(100),
                file_entry_digest: config(100).digest(),
            },
        ),
        (
            "configure_from_file_seeded",
            Command::ConfigureRoomFromFileSeeded {
                config: config(100),
                file_entry_digest: config(100).digest(),
                draw_seed: DrawSeed::from_u64(0x5eed_5eed),
            },
        ),
        (
            "configure_queued",
            Command::configure(
                RoomConfig {
                    queueing_method: QueueingMethod::Random,
                    ..config(100)
                },
                DrawSeed::from_u64(0x5eed_5eed),
            ),
        ),
        (
            "configure_from_file_queued",
            Command::configure_from_file(
                RoomConfig {
                    queueing_method: QueueingMethod::Reject,
                    ..config(100)
                },
                config(100).digest(),
                DrawSeed::from_u64(0x5eed_5eed),
            ),
        ),
        (
            "configure_challenged",
            Command::configure(
                RoomConfig {
                    challenge_difficulty_bits: 22,
                    ..config(100)
                },
                DrawSeed::from_u64(9),
            ),
        ),
    ];
    commands
        .into_iter()
        .enumerate()
        .map(|(i, (name, command))| {
            let id = RecordId::from_u128(i as u128 + 1);
            (name, Record::new(id, room.clone(), command))
        })
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let out = Path::new(&out);
    for (name, room) in rooms(true) {
        let bytes = room.encode_snapshot();
        Room::restore_snapshot(&bytes).expect("a room's own snapshot restores");
        write(&out.join("snapshot_restore"), name, &bytes)?;
    }
    // A room without a draw seed has the same body in version 1 as in version 2.
    for (name, room) in rooms(false) {
        assert!(room.draw_seed().is_none());
        let mut bytes = room.encode_snapshot();
        bytes[SNAPSHOT_MAGIC.len()] = 1;
        let end = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..end]);
        bytes[end..].copy_from_slice(&crc.to_le_bytes());
        Room::restore_snapshot(&bytes).expect("a version 1 snapshot restores");
        write(&out.join("snapshot_restore"), &format!("v1_{name}"), &bytes)?;
    }
    for (name, record) in records() {
        write(&out.join("record_decode"), name, &record.encode())?;
    }
    println!("wrote seed corpora under {}", out.display());
    Ok(())
}
