//! The JSON bodies of the API (shared/API.md), their conversions, and their OpenAPI schemas.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use waitroom_core::{ExpiredReason, RoomConfig, RoomStats, SessionView, Status};

use super::problem::Problem;

/// Milliseconds since the Unix epoch as RFC 3339 UTC with millisecond precision.
pub fn rfc3339_ms(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => "9999-12-31T23:59:59.999Z".into(),
    }
}

/// An RFC 3339 instant (any offset) as milliseconds since the Unix epoch.
pub fn parse_rfc3339_ms(text: &str) -> Result<u64, String> {
    let ts: jiff::Timestamp = text
        .parse()
        .map_err(|e| format!("not an RFC 3339 date-time: {e}"))?;
    u64::try_from(ts.as_millisecond()).map_err(|_| "must be after 1970-01-01".to_string())
}

/// `POST /api/waiting-room/sessions`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRequest {
    /// `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`
    #[schema(example = "eras-tour-2026-05-01")]
    pub room_id: String,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatusBody {
    Waiting,
    Active,
    Expired,
}

impl From<Status> for StatusBody {
    fn from(status: Status) -> Self {
        match status {
            Status::Waiting => StatusBody::Waiting,
            Status::Active => StatusBody::Active,
            Status::Expired => StatusBody::Expired,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExpiredReasonBody {
    Timeout,
    Left,
    Completed,
    Evicted,
    Closed,
}

impl From<ExpiredReason> for ExpiredReasonBody {
    fn from(reason: ExpiredReason) -> Self {
        match reason {
            ExpiredReason::Timeout => ExpiredReasonBody::Timeout,
            ExpiredReason::Left => ExpiredReasonBody::Left,
            ExpiredReason::Completed => ExpiredReasonBody::Completed,
            ExpiredReason::Evicted => ExpiredReasonBody::Evicted,
            ExpiredReason::Closed => ExpiredReasonBody::Closed,
        }
    }
}

/// The session view (shared/API.md).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionBody {
    #[schema(example = "wr_AAECAwQFBgcICQoLDA0ODxAREhM")]
    pub waiting_room_session_id: String,
    pub room_id: String,
    pub status: StatusBody,
    /// WAITING only: live WAITING sessions ahead (0 = next). `null` in the pre-queue.
    pub position: Option<u64>,
    pub waiting_count: u64,
    /// WAITING only; `null` until an estimate is possible.
    pub estimated_wait_seconds: Option<u64>,
    pub prequeue: bool,
    pub opens_at: Option<String>,
    pub joined_at: String,
    pub admitted_at: Option<String>,
    /// When the session ends without a heartbeat; `null` once EXPIRED.
    pub expires_at: Option<String>,
    pub heartbeat_interval_seconds: u32,
    /// ACTIVE only: a signed JWT (EdDSA) for the protected service.
    pub admission_token: Option<String>,
    /// ACTIVE only.
    pub target_url: Option<String>,
    pub expired_reason: Option<ExpiredReasonBody>,
}

impl SessionBody {
    pub fn new(
        id: String,
        room_id: &str,
        view: SessionView,
        admission_token: Option<String>,
    ) -> Self {
        Self {
            waiting_room_session_id: id,
            room_id: room_id.to_string(),
            status: view.status.into(),
            position: view.position,
            waiting_count: view.waiting_count,
            estimated_wait_seconds: view.estimated_wait_seconds,
            prequeue: view.prequeue,
            opens_at: view.opens_at_ms.map(rfc3339_ms),
            joined_at: rfc3339_ms(view.joined_at_ms),
            admitted_at: view.admitted_at_ms.map(rfc3339_ms),
            expires_at: view.expires_at_ms.map(rfc3339_ms),
            heartbeat_interval_seconds: view.heartbeat_interval_seconds,
            admission_token,
            target_url: view.target_url,
            expired_reason: view.expired_reason.map(Into::into),
        }
    }
}

fn default_active_idle() -> u32 {
    60
}
fn default_max_active() -> u32 {
    600
}
fn default_waiting_idle() -> u32 {
    120
}
fn default_heartbeat() -> u32 {
    10
}

/// A room's configuration: the body of `PUT /api/waiting-room/rooms/{roomId}`. Every field but
/// `capacity` is optional; an omitted field takes its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoomConfigBody {
    /// 1..=1 000 000
    pub capacity: u32,
    /// null or 1..=10 000 000
    #[serde(default)]
    pub admit_per_minute: Option<u32>,
    /// 1..=86 400
    #[serde(default = "default_active_idle")]
    #[schema(default = 60)]
    pub active_idle_timeout_seconds: u32,
    /// 1..=86 400
    #[serde(default = "default_max_active")]
    #[schema(default = 600)]
    pub max_active_seconds: u32,
    /// 1..=86 400
    #[serde(default = "default_waiting_idle")]
    #[schema(default = 120)]
    pub waiting_idle_timeout_seconds: u32,
    /// 1..=86 400, smaller than both idle timeouts
    #[serde(default = "default_heartbeat")]
    #[schema(default = 10)]
    pub heartbeat_interval_seconds: u32,
    /// RFC 3339, or null
    #[serde(default)]
    pub opens_at: Option<String>,
    /// null or 1..=100 000 000
    #[serde(default)]
    pub max_waiting: Option<u32>,
    #[serde(default)]
    pub paused: bool,
    /// An absolute http(s) URL, or null
    #[serde(default)]
    pub target_url: Option<String>,
}

impl RoomConfigBody {
    /// Converts and validates (every range of the contract).
    pub fn to_config(&self) -> Result<RoomConfig, Problem> {
        let opens_at_ms = match &self.opens_at {
            None => None,
            Some(text) => Some(
                parse_rfc3339_ms(text)
                    .map_err(|why| Problem::bad_request(format!("opensAt {why}")))?,
            ),
        };
        if let Some(target) = &self.target_url {
            let parsed = url::Url::parse(target).map_err(|e| {
                Problem::bad_request(format!("targetUrl is not an absolute URL: {e}"))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(Problem::bad_request(
                    "targetUrl must be an absolute http(s) URL or null",
                ));
            }
        }
        let config = RoomConfig {
            capacity: self.capacity,
            admit_per_minute: self.admit_per_minute,
            active_idle_timeout_seconds: self.active_idle_timeout_seconds,
            max_active_seconds: self.max_active_seconds,
            waiting_idle_timeout_seconds: self.waiting_idle_timeout_seconds,
            heartbeat_interval_seconds: self.heartbeat_interval_seconds,
            opens_at_ms,
            max_waiting: self.max_waiting,
            paused: self.paused,
            target_url: self.target_url.clone(),
        };
        config
            .validate()
            .map_err(|e| Problem::bad_request(e.to_string()))?;
        Ok(config)
    }

    pub fn from_config(config: &RoomConfig) -> Self {
        Self {
            capacity: config.capacity,
            admit_per_minute: config.admit_per_minute,
            active_idle_timeout_seconds: config.active_idle_timeout_seconds,
            max_active_seconds: config.max_active_seconds,
            waiting_idle_timeout_seconds: config.waiting_idle_timeout_seconds,
            heartbeat_interval_seconds: config.heartbeat_interval_seconds,
            opens_at: config.opens_at_ms.map(rfc3339_ms),
            max_waiting: config.max_waiting,
            paused: config.paused,
            target_url: config.target_url.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExpiredTotalBody {
    pub timeout: u64,
    pub left: u64,
    pub completed: u64,
    pub evicted: u64,
    pub closed: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomStatsBody {
    pub waiting_count: u64,
    pub active_count: u64,
    pub admitted_total: u64,
    pub expired_total: ExpiredTotalBody,
    pub admissions_per_minute: u64,
    pub oldest_waiting_seconds: u64,
}

impl From<&RoomStats> for RoomStatsBody {
    fn from(s: &RoomStats) -> Self {
        let t = &s.expired_total;
        Self {
            waiting_count: s.waiting_count,
            active_count: s.active_count,
            admitted_total: s.admitted_total,
            expired_total: ExpiredTotalBody {
                timeout: t.get(ExpiredReason::Timeout),
                left: t.get(ExpiredReason::Left),
                completed: t.get(ExpiredReason::Completed),
                evicted: t.get(ExpiredReason::Evicted),
                closed: t.get(ExpiredReason::Closed),
            },
            admissions_per_minute: s.admissions_per_minute,
            oldest_waiting_seconds: s.oldest_waiting_seconds,
        }
    }
}

/// A room: its configuration (defaults filled in) and live statistics.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomBody {
    pub room_id: String,
    pub config: RoomConfigBody,
    pub stats: RoomStatsBody,
    /// With `?digest=true`: a digest of the room's whole state on this node (hex). Nodes that
    /// applied the same log have equal digests; for checking a fleet's replicas agree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_digest: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoomListBody {
    pub rooms: Vec<RoomBody>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(rfc3339_ms(1_800_000_000_123), "2027-01-15T08:00:00.123Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            parse_rfc3339_ms("2027-01-15T08:00:00.123Z"),
            Ok(1_800_000_000_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2027-01-15T10:00:00.123+02:00"),
            Ok(1_800_000_000_123)
        );
        assert!(parse_rfc3339_ms("2027-01-15 nonsense").is_err());
        assert!(parse_rfc3339_ms("1969-12-31T23:59:59Z").is_err());
    }

    #[test]
    fn config_defaults_and_ranges() {
        let body: RoomConfigBody = serde_json::from_str(r#"{"capacity": 200}"#).unwrap();
        assert_eq!(body.to_config().unwrap(), RoomConfig::with_capacity(200));
        assert!(serde_json::from_str::<RoomConfigBody>(r#"{"capacity": 1, "nope": 1}"#).is_err());
        assert!(serde_json::from_str::<RoomConfigBody>(r#"{"admitPerMinute": 1}"#).is_err());
        let bad = |json: &str| {
            serde_json::from_str::<RoomConfigBody>(json)
                .unwrap()
                .to_config()
                .unwrap_err()
                .status
        };
        assert_eq!(bad(r#"{"capacity": 0}"#), http::StatusCode::BAD_REQUEST);
        assert_eq!(
            bad(r#"{"capacity": 1, "targetUrl": "ftp://x"}"#),
            http::StatusCode::BAD_REQUEST
        );
        assert_eq!(
            bad(r#"{"capacity": 1, "opensAt": "tomorrow"}"#),
            http::StatusCode::BAD_REQUEST
        );
        assert_eq!(
            bad(r#"{"capacity": 1, "heartbeatIntervalSeconds": 120}"#),
            http::StatusCode::BAD_REQUEST
        );
    }
}
