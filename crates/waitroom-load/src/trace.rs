//! The trace of a run: what every simulated user and the stats sampler saw, in one time base
//! (µs since the epoch, see `time.rs`). It is the only input of the metrics, so a trace built by
//! hand in a test is measured exactly like a real run.
//!
//! # What an answer proves
//! A view with status S, returned for a request sent at `s` and received at `r`, proves the
//! server held the session in S at some instant of `[s, r]`. So:
//! - the session was admitted no later than the `r` of its first ACTIVE view, and was still
//!   ACTIVE at the `s` of its last ACTIVE view: `[first ACTIVE r, last ACTIVE s]` lies inside the
//!   server's true ACTIVE interval whatever the latencies;
//! - an EXPIRED view with reason `completed` (resp. `left`) answering our own `:complete` (resp.
//!   `DELETE`) proves that request ended the session, so it was still live at that request's `s`.
//!
//! [`UserTrace::observe`] folds each answer into these bounds as it arrives, so the trace stays
//! small: no per-user list of views is kept, only the ETA samples.

use serde::Serialize;

use crate::api::{ExpiredReason, SessionStatus, SessionView};
use crate::time::{SERVER_TIME_RESOLUTION_US, TimeUs};

/// What a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestKind {
    /// `DELETE` / `PUT` of the room at start.
    Configure,
    /// `POST /sessions`.
    Join,
    /// `GET /sessions/{id}`.
    Poll,
    /// `GET /sessions/{id}?waitSeconds=N`: a read held by the server until the turn comes
    /// (`--reads held`, near the front of the line).
    HeldPoll,
    /// `POST /sessions/{id}:heartbeat`.
    Heartbeat,
    /// `POST /sessions/{id}:complete`.
    Complete,
    /// `DELETE /sessions/{id}`.
    Leave,
    /// `GET /rooms/{room}` by the stats sampler.
    Stats,
    /// `POST` to the protected service (`--protected-url`), once admitted or, with `--direct`,
    /// instead of the waiting room.
    Protected,
}

impl RequestKind {
    /// Every kind, in report order.
    pub const ALL: [Self; 9] = [
        Self::Configure,
        Self::Join,
        Self::Poll,
        Self::HeldPoll,
        Self::Heartbeat,
        Self::Complete,
        Self::Leave,
        Self::Stats,
        Self::Protected,
    ];

    /// The name used in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Configure => "configure",
            Self::Join => "join",
            Self::Poll => "poll",
            Self::HeldPoll => "held-poll",
            Self::Heartbeat => "heartbeat",
            Self::Complete => "complete",
            Self::Leave => "leave",
            Self::Stats => "stats",
            Self::Protected => "protected",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer whose body satisfied the contract.
    Ok,
    /// A non-2xx answer.
    Status(u16),
    /// A 2xx answer whose body did not satisfy the contract.
    BadBody,
    /// No complete answer within the request timeout.
    Timeout,
    /// Connection refused or reset, or a malformed HTTP answer.
    Transport,
}

impl Outcome {
    /// The failure label used in the report (`"503"`, `"timeout"`, ...), or `None` for success.
    pub fn failure_label(self) -> Option<String> {
        match self {
            Self::Ok => None,
            Self::Status(status) => Some(status.to_string()),
            Self::BadBody => Some("bad-body".to_string()),
            Self::Timeout => Some("timeout".to_string()),
            Self::Transport => Some("transport".to_string()),
        }
    }

    /// Whether an HTTP answer arrived, so the latency means something.
    pub fn answered(self) -> bool {
        matches!(self, Self::Ok | Self::Status(_) | Self::BadBody)
    }
}

/// One request: what, when, how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRecord {
    pub kind: RequestKind,
    pub outcome: Outcome,
    /// When the request left (after the in-flight bound let it go).
    pub sent_us: TimeUs,
    /// When its answer was complete (or when it failed).
    pub received_us: TimeUs,
}

/// What the join answer said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinObservation {
    pub sent_us: TimeUs,
    pub received_us: TimeUs,
    /// Server `joinedAt`.
    pub joined_at_us: TimeUs,
    /// Initial `position` (`None` in the pre-queue or when admitted at once).
    pub position: Option<u64>,
    pub prequeue: bool,
    pub opens_at_us: Option<TimeUs>,
    pub status: SessionStatus,
}

/// How the user ended its session itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    Complete,
    Leave,
}

/// The user's own `:complete` or `DELETE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndObservation {
    pub kind: EndKind,
    pub sent_us: TimeUs,
    pub received_us: TimeUs,
    /// The answer proved this request ended the session (EXPIRED with reason `completed` for
    /// `:complete`, `left` for `DELETE`).
    pub ended_by_us: bool,
    /// The session had been admitted (`admittedAt` set) when it ended: a slot was freed.
    pub was_admitted: bool,
}

/// What a WAITING view (placed in line: not the pre-queue) said of the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtaShown {
    /// `estimatedWaitSeconds`.
    Figure(u64),
    /// `estimatedWaitRange` without a figure.
    Range { low_seconds: u64, high_seconds: u64 },
    /// Neither ("not yet").
    NotYet,
}

/// The estimate a waiting user was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtaSample {
    /// When the answer carrying it was received.
    pub at_us: TimeUs,
    pub shown: EtaShown,
}

/// How a user's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserOutcome {
    /// Never joined: the run stopped before its arrival.
    #[default]
    NotStarted,
    /// Its join failed.
    JoinFailed,
    /// Still WAITING when the run stopped.
    StillWaiting,
    /// Still ACTIVE when the run stopped.
    StillActive,
    /// Completed its hold with `:complete`, which ended the session.
    Completed,
    /// Left (DELETE) while waiting.
    LeftWaiting,
    /// Left (DELETE) while active.
    LeftActive,
    /// The server ended the session (any reason not caused by this user's own request).
    Expired(ExpiredReason),
    /// Too many failed requests in a row.
    GaveUp,
    /// Its own `:complete` or `DELETE` failed or did not end the session (which then ends by
    /// timeout on the server).
    EndFailed,
    /// `--direct`: sent its protected request without joining (whatever the answer; the request
    /// itself is measured as kind `protected`).
    Direct,
}

/// Everything one simulated user saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserTrace {
    /// Planned arrival.
    pub arrival_us: TimeUs,
    pub join: Option<JoinObservation>,
    /// Server `admittedAt`, from the first view that carried one.
    pub admitted_at_us: Option<TimeUs>,
    /// `r` of the first ACTIVE view: the session was ACTIVE by then.
    pub active_first_received_us: Option<TimeUs>,
    /// `s` of the last answer proving the session live and admitted (an ACTIVE view, or our own
    /// ending request).
    pub active_last_sent_us: Option<TimeUs>,
    /// `s` of the last answer proving the session live and waiting.
    pub waiting_last_sent_us: Option<TimeUs>,
    pub end: Option<EndObservation>,
    /// `expiredReason` of the last EXPIRED view seen.
    pub expired_reason: Option<ExpiredReason>,
    pub outcome: UserOutcome,
    pub eta: Vec<EtaSample>,
}

fn min_option(current: Option<TimeUs>, value: TimeUs) -> Option<TimeUs> {
    Some(current.map_or(value, |current| current.min(value)))
}

fn max_option(current: Option<TimeUs>, value: TimeUs) -> Option<TimeUs> {
    Some(current.map_or(value, |current| current.max(value)))
}

impl UserTrace {
    /// A user planned to arrive at `arrival_us`.
    pub fn new(arrival_us: TimeUs) -> Self {
        Self {
            arrival_us,
            ..Self::default()
        }
    }

    /// Records the answer to the join.
    pub fn observe_join(&mut self, sent_us: TimeUs, received_us: TimeUs, view: &SessionView) {
        self.join = Some(JoinObservation {
            sent_us,
            received_us,
            joined_at_us: view.joined_at_us,
            position: view.position,
            prequeue: view.prequeue,
            opens_at_us: view.opens_at_us,
            status: view.status,
        });
        self.observe(sent_us, received_us, view);
    }

    /// Folds a view (answer to a join, poll or heartbeat) into the bounds.
    pub fn observe(&mut self, sent_us: TimeUs, received_us: TimeUs, view: &SessionView) {
        if self.admitted_at_us.is_none() {
            self.admitted_at_us = view.admitted_at_us;
        }
        match view.status {
            SessionStatus::Waiting => {
                self.waiting_last_sent_us = max_option(self.waiting_last_sent_us, sent_us);
                if !view.prequeue {
                    let shown = match (view.estimated_wait_seconds, view.estimated_wait_range) {
                        (Some(seconds), _) => EtaShown::Figure(seconds),
                        (None, Some(range)) => EtaShown::Range {
                            low_seconds: range.low_seconds,
                            high_seconds: range.high_seconds,
                        },
                        (None, None) => EtaShown::NotYet,
                    };
                    self.eta.push(EtaSample {
                        at_us: received_us,
                        shown,
                    });
                }
            }
            SessionStatus::Active => {
                self.active_first_received_us =
                    min_option(self.active_first_received_us, received_us);
                self.active_last_sent_us = max_option(self.active_last_sent_us, sent_us);
            }
            SessionStatus::Expired => self.expired_reason = view.expired_reason,
        }
    }

    /// Records the answer to the user's own `:complete` or `DELETE`.
    pub fn observe_end(
        &mut self,
        kind: EndKind,
        sent_us: TimeUs,
        received_us: TimeUs,
        view: &SessionView,
    ) {
        if self.admitted_at_us.is_none() {
            self.admitted_at_us = view.admitted_at_us;
        }
        let expected = match kind {
            EndKind::Complete => ExpiredReason::Completed,
            EndKind::Leave => ExpiredReason::Left,
        };
        let ended_by_us =
            view.status == SessionStatus::Expired && view.expired_reason == Some(expected);
        let was_admitted = view.admitted_at_us.is_some() || self.admitted_at_us.is_some();
        if ended_by_us {
            if was_admitted {
                self.active_last_sent_us = max_option(self.active_last_sent_us, sent_us);
            } else {
                self.waiting_last_sent_us = max_option(self.waiting_last_sent_us, sent_us);
            }
        } else {
            // Not ended by us: an ACTIVE or WAITING answer still proves what it shows.
            self.observe(sent_us, received_us, view);
        }
        if view.status == SessionStatus::Expired {
            self.expired_reason = view.expired_reason;
        }
        self.end = Some(EndObservation {
            kind,
            sent_us,
            received_us,
            ended_by_us,
            was_admitted,
        });
    }

    /// `[first ACTIVE r, last live-and-admitted s)`: inside the server's true ACTIVE interval
    /// whatever the clocks (both ends are client times). `None` if empty.
    pub fn proven_active_interval(&self) -> Option<(TimeUs, TimeUs)> {
        let start = self.active_first_received_us?;
        let end = self.active_last_sent_us?;
        (start < end).then_some((start, end))
    }

    /// `[admittedAt + 1 ms, last live-and-admitted s)`: the ACTIVE interval as tight as the
    /// trace allows, mixing the server's clock (start; + 1 ms because `admittedAt` is truncated
    /// to the millisecond) with the client's (end). Inside the true interval if the clocks
    /// agree. `None` if empty.
    pub fn admitted_interval(&self) -> Option<(TimeUs, TimeUs)> {
        let start = self
            .admitted_at_us
            .map(|admitted_at_us| admitted_at_us + SERVER_TIME_RESOLUTION_US)
            .or(self.active_first_received_us)?;
        let end = self.active_last_sent_us?;
        (start < end).then_some((start, end))
    }

    /// `[joinedAt (or opensAt for the pre-queue), admittedAt)` if admitted, else up to the `s`
    /// of the last answer proving it waiting. `None` if empty.
    pub fn waiting_interval(&self) -> Option<(TimeUs, TimeUs)> {
        let join = self.join?;
        let start = match (join.prequeue, join.opens_at_us) {
            (true, Some(opens_at_us)) => join.joined_at_us.max(opens_at_us),
            _ => join.joined_at_us,
        };
        let end = match self.admitted_at_us {
            Some(admitted_at_us) => admitted_at_us,
            None => self.waiting_last_sent_us?,
        };
        (start < end).then_some((start, end))
    }
}

/// One sample of the room's stats, as the server reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomSample {
    /// When the answer was received.
    pub at_us: TimeUs,
    pub capacity: u32,
    pub active_count: u64,
    pub waiting_count: u64,
}

/// Everything a run recorded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    /// The room's capacity during the run.
    pub capacity: u32,
    pub started_at_us: TimeUs,
    pub ended_at_us: TimeUs,
    /// One per planned user, in arrival order.
    pub users: Vec<UserTrace>,
    pub requests: Vec<RequestRecord>,
    /// Stats samples, in time order (empty without an admin token).
    pub room_samples: Vec<RoomSample>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: SessionStatus) -> SessionView {
        SessionView {
            session_id: "wr_1".to_string(),
            status,
            position: None,
            estimated_wait_seconds: None,
            estimated_wait_range: None,
            turn_soon: None,
            prequeue: false,
            opens_at_us: None,
            joined_at_us: 1_000,
            admitted_at_us: None,
            heartbeat_interval_seconds: Some(10),
            admission_token: None,
            expired_reason: None,
        }
    }

    #[test]
    fn folds_a_full_session_into_proven_bounds() {
        let mut user = UserTrace::new(0);
        let mut waiting = view(SessionStatus::Waiting);
        waiting.position = Some(3);
        waiting.estimated_wait_seconds = Some(5);
        user.observe_join(900, 1_100, &waiting);
        user.observe(2_000, 2_050, &waiting);
        let mut active = view(SessionStatus::Active);
        active.admitted_at_us = Some(2_500);
        user.observe(3_000, 3_040, &active);
        user.observe(4_000, 4_040, &active);
        // admittedAt 2 500 µs is a millisecond-truncated server time: certain from 3 500.
        let mut completed = view(SessionStatus::Expired);
        completed.admitted_at_us = Some(2_500);
        completed.expired_reason = Some(ExpiredReason::Completed);
        user.observe_end(EndKind::Complete, 5_000, 5_030, &completed);

        assert_eq!(user.join.unwrap().position, Some(3));
        assert_eq!(user.admitted_at_us, Some(2_500));
        assert_eq!(user.proven_active_interval(), Some((3_040, 5_000)));
        assert_eq!(user.admitted_interval(), Some((3_500, 5_000)));
        assert_eq!(user.waiting_interval(), Some((1_000, 2_500)));
        assert_eq!(user.eta.len(), 2);
        assert_eq!(user.eta[1].at_us, 2_050);
        let end = user.end.unwrap();
        assert!(end.ended_by_us && end.was_admitted);
    }

    #[test]
    fn an_end_that_found_the_session_expired_proves_nothing_more() {
        let mut user = UserTrace::new(0);
        let mut active = view(SessionStatus::Active);
        active.admitted_at_us = Some(2_500);
        user.observe_join(900, 3_000, &active);
        let mut timed_out = view(SessionStatus::Expired);
        timed_out.admitted_at_us = Some(2_500);
        timed_out.expired_reason = Some(ExpiredReason::Timeout);
        user.observe_end(EndKind::Complete, 9_000, 9_030, &timed_out);
        // Only one ACTIVE answer: received at 3 000, sent at 900 → empty proven interval.
        assert_eq!(user.proven_active_interval(), None);
        assert!(!user.end.unwrap().ended_by_us);
        assert_eq!(user.expired_reason, Some(ExpiredReason::Timeout));
    }

    #[test]
    fn leaving_while_waiting_extends_the_waiting_interval() {
        let mut user = UserTrace::new(0);
        user.observe_join(900, 1_100, &view(SessionStatus::Waiting));
        let mut left = view(SessionStatus::Expired);
        left.expired_reason = Some(ExpiredReason::Left);
        user.observe_end(EndKind::Leave, 7_000, 7_010, &left);
        assert_eq!(user.waiting_interval(), Some((1_000, 7_000)));
        assert_eq!(user.proven_active_interval(), None);
        assert!(!user.end.unwrap().was_admitted);
    }

    #[test]
    fn the_prequeue_waits_from_the_opening() {
        let mut user = UserTrace::new(0);
        let mut waiting = view(SessionStatus::Waiting);
        waiting.prequeue = true;
        waiting.opens_at_us = Some(5_000);
        user.observe_join(900, 1_100, &waiting);
        user.admitted_at_us = Some(6_000);
        assert_eq!(user.waiting_interval(), Some((5_000, 6_000)));
    }
}
