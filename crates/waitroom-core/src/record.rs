//! Commands, records and their versioned binary encoding.
//!
//! # Wire format
//! `[MAGIC = 0x57 'W'][format version: u8][postcard body]`. Version 1's body is the postcard
//! encoding of [`Record`] as defined here. A later format adds a version with its own body type
//! and keeps decoding version 1, so logs written today stay readable. New commands appended to
//! [`Command`] keep the version (an old reader rejects them as unknown, which is an error value).
//! Decoding never panics: garbage, truncation, unknown versions and out-of-range values are
//! [`DecodeError`]s.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::{QueueingMethod, RoomConfig, RoomEvent};
use crate::digest::DrawSeed;
use crate::ids::{IdempotencyKey, RecordId, RoomId, SessionId};
use crate::limits::{
    EVENTS_PER_ROOM_MAX, HEARTBEAT_BATCH_SESSIONS_MAX, PASSES_PER_RECORD_MAX, RECORD_BYTES_MAX,
};
use crate::pass::PassHash;

/// First byte of every encoded record: cheap detection of bytes that are not a record at all.
pub const MAGIC: u8 = b'W';
/// The format version this build writes.
pub const FORMAT_VERSION: u8 = 1;

/// Why a session left (`Leave` command).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LeaveReason {
    /// The person gave up their place or slot (`DELETE /sessions/{id}`).
    Left,
    /// The protected flow finished (`POST /sessions/{id}:complete`).
    Completed,
}

/// What a record asks of a room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create the room, or replace its whole configuration, with no seed for the pre-queue draw:
    /// what builds before secret seeds wrote (the draw of a room that never got a seed uses the
    /// public `legacy_draw_seed`). Nodes now write `ConfigureRoomSeeded`.
    ConfigureRoom(RoomConfig),
    /// End every session (reason `closed`); the room is unknown until configured again.
    CloseRoom,
    /// Take a place in line.
    Join {
        session: SessionId,
        idempotency_key: Option<IdempotencyKey>,
    },
    /// Sessions that showed a sign of life (batched per node).
    Heartbeat { sessions: Vec<SessionId> },
    /// A session ends by its own choice.
    Leave {
        session: SessionId,
        reason: LeaveReason,
    },
    /// An operator ends a session (reason `evicted`).
    Evict { session: SessionId },
    /// Carries time forward: expiry, the rate limit's refill and the pre-queue draw happen.
    Tick,
    /// A rooms-file entry (`waitroom serve --config`): configures the room like `ConfigureRoom`
    /// and remembers `file_entry_digest` (`RoomConfig::digest` of the entry); does nothing if
    /// that digest is the one last applied to the room, so changes made since through the API
    /// stand (see `Room`).
    ///
    /// Like `ConfigureRoom`, carries no draw seed: nodes now write `ConfigureRoomFromFileSeeded`.
    ConfigureRoomFromFile {
        config: RoomConfig,
        file_entry_digest: [u8; 16],
    },
    /// `ConfigureRoom` with a secret seed for the pre-queue draw, drawn by the node that wrote
    /// the record from the operating system's randomness. The room takes it unless people wait
    /// in its pre-queue (see `Room`, "Order"): so every node draws the same order, and nobody
    /// can compute it beforehand.
    ConfigureRoomSeeded {
        config: RoomConfig,
        draw_seed: DrawSeed,
    },
    /// `ConfigureRoomFromFile` with a secret seed for the pre-queue draw, as in
    /// `ConfigureRoomSeeded`.
    ConfigureRoomFromFileSeeded {
        config: RoomConfig,
        file_entry_digest: [u8; 16],
        draw_seed: DrawSeed,
    },
    /// A node's word on the room's state, so that nodes that silently disagree find out:
    /// `digest` is the room's digest (`Room::digest`) right after the writing node applied the
    /// room's first record whose time reached `interval × every_ms` (the record after which
    /// `now_ms / every_ms` first equals `interval`). Every node applies the same records in the
    /// same order, so every node has its own digest at that record to compare it with (the node
    /// does; see `waitroom::node`). Changes nothing but the room's time, like `Tick`.
    CheckDigest {
        every_ms: u64,
        interval: u64,
        digest: [u8; 16],
    },
    /// `ConfigureRoomSeeded` with a queueing method other than `Fifo` (which a configuration's
    /// own encoding leaves out: see `RoomConfig::queueing_method`). The room's configuration is
    /// `config` with `queueing_method`. Nodes write it only for rooms that are not `Fifo`
    /// (`Command::configure`), so a `Fifo` room's log stays readable by builds from before
    /// queueing methods.
    ConfigureRoomQueued {
        config: RoomConfig,
        draw_seed: DrawSeed,
        queueing_method: QueueingMethod,
    },
    /// `ConfigureRoomFromFileSeeded` with a queueing method other than `Fifo`, like
    /// `ConfigureRoomQueued`.
    ConfigureRoomFromFileQueued {
        config: RoomConfig,
        file_entry_digest: [u8; 16],
        draw_seed: DrawSeed,
        queueing_method: QueueingMethod,
    },
    /// An operator issues single-use passes (`POST …/rooms/{id}/passes`): the hashes of their
    /// codes (`PassHash`, the codes themselves drawn by the node and never written to the log),
    /// valid until `expires_at_ms`. Refused whole (`Rejection::InvalidPasses`) when the count is
    /// outside 1..=`PASSES_PER_RECORD_MAX`, the expiry not within `PASS_LIFETIME_MS_MAX` after
    /// the record's time, or the room would hold more than `PASSES_PER_ROOM_MAX`.
    IssuePasses {
        passes: Vec<PassHash>,
        expires_at_ms: u64,
    },
    /// `Join` carrying a pass (by hash): admitted at once if the pass is outstanding, which the
    /// same record uses up; else refused (`Rejection::InvalidPass`), nothing changed.
    JoinWithPass {
        session: SessionId,
        idempotency_key: Option<IdempotencyKey>,
        pass: PassHash,
    },
    /// `ConfigureRoomQueued` for a room that asks joins for a proof of work: the configuration
    /// with its queueing method (`Fifo` included) and `challenge_difficulty_bits` (1..=
    /// `CHALLENGE_DIFFICULTY_BITS_MAX`; a configuration's own encoding leaves it out, see
    /// `RoomConfig::challenge_difficulty_bits`). Nodes write it only for such rooms
    /// (`Command::configure`), so the log of a room without a challenge stays readable by builds
    /// from before challenges.
    ConfigureRoomChallenged {
        config: RoomConfig,
        draw_seed: DrawSeed,
        queueing_method: QueueingMethod,
        challenge_difficulty_bits: u8,
    },
    /// `ConfigureRoomFromFileQueued` with a challenge, like `ConfigureRoomChallenged`.
    ConfigureRoomFromFileChallenged {
        config: RoomConfig,
        file_entry_digest: [u8; 16],
        draw_seed: DrawSeed,
        queueing_method: QueueingMethod,
        challenge_difficulty_bits: u8,
    },
    /// `ConfigureRoomChallenged` for a room with scheduled events (`RoomConfig::events`, which a
    /// configuration's own encoding leaves out), its difficulty then 0 or more. Nodes write it
    /// only for rooms with events (`Command::configure`), so the log of a room without events
    /// stays readable by builds from before events. At most `EVENTS_PER_ROOM_MAX` events (else
    /// the record does not decode).
    ConfigureRoomScheduled {
        config: RoomConfig,
        draw_seed: DrawSeed,
        queueing_method: QueueingMethod,
        challenge_difficulty_bits: u8,
        events: Vec<RoomEvent>,
    },
    /// `ConfigureRoomFromFileChallenged` with events, like `ConfigureRoomScheduled`.
    ConfigureRoomFromFileScheduled {
        config: RoomConfig,
        file_entry_digest: [u8; 16],
        draw_seed: DrawSeed,
        queueing_method: QueueingMethod,
        challenge_difficulty_bits: u8,
        events: Vec<RoomEvent>,
    },
}

impl Command {
    /// The record a node writes to configure a room: `ConfigureRoomScheduled` for a room with
    /// events; else `ConfigureRoomSeeded` for a `Fifo` room without a challenge (as before
    /// queueing methods), `ConfigureRoomQueued` for any other method without a challenge,
    /// `ConfigureRoomChallenged` for a room with one, so neither the method, the difficulty nor
    /// the events are ever lost and a room that uses none is written as before. They move out of
    /// `config` (left at their defaults there, as a decoded record has them), so a record equals
    /// its decoding; [`Command::room_config`] puts them back.
    pub fn configure(mut config: RoomConfig, draw_seed: DrawSeed) -> Self {
        let challenge_difficulty_bits = std::mem::take(&mut config.challenge_difficulty_bits);
        let events = std::mem::take(&mut config.events);
        if !events.is_empty() {
            return Command::ConfigureRoomScheduled {
                queueing_method: std::mem::take(&mut config.queueing_method),
                config,
                draw_seed,
                challenge_difficulty_bits,
                events,
            };
        }
        match (
            std::mem::take(&mut config.queueing_method),
            challenge_difficulty_bits,
        ) {
            (QueueingMethod::Fifo, 0) => Command::ConfigureRoomSeeded { config, draw_seed },
            (queueing_method, 0) => Command::ConfigureRoomQueued {
                config,
                draw_seed,
                queueing_method,
            },
            (queueing_method, challenge_difficulty_bits) => Command::ConfigureRoomChallenged {
                config,
                draw_seed,
                queueing_method,
                challenge_difficulty_bits,
            },
        }
    }

    /// The record a node writes for a rooms-file entry, like [`Command::configure`].
    pub fn configure_from_file(
        mut config: RoomConfig,
        file_entry_digest: [u8; 16],
        draw_seed: DrawSeed,
    ) -> Self {
        let challenge_difficulty_bits = std::mem::take(&mut config.challenge_difficulty_bits);
        let events = std::mem::take(&mut config.events);
        if !events.is_empty() {
            return Command::ConfigureRoomFromFileScheduled {
                queueing_method: std::mem::take(&mut config.queueing_method),
                config,
                file_entry_digest,
                draw_seed,
                challenge_difficulty_bits,
                events,
            };
        }
        match (
            std::mem::take(&mut config.queueing_method),
            challenge_difficulty_bits,
        ) {
            (QueueingMethod::Fifo, 0) => Command::ConfigureRoomFromFileSeeded {
                config,
                file_entry_digest,
                draw_seed,
            },
            (queueing_method, 0) => Command::ConfigureRoomFromFileQueued {
                config,
                file_entry_digest,
                draw_seed,
                queueing_method,
            },
            (queueing_method, challenge_difficulty_bits) => {
                Command::ConfigureRoomFromFileChallenged {
                    config,
                    file_entry_digest,
                    draw_seed,
                    queueing_method,
                    challenge_difficulty_bits,
                }
            }
        }
    }

    /// The configuration a configuring record carries, its queueing method and challenge
    /// included.
    pub fn room_config(&self) -> Option<RoomConfig> {
        let with = |config: &RoomConfig, method: QueueingMethod, bits: u8| RoomConfig {
            queueing_method: method,
            challenge_difficulty_bits: bits,
            events: Vec::new(),
            ..config.clone()
        };
        match self {
            Command::ConfigureRoom(config)
            | Command::ConfigureRoomSeeded { config, .. }
            | Command::ConfigureRoomFromFile { config, .. }
            | Command::ConfigureRoomFromFileSeeded { config, .. } => {
                Some(with(config, QueueingMethod::Fifo, 0))
            }
            Command::ConfigureRoomQueued {
                config,
                queueing_method,
                ..
            }
            | Command::ConfigureRoomFromFileQueued {
                config,
                queueing_method,
                ..
            } => Some(with(config, *queueing_method, 0)),
            Command::ConfigureRoomChallenged {
                config,
                queueing_method,
                challenge_difficulty_bits,
                ..
            }
            | Command::ConfigureRoomFromFileChallenged {
                config,
                queueing_method,
                challenge_difficulty_bits,
                ..
            } => Some(with(config, *queueing_method, *challenge_difficulty_bits)),
            Command::ConfigureRoomScheduled {
                config,
                queueing_method,
                challenge_difficulty_bits,
                events,
                ..
            }
            | Command::ConfigureRoomFromFileScheduled {
                config,
                queueing_method,
                challenge_difficulty_bits,
                events,
                ..
            } => Some(RoomConfig {
                events: events.clone(),
                ..with(config, *queueing_method, *challenge_difficulty_bits)
            }),
            _ => None,
        }
    }

    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            // A seed changes what a configuration carries, not what it is.
            Command::ConfigureRoom(_)
            | Command::ConfigureRoomSeeded { .. }
            | Command::ConfigureRoomQueued { .. }
            | Command::ConfigureRoomChallenged { .. }
            | Command::ConfigureRoomScheduled { .. } => "configure_room",
            Command::CloseRoom => "close_room",
            Command::Join { .. } => "join",
            Command::Heartbeat { .. } => "heartbeat",
            Command::Leave { .. } => "leave",
            Command::Evict { .. } => "evict",
            Command::Tick => "tick",
            Command::ConfigureRoomFromFile { .. }
            | Command::ConfigureRoomFromFileSeeded { .. }
            | Command::ConfigureRoomFromFileQueued { .. }
            | Command::ConfigureRoomFromFileChallenged { .. }
            | Command::ConfigureRoomFromFileScheduled { .. } => "configure_room_from_file",
            Command::CheckDigest { .. } => "check_digest",
            Command::IssuePasses { .. } => "issue_passes",
            Command::JoinWithPass { .. } => "join",
        }
    }
}

/// A command addressed to a room, with a unique id. The log gives it a timestamp.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: RecordId,
    pub room: RoomId,
    pub command: Command,
}

impl Record {
    pub fn new(id: RecordId, room: RoomId, command: Command) -> Self {
        Self { id, room, command }
    }

    /// The current wire format (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(MAGIC);
        out.push(FORMAT_VERSION);
        // Serialising plain data into a Vec cannot fail: postcard only errors on writers that
        // run out of room and on types serde cannot express, neither of which occurs here.
        postcard::to_extend(self, out).expect("records always serialise")
    }

    /// Reads any supported format version.
    ///
    /// # Errors
    /// Anything that is not a well-formed, in-range record of a known version.
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        if bytes.len() > RECORD_BYTES_MAX {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let (&magic, rest) = bytes.split_first().ok_or(DecodeError::Truncated)?;
        if magic != MAGIC {
            return Err(DecodeError::NotARecord);
        }
        let (&version, body) = rest.split_first().ok_or(DecodeError::Truncated)?;
        let record: Record = match version {
            1 => {
                let (record, trailing) = postcard::take_from_bytes(body).map_err(|e| match e {
                    postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
                    other => DecodeError::Malformed(other.to_string()),
                })?;
                if !trailing.is_empty() {
                    return Err(DecodeError::TrailingBytes(trailing.len()));
                }
                record
            }
            other => return Err(DecodeError::UnsupportedVersion(other)),
        };
        record.check_limits()?;
        Ok(record)
    }

    fn check_limits(&self) -> Result<(), DecodeError> {
        if let Command::Heartbeat { sessions } = &self.command
            && sessions.len() > HEARTBEAT_BATCH_SESSIONS_MAX
        {
            return Err(DecodeError::Malformed(format!(
                "heartbeat batch of {} sessions (at most {HEARTBEAT_BATCH_SESSIONS_MAX})",
                sessions.len()
            )));
        }
        if let Command::IssuePasses { passes, .. } = &self.command
            && passes.len() > PASSES_PER_RECORD_MAX
        {
            return Err(DecodeError::Malformed(format!(
                "{} passes in one record (at most {PASSES_PER_RECORD_MAX})",
                passes.len()
            )));
        }
        if let Command::ConfigureRoomScheduled { events, .. }
        | Command::ConfigureRoomFromFileScheduled { events, .. } = &self.command
            && events.len() > EVENTS_PER_ROOM_MAX
        {
            return Err(DecodeError::Malformed(format!(
                "{} events in one configuration (at most {EVENTS_PER_ROOM_MAX})",
                events.len()
            )));
        }
        Ok(())
    }
}

/// Why bytes could not be read as a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Larger than `RECORD_BYTES_MAX`.
    TooLarge(usize),
    /// The bytes end before the record does.
    Truncated,
    /// Does not start with the record magic byte.
    NotARecord,
    /// A format version this build cannot read (written by a newer release).
    UnsupportedVersion(u8),
    /// Well-framed but not a valid record (bad enum tag, bad room id, over a limit, ...).
    Malformed(String),
    /// Bytes left over after a complete record.
    TrailingBytes(usize),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge(n) => {
                write!(f, "record of {n} bytes exceeds {RECORD_BYTES_MAX} bytes")
            }
            DecodeError::Truncated => f.write_str("record is truncated"),
            DecodeError::NotARecord => f.write_str("not a waitroom record (bad magic byte)"),
            DecodeError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "record format version {v} is not supported by this build"
                )
            }
            DecodeError::Malformed(why) => write!(f, "malformed record: {why}"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the record"),
        }
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        let room = RoomId::new("eras-tour").unwrap();
        let mut config = RoomConfig::with_capacity(200);
        config.target_url = Some("https://tickets.example.com/select".into());
        config.opens_at_ms = Some(1_790_000_000_000);
        [
            Command::ConfigureRoom(config),
            Command::CloseRoom,
            Command::Join {
                session: SessionId::from_u128(7),
                idempotency_key: None,
            },
            Command::Join {
                session: SessionId::from_u128(u128::MAX),
                idempotency_key: Some(IdempotencyKey::new("retry-1").unwrap()),
            },
            Command::Heartbeat {
                sessions: (0..100).map(SessionId::from_u128).collect(),
            },
            Command::Leave {
                session: SessionId::from_u128(1),
                reason: LeaveReason::Completed,
            },
            Command::Evict {
                session: SessionId::from_u128(2),
            },
            Command::Tick,
            Command::ConfigureRoomFromFile {
                config: RoomConfig::with_capacity(3),
                file_entry_digest: [9; 16],
            },
            Command::ConfigureRoomSeeded {
                config: RoomConfig::with_capacity(4),
                draw_seed: DrawSeed::from_u64(u64::MAX - 5),
            },
            Command::ConfigureRoomFromFileSeeded {
                config: RoomConfig::with_capacity(5),
                file_entry_digest: [3; 16],
                draw_seed: DrawSeed::from_u64(17),
            },
            Command::CheckDigest {
                every_ms: 60_000,
                interval: 29_833_333,
                digest: [0xab; 16],
            },
            Command::ConfigureRoomQueued {
                config: RoomConfig::with_capacity(6),
                draw_seed: DrawSeed::from_u64(99),
                queueing_method: QueueingMethod::Random,
            },
            Command::ConfigureRoomFromFileQueued {
                config: RoomConfig::with_capacity(7),
                file_entry_digest: [4; 16],
                draw_seed: DrawSeed::from_u64(98),
                queueing_method: QueueingMethod::Reject,
            },
            Command::IssuePasses {
                passes: vec![[1; 16], [2; 16]],
                expires_at_ms: 1_790_000_000_000,
            },
            Command::JoinWithPass {
                session: SessionId::from_u128(8),
                idempotency_key: Some(IdempotencyKey::new("retry-2").unwrap()),
                pass: [5; 16],
            },
            Command::ConfigureRoomQueued {
                config: RoomConfig::with_capacity(8),
                draw_seed: DrawSeed::from_u64(97),
                queueing_method: QueueingMethod::InviteOnly,
            },
            Command::ConfigureRoomChallenged {
                config: RoomConfig::with_capacity(9),
                draw_seed: DrawSeed::from_u64(96),
                queueing_method: QueueingMethod::Fifo,
                challenge_difficulty_bits: 20,
            },
            Command::ConfigureRoomFromFileChallenged {
                config: RoomConfig::with_capacity(10),
                file_entry_digest: [6; 16],
                draw_seed: DrawSeed::from_u64(95),
                queueing_method: QueueingMethod::Random,
                challenge_difficulty_bits: 1,
            },
            Command::ConfigureRoomScheduled {
                config: RoomConfig::with_capacity(11),
                draw_seed: DrawSeed::from_u64(94),
                queueing_method: QueueingMethod::Fifo,
                challenge_difficulty_bits: 0,
                events: vec![RoomEvent {
                    capacity: Some(500),
                    pre_queue_minutes: Some(15),
                    ..RoomEvent::new("drop-1", 1_790_000_000_000, 1_790_003_600_000)
                }],
            },
            Command::ConfigureRoomFromFileScheduled {
                config: RoomConfig::with_capacity(12),
                file_entry_digest: [5; 16],
                draw_seed: DrawSeed::from_u64(93),
                queueing_method: QueueingMethod::Random,
                challenge_difficulty_bits: 3,
                events: vec![
                    RoomEvent::new("a", 1, 2),
                    RoomEvent {
                        admit_per_minute: Some(60),
                        ..RoomEvent::new("b", 2, 3)
                    },
                ],
            },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, command)| Record::new(RecordId::from_u128(i as u128), room.clone(), command))
        .collect()
    }

    #[test]
    fn round_trip() {
        for record in samples() {
            assert_eq!(Record::decode(&record.encode()), Ok(record));
        }
    }

    /// Pins version 1's bytes: if this changes, logs written by earlier builds no longer read.
    #[test]
    fn version_1_is_stable() {
        let record = Record::new(
            RecordId::from_u128(1),
            RoomId::new("r").unwrap(),
            Command::Leave {
                session: SessionId::from_u128(2),
                reason: LeaveReason::Completed,
            },
        );
        let mut expected = vec![b'W', 1, 1];
        expected.extend([0; 15]);
        expected.extend([1, b'r', 4, 2]);
        expected.extend([0; 15]);
        expected.push(1);
        assert_eq!(record.encode(), expected);
        assert_eq!(Record::decode(&expected), Ok(record));
    }

    /// Pins the pass commands' bytes: tags 13 and 14, after every earlier command's; the
    /// `inviteOnly` method is index 4.
    #[test]
    fn pass_commands_are_stable() {
        let record = Record::new(
            RecordId::from_u128(1),
            RoomId::new("r").unwrap(),
            Command::IssuePasses {
                passes: vec![[7; 16]],
                expires_at_ms: 300,
            },
        );
        let mut expected = vec![b'W', 1, 1];
        expected.extend([0; 15]);
        expected.extend([1, b'r', 13, 1]); // room "r"; command tag 13; one pass
        expected.extend([7; 16]);
        expected.extend([0xac, 0x02]); // expiry 300
        assert_eq!(record.encode(), expected);
        assert_eq!(Record::decode(&expected), Ok(record));

        let record = Record::new(
            RecordId::from_u128(1),
            RoomId::new("r").unwrap(),
            Command::JoinWithPass {
                session: SessionId::from_u128(2),
                idempotency_key: None,
                pass: [9; 16],
            },
        );
        let mut expected = vec![b'W', 1, 1];
        expected.extend([0; 15]);
        expected.extend([1, b'r', 14, 2]); // room "r"; command tag 14; session 2
        expected.extend([0; 15]);
        expected.push(0); // no key
        expected.extend([9; 16]);
        assert_eq!(record.encode(), expected);
        assert_eq!(Record::decode(&expected), Ok(record));

        let record = Record::new(
            RecordId::from_u128(1),
            RoomId::new("r").unwrap(),
            Command::ConfigureRoomQueued {
                config: RoomConfig::with_capacity(5),
                draw_seed: DrawSeed::from_u64(0),
                queueing_method: QueueingMethod::InviteOnly,
            },
        );
        let encoded = record.encode();
        assert_eq!(encoded.last(), Some(&4));
        assert_eq!(Record::decode(&encoded), Ok(record));
    }

    /// Pins the appended command's bytes: its tag follows every earlier command's, so records
    /// written before it existed read as they did.
    #[test]
    fn configure_from_file_is_stable() {
        let record = Record::new(
            RecordId::from_u128(1),
            RoomId::new("r").unwrap(),
            Command::ConfigureRoomFromFile {
                config: RoomConfig::with_capacity(5),
                file_entry_digest: [7; 16],
            },
        );
        let mut expected = vec![b'W', 1, 1];
        expected.extend([0; 15]);
        expected.extend([1, b'r', 7]); // room "r"; command tag 7
        // capacity, no rate, timeouts 60 / 600 / 120, heartbeat 10, no opensAt or maxWaiting,
        // not paused, no target URL
        expected.extend([5, 0, 60, 0xd8, 0x04, 120, 10, 0, 0, 0, 0]);
        expected.extend([7; 16]);
        assert_eq!(record.encode(), expected);
        assert_eq!(Record::decode(&expected), Ok(record));
    }

    /// Pins the seeded commands' bytes: tags 8 and 9, after every earlier command's; the seed is
    /// 8 bytes, little-endian.
    #[test]
    fn seeded_configurations_are_stable() {
        let seed = DrawSeed::from_u64(0x0807_0605_0403_0201);
        let record = Record::new(
            RecordId::from_u128(1),
            RoomId::new("r").unwrap(),
            Command::ConfigureRoomSeeded {
                config: RoomConfig::with_capacity(5),
                draw_seed: seed,
            },
        );
        let mut expected = vec![b'W', 1, 1];
        expected.extend([0; 15]);
        expected.extend([1, b'r', 8]); // room "r"; command tag 8
        expected.extend([5, 0, 60, 0xd8, 0x04, 120, 10, 0, 0, 0, 0]);
        expected.extend([1, 2, 3, 4, 5, 6, 7, 8]); // the seed
        assert_eq!(record.encode(), expected);
        assert_eq!(Record::decode(&expected), Ok(record));

        let record = Record::new(
            RecordId::from_u128(1),
            RoomId::new("r").unwrap(),
            Command::ConfigureRoomFromFileSeeded {
                config: RoomConfig::with_capacity(5),
                file_entry_digest: [7; 16],
                draw_seed: seed,
            },
        );
        let mut expected = vec![b'W', 1, 1];
        expected.extend([0; 15]);
        expected.extend([1, b'r', 9]); // room "r"; command tag 9
        expected.extend([5, 0, 60, 0xd8, 0x04, 120, 10, 0, 0, 0, 0]);
        expected.extend([7; 16]);
        expected.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(record.encode(), expected);
        assert_eq!(Record::decode(&expected).as_ref(), Ok(&record));
        // The seed never shows in a record's debug form (which logs may print).
        let debug = format!("{record:?}");
        assert!(!debug.contains(&seed.to_u64().to_string()), "{debug}");
        assert!(debug.contains("DrawSeed(<secret>)"), "{debug}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        for record in samples() {
            let bytes = record.encode();
            for cut in 0..bytes.len() {
                assert!(
                    Record::decode(&bytes[..cut]).is_err(),
                    "{record:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(Record::decode(b""), Err(DecodeError::Truncated));
        assert_eq!(Record::decode(b"X"), Err(DecodeError::NotARecord));
        assert_eq!(Record::decode(b"W"), Err(DecodeError::Truncated));
        assert_eq!(
            Record::decode(&[b'W', 9, 0]),
            Err(DecodeError::UnsupportedVersion(9))
        );
        let mut bytes = samples()[0].encode();
        bytes.push(0);
        assert_eq!(Record::decode(&bytes), Err(DecodeError::TrailingBytes(1)));
        // A bad room id inside a well-framed record.
        let mut bytes = samples()[1].encode();
        bytes[2 + 16 + 1] = b' ';
        assert!(matches!(
            Record::decode(&bytes),
            Err(DecodeError::Malformed(_))
        ));
        // An unknown command tag.
        let mut bytes = samples()[1].encode();
        let tag = bytes.len() - 1;
        bytes[tag] = 99;
        assert!(matches!(
            Record::decode(&bytes),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            Record::decode(&vec![0; RECORD_BYTES_MAX + 1]),
            Err(DecodeError::TooLarge(_))
        ));
    }

    #[test]
    fn oversized_heartbeat_batch_is_refused() {
        let record = Record::new(
            RecordId::from_u128(1),
            RoomId::new("r").unwrap(),
            Command::Heartbeat {
                sessions: (0..=HEARTBEAT_BATCH_SESSIONS_MAX as u128)
                    .map(SessionId::from_u128)
                    .collect(),
            },
        );
        assert!(matches!(
            Record::decode(&record.encode()),
            Err(DecodeError::Malformed(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = Record::decode(&bytes);
            let mut framed = vec![MAGIC, FORMAT_VERSION];
            framed.extend(&bytes);
            let _ = Record::decode(&framed);
        }

        #[test]
        fn mutated_records_never_panic(index in 0usize..21, at in 0usize..2000, byte in proptest::num::u8::ANY) {
            let mut bytes = samples()[index].encode();
            let at = at % bytes.len();
            bytes[at] = byte;
            if let Ok(record) = Record::decode(&bytes) {
                // Whatever decodes is one record: written again, it reads back as itself. Not
                // always as the same bytes: postcard reads a varint with a redundant zero group
                // (`0x85 0x00` for 5), so a mutation can give another spelling of a record.
                // Nothing compares records by their bytes (a record is known by its id).
                let again = record.encode();
                proptest::prop_assert_eq!(Record::decode(&again), Ok(record));
            }
        }
    }

    /// Pins the digest check's bytes: tag 10, after every earlier command's; `every_ms` and
    /// `interval` as varints, then the 16 digest bytes.
    #[test]
    fn the_digest_check_is_stable() {
        let record = Record::new(
            RecordId::from_u128(1),
            RoomId::new("r").unwrap(),
            Command::CheckDigest {
                every_ms: 300,
                interval: 5,
                digest: [4; 16],
            },
        );
        let mut expected = vec![b'W', 1, 1];
        expected.extend([0; 15]);
        expected.extend([1, b'r', 10]); // room "r"; command tag 10
        expected.extend([0xac, 0x02, 5]); // 300 and 5 as varints
        expected.extend([4; 16]);
        assert_eq!(record.encode(), expected);
        assert_eq!(Record::decode(&expected), Ok(record));
    }

    /// Pins the queued configurations' bytes: tags 11 and 12, after every earlier command's;
    /// the method is one byte (its index) after the seed. A `Fifo` configuration is still written
    /// as tag 8 or 9, byte for byte as before queueing methods, and every older configuring record
    /// still reads as `Fifo`.
    #[test]
    fn queued_configurations_are_stable() {
        let seed = DrawSeed::from_u64(0x0807_0605_0403_0201);
        let random = RoomConfig {
            queueing_method: QueueingMethod::Random,
            ..RoomConfig::with_capacity(5)
        };
        let command = Command::configure(random.clone(), seed);
        assert!(matches!(command, Command::ConfigureRoomQueued { .. }));
        assert_eq!(command.room_config(), Some(random.clone()));
        let record = Record::new(RecordId::from_u128(1), RoomId::new("r").unwrap(), command);
        let mut expected = vec![b'W', 1, 1];
        expected.extend([0; 15]);
        expected.extend([1, b'r', 11]); // room "r"; command tag 11
        expected.extend([5, 0, 60, 0xd8, 0x04, 120, 10, 0, 0, 0, 0]);
        expected.extend([1, 2, 3, 4, 5, 6, 7, 8]); // the seed
        expected.push(1); // random
        assert_eq!(record.encode(), expected);
        let decoded = Record::decode(&expected).unwrap();
        assert_eq!(decoded, record);
        assert_eq!(decoded.command.room_config(), Some(random.clone()));

        let passthrough = RoomConfig {
            queueing_method: QueueingMethod::Passthrough,
            ..RoomConfig::with_capacity(5)
        };
        let command = Command::configure_from_file(passthrough.clone(), [7; 16], seed);
        let record = Record::new(RecordId::from_u128(1), RoomId::new("r").unwrap(), command);
        let mut expected = vec![b'W', 1, 1];
        expected.extend([0; 15]);
        expected.extend([1, b'r', 12]); // room "r"; command tag 12
        expected.extend([5, 0, 60, 0xd8, 0x04, 120, 10, 0, 0, 0, 0]);
        expected.extend([7; 16]);
        expected.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        expected.push(2); // passthrough
        assert_eq!(record.encode(), expected);
        let decoded = Record::decode(&expected).unwrap();
        assert_eq!(decoded.command.room_config(), Some(passthrough));

        // Fifo: the records of before, and old records read as fifo.
        let fifo = RoomConfig::with_capacity(5);
        let command = Command::configure(fifo.clone(), seed);
        assert_eq!(
            command,
            Command::ConfigureRoomSeeded {
                config: fifo.clone(),
                draw_seed: seed
            }
        );
        let command = Command::configure_from_file(fifo.clone(), [7; 16], seed);
        assert!(matches!(
            command,
            Command::ConfigureRoomFromFileSeeded { .. }
        ));
        let mut old = vec![b'W', 1, 1];
        old.extend([0; 15]);
        old.extend([1, b'r', 8]);
        old.extend([5, 0, 60, 0xd8, 0x04, 120, 10, 0, 0, 0, 0]);
        old.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        let decoded = Record::decode(&old).unwrap();
        assert_eq!(decoded.command.room_config(), Some(fifo));
        // An unknown method is malformed.
        let mut bytes = Record::new(
            RecordId::from_u128(1),
            RoomId::new("r").unwrap(),
            Command::configure(random, seed),
        )
        .encode();
        *bytes.last_mut().unwrap() = 5;
        assert!(matches!(
            Record::decode(&bytes),
            Err(DecodeError::Malformed(_))
        ));
    }

    /// Pins the challenged configurations' bytes: tags 15 and 16, after every earlier command's;
    /// the method's index, then the difficulty (one byte), after the seed. A configuration without
    /// a challenge is written as before challenges (tags 8, 9, 11, 12), and every older record
    /// reads as one without.
    #[test]
    fn challenged_configurations_are_stable() {
        let seed = DrawSeed::from_u64(0x0807_0605_0403_0201);
        let challenged = RoomConfig {
            challenge_difficulty_bits: 20,
            ..RoomConfig::with_capacity(5)
        };
        let command = Command::configure(challenged.clone(), seed);
        assert!(matches!(command, Command::ConfigureRoomChallenged { .. }));
        assert_eq!(command.room_config(), Some(challenged.clone()));
        let record = Record::new(RecordId::from_u128(1), RoomId::new("r").unwrap(), command);
        let mut expected = vec![b'W', 1, 1];
        expected.extend([0; 15]);
        expected.extend([1, b'r', 15]); // room "r"; command tag 15
        expected.extend([5, 0, 60, 0xd8, 0x04, 120, 10, 0, 0, 0, 0]);
        expected.extend([1, 2, 3, 4, 5, 6, 7, 8]); // the seed
        expected.extend([0, 20]); // fifo, 20 bits
        assert_eq!(record.encode(), expected);
        let decoded = Record::decode(&expected).unwrap();
        assert_eq!(decoded, record);
        assert_eq!(decoded.command.room_config(), Some(challenged));

        let random = RoomConfig {
            queueing_method: QueueingMethod::Random,
            challenge_difficulty_bits: 3,
            ..RoomConfig::with_capacity(5)
        };
        let command = Command::configure_from_file(random.clone(), [7; 16], seed);
        let record = Record::new(RecordId::from_u128(1), RoomId::new("r").unwrap(), command);
        let mut expected = vec![b'W', 1, 1];
        expected.extend([0; 15]);
        expected.extend([1, b'r', 16]); // room "r"; command tag 16
        expected.extend([5, 0, 60, 0xd8, 0x04, 120, 10, 0, 0, 0, 0]);
        expected.extend([7; 16]);
        expected.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        expected.extend([1, 3]); // random, 3 bits
        assert_eq!(record.encode(), expected);
        assert_eq!(
            Record::decode(&expected).unwrap().command.room_config(),
            Some(random)
        );

        // Without a challenge: the records of before.
        let random = RoomConfig {
            queueing_method: QueueingMethod::Random,
            ..RoomConfig::with_capacity(5)
        };
        assert!(matches!(
            Command::configure(random.clone(), seed),
            Command::ConfigureRoomQueued { .. }
        ));
        assert!(matches!(
            Command::configure_from_file(RoomConfig::with_capacity(5), [7; 16], seed),
            Command::ConfigureRoomFromFileSeeded { .. }
        ));
        assert_eq!(
            Command::configure(random.clone(), seed)
                .room_config()
                .map(|c| c.challenge_difficulty_bits),
            Some(0)
        );
    }

    /// Pins the scheduled configurations' bytes: tags 17 and 18, after every earlier command's;
    /// after the seed the method's index and the difficulty (one byte each, as in tag 15), then
    /// the events: their count, then per event its name (length, bytes), start and end (varints)
    /// and its three optional settings (0, or 1 and a varint). A configuration without events is
    /// written as before events, and every older record reads as one without.
    #[test]
    fn scheduled_configurations_are_stable() {
        let seed = DrawSeed::from_u64(0x0807_0605_0403_0201);
        let scheduled = RoomConfig {
            events: vec![RoomEvent {
                capacity: Some(300),
                pre_queue_minutes: Some(2),
                ..RoomEvent::new("e", 100, 200)
            }],
            ..RoomConfig::with_capacity(5)
        };
        let command = Command::configure(scheduled.clone(), seed);
        assert!(matches!(command, Command::ConfigureRoomScheduled { .. }));
        assert_eq!(command.room_config(), Some(scheduled.clone()));
        let record = Record::new(RecordId::from_u128(1), RoomId::new("r").unwrap(), command);
        let mut expected = vec![b'W', 1, 1];
        expected.extend([0; 15]);
        expected.extend([1, b'r', 17]); // room "r"; command tag 17
        expected.extend([5, 0, 60, 0xd8, 0x04, 120, 10, 0, 0, 0, 0]);
        expected.extend([1, 2, 3, 4, 5, 6, 7, 8]); // the seed
        expected.extend([0, 0]); // fifo, no challenge
        expected.extend([1, 1, b'e', 100, 0xc8, 0x01]); // one event "e", 100 to 200
        expected.extend([1, 0xac, 0x02, 0, 1, 2]); // capacity 300, no rate, pre-queue 2 minutes
        assert_eq!(record.encode(), expected);
        let decoded = Record::decode(&expected).unwrap();
        assert_eq!(decoded, record);
        assert_eq!(decoded.command.room_config(), Some(scheduled.clone()));

        let command = Command::configure_from_file(scheduled.clone(), [7; 16], seed);
        assert!(matches!(
            command,
            Command::ConfigureRoomFromFileScheduled { .. }
        ));
        let encoded =
            Record::new(RecordId::from_u128(1), RoomId::new("r").unwrap(), command).encode();
        assert_eq!(encoded[2 + 16 + 2], 18, "command tag 18");
        assert_eq!(
            Record::decode(&encoded).unwrap().command.room_config(),
            Some(scheduled)
        );

        // Without events: the records of before; a decoded older record has none.
        assert!(matches!(
            Command::configure(RoomConfig::with_capacity(5), seed),
            Command::ConfigureRoomSeeded { .. }
        ));
        // Too many events do not decode.
        let too_many = Command::ConfigureRoomScheduled {
            config: RoomConfig::with_capacity(5),
            draw_seed: seed,
            queueing_method: QueueingMethod::Fifo,
            challenge_difficulty_bits: 0,
            events: (0..=EVENTS_PER_ROOM_MAX as u64)
                .map(|n| RoomEvent::new("e", n, n + 1))
                .collect(),
        };
        let bytes =
            Record::new(RecordId::from_u128(1), RoomId::new("r").unwrap(), too_many).encode();
        assert!(matches!(
            Record::decode(&bytes),
            Err(DecodeError::Malformed(_))
        ));
    }
}
