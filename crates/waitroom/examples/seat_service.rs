//! A protected "seat selection" service for `bench/seats.sh`: the kind of endpoint a waiting
//! room stands in front of, doing real work per request against a real database (PostgreSQL),
//! so the benchmark can show what a thundering herd does to it with and without waitroom.
//!
//! ```text
//! eval "$(waitroom-servers postgres --dir /tmp/pg)"      # a private PostgreSQL: URL and PID
//! cargo run --release --example seat_service -- --listen 127.0.0.1:0 --database-url "$URL"
//! cargo run --release --example seat_service -- --listen 127.0.0.1:0 --database-url "$URL" \
//!     --jwks jwks.json --issuer waitroom --room seats                     # behind waitroom
//! ```
//! - `POST /reserve`, body `{"user": "..."}`: reserves one seat; `200 {"seat": n, "customer":
//!   "..."}`, `409` when no seat could be had, `503` when no database connection came within the
//!   acquire timeout (or the database failed), `401` for a missing or invalid admission token
//!   (with `--jwks`), `400` for a body without a `user` (without `--jwks`).
//! - `GET /audit`: counters and the double-booking check, as JSON.
//!
//! # Model
//! - The event `--event` has `--seats` seats, best first. A person wants one of the best seats
//!   still free: one of the first `--window` seats that look free on the seat map this process
//!   keeps (which may be stale by the time the request runs, as a page's map is: another process
//!   may have taken the seat; the map is loaded from the database at start and learns of a seat
//!   taken when this process commits it or runs into it).
//! - The database decides, not the map: a seat is reserved (held or sold: this service makes no
//!   difference) by inserting its row into `seat_reservations`, whose primary key is
//!   `(event, seat)`, in a transaction. A reservation inserts the row (`ON CONFLICT DO NOTHING`:
//!   a seat taken is a conflict, and the person tries another, at most [`ATTEMPTS_MAX`] times),
//!   works for `--work-ms` with the row inserted but not committed (the rest of the transaction:
//!   price, hold, payment intent), appends the reservation to the ledger and commits. A second
//!   transaction inserting the same seat meanwhile waits on the first's uncommitted row (the
//!   unique index's lock), then finds it taken. So a seat is reserved at most once whatever the
//!   number of requests, of connections or of processes serving the same database.
//! - A reservation holds one of `--pool` database connections from the start (sqlx's pool); a
//!   request that waits longer than `--acquire-timeout-ms` for one gets `503`, the pool's acquire
//!   timeout. The pool is what a herd overwhelms: it serves at most `pool ÷ work` reservations
//!   per second, whatever arrives.
//! - With `--jwks FILE` (waitroom's `/.well-known/jwks.json`, fetched once), every request
//!   needs `Authorization: Bearer <admission token>`, verified offline with `waitroom_token`
//!   (signature, expiry, issuer, audience = `--room`); the customer is the token's `sub` (the
//!   waiting-room session). Without it anyone may reserve, as the body's `user`.
//! - Every reservation is also appended to a ledger table, `seat_ledger`, in the same
//!   transaction. The ledger has no uniqueness constraint, on purpose: `/audit` counts the seats
//!   that appear more than once in it (double bookings: must be 0), so it would show a double
//!   booking if the constraint ever let one through, and checks the reservations against it.
//! - The schema is created at start if missing (idempotent, under an advisory lock so that
//!   several processes may start at once), and so are the event's seats. A restart keeps every
//!   reservation; a restart with another `--seats` for an existing event is refused.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
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
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};
use waitroom_token::{Expectations, Verifier};

/// Seats tried per request before answering `409`: a person retries a few times, not forever.
const ATTEMPTS_MAX: u32 = 16;
/// Clock skew tolerated on a token's `exp`/`nbf` (the same as waitroom's own check).
const TOKEN_LEEWAY_S: u64 = 5;
/// Listen backlog: this machine's `net.core.somaxconn`, so a burst of connections is not
/// refused by a smaller default before the service even sees it.
const LISTEN_BACKLOG: u32 = 4096;
/// Customer ids longer than this are refused (`400`); the database refuses them too.
const CUSTOMER_LENGTH_MAX: usize = 256;
/// Event names longer than this are refused at start.
const EVENT_LENGTH_MAX: usize = 64;
/// Most seats an event may have: one row each, and one flag each in the seat map.
const SEATS_MAX: u32 = 1_000_000;
/// Most database connections in the pool (the launcher's server takes 300).
const POOL_MAX: u32 = 256;
/// Longest `GET /audit` waits for its own connection (it does not use the reservations' pool,
/// so that it answers while a herd holds every connection of that one).
const AUDIT_ACQUIRE_TIMEOUT_S: u64 = 30;
/// Longest the schema set-up at start may take (it waits for other processes setting it up).
const SETUP_TIMEOUT_S: u64 = 60;

#[derive(Parser, Debug, Clone)]
#[command(about = "A protected seat-selection service on PostgreSQL for the waitroom benchmarks")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8091")]
    listen: SocketAddr,
    /// The PostgreSQL database holding the seats (`postgres://user@host:port/database`).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The event on sale: its seats and reservations are kept apart from other events' in the
    /// same database (1 to 64 characters).
    #[arg(long, default_value = "on-sale", value_parser = parse_event)]
    event: String,
    /// Seats on sale (1 to 1 000 000); fixed once the event exists in the database.
    #[arg(long, default_value_t = 25_000, value_parser = clap::value_parser!(u32).range(1..=SEATS_MAX as i64))]
    seats: u32,
    /// Database connections (1 to 256); a reservation holds one throughout.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=POOL_MAX as i64))]
    pool: u32,
    /// Work per reservation while its row is inserted but not committed, holding a connection
    /// (ms).
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

fn parse_event(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > EVENT_LENGTH_MAX {
        return Err(format!("1 to {EVENT_LENGTH_MAX} characters"));
    }
    Ok(text.to_owned())
}

/// The tables, created if missing. `seat_reservations`' primary key is what keeps a seat from
/// being reserved twice; `seat_ledger` has no such key, so that the audit can see a double
/// booking should one ever happen.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS seat_events (
        event text PRIMARY KEY,
        seats integer NOT NULL CHECK (seats > 0)
    )",
    "CREATE TABLE IF NOT EXISTS seats (
        event text NOT NULL REFERENCES seat_events (event),
        seat integer NOT NULL CHECK (seat >= 0),
        PRIMARY KEY (event, seat)
    )",
    "CREATE TABLE IF NOT EXISTS seat_reservations (
        event text NOT NULL,
        seat integer NOT NULL,
        customer text NOT NULL CHECK (length(customer) BETWEEN 1 AND 256),
        reserved_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (event, seat),
        FOREIGN KEY (event, seat) REFERENCES seats (event, seat)
    )",
    "CREATE TABLE IF NOT EXISTS seat_ledger (
        id bigserial PRIMARY KEY,
        event text NOT NULL,
        seat integer NOT NULL,
        customer text NOT NULL,
        committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )",
    "CREATE INDEX IF NOT EXISTS seat_ledger_event_seat ON seat_ledger (event, seat)",
];

/// Counters for `/audit`.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    reserved: AtomicU64,
    unauthorized: AtomicU64,
    bad_requests: AtomicU64,
    pool_timeouts: AtomicU64,
    database_errors: AtomicU64,
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
    /// The database failed (the error's text).
    DatabaseError(String),
}

struct Service {
    event: String,
    /// The seat map people see: set once a reservation committed or ran into a taken seat.
    taken: Vec<AtomicBool>,
    /// No seat below this index is free (a hint; only ever raised).
    first_free: AtomicUsize,
    /// The reservations' connections.
    db: PgPool,
    /// `/audit`'s one connection.
    audit_db: PgPool,
    pool_size: u32,
    work: Duration,
    window: usize,
    verifier: Option<(Verifier, Expectations)>,
    counters: Counters,
}

impl Service {
    /// Connects to the database, creates the schema and the event's seats if missing, and loads
    /// the seat map.
    async fn connect(
        args: &Args,
        verifier: Option<(Verifier, Expectations)>,
    ) -> Result<Self, String> {
        // sqlx takes any scheme here; another database's URL would fail later and less clearly.
        if !["postgres://", "postgresql://"]
            .iter()
            .any(|scheme| args.database_url.starts_with(scheme))
        {
            return Err("--database-url: postgres://user@host:port/database".to_owned());
        }
        let options = PgConnectOptions::from_str(&args.database_url)
            .map_err(|e| format!("--database-url: {e}"))?
            .application_name("seat_service");
        // No check of a connection on every acquire (sqlx's default pings the server each time):
        // a reservation would pay a round trip for it, and a broken connection fails the
        // reservation's first statement anyway, with a 503.
        let db = PgPoolOptions::new()
            .max_connections(args.pool)
            .acquire_timeout(Duration::from_millis(args.acquire_timeout_ms))
            .test_before_acquire(false)
            .connect_lazy_with(options.clone());
        let audit_db = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(AUDIT_ACQUIRE_TIMEOUT_S))
            .connect_lazy_with(options.clone());
        let mut connection = tokio::time::timeout(
            Duration::from_secs(SETUP_TIMEOUT_S),
            PgConnection::connect_with(&options),
        )
        .await
        .map_err(|_| format!("cannot connect to the database within {SETUP_TIMEOUT_S} s"))?
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
        let taken = tokio::time::timeout(
            Duration::from_secs(SETUP_TIMEOUT_S),
            set_up(&mut connection, &args.event, args.seats),
        )
        .await
        .map_err(|_| format!("setting up the database: not done within {SETUP_TIMEOUT_S} s"))??;
        // The set-up connection is not needed any more; an error closing it changes nothing.
        let _ = connection.close().await;
        let seats = args.seats as usize;
        let map: Vec<AtomicBool> = (0..seats).map(|_| AtomicBool::new(false)).collect();
        for seat in taken {
            // Every reserved seat is below `seats`: the foreign key to `seats` and the check of
            // the event's seat count above.
            if let Some(flag) = map.get(seat) {
                flag.store(true, Ordering::Relaxed);
            }
        }
        Ok(Self {
            event: args.event.clone(),
            taken: map,
            first_free: AtomicUsize::new(0),
            db,
            audit_db,
            pool_size: args.pool,
            work: Duration::from_millis(args.work_ms),
            window: args.window.max(1),
            verifier,
            counters: Counters::default(),
        })
    }

    /// Closes the database connections.
    async fn close(&self) {
        self.db.close().await;
        self.audit_db.close().await;
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

    /// Reserves `seat` for `customer` in one transaction on `connection`: true when reserved,
    /// false when the seat was taken (by a transaction that committed first).
    async fn reserve_seat(
        &self,
        connection: &mut PgConnection,
        seat: usize,
        customer: &str,
    ) -> Result<bool, sqlx::Error> {
        let seat_number = i32::try_from(seat).expect("at most SEATS_MAX seats");
        let mut transaction = connection.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO seat_reservations (event, seat, customer) VALUES ($1, $2, $3)
             ON CONFLICT (event, seat) DO NOTHING",
        )
        .bind(&self.event)
        .bind(seat_number)
        .bind(customer)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if inserted == 0 {
            transaction.rollback().await?;
            return Ok(false);
        }
        tokio::time::sleep(self.work).await;
        sqlx::query("INSERT INTO seat_ledger (event, seat, customer) VALUES ($1, $2, $3)")
            .bind(&self.event)
            .bind(seat_number)
            .bind(customer)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(true)
    }

    /// Reserves a seat for `customer`: a connection, then seat after seat until one is had.
    async fn reserve(&self, customer: &str) -> Reservation {
        let mut connection = match self.db.acquire().await {
            Ok(connection) => connection,
            Err(sqlx::Error::PoolTimedOut) => {
                self.counters.pool_timeouts.fetch_add(1, Ordering::Relaxed);
                return Reservation::PoolTimeout;
            }
            Err(error) => {
                self.counters
                    .database_errors
                    .fetch_add(1, Ordering::Relaxed);
                return Reservation::DatabaseError(error.to_string());
            }
        };
        for _ in 0..ATTEMPTS_MAX {
            let Some(seat) = self.pick_seat() else { break };
            match self.reserve_seat(&mut connection, seat, customer).await {
                Ok(reserved) => {
                    self.taken[seat].store(true, Ordering::Relaxed);
                    if reserved {
                        self.counters.reserved.fetch_add(1, Ordering::Relaxed);
                        return Reservation::Reserved(seat);
                    }
                    self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    self.counters
                        .database_errors
                        .fetch_add(1, Ordering::Relaxed);
                    return Reservation::DatabaseError(error.to_string());
                }
            }
        }
        self.counters.no_seat.fetch_add(1, Ordering::Relaxed);
        Reservation::NoSeat
    }

    /// What the database says (the ledger against the reservations) and this process's counters.
    async fn audit(&self) -> Result<serde_json::Value, sqlx::Error> {
        // One statement: one snapshot of both tables.
        let row = sqlx::query(
            "WITH ledger AS (SELECT id, seat, customer FROM seat_ledger WHERE event = $1),
                  per_seat AS (SELECT seat, count(*) AS n FROM ledger GROUP BY seat),
                  per_customer AS (SELECT customer, count(*) AS n FROM ledger GROUP BY customer),
                  last_owner AS (SELECT DISTINCT ON (seat) seat, customer FROM ledger
                                 ORDER BY seat, id DESC),
                  owned AS (SELECT seat, customer FROM seat_reservations WHERE event = $1)
             SELECT (SELECT count(*) FROM ledger) AS reservations,
                    (SELECT count(*) FROM per_seat) AS seats_reserved,
                    (SELECT count(*) FROM per_seat WHERE n > 1) AS double_booked,
                    (SELECT count(*) FROM per_customer WHERE n > 1) AS several,
                    (SELECT count(*) FROM owned) AS rows_owned,
                    (SELECT count(*) FROM owned FULL JOIN last_owner USING (seat)
                     WHERE owned.customer IS DISTINCT FROM last_owner.customer) AS disagreeing",
        )
        .bind(&self.event)
        .fetch_one(&self.audit_db)
        .await?;
        let count = |name: &str| row.try_get::<i64, _>(name);
        let counters = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Ok(json!({
            "event": self.event,
            "seats": self.taken.len(),
            "reservations": count("reservations")?,
            "seatsReserved": count("seats_reserved")?,
            "doubleBookedSeats": count("double_booked")?,
            "customersWithSeveralSeats": count("several")?,
            "rowsOwned": count("rows_owned")?,
            "rowsDisagreeingWithLedger": count("disagreeing")?,
            "requests": load(&counters.requests),
            "reserved": load(&counters.reserved),
            "unauthorized": load(&counters.unauthorized),
            "badRequests": load(&counters.bad_requests),
            "poolTimeouts": load(&counters.pool_timeouts),
            "databaseErrors": load(&counters.database_errors),
            "conflicts": load(&counters.conflicts),
            "noSeat": load(&counters.no_seat),
            "inFlightMax": counters.in_flight_max.load(Ordering::Relaxed),
            "pool": self.pool_size,
            "workMs": self.work.as_millis() as u64,
            "tokensRequired": self.verifier.is_some(),
        }))
    }
}

/// Creates the schema and the event's seats if missing (several processes may do this at once:
/// a transaction-scoped advisory lock lets one at a time in), and returns the seats already
/// reserved.
async fn set_up(
    connection: &mut PgConnection,
    event: &str,
    seats: u32,
) -> Result<Vec<usize>, String> {
    let failed =
        |what: &str, error: sqlx::Error| format!("setting up the database ({what}): {error}");
    let mut transaction = connection.begin().await.map_err(|e| failed("begin", e))?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('waitroom seat_service schema'))")
        .execute(&mut *transaction)
        .await
        .map_err(|e| failed("lock", e))?;
    for statement in SCHEMA {
        sqlx::query(statement)
            .execute(&mut *transaction)
            .await
            .map_err(|e| failed("schema", e))?;
    }
    let seats_i32 = i32::try_from(seats).expect("at most SEATS_MAX seats");
    sqlx::query("INSERT INTO seat_events (event, seats) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(event)
        .bind(seats_i32)
        .execute(&mut *transaction)
        .await
        .map_err(|e| failed("event", e))?;
    let existing: i32 = sqlx::query_scalar("SELECT seats FROM seat_events WHERE event = $1")
        .bind(event)
        .fetch_one(&mut *transaction)
        .await
        .map_err(|e| failed("event", e))?;
    if existing != seats_i32 {
        return Err(format!(
            "the event {event:?} has {existing} seats in the database, not --seats {seats}"
        ));
    }
    sqlx::query(
        "INSERT INTO seats (event, seat) SELECT $1, generate_series(0, $2 - 1)
         ON CONFLICT DO NOTHING",
    )
    .bind(event)
    .bind(seats_i32)
    .execute(&mut *transaction)
    .await
    .map_err(|e| failed("seats", e))?;
    let taken: Vec<i32> = sqlx::query_scalar("SELECT seat FROM seat_reservations WHERE event = $1")
        .bind(event)
        .fetch_all(&mut *transaction)
        .await
        .map_err(|e| failed("reservations", e))?;
    transaction
        .commit()
        .await
        .map_err(|e| failed("commit", e))?;
    Ok(taken
        .into_iter()
        .filter_map(|seat| usize::try_from(seat).ok())
        .collect())
}

/// The customer of a request: the token's session with a verifier, else the body's `user`. A
/// refusal is its status and detail.
fn customer(
    verifier: Option<&(Verifier, Expectations)>,
    counters: &Counters,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, (StatusCode, String)> {
    if let Some((verifier, expected)) = verifier {
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
                counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                Err((
                    StatusCode::UNAUTHORIZED,
                    format!("admission token rejected: {error}"),
                ))
            }
            None => {
                counters.unauthorized.fetch_add(1, Ordering::Relaxed);
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
        counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        (
            StatusCode::BAD_REQUEST,
            "body: {\"user\": \"<1..256 characters>\"}".to_string(),
        )
    })
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
    let customer = match customer(
        service.verifier.as_ref(),
        &service.counters,
        &headers,
        &body,
    ) {
        Ok(customer) => customer,
        Err((status, detail)) => return problem(status, &detail),
    };
    // In a task of its own: a client that gives up (closes its connection) drops this handler,
    // but a reservation once begun runs to its commit or rollback, never half-way.
    let reservation = {
        let service = service.clone();
        let customer = customer.clone();
        tokio::spawn(async move { service.reserve(&customer).await }).await
    };
    match reservation {
        Ok(Reservation::Reserved(seat)) => {
            axum::Json(json!({"seat": seat, "customer": customer})).into_response()
        }
        Ok(Reservation::PoolTimeout) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "no database connection in time",
        ),
        Ok(Reservation::DatabaseError(error)) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the database failed: {error}"),
        ),
        Ok(Reservation::NoSeat) => problem(StatusCode::CONFLICT, "no seat could be reserved"),
        Err(error) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the reservation failed: {error}"),
        ),
    }
}

async fn audit(State(service): State<Arc<Service>>) -> Response {
    match service.audit().await {
        Ok(audit) => axum::Json(audit).into_response(),
        Err(error) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the database failed: {error}"),
        ),
    }
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
    let service = Arc::new(Service::connect(&args, verifier).await?);
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
    socket
        .bind(args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let listener = socket.listen(LISTEN_BACKLOG).map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    println!("seat service serving at http://{address}");
    let served = axum::serve(listener, router(service.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| e.to_string());
    service.close().await;
    served
}

/// Run by `cargo test` (`test = true` in Cargo.toml) against a real PostgreSQL: the one
/// `scripts/test` starts (`WAITROOM_TEST_POSTGRES_URL`), else a private one from the test kit's
/// launcher; without PostgreSQL they skip loudly, and fail with `CI=true`. Each test has an event
/// of its own, so they share a server.
#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    use waitroom_log::testkit::postgres::{self, PostgresServer};
    use waitroom_token::{AdmissionClaims, SigningKey};

    fn args(url: &str, event: &str, extra: &[&str]) -> Args {
        let base = ["seat_service", "--database-url", url, "--event", event];
        Args::parse_from(base.iter().chain(extra))
    }

    /// An event name no other test (nor an earlier run against the same server) uses.
    fn unique_event(tag: &str) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!("{tag}-{}-{nanos}", std::process::id())
    }

    async fn service(url: &str, event: &str, extra: &[&str]) -> Arc<Service> {
        Arc::new(
            Service::connect(&args(url, event, extra), None)
                .await
                .unwrap(),
        )
    }

    /// The outcomes of `people` reservations at once, spread over `services` in turn.
    async fn crowd(services: &[Arc<Service>], people: usize) -> Vec<Reservation> {
        let mut tasks = tokio::task::JoinSet::new();
        for person in 0..people {
            let service = services[person % services.len()].clone();
            tasks.spawn(async move { service.reserve(&format!("person-{person}")).await });
        }
        let mut outcomes = Vec::new();
        while let Some(outcome) = tasks.join_next().await {
            outcomes.push(outcome.unwrap());
        }
        outcomes
    }

    fn reserved(outcomes: &[Reservation]) -> Vec<usize> {
        let mut seats: Vec<usize> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Reservation::Reserved(seat) => Some(*seat),
                _ => None,
            })
            .collect();
        seats.sort_unstable();
        seats
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_seat_wanted_by_many_at_once_is_reserved_exactly_once() {
        let Some(pg) = postgres::for_test("seat_service::one_seat_wanted_by_many_at_once") else {
            return;
        };
        let event = unique_event("one-seat");
        // Two services (two pools, two seat maps) over one database, as two replicas would be.
        let extra = ["--seats", "3", "--pool", "16", "--work-ms", "30"];
        let services = [
            service(pg.url(), &event, &extra).await,
            service(pg.url(), &event, &extra).await,
        ];
        // 64 transactions at once on seat 1, past any seat map: the database alone decides.
        let mut tasks = tokio::task::JoinSet::new();
        for person in 0..64 {
            let service = services[person % 2].clone();
            tasks.spawn(async move {
                let mut connection = service.db.acquire().await.unwrap();
                service
                    .reserve_seat(&mut connection, 1, &format!("person-{person}"))
                    .await
                    .unwrap()
            });
        }
        let mut won = 0;
        while let Some(outcome) = tasks.join_next().await {
            won += usize::from(outcome.unwrap());
        }
        assert_eq!(won, 1);
        let audit = services[0].audit().await.unwrap();
        assert_eq!(audit["reservations"], 1, "{audit}");
        assert_eq!(audit["doubleBookedSeats"], 0, "{audit}");
        assert_eq!(audit["rowsOwned"], 1, "{audit}");
        assert_eq!(audit["rowsDisagreeingWithLedger"], 0, "{audit}");

        // And through the reservation path, for a one-seat event: one winner out of 64.
        let event = unique_event("one-seat-event");
        let extra = [
            "--seats",
            "1",
            "--pool",
            "8",
            "--work-ms",
            "30",
            "--window",
            "1",
        ];
        let services = [
            service(pg.url(), &event, &extra).await,
            service(pg.url(), &event, &extra).await,
        ];
        let outcomes = crowd(&services, 64).await;
        assert_eq!(reserved(&outcomes), vec![0], "{outcomes:?}");
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == Reservation::NoSeat)
                .count(),
            63
        );
        let audit = services[1].audit().await.unwrap();
        assert_eq!(audit["reservations"], 1, "{audit}");
        assert_eq!(audit["doubleBookedSeats"], 0, "{audit}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_crowd_never_double_books() {
        let Some(pg) = postgres::for_test("seat_service::a_crowd_never_double_books") else {
            return;
        };
        // 300 people for 50 seats, two services of 8 connections each, all at once, all fighting
        // over the same few seats.
        let event = unique_event("crowd");
        let extra = [
            "--seats",
            "50",
            "--pool",
            "8",
            "--work-ms",
            "2",
            "--window",
            "4",
        ];
        let services = [
            service(pg.url(), &event, &extra).await,
            service(pg.url(), &event, &extra).await,
        ];
        let outcomes = crowd(&services, 300).await;
        assert_eq!(reserved(&outcomes), (0..50).collect::<Vec<_>>());
        let no_seat = outcomes
            .iter()
            .filter(|o| **o == Reservation::NoSeat)
            .count();
        assert_eq!(no_seat, 250, "{outcomes:?}");
        let audit = services[0].audit().await.unwrap();
        assert_eq!(audit["doubleBookedSeats"], 0, "{audit}");
        assert_eq!(audit["seatsReserved"], 50, "{audit}");
        assert_eq!(audit["reservations"], 50, "{audit}");
        assert_eq!(audit["rowsOwned"], 50, "{audit}");
        assert_eq!(audit["rowsDisagreeingWithLedger"], 0, "{audit}");
        let conflicts = services
            .iter()
            .map(|s| s.counters.conflicts.load(Ordering::Relaxed))
            .sum::<u64>();
        assert!(conflicts > 0, "people did fight over seats");
    }

    #[tokio::test]
    async fn the_constraint_refuses_a_second_reservation_and_the_audit_sees_the_ledger() {
        let Some(pg) = postgres::for_test("seat_service::the_constraint_refuses") else {
            return;
        };
        let event = unique_event("constraint");
        let service = service(pg.url(), &event, &["--seats", "10", "--work-ms", "0"]).await;
        let Reservation::Reserved(seat) = service.reserve("first").await else {
            panic!("a seat for the first person")
        };
        // A plain insert of the same seat, with no ON CONFLICT: the primary key refuses it.
        let error = sqlx::query(
            "INSERT INTO seat_reservations (event, seat, customer) VALUES ($1, $2, 'second')",
        )
        .bind(&event)
        .bind(seat as i32)
        .execute(&service.db)
        .await
        .unwrap_err();
        let code = error.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some("23505"), "{error}"); // unique_violation
        // A seat the event does not have: the foreign key refuses it.
        let error = sqlx::query(
            "INSERT INTO seat_reservations (event, seat, customer) VALUES ($1, 10, 'nobody')",
        )
        .bind(&event)
        .execute(&service.db)
        .await
        .unwrap_err();
        let code = error.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some("23503"), "{error}"); // foreign_key_violation

        // The ledger has no such constraint: a double booking written into it by hand is counted,
        // and so is the reservation it disagrees with.
        let audit = service.audit().await.unwrap();
        assert_eq!(audit["doubleBookedSeats"], 0, "{audit}");
        for customer in ["intruder", "first"] {
            sqlx::query("INSERT INTO seat_ledger (event, seat, customer) VALUES ($1, $2, $3)")
                .bind(&event)
                .bind(seat as i32)
                .bind(customer)
                .execute(&service.db)
                .await
                .unwrap();
        }
        let audit = service.audit().await.unwrap();
        assert_eq!(audit["reservations"], 3, "{audit}");
        assert_eq!(audit["seatsReserved"], 1, "{audit}");
        assert_eq!(audit["doubleBookedSeats"], 1, "{audit}");
        assert_eq!(audit["customersWithSeveralSeats"], 1, "{audit}");
        assert_eq!(audit["rowsDisagreeingWithLedger"], 0, "{audit}");
        sqlx::query("INSERT INTO seat_ledger (event, seat, customer) VALUES ($1, $2, 'intruder')")
            .bind(&event)
            .bind(seat as i32)
            .execute(&service.db)
            .await
            .unwrap();
        let audit = service.audit().await.unwrap();
        assert_eq!(audit["rowsDisagreeingWithLedger"], 1, "{audit}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restarts_of_the_service_and_of_the_database_keep_the_seats() {
        let test = "seat_service::restarts_keep_the_seats";
        if postgres::require(test).is_none() {
            return;
        }
        // A server of its own, to crash it.
        let dir = tempfile::tempdir().unwrap();
        let mut server = PostgresServer::start(&dir.path().join("pg")).unwrap();
        let url = server.url();
        let extra = ["--seats", "20", "--work-ms", "1", "--window", "4"];
        let first = service(&url, "restart", &extra).await;
        let outcomes = crowd(std::slice::from_ref(&first), 10).await;
        let before = reserved(&outcomes);
        assert_eq!(before.len(), 10, "{outcomes:?}");
        first.close().await;
        drop(first);

        // The database crashes (SIGKILL to it and its backends): what was committed is kept.
        server.kill_9();
        server.start_again().unwrap();

        let refused = Service::connect(&args(&url, "restart", &["--seats", "21"]), None)
            .await
            .err()
            .unwrap();
        assert!(refused.contains("has 20 seats"), "{refused}");

        let second = service(&url, "restart", &extra).await;
        let audit = second.audit().await.unwrap();
        assert_eq!(audit["reservations"], 10, "{audit}");
        assert_eq!(audit["rowsOwned"], 10, "{audit}");
        // The new process's seat map starts from the database: one person after another gets the
        // free seats without running into a taken one.
        let mut after = Vec::new();
        for person in 0..15 {
            match second.reserve(&format!("after-{person}")).await {
                Reservation::Reserved(seat) => after.push(seat),
                other => assert_eq!(other, Reservation::NoSeat),
            }
        }
        assert_eq!(after.len(), 10, "{after:?}");
        assert!(after.iter().all(|seat| !before.contains(seat)), "{after:?}");
        assert_eq!(second.counters.conflicts.load(Ordering::Relaxed), 0);

        // A clean restart of the database too.
        second.close().await;
        server.restart().unwrap();
        let third = service(&url, "restart", &extra).await;
        let audit = third.audit().await.unwrap();
        assert_eq!(audit["reservations"], 20, "{audit}");
        assert_eq!(audit["seatsReserved"], 20, "{audit}");
        assert_eq!(audit["doubleBookedSeats"], 0, "{audit}");
        assert_eq!(audit["rowsDisagreeingWithLedger"], 0, "{audit}");
        assert_eq!(third.reserve("late").await, Reservation::NoSeat);
        third.close().await;
    }

    #[tokio::test]
    async fn a_connection_not_had_in_time_is_a_503() {
        let Some(pg) = postgres::for_test("seat_service::a_connection_not_had_in_time") else {
            return;
        };
        let event = unique_event("pool");
        let service = service(
            pg.url(),
            &event,
            &[
                "--pool",
                "1",
                "--work-ms",
                "300",
                "--acquire-timeout-ms",
                "50",
            ],
        )
        .await;
        let (first, second) = tokio::join!(service.reserve("a"), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            service.reserve("b").await
        });
        assert!(matches!(first, Reservation::Reserved(_)), "{first:?}");
        assert_eq!(second, Reservation::PoolTimeout);
        let response = router(service.clone())
            .oneshot(reserve_request(r#"{"user":"c"}"#))
            .await
            .unwrap();
        // The pool is free again by now.
        assert_eq!(response.status(), StatusCode::OK);
    }

    fn reserve_request(body: &str) -> Request<Body> {
        Request::post("/reserve")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    async fn json_body(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn the_http_api_reserves_refuses_and_audits() {
        let Some(pg) = postgres::for_test("seat_service::the_http_api") else {
            return;
        };
        let event = unique_event("http");
        let service = service(pg.url(), &event, &["--seats", "1", "--work-ms", "0"]).await;
        let app = router(service);
        let response = app
            .clone()
            .oneshot(reserve_request(r#"{"user":"me"}"#))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            json_body(response).await,
            json!({"seat": 0, "customer": "me"})
        );
        let response = app
            .clone()
            .oneshot(reserve_request(r#"{"user":"you"}"#))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let response = app
            .clone()
            .oneshot(reserve_request(r#"{"user":""}"#))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let response = app
            .oneshot(Request::get("/audit").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let audit = json_body(response).await;
        assert_eq!(audit["event"], event.as_str());
        assert_eq!(audit["requests"], 3, "{audit}");
        assert_eq!(audit["reserved"], 1, "{audit}");
        assert_eq!(audit["noSeat"], 1, "{audit}");
        assert_eq!(audit["badRequests"], 1, "{audit}");
        assert_eq!(audit["seatsReserved"], 1, "{audit}");
        assert_eq!(audit["doubleBookedSeats"], 0, "{audit}");
    }

    #[tokio::test]
    async fn no_database_is_an_error_at_start() {
        let url = format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            waitroom_log::testkit::free_port()
        );
        let error = Service::connect(&args(&url, "nothing", &[]), None)
            .await
            .err()
            .unwrap();
        assert!(error.contains("cannot connect to the database"), "{error}");
        let error = Service::connect(&args("mysql://nope", "nothing", &[]), None)
            .await
            .err()
            .unwrap();
        assert!(error.starts_with("--database-url"), "{error}");
    }

    #[test]
    fn flags_out_of_range_are_refused() {
        let parse = |extra: &[&str]| {
            Args::try_parse_from(
                ["seat_service", "--database-url", "postgres://x"]
                    .iter()
                    .chain(extra),
            )
        };
        assert!(parse(&[]).is_ok());
        assert!(parse(&["--seats", "0"]).is_err());
        assert!(parse(&["--seats", "1000001"]).is_err());
        assert!(parse(&["--pool", "0"]).is_err());
        assert!(parse(&["--pool", "257"]).is_err());
        assert!(parse(&["--event", ""]).is_err());
        assert!(parse(&["--event", &"e".repeat(65)]).is_err());
    }

    #[test]
    fn only_valid_admission_tokens_of_the_room_get_in() {
        let key = SigningKey::generate().unwrap();
        let verifier = Verifier::from_jwks_json(&key.jwks_json()).unwrap();
        let expected = Expectations::new("waitroom", "seats").with_leeway_s(TOKEN_LEEWAY_S);
        let gate = (verifier, expected);
        let counters = Counters::default();
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
            customer(Some(&gate), &counters, &with(&token("seats")), b"{}").unwrap(),
            "wr_session"
        );
        let refused =
            customer(Some(&gate), &counters, &with(&token("another-room")), b"{}").unwrap_err();
        assert_eq!(refused.0, StatusCode::UNAUTHORIZED);
        let refused = customer(
            Some(&gate),
            &counters,
            &HeaderMap::new(),
            br#"{"user":"me"}"#,
        )
        .unwrap_err();
        assert_eq!(refused.0, StatusCode::UNAUTHORIZED);
        assert_eq!(counters.unauthorized.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn without_tokens_the_body_names_the_customer() {
        let counters = Counters::default();
        assert_eq!(
            customer(None, &counters, &HeaderMap::new(), br#"{"user":"me"}"#).unwrap(),
            "me"
        );
        assert_eq!(
            customer(None, &counters, &HeaderMap::new(), b"nope")
                .unwrap_err()
                .0,
            StatusCode::BAD_REQUEST
        );
        let long = format!(r#"{{"user":"{}"}}"#, "x".repeat(257));
        assert_eq!(
            customer(None, &counters, &HeaderMap::new(), long.as_bytes())
                .unwrap_err()
                .0,
            StatusCode::BAD_REQUEST
        );
    }
}
