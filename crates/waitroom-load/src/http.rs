//! The HTTP side: one pooled HTTP/1.1 client shared by every simulated user, a bound on
//! in-flight requests, a timeout and a body-size bound on every request. Every answer becomes
//! an [`Outcome`]; nothing a server sends can make this panic.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;

use crate::api::{
    ChallengeBody, JoinRequest, ROOMS_PATH, RoomConfig, RoomStats, SESSIONS_PATH, SessionView,
};
use crate::limits::RESPONSE_BODY_BYTES_MAX;
use crate::options::AdminToken;
use crate::time::{Clock, TimeUs};
use crate::trace::Outcome;

/// How long an idle pooled connection is kept. Users poll every few seconds, so a connection
/// idle for longer than this is not about to be reused.
const POOL_IDLE_TIMEOUT_SECONDS: u64 = 30;

/// One request's timing and result.
#[derive(Debug)]
pub struct Exchange<T> {
    pub sent_us: TimeUs,
    pub received_us: TimeUs,
    pub outcome: Outcome,
    /// The parsed body, when `outcome` is [`Outcome::Ok`].
    pub body: Option<T>,
}

/// The shared client.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base_url: Arc<str>,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    clock: Clock,
}

impl HttpClient {
    /// A client for `base_url` (`http://host:port[/prefix]`, validated by the options) with at
    /// most `in_flight_max` requests in flight and `timeout` per request.
    pub fn new(base_url: &str, in_flight_max: u32, timeout: Duration, clock: Clock) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(POOL_IDLE_TIMEOUT_SECONDS))
            .pool_max_idle_per_host(in_flight_max as usize)
            .build(connector);
        Self {
            client,
            base_url: Arc::from(base_url),
            in_flight: Arc::new(Semaphore::new(in_flight_max as usize)),
            timeout,
            clock,
        }
    }

    /// The clock the timings are read from.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Sends one request and reads its whole body (bounded), within the in-flight bound and the
    /// timeout. `sent_us` is taken once the in-flight bound let the request go, so the latency
    /// is the server's (plus network), not this tool's queueing.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, String)],
        body: Option<Vec<u8>>,
        bounded: bool,
    ) -> (TimeUs, TimeUs, Result<(StatusCode, Bytes), Outcome>) {
        // The semaphore is never closed, so acquiring only fails if it were; treat as transport.
        let permit = if bounded {
            match self.in_flight.acquire().await {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let now = self.clock.now_us();
                    return (now, now, Err(Outcome::Transport));
                }
            }
        } else {
            None
        };
        let sent_us = self.clock.now_us();
        let result = match self.build(method, path, headers, body) {
            Some(request) => {
                match tokio::time::timeout(self.timeout, self.exchange(request)).await {
                    Ok(result) => result,
                    Err(_) => Err(Outcome::Timeout),
                }
            }
            None => Err(Outcome::Transport),
        };
        let received_us = self.clock.now_us();
        drop(permit);
        (sent_us, received_us, result)
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, String)],
        body: Option<Vec<u8>>,
    ) -> Option<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_url));
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            builder = builder.header(name, value.as_str());
        }
        builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .ok()
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), Outcome> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|_| Outcome::Transport)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), RESPONSE_BODY_BYTES_MAX)
            .collect()
            .await
            .map_err(|_| Outcome::BadBody)?
            .to_bytes();
        Ok((status, body))
    }

    /// Sends a request and parses a 2xx body with `parse`.
    #[allow(clippy::too_many_arguments)]
    async fn call<T, E>(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, String)],
        body: Option<Vec<u8>>,
        bounded: bool,
        parse: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Exchange<T> {
        let (sent_us, received_us, result) = self.send(method, path, headers, body, bounded).await;
        let (outcome, body) = match result {
            Err(outcome) => (outcome, None),
            Ok((status, _)) if !status.is_success() => (Outcome::Status(status.as_u16()), None),
            Ok((_, bytes)) => match parse(&bytes) {
                Ok(parsed) => (Outcome::Ok, Some(parsed)),
                Err(_) => (Outcome::BadBody, None),
            },
        };
        Exchange {
            sent_us,
            received_us,
            outcome,
            body,
        }
    }

    /// `POST /sessions` with an `Idempotency-Key`, and `forwarded` (a client-address header of
    /// the user's own, see `--forwarded-for`) if given. A `403` may be a room that asks for a
    /// challenge (docs/api.md, "Challenges"): then one is fetched, solved natively
    /// (`crate::pow`, on a blocking thread) and the join sent again with it, as a browser would;
    /// the exchange's time then spans all of it, the solve included.
    pub async fn join(
        &self,
        room: &str,
        idempotency_key: &str,
        forwarded: Option<(header::HeaderName, String)>,
    ) -> Exchange<SessionView> {
        let first = self
            .join_with(room, idempotency_key, forwarded.clone(), None)
            .await;
        if first.outcome != Outcome::Status(403) {
            return first;
        }
        let path = format!("{ROOMS_PATH}/{room}/challenge");
        let issued = self
            .call(Method::POST, &path, &[], None, true, ChallengeBody::parse)
            .await;
        let Some(issued) = issued.body else {
            return first; // not a challenged room (409), or no challenge to be had
        };
        let challenge = issued.challenge.clone();
        let bits = issued.difficulty_bits;
        let solved =
            tokio::task::spawn_blocking(move || crate::pow::solve(&challenge, bits, 0, u64::MAX))
                .await;
        let Ok(Some(solved)) = solved else {
            return first;
        };
        let second = self
            .join_with(
                room,
                idempotency_key,
                forwarded,
                Some((&issued.challenge, &solved.solution)),
            )
            .await;
        Exchange {
            sent_us: first.sent_us,
            ..second
        }
    }

    async fn join_with(
        &self,
        room: &str,
        idempotency_key: &str,
        forwarded: Option<(header::HeaderName, String)>,
        solved: Option<(&str, &str)>,
    ) -> Exchange<SessionView> {
        let body = serde_json::to_vec(&JoinRequest {
            room_id: room,
            challenge: solved.map(|(challenge, _)| challenge),
            solution: solved.map(|(_, solution)| solution),
        })
        .unwrap_or_default();
        let mut headers = vec![(
            header::HeaderName::from_static("idempotency-key"),
            idempotency_key.to_string(),
        )];
        headers.extend(forwarded);
        self.call(
            Method::POST,
            SESSIONS_PATH,
            &headers,
            Some(body),
            true,
            SessionView::parse,
        )
        .await
    }

    /// `GET /sessions/{id}`.
    pub async fn poll(&self, session_id: &str) -> Exchange<SessionView> {
        let path = format!("{SESSIONS_PATH}/{session_id}");
        self.call(Method::GET, &path, &[], None, true, SessionView::parse)
            .await
    }

    /// `GET /sessions/{id}?waitSeconds=N`: answered when the session's status changes or after
    /// `wait_seconds`. Not bound by the in-flight limit (it would hold a permit for seconds):
    /// only users near the front of the line send it, a number bounded by the admission rate.
    pub async fn held_poll(&self, session_id: &str, wait_seconds: u64) -> Exchange<SessionView> {
        let path = format!("{SESSIONS_PATH}/{session_id}?waitSeconds={wait_seconds}");
        self.call(Method::GET, &path, &[], None, false, SessionView::parse)
            .await
    }

    /// `POST /sessions/{id}:heartbeat`.
    pub async fn heartbeat(&self, session_id: &str) -> Exchange<SessionView> {
        let path = format!("{SESSIONS_PATH}/{session_id}:heartbeat");
        self.call(Method::POST, &path, &[], None, true, SessionView::parse)
            .await
    }

    /// `POST /sessions/{id}:complete` with the admission token (none if the view had none, which
    /// the server answers with `401`).
    pub async fn complete(
        &self,
        session_id: &str,
        admission_token: Option<&str>,
    ) -> Exchange<SessionView> {
        let path = format!("{SESSIONS_PATH}/{session_id}:complete");
        let headers: Vec<(header::HeaderName, String)> = admission_token
            .map(|token| (header::AUTHORIZATION, format!("Bearer {token}")))
            .into_iter()
            .collect();
        self.call(
            Method::POST,
            &path,
            &headers,
            None,
            true,
            SessionView::parse,
        )
        .await
    }

    /// `POST` to the protected service (this client's base URL itself) with the admission token,
    /// if any, and `{"user": user}`. Any 2xx answer is a success; its body is not read further.
    pub async fn protected(&self, admission_token: Option<&str>, user: &str) -> Exchange<()> {
        let body = serde_json::to_vec(&serde_json::json!({ "user": user })).unwrap_or_default();
        let headers: Vec<(header::HeaderName, String)> = admission_token
            .map(|token| (header::AUTHORIZATION, format!("Bearer {token}")))
            .into_iter()
            .collect();
        self.call(Method::POST, "", &headers, Some(body), true, |_| {
            Ok::<(), ()>(())
        })
        .await
    }

    /// `DELETE /sessions/{id}`.
    pub async fn leave(&self, session_id: &str) -> Exchange<SessionView> {
        let path = format!("{SESSIONS_PATH}/{session_id}");
        self.call(Method::DELETE, &path, &[], None, true, SessionView::parse)
            .await
    }

    fn admin_headers(token: &AdminToken) -> [(header::HeaderName, String); 1] {
        [(header::AUTHORIZATION, format!("Bearer {}", token.expose()))]
    }

    /// `PUT /rooms/{room}`.
    pub async fn put_room(
        &self,
        room: &str,
        config: &RoomConfig,
        token: &AdminToken,
    ) -> Exchange<RoomStats> {
        let path = format!("{ROOMS_PATH}/{room}");
        let body = serde_json::to_vec(config).unwrap_or_default();
        self.call(
            Method::PUT,
            &path,
            &Self::admin_headers(token),
            Some(body),
            false,
            RoomStats::parse,
        )
        .await
    }

    /// `DELETE /rooms/{room}`; a `404` (no such room) counts as success.
    pub async fn close_room(&self, room: &str, token: &AdminToken) -> Exchange<()> {
        let path = format!("{ROOMS_PATH}/{room}");
        let mut exchange = self
            .call(
                Method::DELETE,
                &path,
                &Self::admin_headers(token),
                None,
                false,
                |_| Ok::<(), ()>(()),
            )
            .await;
        if exchange.outcome == Outcome::Status(404) {
            exchange.outcome = Outcome::Ok;
            exchange.body = Some(());
        }
        exchange
    }

    /// `GET /rooms/{room}`. Outside the in-flight bound: the sampler sends one at a time and
    /// must not be starved by the users it observes.
    pub async fn room_stats(&self, room: &str, token: &AdminToken) -> Exchange<RoomStats> {
        let path = format!("{ROOMS_PATH}/{room}");
        self.call(
            Method::GET,
            &path,
            &Self::admin_headers(token),
            None,
            false,
            RoomStats::parse,
        )
        .await
    }
}
