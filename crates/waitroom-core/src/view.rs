//! What the state machine answers: outcomes of records, session views, room statistics.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::ids::SessionId;

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
