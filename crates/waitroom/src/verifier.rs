//! The external join verifier (`--join-verifier-url`): a deployment's own bot check (an IP
//! reputation service, a fraud score, a CAPTCHA back end), asked before every new join.
//!
//! For each join without a pass that would take a new place (not a replay), the node POSTs JSON
//! to the URL:
//!
//! ```json
//! {"roomId": "eras-tour", "clientIp": "203.0.113.7", "userAgent": "Mozilla/5.0 …",
//!  "headers": {"accept-language": "en-GB,en;q=0.9", "origin": "https://tickets.example.com",
//!              "referer": null}}
//! ```
//!
//! and reads `{"allow": true}` or `{"allow": false, "reason": "…"}` from a `2xx` answer. A deny
//! is a `403` (`join-denied`). A timeout (`--join-verifier-timeout-ms`, bounded), a refused
//! connection, another status or an unreadable answer is a failure: with
//! `--join-verifier-fails open` (the default) the join goes on, with `closed` it is a `503`
//! (`join-verifier-unavailable`). Every outcome is counted
//! (`waitroom_join_verifier_total{result}`).
//!
//! Plain `http://` only: the node carries no TLS client. Run the verifier beside the node, or a
//! TLS-terminating proxy beside it. Requests reuse pooled connections.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::limits::{
    JOIN_VERIFIER_ANSWER_BYTES_MAX, JOIN_VERIFIER_IN_FLIGHT_MAX, JOIN_VERIFIER_REASON_CHARS_MAX,
    JOIN_VERIFIER_TIMEOUT_MS_MAX,
};

/// The request headers passed on to the verifier (besides the user agent and the address).
pub const FORWARDED_HEADERS: [&str; 3] = ["accept-language", "origin", "referer"];

/// What a join becomes when the verifier cannot answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailMode {
    /// The join goes on (the verifier is an extra check, not a gate).
    #[default]
    Open,
    /// The join is refused with a `503`.
    Closed,
}

/// What the verifier said of one join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Denied, with the verifier's reason (at most `JOIN_VERIFIER_REASON_CHARS_MAX` characters).
    Deny(Option<String>),
    /// No usable answer: why.
    Failed(String),
}

/// The body the node sends.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifierRequest<'a> {
    pub room_id: &'a str,
    pub client_ip: Option<String>,
    pub user_agent: Option<&'a str>,
    pub headers: std::collections::BTreeMap<&'static str, Option<&'a str>>,
}

#[derive(Debug, Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
}

pub struct JoinVerifier {
    url: http::Uri,
    timeout: Duration,
    fails: FailMode,
    client: Client<HttpConnector, Full<Bytes>>,
    in_flight: tokio::sync::Semaphore,
}

impl JoinVerifier {
    /// # Errors
    /// A URL that is not an absolute `http://` URL, or a timeout outside
    /// 1..=`JOIN_VERIFIER_TIMEOUT_MS_MAX`.
    pub fn new(url: &str, timeout_ms: u64, fails: FailMode) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("--join-verifier-url {url}: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!(
                "--join-verifier-url {url}: must be an absolute http:// URL (the node has no TLS \
                 client: run the verifier, or a proxy to it, beside the node)"
            ));
        }
        if !(1..=JOIN_VERIFIER_TIMEOUT_MS_MAX).contains(&timeout_ms) {
            return Err(format!(
                "--join-verifier-timeout-ms must be 1 to {JOIN_VERIFIER_TIMEOUT_MS_MAX}"
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(timeout_ms)));
        Ok(Self {
            url: uri,
            timeout: Duration::from_millis(timeout_ms),
            fails,
            client: Client::builder(TokioExecutor::new()).build(connector),
            in_flight: tokio::sync::Semaphore::new(JOIN_VERIFIER_IN_FLIGHT_MAX),
        })
    }

    pub fn fails(&self) -> FailMode {
        self.fails
    }

    /// Asks the verifier about one join, within the timeout.
    pub async fn verify(&self, request: &VerifierRequest<'_>) -> Verdict {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Verdict::Failed(format!(
                "{JOIN_VERIFIER_IN_FLIGHT_MAX} joins already wait for the verifier"
            ));
        };
        match tokio::time::timeout(self.timeout, self.ask(request)).await {
            Ok(verdict) => verdict,
            Err(_) => Verdict::Failed(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn ask(&self, request: &VerifierRequest<'_>) -> Verdict {
        let body = match serde_json::to_vec(request) {
            Ok(body) => body,
            Err(e) => return Verdict::Failed(format!("could not write the request: {e}")),
        };
        let http_request = http::Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)));
        let http_request = match http_request {
            Ok(r) => r,
            Err(e) => return Verdict::Failed(format!("could not build the request: {e}")),
        };
        let response = match self.client.request(http_request).await {
            Ok(response) => response,
            Err(e) => return Verdict::Failed(format!("request failed: {e}")),
        };
        let status = response.status();
        if !status.is_success() {
            return Verdict::Failed(format!("answered {status}"));
        }
        let bytes = match Limited::new(response.into_body(), JOIN_VERIFIER_ANSWER_BYTES_MAX)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return Verdict::Failed(format!("could not read the answer: {e}")),
        };
        match serde_json::from_slice::<Answer>(&bytes) {
            Ok(Answer { allow: true, .. }) => Verdict::Allow,
            Ok(Answer {
                allow: false,
                reason,
            }) => Verdict::Deny(reason.map(|reason| {
                reason
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(JOIN_VERIFIER_REASON_CHARS_MAX)
                    .collect()
            })),
            Err(e) => Verdict::Failed(format!("unreadable answer: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_and_bounded_timeouts() {
        assert!(JoinVerifier::new("http://127.0.0.1:9/verify", 100, FailMode::Open).is_ok());
        for url in ["https://example.com/", "/verify", "ftp://x/", "not a url"] {
            assert!(
                JoinVerifier::new(url, 100, FailMode::Open).is_err(),
                "{url}"
            );
        }
        for timeout_ms in [0, JOIN_VERIFIER_TIMEOUT_MS_MAX + 1] {
            assert!(JoinVerifier::new("http://127.0.0.1:9/", timeout_ms, FailMode::Open).is_err());
        }
    }
}
