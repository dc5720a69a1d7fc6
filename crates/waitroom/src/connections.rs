//! Client connections: accepting them, bounding how many there are, and closing the idle and the
//! slow ones.
//!
//! # Bounds (`limits`, flags of `waitroom serve`)
//! - **In total** (`CONNECTIONS_MAX`): one semaphore permit per connection. When every permit is
//!   taken, `accept` waits: new connections queue in the kernel's listen backlog
//!   (`server::LISTEN_BACKLOG`) until one closes. HTTP/1.1 carries one request at a time per
//!   connection, so this bounds the requests in flight too. Raise the process's open-files limit
//!   (`ulimit -n`) above it for a large on-sale.
//! - **Per client address** (`CONNECTIONS_PER_ADDRESS_MAX`, an IPv6 /64 counting as one address):
//!   a count per address, taken at `accept` and given back by a drop guard that lives as long as
//!   the connection's task, so every way a connection ends gives it back. A connection past the
//!   cap is closed at once, before anything is read: answering it a `503` would mean reading and
//!   parsing a request under a header timeout, which is what a flood wants the node to spend,
//!   whereas a refusal costs one `accept` and one `close`. The address already holds that many
//!   connections, on which it is answered; the waiting page treats a closed connection like any
//!   network error and retries later.
//! - **In time**: a request's head must arrive within `HEADER_READ_TIMEOUT_MS` of its first byte
//!   (of `accept` for a connection's first request), a connection may wait `IDLE_TIMEOUT_MS` for
//!   its next request, and a request may be in flight (from its head to the end of its answer)
//!   for the node's own waits plus `REQUEST_TIME_BEYOND_WAITS_MS`. Past any of these the
//!   connection is closed (a request in flight is dropped with it).
//!
//! # Why not hyper's or tower-http's timeouts
//! The connection is served by hyper's HTTP/1 connection (`hyper::server::conn::http1`, the same
//! as `axum::serve`, which offers no timeouts and no hook per connection). Its
//! `header_read_timeout` starts its clock when the connection is ready for a request (accepted,
//! or its previous answer written) and stops it when the head is complete: one number for both
//! the keep-alive wait and a slow head, so either pages reconnect between polls or a slowloris
//! client holds its socket as long as a keep-alive does; it also arms a timer for every request.
//! tower-http's `TimeoutLayer` bounds a handler, not a connection (neither the head, nor the wait
//! between requests, nor a client that stops reading its answer), with a timer per request too.
//! So each connection records what it is doing and since when, in a few relaxed atomics that its
//! reads and its requests update ([`Activity`]), and one task checks every open connection
//! every `CONNECTION_CHECK_INTERVAL_MAX` (or a quarter of the shortest timeout) and closes those
//! past their timeout: no timer per request or per connection, and a connection is closed
//! between its timeout and its timeout plus one check.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

use crate::limits;
use crate::metrics::{ConnectionMetrics, ReasonLabels};

pub use crate::limits::CONNECTIONS_MAX;

/// The bounds on client connections (see the module's documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections in total (at least 1).
    pub connections_max: usize,
    /// Open connections per client address; `0`: no cap.
    pub connections_per_address_max: usize,
    /// From a request's first byte (from `accept` for the first request) to the end of its head.
    pub header_read_timeout: Duration,
    /// From the end of an answer to the first byte of the next request.
    pub idle_timeout: Duration,
    /// From the end of a request's head to the end of its answer.
    pub request_timeout: Duration,
}

impl ConnectionLimits {
    /// The defaults of `limits`, with the request timeout of the node's default waits.
    pub const DEFAULT: Self = Self {
        connections_max: limits::CONNECTIONS_MAX,
        connections_per_address_max: limits::CONNECTIONS_PER_ADDRESS_MAX,
        header_read_timeout: Duration::from_millis(limits::HEADER_READ_TIMEOUT_MS),
        idle_timeout: Duration::from_millis(limits::IDLE_TIMEOUT_MS),
        request_timeout: Duration::from_millis(
            crate::node::NodeOptions::DEFAULT.write_wait_ms
                + crate::node::NodeOptions::DEFAULT.catch_up_wait_ms
                + limits::REQUEST_TIME_BEYOND_WAITS_MS,
        ),
    };

    /// How often connections are checked: `CONNECTION_CHECK_INTERVAL_MAX`, or a quarter of the
    /// shortest timeout (at least 10 ms).
    pub fn check_interval(&self) -> Duration {
        let shortest = self
            .header_read_timeout
            .min(self.idle_timeout)
            .min(self.request_timeout);
        (shortest / 4).clamp(
            Duration::from_millis(10),
            limits::CONNECTION_CHECK_INTERVAL_MAX,
        )
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The client's address, as handlers see it (`ConnectInfo<PeerAddr>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// What the per-address cap counts as one client: an IPv4 address (an IPv4-mapped IPv6 one
/// included), or an IPv6 /64 (one subscriber's network: a client holding one holds them all).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves; then stops
/// accepting, lets each connection finish the request it is serving (idle ones close at once),
/// and returns once every connection is closed. Bound that wait with a timeout of your own.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // Every reason is served from the start, at 0.
    for reason in TimedOut::ALL {
        let _ = metrics.timed_out_total.get_or_create(&ReasonLabels {
            reason: reason.as_str(),
        });
    }
    let permits = Arc::new(Semaphore::new(limits.connections_max.max(1)));
    let table = Arc::new(Table::new(limits, metrics));
    let checker = AbortOnDrop(tokio::spawn(check_every_interval(table.clone())));
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only, as before (axum's `http2` feature is off): TLS and HTTP/2 end at the load
    // balancer. Keep-alive is on (hyper's default); no hyper timer, so no hyper timeout (above).
    let builder = hyper::server::conn::http1::Builder::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            // The semaphore is never closed.
            Ok(permit) = permits.clone().acquire_owned() => permit,
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Too many open files and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(entry) = table.admit(peer.ip()) else {
            table.metrics.refused_total.inc();
            tracing::debug!(%peer, "connection refused: its address is at its cap");
            continue;
        };
        // Answers go out at once rather than waiting to be coalesced (Nagle).
        let _ = stream.set_nodelay(true);
        let connection = serve_connection(
            stream,
            peer,
            entry,
            router.clone(),
            builder.clone(),
            &graceful,
        );
        tokio::spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    drop(listener);
    tracing::debug!(
        connections = graceful.count(),
        "stopped accepting; draining connections"
    );
    graceful.shutdown().await;
    drop(checker);
}

/// One connection, until it closes or times out.
fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    entry: Entry,
    router: Router,
    builder: hyper::server::conn::http1::Builder,
    graceful: &GracefulShutdown,
) -> impl Future<Output = ()> + Send + 'static {
    let activity = entry.activity.clone();
    let io = TokioIo::new(Tracked {
        stream,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
            let busy = Busy::start(&activity);
            let answer = router.clone().oneshot(request);
            async move {
                let response = answer.await?;
                Ok::<_, Infallible>(response.map(|body| TrackedBody { body, _busy: busy }))
            }
        }
    });
    let connection = graceful.watch(builder.serve_connection(io, service));
    async move {
        tokio::select! {
            served = connection => {
                if let Err(e) = served {
                    tracing::trace!(%peer, error = %e, "connection ended with an error");
                }
            }
            reason = activity.closed() => {
                // Counted by the checker when it closed it (before the socket is dropped here, so
                // whoever sees the connection end sees it counted).
                tracing::debug!(%peer, reason = reason.as_str(), "connection timed out");
            }
        }
        drop(entry);
    }
}

/// Why a connection was closed by the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimedOut {
    Header,
    Idle,
    Request,
}

impl TimedOut {
    pub const ALL: [TimedOut; 3] = [TimedOut::Header, TimedOut::Idle, TimedOut::Request];

    pub fn as_str(self) -> &'static str {
        match self {
            TimedOut::Header => "header",
            TimedOut::Idle => "idle",
            TimedOut::Request => "request",
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(TimedOut::Header),
            2 => Some(TimedOut::Idle),
            3 => Some(TimedOut::Request),
            _ => None,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            TimedOut::Header => 1,
            TimedOut::Idle => 2,
            TimedOut::Request => 3,
        }
    }
}

// What a connection is doing (`Activity::phase`).
/// Waiting for the rest of a request's head (or for the first request).
const PHASE_HEAD: u8 = 0;
/// Between an answer and the first byte of the next request.
const PHASE_IDLE: u8 = 1;
/// Serving a request: from the end of its head to the end of its answer.
const PHASE_BUSY: u8 = 2;

/// What a connection is doing and since when, written by the connection's own task (its reads,
/// its requests) and read by the checker. `since_ms` is stored before `phase` (release) and
/// read after it (acquire), so the checker never pairs a new phase with an older start; an old
/// phase with a newer start only delays a close until the next check.
pub struct Activity {
    epoch: Instant,
    phase: AtomicU8,
    since_ms: AtomicU64,
    /// Requests whose answer has not ended (one at a time on HTTP/1.1).
    in_flight: AtomicU32,
    /// Bytes arrived while busy: a pipelined request, whose head then started at the answer's end.
    read_while_busy: AtomicBool,
    /// The timeout that closed it (`TimedOut::to_u8`), 0 while open.
    closed: AtomicU8,
    notify: Notify,
}

impl Activity {
    fn new(epoch: Instant) -> Self {
        let activity = Self {
            epoch,
            phase: AtomicU8::new(PHASE_HEAD),
            since_ms: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            read_while_busy: AtomicBool::new(false),
            closed: AtomicU8::new(0),
            notify: Notify::new(),
        };
        activity.enter(PHASE_HEAD);
        activity
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn enter(&self, phase: u8) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
    }

    /// Bytes arrived.
    fn on_read(&self) {
        match self.phase.load(Ordering::Relaxed) {
            PHASE_IDLE => self.enter(PHASE_HEAD),
            PHASE_BUSY => self.read_while_busy.store(true, Ordering::Relaxed),
            _ => {}
        }
    }

    /// The timeout this connection is past at `now_ms`, if any.
    fn expired(&self, now_ms: u64, limits: &ConnectionLimits) -> Option<TimedOut> {
        let phase = self.phase.load(Ordering::Acquire);
        let since_ms = self.since_ms.load(Ordering::Relaxed);
        let (timeout, reason) = match phase {
            PHASE_IDLE => (limits.idle_timeout, TimedOut::Idle),
            PHASE_BUSY => (limits.request_timeout, TimedOut::Request),
            _ => (limits.header_read_timeout, TimedOut::Header),
        };
        let elapsed = Duration::from_millis(now_ms.saturating_sub(since_ms));
        (elapsed >= timeout).then_some(reason)
    }

    /// Closes the connection (once); true the first time.
    fn close(&self, reason: TimedOut) -> bool {
        let first = self
            .closed
            .compare_exchange(0, reason.to_u8(), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if first {
            self.notify.notify_one();
        }
        first
    }

    /// Resolves once [`close`](Self::close) was called.
    async fn closed(&self) -> TimedOut {
        loop {
            if let Some(reason) = TimedOut::from_u8(self.closed.load(Ordering::Acquire)) {
                return reason;
            }
            self.notify.notified().await;
        }
    }
}

/// A request in flight; dropped with its answer's body (hyper drops it once written, or when the
/// connection closes).
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Self {
        if activity.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            activity.read_while_busy.store(false, Ordering::Relaxed);
            activity.enter(PHASE_BUSY);
        }
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            if activity.read_while_busy.load(Ordering::Relaxed) {
                activity.enter(PHASE_HEAD);
            } else {
                activity.enter(PHASE_IDLE);
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// An answer's body, carrying its request's [`Busy`].
    struct TrackedBody {
        #[pin]
        body: Body,
        _busy: Busy,
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Every open connection's [`Activity`], and the open connections per address.
struct Table {
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    epoch: Instant,
    inner: Mutex<TableInner>,
}

#[derive(Default)]
struct TableInner {
    next_id: u64,
    connections: HashMap<u64, Arc<Activity>>,
    per_address: HashMap<IpAddr, usize>,
}

impl Table {
    fn new(limits: ConnectionLimits, metrics: ConnectionMetrics) -> Self {
        Self {
            limits,
            metrics,
            epoch: Instant::now(),
            inner: Mutex::new(TableInner::default()),
        }
    }

    /// Counts a new connection from `ip`, or `None` if its address is at its cap.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Entry> {
        let cap = self.limits.connections_per_address_max;
        let address = (cap > 0).then(|| address_key(ip));
        let activity = Arc::new(Activity::new(self.epoch));
        let mut inner = self.inner.lock();
        if let Some(address) = address {
            let count = inner.per_address.get(&address).copied().unwrap_or(0);
            if count >= cap {
                return None;
            }
            inner.per_address.insert(address, count + 1);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.connections.insert(id, activity.clone());
        drop(inner);
        self.metrics.open.inc();
        Some(Entry {
            table: self.clone(),
            id,
            address,
            activity,
        })
    }

    /// Closes the connections past their timeout.
    fn check(&self) {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let expired: Vec<(Arc<Activity>, TimedOut)> = {
            let inner = self.inner.lock();
            inner
                .connections
                .values()
                .filter_map(|activity| {
                    activity
                        .expired(now_ms, &self.limits)
                        .map(|reason| (activity.clone(), reason))
                })
                .collect()
        };
        for (activity, reason) in expired {
            // Counted before the connection's task learns of it and drops the socket.
            if activity.close(reason) {
                self.metrics
                    .timed_out_total
                    .get_or_create(&ReasonLabels {
                        reason: reason.as_str(),
                    })
                    .inc();
            }
        }
    }
}

async fn check_every_interval(table: Arc<Table>) {
    let mut every = tokio::time::interval(table.limits.check_interval());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        table.check();
    }
}

/// An open connection in the [`Table`]; dropping it takes the connection out and gives its
/// address's count back.
struct Entry {
    table: Arc<Table>,
    id: u64,
    address: Option<IpAddr>,
    activity: Arc<Activity>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut inner = self.table.inner.lock();
        inner.connections.remove(&self.id);
        if let Some(address) = self.address
            && let Some(count) = inner.per_address.get_mut(&address)
        {
            *count -= 1;
            if *count == 0 {
                inner.per_address.remove(&address);
            }
        }
        drop(inner);
        self.table.metrics.open.dec();
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A client connection whose reads are recorded in its [`Activity`].
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.on_read();
        }
        read
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            connections_max: 10,
            connections_per_address_max: 2,
            header_read_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(1_000),
            request_timeout: Duration::from_millis(500),
        }
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(address_key(v4), v4);
    }

    #[test]
    fn the_per_address_count_is_given_back_when_a_connection_ends() {
        let table = Arc::new(Table::new(limits(), ConnectionMetrics::default()));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let first = table.admit(ip).unwrap();
        let _second = table.admit(ip).unwrap();
        assert!(table.admit(ip).is_none());
        let _elsewhere = table.admit(other).unwrap();
        assert_eq!(table.metrics.open.get(), 3);
        drop(first);
        assert!(table.admit(ip).is_some());
        let uncapped = Arc::new(Table::new(
            ConnectionLimits {
                connections_per_address_max: 0,
                ..limits()
            },
            ConnectionMetrics::default(),
        ));
        let held: Vec<Entry> = (0..5).map(|_| uncapped.admit(ip).unwrap()).collect();
        assert!(uncapped.inner.lock().per_address.is_empty());
        drop(held);
        assert_eq!(uncapped.metrics.open.get(), 0);
    }

    #[test]
    fn each_phase_has_its_timeout() {
        let limits = limits();
        let activity = Arc::new(Activity::new(Instant::now()));
        let at = |ms: u64| activity.since_ms.load(Ordering::Relaxed) + ms;
        // The first request's head: from accept.
        assert_eq!(activity.expired(at(99), &limits), None);
        assert_eq!(activity.expired(at(100), &limits), Some(TimedOut::Header));
        // Serving a request.
        let busy = Busy::start(&activity);
        assert_eq!(activity.expired(at(499), &limits), None);
        assert_eq!(activity.expired(at(500), &limits), Some(TimedOut::Request));
        // Between requests.
        drop(busy);
        assert_eq!(activity.expired(at(999), &limits), None);
        assert_eq!(activity.expired(at(1_000), &limits), Some(TimedOut::Idle));
        // The next request's first byte starts its head's clock.
        activity.on_read();
        assert_eq!(activity.expired(at(100), &limits), Some(TimedOut::Header));
        // Bytes of a pipelined request while busy: its head started when the answer ended.
        let busy = Busy::start(&activity);
        activity.on_read();
        assert_eq!(activity.expired(at(499), &limits), None);
        drop(busy);
        assert_eq!(activity.expired(at(100), &limits), Some(TimedOut::Header));
    }

    #[test]
    fn checks_are_four_per_shortest_timeout_within_bounds() {
        assert_eq!(limits().check_interval(), Duration::from_millis(25));
        assert_eq!(
            ConnectionLimits::DEFAULT.check_interval(),
            limits::CONNECTION_CHECK_INTERVAL_MAX
        );
    }
}
