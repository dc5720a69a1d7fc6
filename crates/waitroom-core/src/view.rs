//! What the state machine answers: outcomes of records, session views, room statistics.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, QueueingMethod};
use crate::ids::SessionId;
use crate::limits::{RATE_BUCKET_MS, TURN_SOON_HORIZON_PERCENT, TURN_SOON_SPAN_MS_MIN};
use crate::room::Room;

/// A session's status (`status` in docs/api.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    Waiting,
    Active,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Waiting => "WAITING",
            Status::Active => "ACTIVE",
            Status::Expired => "EXPIRED",
        }
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ExpiredReason {
    /// No heartbeat within the idle timeout, or `maxActiveSeconds` reached.
    Timeout,
    /// The person left.
    Left,
    /// The protected flow finished.
    Completed,
    /// An operator evicted the session.
    Evicted,
    /// The room was closed.
    Closed,
}

impl ExpiredReason {
    pub const ALL: [ExpiredReason; 5] = [
        ExpiredReason::Timeout,
        ExpiredReason::Left,
        ExpiredReason::Completed,
        ExpiredReason::Evicted,
        ExpiredReason::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExpiredReason::Timeout => "timeout",
            ExpiredReason::Left => "left",
            ExpiredReason::Completed => "completed",
            ExpiredReason::Evicted => "evicted",
            ExpiredReason::Closed => "closed",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One session as a client sees it (the session view of docs/api.md, minus the token, which
/// the node signs). Times are milliseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub session: SessionId,
    pub status: Status,
    /// WAITING after the draw: live WAITING sessions ahead (0 = next).
    pub position: Option<u64>,
    /// Live WAITING sessions in the room (pre-queue included).
    pub waiting_count: u64,
    /// WAITING after the draw, once the turnover is known well enough for a single figure (see
    /// `Room` for the method); within `estimated_wait_range`.
    pub estimated_wait_seconds: Option<u64>,
    /// WAITING after the draw, once a rate is known: the wait lies in this range (low ≤ high).
    pub estimated_wait_range: Option<WaitRange>,
    /// WAITING in line, with the turn likely to come before the next heartbeat (see
    /// [`Room::turn_soon`]): clients hold a read (`waitSeconds`) to learn of it at once.
    pub turn_soon: bool,
    /// The session waits in the pre-queue: its place is drawn when the room opens.
    pub prequeue: bool,
    pub opens_at_ms: Option<u64>,
    pub joined_at_ms: u64,
    pub admitted_at_ms: Option<u64>,
    /// When the session ends without a heartbeat; `None` once ended.
    pub expires_at_ms: Option<u64>,
    /// When the state machine last saw a heartbeat (or the join/admission) of a live session.
    /// Not part of the API; the node uses it to budget heartbeat records.
    pub last_seen_ms: Option<u64>,
    pub heartbeat_interval_seconds: u32,
    /// ACTIVE only: the room's target URL.
    pub target_url: Option<String>,
    pub expired_reason: Option<ExpiredReason>,
}

/// # Turn soon
/// `turnSoon` marks the sessions whose turn may come before their next heartbeat: the node holds
/// their status reads (`waitSeconds`) until the turn comes, and clients ask for held reads only
/// then, so a person learns of the turn at once while only the front of the line holds a
/// connection. It must err towards `true` — a turn it misses is noticed a heartbeat late — and
/// needs no estimate: the first fill of a room, when nothing says yet how long people stay, is
/// when it matters most.
impl Room {
    /// A session `position` places from the front of an open, running room's line (`random`
    /// rooms, which draw each admission among everyone, and the pre-queue, have no position):
    /// `position < max(1, soon)`, `soon` being the admissions expected within the horizon `h`,
    /// `TURN_SOON_HORIZON_PERCENT` of the heartbeat interval. Over the `RATE_BUCKET_MS` buckets
    /// that cover the last `h + RATE_BUCKET_MS` (at least `h`; at most the rate window) since the
    /// room opened, `soon` is the largest of
    /// - the admissions in them (the first fill's included, not extrapolated: right after the
    ///   opening, `capacity` people are admitted at once, which is no rate);
    /// - the slots freed in them, scaled to `h` from the time they span (at least
    ///   `TURN_SOON_SPAN_MS_MIN`): the turnover, which a young room has shown for a short time
    ///   only;
    /// - with `admitPerMinute` and free slots (the rate limit binds): `admitPerMinute × h`;
    /// - while the room opened less than `h + RATE_BUCKET_MS` ago (its first fill), the
    ///   admissions plus the sessions active now: nothing says yet how long people stay, so any
    ///   of them may leave within the horizon, and the turnover measured so far lags behind one
    ///   that is still rising.
    ///
    /// Integer arithmetic on the room's state, like the estimates: every node agrees. At most
    /// about `soon` sessions per room are marked, whatever the length of the line.
    pub(crate) fn turn_soon(&self, position: u64) -> bool {
        let config = &self.config;
        let open = config.opens_at_ms.is_none_or(|at| self.now_ms >= at);
        if !self.exists
            || config.paused
            || !open
            || config.queueing_method == QueueingMethod::Random
        {
            return false;
        }
        if position == 0 {
            return true;
        }
        let horizon_ms =
            TURN_SOON_HORIZON_PERCENT * u64::from(config.heartbeat_interval_seconds) * 10;
        let opened_ms = self.created_at_ms.max(config.opens_at_ms.unwrap_or(0));
        let window_ms = horizon_ms + RATE_BUCKET_MS;
        let (admitted, _) = self.admissions.recent(self.now_ms, window_ms, opened_ms);
        let (freed, span_ms) = self.freed_slots.recent(self.now_ms, window_ms, opened_ms);
        let turnover = u128::from(freed) * u128::from(horizon_ms)
            / u128::from(span_ms.max(TURN_SOON_SPAN_MS_MIN));
        let by_rate = match &self.bucket {
            Some(bucket) if self.active_count < config.capacity => {
                u128::from(bucket.admit_per_minute()) * u128::from(horizon_ms) / 60_000
            }
            _ => 0,
        };
        let first_fill = if self.now_ms.saturating_sub(opened_ms) < window_ms {
            u128::from(admitted) + u128::from(self.active_count)
        } else {
            0
        };
        let soon = u128::from(admitted)
            .max(turnover)
            .max(by_rate)
            .max(first_fill);
        u128::from(position) < soon
    }
}

/// A range of waits, whole seconds: `low_seconds ≤ high_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitRange {
    pub low_seconds: u64,
    pub high_seconds: u64,
}

/// Sessions ended so far, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredTotals(pub [u64; 5]);

impl ExpiredTotals {
    pub fn get(&self, reason: ExpiredReason) -> u64 {
        self.0[reason.index()]
    }

    pub fn sum(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Live statistics of a room (`stats` in docs/api.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomStats {
    pub waiting_count: u64,
    pub active_count: u64,
    pub admitted_total: u64,
    pub expired_total: ExpiredTotals,
    /// Admissions in roughly the last minute of log time (5-second buckets).
    pub admissions_per_minute: u64,
    /// How long the person at the front of the line (or, before opening, the earliest joiner of
    /// the pre-queue) has waited; 0 when nobody waits.
    pub oldest_waiting_seconds: u64,
    /// The estimated wait of someone joining now, by the rule a session's `estimatedWaitSeconds`
    /// follows (at the back of the line); 0 when they would be admitted at once (open, not
    /// paused, nobody waiting, a free slot and no rate limit); `None` when no estimate is
    /// possible (paused, before opening, a full room with fewer than `ETA_FREES_MIN` slots freed
    /// in the ETA window). The central estimate, whether or not the range is narrow.
    pub newcomer_wait_seconds: Option<u64>,
    /// Ended sessions still remembered (answering GETs with their reason).
    pub remembered_ended_count: u64,
    /// Passes issued for the room and neither used nor expired.
    pub passes_outstanding: u64,
}

/// What applying one record did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new place in line (the session may already be ACTIVE when a slot was free).
    Joined { session: SessionId },
    /// The idempotency key was seen before: this is the session it created.
    Replayed { session: SessionId },
    /// The room was created (`created`) or its configuration replaced.
    Configured { created: bool },
    /// The room closed; this many live sessions ended with reason `closed`.
    Closed { ended: u64 },
    /// This many live sessions of the batch were refreshed.
    Heartbeat { refreshed: u32 },
    /// The session ended by this record.
    Ended { session: SessionId },
    /// The session had already ended; nothing changed.
    AlreadyEnded { session: SessionId },
    /// This many passes were issued (a hash already outstanding is not counted).
    PassesIssued { issued: u32 },
    /// Time moved forward.
    Ticked,
    /// The record (or the join's session id, or the rooms-file entry of a
    /// `ConfigureRoomFromFile`) was applied before; nothing changed.
    Duplicate,
    /// The command was refused; nothing changed (time still moved forward).
    Rejected(Rejection),
}

/// Why a command was refused. Business outcomes, not faults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The room does not exist (never configured, or closed).
    UnknownRoom,
    /// `maxWaiting` (or the per-room session limit) is reached.
    RoomFull,
    /// No such session is remembered.
    UnknownSession,
    /// `Leave { reason: Completed }` for a session that was never admitted.
    NotActive,
    /// A configuration out of range.
    InvalidConfig(ConfigError),
    /// The record was routed to the wrong room's state machine.
    WrongRoom,
    /// A join while the room's queueing method is `reject`.
    JoinsRefused,
    /// A join without a pass while the room is `inviteOnly`.
    PassRequired,
    /// A join with a pass the room does not hold: never issued for this room, used, or expired.
    InvalidPass,
    /// Passes not issued: a count outside 1..=`PASSES_PER_RECORD_MAX`, an expiry not within
    /// `PASS_LIFETIME_MS_MAX` ahead, or more than `PASSES_PER_ROOM_MAX` outstanding.
    InvalidPasses,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::UnknownRoom => f.write_str("unknown room"),
            Rejection::RoomFull => f.write_str("room full"),
            Rejection::UnknownSession => f.write_str("unknown session"),
            Rejection::NotActive => f.write_str("session was never admitted"),
            Rejection::InvalidConfig(e) => write!(f, "invalid configuration: {e}"),
            Rejection::WrongRoom => f.write_str("record addressed to another room"),
            Rejection::JoinsRefused => f.write_str("the room refuses joins"),
            Rejection::PassRequired => f.write_str("the room is invite-only: a pass is required"),
            Rejection::InvalidPass => {
                f.write_str("the pass is not valid here (unknown, used, or expired)")
            }
            Rejection::InvalidPasses => f.write_str("passes out of range"),
        }
    }
}
