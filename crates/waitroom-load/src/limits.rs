//! Every limit of the load tool, in one place, with the reason for its value.
//!
//! Option values are validated against these at start-up (see `options.rs`), so a run never
//! grows without bound: users, in-flight requests, duration, trace size, response bodies and
//! chart sizes are all capped.

/// Most simulated users in one run. Each costs one tokio task (a few KiB while alive) plus its
/// trace (~200 bytes before requests); a million is ~1 GB at worst, which this tool will not
/// exceed without a code change.
pub const USERS_MAX: u32 = 1_000_000;

/// Ceiling for `--connections-max` (= in-flight requests = pooled connections). Past ~16 k a
/// single client IP runs out of ephemeral ports against one server address anyway.
pub const CONNECTIONS_MAX_CEILING: u32 = 16_384;

/// Ceiling for `--duration-max-seconds`: one day. A longer load run is a soak test, not this tool.
pub const DURATION_MAX_SECONDS_CEILING: u64 = 86_400;

/// Default bound on trace records (requests + ETA samples). A record is 24–32 bytes, so the
/// default keeps the trace near 300 MB; a run that reaches it stops early (stop reason
/// `trace-full`) rather than silently sampling.
pub const TRACE_RECORDS_MAX_DEFAULT: u64 = 10_000_000;

/// Ceiling for `--trace-records-max` (~3 GB of trace).
pub const TRACE_RECORDS_MAX_CEILING: u64 = 100_000_000;

/// Ceiling for `--request-timeout-ms`: a request slower than a minute is a failure.
pub const REQUEST_TIMEOUT_MS_CEILING: u64 = 60_000;

/// Floor for `--poll-interval-ms` and `--stats-interval-ms`: below 10 ms the tool measures its
/// own scheduler more than the server.
pub const INTERVAL_MS_FLOOR: u64 = 10;

/// Ceiling for the poll and stats intervals: an hour.
pub const INTERVAL_MS_CEILING: u64 = 3_600_000;

/// Largest response body read. A session view or a room body is well under 2 KiB; anything
/// larger is a misbehaving server, counted as a bad body rather than buffered.
pub const RESPONSE_BODY_BYTES_MAX: usize = 64 * 1024;

/// A simulated user that fails this many poll/heartbeat requests in a row gives up (outcome
/// `gave-up`), so a dead server does not turn into an endless retry loop.
pub const CONSECUTIVE_FAILURES_MAX: u32 = 5;

/// Largest hold time, abandon delay or ramp length accepted (seconds): one day.
pub const SECONDS_RANGE_CEILING: f64 = 86_400.0;

/// Highest Poisson arrival rate accepted (users per second).
pub const POISSON_RATE_PER_SECOND_CEILING: f64 = 10_000_000.0;

/// Largest heartbeat interval a view may report that a simulated user will honour; the API
/// bounds every `*Seconds` field to a day.
pub const HEARTBEAT_INTERVAL_SECONDS_CEILING: u64 = 86_400;

/// Points kept per time series in the report and charts (bucketed by time, keeping each
/// bucket's maximum so an overshoot peak is never averaged away).
pub const SERIES_POINTS_MAX: usize = 2_000;

/// Points kept in the ETA scatter (evenly strided); an SVG with millions of circles is useless.
pub const SCATTER_POINTS_MAX: usize = 5_000;

/// Buckets in each latency histogram chart.
pub const HISTOGRAM_BUCKETS: usize = 50;

/// Highest latency recorded in a histogram (µs); the request timeout ceiling is below it.
pub const LATENCY_RECORDABLE_MAX_US: u64 = 3_600_000_000;

/// Ceiling on the room `capacity` (the API's own range).
pub const CAPACITY_CEILING: u32 = 1_000_000;

/// Every progress update is at most this often (ms): a terminal redraw costs more than it tells.
pub const PROGRESS_INTERVAL_MS: u64 = 200;

const _: () = assert!(REQUEST_TIMEOUT_MS_CEILING * 1000 < LATENCY_RECORDABLE_MAX_US);
const _: () = assert!(INTERVAL_MS_FLOOR < INTERVAL_MS_CEILING);
const _: () = assert!(TRACE_RECORDS_MAX_DEFAULT <= TRACE_RECORDS_MAX_CEILING);

/// Estimates are also scored apart once the room has run this long (the issue's "once the room
/// has run for two minutes")...
pub const ETA_SETTLED_AFTER_SECONDS: u64 = 120;
/// ...counting those off by more than this (a figure's error, or how far outside a range).
pub const ETA_ABSOLUTE_ERROR_LIMIT_SECONDS: u64 = 60;
