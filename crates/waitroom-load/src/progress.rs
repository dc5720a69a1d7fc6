//! Progress reporting while a run is under way: a trait so the library stays quiet in tests,
//! and an `indicatif` bar for the terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A snapshot of the run, taken every few hundred milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub users_planned: u64,
    pub users_arrived: u64,
    pub users_finished: u64,
    pub joined: u64,
    pub join_failed: u64,
    /// Users currently WAITING (as they last saw it).
    pub waiting: u64,
    /// Users currently ACTIVE (as they last saw it).
    pub active: u64,
    pub requests: u64,
    pub failed_requests: u64,
    pub elapsed_ms: u64,
}

/// Receives progress snapshots.
pub trait Progress: Send + Sync {
    /// Called periodically during the run.
    fn update(&self, snapshot: &ProgressSnapshot);
    /// Called once when the users are done or stopped.
    fn finish(&self, snapshot: &ProgressSnapshot);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&self, _snapshot: &ProgressSnapshot) {}
    fn finish(&self, _snapshot: &ProgressSnapshot) {}
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub struct TerminalProgress {
    bar: ProgressBar,
}

impl TerminalProgress {
    /// A bar over `users` users.
    pub fn new(users: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(users), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} users done  {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Self { bar }
    }

    fn message(snapshot: &ProgressSnapshot) -> String {
        let seconds = (snapshot.elapsed_ms as f64 / 1e3).max(1e-3);
        format!(
            "arrived {}  waiting {}  active {}  join failed {}  requests {} ({:.0}/s, {} failed)",
            snapshot.users_arrived,
            snapshot.waiting,
            snapshot.active,
            snapshot.join_failed,
            snapshot.requests,
            snapshot.requests as f64 / seconds,
            snapshot.failed_requests
        )
    }
}

impl Progress for TerminalProgress {
    fn update(&self, snapshot: &ProgressSnapshot) {
        self.bar.set_position(snapshot.users_finished);
        self.bar.set_message(Self::message(snapshot));
    }

    fn finish(&self, snapshot: &ProgressSnapshot) {
        self.update(snapshot);
        self.bar.finish();
    }
}
