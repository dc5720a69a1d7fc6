//! Room configuration (the body of `PUT /api/waiting-room/rooms/{roomId}`) and its validation.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Digester;
use crate::limits::*;

/// A room's configuration. Field meanings and ranges are those of docs/api.md; times are
/// milliseconds since the Unix epoch, durations whole seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomConfig {
    /// People allowed inside the protected flow at once.
    pub capacity: u32,
    /// Admission rate limit (a token bucket, see `Room`), or none.
    pub admit_per_minute: Option<u32>,
    /// An ACTIVE session that sends no heartbeat for this long loses its slot.
    pub active_idle_timeout_seconds: u32,
    /// An ACTIVE session ends this long after admission whatever it does.
    pub max_active_seconds: u32,
    /// A WAITING session that sends no heartbeat for this long loses its place.
    pub waiting_idle_timeout_seconds: u32,
    /// How often clients are told to heartbeat; smaller than both idle timeouts.
    pub heartbeat_interval_seconds: u32,
    /// Joins before this instant form the pre-queue, drawn in random order at this instant.
    pub opens_at_ms: Option<u64>,
    /// Joins are refused (room full) while this many people wait.
    pub max_waiting: Option<u32>,
    /// While paused nobody is admitted; joins, heartbeats and expiry go on.
    pub paused: bool,
    /// Where an admitted person is sent (absolute http(s) URL).
    pub target_url: Option<String>,
    /// How the line is served (see [`QueueingMethod`]).
    ///
    /// Not in this struct's serde encoding, which is positional in records (postcard): records
    /// written before the method existed must still read, so the configuration's encoding keeps
    /// their fields, and a method other than `Fifo` travels beside it, in
    /// `Command::ConfigureRoomQueued` and `Command::ConfigureRoomFromFileQueued` (built by
    /// `Command::configure` and `Command::configure_from_file`). Decoded alone, a configuration
    /// is `Fifo`.
    #[serde(skip)]
    pub queueing_method: QueueingMethod,
    /// The proof of work a join must carry (`challengeDifficultyBits`): that many leading zero
    /// bits of a SHA-256 over a challenge the node signed and the client's solution; 0 (the
    /// default) asks for none, else 1..=`CHALLENGE_DIFFICULTY_BITS_MAX`. The node checks it (the
    /// state machine only carries it, so that every node enforces the same).
    ///
    /// Not in this struct's serde encoding either (see `queueing_method`): a room with a
    /// challenge is configured by `Command::ConfigureRoomChallenged` and
    /// `Command::ConfigureRoomFromFileChallenged`, which carry it beside the method; decoded
    /// alone, a configuration asks for none.
    #[serde(skip)]
    pub challenge_difficulty_bits: u8,
    /// Scheduled events (see [`RoomEvent`]), in order of their start, none overlapping another
    /// or another's pre-queue; at most `EVENTS_PER_ROOM_MAX`.
    ///
    /// Not in this struct's serde encoding either (see `queueing_method`): a room with events is
    /// configured by `Command::ConfigureRoomScheduled` and `Command::ConfigureRoomFromFileScheduled`,
    /// which carry them beside the method and the challenge; decoded alone, a configuration has
    /// none.
    #[serde(skip)]
    pub events: Vec<RoomEvent>,
}

/// A scheduled event of a room: from `starts_at_ms` (inclusive) to `ends_at_ms` (exclusive) of
/// log time, its own `capacity` and `admit_per_minute` (each, when `None`, the room's) replace
/// the room's; for `pre_queue_minutes` before its start, joins wait in a pre-queue that is drawn
/// at the start, like the room's own `opensAt` pre-queue. Outside every event the room runs on its
/// own settings (see `Room`, "Events").
///
/// The field order is the encoding in records (postcard): append only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomEvent {
    /// Names the event in the API and stats (`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`, unique within
    /// the room).
    pub name: String,
    pub starts_at_ms: u64,
    pub ends_at_ms: u64,
    pub capacity: Option<u32>,
    pub admit_per_minute: Option<u32>,
    /// 1..=`EVENT_PRE_QUEUE_MINUTES_MAX`, or `None` for no pre-queue (joins before the start are
    /// served on the room's own settings as they come).
    pub pre_queue_minutes: Option<u32>,
}

impl RoomEvent {
    /// An event with the room's own settings and no pre-queue.
    pub fn new(name: &str, starts_at_ms: u64, ends_at_ms: u64) -> Self {
        Self {
            name: name.into(),
            starts_at_ms,
            ends_at_ms,
            capacity: None,
            admit_per_minute: None,
            pre_queue_minutes: None,
        }
    }

    /// When its pre-queue starts collecting joins: its start, less its pre-queue (its start when
    /// it has none).
    pub fn pre_queue_from_ms(&self) -> u64 {
        let minutes = u64::from(self.pre_queue_minutes.unwrap_or(0));
        self.starts_at_ms.saturating_sub(minutes * 60_000)
    }

    /// Running at `now_ms`.
    pub fn runs_at(&self, now_ms: u64) -> bool {
        self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms
    }
}

/// How a room serves its line. Every node applies it in the state machine, so every node admits
/// the same people in the same order.
///
/// The variants' order is their index in records (postcard) and in snapshots: append only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QueueingMethod {
    /// First come, first served in log order (the pre-queue drawn at opening). Positions count
    /// the people ahead.
    #[default]
    Fifo,
    /// Whenever a slot frees, the next admitted is drawn uniformly at random among everyone
    /// waiting in the line, from the room's secret draw seed and the number of admissions so far
    /// (so every replica draws the same). Nobody has a position.
    Random,
    /// Everyone is admitted at once: `capacity` and `admitPerMinute` do not limit (a pause and
    /// `opensAt` still hold people back). The room still counts sessions and issues tokens.
    Passthrough,
    /// New joins are refused (`Rejection::JoinsRefused`); sessions already in the room carry on,
    /// and people already waiting are admitted first come, first served.
    Reject,
    /// Invite-only: a join without a pass is refused (`Rejection::PassRequired`); a join with a
    /// valid pass is admitted at once, as in every room (see `Room`, "Passes"), so nobody waits:
    /// there is no line to order. People already waiting are admitted first come, first served.
    InviteOnly,
}

impl QueueingMethod {
    /// Every method, in index order.
    pub const ALL: [QueueingMethod; 5] = [
        QueueingMethod::Fifo,
        QueueingMethod::Random,
        QueueingMethod::Passthrough,
        QueueingMethod::Reject,
        QueueingMethod::InviteOnly,
    ];

    /// The API's name (`fifo`, `random`, `passthrough`, `reject`).
    pub const fn as_str(self) -> &'static str {
        match self {
            QueueingMethod::Fifo => "fifo",
            QueueingMethod::Random => "random",
            QueueingMethod::Passthrough => "passthrough",
            QueueingMethod::Reject => "reject",
            QueueingMethod::InviteOnly => "inviteOnly",
        }
    }

    /// The index in records and snapshots.
    pub const fn index(self) -> u8 {
        self as u8
    }

    /// The method of index `index`, if any.
    pub fn from_index(index: u8) -> Option<Self> {
        Self::ALL.get(usize::from(index)).copied()
    }
}

impl fmt::Display for QueueingMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RoomConfig {
    /// The API's defaults for everything but `capacity`.
    pub fn with_capacity(capacity: u32) -> Self {
        Self {
            capacity,
            admit_per_minute: None,
            active_idle_timeout_seconds: 60,
            max_active_seconds: 600,
            waiting_idle_timeout_seconds: 120,
            heartbeat_interval_seconds: 10,
            opens_at_ms: None,
            max_waiting: None,
            paused: false,
            target_url: None,
            queueing_method: QueueingMethod::Fifo,
            challenge_difficulty_bits: 0,
            events: Vec::new(),
        }
    }

    /// The event running at `now_ms`, if any (events are sorted and do not overlap).
    pub fn event_at(&self, now_ms: u64) -> Option<&RoomEvent> {
        let started = self.events.partition_point(|e| e.starts_at_ms <= now_ms);
        let event = self.events.get(started.checked_sub(1)?)?;
        event.runs_at(now_ms).then_some(event)
    }

    /// The first event that has not started by `now_ms`, if any.
    pub fn next_event_after(&self, now_ms: u64) -> Option<&RoomEvent> {
        let started = self.events.partition_point(|e| e.starts_at_ms <= now_ms);
        self.events.get(started)
    }

    /// The first instant after `now_ms` at which an event starts or ends, if any: the settings in
    /// force change there (a node ticks a quiet room at it, so that the switch happens on time).
    pub fn next_event_boundary_after(&self, now_ms: u64) -> Option<u64> {
        self.events
            .iter()
            .flat_map(|e| [e.starts_at_ms, e.ends_at_ms])
            .find(|&at| at > now_ms)
    }

    /// The capacity in force at `now_ms`: the running event's, else the room's.
    pub fn capacity_at(&self, now_ms: u64) -> u32 {
        self.event_at(now_ms)
            .and_then(|e| e.capacity)
            .unwrap_or(self.capacity)
    }

    /// The admission rate in force at `now_ms`: the running event's, else the room's.
    pub fn admit_per_minute_at(&self, now_ms: u64) -> Option<u32> {
        self.event_at(now_ms)
            .and_then(|e| e.admit_per_minute)
            .or(self.admit_per_minute)
    }

    /// The room has opened (`opensAt` passed or unset) at `now_ms`.
    pub fn opened_at(&self, now_ms: u64) -> bool {
        self.opens_at_ms.is_none_or(|at| now_ms >= at)
    }

    /// The event whose pre-queue collects joins at `now_ms` (after its pre-queue starts, before
    /// the event does), if any.
    pub fn pre_queue_event_at(&self, now_ms: u64) -> Option<&RoomEvent> {
        self.next_event_after(now_ms)
            .filter(|e| e.pre_queue_minutes.is_some() && e.pre_queue_from_ms() <= now_ms)
    }

    /// Joins at `now_ms` go to the pre-queue: before `opensAt`, or in an event's pre-queue.
    /// When that ends, the pre-queue is drawn.
    pub fn pre_queue_collects_at(&self, now_ms: u64) -> bool {
        !self.opened_at(now_ms) || self.pre_queue_event_at(now_ms).is_some()
    }

    /// When the pre-queue collecting at `now_ms` is drawn (the later of `opensAt` and the start
    /// of the event whose pre-queue it is), or `None` if none collects.
    pub fn pre_queue_draw_at(&self, now_ms: u64) -> Option<u64> {
        let opens = self.opens_at_ms.filter(|&at| now_ms < at);
        let event = self.pre_queue_event_at(now_ms).map(|e| e.starts_at_ms);
        match (opens, event) {
            (None, None) => None,
            (a, b) => a.max(b),
        }
    }

    /// A digest of every setting, the same on every platform and build: a node compares it with
    /// the one a room remembers to tell whether a rooms-file entry changed since it was applied
    /// (`Command::ConfigureRoomFromFile`). Pinned in a test: a change would make every node apply
    /// every file entry once more, over changes made through the API. So the queueing method is
    /// hashed only when it is not `Fifo` (a `Fifo` configuration's digest is what it was before
    /// methods existed), and the challenge's difficulty only when it is not 0.
    pub fn digest(&self) -> [u8; 16] {
        let mut d = Digester::default();
        d.bytes(b"waitroom room configuration")
            .u64(self.capacity.into())
            .option_u64(self.admit_per_minute.map(u64::from))
            .u64(self.active_idle_timeout_seconds.into())
            .u64(self.max_active_seconds.into())
            .u64(self.waiting_idle_timeout_seconds.into())
            .u64(self.heartbeat_interval_seconds.into())
            .option_u64(self.opens_at_ms)
            .option_u64(self.max_waiting.map(u64::from))
            .u64(self.paused.into());
        match &self.target_url {
            Some(url) => d.u64(1).bytes(url.as_bytes()),
            None => d.u64(0),
        };
        if self.queueing_method != QueueingMethod::Fifo {
            d.u64(u64::from(self.queueing_method.index()));
        }
        if self.challenge_difficulty_bits != 0 {
            // A tag no method index reaches, so a method and a difficulty never hash alike.
            d.u64(1 << 32)
                .u64(u64::from(self.challenge_difficulty_bits));
        }
        // Only when there are events, so a configuration without any keeps its digest.
        if !self.events.is_empty() {
            d.u64(2 << 32).u64(self.events.len() as u64);
            for event in &self.events {
                event.digest_into(&mut d);
            }
        }
        d.finish()
    }

    /// Checks every range of the contract. Nothing is applied unless this passes.
    ///
    /// # Errors
    /// The first setting out of range, with the reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let in_range = |v: u32, max: u32| (1..=max).contains(&v);
        if !in_range(self.capacity, CAPACITY_MAX) {
            return Err(ConfigError::new(
                "capacity",
                format!("must be 1..={CAPACITY_MAX}"),
            ));
        }
        if let Some(rate) = self.admit_per_minute
            && !in_range(rate, ADMIT_PER_MINUTE_MAX)
        {
            return Err(ConfigError::new(
                "admitPerMinute",
                format!("must be null or 1..={ADMIT_PER_MINUTE_MAX}"),
            ));
        }
        for (field, value) in [
            ("activeIdleTimeoutSeconds", self.active_idle_timeout_seconds),
            ("maxActiveSeconds", self.max_active_seconds),
            (
                "waitingIdleTimeoutSeconds",
                self.waiting_idle_timeout_seconds,
            ),
            ("heartbeatIntervalSeconds", self.heartbeat_interval_seconds),
        ] {
            if !in_range(value, SETTING_SECONDS_MAX) {
                return Err(ConfigError::new(
                    field,
                    format!("must be 1..={SETTING_SECONDS_MAX}"),
                ));
            }
        }
        if self.heartbeat_interval_seconds >= self.active_idle_timeout_seconds
            || self.heartbeat_interval_seconds >= self.waiting_idle_timeout_seconds
        {
            return Err(ConfigError::new(
                "heartbeatIntervalSeconds",
                "must be smaller than activeIdleTimeoutSeconds and waitingIdleTimeoutSeconds"
                    .into(),
            ));
        }
        if let Some(max) = self.max_waiting
            && !in_range(max, MAX_WAITING_MAX)
        {
            return Err(ConfigError::new(
                "maxWaiting",
                format!("must be null or 1..={MAX_WAITING_MAX}"),
            ));
        }
        if let Some(at) = self.opens_at_ms
            && at > OPENS_AT_MS_MAX
        {
            return Err(ConfigError::new(
                "opensAt",
                "must be a date before year 10000".into(),
            ));
        }
        if let Some(url) = &self.target_url {
            check_target_url(url)?;
        }
        if self.challenge_difficulty_bits > CHALLENGE_DIFFICULTY_BITS_MAX {
            return Err(ConfigError::new(
                "challengeDifficultyBits",
                format!("must be 0 (no challenge) or 1..={CHALLENGE_DIFFICULTY_BITS_MAX}"),
            ));
        }
        self.validate_events()
    }

    /// The events' part of `validate`: each in range, in order of their start, none starting
    /// (pre-queue included) before the previous one ends, names unique.
    fn validate_events(&self) -> Result<(), ConfigError> {
        if self.events.len() > EVENTS_PER_ROOM_MAX {
            return Err(ConfigError::new(
                "events",
                format!("must hold at most {EVENTS_PER_ROOM_MAX} events"),
            ));
        }
        let mut previous: Option<&RoomEvent> = None;
        for (n, event) in self.events.iter().enumerate() {
            let field = |name: &str| format!("events[{n}].{name}");
            let error = |name: &str, reason: String| {
                Err(ConfigError {
                    field: field(name),
                    reason,
                })
            };
            if !is_event_name(&event.name) {
                return error(
                    "name",
                    "must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$".into(),
                );
            }
            if self.events[..n].iter().any(|e| e.name == event.name) {
                return error("name", "must be unique within the room".into());
            }
            if event.ends_at_ms > OPENS_AT_MS_MAX {
                return error("endsAt", "must be a date before year 10000".into());
            }
            if event.ends_at_ms <= event.starts_at_ms {
                return error("endsAt", "must be later than startsAt".into());
            }
            if let Some(capacity) = event.capacity
                && !(1..=CAPACITY_MAX).contains(&capacity)
            {
                return error("capacity", format!("must be null or 1..={CAPACITY_MAX}"));
            }
            if let Some(rate) = event.admit_per_minute
                && !(1..=ADMIT_PER_MINUTE_MAX).contains(&rate)
            {
                return error(
                    "admitPerMinute",
                    format!("must be null or 1..={ADMIT_PER_MINUTE_MAX}"),
                );
            }
            if let Some(minutes) = event.pre_queue_minutes
                && !(1..=EVENT_PRE_QUEUE_MINUTES_MAX).contains(&minutes)
            {
                return error(
                    "preQueueMinutes",
                    format!("must be null or 1..={EVENT_PRE_QUEUE_MINUTES_MAX}"),
                );
            }
            if let Some(previous) = previous {
                if event.starts_at_ms < previous.ends_at_ms {
                    return error(
                        "startsAt",
                        "must not be before the previous event ends (events are in order of their start and do not overlap)".into(),
                    );
                }
                if event.pre_queue_from_ms() < previous.ends_at_ms {
                    return error(
                        "preQueueMinutes",
                        "must not start the pre-queue before the previous event ends".into(),
                    );
                }
            }
            previous = Some(event);
        }
        Ok(())
    }
}

impl RoomEvent {
    pub(crate) fn digest_into(&self, d: &mut Digester) {
        d.bytes(self.name.as_bytes())
            .u64(self.starts_at_ms)
            .u64(self.ends_at_ms)
            .option_u64(self.capacity.map(u64::from))
            .option_u64(self.admit_per_minute.map(u64::from))
            .option_u64(self.pre_queue_minutes.map(u64::from));
    }
}

/// An event name: like a room id (`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`).
fn is_event_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=EVENT_NAME_BYTES_MAX).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An absolute `http://` or `https://` URL with a host, no whitespace or control characters.
/// (The HTTP layer parses it fully; this is the state machine's own guard.)
fn check_target_url(url: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| Err(ConfigError::new("targetUrl", why.into()));
    if url.len() > TARGET_URL_BYTES_MAX {
        return bad("must be at most 2048 bytes");
    }
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return bad("must not contain spaces or control characters");
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with(['/', '?', '#']) => Ok(()),
        _ => bad("must be an absolute http(s) URL or null"),
    }
}

/// A setting out of range: which one (the API's camelCase name) and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    fn new(field: &str, reason: String) -> Self {
        Self {
            field: field.into(),
            reason,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every setting changes the digest, and the digest is pinned (see `RoomConfig::digest`).
    #[test]
    fn digest_covers_every_setting_and_is_pinned() {
        let base = RoomConfig {
            target_url: Some("https://tickets.example.com/select".into()),
            ..RoomConfig::with_capacity(200)
        };
        let changed = [
            RoomConfig {
                capacity: 201,
                ..base.clone()
            },
            RoomConfig {
                admit_per_minute: Some(60),
                ..base.clone()
            },
            RoomConfig {
                active_idle_timeout_seconds: 61,
                ..base.clone()
            },
            RoomConfig {
                max_active_seconds: 601,
                ..base.clone()
            },
            RoomConfig {
                waiting_idle_timeout_seconds: 121,
                ..base.clone()
            },
            RoomConfig {
                heartbeat_interval_seconds: 11,
                ..base.clone()
            },
            RoomConfig {
                opens_at_ms: Some(1_800_000_000_000),
                ..base.clone()
            },
            RoomConfig {
                max_waiting: Some(1_000),
                ..base.clone()
            },
            RoomConfig {
                paused: true,
                ..base.clone()
            },
            RoomConfig {
                target_url: None,
                ..base.clone()
            },
            RoomConfig {
                target_url: Some("https://tickets.example.com/other".into()),
                ..base.clone()
            },
            RoomConfig {
                queueing_method: QueueingMethod::Random,
                ..base.clone()
            },
            RoomConfig {
                queueing_method: QueueingMethod::Passthrough,
                ..base.clone()
            },
            RoomConfig {
                queueing_method: QueueingMethod::Reject,
                ..base.clone()
            },
            RoomConfig {
                challenge_difficulty_bits: 1,
                ..base.clone()
            },
            RoomConfig {
                challenge_difficulty_bits: 20,
                ..base.clone()
            },
            RoomConfig {
                events: vec![RoomEvent::new("a", 1, 2)],
                ..base.clone()
            },
            RoomConfig {
                events: vec![RoomEvent::new("b", 1, 2)],
                ..base.clone()
            },
            RoomConfig {
                events: vec![RoomEvent {
                    capacity: Some(3),
                    ..RoomEvent::new("a", 1, 2)
                }],
                ..base.clone()
            },
            RoomConfig {
                events: vec![RoomEvent {
                    pre_queue_minutes: Some(3),
                    ..RoomEvent::new("a", 1, 2)
                }],
                ..base.clone()
            },
        ];
        let mut digests: Vec<[u8; 16]> = changed.iter().map(RoomConfig::digest).collect();
        digests.push(base.digest());
        digests.sort_unstable();
        digests.dedup();
        assert_eq!(digests.len(), changed.len() + 1, "two settings collide");
        assert_eq!(base.digest(), base.clone().digest());
        assert_eq!(base.digest(), PINNED_DIGEST);
    }

    const PINNED_DIGEST: [u8; 16] = [
        142, 9, 123, 191, 9, 24, 29, 186, 215, 236, 155, 58, 254, 199, 59, 11,
    ];

    /// A configuration's own encoding is the one records written before queueing methods carry
    /// (see `RoomConfig::queueing_method`): the method is not in it, and decodes as `Fifo`.
    #[test]
    fn the_encoding_leaves_the_method_out() {
        let fifo = RoomConfig::with_capacity(5);
        let random = RoomConfig {
            queueing_method: QueueingMethod::Random,
            challenge_difficulty_bits: 20,
            events: vec![RoomEvent::new("e", 1, 2)],
            ..fifo.clone()
        };
        let bytes = postcard::to_allocvec(&random).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&fifo).unwrap());
        assert_eq!(bytes, [5, 0, 60, 0xd8, 0x04, 120, 10, 0, 0, 0, 0]);
        assert_eq!(postcard::from_bytes::<RoomConfig>(&bytes), Ok(fifo));
        for (i, method) in QueueingMethod::ALL.into_iter().enumerate() {
            assert_eq!(method.index() as usize, i);
            assert_eq!(QueueingMethod::from_index(i as u8), Some(method));
            assert_eq!(postcard::to_allocvec(&method).unwrap(), [i as u8]);
        }
        assert_eq!(QueueingMethod::from_index(5), None);
    }

    /// The running event, the next one, the settings in force and the pre-queue, at every
    /// boundary.
    #[test]
    fn events_at_every_instant() {
        let config = RoomConfig {
            admit_per_minute: Some(10),
            events: vec![
                RoomEvent {
                    capacity: Some(7),
                    ..RoomEvent::new("a", 100, 200)
                },
                RoomEvent {
                    admit_per_minute: Some(99),
                    pre_queue_minutes: Some(1),
                    ..RoomEvent::new("b", 200 + 60_000, 300_000)
                },
            ],
            ..RoomConfig::with_capacity(2)
        };
        assert_eq!(config.validate(), Ok(()));
        let name = |e: Option<&RoomEvent>| e.map(|e| e.name.clone());
        for (at, running, next, capacity, rate, collects, boundary) in [
            (0, None, Some("a"), 2, Some(10), false, Some(100)),
            (99, None, Some("a"), 2, Some(10), false, Some(100)),
            (100, Some("a"), Some("b"), 7, Some(10), false, Some(200)),
            (199, Some("a"), Some("b"), 7, Some(10), false, Some(200)),
            (200, None, Some("b"), 2, Some(10), true, Some(60_200)),
            (60_199, None, Some("b"), 2, Some(10), true, Some(60_200)),
            (60_200, Some("b"), None, 2, Some(99), false, Some(300_000)),
            (300_000, None, None, 2, Some(10), false, None),
        ] {
            assert_eq!(name(config.event_at(at)), running.map(String::from), "{at}");
            assert_eq!(
                name(config.next_event_after(at)),
                next.map(String::from),
                "{at}"
            );
            assert_eq!(config.capacity_at(at), capacity, "{at}");
            assert_eq!(config.admit_per_minute_at(at), rate, "{at}");
            assert_eq!(config.pre_queue_collects_at(at), collects, "{at}");
            assert_eq!(config.next_event_boundary_after(at), boundary, "{at}");
        }
        assert_eq!(config.pre_queue_draw_at(200), Some(60_200));
        assert_eq!(config.pre_queue_draw_at(100), None);
        // Before `opensAt`, the later of the two draws.
        let closed = RoomConfig {
            opens_at_ms: Some(70_000),
            ..config.clone()
        };
        assert!(closed.pre_queue_collects_at(100));
        assert_eq!(closed.pre_queue_draw_at(100), Some(70_000));
        assert_eq!(closed.pre_queue_draw_at(200), Some(70_000));
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(RoomConfig::with_capacity(1).validate(), Ok(()));
        assert_eq!(RoomConfig::with_capacity(CAPACITY_MAX).validate(), Ok(()));
    }

    #[test]
    fn ranges() {
        let field = |c: RoomConfig| c.validate().unwrap_err().field;
        let base = RoomConfig::with_capacity(10);
        assert_eq!(
            field(RoomConfig {
                capacity: 0,
                ..base.clone()
            }),
            "capacity"
        );
        assert_eq!(
            field(RoomConfig {
                capacity: CAPACITY_MAX + 1,
                ..base.clone()
            }),
            "capacity"
        );
        assert_eq!(
            field(RoomConfig {
                admit_per_minute: Some(0),
                ..base.clone()
            }),
            "admitPerMinute"
        );
        assert_eq!(
            field(RoomConfig {
                max_active_seconds: 86_401,
                ..base.clone()
            }),
            "maxActiveSeconds"
        );
        assert_eq!(
            field(RoomConfig {
                heartbeat_interval_seconds: 60,
                ..base.clone()
            }),
            "heartbeatIntervalSeconds"
        );
        assert_eq!(
            field(RoomConfig {
                waiting_idle_timeout_seconds: 5,
                heartbeat_interval_seconds: 5,
                ..base.clone()
            }),
            "heartbeatIntervalSeconds"
        );
        assert_eq!(
            field(RoomConfig {
                max_waiting: Some(0),
                ..base.clone()
            }),
            "maxWaiting"
        );
        assert_eq!(
            field(RoomConfig {
                challenge_difficulty_bits: CHALLENGE_DIFFICULTY_BITS_MAX + 1,
                ..base.clone()
            }),
            "challengeDifficultyBits"
        );
        for bits in [0, 1, CHALLENGE_DIFFICULTY_BITS_MAX] {
            let config = RoomConfig {
                challenge_difficulty_bits: bits,
                ..base.clone()
            };
            assert_eq!(config.validate(), Ok(()), "{bits}");
        }
        assert_eq!(
            field(RoomConfig {
                opens_at_ms: Some(OPENS_AT_MS_MAX + 1),
                ..base.clone()
            }),
            "opensAt"
        );
        for url in [
            "ftp://x",
            "/relative",
            "https://",
            "https:///path",
            "https://a b",
            "x",
        ] {
            assert_eq!(
                field(RoomConfig {
                    target_url: Some(url.into()),
                    ..base.clone()
                }),
                "targetUrl",
                "{url}"
            );
        }
        for url in [
            "https://tickets.example.com/select?x=1",
            "HTTP://localhost:8080",
        ] {
            let config = RoomConfig {
                target_url: Some(url.into()),
                ..base.clone()
            };
            assert_eq!(config.validate(), Ok(()), "{url}");
        }
    }
}
