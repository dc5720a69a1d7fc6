//! The report of a run: every figure, the options, the machine and the exact command line;
//! the gate a script can rely on; the human summary; and writing it all to a directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::LoadError;
use crate::charts;
use crate::metrics::{Analysis, LatencySummary, Metrics, Percentiles, Series, analyse};
use crate::options::{LoadOptions, ProtectedOptions};
use crate::time::format_rfc3339_ms;
use crate::trace::{RequestKind, Trace};

/// Why the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// Every user finished.
    Completed,
    /// `--duration-max-seconds` was reached.
    DurationMax,
    /// `--trace-records-max` was reached.
    TraceFull,
    /// Interrupted (Ctrl-C, or the caller's shutdown future).
    Interrupted,
}

impl StopReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::DurationMax => "duration-max",
            Self::TraceFull => "trace-full",
            Self::Interrupted => "interrupted",
        }
    }
}

/// The machine the load tool ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub cores: usize,
    /// `MemTotal` of /proc/meminfo; `None` where there is none.
    pub memory_total_bytes: Option<u64>,
    /// First `model name` of /proc/cpuinfo.
    pub cpu_model: Option<String>,
    pub os: String,
    pub arch: String,
}

impl Machine {
    /// Reads the machine's description.
    pub fn detect() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_total_bytes: parse_meminfo_total(&meminfo),
            cpu_model: cpuinfo
                .lines()
                .find_map(|line| line.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_string()),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
        }
    }
}

/// `MemTotal:  24567890 kB` → bytes.
fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// The command line, shell-quoted, with the value of `--admin-token` redacted.
pub fn command_line() -> String {
    redact_command_line(std::env::args())
}

fn redact_command_line(args: impl Iterator<Item = String>) -> String {
    let mut redact_next = false;
    let mut words = Vec::new();
    for arg in args {
        let word = if redact_next {
            redact_next = false;
            "<redacted>".to_string()
        } else if arg == "--admin-token" {
            redact_next = true;
            arg
        } else if arg.starts_with("--admin-token=") {
            "--admin-token=<redacted>".to_string()
        } else {
            arg
        };
        words.push(shell_quote(&word));
    }
    words.join(" ")
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_./:=,+@%".contains(&byte));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Whether the run met the bar: no capacity overshoot and every join answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    pub passed: bool,
    /// One sentence per failed condition.
    pub failures: Vec<String>,
}

impl Gate {
    /// Fails on: a client- or server-observed overshoot, a failed join, no join at all.
    pub fn evaluate(metrics: &Metrics) -> Self {
        let mut failures = Vec::new();
        if metrics.overshoot.client.overshoot > 0 {
            failures.push(format!(
                "capacity overshoot {} observed by the clients (max ACTIVE {} > capacity {})",
                metrics.overshoot.client.overshoot,
                metrics.overshoot.client.active_max,
                metrics.capacity
            ));
        }
        if let Some(server) = &metrics.overshoot.server
            && server.overshoot > 0
        {
            failures.push(format!(
                "capacity overshoot {} in the server's stats (max activeCount {})",
                server.overshoot, server.active_max
            ));
        }
        if metrics.users.join_failed > 0 {
            failures.push(format!("{} joins failed", metrics.users.join_failed));
        }
        if metrics.users.joined == 0 {
            failures.push("no user joined".to_string());
        }
        Self {
            passed: failures.is_empty(),
            failures,
        }
    }
}

/// Everything a run produced, as written to `report.json`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `waitroom-load <version>`.
    pub tool: String,
    pub command_line: String,
    pub machine: Machine,
    pub options: LoadOptions,
    /// The protected service measured alongside (`--protected-url`), if any.
    pub protected: Option<ProtectedOptions>,
    /// RFC 3339.
    pub started_at: String,
    pub stop_reason: StopReason,
    /// User tasks that ended abnormally (a bug in this tool, never a server answer).
    pub internal_errors: u64,
    pub gate: Gate,
    pub metrics: Metrics,
    pub series: Series,
}

impl Report {
    /// Measures `trace` and assembles the report.
    pub fn build(
        options: LoadOptions,
        protected: Option<ProtectedOptions>,
        trace: &Trace,
        stop_reason: StopReason,
        internal_errors: u64,
    ) -> Self {
        let Analysis { metrics, series } = analyse(trace);
        Self {
            tool: format!("waitroom-load {}", env!("CARGO_PKG_VERSION")),
            command_line: command_line(),
            machine: Machine::detect(),
            options,
            protected,
            started_at: format_rfc3339_ms(trace.started_at_us),
            stop_reason,
            internal_errors,
            gate: Gate::evaluate(&metrics),
            metrics,
            series,
        }
    }

    /// The human summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let metrics = &self.metrics;
        let users = &metrics.users;
        let mut text = String::new();
        let mut line = |content: String| {
            text.push_str(&content);
            text.push('\n');
        };
        line(format!(
            "waitroom load: room {} at {} — {} users, capacity {}, {} ({:.1} s, stopped: {})",
            self.options.room,
            self.options.base_url,
            users.planned,
            metrics.capacity,
            self.options.arrival,
            metrics.duration_seconds,
            self.stop_reason.as_str()
        ));
        line(format!(
            "users     joined {}  join failed {}  not started {}  admitted {}  completed {}  \
             left waiting {}  left active {}  expired {}  gave up {}  end failed {}  \
             still waiting {}  still active {}",
            users.joined,
            users.join_failed,
            users.not_started,
            users.admitted,
            users.completed,
            users.left_waiting,
            users.left_active,
            users.expired.values().sum::<u64>(),
            users.gave_up,
            users.end_failed,
            users.still_waiting,
            users.still_active
        ));
        if users.direct > 0 {
            line(format!(
                "direct    {} users sent only the protected request (--direct: no waiting room)",
                users.direct
            ));
        }
        for kind in RequestKind::ALL {
            let Some(stats) = metrics.requests.get(&kind) else {
                continue;
            };
            line(format!(
                "{:<10}{} sent, {} ok, {} failed, {}/s ok; latency ms {}",
                kind.as_str(),
                stats.count,
                stats.ok,
                stats.failed,
                stats
                    .ok_per_second
                    .map_or("-".to_string(), |rate| format!("{rate:.0}")),
                stats
                    .latency_ms
                    .as_ref()
                    .map_or("-".to_string(), format_latency)
            ));
        }
        if self
            .protected
            .as_ref()
            .is_some_and(|protected| protected.direct)
        {
            // No waiting room: its figures and its gate mean nothing here.
            if metrics.failures.total > 0 {
                line(format!(
                    "failures  {} requests: {:?}",
                    metrics.failures.total, metrics.failures.by_status
                ));
            }
            line("gate      not applicable (--direct)".to_string());
            return text;
        }
        let overshoot = &metrics.overshoot;
        line(format!(
            "overshoot client {} (max ACTIVE {} of {})  server {}",
            overshoot.client.overshoot,
            overshoot.client.active_max,
            metrics.capacity,
            overshoot.server.as_ref().map_or(
                "not sampled (no admin token)".to_string(),
                |server| format!(
                    "{} (max activeCount {}, {} samples)",
                    server.overshoot, server.active_max, server.samples
                )
            )
        ));
        line(format!(
            "fifo      {} inversions among {} admitted sessions ({} pre-queue excluded)",
            metrics.fifo.inversions, metrics.fifo.sessions, metrics.fifo.excluded_prequeue
        ));
        let ratio = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.3}"));
        line(format!(
            "utilised  client {} over {:.1} s waiting  server {} over {:.1} s waiting",
            ratio(metrics.utilisation.client),
            metrics.utilisation.client_waiting_seconds,
            ratio(metrics.utilisation.server),
            metrics.utilisation.server_waiting_seconds
        ));
        let refill = &metrics.refill_latency;
        line(format!(
            "refill    {} slots freed while waiting, {} refilled, {} not ({} after the horizon); \
             ms upper bound {}  lower bound {}",
            refill.freed_while_waiting,
            refill.refilled,
            refill.unrefilled,
            refill.beyond_horizon,
            format_percentiles(refill.upper_bound_ms.as_ref()),
            format_percentiles(refill.lower_bound_ms.as_ref())
        ));
        line(format!(
            "turn      {} users who waited saw their turn ms after admission (upper bound) {}; \
             {} status reads per waiting minute",
            metrics.turn_notice.users,
            format_percentiles(metrics.turn_notice.upper_bound_ms.as_ref()),
            metrics
                .reads_per_waiting_minute
                .map_or("-".to_string(), |reads| format!("{reads:.2}"))
        ));
        let eta = &metrics.eta_error;
        line(format!(
            "eta       {} figures; relative error {}; absolute error s {}",
            eta.samples,
            format_percentiles(eta.relative.as_ref()),
            format_percentiles(eta.absolute_seconds.as_ref())
        ));
        line(format!(
            "eta range {} ranges, {} with the wait inside; miss relative {}; miss s {}; {} not yet",
            eta.ranges.samples,
            eta.ranges.inside,
            format_percentiles(eta.ranges.miss.relative.as_ref()),
            format_percentiles(eta.ranges.miss.absolute_seconds.as_ref()),
            eta.not_yet_samples
        ));
        line(format!(
            "eta shown {} figures or ranges; relative error {}; absolute error s {}",
            eta.shown.samples,
            format_percentiles(eta.shown.relative.as_ref()),
            format_percentiles(eta.shown.absolute_seconds.as_ref())
        ));
        line(format!(
            "eta split {} shown with no change of the room during the wait, relative error {}; \
             {} across a change ({} by the millisecond of admittedAt), relative error {}",
            eta.no_change.samples,
            format_percentiles(eta.no_change.relative.as_ref()),
            eta.across_change.samples,
            eta.across_change_by_resolution,
            format_percentiles(eta.across_change.relative.as_ref())
        ));
        let settled = &eta.settled;
        line(format!(
            "eta after {} s: {} figures, {} off by > {} s (max {}); {} ranges, {} missed by > {} s \
             (max {}); {} not yet",
            settled.after_seconds,
            settled.figures,
            settled.figures_over_limit,
            settled.limit_seconds,
            settled
                .figure_absolute_max_seconds
                .map_or("-".to_string(), |max| format!("{max:.3}")),
            settled.ranges,
            settled.ranges_missed_over_limit,
            settled.limit_seconds,
            settled
                .range_miss_max_seconds
                .map_or("-".to_string(), |max| format!("{max:.3}")),
            settled.not_yet
        ));
        if let Some(offset) = &metrics.clock_offset {
            line(format!(
                "clocks    server − client offset in [{:.1}, {:.1}] ms{}",
                offset.lower_ms,
                offset.upper_ms,
                if offset.consistent {
                    ""
                } else {
                    " (inconsistent: the server clock jumps or is not the joins' clock)"
                }
            ));
        }
        if metrics.failures.total > 0 {
            let mut failures = String::new();
            for (kind, labels) in &metrics.failures.by_kind {
                for (label, count) in labels {
                    let _ = write!(failures, " {}:{label}×{count}", kind.as_str());
                }
            }
            line(format!(
                "failures  {} requests:{failures}",
                metrics.failures.total
            ));
        }
        if self.internal_errors > 0 {
            line(format!(
                "internal  {} user tasks ended abnormally",
                self.internal_errors
            ));
        }
        line(if self.gate.passed {
            "gate      PASSED".to_string()
        } else {
            format!("gate      FAILED: {}", self.gate.failures.join("; "))
        });
        text
    }
}

fn format_latency(latency: &LatencySummary) -> String {
    format!(
        "p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        latency.p50, latency.p90, latency.p99, latency.p999, latency.max
    )
}

fn format_percentiles(percentiles: Option<&Percentiles>) -> String {
    percentiles.map_or("-".to_string(), |p| {
        format!(
            "p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
            p.p50, p.p90, p.p99, p.max
        )
    })
}

/// Writes `report.json`, `summary.txt` and the SVG charts into `out_dir` (created if missing).
/// Returns the paths written.
///
/// # Errors
/// [`LoadError::Output`] if a file cannot be written.
pub fn write_outputs(report: &Report, out_dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let output_error = |path: &Path, error: &dyn std::fmt::Display| {
        LoadError::Output(format!("{}: {error}", path.display()))
    };
    std::fs::create_dir_all(out_dir).map_err(|error| output_error(out_dir, &error))?;
    let mut written = Vec::new();
    let json_path = out_dir.join("report.json");
    let json =
        serde_json::to_vec_pretty(report).map_err(|error| output_error(&json_path, &error))?;
    std::fs::write(&json_path, json).map_err(|error| output_error(&json_path, &error))?;
    written.push(json_path);
    let summary_path = out_dir.join("summary.txt");
    std::fs::write(&summary_path, report.summary())
        .map_err(|error| output_error(&summary_path, &error))?;
    written.push(summary_path);
    written.extend(charts::write_charts(&report.series, out_dir)?);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo() {
        assert_eq!(
            parse_meminfo_total("MemTotal:       24567890 kB\nMemFree: 1 kB\n"),
            Some(24_567_890 * 1024)
        );
        assert_eq!(parse_meminfo_total("nothing"), None);
    }

    #[test]
    fn redacts_the_admin_token_and_quotes() {
        let args = [
            "waitroom-load",
            "--admin-token",
            "s3cret",
            "--admin-token=s3cret",
            "--room",
            "a b",
            "--url",
            "http://127.0.0.1:8080",
        ]
        .map(String::from);
        let line = redact_command_line(args.into_iter());
        assert!(!line.contains("s3cret"), "{line}");
        assert_eq!(
            line,
            "waitroom-load --admin-token '<redacted>' '--admin-token=<redacted>' --room 'a b' \
             --url http://127.0.0.1:8080"
        );
    }

    #[test]
    fn machine_is_detected() {
        let machine = Machine::detect();
        assert!(machine.cores >= 1);
        if cfg!(target_os = "linux") {
            assert!(machine.memory_total_bytes.is_some());
        }
    }
}
