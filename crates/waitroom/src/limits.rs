//! Every limit of the node and its HTTP layer, with units in the names, in one place. Limits the
//! log or the state machine also has are theirs (`waitroom_log::limits`,
//! `waitroom_core::limits`); the ones here are tied to them by compile-time assertions.

use std::time::Duration;

use waitroom_core::limits as core;
use waitroom_log::limits as log;

// Appending (`node::appender`): concurrent writers' records go to the log in one append.

/// Records per append call: well under every backend's own bound, so one batch holds the
/// backend's writer (a file fsync, a Redis pipeline) for a bounded time.
pub const APPEND_BATCH_RECORDS_MAX: usize = 1024;
/// Payload bytes per append call; a batch stops growing once past it, so it may exceed it by
/// one record.
pub const APPEND_BATCH_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Append calls running at once: the log's own (`Log::appends_in_flight`), at most this.
pub const APPEND_BATCHES_IN_FLIGHT_MAX: usize = log::APPENDS_IN_FLIGHT_MAX;
/// Records queued for the appender; a full queue makes writers wait (their own deadline bounds
/// the wait): the node's back-pressure towards a slow backend.
pub const APPEND_QUEUE_RECORDS_MAX: usize = 16 * 1024;

const _: () = assert!(APPEND_BATCH_RECORDS_MAX <= log::APPEND_BATCH_RECORDS_MAX);
const _: () =
    assert!(APPEND_BATCH_BYTES_MAX + core::RECORD_BYTES_MAX <= log::APPEND_BATCH_BYTES_MAX);
const _: () = assert!(APPEND_BATCH_RECORDS_MAX <= APPEND_QUEUE_RECORDS_MAX);

// Applying (`node::applier`).

/// Records applied under one room's write lock: bounds how long status polls of a room wait.
pub const APPLY_RECORDS_PER_LOCK_MAX: usize = 512;

// Heartbeats (`node::heartbeats`).

/// Heartbeats queued for batching; a full queue makes requests wait (bounded by their own
/// deadline).
pub const HEARTBEAT_QUEUE_MAX: usize = 64 * 1024;

// One heartbeat record of the largest batch fits a record.
const _: () = assert!(core::HEARTBEAT_BATCH_SESSIONS_MAX * 17 + 1024 < core::RECORD_BYTES_MAX);

// Snapshots (`node::snapshots`).

/// Rooms waiting for their snapshot to be taken; when full, a due room is queued again at its
/// next applied record (it stays due).
pub const SNAPSHOT_QUEUE_ROOMS_MAX: usize = 1024;
/// Snapshots loaded at once while a node starts: overlaps the store's round trips with decoding.
pub const RESTORE_CONCURRENCY: usize = 4;
/// How often rooms are scanned for a snapshot due by time, as a fraction of
/// `snapshot_every_ms` (and at least this often).
pub const DUE_SCAN_INTERVAL_MAX: Duration = Duration::from_secs(30);
/// Preparations of the spare for one snapshot: a room that outgrows the spare's headroom between
/// its preparation and the lock (`SPARE_HEADROOM_PER_MILLE` of its size, applied within a few
/// milliseconds) is prepared for again; after this many, it is copied into fresh memory.
pub const SPARE_PREPARE_ATTEMPTS_MAX: u32 = 3;

// Reads (`node::heads`).

/// Least time between two reads of the log's head for catch-up waits: bounds what reads of
/// unknown ids cost the backend (100 head reads per second per node), and adds at most this to
/// such a read's wait.
pub const HEAD_READ_INTERVAL_MIN: Duration = Duration::from_millis(10);

// HTTP.

/// Request bodies are at most this large (the API: `413` over 4 KiB).
pub const REQUEST_BODY_BYTES_MAX: usize = 4096;
/// The API's bound on any id in a path: longer is a `400`.
pub const PATH_ID_BYTES_MAX: usize = 128;
/// Open client connections per node.
pub const CONNECTIONS_MAX: usize = 50_000;
/// Withdrawals of failed joins on their way at once (see `http::sessions::compensate`).
pub const COMPENSATIONS_IN_FLIGHT_MAX: usize = 1024;
/// Attempts to append one withdrawal (each waits at most the node's `write_wait_ms`).
pub const COMPENSATION_ATTEMPTS_MAX: u64 = 3;

const _: () = assert!(core::ROOM_ID_BYTES_MAX <= PATH_ID_BYTES_MAX);
const _: () = assert!(core::IDEMPOTENCY_KEY_BYTES_MAX <= REQUEST_BODY_BYTES_MAX);

/// Pending connections the kernel queues before `accept`: a thundering herd opens thousands of
/// connections within a second, and tokio's default (128) overflows, which clients see as
/// connection stalls and retransmits. The kernel caps it at `net.core.somaxconn` (4096 by
/// default on current Linux).
pub const LISTEN_BACKLOG: u32 = 4096;

// Tokens.

/// Longest lifetime of a token (the API: `exp` ≤ 5 minutes after issue).
pub const TOKEN_LIFETIME_MAX_S: u64 = 300;
/// Clock skew tolerated when checking a token on `:complete`.
pub const TOKEN_LEEWAY_S: u64 = 5;
/// Tokens issued within the current second, kept for reuse (see `tokens::Tokens::issue`); at
/// most this many (one per ACTIVE session polled in that second).
pub const RECENT_TOKENS_MAX: usize = 100_000;
