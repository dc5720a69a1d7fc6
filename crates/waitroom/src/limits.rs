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
/// Withdrawals of failed joins on their way at once (see `http::sessions::compensate`).
pub const COMPENSATIONS_IN_FLIGHT_MAX: usize = 1024;
/// Attempts to append one withdrawal (each waits at most the node's `write_wait_ms`).
pub const COMPENSATION_ATTEMPTS_MAX: u64 = 3;

const _: () = assert!(core::ROOM_ID_BYTES_MAX <= PATH_ID_BYTES_MAX);
const _: () = assert!(core::IDEMPOTENCY_KEY_BYTES_MAX <= REQUEST_BODY_BYTES_MAX);

// Connections (`connections`): what one client connection may hold, and for how long. The
// first four are defaults of `waitroom serve`'s flags (named in their doc comments).

/// Open client connections per node (`--connections-max`): past it `accept` waits, and new
/// connections queue in the kernel's listen backlog until one closes.
pub const CONNECTIONS_MAX: usize = 50_000;
/// Open connections per client address (`--connections-per-address-max`, `0` for no cap; an
/// IPv6 client's /64 counts as one address): a connection past it is closed as soon as it is
/// accepted. Generous, like the join limit: a carrier's NAT or an office puts many people behind
/// one address, each page holding a connection or two.
pub const CONNECTIONS_PER_ADDRESS_MAX: usize = 1024;
/// How long a request's head may take to arrive (`--header-read-timeout-ms`): from the first byte
/// of a request to the end of its headers, and from `accept` for a connection's first request,
/// so a connection that never sends a request is closed after this too. A browser sends its
/// headers in one packet; this bounds slowloris.
pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// How long a connection that answered a request may wait for the next one (`--idle-timeout-ms`):
/// keep-alive. Longer than the waiting page's polls and heartbeats (every 10 s by default), so a
/// page keeps its connection, and than a load balancer's own idle timeout towards the node (AWS
/// ALB: 60 s), so the node does not close a connection the balancer is about to reuse.
pub const IDLE_TIMEOUT_MS: u64 = 75_000;
/// How much longer than the node's own waits (`--write-wait-ms` + `--catch-up-wait-ms`) a request
/// may be in flight, from the end of its head to the end of its answer: time to read a body of
/// `REQUEST_BODY_BYTES_MAX` and to hand over the answer. Bounds slow bodies and clients that stop
/// reading.
pub const REQUEST_TIME_BEYOND_WAITS_MS: u64 = 10_000;

/// File descriptors a node needs beside its client connections (the log's files and sockets,
/// snapshots, the listener): at start it raises its soft open-files limit to
/// `--connections-max` plus this, within the hard limit (see `server::raise_open_files_limit`).
pub const FILES_BEYOND_CONNECTIONS: u64 = 1024;

// Held status reads (`GET /api/waiting-room/sessions/{id}?waitSeconds=`): a page near the front
// of the line asks to be answered when its turn comes, instead of asking every second.

/// Longest a status read may be held (`waitSeconds`). Within the time a request may take beyond
/// the node's waits, so a held read is never closed by the request timeout.
pub const STATUS_WAIT_SECONDS_MAX: u64 = 8;
/// Status reads held at once per node (`--held-reads-max`); one past it is answered at once, as
/// without `waitSeconds`. Each holds a connection and a small task (a few KiB).
pub const HELD_READS_MAX: usize = 10_000;

const _: () = assert!(STATUS_WAIT_SECONDS_MAX * 1000 < REQUEST_TIME_BEYOND_WAITS_MS);
/// Connections are checked against the timeouts above this often at most (and four times per
/// shortest timeout), so one is closed between its timeout and its timeout plus one check.
pub const CONNECTION_CHECK_INTERVAL_MAX: Duration = Duration::from_secs(1);

const _: () = assert!(CONNECTIONS_PER_ADDRESS_MAX <= CONNECTIONS_MAX);
const _: () = assert!(LISTEN_BACKLOG as usize <= CONNECTIONS_MAX);
// Everyone the join limit lets in at once from one address can hold a connection.
const _: () =
    assert!(crate::server::defaults::JOIN_BURST_PER_IP as usize <= CONNECTIONS_PER_ADDRESS_MAX);
// A request that started arriving is given less time than an idle connection, not more.
const _: () = assert!(HEADER_READ_TIMEOUT_MS <= IDLE_TIMEOUT_MS);
// A check at least four times per timeout.
const _: () =
    assert!(CONNECTION_CHECK_INTERVAL_MAX.as_millis() * 4 <= HEADER_READ_TIMEOUT_MS as u128);

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
/// Retired keys a node keeps publishing and accepting (`--retired-signing-key`) during a
/// rotation: one is what a rotation needs; more cover a rotation started before the last one's
/// retired key was dropped.
pub const RETIRED_SIGNING_KEYS_MAX: usize = 4;
/// How long the JWKS may be cached (`Cache-Control: max-age`). A rotation publishes the next key
/// at least this long (plus the protected services' own refresh interval) before it signs.
pub const JWKS_MAX_AGE_S: u64 = 300;

// The signing key, the next one and the retired ones all fit one verifier of the token crate.
const _: () = assert!(2 + RETIRED_SIGNING_KEYS_MAX <= waitroom_token::limits::VERIFIER_KEYS_MAX);

/// A join challenge (`POST …/rooms/{roomId}/challenge`) is accepted until this long after it was
/// issued: time for a browser to solve one at the highest difficulty now and then (about two
/// minutes on average at 28 bits, see docs/api.md), and short enough that a solved challenge
/// cannot be replayed into a second place (below).
pub const CHALLENGE_LIFETIME_MS: u64 = 10 * 60 * 1000;
/// What the node allows for between its clock, another node's, and the log's timestamps (skew
/// both ways and an append's delay).
pub const CHALLENGE_CLOCK_ALLOWANCE_MS: u64 = 2 * 60 * 1000;
// A replayed solution is a join with the session id derived from the challenge: while the room
// remembers that session it is a duplicate, so the replay gets the same session back, never a
// second place. The room remembers a session while it lives and for `SESSION_RETENTION_MS` after
// it ends (never forgotten early: a room at `SESSIONS_PER_ROOM_MAX` refuses joins instead), so
// the challenge must expire, clocks and append delay allowed for, before that can end.
const _: () = assert!(
    CHALLENGE_LIFETIME_MS + CHALLENGE_CLOCK_ALLOWANCE_MS
        <= waitroom_core::limits::SESSION_RETENTION_MS,
    "a challenge outlives the memory of the session it bought"
);

/// `--join-verifier-timeout-ms`: 1..=5 000, default 300. A join waits this long at most for the
/// external verifier; past it the join goes on or is refused as `--join-verifier-fails` says. Five
/// seconds is already far longer than a person should wait to join; the write's own wait comes
/// on top.
pub const JOIN_VERIFIER_TIMEOUT_MS_MAX: u64 = 5_000;
pub const JOIN_VERIFIER_TIMEOUT_MS_DEFAULT: u64 = 300;
/// The verifier's answer is read up to this many bytes (`{"allow": false, "reason": "…"}`).
pub const JOIN_VERIFIER_ANSWER_BYTES_MAX: usize = 4096;
/// A deny's `reason` is shown in the problem's detail up to this many characters.
pub const JOIN_VERIFIER_REASON_CHARS_MAX: usize = 200;
/// Joins waiting for the verifier at once; one past it is treated as a verifier failure (open or
/// closed), so a slow verifier cannot pile up requests in the node.
pub const JOIN_VERIFIER_IN_FLIGHT_MAX: usize = 1024;
