//! Each rule of the state machine on a hand-written timeline.

use waitroom_core::limits::{ETA_FREES_MIN, RECORD_DEDUP_WINDOW_MS, SESSION_RETENTION_MS};
use waitroom_core::*;

const T0: u64 = 1_800_000_000_000;
const SECOND: u64 = 1000;

struct Timeline {
    room: Room,
    next_id: u128,
}

/// The draw seed `Timeline::new` configures with.
const SEED: DrawSeed = DrawSeed::from_u64(0x5eed_0001);

impl Timeline {
    /// A room configured as nodes configure them: with a draw seed.
    fn new(config: RoomConfig) -> Self {
        Self::configured(Command::ConfigureRoomSeeded {
            config,
            draw_seed: SEED,
        })
    }

    fn configured(configure: Command) -> Self {
        let mut timeline = Self {
            room: Room::new(RoomId::new("rules").unwrap()),
            next_id: 1,
        };
        let outcome = timeline.at(T0, configure);
        assert_eq!(outcome, Outcome::Configured { created: true });
        timeline
    }

    fn record(&mut self, command: Command) -> Record {
        self.next_id += 1;
        Record::new(
            RecordId::from_u128(self.next_id),
            self.room.id().clone(),
            command,
        )
    }

    fn at(&mut self, ts: u64, command: Command) -> Outcome {
        let record = self.record(command);
        self.room.apply(&record, ts)
    }

    fn join(&mut self, ts: u64, n: u128) -> SessionId {
        let session = SessionId::from_u128(n);
        let outcome = self.at(
            ts,
            Command::Join {
                session,
                idempotency_key: None,
            },
        );
        assert_eq!(outcome, Outcome::Joined { session });
        session
    }

    fn view(&self, session: SessionId) -> SessionView {
        self.room.view(&session).expect("session is remembered")
    }

    fn status(&self, session: SessionId) -> Status {
        self.view(session).status
    }

    fn complete(&mut self, ts: u64, session: SessionId) -> Outcome {
        self.at(
            ts,
            Command::Leave {
                session,
                reason: LeaveReason::Completed,
            },
        )
    }

    fn heartbeat(&mut self, ts: u64, sessions: &[SessionId]) -> Outcome {
        self.at(
            ts,
            Command::Heartbeat {
                sessions: sessions.to_vec(),
            },
        )
    }
}

/// Long timeouts, so that only the timeouts a test sets itself expire anything.
fn config(capacity: u32) -> RoomConfig {
    RoomConfig {
        active_idle_timeout_seconds: 3600,
        max_active_seconds: 7200,
        waiting_idle_timeout_seconds: 3600,
        ..RoomConfig::with_capacity(capacity)
    }
}

/// The API's defaults: waiting idle 120 s, active idle 60 s, at most 600 s active.
fn default_config(capacity: u32) -> RoomConfig {
    RoomConfig::with_capacity(capacity)
}

#[test]
fn capacity_then_first_come_first_served() {
    let mut t = Timeline::new(config(2));
    let s: Vec<SessionId> = (1..=5).map(|n| t.join(T0 + n as u64, n)).collect();
    assert_eq!(t.status(s[0]), Status::Active);
    assert_eq!(t.status(s[1]), Status::Active);
    for (i, &session) in s[2..].iter().enumerate() {
        let view = t.view(session);
        assert_eq!(
            (view.status, view.position, view.waiting_count),
            (Status::Waiting, Some(i as u64), 3)
        );
    }
    assert_eq!(t.complete(T0 + 10, s[0]), Outcome::Ended { session: s[0] });
    let done = t.view(s[0]);
    assert_eq!(
        (done.status, done.expired_reason),
        (Status::Expired, Some(ExpiredReason::Completed))
    );
    // The slot went to the head of the line at once, and everyone moved up.
    let admitted = t.view(s[2]);
    assert_eq!(
        (admitted.status, admitted.admitted_at_ms),
        (Status::Active, Some(T0 + 10))
    );
    assert_eq!(admitted.target_url, None);
    assert_eq!(t.view(s[3]).position, Some(0));
    assert_eq!(t.view(s[4]).position, Some(1));
    // Leaving from the middle of the line moves only those behind.
    t.at(
        T0 + 11,
        Command::Leave {
            session: s[3],
            reason: LeaveReason::Left,
        },
    );
    assert_eq!(t.view(s[3]).expired_reason, Some(ExpiredReason::Left));
    assert_eq!(t.view(s[4]).position, Some(0));
    let stats = t.room.stats();
    assert_eq!(
        (
            stats.waiting_count,
            stats.active_count,
            stats.admitted_total
        ),
        (1, 2, 3)
    );
    assert_eq!(stats.expired_total.get(ExpiredReason::Completed), 1);
    assert_eq!(stats.expired_total.get(ExpiredReason::Left), 1);
}

#[test]
fn waiting_expiry_at_exactly_the_deadline() {
    // Waiting idle timeout 120 s; the room is full so the session waits.
    let mut t = Timeline::new(RoomConfig {
        waiting_idle_timeout_seconds: 120,
        ..config(1)
    });
    t.join(T0, 1);
    let waiting = t.join(T0, 2);
    assert_eq!(t.view(waiting).expires_at_ms, Some(T0 + 120 * SECOND));
    t.at(T0 + 120 * SECOND - 1, Command::Tick);
    assert_eq!(t.status(waiting), Status::Waiting);
    t.at(T0 + 120 * SECOND, Command::Tick);
    let view = t.view(waiting);
    assert_eq!(
        (view.status, view.expired_reason),
        (Status::Expired, Some(ExpiredReason::Timeout))
    );
    assert_eq!(view.expires_at_ms, None);
}

#[test]
fn heartbeat_at_the_deadline_is_too_late_one_ms_before_is_not() {
    let mut t = Timeline::new(RoomConfig {
        waiting_idle_timeout_seconds: 120,
        ..config(1)
    });
    t.join(T0, 1);
    let a = t.join(T0, 2);
    let b = t.join(T0, 3);
    assert_eq!(
        t.heartbeat(T0 + 120 * SECOND - 1, &[a]),
        Outcome::Heartbeat { refreshed: 1 }
    );
    assert_eq!(t.view(a).expires_at_ms, Some(T0 + 240 * SECOND - 1));
    assert_eq!(
        t.heartbeat(T0 + 120 * SECOND, &[b]),
        Outcome::Heartbeat { refreshed: 0 }
    );
    assert_eq!(t.status(a), Status::Waiting);
    assert_eq!(t.view(b).expired_reason, Some(ExpiredReason::Timeout));
}

#[test]
fn active_idle_timeout_and_max_active() {
    let mut c = default_config(1);
    c.max_active_seconds = 150;
    let mut t = Timeline::new(c);
    let s = t.join(T0, 1);
    // The idle clock starts at admission.
    assert_eq!(t.view(s).expires_at_ms, Some(T0 + 60 * SECOND));
    // Heartbeats restart it, but never beyond admission + maxActiveSeconds.
    t.heartbeat(T0 + 59 * SECOND, &[s]);
    assert_eq!(t.view(s).expires_at_ms, Some(T0 + 119 * SECOND));
    t.heartbeat(T0 + 118 * SECOND, &[s]);
    assert_eq!(t.view(s).expires_at_ms, Some(T0 + 150 * SECOND));
    t.at(T0 + 150 * SECOND - 1, Command::Tick);
    assert_eq!(t.status(s), Status::Active);
    t.at(T0 + 150 * SECOND, Command::Tick);
    assert_eq!(t.view(s).expired_reason, Some(ExpiredReason::Timeout));

    // Without heartbeats an admitted session loses its slot after exactly the idle timeout,
    // and the slot goes to the next in line in the same step.
    let mut t = Timeline::new(default_config(1));
    let first = t.join(T0, 1);
    let second = t.join(T0, 2);
    t.heartbeat(T0 + 59 * SECOND, &[second]);
    t.at(T0 + 60 * SECOND, Command::Tick);
    assert_eq!(t.view(first).expired_reason, Some(ExpiredReason::Timeout));
    assert_eq!(t.view(second).admitted_at_ms, Some(T0 + 60 * SECOND));
}

#[test]
fn rate_limit_burst_then_steady() {
    // 120 per minute: a burst of 2, then one every 500 ms.
    let mut c = config(100);
    c.admit_per_minute = Some(120);
    let mut t = Timeline::new(c);
    let s: Vec<SessionId> = (1..=6).map(|n| t.join(T0, n)).collect();
    let active = |t: &Timeline| t.room.active_count();
    assert_eq!(active(&t), 2);
    assert_eq!(t.view(s[2]).position, Some(0));
    // Free slots, so only the rate limit binds: 1 admission per 500 ms → ETA 1 s for position 1.
    assert_eq!(t.view(s[3]).estimated_wait_seconds, Some(1));
    t.at(T0 + 499, Command::Tick);
    assert_eq!(active(&t), 2);
    t.at(T0 + 500, Command::Tick);
    assert_eq!(active(&t), 3);
    t.at(T0 + 1_000, Command::Tick);
    assert_eq!(active(&t), 4);
    // A long quiet spell refills only the burst.
    t.at(T0 + 60_000, Command::Tick);
    assert_eq!(active(&t), 6);
    let more: Vec<SessionId> = (10..=13).map(|n| t.join(T0 + 600_000, n)).collect();
    assert_eq!(active(&t), 8);
    assert_eq!(t.status(more[2]), Status::Waiting);
}

#[test]
fn prequeue_draw_is_identical_on_replicas_and_ahead_of_later_joins() {
    let opens = T0 + 60 * SECOND;
    let mut c = config(1);
    c.opens_at_ms = Some(opens);
    c.waiting_idle_timeout_seconds = 600;
    let mut a = Timeline::new(c.clone());
    let early: Vec<SessionId> = (1..=50).map(|n| a.join(T0 + n as u64, n)).collect();
    for &s in &early {
        let view = a.view(s);
        assert_eq!(
            (view.status, view.prequeue, view.position),
            (Status::Waiting, true, None)
        );
        assert_eq!(view.opens_at_ms, Some(opens));
    }
    assert_eq!(
        a.room.active_count(),
        0,
        "nobody is admitted before opening"
    );
    // Replica B applies the same records.
    let mut b = Timeline::new(c);
    for n in 1..=50 {
        b.join(T0 + n as u64, n);
    }
    // A join exactly at opening comes after the draw.
    a.join(opens, 100);
    b.join(opens, 100);
    assert_eq!(a.room.digest(), b.room.digest());
    let order = |t: &Timeline| -> Vec<SessionId> {
        let mut placed: Vec<(u64, SessionId)> = early
            .iter()
            .filter_map(|&s| t.view(s).position.map(|p| (p, s)))
            .collect();
        placed.sort();
        placed.into_iter().map(|(_, s)| s).collect()
    };
    let admitted = early
        .iter()
        .copied()
        .find(|&s| a.status(s) == Status::Active)
        .unwrap();
    let drawn = order(&a);
    assert_eq!(drawn, order(&b));
    assert_eq!(drawn.len(), 49);
    assert_ne!(
        drawn,
        early
            .iter()
            .copied()
            .filter(|&s| s != admitted)
            .collect::<Vec<_>>()
    );
    // Everyone from the pre-queue is ahead of the join at opening.
    assert_eq!(a.view(SessionId::from_u128(100)).position, Some(49));
    assert!(!a.view(SessionId::from_u128(100)).prequeue);
}

/// Sessions in the order the room placed them: the admitted (in admission order), then the line.
fn placed(t: &Timeline, sessions: &[SessionId]) -> Vec<SessionId> {
    let mut placed: Vec<(u64, u64, SessionId)> = sessions
        .iter()
        .filter_map(|&s| {
            let view = t.view(s);
            match view.status {
                Status::Active => Some((0, view.admitted_at_ms?, s)),
                Status::Waiting => Some((1, view.position?, s)),
                Status::Expired => None,
            }
        })
        .collect();
    placed.sort_unstable();
    placed.into_iter().map(|(_, _, s)| s).collect()
}

/// The order anyone could compute for a room with the old, public seed: from the room id and
/// `opensAt` alone.
fn publicly_predicted(room: &str, opens: u64, sessions: &[SessionId]) -> Vec<SessionId> {
    let seed = legacy_draw_seed(room, opens);
    let mut order = sessions.to_vec();
    order.sort_by_key(|s| (draw_ticket(seed, &s.0), *s));
    order
}

fn prequeue_config(opens: u64) -> RoomConfig {
    RoomConfig {
        opens_at_ms: Some(opens),
        ..config(1)
    }
}

/// Joins sessions 1..=60 to the pre-queue, opens the room, and gives the order drawn.
fn draw(configure: Command, opens: u64) -> (Timeline, Vec<SessionId>) {
    let mut t = Timeline::configured(configure);
    let sessions: Vec<SessionId> = (1..=60).map(|n| t.join(T0 + n as u64, n)).collect();
    assert!(sessions.iter().all(|&s| t.view(s).prequeue));
    t.at(opens, Command::Tick);
    let order = placed(&t, &sessions);
    assert_eq!(order.len(), sessions.len());
    (t, order)
}

/// The draw's seed is secret, so the public data (room id, `opensAt`, one's own session id) no
/// longer predicts the order: two rooms alike in everything but their secret seeds draw the same
/// sessions in different orders, and neither is the order of the old public derivation.
#[test]
fn the_draw_is_not_predictable_from_public_data() {
    let opens = T0 + 60 * SECOND;
    let seeded = |seed: u64| Command::ConfigureRoomSeeded {
        config: prequeue_config(opens),
        draw_seed: DrawSeed::from_u64(seed),
    };
    let (a, order_a) = draw(seeded(0x9e37_79b9_7f4a_7c15), opens);
    let (b, order_b) = draw(seeded(0xc2b2_ae3d_27d4_eb4f), opens);
    assert_eq!(a.room.id(), b.room.id());
    assert_eq!(a.room.last_config(), b.room.last_config());
    assert_ne!(order_a, order_b, "different secret seeds, different orders");
    let mut sessions = order_a.clone();
    sessions.sort_unstable();
    let predicted = publicly_predicted("rules", opens, &sessions);
    assert_ne!(
        order_a, predicted,
        "the public derivation predicts the draw"
    );
    assert_ne!(
        order_b, predicted,
        "the public derivation predicts the draw"
    );
    // Nor does the one session a client knows get its place from public data: over both rooms,
    // the session first by the public derivation is not first in both.
    assert!(order_a[0] != predicted[0] || order_b[0] != predicted[0]);
    // What the fix is about: a room without a secret seed (configured by records of earlier
    // builds) draws exactly the publicly predictable order.
    let (_, legacy) = draw(Command::ConfigureRoom(prequeue_config(opens)), opens);
    assert_eq!(legacy, predicted);
}

/// Every replica draws the same order: the seed comes from the log. Replaying the records gives
/// the same order, and a room restored from a snapshot taken before the opening keeps the seed
/// and draws the same order too.
#[test]
fn the_draw_is_determined_by_the_log() {
    let opens = T0 + 60 * SECOND;
    let mut a = Timeline::new(prequeue_config(opens));
    let mut log: Vec<(Record, u64)> = Vec::new();
    let sessions: Vec<SessionId> = (1..=80).map(SessionId::from_u128).collect();
    for (n, &session) in sessions.iter().enumerate() {
        let record = a.record(Command::Join {
            session,
            idempotency_key: None,
        });
        log.push((record, T0 + n as u64));
    }
    for (record, ts) in &log {
        a.room.apply(record, *ts);
    }
    let before_opening = a.room.clone();
    let tick = a.record(Command::Tick);
    a.room.apply(&tick, opens);
    let drawn = placed(&a, &sessions);

    // A replica replaying the same log from the start.
    let mut b = Timeline::new(prequeue_config(opens));
    for (record, ts) in &log {
        b.room.apply(record, *ts);
    }
    b.room.apply(&tick, opens);
    assert_eq!(placed(&b, &sessions), drawn);
    assert_eq!(b.room.digest(), a.room.digest());
    assert_eq!(b.room.draw_seed(), Some(SEED));

    // A replica restored from a snapshot taken before the opening.
    let bytes = before_opening.encode_snapshot();
    let mut c = Timeline {
        room: Room::restore_snapshot(&bytes).expect("a room's own snapshot"),
        next_id: 0,
    };
    assert_eq!(c.room.draw_seed(), Some(SEED), "the snapshot kept the seed");
    c.room.apply(&tick, opens);
    assert_eq!(placed(&c, &sessions), drawn);
    assert_eq!(c.room.digest(), a.room.digest());
}

/// Reconfiguring: a configuration's seed replaces the room's only while the pre-queue is empty
/// (or the room has only the public seed); once people wait in it, their draw is fixed.
#[test]
fn reconfiguring_never_draws_a_waiting_prequeue_again() {
    let opens = T0 + 60 * SECOND;
    let s1 = DrawSeed::from_u64(101);
    let s2 = DrawSeed::from_u64(202);
    let mut t = Timeline::configured(Command::ConfigureRoomSeeded {
        config: prequeue_config(opens),
        draw_seed: s1,
    });
    assert_eq!(t.room.draw_seed(), Some(s1));
    let reconfigure = |config: RoomConfig, seed: u64| Command::ConfigureRoomSeeded {
        config,
        draw_seed: DrawSeed::from_u64(seed),
    };
    // Nobody waits yet: the new configuration's seed is taken.
    t.at(T0 + 1, reconfigure(prequeue_config(opens), 202));
    assert_eq!(t.room.draw_seed(), Some(s2));
    let sessions: Vec<SessionId> = (1..=40).map(|n| t.join(T0 + 10 + n as u64, n)).collect();
    // People wait: postponing the opening (or any change) keeps the seed...
    let later = opens + 60 * SECOND;
    t.at(T0 + 100, reconfigure(prequeue_config(later), 303));
    let file_entry = Command::ConfigureRoomFromFileSeeded {
        config: prequeue_config(later),
        file_entry_digest: [1; 16],
        draw_seed: DrawSeed::from_u64(404),
    };
    assert_eq!(
        t.at(T0 + 101, file_entry),
        Outcome::Configured { created: false }
    );
    assert_eq!(t.room.draw_seed(), Some(s2));
    // ...and the draw is the one the seed fixed when they joined.
    t.at(later, Command::Tick);
    let mut expected = sessions.clone();
    expected.sort_by_key(|s| (draw_ticket(s2.to_u64(), &s.0), *s));
    assert_eq!(placed(&t, &sessions), expected);
    // The pre-queue was drawn: a new opening takes a new seed, so no seed draws twice.
    let reopens = later + 60 * SECOND;
    t.at(later + 1, reconfigure(prequeue_config(reopens), 505));
    assert_eq!(t.room.draw_seed(), Some(DrawSeed::from_u64(505)));
    // An invalid configuration changes nothing, seed included.
    let invalid = reconfigure(RoomConfig::with_capacity(0), 606);
    assert!(matches!(
        t.at(later + 2, invalid),
        Outcome::Rejected(Rejection::InvalidConfig(_))
    ));
    assert_eq!(t.room.draw_seed(), Some(DrawSeed::from_u64(505)));
    // A seedless record (an earlier build's) never takes the seed away.
    t.join(later + 3, 1_000);
    t.at(later + 4, Command::ConfigureRoom(prequeue_config(reopens)));
    assert_eq!(t.room.draw_seed(), Some(DrawSeed::from_u64(505)));
}

/// A room that only had the public seed (configured by an earlier build) takes a secret one from
/// the first seeded configuration, even with people in its pre-queue: the public order is the
/// one anyone could compute.
#[test]
fn a_public_seed_is_replaced_at_once() {
    let opens = T0 + 60 * SECOND;
    let mut t = Timeline::configured(Command::ConfigureRoom(prequeue_config(opens)));
    assert_eq!(t.room.draw_seed(), None);
    let sessions: Vec<SessionId> = (1..=40).map(|n| t.join(T0 + n as u64, n)).collect();
    let seed = DrawSeed::from_u64(0xabcd);
    t.at(
        T0 + 100,
        Command::ConfigureRoomSeeded {
            config: prequeue_config(opens),
            draw_seed: seed,
        },
    );
    assert_eq!(t.room.draw_seed(), Some(seed));
    t.at(opens, Command::Tick);
    let order = placed(&t, &sessions);
    assert_ne!(order, publicly_predicted("rules", opens, &sessions));
    let mut expected = sessions.clone();
    expected.sort_by_key(|s| (draw_ticket(seed.to_u64(), &s.0), *s));
    assert_eq!(order, expected);
}

#[test]
fn idempotency_key_replays_the_same_session() {
    let mut t = Timeline::new(config(1));
    let key = IdempotencyKey::new("page-load-7").unwrap();
    let first = SessionId::from_u128(1);
    let join = |session, key: &IdempotencyKey| Command::Join {
        session,
        idempotency_key: Some(key.clone()),
    };
    assert_eq!(
        t.at(T0, join(first, &key)),
        Outcome::Joined { session: first }
    );
    assert_eq!(
        t.at(T0 + 5, join(SessionId::from_u128(2), &key)),
        Outcome::Replayed { session: first }
    );
    assert!(t.room.view(&SessionId::from_u128(2)).is_none());
    assert_eq!(t.room.waiting_count() + t.room.active_count(), 1);
    // Another key is another place.
    let other = IdempotencyKey::new("page-load-8").unwrap();
    assert_eq!(
        t.at(T0 + 6, join(SessionId::from_u128(3), &other)),
        Outcome::Joined {
            session: SessionId::from_u128(3)
        }
    );
    // A room closed and created again is a new room: old keys do not replay into it.
    t.at(T0 + 7, Command::CloseRoom);
    t.at(T0 + 8, Command::ConfigureRoom(config(1)));
    assert_eq!(
        t.at(T0 + 9, join(SessionId::from_u128(4), &key)),
        Outcome::Joined {
            session: SessionId::from_u128(4)
        }
    );
}

#[test]
fn lowering_capacity_below_active_evicts_nobody() {
    let mut t = Timeline::new(config(3));
    let s: Vec<SessionId> = (1..=5).map(|n| t.join(T0, n)).collect();
    assert_eq!(t.room.active_count(), 3);
    t.at(T0 + 1, Command::ConfigureRoom(config(1)));
    assert_eq!(t.room.active_count(), 3, "no eviction");
    t.complete(T0 + 2, s[0]);
    assert_eq!(
        t.room.active_count(),
        2,
        "no admission while above capacity"
    );
    t.complete(T0 + 3, s[1]);
    assert_eq!(t.room.active_count(), 1, "none at capacity either");
    assert_eq!(t.status(s[3]), Status::Waiting);
    t.complete(T0 + 4, s[2]);
    assert_eq!(t.room.active_count(), 1);
    assert_eq!(
        t.status(s[3]),
        Status::Active,
        "admission resumes below the new capacity"
    );
    // Raising capacity admits at once.
    t.at(T0 + 5, Command::ConfigureRoom(config(10)));
    assert_eq!(t.status(s[4]), Status::Active);
}

#[test]
fn paused_room_admits_nobody_until_resumed() {
    let mut c = config(2);
    c.paused = true;
    let mut t = Timeline::new(c.clone());
    let s = t.join(T0, 1);
    assert_eq!(t.status(s), Status::Waiting);
    assert_eq!(t.view(s).estimated_wait_seconds, None);
    c.paused = false;
    t.at(T0 + 1, Command::ConfigureRoom(c));
    assert_eq!(t.status(s), Status::Active);
}

#[test]
fn max_waiting_refuses_joins() {
    let mut c = config(1);
    c.max_waiting = Some(2);
    let mut t = Timeline::new(c);
    t.join(T0, 1); // active
    t.join(T0, 2);
    t.join(T0, 3);
    let refused = t.at(
        T0,
        Command::Join {
            session: SessionId::from_u128(4),
            idempotency_key: None,
        },
    );
    assert_eq!(refused, Outcome::Rejected(Rejection::RoomFull));
    assert!(t.room.view(&SessionId::from_u128(4)).is_none());
}

#[test]
fn duplicates_change_nothing() {
    let mut t = Timeline::new(config(1));
    let a = t.join(T0, 1);
    let b = t.join(T0, 2);
    // The same join again: its session already exists.
    let again = Command::Join {
        session: b,
        idempotency_key: None,
    };
    assert_eq!(t.at(T0 + 1, again), Outcome::Duplicate);
    // The same heartbeat record delivered twice: the second does not extend the deadline.
    let heartbeat = t.record(Command::Heartbeat { sessions: vec![b] });
    assert_eq!(
        t.room.apply(&heartbeat, T0 + 10 * SECOND),
        Outcome::Heartbeat { refreshed: 1 }
    );
    let digest = t.room.digest();
    assert_eq!(
        t.room.apply(&heartbeat, T0 + 10 * SECOND),
        Outcome::Duplicate
    );
    assert_eq!(t.room.digest(), digest);
    assert_eq!(
        t.room.apply(&heartbeat, T0 + 20 * SECOND),
        Outcome::Duplicate
    );
    assert_eq!(t.view(b).expires_at_ms, Some(T0 + 3610 * SECOND));
    // A stale or repeated tick changes nothing.
    let digest = t.room.digest();
    t.at(T0 + 5 * SECOND, Command::Tick);
    t.at(T0 + 20 * SECOND, Command::Tick);
    assert_eq!(t.room.digest(), digest);
    // A configuration delivered again after a newer one does not roll it back.
    let five = t.record(Command::ConfigureRoom(config(5)));
    t.room.apply(&five, T0 + 21 * SECOND);
    t.at(T0 + 22 * SECOND, Command::ConfigureRoom(config(1)));
    assert_eq!(t.room.apply(&five, T0 + 23 * SECOND), Outcome::Duplicate);
    assert_eq!(t.room.config().unwrap().capacity, 1);
    // Leaving twice: the second finds the session ended.
    t.at(
        T0 + 24 * SECOND,
        Command::Leave {
            session: a,
            reason: LeaveReason::Left,
        },
    );
    assert_eq!(
        t.at(
            T0 + 25 * SECOND,
            Command::Leave {
                session: a,
                reason: LeaveReason::Left
            }
        ),
        Outcome::AlreadyEnded { session: a }
    );
    // A join refused while the room was full stays refused when delivered again later.
    let mut c = config(1);
    c.max_waiting = Some(1);
    let mut t = Timeline::new(c);
    let first = t.join(T0, 1);
    t.join(T0, 2);
    let refused = t.record(Command::Join {
        session: SessionId::from_u128(3),
        idempotency_key: None,
    });
    assert_eq!(
        t.room.apply(&refused, T0),
        Outcome::Rejected(Rejection::RoomFull)
    );
    t.complete(T0 + 1, first);
    assert_eq!(t.room.apply(&refused, T0 + 2), Outcome::Duplicate);
    assert!(t.room.view(&SessionId::from_u128(3)).is_none());
    // Remembered ids are forgotten after the window.
    assert_eq!(
        t.room.apply(&refused, T0 + 2 + RECORD_DEDUP_WINDOW_MS),
        Outcome::Joined {
            session: SessionId::from_u128(3)
        }
    );
}

#[test]
fn time_never_goes_back() {
    let mut t = Timeline::new(config(1));
    t.join(T0 + 10 * SECOND, 1);
    let s = t.join(T0 + 10 * SECOND, 2);
    // A record stamped earlier (another producer's clock, a clock step) applies at `now`.
    t.heartbeat(T0, &[s]);
    assert_eq!(t.room.now_ms(), T0 + 10 * SECOND);
    assert_eq!(t.view(s).expires_at_ms, Some(T0 + 3610 * SECOND));
}

#[test]
fn close_ends_everyone_and_forgets_the_room() {
    let mut t = Timeline::new(config(1));
    let a = t.join(T0, 1);
    let b = t.join(T0, 2);
    assert_eq!(
        t.at(T0 + 1, Command::CloseRoom),
        Outcome::Closed { ended: 2 }
    );
    assert!(!t.room.exists());
    for s in [a, b] {
        assert_eq!(t.view(s).expired_reason, Some(ExpiredReason::Closed));
    }
    let join = Command::Join {
        session: SessionId::from_u128(3),
        idempotency_key: None,
    };
    assert_eq!(
        t.at(T0 + 2, join),
        Outcome::Rejected(Rejection::UnknownRoom)
    );
    assert_eq!(
        t.at(T0 + 3, Command::CloseRoom),
        Outcome::Rejected(Rejection::UnknownRoom)
    );
    // Created afresh: fresh statistics, and the old sessions stay ended.
    assert_eq!(
        t.at(T0 + 4, Command::ConfigureRoom(config(1))),
        Outcome::Configured { created: true }
    );
    assert_eq!(t.room.stats().expired_total.sum(), 0);
    assert_eq!(t.status(a), Status::Expired);
    let c = t.join(T0 + 5, 4);
    assert_eq!(t.status(c), Status::Active);
}

#[test]
fn ended_sessions_are_remembered_for_the_retention_period() {
    let mut t = Timeline::new(config(1));
    let s = t.join(T0, 1);
    t.complete(T0 + 1, s);
    t.at(T0 + 1 + 10 * 60 * SECOND, Command::Tick);
    assert_eq!(
        t.status(s),
        Status::Expired,
        "remembered for at least 10 minutes"
    );
    t.at(T0 + SESSION_RETENTION_MS, Command::Tick);
    assert_eq!(t.status(s), Status::Expired);
    t.at(T0 + 1 + SESSION_RETENTION_MS, Command::Tick);
    assert!(
        t.room.view(&s).is_none(),
        "forgotten after the retention period"
    );
    assert_eq!(t.room.stats().remembered_ended_count, 0);
    assert!(t.room.session_ids().next().is_none());
}

/// A fifo room of `capacity` (long timeouts) with `joined` sessions, ids 1..=joined, joined at
/// T0; `free` then ends the longest-admitted session at a steady pace.
struct Turnover {
    t: Timeline,
    /// The next session to complete (admitted in id order).
    next_done: u128,
    now: u64,
}

impl Turnover {
    fn new(capacity: u32, joined: u128) -> Self {
        let mut t = Timeline::new(config(capacity));
        for n in 1..=joined {
            t.join(T0, n);
        }
        Self {
            t,
            next_done: 1,
            now: T0,
        }
    }

    /// `count` slots freed, one every `every_ms`; the first `every_ms` from now.
    fn free(&mut self, count: u64, every_ms: u64) {
        for _ in 0..count {
            self.now += every_ms;
            let done = SessionId::from_u128(self.next_done);
            assert_eq!(self.t.status(done), Status::Active);
            self.t.complete(self.now, done);
            self.next_done += 1;
        }
    }

    fn view(&self, n: u128) -> SessionView {
        self.t.view(SessionId::from_u128(n))
    }

    /// The room's central estimate for someone joining now (at the back of the line).
    fn newcomer(&self) -> u64 {
        self.t
            .room
            .stats()
            .newcomer_wait_seconds
            .expect("an estimate")
    }

    fn configure(&mut self, at: u64, config: RoomConfig) {
        self.now = at;
        self.t.at(at, Command::configure(config, SEED));
    }
}

/// `value` lies in the range.
fn within(range: Option<WaitRange>, value: u64) -> bool {
    range.is_some_and(|r| r.low_seconds <= value && value <= r.high_seconds)
}

/// `a` is within `percent` % of `b`.
fn near(a: u64, b: u64, percent: u64) -> bool {
    a.abs_diff(b) * 100 <= b * percent
}

#[test]
fn eta_not_yet_during_the_first_fill() {
    let mut r = Turnover::new(10, 1000);
    // Full, and no slot freed yet: neither a figure nor a range, for anyone.
    for n in [11, 500, 1000] {
        let view = r.view(n);
        assert_eq!(view.status, Status::Waiting);
        assert_eq!(
            (view.estimated_wait_seconds, view.estimated_wait_range),
            (None, None)
        );
    }
    assert_eq!(r.t.room.stats().newcomer_wait_seconds, None);
    // A few slots freed say little about how long people stay: still not yet.
    r.free(ETA_FREES_MIN - 1, SECOND);
    assert_eq!(r.view(1000).estimated_wait_range, None);
    assert_eq!(r.t.room.stats().newcomer_wait_seconds, None);
    // Enough: a range (wide: 20 frees), no single figure yet.
    r.free(1, SECOND);
    let view = r.view(1000);
    assert_eq!(view.estimated_wait_seconds, None);
    let range = view.estimated_wait_range.expect("a range");
    assert!(range.low_seconds < range.high_seconds, "{range:?}");
    // One slot a second: position p is about p + 1 seconds away.
    let position = view.position.unwrap();
    assert!(within(Some(range), position + 1), "{range:?}");
}

#[test]
fn eta_not_yet_until_the_first_fill_has_turned_over() {
    // Twenty admitted at the opening, none leaving before 10 s: then one a second.
    let mut r = Turnover::new(20, 400);
    r.now = T0 + 9 * SECOND;
    r.free(ETA_FREES_MIN, SECOND);
    // Enough frees, but the first ten seconds say nothing of the hold times, and the room has run
    // 29 s, less than twice the 19 s mean hold it measured since the first free: not yet.
    assert_eq!(r.now, T0 + 29 * SECOND);
    assert_eq!(r.view(400).estimated_wait_range, None);
    assert_eq!(r.t.room.stats().newcomer_wait_seconds, None);
    // Ten seconds on: an estimate, about a second a place (the front of the line is 51).
    r.free(10, SECOND);
    let view = r.view(51 + 99);
    assert_eq!(view.position, Some(99));
    assert!(within(view.estimated_wait_range, 100));
}

#[test]
fn eta_steady_turnover_gives_a_figure_only_where_the_range_is_narrow() {
    // Ten slots, one freed every second (each held 10 s): position p waits p + 1 s.
    let mut r = Turnover::new(10, 2000);
    r.free(400, SECOND);
    // Active: 401..=410; the line starts at 411.
    let front = r.view(411);
    assert_eq!(front.position, Some(0));
    // The next slot: anything from now to a few seconds: a range, no figure.
    assert_eq!(front.estimated_wait_seconds, None);
    assert!(within(front.estimated_wait_range, 1));
    assert_eq!(front.estimated_wait_range.unwrap().low_seconds, 0);
    // 300 slots away, with 296 freed in the window: a figure, in its range.
    let mid = r.view(411 + 299);
    let figure = mid.estimated_wait_seconds.expect("a figure");
    assert!(near(figure, 300, 2), "{figure}");
    assert!(within(mid.estimated_wait_range, figure));
    assert!(within(mid.estimated_wait_range, 300));
    // 1000 slots away: the range is more than a minute either side, so the range alone.
    let far = r.view(411 + 999);
    assert_eq!(far.estimated_wait_seconds, None);
    let range = far.estimated_wait_range.unwrap();
    assert!(within(Some(range), 1000), "{range:?}");
    assert!(range.high_seconds - range.low_seconds > 2 * 60, "{range:?}");
}

#[test]
fn eta_follows_a_capacity_change_at_once() {
    let mut r = Turnover::new(10, 2000);
    r.free(400, SECOND);
    // The line: 411..=2000 (1590 waiting); a newcomer needs 1591 slots at one a second.
    assert!(near(r.newcomer(), 1591, 2), "{}", r.newcomer());
    // Twice the slots, each held as long: twice the turnover, from the raise on (the ten
    // admitted at once leave 1580 waiting).
    r.configure(r.now + 1, config(20));
    assert_eq!(r.t.room.stats().waiting_count, 1580);
    assert!(near(r.newcomer(), 1581 / 2, 2), "{}", r.newcomer());
    // The ten just admitted will hardly leave within a hold: until one has passed, the high end
    // turns over only the ten slots held throughout (as before the raise), and no figure.
    let view = r.view(421 + 299);
    assert_eq!(view.position, Some(299));
    assert_eq!(view.estimated_wait_seconds, None);
    let range = view.estimated_wait_range.unwrap();
    assert!(
        within(Some(range), 150) && range.high_seconds >= 300,
        "{range:?}"
    );
    // A mean hold (10 s) later, with twenty slots held throughout: the figure, at twice the pace.
    r.free(20, SECOND / 2);
    let view = r.view(441 + 299);
    assert_eq!(view.position, Some(299));
    let figure = view.estimated_wait_seconds.expect("a figure");
    assert!(near(figure, 150, 3), "{figure}");
    // Down to 5 with 20 inside: the 15 over capacity leave first (at 12.5 active on average,
    // a slot every 10 s / 12.5), then one slot every 2 s: 12 s + 2 s per place.
    r.configure(r.now + 1, config(5));
    let view = r.view(441 + 99);
    assert_eq!(view.position, Some(99));
    assert!(within(view.estimated_wait_range, 12 + 200));
    let waiting = r.t.room.stats().waiting_count;
    assert!(
        near(r.newcomer(), 12 + 2 * (waiting + 1), 2),
        "{}",
        r.newcomer()
    );
}

#[test]
fn eta_pause_then_resume() {
    let mut r = Turnover::new(10, 2000);
    r.free(400, SECOND);
    let before = r.newcomer();
    let mut paused = config(10);
    paused.paused = true;
    r.configure(r.now + 1, paused);
    // Paused: nobody knows for how long.
    let view = r.view(1000);
    assert_eq!(
        (view.estimated_wait_seconds, view.estimated_wait_range),
        (None, None)
    );
    assert_eq!(r.t.room.stats().newcomer_wait_seconds, None);
    // The ten inside finish during the pause; nobody is admitted.
    r.free(10, SECOND);
    // Resumed 200 s later: the room fills again at once. Two thirds of the window had empty
    // slots; counted per occupied slot, the turnover is still about one slot a second (101
    // slots freed in the window: counted over the window's 305 s, it would be one every 3 s).
    // The drain during the pause is the one bias: the last ten left within 10 s of the pause.
    r.configure(r.now + 200 * SECOND, config(10));
    assert_eq!(r.t.room.stats().active_count, 10);
    let waiting = r.t.room.stats().waiting_count;
    assert_eq!(waiting, 1590 - 10);
    assert!(near(before, 1591, 2), "{before}");
    assert!(near(r.newcomer(), waiting + 1, 6), "{}", r.newcomer());
    let view = r.view(421 + 299);
    assert!(within(view.estimated_wait_range, 300));
}

#[test]
fn eta_abandonment_widens_the_range_downwards() {
    let mut r = Turnover::new(10, 2000);
    r.free(400, SECOND);
    let view = r.view(411 + 299);
    let before = view.estimated_wait_range.unwrap();
    assert!(view.estimated_wait_seconds.is_some());
    // 400 of the line give up (from the back): 400 / (400 + 410) left rather than got in.
    for n in 1601..=2000 {
        r.t.at(
            r.now,
            Command::Leave {
                session: SessionId::from_u128(n),
                reason: LeaveReason::Left,
            },
        );
    }
    let view = r.view(411 + 299);
    let after = view.estimated_wait_range.unwrap();
    // The high end stands (nobody ahead need leave); the low end allows for those ahead who
    // may: about half of them.
    assert_eq!(after.high_seconds, before.high_seconds);
    assert!(
        after.low_seconds * 100 < before.low_seconds * 60,
        "{before:?} {after:?}"
    );
    // Too wide for a single figure.
    assert_eq!(view.estimated_wait_seconds, None);
}

#[test]
fn a_newcomers_wait_is_the_estimate_at_the_back_of_the_line() {
    let mut t = Timeline::new(config(2));
    // Open, a free slot, no rate limit: admitted at once.
    assert_eq!(t.room.stats().newcomer_wait_seconds, Some(0));
    let mut r = Turnover::new(2, 100);
    // Full, and no slot freed yet: no estimate.
    assert_eq!(r.t.room.stats().newcomer_wait_seconds, None);
    // One slot freed every 3 s (each held 6 s); 100 - 2 - 30 = 68 wait, so a newcomer needs
    // 69 slots: 207 s.
    // (Within 3 %: the first 5-s bucket, where both were admitted at once, counts as half
    // full.)
    r.free(30, 3 * SECOND);
    assert!(near(r.newcomer(), 207, 3), "{}", r.newcomer());
    // The last one in line: its range holds the same estimate for 68 slots.
    assert!(within(r.view(100).estimated_wait_range, 204));
    // Paused: none.
    let mut paused = config(2);
    paused.paused = true;
    t.at(T0 + 61 * SECOND, Command::ConfigureRoom(paused));
    assert_eq!(t.room.stats().newcomer_wait_seconds, None);
    // A free slot but a rate limit: the wait for the next token, exactly.
    let mut limited = config(5);
    limited.admit_per_minute = Some(30);
    let t = Timeline::new(limited);
    assert_eq!(t.room.stats().newcomer_wait_seconds, Some(2));
    // Before opening: none.
    let mut later = config(5);
    later.opens_at_ms = Some(T0 + 60 * SECOND);
    let t = Timeline::new(later);
    assert_eq!(t.room.stats().newcomer_wait_seconds, None);
}

#[test]
fn records_for_another_room_are_refused() {
    let mut t = Timeline::new(config(1));
    let record = Record::new(
        RecordId::from_u128(99),
        RoomId::new("other").unwrap(),
        Command::Tick,
    );
    assert_eq!(
        t.room.apply(&record, T0),
        Outcome::Rejected(Rejection::WrongRoom)
    );
}

#[test]
fn invalid_configuration_changes_nothing() {
    let mut t = Timeline::new(config(3));
    let digest = t.room.digest();
    let outcome = t.at(T0, Command::ConfigureRoom(config(0)));
    assert!(
        matches!(outcome, Outcome::Rejected(Rejection::InvalidConfig(e)) if e.field == "capacity")
    );
    assert_eq!(t.room.config().unwrap().capacity, 3);
    // Only the remembered record id differs.
    assert_ne!(t.room.digest(), digest);
    assert_eq!(t.room.stats(), Timeline::new(config(3)).room.stats());
}

#[test]
fn completing_a_waiting_session_is_refused() {
    let mut t = Timeline::new(config(1));
    t.join(T0, 1);
    let waiting = t.join(T0, 2);
    assert_eq!(
        t.complete(T0 + 1, waiting),
        Outcome::Rejected(Rejection::NotActive)
    );
    assert_eq!(t.status(waiting), Status::Waiting);
    let unknown = SessionId::from_u128(77);
    assert_eq!(
        t.complete(T0 + 1, unknown),
        Outcome::Rejected(Rejection::UnknownSession)
    );
    assert_eq!(
        t.at(T0 + 1, Command::Evict { session: unknown }),
        Outcome::Rejected(Rejection::UnknownSession)
    );
    assert_eq!(
        t.at(T0 + 1, Command::Evict { session: waiting }),
        Outcome::Ended { session: waiting }
    );
    assert_eq!(t.view(waiting).expired_reason, Some(ExpiredReason::Evicted));
}

/// A rooms-file entry applies once: the same entry again (a restart, or several nodes starting
/// at once) changes nothing, whatever was changed through the API in between; a changed entry
/// applies; the entry survives a close, so the same file does not re-create a closed room.
#[test]
fn a_rooms_file_entry_applies_once() {
    let file = |config: &RoomConfig| Command::ConfigureRoomFromFile {
        config: config.clone(),
        file_entry_digest: config.digest(),
    };
    let mut t = Timeline {
        room: Room::new(RoomId::new("rules").unwrap()),
        next_id: 1,
    };
    let entry = config(5);
    let first = t.record(file(&entry));
    assert_eq!(
        t.room.apply(&first, T0),
        Outcome::Configured { created: true }
    );
    assert_eq!(t.room.file_entry_digest(), Some(entry.digest()));
    // An operator pauses the room and raises its capacity through the API.
    let by_api = RoomConfig {
        paused: true,
        ..config(7)
    };
    let api = t.at(T0 + SECOND, Command::ConfigureRoom(by_api.clone()));
    assert_eq!(api, Outcome::Configured { created: false });
    // Two nodes restart with the same file and both append its entry: nothing changes.
    assert_eq!(t.at(T0 + 2 * SECOND, file(&entry)), Outcome::Duplicate);
    assert_eq!(t.at(T0 + 2 * SECOND, file(&entry)), Outcome::Duplicate);
    assert_eq!(t.room.config(), Some(&by_api));
    assert_eq!(t.room.file_entry_digest(), Some(entry.digest()));
    // The file changed: its new entry applies, over the API's settings.
    let changed = config(9);
    let applied = t.at(T0 + 3 * SECOND, file(&changed));
    assert_eq!(applied, Outcome::Configured { created: false });
    assert_eq!(t.room.config(), Some(&changed));
    assert_eq!(t.room.file_entry_digest(), Some(changed.digest()));
    // The old entry's first record, delivered again, is recognised by its id: it does not undo
    // the newer entry.
    assert_eq!(t.room.apply(&first, T0 + 4 * SECOND), Outcome::Duplicate);
    assert_eq!(t.room.config(), Some(&changed));
    // A close through the API stands too: the entry last applied is remembered.
    assert_eq!(
        t.at(T0 + 5 * SECOND, Command::CloseRoom),
        Outcome::Closed { ended: 0 }
    );
    assert_eq!(t.at(T0 + 6 * SECOND, file(&changed)), Outcome::Duplicate);
    assert!(!t.room.exists());
    // An invalid entry is refused and not remembered.
    let invalid = config(0);
    assert!(matches!(
        t.at(T0 + 7 * SECOND, file(&invalid)),
        Outcome::Rejected(Rejection::InvalidConfig(_))
    ));
    assert_eq!(t.room.file_entry_digest(), Some(changed.digest()));
    // A changed entry re-creates the closed room.
    let created = t.at(T0 + 8 * SECOND, file(&entry));
    assert_eq!(created, Outcome::Configured { created: true });
}

// Queueing methods.

fn with_method(config: RoomConfig, method: QueueingMethod) -> RoomConfig {
    RoomConfig {
        queueing_method: method,
        ..config
    }
}

/// A room with `method`, configured as nodes write it (`Command::configure`).
fn method_timeline(capacity: u32, method: QueueingMethod) -> Timeline {
    Timeline::configured(Command::configure(
        with_method(config(capacity), method),
        SEED,
    ))
}

/// Who is ACTIVE, in admission order (then id).
fn admitted_in_order(room: &Room) -> Vec<SessionId> {
    let mut active: Vec<(u64, SessionId)> = room
        .session_ids()
        .filter_map(|id| {
            let view = room.view(&id)?;
            (view.status == Status::Active).then_some((view.admitted_at_ms?, id))
        })
        .collect();
    active.sort_unstable();
    active.into_iter().map(|(_, id)| id).collect()
}

#[test]
fn the_method_is_configured_echoed_and_in_the_digest() {
    let t = method_timeline(2, QueueingMethod::Random);
    assert_eq!(
        t.room.config().unwrap().queueing_method,
        QueueingMethod::Random
    );
    let fifo = Timeline::new(config(2));
    assert_eq!(
        fifo.room.config().unwrap().queueing_method,
        QueueingMethod::Fifo
    );
    assert_ne!(t.room.digest(), fifo.room.digest());
    // A seedless record from before methods configures a fifo room, whatever its in-memory
    // config says (its encoding has no method).
    let mut legacy = Timeline::configured(Command::ConfigureRoom(with_method(
        config(2),
        QueueingMethod::Reject,
    )));
    assert_eq!(
        legacy.room.config().unwrap().queueing_method,
        QueueingMethod::Fifo
    );
    legacy.join(T0 + 1, 1);
}

#[test]
fn random_admits_by_the_draw_and_gives_no_positions() {
    let mut t = method_timeline(1, QueueingMethod::Random);
    let first = t.join(T0 + 1, 1);
    assert_eq!(t.status(first), Status::Active);
    let waiting: Vec<SessionId> = (2..=41).map(|n| t.join(T0 + 1, n)).collect();
    for &s in &waiting {
        let view = t.view(s);
        assert_eq!((view.status, view.position), (Status::Waiting, None));
        assert_eq!(view.waiting_count, 40);
    }
    // Slots free one at a time: each goes to the session the public draw function picks from
    // the line in join order, with the room's seed and the number admitted so far.
    let mut line = waiting.clone();
    let mut previous = first;
    let mut out_of_order = false;
    for step in 0..20u64 {
        let admitted_total = t.room.stats().admitted_total;
        let k = admission_draw(SEED.to_u64(), admitted_total, line.len() as u32) as usize;
        let expected = line.remove(k);
        out_of_order |= k != 0;
        t.complete(T0 + 10 + step, previous);
        assert_eq!(t.status(expected), Status::Active, "step {step}");
        previous = expected;
    }
    assert!(out_of_order, "twenty draws all took the head of the line");
    assert_eq!(t.room.stats().waiting_count, 20);
}

/// Two replicas applying the same log admit the same sessions in the same order; another seed
/// admits others.
#[test]
fn random_draws_identically_on_two_replicas() {
    let run = |seed: DrawSeed| {
        let mut a = Room::new(RoomId::new("lottery").unwrap());
        let mut b = Room::new(RoomId::new("lottery").unwrap());
        let mut records = vec![Record::new(
            RecordId::from_u128(1),
            a.id().clone(),
            Command::configure(with_method(config(3), QueueingMethod::Random), seed),
        )];
        for n in 0..60u128 {
            records.push(Record::new(
                RecordId::from_u128(100 + n),
                a.id().clone(),
                Command::Join {
                    session: SessionId::from_u128(1000 + n),
                    idempotency_key: None,
                },
            ));
        }
        // Free slots by completing whoever is active, again and again.
        let mut log: Vec<(Record, u64)> = records.into_iter().map(|r| (r, T0)).collect();
        for (record, ts) in &log {
            assert_eq!(a.apply(record, *ts), b.apply(record, *ts));
        }
        for round in 0..15u128 {
            for session in admitted_in_order(&a) {
                let record = Record::new(
                    RecordId::from_u128(10_000 + round * 100 + session.0[0] as u128),
                    a.id().clone(),
                    Command::Leave {
                        session,
                        reason: LeaveReason::Completed,
                    },
                );
                let ts = T0 + 1 + round as u64;
                assert_eq!(a.apply(&record, ts), b.apply(&record, ts));
                log.push((record, ts));
            }
        }
        assert_eq!(a.digest(), b.digest());
        assert_eq!(admitted_in_order(&a), admitted_in_order(&b));
        // The order in which everyone was admitted, from the views.
        let mut order: Vec<(u64, SessionId)> = a
            .session_ids()
            .filter_map(|id| Some((a.view(&id)?.admitted_at_ms?, id)))
            .collect();
        order.sort_unstable();
        // A third replica replaying the whole log from a snapshot taken midway agrees too.
        let mut c = Room::new(RoomId::new("lottery").unwrap());
        let half = log.len() / 2;
        for (record, ts) in &log[..half] {
            c.apply(record, *ts);
        }
        let mut c = Room::restore_snapshot(&c.encode_snapshot()).unwrap();
        for (record, ts) in &log[half..] {
            c.apply(record, *ts);
        }
        assert_eq!(c.digest(), a.digest());
        (order, a.digest())
    };
    let (order, _) = run(SEED);
    assert_eq!(order.len(), 48, "3 admitted per round, 16 rounds");
    let (again, _) = run(SEED);
    assert_eq!(again, order);
    let (other, _) = run(DrawSeed::from_u64(0xd1ff));
    assert_ne!(
        other.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        order.iter().map(|(_, id)| *id).collect::<Vec<_>>()
    );
}

#[test]
fn random_estimates_the_middle_of_the_line() {
    // Two rooms of one slot, 61 joined at once, the slot freed every 2 s 25 times: 35 wait.
    let mut t = method_timeline(1, QueueingMethod::Random);
    let mut fifo = Timeline::new(config(1));
    for n in 1..=61 {
        t.join(T0, n);
        fifo.join(T0, n);
    }
    for k in 1..=25 {
        let at = T0 + k * 2 * SECOND;
        let active = (1..=61)
            .map(SessionId::from_u128)
            .find(|&s| t.status(s) == Status::Active)
            .unwrap();
        t.complete(at, active);
        fifo.complete(at, SessionId::from_u128(u128::from(k)));
    }
    // Everyone in the lottery gets the estimate for position (35 - 1) / 2 = 17.
    let middle = fifo.view(SessionId::from_u128(27 + 17));
    assert_eq!(middle.position, Some(17));
    assert!(middle.estimated_wait_range.is_some());
    let waiting: Vec<SessionView> = (1..=61)
        .map(|n| t.view(SessionId::from_u128(n)))
        .filter(|v| v.status == Status::Waiting)
        .collect();
    assert_eq!(waiting.len(), 35);
    for view in &waiting {
        assert_eq!(view.position, None);
        assert_eq!(view.estimated_wait_seconds, middle.estimated_wait_seconds);
        assert_eq!(view.estimated_wait_range, middle.estimated_wait_range);
    }
    // A newcomer would be the 36th: the middle is still position 35 / 2 = 17, about 36 s.
    let newcomer = t.room.stats().newcomer_wait_seconds.unwrap();
    assert!(within(middle.estimated_wait_range, newcomer));
    assert!(near(newcomer, 36, 5), "{newcomer}");
}

#[test]
fn passthrough_admits_everyone_beyond_capacity_and_the_rate() {
    let mut t = Timeline::configured(Command::configure(
        RoomConfig {
            admit_per_minute: Some(1),
            ..with_method(config(2), QueueingMethod::Passthrough)
        },
        SEED,
    ));
    let sessions: Vec<SessionId> = (1..=10).map(|n| t.join(T0 + 1, n)).collect();
    for &s in &sessions {
        assert_eq!(t.status(s), Status::Active);
    }
    let stats = t.room.stats();
    assert_eq!((stats.active_count, stats.admitted_total), (10, 10));
    assert_eq!(stats.newcomer_wait_seconds, Some(0));
    // Paused: people wait (with no estimate); unpaused, all of them go in at once.
    let paused = RoomConfig {
        paused: true,
        ..with_method(config(2), QueueingMethod::Passthrough)
    };
    t.at(T0 + 2, Command::configure(paused, SEED));
    let waiting: Vec<SessionId> = (11..=14).map(|n| t.join(T0 + 3, n)).collect();
    assert_eq!(t.view(waiting[3]).position, Some(3));
    assert_eq!(t.view(waiting[3]).estimated_wait_seconds, None);
    t.at(
        T0 + 4,
        Command::configure(with_method(config(2), QueueingMethod::Passthrough), SEED),
    );
    assert!(waiting.iter().all(|&s| t.status(s) == Status::Active));
    assert_eq!(t.room.active_count(), 14);
    // Back to fifo: nobody is admitted until active is below capacity again.
    t.at(T0 + 5, Command::configure(config(2), SEED));
    let late = t.join(T0 + 6, 20);
    assert_eq!(t.view(late).position, Some(0));
    for &s in &sessions {
        t.complete(T0 + 7, s);
    }
    assert_eq!(t.status(late), Status::Waiting);
    for &s in &waiting[..3] {
        t.complete(T0 + 8, s);
    }
    assert_eq!(t.status(late), Status::Active);
    assert_eq!(t.room.active_count(), 2);
}

#[test]
fn switching_to_passthrough_admits_everyone_waiting() {
    let mut t = method_timeline(1, QueueingMethod::Fifo);
    let s: Vec<SessionId> = (1..=5).map(|n| t.join(T0 + 1, n)).collect();
    assert_eq!(t.room.stats().waiting_count, 4);
    let outcome = t.at(
        T0 + 2,
        Command::configure(with_method(config(1), QueueingMethod::Passthrough), SEED),
    );
    assert_eq!(outcome, Outcome::Configured { created: false });
    assert!(s.iter().all(|&s| t.status(s) == Status::Active));
}

#[test]
fn reject_refuses_joins_and_serves_those_already_in() {
    let mut t = method_timeline(1, QueueingMethod::Fifo);
    let keyed = SessionId::from_u128(1);
    t.at(
        T0,
        Command::Join {
            session: keyed,
            idempotency_key: Some(IdempotencyKey::new("k").unwrap()),
        },
    );
    let waiting = t.join(T0, 2);
    t.at(
        T0 + 1,
        Command::configure(with_method(config(1), QueueingMethod::Reject), SEED),
    );
    let refused = t.at(
        T0 + 2,
        Command::Join {
            session: SessionId::from_u128(3),
            idempotency_key: None,
        },
    );
    assert_eq!(refused, Outcome::Rejected(Rejection::JoinsRefused));
    assert!(t.room.view(&SessionId::from_u128(3)).is_none());
    // An idempotent replay still answers its session; a duplicate is a duplicate.
    let replay = t.at(
        T0 + 2,
        Command::Join {
            session: SessionId::from_u128(4),
            idempotency_key: Some(IdempotencyKey::new("k").unwrap()),
        },
    );
    assert_eq!(replay, Outcome::Replayed { session: keyed });
    let duplicate = t.at(
        T0 + 2,
        Command::Join {
            session: waiting,
            idempotency_key: None,
        },
    );
    assert_eq!(duplicate, Outcome::Duplicate);
    // Those in the room carry on: the waiting one has its place and is admitted in turn.
    assert_eq!(t.view(waiting).position, Some(0));
    assert_eq!(t.room.stats().newcomer_wait_seconds, None);
    t.complete(T0 + 3, keyed);
    assert_eq!(t.status(waiting), Status::Active);
    // Back to fifo: joins are taken again.
    t.at(T0 + 4, Command::configure(config(1), SEED));
    t.join(T0 + 5, 5);
}

#[test]
fn random_then_fifo_keeps_join_order() {
    let mut t = method_timeline(1, QueueingMethod::Random);
    let first = t.join(T0, 1);
    let waiting: Vec<SessionId> = (2..=8).map(|n| t.join(T0 + n as u64, n)).collect();
    t.at(T0 + 20, Command::configure(config(1), SEED));
    for (i, &s) in waiting.iter().enumerate() {
        assert_eq!(t.view(s).position, Some(i as u64));
    }
    t.complete(T0 + 21, first);
    assert_eq!(t.status(waiting[0]), Status::Active);
    assert_eq!(t.view(waiting[1]).position, Some(0));
}

// Passes.

fn issue(t: &mut Timeline, ts: u64, passes: &[u8], expires_at_ms: u64) -> Outcome {
    t.at(
        ts,
        Command::IssuePasses {
            passes: passes.iter().map(|&b| [b; 16]).collect(),
            expires_at_ms,
        },
    )
}

fn join_with_pass(t: &mut Timeline, ts: u64, n: u128, pass: u8) -> Outcome {
    t.at(
        ts,
        Command::JoinWithPass {
            session: SessionId::from_u128(n),
            idempotency_key: None,
            pass: [pass; 16],
        },
    )
}

/// Nothing observable changed but time: views of `sessions`, counts and the digest at `ts`.
fn state(t: &Timeline, sessions: &[SessionId]) -> (Vec<Option<SessionView>>, u64, u64) {
    (
        sessions.iter().map(|s| t.room.view(s)).collect(),
        t.room.waiting_count(),
        t.room.active_count(),
    )
}

#[test]
fn a_pass_admits_at_once_ahead_of_the_line() {
    let mut t = Timeline::new(config(1));
    let a = t.join(T0, 1);
    let b = t.join(T0, 2);
    assert_eq!(t.status(a), Status::Active);
    assert_eq!(t.view(b).position, Some(0));
    let outcome = issue(&mut t, T0 + 1, &[7, 8], T0 + 3600 * SECOND);
    assert_eq!(outcome, Outcome::PassesIssued { issued: 2 });
    let session = SessionId::from_u128(3);
    assert_eq!(
        join_with_pass(&mut t, T0 + 2, 3, 7),
        Outcome::Joined { session }
    );
    // Admitted at once, past the full room; the line did not move and is served next.
    assert_eq!(t.status(session), Status::Active);
    assert_eq!(t.room.active_count(), 2);
    assert_eq!(t.view(b).position, Some(0));
    t.complete(T0 + 3, a);
    assert_eq!(t.status(b), Status::Waiting, "two active, capacity 1");
    t.complete(T0 + 4, session);
    assert_eq!(t.status(b), Status::Active);
}

#[test]
fn used_expired_and_unknown_passes_are_refused_and_change_nothing() {
    let mut t = Timeline::new(config(1));
    let a = t.join(T0, 1);
    let b = t.join(T0, 2);
    issue(&mut t, T0, &[7, 8], T0 + 10 * SECOND);
    assert_eq!(
        join_with_pass(&mut t, T0 + 1, 3, 7),
        Outcome::Joined {
            session: SessionId::from_u128(3)
        }
    );
    let sessions = [a, b, SessionId::from_u128(3), SessionId::from_u128(4)];
    let before = state(&t, &sessions);
    let digest_before = t.room.digest();
    // Used.
    assert_eq!(
        join_with_pass(&mut t, T0 + 1, 4, 7),
        Outcome::Rejected(Rejection::InvalidPass)
    );
    // Never issued (a pass of another room is one this room never issued: hashes include the
    // room id).
    assert_eq!(
        join_with_pass(&mut t, T0 + 1, 4, 9),
        Outcome::Rejected(Rejection::InvalidPass)
    );
    assert_eq!(state(&t, &sessions), before);
    assert_ne!(
        t.room.digest(),
        digest_before,
        "rejected records are remembered"
    );
    // Expired: exactly at its expiry, a pass has expired.
    assert_eq!(
        join_with_pass(&mut t, T0 + 10 * SECOND, 4, 8),
        Outcome::Rejected(Rejection::InvalidPass)
    );
    assert_eq!(t.room.view(&SessionId::from_u128(4)), None);
    assert_eq!(t.view(b).position, Some(0));
}

#[test]
fn pass_issues_out_of_range_are_refused() {
    let mut t = Timeline::new(config(1));
    let month = limits::PASS_LIFETIME_MS_MAX;
    assert_eq!(
        issue(&mut t, T0, &[], T0 + SECOND),
        Outcome::Rejected(Rejection::InvalidPasses)
    );
    assert_eq!(
        issue(&mut t, T0, &[1], T0),
        Outcome::Rejected(Rejection::InvalidPasses)
    );
    assert_eq!(
        issue(&mut t, T0, &[1], T0 + month + 1),
        Outcome::Rejected(Rejection::InvalidPasses)
    );
    assert_eq!(
        issue(&mut t, T0, &[1], T0 + month),
        Outcome::PassesIssued { issued: 1 }
    );
    let mut unknown = Timeline::new(config(1));
    unknown.at(T0, Command::CloseRoom);
    assert_eq!(
        issue(&mut unknown, T0, &[1], T0 + SECOND),
        Outcome::Rejected(Rejection::UnknownRoom)
    );
}

#[test]
fn invite_only_refuses_joins_without_a_pass() {
    let mut t = method_timeline(1, QueueingMethod::InviteOnly);
    let refused = t.at(
        T0,
        Command::Join {
            session: SessionId::from_u128(1),
            idempotency_key: None,
        },
    );
    assert_eq!(refused, Outcome::Rejected(Rejection::PassRequired));
    assert_eq!(t.room.waiting_count(), 0);
    issue(&mut t, T0, &[7], T0 + SECOND);
    assert_eq!(
        join_with_pass(&mut t, T0, 2, 7),
        Outcome::Joined {
            session: SessionId::from_u128(2)
        }
    );
    assert_eq!(t.status(SessionId::from_u128(2)), Status::Active);
}

#[test]
fn a_pass_join_replays_by_idempotency_key_and_closing_forgets_passes() {
    let mut t = Timeline::new(config(1));
    issue(&mut t, T0, &[7, 8], T0 + 60 * SECOND);
    let key = IdempotencyKey::new("k").unwrap();
    let join = |n: u128| Command::JoinWithPass {
        session: SessionId::from_u128(n),
        idempotency_key: Some(key.clone()),
        pass: [7; 16],
    };
    assert_eq!(
        t.at(T0, join(1)),
        Outcome::Joined {
            session: SessionId::from_u128(1)
        }
    );
    // A retry with a new session id: the key answers, though the pass is used.
    assert_eq!(
        t.at(T0 + 1, join(2)),
        Outcome::Replayed {
            session: SessionId::from_u128(1)
        }
    );
    t.at(T0 + 2, Command::CloseRoom);
    t.at(T0 + 3, Command::configure(config(1), SEED));
    assert_eq!(
        join_with_pass(&mut t, T0 + 4, 3, 8),
        Outcome::Rejected(Rejection::InvalidPass)
    );
}

#[test]
fn passes_survive_a_snapshot_and_change_the_digest() {
    let mut t = Timeline::new(config(1));
    let plain = t.room.encode_snapshot();
    assert_eq!(plain[4], 2, "a room without passes is written as before");
    issue(&mut t, T0 + 1, &[7, 8], T0 + 60 * SECOND);
    let bytes = t.room.encode_snapshot();
    assert_eq!(bytes[4], 4, "a room with passes and no challenge");
    let restored = Room::restore_snapshot(&bytes).expect("a room's own snapshot");
    assert_eq!(restored.digest(), t.room.digest());
    let mut r = Timeline {
        room: restored,
        next_id: 1000,
    };
    assert_eq!(
        join_with_pass(&mut r, T0 + 2, 3, 8),
        Outcome::Joined {
            session: SessionId::from_u128(3)
        }
    );
    // Once the passes expire, the room is written as before passes again.
    t.at(T0 + 60 * SECOND, Command::Tick);
    assert_eq!(t.room.encode_snapshot()[4], 2);
}

/// A challenge's difficulty is configuration the state machine carries: it survives a snapshot
/// (format version 5), and a configuration without one takes it away.
#[test]
fn a_challenge_survives_a_snapshot() {
    let mut t = Timeline::configured(Command::configure(
        RoomConfig {
            challenge_difficulty_bits: 20,
            ..config(1)
        },
        SEED,
    ));
    let bytes = t.room.encode_snapshot();
    assert_eq!(bytes[4], 5, "format version 5: a challenge, no events");
    let restored = Room::restore_snapshot(&bytes).expect("a room's own snapshot");
    assert_eq!(restored.last_config().challenge_difficulty_bits, 20);
    assert_eq!(restored.digest(), t.room.digest());
    let outcome = t.at(T0 + 1, Command::configure(config(1), SEED));
    assert!(matches!(outcome, Outcome::Configured { created: false }));
    assert_eq!(t.room.last_config().challenge_difficulty_bits, 0);
    assert_eq!(
        t.room.encode_snapshot()[4],
        2,
        "written as before challenges"
    );
}

const MINUTE: u64 = 60 * SECOND;

/// A room of capacity 1 with two events: "early" (T0 + 10 min to + 20 min, capacity 4, a
/// 5-minute pre-queue) and "late" (T0 + 30 min to + 40 min, capacity 2, 100 admissions a minute,
/// no pre-queue).
fn scheduled() -> RoomConfig {
    RoomConfig {
        events: vec![
            RoomEvent {
                capacity: Some(4),
                pre_queue_minutes: Some(5),
                ..RoomEvent::new("early", T0 + 10 * MINUTE, T0 + 20 * MINUTE)
            },
            RoomEvent {
                capacity: Some(2),
                admit_per_minute: Some(100),
                ..RoomEvent::new("late", T0 + 30 * MINUTE, T0 + 40 * MINUTE)
            },
        ],
        ..config(1)
    }
}

fn configure_scheduled(config: RoomConfig, seed: u64) -> Timeline {
    let command = Command::configure(config, DrawSeed::from_u64(seed));
    assert!(matches!(command, Command::ConfigureRoomScheduled { .. }));
    Timeline::configured(command)
}

/// Outside events the room's own settings hold; from an event's start (inclusive) to its end
/// (exclusive) the event's capacity does, switched by the record whose time reaches the boundary.
#[test]
fn events_switch_capacity_at_their_start_and_end() {
    let mut t = configure_scheduled(scheduled(), 1);
    assert_eq!(t.room.capacity(), 1);
    assert_eq!(t.room.current_event(), None);
    assert_eq!(t.room.next_event().map(|e| e.name.as_str()), Some("early"));
    // Before any pre-queue: the room's own capacity of 1, first come first served.
    let a = t.join(T0 + 1, 1);
    let b = t.join(T0 + 2, 2);
    let c = t.join(T0 + 3, 3);
    assert_eq!(t.status(a), Status::Active);
    assert_eq!(t.view(b).position, Some(0));
    // One millisecond before the start nothing changes; at the start the event's capacity
    // admits two more.
    t.at(T0 + 10 * MINUTE - 1, Command::Tick);
    assert_eq!(t.status(b), Status::Waiting);
    t.at(T0 + 10 * MINUTE, Command::Tick);
    assert_eq!(t.room.capacity(), 4);
    assert_eq!(
        t.room.current_event().map(|e| e.name.as_str()),
        Some("early")
    );
    assert_eq!(t.room.next_event().map(|e| e.name.as_str()), Some("late"));
    assert_eq!(t.status(b), Status::Active);
    assert_eq!(t.status(c), Status::Active);
    // At the end the room's capacity is back: nobody is evicted, nobody new admitted while the
    // active count is over it.
    let d = t.join(T0 + 15 * MINUTE, 4);
    assert_eq!(t.status(d), Status::Active, "a slot of the event was free");
    let e = t.join(T0 + 16 * MINUTE, 5);
    t.heartbeat(T0 + 19 * MINUTE, &[a, b, c, d, e]);
    t.at(T0 + 20 * MINUTE, Command::Tick);
    assert_eq!(t.room.capacity(), 1);
    assert_eq!(t.room.current_event(), None);
    assert_eq!(t.room.active_count(), 4);
    t.complete(T0 + 21 * MINUTE, a);
    t.complete(T0 + 21 * MINUTE, b);
    t.complete(T0 + 21 * MINUTE, c);
    assert_eq!(t.status(e), Status::Waiting, "still at capacity 1");
    t.complete(T0 + 21 * MINUTE, d);
    assert_eq!(t.status(e), Status::Active);
    // After the last event: the room's own settings.
    t.at(T0 + 40 * MINUTE, Command::Tick);
    assert_eq!(t.room.capacity(), 1);
    assert_eq!(t.room.next_event(), None);
}

/// Joins in an event's pre-queue wait for its start and are drawn there, behind whoever waited
/// in the line before the pre-queue opened and ahead of everyone who joins later.
#[test]
fn an_events_pre_queue_is_drawn_at_its_start() {
    let mut t = configure_scheduled(scheduled(), 7);
    let first = t.join(T0 + 1, 1); // admitted: capacity 1
    let early = t.join(T0 + 2, 2); // in line before the pre-queue opens
    assert_eq!(t.status(first), Status::Active);
    // The pre-queue opens 5 minutes before the start.
    let before = t.join(T0 + 5 * MINUTE - 1, 3);
    assert!(!t.view(before).prequeue);
    let pre: Vec<SessionId> = (10..40)
        .map(|n| t.join(T0 + 5 * MINUTE + n as u64, n))
        .collect();
    for &s in &pre {
        let view = t.view(s);
        assert!(view.prequeue);
        assert_eq!(view.position, None);
        assert_eq!(
            view.opens_at_ms,
            Some(T0 + 10 * MINUTE),
            "drawn at the start"
        );
    }
    assert_eq!(t.room.stats().newcomer_wait_seconds, None);
    // The line is still served meanwhile.
    t.complete(T0 + 6 * MINUTE, first);
    assert_eq!(t.status(early), Status::Active);
    t.heartbeat(T0 + 9 * MINUTE, &[early, before]);
    t.heartbeat(T0 + 9 * MINUTE, &pre);
    // At the start: the event's capacity of 4 admits `before` and the first two drawn.
    t.at(T0 + 10 * MINUTE, Command::Tick);
    let later = t.join(T0 + 10 * MINUTE + 1, 99);
    assert!(pre.iter().all(|&s| !t.view(s).prequeue));
    let mut all = vec![early, before];
    all.extend(&pre);
    all.push(later);
    let order = placed(&t, &all);
    assert_eq!(order[..2], [early, before]);
    assert_eq!(*order.last().unwrap(), later);
    let drawn = &order[2..order.len() - 1];
    assert_eq!(drawn.len(), pre.len());
    assert_ne!(drawn, &pre[..], "drawn, not in join order");
    // The draw is the one of `event_draw_seed(seed, time of the draw)`.
    let mut expected = pre.clone();
    let seed = event_draw_seed(7, T0 + 10 * MINUTE);
    expected.sort_by_key(|s| (draw_ticket(seed, &s.0), *s));
    // (The two admitted at the start are placed by id: admitted in the same millisecond.)
    let mut admitted = drawn[..2].to_vec();
    admitted.sort_unstable();
    let mut first_two = expected[..2].to_vec();
    first_two.sort_unstable();
    assert_eq!(admitted, first_two);
    assert_eq!(drawn[2..], expected[2..]);
    // Another seed draws another order; the same log draws the same.
    let replay = |seed: u64| {
        let mut t = configure_scheduled(scheduled(), seed);
        t.join(T0 + 1, 1);
        for n in 10..40 {
            t.join(T0 + 5 * MINUTE + n as u64, n);
        }
        t.at(T0 + 10 * MINUTE, Command::Tick);
        placed(&t, &pre)
    };
    assert_eq!(replay(7), replay(7));
    assert_ne!(replay(7), replay(8));
}

/// An event's rate replaces the room's (none here) while it runs; the bucket goes with the
/// event.
#[test]
fn an_events_rate_limits_admissions_while_it_runs() {
    let mut config = scheduled();
    config.capacity = 50;
    config.events[1].capacity = Some(50);
    config.events[1].admit_per_minute = Some(60); // one a second, a burst of 1
    let mut t = configure_scheduled(config, 3);
    let sessions: Vec<SessionId> = (1..=5)
        .map(|n| t.join(T0 + 25 * MINUTE + n as u64, n))
        .collect();
    assert!(
        sessions.iter().all(|&s| t.status(s) == Status::Active),
        "no rate outside events"
    );
    let start = T0 + 30 * MINUTE;
    let sessions: Vec<SessionId> = (10..=15).map(|n| t.join(start + n as u64, n)).collect();
    let active = |t: &Timeline| {
        sessions
            .iter()
            .filter(|&&s| t.status(s) == Status::Active)
            .count()
    };
    assert_eq!(active(&t), 1, "a burst of one token");
    t.heartbeat(start + 2 * SECOND, &sessions);
    assert_eq!(active(&t), 2, "then a token a second, a burst of one");
    t.heartbeat(start + 3 * SECOND, &sessions);
    assert_eq!(active(&t), 3);
    // At the end, no more rate.
    t.heartbeat(T0 + 39 * MINUTE, &sessions);
    t.at(T0 + 40 * MINUTE, Command::Tick);
    assert_eq!(active(&t), sessions.len());
}

/// Every event setting is checked, and a configuration with events survives records and
/// snapshots.
#[test]
fn events_are_validated() {
    let field = |config: RoomConfig| config.validate().unwrap_err().field;
    let with = |f: &dyn Fn(&mut Vec<RoomEvent>)| {
        let mut config = scheduled();
        f(&mut config.events);
        config
    };
    assert_eq!(scheduled().validate(), Ok(()));
    assert_eq!(field(with(&|e| e[0].name = "".into())), "events[0].name");
    assert_eq!(
        field(with(&|e| e[1].name = "bad name".into())),
        "events[1].name"
    );
    assert_eq!(
        field(with(&|e| e[1].name = "early".into())),
        "events[1].name"
    );
    assert_eq!(
        field(with(&|e| e[0].ends_at_ms = e[0].starts_at_ms)),
        "events[0].endsAt"
    );
    assert_eq!(
        field(with(&|e| e[0].capacity = Some(0))),
        "events[0].capacity"
    );
    assert_eq!(
        field(with(&|e| e[1].admit_per_minute = Some(0))),
        "events[1].admitPerMinute"
    );
    assert_eq!(
        field(with(&|e| e[0].pre_queue_minutes = Some(24 * 60 + 1))),
        "events[0].preQueueMinutes"
    );
    // Overlapping, out of order, or a pre-queue that starts before the previous event ends.
    assert_eq!(
        field(with(&|e| e[1].starts_at_ms = e[0].ends_at_ms - 1)),
        "events[1].startsAt"
    );
    assert_eq!(field(with(&|e| e.swap(0, 1))), "events[1].startsAt");
    assert_eq!(
        field(with(&|e| e[1].pre_queue_minutes = Some(11))),
        "events[1].preQueueMinutes"
    );
    assert_eq!(scheduled().validate(), Ok(()));
    assert_eq!(
        with(&|e| e[1].pre_queue_minutes = Some(10)).validate(),
        Ok(()),
        "a pre-queue may start as the previous event ends"
    );
    let too_many = RoomConfig {
        events: (0..=limits::EVENTS_PER_ROOM_MAX as u64)
            .map(|n| RoomEvent::new(&format!("e{n}"), T0 + 2 * n, T0 + 2 * n + 1))
            .collect(),
        ..config(1)
    };
    assert_eq!(field(too_many), "events");
    // An invalid configuration is refused by the room too.
    let mut t = configure_scheduled(scheduled(), 1);
    let bad = with(&|e| e[0].capacity = Some(0));
    assert!(matches!(
        t.at(T0 + 1, Command::configure(bad, DrawSeed::from_u64(1))),
        Outcome::Rejected(Rejection::InvalidConfig(_))
    ));
    assert_eq!(t.room.config().unwrap().events, scheduled().events);
}

/// A room with events round-trips through its snapshot at every stage of a sale day, and goes on
/// exactly as the original.
#[test]
fn a_scheduled_room_round_trips_through_snapshots() {
    let mut t = configure_scheduled(scheduled(), 11);
    let mut restored = Room::restore_snapshot(&t.room.encode_snapshot()).unwrap();
    assert_eq!(restored.last_config(), t.room.last_config());
    let mut n = 0;
    for at in [
        T0 + 1,
        T0 + 6 * MINUTE,
        T0 + 10 * MINUTE,
        T0 + 12 * MINUTE,
        T0 + 20 * MINUTE,
        T0 + 30 * MINUTE,
        T0 + 30 * MINUTE + 500,
        T0 + 41 * MINUTE,
    ] {
        for _ in 0..4 {
            n += 1;
            let record = t.record(Command::Join {
                session: SessionId::from_u128(n),
                idempotency_key: None,
            });
            t.room.apply(&record, at);
            restored.apply(&record, at);
        }
        let bytes = t.room.encode_snapshot();
        assert_eq!(bytes[4], SNAPSHOT_FORMAT_VERSION);
        assert_eq!(restored.encode_snapshot(), bytes);
        restored = Room::restore_snapshot(&bytes).unwrap();
        assert_eq!(restored.digest(), t.room.digest());
        assert_eq!(restored.stats(), t.room.stats());
        assert_eq!(restored.encode_snapshot(), bytes);
    }
}

/// A pass admits at once through an event's pre-queue, as through `opensAt`'s; a configuration
/// that moves the event acts at once (here: its start is now past, so the pre-queue is drawn).
#[test]
fn passes_and_reconfigurations_during_an_events_pre_queue() {
    let mut t = configure_scheduled(scheduled(), 5);
    let waiting: Vec<SessionId> = (1..=6)
        .map(|n| t.join(T0 + 6 * MINUTE + n as u64, n))
        .collect();
    assert!(waiting.iter().all(|&s| t.view(s).prequeue));
    assert_eq!(
        t.at(
            T0 + 7 * MINUTE,
            Command::IssuePasses {
                passes: vec![[1; 16]],
                expires_at_ms: T0 + 60 * MINUTE,
            }
        ),
        Outcome::PassesIssued { issued: 1 }
    );
    let guest = SessionId::from_u128(50);
    assert_eq!(
        t.at(
            T0 + 7 * MINUTE,
            Command::JoinWithPass {
                session: guest,
                idempotency_key: None,
                pass: [1; 16],
            }
        ),
        Outcome::Joined { session: guest }
    );
    assert_eq!(t.status(guest), Status::Active);
    assert!(waiting.iter().all(|&s| t.view(s).prequeue));
    // The operator brings the event forward to now: drawn at once, and its capacity of 4 admits
    // three more beside the guest.
    let mut earlier = scheduled();
    earlier.events[0].starts_at_ms = T0 + 8 * MINUTE;
    earlier.events[0].pre_queue_minutes = Some(3);
    let outcome = t.at(
        T0 + 8 * MINUTE,
        Command::configure(earlier, DrawSeed::from_u64(6)),
    );
    assert_eq!(outcome, Outcome::Configured { created: false });
    assert!(waiting.iter().all(|&s| !t.view(s).prequeue));
    assert_eq!(t.room.capacity(), 4);
    assert_eq!(t.room.active_count(), 4);
    // The seed of the draw was the room's own (people waited in the pre-queue: the new
    // configuration's seed did not replace it).
    assert_eq!(t.room.draw_seed(), Some(DrawSeed::from_u64(5)));
}

/// The positions of the line marked `turn_soon`, front first: `turn_soon` must hold for a
/// prefix of the line (the front), so this is its length, checked to be a prefix.
fn turn_soon_prefix(t: &Timeline, ids: impl Iterator<Item = u128>) -> u64 {
    let mut marked = 0;
    let mut ended = false;
    for n in ids {
        let view = t.view(SessionId::from_u128(n));
        if view.status != Status::Waiting {
            continue;
        }
        if view.turn_soon {
            assert!(!ended, "session {n} is marked behind one that is not");
            assert_eq!(view.position, Some(marked));
            marked += 1;
        } else {
            ended = true;
        }
    }
    marked
}

#[test]
fn turn_soon_marks_the_first_fill_without_an_estimate() {
    // Ten admitted at the opening, nothing freed: no estimate, and nothing says how long people
    // stay. The ten inside may all leave within the horizon (1.5 heartbeat intervals, 15 s), and
    // the turnover is only starting: the first fill marks the admissions plus the active, 20.
    let mut r = Turnover::new(10, 1000);
    assert_eq!(r.view(11).estimated_wait_range, None);
    assert_eq!(turn_soon_prefix(&r.t, 1..=1000), 20);
    // Five freed within the first second: still no estimate, but a turnover of five a second
    // is 75 within 15 s, more than the 15 admitted.
    r.free(5, 200);
    assert_eq!(r.view(16).estimated_wait_range, None);
    assert_eq!(turn_soon_prefix(&r.t, 1..=1000), 75);
    // The horizon is 1.5 of the room's heartbeat intervals: at 30 s, 45 s of that turnover.
    let mut slow = config(10);
    slow.heartbeat_interval_seconds = 30;
    r.configure(r.now, slow);
    assert_eq!(turn_soon_prefix(&r.t, 1..=1000), 225);
}

#[test]
fn turn_soon_in_steady_turnover_is_the_horizon_of_it() {
    // One slot freed a second for 400 s: 16 freed and admitted in the 15 s (three buckets and the
    // current one, which starts now) before now. The 16th in line has about 16 s to wait.
    let mut r = Turnover::new(10, 2000);
    r.free(400, SECOND);
    assert_eq!(turn_soon_prefix(&r.t, 1..=2000), 16);
    let front = r.view(411 + 15);
    assert_eq!((front.position, front.turn_soon), (Some(15), true));
    assert!(within(front.estimated_wait_range, 16), "{front:?}");
    // Half a bucket later the oldest bucket still counts: 19 freed and admitted in 17.5 s. The
    // frees are scaled to the 15 s horizon (16), the admissions are not (the first fill's must
    // not be): the larger, 19, errs towards marking.
    r.free(3, 2500 / 3);
    assert_eq!(turn_soon_prefix(&r.t, 1..=2000), 19);
}

#[test]
fn turn_soon_is_false_where_no_turn_comes_or_nobody_has_a_place() {
    // Paused: nobody, not even the next in line.
    let mut r = Turnover::new(2, 10);
    assert_eq!(turn_soon_prefix(&r.t, 1..=10), 4);
    let mut paused = config(2);
    paused.paused = true;
    r.configure(r.now + 1, paused);
    assert_eq!(turn_soon_prefix(&r.t, 1..=10), 0);
    // A random room draws each admission among everyone: no position, no mark.
    let mut random = config(2);
    random.queueing_method = QueueingMethod::Random;
    r.configure(r.now + 1, random);
    assert!((3..=10).all(|n| !r.view(n).turn_soon));
    // The pre-queue: not open yet.
    let mut later = config(2);
    later.opens_at_ms = Some(T0 + 60 * SECOND);
    let mut t = Timeline::new(later);
    t.join(T0, 1);
    let view = t.view(SessionId::from_u128(1));
    assert!(view.prequeue && !view.turn_soon);
    // Once open, the first `capacity` are admitted and the next is marked.
    t.join(T0 + 60 * SECOND, 2);
    t.join(T0 + 60 * SECOND, 3);
    assert_eq!(turn_soon_prefix(&t, 1..=3), 1);
    assert!(!t.view(SessionId::from_u128(1)).turn_soon, "ACTIVE");
}

#[test]
fn turn_soon_under_a_rate_limit_is_the_rate_times_the_horizon() {
    // 60 a minute with free slots: one admitted at once (the burst), then one a second; the room
    // will admit 15 within 15 s, whatever it admitted lately (more than the first fill's 1 + 1).
    let mut limited = config(100);
    limited.admit_per_minute = Some(60);
    let mut t = Timeline::new(limited);
    for n in 1..=100 {
        t.join(T0, n);
    }
    assert_eq!(t.room.stats().active_count, 1);
    assert_eq!(turn_soon_prefix(&t, 1..=100), 15);
}
