//! `RequireAdmission` (feature `tower`): a tower layer for protected HTTP services that lets a
//! request through only with a valid admission token.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::claims::Expectations;
use crate::limits::TOKEN_LENGTH_MAX_BYTES;
use crate::verify::{Verifier, VerifyError};

/// Default name of the cookie, and the name of the query parameter, that carry the token.
pub const TOKEN_PARAMETER_NAME: &str = "waitroomToken";

type VerifierSource = Arc<dyn Fn() -> Arc<Verifier> + Send + Sync>;
type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A tower [`Layer`] that admits a request only with a valid admission token.
///
/// The token is taken from the first of these that is present:
/// 1. `Authorization: Bearer <token>`,
/// 2. the query parameter `waitroomToken` (unless turned off with
///    [`without_query_parameter`](Self::without_query_parameter)),
/// 3. the cookie `waitroomToken` (name set with [`cookie_name`](Self::cookie_name), or turned
///    off with [`without_cookie`](Self::without_cookie)).
///
/// A valid token's [`AdmissionClaims`](crate::AdmissionClaims) are inserted into the request
/// extensions (in axum: `Extension<AdmissionClaims>`). Otherwise the inner service is not
/// called and the answer is `401 Unauthorized` with an `application/problem+json` body
/// (RFC 9457) and `WWW-Authenticate: Bearer` (RFC 6750).
///
/// The response body type only needs `From<String>` (axum's `Body`, `Full<Bytes>`,
/// `String`, ...); the request body is untouched.
///
/// ```
/// use waitroom_token::{Expectations, RequireAdmission, Verifier};
///
/// # let jwks_json = r#"{"keys":[{"kty":"OKP","crv":"Ed25519",
/// #     "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","use":"sig","alg":"EdDSA"}]}"#;
/// // `jwks_json`: fetched from waitroom's `GET /.well-known/jwks.json` at start-up.
/// let verifier = Verifier::from_jwks_json(jwks_json)?;
/// let expected = Expectations::new("https://queue.example.com", "eras-tour-2026-05-01")
///     .with_leeway_s(5);
/// let layer = RequireAdmission::new(verifier, expected)
///     .cookie_name("seat_admission")
///     .without_query_parameter();
/// // axum: Router::new().route("/select", get(select)).layer(layer), and in the handler
/// // `Extension(claims): Extension<AdmissionClaims>`.
/// # let _ = layer;
/// # Ok::<(), waitroom_token::KeySetError>(())
/// ```
#[derive(Clone)]
pub struct RequireAdmission {
    config: Arc<Config>,
}

#[derive(Clone)]
struct Config {
    verifier: VerifierSource,
    expectations: Expectations,
    cookie_name: Option<String>,
    query_parameter: bool,
    clock: Clock,
}

impl RequireAdmission {
    /// Requires tokens that `verifier` accepts under `expectations`.
    pub fn new(verifier: Verifier, expectations: Expectations) -> Self {
        let verifier = Arc::new(verifier);
        Self::with_verifier_source(move || Arc::clone(&verifier), expectations)
    }

    /// Like [`new`](Self::new), but asks `source` for the current verifier on every request,
    /// so the keys can be refreshed (e.g. from an `RwLock<Arc<Verifier>>` that a task reloads
    /// from the JWKS) without rebuilding the service.
    pub fn with_verifier_source(
        source: impl Fn() -> Arc<Verifier> + Send + Sync + 'static,
        expectations: Expectations,
    ) -> Self {
        Self {
            config: Arc::new(Config {
                verifier: Arc::new(source),
                expectations,
                cookie_name: Some(TOKEN_PARAMETER_NAME.to_owned()),
                query_parameter: true,
                clock: Arc::new(system_now_unix_s),
            }),
        }
    }

    /// Reads the token from the cookie `name` instead of `waitroomToken`.
    #[must_use]
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.config).cookie_name = Some(name.into());
        self
    }

    /// Never reads the token from a cookie.
    #[must_use]
    pub fn without_cookie(mut self) -> Self {
        Arc::make_mut(&mut self.config).cookie_name = None;
        self
    }

    /// Never reads the token from the query string (where it may end up in access logs and
    /// `Referer` headers).
    #[must_use]
    pub fn without_query_parameter(mut self) -> Self {
        Arc::make_mut(&mut self.config).query_parameter = false;
        self
    }

    /// Uses `now_unix_s` instead of the system clock for `exp`/`nbf` checks (for tests).
    #[must_use]
    pub fn clock(mut self, now_unix_s: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Arc::make_mut(&mut self.config).clock = Arc::new(now_unix_s);
        self
    }
}

impl fmt::Debug for RequireAdmission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireAdmission")
            .field("expectations", &self.config.expectations)
            .field("cookie_name", &self.config.cookie_name)
            .field("query_parameter", &self.config.query_parameter)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RequireAdmission {
    type Service = RequireAdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAdmissionService {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service built by [`RequireAdmission`].
#[derive(Clone)]
pub struct RequireAdmissionService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for RequireAdmissionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireAdmissionService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireAdmissionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<String>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let config = &self.config;
        let checked = match find_token(&request, config) {
            None => Err(Rejection::Missing),
            Some(token) => (config.verifier)()
                .verify(&token, &config.expectations, (config.clock)())
                .map_err(Rejection::Invalid),
        };
        let kind = match checked {
            Ok(claims) => {
                request.extensions_mut().insert(claims);
                Kind::Inner {
                    future: self.inner.call(request),
                }
            }
            Err(rejection) => Kind::Reject {
                response: Some(unauthorized(rejection, config)),
            },
        };
        ResponseFuture { kind }
    }
}

pin_project! {
    /// The response future of [`RequireAdmissionService`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProjection]
    enum Kind<F, B> {
        Inner { #[pin] future: F },
        Reject { response: Option<Response<B>> },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProjection::Inner { future } => future.poll(cx),
            KindProjection::Reject { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

enum Rejection {
    Missing,
    Invalid(VerifyError),
}

/// The token from the first place that has one: bearer header, query, cookie.
fn find_token<'r, B>(request: &'r Request<B>, config: &Config) -> Option<Cow<'r, str>> {
    let bearer = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    if let Some(token) = bearer {
        return Some(Cow::Borrowed(token));
    }
    if config.query_parameter {
        let query = request.uri().query().unwrap_or("");
        let value = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, value)| *name == TOKEN_PARAMETER_NAME && !value.is_empty());
        if let Some((_, value)) = value {
            return Some(percent_decode(value));
        }
    }
    let cookie_name = config.cookie_name.as_deref()?;
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == cookie_name && !value.is_empty())
        // RFC 6265 §4.1.1: a cookie value may be wrapped in double quotes.
        .map(|(_, value)| Cow::Borrowed(value.trim_matches('"')))
}

/// Decodes `%XX` escapes. A token is base64url and dots, which need no escaping, so this only
/// matters for clients that escape anyway; a value that is not valid escaped UTF-8, or that is
/// too long to be a token even escaped, is returned as it is and fails verification.
fn percent_decode(value: &str) -> Cow<'_, str> {
    if !value.contains('%') || value.len() > 3 * TOKEN_LENGTH_MAX_BYTES {
        return Cow::Borrowed(value);
    }
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).map_or(Cow::Borrowed(value), Cow::Owned)
}

fn unauthorized<B: From<String>>(rejection: Rejection, config: &Config) -> Response<B> {
    let (detail, challenge) = match rejection {
        Rejection::Missing => (
            missing_token_detail(config),
            // RFC 6750 §3.1: no error code when the request carried no credentials.
            HeaderValue::from_static("Bearer"),
        ),
        Rejection::Invalid(error) => (
            error.to_string(),
            HeaderValue::from_static(r#"Bearer error="invalid_token""#),
        ),
    };
    let status = StatusCode::UNAUTHORIZED;
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Unauthorized"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = Response::new(B::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(WWW_AUTHENTICATE, challenge);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Where the service looks for a token, for the `detail` of the 401 when there is none.
fn missing_token_detail(config: &Config) -> String {
    let mut places = vec!["the header `Authorization: Bearer <token>`".to_owned()];
    if config.query_parameter {
        places.push(format!("the query parameter `{TOKEN_PARAMETER_NAME}`"));
    }
    if let Some(cookie_name) = &config.cookie_name {
        places.push(format!("the cookie `{cookie_name}`"));
    }
    format!("no admission token in {}", places.join(" or "))
}

/// Seconds since the Unix epoch; 0 if the clock is set before 1970 (every token then fails
/// its `nbf` check rather than anything panicking).
fn system_now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::RwLock;

    use tower::ServiceExt as _;

    use super::*;
    use crate::AdmissionClaims;
    use crate::test_support::{NOW_UNIX_S, ROOM, claims, expectations, key, token, verifier};

    fn layer() -> RequireAdmission {
        RequireAdmission::new(verifier(&key(1)), expectations()).clock(|| NOW_UNIX_S + 1)
    }

    /// Answers 200 with the session id from the claims, or 500 if there are none.
    async fn echo_subject(request: Request<String>) -> Result<Response<String>, Infallible> {
        let response = match request.extensions().get::<AdmissionClaims>() {
            Some(claims) => Response::new(claims.sub.clone()),
            None => {
                let mut response = Response::new(String::new());
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                response
            }
        };
        Ok(response)
    }

    async fn call(layer: RequireAdmission, request: Request<String>) -> Response<String> {
        let service = layer.layer(tower::service_fn(echo_subject));
        service.oneshot(request).await.expect("infallible")
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<String> {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(String::new()).expect("a valid request")
    }

    fn assert_admitted(response: &Response<String>) {
        assert_eq!(response.status(), StatusCode::OK, "{}", response.body());
        assert_eq!(response.body(), &claims().sub);
    }

    /// Checks a 401 problem response and returns its `detail`.
    fn assert_problem(response: &Response<String>) -> String {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let headers = response.headers();
        assert_eq!(headers[CONTENT_TYPE], "application/problem+json");
        assert_eq!(headers[CACHE_CONTROL], "no-store");
        let problem: serde_json::Value = serde_json::from_str(response.body()).expect("JSON");
        assert_eq!(problem["type"], "about:blank");
        assert_eq!(problem["title"], "Unauthorized");
        assert_eq!(problem["status"], 401);
        let members = problem.as_object().expect("an object").len();
        assert_eq!(members, 4, "{problem}");
        problem["detail"].as_str().expect("a detail").to_owned()
    }

    #[tokio::test]
    async fn a_request_without_a_token_gets_a_401_problem() {
        let response = call(layer(), request("/select", &[])).await;
        let detail = assert_problem(&response);
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
        assert_eq!(
            detail,
            "no admission token in the header `Authorization: Bearer <token>` or the query \
             parameter `waitroomToken` or the cookie `waitroomToken`"
        );
    }

    #[tokio::test]
    async fn a_bearer_token_is_accepted() {
        let bearer = format!("Bearer {}", token(&key(1), &claims()));
        assert_admitted(&call(layer(), request("/select", &[("authorization", &bearer)])).await);
        let lowercase = format!("bearer  {} ", token(&key(1), &claims()));
        assert_admitted(&call(layer(), request("/", &[("authorization", &lowercase)])).await);
    }

    #[tokio::test]
    async fn a_query_parameter_token_is_accepted() {
        let token = token(&key(1), &claims());
        let uri = format!("/select?seat=12&waitroomToken={token}&x=1");
        assert_admitted(&call(layer(), request(&uri, &[])).await);
        let escaped = format!("/select?waitroomToken={}", token.replace('.', "%2E"));
        assert_admitted(&call(layer(), request(&escaped, &[])).await);
        let off = layer().without_query_parameter();
        let detail = assert_problem(&call(off, request(&uri, &[])).await);
        assert!(!detail.contains("query"), "{detail}");
    }

    #[tokio::test]
    async fn a_cookie_token_is_accepted() {
        let token = token(&key(1), &claims());
        let cookies = format!("theme=dark; waitroomToken={token}; lang=en");
        assert_admitted(&call(layer(), request("/", &[("cookie", &cookies)])).await);
        let quoted = format!("waitroomToken=\"{token}\"");
        assert_admitted(&call(layer(), request("/", &[("cookie", &quoted)])).await);
        // In a second Cookie header, under a custom name.
        let custom = format!("seat_admission={token}");
        let renamed = layer().cookie_name("seat_admission");
        let headers = [("cookie", "theme=dark"), ("cookie", custom.as_str())];
        assert_admitted(&call(renamed.clone(), request("/", &headers)).await);
        assert_problem(&call(renamed, request("/", &[("cookie", &cookies)])).await);
        assert_problem(
            &call(
                layer().without_cookie(),
                request("/", &[("cookie", &cookies)]),
            )
            .await,
        );
    }

    #[tokio::test]
    async fn a_token_for_another_room_is_refused() {
        let mut other_room = claims();
        other_room.aud = format!("{ROOM}-vip");
        let bearer = format!("Bearer {}", token(&key(1), &other_room));
        let response = call(layer(), request("/", &[("authorization", &bearer)])).await;
        assert_eq!(
            assert_problem(&response),
            "the admission token is for another room"
        );
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            r#"Bearer error="invalid_token""#
        );
        assert!(!response.body().contains(&bearer[7..]));
    }

    #[tokio::test]
    async fn an_expired_token_is_refused_by_the_clock() {
        let bearer = format!("Bearer {}", token(&key(1), &claims()));
        let late = layer().clock(|| NOW_UNIX_S + 300);
        let response = call(late, request("/", &[("authorization", &bearer)])).await;
        assert_eq!(assert_problem(&response), "the admission token has expired");
    }

    #[tokio::test]
    async fn the_first_place_with_a_token_decides() {
        let valid = token(&key(1), &claims());
        let cookie = format!("waitroomToken={valid}");
        // A broken bearer token is not rescued by a valid cookie.
        let headers = [
            ("authorization", "Bearer junk"),
            ("cookie", cookie.as_str()),
        ];
        assert_problem(&call(layer(), request("/", &headers)).await);
        // Another scheme is not a bearer token: the cookie is used.
        let headers = [
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("cookie", cookie.as_str()),
        ];
        assert_admitted(&call(layer(), request("/", &headers)).await);
    }

    #[tokio::test]
    async fn the_verifier_can_be_replaced_at_run_time() {
        let current = Arc::new(RwLock::new(Arc::new(verifier(&key(1)))));
        let source = Arc::clone(&current);
        let layer = RequireAdmission::with_verifier_source(
            move || Arc::clone(&source.read().expect("not poisoned")),
            expectations(),
        )
        .clock(|| NOW_UNIX_S);
        let bearer = format!("Bearer {}", token(&key(2), &claims()));
        assert_problem(&call(layer.clone(), request("/", &[("authorization", &bearer)])).await);
        *current.write().expect("not poisoned") = Arc::new(verifier(&key(2)));
        assert_admitted(&call(layer, request("/", &[("authorization", &bearer)])).await);
    }

    #[test]
    fn percent_decoding_is_lenient_and_bounded() {
        assert_eq!(percent_decode("a.b"), "a.b");
        assert_eq!(percent_decode("a%2Eb%2e"), "a.b.");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%FF"), "%FF"); // not UTF-8: left as it is
        let long = "%41".repeat(TOKEN_LENGTH_MAX_BYTES + 1);
        assert!(matches!(percent_decode(&long), Cow::Borrowed(_)));
    }

    /// The layer in a real axum router, with axum's own body types and extractor.
    #[tokio::test]
    async fn works_in_an_axum_router() {
        use axum::body::Body;
        use axum::routing::get;
        use http_body_util::BodyExt as _;

        async fn select(axum::Extension(claims): axum::Extension<AdmissionClaims>) -> String {
            format!("seats for {}", claims.sub)
        }
        let app = axum::Router::new()
            .route("/select", get(select))
            .layer(layer());

        let bearer = format!("Bearer {}", token(&key(1), &claims()));
        let admitted = Request::builder()
            .uri("/select")
            .header(AUTHORIZATION, bearer)
            .body(Body::empty())
            .expect("a valid request");
        let response = app.clone().oneshot(admitted).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        assert_eq!(body, "seats for wr_2b7k4qexample");

        let anonymous = Request::builder()
            .uri("/select")
            .body(Body::empty())
            .expect("valid");
        let response = app.oneshot(anonymous).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    }
}
