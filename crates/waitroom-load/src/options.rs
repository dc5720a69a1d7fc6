//! Command-line flags ([`Args`], flattenable into another CLI) and the validated options a run
//! uses ([`LoadOptions`]). Every number carries its unit in its name and is checked against a
//! limit in `limits.rs` before anything is sent.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::LoadError;
use crate::api::RoomConfig;
use crate::limits::{
    CAPACITY_CEILING, CONNECTIONS_MAX_CEILING, DURATION_MAX_SECONDS_CEILING, INTERVAL_MS_CEILING,
    INTERVAL_MS_FLOOR, POISSON_RATE_PER_SECOND_CEILING, REQUEST_TIMEOUT_MS_CEILING,
    SECONDS_RANGE_CEILING, TRACE_RECORDS_MAX_CEILING, TRACE_RECORDS_MAX_DEFAULT, USERS_MAX,
};
use crate::time::{Clock, format_rfc3339_ms};

/// The API's bound on every `*Seconds` field of a room config.
const ROOM_SECONDS_MAX: u64 = 86_400;
/// The API's bound on `waitSeconds` (a held status read): users hold their reads this long.
pub const HELD_READ_SECONDS: u64 = 8;
/// A held read's answer may come this long after its wait (the node's catch-up, the network).
const HELD_READ_MARGIN_MS: u64 = 2_000;
/// The API's bound on `admitPerMinute`.
const ADMIT_PER_MINUTE_MAX: u64 = 10_000_000;
/// The API's bound on room ids (`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`).
const ROOM_ID_LENGTH_MAX: usize = 64;

/// Flags of `waitroom load` / `waitroom-load`. Flatten it into another clap parser with
/// `#[command(flatten)]`, then turn it into [`LoadOptions`] with [`Args::to_options`].
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Base URL of any waitroom deployment (one node or a load balancer), plain HTTP:
    /// `http://host:port`, optionally with a path prefix.
    #[arg(long, value_name = "URL")]
    pub url: String,

    /// Admin bearer token: to PUT the room config at start and to sample room stats (ACTIVE and
    /// WAITING as the server sees them) during the run. Prefer the environment variable: the
    /// command line is recorded in the report (with this value redacted).
    #[arg(
        long,
        env = "WAITROOM_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,

    /// Use the room as it is configured instead of PUTting a config at start.
    #[arg(long)]
    pub no_configure: bool,

    /// Close the room (DELETE, which ends every session in it) before configuring it, so the run
    /// starts from an empty room. Ignored with --no-configure.
    #[arg(long)]
    pub reset_room: bool,

    /// Room id.
    #[arg(long, default_value = "load-test", value_name = "ROOM_ID")]
    pub room: String,

    /// Room capacity (concurrent ACTIVE sessions) to configure. With --no-configure it is read
    /// from the server (needs --admin-token) unless given here.
    #[arg(long)]
    pub capacity: Option<u32>,

    /// Number of simulated users.
    #[arg(long, default_value_t = 1000)]
    pub users: u32,

    /// Arrival profile: `all-at-once`, `ramp:<seconds>` (evenly spread over that many seconds)
    /// or `poisson:<users-per-second>` (exponential gaps at that mean rate).
    #[arg(long, default_value = "all-at-once", value_name = "PROFILE")]
    pub arrival: ArrivalProfile,

    /// Time an admitted user holds its slot (heartbeating) before completing: `min..max`
    /// seconds, drawn uniformly per user, or a single number.
    #[arg(long, default_value = "5..30", value_name = "SECONDS_RANGE")]
    pub hold_seconds: SecondsRange,

    /// Share of users (0..1) who leave (DELETE) if still waiting after a delay drawn from
    /// --abandon-waiting-after-seconds. Those admitted before their delay do not abandon.
    #[arg(long, default_value_t = 0.0, value_name = "RATIO")]
    pub abandon_waiting_ratio: f64,

    /// Delay after joining at which a waiting-abandoner leaves: `min..max` seconds.
    #[arg(long, default_value = "1..60", value_name = "SECONDS_RANGE")]
    pub abandon_waiting_after_seconds: SecondsRange,

    /// Share of users (0..1) who, once admitted, leave (DELETE) at the end of their hold
    /// instead of calling `:complete`.
    #[arg(long, default_value_t = 0.0, value_name = "RATIO")]
    pub abandon_active_ratio: f64,

    /// Room config: how often sessions heartbeat. Users heartbeat at the interval their view
    /// reports, so with --no-configure the server's value applies.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_interval_seconds: u64,

    /// Room config: an ACTIVE session without heartbeat for this long loses its slot.
    #[arg(long, default_value_t = 60)]
    pub active_idle_timeout_seconds: u64,

    /// Room config: a WAITING session without heartbeat for this long loses its place.
    #[arg(long, default_value_t = 120)]
    pub waiting_idle_timeout_seconds: u64,

    /// Room config: longest an ACTIVE session may last.
    #[arg(long, default_value_t = 600)]
    pub max_active_seconds: u64,

    /// Room config: admission rate limit (admissions per minute); unlimited if absent.
    #[arg(long)]
    pub admit_per_minute: Option<u64>,

    /// Room config: open the room this many seconds after the start (users who join before
    /// form the pre-queue, drawn in random order). Open now if absent.
    #[arg(long)]
    pub opens_after_seconds: Option<u64>,

    /// Interval between status polls (`GET`) of a waiting user, between heartbeats, like the
    /// waiting page.
    #[arg(long, default_value_t = 2000)]
    pub poll_interval_ms: u64,

    /// Which waiting users read their status between heartbeats: `interval` (every one, every
    /// --poll-interval-ms), `front` (only those near the front of the line — next, or an
    /// estimated wait shorter than the heartbeat interval — every --poll-interval-ms, like the
    /// waiting page before held reads), `held` (those near the front, each read held by the
    /// server until the turn comes, `waitSeconds`, like the waiting page before `turnSoon`) or
    /// `turn-soon` (those whose view says `turnSoon`, each read held, like the waiting page).
    /// Outside of `interval` the others only heartbeat.
    #[arg(long, value_enum, default_value_t = Reads::Interval)]
    pub reads: Reads,

    /// Hard stop: the run ends after this long even if users are still waiting.
    #[arg(long, default_value_t = 600)]
    pub duration_max_seconds: u64,

    /// Change the room mid-run through the admin API (a PUT of the run's room config with the
    /// change, and every earlier one, applied): `SECONDS:capacity=N`, `SECONDS:pause` or
    /// `SECONDS:resume`, SECONDS after the start. Repeatable; needs --admin-token and the room
    /// configured by the run. With capacity changes, overshoot is measured against the largest
    /// capacity of the run.
    #[arg(long, value_name = "CHANGE")]
    pub reconfigure: Vec<Reconfigure>,

    /// Bound on in-flight HTTP requests, hence on pooled connections (HTTP/1.1: one request
    /// per connection). The stats sampler uses one more.
    #[arg(long, default_value_t = 256)]
    pub connections_max: u32,

    /// A request without a complete answer after this long counts as failed (`timeout`).
    #[arg(long, default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// Interval between samples of the room's stats (needs --admin-token).
    #[arg(long, default_value_t = 250)]
    pub stats_interval_ms: u64,

    /// Bound on trace records (requests and ETA samples); the run stops when it is reached.
    #[arg(long, default_value_t = TRACE_RECORDS_MAX_DEFAULT)]
    pub trace_records_max: u64,

    /// Directory for report.json, summary.txt and the SVG charts (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Seed of every random choice (arrival gaps, hold times, abandonment), for reproducible
    /// runs. Drawn from the clock if absent; always written in the report.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Exit 0 even if the capacity was overshot or a join failed.
    #[arg(long)]
    pub no_gate: bool,

    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// The protected service (e.g. seat selection), plain HTTP: once admitted, each user sends
    /// one `POST` here with `Authorization: Bearer <admissionToken>` and the JSON body
    /// `{"user": "<run id>-<user index>"}` before holding its slot. Measured as request kind
    /// `protected` (any 2xx is ok); it has its own connection pool with the same bounds.
    #[arg(long, value_name = "URL")]
    pub protected_url: Option<String>,

    /// Baseline without the waiting room (a thundering herd): each user only sends its
    /// protected request (see --protected-url, which it needs), without a token, at its arrival
    /// time. Nothing is sent to --url; the room options and the gate do not apply.
    #[arg(long)]
    pub direct: bool,

    /// Each user sends this header (e.g. `X-Forwarded-For`) on its join with an address of its
    /// own (`10.x.y.z`, from its index), as a proxy in front of the deployment would: so that a
    /// deployment trusting that header (`waitroom serve --client-ip-header`) sees one client
    /// address per user, and its per-address join limit applies to each user, not to this tool.
    #[arg(long, value_name = "HEADER")]
    pub forwarded_for: Option<String>,
}

/// Which waiting users read their status between heartbeats (`--reads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reads {
    /// Every waiting user, every `--poll-interval-ms`.
    Interval,
    /// Users near the front, every `--poll-interval-ms`.
    Front,
    /// Users near the front by the client's own judgement (the waiting page before `turnSoon`),
    /// each read held until the turn comes (`waitSeconds`).
    Held,
    /// Users whose view says `turnSoon` (the room's judgement, the waiting page now), each read
    /// held until the turn comes (`waitSeconds`).
    TurnSoon,
}

impl fmt::Display for Reads {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Interval => "interval",
            Self::Front => "front",
            Self::Held => "held",
            Self::TurnSoon => "turn-soon",
        })
    }
}

/// How users arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArrivalProfile {
    /// Every user at the start.
    AllAtOnce,
    /// User `i` of `n` arrives at `i × seconds ÷ n`.
    Ramp { seconds: f64 },
    /// Exponentially distributed gaps with mean `1 ÷ per_second`.
    Poisson { per_second: f64 },
}

impl FromStr for ArrivalProfile {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number = |value: &str, ceiling: f64| -> Result<f64, String> {
            let parsed: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("`{value}` is not a number"))?;
            if parsed.is_finite() && parsed > 0.0 && parsed <= ceiling {
                Ok(parsed)
            } else {
                Err(format!("`{value}` must be > 0 and ≤ {ceiling}"))
            }
        };
        match text.trim().split_once(':') {
            None if text.trim() == "all-at-once" => Ok(Self::AllAtOnce),
            Some(("ramp", seconds)) => Ok(Self::Ramp {
                seconds: number(seconds, SECONDS_RANGE_CEILING)?,
            }),
            Some(("poisson", rate)) => Ok(Self::Poisson {
                per_second: number(rate, POISSON_RATE_PER_SECOND_CEILING)?,
            }),
            _ => Err(format!(
                "`{text}`: expected all-at-once, ramp:<seconds> or poisson:<per-second>"
            )),
        }
    }
}

impl fmt::Display for ArrivalProfile {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AllAtOnce => write!(formatter, "all-at-once"),
            Self::Ramp { seconds } => write!(formatter, "ramp:{seconds}"),
            Self::Poisson { per_second } => write!(formatter, "poisson:{per_second}"),
        }
    }
}

impl Serialize for ArrivalProfile {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A closed range of durations, given in seconds (`5..30` or `7.5`), kept in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecondsRange {
    pub min_us: u64,
    pub max_us: u64,
}

/// One `--reconfigure`: a change to the room `at_seconds` after the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconfigure {
    pub at_seconds: u64,
    pub change: RoomChange,
}

/// What a `--reconfigure` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomChange {
    Capacity(u32),
    Paused(bool),
}

impl Reconfigure {
    /// `config` with this change applied.
    pub fn apply(&self, config: &mut RoomConfig) {
        match self.change {
            RoomChange::Capacity(capacity) => config.capacity = capacity,
            RoomChange::Paused(paused) => config.paused = paused,
        }
    }
}

impl FromStr for Reconfigure {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage =
            || format!("`{text}`: expected SECONDS:capacity=N, SECONDS:pause or SECONDS:resume");
        let (at, change) = text.split_once(':').ok_or_else(usage)?;
        let at_seconds = at.trim().parse().map_err(|_| usage())?;
        let change = match change.trim() {
            "pause" => RoomChange::Paused(true),
            "resume" => RoomChange::Paused(false),
            other => {
                let capacity = other.strip_prefix("capacity=").ok_or_else(usage)?;
                RoomChange::Capacity(capacity.trim().parse().map_err(|_| usage())?)
            }
        };
        Ok(Self { at_seconds, change })
    }
}

impl fmt::Display for Reconfigure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.change {
            RoomChange::Capacity(capacity) => write!(f, "{}:capacity={capacity}", self.at_seconds),
            RoomChange::Paused(true) => write!(f, "{}:pause", self.at_seconds),
            RoomChange::Paused(false) => write!(f, "{}:resume", self.at_seconds),
        }
    }
}

impl Serialize for Reconfigure {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl FromStr for SecondsRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let seconds = |value: &str| -> Result<u64, String> {
            let parsed: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("`{value}` is not a number of seconds"))?;
            if parsed.is_finite() && (0.0..=SECONDS_RANGE_CEILING).contains(&parsed) {
                // In range by the check above, so the cast neither truncates nor wraps.
                Ok((parsed * 1e6).round() as u64)
            } else {
                Err(format!(
                    "`{value}` must be between 0 and {SECONDS_RANGE_CEILING} seconds"
                ))
            }
        };
        let (min_us, max_us) = match text.split_once("..") {
            Some((min, max)) => (seconds(min)?, seconds(max)?),
            None => {
                let value = seconds(text)?;
                (value, value)
            }
        };
        if min_us > max_us {
            return Err(format!("`{text}`: the minimum is above the maximum"));
        }
        Ok(Self { min_us, max_us })
    }
}

impl fmt::Display for SecondsRange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let min = self.min_us as f64 / 1e6;
        let max = self.max_us as f64 / 1e6;
        if self.min_us == self.max_us {
            write!(formatter, "{min}")
        } else {
            write!(formatter, "{min}..{max}")
        }
    }
}

impl Serialize for SecondsRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The admin token. Never printed: `Debug` and `Serialize` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

impl Serialize for AdminToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

/// Validated options of one run. Build it with [`Args::to_options`] (or fill the fields and
/// call [`LoadOptions::validate`]); [`crate::run`] validates again before sending anything.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadOptions {
    /// `http://host:port[/prefix]`, no trailing slash.
    pub base_url: String,
    pub admin_token: Option<AdminToken>,
    pub room: String,
    /// PUT the room config at start.
    pub configure: bool,
    /// DELETE the room before configuring it.
    pub reset_room: bool,
    /// Capacity to configure (default 200 when configuring), or the known capacity of an
    /// existing room (read from the server when absent and an admin token is given).
    pub capacity: Option<u32>,
    pub heartbeat_interval_seconds: u64,
    pub active_idle_timeout_seconds: u64,
    pub waiting_idle_timeout_seconds: u64,
    pub max_active_seconds: u64,
    pub admit_per_minute: Option<u64>,
    pub opens_after_seconds: Option<u64>,
    pub users: u32,
    pub arrival: ArrivalProfile,
    pub hold_seconds: SecondsRange,
    pub abandon_waiting_ratio: f64,
    pub abandon_waiting_after_seconds: SecondsRange,
    pub abandon_active_ratio: f64,
    pub poll_interval_ms: u64,
    pub reads: Reads,
    pub duration_max_seconds: u64,
    /// Changes to the room during the run, in time order.
    pub reconfigure: Vec<Reconfigure>,
    pub connections_max: u32,
    pub request_timeout_ms: u64,
    pub stats_interval_ms: u64,
    pub trace_records_max: u64,
    pub seed: u64,
    /// Whether the exit code reflects the gate (overshoot, failed joins).
    pub gate: bool,
    /// A header each user's join carries with an address of its own (`--forwarded-for`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded_for: Option<String>,
}

/// The protected service a run also measures (`--protected-url`, `--direct`). Kept apart from
/// [`LoadOptions`] so that programs building those by hand are unaffected; pass it to
/// [`run_protected`](crate::run_protected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectedOptions {
    /// `http://host:port[/path]`: each user `POST`s here once (admitted, or at arrival with
    /// `direct`).
    pub url: String,
    /// Users skip the waiting room and send only their protected request, without a token.
    pub direct: bool,
}

impl ProtectedOptions {
    /// Checks the URL.
    ///
    /// # Errors
    /// [`LoadError::InvalidOptions`] if it is not a plain `http://host:port[/path]`.
    pub fn validate(&self) -> Result<(), LoadError> {
        validate_base_url("protected-url", &self.url)
    }
}

/// Capacity configured when none is given.
pub const CAPACITY_DEFAULT: u32 = 200;

impl Args {
    /// Validates the flags into options. A missing `--seed` is drawn from the clock here.
    ///
    /// # Errors
    /// [`LoadError::InvalidOptions`] naming the first flag out of range.
    pub fn to_options(&self) -> Result<LoadOptions, LoadError> {
        let seed = self.seed.unwrap_or_else(|| {
            // Not cryptographic: only needs to differ between runs; it is reported for replay.
            let now = Clock::start().start_us() as u64;
            now ^ (u64::from(std::process::id()) << 32)
        });
        let options = LoadOptions {
            base_url: self.url.trim_end_matches('/').to_string(),
            admin_token: self.admin_token.clone().map(AdminToken),
            room: self.room.clone(),
            configure: !self.no_configure && !self.direct,
            reset_room: self.reset_room && !self.no_configure && !self.direct,
            capacity: self
                .capacity
                .or((!self.no_configure || self.direct).then_some(CAPACITY_DEFAULT)),
            heartbeat_interval_seconds: self.heartbeat_interval_seconds,
            active_idle_timeout_seconds: self.active_idle_timeout_seconds,
            waiting_idle_timeout_seconds: self.waiting_idle_timeout_seconds,
            max_active_seconds: self.max_active_seconds,
            admit_per_minute: self.admit_per_minute,
            opens_after_seconds: self.opens_after_seconds,
            users: self.users,
            arrival: self.arrival,
            hold_seconds: self.hold_seconds,
            abandon_waiting_ratio: self.abandon_waiting_ratio,
            abandon_waiting_after_seconds: self.abandon_waiting_after_seconds,
            abandon_active_ratio: self.abandon_active_ratio,
            poll_interval_ms: self.poll_interval_ms,
            reads: self.reads,
            duration_max_seconds: self.duration_max_seconds,
            reconfigure: {
                let mut changes = self.reconfigure.clone();
                changes.sort_by_key(|change| change.at_seconds);
                changes
            },
            connections_max: self.connections_max,
            request_timeout_ms: self.request_timeout_ms,
            stats_interval_ms: self.stats_interval_ms,
            trace_records_max: self.trace_records_max,
            seed,
            gate: !self.no_gate && !self.direct,
            forwarded_for: self.forwarded_for.clone(),
        };
        options.validate()?;
        Ok(options)
    }
}

impl Args {
    /// The protected service of `--protected-url` / `--direct`, validated; `None` without one.
    ///
    /// # Errors
    /// [`LoadError::InvalidOptions`] for a bad URL, or `--direct` without `--protected-url`.
    pub fn protected_options(&self) -> Result<Option<ProtectedOptions>, LoadError> {
        let Some(url) = &self.protected_url else {
            return if self.direct {
                Err(invalid("--direct needs --protected-url"))
            } else {
                Ok(None)
            };
        };
        let protected = ProtectedOptions {
            url: url.trim_end_matches('/').to_string(),
            direct: self.direct,
        };
        protected.validate()?;
        Ok(Some(protected))
    }
}

fn invalid(message: impl Into<String>) -> LoadError {
    LoadError::InvalidOptions(message.into())
}

fn check_range<T: PartialOrd + fmt::Display>(
    flag: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), LoadError> {
    if value < min || value > max {
        return Err(invalid(format!(
            "--{flag} {value} is out of range {min}..={max}"
        )));
    }
    Ok(())
}

fn check_ratio(flag: &str, value: f64) -> Result<(), LoadError> {
    if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
        return Err(invalid(format!("--{flag} {value} must be between 0 and 1")));
    }
    Ok(())
}

impl LoadOptions {
    /// Checks every option against its limit and the API's ranges.
    ///
    /// # Errors
    /// [`LoadError::InvalidOptions`] naming the first offending flag.
    pub fn validate(&self) -> Result<(), LoadError> {
        validate_base_url("url", &self.base_url)?;
        validate_room_id(&self.room)?;
        if let Some(name) = &self.forwarded_for
            && http::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            return Err(invalid("--forwarded-for is not a header name"));
        }
        check_range("users", self.users, 1, USERS_MAX)?;
        if matches!(self.reads, Reads::Held | Reads::TurnSoon)
            && self.request_timeout_ms < HELD_READ_SECONDS * 1_000 + HELD_READ_MARGIN_MS
        {
            return Err(invalid(format!(
                "--reads {} holds reads {HELD_READ_SECONDS} s: --request-timeout-ms must be at least {}",
                self.reads,
                HELD_READ_SECONDS * 1_000 + HELD_READ_MARGIN_MS
            )));
        }
        if let Some(capacity) = self.capacity {
            check_range("capacity", capacity, 1, CAPACITY_CEILING)?;
        }
        if self.configure && self.capacity.is_none() {
            return Err(invalid("--capacity is needed to configure the room"));
        }
        if !self.configure && self.capacity.is_none() && self.admin_token.is_none() {
            return Err(invalid(
                "with --no-configure, give --capacity or --admin-token (to read it from the room)",
            ));
        }
        if (self.configure || self.reset_room) && self.admin_token.is_none() {
            return Err(invalid(
                "configuring the room needs --admin-token (or use --no-configure)",
            ));
        }
        for (flag, value) in [
            (
                "heartbeat-interval-seconds",
                self.heartbeat_interval_seconds,
            ),
            (
                "active-idle-timeout-seconds",
                self.active_idle_timeout_seconds,
            ),
            (
                "waiting-idle-timeout-seconds",
                self.waiting_idle_timeout_seconds,
            ),
            ("max-active-seconds", self.max_active_seconds),
        ] {
            check_range(flag, value, 1, ROOM_SECONDS_MAX)?;
        }
        if self.heartbeat_interval_seconds >= self.active_idle_timeout_seconds
            || self.heartbeat_interval_seconds >= self.waiting_idle_timeout_seconds
        {
            return Err(invalid(
                "--heartbeat-interval-seconds must be smaller than both idle timeouts",
            ));
        }
        if let Some(rate) = self.admit_per_minute {
            check_range("admit-per-minute", rate, 1, ADMIT_PER_MINUTE_MAX)?;
        }
        if let Some(seconds) = self.opens_after_seconds {
            check_range("opens-after-seconds", seconds, 1, ROOM_SECONDS_MAX)?;
        }
        for change in &self.reconfigure {
            if !self.configure || self.admin_token.is_none() {
                return Err(invalid(
                    "--reconfigure needs --admin-token and a room the run configures",
                ));
            }
            check_range(
                "reconfigure",
                change.at_seconds,
                0,
                self.duration_max_seconds,
            )?;
            if let RoomChange::Capacity(capacity) = change.change {
                check_range("reconfigure capacity", capacity, 1, CAPACITY_CEILING)?;
            }
        }
        check_ratio("abandon-waiting-ratio", self.abandon_waiting_ratio)?;
        check_ratio("abandon-active-ratio", self.abandon_active_ratio)?;
        check_range(
            "poll-interval-ms",
            self.poll_interval_ms,
            INTERVAL_MS_FLOOR,
            INTERVAL_MS_CEILING,
        )?;
        check_range(
            "stats-interval-ms",
            self.stats_interval_ms,
            INTERVAL_MS_FLOOR,
            INTERVAL_MS_CEILING,
        )?;
        check_range(
            "duration-max-seconds",
            self.duration_max_seconds,
            1,
            DURATION_MAX_SECONDS_CEILING,
        )?;
        check_range(
            "connections-max",
            self.connections_max,
            1,
            CONNECTIONS_MAX_CEILING,
        )?;
        check_range(
            "request-timeout-ms",
            self.request_timeout_ms,
            1,
            REQUEST_TIMEOUT_MS_CEILING,
        )?;
        check_range(
            "trace-records-max",
            self.trace_records_max,
            1,
            TRACE_RECORDS_MAX_CEILING,
        )?;
        Ok(())
    }

    /// The room config to PUT, with `opensAt` relative to `now_us`.
    pub fn room_config(&self, now_us: i64) -> RoomConfig {
        RoomConfig {
            capacity: self.capacity.unwrap_or(CAPACITY_DEFAULT),
            admit_per_minute: self.admit_per_minute,
            active_idle_timeout_seconds: self.active_idle_timeout_seconds,
            max_active_seconds: self.max_active_seconds,
            waiting_idle_timeout_seconds: self.waiting_idle_timeout_seconds,
            heartbeat_interval_seconds: self.heartbeat_interval_seconds,
            opens_at: self.opens_after_seconds.map(|seconds| {
                format_rfc3339_ms(now_us.saturating_add_unsigned(seconds * 1_000_000))
            }),
            max_waiting: None,
            paused: false,
            target_url: None,
        }
    }
}

fn validate_base_url(flag: &str, url: &str) -> Result<(), LoadError> {
    if url.starts_with("https://") {
        return Err(invalid(format!(
            "--{flag}: plain http:// only (run the tool next to a node or behind a TLS-terminating proxy)"
        )));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|error| invalid(format!("--{flag} {url:?}: {error}")))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(invalid(format!(
            "--{flag} {url:?}: expected http://host:port"
        )));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(invalid(format!(
            "--{flag} {url:?}: no query or fragment allowed"
        )));
    }
    Ok(())
}

fn validate_room_id(room: &str) -> Result<(), LoadError> {
    let bytes = room.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= ROOM_ID_LENGTH_MAX
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "--room {room:?}: must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}$"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(extra: &[&str]) -> Result<LoadOptions, String> {
        let mut argv = vec![
            "load",
            "--url",
            "http://127.0.0.1:8080/",
            "--admin-token",
            "t",
        ];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).map_err(|error| error.to_string())?;
        cli.args.to_options().map_err(|error| error.to_string())
    }

    #[test]
    fn defaults_are_valid() {
        let options = parse(&[]).unwrap();
        assert_eq!(options.base_url, "http://127.0.0.1:8080");
        assert_eq!(options.capacity, Some(CAPACITY_DEFAULT));
        assert_eq!(options.arrival, ArrivalProfile::AllAtOnce);
        assert_eq!(
            options.hold_seconds,
            SecondsRange {
                min_us: 5_000_000,
                max_us: 30_000_000
            }
        );
        assert!(options.configure && options.gate);
    }

    #[test]
    fn parses_arrival_profiles() {
        assert_eq!(
            "ramp:10".parse::<ArrivalProfile>(),
            Ok(ArrivalProfile::Ramp { seconds: 10.0 })
        );
        assert_eq!(
            "poisson:2500.5".parse::<ArrivalProfile>(),
            Ok(ArrivalProfile::Poisson { per_second: 2500.5 })
        );
        for bad in ["ramp", "ramp:0", "ramp:-1", "poisson:nan", "burst:3", ""] {
            assert!(bad.parse::<ArrivalProfile>().is_err(), "{bad}");
        }
        assert_eq!(
            ArrivalProfile::Ramp { seconds: 2.5 }.to_string(),
            "ramp:2.5"
        );
    }

    #[test]
    fn parses_seconds_ranges() {
        assert_eq!(
            "0.5..2".parse::<SecondsRange>(),
            Ok(SecondsRange {
                min_us: 500_000,
                max_us: 2_000_000
            })
        );
        assert_eq!(
            "3".parse::<SecondsRange>(),
            Ok(SecondsRange {
                min_us: 3_000_000,
                max_us: 3_000_000
            })
        );
        for bad in ["2..1", "-1..2", "a..b", "1..1e9", "inf"] {
            assert!(bad.parse::<SecondsRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_out_of_range_options() {
        for extra in [
            &["--users", "0"][..],
            &["--users", "1000001"],
            &["--abandon-waiting-ratio", "1.5"],
            &["--heartbeat-interval-seconds", "60"],
            &["--connections-max", "0"],
            &["--poll-interval-ms", "1"],
            &["--room", "-bad"],
            &["--capacity", "0"],
            &["--duration-max-seconds", "0"],
        ] {
            assert!(parse(extra).is_err(), "{extra:?}");
        }
        let cli = Cli::try_parse_from(["load", "--url", "https://example.com"]).unwrap();
        assert!(cli.args.to_options().is_err());
    }

    #[test]
    fn configuring_needs_the_admin_token() {
        let cli = Cli::try_parse_from(["load", "--url", "http://h:1"]).unwrap();
        let error = cli.args.to_options().unwrap_err().to_string();
        assert!(error.contains("admin-token"), "{error}");
        let cli = Cli::try_parse_from(["load", "--url", "http://h:1", "--no-configure"]).unwrap();
        assert!(cli.args.to_options().is_err());
        let cli = Cli::try_parse_from([
            "load",
            "--url",
            "http://h:1",
            "--no-configure",
            "--capacity",
            "5",
        ])
        .unwrap();
        assert_eq!(cli.args.to_options().unwrap().capacity, Some(5));
    }

    #[test]
    fn the_admin_token_never_shows() {
        let options = parse(&[]).unwrap();
        let json = serde_json::to_string(&options).unwrap();
        let debug = format!("{options:?}");
        assert!(json.contains("<redacted>") && !json.contains("\"t\""));
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn reconfigure_changes_parse_sort_and_apply() {
        let options = parse(&[
            "--reconfigure",
            "90:resume",
            "--reconfigure",
            "30:capacity=50",
            "--reconfigure",
            "60:pause",
        ])
        .unwrap();
        let at: Vec<String> = options.reconfigure.iter().map(|c| c.to_string()).collect();
        assert_eq!(at, ["30:capacity=50", "60:pause", "90:resume"]);
        let mut config = options.room_config(0);
        options.reconfigure[0].apply(&mut config);
        options.reconfigure[1].apply(&mut config);
        assert_eq!((config.capacity, config.paused), (50, true));
        // Needs a room the run configures; bad forms and capacities are refused.
        assert!(parse(&["--reconfigure", "30:pause"]).is_ok());
        assert!(parse(&["--no-configure", "--reconfigure", "30:pause"]).is_err());
        for bad in [
            "30",
            "x:pause",
            "30:capacity=0",
            "30:capacity=x",
            "30:stop",
            "9999:pause",
        ] {
            assert!(parse(&["--reconfigure", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn room_config_carries_the_flags() {
        let options = parse(&["--capacity", "7", "--opens-after-seconds", "2"]).unwrap();
        let config = options.room_config(0);
        assert_eq!(config.capacity, 7);
        assert_eq!(config.opens_at.as_deref(), Some("1970-01-01T00:00:02.000Z"));
        assert_eq!(config.heartbeat_interval_seconds, 10);
    }
}
