//! Metering-quality metrics computed from a [`Trace`]. Pure: no I/O, no clock; the same trace
//! always gives the same figures.
//!
//! # Definitions (times as in `trace.rs`; "interval" means half-open `[start, end)`)
//! - **Requests** (per kind): `count`, `ok`, `failed`; `okPerSecond = ok ÷ (last received −
//!   first sent)` over that kind; latency = `received − sent` of every answered request
//!   (any status), percentiles from an HdrHistogram (3 significant digits).
//! - **Capacity overshoot, client**: `max(0, max_t A(t) − capacity)` where `A(t)` counts users
//!   whose proven ACTIVE interval `[first ACTIVE r, last live-and-admitted s)` contains `t`.
//!   Those intervals lie inside the server's true ACTIVE intervals whatever the latencies and
//!   the clocks, so a positive figure is a real overshoot (no false positive).
//! - **Capacity overshoot, server**: `max(0, max over samples of activeCount − capacity)`.
//! - **FIFO inversions**: pairs `(i, j)` of admitted, non-pre-queue sessions with
//!   `joinedAt_i < joinedAt_j` and `admittedAt_i > admittedAt_j` (both strict: equal
//!   milliseconds are ambiguous and never counted); merge-sort count, `O(n log n)`.
//! - **Slot utilisation**: `∫ ACTIVE(t) dt ÷ (capacity × |{t : WAITING(t) > 0}|)`, integrals
//!   over the time when someone was waiting. Client: `ACTIVE(t)` counts `[admittedAt + 1 ms,
//!   last live-and-admitted s)` intervals, `WAITING(t)` counts `[joinedAt (opensAt for the
//!   pre-queue), admittedAt or last waiting s)` intervals; both are lower bounds of the truth
//!   (given synchronised clocks).
//!   Server: stats samples as a step function (each sample holds until the next).
//! - **Refill latency**: each slot freed by a user's own `:complete`/`DELETE` of an admitted
//!   session (proved by the answer), while someone was certainly waiting (below), is matched in
//!   time order to the earliest not yet matched admission that may follow it
//!   (`admittedAt + 1 ms > sent`). The true free instant lies in `[sent, received]` and the
//!   true admission in `[admittedAt, admittedAt + 1 ms)` (the API's timestamps are in whole
//!   milliseconds), so `admittedAt + 1 ms − sent` is an upper bound and
//!   `max(0, admittedAt − received)` a lower bound of the refill latency; both are reported
//!   (p50, p90, p99, max; nearest rank). A free left without an admission is `unrefilled`.
//!   "Certainly waiting": some waiting interval has `start + 1 ms ≤ sent` and `end > received`,
//!   so someone waited during the whole request, whenever the server processed it; a correct
//!   server then admits someone while processing it. Only frees received before the
//!   **admission horizon** are counted: the earliest last-WAITING `s` among joined users whose
//!   fate is unknown (never seen admitted nor EXPIRED, e.g. still waiting when the run stopped),
//!   since any of them may have been admitted unseen after that instant. Before the horizon
//!   every admission is in the trace, so every counted free can be matched and
//!   `unrefilled > 0` means a slot was left idle while someone waited (given synchronised
//!   clocks). Frees after it are reported as `beyondHorizon`.
//! - **ETA error**: for every answer a user placed in line (not the pre-queue) got while WAITING
//!   and later admitted, `actual = admittedAt − (time the answer was received)`; samples with
//!   `actual ≤ 0` are excluded (counted). What the answer showed is one of: a figure
//!   (`estimatedWaitSeconds`), scored by its error `|figure − actual|`; a range alone
//!   (`estimatedWaitRange`), scored by how far `actual` fell outside it (0 inside: an honest
//!   range); nothing ("not yet"), counted but not scored. Relative error = error ÷ actual,
//!   absolute in seconds; p50, p90, p99 and max by nearest rank, for figures, for ranges and for
//!   both together ("shown"). **Settled**: the same for samples received at least
//!   `ETA_SETTLED_AFTER_SECONDS` after the run started (the room is configured at the start),
//!   with the count of figures, and of ranges, off by more than `ETA_ABSOLUTE_ERROR_LIMIT_SECONDS`.
//!   **By change**: "shown" split by whether a change of the room (a configuration PUT of the
//!   run, `--reconfigure`) came during the wait: the answer received before the PUT was answered,
//!   the admission after it was sent (`admittedAt + 1 ms` after it: the admission may lie anywhere
//!   in its millisecond, and a raise or a resume admits at once, possibly within the millisecond
//!   its PUT was sent in; `acrossChangeByResolution` counts the answers that moves).
//!   What the operator will change, no estimate can foresee.
//! - **Clock offset** (server − client): every join proves the true join instant, in
//!   `[joinedAt, joinedAt + 1 ms)` on the server's clock, lies in `[sent, received]` on the
//!   client's, so the offset lies in `[max(joinedAt − received), min(joinedAt + 1 ms − sent)]`.
//!
//! Server timestamps have millisecond resolution ([`SERVER_TIME_RESOLUTION_US`]); client times
//! have microsecond resolution.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::limits::{
    ETA_ABSOLUTE_ERROR_LIMIT_SECONDS, ETA_SETTLED_AFTER_SECONDS, HISTOGRAM_BUCKETS,
    LATENCY_RECORDABLE_MAX_US, SCATTER_POINTS_MAX, SERIES_POINTS_MAX,
};
use crate::time::{SERVER_TIME_RESOLUTION_US, TimeUs};
use crate::trace::{EtaShown, RequestKind, Trace, UserOutcome};

/// Everything measured, plus the time series for the charts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    pub metrics: Metrics,
    pub series: Series,
}

/// The figures of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub capacity: u32,
    pub duration_seconds: f64,
    pub users: UserCounts,
    /// Per request kind (only kinds that were sent).
    pub requests: BTreeMap<RequestKind, RequestStats>,
    pub failures: Failures,
    pub overshoot: Overshoot,
    pub fifo: Fifo,
    pub utilisation: Utilisation,
    pub refill_latency: RefillLatency,
    pub turn_notice: TurnNotice,
    /// Status reads (`poll` and `held-poll`) per minute that users spent waiting (the waiting
    /// intervals of the utilisation); `None` if nobody waited.
    pub reads_per_waiting_minute: Option<f64>,
    pub eta_error: EtaError,
    /// `None` if no join succeeded.
    pub clock_offset: Option<ClockOffset>,
}

/// How the users' runs ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserCounts {
    pub planned: u64,
    pub joined: u64,
    pub join_failed: u64,
    pub not_started: u64,
    /// Joined in the pre-queue (excluded from FIFO inversions).
    pub prequeue: u64,
    /// `admittedAt` seen.
    pub admitted: u64,
    pub completed: u64,
    pub left_waiting: u64,
    pub left_active: u64,
    /// Ended by the server, by `expiredReason`.
    pub expired: BTreeMap<String, u64>,
    pub gave_up: u64,
    pub end_failed: u64,
    pub still_waiting: u64,
    pub still_active: u64,
    /// Sent only the protected request, bypassing the waiting room (`--direct`).
    pub direct: u64,
}

/// Throughput and latency of one request kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestStats {
    pub count: u64,
    pub ok: u64,
    pub failed: u64,
    /// `ok ÷ (last received − first sent)`; `None` if that window is empty.
    pub ok_per_second: Option<f64>,
    /// Over answered requests; `None` if none was answered.
    pub latency_ms: Option<LatencySummary>,
}

/// Latency percentiles (ms), from an HdrHistogram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// Failed requests, by failure label (`"503"`, `"timeout"`, `"transport"`, `"bad-body"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failures {
    pub total: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_kind: BTreeMap<RequestKind, BTreeMap<String, u64>>,
}

/// Capacity overshoot, observed two ways.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overshoot {
    pub client: ClientOvershoot,
    /// `None` without stats samples (no admin token).
    pub server: Option<ServerOvershoot>,
}

/// Overshoot from the clients' proven ACTIVE intervals.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientOvershoot {
    pub active_max: u64,
    pub overshoot: u64,
    /// When `active_max` was first reached, seconds after the start (`None` if never ACTIVE).
    pub active_max_at_seconds: Option<f64>,
    /// Users with a non-empty proven ACTIVE interval.
    pub intervals: u64,
}

/// Overshoot from the server's stats samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerOvershoot {
    pub active_max: u64,
    pub overshoot: u64,
    pub samples: u64,
}

/// FIFO inversions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fifo {
    /// Admitted, non-pre-queue sessions compared.
    pub sessions: u64,
    pub excluded_prequeue: u64,
    pub inversions: u64,
}

/// Slot utilisation while someone was waiting.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Utilisation {
    /// `None` if no one was ever provably waiting.
    pub client: Option<f64>,
    pub client_waiting_seconds: f64,
    /// `None` without samples showing someone waiting.
    pub server: Option<f64>,
    pub server_waiting_seconds: f64,
}

/// Refill latency of freed slots.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefillLatency {
    /// Slots freed by a user's own complete/leave.
    pub freed: u64,
    /// Of which while someone was certainly waiting, before the admission horizon (the ones
    /// that must be refilled).
    pub freed_while_waiting: u64,
    /// Frees received after the admission horizon, not counted (their refill may be unseen).
    pub beyond_horizon: u64,
    pub refilled: u64,
    pub unrefilled: u64,
    pub upper_bound_ms: Option<Percentiles>,
    pub lower_bound_ms: Option<Percentiles>,
}

/// How soon users who waited learned of their turn: for each, the first ACTIVE answer received
/// minus the admission (`admittedAt`, moved onto the client's clock by the upper bound of the
/// clock offset, so each figure is an upper bound given a fixed offset).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnNotice {
    pub users: u64,
    pub upper_bound_ms: Option<Percentiles>,
}

/// Nearest-rank percentiles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Accuracy of the estimates shown (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtaError {
    /// Figures (`estimatedWaitSeconds`) from users later admitted, `actual > 0`.
    pub samples: u64,
    /// Samples whose `actual ≤ 0` (answer received after `admittedAt`: clock skew or latency).
    pub excluded_non_positive_actual: u64,
    /// Samples from users never admitted (no actual wait).
    pub unresolved: u64,
    /// Figures: `|figure − actual| ÷ actual`.
    pub relative: Option<Percentiles>,
    /// Figures: `|figure − actual|`, seconds.
    pub absolute_seconds: Option<Percentiles>,
    /// Ranges shown without a figure.
    pub ranges: RangeScore,
    /// Answers that showed neither ("not yet"), `actual > 0`.
    pub not_yet_samples: u64,
    /// Figures and ranges together (a range's error: how far outside it `actual` fell).
    pub shown: ErrorSummary,
    /// Samples received once the room had run `ETA_SETTLED_AFTER_SECONDS`.
    pub settled: SettledEta,
    /// Figures and ranges shown (as `shown`) split by whether an operator's change of the room
    /// (a `--reconfigure` PUT) came between the answer and the admission: an answer received
    /// before the PUT was answered, for a user admitted after it was sent. No estimate can
    /// foresee such a change; `shown` pools both. The admission counts as after the PUT was
    /// sent when `admittedAt + 1 ms` (its resolution) is.
    pub across_change: ErrorSummary,
    /// Answers shown in `across_change` only because of that millisecond: admitted
    /// within the millisecond the PUT was sent in, `admittedAt` stamped before it.
    pub across_change_by_resolution: u64,
    pub no_change: ErrorSummary,
}

/// Errors of a set of samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorSummary {
    pub samples: u64,
    pub relative: Option<Percentiles>,
    pub absolute_seconds: Option<Percentiles>,
}

/// Ranges shown without a figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeScore {
    pub samples: u64,
    /// `low ≤ actual ≤ high`.
    pub inside: u64,
    /// How far outside the range `actual` fell (0 inside), relative and seconds.
    pub miss: ErrorSummary,
    /// `(high − low) ÷ actual`.
    pub relative_width: Option<Percentiles>,
}

/// The estimates once the room had run `ETA_SETTLED_AFTER_SECONDS`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettledEta {
    pub after_seconds: u64,
    pub limit_seconds: u64,
    pub figures: u64,
    /// Figures off by more than `limit_seconds`.
    pub figures_over_limit: u64,
    pub figure_absolute_max_seconds: Option<f64>,
    pub ranges: u64,
    /// Ranges the actual wait fell more than `limit_seconds` outside of.
    pub ranges_missed_over_limit: u64,
    pub range_miss_max_seconds: Option<f64>,
    pub not_yet: u64,
    /// Figures and ranges together.
    pub shown: ErrorSummary,
}

/// Bounds on the server clock minus the client clock, from the joins.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClockOffset {
    pub lower_ms: f64,
    pub upper_ms: f64,
    /// `lower ≤ upper`: the clocks are consistent with a fixed offset in that range.
    pub consistent: bool,
}

/// Time series and distributions for the charts (already bounded in size).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    pub capacity: u32,
    /// Proven ACTIVE count (client observation), `(seconds after start, count)`.
    pub active_client: Vec<(f64, f64)>,
    /// ACTIVE count from `[admittedAt, last live-and-admitted s)` (the utilisation intervals).
    pub active_admitted: Vec<(f64, f64)>,
    /// `activeCount` of the stats samples.
    pub active_server: Vec<(f64, f64)>,
    /// Provably WAITING users of this run.
    pub waiting_client: Vec<(f64, f64)>,
    /// `waitingCount` of the stats samples.
    pub waiting_server: Vec<(f64, f64)>,
    /// `(estimate, actual)` seconds, strided down to a bounded number of points.
    pub eta_scatter: Vec<(f64, f64)>,
    pub join_latency_histogram: Vec<HistogramBucket>,
    pub poll_latency_histogram: Vec<HistogramBucket>,
}

/// One bar of a latency histogram: `[lower_ms, upper_ms)`, the last bar also holding the tail.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistogramBucket {
    pub lower_ms: f64,
    pub upper_ms: f64,
    pub count: u64,
}

/// Computes every metric and series of a trace.
pub fn analyse(trace: &Trace) -> Analysis {
    let waiting_intervals: Vec<(TimeUs, TimeUs)> = trace
        .users
        .iter()
        .filter_map(|user| user.waiting_interval())
        .collect();
    let proven_active: Vec<(TimeUs, TimeUs)> = trace
        .users
        .iter()
        .filter_map(|user| user.proven_active_interval())
        .collect();
    let admitted_intervals: Vec<(TimeUs, TimeUs)> = trace
        .users
        .iter()
        .filter_map(|user| user.admitted_interval())
        .collect();
    let metrics = Metrics {
        capacity: trace.capacity,
        duration_seconds: seconds(trace.ended_at_us - trace.started_at_us),
        users: user_counts(trace),
        requests: request_stats(trace),
        failures: failures(trace),
        overshoot: Overshoot {
            client: client_overshoot(trace, &proven_active),
            server: server_overshoot(trace),
        },
        fifo: fifo(trace),
        utilisation: utilisation(trace, &admitted_intervals, &waiting_intervals),
        refill_latency: refill_latency(trace, &waiting_intervals),
        turn_notice: turn_notice(trace),
        reads_per_waiting_minute: reads_per_waiting_minute(trace, &waiting_intervals),
        eta_error: eta_error(trace),
        clock_offset: clock_offset(trace),
    };
    let origin = trace.started_at_us;
    let sample_series = |value: fn(&crate::trace::RoomSample) -> u64| {
        downsample_max(
            trace
                .room_samples
                .iter()
                .map(|sample| (seconds(sample.at_us - origin), value(sample) as f64))
                .collect(),
        )
    };
    let series = Series {
        capacity: trace.capacity,
        active_client: step_series(&proven_active, origin),
        active_admitted: step_series(&admitted_intervals, origin),
        active_server: sample_series(|sample| sample.active_count),
        waiting_client: step_series(&waiting_intervals, origin),
        waiting_server: sample_series(|sample| sample.waiting_count),
        eta_scatter: eta_scatter(trace),
        join_latency_histogram: latency_histogram(trace, RequestKind::Join),
        poll_latency_histogram: latency_histogram(trace, RequestKind::Poll),
    };
    Analysis { metrics, series }
}

fn seconds(duration_us: TimeUs) -> f64 {
    duration_us as f64 / 1e6
}

fn milliseconds(duration_us: TimeUs) -> f64 {
    duration_us as f64 / 1e3
}

fn user_counts(trace: &Trace) -> UserCounts {
    let mut counts = UserCounts {
        planned: trace.users.len() as u64,
        ..UserCounts::default()
    };
    for user in &trace.users {
        if let Some(join) = &user.join {
            counts.joined += 1;
            counts.prequeue += u64::from(join.prequeue);
        }
        counts.admitted += u64::from(user.admitted_at_us.is_some());
        match user.outcome {
            UserOutcome::NotStarted => counts.not_started += 1,
            UserOutcome::JoinFailed => counts.join_failed += 1,
            UserOutcome::StillWaiting => counts.still_waiting += 1,
            UserOutcome::StillActive => counts.still_active += 1,
            UserOutcome::Completed => counts.completed += 1,
            UserOutcome::LeftWaiting => counts.left_waiting += 1,
            UserOutcome::LeftActive => counts.left_active += 1,
            UserOutcome::Expired(reason) => {
                *counts
                    .expired
                    .entry(reason.as_str().to_string())
                    .or_default() += 1;
            }
            UserOutcome::GaveUp => counts.gave_up += 1,
            UserOutcome::EndFailed => counts.end_failed += 1,
            UserOutcome::Direct => counts.direct += 1,
        }
    }
    counts
}

fn new_latency_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts (low ≥ 1, high ≥ 2 × low, 3 digits).
    Histogram::new_with_bounds(1, LATENCY_RECORDABLE_MAX_US, 3)
        .expect("constant histogram bounds are valid")
}

fn request_stats(trace: &Trace) -> BTreeMap<RequestKind, RequestStats> {
    let mut stats = BTreeMap::new();
    for kind in RequestKind::ALL {
        let mut count = 0;
        let mut ok = 0;
        let mut first_sent = TimeUs::MAX;
        let mut last_received = TimeUs::MIN;
        let mut histogram = new_latency_histogram();
        for record in trace.requests.iter().filter(|record| record.kind == kind) {
            count += 1;
            ok += u64::from(record.outcome == crate::trace::Outcome::Ok);
            first_sent = first_sent.min(record.sent_us);
            last_received = last_received.max(record.received_us);
            if record.outcome.answered() {
                let latency_us = (record.received_us - record.sent_us).max(1) as u64;
                histogram.saturating_record(latency_us);
            }
        }
        if count == 0 {
            continue;
        }
        let window_us = last_received - first_sent;
        let to_ms = |value: u64| value as f64 / 1e3;
        stats.insert(
            kind,
            RequestStats {
                count,
                ok,
                failed: count - ok,
                ok_per_second: (window_us > 0).then(|| ok as f64 / seconds(window_us)),
                latency_ms: (!histogram.is_empty()).then(|| LatencySummary {
                    p50: to_ms(histogram.value_at_quantile(0.50)),
                    p90: to_ms(histogram.value_at_quantile(0.90)),
                    p99: to_ms(histogram.value_at_quantile(0.99)),
                    p999: to_ms(histogram.value_at_quantile(0.999)),
                    max: to_ms(histogram.max()),
                    mean: histogram.mean() / 1e3,
                }),
            },
        );
    }
    stats
}

fn failures(trace: &Trace) -> Failures {
    let mut failures = Failures::default();
    for record in &trace.requests {
        if let Some(label) = record.outcome.failure_label() {
            failures.total += 1;
            *failures.by_status.entry(label.clone()).or_default() += 1;
            *failures
                .by_kind
                .entry(record.kind)
                .or_default()
                .entry(label)
                .or_default() += 1;
        }
    }
    failures
}

/// Events of a set of half-open intervals, sorted by time with ends before starts at equal
/// times (so touching intervals never count as overlapping).
fn sorted_events(intervals: &[(TimeUs, TimeUs)]) -> Vec<(TimeUs, i64)> {
    let mut events: Vec<(TimeUs, i64)> = intervals
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end, -1)])
        .collect();
    events.sort_unstable();
    events
}

/// Highest number of intervals overlapping at one instant, and the first instant it occurs.
fn max_overlap(intervals: &[(TimeUs, TimeUs)]) -> (u64, Option<TimeUs>) {
    let mut current = 0_i64;
    let mut best = 0_i64;
    let mut best_at = None;
    for (at, delta) in sorted_events(intervals) {
        current += delta;
        if current > best {
            best = current;
            best_at = Some(at);
        }
    }
    (best as u64, best_at)
}

fn client_overshoot(trace: &Trace, proven_active: &[(TimeUs, TimeUs)]) -> ClientOvershoot {
    let (active_max, at) = max_overlap(proven_active);
    ClientOvershoot {
        active_max,
        overshoot: active_max.saturating_sub(u64::from(trace.capacity)),
        active_max_at_seconds: at.map(|at| seconds(at - trace.started_at_us)),
        intervals: proven_active.len() as u64,
    }
}

fn server_overshoot(trace: &Trace) -> Option<ServerOvershoot> {
    if trace.room_samples.is_empty() {
        return None;
    }
    let active_max = trace
        .room_samples
        .iter()
        .map(|sample| sample.active_count)
        .max()
        .unwrap_or(0);
    let overshoot = trace
        .room_samples
        .iter()
        .map(|sample| {
            sample
                .active_count
                .saturating_sub(u64::from(sample.capacity))
        })
        .max()
        .unwrap_or(0);
    Some(ServerOvershoot {
        active_max,
        overshoot,
        samples: trace.room_samples.len() as u64,
    })
}

fn fifo(trace: &Trace) -> Fifo {
    let mut excluded_prequeue = 0;
    let mut pairs: Vec<(TimeUs, TimeUs)> = Vec::new();
    for user in &trace.users {
        let (Some(join), Some(admitted_at_us)) = (&user.join, user.admitted_at_us) else {
            continue;
        };
        if join.prequeue {
            excluded_prequeue += 1;
        } else {
            pairs.push((join.joined_at_us, admitted_at_us));
        }
    }
    // Within equal join times, ascending admission times: such pairs never count.
    pairs.sort_unstable();
    let mut admissions: Vec<TimeUs> = pairs.iter().map(|&(_, admitted)| admitted).collect();
    Fifo {
        sessions: pairs.len() as u64,
        excluded_prequeue,
        inversions: count_inversions(&mut admissions),
    }
}

/// Number of pairs `i < j` with `values[i] > values[j]` (strictly), by merge sort in
/// `O(n log n)`. Sorts `values`.
pub fn count_inversions(values: &mut [TimeUs]) -> u64 {
    let mut scratch = values.to_vec();
    sort_counting(values, &mut scratch)
}

fn sort_counting(values: &mut [TimeUs], scratch: &mut [TimeUs]) -> u64 {
    let length = values.len();
    if length < 2 {
        return 0;
    }
    let middle = length / 2;
    let mut inversions = sort_counting(&mut values[..middle], &mut scratch[..middle])
        + sort_counting(&mut values[middle..], &mut scratch[middle..]);
    let (mut left, mut right, mut out) = (0, middle, 0);
    while left < middle && right < length {
        // Equal values go left first: a tie is not an inversion.
        if values[left] <= values[right] {
            scratch[out] = values[left];
            left += 1;
        } else {
            scratch[out] = values[right];
            right += 1;
            inversions += (middle - left) as u64;
        }
        out += 1;
    }
    scratch[out..out + middle - left].copy_from_slice(&values[left..middle]);
    out += middle - left;
    scratch[out..out + length - right].copy_from_slice(&values[right..length]);
    values.copy_from_slice(&scratch[..length]);
    inversions
}

fn utilisation(
    trace: &Trace,
    admitted_intervals: &[(TimeUs, TimeUs)],
    waiting_intervals: &[(TimeUs, TimeUs)],
) -> Utilisation {
    let capacity = f64::from(trace.capacity.max(1));
    // Merge both event lists; integrate ACTIVE over the time with WAITING > 0.
    let mut events: Vec<(TimeUs, i64, i64)> = Vec::new();
    events.extend(
        admitted_intervals
            .iter()
            .flat_map(|&(start, end)| [(start, 1, 0), (end, -1, 0)]),
    );
    events.extend(
        waiting_intervals
            .iter()
            .flat_map(|&(start, end)| [(start, 0, 1), (end, 0, -1)]),
    );
    events.sort_unstable();
    let (mut active, mut waiting) = (0_i64, 0_i64);
    let (mut active_integral, mut waiting_time) = (0.0_f64, 0_i64);
    let mut previous = events.first().map_or(0, |event| event.0);
    for (at, active_delta, waiting_delta) in events {
        if waiting > 0 {
            active_integral += active as f64 * (at - previous) as f64;
            waiting_time += at - previous;
        }
        active += active_delta;
        waiting += waiting_delta;
        previous = at;
    }
    let client = (waiting_time > 0).then(|| active_integral / (capacity * waiting_time as f64));

    let (mut server_integral, mut server_waiting_time) = (0.0_f64, 0_i64);
    for pair in trace.room_samples.windows(2) {
        let (sample, next) = (pair[0], pair[1]);
        let duration = next.at_us - sample.at_us;
        if sample.waiting_count > 0 && duration > 0 {
            server_integral +=
                sample.active_count as f64 / f64::from(sample.capacity.max(1)) * duration as f64;
            server_waiting_time += duration;
        }
    }
    Utilisation {
        client,
        client_waiting_seconds: seconds(waiting_time),
        server: (server_waiting_time > 0).then(|| server_integral / server_waiting_time as f64),
        server_waiting_seconds: seconds(server_waiting_time),
    }
}

/// Nearest-rank percentiles of unsorted values; `None` if empty.
fn percentiles(values: &mut [f64]) -> Option<Percentiles> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let rank = |quantile: f64| {
        let index = (quantile * values.len() as f64).ceil() as usize;
        values[index.clamp(1, values.len()) - 1]
    };
    Some(Percentiles {
        p50: rank(0.50),
        p90: rank(0.90),
        p99: rank(0.99),
        max: values[values.len() - 1],
    })
}

fn refill_latency(trace: &Trace, waiting_intervals: &[(TimeUs, TimeUs)]) -> RefillLatency {
    let mut frees: Vec<(TimeUs, TimeUs)> = trace
        .users
        .iter()
        .filter_map(|user| user.end)
        .filter(|end| end.ended_by_us && end.was_admitted)
        .map(|end| (end.sent_us, end.received_us))
        .collect();
    frees.sort_unstable();
    let mut admissions: Vec<TimeUs> = trace
        .users
        .iter()
        .filter_map(|user| user.admitted_at_us)
        .collect();
    admissions.sort_unstable();
    // Waiting intervals by start, with the running maximum of their ends: someone waited
    // throughout [sent, received] iff an interval starting by `sent − resolution` ends after
    // `received`.
    let mut by_start: Vec<(TimeUs, TimeUs)> = waiting_intervals.to_vec();
    by_start.sort_unstable();
    let mut latest_end = TimeUs::MIN;
    let running_max_end: Vec<TimeUs> = by_start
        .iter()
        .map(|&(_, end)| {
            latest_end = latest_end.max(end);
            latest_end
        })
        .collect();
    let waited_throughout = |sent_us: TimeUs, received_us: TimeUs| {
        let started =
            by_start.partition_point(|&(start, _)| start + SERVER_TIME_RESOLUTION_US <= sent_us);
        started > 0 && running_max_end[started - 1] > received_us
    };

    // Users whose admission, if any, may be unseen: joined, never seen admitted or EXPIRED.
    // Each was proven waiting at its last WAITING `s`, so its admission came after that.
    let horizon_us = trace
        .users
        .iter()
        .filter(|user| user.admitted_at_us.is_none() && user.expired_reason.is_none())
        .filter_map(|user| {
            let join = user.join?;
            Some(user.waiting_last_sent_us.unwrap_or(join.sent_us))
        })
        .min()
        .unwrap_or(TimeUs::MAX);
    let mut freed_while_waiting = 0;
    let mut beyond_horizon = 0;
    let mut next_admission = 0;
    let mut upper_ms = Vec::new();
    let mut lower_ms = Vec::new();
    let mut unrefilled = 0;
    for &(sent_us, received_us) in &frees {
        if received_us > horizon_us {
            beyond_horizon += 1;
            continue;
        }
        if !waited_throughout(sent_us, received_us) {
            continue;
        }
        freed_while_waiting += 1;
        while next_admission < admissions.len()
            && admissions[next_admission] + SERVER_TIME_RESOLUTION_US <= sent_us
        {
            next_admission += 1;
        }
        match admissions.get(next_admission) {
            Some(&admitted_at_us) => {
                upper_ms.push(milliseconds(
                    admitted_at_us + SERVER_TIME_RESOLUTION_US - sent_us,
                ));
                lower_ms.push(milliseconds((admitted_at_us - received_us).max(0)));
                next_admission += 1;
            }
            None => unrefilled += 1,
        }
    }
    RefillLatency {
        freed: frees.len() as u64,
        freed_while_waiting,
        beyond_horizon,
        refilled: upper_ms.len() as u64,
        unrefilled,
        upper_bound_ms: percentiles(&mut upper_ms),
        lower_bound_ms: percentiles(&mut lower_ms),
    }
}

fn error_summary(mut relative: Vec<f64>, mut absolute_seconds: Vec<f64>) -> ErrorSummary {
    ErrorSummary {
        samples: relative.len() as u64,
        relative: percentiles(&mut relative),
        absolute_seconds: percentiles(&mut absolute_seconds),
    }
}

fn eta_error(trace: &Trace) -> EtaError {
    #[derive(Default)]
    struct Errors {
        relative: Vec<f64>,
        absolute_seconds: Vec<f64>,
    }
    impl Errors {
        fn push(&mut self, error_us: f64, actual_us: f64) {
            self.relative.push(error_us / actual_us);
            self.absolute_seconds.push(error_us / 1e6);
        }
        fn summary(self) -> ErrorSummary {
            error_summary(self.relative, self.absolute_seconds)
        }
        fn max(&self) -> Option<f64> {
            self.absolute_seconds.iter().copied().reduce(f64::max)
        }
        fn over(&self, limit_seconds: f64) -> u64 {
            self.absolute_seconds
                .iter()
                .filter(|&&error| error > limit_seconds)
                .count() as u64
        }
    }
    let settled_from_us = trace.started_at_us + (ETA_SETTLED_AFTER_SECONDS * 1_000_000) as TimeUs;
    let limit = ETA_ABSOLUTE_ERROR_LIMIT_SECONDS as f64;
    let (mut figures, mut ranges, mut shown) =
        (Errors::default(), Errors::default(), Errors::default());
    let (mut settled_figures, mut settled_ranges, mut settled_shown) =
        (Errors::default(), Errors::default(), Errors::default());
    let mut widths = Vec::new();
    let (mut inside, mut not_yet, mut settled_not_yet) = (0, 0, 0);
    let mut excluded = 0;
    // The run's changes of the room, as `(sent, received)`: the configuration before the first
    // user is one too, but no answer comes before it.
    let changes: Vec<(TimeUs, TimeUs)> = trace
        .requests
        .iter()
        .filter(|request| request.kind == RequestKind::Configure)
        .map(|request| (request.sent_us, request.received_us))
        .collect();
    let (mut across_change, mut no_change) = (Errors::default(), Errors::default());
    let mut across_change_by_resolution = 0;
    let mut unresolved = 0;
    for user in &trace.users {
        let Some(admitted_at_us) = user.admitted_at_us else {
            unresolved += user.eta.len() as u64;
            continue;
        };
        for sample in &user.eta {
            let actual_us = admitted_at_us - sample.at_us;
            if actual_us <= 0 {
                excluded += 1;
                continue;
            }
            let actual_us = actual_us as f64;
            let settled = sample.at_us >= settled_from_us;
            // `admittedAt` has millisecond resolution: the admission lies in
            // `[admitted_at, admitted_at + 1 ms)`, so one stamped within the millisecond before a
            // PUT was sent may have been made by it (a raise or a resume admits at once, so its
            // admissions may be stamped with the millisecond the PUT was sent in).
            let spans_change = changes.iter().any(|&(sent_us, received_us)| {
                sample.at_us < received_us && admitted_at_us + SERVER_TIME_RESOLUTION_US > sent_us
            });
            across_change_by_resolution += u64::from(
                spans_change
                    && sample.shown != EtaShown::NotYet
                    && !changes.iter().any(|&(sent_us, received_us)| {
                        sample.at_us < received_us && admitted_at_us > sent_us
                    }),
            );
            let by_change = if spans_change {
                &mut across_change
            } else {
                &mut no_change
            };
            match sample.shown {
                EtaShown::Figure(seconds) => {
                    let error_us = (seconds as f64 * 1e6 - actual_us).abs();
                    figures.push(error_us, actual_us);
                    shown.push(error_us, actual_us);
                    by_change.push(error_us, actual_us);
                    if settled {
                        settled_figures.push(error_us, actual_us);
                        settled_shown.push(error_us, actual_us);
                    }
                }
                EtaShown::Range {
                    low_seconds,
                    high_seconds,
                } => {
                    let (low_us, high_us) = (low_seconds as f64 * 1e6, high_seconds as f64 * 1e6);
                    let miss_us = (low_us - actual_us).max(actual_us - high_us).max(0.0);
                    inside += u64::from(miss_us == 0.0);
                    widths.push((high_us - low_us) / actual_us);
                    ranges.push(miss_us, actual_us);
                    shown.push(miss_us, actual_us);
                    by_change.push(miss_us, actual_us);
                    if settled {
                        settled_ranges.push(miss_us, actual_us);
                        settled_shown.push(miss_us, actual_us);
                    }
                }
                EtaShown::NotYet => {
                    not_yet += 1;
                    settled_not_yet += u64::from(settled);
                }
            }
        }
    }
    let settled = SettledEta {
        after_seconds: ETA_SETTLED_AFTER_SECONDS,
        limit_seconds: ETA_ABSOLUTE_ERROR_LIMIT_SECONDS,
        figures: settled_figures.relative.len() as u64,
        figures_over_limit: settled_figures.over(limit),
        figure_absolute_max_seconds: settled_figures.max(),
        ranges: settled_ranges.relative.len() as u64,
        ranges_missed_over_limit: settled_ranges.over(limit),
        range_miss_max_seconds: settled_ranges.max(),
        not_yet: settled_not_yet,
        shown: settled_shown.summary(),
    };
    let figure_summary = figures.summary();
    EtaError {
        samples: figure_summary.samples,
        excluded_non_positive_actual: excluded,
        unresolved,
        relative: figure_summary.relative,
        absolute_seconds: figure_summary.absolute_seconds,
        ranges: RangeScore {
            samples: ranges.relative.len() as u64,
            inside,
            miss: ranges.summary(),
            relative_width: percentiles(&mut widths),
        },
        not_yet_samples: not_yet,
        shown: shown.summary(),
        settled,
        across_change: across_change.summary(),
        across_change_by_resolution,
        no_change: no_change.summary(),
    }
}

fn turn_notice(trace: &Trace) -> TurnNotice {
    let Some(offset) = clock_offset(trace).filter(|offset| offset.consistent) else {
        return TurnNotice::default();
    };
    let upper_us = (offset.upper_ms * 1_000.0).round() as TimeUs;
    let mut latencies: Vec<f64> = trace
        .users
        .iter()
        .filter(|user| {
            user.join
                .is_some_and(|join| join.status == crate::api::SessionStatus::Waiting)
        })
        .filter_map(|user| {
            let received = user.active_first_received_us?;
            let admitted = user.admitted_at_us?;
            Some(milliseconds((received - admitted + upper_us).max(0)))
        })
        .collect();
    TurnNotice {
        users: latencies.len() as u64,
        upper_bound_ms: percentiles(&mut latencies),
    }
}

fn reads_per_waiting_minute(trace: &Trace, waiting: &[(TimeUs, TimeUs)]) -> Option<f64> {
    let waited_us: TimeUs = waiting
        .iter()
        .map(|(start, end)| (end - start).max(0))
        .sum();
    let reads = trace
        .requests
        .iter()
        .filter(|request| matches!(request.kind, RequestKind::Poll | RequestKind::HeldPoll))
        .count();
    (waited_us > 0).then(|| reads as f64 / (waited_us as f64 / 60_000_000.0))
}

fn clock_offset(trace: &Trace) -> Option<ClockOffset> {
    let mut lower = TimeUs::MIN;
    let mut upper = TimeUs::MAX;
    let mut any = false;
    for join in trace.users.iter().filter_map(|user| user.join) {
        any = true;
        lower = lower.max(join.joined_at_us - join.received_us);
        upper = upper.min(join.joined_at_us + SERVER_TIME_RESOLUTION_US - join.sent_us);
    }
    any.then(|| ClockOffset {
        lower_ms: milliseconds(lower),
        upper_ms: milliseconds(upper),
        consistent: lower <= upper,
    })
}

/// The count of overlapping intervals over time, as points `(seconds after origin, count)`.
fn step_series(intervals: &[(TimeUs, TimeUs)], origin: TimeUs) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = Vec::new();
    let mut current = 0_i64;
    let events = sorted_events(intervals);
    for (index, &(at, delta)) in events.iter().enumerate() {
        current += delta;
        // One point per distinct instant, after all its events.
        if events.get(index + 1).is_none_or(|next| next.0 != at) {
            points.push((seconds(at - origin), current as f64));
        }
    }
    downsample_max(points)
}

/// Keeps at most [`SERIES_POINTS_MAX`] points: time is cut into equal buckets and each keeps
/// its highest value (at the bucket's first time), so peaks survive.
fn downsample_max(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    if points.len() <= SERIES_POINTS_MAX {
        return points;
    }
    let (first, last) = (points[0].0, points[points.len() - 1].0);
    let buckets = SERIES_POINTS_MAX;
    let width = ((last - first) / buckets as f64).max(f64::MIN_POSITIVE);
    let mut kept: Vec<(f64, f64)> = Vec::with_capacity(buckets);
    let mut current_bucket = usize::MAX;
    for (at, value) in points {
        let bucket = (((at - first) / width) as usize).min(buckets - 1);
        match kept.last_mut() {
            Some(last) if bucket == current_bucket => last.1 = last.1.max(value),
            _ => {
                kept.push((first + bucket as f64 * width, value));
                current_bucket = bucket;
            }
        }
    }
    kept
}

fn eta_scatter(trace: &Trace) -> Vec<(f64, f64)> {
    let points: Vec<(f64, f64)> = trace
        .users
        .iter()
        .filter_map(|user| user.admitted_at_us.map(|admitted| (user, admitted)))
        .flat_map(|(user, admitted_at_us)| {
            user.eta
                .iter()
                .filter(move |sample| admitted_at_us > sample.at_us)
                .filter_map(move |sample| match sample.shown {
                    EtaShown::Figure(estimate_seconds) => Some((
                        estimate_seconds as f64,
                        seconds(admitted_at_us - sample.at_us),
                    )),
                    _ => None,
                })
        })
        .collect();
    let stride = points.len().div_ceil(SCATTER_POINTS_MAX).max(1);
    points.into_iter().step_by(stride).collect()
}

fn latency_histogram(trace: &Trace, kind: RequestKind) -> Vec<HistogramBucket> {
    let latencies_us: Vec<TimeUs> = trace
        .requests
        .iter()
        .filter(|record| record.kind == kind && record.outcome.answered())
        .map(|record| (record.received_us - record.sent_us).max(0))
        .collect();
    if latencies_us.is_empty() {
        return Vec::new();
    }
    // Bars span 0 to the 99.9th percentile; the slowest 0.1 % are folded into the last bar so
    // one outlier does not squash the chart.
    let mut sorted = latencies_us.clone();
    sorted.sort_unstable();
    let rank = ((sorted.len() as f64) * 0.999).ceil() as usize;
    let top_us = sorted[rank.clamp(1, sorted.len()) - 1].max(1);
    let width_us = (top_us as f64 / HISTOGRAM_BUCKETS as f64).max(1.0);
    let mut counts = vec![0_u64; HISTOGRAM_BUCKETS];
    for latency_us in latencies_us {
        let bucket = ((latency_us as f64 / width_us) as usize).min(HISTOGRAM_BUCKETS - 1);
        counts[bucket] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(index, count)| HistogramBucket {
            lower_ms: index as f64 * width_us / 1e3,
            upper_ms: (index + 1) as f64 * width_us / 1e3,
            count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ExpiredReason, SessionStatus};
    use crate::trace::{
        EndKind, EndObservation, EtaSample, JoinObservation, Outcome, RequestRecord, RoomSample,
        UserTrace,
    };
    use proptest::prelude::*;

    const MS: TimeUs = 1_000;

    /// A user who joined at `joined_ms` (server), admitted at `admitted_ms` (server), seen
    /// ACTIVE first in an answer received at `active_from_ms`, and completed with a request
    /// sent at `complete_sent_ms` (acknowledged 1 ms later), all in ms after the start.
    fn user(
        joined_ms: TimeUs,
        admitted_ms: TimeUs,
        active_from_ms: TimeUs,
        complete_sent_ms: TimeUs,
    ) -> UserTrace {
        UserTrace {
            arrival_us: joined_ms * MS,
            join: Some(JoinObservation {
                sent_us: joined_ms * MS,
                received_us: joined_ms * MS,
                joined_at_us: joined_ms * MS,
                position: Some(0),
                prequeue: false,
                opens_at_us: None,
                status: SessionStatus::Waiting,
            }),
            admitted_at_us: Some(admitted_ms * MS),
            active_first_received_us: Some(active_from_ms * MS),
            active_last_sent_us: Some(complete_sent_ms * MS),
            waiting_last_sent_us: Some(joined_ms * MS),
            end: Some(EndObservation {
                kind: EndKind::Complete,
                sent_us: complete_sent_ms * MS,
                received_us: (complete_sent_ms + 1) * MS,
                ended_by_us: true,
                was_admitted: true,
            }),
            expired_reason: Some(ExpiredReason::Completed),
            outcome: UserOutcome::Completed,
            eta: Vec::new(),
        }
    }

    fn trace(capacity: u32, users: Vec<UserTrace>) -> Trace {
        Trace {
            capacity,
            started_at_us: 0,
            ended_at_us: 100_000 * MS,
            users,
            requests: Vec::new(),
            room_samples: Vec::new(),
        }
    }

    /// Capacity 2, served strictly in order, each slot refilled 5 ms after the previous
    /// holder's complete was sent, nobody overlapping beyond 2.
    fn clean_trace() -> Trace {
        trace(
            2,
            vec![
                user(0, 0, 10, 1_000),
                user(1, 1, 10, 2_000),
                user(2, 1_005, 1_050, 3_000),
                user(3, 2_005, 2_050, 4_000),
                user(4, 3_005, 3_050, 5_000),
            ],
        )
    }

    #[test]
    fn a_clean_trace_has_no_false_positive() {
        let metrics = analyse(&clean_trace()).metrics;
        assert_eq!(metrics.overshoot.client.active_max, 2);
        assert_eq!(metrics.overshoot.client.overshoot, 0);
        assert_eq!(metrics.overshoot.server, None);
        assert_eq!(metrics.fifo.inversions, 0);
        assert_eq!(metrics.fifo.sessions, 5);
        assert_eq!(metrics.failures.total, 0);
        assert_eq!(metrics.users.completed, 5);
        assert_eq!(metrics.users.admitted, 5);
    }

    #[test]
    fn the_turn_is_noticed_when_the_first_active_answer_arrives() {
        // Clocks agree (join sent = received = joinedAt: offset within [0, 1 ms]); users seen
        // ACTIVE 10, 45 and 45 ms after their admission, plus the offset's 1 ms.
        let metrics = analyse(&clean_trace()).metrics;
        assert_eq!(metrics.turn_notice.users, 5);
        let notice = metrics.turn_notice.upper_bound_ms.unwrap();
        assert_eq!((notice.p50, notice.max), (46.0, 46.0));
        // No reads in the trace: none per waiting minute.
        assert_eq!(metrics.reads_per_waiting_minute, Some(0.0));
        // Reads of a held kind count, as polls do: 2 reads over the users' waiting time.
        let mut with_reads = clean_trace();
        for kind in [RequestKind::Poll, RequestKind::HeldPoll] {
            with_reads.requests.push(RequestRecord {
                kind,
                outcome: Outcome::Ok,
                sent_us: 100 * MS,
                received_us: 101 * MS,
            });
        }
        let waited_minutes = (1_005 - 2 + 2_005 - 3 + 3_005 - 4 + 1) as f64 / 60_000.0;
        let reads = analyse(&with_reads)
            .metrics
            .reads_per_waiting_minute
            .unwrap();
        assert!(
            (reads - 2.0 / waited_minutes).abs() < 0.01,
            "{reads} vs {}",
            2.0 / waited_minutes
        );
    }

    #[test]
    fn touching_intervals_are_not_an_overshoot() {
        // Capacity 1: the second user is first seen ACTIVE at the instant the first one's
        // complete leaves. That proves no overlap.
        let metrics = analyse(&trace(1, vec![user(0, 0, 0, 500), user(1, 499, 500, 900)])).metrics;
        assert_eq!(metrics.overshoot.client.overshoot, 0);
    }

    #[test]
    fn an_overshoot_of_one_is_detected() {
        let mut users = clean_trace().users;
        // A sixth user seen ACTIVE at 2 500 ms while users 2 and 3 hold both slots.
        users.push(user(5, 2_400, 2_500, 2_600));
        let metrics = analyse(&trace(2, users)).metrics;
        assert_eq!(metrics.overshoot.client.active_max, 3);
        assert_eq!(metrics.overshoot.client.overshoot, 1);
        assert_eq!(metrics.overshoot.client.active_max_at_seconds, Some(2.5));
    }

    #[test]
    fn server_samples_give_the_second_observation() {
        let mut trace = clean_trace();
        trace.room_samples = vec![
            RoomSample {
                at_us: 0,
                capacity: 2,
                active_count: 2,
                waiting_count: 3,
            },
            RoomSample {
                at_us: 250 * MS,
                capacity: 2,
                active_count: 3,
                waiting_count: 2,
            },
            RoomSample {
                at_us: 500 * MS,
                capacity: 2,
                active_count: 1,
                waiting_count: 0,
            },
        ];
        let overshoot = analyse(&trace).metrics.overshoot.server.unwrap();
        assert_eq!(overshoot.active_max, 3);
        assert_eq!(overshoot.overshoot, 1);
        assert_eq!(overshoot.samples, 3);
    }

    #[test]
    fn an_inversion_is_counted_exactly() {
        let mut users = clean_trace().users;
        // Users 3 and 4 swapped: 4 (joined later) admitted before 3.
        users[3].admitted_at_us = Some(3_005 * MS);
        users[4].admitted_at_us = Some(2_005 * MS);
        assert_eq!(analyse(&trace(2, users.clone())).metrics.fifo.inversions, 1);
        // User 0 admitted last: inverted with the four others → 4 + 1.
        users[0].admitted_at_us = Some(9_000 * MS);
        assert_eq!(analyse(&trace(2, users)).metrics.fifo.inversions, 5);
    }

    #[test]
    fn join_ties_and_the_prequeue_are_not_inversions() {
        let mut users = clean_trace().users;
        // Users 3 and 4 joined in the same millisecond: either order is fair.
        users[4].join.as_mut().unwrap().joined_at_us = 3 * MS;
        users[3].admitted_at_us = Some(3_005 * MS);
        users[4].admitted_at_us = Some(2_005 * MS);
        // User 0 was in the pre-queue: its draw may put it anywhere.
        users[0].join.as_mut().unwrap().prequeue = true;
        users[0].admitted_at_us = Some(9_000 * MS);
        let fifo = analyse(&trace(2, users)).metrics.fifo;
        assert_eq!(fifo.inversions, 0);
        assert_eq!(fifo.excluded_prequeue, 1);
        assert_eq!(fifo.sessions, 4);
    }

    #[test]
    fn a_known_eta_error() {
        let mut users = clean_trace().users;
        // Admitted at 1 005 ms. At 5 ms the page said 2 s: actual 1 s, error 100 %.
        // At 505 ms it said 0 s: actual 0.5 s, error 100 %. At 805 ms it said 1 s: actual
        // 0.2 s, error 400 %. At 1 100 ms (after admission, a late answer): excluded.
        users[2].eta = vec![
            EtaSample {
                at_us: 5 * MS,
                shown: EtaShown::Figure(2),
            },
            EtaSample {
                at_us: 505 * MS,
                shown: EtaShown::Figure(0),
            },
            EtaSample {
                at_us: 805 * MS,
                shown: EtaShown::Figure(1),
            },
            EtaSample {
                at_us: 1_100 * MS,
                shown: EtaShown::Figure(1),
            },
        ];
        // A never-admitted user's samples have no actual wait.
        let mut waiting = user(9, 0, 0, 0);
        waiting.admitted_at_us = None;
        waiting.eta = vec![EtaSample {
            at_us: 0,
            shown: EtaShown::Figure(3),
        }];
        users.push(waiting);
        let eta = analyse(&trace(2, users)).metrics.eta_error;
        assert_eq!(eta.samples, 3);
        assert_eq!(eta.excluded_non_positive_actual, 1);
        assert_eq!(eta.unresolved, 1);
        let relative = eta.relative.unwrap();
        assert!((relative.p50 - 1.0).abs() < 1e-9, "{relative:?}");
        assert!((relative.p90 - 4.0).abs() < 1e-9, "{relative:?}");
        let absolute = eta.absolute_seconds.unwrap();
        // Absolute errors: 1 s, 0.5 s, 0.8 s → p50 0.8 s, p90 1 s.
        assert!((absolute.p50 - 0.8).abs() < 1e-9, "{absolute:?}");
        assert!((absolute.p90 - 1.0).abs() < 1e-9, "{absolute:?}");
    }

    #[test]
    fn ranges_are_scored_by_their_miss_and_not_yet_is_counted() {
        const S: TimeUs = 1_000 * MS;
        // Admitted 300 s after the start. At 10 s: a range 250..300 s with 290 s to go (inside).
        // At 100 s: a range 100..150 s with 200 s to go (50 s short: 25 %). At 130 s: not yet.
        // At 150 s: a figure of 80 s with 150 s to go (70 s off: over the limit, settled).
        // At 200 s: a range 0..50 s with 100 s to go (50 s short, settled, within the limit).
        let mut admitted = user(0, 300_000, 300_010, 301_000);
        let range = |low_seconds, high_seconds| EtaShown::Range {
            low_seconds,
            high_seconds,
        };
        admitted.eta = vec![
            EtaSample {
                at_us: 10 * S,
                shown: range(250, 300),
            },
            EtaSample {
                at_us: 100 * S,
                shown: range(100, 150),
            },
            EtaSample {
                at_us: 130 * S,
                shown: EtaShown::NotYet,
            },
            EtaSample {
                at_us: 150 * S,
                shown: EtaShown::Figure(80),
            },
            EtaSample {
                at_us: 200 * S,
                shown: range(0, 50),
            },
        ];
        let eta = analyse(&trace(1, vec![admitted.clone()])).metrics.eta_error;
        assert_eq!(
            (eta.samples, eta.ranges.samples, eta.ranges.inside),
            (1, 3, 1)
        );
        assert_eq!(eta.not_yet_samples, 1);
        let miss = eta.ranges.miss.absolute_seconds.unwrap();
        assert!((miss.p50 - 50.0).abs() < 1e-9 && (miss.max - 50.0).abs() < 1e-9);
        assert!((eta.ranges.miss.relative.unwrap().max - 0.5).abs() < 1e-9);
        let shown = eta.shown.absolute_seconds.unwrap();
        assert_eq!(eta.shown.samples, 4);
        assert!((shown.max - 70.0).abs() < 1e-9, "{shown:?}");
        let settled = &eta.settled;
        assert_eq!((settled.figures, settled.figures_over_limit), (1, 1));
        assert_eq!((settled.ranges, settled.ranges_missed_over_limit), (1, 0));
        assert_eq!(settled.range_miss_max_seconds, Some(50.0));
        assert_eq!(settled.not_yet, 1);
        assert_eq!(settled.shown.samples, 2);
        // No change of the room in the trace: every shown answer had none during its wait.
        assert_eq!((eta.no_change.samples, eta.across_change.samples), (4, 0));
        // The room changed at 120..121 s (a PUT): the answers of 10 s and 100 s waited across
        // it (one inside its range, one 50 s short), those of 150 s and 200 s did not.
        let mut changed = trace(1, vec![admitted]);
        changed.requests.push(RequestRecord {
            kind: RequestKind::Configure,
            outcome: Outcome::Ok,
            sent_us: 120 * S,
            received_us: 121 * S,
        });
        let split = analyse(&changed).metrics.eta_error;
        assert_eq!(
            (split.across_change.samples, split.no_change.samples),
            (2, 2)
        );
        let across = split.across_change.absolute_seconds.unwrap();
        assert!(
            (across.max - 50.0).abs() < 1e-9 && across.p50.abs() < 1e-9,
            "{across:?}"
        );
        let no_change = split.no_change.absolute_seconds.unwrap();
        assert!((no_change.max - 70.0).abs() < 1e-9, "{no_change:?}");
        assert_eq!(split.across_change_by_resolution, 0);
        // A PUT sent 0.4 ms after the admission's millisecond began (`admittedAt` 300.000 s, the
        // raise admitting within 300.000..300.001 s): the admission may be the PUT's, so every
        // answer before the PUT waited across it; a PUT sent a whole millisecond later did not
        // change the wait.
        for (sent_us, across, by_resolution) in
            [(300 * S + 400, 4, 4), (300 * S + MS, 0, 0), (299 * S, 4, 0)]
        {
            let mut edge = trace(1, vec![changed.users[0].clone()]);
            edge.requests.push(RequestRecord {
                kind: RequestKind::Configure,
                outcome: Outcome::Ok,
                sent_us,
                received_us: sent_us + 9 * MS,
            });
            let eta = analyse(&edge).metrics.eta_error;
            assert_eq!(
                (
                    eta.across_change.samples,
                    eta.no_change.samples,
                    eta.across_change_by_resolution
                ),
                (across, 4 - across, by_resolution),
                "PUT sent at {sent_us} us"
            );
        }
    }

    #[test]
    fn utilisation_of_a_hand_computed_timeline() {
        // Capacity 2.
        // A: admitted 0, holds until 1 000.   B: admitted 0, holds until 3 000.
        // C: joined 0 (waits 0..1 000), admitted 1 000, holds until 2 000.
        // D: joined 500 (waits 500..4 000), admitted 4 000, holds until 5 000.
        // Someone waits during [0, 4 000). An admission at T ms is certain from T + 1 ms (the
        // API's resolution), so ACTIVE is: 0 on [0, 1), 2 on [1, 1 000), 1 on [1 000, 1 001),
        // 2 on [1 001, 2 000), 1 on [2 000, 3 000), 0 on [3 000, 4 000)
        // → ∫ = 2·999 + 1 + 2·999 + 1 000 = 4 997 slot·ms over 2 slots × 4 000 ms.
        let users = vec![
            user(0, 0, 0, 1_000),
            user(0, 0, 0, 3_000),
            user(0, 1_000, 1_000, 2_000),
            user(500, 4_000, 4_000, 5_000),
        ];
        let mut trace = trace(2, users);
        // Users A and B never waited (admitted at their join instant).
        let utilisation = analyse(&trace).metrics.utilisation;
        assert_eq!(utilisation.client, Some(4_997.0 / 8_000.0));
        assert_eq!(utilisation.client_waiting_seconds, 4.0);

        // Server samples: [0, 1 s) active 2 waiting 1; [1 s, 3 s) active 1 waiting 1;
        // [3 s, 4 s) active 2 waiting 0 (not counted) → (2/2·1 + 1/2·2) ÷ 3 = 2/3.
        let sample = |at_ms, active, waiting| RoomSample {
            at_us: at_ms * MS,
            capacity: 2,
            active_count: active,
            waiting_count: waiting,
        };
        trace.room_samples = vec![
            sample(0, 2, 1),
            sample(1_000, 1, 1),
            sample(3_000, 2, 0),
            sample(4_000, 0, 0),
        ];
        let utilisation = analyse(&trace).metrics.utilisation;
        assert!((utilisation.server.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(utilisation.server_waiting_seconds, 3.0);
    }

    #[test]
    fn refill_latency_per_freed_slot() {
        let refill = analyse(&clean_trace()).metrics.refill_latency;
        // Completes sent at 1 000 (user 0; users 2,3,4 wait) → admission 1 005: 5 ms;
        // 2 000 (user 1; users 3,4 wait) → 2 005: 5 ms; 3 000 (user 2; user 4 waits) → 3 005:
        // 5 ms; 4 000 and 5 000: nobody waits, not counted. The upper bound adds the 1 ms
        // resolution of admittedAt: 6 ms.
        assert_eq!(refill.freed, 5);
        assert_eq!(refill.freed_while_waiting, 3);
        assert_eq!(refill.refilled, 3);
        assert_eq!(refill.unrefilled, 0);
        let upper = refill.upper_bound_ms.unwrap();
        assert_eq!((upper.p50, upper.p99, upper.max), (6.0, 6.0, 6.0));
        // Acknowledged 1 ms after sending: 4 ms after the acknowledgement.
        assert_eq!(refill.lower_bound_ms.unwrap().p50, 4.0);
    }

    #[test]
    fn a_slot_never_refilled_is_reported() {
        let mut users = clean_trace().users;
        // User 4 never admitted and still waiting at the end (proved waiting until 6 000).
        users[4].admitted_at_us = None;
        users[4].active_first_received_us = None;
        users[4].active_last_sent_us = None;
        users[4].end = None;
        users[4].waiting_last_sent_us = Some(6_000 * MS);
        // It saw its session end (evicted, say) at 6 000 while waiting: its fate is known.
        users[4].expired_reason = Some(ExpiredReason::Evicted);
        users[4].outcome = UserOutcome::Expired(ExpiredReason::Evicted);
        let refill = analyse(&trace(2, users.clone())).metrics.refill_latency;
        // Frees at 1 000, 2 000, 3 000, 4 000 happen while user 4 waits; the first two are
        // refilled, the last two are not: slots left idle while someone waited.
        assert_eq!(refill.freed_while_waiting, 4);
        assert_eq!(refill.refilled, 2);
        assert_eq!(refill.unrefilled, 2);
        assert_eq!(refill.beyond_horizon, 0);

        // Had it been still waiting when the run stopped, its admission might just be unseen:
        // nothing after its last WAITING answer (sent at 2 500) can be judged.
        users[4].waiting_last_sent_us = Some(2_500 * MS);
        users[4].expired_reason = None;
        users[4].outcome = UserOutcome::StillWaiting;
        let refill = analyse(&trace(2, users)).metrics.refill_latency;
        assert_eq!(refill.freed_while_waiting, 2);
        assert_eq!(refill.beyond_horizon, 2);
        assert_eq!(refill.refilled, 2);
        assert_eq!(refill.unrefilled, 0);
    }

    #[test]
    fn requests_and_failures_are_grouped() {
        let mut trace = clean_trace();
        let record = |kind, outcome, sent_ms: TimeUs, latency_ms: TimeUs| RequestRecord {
            kind,
            outcome,
            sent_us: sent_ms * MS,
            received_us: (sent_ms + latency_ms) * MS,
        };
        trace.requests = vec![
            record(RequestKind::Join, Outcome::Ok, 0, 10),
            record(RequestKind::Join, Outcome::Ok, 500, 20),
            record(RequestKind::Join, Outcome::Status(503), 990, 10),
            record(RequestKind::Poll, Outcome::Ok, 100, 2),
            record(RequestKind::Poll, Outcome::Timeout, 200, 10_000),
            record(RequestKind::Heartbeat, Outcome::BadBody, 300, 4),
        ];
        let metrics = analyse(&trace).metrics;
        let join = &metrics.requests[&RequestKind::Join];
        assert_eq!((join.count, join.ok, join.failed), (3, 2, 1));
        // Two ok joins over [0, 1 000 ms].
        assert_eq!(join.ok_per_second, Some(2.0));
        // HdrHistogram with 3 significant digits: within 0.1 %.
        let close = |value: f64, expected: f64| (value - expected).abs() <= expected * 1e-3;
        let latency = join.latency_ms.unwrap();
        assert!(
            close(latency.p50, 10.0) && close(latency.max, 20.0),
            "{latency:?}"
        );
        // The timed-out poll has no latency; the answered one does.
        let poll = metrics.requests[&RequestKind::Poll].latency_ms.unwrap();
        assert!(close(poll.max, 2.0), "{poll:?}");
        assert_eq!(metrics.failures.total, 3);
        assert_eq!(metrics.failures.by_status["503"], 1);
        assert_eq!(metrics.failures.by_status["timeout"], 1);
        assert_eq!(
            metrics.failures.by_kind[&RequestKind::Heartbeat]["bad-body"],
            1
        );
        let json = serde_json::to_value(&metrics.failures).unwrap();
        assert_eq!(json["byKind"]["join"]["503"], 1);
    }

    #[test]
    fn clock_offset_bounds_come_from_the_joins() {
        let mut users = clean_trace().users;
        let join = users[0].join.as_mut().unwrap();
        join.sent_us = 0;
        join.received_us = 10 * MS;
        join.joined_at_us = 4 * MS;
        let offset = analyse(&trace(2, users)).metrics.clock_offset.unwrap();
        // User 0 says [−6, 5] ms; the others (sent = received = joinedAt) say [0, 1].
        assert_eq!((offset.lower_ms, offset.upper_ms), (0.0, 1.0));
        assert!(offset.consistent);
    }

    #[test]
    fn series_stay_bounded_and_keep_peaks() {
        let intervals: Vec<(TimeUs, TimeUs)> = (0..10_000)
            .map(|index| (index * MS, index * MS + 500))
            .chain([(5_000 * MS + 100, 5_000 * MS + 200)])
            .collect();
        let series = step_series(&intervals, 0);
        assert!(series.len() <= SERIES_POINTS_MAX);
        assert_eq!(series.iter().map(|point| point.1).fold(0.0, f64::max), 2.0);
    }

    fn inversions_quadratic(values: &[TimeUs]) -> u64 {
        let mut count = 0;
        for i in 0..values.len() {
            for j in i + 1..values.len() {
                count += u64::from(values[i] > values[j]);
            }
        }
        count
    }

    proptest! {
        #[test]
        fn merge_sort_count_matches_the_quadratic_reference(
            values in proptest::collection::vec(0_i64..20, 0..200)
        ) {
            let expected = inversions_quadratic(&values);
            let mut sorted = values.clone();
            prop_assert_eq!(count_inversions(&mut sorted), expected);
            prop_assert!(sorted.windows(2).all(|pair| pair[0] <= pair[1]));
        }

        #[test]
        fn fifo_matches_the_pairwise_definition(
            sessions in proptest::collection::vec((0_i64..30, 0_i64..30, any::<bool>()), 0..80)
        ) {
            let users: Vec<UserTrace> = sessions
                .iter()
                .map(|&(joined, admitted, prequeue)| {
                    let mut user = user(joined, admitted, admitted, admitted + 1);
                    user.join.as_mut().unwrap().prequeue = prequeue;
                    user
                })
                .collect();
            let mut expected = 0;
            for (i, a) in sessions.iter().enumerate() {
                for b in &sessions[i + 1..] {
                    if a.2 || b.2 {
                        continue;
                    }
                    let inverted = (a.0 < b.0 && a.1 > b.1) || (b.0 < a.0 && b.1 > a.1);
                    expected += u64::from(inverted);
                }
            }
            prop_assert_eq!(analyse(&trace(1, users)).metrics.fifo.inversions, expected);
        }
    }
}
