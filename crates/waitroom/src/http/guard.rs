//! The one middleware around the whole API: records every request's latency by route, and gives
//! bodyless error responses of the framework or of a layer (`405`, `413`, ...) the API's problem
//! body.
//!
//! Written as one small tower layer with its own future rather than axum's `from_fn` and
//! `map_response`: every status poll passes through it, and those box a future and move the
//! request between nested services; this costs a clock read and three atomic adds. (Requests in
//! flight are bounded by the connection bound, `connections`, once per connection rather than
//! per request.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{Method, header};

use super::problem::{PROBLEM_JSON, Problem};
use crate::metrics::{Metrics, ROUTES};

#[derive(Clone)]
pub(crate) struct GuardLayer {
    metrics: Arc<Metrics>,
}

impl GuardLayer {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Guard<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> tower::Service<Request> for Guard<S>
where
    S: tower::Service<Request, Response = http::Response<B>, Error = std::convert::Infallible>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        GuardFuture {
            started: Instant::now(),
            route: route_index(request.uri().path()),
            method: method_index(request.method()),
            metrics: self.metrics.clone(),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    pub(crate) struct GuardFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        route: usize,
        method: usize,
        metrics: Arc<Metrics>,
    }
}

impl<F, B> Future for GuardFuture<F>
where
    F: Future<Output = Result<http::Response<B>, std::convert::Infallible>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let response = problemize(response.map(axum::body::Body::new));
        let status = response.status().as_u16();
        this.metrics.http_request_seconds.observe(
            *this.route,
            *this.method,
            status,
            this.started.elapsed(),
        );
        Poll::Ready(Ok(response))
    }
}

/// The index in [`ROUTES`] of a path's route template.
fn route_index(path: &str) -> usize {
    let name = if let Some(rest) = path.strip_prefix("/api/waiting-room/sessions") {
        match rest {
            "" => "/api/waiting-room/sessions",
            _ if rest.ends_with(":heartbeat") => "/api/waiting-room/sessions/{id}:heartbeat",
            _ if rest.ends_with(":complete") => "/api/waiting-room/sessions/{id}:complete",
            _ if rest.ends_with(":evict") => "/api/waiting-room/sessions/{id}:evict",
            _ => "/api/waiting-room/sessions/{id}",
        }
    } else if let Some(rest) = path.strip_prefix("/api/waiting-room/rooms") {
        if rest.is_empty() {
            "/api/waiting-room/rooms"
        } else {
            "/api/waiting-room/rooms/{roomId}"
        }
    } else if path.starts_with("/room/") {
        "/room/{roomId}"
    } else if path.starts_with("/assets/") {
        "/assets/{file}"
    } else {
        path
    };
    ROUTES
        .iter()
        .position(|r| *r == name)
        .unwrap_or(ROUTES.len() - 1)
}

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::HEAD => 4,
        _ => 5,
    }
}

/// Errors produced by the framework or a layer (`405`, `413`, ...) carry no problem body: give
/// them the API's, keeping their headers (`Allow`). An error a handler answered with a JSON body
/// of its own (`/readyz`'s `503`, whose body says why) is left as it is.
fn problemize(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let has_json_body = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| {
            ct.as_bytes().starts_with(PROBLEM_JSON.as_bytes())
                || ct.as_bytes().starts_with(b"application/json")
        });
    if has_json_body {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut replaced = Problem::for_status(status).into_response();
    *replaced.status_mut() = status;
    if let Some(allow) = allow {
        replaced.headers_mut().insert(header::ALLOW, allow);
    }
    replaced
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn framework_errors_get_a_problem_and_handlers_json_errors_stay() {
        let bare = (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET,HEAD")],
        )
            .into_response();
        let replaced = problemize(bare);
        assert_eq!(replaced.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(replaced.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(replaced.headers()[header::ALLOW], "GET,HEAD");
        let text = (StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded").into_response();
        assert_eq!(
            problemize(text).headers()[header::CONTENT_TYPE],
            PROBLEM_JSON
        );
        let readiness = (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"ready":false}"#,
        )
            .into_response();
        let kept = problemize(readiness);
        assert_eq!(kept.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(kept.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn routes() {
        for (path, route) in [
            ("/api/waiting-room/sessions", "/api/waiting-room/sessions"),
            (
                "/api/waiting-room/sessions/wr_x",
                "/api/waiting-room/sessions/{id}",
            ),
            (
                "/api/waiting-room/sessions/wr_x:heartbeat",
                "/api/waiting-room/sessions/{id}:heartbeat",
            ),
            (
                "/api/waiting-room/sessions/wr_x:complete",
                "/api/waiting-room/sessions/{id}:complete",
            ),
            ("/api/waiting-room/rooms", "/api/waiting-room/rooms"),
            (
                "/api/waiting-room/rooms/r",
                "/api/waiting-room/rooms/{roomId}",
            ),
            ("/room/r", "/room/{roomId}"),
            ("/metrics", "/metrics"),
            ("/nothing", "other"),
        ] {
            assert_eq!(ROUTES[route_index(path)], route, "{path}");
        }
    }
}
