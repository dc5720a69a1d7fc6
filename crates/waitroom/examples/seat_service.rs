//! A protected "seat selection" service for `bench/seats.sh`: the kind of endpoint a waiting
//! room stands in front of, doing real work per request, so the benchmark can show what a
//! thundering herd does to it with and without waitroom.
//!
//! ```text
//! cargo run --release --example seat_service -- --listen 127.0.0.1:0              # the herd baseline
//! cargo run --release --example seat_service -- --listen 127.0.0.1:0 \
//!     --jwks jwks.json --issuer waitroom --room seats                             # behind waitroom
//! ```
//! - `POST /reserve`, body `{"user": "..."}`: reserves one seat; `200 {"seat": n}`, `409` when
//!   no seat could be had, `503` when no database connection came within the acquire timeout,
//!   `401` for a missing or invalid admission token (with `--jwks`).
//! - `GET /audit`: counters and the double-booking check, as JSON.
//!
//! # Model
//! - `--seats` seats, best first. A person wants one of the best seats still free: one of the
//!   first `--window` seats that look free on the seat map (which may be stale by the time the
//!   request runs, as a page's map is).
//! - Each seat is a row with its own lock (`SELECT … FOR UPDATE`). A reservation locks the row,
//!   checks the seat is still free (else: a conflict, try another seat, at most
//!   [`ATTEMPTS_MAX`] times), then works for `--work-ms` holding the row (the rest of the
//!   transaction: price, hold, payment intent) and commits.
//! - A reservation holds one of `--pool` database connections from the start; a request that
//!   waits longer than `--acquire-timeout-ms` for one gets `503`, like a connection pool's
//!   acquire timeout. The pool is what a herd overwhelms: it serves at most
//!   `pool ÷ work` reservations per second, whatever arrives.
//! - With `--jwks FILE` (waitroom's `/.well-known/jwks.json`, fetched once), every request
//!   needs `Authorization: Bearer <admission token>`, verified offline with `waitroom_token`
//!   (signature, expiry, issuer, audience = `--room`); the customer is the token's `sub` (the
//!   waiting-room session). Without it anyone may reserve, as the body's `user`.
//! - Every reservation is also appended to a ledger. `/audit` counts the seats that appear more
//!   than once in it (double bookings: must be 0) and checks the seat map against it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};
use waitroom_token::{Expectations, Verifier};

/// Seats tried per request before answering `409`: a person retries a few times, not forever.
const ATTEMPTS_MAX: u32 = 16;
/// Clock skew tolerated on a token's `exp`/`nbf` (the same as waitroom's own check).
const TOKEN_LEEWAY_S: u64 = 5;
/// Listen backlog: this machine's `net.core.somaxconn`, so a burst of connections is not
/// refused by a smaller default before the service even sees it.
const LISTEN_BACKLOG: u32 = 4096;
/// Customer ids longer than this are refused (`400`): the ledger keeps every one.
const CUSTOMER_LENGTH_MAX: usize = 256;

#[derive(Parser, Debug, Clone)]
#[command(about = "A protected seat-selection service for the waitroom benchmarks")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8091")]
    listen: SocketAddr,
    /// Seats on sale.
    #[arg(long, default_value_t = 25_000)]
    seats: usize,
    /// Database connections; a reservation holds one throughout.
    #[arg(long, default_value_t = 16)]
    pool: usize,
    /// Work per reservation while holding the seat's row lock and a connection (ms).
    #[arg(long, default_value_t = 5)]
    work_ms: u64,
    /// Longest wait for a database connection before answering 503 (ms).
    #[arg(long, default_value_t = 5_000)]
    acquire_timeout_ms: u64,
    /// A person picks among this many best seats still free.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// waitroom's JWKS (a file): require and verify an admission token on every request.
    #[arg(long)]
    jwks: Option<PathBuf>,
    /// Expected `iss` of admission tokens (waitroom's `--issuer`).
    #[arg(long, default_value = "waitroom")]
    issuer: String,
    /// Expected `aud` of admission tokens: the room in front of this service.
    #[arg(long, default_value = "seats")]
    room: String,
}

/// Counters for `/audit`.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    reserved: AtomicU64,
    unauthorized: AtomicU64,
    bad_requests: AtomicU64,
    pool_timeouts: AtomicU64,
    conflicts: AtomicU64,
    no_seat: AtomicU64,
    in_flight: AtomicUsize,
    in_flight_max: AtomicUsize,
}

/// Counts a request in flight while alive.
struct InFlight<'a>(&'a Counters);

impl<'a> InFlight<'a> {
    fn enter(counters: &'a Counters) -> Self {
        let now = counters.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        counters.in_flight_max.fetch_max(now, Ordering::Relaxed);
        Self(counters)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a reservation attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Reservation {
    Reserved(usize),
    /// No connection within the acquire timeout.
    PoolTimeout,
    /// Every attempt met a taken seat, or none is left.
    NoSeat,
}

struct Service {
    /// The rows: the owner of each seat, each behind its own lock.
    rows: Vec<Mutex<Option<String>>>,
    /// The seat map people see: set once a reservation committed.
    taken: Vec<AtomicBool>,
    /// No seat below this index is free (a hint; only ever raised).
    first_free: AtomicUsize,
    pool: Semaphore,
    pool_size: usize,
    work: Duration,
    acquire_timeout: Duration,
    window: usize,
    /// Every committed reservation, in commit order: `(seat, customer)`.
    ledger: parking_lot::Mutex<Vec<(usize, String)>>,
    verifier: Option<(Verifier, Expectations)>,
    counters: Counters,
}

impl Service {
    fn new(args: &Args, verifier: Option<(Verifier, Expectations)>) -> Self {
        Self {
            rows: (0..args.seats).map(|_| Mutex::new(None)).collect(),
            taken: (0..args.seats).map(|_| AtomicBool::new(false)).collect(),
            first_free: AtomicUsize::new(0),
            pool: Semaphore::new(args.pool.max(1)),
            pool_size: args.pool.max(1),
            work: Duration::from_millis(args.work_ms),
            acquire_timeout: Duration::from_millis(args.acquire_timeout_ms),
            window: args.window.max(1),
            ledger: parking_lot::Mutex::new(Vec::with_capacity(args.seats)),
            verifier,
            counters: Counters::default(),
        }
    }

    /// One of the first `window` seats that look free, or `None` when every seat is taken.
    fn pick_seat(&self) -> Option<usize> {
        let seats = self.taken.len();
        let mut first = self.first_free.load(Ordering::Relaxed);
        while first < seats && self.taken[first].load(Ordering::Relaxed) {
            first += 1;
        }
        self.first_free.fetch_max(first, Ordering::Relaxed);
        let wanted = rand::random::<u64>() as usize % self.window;
        let mut chosen = None;
        let mut seen = 0;
        for seat in first..seats {
            if !self.taken[seat].load(Ordering::Relaxed) {
                chosen = Some(seat);
                if seen == wanted {
                    break;
                }
                seen += 1;
            }
        }
        chosen
    }

    /// Reserves a seat for `customer`: a connection, then row lock → check → work → commit.
    async fn reserve(&self, customer: &str) -> Reservation {
        let Ok(Ok(_connection)) =
            tokio::time::timeout(self.acquire_timeout, self.pool.acquire()).await
        else {
            self.counters.pool_timeouts.fetch_add(1, Ordering::Relaxed);
            return Reservation::PoolTimeout;
        };
        for _ in 0..ATTEMPTS_MAX {
            let Some(seat) = self.pick_seat() else { break };
            let mut row = self.rows[seat].lock().await;
            if row.is_some() {
                self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            tokio::time::sleep(self.work).await;
            *row = Some(customer.to_string());
            self.ledger.lock().push((seat, customer.to_string()));
            self.taken[seat].store(true, Ordering::Relaxed);
            self.counters.reserved.fetch_add(1, Ordering::Relaxed);
            return Reservation::Reserved(seat);
        }
        self.counters.no_seat.fetch_add(1, Ordering::Relaxed);
        Reservation::NoSeat
    }

    /// The customer of a request: the token's session with `--jwks`, else the body's `user`.
    /// A refusal is its status and detail.
    fn customer(&self, headers: &HeaderMap, body: &[u8]) -> Result<String, (StatusCode, String)> {
        if let Some((verifier, expected)) = &self.verifier {
            let token = headers
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "));
            let now_s = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            return match token.map(|token| verifier.verify(token.trim(), expected, now_s)) {
                Some(Ok(claims)) => Ok(claims.sub),
                Some(Err(error)) => {
                    self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                    Err((
                        StatusCode::UNAUTHORIZED,
                        format!("admission token rejected: {error}"),
                    ))
                }
                None => {
                    self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                    Err((
                        StatusCode::UNAUTHORIZED,
                        "Authorization: Bearer <admission token> needed".to_string(),
                    ))
                }
            };
        }
        let user = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|body| body["user"].as_str().map(str::to_string))
            .filter(|user| !user.is_empty() && user.len() <= CUSTOMER_LENGTH_MAX);
        user.ok_or_else(|| {
            self.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::BAD_REQUEST,
                "body: {\"user\": \"<1..256 characters>\"}".to_string(),
            )
        })
    }

    async fn audit(&self) -> serde_json::Value {
        let ledger = self.ledger.lock().clone();
        let audit = audit_ledger(&ledger);
        let last_owner: std::collections::HashMap<usize, &String> = ledger
            .iter()
            .map(|(seat, customer)| (*seat, customer))
            .collect();
        let mut rows_owned = 0_usize;
        let mut rows_disagreeing = 0_usize;
        for (seat, row) in self.rows.iter().enumerate() {
            let owner = row.lock().await.clone();
            rows_owned += usize::from(owner.is_some());
            rows_disagreeing += usize::from(owner.as_ref() != last_owner.get(&seat).copied());
        }
        let counters = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        json!({
            "seats": self.rows.len(),
            "reservations": ledger.len(),
            "seatsReserved": audit.seats_reserved,
            "doubleBookedSeats": audit.double_booked_seats,
            "customersWithSeveralSeats": audit.customers_with_several_seats,
            "rowsOwned": rows_owned,
            "rowsDisagreeingWithLedger": rows_disagreeing,
            "requests": load(&counters.requests),
            "reserved": load(&counters.reserved),
            "unauthorized": load(&counters.unauthorized),
            "badRequests": load(&counters.bad_requests),
            "poolTimeouts": load(&counters.pool_timeouts),
            "conflicts": load(&counters.conflicts),
            "noSeat": load(&counters.no_seat),
            "inFlightMax": counters.in_flight_max.load(Ordering::Relaxed),
            "pool": self.pool_size,
            "workMs": self.work.as_millis() as u64,
            "tokensRequired": self.verifier.is_some(),
        })
    }
}

/// What the ledger says, independently of the seat map.
#[derive(Debug, PartialEq, Eq)]
struct LedgerAudit {
    seats_reserved: usize,
    /// Seats reserved more than once.
    double_booked_seats: usize,
    customers_with_several_seats: usize,
}

fn audit_ledger(ledger: &[(usize, String)]) -> LedgerAudit {
    let mut per_seat = std::collections::HashMap::<usize, usize>::new();
    let mut per_customer = std::collections::HashMap::<&str, usize>::new();
    for (seat, customer) in ledger {
        *per_seat.entry(*seat).or_default() += 1;
        *per_customer.entry(customer).or_default() += 1;
    }
    LedgerAudit {
        seats_reserved: per_seat.len(),
        double_booked_seats: per_seat.values().filter(|count| **count > 1).count(),
        customers_with_several_seats: per_customer.values().filter(|count| **count > 1).count(),
    }
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let body = json!({"type": "about:blank", "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail});
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn reserve(State(service): State<Arc<Service>>, headers: HeaderMap, body: Bytes) -> Response {
    let _in_flight = InFlight::enter(&service.counters);
    service.counters.requests.fetch_add(1, Ordering::Relaxed);
    let customer = match service.customer(&headers, &body) {
        Ok(customer) => customer,
        Err((status, detail)) => return problem(status, &detail),
    };
    match service.reserve(&customer).await {
        Reservation::Reserved(seat) => {
            axum::Json(json!({"seat": seat, "customer": customer})).into_response()
        }
        Reservation::PoolTimeout => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "no database connection in time",
        ),
        Reservation::NoSeat => problem(StatusCode::CONFLICT, "no seat could be reserved"),
    }
}

async fn audit(State(service): State<Arc<Service>>) -> Response {
    axum::Json(service.audit().await).into_response()
}

fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/reserve", post(reserve))
        .route("/audit", get(audit))
        .with_state(service)
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let verifier = match &args.jwks {
        Some(path) => {
            let jwks =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let verifier =
                Verifier::from_jwks_json(&jwks).map_err(|e| format!("{}: {e}", path.display()))?;
            let expected = Expectations::new(args.issuer.clone(), args.room.clone())
                .with_leeway_s(TOKEN_LEEWAY_S);
            Some((verifier, expected))
        }
        None => None,
    };
    let service = Arc::new(Service::new(&args, verifier));
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
    socket
        .bind(args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let listener = socket.listen(LISTEN_BACKLOG).map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    println!("seat service serving at http://{address}");
    axum::serve(listener, router(service))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use waitroom_token::{AdmissionClaims, SigningKey};

    fn args(extra: &[&str]) -> Args {
        Args::parse_from(["seat_service"].iter().chain(extra))
    }

    #[test]
    fn the_ledger_audit_counts_double_bookings_exactly() {
        let ledger: Vec<(usize, String)> = [
            (1, "a"),
            (2, "b"),
            (1, "c"),
            (3, "a"),
            (1, "d"),
            (4, "e"),
            (4, "f"),
        ]
        .map(|(seat, customer)| (seat, customer.to_string()))
        .into();
        assert_eq!(
            audit_ledger(&ledger),
            LedgerAudit {
                seats_reserved: 4,
                double_booked_seats: 2,
                customers_with_several_seats: 1
            }
        );
        assert_eq!(audit_ledger(&[]).double_booked_seats, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_crowd_never_double_books() {
        // 300 people for 50 seats, 8 connections, all at once, all fighting over the same few seats.
        let service = Arc::new(Service::new(
            &args(&[
                "--seats",
                "50",
                "--pool",
                "8",
                "--work-ms",
                "1",
                "--window",
                "4",
            ]),
            None,
        ));
        let mut people = tokio::task::JoinSet::new();
        for person in 0..300 {
            let service = service.clone();
            people.spawn(async move { service.reserve(&format!("person-{person}")).await });
        }
        let mut reserved = 0;
        while let Some(outcome) = people.join_next().await {
            reserved += usize::from(matches!(outcome.unwrap(), Reservation::Reserved(_)));
        }
        assert_eq!(reserved, 50);
        let audit = service.audit().await;
        assert_eq!(audit["doubleBookedSeats"], 0);
        assert_eq!(audit["seatsReserved"], 50);
        assert_eq!(audit["rowsOwned"], 50);
        assert_eq!(audit["rowsDisagreeingWithLedger"], 0);
        assert!(audit["conflicts"].as_u64().unwrap() > 0, "{audit}");
        assert_eq!(audit["noSeat"], 250);
    }

    #[tokio::test]
    async fn a_connection_not_had_in_time_is_a_503() {
        let service = Service::new(
            &args(&[
                "--pool",
                "1",
                "--work-ms",
                "200",
                "--acquire-timeout-ms",
                "20",
            ]),
            None,
        );
        let (first, second) = tokio::join!(service.reserve("a"), service.reserve("b"));
        assert!(matches!(first, Reservation::Reserved(_)), "{first:?}");
        assert_eq!(second, Reservation::PoolTimeout);
    }

    #[test]
    fn only_valid_admission_tokens_of_the_room_get_in() {
        let key = SigningKey::generate().unwrap();
        let verifier = Verifier::from_jwks_json(&key.jwks_json()).unwrap();
        let expected = Expectations::new("waitroom", "seats").with_leeway_s(TOKEN_LEEWAY_S);
        let service = Service::new(&args(&["--seats", "1"]), Some((verifier, expected)));
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = |aud: &str| {
            key.sign(&AdmissionClaims {
                iss: "waitroom".into(),
                aud: aud.into(),
                sub: "wr_session".into(),
                iat: now_s,
                nbf: now_s,
                exp: now_s + 60,
                jti: "j".into(),
            })
        };
        let with = |token: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
            headers
        };
        assert_eq!(
            service.customer(&with(&token("seats")), b"{}").unwrap(),
            "wr_session"
        );
        let refused = service
            .customer(&with(&token("another-room")), b"{}")
            .unwrap_err();
        assert_eq!(refused.0, StatusCode::UNAUTHORIZED);
        let refused = service
            .customer(&HeaderMap::new(), br#"{"user":"me"}"#)
            .unwrap_err();
        assert_eq!(refused.0, StatusCode::UNAUTHORIZED);
        assert_eq!(service.counters.unauthorized.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn without_tokens_the_body_names_the_customer() {
        let service = Service::new(&args(&["--seats", "1"]), None);
        assert_eq!(
            service
                .customer(&HeaderMap::new(), br#"{"user":"me"}"#)
                .unwrap(),
            "me"
        );
        assert_eq!(
            service.customer(&HeaderMap::new(), b"nope").unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
    }
}
