//! Every limit of the state machine, in one place, with units in the names.
//!
//! Ranges of the room configuration follow the HTTP API (docs/api.md) exactly; the rest
//! bound memory and the work one record can cause.

/// Room ids are at most 64 bytes (`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`).
pub const ROOM_ID_BYTES_MAX: usize = 64;
/// `Idempotency-Key` header: 1..=128 printable ASCII characters.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// `targetUrl` length; browsers and proxies handle URLs far longer, operators need nothing close.
pub const TARGET_URL_BYTES_MAX: usize = 2048;

/// `capacity`: 1..=1 000 000 people inside the protected flow at once.
pub const CAPACITY_MAX: u32 = 1_000_000;
/// `admitPerMinute`: null or 1..=10 000 000.
pub const ADMIT_PER_MINUTE_MAX: u32 = 10_000_000;
/// Every `*Seconds` setting: 1..=86 400 (one day).
pub const SETTING_SECONDS_MAX: u32 = 86_400;
/// `maxWaiting`: null or 1..=100 000 000.
pub const MAX_WAITING_MAX: u32 = 100_000_000;
/// Latest `opensAt` accepted: 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write.
pub const OPENS_AT_MS_MAX: u64 = 253_402_300_799_999;

/// Scheduled events one room's configuration carries (`events`): at most 24, a drop every hour
/// of a whole sale day. Bounded by the API's 4 KiB body rather than by memory: an event takes
/// about 130 bytes of JSON with every setting and a short name, so 24 of them and the rest of the
/// configuration fit in one `PUT` (the HTTP layer's 4 KiB), and at most 100 bytes each in a
/// record and a snapshot.
pub const EVENTS_PER_ROOM_MAX: usize = 24;
/// An event's `name`: like a room id, at most 64 bytes.
pub const EVENT_NAME_BYTES_MAX: usize = 64;
/// An event's `preQueueMinutes`: null or 1..=1 440 (a day before its start).
pub const EVENT_PRE_QUEUE_MINUTES_MAX: u32 = 24 * 60;
/// Bytes one event takes in a snapshot at most: its name with its length, start, length of the
/// event (varints of at most 8 bytes), a flags byte and three settings (varints of at most 5).
pub const SNAPSHOT_EVENT_BYTES_MAX: u64 = 1 + EVENT_NAME_BYTES_MAX as u64 + 2 * 8 + 1 + 3 * 5;

/// Sessions one room holds at once, in every state (waiting, active, and ended ones still
/// remembered). Bounds a room's memory (about 110 bytes each, see the crate README) to ~13 GB
/// even when `maxWaiting` is left unset; joins past it are refused as "room full".
pub const SESSIONS_PER_ROOM_MAX: u32 = 120_000_000;

/// Ended sessions are remembered this long after they end, so a page that polls after its
/// session ended still gets the reason (the API promises at least 10 minutes).
pub const SESSION_RETENTION_MS: u64 = 15 * 60 * 1000;

/// Record ids of non-idempotent records (configure, close, heartbeat) are remembered this long,
/// so a redelivered record is recognised. Redelivery happens on reconnects, within seconds.
pub const RECORD_DEDUP_WINDOW_MS: u64 = 15 * 60 * 1000;
/// At most this many record ids are remembered; past it the oldest are forgotten early (the
/// window above then shrinks). Heartbeat records are batched per node, so a fleet appends a few
/// per second per room: the cap is never reached in practice.
pub const RECORD_DEDUP_IDS_MAX: usize = 1_000_000;

/// Sessions named by one heartbeat record. 10 000 ids × 16 bytes keeps a record near 160 KiB,
/// well under Kafka's 1 MB default message size and SQS's 256 KiB.
pub const HEARTBEAT_BATCH_SESSIONS_MAX: usize = 10_000;

/// Largest encoded record accepted by `Record::decode`: a full heartbeat batch plus headroom.
pub const RECORD_BYTES_MAX: usize = 256 * 1024;

/// The admission history used for ETAs and `admissionsPerMinute`: buckets of this width...
pub const RATE_BUCKET_MS: u64 = 5_000;
/// ...this many of them (5 minutes).
pub const RATE_BUCKETS: usize = 60;
/// Window of the turnover rate behind `estimatedWaitSeconds`.
pub const ETA_WINDOW_MS: u64 = RATE_BUCKET_MS * RATE_BUCKETS as u64;
/// Fewer freed slots than this in the window: the turnover is not known well enough to estimate
/// at all ("not yet": the first fill, or a room whose slots hardly ever free).
pub const ETA_FREES_MIN: u64 = 20;
/// ...nor before the room has been open for this many times the mean hold it measures (the
/// first fill: everyone admitted at the opening is the same age, so early frees under-sample
/// the long holds).
pub const ETA_SETTLE_HOLDS: u64 = 2;
/// The range around an estimate spans this many standard deviations on each side (the spread of
/// a count of `n` events is taken as `sqrt(n)`, which over-states it for regular hold times).
pub const ETA_RANGE_SIGMAS: u64 = 2;
/// A single `estimatedWaitSeconds` is given only when the range's half-width is at most this
/// share of the estimate (percent)...
pub const ETA_POINT_SPREAD_PERCENT_MAX: u64 = 20;
/// ...and at most this long (a longer half-width: the range alone).
pub const ETA_POINT_SPREAD_MS_MAX: u64 = 60_000;
/// `turnSoon` (see `Room::turn_soon`) looks this far ahead, in percent of the room's heartbeat
/// interval: a session reads its view at least once a heartbeat interval, so it must be marked
/// one interval before its turn; the half interval more is the margin for a turnover that speeds
/// up (the first fill of a room, a burst of leavers). Every marked session holds a read: a longer
/// horizon is more reads (about one per held read's wait, per marked session).
pub const TURN_SOON_HORIZON_PERCENT: u64 = 150;
/// ...and the slots freed lately are scaled to the horizon from the time they span, at least
/// this long (a room open for less has freed few, and its turnover is rising: the first fill).
pub const TURN_SOON_SPAN_MS_MIN: u64 = 1_000;

/// Latest room clock a snapshot may carry (`Room::restore_snapshot`): the last instant of year
/// 9999, like `opensAt`. Log timestamps are real times, so no room gets near it; bounding it keeps
/// every deadline a restored room computes (clock + a day of timeout + retention) far inside
/// `u64`, whatever the snapshot says.
pub const SNAPSHOT_CLOCK_MS_MAX: u64 = OPENS_AT_MS_MAX;
/// Largest admission or expiry total a snapshot may carry. A room counts at most one admission
/// and one expiry per session: at a million joins per second it would take 36 000 years to get
/// here. The bound keeps a damaged snapshot from making the room's `+= 1` (or
/// `ExpiredTotals::sum`) overflow later.
pub const SNAPSHOT_TOTAL_MAX: u64 = 1 << 60;
/// A snapshot's fixed part (header, configuration with its events, counters, rate windows,
/// trailer) is at most this; the events, the target URL and the two rate windows are most of it.
pub const SNAPSHOT_ROOM_BYTES_MAX: u64 = 24 * 1024;
/// Bytes one session (or free slot) takes in a snapshot at most: a tag, the id, three times as
/// varints of at most 7 bytes, an idempotency key with its length, and its slot on two lists as
/// index deltas of at most 4 bytes.
pub const SNAPSHOT_SESSION_BYTES_MAX: u64 =
    1 + 16 + 3 * 7 + 1 + IDEMPOTENCY_KEY_BYTES_MAX as u64 + 2 * 4;
/// Bytes one remembered record id takes in a snapshot at most: its age (3 bytes) and the id.
pub const SNAPSHOT_RECORD_ID_BYTES_MAX: u64 = 3 + 16;
/// Largest snapshot `Room::restore_snapshot` reads: a room at every limit at once (about 21 GB;
/// a million waiting sessions take about 22 MB). Larger inputs are refused before any work, and
/// what restore allocates is proportional to the input's length.
pub const SNAPSHOT_BYTES_MAX: u64 = SNAPSHOT_ROOM_BYTES_MAX
    + SESSIONS_PER_ROOM_MAX as u64 * SNAPSHOT_SESSION_BYTES_MAX
    + RECORD_DEDUP_IDS_MAX as u64 * SNAPSHOT_RECORD_ID_BYTES_MAX;

const _: () = assert!(
    ETA_WINDOW_MS >= 60_000,
    "admissionsPerMinute needs one minute of history"
);
const _: () = assert!(
    SESSION_RETENTION_MS >= 10 * 60 * 1000,
    "the API promises 10 minutes"
);
const _: () = assert!(MAX_WAITING_MAX < SESSIONS_PER_ROOM_MAX);
const _: () = assert!(HEARTBEAT_BATCH_SESSIONS_MAX * 17 + 1024 < RECORD_BYTES_MAX);
const _: () = assert!(
    SNAPSHOT_CLOCK_MS_MAX < 1 << 49,
    "snapshot times are varints of at most 7 bytes"
);
const _: () = assert!(
    SNAPSHOT_CLOCK_MS_MAX
        + SETTING_SECONDS_MAX as u64 * 1000
        + SESSION_RETENTION_MS
        + RECORD_DEDUP_WINDOW_MS
        < 1 << 63,
    "deadlines of a restored room cannot overflow"
);
const _: () = assert!(
    2 * (SESSIONS_PER_ROOM_MAX as u64) < 1 << 28,
    "slot index deltas are varints of at most 4 bytes"
);
const _: () = assert!(
    RECORD_DEDUP_WINDOW_MS < 1 << 21,
    "ages of remembered record ids are varints of at most 3 bytes"
);
const _: () = assert!(
    SNAPSHOT_TOTAL_MAX.checked_mul(8).is_some(),
    "the five expiry totals and their sum stay inside u64"
);
const _: () = assert!(
    (ROOM_ID_BYTES_MAX + TARGET_URL_BYTES_MAX + 2 * RATE_BUCKETS * (7 + 5) + 512) as u64
        + EVENTS_PER_ROOM_MAX as u64 * SNAPSHOT_EVENT_BYTES_MAX
        <= SNAPSHOT_ROOM_BYTES_MAX,
    "the fixed part: room id, target URL, two windows of 60 buckets, the events, and the rest"
);
const _: () = assert!(
    EVENTS_PER_ROOM_MAX * (SNAPSHOT_EVENT_BYTES_MAX as usize + 8) + 4096 < RECORD_BYTES_MAX,
    "a configuration with every event fits in a record"
);
const _: () = assert!(EVENT_NAME_BYTES_MAX <= u8::MAX as usize);

/// Passes one `IssuePasses` record (one `POST …/rooms/{id}/passes`) issues: 1..=10 000. A pass
/// is 16 bytes in the record (its hash) plus a byte of length: a full batch stays near 160 KiB,
/// like a full heartbeat batch.
pub const PASSES_PER_RECORD_MAX: usize = 10_000;
const _: () = assert!(PASSES_PER_RECORD_MAX * 17 + 1024 < RECORD_BYTES_MAX);
/// Unused, unexpired passes one room holds (about 60 bytes each: 6 MB at most); an issue that
/// would go past it is refused whole. Expired and used passes are forgotten at once.
pub const PASSES_PER_ROOM_MAX: usize = 100_000;
const _: () = assert!(PASSES_PER_RECORD_MAX <= PASSES_PER_ROOM_MAX);
/// A pass expires at most this long after the time of the record that issued it (31 days: the
/// API offers 30, so a record that reaches the log after its node's clock is never refused), and
/// later than that time.
pub const PASS_LIFETIME_MS_MAX: u64 = 31 * 24 * 60 * 60 * 1000;

/// `challengeDifficultyBits`: 0 (no challenge) or 1..=28 leading zero bits of SHA-256. At 28 bits
/// a browser needs minutes per join (2^28 ≈ 268 million hashes on average): more is never useful
/// against bots and would lock people out.
pub const CHALLENGE_DIFFICULTY_BITS_MAX: u8 = 28;
/// The difficulty the console suggests and the docs and figures measure: on one core of the
/// machine the figures were taken on, a browser solves it in about a second (median of 41 solves
/// in headless Chromium: 1.04 s; ln 2 × 2^22 hashes at its 2.2 million a second: 1.3 s), a native
/// solver in about 0.2 s (median of 101: 0.19 s, at 13 million a second); see
/// bench/results/2026-12-07/challenge/.
pub const CHALLENGE_DIFFICULTY_BITS_SUGGESTED: u8 = 22;
const _: () = assert!(CHALLENGE_DIFFICULTY_BITS_SUGGESTED <= CHALLENGE_DIFFICULTY_BITS_MAX);
