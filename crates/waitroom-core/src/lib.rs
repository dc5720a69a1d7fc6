//! # waitroom-core
//!
//! The room state machine of waitroom, a virtual waiting room. Every node applies the same
//! ordered log of [`Record`]s to a [`Room`] per room and so reaches the same state; this crate is
//! that state machine and nothing else: no async, no I/O, no clock, no randomness. Time comes
//! from the log (the timestamp passed to [`Room::apply`]), and so does the one random value a
//! room needs, the secret seed of its pre-queue draw (drawn by the node that writes a
//! configuration record, carried in it: [`Command::ConfigureRoomSeeded`]).
//!
//! # Layout
//! - `ids`: room, session and record ids, idempotency keys (validated on construction).
//! - `config`: [`RoomConfig`], its scheduled [`RoomEvent`]s, and their validation (the ranges of
//!   the HTTP contract).
//! - `record`: [`Command`], [`Record`] and the versioned binary encoding.
//! - `room`: [`Room`], the state machine: `apply` and the queries (views, stats, digest).
//! - `snapshot`: a room's whole state as versioned, checksummed bytes
//!   ([`Room::encode_snapshot`], [`Room::restore_snapshot`]), so a node need not replay a
//!   room's whole log.
//! - `spare`: copying a room to snapshot it without stalling it ([`SnapshotSpare`], prepared
//!   outside the room's lock from [`Room::sizes`], gives a [`SnapshotCopy`] to encode).
//! - `view`: [`SessionView`], [`RoomStats`], [`Outcome`].
//! - `line`: the waiting line with O(log n) positions (a Fenwick tree).
//! - `rate`: the admission token bucket and the rate windows behind ETAs.
//! - `digest`: deterministic hashing (state digests, the pre-queue draw and its secret
//!   [`DrawSeed`]).
//! - `limits`: every limit, with units.

mod config;
mod digest;
mod ids;
pub mod limits;
mod line;
mod pass;
mod rate;
mod record;
mod room;
mod snapshot;
mod spare;
mod view;

pub use config::{ConfigError, QueueingMethod, RoomConfig, RoomEvent};
pub use digest::{DrawSeed, admission_draw, draw_ticket, event_draw_seed, legacy_draw_seed};
pub use ids::{IdError, IdempotencyKey, RecordId, RoomId, SessionId};
pub use pass::PassHash;
pub use record::{Command, DecodeError, FORMAT_VERSION, LeaveReason, MAGIC, Record};
pub use room::Room;
pub use snapshot::{SNAPSHOT_FORMAT_VERSION, SNAPSHOT_MAGIC, SnapshotError};
pub use spare::{
    RoomSizes, SPARE_HEADROOM_ENTRIES_MIN, SPARE_HEADROOM_PER_MILLE, SnapshotCopy, SnapshotSpare,
};
pub use view::{
    ExpiredReason, ExpiredTotals, Outcome, Rejection, RoomStats, SessionView, Status, WaitRange,
};
