//! Prometheus metrics (`GET /metrics`).
//!
//! Counters and histograms of the node itself live in [`Metrics`]; per-room figures (waiting,
//! active, admissions, expiries by reason) are read from the rooms at scrape time by a collector
//! (through [`RoomStatsSource`], which the node implements), so the applier's hot path never
//! touches them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use waitroom_core::{ExpiredReason, RoomId, RoomStats};

/// Where the per-room figures come from (the node).
pub trait RoomStatsSource: Send + Sync {
    /// Figures of every existing room.
    fn all_room_figures(&self) -> Vec<RoomFigures>;

    /// The requests the log made that its provider bills per request, by kind
    /// (`waitroom_log::Log::billed_requests`).
    fn billed_log_requests(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// What `/metrics` shows of one room: its stats and the settings they are read against.
#[derive(Clone, Debug)]
pub struct RoomFigures {
    pub room: RoomId,
    pub stats: RoomStats,
    pub capacity: u32,
    pub paused: bool,
}

/// Route templates, the `route` label of request latencies (a fixed set, never raw paths, so the
/// metric's cardinality stays bounded).
pub const ROUTES: [&str; 15] = [
    "/api/waiting-room/sessions",
    "/api/waiting-room/sessions/{id}",
    "/api/waiting-room/sessions/{id}:heartbeat",
    "/api/waiting-room/sessions/{id}:complete",
    "/api/waiting-room/sessions/{id}:evict",
    "/api/waiting-room/rooms",
    "/api/waiting-room/rooms/{roomId}",
    "/api/waiting-room/openapi.json",
    "/.well-known/jwks.json",
    "/healthz",
    "/readyz",
    "/metrics",
    "/room/{roomId}",
    "/assets/{file}",
    "other",
];
/// The `method` label.
pub const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "HEAD", "OTHER"];
/// The `status` label: every status the API answers; anything else is counted as "other".
const STATUSES: [&str; 13] = [
    "200", "201", "400", "401", "404", "405", "413", "415", "429", "500", "503", "504", "other",
];
/// Upper bounds of the latency buckets, in microseconds: 50 µs doubling to ~6.5 s.
const LATENCY_BUCKETS_US: [u64; 18] = {
    let mut bounds = [0; 18];
    let mut i = 0;
    while i < 18 {
        bounds[i] = 50 << i;
        i += 1;
    }
    bounds
};

fn status_index(status: u16) -> usize {
    match status {
        200 => 0,
        201 => 1,
        400 => 2,
        401 => 3,
        404 => 4,
        405 => 5,
        413 => 6,
        415 => 7,
        429 => 8,
        500 => 9,
        503 => 10,
        504 => 11,
        _ => 12,
    }
}

#[derive(Default)]
struct LatencyCell {
    /// Per-bucket counts; the last one counts what exceeded every bound (`+Inf`).
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

/// Request latency histograms by route, method and status, with lock-free observation.
///
/// Every request is observed, so this is on the status poll's hot path: prometheus-client's
/// `Histogram` takes a mutex per observation and its `Family` a read lock and a hash per lookup,
/// which the worker threads then fight over. Here an observation is three relaxed atomic adds in
/// a cell found by index.
pub struct RequestLatency {
    cells: Box<[LatencyCell]>,
}

impl Default for RequestLatency {
    fn default() -> Self {
        let cells = (0..ROUTES.len() * METHODS.len() * STATUSES.len())
            .map(|_| LatencyCell::default())
            .collect();
        Self { cells }
    }
}

impl std::fmt::Debug for RequestLatency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLatency").finish_non_exhaustive()
    }
}

impl RequestLatency {
    /// Records one request; `route` and `method` index [`ROUTES`] and [`METHODS`].
    pub fn observe(&self, route: usize, method: usize, status: u16, elapsed: std::time::Duration) {
        let index = (route * METHODS.len() + method) * STATUSES.len() + status_index(status);
        let Some(cell) = self.cells.get(index) else {
            return;
        };
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        cell.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        cell.count.fetch_add(1, Ordering::Relaxed);
        cell.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "http_request_duration_seconds",
            "HTTP request latency by route, method and status",
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        for (index, cell) in self.cells.iter().enumerate() {
            let count = cell.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let (route_method, status) = (index / STATUSES.len(), index % STATUSES.len());
            let labels = RequestLabels {
                route: ROUTES[route_method / METHODS.len()],
                method: METHODS[route_method % METHODS.len()],
                status: STATUSES[status],
            };
            // Per-bucket counts, as prometheus-client's own histogram passes them.
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_US
                .iter()
                .map(|&bound| bound as f64 / 1e6)
                .chain(std::iter::once(f64::INFINITY))
                .zip(&cell.buckets)
                .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
                .collect();
            let sum_s = cell.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            family
                .encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    sum_s, count, &buckets, None,
                )?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_latency_encodes_cumulative_buckets() {
        let latency = RequestLatency::default();
        latency.observe(1, 0, 200, std::time::Duration::from_micros(40));
        latency.observe(1, 0, 200, std::time::Duration::from_micros(120));
        latency.observe(1, 0, 200, std::time::Duration::from_secs(60));
        latency.observe(0, 1, 418, std::time::Duration::from_micros(75));
        let mut registry = Registry::default();
        #[derive(Debug)]
        struct Only(RequestLatency);
        impl Collector for Only {
            fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                self.0.encode(&mut encoder)
            }
        }
        registry.register_collector(Box::new(Only(latency)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let poll = r#"route="/api/waiting-room/sessions/{id}",method="GET",status="200""#;
        assert!(
            text.contains(&format!("http_request_duration_seconds_count{{{poll}}} 3")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "http_request_duration_seconds_bucket{{le=\"0.00005\",{poll}}} 1"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "http_request_duration_seconds_bucket{{le=\"0.0002\",{poll}}} 2"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "http_request_duration_seconds_bucket{{le=\"+Inf\",{poll}}} 3"
            )),
            "{text}"
        );
        assert!(text.contains(r#"status="other""#), "{text}");
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Client connections (`connections`).
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    /// Open client connections.
    pub open: Gauge,
    /// Connections closed at `accept` because their address held its cap of open connections.
    pub refused_total: Counter,
    /// Connections closed by a timeout, by `reason` (`header`, `idle`, `request`).
    pub timed_out_total: Family<ReasonLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~6.5 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// The `result` labels of `join_verifier_total`.
pub const JOIN_VERIFIER_RESULTS: [&str; 4] = ["allow", "deny", "failed_open", "failed_closed"];

/// The `result` labels of `join_challenges_total`.
pub const JOIN_CHALLENGE_RESULTS: [&str; 7] = [
    "passed",
    "replayed",
    "required",
    "invalid",
    "wrong_room",
    "expired",
    "insufficient_work",
];

/// The node's own metrics.
#[derive(Debug)]
pub struct Metrics {
    pub http_request_seconds: RequestLatency,
    pub log_append_seconds: Histogram,
    pub log_append_batch_records: Histogram,
    pub log_append_errors_total: Counter,
    pub records_applied_total: Family<KindLabels, Counter>,
    pub records_undecodable_total: Counter,
    /// Log entries delivered again after this node applied them (at-least-once delivery: a
    /// reconnect, a consumer-group redelivery), skipped by position.
    pub log_entries_redelivered_total: Counter,
    /// Records a room found it had already applied (the same record id, or a join of a known
    /// session id: an append retried after an unclear answer, or a rooms-file entry several nodes
    /// appended), applied with no effect.
    pub records_duplicate_total: Counter,
    pub applier_lag_ms: Gauge,
    pub ready: Gauge,
    /// Status reads held now for a change (`waitSeconds`).
    pub status_reads_held: Gauge,
    pub join_rate_limited_total: Counter,
    /// Joins asked of the external verifier, by `result` (`JOIN_VERIFIER_RESULTS`).
    pub join_verifier_total: Family<ResultLabels, Counter>,
    /// Join challenges handed out (`POST …/rooms/{roomId}/challenge`).
    pub challenges_issued_total: Counter,
    /// Joins of rooms that ask for a challenge, by `result` of its check (`JOIN_CHALLENGE_RESULTS`).
    pub join_challenges_total: Family<ResultLabels, Counter>,
    pub writes_timed_out_total: Counter,
    /// How long taking a snapshot held a room's lock (the applier waits that long at most).
    pub snapshot_pause_seconds: Histogram,
    pub snapshot_encode_seconds: Histogram,
    pub snapshot_bytes: Histogram,
    pub snapshots_stored_total: Counter,
    pub snapshots_adopted_total: Counter,
    pub snapshot_errors_total: Counter,
    pub trims_total: Counter,
    pub rooms_restored_total: Counter,
    pub snapshot_restore_seconds: Histogram,
    pub log_gaps_total: Counter,
    /// Times a shard of the log was found holding less than this node had applied (the broker
    /// lost entries: see `node::applier`).
    pub log_regressions_total: Counter,
    pub rooms_diverged_total: Counter,
    /// Digest checks of other nodes (and its own) compared, by `result`: `agree`, `disagree`,
    /// `unverified` (this node had no digest at that record: restored after it, or another
    /// `every_ms`).
    pub digest_checks_total: Family<ResultLabels, Counter>,
    /// Head reads for catch-up waits (bounded per second, see `node::heads`).
    pub log_head_reads_total: Counter,
    /// Payload bytes of the entries applied (the log's growth as this node sees it).
    pub log_applied_bytes_total: Counter,
    pub connections: ConnectionMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            http_request_seconds: RequestLatency::default(),
            log_append_seconds: latency_histogram(),
            log_append_batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            log_append_errors_total: Counter::default(),
            records_applied_total: Family::default(),
            records_undecodable_total: Counter::default(),
            log_entries_redelivered_total: Counter::default(),
            records_duplicate_total: Counter::default(),
            applier_lag_ms: Gauge::default(),
            ready: Gauge::default(),
            status_reads_held: Gauge::default(),
            join_rate_limited_total: Counter::default(),
            challenges_issued_total: Counter::default(),
            join_verifier_total: Family::default(),
            join_challenges_total: Family::default(),
            writes_timed_out_total: Counter::default(),
            snapshot_pause_seconds: latency_histogram(),
            snapshot_encode_seconds: latency_histogram(),
            snapshot_bytes: Histogram::new(exponential_buckets(1024.0, 4.0, 14)),
            snapshots_stored_total: Counter::default(),
            snapshots_adopted_total: Counter::default(),
            snapshot_errors_total: Counter::default(),
            trims_total: Counter::default(),
            rooms_restored_total: Counter::default(),
            snapshot_restore_seconds: latency_histogram(),
            log_gaps_total: Counter::default(),
            log_regressions_total: Counter::default(),
            rooms_diverged_total: Counter::default(),
            digest_checks_total: Family::default(),
            log_head_reads_total: Counter::default(),
            log_applied_bytes_total: Counter::default(),
            connections: ConnectionMetrics::default(),
        }
    }
}

impl Metrics {
    /// A registry exposing these metrics and the rooms of `rooms` (the node).
    pub fn registry(self: &Arc<Self>, rooms: Weak<dyn RoomStatsSource>) -> Registry {
        let mut registry = Registry::with_prefix("waitroom");
        let m = self;
        registry.register(
            "log_append_duration_seconds",
            "Latency of one append batch to the log backend",
            m.log_append_seconds.clone(),
        );
        registry.register(
            "log_append_batch_records",
            "Records per append batch",
            m.log_append_batch_records.clone(),
        );
        registry.register(
            "log_append_errors",
            "Append batches the backend refused or failed",
            m.log_append_errors_total.clone(),
        );
        registry.register(
            "records_applied",
            "Records applied to room state machines, by command",
            m.records_applied_total.clone(),
        );
        registry.register(
            "records_undecodable",
            "Log entries that were not valid records (skipped)",
            m.records_undecodable_total.clone(),
        );
        registry.register(
            "applier_lag_milliseconds",
            "Wall clock minus the timestamp of the last applied entry (backend lag)",
            m.applier_lag_ms.clone(),
        );
        registry.register(
            "ready",
            "1 once the node caught up with its log",
            m.ready.clone(),
        );
        registry.register(
            "join_rate_limited",
            "Joins refused by the per-IP rate limit",
            m.join_rate_limited_total.clone(),
        );
        registry.register(
            "challenges_issued",
            "Join challenges handed out",
            m.challenges_issued_total.clone(),
        );
        for result in JOIN_VERIFIER_RESULTS {
            m.join_verifier_total
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
        }
        registry.register(
            "join_verifier",
            "Joins asked of the external verifier (--join-verifier-url), by result: allow, deny, \
             failed_open (no usable answer, the join went on), failed_closed (no usable answer, \
             the join was refused)",
            m.join_verifier_total.clone(),
        );
        for result in JOIN_CHALLENGE_RESULTS {
            m.join_challenges_total
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
        }
        registry.register(
            "join_challenges",
            "Joins of rooms that ask for a challenge, by result of its check: passed, replayed \
             (a solved challenge used again: the same session back), required (none carried), \
             invalid, wrong_room, expired, insufficient_work",
            m.join_challenges_total.clone(),
        );
        registry.register(
            "writes_timed_out",
            "Writes appended but not applied within the wait bound",
            m.writes_timed_out_total.clone(),
        );
        registry.register(
            "snapshot_pause_seconds",
            "How long taking a room's snapshot held the room's lock (the applier's pause)",
            m.snapshot_pause_seconds.clone(),
        );
        registry.register(
            "snapshot_encode_seconds",
            "Time to encode a room's snapshot (off the applier, on the blocking pool)",
            m.snapshot_encode_seconds.clone(),
        );
        registry.register(
            "snapshot_bytes",
            "Size of the snapshots this node took",
            m.snapshot_bytes.clone(),
        );
        registry.register(
            "snapshots_stored",
            "Snapshots this node stored",
            m.snapshots_stored_total.clone(),
        );
        registry.register(
            "snapshots_adopted",
            "Due snapshots this node skipped because another node had just stored one",
            m.snapshots_adopted_total.clone(),
        );
        registry.register(
            "snapshot_errors",
            "Snapshots that could not be stored (the log is not trimmed then)",
            m.snapshot_errors_total.clone(),
        );
        registry.register(
            "log_trims",
            "Trims of the log this node made",
            m.trims_total.clone(),
        );
        registry.register(
            "status_reads_held",
            "Status reads held now until a session's turn comes (waitSeconds), each on a connection",
            m.status_reads_held.clone(),
        );
        registry.register(
            "log_entries_redelivered",
            "Log entries delivered again after this node applied them (skipped by position)",
            m.log_entries_redelivered_total.clone(),
        );
        registry.register(
            "records_duplicate",
            "Records a room had already applied (by record id or session id), applied with no effect",
            m.records_duplicate_total.clone(),
        );
        registry.register(
            "rooms_restored",
            "Rooms restored from a snapshot (at start, or after falling behind a trim)",
            m.rooms_restored_total.clone(),
        );
        registry.register(
            "snapshot_restore_seconds",
            "Time to decode one room's snapshot",
            m.snapshot_restore_seconds.clone(),
        );
        registry.register(
            "log_gaps",
            "Times the log said entries this node had not applied were trimmed",
            m.log_gaps_total.clone(),
        );
        registry.register(
            "log_regressions",
            "Times a shard of the log was found holding less than this node had applied (the \
             broker lost entries); the node rebuilt the shard's rooms",
            m.log_regressions_total.clone(),
        );
        registry.register(
            "rooms_diverged",
            "Rooms that lost records no snapshot covers, or whose digest most other nodes' digest \
             checks contradicted (then rebuilt); should stay 0, see the logs",
            m.rooms_diverged_total.clone(),
        );
        // Every result is served from the start, at 0: an alert on `disagree` then sees its first
        // one as an increase.
        for result in ["agree", "disagree", "unverified"] {
            m.digest_checks_total
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
        }
        registry.register(
            "digest_checks",
            "Digest checks of the log compared with this node's own digest of the room, by result \
             (agree, disagree, unverified); disagree should stay 0",
            m.digest_checks_total.clone(),
        );
        registry.register(
            "log_head_reads",
            "Reads of the log's head for catch-up waits (shared; at most 100/s per node)",
            m.log_head_reads_total.clone(),
        );
        registry.register(
            "log_applied_bytes",
            "Payload bytes of the log entries this node applied",
            m.log_applied_bytes_total.clone(),
        );
        registry.register(
            "connections_open",
            "Open client connections",
            m.connections.open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at accept: their address held its cap of open connections",
            m.connections.refused_total.clone(),
        );
        registry.register(
            "connections_timed_out",
            "Connections closed by a timeout, by reason (header, idle, request)",
            m.connections.timed_out_total.clone(),
        );
        registry.register_collector(Box::new(RoomCollector {
            rooms,
            metrics: self.clone(),
        }));
        registry
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoomLabels {
    room: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoomReasonLabels {
    room: String,
    reason: &'static str,
}

type FigureReader = fn(&RoomFigures) -> u64;

/// Request latencies and per-room figures, read at scrape time.
#[derive(Debug)]
struct RoomCollector {
    rooms: Weak<dyn RoomStatsSource>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for dyn RoomStatsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomStatsSource")
    }
}

impl Collector for RoomCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.metrics.http_request_seconds.encode(&mut encoder)?;
        let Some(rooms) = self.rooms.upgrade() else {
            return Ok(());
        };
        {
            let mut family = encoder.encode_descriptor(
                "log_requests",
                "Requests the log made that its provider bills per request, by kind (SQS and S3; none \
                 on other backends)",
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for (kind, count) in rooms.billed_log_requests() {
                ConstCounter::new(count).encode(family.encode_family(&KindLabels { kind })?)?;
            }
        }
        let figures = rooms.all_room_figures();
        let gauges: [(&str, &str, FigureReader); 5] = [
            ("room_waiting", "Live WAITING sessions", |f| {
                f.stats.waiting_count
            }),
            ("room_active", "ACTIVE sessions", |f| f.stats.active_count),
            (
                "room_capacity",
                "The room's capacity in force (a running scheduled event's, else the room's): \
                 ACTIVE sessions at most (more only after it was lowered, until they finish)",
                |f| u64::from(f.capacity),
            ),
            (
                "room_paused",
                "1 while the room is paused (nobody admitted)",
                |f| u64::from(f.paused),
            ),
            (
                "room_admissions_per_minute",
                "Admissions in the last minute",
                |f| f.stats.admissions_per_minute,
            ),
        ];
        for (name, help, read) in gauges {
            let mut family =
                encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
            for figure in &figures {
                let labels = RoomLabels {
                    room: figure.room.to_string(),
                };
                let value = i64::try_from(read(figure)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "room_admissions",
            "Sessions admitted since the room was created",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for figure in &figures {
            let labels = RoomLabels {
                room: figure.room.to_string(),
            };
            ConstCounter::new(figure.stats.admitted_total)
                .encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "room_expired",
            "Sessions ended since the room was created, by reason",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for figure in &figures {
            for reason in ExpiredReason::ALL {
                let labels = RoomReasonLabels {
                    room: figure.room.to_string(),
                    reason: reason.as_str(),
                };
                ConstCounter::new(figure.stats.expired_total.get(reason))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
