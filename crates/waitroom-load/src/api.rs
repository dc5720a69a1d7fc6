//! The parts of the HTTP contract (docs/api.md) the load tool reads and writes.
//!
//! Parsing is strict about what the metrics depend on (status, timestamps) and lenient about the
//! rest: unknown fields are ignored, because the contract only ever adds fields. A body that
//! does not satisfy the contract is a failed request (`bad-body`), never a panic.

use serde::{Deserialize, Serialize};

use crate::time::{TimeUs, parse_rfc3339};

/// Path of the sessions collection.
pub const SESSIONS_PATH: &str = "/api/waiting-room/sessions";
/// Path prefix of rooms.
pub const ROOMS_PATH: &str = "/api/waiting-room/rooms";

/// `status` of a session view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionStatus {
    Waiting,
    Active,
    Expired,
}

/// `expiredReason` of an EXPIRED session view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpiredReason {
    Timeout,
    Left,
    Completed,
    Evicted,
    Closed,
}

impl ExpiredReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Left => "left",
            Self::Completed => "completed",
            Self::Evicted => "evicted",
            Self::Closed => "closed",
        }
    }
}

/// A session view as sent by the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionViewWire {
    waiting_room_session_id: String,
    status: SessionStatus,
    #[serde(default)]
    position: Option<u64>,
    #[serde(default)]
    estimated_wait_seconds: Option<u64>,
    /// Absent from servers that predate it.
    #[serde(default)]
    estimated_wait_range: Option<WaitRange>,
    /// Absent from servers that predate it.
    #[serde(default)]
    turn_soon: Option<bool>,
    #[serde(default)]
    prequeue: bool,
    #[serde(default)]
    opens_at: Option<String>,
    joined_at: String,
    #[serde(default)]
    admitted_at: Option<String>,
    #[serde(default)]
    heartbeat_interval_seconds: Option<u64>,
    #[serde(default)]
    admission_token: Option<String>,
    #[serde(default)]
    expired_reason: Option<ExpiredReason>,
}

/// `estimatedWaitRange` of a session view: seconds, `low ≤ high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitRange {
    pub low_seconds: u64,
    pub high_seconds: u64,
}

/// A session view with its timestamps parsed: what the simulated users and the trace use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub session_id: String,
    pub status: SessionStatus,
    pub position: Option<u64>,
    pub estimated_wait_seconds: Option<u64>,
    pub estimated_wait_range: Option<WaitRange>,
    /// `turnSoon`: `None` from a server that predates it.
    pub turn_soon: Option<bool>,
    pub prequeue: bool,
    pub opens_at_us: Option<TimeUs>,
    pub joined_at_us: TimeUs,
    pub admitted_at_us: Option<TimeUs>,
    pub heartbeat_interval_seconds: Option<u64>,
    pub admission_token: Option<String>,
    pub expired_reason: Option<ExpiredReason>,
}

/// Why a body is not a valid session view or room body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not the expected JSON: {0}")]
    Json(String),
    #[error("field `{0}` is not an RFC 3339 timestamp")]
    Timestamp(&'static str),
    #[error("field `{0}` is inconsistent with the status")]
    Inconsistent(&'static str),
}

impl SessionView {
    /// Parses and checks a session view body.
    ///
    /// # Errors
    /// [`BodyError`] if the JSON does not match the contract, a timestamp does not parse, or the
    /// view contradicts itself (an ACTIVE view without `admittedAt`, an EXPIRED one without
    /// `expiredReason`).
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        let wire: SessionViewWire =
            serde_json::from_slice(body).map_err(|error| BodyError::Json(error.to_string()))?;
        let time = |text: &Option<String>, field| match text {
            None => Ok(None),
            Some(text) => parse_rfc3339(text)
                .map(Some)
                .ok_or(BodyError::Timestamp(field)),
        };
        let view = Self {
            joined_at_us: parse_rfc3339(&wire.joined_at).ok_or(BodyError::Timestamp("joinedAt"))?,
            admitted_at_us: time(&wire.admitted_at, "admittedAt")?,
            opens_at_us: time(&wire.opens_at, "opensAt")?,
            session_id: wire.waiting_room_session_id,
            status: wire.status,
            position: wire.position,
            estimated_wait_seconds: wire.estimated_wait_seconds,
            estimated_wait_range: wire
                .estimated_wait_range
                .filter(|range| range.low_seconds <= range.high_seconds),
            turn_soon: wire.turn_soon,
            prequeue: wire.prequeue,
            heartbeat_interval_seconds: wire.heartbeat_interval_seconds,
            admission_token: wire.admission_token,
            expired_reason: wire.expired_reason,
        };
        if !is_valid_session_id(&view.session_id) {
            return Err(BodyError::Inconsistent("waitingRoomSessionId"));
        }
        match view.status {
            SessionStatus::Active if view.admitted_at_us.is_none() => {
                Err(BodyError::Inconsistent("admittedAt"))
            }
            SessionStatus::Expired if view.expired_reason.is_none() => {
                Err(BodyError::Inconsistent("expiredReason"))
            }
            _ => Ok(view),
        }
    }
}

/// The API's bound on session ids: 1..=128 characters of `[A-Za-z0-9_-]`. Checked so an id is
/// safe to put in a request path.
fn is_valid_session_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

/// The body of `PUT /api/waiting-room/rooms/{roomId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomConfig {
    pub capacity: u32,
    pub admit_per_minute: Option<u64>,
    pub active_idle_timeout_seconds: u64,
    pub max_active_seconds: u64,
    pub waiting_idle_timeout_seconds: u64,
    pub heartbeat_interval_seconds: u64,
    /// RFC 3339, or `None` for a room open now.
    pub opens_at: Option<String>,
    pub max_waiting: Option<u64>,
    pub paused: bool,
    pub target_url: Option<String>,
}

/// The live stats of a room, as far as the load tool reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomStats {
    pub capacity: u32,
    pub active_count: u64,
    pub waiting_count: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomBodyWire {
    config: RoomConfigCapacityWire,
    stats: RoomStatsWire,
}

#[derive(Debug, Deserialize)]
struct RoomConfigCapacityWire {
    capacity: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomStatsWire {
    waiting_count: u64,
    active_count: u64,
}

impl RoomStats {
    /// Parses the room body of `GET /api/waiting-room/rooms/{roomId}`.
    ///
    /// # Errors
    /// [`BodyError::Json`] if `config.capacity`, `stats.activeCount` or `stats.waitingCount`
    /// is missing or mistyped.
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        let wire: RoomBodyWire =
            serde_json::from_slice(body).map_err(|error| BodyError::Json(error.to_string()))?;
        Ok(Self {
            capacity: wire.config.capacity,
            active_count: wire.stats.active_count,
            waiting_count: wire.stats.waiting_count,
        })
    }
}

/// The body of a join request.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest<'a> {
    pub room_id: &'a str,
    /// A solved challenge, when the room asks for one (docs/api.md, "Challenges").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solution: Option<&'a str>,
}

/// The answer of `POST …/rooms/{roomId}/challenge`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeBody {
    pub challenge: String,
    pub difficulty_bits: u32,
}

impl ChallengeBody {
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAITING: &str = r#"{
      "waitingRoomSessionId": "wr_2b7k4q", "roomId": "r", "status": "WAITING",
      "position": 1523, "waitingCount": 48211, "estimatedWaitSeconds": 310,
      "prequeue": false, "opensAt": null, "joinedAt": "2026-11-27T10:00:00.123Z",
      "admittedAt": null, "expiresAt": "2026-11-27T10:02:00.123Z",
      "heartbeatIntervalSeconds": 10, "admissionToken": null, "targetUrl": null,
      "expiredReason": null, "someFutureField": [1, 2]
    }"#;

    #[test]
    fn parses_the_contract_example() {
        let view = SessionView::parse(WAITING.as_bytes()).unwrap();
        assert_eq!(view.status, SessionStatus::Waiting);
        assert_eq!(view.position, Some(1523));
        assert_eq!(view.estimated_wait_seconds, Some(310));
        assert_eq!(view.joined_at_us, 1_795_773_600_123_000);
        assert_eq!(view.heartbeat_interval_seconds, Some(10));
        assert!(!view.prequeue);
    }

    #[test]
    fn rejects_bodies_that_break_the_contract() {
        assert!(matches!(
            SessionView::parse(b"<html>"),
            Err(BodyError::Json(_))
        ));
        let bad_time = WAITING.replace("2026-11-27T10:00:00.123Z", "yesterday");
        assert_eq!(
            SessionView::parse(bad_time.as_bytes()),
            Err(BodyError::Timestamp("joinedAt"))
        );
        let active_without_admission = WAITING.replace("\"WAITING\"", "\"ACTIVE\"");
        assert_eq!(
            SessionView::parse(active_without_admission.as_bytes()),
            Err(BodyError::Inconsistent("admittedAt"))
        );
        let bad_id = WAITING.replace("wr_2b7k4q", "../../rooms");
        assert_eq!(
            SessionView::parse(bad_id.as_bytes()),
            Err(BodyError::Inconsistent("waitingRoomSessionId"))
        );
        let unknown_status = WAITING.replace("\"WAITING\"", "\"SLEEPING\"");
        assert!(SessionView::parse(unknown_status.as_bytes()).is_err());
    }

    #[test]
    fn parses_room_stats() {
        let body = br#"{"roomId":"r","config":{"capacity":200,"paused":false},
            "stats":{"waitingCount":5,"activeCount":200,"admittedTotal":9}}"#;
        assert_eq!(
            RoomStats::parse(body),
            Ok(RoomStats {
                capacity: 200,
                active_count: 200,
                waiting_count: 5
            })
        );
        assert!(RoomStats::parse(b"{}").is_err());
    }
}
