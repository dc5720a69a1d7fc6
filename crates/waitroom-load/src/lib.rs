//! `waitroom load`: a spike simulator for any waitroom deployment, over HTTP only.
//!
//! It releases N simulated users against a room with an arrival profile; each behaves like the
//! waiting page (join, poll and heartbeat while waiting, hold the slot once admitted, then
//! complete, or abandon). It records what every user saw and measures how well the room was
//! metered: throughput and latency, capacity overshoot, FIFO inversions, slot utilisation,
//! refill latency, ETA error, failures.
//!
//! ```no_run
//! # async fn example() -> Result<(), waitroom_load::LoadError> {
//! use clap::Parser;
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     load: waitroom_load::Args,
//! }
//! let cli = Cli::parse();
//! let options = cli.load.to_options()?;
//! let report = waitroom_load::run(options, &waitroom_load::NoProgress).await?;
//! waitroom_load::write_outputs(&report, std::path::Path::new("results"))?;
//! println!("{}", report.summary());
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `options`: the clap [`Args`] and the validated [`LoadOptions`].
//! - `limits`: every bound (users, in-flight requests, duration, trace size, ...) and why.
//! - `arrival`: the seeded plan — arrival times, hold times, who abandons.
//! - `api`: the wire types of the HTTP contract the tool reads and writes.
//! - `http`: the shared pooled client with its in-flight bound and timeouts.
//! - `user`: one simulated user (a tokio task).
//! - `runner`: [`run`] — configure the room, release users, sample stats, stop, collect;
//!   [`run_protected`] also measures a protected service behind the room (or without it).
//! - `trace`: what was observed ([`Trace`]) and what each answer proves.
//! - `metrics`: the pure computation of every figure from a trace (definitions there).
//! - `report`: [`Report`], the gate, the summary and [`write_outputs`].
//! - `charts`: the SVG charts.
//! - `progress`: the [`Progress`] trait and the terminal bar.
//! - `time`: one time base and RFC 3339.
//! - `pow`: the proof of work of join challenges and a native solver (shared with the node).

mod api;
mod arrival;
mod charts;
mod http;
pub mod limits;
pub mod metrics;
mod options;
pub mod pow;
mod progress;
mod report;
mod runner;
mod time;
pub mod trace;
mod user;

use std::process::ExitCode;

pub use api::{ExpiredReason, SessionStatus};
pub use arrival::{UserPlan, arrival_offsets_us, plan_users};
pub use charts::CHART_FILES;
pub use metrics::{Analysis, Metrics, Series, analyse};
pub use options::{
    AdminToken, Args, ArrivalProfile, LoadOptions, ProtectedOptions, Reconfigure, RoomChange,
    SecondsRange,
};
pub use progress::{NoProgress, Progress, ProgressSnapshot, TerminalProgress};
pub use report::{Gate, Machine, Report, StopReason, write_outputs};
pub use runner::{run, run_protected, run_until};
pub use time::{SERVER_TIME_RESOLUTION_US, TimeUs, format_rfc3339_ms, parse_rfc3339};
pub use trace::Trace;

/// Why a run could not be made or its results not written. Failed requests during a run are
/// not errors: they are measured.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error("cannot prepare the room: {0}")]
    Configure(String),
    #[error("cannot write the results: {0}")]
    Output(String),
}

/// Exit code when the run happened but the gate failed (overshoot or failed joins).
pub const EXIT_GATE_FAILED: u8 = 1;
/// Exit code when the run could not be made or written.
pub const EXIT_ERROR: u8 = 2;

/// The whole command: validate the flags, run with a progress bar (Ctrl-C stops the run and
/// still reports), print the summary, write the outputs, and turn the gate into an exit code
/// (0 passed or `--no-gate`, [`EXIT_GATE_FAILED`], [`EXIT_ERROR`]).
pub async fn cli_main(args: Args) -> ExitCode {
    let options = match args.to_options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("waitroom load: {error}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let protected = match args.protected_options() {
        Ok(protected) => protected,
        Err(error) => {
            eprintln!("waitroom load: {error}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let gate_enabled = options.gate;
    let progress: Box<dyn Progress> = if args.no_progress {
        Box::new(NoProgress)
    } else {
        Box::new(TerminalProgress::new(u64::from(options.users)))
    };
    match &protected {
        Some(protected) if protected.direct => eprintln!(
            "waitroom load: {} users straight at {} without the waiting room (seed {})",
            options.users, protected.url, options.seed
        ),
        _ => eprintln!(
            "waitroom load: {} users against {} room {} (seed {})",
            options.users, options.base_url, options.room, options.seed
        ),
    }
    let shutdown = async {
        // If the signal cannot be installed, never interrupt rather than stop at once.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let report = match run_protected(options, protected, progress.as_ref(), shutdown).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("waitroom load: {error}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    print!("{}", report.summary());
    if let Some(out) = &args.out {
        match write_outputs(&report, out) {
            Ok(paths) => eprintln!(
                "waitroom load: wrote {} files to {}",
                paths.len(),
                out.display()
            ),
            Err(error) => {
                eprintln!("waitroom load: {error}");
                return ExitCode::from(EXIT_ERROR);
            }
        }
    }
    if gate_enabled && !report.gate.passed {
        ExitCode::from(EXIT_GATE_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}
