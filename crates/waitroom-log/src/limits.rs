//! The limits every backend shares, with units in the names. Each is defined once: where the
//! state machine has the same limit (the size of a record, of a snapshot), this module takes the
//! core's value, and compile-time assertions tie the rest to it. Backends add their own limits
//! in their own folders and assert them against these.

use waitroom_core::limits as core;

/// Largest payload of one record, in bytes, in every backend: the core's own bound on an encoded
/// record (a full heartbeat batch plus headroom), so anything the state machine would decode
/// fits every backend, and a reader never needs more memory than this for one record.
pub const RECORD_BYTES_MAX: usize = core::RECORD_BYTES_MAX;

/// Most records in one `append` batch, in every backend: bounds the time one batch holds a writer
/// (the file log's writer thread, a Redis pipeline, the memory log's lock).
pub const APPEND_BATCH_RECORDS_MAX: usize = 4096;

/// Most bytes in one `append` batch (payloads plus each backend's per-record overhead): bounds
/// the memory one batch takes in a writer's queue or a pipeline's buffers.
pub const APPEND_BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Most `append` calls a writer (the node's group commit) runs at once on one log: a backend whose
/// round trip includes a disk flush (Redis with `appendfsync always`, the file log's fsync) gets
/// the next batch while it flushes the previous one. A backend may ask for fewer
/// ([`crate::Log::appends_in_flight`]).
pub const APPENDS_IN_FLIGHT_MAX: usize = 4;

/// Largest snapshot a store accepts: the core's bound on an encoded room (a room at
/// `SESSIONS_PER_ROOM_MAX`). Backends with a smaller bound on one value say so (Redis).
pub const SNAPSHOT_BYTES_MAX: usize = core::SNAPSHOT_BYTES_MAX as usize;

// Snapshots are held in memory whole: the core's bound must fit the address space.
const _: () = assert!(core::SNAPSHOT_BYTES_MAX <= usize::MAX as u64);

/// Longest history an operator may keep past trimming (`keep-history`): a week, beyond which an
/// audit trail belongs in an archive, not in the live log.
pub const KEEP_HISTORY_MS_MAX: u64 = 7 * 24 * 60 * 60 * 1000;

const _: () = assert!(RECORD_BYTES_MAX <= APPEND_BATCH_BYTES_MAX);
// A batch of the node's largest heartbeat records still fits one append.
const _: () = assert!(core::HEARTBEAT_BATCH_SESSIONS_MAX * 16 < RECORD_BYTES_MAX);
