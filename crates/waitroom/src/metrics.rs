//! Prometheus metrics (`GET /metrics`).
//!
//! Counters and histograms of the node itself live in [`Metrics`]; per-room figures (waiting,
//! active, admissions, expiries by reason) are read from the rooms at scrape time by a collector,
//! so the applier's hot path never touches them.

use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use waitroom_core::ExpiredReason;

use crate::node::Node;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/api/waiting-room/sessions/{id}`), never the raw path.
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~6.5 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// The node's own metrics.
#[derive(Debug)]
pub struct Metrics {
    pub http_request_seconds: HistogramFamily<RequestLabels>,
    pub log_append_seconds: Histogram,
    pub log_append_batch_records: Histogram,
    pub log_append_errors_total: Counter,
    pub records_applied_total: Family<KindLabels, Counter>,
    pub records_undecodable_total: Counter,
    pub applier_lag_ms: Gauge,
    pub ready: Gauge,
    pub join_rate_limited_total: Counter,
    pub writes_timed_out_total: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            http_request_seconds: Family::new_with_constructor(latency_histogram),
            log_append_seconds: latency_histogram(),
            log_append_batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            log_append_errors_total: Counter::default(),
            records_applied_total: Family::default(),
            records_undecodable_total: Counter::default(),
            applier_lag_ms: Gauge::default(),
            ready: Gauge::default(),
            join_rate_limited_total: Counter::default(),
            writes_timed_out_total: Counter::default(),
        }
    }
}

impl Metrics {
    /// A registry exposing these metrics and the rooms of `node`.
    pub fn registry(self: &Arc<Self>, node: Weak<Node>) -> Registry {
        let mut registry = Registry::with_prefix("waitroom");
        let m = self;
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route, method and status",
            m.http_request_seconds.clone(),
        );
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
            "writes_timed_out",
            "Writes appended but not applied within the wait bound",
            m.writes_timed_out_total.clone(),
        );
        registry.register_collector(Box::new(RoomCollector { node }));
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

type StatReader = fn(&waitroom_core::RoomStats) -> u64;

/// Per-room figures, read from the rooms at scrape time.
#[derive(Debug)]
struct RoomCollector {
    node: Weak<Node>,
}

impl Collector for RoomCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(node) = self.node.upgrade() else {
            return Ok(());
        };
        let stats = node.all_room_stats();
        let gauges: [(&str, &str, StatReader); 3] = [
            ("room_waiting", "Live WAITING sessions", |s| s.waiting_count),
            ("room_active", "ACTIVE sessions", |s| s.active_count),
            (
                "room_admissions_per_minute",
                "Admissions in the last minute",
                |s| s.admissions_per_minute,
            ),
        ];
        for (name, help, read) in gauges {
            let mut family =
                encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
            for (room, s) in &stats {
                let labels = RoomLabels {
                    room: room.to_string(),
                };
                let value = i64::try_from(read(s)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "room_admissions",
            "Sessions admitted since the room was created",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (room, s) in &stats {
            let labels = RoomLabels {
                room: room.to_string(),
            };
            ConstCounter::new(s.admitted_total).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "room_expired",
            "Sessions ended since the room was created, by reason",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (room, s) in &stats {
            for reason in ExpiredReason::ALL {
                let labels = RoomReasonLabels {
                    room: room.to_string(),
                    reason: reason.as_str(),
                };
                ConstCounter::new(s.expired_total.get(reason))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
