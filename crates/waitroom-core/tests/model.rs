//! Model test: random command sequences are applied to the real state machine (two replicas) and
//! to a deliberately naive reference model (plain vectors, linear scans, no clever structures).
//! After every step the views of every session and the room stats must match the model, and the
//! invariants below (docs/architecture.md lists them too) must hold on the real state machine:
//!
//! 1. `active ≤ capacity` (after a capacity decrease: no admission until it holds again);
//! 2. nobody is admitted while a live session ahead of them waits;
//! 3. no idle slot: a free slot, an open unpaused room, a token and a waiting session never
//!    coexist after a step;
//! 4. one state per session, and the counts equal the sums over sessions;
//! 5. a live WAITING session's position never increases once it has one;
//! 6. determinism: a second replica fed the same records (with some delivered twice) has the
//!    same digest; and the digest changes whenever anything observable changes;
//! 7. snapshots are exact: now and then the second replica is replaced by a room restored from
//!    its own snapshot, which must have the same digest, stats and views at once, re-encode to
//!    the same bytes, and go on exactly like the first replica. After every step both replicas'
//!    snapshots are byte-identical, so they agree on slot indices and the free-slot order too
//!    (which decide future behaviour without showing in views or digests); and a copy of the
//!    room through a `SnapshotSpare` (kept from step to step, as a node keeps it) encodes to
//!    the same bytes.
//!
//! Configurations come through `ConfigureRoom` (the API) and `ConfigureRoomFromFile` (a rooms
//! file, with digests from a small set so that the same entry arrives again, after other
//! changes): the model remembers the entry last applied and skips an entry equal to it. Most
//! carry a secret draw seed (`ConfigureRoomSeeded`, `ConfigureRoomFromFileSeeded`, as nodes write
//! them), some none (as earlier builds wrote them): the model keeps the seed the rules say (a new
//! one only while nobody waits in the pre-queue, or if the room has none) and draws with it, or
//! with the public `legacy_draw_seed` when there is none.
//!
//! Challenges are in the mix too (`ConfigureRoomChallenged`, `ConfigureRoomFromFileChallenged`,
//! difficulties in range and past it): the state machine only carries the difficulty, so every
//! invariant holds as before, and the room's configuration (the difficulty included) is the
//! model's after every step.
//!
//! Every queueing method is generated (`ConfigureRoomQueued`, `ConfigureRoomFromFileQueued`, as
//! nodes write them for rooms that are not `fifo`), and configurations change it on a live room.
//! The invariants hold for every method, except what a method changes on purpose: a
//! `passthrough` room is not bounded by its capacity (1), a `random` room admits whoever its
//! draw picks (2, in a step where the room was `random` before or after) and gives no positions
//! (4, 5). The model draws a `random` room's admissions with the public `admission_draw` and the
//! room's seed, so the real room must admit exactly the sessions the model does, on both
//! replicas.
//!
//! Passes are in the mix (`IssuePasses` from a small set of hashes, some out of range;
//! `JoinWithPass` with held, used, expired and never-issued passes; the `inviteOnly` method):
//! a join with a held pass is admitted at once, so it is exempt from 1 (one more than capacity
//! allows, and nobody else admitted in that step) and from 2 (it never waited: it has no place
//! in the line); every other invariant holds as it is.
//!
//! Scheduled events are in the mix (`ConfigureRoomScheduled`, `ConfigureRoomFromFileScheduled`,
//! as nodes write them for rooms with events): up to three events around the room's clock, each
//! with or without its own capacity, rate and pre-queue, some invalid (a pre-queue that opens
//! before the previous event ends). The model finds the running event and the collecting
//! pre-queue by linear scans, switches capacity and rate at the boundaries (which are among the
//! instants steps jump to), and draws each pre-queue with `event_draw_seed`; the real room must
//! admit exactly whom the model does. Invariants 1 and 3 use the capacity in force (an event's
//! end lowers it like a reconfiguration), which must be the model's.
//!
//! Failing cases shrink and are saved under `proptest-regressions/` (commit them).
//! `PROPTEST_CASES` sets the number of cases (default 3 000, which CI runs).

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::Config;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use waitroom_core::limits::{
    CHALLENGE_DIFFICULTY_BITS_MAX, ETA_FREES_MIN, ETA_POINT_SPREAD_MS_MAX,
    ETA_POINT_SPREAD_PERCENT_MAX, ETA_RANGE_SIGMAS, ETA_SETTLE_HOLDS, ETA_WINDOW_MS,
    PASS_LIFETIME_MS_MAX, PASSES_PER_RECORD_MAX, PASSES_PER_ROOM_MAX, RATE_BUCKET_MS,
    RECORD_DEDUP_WINDOW_MS, SESSION_RETENTION_MS, TURN_SOON_HORIZON_PERCENT, TURN_SOON_SPAN_MS_MIN,
};
use waitroom_core::*;

const T0: u64 = 1_800_000_000_000;

fn room_id() -> RoomId {
    RoomId::new("model-room").unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MState {
    Pre,
    Waiting,
    Active,
    Ended(ExpiredReason),
}

#[derive(Clone, Debug)]
struct MSession {
    id: SessionId,
    state: MState,
    joined: u64,
    seen: u64,
    admitted: Option<u64>,
    key: Option<IdempotencyKey>,
    /// Order of entering the line (join after opening, or the draw); used by invariant 2.
    line_seq: Option<u64>,
}

#[derive(Clone, Debug)]
struct MBucket {
    apm: u64,
    units: u64,
    last: u64,
}

impl MBucket {
    fn cap(&self) -> u64 {
        self.apm.div_ceil(60).max(1) * 60_000
    }
}

/// The reference model: everything by brute force.
#[derive(Clone, Debug)]
struct Model {
    now: u64,
    exists: bool,
    config: RoomConfig,
    created_at: u64,
    sessions: Vec<MSession>,
    /// Every session id ever created, to check that forgotten ones are gone.
    all_ids: Vec<SessionId>,
    line: Vec<SessionId>,
    prequeue: Vec<SessionId>,
    recent: Vec<(u64, RecordId)>,
    bucket: Option<MBucket>,
    admissions: Vec<u64>,
    freed: Vec<u64>,
    admitted_total: u64,
    expired_total: [u64; 5],
    next_line_seq: u64,
    /// The rooms-file entry last applied (`ConfigureRoomFromFile`).
    file_digest: Option<[u8; 16]>,
    /// The secret seed of the pre-queue draw.
    draw_seed: Option<DrawSeed>,
    /// Outstanding passes: hash and expiry.
    passes: Vec<(PassHash, u64)>,
    /// Every record applied, with its timestamp.
    history: Vec<(Record, u64)>,
    next_id: u128,
}

impl Model {
    fn new() -> Self {
        Self {
            now: 0,
            exists: false,
            config: RoomConfig::with_capacity(1),
            created_at: 0,
            sessions: vec![],
            all_ids: vec![],
            line: vec![],
            prequeue: vec![],
            recent: vec![],
            bucket: None,
            admissions: vec![],
            freed: vec![],
            admitted_total: 0,
            expired_total: [0; 5],
            next_line_seq: 0,
            file_digest: None,
            draw_seed: None,
            passes: vec![],
            history: vec![],
            next_id: 1,
        }
    }

    fn find(&self, id: &SessionId) -> Option<usize> {
        self.sessions.iter().position(|s| s.id == *id)
    }

    fn open(&self) -> bool {
        self.config.opens_at_ms.is_none_or(|at| self.now >= at)
    }

    /// The event running now, by a linear scan.
    fn event(&self) -> Option<&RoomEvent> {
        self.config
            .events
            .iter()
            .find(|e| e.starts_at_ms <= self.now && self.now < e.ends_at_ms)
    }

    /// The start of the event whose pre-queue collects now, by a linear scan.
    fn pre_queue_event_start(&self) -> Option<u64> {
        self.config
            .events
            .iter()
            .find(|e| {
                e.pre_queue_minutes.is_some_and(|m| {
                    e.starts_at_ms.saturating_sub(u64::from(m) * 60_000) <= self.now
                        && self.now < e.starts_at_ms
                })
            })
            .map(|e| e.starts_at_ms)
    }

    /// Joins go to the pre-queue: before opening, or in an event's pre-queue.
    fn collecting(&self) -> bool {
        !self.open() || self.pre_queue_event_start().is_some()
    }

    fn capacity(&self) -> u64 {
        u64::from(
            self.event()
                .and_then(|e| e.capacity)
                .unwrap_or(self.config.capacity),
        )
    }

    fn rate(&self) -> Option<u32> {
        self.event()
            .and_then(|e| e.admit_per_minute)
            .or(self.config.admit_per_minute)
    }

    /// The bucket at the rate in force (`always`: set it even if unchanged, as a configuration
    /// does).
    fn set_bucket_rate(&mut self, always: bool) {
        let now = self.now;
        self.bucket = match (self.rate(), self.bucket.take()) {
            (None, _) => None,
            (Some(apm), Some(mut b)) => {
                if always || b.apm != u64::from(apm) {
                    b.apm = apm.into();
                    b.units = b.units.min(b.cap());
                }
                Some(b)
            }
            (Some(apm), None) => {
                let mut b = MBucket {
                    apm: apm.into(),
                    units: 0,
                    last: now,
                };
                b.units = b.cap();
                Some(b)
            }
        };
    }

    fn active(&self) -> u64 {
        self.sessions
            .iter()
            .filter(|s| s.state == MState::Active)
            .count() as u64
    }

    fn end(&mut self, i: usize, reason: ExpiredReason) {
        let id = self.sessions[i].id;
        if self.sessions[i].state == MState::Active && reason != ExpiredReason::Closed {
            self.freed.push(self.now);
        }
        self.line.retain(|s| *s != id);
        self.prequeue.retain(|s| *s != id);
        self.sessions[i].state = MState::Ended(reason);
        self.sessions[i].seen = self.now;
        self.expired_total[reason as usize] += 1;
        if reason == ExpiredReason::Closed {
            self.sessions[i].key = None;
        }
    }

    fn expire(&mut self) {
        let (w, a, m) = (
            u64::from(self.config.waiting_idle_timeout_seconds) * 1000,
            u64::from(self.config.active_idle_timeout_seconds) * 1000,
            u64::from(self.config.max_active_seconds) * 1000,
        );
        for i in 0..self.sessions.len() {
            let s = &self.sessions[i];
            let deadline = match s.state {
                MState::Pre | MState::Waiting => s.seen + w,
                MState::Active => (s.seen + a).min(s.admitted.unwrap() + m),
                MState::Ended(_) => continue,
            };
            if deadline <= self.now {
                self.end(i, ExpiredReason::Timeout);
            }
        }
    }

    fn draw(&mut self) {
        if self.collecting() || self.prequeue.is_empty() {
            return;
        }
        let seed = if self.config.events.is_empty() {
            self.seed_bits()
        } else {
            event_draw_seed(self.seed_bits(), self.now)
        };
        let mut drawn = std::mem::take(&mut self.prequeue);
        drawn.sort_by_key(|id| (draw_ticket(seed, &id.0), *id));
        for id in drawn {
            let i = self.find(&id).unwrap();
            self.sessions[i].state = MState::Waiting;
            self.sessions[i].line_seq = Some(self.next_line_seq);
            self.next_line_seq += 1;
            self.line.push(id);
        }
    }

    fn advance(&mut self, ts: u64) {
        self.now = self.now.max(ts);
        if self.exists {
            self.expire();
            if let Some(b) = &mut self.bucket {
                let cap = b.cap();
                b.units = (b.units + (self.now - b.last) * b.apm).min(cap);
                b.last = self.now;
            }
            self.set_bucket_rate(false);
            self.draw();
            self.admit();
        }
        let now = self.now;
        self.sessions.retain(|s| {
            !matches!(s.state, MState::Ended(_)) || s.seen + SESSION_RETENTION_MS > now
        });
        self.recent
            .retain(|(at, _)| at + RECORD_DEDUP_WINDOW_MS > now);
        self.passes.retain(|&(_, at)| at > now);
    }

    fn seed_bits(&self) -> u64 {
        match self.draw_seed {
            Some(seed) => seed.to_u64(),
            None => legacy_draw_seed("model-room", self.config.opens_at_ms.unwrap_or(self.now)),
        }
    }

    fn admit(&mut self) {
        if !self.exists || self.config.paused || !self.open() {
            return;
        }
        let method = self.config.queueing_method;
        while !self.line.is_empty() {
            if method != QueueingMethod::Passthrough {
                if self.active() >= self.capacity() {
                    break;
                }
                if let Some(b) = &mut self.bucket {
                    if b.units < 60_000 {
                        break;
                    }
                    b.units -= 60_000;
                }
            }
            let k = if method == QueueingMethod::Random {
                admission_draw(
                    self.seed_bits(),
                    self.admitted_total,
                    self.line.len() as u32,
                )
            } else {
                0
            };
            let id = self.line.remove(k as usize);
            let i = self.find(&id).unwrap();
            let s = &mut self.sessions[i];
            s.state = MState::Active;
            s.admitted = Some(self.now);
            s.seen = self.now;
            self.admitted_total += 1;
            self.admissions.push(self.now);
        }
    }

    /// Every instant at which something becomes due: expiries, forgetting, the opening, the
    /// next token.
    fn deadlines(&self) -> Vec<u64> {
        let c = &self.config;
        let mut due: Vec<u64> = self
            .sessions
            .iter()
            .flat_map(|s| match s.state {
                MState::Pre | MState::Waiting => {
                    vec![s.seen + u64::from(c.waiting_idle_timeout_seconds) * 1000]
                }
                MState::Active => vec![
                    s.seen + u64::from(c.active_idle_timeout_seconds) * 1000,
                    s.admitted.unwrap() + u64::from(c.max_active_seconds) * 1000,
                ],
                MState::Ended(_) => vec![s.seen + SESSION_RETENTION_MS],
            })
            .collect();
        due.extend(c.opens_at_ms);
        for e in &c.events {
            due.extend([e.starts_at_ms, e.ends_at_ms]);
            if let Some(m) = e.pre_queue_minutes {
                due.push(e.starts_at_ms.saturating_sub(u64::from(m) * 60_000));
            }
        }
        if let Some(b) = &self.bucket
            && b.units < 60_000
        {
            due.push(b.last + (60_000 - b.units).div_ceil(b.apm));
        }
        due
    }

    fn has_token(&self) -> bool {
        self.bucket.as_ref().is_none_or(|b| b.units >= 60_000)
    }

    /// `ConfigureRoom`: applies a valid configuration; whether it was valid.
    fn configure(&mut self, config: &RoomConfig, seed: Option<DrawSeed>) -> bool {
        let valid = config.validate().is_ok();
        if valid {
            if seed.is_some() && (self.prequeue.is_empty() || self.draw_seed.is_none()) {
                self.draw_seed = seed;
            }
            if !self.exists {
                self.exists = true;
                self.created_at = self.now;
                self.admitted_total = 0;
                self.expired_total = [0; 5];
                self.admissions.clear();
                self.freed.clear();
                self.bucket = None;
            }
            self.config = config.clone();
            self.set_bucket_rate(true);
            self.expire();
            self.draw();
        }
        valid
    }

    fn apply(&mut self, record: &Record, ts: u64) {
        self.history.push((record.clone(), ts));
        self.advance(ts);
        if self.recent.iter().any(|(_, id)| *id == record.id) {
            return;
        }
        // Records before queueing methods configure a `fifo` room; the queued ones say theirs.
        // Records before challenges configure a room without one; the challenged ones say theirs.
        let (method, bits) = match &record.command {
            Command::ConfigureRoomQueued {
                queueing_method, ..
            }
            | Command::ConfigureRoomFromFileQueued {
                queueing_method, ..
            } => (*queueing_method, 0),
            Command::ConfigureRoomChallenged {
                queueing_method,
                challenge_difficulty_bits,
                ..
            }
            | Command::ConfigureRoomFromFileChallenged {
                queueing_method,
                challenge_difficulty_bits,
                ..
            } => (*queueing_method, *challenge_difficulty_bits),
            Command::ConfigureRoomScheduled {
                queueing_method,
                challenge_difficulty_bits,
                ..
            }
            | Command::ConfigureRoomFromFileScheduled {
                queueing_method,
                challenge_difficulty_bits,
                ..
            } => (*queueing_method, *challenge_difficulty_bits),
            _ => (QueueingMethod::Fifo, 0),
        };
        // Records before events configure a room without any; the scheduled ones say theirs.
        let events = match &record.command {
            Command::ConfigureRoomScheduled { events, .. }
            | Command::ConfigureRoomFromFileScheduled { events, .. } => events.clone(),
            _ => vec![],
        };
        let with_method = |config: &RoomConfig| RoomConfig {
            queueing_method: method,
            challenge_difficulty_bits: bits,
            events: events.clone(),
            ..config.clone()
        };
        let accepted = match &record.command {
            Command::ConfigureRoom(config) => self.configure(&with_method(config), None),
            Command::ConfigureRoomSeeded { config, draw_seed }
            | Command::ConfigureRoomQueued {
                config, draw_seed, ..
            }
            | Command::ConfigureRoomChallenged {
                config, draw_seed, ..
            }
            | Command::ConfigureRoomScheduled {
                config, draw_seed, ..
            } => self.configure(&with_method(config), Some(*draw_seed)),
            Command::ConfigureRoomFromFile {
                config,
                file_entry_digest,
            }
            | Command::ConfigureRoomFromFileSeeded {
                config,
                file_entry_digest,
                ..
            }
            | Command::ConfigureRoomFromFileQueued {
                config,
                file_entry_digest,
                ..
            }
            | Command::ConfigureRoomFromFileChallenged {
                config,
                file_entry_digest,
                ..
            }
            | Command::ConfigureRoomFromFileScheduled {
                config,
                file_entry_digest,
                ..
            } => {
                let config = &with_method(config);
                let seed = match &record.command {
                    Command::ConfigureRoomFromFileSeeded { draw_seed, .. }
                    | Command::ConfigureRoomFromFileQueued { draw_seed, .. }
                    | Command::ConfigureRoomFromFileChallenged { draw_seed, .. }
                    | Command::ConfigureRoomFromFileScheduled { draw_seed, .. } => Some(*draw_seed),
                    _ => None,
                };
                if self.file_digest == Some(*file_entry_digest) {
                    // The entry applied last: whatever changed since stands.
                    true
                } else {
                    let valid = self.configure(config, seed);
                    if valid {
                        self.file_digest = Some(*file_entry_digest);
                    }
                    valid
                }
            }
            Command::CloseRoom => {
                if self.exists {
                    for i in 0..self.sessions.len() {
                        if !matches!(self.sessions[i].state, MState::Ended(_)) {
                            self.end(i, ExpiredReason::Closed);
                        }
                    }
                    self.sessions.iter_mut().for_each(|s| s.key = None);
                    self.passes.clear();
                    self.exists = false;
                    self.bucket = None;
                }
                true
            }
            Command::Join {
                session,
                idempotency_key,
            } => {
                let waiting = self.line.len() + self.prequeue.len();
                let replay = idempotency_key
                    .as_ref()
                    .is_some_and(|k| self.sessions.iter().any(|s| s.key.as_ref() == Some(k)));
                let known = self.find(session).is_some();
                let full = self.config.max_waiting.is_some_and(|m| waiting as u32 >= m);
                let refused = matches!(
                    self.config.queueing_method,
                    QueueingMethod::Reject | QueueingMethod::InviteOnly
                );
                if self.exists && !known && !replay && !full && !refused {
                    let open = !self.collecting();
                    let line_seq = open.then(|| {
                        self.next_line_seq += 1;
                        self.next_line_seq - 1
                    });
                    self.sessions.push(MSession {
                        id: *session,
                        state: if open { MState::Waiting } else { MState::Pre },
                        joined: self.now,
                        seen: self.now,
                        admitted: None,
                        key: idempotency_key.clone(),
                        line_seq,
                    });
                    self.all_ids.push(*session);
                    if open {
                        self.line.push(*session);
                    } else {
                        self.prequeue.push(*session);
                    }
                }
                known || replay || (self.exists && !full && !refused)
            }
            Command::Heartbeat { sessions } => {
                for id in sessions {
                    if let Some(i) = self.find(id)
                        && !matches!(self.sessions[i].state, MState::Ended(_))
                    {
                        self.sessions[i].seen = self.now;
                    }
                }
                true
            }
            Command::Leave { session, reason } => match self.find(session) {
                None => false,
                Some(i) => match (self.sessions[i].state, reason) {
                    (MState::Ended(_), _) => true,
                    (MState::Active, LeaveReason::Completed) => {
                        self.end(i, ExpiredReason::Completed);
                        true
                    }
                    (_, LeaveReason::Completed) => false,
                    (_, LeaveReason::Left) => {
                        self.end(i, ExpiredReason::Left);
                        true
                    }
                },
            },
            Command::Evict { session } => match self.find(session) {
                None => false,
                Some(i) => {
                    if !matches!(self.sessions[i].state, MState::Ended(_)) {
                        self.end(i, ExpiredReason::Evicted);
                    }
                    true
                }
            },
            Command::Tick | Command::CheckDigest { .. } => true,
            Command::IssuePasses {
                passes,
                expires_at_ms,
            } => {
                let lifetime = expires_at_ms.saturating_sub(self.now);
                let valid = self.exists
                    && !passes.is_empty()
                    && passes.len() <= PASSES_PER_RECORD_MAX
                    && lifetime > 0
                    && lifetime <= PASS_LIFETIME_MS_MAX
                    && self.passes.len() + passes.len() <= PASSES_PER_ROOM_MAX;
                if valid {
                    for hash in passes {
                        if !self.passes.iter().any(|(h, _)| h == hash) {
                            self.passes.push((*hash, *expires_at_ms));
                        }
                    }
                }
                valid
            }
            Command::JoinWithPass {
                session,
                idempotency_key,
                pass,
            } => {
                let replay = idempotency_key
                    .as_ref()
                    .is_some_and(|k| self.sessions.iter().any(|s| s.key.as_ref() == Some(k)));
                let known = self.find(session).is_some();
                let held = self.passes.iter().position(|(h, _)| h == pass);
                if !self.exists {
                    false
                } else if known || replay {
                    true
                } else if let Some(k) = held {
                    // Admitted at once, whatever the line, capacity, rate, pause or opening.
                    self.passes.remove(k);
                    self.sessions.push(MSession {
                        id: *session,
                        state: MState::Active,
                        joined: self.now,
                        seen: self.now,
                        admitted: Some(self.now),
                        key: idempotency_key.clone(),
                        line_seq: None,
                    });
                    self.all_ids.push(*session);
                    self.admitted_total += 1;
                    self.admissions.push(self.now);
                    true
                } else {
                    false
                }
            }
        };
        let remembered = matches!(
            record.command,
            Command::ConfigureRoom(_)
                | Command::ConfigureRoomSeeded { .. }
                | Command::ConfigureRoomFromFile { .. }
                | Command::ConfigureRoomFromFileSeeded { .. }
                | Command::ConfigureRoomQueued { .. }
                | Command::ConfigureRoomFromFileQueued { .. }
                | Command::ConfigureRoomChallenged { .. }
                | Command::ConfigureRoomFromFileChallenged { .. }
                | Command::ConfigureRoomScheduled { .. }
                | Command::ConfigureRoomFromFileScheduled { .. }
                | Command::CloseRoom
                | Command::Heartbeat { .. }
                | Command::IssuePasses { .. }
        );
        if remembered || !accepted {
            self.recent.push((self.now, record.id));
        }
        self.admit();
    }

    fn recent_count(events: &[u64], now: u64, window: u64, since: u64) -> (u64, u64) {
        let newest = now / RATE_BUCKET_MS;
        let oldest = (newest + 1).saturating_sub(window.div_ceil(RATE_BUCKET_MS));
        let count = events
            .iter()
            .filter(|&&t| (oldest..=newest).contains(&(t / RATE_BUCKET_MS)))
            .count() as u64;
        (count, now - (oldest * RATE_BUCKET_MS).max(since))
    }

    /// Sessions admitted since the room was created, before `at`, and not freed before `at`:
    /// the active count just before `at`, from the sessions themselves.
    fn active_before(&self, at: u64) -> u128 {
        self.sessions
            .iter()
            .filter(|s| s.admitted.is_some_and(|a| a >= self.created_at && a < at))
            .filter(|s| match s.state {
                MState::Ended(_) => s.seen >= at,
                _ => true,
            })
            .count() as u128
    }

    /// `(central, low, high)` ms; see the core's "ETA".
    fn eta(&self, position: u64) -> Option<(u64, u64, u64)> {
        if !self.exists || self.config.paused || !self.open() {
            return None;
        }
        if self.config.queueing_method == QueueingMethod::Passthrough {
            return Some((0, 0, 0));
        }
        let needed = position + 1;
        let by_rate = self.bucket.as_ref().map(|b| needed * 60_000 / b.apm);
        let capacity = self.capacity();
        let active = self.active();
        if active < capacity {
            return by_rate.map(|ms| (ms, ms, ms));
        }
        let (freed, _) = Self::recent_count(&self.freed, self.now, ETA_WINDOW_MS, self.created_at);
        if freed < ETA_FREES_MIN {
            return None;
        }
        // The integral of the active count, trapezoids between bucket boundaries.
        let newest = self.now / RATE_BUCKET_MS;
        let oldest = (newest + 1)
            .saturating_sub(ETA_WINDOW_MS / RATE_BUCKET_MS)
            .max(self.created_at / RATE_BUCKET_MS);
        let mut points = vec![(self.now, u128::from(active))];
        for n in (oldest..=newest).rev() {
            let at = (n * RATE_BUCKET_MS).max(self.created_at);
            points.push((at, self.active_before(n * RATE_BUCKET_MS)));
        }
        // Up to the start of the oldest bucket with a free.
        let oldest_free = self
            .freed
            .iter()
            .map(|t| t / RATE_BUCKET_MS)
            .filter(|n| (oldest..=newest).contains(n))
            .min()?;
        let slot_ms_doubled: u128 = points
            .windows(2)
            .filter(|w| w[1].0 >= (oldest_free * RATE_BUCKET_MS).max(self.created_at))
            .map(|w| (w[0].1 + w[1].1) * u128::from(w[0].0 - w[1].0))
            .sum();
        let opened = self.created_at.max(self.config.opens_at_ms.unwrap_or(0));
        if u128::from(self.now - opened)
            < u128::from(ETA_SETTLE_HOLDS) * (slot_ms_doubled / (2 * u128::from(freed)))
        {
            return None;
        }
        let excess = active - capacity;
        let time = |n: u64| -> u64 {
            (slot_ms_doubled
                * (2 * u128::from(excess * capacity)
                    + u128::from(n) * u128::from(active + capacity))
                / (2 * u128::from(freed) * u128::from(capacity) * u128::from(active + capacity)))
                as u64
        };
        let admitted = self.admitted_total;
        let left: u64 = self.expired_total.iter().sum::<u64>() - (admitted - active);
        let staying = position
            - (u128::from(position) * u128::from(left) / u128::from((left + admitted).max(1)))
                as u64;
        let spread = ETA_RANGE_SIGMAS
            * (1_000_000_000_000 / freed + 1_000_000_000_000 / (needed + excess)).isqrt();
        let central = time(needed);
        let low = (u128::from(time(1 + staying)) * u128::from(1_000_000_u64.saturating_sub(spread))
            / 1_000_000) as u64;
        let mean_hold = slot_ms_doubled / (2 * u128::from(freed));
        let since = u128::from(self.now).saturating_sub(mean_hold);
        let proven = points
            .iter()
            .filter(|(at, _)| u128::from(*at) >= since)
            .map(|(_, a)| *a as u64)
            .min()
            .unwrap()
            .clamp(1, capacity);
        let slow = (slot_ms_doubled
            * (2 * u128::from(excess * proven)
                + u128::from(needed) * u128::from(active + capacity))
            / (2 * u128::from(freed) * u128::from(proven) * u128::from(active + capacity)))
            as u64;
        let high = (u128::from(slow) * u128::from(1_000_000 + spread) / 1_000_000) as u64;
        let floor = by_rate.unwrap_or(0);
        Some((central.max(floor), low.max(floor), high.max(floor)))
    }

    /// See the core's "Turn soon": the admissions expected within 1.5 heartbeat intervals.
    fn turn_soon(&self, position: u64) -> bool {
        let c = &self.config;
        if !self.exists || c.paused || !self.open() || c.queueing_method == QueueingMethod::Random {
            return false;
        }
        let horizon = TURN_SOON_HORIZON_PERCENT * u64::from(c.heartbeat_interval_seconds) * 10;
        let window = (horizon + RATE_BUCKET_MS).min(ETA_WINDOW_MS);
        let opened = self.created_at.max(c.opens_at_ms.unwrap_or(0));
        let (admitted, _) = Self::recent_count(&self.admissions, self.now, window, opened);
        let (freed, span) = Self::recent_count(&self.freed, self.now, window, opened);
        let mut soon = admitted.max(freed * horizon / span.max(TURN_SOON_SPAN_MS_MIN));
        if let Some(bucket) = &self.bucket
            && self.active() < u64::from(c.capacity)
        {
            soon = soon.max(bucket.apm * horizon / 60_000);
        }
        if self.now - opened < window {
            soon = soon.max(admitted + self.active());
        }
        position < soon.max(1)
    }

    fn eta_point(estimate: (u64, u64, u64)) -> Option<u64> {
        let (central, low, high) = estimate;
        let half = (central - low).max(high - central);
        (half * 100 <= central * ETA_POINT_SPREAD_PERCENT_MAX && half <= ETA_POINT_SPREAD_MS_MAX)
            .then(|| central.div_ceil(1000))
    }

    fn view(&self, id: &SessionId) -> Option<SessionView> {
        let s = &self.sessions[self.find(id)?];
        let c = &self.config;
        let waiting_count = (self.line.len() + self.prequeue.len()) as u64;
        let in_line = self.line.iter().position(|x| x == id).map(|p| p as u64);
        let random = c.queueing_method == QueueingMethod::Random;
        let position = in_line.filter(|_| !random);
        // A `random` room's estimate is the middle of the line's, for everyone in it.
        let eta_position = in_line.map(|p| {
            if random {
                (self.line.len() as u64 - 1) / 2
            } else {
                p
            }
        });
        let waiting_deadline = s.seen + u64::from(c.waiting_idle_timeout_seconds) * 1000;
        let (status, expires, reason) = match s.state {
            MState::Pre | MState::Waiting => (Status::Waiting, Some(waiting_deadline), None),
            MState::Active => (
                Status::Active,
                Some(
                    (s.seen + u64::from(c.active_idle_timeout_seconds) * 1000)
                        .min(s.admitted.unwrap() + u64::from(c.max_active_seconds) * 1000),
                ),
                None,
            ),
            MState::Ended(r) => (Status::Expired, None, Some(r)),
        };
        Some(SessionView {
            session: *id,
            status,
            position,
            waiting_count,
            estimated_wait_seconds: eta_position
                .and_then(|p| self.eta(p))
                .and_then(Self::eta_point),
            estimated_wait_range: eta_position
                .and_then(|p| self.eta(p))
                .map(|(_, low, high)| WaitRange {
                    low_seconds: low / 1000,
                    high_seconds: high.div_ceil(1000),
                }),
            turn_soon: position.is_some_and(|p| self.turn_soon(p)),
            prequeue: s.state == MState::Pre,
            // A pre-queued session is told when its pre-queue is drawn: the later of `opensAt`
            // (if still ahead) and the start of the event whose pre-queue it is.
            opens_at_ms: if s.state == MState::Pre {
                c.opens_at_ms
                    .filter(|&at| self.now < at)
                    .max(self.pre_queue_event_start())
                    .or(c.opens_at_ms)
            } else {
                c.opens_at_ms
            },
            joined_at_ms: s.joined,
            admitted_at_ms: s.admitted,
            expires_at_ms: expires,
            last_seen_ms: (!matches!(s.state, MState::Ended(_))).then_some(s.seen),
            heartbeat_interval_seconds: c.heartbeat_interval_seconds,
            target_url: if s.state == MState::Active {
                c.target_url.clone()
            } else {
                None
            },
            expired_reason: reason,
        })
    }

    fn stats(&self) -> RoomStats {
        let oldest = self
            .line
            .first()
            .or(self.prequeue.first())
            .map(|id| self.sessions[self.find(id).unwrap()].joined);
        RoomStats {
            waiting_count: (self.line.len() + self.prequeue.len()) as u64,
            active_count: self.active(),
            admitted_total: self.admitted_total,
            expired_total: ExpiredTotals(self.expired_total),
            admissions_per_minute: Self::recent_count(&self.admissions, self.now, 60_000, 0).0,
            oldest_waiting_seconds: oldest.map_or(0, |j| (self.now - j) / 1000),
            newcomer_wait_seconds: {
                let len = self.line.len() as u64;
                let ahead = match self.config.queueing_method {
                    QueueingMethod::Random => len / 2,
                    _ => len,
                };
                let at_once = ahead == 0
                    && self.bucket.is_none()
                    && self.active() < self.capacity()
                    && self.exists
                    && !self.config.paused
                    && self.open();
                if matches!(
                    self.config.queueing_method,
                    QueueingMethod::Reject | QueueingMethod::InviteOnly
                ) || self.collecting()
                {
                    None
                } else if at_once {
                    Some(0)
                } else {
                    self.eta(ahead)
                        .map(|(central, _, _)| central.div_ceil(1000))
                }
            },
            remembered_ended_count: self
                .sessions
                .iter()
                .filter(|s| matches!(s.state, MState::Ended(_)))
                .count() as u64,
            passes_outstanding: self.passes.len() as u64,
        }
    }
}

/// One step: a record, its log timestamp, whether replica B gets it twice, and whether B is
/// then replaced by a room restored from its snapshot.
#[derive(Clone, Debug)]
struct Step {
    record: Record,
    timestamp_ms: u64,
    duplicate_to_b: bool,
    snapshot_b: bool,
}

struct RoomModel;

fn config_strategy(now: u64) -> impl Strategy<Value = RoomConfig> {
    (
        (1u32..=4, prop::option::weighted(0.3, 1u32..=240)),
        (2u32..=30, 2u32..=40, 5u32..=90),
        prop::option::weighted(0.3, 0u64..40_000),
        prop::option::weighted(0.2, 1u32..=6),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.05),
        prop_oneof![
            5 => Just(QueueingMethod::Fifo),
            2 => Just(QueueingMethod::Random),
            1 => Just(QueueingMethod::Passthrough),
            1 => Just(QueueingMethod::Reject),
            1 => Just(QueueingMethod::InviteOnly),
        ],
        // Mostly no challenge; else a difficulty in range, now and then one past it (an
        // invalid configuration, which must change nothing).
        prop_oneof![
            6 => Just(0u8),
            3 => 1u8..=CHALLENGE_DIFFICULTY_BITS_MAX,
            1 => Just(CHALLENGE_DIFFICULTY_BITS_MAX + 1),
        ],
        events_strategy(now),
    )
        .prop_map(
            move |(
                (capacity, apm),
                (wait, idle, max),
                opens,
                max_waiting,
                paused,
                invalid,
                method,
                challenge_difficulty_bits,
                events,
            )| {
                RoomConfig {
                    // Now and then an invalid configuration, which must change nothing.
                    capacity: if invalid { 0 } else { capacity },
                    admit_per_minute: apm,
                    active_idle_timeout_seconds: idle,
                    max_active_seconds: max,
                    waiting_idle_timeout_seconds: wait,
                    heartbeat_interval_seconds: 1,
                    opens_at_ms: opens.map(|o| now + o - 5_000.min(o)),
                    max_waiting,
                    paused,
                    target_url: Some("https://tickets.example.com/select".into()),
                    queueing_method: method,
                    challenge_difficulty_bits,
                    events,
                }
            },
        )
}

/// Mostly none; else up to three events from a little before `now` on, each with or without
/// its own capacity, rate and (a minute or two of) pre-queue, the gaps between them either
/// short or over a minute, so that a pre-queue sometimes fits and sometimes starts before the
/// previous event ends (an invalid configuration, which must change nothing).
fn events_strategy(now: u64) -> impl Strategy<Value = Vec<RoomEvent>> {
    let event = (
        prop_oneof![1 => 0u64..20_000, 1 => 60_000u64..130_000],
        1_000u64..40_000,
        prop::option::weighted(0.6, 1u32..=6),
        prop::option::weighted(0.3, 1u32..=240),
        prop::option::weighted(0.4, 1u32..=2),
    );
    prop_oneof![
        3 => Just(vec![]),
        2 => prop::collection::vec(event, 1..=3),
    ]
    .prop_map(move |events| {
        let mut at = now.saturating_sub(10_000);
        events
            .into_iter()
            .enumerate()
            .map(
                |(n, (gap, length, capacity, admit_per_minute, pre_queue_minutes))| {
                    let starts_at_ms = at + gap;
                    at = starts_at_ms + length;
                    RoomEvent {
                        capacity,
                        admit_per_minute,
                        pre_queue_minutes,
                        ..RoomEvent::new(&format!("drop-{n}"), starts_at_ms, at)
                    }
                },
            )
            .collect()
    })
}

impl ReferenceStateMachine for RoomModel {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::new()).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Step> {
        let now = state.now.max(T0);
        let known: Vec<SessionId> = if state.all_ids.is_empty() {
            vec![SessionId::from_u128(u128::MAX)]
        } else {
            state.all_ids.clone()
        };
        let pick = prop::sample::select(known);
        let history = state.history.clone();
        let next_id = state.next_id;
        let command = prop_oneof![
            // Mostly with a seed, as nodes write them; now and then without, as earlier builds did.
            // Seeded ones as nodes write them: `fifo` as `ConfigureRoomSeeded`, the other methods
            // as `ConfigureRoomQueued`.
            2 => (config_strategy(now), any::<u64>()).prop_map(|(config, seed)| {
                Command::configure(config, DrawSeed::from_u64(seed))
            }),
            // Seedless ones carry no method (earlier builds knew none): `fifo`.
            1 => config_strategy(now).prop_map(|config| Command::ConfigureRoom(RoomConfig {
                queueing_method: QueueingMethod::Fifo,
                ..config
            })),
            // Three file entries: the same one comes again, after other changes or not.
            1 => (config_strategy(now), 0u8..3, prop::option::weighted(0.7, any::<u64>()))
                .prop_map(|(config, entry, seed)| match seed {
                    Some(seed) => Command::configure_from_file(
                        config,
                        [entry; 16],
                        DrawSeed::from_u64(seed),
                    ),
                    None => Command::ConfigureRoomFromFile {
                        config: RoomConfig { queueing_method: QueueingMethod::Fifo, ..config },
                        file_entry_digest: [entry; 16],
                    },
                }),
            1 => Just(Command::CloseRoom),
            10 => prop::option::weighted(0.3, 0u8..4).prop_map(move |key| Command::Join {
                session: SessionId::from_u128(next_id),
                idempotency_key: key.map(|k| IdempotencyKey::new(format!("key-{k}")).unwrap()),
            }),
            1 => pick.clone().prop_map(|session| Command::Join { session, idempotency_key: None }),
            6 => prop::collection::vec(pick.clone(), 1..6)
                .prop_map(|sessions| Command::Heartbeat { sessions }),
            4 => (pick.clone(), prop::bool::ANY).prop_map(|(session, done)| Command::Leave {
                session,
                reason: if done { LeaveReason::Completed } else { LeaveReason::Left },
            }),
            1 => pick.prop_map(|session| Command::Evict { session }),
            4 => Just(Command::Tick),
            // Passes from a small set of hashes, so that used, expired and never-issued ones come
            // up; now and then an issue out of range (empty, or an expiry not ahead).
            2 => (prop::collection::vec(0u8..6, 0..4), prop_oneof![
                8 => 1u64..60_000,
                1 => Just(0u64),
                1 => Just(PASS_LIFETIME_MS_MAX + 1),
            ]).prop_map(move |(passes, lifetime)| Command::IssuePasses {
                passes: passes.into_iter().map(|b| [b; 16]).collect(),
                expires_at_ms: now + lifetime,
            }),
            4 => (0u8..6, prop::option::weighted(0.3, 0u8..4)).prop_map(move |(pass, key)| {
                Command::JoinWithPass {
                    session: SessionId::from_u128(next_id),
                    idempotency_key: key.map(|k| IdempotencyKey::new(format!("key-{k}")).unwrap()),
                    pass: [pass; 16],
                }
            }),
            1 => (0u64..4, prop::array::uniform16(prop::num::u8::ANY)).prop_map(
                |(interval, digest)| Command::CheckDigest { every_ms: 60_000, interval, digest }
            ),
        ];
        let record = (command, prop::bool::weighted(0.08)).prop_map(move |(command, redo)| {
            match (redo, history.last()) {
                // Now and then a record already in the log, delivered again later.
                (true, Some((old, _))) => old.clone(),
                _ => Record::new(RecordId::from_u128(next_id), room_id(), command),
            }
        });
        // Instants where something is due, to land exactly on them (and one ms before).
        let mut due = state.deadlines();
        due.retain(|&at| at > now);
        due.push(now + 1);
        let dt = prop_oneof![
            6 => 0u64..1_500,
            3 => 1_500u64..20_000,
            1 => 20_000u64..(2 * SESSION_RETENTION_MS),
            // A timestamp behind the room's clock: time must not go back.
            1 => Just(u64::MAX),
            3 => (prop::sample::select(due), prop::bool::ANY)
                .prop_map(move |(at, early)| at - now - u64::from(early)),
        ];
        (
            record,
            dt,
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.15),
        )
            .prop_map(move |(record, dt, duplicate_to_b, snapshot_b)| Step {
                record,
                timestamp_ms: if dt == u64::MAX {
                    now - 3_000
                } else {
                    now + dt
                },
                duplicate_to_b,
                snapshot_b,
            })
            .boxed()
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        state.next_id += 1;
        state.apply(&step.record, step.timestamp_ms);
        state
    }
}

struct Replicas {
    a: Room,
    b: Room,
    /// Kept from step to step, as a node keeps its spare from one snapshot to the next.
    spare: Option<SnapshotSpare>,
    /// Views and stats after the previous step, for invariants over a step.
    previous: BTreeMap<SessionId, SessionView>,
    previous_stats: RoomStats,
    previous_digest: [u8; 16],
    previous_capacity: u32,
}

fn views(room: &Room, ids: &[SessionId]) -> BTreeMap<SessionId, SessionView> {
    ids.iter()
        .filter_map(|id| room.view(id).map(|v| (*id, v)))
        .collect()
}

/// `room` restored from its snapshot, checked to be indistinguishable from it right away.
fn restored(room: &Room, ids: &[SessionId], context: &str) -> Room {
    let bytes = room.encode_snapshot();
    let restored = Room::restore_snapshot(&bytes)
        .unwrap_or_else(|e| panic!("snapshot refused: {e}; {context}"));
    assert_eq!(restored.digest(), room.digest(), "restored digest");
    assert_eq!(restored.stats(), room.stats(), "restored stats");
    assert_eq!(restored.now_ms(), room.now_ms(), "restored clock");
    assert_eq!(restored.is_vacant(), room.is_vacant(), "restored vacancy");
    assert_eq!(restored.draw_seed(), room.draw_seed(), "restored draw seed");
    assert_eq!(views(&restored, ids), views(room, ids), "restored views");
    assert!(
        restored.encode_snapshot() == bytes,
        "the restored room re-encodes differently: {context}"
    );
    restored
}

impl StateMachineTest for RoomModel {
    type SystemUnderTest = Replicas;
    type Reference = RoomModel;

    fn init_test(_: &Model) -> Replicas {
        let a = Room::new(room_id());
        Replicas {
            b: a.clone(),
            spare: Some(SnapshotSpare::new()),
            previous: BTreeMap::new(),
            previous_stats: a.stats(),
            previous_digest: a.digest(),
            previous_capacity: 1,
            a,
        }
    }

    fn apply(mut sut: Replicas, model: &Model, step: Step) -> Replicas {
        let before_admitted = sut.a.stats().admitted_total;
        let method_before = sut.a.last_config().queueing_method;
        let before_active = sut.a.active_count();
        let outcome_a = sut.a.apply(&step.record, step.timestamp_ms);
        let outcome_b = sut.b.apply(&step.record, step.timestamp_ms);
        let outcome_b2 = step
            .duplicate_to_b
            .then(|| sut.b.apply(&step.record, step.timestamp_ms));
        let outcomes = format!("{step:?}: A {outcome_a:?}, B {outcome_b:?} then {outcome_b2:?}");
        if step.snapshot_b {
            sut.b = restored(&sut.b, &model.all_ids, &outcomes);
        }
        let room = &sut.a;
        let now_views = views(room, &model.all_ids);
        let stats = room.stats();

        // The real state machine agrees with the model on everything observable.
        for id in &model.all_ids {
            assert_eq!(room.view(id), model.view(id), "view of {id:?}");
        }
        assert_eq!(stats, model.stats(), "stats");
        assert_eq!(room.now_ms(), model.now, "clock");
        assert_eq!(room.exists(), model.exists);
        assert_eq!(room.file_entry_digest(), model.file_digest, "file entry");
        assert_eq!(room.last_config(), &model.config, "configuration");
        assert_eq!(
            sut.b.last_config().challenge_difficulty_bits,
            model.config.challenge_difficulty_bits,
            "B's challenge"
        );
        assert_eq!(room.draw_seed(), model.draw_seed, "draw seed");
        assert_eq!(sut.b.draw_seed(), model.draw_seed, "B's draw seed");
        assert_eq!(
            sut.b.file_entry_digest(),
            model.file_digest,
            "B's file entry"
        );

        // 1. active ≤ capacity. Only a capacity decrease can leave more active than capacity,
        //    and then nobody is admitted until it holds again: a step that did not change the
        //    configuration admits nobody while over capacity, and a step that lowered it ends
        //    with no more active than the old capacity allowed.
        //    A `passthrough` room is not bounded by capacity; once it is no longer
        //    `passthrough`, it is like a room whose capacity was lowered.
        //    A join with a pass is admitted at once, past capacity: one more than the line alone
        //    could have made it.
        let passed = u64::from(
            matches!(step.record.command, Command::JoinWithPass { .. })
                && matches!(outcome_a, Outcome::Joined { .. }),
        );
        if let Some(config) = room.config()
            && config.queueing_method != QueueingMethod::Passthrough
        {
            // The capacity in force: a running event's, else the room's. An event's end lowers it
            // like a reconfiguration does.
            let capacity = u64::from(room.capacity());
            assert_eq!(capacity, model.capacity(), "capacity in force");
            if room.active_count() > capacity && passed == 1 {
                // The pass holder aside, the line pushed nobody past capacity (admissions due
                // before the join, while a slot was free, are fine).
                assert!(
                    room.active_count() - 1 <= capacity.max(before_active),
                    "the line was admitted past capacity beside a pass"
                );
            } else if room.active_count() > capacity {
                let reconfigured =
                    step.record.command.room_config().is_some() && outcome_a != Outcome::Duplicate;
                assert!(
                    reconfigured || stats.admitted_total == before_admitted,
                    "admitted while over capacity"
                );
                assert!(
                    method_before == QueueingMethod::Passthrough
                        || room.active_count() <= before_active.max(sut.previous_capacity.into())
                );
            }
        }
        if room.config().is_some() {
            sut.previous_capacity = room.capacity();
        }

        // 2. Nobody admitted while a live session ahead of them still waits (but a `random`
        //    room admits whom it draws).
        let random = |method| method == QueueingMethod::Random;
        let drew = random(method_before) || random(room.last_config().queueing_method);
        let newly_active: Vec<&MSession> = model
            .sessions
            .iter()
            .filter(|s| {
                s.state == MState::Active
                    && sut
                        .previous
                        .get(&s.id)
                        .is_none_or(|v| v.status != Status::Active)
            })
            .collect();
        for waiting in model
            .sessions
            .iter()
            .filter(|s| s.state == MState::Waiting && !drew)
        {
            for admitted in &newly_active {
                assert!(
                    waiting.line_seq > admitted.line_seq,
                    "{:?} admitted while {:?} waited ahead",
                    admitted.id,
                    waiting.id
                );
            }
        }

        // 3. No idle slot.
        if let Some(config) = room.config() {
            let someone_in_line = now_views
                .values()
                .any(|v| v.status == Status::Waiting && !v.prequeue);
            let open = !config.paused && config.opens_at_ms.is_none_or(|at| room.now_ms() >= at);
            if config.queueing_method == QueueingMethod::Passthrough {
                assert!(
                    !(someone_in_line && open),
                    "passthrough left someone waiting"
                );
            } else {
                assert!(
                    !(someone_in_line
                        && open
                        && model.has_token()
                        && room.active_count() < room.capacity().into()),
                    "a slot is idle while someone waits"
                );
            }
        }

        // 4. One state per session; counts are sums over sessions.
        let count = |status| now_views.values().filter(|v| v.status == status).count() as u64;
        assert_eq!(stats.waiting_count, count(Status::Waiting));
        assert_eq!(stats.active_count, count(Status::Active));
        assert_eq!(stats.remembered_ended_count, count(Status::Expired));
        for view in now_views.values() {
            assert_eq!(
                view.position.is_some(),
                view.status == Status::Waiting
                    && !view.prequeue
                    && !random(room.last_config().queueing_method)
            );
            assert_eq!(
                view.expired_reason.is_some(),
                view.status == Status::Expired
            );
            assert_eq!(view.expires_at_ms.is_some(), view.status != Status::Expired);
        }
        let mut positions: Vec<u64> = now_views.values().filter_map(|v| v.position).collect();
        positions.sort_unstable();
        assert!(
            positions.iter().enumerate().all(|(i, &p)| p == i as u64),
            "positions 0..n"
        );

        // 5. Positions never increase.
        for (id, view) in &now_views {
            if let (Some(now), Some(before)) =
                (view.position, sut.previous.get(id).and_then(|v| v.position))
            {
                assert!(now <= before, "{id:?} moved back from {before} to {now}");
            }
        }

        // 6. Determinism, and the digest reflects every observable change.
        let digest = room.digest();
        assert_eq!(
            views(&sut.b, &model.all_ids),
            now_views,
            "replica B's views diverged: {outcomes}"
        );
        assert_eq!(sut.b.stats(), stats, "replica B's stats diverged");
        assert_eq!(digest, sut.b.digest(), "replicas diverged");
        let snapshot = sut.a.encode_snapshot();
        assert!(
            snapshot == sut.b.encode_snapshot(),
            "replicas' snapshots differ (slot layout or free list): {outcomes}"
        );
        // As a node does it, but preparing only when the room outgrew the spare (cheaper here).
        let copy = match sut.spare.take().expect("kept").copy(&sut.a) {
            Ok(copy) => copy,
            Err(mut outgrown) => {
                outgrown.prepare(&sut.a.sizes());
                outgrown
                    .copy(&sut.a)
                    .expect("a prepared spare holds the room")
            }
        };
        assert!(
            copy.encode_snapshot() == snapshot,
            "a copy through the spare encodes differently: {outcomes}"
        );
        sut.spare = Some(copy.into_spare());
        if now_views != sut.previous || stats != sut.previous_stats {
            assert_ne!(
                digest, sut.previous_digest,
                "state changed but the digest did not"
            );
        }
        sut.previous = now_views;
        sut.previous_stats = stats;
        sut.previous_digest = digest;
        sut
    }

    fn teardown(sut: Replicas, model: Model) {
        // A replica that replays the whole log from scratch reaches the same state.
        let mut replay = Room::new(room_id());
        for (record, ts) in &model.history {
            replay.apply(record, *ts);
        }
        assert_eq!(
            replay.digest(),
            sut.a.digest(),
            "replay from scratch diverged"
        );
        assert_eq!(replay.draw_seed(), sut.a.draw_seed(), "replayed draw seed");
        restored(&sut.a, &model.all_ids, "teardown");
    }
}

prop_state_machine! {
    #![proptest_config(Config {
        // Thousands of sequences by default; `PROPTEST_CASES` raises (or lowers) it.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(3000),
        max_shrink_iters: 20_000,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        .. Config::default()
    })]

    #[test]
    fn room_matches_model(sequential 1..120 => RoomModel);
}
