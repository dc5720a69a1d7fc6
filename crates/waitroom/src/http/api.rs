//! The JSON bodies of the API (docs/api.md), their conversions, and their OpenAPI schemas.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use waitroom_core::{
    ExpiredReason, QueueingMethod, Room, RoomConfig, RoomEvent, RoomStats, SessionView, Status,
    WaitRange,
};

use super::problem::Problem;

/// Milliseconds since the Unix epoch as RFC 3339 UTC with millisecond precision.
pub fn rfc3339_ms(ms: u64) -> String {
    Rfc3339Ms(ms).to_string()
}

/// The last instant RFC 3339 can write (9999-12-31T23:59:59.999Z); later times are clamped.
const RFC3339_MS_MAX: u64 = 253_402_300_799_999;

/// An instant (milliseconds since the Unix epoch) that displays and serialises as RFC 3339 UTC
/// with millisecond precision, e.g. `2026-11-27T10:00:00.123Z`.
///
/// Written by hand rather than with `jiff`'s `strftime` because every status poll formats two or
/// three of these: this one writes into a stack buffer without allocating (the civil-date
/// conversion is Howard Hinnant's `civil_from_days`). Tests check it against `jiff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rfc3339Ms(pub u64);

impl Rfc3339Ms {
    /// The text, `YYYY-MM-DDTHH:MM:SS.mmmZ`, as ASCII bytes.
    pub fn to_ascii(self) -> [u8; 24] {
        let ms = self.0.min(RFC3339_MS_MAX);
        let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
        // civil_from_days, for days ≥ 0 (1970-01-01 onward).
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        let (hour, minute) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
        let (second, milli) = (ms_of_day / 1_000 % 60, ms_of_day % 1_000);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, value: u64, digits: usize| {
            let mut value = value;
            for i in (0..digits).rev() {
                out[at + i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, year, 4);
        put(5, month, 2);
        put(8, day, 2);
        put(11, hour, 2);
        put(14, minute, 2);
        put(17, second, 2);
        put(20, milli, 3);
        out
    }
}

impl std::fmt::Display for Rfc3339Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only ASCII digits and separators are written.
        f.write_str(std::str::from_utf8(&self.to_ascii()).map_err(|_| std::fmt::Error)?)
    }
}

impl Serialize for Rfc3339Ms {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An RFC 3339 date-time (any offset) as milliseconds since the Unix epoch, clamped to what the
/// API can hold and write: an instant before 1970 is 1970-01-01T00:00:00.000Z (the past), one
/// after 9999-12-31T23:59:59.999Z is that instant. Strict RFC 3339 (section 5.6): `T` and `Z` in
/// either case, any number of fraction digits (milliseconds kept), `:60` seconds as a leap
/// second; nothing else of ISO 8601 (no missing seconds, no offset without a colon, no
/// annotation).
pub fn parse_rfc3339_ms(text: &str) -> Result<u64, String> {
    let ms = parse_rfc3339(text).ok_or_else(|| {
        format!("is not an RFC 3339 date-time (like 2026-12-07T10:00:00Z): {text:?}")
    })?;
    Ok(u64::try_from(ms).unwrap_or(0).min(RFC3339_MS_MAX))
}

/// Strict RFC 3339 `date-time` to (signed) milliseconds since the Unix epoch.
fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |from: usize, n: usize| -> Option<i64> {
        let part = b.get(from..from + n)?;
        part.iter().try_fold(0i64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let at = |i: usize, expected: &[u8]| b.get(i).is_some_and(|c| expected.contains(c));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=month_days).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut milli = 0;
    if at(i, b".") {
        let fraction = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if fraction == 0 {
            return None;
        }
        milli = (0..3).fold(0, |acc, k| {
            let digit = if k < fraction { b[i + 1 + k] - b'0' } else { 0 };
            acc * 10 + i64::from(digit)
        });
        i += 1 + fraction;
    }
    let offset_minutes = match b.get(i)? {
        b'Z' | b'z' if b.len() == i + 1 => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && at(i + 3, b":") => {
            let (hours, minutes) = (digits(i + 1, 2)?, digits(i + 4, 2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let minutes = hours * 60 + minutes;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    // days_from_civil (Howard Hinnant), for any year 0000..=9999.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + milli)
}

/// `POST /api/waiting-room/sessions`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRequest {
    /// The room to join: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`.
    #[schema(
        example = "eras-tour-2026-05-01",
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    pub room_id: String,
    /// A pass issued for this room (`POST /api/waiting-room/rooms/{roomId}/passes`): the
    /// session is admitted at once, ahead of the line and even when the room is full, paused,
    /// not open yet or `reject`; the pass is then used. An unknown, used or expired pass, or one
    /// of another room, is a `403` (type `pass-invalid`) and changes nothing.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, example = "Jd0XzqX3b0m0YgK1W2aA8Q")]
    pub pass: Option<String>,
    /// A challenge from `POST /api/waiting-room/rooms/{roomId}/challenge`, solved: required
    /// with `solution` when the room's `challengeDifficultyBits` is not 0 (else ignored, as is
    /// any challenge beside a `pass`). One challenge buys one place: joining again with it answers
    /// `200` with the session it bought.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    pub challenge: Option<String>,
    /// Text whose SHA-256 after the challenge's starts with the room's `challengeDifficultyBits`
    /// zero bits (the waiting page counts up in decimal).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, example = "1048577")]
    pub solution: Option<String>,
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

/// A range of estimated waits (docs/api.md): `lowSeconds ≤ highSeconds`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitRangeBody {
    #[schema(example = 240)]
    pub low_seconds: u64,
    #[schema(example = 420)]
    pub high_seconds: u64,
}

impl From<WaitRange> for WaitRangeBody {
    fn from(range: WaitRange) -> Self {
        Self {
            low_seconds: range.low_seconds,
            high_seconds: range.high_seconds,
        }
    }
}

/// The session view (docs/api.md).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionBody<'a> {
    #[schema(example = "wr_AAECAwQFBgcICQoLDA0ODxAREhM")]
    pub waiting_room_session_id: String,
    #[schema(value_type = String)]
    pub room_id: &'a str,
    pub status: StatusBody,
    /// WAITING only: live WAITING sessions ahead (0 = next). `null` in the pre-queue, and in a
    /// room whose `queueingMethod` is `random` (nobody has a place: each admission is drawn
    /// among everyone waiting).
    pub position: Option<u64>,
    pub waiting_count: u64,
    /// WAITING only: a single estimate, given only when the room's turnover pins it down
    /// (see `estimatedWaitRange`); always inside `estimatedWaitRange`. `null` otherwise. In a
    /// `random` room, the expected wait: the estimate for the middle of the line (as many
    /// waiting ahead as behind).
    pub estimated_wait_seconds: Option<u64>,
    /// WAITING only: the wait lies between these bounds, whenever the room can estimate at all.
    /// `null` while no estimate is possible ("not yet": paused, before `opensAt`, or a full room
    /// that has freed too few slots lately to know how long people stay).
    pub estimated_wait_range: Option<WaitRangeBody>,
    /// WAITING in line only: the turn may come before the next heartbeat (`position` below the
    /// admissions the room expects within 1.5 `heartbeatIntervalSeconds`, from its admissions and
    /// freed slots of the last moments; no estimate needed). While `true`, read
    /// the view with `?waitSeconds=` to learn of the turn the moment it comes; the node holds
    /// such reads only for these sessions. `false` otherwise (and in the pre-queue, in a
    /// `random` room, while paused or before `opensAt`).
    pub turn_soon: bool,
    pub prequeue: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub opens_at: Option<Rfc3339Ms>,
    #[schema(value_type = String, format = DateTime)]
    pub joined_at: Rfc3339Ms,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub admitted_at: Option<Rfc3339Ms>,
    /// When the session ends without a heartbeat; `null` once EXPIRED.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Rfc3339Ms>,
    pub heartbeat_interval_seconds: u32,
    /// ACTIVE only: a signed JWT (EdDSA) for the protected service.
    pub admission_token: Option<String>,
    /// ACTIVE only.
    pub target_url: Option<String>,
    pub expired_reason: Option<ExpiredReasonBody>,
}

impl SessionBody<'_> {
    /// The JSON of this view, exactly as `serde_json` writes it, written directly: every status
    /// poll answers one of these, and `serde_json`'s generic escaping of every string was a
    /// quarter of a poll's CPU. Only `targetUrl` and the token can hold characters that need
    /// escaping, and they still go through `serde_json`. A test checks the two agree.
    pub fn to_json(&self) -> Vec<u8> {
        // Bytes are pushed directly (integers through `itoa`): `write!` and its formatting
        // machinery were a tenth of a poll's CPU in process.
        fn number(out: &mut Vec<u8>, value: u64) {
            out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        }
        fn opt_u64(out: &mut Vec<u8>, value: Option<u64>) {
            match value {
                Some(v) => number(out, v),
                None => out.extend_from_slice(b"null"),
            }
        }
        fn time(out: &mut Vec<u8>, value: Rfc3339Ms) {
            out.push(b'"');
            out.extend_from_slice(&value.to_ascii());
            out.push(b'"');
        }
        fn opt_time(out: &mut Vec<u8>, value: Option<Rfc3339Ms>) {
            match value {
                Some(t) => time(out, t),
                None => out.extend_from_slice(b"null"),
            }
        }
        fn opt_str(out: &mut Vec<u8>, value: Option<&str>) {
            match value {
                // Writing a `&str` into a Vec cannot fail.
                Some(s) => serde_json::to_writer(&mut *out, s).unwrap_or(()),
                None => out.extend_from_slice(b"null"),
            }
        }
        let mut out = Vec::with_capacity(512);
        let status: &[u8] = match self.status {
            StatusBody::Waiting => b"WAITING",
            StatusBody::Active => b"ACTIVE",
            StatusBody::Expired => b"EXPIRED",
        };
        // The session id (base64url) and the room id ([A-Za-z0-9._-]) never need escaping.
        out.extend_from_slice(b"{\"waitingRoomSessionId\":\"");
        out.extend_from_slice(self.waiting_room_session_id.as_bytes());
        out.extend_from_slice(b"\",\"roomId\":\"");
        out.extend_from_slice(self.room_id.as_bytes());
        out.extend_from_slice(b"\",\"status\":\"");
        out.extend_from_slice(status);
        out.extend_from_slice(b"\",\"position\":");
        opt_u64(&mut out, self.position);
        out.extend_from_slice(b",\"waitingCount\":");
        number(&mut out, self.waiting_count);
        out.extend_from_slice(b",\"estimatedWaitSeconds\":");
        opt_u64(&mut out, self.estimated_wait_seconds);
        match self.estimated_wait_range {
            Some(range) => {
                out.extend_from_slice(b",\"estimatedWaitRange\":{\"lowSeconds\":");
                number(&mut out, range.low_seconds);
                out.extend_from_slice(b",\"highSeconds\":");
                number(&mut out, range.high_seconds);
                out.push(b'}');
            }
            None => out.extend_from_slice(b",\"estimatedWaitRange\":null"),
        }
        out.extend_from_slice(if self.turn_soon {
            b",\"turnSoon\":true"
        } else {
            b",\"turnSoon\":false"
        });
        out.extend_from_slice(if self.prequeue {
            b",\"prequeue\":true,\"opensAt\":"
        } else {
            b",\"prequeue\":false,\"opensAt\":"
        });
        opt_time(&mut out, self.opens_at);
        out.extend_from_slice(b",\"joinedAt\":");
        time(&mut out, self.joined_at);
        out.extend_from_slice(b",\"admittedAt\":");
        opt_time(&mut out, self.admitted_at);
        out.extend_from_slice(b",\"expiresAt\":");
        opt_time(&mut out, self.expires_at);
        out.extend_from_slice(b",\"heartbeatIntervalSeconds\":");
        number(&mut out, u64::from(self.heartbeat_interval_seconds));
        out.extend_from_slice(b",\"admissionToken\":");
        opt_str(&mut out, self.admission_token.as_deref());
        out.extend_from_slice(b",\"targetUrl\":");
        opt_str(&mut out, self.target_url.as_deref());
        out.extend_from_slice(b",\"expiredReason\":");
        let reason = self.expired_reason.map(|r| match r {
            ExpiredReasonBody::Timeout => "timeout",
            ExpiredReasonBody::Left => "left",
            ExpiredReasonBody::Completed => "completed",
            ExpiredReasonBody::Evicted => "evicted",
            ExpiredReasonBody::Closed => "closed",
        });
        opt_str(&mut out, reason);
        out.push(b'}');
        out
    }
}

impl<'a> SessionBody<'a> {
    pub fn new(
        id: String,
        room_id: &'a str,
        view: SessionView,
        admission_token: Option<String>,
    ) -> Self {
        Self {
            waiting_room_session_id: id,
            room_id,
            status: view.status.into(),
            position: view.position,
            waiting_count: view.waiting_count,
            estimated_wait_seconds: view.estimated_wait_seconds,
            estimated_wait_range: view.estimated_wait_range.map(Into::into),
            turn_soon: view.turn_soon,
            prequeue: view.prequeue,
            opens_at: view.opens_at_ms.map(Rfc3339Ms),
            joined_at: Rfc3339Ms(view.joined_at_ms),
            admitted_at: view.admitted_at_ms.map(Rfc3339Ms),
            expires_at: view.expires_at_ms.map(Rfc3339Ms),
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
/// `capacity` is optional; an omitted field takes its default. `heartbeatIntervalSeconds` must
/// be smaller than both idle timeouts (`400` otherwise). Integers may be written with a zero
/// fraction (`60.0`), as JSON does not tell them apart.
///
/// The ranges below are those of `waitroom_core::limits` (a test checks the document's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoomConfigBody {
    /// 1..=1 000 000
    #[serde(deserialize_with = "integral::u32")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub capacity: u32,
    /// null or 1..=10 000 000
    #[serde(default, deserialize_with = "integral::option_u32")]
    #[schema(minimum = 1, maximum = 10000000)]
    pub admit_per_minute: Option<u32>,
    /// 1..=86 400
    #[serde(default = "default_active_idle", deserialize_with = "integral::u32")]
    #[schema(default = 60, minimum = 1, maximum = 86400)]
    pub active_idle_timeout_seconds: u32,
    /// 1..=86 400
    #[serde(default = "default_max_active", deserialize_with = "integral::u32")]
    #[schema(default = 600, minimum = 1, maximum = 86400)]
    pub max_active_seconds: u32,
    /// 1..=86 400
    #[serde(default = "default_waiting_idle", deserialize_with = "integral::u32")]
    #[schema(default = 120, minimum = 1, maximum = 86400)]
    pub waiting_idle_timeout_seconds: u32,
    /// 1..=86 400, smaller than both idle timeouts
    #[serde(default = "default_heartbeat", deserialize_with = "integral::u32")]
    #[schema(default = 10, minimum = 1, maximum = 86400)]
    pub heartbeat_interval_seconds: u32,
    /// An RFC 3339 date-time, or null. One before 1970 is taken as 1970-01-01T00:00:00.000Z,
    /// one after 9999-12-31T23:59:59.999Z as that instant; answered in UTC.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub opens_at: Option<String>,
    /// null or 1..=100 000 000
    #[serde(default, deserialize_with = "integral::option_u32")]
    #[schema(minimum = 1, maximum = 100000000)]
    pub max_waiting: Option<u32>,
    #[serde(default)]
    pub paused: bool,
    /// An absolute http(s) URL of at most 2048 bytes (ASCII: printable, no space; a host after
    /// the `//`), or null
    #[serde(default)]
    #[schema(
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[!\"$-.0-9:->@-~][!-~]*$"
    )]
    pub target_url: Option<String>,
    #[serde(default, deserialize_with = "queueing_method")]
    pub queueing_method: QueueingMethodBody,
    /// The proof of work every join must carry: that many leading zero bits of
    /// SHA-256(challenge ‖ solution), the challenge from
    /// `POST /api/waiting-room/rooms/{roomId}/challenge`. 0 (the default): none. 22 takes a
    /// browser about a second (docs/api.md, "Challenges"); each bit doubles it.
    #[serde(default, deserialize_with = "integral::u32")]
    #[schema(default = 0, minimum = 0, maximum = 28, example = 22)]
    pub challenge_difficulty_bits: u32,
    /// Scheduled events (default none): at most 24, in order of their start, none starting
    /// (its pre-queue included) before the previous one ends, names unique. While one runs, its
    /// `capacity` and `admitPerMinute` replace the room's; outside every event the room runs on
    /// its own settings. See docs/api.md, "Events".
    #[serde(default)]
    #[schema(max_items = 24)]
    pub events: Vec<EventBody>,
}

/// A scheduled event of a room (`events` in a [`RoomConfigBody`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventBody {
    /// Names the event in `stats` (`currentEvent`, `nextEvent`); unique within the room.
    #[schema(
        example = "drop-1",
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    pub name: String,
    /// When the event starts (RFC 3339, as `opensAt`; answered in UTC).
    #[schema(format = DateTime)]
    pub starts_at: String,
    /// When it ends (RFC 3339): later than `startsAt`.
    #[schema(format = DateTime)]
    pub ends_at: String,
    /// null (the room's) or 1..=1 000 000: the capacity while the event runs.
    #[serde(default, deserialize_with = "integral::option_u32")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub capacity: Option<u32>,
    /// null (the room's) or 1..=10 000 000: the admission rate while the event runs.
    #[serde(default, deserialize_with = "integral::option_u32")]
    #[schema(minimum = 1, maximum = 10000000)]
    pub admit_per_minute: Option<u32>,
    /// null (none) or 1..=1 440: for this long before `startsAt`, joins wait in a pre-queue
    /// drawn in random order at `startsAt`, as before `opensAt`.
    #[serde(default, deserialize_with = "integral::option_u32")]
    #[schema(minimum = 1, maximum = 1440)]
    pub pre_queue_minutes: Option<u32>,
}

impl EventBody {
    fn to_event(&self, n: usize) -> Result<RoomEvent, Problem> {
        let time = |field: &str, text: &str| {
            parse_rfc3339_ms(text)
                .map_err(|why| Problem::bad_request(format!("events[{n}].{field} {why}")))
        };
        Ok(RoomEvent {
            name: self.name.clone(),
            starts_at_ms: time("startsAt", &self.starts_at)?,
            ends_at_ms: time("endsAt", &self.ends_at)?,
            capacity: self.capacity,
            admit_per_minute: self.admit_per_minute,
            pre_queue_minutes: self.pre_queue_minutes,
        })
    }

    fn from_event(event: &RoomEvent) -> Self {
        Self {
            name: event.name.clone(),
            starts_at: rfc3339_ms(event.starts_at_ms),
            ends_at: rfc3339_ms(event.ends_at_ms),
            capacity: event.capacity,
            admit_per_minute: event.admit_per_minute,
            pre_queue_minutes: event.pre_queue_minutes,
        }
    }
}

/// `queueingMethod`, with an error that names the field and the four values (serde's own says
/// "unknown variant", which names neither).
fn queueing_method<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<QueueingMethodBody, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    match value.as_str() {
        Some("fifo") => Ok(QueueingMethodBody::Fifo),
        Some("random") => Ok(QueueingMethodBody::Random),
        Some("passthrough") => Ok(QueueingMethodBody::Passthrough),
        Some("reject") => Ok(QueueingMethodBody::Reject),
        Some("inviteOnly") => Ok(QueueingMethodBody::InviteOnly),
        _ => Err(serde::de::Error::custom(format!(
            "queueingMethod must be \"fifo\", \"random\", \"passthrough\", \"reject\" or \"inviteOnly\", not {value}"
        ))),
    }
}

/// How the room serves its line (default `fifo`):
/// - `fifo`: first come, first served (the pre-queue drawn at random at `opensAt`); `position`
///   counts the people ahead.
/// - `random`: whenever a slot frees, the person admitted is drawn at random among everyone
///   waiting (the same draw on every node); `position` is `null`, `estimatedWaitSeconds` the
///   expected wait.
/// - `passthrough`: everyone is admitted at once; `capacity` and `admitPerMinute` do not limit
///   (a pause and `opensAt` still do); the room still counts sessions and issues tokens.
/// - `reject`: joins are refused (`403`, type `joins-refused`); sessions already in the room
///   carry on, people already waiting are admitted first come, first served.
/// - `inviteOnly`: a join without a `pass` is refused (`403`, type `pass-required`); a join with
///   a valid pass is admitted at once (as in every room), so nobody waits; people already waiting
///   are admitted first come, first served.
///
/// A change applies at once: to `passthrough` admits everyone waiting; from `random` to `fifo`
/// keeps join order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum QueueingMethodBody {
    #[default]
    Fifo,
    Random,
    Passthrough,
    Reject,
    InviteOnly,
}

impl From<QueueingMethodBody> for QueueingMethod {
    fn from(method: QueueingMethodBody) -> Self {
        match method {
            QueueingMethodBody::Fifo => QueueingMethod::Fifo,
            QueueingMethodBody::Random => QueueingMethod::Random,
            QueueingMethodBody::Passthrough => QueueingMethod::Passthrough,
            QueueingMethodBody::Reject => QueueingMethod::Reject,
            QueueingMethodBody::InviteOnly => QueueingMethod::InviteOnly,
        }
    }
}

impl From<QueueingMethod> for QueueingMethodBody {
    fn from(method: QueueingMethod) -> Self {
        match method {
            QueueingMethod::Fifo => QueueingMethodBody::Fifo,
            QueueingMethod::Random => QueueingMethodBody::Random,
            QueueingMethod::Passthrough => QueueingMethodBody::Passthrough,
            QueueingMethod::Reject => QueueingMethodBody::Reject,
            QueueingMethod::InviteOnly => QueueingMethodBody::InviteOnly,
        }
    }
}

/// Integers of a JSON body: JSON has one kind of number, so `60.0` (or `6e1`) is the integer 60
/// as JSON Schema's `integer` says; a fraction or a value out of range is refused.
pub(crate) mod integral {
    use serde::Deserializer;
    use serde::de::{Error, Unexpected, Visitor};

    struct U32;

    impl Visitor<'_> for U32 {
        type Value = u32;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number from 0 to 4294967295")
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<u32, E> {
            if v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) {
                Ok(v as u32)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
    }

    pub(crate) fn u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
        deserializer.deserialize_u32(U32)
    }

    struct OptionU32;

    impl<'de> Visitor<'de> for OptionU32 {
        type Value = Option<u32>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("null or a whole number from 0 to 4294967295")
        }

        fn visit_none<E: Error>(self) -> Result<Option<u32>, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Option<u32>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<u32>, D::Error> {
            u32(d).map(Some)
        }
    }

    pub(super) fn option_u32<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u32>, D::Error> {
        deserializer.deserialize_option(OptionU32)
    }
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
        // A URL is ASCII (RFC 3986); the rest of the check (`http://` or `https://` in any case,
        // a host, no space or control character, at most 2048 bytes) is the state machine's.
        // Exactly the document's pattern, so that the two agree on every string.
        if self.target_url.as_ref().is_some_and(|url| !url.is_ascii()) {
            return Err(Problem::bad_request(
                "targetUrl must be an absolute http(s) URL (ASCII: percent-encode the rest) or null",
            ));
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
            queueing_method: self.queueing_method.into(),
            // Past `u8` is past the range too: the state machine's check names the field.
            challenge_difficulty_bits: u8::try_from(self.challenge_difficulty_bits)
                .unwrap_or(u8::MAX),
            events: self
                .events
                .iter()
                .enumerate()
                .map(|(n, event)| event.to_event(n))
                .collect::<Result<_, _>>()?,
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
            queueing_method: config.queueing_method.into(),
            challenge_difficulty_bits: config.challenge_difficulty_bits.into(),
            events: config.events.iter().map(EventBody::from_event).collect(),
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
    /// The estimated wait of someone joining now (0: admitted at once); `null` when no estimate
    /// is possible (paused, before opening or in an event's pre-queue, a full room with too few
    /// slots freed lately). The
    /// central estimate, whether or not `estimatedWaitRange` is narrow.
    pub newcomer_wait_seconds: Option<u64>,
    /// Passes issued for the room (`POST …/rooms/{roomId}/passes`) and neither used nor expired.
    pub passes_outstanding: u64,
    /// The name of the event running now (by the room's clock: the time of the last record it
    /// applied), or null.
    pub current_event: Option<String>,
    /// The name of the first event that has not started yet, or null.
    pub next_event: Option<String>,
    /// The capacity in force: the running event's, else the room's `capacity`.
    pub capacity_now: u32,
    /// The admission rate in force: the running event's, else the room's `admitPerMinute`.
    pub admit_per_minute_now: Option<u32>,
}

impl RoomStatsBody {
    /// The statistics of `room`, with its events.
    pub fn of(room: &Room) -> Self {
        let s: RoomStats = room.stats();
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
            newcomer_wait_seconds: s.newcomer_wait_seconds,
            passes_outstanding: s.passes_outstanding,
            current_event: room.current_event().map(|e| e.name.clone()),
            next_event: room.next_event().map(|e| e.name.clone()),
            capacity_now: room.capacity(),
            admit_per_minute_now: room.last_config().admit_per_minute_at(room.now_ms()),
        }
    }
}

/// A room: its configuration (defaults filled in) and live statistics.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomBody {
    #[schema(
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    pub room_id: String,
    pub config: RoomConfigBody,
    pub stats: RoomStatsBody,
    /// With `?digest=true`: a digest of the room's whole state on this node (hex). Nodes that
    /// applied the same log have equal digests; for checking a fleet's replicas agree.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
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
    fn hand_written_json_matches_serde() {
        use waitroom_core::{SessionId, SessionView};
        let base = SessionView {
            session: SessionId::from_u128(1),
            status: Status::Waiting,
            position: Some(1523),
            waiting_count: 48_211,
            estimated_wait_seconds: Some(310),
            estimated_wait_range: Some(waitroom_core::WaitRange {
                low_seconds: 280,
                high_seconds: 340,
            }),
            turn_soon: true,
            prequeue: false,
            opens_at_ms: None,
            joined_at_ms: 1_800_000_000_123,
            admitted_at_ms: None,
            expires_at_ms: Some(1_800_000_120_123),
            last_seen_ms: Some(1_800_000_000_123),
            heartbeat_interval_seconds: 10,
            target_url: None,
            expired_reason: None,
        };
        let views = [
            base.clone(),
            SessionView {
                position: None,
                estimated_wait_seconds: None,
                estimated_wait_range: None,
                turn_soon: false,
                prequeue: true,
                opens_at_ms: Some(1_800_000_060_000),
                ..base.clone()
            },
            SessionView {
                status: Status::Active,
                position: None,
                admitted_at_ms: Some(1_800_000_001_000),
                target_url: Some("https://tickets.example.com/select?a=\"b\"&c=\\d\u{e9}".into()),
                ..base.clone()
            },
            SessionView {
                status: Status::Expired,
                expires_at_ms: None,
                expired_reason: Some(ExpiredReason::Completed),
                ..base.clone()
            },
        ];
        for (i, view) in views.into_iter().enumerate() {
            let token = (i == 2).then(|| "eyJhbGciOiJFZERTQSJ9.e30.c2ln".to_string());
            let body = SessionBody::new(
                "wr_AAECAwQFBgcICQoLDA0ODxAREhM".into(),
                "eras-tour.2026_05-01",
                view,
                token,
            );
            assert_eq!(
                String::from_utf8(body.to_json()).unwrap(),
                serde_json::to_string(&body).unwrap()
            );
        }
    }

    #[test]
    fn fast_format_matches_jiff() {
        let jiff_format = |ms: u64| {
            jiff::Timestamp::from_millisecond(ms as i64)
                .unwrap()
                .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string()
        };
        let mut samples = vec![
            0,
            1,
            999,
            86_399_999,
            86_400_000,
            951_782_400_000,
            951_868_799_999,
        ];
        // jiff's own range ends a day before RFC 3339's.
        const JIFF_MS_MAX: u64 = 253_402_207_200_000;
        samples.extend([4_107_542_399_999, 1_800_000_000_123, JIFF_MS_MAX]);
        // Every week across eighty centuries (leap years included), at varying times of day.
        let mut ms = 0u64;
        while ms < JIFF_MS_MAX {
            samples.push(ms);
            ms += 86_400_000 * 7 + 3_599_123;
        }
        for ms in samples {
            assert_eq!(rfc3339_ms(ms), jiff_format(ms), "{ms}");
        }
        assert_eq!(rfc3339_ms(RFC3339_MS_MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
    }

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
        // Strict RFC 3339: either case of `T` and `Z`, any fraction (milliseconds kept), leap
        // seconds; before 1970 and after 9999 clamped.
        assert_eq!(
            parse_rfc3339_ms("2027-01-15t08:00:00.123456789z"),
            Ok(1_800_000_000_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2027-01-15T08:00:00.1Z"),
            Ok(1_800_000_000_100)
        );
        assert_eq!(
            parse_rfc3339_ms("2016-12-31T23:59:60Z"),
            parse_rfc3339_ms("2017-01-01T00:00:00Z")
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00-00:00"),
            Ok(951_782_400_000)
        );
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59Z"), Ok(0));
        assert_eq!(parse_rfc3339_ms("0000-01-01T00:00:00+23:59"), Ok(0));
        assert_eq!(
            parse_rfc3339_ms("9999-12-31T23:59:59.999Z"),
            Ok(RFC3339_MS_MAX)
        );
        assert_eq!(
            parse_rfc3339_ms("9999-12-31T23:59:59-23:59"),
            Ok(RFC3339_MS_MAX)
        );
        for text in [
            "",
            "2027-01-15",
            "2027-01-15T08:00Z",
            "2027-01-15T08:00:00",
            "2027-01-15 08:00:00Z",
            "2027-01-15T08:00:00+0100",
            "2027-01-15T08:00:00+01",
            "2027-01-15T08:00:00.Z",
            "2027-01-15T08:00:00Z[Europe/Paris]",
            "2027-01-15T08:00:00ZZ",
            "2027-01-15T24:00:00Z",
            "2027-01-15T08:60:00Z",
            "2027-01-15T08:00:61Z",
            "2027-01-15T08:00:00+24:00",
            "2027-01-15T08:00:00+01:60",
            "2027-02-29T08:00:00Z",
            "1900-02-29T08:00:00Z",
            "2027-13-01T08:00:00Z",
            "2027-00-01T08:00:00Z",
            "2027-04-31T08:00:00Z",
            "+2027-01-15T08:00:00Z",
            "2027-01-1xT08:00:00Z",
            "２０２７-01-15T08:00:00Z",
        ] {
            assert!(parse_rfc3339_ms(text).is_err(), "{text:?}");
        }
        // Every instant of the format round-trips, with any offset.
        for ms in [0, 1, 951_782_400_000, 1_800_000_000_123, RFC3339_MS_MAX] {
            assert_eq!(parse_rfc3339_ms(&rfc3339_ms(ms)), Ok(ms));
        }
        assert_eq!(
            parse_rfc3339_ms("2027-01-15T10:30:00.123+02:30"),
            Ok(1_800_000_000_123)
        );
    }

    #[test]
    fn integers_may_have_a_zero_fraction() {
        let body: RoomConfigBody = serde_json::from_str(
            r#"{"capacity": 200.0, "admitPerMinute": 6e1, "maxWaiting": null, "heartbeatIntervalSeconds": 10}"#,
        )
        .unwrap();
        assert_eq!(
            (body.capacity, body.admit_per_minute, body.max_waiting),
            (200, Some(60), None)
        );
        for json in [
            r#"{"capacity": 1.5}"#,
            r#"{"capacity": -1}"#,
            r#"{"capacity": 4294967296}"#,
            r#"{"capacity": "1"}"#,
            r#"{"capacity": null}"#,
            r#"{"capacity": 1, "maxWaiting": 0.5}"#,
            r#"{"capacity": 1, "maxWaiting": "1"}"#,
        ] {
            assert!(
                serde_json::from_str::<RoomConfigBody>(json).is_err(),
                "{json}"
            );
        }
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
        for url in [
            "ftp://x",
            "http://",
            "http:///x",
            "https://?q",
            "http://exa mple.com",
            "https://caf\u{e9}.example",
            "//example.com",
        ] {
            let json = serde_json::json!({ "capacity": 1, "targetUrl": url }).to_string();
            assert_eq!(bad(&json), http::StatusCode::BAD_REQUEST, "{url}");
        }
        for url in ["https://tickets.example.com/select?a=b#c", "HTTP://x"] {
            let json = serde_json::json!({ "capacity": 1, "targetUrl": url }).to_string();
            let body: RoomConfigBody = serde_json::from_str(&json).unwrap();
            assert!(body.to_config().is_ok(), "{url}");
        }
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
