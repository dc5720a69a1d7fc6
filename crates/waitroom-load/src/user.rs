//! One simulated user, behaving like the waiting page: join, poll and heartbeat while WAITING,
//! hold the slot (heartbeating) once ACTIVE, then `:complete` — or abandon with `DELETE`.
//! A user is a tokio task that sleeps between requests; it never blocks a thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::api::{SessionStatus, SessionView};
use crate::arrival::UserPlan;
use crate::http::{Exchange, HttpClient};
use crate::limits::{CONSECUTIVE_FAILURES_MAX, HEARTBEAT_INTERVAL_SECONDS_CEILING};
use crate::options::{HELD_READ_SECONDS, Reads};

/// A waiting user whose turn is expected within this many heartbeat intervals reads its status
/// between heartbeats (`--reads front|held`), as the waiting page does.
const NEAR_FRONT_HEARTBEATS: TimeUs = 2;
use crate::report::StopReason;
use crate::time::TimeUs;
use crate::trace::{EndKind, Outcome, RequestKind, RequestRecord, UserOutcome, UserTrace};

/// Live counts for the progress display (gauges and totals, updated by every user).
#[derive(Debug, Default)]
pub struct LiveCounters {
    pub arrived: AtomicU64,
    pub joined: AtomicU64,
    pub join_failed: AtomicU64,
    pub waiting: AtomicU64,
    pub active: AtomicU64,
    pub finished: AtomicU64,
    pub requests: AtomicU64,
    pub failed_requests: AtomicU64,
    /// Trace records (requests + ETA samples) so far, checked against the bound.
    pub records: AtomicU64,
}

/// What every user of a run shares.
pub struct UserContext {
    pub http: HttpClient,
    pub room: String,
    /// Prefix of the idempotency keys, unique per run.
    pub run_id: String,
    pub poll_interval_us: u64,
    /// Which waiting users read between heartbeats (`--reads`).
    pub reads: crate::options::Reads,
    /// Used until a view reports the room's own interval.
    pub heartbeat_interval_seconds: u64,
    pub stop: CancellationToken,
    /// Set by whoever cancels `stop` for a reason of its own (the trace bound).
    pub stop_reason: Mutex<Option<StopReason>>,
    pub live: LiveCounters,
    pub records_max: u64,
    /// The protected service's client (`--protected-url`), if any.
    pub protected: Option<HttpClient>,
    /// A header each join carries with the user's own address (`--forwarded-for`).
    pub forwarded_for: Option<http::HeaderName>,
    /// Users send only their protected request, without joining (`--direct`).
    pub direct: bool,
}

impl UserContext {
    /// Reads between heartbeats are held by the server (`waitSeconds`).
    fn holds_reads(&self) -> bool {
        matches!(self.reads, Reads::Held | Reads::TurnSoon)
    }

    /// Counts `added` trace records; past the bound, stops the run.
    pub fn count_records(&self, added: u64) {
        let total = self.live.records.fetch_add(added, Ordering::Relaxed) + added;
        if total > self.records_max && !self.stop.is_cancelled() {
            if let Ok(mut reason) = self.stop_reason.lock() {
                reason.get_or_insert(StopReason::TraceFull);
            }
            self.stop.cancel();
        }
    }
}

/// What a user task hands back.
pub struct UserResult {
    pub index: usize,
    pub trace: UserTrace,
    pub requests: Vec<RequestRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LiveState {
    Idle,
    Waiting,
    Active,
}

struct SimulatedUser {
    context: Arc<UserContext>,
    trace: UserTrace,
    requests: Vec<RequestRecord>,
    state: LiveState,
    consecutive_failures: u32,
    heartbeat_interval_us: u64,
}

/// Runs user `index`, planned to arrive at `arrival_us` (and started then), until it is done
/// or the run stops.
pub async fn simulate(
    context: Arc<UserContext>,
    index: usize,
    plan: UserPlan,
    arrival_us: TimeUs,
) -> UserResult {
    let heartbeat_interval_us = context.heartbeat_interval_seconds * 1_000_000;
    let stop = context.stop.clone();
    context.live.arrived.fetch_add(1, Ordering::Relaxed);
    let mut user = SimulatedUser {
        context,
        trace: UserTrace::new(arrival_us),
        requests: Vec::new(),
        state: LiveState::Idle,
        consecutive_failures: 0,
        heartbeat_interval_us,
    };
    tokio::select! {
        biased;
        () = stop.cancelled() => {
            user.trace.outcome = match user.state {
                LiveState::Idle => user.trace.outcome,
                LiveState::Waiting => UserOutcome::StillWaiting,
                LiveState::Active => UserOutcome::StillActive,
            };
        }
        () = user.run(index, plan) => {}
    }
    user.set_state(LiveState::Idle);
    user.context.live.finished.fetch_add(1, Ordering::Relaxed);
    UserResult {
        index,
        trace: user.trace,
        requests: user.requests,
    }
}

impl SimulatedUser {
    /// Near the front of the line, as the waiting page decides (not in the pre-queue): next in
    /// line, or a turn expected within [`NEAR_FRONT_HEARTBEATS`] heartbeat intervals — by the
    /// server's estimate, or by the user's own progress since it joined (`progress`: its first
    /// position and when it was seen), whichever is sooner. The margin and the second opinion
    /// keep an estimate that is too long from hiding a turn until the next heartbeat.
    fn near_front(
        &self,
        view: &SessionView,
        progress: Option<(u64, TimeUs)>,
        now_us: TimeUs,
    ) -> bool {
        if view.status != SessionStatus::Waiting || view.prequeue {
            return false;
        }
        let Some(position) = view.position else {
            return false;
        };
        let horizon_us = NEAR_FRONT_HEARTBEATS * self.heartbeat_interval_us as TimeUs;
        let by_estimate = view
            .estimated_wait_seconds
            .is_some_and(|eta| (eta as TimeUs) * 1_000_000 < horizon_us);
        let by_progress = progress.is_some_and(|(first, since_us)| {
            let moved = first.saturating_sub(position) as TimeUs;
            let elapsed_us = now_us - since_us;
            moved > 0 && (position as TimeUs) * elapsed_us / moved < horizon_us
        });
        position == 0 || by_estimate || by_progress
    }

    fn now_us(&self) -> TimeUs {
        self.context.http.clock().now_us()
    }

    async fn sleep_until(&self, at_us: TimeUs) {
        let instant = self.context.http.clock().instant_at(at_us);
        tokio::time::sleep_until(instant.into()).await;
    }

    fn set_state(&mut self, state: LiveState) {
        let live = &self.context.live;
        let gauge = |state| match state {
            LiveState::Idle => None,
            LiveState::Waiting => Some(&live.waiting),
            LiveState::Active => Some(&live.active),
        };
        if let Some(old) = gauge(self.state) {
            old.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(new) = gauge(state) {
            new.fetch_add(1, Ordering::Relaxed);
        }
        self.state = state;
    }

    /// Records a request; returns its view if it succeeded.
    fn record(
        &mut self,
        kind: RequestKind,
        exchange: Exchange<SessionView>,
    ) -> Option<(TimeUs, TimeUs, SessionView)> {
        let ok = self.count_request(
            kind,
            exchange.outcome,
            exchange.sent_us,
            exchange.received_us,
        );
        self.consecutive_failures = if ok { 0 } else { self.consecutive_failures + 1 };
        let view = exchange.body?;
        if let Some(seconds) = view.heartbeat_interval_seconds {
            self.heartbeat_interval_us =
                seconds.clamp(1, HEARTBEAT_INTERVAL_SECONDS_CEILING) * 1_000_000;
        }
        Some((exchange.sent_us, exchange.received_us, view))
    }

    /// Keeps one request in this user's record and in the live counters; `true` if it succeeded.
    fn count_request(
        &mut self,
        kind: RequestKind,
        outcome: Outcome,
        sent_us: TimeUs,
        received_us: TimeUs,
    ) -> bool {
        self.requests.push(RequestRecord {
            kind,
            outcome,
            sent_us,
            received_us,
        });
        let live = &self.context.live;
        live.requests.fetch_add(1, Ordering::Relaxed);
        let ok = outcome == Outcome::Ok;
        if !ok {
            live.failed_requests.fetch_add(1, Ordering::Relaxed);
        }
        self.context.count_records(1);
        ok
    }

    fn observe(&mut self, sent_us: TimeUs, received_us: TimeUs, view: &SessionView) {
        let before = self.trace.eta.len();
        self.trace.observe(sent_us, received_us, view);
        let added = (self.trace.eta.len() - before) as u64;
        if added > 0 {
            self.context.count_records(added);
        }
    }

    /// Sends the protected request (if there is a protected service) and records it. Its
    /// failures do not count towards giving up: that is about the waiting room.
    async fn protected_request(&mut self, user: &str, admission_token: Option<&str>) {
        let Some(protected) = &self.context.protected else {
            return;
        };
        let exchange = protected.protected(admission_token, user).await;
        self.count_request(
            RequestKind::Protected,
            exchange.outcome,
            exchange.sent_us,
            exchange.received_us,
        );
    }

    async fn run(&mut self, index: usize, plan: UserPlan) {
        let key = format!("{}-{index}", self.context.run_id);
        if self.context.direct {
            self.protected_request(&key, None).await;
            self.trace.outcome = UserOutcome::Direct;
            return;
        }
        let forwarded = self.context.forwarded_for.clone().map(|name| {
            let [_, b, c, d] = u32::try_from(index).unwrap_or(u32::MAX).to_be_bytes();
            (name, format!("10.{b}.{c}.{d}"))
        });
        let exchange = self
            .context
            .http
            .join(&self.context.room, &key, forwarded)
            .await;
        let Some((sent_us, received_us, view)) = self.record(RequestKind::Join, exchange) else {
            self.context
                .live
                .join_failed
                .fetch_add(1, Ordering::Relaxed);
            self.trace.outcome = UserOutcome::JoinFailed;
            return;
        };
        self.context.live.joined.fetch_add(1, Ordering::Relaxed);
        let before = self.trace.eta.len();
        self.trace.observe_join(sent_us, received_us, &view);
        self.context
            .count_records((self.trace.eta.len() - before) as u64);
        let session_id = view.session_id.clone();
        let mut next_heartbeat_us = received_us + self.heartbeat_interval_us as TimeUs;

        let mut view = view;
        if view.status == SessionStatus::Waiting {
            self.set_state(LiveState::Waiting);
            let abandon_at_us = plan
                .abandon_waiting_after_us
                .map(|after_us| received_us + after_us as TimeUs);
            let poll_interval_us = self.context.poll_interval_us as TimeUs;
            // `turn-soon`, as the waiting page: reads are spaced from the last read, not from the
            // last request (a heartbeat or the join leaves no read pending to wait for).
            let reads_apart = self.context.reads == Reads::TurnSoon;
            let mut next_poll_us = if reads_apart {
                received_us
            } else {
                received_us + poll_interval_us
            };
            let mut last_read_sent_us = TimeUs::MIN / 2;
            let progress = view.position.map(|position| (position, received_us));
            loop {
                let reads = match self.context.reads {
                    Reads::Interval => true,
                    Reads::Front | Reads::Held => self.near_front(&view, progress, self.now_us()),
                    Reads::TurnSoon => view.turn_soon == Some(true),
                };
                let mut next_us = next_heartbeat_us;
                if reads {
                    next_us = next_us.min(next_poll_us);
                }
                if let Some(abandon_at_us) = abandon_at_us {
                    next_us = next_us.min(abandon_at_us);
                }
                self.sleep_until(next_us).await;
                let now_us = self.now_us();
                if abandon_at_us.is_some_and(|at_us| at_us <= now_us) {
                    self.end(EndKind::Leave, &session_id, None).await;
                    return;
                }
                // `held`: a held read must end before the next heartbeat is due. `turn-soon`: as
                // the waiting page, whose reads and heartbeats run side by side, a read is held
                // for the whole wait; a heartbeat that falls due meanwhile goes right after it
                // (late by at most the wait, far within the idle timeout).
                let held_seconds = if self.context.reads == Reads::TurnSoon {
                    HELD_READ_SECONDS
                } else {
                    ((next_heartbeat_us - now_us) / 1_000_000).clamp(0, HELD_READ_SECONDS as TimeUs)
                        as u64
                };
                let (kind, exchange) = if next_heartbeat_us <= now_us
                    || (self.context.holds_reads() && held_seconds == 0)
                {
                    let exchange = self.context.http.heartbeat(&session_id).await;
                    (RequestKind::Heartbeat, exchange)
                } else if self.context.holds_reads() {
                    last_read_sent_us = now_us;
                    let exchange = self.context.http.held_poll(&session_id, held_seconds).await;
                    (RequestKind::HeldPoll, exchange)
                } else {
                    (RequestKind::Poll, self.context.http.poll(&session_id).await)
                };
                // A failed request is retried at the next tick, like a page would.
                let answered_us = exchange.received_us;
                next_poll_us = if kind == RequestKind::HeldPoll || reads_apart {
                    // Read again at once after a held answer; a poll interval after the last
                    // read began otherwise (a node that holds no more reads answers at once).
                    answered_us.max(last_read_sent_us + poll_interval_us)
                } else {
                    answered_us + poll_interval_us
                };
                if kind == RequestKind::Heartbeat {
                    next_heartbeat_us = answered_us + self.heartbeat_interval_us as TimeUs;
                }
                let Some((sent_us, received_us, answer)) = self.record(kind, exchange) else {
                    if self.consecutive_failures >= CONSECUTIVE_FAILURES_MAX {
                        self.trace.outcome = UserOutcome::GaveUp;
                        return;
                    }
                    continue;
                };
                self.observe(sent_us, received_us, &answer);
                match answer.status {
                    SessionStatus::Waiting => view = answer,
                    SessionStatus::Active | SessionStatus::Expired => {
                        view = answer;
                        break;
                    }
                }
            }
        }
        if view.status == SessionStatus::Expired {
            self.trace.outcome = view
                .expired_reason
                .map_or(UserOutcome::GaveUp, UserOutcome::Expired);
            return;
        }

        // ACTIVE: hold the slot, heartbeating, then complete (or leave).
        self.set_state(LiveState::Active);
        let active_since_us = self
            .trace
            .active_first_received_us
            .unwrap_or_else(|| self.now_us());
        let hold_until_us = active_since_us + plan.hold_us as TimeUs;
        let mut admission_token = view.admission_token.clone();
        self.protected_request(&key, admission_token.as_deref())
            .await;
        loop {
            self.sleep_until(hold_until_us.min(next_heartbeat_us)).await;
            if self.now_us() >= hold_until_us {
                let kind = if plan.abandon_active {
                    EndKind::Leave
                } else {
                    EndKind::Complete
                };
                self.end(kind, &session_id, admission_token.as_deref())
                    .await;
                return;
            }
            let exchange = self.context.http.heartbeat(&session_id).await;
            next_heartbeat_us = exchange.received_us + self.heartbeat_interval_us as TimeUs;
            let Some((sent_us, received_us, answer)) =
                self.record(RequestKind::Heartbeat, exchange)
            else {
                if self.consecutive_failures >= CONSECUTIVE_FAILURES_MAX {
                    self.trace.outcome = UserOutcome::GaveUp;
                    return;
                }
                continue;
            };
            self.observe(sent_us, received_us, &answer);
            match answer.status {
                SessionStatus::Active => {
                    if answer.admission_token.is_some() {
                        admission_token = answer.admission_token;
                    }
                }
                // An ACTIVE session never goes back to WAITING; if a server says so, keep
                // holding: the trace records the contradiction as a waiting observation.
                SessionStatus::Waiting => {}
                SessionStatus::Expired => {
                    self.trace.outcome = answer
                        .expired_reason
                        .map_or(UserOutcome::GaveUp, UserOutcome::Expired);
                    return;
                }
            }
        }
    }

    async fn end(&mut self, kind: EndKind, session_id: &str, admission_token: Option<&str>) {
        let (request_kind, exchange) = match kind {
            EndKind::Complete => (
                RequestKind::Complete,
                self.context
                    .http
                    .complete(session_id, admission_token)
                    .await,
            ),
            EndKind::Leave => (
                RequestKind::Leave,
                self.context.http.leave(session_id).await,
            ),
        };
        let Some((sent_us, received_us, view)) = self.record(request_kind, exchange) else {
            self.trace.outcome = UserOutcome::EndFailed;
            return;
        };
        self.trace.observe_end(kind, sent_us, received_us, &view);
        let Some(end) = self.trace.end else {
            self.trace.outcome = UserOutcome::EndFailed;
            return;
        };
        self.trace.outcome = match (end.ended_by_us, kind, end.was_admitted) {
            (true, EndKind::Complete, _) => UserOutcome::Completed,
            (true, EndKind::Leave, false) => UserOutcome::LeftWaiting,
            (true, EndKind::Leave, true) => UserOutcome::LeftActive,
            (false, _, _) => match (view.status, view.expired_reason) {
                (SessionStatus::Expired, Some(reason)) => UserOutcome::Expired(reason),
                _ => UserOutcome::EndFailed,
            },
        };
    }
}
